//! Card products and claiming them (SPEC §4).
//!
//! - **Products.** A tenant's card (campus card, staff card…) has a title, a subtitle from
//!   the fixed list, a cover image (exactly 1000×600 px, under 1 MiB, JPEG or PNG, judged
//!   from its bytes), the identity types that may claim it, and a claim mode. Creating or
//!   changing a card, or its cover, sends it to the platform operator's review.
//! - **Review.** The operator (root token) sees every tenant's waiting cards and approves
//!   one as they saw it, or rejects it with a reason. Only approved cards can be claimed.
//! - **Claim links.** Each approved card has its own link and QR, and the tenant has one
//!   unified link listing every card a person may claim (`/claim`). With `open_link` the
//!   link may be shared with anyone; with `no_follow` and `follow_required` the person
//!   also needs a claim ticket from the tenant's channel (its official account's backend,
//!   an app with `claim_tickets`), which vouches for their account and, for
//!   `follow_required`, that it follows.
//! - **Claiming** verifies the person by their identity type's method (a code texted to
//!   their imported phone; their imported name and ID number; open registration proved by
//!   a texted code; or the tenant's own endpoint, asked signed) and activates the card:
//!   they get a cardholder token. Claiming again (a new phone) moves the card there and
//!   ends every earlier phone's token. Only active cards pay: a suspended or departed
//!   person's payments are declined `card_inactive`.

use actix_web::http::header;
use actix_web::{get, patch, post, put, web, HttpRequest, HttpResponse};
use jiff::Timestamp;
use onecard_actors::domain::directory as rules;
use onecard_actors::domain::validate::Checks;
use onecard_schema::card_store::{ClaimWrite, Claimant, PhoneCodeCheck, Review};
use onecard_schema::ids::{CardClaimId, CardId, EventId, IdentityTypeId, TenantId, UserId};
use onecard_schema::model::{
    Actor, Audit, Card, CardClaim, CardHolder, CardStatus, CardSubtitle, CardTargeting, ClaimMode,
    Cover, IdNumber, IdentityCategory, IdentityType, NewToken, NewUser, TokenKind, User,
    Verification,
};
use onecard_schema::wallet::{OutboxEvent, Payload, PendingEvent};
use onecard_schema::StoreError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::scan::distinct;
use super::{checked, qr_svg, ListParams, Paged};
use crate::auth::{
    hash_token, new_token, request_id, Auth, Cardholder, CardsManager, CardsViewer,
    ClaimTicketIssuer, Root, SuperAdmin,
};
use crate::extract::{path_id, read_file, Json, Query};
use crate::limits::{
    CLAIM_TICKET_TTL, COVER_BYTES_MAX, COVER_HEIGHT, COVER_WIDTH, PHONE_CODE_GAP, PHONE_CODE_TRIES,
    PHONE_CODE_TTL,
};
use crate::problem::{ApiError, Problems};
use crate::ratelimit::address_key;
use crate::state::AppState;
use crate::texts::SentText;

const TITLE_CHARS_MAX: usize = 20;
const REASON_CHARS_MAX: usize = 200;
const ACCOUNT_CHARS_MAX: usize = 128;
const IDENTITY_TYPES_MAX: usize = 32;
const REVIEWS_MAX: u32 = 500;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCard {
    #[schema(min_length = 1, max_length = 20, example = "Tsinghua campus card")]
    pub title: String,
    pub subtitle: CardSubtitle,
    /// Who may claim it.
    #[schema(min_items = 1, max_items = 32)]
    pub identity_type_ids: Vec<IdentityTypeId>,
    /// `one_identity` (exactly one type) or `several_identities`; default: by the number of
    /// types given.
    pub targeting: Option<CardTargeting>,
    pub claim_mode: ClaimMode,
}

/// Absent fields stay as they are; any change sends the card back to review.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchCard {
    #[schema(min_length = 1, max_length = 20)]
    pub title: Option<String>,
    pub subtitle: Option<CardSubtitle>,
    #[schema(min_items = 1, max_items = 32)]
    pub identity_type_ids: Option<Vec<IdentityTypeId>>,
    pub targeting: Option<CardTargeting>,
    pub claim_mode: Option<ClaimMode>,
}

/// A cover image: the file, in a multipart field named `file` or as the whole body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CoverUpload {
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// A claim link: open it (or scan its QR) to claim.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimLink {
    pub url: String,
    /// The link as an SVG QR image.
    pub svg: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveCard {
    /// The card's `revision` as the reviewer saw it: 409 `card_changed` if it changed.
    pub revision: i64,
    #[schema(max_length = 200)]
    pub note: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectCard {
    /// Why, for the tenant.
    #[schema(min_length = 1, max_length = 200)]
    pub reason: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReviewParams {
    /// 1 to 500, default 50.
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClaimTicket {
    /// The person's account on the tenant's channel (an official account's user id).
    #[schema(min_length = 1, max_length = 128)]
    pub account: String,
    /// Whether that account follows the tenant's official account.
    pub followed: bool,
}

/// A claim ticket: one claim, within 30 minutes, by the account it names.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimTicket {
    pub ticket: String,
    pub expires_at: Timestamp,
    /// The unified claim link carrying the ticket.
    pub url: String,
}

/// How a person of an identity type proves who they are, and what they fill in.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimIdentity {
    pub id: IdentityTypeId,
    pub name: String,
    pub category: IdentityCategory,
    pub verification: Verification,
    /// The claim's fields this method needs.
    pub fields: Vec<&'static str>,
}

/// An approved card as the claim page shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimableCard {
    pub id: CardId,
    pub title: String,
    pub subtitle: CardSubtitle,
    pub claim_mode: ClaimMode,
    /// The cover image's address.
    pub cover_url: Option<String>,
    pub identity_types: Vec<ClaimIdentity>,
}

/// The tenant's unified claim page: every card that may be claimed now.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimOffer {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub cards: Vec<ClaimableCard>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendPhoneCode {
    pub identity_type_id: IdentityTypeId,
    #[schema(example = "13800138000")]
    pub phone: String,
}

/// A code is on its way (when the phone may claim with it): it is accepted for 10 minutes.
#[derive(Debug, Serialize, ToSchema)]
pub struct PhoneCodeSent {
    pub expires_at: Timestamp,
}

/// A claim: the identity the person claims as, and what its method asks for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimCard {
    pub identity_type_id: IdentityTypeId,
    /// The tenant's claim ticket (required unless the card's mode is `open_link`).
    pub ticket: Option<String>,
    #[schema(max_length = 64)]
    pub name: Option<String>,
    pub phone: Option<String>,
    /// The code texted to `phone`.
    #[schema(min_length = 6, max_length = 6)]
    pub phone_code: Option<String>,
    /// For `name_id`; an external endpoint receives it too when given.
    pub id_number: Option<String>,
    /// For `external`: the number the tenant knows the person by.
    #[schema(max_length = 32)]
    pub number: Option<String>,
}

/// Who claimed, as the claim page shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Holder {
    pub id: UserId,
    pub name: String,
    pub number: String,
}

/// An activated card and the cardholder token for this phone (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub struct Activated {
    pub token: String,
    pub card: Card,
    pub claim: CardClaim,
    pub user: Holder,
}

/// A card I hold.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeldCard {
    pub card: Card,
    pub claim: CardClaim,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TextsParams {
    /// Only the texts to this phone.
    pub phone: Option<String>,
}

fn check_card(card: &Card) -> Result<(), ApiError> {
    let mut c = Checks::new();
    c.text("title", &card.title, 1, TITLE_CHARS_MAX);
    let n = card.identity_type_ids.len();
    if n == 0 || n > IDENTITY_TYPES_MAX {
        c.fail(
            "identity_type_ids",
            "count",
            format!("1 to {IDENTITY_TYPES_MAX} identity types"),
        );
    } else if card.targeting == CardTargeting::OneIdentity && n != 1 {
        c.fail(
            "identity_type_ids",
            "targeting",
            "a card for one identity names exactly one identity type",
        );
    }
    checked(c)
}

fn targeting(given: Option<CardTargeting>, ids: &[IdentityTypeId]) -> CardTargeting {
    given.unwrap_or(if ids.len() == 1 {
        CardTargeting::OneIdentity
    } else {
        CardTargeting::SeveralIdentities
    })
}

/// A card waiting for the operator again, after a change.
fn to_review(mut card: Card, now: Timestamp) -> Card {
    card.status = CardStatus::PendingReview;
    card.review_reason = None;
    card.reviewed_at = None;
    card.updated_at = now;
    card.revision += 1;
    card
}

/// Create a card product (super admins, and sub-admins managing `cards`). It waits for the
/// operator's review (`pending_review`); give it a cover before it can be approved.
#[utoipa::path(tag = "cards", request_body = CreateCard, security(("bearer" = [])),
    responses((status = 201, body = Card), Problems))]
#[post("/cards")]
pub async fn create_card(
    state: web::Data<AppState>,
    caller: Auth<CardsManager>,
    Json(body): Json<CreateCard>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let now = state.clock.now();
    let ids = distinct(body.identity_type_ids);
    let card = Card {
        id: CardId::new(),
        tenant_id: tenant,
        title: body.title.trim().to_string(),
        subtitle: body.subtitle,
        targeting: targeting(body.targeting, &ids),
        identity_type_ids: ids,
        claim_mode: body.claim_mode,
        status: CardStatus::PendingReview,
        revision: 1,
        review_reason: None,
        reviewed_at: None,
        cover_sha256: None,
        created_at: now,
        updated_at: now,
    };
    check_card(&card)?;
    let audit = caller.audit(
        &state,
        "card.create",
        "card",
        card.id,
        serde_json::json!({ "title": card.title, "claim_mode": card.claim_mode }),
    );
    state.store.create_card(tenant, card.clone(), audit).await?;
    Ok(HttpResponse::Created().json(card))
}

/// The tenant's cards, newest first, with where each stands in review.
#[utoipa::path(tag = "cards", security(("bearer" = [])),
    responses((status = 200, body = Paged<Card>), Problems))]
#[get("/cards")]
pub async fn list_cards(
    state: web::Data<AppState>,
    caller: Auth<CardsViewer>,
) -> Result<web::Json<Paged<Card>>, ApiError> {
    let cards = state.store.list_cards(caller.tenant()?).await?;
    Ok(web::Json(Paged::new(cards, None)))
}

/// One card.
#[utoipa::path(tag = "cards", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Card), Problems))]
#[get("/cards/{id}")]
pub async fn get_card(
    state: web::Data<AppState>,
    caller: Auth<CardsViewer>,
    id: web::Path<String>,
) -> Result<web::Json<Card>, ApiError> {
    let card = state
        .store
        .get_card(caller.tenant()?, path_id(&id)?)
        .await?;
    Ok(web::Json(card))
}

/// Change a card: it goes back to review and cannot be claimed until approved again
/// (cards already claimed stay active).
#[utoipa::path(tag = "cards", params(("id" = String, Path)), request_body = PatchCard,
    security(("bearer" = [])), responses((status = 200, body = Card), Problems))]
#[patch("/cards/{id}")]
pub async fn patch_card(
    state: web::Data<AppState>,
    caller: Auth<CardsManager>,
    id: web::Path<String>,
    Json(body): Json<PatchCard>,
) -> Result<web::Json<Card>, ApiError> {
    let tenant = caller.tenant()?;
    let mut card = state.store.get_card(tenant, path_id(&id)?).await?;
    if let Some(title) = body.title {
        card.title = title.trim().to_string();
    }
    if let Some(subtitle) = body.subtitle {
        card.subtitle = subtitle;
    }
    if let Some(ids) = body.identity_type_ids {
        card.identity_type_ids = distinct(ids);
        card.targeting = targeting(body.targeting, &card.identity_type_ids);
    } else if let Some(t) = body.targeting {
        card.targeting = t;
    }
    if let Some(mode) = body.claim_mode {
        card.claim_mode = mode;
    }
    let card = to_review(card, state.clock.now());
    check_card(&card)?;
    let audit = caller.audit(
        &state,
        "card.update",
        "card",
        card.id,
        serde_json::json!({ "title": card.title, "claim_mode": card.claim_mode }),
    );
    state.store.update_card(tenant, card.clone(), audit).await?;
    Ok(web::Json(card))
}

fn cover_invalid(rule: &str, message: String) -> ApiError {
    ApiError::invalid_field_as("cover_invalid", "file", rule, message)
}

/// The cover's content type, when its bytes are a JPEG or PNG of exactly 1000×600 px.
pub fn check_cover(bytes: &[u8]) -> Result<&'static str, ApiError> {
    let content_type = match imagesize::image_type(bytes) {
        Ok(imagesize::ImageType::Jpeg) => "image/jpeg",
        Ok(imagesize::ImageType::Png) => "image/png",
        _ => {
            return Err(cover_invalid(
                "format",
                "a cover is a JPEG or PNG image (judged by its content, not its name)".into(),
            ))
        }
    };
    let size = imagesize::blob_size(bytes).map_err(|_| {
        cover_invalid(
            "format",
            "this image is damaged: its size cannot be read".into(),
        )
    })?;
    if (size.width, size.height) != (COVER_WIDTH, COVER_HEIGHT) {
        return Err(cover_invalid(
            "dimensions",
            format!(
                "a cover is exactly {COVER_WIDTH}×{COVER_HEIGHT} px; this one is {}×{} px",
                size.width, size.height
            ),
        ));
    }
    Ok(content_type)
}

/// Give a card its cover: exactly 1000×600 px, under 1 MiB (413 otherwise), JPEG or PNG
/// judged from the bytes (422 `cover_invalid`, saying which rule). The card goes back to
/// review.
#[utoipa::path(tag = "cards", params(("id" = String, Path)),
    request_body(content = CoverUpload, content_type = "multipart/form-data"),
    security(("bearer" = [])), responses((status = 200, body = Card), Problems))]
#[put("/cards/{id}/cover")]
pub async fn put_cover(
    state: web::Data<AppState>,
    caller: Auth<CardsManager>,
    id: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<web::Json<Card>, ApiError> {
    let tenant = caller.tenant()?;
    let id: CardId = path_id(&id)?;
    // Under 1 MiB: a file of exactly 1 MiB is one byte too many.
    let bytes = read_file(
        &req,
        payload,
        COVER_BYTES_MAX - 1,
        &["image/", "application/octet-stream"],
        "the cover",
        "image/jpeg or image/png",
    )
    .await?;
    let content_type = check_cover(&bytes)?;
    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
    let audit = caller.audit(
        &state,
        "card.cover",
        "card",
        id,
        serde_json::json!({ "bytes": bytes.len(), "sha256": hex::encode(sha256) }),
    );
    let cover = Cover {
        bytes,
        content_type: content_type.into(),
        sha256,
    };
    let card = state
        .store
        .set_cover(tenant, id, cover, state.clock.now(), audit)
        .await?;
    Ok(web::Json(card))
}

/// A cover image by its SHA-256 (no token: the claim page shows it). It never changes, so
/// it may be cached for good.
#[utoipa::path(tag = "cards", params(("sha256" = String, Path)),
    responses((status = 200, content_type = "image/png"), Problems))]
#[get("/covers/{sha256}")]
pub async fn get_cover(
    state: web::Data<AppState>,
    sha256: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(sha256.as_str(), &mut digest).map_err(|_| ApiError::NotFound)?;
    let cover = state.store.get_cover(digest).await?;
    Ok(HttpResponse::Ok()
        .content_type(cover.content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(cover.bytes))
}

fn claim_url(base: &str, tenant: TenantId, card: Option<CardId>) -> String {
    match card {
        Some(card) => format!("{base}/claim?tenant={tenant}&card={card}"),
        None => format!("{base}/claim?tenant={tenant}"),
    }
}

fn claim_link(url: String) -> Result<web::Json<ClaimLink>, ApiError> {
    Ok(web::Json(ClaimLink {
        svg: qr_svg(&url, 320)?,
        url,
    }))
}

fn not_approved(card: &Card) -> ApiError {
    ApiError::conflict(
        "card_not_approved",
        match card.status {
            CardStatus::PendingReview => "this card is waiting for the operator's review",
            _ => "this card was not approved: change it and it goes to review again",
        },
    )
}

/// An approved card's own claim link and QR; 409 `card_not_approved` before approval.
#[utoipa::path(tag = "cards", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ClaimLink), Problems))]
#[get("/cards/{id}/claim-link")]
pub async fn get_card_claim_link(
    state: web::Data<AppState>,
    caller: Auth<CardsViewer>,
    id: web::Path<String>,
) -> Result<web::Json<ClaimLink>, ApiError> {
    let tenant = caller.tenant()?;
    let card = state.store.get_card(tenant, path_id(&id)?).await?;
    if card.status != CardStatus::Approved {
        return Err(not_approved(&card));
    }
    claim_link(claim_url(
        &state.public_url_of(tenant).await?,
        tenant,
        Some(card.id),
    ))
}

/// Who holds a card (has claimed and activated it), in the order they first claimed it,
/// with how they proved who they are.
#[utoipa::path(tag = "cards", params(("id" = String, Path), ListParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<CardHolder>), Problems))]
#[get("/cards/{id}/holders")]
pub async fn list_card_holders(
    state: web::Data<AppState>,
    caller: Auth<CardsViewer>,
    id: web::Path<String>,
    Query(params): Query<ListParams>,
) -> Result<web::Json<Paged<CardHolder>>, ApiError> {
    let tenant = caller.tenant()?;
    let card = state.store.get_card(tenant, path_id(&id)?).await?;
    let page = state
        .store
        .card_holders(tenant, card.id, params.page(CardClaimId)?)
        .await?;
    Ok(web::Json(Paged::new(page.items, page.next.map(|n| n.0))))
}

/// The tenant's unified claim link and QR: it lists every card a person may claim.
#[utoipa::path(tag = "cards", security(("bearer" = [])),
    responses((status = 200, body = ClaimLink), Problems))]
#[get("/claim-link")]
pub async fn get_claim_link(
    state: web::Data<AppState>,
    caller: Auth<CardsViewer>,
) -> Result<web::Json<ClaimLink>, ApiError> {
    let tenant = caller.tenant()?;
    claim_link(claim_url(&state.public_url_of(tenant).await?, tenant, None))
}

/// Every tenant's cards waiting for review, oldest change first (the platform operator).
#[utoipa::path(tag = "cards", params(ReviewParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<Card>), Problems))]
#[get("/card-reviews")]
pub async fn list_card_reviews(
    state: web::Data<AppState>,
    _caller: Auth<Root>,
    Query(params): Query<ReviewParams>,
) -> Result<web::Json<Paged<Card>>, ApiError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=REVIEWS_MAX).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "range",
            format!("1 to {REVIEWS_MAX}"),
        ));
    }
    let cards = state.store.pending_cards(limit as usize).await?;
    Ok(web::Json(Paged::new(cards, None)))
}

/// Approve a card as the operator saw it (`revision`): 409 `card_changed` if it changed
/// since, `cover_missing` without a cover, `not_pending_review` if it waits for none.
#[utoipa::path(tag = "cards", params(("id" = String, Path)), request_body = ApproveCard,
    security(("bearer" = [])), responses((status = 200, body = Card), Problems))]
#[post("/card-reviews/{id}/approve")]
pub async fn approve_card(
    state: web::Data<AppState>,
    caller: Auth<Root>,
    id: web::Path<String>,
    Json(body): Json<ApproveCard>,
) -> Result<web::Json<Card>, ApiError> {
    let id: CardId = path_id(&id)?;
    let note = body
        .note
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    if let Some(note) = &note {
        let mut c = Checks::new();
        c.text("note", note, 1, REASON_CHARS_MAX);
        checked(c)?;
    }
    let audit = caller.audit(
        &state,
        "card.approve",
        "card",
        id,
        serde_json::json!({ "note": note }),
    );
    let review = Review::Approve {
        seen: body.revision,
        note,
    };
    let card = state
        .store
        .review_card(id, review, state.clock.now(), audit)
        .await?;
    Ok(web::Json(card))
}

/// Reject a card with a reason the tenant sees; changing the card sends it to review again.
#[utoipa::path(tag = "cards", params(("id" = String, Path)), request_body = RejectCard,
    security(("bearer" = [])), responses((status = 200, body = Card), Problems))]
#[post("/card-reviews/{id}/reject")]
pub async fn reject_card(
    state: web::Data<AppState>,
    caller: Auth<Root>,
    id: web::Path<String>,
    Json(body): Json<RejectCard>,
) -> Result<web::Json<Card>, ApiError> {
    let id: CardId = path_id(&id)?;
    let reason = body.reason.trim().to_string();
    let mut c = Checks::new();
    c.text("reason", &reason, 1, REASON_CHARS_MAX);
    checked(c)?;
    let audit = caller.audit(
        &state,
        "card.reject",
        "card",
        id,
        serde_json::json!({ "reason": reason }),
    );
    let card = state
        .store
        .review_card(id, Review::Reject { reason }, state.clock.now(), audit)
        .await?;
    Ok(web::Json(card))
}

/// Vouch for an account of the tenant's channel: a ticket for one claim within 30 minutes
/// (an app with `claim_tickets`, i.e. the official account's backend, or an admin managing
/// cards). Cards in `no_follow` mode need one; `follow_required` cards need one with
/// `followed`.
#[utoipa::path(tag = "cards", request_body = CreateClaimTicket, security(("bearer" = [])),
    responses((status = 201, body = ClaimTicket), Problems))]
#[post("/claim-tickets")]
pub async fn create_claim_ticket(
    state: web::Data<AppState>,
    caller: Auth<ClaimTicketIssuer>,
    Json(body): Json<CreateClaimTicket>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let account = body.account.trim().to_string();
    let mut c = Checks::new();
    c.text("account", &account, 1, ACCOUNT_CHARS_MAX);
    checked(c)?;
    let ticket = new_token();
    let expires_at = state.clock.now() + CLAIM_TICKET_TTL;
    let audit = caller.audit(
        &state,
        "card.ticket",
        "claim_ticket",
        &account,
        serde_json::json!({ "followed": body.followed }),
    );
    state
        .store
        .create_claim_ticket(
            tenant,
            hash_token(&ticket),
            account,
            body.followed,
            expires_at,
            audit,
        )
        .await?;
    Ok(HttpResponse::Created().json(ClaimTicket {
        url: format!(
            "{}#ticket={ticket}",
            claim_url(&state.public_url_of(tenant).await?, tenant, None)
        ),
        ticket,
        expires_at,
    }))
}

fn fields_of(method: Verification) -> Vec<&'static str> {
    match method {
        Verification::Phone => vec!["phone", "phone_code"],
        Verification::NameId => vec!["name", "id_number"],
        Verification::Registration => vec!["name", "phone", "phone_code"],
        Verification::External => vec!["name", "number"],
    }
}

fn claimable(base: &str, card: Card, types: &[IdentityType]) -> ClaimableCard {
    ClaimableCard {
        cover_url: card
            .cover_sha256
            .as_ref()
            .map(|h| format!("{base}/api/v1/covers/{h}")),
        identity_types: card
            .identity_type_ids
            .iter()
            .filter_map(|id| types.iter().find(|t| t.id == *id))
            .map(|t| ClaimIdentity {
                id: t.id,
                name: t.name.clone(),
                category: t.category,
                verification: t.verification,
                fields: fields_of(t.verification),
            })
            .collect(),
        id: card.id,
        title: card.title,
        subtitle: card.subtitle,
        claim_mode: card.claim_mode,
    }
}

/// The tenant's unified claim page (no token): every approved card, with who may claim it
/// and what each identity fills in.
#[utoipa::path(tag = "cards", params(("tenant_id" = String, Path)),
    responses((status = 200, body = ClaimOffer), Problems))]
#[get("/claim/{tenant_id}")]
pub async fn get_claim_offer(
    state: web::Data<AppState>,
    tenant: web::Path<String>,
) -> Result<web::Json<ClaimOffer>, ApiError> {
    let tenant = state.tenant(path_id(&tenant)?).await?;
    let (cards, types) = tokio::try_join!(
        state.store.list_cards(tenant.id),
        state.store.list_identity_types(tenant.id)
    )?;
    let base = state.public_url_for(&tenant).await?;
    let cards = cards
        .into_iter()
        .filter(|c| c.status == CardStatus::Approved)
        .map(|c| claimable(&base, c, &types))
        .collect();
    Ok(web::Json(ClaimOffer {
        tenant_id: tenant.id,
        tenant_name: tenant.name,
        cards,
    }))
}

/// One approved card's claim page (no token); 404 unless it is approved.
#[utoipa::path(tag = "cards", params(("tenant_id" = String, Path), ("card_id" = String, Path)),
    responses((status = 200, body = ClaimableCard), Problems))]
#[get("/claim/{tenant_id}/cards/{card_id}")]
pub async fn get_claimable_card(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<web::Json<ClaimableCard>, ApiError> {
    let tenant: TenantId = path_id(&path.0)?;
    let card = state.store.get_card(tenant, path_id(&path.1)?).await?;
    if card.status != CardStatus::Approved {
        return Err(ApiError::NotFound);
    }
    let types = state.store.list_identity_types(tenant).await?;
    Ok(web::Json(claimable(
        &state.public_url_of(tenant).await?,
        card,
        &types,
    )))
}

fn limit_claims(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    state
        .claims
        .check(&address_key("card-claim", req.peer_addr()))
        .map_err(|retry_after_s| ApiError::RateLimited { retry_after_s })
}

fn not_eligible() -> ApiError {
    ApiError::invalid_field_as(
        "identity_not_eligible",
        "identity_type_id",
        "eligible",
        "not one of the identities this card is for",
    )
}

fn six_digits() -> String {
    use rand::Rng;
    format!("{:06}", rand::rng().random_range(0..1_000_000u32))
}

/// Text a one-time code (6 digits, 10 minutes) to a phone, for claiming as an identity
/// verified by `phone` or `registration` (no token). For `phone` it goes only to a phone
/// the tenant imported for that identity; the answer is the same either way, so nobody
/// learns whose phone is whose. 409 `phone_code_too_soon` within a minute of the last;
/// 429 past 20 requests from one address, then one every 10 seconds.
#[utoipa::path(tag = "cards", params(("tenant_id" = String, Path)),
    request_body = SendPhoneCode, responses((status = 202, body = PhoneCodeSent), Problems))]
#[post("/claim/{tenant_id}/phone-codes")]
pub async fn send_phone_code(
    state: web::Data<AppState>,
    req: HttpRequest,
    tenant: web::Path<String>,
    Json(body): Json<SendPhoneCode>,
) -> Result<HttpResponse, ApiError> {
    limit_claims(&state, &req)?;
    let tenant = state.tenant(path_id(&tenant)?).await?.id;
    let mut c = Checks::new();
    let phone = rules::check_phone(&mut c, "phone", &body.phone);
    checked(c)?;
    let phone = phone.unwrap_or_default();
    let itype = state
        .store
        .get_identity_type(tenant, body.identity_type_id)
        .await
        .map_err(|_| not_eligible())?;
    let send = match itype.verification {
        Verification::Registration => true,
        Verification::Phone => !state
            .store
            .find_claimants(tenant, itype.name.clone(), Claimant::Phone(phone.clone()))
            .await?
            .is_empty(),
        _ => {
            return Err(ApiError::invalid_field(
                "identity_type_id",
                "verification",
                "this identity is not verified by a texted code",
            ))
        }
    };
    let now = state.clock.now();
    let expires_at = now + PHONE_CODE_TTL;
    if send {
        let code = six_digits();
        state
            .store
            .put_phone_code(
                tenant,
                phone.clone(),
                state.keys.phone_code_hash(&phone, &code),
                now,
                expires_at,
                PHONE_CODE_GAP,
            )
            .await?;
        let text = format!(
            "{code} is your code to claim your card. It works for 10 minutes. \
             Nobody from the card office will ask you for it."
        );
        state.texts.send(tenant, &phone, &text).await.map_err(|e| {
            tracing::warn!(error = %e, "the text gateway did not take a claim code");
            ApiError::Unavailable("the text could not be sent: try again in a minute".to_string())
        })?;
    }
    Ok(HttpResponse::Accepted().json(PhoneCodeSent { expires_at }))
}

fn verification_failed() -> ApiError {
    ApiError::refused(
        "verification_failed",
        "these details do not match anyone this card may be claimed by; check them, or ask \
         the card office",
    )
}

/// The one person a lookup found.
fn the_one(found: Vec<User>) -> Result<User, ApiError> {
    match found.len() {
        0 => Err(verification_failed()),
        1 => Ok(found.into_iter().next().expect("one")),
        _ => Err(ApiError::conflict(
            "identity_ambiguous",
            "these details match more than one person: ask the card office",
        )),
    }
}

fn required<'a>(c: &mut Checks, field: &str, value: &'a Option<String>) -> Option<&'a str> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Some(v),
        _ => {
            c.fail(field, "required", "this identity's method needs it");
            None
        }
    }
}

/// Checks the code texted to `phone`.
async fn check_code(
    state: &AppState,
    tenant: TenantId,
    phone: &str,
    code: &str,
) -> Result<(), ApiError> {
    let found = state
        .store
        .check_phone_code(
            tenant,
            phone.to_string(),
            state.keys.phone_code_hash(phone, code),
            state.clock.now(),
            PHONE_CODE_TRIES,
        )
        .await?;
    let (code, message) = match found {
        PhoneCodeCheck::Matched => return Ok(()),
        PhoneCodeCheck::Wrong => ("phone_code_wrong", "this is not the code we texted"),
        PhoneCodeCheck::Missing => (
            "phone_code_expired",
            "no code is waiting for this phone (it expired, was used, or was tried wrong too \
             often): ask for a new one",
        ),
    };
    Err(ApiError::invalid_field_as(
        code,
        "phone_code",
        code,
        message,
    ))
}

/// What the tenant's identity endpoint answers.
#[derive(Debug, Deserialize)]
struct EndpointAnswer {
    matched: bool,
    name: Option<String>,
    number: Option<String>,
    phone: Option<String>,
}

fn endpoint_down(why: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!(
        "the organisation's identity service did not answer properly ({why}): try again later"
    ))
}

/// Asks an `external` identity type's endpoint, signed as webhooks are (`X-App-Key` is
/// the identity type's id, the secret its endpoint secret), whom these details are.
async fn ask_endpoint(
    state: &AppState,
    tenant: TenantId,
    itype: &IdentityType,
    body: &ClaimCard,
) -> Result<EndpointAnswer, ApiError> {
    let url = itype
        .external_url
        .as_deref()
        .and_then(|u| reqwest::Url::parse(u).ok())
        .ok_or_else(|| endpoint_down("no address is set"))?;
    let payload = serde_json::to_vec(&serde_json::json!({
        "tenant_id": tenant,
        "identity_type": itype.name,
        "name": body.name,
        "number": body.number,
        "phone": body.phone,
        "id_number": body.id_number,
    }))
    .map_err(ApiError::internal)?;
    let secret = state
        .keys
        .identity_endpoint_secret(itype.id.0, itype.secret_version);
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let timestamp = state.clock.now().as_second();
    let answer = crate::apps::signed_post(
        &state.identity_http,
        url,
        &secret,
        timestamp,
        &nonce,
        payload,
    )
    .header(crate::apps::APP_KEY, itype.id.to_string())
    .send()
    .await
    .map_err(|e| {
        endpoint_down(if e.is_timeout() {
            "timed out"
        } else {
            "unreachable"
        })
    })?;
    if !answer.status().is_success() {
        return Err(endpoint_down(format!("answered {}", answer.status())));
    }
    let bytes = answer
        .bytes()
        .await
        .map_err(|_| endpoint_down("the answer broke off"))?;
    if bytes.len() > 16 * 1024 {
        return Err(endpoint_down("the answer is too long"));
    }
    serde_json::from_slice(&bytes).map_err(|_| endpoint_down("the answer is not the JSON expected"))
}

/// A person to create, for open registration or a person the tenant's endpoint vouches for
/// but OneCard does not know yet.
fn newcomer(
    name: &str,
    number: Option<&str>,
    phone: Option<String>,
    id_number: Option<IdNumber>,
    identity: &str,
) -> NewUser {
    let number = number.map(str::to_string).unwrap_or_else(|| {
        format!(
            "R{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10].to_uppercase()
        )
    });
    NewUser {
        id: UserId::new(),
        name: name.to_string(),
        number,
        phone,
        id_number,
        identity: Some(identity.to_string()),
        department_ids: Vec::new(),
        tag_ids: Vec::new(),
    }
}

/// Verifies the claimant by the identity type's method: the person they are (found, or
/// new), or why not.
async fn verify(
    state: &AppState,
    tenant: TenantId,
    itype: &IdentityType,
    body: &ClaimCard,
) -> Result<(UserId, Option<NewUser>, String), ApiError> {
    let mut c = Checks::new();
    let identity = itype.name.clone();
    match itype.verification {
        Verification::Phone | Verification::Registration => {
            let phone = required(&mut c, "phone", &body.phone)
                .and_then(|p| rules::check_phone(&mut c, "phone", p));
            let code = required(&mut c, "phone_code", &body.phone_code);
            let name = if itype.verification == Verification::Registration {
                let name = required(&mut c, "name", &body.name);
                if let Some(n) = name {
                    rules::check_name(&mut c, "name", n);
                }
                name
            } else {
                None
            };
            checked(c)?;
            let (phone, code) = (phone.unwrap_or_default(), code.unwrap_or_default());
            check_code(state, tenant, &phone, code).await?;
            let found = state
                .store
                .find_claimants(tenant, identity.clone(), Claimant::Phone(phone.clone()))
                .await?;
            match (itype.verification, name) {
                // Registered before with this phone: the same person again.
                (Verification::Registration, Some(name)) if found.is_empty() => {
                    let user = newcomer(name, None, Some(phone), None, &identity);
                    Ok((user.id, Some(user), identity))
                }
                _ => Ok((the_one(found)?.id, None, identity)),
            }
        }
        Verification::NameId => {
            let name = required(&mut c, "name", &body.name).map(str::to_string);
            let id = required(&mut c, "id_number", &body.id_number)
                .and_then(|i| rules::check_id_number(&mut c, "id_number", i));
            checked(c)?;
            let who = Claimant::NameId {
                name: name.unwrap_or_default(),
                id_hash: state.keys.id_number_hash(&id.unwrap_or_default()),
            };
            let found = state
                .store
                .find_claimants(tenant, identity.clone(), who)
                .await?;
            Ok((the_one(found)?.id, None, identity))
        }
        Verification::External => {
            if let Some(n) = &body.name {
                rules::check_name(&mut c, "name", n);
            }
            if let Some(n) = &body.number {
                rules::check_number(&mut c, "number", n);
            }
            if let Some(p) = &body.phone {
                rules::check_phone(&mut c, "phone", p);
            }
            if let Some(i) = &body.id_number {
                rules::check_id_number(&mut c, "id_number", i);
            }
            checked(c)?;
            let answer = ask_endpoint(state, tenant, itype, body).await?;
            if !answer.matched {
                return Err(verification_failed());
            }
            let mut c = Checks::new();
            let number = answer.number.unwrap_or_default();
            rules::check_number(&mut c, "number", &number);
            let name = answer
                .name
                .or_else(|| body.name.clone())
                .unwrap_or_default();
            rules::check_name(&mut c, "name", &name);
            let phone = answer
                .phone
                .and_then(|p| rules::check_phone(&mut c, "phone", &p));
            if c.into_result().is_err() {
                return Err(endpoint_down("it matched without a valid name and number"));
            }
            let found = state
                .store
                .find_claimants(tenant, identity.clone(), Claimant::Number(number.clone()))
                .await?;
            if found.is_empty() {
                let user = newcomer(&name, Some(&number), phone, None, &identity);
                return Ok((user.id, Some(user), identity));
            }
            Ok((the_one(found)?.id, None, identity))
        }
    }
}

fn ticket_spent() -> ApiError {
    ApiError::Gone {
        code: "claim_ticket_used_or_expired",
        detail: "this claim ticket was already used or has expired: open the link again from \
                 the official account"
            .into(),
    }
}

/// Claim a card (no token): the ticket when the card's mode needs one, then the identity's
/// verification, then activation: 201 with the card and this phone's cardholder token (200
/// when the person held the card already: it moves to this phone, and every earlier
/// phone's token ends). Refusals: 409 `card_not_approved`; 422 `identity_not_eligible`;
/// 403 `claim_ticket_required`, `follow_required`; 410 `claim_ticket_used_or_expired`;
/// 422 `verification_failed` (the same whichever detail is wrong), `phone_code_wrong`,
/// `phone_code_expired`; 409 `identity_ambiguous`; 503 when an external endpoint fails;
/// 429 past 20 claims from one address, then one every 10 seconds.
#[utoipa::path(tag = "cards", params(("tenant_id" = String, Path), ("card_id" = String, Path)),
    request_body = ClaimCard, responses((status = 201, body = Activated), Problems))]
#[post("/claim/{tenant_id}/cards/{card_id}")]
pub async fn claim_card(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    Json(body): Json<ClaimCard>,
) -> Result<HttpResponse, ApiError> {
    limit_claims(&state, &req)?;
    let tenant: TenantId = path_id(&path.0)?;
    let card = state.store.get_card(tenant, path_id(&path.1)?).await?;
    if card.status != CardStatus::Approved {
        return Err(not_approved(&card));
    }
    if !card.identity_type_ids.contains(&body.identity_type_id) {
        return Err(not_eligible());
    }
    let itype = state
        .store
        .get_identity_type(tenant, body.identity_type_id)
        .await
        .map_err(|_| not_eligible())?;
    let now = state.clock.now();
    let ticket = body.ticket.as_deref().map(hash_token);
    let account = match ticket {
        Some(hash) => {
            let (account, followed) = state
                .store
                .claim_ticket(tenant, hash, now)
                .await?
                .ok_or_else(ticket_spent)?;
            if card.claim_mode == ClaimMode::FollowRequired && !followed {
                return Err(ApiError::forbidden(
                    "follow_required",
                    "follow the organisation's official account first, then open the link \
                     from it again",
                ));
            }
            Some(account)
        }
        None if card.claim_mode == ClaimMode::OpenLink => None,
        None => {
            return Err(ApiError::forbidden(
                "claim_ticket_required",
                "this card is claimed from the organisation's official account: open the \
                 link there",
            ))
        }
    };
    let (user_id, new_user, _) = verify(&state, tenant, &itype, &body).await?;
    let token = new_token();
    // The person's screen, the tenant's dashboard and the official account's backend (by
    // webhook) hear that the card is active; no name travels (the number is the tenant's).
    let event = OutboxEvent {
        id: EventId::new(),
        topics: vec![format!("user:{user_id}"), "tenant".to_string()],
        kind: "card.activated".into(),
        payload: Payload::of(&serde_json::json!({
            "card_id": card.id, "title": card.title, "user_id": user_id,
            "identity_type_id": itype.id, "method": itype.verification,
            "account": account, "claimed_at": now,
        })),
    };
    let write = ClaimWrite {
        claim: CardClaim {
            id: CardClaimId::new(),
            card_id: card.id,
            user_id,
            identity_type_id: itype.id,
            method: itype.verification,
            account,
            claimed_at: now,
        },
        new_user,
        token: NewToken {
            hash: hash_token(&token),
            kind: TokenKind::Cardholder,
            tenant_id: Some(tenant),
            subject_id: Some(user_id.0),
            created_at: now,
        },
        ticket,
        event: event.clone(),
    };
    let audit = Audit {
        id: onecard_schema::ids::AuditId::new(),
        tenant_id: Some(tenant),
        actor: Actor::Link,
        action: "card.claim",
        target_type: "card",
        target_id: card.id.to_string(),
        request_id: request_id(&req),
        at: now,
        detail: serde_json::json!({
            "user_id": user_id, "method": itype.verification, "identity_type_id": itype.id,
        }),
    };
    let (claim, first) = state
        .store
        .claim_card(tenant, write, now, audit)
        .await
        .map_err(|e| match e {
            StoreError::Gone => ticket_spent(),
            other => other.into(),
        })?;
    // The person's earlier phones' tokens ended: this node forgets them now, the others
    // within the cache's 5 seconds.
    state.tokens.clear();
    state
        .relay
        .submit(PendingEvent::of_page(tenant, vec![event], now));
    let user = state.store.get_user(tenant, user_id).await?;
    let activated = Activated {
        token,
        card,
        claim,
        user: Holder {
            id: user.id,
            name: user.name,
            number: user.number,
        },
    };
    Ok(if first {
        HttpResponse::Created().json(activated)
    } else {
        HttpResponse::Ok().json(activated)
    })
}

/// The cards I hold, newest claim first.
#[utoipa::path(tag = "cards", security(("bearer" = [])),
    responses((status = 200, body = Paged<HeldCard>), Problems))]
#[get("/me/cards")]
pub async fn list_my_cards(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
) -> Result<web::Json<Paged<HeldCard>>, ApiError> {
    let held = state
        .store
        .user_cards(caller.tenant()?, UserId(caller.subject()?))
        .await?
        .into_iter()
        .map(|(claim, card)| HeldCard { card, claim })
        .collect();
    Ok(web::Json(Paged::new(held, None)))
}

/// The texts the sandbox gateway took for this tenant, newest first (super admins, while
/// the sandbox is the gateway; 404 otherwise).
#[utoipa::path(tag = "cards", params(TextsParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<SentText>), Problems))]
#[get("/sandbox/texts")]
pub async fn list_sandbox_texts(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
    Query(params): Query<TextsParams>,
) -> Result<web::Json<Paged<SentText>>, ApiError> {
    let sandbox = state.sandbox_texts.as_ref().ok_or(ApiError::NotFound)?;
    let phone = params.phone.as_deref().and_then(rules::normalize_phone);
    let texts = sandbox.sent_to(caller.tenant()?, phone.as_deref());
    Ok(web::Json(Paged::new(texts, None)))
}
