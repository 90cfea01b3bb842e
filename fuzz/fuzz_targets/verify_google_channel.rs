//! Google Drive's and Calendar's push channels: `X-Goog-Channel-Token` must be the token
//! derived for the channel id and the tenant of the URL. Arbitrary notifications never panic
//! and verify only with that token; the token of the notification's channel is never refused,
//! and the token of another tenant always is.
#![no_main]

use connectors::connector::derive::derive_secret;
use connectors::connector::WebhookUrl;
use connectors::domain::TenantId;
use fuzzing::{delivery, header, refused_signature, set, verify, TENANT};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "google-channel-secret";

fn token(slug: &str, tenant: TenantId, channel: &str) -> String {
    let secret = connectors::crypto::Secret::new(SECRET);
    let purpose = format!("{slug}-channel");
    derive_secret(&secret, &purpose, &[&tenant.to_string(), channel])
        .expose()
        .to_string()
}

fuzz_target!(|data: &[u8]| {
    let input = delivery(data);
    for slug in ["google_drive", "google_calendar"] {
        let google = fuzzing::connector(slug);
        let settings = fuzzing::settings(slug, SECRET);
        for url in [WebhookUrl::App, WebhookUrl::Tenant(TENANT)] {
            if verify(google, &settings, url, &input.headers, input.body).is_ok() {
                assert_eq!(url, WebhookUrl::Tenant(TENANT), "verified on the app URL");
                let channel = header(&input.headers, "x-goog-channel-id").unwrap_or_default();
                assert_eq!(
                    header(&input.headers, "x-goog-channel-token"),
                    Some(token(slug, TENANT, channel).as_str()),
                    "a notification verified without its channel's token"
                );
            }
        }
        let url = WebhookUrl::Tenant(TENANT);
        let mut signed = input.headers.clone();
        let channel = match header(&input.headers, "x-goog-channel-id").filter(|c| !c.is_empty()) {
            Some(channel) => channel.to_string(),
            None => "fuzz-channel".to_string(),
        };
        set(&mut signed, "x-goog-channel-id", &channel);
        set(
            &mut signed,
            "x-goog-channel-token",
            &token(slug, TENANT, &channel),
        );
        let result = verify(google, &settings, url, &signed, input.body);
        assert!(
            !refused_signature(&result),
            "the channel's token was refused: {result:?}"
        );
        let other = TenantId(uuid::Uuid::from_u128(7));
        set(
            &mut signed,
            "x-goog-channel-token",
            &token(slug, other, &channel),
        );
        let result = verify(google, &settings, url, &signed, input.body);
        assert!(
            refused_signature(&result),
            "another tenant's token verified: {result:?}"
        );
        let event = fuzzing::event(slug, &input.headers, input.body, None);
        let _ = google.normalize_webhook(&event);
    }
});
