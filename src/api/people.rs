//! Global identity (SPEC §1): one person across the member tenants of a tenant group. A
//! teacher who works in two schools of a district holds a record and a card in each; she
//! links them herself, proving both: with one card she makes a one-time link code
//! (`POST /me/identity/link-codes`), and redeems it with the other (`POST
//! /me/identity/links`). Linked, she sees her records in every member school, opens a
//! session in any of them from the one she is in (`POST /me/identity/sessions`: that
//! card moves to this phone, as a claim does), and may unlink any of them. The group's
//! admins read a member's person and unlink a record made by mistake.
//!
//! The rules are the store's (`onecard_schema::person_store`): the two records are in
//! different tenants of one group, agree on the ID-document number when both carry one,
//! and a person holds one record per tenant. Both tenants' editions need group
//! management (advanced and up); reading and unlinking one's own records do not, so a
//! person may always leave.

use actix_web::{delete, get, post, web, HttpResponse};
use onecard_actors::domain::edition::{has_capability, Capability};
use onecard_schema::ids::{AdminId, PersonId, TenantId, UserId};
use onecard_schema::model::{Actor, NewToken, TokenKind};
use onecard_schema::person_store::{LinkRequest, NewLinkCode, Person};
use onecard_schema::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{
    hash_token, new_token, Auth, Caller, Cardholder, GroupAdmin, GroupManager, IdentityLinker,
};
use crate::extract::{path_id, Json, Query};
use crate::limits::LINK_CODE_TTL;
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

/// A one-time link code, shown once; only its hash is kept.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkCode {
    /// Redeem it with your card of another member tenant before `expires_at`.
    pub code: String,
    pub expires_at: jiff::Timestamp,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemLinkCode {
    /// A link code made with your card of another member tenant.
    #[schema(min_length = 1, max_length = 64)]
    pub code: String,
}

/// The person you are, across the member tenants of your tenant's group.
#[derive(Debug, Serialize, ToSchema)]
pub struct MyIdentity {
    /// Null while this record is linked to no other.
    pub person: Option<Person>,
    /// Whether this record may link: its tenant is a member of a group, in an edition
    /// with global identity.
    pub linkable: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenSession {
    /// A member tenant where you have a linked, active record.
    pub tenant_id: TenantId,
}

/// A cardholder token for your record in another member tenant (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkedSession {
    pub token: String,
    pub tenant_id: TenantId,
    pub user_id: UserId,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PersonQuery {
    /// A member tenant.
    pub tenant_id: String,
    /// A user of that tenant.
    pub user_id: String,
}

fn code_spent() -> ApiError {
    ApiError::Gone {
        code: "link_code_used_or_expired",
        detail: "this link code was already used, was replaced by a newer one or has expired: \
                 make a new one with your other card"
            .into(),
    }
}

/// The caller's own record: (tenant, user).
fn me(caller: &Caller) -> Result<(TenantId, UserId), ApiError> {
    Ok((caller.tenant()?, UserId(caller.subject()?)))
}

/// Make a one-time link code with this card (it replaces this record's earlier code).
/// Redeem it with your card of another member tenant of the same group within 10 minutes.
#[utoipa::path(tag = "global identity", security(("bearer" = [])),
    responses((status = 201, body = LinkCode), Problems))]
#[post("/me/identity/link-codes")]
pub async fn create_link_code(
    state: web::Data<AppState>,
    caller: Auth<IdentityLinker>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, user) = me(&caller)?;
    if state.tenant(tenant).await?.group_id.is_none() {
        return Err(ApiError::conflict(
            "link_not_allowed",
            "your tenant is not a member of a tenant group: there is nothing to link with",
        ));
    }
    let code = new_token();
    let expires_at = state.clock.now() + LINK_CODE_TTL;
    state
        .store
        .put_link_code(NewLinkCode {
            hash: hash_token(&code),
            tenant_id: tenant,
            user_id: user,
            expires_at,
        })
        .await?;
    Ok(HttpResponse::Created().json(LinkCode { code, expires_at }))
}

/// Redeem a link code made with your card of another member tenant: the two records
/// become one person (201), or already were (200). Refusals: 410
/// `link_code_used_or_expired`; 409 `link_not_allowed` (same tenant, or not one group),
/// `identity_mismatch` (the records carry different ID-document numbers),
/// `tenant_already_linked` (the person would hold two records in one tenant). A refusal
/// leaves the code unspent.
#[utoipa::path(tag = "global identity", request_body = RedeemLinkCode, security(("bearer" = [])),
    responses((status = 201, body = Person), (status = 200, body = Person), Problems))]
#[post("/me/identity/links")]
pub async fn redeem_link_code(
    state: web::Data<AppState>,
    caller: Auth<IdentityLinker>,
    Json(body): Json<RedeemLinkCode>,
) -> Result<HttpResponse, ApiError> {
    if body.code.is_empty() || body.code.len() > 64 {
        return Err(ApiError::invalid_field(
            "code",
            "length",
            "a link code is 1 to 64 characters",
        ));
    }
    let (tenant, user) = me(&caller)?;
    let audit = caller.audit(
        &state,
        "identity.link",
        "person",
        "",
        serde_json::json!({ "tenant_id": tenant }),
    );
    let request = LinkRequest {
        code_hash: hash_token(&body.code),
        tenant_id: tenant,
        user_id: user,
        new_person: PersonId::new(),
        at: state.clock.now(),
    };
    let (person, changed) = state
        .store
        .link_person(request, audit)
        .await
        .map_err(|e| match e {
            StoreError::Gone => code_spent(),
            other => other.into(),
        })?;
    Ok(if changed {
        HttpResponse::Created().json(person)
    } else {
        HttpResponse::Ok().json(person)
    })
}

/// The person this card's record belongs to, with every linked record.
#[utoipa::path(tag = "global identity", security(("bearer" = [])),
    responses((status = 200, body = MyIdentity), Problems))]
#[get("/me/identity")]
pub async fn get_my_identity(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
) -> Result<web::Json<MyIdentity>, ApiError> {
    let (tenant, user) = me(&caller)?;
    let person = state.store.person_of(tenant, user).await?;
    let linkable = caller
        .edition
        .is_some_and(|e| has_capability(e, Capability::GroupManagement))
        && state.tenant(tenant).await?.group_id.is_some();
    Ok(web::Json(MyIdentity { person, linkable }))
}

/// Unlink one of your records (this card's own, or another tenant's); a person left with
/// one record is dissolved. Needs no edition: a person may always leave. 404 unless the
/// record is linked to you.
#[utoipa::path(tag = "global identity", params(("tenant_id" = String, Path)),
    security(("bearer" = [])), responses((status = 204), Problems))]
#[delete("/me/identity/links/{tenant_id}")]
pub async fn unlink_my_record(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let target: TenantId = path_id(&path)?;
    let (tenant, user) = me(&caller)?;
    let person = state
        .store
        .person_of(tenant, user)
        .await?
        .ok_or(ApiError::NotFound)?;
    // Written in the tenant whose record leaves.
    let mut audit = caller.audit(
        &state,
        "identity.unlink",
        "person",
        person.id,
        serde_json::json!({ "tenant_id": target, "by_tenant_id": tenant }),
    );
    audit.tenant_id = Some(target);
    state
        .store
        .unlink_person(person.group_id, person.id, target, audit)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A cardholder token for your linked record in another member tenant: that tenant's
/// cards move to this phone (its earlier phone's token ends, as a claim does). 404 unless
/// you have an active linked record there; 403 `edition` unless both tenants have global
/// identity.
#[utoipa::path(tag = "global identity", request_body = OpenSession, security(("bearer" = [])),
    responses((status = 201, body = LinkedSession), Problems))]
#[post("/me/identity/sessions")]
pub async fn open_linked_session(
    state: web::Data<AppState>,
    caller: Auth<IdentityLinker>,
    Json(body): Json<OpenSession>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, user) = me(&caller)?;
    let person = state
        .store
        .person_of(tenant, user)
        .await?
        .ok_or(ApiError::NotFound)?;
    let target = state.tenant(body.tenant_id).await?;
    if !has_capability(target.edition, Capability::GroupManagement) {
        return Err(ApiError::Edition(Capability::GroupManagement));
    }
    let token = new_token();
    let now = state.clock.now();
    let mut audit = caller.audit(
        &state,
        "identity.session",
        "person",
        person.id,
        serde_json::json!({ "by_tenant_id": tenant }),
    );
    audit.tenant_id = Some(target.id);
    let new = NewToken {
        hash: hash_token(&token),
        kind: TokenKind::Cardholder,
        tenant_id: Some(target.id),
        subject_id: None,
        created_at: now,
    };
    let user_id = state
        .store
        .open_linked_session(person.id, target.id, new, audit)
        .await?;
    // That record's earlier phone's token ended: this node forgets it now, the others
    // within the cache's 5 seconds.
    state.tokens.clear();
    Ok(HttpResponse::Created().json(LinkedSession {
        token,
        tenant_id: target.id,
        user_id,
    }))
}

/// The person a member tenant's user belongs to (the group's admins). 404 when the user
/// is linked to no other record, or the tenant is not a member.
#[utoipa::path(tag = "global identity", params(PersonQuery), security(("bearer" = [])),
    responses((status = 200, body = Person), Problems))]
#[get("/group/people")]
pub async fn find_group_person(
    state: web::Data<AppState>,
    caller: Auth<GroupAdmin>,
    Query(q): Query<PersonQuery>,
) -> Result<web::Json<Person>, ApiError> {
    let group = super::tenant_groups::own_group(&state, &caller).await?;
    let tenant: TenantId = q
        .tenant_id
        .parse()
        .map_err(|_| ApiError::invalid_field("tenant_id", "format", "not an id"))?;
    let user: UserId = q
        .user_id
        .parse()
        .map_err(|_| ApiError::invalid_field("user_id", "format", "not an id"))?;
    let person = state
        .store
        .person_of(tenant, user)
        .await?
        .filter(|p| p.group_id == group.id)
        .ok_or(ApiError::NotFound)?;
    Ok(web::Json(person))
}

/// One of the group's people (the group's admins).
#[utoipa::path(tag = "global identity", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Person), Problems))]
#[get("/group/people/{id}")]
pub async fn get_group_person(
    state: web::Data<AppState>,
    caller: Auth<GroupAdmin>,
    path: web::Path<String>,
) -> Result<web::Json<Person>, ApiError> {
    let group = super::tenant_groups::own_group(&state, &caller).await?;
    let person = state.store.get_person(group.id, path_id(&path)?).await?;
    Ok(web::Json(person))
}

/// Take a person's record in a member tenant out (the group's admins: a link made by
/// mistake); a person left with one record is dissolved. Audited in that tenant as
/// `group_admin:<head>/<admin>`.
#[utoipa::path(tag = "global identity", params(("id" = String, Path), ("tenant_id" = String, Path)),
    security(("bearer" = [])), responses((status = 204), Problems))]
#[delete("/group/people/{id}/links/{tenant_id}")]
pub async fn unlink_group_person(
    state: web::Data<AppState>,
    caller: Auth<GroupManager>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let group = super::tenant_groups::own_group(&state, &caller).await?;
    let (id, tenant): (PersonId, TenantId) = (path_id(&path.0)?, path_id(&path.1)?);
    let mut audit = caller.audit(
        &state,
        "identity.unlink",
        "person",
        id,
        serde_json::json!({ "tenant_id": tenant }),
    );
    audit.tenant_id = Some(tenant);
    audit.actor = Actor::GroupAdmin {
        tenant: caller.tenant()?,
        admin: AdminId(caller.subject()?),
    };
    // 404 for another group's person.
    state
        .store
        .unlink_person(group.id, id, tenant, audit)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
