//! The notifications half of the PostgreSQL engine. A notice's row is locked while its
//! status is checked and moved (a send, an edit, a recall and the last delivery's finish
//! take turns), and nodes claim queued deliveries with `FOR UPDATE SKIP LOCKED`, so they
//! share the work without taking one delivery twice at once.

use std::collections::BTreeMap;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::*;
use crate::notice_store::{
    apply, changed, delivery_event, wrong_state, ClaimedNoticeDelivery, DeliveryChange,
    DeliveryCounts, Notice, NoticeDelivery, NoticeFilter, NoticeOutcome, NoticeRound,
    NoticeSettings, NoticeStore, RecalledDelivery, CHANGES_PER_EVENT,
};
use crate::postgres::{enum_col, insert_audit, pg, PgStore};
use crate::postgres_money::insert_outbox;
use crate::sqlite::paginate;
use crate::store::{from_json_text, to_json_text};
use crate::wallet::{OutboxEvent, OutboxPage};

const COLS: &str = "id, title, body, audience, status, send_at, revision, round, created_by, \
     created_at, updated_at, sent_at, finished_at, recalled_at";

fn notice_row(r: &Row) -> StoreResult<Notice> {
    Ok(Notice {
        id: NoticeId(r.get(0)),
        title: r.get(1),
        body: r.get(2),
        audience: from_json_text(r.get(3))?,
        status: enum_col(r, 4, NoticeStatus::parse)?,
        send_at: r.get(5),
        revision: r.get(6),
        round: r.get(7),
        created_by: r.get(8),
        created_at: r.get(9),
        updated_at: r.get(10),
        sent_at: r.get(11),
        finished_at: r.get(12),
        recalled_at: r.get(13),
        counts: DeliveryCounts::default(),
    })
}

/// The notices of `rows`, each with its current round's counts: one read for all.
async fn complete<C: GenericClient>(c: &C, rows: &[Row]) -> StoreResult<Vec<Notice>> {
    let mut notices = rows
        .iter()
        .map(notice_row)
        .collect::<StoreResult<Vec<_>>>()?;
    let ids: Vec<Uuid> = notices.iter().map(|n| n.id.0).collect();
    let st = c
        .prepare_cached(
            "SELECT d.notice_id, d.status, count(*), count(*) FILTER (WHERE d.tried <> '[]') \
             FROM notice_deliveries d JOIN notices n ON n.id = d.notice_id AND n.round = d.round \
             WHERE d.notice_id = ANY($1) GROUP BY d.notice_id, d.status",
        )
        .await
        .map_err(pg)?;
    for r in c.query(&st, &[&ids]).await.map_err(pg)? {
        let id = NoticeId(r.get(0));
        let status = enum_col(&r, 1, NoticeDeliveryStatus::parse)?;
        if let Some(n) = notices.iter_mut().find(|n| n.id == id) {
            n.counts.add(
                status,
                r.get::<_, i64>(2).max(0) as u64,
                r.get::<_, i64>(3).max(0) as u64,
            );
        }
    }
    Ok(notices)
}

/// The notice, its row locked until the transaction ends when `lock`.
async fn find<C: GenericClient>(
    c: &C,
    tenant: TenantId,
    id: NoticeId,
    lock: bool,
) -> StoreResult<Notice> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row = c
        .query_opt(
            &format!("SELECT {COLS} FROM notices WHERE tenant_id = $1 AND id = $2{lock}"),
            &[&tenant.0, &id.0],
        )
        .await
        .map_err(pg)?
        .ok_or(StoreError::NotFound)?;
    complete(c, &[row]).await?.pop().ok_or(StoreError::NotFound)
}

async fn outbox<C: GenericClient>(
    c: &C,
    tenant: TenantId,
    events: &[OutboxEvent],
    at: Timestamp,
) -> StoreResult<()> {
    let page = OutboxPage::of_one(tenant, events, at);
    insert_outbox(c, page.as_ref()).await.map_err(pg)
}

/// The notice is `sent` once nothing of its round is queued (`n` as well as its row).
async fn finish_if_done<C: GenericClient>(c: &C, n: &mut Notice, at: Timestamp) -> StoreResult<()> {
    if n.status == NoticeStatus::Sending && n.counts.queued == 0 {
        c.execute(
            "UPDATE notices SET status = 'sent', finished_at = $2 WHERE id = $1",
            &[&n.id.0, &at],
        )
        .await
        .map_err(pg)?;
        n.status = NoticeStatus::Sent;
        n.finished_at = Some(at);
    }
    Ok(())
}

#[async_trait]
impl NoticeStore for PgStore {
    async fn notice_settings(&self, tenant: TenantId) -> StoreResult<NoticeSettings> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT channels, secret_version, updated_at FROM notice_settings \
                 WHERE tenant_id = $1",
                &[&tenant.0],
            )
            .await
            .map_err(pg)?;
        match row {
            None => Ok(NoticeSettings::default()),
            Some(r) => Ok(NoticeSettings {
                channels: from_json_text(r.get(0))?,
                secret_version: r.get(1),
                updated_at: Some(r.get(2)),
            }),
        }
    }

    async fn put_notice_settings(
        &self,
        tenant: TenantId,
        settings: NoticeSettings,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        tx.execute(
            "INSERT INTO notice_settings (tenant_id, channels, secret_version, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO UPDATE SET \
             channels = excluded.channels, secret_version = excluded.secret_version, \
             updated_at = excluded.updated_at",
            &[
                &tenant.0,
                &to_json_text(&settings.channels)?,
                &settings.secret_version,
                &settings.updated_at.unwrap_or(audit.at),
            ],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn active_user_ids(&self, tenant: TenantId) -> StoreResult<Vec<UserId>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id FROM users WHERE tenant_id = $1 AND status = 'active' ORDER BY id",
                &[&tenant.0],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| UserId(r.get(0))).collect())
    }

    async fn create_notice(&self, tenant: TenantId, n: Notice, audit: Audit) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        tx.execute(
            "INSERT INTO notices (id, tenant_id, title, body, audience, status, send_at, \
             revision, round, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &n.id.0,
                &tenant.0,
                &n.title,
                &n.body,
                &to_json_text(&n.audience)?,
                &n.status.as_str(),
                &n.send_at,
                &n.revision,
                &n.round,
                &n.created_by,
                &n.created_at,
                &n.updated_at,
            ],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn get_notice(&self, tenant: TenantId, id: NoticeId) -> StoreResult<Notice> {
        let c = self.client().await?;
        find(&c, tenant, id, false).await
    }

    async fn list_notices(
        &self,
        tenant: TenantId,
        filter: NoticeFilter,
        page: PageReq<NoticeId>,
    ) -> StoreResult<Page<Notice, NoticeId>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {COLS} FROM notices WHERE tenant_id = $1 \
                     AND ($2::uuid IS NULL OR id < $2) AND ($3::text IS NULL OR created_by = $3) \
                     AND ($4::text IS NULL OR status = $4) ORDER BY id DESC LIMIT $5"
                ),
                &[
                    &tenant.0,
                    &page.after.map(|a| a.0),
                    &filter.created_by,
                    &filter.status.map(|s| s.as_str()),
                    &(i64::from(page.limit) + 1),
                ],
            )
            .await
            .map_err(pg)?;
        Ok(paginate(complete(&c, &rows).await?, page.limit, |n| n.id))
    }

    async fn edit_notice(
        &self,
        tenant: TenantId,
        edited: Notice,
        at: Timestamp,
        audit: Audit,
    ) -> StoreResult<Notice> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let now = find(&tx, tenant, edited.id, true).await?;
        if !matches!(now.status, NoticeStatus::Scheduled | NoticeStatus::Recalled) {
            return Err(wrong_state(now.status, "scheduled or recalled"));
        }
        if now.revision != edited.revision {
            return Err(changed(now.revision));
        }
        tx.execute(
            "UPDATE notices SET title = $2, body = $3, audience = $4, send_at = $5, \
             revision = revision + 1, updated_at = $6 WHERE id = $1",
            &[
                &edited.id.0,
                &edited.title,
                &edited.body,
                &to_json_text(&edited.audience)?,
                &edited.send_at,
                &at,
            ],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        let saved = find(&tx, tenant, edited.id, false).await?;
        tx.commit().await.map_err(pg)?;
        Ok(saved)
    }

    async fn delete_notice(&self, tenant: TenantId, id: NoticeId, audit: Audit) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let now = find(&tx, tenant, id, true).await?;
        if now.status != NoticeStatus::Scheduled || now.round > 0 {
            return Err(wrong_state(now.status, "scheduled and never sent"));
        }
        tx.execute("DELETE FROM notices WHERE id = $1", &[&id.0])
            .await
            .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn due_notices(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<(TenantId, NoticeId, i64)>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT tenant_id, id, revision FROM notices \
                 WHERE status = 'scheduled' AND send_at <= $1 ORDER BY send_at LIMIT $2",
                &[&now, &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| (TenantId(r.get(0)), NoticeId(r.get(1)), r.get(2)))
            .collect())
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
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let now = find(&tx, tenant, id, true).await?;
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
        let ids: Vec<Uuid> = round
            .recipients
            .iter()
            .map(|_| NoticeDeliveryId::new().0)
            .collect();
        let users: Vec<Uuid> = round.recipients.iter().map(|u| u.0).collect();
        tx.execute(
            "INSERT INTO notice_deliveries (id, tenant_id, notice_id, round, user_id, status, \
             channel, tried, detail, due_at, updated_at) \
             SELECT d.id, $3, $4, $5, d.user_id, $6, $7, '[]', $8, $9, $9 \
             FROM unnest($1::uuid[], $2::uuid[]) AS d (id, user_id)",
            &[
                &ids,
                &users,
                &tenant.0,
                &id.0,
                &number,
                &status.as_str(),
                &round.first.map(|ch| ch.as_str()),
                &detail,
                &at,
            ],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "UPDATE notices SET status = 'sending', round = $2, sent_at = $3, \
             finished_at = NULL, recalled_at = NULL, updated_at = $3 WHERE id = $1",
            &[&id.0, &number, &at],
        )
        .await
        .map_err(pg)?;
        let mut started = find(&tx, tenant, id, false).await?;
        finish_if_done(&tx, &mut started, at).await?;
        if let Some(audit) = &audit {
            insert_audit(&tx, audit).await?;
        }
        let events = vec![delivery_event(
            id,
            number,
            started.status,
            &started.counts,
            &[],
        )];
        outbox(&tx, tenant, &events, at).await?;
        tx.commit().await.map_err(pg)?;
        Ok((started, events))
    }

    async fn claim_notice_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<ClaimedNoticeDelivery>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "WITH due AS (SELECT id FROM notice_deliveries \
                   WHERE status = 'queued' AND due_at <= $1 \
                   ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED), \
                 taken AS (UPDATE notice_deliveries d SET due_at = $2 FROM due \
                   WHERE d.id = due.id \
                   RETURNING d.id, d.tenant_id, d.notice_id, d.user_id, d.channel, d.tried) \
                 SELECT t.id, t.tenant_id, t.notice_id, t.user_id, t.channel, t.tried, \
                   u.name, u.number, u.phone, n.title, n.body \
                 FROM taken t JOIN users u ON u.id = t.user_id JOIN notices n ON n.id = t.notice_id",
            )
            .await
            .map_err(pg)?;
        let rows = c
            .query(&st, &[&now, &lease_until, &(limit as i64)])
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                Ok(ClaimedNoticeDelivery {
                    id: NoticeDeliveryId(r.get(0)),
                    tenant: TenantId(r.get(1)),
                    notice_id: NoticeId(r.get(2)),
                    user_id: UserId(r.get(3)),
                    channel: enum_col(r, 4, NoticeChannel::parse)?,
                    tried: from_json_text(r.get(5))?,
                    name: r.get(6),
                    number: r.get(7),
                    phone: r.get(8),
                    title: r.get(9),
                    body: r.get(10),
                })
            })
            .collect()
    }

    async fn finish_notice_deliveries(
        &self,
        tenant: TenantId,
        results: Vec<(NoticeDeliveryId, NoticeOutcome)>,
        at: Timestamp,
    ) -> StoreResult<Vec<OutboxEvent>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let ids: Vec<Uuid> = results.iter().map(|(id, _)| id.0).collect();
        // Their notices first, in one order, so that two nodes finishing deliveries of the
        // same notices never wait on each other in a circle.
        tx.execute(
            "SELECT 1 FROM notices WHERE id IN (SELECT notice_id FROM notice_deliveries \
             WHERE id = ANY($1)) ORDER BY id FOR UPDATE",
            &[&ids],
        )
        .await
        .map_err(pg)?;
        let rows = tx
            .query(
                "SELECT id, notice_id, user_id, channel, tried, due_at FROM notice_deliveries \
                 WHERE id = ANY($1) AND tenant_id = $2 AND status = 'queued'",
                &[&ids, &tenant.0],
            )
            .await
            .map_err(pg)?;
        let mut queued = std::collections::HashMap::new();
        for r in &rows {
            queued.insert(
                NoticeDeliveryId(r.get(0)),
                (
                    NoticeId(r.get(1)),
                    UserId(r.get(2)),
                    enum_col(r, 3, NoticeChannel::parse)?,
                    from_json_text::<Vec<NoticeChannel>>(r.get(4))?,
                    r.get::<_, Timestamp>(5),
                ),
            );
        }
        let update = tx
            .prepare_cached(
                "UPDATE notice_deliveries SET status = $2, channel = $3, tried = $4, \
                 detail = $5, due_at = $6, updated_at = $7 WHERE id = $1",
            )
            .await
            .map_err(pg)?;
        let mut touched: BTreeMap<NoticeId, Vec<DeliveryChange>> = BTreeMap::new();
        for (id, outcome) in results {
            // Recalled (or finished by another node) meanwhile: it stays as it is.
            let Some((notice, user, channel, tried, due_at)) = queued.remove(&id) else {
                continue;
            };
            let a = apply(outcome, channel, tried, due_at, at);
            tx.execute(
                &update,
                &[
                    &id.0,
                    &a.status.as_str(),
                    &a.channel.as_str(),
                    &to_json_text(&a.tried)?,
                    &a.detail,
                    &a.due_at,
                    &at,
                ],
            )
            .await
            .map_err(pg)?;
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
            let mut n = find(&tx, tenant, notice, false).await?;
            finish_if_done(&tx, &mut n, at).await?;
            for part in changes.chunks(CHANGES_PER_EVENT) {
                events.push(delivery_event(notice, n.round, n.status, &n.counts, part));
            }
        }
        outbox(&tx, tenant, &events, at).await?;
        tx.commit().await.map_err(pg)?;
        Ok(events)
    }

    async fn recall_notice(
        &self,
        tenant: TenantId,
        id: NoticeId,
        at: Timestamp,
        audit: Audit,
    ) -> StoreResult<(Notice, Vec<RecalledDelivery>, Vec<OutboxEvent>)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let now = find(&tx, tenant, id, true).await?;
        if !matches!(now.status, NoticeStatus::Sending | NoticeStatus::Sent) {
            return Err(wrong_state(now.status, "sending or sent"));
        }
        let rows = tx
            .query(
                "SELECT id, user_id, channel FROM notice_deliveries \
                 WHERE notice_id = $1 AND round = $2 AND status IN ('sent', 'delivered')",
                &[&id.0, &now.round],
            )
            .await
            .map_err(pg)?;
        let taken = rows
            .iter()
            .map(|r| {
                Ok(RecalledDelivery {
                    id: NoticeDeliveryId(r.get(0)),
                    user_id: UserId(r.get(1)),
                    channel: enum_col(r, 2, NoticeChannel::parse)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        tx.execute(
            "UPDATE notice_deliveries SET status = 'recalled', updated_at = $3 \
             WHERE notice_id = $1 AND round = $2 AND status IN ('queued', 'sent', 'delivered')",
            &[&id.0, &now.round, &at],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "UPDATE notices SET status = 'recalled', recalled_at = $2, updated_at = $2 \
             WHERE id = $1",
            &[&id.0, &at],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        let recalled = find(&tx, tenant, id, false).await?;
        let events = vec![delivery_event(
            id,
            recalled.round,
            recalled.status,
            &recalled.counts,
            &[],
        )];
        outbox(&tx, tenant, &events, at).await?;
        tx.commit().await.map_err(pg)?;
        Ok((recalled, taken, events))
    }

    async fn list_notice_deliveries(
        &self,
        tenant: TenantId,
        id: NoticeId,
        status: Option<NoticeDeliveryStatus>,
        page: PageReq<NoticeDeliveryId>,
    ) -> StoreResult<Page<NoticeDelivery, NoticeDeliveryId>> {
        let c = self.client().await?;
        let round = find(&c, tenant, id, false).await?.round;
        let rows = c
            .query(
                "SELECT d.id, d.user_id, u.name, u.number, d.status, d.channel, d.tried, \
                 d.detail, d.updated_at FROM notice_deliveries d JOIN users u ON u.id = d.user_id \
                 WHERE d.notice_id = $1 AND d.round = $2 AND ($3::uuid IS NULL OR d.id > $3) \
                 AND ($4::text IS NULL OR d.status = $4) ORDER BY d.id LIMIT $5",
                &[
                    &id.0,
                    &round,
                    &page.after.map(|a| a.0),
                    &status.map(|s| s.as_str()),
                    &(i64::from(page.limit) + 1),
                ],
            )
            .await
            .map_err(pg)?;
        let items = rows
            .iter()
            .map(|r| {
                Ok(NoticeDelivery {
                    id: NoticeDeliveryId(r.get(0)),
                    user_id: UserId(r.get(1)),
                    name: r.get(2),
                    number: r.get(3),
                    status: enum_col(r, 4, NoticeDeliveryStatus::parse)?,
                    channel: r.get::<_, Option<&str>>(5).and_then(NoticeChannel::parse),
                    fell_back_from: from_json_text(r.get(6))?,
                    detail: r.get(7),
                    updated_at: r.get(8),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |d| d.id))
    }
}
