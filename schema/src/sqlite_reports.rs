//! The financial reports' sums on SQLite: from the payments and ledger entries themselves
//! ("live"), and from the roll-ups of closed quarter hours (migration V11).

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::money::Money;
use crate::sqlite::{db, ms, ts, uuid_col, SqliteStore};
use crate::wallet::*;

const B: i64 = REPORT_BUCKET_MS;

/// Sales, refunds and movements between two times, summed from payments and ledger entries.
fn live(c: &Connection, tenant: &str, from: i64, to: i64) -> rusqlite::Result<ReportFacts> {
    let range = params![tenant, from, to, B];
    // The tenant's merchants, not the tenant itself: so SQLite reads each merchant's
    // range of `payments_merchant`, not every payment of the tenant through the primary
    // key (`EXPLAIN QUERY PLAN`). A merchant is one tenant's.
    let sales = c
        .prepare_cached(
            "SELECT merchant_id, terminal_id, created_at / ?4, count(*), sum(amount), sum(coupon_amount), \
             sum(subsidy_amount), sum(balance_amount), sum(deferred_amount) FROM payments \
             WHERE merchant_id IN (SELECT id FROM merchants WHERE tenant_id = ?1) \
             AND status <> 'declined' AND created_at >= ?2 AND created_at < ?3 GROUP BY 1, 2, 3",
        )?
        .query_map(range, sales_row)?
        .collect::<Result<Vec<_>, _>>()?;
    let refunds = c
        .prepare_cached(
            "SELECT l.ref_id, l.created_at / ?4, count(*), -sum(l.amount), p.created_at / ?4 \
             FROM ledger_entries l LEFT JOIN payments p ON p.tenant_id = l.tenant_id \
             AND p.id = l.payment_id \
             WHERE l.tenant_id = ?1 AND l.account = 'merchant_receivable' AND l.amount < 0 \
             AND l.created_at >= ?2 AND l.created_at < ?3 GROUP BY 1, 2, 5",
        )?
        .query_map(range, refund_row)?
        .collect::<Result<Vec<_>, _>>()?;
    // The `account IN (…)` and `account = 'withdrawal_clearing'` repeat the indexes'
    // conditions word for word (`ledger_tenant_movements`, `ledger_tenant_withdrawals`),
    // so that SQLite knows each partial index covers its half of the query.
    let movements = c
        .prepare_cached(
            "SELECT bucket, sum(top_ups), sum(subsidies), sum(opened), sum(recovered), sum(written_off), \
             sum(withdrawals) FROM ( \
             SELECT created_at / ?4 AS bucket, \
             coalesce(-sum(CASE WHEN account = 'topup_clearing' THEN amount END), 0) AS top_ups, \
             coalesce(-sum(CASE WHEN account = 'subsidy_funding' AND amount < 0 THEN amount END), 0) AS subsidies, \
             coalesce(-sum(CASE WHEN account = 'arrears' AND amount < 0 THEN amount END), 0) AS opened, \
             coalesce(-sum(CASE WHEN account = 'repayment_clearing' THEN amount END), 0) AS recovered, \
             coalesce(-sum(CASE WHEN account = 'arrears_written_off' THEN amount END), 0) AS written_off, \
             0 AS withdrawals \
             FROM ledger_entries WHERE tenant_id = ?1 AND account IN ('topup_clearing', 'subsidy_funding', \
             'arrears', 'repayment_clearing', 'arrears_written_off') \
             AND created_at >= ?2 AND created_at < ?3 GROUP BY 1 \
             UNION ALL \
             SELECT created_at / ?4, 0, 0, 0, 0, 0, sum(amount) FROM ledger_entries \
             WHERE tenant_id = ?1 AND account = 'withdrawal_clearing' \
             AND created_at >= ?2 AND created_at < ?3 GROUP BY 1) GROUP BY bucket",
        )?
        .query_map(range, movement_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ReportFacts {
        sales,
        refunds,
        movements,
    })
}

/// The rolled-up sums of the quarter hours `from..to` (bucket numbers).
fn rolled(c: &Connection, tenant: &str, from: i64, to: i64) -> rusqlite::Result<ReportFacts> {
    let range = params![tenant, from, to];
    let sales = c
        .prepare_cached(
            "SELECT merchant_id, terminal_id, bucket, payments, amount, coupon, subsidy, balance, deferred \
             FROM report_sales WHERE tenant_id = ?1 AND bucket >= ?2 AND bucket < ?3",
        )?
        .query_map(range, sales_row)?
        .collect::<Result<Vec<_>, _>>()?;
    let refunds = c
        .prepare_cached(
            "SELECT merchant_id, bucket, refunds, amount, nullif(sale_bucket, -1) FROM report_refunds \
             WHERE tenant_id = ?1 AND bucket >= ?2 AND bucket < ?3",
        )?
        .query_map(range, refund_row)?
        .collect::<Result<Vec<_>, _>>()?;
    let movements = c
        .prepare_cached(
            "SELECT bucket, top_ups, subsidies_issued, arrears_opened, arrears_recovered, arrears_written_off, \
             withdrawals FROM report_movements WHERE tenant_id = ?1 AND bucket >= ?2 AND bucket < ?3",
        )?
        .query_map(range, movement_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ReportFacts {
        sales,
        refunds,
        movements,
    })
}

fn sales_row(r: &rusqlite::Row) -> rusqlite::Result<SalesBucket> {
    Ok(SalesBucket {
        merchant_id: MerchantId(uuid_col(r, 0)?),
        terminal_id: TerminalId(uuid_col(r, 1)?),
        bucket: r.get(2)?,
        count: r.get::<_, i64>(3)? as u64,
        amount: Money(r.get(4)?),
        by_source: Breakdown {
            coupon: Money(r.get(5)?),
            subsidy: Money(r.get(6)?),
            balance: Money(r.get(7)?),
            deferred: Money(r.get(8)?),
        },
    })
}

fn refund_row(r: &rusqlite::Row) -> rusqlite::Result<RefundBucket> {
    Ok(RefundBucket {
        merchant_id: MerchantId(uuid_col(r, 0)?),
        bucket: r.get(1)?,
        count: r.get::<_, i64>(2)? as u64,
        amount: Money(r.get(3)?),
        sale_bucket: r.get(4)?,
    })
}

fn movement_row(r: &rusqlite::Row) -> rusqlite::Result<MovementBucket> {
    Ok(MovementBucket {
        bucket: r.get(0)?,
        top_ups: Money(r.get(1)?),
        subsidies_issued: Money(r.get(2)?),
        arrears_opened: Money(r.get(3)?),
        arrears_recovered: Money(r.get(4)?),
        arrears_written_off: Money(r.get(5)?),
        withdrawals: Money(r.get(6)?),
    })
}

fn through_of(c: &Connection, tenant: &str) -> rusqlite::Result<Option<i64>> {
    c.query_row(
        "SELECT through FROM report_rollups WHERE tenant_id = ?",
        [tenant],
        |r| r.get(0),
    )
    .optional()
}

impl SqliteStore {
    pub(crate) async fn rollups_end(&self) -> StoreResult<Option<Timestamp>> {
        let through: Option<i64> = self
            .read(|c| {
                c.query_row(
                    "SELECT min(coalesce(r.through, t.created_at / ?1)) FROM tenants t \
                     LEFT JOIN report_rollups r ON r.tenant_id = t.id",
                    [B],
                    |r| r.get(0),
                )
                .map_err(db)
            })
            .await?;
        Ok(through.map(|q| ts(q * B)))
    }

    pub(crate) async fn reports_between(
        &self,
        tenant: TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<ReportFacts> {
        self.read(move |c| {
            // One snapshot: the roll-up's mark and what it covers agree.
            let c = c.unchecked_transaction().map_err(db)?;
            let t = tenant.to_string();
            let (from, to) = (ms(from), ms(to));
            let through = through_of(&c, &t).map_err(db)?;
            let split = ReportFacts::rollup_split(through, from, to);
            let mut facts = rolled(&c, &t, from / B, split / B).map_err(db)?;
            if split < to {
                facts.extend(live(&c, &t, split, to).map_err(db)?);
            }
            c.commit().map_err(db)?;
            Ok(facts)
        })
        .await
    }

    pub(crate) async fn roll_up(
        &self,
        now: Timestamp,
        lag: jiff::SignedDuration,
        step: i64,
    ) -> StoreResult<u64> {
        // One writer, in this process: no commit waits outside it.
        let until = ms(now - lag).div_euclid(B);
        let tenants: Vec<(String, i64)> = self
            .read(|c| {
                c.prepare(
                    "SELECT t.id, coalesce(r.through, t.created_at / ?1) FROM tenants t \
                     LEFT JOIN report_rollups r ON r.tenant_id = t.id",
                )
                .and_then(|mut st| {
                    st.query_map([B], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db)
            })
            .await?;
        let mut added = 0;
        for (tenant, through) in tenants {
            let target = until.min(through.saturating_add(step.max(1)));
            if target <= through {
                continue;
            }
            // Summed on a reader, so the writer, which every payment waits on, only stores
            // the sums. The quarter hours are closed: nothing is written to them any more.
            let t = tenant.clone();
            let facts = self
                .read(move |c| live(c, &t, through * B, target * B).map_err(db))
                .await?;
            let stored = self
                .write(move |c| {
                    // Rolled up meanwhile (by an earlier call still being written): leave it.
                    if through_of(c, &tenant)
                        .map_err(db)?
                        .is_some_and(|now| now != through)
                    {
                        return Ok(false);
                    }
                    store(c, &tenant, &facts).map_err(db)?;
                    c.execute(
                        "INSERT INTO report_rollups (tenant_id, through) VALUES (?1, ?2) \
                         ON CONFLICT (tenant_id) DO UPDATE SET through = excluded.through",
                        params![tenant, target],
                    )
                    .map_err(db)?;
                    Ok(true)
                })
                .await?;
            if stored {
                added += u64::try_from(target - through).map_err(StoreError::backend)?;
            }
        }
        Ok(added)
    }
}

fn store(c: &Connection, tenant: &str, f: &ReportFacts) -> rusqlite::Result<()> {
    let mut st = c.prepare_cached(
        "INSERT INTO report_sales (tenant_id, bucket, merchant_id, terminal_id, payments, amount, coupon, \
         subsidy, balance, deferred) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    for s in &f.sales {
        let b = &s.by_source;
        st.execute(params![
            tenant,
            s.bucket,
            s.merchant_id.to_string(),
            s.terminal_id.to_string(),
            s.count as i64,
            s.amount.0,
            b.coupon.0,
            b.subsidy.0,
            b.balance.0,
            b.deferred.0
        ])?;
    }
    let mut st = c.prepare_cached(
        "INSERT INTO report_refunds (tenant_id, bucket, merchant_id, refunds, amount, sale_bucket) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )?;
    for r in &f.refunds {
        st.execute(params![
            tenant,
            r.bucket,
            r.merchant_id.to_string(),
            r.count as i64,
            r.amount.0,
            r.sale_bucket.unwrap_or(-1)
        ])?;
    }
    let mut st = c.prepare_cached(
        "INSERT INTO report_movements (tenant_id, bucket, top_ups, subsidies_issued, arrears_opened, \
         arrears_recovered, arrears_written_off, withdrawals) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    for m in &f.movements {
        st.execute(params![
            tenant,
            m.bucket,
            m.top_ups.0,
            m.subsidies_issued.0,
            m.arrears_opened.0,
            m.arrears_recovered.0,
            m.arrears_written_off.0,
            m.withdrawals.0
        ])?;
    }
    Ok(())
}
