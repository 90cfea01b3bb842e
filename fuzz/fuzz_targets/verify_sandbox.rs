//! The sandbox's `v1` signature over `{X-Sandbox-Timestamp}.{body}` with its five-minute replay
//! window: arbitrary deliveries never panic and verify only when signed with the webhook secret
//! at a time inside the window; a delivery signed here is never refused for its signature, and
//! is refused when one bit of its body changes.
#![no_main]

use connectors::connector::WebhookUrl;
use fuzzing::{
    altered, delivery, header, hex, hex_signature_is, hmac, refused_signature, set, verify,
};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "sandbox-webhook-secret-value";

fuzz_target!(|data: &[u8]| {
    let sandbox = fuzzing::connector("sandbox");
    let settings = fuzzing::settings("sandbox", SECRET);
    let input = delivery(data);
    for url in [WebhookUrl::App, WebhookUrl::Tenant(fuzzing::TENANT)] {
        if verify(sandbox, &settings, url, &input.headers, input.body).is_ok() {
            let timestamp = header(&input.headers, "x-sandbox-timestamp").unwrap_or_default();
            let sent: i64 = timestamp
                .trim()
                .parse()
                .expect("a verified timestamp is a number");
            let now = connectors::domain::now().timestamp();
            assert!((now - sent).abs() <= 300, "a stale delivery verified");
            let expected = hmac(SECRET.as_bytes(), &[timestamp.as_bytes(), b".", input.body]);
            let presented = header(&input.headers, "x-sandbox-signature");
            assert!(
                hex_signature_is(presented, "v1=", &expected),
                "a delivery verified without the body's signature"
            );
        }
        let at = fuzzing::now_text();
        let expected = hmac(SECRET.as_bytes(), &[at.as_bytes(), b".", input.body]);
        let mut signed = input.headers.clone();
        set(&mut signed, "x-sandbox-timestamp", &at);
        set(
            &mut signed,
            "x-sandbox-signature",
            &format!("v1={}", hex(&expected)),
        );
        let result = verify(sandbox, &settings, url, &signed, input.body);
        assert!(
            !refused_signature(&result),
            "a signed delivery was refused: {result:?}"
        );
        if let Some(altered) = altered(input.body) {
            let result = verify(sandbox, &settings, url, &signed, &altered);
            assert!(
                refused_signature(&result),
                "an altered body verified: {result:?}"
            );
        }
    }
});
