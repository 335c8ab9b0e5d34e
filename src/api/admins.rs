//! Admins: a super admin names an existing user; that person opens a one-time binding
//! link (24 h) themselves and receives their admin token. The last super admin stays.
//! A sub-admin belongs to one permission group (`groups`), which says what they may do.

use actix_web::{delete, get, post, web, HttpResponse};
use jiff::{SignedDuration, Timestamp};
use onecard_schema::ids::{AdminGroupId, AdminId, TenantId, UserId};
use onecard_schema::model::{
    Actor, Admin as AdminRecord, AdminRole, Audit, Grants, NewAdmin, NewToken, TokenKind,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ListParams, Paged};
use crate::auth::{bearer, hash_token, new_token, request_id, resolve, Admin, Auth, SuperAdmin};
use crate::extract::{path_id, Json, Query};
use crate::limits::ADMIN_BINDING_TTL_S;
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAdmin {
    pub user_id: UserId,
    pub role: AdminRole,
    /// The permission group of a `sub_admin` (required for one, refused for a
    /// `super_admin`).
    pub group_id: Option<AdminGroupId>,
}

/// The calling admin: who they are and what their group grants.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminSelf {
    pub id: AdminId,
    pub role: AdminRole,
    /// A sub-admin's grants; null for a super admin, who may do everything.
    pub grants: Option<Grants>,
    /// Set when a tenant group's admin acts in a member tenant (`OneCard-Tenant`): their
    /// own tenant, the group's head, where `id` is an admin. Null otherwise.
    pub group_tenant_id: Option<TenantId>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminBinding {
    pub id: AdminId,
    /// One-time; shown once.
    pub binding_token: String,
    /// The link the person opens themselves (the `/bind` page).
    pub binding_url: String,
    /// The same link as a QR code (SVG) for the person to scan with their phone.
    pub binding_qr_svg: String,
    pub expires_at: Timestamp,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindAdmin {
    pub binding_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminBound {
    pub admin_id: AdminId,
    /// The new admin's token; shown once.
    pub token: String,
}

/// Start binding a user as admin (super admin).
#[utoipa::path(tag = "admins", request_body = CreateAdmin, security(("bearer" = [])),
    responses((status = 201, body = AdminBinding), Problems))]
#[post("/admins")]
pub async fn create_admin(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
    Json(body): Json<CreateAdmin>,
) -> Result<HttpResponse, ApiError> {
    match (body.role, body.group_id) {
        (AdminRole::SuperAdmin, Some(_)) => {
            return Err(ApiError::invalid_field(
                "group_id",
                "forbidden",
                "a super admin may do everything and belongs to no group",
            ))
        }
        (AdminRole::SubAdmin, None) => {
            return Err(ApiError::invalid_field(
                "group_id",
                "required",
                "a sub admin needs the permission group that says what they may do",
            ))
        }
        _ => {}
    }
    let now = state.clock.now();
    let binding = new_token();
    let admin = NewAdmin {
        id: AdminId::new(),
        tenant_id: caller.tenant()?,
        user_id: body.user_id,
        role: body.role,
        group_id: body.group_id,
        binding_hash: hash_token(&binding),
        created_at: now,
        expires_at: now + SignedDuration::from_secs(ADMIN_BINDING_TTL_S),
    };
    let (id, expires_at) = (admin.id, admin.expires_at);
    let audit = caller.audit(
        &state,
        "admin.create",
        "admin",
        id,
        serde_json::json!({
            "user_id": body.user_id, "role": body.role, "group_id": body.group_id,
        }),
    );
    let base = state.public_url_of(caller.tenant()?).await?;
    let binding_url = format!("{base}/bind#{binding}");
    let binding_qr_svg = super::qr_svg(&binding_url, 240)?;
    state.store.create_admin(admin, audit).await?;
    Ok(HttpResponse::Created().json(AdminBinding {
        id,
        binding_url,
        binding_qr_svg,
        binding_token: binding,
        expires_at,
    }))
}

/// Open a binding (no token needed: the binding token is the proof). A cardholder's token
/// sent with it (the `/bind` page sends the card kept on the phone) must be the named
/// person's: anyone else's card is refused (403 `binding_not_yours`) and the link stays
/// unused.
#[utoipa::path(tag = "admins", request_body = BindAdmin,
    responses((status = 201, body = AdminBound), Problems))]
#[post("/admins/bind")]
pub async fn bind_admin(
    state: web::Data<AppState>,
    req: actix_web::HttpRequest,
    Json(body): Json<BindAdmin>,
) -> Result<HttpResponse, ApiError> {
    if body.binding_token.is_empty() || body.binding_token.len() > 128 {
        return Err(ApiError::NotFound);
    }
    let now = state.clock.now();
    let token = new_token();
    let stored = NewToken {
        hash: hash_token(&token),
        kind: TokenKind::Admin,
        tenant_id: None,
        subject_id: None,
        created_at: now,
    };
    let audit = Audit {
        id: onecard_schema::ids::AuditId::new(),
        tenant_id: None,
        actor: Actor::Link,
        action: "admin.bind",
        target_type: "admin",
        target_id: String::new(),
        request_id: request_id(&req),
        at: now,
        detail: serde_json::json!({}),
    };
    let opener = match bearer(&req) {
        Some(card) => match resolve(&state, hash_token(card), request_id(&req)).await {
            Ok(c) if c.kind == TokenKind::Cardholder => Some((c.tenant()?, UserId(c.subject()?))),
            // Not a card (or one no longer valid): the binding token alone decides.
            _ => None,
        },
        None => None,
    };
    let (_, admin_id) = state
        .store
        .bind_admin(hash_token(&body.binding_token), stored, now, opener, audit)
        .await
        .map_err(|e| match e {
            onecard_schema::StoreError::Conflict {
                code: "binding_not_yours",
                detail,
                ..
            } => ApiError::forbidden("binding_not_yours", detail),
            onecard_schema::StoreError::Gone => ApiError::Gone {
                code: "binding_used_or_expired",
                detail: "this binding link was already used or has expired; ask for a new one"
                    .into(),
            },
            other => other.into(),
        })?;
    Ok(HttpResponse::Created().json(AdminBound { admin_id, token }))
}

/// The calling admin and what they may do (any admin).
#[utoipa::path(tag = "admins", security(("bearer" = [])),
    responses((status = 200, body = AdminSelf), Problems))]
#[get("/admins/me")]
pub async fn get_admin_self(caller: Auth<Admin>) -> Result<web::Json<AdminSelf>, ApiError> {
    Ok(web::Json(AdminSelf {
        id: AdminId(caller.subject()?),
        role: caller.role.ok_or(ApiError::Unauthorized)?,
        grants: caller.grants.as_deref().cloned(),
        group_tenant_id: caller.via_group,
    }))
}

/// The tenant's admins (super admin).
#[utoipa::path(tag = "admins", params(ListParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<AdminRecord>), Problems))]
#[get("/admins")]
pub async fn list_admins(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
    Query(params): Query<ListParams>,
) -> Result<web::Json<Paged<AdminRecord>>, ApiError> {
    let page = state
        .store
        .list_admins(caller.tenant()?, params.page(AdminId)?)
        .await?;
    Ok(web::Json(Paged::new(page.items, page.next.map(|a| a.0))))
}

/// Remove an admin and revoke its tokens (never the last super admin: 409).
#[utoipa::path(tag = "admins", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), Problems))]
#[delete("/admins/{id}")]
pub async fn delete_admin(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: AdminId = path_id(&id)?;
    let audit = caller.audit(&state, "admin.delete", "admin", id, serde_json::json!({}));
    state
        .store
        .delete_admin(caller.tenant()?, id, audit)
        .await?;
    // Its tokens are revoked: drop every cached token here (other nodes within the TTL).
    state.tokens.clear();
    Ok(HttpResponse::NoContent().finish())
}
