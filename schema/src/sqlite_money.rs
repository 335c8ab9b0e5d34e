//! The money half of the SQLite engine. Group commit comes from the writer thread: one
//! write job applies a whole batch of wallet commits, each in its own savepoint.

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, Row};
use uuid::Uuid;

use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::{Audit, NewToken, Page, PageReq, UserStatus};
use crate::money::Money;
use crate::money_store::{MoneyStore, PaymentFilter};
use crate::sqlite::{
    check_refs, db, insert_audit, insert_token, ms, opt_uuid_col, paginate, ts, uuid_col,
    SqliteStore, TextUuid,
};
use crate::sqlite_collection::{terminal_row, TERMINAL_COLS};
use crate::statement::{StatementEntry, StatementSources};
use crate::wallet::*;

fn ids_json<T: std::fmt::Display>(ids: &[T]) -> String {
    serde_json::to_string(&ids.iter().map(|i| i.to_string()).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into())
}

fn ids_from_json<T>(text: &str, wrap: fn(Uuid) -> T) -> Vec<T> {
    serde_json::from_str::<Vec<String>>(text)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| Uuid::parse_str(s).ok())
        .map(wrap)
        .collect()
}

fn conv<E: std::error::Error + Send + Sync + 'static>(idx: usize, e: E) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
}

const MERCHANT_COLS: &str = "id, parent_id, name, number, single_limit, depth, created_at";

fn merchant_from_row(r: &Row) -> rusqlite::Result<Merchant> {
    Ok(Merchant {
        id: MerchantId(uuid_col(r, 0)?),
        parent_id: opt_uuid_col(r, 1)?.map(MerchantId),
        name: r.get(2)?,
        number: r.get(3)?,
        single_limit: Money(r.get(4)?),
        depth: r.get::<_, i64>(5)? as u8,
        created_at: ts(r.get(6)?),
    })
}

const WALLET_COLS: &str =
    "user_id, tenant_id, balance, arrears, version, agreement_signed, frozen, \
     frozen_until, freeze_count, reminded_on, updated_at";

fn wallet_from_row(r: &Row) -> rusqlite::Result<WalletRow> {
    Ok(WalletRow {
        user_id: UserId(uuid_col(r, 0)?),
        tenant_id: TenantId(uuid_col(r, 1)?),
        balance: Money(r.get(2)?),
        arrears: Money(r.get(3)?),
        version: r.get(4)?,
        agreement_signed: r.get(5)?,
        frozen: r.get(6)?,
        frozen_until: r.get::<_, Option<i64>>(7)?.map(ts),
        freeze_count: r.get(8)?,
        reminded_on: r.get(9)?,
        updated_at: ts(r.get(10)?),
    })
}

const SUBSIDY_COLS: &str =
    "id, user_id, rule_id, name, balance, merchant_ids, expires_at, created_at";

fn subsidy_from_row(r: &Row) -> rusqlite::Result<SubsidyAccount> {
    Ok(SubsidyAccount {
        id: SubsidyId(uuid_col(r, 0)?),
        user_id: UserId(uuid_col(r, 1)?),
        rule_id: opt_uuid_col(r, 2)?.map(SubsidyRuleId),
        name: r.get(3)?,
        balance: Money(r.get(4)?),
        merchant_ids: ids_from_json(&r.get::<_, String>(5)?, MerchantId),
        expires_at: r.get::<_, Option<i64>>(6)?.map(ts),
        created_at: ts(r.get(7)?),
    })
}

const COUPON_COLS: &str =
    "id, user_id, name, discount, threshold, merchant_ids, valid_from, expires_at, used_payment, created_at";

fn coupon_from_row(r: &Row) -> rusqlite::Result<Coupon> {
    Ok(Coupon {
        id: CouponId(uuid_col(r, 0)?),
        user_id: UserId(uuid_col(r, 1)?),
        name: r.get(2)?,
        discount: Money(r.get(3)?),
        threshold: Money(r.get(4)?),
        merchant_ids: ids_from_json(&r.get::<_, String>(5)?, MerchantId),
        valid_from: ts(r.get(6)?),
        expires_at: ts(r.get(7)?),
        used_payment: opt_uuid_col(r, 8)?.map(PaymentId),
        created_at: ts(r.get(9)?),
    })
}

const PAYMENT_COLS: &str = "id, tenant_id, user_id, merchant_id, terminal_id, amount, status, decline_reason, \
     coupon_id, coupon_amount, subsidy_amount, balance_amount, deferred_amount, subsidy_parts, refunded, \
     created_at, updated_at";

fn payment_from_row(r: &Row) -> rusqlite::Result<Payment> {
    let status: String = r.get(6)?;
    let reason: Option<String> = r.get(7)?;
    let parts: String = r.get(13)?;
    let parts: Vec<(String, i64)> = serde_json::from_str(&parts).map_err(|e| conv(13, e))?;
    Ok(Payment {
        id: PaymentId(uuid_col(r, 0)?),
        tenant_id: TenantId(uuid_col(r, 1)?),
        user_id: opt_uuid_col(r, 2)?.map(UserId),
        merchant_id: MerchantId(uuid_col(r, 3)?),
        terminal_id: TerminalId(uuid_col(r, 4)?),
        amount: Money(r.get(5)?),
        status: PaymentStatus::parse(&status)
            .ok_or_else(|| conv(6, StoreError::Unavailable(status.clone())))?,
        decline_reason: reason.as_deref().and_then(DeclineReason::parse),
        coupon_id: opt_uuid_col(r, 8)?.map(CouponId),
        breakdown: Breakdown {
            coupon: Money(r.get(9)?),
            subsidy: Money(r.get(10)?),
            balance: Money(r.get(11)?),
            deferred: Money(r.get(12)?),
        },
        subsidy_parts: parts
            .into_iter()
            .filter_map(|(id, amount)| {
                Uuid::parse_str(&id)
                    .ok()
                    .map(|u| (SubsidyId(u), Money(amount)))
            })
            .collect(),
        refunded: Money(r.get(14)?),
        created_at: ts(r.get(15)?),
        updated_at: ts(r.get(16)?),
    })
}

const STATEMENT_ENTRY_COLS: &str = "tx_id, account, ref_id, amount, payment_id, created_at";

fn statement_entry(r: &Row) -> rusqlite::Result<StatementEntry> {
    let account: String = r.get(1)?;
    Ok(StatementEntry {
        tx_id: uuid_col(r, 0)?,
        account: Account::parse(&account).ok_or_else(|| {
            conv(
                1,
                StoreError::Unavailable(format!("unknown account {account}")),
            )
        })?,
        ref_id: opt_uuid_col(r, 2)?,
        amount: r.get(3)?,
        payment_id: opt_uuid_col(r, 4)?.map(PaymentId),
        at: ts(r.get(5)?),
    })
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

/// A cardholder's open payments (a deferred debit not yet settled), read when the wallet
/// loads; its condition is the one of the `payments_user_open` index (migration V8).
pub(crate) static OPEN_PAYMENTS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {PAYMENT_COLS} FROM payments WHERE user_id = ? AND status IN ('accepted', 'unsettled') \
         ORDER BY id"
    )
});

/// Wallets in arrears, with their last reminder and when their oldest unsettled payment
/// turned so. The subquery repeats the `payments_user_open` index's condition so that
/// SQLite may read that index (it does not infer it from `status = 'unsettled'`).
const IN_ARREARS: &str = "SELECT w.tenant_id, w.user_id, w.reminded_on, \
       (SELECT MIN(p.updated_at) FROM payments p WHERE p.user_id = w.user_id \
          AND p.status IN ('accepted', 'unsettled') AND p.status = 'unsettled') \
     FROM wallets w WHERE w.arrears > 0";

/// The statements every wallet commit runs on the writer thread, built once instead of
/// formatted (and then hashed by the statement cache) for every payment.
static PAYMENT_UPSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO payments ({PAYMENT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) \
         ON CONFLICT (tenant_id, id) DO UPDATE SET status = excluded.status, refunded = excluded.refunded, \
         updated_at = excluded.updated_at"
    )
});
static WALLET_UPSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO wallets ({WALLET_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?) \
         ON CONFLICT (user_id) DO UPDATE SET balance = excluded.balance, arrears = excluded.arrears, \
         version = excluded.version, agreement_signed = excluded.agreement_signed, \
         frozen = excluded.frozen, frozen_until = excluded.frozen_until, \
         freeze_count = excluded.freeze_count, reminded_on = excluded.reminded_on, \
         updated_at = excluded.updated_at WHERE wallets.version = excluded.version - 1"
    )
});

pub(crate) fn upsert_payment(c: &Connection, p: &Payment) -> rusqlite::Result<()> {
    c.prepare_cached(&PAYMENT_UPSERT)?.execute(params![
        TextUuid::new(p.id.0),
        TextUuid::new(p.tenant_id.0),
        p.user_id.map(|u| TextUuid::new(u.0)),
        TextUuid::new(p.merchant_id.0),
        TextUuid::new(p.terminal_id.0),
        p.amount.0,
        p.status.as_str(),
        p.decline_reason.map(|r| r.as_str()),
        p.coupon_id.map(|c| TextUuid::new(c.0)),
        p.breakdown.coupon.0,
        p.breakdown.subsidy.0,
        p.breakdown.balance.0,
        p.breakdown.deferred.0,
        parts_json(&p.subsidy_parts),
        p.refunded.0,
        ms(p.created_at),
        ms(p.updated_at),
    ])?;
    Ok(())
}

/// Writes a job's page of outbox events (`OutboxPage`), if it has any.
fn revoke_terminal_tokens(c: &Connection, id: TerminalId) -> StoreResult<()> {
    c.execute(
        "DELETE FROM tokens WHERE kind = 'terminal' AND subject_id = ?",
        [id.to_string()],
    )
    .map_err(db)?;
    Ok(())
}

pub(crate) fn insert_outbox(c: &Connection, page: Option<&OutboxPage>) -> rusqlite::Result<()> {
    let Some(page) = page else {
        return Ok(());
    };
    c.prepare_cached("INSERT INTO outbox_pages (id, created_at, events) VALUES (?,?,?)")?
        .execute(params![
            page.key.to_string(),
            ms(page.created_at),
            page.json
        ])?;
    Ok(())
}

fn insert_entries(
    c: &Connection,
    tenant: TenantId,
    entries: &[LedgerEntry],
    at: Timestamp,
) -> rusqlite::Result<()> {
    let mut st = c.prepare_cached(
        "INSERT INTO ledger_entries (tenant_id, tx_id, account, ref_id, amount, payment_id, created_at) \
         VALUES (?,?,?,?,?,?,?)",
    )?;
    for e in entries {
        st.execute(params![
            TextUuid::new(tenant.0),
            TextUuid::new(e.tx_id),
            e.account.as_str(),
            e.ref_id.map(TextUuid::new),
            e.amount,
            e.payment_id.map(|p| TextUuid::new(p.0)),
            ms(at)
        ])?;
    }
    Ok(())
}

/// What an idempotency record is found by: the first 16 bytes of SHA-256 over its scope,
/// a zero byte and its key (migration V6 says why). Also the SQL function
/// `onecard_key_digest`, which that migration calls.
pub(crate) fn key_digest(scope: &str, key: &str) -> [u8; 16] {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(scope.as_bytes());
    hash.update([0u8]);
    hash.update(key.as_bytes());
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&hash.finalize()[..16]);
    digest
}

/// Inserts an idempotency record unless its key is taken: `Ok(false)` when it is.
pub(crate) fn insert_request(
    c: &Connection,
    req: &MoneyRequest,
    at: Timestamp,
) -> rusqlite::Result<bool> {
    let n = c
        .prepare_cached(
            "INSERT INTO money_requests (scope, key, key_digest, request_hash, status, body, created_at) \
             VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            req.scope,
            req.key,
            &key_digest(&req.scope, &req.key)[..],
            &req.request_hash[..],
            req.status,
            req.body,
            ms(at)
        ])?;
    Ok(n == 1)
}

/// Writes a wallet row, fenced by version: a new wallet is inserted, an existing one is
/// updated only from the version before this one. Answers whether the row was written.
pub(crate) fn upsert_wallet(c: &Connection, wr: &WalletRow) -> rusqlite::Result<bool> {
    let n = c.prepare_cached(&WALLET_UPSERT)?.execute(params![
        TextUuid::new(wr.user_id.0),
        TextUuid::new(wr.tenant_id.0),
        wr.balance.0,
        wr.arrears.0,
        wr.version,
        wr.agreement_signed,
        wr.frozen,
        wr.frozen_until.map(ms),
        wr.freeze_count,
        wr.reminded_on,
        ms(wr.updated_at)
    ])?;
    Ok(n == 1)
}

/// Whether every payment a commit changes is still stored as its decision saw it.
fn payments_unchanged(
    c: &Connection,
    tenant: TenantId,
    fences: &[PaymentFence],
) -> rusqlite::Result<bool> {
    for f in fences {
        let unchanged = c
            .prepare_cached(
                "SELECT 1 FROM payments WHERE tenant_id = ? AND id = ? AND status = ? AND refunded = ?",
            )?
            .exists(params![
                TextUuid::new(tenant.0),
                TextUuid::new(f.id.0),
                f.status.as_str(),
                f.refunded.0
            ])?;
        if !unchanged {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Applies one commit; the caller wraps it in a savepoint and rolls back on `Err`.
fn apply_commit(c: &Connection, w: &WalletCommit) -> Result<(), CommitError> {
    let fail = |e: rusqlite::Error| CommitError::from(db(e));
    let tenant = w.wallet.tenant_id;
    if w.require_active {
        let active = c
            .prepare_cached("SELECT 1 FROM users WHERE id = ? AND status = 'active'")
            .and_then(|mut st| st.exists([TextUuid::new(w.wallet.user_id.0)]))
            .map_err(fail)?;
        if !active {
            return Err(CommitError::CardInactive);
        }
    }
    if let Some(req) = &w.request {
        if !insert_request(c, req, w.at).map_err(fail)? {
            return Err(CommitError::Duplicate);
        }
    }
    if let Some(nonce) = &w.used_nonce {
        let n = c
            .prepare_cached("INSERT INTO used_codes (nonce, user_id, used_at) VALUES (?,?,?) ON CONFLICT DO NOTHING")
            .and_then(|mut st| st.execute(params![nonce, TextUuid::new(w.wallet.user_id.0), ms(w.at)]))
            .map_err(fail)?;
        if n == 0 {
            return Err(CommitError::NonceUsed);
        }
    }
    if let Some(r) = &w.register {
        // A top-up's reference is taken once in a tenant (`topups_reference`); a
        // withdrawal's line has no key but its fresh id.
        let taken_skips = match r.kind {
            RegisterKind::TopUp => " ON CONFLICT DO NOTHING",
            RegisterKind::Withdrawal => "",
        };
        let n = c
            .prepare_cached(&format!(
                "INSERT INTO {} (id, tenant_id, user_id, amount, reference, {}, created_at) \
                 VALUES (?,?,?,?,?,?,?){taken_skips}",
                r.kind.table(),
                r.kind.by_column()
            ))
            .and_then(|mut st| {
                st.execute(params![
                    TextUuid::new(r.id),
                    TextUuid::new(tenant.0),
                    TextUuid::new(r.user_id.0),
                    r.amount.0,
                    r.reference,
                    r.by,
                    ms(w.at)
                ])
            })
            .map_err(fail)?;
        if n == 0 {
            return Err(CommitError::ReferenceUsed);
        }
    }
    if !payments_unchanged(c, tenant, &w.payment_fences).map_err(fail)? {
        return Err(CommitError::Fenced);
    }
    if let Some(r) = &w.topup_reversal {
        // A top-up is reversed once: a decision that saw it standing is fenced if it was
        // reversed since, as a refund is by its payment.
        let n = c
            .prepare_cached(
                "UPDATE topups SET reversal_id = ?, reversed_at = ?, reversed_by = ?, \
                   reversal_reason = ? WHERE id = ? AND tenant_id = ? AND reversal_id IS NULL",
            )
            .and_then(|mut st| {
                st.execute(params![
                    TextUuid::new(r.reversal_id),
                    ms(w.at),
                    r.by,
                    r.reason,
                    TextUuid::new(r.topup_id),
                    TextUuid::new(tenant.0)
                ])
            })
            .map_err(fail)?;
        if n == 0 {
            return Err(CommitError::Fenced);
        }
    }
    if !upsert_wallet(c, &w.wallet).map_err(fail)? {
        return Err(CommitError::Fenced);
    }
    let write_rest = || -> rusqlite::Result<()> {
        for s in &w.subsidies {
            c.prepare_cached(&format!(
                "INSERT INTO subsidy_accounts (tenant_id, {SUBSIDY_COLS}) VALUES (?,?,?,?,?,?,?,?,?) \
                 ON CONFLICT (id) DO UPDATE SET balance = excluded.balance"
            ))?
            .execute(params![
                tenant.to_string(),
                s.id.to_string(),
                s.user_id.to_string(),
                s.rule_id.map(|r| r.to_string()),
                s.name,
                s.balance.0,
                ids_json(&s.merchant_ids),
                s.expires_at.map(ms),
                ms(s.created_at)
            ])?;
        }
        for cp in &w.coupons {
            c.prepare_cached(&format!(
                "INSERT INTO coupons (tenant_id, {COUPON_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?) \
                 ON CONFLICT (id) DO UPDATE SET used_payment = excluded.used_payment"
            ))?
            .execute(params![
                tenant.to_string(),
                cp.id.to_string(),
                cp.user_id.to_string(),
                cp.name,
                cp.discount.0,
                cp.threshold.0,
                ids_json(&cp.merchant_ids),
                ms(cp.valid_from),
                ms(cp.expires_at),
                cp.used_payment.map(|p| p.to_string()),
                ms(cp.created_at)
            ])?;
        }
        for p in &w.payments {
            upsert_payment(c, p)?;
        }
        insert_entries(c, tenant, &w.entries, w.at)?;
        let mut risk =
            c.prepare_cached("INSERT INTO risk_events (id, user_id, kind, at) VALUES (?,?,?,?)")?;
        for (kind, at) in &w.risk_events {
            risk.execute(params![
                Uuid::now_v7().to_string(),
                w.wallet.user_id.to_string(),
                kind,
                ms(*at)
            ])?;
        }
        Ok(())
    };
    write_rest().map_err(fail)
}

fn register_line(r: &Row) -> rusqlite::Result<RegisterLine> {
    Ok(RegisterLine {
        id: uuid_col(r, 0)?,
        user_id: UserId(uuid_col(r, 1)?),
        name: r.get(2)?,
        number: r.get(3)?,
        amount: Money(r.get(4)?),
        reference: r.get(5)?,
        by: r.get(6)?,
        at: ts(r.get(7)?),
        reversal: match opt_uuid_col(r, 8)? {
            Some(id) => Some(Reversal {
                id,
                at: ts(r.get(9)?),
                by: r.get(10)?,
                reason: r.get(11)?,
            }),
            None => None,
        },
    })
}

#[async_trait]
impl MoneyStore for SqliteStore {
    async fn create_merchant(
        &self,
        tenant: TenantId,
        m: Merchant,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            if let Some(p) = m.parent_id {
                check_refs(c, "merchants", tenant, &[p.0], "parent_id")?;
            }
            let taken: bool = c
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM merchants WHERE tenant_id = ? AND number = ?)",
                    params![tenant.to_string(), m.number],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if taken {
                return Err(StoreError::conflict(
                    "merchant_number_taken",
                    Some("number"),
                    "another merchant has this number",
                ));
            }
            c.execute(
                &format!(
                    "INSERT INTO merchants (tenant_id, {MERCHANT_COLS}) VALUES (?,?,?,?,?,?,?,?)"
                ),
                params![
                    tenant.to_string(),
                    m.id.to_string(),
                    m.parent_id.map(|p| p.to_string()),
                    m.name,
                    m.number,
                    m.single_limit.0,
                    m.depth,
                    ms(m.created_at)
                ],
            )
            .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn list_merchants(&self, tenant: TenantId) -> StoreResult<Vec<Merchant>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {MERCHANT_COLS} FROM merchants WHERE tenant_id = ? ORDER BY id"
                ))
                .map_err(db)?;
            st.query_map([tenant.to_string()], merchant_from_row)
                .and_then(|r| r.collect())
                .map_err(db)
        })
        .await
    }

    async fn update_merchant(
        &self,
        tenant: TenantId,
        id: MerchantId,
        name: Option<String>,
        single_limit: Option<Money>,
        audit: Audit,
    ) -> StoreResult<Merchant> {
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE merchants SET name = coalesce(?, name), single_limit = coalesce(?, single_limit) \
                     WHERE tenant_id = ? AND id = ?",
                    params![name, single_limit.map(|m| m.0), tenant.to_string(), id.to_string()],
                )
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            insert_audit(c, &audit)?;
            c.query_row(
                &format!("SELECT {MERCHANT_COLS} FROM merchants WHERE id = ?"),
                [id.to_string()],
                merchant_from_row,
            )
            .map_err(db)
        })
        .await
    }

    async fn create_terminal(
        &self,
        tenant: TenantId,
        t: Terminal,
        token: NewToken,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            let found = c
                .query_row(
                    "SELECT 1 FROM merchants WHERE tenant_id = ? AND id = ?",
                    [tenant.to_string(), t.merchant_id.to_string()],
                    |_| Ok(()),
                )
                .optional()
                .map_err(db)?;
            found.ok_or(StoreError::NotFound)?;
            crate::sqlite_collection::insert_terminal(c, tenant, &t)?;
            insert_token(c, &token)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn replace_terminal_token(
        &self,
        tenant: TenantId,
        id: TerminalId,
        token: NewToken,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            let retired: Option<i64> = c
                .query_row(
                    "SELECT retired_at FROM terminals WHERE tenant_id = ? AND id = ?",
                    [tenant.to_string(), id.to_string()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?
                .ok_or(StoreError::NotFound)?;
            if retired.is_some() {
                return Err(StoreError::Gone);
            }
            revoke_terminal_tokens(c, id)?;
            insert_token(c, &token)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn retire_terminal(
        &self,
        tenant: TenantId,
        id: TerminalId,
        at: Timestamp,
        audit: Audit,
    ) -> StoreResult<Terminal> {
        self.write(move |c| {
            let changed = c
                .execute(
                    "UPDATE terminals SET retired_at = coalesce(retired_at, ?) \
                     WHERE tenant_id = ? AND id = ?",
                    params![ms(at), tenant.to_string(), id.to_string()],
                )
                .map_err(db)?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            revoke_terminal_tokens(c, id)?;
            insert_audit(c, &audit)?;
            c.query_row(
                &format!("SELECT {TERMINAL_COLS} FROM terminals WHERE id = ?"),
                [id.to_string()],
                terminal_row,
            )
            .map_err(db)
        })
        .await
    }

    async fn get_terminal(&self, tenant: TenantId, id: TerminalId) -> StoreResult<Terminal> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {TERMINAL_COLS} FROM terminals WHERE tenant_id = ? AND id = ?"
            ))
            .and_then(|mut st| {
                st.query_row([tenant.to_string(), id.to_string()], terminal_row)
                    .optional()
            })
            .map_err(db)?
            .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn load_wallet(
        &self,
        tenant: TenantId,
        user: UserId,
        now: Timestamp,
    ) -> StoreResult<WalletSnapshot> {
        self.read(move |c| {
            let exists = c
                .prepare_cached("SELECT status FROM users WHERE tenant_id = ? AND id = ?")
                .and_then(|mut st| st.query_row([tenant.to_string(), user.to_string()], |_| Ok(())).optional())
                .map_err(db)?;
            exists.ok_or(StoreError::NotFound)?;
            let wallet = c
                .prepare_cached(&format!("SELECT {WALLET_COLS} FROM wallets WHERE user_id = ?"))
                .and_then(|mut st| st.query_row([user.to_string()], wallet_from_row).optional())
                .map_err(db)?
                .unwrap_or_else(|| WalletRow::empty(tenant, user, now));
            // Live accounts only, as on PostgreSQL (`WALLET_READS`).
            let subsidies = c
                .prepare_cached(&format!(
                    "SELECT {SUBSIDY_COLS} FROM subsidy_accounts WHERE user_id = ? \
                     AND (expires_at IS NULL OR expires_at > ?) ORDER BY id"
                ))
                .and_then(|mut st| st.query_map(params![user.to_string(), ms(now)], subsidy_from_row)?.collect())
                .map_err(db)?;
            let coupons = c
                .prepare_cached(&format!(
                    "SELECT {COUPON_COLS} FROM coupons WHERE user_id = ? AND expires_at > ? ORDER BY id"
                ))
                .and_then(|mut st| st.query_map(params![user.to_string(), ms(now)], coupon_from_row)?.collect())
                .map_err(db)?;
            let day_ago = ms(now) - 24 * 3600 * 1000;
            let risk_events = c
                .prepare_cached("SELECT at FROM risk_events WHERE user_id = ? AND at > ? ORDER BY at")
                .and_then(|mut st| st.query_map(params![user.to_string(), day_ago], |r| Ok(ts(r.get(0)?)))?.collect())
                .map_err(db)?;
            let open_payments = c
                .prepare_cached(&OPEN_PAYMENTS)
                .and_then(|mut st| st.query_map([user.to_string()], payment_from_row)?.collect())
                .map_err(db)?;
            Ok(WalletSnapshot { wallet, subsidies, coupons, risk_events, open_payments })
        })
        .await
    }

    async fn wallet_version(&self, user: UserId) -> StoreResult<i64> {
        self.read(move |c| {
            c.prepare_cached("SELECT version FROM wallets WHERE user_id = ?")
                .and_then(|mut st| st.query_row([user.to_string()], |r| r.get(0)).optional())
                .map(Option::unwrap_or_default)
                .map_err(db)
        })
        .await
    }

    async fn commit_wallets(&self, commits: Vec<WalletCommit>) -> Vec<Result<(), CommitError>> {
        let n = commits.len();
        let commits = std::sync::Arc::new(commits);
        // Fast path: every commit in the batch applies (the usual case), with no savepoint
        // per commit. Any failure undoes the whole attempt, and the slow path below gives
        // each commit its own savepoint so that it fails alone.
        let all = commits.clone();
        // The page is made here, not on the writer thread, which every payment waits on.
        let page = OutboxPage::of_commits(commits.iter());
        let fast = self
            .write(move |c| {
                for commit in all.iter() {
                    if apply_commit(c, commit).is_err() {
                        return Err(StoreError::Unavailable("retry commit by commit".into()));
                    }
                }
                insert_outbox(c, page.as_ref()).map_err(db)
            })
            .await;
        if fast.is_ok() {
            return vec![Ok(()); n];
        }
        let result = self
            .write(move |c| {
                let mut results = Vec::with_capacity(commits.len());
                for commit in commits.iter() {
                    c.execute_batch("SAVEPOINT wallet").map_err(db)?;
                    let r = apply_commit(c, commit);
                    if r.is_ok() {
                        c.execute_batch("RELEASE wallet").map_err(db)?;
                    } else {
                        c.execute_batch("ROLLBACK TO wallet; RELEASE wallet")
                            .map_err(db)?;
                    }
                    results.push(r);
                }
                let applied = commits.iter().zip(&results).filter(|(_, r)| r.is_ok());
                insert_outbox(c, OutboxPage::of_commits(applied.map(|(w, _)| w)).as_ref())
                    .map_err(db)?;
                Ok(results)
            })
            .await;
        match result {
            Ok(results) => results,
            Err(e) => vec![Err(e.into()); n],
        }
    }

    async fn find_money_request(
        &self,
        scope: String,
        key: String,
    ) -> StoreResult<Option<MoneyRequest>> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT request_hash, status, body FROM money_requests \
                 WHERE key_digest = ? AND scope = ? AND key = ?",
            )
            .and_then(|mut st| {
                st.query_row(params![&key_digest(&scope, &key)[..], scope, key], |r| {
                    let hash: Vec<u8> = r.get(0)?;
                    let mut request_hash = [0u8; 32];
                    if hash.len() == 32 {
                        request_hash.copy_from_slice(&hash);
                    }
                    Ok(MoneyRequest {
                        scope: scope.clone(),
                        key: key.clone(),
                        request_hash,
                        status: r.get::<_, i64>(1)? as u16,
                        body: r.get(2)?,
                    })
                })
                .optional()
            })
            .map_err(db)
        })
        .await
    }

    async fn stale_deferred(&self, before: Timestamp, limit: usize) -> StoreResult<Vec<Payment>> {
        self.read(move |c| {
            // The `IN` term is the open payments' index's own condition, written out so
            // that SQLite reads that small index rather than every payment.
            c.prepare_cached(&format!(
                "SELECT {PAYMENT_COLS} FROM payments WHERE status IN ('accepted', 'unsettled') \
                 AND status = 'accepted' AND created_at < ? ORDER BY created_at LIMIT ?"
            ))
            .and_then(|mut st| {
                st.query_map(params![ms(before), limit as i64], payment_from_row)?
                    .collect()
            })
            .map_err(db)
        })
        .await
    }

    async fn wallets_in_arrears(&self) -> StoreResult<Vec<InArrears>> {
        self.read(|c| {
            let mut st = c.prepare_cached(IN_ARREARS).map_err(db)?;
            st.query_map([], |r| {
                Ok(InArrears {
                    tenant: TenantId(uuid_col(r, 0)?),
                    user: UserId(uuid_col(r, 1)?),
                    reminded_on: r.get(2)?,
                    owed_since: r.get::<_, Option<i64>>(3)?.map(ts),
                })
            })
            .and_then(|r| r.collect())
            .map_err(db)
        })
        .await
    }

    async fn wallet_stats(&self, tenant: TenantId, now: Timestamp) -> StoreResult<WalletStats> {
        self.read(move |c| {
            c.query_row(
                "SELECT \
                   COALESCE(SUM(frozen AND (frozen_until IS NULL OR frozen_until > ?2)), 0), \
                   COALESCE(SUM(arrears > 0), 0), COALESCE(SUM(arrears), 0) \
                 FROM wallets WHERE tenant_id = ?1",
                params![tenant.to_string(), ms(now)],
                |r| {
                    Ok(WalletStats {
                        frozen: r.get(0)?,
                        in_arrears: r.get(1)?,
                        arrears_total: r.get(2)?,
                    })
                },
            )
            .map_err(db)
        })
        .await
    }

    async fn merchant_day(
        &self,
        tenant: TenantId,
        merchant: MerchantId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<MerchantDay> {
        self.read(move |c| {
            let args = params![tenant.to_string(), merchant.to_string(), ms(from), ms(to)];
            let sales = c
                .prepare_cached(
                    "SELECT id, amount, coupon_amount, subsidy_amount, balance_amount, deferred_amount \
                     FROM payments WHERE tenant_id = ? AND merchant_id = ? \
                     AND status <> 'declined' AND created_at >= ? AND created_at < ?",
                )
                .and_then(|mut st| {
                    st.query_map(args, |r| {
                        Ok((
                            PaymentId(uuid_col(r, 0)?),
                            Money(r.get(1)?),
                            Breakdown {
                                coupon: Money(r.get(2)?),
                                subsidy: Money(r.get(3)?),
                                balance: Money(r.get(4)?),
                                deferred: Money(r.get(5)?),
                            },
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)?;
            let refunds = c
                .prepare_cached(
                    "SELECT tx_id, -amount FROM ledger_entries WHERE tenant_id = ? \
                     AND account = 'merchant_receivable' AND ref_id = ? AND amount < 0 \
                     AND created_at >= ? AND created_at < ?",
                )
                .and_then(|mut st| {
                    st.query_map(args, |r| Ok((uuid_col(r, 0)?, Money(r.get(1)?))))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)?;
            Ok(MerchantDay { sales, refunds })
        })
        .await
    }

    async fn purge_used_codes(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        // Rows go in the order they were written (rowid), which is the order of `used_at`
        // but for clock steps: the oldest first, without an index on `used_at`.
        self.write(move |c| crate::sqlite::purge_oldest(c, "used_codes", "used_at", before, limit))
            .await
    }

    async fn purge_money_requests(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        self.write(move |c| {
            crate::sqlite::purge_oldest(c, "money_requests", "created_at", before, limit)
        })
        .await
    }

    async fn pending_outbox(
        &self,
        before: Option<Timestamp>,
        limit: usize,
    ) -> StoreResult<Vec<PendingEvent>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id, events FROM outbox_pages WHERE created_at < ? \
                     ORDER BY created_at, rowid LIMIT ?",
                )
                .map_err(db)?;
            let before = before.map_or(i64::MAX, ms);
            // `limit` counts pages, and the relay publishes whole pages.
            let pages: Vec<(EventId, String)> = st
                .query_map(params![before, limit as i64], |r| {
                    Ok((EventId(uuid_col(r, 0)?), r.get(1)?))
                })
                .and_then(|r| r.collect())
                .map_err(db)?;
            Ok(OutboxPage::read(
                pages.iter().map(|(key, json)| (*key, json.as_str())),
            ))
        })
        .await
    }

    async fn delete_outbox(&self, keys: Vec<EventId>) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.write(move |c| {
            let mut st = c
                .prepare_cached("DELETE FROM outbox_pages WHERE id = ?")
                .map_err(db)?;
            for key in &keys {
                st.execute([key.to_string()]).map_err(db)?;
            }
            Ok(())
        })
        .await
    }

    async fn insert_orphan_payment(
        &self,
        payment: Payment,
        outbox: Vec<OutboxEvent>,
        req: MoneyRequest,
    ) -> StoreResult<()> {
        self.write(move |c| {
            if !insert_request(c, &req, payment.created_at).map_err(db)? {
                return Err(StoreError::conflict(
                    "idempotency_conflict",
                    None,
                    "this Idempotency-Key was just used",
                ));
            }
            upsert_payment(c, &payment).map_err(db)?;
            let page = OutboxPage::of_one(payment.tenant_id, &outbox, payment.created_at);
            insert_outbox(c, page.as_ref()).map_err(db)
        })
        .await
    }

    async fn get_payment(&self, tenant: TenantId, id: PaymentId) -> StoreResult<Payment> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {PAYMENT_COLS} FROM payments WHERE tenant_id = ? AND id = ?"
            ))
            .and_then(|mut st| {
                st.query_row([tenant.to_string(), id.to_string()], payment_from_row)
                    .optional()
            })
            .map_err(db)?
            .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn list_payments(
        &self,
        tenant: TenantId,
        filter: PaymentFilter,
        page: PageReq<PaymentId>,
    ) -> StoreResult<Page<Payment, PaymentId>> {
        self.read(move |c| {
            let mut sql = format!("SELECT {PAYMENT_COLS} FROM payments WHERE tenant_id = ?");
            let mut values: Vec<String> = vec![tenant.to_string()];
            if let Some(after) = page.after {
                sql.push_str(" AND id < ?");
                values.push(after.to_string());
            }
            if let Some(u) = filter.user_id {
                sql.push_str(" AND user_id = ?");
                values.push(u.to_string());
            }
            if let Some(m) = filter.merchant_id {
                sql.push_str(" AND merchant_id = ?");
                values.push(m.to_string());
            }
            if let Some(s) = filter.status {
                sql.push_str(" AND status = ?");
                values.push(s.as_str().into());
            }
            sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", page.limit + 1));
            let mut st = c.prepare(&sql).map_err(db)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(values.iter()), payment_from_row)
                .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .map_err(db)?;
            Ok(paginate(rows, page.limit, |p| p.id))
        })
        .await
    }

    async fn payments_in_window(
        &self,
        tenant: TenantId,
        merchants: Vec<MerchantId>,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<PaymentLine>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT q.*, coalesce(u.name, ''), coalesce(u.number, '') FROM ( \
                       SELECT {PAYMENT_COLS} FROM payments \
                       WHERE merchant_id IN (SELECT value FROM json_each(?2)) \
                       AND created_at >= ?3 AND created_at < ?4 AND tenant_id = ?1 \
                       AND status <> 'declined') q \
                     LEFT JOIN users u ON u.id = q.user_id \
                     ORDER BY q.created_at, q.id LIMIT ?5"
                ))
                .map_err(db)?;
            let rows = st
                .query_map(
                    params![
                        tenant.to_string(),
                        ids_json(&merchants),
                        ms(from),
                        ms(to),
                        limit as i64
                    ],
                    |r| {
                        Ok(PaymentLine {
                            payment: payment_from_row(r)?,
                            name: r.get(17)?,
                            number: r.get(18)?,
                        })
                    },
                )
                .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .map_err(db)?;
            Ok(rows)
        })
        .await
    }

    async fn statement_sources(
        &self,
        tenant: TenantId,
        user: UserId,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<StatementSources> {
        self.read(move |c| {
            // One snapshot for the three sources.
            let c = c.unchecked_transaction().map_err(db)?;
            let (t, u) = (tenant.to_string(), user.to_string());
            let cursor = before.map(|b| b.to_string());
            let below = |col: &str| match cursor {
                Some(_) => format!(" AND {col} < ?3"),
                None => " AND ?3 IS NULL".into(),
            };
            let mut payments = c
                .prepare_cached(&format!(
                    "SELECT {PAYMENT_COLS} FROM payments WHERE tenant_id = ?1 AND user_id = ?2{} \
                     ORDER BY id DESC LIMIT ?4",
                    below("id")
                ))
                .and_then(|mut st| {
                    st.query_map(params![t, u, cursor, limit + 1], payment_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)?;
            let more_payments = payments.len() > limit as usize;
            payments.truncate(limit as usize);
            let subsidy_accounts = c
                .prepare_cached("SELECT id, name FROM subsidy_accounts WHERE user_id = ?2 AND tenant_id = ?1")
                .and_then(|mut st| {
                    st.query_map(params![t, u], |r| Ok((SubsidyId(uuid_col(r, 0)?), r.get(1)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)?;
            // The conditions of the partial indexes `ledger_holder_movements`,
            // `ledger_after_sale` and `payments_user_refunded` (V35), word for word.
            let holder = format!(
                "WITH refs(id) AS (SELECT ?2 UNION ALL SELECT id FROM subsidy_accounts WHERE user_id = ?2 AND tenant_id = ?1), \
                 movements AS (SELECT * FROM ledger_entries WHERE ref_id IN (SELECT id FROM refs) AND tenant_id = ?1 \
                   AND ((account IN ('cash', 'subsidy') AND payment_id IS NULL) OR account = 'arrears')), \
                 txs AS (SELECT DISTINCT tx_id FROM movements WHERE 1{} ORDER BY tx_id DESC LIMIT ?4) \
                 SELECT {STATEMENT_ENTRY_COLS} FROM movements WHERE tx_id IN (SELECT tx_id FROM txs)",
                below("tx_id")
            );
            let refunds = format!(
                "WITH after_sale AS (SELECT * FROM ledger_entries WHERE payment_id IN \
                   (SELECT id FROM payments WHERE user_id = ?2 AND refunded > 0 AND tenant_id = ?1) \
                   AND payment_id IS NOT NULL AND tx_id <> payment_id AND tenant_id = ?1), \
                 txs AS (SELECT tx_id FROM after_sale WHERE account = 'merchant_receivable'{} \
                   ORDER BY tx_id DESC LIMIT ?4) \
                 SELECT {STATEMENT_ENTRY_COLS} FROM after_sale WHERE tx_id IN (SELECT tx_id FROM txs)",
                below("tx_id")
            );
            let entries = |sql: &str| {
                c.prepare_cached(sql)
                    .and_then(|mut st| {
                        st.query_map(params![t, u, cursor, limit + 1], statement_entry)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(db)
            };
            Ok(StatementSources {
                payments,
                more_payments,
                holder: entries(&holder)?,
                refunds: entries(&refunds)?,
                subsidy_accounts,
            })
        })
        .await
    }

    async fn spending_by_user(
        &self,
        tenant: TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<UserSpending>> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT user_id, count(*), sum(amount), sum(refunded) FROM payments \
                 WHERE merchant_id IN (SELECT id FROM merchants WHERE tenant_id = ?1) \
                 AND status <> 'declined' AND created_at >= ?2 AND created_at < ?3 \
                 AND user_id IS NOT NULL GROUP BY user_id",
            )
            .and_then(|mut st| {
                st.query_map(params![tenant.to_string(), ms(from), ms(to)], |r| {
                    Ok(UserSpending {
                        user_id: UserId(uuid_col(r, 0)?),
                        payments: r.get::<_, i64>(1)? as u64,
                        amount: Money(r.get(2)?),
                        refunded: Money(r.get(3)?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db)
        })
        .await
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
        self.read(move |c| {
            let (count, gross, coupon, subsidy, balance, deferred) = c
                .prepare_cached(
                    "SELECT count(*), coalesce(sum(amount), 0), coalesce(sum(coupon_amount), 0), \
                     coalesce(sum(subsidy_amount), 0), coalesce(sum(balance_amount), 0), \
                     coalesce(sum(deferred_amount), 0) FROM payments WHERE tenant_id = ? AND merchant_id = ? \
                     AND status <> 'declined' AND created_at >= ? AND created_at < ?",
                )
                .and_then(|mut st| {
                    st.query_row(params![tenant.to_string(), merchant.to_string(), ms(from), ms(to)], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
                    })
                })
                .map_err(db)?;
            let refunds: i64 = c
                .prepare_cached(
                    "SELECT coalesce(-sum(amount), 0) FROM ledger_entries WHERE tenant_id = ? \
                     AND account = 'merchant_receivable' AND ref_id = ? AND amount < 0 \
                     AND created_at >= ? AND created_at < ?",
                )
                .and_then(|mut st| {
                    st.query_row(params![tenant.to_string(), merchant.to_string(), ms(from), ms(to)], |r| r.get(0))
                })
                .map_err(db)?;
            Ok(Totals {
                gross: Money(gross),
                refunds: Money(refunds),
                count: count as u64,
                by_source: Breakdown {
                    coupon: Money(coupon),
                    subsidy: Money(subsidy),
                    balance: Money(balance),
                    deferred: Money(deferred),
                },
            })
        })
        .await
    }

    async fn create_subsidy_rule(
        &self,
        tenant: TenantId,
        rule: SubsidyRule,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO subsidy_rules (id, tenant_id, name, amount, targets, merchant_ids, expires_at, status, \
                 created_by, created_at) VALUES (?,?,?,?,?,?,?,'pending',?,?)",
                params![
                    rule.id.to_string(),
                    tenant.to_string(),
                    rule.name,
                    rule.amount.0,
                    serde_json::to_string(&rule.targets).map_err(StoreError::backend)?,
                    ids_json(&rule.merchant_ids),
                    rule.expires_at.map(ms),
                    rule.created_by.to_string(),
                    ms(rule.created_at)
                ],
            )
            .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn get_subsidy_rule(
        &self,
        tenant: TenantId,
        id: SubsidyRuleId,
    ) -> StoreResult<SubsidyRule> {
        self.read(move |c| load_rule(c, tenant, id)).await
    }

    async fn list_subsidy_rules(
        &self,
        tenant: TenantId,
        state: Option<RuleState>,
        page: PageReq<SubsidyRuleId>,
    ) -> StoreResult<Page<SubsidyRule, SubsidyRuleId>> {
        self.read(move |c| {
            let cond = state.map_or("1", RuleState::condition);
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {RULE_COLS} FROM subsidy_rules WHERE tenant_id = ?1 \
                     AND (?2 IS NULL OR id < ?2) AND {cond} ORDER BY id DESC LIMIT ?3"
                ))
                .map_err(db)?;
            let rows = st
                .query_map(
                    params![
                        tenant.to_string(),
                        page.after.map(|a| a.to_string()),
                        page.limit + 1
                    ],
                    rule_row,
                )
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(db)?;
            Ok(paginate(rows, page.limit, |r| r.id))
        })
        .await
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
        self.write(move |c| {
            let rule = load_rule(c, tenant, id)?;
            if rule.status != "pending" {
                return Err(not_pending(&rule));
            }
            c.execute(
                "UPDATE subsidy_rules SET rejected_by = ?, rejected_at = ?, reject_reason = ? \
                 WHERE tenant_id = ? AND id = ?",
                params![
                    by.to_string(),
                    ms(now),
                    reason,
                    tenant.to_string(),
                    id.to_string()
                ],
            )
            .map_err(db)?;
            insert_audit(c, &audit)?;
            load_rule(c, tenant, id)
        })
        .await
    }

    async fn target_holders(
        &self,
        tenant: TenantId,
        targets: SubsidyTargets,
        status: Option<UserStatus>,
    ) -> StoreResult<Vec<Holder>> {
        self.read(move |c| {
            let t = tenant.to_string();
            let users = ids_json(&targets.user_ids);
            let depts = ids_json(&targets.department_ids);
            let tags = ids_json(&targets.tag_ids);
            let identities = serde_json::to_string(&targets.identities).map_err(StoreError::backend)?;
            let mut st = c
                .prepare_cached(
                    "WITH RECURSIVE tree(id) AS ( \
                       SELECT id FROM departments WHERE tenant_id = ?1 AND id IN (SELECT value FROM json_each(?3)) \
                       UNION SELECT d.id FROM departments d JOIN tree ON d.parent_id = tree.id) \
                     SELECT u.id, u.name, u.number FROM users u \
                     WHERE u.tenant_id = ?1 AND (?6 IS NULL OR u.status = ?6) AND ( \
                       u.id IN (SELECT value FROM json_each(?2)) \
                       OR EXISTS (SELECT 1 FROM user_departments m JOIN tree ON m.department_id = tree.id \
                                  WHERE m.user_id = u.id) \
                       OR EXISTS (SELECT 1 FROM user_tags g WHERE g.user_id = u.id \
                                  AND g.tag_id IN (SELECT value FROM json_each(?4))) \
                       OR u.identity IN (SELECT value FROM json_each(?5))) ORDER BY u.id",
                )
                .map_err(db)?;
            let status = status.map(|s| s.as_str());
            st.query_map(params![t, users, depts, tags, identities, status], |r| {
                Ok(Holder {
                    id: UserId(uuid_col(r, 0)?),
                    name: r.get(1)?,
                    number: r.get(2)?,
                })
            })
            .and_then(|r| r.collect())
            .map_err(db)
        })
        .await
    }

    async fn list_register(
        &self,
        tenant: TenantId,
        kind: RegisterKind,
        filter: RegisterFilter,
        page: PageReq<Uuid>,
    ) -> StoreResult<Page<RegisterLine, Uuid>> {
        self.read(move |c| {
            let mut sql = format!("{} WHERE w.tenant_id = ?", kind.select_lines());
            let mut values: Vec<rusqlite::types::Value> = vec![tenant.to_string().into()];
            if let Some(after) = page.after {
                sql.push_str(" AND w.id > ?");
                values.push(after.to_string().into());
            }
            if let Some(user) = filter.user {
                sql.push_str(" AND w.user_id = ?");
                values.push(user.to_string().into());
            }
            if let Some(t) = filter.from {
                sql.push_str(" AND w.created_at >= ?");
                values.push(ms(t).into());
            }
            if let Some(t) = filter.to {
                sql.push_str(" AND w.created_at < ?");
                values.push(ms(t).into());
            }
            if let Some(r) = filter.reference {
                sql.push_str(" AND w.reference = ?");
                values.push(r.into());
            }
            sql.push_str(kind.reversed_sql(filter.reversed));
            sql.push_str(" ORDER BY w.id LIMIT ?");
            values.push((i64::from(page.limit) + 1).into());
            let rows = c
                .prepare_cached(&sql)
                .and_then(|mut st| {
                    st.query_map(rusqlite::params_from_iter(values), register_line)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)?;
            Ok(paginate(rows, page.limit, |w| w.id))
        })
        .await
    }

    async fn register_notes(
        &self,
        tenant: TenantId,
        ids: Vec<Uuid>,
    ) -> StoreResult<Vec<RegisterNote>> {
        self.read(move |c| {
            let mut found = Vec::new();
            // A top-up's or a withdrawal's reference, by the line's id; a reversal's top-up
            // (and its reference), by the reversal's id.
            let questions = [
                "SELECT id, reference, NULL FROM topups \
                  WHERE id = ?1 AND tenant_id = ?2 AND reference IS NOT NULL",
                "SELECT id, reference, NULL FROM withdrawals \
                  WHERE id = ?1 AND tenant_id = ?2 AND reference IS NOT NULL",
                "SELECT reversal_id, reference, id FROM topups \
                  WHERE reversal_id = ?1 AND tenant_id = ?2",
            ];
            for sql in questions {
                let mut st = c.prepare_cached(sql).map_err(db)?;
                for id in &ids {
                    let note = st
                        .query_row(params![TextUuid::new(*id), TextUuid::new(tenant.0)], |r| {
                            Ok(RegisterNote {
                                id: uuid_col(r, 0)?,
                                reference: r.get(1)?,
                                reverses: opt_uuid_col(r, 2)?,
                            })
                        })
                        .optional()
                        .map_err(db)?;
                    found.extend(note);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn get_topup(&self, tenant: TenantId, id: Uuid) -> StoreResult<RegisterLine> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "{} WHERE w.id = ? AND w.tenant_id = ?",
                RegisterKind::TopUp.select_lines()
            ))
            .and_then(|mut st| {
                st.query_row(
                    params![TextUuid::new(id), TextUuid::new(tenant.0)],
                    register_line,
                )
                .optional()
            })
            .map_err(db)?
            .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn topups_by_reference(
        &self,
        tenant: TenantId,
        references: Vec<String>,
    ) -> StoreResult<Vec<RegisterLine>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "{} WHERE w.tenant_id = ? AND w.reference = ? AND w.reversal_id IS NULL",
                    RegisterKind::TopUp.select_lines()
                ))
                .map_err(db)?;
            let mut found = Vec::new();
            for r in &references {
                let rows = st
                    .query_map(params![TextUuid::new(tenant.0), r], register_line)
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(db)?;
                found.extend(rows);
            }
            Ok(found)
        })
        .await
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
        self.write(move |c| {
            let rule = load_rule(c, tenant, id)?;
            if rule.status != "pending" {
                return Err(not_pending(&rule));
            }
            let mut wallet = c
                .prepare_cached(
                    "INSERT INTO wallets (user_id, tenant_id, balance, arrears, version, agreement_signed, frozen, \
                     freeze_count, updated_at) VALUES (?, ?, 0, 0, 1, 0, 0, 0, ?) \
                     ON CONFLICT (user_id) DO UPDATE SET version = version + 1, updated_at = excluded.updated_at",
                )
                .map_err(db)?;
            let mut account = c
                .prepare_cached(&format!(
                    "INSERT INTO subsidy_accounts (tenant_id, {SUBSIDY_COLS}) VALUES (?,?,?,?,?,?,?,?,?)"
                ))
                .map_err(db)?;
            let merchants = ids_json(&rule.merchant_ids);
            for user in &users {
                wallet.execute(params![user.to_string(), tenant.to_string(), ms(now)]).map_err(db)?;
                let sid = SubsidyId::new();
                account
                    .execute(params![
                        tenant.to_string(),
                        sid.to_string(),
                        user.to_string(),
                        id.to_string(),
                        rule.name,
                        rule.amount.0,
                        merchants,
                        rule.expires_at.map(ms),
                        ms(now)
                    ])
                    .map_err(db)?;
                let tx = Uuid::now_v7();
                insert_entries(
                    c,
                    tenant,
                    &[
                        LedgerEntry { tx_id: tx, account: Account::Subsidy, ref_id: Some(sid.0), amount: rule.amount.0, payment_id: None },
                        LedgerEntry { tx_id: tx, account: Account::SubsidyFunding, ref_id: None, amount: -rule.amount.0, payment_id: None },
                    ],
                    now,
                )
                .map_err(db)?;
            }
            c.execute(
                "UPDATE subsidy_rules SET status = 'effective', approved_by = ?, approved_at = ?, credited_users = ? \
                 WHERE id = ?",
                params![approver.to_string(), ms(now), users.len() as i64, id.to_string()],
            )
            .map_err(db)?;
            insert_audit(c, &audit)?;
            Ok(users.len() as u64)
        })
        .await
    }

    async fn ledger_check(&self, tenant: TenantId) -> StoreResult<LedgerCheck> {
        self.check_ledger(tenant, true).await
    }

    async fn ledger_check_full(&self, tenant: TenantId) -> StoreResult<LedgerCheck> {
        self.check_ledger(tenant, false).await
    }

    async fn seal_ledger(&self, now: Timestamp) -> StoreResult<u64> {
        // Summed on a reader, so the writer, which every payment waits on, only stores
        // the sums. The boundary is the largest id of the reader's snapshot: the store
        // has one writer, so every entry up to it is committed and ids handed out later
        // are larger.
        let part = self
            .read(|c| {
                let c = c.unchecked_transaction().map_err(db)?;
                let from: i64 = c
                    .query_row("SELECT through_id FROM ledger_seal", [], |r| r.get(0))
                    .map_err(db)?;
                let through: i64 = c
                    .query_row("SELECT coalesce(max(id), 0) FROM ledger_entries", [], |r| r.get(0))
                    .map_err(db)?;
                if through <= from {
                    return Ok(None);
                }
                let tenants = c
                    .prepare(
                        "SELECT tenant_id, sum(n), sum(s), max(s <> 0) FROM ( \
                           SELECT tenant_id, tx_id, count(*) AS n, sum(amount) AS s \
                             FROM ledger_entries WHERE id > ?1 AND id <= ?2 GROUP BY tenant_id, tx_id) \
                         GROUP BY tenant_id",
                    )
                    .and_then(|mut st| {
                        st.query_map([from, through], |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, bool>(3)?))
                        })?
                        .collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(db)?;
                let sums = c
                    .prepare(
                        "SELECT tenant_id, account, ref_id, sum(amount) FROM ledger_entries \
                          WHERE id > ?1 AND id <= ?2 AND account IN ('cash', 'arrears', 'subsidy') \
                            AND ref_id IS NOT NULL \
                          GROUP BY tenant_id, account, ref_id",
                    )
                    .and_then(|mut st| {
                        st.query_map([from, through], |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
                        })?
                        .collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(db)?;
                c.commit().map_err(db)?;
                Ok(Some((from, through, tenants, sums)))
            })
            .await?;
        let Some((from, through, tenants, sums)) = part else {
            return Ok(0);
        };
        let sealed: i64 = tenants.iter().map(|t| t.1).sum();
        self.write(move |c| {
            // Sealed meanwhile (by an earlier round still being written): leave it.
            let now_from: i64 = c
                .query_row("SELECT through_id FROM ledger_seal", [], |r| r.get(0))
                .map_err(db)?;
            if now_from != from {
                return Ok(0);
            }
            let mut st = c
                .prepare_cached(
                    "INSERT INTO ledger_seal_tenants (tenant_id, entries, total, unbalanced) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (tenant_id) DO UPDATE SET entries = entries + excluded.entries, \
                        total = total + excluded.total, unbalanced = unbalanced OR excluded.unbalanced",
                )
                .map_err(db)?;
            for (tenant, entries, total, unbalanced) in &tenants {
                st.execute(params![tenant, entries, total, unbalanced]).map_err(db)?;
            }
            let mut st = c
                .prepare_cached(
                    "INSERT INTO ledger_seal_sums (tenant_id, account, ref_id, total) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (tenant_id, account, ref_id) DO UPDATE SET total = total + excluded.total",
                )
                .map_err(db)?;
            for (tenant, account, reference, total) in &sums {
                st.execute(params![tenant, account, reference, total]).map_err(db)?;
            }
            c.execute(
                "UPDATE ledger_seal SET through_id = ?, sealed_at = ?",
                params![through, ms(now)],
            )
            .map_err(db)?;
            Ok(sealed as u64)
        })
        .await
    }
}

impl SqliteStore {
    /// The ledger check: from the seal's sums and the entries after it (`from_seal`), or
    /// from every entry.
    async fn check_ledger(&self, tenant: TenantId, from_seal: bool) -> StoreResult<LedgerCheck> {
        self.read(move |c| {
            // One read transaction: every question is answered from one snapshot.
            let c = c.unchecked_transaction().map_err(db)?;
            let t = tenant.to_string();
            let (through, sealed_entries, sealed_sum, sealed_unbalanced) = if from_seal {
                c.query_row(
                    "SELECT s.through_id, coalesce(t.entries, 0), coalesce(t.total, 0), \
                            coalesce(t.unbalanced, 0) \
                       FROM ledger_seal s LEFT JOIN ledger_seal_tenants t ON t.tenant_id = ?",
                    [&t],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, bool>(3)?)),
                )
                .map_err(db)?
            } else {
                (0, 0, 0, false)
            };
            // The entries after the seal, found by their ids (`+` keeps SQLite from
            // reading the tenant's whole index instead); without the seal, every entry of
            // the tenant, by that index.
            let tenant_col = if from_seal { "+tenant_id" } else { "tenant_id" };
            let (entries, sum): (i64, i64) = c
                .query_row(
                    &format!(
                        "SELECT count(*), coalesce(sum(amount), 0) FROM ledger_entries \
                          WHERE {tenant_col} = ?1 AND id > ?2"
                    ),
                    params![&t, through],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(db)?;
            let unbalanced_tx: bool = c
                .query_row(
                    &format!(
                        "SELECT EXISTS (SELECT tx_id FROM ledger_entries \
                          WHERE {tenant_col} = ?1 AND id > ?2 GROUP BY tx_id HAVING sum(amount) <> 0)"
                    ),
                    params![&t, through],
                    |r| r.get(0),
                )
                .map_err(db)?;
            let mut st = c.prepare(&mismatched_wallets_sql(tenant_col)).map_err(db)?;
            let mismatched_wallets = st
                .query_map(params![&t, through, from_seal], |r| Ok(UserId(uuid_col(r, 0)?)))
                .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .map_err(db)?;
            drop(st);
            let mut mismatched_registers = Vec::new();
            for kind in [RegisterKind::TopUp, RegisterKind::Withdrawal] {
                let [lines, entries] = kind.tally_sql("?1");
                let pair = |sql: &str| {
                    c.query_row(sql, [&t], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                        .map_err(db)
                };
                let ((lines, lines_sum), (entries, entries_sum)) = (pair(&lines)?, pair(&entries)?);
                let tally = RegisterTally {
                    lines,
                    lines_sum,
                    entries,
                    entries_sum,
                };
                if !tally.agrees() {
                    mismatched_registers.push(kind.table().to_string());
                }
            }
            c.commit().map_err(db)?;
            Ok(LedgerCheck {
                balanced: sealed_sum + sum == 0 && !sealed_unbalanced && !unbalanced_tx,
                entries: (sealed_entries + entries) as u64,
                mismatched_wallets,
                sealed_entries: sealed_entries as u64,
                mismatched_registers,
            })
        })
        .await
    }
}

/// Wallets (by user) whose balance, arrears or a subsidy account differs from the sum of
/// its ledger entries: the seal's sums (when ?3) and one pass over the tenant's entries
/// after ?2 (found through `tenant_col`, `tenant_id` or `+tenant_id`), grouped, then
/// joined.
fn mismatched_wallets_sql(tenant_col: &str) -> String {
    format!(
        "WITH sums AS MATERIALIZED (SELECT account, ref_id, sum(total) AS total FROM ( \
                SELECT account, ref_id, total FROM ledger_seal_sums WHERE ?3 AND tenant_id = ?1 \
                UNION ALL \
                SELECT account, ref_id, amount FROM ledger_entries \
                 WHERE {tenant_col} = ?1 AND id > ?2 AND account IN ('cash', 'arrears', 'subsidy')) \
              GROUP BY account, ref_id) \
         SELECT w.user_id FROM wallets w \
           LEFT JOIN sums c ON c.account = 'cash' AND c.ref_id = w.user_id \
           LEFT JOIN sums a ON a.account = 'arrears' AND a.ref_id = w.user_id \
          WHERE w.tenant_id = ?1 \
            AND (w.balance <> coalesce(c.total, 0) OR w.arrears <> -coalesce(a.total, 0)) \
         UNION \
         SELECT s.user_id FROM subsidy_accounts s \
           LEFT JOIN sums x ON x.account = 'subsidy' AND x.ref_id = s.id \
          WHERE s.tenant_id = ?1 AND s.balance <> coalesce(x.total, 0) \
         ORDER BY 1"
    )
}

const RULE_COLS: &str = "id, name, amount, targets, merchant_ids, expires_at, status, \
     created_by, approved_by, credited_users, created_at, approved_at, rejected_by, rejected_at, \
     reject_reason";

fn rule_row(r: &rusqlite::Row) -> rusqlite::Result<SubsidyRule> {
    let targets: String = r.get(3)?;
    let rejected_at = r.get::<_, Option<i64>>(13)?.map(ts);
    Ok(SubsidyRule {
        id: SubsidyRuleId(uuid_col(r, 0)?),
        name: r.get(1)?,
        amount: Money(r.get(2)?),
        targets: serde_json::from_str(&targets).map_err(|e| conv(3, e))?,
        merchant_ids: ids_from_json(&r.get::<_, String>(4)?, MerchantId),
        expires_at: r.get::<_, Option<i64>>(5)?.map(ts),
        status: rule_status(r.get(6)?, rejected_at.is_some()),
        created_by: AdminId(uuid_col(r, 7)?),
        approved_by: opt_uuid_col(r, 8)?.map(AdminId),
        credited_users: r.get::<_, i64>(9)? as u64,
        created_at: ts(r.get(10)?),
        approved_at: r.get::<_, Option<i64>>(11)?.map(ts),
        rejected_by: opt_uuid_col(r, 12)?.map(AdminId),
        rejected_at,
        reject_reason: r.get(14)?,
    })
}

fn load_rule(c: &Connection, tenant: TenantId, id: SubsidyRuleId) -> StoreResult<SubsidyRule> {
    c.prepare_cached(&format!(
        "SELECT {RULE_COLS} FROM subsidy_rules WHERE tenant_id = ? AND id = ?"
    ))
    .and_then(|mut st| {
        st.query_row([tenant.to_string(), id.to_string()], rule_row)
            .optional()
    })
    .map_err(db)?
    .ok_or(StoreError::NotFound)
}
