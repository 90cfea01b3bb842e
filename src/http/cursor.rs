//! Opaque pagination cursors. A cursor carries the sort key of the last row served and a
//! digest of the tenant, resource and filters it was issued for, and is MAC-signed with a key
//! derived from the service key. A tampered, foreign or filter-mismatched cursor is refused.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::error::{ApiError, ErrorCode};
use crate::crypto::CryptoKey;
use crate::domain::{from_micros, to_micros, TenantId};
use crate::store::PageKey;

const VERSION: u8 = 1;
const SCOPE_LEN: usize = 16;
const MAC_LEN: usize = 16;
const BODY_LEN: usize = 1 + SCOPE_LEN + 8 + 16;

/// What a cursor was issued for: resource, tenant and the exact filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CursorScope([u8; SCOPE_LEN]);

impl CursorScope {
    /// The scope of `resource` for `tenant` with `filters` as `(name, canonical value)` pairs.
    pub fn new(resource: &str, tenant: TenantId, filters: &[(&str, Option<String>)]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(resource.as_bytes());
        hasher.update([0]);
        hasher.update(tenant.as_uuid().as_bytes());
        for (name, value) in filters {
            hasher.update(name.as_bytes());
            match value {
                Some(v) => {
                    hasher.update([1]);
                    hasher.update((v.len() as u64).to_be_bytes());
                    hasher.update(v.as_bytes());
                }
                None => hasher.update([0]),
            }
        }
        let digest = hasher.finalize();
        let mut scope = [0u8; SCOPE_LEN];
        scope.copy_from_slice(&digest[..SCOPE_LEN]);
        Self(scope)
    }
}

/// Signs and checks cursors.
#[derive(Clone)]
pub struct CursorCodec {
    key: Arc<Zeroizing<[u8; 32]>>,
}

impl CursorCodec {
    /// A codec keyed from the service key.
    pub fn new(key: &CryptoKey) -> Self {
        Self {
            key: Arc::new(key.derive("pagination-cursor/v1")),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key[..]).expect("HMAC takes any key length")
    }

    /// The cursor that resumes after `key` within `scope`.
    pub fn encode(&self, scope: &CursorScope, key: &PageKey) -> String {
        let mut body = Vec::with_capacity(BODY_LEN + MAC_LEN);
        body.push(VERSION);
        body.extend_from_slice(&scope.0);
        body.extend_from_slice(&to_micros(&key.at).to_be_bytes());
        body.extend_from_slice(key.id.as_bytes());
        let mut mac = self.mac();
        mac.update(&body);
        let tag = mac.finalize().into_bytes();
        body.extend_from_slice(&tag[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(body)
    }

    /// The position a cursor names, if it is genuine and was issued for `scope`.
    pub fn decode(&self, scope: &CursorScope, cursor: &str) -> Result<PageKey, ApiError> {
        let (issued_for, key) = self.open(cursor)?;
        if issued_for != *scope {
            return Err(invalid("issued for another tenant or other filters"));
        }
        Ok(key)
    }

    /// The position a cursor names if it is genuine, whatever it was issued for: for callers
    /// that check the position itself belongs to the caller.
    pub fn decode_unscoped(&self, cursor: &str) -> Result<PageKey, ApiError> {
        self.open(cursor).map(|(_, key)| key)
    }

    fn open(&self, cursor: &str) -> Result<(CursorScope, PageKey), ApiError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| invalid("not a cursor issued by this service"))?;
        if bytes.len() != BODY_LEN + MAC_LEN || bytes[0] != VERSION {
            return Err(invalid("not a cursor issued by this service"));
        }
        let (body, tag) = bytes.split_at(BODY_LEN);
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_truncated_left(tag)
            .map_err(|_| invalid("not a cursor issued by this service"))?;
        let mut scope = [0u8; SCOPE_LEN];
        scope.copy_from_slice(&body[1..1 + SCOPE_LEN]);
        let micros_at = 1 + SCOPE_LEN;
        let micros = i64::from_be_bytes(
            body[micros_at..micros_at + 8]
                .try_into()
                .map_err(|_| invalid("truncated"))?,
        );
        let id = Uuid::from_slice(&body[micros_at + 8..]).map_err(|_| invalid("truncated"))?;
        let at = from_micros(micros).ok_or_else(|| invalid("out of range"))?;
        Ok((CursorScope(scope), PageKey { at, id }))
    }
}

/// `400 INVALID_CURSOR`, saying why.
pub fn invalid(why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidCursor,
        format!("the cursor is not valid: {why}"),
    )
    .with_details(serde_json::json!({ "cursor": why }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PageKey {
        PageKey {
            at: from_micros(1_700_000_000_123_456).expect("valid"),
            id: Uuid::now_v7(),
        }
    }

    #[test]
    fn a_cursor_round_trips_within_its_scope_only() {
        let codec = CursorCodec::new(&CryptoKey::generate());
        let tenant = TenantId(Uuid::new_v4());
        let scope = CursorScope::new("signals", tenant, &[("kind", Some("pr_opened".into()))]);
        let k = key();
        let cursor = codec.encode(&scope, &k);
        assert_eq!(codec.decode(&scope, &cursor).expect("valid"), k);

        let other_filter = CursorScope::new("signals", tenant, &[("kind", None)]);
        assert!(codec.decode(&other_filter, &cursor).is_err());
        let other_tenant = CursorScope::new(
            "signals",
            TenantId(Uuid::new_v4()),
            &[("kind", Some("pr_opened".into()))],
        );
        assert!(codec.decode(&other_tenant, &cursor).is_err());
    }

    #[test]
    fn tampering_and_foreign_keys_are_detected() {
        let codec = CursorCodec::new(&CryptoKey::generate());
        let scope = CursorScope::new("jobs", TenantId(Uuid::new_v4()), &[]);
        let cursor = codec.encode(&scope, &key());
        let mut bytes = URL_SAFE_NO_PAD.decode(&cursor).expect("base64");
        bytes[20] ^= 1;
        assert!(codec
            .decode(&scope, &URL_SAFE_NO_PAD.encode(&bytes))
            .is_err());
        let stranger = CursorCodec::new(&CryptoKey::generate());
        assert!(stranger.decode(&scope, &cursor).is_err());
        assert!(codec.decode(&scope, "garbage!").is_err());
    }

    proptest::proptest! {
        /// Any string decodes to an error or to nothing but a cursor this codec issued: no
        /// arbitrary or altered cursor is accepted, and nothing panics.
        #[test]
        fn arbitrary_and_altered_cursors_are_refused(
            raw in ".{0,200}",
            micros in 0i64..4_000_000_000_000_000,
            flip in proptest::prelude::any::<usize>(),
        ) {
            let codec = CursorCodec::new(&CryptoKey::generate());
            let scope = CursorScope::new("signals", TenantId(Uuid::new_v4()), &[]);
            proptest::prop_assert!(codec.decode(&scope, &raw).is_err());
            let key = PageKey { at: from_micros(micros).expect("in range"), id: Uuid::now_v7() };
            let cursor = codec.encode(&scope, &key);
            proptest::prop_assert_eq!(codec.decode(&scope, &cursor).ok(), Some(key));
            let mut bytes = URL_SAFE_NO_PAD.decode(&cursor).expect("base64");
            let at = flip % bytes.len();
            bytes[at] ^= 0x01;
            proptest::prop_assert!(codec.decode(&scope, &URL_SAFE_NO_PAD.encode(&bytes)).is_err());
        }
    }
}
