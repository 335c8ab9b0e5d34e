//! Property test of the wallet's money rules. Random runs of 10,000 steps — payments,
//! top-ups, refunds, subsidy grants, coupons, freezes, provider answers, repayments,
//! month-end write-offs and replayed requests — go through `decide`, and their commits
//! into an in-memory ledger.
//! After every step:
//! - the ledger sums to zero, and so does every movement;
//! - the cash balance, each subsidy account and the arrears equal their entries, and none
//!   is negative; the arrears are what the unsettled payments deferred;
//! - a write-off leaves no payment unsettled that turned so before its cut-off;
//! - what merchants are owed equals what their payments kept after refunds;
//! - a payment's breakdown is what an independent reference of the deduction order says;
//! - a declined payment, a refused operation or a replay moves no money.
//!
//! A second run sends the same kind of steps through the real store as well (SQLite, and
//! PostgreSQL when `ONECARD_DATABASE_URL` is set): every commit goes through
//! `commit_wallets` (fenced by version), grants through the store's subsidy-rule approval,
//! and after every step the stored wallet equals the model's; every 500 steps and at the
//! end the store's own ledger check passes with as many entries as the model wrote.

use std::collections::{HashMap, HashSet};

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use onecard_actors::wallet::decide::{
    decide, Answer, CodeCheck, Decision, MerchantInfo, Op, Policy,
};
use onecard_actors::wire::PaymentView;
use onecard_schema::ids::*;
use onecard_schema::money::Money;
use onecard_schema::wallet::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Pay {
        amount: i64,
        merchant: usize,
        code: u8,
    },
    TopUp {
        amount: i64,
    },
    /// Pays out cash: `amount`, or the whole balance.
    Withdraw {
        amount: Option<i64>,
    },
    Refund {
        pick: usize,
        amount: Option<i64>,
    },
    Grant {
        amount: i64,
        expires_h: Option<i64>,
        merchant: Option<usize>,
    },
    Coupon {
        discount: i64,
        threshold: i64,
        expires_h: i64,
        merchant: Option<usize>,
    },
    Freeze,
    Unfreeze,
    Agreement,
    Provider {
        pick: usize,
        ok: bool,
    },
    Repay,
    /// The month-end cut-off, `hours` ago.
    WriteOff {
        hours: i64,
    },
    Wait {
        minutes: i64,
    },
}

/// Top-ups are small beside payments, so that cash runs out and deferred debits, arrears
/// and write-offs happen (a few hundred deferred debits a run); one code in ten is reused
/// or expired, so that freezes happen without blocking most payments.
fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1..3_000i64, 0..3usize, 0..20u8).prop_map(|(amount, merchant, code)| Step::Pay { amount, merchant, code }),
        3 => (1..500i64).prop_map(|amount| Step::TopUp { amount }),
        1 => proptest::option::of(1..400i64).prop_map(|amount| Step::Withdraw { amount }),
        2 => (any::<usize>(), proptest::option::of(1..1_500i64)).prop_map(|(pick, amount)| Step::Refund { pick, amount }),
        1 => (1..1_000i64, proptest::option::of(1..96i64), proptest::option::of(0..3usize))
            .prop_map(|(amount, expires_h, merchant)| Step::Grant { amount, expires_h, merchant }),
        1 => (1..800i64, 0..2_000i64, 1..96i64, proptest::option::of(0..3usize))
            .prop_map(|(discount, threshold, expires_h, merchant)| Step::Coupon { discount, threshold, expires_h, merchant }),
        1 => Just(Step::Freeze),
        2 => Just(Step::Unfreeze),
        1 => Just(Step::Agreement),
        2 => (any::<usize>(), proptest::bool::weighted(0.7)).prop_map(|(pick, ok)| Step::Provider { pick, ok }),
        1 => Just(Step::Repay),
        1 => (0..24i64).prop_map(|hours| Step::WriteOff { hours }),
        2 => (0..600i64).prop_map(|minutes| Step::Wait { minutes }),
    ]
}

struct World {
    snap: WalletSnapshot,
    /// Entries written, and their running sums per account and per movement.
    entries: usize,
    total: i64,
    sums: HashMap<(Account, Option<uuid::Uuid>), i64>,
    by_tx: HashMap<uuid::Uuid, i64>,
    /// Per merchant: what its payments kept after refunds.
    kept: HashMap<MerchantId, i64>,
    payments: HashMap<PaymentId, Payment>,
    order: Vec<PaymentId>,
    used: Vec<Vec<u8>>,
    used_set: HashSet<Vec<u8>>,
    merchants: [MerchantInfo; 3],
    policy: Policy,
    now: Timestamp,
    nonce: u64,
    terminal: TerminalId,
    store: Option<StoreCtx>,
    steps: usize,
}

/// The real store behind a run, and what it needs to answer.
struct StoreCtx {
    store: std::sync::Arc<dyn onecard_schema::Store>,
    rt: tokio::runtime::Runtime,
    admin: AdminId,
    _dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let (root, child, other) = (MerchantId::new(), MerchantId::new(), MerchantId::new());
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        World {
            snap: WalletSnapshot {
                wallet: WalletRow::empty(TenantId::new(), UserId::new(), now),
                subsidies: vec![],
                coupons: vec![],
                risk_events: vec![],
                open_payments: vec![],
            },
            entries: 0,
            total: 0,
            sums: HashMap::new(),
            by_tx: HashMap::new(),
            kept: HashMap::new(),
            payments: HashMap::new(),
            order: vec![],
            used: vec![],
            used_set: HashSet::new(),
            merchants: [
                MerchantInfo {
                    id: root,
                    single_limit: Money(2_500),
                    ancestors: vec![],
                },
                MerchantInfo {
                    id: child,
                    single_limit: Money(2_500),
                    ancestors: vec![root],
                },
                MerchantInfo {
                    id: other,
                    single_limit: Money(2_500),
                    ancestors: vec![],
                },
            ],
            policy: Policy {
                tz: TimeZone::get("Asia/Shanghai").unwrap(),
                require_agreement: false,
                refund_expired_to_cash: false,
            },
            now,
            nonce: 0,
            terminal: TerminalId(uuid::Uuid::nil()),
            store: None,
            steps: 0,
        }
    }

    /// A world whose tenant, cardholder, merchants and till exist in a fresh store.
    fn with_store(url: Option<String>) -> Self {
        use onecard_schema::model::*;
        let mut w = World::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("m.db").display()));
        let store = rt.block_on(onecard_schema::open(&url, 2)).unwrap();
        let tenant = w.snap.wallet.tenant_id;
        let user = w.snap.wallet.user_id;
        let admin = AdminId::new();
        let audit = |action: &'static str| Audit {
            tenant_id: Some(tenant),
            actor: Actor::Root,
            action,
            id: AuditId::new(),
            target_type: "model",
            target_id: String::new(),
            detail: serde_json::json!({}),
            request_id: String::new(),
            at: w.now,
        };
        rt.block_on(async {
            store
                .create_tenant(
                    Tenant {
                        id: tenant,
                        name: "Model".into(),
                        kind: TenantKind::University,
                        edition: Edition::Standard,
                        timezone: "Asia/Shanghai".into(),
                        settings: TenantSettings::default(),
                        created_at: w.now,
                        group_id: None,
                    },
                    admin,
                    NewToken {
                        hash: *uuid::Uuid::new_v4()
                            .as_bytes()
                            .repeat(2)
                            .first_chunk::<32>()
                            .unwrap(),
                        kind: TokenKind::Admin,
                        tenant_id: Some(tenant),
                        subject_id: Some(admin.0),
                        created_at: w.now,
                    },
                    audit("tenant.create"),
                )
                .await
                .unwrap();
            store
                .create_user(
                    tenant,
                    NewUser {
                        id: user,
                        name: "Model".into(),
                        number: "M1".into(),
                        phone: None,
                        id_number: None,
                        identity: None,
                        department_ids: vec![],
                        tag_ids: vec![],
                    },
                    w.now,
                    audit("user.create"),
                )
                .await
                .unwrap();
            for m in &w.merchants {
                store
                    .create_merchant(
                        tenant,
                        Merchant {
                            id: m.id,
                            parent_id: m.ancestors.first().copied(),
                            name: "M".into(),
                            number: m.id.to_string(),
                            single_limit: m.single_limit,
                            depth: 1 + m.ancestors.len() as u8,
                            created_at: w.now,
                        },
                        audit("merchant.create"),
                    )
                    .await
                    .unwrap();
            }
            let terminal = TerminalId::new();
            store
                .create_terminal(
                    tenant,
                    Terminal {
                        id: terminal,
                        merchant_id: w.merchants[0].id,
                        name: "T".into(),
                        created_at: w.now,
                        collection: None,
                        retired_at: None,
                    },
                    NewToken {
                        hash: *uuid::Uuid::new_v4()
                            .as_bytes()
                            .repeat(2)
                            .first_chunk::<32>()
                            .unwrap(),
                        kind: TokenKind::Terminal,
                        tenant_id: Some(tenant),
                        subject_id: Some(terminal.0),
                        created_at: w.now,
                    },
                    audit("terminal.create"),
                )
                .await
                .unwrap();
            w.terminal = terminal;
        });
        w.store = Some(StoreCtx {
            store,
            rt,
            admin,
            _dir: dir,
        });
        w
    }

    /// What approving a subsidy rule for this cardholder does, through the store.
    fn grant_in_store(&mut self, amount: i64, expires_h: Option<i64>, merchant: Option<usize>) {
        let ctx = self.store.as_ref().expect("a store");
        let tenant = self.snap.wallet.tenant_id;
        let user = self.snap.wallet.user_id;
        let rule = SubsidyRule {
            id: SubsidyRuleId::new(),
            name: "grant".into(),
            amount: Money(amount),
            targets: SubsidyTargets {
                user_ids: vec![user],
                department_ids: vec![],
                tag_ids: vec![],
                identities: vec![],
            },
            merchant_ids: merchant
                .map(|m| vec![self.merchants[m].id])
                .unwrap_or_default(),
            expires_at: expires_h.map(|h| self.now + SignedDuration::from_hours(h)),
            status: "pending".into(),
            created_by: ctx.admin,
            approved_by: None,
            credited_users: 0,
            created_at: self.now,
            approved_at: None,
            rejected_by: None,
            rejected_at: None,
            reject_reason: None,
        };
        let audit = |action: &'static str| onecard_schema::model::Audit {
            tenant_id: Some(tenant),
            actor: onecard_schema::model::Actor::Root,
            action,
            id: AuditId::new(),
            target_type: "model",
            target_id: String::new(),
            detail: serde_json::json!({}),
            request_id: String::new(),
            at: self.now,
        };
        let id = rule.id;
        let loaded = ctx.rt.block_on(async {
            ctx.store
                .create_subsidy_rule(tenant, rule, audit("subsidy.create"))
                .await
                .unwrap();
            let n = ctx
                .store
                .approve_subsidy_rule(
                    tenant,
                    id,
                    AdminId::new(),
                    vec![user],
                    self.now,
                    audit("subsidy.approve"),
                )
                .await
                .unwrap();
            assert_eq!(n, 1);
            ctx.store.load_wallet(tenant, user, self.now).await.unwrap()
        });
        let new: Vec<SubsidyAccount> = loaded
            .subsidies
            .iter()
            .filter(|a| !self.snap.subsidies.iter().any(|b| b.id == a.id))
            .cloned()
            .collect();
        assert_eq!(new.len(), 1, "one account credited");
        let tx = uuid::Uuid::now_v7();
        self.post(Account::Subsidy, Some(new[0].id.0), amount, tx);
        self.post(Account::SubsidyFunding, None, -amount, tx);
        assert_eq!(loaded.wallet.version, self.snap.wallet.version + 1);
        self.snap.wallet.version = loaded.wallet.version;
        self.snap.subsidies.extend(new);
    }

    /// The stored wallet equals the model's; now and then, the store's ledger check.
    fn check_store(&mut self) {
        self.steps += 1;
        let Some(ctx) = &self.store else { return };
        let w = &self.snap.wallet;
        let stored = ctx
            .rt
            .block_on(ctx.store.load_wallet(w.tenant_id, w.user_id, self.now))
            .unwrap();
        assert_eq!(
            (
                stored.wallet.balance,
                stored.wallet.arrears,
                stored.wallet.version,
                stored.wallet.frozen
            ),
            (w.balance, w.arrears, w.version, w.frozen),
            "the stored wallet equals the model's"
        );
        // What the arrears loop reads: this wallet, while it owes, with its last reminder
        // and its oldest unsettled payment's time.
        let in_arrears = ctx.rt.block_on(ctx.store.wallets_in_arrears()).unwrap();
        let owed_since = self
            .payments
            .values()
            .filter(|p| p.status == PaymentStatus::Unsettled)
            .map(|p| p.updated_at)
            .min();
        let expected = (w.arrears.0 > 0).then(|| InArrears {
            tenant: w.tenant_id,
            user: w.user_id,
            reminded_on: w.reminded_on.clone(),
            owed_since,
        });
        assert_eq!(in_arrears.first(), expected.as_ref(), "wallets in arrears");
        let live = |a: &SubsidyAccount| a.expires_at.is_none_or(|e| self.now < e);
        for a in self.snap.subsidies.iter().filter(|a| live(a)) {
            let kept = stored
                .subsidies
                .iter()
                .find(|b| b.id == a.id)
                .map_or(0, |b| b.balance.0);
            assert_eq!(kept, a.balance.0, "stored subsidy account {}", a.id);
        }
        // An expired account is not loaded; what it still holds is checked against its
        // entries by the store's ledger check, below.
        assert!(
            stored.subsidies.iter().all(live),
            "a wallet loads live subsidy accounts only"
        );
        if self.steps.is_multiple_of(500) {
            self.check_stored_ledger();
        }
    }

    /// The store's ledger check, from its seal and from every entry, against the model.
    /// Every other check seals what was written since the last seal first, so the seal
    /// moves at random points of the run.
    fn check_stored_ledger(&self) {
        let Some(ctx) = &self.store else { return };
        let tenant = self.snap.wallet.tenant_id;
        let sealing = (self.steps / 500) % 2 == 1;
        let (check, full) = ctx.rt.block_on(async {
            if sealing {
                ctx.store.seal_ledger(self.now).await.unwrap();
            }
            let check = ctx.store.ledger_check(tenant).await.unwrap();
            let full = ctx.store.ledger_check_full(tenant).await.unwrap();
            (check, full)
        });
        if sealing {
            assert_eq!(
                check.sealed_entries, check.entries,
                "the seal took every entry"
            );
        }
        assert!(check.balanced, "the stored ledger balances");
        assert!(check.mismatched_wallets.is_empty(), "{check:?}");
        assert!(
            check.mismatched_registers.is_empty() && full.mismatched_registers.is_empty(),
            "the registers agree with the ledger: {check:?} {full:?}"
        );
        assert_eq!(
            check.entries as usize, self.entries,
            "as many entries as the model"
        );
        assert_eq!(full.sealed_entries, 0, "a full check reads every entry");
        for (kind, account, sign) in [
            (RegisterKind::Withdrawal, Account::WithdrawalClearing, 1),
            (RegisterKind::TopUp, Account::TopupClearing, -1),
        ] {
            let mut registered = 0;
            let mut after = None;
            loop {
                let filter = RegisterFilter::default();
                let page = onecard_schema::model::PageReq { after, limit: 500 };
                let page = ctx
                    .rt
                    .block_on(ctx.store.list_register(tenant, kind, filter, page))
                    .unwrap();
                registered += page.items.iter().map(|w| w.amount.0).sum::<i64>();
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(
                registered,
                sign * self.sums.get(&(account, None)).copied().unwrap_or(0),
                "the {kind:?} register holds what the ledger moved"
            );
        }
        assert_eq!(
            (check.balanced, check.entries, &check.mismatched_wallets),
            (full.balanced, full.entries, &full.mismatched_wallets),
            "the check from the seal says what the full check says"
        );
    }

    fn apply(&mut self, commit: &WalletCommit) {
        assert_eq!(
            commit.wallet.version,
            self.snap.wallet.version + 1,
            "each commit moves the version by one"
        );
        for e in &commit.entries {
            self.post(e.account, e.ref_id, e.amount, e.tx_id);
        }
        let kept = |p: &Payment| {
            if p.status == PaymentStatus::Declined {
                0
            } else {
                p.amount.0 - p.refunded.0
            }
        };
        for p in &commit.payments {
            let old = self.payments.get(&p.id).map(kept).unwrap_or(0);
            *self.kept.entry(p.merchant_id).or_default() += kept(p) - old;
            if !self.payments.contains_key(&p.id) {
                self.order.push(p.id);
            }
            self.payments.insert(p.id, p.clone());
        }
        if let Some(n) = &commit.used_nonce {
            assert!(self.used_set.insert(n.clone()), "a nonce is stored once");
            self.used.push(n.clone());
        }
    }

    fn post(&mut self, account: Account, ref_id: Option<uuid::Uuid>, amount: i64, tx: uuid::Uuid) {
        self.entries += 1;
        self.total += amount;
        *self.sums.entry((account, ref_id)).or_default() += amount;
        *self.by_tx.entry(tx).or_default() += amount;
    }

    fn run(&mut self, s: &Step) {
        let before = self.snap.clone();
        let before_ledger = self.entries;
        let op = match s {
            Step::Wait { minutes } => {
                self.now += SignedDuration::from_mins(*minutes);
                return;
            }
            Step::Grant {
                amount,
                expires_h,
                merchant,
            } => {
                if self.store.is_some() {
                    self.grant_in_store(*amount, *expires_h, *merchant);
                    self.check();
                    self.check_store();
                    return;
                }
                // What approving a subsidy rule does, in the store, outside the actor.
                let id = SubsidyId::new();
                self.snap.subsidies.push(SubsidyAccount {
                    id,
                    user_id: self.snap.wallet.user_id,
                    rule_id: None,
                    name: "grant".into(),
                    balance: Money(*amount),
                    merchant_ids: merchant
                        .map(|m| vec![self.merchants[m].id])
                        .unwrap_or_default(),
                    expires_at: expires_h.map(|h| self.now + SignedDuration::from_hours(h)),
                    created_at: self.now,
                });
                let tx = uuid::Uuid::now_v7();
                self.post(Account::Subsidy, Some(id.0), *amount, tx);
                self.post(Account::SubsidyFunding, None, -amount, tx);
                self.snap.wallet.version += 1;
                return;
            }
            Step::Pay {
                amount,
                merchant,
                code,
            } => {
                let code = match code {
                    0 if !self.used.is_empty() => {
                        let n = self.used[(*amount as usize) % self.used.len()].clone();
                        CodeCheck::Valid {
                            nonce: n,
                            reused: true,
                        }
                    }
                    1 => CodeCheck::Expired,
                    // Paid at a collection code, signed in: no code to check.
                    2 => CodeCheck::SignedIn,
                    _ => {
                        self.nonce += 1;
                        CodeCheck::Valid {
                            nonce: self.nonce.to_be_bytes().to_vec(),
                            reused: false,
                        }
                    }
                };
                Op::Pay {
                    payment_id: PaymentId::new(),
                    terminal_id: self.terminal,
                    merchant: self.merchants[*merchant].clone(),
                    amount: Money(*amount),
                    code,
                    card_active: true,
                }
            }
            Step::TopUp { amount } => Op::TopUp {
                amount: Money(*amount),
                // Every other top-up carries a bank reference, each its own.
                reference: self
                    .steps
                    .is_multiple_of(2)
                    .then(|| format!("bank-{}", self.steps)),
                credited_by: "admin:model".into(),
            },
            Step::Withdraw { amount } => Op::Withdraw {
                amount: amount.map(Money),
                reference: Some(format!("model-{}", self.steps)),
                paid_by: "admin:model".into(),
            },
            Step::Refund { pick, amount } => {
                if self.order.is_empty() {
                    return;
                }
                let id = self.pick(*pick);
                Op::Refund {
                    payment: Box::new(self.payments[&id].clone()),
                    amount: amount.map(Money),
                }
            }
            Step::Coupon {
                discount,
                threshold,
                expires_h,
                merchant,
            } => Op::AddCoupon {
                coupon: Coupon {
                    id: CouponId::new(),
                    user_id: self.snap.wallet.user_id,
                    name: "c".into(),
                    discount: Money(*discount),
                    threshold: Money(*threshold),
                    merchant_ids: merchant
                        .map(|m| vec![self.merchants[m].id])
                        .unwrap_or_default(),
                    valid_from: self.now,
                    expires_at: self.now + SignedDuration::from_hours(*expires_h),
                    used_payment: None,
                    created_at: self.now,
                },
            },
            Step::Freeze => Op::Freeze,
            Step::Unfreeze => Op::Unfreeze,
            Step::Agreement => Op::SignAgreement,
            Step::Provider { pick, ok } => {
                let open: Vec<PaymentId> = self
                    .order
                    .iter()
                    .copied()
                    .filter(|p| self.payments[p].status == PaymentStatus::Accepted)
                    .collect();
                // Also re-deliver answers for settled payments: a replay must change nothing.
                let id = if open.is_empty() || pick % 3 == 0 {
                    if self.order.is_empty() {
                        return;
                    }
                    self.pick(*pick)
                } else {
                    open[pick % open.len()]
                };
                Op::DeferredResult {
                    payment_id: id,
                    ok: *ok,
                }
            }
            Step::Repay => Op::Repay,
            Step::WriteOff { hours } => Op::WriteOff {
                before: self.now - SignedDuration::from_hours(*hours),
            },
        };
        let expected_funding = if let Op::Pay {
            amount, merchant, ..
        } = &op
        {
            Some(reference_funding(&before, *amount, merchant, self.now))
        } else {
            None
        };
        match decide(&self.snap, &op, &self.policy, self.now) {
            Err(_) => {
                assert_eq!(self.entries, before_ledger);
                if let Op::Withdraw { amount, .. } = &op {
                    let wanted = amount.unwrap_or(before.wallet.balance);
                    assert!(
                        before.wallet.arrears.0 > 0
                            || wanted.0 < 1
                            || wanted > before.wallet.balance,
                        "a withdrawal is refused only while owing or past the balance"
                    );
                }
            }
            Ok(d) => {
                if let Some(c) = &d.commit {
                    assert_eq!(&c.wallet, &d.state.wallet);
                    self.apply(c);
                    if let Some(ctx) = &self.store {
                        let result = ctx.rt.block_on(ctx.store.commit_wallets(vec![c.clone()]));
                        assert_eq!(result, vec![Ok(())], "the store takes the commit");
                    }
                }
                if let Answer::Payment { payment, .. } = &d.answer {
                    assert_eq!(
                        d.body,
                        serde_json::to_vec(&PaymentView::from(&**payment)).unwrap(),
                        "the answer shows the payment as decided"
                    );
                }
                if let (Answer::Payment { payment, .. }, Some(expected)) =
                    (&d.answer, expected_funding)
                {
                    if payment.status == PaymentStatus::Declined {
                        assert_eq!(
                            d.state.wallet.balance, before.wallet.balance,
                            "a decline moves no money"
                        );
                        assert!(d.commit.as_ref().is_none_or(|c| c.entries.is_empty()));
                    } else {
                        assert_eq!(Some(payment.breakdown), expected, "deduction order");
                        assert_eq!(payment.breakdown.total(), Some(payment.amount));
                    }
                }
                if let Op::WriteOff { before: cut } = &op {
                    assert!(
                        !d.state
                            .open_payments
                            .iter()
                            .any(|p| p.status == PaymentStatus::Unsettled && p.updated_at < *cut),
                        "nothing owed from before the cut-off is left"
                    );
                    let written = before_ledger != self.entries;
                    assert_eq!(
                        written,
                        d.state.wallet.arrears < before.wallet.arrears,
                        "a write-off writes entries exactly when it lowers the arrears"
                    );
                }
                if let Op::TopUp {
                    amount, reference, ..
                } = &op
                {
                    let record = d.commit.as_ref().and_then(|c| c.register.as_ref());
                    assert_eq!(
                        record.map(|r| (r.kind, r.user_id, r.amount, &r.reference)),
                        Some((
                            RegisterKind::TopUp,
                            before.wallet.user_id,
                            *amount,
                            reference
                        )),
                        "the register's line is the top-up"
                    );
                }
                if let Op::Withdraw {
                    amount, reference, ..
                } = &op
                {
                    let wanted = amount.unwrap_or(before.wallet.balance);
                    assert_eq!(
                        before.wallet.arrears.0, 0,
                        "nothing is paid out while owing"
                    );
                    let record = d.commit.as_ref().and_then(|c| c.register.as_ref());
                    assert_eq!(
                        record.map(|r| (r.kind, r.user_id, r.amount, &r.reference)),
                        Some((
                            RegisterKind::Withdrawal,
                            before.wallet.user_id,
                            wanted,
                            reference
                        )),
                        "the register's line is the withdrawal"
                    );
                    assert_eq!(
                        d.state.wallet.balance.0,
                        before.wallet.balance.0 - wanted.0,
                        "a withdrawal takes what it says from cash, and only from cash"
                    );
                    assert_eq!(d.state.subsidies, before.subsidies);
                }
                if matches!(op, Op::DeferredResult { .. }) && d.commit.is_none() {
                    assert_eq!(
                        self.entries, before_ledger,
                        "a repeated provider answer changes nothing"
                    );
                }
                self.snap = d.state;
            }
        }
        self.check();
        self.check_store();
    }

    /// A payment of the run: half the time one of the last 16 (still refundable, most
    /// likely), otherwise any of them. `order` must not be empty.
    fn pick(&self, pick: usize) -> PaymentId {
        let n = self.order.len();
        if pick.is_multiple_of(2) {
            self.order[n - 1 - (pick / 2) % n.min(16)]
        } else {
            self.order[(pick / 2) % n]
        }
    }

    fn sum(&self, account: Account, id: Option<uuid::Uuid>) -> i64 {
        self.sums.get(&(account, id)).copied().unwrap_or(0)
    }

    fn check(&mut self) {
        assert_eq!(self.total, 0, "the ledger balances");
        // Movements finish within one commit, so none may be left open.
        self.by_tx.retain(|_, s| *s != 0);
        assert!(self.by_tx.is_empty(), "every movement balances");
        let w = &self.snap.wallet;
        assert!(w.balance.0 >= 0 && w.arrears.0 >= 0);
        assert_eq!(
            w.balance.0,
            self.sum(Account::Cash, Some(w.user_id.0)),
            "cash equals its entries"
        );
        assert_eq!(
            w.arrears.0,
            -self.sum(Account::Arrears, Some(w.user_id.0)),
            "arrears equal their entries"
        );
        let deferred: i64 = self
            .payments
            .values()
            .filter(|p| p.status == PaymentStatus::Unsettled)
            .map(|p| p.breakdown.deferred.0)
            .sum();
        assert_eq!(
            w.arrears.0, deferred,
            "arrears are the unsettled deferred debits"
        );
        assert_eq!(
            -self.sum(Account::ArrearsWrittenOff, None),
            self.payments
                .values()
                .filter(|p| p.status == PaymentStatus::WrittenOff)
                .map(|p| p.breakdown.deferred.0)
                .sum::<i64>(),
            "what was written off is what the written-off payments deferred"
        );
        for s in &self.snap.subsidies {
            assert!(s.balance.0 >= 0);
            assert_eq!(
                s.balance.0,
                self.sum(Account::Subsidy, Some(s.id.0)),
                "subsidy equals its entries"
            );
        }
        for m in &self.merchants {
            let kept = self.kept.get(&m.id).copied().unwrap_or(0);
            assert_eq!(
                self.sum(Account::MerchantReceivable, Some(m.id.0)),
                kept,
                "merchant receivable"
            );
        }
    }
}

/// The deduction order written independently: brute force over the wallet's contents.
fn reference_funding(
    s: &WalletSnapshot,
    amount: Money,
    m: &MerchantInfo,
    now: Timestamp,
) -> Option<Breakdown> {
    let allowed = |list: &[MerchantId]| {
        list.is_empty() || list.iter().any(|x| *x == m.id || m.ancestors.contains(x))
    };
    let mut left = amount.0;
    let mut eligible: Vec<&Coupon> = s
        .coupons
        .iter()
        .filter(|c| {
            c.used_payment.is_none()
                && c.valid_from <= now
                && now < c.expires_at
                && c.threshold <= amount
                && allowed(&c.merchant_ids)
        })
        .collect();
    eligible.sort_by_key(|c| (c.expires_at, -c.discount.0, c.created_at, c.id));
    let coupon = eligible
        .first()
        .map(|c| c.discount.0.min(left))
        .unwrap_or(0);
    left -= coupon;
    let mut subs: Vec<&SubsidyAccount> = s
        .subsidies
        .iter()
        .filter(|a| {
            a.balance.0 > 0 && a.expires_at.is_none_or(|e| now < e) && allowed(&a.merchant_ids)
        })
        .collect();
    subs.sort_by_key(|a| {
        (
            a.expires_at.map(|e| (0, e)).unwrap_or((1, Timestamp::MAX)),
            a.created_at,
            a.id,
        )
    });
    let mut subsidy = 0;
    for a in subs {
        let take = a.balance.0.min(left);
        subsidy += take;
        left -= take;
    }
    let balance = s.wallet.balance.0.min(left);
    left -= balance;
    if left > 0 && !s.wallet.agreement_signed {
        return None;
    }
    Some(Breakdown {
        coupon: Money(coupon),
        subsidy: Money(subsidy),
        balance: Money(balance),
        deferred: Money(left),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn ten_thousand_random_steps_keep_the_ledger_and_the_deduction_order(steps in proptest::collection::vec(step(), 10_000)) {
        let mut world = World::new();
        for s in &steps {
            world.run(s);
        }
        // The run did real work: money moved and payments were taken.
        prop_assert!(world.payments.len() > 100);
        prop_assert!(world.entries > 1_000);
        // And reached the end of the deduction order, and arrears, again and again. How
        // often varies from run to run: it hangs on when the agreement is signed, how long
        // arrears block payments and how long the code stays frozen. With top-ups of up to
        // 8.00 and admins unfreezing one step in 22 it was 37 to 254 in 40 runs, once 18
        // and once 1 in CI (the wallet frozen for most of that run, and cash left over);
        // with top-ups of up to 5.00 and an unfreeze one step in 11.5 (these weights),
        // 401 to 617 in 40 runs. The bar stays "several", not a typical count.
        let deferred = world.payments.values().filter(|p| p.breakdown.deferred.0 > 0).count();
        let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
        for p in world.payments.values() {
            *outcomes.entry(format!("{:?}/{:?}", p.status, p.decline_reason)).or_default() += 1;
        }
        prop_assert!(deferred > 5, "{} deferred debits; {:?}", deferred, outcomes);
        // And refunded payments all through the run, wholly and in part.
        let refunded = |s: PaymentStatus| world.payments.values().filter(|p| p.status == s).count();
        prop_assert!(refunded(PaymentStatus::Refunded) > 20);
        prop_assert!(refunded(PaymentStatus::PartiallyRefunded) > 20);
    }
}

/// PostgreSQL for the store run, in a database of its own, when configured.
fn postgres_url() -> Option<(String, String, String)> {
    let url = std::env::var("ONECARD_DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))?;
    let name = format!("onecard_model_{}", uuid::Uuid::new_v4().simple());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL");
        tokio::spawn(conn);
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
    });
    let base = url
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(url.clone());
    Some((format!("{base}/{name}"), url, name))
}

/// No PostgreSQL configured: a failure in CI, a loud warning elsewhere.
fn postgres_skipped(what: &str) {
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "CI=true but ONECARD_DATABASE_URL is not a postgres:// URL"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** WARNING: the PostgreSQL half of {what} is SKIPPED (ONECARD_DATABASE_URL unset). CI=true makes this a failure.\n"
    );
}

fn drop_database(admin_url: &str, name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if let Ok((c, conn)) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            let _ = c
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    });
}

/// Runs `run` on SQLite, then on PostgreSQL in a database of its own when configured (a
/// failure in CI when it is not); the database is dropped even when the run fails.
fn on_both_engines(what: &str, run: impl Fn(Option<String>) + std::panic::RefUnwindSafe) {
    run(None);
    match postgres_url() {
        Some((url, admin, name)) => {
            let outcome = std::panic::catch_unwind(|| run(Some(url)));
            drop_database(&admin, &name);
            if let Err(e) = outcome {
                std::panic::resume_unwind(e);
            }
        }
        None => postgres_skipped(what),
    }
}

fn store_run(steps: &[Step], url: Option<String>) {
    let mut world = World::with_store(url);
    for s in steps {
        world.run(s);
    }
    world.check_stored_ledger();
    assert!(world.payments.len() > 100);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1, max_shrink_iters: 16, ..ProptestConfig::default() })]

    #[test]
    fn ten_thousand_random_steps_through_the_store_keep_the_stored_ledger(steps in proptest::collection::vec(step(), 10_000)) {
        on_both_engines("the store run of the model test", |url| store_run(&steps, url));
    }
}

/// A wallet row written without its entries (as a bug or a hand edit would), then a
/// subsidy account likewise: the store's ledger check names the wallet each time, while
/// the entries themselves still balance.
fn tampered_run(url: Option<String>) {
    let mut world = World::with_store(url);
    world.run(&Step::TopUp { amount: 500 });
    world.run(&Step::Grant {
        amount: 300,
        expires_h: None,
        merchant: None,
    });
    world.check_stored_ledger();
    let user = world.snap.wallet.user_id;
    let ctx = world.store.as_ref().expect("a store");
    let bare = |wallet: WalletRow, subsidies: Vec<SubsidyAccount>| WalletCommit {
        wallet,
        subsidies,
        coupons: vec![],
        payments: vec![],
        payment_fences: vec![],
        entries: vec![],
        used_nonce: None,
        risk_events: vec![],
        outbox: vec![],
        request: None,
        register: None,
        topup_reversal: None,
        at: world.now,
        require_active: false,
    };
    let check = |commit: WalletCommit| {
        ctx.rt.block_on(async {
            let done = ctx.store.commit_wallets(vec![commit]).await;
            assert_eq!(done, vec![Ok(())]);
            ctx.store
                .ledger_check(world.snap.wallet.tenant_id)
                .await
                .unwrap()
        })
    };
    let mut wallet = world.snap.wallet.clone();
    wallet.version += 1;
    wallet.balance = Money(wallet.balance.0 + 1);
    let found = check(bare(wallet.clone(), vec![]));
    assert!(found.balanced, "the entries alone still balance");
    assert_eq!(
        found.mismatched_wallets,
        vec![user],
        "a balance off by one fen"
    );

    // Balance put right, a subsidy account off instead.
    wallet.version += 1;
    wallet.balance = world.snap.wallet.balance;
    let mut account = world.snap.subsidies[0].clone();
    account.balance = Money(account.balance.0 - 1);
    let found = check(bare(wallet.clone(), vec![account.clone()]));
    assert_eq!(
        found.mismatched_wallets,
        vec![user],
        "a subsidy account off"
    );

    wallet.version += 1;
    account.balance = world.snap.subsidies[0].balance;
    let found = check(bare(wallet.clone(), vec![account]));
    assert!(found.mismatched_wallets.is_empty(), "{found:?}");
    assert!(found.mismatched_registers.is_empty(), "{found:?}");

    // Sealed, the wallet off by one fen again: the check from the seal names it too.
    let tenant = world.snap.wallet.tenant_id;
    let seal = || ctx.rt.block_on(ctx.store.seal_ledger(world.now)).unwrap();
    assert!(seal() > 0, "the entries so far are sealed");
    wallet.version += 1;
    wallet.balance = Money(wallet.balance.0 - 1);
    let found = check(bare(wallet.clone(), vec![]));
    assert!(found.sealed_entries > 0 && found.balanced, "{found:?}");
    assert_eq!(
        found.mismatched_wallets,
        vec![user],
        "off by one after the seal"
    );
    wallet.version += 1;
    wallet.balance = world.snap.wallet.balance;
    assert!(check(bare(wallet.clone(), vec![]))
        .mismatched_wallets
        .is_empty());

    // A movement whose entries do not sum to zero: unbalanced before it is sealed, and
    // still after, from the seal alone, as the full check says.
    wallet.version += 1;
    let mut lopsided = bare(wallet, vec![]);
    lopsided.entries = vec![LedgerEntry {
        tx_id: uuid::Uuid::new_v4(),
        account: Account::TopupClearing,
        ref_id: None,
        amount: 1,
        payment_id: None,
    }];
    let found = check(lopsided);
    assert!(!found.balanced, "one fen out of nowhere: {found:?}");
    assert_eq!(
        found.mismatched_registers,
        ["topups"],
        "a top-up's entry without its line"
    );
    assert_eq!(seal(), 1, "the one new entry is sealed");
    let (found, full) = ctx.rt.block_on(async {
        (
            ctx.store.ledger_check(tenant).await.unwrap(),
            ctx.store.ledger_check_full(tenant).await.unwrap(),
        )
    });
    assert_eq!(found.sealed_entries, found.entries, "all sealed: {found:?}");
    assert!(!found.balanced && !full.balanced, "{found:?} {full:?}");
    assert!(found.mismatched_wallets.is_empty() && full.mismatched_wallets.is_empty());
    assert_eq!(seal(), 0, "nothing new to seal");

    // A payout's line without its entries: the withdrawal register is named too.
    let mut wallet = ctx
        .rt
        .block_on(ctx.store.load_wallet(tenant, user, world.now))
        .unwrap()
        .wallet;
    wallet.version += 1;
    let mut unbooked = bare(wallet, vec![]);
    unbooked.register = Some(RegisterRecord {
        kind: RegisterKind::Withdrawal,
        id: uuid::Uuid::now_v7(),
        user_id: user,
        amount: Money(5),
        reference: None,
        by: "admin:test".into(),
    });
    let found = check(unbooked);
    let full = ctx
        .rt
        .block_on(ctx.store.ledger_check_full(tenant))
        .unwrap();
    for check in [&found, &full] {
        assert_eq!(
            check.mismatched_registers,
            ["topups", "withdrawals"],
            "{check:?}"
        );
    }
}

#[test]
fn the_ledger_check_names_a_wallet_that_differs_from_its_entries() {
    on_both_engines("the ledger-check tamper test", tampered_run);
}

/// Two seals at once (two nodes' rounds, say) add each entry to the seal once, and the
/// check from the seal says what the full check says.
fn concurrent_seals_run(url: Option<String>) {
    let (world, _, _) = paid_in_store(url);
    let ctx = world.store.as_ref().expect("a store");
    let tenant = world.snap.wallet.tenant_id;
    let (a, b, check, full) = ctx.rt.block_on(async {
        let (a, b) = tokio::join!(
            ctx.store.seal_ledger(world.now),
            ctx.store.seal_ledger(world.now)
        );
        let check = ctx.store.ledger_check(tenant).await.unwrap();
        let full = ctx.store.ledger_check_full(tenant).await.unwrap();
        (a.unwrap(), b.unwrap(), check, full)
    });
    assert_eq!(
        a + b,
        world.entries as u64,
        "each entry sealed once ({a} + {b})"
    );
    assert_eq!(check.sealed_entries, check.entries, "{check:?}");
    assert_eq!(
        (check.balanced, check.entries, check.mismatched_wallets),
        (full.balanced, full.entries, full.mismatched_wallets)
    );
}

#[test]
fn two_seals_at_once_seal_each_entry_once() {
    on_both_engines("the concurrent seal test", concurrent_seals_run);
}

/// On PostgreSQL the seal's boundary needs a moment when no transaction writing entries
/// is open. With one open, the seal gives up within its short wait (payments queue behind
/// its lock request meanwhile) and leaves the entries to the next round.
#[test]
fn a_postgres_seal_leaves_the_entries_to_the_next_round_while_a_writer_is_open() {
    let Some((url, admin, name)) = postgres_url() else {
        return postgres_skipped("the seal's lock test");
    };
    let outcome = std::panic::catch_unwind(|| {
        let (world, _, _) = paid_in_store(Some(url.clone()));
        let ctx = world.store.as_ref().expect("a store");
        ctx.rt.block_on(async {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            c.batch_execute(
                "BEGIN; INSERT INTO ledger_entries (tenant_id, tx_id, account, amount, created_at) \
                 VALUES (gen_random_uuid(), gen_random_uuid(), 'topup_clearing', 0, now())",
            )
            .await
            .unwrap();
            let started = std::time::Instant::now();
            let sealed = ctx.store.seal_ledger(world.now).await.unwrap();
            assert_eq!(sealed, 0, "no seal while a writer of entries is open");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(2),
                "it did not wait for the writer: {:?}",
                started.elapsed()
            );
            c.batch_execute("ROLLBACK").await.unwrap();
            let sealed = ctx.store.seal_ledger(world.now).await.unwrap();
            assert_eq!(sealed, world.entries as u64, "the next round seals them");
        });
    });
    drop_database(&admin, &name);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}

/// A world on a store whose wallet (500 topped up) paid 300: the payment, as stored.
fn paid_in_store(url: Option<String>) -> (World, PaymentId, Payment) {
    let mut world = World::with_store(url);
    world.run(&Step::TopUp { amount: 500 });
    world.run(&Step::Pay {
        amount: 300,
        merchant: 0,
        code: 9,
    });
    let id = *world.order.last().expect("a payment");
    let paid = world.payments[&id].clone();
    assert_eq!(paid.status, PaymentStatus::Succeeded);
    (world, id, paid)
}

#[test]
fn the_store_refuses_a_refund_beyond_the_payment_whatever_a_wallet_decided() {
    on_both_engines("the refund guard test", over_refund_run);
}

/// A refund commit that would give back more than the payment took (a wallet's bug, say)
/// fails alone in the store (`CHECK (refunded <= amount)` on `payments`) and keeps
/// nothing; the honest one lands. The check cannot see two refunds that each start from
/// the same stale payment (neither exceeds the amount); the payment fence does
/// (`stale_refund_run`), and so does the wallet's version (`concurrent_refunds_*` in
/// tests/api/money.rs).
fn over_refund_run(url: Option<String>) {
    let (world, id, paid) = paid_in_store(url);
    let op = Op::Refund {
        payment: Box::new(paid.clone()),
        amount: None,
    };
    let honest = decide(&world.snap, &op, &world.policy, world.now)
        .expect("a full refund")
        .commit
        .expect("a refund writes");
    let mut greedy = honest.clone();
    greedy.payments[0].refunded = Money(paid.amount.0 + 1);
    let ctx = world.store.as_ref().expect("a store");
    let done = ctx.rt.block_on(ctx.store.commit_wallets(vec![greedy]));
    assert!(
        matches!(done[..], [Err(CommitError::Failed(_))]),
        "{done:?}"
    );
    let stored = ctx
        .rt
        .block_on(ctx.store.get_payment(paid.tenant_id, id))
        .unwrap();
    assert_eq!(
        stored.refunded,
        Money::ZERO,
        "the refused commit kept nothing"
    );
    let done = ctx.rt.block_on(ctx.store.commit_wallets(vec![honest]));
    assert_eq!(done, vec![Ok(())]);
    let stored = ctx
        .rt
        .block_on(ctx.store.get_payment(paid.tenant_id, id))
        .unwrap();
    assert_eq!(stored.refunded, paid.amount);
}

#[test]
fn the_store_fences_a_refund_decided_on_a_payment_that_has_moved_on() {
    on_both_engines("the payment fence test", stale_refund_run);
}

/// Two refunds decided on the same payment as it was would each write their own sum onto
/// the same stale `refunded` (a lost update the amount check cannot see). The store fences
/// the second on the payment row itself, even though its wallet version is current, and
/// it keeps nothing; decided again on the payment as stored, it lands.
fn stale_refund_run(url: Option<String>) {
    let (world, id, paid) = paid_in_store(url);
    let (policy, now) = (&world.policy, world.now);
    let refund = |snap: &WalletSnapshot, p: &Payment| {
        let op = Op::Refund {
            payment: Box::new(p.clone()),
            amount: Some(Money(100)),
        };
        decide(snap, &op, policy, now).expect("a refund of 100")
    };
    let first = refund(&world.snap, &paid);
    let ctx = world.store.as_ref().expect("a store");
    let commit = |d: &Decision| {
        let c = d.commit.clone().expect("a refund writes");
        ctx.rt.block_on(ctx.store.commit_wallets(vec![c]))
    };
    assert_eq!(commit(&first), vec![Ok(())]);

    // The wallet as the first refund left it, the payment as it was before.
    let stale = refund(&first.state, &paid);
    assert_eq!(
        stale.commit.as_ref().map(|c| c.wallet.version),
        Some(first.state.wallet.version + 1),
        "the wallet version is current, so only the payment can fence it"
    );
    assert_eq!(commit(&stale), vec![Err(CommitError::Fenced)]);
    let stored = |ctx: &StoreCtx| {
        let payment = ctx.rt.block_on(ctx.store.get_payment(paid.tenant_id, id));
        let wallet = ctx.rt.block_on(ctx.store.load_wallet(
            paid.tenant_id,
            world.snap.wallet.user_id,
            now,
        ));
        (payment.unwrap().refunded, wallet.unwrap().wallet)
    };
    let (refunded, wallet) = stored(ctx);
    assert_eq!(refunded, Money(100), "the fenced refund kept nothing");
    assert_eq!(wallet.balance, first.state.wallet.balance);
    assert_eq!(wallet.version, first.state.wallet.version);

    let moved = ctx
        .rt
        .block_on(ctx.store.get_payment(paid.tenant_id, id))
        .unwrap();
    let again = refund(&first.state, &moved);
    assert_eq!(commit(&again), vec![Ok(())]);
    let (refunded, wallet) = stored(ctx);
    assert_eq!(refunded, Money(200));
    assert_eq!(wallet.balance, Money(first.state.wallet.balance.0 + 100));
}

/// A world on a store with one topped-up wallet, and that wallet's row as stored.
fn stored_wallet(url: Option<String>) -> (World, WalletRow) {
    let mut world = World::with_store(url);
    world.run(&Step::TopUp { amount: 500 });
    let ctx = world.store.as_ref().expect("a store");
    let stored = ctx
        .rt
        .block_on(ctx.store.load_wallet(
            world.snap.wallet.tenant_id,
            world.snap.wallet.user_id,
            world.now,
        ))
        .unwrap()
        .wallet;
    (world, stored)
}

/// Version fencing in the store: in one batch, a commit made from a stale wallet version
/// fails alone and keeps nothing (its idempotency key and code nonce stay free), while the
/// commit next to it lands; a commit with a used nonce or a taken key is refused and keeps
/// nothing either; a "new wallet" commit for a wallet that already has a row is fenced.
fn fenced_run(url: Option<String>) {
    let (world, stored) = stored_wallet(url);
    let ctx = world.store.as_ref().expect("a store");
    let commit =
        |version: i64, key: &str, nonce: u8| keyed_commit(&stored, version, key, nonce, world.now);
    let found = |key: &str| key_kept(ctx, key);
    let v = stored.version;
    let done = ctx.rt.block_on(
        ctx.store
            .commit_wallets(vec![commit(v, "stale", 1), commit(v + 1, "fresh", 2)]),
    );
    assert_eq!(done, vec![Err(CommitError::Fenced), Ok(())]);
    assert!(!found("stale"), "a fenced commit keeps no idempotency key");
    assert!(found("fresh"));

    // The stale commit's key and nonce were not kept, so a current commit may use them.
    let done = ctx
        .rt
        .block_on(ctx.store.commit_wallets(vec![commit(v + 2, "stale", 1)]));
    assert_eq!(done, vec![Ok(())]);
    // A used nonce is refused.
    let done = ctx
        .rt
        .block_on(ctx.store.commit_wallets(vec![commit(v + 3, "other", 2)]));
    assert_eq!(done, vec![Err(CommitError::NonceUsed)]);
    // Nor does a commit dropped for its nonce keep its key: the wallet answers it again
    // (as a declined payment) under that key.
    assert!(
        !found("other"),
        "a commit dropped for its nonce keeps no idempotency key"
    );
    // A taken key is refused.
    let done = ctx
        .rt
        .block_on(ctx.store.commit_wallets(vec![commit(v + 3, "fresh", 4)]));
    assert_eq!(done, vec![Err(CommitError::Duplicate)]);
    // One key twice in one batch: the first commit has it, the second is a duplicate,
    // and the first keeps its record.
    let done = ctx.rt.block_on(
        ctx.store
            .commit_wallets(vec![commit(v + 3, "twice", 5), commit(v + 4, "twice", 6)]),
    );
    assert_eq!(done, vec![Ok(()), Err(CommitError::Duplicate)]);
    assert!(found("twice"));
    // A wallet that exists cannot be created again.
    let done = ctx
        .rt
        .block_on(ctx.store.commit_wallets(vec![commit(1, "again", 3)]));
    assert_eq!(done, vec![Err(CommitError::Fenced)]);

    let loaded = ctx
        .rt
        .block_on(
            ctx.store
                .load_wallet(stored.tenant_id, stored.user_id, world.now),
        )
        .unwrap();
    assert_eq!(loaded.wallet.version, v + 3);
    assert_eq!(loaded.wallet.balance, stored.balance);
    // What a live wallet actor compares its copy with before it answers from memory.
    let version = |user| ctx.rt.block_on(ctx.store.wallet_version(user)).unwrap();
    assert_eq!(version(stored.user_id), v + 3);
    assert_eq!(version(UserId::new()), 0, "a wallet never written");
}

#[test]
fn a_stale_commit_is_fenced_alone_and_keeps_nothing() {
    on_both_engines("the fencing test", fenced_run);
}

/// A top-up's bank reference in the store: taken once in a tenant, as a payment code's
/// nonce is. A commit whose reference is taken is refused alone and keeps nothing (not
/// its key either); a fenced commit keeps no reference, so that its retry (a fresh
/// decision with a new id) takes it; top-ups without a reference never clash.
fn reference_run(url: Option<String>) {
    let (world, stored) = stored_wallet(url);
    let ctx = world.store.as_ref().expect("a store");
    let v = stored.version;
    let commit = |version: i64, key: &str, reference: Option<&str>| {
        let mut c = keyed_commit(&stored, version, key, 0, world.now);
        c.used_nonce = None;
        c.register = Some(RegisterRecord {
            kind: RegisterKind::TopUp,
            id: uuid::Uuid::now_v7(),
            user_id: stored.user_id,
            amount: Money(1),
            reference: reference.map(str::to_string),
            by: "admin:test".into(),
        });
        c
    };
    let run = |commits| ctx.rt.block_on(ctx.store.commit_wallets(commits));
    let done = run(vec![commit(v, "stale", Some("R-1"))]);
    assert_eq!(done, vec![Err(CommitError::Fenced)]);
    let done = run(vec![commit(v + 1, "fresh", Some("R-2"))]);
    assert_eq!(done, vec![Ok(())]);
    let done = run(vec![commit(v + 2, "retry", Some("R-1"))]);
    assert_eq!(done, vec![Ok(())], "a fenced commit keeps no reference");
    for reference in ["R-1", "R-2"] {
        let done = run(vec![commit(v + 3, "again", Some(reference))]);
        assert_eq!(done, vec![Err(CommitError::ReferenceUsed)], "{reference}");
    }
    assert!(
        !key_kept(ctx, "again"),
        "a commit refused for its reference keeps no idempotency key"
    );
    let done = run(vec![commit(v + 3, "none-1", None)]);
    assert_eq!(done, vec![Ok(())]);
    let done = run(vec![commit(v + 4, "none-2", None)]);
    assert_eq!(
        done,
        vec![Ok(())],
        "top-ups without a reference never clash"
    );

    let page = onecard_schema::model::PageReq {
        after: None,
        limit: 50,
    };
    let lines = ctx
        .rt
        .block_on(ctx.store.list_register(
            stored.tenant_id,
            RegisterKind::TopUp,
            RegisterFilter::default(),
            page,
        ))
        .unwrap()
        .items;
    let count = |r: Option<&str>| lines.iter().filter(|l| l.reference.as_deref() == r).count();
    assert_eq!(
        (count(Some("R-1")), count(Some("R-2"))),
        (1, 1),
        "each reference once"
    );
    assert_eq!(
        lines.len(),
        5,
        "the world's own top-up and the four applied here"
    );
    let found = ctx
        .rt
        .block_on(
            ctx.store
                .topups_by_reference(stored.tenant_id, vec!["R-2".into(), "R-9".into()]),
        )
        .unwrap();
    assert_eq!(
        found
            .iter()
            .map(|l| l.reference.as_deref())
            .collect::<Vec<_>>(),
        [Some("R-2")]
    );

    // A reversal frees its top-up's reference, and is written once: a second reversal of
    // the same top-up is fenced, as a refund of a payment that moved on is.
    let reversal = |version: i64, key: &str, topup_id: uuid::Uuid| {
        let mut c = keyed_commit(&stored, version, key, 0, world.now);
        c.used_nonce = None;
        c.topup_reversal = Some(TopUpReversal {
            topup_id,
            reversal_id: uuid::Uuid::now_v7(),
            by: "admin:test".into(),
            reason: "the wrong person".into(),
        });
        c
    };
    let r2 = found[0].id;
    let done = run(vec![reversal(v + 5, "rev-1", r2)]);
    assert_eq!(done, vec![Ok(())]);
    let done = run(vec![reversal(v + 6, "rev-2", r2)]);
    assert_eq!(done, vec![Err(CommitError::Fenced)], "reversed once");
    assert!(!key_kept(ctx, "rev-2"));
    let line = ctx
        .rt
        .block_on(ctx.store.get_topup(stored.tenant_id, r2))
        .unwrap();
    assert_eq!(
        line.reversal.map(|r| (r.by, r.reason)),
        Some(("admin:test".to_string(), "the wrong person".to_string()))
    );
    let done = run(vec![commit(v + 6, "r2-again", Some("R-2"))]);
    assert_eq!(done, vec![Ok(())], "a reversed top-up's reference is free");
    let loaded = ctx
        .rt
        .block_on(
            ctx.store
                .load_wallet(stored.tenant_id, stored.user_id, world.now),
        )
        .unwrap();
    assert_eq!(loaded.wallet.version, v + 6);
}

#[test]
fn a_top_up_reference_is_taken_once_and_a_fenced_commit_keeps_none() {
    on_both_engines("the reference test", reference_run);
}

/// A batch is one transaction even when its first attempt fails: in a batch that creates
/// one wallet and changes another, a commit refused (a taken key, a stale version) drops
/// alone, and the others land once, whole. Were any statement of the failed attempt to
/// run outside its transaction (on PostgreSQL the batch goes in one round trip, `COMMIT`
/// included), its write would stay: the changed wallet's version would move on without
/// its commit, or the created wallet would be there already and its commit be fenced.
fn batch_run(url: Option<String>) {
    let (world, stored) = stored_wallet(url);
    let ctx = world.store.as_ref().expect("a store");
    let (tenant, v) = (stored.tenant_id, stored.version);
    let created = |n: &str| {
        let user = UserId::new();
        let audit = user_audit(tenant, user, "user.create", world.now);
        let new_user = onecard_schema::model::NewUser {
            id: user,
            name: n.into(),
            number: n.into(),
            phone: None,
            id_number: None,
            identity: None,
            department_ids: vec![],
            tag_ids: vec![],
        };
        ctx.rt
            .block_on(ctx.store.create_user(tenant, new_user, world.now, audit))
            .unwrap();
        WalletRow {
            user_id: user,
            ..stored.clone()
        }
    };
    let version_of = |user| ctx.rt.block_on(ctx.store.wallet_version(user)).unwrap();
    let commit = |w: &WalletRow, version: i64, key: &str, nonce: u8| {
        keyed_commit(w, version, key, nonce, world.now)
    };
    let done = ctx.rt.block_on(
        ctx.store
            .commit_wallets(vec![commit(&stored, v + 1, "taken", 1)]),
    );
    assert_eq!(done, vec![Ok(())]);

    // A taken key.
    let b = created("B1");
    let done = ctx.rt.block_on(ctx.store.commit_wallets(vec![
        commit(&b, 1, "b-new", 2),
        commit(&stored, v + 2, "taken", 3),
    ]));
    assert_eq!(done, vec![Ok(()), Err(CommitError::Duplicate)]);
    assert_eq!(
        version_of(stored.user_id),
        v + 1,
        "the refused commit moved nothing"
    );
    assert_eq!(version_of(b.user_id), 1);
    assert!(key_kept(ctx, "b-new"));

    // A stale version, beside a wallet created and a wallet changed.
    let c = created("C1");
    let done = ctx.rt.block_on(ctx.store.commit_wallets(vec![
        commit(&c, 1, "c-new", 4),
        commit(&stored, v + 1, "stale", 5),
        commit(&b, 2, "b-next", 6),
    ]));
    assert_eq!(done, vec![Ok(()), Err(CommitError::Fenced), Ok(())]);
    assert_eq!(version_of(stored.user_id), v + 1);
    assert_eq!(version_of(c.user_id), 1);
    assert_eq!(version_of(b.user_id), 2);
    assert!(
        !key_kept(ctx, "stale"),
        "a fenced commit keeps no idempotency key"
    );
    assert!(key_kept(ctx, "c-new") && key_kept(ctx, "b-next"));
}

#[test]
fn a_commit_refused_in_a_batch_drops_alone_and_the_rest_lands_once() {
    on_both_engines("the batch test", batch_run);
}

/// The audit entry of a test's change to `user`, made by root.
fn user_audit(
    tenant: TenantId,
    user: UserId,
    action: &'static str,
    at: Timestamp,
) -> onecard_schema::model::Audit {
    onecard_schema::model::Audit {
        id: AuditId::new(),
        tenant_id: Some(tenant),
        actor: onecard_schema::model::Actor::Root,
        action,
        target_type: "user",
        target_id: user.to_string(),
        request_id: String::new(),
        at,
        detail: serde_json::json!({}),
    }
}

/// Whether the store holds an idempotency record for `key` (scope `fence-test`).
fn key_kept(ctx: &StoreCtx, key: &str) -> bool {
    ctx.rt
        .block_on(
            ctx.store
                .find_money_request("fence-test".into(), key.into()),
        )
        .unwrap()
        .is_some()
}

/// A commit of `stored` at `version` that uses the idempotency key `key` (scope
/// `fence-test`) and a code nonce made of `nonce`.
fn keyed_commit(
    stored: &WalletRow,
    version: i64,
    key: &str,
    nonce: u8,
    at: Timestamp,
) -> WalletCommit {
    let mut wallet = stored.clone();
    wallet.version = version;
    WalletCommit {
        wallet,
        subsidies: vec![],
        coupons: vec![],
        payments: vec![],
        payment_fences: vec![],
        entries: vec![],
        used_nonce: Some(vec![nonce; 16]),
        risk_events: vec![],
        outbox: vec![],
        request: Some(MoneyRequest {
            scope: "fence-test".into(),
            key: key.into(),
            request_hash: [nonce; 32],
            status: 201,
            body: b"{}".to_vec(),
        }),
        register: None,
        topup_reversal: None,
        at,
        require_active: false,
    }
}

/// The card check in the store: a commit that took the card to be active lands while the
/// cardholder is active. Once they are suspended it is refused alone and keeps nothing
/// (its key and nonce stay free, its version unused), while a commit without the check
/// next to it in the batch lands.
fn card_run(url: Option<String>) {
    let (world, stored) = stored_wallet(url);
    let ctx = world.store.as_ref().expect("a store");
    let (tenant, user) = (stored.tenant_id, stored.user_id);
    let commit = |version: i64, key: &str, nonce: u8, require_active: bool| WalletCommit {
        require_active,
        ..keyed_commit(&stored, version, key, nonce, world.now)
    };
    let found = |key: &str| key_kept(ctx, key);
    let v = stored.version;
    let done = ctx.rt.block_on(
        ctx.store
            .commit_wallets(vec![commit(v + 1, "active", 1, true)]),
    );
    assert_eq!(done, vec![Ok(())], "an active cardholder's commit lands");

    let audit = user_audit(tenant, user, "user.update", world.now);
    let suspend = onecard_schema::model::UserPatch {
        status: Some(onecard_schema::model::UserStatus::Suspended),
        ..Default::default()
    };
    ctx.rt
        .block_on(
            ctx.store
                .update_user(tenant, user, suspend, world.now, audit),
        )
        .unwrap();

    let done = ctx.rt.block_on(ctx.store.commit_wallets(vec![
        commit(v + 2, "suspended", 2, true),
        commit(v + 2, "unchecked", 3, false),
    ]));
    assert_eq!(done, vec![Err(CommitError::CardInactive), Ok(())]);
    assert!(
        !found("suspended"),
        "a refused commit keeps no idempotency key"
    );
    assert!(found("unchecked"));
    // Alone, too; and the refused commit's nonce is still free.
    let done = ctx.rt.block_on(
        ctx.store
            .commit_wallets(vec![commit(v + 3, "alone", 4, true)]),
    );
    assert_eq!(done, vec![Err(CommitError::CardInactive)]);
    let done =
        ctx.rt.block_on(
            ctx.store
                .commit_wallets(vec![commit(v + 3, "suspended", 2, false)]),
        );
    assert_eq!(done, vec![Ok(())]);
    let loaded = ctx
        .rt
        .block_on(ctx.store.load_wallet(tenant, user, world.now))
        .unwrap();
    assert_eq!(loaded.wallet.version, v + 3);
}

#[test]
fn a_commit_that_needs_an_active_card_is_refused_alone_once_it_is_not() {
    on_both_engines("the card check test", card_run);
}

/// The outbox in the store: a batch writes the events of the commits that applied as one
/// page, in order, keyed by the first of them; a refused commit's events are not there;
/// the sweep's age filter and the delete by page key work on both engines.
fn outbox_run(url: Option<String>) {
    let postgres = url.clone();
    let (world, stored) = stored_wallet(url);
    let ctx = world.store.as_ref().expect("a store");
    let (tenant, user) = (stored.tenant_id, stored.user_id);
    // What the set-up wrote goes first.
    let before = ctx
        .rt
        .block_on(ctx.store.pending_outbox(None, 500))
        .unwrap();
    let keys: Vec<EventId> = before.iter().map(|e| e.outbox_key).collect();
    ctx.rt.block_on(ctx.store.delete_outbox(keys)).unwrap();

    let event = |n: i64| OutboxEvent {
        id: EventId::new(),
        topics: vec![format!("user:{user}"), "tenant".into()],
        kind: "payment.succeeded".into(),
        payload: Payload::of(&serde_json::json!({"n": n, "text": "a \"quoted\" é"})),
    };
    let (e1, e2, e3) = (event(1), event(2), event(3));
    let at = world.now + SignedDuration::from_micros(123);
    let with = |version: i64, key: &str, nonce: u8, events: Vec<OutboxEvent>| WalletCommit {
        outbox: events,
        ..keyed_commit(&stored, version, key, nonce, at)
    };
    let v = stored.version;
    // The refused commit comes first: the page is keyed by the first event that applied.
    let done = ctx.rt.block_on(ctx.store.commit_wallets(vec![
        with(v, "page-stale", 1, vec![e3.clone()]),
        with(v + 1, "page-1", 2, vec![e1.clone(), e2.clone()]),
    ]));
    assert_eq!(done, vec![Err(CommitError::Fenced), Ok(())]);
    let pending = |before: Option<Timestamp>| {
        ctx.rt
            .block_on(ctx.store.pending_outbox(before, 500))
            .unwrap()
    };
    let page = |e: &OutboxEvent| PendingEvent {
        tenant_id: tenant,
        event: e.clone(),
        created_at: at,
        outbox_key: e1.id,
    };
    assert_eq!(
        pending(None),
        vec![page(&e1), page(&e2)],
        "one page of the applied commit's events, keyed by the first"
    );
    // The sweep leaves pages younger than its cut-off to the node that wrote them.
    assert_eq!(pending(Some(at - SignedDuration::from_secs(1))), vec![]);

    // A batch where every commit applies: a second page, after the first.
    let (e4, e5) = (event(4), event(5));
    let done = ctx.rt.block_on(ctx.store.commit_wallets(vec![with(
        v + 2,
        "page-2",
        3,
        vec![e4.clone(), e5.clone()],
    )]));
    assert_eq!(done, vec![Ok(())]);
    let keys: Vec<EventId> = pending(None).iter().map(|e| e.outbox_key).collect();
    assert_eq!(keys, vec![e1.id, e1.id, e4.id, e4.id]);

    ctx.rt
        .block_on(ctx.store.delete_outbox(vec![e1.id]))
        .unwrap();
    let left: Vec<EventId> = pending(None).iter().map(|e| e.event.id).collect();
    assert_eq!(left, vec![e4.id, e5.id], "the first page went whole");

    // PostgreSQL keeps the old outbox through a rolling update (V6): an event that a node
    // of the previous release left there is swept as a page of its own, and deleted by its
    // id.
    let Some(url) = postgres else {
        return;
    };
    let legacy = EventId::new();
    ctx.rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.execute(
            "INSERT INTO outbox (id, tenant_id, topics, kind, payload, created_at) \
             VALUES ($1, $2, $3, 'payment.succeeded', '{\"old\": true}', $4)",
            &[&legacy.0, &tenant.0, &vec![format!("user:{user}")], &at],
        )
        .await
        .unwrap();
    });
    let swept = pending(None);
    let keyed: Vec<(EventId, EventId)> = swept.iter().map(|e| (e.event.id, e.outbox_key)).collect();
    assert_eq!(
        keyed,
        vec![(legacy, legacy), (e4.id, e4.id), (e5.id, e4.id)]
    );
    assert_eq!(swept[0].event.payload.as_str(), "{\"old\": true}");
    assert_eq!(swept[0].created_at, at);
    ctx.rt
        .block_on(ctx.store.delete_outbox(vec![legacy]))
        .unwrap();
    let left: Vec<EventId> = pending(None).iter().map(|e| e.event.id).collect();
    assert_eq!(left, vec![e4.id, e5.id]);
}

#[test]
fn a_batch_writes_one_outbox_page_of_the_events_that_applied() {
    on_both_engines("the outbox page test", outbox_run);
}

/// Used codes in the store: the purge takes those used before its cut-off, oldest first
/// and at most `limit` at a time; a purged nonce is free again, a recent one stays taken.
/// The same for the commits' idempotency records.
fn purge_run(url: Option<String>) {
    let (world, stored) = stored_wallet(url);
    let ctx = world.store.as_ref().expect("a store");
    let v = stored.version;
    let (old, new) = (world.now, world.now + SignedDuration::from_mins(20));
    let commit = |version: i64, key: &str, nonce: u8, at: Timestamp| {
        ctx.rt.block_on(
            ctx.store
                .commit_wallets(vec![keyed_commit(&stored, version, key, nonce, at)]),
        )
    };
    assert_eq!(commit(v + 1, "purge-1", 1, old), vec![Ok(())]);
    assert_eq!(commit(v + 2, "purge-2", 2, old), vec![Ok(())]);
    assert_eq!(commit(v + 3, "purge-3", 3, new), vec![Ok(())]);
    let cut = old + SignedDuration::from_secs(1);
    // Two old rows and recent ones: the purge takes the old ones, at most `limit` a time.
    let takes_the_two_old_ones = |what: &str, purge: &dyn Fn(usize) -> u64| {
        assert_eq!(purge(1), 1, "{what}: one at a time when asked");
        assert_eq!(purge(10), 1, "{what}: then the other old one");
        assert_eq!(purge(10), 0, "{what}: the recent ones stay");
    };
    takes_the_two_old_ones("used codes", &|limit| {
        ctx.rt
            .block_on(ctx.store.purge_used_codes(cut, limit))
            .unwrap()
    });
    assert_eq!(
        commit(v + 4, "purge-4", 1, new),
        vec![Ok(())],
        "a purged nonce is free again"
    );
    assert_eq!(
        commit(v + 5, "purge-5", 3, new),
        vec![Err(CommitError::NonceUsed)],
        "a recent nonce is still taken"
    );

    // Their idempotency records likewise, past their keep.
    takes_the_two_old_ones("idempotency records", &|limit| {
        ctx.rt
            .block_on(ctx.store.purge_money_requests(cut, limit))
            .unwrap()
    });
    assert_eq!(
        commit(v + 5, "purge-1", 5, new),
        vec![Ok(())],
        "a purged key is free again"
    );
    assert_eq!(
        commit(v + 6, "purge-3", 6, new),
        vec![Err(CommitError::Duplicate)],
        "a recent key is still taken"
    );
}

#[test]
fn used_codes_and_idempotency_records_past_their_keep_are_purged_and_recent_ones_stay() {
    on_both_engines("the used-code purge test", purge_run);
}
