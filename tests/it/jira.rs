//! The Jira Cloud connector end to end against a fake Atlassian (wiremock) whose every answer is
//! validated against Atlassian's published OpenAPI document for the Jira Cloud platform REST
//! API v3 (trimmed copy in `tests/jira/openapi/`), as are the request bodies the connector
//! sends; webhook deliveries are built from the example of Atlassian's webhook documentation
//! (`tests/jira/webhooks/`). Sources are credited in `tests/jira/README.md`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Duration;
use connectors::connector::derive::derive_secret;
use connectors::connector::signature::hmac_sha256_hex;
use connectors::crypto::Secret;
use connectors::domain::{now, ConnectionId, EventStatus, Signal, TenantId, Timestamp};
use connectors::ingest::inbox;
use connectors::ingest::sync::{JobOutcome, JobResult, SyncWorker};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::{
    accepted, assert_problem, json, post_delivery, stored_event, tenant, TestApp,
};

const CLIENT_ID: &str = "jira-client-id";
const CLIENT_SECRET: &str = "jira-client-secret-value";
const WEBHOOK_SECRET: &str = "jira-admin-webhook-secret";
const TOKEN: &str = "eyJraWQiOiJhdXRoLmF0bGFzc2lhbi5jb20";
const CLOUD: &str = "1324a887-45db-1bf4-1e99-ef0ff456d421";
const SITE: &str = "https://your-domain.atlassian.net";
const WEBHOOK_ID: i64 = 1000;

// --- Atlassian's OpenAPI document ---------------------------------------------------------

fn openapi() -> Value {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/jira/openapi/jira-platform-v3.trimmed.json");
    let text = std::fs::read_to_string(&file).expect("the trimmed OpenAPI document is committed");
    serde_json::from_str(&text).expect("JSON")
}

/// Asserts that `instance` is valid under the document's component schema `name`.
fn conforms(name: &str, instance: &Value) {
    let doc = openapi();
    assert!(
        doc["components"]["schemas"].get(name).is_some(),
        "no schema {name}"
    );
    let schema = json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    });
    // `format: date-time` is not asserted: Jira writes `2026-01-15T10:30:00.000+0000` (no
    // colon in the offset), as the document's own examples do, which RFC 3339 refuses.
    let validator = jsonschema::draft7::options()
        .should_validate_formats(false)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{name} does not compile: {e}"));
    let problems: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        problems.is_empty(),
        "{name}: {}\n{instance}",
        problems.join("\n")
    );
}

/// A `status` answer with `body`, checked against `schema` first.
fn answer(status: u16, schema: &str, body: Value) -> ResponseTemplate {
    conforms(schema, &body);
    ResponseTemplate::new(status).set_body_json(body)
}

#[test]
fn the_schema_check_catches_a_drifting_fake() {
    conforms(
        "SearchAndReconcileResults",
        &json!({"issues": [], "isLast": true}),
    );
    for drifted in [
        json!({"issues": [], "isLast": "yes"}),
        json!({"issues": [], "nextPageToken": 7}),
        json!({"issues": [], "startAt": 0}),
    ] {
        let doc = openapi();
        let schema = json!({"$ref": "#/components/schemas/SearchAndReconcileResults", "components": doc["components"]});
        let validator = jsonschema::draft7::options()
            .should_validate_formats(false)
            .build(&schema)
            .expect("compiles");
        assert!(!validator.is_valid(&drifted), "{drifted}");
    }
    let doc = openapi();
    assert!(
        doc["paths"]["/rest/api/3/search/jql"]["post"].is_object(),
        "the document holds the search endpoint the sync uses"
    );
}

// --- the fake Atlassian ---------------------------------------------------------------------

fn api(rest: &str) -> String {
    format!("/ex/jira/{CLOUD}/rest/api/3{rest}")
}

fn jira_time(at: &Timestamp) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string()
}

fn user(id: &str, name: &str) -> Value {
    json!({
        "accountId": id, "accountType": "atlassian", "active": true, "displayName": name,
        "self": format!("{SITE}/rest/api/3/user?accountId={id}")
    })
}

fn comment(id: &str, issue: &str, created: &Timestamp, updated: &Timestamp) -> Value {
    json!({
        "id": id, "self": format!("{SITE}/rest/api/3/issue/{issue}/comment/{id}"),
        "author": user("5b10a2844c20165700ede21g", "Mia Krystof"),
        "updateAuthor": user("5b10a2844c20165700ede21g", "Mia Krystof"),
        "body": {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [{"type": "text", "text": "Lorem ipsum"}]}]},
        "created": jira_time(created), "updated": jira_time(updated), "jsdPublic": true
    })
}

fn history(id: &str, at: &Timestamp, items: Value) -> Value {
    json!({"id": id, "author": user("5b10a2844c20165700ede21g", "Mia Krystof"), "created": jira_time(at), "items": items})
}

/// An issue as `POST /search/jql` answers it with the connector's `fields` and
/// `expand=changelog` (shapes of the document's examples).
fn issue(
    id: &str,
    key: &str,
    created: &Timestamp,
    comments: Vec<Value>,
    total: usize,
    histories: Vec<Value>,
) -> Value {
    let summary = format!("Summary of {key}");
    json!({
        "id": id, "key": key, "self": format!("https://api.atlassian.com/ex/jira/{CLOUD}/rest/api/3/issue/{id}"),
        "expand": "operations,versionedRepresentations,editmeta,changelog,renderedFields",
        "fields": {
            "summary": summary, "created": jira_time(created), "updated": jira_time(&now()),
            "status": {"id": "3", "name": "In Progress", "statusCategory": {"id": 4, "key": "indeterminate", "name": "In Progress"}},
            "resolution": null, "issuetype": {"id": "10001", "name": "Bug"},
            "project": {"id": "10000", "key": "EX", "name": "Example"},
            "creator": user("5b10a2844c20165700ede21g", "Mia Krystof"),
            "reporter": user("5b10a2844c20165700ede21g", "Mia Krystof"),
            "comment": {"comments": comments, "maxResults": 20, "startAt": 0, "total": total,
                        "self": format!("{SITE}/rest/api/3/issue/{id}/comment")}
        },
        "changelog": {"histories": histories.clone(), "maxResults": histories.len(), "startAt": 0, "total": histories.len()}
    })
}

fn search_page(issues: Vec<Value>, next: Option<&str>) -> ResponseTemplate {
    let mut body = json!({"issues": issues, "isLast": next.is_none()});
    if let Some(token) = next {
        body["nextPageToken"] = json!(token);
    }
    answer(200, "SearchAndReconcileResults", body)
}

/// Answers the OAuth exchange and the accessible resources (Atlassian's 3LO sample).
async fn mount_oauth(mock: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer",
            "refresh_token": "eyJraWQiOiI1MWE2YjE2MjRlMTQ5ZDFi",
            "scope": "read:jira-work read:jira-user manage:jira-webhook offline_access"
        })))
        .mount(mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/oauth/token/accessible-resources"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([{
            "id": CLOUD, "name": "your-domain", "url": SITE,
            "scopes": ["read:jira-work", "read:jira-user", "manage:jira-webhook"],
            "avatarUrl": "https://site-admin-avatar-cdn.prod.public.atl-paas.net/avatars/240/flag.png"
        }])))
        .mount(mock)
        .await;
}

/// Answers webhook registration with `result`, refresh and deletion as documented.
async fn mount_webhooks(mock: &MockServer, result: Value) {
    let registration = answer(
        200,
        "ContainerForRegisteredWebhooks",
        json!({ "webhookRegistrationResult": [result] }),
    );
    Mock::given(method("POST"))
        .and(path(api("/webhook")))
        .respond_with(registration)
        .mount(mock)
        .await;
    let expires = (now() + Duration::days(30)).timestamp_millis();
    Mock::given(method("PUT"))
        .and(path(api("/webhook/refresh")))
        .respond_with(answer(
            200,
            "WebhooksExpirationDate",
            json!({ "expirationDate": expires }),
        ))
        .mount(mock)
        .await;
    Mock::given(method("DELETE"))
        .and(path(api("/webhook")))
        .respond_with(ResponseTemplate::new(202))
        .mount(mock)
        .await;
}

async fn spawn(mock: &MockServer) -> TestApp {
    let uri = mock.uri();
    TestApp::spawn_with(&[
        ("POBLYSH_JIRA_CLIENT_ID", CLIENT_ID),
        ("POBLYSH_JIRA_CLIENT_SECRET", CLIENT_SECRET),
        ("POBLYSH_JIRA_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("POBLYSH_JIRA_API_BASE_URL", uri.as_str()),
        ("POBLYSH_JIRA_AUTH_BASE_URL", uri.as_str()),
    ])
    .await
}

/// Connects Jira through the OAuth flow; returns the connection.
async fn connect(app: &TestApp, t: TenantId) -> Value {
    let authorize = crate::connect::authorize_url(app, t, "jira", None).await;
    let scope = authorize
        .query_pairs()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned());
    assert_eq!(
        scope.as_deref(),
        Some("read:jira-work read:jira-user manage:jira-webhook offline_access")
    );
    let state = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state");
    let (status, body) = json(
        app.anonymous(
            Method::GET,
            &format!("/connect/jira/callback?code=jira-code&state={state}"),
        )
        .send()
        .await
        .expect("sent"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["connection"].clone()
}

async fn detail(app: &TestApp, t: TenantId, id: &str) -> Value {
    let (status, body) = app.get_json(t, &format!("/connections/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn drain(app: &TestApp) -> Vec<JobOutcome> {
    SyncWorker::new().drain(&app.state).await.expect("drain")
}

async fn calls(mock: &MockServer, verb: &str, rest: &str) -> Vec<Request> {
    mock.received_requests()
        .await
        .expect("recording")
        .into_iter()
        .filter(|r| r.method.as_str() == verb && r.url.path() == api(rest))
        .collect()
}

fn body_of(request: &Request) -> Value {
    serde_json::from_slice(&request.body).expect("a JSON body")
}

async fn signals_of(app: &TestApp, t: TenantId) -> Vec<Signal> {
    let mut signals = app.stored_signals(t).await;
    signals.sort_by(|a, b| a.dedupe_key.cmp(&b.dedupe_key));
    signals
}

fn keys(signals: &[Signal]) -> Vec<(String, String)> {
    signals
        .iter()
        .map(|s| (s.kind.clone(), s.dedupe_key.clone()))
        .collect()
}

// --- deliveries -----------------------------------------------------------------------------

/// Atlassian's example callback for an issue-related event, moved to the connected site and
/// to the present, as the dynamic webhook `WEBHOOK_ID` delivers it.
fn example_delivery() -> Value {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jira/webhooks/issue_updated.json");
    let mut body: Value =
        serde_json::from_str(&std::fs::read_to_string(file).expect("fixture")).expect("JSON");
    body["timestamp"] = json!(now().timestamp_millis());
    body["issue"]["self"] = json!(format!("{SITE}/rest/api/2/issue/99291"));
    body["user"]["self"] = json!(format!("{SITE}/rest/api/2/user?accountId=99:27935d01"));
    body["comment"]["self"] = json!(format!("{SITE}/rest/api/2/issue/99291/comment/252789"));
    body["matchedWebhookIds"] = json!([WEBHOOK_ID]);
    body
}

fn jwt(alg: Algorithm, claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signs")
}

fn good_jwt() -> String {
    let at = now().timestamp();
    jwt(
        Algorithm::HS256,
        &json!({"iat": at, "exp": at + 60}),
        CLIENT_SECRET,
    )
}

/// Posts `body` to tenant `t`'s URL with `Authorization: Bearer {token}` (or none).
async fn deliver(
    app: &TestApp,
    t: TenantId,
    identifier: &str,
    token: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut headers = vec![
        ("X-Atlassian-Webhook-Identifier", identifier.to_string()),
        ("X-Atlassian-Webhook-Flow", "Primary".to_string()),
        ("Content-Type", "application/json".to_string()),
    ];
    if let Some(token) = token {
        headers.push(("Authorization", format!("Bearer {token}")));
    }
    let bytes = serde_json::to_vec(body).expect("json");
    post_delivery(app, &format!("/webhooks/jira/{t}"), headers, &bytes).await
}

// --- the journey ----------------------------------------------------------------------------

#[tokio::test]
async fn connect_opens_the_webhook_a_verified_delivery_is_one_signal_and_disconnect_deletes_it() {
    let mock = MockServer::start().await;
    mount_oauth(&mock).await;
    mount_webhooks(&mock, json!({ "createdWebhookId": WEBHOOK_ID })).await;
    let app = spawn(&mock).await;
    let t = tenant();
    let connection = connect(&app, t).await;
    let id = connection["id"].as_str().expect("id").to_string();
    assert_eq!(connection["external_account"]["id"], CLOUD);
    let details = &connection["account_details"];
    assert_eq!(details["cloud_id"], CLOUD, "{connection}");
    assert_eq!(details["site_url"], SITE);
    assert_eq!(details["site_name"], "your-domain");

    // The subscription job registers the dynamic webhook at the tenant's URL.
    drain(&app).await;
    let registered = calls(&mock, "POST", "/webhook").await;
    assert_eq!(registered.len(), 1);
    let request = body_of(&registered[0]);
    conforms("WebhookRegistrationDetails", &request);
    assert!(request["url"]
        .as_str()
        .expect("url")
        .ends_with(&format!("/webhooks/jira/{t}")));
    assert_eq!(
        request["webhooks"][0]["events"],
        json!([
            "jira:issue_created",
            "jira:issue_updated",
            "jira:issue_deleted",
            "comment_created",
            "comment_updated"
        ])
    );
    assert_eq!(
        request["webhooks"][0]["jqlFilter"],
        "project != \"POBLYSH-NO-SUCH-PROJECT\""
    );
    assert_eq!(
        registered[0]
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let shown = detail(&app, t, &id).await;
    let sub = &shown["subscriptions"][0];
    assert_eq!(sub["resource"], "issues");
    assert_eq!(sub["status"], "active", "{shown}");
    assert_eq!(shown["account_details"]["webhook_ids"], json!([WEBHOOK_ID]));

    // A delivery signed as Atlassian signs dynamic webhooks becomes one signal.
    let body = example_delivery();
    let first = accepted(deliver(&app, t, "b7c6d5e4-0001", Some(&good_jwt()), &body).await).await;
    assert_eq!(first["duplicate"], false);
    let stored = stored_event(&app, t, &first).await;
    assert!(
        stored.headers.get("authorization").is_none(),
        "the token is not kept"
    );
    let again = accepted(deliver(&app, t, "b7c6d5e4-0001", Some(&good_jwt()), &body).await).await;
    assert_eq!(again["duplicate"], true, "a retry keeps its identifier");
    inbox::drain(&app.state).await.expect("drain");
    let signals = signals_of(&app, t).await;
    assert_eq!(
        keys(&signals),
        [(
            "issue_updated".to_string(),
            "jira:issue:99291:change:10124".to_string()
        )]
    );
    let s = &signals[0];
    assert_eq!(s.connection_id.to_string(), id);
    assert_eq!(
        s.title.as_deref(),
        Some("JRA-20002: I feel the need for speed")
    );
    assert_eq!(s.url.as_deref(), Some(&*format!("{SITE}/browse/JRA-20002")));
    assert_eq!(s.external_id.as_deref(), Some("99291"));
    let actor = s.actor.as_ref().expect("actor");
    assert_eq!(actor.id, "99:27935d01-92a7-4687-8272-a9b8d3b2ae2e");
    assert_eq!(actor.name.as_deref(), Some("Bryan Rollins [Atlassian]"));
    assert_eq!(
        s.payload.as_ref().expect("payload")["changes"][0]["to"],
        "A new summary."
    );

    // The sync sees the same change: still one signal.
    let when = now() - Duration::minutes(3);
    let mut synced = issue(
        "99291",
        "JRA-20002",
        &(now() - Duration::days(90)),
        vec![],
        0,
        vec![history(
            "10124",
            &when,
            json!([{"field": "summary", "fieldtype": "jira", "fieldId": "summary", "fromString": "What is going on here?????", "toString": "A new summary."}]),
        )],
    );
    synced["fields"]["summary"] = json!("I feel the need for speed");
    Mock::given(method("POST"))
        .and(path(api("/search/jql")))
        .respond_with(search_page(vec![synced], None))
        .mount(&mock)
        .await;
    sync_now(&app, t, &id).await;
    let outcomes = drain(&app).await;
    assert_eq!(outcomes[0].result, JobResult::Succeeded, "{outcomes:?}");
    assert_eq!(outcomes[0].new_signals, 0);
    assert_eq!(signals_of(&app, t).await.len(), 1);

    // Renewal refreshes the webhook well before its 30 days run out.
    app.execute_sql(
        "UPDATE subscriptions SET renew_at = 0",
        "UPDATE subscriptions SET renew_at = now() - interval '1 second'",
    )
    .await;
    connectors::subscriptions::schedule_due(&app.state, now())
        .await
        .expect("scheduled");
    drain(&app).await;
    let refreshed = calls(&mock, "PUT", "/webhook/refresh").await;
    assert_eq!(refreshed.len(), 1);
    assert_eq!(body_of(&refreshed[0]), json!({"webhookIds": [WEBHOOK_ID]}));
    conforms("ContainerForWebhookIDs", &body_of(&refreshed[0]));
    let shown = detail(&app, t, &id).await;
    assert_eq!(shown["subscriptions"][0]["status"], "active", "{shown}");

    // Disconnecting deletes the webhook.
    let response = app
        .operator(Method::DELETE, &format!("/connections/{id}"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert!(response.status().is_success(), "{}", response.status());
    drain(&app).await;
    let deleted = calls(&mock, "DELETE", "/webhook").await;
    assert_eq!(deleted.len(), 1, "the webhook is deleted once");
    assert_eq!(body_of(&deleted[0]), json!({"webhookIds": [WEBHOOK_ID]}));
    conforms("ContainerForWebhookIDs", &body_of(&deleted[0]));
}

async fn sync_now(app: &TestApp, t: TenantId, id: &str) {
    let response = app
        .operator(Method::POST, &format!("/connections/{id}/sync"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
}

/// Runs the job due at `at`, as a worker would once it is.
async fn run_at(app: &TestApp, at: Timestamp) -> Option<JobOutcome> {
    let worker = SyncWorker::new();
    let lease = chrono::Duration::from_std(SyncWorker::lease(&app.state)).expect("lease");
    let job = app
        .store()
        .claim_sync_job(worker.owner(), at, at + lease)
        .await
        .expect("claim")?;
    let connector = app.state.registry.get(&job.provider).map(|e| e.connector);
    Some(
        worker
            .run_job(&app.state, connector, job)
            .await
            .expect("recorded"),
    )
}

/// The `from` and `to` of a search request's JQL.
fn window(request: &Request) -> (i64, i64) {
    let body = body_of(request);
    let jql = body["jql"].as_str().expect("jql").to_string();
    let numbers: Vec<i64> = jql
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(
        jql,
        format!(
            "updated >= {} AND updated <= {} ORDER BY updated ASC",
            numbers[0], numbers[1]
        )
    );
    (numbers[0], numbers[1])
}

#[tokio::test]
async fn sync_pages_through_a_429_and_an_overlap_and_reports_every_issue_and_comment_once() {
    let mock = MockServer::start().await;
    mount_oauth(&mock).await;
    mount_webhooks(&mock, json!({ "createdWebhookId": WEBHOOK_ID })).await;
    let app = spawn(&mock).await;
    let t = tenant();
    let connection = connect(&app, t).await;
    let id = connection["id"].as_str().expect("id").to_string();
    drain(&app).await;

    let (a_at, b_at, c_at) = (
        now() - Duration::days(2),
        now() - Duration::days(1),
        now() - Duration::hours(5),
    );
    let older = now() - Duration::days(400);
    let c1 = comment(
        "20001",
        "10001",
        &(now() - Duration::hours(30)),
        &(now() - Duration::hours(30)),
    );
    let c2 = comment(
        "20002",
        "10002",
        &(now() - Duration::hours(3)),
        &(now() - Duration::hours(1)),
    );
    let page_one = vec![
        issue("10001", "EX-1", &a_at, vec![c1], 1, vec![]),
        // Created long before the window; its status change inside it resolves nothing.
        issue(
            "10002",
            "EX-2",
            &older,
            vec![c2],
            1,
            vec![history(
                "30001",
                &b_at,
                json!([{"field": "status", "fieldtype": "jira", "fieldId": "status", "from": "1", "fromString": "To Do", "to": "3", "toString": "In Progress"}]),
            )],
        ),
    ];
    // EX-3 has more comments than the search embeds: the rest come from its comment listing.
    let c3: Vec<Value> = (0..3)
        .map(|i| {
            comment(
                &format!("2100{i}"),
                "10003",
                &(c_at + Duration::minutes(i)),
                &(c_at + Duration::minutes(i)),
            )
        })
        .collect();
    let page_two = vec![issue(
        "10003",
        "EX-3",
        &c_at,
        vec![c3[0].clone()],
        3,
        vec![],
    )];
    let comment_page = answer(
        200,
        "PageOfComments",
        json!({"comments": c3, "maxResults": 100, "startAt": 0, "total": 3}),
    );
    Mock::given(method("GET"))
        .and(path(api("/issue/10003/comment")))
        .respond_with(comment_page)
        .mount(&mock)
        .await;
    let second_asks = Arc::new(AtomicUsize::new(0));
    let asks = second_asks.clone();
    let (one, two) = (
        search_page(page_one, Some("CAEaAggD")),
        search_page(page_two, None),
    );
    Mock::given(method("POST"))
        .and(path(api("/search/jql")))
        .respond_with(move |request: &Request| {
            let body: Value = serde_json::from_slice(&request.body).expect("json");
            match body.get("nextPageToken").and_then(Value::as_str) {
                None => one.clone(),
                Some("CAEaAggD") if asks.fetch_add(1, Ordering::SeqCst) == 0 => {
                    ResponseTemplate::new(429)
                        .insert_header("Retry-After", "30")
                        .insert_header("RateLimit-Reason", "jira-burst-based")
                        .set_body_string("Rate limit exceeded.")
                }
                Some("CAEaAggD") => two.clone(),
                Some(other) => panic!("unexpected token {other}"),
            }
        })
        .mount(&mock)
        .await;

    sync_now(&app, t, &id).await;
    let outcome = SyncWorker::new()
        .run_once(&app.state)
        .await
        .expect("recorded")
        .expect("a due job");
    let retry_at = match &outcome.result {
        JobResult::Retrying { at, error } => {
            assert!(error.contains("rate limited"), "{error}");
            *at
        }
        other => panic!("expected a retry after the 429, got {other:?}"),
    };
    assert!(
        retry_at >= now() + Duration::seconds(29),
        "no sooner than Retry-After"
    );
    assert_eq!(outcome.pages, 1, "the first page was kept");
    let outcome = run_at(&app, retry_at).await.expect("the retry");
    assert_eq!(outcome.result, JobResult::Succeeded, "{outcome:?}");

    let expected = [
        ("issue_created", "jira:issue:10001:created"),
        ("issue_commented", "jira:issue:10001:comment:20001"),
        ("issue_updated", "jira:issue:10002:change:30001"),
        ("issue_commented", "jira:issue:10002:comment:20002"),
        ("issue_created", "jira:issue:10003:created"),
        ("issue_commented", "jira:issue:10003:comment:21000"),
        ("issue_commented", "jira:issue:10003:comment:21001"),
        ("issue_commented", "jira:issue:10003:comment:21002"),
    ];
    let mut want: Vec<(String, String)> = expected
        .iter()
        .map(|(k, d)| (k.to_string(), d.to_string()))
        .collect();
    let edited = signals_of(&app, t)
        .await
        .into_iter()
        .find(|s| {
            s.dedupe_key
                .starts_with("jira:issue:10002:comment:20002:edited:")
        })
        .expect("the edited comment");
    want.push(("issue_updated".into(), edited.dedupe_key.clone()));
    want.sort_by(|a, b| a.1.cmp(&b.1));
    let signals = signals_of(&app, t).await;
    assert_eq!(keys(&signals), want);
    let ex3 = signals
        .iter()
        .find(|s| s.dedupe_key == "jira:issue:10003:created")
        .expect("EX-3");
    assert_eq!(ex3.title.as_deref(), Some("EX-3: Summary of EX-3"));
    assert_eq!(ex3.url.as_deref(), Some(&*format!("{SITE}/browse/EX-3")));
    assert_eq!(
        ex3.actor.as_ref().map(|a| a.id.as_str()),
        Some("5b10a2844c20165700ede21g")
    );

    let searches = calls(&mock, "POST", "/search/jql").await;
    for request in &searches {
        conforms("SearchAndReconcileRequestBean", &body_of(request));
        let body = body_of(request);
        assert_eq!(body["expand"], "changelog");
        assert!(body["fields"]
            .as_array()
            .expect("fields")
            .contains(&json!("comment")));
    }
    let (from, to) = window(&searches[0]);
    assert!(
        to - from >= 30 * 24 * 3600 * 1000,
        "the first pass looks 30 days back"
    );

    // The next pass overlaps the last by five minutes: what it sees again is not repeated.
    sync_now(&app, t, &id).await;
    let outcomes = drain(&app).await;
    assert_eq!(outcomes[0].result, JobResult::Succeeded, "{outcomes:?}");
    assert_eq!(outcomes[0].new_signals, 0);
    let searches = calls(&mock, "POST", "/search/jql").await;
    let last = searches.last().expect("a search");
    let (next_from, _) = window(last);
    assert_eq!(next_from, to - 5 * 60 * 1000);
    assert_eq!(signals_of(&app, t).await.len(), want.len());
}

#[tokio::test]
async fn a_garbage_search_page_fails_readably_stores_nothing_and_keeps_the_cursor() {
    let mock = MockServer::start().await;
    mount_oauth(&mock).await;
    mount_webhooks(&mock, json!({ "createdWebhookId": WEBHOOK_ID })).await;
    let app = spawn(&mock).await;
    let t = tenant();
    let connection = connect(&app, t).await;
    let id: ConnectionId = connection["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    drain(&app).await;
    for garbage in [
        json!({"issues": "none"}),
        json!({"isLast": true}),
        json!({"issues": [issue("10001", "EX-1", &now(), vec![], 0, vec![]), {"key": "EX-2", "fields": {}}], "isLast": true}),
    ] {
        mock.reset().await;
        Mock::given(method("POST"))
            .and(path(api("/search/jql")))
            .respond_with(ResponseTemplate::new(200).set_body_json(garbage.clone()))
            .mount(&mock)
            .await;
        sync_now(&app, t, &id.to_string()).await;
        let outcome = SyncWorker::new()
            .run_once(&app.state)
            .await
            .expect("recorded")
            .expect("a due job");
        match &outcome.result {
            JobResult::Retrying { error, .. } => {
                assert!(error.contains("cannot be read"), "{error}")
            }
            other => panic!("expected a readable failure, got {other:?}"),
        }
        assert!(
            signals_of(&app, t).await.is_empty(),
            "nothing partial is stored"
        );
        assert_eq!(app.store().sync_cursor(id).await.expect("cursor"), None);
        // Clear the retry so the next case starts from a fresh job.
        app.execute_sql("DELETE FROM sync_jobs", "DELETE FROM sync_jobs")
            .await;
    }
}

#[tokio::test]
async fn a_site_that_is_gone_moves_the_connection_to_error() {
    let mock = MockServer::start().await;
    mount_oauth(&mock).await;
    mount_webhooks(&mock, json!({ "createdWebhookId": WEBHOOK_ID })).await;
    let app = spawn(&mock).await;
    let t = tenant();
    let connection = connect(&app, t).await;
    let id = connection["id"].as_str().expect("id").to_string();
    drain(&app).await;
    Mock::given(method("POST"))
        .and(path(api("/search/jql")))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({"code": 404, "message": "Not Found"})),
        )
        .mount(&mock)
        .await;
    sync_now(&app, t, &id).await;
    let outcomes = drain(&app).await;
    assert!(
        matches!(outcomes[0].result, JobResult::Failed { .. }),
        "{outcomes:?}"
    );
    let shown = detail(&app, t, &id).await;
    assert_eq!(shown["status"], "error", "{shown}");
    let why = shown["last_error"].as_str().expect("last_error");
    assert!(why.contains("Jira site is gone"), "{why}");
}

#[tokio::test]
async fn a_refused_registration_answered_200_fails_the_subscription_with_atlassians_reason() {
    let mock = MockServer::start().await;
    mount_oauth(&mock).await;
    mount_webhooks(
        &mock,
        json!({ "errors": ["The clause watchCount is unsupported"] }),
    )
    .await;
    let app = spawn(&mock).await;
    let t = tenant();
    let connection = connect(&app, t).await;
    let id = connection["id"].as_str().expect("id").to_string();
    drain(&app).await;
    let shown = detail(&app, t, &id).await;
    let sub = &shown["subscriptions"][0];
    assert_eq!(sub["status"], "pending", "not open: {shown}");
    assert!(sub["last_error"]
        .as_str()
        .expect("last_error")
        .contains("Jira refused the webhook: The clause watchCount is unsupported"));
    assert_eq!(shown["status"], "active", "syncing goes on");
}

// --- bad deliveries, admin webhooks and routing ---------------------------------------------

#[tokio::test]
async fn unsigned_wrongly_signed_expired_and_alg_swapped_deliveries_are_refused() {
    let mock = MockServer::start().await;
    mount_oauth(&mock).await;
    mount_webhooks(&mock, json!({ "createdWebhookId": WEBHOOK_ID })).await;
    let app = spawn(&mock).await;
    let t = tenant();
    connect(&app, t).await;
    drain(&app).await;
    let body = example_delivery();
    let at = now().timestamp();
    let none_token = {
        use base64::Engine;
        let enc =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            enc(&json!({"alg": "none", "typ": "JWT"})),
            enc(&json!({"exp": at + 60}))
        )
    };
    let refused = [
        None,
        Some(jwt(
            Algorithm::HS256,
            &json!({"exp": at + 60}),
            "not-the-client-secret",
        )),
        Some(jwt(
            Algorithm::HS256,
            &json!({"exp": at - 600}),
            CLIENT_SECRET,
        )),
        Some(jwt(
            Algorithm::HS512,
            &json!({"exp": at + 60}),
            CLIENT_SECRET,
        )),
        Some(jwt(
            Algorithm::HS256,
            &json!({"aud": "another-app"}),
            CLIENT_SECRET,
        )),
        Some(none_token),
        Some("not-a-jwt".to_string()),
    ];
    for token in &refused {
        let response = deliver(&app, t, "refused-1", token.as_deref(), &body).await;
        assert_problem(response, 401, "INVALID_SIGNATURE").await;
    }
    // A wrong admin-webhook signature is refused too.
    let bytes = serde_json::to_vec(&body).expect("json");
    let response = post_delivery(
        &app,
        &format!("/webhooks/jira/{t}"),
        vec![
            ("X-Atlassian-Webhook-Identifier", "refused-1".into()),
            ("X-Hub-Signature", format!("sha256={}", "0".repeat(64))),
        ],
        &bytes,
    )
    .await;
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
    // Nothing was stored under that identifier: the first good delivery is new.
    let good = accepted(deliver(&app, t, "refused-1", Some(&good_jwt()), &body).await).await;
    assert_eq!(good["duplicate"], false);
}

#[tokio::test]
async fn admin_webhooks_verify_with_the_tenants_secret_and_route_only_to_the_owning_site() {
    let mock = MockServer::start().await;
    mount_oauth(&mock).await;
    mount_webhooks(&mock, json!({ "createdWebhookId": WEBHOOK_ID })).await;
    let app = spawn(&mock).await;
    let t = tenant();
    let connection = connect(&app, t).await;
    let id = connection["id"].as_str().expect("id").to_string();

    let (status, registration) = app.get_json(t, "/providers/jira/webhook").await;
    assert_eq!(status, 200, "{registration}");
    let secret = registration["secret"].as_str().expect("secret").to_string();
    let derived = derive_secret(
        &Secret::new(WEBHOOK_SECRET),
        "jira-webhook",
        &[&t.to_string()],
    );
    assert_eq!(secret, derived.expose());
    assert!(registration["events"]
        .as_array()
        .expect("events")
        .contains(&json!("comment_created")));

    let signed = |body: &Value, secret: &str, identifier: &str| {
        let bytes = serde_json::to_vec(body).expect("json");
        let signature = hmac_sha256_hex(&Secret::new(secret), &[&bytes]);
        (
            vec![
                ("X-Atlassian-Webhook-Identifier", identifier.to_string()),
                ("X-Hub-Signature", format!("sha256={signature}")),
                ("Content-Type", "application/json".to_string()),
            ],
            bytes,
        )
    };
    // A comment added on the connected site (admin webhooks carry no matchedWebhookIds).
    let mut body = example_delivery();
    body.as_object_mut()
        .expect("object")
        .remove("matchedWebhookIds");
    body.as_object_mut().expect("object").remove("changelog");
    body["webhookEvent"] = json!("comment_created");
    body["comment"]["created"] = json!(jira_time(&now()));
    body["comment"]["updated"] = json!(jira_time(&now()));
    let (headers, bytes) = signed(&body, &secret, "admin-1");
    let ok =
        accepted(post_delivery(&app, &format!("/webhooks/jira/{t}"), headers, &bytes).await).await;
    let stored = stored_event(&app, t, &ok).await;
    assert!(
        stored.headers.get("x-hub-signature").is_none(),
        "the signature is not kept"
    );
    // Signed with the configured secret itself, or another tenant's: refused.
    for wrong in [
        WEBHOOK_SECRET.to_string(),
        derive_secret(
            &Secret::new(WEBHOOK_SECRET),
            "jira-webhook",
            &[&tenant().to_string()],
        )
        .expose()
        .to_string(),
    ] {
        let (headers, bytes) = signed(&body, &wrong, "admin-2");
        assert_problem(
            post_delivery(&app, &format!("/webhooks/jira/{t}"), headers, &bytes).await,
            401,
            "INVALID_SIGNATURE",
        )
        .await;
    }
    // A delivery about another site stays unmatched.
    let mut foreign = body.clone();
    for p in ["issue", "user", "comment"] {
        foreign[p]["self"] = json!("https://someone-else.atlassian.net/rest/api/2/x");
    }
    let (headers, bytes) = signed(&foreign, &secret, "admin-3");
    let other =
        accepted(post_delivery(&app, &format!("/webhooks/jira/{t}"), headers, &bytes).await).await;

    inbox::drain(&app.state).await.expect("drain");
    let signals = signals_of(&app, t).await;
    assert_eq!(
        keys(&signals),
        [(
            "issue_commented".to_string(),
            "jira:issue:99291:comment:252789".to_string()
        )]
    );
    assert_eq!(signals[0].connection_id.to_string(), id);
    let unmatched = stored_event(&app, t, &other).await;
    assert_eq!(unmatched.status, EventStatus::Unmatched);
    let first = stored_event(&app, t, &ok).await;
    assert_eq!(first.status, EventStatus::Processed);
}

#[tokio::test]
async fn the_catalogue_lists_jira_with_webhooks_sync_and_its_kinds() {
    let mock = MockServer::start().await;
    let app = spawn(&mock).await;
    let (status, body) = json(
        app.anonymous(Method::GET, "/providers")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200);
    let jira = body["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .find(|p| p["slug"] == "jira")
        .expect("jira")
        .clone();
    assert_eq!(jira["webhooks"], true);
    assert_eq!(jira["sync"], true);
    assert_eq!(
        jira["kinds"],
        json!([
            "issue_created",
            "issue_updated",
            "issue_resolved",
            "issue_deleted",
            "issue_commented"
        ])
    );
}

#[test]
fn a_deletion_webhook_and_a_resolution_give_their_kinds() {
    use connectors::connector::{Connector, Normalized, WebhookEvent};
    let normalized = |body: Value| {
        let event = WebhookEvent {
            tenant_id: tenant(),
            provider: "jira".into(),
            event_type: body["webhookEvent"].as_str().map(str::to_string),
            headers: Default::default(),
            body: serde_json::to_vec(&body).expect("json"),
            received_at: now(),
        };
        match connectors::providers::jira::JiraConnector.normalize_webhook(&event) {
            Ok(Normalized::Signals(s)) => s,
            other => panic!("{other:?}"),
        }
    };
    let mut deleted = example_delivery();
    deleted["webhookEvent"] = json!("jira:issue_deleted");
    let s = normalized(deleted);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].kind.as_str(), "issue_deleted");
    assert_eq!(s[0].dedupe_key, "jira:issue:99291:deleted");
    let mut resolved = example_delivery();
    resolved["changelog"]["items"] = json!([{"field": "resolution", "fieldtype": "jira", "from": null, "fromString": null, "to": "10000", "toString": "Done"}]);
    let s = normalized(resolved);
    assert_eq!(s[0].kind.as_str(), "issue_resolved");
    // An update without a changelog (the echo of a comment) reports nothing itself.
    let mut echo = example_delivery();
    echo.as_object_mut().expect("object").remove("changelog");
    assert!(normalized(echo).is_empty());
}

#[tokio::test]
async fn a_refused_token_is_refreshed_once_with_a_json_body_and_the_page_asked_again() {
    let mock = MockServer::start().await;
    mount_oauth(&mock).await;
    mount_webhooks(&mock, json!({ "createdWebhookId": WEBHOOK_ID })).await;
    let app = spawn(&mock).await;
    let t = tenant();
    let connection = connect(&app, t).await;
    let id = connection["id"].as_str().expect("id").to_string();
    drain(&app).await;
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    let page = search_page(
        vec![issue(
            "10001",
            "EX-1",
            &(now() - Duration::hours(1)),
            vec![],
            0,
            vec![],
        )],
        None,
    );
    Mock::given(method("POST"))
        .and(path(api("/search/jql")))
        .respond_with(move |_: &Request| {
            if count.fetch_add(1, Ordering::SeqCst) == 0 {
                ResponseTemplate::new(401).set_body_string("Unauthorized; scope does not match")
            } else {
                page.clone()
            }
        })
        .mount(&mock)
        .await;
    sync_now(&app, t, &id).await;
    let outcomes = drain(&app).await;
    assert_eq!(outcomes[0].result, JobResult::Succeeded, "{outcomes:?}");
    assert_eq!(asked.load(Ordering::SeqCst), 2, "asked again once");
    let refreshes: Vec<Value> = mock
        .received_requests()
        .await
        .expect("recording")
        .iter()
        .filter(|r| r.url.path() == "/oauth/token")
        .map(body_of)
        .filter(|b| b["grant_type"] == "refresh_token")
        .collect();
    assert_eq!(refreshes.len(), 1, "one refresh");
    assert_eq!(refreshes[0]["client_id"], CLIENT_ID);
    assert_eq!(
        keys(&signals_of(&app, t).await),
        [(
            "issue_created".to_string(),
            "jira:issue:10001:created".to_string()
        )]
    );
}
