//! Keys derived from the server's master key. Each purpose gets its own subkey (HKDF
//! with a purpose label), so a key leaked from one use says nothing of another.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The shortest master key accepted, in bytes.
pub const MASTER_KEY_BYTES_MIN: usize = 32;

#[derive(Clone)]
pub struct Keys {
    id_number: [u8; 32],
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
        Ok(Self { id_number })
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
}
