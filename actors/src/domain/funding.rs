//! The deduction order of SPEC §6, as a pure function. For a payment of amount A at
//! merchant M:
//! 1. at most one coupon: valid now, allowed at M, threshold <= A; the one expiring
//!    soonest, then the larger discount, then the oldest;
//! 2. subsidy accounts allowed at M, soonest-expiring first (never-expiring last);
//! 3. the cash balance;
//! 4. the rest by deferred debit, if allowed (signed agreement), else the payment is
//!    declined `insufficient_funds`.

use jiff::Timestamp;
use onecard_schema::ids::{CouponId, MerchantId, SubsidyId};
use onecard_schema::money::Money;
use onecard_schema::wallet::{Breakdown, Coupon, SubsidyAccount};

/// How a payment will be funded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Funding {
    pub coupon: Option<(CouponId, Money)>,
    pub subsidy_parts: Vec<(SubsidyId, Money)>,
    pub balance: Money,
    pub deferred: Money,
}

impl Funding {
    pub fn breakdown(&self) -> Breakdown {
        Breakdown {
            coupon: self.coupon.map(|c| c.1).unwrap_or(Money::ZERO),
            subsidy: Money(self.subsidy_parts.iter().map(|p| p.1 .0).sum()),
            balance: self.balance,
            deferred: self.deferred,
        }
    }
}

fn allowed(list: &[MerchantId], merchant: MerchantId, ancestors: &[MerchantId]) -> bool {
    list.is_empty() || list.contains(&merchant) || ancestors.iter().any(|a| list.contains(a))
}

/// The coupon a payment would use, if any.
pub fn pick_coupon<'a>(
    coupons: &'a [Coupon],
    amount: Money,
    merchant: MerchantId,
    ancestors: &[MerchantId],
    now: Timestamp,
) -> Option<&'a Coupon> {
    coupons
        .iter()
        .filter(|c| {
            c.used_payment.is_none()
                && c.valid_from <= now
                && now < c.expires_at
                && c.threshold <= amount
                && allowed(&c.merchant_ids, merchant, ancestors)
        })
        .min_by(|a, b| {
            a.expires_at
                .cmp(&b.expires_at)
                .then(b.discount.cmp(&a.discount))
                .then(a.created_at.cmp(&b.created_at))
                .then(a.id.cmp(&b.id))
        })
}

/// Plans the funding of a payment. `ancestors` are the merchant's parents up the tree:
/// a coupon or subsidy allowed at a canteen is allowed at its stalls.
/// What a wallet can pay with.
#[derive(Clone, Copy, Debug)]
pub struct Purse<'a> {
    pub coupons: &'a [Coupon],
    pub subsidies: &'a [SubsidyAccount],
    pub balance: Money,
    /// A signed deferred-debit agreement lets the rest go to the provider.
    pub deferred_allowed: bool,
}

pub fn fund(
    amount: Money,
    merchant: MerchantId,
    ancestors: &[MerchantId],
    purse: Purse<'_>,
    now: Timestamp,
) -> Option<Funding> {
    let Purse {
        coupons,
        subsidies,
        balance,
        deferred_allowed,
    } = purse;
    let mut remaining = amount.0;
    let coupon = pick_coupon(coupons, amount, merchant, ancestors, now).map(|c| {
        let used = c.discount.0.min(remaining);
        remaining -= used;
        (c.id, Money(used))
    });
    let mut usable: Vec<&SubsidyAccount> = subsidies
        .iter()
        .filter(|s| {
            s.balance.0 > 0
                && s.expires_at.is_none_or(|e| now < e)
                && allowed(&s.merchant_ids, merchant, ancestors)
        })
        .collect();
    // Soonest expiry first; accounts that never expire last; then oldest, then by id.
    usable.sort_by(|a, b| {
        let key = |s: &SubsidyAccount| (s.expires_at.is_none(), s.expires_at, s.created_at, s.id);
        key(a).cmp(&key(b))
    });
    let mut subsidy_parts = Vec::new();
    for s in usable {
        if remaining == 0 {
            break;
        }
        let take = s.balance.0.min(remaining);
        remaining -= take;
        subsidy_parts.push((s.id, Money(take)));
    }
    let from_balance = balance.0.max(0).min(remaining);
    remaining -= from_balance;
    if remaining > 0 && !deferred_allowed {
        return None;
    }
    Some(Funding {
        coupon,
        subsidy_parts,
        balance: Money(from_balance),
        deferred: Money(remaining),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;
    use onecard_schema::ids::UserId;

    fn t(h: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap() + SignedDuration::from_hours(h)
    }

    fn coupon(discount: i64, threshold: i64, expires_h: i64, created_h: i64) -> Coupon {
        Coupon {
            id: CouponId::new(),
            user_id: UserId(uuid::Uuid::nil()),
            name: "c".into(),
            discount: Money(discount),
            threshold: Money(threshold),
            merchant_ids: vec![],
            valid_from: t(-100),
            expires_at: t(expires_h),
            used_payment: None,
            created_at: t(created_h),
        }
    }

    fn subsidy(balance: i64, expires_h: Option<i64>, merchants: Vec<MerchantId>) -> SubsidyAccount {
        SubsidyAccount {
            id: SubsidyId::new(),
            user_id: UserId(uuid::Uuid::nil()),
            rule_id: None,
            name: "s".into(),
            balance: Money(balance),
            merchant_ids: merchants,
            expires_at: expires_h.map(t),
            created_at: t(-50),
        }
    }

    #[test]
    fn the_coupon_expiring_soonest_wins_then_the_larger_then_the_oldest() {
        let m = MerchantId::new();
        let soon = coupon(100, 0, 5, -10);
        let later_bigger = coupon(500, 0, 9, -10);
        let both = [later_bigger.clone(), soon.clone()];
        assert_eq!(
            pick_coupon(&both, Money(1000), m, &[], t(0)).unwrap().id,
            soon.id
        );
        let small = coupon(100, 0, 5, -20);
        let big = coupon(300, 0, 5, -10);
        assert_eq!(
            pick_coupon(&[small.clone(), big.clone()], Money(1000), m, &[], t(0))
                .unwrap()
                .id,
            big.id
        );
        let old = coupon(300, 0, 5, -30);
        assert_eq!(
            pick_coupon(&[big.clone(), old.clone()], Money(1000), m, &[], t(0))
                .unwrap()
                .id,
            old.id
        );
    }

    #[test]
    fn a_coupon_whose_conditions_fail_stays_unused() {
        let m = MerchantId::new();
        let high_threshold = coupon(100, 2000, 5, 0);
        let expired = coupon(100, 0, -1, 0);
        let mut elsewhere = coupon(100, 0, 5, 0);
        elsewhere.merchant_ids = vec![MerchantId::new()];
        let mut not_yet = coupon(100, 0, 5, 0);
        not_yet.valid_from = t(1);
        let f = fund(
            Money(1000),
            m,
            &[],
            Purse {
                coupons: &[high_threshold, expired, elsewhere, not_yet],
                subsidies: &[],
                balance: Money(1000),
                deferred_allowed: false,
            },
            t(0),
        )
        .unwrap();
        assert_eq!(f.coupon, None);
        assert_eq!(f.balance, Money(1000));
    }

    #[test]
    fn subsidies_go_soonest_expiring_first_then_cash_then_deferred() {
        let m = MerchantId::new();
        let never = subsidy(300, None, vec![]);
        let soon = subsidy(200, Some(2), vec![]);
        let later = subsidy(100, Some(10), vec![m]);
        let other_shop = subsidy(999, Some(1), vec![MerchantId::new()]);
        let f = fund(
            Money(1000),
            m,
            &[],
            Purse {
                coupons: &[],
                subsidies: &[never.clone(), later.clone(), soon.clone(), other_shop],
                balance: Money(150),
                deferred_allowed: true,
            },
            t(0),
        )
        .unwrap();
        assert_eq!(
            f.subsidy_parts,
            vec![
                (soon.id, Money(200)),
                (later.id, Money(100)),
                (never.id, Money(300))
            ]
        );
        assert_eq!((f.balance, f.deferred), (Money(150), Money(250)));
        assert_eq!(f.breakdown().total(), Some(Money(1000)));
    }

    #[test]
    fn without_deferred_debit_a_shortfall_is_insufficient_funds() {
        let m = MerchantId::new();
        assert_eq!(
            fund(
                Money(1000),
                m,
                &[],
                Purse {
                    coupons: &[],
                    subsidies: &[],
                    balance: Money(999),
                    deferred_allowed: false
                },
                t(0)
            ),
            None
        );
        assert!(fund(
            Money(1000),
            m,
            &[],
            Purse {
                coupons: &[],
                subsidies: &[],
                balance: Money(1000),
                deferred_allowed: false
            },
            t(0)
        )
        .is_some());
    }

    #[test]
    fn an_allowance_at_a_parent_merchant_covers_its_stalls() {
        let (canteen, stall) = (MerchantId::new(), MerchantId::new());
        let meal = subsidy(500, Some(5), vec![canteen]);
        let f = fund(
            Money(300),
            stall,
            &[canteen],
            Purse {
                coupons: &[],
                subsidies: &[meal],
                balance: Money(0),
                deferred_allowed: false,
            },
            t(0),
        )
        .unwrap();
        assert_eq!(f.breakdown().subsidy, Money(300));
    }

    #[test]
    fn a_coupon_larger_than_the_amount_covers_it_exactly() {
        let m = MerchantId::new();
        let f = fund(
            Money(80),
            m,
            &[],
            Purse {
                coupons: &[coupon(100, 0, 5, 0)],
                subsidies: &[],
                balance: Money(0),
                deferred_allowed: false,
            },
            t(0),
        )
        .unwrap();
        assert_eq!(
            f.breakdown(),
            Breakdown {
                coupon: Money(80),
                ..Default::default()
            }
        );
    }
}
