//! The money half of the PostgreSQL engine.
//!
//! Group commit is set-based: a batch of wallet commits becomes a handful of array
//! statements (`unnest`) in one transaction, so a batch of a hundred payments costs about
//! as many round trips as one. Fencing is in the wallet upsert (`WHERE version = new - 1`)
//! and, for a commit that changes a stored payment, in a locking read of that payment.
//! A batch goes first in one round trip, `BEGIN` to `COMMIT` (`commit_at_once`), its checks
//! failing the transaction themselves; should it fail, it goes again step by step, and
//! a commit that loses a fence, or whose code nonce or idempotency key is taken, is
//! dropped from the batch before anything else of it is written. Anything unexpected
//! rolls the batch back and each commit is retried alone, so one bad commit never sinks
//! its neighbours.

use std::collections::HashSet;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::{Audit, NewToken, Page, PageReq, UserStatus};
use crate::money::Money;
use crate::money_store::{MoneyStore, PaymentFilter};
use crate::postgres::{check_refs, insert_audit, insert_token, pg, unreachable, PgStore, PgTime};
use crate::postgres_collection::{terminal_from_row, TERMINAL_COLS};
use crate::sqlite::paginate;
use crate::statement::{StatementEntry, StatementSources};
use crate::wallet::*;

fn ids_json<T: std::fmt::Display>(ids: &[T]) -> String {
    serde_json::to_string(&ids.iter().map(|i| i.to_string()).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into())
}

fn parts_json(parts: &[(SubsidyId, Money)]) -> String {
    serde_json::to_string(
        &parts
            .iter()
            .map(|(id, m)| (id.to_string(), m.0))
            .collect::<Vec<_>>(),
    )
    .unwrap_or_else(|_| "[]".into())
}

/// How long the outbox relay gathers relayed ids before one delete.
const OUTBOX_DELETE_GATHER: std::time::Duration = std::time::Duration::from_millis(200);

const MERCHANT_COLS: &str = "id, parent_id, name, number, single_limit, depth, created_at";

fn merchant_from_row(r: &Row) -> Merchant {
    Merchant {
        id: MerchantId(r.get(0)),
        parent_id: r.get::<_, Option<Uuid>>(1).map(MerchantId),
        name: r.get(2),
        number: r.get(3),
        single_limit: Money(r.get(4)),
        depth: r.get::<_, i16>(5) as u8,
        created_at: r.get(6),
    }
}

const WALLET_COLS: &str =
    "user_id, tenant_id, balance, arrears, version, agreement_signed, frozen, \
     frozen_until, freeze_count, reminded_on, updated_at";

fn wallet_from_row(r: &Row) -> WalletRow {
    WalletRow {
        user_id: UserId(r.get(0)),
        tenant_id: TenantId(r.get(1)),
        balance: Money(r.get(2)),
        arrears: Money(r.get(3)),
        version: r.get(4),
        agreement_signed: r.get(5),
        frozen: r.get(6),
        frozen_until: r.get(7),
        freeze_count: r.get(8),
        reminded_on: r.get(9),
        updated_at: r.get(10),
    }
}

const SUBSIDY_COLS: &str =
    "id, user_id, rule_id, name, balance, merchant_ids, expires_at, created_at";

fn subsidy_from_row(r: &Row) -> SubsidyAccount {
    SubsidyAccount {
        id: SubsidyId(r.get(0)),
        user_id: UserId(r.get(1)),
        rule_id: r.get::<_, Option<Uuid>>(2).map(SubsidyRuleId),
        name: r.get(3),
        balance: Money(r.get(4)),
        merchant_ids: r
            .get::<_, Vec<Uuid>>(5)
            .into_iter()
            .map(MerchantId)
            .collect(),
        expires_at: r.get(6),
        created_at: r.get(7),
    }
}

const COUPON_COLS: &str =
    "id, user_id, name, discount, threshold, merchant_ids, valid_from, expires_at, used_payment, created_at";

fn coupon_from_row(r: &Row) -> Coupon {
    Coupon {
        id: CouponId(r.get(0)),
        user_id: UserId(r.get(1)),
        name: r.get(2),
        discount: Money(r.get(3)),
        threshold: Money(r.get(4)),
        merchant_ids: r
            .get::<_, Vec<Uuid>>(5)
            .into_iter()
            .map(MerchantId)
            .collect(),
        valid_from: r.get(6),
        expires_at: r.get(7),
        used_payment: r.get::<_, Option<Uuid>>(8).map(PaymentId),
        created_at: r.get(9),
    }
}

const PAYMENT_COLS: &str = "id, tenant_id, user_id, merchant_id, terminal_id, amount, status, decline_reason, \
     coupon_id, coupon_amount, subsidy_amount, balance_amount, deferred_amount, subsidy_parts, refunded, \
     created_at, updated_at";

fn payment_from_row(r: &Row) -> StoreResult<Payment> {
    let status: &str = r.get(6);
    let reason: Option<&str> = r.get(7);
    let parts: serde_json::Value = r.get(13);
    let parts: Vec<(String, i64)> = serde_json::from_value(parts).map_err(StoreError::backend)?;
    Ok(Payment {
        id: PaymentId(r.get(0)),
        tenant_id: TenantId(r.get(1)),
        user_id: r.get::<_, Option<Uuid>>(2).map(UserId),
        merchant_id: MerchantId(r.get(3)),
        terminal_id: TerminalId(r.get(4)),
        amount: Money(r.get(5)),
        status: PaymentStatus::parse(status).ok_or_else(|| {
            StoreError::Backend(format!("unexpected stored status {status:?}").into())
        })?,
        decline_reason: reason.and_then(DeclineReason::parse),
        coupon_id: r.get::<_, Option<Uuid>>(8).map(CouponId),
        breakdown: Breakdown {
            coupon: Money(r.get(9)),
            subsidy: Money(r.get(10)),
            balance: Money(r.get(11)),
            deferred: Money(r.get(12)),
        },
        subsidy_parts: parts
            .into_iter()
            .filter_map(|(id, amount)| {
                Uuid::parse_str(&id)
                    .ok()
                    .map(|u| (SubsidyId(u), Money(amount)))
            })
            .collect(),
        refunded: Money(r.get(14)),
        created_at: r.get(15),
        updated_at: r.get(16),
    })
}

/// A read-only transaction that sees one moment (repeatable read), for reads that ask
/// several questions whose answers must agree.
async fn snapshot(
    c: &mut deadpool_postgres::Object,
) -> StoreResult<deadpool_postgres::Transaction<'_>> {
    c.build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(pg)
}

const STATEMENT_ENTRY_COLS: &str = "tx_id, account, ref_id, amount, payment_id, created_at";

fn statement_entry(r: &Row) -> StoreResult<StatementEntry> {
    let account: &str = r.get(1);
    Ok(StatementEntry {
        tx_id: r.get(0),
        account: Account::parse(account).ok_or_else(|| {
            StoreError::Backend(format!("unknown stored account {account:?}").into())
        })?,
        ref_id: r.get(2),
        amount: r.get(3),
        payment_id: r.get::<_, Option<Uuid>>(4).map(PaymentId),
        at: r.get(5),
    })
}

/// The payment writes: `[insert, upsert]` over the same rows. The plain insert spares a
/// new payment the speculative insertion of `ON CONFLICT` (an extra probe of the key
/// and an extra WAL record); the upsert also writes a payment's later changes (refunds,
/// a deferred debit's result). The upsert names the key's constraint rather than its
/// columns, so that a later migration can make the key `(tenant_id, id)`, as SQLite's
/// V8 did, while nodes of this release still run (docs/OPERATIONS.md).
static PAYMENT_WRITES: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
    let insert = format!(
        "INSERT INTO payments ({PAYMENT_COLS}) \
         SELECT id, tenant_id, user_id, merchant_id, terminal_id, amount, status, decline_reason, coupon_id, \
                coupon_amount, subsidy_amount, balance_amount, deferred_amount, subsidy_parts::jsonb, refunded, \
                created_at, updated_at \
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::int8[], $7::text[], \
                     $8::text[], $9::uuid[], $10::int8[], $11::int8[], $12::int8[], $13::int8[], $14::text[], \
                     $15::int8[], $16::timestamptz[], $17::timestamptz[]) \
           AS t(id, tenant_id, user_id, merchant_id, terminal_id, amount, status, decline_reason, coupon_id, \
                coupon_amount, subsidy_amount, balance_amount, deferred_amount, subsidy_parts, refunded, \
                created_at, updated_at)"
    );
    let upsert = format!(
        "{insert} ON CONFLICT ON CONSTRAINT payments_pkey DO UPDATE SET status = EXCLUDED.status, \
           refunded = EXCLUDED.refunded, updated_at = EXCLUDED.updated_at"
    );
    [insert, upsert]
});

/// How a batch's inserts meet a row that is already there (a taken idempotency key, a
/// used code, a payment written before).
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnConflict {
    /// Plain inserts: a conflict fails the statement, and with it the transaction. The
    /// optimistic first attempt, where conflicts are rare and send the batch step by step.
    Fail,
    /// Skip or update the conflicting rows, and say which ones were skipped.
    Resolve,
}

/// Writes the payments of a batch with one or two statements. With `OnConflict::Fail`
/// a payment made in this commit (`created_at == updated_at`) is inserted plainly; any
/// other, or one whose timestamps happen to match though it exists, is upserted (or, for
/// the latter, fails the attempt, whose careful retry upserts).
async fn upsert_payments<C: GenericClient>(
    c: &C,
    payments: &[&Payment],
    on_conflict: OnConflict,
) -> Result<(), tokio_postgres::Error> {
    let [insert_sql, upsert_sql] = &*PAYMENT_WRITES;
    let (new, changed): (Vec<&Payment>, Vec<&Payment>) = payments
        .iter()
        .partition(|p| on_conflict == OnConflict::Fail && p.created_at == p.updated_at);
    tokio::try_join!(
        write_payments(c, &new, insert_sql),
        write_payments(c, &changed, upsert_sql)
    )?;
    Ok(())
}

async fn write_payments<C: GenericClient>(
    c: &C,
    payments: &[&Payment],
    sql: &str,
) -> Result<(), tokio_postgres::Error> {
    if payments.is_empty() {
        return Ok(());
    }
    let col = |f: &dyn Fn(&Payment) -> i64| payments.iter().map(|p| f(p)).collect::<Vec<i64>>();
    let ids: Vec<Uuid> = payments.iter().map(|p| p.id.0).collect();
    let tenants: Vec<Uuid> = payments.iter().map(|p| p.tenant_id.0).collect();
    let users: Vec<Option<Uuid>> = payments.iter().map(|p| p.user_id.map(|u| u.0)).collect();
    let merchants: Vec<Uuid> = payments.iter().map(|p| p.merchant_id.0).collect();
    let terminals: Vec<Uuid> = payments.iter().map(|p| p.terminal_id.0).collect();
    let statuses: Vec<&str> = payments.iter().map(|p| p.status.as_str()).collect();
    let reasons: Vec<Option<&str>> = payments
        .iter()
        .map(|p| p.decline_reason.map(|r| r.as_str()))
        .collect();
    let coupons: Vec<Option<Uuid>> = payments.iter().map(|p| p.coupon_id.map(|c| c.0)).collect();
    let parts: Vec<String> = payments
        .iter()
        .map(|p| parts_json(&p.subsidy_parts))
        .collect();
    let created: Vec<PgTime> = payments.iter().map(|p| PgTime(p.created_at)).collect();
    let updated: Vec<PgTime> = payments.iter().map(|p| PgTime(p.updated_at)).collect();
    let st = c.prepare_cached(sql).await?;
    c.execute(
        &st,
        &[
            &ids,
            &tenants,
            &users,
            &merchants,
            &terminals,
            &col(&|p| p.amount.0),
            &statuses,
            &reasons,
            &coupons,
            &col(&|p| p.breakdown.coupon.0),
            &col(&|p| p.breakdown.subsidy.0),
            &col(&|p| p.breakdown.balance.0),
            &col(&|p| p.breakdown.deferred.0),
            &parts,
            &col(&|p| p.refunded.0),
            &created,
            &updated,
        ],
    )
    .await?;
    Ok(())
}

const INSERT_ENTRIES: &str =
    "INSERT INTO ledger_entries (tenant_id, tx_id, account, ref_id, amount, payment_id, created_at) \
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::int8[], $6::uuid[], \
                          $7::timestamptz[])";

async fn insert_entries<C: GenericClient>(
    c: &C,
    rows: &[(TenantId, &LedgerEntry, Timestamp)],
) -> Result<(), tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let tenants: Vec<Uuid> = rows.iter().map(|(t, _, _)| t.0).collect();
    let txs: Vec<Uuid> = rows.iter().map(|(_, e, _)| e.tx_id).collect();
    let accounts: Vec<&str> = rows.iter().map(|(_, e, _)| e.account.as_str()).collect();
    let refs: Vec<Option<Uuid>> = rows.iter().map(|(_, e, _)| e.ref_id).collect();
    let amounts: Vec<i64> = rows.iter().map(|(_, e, _)| e.amount).collect();
    let payments: Vec<Option<Uuid>> = rows
        .iter()
        .map(|(_, e, _)| e.payment_id.map(|p| p.0))
        .collect();
    let at: Vec<PgTime> = rows.iter().map(|(_, _, at)| PgTime(*at)).collect();
    let st = c.prepare_cached(INSERT_ENTRIES).await?;
    c.execute(
        &st,
        &[&tenants, &txs, &accounts, &refs, &amounts, &payments, &at],
    )
    .await?;
    Ok(())
}

const INSERT_OUTBOX: &str = "INSERT INTO outbox_pages (id, created_at, events) VALUES ($1, $2, $3)";

/// Writes a transaction's page of outbox events (`OutboxPage`), if it has any.
async fn revoke_terminal_tokens<C: GenericClient>(c: &C, id: TerminalId) -> StoreResult<()> {
    c.execute(
        "DELETE FROM tokens WHERE kind = 'terminal' AND subject_id = $1",
        &[&id.0],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

pub(crate) async fn insert_outbox<C: GenericClient>(
    c: &C,
    page: Option<&OutboxPage>,
) -> Result<(), tokio_postgres::Error> {
    let Some(page) = page else {
        return Ok(());
    };
    let st = c.prepare_cached(INSERT_OUTBOX).await?;
    c.execute(&st, &[&page.key.0, &PgTime(page.created_at), &page.json])
        .await?;
    Ok(())
}

/// The six reads of `load_wallet`, built once. One round trip takes all six, the tenant
/// check included (a user of another tenant is `NotFound`, whatever the other five found).
static WALLET_READS: std::sync::LazyLock<[String; 6]> = std::sync::LazyLock::new(|| {
    [
        "SELECT 1 FROM users WHERE tenant_id = $1 AND id = $2".to_string(),
        format!("SELECT {WALLET_COLS} FROM wallets WHERE user_id = $1"),
        // Live accounts only: an expired one pays for nothing and is refunded into no
        // more (its share goes to its funding, or to cash, SPEC §6), and a cardholder
        // with years of daily subsidies would otherwise carry all of them in memory.
        format!(
            "SELECT {SUBSIDY_COLS} FROM subsidy_accounts WHERE user_id = $1 \
             AND (expires_at IS NULL OR expires_at > $2) ORDER BY id"
        ),
        format!(
            "SELECT {COUPON_COLS} FROM coupons WHERE user_id = $1 AND expires_at > $2 ORDER BY id"
        ),
        "SELECT at FROM risk_events WHERE user_id = $1 AND at > $2 ORDER BY at".to_string(),
        format!(
            "SELECT {PAYMENT_COLS} FROM payments WHERE user_id = $1 \
             AND status IN ('accepted', 'unsettled') ORDER BY id"
        ),
    ]
});

/// A batch's wallet rows as the array parameters `$1`–`$12` (`WalletParams`), each with
/// its place in them (`ord`).
static WALLET_ROWS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "unnest($1::uuid[], $2::uuid[], $3::int8[], $4::int8[], $5::int8[], $6::bool[], $7::bool[], \
                $8::timestamptz[], $9::int4[], $10::text[], $11::timestamptz[], $12::int4[]) \
           AS t({WALLET_COLS}, ord)"
    )
});

/// The two statements of `write_wallets`, built once: the insert of new wallets and the
/// fenced update of the others, both over the batch's rows (each with its place, `ord`).
static WALLET_WRITES: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
    let rows = &*WALLET_ROWS;
    [
        format!(
            "WITH t AS (SELECT * FROM {rows}), \
                  ins AS (INSERT INTO wallets ({WALLET_COLS}) SELECT {WALLET_COLS} FROM t \
                          ON CONFLICT (user_id) DO NOTHING RETURNING user_id) \
             SELECT t.ord FROM t JOIN ins USING (user_id)"
        ),
        format!(
            "UPDATE wallets w SET balance = t.balance, arrears = t.arrears, version = t.version, \
               agreement_signed = t.agreement_signed, frozen = t.frozen, frozen_until = t.frozen_until, \
               freeze_count = t.freeze_count, reminded_on = t.reminded_on, updated_at = t.updated_at \
             FROM {rows} \
             WHERE w.user_id = t.user_id AND w.tenant_id = t.tenant_id AND w.version = t.version - 1 \
             RETURNING t.ord"
        ),
    ]
});

/// The wallet writes of a batch sent whole (`commit_at_once`): new wallets by a plain
/// insert (a row already there fails it), the others by the fenced update, which fails
/// the transaction unless it wrote every row (`$13` of them).
static CHECKED_WALLET_WRITES: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
    let rows = &*WALLET_ROWS;
    [
        format!("INSERT INTO wallets ({WALLET_COLS}) SELECT {WALLET_COLS} FROM {rows}"),
        format!(
            "WITH written AS (UPDATE wallets w SET balance = t.balance, arrears = t.arrears, version = t.version, \
               agreement_signed = t.agreement_signed, frozen = t.frozen, frozen_until = t.frozen_until, \
               freeze_count = t.freeze_count, reminded_on = t.reminded_on, updated_at = t.updated_at \
             FROM {rows} \
             WHERE w.user_id = t.user_id AND w.tenant_id = t.tenant_id AND w.version = t.version - 1 \
             RETURNING t.ord) \
             SELECT onecard_expect(count(*) = $13, 'wallet fenced') FROM written"
        ),
    ]
});

/// The columns of `wallets` rows as the array parameters `$1`–`$12` of the wallet writes.
struct WalletParams {
    users: Vec<Uuid>,
    tenants: Vec<Uuid>,
    balances: Vec<i64>,
    arrears: Vec<i64>,
    versions: Vec<i64>,
    signed: Vec<bool>,
    frozen: Vec<bool>,
    until: Vec<Option<PgTime>>,
    counts: Vec<i32>,
    reminded: Vec<Option<String>>,
    updated: Vec<PgTime>,
    ords: Vec<i32>,
}

impl WalletParams {
    fn of(w: &[&WalletRow]) -> Self {
        WalletParams {
            users: w.iter().map(|w| w.user_id.0).collect(),
            tenants: w.iter().map(|w| w.tenant_id.0).collect(),
            balances: w.iter().map(|w| w.balance.0).collect(),
            arrears: w.iter().map(|w| w.arrears.0).collect(),
            versions: w.iter().map(|w| w.version).collect(),
            signed: w.iter().map(|w| w.agreement_signed).collect(),
            frozen: w.iter().map(|w| w.frozen).collect(),
            until: w.iter().map(|w| w.frozen_until.map(PgTime)).collect(),
            counts: w.iter().map(|w| w.freeze_count).collect(),
            reminded: w.iter().map(|w| w.reminded_on.clone()).collect(),
            updated: w.iter().map(|w| PgTime(w.updated_at)).collect(),
            ords: (0..w.len() as i32).collect(),
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 12] {
        [
            &self.users,
            &self.tenants,
            &self.balances,
            &self.arrears,
            &self.versions,
            &self.signed,
            &self.frozen,
            &self.until,
            &self.counts,
            &self.reminded,
            &self.updated,
            &self.ords,
        ]
    }
}

/// Writes the wallets of a batch sent whole (`CHECKED_WALLET_WRITES`): both statements
/// are sent at once, and either fails the transaction if a wallet's version moved on.
async fn write_wallets_checked<C: GenericClient>(
    c: &C,
    wallets: &[&WalletRow],
) -> Result<(), tokio_postgres::Error> {
    let (new, old): (Vec<&WalletRow>, Vec<&WalletRow>) =
        wallets.iter().partition(|w| w.version == 1);
    let [insert_sql, update_sql] = &*CHECKED_WALLET_WRITES;
    let insert = async {
        if new.is_empty() {
            return Ok(());
        }
        let p = WalletParams::of(&new);
        let st = c.prepare_cached(insert_sql).await?;
        c.execute(&st, &p.params()).await.map(|_| ())
    };
    let update = async {
        if old.is_empty() {
            return Ok(());
        }
        let p = WalletParams::of(&old);
        let expected = old.len() as i64;
        let st = c.prepare_cached(update_sql).await?;
        let mut params = p.params().to_vec();
        params.push(&expected);
        c.execute(&st, &params).await.map(|_| ())
    };
    tokio::try_join!(insert, update)?;
    Ok(())
}

/// Writes the wallets of a batch, fenced by version, and answers for each whether its row
/// was written. A wallet at version 1 is new and is inserted (a row that appeared
/// meanwhile, say from a subsidy grant, fences it); any other is updated only from the
/// version before it. Both statements answer the written rows' places in them. A plain
/// `UPDATE` instead of `INSERT … ON CONFLICT DO UPDATE` spares each row the speculative
/// insert and the separate row lock of an upsert. Should one batch hold two commits of
/// one wallet (two nodes cannot share a batch, so only a bug would do it), at most one
/// of them is written.
async fn write_wallets<C: GenericClient>(
    c: &C,
    wallets: &[&WalletRow],
) -> Result<Vec<bool>, tokio_postgres::Error> {
    let mut written = vec![false; wallets.len()];
    let mut seen_new = HashSet::new();
    let (new, old): (Vec<usize>, Vec<usize>) = (0..wallets.len())
        .filter(|i| wallets[*i].version != 1 || seen_new.insert(wallets[*i].user_id))
        .partition(|i| wallets[*i].version == 1);
    let [insert_sql, update_sql] = &*WALLET_WRITES;
    for (rows, sql) in [(new, insert_sql), (old, update_sql)] {
        if rows.is_empty() {
            continue;
        }
        let w: Vec<&WalletRow> = rows.iter().map(|i| wallets[*i]).collect();
        let st = c.prepare_cached(sql).await?;
        let returned = c.query(&st, &WalletParams::of(&w).params()).await?;
        for r in returned {
            let at = usize::try_from(r.get::<_, i32>(0)).ok();
            if let Some(at) = at.and_then(|k| rows.get(k)) {
                written[*at] = true;
            }
        }
    }
    Ok(written)
}

/// Inserts `rows` rows that must each hold a unique key, with `insert` (an `INSERT …
/// SELECT` over `params`), and answers, for each row in order, whether its key was free.
/// With `OnConflict::Fail` a taken key fails the statement instead, and every answer is
/// yes. With `Resolve` rows whose key is taken are skipped; the statement returns the
/// inserted keys (`returning`, read by `key_of`), matched against the rows' `keys`, made
/// only then. Each inserted key is taken by its first row, so a key given twice in one
/// batch (inserted once) is free for the first row only.
async fn insert_unique<C: GenericClient, K: Eq + std::hash::Hash>(
    c: &C,
    insert: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    rows: usize,
    (returning, key_of, keys): (&str, fn(&Row) -> K, impl FnOnce() -> Vec<K>),
    on_conflict: OnConflict,
) -> Result<Vec<bool>, tokio_postgres::Error> {
    if rows == 0 {
        return Ok(Vec::new());
    }
    if on_conflict == OnConflict::Fail {
        let st = c.prepare_cached(insert).await?;
        c.execute(&st, params).await?;
        return Ok(vec![true; rows]);
    }
    let st = c
        .prepare_cached(&format!(
            "{insert} ON CONFLICT DO NOTHING RETURNING {returning}"
        ))
        .await?;
    let mut inserted: HashSet<K> = c.query(&st, params).await?.iter().map(key_of).collect();
    Ok(keys().iter().map(|k| inserted.remove(k)).collect())
}

/// The commits (by index, among `idx`) that change a payment no longer stored as their
/// decision saw it. The payments that are are locked until the transaction ends, so that
/// no other writer changes them before this one does. The lock waits for a writer that
/// holds it and then checks the row as that writer left it.
async fn changed_payments<C: GenericClient>(
    c: &C,
    commits: &[WalletCommit],
    idx: &[usize],
) -> Result<Vec<usize>, tokio_postgres::Error> {
    let fences: Vec<(usize, &PaymentFence)> = idx
        .iter()
        .flat_map(|i| commits[*i].payment_fences.iter().map(move |f| (*i, f)))
        .collect();
    if fences.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = fences.iter().map(|(_, f)| f.id.0).collect();
    let statuses: Vec<&str> = fences.iter().map(|(_, f)| f.status.as_str()).collect();
    let refunded: Vec<i64> = fences.iter().map(|(_, f)| f.refunded.0).collect();
    let ords: Vec<i32> = (0..fences.len() as i32).collect();
    let st = c
        .prepare_cached(
            "SELECT t.ord FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::int4[])                AS t(id, status, refunded, ord)              JOIN payments p ON p.id = t.id              WHERE p.status = t.status AND p.refunded = t.refunded              ORDER BY p.id FOR UPDATE OF p",
        )
        .await?;
    let mut unchanged = vec![false; fences.len()];
    for r in c.query(&st, &[&ids, &statuses, &refunded, &ords]).await? {
        if let Some(u) = usize::try_from(r.get::<_, i32>(0))
            .ok()
            .and_then(|k| unchanged.get_mut(k))
        {
            *u = true;
        }
    }
    let mut changed: Vec<usize> = fences
        .iter()
        .zip(unchanged)
        .filter(|(_, unchanged)| !unchanged)
        .map(|((i, _), _)| *i)
        .collect();
    changed.dedup();
    Ok(changed)
}

/// The commits (by index) whose card check fails: they require an active card and their
/// cardholder is not active, or no longer exists.
async fn inactive_cards<C: GenericClient>(
    c: &C,
    commits: &[WalletCommit],
) -> Result<Vec<usize>, tokio_postgres::Error> {
    let idx: Vec<usize> = (0..commits.len())
        .filter(|i| commits[*i].require_active)
        .collect();
    if idx.is_empty() {
        return Ok(Vec::new());
    }
    let users: Vec<Uuid> = idx.iter().map(|i| commits[*i].wallet.user_id.0).collect();
    let st = c
        .prepare_cached("SELECT id FROM users WHERE id = ANY($1) AND status = 'active'")
        .await?;
    let active: HashSet<Uuid> = c
        .query(&st, &[&users])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(idx
        .into_iter()
        .filter(|i| !active.contains(&commits[*i].wallet.user_id.0))
        .collect())
}

const INSERT_REQUESTS: &str = "INSERT INTO money_requests (scope, key, request_hash, status, body, created_at) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::int4[], $5::bytea[], $6::timestamptz[])";

/// Inserts the idempotency records of `idx` (commits that carry one) and answers, for
/// each, whether its key was free (`insert_unique`).
async fn insert_requests<C: GenericClient>(
    c: &C,
    commits: &[WalletCommit],
    idx: &[usize],
    on_conflict: OnConflict,
) -> Result<Vec<bool>, tokio_postgres::Error> {
    let reqs: Vec<&MoneyRequest> = idx
        .iter()
        .filter_map(|i| commits[*i].request.as_ref())
        .collect();
    let scopes: Vec<&str> = reqs.iter().map(|r| r.scope.as_str()).collect();
    let keys: Vec<&str> = reqs.iter().map(|r| r.key.as_str()).collect();
    let hashes: Vec<&[u8]> = reqs.iter().map(|r| &r.request_hash[..]).collect();
    let statuses: Vec<i32> = reqs.iter().map(|r| i32::from(r.status)).collect();
    let bodies: Vec<&[u8]> = reqs.iter().map(|r| r.body.as_slice()).collect();
    let at: Vec<PgTime> = idx.iter().map(|i| PgTime(commits[*i].at)).collect();
    insert_unique(
        c,
        INSERT_REQUESTS,
        &[&scopes, &keys, &hashes, &statuses, &bodies, &at],
        reqs.len(),
        (
            "scope, key",
            |r| (r.get(0), r.get(1)),
            || {
                reqs.iter()
                    .map(|r| (r.scope.clone(), r.key.clone()))
                    .collect()
            },
        ),
        on_conflict,
    )
    .await
}

const INSERT_NONCES: &str = "INSERT INTO used_codes (nonce, user_id, used_at) \
     SELECT * FROM unnest($1::bytea[], $2::uuid[], $3::timestamptz[])";

/// Inserts the used code nonces of `idx` (commits that carry one) and answers, for each,
/// whether its nonce was unused (`insert_unique`).
async fn insert_nonces<C: GenericClient>(
    c: &C,
    commits: &[WalletCommit],
    idx: &[usize],
    on_conflict: OnConflict,
) -> Result<Vec<bool>, tokio_postgres::Error> {
    let nonces: Vec<&[u8]> = idx
        .iter()
        .filter_map(|i| commits[*i].used_nonce.as_deref())
        .collect();
    let users: Vec<Uuid> = idx.iter().map(|i| commits[*i].wallet.user_id.0).collect();
    let at: Vec<PgTime> = idx.iter().map(|i| PgTime(commits[*i].at)).collect();
    insert_unique(
        c,
        INSERT_NONCES,
        &[&nonces, &users, &at],
        nonces.len(),
        (
            "nonce",
            |r| r.get(0),
            || nonces.iter().map(|n| n.to_vec()).collect(),
        ),
        on_conflict,
    )
    .await
}

const INSERT_TOPUPS: &str = "INSERT INTO topups \
       (id, tenant_id, user_id, amount, reference, credited_by, created_at) \
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::int8[], $5::text[], $6::text[], \
                          $7::timestamptz[])";

/// Inserts the top-ups' register lines of `idx` (commits that carry one) and answers,
/// for each, whether its reference was free in its tenant (`insert_unique`; a line
/// without a reference always is).
async fn insert_topups<C: GenericClient>(
    c: &C,
    commits: &[WalletCommit],
    idx: &[usize],
    on_conflict: OnConflict,
) -> Result<Vec<bool>, tokio_postgres::Error> {
    let lines: Vec<(TenantId, &RegisterRecord, Timestamp)> = idx
        .iter()
        .filter_map(|i| {
            let c = &commits[*i];
            c.register.as_ref().map(|r| (c.wallet.tenant_id, r, c.at))
        })
        .collect();
    let ids: Vec<Uuid> = lines.iter().map(|(_, r, _)| r.id).collect();
    let tenants: Vec<Uuid> = lines.iter().map(|(t, _, _)| t.0).collect();
    let users: Vec<Uuid> = lines.iter().map(|(_, r, _)| r.user_id.0).collect();
    let amounts: Vec<i64> = lines.iter().map(|(_, r, _)| r.amount.0).collect();
    let references: Vec<Option<&str>> = lines
        .iter()
        .map(|(_, r, _)| r.reference.as_deref())
        .collect();
    let by: Vec<&str> = lines.iter().map(|(_, r, _)| r.by.as_str()).collect();
    let at: Vec<PgTime> = lines.iter().map(|(_, _, at)| PgTime(*at)).collect();
    insert_unique(
        c,
        INSERT_TOPUPS,
        &[&ids, &tenants, &users, &amounts, &references, &by, &at],
        lines.len(),
        ("id", |r| r.get::<_, Uuid>(0), || ids.clone()),
        on_conflict,
    )
    .await
}

/// The commits of `commits` (by index) whose register line is a top-up's.
fn with_topup(commits: &[WalletCommit], live: impl Fn(usize) -> bool) -> Vec<usize> {
    (0..commits.len())
        .filter(|i| live(*i))
        .filter(|i| {
            commits[*i]
                .register
                .as_ref()
                .is_some_and(|r| r.kind == RegisterKind::TopUp)
        })
        .collect()
}

const UPSERT_SUBSIDIES: &str = "INSERT INTO subsidy_accounts (id, tenant_id, user_id, rule_id, name, balance, merchant_ids, \
        expires_at, created_at) \
      SELECT id, tenant_id, user_id, rule_id, name, balance, \
        ARRAY(SELECT jsonb_array_elements_text(merchant_ids::jsonb)::uuid), expires_at, created_at \
      FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::int8[], $7::text[], \
                  $8::timestamptz[], $9::timestamptz[]) \
        AS t(id, tenant_id, user_id, rule_id, name, balance, merchant_ids, expires_at, created_at) \
      ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance";
const UPSERT_COUPONS: &str = "INSERT INTO coupons (id, tenant_id, user_id, name, discount, threshold, merchant_ids, valid_from, \
        expires_at, used_payment, created_at) \
      SELECT id, tenant_id, user_id, name, discount, threshold, \
        ARRAY(SELECT jsonb_array_elements_text(merchant_ids::jsonb)::uuid), valid_from, expires_at, \
        used_payment, created_at \
      FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::int8[], $6::int8[], $7::text[], \
                  $8::timestamptz[], $9::timestamptz[], $10::uuid[], $11::timestamptz[]) \
        AS t(id, tenant_id, user_id, name, discount, threshold, merchant_ids, valid_from, expires_at, \
             used_payment, created_at) \
      ON CONFLICT (id) DO UPDATE SET used_payment = EXCLUDED.used_payment";
const INSERT_RISKS: &str = "INSERT INTO risk_events (id, user_id, kind, at) \
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[])";
/// Writes the reversals onto their top-ups' lines, and fails the transaction unless every
/// one of those top-ups was still standing (a batch sent whole checks it so; the careful
/// path has checked and locked them before: `reversed_topups`).
const UPDATE_TOPUP_REVERSALS: &str = "WITH u AS ( \
       UPDATE topups t \
          SET reversal_id = r.reversal_id, reversed_at = r.at, reversed_by = r.by, \
              reversal_reason = r.reason \
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::text[], \
                     $6::text[]) AS r(topup_id, tenant_id, reversal_id, at, by, reason) \
        WHERE t.id = r.topup_id AND t.tenant_id = r.tenant_id AND t.reversal_id IS NULL \
        RETURNING 1) \
     SELECT onecard_expect(count(*) = cardinality($1::uuid[]), 'top-up reversed') FROM u";

/// The commits (by index, among `idx`) that reverse a top-up reversed since their
/// decision saw it. The top-ups still standing are locked until the transaction ends.
async fn reversed_topups<C: GenericClient>(
    c: &C,
    commits: &[WalletCommit],
    idx: &[usize],
) -> Result<Vec<usize>, tokio_postgres::Error> {
    let wanted: Vec<(usize, Uuid)> = idx
        .iter()
        .filter_map(|i| Some((*i, commits[*i].topup_reversal.as_ref()?.topup_id)))
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = wanted.iter().map(|(_, t)| *t).collect();
    let standing: HashSet<Uuid> = c
        .query(
            "SELECT id FROM topups WHERE id = ANY($1) AND reversal_id IS NULL \
             ORDER BY id FOR UPDATE",
            &[&ids],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(wanted
        .into_iter()
        .filter(|(_, t)| !standing.contains(t))
        .map(|(i, _)| i)
        .collect())
}
const INSERT_WITHDRAWALS: &str = "INSERT INTO withdrawals \
       (id, tenant_id, user_id, amount, reference, paid_by, created_at) \
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::int8[], $5::text[], $6::text[], \
                          $7::timestamptz[])";

/// Everything of the given commits but their idempotency keys, nonces, top-ups' register
/// lines and wallet rows: subsidy accounts, coupons, payments, ledger entries, outbox
/// events, risk events, withdrawals' register lines and top-ups' reversals,
/// as pipelined statements. A batch sent whole (`commit_at_once`) runs it too, so each
/// statement here must be one of `PIPELINE_STATEMENTS` and be sent with nothing awaited
/// before it but its `prepare_cached`; otherwise it could go after the batch's `COMMIT`
/// (`commit_at_once` finds a statement missing from the list by the statement cache).
async fn write_rest<C: GenericClient>(
    c: &C,
    ok: &[&WalletCommit],
    on_conflict: OnConflict,
) -> Result<(), tokio_postgres::Error> {
    let subsidies: Vec<(TenantId, &SubsidyAccount)> = ok
        .iter()
        .flat_map(|c| c.subsidies.iter().map(move |s| (c.wallet.tenant_id, s)))
        .collect();
    let coupons: Vec<(TenantId, &Coupon)> = ok
        .iter()
        .flat_map(|c| c.coupons.iter().map(move |s| (c.wallet.tenant_id, s)))
        .collect();
    let payments: Vec<&Payment> = ok.iter().flat_map(|c| c.payments.iter()).collect();
    let entries: Vec<(TenantId, &LedgerEntry, Timestamp)> = ok
        .iter()
        .flat_map(|c| c.entries.iter().map(move |e| (c.wallet.tenant_id, e, c.at)))
        .collect();
    let outbox = OutboxPage::of_commits(ok.iter().copied());
    let risks: Vec<(Uuid, &str, Timestamp)> = ok
        .iter()
        .flat_map(|c| {
            c.risk_events
                .iter()
                .map(move |(k, at)| (c.wallet.user_id.0, k.as_str(), *at))
        })
        .collect();
    let withdrawals: Vec<(TenantId, &RegisterRecord, Timestamp)> = ok
        .iter()
        .filter_map(|c| c.register.as_ref().map(|w| (c.wallet.tenant_id, w, c.at)))
        .filter(|(_, w, _)| w.kind == RegisterKind::Withdrawal)
        .collect();
    let reversals: Vec<(TenantId, &TopUpReversal, Timestamp)> = ok
        .iter()
        .filter_map(|c| {
            let r = c.topup_reversal.as_ref()?;
            Some((c.wallet.tenant_id, r, c.at))
        })
        .collect();
    let reversals_fut = async {
        if reversals.is_empty() {
            return Ok(());
        }
        let topups: Vec<Uuid> = reversals.iter().map(|(_, r, _)| r.topup_id).collect();
        let tenants: Vec<Uuid> = reversals.iter().map(|(t, _, _)| t.0).collect();
        let ids: Vec<Uuid> = reversals.iter().map(|(_, r, _)| r.reversal_id).collect();
        let at: Vec<PgTime> = reversals.iter().map(|(_, _, at)| PgTime(*at)).collect();
        let by: Vec<&str> = reversals.iter().map(|(_, r, _)| r.by.as_str()).collect();
        let reasons: Vec<&str> = reversals
            .iter()
            .map(|(_, r, _)| r.reason.as_str())
            .collect();
        let st = c.prepare_cached(UPDATE_TOPUP_REVERSALS).await?;
        c.execute(&st, &[&topups, &tenants, &ids, &at, &by, &reasons])
            .await
            .map(|_| ())
    };
    let subsidies_fut = async {
        if subsidies.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = subsidies.iter().map(|(_, s)| s.id.0).collect();
        let tenants: Vec<Uuid> = subsidies.iter().map(|(t, _)| t.0).collect();
        let users: Vec<Uuid> = subsidies.iter().map(|(_, s)| s.user_id.0).collect();
        let rules: Vec<Option<Uuid>> = subsidies
            .iter()
            .map(|(_, s)| s.rule_id.map(|r| r.0))
            .collect();
        let names: Vec<&str> = subsidies.iter().map(|(_, s)| s.name.as_str()).collect();
        let balances: Vec<i64> = subsidies.iter().map(|(_, s)| s.balance.0).collect();
        let merchants: Vec<String> = subsidies
            .iter()
            .map(|(_, s)| ids_json(&s.merchant_ids))
            .collect();
        let expires: Vec<Option<PgTime>> = subsidies
            .iter()
            .map(|(_, s)| s.expires_at.map(PgTime))
            .collect();
        let created: Vec<PgTime> = subsidies
            .iter()
            .map(|(_, s)| PgTime(s.created_at))
            .collect();
        let st = c.prepare_cached(UPSERT_SUBSIDIES).await?;
        c.execute(
            &st,
            &[
                &ids, &tenants, &users, &rules, &names, &balances, &merchants, &expires, &created,
            ],
        )
        .await
        .map(|_| ())
    };
    let coupons_fut = async {
        if coupons.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = coupons.iter().map(|(_, c)| c.id.0).collect();
        let tenants: Vec<Uuid> = coupons.iter().map(|(t, _)| t.0).collect();
        let users: Vec<Uuid> = coupons.iter().map(|(_, c)| c.user_id.0).collect();
        let names: Vec<&str> = coupons.iter().map(|(_, c)| c.name.as_str()).collect();
        let discounts: Vec<i64> = coupons.iter().map(|(_, c)| c.discount.0).collect();
        let thresholds: Vec<i64> = coupons.iter().map(|(_, c)| c.threshold.0).collect();
        let merchants: Vec<String> = coupons
            .iter()
            .map(|(_, c)| ids_json(&c.merchant_ids))
            .collect();
        let from: Vec<PgTime> = coupons.iter().map(|(_, c)| PgTime(c.valid_from)).collect();
        let expires: Vec<PgTime> = coupons.iter().map(|(_, c)| PgTime(c.expires_at)).collect();
        let used: Vec<Option<Uuid>> = coupons
            .iter()
            .map(|(_, c)| c.used_payment.map(|p| p.0))
            .collect();
        let created: Vec<PgTime> = coupons.iter().map(|(_, c)| PgTime(c.created_at)).collect();
        let st = c.prepare_cached(UPSERT_COUPONS).await?;
        c.execute(
            &st,
            &[
                &ids,
                &tenants,
                &users,
                &names,
                &discounts,
                &thresholds,
                &merchants,
                &from,
                &expires,
                &used,
                &created,
            ],
        )
        .await
        .map(|_| ())
    };
    let risks_fut = async {
        if risks.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = risks.iter().map(|_| Uuid::now_v7()).collect();
        let users: Vec<Uuid> = risks.iter().map(|r| r.0).collect();
        let kinds: Vec<&str> = risks.iter().map(|r| r.1).collect();
        let at: Vec<PgTime> = risks.iter().map(|r| PgTime(r.2)).collect();
        let st = c.prepare_cached(INSERT_RISKS).await?;
        c.execute(&st, &[&ids, &users, &kinds, &at])
            .await
            .map(|_| ())
    };
    let withdrawals_fut = async {
        if withdrawals.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = withdrawals.iter().map(|(_, w, _)| w.id).collect();
        let tenants: Vec<Uuid> = withdrawals.iter().map(|(t, _, _)| t.0).collect();
        let users: Vec<Uuid> = withdrawals.iter().map(|(_, w, _)| w.user_id.0).collect();
        let amounts: Vec<i64> = withdrawals.iter().map(|(_, w, _)| w.amount.0).collect();
        let references: Vec<Option<&str>> = withdrawals
            .iter()
            .map(|(_, w, _)| w.reference.as_deref())
            .collect();
        let by: Vec<&str> = withdrawals.iter().map(|(_, w, _)| w.by.as_str()).collect();
        let at: Vec<PgTime> = withdrawals.iter().map(|(_, _, at)| PgTime(*at)).collect();
        let st = c.prepare_cached(INSERT_WITHDRAWALS).await?;
        c.execute(
            &st,
            &[&ids, &tenants, &users, &amounts, &references, &by, &at],
        )
        .await
        .map(|_| ())
    };
    tokio::try_join!(
        subsidies_fut,
        coupons_fut,
        upsert_payments(c, &payments, on_conflict),
        insert_entries(c, &entries),
        insert_outbox(c, outbox.as_ref()),
        risks_fut,
        withdrawals_fut,
        reversals_fut
    )?;
    Ok(())
}

/// The checks of a batch sent whole (`commit_at_once`), as statements that fail the
/// transaction when they do not hold (`onecard_expect`, PostgreSQL migration V9).
const EXPECT_UNCHANGED_PAYMENTS: &str =
    "SELECT onecard_expect(count(*) = cardinality($1::uuid[]), 'payment changed') \
     FROM (SELECT 1 FROM unnest($1::uuid[], $2::text[], $3::int8[]) AS t(id, status, refunded) \
           JOIN payments p ON p.id = t.id WHERE p.status = t.status AND p.refunded = t.refunded \
           ORDER BY p.id FOR UPDATE OF p) AS unchanged";
const EXPECT_ACTIVE_CARDS: &str =
    "SELECT onecard_expect(count(*) = cardinality($1::uuid[]), 'card inactive') \
     FROM users WHERE id = ANY($1) AND status = 'active'";

/// Every statement a batch sent whole may hold. They are prepared before the batch is
/// sent (`commit_at_once`), so that none of its statements waits for a `PREPARE` round
/// trip, which would send it after the batch's `COMMIT`, outside the transaction.
static PIPELINE_STATEMENTS: std::sync::LazyLock<[&str; 16]> = std::sync::LazyLock::new(|| {
    let [insert_payments, upsert_payments] = &*PAYMENT_WRITES;
    let [insert_wallets, update_wallets] = &*CHECKED_WALLET_WRITES;
    [
        EXPECT_UNCHANGED_PAYMENTS,
        EXPECT_ACTIVE_CARDS,
        INSERT_REQUESTS,
        INSERT_NONCES,
        insert_wallets,
        update_wallets,
        insert_payments,
        upsert_payments,
        INSERT_ENTRIES,
        INSERT_OUTBOX,
        UPSERT_SUBSIDIES,
        UPSERT_COUPONS,
        INSERT_RISKS,
        INSERT_WITHDRAWALS,
        INSERT_TOPUPS,
        UPDATE_TOPUP_REVERSALS,
    ]
});

/// The commits of `commits` that change stored payments fail the transaction unless each
/// of those payments is still as their decisions saw it, and lock them.
async fn expect_unchanged_payments<C: GenericClient>(
    c: &C,
    commits: &[WalletCommit],
) -> Result<(), tokio_postgres::Error> {
    let fences: Vec<&PaymentFence> = commits.iter().flat_map(|c| &c.payment_fences).collect();
    if fences.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = fences.iter().map(|f| f.id.0).collect();
    let statuses: Vec<&str> = fences.iter().map(|f| f.status.as_str()).collect();
    let refunded: Vec<i64> = fences.iter().map(|f| f.refunded.0).collect();
    let st = c.prepare_cached(EXPECT_UNCHANGED_PAYMENTS).await?;
    c.execute(&st, &[&ids, &statuses, &refunded]).await?;
    Ok(())
}

/// Fails the transaction unless every commit that requires an active card has an active
/// cardholder. The batch holds one commit a wallet at most.
async fn expect_active_cards<C: GenericClient>(
    c: &C,
    commits: &[WalletCommit],
) -> Result<(), tokio_postgres::Error> {
    let users: Vec<Uuid> = commits
        .iter()
        .filter(|c| c.require_active)
        .map(|c| c.wallet.user_id.0)
        .collect();
    if users.is_empty() {
        return Ok(());
    }
    let st = c.prepare_cached(EXPECT_ACTIVE_CARDS).await?;
    c.execute(&st, &[&users]).await?;
    Ok(())
}

/// The optimistic attempt at a batch, in one round trip: `BEGIN`, every statement of
/// every commit (plain inserts, and checks that fail the transaction: payments unchanged,
/// cards active, wallets at their versions) and `COMMIT`, sent at once. PostgreSQL runs
/// them in the order sent; should one fail (a taken key or a used code is a unique
/// violation, a check raises), the statements after it fail as the transaction is
/// aborted, and `COMMIT` rolls it back. Answers whether the batch committed. A batch
/// with two commits of one wallet (only a bug would make one) is not tried at all.
///
/// Every statement is sent before `COMMIT` because each is sent when its future is first
/// polled: they are all prepared beforehand (`PIPELINE_STATEMENTS`), and no statement
/// function awaits anything before it sends.
async fn commit_at_once(
    client: &deadpool_postgres::Object,
    commits: &[WalletCommit],
) -> Result<bool, tokio_postgres::Error> {
    let mut users = HashSet::new();
    if !commits.iter().all(|c| users.insert(c.wallet.user_id)) {
        return Ok(false);
    }
    futures_util::future::try_join_all(
        PIPELINE_STATEMENTS
            .iter()
            .map(|sql| client.prepare_cached(sql)),
    )
    .await?;
    let prepared = client.statement_cache.size();
    let with_req: Vec<usize> = (0..commits.len())
        .filter(|i| commits[*i].request.is_some())
        .collect();
    let with_nonce: Vec<usize> = (0..commits.len())
        .filter(|i| commits[*i].used_nonce.is_some())
        .collect();
    let topups = with_topup(commits, |_| true);
    let wallets: Vec<&WalletRow> = commits.iter().map(|c| &c.wallet).collect();
    let every: Vec<&WalletCommit> = commits.iter().collect();
    let (begin, attempt, commit) = tokio::join!(
        client.batch_execute("BEGIN"),
        async {
            // In this order: the payment check locks the payments before the batch's own
            // writes could be what it reads.
            tokio::try_join!(
                expect_unchanged_payments(client, commits),
                expect_active_cards(client, commits),
                insert_requests(client, commits, &with_req, OnConflict::Fail),
                insert_nonces(client, commits, &with_nonce, OnConflict::Fail),
                insert_topups(client, commits, &topups, OnConflict::Fail),
                write_wallets_checked(client, &wallets),
                write_rest(client, &every, OnConflict::Fail),
            )
        },
        client.batch_execute("COMMIT"),
    );
    // A statement whose SQL is not in `PIPELINE_STATEMENTS` was prepared while the batch
    // was being sent: it waited for its `PREPARE`, and so went after `COMMIT`, outside
    // the transaction. The tests (debug builds) stop at it; a release build says so.
    let unlisted = client.statement_cache.size().saturating_sub(prepared);
    debug_assert_eq!(
        unlisted, 0,
        "a batch statement missing from PIPELINE_STATEMENTS"
    );
    if unlisted > 0 {
        tracing::error!(
            unlisted,
            "a statement of a batch sent whole was not prepared before it and ran after its \
             COMMIT: add its SQL to PIPELINE_STATEMENTS"
        );
    }
    begin?;
    match attempt {
        Ok(_) => commit.map(|()| true),
        // A statement the database refused: the transaction was rolled back, and the
        // careful path finds out which commit it was, or meets the error again.
        Err(e) if e.as_db_error().is_some() => commit.map(|()| false),
        Err(e) => Err(e),
    }
}

/// One batch in one transaction. `Err` means the transaction was rolled back.
///
/// First optimistically (`commit_at_once`); should that not commit, the batch goes again
/// step by step, dropping the commits that conflict.
async fn commit_batch(
    client: &mut deadpool_postgres::Object,
    commits: &[WalletCommit],
) -> Result<Vec<Result<(), CommitError>>, tokio_postgres::Error> {
    if commit_at_once(client, commits).await? {
        return Ok(vec![Ok(()); commits.len()]);
    }
    let tx = client.transaction().await?;
    let mut results: Vec<Result<(), CommitError>> = vec![Ok(()); commits.len()];

    // 0. Cards: a commit that required an active card whose cardholder is not active
    // drops before it writes anything.
    for i in inactive_cards(&tx, commits).await? {
        results[i] = Err(CommitError::CardInactive);
    }

    // 1. Idempotency keys: a taken key drops its commit.
    let with_req: Vec<usize> = (0..commits.len())
        .filter(|i| results[*i].is_ok() && commits[*i].request.is_some())
        .collect();
    for (i, free) in with_req
        .iter()
        .zip(insert_requests(&tx, commits, &with_req, OnConflict::Resolve).await?)
    {
        if !free {
            results[*i] = Err(CommitError::Duplicate);
        }
    }

    // 2. Code nonces: a used nonce drops its commit.
    let with_nonce: Vec<usize> = (0..commits.len())
        .filter(|i| results[*i].is_ok() && commits[*i].used_nonce.is_some())
        .collect();
    for (i, free) in with_nonce
        .iter()
        .zip(insert_nonces(&tx, commits, &with_nonce, OnConflict::Resolve).await?)
    {
        if !free {
            results[*i] = Err(CommitError::NonceUsed);
        }
    }

    // 3. Top-ups' references: one credited before drops its commit.
    let topups = with_topup(commits, |i| results[i].is_ok());
    for (i, free) in topups
        .iter()
        .zip(insert_topups(&tx, commits, &topups, OnConflict::Resolve).await?)
    {
        if !free {
            results[*i] = Err(CommitError::ReferenceUsed);
        }
    }

    // 4. Payments the commits change, fenced by their status and refunded sum, top-ups
    // they reverse, fenced by still standing, then wallets, fenced by version.
    let live: Vec<usize> = (0..commits.len()).filter(|i| results[*i].is_ok()).collect();
    for i in changed_payments(&tx, commits, &live).await? {
        results[i] = Err(CommitError::Fenced);
    }
    let live: Vec<usize> = (0..commits.len()).filter(|i| results[*i].is_ok()).collect();
    for i in reversed_topups(&tx, commits, &live).await? {
        results[i] = Err(CommitError::Fenced);
    }
    let live: Vec<usize> = (0..commits.len()).filter(|i| results[*i].is_ok()).collect();
    if !live.is_empty() {
        let w: Vec<&WalletRow> = live.iter().map(|i| &commits[*i].wallet).collect();
        for (i, written) in live.into_iter().zip(write_wallets(&tx, &w).await?) {
            if !written {
                results[i] = Err(CommitError::Fenced);
            }
        }
    }

    // A dropped commit keeps nothing. A fenced one loses its key, its nonce and its
    // top-up's line; one dropped for a used nonce or reference loses its key (the wallet
    // answers the request again, as a declined payment or a refusal, under that key). A
    // duplicate inserted none of them.
    let mut undo_requests: (Vec<&str>, Vec<&str>) = Default::default();
    let mut undo_nonces: Vec<&[u8]> = Vec::new();
    let mut undo_topups: Vec<Uuid> = Vec::new();
    for (c, r) in commits.iter().zip(&results) {
        if matches!(
            r,
            Err(CommitError::Fenced | CommitError::NonceUsed | CommitError::ReferenceUsed)
        ) {
            if let Some(r) = &c.request {
                undo_requests.0.push(&r.scope);
                undo_requests.1.push(&r.key);
            }
        }
        if matches!(r, Err(CommitError::Fenced)) {
            if let Some(n) = &c.used_nonce {
                undo_nonces.push(n);
            }
            if let Some(t) = c
                .register
                .as_ref()
                .filter(|t| t.kind == RegisterKind::TopUp)
            {
                undo_topups.push(t.id);
            }
        }
    }
    if !undo_requests.0.is_empty() {
        tx.execute(
            "DELETE FROM money_requests WHERE (scope, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            &[&undo_requests.0, &undo_requests.1],
        )
        .await?;
    }
    if !undo_nonces.is_empty() {
        tx.execute(
            "DELETE FROM used_codes WHERE nonce = ANY($1)",
            &[&undo_nonces],
        )
        .await?;
    }
    if !undo_topups.is_empty() {
        tx.execute("DELETE FROM topups WHERE id = ANY($1)", &[&undo_topups])
            .await?;
    }

    // 5. Everything else of the surviving commits.
    let ok: Vec<&WalletCommit> = commits
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|(c, _)| c)
        .collect();
    write_rest(&tx, &ok, OnConflict::Resolve).await?;
    tx.commit().await?;
    Ok(results)
}

fn register_line(r: &Row) -> RegisterLine {
    RegisterLine {
        id: r.get(0),
        user_id: UserId(r.get(1)),
        name: r.get(2),
        number: r.get(3),
        amount: Money(r.get(4)),
        reference: r.get(5),
        by: r.get(6),
        at: r.get(7),
        reversal: r.get::<_, Option<Uuid>>(8).map(|id| Reversal {
            id,
            at: r.get(9),
            by: r.get(10),
            reason: r.get(11),
        }),
    }
}

#[async_trait]
impl MoneyStore for PgStore {
    async fn create_merchant(
        &self,
        tenant: TenantId,
        m: Merchant,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        if let Some(p) = m.parent_id {
            check_refs(&tx, "merchants", tenant, &[p.0], "parent_id").await?;
        }
        let res = tx
            .execute(
                &format!("INSERT INTO merchants (tenant_id, {MERCHANT_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)"),
                &[
                    &tenant.0,
                    &m.id.0,
                    &m.parent_id.map(|p| p.0),
                    &m.name,
                    &m.number,
                    &m.single_limit.0,
                    &(m.depth as i16),
                    &m.created_at,
                ],
            )
            .await;
        if let Err(e) = res {
            if e.as_db_error().and_then(|d| d.constraint())
                == Some("merchants_tenant_id_number_key")
            {
                return Err(StoreError::conflict(
                    "merchant_number_taken",
                    Some("number"),
                    "another merchant has this number",
                ));
            }
            return Err(pg(e));
        }
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn list_merchants(&self, tenant: TenantId) -> StoreResult<Vec<Merchant>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {MERCHANT_COLS} FROM merchants WHERE tenant_id = $1 ORDER BY id"),
                &[&tenant.0],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(merchant_from_row).collect())
    }

    async fn update_merchant(
        &self,
        tenant: TenantId,
        id: MerchantId,
        name: Option<String>,
        single_limit: Option<Money>,
        audit: Audit,
    ) -> StoreResult<Merchant> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE merchants SET name = coalesce($1, name), single_limit = coalesce($2, single_limit) \
                     WHERE tenant_id = $3 AND id = $4 RETURNING {MERCHANT_COLS}"
                ),
                &[&name, &single_limit.map(|m| m.0), &tenant.0, &id.0],
            )
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)?;
        Ok(merchant_from_row(&row))
    }

    async fn create_terminal(
        &self,
        tenant: TenantId,
        t: Terminal,
        token: NewToken,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let n = tx
            .execute(
                "SELECT 1 FROM merchants WHERE tenant_id = $1 AND id = $2",
                &[&tenant.0, &t.merchant_id.0],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        tx.execute(
            "INSERT INTO terminals (id, tenant_id, merchant_id, name, created_at, collection_code, \
             collection_mode) VALUES ($1,$2,$3,$4,$5,$6,$7)",
            &[
                &t.id.0,
                &tenant.0,
                &t.merchant_id.0,
                &t.name,
                &t.created_at,
                &t.collection.as_ref().map(|c| c.code.as_str()),
                &t.collection.as_ref().map(|c| c.mode.as_str()),
            ],
        )
        .await
        .map_err(pg)?;
        insert_token(&tx, &token).await?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn replace_terminal_token(
        &self,
        tenant: TenantId,
        id: TerminalId,
        token: NewToken,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        // Locked, so that a retirement and a new token cannot cross.
        let row = tx
            .query_opt(
                "SELECT retired_at FROM terminals WHERE tenant_id = $1 AND id = $2 \
                 FOR NO KEY UPDATE",
                &[&tenant.0, &id.0],
            )
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound)?;
        if row.get::<_, Option<Timestamp>>(0).is_some() {
            return Err(StoreError::Gone);
        }
        revoke_terminal_tokens(&tx, id).await?;
        insert_token(&tx, &token).await?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn retire_terminal(
        &self,
        tenant: TenantId,
        id: TerminalId,
        at: Timestamp,
        audit: Audit,
    ) -> StoreResult<Terminal> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE terminals SET retired_at = coalesce(retired_at, $3) \
                     WHERE tenant_id = $1 AND id = $2 RETURNING {TERMINAL_COLS}"
                ),
                &[&tenant.0, &id.0, &at],
            )
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound)?;
        revoke_terminal_tokens(&tx, id).await?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)?;
        terminal_from_row(&row)
    }

    async fn get_terminal(&self, tenant: TenantId, id: TerminalId) -> StoreResult<Terminal> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {TERMINAL_COLS} FROM terminals WHERE tenant_id = $1 AND id = $2"
            ))
            .await
            .map_err(pg)?;
        let r = c
            .query_opt(&st, &[&tenant.0, &id.0])
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound)?;
        terminal_from_row(&r)
    }

    async fn load_wallet(
        &self,
        tenant: TenantId,
        user: UserId,
        now: Timestamp,
    ) -> StoreResult<WalletSnapshot> {
        let c = self.client().await?;
        let sql = &*WALLET_READS;
        let (member, w, s, cp, r, p) = tokio::try_join!(
            c.prepare_cached(&sql[0]),
            c.prepare_cached(&sql[1]),
            c.prepare_cached(&sql[2]),
            c.prepare_cached(&sql[3]),
            c.prepare_cached(&sql[4]),
            c.prepare_cached(&sql[5]),
        )
        .map_err(pg)?;
        let day_ago = now - jiff::SignedDuration::from_hours(24);
        let (p0, p1, p2, p3) = (
            [
                &tenant.0 as &(dyn tokio_postgres::types::ToSql + Sync),
                &user.0,
            ],
            [&user.0 as &(dyn tokio_postgres::types::ToSql + Sync)],
            [&user.0 as &(dyn tokio_postgres::types::ToSql + Sync), &now],
            [
                &user.0 as &(dyn tokio_postgres::types::ToSql + Sync),
                &day_ago,
            ],
        );
        let (exists, wallet, subsidies, coupons, risks, open) = tokio::try_join!(
            c.query_opt(&member, &p0),
            c.query_opt(&w, &p1),
            c.query(&s, &p2),
            c.query(&cp, &p2),
            c.query(&r, &p3),
            c.query(&p, &p1),
        )
        .map_err(pg)?;
        exists.ok_or(StoreError::NotFound)?;
        Ok(WalletSnapshot {
            wallet: wallet
                .map(|r| wallet_from_row(&r))
                .unwrap_or_else(|| WalletRow::empty(tenant, user, now)),
            subsidies: subsidies.iter().map(subsidy_from_row).collect(),
            coupons: coupons.iter().map(coupon_from_row).collect(),
            risk_events: risks.iter().map(|r| r.get(0)).collect(),
            open_payments: open
                .iter()
                .map(payment_from_row)
                .collect::<StoreResult<_>>()?,
        })
    }

    async fn wallet_version(&self, user: UserId) -> StoreResult<i64> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT version FROM wallets WHERE user_id = $1")
            .await
            .map_err(pg)?;
        let row = c.query_opt(&st, &[&user.0]).await.map_err(pg)?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    async fn commit_wallets(&self, commits: Vec<WalletCommit>) -> Vec<Result<(), CommitError>> {
        let failed = |e: tokio_postgres::Error| CommitError::from(pg(e));
        let mut client = match self.ledger_client().await {
            Ok(c) => c,
            Err(e) => return vec![Err(e.into()); commits.len()],
        };
        match commit_batch(&mut client, &commits).await {
            Ok(results) => results,
            // The connection broke or PostgreSQL went away: every commit of the batch is
            // in the same state, and trying them one by one would only fail again.
            Err(e) if unreachable(&e) => vec![Err(failed(e)); commits.len()],
            Err(batch_error) if commits.len() > 1 => {
                // Isolate whatever failed: each commit alone, in its own transaction.
                tracing::warn!(error = %batch_error, size = commits.len(), "batch commit failed; retrying one by one");
                let mut out = Vec::with_capacity(commits.len());
                for commit in &commits {
                    out.push(
                        match commit_batch(&mut client, std::slice::from_ref(commit)).await {
                            Ok(mut r) => r.remove(0),
                            Err(e) => Err(failed(e)),
                        },
                    );
                }
                out
            }
            Err(e) => vec![Err(failed(e))],
        }
    }

    async fn find_money_request(
        &self,
        scope: String,
        key: String,
    ) -> StoreResult<Option<MoneyRequest>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT request_hash, status, body FROM money_requests WHERE scope = $1 AND key = $2",
                &[&scope, &key],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| {
            let hash: &[u8] = r.get(0);
            let mut request_hash = [0u8; 32];
            if hash.len() == 32 {
                request_hash.copy_from_slice(hash);
            }
            MoneyRequest {
                scope,
                key,
                request_hash,
                status: r.get::<_, i32>(1) as u16,
                body: r.get(2),
            }
        }))
    }

    async fn stale_deferred(&self, before: Timestamp, limit: usize) -> StoreResult<Vec<Payment>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {PAYMENT_COLS} FROM payments WHERE status = 'accepted' AND created_at < $1 \
                 ORDER BY created_at LIMIT $2"
            ))
            .await
            .map_err(pg)?;
        let rows = c
            .query(&st, &[&PgTime(before), &(limit as i64)])
            .await
            .map_err(pg)?;
        rows.iter().map(payment_from_row).collect()
    }

    async fn wallets_in_arrears(&self) -> StoreResult<Vec<InArrears>> {
        let c = self.client().await?;
        // The subquery reads the open payments' index (V7).
        let rows = c
            .query(
                "SELECT w.tenant_id, w.user_id, w.reminded_on, \
                   (SELECT MIN(p.updated_at) FROM payments p WHERE p.user_id = w.user_id \
                      AND p.status IN ('accepted', 'unsettled') AND p.status = 'unsettled') \
                 FROM wallets w WHERE w.arrears > 0",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| InArrears {
                tenant: TenantId(r.get(0)),
                user: UserId(r.get(1)),
                reminded_on: r.get(2),
                owed_since: r.get(3),
            })
            .collect())
    }

    async fn wallet_stats(&self, tenant: TenantId, now: Timestamp) -> StoreResult<WalletStats> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT \
                   COUNT(*) FILTER (WHERE frozen AND (frozen_until IS NULL OR frozen_until > $2)), \
                   COUNT(*) FILTER (WHERE arrears > 0), COALESCE(SUM(arrears), 0)::BIGINT \
                 FROM wallets WHERE tenant_id = $1",
                &[&tenant.0, &now],
            )
            .await
            .map_err(pg)?;
        Ok(WalletStats {
            frozen: row.get(0),
            in_arrears: row.get(1),
            arrears_total: row.get(2),
        })
    }

    async fn merchant_day(
        &self,
        tenant: TenantId,
        merchant: MerchantId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<MerchantDay> {
        let c = self.client().await?;
        let args: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&tenant.0, &merchant.0, &from, &to];
        let sales = c
            .query(
                "SELECT id, amount, coupon_amount, subsidy_amount, balance_amount, deferred_amount \
                 FROM payments WHERE tenant_id = $1 AND merchant_id = $2 \
                 AND status <> 'declined' AND created_at >= $3 AND created_at < $4",
                &args,
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| {
                (
                    PaymentId(r.get(0)),
                    Money(r.get(1)),
                    Breakdown {
                        coupon: Money(r.get(2)),
                        subsidy: Money(r.get(3)),
                        balance: Money(r.get(4)),
                        deferred: Money(r.get(5)),
                    },
                )
            })
            .collect();
        let refunds = c
            .query(
                "SELECT tx_id, -amount FROM ledger_entries WHERE tenant_id = $1 \
                 AND account = 'merchant_receivable' AND ref_id = $2 AND amount < 0 \
                 AND created_at >= $3 AND created_at < $4",
                &args,
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| (r.get::<_, Uuid>(0), Money(r.get(1))))
            .collect();
        Ok(MerchantDay { sales, refunds })
    }

    async fn purge_used_codes(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        let c = self.client().await?;
        // No index on `used_at`: the table holds only the last minutes' codes once purged,
        // and the scan stops at `limit` rows.
        c.execute(
            "DELETE FROM used_codes WHERE nonce IN \
             (SELECT nonce FROM used_codes WHERE used_at < $1 LIMIT $2)",
            &[&before, &(limit as i64)],
        )
        .await
        .map_err(pg)
    }

    async fn purge_money_requests(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        crate::postgres::purge_oldest(&*self.client().await?, "money_requests", before, limit).await
    }

    async fn pending_outbox(
        &self,
        before: Option<Timestamp>,
        limit: usize,
    ) -> StoreResult<Vec<PendingEvent>> {
        let c = self.client().await?;
        let before = before.unwrap_or(Timestamp::MAX);
        // Events a node of the previous release wrote to the old outbox, one row each,
        // during a rolling update (V6): each is a page of its own, keyed by its id.
        let legacy = c
            .query(
                "SELECT id, tenant_id, topics, kind, payload::text, created_at FROM outbox \
                 WHERE published_at IS NULL AND created_at < $1 ORDER BY created_at LIMIT $2",
                &[&before, &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        let mut events: Vec<PendingEvent> = legacy
            .iter()
            .map(|r| PendingEvent {
                tenant_id: TenantId(r.get(1)),
                event: OutboxEvent {
                    id: EventId(r.get(0)),
                    topics: r.get(2),
                    kind: r.get(3),
                    payload: Payload::from_stored(r.get(4)),
                },
                created_at: r.get(5),
                outbox_key: EventId(r.get(0)),
            })
            .collect();
        let room = limit.saturating_sub(events.len());
        if room == 0 {
            return Ok(events);
        }
        // Planned at each call (see `delete_outbox`), so the index on `created_at` serves
        // once the queue has grown. `limit` counts pages, and the relay publishes whole
        // pages, so a page is never split between two sweeps.
        let rows = c
            .query(
                "SELECT id, events FROM outbox_pages \
                 WHERE created_at < $1 ORDER BY created_at LIMIT $2",
                &[&before, &(room as i64)],
            )
            .await
            .map_err(pg)?;
        events.extend(OutboxPage::read(
            rows.iter()
                .map(|r| (EventId(r.get(0)), r.get::<_, &str>(1))),
        ));
        Ok(events)
    }

    /// A delete is a transaction and a plan on a pool connection: one for every group
    /// commit cost about 10 µs of PostgreSQL CPU per payment more than one per 200 ms
    /// (docs/BENCHMARKS.md). The rows wait a little longer, far under the sweep's age.
    fn outbox_delete_gather(&self) -> std::time::Duration {
        OUTBOX_DELETE_GATHER
    }

    async fn delete_outbox(&self, keys: Vec<EventId>) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<Uuid> = keys.into_iter().map(|k| k.0).collect();
        let c = self.client().await?;
        // Planned at each call, not prepared once: the outbox is a queue that starts
        // empty, and a plan cached while it held a page or two is a sequential scan, which
        // every later delete then repeats over a table grown with dead rows.
        // The old outbox too: a key may be an event a node of the previous release wrote
        // there (see `pending_outbox`).
        c.execute(
            "WITH legacy AS (DELETE FROM outbox WHERE id = ANY($1)) \
             DELETE FROM outbox_pages WHERE id = ANY($1)",
            &[&keys],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn insert_orphan_payment(
        &self,
        payment: Payment,
        outbox: Vec<OutboxEvent>,
        req: MoneyRequest,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let n = tx
            .execute(
                "INSERT INTO money_requests (scope, key, request_hash, status, body, created_at) \
                 VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING",
                &[
                    &req.scope,
                    &req.key,
                    &&req.request_hash[..],
                    &i32::from(req.status),
                    &req.body,
                    &payment.created_at,
                ],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(StoreError::conflict(
                "idempotency_conflict",
                None,
                "this Idempotency-Key was just used",
            ));
        }
        upsert_payments(&tx, &[&payment], OnConflict::Resolve)
            .await
            .map_err(pg)?;
        let page = OutboxPage::of_one(payment.tenant_id, &outbox, payment.created_at);
        insert_outbox(&tx, page.as_ref()).await.map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn get_payment(&self, tenant: TenantId, id: PaymentId) -> StoreResult<Payment> {
        self.tenant_row(PAYMENT_COLS, "payments", tenant, id.0, payment_from_row)
            .await
    }

    async fn list_payments(
        &self,
        tenant: TenantId,
        filter: PaymentFilter,
        page: PageReq<PaymentId>,
    ) -> StoreResult<Page<Payment, PaymentId>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {PAYMENT_COLS} FROM payments WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2) \
                 AND ($3::uuid IS NULL OR user_id = $3) AND ($4::uuid IS NULL OR merchant_id = $4) \
                 AND ($5::text IS NULL OR status = $5) ORDER BY id DESC LIMIT $6"
            ))
            .await
            .map_err(pg)?;
        let rows = c
            .query(
                &st,
                &[
                    &tenant.0,
                    &page.after.map(|p| p.0),
                    &filter.user_id.map(|u| u.0),
                    &filter.merchant_id.map(|m| m.0),
                    &filter.status.map(|s| s.as_str()),
                    &(page.limit as i64 + 1),
                ],
            )
            .await
            .map_err(pg)?;
        let payments = rows
            .iter()
            .map(payment_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(payments, page.limit, |p| p.id))
    }

    async fn payments_in_window(
        &self,
        tenant: TenantId,
        merchants: Vec<MerchantId>,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<PaymentLine>> {
        let c = self.client().await?;
        let merchants: Vec<Uuid> = merchants.iter().map(|m| m.0).collect();
        let rows = c
            .query(
                &format!(
                    "SELECT q.*, coalesce(u.name, ''), coalesce(u.number, '') FROM ( \
                       SELECT {PAYMENT_COLS} FROM payments WHERE merchant_id = ANY($2) \
                       AND created_at >= $3 AND created_at < $4 AND tenant_id = $1 \
                       AND status <> 'declined') q \
                     LEFT JOIN users u ON u.id = q.user_id \
                     ORDER BY q.created_at, q.id LIMIT $5"
                ),
                &[&tenant.0, &merchants, &from, &to, &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                Ok(PaymentLine {
                    payment: payment_from_row(r)?,
                    name: r.get(17),
                    number: r.get(18),
                })
            })
            .collect()
    }

    async fn statement_sources(
        &self,
        tenant: TenantId,
        user: UserId,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<StatementSources> {
        let mut c = self.client().await?;
        // One snapshot for the three sources.
        let tx = snapshot(&mut c).await?;
        let take = limit as i64 + 1;
        let rows = tx
            .query(
                &format!(
                    "SELECT {PAYMENT_COLS} FROM payments WHERE tenant_id = $1 AND user_id = $2 \
                     AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
                ),
                &[&tenant.0, &user.0, &before, &take],
            )
            .await
            .map_err(pg)?;
        let mut payments = rows
            .iter()
            .map(payment_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let more_payments = payments.len() > limit as usize;
        payments.truncate(limit as usize);
        let subsidy_accounts = tx
            .query(
                "SELECT id, name FROM subsidy_accounts WHERE user_id = $2 AND tenant_id = $1",
                &[&tenant.0, &user.0],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| (SubsidyId(r.get(0)), r.get(1)))
            .collect();
        // The conditions of the partial indexes `ledger_holder_movements`,
        // `ledger_after_sale` and `payments_user_refunded` (V37), word for word.
        let holder = format!(
            "WITH movements AS (SELECT * FROM ledger_entries WHERE ref_id = ANY(ARRAY[$2::uuid] || \
               ARRAY(SELECT id FROM subsidy_accounts WHERE user_id = $2 AND tenant_id = $1)) AND tenant_id = $1 \
               AND ((account IN ('cash', 'subsidy') AND payment_id IS NULL) OR account = 'arrears')), \
             txs AS (SELECT DISTINCT tx_id FROM movements WHERE $3::uuid IS NULL OR tx_id < $3 \
               ORDER BY tx_id DESC LIMIT $4) \
             SELECT {STATEMENT_ENTRY_COLS} FROM movements WHERE tx_id IN (SELECT tx_id FROM txs)"
        );
        let refunds = format!(
            "WITH after_sale AS (SELECT * FROM ledger_entries WHERE payment_id = ANY(ARRAY( \
               SELECT id FROM payments WHERE user_id = $2 AND refunded > 0 AND tenant_id = $1)) \
               AND payment_id IS NOT NULL AND tx_id <> payment_id AND tenant_id = $1), \
             txs AS (SELECT tx_id FROM after_sale WHERE account = 'merchant_receivable' \
               AND ($3::uuid IS NULL OR tx_id < $3) ORDER BY tx_id DESC LIMIT $4) \
             SELECT {STATEMENT_ENTRY_COLS} FROM after_sale WHERE tx_id IN (SELECT tx_id FROM txs)"
        );
        let mut sources = StatementSources {
            payments,
            more_payments,
            subsidy_accounts,
            ..Default::default()
        };
        for (sql, out) in [
            (holder, &mut sources.holder),
            (refunds, &mut sources.refunds),
        ] {
            let rows = tx
                .query(&sql, &[&tenant.0, &user.0, &before, &take])
                .await
                .map_err(pg)?;
            *out = rows
                .iter()
                .map(statement_entry)
                .collect::<StoreResult<Vec<_>>>()?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(sources)
    }

    async fn spending_by_user(
        &self,
        tenant: TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<UserSpending>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT p.user_id, count(*), sum(p.amount)::int8, sum(p.refunded)::int8 \
                 FROM merchants m JOIN payments p ON p.merchant_id = m.id \
                 WHERE m.tenant_id = $1 AND p.tenant_id = $1 AND p.status <> 'declined' \
                 AND p.created_at >= $2 AND p.created_at < $3 AND p.user_id IS NOT NULL \
                 GROUP BY p.user_id",
                &[&tenant.0, &from, &to],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                Ok(UserSpending {
                    user_id: UserId(r.try_get(0).map_err(pg)?),
                    payments: r.try_get::<_, i64>(1).map_err(pg)? as u64,
                    amount: Money(r.try_get(2).map_err(pg)?),
                    refunded: Money(r.try_get(3).map_err(pg)?),
                })
            })
            .collect()
    }

    async fn report_facts(
        &self,
        tenant: TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<ReportFacts> {
        self.reports_between(tenant, from, to).await
    }

    async fn roll_up_reports(
        &self,
        now: Timestamp,
        lag: jiff::SignedDuration,
        step: i64,
    ) -> StoreResult<u64> {
        self.roll_up(now, lag, step).await
    }

    async fn report_rollups_end(&self) -> StoreResult<Option<Timestamp>> {
        self.rollups_end().await
    }

    async fn merchant_totals(
        &self,
        tenant: TenantId,
        merchant: MerchantId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Totals> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "SELECT count(*), coalesce(sum(amount), 0)::int8, coalesce(sum(coupon_amount), 0)::int8, \
                 coalesce(sum(subsidy_amount), 0)::int8, coalesce(sum(balance_amount), 0)::int8, \
                 coalesce(sum(deferred_amount), 0)::int8 FROM payments WHERE tenant_id = $1 AND merchant_id = $2 \
                 AND status <> 'declined' AND created_at >= $3 AND created_at < $4",
                &[&tenant.0, &merchant.0, &from, &to],
            )
            .await
            .map_err(pg)?;
        let refunds: i64 = c
            .query_one(
                "SELECT coalesce(-sum(amount), 0)::int8 FROM ledger_entries WHERE tenant_id = $1 \
                 AND account = 'merchant_receivable' AND ref_id = $2 AND amount < 0 \
                 AND created_at >= $3 AND created_at < $4",
                &[&tenant.0, &merchant.0, &from, &to],
            )
            .await
            .map_err(pg)?
            .get(0);
        Ok(Totals {
            gross: Money(r.get(1)),
            refunds: Money(refunds),
            count: r.get::<_, i64>(0) as u64,
            by_source: Breakdown {
                coupon: Money(r.get(2)),
                subsidy: Money(r.get(3)),
                balance: Money(r.get(4)),
                deferred: Money(r.get(5)),
            },
        })
    }

    async fn create_subsidy_rule(
        &self,
        tenant: TenantId,
        rule: SubsidyRule,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let merchants: Vec<Uuid> = rule.merchant_ids.iter().map(|m| m.0).collect();
        tx.execute(
            "INSERT INTO subsidy_rules (id, tenant_id, name, amount, targets, merchant_ids, expires_at, status, \
             created_by, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,'pending',$8,$9)",
            &[
                &rule.id.0,
                &tenant.0,
                &rule.name,
                &rule.amount.0,
                &serde_json::to_value(&rule.targets).map_err(StoreError::backend)?,
                &merchants,
                &rule.expires_at,
                &rule.created_by.0,
                &rule.created_at,
            ],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn get_subsidy_rule(
        &self,
        tenant: TenantId,
        id: SubsidyRuleId,
    ) -> StoreResult<SubsidyRule> {
        let c = self.client().await?;
        load_rule(&c, tenant, id, false).await
    }

    async fn list_subsidy_rules(
        &self,
        tenant: TenantId,
        state: Option<RuleState>,
        page: PageReq<SubsidyRuleId>,
    ) -> StoreResult<Page<SubsidyRule, SubsidyRuleId>> {
        let c = self.client().await?;
        let cond = state.map_or("true", RuleState::condition);
        let st = c
            .prepare_cached(&format!(
                "SELECT {RULE_COLS} FROM subsidy_rules WHERE tenant_id = $1 \
                 AND ($2::uuid IS NULL OR id < $2) AND {cond} ORDER BY id DESC LIMIT $3"
            ))
            .await
            .map_err(pg)?;
        let rows = c
            .query(
                &st,
                &[
                    &tenant.0,
                    &page.after.map(|a| a.0),
                    &(page.limit as i64 + 1),
                ],
            )
            .await
            .map_err(pg)?;
        let rules = rows
            .iter()
            .map(rule_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(rules, page.limit, |r| r.id))
    }

    async fn reject_subsidy_rule(
        &self,
        tenant: TenantId,
        id: SubsidyRuleId,
        by: AdminId,
        reason: String,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<SubsidyRule> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        // The row lock orders this with an approval of the same rule.
        let rule = load_rule(&tx, tenant, id, true).await?;
        if rule.status != "pending" {
            return Err(not_pending(&rule));
        }
        tx.execute(
            "UPDATE subsidy_rules SET rejected_by = $3, rejected_at = $4, reject_reason = $5 \
             WHERE tenant_id = $1 AND id = $2",
            &[&tenant.0, &id.0, &by.0, &now, &reason],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        let rule = load_rule(&tx, tenant, id, false).await?;
        tx.commit().await.map_err(pg)?;
        Ok(rule)
    }

    async fn target_holders(
        &self,
        tenant: TenantId,
        targets: SubsidyTargets,
        status: Option<UserStatus>,
    ) -> StoreResult<Vec<Holder>> {
        let c = self.client().await?;
        let users: Vec<Uuid> = targets.user_ids.iter().map(|u| u.0).collect();
        let depts: Vec<Uuid> = targets.department_ids.iter().map(|d| d.0).collect();
        let tags: Vec<Uuid> = targets.tag_ids.iter().map(|t| t.0).collect();
        let rows = c
            .query(
                "WITH RECURSIVE tree(id) AS ( \
                   SELECT id FROM departments WHERE tenant_id = $1 AND id = ANY($3) \
                   UNION SELECT d.id FROM departments d JOIN tree ON d.parent_id = tree.id) \
                 SELECT u.id, u.name, u.number FROM users u \
                 WHERE u.tenant_id = $1 AND ($6::text IS NULL OR u.status = $6) AND ( \
                   u.id = ANY($2) \
                   OR EXISTS (SELECT 1 FROM user_departments m JOIN tree ON m.department_id = tree.id \
                              WHERE m.user_id = u.id) \
                   OR EXISTS (SELECT 1 FROM user_tags g WHERE g.user_id = u.id AND g.tag_id = ANY($4)) \
                   OR u.identity = ANY($5)) ORDER BY u.id",
                &[
                    &tenant.0,
                    &users,
                    &depts,
                    &tags,
                    &targets.identities,
                    &status.map(|s| s.as_str()),
                ],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| Holder {
                id: UserId(r.get(0)),
                name: r.get(1),
                number: r.get(2),
            })
            .collect())
    }

    async fn list_register(
        &self,
        tenant: TenantId,
        kind: RegisterKind,
        filter: RegisterFilter,
        page: PageReq<Uuid>,
    ) -> StoreResult<Page<RegisterLine, Uuid>> {
        let c = self.client().await?;
        let after = page.after.unwrap_or(Uuid::nil());
        let rows = c
            .query(
                &format!(
                    "{} WHERE w.tenant_id = $1 AND w.id > $2 \
                     AND ($3::uuid IS NULL OR w.user_id = $3) \
                     AND ($4::timestamptz IS NULL OR w.created_at >= $4) \
                     AND ($5::timestamptz IS NULL OR w.created_at < $5) \
                     AND ($6::text IS NULL OR w.reference = $6){} \
                     ORDER BY w.id LIMIT $7",
                    kind.select_lines(),
                    kind.reversed_sql(filter.reversed)
                ),
                &[
                    &tenant.0,
                    &after,
                    &filter.user.map(|u| u.0),
                    &filter.from,
                    &filter.to,
                    &filter.reference,
                    &(i64::from(page.limit) + 1),
                ],
            )
            .await
            .map_err(pg)?;
        let items = rows.iter().map(register_line).collect();
        Ok(paginate(items, page.limit, |w| w.id))
    }

    async fn register_notes(
        &self,
        tenant: TenantId,
        ids: Vec<Uuid>,
    ) -> StoreResult<Vec<RegisterNote>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.client().await?;
        // A top-up's or a withdrawal's reference, by the line's id; a reversal's top-up
        // (and its reference), by the reversal's id.
        let rows = c
            .query(
                "SELECT id, reference, NULL::uuid FROM topups \
                   WHERE id = ANY($2) AND tenant_id = $1 AND reference IS NOT NULL \
                 UNION ALL \
                 SELECT id, reference, NULL::uuid FROM withdrawals \
                   WHERE id = ANY($2) AND tenant_id = $1 AND reference IS NOT NULL \
                 UNION ALL \
                 SELECT reversal_id, reference, id FROM topups \
                   WHERE reversal_id = ANY($2) AND tenant_id = $1",
                &[&tenant.0, &ids],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| RegisterNote {
                id: r.get(0),
                reference: r.get(1),
                reverses: r.get(2),
            })
            .collect())
    }

    async fn get_topup(&self, tenant: TenantId, id: Uuid) -> StoreResult<RegisterLine> {
        let c = self.client().await?;
        let sql = format!(
            "{} WHERE w.id = $1 AND w.tenant_id = $2",
            RegisterKind::TopUp.select_lines()
        );
        let row = c
            .query_opt(&sql, &[&id, &tenant.0])
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound)?;
        Ok(register_line(&row))
    }

    async fn topups_by_reference(
        &self,
        tenant: TenantId,
        references: Vec<String>,
    ) -> StoreResult<Vec<RegisterLine>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "{} WHERE w.tenant_id = $1 AND w.reference = ANY($2) AND w.reversal_id IS NULL",
                    RegisterKind::TopUp.select_lines()
                ),
                &[&tenant.0, &references],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(register_line).collect())
    }

    async fn approve_subsidy_rule(
        &self,
        tenant: TenantId,
        id: SubsidyRuleId,
        approver: AdminId,
        users: Vec<UserId>,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<u64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let rule = load_rule(&tx, tenant, id, true).await?;
        if rule.status != "pending" {
            return Err(not_pending(&rule));
        }
        let user_ids: Vec<Uuid> = users.iter().map(|u| u.0).collect();
        let subsidy_ids: Vec<Uuid> = users.iter().map(|_| Uuid::now_v7()).collect();
        let tx_ids: Vec<Uuid> = users.iter().map(|_| Uuid::now_v7()).collect();
        let merchants: Vec<Uuid> = rule.merchant_ids.iter().map(|m| m.0).collect();
        tx.execute(
            "INSERT INTO wallets (user_id, tenant_id, balance, arrears, version, agreement_signed, frozen, \
               freeze_count, updated_at) \
             SELECT u, $2::uuid, 0, 0, 1, false, false, 0, $3::timestamptz FROM unnest($1::uuid[]) u \
             ON CONFLICT (user_id) DO UPDATE SET version = wallets.version + 1, updated_at = EXCLUDED.updated_at",
            &[&user_ids, &tenant.0, &now],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO subsidy_accounts (id, tenant_id, user_id, rule_id, name, balance, merchant_ids, expires_at, \
               created_at) \
             SELECT s, $3::uuid, u, $4::uuid, $5::text, $6::int8, $7::uuid[], $8::timestamptz, $9::timestamptz \
             FROM unnest($1::uuid[], $2::uuid[]) AS t(s, u)",
            &[&subsidy_ids, &user_ids, &tenant.0, &id.0, &rule.name, &rule.amount.0, &merchants, &rule.expires_at, &now],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO ledger_entries (tenant_id, tx_id, account, ref_id, amount, payment_id, created_at) \
             SELECT $3::uuid, t, 'subsidy', s, $4::int8, NULL::uuid, $5::timestamptz FROM unnest($1::uuid[], $2::uuid[]) AS x(s, t) \
             UNION ALL \
             SELECT $3::uuid, t, 'subsidy_funding', NULL::uuid, -$4::int8, NULL::uuid, $5::timestamptz \
             FROM unnest($1::uuid[], $2::uuid[]) AS x(s, t)",
            &[&subsidy_ids, &tx_ids, &tenant.0, &rule.amount.0, &now],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "UPDATE subsidy_rules SET status = 'effective', approved_by = $1, approved_at = $2, credited_users = $3 \
             WHERE id = $4",
            &[&approver.0, &now, &(users.len() as i64), &id.0],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)?;
        Ok(users.len() as u64)
    }

    async fn ledger_check(&self, tenant: TenantId) -> StoreResult<LedgerCheck> {
        self.check_ledger(tenant, true).await
    }

    async fn ledger_check_full(&self, tenant: TenantId) -> StoreResult<LedgerCheck> {
        self.check_ledger(tenant, false).await
    }

    async fn seal_ledger(&self, now: Timestamp) -> StoreResult<u64> {
        let mut c = self.client().await?;
        // The boundary: the largest id while no transaction that writes entries is open.
        // Every entry at or below it is then committed, and ids handed out later are
        // larger, so no entry can appear under the seal afterwards. SHARE waits for the
        // open writers and holds new ones back, so the wait is kept short; a busy moment
        // (a long subsidy approval, a vacuum of the table) leaves it to the next round.
        let tx = c.transaction().await.map_err(pg)?;
        tx.batch_execute("SET LOCAL lock_timeout = '50ms'")
            .await
            .map_err(pg)?;
        if let Err(e) = tx
            .batch_execute("LOCK TABLE ledger_entries IN SHARE MODE")
            .await
        {
            if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                tracing::info!("ledger seal left to the next round: entries were being written");
                return Ok(0);
            }
            return Err(pg(e));
        }
        let through: i64 = tx
            .query_one("SELECT coalesce(max(id), 0) FROM ledger_entries", &[])
            .await
            .map_err(pg)?
            .get(0);
        tx.commit().await.map_err(pg)?;
        // Then (from, through] joins the seal in one transaction; the seal's row lock
        // makes a second node wait, and it finds the seal already there.
        let tx = c.transaction().await.map_err(pg)?;
        let from: i64 = tx
            .query_one("SELECT through_id FROM ledger_seal FOR UPDATE", &[])
            .await
            .map_err(pg)?
            .get(0);
        if through <= from {
            return Ok(0);
        }
        tx.execute(
            "UPDATE ledger_seal SET through_id = $1, sealed_at = $2",
            &[&through, &now],
        )
        .await
        .map_err(pg)?;
        // Each tenant's part, stored and counted from one pass over the range.
        let sealed: i64 = tx
            .query_one(
                "WITH part AS ( \
                    SELECT tenant_id, sum(n)::int8 AS entries, sum(s)::int8 AS total, \
                           bool_or(s <> 0) AS unbalanced \
                      FROM (SELECT tenant_id, tx_id, count(*) AS n, sum(amount) AS s \
                              FROM ledger_entries WHERE id > $1 AND id <= $2 \
                             GROUP BY tenant_id, tx_id) t \
                     GROUP BY tenant_id), \
                 stored AS ( \
                    INSERT INTO ledger_seal_tenants (tenant_id, entries, total, unbalanced) \
                    SELECT tenant_id, entries, total, unbalanced FROM part \
                    ON CONFLICT (tenant_id) DO UPDATE SET \
                       entries = ledger_seal_tenants.entries + EXCLUDED.entries, \
                       total = ledger_seal_tenants.total + EXCLUDED.total, \
                       unbalanced = ledger_seal_tenants.unbalanced OR EXCLUDED.unbalanced) \
                 SELECT coalesce(sum(entries), 0)::int8 FROM part",
                &[&from, &through],
            )
            .await
            .map_err(pg)?
            .get(0);
        tx.execute(
            "INSERT INTO ledger_seal_sums (tenant_id, account, ref_id, total) \
             SELECT tenant_id, account, ref_id, sum(amount)::int8 FROM ledger_entries \
              WHERE id > $1 AND id <= $2 AND account IN ('cash', 'arrears', 'subsidy') \
                AND ref_id IS NOT NULL \
              GROUP BY tenant_id, account, ref_id \
             ON CONFLICT (tenant_id, account, ref_id) DO UPDATE SET \
                total = ledger_seal_sums.total + EXCLUDED.total",
            &[&from, &through],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(sealed as u64)
    }
}

impl PgStore {
    /// The ledger check: from the seal's sums and the entries after it (`from_seal`), or
    /// from every entry.
    async fn check_ledger(&self, tenant: TenantId, from_seal: bool) -> StoreResult<LedgerCheck> {
        let mut c = self.client().await?;
        // One read-only snapshot for every question, so a payment (or a seal) committed
        // between them cannot make a balanced ledger look unbalanced. Nested loops are off
        // for it: the check joins every wallet to the grouped sums of the tenant's
        // entries, and with stale statistics (the tables grow fast; autovacuum may be off
        // or behind) the planner can take the grouped sums for a few rows and rescan them
        // once per wallet, which made the check of 10,000 wallets take 12 s instead of
        // 0.1 s.
        let tx = snapshot(&mut c).await?;
        tx.batch_execute("SET LOCAL enable_nestloop = off")
            .await
            .map_err(pg)?;
        let (through, sealed_entries, sealed_sum, sealed_unbalanced) = if from_seal {
            let r = tx
                .query_one(
                    "SELECT s.through_id, coalesce(t.entries, 0), coalesce(t.total, 0), \
                            coalesce(t.unbalanced, false) \
                       FROM ledger_seal s LEFT JOIN ledger_seal_tenants t ON t.tenant_id = $1",
                    &[&tenant.0],
                )
                .await
                .map_err(pg)?;
            (
                r.get::<_, i64>(0),
                r.get::<_, i64>(1),
                r.get::<_, i64>(2),
                r.get::<_, bool>(3),
            )
        } else {
            (0, 0, 0, false)
        };
        // The entries after the seal (all of them without it): an id range, which the
        // planner sees with its value.
        let r = tx
            .query_one(
                "SELECT count(*), coalesce(sum(amount), 0)::int8, \
                 EXISTS (SELECT tx_id FROM ledger_entries WHERE tenant_id = $1 AND id > $2 \
                          GROUP BY tx_id HAVING sum(amount) <> 0) \
                 FROM ledger_entries WHERE tenant_id = $1 AND id > $2",
                &[&tenant.0, &through],
            )
            .await
            .map_err(pg)?;
        let (entries, sum, unbalanced): (i64, i64, bool) = (r.get(0), r.get(1), r.get(2));
        let rows = tx
            .query(
                "WITH sums AS MATERIALIZED ( \
                    SELECT account, ref_id, sum(total)::int8 AS total FROM ( \
                        SELECT account, ref_id, total FROM ledger_seal_sums \
                         WHERE $3 AND tenant_id = $1 \
                        UNION ALL \
                        SELECT account, ref_id, amount FROM ledger_entries \
                         WHERE tenant_id = $1 AND id > $2 AND account IN ('cash', 'arrears', 'subsidy')) x \
                     GROUP BY account, ref_id) \
                 SELECT w.user_id FROM wallets w \
                   LEFT JOIN sums c ON c.account = 'cash' AND c.ref_id = w.user_id \
                   LEFT JOIN sums a ON a.account = 'arrears' AND a.ref_id = w.user_id \
                  WHERE w.tenant_id = $1 \
                    AND (w.balance <> coalesce(c.total, 0) OR w.arrears <> -coalesce(a.total, 0)) \
                 UNION \
                 SELECT s.user_id FROM subsidy_accounts s \
                   LEFT JOIN sums x ON x.account = 'subsidy' AND x.ref_id = s.id \
                  WHERE s.tenant_id = $1 AND s.balance <> coalesce(x.total, 0) \
                 ORDER BY 1",
                &[&tenant.0, &through, &from_seal],
            )
            .await
            .map_err(pg)?;
        let mut mismatched_registers = Vec::new();
        for kind in [RegisterKind::TopUp, RegisterKind::Withdrawal] {
            let [lines, entries] = kind.tally_sql("$1");
            let lines = tx.query_one(&lines, &[&tenant.0]).await.map_err(pg)?;
            let entries = tx.query_one(&entries, &[&tenant.0]).await.map_err(pg)?;
            let tally = RegisterTally {
                lines: lines.get(0),
                lines_sum: lines.get(1),
                entries: entries.get(0),
                entries_sum: entries.get(1),
            };
            if !tally.agrees() {
                mismatched_registers.push(kind.table().to_string());
            }
        }
        tx.commit().await.map_err(pg)?;
        Ok(LedgerCheck {
            balanced: sealed_sum + sum == 0 && !sealed_unbalanced && !unbalanced,
            entries: (sealed_entries + entries) as u64,
            mismatched_wallets: rows.iter().map(|r| UserId(r.get(0))).collect(),
            sealed_entries: sealed_entries as u64,
            mismatched_registers,
        })
    }
}

const RULE_COLS: &str = "id, name, amount, targets, merchant_ids, expires_at, status, \
     created_by, approved_by, credited_users, created_at, approved_at, rejected_by, rejected_at, \
     reject_reason";

fn rule_from_row(r: &Row) -> StoreResult<SubsidyRule> {
    let rejected_at: Option<Timestamp> = r.get(13);
    Ok(SubsidyRule {
        id: SubsidyRuleId(r.get(0)),
        name: r.get(1),
        amount: Money(r.get(2)),
        targets: serde_json::from_value(r.get(3)).map_err(StoreError::backend)?,
        merchant_ids: r
            .get::<_, Vec<Uuid>>(4)
            .into_iter()
            .map(MerchantId)
            .collect(),
        expires_at: r.get(5),
        status: rule_status(r.get(6), rejected_at.is_some()),
        created_by: AdminId(r.get(7)),
        approved_by: r.get::<_, Option<Uuid>>(8).map(AdminId),
        credited_users: r.get::<_, i64>(9) as u64,
        created_at: r.get(10),
        approved_at: r.get(11),
        rejected_by: r.get::<_, Option<Uuid>>(12).map(AdminId),
        rejected_at,
        reject_reason: r.get(14),
    })
}

async fn load_rule<C: GenericClient>(
    c: &C,
    tenant: TenantId,
    id: SubsidyRuleId,
    lock: bool,
) -> StoreResult<SubsidyRule> {
    let sql = format!(
        "SELECT {RULE_COLS} FROM subsidy_rules WHERE tenant_id = $1 AND id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let r = c
        .query_opt(sql.as_str(), &[&tenant.0, &id.0])
        .await
        .map_err(pg)?
        .ok_or(StoreError::NotFound)?;
    rule_from_row(&r)
}
