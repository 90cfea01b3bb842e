//! Google push notification channels (Drive and Calendar): the channel token, derived for the
//! channel id and the tenant of the URL, proves a message and is never stored; the `sync`
//! handshake is answered and not stored; a change notification is stored only when the tenant
//! has that channel open with the resource id Google gave it, and refused (`401`, nothing
//! stored) for a channel never opened, closed, or watching another resource. The journeys in
//! `google_drive.rs` and `google_calendar.rs` open channels through a fake Google.

use connectors::connector::derive::derive_secret;
use connectors::crypto::Secret;
use connectors::domain::{
    now, Connection, EventStatus, JobType, NewJob, OpenedSubscription, TenantId,
};
use connectors::ingest::inbox;
use connectors::store::{IfRunning, Lease};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, json, stored_event, tenant, webhook_jobs, TestApp};

const SECRET: &str = "google-channel-secret-for-tests";
const CHANNEL: &str = "01234567-89ab-cdef-0123-456789abcdef";
const PROVIDERS: [(&str, &str); 2] = [("google_drive", "update"), ("google_calendar", "exists")];
/// The resource id Google answered the watch with.
const RESOURCE_ID: &str = "ret08u3rv24htgh289g";

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

/// Records [`CHANNEL`] on [`RESOURCE_ID`] as open for `connection`, as the subscription job
/// does once Google answered the watch.
async fn open_channel(app: &TestApp, connection: &Connection) {
    let store = app.store();
    let at = now();
    store
        .ensure_subscriptions(connection, &["watched".to_string()], at)
        .await
        .expect("pending");
    let queued = NewJob::queued(connection, JobType::Subscription, at);
    store
        .enqueue_sync(&queued, IfRunning::Join)
        .await
        .expect("queued");
    let job = store
        .claim_sync_job("opener", at, at + chrono::Duration::minutes(1))
        .await
        .expect("claim")
        .expect("due");
    let sub = store
        .connection_subscriptions(connection.tenant_id, connection.id)
        .await
        .expect("read")
        .remove(0);
    let opened = OpenedSubscription {
        external_id: CHANNEL.into(),
        expires_at: Some(at + chrono::Duration::days(1)),
        renew_at: Some(at + chrono::Duration::hours(20)),
        state: json!({ "resource_id": RESOURCE_ID })
            .as_object()
            .cloned()
            .expect("object"),
    };
    let lease = Lease {
        job: job.id,
        owner: "opener",
    };
    store
        .record_subscription_opened(lease, sub.id, &opened, at)
        .await
        .expect("recorded");
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
    notify_on(app, provider, t, state, number, token, RESOURCE_ID).await
}

/// [`notify`] for the resource `resource_id`.
async fn notify_on(
    app: &TestApp,
    provider: &str,
    t: TenantId,
    state: &str,
    number: u64,
    token: Option<&str>,
    resource_id: &str,
) -> reqwest::Response {
    let mut request = app
        .anonymous(Method::POST, &format!("/webhooks/{provider}/{t}"))
        .header("X-Goog-Channel-ID", CHANNEL)
        .header("X-Goog-Channel-Expiration", "Wed, 09 Dec 2026 10:00:00 GMT")
        .header("X-Goog-Resource-State", state)
        .header("X-Goog-Message-Number", number.to_string())
        .header("X-Goog-Resource-ID", resource_id)
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
async fn a_change_on_an_open_channel_is_kept_without_its_token_and_syncs_its_connection() {
    let app = spawn().await;
    let t = tenant();
    for (provider, state) in PROVIDERS {
        let connection = app.connection(t, provider).await;
        open_channel(&app, &connection).await;
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
        assert_eq!(stored.status, EventStatus::Processed, "{provider}");
        assert_eq!(webhook_jobs(&app, t, &connection_id).await.len(), 1);
    }
}

#[tokio::test]
async fn a_channel_the_tenant_never_opened_is_refused_and_nothing_is_stored() {
    let app = spawn().await;
    let t = tenant();
    for (provider, state) in PROVIDERS {
        let connection = app.connection(t, provider).await;
        let response = notify(&app, provider, t, state, 2, Some(&token(provider, t))).await;
        let problem = assert_problem(response, 401, "INVALID_SIGNATURE").await;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("does not have open")),
            "{problem}"
        );
        assert!(webhook_jobs(&app, t, &connection.id.to_string())
            .await
            .is_empty());
    }
    assert_eq!(inbox::drain(&app.state).await.expect("drain"), 0);
}

#[tokio::test]
async fn another_tenants_open_channel_is_refused_and_syncs_nothing() {
    let app = spawn().await;
    let (owner, other) = (tenant(), tenant());
    let connection = app.connection(owner, "google_drive").await;
    open_channel(&app, &connection).await;
    app.connection(other, "google_drive").await;
    // The token is the right one for the other tenant's URL, but the channel is the owner's.
    let own = token("google_drive", other);
    let response = notify(&app, "google_drive", other, "change", 5, Some(&own)).await;
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
    assert_eq!(inbox::drain(&app.state).await.expect("drain"), 0);
    assert!(webhook_jobs(&app, owner, &connection.id.to_string())
        .await
        .is_empty());
}

#[tokio::test]
async fn an_open_channel_named_with_another_resource_id_is_refused_and_nothing_is_stored() {
    let app = spawn().await;
    let t = tenant();
    for (provider, state) in PROVIDERS {
        let connection = app.connection(t, provider).await;
        open_channel(&app, &connection).await;
        let good = token(provider, t);
        for resource in ["another-resource", ""] {
            let response = notify_on(&app, provider, t, state, 3, Some(&good), resource).await;
            let expected = if resource.is_empty() {
                // Google always names the resource: a notification without it is malformed.
                (400, "VALIDATION_FAILED")
            } else {
                (401, "INVALID_SIGNATURE")
            };
            assert_problem(response, expected.0, expected.1).await;
        }
    }
    assert_eq!(inbox::drain(&app.state).await.expect("drain"), 0);
}

#[tokio::test]
async fn a_closed_channel_is_refused_and_nothing_is_stored() {
    let app = spawn().await;
    let t = tenant();
    let connection = app.connection(t, "google_calendar").await;
    open_channel(&app, &connection).await;
    let good = token("google_calendar", t);
    let response = notify(&app, "google_calendar", t, "exists", 1, Some(&good)).await;
    assert_eq!(response.status(), 202);

    app.store()
        .close_subscriptions(t, connection.id, now())
        .await
        .expect("closed");

    let response = notify(&app, "google_calendar", t, "exists", 2, Some(&good)).await;
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
    assert_eq!(inbox::drain(&app.state).await.expect("drain"), 1);
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
