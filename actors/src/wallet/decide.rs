//! What a wallet operation does, as a pure function of the wallet's state: the new state,
//! the commit that makes it durable (balances, ledger entries, payment rows, events), and
//! the answer. The wallet actor runs it one message at a time; the property tests run it
//! against a reference model.

use jiff::tz::TimeZone;
use jiff::Timestamp;
use onecard_schema::ids::*;
use onecard_schema::money::Money;
use onecard_schema::wallet::*;
use uuid::Uuid;

use crate::domain::funding::{fund, Purse};
use crate::domain::risk::{counted, freeze, is_frozen, unfreeze, RISK_EVENTS_TO_FREEZE};
use crate::wire::{to_json_bytes, PaymentView, TopUpReversalView, WalletView, WithdrawalView};

/// The tenant's rules that bear on a wallet.
#[derive(Clone, Debug)]
pub struct Policy {
    pub tz: TimeZone,
    pub require_agreement: bool,
    pub refund_expired_to_cash: bool,
}

/// The merchant a payment is made at, from its cached configuration.
#[derive(Clone, Debug)]
pub struct MerchantInfo {
    pub id: MerchantId,
    pub single_limit: Money,
    /// Parents up the tree (allowances given at a parent cover its children).
    pub ancestors: Vec<MerchantId>,
}

/// What the verification of a payment code found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeCheck {
    Valid {
        nonce: Vec<u8>,
        reused: bool,
    },
    Expired,
    /// No payment code: the cardholder pays a merchant's collection code themselves,
    /// signed in with their own token (SPEC §13). The same checks and deduction order
    /// apply; while the tenant requires the deferred-debit agreement and it is unsigned,
    /// the payment is refused as issuing a code would be.
    SignedIn,
}

#[derive(Clone, Debug)]
pub enum Op {
    Pay {
        payment_id: PaymentId,
        terminal_id: TerminalId,
        merchant: MerchantInfo,
        amount: Money,
        code: CodeCheck,
        card_active: bool,
    },
    /// Credits cash: a bank transfer, a counter deposit.
    TopUp {
        amount: Money,
        /// The bank's reference for it, kept in the top-up register and credited once in
        /// the tenant (the store refuses a second: `CommitError::ReferenceUsed`).
        reference: Option<String>,
        /// Who credits it (`Actor::as_string`).
        credited_by: String,
    },
    /// Takes back a top-up credited in error (the wrong person, a transfer credited twice)
    /// from the cash it credited: never more than the balance holds, never twice. The
    /// top-up as the register holds it, read after the wallet (and again on a retry).
    ReverseTopUp {
        topup: Box<RegisterLine>,
        /// Who reverses it (`Actor::as_string`).
        by: String,
        reason: String,
    },
    /// Pays out cash balance (`amount`, or all of it): the finance office hands it to the
    /// cardholder outside the platform (a person leaving, say). Never subsidies or coupons,
    /// which are the tenant's to give; never while anything is owed.
    Withdraw {
        amount: Option<Money>,
        /// How the office paid it; kept in the withdrawal register.
        reference: Option<String>,
        /// Who pays it out (`Actor::as_string`).
        paid_by: String,
    },
    AddCoupon {
        coupon: Coupon,
    },
    SignAgreement,
    IssueCode,
    Freeze,
    Unfreeze,
    Refund {
        payment: Box<Payment>,
        amount: Option<Money>,
    },
    DeferredResult {
        payment_id: PaymentId,
        ok: bool,
    },
    Repay,
    Remind {
        today: String,
    },
    /// The month-end cut-off under a write-off policy: arrears that became owed before
    /// `before` (the payment turned `unsettled` then) are written off.
    WriteOff {
        before: Timestamp,
    },
    Get,
}

/// A refusal: the operation does not apply (nothing is written).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub field: Option<&'static str>,
    pub detail: String,
}

fn refuse(
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
    detail: impl Into<String>,
) -> Refusal {
    Refusal {
        status,
        code,
        field,
        detail: detail.into(),
    }
}

fn agreement_required() -> Refusal {
    refuse(
        403,
        "agreement_required",
        None,
        "sign the deferred-debit agreement first",
    )
}

#[derive(Clone, Debug)]
pub enum Answer {
    /// A payment was made, declined, refunded or settled; `status` is the HTTP status.
    Payment {
        payment: Box<Payment>,
        status: u16,
    },
    Wallet,
    /// Issue a payment code (the caller signs it; nothing is written).
    MayIssueCode,
    Nothing,
}

#[derive(Clone, Debug)]
pub struct Decision {
    pub state: WalletSnapshot,
    /// `None` when nothing needs writing.
    pub commit: Option<WalletCommit>,
    pub answer: Answer,
    /// The answer's body, as stored for idempotent retries.
    pub body: Vec<u8>,
}

impl Decision {
    /// Nothing to do: the state as it was, nothing to write.
    fn nothing(state: &WalletSnapshot) -> Self {
        Decision {
            state: state.clone(),
            commit: None,
            answer: Answer::Nothing,
            body: Vec::new(),
        }
    }
}

struct Builder {
    state: WalletSnapshot,
    entries: Vec<LedgerEntry>,
    outbox: Vec<OutboxEvent>,
    payments: Vec<Payment>,
    /// The stored payments this decision changes, as it saw them.
    fences: Vec<PaymentFence>,
    subsidies: Vec<SubsidyId>,
    coupons: Vec<CouponId>,
    risk: Vec<(String, Timestamp)>,
    nonce: Option<Vec<u8>>,
    /// The decision took the card to be active; the store checks it at commit.
    require_active: bool,
    register: Option<RegisterRecord>,
    topup_reversal: Option<TopUpReversal>,
    now: Timestamp,
}

impl Builder {
    fn new(state: &WalletSnapshot, now: Timestamp) -> Self {
        Builder {
            state: state.clone(),
            entries: Vec::new(),
            outbox: Vec::new(),
            payments: Vec::new(),
            fences: Vec::new(),
            subsidies: Vec::new(),
            coupons: Vec::new(),
            risk: Vec::new(),
            nonce: None,
            require_active: false,
            register: None,
            topup_reversal: None,
            now,
        }
    }

    fn user(&self) -> UserId {
        self.state.wallet.user_id
    }

    fn entry(
        &mut self,
        tx: Uuid,
        account: Account,
        ref_id: Option<Uuid>,
        amount: i64,
        payment: Option<PaymentId>,
    ) {
        if amount != 0 {
            self.entries.push(LedgerEntry {
                tx_id: tx,
                account,
                ref_id,
                amount,
                payment_id: payment,
            });
        }
    }

    fn event(&mut self, topic: String, kind: &str, payload: serde_json::Value) {
        self.outbox.push(OutboxEvent {
            id: EventId::new(),
            topics: vec![topic],
            kind: kind.into(),
            payload: Payload::of(&payload),
        });
    }

    /// A payment event for the till (unless `till` is false), the cardholder, the merchant
    /// and the tenant dashboard; `refund` adds what one refund was (the payment carries
    /// only the sum), for merchant totals. Answers the event's payload.
    fn payment_event_with(
        &mut self,
        p: &Payment,
        kind: String,
        refund: Option<serde_json::Value>,
        till: bool,
    ) -> Payload {
        #[derive(serde::Serialize)]
        struct WithRefund {
            #[serde(flatten)]
            payment: PaymentView,
            refund: serde_json::Value,
        }
        let payment = PaymentView::from(p);
        let payload = match refund {
            None => Payload::of(&payment),
            Some(refund) => Payload::of(&WithRefund { payment, refund }),
        };
        let mut topics = Vec::with_capacity(4);
        if till {
            topics.push(format!("terminal:{}", p.terminal_id));
        }
        topics.extend([
            format!("user:{}", self.user()),
            format!("merchant:{}", p.merchant_id),
            "tenant".to_string(),
        ]);
        self.outbox.push(OutboxEvent {
            id: EventId::new(),
            topics,
            kind,
            payload: payload.clone(),
        });
        payload
    }

    /// The `payment.<status>` event of `p`; its payload is `p`'s view as JSON.
    fn payment_events(&mut self, p: &Payment) -> Payload {
        self.payment_event_with(p, format!("payment.{}", p.status.as_str()), None, true)
    }

    fn risk_event(&mut self, kind: &str, policy: &Policy) {
        let now = self.now;
        self.state.risk_events.push(now);
        self.risk.push((kind.to_string(), now));
        let w = &self.state.wallet;
        if !is_frozen(w, now) && counted(&self.state.risk_events, w, now) >= RISK_EVENTS_TO_FREEZE {
            freeze(&mut self.state.wallet, now, &policy.tz, false);
            let until = self.state.wallet.frozen_until;
            let user = self.user();
            self.event(
                format!("user:{user}"),
                "wallet.frozen",
                serde_json::json!({ "frozen_until": until }),
            );
            self.event(
                "tenant".into(),
                "wallet.frozen",
                serde_json::json!({ "user_id": user, "frozen_until": until }),
            );
        }
    }

    /// `p` as this decision found it, before it changes it: the store fences the commit
    /// on it.
    fn changes(&mut self, p: &Payment) {
        self.fences.push(PaymentFence::of(p));
    }

    fn set_payment(&mut self, p: Payment) {
        if let Some(i) = self.state.open_payments.iter().position(|o| o.id == p.id) {
            self.state.open_payments.remove(i);
        }
        if matches!(p.status, PaymentStatus::Accepted | PaymentStatus::Unsettled) {
            self.state.open_payments.push(p.clone());
        }
        self.payments.push(p);
    }

    fn finish(mut self, answer: Answer, body: Vec<u8>) -> Decision {
        self.state.wallet.version += 1;
        self.state.wallet.updated_at = self.now;
        let subsidies = self
            .state
            .subsidies
            .iter()
            .filter(|s| self.subsidies.contains(&s.id))
            .cloned()
            .collect();
        let coupons = self
            .state
            .coupons
            .iter()
            .filter(|c| self.coupons.contains(&c.id))
            .cloned()
            .collect();
        let commit = WalletCommit {
            wallet: self.state.wallet.clone(),
            subsidies,
            coupons,
            payments: self.payments,
            payment_fences: self.fences,
            entries: self.entries,
            used_nonce: self.nonce,
            risk_events: self.risk,
            outbox: self.outbox,
            request: None,
            register: self.register,
            topup_reversal: self.topup_reversal,
            at: self.now,
            require_active: self.require_active,
        };
        Decision {
            state: self.state,
            commit: Some(commit),
            answer,
            body,
        }
    }
}

fn wallet_answer(b: Builder) -> Decision {
    let body = to_json_bytes(&WalletView::of(&b.state, b.now));
    b.finish(Answer::Wallet, body)
}

/// Records `p` as decided (its event, the wallet's open payments) and answers with it.
/// The answer's body is the event's payload, the same view serialized once.
fn payment_done(mut b: Builder, p: Payment, status: u16) -> Decision {
    let view = b.payment_events(&p);
    b.set_payment(p.clone());
    payment_answer(b, p, status, view.as_str().as_bytes().to_vec())
}

fn payment_answer(b: Builder, p: Payment, status: u16, body: Vec<u8>) -> Decision {
    b.finish(
        Answer::Payment {
            payment: Box::new(p),
            status,
        },
        body,
    )
}

/// Decides one operation on one wallet.
pub fn decide(
    state: &WalletSnapshot,
    op: &Op,
    policy: &Policy,
    now: Timestamp,
) -> Result<Decision, Refusal> {
    let mut b = Builder::new(state, now);
    let user = b.user();
    let tenant = state.wallet.tenant_id;
    match op {
        Op::Get => Ok(Decision {
            body: to_json_bytes(&WalletView::of(state, now)),
            state: state.clone(),
            commit: None,
            answer: Answer::Wallet,
        }),
        Op::IssueCode => {
            if is_frozen(&state.wallet, now) {
                return Err(refuse(403, "frozen", None, "the payment code is frozen"));
            }
            if policy.require_agreement && !state.wallet.agreement_signed {
                return Err(agreement_required());
            }
            Ok(Decision {
                state: state.clone(),
                commit: None,
                answer: Answer::MayIssueCode,
                body: Vec::new(),
            })
        }
        Op::Pay {
            payment_id,
            terminal_id,
            merchant,
            amount,
            code,
            card_active,
        } => {
            let mut p = Payment {
                id: *payment_id,
                tenant_id: tenant,
                user_id: Some(user),
                merchant_id: merchant.id,
                terminal_id: *terminal_id,
                amount: *amount,
                status: PaymentStatus::Declined,
                decline_reason: None,
                coupon_id: None,
                breakdown: Breakdown::default(),
                subsidy_parts: Vec::new(),
                refunded: Money::ZERO,
                created_at: now,
                updated_at: now,
            };
            let reason = match code {
                CodeCheck::Expired => {
                    b.risk_event("code_expired", policy);
                    Some(DeclineReason::CodeExpired)
                }
                CodeCheck::Valid { reused: true, .. } => {
                    b.risk_event("code_reused", policy);
                    Some(DeclineReason::CodeReused)
                }
                CodeCheck::Valid { .. } | CodeCheck::SignedIn => {
                    if let CodeCheck::Valid { nonce, .. } = code {
                        b.nonce = Some(nonce.clone());
                    } else if policy.require_agreement && !b.state.wallet.agreement_signed {
                        return Err(agreement_required());
                    }
                    b.require_active = *card_active;
                    let w = &b.state.wallet;
                    if !card_active {
                        Some(DeclineReason::CardInactive)
                    } else if is_frozen(w, now) {
                        Some(DeclineReason::Frozen)
                    } else if w.arrears.0 > 0 {
                        Some(DeclineReason::Arrears)
                    } else if *amount > merchant.single_limit {
                        Some(DeclineReason::OverLimit)
                    } else {
                        None
                    }
                }
            };
            if let Some(reason) = reason {
                p.decline_reason = Some(reason);
                return Ok(payment_done(b, p, 201));
            }
            let s = &b.state;
            let purse = Purse {
                coupons: &s.coupons,
                subsidies: &s.subsidies,
                balance: s.wallet.balance,
                deferred_allowed: s.wallet.agreement_signed,
            };
            let Some(f) = fund(*amount, merchant.id, &merchant.ancestors, purse, now) else {
                p.decline_reason = Some(DeclineReason::InsufficientFunds);
                return Ok(payment_done(b, p, 201));
            };
            let tx = payment_id.0;
            let pid = Some(*payment_id);
            b.entry(
                tx,
                Account::MerchantReceivable,
                Some(merchant.id.0),
                amount.0,
                pid,
            );
            if let Some((cid, used)) = f.coupon {
                if let Some(c) = b.state.coupons.iter_mut().find(|c| c.id == cid) {
                    c.used_payment = Some(*payment_id);
                }
                b.coupons.push(cid);
                b.entry(tx, Account::CouponFunding, None, -used.0, pid);
                p.coupon_id = Some(cid);
            }
            for (sid, take) in &f.subsidy_parts {
                if let Some(acct) = b.state.subsidies.iter_mut().find(|a| a.id == *sid) {
                    acct.balance = Money(acct.balance.0 - take.0);
                }
                b.subsidies.push(*sid);
                b.entry(tx, Account::Subsidy, Some(sid.0), -take.0, pid);
            }
            b.state.wallet.balance = Money(b.state.wallet.balance.0 - f.balance.0);
            b.entry(tx, Account::Cash, Some(user.0), -f.balance.0, pid);
            b.entry(tx, Account::ProviderClearing, None, -f.deferred.0, pid);
            p.breakdown = f.breakdown();
            p.subsidy_parts = f.subsidy_parts.clone();
            p.status = if f.deferred.0 > 0 {
                PaymentStatus::Accepted
            } else {
                PaymentStatus::Succeeded
            };
            Ok(payment_done(b, p, 201))
        }
        Op::TopUp {
            amount,
            reference,
            credited_by,
        } => {
            let balance = b
                .state
                .wallet
                .balance
                .checked_add(*amount)
                .filter(|m| m.fits_json())
                .ok_or_else(|| {
                    refuse(
                        422,
                        "invalid",
                        Some("amount"),
                        "the balance would exceed what a wallet may hold",
                    )
                })?;
            b.state.wallet.balance = balance;
            let tx = Uuid::now_v7();
            b.entry(tx, Account::Cash, Some(user.0), amount.0, None);
            b.entry(tx, Account::TopupClearing, None, -amount.0, None);
            b.register = Some(RegisterRecord {
                kind: RegisterKind::TopUp,
                id: tx,
                user_id: user,
                amount: *amount,
                reference: reference.clone(),
                by: credited_by.clone(),
            });
            b.event(
                format!("user:{user}"),
                "wallet.topped_up",
                serde_json::json!({ "amount": amount.0 }),
            );
            Ok(wallet_answer(b))
        }
        Op::Withdraw {
            amount,
            reference,
            paid_by,
        } => {
            let w = &b.state.wallet;
            if w.arrears.0 > 0 {
                return Err(refuse(
                    409,
                    "in_arrears",
                    None,
                    format!(
                        "{} fen is owed: it is repaid or written off first",
                        w.arrears.0
                    ),
                ));
            }
            let balance = w.balance;
            let amount = amount.unwrap_or(balance);
            if amount.0 < 1 || amount > balance {
                return Err(refuse(
                    409,
                    "insufficient_balance",
                    Some("amount"),
                    format!("the balance holds {} fen", balance.0),
                ));
            }
            b.state.wallet.balance = Money(balance.0 - amount.0);
            let tx = Uuid::now_v7();
            b.entry(tx, Account::Cash, Some(user.0), -amount.0, None);
            b.entry(tx, Account::WithdrawalClearing, None, amount.0, None);
            b.register = Some(RegisterRecord {
                kind: RegisterKind::Withdrawal,
                id: tx,
                user_id: user,
                amount,
                reference: reference.clone(),
                by: paid_by.clone(),
            });
            b.event(
                format!("user:{user}"),
                "wallet.withdrawn",
                serde_json::json!({ "amount": amount.0 }),
            );
            // The answer says what was paid out, so that a replay (a batch retried with
            // its key) still knows.
            let body = to_json_bytes(&WithdrawalView {
                id: tx,
                withdrawn: amount,
                wallet: WalletView::of(&b.state, b.now),
            });
            Ok(b.finish(Answer::Wallet, body))
        }
        Op::ReverseTopUp { topup, by, reason } => {
            if topup.user_id != user {
                return Err(refuse(404, "not_found", None, "no such top-up"));
            }
            if let Some(r) = &topup.reversal {
                return Err(refuse(
                    409,
                    "already_reversed",
                    None,
                    format!("the top-up was reversed at {} by {}", r.at, r.by),
                ));
            }
            let (amount, balance) = (topup.amount, b.state.wallet.balance);
            if amount > balance {
                return Err(refuse(
                    409,
                    "insufficient_balance",
                    None,
                    format!(
                        "the balance holds {} fen, less than the top-up's {}: what was spent \
                         cannot be taken back",
                        balance.0, amount.0
                    ),
                ));
            }
            b.state.wallet.balance = Money(balance.0 - amount.0);
            let tx = Uuid::now_v7();
            b.entry(tx, Account::Cash, Some(user.0), -amount.0, None);
            b.entry(tx, Account::TopupClearing, None, amount.0, None);
            b.topup_reversal = Some(TopUpReversal {
                topup_id: topup.id,
                reversal_id: tx,
                by: by.clone(),
                reason: reason.clone(),
            });
            b.event(
                format!("user:{user}"),
                "wallet.topup_reversed",
                serde_json::json!({ "amount": amount.0, "topup_id": topup.id }),
            );
            let body = to_json_bytes(&TopUpReversalView {
                topup_id: topup.id,
                reversal_id: tx,
                reversed: amount,
                wallet: WalletView::of(&b.state, b.now),
            });
            Ok(b.finish(Answer::Wallet, body))
        }
        Op::AddCoupon { coupon } => {
            b.coupons.push(coupon.id);
            b.state.coupons.push(coupon.clone());
            Ok(wallet_answer(b))
        }
        Op::SignAgreement => {
            b.state.wallet.agreement_signed = true;
            Ok(wallet_answer(b))
        }
        Op::Freeze => {
            if !is_frozen(&b.state.wallet, now) {
                freeze(&mut b.state.wallet, now, &policy.tz, true);
                b.event(
                    format!("user:{user}"),
                    "wallet.frozen",
                    serde_json::json!({ "frozen_until": null }),
                );
                b.event(
                    "tenant".into(),
                    "wallet.frozen",
                    serde_json::json!({ "user_id": user, "frozen_until": null }),
                );
            }
            Ok(wallet_answer(b))
        }
        Op::Unfreeze => {
            if b.state.wallet.frozen {
                unfreeze(&mut b.state.wallet, now);
                b.event(
                    format!("user:{user}"),
                    "wallet.unfrozen",
                    serde_json::json!({}),
                );
                b.event(
                    "tenant".into(),
                    "wallet.unfrozen",
                    serde_json::json!({ "user_id": user }),
                );
            }
            Ok(wallet_answer(b))
        }
        Op::Refund { payment, amount } => refund(b, payment, *amount, policy),
        Op::DeferredResult { payment_id, ok } => {
            let Some(mut p) = b
                .state
                .open_payments
                .iter()
                .find(|p| p.id == *payment_id && p.status == PaymentStatus::Accepted)
                .cloned()
            else {
                // Already settled (a duplicate provider answer): nothing to do.
                return Ok(Decision::nothing(state));
            };
            b.changes(&p);
            p.updated_at = now;
            if *ok {
                p.status = PaymentStatus::Succeeded;
            } else {
                let owed = p.breakdown.deferred;
                p.status = PaymentStatus::Unsettled;
                b.state.wallet.arrears = Money(b.state.wallet.arrears.0 + owed.0);
                let tx = Uuid::now_v7();
                b.entry(tx, Account::ProviderClearing, None, owed.0, Some(p.id));
                b.entry(tx, Account::Arrears, Some(user.0), -owed.0, Some(p.id));
            }
            Ok(payment_done(b, p, 200))
        }
        Op::Repay => {
            let owed = b.state.wallet.arrears;
            if owed.0 == 0 {
                return Err(refuse(409, "no_arrears", None, "nothing is owed"));
            }
            let tx = Uuid::now_v7();
            b.entry(tx, Account::Arrears, Some(user.0), owed.0, None);
            b.entry(tx, Account::RepaymentClearing, None, -owed.0, None);
            b.state.wallet.arrears = Money::ZERO;
            let settled: Vec<Payment> = b
                .state
                .open_payments
                .iter()
                .filter(|p| p.status == PaymentStatus::Unsettled)
                .cloned()
                .collect();
            for mut p in settled {
                b.changes(&p);
                p.status = PaymentStatus::Succeeded;
                p.updated_at = now;
                b.payment_events(&p);
                b.set_payment(p);
            }
            b.event(
                format!("user:{user}"),
                "arrears.repaid",
                serde_json::json!({ "amount": owed.0 }),
            );
            Ok(wallet_answer(b))
        }
        Op::WriteOff { before } => {
            let due: Vec<Payment> = b
                .state
                .open_payments
                .iter()
                .filter(|p| p.status == PaymentStatus::Unsettled && p.updated_at < *before)
                .cloned()
                .collect();
            if due.is_empty() {
                return Ok(Decision::nothing(state));
            }
            let tx = Uuid::now_v7();
            let mut total = 0;
            for mut p in due {
                let owed = p.breakdown.deferred.0;
                total += owed;
                b.entry(tx, Account::Arrears, Some(user.0), owed, Some(p.id));
                b.entry(tx, Account::ArrearsWrittenOff, None, -owed, Some(p.id));
                b.changes(&p);
                p.status = PaymentStatus::WrittenOff;
                p.updated_at = now;
                // Not to the till: a write-off at midnight is no receipt for its screen.
                b.payment_event_with(&p, "payment.written_off".into(), None, false);
                b.set_payment(p);
            }
            b.state.wallet.arrears = Money(b.state.wallet.arrears.0 - total);
            let left = b.state.wallet.arrears.0;
            b.event(
                format!("user:{user}"),
                "arrears.written_off",
                serde_json::json!({ "amount": total, "arrears": left }),
            );
            b.event(
                "tenant".into(),
                "arrears.written_off",
                serde_json::json!({ "user_id": user, "amount": total, "arrears": left }),
            );
            Ok(wallet_answer(b))
        }
        Op::Remind { today } => {
            let w = &b.state.wallet;
            if w.arrears.0 == 0 || w.reminded_on.as_deref() == Some(today.as_str()) {
                return Ok(Decision::nothing(state));
            }
            let owed = w.arrears.0;
            b.state.wallet.reminded_on = Some(today.clone());
            b.event(
                format!("user:{user}"),
                "arrears.reminder",
                serde_json::json!({ "arrears": owed, "date": today }),
            );
            Ok(wallet_answer(b))
        }
    }
}

/// A share of a payment, in the order refunds give money back (the reverse of the
/// deduction order): deferred debit, cash, subsidies (last used first), coupon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Share {
    Deferred,
    Cash,
    Subsidy(SubsidyId),
    Coupon,
}

fn shares(p: &Payment) -> Vec<(Share, i64)> {
    let mut out = vec![
        (Share::Deferred, p.breakdown.deferred.0),
        (Share::Cash, p.breakdown.balance.0),
    ];
    out.extend(
        p.subsidy_parts
            .iter()
            .rev()
            .map(|(id, m)| (Share::Subsidy(*id), m.0)),
    );
    out.push((Share::Coupon, p.breakdown.coupon.0));
    out.retain(|(_, m)| *m > 0);
    out
}

fn refund(
    mut b: Builder,
    payment: &Payment,
    amount: Option<Money>,
    policy: &Policy,
) -> Result<Decision, Refusal> {
    let now = b.now;
    let user = b.user();
    if payment.user_id != Some(user) {
        return Err(refuse(404, "not_found", None, "no such payment"));
    }
    if !matches!(
        payment.status,
        PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded
    ) {
        return Err(refuse(
            409,
            "not_refundable",
            None,
            format!("a {} payment cannot be refunded", payment.status.as_str()),
        ));
    }
    let refundable = payment.amount.0 - payment.refunded.0;
    let r = amount.map(|a| a.0).unwrap_or(refundable);
    if r < 1 || r > refundable {
        return Err(refuse(
            422,
            "invalid",
            Some("amount"),
            format!("1 to {refundable} fen can still be refunded"),
        ));
    }
    // Walk the shares in refund order, skipping what earlier refunds already returned.
    let mut skip = payment.refunded.0;
    let mut left = r;
    let tx = Uuid::now_v7();
    let pid = Some(payment.id);
    b.entry(
        tx,
        Account::MerchantReceivable,
        Some(payment.merchant_id.0),
        -r,
        pid,
    );
    for (share, size) in shares(payment) {
        let already = skip.min(size);
        skip -= already;
        let take = (size - already).min(left);
        if take == 0 {
            continue;
        }
        left -= take;
        let expired_to = |b: &mut Builder, funding: Account| {
            if policy.refund_expired_to_cash {
                b.state.wallet.balance = Money(b.state.wallet.balance.0 + take);
                b.entry(tx, Account::Cash, Some(user.0), take, pid);
            } else {
                b.entry(tx, funding, None, take, pid);
            }
        };
        match share {
            Share::Deferred => b.entry(tx, Account::ProviderClearing, None, take, pid),
            Share::Cash => {
                b.state.wallet.balance = Money(b.state.wallet.balance.0 + take);
                b.entry(tx, Account::Cash, Some(user.0), take, pid);
            }
            Share::Subsidy(sid) => {
                let live = b
                    .state
                    .subsidies
                    .iter()
                    .position(|a| a.id == sid && a.expires_at.is_none_or(|e| now < e));
                match live {
                    Some(i) => {
                        b.state.subsidies[i].balance = Money(b.state.subsidies[i].balance.0 + take);
                        b.subsidies.push(sid);
                        b.entry(tx, Account::Subsidy, Some(sid.0), take, pid);
                    }
                    None => expired_to(&mut b, Account::SubsidyFunding),
                }
            }
            Share::Coupon => {
                let whole = take == size && already == 0;
                let live = payment.coupon_id.and_then(|cid| {
                    b.state
                        .coupons
                        .iter()
                        .position(|c| c.id == cid && now < c.expires_at)
                });
                match (whole, live) {
                    (true, Some(i)) => {
                        // The coupon comes back, unused; its funding is returned.
                        b.state.coupons[i].used_payment = None;
                        let cid = b.state.coupons[i].id;
                        b.coupons.push(cid);
                        b.entry(tx, Account::CouponFunding, None, take, pid);
                    }
                    (true, None) => expired_to(&mut b, Account::CouponFunding),
                    (false, _) => b.entry(tx, Account::CouponFunding, None, take, pid),
                }
            }
        }
    }
    b.changes(payment);
    let mut p = payment.clone();
    p.refunded = Money(payment.refunded.0 + r);
    p.status = if p.refunded == p.amount {
        PaymentStatus::Refunded
    } else {
        PaymentStatus::PartiallyRefunded
    };
    p.updated_at = now;
    b.payment_event_with(
        &p,
        "payment.refunded".into(),
        Some(serde_json::json!({"id": tx, "amount": r, "at": now})),
        true,
    );
    b.payments.push(p.clone());
    let body = to_json_bytes(&PaymentView::from(&p));
    Ok(payment_answer(b, p, 201, body))
}
