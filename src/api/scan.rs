//! What the shuttle's phones and the maintenance app's scanners share: the one-time link
//! that binds a phone or scanner to what it verifies (a bus, a device) and gives it a
//! `verifier` token, reading a person from their personal code, and the identities a
//! route or device type is for.

use actix_web::HttpRequest;
use jiff::{SignedDuration, Timestamp};
use onecard_actors::domain::code::{self, CodeError, VerifiedCode};
use onecard_actors::domain::directory as rules;
use onecard_actors::domain::validate::Checks;
use onecard_schema::ids::{AuditId, TenantId};
use onecard_schema::model::{Actor, Audit, NewToken, TokenKind, User, UserStatus};
use onecard_schema::StoreError;
use serde::Deserialize;
use utoipa::ToSchema;

use super::qr_svg;
use crate::auth::{hash_token, new_token, request_id};
use crate::problem::ApiError;
use crate::state::AppState;

/// Identities one route or device type may name.
pub const IDENTITIES_MAX: usize = 32;

/// How long a binding link stays usable: long enough to hand a phone over.
pub const BINDING_TTL: SignedDuration = SignedDuration::from_hours(24);

/// A fresh binding link: its secret (shown once), the hash the store keeps, the address
/// the phone opens (`page` with the secret as its fragment) and that address as a QR code.
pub struct Link {
    pub token: String,
    pub hash: [u8; 32],
    pub url: String,
    pub svg: String,
    pub expires_at: Timestamp,
}

impl Link {
    /// A link to `page` (a path with any query) at `base`, the tenant's address
    /// (`AppState::public_url_of`).
    pub fn new(state: &AppState, base: &str, page: &str) -> Result<Self, ApiError> {
        let token = new_token();
        let url = format!("{base}{page}#{token}");
        Ok(Link {
            hash: hash_token(&token),
            svg: qr_svg(&url, 320)?,
            url,
            token,
            expires_at: state.clock.now() + BINDING_TTL,
        })
    }
}

/// What opening a link needs: the secret's hash, a fresh verifier token (the secret to
/// answer, the record to store: the store fills in its tenant and subject) and the audit
/// entry (`action` on `target_type`; the store fills in the tenant and target).
pub struct Opening {
    pub hash: [u8; 32],
    pub token: String,
    pub stored: NewToken,
    pub audit: Audit,
}

impl Opening {
    /// `None` for a secret no link could have (404, as an unknown one).
    pub fn of(
        state: &AppState,
        req: &HttpRequest,
        secret: &str,
        action: &'static str,
        target_type: &'static str,
    ) -> Option<Self> {
        if secret.is_empty() || secret.len() > 128 {
            return None;
        }
        let now = state.clock.now();
        let token = new_token();
        Some(Opening {
            hash: hash_token(secret),
            stored: NewToken {
                hash: hash_token(&token),
                kind: TokenKind::Verifier,
                tenant_id: None,
                subject_id: None,
                created_at: now,
            },
            token,
            audit: Audit {
                id: AuditId::new(),
                tenant_id: None,
                actor: Actor::Link,
                action,
                target_type,
                target_id: String::new(),
                request_id: request_id(req),
                at: now,
                detail: serde_json::json!({}),
            },
        })
    }
}

/// A store's refusal of a link, as the phone hears it.
pub fn link_refused(e: StoreError) -> ApiError {
    match e {
        StoreError::Gone => ApiError::Gone {
            code: "binding_used_or_expired",
            detail: "this binding link was already used or has expired; ask for a new one".into(),
        },
        other => other.into(),
    }
}

/// `person`, unless their card is not active (suspended or departed): 403
/// `card_inactive`.
pub fn active(person: User) -> Result<User, ApiError> {
    if person.status != UserStatus::Active {
        return Err(ApiError::forbidden(
            "card_inactive",
            "this card is not active: ask the card office",
        ));
    }
    Ok(person)
}

/// The active member `user` of `tenant` (a cardholder acting for themselves).
pub async fn active_member(
    state: &AppState,
    tenant: TenantId,
    user: onecard_schema::ids::UserId,
) -> Result<User, ApiError> {
    active(state.store.get_user(tenant, user).await?)
}

/// What a verifier token's subject is, when it is the kind of thing the route verifies
/// (`found`: the store's lookup of it); 403 for a verifier of something else.
pub fn verifier_of<T>(found: onecard_schema::StoreResult<T>, what: &str) -> Result<T, ApiError> {
    match found {
        Ok(t) => Ok(t),
        Err(StoreError::NotFound) => Err(ApiError::forbidden(
            "forbidden",
            format!("this token verifies something other than {what}"),
        )),
        Err(e) => Err(e.into()),
    }
}

fn code_invalid() -> ApiError {
    ApiError::refused(
        "personal_code_invalid",
        "this is not a personal code of this organisation",
    )
}

/// The active member of `tenant` whose personal code `code` is, with the code's
/// single-use key. 422 `personal_code_invalid` (not a personal code, or another
/// organisation's), 409 `personal_code_expired` (older than 2 minutes: a screenshot), 403
/// `card_inactive`.
pub async fn person_of_code(
    state: &AppState,
    tenant: TenantId,
    code: &str,
) -> Result<(User, Vec<u8>), ApiError> {
    let VerifiedCode { user, nonce, .. } =
        match code::verify_personal(&state.keys, code.trim(), state.clock.now()) {
            Ok(v) => v,
            Err(CodeError::Invalid) => return Err(code_invalid()),
            Err(CodeError::Expired(_)) => {
                return Err(ApiError::conflict(
                    "personal_code_expired",
                    "this code has expired: ask them to refresh it (a screenshot will not do)",
                ))
            }
        };
    let person = match state.store.get_user(tenant, user).await {
        Ok(u) => u,
        Err(StoreError::NotFound) => return Err(code_invalid()),
        Err(e) => return Err(e.into()),
    };
    Ok((active(person)?, nonce))
}

/// Whether `person` is one of `identities` (everyone, when there are none).
pub fn admits(identities: &[String], person: &User) -> bool {
    identities.is_empty()
        || person
            .identity
            .as_ref()
            .is_some_and(|i| identities.contains(i))
}

/// Each item once (identities, identity type ids), in the order given.
pub fn distinct<T: Eq + std::hash::Hash + Clone>(items: Vec<T>) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

/// Checks the identities a route or device type is for.
pub fn check_identities(c: &mut Checks, identities: &[String]) {
    if identities.len() > IDENTITIES_MAX {
        c.fail(
            "identities",
            "max_items",
            format!("at most {IDENTITIES_MAX}"),
        );
    }
    for (i, identity) in identities.iter().enumerate() {
        rules::check_identity(c, &format!("identities[{i}]"), identity);
    }
}

/// The secret of a binding link, as the phone or scanner opening it sends it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindVerifier {
    pub binding_token: String,
}
