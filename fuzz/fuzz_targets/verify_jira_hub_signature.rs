//! Jira's admin webhooks: `X-Hub-Signature: sha256=<hex>`, the body's HMAC-SHA256 under the
//! secret derived for the tenant of the URL. Arbitrary deliveries never panic and verify only
//! when genuinely signed; a delivery signed here is never refused for its signature, and is
//! refused when one bit of its body changes.
#![no_main]

use connectors::connector::WebhookUrl;
use fuzzing::jira::{assert_genuine, settings, tenant_secret};
use fuzzing::{altered, delivery, hex, hmac, refused_signature, set, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let jira = fuzzing::connector("jira");
    let settings = settings();
    let input = delivery(data);
    for url in [WebhookUrl::App, WebhookUrl::Tenant(fuzzing::TENANT)] {
        if verify(jira, &settings, url, &input.headers, input.body).is_ok() {
            assert_genuine(&settings, &input.headers, input.body);
        }
    }
    let url = WebhookUrl::Tenant(fuzzing::TENANT);
    let expected = hmac(tenant_secret(&settings).expose().as_bytes(), &[input.body]);
    let mut signed = input.headers.clone();
    signed.remove("authorization");
    set(
        &mut signed,
        "x-hub-signature",
        &format!("sha256={}", hex(&expected)),
    );
    let result = verify(jira, &settings, url, &signed, input.body);
    assert!(
        !refused_signature(&result),
        "a signed delivery was refused: {result:?}"
    );
    if let Some(altered) = altered(input.body) {
        let result = verify(jira, &settings, url, &signed, &altered);
        assert!(
            refused_signature(&result),
            "an altered body verified: {result:?}"
        );
    }
});
