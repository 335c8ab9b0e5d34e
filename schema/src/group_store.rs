//! Tenant groups (SPEC §1, "group management"): a school district or a corporate group
//! that the platform operator forms around a head tenant. A tenant belongs to at most one
//! group; the head is always a member. The head tenant's super admins are the group's
//! admins (the edge decides what that lets them do).

use async_trait::async_trait;
use jiff::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{StoreError, StoreResult};
use crate::ids::{TenantGroupId, TenantId};
use crate::model::{Audit, Edition, Page, PageReq, Tenant};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct TenantGroup {
    pub id: TenantGroupId,
    pub name: String,
    /// The tenant whose super admins administer the group; always a member.
    pub head_tenant_id: TenantId,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A change to a group: absent fields stay.
#[derive(Clone, Debug, Default)]
pub struct TenantGroupPatch {
    pub name: Option<String>,
    /// Must already be a member.
    pub head_tenant_id: Option<TenantId>,
}

/// A change the operator makes to a tenant: absent fields stay.
#[derive(Clone, Debug, Default)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub edition: Option<Edition>,
}

/// 409 `tenant_in_group`: the tenant already belongs to another group.
pub fn in_other_group(tenant: TenantId, group: TenantGroupId) -> StoreError {
    StoreError::conflict(
        "tenant_in_group",
        Some("tenant_id"),
        format!("tenant {tenant} belongs to group {group}; remove it there first"),
    )
}

/// 409 `group_head`: the head tenant cannot leave its group.
pub fn head_cannot_leave() -> StoreError {
    StoreError::conflict(
        "group_head",
        Some("tenant_id"),
        "the group's head tenant cannot leave it: name another head first",
    )
}

/// 409 `group_not_empty`: a group with members besides its head cannot be deleted.
pub fn not_empty(members: u64) -> StoreError {
    StoreError::conflict(
        "group_not_empty",
        None,
        format!("the group still has {members} member tenants besides its head; remove them first"),
    )
}

/// 422: a new head must already be a member.
pub fn head_not_member() -> StoreError {
    StoreError::InvalidReference {
        field: "head_tenant_id",
        detail: "not a member tenant of this group".into(),
    }
}

#[async_trait]
pub trait TenantGroupStore: Send + Sync + 'static {
    /// Creates the group with its head as its first member. 404 if the head does not
    /// exist; 409 `tenant_in_group` if it belongs to a group already.
    async fn create_tenant_group(&self, group: TenantGroup, audit: Audit) -> StoreResult<()>;
    async fn list_tenant_groups(
        &self,
        page: PageReq<TenantGroupId>,
    ) -> StoreResult<Page<TenantGroup, TenantGroupId>>;
    async fn get_tenant_group(&self, id: TenantGroupId) -> StoreResult<TenantGroup>;
    /// The group `tenant` heads, if any.
    async fn group_headed_by(&self, tenant: TenantId) -> StoreResult<Option<TenantGroup>>;
    async fn update_tenant_group(
        &self,
        id: TenantGroupId,
        patch: TenantGroupPatch,
        at: Timestamp,
        audit: Audit,
    ) -> StoreResult<TenantGroup>;
    /// Deletes a group whose only member is its head (409 `group_not_empty` otherwise).
    async fn delete_tenant_group(&self, id: TenantGroupId, audit: Audit) -> StoreResult<()>;
    /// Adds a member; `false` if it was one already. 404 for an unknown tenant or group;
    /// 409 `tenant_in_group` when it belongs to another group.
    async fn add_group_member(
        &self,
        id: TenantGroupId,
        tenant: TenantId,
        audit: Audit,
    ) -> StoreResult<bool>;
    /// Removes a member: 404 if it is not one, 409 `group_head` for the head.
    async fn remove_group_member(
        &self,
        id: TenantGroupId,
        tenant: TenantId,
        audit: Audit,
    ) -> StoreResult<()>;
    /// Tenants by id; only a group's members when `group` is given.
    async fn list_tenants(
        &self,
        group: Option<TenantGroupId>,
        page: PageReq<TenantId>,
    ) -> StoreResult<Page<Tenant, TenantId>>;
    /// The operator's change of a tenant's name or edition.
    async fn patch_tenant(
        &self,
        id: TenantId,
        patch: TenantPatch,
        audit: Audit,
    ) -> StoreResult<Tenant>;
}
