//! The financial reports' sums on PostgreSQL: from the payments and ledger entries
//! themselves ("live"), and from the roll-ups of closed quarter hours (migration V12).

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::money::Money;
use crate::postgres::{pg, PgStore};
use crate::wallet::*;

const B: i64 = REPORT_BUCKET_MS;

fn at(bucket: i64) -> StoreResult<Timestamp> {
    Timestamp::from_millisecond(bucket.saturating_mul(B)).map_err(StoreError::backend)
}

/// Sales, refunds and movements between two times, summed from payments and ledger
/// entries. Quarter hours by `date_bin` (PostgreSQL 14 and later): timestamp arithmetic,
/// where `extract(epoch …) / 900` divides a numeric for every row.
async fn live<C: GenericClient>(
    c: &C,
    tenant: Uuid,
    from: Timestamp,
    to: Timestamp,
) -> StoreResult<ReportFacts> {
    let range: [&(dyn ToSql + Sync); 3] = [&tenant, &from, &to];
    let sales = c
        .query(
            "SELECT p.merchant_id, p.terminal_id, (extract(epoch FROM date_bin('15 minutes', p.created_at, \
             TIMESTAMPTZ 'epoch')) / 900)::int8, \
             count(*), sum(p.amount)::int8, sum(p.coupon_amount)::int8, sum(p.subsidy_amount)::int8, \
             sum(p.balance_amount)::int8, sum(p.deferred_amount)::int8 \
             FROM merchants m JOIN payments p ON p.merchant_id = m.id \
             WHERE m.tenant_id = $1 AND p.tenant_id = $1 AND p.status <> 'declined' \
             AND p.created_at >= $2 AND p.created_at < $3 \
             GROUP BY p.merchant_id, p.terminal_id, date_bin('15 minutes', p.created_at, TIMESTAMPTZ 'epoch')",
            &range,
        )
        .await
        .map_err(pg)?;
    let refunds = c
        .query(
            "SELECT l.ref_id, (extract(epoch FROM date_bin('15 minutes', l.created_at, TIMESTAMPTZ 'epoch')) / 900)::int8, \
             count(*), (-sum(l.amount))::int8, \
             (extract(epoch FROM date_bin('15 minutes', p.created_at, TIMESTAMPTZ 'epoch')) / 900)::int8 \
             FROM ledger_entries l LEFT JOIN payments p ON p.id = l.payment_id \
             WHERE l.tenant_id = $1 AND l.account = 'merchant_receivable' AND l.amount < 0 \
             AND l.created_at >= $2 AND l.created_at < $3 \
             GROUP BY l.ref_id, date_bin('15 minutes', l.created_at, TIMESTAMPTZ 'epoch'), \
             date_bin('15 minutes', p.created_at, TIMESTAMPTZ 'epoch')",
            &range,
        )
        .await
        .map_err(pg)?;
    let movements = c
        .query(
            // Each half is read through its own partial index (`ledger_tenant_movements`,
            // `ledger_tenant_withdrawals`).
            "SELECT (extract(epoch FROM date_bin('15 minutes', created_at, TIMESTAMPTZ 'epoch')) / 900)::int8, \
             coalesce(-sum(amount) FILTER (WHERE account = 'topup_clearing'), 0)::int8, \
             coalesce(-sum(amount) FILTER (WHERE account = 'subsidy_funding' AND amount < 0), 0)::int8, \
             coalesce(-sum(amount) FILTER (WHERE account = 'arrears' AND amount < 0), 0)::int8, \
             coalesce(-sum(amount) FILTER (WHERE account = 'repayment_clearing'), 0)::int8, \
             coalesce(-sum(amount) FILTER (WHERE account = 'arrears_written_off'), 0)::int8, \
             coalesce(sum(amount) FILTER (WHERE account = 'withdrawal_clearing'), 0)::int8 \
             FROM (SELECT created_at, account, amount FROM ledger_entries WHERE tenant_id = $1 \
               AND account IN ('topup_clearing', 'subsidy_funding', 'arrears', 'repayment_clearing', \
               'arrears_written_off') AND created_at >= $2 AND created_at < $3 \
             UNION ALL SELECT created_at, account, amount FROM ledger_entries WHERE tenant_id = $1 \
               AND account = 'withdrawal_clearing' AND created_at >= $2 AND created_at < $3) m \
             GROUP BY date_bin('15 minutes', created_at, TIMESTAMPTZ 'epoch')",
            &range,
        )
        .await
        .map_err(pg)?;
    Ok(facts_from(&sales, &refunds, &movements))
}

/// The rolled-up sums of the quarter hours `from..to` (bucket numbers).
async fn rolled<C: GenericClient>(
    c: &C,
    tenant: Uuid,
    from: i64,
    to: i64,
) -> StoreResult<ReportFacts> {
    let range: [&(dyn ToSql + Sync); 3] = [&tenant, &from, &to];
    let sales = c
        .query(
            "SELECT merchant_id, terminal_id, bucket, payments, amount, coupon, subsidy, balance, deferred \
             FROM report_sales WHERE tenant_id = $1 AND bucket >= $2 AND bucket < $3",
            &range,
        )
        .await
        .map_err(pg)?;
    let refunds = c
        .query(
            "SELECT merchant_id, bucket, refunds, amount, NULLIF(sale_bucket, -1) FROM report_refunds \
             WHERE tenant_id = $1 AND bucket >= $2 AND bucket < $3",
            &range,
        )
        .await
        .map_err(pg)?;
    let movements = c
        .query(
            "SELECT bucket, top_ups, subsidies_issued, arrears_opened, arrears_recovered, arrears_written_off, \
             withdrawals FROM report_movements WHERE tenant_id = $1 AND bucket >= $2 AND bucket < $3",
            &range,
        )
        .await
        .map_err(pg)?;
    Ok(facts_from(&sales, &refunds, &movements))
}

/// Rows of (merchant, terminal, bucket, count, amount, coupon, subsidy, balance, deferred),
/// (merchant, bucket, count, amount) and (bucket, six movements), live or rolled up.
fn facts_from(
    sales: &[tokio_postgres::Row],
    refunds: &[tokio_postgres::Row],
    movements: &[tokio_postgres::Row],
) -> ReportFacts {
    ReportFacts {
        sales: sales
            .iter()
            .map(|r| SalesBucket {
                merchant_id: MerchantId(r.get(0)),
                terminal_id: TerminalId(r.get(1)),
                bucket: r.get(2),
                count: r.get::<_, i64>(3) as u64,
                amount: Money(r.get(4)),
                by_source: Breakdown {
                    coupon: Money(r.get(5)),
                    subsidy: Money(r.get(6)),
                    balance: Money(r.get(7)),
                    deferred: Money(r.get(8)),
                },
            })
            .collect(),
        refunds: refunds
            .iter()
            .map(|r| RefundBucket {
                merchant_id: MerchantId(r.get(0)),
                bucket: r.get(1),
                count: r.get::<_, i64>(2) as u64,
                amount: Money(r.get(3)),
                sale_bucket: r.get(4),
            })
            .collect(),
        movements: movements
            .iter()
            .map(|r| MovementBucket {
                bucket: r.get(0),
                top_ups: Money(r.get(1)),
                subsidies_issued: Money(r.get(2)),
                arrears_opened: Money(r.get(3)),
                arrears_recovered: Money(r.get(4)),
                arrears_written_off: Money(r.get(5)),
                withdrawals: Money(r.get(6)),
            })
            .collect(),
    }
}

impl PgStore {
    pub(crate) async fn rollups_end(&self) -> StoreResult<Option<Timestamp>> {
        let c = self.client().await?;
        let through: Option<i64> = c
            .query_one(
                "SELECT min(coalesce(r.through, (extract(epoch FROM date_bin('15 minutes', \
                 t.created_at, TIMESTAMPTZ 'epoch')) / 900)::int8)) FROM tenants t \
                 LEFT JOIN report_rollups r ON r.tenant_id = t.id",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        through
            .map(|q| Timestamp::from_millisecond(q * B).map_err(StoreError::backend))
            .transpose()
    }

    pub(crate) async fn reports_between(
        &self,
        tenant: TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<ReportFacts> {
        let c = self.client().await?;
        let through: Option<i64> = c
            .query_opt(
                "SELECT through FROM report_rollups WHERE tenant_id = $1",
                &[&tenant.0],
            )
            .await
            .map_err(pg)?
            .map(|r| r.get(0));
        let (f, t) = (from.as_millisecond(), to.as_millisecond());
        // Every quarter hour before the mark was written with it, so reading the mark
        // first and the roll-ups after never finds one half there.
        let split = ReportFacts::rollup_split(through, f, t);
        let mut facts = rolled(&c, tenant.0, f / B, split / B).await?;
        if split < t {
            facts.extend(live(&c, tenant.0, at(split / B)?, to).await?);
        }
        Ok(facts)
    }

    pub(crate) async fn roll_up(
        &self,
        now: Timestamp,
        lag: jiff::SignedDuration,
        step: i64,
    ) -> StoreResult<u64> {
        let mut c = self.client().await?;
        // A quarter hour is closed once no transaction that could still write into it is
        // open. `lag` is far past any commit; this also keeps the roll-up behind a writing
        // transaction held open longer than that (a lock taken by hand, say), so that its
        // entries, dated when their payments were decided, are not left out. Measured as an
        // age on the database's clock, so that it holds whatever the server's clock says.
        let held_ms: Option<i64> = c
            .query_one(
                "SELECT (extract(epoch FROM clock_timestamp() - min(xact_start)) * 1000)::int8 \
                 FROM pg_stat_activity WHERE datname = current_database() \
                 AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        let held = held_ms.map_or(jiff::SignedDuration::ZERO, |ms| {
            jiff::SignedDuration::from_millis(ms) + jiff::SignedDuration::from_mins(5)
        });
        let until = now - lag.max(held);
        let until = until.as_millisecond().div_euclid(B);
        let tenants = c
            .query(
                "SELECT t.id, coalesce(r.through, (extract(epoch FROM date_bin('15 minutes', t.created_at, \
                 TIMESTAMPTZ 'epoch')) / 900)::int8) FROM tenants t LEFT JOIN report_rollups r ON r.tenant_id = t.id",
                &[],
            )
            .await
            .map_err(pg)?;
        let mut added = 0;
        for row in tenants {
            let (tenant, start): (Uuid, i64) = (row.get(0), row.get(1));
            if start >= until {
                continue;
            }
            let tx = c.transaction().await.map_err(pg)?;
            tx.execute(
                "INSERT INTO report_rollups (tenant_id, through) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&tenant, &start],
            )
            .await
            .map_err(pg)?;
            // Held until commit: another node's step for this tenant waits, then starts
            // where this one ended.
            let through: i64 = tx
                .query_one(
                    "SELECT through FROM report_rollups WHERE tenant_id = $1 FOR UPDATE",
                    &[&tenant],
                )
                .await
                .map_err(pg)?
                .get(0);
            let target = until.min(through.saturating_add(step.max(1)));
            if target <= through {
                tx.commit().await.map_err(pg)?;
                continue;
            }
            let f = live(&tx, tenant, at(through)?, at(target)?).await?;
            store(&tx, tenant, &f).await?;
            tx.execute(
                "UPDATE report_rollups SET through = $2 WHERE tenant_id = $1",
                &[&tenant, &target],
            )
            .await
            .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            added += u64::try_from(target - through).map_err(StoreError::backend)?;
        }
        Ok(added)
    }
}

async fn store<C: GenericClient>(c: &C, tenant: Uuid, f: &ReportFacts) -> StoreResult<()> {
    let col = |get: &dyn Fn(&SalesBucket) -> i64| f.sales.iter().map(get).collect::<Vec<i64>>();
    let merchants: Vec<Uuid> = f.sales.iter().map(|s| s.merchant_id.0).collect();
    let terminals: Vec<Uuid> = f.sales.iter().map(|s| s.terminal_id.0).collect();
    c.execute(
        "INSERT INTO report_sales (tenant_id, bucket, merchant_id, terminal_id, payments, amount, coupon, subsidy, \
         balance, deferred) \
         SELECT $1, * FROM unnest($2::int8[], $3::uuid[], $4::uuid[], $5::int8[], $6::int8[], $7::int8[], \
         $8::int8[], $9::int8[], $10::int8[])",
        &[
            &tenant,
            &col(&|s| s.bucket),
            &merchants,
            &terminals,
            &col(&|s| s.count as i64),
            &col(&|s| s.amount.0),
            &col(&|s| s.by_source.coupon.0),
            &col(&|s| s.by_source.subsidy.0),
            &col(&|s| s.by_source.balance.0),
            &col(&|s| s.by_source.deferred.0),
        ],
    )
    .await
    .map_err(pg)?;
    let buckets: Vec<i64> = f.refunds.iter().map(|r| r.bucket).collect();
    let merchants: Vec<Uuid> = f.refunds.iter().map(|r| r.merchant_id.0).collect();
    let counts: Vec<i64> = f.refunds.iter().map(|r| r.count as i64).collect();
    let amounts: Vec<i64> = f.refunds.iter().map(|r| r.amount.0).collect();
    let sales: Vec<i64> = f
        .refunds
        .iter()
        .map(|r| r.sale_bucket.unwrap_or(-1))
        .collect();
    c.execute(
        "INSERT INTO report_refunds (tenant_id, bucket, merchant_id, refunds, amount, sale_bucket) \
         SELECT $1, * FROM unnest($2::int8[], $3::uuid[], $4::int8[], $5::int8[], $6::int8[])",
        &[&tenant, &buckets, &merchants, &counts, &amounts, &sales],
    )
    .await
    .map_err(pg)?;
    let col =
        |get: &dyn Fn(&MovementBucket) -> i64| f.movements.iter().map(get).collect::<Vec<i64>>();
    c.execute(
        "INSERT INTO report_movements (tenant_id, bucket, top_ups, subsidies_issued, arrears_opened, \
         arrears_recovered, arrears_written_off, withdrawals) \
         SELECT $1, * FROM unnest($2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], \
         $8::int8[])",
        &[
            &tenant,
            &col(&|m| m.bucket),
            &col(&|m| m.top_ups.0),
            &col(&|m| m.subsidies_issued.0),
            &col(&|m| m.arrears_opened.0),
            &col(&|m| m.arrears_recovered.0),
            &col(&|m| m.arrears_written_off.0),
            &col(&|m| m.withdrawals.0),
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}
