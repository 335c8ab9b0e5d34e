//! The notifications half of the SQLite engine. The single writer makes each check of a
//! notice's status and its move one step, and a claim's read and lease one step.

use std::collections::BTreeMap;

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::*;
use crate::notice_store::{
    apply, changed, delivery_event, wrong_state, ClaimedNoticeDelivery, DeliveryChange,
    DeliveryCounts, Notice, NoticeDelivery, NoticeFilter, NoticeOutcome, NoticeRound,
    NoticeSettings, NoticeStore, RecalledDelivery, CHANGES_PER_EVENT,
};
use crate::sqlite::{db, insert_audit, ms, paginate, parse_enum, ts, uuid_col, SqliteStore};
use crate::sqlite_money::insert_outbox;
use crate::store::{from_json_text, to_json_text};
use crate::wallet::{OutboxEvent, OutboxPage};

const COLS: &str = "id, title, body, audience, status, send_at, revision, round, created_by, \
     created_at, updated_at, sent_at, finished_at, recalled_at";

fn notice_row(r: &Row) -> rusqlite::Result<(Notice, String)> {
    Ok((
        Notice {
            id: NoticeId(uuid_col(r, 0)?),
            title: r.get(1)?,
            body: r.get(2)?,
            audience: Default::default(),
            status: parse_enum(r, 4, NoticeStatus::parse)?,
            send_at: r.get::<_, Option<i64>>(5)?.map(ts),
            revision: r.get(6)?,
            round: r.get(7)?,
            created_by: r.get(8)?,
            created_at: ts(r.get(9)?),
            updated_at: ts(r.get(10)?),
            sent_at: r.get::<_, Option<i64>>(11)?.map(ts),
            finished_at: r.get::<_, Option<i64>>(12)?.map(ts),
            recalled_at: r.get::<_, Option<i64>>(13)?.map(ts),
            counts: DeliveryCounts::default(),
        },
        r.get(3)?,
    ))
}

/// Fills in each notice's audience and its current round's counts: one read for all.
fn complete(c: &Connection, rows: Vec<(Notice, String)>) -> StoreResult<Vec<Notice>> {
    let mut notices = rows
        .into_iter()
        .map(|(mut n, audience)| {
            n.audience = from_json_text(&audience)?;
            Ok(n)
        })
        .collect::<StoreResult<Vec<Notice>>>()?;
    let ids: Vec<NoticeId> = notices.iter().map(|n| n.id).collect();
    let mut st = c
        .prepare_cached(
            "SELECT d.notice_id, d.status, count(*), sum(d.tried <> '[]') \
             FROM notice_deliveries d JOIN notices n ON n.id = d.notice_id AND n.round = d.round \
             WHERE d.notice_id IN (SELECT value FROM json_each(?)) \
             GROUP BY d.notice_id, d.status",
        )
        .map_err(db)?;
    let rows = st
        .query_map([to_json_text(&ids)?], |r| {
            Ok((
                NoticeId(uuid_col(r, 0)?),
                parse_enum(r, 1, NoticeDeliveryStatus::parse)?,
                r.get::<_, i64>(2)?.max(0) as u64,
                r.get::<_, i64>(3)?.max(0) as u64,
            ))
        })
        .map_err(db)?;
    for row in rows {
        let (id, status, count, fell_back) = row.map_err(db)?;
        if let Some(n) = notices.iter_mut().find(|n| n.id == id) {
            n.counts.add(status, count, fell_back);
        }
    }
    Ok(notices)
}

fn find(c: &Connection, tenant: TenantId, id: NoticeId) -> StoreResult<Notice> {
    let row = c
        .prepare_cached(&format!(
            "SELECT {COLS} FROM notices WHERE tenant_id = ? AND id = ?"
        ))
        .and_then(|mut st| {
            st.query_row([tenant.to_string(), id.to_string()], notice_row)
                .optional()
        })
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
    complete(c, vec![row])?.pop().ok_or(StoreError::NotFound)
}

fn outbox(
    c: &Connection,
    tenant: TenantId,
    events: &[OutboxEvent],
    at: Timestamp,
) -> StoreResult<()> {
    let page = OutboxPage::of_one(tenant, events, at);
    insert_outbox(c, page.as_ref()).map_err(db)
}

/// The notice is `sent` once nothing of its round is queued (`n` as well as its row).
fn finish_if_done(c: &Connection, n: &mut Notice, at: Timestamp) -> StoreResult<()> {
    if n.status == NoticeStatus::Sending && n.counts.queued == 0 {
        c.execute(
            "UPDATE notices SET status = 'sent', finished_at = ? WHERE id = ?",
            params![ms(at), n.id.to_string()],
        )
        .map_err(db)?;
        n.status = NoticeStatus::Sent;
        n.finished_at = Some(at);
    }
    Ok(())
}

#[async_trait]
impl NoticeStore for SqliteStore {
    async fn notice_settings(&self, tenant: TenantId) -> StoreResult<NoticeSettings> {
        self.read(move |c| {
            let row: Option<(String, i32, i64)> = c
                .query_row(
                    "SELECT channels, secret_version, updated_at FROM notice_settings \
                     WHERE tenant_id = ?",
                    [tenant.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db)?;
            match row {
                None => Ok(NoticeSettings::default()),
                Some((channels, secret_version, at)) => Ok(NoticeSettings {
                    channels: from_json_text(&channels)?,
                    secret_version,
                    updated_at: Some(ts(at)),
                }),
            }
        })
        .await
    }

    async fn put_notice_settings(
        &self,
        tenant: TenantId,
        settings: NoticeSettings,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO notice_settings (tenant_id, channels, secret_version, updated_at) \
                 VALUES (?,?,?,?) ON CONFLICT (tenant_id) DO UPDATE SET \
                 channels = excluded.channels, secret_version = excluded.secret_version, \
                 updated_at = excluded.updated_at",
                params![
                    tenant.to_string(),
                    to_json_text(&settings.channels)?,
                    settings.secret_version,
                    ms(settings.updated_at.unwrap_or(audit.at)),
                ],
            )
            .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn active_user_ids(&self, tenant: TenantId) -> StoreResult<Vec<UserId>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id FROM users WHERE tenant_id = ? AND status = 'active' ORDER BY id",
                )
                .map_err(db)?;
            st.query_map([tenant.to_string()], |r| Ok(UserId(uuid_col(r, 0)?)))
                .and_then(|r| r.collect())
                .map_err(db)
        })
        .await
    }

    async fn create_notice(&self, tenant: TenantId, n: Notice, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO notices (id, tenant_id, title, body, audience, status, send_at, \
                 revision, round, created_by, created_at, updated_at) \
                 VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                params![
                    n.id.to_string(),
                    tenant.to_string(),
                    n.title,
                    n.body,
                    to_json_text(&n.audience)?,
                    n.status.as_str(),
                    n.send_at.map(ms),
                    n.revision,
                    n.round,
                    n.created_by,
                    ms(n.created_at),
                    ms(n.updated_at),
                ],
            )
            .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn get_notice(&self, tenant: TenantId, id: NoticeId) -> StoreResult<Notice> {
        self.read(move |c| find(c, tenant, id)).await
    }

    async fn list_notices(
        &self,
        tenant: TenantId,
        filter: NoticeFilter,
        page: PageReq<NoticeId>,
    ) -> StoreResult<Page<Notice, NoticeId>> {
        self.read(move |c| {
            let mut sql = format!("SELECT {COLS} FROM notices WHERE tenant_id = ?");
            let mut values: Vec<rusqlite::types::Value> = vec![tenant.to_string().into()];
            if let Some(after) = page.after {
                sql.push_str(" AND id < ?");
                values.push(after.to_string().into());
            }
            if let Some(by) = filter.created_by {
                sql.push_str(" AND created_by = ?");
                values.push(by.into());
            }
            if let Some(s) = filter.status {
                sql.push_str(" AND status = ?");
                values.push(s.as_str().to_string().into());
            }
            sql.push_str(" ORDER BY id DESC LIMIT ?");
            values.push((i64::from(page.limit) + 1).into());
            let rows = c
                .prepare(&sql)
                .and_then(|mut st| {
                    st.query_map(params_from_iter(values), notice_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)?;
            Ok(paginate(complete(c, rows)?, page.limit, |n| n.id))
        })
        .await
    }

    async fn edit_notice(
        &self,
        tenant: TenantId,
        edited: Notice,
        at: Timestamp,
        audit: Audit,
    ) -> StoreResult<Notice> {
        self.write(move |c| {
            let now = find(c, tenant, edited.id)?;
            if !matches!(now.status, NoticeStatus::Scheduled | NoticeStatus::Recalled) {
                return Err(wrong_state(now.status, "scheduled or recalled"));
            }
            if now.revision != edited.revision {
                return Err(changed(now.revision));
            }
            c.execute(
                "UPDATE notices SET title = ?, body = ?, audience = ?, send_at = ?, \
                 revision = revision + 1, updated_at = ? WHERE id = ?",
                params![
                    edited.title,
                    edited.body,
                    to_json_text(&edited.audience)?,
                    edited.send_at.map(ms),
                    ms(at),
                    edited.id.to_string(),
                ],
            )
            .map_err(db)?;
            insert_audit(c, &audit)?;
            find(c, tenant, edited.id)
        })
        .await
    }

    async fn delete_notice(&self, tenant: TenantId, id: NoticeId, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            let now = find(c, tenant, id)?;
            if now.status != NoticeStatus::Scheduled || now.round > 0 {
                return Err(wrong_state(now.status, "scheduled and never sent"));
            }
            c.execute("DELETE FROM notices WHERE id = ?", [id.to_string()])
                .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn due_notices(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<(TenantId, NoticeId, i64)>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT tenant_id, id, revision FROM notices \
                     WHERE status = 'scheduled' AND send_at <= ? ORDER BY send_at LIMIT ?",
                )
                .map_err(db)?;
            st.query_map(params![ms(now), limit as i64], |r| {
                Ok((
                    TenantId(uuid_col(r, 0)?),
                    NoticeId(uuid_col(r, 1)?),
                    r.get(2)?,
                ))
            })
            .and_then(|r| r.collect())
            .map_err(db)
        })
        .await
    }

    async fn start_notice_round(
        &self,
        tenant: TenantId,
        id: NoticeId,
        seen: i64,
        round: NoticeRound,
        at: Timestamp,
        audit: Option<Audit>,
    ) -> StoreResult<(Notice, Vec<OutboxEvent>)> {
        self.write(move |c| {
            let now = find(c, tenant, id)?;
            if !matches!(now.status, NoticeStatus::Scheduled | NoticeStatus::Recalled) {
                return Err(wrong_state(now.status, "scheduled or recalled"));
            }
            if now.revision != seen {
                return Err(changed(now.revision));
            }
            let number = now.round + 1;
            let (status, detail) = match round.first {
                Some(_) => (NoticeDeliveryStatus::Queued, None),
                None => (
                    NoticeDeliveryStatus::Failed,
                    Some("no channel is set up to send notices"),
                ),
            };
            {
                let mut st = c
                    .prepare_cached(
                        "INSERT INTO notice_deliveries (id, tenant_id, notice_id, round, user_id, \
                         status, channel, tried, detail, due_at, updated_at) \
                         VALUES (?,?,?,?,?,?,?,'[]',?,?,?)",
                    )
                    .map_err(db)?;
                for user in &round.recipients {
                    st.execute(params![
                        NoticeDeliveryId::new().to_string(),
                        tenant.to_string(),
                        id.to_string(),
                        number,
                        user.to_string(),
                        status.as_str(),
                        round.first.map(|ch| ch.as_str()),
                        detail,
                        ms(at),
                        ms(at),
                    ])
                    .map_err(db)?;
                }
            }
            c.execute(
                "UPDATE notices SET status = 'sending', round = ?, sent_at = ?, \
                 finished_at = NULL, recalled_at = NULL, updated_at = ? WHERE id = ?",
                params![number, ms(at), ms(at), id.to_string()],
            )
            .map_err(db)?;
            let mut started = find(c, tenant, id)?;
            finish_if_done(c, &mut started, at)?;
            if let Some(audit) = &audit {
                insert_audit(c, audit)?;
            }
            let events = vec![delivery_event(
                id,
                number,
                started.status,
                &started.counts,
                &[],
            )];
            outbox(c, tenant, &events, at)?;
            Ok((started, events))
        })
        .await
    }

    async fn claim_notice_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<ClaimedNoticeDelivery>> {
        self.write(move |c| {
            let mut st = c
                .prepare_cached(
                    "UPDATE notice_deliveries SET due_at = ? WHERE id IN ( \
                       SELECT id FROM notice_deliveries WHERE status = 'queued' AND due_at <= ? \
                       ORDER BY due_at LIMIT ?) \
                     RETURNING id, tenant_id, notice_id, user_id, channel, tried, \
                     (SELECT name FROM users u WHERE u.id = user_id), \
                     (SELECT number FROM users u WHERE u.id = user_id), \
                     (SELECT phone FROM users u WHERE u.id = user_id), \
                     (SELECT title FROM notices n WHERE n.id = notice_id), \
                     (SELECT body FROM notices n WHERE n.id = notice_id)",
                )
                .map_err(db)?;
            let rows = st
                .query_map(params![ms(lease_until), ms(now), limit as i64], |r| {
                    Ok((
                        ClaimedNoticeDelivery {
                            id: NoticeDeliveryId(uuid_col(r, 0)?),
                            tenant: TenantId(uuid_col(r, 1)?),
                            notice_id: NoticeId(uuid_col(r, 2)?),
                            user_id: UserId(uuid_col(r, 3)?),
                            channel: parse_enum(r, 4, NoticeChannel::parse)?,
                            tried: Vec::new(),
                            name: r.get(6)?,
                            number: r.get(7)?,
                            phone: r.get(8)?,
                            title: r.get(9)?,
                            body: r.get(10)?,
                        },
                        r.get::<_, String>(5)?,
                    ))
                })
                .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(db)?;
            rows.into_iter()
                .map(|(mut d, tried)| {
                    d.tried = from_json_text(&tried)?;
                    Ok(d)
                })
                .collect()
        })
        .await
    }

    async fn finish_notice_deliveries(
        &self,
        tenant: TenantId,
        results: Vec<(NoticeDeliveryId, NoticeOutcome)>,
        at: Timestamp,
    ) -> StoreResult<Vec<OutboxEvent>> {
        self.write(move |c| {
            let mut touched: BTreeMap<NoticeId, Vec<DeliveryChange>> = BTreeMap::new();
            for (id, outcome) in results {
                let row: Option<(NoticeId, UserId, NoticeChannel, String, i64)> = c
                    .prepare_cached(
                        "SELECT notice_id, user_id, channel, tried, due_at FROM notice_deliveries \
                         WHERE id = ? AND tenant_id = ? AND status = 'queued'",
                    )
                    .and_then(|mut st| {
                        st.query_row([id.to_string(), tenant.to_string()], |r| {
                            Ok((
                                NoticeId(uuid_col(r, 0)?),
                                UserId(uuid_col(r, 1)?),
                                parse_enum(r, 2, NoticeChannel::parse)?,
                                r.get(3)?,
                                r.get(4)?,
                            ))
                        })
                        .optional()
                    })
                    .map_err(db)?;
                // Recalled (or finished by another node) meanwhile: it stays as it is.
                let Some((notice, user, channel, tried, due_at)) = row else {
                    continue;
                };
                let a = apply(outcome, channel, from_json_text(&tried)?, ts(due_at), at);
                let tried = to_json_text(&a.tried)?;
                c.prepare_cached(
                    "UPDATE notice_deliveries SET status = ?, channel = ?, tried = ?, detail = ?, \
                     due_at = ?, updated_at = ? WHERE id = ?",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        a.status.as_str(),
                        a.channel.as_str(),
                        tried,
                        a.detail,
                        ms(a.due_at),
                        ms(at),
                        id.to_string(),
                    ])
                })
                .map_err(db)?;
                if let Some((status, from)) = a.change {
                    touched.entry(notice).or_default().push(DeliveryChange {
                        delivery_id: id,
                        user_id: user,
                        status,
                        channel: Some(a.channel),
                        from,
                        detail: a.detail,
                    });
                }
            }
            let mut events = Vec::new();
            for (notice, changes) in touched {
                let mut n = find(c, tenant, notice)?;
                finish_if_done(c, &mut n, at)?;
                for part in changes.chunks(CHANGES_PER_EVENT) {
                    events.push(delivery_event(notice, n.round, n.status, &n.counts, part));
                }
            }
            outbox(c, tenant, &events, at)?;
            Ok(events)
        })
        .await
    }

    async fn recall_notice(
        &self,
        tenant: TenantId,
        id: NoticeId,
        at: Timestamp,
        audit: Audit,
    ) -> StoreResult<(Notice, Vec<RecalledDelivery>, Vec<OutboxEvent>)> {
        self.write(move |c| {
            let now = find(c, tenant, id)?;
            if !matches!(now.status, NoticeStatus::Sending | NoticeStatus::Sent) {
                return Err(wrong_state(now.status, "sending or sent"));
            }
            let taken = c
                .prepare_cached(
                    "SELECT id, user_id, channel FROM notice_deliveries \
                     WHERE notice_id = ? AND round = ? AND status IN ('sent', 'delivered')",
                )
                .and_then(|mut st| {
                    st.query_map(params![id.to_string(), now.round], |r| {
                        Ok(RecalledDelivery {
                            id: NoticeDeliveryId(uuid_col(r, 0)?),
                            user_id: UserId(uuid_col(r, 1)?),
                            channel: parse_enum(r, 2, NoticeChannel::parse)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)?;
            c.execute(
                "UPDATE notice_deliveries SET status = 'recalled', updated_at = ? \
                 WHERE notice_id = ? AND round = ? AND status IN ('queued', 'sent', 'delivered')",
                params![ms(at), id.to_string(), now.round],
            )
            .map_err(db)?;
            c.execute(
                "UPDATE notices SET status = 'recalled', recalled_at = ?, updated_at = ? \
                 WHERE id = ?",
                params![ms(at), ms(at), id.to_string()],
            )
            .map_err(db)?;
            insert_audit(c, &audit)?;
            let recalled = find(c, tenant, id)?;
            let events = vec![delivery_event(
                id,
                recalled.round,
                recalled.status,
                &recalled.counts,
                &[],
            )];
            outbox(c, tenant, &events, at)?;
            Ok((recalled, taken, events))
        })
        .await
    }

    async fn list_notice_deliveries(
        &self,
        tenant: TenantId,
        id: NoticeId,
        status: Option<NoticeDeliveryStatus>,
        page: PageReq<NoticeDeliveryId>,
    ) -> StoreResult<Page<NoticeDelivery, NoticeDeliveryId>> {
        self.read(move |c| {
            let round = find(c, tenant, id)?.round;
            let mut sql = String::from(
                "SELECT d.id, d.user_id, u.name, u.number, d.status, d.channel, d.tried, \
                 d.detail, d.updated_at FROM notice_deliveries d JOIN users u ON u.id = d.user_id \
                 WHERE d.notice_id = ? AND d.round = ?",
            );
            let mut values: Vec<rusqlite::types::Value> =
                vec![id.to_string().into(), i64::from(round).into()];
            if let Some(after) = page.after {
                sql.push_str(" AND d.id > ?");
                values.push(after.to_string().into());
            }
            if let Some(s) = status {
                sql.push_str(" AND d.status = ?");
                values.push(s.as_str().to_string().into());
            }
            sql.push_str(" ORDER BY d.id LIMIT ?");
            values.push((i64::from(page.limit) + 1).into());
            let rows = c
                .prepare(&sql)
                .and_then(|mut st| {
                    st.query_map(params_from_iter(values), |r| {
                        Ok((
                            NoticeDelivery {
                                id: NoticeDeliveryId(uuid_col(r, 0)?),
                                user_id: UserId(uuid_col(r, 1)?),
                                name: r.get(2)?,
                                number: r.get(3)?,
                                status: parse_enum(r, 4, NoticeDeliveryStatus::parse)?,
                                channel: r
                                    .get::<_, Option<String>>(5)?
                                    .and_then(|s| NoticeChannel::parse(&s)),
                                fell_back_from: Vec::new(),
                                detail: r.get(7)?,
                                updated_at: ts(r.get(8)?),
                            },
                            r.get::<_, String>(6)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)?;
            let rows = rows
                .into_iter()
                .map(|(mut d, tried)| {
                    d.fell_back_from = from_json_text(&tried)?;
                    Ok(d)
                })
                .collect::<StoreResult<Vec<_>>>()?;
            Ok(paginate(rows, page.limit, |d| d.id))
        })
        .await
    }
}
