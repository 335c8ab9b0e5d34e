//! The canteen collection code half of the SQLite engine. The single writer makes the
//! check that no other terminal has a code and the insert one step; the unique index would
//! refuse a second one even without it.

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use crate::collection_store::{CollectionStore, VisitFilter, VisitWrite};
use crate::error::StoreResult;
use crate::ids::*;
use crate::model::{Collection, CollectionMode, Page, PageReq, Visit};
use crate::sqlite::{db, ms, paginate, parse_enum, ts, uuid_col, SqliteStore};
use crate::sqlite_money::insert_outbox;
use crate::wallet::{OutboxEvent, OutboxPage, Terminal};

pub(crate) const TERMINAL_COLS: &str =
    "id, merchant_id, name, created_at, collection_code, collection_mode, retired_at";

pub(crate) fn terminal_row(r: &Row) -> rusqlite::Result<Terminal> {
    let code: Option<String> = r.get(4)?;
    let collection = match code {
        Some(code) => Some(Collection {
            code,
            mode: parse_enum(r, 5, CollectionMode::parse)?,
        }),
        None => None,
    };
    Ok(Terminal {
        id: TerminalId(uuid_col(r, 0)?),
        merchant_id: MerchantId(uuid_col(r, 1)?),
        name: r.get(2)?,
        created_at: ts(r.get(3)?),
        collection,
        retired_at: r.get::<_, Option<i64>>(6)?.map(ts),
    })
}

/// Inserts a terminal; a collection code another terminal has is `code_taken`.
pub(crate) fn insert_terminal(c: &Connection, tenant: TenantId, t: &Terminal) -> StoreResult<()> {
    if let Some(col) = &t.collection {
        let taken: bool = c
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM terminals WHERE collection_code = ?)",
                [&col.code],
                |r| r.get(0),
            )
            .map_err(db)?;
        if taken {
            return Err(crate::store::collection_code_taken());
        }
    }
    c.execute(
        "INSERT INTO terminals (id, tenant_id, merchant_id, name, created_at, collection_code, \
         collection_mode) VALUES (?,?,?,?,?,?,?)",
        params![
            t.id.to_string(),
            tenant.to_string(),
            t.merchant_id.to_string(),
            t.name,
            ms(t.created_at),
            t.collection.as_ref().map(|c| c.code.as_str()),
            t.collection.as_ref().map(|c| c.mode.as_str()),
        ],
    )
    .map_err(db)?;
    Ok(())
}

const VISIT_COLS: &str = "v.id, v.terminal_id, v.merchant_id, v.user_id, u.name, u.number, v.at";

fn visit_row(r: &Row) -> rusqlite::Result<Visit> {
    Ok(Visit {
        id: VisitId(uuid_col(r, 0)?),
        terminal_id: TerminalId(uuid_col(r, 1)?),
        merchant_id: MerchantId(uuid_col(r, 2)?),
        user_id: UserId(uuid_col(r, 3)?),
        name: r.get(4)?,
        number: r.get(5)?,
        at: ts(r.get(6)?),
    })
}

/// ` AND <column> IN (?,…)` for `ids`, its values pushed.
fn push_in(
    sql: &mut String,
    values: &mut Vec<rusqlite::types::Value>,
    column: &str,
    ids: &[MerchantId],
) {
    let marks = vec!["?"; ids.len()].join(",");
    sql.push_str(&format!(" AND {column} IN ({marks})"));
    values.extend(ids.iter().map(|m| m.to_string().into()));
}

#[async_trait]
impl CollectionStore for SqliteStore {
    async fn list_terminals(
        &self,
        tenant: TenantId,
        merchants: Vec<MerchantId>,
    ) -> StoreResult<Vec<Terminal>> {
        if merchants.is_empty() {
            return Ok(Vec::new());
        }
        self.read(move |c| {
            let mut sql = format!("SELECT {TERMINAL_COLS} FROM terminals WHERE tenant_id = ?");
            let mut values: Vec<rusqlite::types::Value> = vec![tenant.to_string().into()];
            push_in(&mut sql, &mut values, "merchant_id", &merchants);
            sql.push_str(" ORDER BY created_at, id");
            c.prepare(&sql)
                .and_then(|mut st| {
                    st.query_map(params_from_iter(values), terminal_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)
        })
        .await
    }

    async fn terminal_by_code(&self, code: String) -> StoreResult<Option<(TenantId, Terminal)>> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {TERMINAL_COLS}, tenant_id FROM terminals WHERE collection_code = ?"
            ))
            .and_then(|mut st| {
                st.query_row([code], |r| {
                    Ok((TenantId(uuid_col(r, 7)?), terminal_row(r)?))
                })
                .optional()
            })
            .map_err(db)
        })
        .await
    }

    async fn record_visit(
        &self,
        tenant: TenantId,
        visit: Visit,
        event: OutboxEvent,
        repeat_since: Timestamp,
    ) -> StoreResult<VisitWrite> {
        self.write(move |c| {
            let repeat = c
                .prepare_cached(&format!(
                    "SELECT {VISIT_COLS} FROM collection_visits v \
                     LEFT JOIN users u ON u.id = v.user_id \
                     WHERE v.tenant_id = ? AND v.user_id = ? AND v.terminal_id = ? AND v.at >= ? \
                     ORDER BY v.at DESC LIMIT 1"
                ))
                .and_then(|mut st| {
                    st.query_row(
                        params![
                            tenant.to_string(),
                            visit.user_id.to_string(),
                            visit.terminal_id.to_string(),
                            ms(repeat_since),
                        ],
                        visit_row,
                    )
                    .optional()
                })
                .map_err(db)?;
            if let Some(first) = repeat {
                return Ok(VisitWrite::Repeat(first));
            }
            c.prepare_cached(
                "INSERT INTO collection_visits (id, tenant_id, terminal_id, merchant_id, user_id, at) \
                 VALUES (?,?,?,?,?,?)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    visit.id.to_string(),
                    tenant.to_string(),
                    visit.terminal_id.to_string(),
                    visit.merchant_id.to_string(),
                    visit.user_id.to_string(),
                    ms(visit.at),
                ])
            })
            .map_err(db)?;
            let page = OutboxPage::of_one(tenant, std::slice::from_ref(&event), visit.at);
            insert_outbox(c, page.as_ref()).map_err(db)?;
            Ok(VisitWrite::Created)
        })
        .await
    }

    async fn list_visits(
        &self,
        tenant: TenantId,
        filter: VisitFilter,
        page: PageReq<VisitId>,
    ) -> StoreResult<Page<Visit, VisitId>> {
        self.read(move |c| {
            let mut sql = format!(
                "SELECT {VISIT_COLS} FROM collection_visits v LEFT JOIN users u ON u.id = v.user_id \
                 WHERE v.tenant_id = ?"
            );
            let mut values: Vec<rusqlite::types::Value> = vec![tenant.to_string().into()];
            if let Some(after) = page.after {
                sql.push_str(" AND v.id > ?");
                values.push(after.to_string().into());
            }
            if let Some(merchants) = &filter.merchants {
                push_in(&mut sql, &mut values, "v.merchant_id", merchants);
            }
            if let Some(t) = filter.terminal {
                sql.push_str(" AND v.terminal_id = ?");
                values.push(t.to_string().into());
            }
            if let Some(u) = filter.user {
                sql.push_str(" AND v.user_id = ?");
                values.push(u.to_string().into());
            }
            if let Some(t) = filter.from {
                sql.push_str(" AND v.at >= ?");
                values.push(ms(t).into());
            }
            if let Some(t) = filter.to {
                sql.push_str(" AND v.at < ?");
                values.push(ms(t).into());
            }
            sql.push_str(" ORDER BY v.id LIMIT ?");
            values.push((i64::from(page.limit) + 1).into());
            let rows = c
                .prepare(&sql)
                .and_then(|mut st| {
                    st.query_map(params_from_iter(values), visit_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)?;
            Ok(paginate(rows, page.limit, |v| v.id))
        })
        .await
    }

    async fn count_visits(
        &self,
        tenant: TenantId,
        merchants: Vec<MerchantId>,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<(TerminalId, u64)>> {
        if merchants.is_empty() {
            return Ok(Vec::new());
        }
        self.read(move |c| {
            let mut sql = "SELECT terminal_id, count(*) FROM collection_visits \
                           WHERE tenant_id = ? AND at >= ? AND at < ?"
                .to_string();
            let mut values: Vec<rusqlite::types::Value> =
                vec![tenant.to_string().into(), ms(from).into(), ms(to).into()];
            push_in(&mut sql, &mut values, "merchant_id", &merchants);
            sql.push_str(" GROUP BY terminal_id ORDER BY terminal_id");
            c.prepare(&sql)
                .and_then(|mut st| {
                    st.query_map(params_from_iter(values), |r| {
                        Ok((
                            TerminalId(uuid_col(r, 0)?),
                            r.get::<_, i64>(1)?.max(0) as u64,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)
        })
        .await
    }
}
