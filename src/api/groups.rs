//! Sub-admin permission groups (SPEC §11), kept by super admins: which departments and
//! tags a group's admins may view or manage, which basic features (`payments`, …) and
//! which apps. A change reaches the group's admins on this node at once and on other
//! nodes within the token cache's few seconds.

use actix_web::{delete, get, patch, post, web, HttpResponse};
use onecard_actors::domain::validate::Checks;
use onecard_schema::ids::AdminGroupId;
use onecard_schema::model::{
    AdminGroup, DepartmentGrant, Feature, GrantLevel, Grants, ScenarioApp, TagGrant,
};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use utoipa::ToSchema;

use super::{checked, Paged};
use crate::auth::{Auth, SuperAdmin};
use crate::extract::{path_id, Json};
use crate::limits::{ADMIN_GROUP_GRANTS_MAX, ADMIN_GROUP_NAME_CHARS_MAX};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAdminGroup {
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$",
        example = "Finance"
    )]
    pub name: String,
    /// Departments, each with its whole subtree.
    #[serde(default)]
    pub departments: Vec<DepartmentGrant>,
    /// Tags: the users who carry them.
    #[serde(default)]
    pub tags: Vec<TagGrant>,
    /// Basic features and how far each reaches, e.g. `{"payments":"view"}`.
    #[serde(default)]
    pub features: BTreeMap<Feature, GrantLevel>,
    #[serde(default)]
    pub apps: Vec<ScenarioApp>,
}

/// Absent fields stay as they are; a given list or map replaces the old one whole.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchAdminGroup {
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
    )]
    pub name: Option<String>,
    pub departments: Option<Vec<DepartmentGrant>>,
    pub tags: Option<Vec<TagGrant>>,
    pub features: Option<BTreeMap<Feature, GrantLevel>>,
    pub apps: Option<Vec<ScenarioApp>>,
}

/// A group's name and grants: lengths, and each department, tag and app named once.
fn check_group(name: &str, grants: &Grants) -> Result<(), ApiError> {
    let mut c = Checks::new();
    c.text("name", name, 1, ADMIN_GROUP_NAME_CHARS_MAX);
    let departments: Vec<_> = grants.departments.iter().map(|d| d.id).collect();
    let tags: Vec<_> = grants.tags.iter().map(|t| t.id).collect();
    once_each(&mut c, "departments", &departments);
    once_each(&mut c, "tags", &tags);
    once_each(&mut c, "apps", &grants.apps);
    checked(c)
}

fn once_each<T: std::hash::Hash + Eq>(c: &mut Checks, field: &str, items: &[T]) {
    if items.len() > ADMIN_GROUP_GRANTS_MAX {
        c.fail(
            field,
            "max_items",
            format!("at most {ADMIN_GROUP_GRANTS_MAX}"),
        );
    } else if items.iter().collect::<HashSet<_>>().len() != items.len() {
        c.fail(field, "unique", "each may be named once");
    }
}

/// Create a permission group (super admin).
#[utoipa::path(tag = "admins", request_body = CreateAdminGroup, security(("bearer" = [])),
    responses((status = 201, body = AdminGroup), Problems))]
#[post("/admin-groups")]
pub async fn create_admin_group(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
    Json(body): Json<CreateAdminGroup>,
) -> Result<HttpResponse, ApiError> {
    let grants = Grants {
        departments: body.departments,
        tags: body.tags,
        features: body.features,
        apps: body.apps,
    };
    check_group(&body.name, &grants)?;
    let now = state.clock.now();
    let group = AdminGroup {
        id: AdminGroupId::new(),
        name: body.name,
        grants,
        created_at: now,
        updated_at: now,
    };
    let audit = caller.audit(
        &state,
        "admin_group.create",
        "admin_group",
        group.id,
        serde_json::json!({ "name": group.name, "grants": group.grants }),
    );
    state
        .store
        .create_admin_group(caller.tenant()?, group.clone(), audit)
        .await?;
    Ok(HttpResponse::Created().json(group))
}

/// The tenant's permission groups, by name (super admin).
#[utoipa::path(tag = "admins", security(("bearer" = [])),
    responses((status = 200, body = Paged<AdminGroup>), Problems))]
#[get("/admin-groups")]
pub async fn list_admin_groups(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
) -> Result<web::Json<Paged<AdminGroup>>, ApiError> {
    let groups = state.store.list_admin_groups(caller.tenant()?).await?;
    Ok(web::Json(Paged::new(groups, None)))
}

/// One permission group (super admin).
#[utoipa::path(tag = "admins", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = AdminGroup), Problems))]
#[get("/admin-groups/{id}")]
pub async fn get_admin_group(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
    id: web::Path<String>,
) -> Result<web::Json<AdminGroup>, ApiError> {
    let group = state
        .store
        .get_admin_group(caller.tenant()?, path_id(&id)?)
        .await?;
    Ok(web::Json(group))
}

/// Change a permission group (super admin); its admins see the change at once.
#[utoipa::path(tag = "admins", params(("id" = String, Path)), request_body = PatchAdminGroup,
    security(("bearer" = [])), responses((status = 200, body = AdminGroup), Problems))]
#[patch("/admin-groups/{id}")]
pub async fn patch_admin_group(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
    id: web::Path<String>,
    Json(body): Json<PatchAdminGroup>,
) -> Result<web::Json<AdminGroup>, ApiError> {
    let tenant = caller.tenant()?;
    let mut group = state.store.get_admin_group(tenant, path_id(&id)?).await?;
    if let Some(name) = body.name {
        group.name = name;
    }
    if let Some(departments) = body.departments {
        group.grants.departments = departments;
    }
    if let Some(tags) = body.tags {
        group.grants.tags = tags;
    }
    if let Some(features) = body.features {
        group.grants.features = features;
    }
    if let Some(apps) = body.apps {
        group.grants.apps = apps;
    }
    check_group(&group.name, &group.grants)?;
    group.updated_at = state.clock.now();
    let audit = caller.audit(
        &state,
        "admin_group.update",
        "admin_group",
        group.id,
        serde_json::json!({ "name": group.name, "grants": group.grants }),
    );
    state
        .store
        .update_admin_group(tenant, group.clone(), audit)
        .await?;
    // Cached tokens carry their group's grants: drop them so the change holds now.
    state.tokens.clear();
    Ok(web::Json(group))
}

/// Delete a permission group no admin belongs to (super admin; 409 `group_in_use`).
#[utoipa::path(tag = "admins", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), Problems))]
#[delete("/admin-groups/{id}")]
pub async fn delete_admin_group(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: AdminGroupId = path_id(&id)?;
    let audit = caller.audit(
        &state,
        "admin_group.delete",
        "admin_group",
        id,
        serde_json::json!({}),
    );
    state
        .store
        .delete_admin_group(caller.tenant()?, id, audit)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
