//! The global-identity half of the PostgreSQL engine. Every change to a group's people —
//! a link, an unlink, a member leaving — first locks the group's row, so they take turns
//! (linking is rare: once per person and tenant); the unique (person, tenant) constraint
//! stays the last guard.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use jiff::Timestamp;

use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::*;
use crate::person_store::{
    identity_mismatch, inactive_record, join, link_audits, link_not_allowed, tenant_already_linked,
    Join, LinkRequest, NewLinkCode, Person, PersonLink, PersonStore,
};
use crate::postgres::{insert_audit, insert_token, pg, PgStore};

async fn load_person<C: GenericClient>(c: &C, id: PersonId) -> StoreResult<Person> {
    let row = c
        .query_opt(
            "SELECT group_id, created_at FROM persons WHERE id = $1",
            &[&id.0],
        )
        .await
        .map_err(pg)?
        .ok_or(StoreError::NotFound)?;
    let links = c
        .query(
            "SELECT l.tenant_id, t.name, l.user_id, u.name, u.number, l.linked_at \
             FROM person_links l JOIN tenants t ON t.id = l.tenant_id \
             JOIN users u ON u.id = l.user_id \
             WHERE l.person_id = $1 ORDER BY l.linked_at, l.tenant_id",
            &[&id.0],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| {
            Ok(PersonLink {
                tenant_id: TenantId(r.try_get(0).map_err(pg)?),
                tenant_name: r.try_get(1).map_err(pg)?,
                user_id: UserId(r.try_get(2).map_err(pg)?),
                name: r.try_get(3).map_err(pg)?,
                number: r.try_get(4).map_err(pg)?,
                linked_at: r.try_get(5).map_err(pg)?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Person {
        id,
        group_id: TenantGroupId(row.try_get(0).map_err(pg)?),
        created_at: row.try_get(1).map_err(pg)?,
        links,
    })
}

async fn tenants_of<C: GenericClient>(c: &C, id: PersonId) -> StoreResult<Vec<uuid::Uuid>> {
    c.query(
        "SELECT tenant_id FROM person_links WHERE person_id = $1",
        &[&id.0],
    )
    .await
    .map_err(pg)?
    .iter()
    .map(|r| r.try_get(0).map_err(pg))
    .collect()
}

async fn insert_link<C: GenericClient>(
    c: &C,
    person: PersonId,
    tenant: TenantId,
    user: UserId,
    at: Timestamp,
) -> StoreResult<()> {
    c.execute(
        "INSERT INTO person_links (user_id, tenant_id, person_id, linked_at) \
         VALUES ($1,$2,$3,$4)",
        &[&user.0, &tenant.0, &person.0, &at],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// Dissolves each of `people` left with fewer than two records.
pub(crate) async fn dissolve_lonely<C: GenericClient>(
    c: &C,
    people: &[uuid::Uuid],
) -> StoreResult<()> {
    c.execute(
        "WITH lonely AS (SELECT p.id FROM persons p WHERE p.id = ANY($1) \
           AND (SELECT COUNT(*) FROM person_links l WHERE l.person_id = p.id) < 2), \
         unlinked AS (DELETE FROM person_links WHERE person_id IN (SELECT id FROM lonely)) \
         DELETE FROM persons WHERE id IN (SELECT id FROM lonely)",
        &[&people],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// A tenant leaves its group (its row locked by the caller): its records leave their
/// people.
pub(crate) async fn take_tenant_out<C: GenericClient>(c: &C, tenant: TenantId) -> StoreResult<()> {
    let people: Vec<uuid::Uuid> = c
        .query(
            "DELETE FROM person_links WHERE tenant_id = $1 RETURNING person_id",
            &[&tenant.0],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| r.try_get(0).map_err(pg))
        .collect::<StoreResult<_>>()?;
    c.execute(
        "DELETE FROM person_link_codes WHERE tenant_id = $1",
        &[&tenant.0],
    )
    .await
    .map_err(pg)?;
    dissolve_lonely(c, &people).await
}

fn not_one_group() -> StoreError {
    link_not_allowed("the two records' tenants are not members of one tenant group")
}

/// The group both tenants are members of (409 `link_not_allowed` otherwise).
async fn same_group<C: GenericClient>(
    c: &C,
    a: TenantId,
    b: TenantId,
) -> StoreResult<TenantGroupId> {
    let groups: Vec<Option<uuid::Uuid>> = c
        .query(
            "SELECT group_id FROM tenants WHERE id = $1 OR id = $2",
            &[&a.0, &b.0],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| r.try_get(0).map_err(pg))
        .collect::<StoreResult<_>>()?;
    match groups.as_slice() {
        [Some(x), Some(y)] if x == y => Ok(TenantGroupId(*x)),
        _ => Err(not_one_group()),
    }
}

#[async_trait]
impl PersonStore for PgStore {
    async fn put_link_code(&self, code: NewLinkCode) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO person_link_codes (hash, user_id, tenant_id, expires_at) \
             VALUES ($1,$2,$3,$4) ON CONFLICT (user_id) DO UPDATE SET hash = excluded.hash, \
             expires_at = excluded.expires_at",
            &[
                &&code.hash[..],
                &code.user_id.0,
                &code.tenant_id.0,
                &code.expires_at,
            ],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn link_person(&self, req: LinkRequest, audit: Audit) -> StoreResult<(Person, bool)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let code = tx
            .query_opt(
                "SELECT tenant_id, user_id FROM person_link_codes \
                 WHERE hash = $1 AND expires_at > $2 FOR UPDATE",
                &[&&req.code_hash[..], &req.at],
            )
            .await
            .map_err(pg)?
            .ok_or(StoreError::Gone)?;
        let code_tenant = TenantId(code.try_get(0).map_err(pg)?);
        let code_user = UserId(code.try_get(1).map_err(pg)?);
        if code_tenant == req.tenant_id {
            return Err(link_not_allowed(
                "the code was made with a card of this same tenant: redeem it with your card \
                 of another member tenant",
            ));
        }
        let group = same_group(&tx, code_tenant, req.tenant_id).await?;
        // Every change to the group's people takes the group's row first: links, unlinks
        // and members leaving take turns, so what is read next stays true.
        tx.execute(
            "SELECT 1 FROM tenant_groups WHERE id = $1 FOR UPDATE",
            &[&group.0],
        )
        .await
        .map_err(pg)?;
        if same_group(&tx, code_tenant, req.tenant_id).await? != group {
            return Err(not_one_group());
        }
        let records = [(code_tenant, code_user), (req.tenant_id, req.user_id)];
        let mut hashes: [Option<Vec<u8>>; 2] = [None, None];
        let mut people = [None, None];
        for (i, (_, user)) in records.iter().enumerate() {
            let row = tx
                .query_opt(
                    "SELECT u.id_hash, l.person_id, u.status FROM users u \
                     LEFT JOIN person_links l ON l.user_id = u.id WHERE u.id = $1",
                    &[&user.0],
                )
                .await
                .map_err(pg)?
                // The code's record was deleted (its code went with it) or the
                // redeemer's own record is gone.
                .ok_or(if i == 0 {
                    StoreError::Gone
                } else {
                    StoreError::NotFound
                })?;
            if row.try_get::<_, String>(2).map_err(pg)? != "active" {
                return Err(inactive_record());
            }
            hashes[i] = row.try_get(0).map_err(pg)?;
            people[i] = row
                .try_get::<_, Option<uuid::Uuid>>(1)
                .map_err(pg)?
                .map(PersonId);
        }
        if let [Some(a), Some(b)] = &hashes {
            if a != b {
                return Err(identity_mismatch());
            }
        }
        let join = join(people);
        let (person, changed) = match join {
            Join::Same(p) => (p, false),
            Join::New => {
                tx.execute(
                    "INSERT INTO persons (id, group_id, created_at) VALUES ($1,$2,$3)",
                    &[&req.new_person.0, &group.0, &req.at],
                )
                .await
                .map_err(pg)?;
                for (tenant, user) in records {
                    insert_link(&tx, req.new_person, tenant, user, req.at).await?;
                }
                (req.new_person, true)
            }
            Join::Add { to, record } => {
                let (tenant, user) = records[record];
                if tenants_of(&tx, to).await?.contains(&tenant.0) {
                    return Err(tenant_already_linked());
                }
                insert_link(&tx, to, tenant, user, req.at).await?;
                (to, true)
            }
            Join::Merge { into, from } => {
                let theirs = tenants_of(&tx, from).await?;
                if tenants_of(&tx, into)
                    .await?
                    .iter()
                    .any(|t| theirs.contains(t))
                {
                    return Err(tenant_already_linked());
                }
                tx.execute(
                    "UPDATE person_links SET person_id = $1 WHERE person_id = $2",
                    &[&into.0, &from.0],
                )
                .await
                .map_err(pg)?;
                tx.execute("DELETE FROM persons WHERE id = $1", &[&from.0])
                    .await
                    .map_err(pg)?;
                (into, true)
            }
        };
        tx.execute(
            "DELETE FROM person_link_codes WHERE hash = $1",
            &[&&req.code_hash[..]],
        )
        .await
        .map_err(pg)?;
        if changed {
            for audit in link_audits(audit, person, (code_tenant, code_user)) {
                insert_audit(&tx, &audit).await?;
            }
        }
        let person = load_person(&tx, person).await?;
        tx.commit().await.map_err(pg)?;
        Ok((person, changed))
    }

    async fn person_of(&self, tenant: TenantId, user: UserId) -> StoreResult<Option<Person>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT person_id FROM person_links WHERE user_id = $1 AND tenant_id = $2",
                &[&user.0, &tenant.0],
            )
            .await
            .map_err(pg)?;
        match row {
            Some(r) => Ok(Some(
                load_person(&c, PersonId(r.try_get(0).map_err(pg)?)).await?,
            )),
            None => Ok(None),
        }
    }

    async fn get_person(&self, group: TenantGroupId, id: PersonId) -> StoreResult<Person> {
        let c = self.client().await?;
        let person = load_person(&c, id).await?;
        if person.group_id != group {
            return Err(StoreError::NotFound);
        }
        Ok(person)
    }

    async fn unlink_person(
        &self,
        group: TenantGroupId,
        id: PersonId,
        tenant: TenantId,
        audit: Audit,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        tx.query_opt(
            "SELECT 1 FROM tenant_groups g JOIN persons p ON p.group_id = g.id \
             WHERE p.id = $1 AND g.id = $2 FOR UPDATE OF g",
            &[&id.0, &group.0],
        )
        .await
        .map_err(pg)?
        .ok_or(StoreError::NotFound)?;
        let gone = tx
            .execute(
                "DELETE FROM person_links WHERE person_id = $1 AND tenant_id = $2",
                &[&id.0, &tenant.0],
            )
            .await
            .map_err(pg)?;
        if gone == 0 {
            return Err(StoreError::NotFound);
        }
        dissolve_lonely(&tx, &[id.0]).await?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn open_linked_session(
        &self,
        id: PersonId,
        tenant: TenantId,
        mut token: NewToken,
        audit: Audit,
    ) -> StoreResult<UserId> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let user: uuid::Uuid = tx
            .query_opt(
                "SELECT l.user_id FROM person_links l JOIN users u ON u.id = l.user_id \
                 WHERE l.person_id = $1 AND l.tenant_id = $2 AND u.status = 'active' \
                 FOR SHARE OF l",
                &[&id.0, &tenant.0],
            )
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound)?
            .try_get(0)
            .map_err(pg)?;
        tx.execute(
            "DELETE FROM tokens WHERE kind = 'cardholder' AND tenant_id = $1 \
             AND subject_id = $2",
            &[&tenant.0, &user],
        )
        .await
        .map_err(pg)?;
        token.tenant_id = Some(tenant);
        token.subject_id = Some(user);
        insert_token(&tx, &token).await?;
        insert_audit(&tx, &audit).await?;
        tx.commit().await.map_err(pg)?;
        Ok(UserId(user))
    }
}
