//! The vault: seals secrets at rest (OAuth access and refresh tokens, PKCE verifiers) with
//! AES-256-GCM and opens them again.
//!
//! # Layout of a sealed value
//!
//! ```text
//! version (1 byte, = 1) ‖ key id (4 bytes, big-endian) ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)
//! ```
//!
//! * The **version** lets a later format live next to this one in the same column.
//! * The **key id** is [`CryptoKey::key_id`] of the sealing key, so opening picks the right key
//!   at once instead of trying every key, and a rotation job can find values that still use an
//!   old key ([`Vault::needs_reseal`]) without decrypting anything.
//! * The **nonce** is 96 random bits from the operating system, fresh for every seal. Random
//!   nonces are safe for far more values than this service will ever seal under one key
//!   (NIST's bound is 2³² per key), and need no counter state shared between processes.
//!
//! # What a value is bound to
//!
//! Every value is sealed with associated data ([`Aad`]) naming the row and field it belongs to:
//! `tenant id | provider | row id | field` (for connections the row id is the connection id;
//! for OAuth states it is the hex of the state hash). Someone who can write to the database
//! therefore cannot move a sealed token to another tenant's row, or swap a refresh token into
//! the access-token field, and have it open: the tag no longer verifies.
//!
//! The bytes actually authenticated are the five header bytes (version and key id, so they
//! cannot be rewritten either), followed by each of the four parts as a 4-byte big-endian
//! length and its UTF-8 bytes. The lengths keep the encoding unambiguous: provider `a|b` with
//! row `c` is not the same binding as provider `a` with row `b|c`.
//!
//! # Keys
//!
//! `POBLYSH_CRYPTO_KEY` is the current key: it seals, and it opens. The keys listed in
//! `POBLYSH_CRYPTO_PREVIOUS_KEYS` only open, so a key can be rotated without a flag day: start
//! with the new key current and the old one previous, reseal what [`Vault::needs_reseal`]
//! reports, then drop the old key. The ciphers built from the keys are wiped when the vault is
//! dropped, decrypted plaintexts are returned in [`Zeroizing`] buffers or as [`Secret`]s, and
//! neither keys nor plaintexts ever appear in `Debug` output or error messages.

use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{Nonce, Tag};
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use rand::RngCore;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use super::{CryptoKey, Secret};
use crate::domain::TenantId;

/// The only format this code writes and reads.
const VERSION: u8 = 1;
/// Version byte and key id: the part of a sealed value that is read before decrypting.
const HEADER_LEN: usize = 1 + 4;
/// AES-GCM's standard 96-bit nonce.
const NONCE_LEN: usize = 12;
/// AES-GCM's full 128-bit tag (never truncated: shorter tags weaken forgery resistance).
const TAG_LEN: usize = 16;
/// Where the ciphertext starts.
const BODY_START: usize = HEADER_LEN + NONCE_LEN;
/// The shortest well-formed sealed value: an empty plaintext.
const MIN_SEALED_LEN: usize = BODY_START + TAG_LEN;

/// What a sealed value is bound to: the tenant, provider, row and field it is stored in.
///
/// A value opens only with exactly the binding it was sealed with. None of the parts is
/// secret, so `Debug` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aad {
    tenant: TenantId,
    provider: String,
    row: String,
    field: String,
}

impl Aad {
    /// The binding for `field` of row `row` (a connection id, or the hex of an OAuth state
    /// hash) belonging to `tenant` at `provider`.
    pub fn new(tenant: TenantId, provider: &str, row: &str, field: &str) -> Self {
        Self {
            tenant,
            provider: provider.to_owned(),
            row: row.to_owned(),
            field: field.to_owned(),
        }
    }

    /// The bytes GCM authenticates: the sealed value's header, then each part length-prefixed
    /// (see the module documentation for why both).
    fn authenticated_data(&self, header: &[u8]) -> Vec<u8> {
        let tenant = self.tenant.to_string();
        let parts = [
            tenant.as_str(),
            self.provider.as_str(),
            self.row.as_str(),
            self.field.as_str(),
        ];
        let mut data =
            Vec::with_capacity(header.len() + parts.iter().map(|p| 4 + p.len()).sum::<usize>());
        data.extend_from_slice(header);
        for part in parts {
            // Parts are short identifiers; anything that does not fit in a u32 is a bug.
            let len = u32::try_from(part.len()).expect("AAD part longer than 4 GiB");
            data.extend_from_slice(&len.to_be_bytes());
            data.extend_from_slice(part.as_bytes());
        }
        data
    }
}

/// Why a sealed value could not be opened. No variant carries key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Too short to hold a header, a nonce and a tag.
    #[error("sealed value is malformed (too short)")]
    Malformed,
    /// The version byte names a format this build does not know.
    #[error("sealed value has unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// Sealed with a key that is neither the current key nor a previous one.
    #[error("sealed value uses unknown key {0:08x} (not the current key nor in POBLYSH_CRYPTO_PREVIOUS_KEYS)")]
    UnknownKey(u32),
    /// The tag did not verify: the value was tampered with, is bound to another row or field,
    /// or was sealed by a different key that happens to share the key id.
    #[error(
        "sealed value could not be opened (tampered, bound to another row or field, or wrong key)"
    )]
    Decrypt,
    /// Opened fine, but the plaintext is not UTF-8 where a string was expected.
    #[error("opened value is not valid UTF-8")]
    NotUtf8,
}

/// Seals with the current key; opens with the current or any previous key.
///
/// Cloning is cheap (the keys sit behind an [`Arc`]), so one vault can be shared by the whole
/// service.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Keyring>,
}

/// The ciphers, current first. Kept as ready ciphers rather than raw keys so the AES key
/// schedule is computed once; with aes-gcm's `zeroize` feature they are wiped on drop.
struct Keyring {
    keys: Vec<VaultKey>,
}

struct VaultKey {
    id: u32,
    cipher: Aes256Gcm,
}

impl Vault {
    /// A vault that seals with `current` and also opens values sealed with any of `previous`.
    ///
    /// A previous key that is the current key again, or is listed twice, is ignored.
    pub fn new(current: CryptoKey, previous: Vec<CryptoKey>) -> Self {
        let mut accepted: Vec<CryptoKey> = Vec::with_capacity(1 + previous.len());
        for key in std::iter::once(current).chain(previous) {
            // Constant-time compare out of habit: these are keys, even if this runs only at
            // startup.
            let duplicate = accepted
                .iter()
                .any(|seen| bool::from(seen.bytes().ct_eq(key.bytes())));
            if !duplicate {
                accepted.push(key);
            }
        }
        let keys = accepted
            .iter()
            .map(|key| VaultKey {
                id: key.key_id(),
                cipher: Aes256Gcm::new_from_slice(key.bytes())
                    .expect("a CryptoKey is exactly 32 bytes, AES-256's key size"),
            })
            .collect();
        // `accepted` drops here and the CryptoKeys wipe their bytes.
        Self {
            inner: Arc::new(Keyring { keys }),
        }
    }

    /// The key id written into everything this vault seals.
    pub fn current_key_id(&self) -> u32 {
        self.current().id
    }

    /// Seals `plaintext` with the current key, bound to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &Aad) -> Vec<u8> {
        let key = self.current();
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);

        // Reserve everything up front: the plaintext is copied into this buffer and encrypted
        // in place, and a reallocation would leave a plaintext copy behind in freed memory.
        let mut sealed = Vec::with_capacity(MIN_SEALED_LEN + plaintext.len());
        sealed.push(VERSION);
        sealed.extend_from_slice(&key.id.to_be_bytes());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext);

        let data = aad.authenticated_data(&sealed[..HEADER_LEN]);
        let tag = key
            .cipher
            .encrypt_inout_detached(
                &Nonce::<Aes256Gcm>::from(nonce),
                &data,
                (&mut sealed[BODY_START..]).into(),
            )
            // GCM refuses only plaintexts over 64 GiB; tokens are a few hundred bytes.
            .expect("plaintext too long for AES-GCM");
        sealed.extend_from_slice(&tag);
        sealed
    }

    /// Seals a secret string with the current key, bound to `aad`.
    pub fn seal_str(&self, plaintext: &Secret, aad: &Aad) -> Vec<u8> {
        self.seal(plaintext.expose().as_bytes(), aad)
    }

    /// Opens a value sealed by [`Vault::seal`] with the same `aad`, using whichever of this
    /// vault's keys sealed it. The plaintext is wiped when the returned buffer drops.
    pub fn open(&self, sealed: &[u8], aad: &Aad) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let key_id = parse_header(sealed)?;
        let data = aad.authenticated_data(&sealed[..HEADER_LEN]);
        let nonce = Nonce::<Aes256Gcm>::try_from(&sealed[HEADER_LEN..BODY_START])
            .map_err(|_| VaultError::Malformed)?;
        let tag_start = sealed.len() - TAG_LEN;
        let tag =
            Tag::<Aes256Gcm>::try_from(&sealed[tag_start..]).map_err(|_| VaultError::Malformed)?;
        let ciphertext = &sealed[BODY_START..tag_start];

        // Normally one key matches the id. Two different keys sharing a 4-byte id is unlikely
        // (2⁻³²) but possible, so every key with the id gets a try before giving up.
        let mut candidates = self
            .inner
            .keys
            .iter()
            .filter(|key| key.id == key_id)
            .peekable();
        if candidates.peek().is_none() {
            return Err(VaultError::UnknownKey(key_id));
        }
        for key in candidates {
            // Zeroizing from the first byte: decryption happens in this buffer.
            let mut plaintext = Zeroizing::new(ciphertext.to_vec());
            if key
                .cipher
                .decrypt_inout_detached(&nonce, &data, plaintext.as_mut_slice().into(), &tag)
                .is_ok()
            {
                return Ok(plaintext);
            }
        }
        Err(VaultError::Decrypt)
    }

    /// Opens a value sealed by [`Vault::seal_str`] (or [`Vault::seal`] of UTF-8 bytes).
    pub fn open_str(&self, sealed: &[u8], aad: &Aad) -> Result<Secret, VaultError> {
        let mut plaintext = self.open(sealed, aad)?;
        // Move the bytes out instead of copying them, so the only copy ends up in the Secret
        // (which wipes itself) or is wiped right here.
        match String::from_utf8(std::mem::take(&mut *plaintext)) {
            Ok(text) => Ok(Secret::new(text)),
            Err(err) => {
                err.into_bytes().zeroize();
                Err(VaultError::NotUtf8)
            }
        }
    }

    /// True when the value was sealed by a key other than the current one (a rotation
    /// candidate). Reads only the header: nothing is decrypted, so it says nothing about
    /// whether the value would open.
    ///
    /// A value sealed by a key this vault does not have at all is [`VaultError::UnknownKey`],
    /// not `true`: resealing it is impossible until that key is supplied.
    pub fn needs_reseal(&self, sealed: &[u8]) -> Result<bool, VaultError> {
        let key_id = parse_header(sealed)?;
        if key_id == self.current_key_id() {
            Ok(false)
        } else if self.inner.keys.iter().any(|key| key.id == key_id) {
            Ok(true)
        } else {
            Err(VaultError::UnknownKey(key_id))
        }
    }

    fn current(&self) -> &VaultKey {
        // `new` always puts the current key first, so the list is never empty.
        &self.inner.keys[0]
    }
}

/// Checks the version and length, and returns the key id.
fn parse_header(sealed: &[u8]) -> Result<u32, VaultError> {
    // The version is checked before the length so that a future, differently sized format is
    // reported as unsupported rather than as garbage.
    let &version = sealed.first().ok_or(VaultError::Malformed)?;
    if version != VERSION {
        return Err(VaultError::UnsupportedVersion(version));
    }
    if sealed.len() < MIN_SEALED_LEN {
        return Err(VaultError::Malformed);
    }
    Ok(u32::from_be_bytes([
        sealed[1], sealed[2], sealed[3], sealed[4],
    ]))
}

impl fmt::Debug for Vault {
    /// Key ids only: they are public fingerprints, never the keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self
            .inner
            .keys
            .iter()
            .map(|key| format!("{:08x}", key.id))
            .collect();
        f.debug_struct("Vault")
            .field("current", &ids[0])
            .field("previous", &&ids[1..])
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    const TOKEN: &str = "gho_s3cr3t-access-token-value";

    fn tenant() -> TenantId {
        TenantId::from_uuid(Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef))
    }

    fn aad() -> Aad {
        Aad::new(
            tenant(),
            "github",
            "01890a5d-ac96-774b-bcce-b302099a8057",
            "access_token",
        )
    }

    fn vault() -> (Vault, CryptoKey) {
        let key = CryptoKey::generate();
        (Vault::new(key.clone(), Vec::new()), key)
    }

    #[test]
    fn a_sealed_value_opens_to_the_same_plaintext() {
        let (vault, _) = vault();
        let sealed = vault.seal(TOKEN.as_bytes(), &aad());
        assert_eq!(
            vault.open(&sealed, &aad()).unwrap().as_slice(),
            TOKEN.as_bytes()
        );

        let secret = Secret::new(TOKEN);
        let sealed = vault.seal_str(&secret, &aad());
        assert_eq!(vault.open_str(&sealed, &aad()).unwrap(), secret);
    }

    #[test]
    fn an_empty_plaintext_round_trips() {
        let (vault, _) = vault();
        let sealed = vault.seal(b"", &aad());
        assert_eq!(sealed.len(), MIN_SEALED_LEN);
        assert!(vault.open(&sealed, &aad()).unwrap().is_empty());
    }

    #[test]
    fn the_layout_is_version_key_id_nonce_ciphertext_tag() {
        let (vault, key) = vault();
        let sealed = vault.seal(TOKEN.as_bytes(), &aad());
        assert_eq!(sealed[0], 1);
        assert_eq!(
            u32::from_be_bytes(sealed[1..5].try_into().unwrap()),
            key.key_id()
        );
        assert_eq!(vault.current_key_id(), key.key_id());
        assert_eq!(sealed.len(), 1 + 4 + 12 + TOKEN.len() + 16);
        // The plaintext does not appear in the clear.
        assert!(!sealed
            .windows(TOKEN.len())
            .any(|window| window == TOKEN.as_bytes()));
    }

    #[test]
    fn a_value_moved_to_another_row_tenant_provider_or_field_does_not_open() {
        let (vault, _) = vault();
        let sealed = vault.seal(TOKEN.as_bytes(), &aad());
        let row = "01890a5d-ac96-774b-bcce-b302099a8057";
        let elsewhere = [
            Aad::new(
                tenant(),
                "github",
                "01890a5d-ac96-774b-bcce-b302099a8058",
                "access_token",
            ),
            Aad::new(
                TenantId::from_uuid(Uuid::nil()),
                "github",
                row,
                "access_token",
            ),
            Aad::new(tenant(), "gitlab", row, "access_token"),
            Aad::new(tenant(), "github", row, "refresh_token"),
        ];
        for other in &elsewhere {
            assert!(
                matches!(vault.open(&sealed, other), Err(VaultError::Decrypt)),
                "opened under {other:?}"
            );
        }
    }

    #[test]
    fn shifting_text_between_binding_parts_changes_the_binding() {
        let (vault, _) = vault();
        let sealed = vault.seal(TOKEN.as_bytes(), &Aad::new(tenant(), "a|b", "c", "f"));
        let shifted = Aad::new(tenant(), "a", "b|c", "f");
        assert!(matches!(
            vault.open(&sealed, &shifted),
            Err(VaultError::Decrypt)
        ));
    }

    #[test]
    fn flipping_any_single_bit_makes_the_value_fail_to_open() {
        let (vault, _) = vault();
        let sealed = vault.seal(TOKEN.as_bytes(), &aad());
        for byte in 0..sealed.len() {
            for bit in 0..8 {
                let mut tampered = sealed.clone();
                tampered[byte] ^= 1 << bit;
                assert!(
                    vault.open(&tampered, &aad()).is_err(),
                    "bit {bit} of byte {byte}"
                );
            }
        }
    }

    #[test]
    fn a_truncated_value_is_malformed() {
        let (vault, _) = vault();
        let sealed = vault.seal(TOKEN.as_bytes(), &aad());
        for len in 0..MIN_SEALED_LEN {
            assert!(
                matches!(
                    vault.open(&sealed[..len], &aad()),
                    Err(VaultError::Malformed)
                ),
                "length {len}"
            );
            assert!(matches!(
                vault.needs_reseal(&sealed[..len]),
                Err(VaultError::Malformed)
            ));
        }
        // Cut anywhere past the minimum, the tag no longer verifies.
        for len in MIN_SEALED_LEN..sealed.len() {
            assert!(matches!(
                vault.open(&sealed[..len], &aad()),
                Err(VaultError::Decrypt)
            ));
        }
    }

    #[test]
    fn an_unknown_version_is_unsupported() {
        let (vault, _) = vault();
        let mut sealed = vault.seal(TOKEN.as_bytes(), &aad());
        sealed[0] = 2;
        assert!(matches!(
            vault.open(&sealed, &aad()),
            Err(VaultError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            vault.needs_reseal(&sealed),
            Err(VaultError::UnsupportedVersion(2))
        ));
    }

    #[test]
    fn a_value_sealed_with_a_previous_key_opens_after_rotation_and_needs_reseal() {
        let old_key = CryptoKey::generate();
        let new_key = CryptoKey::generate();
        let old_vault = Vault::new(old_key.clone(), Vec::new());
        let sealed_before = old_vault.seal(TOKEN.as_bytes(), &aad());

        let rotated = Vault::new(new_key.clone(), vec![old_key]);
        assert_eq!(rotated.current_key_id(), new_key.key_id());
        assert_eq!(
            rotated.open(&sealed_before, &aad()).unwrap().as_slice(),
            TOKEN.as_bytes()
        );
        assert!(rotated.needs_reseal(&sealed_before).unwrap());

        let resealed = rotated.seal(&rotated.open(&sealed_before, &aad()).unwrap(), &aad());
        assert!(!rotated.needs_reseal(&resealed).unwrap());
        assert_eq!(
            u32::from_be_bytes(resealed[1..5].try_into().unwrap()),
            new_key.key_id()
        );
    }

    #[test]
    fn a_vault_without_the_sealing_key_reports_the_unknown_key_id() {
        let (sealer, key) = vault();
        let sealed = sealer.seal(TOKEN.as_bytes(), &aad());
        let (stranger, _) = vault();
        match stranger.open(&sealed, &aad()) {
            Err(VaultError::UnknownKey(id)) => assert_eq!(id, key.key_id()),
            other => panic!("expected UnknownKey, got {other:?}"),
        }
        assert!(matches!(
            stranger.needs_reseal(&sealed),
            Err(VaultError::UnknownKey(_))
        ));
        let message = VaultError::UnknownKey(0x0000_00ab).to_string();
        assert!(message.contains("000000ab"), "{message}");
    }

    #[test]
    fn rewriting_the_key_id_to_another_known_key_fails_to_decrypt() {
        let sealing = CryptoKey::generate();
        let other = CryptoKey::generate();
        // This vault holds both keys, so pointing the key id at `other` selects a key it has.
        let vault = Vault::new(sealing.clone(), vec![other.clone()]);
        let mut sealed = vault.seal(TOKEN.as_bytes(), &aad());
        sealed[1..5].copy_from_slice(&other.key_id().to_be_bytes());
        // `other` did not seal it, and since the header is authenticated even the sealing key
        // would now reject it.
        assert!(matches!(
            vault.open(&sealed, &aad()),
            Err(VaultError::Decrypt)
        ));
    }

    #[test]
    fn sealing_the_same_plaintext_twice_gives_different_values() {
        let (vault, _) = vault();
        let first = vault.seal(TOKEN.as_bytes(), &aad());
        let second = vault.seal(TOKEN.as_bytes(), &aad());
        assert_ne!(first, second);
        assert_ne!(first[5..17], second[5..17], "nonces must differ");
    }

    #[test]
    fn non_utf8_plaintext_is_refused_as_a_string() {
        let (vault, _) = vault();
        let sealed = vault.seal(&[0xff, 0xfe, 0x00], &aad());
        assert!(matches!(
            vault.open_str(&sealed, &aad()),
            Err(VaultError::NotUtf8)
        ));
    }

    #[test]
    fn a_duplicated_previous_key_is_harmless() {
        let key = CryptoKey::generate();
        let vault = Vault::new(key.clone(), vec![key.clone(), key]);
        let sealed = vault.seal(TOKEN.as_bytes(), &aad());
        assert!(!vault.needs_reseal(&sealed).unwrap());
        assert!(vault.open(&sealed, &aad()).is_ok());
    }

    #[test]
    fn debug_output_never_contains_keys_or_plaintext() {
        let current = CryptoKey::generate();
        let previous = CryptoKey::generate();
        let vault = Vault::new(current.clone(), vec![previous.clone()]);
        let sealed = vault.seal(TOKEN.as_bytes(), &aad());

        let mut printed = vec![format!("{vault:?}"), format!("{vault:#?}")];
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        let mut bad_version = sealed.clone();
        bad_version[0] = 9;
        let stranger = Vault::new(CryptoKey::generate(), Vec::new());
        let non_utf8 = vault.seal(&[0xff], &aad());
        let errors = [
            vault.open(&tampered, &aad()).unwrap_err(),
            vault.open(&sealed[..3], &aad()).unwrap_err(),
            vault.open(&bad_version, &aad()).unwrap_err(),
            stranger.open(&sealed, &aad()).unwrap_err(),
            vault.open_str(&non_utf8, &aad()).unwrap_err(),
        ];
        for err in &errors {
            printed.push(format!("{err:?}"));
            printed.push(err.to_string());
        }

        for key in [&current, &previous] {
            let b64 = key.to_base64();
            let hex: String = key.bytes().iter().map(|b| format!("{b:02x}")).collect();
            let raw = format!("{:?}", key.bytes());
            for text in &printed {
                assert!(!text.contains(b64.as_str()), "{text}");
                assert!(!text.contains(&hex), "{text}");
                assert!(!text.contains(&raw), "{text}");
            }
        }
        for text in &printed {
            assert!(!text.contains(TOKEN), "{text}");
        }
        assert!(printed[0].contains(&format!("{:08x}", current.key_id())));
    }
}
