//! Payment codes: short-lived, signed, single-use. A code carries the cardholder, when
//! it was issued and a random nonce, and a MAC from a per-card key; the till's server
//! verifies it without any lookup. Accepted for `CODE_TTL`; screens refresh every minute.

use base64::Engine;
use jiff::{SignedDuration, Timestamp};
use onecard_schema::ids::UserId;
use rand::RngCore;

use crate::keys::Keys;

pub const CODE_TTL: SignedDuration = SignedDuration::from_secs(120);
/// Clock skew tolerated between the node that issued and the node that verifies.
pub const CODE_SKEW: SignedDuration = SignedDuration::from_secs(5);
/// How long the store keeps a used code's nonce: well past the longest a code is accepted
/// (`CODE_TTL` and `CODE_SKEW`), so that even a node whose clock is minutes off finds every
/// nonce it could still accept. Older ones are purged.
pub const USED_CODE_KEEP: SignedDuration = SignedDuration::from_secs(600);
/// Codes issued now. Version 1 (the same layout) is still accepted: its used-code key is
/// the bare nonce, as it was stored when those codes were issued.
const VERSION: u8 = 2;
const VERSION_BARE_NONCE: u8 = 1;
/// A personal code (SPEC §13: a rider shows it to a shuttle's phone): the layout of
/// version 2, but this first byte. The MAC covers it, so a personal code can never be
/// presented as a payment code, nor a payment code as a personal one.
const PERSONAL: u8 = 0x50;
const NONCE_BYTES: usize = 12;
const MAC_BYTES: usize = 16;
const BODY_BYTES: usize = 1 + 16 + 8 + NONCE_BYTES;
/// Longest code string accepted before decoding.
pub const CODE_CHARS_MAX: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCode {
    pub user: UserId,
    pub issued_at: Timestamp,
    /// What makes the code single-use: the key the store keeps for a used code. For
    /// version 2 it is the issue time (big-endian seconds) followed by the random nonce,
    /// so used codes are written in time order at the end of the store's index instead of
    /// at a random page of it.
    pub nonce: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeError {
    /// Not a code of ours (or tampered with): nobody to attribute it to.
    Invalid,
    /// A genuine code presented too late: a replay (screenshot), counted against its user.
    Expired(VerifiedCode),
}

/// Issues a payment code for the user; returns it and when it stops being accepted.
pub fn issue(keys: &Keys, user: UserId, now: Timestamp) -> (String, Timestamp) {
    issue_as(VERSION, keys, user, now)
}

/// Issues a personal code for the user: it identifies them (to a shuttle's phone) and
/// cannot pay. The same lifetime and single use as a payment code.
pub fn issue_personal(keys: &Keys, user: UserId, now: Timestamp) -> (String, Timestamp) {
    issue_as(PERSONAL, keys, user, now)
}

fn issue_as(version: u8, keys: &Keys, user: UserId, now: Timestamp) -> (String, Timestamp) {
    let mut body = Vec::with_capacity(BODY_BYTES + MAC_BYTES);
    body.push(version);
    body.extend_from_slice(user.0.as_bytes());
    body.extend_from_slice(&now.as_second().to_be_bytes());
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rng().fill_bytes(&mut nonce);
    body.extend_from_slice(&nonce);
    let mac = keys.code_mac(user, &body);
    body.extend_from_slice(&mac[..MAC_BYTES]);
    let issued = Timestamp::from_second(now.as_second()).unwrap_or(now);
    (
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body),
        issued + CODE_TTL,
    )
}

/// Verifies a payment code.
pub fn verify(keys: &Keys, code: &str, now: Timestamp) -> Result<VerifiedCode, CodeError> {
    verify_as(&[VERSION, VERSION_BARE_NONCE], keys, code, now)
}

/// Verifies a personal code.
pub fn verify_personal(keys: &Keys, code: &str, now: Timestamp) -> Result<VerifiedCode, CodeError> {
    verify_as(&[PERSONAL], keys, code, now)
}

fn verify_as(
    versions: &[u8],
    keys: &Keys,
    code: &str,
    now: Timestamp,
) -> Result<VerifiedCode, CodeError> {
    if code.len() > CODE_CHARS_MAX {
        return Err(CodeError::Invalid);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(code)
        .map_err(|_| CodeError::Invalid)?;
    if bytes.len() != BODY_BYTES + MAC_BYTES || !versions.contains(&bytes[0]) {
        return Err(CodeError::Invalid);
    }
    let (body, mac) = bytes.split_at(BODY_BYTES);
    let user = UserId(uuid::Uuid::from_slice(&body[1..17]).map_err(|_| CodeError::Invalid)?);
    if !keys.code_mac_matches(user, body, mac) {
        return Err(CodeError::Invalid);
    }
    let mut secs = [0u8; 8];
    secs.copy_from_slice(&body[17..25]);
    let issued_at =
        Timestamp::from_second(i64::from_be_bytes(secs)).map_err(|_| CodeError::Invalid)?;
    let verified = VerifiedCode {
        user,
        issued_at,
        nonce: if body[0] == VERSION_BARE_NONCE {
            body[25..].to_vec()
        } else {
            body[17..].to_vec()
        },
    };
    if now > issued_at + CODE_TTL || issued_at > now + CODE_SKEW {
        return Err(CodeError::Expired(verified));
    }
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::derive(&[5u8; 32]).unwrap()
    }

    #[test]
    fn a_fresh_code_verifies_to_its_user_with_a_unique_nonce() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let user = UserId::new();
        let (a, expires) = issue(&keys(), user, now);
        let (b, _) = issue(&keys(), user, now);
        assert_eq!(expires, now + CODE_TTL);
        let va = verify(&keys(), &a, now + SignedDuration::from_secs(119)).unwrap();
        let vb = verify(&keys(), &b, now).unwrap();
        assert_eq!(va.user, user);
        assert_ne!(va.nonce, vb.nonce);
        // The used-code key starts with the issue time, so later codes sort later.
        let (c, _) = issue(&keys(), user, now + SignedDuration::from_secs(1));
        let vc = verify(&keys(), &c, now + SignedDuration::from_secs(1)).unwrap();
        assert_eq!(va.nonce.len(), 8 + NONCE_BYTES);
        assert!(va.nonce < vc.nonce && vb.nonce < vc.nonce);
    }

    #[test]
    fn personal_and_payment_codes_are_not_interchangeable() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let user = UserId::new();
        let (personal, expires) = issue_personal(&keys(), user, now);
        let (payment, _) = issue(&keys(), user, now);
        assert_eq!(expires, now + CODE_TTL);
        let v = verify_personal(&keys(), &personal, now).unwrap();
        assert_eq!((v.user, v.nonce.len()), (user, 8 + NONCE_BYTES));
        assert_eq!(verify(&keys(), &personal, now), Err(CodeError::Invalid));
        assert_eq!(
            verify_personal(&keys(), &payment, now),
            Err(CodeError::Invalid)
        );
        // Rewriting a payment code's first byte breaks its MAC.
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&payment)
            .unwrap();
        bytes[0] = PERSONAL;
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(
            verify_personal(&keys(), &forged, now),
            Err(CodeError::Invalid)
        );
        assert!(matches!(
            verify_personal(&keys(), &personal, now + SignedDuration::from_secs(121)),
            Err(CodeError::Expired(_))
        ));
    }

    #[test]
    fn a_version_1_code_keeps_its_bare_nonce_key() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let user = UserId::new();
        let mut body = vec![VERSION_BARE_NONCE];
        body.extend_from_slice(user.0.as_bytes());
        body.extend_from_slice(&now.as_second().to_be_bytes());
        body.extend_from_slice(&[7u8; NONCE_BYTES]);
        let mac = keys().code_mac(user, &body);
        body.extend_from_slice(&mac[..MAC_BYTES]);
        let code = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body);
        let v = verify(&keys(), &code, now).unwrap();
        assert_eq!((v.user, v.nonce), (user, vec![7u8; NONCE_BYTES]));
    }

    #[test]
    fn an_old_code_is_expired_and_still_names_its_user() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let user = UserId::new();
        let (code, _) = issue(&keys(), user, now);
        match verify(&keys(), &code, now + SignedDuration::from_secs(121)) {
            Err(CodeError::Expired(v)) => assert_eq!(v.user, user),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tampered_foreign_and_garbage_codes_are_invalid() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let (code, _) = issue(&keys(), UserId::new(), now);
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&code)
            .unwrap();
        bytes[5] ^= 1; // another user id, same MAC
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(verify(&keys(), &forged, now), Err(CodeError::Invalid));
        let other_server = Keys::derive(&[6u8; 32]).unwrap();
        assert_eq!(verify(&other_server, &code, now), Err(CodeError::Invalid));
        for junk in ["", "abc", "!!!!", &"A".repeat(500)] {
            assert_eq!(verify(&keys(), junk, now), Err(CodeError::Invalid));
        }
    }
}
