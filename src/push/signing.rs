//! Standard Webhooks signing (<https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>):
//! a secret is `whsec_` and the base64 of its bytes; the signature of a message is
//! `v1,` and the base64 of HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}` keyed
//! with the secret's bytes; several signatures are separated by spaces.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::crypto::{Aad, Secret, Vault, VaultError};
use crate::domain::{EndpointId, TenantId};

/// The prefix of every secret.
pub const PREFIX: &str = "whsec_";
/// Random bytes in a new secret (the spec asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// An endpoint's signing secret.
pub struct SigningSecret(Zeroizing<Vec<u8>>);

impl SigningSecret {
    /// A fresh random secret.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; SECRET_BYTES]);
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Reads `whsec_<base64>`.
    pub fn parse(text: &str) -> Option<Self> {
        let encoded = text.strip_prefix(PREFIX)?;
        STANDARD
            .decode(encoded)
            .ok()
            .map(|b| Self(Zeroizing::new(b)))
    }

    /// The secret as Core stores it: `whsec_<base64>`.
    pub fn reveal(&self) -> Secret {
        Secret::new(format!("{PREFIX}{}", STANDARD.encode(&self.0[..])))
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0[..])
            .expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Seals the secret for its endpoint's row.
    pub fn seal(&self, vault: &Vault, tenant: TenantId, endpoint: EndpointId) -> Vec<u8> {
        vault.seal_str(&self.reveal(), &aad(tenant, endpoint))
    }

    /// Opens a secret sealed by [`SigningSecret::seal`].
    pub fn open(
        vault: &Vault,
        tenant: TenantId,
        endpoint: EndpointId,
        sealed: &[u8],
    ) -> Result<Self, VaultError> {
        let text = vault.open_str(sealed, &aad(tenant, endpoint))?;
        Self::parse(text.expose()).ok_or(VaultError::Malformed)
    }
}

fn aad(tenant: TenantId, endpoint: EndpointId) -> Aad {
    Aad::new(tenant, "push", &endpoint.to_string(), "signing_secret")
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn signature_header(
    secrets: &[SigningSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' tests.
    #[test]
    fn signs_the_reference_example() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_generated_secret_round_trips_through_its_text() {
        let secret = SigningSecret::generate();
        let text = secret.reveal();
        assert!(text.expose().starts_with(PREFIX));
        let again = SigningSecret::parse(text.expose()).expect("parses");
        assert_eq!(again.sign("a", 1, b"b"), secret.sign("a", 1, b"b"));
    }
}
