//! What every handler can reach: the store, keys, the clock, the bus, wallet actors, the
//! real-time hub, log and relay, and short-lived caches of the rows every payment reads.

use std::sync::Arc;

use jiff::Timestamp;
use onecard_actors::clock::Clock;
use onecard_actors::domain::edition::{has_capability, Capability};
use onecard_actors::keys::Keys;
use onecard_actors::provider::Sandbox;
use onecard_actors::realtime::{Hub, Relay, TopicLog};
use onecard_actors::wallet::{MerchantInfo, Policy, Wallets};
use onecard_schema::front_end_store::FrontEnd;
use onecard_schema::group_store::TenantGroup;
use onecard_schema::ids::{AppId, MerchantId, TenantId, TerminalId};
use onecard_schema::model::{App, Edition, Tenant};
use onecard_schema::wallet::{Merchant, Terminal};
use onecard_schema::Store;

use crate::auth::Caller;
use crate::bus::Bus;
use crate::cache::TtlCache;
use crate::problem::ApiError;
use crate::ws::WsLimits;

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub clock: Arc<dyn Clock>,
    pub bus: Bus,
    /// Hash of `ONECARD_ROOT_TOKEN`, when set (then it is the only root token).
    pub env_root_hash: Option<[u8; 32]>,
    /// Base URL for links people open (binding links).
    pub public_url: String,
    pub wallets: Arc<Wallets>,
    /// The payment provider (`ONECARD_PROVIDER`) and its name: deferred debits go to it
    /// through the wallets, online top-ups' orders from here.
    pub provider: Arc<dyn onecard_actors::provider::Provider>,
    pub provider_name: String,
    /// The sandbox provider, when it is the active one.
    pub sandbox: Option<Arc<Sandbox>>,
    pub tokens: TtlCache<[u8; 32], Caller>,
    /// Apps by key, with their tenant and its edition, for signed requests.
    pub apps: TtlCache<AppId, Arc<(TenantId, Edition, App)>>,
    pub tenants: TtlCache<TenantId, Tenant>,
    /// Tenants' front ends (their own address and look), and which tenant is at a host.
    pub front_ends: TtlCache<TenantId, Arc<FrontEnd>>,
    pub hosts: TtlCache<String, Option<TenantId>>,
    /// The tenant group each tenant heads (`None`: it heads none).
    pub heads: TtlCache<TenantId, Option<TenantGroup>>,
    pub merchants: TtlCache<TenantId, Arc<Vec<Merchant>>>,
    pub terminals: TtlCache<TerminalId, Terminal>,
    /// Collection codes as scanned, with their tenant (a code never changes hands).
    pub collection_codes: TtlCache<String, (TenantId, Terminal)>,
    /// Routes topic events to this node's websocket sessions.
    pub hub: actix::Addr<Hub>,
    /// Topic numbering and history (memory, or Redis shared by every node).
    pub topic_log: Arc<dyn TopicLog>,
    /// Publishes durable outbox events.
    pub relay: Relay,
    /// The open platform's webhooks: the relay's sink, and what wakes the deliverer.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    pub ws_limits: WsLimits,
    /// Merchant actors: today's running totals per merchant.
    pub merchant_totals: actix::Addr<onecard_actors::merchant::MerchantDirectory>,
    /// How long idempotency records are kept (`ONECARD_IDEMPOTENCY_KEEP_DAYS`).
    pub idempotency_keep: jiff::SignedDuration,
    /// How long a request may take (`ONECARD_REQUEST_TIMEOUT_MS`, `crate::deadline`).
    pub request_timeout: std::time::Duration,
    /// Visitors' requests (no token) per client address: far fewer than the general
    /// limit, so that a script cannot flood hosts with requests.
    pub visitor_requests: Arc<crate::ratelimit::Limiter>,
    /// Card claims and phone codes (no token) per client address: each is a guess at who
    /// someone is, so they are limited like visitors' requests.
    pub claims: Arc<crate::ratelimit::Limiter>,
    /// Sends the texts that prove a phone.
    pub texts: Arc<dyn crate::texts::TextSender>,
    /// The sandbox text gateway, when it is the active one.
    pub sandbox_texts: Option<Arc<crate::texts::SandboxTexts>>,
    /// The registry behind visitor forms' real-name checks (`None`: the number's form only).
    pub real_name: Option<Arc<dyn crate::realname::RealNameRegistry>>,
    /// Calls tenants' identity endpoints (the `external` method).
    pub identity_http: reqwest::Client,
    /// Sends notices' deliveries (`crate::notify`).
    pub notifier: Arc<crate::notify::Notifier>,
}

impl AppState {
    pub async fn tenant(&self, id: TenantId) -> Result<Tenant, ApiError> {
        if let Some(t) = self.tenants.get(&id) {
            return Ok(t);
        }
        let t = self.store.get_tenant(id).await?;
        self.tenants.put(id, t.clone());
        Ok(t)
    }

    /// The tenant's front end as set (whether its edition puts it in force is the
    /// caller's to ask).
    pub async fn front_end(&self, tenant: TenantId) -> Result<Arc<FrontEnd>, ApiError> {
        if let Some(f) = self.front_ends.get(&tenant) {
            return Ok(f);
        }
        let f = Arc::new(self.store.get_front_end(tenant).await?);
        self.front_ends.put(tenant, f.clone());
        Ok(f)
    }

    /// The tenant whose front end is served at `host`.
    pub async fn tenant_at_host(&self, host: String) -> Result<Option<TenantId>, ApiError> {
        if let Some(t) = self.hosts.get(&host) {
            return Ok(t);
        }
        let t = self.store.tenant_at_host(host.clone()).await?;
        self.hosts.put(host, t);
        Ok(t)
    }

    /// After a change to `tenant`'s front end: its entry, and every host's (its old one
    /// may have gone), are read afresh.
    pub fn forget_front_end(&self, tenant: TenantId) {
        self.front_ends.remove(&tenant);
        self.hosts.clear();
    }

    /// The tenant's front end when its edition puts it in force (`dedicated_mini_program`).
    pub async fn front_end_in_force(&self, t: &Tenant) -> Result<Option<Arc<FrontEnd>>, ApiError> {
        if !has_capability(t.edition, Capability::DedicatedMiniProgram) {
            return Ok(None);
        }
        Ok(Some(self.front_end(t.id).await?))
    }

    /// The base of every link made for `t`: its own address when its front end is in
    /// force and has one, else the platform's (`ONECARD_PUBLIC_URL`).
    pub async fn public_url_for(&self, t: &Tenant) -> Result<String, ApiError> {
        Ok(self
            .front_end_in_force(t)
            .await?
            .and_then(|f| f.public_url.clone())
            .unwrap_or_else(|| self.public_url.clone()))
    }

    /// `public_url_for` the tenant with this id.
    pub async fn public_url_of(&self, tenant: TenantId) -> Result<String, ApiError> {
        self.public_url_for(&self.tenant(tenant).await?).await
    }

    /// The tenant group `tenant` heads, if it heads one.
    pub async fn group_headed_by(&self, tenant: TenantId) -> Result<Option<TenantGroup>, ApiError> {
        if let Some(g) = self.heads.get(&tenant) {
            return Ok(g);
        }
        let g = self.store.group_headed_by(tenant).await?;
        self.heads.put(tenant, g.clone());
        Ok(g)
    }

    pub async fn policy(&self, id: TenantId) -> Result<Policy, ApiError> {
        Ok(policy_of(&self.tenant(id).await?))
    }

    pub async fn merchants_of(&self, tenant: TenantId) -> Result<Arc<Vec<Merchant>>, ApiError> {
        if let Some(m) = self.merchants.get(&tenant) {
            return Ok(m);
        }
        let list = Arc::new(self.store.list_merchants(tenant).await?);
        self.merchants.put(tenant, list.clone());
        Ok(list)
    }

    /// A merchant's name; empty for an unknown one (a screen shows what it can).
    pub async fn merchant_name(
        &self,
        tenant: TenantId,
        id: MerchantId,
    ) -> Result<String, ApiError> {
        Ok(self
            .merchants_of(tenant)
            .await?
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.name.clone())
            .unwrap_or_default())
    }

    /// 422 unless every id names a merchant of the tenant.
    pub async fn check_merchants(
        &self,
        tenant: TenantId,
        ids: &[MerchantId],
    ) -> Result<(), ApiError> {
        let all = self.merchants_of(tenant).await?;
        if ids.iter().all(|m| all.iter().any(|x| x.id == *m)) {
            Ok(())
        } else {
            Err(ApiError::invalid_field(
                "merchant_ids",
                "exists",
                "one or more merchants do not exist",
            ))
        }
    }

    pub async fn merchant_info(
        &self,
        tenant: TenantId,
        id: MerchantId,
    ) -> Result<MerchantInfo, ApiError> {
        let all = self.merchants_of(tenant).await?;
        let me = all.iter().find(|m| m.id == id).ok_or(ApiError::NotFound)?;
        let mut ancestors = Vec::new();
        let mut parent = me.parent_id;
        while let Some(p) = parent {
            ancestors.push(p);
            parent = all.iter().find(|m| m.id == p).and_then(|m| m.parent_id);
        }
        Ok(MerchantInfo {
            id,
            single_limit: me.single_limit,
            ancestors,
        })
    }

    /// Records the audit entry of a change a wallet actor already committed (its commit
    /// cannot carry it); a failure here is logged, never undoes the money.
    pub async fn record_audit(&self, audit: onecard_schema::model::Audit) {
        if let Err(e) = self.store.write_audit(audit).await {
            tracing::warn!(error = %e, "could not write an audit entry");
        }
    }

    pub async fn terminal(&self, tenant: TenantId, id: TerminalId) -> Result<Terminal, ApiError> {
        if let Some(t) = self.terminals.get(&id) {
            return Ok(t);
        }
        let t = self.store.get_terminal(tenant, id).await?;
        self.terminals.put(id, t.clone());
        Ok(t)
    }

    /// The terminal whose collection code `code` is (normalised), of whichever tenant.
    pub async fn collection_code(
        &self,
        code: String,
    ) -> Result<Option<(TenantId, Terminal)>, ApiError> {
        if let Some(found) = self.collection_codes.get(&code) {
            return Ok(Some(found));
        }
        let found = self.store.terminal_by_code(code.clone()).await?;
        if let Some(f) = &found {
            self.collection_codes.put(code, f.clone());
        }
        Ok(found)
    }

    /// Today's date in the tenant's time zone, and the UTC bounds of a local day.
    pub fn local_day(&self, policy: &Policy, date: jiff::civil::Date) -> (Timestamp, Timestamp) {
        onecard_actors::clock::local_day(date, &policy.tz)
    }
}

/// The tenant's rules that bear on a wallet.
pub fn policy_of(t: &Tenant) -> Policy {
    Policy {
        tz: jiff::tz::TimeZone::get(&t.timezone).unwrap_or(jiff::tz::TimeZone::UTC),
        require_agreement: t.settings.require_agreement,
        refund_expired_to_cash: t.settings.refund_expired_to_cash,
    }
}
