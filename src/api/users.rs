//! Users (cardholders): create, read, update (which moves them between departments),
//! delete, batch update, filtered cursor lists, and kiosk/test tokens.
//! ID numbers are kept as a keyed hash plus the last 4 characters; only `****1234` is
//! ever returned.

use actix_web::{delete, get, patch, post, web, HttpResponse};
use jiff::Timestamp;
use onecard_actors::domain::directory::{self as rules, mask_id_number};
use onecard_actors::domain::validate::Checks;
use onecard_schema::ids::{DepartmentId, TagId, UserId};
use onecard_schema::model::{
    BatchUserUpdate, IdNumber, Memberships, NewToken, NewUser, TokenKind, User, UserFilter,
    UserPatch, UserStatus,
};
use onecard_schema::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::identity::{check_known_identity, identity_by_admins};
use super::{checked, nullable, query_id, ListParams, Paged};
use crate::auth::{
    hash_token, new_token, Auth, Caller, DirectoryReader, DirectoryWriter, SuperAdmin,
};
use crate::extract::{path_id, Json, Query};
use crate::limits::{BATCH_USERS_MAX, USER_MEMBERSHIPS_MAX};
use crate::problem::{ApiError, Problems};
use crate::scope::DirectoryScope;
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
    )]
    pub name: String,
    /// Student or staff number, unique in the tenant.
    #[schema(min_length = 1, max_length = 32, pattern = r"^[A-Za-z0-9._-]+$")]
    pub number: String,
    #[schema(pattern = r"^\+?[0-9]{5,20}$", example = "13800000000")]
    pub phone: Option<String>,
    /// Stored as a keyed hash and its last 4 characters; never returned in full.
    #[schema(pattern = r"^\s*[A-Za-z0-9]{6,32}\s*$", example = "11010519491231002X")]
    pub id_number: Option<String>,
    #[serde(default)]
    pub department_ids: Vec<DepartmentId>,
    #[serde(default)]
    pub tag_ids: Vec<TagId>,
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$",
        example = "student"
    )]
    pub identity: Option<String>,
}

/// Absent fields stay as they are; `null` clears a clearable field.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
    )]
    pub name: Option<String>,
    #[schema(min_length = 1, max_length = 32, pattern = r"^[A-Za-z0-9._-]+$")]
    pub number: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, pattern = r"^\+?[0-9]{5,20}$")]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, pattern = r"^\s*[A-Za-z0-9]{6,32}\s*$")]
    pub id_number: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 32, pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$")]
    pub identity: Option<Option<String>>,
    pub status: Option<UserStatus>,
    /// Replaces every department membership: this is how a user is moved.
    pub department_ids: Option<Vec<DepartmentId>>,
    /// Replaces every tag.
    pub tag_ids: Option<Vec<TagId>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub name: String,
    pub number: String,
    pub phone: Option<String>,
    /// Masked: `****` and the last 4 characters.
    pub id_number: Option<String>,
    pub identity: Option<String>,
    pub status: UserStatus,
    pub department_ids: Vec<DepartmentId>,
    pub tag_ids: Vec<TagId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            id: u.id,
            name: u.name,
            number: u.number,
            phone: u.phone,
            id_number: u.id_last4.as_deref().map(mask_id_number),
            identity: u.identity,
            status: u.status,
            department_ids: u.department_ids,
            tag_ids: u.tag_ids,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    /// Direct members of this department.
    pub department_id: Option<String>,
    pub tag_id: Option<String>,
    /// A substring of the name, or the start of the number.
    pub q: Option<String>,
    pub status: Option<UserStatus>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchUpdate {
    /// 1 to 1,000 users of this tenant; all are changed or none.
    #[schema(min_items = 1, max_items = 1000)]
    pub user_ids: Vec<UserId>,
    pub status: Option<UserStatus>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 32, pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$")]
    pub identity: Option<Option<String>>,
    /// Replaces every department membership (moves them all).
    pub department_ids: Option<Vec<DepartmentId>>,
    #[serde(default)]
    pub add_tag_ids: Vec<TagId>,
    #[serde(default)]
    pub remove_tag_ids: Vec<TagId>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchUpdated {
    pub updated: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedToken {
    /// A cardholder token; shown once.
    pub token: String,
}

fn id_number(state: &AppState, c: &mut Checks, raw: &str) -> Option<IdNumber> {
    let normalized = rules::check_id_number(c, "id_number", raw)?;
    Some(IdNumber {
        hash: state.keys.id_number_hash(&normalized),
        last4: rules::id_last4(&normalized),
    })
}

fn check_memberships(c: &mut Checks, departments: usize, tags: usize) {
    if departments > USER_MEMBERSHIPS_MAX {
        c.fail(
            "department_ids",
            "max_items",
            format!("at most {USER_MEMBERSHIPS_MAX}"),
        );
    }
    if tags > USER_MEMBERSHIPS_MAX {
        c.fail(
            "tag_ids",
            "max_items",
            format!("at most {USER_MEMBERSHIPS_MAX}"),
        );
    }
}

/// Add a user.
#[utoipa::path(tag = "users", request_body = CreateUser, security(("bearer" = [])),
    responses((status = 201, body = UserView), Problems))]
#[post("/users")]
pub async fn create_user(
    state: web::Data<AppState>,
    caller: Auth<DirectoryWriter>,
    Json(body): Json<CreateUser>,
) -> Result<HttpResponse, ApiError> {
    let mut c = Checks::new();
    rules::check_name(&mut c, "name", &body.name);
    rules::check_number(&mut c, "number", &body.number);
    let phone = body
        .phone
        .as_deref()
        .and_then(|p| rules::check_phone(&mut c, "phone", p));
    let id_number = body
        .id_number
        .as_deref()
        .and_then(|i| id_number(&state, &mut c, i));
    if let Some(identity) = &body.identity {
        rules::check_identity(&mut c, "identity", identity);
    }
    check_memberships(&mut c, body.department_ids.len(), body.tag_ids.len());
    checked(c)?;
    identity_by_admins(&caller, body.identity.is_some())?;
    check_known_identity(&state, caller.tenant()?, body.identity.as_deref()).await?;
    DirectoryScope::of(&caller, &state)
        .await?
        .check_new_user(&body.department_ids, &body.tag_ids)?;
    let user = NewUser {
        id: UserId::new(),
        name: body.name,
        number: body.number,
        phone,
        id_number,
        identity: body.identity,
        department_ids: body.department_ids,
        tag_ids: body.tag_ids,
    };
    // The audit detail names the user by id and number only: no personal data.
    let audit = caller.audit(
        &state,
        "user.create",
        "user",
        user.id,
        serde_json::json!({ "number": user.number }),
    );
    let created = state
        .store
        .create_user(caller.tenant()?, user, state.clock.now(), audit)
        .await?;
    Ok(HttpResponse::Created().json(UserView::from(created)))
}

/// One user.
#[utoipa::path(tag = "users", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = UserView), Problems))]
#[get("/users/{id}")]
pub async fn get_user(
    state: web::Data<AppState>,
    caller: Auth<DirectoryReader>,
    id: web::Path<String>,
) -> Result<web::Json<UserView>, ApiError> {
    let user = state
        .store
        .get_user(caller.tenant()?, path_id(&id)?)
        .await?;
    if !DirectoryScope::of(&caller, &state).await?.sees_user(&user) {
        return Err(ApiError::NotFound);
    }
    Ok(web::Json(user.into()))
}

/// Change a user; `department_ids` moves them.
#[utoipa::path(tag = "users", params(("id" = String, Path)), request_body = PatchUser,
    security(("bearer" = [])), responses((status = 200, body = UserView), Problems))]
#[patch("/users/{id}")]
pub async fn patch_user(
    state: web::Data<AppState>,
    caller: Auth<DirectoryWriter>,
    id: web::Path<String>,
    Json(body): Json<PatchUser>,
) -> Result<web::Json<UserView>, ApiError> {
    let id: UserId = path_id(&id)?;
    let mut c = Checks::new();
    if let Some(name) = &body.name {
        rules::check_name(&mut c, "name", name);
    }
    if let Some(number) = &body.number {
        rules::check_number(&mut c, "number", number);
    }
    let phone = body
        .phone
        .map(|p| p.and_then(|p| rules::check_phone(&mut c, "phone", &p)));
    let id_number = body
        .id_number
        .map(|i| i.and_then(|i| id_number(&state, &mut c, &i)));
    if let Some(Some(identity)) = &body.identity {
        rules::check_identity(&mut c, "identity", identity);
    }
    check_memberships(
        &mut c,
        body.department_ids.as_ref().map_or(0, Vec::len),
        body.tag_ids.as_ref().map_or(0, Vec::len),
    );
    checked(c)?;
    let tenant = caller.tenant()?;
    identity_by_admins(&caller, body.identity.is_some())?;
    check_known_identity(
        &state,
        tenant,
        body.identity.as_ref().and_then(|i| i.as_deref()),
    )
    .await?;
    let scope = DirectoryScope::of(&caller, &state).await?;
    // A new identity or status can change what the person's token may do (a managing
    // identity's rights): tokens are looked up again.
    let rights_change = body.identity.is_some() || body.status.is_some();
    let changed: Vec<&str> = [
        ("name", body.name.is_some()),
        ("number", body.number.is_some()),
        ("phone", phone.is_some()),
        ("id_number", id_number.is_some()),
        ("identity", body.identity.is_some()),
        ("status", body.status.is_some()),
        ("department_ids", body.department_ids.is_some()),
        ("tag_ids", body.tag_ids.is_some()),
    ]
    .into_iter()
    .filter_map(|(f, set)| set.then_some(f))
    .collect();
    let patch = UserPatch {
        name: body.name,
        number: body.number,
        phone,
        id_number,
        identity: body.identity,
        status: body.status,
        department_ids: body.department_ids,
        tag_ids: body.tag_ids,
        expect: None,
    };
    let audit = caller.audit(
        &state,
        "user.update",
        "user",
        id,
        serde_json::json!({ "fields": changed }),
    );
    let user = checked_at_the_write(|| async {
        let mut attempt = patch.clone();
        if scope.is_limited() {
            let user = state.store.get_user(tenant, id).await?;
            scope.check_manages(&user)?;
            scope.check_change(
                &user,
                patch.department_ids.as_deref(),
                patch.tag_ids.as_deref(),
            )?;
            attempt.expect = Some(Memberships::of(&user));
        }
        Ok(state
            .store
            .update_user(tenant, id, attempt, state.clock.now(), audit.clone())
            .await)
    })
    .await?;
    if rights_change {
        state.tokens.clear();
    }
    Ok(web::Json(user.into()))
}

/// Remove a user (refused while they are an admin).
#[utoipa::path(tag = "users", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), Problems))]
#[delete("/users/{id}")]
pub async fn delete_user(
    state: web::Data<AppState>,
    caller: Auth<DirectoryWriter>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: UserId = path_id(&id)?;
    let scope = DirectoryScope::of(&caller, &state).await?;
    if scope.is_limited() {
        let user = state.store.get_user(caller.tenant()?, id).await?;
        scope.check_manages(&user)?;
    }
    let audit = caller.audit(&state, "user.delete", "user", id, serde_json::json!({}));
    state.store.delete_user(caller.tenant()?, id, audit).await?;
    state.tokens.clear();
    Ok(HttpResponse::NoContent().finish())
}

/// Users, filtered, in cursor pages (a sub-admin: those in the departments and tags
/// their group grants).
#[utoipa::path(tag = "users", params(UserQuery), security(("bearer" = [])),
    responses((status = 200, body = Paged<UserView>), Problems))]
#[get("/users")]
pub async fn list_users(
    state: web::Data<AppState>,
    caller: Auth<DirectoryReader>,
    Query(q): Query<UserQuery>,
) -> Result<web::Json<Paged<UserView>>, ApiError> {
    let page = ListParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page(UserId)?;
    let mut c = Checks::new();
    if let Some(text) = &q.q {
        c.text("q", text, 1, 64);
    }
    checked(c)?;
    let filter = UserFilter {
        department_id: query_id("department_id", &q.department_id, DepartmentId)?,
        tag_id: query_id("tag_id", &q.tag_id, TagId)?,
        q: q.q,
        status: q.status,
        within: DirectoryScope::of(&caller, &state).await?.user_filter(),
        ids: None,
    };
    let result = state
        .store
        .list_users(caller.tenant()?, filter, page)
        .await?;
    let items = result.items.into_iter().map(UserView::from).collect();
    Ok(web::Json(Paged::new(items, result.next.map(|u| u.0))))
}

/// Change many users at once, atomically.
#[utoipa::path(tag = "users", request_body = BatchUpdate, security(("bearer" = [])),
    responses((status = 200, body = BatchUpdated), Problems))]
#[post("/users/batch-update")]
pub async fn batch_update_users(
    state: web::Data<AppState>,
    caller: Auth<DirectoryWriter>,
    Json(body): Json<BatchUpdate>,
) -> Result<web::Json<BatchUpdated>, ApiError> {
    let mut c = Checks::new();
    if body.user_ids.is_empty() || body.user_ids.len() > BATCH_USERS_MAX {
        c.fail("user_ids", "count", format!("1 to {BATCH_USERS_MAX} users"));
    }
    if let Some(Some(identity)) = &body.identity {
        rules::check_identity(&mut c, "identity", identity);
    }
    check_memberships(
        &mut c,
        body.department_ids.as_ref().map_or(0, Vec::len),
        body.add_tag_ids.len().max(body.remove_tag_ids.len()),
    );
    checked(c)?;
    identity_by_admins(&caller, body.identity.is_some())?;
    check_known_identity(
        &state,
        caller.tenant()?,
        body.identity.as_ref().and_then(|i| i.as_deref()),
    )
    .await?;
    let scope = DirectoryScope::of(&caller, &state).await?;
    let audit = caller.audit(
        &state,
        "user.batch_update",
        "users",
        body.user_ids.len(),
        serde_json::json!({
            "user_ids": body.user_ids,
        }),
    );
    let rights_change = body.identity.is_some() || body.status.is_some();
    let update = BatchUserUpdate {
        user_ids: body.user_ids,
        status: body.status,
        identity: body.identity,
        department_ids: body.department_ids,
        add_tag_ids: body.add_tag_ids,
        remove_tag_ids: body.remove_tag_ids,
        expect: None,
    };
    let tenant = caller.tenant()?;
    let updated = checked_at_the_write(|| async {
        let mut attempt = update.clone();
        if scope.is_limited() {
            attempt.expect = Some(check_batch_scope(&state, &caller, &scope, &update).await?);
        }
        Ok(state
            .store
            .batch_update_users(tenant, attempt, state.clock.now(), audit.clone())
            .await)
    })
    .await?;
    if rights_change {
        state.tokens.clear();
    }
    Ok(web::Json(BatchUpdated { updated }))
}

/// How often a sub-admin's change is checked and tried when users' memberships keep
/// changing under it, before it answers 409 `user_changed`.
const SCOPE_CHECK_TRIES: u32 = 3;

/// Runs `check_and_write` (a sub-admin's scope check, then the write that carries the
/// memberships it saw) again while the store refuses the write because a user changed
/// after the check, up to `SCOPE_CHECK_TRIES` times in all.
async fn checked_at_the_write<T, F, Fut>(mut check_and_write: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Result<T, StoreError>, ApiError>>,
{
    let mut tries = 1;
    loop {
        match check_and_write().await? {
            Err(StoreError::Conflict {
                code: "user_changed",
                ..
            }) if tries < SCOPE_CHECK_TRIES => tries += 1,
            written => return Ok(written?),
        }
    }
}

/// A sub-admin's batch: every user one they manage (one they cannot see is as unknown
/// as another tenant's), each changed only inside what they manage. Answers each user's
/// memberships as checked, for the store to hold the batch to.
async fn check_batch_scope(
    state: &AppState,
    caller: &Caller,
    scope: &DirectoryScope,
    body: &BatchUserUpdate,
) -> Result<Vec<(UserId, Memberships)>, ApiError> {
    // One read of the batch's users, as far as the caller sees them.
    let users = scope
        .visible_users(state, caller.tenant()?, "user_ids", &body.user_ids)
        .await?;
    for user in &users {
        scope.check_manages(user)?;
        let tags = (!body.add_tag_ids.is_empty() || !body.remove_tag_ids.is_empty()).then(|| {
            let mut tags = user.tag_ids.clone();
            tags.extend(
                body.add_tag_ids
                    .iter()
                    .filter(|t| !user.tag_ids.contains(t)),
            );
            tags.retain(|t| !body.remove_tag_ids.contains(t));
            tags
        });
        scope.check_change(user, body.department_ids.as_deref(), tags.as_deref())?;
    }
    Ok(users.iter().map(|u| (u.id, Memberships::of(u))).collect())
}

/// Issue a cardholder token for a kiosk or a test (super admin; audited).
#[utoipa::path(tag = "users", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 201, body = IssuedToken), Problems))]
#[post("/users/{id}/tokens")]
pub async fn create_user_token(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let user = state.store.get_user(tenant, path_id(&id)?).await?;
    let token = new_token();
    let stored = NewToken {
        hash: hash_token(&token),
        kind: TokenKind::Cardholder,
        tenant_id: Some(tenant),
        subject_id: Some(user.id.0),
        created_at: state.clock.now(),
    };
    let audit = caller.audit(
        &state,
        "user.token.create",
        "user",
        user.id,
        serde_json::json!({}),
    );
    state.store.insert_token(stored, audit).await?;
    Ok(HttpResponse::Created().json(IssuedToken { token }))
}
