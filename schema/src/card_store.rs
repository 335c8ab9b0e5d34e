//! Identity types, card products and claims (SPEC §3–§4): the tenant's kinds of people
//! with how each proves who they are, the cards they may claim, the platform operator's
//! review of each card, and claiming, which verifies a person and activates their card.

use async_trait::async_trait;
use jiff::Timestamp;

use crate::error::StoreResult;
use crate::ids::{CardClaimId, CardId, IdentityTypeId, TenantId, UserId};
use crate::model::{
    Audit, Card, CardClaim, CardHolder, Cover, IdentityType, NewToken, NewUser, Page, PageReq, User,
};

/// How a claim finds the person among those the tenant imported.
#[derive(Clone, Debug)]
pub enum Claimant {
    /// The imported phone.
    Phone(String),
    /// The imported name and ID number (its keyed hash).
    NameId { name: String, id_hash: [u8; 32] },
    /// The number (an external endpoint named it).
    Number(String),
}

/// The operator's decision on a card.
#[derive(Clone, Debug)]
pub enum Review {
    /// Approve the card as it was at revision `seen`: `card_changed` if it changed since.
    Approve {
        seen: i64,
        note: Option<String>,
    },
    Reject {
        reason: String,
    },
}

/// A claim to write: the person (found, or `new` to create for open registration), the
/// claim, the card's new phone token, the claim ticket it spends, if any, and its outbox
/// event (`card.activated`).
#[derive(Clone, Debug)]
pub struct ClaimWrite {
    pub claim: CardClaim,
    pub new_user: Option<NewUser>,
    pub token: NewToken,
    pub ticket: Option<[u8; 32]>,
    pub event: crate::wallet::OutboxEvent,
}

/// What checking a texted phone code found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhoneCodeCheck {
    /// It matched; it is used up.
    Matched,
    /// No code was sent to this phone, it expired, or too many wrong tries used it up.
    Missing,
    /// Wrong; it may be tried again.
    Wrong,
}

#[async_trait]
pub trait CardStore: Send + Sync + 'static {
    /// `identity_type_name_taken` when another type of the tenant has the name.
    async fn create_identity_type(
        &self,
        tenant: TenantId,
        t: IdentityType,
        audit: Audit,
    ) -> StoreResult<()>;
    async fn get_identity_type(
        &self,
        tenant: TenantId,
        id: IdentityTypeId,
    ) -> StoreResult<IdentityType>;
    /// By name.
    async fn list_identity_types(&self, tenant: TenantId) -> StoreResult<Vec<IdentityType>>;
    /// A new category, method, endpoint or secret version (the name stays).
    async fn update_identity_type(
        &self,
        tenant: TenantId,
        t: IdentityType,
        audit: Audit,
    ) -> StoreResult<()>;
    /// `identity_in_use` while users hold it or a card names it.
    async fn delete_identity_type(
        &self,
        tenant: TenantId,
        id: IdentityTypeId,
        audit: Audit,
    ) -> StoreResult<()>;

    /// The card's identity types must be the tenant's (`InvalidReference`).
    async fn create_card(&self, tenant: TenantId, card: Card, audit: Audit) -> StoreResult<()>;
    async fn get_card(&self, tenant: TenantId, id: CardId) -> StoreResult<Card>;
    /// Newest first.
    async fn list_cards(&self, tenant: TenantId) -> StoreResult<Vec<Card>>;
    /// Writes the card as given (the caller has put it back to review and counted the
    /// revision).
    async fn update_card(&self, tenant: TenantId, card: Card, audit: Audit) -> StoreResult<()>;
    /// A new cover; the card goes back to review, one revision on.
    async fn set_cover(
        &self,
        tenant: TenantId,
        id: CardId,
        cover: Cover,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<Card>;
    /// A cover by its SHA-256.
    async fn get_cover(&self, sha256: [u8; 32]) -> StoreResult<Cover>;
    /// Every tenant's cards waiting for review, oldest change first.
    async fn pending_cards(&self, limit: usize) -> StoreResult<Vec<Card>>;
    /// The operator decides on a card waiting for review: `not_pending_review` if it is
    /// not, `cover_missing` to approve one without a cover, `card_changed` when it changed
    /// since the operator saw it. The audit entry's tenant is filled in here.
    async fn review_card(
        &self,
        id: CardId,
        review: Review,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<Card>;

    /// The active members of `identity` (a type's name) whom `who` names.
    async fn find_claimants(
        &self,
        tenant: TenantId,
        identity: String,
        who: Claimant,
    ) -> StoreResult<Vec<User>>;
    /// Records a claim, creating the person first when `new_user` is given: the card is
    /// theirs (a second claim of it keeps the first's id and moves it to the new phone:
    /// every earlier cardholder token of theirs is revoked), the ticket is spent (`Gone`
    /// if it is used or expired), the token stored, and the event and audit written. Answers the
    /// claim as stored and whether it is the person's first of this card.
    async fn claim_card(
        &self,
        tenant: TenantId,
        write: ClaimWrite,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<(CardClaim, bool)>;
    /// Who holds `card`, in the order they first claimed it.
    async fn card_holders(
        &self,
        tenant: TenantId,
        card: CardId,
        page: PageReq<CardClaimId>,
    ) -> StoreResult<Page<CardHolder, CardClaimId>>;
    /// The cards `user` holds, with their claims, newest first.
    async fn user_cards(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> StoreResult<Vec<(CardClaim, Card)>>;

    /// Stores a claim ticket (its SHA-256): the tenant's channel vouches for `account`.
    async fn create_claim_ticket(
        &self,
        tenant: TenantId,
        hash: [u8; 32],
        account: String,
        followed: bool,
        expires_at: Timestamp,
        audit: Audit,
    ) -> StoreResult<()>;
    /// A ticket not yet used nor expired: its account and whether it follows.
    async fn claim_ticket(
        &self,
        tenant: TenantId,
        hash: [u8; 32],
        now: Timestamp,
    ) -> StoreResult<Option<(String, bool)>>;

    /// Stores a code texted to `phone` (its keyed hash), replacing an earlier one, unless
    /// one was sent less than `gap` ago (`phone_code_too_soon`).
    async fn put_phone_code(
        &self,
        tenant: TenantId,
        phone: String,
        hash: [u8; 32],
        now: Timestamp,
        expires_at: Timestamp,
        gap: jiff::SignedDuration,
    ) -> StoreResult<()>;
    /// Checks a code against the one texted to `phone`: a match uses it up; a wrong one
    /// counts, and the `max_wrong`th uses it up.
    async fn check_phone_code(
        &self,
        tenant: TenantId,
        phone: String,
        hash: [u8; 32],
        now: Timestamp,
        max_wrong: i32,
    ) -> StoreResult<PhoneCodeCheck>;
}
