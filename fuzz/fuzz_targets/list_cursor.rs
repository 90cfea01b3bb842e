//! The list cursor codec (`connectors::http::cursor`): any text, and any bytes presented as a
//! cursor, decode to an error or to exactly the position a cursor this codec issued names; a
//! cursor issued for a position read from the input round-trips, and is refused once one bit
//! changes or under another scope.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use connectors::crypto::CryptoKey;
use connectors::domain::{from_micros, TenantId};
use connectors::http::cursor::{CursorCodec, CursorScope};
use connectors::store::PageKey;
use libfuzzer_sys::fuzz_target;

/// The service key of these runs (32 bytes, standard base64): the seed corpus's cursors were
/// issued under it.
const KEY: &str = "ZnV6ei1zZXJ2aWNlLWtleS0wMTIzNDU2Nzg5YWJjZGU=";

fn codec() -> CursorCodec {
    CursorCodec::new(&CryptoKey::from_base64(KEY).expect("a 32-byte key"))
}

fn scope() -> CursorScope {
    CursorScope::new("signals", fuzzing::TENANT, &[("kind", None)])
}

/// Decodes `cursor`; what decodes must be what this codec issues for that position.
fn decode_checked(codec: &CursorCodec, cursor: &str) {
    if let Ok(key) = codec.decode(&scope(), cursor) {
        assert_eq!(
            codec.encode(&scope(), &key),
            cursor,
            "a cursor not issued here decoded"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let codec = codec();
    if let Ok(text) = std::str::from_utf8(data) {
        decode_checked(&codec, text);
    }
    decode_checked(&codec, &URL_SAFE_NO_PAD.encode(data));
    if data.len() >= 24 {
        let micros = i64::from_be_bytes(data[..8].try_into().expect("8 bytes"));
        let id = uuid::Uuid::from_slice(&data[8..24]).expect("16 bytes");
        if let Some(at) = from_micros(micros) {
            let key = PageKey { at, id };
            let cursor = codec.encode(&scope(), &key);
            assert_eq!(codec.decode(&scope(), &cursor).ok(), Some(key));
            let other = CursorScope::new("signals", TenantId(uuid::Uuid::from_u128(7)), &[]);
            assert!(
                codec.decode(&other, &cursor).is_err(),
                "decoded under another scope"
            );
            let mut bytes = URL_SAFE_NO_PAD.decode(&cursor).expect("base64url");
            let at = usize::from(data[0]) % bytes.len();
            bytes[at] ^= 1 << (data[1] % 8);
            let altered = URL_SAFE_NO_PAD.encode(&bytes);
            assert!(
                codec.decode(&scope(), &altered).is_err(),
                "an altered cursor decoded"
            );
        }
    }
});
