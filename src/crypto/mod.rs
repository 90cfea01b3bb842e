//! Key material and secret values: the service's 256-bit key, keys derived from it for each
//! purpose, and [`Secret`], a string that never prints and is wiped when dropped.

mod secret;
mod vault;

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use secret::Secret;
pub use vault::{Aad, Vault, VaultError};

/// A 256-bit key (`POBLYSH_CRYPTO_KEY`): seals tokens and derives the other keys.
#[derive(Clone)]
pub struct CryptoKey {
    bytes: Zeroizing<[u8; 32]>,
}

impl CryptoKey {
    /// Parses a standard base64 encoding of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| "must be standard base64".to_string())?,
        );
        let bytes: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| format!("must decode to 32 bytes, got {}", decoded.len()))?;
        Ok(Self {
            bytes: Zeroizing::new(bytes),
        })
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        Self { bytes }
    }

    /// The key in standard base64, for writing it once to its file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.bytes.as_ref()))
    }

    /// The raw key, for building ciphers inside the crate (the vault). Never log or copy it
    /// into anything that is not wiped on drop.
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// A public fingerprint: the first four bytes of the key's SHA-256, big-endian.
    pub fn key_id(&self) -> u32 {
        let digest = Sha256::digest(self.bytes.as_ref());
        u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
    }

    /// A key for one purpose, so a leak of one derived key exposes nothing else.
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.bytes.as_ref())
            .expect("HMAC accepts keys of any length");
        mac.update(b"poblysh-connectors/");
        mac.update(purpose.as_bytes());
        Zeroizing::new(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for CryptoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CryptoKey(id={:08x})", self.key_id())
    }
}

/// 32 random bytes as URL-safe base64 without padding: operator tokens, states.
pub fn random_token() -> Secret {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

/// Lower-case hex (binding a state hash into an AAD, printing digests).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_base64_and_never_print() {
        let key = CryptoKey::generate();
        let again = CryptoKey::from_base64(&key.to_base64()).expect("valid");
        assert_eq!(key.key_id(), again.key_id());
        assert!(!format!("{key:?}").contains(key.to_base64().as_str()));
    }

    #[test]
    fn wrong_lengths_are_refused() {
        assert_eq!(
            CryptoKey::from_base64("AAAA").unwrap_err(),
            "must decode to 32 bytes, got 3"
        );
        assert!(CryptoKey::from_base64("not base64!").is_err());
    }

    #[test]
    fn derived_keys_differ_by_purpose() {
        let key = CryptoKey::generate();
        assert_ne!(*key.derive("cursor"), *key.derive("other"));
        assert_eq!(*key.derive("cursor"), *key.derive("cursor"));
    }
}
