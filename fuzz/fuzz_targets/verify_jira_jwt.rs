//! Jira's dynamic webhooks: `Authorization: Bearer <JWT>`, HS256 with the OAuth client secret,
//! the algorithm pinned. Arbitrary deliveries never panic and verify only with a token the
//! client secret signed; a token signed here verifies, and one character more or less in its
//! signature is refused.
#![no_main]

use connectors::connector::WebhookUrl;
use fuzzing::jira::{assert_genuine, settings, CLIENT_ID, CLIENT_SECRET};
use fuzzing::{delivery, hs256_token, refused_signature, set, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let jira = fuzzing::connector("jira");
    let settings = settings();
    let url = WebhookUrl::Tenant(fuzzing::TENANT);
    let input = delivery(data);
    if verify(jira, &settings, url, &input.headers, input.body).is_ok() {
        assert_genuine(&settings, &input.headers, input.body);
    }
    let now = connectors::domain::now().timestamp();
    let claims = serde_json::json!({ "aud": CLIENT_ID, "iat": now, "exp": now + 60 });
    let token = hs256_token(&claims, CLIENT_SECRET.as_bytes());
    let mut signed = input.headers.clone();
    set(&mut signed, "authorization", &format!("Bearer {token}"));
    let result = verify(jira, &settings, url, &signed, input.body);
    assert!(
        !refused_signature(&result),
        "a signed token was refused: {result:?}"
    );
    let truncated = &token[..token.len() - 1];
    set(&mut signed, "authorization", &format!("Bearer {truncated}"));
    let result = verify(jira, &settings, url, &signed, input.body);
    assert!(
        refused_signature(&result),
        "a truncated token verified: {result:?}"
    );
});
