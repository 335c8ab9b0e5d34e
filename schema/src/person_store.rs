//! Global identity (SPEC §1): one person across the member tenants of a tenant group. A
//! teacher who works in two schools of a district holds a record (a user, with cards) in
//! each; the person links them by proving both — a one-time link code made with the card
//! of one record, redeemed with the card of the other. A person has at most one record
//! per tenant, and every record of a person is in one group: a tenant that leaves the
//! group takes its records out, and a person left with one record is dissolved.

use async_trait::async_trait;
use jiff::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{StoreError, StoreResult};
use crate::ids::{PersonId, TenantGroupId, TenantId, UserId};
use crate::model::{Audit, NewToken};

/// One record of a person: a user of a member tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct PersonLink {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub user_id: UserId,
    pub name: String,
    pub number: String,
    pub linked_at: Timestamp,
}

/// A person and their records, oldest link first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Person {
    pub id: PersonId,
    pub group_id: TenantGroupId,
    pub created_at: Timestamp,
    pub links: Vec<PersonLink>,
}

/// A link code to be stored (only its hash); it replaces the record's earlier code.
#[derive(Clone, Debug)]
pub struct NewLinkCode {
    pub hash: [u8; 32],
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub expires_at: Timestamp,
}

/// Redeeming a link code with the card of another record.
#[derive(Clone, Debug)]
pub struct LinkRequest {
    pub code_hash: [u8; 32],
    pub tenant_id: TenantId,
    pub user_id: UserId,
    /// The person to create when neither record is linked yet.
    pub new_person: PersonId,
    pub at: Timestamp,
}

/// 409 `link_not_allowed`: the two records cannot be one person's.
pub fn link_not_allowed(detail: &str) -> StoreError {
    StoreError::conflict("link_not_allowed", Some("code"), detail)
}

/// 409 `link_not_allowed`: a suspended or departed record is linked to nobody.
pub fn inactive_record() -> StoreError {
    link_not_allowed("a suspended or departed record cannot be linked")
}

/// 409 `tenant_already_linked`: the person has a record in that tenant already.
pub fn tenant_already_linked() -> StoreError {
    StoreError::conflict(
        "tenant_already_linked",
        Some("code"),
        "these records would give one person two records in one tenant; unlink the other \
         record there first",
    )
}

/// 409 `identity_mismatch`: both records carry an ID-document number, and they differ.
pub fn identity_mismatch() -> StoreError {
    StoreError::conflict(
        "identity_mismatch",
        Some("code"),
        "the two records carry different ID-document numbers: they are not one person",
    )
}

/// How two records' people join: decided from what each is linked to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Join {
    /// Already one person: nothing changes.
    Same(PersonId),
    /// Neither is linked: a new person with both.
    New,
    /// Add the unlinked record to the other's person.
    Add { to: PersonId, record: usize },
    /// Both are linked: the newer person's records move to the older (ids are time
    /// ordered), which must not have a record in any of their tenants.
    Merge { into: PersonId, from: PersonId },
}

/// The join of records `[a, b]`, linked to `people[0]` and `people[1]`.
pub fn join(people: [Option<PersonId>; 2]) -> Join {
    match people {
        [Some(p), Some(q)] if p == q => Join::Same(p),
        [None, None] => Join::New,
        [Some(p), None] => Join::Add { to: p, record: 1 },
        [None, Some(q)] => Join::Add { to: q, record: 0 },
        [Some(p), Some(q)] => Join::Merge {
            into: p.min(q),
            from: p.max(q),
        },
    }
}

#[async_trait]
pub trait PersonStore: Send + Sync + 'static {
    /// Stores a link code for the record, replacing its earlier one.
    async fn put_link_code(&self, code: NewLinkCode) -> StoreResult<()>;

    /// Spends the code (`Gone` if unknown or expired) and links its record with the
    /// redeemer's: the two must be active records in different tenants of one group (409
    /// `link_not_allowed`), agree on the ID-document number when both carry one (409
    /// `identity_mismatch`), and the joined person may hold one record per tenant (409
    /// `tenant_already_linked`). A refusal leaves the code unspent. When anything changed,
    /// `audit` (the redeemer's) is written in each of the two tenants, as each record's
    /// own act, naming the person. Answers the person and whether anything changed.
    async fn link_person(&self, request: LinkRequest, audit: Audit) -> StoreResult<(Person, bool)>;

    /// The person a record belongs to, if any.
    async fn person_of(&self, tenant: TenantId, user: UserId) -> StoreResult<Option<Person>>;

    /// A person of `group` (404 for another group's).
    async fn get_person(&self, group: TenantGroupId, id: PersonId) -> StoreResult<Person>;

    /// Takes the person's record in `tenant` out (404 if it has none there, or the person
    /// is not of `group`); a person left with one record is dissolved.
    async fn unlink_person(
        &self,
        group: TenantGroupId,
        id: PersonId,
        tenant: TenantId,
        audit: Audit,
    ) -> StoreResult<()>;

    /// A cardholder token for the person's record in `tenant`, replacing that record's
    /// earlier tokens (its card moves to this phone, as a claim does). 404 unless the
    /// person has an active record there. The token's subject is that record's user.
    async fn open_linked_session(
        &self,
        id: PersonId,
        tenant: TenantId,
        token: NewToken,
        audit: Audit,
    ) -> StoreResult<UserId>;
}

/// The audits of a link: the redeemer's, and the same act in the code's tenant as its
/// record's.
pub fn link_audits(audit: Audit, person: PersonId, code: (TenantId, UserId)) -> [Audit; 2] {
    let mine = Audit {
        target_id: person.to_string(),
        ..audit
    };
    let theirs = Audit {
        id: crate::ids::AuditId::new(),
        tenant_id: Some(code.0),
        actor: crate::model::Actor::Member(code.1),
        ..mine.clone()
    };
    [mine, theirs]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_records_join_by_what_each_is_linked_to() {
        let (p, q) = (PersonId::new(), PersonId::new());
        assert_eq!(join([Some(p), Some(p)]), Join::Same(p));
        assert_eq!(join([None, None]), Join::New);
        assert_eq!(join([Some(p), None]), Join::Add { to: p, record: 1 });
        assert_eq!(join([None, Some(q)]), Join::Add { to: q, record: 0 });
        // The older person stays, whichever record made the code.
        assert_eq!(join([Some(p), Some(q)]), Join::Merge { into: p, from: q });
        assert_eq!(join([Some(q), Some(p)]), Join::Merge { into: p, from: q });
    }
}
