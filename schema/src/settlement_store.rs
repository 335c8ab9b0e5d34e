//! Multi-merchant-entity settlement (SPEC §1, the advanced edition and up). By default a
//! tenant's merchants settle to the tenant itself. A tenant whose canteens are run by
//! contractors names the bodies its merchants settle to — settlement entities — and gives
//! each merchant a schedule of them by tenant-local day: "from 1 March, the North canteen
//! settles to North Catering Co". A merchant with no entity on a day takes its parent's;
//! a root with none settles to the tenant ("own"). The reports split sales by entity from
//! this schedule, day by day, so moving a canteen to a new contractor never rewrites the
//! statement of a day before the move.

use std::collections::HashMap;

use async_trait::async_trait;
use jiff::civil::Date;
use jiff::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{StoreError, StoreResult};
use crate::ids::{MerchantId, SettlementEntityId, TenantId};
use crate::model::Audit;
use crate::wallet::Merchant;

/// A body a tenant's merchants settle to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct SettlementEntity {
    pub id: SettlementEntityId,
    /// Unique in the tenant.
    pub name: String,
    /// The registered name printed on statements; may be empty.
    pub legal_name: String,
    /// The entity's sub-merchant number at the payment provider; may be empty.
    pub provider_sub_merchant: String,
    /// The account its clearing is paid to; may be empty.
    pub bank_account: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What one entry of a merchant's schedule says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignment {
    /// The merchant takes its parent's entity (a root: the tenant itself).
    Parent,
    /// The merchant settles to the tenant itself, whatever its parent does.
    Own,
    Entity(SettlementEntityId),
}

/// One entry of a merchant's schedule: from `effective_from` on (a tenant-local day), the
/// merchant settles as `assignment` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerchantSettlement {
    pub merchant_id: MerchantId,
    pub effective_from: Date,
    pub assignment: Assignment,
    pub set_at: Timestamp,
}

impl MerchantSettlement {
    /// The entry's two columns: the entity, and whether it settles to the tenant itself.
    pub fn columns(&self) -> (Option<SettlementEntityId>, bool) {
        match self.assignment {
            Assignment::Parent => (None, false),
            Assignment::Own => (None, true),
            Assignment::Entity(e) => (Some(e), false),
        }
    }

    /// The assignment the two columns stand for.
    pub fn assignment_of(entity: Option<SettlementEntityId>, to_own: bool) -> Assignment {
        match (entity, to_own) {
            (Some(e), _) => Assignment::Entity(e),
            (None, true) => Assignment::Own,
            (None, false) => Assignment::Parent,
        }
    }
}

/// 409 `settlement_entity_name_taken`.
pub fn settlement_entity_name_taken() -> StoreError {
    StoreError::conflict(
        "settlement_entity_name_taken",
        Some("name"),
        "a settlement entity with this name exists",
    )
}

/// 409 `settlement_entity_in_use`: a merchant's schedule names it, on a past day or a
/// coming one; its statements keep its name, so it stays.
pub fn settlement_entity_in_use() -> StoreError {
    StoreError::conflict(
        "settlement_entity_in_use",
        None,
        "a merchant's settlement schedule names this entity; it stays for its statements",
    )
}

/// The reference a schedule entry makes to an entity that is not the tenant's.
pub fn no_such_entity() -> StoreError {
    StoreError::InvalidReference {
        field: "settles_to",
        detail: "no such settlement entity".into(),
    }
}

#[async_trait]
pub trait SettlementStore {
    async fn create_settlement_entity(
        &self,
        tenant: TenantId,
        entity: SettlementEntity,
        audit: Audit,
    ) -> StoreResult<()>;

    /// The tenant's entities, by name.
    async fn list_settlement_entities(
        &self,
        tenant: TenantId,
    ) -> StoreResult<Vec<SettlementEntity>>;

    async fn get_settlement_entity(
        &self,
        tenant: TenantId,
        id: SettlementEntityId,
    ) -> StoreResult<SettlementEntity>;

    /// Replaces the entity's fields (not its id or `created_at`).
    async fn update_settlement_entity(
        &self,
        tenant: TenantId,
        entity: SettlementEntity,
        audit: Audit,
    ) -> StoreResult<()>;

    /// Deletes an entity no schedule names (409 `settlement_entity_in_use` otherwise).
    async fn delete_settlement_entity(
        &self,
        tenant: TenantId,
        id: SettlementEntityId,
        audit: Audit,
    ) -> StoreResult<()>;

    /// Adds an entry to a merchant's schedule, replacing one from the same day. The
    /// merchant and the entity must be the tenant's (`NotFound`, `InvalidReference`); an
    /// entity deleted meanwhile is `InvalidReference`.
    async fn set_merchant_settlement(
        &self,
        tenant: TenantId,
        entry: MerchantSettlement,
        audit: Audit,
    ) -> StoreResult<()>;

    /// Every schedule entry of the tenant's merchants, by merchant and day.
    async fn merchant_settlements(&self, tenant: TenantId) -> StoreResult<Vec<MerchantSettlement>>;
}

/// Whom a merchant settles to on a day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SettlesTo {
    /// The tenant itself.
    Own,
    Entity(SettlementEntityId),
}

/// The tenant's merchants and their schedules, to answer whom a merchant settles to on a
/// day.
pub struct Schedule {
    parent: HashMap<MerchantId, Option<MerchantId>>,
    /// Each merchant's entries, by day.
    entries: HashMap<MerchantId, Vec<(Date, Assignment)>>,
}

impl Schedule {
    pub fn new(merchants: &[Merchant], entries: &[MerchantSettlement]) -> Self {
        let mut by_merchant: HashMap<MerchantId, Vec<(Date, Assignment)>> = HashMap::new();
        for e in entries {
            by_merchant
                .entry(e.merchant_id)
                .or_default()
                .push((e.effective_from, e.assignment));
        }
        for list in by_merchant.values_mut() {
            list.sort_by_key(|(day, _)| *day);
        }
        Schedule {
            parent: merchants.iter().map(|m| (m.id, m.parent_id)).collect(),
            entries: by_merchant,
        }
    }

    /// The merchant's own entry on `day`: its latest from that day or before.
    pub fn own_entry(&self, merchant: MerchantId, day: Date) -> Assignment {
        self.entries
            .get(&merchant)
            .and_then(|list| list.iter().rev().find(|(from, _)| *from <= day))
            .map_or(Assignment::Parent, |(_, a)| *a)
    }

    /// Whom the merchant settles to on `day`, and the merchant whose entry decides it
    /// (itself or an ancestor; `None` when no entry up the tree does).
    pub fn on(&self, merchant: MerchantId, day: Date) -> (SettlesTo, Option<MerchantId>) {
        let mut at = Some(merchant);
        // Trees are at most three deep; the bound only guards against a malformed one.
        for _ in 0..8 {
            let Some(m) = at else { break };
            match self.own_entry(m, day) {
                Assignment::Entity(e) => return (SettlesTo::Entity(e), Some(m)),
                Assignment::Own => return (SettlesTo::Own, Some(m)),
                Assignment::Parent => at = self.parent.get(&m).copied().flatten(),
            }
        }
        (SettlesTo::Own, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merchant(parent: Option<MerchantId>) -> Merchant {
        Merchant {
            id: MerchantId::new(),
            parent_id: parent,
            name: "M".into(),
            number: "M".into(),
            single_limit: crate::money::Money(5000),
            depth: 1,
            created_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn entry(m: &Merchant, day: &str, a: Assignment) -> MerchantSettlement {
        MerchantSettlement {
            merchant_id: m.id,
            effective_from: day.parse().unwrap(),
            assignment: a,
            set_at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_merchant_takes_its_latest_entry_then_its_parents_then_the_tenant() {
        let root = merchant(None);
        let site = merchant(Some(root.id));
        let stall = merchant(Some(site.id));
        let (a, b, c) = (
            SettlementEntityId::new(),
            SettlementEntityId::new(),
            SettlementEntityId::new(),
        );
        let entries = [
            entry(&site, "2026-03-01", Assignment::Entity(a)),
            entry(&site, "2026-04-01", Assignment::Entity(b)),
            entry(&stall, "2026-03-10", Assignment::Entity(c)),
            // From the 20th the stall takes its parent's again, from the 25th it settles
            // to the tenant.
            entry(&stall, "2026-03-20", Assignment::Parent),
            entry(&stall, "2026-03-25", Assignment::Own),
        ];
        let s = Schedule::new(&[root.clone(), site.clone(), stall.clone()], &entries);
        let on = |m: &Merchant, d: &str| s.on(m.id, d.parse().unwrap());
        assert_eq!(on(&stall, "2026-02-28"), (SettlesTo::Own, None));
        assert_eq!(
            on(&stall, "2026-03-01"),
            (SettlesTo::Entity(a), Some(site.id))
        );
        assert_eq!(
            on(&stall, "2026-03-10"),
            (SettlesTo::Entity(c), Some(stall.id))
        );
        assert_eq!(
            on(&stall, "2026-03-19"),
            (SettlesTo::Entity(c), Some(stall.id))
        );
        assert_eq!(
            on(&stall, "2026-03-20"),
            (SettlesTo::Entity(a), Some(site.id))
        );
        assert_eq!(
            on(&stall, "2026-03-24"),
            (SettlesTo::Entity(a), Some(site.id))
        );
        assert_eq!(on(&stall, "2026-03-25"), (SettlesTo::Own, Some(stall.id)));
        assert_eq!(on(&stall, "2026-04-01"), (SettlesTo::Own, Some(stall.id)));
        assert_eq!(
            on(&site, "2026-04-01"),
            (SettlesTo::Entity(b), Some(site.id))
        );
        assert_eq!(
            on(&site, "2026-03-15"),
            (SettlesTo::Entity(a), Some(site.id))
        );
        assert_eq!(on(&root, "2026-04-02"), (SettlesTo::Own, None));
        // A merchant unknown to the schedule settles to the tenant.
        assert_eq!(on(&merchant(None), "2026-04-02"), (SettlesTo::Own, None));
    }
}
