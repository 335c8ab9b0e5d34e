//! Keys derived from the server's master key. Each purpose gets its own subkey (HKDF
//! with a purpose label), so a key leaked from one use says nothing of another.

use base64::Engine;
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use onecard_schema::ids::{AppId, UserId};
use sha2::Sha256;

/// The shortest master key accepted, in bytes.
pub const MASTER_KEY_BYTES_MIN: usize = 32;

#[derive(Clone)]
pub struct Keys {
    id_number: [u8; 32],
    code: [u8; 32],
    app: [u8; 32],
    claim: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the master key must be at least {MASTER_KEY_BYTES_MIN} bytes")]
pub struct WeakMasterKey;

impl Keys {
    pub fn derive(master: &[u8]) -> Result<Self, WeakMasterKey> {
        if master.len() < MASTER_KEY_BYTES_MIN {
            return Err(WeakMasterKey);
        }
        let hk = Hkdf::<Sha256>::new(Some(b"onecard"), master);
        let mut id_number = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
        hk.expand(b"id-number v1", &mut id_number)
            .expect("32-byte HKDF output");
        let mut code = [0u8; 32];
        hk.expand(b"payment-code v1", &mut code)
            .expect("32-byte HKDF output");
        let mut app = [0u8; 32];
        hk.expand(b"app-secret v1", &mut app)
            .expect("32-byte HKDF output");
        let mut claim = [0u8; 32];
        hk.expand(b"card-claims v1", &mut claim)
            .expect("32-byte HKDF output");
        Ok(Self {
            id_number,
            code,
            app,
            claim,
        })
    }

    /// A keyed hash of a normalized ID number: it verifies a presented number without
    /// the number being stored, and cannot be brute-forced without the key.
    pub fn id_number_hash(&self, normalized: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.id_number)
            .expect("HMAC takes keys of any length");
        mac.update(normalized.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl Keys {
    /// An app's secret (43 characters, base64url): derived, never stored, so the store
    /// leaks none. A rotation bumps `version`, which changes it and ends the old one.
    pub fn app_secret(&self, app: AppId, version: i32) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.app).expect("any length");
        mac.update(b"app ");
        mac.update(app.0.as_bytes());
        mac.update(&version.to_be_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// The secret an identity type's endpoint checks OneCard's calls with (43 characters,
    /// base64url): derived like an app's, so the store leaks none; `version` rotates it.
    pub fn identity_endpoint_secret(&self, identity_type: uuid::Uuid, version: i32) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.claim).expect("any length");
        mac.update(b"identity-endpoint ");
        mac.update(identity_type.as_bytes());
        mac.update(&version.to_be_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// The secret a tenant's notification channel adapters check OneCard's calls with (43
    /// characters, base64url): derived like an app's; `version` rotates it.
    pub fn notice_channel_secret(&self, tenant: uuid::Uuid, version: i32) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.claim).expect("any length");
        mac.update(b"notice-channel ");
        mac.update(tenant.as_bytes());
        mac.update(&version.to_be_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// A keyed hash of a code texted to `phone`, so a stolen table reveals no live code.
    pub fn phone_code_hash(&self, phone: &str, code: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.claim).expect("any length");
        mac.update(b"phone-code ");
        mac.update(phone.as_bytes());
        mac.update(b" ");
        mac.update(code.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The per-card key: the code key narrowed to one cardholder, so a leaked card key
    /// signs codes for nobody else.
    fn card_key(&self, user: UserId) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.code)
            .expect("HMAC takes keys of any length");
        mac.update(b"card ");
        mac.update(user.0.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The MAC of a payment code's body.
    pub fn code_mac(&self, user: UserId, body: &[u8]) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.card_key(user)).expect("any length");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// Constant-time check of a (truncated) code MAC.
    pub fn code_mac_matches(&self, user: UserId, body: &[u8], tag: &[u8]) -> bool {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.card_key(user)).expect("any length");
        mac.update(body);
        mac.verify_truncated_left(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_master_keys_are_refused() {
        assert!(Keys::derive(&[7u8; 31]).is_err());
        assert!(Keys::derive(&[7u8; 32]).is_ok());
    }

    #[test]
    fn id_hash_depends_on_the_master_key() {
        let a = Keys::derive(&[1u8; 32]).unwrap();
        let b = Keys::derive(&[2u8; 32]).unwrap();
        assert_eq!(a.id_number_hash("X123456"), a.id_number_hash("X123456"));
        assert_ne!(a.id_number_hash("X123456"), b.id_number_hash("X123456"));
        assert_ne!(a.id_number_hash("X123456"), a.id_number_hash("X123457"));
    }

    #[test]
    fn an_app_secret_is_stable_and_changes_with_the_app_the_version_and_the_master_key() {
        let a = Keys::derive(&[1u8; 32]).unwrap();
        let b = Keys::derive(&[2u8; 32]).unwrap();
        let (x, y) = (AppId::new(), AppId::new());
        assert_eq!(a.app_secret(x, 1), a.app_secret(x, 1));
        assert_eq!(a.app_secret(x, 1).len(), 43);
        assert_ne!(a.app_secret(x, 1), a.app_secret(x, 2));
        assert_ne!(a.app_secret(x, 1), a.app_secret(y, 1));
        assert_ne!(a.app_secret(x, 1), b.app_secret(x, 1));
    }
}
