//! The equipment maintenance half of the store (SPEC §13): device types, devices with
//! their printed codes and fixed scanners, and the maintenance visits recorded at them. A
//! record carries its outbox event, written in the same transaction.

use async_trait::async_trait;
use jiff::Timestamp;

use crate::error::StoreResult;
use crate::ids::{DeviceId, DeviceTypeId, MaintenanceId, TenantId, UserId};
use crate::model::{Audit, Device, DeviceType, MaintenanceRecord, NewToken, Page, PageReq};
use crate::shuttle_store::OnceWrite;
use crate::wallet::OutboxEvent;

/// What recording a maintenance visit did: `Repeat` at the same device, `Used` (a personal
/// code) at another.
pub type RecordWrite = OnceWrite<MaintenanceRecord>;

/// Which maintenance records a list returns.
#[derive(Clone, Debug, Default)]
pub struct RecordFilter {
    pub device: Option<DeviceId>,
    pub device_type: Option<DeviceTypeId>,
    pub user: Option<UserId>,
    /// Devices whose location contains this (any case).
    pub location: Option<String>,
    /// At or after this.
    pub from: Option<Timestamp>,
    /// Before this.
    pub to: Option<Timestamp>,
}

#[async_trait]
pub trait MaintenanceStore: Send + Sync + 'static {
    /// `device_type_name_taken` when another type of the tenant has the name.
    async fn create_device_type(
        &self,
        tenant: TenantId,
        t: DeviceType,
        audit: Audit,
    ) -> StoreResult<()>;
    async fn get_device_type(&self, tenant: TenantId, id: DeviceTypeId) -> StoreResult<DeviceType>;
    /// By name.
    async fn list_device_types(&self, tenant: TenantId) -> StoreResult<Vec<DeviceType>>;
    async fn update_device_type(
        &self,
        tenant: TenantId,
        t: DeviceType,
        audit: Audit,
    ) -> StoreResult<()>;
    /// `code_taken` when another device, of whichever tenant, has the code; the type must
    /// be the tenant's (`InvalidReference` on `type_id`).
    async fn create_device(&self, tenant: TenantId, d: Device, audit: Audit) -> StoreResult<()>;
    async fn get_device(&self, tenant: TenantId, id: DeviceId) -> StoreResult<Device>;
    /// By location, then name; only the type's when given.
    async fn list_devices(
        &self,
        tenant: TenantId,
        device_type: Option<DeviceTypeId>,
    ) -> StoreResult<Vec<Device>>;
    /// A new type, name or location (the code stays).
    async fn update_device(&self, tenant: TenantId, d: Device, audit: Audit) -> StoreResult<()>;
    /// The device whose code this is, of whichever tenant.
    async fn device_by_code(&self, code: String) -> StoreResult<Option<(TenantId, Device)>>;
    /// Gives the device a one-time link for its fixed scanner, replacing any other.
    async fn set_device_binding(
        &self,
        tenant: TenantId,
        id: DeviceId,
        binding_hash: [u8; 32],
        expires_at: Timestamp,
        audit: Audit,
    ) -> StoreResult<()>;
    /// Opens a device's link: as `ShuttleStore::bind_verifier`, for a device's scanner.
    async fn bind_scanner(
        &self,
        binding_hash: [u8; 32],
        token: NewToken,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<(TenantId, Device)>;
    /// Revokes the device's scanner and any link not yet used.
    async fn unbind_device(
        &self,
        tenant: TenantId,
        id: DeviceId,
        audit: Audit,
    ) -> StoreResult<Device>;
    /// Stores a record with its outbox event, unless one with this `dedupe` key exists:
    /// then that record, unchanged (`Repeat` at the same device, `Used` at another).
    async fn record_maintenance(
        &self,
        tenant: TenantId,
        record: MaintenanceRecord,
        dedupe: Vec<u8>,
        event: OutboxEvent,
    ) -> StoreResult<RecordWrite>;
    /// Oldest first, by id, with the names as they are now.
    async fn list_maintenance(
        &self,
        tenant: TenantId,
        filter: RecordFilter,
        page: PageReq<MaintenanceId>,
    ) -> StoreResult<Page<MaintenanceRecord, MaintenanceId>>;
}
