//! Tenant groups (SPEC §1, "group management"): the platform operator forms a group (a
//! school district, a corporate group) around a head tenant and adds member tenants. The
//! head tenant's super admins are the group's admins, in an edition with group management:
//! they list the members, read the group's income summary, and act in any member as its
//! super admin by naming it in the `OneCard-Tenant` header (`crate::auth`). The operator
//! also lists tenants and changes a tenant's name or edition here.

use actix_web::{delete, get, patch, post, put, web, HttpResponse};
use onecard_actors::domain::edition::{edition_allowed, has_capability, Capability};
use onecard_actors::domain::validate::Checks;
use onecard_schema::group_store::{TenantGroup, TenantGroupPatch, TenantPatch};
use onecard_schema::ids::{TenantGroupId, TenantId};
use onecard_schema::model::{Edition, Feature, GrantLevel, Tenant};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::reports::{group_income, group_income_line, period, respond, Head, ReportKind};
use super::reports::{Report, ReportQuery};
use super::tenants::TenantView;
use super::{checked, query_id, ListParams, Paged};
use crate::auth::{Auth, Caller, GroupAdmin, Root};
use crate::extract::{path_id, Json, Query};
use crate::limits::{GROUP_REPORT_TENANTS_MAX, TENANT_GROUP_NAME_CHARS_MAX, TENANT_NAME_CHARS_MAX};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantGroup {
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$",
        example = "East District Education Bureau"
    )]
    pub name: String,
    /// The tenant whose super admins administer the group; it joins the group. Its edition
    /// must have group management (advanced and up).
    pub head_tenant_id: TenantId,
}

/// Absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTenantGroup {
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
    )]
    pub name: Option<String>,
    /// A member tenant, with group management in its edition.
    pub head_tenant_id: Option<TenantId>,
}

/// The operator's change to a tenant; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTenantByOperator {
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
    )]
    pub name: Option<String>,
    /// The new edition (`basic_edu` only for `k12` tenants). A group's head keeps group
    /// management only in `advanced` and up.
    pub edition: Option<Edition>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantListQuery {
    /// Only the members of this tenant group.
    pub group_id: Option<String>,
}

/// A tenant as its group's admins see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberTenant {
    pub id: TenantId,
    pub name: String,
    pub kind: onecard_schema::model::TenantKind,
    pub edition: Edition,
    pub timezone: String,
    pub capabilities: Vec<Capability>,
    /// Whether this is the group's head tenant (the admins' own).
    pub head: bool,
}

/// The caller's tenant group, seen by its admins.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupView {
    #[serde(flatten)]
    pub group: TenantGroup,
    /// Send a member's id as `OneCard-Tenant` to act in it as its super admin.
    pub act_in_member_header: &'static str,
}

/// A group name's checks.
fn check_name(c: &mut Checks, name: &str) {
    c.text("name", name, 1, TENANT_GROUP_NAME_CHARS_MAX);
}

/// A head must exist (422 otherwise) and have group management in its edition.
async fn check_head(state: &AppState, head: TenantId) -> Result<Tenant, ApiError> {
    let tenant = match state.store.get_tenant(head).await {
        Ok(t) => t,
        Err(onecard_schema::StoreError::NotFound) => {
            return Err(ApiError::invalid_field(
                "head_tenant_id",
                "exists",
                "no such tenant",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    if !has_capability(tenant.edition, Capability::GroupManagement) {
        return Err(ApiError::invalid_field(
            "head_tenant_id",
            "capability",
            format!(
                "the tenant's edition ({}) has no group management; {} and up have it",
                tenant.edition.as_str(),
                Capability::GroupManagement.lowest_edition().as_str()
            ),
        ));
    }
    Ok(tenant)
}

/// The operator's audit entry for a change to group `id`: in the platform's log, or in the
/// member tenant's own when the change is its joining or leaving.
fn operator_audit(
    state: &AppState,
    caller: &Caller,
    action: &'static str,
    id: TenantGroupId,
    member: Option<TenantId>,
    detail: serde_json::Value,
) -> onecard_schema::model::Audit {
    let mut audit = caller.audit(state, action, "tenant_group", id, detail);
    audit.tenant_id = member;
    audit
}

/// After a change to groups or memberships: who heads what and who belongs where is read
/// again (at once on this node, within the caches' seconds on the others).
fn forget_groups(state: &AppState) {
    state.heads.clear();
    state.tenants.clear();
}

/// Form a tenant group around a head tenant (platform operator).
#[utoipa::path(tag = "tenant groups", request_body = CreateTenantGroup, security(("bearer" = [])),
    responses((status = 201, body = TenantGroup), Problems))]
#[post("/tenant-groups")]
pub async fn create_tenant_group(
    state: web::Data<AppState>,
    caller: Auth<Root>,
    Json(body): Json<CreateTenantGroup>,
) -> Result<HttpResponse, ApiError> {
    let mut c = Checks::new();
    check_name(&mut c, &body.name);
    checked(c)?;
    check_head(&state, body.head_tenant_id).await?;
    let now = state.clock.now();
    let group = TenantGroup {
        id: TenantGroupId::new(),
        name: body.name,
        head_tenant_id: body.head_tenant_id,
        created_at: now,
        updated_at: now,
    };
    let audit = operator_audit(
        &state,
        &caller,
        "tenant_group.create",
        group.id,
        None,
        serde_json::json!({ "head_tenant_id": group.head_tenant_id }),
    );
    state
        .store
        .create_tenant_group(group.clone(), audit)
        .await?;
    forget_groups(&state);
    Ok(HttpResponse::Created().json(group))
}

/// Every tenant group (platform operator).
#[utoipa::path(tag = "tenant groups", params(ListParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<TenantGroup>), Problems))]
#[get("/tenant-groups")]
pub async fn list_tenant_groups(
    state: web::Data<AppState>,
    _caller: Auth<Root>,
    Query(params): Query<ListParams>,
) -> Result<web::Json<Paged<TenantGroup>>, ApiError> {
    let page = state
        .store
        .list_tenant_groups(params.page(TenantGroupId)?)
        .await?;
    Ok(web::Json(Paged::new(page.items, page.next.map(|g| g.0))))
}

/// One tenant group (platform operator); its members are `GET /tenants?group_id=`.
#[utoipa::path(tag = "tenant groups", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = TenantGroup), Problems))]
#[get("/tenant-groups/{id}")]
pub async fn get_tenant_group(
    state: web::Data<AppState>,
    _caller: Auth<Root>,
    id: web::Path<String>,
) -> Result<web::Json<TenantGroup>, ApiError> {
    Ok(web::Json(
        state.store.get_tenant_group(path_id(&id)?).await?,
    ))
}

/// Rename a group or name another member as its head (platform operator).
#[utoipa::path(tag = "tenant groups", params(("id" = String, Path)), request_body = PatchTenantGroup,
    security(("bearer" = [])), responses((status = 200, body = TenantGroup), Problems))]
#[patch("/tenant-groups/{id}")]
pub async fn patch_tenant_group(
    state: web::Data<AppState>,
    caller: Auth<Root>,
    id: web::Path<String>,
    Json(body): Json<PatchTenantGroup>,
) -> Result<web::Json<TenantGroup>, ApiError> {
    let id: TenantGroupId = path_id(&id)?;
    let mut c = Checks::new();
    if let Some(name) = &body.name {
        check_name(&mut c, name);
    }
    checked(c)?;
    if let Some(head) = body.head_tenant_id {
        check_head(&state, head).await?;
    }
    let audit = operator_audit(
        &state,
        &caller,
        "tenant_group.update",
        id,
        None,
        serde_json::json!({ "name": body.name, "head_tenant_id": body.head_tenant_id }),
    );
    let patch = TenantGroupPatch {
        name: body.name,
        head_tenant_id: body.head_tenant_id,
    };
    let group = state
        .store
        .update_tenant_group(id, patch, state.clock.now(), audit)
        .await?;
    forget_groups(&state);
    Ok(web::Json(group))
}

/// Delete a group whose only member is its head (platform operator).
#[utoipa::path(tag = "tenant groups", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), Problems))]
#[delete("/tenant-groups/{id}")]
pub async fn delete_tenant_group(
    state: web::Data<AppState>,
    caller: Auth<Root>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: TenantGroupId = path_id(&id)?;
    let audit = operator_audit(
        &state,
        &caller,
        "tenant_group.delete",
        id,
        None,
        serde_json::json!({}),
    );
    state.store.delete_tenant_group(id, audit).await?;
    forget_groups(&state);
    Ok(HttpResponse::NoContent().finish())
}

/// Add a tenant to a group (platform operator): 201 when it joined, 200 when it was a
/// member already. The member's own audit log records it.
#[utoipa::path(tag = "tenant groups", params(("id" = String, Path), ("tenant_id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 201, body = TenantView), (status = 200, body = TenantView), Problems))]
#[put("/tenant-groups/{id}/tenants/{tenant_id}")]
pub async fn add_group_member(
    state: web::Data<AppState>,
    caller: Auth<Root>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, tenant): (TenantGroupId, TenantId) = (path_id(&path.0)?, path_id(&path.1)?);
    let audit = operator_audit(
        &state,
        &caller,
        "tenant_group.join",
        id,
        Some(tenant),
        serde_json::json!({}),
    );
    let joined = state.store.add_group_member(id, tenant, audit).await?;
    forget_groups(&state);
    let view = TenantView::from(state.store.get_tenant(tenant).await?);
    Ok(if joined {
        HttpResponse::Created().json(view)
    } else {
        HttpResponse::Ok().json(view)
    })
}

/// Take a tenant out of its group (platform operator); never the head (409 `group_head`).
#[utoipa::path(tag = "tenant groups", params(("id" = String, Path), ("tenant_id" = String, Path)),
    security(("bearer" = [])), responses((status = 204), Problems))]
#[delete("/tenant-groups/{id}/tenants/{tenant_id}")]
pub async fn remove_group_member(
    state: web::Data<AppState>,
    caller: Auth<Root>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, tenant): (TenantGroupId, TenantId) = (path_id(&path.0)?, path_id(&path.1)?);
    let audit = operator_audit(
        &state,
        &caller,
        "tenant_group.leave",
        id,
        Some(tenant),
        serde_json::json!({}),
    );
    state.store.remove_group_member(id, tenant, audit).await?;
    forget_groups(&state);
    Ok(HttpResponse::NoContent().finish())
}

/// Every tenant, or a group's members (platform operator), in id order.
#[utoipa::path(tag = "tenants", params(ListParams, TenantListQuery), security(("bearer" = [])),
    responses((status = 200, body = Paged<TenantView>), Problems))]
#[get("/tenants")]
pub async fn list_tenants(
    state: web::Data<AppState>,
    _caller: Auth<Root>,
    Query(params): Query<ListParams>,
    Query(q): Query<TenantListQuery>,
) -> Result<web::Json<Paged<TenantView>>, ApiError> {
    let group = query_id("group_id", &q.group_id, TenantGroupId)?;
    let page = state
        .store
        .list_tenants(group, params.page(TenantId)?)
        .await?;
    Ok(web::Json(Paged::new(
        page.items.into_iter().map(TenantView::from).collect(),
        page.next.map(|t| t.0),
    )))
}

/// One tenant (platform operator).
#[utoipa::path(tag = "tenants", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = TenantView), Problems))]
#[get("/tenants/{id}")]
pub async fn get_tenant_by_id(
    state: web::Data<AppState>,
    _caller: Auth<Root>,
    id: web::Path<String>,
) -> Result<web::Json<TenantView>, ApiError> {
    Ok(web::Json(
        state.store.get_tenant(path_id(&id)?).await?.into(),
    ))
}

/// Rename a tenant or change its edition (platform operator). A new edition holds at once
/// on this node and within seconds on the others; the tenant's audit log records it.
#[utoipa::path(tag = "tenants", params(("id" = String, Path)), request_body = PatchTenantByOperator,
    security(("bearer" = [])), responses((status = 200, body = TenantView), Problems))]
#[patch("/tenants/{id}")]
pub async fn patch_tenant_by_operator(
    state: web::Data<AppState>,
    caller: Auth<Root>,
    id: web::Path<String>,
    Json(body): Json<PatchTenantByOperator>,
) -> Result<web::Json<TenantView>, ApiError> {
    let id: TenantId = path_id(&id)?;
    let current = state.store.get_tenant(id).await?;
    let mut c = Checks::new();
    if let Some(name) = &body.name {
        c.text("name", name, 1, TENANT_NAME_CHARS_MAX);
    }
    if let Some(edition) = body.edition {
        if !edition_allowed(current.kind, edition) {
            c.fail(
                "edition",
                "edition_for_kind",
                "basic_edu is only for k12 tenants",
            );
        }
    }
    checked(c)?;
    let mut audit = caller.audit(
        &state,
        "tenant.update",
        "tenant",
        id,
        serde_json::json!({ "name": body.name, "edition": body.edition }),
    );
    audit.tenant_id = Some(id);
    let patch = TenantPatch {
        name: body.name,
        edition: body.edition,
    };
    let tenant = state.store.patch_tenant(id, patch, audit).await?;
    // Callers carry their tenant's edition: read every token again.
    state.tenants.remove(&id);
    state.tokens.clear();
    Ok(web::Json(tenant.into()))
}

/// The group the caller's tenant heads (its admins are the group's).
pub(crate) async fn own_group(state: &AppState, caller: &Caller) -> Result<TenantGroup, ApiError> {
    state
        .group_headed_by(caller.tenant()?)
        .await?
        .ok_or_else(|| ApiError::forbidden("forbidden", "your tenant heads no tenant group"))
}

/// The caller's tenant group (its admins: super admins of its head tenant).
#[utoipa::path(tag = "tenant groups", security(("bearer" = [])),
    responses((status = 200, body = GroupView), Problems))]
#[get("/group")]
pub async fn get_group(
    state: web::Data<AppState>,
    caller: Auth<GroupAdmin>,
) -> Result<web::Json<GroupView>, ApiError> {
    Ok(web::Json(GroupView {
        group: own_group(&state, &caller).await?,
        act_in_member_header: "OneCard-Tenant",
    }))
}

/// The caller's group's member tenants, in id order.
#[utoipa::path(tag = "tenant groups", params(ListParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<MemberTenant>), Problems))]
#[get("/group/tenants")]
pub async fn list_group_tenants(
    state: web::Data<AppState>,
    caller: Auth<GroupAdmin>,
    Query(params): Query<ListParams>,
) -> Result<web::Json<Paged<MemberTenant>>, ApiError> {
    let group = own_group(&state, &caller).await?;
    let page = state
        .store
        .list_tenants(Some(group.id), params.page(TenantId)?)
        .await?;
    let items = page
        .items
        .into_iter()
        .map(|t| MemberTenant {
            head: t.id == group.head_tenant_id,
            capabilities: onecard_actors::domain::edition::capabilities(t.edition),
            id: t.id,
            name: t.name,
            kind: t.kind,
            edition: t.edition,
            timezone: t.timezone,
        })
        .collect();
    Ok(web::Json(Paged::new(items, page.next.map(|t| t.0))))
}

/// The group's income and expense summary: one line per member tenant, each over its own
/// local days `from`..`to` (default: today in the head tenant's zone), with totals. The
/// same figures as each member's `income-summary` report, summed over the period, and its
/// payments. JSON, CSV or XLSX; at most `GROUP_REPORT_TENANTS_MAX` members.
#[utoipa::path(tag = "tenant groups", params(ReportQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "The report", content(
            (Report = "application/json"),
            (String = "text/csv"),
            (String = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        )),
        Problems))]
#[get("/group/reports/income-summary")]
pub async fn group_income_summary(
    state: web::Data<AppState>,
    caller: Auth<GroupAdmin>,
    Query(q): Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    if !caller.admin_may(Feature::Payments, GrantLevel::View) {
        return Err(ApiError::forbidden(
            "not_granted",
            "the group's income summary needs the payments feature (view) granted to your \
             admin group",
        ));
    }
    let group = own_group(&state, &caller).await?;
    let head = state.policy(group.head_tenant_id).await?;
    let now = state.clock.now();
    let (from, to) = period(
        q.from.as_deref(),
        q.to.as_deref(),
        now.to_zoned(head.tz.clone()).date(),
        super::reports::MAX_DAYS,
    )?;
    let members = super::pages_up_to(GROUP_REPORT_TENANTS_MAX, |page| {
        state.store.list_tenants(Some(group.id), page)
    })
    .await?;
    let mut lines = Vec::with_capacity(members.len());
    for tenant in &members {
        lines.push(group_income_line(&state, tenant, from, to).await?);
    }
    let head = Head {
        kind: ReportKind::GroupIncomeSummary,
        from,
        to,
        time_zone: "each tenant's own".into(),
        generated_at: now,
    };
    respond(group_income(lines), head, q.format).await
}
