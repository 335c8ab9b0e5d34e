//! Money records: merchants, terminals, wallets with their subsidy accounts and coupons,
//! payments, ledger entries, and the `WalletCommit` — everything one wallet operation
//! writes, applied atomically and fenced by the wallet's version.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::*;
use crate::money::Money;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Merchant {
    pub id: MerchantId,
    pub parent_id: Option<MerchantId>,
    pub name: String,
    pub number: String,
    /// Largest single payment, in fen.
    #[schema(value_type = i64)]
    pub single_limit: Money,
    /// 1 (root) to 3 (stall).
    pub depth: u8,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminal {
    pub id: TerminalId,
    pub merchant_id: MerchantId,
    pub name: String,
    pub created_at: Timestamp,
    /// Set when the terminal is a static collection code rather than a till; fixed at
    /// creation (a code printed on a wall cannot change what it does).
    pub collection: Option<crate::model::Collection>,
    /// When it was retired: its tokens revoked, its collection code answering no more.
    pub retired_at: Option<Timestamp>,
}

/// A cardholder's wallet row. `version` fences concurrent writers (several nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletRow {
    pub user_id: UserId,
    pub tenant_id: TenantId,
    pub balance: Money,
    pub arrears: Money,
    pub version: i64,
    pub agreement_signed: bool,
    pub frozen: bool,
    pub frozen_until: Option<Timestamp>,
    /// Freezes ever, for the "first freeze lifts at midnight" rule.
    pub freeze_count: i32,
    /// Tenant-local date of the last arrears reminder (`YYYY-MM-DD`).
    pub reminded_on: Option<String>,
    pub updated_at: Timestamp,
}

impl WalletRow {
    /// A wallet nobody has written yet.
    pub fn empty(tenant_id: TenantId, user_id: UserId, now: Timestamp) -> Self {
        WalletRow {
            user_id,
            tenant_id,
            balance: Money::ZERO,
            arrears: Money::ZERO,
            version: 0,
            agreement_signed: false,
            frozen: false,
            frozen_until: None,
            freeze_count: 0,
            reminded_on: None,
            updated_at: now,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct SubsidyAccount {
    pub id: SubsidyId,
    #[serde(skip)]
    pub user_id: UserId,
    #[serde(skip)]
    pub rule_id: Option<SubsidyRuleId>,
    pub name: String,
    #[schema(value_type = i64)]
    pub balance: Money,
    /// Where it may be spent; empty means every merchant.
    pub merchant_ids: Vec<MerchantId>,
    pub expires_at: Option<Timestamp>,
    #[serde(skip)]
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Coupon {
    pub id: CouponId,
    #[serde(skip)]
    pub user_id: UserId,
    pub name: String,
    #[schema(value_type = i64)]
    pub discount: Money,
    /// Smallest payment the coupon applies to.
    #[schema(value_type = i64)]
    pub threshold: Money,
    /// Where it may be used; empty means every merchant.
    pub merchant_ids: Vec<MerchantId>,
    pub valid_from: Timestamp,
    pub expires_at: Timestamp,
    /// The payment that used it, if any.
    #[serde(skip)]
    pub used_payment: Option<PaymentId>,
    #[serde(skip)]
    pub created_at: Timestamp,
}

/// How a payment was funded (SPEC §6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Breakdown {
    #[schema(value_type = i64)]
    pub coupon: Money,
    #[schema(value_type = i64)]
    pub subsidy: Money,
    #[schema(value_type = i64)]
    pub balance: Money,
    #[schema(value_type = i64)]
    pub deferred: Money,
}

impl Breakdown {
    pub fn total(&self) -> Option<Money> {
        self.coupon
            .checked_add(self.subsidy)?
            .checked_add(self.balance)?
            .checked_add(self.deferred)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Succeeded,
    Accepted,
    Declined,
    Unsettled,
    Refunded,
    PartiallyRefunded,
    /// Unsettled, then written off at the tenant's month-end cut-off.
    WrittenOff,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Accepted => "accepted",
            PaymentStatus::Declined => "declined",
            PaymentStatus::Unsettled => "unsettled",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
            PaymentStatus::WrittenOff => "written_off",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "succeeded" => PaymentStatus::Succeeded,
            "accepted" => PaymentStatus::Accepted,
            "declined" => PaymentStatus::Declined,
            "unsettled" => PaymentStatus::Unsettled,
            "refunded" => PaymentStatus::Refunded,
            "partially_refunded" => PaymentStatus::PartiallyRefunded,
            "written_off" => PaymentStatus::WrittenOff,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    CodeInvalid,
    CodeExpired,
    CodeReused,
    Frozen,
    Arrears,
    OverLimit,
    InsufficientFunds,
    CardInactive,
}

impl DeclineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineReason::CodeInvalid => "code_invalid",
            DeclineReason::CodeExpired => "code_expired",
            DeclineReason::CodeReused => "code_reused",
            DeclineReason::Frozen => "frozen",
            DeclineReason::Arrears => "arrears",
            DeclineReason::OverLimit => "over_limit",
            DeclineReason::InsufficientFunds => "insufficient_funds",
            DeclineReason::CardInactive => "card_inactive",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "code_invalid" => DeclineReason::CodeInvalid,
            "code_expired" => DeclineReason::CodeExpired,
            "code_reused" => DeclineReason::CodeReused,
            "frozen" => DeclineReason::Frozen,
            "arrears" => DeclineReason::Arrears,
            "over_limit" => DeclineReason::OverLimit,
            "insufficient_funds" => DeclineReason::InsufficientFunds,
            "card_inactive" => DeclineReason::CardInactive,
            _ => return None,
        })
    }
}

/// A payment as stored. `subsidy_parts` says which subsidy accounts paid how much, so a
/// refund can return each share to where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub id: PaymentId,
    pub tenant_id: TenantId,
    pub user_id: Option<UserId>,
    pub merchant_id: MerchantId,
    pub terminal_id: TerminalId,
    pub amount: Money,
    pub status: PaymentStatus,
    pub decline_reason: Option<DeclineReason>,
    pub coupon_id: Option<CouponId>,
    pub breakdown: Breakdown,
    pub subsidy_parts: Vec<(SubsidyId, Money)>,
    pub refunded: Money,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Ledger account kinds. User-side accounts carry the user's or subsidy account's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Account {
    /// A cardholder's cash balance (ref: user).
    Cash,
    /// One subsidy account (ref: subsidy account).
    Subsidy,
    /// What a cardholder owes (ref: user); negative while owed.
    Arrears,
    /// What the tenant owes a merchant for its sales (ref: merchant).
    MerchantReceivable,
    /// The tenant's funding of coupon discounts.
    CouponFunding,
    /// The tenant's funding of subsidies.
    SubsidyFunding,
    /// Money coming in from top-ups.
    TopupClearing,
    /// Deferred debits owed by the payment provider.
    ProviderClearing,
    /// Money coming in from arrears repayments.
    RepaymentClearing,
    /// The tenant's loss on arrears written off at a month-end cut-off.
    ArrearsWrittenOff,
    /// Cash balances paid out to their cardholders (withdrawals).
    WithdrawalClearing,
}

impl Account {
    pub fn as_str(self) -> &'static str {
        match self {
            Account::Cash => "cash",
            Account::Subsidy => "subsidy",
            Account::Arrears => "arrears",
            Account::MerchantReceivable => "merchant_receivable",
            Account::CouponFunding => "coupon_funding",
            Account::SubsidyFunding => "subsidy_funding",
            Account::TopupClearing => "topup_clearing",
            Account::ProviderClearing => "provider_clearing",
            Account::RepaymentClearing => "repayment_clearing",
            Account::ArrearsWrittenOff => "arrears_written_off",
            Account::WithdrawalClearing => "withdrawal_clearing",
        }
    }
    /// The account an entry names, as stored.
    pub fn parse(name: &str) -> Option<Account> {
        Some(match name {
            "cash" => Account::Cash,
            "subsidy" => Account::Subsidy,
            "arrears" => Account::Arrears,
            "merchant_receivable" => Account::MerchantReceivable,
            "coupon_funding" => Account::CouponFunding,
            "subsidy_funding" => Account::SubsidyFunding,
            "topup_clearing" => Account::TopupClearing,
            "provider_clearing" => Account::ProviderClearing,
            "repayment_clearing" => Account::RepaymentClearing,
            "arrears_written_off" => Account::ArrearsWrittenOff,
            "withdrawal_clearing" => Account::WithdrawalClearing,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub tx_id: uuid::Uuid,
    pub account: Account,
    pub ref_id: Option<uuid::Uuid>,
    pub amount: i64,
    pub payment_id: Option<PaymentId>,
}

/// An event written in the same transaction as the money it reports.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxEvent {
    pub id: EventId,
    /// Every topic the event goes to (the relay fans it out): one row, not one per topic.
    pub topics: Vec<String>,
    pub kind: String,
    pub payload: Payload,
}

/// An event's payload as JSON text, serialized once where the event is made and shared,
/// not copied, by the outbox row, the topic log and the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload(std::sync::Arc<str>);

impl Payload {
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Payload {
        // Serializing our own payload types cannot fail (no maps with non-string keys).
        Payload(
            serde_json::to_string(value)
                .unwrap_or_else(|_| "null".into())
                .into(),
        )
    }

    /// Text read back from the outbox, which only ever holds what `of` wrote.
    pub fn from_stored(text: String) -> Payload {
        Payload(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text itself, shared.
    pub fn shared(&self) -> std::sync::Arc<str> {
        self.0.clone()
    }
}

/// A merchant's day as the ledger has it: each sale (a payment that was not declined,
/// made that day) and each refund (by ledger transaction, made that day).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MerchantDay {
    pub sales: Vec<(PaymentId, Money, Breakdown)>,
    pub refunds: Vec<(uuid::Uuid, Money)>,
}

/// A wallet in arrears, with what the arrears loop needs to know whether it has work for
/// it (the wallet's actor decides; this only spares it the calls that would do nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InArrears {
    pub tenant: TenantId,
    pub user: UserId,
    /// The tenant-local day of its last reminder.
    pub reminded_on: Option<String>,
    /// When its oldest unsettled payment turned so.
    pub owed_since: Option<Timestamp>,
}

/// Wallet counts for a tenant's dashboard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct WalletStats {
    /// Wallets frozen right now (until a time still ahead, or until an admin lifts it).
    pub frozen: i64,
    /// Wallets owing unsettled deferred debits.
    pub in_arrears: i64,
    /// Fen owed in all.
    pub arrears_total: i64,
}

/// An outbox event as stored, waiting for the relay.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingEvent {
    pub tenant_id: TenantId,
    pub event: OutboxEvent,
    pub created_at: Timestamp,
    /// The outbox row that holds the event: the id of the first event of its page
    /// (`OutboxPage`). `MoneyStore::delete_outbox` takes these.
    pub outbox_key: EventId,
}

impl PendingEvent {
    /// The events of one outbox page just written (`OutboxPage::of_one`), as the relay
    /// takes them: keyed by the first.
    pub fn of_page(tenant: TenantId, events: Vec<OutboxEvent>, at: Timestamp) -> Vec<Self> {
        let Some(key) = events.first().map(|e| e.id) else {
            return Vec::new();
        };
        events
            .into_iter()
            .map(|event| PendingEvent {
                tenant_id: tenant,
                event,
                created_at: at,
                outbox_key: key,
            })
            .collect()
    }
}

/// One outbox row: every event of one transaction, in order. A group commit of many
/// payments writes one row and the relay deletes one, instead of one of each per event.
/// Its key is the id of its first event, so a writer that knows which commits of a batch
/// applied knows the key without asking the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxPage {
    pub key: EventId,
    /// When the first event was made; the relay's sweep goes by it.
    pub created_at: Timestamp,
    /// The events as a JSON array (see `OutboxPage::events`), each payload embedded as the
    /// JSON it already is.
    pub json: String,
}

#[derive(Serialize)]
struct PageEventOut<'a> {
    id: EventId,
    tenant_id: TenantId,
    topics: &'a [String],
    kind: &'a str,
    /// Microseconds since the Unix epoch.
    at: i64,
}

#[derive(Deserialize)]
struct PageEventIn {
    id: EventId,
    tenant_id: TenantId,
    topics: Vec<String>,
    kind: String,
    payload: Box<serde_json::value::RawValue>,
    at: i64,
}

impl OutboxPage {
    /// The page of the events of `commits`, in order; None when they have none.
    pub fn of_commits<'a>(
        commits: impl IntoIterator<Item = &'a WalletCommit>,
    ) -> Option<OutboxPage> {
        OutboxPage::of(
            commits
                .into_iter()
                .flat_map(|c| c.outbox.iter().map(move |e| (c.wallet.tenant_id, e, c.at))),
        )
    }

    /// The page of one transaction's `events`, all of `tenant` and made `at`; None when
    /// there are none.
    pub fn of_one(tenant: TenantId, events: &[OutboxEvent], at: Timestamp) -> Option<OutboxPage> {
        OutboxPage::of(events.iter().map(|e| (tenant, e, at)))
    }

    /// Keys `events`, those of one page in order, by that page: the id of the first, the
    /// key `OutboxPage::of` gives the page it writes of them.
    pub fn key_events(events: &mut [PendingEvent]) {
        if let Some(key) = events.first().map(|e| e.event.id) {
            for e in events {
                e.outbox_key = key;
            }
        }
    }

    /// The page of `events`, in order; None when there are none. Its key is the first
    /// event's id (`key_events`).
    pub fn of<'a>(
        events: impl IntoIterator<Item = (TenantId, &'a OutboxEvent, Timestamp)>,
    ) -> Option<OutboxPage> {
        let mut first: Option<(EventId, Timestamp)> = None;
        let mut json = String::from("[");
        for (tenant_id, e, at) in events {
            let rest = PageEventOut {
                id: e.id,
                tenant_id,
                topics: &e.topics,
                kind: &e.kind,
                at: at.as_microsecond(),
            };
            // Ids, strings and integers always serialize.
            let Ok(rest) = serde_json::to_string(&rest) else {
                continue;
            };
            if first.is_none() {
                first = Some((e.id, at));
            } else {
                json.push(',');
            }
            // The payload goes in as the JSON text it is (a `Payload` only ever holds JSON
            // we serialized), not parsed and written again: `{"payload":…,` then the rest.
            json.push_str("{\"payload\":");
            json.push_str(e.payload.as_str());
            json.push(',');
            json.push_str(&rest[1..]);
        }
        json.push(']');
        let (key, created_at) = first?;
        Some(OutboxPage {
            key,
            created_at,
            json,
        })
    }

    /// The events of stored pages (key and JSON), in order. A page that does not parse
    /// (which only a bug could write) is logged and left where it is.
    pub fn read<'a>(pages: impl IntoIterator<Item = (EventId, &'a str)>) -> Vec<PendingEvent> {
        let mut events = Vec::new();
        for (key, json) in pages {
            match OutboxPage::events(key, json) {
                Ok(page) => events.extend(page),
                Err(e) => tracing::error!(page = %key, error = %e, "an outbox page does not parse"),
            }
        }
        events
    }

    /// The events of a stored page, keyed by `key`.
    fn events(key: EventId, json: &str) -> Result<Vec<PendingEvent>, serde_json::Error> {
        let stored: Vec<PageEventIn> = serde_json::from_str(json)?;
        Ok(stored
            .into_iter()
            .map(|e| PendingEvent {
                tenant_id: e.tenant_id,
                event: OutboxEvent {
                    id: e.id,
                    topics: e.topics,
                    kind: e.kind,
                    payload: Payload::from_stored(e.payload.get().to_owned()),
                },
                created_at: Timestamp::from_microsecond(e.at).unwrap_or_default(),
                outbox_key: key,
            })
            .collect())
    }
}

/// The response of an idempotent money request, stored with the money.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoneyRequest {
    pub scope: String,
    pub key: String,
    pub request_hash: [u8; 32],
    pub status: u16,
    pub body: Vec<u8>,
}

/// The two registers of cash that leaves or enters the platform outside a payment
/// (docs/OPERATIONS.md "Withdrawals", "The top-up register"): what the finance office
/// reconciles its bank account with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterKind {
    /// Cash paid out to its holder.
    Withdrawal,
    /// Cash credited to a holder (a bank transfer, a counter deposit).
    TopUp,
}

impl RegisterKind {
    /// The register's table.
    pub fn table(self) -> &'static str {
        match self {
            RegisterKind::Withdrawal => "withdrawals",
            RegisterKind::TopUp => "topups",
        }
    }

    /// The table's column for who made the movement.
    pub fn by_column(self) -> &'static str {
        match self {
            RegisterKind::Withdrawal => "paid_by",
            RegisterKind::TopUp => "credited_by",
        }
    }

    /// The register's lines with their holders' names and numbers, as `RegisterLine`'s
    /// fields in order (a top-up's reversal last: id, time, by whom, why), for both
    /// engines (the caller adds `WHERE`, on `w.` and `u.`).
    pub fn select_lines(self) -> String {
        let reversal = match self {
            RegisterKind::TopUp => "w.reversal_id, w.reversed_at, w.reversed_by, w.reversal_reason",
            RegisterKind::Withdrawal => {
                "CAST(NULL AS uuid), CAST(NULL AS timestamptz), CAST(NULL AS text), \
                 CAST(NULL AS text)"
            }
        };
        format!(
            "SELECT w.id, w.user_id, coalesce(u.name, ''), coalesce(u.number, ''), w.amount, \
               w.reference, w.{}, w.created_at, {reversal} \
             FROM {} w LEFT JOIN users u ON u.id = w.user_id",
            self.by_column(),
            self.table()
        )
    }
}

/// A line of a register as a wallet commit writes it, under its ledger transaction's id,
/// in the commit of its entries. A top-up's reference is credited once in a tenant: a
/// commit whose reference is taken is not applied (`CommitError::ReferenceUsed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterRecord {
    pub kind: RegisterKind,
    /// The ledger transaction's id (UUIDv7).
    pub id: uuid::Uuid,
    pub user_id: UserId,
    pub amount: Money,
    /// How the money moved (a bank transfer's reference, a receipt's number).
    pub reference: Option<String>,
    /// Who moved it (`Actor::as_string`: `admin:<id>`, `app:<id>`, ...).
    pub by: String,
}

/// A register's line as it is listed, with its holder's name and number now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterLine {
    pub id: uuid::Uuid,
    pub user_id: UserId,
    pub name: String,
    pub number: String,
    pub amount: Money,
    pub reference: Option<String>,
    /// `None` for a movement made before its register (withdrawals: PostgreSQL V39,
    /// SQLite V37; top-ups: V40 and V38).
    pub by: Option<String>,
    pub at: Timestamp,
    /// A top-up's reversal, once it is reversed.
    pub reversal: Option<Reversal>,
}

/// A top-up taken back: the reversal's ledger transaction, when, by whom and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reversal {
    pub id: uuid::Uuid,
    pub at: Timestamp,
    pub by: String,
    pub reason: String,
}

/// A top-up's reversal as a wallet commit writes it onto the top-up's line, under the
/// reversal's ledger transaction id. The line's reference is then free again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopUpReversal {
    pub topup_id: uuid::Uuid,
    pub reversal_id: uuid::Uuid,
    pub by: String,
    pub reason: String,
}

/// What a statement shows of a register beside one of its lines: the reference, and for
/// the ledger transaction of a top-up's reversal, the top-up it reverses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterNote {
    /// The line's ledger transaction: a top-up's, a withdrawal's, or a reversal's.
    pub id: uuid::Uuid,
    pub reference: Option<String>,
    pub reverses: Option<uuid::Uuid>,
}

/// Which lines a register lists.
#[derive(Clone, Debug, Default)]
pub struct RegisterFilter {
    pub user: Option<UserId>,
    /// At or after this.
    pub from: Option<Timestamp>,
    /// Before this.
    pub to: Option<Timestamp>,
    /// Exactly this reference.
    pub reference: Option<String>,
    /// Only the lines reversed (`true`) or standing (`false`); a withdrawal is never
    /// reversed.
    pub reversed: Option<bool>,
}

impl RegisterKind {
    /// The condition (on `w.`, for both engines) that keeps the lines `reversed` asks for.
    pub fn reversed_sql(self, reversed: Option<bool>) -> &'static str {
        match (self, reversed) {
            (_, None) | (RegisterKind::Withdrawal, Some(false)) => "",
            (RegisterKind::TopUp, Some(true)) => " AND w.reversal_id IS NOT NULL",
            (RegisterKind::TopUp, Some(false)) => " AND w.reversal_id IS NULL",
            (RegisterKind::Withdrawal, Some(true)) => " AND 1 = 0",
        }
    }
}

/// A payment as the transaction detail lists it, with its payer's name and number now
/// (empty for a payment without a cardholder's record).
#[derive(Clone, Debug, PartialEq)]
pub struct PaymentLine {
    pub payment: Payment,
    pub name: String,
    pub number: String,
}

/// A person a batch names, as its answer lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub id: UserId,
    pub name: String,
    pub number: String,
}

/// Everything one wallet operation writes. Applied all-or-nothing, and only if the
/// stored wallet version still equals `wallet.version - 1` (fencing).
#[derive(Clone, Debug)]
pub struct WalletCommit {
    /// The new wallet row; its `version` is the previous one plus one.
    pub wallet: WalletRow,
    pub subsidies: Vec<SubsidyAccount>,
    pub coupons: Vec<Coupon>,
    pub payments: Vec<Payment>,
    /// The payments of `payments` that existed before, as the decision saw them: the
    /// store applies the commit only if each is still stored so (a fence on the payment
    /// row, beside the wallet's version), and answers `Fenced` otherwise.
    pub payment_fences: Vec<PaymentFence>,
    pub entries: Vec<LedgerEntry>,
    pub used_nonce: Option<Vec<u8>>,
    pub risk_events: Vec<(String, Timestamp)>,
    pub outbox: Vec<OutboxEvent>,
    pub request: Option<MoneyRequest>,
    /// A withdrawal's or a top-up's line in its register.
    pub register: Option<RegisterRecord>,
    /// A top-up's reversal, written onto the top-up's line.
    pub topup_reversal: Option<TopUpReversal>,
    pub at: Timestamp,
    /// The decision took the card to be active (a payment's card check): the store applies
    /// the commit only if the cardholder is still active, in the same transaction, and
    /// answers `CardInactive` otherwise.
    pub require_active: bool,
}

/// A payment as a decision that changes it saw it. Every change of a stored payment moves
/// its status or its refunded sum (a refund adds to the sum; a settlement moves the status),
/// so a payment that still has both has not changed since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaymentFence {
    pub id: PaymentId,
    pub status: PaymentStatus,
    pub refunded: Money,
}

impl PaymentFence {
    pub fn of(p: &Payment) -> Self {
        PaymentFence {
            id: p.id,
            status: p.status,
            refunded: p.refunded,
        }
    }
}

/// Why a commit was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// Another writer moved the wallet on, or a payment the commit changes: reload and
    /// retry.
    #[error("wallet version moved on")]
    Fenced,
    /// The payment code's nonce was already used (the store's guard).
    #[error("payment code already used")]
    NonceUsed,
    /// The idempotency key was already used; the stored answer is returned.
    #[error("idempotency key already used")]
    Duplicate,
    /// A top-up's reference was already credited in the tenant (the register's guard).
    #[error("top-up reference already credited")]
    ReferenceUsed,
    /// The commit required an active card, and the cardholder is not (or no longer) active.
    #[error("card not active")]
    CardInactive,
    /// The store could not be reached, or the connection broke. Whether the commit
    /// applied is unknown (the connection may have broken after its `COMMIT` was sent): the
    /// request is answered 503, and its retry with the same idempotency key is either
    /// replayed or made.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store failure: {0}")]
    Failed(String),
}

impl From<crate::error::StoreError> for CommitError {
    /// A store failure as a commit's: `Unavailable` stays so (answered 503, to be
    /// retried); anything else failed the commit.
    fn from(e: crate::error::StoreError) -> Self {
        use crate::error::StoreError as E;
        match e {
            E::Unavailable(why) => CommitError::Unavailable(why),
            E::Backend(source) => CommitError::Failed(source.to_string()),
            e => CommitError::Failed(e.to_string()),
        }
    }
}

/// A wallet and everything the actor needs to decide on it.
#[derive(Clone, Debug)]
pub struct WalletSnapshot {
    pub wallet: WalletRow,
    pub subsidies: Vec<SubsidyAccount>,
    pub coupons: Vec<Coupon>,
    /// Risk events of the last 24 h.
    pub risk_events: Vec<Timestamp>,
    /// Payments still `accepted` (deferred debit pending) or `unsettled`.
    pub open_payments: Vec<Payment>,
}

/// What the ledger check found for a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct LedgerCheck {
    /// The entries sum to zero and every movement's entries sum to zero.
    pub balanced: bool,
    pub entries: u64,
    /// Users whose wallet (cash, subsidies or arrears) differs from their entries.
    pub mismatched_wallets: Vec<UserId>,
    /// Of `entries`, how many the check took from the seal's sums rather than read
    /// (0 for a full check).
    pub sealed_entries: u64,
    /// Registers (`topups`, `withdrawals`) whose lines differ from the ledger: as many
    /// lines (a top-up's reversal counted as one more) as clearing entries, and the same
    /// sum (the top-ups that stand, what was paid out).
    pub mismatched_registers: Vec<String>,
}

/// A register beside the ledger's clearing account it mirrors: how many lines and their
/// sum, how many entries and theirs (signed so that the two sums are equal).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegisterTally {
    pub lines: i64,
    pub lines_sum: i64,
    pub entries: i64,
    pub entries_sum: i64,
}

impl RegisterTally {
    pub fn agrees(&self) -> bool {
        self.lines == self.entries && self.lines_sum == self.entries_sum
    }
}

impl RegisterKind {
    /// The two questions of a register's tally, for both engines, each with the tenant as
    /// its one parameter: its lines (a top-up's reversal is a line more, and takes its
    /// top-up out of the sum), then its clearing entries, read through the tenant's
    /// account index (a top-up and its reversal an entry each).
    pub fn tally_sql(self, param: &str) -> [String; 2] {
        let (lines, account, sign) = match self {
            RegisterKind::TopUp => (
                "count(*) + count(reversal_id), \
                 CAST(coalesce(sum(CASE WHEN reversal_id IS NULL THEN amount ELSE 0 END), 0) \
                   AS BIGINT)",
                "topup_clearing",
                "-",
            ),
            RegisterKind::Withdrawal => (
                "count(*), CAST(coalesce(sum(amount), 0) AS BIGINT)",
                "withdrawal_clearing",
                "",
            ),
        };
        [
            format!("SELECT {lines} FROM {} WHERE tenant_id = {param}", self.table()),
            format!(
                "SELECT count(*), CAST(coalesce({sign}sum(amount), 0) AS BIGINT) FROM ledger_entries \
                 WHERE tenant_id = {param} AND account = '{account}'"
            ),
        ]
    }
}

/// A subsidy rule as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubsidyTargets {
    #[serde(default)]
    pub user_ids: Vec<UserId>,
    #[serde(default)]
    pub department_ids: Vec<DepartmentId>,
    #[serde(default)]
    pub tag_ids: Vec<TagId>,
    #[serde(default)]
    pub identities: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct SubsidyRule {
    pub id: SubsidyRuleId,
    pub name: String,
    #[schema(value_type = i64)]
    pub amount: Money,
    pub targets: SubsidyTargets,
    pub merchant_ids: Vec<MerchantId>,
    pub expires_at: Option<Timestamp>,
    /// `pending` until a second admin approves it (`effective`) or an admin rejects it
    /// (`rejected`).
    pub status: String,
    pub created_by: AdminId,
    pub approved_by: Option<AdminId>,
    pub credited_users: u64,
    pub created_at: Timestamp,
    pub approved_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_by: Option<AdminId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_at: Option<Timestamp>,
    /// Why it was rejected, for its maker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_reason: Option<String>,
}

/// Which subsidy rules a list holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleState {
    Pending,
    Effective,
    Rejected,
}

impl RuleState {
    /// The SQL condition on `subsidy_rules` that holds the rules in this state (a rejected
    /// rule keeps `status` 'pending' and has `rejected_at`).
    pub fn condition(self) -> &'static str {
        match self {
            RuleState::Pending => "status = 'pending' AND rejected_at IS NULL",
            RuleState::Effective => "status = 'effective'",
            RuleState::Rejected => "rejected_at IS NOT NULL",
        }
    }
}

/// 409 `not_pending`: the rule was approved or rejected already.
pub fn not_pending(rule: &SubsidyRule) -> crate::error::StoreError {
    crate::error::StoreError::conflict(
        "not_pending",
        None,
        format!("this rule is {} already", rule.status),
    )
}

/// A rule's status as shown: `rejected` for a pending one with a rejection.
pub fn rule_status(stored: String, rejected: bool) -> String {
    if rejected {
        "rejected".into()
    } else {
        stored
    }
}

/// Per merchant and funding source, what was sold and refunded on one day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Totals {
    #[schema(value_type = i64)]
    pub gross: Money,
    #[schema(value_type = i64)]
    pub refunds: Money,
    pub count: u64,
    pub by_source: Breakdown,
}

/// The length of the time buckets the reports are summed in: a quarter hour. Every time
/// zone's offset since 1972 is a whole number of quarter hours, so each bucket lies in one
/// local hour of one local day, wherever the tenant is.
pub const REPORT_BUCKET_MS: i64 = 15 * 60 * 1000;

/// What the financial reports (SPEC §9) are made of, for one tenant between two times,
/// summed by quarter hour. Each figure is a sum of ledger entries or of the payments
/// behind them, so the reports reconcile with the ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportFacts {
    pub sales: Vec<SalesBucket>,
    pub refunds: Vec<RefundBucket>,
    pub movements: Vec<MovementBucket>,
}

impl ReportFacts {
    /// Where a period splits between the roll-ups (before) and the payments themselves
    /// (after), given the tenant's roll-up mark: only whole quarter hours come from the
    /// roll-ups (a tenant's local days always start on one, in every zone since 1972).
    pub fn rollup_split(through: Option<i64>, from_ms: i64, to_ms: i64) -> i64 {
        match through {
            Some(t) if from_ms % REPORT_BUCKET_MS == 0 && to_ms % REPORT_BUCKET_MS == 0 => {
                t.saturating_mul(REPORT_BUCKET_MS).clamp(from_ms, to_ms)
            }
            _ => from_ms,
        }
    }

    pub fn extend(&mut self, other: ReportFacts) {
        self.sales.extend(other.sales);
        self.refunds.extend(other.refunds);
        self.movements.extend(other.movements);
    }
}

/// The sales (payments not declined) of one terminal in one quarter hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SalesBucket {
    pub merchant_id: MerchantId,
    pub terminal_id: TerminalId,
    /// Milliseconds since the epoch divided by `REPORT_BUCKET_MS`.
    pub bucket: i64,
    pub count: u64,
    pub amount: Money,
    pub by_source: Breakdown,
}

/// One cardholder's payments over a period (enhanced analytics): those not declined, made
/// in it, and how much of them has been refunded since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserSpending {
    pub user_id: UserId,
    pub payments: u64,
    pub amount: Money,
    pub refunded: Money,
}

/// The refunds of one merchant in one quarter hour, by when they were made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefundBucket {
    pub merchant_id: MerchantId,
    pub bucket: i64,
    /// The quarter hour of the payments refunded (a settlement entity's statement counts a
    /// refund against the entity of its sale's day); `None` in roll-ups written before
    /// it was kept (PostgreSQL V34, SQLite V32), all of days before any settlement entity.
    pub sale_bucket: Option<i64>,
    pub count: u64,
    pub amount: Money,
}

/// The tenant's movements outside sales in one quarter hour, each as a positive amount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MovementBucket {
    pub bucket: i64,
    /// Credited to cash by top-ups (`topup_clearing`).
    pub top_ups: Money,
    /// Credited to subsidy accounts by approved rules (`subsidy_funding`, debits).
    pub subsidies_issued: Money,
    /// Deferred debits the provider declined (`arrears`, debits).
    pub arrears_opened: Money,
    /// Arrears repaid (`repayment_clearing`).
    pub arrears_recovered: Money,
    /// Arrears written off at a month-end cut-off (`arrears_written_off`).
    pub arrears_written_off: Money,
    /// Cash balances paid out to cardholders (`withdrawal_clearing`).
    pub withdrawals: Money,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_splits_at_the_roll_up_mark_only_on_whole_quarter_hours() {
        let q = REPORT_BUCKET_MS;
        let split = ReportFacts::rollup_split;
        assert_eq!(split(None, 4 * q, 100 * q), 4 * q, "nothing rolled up");
        assert_eq!(split(Some(10), 4 * q, 100 * q), 10 * q);
        assert_eq!(
            split(Some(2), 4 * q, 100 * q),
            4 * q,
            "the mark before the period"
        );
        assert_eq!(
            split(Some(500), 4 * q, 100 * q),
            100 * q,
            "all of it rolled up"
        );
        assert_eq!(
            split(Some(10), 4 * q + 1, 100 * q),
            4 * q + 1,
            "not a whole quarter hour"
        );
        assert_eq!(split(Some(10), 4 * q, 100 * q - 1), 4 * q);
    }

    fn event(kind: &str, payload: serde_json::Value) -> OutboxEvent {
        OutboxEvent {
            id: EventId::new(),
            topics: vec!["terminal:t\u{1f}1".into(), "tenant".into()],
            kind: kind.into(),
            payload: Payload::of(&payload),
        }
    }

    #[test]
    fn an_outbox_page_gives_back_its_events_in_order_keyed_by_the_first() {
        let (t1, t2) = (TenantId::new(), TenantId::new());
        let at1 = Timestamp::from_microsecond(1_764_000_000_123_456).unwrap();
        let at2 = at1 + jiff::SignedDuration::from_micros(7);
        let a = event(
            "payment.succeeded",
            serde_json::json!({"amount": 5, "note": "\"q\" \\ é"}),
        );
        let b = event("payment.declined", serde_json::json!([1, null, {"x": []}]));
        let page = OutboxPage::of([(t1, &a, at1), (t2, &b, at2)]).expect("two events");
        assert_eq!((page.key, page.created_at), (a.id, at1));
        let back = OutboxPage::events(page.key, &page.json).unwrap();
        let want = vec![
            PendingEvent {
                tenant_id: t1,
                event: a.clone(),
                created_at: at1,
                outbox_key: a.id,
            },
            PendingEvent {
                tenant_id: t2,
                event: b,
                created_at: at2,
                outbox_key: a.id,
            },
        ];
        assert_eq!(back, want);
        // A writer that keys the events itself gets the page's key.
        let mut keyed = want.clone();
        keyed[0].outbox_key = EventId::new();
        keyed[1].outbox_key = EventId::new();
        OutboxPage::key_events(&mut keyed);
        assert_eq!(keyed, want);
        // The payload comes back as the same JSON text, not merely an equal value.
        assert_eq!(back[0].event.payload.as_str(), a.payload.as_str());
    }

    #[test]
    fn no_events_make_no_page_and_a_broken_page_is_skipped() {
        assert_eq!(OutboxPage::of([]), None);
        let e = event("payment.succeeded", serde_json::json!({"amount": 1}));
        let good = OutboxPage::of([(TenantId::new(), &e, Timestamp::now())]).unwrap();
        let read = OutboxPage::read([
            (EventId::new(), "[{\"id\": 1}]"),
            (good.key, good.json.as_str()),
        ]);
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].event, e);
    }
}
