//! Canteen collection codes (SPEC §13): a merchant's static code that cardholders scan
//! with their phones. At a `pay` code the person enters the amount and pays from their
//! wallet: an ordinary payment, through their wallet actor with the same checks, decline
//! reasons and deduction order as at a till, only signed in rather than by payment code.
//! At a `count` code the scan counts a visit and moves no money. Both appear live on the
//! code's, the merchant's and the tenant's topics.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use jiff::{SignedDuration, Timestamp};
use onecard_actors::domain::collection::{normalise_code, qr_text};
use onecard_actors::domain::validate::Checks;
use onecard_actors::wallet::{CodeCheck, Op};
use onecard_schema::collection_store::{VisitFilter, VisitWrite};
use onecard_schema::ids::{EventId, MerchantId, PaymentId, TenantId, TerminalId, UserId, VisitId};
use onecard_schema::model::{CollectionMode, Visit};
use onecard_schema::wallet::{OutboxEvent, Payload, PendingEvent, Terminal};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::merchants::{subtree, MerchantDay, TotalsQuery};
use super::money::{idem, wallet_call};
use super::payments::mask_name;
use super::wallets::amount;
use super::{checked, qr_svg, svg_response, ListParams, Paged};
use crate::auth::{Auth, Cardholder, PaymentsViewer};
use crate::extract::{path_id, required_idempotency_key, HashedJson, Query};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

/// A second scan by the same person at the same count-only code within this long is the
/// same visit (a double tap, or a retry without its Idempotency-Key), not another.
pub const VISIT_REPEAT: SignedDuration = SignedDuration::from_secs(60);

/// What a cardholder's phone shows before they pay or are counted: whom, and how.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionCodeView {
    pub code: String,
    pub mode: CollectionMode,
    pub terminal_id: TerminalId,
    /// The code's own name ("Noodle stall, window 3").
    pub name: String,
    pub merchant_id: MerchantId,
    pub merchant_name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectionPay {
    /// Fen, at least 1; at most the merchant's single limit (over it the payment is
    /// declined `over_limit`).
    #[schema(minimum = 1)]
    pub amount: i64,
}

/// The collection code `raw` names (as typed, or the address its QR code carries), if it
/// is the caller's tenant's: another tenant's code is not found, as an unknown one.
async fn code_of(
    state: &AppState,
    tenant: TenantId,
    raw: &str,
) -> Result<(Terminal, CollectionMode), ApiError> {
    let code = normalise_code(raw).ok_or(ApiError::NotFound)?;
    match state.collection_code(code).await? {
        Some((owner, t)) if owner == tenant => {
            if t.retired_at.is_some() {
                return Err(super::merchants::terminal_retired());
            }
            let mode = t
                .collection
                .as_ref()
                .map(|c| c.mode)
                .ok_or(ApiError::NotFound)?;
            Ok((t, mode))
        }
        _ => Err(ApiError::NotFound),
    }
}

fn wrong_mode(mode: CollectionMode) -> ApiError {
    ApiError::conflict(
        "collection_mode",
        match mode {
            CollectionMode::Pay => "this code takes payments: pay it an amount",
            CollectionMode::Count => "this code counts visits: it takes no payment",
        },
    )
}

/// The collection code a phone scanned (a cardholder): the merchant, the code's name and
/// its mode, to show before paying. Any case, spaces and dashes; or the whole address.
#[utoipa::path(tag = "collection", params(("code" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = CollectionCodeView), Problems))]
#[get("/collection-codes/{code}")]
pub async fn get_collection_code(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    code: web::Path<String>,
) -> Result<web::Json<CollectionCodeView>, ApiError> {
    let tenant = caller.tenant()?;
    let (t, mode) = code_of(&state, tenant, &code).await?;
    let merchant_name = state.merchant_name(tenant, t.merchant_id).await?;
    Ok(web::Json(CollectionCodeView {
        code: t.collection.map(|c| c.code).unwrap_or_default(),
        mode,
        terminal_id: t.id,
        name: t.name,
        merchant_id: t.merchant_id,
        merchant_name,
    }))
}

/// Pay a `pay` collection code from my wallet (a cardholder; Idempotency-Key required).
/// The same payment as at a till: 201 with its status (`succeeded`, `accepted`, or
/// `declined` with `decline_reason`: `frozen`, `arrears`, `over_limit`,
/// `insufficient_funds`, `card_inactive`), recorded either way; 403
/// `agreement_required` while the tenant requires the agreement and it is unsigned
/// (nothing recorded); 409 `collection_mode` at a `count` code.
#[utoipa::path(tag = "collection", params(("code" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = CollectionPay, security(("bearer" = [])),
    responses((status = 201, body = onecard_actors::wire::PaymentView), Problems))]
#[post("/collection-codes/{code}/payments")]
pub async fn pay_collection_code(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    req: HttpRequest,
    code: web::Path<String>,
    HashedJson(body, hash): HashedJson<CollectionPay>,
) -> Result<HttpResponse, ApiError> {
    let key = required_idempotency_key(&req)?;
    let (tenant, user) = (caller.tenant()?, UserId(caller.subject()?));
    let mut c = Checks::new();
    let amount = amount(&mut c, "amount", body.amount);
    checked(c)?;
    let (terminal, mode) = code_of(&state, tenant, &code).await?;
    if mode != CollectionMode::Pay {
        return Err(wrong_mode(mode));
    }
    let merchant = state.merchant_info(tenant, terminal.merchant_id).await?;
    // Taken to be active: the commit checks the card in its own transaction, and the
    // wallet decides again as `card_inactive` if it is not.
    let op = Op::Pay {
        payment_id: PaymentId::new(),
        terminal_id: terminal.id,
        merchant,
        amount,
        code: CodeCheck::SignedIn,
        card_active: true,
    };
    let idem = Some(idem(&caller, key, hash));
    wallet_call(&state, tenant, user, op, idem, StatusCode::CREATED).await
}

/// Be counted at a `count` collection code (a cardholder): 201 with the visit (its
/// `collection.visit` event carries the name masked, without the number). Scanning
/// again within a minute answers 200 with the same visit (counted once); 403
/// `card_inactive` for a suspended or departed member; 409 `collection_mode` at a `pay`
/// code. An Idempotency-Key is honoured as on every POST.
#[utoipa::path(tag = "collection", params(("code" = String, Path)), security(("bearer" = [])),
    responses((status = 201, body = Visit), (status = 200, body = Visit), Problems))]
#[post("/collection-codes/{code}/visits")]
pub async fn visit_collection_code(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    code: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, user) = (caller.tenant()?, UserId(caller.subject()?));
    let (terminal, mode) = code_of(&state, tenant, &code).await?;
    if mode != CollectionMode::Count {
        return Err(wrong_mode(mode));
    }
    let person = super::scan::active_member(&state, tenant, user).await?;
    let now = state.clock.now();
    let visit = Visit {
        id: VisitId::new(),
        terminal_id: terminal.id,
        merchant_id: terminal.merchant_id,
        user_id: user,
        name: Some(person.name),
        number: Some(person.number),
        at: now,
    };
    let event = OutboxEvent {
        id: EventId::new(),
        topics: vec![
            format!("terminal:{}", terminal.id),
            format!("user:{user}"),
            format!("merchant:{}", terminal.merchant_id),
            "tenant".to_string(),
        ],
        kind: "collection.visit".into(),
        // Shown on the code's screen by the queue: the name masked as a till shows a
        // payer's, without the number (admins list visits in full).
        payload: Payload::of(&Visit {
            name: visit.name.as_deref().map(mask_name),
            number: None,
            ..visit.clone()
        }),
    };
    let since = now.checked_sub(VISIT_REPEAT).unwrap_or(Timestamp::MIN);
    match state
        .store
        .record_visit(tenant, visit.clone(), event.clone(), since)
        .await?
    {
        VisitWrite::Created => {
            state
                .relay
                .submit(PendingEvent::of_page(tenant, vec![event], now));
            Ok(HttpResponse::Created().json(visit))
        }
        VisitWrite::Repeat(first) => Ok(HttpResponse::Ok().json(first)),
    }
}

/// A collection code's QR code, as SVG, to print (it carries the pay page's address with
/// the code; print the code beneath it for typing). 409 `not_a_collection_code` for a till.
#[utoipa::path(tag = "collection", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, content_type = "image/svg+xml", body = String), Problems))]
#[get("/terminals/{id}/qr")]
pub async fn get_terminal_qr(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let t = state
        .store
        .get_terminal(caller.tenant()?, path_id(&id)?)
        .await?;
    let Some(c) = t.collection else {
        return Err(ApiError::conflict(
            "not_a_collection_code",
            "this terminal is a till: it has no code to print",
        ));
    };
    Ok(svg_response(qr_svg(
        &qr_text(&state.public_url_of(caller.tenant()?).await?, &c.code),
        320,
    )?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VisitParams {
    /// Visits at this merchant's codes and those of the merchants under it.
    pub merchant_id: Option<MerchantId>,
    pub terminal_id: Option<TerminalId>,
    pub user_id: Option<UserId>,
    /// At or after this.
    pub from: Option<Timestamp>,
    /// Before this.
    pub to: Option<Timestamp>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Visits counted at count-only codes, oldest first, by merchant (with those under it),
/// code, person and time.
#[utoipa::path(tag = "collection", params(VisitParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<Visit>), Problems))]
#[get("/visits")]
pub async fn list_visits(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    Query(params): Query<VisitParams>,
) -> Result<web::Json<Paged<Visit>>, ApiError> {
    let tenant = caller.tenant()?;
    let page = ListParams {
        limit: params.limit,
        cursor: params.cursor,
    }
    .page(VisitId)?;
    let merchants = match params.merchant_id {
        Some(m) => {
            let all = state.merchants_of(tenant).await?;
            // An unknown merchant has no visits; it is not an error to ask.
            Some(subtree(&all, m).unwrap_or_default())
        }
        None => None,
    };
    if merchants.as_ref().is_some_and(Vec::is_empty) {
        return Ok(web::Json(Paged::new(Vec::new(), None)));
    }
    let filter = VisitFilter {
        merchants,
        terminal: params.terminal_id,
        user: params.user_id,
        from: params.from,
        to: params.to,
    };
    let found = state.store.list_visits(tenant, filter, page).await?;
    Ok(web::Json(Paged::new(found.items, found.next.map(|i| i.0))))
}

/// My visits at count-only codes (a cardholder), oldest first.
#[utoipa::path(tag = "me", params(ListParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<Visit>), Problems))]
#[get("/me/visits")]
pub async fn list_my_visits(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    Query(params): Query<ListParams>,
) -> Result<web::Json<Paged<Visit>>, ApiError> {
    let filter = VisitFilter {
        user: Some(UserId(caller.subject()?)),
        ..VisitFilter::default()
    };
    let found = state
        .store
        .list_visits(caller.tenant()?, filter, params.page(VisitId)?)
        .await?;
    Ok(web::Json(Paged::new(found.items, found.next.map(|i| i.0))))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CodeVisits {
    pub terminal_id: TerminalId,
    pub merchant_id: MerchantId,
    pub name: String,
    pub count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MerchantVisits {
    pub date: String,
    pub merchant_id: MerchantId,
    /// Visits that day at this merchant's codes and those under it.
    pub count: u64,
    /// Each count-only code of the merchant and those under it, busiest first (codes
    /// without visits that day included, at 0).
    pub codes: Vec<CodeVisits>,
}

/// A merchant's visits on one tenant-local day: the count, and each code's.
#[utoipa::path(tag = "collection", params(("id" = String, Path), TotalsQuery),
    security(("bearer" = [])), responses((status = 200, body = MerchantVisits), Problems))]
#[get("/merchants/{id}/visits")]
pub async fn get_merchant_visits(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    id: web::Path<String>,
    Query(q): Query<TotalsQuery>,
) -> Result<web::Json<MerchantVisits>, ApiError> {
    let day = MerchantDay::of(&state, &caller, &id, q.date.as_deref()).await?;
    let (tenant, id) = (day.tenant, day.subtree[0]);
    let counted = state
        .store
        .count_visits(tenant, day.subtree.clone(), day.from, day.to)
        .await?;
    let mut codes: Vec<CodeVisits> = state
        .store
        .list_terminals(tenant, day.subtree)
        .await?
        .into_iter()
        .filter(|t| t.collection.as_ref().map(|c| c.mode) == Some(CollectionMode::Count))
        .map(|t| CodeVisits {
            count: counted
                .iter()
                .find(|(id, _)| *id == t.id)
                .map_or(0, |(_, n)| *n),
            terminal_id: t.id,
            merchant_id: t.merchant_id,
            name: t.name,
        })
        .collect();
    codes.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
    Ok(web::Json(MerchantVisits {
        date: day.date.to_string(),
        merchant_id: id,
        count: counted.iter().map(|(_, n)| n).sum(),
        codes,
    }))
}
