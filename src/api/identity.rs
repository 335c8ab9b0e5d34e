//! Identity types (SPEC §3). A tenant names the kinds of people it has (teacher,
//! student, alumni…), each with a category and the way a person of that kind proves who
//! they are when they claim a card: `phone` (a code texted to the phone the tenant
//! imported), `name_id` (name and ID number match an imported record), `registration`
//! (open: they register themselves) or `external` (the tenant's own identity endpoint is
//! asked, signed with a secret shown once). A user's `identity` is a type's name; once the
//! tenant defines any type, users may only carry one of them. A type can be deleted only
//! while nobody holds it and no card names it. A type may carry a management scope:
//! departments whose people its holders see or change with their own card's token (a
//! finance-manager identity manages the finance department).

use actix_web::{delete, get, patch, post, web, HttpResponse};
use onecard_actors::domain::directory as rules;
use onecard_actors::domain::validate::Checks;
use onecard_schema::ids::{IdentityTypeId, TenantId};
use onecard_schema::model::{
    DepartmentGrant, IdentityCategory, IdentityType, TokenKind, Verification,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::apps::webhook_address;
use super::{checked, nullable, Paged};
use crate::auth::{Auth, Caller, IdentityManager, IdentityViewer};
use crate::extract::{path_id, Json};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

const URL_CHARS_MAX: usize = 500;
const MANAGED_DEPARTMENTS_MAX: usize = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIdentityType {
    /// What users carry as their `identity`; it cannot change later.
    #[schema(min_length = 1, max_length = 32, example = "student")]
    pub name: String,
    pub category: IdentityCategory,
    pub verification: Verification,
    /// The tenant's identity endpoint (http or https), required for `external`.
    pub external_url: Option<String>,
    /// A management scope: departments (with their subtrees) whose people the holders may
    /// see (`view`) or change (`manage`) with their own card's token.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub manages: Vec<DepartmentGrant>,
}

/// Absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchIdentityType {
    pub category: Option<IdentityCategory>,
    pub verification: Option<Verification>,
    /// `null` clears it (only when the method is not `external`).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 500)]
    pub external_url: Option<Option<String>>,
    /// Replaces the management scope whole (`[]`: none).
    #[schema(max_items = 100)]
    pub manages: Option<Vec<DepartmentGrant>>,
}

/// An identity type as created: with an `external` method, the secret its endpoint checks
/// OneCard's calls with, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityTypeCreated {
    #[serde(flatten)]
    pub identity_type: IdentityType,
    pub external_secret: Option<String>,
}

/// The endpoint's new secret; the old one stops working now.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointSecret {
    pub external_secret: String,
}

/// One grant per department (the last given wins).
fn distinct_grants(grants: Vec<DepartmentGrant>) -> Vec<DepartmentGrant> {
    let mut out: Vec<DepartmentGrant> = Vec::with_capacity(grants.len());
    for g in grants {
        out.retain(|o| o.id != g.id);
        out.push(g);
    }
    out
}

fn check(t: &IdentityType) -> Result<(), ApiError> {
    let mut c = Checks::new();
    rules::check_identity(&mut c, "name", &t.name);
    if t.manages.len() > MANAGED_DEPARTMENTS_MAX {
        c.fail(
            "manages",
            "max_items",
            format!("at most {MANAGED_DEPARTMENTS_MAX} departments"),
        );
    }
    match (&t.external_url, t.verification) {
        (None, Verification::External) => c.fail(
            "external_url",
            "required",
            "the external method calls this address: give it",
        ),
        (Some(_), v) if v != Verification::External => c.fail(
            "external_url",
            "forbidden",
            "only the external method calls an address",
        ),
        (Some(url), _) => {
            if c.text("external_url", url, 1, URL_CHARS_MAX) && !webhook_address(url) {
                c.fail(
                    "external_url",
                    "pattern",
                    "an http:// or https:// address with a host and no credentials",
                );
            }
        }
        (None, _) => {}
    }
    checked(c)
}

/// The endpoint secret of an `external` type.
fn secret_of(state: &AppState, t: &IdentityType) -> Option<String> {
    (t.verification == Verification::External).then(|| {
        state
            .keys
            .identity_endpoint_secret(t.id.0, t.secret_version)
    })
}

/// Create an identity type (super admins, and sub-admins managing `identity`).
#[utoipa::path(tag = "identity", request_body = CreateIdentityType, security(("bearer" = [])),
    responses((status = 201, body = IdentityTypeCreated), Problems))]
#[post("/identity-types")]
pub async fn create_identity_type(
    state: web::Data<AppState>,
    caller: Auth<IdentityManager>,
    Json(body): Json<CreateIdentityType>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now();
    let t = IdentityType {
        id: IdentityTypeId::new(),
        name: body.name.trim().to_string(),
        category: body.category,
        verification: body.verification,
        external_url: body.external_url,
        manages: distinct_grants(body.manages),
        secret_version: 1,
        created_at: now,
        updated_at: now,
    };
    check(&t)?;
    let audit = caller.audit(
        &state,
        "identity_type.create",
        "identity_type",
        t.id,
        serde_json::json!({
            "name": t.name, "category": t.category, "verification": t.verification,
            "external_url": t.external_url, "manages": t.manages,
        }),
    );
    state
        .store
        .create_identity_type(caller.tenant()?, t.clone(), audit)
        .await?;
    Ok(HttpResponse::Created().json(IdentityTypeCreated {
        external_secret: secret_of(&state, &t),
        identity_type: t,
    }))
}

/// The tenant's identity types, by name.
#[utoipa::path(tag = "identity", security(("bearer" = [])),
    responses((status = 200, body = Paged<IdentityType>), Problems))]
#[get("/identity-types")]
pub async fn list_identity_types(
    state: web::Data<AppState>,
    caller: Auth<IdentityViewer>,
) -> Result<web::Json<Paged<IdentityType>>, ApiError> {
    let types = state.store.list_identity_types(caller.tenant()?).await?;
    Ok(web::Json(Paged::new(types, None)))
}

/// One identity type.
#[utoipa::path(tag = "identity", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = IdentityType), Problems))]
#[get("/identity-types/{id}")]
pub async fn get_identity_type(
    state: web::Data<AppState>,
    caller: Auth<IdentityViewer>,
    id: web::Path<String>,
) -> Result<web::Json<IdentityType>, ApiError> {
    let t = state
        .store
        .get_identity_type(caller.tenant()?, path_id(&id)?)
        .await?;
    Ok(web::Json(t))
}

/// Change an identity type's category, method or endpoint (the name stays: users carry
/// it). Claims from now on use the new method.
#[utoipa::path(tag = "identity", params(("id" = String, Path)),
    request_body = PatchIdentityType, security(("bearer" = [])),
    responses((status = 200, body = IdentityType), Problems))]
#[patch("/identity-types/{id}")]
pub async fn patch_identity_type(
    state: web::Data<AppState>,
    caller: Auth<IdentityManager>,
    id: web::Path<String>,
    Json(body): Json<PatchIdentityType>,
) -> Result<web::Json<IdentityType>, ApiError> {
    let tenant = caller.tenant()?;
    let mut t = state.store.get_identity_type(tenant, path_id(&id)?).await?;
    if let Some(category) = body.category {
        t.category = category;
    }
    if let Some(verification) = body.verification {
        t.verification = verification;
    }
    if let Some(url) = body.external_url {
        t.external_url = url;
    }
    if let Some(manages) = body.manages {
        t.manages = distinct_grants(manages);
    }
    t.updated_at = state.clock.now();
    check(&t)?;
    let audit = caller.audit(
        &state,
        "identity_type.update",
        "identity_type",
        t.id,
        serde_json::json!({
            "category": t.category, "verification": t.verification,
            "external_url": t.external_url, "manages": t.manages,
        }),
    );
    state
        .store
        .update_identity_type(tenant, t.clone(), audit)
        .await?;
    // Holders' rights change with the scope: this node forgets their tokens now, the
    // others within the cache's 5 seconds.
    state.tokens.clear();
    Ok(web::Json(t))
}

/// Give an `external` type's endpoint a new secret (shown once); the old one stops now.
#[utoipa::path(tag = "identity", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = EndpointSecret), Problems))]
#[post("/identity-types/{id}/secret")]
pub async fn rotate_identity_secret(
    state: web::Data<AppState>,
    caller: Auth<IdentityManager>,
    id: web::Path<String>,
) -> Result<web::Json<EndpointSecret>, ApiError> {
    let tenant = caller.tenant()?;
    let mut t = state.store.get_identity_type(tenant, path_id(&id)?).await?;
    if t.verification != Verification::External {
        return Err(ApiError::conflict(
            "not_external",
            "only an identity type verified by an external endpoint has a secret",
        ));
    }
    t.secret_version += 1;
    t.updated_at = state.clock.now();
    let audit = caller.audit(
        &state,
        "identity_type.secret.rotate",
        "identity_type",
        t.id,
        serde_json::json!({ "secret_version": t.secret_version }),
    );
    state
        .store
        .update_identity_type(tenant, t.clone(), audit)
        .await?;
    Ok(web::Json(EndpointSecret {
        external_secret: state
            .keys
            .identity_endpoint_secret(t.id.0, t.secret_version),
    }))
}

/// Delete an identity type created by mistake: 409 `identity_in_use`, saying who holds it
/// or which cards name it, while any do.
#[utoipa::path(tag = "identity", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), Problems))]
#[delete("/identity-types/{id}")]
pub async fn delete_identity_type(
    state: web::Data<AppState>,
    caller: Auth<IdentityManager>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: IdentityTypeId = path_id(&id)?;
    let audit = caller.audit(
        &state,
        "identity_type.delete",
        "identity_type",
        id,
        serde_json::json!({}),
    );
    state
        .store
        .delete_identity_type(caller.tenant()?, id, audit)
        .await?;
    state.tokens.clear();
    Ok(HttpResponse::NoContent().finish())
}

/// Once the tenant defines identity types, a user's identity must name one of them (422
/// `identity` `identity_type`); before, any text is taken as it always was.
pub async fn check_known_identity(
    state: &AppState,
    tenant: TenantId,
    identity: Option<&str>,
) -> Result<(), ApiError> {
    let Some(identity) = identity else {
        return Ok(());
    };
    let types = state.store.list_identity_types(tenant).await?;
    if types.is_empty() || types.iter().any(|t| t.name == identity) {
        return Ok(());
    }
    Err(ApiError::invalid_field(
        "identity",
        "identity_type",
        format!(
            "not one of this organisation's identity types ({})",
            names(&types)
        ),
    ))
}

/// The types' names, for a message.
pub fn names(types: &[IdentityType]) -> String {
    types
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Identities are given by admins only: a member managing departments through their own
/// identity cannot hand out identities (and with them management rights). 403 otherwise.
pub fn identity_by_admins(caller: &Caller, sets_identity: bool) -> Result<(), ApiError> {
    if sets_identity && caller.kind == TokenKind::Cardholder {
        return Err(ApiError::forbidden(
            "forbidden",
            "identity: only admins give people their identity",
        ));
    }
    Ok(())
}
