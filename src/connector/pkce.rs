//! PKCE (RFC 7636) verifiers and S256 challenges, and single-use states.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::crypto::{random_token, Secret};

/// A fresh 256-bit state, URL-safe.
pub fn new_state() -> Secret {
    random_token()
}

/// The stored form of a state: its SHA-256, so a database leak reveals no usable state.
pub fn state_hash(state: &str) -> Vec<u8> {
    Sha256::digest(state.as_bytes()).to_vec()
}

/// A fresh code verifier: 43 characters from 32 random bytes (RFC 7636 §4.1).
pub fn new_verifier() -> Secret {
    random_token()
}

/// The S256 challenge of a verifier (RFC 7636 §4.2).
pub fn challenge(verifier: &Secret) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.expose().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_s256_challenge_matches_the_rfc_7636_example() {
        // RFC 7636 Appendix B.
        let verifier = Secret::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(
            challenge(&verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifiers_and_states_are_long_and_distinct() {
        let (a, b) = (new_verifier(), new_verifier());
        assert_eq!(a.expose().len(), 43);
        assert_ne!(a, b);
        assert_eq!(state_hash(new_state().expose()).len(), 32);
    }
}
