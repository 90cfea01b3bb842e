//! Secrets derived per subscription from one provider secret (HKDF-SHA256, RFC 5869), so each
//! webhook subscription gets its own secret without storing one: the same provider secret,
//! purpose and identity always give the same secret, and different ones give unrelated secrets.

use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::crypto::Secret;

/// The HKDF salt: fixed and versioned, so a future scheme can change it without colliding.
const SALT: &[u8] = b"poblysh-connectors/derived-secret/v1";
/// Bytes of key material in a derived secret (64 hex characters).
const DERIVED_LEN: usize = 32;

/// The secret for `purpose` (e.g. `"github-webhook"`) and `identity` (e.g. tenant and
/// subscription ids) derived from `provider_secret`: HKDF-SHA256 with the provider secret's
/// bytes as input key material, a fixed salt, and `purpose` and each identity part
/// length-prefixed in `info` (so `["ab", "c"]` and `["a", "bc"]` differ). 64 lower-case hex
/// characters.
pub fn derive_secret(provider_secret: &Secret, purpose: &str, identity: &[&str]) -> Secret {
    let hkdf = Hkdf::<Sha256>::new(Some(SALT), provider_secret.expose().as_bytes());
    let mut okm = Zeroizing::new([0u8; DERIVED_LEN]);
    // Cannot fail: HKDF-SHA256 yields up to 255 * 32 bytes and a constant 32 are asked for.
    hkdf.expand(&info(purpose, identity), okm.as_mut())
        .expect("32 bytes is within HKDF-SHA256's output limit");
    Secret::new(lower_hex(okm.as_ref()))
}

/// Whether `presented` is the secret [`derive_secret`] gives for these inputs. Compares in
/// constant time over SHA-256 digests of both, so neither the content nor the length of the
/// expected secret leaks through timing. Only the exact lower-case hex form matches.
pub fn derived_secret_matches(
    provider_secret: &Secret,
    purpose: &str,
    identity: &[&str],
    presented: &str,
) -> bool {
    let expected = derive_secret(provider_secret, purpose, identity);
    let expected = Sha256::digest(expected.expose().as_bytes());
    let presented = Sha256::digest(presented.as_bytes());
    expected.ct_eq(&presented).into()
}

/// The HKDF `info`: a version tag, then `purpose`, the number of identity parts and each part,
/// every field preceded by its length as 8 big-endian bytes, so no two inputs encode alike.
fn info(purpose: &str, identity: &[&str]) -> Vec<u8> {
    let mut info = Vec::new();
    put(&mut info, b"purpose+identity/v1");
    put(&mut info, purpose.as_bytes());
    // usize is at most 64 bits on every target Rust supports, so this never truncates.
    info.extend_from_slice(&(identity.len() as u64).to_be_bytes());
    for part in identity {
        put(&mut info, part.as_bytes());
    }
    info
}

fn put(info: &mut Vec<u8>, field: &[u8]) {
    info.extend_from_slice(&(field.len() as u64).to_be_bytes());
    info.extend_from_slice(field);
}

fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // Sized up front so the string never reallocates and leaves a copy behind.
    let mut hex = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    use rand::{Rng, RngCore};

    use super::*;

    fn provider() -> Secret {
        Secret::new("provider-secret-0123456789abcdef")
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test vector is hex"))
            .collect()
    }

    #[test]
    fn hkdf_sha256_matches_rfc_5869_test_case_1() {
        let ikm = unhex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
        let salt = unhex("000102030405060708090a0b0c");
        let info = unhex("f0f1f2f3f4f5f6f7f8f9");
        let mut okm = [0u8; 42];
        Hkdf::<Sha256>::new(Some(&salt), &ikm)
            .expand(&info, &mut okm)
            .expect("42 bytes is a valid length");
        assert_eq!(
            lower_hex(&okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn is_deterministic_lower_case_hex_of_32_bytes() {
        let a = derive_secret(&provider(), "github-webhook", &["tenant-1", "sub-1"]);
        let b = derive_secret(&provider(), "github-webhook", &["tenant-1", "sub-1"]);
        assert_eq!(a, b);
        assert_eq!(a.expose().len(), 64);
        assert!(a
            .expose()
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    }

    #[test]
    fn purposes_identities_and_provider_secrets_all_matter() {
        let base = derive_secret(&provider(), "github-webhook", &["tenant-1", "sub-1"]);
        let others = [
            derive_secret(&provider(), "slack-webhook", &["tenant-1", "sub-1"]),
            derive_secret(&provider(), "github-webhook", &["tenant-2", "sub-1"]),
            derive_secret(&provider(), "github-webhook", &["tenant-1", "sub-2"]),
            derive_secret(&provider(), "github-webhook", &["tenant-1"]),
            derive_secret(&provider(), "github-webhook", &["tenant-1", "sub-1", ""]),
            derive_secret(&provider(), "github-webhook", &[]),
            derive_secret(
                &Secret::new("another"),
                "github-webhook",
                &["tenant-1", "sub-1"],
            ),
        ];
        for other in &others {
            assert_ne!(&base, other);
        }
    }

    #[test]
    fn length_prefixes_keep_the_encoding_unambiguous() {
        let p = provider();
        assert_ne!(
            derive_secret(&p, "x", &["ab", "c"]),
            derive_secret(&p, "x", &["a", "bc"])
        );
        // The purpose cannot run into the identity either.
        assert_ne!(
            derive_secret(&p, "xa", &["b"]),
            derive_secret(&p, "x", &["ab"])
        );
        assert_ne!(derive_secret(&p, "x", &[""]), derive_secret(&p, "x", &[]));
        assert_ne!(
            info("x", &["ab", "c"]),
            info("x", &["a", "bc"]),
            "the info bytes themselves differ"
        );
    }

    #[test]
    fn matches_only_the_exact_derived_secret() {
        let p = provider();
        let secret = derive_secret(&p, "github-webhook", &["t", "s"]);
        assert!(derived_secret_matches(
            &p,
            "github-webhook",
            &["t", "s"],
            secret.expose()
        ));
        assert!(!derived_secret_matches(
            &p,
            "github-webhook",
            &["t", "s"],
            ""
        ));
        assert!(!derived_secret_matches(
            &p,
            "github-webhook",
            &["t", "s"],
            &secret.expose().to_ascii_uppercase()
        ));
        assert!(!derived_secret_matches(
            &p,
            "github-webhook",
            &["t", "s"],
            &secret.expose()[..63]
        ));
        assert!(!derived_secret_matches(
            &p,
            "github-webhook",
            &["t", "s"],
            &format!("{}0", secret.expose())
        ));
        assert!(!derived_secret_matches(
            &p,
            "github-webhook",
            &["t", "x"],
            secret.expose()
        ));
    }

    /// A property loop over random inputs: the derived secret always matches, and changing any
    /// one character of it never does.
    #[test]
    fn any_one_character_change_is_refused() {
        let mut rng = rand::thread_rng();
        for _ in 0..200 {
            let mut raw = [0u8; 24];
            rng.fill_bytes(&mut raw);
            let p = Secret::new(lower_hex(&raw));
            let purpose = format!("purpose-{}", rng.gen::<u16>());
            let parts: Vec<String> = (0..rng.gen_range(0..4))
                .map(|_| format!("{:x}", rng.gen::<u64>()))
                .collect();
            let identity: Vec<&str> = parts.iter().map(String::as_str).collect();

            let secret = derive_secret(&p, &purpose, &identity);
            assert!(derived_secret_matches(
                &p,
                &purpose,
                &identity,
                secret.expose()
            ));

            let mut altered: Vec<char> = secret.expose().chars().collect();
            let at = rng.gen_range(0..altered.len());
            let choices: Vec<char> = "0123456789abcdefABCDEFg "
                .chars()
                .filter(|&c| c != altered[at])
                .collect();
            altered[at] = choices[rng.gen_range(0..choices.len())];
            let altered: String = altered.into_iter().collect();
            assert!(!derived_secret_matches(&p, &purpose, &identity, &altered));
        }
    }
}
