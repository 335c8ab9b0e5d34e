//! Departments (a tree) and tags.

use std::collections::HashMap;

use actix_web::{delete, get, patch, post, web, HttpResponse};
use jiff::Timestamp;
use onecard_actors::domain::directory::{
    DEPARTMENT_DEPTH_MAX, DEPARTMENT_NAME_CHARS_MAX, TAG_NAME_CHARS_MAX,
};
use onecard_actors::domain::validate::Checks;
use onecard_schema::ids::{DepartmentId, TagId};
use onecard_schema::model::{Department, Tag};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{checked, nullable, Paged};
use crate::auth::{Auth, DirectoryReader, DirectoryWriter, SuperAdmin};
use crate::extract::{path_id, Json};
use crate::problem::{ApiError, Problems};
use crate::scope::DirectoryScope;
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDepartment {
    /// 1 to 64 characters, no `/` (it separates path segments in imports).
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^/\s\x00-\x1f\x7f-\x9f](?:[^/\x00-\x1f\x7f-\x9f]*[^/\s\x00-\x1f\x7f-\x9f])?$"
    )]
    pub name: String,
    pub parent_id: Option<DepartmentId>,
}

/// A rename, a move, or both; absent fields stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchDepartment {
    /// 1 to 64 characters, no `/`.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^/\s\x00-\x1f\x7f-\x9f](?:[^/\x00-\x1f\x7f-\x9f]*[^/\s\x00-\x1f\x7f-\x9f])?$"
    )]
    pub name: Option<String>,
    /// The new parent; `null` moves it to the top (super admins only).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<DepartmentId>)]
    pub parent_id: Option<Option<DepartmentId>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DepartmentView {
    pub id: DepartmentId,
    pub name: String,
    pub parent_id: Option<DepartmentId>,
    /// Names from the root, joined by `/` (what imports use).
    pub path: String,
    pub depth: usize,
    pub created_at: Timestamp,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTag {
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = r"^[^;\s\x00-\x1f\x7f-\x9f](?:[^;\x00-\x1f\x7f-\x9f]*[^;\s\x00-\x1f\x7f-\x9f])?$"
    )]
    pub name: String,
}

fn check_department_name(c: &mut Checks, name: &str) {
    if c.text("name", name, 1, DEPARTMENT_NAME_CHARS_MAX) && name.contains('/') {
        c.fail("name", "no_slash", "'/' separates department paths");
    }
}

fn check_tag_name(c: &mut Checks, name: &str) {
    if c.text("name", name, 1, TAG_NAME_CHARS_MAX) && name.contains(';') {
        c.fail("name", "no_semicolon", "';' separates tags in imports");
    }
}

fn out_of_scope(what: &str) -> ApiError {
    ApiError::forbidden("out_of_scope", what.to_string())
}

/// A department tree with each node's full path, in tree (pre-)order.
pub struct Tree {
    pub nodes: Vec<DepartmentView>,
}

impl Tree {
    pub fn build(departments: Vec<Department>) -> Tree {
        let mut children: HashMap<Option<DepartmentId>, Vec<&Department>> = HashMap::new();
        for d in &departments {
            children.entry(d.parent_id).or_default().push(d);
        }
        for list in children.values_mut() {
            list.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let mut nodes = Vec::with_capacity(departments.len());
        // Iterative pre-order walk; parents always exist (foreign keys), so every node is
        // reached from a root.
        let mut stack: Vec<(&Department, String, usize)> = children
            .get(&None)
            .map(|roots| {
                roots
                    .iter()
                    .rev()
                    .map(|d| (*d, d.name.clone(), 1))
                    .collect()
            })
            .unwrap_or_default();
        while let Some((d, path, depth)) = stack.pop() {
            if let Some(kids) = children.get(&Some(d.id)) {
                for k in kids.iter().rev() {
                    stack.push((k, format!("{path}/{}", k.name), depth + 1));
                }
            }
            nodes.push(DepartmentView {
                id: d.id,
                name: d.name.clone(),
                parent_id: d.parent_id,
                path,
                depth,
                created_at: d.created_at,
            });
        }
        Tree { nodes }
    }

    pub fn by_path(&self) -> HashMap<&str, DepartmentId> {
        self.nodes.iter().map(|n| (n.path.as_str(), n.id)).collect()
    }
}

/// Add a department under a parent (or at the root: super admins only; a sub-admin
/// under a department their group manages).
#[utoipa::path(tag = "directory", request_body = CreateDepartment, security(("bearer" = [])),
    responses((status = 201, body = DepartmentView), Problems))]
#[post("/departments")]
pub async fn create_department(
    state: web::Data<AppState>,
    caller: Auth<DirectoryWriter>,
    Json(body): Json<CreateDepartment>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let mut c = Checks::new();
    check_department_name(&mut c, &body.name);
    checked(c)?;
    let departments = state.store.list_departments(tenant).await?;
    let scope = DirectoryScope::over(&caller, &departments);
    let tree = Tree::build(departments);
    let (path, depth) = match body.parent_id {
        None if scope.is_limited() => {
            return Err(ApiError::forbidden(
                "out_of_scope",
                "parent_id: only a super admin adds a top-level department",
            ))
        }
        None => (body.name.clone(), 1),
        Some(p) => {
            let parent = tree
                .nodes
                .iter()
                .find(|n| n.id == p && scope.sees_department(n.id))
                .ok_or_else(|| {
                    ApiError::invalid_field("parent_id", "exists", "no such department")
                })?;
            if !scope.manages_department(p) {
                return Err(ApiError::forbidden(
                    "out_of_scope",
                    "parent_id: your admin group may view this department but not change it",
                ));
            }
            (format!("{}/{}", parent.path, body.name), parent.depth + 1)
        }
    };
    if depth > DEPARTMENT_DEPTH_MAX {
        return Err(ApiError::invalid_field(
            "parent_id",
            "max_depth",
            format!("department trees are at most {DEPARTMENT_DEPTH_MAX} levels deep"),
        ));
    }
    let dept = Department {
        id: DepartmentId::new(),
        name: body.name,
        parent_id: body.parent_id,
        created_at: state.clock.now(),
    };
    let audit = caller.audit(
        &state,
        "department.create",
        "department",
        dept.id,
        serde_json::json!({
            "name": dept.name, "parent_id": dept.parent_id,
        }),
    );
    state
        .store
        .create_department(tenant, dept.clone(), DEPARTMENT_DEPTH_MAX, audit)
        .await?;
    Ok(HttpResponse::Created().json(DepartmentView {
        id: dept.id,
        name: dept.name,
        parent_id: dept.parent_id,
        path,
        depth,
        created_at: dept.created_at,
    }))
}

/// Every department, in tree order (a sub-admin: those their group grants, with
/// everything under them).
#[utoipa::path(tag = "directory", security(("bearer" = [])),
    responses((status = 200, body = Paged<DepartmentView>), Problems))]
#[get("/departments")]
pub async fn list_departments(
    state: web::Data<AppState>,
    caller: Auth<DirectoryReader>,
) -> Result<web::Json<Paged<DepartmentView>>, ApiError> {
    let departments = state.store.list_departments(caller.tenant()?).await?;
    let scope = DirectoryScope::over(&caller, &departments);
    let mut tree = Tree::build(departments);
    tree.nodes.retain(|n| scope.sees_department(n.id));
    Ok(web::Json(Paged::new(tree.nodes, None)))
}

/// Add a tag (super admin).
#[utoipa::path(tag = "directory", request_body = CreateTag, security(("bearer" = [])),
    responses((status = 201, body = Tag), Problems))]
#[post("/tags")]
pub async fn create_tag(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
    Json(body): Json<CreateTag>,
) -> Result<HttpResponse, ApiError> {
    let mut c = Checks::new();
    check_tag_name(&mut c, &body.name);
    checked(c)?;
    let tag = Tag {
        id: TagId::new(),
        name: body.name,
        created_at: state.clock.now(),
    };
    let audit = caller.audit(
        &state,
        "tag.create",
        "tag",
        tag.id,
        serde_json::json!({ "name": tag.name }),
    );
    state
        .store
        .create_tag(caller.tenant()?, tag.clone(), audit)
        .await?;
    Ok(HttpResponse::Created().json(tag))
}

/// Every tag, by name (a sub-admin: those their group grants).
#[utoipa::path(tag = "directory", security(("bearer" = [])),
    responses((status = 200, body = Paged<Tag>), Problems))]
#[get("/tags")]
pub async fn list_tags(
    state: web::Data<AppState>,
    caller: Auth<DirectoryReader>,
) -> Result<web::Json<Paged<Tag>>, ApiError> {
    let scope = DirectoryScope::over(&caller, &[]);
    let mut tags = state.store.list_tags(caller.tenant()?).await?;
    tags.retain(|t| scope.sees_tag(t.id));
    Ok(web::Json(Paged::new(tags, None)))
}

/// Rename a department, move it under another (with everything under it), or both. The
/// caller manages it and the new parent (a move to the top: super admins only); 422
/// `parent_id` `cycle` under itself or its own, `max_depth` past the tree's depth; 409
/// `department_name_taken` for a sibling's name. People keep their departments; a
/// sub-admin's scope follows the tree as it now is.
#[utoipa::path(tag = "directory", params(("id" = String, Path)), request_body = PatchDepartment,
    security(("bearer" = [])), responses((status = 200, body = DepartmentView), Problems))]
#[patch("/departments/{id}")]
pub async fn patch_department(
    state: web::Data<AppState>,
    caller: Auth<DirectoryWriter>,
    id: web::Path<String>,
    Json(body): Json<PatchDepartment>,
) -> Result<web::Json<DepartmentView>, ApiError> {
    let tenant = caller.tenant()?;
    let id: DepartmentId = path_id(&id)?;
    let mut c = Checks::new();
    if let Some(name) = &body.name {
        check_department_name(&mut c, name);
    }
    checked(c)?;
    let departments = state.store.list_departments(tenant).await?;
    let scope = DirectoryScope::over(&caller, &departments);
    let current = departments
        .iter()
        .find(|d| d.id == id && scope.sees_department(d.id))
        .ok_or(ApiError::NotFound)?
        .clone();
    if !scope.manages_department(id) {
        return Err(out_of_scope(
            "your admin group may view this department but not change it",
        ));
    }
    let parent = body.parent_id.unwrap_or(current.parent_id);
    if parent != current.parent_id {
        match parent {
            None if scope.is_limited() => {
                return Err(out_of_scope(
                    "parent_id: only a super admin moves a department to the top",
                ))
            }
            Some(p) if !scope.sees_department(p) => {
                return Err(ApiError::invalid_field(
                    "parent_id",
                    "exists",
                    "no such department",
                ))
            }
            Some(p) if !scope.manages_department(p) => {
                return Err(out_of_scope(
                    "parent_id: your admin group may view that department but not change it",
                ))
            }
            _ => {}
        }
    }
    let name = body.name.unwrap_or_else(|| current.name.clone());
    let audit = caller.audit(
        &state,
        "department.update",
        "department",
        id,
        serde_json::json!({
            "name": name, "parent_id": parent,
            "was": { "name": current.name, "parent_id": current.parent_id },
        }),
    );
    state
        .store
        .update_department(tenant, id, name, parent, DEPARTMENT_DEPTH_MAX, audit)
        .await?;
    let tree = Tree::build(state.store.list_departments(tenant).await?);
    let view = tree
        .nodes
        .into_iter()
        .find(|n| n.id == id)
        .ok_or(ApiError::NotFound)?;
    Ok(web::Json(view))
}

/// Delete a department nothing holds (the caller manages it): 409 `department_in_use`
/// while it has sub-departments or members, or an admin group or identity type names it.
/// Notices, subsidy rules and events that named it keep its id, which names nobody.
#[utoipa::path(tag = "directory", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), Problems))]
#[delete("/departments/{id}")]
pub async fn delete_department(
    state: web::Data<AppState>,
    caller: Auth<DirectoryWriter>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let id: DepartmentId = path_id(&id)?;
    let departments = state.store.list_departments(tenant).await?;
    let scope = DirectoryScope::over(&caller, &departments);
    let current = departments
        .iter()
        .find(|d| d.id == id && scope.sees_department(d.id))
        .ok_or(ApiError::NotFound)?;
    if !scope.manages_department(id) {
        return Err(out_of_scope(
            "your admin group may view this department but not change it",
        ));
    }
    let audit = caller.audit(
        &state,
        "department.delete",
        "department",
        id,
        serde_json::json!({ "name": current.name, "parent_id": current.parent_id }),
    );
    state.store.delete_department(tenant, id, audit).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Rename a tag (super admin); 409 `tag_name_taken` for another tag's name.
#[utoipa::path(tag = "directory", params(("id" = String, Path)), request_body = CreateTag,
    security(("bearer" = [])), responses((status = 200, body = Tag), Problems))]
#[patch("/tags/{id}")]
pub async fn patch_tag(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
    id: web::Path<String>,
    Json(body): Json<CreateTag>,
) -> Result<web::Json<Tag>, ApiError> {
    let tenant = caller.tenant()?;
    let id: TagId = path_id(&id)?;
    let mut c = Checks::new();
    check_tag_name(&mut c, &body.name);
    checked(c)?;
    let audit = caller.audit(
        &state,
        "tag.update",
        "tag",
        id,
        serde_json::json!({ "name": body.name }),
    );
    let tag = state.store.rename_tag(tenant, id, body.name, audit).await?;
    Ok(web::Json(tag))
}

/// Delete a tag nobody carries (super admin): 409 `tag_in_use` while someone does (take
/// it off them with a batch update first) or an admin group grants it.
#[utoipa::path(tag = "directory", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), Problems))]
#[delete("/tags/{id}")]
pub async fn delete_tag(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let id: TagId = path_id(&id)?;
    let audit = caller.audit(&state, "tag.delete", "tag", id, serde_json::json!({}));
    state.store.delete_tag(tenant, id, audit).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_is_pre_ordered_with_full_paths() {
        let at = Timestamp::UNIX_EPOCH;
        let mk = |name: &str, parent: Option<DepartmentId>| Department {
            id: DepartmentId::new(),
            name: name.into(),
            parent_id: parent,
            created_at: at,
        };
        let teaching = mk("Teaching", None);
        let admin = mk("Admin", None);
        let maths = mk("Maths", Some(teaching.id));
        let algebra = mk("Algebra", Some(maths.id));
        let tree = Tree::build(vec![
            algebra.clone(),
            maths.clone(),
            teaching.clone(),
            admin.clone(),
        ]);
        let paths: Vec<_> = tree
            .nodes
            .iter()
            .map(|n| (n.path.as_str(), n.depth))
            .collect();
        assert_eq!(
            paths,
            [
                ("Admin", 1),
                ("Teaching", 1),
                ("Teaching/Maths", 2),
                ("Teaching/Maths/Algebra", 3)
            ]
        );
        assert_eq!(tree.by_path()["Teaching/Maths"], maths.id);
    }
}
