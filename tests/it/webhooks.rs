//! Webhook ingest: verified on the raw bytes, stored before `202`, deduplicated, normalized by
//! the inbox worker into signals of the right tenant's connection, and never lost.

use connectors::connector::signature::hmac_sha256_hex;
use connectors::crypto::Secret;
use connectors::domain::{now, EventStatus, TenantId};
use connectors::ingest::inbox;
use reqwest::Method;
use serde_json::{json, Value};

use crate::connect::connect_sandbox;
use crate::helpers::{accepted, assert_problem, post_delivery, stored_event, tenant, TestApp};

const SECRET: &str = "sandbox-webhook-secret-value";

/// A change to the headers of a delivery.
type Tweak = Box<dyn FnOnce(&mut Vec<(&'static str, String)>)>;

async fn spawn() -> TestApp {
    TestApp::spawn_with(&[("POBLYSH_SANDBOX_WEBHOOK_SECRET", SECRET)]).await
}

fn event_body(id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id,
        "title": format!("Sandbox event {id}"),
        "occurred_at": "2026-11-20T10:00:00Z",
        "actor": { "id": "u1", "name": "Ada" }
    }))
    .expect("json")
}

/// Sends a delivery signed as the sandbox signs, with overridable headers.
async fn deliver(
    app: &TestApp,
    t: TenantId,
    delivery: &str,
    event: &str,
    body: &[u8],
    tweak: impl FnOnce(&mut Vec<(&'static str, String)>),
) -> reqwest::Response {
    deliver_to(
        app,
        &format!("/webhooks/sandbox/{t}"),
        delivery,
        event,
        body,
        tweak,
    )
    .await
}

/// Sends a signed delivery to `path`.
async fn deliver_to(
    app: &TestApp,
    path: &str,
    delivery: &str,
    event: &str,
    body: &[u8],
    tweak: impl FnOnce(&mut Vec<(&'static str, String)>),
) -> reqwest::Response {
    let timestamp = connectors::domain::now().timestamp().to_string();
    let signature = hmac_sha256_hex(&Secret::new(SECRET), &[timestamp.as_bytes(), b".", body]);
    let mut headers = vec![
        ("X-Sandbox-Delivery", delivery.to_string()),
        ("X-Sandbox-Event", event.to_string()),
        ("X-Sandbox-Timestamp", timestamp),
        ("X-Sandbox-Signature", format!("v1={signature}")),
        ("Content-Type", "application/json".to_string()),
    ];
    tweak(&mut headers);
    post_delivery(app, path, headers, body).await
}

#[tokio::test]
async fn a_signed_delivery_is_stored_acknowledged_and_becomes_a_signal() {
    let app = spawn().await;
    let t = tenant();
    let connection = connect_sandbox(&app, t).await;
    let body =
        accepted(deliver(&app, t, "d-1", "event.created", &event_body("e1"), |_| {}).await).await;
    assert_eq!(body["duplicate"], false);
    let stored = stored_event(&app, t, &body).await;
    assert_eq!(stored.status, EventStatus::Pending);
    assert_eq!(stored.body, event_body("e1"));
    assert_eq!(stored.event_type.as_deref(), Some("event.created"));

    inbox::drain(&app.state).await.expect("drain");
    let stored = stored_event(&app, t, &body).await;
    assert_eq!(stored.status, EventStatus::Processed);
    assert_eq!(
        stored.connection_id.map(|c| c.to_string()),
        connection["id"].as_str().map(str::to_string)
    );
    let (_, signals) = app.get_json(t, "/signals?include_payload=true").await;
    let signal = &signals["signals"][0];
    assert_eq!(signal["kind"], "sandbox_event_created");
    assert_eq!(
        signal["occurred_at"], "2026-11-20T10:00:00Z",
        "the payload's time, not arrival"
    );
    assert_eq!(signal["actor"]["name"], "Ada");
    assert_eq!(signal["external_id"], "e1");
    assert_eq!(signal["connection_id"], connection["id"]);
}

#[tokio::test]
async fn text_with_nul_characters_is_stored_with_replacement_characters() {
    let app = spawn().await;
    let t = tenant();
    connect_sandbox(&app, t).await;
    let body = serde_json::to_vec(&json!({
        "id": "nul\u{0}1",
        "title": "before\u{0}after",
        "occurred_at": "2026-11-20T10:00:00Z",
        "actor": { "id": "u1", "name": "A\u{0}da" }
    }))
    .expect("json");
    assert!(
        body.windows(6).any(|w| w == b"\\u0000"),
        "the body carries an escaped NUL"
    );
    let accepted = accepted(deliver(&app, t, "nul-1", "event.created", &body, |_| {}).await).await;
    inbox::drain(&app.state).await.expect("drain");
    assert_eq!(
        stored_event(&app, t, &accepted).await.status,
        EventStatus::Processed
    );
    let (_, signals) = app.get_json(t, "/signals?include_payload=true").await;
    let signal = &signals["signals"][0];
    assert_eq!(signal["title"], "before\u{FFFD}after");
    assert_eq!(signal["actor"]["name"], "A\u{FFFD}da");
    assert_eq!(signal["external_id"], "nul\u{FFFD}1");
    assert_eq!(signal["payload"]["id"], "nul\u{FFFD}1");
}

#[tokio::test]
async fn an_event_whose_signal_cannot_be_stored_fails_alone_and_its_batch_is_processed() {
    let app = spawn().await;
    let t = tenant();
    connect_sandbox(&app, t).await;
    // The database refuses one signal, as it would a row it cannot take.
    app.execute_sql(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON signals \
         WHEN NEW.external_id = 'poison' BEGIN SELECT RAISE(ABORT, 'poison refused'); END",
        "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN \
           IF NEW.external_id = 'poison' THEN RAISE EXCEPTION 'poison refused'; END IF; \
           RETURN NEW; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER refuse_poison BEFORE INSERT ON signals \
           FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    )
    .await;
    let mut events = Vec::new();
    for id in ["fine-1", "poison", "fine-2"] {
        let response = deliver(&app, t, id, "event.created", &event_body(id), |_| {}).await;
        events.push(accepted(response).await);
    }

    assert_eq!(
        inbox::run_once(&app.state).await.expect("round"),
        3,
        "one batch"
    );
    let (_, signals) = app.get_json(t, "/signals").await;
    let mut listed: Vec<&str> = signals["signals"]
        .as_array()
        .expect("signals")
        .iter()
        .filter_map(|s| s["external_id"].as_str())
        .collect();
    listed.sort();
    assert_eq!(listed, ["fine-1", "fine-2"]);
    for (event, status) in events.iter().zip([
        EventStatus::Processed,
        EventStatus::Pending,
        EventStatus::Processed,
    ]) {
        let stored = stored_event(&app, t, event).await;
        assert_eq!(stored.status, status, "{stored:?}");
        if status == EventStatus::Pending {
            assert_eq!(stored.attempts, 1);
            let error = stored.last_error.expect("the refusal is kept");
            assert!(error.contains("poison refused"), "{error}");
        }
    }
}

#[tokio::test]
async fn a_worker_that_outlived_its_lease_cannot_overwrite_the_outcome() {
    let app = spawn().await;
    let t = tenant();
    connect_sandbox(&app, t).await;
    let event = accepted(
        deliver(
            &app,
            t,
            "late-1",
            "event.created",
            &event_body("late-1"),
            |_| {},
        )
        .await,
    )
    .await;
    let id: uuid::Uuid = event["event_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let store = app.store();

    // A worker claims the event and stalls past its lease; another takes it over.
    let claimed_at = now();
    let stale = claimed_at + chrono::Duration::seconds(5);
    let first = store
        .claim_webhook_events(claimed_at, stale, 10)
        .await
        .expect("claim");
    assert_eq!(first.len(), 1);
    let later = stale + chrono::Duration::seconds(1);
    let current = later + chrono::Duration::seconds(60);
    let second = store
        .claim_webhook_events(later, current, 10)
        .await
        .expect("take over");
    assert_eq!(second.len(), 1, "the expired lease is taken over");

    // The stalled worker's failure or retry changes nothing while the event is held anew.
    store
        .complete_webhook_event(
            id,
            EventStatus::Failed,
            None,
            &[],
            Some("stalled"),
            stale,
            now(),
        )
        .await
        .expect("stale outcome");
    store
        .retry_webhook_event(id, "stalled", stale, now())
        .await
        .expect("stale retry");
    let held = stored_event(&app, t, &event).await;
    assert_eq!(held.status, EventStatus::Pending);
    assert_eq!(held.last_error, None);

    // The worker that holds it now records the outcome; the stalled one cannot undo it.
    store
        .complete_webhook_event(id, EventStatus::Ignored, None, &[], None, current, now())
        .await
        .expect("outcome");
    store
        .retry_webhook_event(id, "stalled", current, now())
        .await
        .expect("late retry");
    let done = stored_event(&app, t, &event).await;
    assert_eq!(done.status, EventStatus::Ignored);
    assert_eq!(done.last_error, None);
    assert_eq!(done.attempts, 2);
}

#[tokio::test]
async fn a_redelivery_is_a_duplicate_and_stores_nothing_new() {
    let app = spawn().await;
    let t = tenant();
    connect_sandbox(&app, t).await;
    let first =
        accepted(deliver(&app, t, "d-7", "event.created", &event_body("e7"), |_| {}).await).await;
    let again =
        accepted(deliver(&app, t, "d-7", "event.created", &event_body("e7"), |_| {}).await).await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["event_id"], first["event_id"]);
    inbox::drain(&app.state).await.expect("drain");
    let (_, signals) = app.get_json(t, "/signals").await;
    assert_eq!(signals["signals"].as_array().expect("array").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_and_redeliveries_are_each_stored_once() {
    let app = spawn().await;
    let t = tenant();
    connect_sandbox(&app, t).await;
    // Every delivery is sent three times at once, so copies meet in the same commit.
    let sends = (0..40).flat_map(|i| (0..3).map(move |_| i)).map(|i| {
        let app = &app;
        async move {
            let delivery = format!("burst-{i}");
            let body = event_body(&format!("b{i}"));
            let response = deliver(app, t, &delivery, "event.created", &body, |_| {}).await;
            (delivery, accepted(response).await)
        }
    });
    let answers = futures::future::join_all(sends).await;
    let mut by_delivery: std::collections::HashMap<String, Vec<Value>> = Default::default();
    for (delivery, answer) in answers {
        by_delivery.entry(delivery).or_default().push(answer);
    }
    assert_eq!(by_delivery.len(), 40);
    for (delivery, copies) in &by_delivery {
        let firsts = copies.iter().filter(|c| c["duplicate"] == false).count();
        assert_eq!(firsts, 1, "{delivery}: exactly one copy is new: {copies:?}");
        assert!(
            copies
                .iter()
                .all(|c| c["event_id"] == copies[0]["event_id"]),
            "{delivery}: every copy names the stored event: {copies:?}"
        );
    }
    inbox::drain(&app.state).await.expect("drain");
    let (_, signals) = app.get_json(t, "/signals?limit=100").await;
    let burst = signals["signals"]
        .as_array()
        .expect("array")
        .iter()
        .filter(|s| {
            s["external_id"]
                .as_str()
                .is_some_and(|id| id.starts_with('b'))
        })
        .count();
    assert_eq!(burst, 40);
}

#[tokio::test]
async fn bad_signatures_are_refused_and_nothing_is_stored() {
    let app = spawn().await;
    let t = tenant();
    connect_sandbox(&app, t).await;
    let body = event_body("e2");
    let cases: Vec<(&str, Tweak)> = vec![
        (
            "missing signature",
            Box::new(|h| h.retain(|(n, _)| *n != "X-Sandbox-Signature")),
        ),
        (
            "wrong scheme",
            Box::new(|h| h[3].1 = h[3].1.replacen("v1=", "v0=", 1)),
        ),
        ("not hex", Box::new(|h| h[3].1 = "v1=zzzz".into())),
        ("wrong length", Box::new(|h| h[3].1.truncate(20))),
        (
            "signed by someone else",
            Box::new(|h| h[3].1 = format!("v1={}", "ab".repeat(32))),
        ),
        (
            "stale timestamp",
            Box::new(|h| {
                let old = (connectors::domain::now().timestamp() - 3600).to_string();
                h[2].1 = old;
            }),
        ),
    ];
    for (label, tweak) in cases {
        let response = deliver(&app, t, label, "event.created", &body, tweak).await;
        assert_problem(response, 401, "INVALID_SIGNATURE").await;
    }
    // The body changed after signing.
    let response = deliver(&app, t, "tampered", "event.created", &body, |_| {}).await;
    assert_eq!(response.status(), 202);
    let mut tampered = body.clone();
    tampered[2] ^= 1;
    let timestamp = connectors::domain::now().timestamp().to_string();
    let signature = hmac_sha256_hex(&Secret::new(SECRET), &[timestamp.as_bytes(), b".", &body]);
    let response = app
        .anonymous(Method::POST, &format!("/webhooks/sandbox/{t}"))
        .header("X-Sandbox-Delivery", "tampered-2")
        .header("X-Sandbox-Timestamp", timestamp)
        .header("X-Sandbox-Signature", format!("v1={signature}"))
        .body(tampered)
        .send()
        .await
        .expect("sent");
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
    assert_eq!(
        inbox::drain(&app.state).await.expect("drain"),
        1,
        "only the genuine delivery was stored"
    );
}

#[tokio::test]
async fn without_a_webhook_secret_nothing_is_accepted() {
    let app = TestApp::spawn().await;
    let response = deliver(
        &app,
        tenant(),
        "d",
        "event.created",
        &event_body("e"),
        |_| {},
    )
    .await;
    let body = assert_problem(response, 401, "INVALID_SIGNATURE").await;
    assert!(body["detail"]
        .as_str()
        .expect("detail")
        .contains("no webhook secret"));
    assert_eq!(inbox::drain(&app.state).await.expect("drain"), 0);
}

#[tokio::test]
async fn unknown_providers_bad_tenants_and_oversized_bodies_are_refused() {
    let app = TestApp::spawn_with(&[
        ("POBLYSH_SANDBOX_WEBHOOK_SECRET", SECRET),
        ("POBLYSH_MAX_BODY_BYTES", "2048"),
    ])
    .await;
    let response = app
        .anonymous(Method::POST, &format!("/webhooks/myspace/{}", tenant()))
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_problem(response, 404, "PROVIDER_NOT_FOUND").await;
    let response = app
        .anonymous(Method::POST, "/webhooks/sandbox/acme")
        .body("{}")
        .send()
        .await
        .expect("sent");
    let body = assert_problem(response, 400, "VALIDATION_FAILED").await;
    assert!(body["details"]["tenant_id"].is_string());
    let big = vec![b' '; 4096];
    let response = deliver(&app, tenant(), "big", "event.created", &big, |_| {}).await;
    assert_problem(response, 413, "PAYLOAD_TOO_LARGE").await;
    let response = deliver(&app, tenant(), "nodelivery", "event.created", b"{}", |h| {
        h.retain(|(n, _)| *n != "X-Sandbox-Delivery")
    })
    .await;
    assert_problem(response, 400, "VALIDATION_FAILED").await;
}

#[tokio::test]
async fn events_are_ignored_unmatched_or_failed_but_always_kept() {
    let app = spawn().await;
    let t = tenant();
    // No connection yet: the event waits as unmatched, never routed to another tenant.
    let other = tenant();
    connect_sandbox(&app, other).await;
    let unmatched =
        accepted(deliver(&app, t, "u-1", "event.created", &event_body("x"), |_| {}).await).await;
    connect_sandbox(&app, t).await;
    let ignored =
        accepted(deliver(&app, t, "i-1", "event.deleted", &event_body("y"), |_| {}).await).await;
    let failed =
        accepted(deliver(&app, t, "f-1", "event.created", b"not json at all", |_| {}).await).await;
    inbox::drain(&app.state).await.expect("drain");
    for (body, status) in [
        (&unmatched, EventStatus::Processed),
        (&ignored, EventStatus::Ignored),
        (&failed, EventStatus::Failed),
    ] {
        let stored = stored_event(&app, t, body).await;
        assert_eq!(stored.status, status, "{body}");
    }
    let stored = stored_event(&app, t, &failed).await;
    assert!(stored
        .last_error
        .expect("error kept")
        .contains("not a sandbox event"));
    let (_, foreign) = app.get_json(other, "/signals").await;
    assert_eq!(
        foreign["signals"],
        json!([]),
        "the other tenant got nothing"
    );
}

#[tokio::test]
async fn an_event_for_a_tenant_without_a_connection_stays_unmatched() {
    let app = spawn().await;
    let t = tenant();
    connect_sandbox(&app, tenant()).await;
    let body =
        accepted(deliver(&app, t, "lonely", "event.created", &event_body("z"), |_| {}).await).await;
    inbox::drain(&app.state).await.expect("drain");
    let stored = stored_event(&app, t, &body).await;
    assert_eq!(stored.status, EventStatus::Unmatched);
}

/// A delivery that names an account is routed only to a connection of that account: the
/// tenant's only connection is no fallback for an account it did not connect.
#[tokio::test]
async fn a_delivery_naming_an_unknown_account_stays_unmatched_beside_the_only_connection() {
    let app = spawn().await;
    let t = tenant();
    let connection = connect_sandbox(&app, t).await;
    let stranger = accepted(
        deliver(
            &app,
            t,
            "acct-1",
            "event.created",
            &account_body("s", "someone-else"),
            |_| {},
        )
        .await,
    )
    .await;
    let named = accepted(
        deliver(
            &app,
            t,
            "acct-2",
            "event.created",
            &account_body("n", "sandbox-user"),
            |_| {},
        )
        .await,
    )
    .await;
    inbox::drain(&app.state).await.expect("drain");
    let stored = stored_event(&app, t, &stranger).await;
    assert_eq!(stored.status, EventStatus::Unmatched);
    assert_eq!(stored.connection_id, None);
    let stored = stored_event(&app, t, &named).await;
    assert_eq!(stored.status, EventStatus::Processed);
    assert_eq!(
        stored.connection_id.map(|c| c.to_string()),
        connection["id"].as_str().map(str::to_string)
    );
    let (_, signals) = app.get_json(t, "/signals").await;
    let ids: Vec<&Value> = signals["signals"]
        .as_array()
        .expect("array")
        .iter()
        .map(|s| &s["external_id"])
        .collect();
    assert_eq!(
        ids,
        [&json!("n")],
        "only the named account's event is a signal"
    );
}

#[tokio::test]
async fn with_the_database_gone_deliveries_get_503_so_providers_redeliver() {
    let app = spawn().await;
    app.store().close().await;
    let response = deliver(
        &app,
        tenant(),
        "d-503",
        "event.created",
        &event_body("e"),
        |_| {},
    )
    .await;
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, 503, "SERVICE_UNAVAILABLE").await;
}

#[tokio::test]
async fn the_background_worker_processes_deliveries_without_being_asked() {
    let app = TestApp::spawn_with(&[
        ("POBLYSH_SANDBOX_WEBHOOK_SECRET", SECRET),
        ("POBLYSH_ROLES", "api,worker"),
    ])
    .await;
    let t = tenant();
    connect_sandbox(&app, t).await;
    accepted(deliver(&app, t, "bg-1", "event.created", &event_body("bg"), |_| {}).await).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        // The scheduler may sync the new connection meanwhile: look for this delivery's signal.
        let (_, signals) = app.get_json(t, "/signals?limit=100").await;
        let listed = signals["signals"].as_array().is_some_and(|s| {
            s.iter()
                .filter(|signal| signal["external_id"] == "bg")
                .count()
                == 1
        });
        if listed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never processed the delivery"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn stored_headers_never_keep_credentials() {
    let app = spawn().await;
    let t = tenant();
    let body = accepted(
        deliver(&app, t, "h-1", "event.created", &event_body("h"), |h| {
            h.push(("Authorization", "Bearer should-not-be-stored".into()));
            h.push(("Cookie", "session=should-not-be-stored".into()));
        })
        .await,
    )
    .await;
    let stored = stored_event(&app, t, &body).await;
    let text = serde_json::to_string(&stored.headers).expect("json");
    assert!(!text.contains("should-not-be-stored"), "{text}");
    assert_eq!(stored.headers["x-sandbox-delivery"], "h-1");
    // The signature is not kept either: a database reader could replay it.
    assert!(
        !stored.headers.contains_key("x-sandbox-signature"),
        "{text}"
    );
    assert!(stored.headers.contains_key("x-sandbox-timestamp"), "{text}");
}

/// A relayed delivery's `Idempotency-Key` or `X-Event-Type` with a control character (a tab is
/// the one a header value may carry) is refused as malformed, and nothing is stored.
#[tokio::test]
async fn a_relayed_delivery_with_a_control_character_is_refused() {
    let app = spawn().await;
    let t = tenant();
    for (key, event_type) in [
        ("core\tkey", "event.created"),
        ("core-key", "event\tcreated"),
    ] {
        let response = app
            .operator(Method::POST, "/webhooks/sandbox")
            .header("X-Tenant-Id", t.to_string())
            .header("Idempotency-Key", key)
            .header("X-Event-Type", event_type)
            .body(event_body("relayed"))
            .send()
            .await
            .expect("sent");
        let problem = assert_problem(response, 400, "VALIDATION_FAILED").await;
        assert!(problem["details"]["delivery"].is_string(), "{problem}");
    }
    assert_eq!(inbox::drain(&app.state).await.expect("drain"), 0);
}

/// Sends a signed delivery to the app-level URL (no tenant in the path).
async fn deliver_app(app: &TestApp, delivery: &str, body: &[u8]) -> reqwest::Response {
    deliver_to(
        app,
        "/webhooks/sandbox",
        delivery,
        "event.created",
        body,
        |_| {},
    )
    .await
}

fn account_body(id: &str, account: &str) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(&event_body(id)).expect("json");
    value["account"] = json!(account);
    serde_json::to_vec(&value).expect("json")
}

#[tokio::test]
async fn an_app_level_delivery_reaches_every_tenant_that_connected_the_account_and_no_one_else() {
    let app = spawn().await;
    let (a, b, bystander) = (tenant(), tenant(), tenant());
    connect_sandbox(&app, a).await;
    connect_sandbox(&app, b).await;
    accepted(deliver_app(&app, "app-1", &account_body("shared", "sandbox-user")).await).await;
    let again =
        accepted(deliver_app(&app, "app-1", &account_body("shared", "sandbox-user")).await).await;
    assert_eq!(again["duplicate"], true);
    let nobody =
        accepted(deliver_app(&app, "app-2", &account_body("orphan", "someone-else")).await).await;
    let bad = deliver_app(&app, "app-3", b"{}").await;
    assert_eq!(
        bad.status(),
        202,
        "signature is over the bytes, whatever they hold"
    );
    inbox::drain(&app.state).await.expect("drain");
    for t in [a, b] {
        let (_, signals) = app.get_json(t, "/signals").await;
        let signals = signals["signals"].as_array().expect("array").clone();
        assert_eq!(signals.len(), 1, "{signals:?}");
        assert_eq!(signals[0]["external_id"], "shared");
    }
    let (_, none) = app.get_json(bystander, "/signals").await;
    assert_eq!(none["signals"], json!([]));
    let nil = TenantId(uuid::Uuid::nil());
    let kept = stored_event(&app, nil, &nobody).await;
    assert_eq!(kept.status, EventStatus::Unmatched);
}

#[tokio::test]
async fn an_app_level_delivery_with_a_bad_signature_is_refused() {
    let app = spawn().await;
    let response = app
        .anonymous(Method::POST, "/webhooks/sandbox")
        .header("X-Sandbox-Delivery", "x")
        .header(
            "X-Sandbox-Timestamp",
            connectors::domain::now().timestamp().to_string(),
        )
        .header("X-Sandbox-Signature", "v1=00")
        .body(account_body("x", "sandbox-user"))
        .send()
        .await
        .expect("sent");
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
}

#[tokio::test]
async fn core_can_relay_an_event_for_a_tenant_and_connection() {
    let app = spawn().await;
    let t = tenant();
    let connection = connect_sandbox(&app, t).await;
    let id = connection["id"].as_str().expect("id");
    let relay = |tenant: TenantId, connection: &str, key: &str| {
        app.operator(Method::POST, "/webhooks/sandbox")
            .header("X-Tenant-Id", tenant.to_string())
            .header("X-Connection-Id", connection.to_string())
            .header("Idempotency-Key", key.to_string())
            .header("X-Event-Type", "event.created")
            .body(event_body("relayed"))
    };
    let first = accepted(relay(t, id, "core-1").send().await.expect("sent")).await;
    assert_eq!(first["duplicate"], false);
    let again = accepted(relay(t, id, "core-1").send().await.expect("sent")).await;
    assert_eq!(again["duplicate"], true);
    inbox::drain(&app.state).await.expect("drain");
    let (_, signals) = app.get_json(t, "/signals").await;
    assert_eq!(signals["signals"][0]["connection_id"], connection["id"]);

    let response = relay(tenant(), id, "core-2").send().await.expect("sent");
    assert_problem(response, 404, "CONNECTION_NOT_FOUND").await;
    let response = app
        .anonymous(Method::POST, "/webhooks/sandbox")
        .bearer_auth("not-the-operator-token-at-all")
        .header("X-Tenant-Id", t.to_string())
        .body(event_body("x"))
        .send()
        .await
        .expect("sent");
    assert_problem(response, 401, "UNAUTHORIZED").await;
    let response = app
        .operator(Method::POST, "/webhooks/sandbox")
        .body(event_body("x"))
        .send()
        .await
        .expect("sent");
    assert_problem(response, 400, "TENANT_HEADER_REQUIRED").await;
}

/// The nil UUID is no tenant: refused where a caller names a tenant, and where deliveries that
/// name no connected account are kept, nothing is ever routed, even to a connection someone
/// slipped in under it.
#[tokio::test]
async fn the_nil_tenant_is_refused_and_what_it_keeps_is_never_routed() {
    let app = spawn().await;
    let nil = TenantId(uuid::Uuid::nil());
    let response = app
        .operator(Method::GET, "/connections")
        .header("X-Tenant-Id", nil.to_string())
        .send()
        .await
        .expect("sent");
    assert_problem(response, 400, "INVALID_TENANT_ID").await;
    let response = app
        .operator(Method::POST, "/connect/sandbox")
        .header("X-Tenant-Id", nil.to_string())
        .send()
        .await
        .expect("sent");
    assert_problem(response, 400, "INVALID_TENANT_ID").await;
    let response = app
        .anonymous(Method::POST, &format!("/webhooks/sandbox/{nil}"))
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_problem(response, 400, "INVALID_TENANT_ID").await;

    // A connection stored under the nil tenant by other means still gets nothing.
    let planted = app.connection(nil, "sandbox").await;
    let nobody =
        accepted(deliver_app(&app, "nil-1", &account_body("orphan", "someone-else")).await).await;
    inbox::drain(&app.state).await.expect("drain");
    let kept = stored_event(&app, nil, &nobody).await;
    assert_eq!(kept.status, EventStatus::Unmatched);
    assert_eq!(kept.connection_id, None);
    let signals = app
        .store()
        .list_signals(
            nil,
            &connectors::store::SignalFilter::default(),
            connectors::store::PageRequest {
                after: None,
                fetch: 10,
            },
        )
        .await
        .expect("read");
    assert!(signals.is_empty(), "{signals:?} for {}", planted.id);
}

/// Raw deliveries are kept no longer than needed: a purge deletes the connection's, and the
/// retention pass deletes those that ended long ago (and expired OAuth states), never pending
/// ones.
#[tokio::test]
async fn purging_a_connection_and_the_retention_pass_delete_raw_deliveries() {
    let app = spawn().await;
    let t = tenant();
    let connection = connect_sandbox(&app, t).await;
    let id = connection["id"].as_str().expect("id").to_string();
    let routed =
        accepted(deliver(&app, t, "kept-1", "event.created", &event_body("a"), |_| {}).await).await;
    inbox::drain(&app.state).await.expect("drain");
    assert_eq!(
        stored_event(&app, t, &routed).await.status,
        EventStatus::Processed
    );
    let response = app
        .operator(Method::DELETE, &format!("/connections/{id}?purge=true"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 204);
    let event_id = routed["event_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    assert!(
        app.store()
            .get_webhook_event(t, event_id)
            .await
            .expect("read")
            .is_none(),
        "the purged connection's raw delivery is gone"
    );

    // A tenant with nothing connected: its deliveries end `unmatched`.
    let other = tenant();
    let old = accepted(
        deliver(
            &app,
            other,
            "old-1",
            "event.created",
            &event_body("b"),
            |_| {},
        )
        .await,
    )
    .await;
    inbox::drain(&app.state).await.expect("drain");
    let pending = accepted(
        deliver(
            &app,
            other,
            "new-1",
            "event.created",
            &event_body("c"),
            |_| {},
        )
        .await,
    )
    .await;
    // A week and a day later, with the default seven days' retention.
    let later = connectors::domain::now() + chrono::Duration::days(8);
    let purged = connectors::ingest::retention::run_once(&app.state, later)
        .await
        .expect("retention");
    assert_eq!(purged.webhook_events, 1, "{purged:?}");
    assert!(
        purged.oauth_states >= 1,
        "the connect's used state expired: {purged:?}"
    );
    let read = |accepted: &serde_json::Value| {
        let id = accepted["event_id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid");
        let store = app.store();
        async move { store.get_webhook_event(other, id).await.expect("read") }
    };
    assert!(
        read(&old).await.is_none(),
        "an old unmatched delivery is gone"
    );
    assert_eq!(
        read(&pending).await.expect("kept").status,
        EventStatus::Pending,
        "a pending delivery stays"
    );
}
