//! Gmail's Pub/Sub push: `Authorization: Bearer <OIDC token>`, RS256 with a key of the
//! configured JWKS, then the push body. Offline: the key set is served by a listener inside
//! this process from the committed test key (`tests/keys/jwt-test-rsa-1.pem`, `kid` `k1`).
//! Arbitrary pushes never panic and verify only with a token that key signed; a token signed
//! here is never refused for its signature, and one signed with another key always is.
#![no_main]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::OnceLock;

use connectors::connector::WebhookUrl;
use fuzzing::{delivery, header, refused_signature, set, verify};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use libfuzzer_sys::fuzz_target;

const KEY: &str = include_str!("../../tests/keys/jwt-test-rsa-1.pem");
const PUBLIC_KEY: &str = include_str!("../../tests/keys/jwt-test-rsa-1.pub.pem");
const OTHER_KEY: &str = include_str!("../../tests/keys/jwt-test-rsa-2.pem");
const AUDIENCE: &str = "https://connectors.example.com/webhooks/gmail";
const SERVICE_ACCOUNT: &str = "gmail-push@example-project.iam.gserviceaccount.com";

/// The URL of a JWKS publishing the test key, served from a thread of this process.
fn jwks_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let key = EncodingKey::from_rsa_pem(KEY.as_bytes()).expect("the test key");
        let mut jwk = serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).expect("a JWK"),
        )
        .expect("JSON");
        jwk["kid"] = "k1".into();
        jwk["use"] = "sig".into();
        let body = serde_json::json!({ "keys": [jwk] }).to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
        let url = format!(
            "http://{}/oauth2/v3/certs",
            listener.local_addr().expect("bound")
        );
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     cache-control: public, max-age=86400\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    })
}

/// A push token as Pub/Sub sends it, valid for a day, signed with `pem`.
fn token(pem: &str) -> String {
    let now = connectors::domain::now().timestamp();
    let claims = serde_json::json!({
        "aud": AUDIENCE, "azp": "113774264463038321964", "email": SERVICE_ACCOUNT,
        "email_verified": true, "exp": now + 86_400, "iat": now,
        "iss": "https://accounts.google.com", "sub": "113774264463038321964",
    });
    let header = Header {
        kid: Some("k1".into()),
        ..Header::new(Algorithm::RS256)
    };
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("a test key");
    jsonwebtoken::encode(&header, &claims, &key).expect("signs")
}

fn tokens() -> &'static (String, String) {
    static TOKENS: OnceLock<(String, String)> = OnceLock::new();
    TOKENS.get_or_init(|| (token(KEY), token(OTHER_KEY)))
}

/// Whether `token`'s RS256 signature is the test key's (claims aside).
fn signed_by_test_key(token: &str) -> bool {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let key = DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).expect("the test key");
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).is_ok()
}

fuzz_target!(|data: &[u8]| {
    let gmail = fuzzing::connector("gmail");
    let mut settings = connectors::connector::ProviderSettings::bare("gmail");
    settings.extra = vec![
        ("PUSH_JWKS_URL", jwks_url().to_string()),
        ("PUSH_AUDIENCE", AUDIENCE.to_string()),
        ("PUSH_SERVICE_ACCOUNT", SERVICE_ACCOUNT.to_string()),
    ];
    let url = WebhookUrl::App;
    let input = delivery(data);
    if verify(gmail, &settings, url, &input.headers, input.body).is_ok() {
        let token = header(&input.headers, "authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .expect("a verified push has a bearer token");
        assert!(
            signed_by_test_key(token),
            "a push verified without the key's signature"
        );
    }
    let (good, forged) = tokens();
    let mut signed = input.headers.clone();
    set(&mut signed, "authorization", &format!("Bearer {good}"));
    let result = verify(gmail, &settings, url, &signed, input.body);
    assert!(
        !refused_signature(&result),
        "a signed push was refused: {result:?}"
    );
    set(&mut signed, "authorization", &format!("Bearer {forged}"));
    let result = verify(gmail, &settings, url, &signed, input.body);
    assert!(
        refused_signature(&result),
        "another key's token verified: {result:?}"
    );
    let _ = gmail.webhook_account(&input.headers, input.body);
});
