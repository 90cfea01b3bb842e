//! Slack's `v0` signature over `v0:{X-Slack-Request-Timestamp}:{body}` with its five-minute
//! replay window: arbitrary deliveries never panic and verify only when signed with the signing
//! secret at a time inside the window; a delivery signed here verifies (or is refused for its
//! body, never its signature), and stops verifying when one bit of its body changes.
#![no_main]

use connectors::connector::WebhookUrl;
use fuzzing::{
    altered, delivery, header, hex, hex_signature_is, hmac, refused_signature, set, verify,
};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "slack-signing-secret";

fuzz_target!(|data: &[u8]| {
    let slack = fuzzing::connector("slack");
    let settings = fuzzing::settings("slack", SECRET);
    let input = delivery(data);
    let url = WebhookUrl::App;
    if verify(slack, &settings, url, &input.headers, input.body).is_ok() {
        let timestamp = header(&input.headers, "x-slack-request-timestamp").unwrap_or_default();
        let sent: i64 = timestamp
            .trim()
            .parse()
            .expect("a verified timestamp is a number");
        let now = connectors::domain::now().timestamp();
        assert!((now - sent).abs() <= 300, "a stale delivery verified");
        let expected = hmac(
            SECRET.as_bytes(),
            &[b"v0:", timestamp.as_bytes(), b":", input.body],
        );
        let presented = header(&input.headers, "x-slack-signature");
        assert!(
            hex_signature_is(presented, "v0=", &expected),
            "a delivery verified without the body's signature"
        );
    }
    let at = fuzzing::now_text();
    let expected = hmac(
        SECRET.as_bytes(),
        &[b"v0:", at.as_bytes(), b":", input.body],
    );
    let mut signed = input.headers.clone();
    set(&mut signed, "x-slack-request-timestamp", &at);
    set(
        &mut signed,
        "x-slack-signature",
        &format!("v0={}", hex(&expected)),
    );
    let result = verify(slack, &settings, url, &signed, input.body);
    assert!(
        !refused_signature(&result),
        "a signed delivery was refused: {result:?}"
    );
    if let Some(altered) = altered(input.body) {
        let result = verify(slack, &settings, url, &signed, &altered);
        assert!(
            refused_signature(&result),
            "an altered body verified: {result:?}"
        );
    }
    let _ = slack.webhook_account(&input.headers, input.body);
});
