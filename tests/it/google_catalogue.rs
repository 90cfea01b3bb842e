//! The catalogue's entries for the three Google providers: each takes webhooks and syncs, and
//! lists the kinds it emits.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{json, TestApp};

#[tokio::test]
async fn the_catalogue_lists_drive_calendar_and_gmail_with_webhooks_and_sync() {
    let app = TestApp::spawn().await;
    let (status, body) = json(
        app.anonymous(Method::GET, "/providers")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let providers = body["providers"].as_array().expect("providers");
    let entry = |slug: &str| -> &Value {
        providers
            .iter()
            .find(|p| p["slug"] == slug)
            .unwrap_or_else(|| panic!("{slug} is listed"))
    };
    for (slug, kinds) in [
        (
            "google_drive",
            json!(["file_created", "file_updated", "file_deleted"]),
        ),
        (
            "google_calendar",
            json!([
                "calendar_event_created",
                "calendar_event_updated",
                "calendar_event_deleted"
            ]),
        ),
        ("gmail", json!(["email_received", "email_sent"])),
    ] {
        let p = entry(slug);
        assert_eq!(p["webhooks"], true, "{p}");
        assert_eq!(p["sync"], true, "{p}");
        assert_eq!(p["auth_type"], "oauth2", "{p}");
        assert_eq!(p["kinds"], kinds, "{p}");
    }
}
