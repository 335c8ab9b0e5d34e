//! A tenant's own front end (SPEC §1 "dedicated mini-program", the professional edition
//! and up): the address its card pages are served at (`https://card.example.edu`, a name
//! the school's DNS points at this server), the name and accent colour they show, and its
//! logo. Every link the server makes for the tenant — claim links, collection codes,
//! binding links, visitor passes — carries that address, and a page opened there takes its
//! look from it, so the card is the school's own, not the platform's.

use async_trait::async_trait;
use jiff::Timestamp;

use crate::error::{StoreError, StoreResult};
use crate::ids::TenantId;
use crate::model::Audit;

/// What a tenant set for its front end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrontEnd {
    /// Where its pages are served: scheme and host (and port), no path.
    pub public_url: Option<String>,
    /// The name its pages show (absent: the tenant's name).
    pub title: Option<String>,
    /// `#rrggbb`, the pages' buttons and highlights.
    pub accent_color: Option<String>,
    /// The logo's SHA-256, when it has one.
    pub logo_sha256: Option<[u8; 32]>,
    pub updated_at: Option<Timestamp>,
}

/// One part of a front end, set on its own: the look is the tenant's super admin's, the
/// address the platform operator's (who points the name at the server first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrontEndChange {
    Look {
        title: Option<String>,
        accent_color: Option<String>,
    },
    Address {
        public_url: Option<String>,
        /// The address's host (and port), lower case, matched with a request's `Host`;
        /// set with `public_url` and only with it.
        host: Option<String>,
    },
}

/// A front end's logo: square PNG or JPEG, served by its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logo {
    pub bytes: Vec<u8>,
    pub content_type: String,
    pub sha256: [u8; 32],
}

/// 409 `address_taken`: another tenant's front end is served at this host.
pub fn address_taken() -> StoreError {
    StoreError::conflict(
        "address_taken",
        Some("public_url"),
        "another organisation's card pages are served at this address",
    )
}

#[async_trait]
pub trait FrontEndStore {
    /// The tenant's front end; the default (nothing set) when it never set one.
    async fn get_front_end(&self, tenant: TenantId) -> StoreResult<FrontEnd>;

    /// Sets the look (title and colour) or the address as given (absent clears); the
    /// rest stays. 409 `address_taken` when another tenant has the host.
    async fn set_front_end(
        &self,
        tenant: TenantId,
        change: FrontEndChange,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<()>;

    /// A new logo, or (`None`) none.
    async fn set_front_end_logo(
        &self,
        tenant: TenantId,
        logo: Option<Logo>,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<()>;

    /// The tenant whose front end is served at `host` (lower case).
    async fn tenant_at_host(&self, host: String) -> StoreResult<Option<TenantId>>;

    /// A logo by its SHA-256 (`NotFound` when no front end has it).
    async fn get_logo(&self, sha256: [u8; 32]) -> StoreResult<Logo>;
}
