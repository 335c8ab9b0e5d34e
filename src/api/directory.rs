//! Departments (a tree) and tags.

use std::collections::HashMap;

use actix_web::{get, post, web, HttpResponse};
use jiff::Timestamp;
use onecard_actors::domain::directory::{
    DEPARTMENT_DEPTH_MAX, DEPARTMENT_NAME_CHARS_MAX, TAG_NAME_CHARS_MAX,
};
use onecard_actors::domain::validate::Checks;
use onecard_schema::ids::{DepartmentId, TagId};
use onecard_schema::model::{Department, Tag};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{checked, Paged};
use crate::auth::{Auth, DirectoryReader, DirectoryWriter, SuperAdmin};
use crate::extract::Json;
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
    if c.text("name", &body.name, 1, DEPARTMENT_NAME_CHARS_MAX) && body.name.contains('/') {
        c.fail("name", "no_slash", "'/' separates department paths");
    }
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
        .create_department(tenant, dept.clone(), audit)
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
    if c.text("name", &body.name, 1, TAG_NAME_CHARS_MAX) && body.name.contains(';') {
        c.fail("name", "no_semicolon", "';' separates tags in imports");
    }
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
