//! Identity types, card products and claims in the SQLite engine. The single writer makes
//! each check and its write one step: a type is deleted only while nobody holds it, a card
//! is reviewed only as the operator saw it, a claim ticket is spent once.

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use crate::card_store::{CardStore, ClaimWrite, Claimant, PhoneCodeCheck, Review};
use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::*;
use crate::sqlite::{
    change_one, check_name_free, check_refs, db, insert_audit, insert_token, insert_user,
    load_user, ms, number_owner, number_taken, paginate, parse_enum, ts, user_from_row, uuid_col,
    SqliteStore, USER_COLS,
};
use crate::sqlite_money::insert_outbox;
use crate::store::{
    check_identity_free, check_review, from_json_text, hex, identity_type_name_taken,
    phone_code_too_soon, reviewed, to_json_text,
};
use crate::wallet::OutboxPage;

const TYPE_COLS: &str = "id, name, category, verification, external_url, secret_version, \
     created_at, updated_at, manages";

fn type_row(r: &Row) -> rusqlite::Result<(IdentityType, String)> {
    Ok((
        IdentityType {
            id: IdentityTypeId(uuid_col(r, 0)?),
            name: r.get(1)?,
            category: parse_enum(r, 2, IdentityCategory::parse)?,
            verification: parse_enum(r, 3, Verification::parse)?,
            external_url: r.get(4)?,
            manages: Vec::new(),
            secret_version: r.get(5)?,
            created_at: ts(r.get(6)?),
            updated_at: ts(r.get(7)?),
        },
        r.get(8)?,
    ))
}

fn type_from_row((mut t, manages): (IdentityType, String)) -> StoreResult<IdentityType> {
    t.manages = from_json_text(&manages)?;
    Ok(t)
}

fn check_managed(c: &Connection, tenant: TenantId, t: &IdentityType) -> StoreResult<()> {
    let ids: Vec<uuid::Uuid> = t.manages.iter().map(|g| g.id.0).collect();
    check_refs(c, "departments", tenant, &ids, "manages")
}

/// A card's columns, read from `cards d`.
const CARD_COLS: &str = "d.id, d.tenant_id, d.title, d.subtitle, d.identity_type_ids, \
     d.targeting, d.claim_mode, d.status, d.review_reason, d.reviewed_at, d.cover_sha256, \
     d.created_at, d.updated_at, d.revision";
/// Where a claim's columns start after `CARD_COLS`.
const CARD_COLS_END: usize = 14;

fn card_row(r: &Row) -> rusqlite::Result<(Card, String)> {
    Ok((
        Card {
            id: CardId(uuid_col(r, 0)?),
            tenant_id: TenantId(uuid_col(r, 1)?),
            title: r.get(2)?,
            subtitle: parse_enum(r, 3, CardSubtitle::parse)?,
            identity_type_ids: Vec::new(),
            targeting: parse_enum(r, 5, CardTargeting::parse)?,
            claim_mode: parse_enum(r, 6, ClaimMode::parse)?,
            status: parse_enum(r, 7, CardStatus::parse)?,
            review_reason: r.get(8)?,
            reviewed_at: r.get::<_, Option<i64>>(9)?.map(ts),
            cover_sha256: r.get::<_, Option<Vec<u8>>>(10)?.map(|h| hex(&h)),
            created_at: ts(r.get(11)?),
            updated_at: ts(r.get(12)?),
            revision: r.get(13)?,
        },
        r.get(4)?,
    ))
}

fn card_from_row((mut card, ids): (Card, String)) -> StoreResult<Card> {
    card.identity_type_ids = from_json_text(&ids)?;
    Ok(card)
}

fn find_card(c: &Connection, tenant: Option<TenantId>, id: CardId) -> StoreResult<Card> {
    let row = c
        .prepare_cached(&format!("SELECT {CARD_COLS} FROM cards d WHERE d.id = ?"))
        .and_then(|mut st| st.query_row([id.to_string()], card_row).optional())
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
    let card = card_from_row(row)?;
    if tenant.is_some_and(|t| t != card.tenant_id) {
        return Err(StoreError::NotFound);
    }
    Ok(card)
}

fn write_card(c: &Connection, tenant: TenantId, card: &Card, audit: &Audit) -> StoreResult<()> {
    let ids: Vec<uuid::Uuid> = card.identity_type_ids.iter().map(|i| i.0).collect();
    check_refs(c, "identity_types", tenant, &ids, "identity_type_ids")?;
    change_one(
        c,
        "INSERT INTO cards (id, tenant_id, title, subtitle, identity_type_ids, targeting, \
         claim_mode, status, review_reason, reviewed_at, created_at, updated_at, revision) \
         VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) \
         ON CONFLICT (id) DO UPDATE SET title = excluded.title, subtitle = excluded.subtitle, \
         identity_type_ids = excluded.identity_type_ids, targeting = excluded.targeting, \
         claim_mode = excluded.claim_mode, status = excluded.status, \
         review_reason = excluded.review_reason, reviewed_at = excluded.reviewed_at, \
         updated_at = excluded.updated_at, revision = excluded.revision \
         WHERE cards.tenant_id = excluded.tenant_id",
        params![
            card.id.to_string(),
            tenant.to_string(),
            card.title,
            card.subtitle.as_str(),
            to_json_text(&card.identity_type_ids)?,
            card.targeting.as_str(),
            card.claim_mode.as_str(),
            card.status.as_str(),
            card.review_reason,
            card.reviewed_at.map(ms),
            ms(card.created_at),
            ms(card.updated_at),
            card.revision,
        ],
        audit,
    )
}

/// A claim's columns (`CLAIM_COLS`) read from column `at` on.
fn claim_at(r: &Row, at: usize) -> rusqlite::Result<CardClaim> {
    Ok(CardClaim {
        id: CardClaimId(uuid_col(r, at)?),
        card_id: CardId(uuid_col(r, at + 1)?),
        user_id: UserId(uuid_col(r, at + 2)?),
        identity_type_id: IdentityTypeId(uuid_col(r, at + 3)?),
        method: parse_enum(r, at + 4, Verification::parse)?,
        account: r.get(at + 5)?,
        claimed_at: ts(r.get(at + 6)?),
    })
}

fn claim_row(r: &Row) -> rusqlite::Result<CardClaim> {
    claim_at(r, 0)
}

/// A claim's columns, read from `card_claims k`.
const CLAIM_COLS: &str =
    "k.id, k.card_id, k.user_id, k.identity_type_id, k.method, k.account, k.claimed_at";

#[async_trait]
impl CardStore for SqliteStore {
    async fn create_identity_type(
        &self,
        tenant: TenantId,
        t: IdentityType,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            check_name_free(
                c,
                "identity_types",
                tenant,
                t.id.0,
                &t.name,
                identity_type_name_taken,
            )?;
            check_managed(c, tenant, &t)?;
            change_one(
                c,
                "INSERT INTO identity_types (id, tenant_id, name, category, verification, \
                 external_url, secret_version, created_at, updated_at, manages) \
                 VALUES (?,?,?,?,?,?,?,?,?,?)",
                params![
                    t.id.to_string(),
                    tenant.to_string(),
                    t.name,
                    t.category.as_str(),
                    t.verification.as_str(),
                    t.external_url,
                    t.secret_version,
                    ms(t.created_at),
                    ms(t.updated_at),
                    to_json_text(&t.manages)?,
                ],
                &audit,
            )
        })
        .await
    }

    async fn get_identity_type(
        &self,
        tenant: TenantId,
        id: IdentityTypeId,
    ) -> StoreResult<IdentityType> {
        self.tenant_row(
            TYPE_COLS,
            "identity_types",
            tenant,
            id.0,
            type_row,
            type_from_row,
        )
        .await
    }

    async fn list_identity_types(&self, tenant: TenantId) -> StoreResult<Vec<IdentityType>> {
        self.tenant_rows_by_name(TYPE_COLS, "identity_types", tenant, type_row, type_from_row)
            .await
    }

    async fn update_identity_type(
        &self,
        tenant: TenantId,
        t: IdentityType,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            check_managed(c, tenant, &t)?;
            change_one(
                c,
                "UPDATE identity_types SET category = ?, verification = ?, external_url = ?, \
                 secret_version = ?, updated_at = ?, manages = ? WHERE tenant_id = ? AND id = ?",
                params![
                    t.category.as_str(),
                    t.verification.as_str(),
                    t.external_url,
                    t.secret_version,
                    ms(t.updated_at),
                    to_json_text(&t.manages)?,
                    tenant.to_string(),
                    t.id.to_string(),
                ],
                &audit,
            )
        })
        .await
    }

    async fn delete_identity_type(
        &self,
        tenant: TenantId,
        id: IdentityTypeId,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            let name: String = c
                .query_row(
                    "SELECT name FROM identity_types WHERE tenant_id = ? AND id = ?",
                    [tenant.to_string(), id.to_string()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?
                .ok_or(StoreError::NotFound)?;
            let users: i64 = c
                .query_row(
                    "SELECT count(*) FROM users WHERE tenant_id = ? AND identity = ?",
                    [tenant.to_string(), name],
                    |r| r.get(0),
                )
                .map_err(db)?;
            let cards = c
                .prepare("SELECT title, identity_type_ids FROM cards WHERE tenant_id = ?")
                .and_then(|mut st| {
                    st.query_map([tenant.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db)?;
            check_identity_free(id, users, cards)?;
            change_one(
                c,
                "DELETE FROM identity_types WHERE tenant_id = ? AND id = ?",
                [tenant.to_string(), id.to_string()],
                &audit,
            )
        })
        .await
    }

    async fn create_card(&self, tenant: TenantId, card: Card, audit: Audit) -> StoreResult<()> {
        self.write(move |c| write_card(c, tenant, &card, &audit))
            .await
    }

    async fn get_card(&self, tenant: TenantId, id: CardId) -> StoreResult<Card> {
        self.read(move |c| find_card(c, Some(tenant), id)).await
    }

    async fn list_cards(&self, tenant: TenantId) -> StoreResult<Vec<Card>> {
        self.read(move |c| {
            let rows = c
                .prepare_cached(&format!(
                    "SELECT {CARD_COLS} FROM cards d WHERE d.tenant_id = ? \
                     ORDER BY created_at DESC, id"
                ))
                .and_then(|mut st| {
                    st.query_map([tenant.to_string()], card_row)?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db)?;
            rows.into_iter().map(card_from_row).collect()
        })
        .await
    }

    async fn update_card(&self, tenant: TenantId, card: Card, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            find_card(c, Some(tenant), card.id)?;
            write_card(c, tenant, &card, &audit)
        })
        .await
    }

    async fn set_cover(
        &self,
        tenant: TenantId,
        id: CardId,
        cover: Cover,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<Card> {
        self.write(move |c| {
            change_one(
                c,
                "UPDATE cards SET cover = ?, cover_type = ?, cover_sha256 = ?, \
                 status = 'pending_review', review_reason = NULL, reviewed_at = NULL, \
                 updated_at = ?, revision = revision + 1 WHERE tenant_id = ? AND id = ?",
                params![
                    cover.bytes,
                    cover.content_type,
                    &cover.sha256[..],
                    ms(now),
                    tenant.to_string(),
                    id.to_string()
                ],
                &audit,
            )?;
            find_card(c, Some(tenant), id)
        })
        .await
    }

    async fn get_cover(&self, sha256: [u8; 32]) -> StoreResult<Cover> {
        self.read(move |c| {
            c.query_row(
                "SELECT cover, cover_type FROM cards WHERE cover_sha256 = ? LIMIT 1",
                [&sha256[..]],
                |r| {
                    Ok(Cover {
                        bytes: r.get(0)?,
                        content_type: r.get(1)?,
                        sha256,
                    })
                },
            )
            .optional()
            .map_err(db)?
            .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn pending_cards(&self, limit: usize) -> StoreResult<Vec<Card>> {
        self.read(move |c| {
            let rows = c
                .prepare_cached(&format!(
                    "SELECT {CARD_COLS} FROM cards d WHERE d.status = 'pending_review' \
                     ORDER BY updated_at, id LIMIT ?"
                ))
                .and_then(|mut st| {
                    st.query_map([limit as i64], card_row)?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db)?;
            rows.into_iter().map(card_from_row).collect()
        })
        .await
    }

    async fn review_card(
        &self,
        id: CardId,
        review: Review,
        now: Timestamp,
        mut audit: Audit,
    ) -> StoreResult<Card> {
        self.write(move |c| {
            let card = find_card(c, None, id)?;
            check_review(&card, &review)?;
            let card = reviewed(card, review, now);
            audit.tenant_id = Some(card.tenant_id);
            c.execute(
                "UPDATE cards SET status = ?, review_reason = ?, reviewed_at = ? WHERE id = ?",
                params![
                    card.status.as_str(),
                    card.review_reason,
                    ms(now),
                    id.to_string()
                ],
            )
            .map_err(db)?;
            insert_audit(c, &audit)?;
            Ok(card)
        })
        .await
    }

    async fn find_claimants(
        &self,
        tenant: TenantId,
        identity: String,
        who: Claimant,
    ) -> StoreResult<Vec<User>> {
        self.read(move |c| {
            use rusqlite::types::Value;
            let (clause, found_by): (&str, Vec<Value>) = match who {
                Claimant::Phone(p) => ("phone = ?", vec![p.into()]),
                Claimant::Number(n) => ("number = ?", vec![n.into()]),
                Claimant::NameId { name, id_hash } => (
                    "name = ? AND id_hash = ?",
                    vec![name.into(), id_hash.to_vec().into()],
                ),
            };
            let values: Vec<Value> = [tenant.to_string().into(), identity.into()]
                .into_iter()
                .chain(found_by)
                .collect();
            c.prepare_cached(&format!(
                "SELECT {USER_COLS} FROM users WHERE tenant_id = ? AND identity = ? \
                 AND status = 'active' AND {clause} LIMIT 2"
            ))
            .and_then(|mut st| {
                st.query_map(params_from_iter(values), user_from_row)?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db)
        })
        .await
    }

    async fn claim_card(
        &self,
        tenant: TenantId,
        write: ClaimWrite,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<(CardClaim, bool)> {
        self.write(move |c| {
            let ClaimWrite {
                claim,
                new_user,
                token,
                ticket,
                event,
            } = write;
            if let Some(user) = &new_user {
                if number_owner(c, tenant, &user.number)?.is_some() {
                    return Err(number_taken());
                }
                insert_user(c, tenant, user, now)?;
            } else {
                load_user(c, tenant, claim.user_id)?;
            }
            if let Some(hash) = ticket {
                let spent = c
                    .execute(
                        "UPDATE claim_tickets SET used_at = ? WHERE hash = ? AND tenant_id = ? \
                         AND used_at IS NULL AND expires_at > ?",
                        params![ms(now), &hash[..], tenant.to_string(), ms(now)],
                    )
                    .map_err(db)?;
                if spent == 0 {
                    return Err(StoreError::Gone);
                }
            }
            let earlier = c
                .query_row(
                    &format!(
                        "SELECT {CLAIM_COLS} FROM card_claims k WHERE k.card_id = ? AND k.user_id = ?"
                    ),
                    [claim.card_id.to_string(), claim.user_id.to_string()],
                    claim_row,
                )
                .optional()
                .map_err(db)?;
            let stored = CardClaim {
                id: earlier.as_ref().map_or(claim.id, |e| e.id),
                ..claim
            };
            c.execute(
                "INSERT INTO card_claims (id, tenant_id, card_id, user_id, identity_type_id, \
                 method, account, claimed_at) VALUES (?,?,?,?,?,?,?,?) \
                 ON CONFLICT (card_id, user_id) DO UPDATE SET \
                 identity_type_id = excluded.identity_type_id, method = excluded.method, \
                 account = excluded.account, claimed_at = excluded.claimed_at",
                params![
                    stored.id.to_string(),
                    tenant.to_string(),
                    stored.card_id.to_string(),
                    stored.user_id.to_string(),
                    stored.identity_type_id.to_string(),
                    stored.method.as_str(),
                    stored.account,
                    ms(stored.claimed_at),
                ],
            )
            .map_err(db)?;
            c.execute(
                "DELETE FROM tokens WHERE kind = 'cardholder' AND tenant_id = ? \
                 AND subject_id = ?",
                [tenant.to_string(), stored.user_id.to_string()],
            )
            .map_err(db)?;
            insert_token(c, &token)?;
            let page = OutboxPage::of_one(tenant, std::slice::from_ref(&event), now);
            insert_outbox(c, page.as_ref()).map_err(db)?;
            insert_audit(c, &audit)?;
            Ok((stored, earlier.is_none()))
        })
        .await
    }

    async fn card_holders(
        &self,
        tenant: TenantId,
        card: CardId,
        page: PageReq<CardClaimId>,
    ) -> StoreResult<Page<CardHolder, CardClaimId>> {
        self.read(move |c| {
            let after = page.after.map(|a| a.to_string()).unwrap_or_default();
            let rows = c
                .prepare_cached(&format!(
                    "SELECT {CLAIM_COLS}, u.name, u.number FROM card_claims k \
                     JOIN users u ON u.id = k.user_id \
                     WHERE k.tenant_id = ? AND k.card_id = ? AND k.id > ? ORDER BY k.id LIMIT ?"
                ))
                .and_then(|mut st| {
                    st.query_map(
                        params![
                            tenant.to_string(),
                            card.to_string(),
                            after,
                            i64::from(page.limit) + 1
                        ],
                        |r| {
                            Ok(CardHolder {
                                claim: claim_row(r)?,
                                name: r.get(7)?,
                                number: r.get(8)?,
                            })
                        },
                    )?
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db)?;
            Ok(paginate(rows, page.limit, |h| h.claim.id))
        })
        .await
    }

    async fn user_cards(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> StoreResult<Vec<(CardClaim, Card)>> {
        self.read(move |c| {
            let rows = c
                .prepare_cached(&format!(
                    "SELECT {CARD_COLS}, {CLAIM_COLS} FROM card_claims k \
                     JOIN cards d ON d.id = k.card_id \
                     WHERE k.tenant_id = ? AND k.user_id = ? ORDER BY k.claimed_at DESC, k.id"
                ))
                .and_then(|mut st| {
                    st.query_map([tenant.to_string(), user.to_string()], |r| {
                        Ok((claim_at(r, CARD_COLS_END)?, card_row(r)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db)?;
            rows.into_iter()
                .map(|(claim, card)| Ok((claim, card_from_row(card)?)))
                .collect()
        })
        .await
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
        self.write(move |c| {
            // Spent and expired tickets are only kept until they can no longer matter.
            c.execute(
                "DELETE FROM claim_tickets WHERE expires_at < ?",
                [ms(audit.at) - 86_400_000],
            )
            .map_err(db)?;
            change_one(
                c,
                "INSERT INTO claim_tickets (hash, tenant_id, account, followed, expires_at) \
                 VALUES (?,?,?,?,?)",
                params![
                    &hash[..],
                    tenant.to_string(),
                    account,
                    followed,
                    ms(expires_at)
                ],
                &audit,
            )
        })
        .await
    }

    async fn claim_ticket(
        &self,
        tenant: TenantId,
        hash: [u8; 32],
        now: Timestamp,
    ) -> StoreResult<Option<(String, bool)>> {
        self.read(move |c| {
            c.query_row(
                "SELECT account, followed FROM claim_tickets WHERE hash = ? AND tenant_id = ? \
                 AND used_at IS NULL AND expires_at > ?",
                params![&hash[..], tenant.to_string(), ms(now)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db)
        })
        .await
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
        self.write(move |c| {
            let sent: Option<i64> = c
                .query_row(
                    "SELECT sent_at FROM phone_codes WHERE tenant_id = ? AND phone = ?",
                    [tenant.to_string(), phone.clone()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            if sent.is_some_and(|s| ts(s) + gap > now) {
                return Err(phone_code_too_soon());
            }
            c.execute(
                "INSERT INTO phone_codes (tenant_id, phone, code_hash, sent_at, expires_at, \
                 attempts) VALUES (?,?,?,?,?,0) ON CONFLICT (tenant_id, phone) DO UPDATE SET \
                 code_hash = excluded.code_hash, sent_at = excluded.sent_at, \
                 expires_at = excluded.expires_at, attempts = 0",
                params![
                    tenant.to_string(),
                    phone,
                    &hash[..],
                    ms(now),
                    ms(expires_at)
                ],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn check_phone_code(
        &self,
        tenant: TenantId,
        phone: String,
        hash: [u8; 32],
        now: Timestamp,
        max_wrong: i32,
    ) -> StoreResult<PhoneCodeCheck> {
        self.write(move |c| {
            let found: Option<(Vec<u8>, i64, i32)> = c
                .query_row(
                    "SELECT code_hash, expires_at, attempts FROM phone_codes \
                     WHERE tenant_id = ? AND phone = ?",
                    [tenant.to_string(), phone.clone()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db)?;
            let Some((stored, expires, attempts)) = found else {
                return Ok(PhoneCodeCheck::Missing);
            };
            if now >= ts(expires) || attempts >= max_wrong {
                return Ok(PhoneCodeCheck::Missing);
            }
            if crate::store::same_digest(&stored, &hash) {
                // Used up, but kept for its `sent_at` (the gap between texts).
                c.execute(
                    "UPDATE phone_codes SET expires_at = ? WHERE tenant_id = ? AND phone = ?",
                    params![ms(now), tenant.to_string(), phone],
                )
                .map_err(db)?;
                return Ok(PhoneCodeCheck::Matched);
            }
            c.execute(
                "UPDATE phone_codes SET attempts = attempts + 1 WHERE tenant_id = ? AND phone = ?",
                [tenant.to_string(), phone],
            )
            .map_err(db)?;
            Ok(PhoneCodeCheck::Wrong)
        })
        .await
    }
}
