//! Wire shapes of money objects. They are built here, beside the rules, because the same
//! bytes serve three readers: the REST answer, the `payment.*` event, and the stored
//! answer an idempotent retry gets back.

use jiff::Timestamp;
use onecard_schema::ids::*;
use onecard_schema::money::Money;
use onecard_schema::wallet::*;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::risk::is_frozen;

/// A payment as integrators and screens see it (API.md "Paying").
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PaymentView {
    pub id: PaymentId,
    pub status: PaymentStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_reason: Option<DeclineReason>,
    #[schema(value_type = i64)]
    pub amount: Money,
    pub user_id: Option<UserId>,
    pub merchant_id: MerchantId,
    pub terminal_id: TerminalId,
    pub breakdown: Breakdown,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coupon_id: Option<CouponId>,
    #[schema(value_type = i64)]
    pub refunded: Money,
    pub created_at: Timestamp,
    /// When its status last changed (equal to `created_at` until then).
    pub updated_at: Timestamp,
}

impl From<&Payment> for PaymentView {
    fn from(p: &Payment) -> Self {
        PaymentView {
            id: p.id,
            status: p.status,
            decline_reason: p.decline_reason,
            amount: p.amount,
            user_id: p.user_id,
            merchant_id: p.merchant_id,
            terminal_id: p.terminal_id,
            breakdown: p.breakdown,
            coupon_id: p.coupon_id,
            refunded: p.refunded,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CouponView {
    #[serde(flatten)]
    pub coupon: Coupon,
    pub used: bool,
}

/// A withdrawal's answer: what was paid out, and the wallet after it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct WithdrawalView {
    /// The withdrawal's id in the register (`GET /wallets/withdrawals`).
    pub id: uuid::Uuid,
    /// Fen paid out.
    #[schema(value_type = i64)]
    pub withdrawn: Money,
    #[serde(flatten)]
    pub wallet: WalletView,
}

/// A top-up reversal's answer: the top-up taken back, and the wallet after it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TopUpReversalView {
    /// The top-up reversed (`GET /wallets/topups`).
    pub topup_id: uuid::Uuid,
    /// The reversal's ledger transaction (its line on the statement).
    pub reversal_id: uuid::Uuid,
    /// Fen taken back from the cash balance.
    #[schema(value_type = i64)]
    pub reversed: Money,
    #[serde(flatten)]
    pub wallet: WalletView,
}

/// A wallet as its holder and admins see it (API.md "Wallet").
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct WalletView {
    #[schema(value_type = i64)]
    pub balance: Money,
    pub subsidies: Vec<SubsidyAccount>,
    pub coupons: Vec<CouponView>,
    pub agreement_signed: bool,
    pub frozen: bool,
    pub frozen_until: Option<Timestamp>,
    /// Fen owed from unsettled deferred debits.
    #[schema(value_type = i64)]
    pub arrears: Money,
}

impl WalletView {
    pub fn of(s: &WalletSnapshot, now: Timestamp) -> Self {
        let frozen = is_frozen(&s.wallet, now);
        WalletView {
            balance: s.wallet.balance,
            // What can still pay: an account or coupon past its expiry is not shown (an
            // actor may outlive the moment it expired).
            subsidies: s
                .subsidies
                .iter()
                .filter(|a| a.balance.0 > 0 && a.expires_at.is_none_or(|e| now < e))
                .cloned()
                .collect(),
            coupons: s
                .coupons
                .iter()
                .filter(|c| now < c.expires_at)
                .map(|c| CouponView {
                    coupon: c.clone(),
                    used: c.used_payment.is_some(),
                })
                .collect(),
            agreement_signed: s.wallet.agreement_signed,
            frozen,
            frozen_until: if frozen { s.wallet.frozen_until } else { None },
            arrears: s.wallet.arrears,
        }
    }
}

pub fn to_json_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail (no maps with non-string keys).
    serde_json::to_vec(value).unwrap_or_default()
}
