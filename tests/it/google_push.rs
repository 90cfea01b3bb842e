//! Google push notification channels (Drive and Calendar): the channel token, derived for the
//! channel id and the tenant of the URL, proves a message and is never stored; the `sync`
//! handshake is answered and not stored; a change notification naming no channel a connection
//! has open is kept `unmatched` and queues no job. The journeys in `google_drive.rs` and
//! `google_calendar.rs` show a notification for an open channel syncing its connection.

use connectors::connector::derive::derive_secret;
use connectors::crypto::Secret;
use connectors::domain::{EventStatus, TenantId};
use connectors::ingest::inbox;
use reqwest::Method;
use serde_json::Value;

use crate::helpers::{assert_problem, json, stored_event, tenant, webhook_jobs, TestApp};

const SECRET: &str = "google-channel-secret-for-tests";
const CHANNEL: &str = "01234567-89ab-cdef-0123-456789abcdef";
const PROVIDERS: [(&str, &str); 2] = [("google_drive", "update"), ("google_calendar", "exists")];

async fn spawn() -> TestApp {
    TestApp::spawn_with(&[
        ("POBLYSH_GOOGLE_DRIVE_WEBHOOK_SECRET", SECRET),
        ("POBLYSH_GOOGLE_CALENDAR_WEBHOOK_SECRET", SECRET),
    ])
    .await
}

/// The token of [`CHANNEL`] for tenant `t` of `provider`, derived as the service does.
fn token(provider: &str, t: TenantId) -> String {
    derive_secret(
        &Secret::new(SECRET),
        &format!("{provider}-channel"),
        &[&t.to_string(), CHANNEL],
    )
    .expose()
    .to_string()
}

/// Posts a notification shaped as Google sends them: headers only, an empty body.
async fn notify(
    app: &TestApp,
    provider: &str,
    t: TenantId,
    state: &str,
    number: u64,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .anonymous(Method::POST, &format!("/webhooks/{provider}/{t}"))
        .header("X-Goog-Channel-ID", CHANNEL)
        .header("X-Goog-Channel-Expiration", "Wed, 09 Dec 2026 10:00:00 GMT")
        .header("X-Goog-Resource-State", state)
        .header("X-Goog-Message-Number", number.to_string())
        .header("X-Goog-Resource-ID", "ret08u3rv24htgh289g")
        .header(
            "X-Goog-Resource-URI",
            "https://www.googleapis.com/drive/v3/changes?pageToken=42",
        )
        .header("Content-Length", "0");
    if let Some(token) = token {
        request = request.header("X-Goog-Channel-Token", token);
    }
    request.send().await.expect("sent")
}

#[tokio::test]
async fn the_sync_handshake_is_answered_and_stores_nothing() {
    let app = spawn().await;
    let t = tenant();
    for (provider, _) in PROVIDERS {
        app.connection(t, provider).await;
        let response = notify(&app, provider, t, "sync", 1, Some(&token(provider, t))).await;
        assert_eq!(response.status(), 200, "{provider}");
        assert_eq!(response.bytes().await.expect("body").len(), 0);
    }
    assert_eq!(inbox::drain(&app.state).await.expect("drain"), 0);
}

#[tokio::test]
async fn a_change_notification_is_kept_without_its_token_and_its_retry_recognized() {
    let app = spawn().await;
    let t = tenant();
    for (provider, state) in PROVIDERS {
        let connection = app.connection(t, provider).await;
        let connection_id = connection.id.to_string();
        let (status, first) =
            json(notify(&app, provider, t, state, 2, Some(&token(provider, t))).await).await;
        assert_eq!(status, 202, "{first}");
        assert_eq!(first["duplicate"], false);

        // The message is kept, but never its token.
        let stored = stored_event(&app, t, &first).await;
        assert_eq!(stored.event_type.as_deref(), Some(state));
        assert_eq!(
            stored
                .headers
                .get("x-goog-channel-id")
                .and_then(Value::as_str),
            Some(CHANNEL)
        );
        assert!(
            !stored.headers.contains_key("x-goog-channel-token"),
            "{:?}",
            stored.headers
        );

        // Google's retry of the same message is recognized.
        let (_, again) =
            json(notify(&app, provider, t, state, 2, Some(&token(provider, t))).await).await;
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["event_id"], first["event_id"]);

        assert_eq!(inbox::drain(&app.state).await.expect("drain"), 1);
        let stored = stored_event(&app, t, &first).await;
        assert_eq!(
            stored.status,
            EventStatus::Unmatched,
            "{provider}: no connection has this channel open"
        );
        assert!(webhook_jobs(&app, t, &connection_id).await.is_empty());
    }
}

#[tokio::test]
async fn a_notification_for_a_tenant_without_the_connection_is_unmatched_and_syncs_nothing() {
    let app = spawn().await;
    let (owner, other) = (tenant(), tenant());
    let connection = app.connection(owner, "google_drive").await;
    let own = token("google_drive", other);
    let (status, body) =
        json(notify(&app, "google_drive", other, "change", 5, Some(&own)).await).await;
    assert_eq!(status, 202, "{body}");
    inbox::drain(&app.state).await.expect("drain");
    let stored = stored_event(&app, other, &body).await;
    assert_eq!(stored.status, EventStatus::Unmatched);
    assert!(webhook_jobs(&app, owner, &connection.id.to_string())
        .await
        .is_empty());
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_and_nothing_is_stored() {
    let app = spawn().await;
    let t = tenant();
    app.connection(t, "google_calendar").await;
    // A token made for another tenant (or another provider) proves nothing here either.
    let elsewhere = token("google_calendar", tenant());
    let drive = token("google_drive", t);
    for bad in [
        None,
        Some("not-the-channel-token"),
        Some(elsewhere.as_str()),
        Some(drive.as_str()),
    ] {
        for state in ["sync", "exists"] {
            let response = notify(&app, "google_calendar", t, state, 9, bad).await;
            assert_problem(response, 401, "INVALID_SIGNATURE").await;
        }
    }
    // Without a configured token nothing can be verified.
    let unconfigured = TestApp::spawn().await;
    let good = token("google_drive", t);
    let response = notify(&unconfigured, "google_drive", t, "update", 9, Some(&good)).await;
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
    assert_eq!(inbox::drain(&app.state).await.expect("drain"), 0);
    assert_eq!(inbox::drain(&unconfigured.state).await.expect("drain"), 0);
}

#[tokio::test]
async fn a_notification_without_its_message_number_is_a_validation_error() {
    let app = spawn().await;
    let t = tenant();
    let response = app
        .anonymous(Method::POST, &format!("/webhooks/google_drive/{t}"))
        .header("X-Goog-Channel-ID", CHANNEL)
        .header("X-Goog-Channel-Token", token("google_drive", t))
        .header("X-Goog-Resource-State", "update")
        .header("X-Goog-Resource-ID", "ret08u3rv24htgh289g")
        .send()
        .await
        .expect("sent");
    let problem = assert_problem(response, 400, "VALIDATION_FAILED").await;
    assert!(
        problem["details"]["delivery"]
            .as_str()
            .is_some_and(|why| why.contains("X-Goog-Message-Number")
                || why.contains("x-goog-message-number")),
        "{problem}"
    );
    assert_eq!(inbox::drain(&app.state).await.expect("drain"), 0);
}
