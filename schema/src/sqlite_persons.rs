//! The global-identity half of the SQLite engine. The single writer makes each check and
//! its link one step.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::*;
use crate::person_store::{
    identity_mismatch, inactive_record, join, link_audits, link_not_allowed, tenant_already_linked,
    Join, LinkRequest, NewLinkCode, Person, PersonLink, PersonStore,
};
use crate::sqlite::{db, insert_audit, insert_token, ms, opt_uuid_col, ts, uuid_col, SqliteStore};

fn load_person(c: &Connection, id: PersonId) -> StoreResult<Person> {
    let (group, created_at) = c
        .prepare_cached("SELECT group_id, created_at FROM persons WHERE id = ?")
        .and_then(|mut st| {
            st.query_row([id.to_string()], |r| {
                Ok((TenantGroupId(uuid_col(r, 0)?), ts(r.get(1)?)))
            })
            .optional()
        })
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
    let links = c
        .prepare_cached(
            "SELECT l.tenant_id, t.name, l.user_id, u.name, u.number, l.linked_at \
             FROM person_links l JOIN tenants t ON t.id = l.tenant_id \
             JOIN users u ON u.id = l.user_id \
             WHERE l.person_id = ? ORDER BY l.linked_at, l.tenant_id",
        )
        .and_then(|mut st| {
            st.query_map([id.to_string()], |r| {
                Ok(PersonLink {
                    tenant_id: TenantId(uuid_col(r, 0)?),
                    tenant_name: r.get(1)?,
                    user_id: UserId(uuid_col(r, 2)?),
                    name: r.get(3)?,
                    number: r.get(4)?,
                    linked_at: ts(r.get(5)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db)?;
    Ok(Person {
        id,
        group_id: group,
        created_at,
        links,
    })
}

fn person_id_of(c: &Connection, user: UserId) -> StoreResult<Option<PersonId>> {
    c.prepare_cached("SELECT person_id FROM person_links WHERE user_id = ?")
        .and_then(|mut st| {
            st.query_row([user.to_string()], |r| uuid_col(r, 0))
                .optional()
        })
        .map(|p| p.map(PersonId))
        .map_err(db)
}

fn tenants_of(c: &Connection, id: PersonId) -> StoreResult<Vec<String>> {
    c.prepare_cached("SELECT tenant_id FROM person_links WHERE person_id = ?")
        .and_then(|mut st| {
            st.query_map([id.to_string()], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(db)
}

fn insert_link(
    c: &Connection,
    person: PersonId,
    tenant: TenantId,
    user: UserId,
    at: jiff::Timestamp,
) -> StoreResult<()> {
    c.execute(
        "INSERT INTO person_links (user_id, tenant_id, person_id, linked_at) VALUES (?,?,?,?)",
        params![
            user.to_string(),
            tenant.to_string(),
            person.to_string(),
            ms(at)
        ],
    )
    .map_err(db)?;
    Ok(())
}

/// Dissolves each of `people` left with fewer than two records.
pub(crate) fn dissolve_lonely(c: &Connection, people: &[PersonId]) -> StoreResult<()> {
    for id in people {
        if tenants_of(c, *id)?.len() < 2 {
            c.execute(
                "DELETE FROM person_links WHERE person_id = ?",
                [id.to_string()],
            )
            .map_err(db)?;
            c.execute("DELETE FROM persons WHERE id = ?", [id.to_string()])
                .map_err(db)?;
        }
    }
    Ok(())
}

/// A tenant leaves its group: its records leave their people.
pub(crate) fn take_tenant_out(c: &Connection, tenant: TenantId) -> StoreResult<()> {
    let people = c
        .prepare("DELETE FROM person_links WHERE tenant_id = ? RETURNING person_id")
        .and_then(|mut st| {
            st.query_map([tenant.to_string()], |r| uuid_col(r, 0).map(PersonId))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db)?;
    c.execute(
        "DELETE FROM person_link_codes WHERE tenant_id = ?",
        [tenant.to_string()],
    )
    .map_err(db)?;
    dissolve_lonely(c, &people)
}

#[async_trait]
impl PersonStore for SqliteStore {
    async fn put_link_code(&self, code: NewLinkCode) -> StoreResult<()> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO person_link_codes (hash, user_id, tenant_id, expires_at) \
                 VALUES (?,?,?,?) ON CONFLICT (user_id) DO UPDATE SET hash = excluded.hash, \
                 expires_at = excluded.expires_at",
                params![
                    &code.hash[..],
                    code.user_id.to_string(),
                    code.tenant_id.to_string(),
                    ms(code.expires_at)
                ],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn link_person(&self, req: LinkRequest, audit: Audit) -> StoreResult<(Person, bool)> {
        self.write(move |c| {
            let (code_tenant, code_user) = c
                .query_row(
                    "SELECT tenant_id, user_id FROM person_link_codes \
                     WHERE hash = ? AND expires_at > ?",
                    params![&req.code_hash[..], ms(req.at)],
                    |r| Ok((TenantId(uuid_col(r, 0)?), UserId(uuid_col(r, 1)?))),
                )
                .optional()
                .map_err(db)?
                .ok_or(StoreError::Gone)?;
            if code_tenant == req.tenant_id {
                return Err(link_not_allowed(
                    "the code was made with a card of this same tenant: redeem it with your \
                     card of another member tenant",
                ));
            }
            let records = [(code_tenant, code_user), (req.tenant_id, req.user_id)];
            let mut groups = [None, None];
            let mut hashes: [Option<Vec<u8>>; 2] = [None, None];
            for (i, (tenant, user)) in records.iter().enumerate() {
                let (group, hash, status) = c
                    .query_row(
                        "SELECT t.group_id, u.id_hash, u.status FROM users u \
                         JOIN tenants t ON t.id = u.tenant_id WHERE u.id = ? AND u.tenant_id = ?",
                        [user.to_string(), tenant.to_string()],
                        |r| {
                            Ok((
                                opt_uuid_col(r, 0)?.map(TenantGroupId),
                                r.get(1)?,
                                r.get::<_, String>(2)?,
                            ))
                        },
                    )
                    .optional()
                    .map_err(db)?
                    // The code's record was deleted (its code went with it) or the
                    // redeemer's own record is gone.
                    .ok_or(if i == 0 {
                        StoreError::Gone
                    } else {
                        StoreError::NotFound
                    })?;
                if status != "active" {
                    return Err(inactive_record());
                }
                groups[i] = group;
                hashes[i] = hash;
            }
            let group = match groups {
                [Some(a), Some(b)] if a == b => a,
                _ => {
                    return Err(link_not_allowed(
                        "the two records' tenants are not members of one tenant group",
                    ))
                }
            };
            if let [Some(a), Some(b)] = &hashes {
                if a != b {
                    return Err(identity_mismatch());
                }
            }
            let people = [person_id_of(c, code_user)?, person_id_of(c, req.user_id)?];
            let (person, changed) = match join(people) {
                Join::Same(p) => (p, false),
                Join::New => {
                    c.execute(
                        "INSERT INTO persons (id, group_id, created_at) VALUES (?,?,?)",
                        params![req.new_person.to_string(), group.to_string(), ms(req.at)],
                    )
                    .map_err(db)?;
                    for (tenant, user) in records {
                        insert_link(c, req.new_person, tenant, user, req.at)?;
                    }
                    (req.new_person, true)
                }
                Join::Add { to, record } => {
                    let (tenant, user) = records[record];
                    if tenants_of(c, to)?.contains(&tenant.to_string()) {
                        return Err(tenant_already_linked());
                    }
                    insert_link(c, to, tenant, user, req.at)?;
                    (to, true)
                }
                Join::Merge { into, from } => {
                    let theirs = tenants_of(c, from)?;
                    if tenants_of(c, into)?.iter().any(|t| theirs.contains(t)) {
                        return Err(tenant_already_linked());
                    }
                    c.execute(
                        "UPDATE person_links SET person_id = ? WHERE person_id = ?",
                        [into.to_string(), from.to_string()],
                    )
                    .map_err(db)?;
                    c.execute("DELETE FROM persons WHERE id = ?", [from.to_string()])
                        .map_err(db)?;
                    (into, true)
                }
            };
            c.execute(
                "DELETE FROM person_link_codes WHERE hash = ?",
                [&req.code_hash[..]],
            )
            .map_err(db)?;
            if changed {
                for audit in link_audits(audit, person, (code_tenant, code_user)) {
                    insert_audit(c, &audit)?;
                }
            }
            Ok((load_person(c, person)?, changed))
        })
        .await
    }

    async fn person_of(&self, tenant: TenantId, user: UserId) -> StoreResult<Option<Person>> {
        self.read(move |c| {
            let id = c
                .query_row(
                    "SELECT person_id FROM person_links WHERE user_id = ? AND tenant_id = ?",
                    [user.to_string(), tenant.to_string()],
                    |r| uuid_col(r, 0),
                )
                .optional()
                .map_err(db)?;
            id.map(|id| load_person(c, PersonId(id))).transpose()
        })
        .await
    }

    async fn get_person(&self, group: TenantGroupId, id: PersonId) -> StoreResult<Person> {
        self.read(move |c| {
            let person = load_person(c, id)?;
            if person.group_id != group {
                return Err(StoreError::NotFound);
            }
            Ok(person)
        })
        .await
    }

    async fn unlink_person(
        &self,
        group: TenantGroupId,
        id: PersonId,
        tenant: TenantId,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            let gone = c
                .execute(
                    "DELETE FROM person_links WHERE person_id = ? AND tenant_id = ? \
                     AND EXISTS (SELECT 1 FROM persons p WHERE p.id = ? AND p.group_id = ?)",
                    [
                        id.to_string(),
                        tenant.to_string(),
                        id.to_string(),
                        group.to_string(),
                    ],
                )
                .map_err(db)?;
            if gone == 0 {
                return Err(StoreError::NotFound);
            }
            dissolve_lonely(c, &[id])?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn open_linked_session(
        &self,
        id: PersonId,
        tenant: TenantId,
        mut token: NewToken,
        audit: Audit,
    ) -> StoreResult<UserId> {
        self.write(move |c| {
            let user = c
                .query_row(
                    "SELECT l.user_id FROM person_links l JOIN users u ON u.id = l.user_id \
                     WHERE l.person_id = ? AND l.tenant_id = ? AND u.status = 'active'",
                    [id.to_string(), tenant.to_string()],
                    |r| uuid_col(r, 0),
                )
                .optional()
                .map_err(db)?
                .ok_or(StoreError::NotFound)?;
            c.execute(
                "DELETE FROM tokens WHERE kind = 'cardholder' AND tenant_id = ? \
                 AND subject_id = ?",
                [tenant.to_string(), user.to_string()],
            )
            .map_err(db)?;
            token.tenant_id = Some(tenant);
            token.subject_id = Some(user);
            insert_token(c, &token)?;
            insert_audit(c, &audit)?;
            Ok(UserId(user))
        })
        .await
    }
}
