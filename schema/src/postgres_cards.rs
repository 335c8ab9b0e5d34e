//! Identity types, card products and claims in the PostgreSQL engine. Names meet at the
//! unique constraint (`identity_type_name_taken`); a deletion, a review and a claim ticket
//! lock their row, so each check and its write are one step.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use jiff::{SignedDuration, Timestamp};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::card_store::{CardStore, ClaimWrite, Claimant, PhoneCodeCheck, Review};
use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::*;
use crate::postgres::{
    check_refs, enum_col, insert_audit, insert_token, insert_user, load_user, pg, user_from_row,
    PgStore, USER_COLS,
};
use crate::postgres_money::insert_outbox;
use crate::store::{
    check_identity_free, check_review, from_json_text, hex, phone_code_too_soon, reviewed,
    same_digest, to_json_text,
};
use crate::wallet::OutboxPage;

const TYPE_COLS: &str = "id, name, category, verification, external_url, secret_version, \
     created_at, updated_at, manages";

fn type_from_row(r: &Row) -> StoreResult<IdentityType> {
    Ok(IdentityType {
        id: IdentityTypeId(r.get(0)),
        name: r.get(1),
        category: enum_col(r, 2, IdentityCategory::parse)?,
        verification: enum_col(r, 3, Verification::parse)?,
        external_url: r.get(4),
        manages: from_json_text(&r.get::<_, String>(8))?,
        secret_version: r.get(5),
        created_at: r.get(6),
        updated_at: r.get(7),
    })
}

async fn check_managed<C: GenericClient>(
    c: &C,
    tenant: TenantId,
    t: &IdentityType,
) -> StoreResult<()> {
    let ids: Vec<Uuid> = t.manages.iter().map(|g| g.id.0).collect();
    check_refs(c, "departments", tenant, &ids, "manages").await
}

/// A card's columns, read from `cards d`.
const CARD_COLS: &str = "d.id, d.tenant_id, d.title, d.subtitle, d.identity_type_ids, \
     d.targeting, d.claim_mode, d.status, d.review_reason, d.reviewed_at, d.cover_sha256, \
     d.created_at, d.updated_at, d.revision";
/// Where a claim's columns start after `CARD_COLS`.
const CARD_COLS_END: usize = 14;

fn card_from_row(r: &Row) -> StoreResult<Card> {
    Ok(Card {
        id: CardId(r.get(0)),
        tenant_id: TenantId(r.get(1)),
        title: r.get(2),
        subtitle: enum_col(r, 3, CardSubtitle::parse)?,
        identity_type_ids: from_json_text(&r.get::<_, String>(4))?,
        targeting: enum_col(r, 5, CardTargeting::parse)?,
        claim_mode: enum_col(r, 6, ClaimMode::parse)?,
        status: enum_col(r, 7, CardStatus::parse)?,
        review_reason: r.get(8),
        reviewed_at: r.get(9),
        cover_sha256: r.get::<_, Option<Vec<u8>>>(10).map(|h| hex(&h)),
        created_at: r.get(11),
        updated_at: r.get(12),
        revision: i64::from(r.get::<_, i32>(13)),
    })
}

/// A card, locked for the rest of the transaction when `lock`; another tenant's is
/// `NotFound` when `tenant` is given.
async fn find_card<C: GenericClient>(
    c: &C,
    tenant: Option<TenantId>,
    id: CardId,
    lock: bool,
) -> StoreResult<Card> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row = c
        .query_opt(
            &format!("SELECT {CARD_COLS} FROM cards d WHERE d.id = $1{lock}"),
            &[&id.0],
        )
        .await
        .map_err(pg)?
        .ok_or(StoreError::NotFound)?;
    let card = card_from_row(&row)?;
    if tenant.is_some_and(|t| t != card.tenant_id) {
        return Err(StoreError::NotFound);
    }
    Ok(card)
}

async fn write_card<C: GenericClient>(
    c: &C,
    tenant: TenantId,
    card: &Card,
    audit: &Audit,
) -> StoreResult<()> {
    let ids: Vec<Uuid> = card.identity_type_ids.iter().map(|i| i.0).collect();
    check_refs(c, "identity_types", tenant, &ids, "identity_type_ids").await?;
    c.execute(
        "INSERT INTO cards (id, tenant_id, title, subtitle, identity_type_ids, targeting, \
         claim_mode, status, review_reason, reviewed_at, created_at, updated_at, revision) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) \
         ON CONFLICT (id) DO UPDATE SET title = excluded.title, subtitle = excluded.subtitle, \
         identity_type_ids = excluded.identity_type_ids, targeting = excluded.targeting, \
         claim_mode = excluded.claim_mode, status = excluded.status, \
         review_reason = excluded.review_reason, reviewed_at = excluded.reviewed_at, \
         updated_at = excluded.updated_at, revision = excluded.revision",
        &[
            &card.id.0,
            &tenant.0,
            &card.title,
            &card.subtitle.as_str(),
            &to_json_text(&card.identity_type_ids)?,
            &card.targeting.as_str(),
            &card.claim_mode.as_str(),
            &card.status.as_str(),
            &card.review_reason,
            &card.reviewed_at,
            &card.created_at,
            &card.updated_at,
            &(card.revision as i32),
        ],
    )
    .await
    .map_err(pg)?;
    insert_audit(c, audit).await
}

/// A claim's columns, read from `card_claims k`.
const CLAIM_COLS: &str =
    "k.id, k.card_id, k.user_id, k.identity_type_id, k.method, k.account, k.claimed_at";

/// A claim's columns (`CLAIM_COLS`) read from column `at` on.
fn claim_at(r: &Row, at: usize) -> StoreResult<CardClaim> {
    Ok(CardClaim {
        id: CardClaimId(r.get(at)),
        card_id: CardId(r.get(at + 1)),
        user_id: UserId(r.get(at + 2)),
        identity_type_id: IdentityTypeId(r.get(at + 3)),
        method: enum_col(r, at + 4, Verification::parse)?,
        account: r.get(at + 5),
        claimed_at: r.get(at + 6),
    })
}

#[async_trait]
impl CardStore for PgStore {
    async fn create_identity_type(
        &self,
        tenant: TenantId,
        t: IdentityType,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        check_managed(&tx, tenant, &t).await?;
        tx.execute(
            "INSERT INTO identity_types (id, tenant_id, name, category, verification, \
             external_url, secret_version, created_at, updated_at, manages) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
            &[
                &t.id.0,
                &tenant.0,
                &t.name,
                &t.category.as_str(),
                &t.verification.as_str(),
                &t.external_url,
                &t.secret_version,
                &t.created_at,
                &t.updated_at,
                &to_json_text(&t.manages)?,
            ],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn get_identity_type(
        &self,
        tenant: TenantId,
        id: IdentityTypeId,
    ) -> StoreResult<IdentityType> {
        self.tenant_row(TYPE_COLS, "identity_types", tenant, id.0, type_from_row)
            .await
    }

    async fn list_identity_types(&self, tenant: TenantId) -> StoreResult<Vec<IdentityType>> {
        self.tenant_rows_by_name(TYPE_COLS, "identity_types", tenant, type_from_row)
            .await
    }

    async fn update_identity_type(
        &self,
        tenant: TenantId,
        t: IdentityType,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        check_managed(&tx, tenant, &t).await?;
        let changed = tx
            .execute(
                "UPDATE identity_types SET category = $3, verification = $4, external_url = $5, \
                 secret_version = $6, updated_at = $7, manages = $8 \
                 WHERE tenant_id = $1 AND id = $2",
                &[
                    &tenant.0,
                    &t.id.0,
                    &t.category.as_str(),
                    &t.verification.as_str(),
                    &t.external_url,
                    &t.secret_version,
                    &t.updated_at,
                    &to_json_text(&t.manages)?,
                ],
            )
            .await
            .map_err(pg)?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn delete_identity_type(
        &self,
        tenant: TenantId,
        id: IdentityTypeId,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        // The lock makes two deletions, or a deletion and a change, take turns.
        let name: String = tx
            .query_opt(
                "SELECT name FROM identity_types WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
                &[&tenant.0, &id.0],
            )
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound)?
            .get(0);
        let users: i64 = tx
            .query_one(
                "SELECT count(*) FROM users WHERE tenant_id = $1 AND identity = $2",
                &[&tenant.0, &name],
            )
            .await
            .map_err(pg)?
            .get(0);
        let cards = tx
            .query(
                "SELECT title, identity_type_ids FROM cards WHERE tenant_id = $1",
                &[&tenant.0],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        check_identity_free(id, users, cards)?;
        tx.execute(
            "DELETE FROM identity_types WHERE tenant_id = $1 AND id = $2",
            &[&tenant.0, &id.0],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn create_card(&self, tenant: TenantId, card: Card, audit: Audit) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        write_card(&tx, tenant, &card, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn get_card(&self, tenant: TenantId, id: CardId) -> StoreResult<Card> {
        find_card(&self.client().await?, Some(tenant), id, false).await
    }

    async fn list_cards(&self, tenant: TenantId) -> StoreResult<Vec<Card>> {
        self.client()
            .await?
            .query(
                &format!(
                    "SELECT {CARD_COLS} FROM cards d WHERE d.tenant_id = $1 \
                     ORDER BY created_at DESC, id"
                ),
                &[&tenant.0],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(card_from_row)
            .collect()
    }

    async fn update_card(&self, tenant: TenantId, card: Card, audit: Audit) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        find_card(&tx, Some(tenant), card.id, true).await?;
        write_card(&tx, tenant, &card, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn set_cover(
        &self,
        tenant: TenantId,
        id: CardId,
        cover: Cover,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<Card> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let changed = tx
            .execute(
                "UPDATE cards SET cover = $3, cover_type = $4, cover_sha256 = $5, \
                 status = 'pending_review', review_reason = NULL, reviewed_at = NULL, \
                 updated_at = $6, revision = revision + 1 WHERE tenant_id = $1 AND id = $2",
                &[
                    &tenant.0,
                    &id.0,
                    &cover.bytes,
                    &cover.content_type,
                    &&cover.sha256[..],
                    &now,
                ],
            )
            .await
            .map_err(pg)?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&tx, &audit).await?;
        let card = find_card(&tx, Some(tenant), id, false).await?;
        tx.commit().await.map_err(pg)?;
        Ok(card)
    }

    async fn get_cover(&self, sha256: [u8; 32]) -> StoreResult<Cover> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT cover, cover_type FROM cards WHERE cover_sha256 = $1 LIMIT 1",
                &[&&sha256[..]],
            )
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound)?;
        Ok(Cover {
            bytes: row.get(0),
            content_type: row.get(1),
            sha256,
        })
    }

    async fn pending_cards(&self, limit: usize) -> StoreResult<Vec<Card>> {
        self.client()
            .await?
            .query(
                &format!(
                    "SELECT {CARD_COLS} FROM cards d WHERE d.status = 'pending_review' \
                     ORDER BY updated_at, id LIMIT $1"
                ),
                &[&(limit as i64)],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(card_from_row)
            .collect()
    }

    async fn review_card(
        &self,
        id: CardId,
        review: Review,
        now: Timestamp,
        mut audit: Audit,
    ) -> StoreResult<Card> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let card = find_card(&tx, None, id, true).await?;
        check_review(&card, &review)?;
        let card = reviewed(card, review, now);
        audit.tenant_id = Some(card.tenant_id);
        tx.execute(
            "UPDATE cards SET status = $2, review_reason = $3, reviewed_at = $4 WHERE id = $1",
            &[&id.0, &card.status.as_str(), &card.review_reason, &now],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)?;
        Ok(card)
    }

    async fn find_claimants(
        &self,
        tenant: TenantId,
        identity: String,
        who: Claimant,
    ) -> StoreResult<Vec<User>> {
        let id_hash: Vec<u8>;
        let (clause, found_by): (&str, Vec<&(dyn ToSql + Sync)>) = match &who {
            Claimant::Phone(p) => ("phone = $3", vec![p]),
            Claimant::Number(n) => ("number = $3", vec![n]),
            Claimant::NameId { name, id_hash: h } => {
                id_hash = h.to_vec();
                ("name = $3 AND id_hash = $4", vec![name, &id_hash])
            }
        };
        let mut values: Vec<&(dyn ToSql + Sync)> = vec![&tenant.0, &identity];
        values.extend(found_by);
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {USER_COLS} FROM users WHERE tenant_id = $1 AND identity = $2 \
                     AND status = 'active' AND {clause} LIMIT 2"
                ),
                &values,
            )
            .await
            .map_err(pg)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn claim_card(
        &self,
        tenant: TenantId,
        write: ClaimWrite,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<(CardClaim, bool)> {
        let ClaimWrite {
            claim,
            new_user,
            token,
            ticket,
            event,
        } = write;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        match &new_user {
            // A number taken meets the unique constraint (`number_taken`).
            Some(user) => insert_user(&tx, tenant, user, now).await?,
            None => {
                load_user(&tx, tenant, claim.user_id).await?;
            }
        }
        if let Some(hash) = ticket {
            let spent = tx
                .execute(
                    "UPDATE claim_tickets SET used_at = $3 WHERE hash = $1 AND tenant_id = $2 \
                     AND used_at IS NULL AND expires_at > $3",
                    &[&&hash[..], &tenant.0, &now],
                )
                .await
                .map_err(pg)?;
            if spent == 0 {
                return Err(StoreError::Gone);
            }
        }
        // `xmax = 0` tells a row inserted now from one the conflict updated.
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO card_claims AS k (id, tenant_id, card_id, user_id, identity_type_id, \
                     method, account, claimed_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) \
                     ON CONFLICT (card_id, user_id) DO UPDATE SET \
                     identity_type_id = excluded.identity_type_id, method = excluded.method, \
                     account = excluded.account, claimed_at = excluded.claimed_at \
                     RETURNING {CLAIM_COLS}, (xmax = 0)"
                ),
                &[
                    &claim.id.0,
                    &tenant.0,
                    &claim.card_id.0,
                    &claim.user_id.0,
                    &claim.identity_type_id.0,
                    &claim.method.as_str(),
                    &claim.account,
                    &claim.claimed_at,
                ],
            )
            .await
            .map_err(pg)?;
        let stored = claim_at(&row, 0)?;
        let first: bool = row.get(7);
        tx.execute(
            "DELETE FROM tokens WHERE kind = 'cardholder' AND tenant_id = $1 AND subject_id = $2",
            &[&tenant.0, &stored.user_id.0],
        )
        .await
        .map_err(pg)?;
        insert_token(&tx, &token).await?;
        let page = OutboxPage::of_one(tenant, std::slice::from_ref(&event), now);
        insert_outbox(&tx, page.as_ref()).await.map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)?;
        Ok((stored, first))
    }

    async fn card_holders(
        &self,
        tenant: TenantId,
        card: CardId,
        page: PageReq<CardClaimId>,
    ) -> StoreResult<Page<CardHolder, CardClaimId>> {
        let after = page.after.map_or(Uuid::nil(), |a| a.0);
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {CLAIM_COLS}, u.name, u.number FROM card_claims k \
                     JOIN users u ON u.id = k.user_id \
                     WHERE k.tenant_id = $1 AND k.card_id = $2 AND k.id > $3 \
                     ORDER BY k.id LIMIT $4"
                ),
                &[&tenant.0, &card.0, &after, &(i64::from(page.limit) + 1)],
            )
            .await
            .map_err(pg)?;
        let holders = rows
            .iter()
            .map(|r| {
                Ok(CardHolder {
                    claim: claim_at(r, 0)?,
                    name: r.get(7),
                    number: r.get(8),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(crate::sqlite::paginate(holders, page.limit, |h| h.claim.id))
    }

    async fn user_cards(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> StoreResult<Vec<(CardClaim, Card)>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {CARD_COLS}, {CLAIM_COLS} FROM card_claims k \
                     JOIN cards d ON d.id = k.card_id \
                     WHERE k.tenant_id = $1 AND k.user_id = $2 ORDER BY k.claimed_at DESC, k.id"
                ),
                &[&tenant.0, &user.0],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| Ok((claim_at(r, CARD_COLS_END)?, card_from_row(r)?)))
            .collect()
    }

    async fn create_claim_ticket(
        &self,
        tenant: TenantId,
        hash: [u8; 32],
        account: String,
        followed: bool,
        expires_at: Timestamp,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        // Spent and expired tickets are only kept until they can no longer matter.
        tx.execute(
            "DELETE FROM claim_tickets WHERE expires_at < $1",
            &[&(audit.at - SignedDuration::from_hours(24))],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO claim_tickets (hash, tenant_id, account, followed, expires_at) \
             VALUES ($1,$2,$3,$4,$5)",
            &[&&hash[..], &tenant.0, &account, &followed, &expires_at],
        )
        .await
        .map_err(pg)?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn claim_ticket(
        &self,
        tenant: TenantId,
        hash: [u8; 32],
        now: Timestamp,
    ) -> StoreResult<Option<(String, bool)>> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT account, followed FROM claim_tickets WHERE hash = $1 AND tenant_id = $2 \
                 AND used_at IS NULL AND expires_at > $3",
                &[&&hash[..], &tenant.0, &now],
            )
            .await
            .map_err(pg)?
            .map(|r| (r.get(0), r.get(1))))
    }

    async fn put_phone_code(
        &self,
        tenant: TenantId,
        phone: String,
        hash: [u8; 32],
        now: Timestamp,
        expires_at: Timestamp,
        gap: SignedDuration,
    ) -> StoreResult<()> {
        // One statement: the upsert happens only when no code went out within `gap`.
        let written = self
            .client()
            .await?
            .execute(
                "INSERT INTO phone_codes (tenant_id, phone, code_hash, sent_at, expires_at, \
                 attempts) VALUES ($1,$2,$3,$4,$5,0) ON CONFLICT (tenant_id, phone) DO UPDATE \
                 SET code_hash = excluded.code_hash, sent_at = excluded.sent_at, \
                 expires_at = excluded.expires_at, attempts = 0 \
                 WHERE phone_codes.sent_at <= $6",
                &[
                    &tenant.0,
                    &phone,
                    &&hash[..],
                    &now,
                    &expires_at,
                    &(now - gap),
                ],
            )
            .await
            .map_err(pg)?;
        if written == 0 {
            return Err(phone_code_too_soon());
        }
        Ok(())
    }

    async fn check_phone_code(
        &self,
        tenant: TenantId,
        phone: String,
        hash: [u8; 32],
        now: Timestamp,
        max_wrong: i32,
    ) -> StoreResult<PhoneCodeCheck> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let Some(row) = tx
            .query_opt(
                "SELECT code_hash, expires_at, attempts FROM phone_codes \
                 WHERE tenant_id = $1 AND phone = $2 FOR UPDATE",
                &[&tenant.0, &phone],
            )
            .await
            .map_err(pg)?
        else {
            return Ok(PhoneCodeCheck::Missing);
        };
        let (stored, expires, attempts): (Vec<u8>, Timestamp, i32) =
            (row.get(0), row.get(1), row.get(2));
        if now >= expires || attempts >= max_wrong {
            return Ok(PhoneCodeCheck::Missing);
        }
        let found = if same_digest(&stored, &hash) {
            // Used up, but kept for its `sent_at` (the gap between texts).
            tx.execute(
                "UPDATE phone_codes SET expires_at = $3 WHERE tenant_id = $1 AND phone = $2",
                &[&tenant.0, &phone, &now],
            )
            .await
            .map_err(pg)?;
            PhoneCodeCheck::Matched
        } else {
            tx.execute(
                "UPDATE phone_codes SET attempts = attempts + 1 \
                 WHERE tenant_id = $1 AND phone = $2",
                &[&tenant.0, &phone],
            )
            .await
            .map_err(pg)?;
            PhoneCodeCheck::Wrong
        };
        tx.commit().await.map_err(pg)?;
        Ok(found)
    }
}
