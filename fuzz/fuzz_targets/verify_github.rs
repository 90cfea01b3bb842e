//! GitHub's `X-Hub-Signature-256` on the app URL and on a tenant's URL (whose secret is derived
//! for that tenant): arbitrary deliveries never panic and verify only when the signature is the
//! HMAC of the body under that URL's secret; a delivery signed here verifies, and stops
//! verifying when one bit of its body changes.
#![no_main]

use connectors::connector::WebhookUrl;
use fuzzing::{altered, delivery, hex, hex_signature_is, hmac, refused_signature, set, verify};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "github-webhook-secret";

fuzz_target!(|data: &[u8]| {
    let github = fuzzing::connector("github");
    let settings = fuzzing::settings("github", SECRET);
    let tenant_secret = github
        .tenant_webhook(&settings, fuzzing::TENANT)
        .and_then(|w| w.secret)
        .expect("GitHub derives a secret per tenant");
    let input = delivery(data);
    for (url, secret) in [
        (WebhookUrl::App, SECRET.to_string()),
        (
            WebhookUrl::Tenant(fuzzing::TENANT),
            tenant_secret.expose().to_string(),
        ),
    ] {
        let expected = hmac(secret.as_bytes(), &[input.body]);
        if verify(github, &settings, url, &input.headers, input.body).is_ok() {
            let presented = fuzzing::header(&input.headers, "x-hub-signature-256");
            assert!(
                hex_signature_is(presented, "sha256=", &expected),
                "a delivery verified without the body's signature"
            );
        }
        let mut signed = input.headers.clone();
        set(
            &mut signed,
            "x-hub-signature-256",
            &format!("sha256={}", hex(&expected)),
        );
        let result = verify(github, &settings, url, &signed, input.body);
        assert!(
            !refused_signature(&result),
            "a signed delivery was refused: {result:?}"
        );
        if let Some(altered) = altered(input.body) {
            let result = verify(github, &settings, url, &signed, &altered);
            assert!(
                refused_signature(&result),
                "an altered body verified: {result:?}"
            );
        }
    }
});
