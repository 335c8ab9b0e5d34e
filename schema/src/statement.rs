//! A cardholder's statement: every movement of their money, newest first (SPEC §6;
//! docs/OPERATIONS.md "Statements"). Payments come from the payments themselves; the
//! other movements (top-ups, subsidies credited, refunds, arrears opened, repaid or
//! written off) from the ledger, which both engines read through partial indexes that no
//! payment writes (PostgreSQL V37, SQLite V35). This module turns the entries the engines
//! read into lines, and merges the three sources into pages.

use jiff::Timestamp;
use uuid::Uuid;

use crate::ids::*;
use crate::money::Money;
use crate::wallet::{Account, Breakdown, Payment, PaymentStatus};

/// One ledger entry as a statement reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementEntry {
    pub tx_id: Uuid,
    pub account: Account,
    pub ref_id: Option<Uuid>,
    pub amount: i64,
    pub payment_id: Option<PaymentId>,
    pub at: Timestamp,
}

/// What the engines read for one page: the cardholder's payments, the entries of their
/// other movements, and the names of their subsidy accounts.
#[derive(Clone, Debug, Default)]
pub struct StatementSources {
    /// The newest payments before the cursor, at most the page's limit, newest first.
    pub payments: Vec<Payment>,
    /// More payments follow the ones above.
    pub more_payments: bool,
    /// The cardholder's own entries (cash and arrears by their id, subsidies by their
    /// accounts') of the newest movements that are not a payment's, at most the page's
    /// limit plus one movement.
    pub holder: Vec<StatementEntry>,
    /// Every entry of the newest refunds of the cardholder's payments, at most the page's
    /// limit plus one refund.
    pub refunds: Vec<StatementEntry>,
    /// The cardholder's subsidy accounts, for their names.
    pub subsidy_accounts: Vec<(SubsidyId, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatementKind {
    /// A payment at a till or collection code, in any status (a declined one moved nothing).
    Payment,
    /// Money given back for a payment.
    Refund,
    TopUp,
    /// Cash balance paid out to the cardholder by the finance office.
    Withdrawal,
    /// A top-up taken back, credited in error (its cash leaves the balance again). The
    /// ledger alone reads it as a withdrawal: the top-up register names it.
    TopUpReversal,
    /// A subsidy credited by an approved rule.
    Subsidy,
    /// A deferred debit the provider declined: the person now owes it.
    ArrearsOpened,
    ArrearsRepaid,
    /// Arrears written off at a month-end cut-off.
    ArrearsWrittenOff,
    /// A movement of the cardholder's own accounts that none of the above describes;
    /// its amount is signed. Nothing writes one today: it keeps a statement whole if
    /// a later release adds a kind of movement before it adds its name here.
    Adjustment,
}

/// One line of a statement.
#[derive(Clone, Debug, PartialEq)]
pub struct StatementLine {
    /// The payment's id for a payment; the ledger transaction's otherwise. Ids are
    /// UUIDv7, made when the movement was, so they order the statement.
    pub id: Uuid,
    pub kind: StatementKind,
    pub at: Timestamp,
    /// What the line is worth, in fen: a payment's amount, a refund's, a top-up's, a
    /// subsidy's, what was owed, repaid or written off. Positive, except for an
    /// `Adjustment`, whose sign says which way it went.
    pub amount: Money,
    /// The payment itself, for a payment line.
    pub payment: Option<Payment>,
    /// The payment a refund, or a provider's decline, belongs to (a payment line is its
    /// payment: `id`).
    pub payment_id: Option<PaymentId>,
    /// Where a payment was made, or a refunded one had been.
    pub merchant_id: Option<MerchantId>,
    /// For a refund: where the money went back (SPEC §6, a refund returns funds to the
    /// sources they came from): `balance` to cash (with an expired share when the tenant
    /// refunds those to cash), `subsidy` to live subsidy accounts, `deferred` back through
    /// the payment provider, `coupon` the coupon's share (the coupon itself comes back
    /// when its whole payment is refunded while it is valid; never money).
    pub returned: Option<Breakdown>,
    /// For a refund: the share of a subsidy account past its expiry, not revived.
    pub not_revived: Money,
    /// For a subsidy: the account credited and its name.
    pub subsidy_account: Option<(SubsidyId, String)>,
    /// What the line did to the cardholder's cash balance, signed fen: a payment's cash
    /// share out, a refund's back, a top-up in, a withdrawal out; 0 for arrears, which
    /// are owed beside the balance, and for a declined payment.
    pub cash: i64,
    /// What it did to their subsidy accounts, signed fen, as `cash` does to the balance.
    pub subsidy: i64,
}

impl StatementLine {
    fn new(id: Uuid, kind: StatementKind, at: Timestamp, amount: i64) -> Self {
        StatementLine {
            id,
            kind,
            at,
            amount: Money(amount),
            payment: None,
            payment_id: None,
            merchant_id: None,
            returned: None,
            not_revived: Money::ZERO,
            subsidy_account: None,
            cash: 0,
            subsidy: 0,
        }
    }

    fn of_payment(p: Payment) -> Self {
        let mut line = StatementLine::new(p.id.0, StatementKind::Payment, p.created_at, p.amount.0);
        line.merchant_id = Some(p.merchant_id);
        if p.status != PaymentStatus::Declined {
            line.cash = -p.breakdown.balance.0;
            line.subsidy = -p.breakdown.subsidy.0;
        }
        line.payment = Some(p);
        line
    }
}

/// Entries grouped by their transaction, newest first.
fn by_tx(mut entries: Vec<StatementEntry>) -> Vec<Vec<StatementEntry>> {
    entries.sort_by_key(|e| std::cmp::Reverse(e.tx_id));
    let mut out: Vec<Vec<StatementEntry>> = Vec::new();
    for e in entries {
        match out.last_mut() {
            Some(group) if group[0].tx_id == e.tx_id => group.push(e),
            _ => out.push(vec![e]),
        }
    }
    out
}

/// A movement that is not a payment's, from the cardholder's own entries of it (one
/// account each: every such transaction is one wallet's).
fn holder_line(group: &[StatementEntry], accounts: &[(SubsidyId, String)]) -> StatementLine {
    let first = &group[0];
    let sum: i64 = group.iter().map(|e| e.amount).sum();
    let same = |a: Account| group.iter().all(|e| e.account == a);
    let paid_for = group.iter().find_map(|e| e.payment_id);
    let (kind, amount) = if same(Account::Cash) && paid_for.is_none() && sum > 0 {
        (StatementKind::TopUp, sum)
    } else if same(Account::Cash) && paid_for.is_none() && sum < 0 {
        (StatementKind::Withdrawal, -sum)
    } else if same(Account::Subsidy) && paid_for.is_none() && sum > 0 {
        (StatementKind::Subsidy, sum)
    } else if same(Account::Arrears) && sum < 0 && paid_for.is_some() {
        (StatementKind::ArrearsOpened, -sum)
    } else if same(Account::Arrears) && sum > 0 && paid_for.is_none() {
        (StatementKind::ArrearsRepaid, sum)
    } else if same(Account::Arrears) && sum > 0 {
        (StatementKind::ArrearsWrittenOff, sum)
    } else {
        (StatementKind::Adjustment, sum)
    };
    let mut line = StatementLine::new(first.tx_id, kind, first.at, amount);
    let on = |a: Account| -> i64 {
        group
            .iter()
            .filter(|e| e.account == a)
            .map(|e| e.amount)
            .sum()
    };
    line.cash = on(Account::Cash);
    line.subsidy = on(Account::Subsidy);
    if kind == StatementKind::ArrearsOpened {
        line.payment_id = paid_for;
    }
    if kind == StatementKind::Subsidy {
        line.subsidy_account = first.ref_id.map(|id| {
            let name = accounts
                .iter()
                .find(|(sid, _)| sid.0 == id)
                .map(|(_, n)| n.clone())
                .unwrap_or_default();
            (SubsidyId(id), name)
        });
    }
    line
}

/// A refund, from every entry of its transaction; `None` for a transaction after a sale
/// that is not a refund (it has no entry taking the money back from the merchant).
fn refund_line(group: &[StatementEntry]) -> Option<StatementLine> {
    let merchant = group
        .iter()
        .find(|e| e.account == Account::MerchantReceivable && e.amount < 0)?;
    let mut line = StatementLine::new(
        merchant.tx_id,
        StatementKind::Refund,
        merchant.at,
        -merchant.amount,
    );
    line.payment_id = merchant.payment_id;
    line.merchant_id = merchant.ref_id.map(MerchantId);
    let mut returned = Breakdown::default();
    for e in group.iter().filter(|e| e.amount > 0) {
        let share = match e.account {
            Account::Cash => &mut returned.balance,
            Account::Subsidy => &mut returned.subsidy,
            Account::ProviderClearing => &mut returned.deferred,
            Account::CouponFunding => &mut returned.coupon,
            Account::SubsidyFunding => &mut line.not_revived,
            _ => continue,
        };
        *share = Money(share.0 + e.amount);
    }
    line.cash = returned.balance.0;
    line.subsidy = returned.subsidy.0;
    line.returned = Some(returned);
    Some(line)
}

/// One page of the statement from its three sources: the newest `limit` lines of all of
/// them, and the id to continue from when more follow. Each source holds its newest
/// lines before the cursor (the holder and refund sources one more than the page), so
/// the page's lines are among them.
pub fn statement_page(sources: StatementSources, limit: u32) -> (Vec<StatementLine>, Option<Uuid>) {
    let StatementSources {
        payments,
        more_payments,
        holder,
        refunds,
        subsidy_accounts,
    } = sources;
    let mut lines: Vec<StatementLine> = payments
        .into_iter()
        .map(StatementLine::of_payment)
        .collect();
    lines.extend(
        by_tx(holder)
            .iter()
            .map(|g| holder_line(g, &subsidy_accounts)),
    );
    lines.extend(by_tx(refunds).iter().filter_map(|g| refund_line(g)));
    lines.sort_by_key(|l| std::cmp::Reverse(l.id));
    let more = lines.len() > limit as usize || more_payments;
    lines.truncate(limit as usize);
    let next = if more {
        lines.last().map(|l| l.id)
    } else {
        None
    };
    (lines, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        tx: Uuid,
        account: Account,
        ref_id: Option<Uuid>,
        amount: i64,
        payment: Option<PaymentId>,
    ) -> StatementEntry {
        StatementEntry {
            tx_id: tx,
            account,
            ref_id,
            amount,
            payment_id: payment,
            at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn movements_are_named_by_their_accounts_and_signs() {
        let user = Some(Uuid::now_v7());
        let pid = Some(PaymentId(Uuid::now_v7()));
        let sid = SubsidyId(Uuid::now_v7());
        let accounts = vec![(sid, "Meals".to_string())];
        let one = |account, ref_id, amount, payment| {
            holder_line(
                &[entry(Uuid::now_v7(), account, ref_id, amount, payment)],
                &accounts,
            )
        };
        let top_up = one(Account::Cash, user, 500, None);
        assert_eq!(
            (top_up.kind, top_up.amount, top_up.cash, top_up.subsidy),
            (StatementKind::TopUp, Money(500), 500, 0)
        );
        let subsidy = one(Account::Subsidy, Some(sid.0), 300, None);
        assert_eq!(
            (subsidy.kind, subsidy.cash, subsidy.subsidy),
            (StatementKind::Subsidy, 0, 300)
        );
        assert_eq!(subsidy.subsidy_account, Some((sid, "Meals".into())));
        let opened = one(Account::Arrears, user, -700, pid);
        assert_eq!(
            (opened.kind, opened.amount, opened.payment_id),
            (StatementKind::ArrearsOpened, Money(700), pid)
        );
        let repaid = one(Account::Arrears, user, 700, None);
        assert_eq!(
            (repaid.kind, repaid.cash, repaid.subsidy),
            (StatementKind::ArrearsRepaid, 0, 0),
            "arrears are owed beside the balance"
        );
        let tx = Uuid::now_v7();
        let other = Some(PaymentId(Uuid::now_v7()));
        let written_off = holder_line(
            &[
                entry(tx, Account::Arrears, user, 700, pid),
                entry(tx, Account::Arrears, user, 200, other),
            ],
            &accounts,
        );
        assert_eq!(
            (written_off.kind, written_off.amount),
            (StatementKind::ArrearsWrittenOff, Money(900))
        );
        let withdrawal = one(Account::Cash, user, -50, None);
        assert_eq!(
            (withdrawal.kind, withdrawal.amount, withdrawal.cash),
            (StatementKind::Withdrawal, Money(50), -50)
        );
        let odd = one(Account::Subsidy, Some(sid.0), -50, None);
        assert_eq!(
            (odd.kind, odd.amount, odd.cash, odd.subsidy),
            (StatementKind::Adjustment, Money(-50), 0, -50)
        );
    }

    #[test]
    fn a_refund_says_where_its_money_went() {
        let tx = Uuid::now_v7();
        let pid = Some(PaymentId(Uuid::now_v7()));
        let merchant = Uuid::now_v7();
        let group = [
            entry(tx, Account::MerchantReceivable, Some(merchant), -1000, pid),
            entry(tx, Account::ProviderClearing, None, 100, pid),
            entry(tx, Account::Cash, Some(Uuid::now_v7()), 400, pid),
            entry(tx, Account::Subsidy, Some(Uuid::now_v7()), 250, pid),
            entry(tx, Account::SubsidyFunding, None, 50, pid),
            entry(tx, Account::CouponFunding, None, 200, pid),
        ];
        let line = refund_line(&group).expect("a refund");
        assert_eq!(line.amount, Money(1000));
        assert_eq!(line.merchant_id, Some(MerchantId(merchant)));
        let r = line.returned.expect("returned");
        assert_eq!(
            (r.deferred, r.balance, r.subsidy, r.coupon),
            (Money(100), Money(400), Money(250), Money(200))
        );
        assert_eq!(line.not_revived, Money(50));
        assert_eq!(
            (line.cash, line.subsidy),
            (400, 250),
            "back to the balance and the subsidy accounts; the provider's share is not theirs"
        );
        let declined = [
            entry(tx, Account::ProviderClearing, None, 700, pid),
            entry(tx, Account::Arrears, Some(Uuid::now_v7()), -700, pid),
        ];
        assert_eq!(
            refund_line(&declined),
            None,
            "a provider's decline is no refund"
        );
    }

    #[test]
    fn a_page_is_the_newest_lines_of_all_sources() {
        let user = Some(Uuid::now_v7());
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        let holder = ids
            .iter()
            .step_by(2)
            .map(|tx| entry(*tx, Account::Cash, user, 100, None))
            .collect();
        let refunds = ids
            .iter()
            .skip(1)
            .step_by(2)
            .flat_map(|tx| {
                let pid = Some(PaymentId(Uuid::now_v7()));
                [
                    entry(*tx, Account::MerchantReceivable, user, -10, pid),
                    entry(*tx, Account::Cash, user, 10, pid),
                ]
            })
            .collect();
        let sources = || StatementSources {
            holder: Vec::clone(&holder),
            refunds: Vec::clone(&refunds),
            ..Default::default()
        };
        let (lines, next) = statement_page(sources(), 3);
        let got: Vec<Uuid> = lines.iter().map(|l| l.id).collect();
        assert_eq!(got, vec![ids[4], ids[3], ids[2]]);
        assert_eq!(next, Some(ids[2]));
        let (lines, next) = statement_page(sources(), 5);
        assert_eq!(lines.len(), 5);
        assert_eq!(next, None, "nothing follows the whole statement");
        let (lines, next) = statement_page(
            StatementSources {
                more_payments: true,
                ..sources()
            },
            5,
        );
        assert_eq!(
            (lines.len(), next),
            (5, Some(ids[0])),
            "payments said more follow"
        );
    }
}
