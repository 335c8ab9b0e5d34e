//! The edition → capability matrix of SPEC §1, as data.

use onecard_schema::model::{Edition, TenantKind};
use serde::Serialize;

/// A switchable part of the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Cards, identity, payments and the scenario apps: every edition.
    Core,
    /// Dashboards and reports.
    Analytics,
    /// Global identity and tenant-group management.
    GroupManagement,
    MultiMerchantSettlement,
    /// Self-built and third-party apps with appkey/appsecret.
    OpenApi,
    /// Enhanced analytics and multi-region.
    EnhancedAnalytics,
    DedicatedMiniProgram,
    /// Private deployment and custom features.
    PrivateDeployment,
}

impl Capability {
    pub const ALL: [Capability; 8] = [
        Capability::Core,
        Capability::Analytics,
        Capability::GroupManagement,
        Capability::MultiMerchantSettlement,
        Capability::OpenApi,
        Capability::EnhancedAnalytics,
        Capability::DedicatedMiniProgram,
        Capability::PrivateDeployment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Core => "core",
            Capability::Analytics => "analytics",
            Capability::GroupManagement => "group_management",
            Capability::MultiMerchantSettlement => "multi_merchant_settlement",
            Capability::OpenApi => "open_api",
            Capability::EnhancedAnalytics => "enhanced_analytics",
            Capability::DedicatedMiniProgram => "dedicated_mini_program",
            Capability::PrivateDeployment => "private_deployment",
        }
    }

    /// The lowest edition (in `EDITION_ORDER`) that has this capability.
    pub fn lowest_edition(self) -> Edition {
        EDITION_ORDER
            .iter()
            .copied()
            .find(|e| has_capability(*e, self))
            .unwrap_or(Edition::Flagship)
    }
}

/// Editions from the smallest to the largest.
pub const EDITION_ORDER: [Edition; 5] = [
    Edition::BasicEdu,
    Edition::Standard,
    Edition::Advanced,
    Edition::Professional,
    Edition::Flagship,
];

/// Rank of an edition in `EDITION_ORDER`.
fn rank(e: Edition) -> usize {
    EDITION_ORDER.iter().position(|x| *x == e).unwrap_or(0)
}

/// The matrix: each capability is on from one edition upwards.
pub fn has_capability(edition: Edition, cap: Capability) -> bool {
    let from = match cap {
        Capability::Core => Edition::BasicEdu,
        Capability::Analytics => Edition::Standard,
        Capability::GroupManagement
        | Capability::MultiMerchantSettlement
        | Capability::OpenApi
        | Capability::EnhancedAnalytics => Edition::Advanced,
        Capability::DedicatedMiniProgram => Edition::Professional,
        Capability::PrivateDeployment => Edition::Flagship,
    };
    rank(edition) >= rank(from)
}

pub fn capabilities(edition: Edition) -> Vec<Capability> {
    Capability::ALL
        .into_iter()
        .filter(|c| has_capability(edition, *c))
        .collect()
}

/// `basic_edu` may only be given to K-12 tenants.
pub fn edition_allowed(kind: TenantKind, edition: Edition) -> bool {
    edition != Edition::BasicEdu || kind == TenantKind::K12
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_matches_the_spec_table() {
        use Capability::*;
        let expect: [(Capability, [bool; 5]); 8] = [
            (Core, [true, true, true, true, true]),
            (Analytics, [false, true, true, true, true]),
            (GroupManagement, [false, false, true, true, true]),
            (MultiMerchantSettlement, [false, false, true, true, true]),
            (OpenApi, [false, false, true, true, true]),
            (EnhancedAnalytics, [false, false, true, true, true]),
            (DedicatedMiniProgram, [false, false, false, true, true]),
            (PrivateDeployment, [false, false, false, false, true]),
        ];
        for (cap, row) in expect {
            for (edition, want) in EDITION_ORDER.iter().zip(row) {
                assert_eq!(
                    has_capability(*edition, cap),
                    want,
                    "{cap:?} on {edition:?}"
                );
            }
        }
    }

    #[test]
    fn lowest_edition_names_the_first_edition_with_the_capability() {
        assert_eq!(Capability::Core.lowest_edition(), Edition::BasicEdu);
        assert_eq!(Capability::Analytics.lowest_edition(), Edition::Standard);
        assert_eq!(Capability::OpenApi.lowest_edition(), Edition::Advanced);
        assert_eq!(
            Capability::DedicatedMiniProgram.lowest_edition(),
            Edition::Professional
        );
        assert_eq!(
            Capability::PrivateDeployment.lowest_edition(),
            Edition::Flagship
        );
    }

    #[test]
    fn basic_edu_is_only_for_k12() {
        assert!(edition_allowed(TenantKind::K12, Edition::BasicEdu));
        assert!(!edition_allowed(TenantKind::University, Edition::BasicEdu));
        assert!(!edition_allowed(TenantKind::Enterprise, Edition::BasicEdu));
        assert!(edition_allowed(TenantKind::Enterprise, Edition::Standard));
    }
}
