//! The GitHub connector end to end: every payload example GitHub documents (the npm package
//! `@octokit/webhooks-examples`, installed by `npm ci --prefix tests/github`) posted signed to
//! `POST /webhooks/github/{tenant}` and normalized, compared with golden files reviewed by hand
//! (`tests/github/golden/`; `UPDATE_GOLDEN=1` rewrites them); bad deliveries; routing; and
//! sync against a wiremock GitHub answering as the REST documentation shows, headers included.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{Duration, SecondsFormat};
use connectors::connector::derive::derive_secret;
use connectors::connector::signature::hmac_sha256_hex;
use connectors::connector::SyncPage;
use connectors::connector::{Connector, ProviderSecrets, SyncContext};
use connectors::connector::{ProviderCallError, ProviderContext};
use connectors::crypto::Secret;
use connectors::domain::{
    now, Connection, ConnectionId, ConnectionStatus, EventStatus, Signal, TenantId,
};
use connectors::ingest::inbox;
use connectors::ingest::sync::{JobResult, SyncWorker};
use connectors::providers::github::GithubConnector;
use reqwest::Method;
use serde_json::{json, Value};
use url::Url;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::github_rest::Rest;
use crate::helpers::{accepted, assert_problem, json, post_delivery, tenant, TestApp};

mod pushes;

const SECRET: &str = "github-webhook-secret-value";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/github")
}

/// Every example of `@octokit/webhooks-examples`, as `(event, example)`. Fails (never skips)
/// when the package is not installed.
fn examples() -> Vec<(String, Value)> {
    let index =
        fixtures().join("node_modules/@octokit/webhooks-examples/api.github.com/index.json");
    let text = std::fs::read_to_string(&index).unwrap_or_else(|err| {
        panic!(
            "{} cannot be read ({err}). Install GitHub's webhook examples with \
             `npm ci --prefix tests/github` (Node.js and npm needed).",
            index.display()
        )
    });
    let events: Vec<Value> = serde_json::from_str(&text).expect("index.json is JSON");
    events
        .iter()
        .flat_map(|event| {
            let name = event["name"].as_str().expect("event name").to_string();
            event["examples"]
                .as_array()
                .expect("examples")
                .iter()
                .map(move |example| (name.clone(), example.clone()))
        })
        .collect()
}

async fn spawn(extra: &[(&str, &str)]) -> TestApp {
    let mut settings = vec![("POBLYSH_GITHUB_WEBHOOK_SECRET", SECRET)];
    settings.extend_from_slice(extra);
    TestApp::spawn_with(&settings).await
}

/// The secret of tenant `t`'s webhook URL, derived as `docs/providers/github.md` says: from the
/// configured secret for the purpose `github-webhook` and the tenant id.
fn tenant_secret(t: TenantId) -> Secret {
    derive_secret(&Secret::new(SECRET), "github-webhook", &[&t.to_string()])
}

/// Posts `body` as GitHub delivers it, signed with the tenant's secret, to the tenant's URL;
/// `tweak` may change the headers first.
async fn deliver(
    app: &TestApp,
    t: TenantId,
    event: &str,
    delivery: &str,
    body: &[u8],
    tweak: impl FnOnce(&mut Vec<(&'static str, String)>),
) -> reqwest::Response {
    deliver_to(
        app,
        &format!("/webhooks/github/{t}"),
        &tenant_secret(t),
        event,
        delivery,
        body,
        tweak,
    )
    .await
}

/// Posts `body` as GitHub delivers it to `path`, signed with `secret`.
async fn deliver_to(
    app: &TestApp,
    path: &str,
    secret: &Secret,
    event: &str,
    delivery: &str,
    body: &[u8],
    tweak: impl FnOnce(&mut Vec<(&'static str, String)>),
) -> reqwest::Response {
    let signature = hmac_sha256_hex(secret, &[body]);
    let mut headers = vec![
        ("X-GitHub-Delivery", delivery.to_string()),
        ("X-GitHub-Event", event.to_string()),
        ("X-GitHub-Hook-ID", "292430182".to_string()),
        ("X-Hub-Signature-256", format!("sha256={signature}")),
        ("User-Agent", "GitHub-Hookshot/044aadd".to_string()),
        ("Content-Type", "application/json".to_string()),
    ];
    tweak(&mut headers);
    post_delivery(app, path, headers, body).await
}

fn event_id(accepted: &Value) -> uuid::Uuid {
    accepted["event_id"]
        .as_str()
        .expect("event_id")
        .parse()
        .expect("uuid")
}

async fn stored_status(
    app: &TestApp,
    t: TenantId,
    id: uuid::Uuid,
) -> (EventStatus, Option<String>) {
    let event = app
        .store()
        .get_webhook_event(t, id)
        .await
        .expect("read")
        .expect("stored");
    (event.status, event.last_error)
}

/// The tenant's signals, with payloads, ordered by dedupe key.
async fn signals_of(app: &TestApp, t: TenantId) -> Vec<Signal> {
    let mut signals = app.stored_signals(t).await;
    signals.sort_by(|a, b| a.dedupe_key.cmp(&b.dedupe_key));
    signals
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A signal as kept in golden files: everything but generated ids and arrival time.
fn golden_signal(s: &Signal) -> Value {
    json!({
        "provider": s.provider,
        "kind": s.kind,
        "occurred_at": time(&s.occurred_at),
        "actor": s.actor,
        "title": s.title,
        "url": s.url,
        "external_id": s.external_id,
        "dedupe_key": s.dedupe_key,
        "payload": s.payload,
    })
}

/// What a mapped example must produce, read from the payload independently of the connector.
struct Expected {
    kind: &'static str,
    occurred_at: Value,
    url: Value,
    external_id: String,
    title: String,
}

fn expected(event: &str, p: &Value) -> Option<Expected> {
    let action = p["action"].as_str().unwrap_or_default();
    let id = |v: &Value| match v {
        Value::Number(n) => n.to_string(),
        other => other.as_str().expect("an id").to_string(),
    };
    let text = |v: &Value| v.as_str().expect("text").to_string();
    match (event, action) {
        ("issues", "opened" | "closed" | "reopened")
        | (
            "issues",
            "edited" | "labeled" | "unlabeled" | "assigned" | "unassigned" | "milestoned"
            | "demilestoned",
        ) => {
            let issue = &p["issue"];
            let (kind, at) = match action {
                "opened" => ("issue_created", "created_at"),
                "closed" => ("issue_closed", "closed_at"),
                "reopened" => ("issue_reopened", "updated_at"),
                _ => ("issue_updated", "updated_at"),
            };
            Some(Expected {
                kind,
                occurred_at: issue[at].clone(),
                url: issue["html_url"].clone(),
                external_id: id(&issue["id"]),
                title: text(&issue["title"]),
            })
        }
        ("issue_comment", "created") => Some(Expected {
            kind: "issue_commented",
            occurred_at: p["comment"]["created_at"].clone(),
            url: p["comment"]["html_url"].clone(),
            external_id: id(&p["comment"]["id"]),
            title: text(&p["issue"]["title"]),
        }),
        ("pull_request", "opened" | "closed" | "reopened")
        | (
            "pull_request",
            "edited" | "synchronize" | "labeled" | "unlabeled" | "assigned" | "unassigned"
            | "milestoned" | "demilestoned" | "ready_for_review" | "converted_to_draft",
        ) => {
            let pr = &p["pull_request"];
            let merged = pr["merged"].as_bool() == Some(true);
            let (kind, at) = match (action, merged) {
                ("opened", _) => ("pr_opened", "created_at"),
                ("reopened", _) => ("pr_reopened", "updated_at"),
                ("closed", true) => ("pr_merged", "merged_at"),
                ("closed", false) => ("pr_closed", "closed_at"),
                _ => ("pr_updated", "updated_at"),
            };
            Some(Expected {
                kind,
                occurred_at: pr[at].clone(),
                url: pr["html_url"].clone(),
                external_id: format!(
                    "{}#{}",
                    text(&p["repository"]["full_name"]),
                    id(&pr["number"])
                ),
                title: text(&pr["title"]),
            })
        }
        ("pull_request_review", "submitted") => Some(Expected {
            kind: "pr_reviewed",
            occurred_at: p["review"]["submitted_at"].clone(),
            url: p["review"]["html_url"].clone(),
            external_id: id(&p["review"]["id"]),
            title: text(&p["pull_request"]["title"]),
        }),
        ("push", _) => {
            let branch = p["ref"]
                .as_str()
                .is_some_and(|r| r.starts_with("refs/heads/"));
            let head = &p["head_commit"];
            (branch && p["deleted"] != true && head.is_object()).then(|| Expected {
                kind: "code_pushed",
                occurred_at: head["timestamp"].clone(),
                url: p["compare"].clone(),
                external_id: text(&p["after"]),
                title: text(&head["message"])
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            })
        }
        ("release", "published") => {
            let release = &p["release"];
            let name = release["name"].as_str().filter(|n| !n.is_empty());
            Some(Expected {
                kind: "release_published",
                occurred_at: release["published_at"].clone(),
                url: release["html_url"].clone(),
                external_id: id(&release["id"]),
                title: name.map_or_else(|| text(&release["tag_name"]), str::to_string),
            })
        }
        _ => None,
    }
}

fn same_instant(value: &Value, at: &chrono::DateTime<chrono::Utc>) -> bool {
    value
        .as_str()
        .and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
        .is_some_and(|v| v.to_utc() == *at)
}

/// Compares `actual` with the golden file `name`, or rewrites it under `UPDATE_GOLDEN=1`.
fn check_golden(name: &str, actual: &Value, mismatches: &mut Vec<String>) {
    let file = fixtures().join("golden").join(name);
    let text = serde_json::to_string_pretty(actual).expect("json") + "\n";
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(file.parent().expect("dir")).expect("golden dir");
        std::fs::write(&file, text).expect("write golden");
        return;
    }
    match std::fs::read_to_string(&file) {
        Ok(golden) => {
            let golden: Value = serde_json::from_str(&golden).expect("golden is JSON");
            if golden != *actual {
                mismatches.push(format!(
                    "{} differs; now:\n{text}(review, then rewrite with UPDATE_GOLDEN=1)",
                    file.display()
                ));
            }
        }
        Err(_) => mismatches.push(format!(
            "{} is missing; run with UPDATE_GOLDEN=1 and review it",
            file.display()
        )),
    }
}

#[tokio::test]
async fn every_documented_github_webhook_is_accepted_and_the_mapped_ones_become_exact_signals() {
    let examples = examples();
    assert!(examples.len() > 300, "only {} examples", examples.len());
    let app = spawn(&[]).await;
    // One tenant with one connection per example, so each example's signals stand alone.
    let mut posted = Vec::new();
    for (i, (event, example)) in examples.iter().enumerate() {
        let t = tenant();
        github_connection(&app, t, &named_account(example), "named").await;
        let body = serde_json::to_vec(example).expect("json");
        let response = deliver(&app, t, event, &format!("delivery-{i}"), &body, |_| {}).await;
        let status = response.status();
        assert!(!status.is_server_error(), "{event} example {i}: {status}");
        let answer = accepted(response).await;
        posted.push((t, event_id(&answer)));
    }
    inbox::drain(&app.state).await.expect("drain");

    let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut index_in_event: BTreeMap<&str, usize> = BTreeMap::new();
    let mut mapped = 0;
    for ((event, example), (t, id)) in examples.iter().zip(&posted) {
        let n = index_in_event.entry(event).or_default();
        let example_index = *n;
        *n += 1;
        let group = match example["action"].as_str() {
            Some(action) => format!("{event}.{action}"),
            None => event.clone(),
        };
        let (status, error) = stored_status(&app, *t, *id).await;
        let signals = signals_of(&app, *t).await;
        let label = format!("{group} (example {example_index})");
        match expected(event, example) {
            Some(want) => {
                mapped += 1;
                assert_eq!(status, EventStatus::Processed, "{label}: {error:?}");
                assert_eq!(signals.len(), 1, "{label}");
                let s = &signals[0];
                assert_eq!(s.kind, want.kind, "{label}");
                assert!(
                    same_instant(&want.occurred_at, &s.occurred_at),
                    "{label}: occurred_at {} vs {}",
                    s.occurred_at,
                    want.occurred_at
                );
                assert_eq!(s.url.as_deref(), want.url.as_str(), "{label}");
                assert_eq!(
                    s.external_id.as_deref(),
                    Some(want.external_id.as_str()),
                    "{label}"
                );
                assert_eq!(s.title.as_deref(), Some(want.title.as_str()), "{label}");
                let actor = s.actor.as_ref().expect("actor");
                assert_eq!(actor.id, example["sender"]["id"].to_string(), "{label}");
                assert_eq!(
                    actor.name.as_ref(),
                    example["sender"]["login"]
                        .as_str()
                        .map(str::to_string)
                        .as_ref(),
                    "{label}"
                );
                assert!(
                    s.occurred_at < s.received_at - Duration::days(365),
                    "{label}: the payload's time, not the arrival"
                );
            }
            None => {
                assert_eq!(status, EventStatus::Ignored, "{label}: {error:?}");
                assert!(signals.is_empty(), "{label}");
            }
        }
        outcomes
            .entry(group.clone())
            .or_default()
            .push(status.as_str().to_string());
        groups.entry(group).or_default().push(json!({
            "example": example_index,
            "status": status.as_str(),
            "signals": signals.iter().map(golden_signal).collect::<Vec<_>>(),
        }));
    }
    eprintln!(
        "posted {} GitHub examples, {mapped} mapped to signals",
        examples.len()
    );
    let mut mismatches = Vec::new();
    for (group, entries) in &groups {
        let any_signal = entries
            .iter()
            .any(|e| e["signals"].as_array().is_some_and(|s| !s.is_empty()));
        if any_signal {
            check_golden(
                &format!("{group}.json"),
                &Value::from(entries.clone()),
                &mut mismatches,
            );
        }
    }
    check_golden("outcomes.json", &json!(outcomes), &mut mismatches);
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
    // Every kind the descriptor declares is exercised by some example, except those the
    // package has no example of (covered by the next test from real payloads changed by hand).
    let seen: std::collections::BTreeSet<String> = groups
        .values()
        .flatten()
        .flat_map(|e| e["signals"].as_array().cloned().unwrap_or_default())
        .map(|s| s["kind"].as_str().expect("kind").to_string())
        .collect();
    let lacking = ["issue_closed", "pr_merged"];
    for kind in GithubConnector.descriptor().kinds {
        assert_eq!(seen.contains(*kind), !lacking.contains(kind), "{kind}");
    }
    // The events a tenant's webhook is told to subscribe to are exactly those that gave signals.
    let signalling: std::collections::BTreeSet<&str> = examples
        .iter()
        .filter(|(event, example)| expected(event, example).is_some())
        .map(|(event, _)| event.as_str())
        .collect();
    let (_, registration) = app.get_json(tenant(), "/providers/github/webhook").await;
    let subscribed: std::collections::BTreeSet<&str> = registration["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e.as_str().expect("event"))
        .collect();
    assert_eq!(subscribed, signalling);
}

/// The first example of `event` whose action is `action`.
fn example(event: &str, action: &str) -> Value {
    examples()
        .into_iter()
        .find(|(name, e)| name == event && e["action"] == action)
        .map(|(_, e)| e)
        .unwrap_or_else(|| panic!("no {event}.{action} example"))
}

#[tokio::test]
async fn kinds_the_examples_lack_are_produced_from_real_payloads_changed_by_hand() {
    let app = spawn(&[]).await;
    let t = tenant();
    github_connection(&app, t, CODERTOCAT, "Codertocat").await;
    // An issue closed (the package has reopened and opened, but no closed).
    let mut closed = example("issues", "reopened");
    closed["action"] = json!("closed");
    closed["issue"]["state"] = json!("closed");
    closed["issue"]["closed_at"] = json!("2021-10-12T08:00:00Z");
    closed["issue"]["updated_at"] = json!("2021-10-12T08:00:00Z");
    // A pull request merged, and one edited.
    let mut merged = example("pull_request", "closed");
    merged["pull_request"]["merged"] = json!(true);
    merged["pull_request"]["merged_at"] = json!("2019-05-15T15:21:17Z");
    let mut edited = example("pull_request", "opened");
    edited["action"] = json!("edited");
    edited["pull_request"]["updated_at"] = json!("2019-05-16T09:00:00Z");
    for (i, (event, body)) in [
        ("issues", closed),
        ("pull_request", merged),
        ("pull_request", edited),
    ]
    .into_iter()
    .enumerate()
    {
        let body = serde_json::to_vec(&body).expect("json");
        accepted(deliver(&app, t, event, &format!("derived-{i}"), &body, |_| {}).await).await;
    }
    inbox::drain(&app.state).await.expect("drain");
    let got: Vec<(String, String, String)> = signals_of(&app, t)
        .await
        .iter()
        .map(|s| (s.kind.clone(), time(&s.occurred_at), s.dedupe_key.clone()))
        .collect();
    let row = |k: &str, at: &str, key: &str| (k.to_string(), at.to_string(), key.to_string());
    assert_eq!(
        got,
        [
            row(
                "issue_closed",
                "2021-10-12T08:00:00Z",
                "issue:444500041:closed:2021-10-12T08:00:00Z"
            ),
            row(
                "pr_updated",
                "2019-05-16T09:00:00Z",
                "pr:Codertocat/Hello-World#2:changed:2019-05-16T09:00:00Z"
            ),
            row(
                "pr_merged",
                "2019-05-15T15:21:17Z",
                "pr:Codertocat/Hello-World#2:closed:2019-05-15T15:21:18Z"
            ),
        ]
    );
}

/// A change to the headers of a delivery.
type Tweak = Box<dyn FnOnce(&mut Vec<(&'static str, String)>)>;

fn set(name: &'static str, value: String) -> Tweak {
    Box::new(move |h| {
        h.retain(|(n, _)| *n != name);
        h.push((name, value));
    })
}

#[tokio::test]
async fn bad_signatures_are_refused_with_401_and_nothing_is_stored() {
    let app = spawn(&[]).await;
    let t = tenant();
    github_connection(&app, t, CODERTOCAT, "Codertocat").await;
    let body = serde_json::to_vec(&example("issues", "opened")).expect("json");
    let good = hmac_sha256_hex(&tenant_secret(t), &[&body]);
    let signed_with = |secret: &Secret| {
        set(
            "X-Hub-Signature-256",
            format!("sha256={}", hmac_sha256_hex(secret, &[&body])),
        )
    };
    let sha1_only: Tweak = Box::new(|h| {
        h.retain(|(n, _)| *n != "X-Hub-Signature-256");
        h.push((
            "X-Hub-Signature",
            "sha1=d03207e4b030cf234e3447bac4d93add4c6643d8".into(),
        ));
    });
    let cases: Vec<(&str, Tweak)> = vec![
        (
            "missing",
            Box::new(|h| h.retain(|(n, _)| *n != "X-Hub-Signature-256")),
        ),
        ("sha1 only", sha1_only),
        (
            "sha1 prefix",
            set("X-Hub-Signature-256", format!("sha1={good}")),
        ),
        ("no prefix", set("X-Hub-Signature-256", good.clone())),
        (
            "not hex",
            set("X-Hub-Signature-256", format!("sha256={}", "zz".repeat(32))),
        ),
        (
            "wrong length",
            set("X-Hub-Signature-256", format!("sha256={}", &good[..62])),
        ),
        (
            "another secret",
            signed_with(&Secret::new("not-the-secret")),
        ),
        // Only the app-level URL takes the configured secret itself.
        ("the configured secret", signed_with(&Secret::new(SECRET))),
        // A delivery signed for another tenant's webhook, replayed on this tenant's URL.
        (
            "another tenant's secret",
            signed_with(&tenant_secret(tenant())),
        ),
    ];
    for (label, tweak) in cases {
        let response = deliver(&app, t, "issues", label, &body, tweak).await;
        let problem = assert_problem(response, 401, "INVALID_SIGNATURE").await;
        assert!(problem["detail"].is_string(), "{label}");
    }
    // Signed, then changed on the way.
    let mut tampered = body.clone();
    tampered[1] ^= 1;
    let response = deliver(
        &app,
        t,
        "issues",
        "tampered",
        &tampered,
        set("X-Hub-Signature-256", format!("sha256={good}")),
    )
    .await;
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
    // Without its delivery id the delivery is malformed.
    let response = deliver(&app, t, "issues", "x", &body, |h| {
        h.retain(|(n, _)| *n != "X-GitHub-Delivery")
    })
    .await;
    assert_problem(response, 400, "VALIDATION_FAILED").await;
    assert_eq!(
        inbox::drain(&app.state).await.expect("drain"),
        0,
        "nothing was stored"
    );
    assert!(signals_of(&app, t).await.is_empty());

    // No secret configured: nothing can be verified.
    let bare = TestApp::spawn().await;
    let response = deliver(&bare, t, "issues", "d", &body, |_| {}).await;
    let problem = assert_problem(response, 401, "INVALID_SIGNATURE").await;
    assert!(problem["detail"]
        .as_str()
        .expect("detail")
        .contains("no webhook secret"));
}

#[tokio::test]
async fn unreadable_bodies_fail_redeliveries_are_duplicates_and_pings_are_ignored() {
    let app = spawn(&[]).await;
    let t = tenant();
    github_connection(&app, t, CODERTOCAT, "Codertocat").await;
    let broken = accepted(deliver(&app, t, "issues", "broken", b"{not json", |_| {}).await).await;
    let binary =
        accepted(deliver(&app, t, "star", "binary", &[0xff, 0xfe, 0x00], |_| {}).await).await;
    let ping = serde_json::to_vec(
        &examples()
            .into_iter()
            .find(|(e, _)| e == "ping")
            .expect("ping")
            .1,
    )
    .expect("json");
    let ping = accepted(deliver(&app, t, "ping", "ping-1", &ping, |_| {}).await).await;
    let opened = serde_json::to_vec(&example("issues", "opened")).expect("json");
    let first = accepted(deliver(&app, t, "issues", "d-42", &opened, |_| {}).await).await;
    let again = accepted(deliver(&app, t, "issues", "d-42", &opened, |_| {}).await).await;
    assert_eq!(first["duplicate"], false);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["event_id"], first["event_id"]);
    // GitHub signs no delivery id: the signed body re-posted under a new one is the same
    // delivery, not a new event.
    let replayed = accepted(deliver(&app, t, "issues", "d-forged", &opened, |_| {}).await).await;
    assert_eq!(replayed["duplicate"], true);
    assert_eq!(replayed["event_id"], first["event_id"]);
    // GitHub's other content type: the JSON in a `payload` form field.
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair(
            "payload",
            &serde_json::to_string(&example("issue_comment", "created")).expect("json"),
        )
        .finish();
    let form = accepted(
        deliver(
            &app,
            t,
            "issue_comment",
            "form-1",
            form.as_bytes(),
            set("Content-Type", "application/x-www-form-urlencoded".into()),
        )
        .await,
    )
    .await;
    inbox::drain(&app.state).await.expect("drain");
    for (body, want) in [
        (&broken, EventStatus::Failed),
        (&binary, EventStatus::Failed),
        (&ping, EventStatus::Ignored),
        (&first, EventStatus::Processed),
        (&form, EventStatus::Processed),
    ] {
        let (status, error) = stored_status(&app, t, event_id(body)).await;
        assert_eq!(status, want, "{body} {error:?}");
        if want == EventStatus::Failed {
            assert!(error.expect("error kept").contains("not JSON"));
        }
    }
    let kinds: Vec<String> = signals_of(&app, t)
        .await
        .into_iter()
        .map(|s| s.kind)
        .collect();
    assert_eq!(kinds, ["issue_commented", "issue_created"]);
}

/// The account that owns the examples' repository and sends most of them.
const CODERTOCAT: &str = "21031067";

/// The first account an example names, in the order routing reads them (the App
/// installation's account, the organization, the repository owner, the sender); a fresh id
/// when it names none.
fn named_account(example: &Value) -> String {
    [
        &example["installation"]["account"]["id"],
        &example["organization"]["id"],
        &example["repository"]["owner"]["id"],
        &example["sender"]["id"],
    ]
    .into_iter()
    .find_map(Value::as_u64)
    .map_or_else(|| uuid::Uuid::new_v4().to_string(), |id| id.to_string())
}

async fn github_connection(app: &TestApp, t: TenantId, account: &str, login: &str) -> Connection {
    app.store()
        .insert_connection(&connectors::domain::NewConnection {
            id: ConnectionId::generate(),
            tenant_id: t,
            provider: "github".into(),
            external_account_id: account.into(),
            external_account_name: Some(login.into()),
            status: ConnectionStatus::Active,
            scopes: vec!["repo".into()],
            token_expires_at: None,
            created_at: now(),
        })
        .await
        .expect("insert connection")
}

#[tokio::test]
async fn deliveries_go_to_the_connection_of_the_account_they_name_or_stay_unmatched() {
    let app = spawn(&[]).await;
    let t = tenant();
    let octocat = github_connection(&app, t, "583231", "octocat").await;
    // Codertocat (21031067) owns the repository and sends every example.
    let codertocat = github_connection(&app, t, "21031067", "Codertocat").await;
    let body = serde_json::to_vec(&example("issues", "opened")).expect("json");
    let routed = accepted(deliver(&app, t, "issues", "r-1", &body, |_| {}).await).await;
    let mut stranger = example("issues", "opened");
    stranger["sender"]["id"] = json!(1);
    stranger["repository"]["owner"]["id"] = json!(2);
    stranger["issue"]["id"] = json!(3);
    let body = serde_json::to_vec(&stranger).expect("json");
    let unmatched = accepted(deliver(&app, t, "issues", "r-2", &body, |_| {}).await).await;
    inbox::drain(&app.state).await.expect("drain");
    let event = app
        .store()
        .get_webhook_event(t, event_id(&routed))
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(event.status, EventStatus::Processed);
    assert_eq!(event.connection_id, Some(codertocat.id));
    let (status, _) = stored_status(&app, t, event_id(&unmatched)).await;
    assert_eq!(
        status,
        EventStatus::Unmatched,
        "two connections, neither named"
    );
    let signals = signals_of(&app, t).await;
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0].connection_id, codertocat.id);
    assert_ne!(signals[0].connection_id, octocat.id);
}

#[tokio::test]
async fn app_level_deliveries_reach_every_tenant_that_connected_the_owning_account() {
    let app = spawn(&[]).await;
    let (a, b, other) = (tenant(), tenant(), tenant());
    // Codertocat (21031067) owns the repository of the examples.
    let in_a = github_connection(&app, a, "21031067", "Codertocat").await;
    let in_b = github_connection(&app, b, "21031067", "Codertocat").await;
    github_connection(&app, other, "583231", "octocat").await;
    let body = serde_json::to_vec(&example("issues", "opened")).expect("json");
    let app_secret = Secret::new(SECRET);
    let answer = accepted(
        deliver_to(
            &app,
            "/webhooks/github",
            &app_secret,
            "issues",
            "app-1",
            &body,
            |_| {},
        )
        .await,
    )
    .await;
    assert_eq!(answer["duplicate"], false);
    inbox::drain(&app.state).await.expect("drain");
    for (t, connection) in [(a, &in_a), (b, &in_b)] {
        let signals = signals_of(&app, t).await;
        assert_eq!(signals.len(), 1);
        assert_eq!(signals[0].connection_id, connection.id);
        assert_eq!(signals[0].kind, "issue_created");
    }
    assert!(signals_of(&app, other).await.is_empty());
    // Unsigned, it is refused like any delivery.
    let response = deliver_to(
        &app,
        "/webhooks/github",
        &app_secret,
        "issues",
        "app-2",
        &body,
        |h| h.retain(|(n, _)| *n != "X-Hub-Signature-256"),
    )
    .await;
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
    // Nor does a tenant's own secret verify there.
    let response = deliver_to(
        &app,
        "/webhooks/github",
        &tenant_secret(a),
        "issues",
        "app-3",
        &body,
        |_| {},
    )
    .await;
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
}

#[tokio::test]
async fn a_tenants_webhook_registration_holds_a_secret_that_verifies_on_its_url_only() {
    let app = spawn(&[]).await;
    let (t, other) = (tenant(), tenant());
    github_connection(&app, t, CODERTOCAT, "Codertocat").await;
    let path = "/providers/github/webhook";

    let response = app.anonymous(Method::GET, path).send().await.expect("sent");
    assert_problem(response, 401, "UNAUTHORIZED").await;
    let response = app.operator(Method::GET, path).send().await.expect("sent");
    assert_problem(response, 400, "TENANT_HEADER_REQUIRED").await;

    let response = app.get(t, path).send().await.expect("sent");
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().ok()),
        Some(Some("no-store")),
        "a secret is never cached"
    );
    let (status, registration) = json(response).await;
    assert_eq!(status, 200, "{registration}");
    let mut base = app.state.config.public_base_url.to_string();
    if base.ends_with('/') {
        base.pop();
    }
    assert_eq!(registration["provider"], "github");
    assert_eq!(registration["url"], format!("{base}/webhooks/github/{t}"));
    assert_eq!(registration["content_type"], "application/json");
    assert_eq!(
        registration["events"],
        json!([
            "issues",
            "issue_comment",
            "pull_request",
            "pull_request_review",
            "push",
            "release"
        ])
    );
    let secret = Secret::new(registration["secret"].as_str().expect("secret"));
    assert_eq!(secret.expose(), tenant_secret(t).expose());
    let (_, theirs) = app.get_json(other, path).await;
    assert_ne!(
        theirs["secret"], registration["secret"],
        "one secret per tenant"
    );

    // Registered as told, a delivery is accepted; replayed on another tenant's URL, refused.
    let body = serde_json::to_vec(&example("issues", "opened")).expect("json");
    let url = Url::parse(registration["url"].as_str().expect("url")).expect("url");
    let answer =
        accepted(deliver_to(&app, url.path(), &secret, "issues", "reg-1", &body, |_| {}).await)
            .await;
    assert_eq!(answer["duplicate"], false);
    let elsewhere = format!("/webhooks/github/{other}");
    let response = deliver_to(&app, &elsewhere, &secret, "issues", "reg-1", &body, |_| {}).await;
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
    inbox::drain(&app.state).await.expect("drain");
    assert_eq!(signals_of(&app, t).await.len(), 1);
    assert!(signals_of(&app, other).await.is_empty());

    // Slack's events come to one URL per app; unknown providers are unknown.
    let response = app
        .get(t, "/providers/slack/webhook")
        .send()
        .await
        .expect("sent");
    assert_problem(response, 404, "NOT_FOUND").await;
    let response = app
        .get(t, "/providers/nope/webhook")
        .send()
        .await
        .expect("sent");
    assert_problem(response, 404, "PROVIDER_NOT_FOUND").await;
    // Without a configured secret there is nothing to register.
    let bare = TestApp::spawn().await;
    let response = bare.get(t, path).send().await.expect("sent");
    assert_problem(response, 409, "PROVIDER_NOT_CONFIGURED").await;
}

// ---------------------------------------------------------------------------------------------
// Sync against a wiremock GitHub.

const TOKEN: &str = "gho_16C7e42F292c6912E7710c838347Ae178B4a";

/// A fake GitHub and what a sync step needs to call it.
struct FakeGithub {
    mock: MockServer,
    http: reqwest::Client,
    settings: connectors::connector::ProviderSettings,
    connection: Connection,
    token: Secret,
}

impl FakeGithub {
    async fn start() -> Self {
        let mock = MockServer::start().await;
        let settings = connectors::connector::ProviderSettings {
            slug: "github",
            client_id: Some("Iv1.test-client".into()),
            client_secret: Some(Secret::new("github-test-secret-value")),
            webhook_secret: None,
            api_base_url: Some(Url::parse(&mock.uri()).expect("uri")),
            auth_base_url: None,
            scopes: None,
            rate_limit: GithubConnector.descriptor().rate_limit,
            extra: Vec::new(),
        };
        let connection = Connection {
            id: ConnectionId::generate(),
            tenant_id: tenant(),
            provider: "github".into(),
            external_account_id: "1".into(),
            external_account_name: Some("octocat".into()),
            status: ConnectionStatus::Active,
            scopes: vec!["repo".into()],
            token_expires_at: None,
            last_synced_at: None,
            last_error: None,
            metadata: Default::default(),
            created_at: now(),
            updated_at: now(),
        };
        Self {
            mock,
            http: connectors::connector::http_client(std::time::Duration::from_secs(5)),
            settings,
            connection,
            token: Secret::new(TOKEN),
        }
    }

    async fn page(&self, cursor: Option<&Value>) -> Result<SyncPage, ProviderCallError> {
        let ctx = SyncContext {
            provider: ProviderContext {
                http: &self.http,
                settings: &self.settings,
            },
            connection: &self.connection,
            secrets: &ProviderSecrets::default(),
            access_token: &self.token,
        };
        GithubConnector.sync_page(ctx, cursor).await
    }

    fn uri(&self) -> String {
        self.mock.uri()
    }
}

fn secs(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Now, to the second.
fn second_now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(now().timestamp(), 0).expect("time")
}

/// The published example `name` of GitHub's REST description, moved to repository `repo`
/// (every URL and name of `octocat/Hello-World` rewritten).
fn published(name: &str, index: usize, repo: &str) -> Value {
    let value = crate::github_rest::example(name)[index].clone();
    let text = serde_json::to_string(&value)
        .expect("json")
        .replace("octocat/Hello-World", repo);
    serde_json::from_str(&text).expect("json")
}

/// An item of `GET /issues`: the REST description's example (`issue-with-repo-items`) with
/// this id, number, title, times and state, in `repo`; a pull request's when `pull` is set
/// (`Some(merged_at)`).
fn rest_issue(
    id: u64,
    repo: &str,
    number: u64,
    created: &str,
    updated: &str,
    closed: Option<&str>,
    pull: Option<Option<&str>>,
) -> Value {
    let (owner, name) = repo.split_once('/').expect("owner/repo");
    let kind = if pull.is_some() { "pull" } else { "issues" };
    let mut issue = published("issue-with-repo-items", 0, repo);
    let api = format!("https://api.github.com/repos/{repo}/issues/{number}");
    for (field, value) in [
        ("id", json!(id)),
        ("number", json!(number)),
        ("url", json!(api)),
        ("labels_url", json!(format!("{api}/labels{{/name}}"))),
        ("comments_url", json!(format!("{api}/comments"))),
        ("events_url", json!(format!("{api}/events"))),
        (
            "html_url",
            json!(format!("https://github.com/{repo}/{kind}/{number}")),
        ),
        (
            "state",
            json!(if closed.is_some() { "closed" } else { "open" }),
        ),
        (
            "state_reason",
            if closed.is_some() {
                json!("completed")
            } else {
                Value::Null
            },
        ),
        ("title", json!(format!("Item {number} of {repo}"))),
        ("locked", json!(false)),
        ("active_lock_reason", Value::Null),
        ("closed_at", json!(closed)),
        ("created_at", json!(created)),
        ("updated_at", json!(updated)),
    ] {
        issue[field] = value;
    }
    issue["repository"]["name"] = json!(name);
    issue["repository"]["owner"]["login"] = json!(owner);
    match pull {
        Some(merged_at) => {
            issue["pull_request"] = json!({
                "url": format!("https://api.github.com/repos/{repo}/pulls/{number}"),
                "html_url": format!("https://github.com/{repo}/pull/{number}"),
                "diff_url": format!("https://github.com/{repo}/pull/{number}.diff"),
                "patch_url": format!("https://github.com/{repo}/pull/{number}.patch"),
                "merged_at": merged_at
            });
        }
        None => {
            if let Some(object) = issue.as_object_mut() {
                object.remove("pull_request");
            }
        }
    }
    issue
}

/// A `GET /repos/{owner}/{repo}/releases` item: the description's example (`release-items`)
/// with this id, tag, publication and draft state.
fn rest_release(id: u64, repo: &str, tag: &str, published_at: Option<&str>, draft: bool) -> Value {
    let mut release = published("release-items", 0, repo);
    let api = format!("https://api.github.com/repos/{repo}/releases/{id}");
    for (field, value) in [
        ("id", json!(id)),
        ("url", json!(api)),
        ("assets_url", json!(format!("{api}/assets"))),
        (
            "html_url",
            json!(format!("https://github.com/{repo}/releases/tag/{tag}")),
        ),
        ("tag_name", json!(tag)),
        ("name", json!(tag)),
        ("draft", json!(draft)),
        (
            "created_at",
            json!(published_at.unwrap_or("2026-01-01T00:00:00Z")),
        ),
        ("published_at", json!(published_at)),
    ] {
        release[field] = value;
    }
    release
}

/// A `200` with the headers GitHub sends, its body checked against the operation the request
/// reaches in GitHub's REST description when it is sent (see `github_rest`).
fn github_200(body: Value, etag: &str) -> Rest {
    let reset = now().timestamp() + 3600;
    Rest::new(200, body)
        .insert_header("X-RateLimit-Limit", "5000")
        .insert_header("X-RateLimit-Remaining", "4987")
        .insert_header("X-RateLimit-Used", "13")
        .insert_header("X-RateLimit-Reset", reset.to_string())
        .insert_header("X-RateLimit-Resource", "core")
        .insert_header("ETag", etag)
        .insert_header("X-GitHub-Media-Type", "github.v3; format=json")
}

fn with_rate_headers(
    response: ResponseTemplate,
    remaining: u32,
    reset_in: i64,
) -> ResponseTemplate {
    let reset = now().timestamp() + reset_in;
    response
        .insert_header("X-RateLimit-Limit", "5000")
        .insert_header("X-RateLimit-Remaining", remaining.to_string().as_str())
        .insert_header("X-RateLimit-Used", (5000 - remaining).to_string().as_str())
        .insert_header("X-RateLimit-Reset", reset.to_string().as_str())
        .insert_header("X-RateLimit-Resource", "core")
}

fn issues_query(since: &str) -> wiremock::MockBuilder {
    Mock::given(method("GET"))
        .and(path("/issues"))
        .and(query_param("filter", "all"))
        .and(query_param("state", "all"))
        .and(query_param("sort", "updated"))
        .and(query_param("direction", "asc"))
        .and(query_param("per_page", "100"))
        .and(query_param("since", since))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("x-github-api-version", "2022-11-28"))
}

fn kinds_and_keys(page: &SyncPage) -> Vec<(String, String)> {
    page.signals
        .iter()
        .map(|s| (s.kind.to_string(), s.dedupe_key.clone()))
        .collect()
}

fn pair(kind: &str, key: String) -> (String, String) {
    (kind.to_string(), key)
}

#[tokio::test]
async fn sync_reads_issues_by_watermark_then_the_releases_of_the_repositories_seen() {
    let gh = FakeGithub::start().await;
    let at = second_now();
    let (t1, t2, t3) = (
        at - Duration::days(2),
        at - Duration::days(1),
        at - Duration::hours(1),
    );
    let old = secs(&(at - Duration::days(60)));
    let page1 = json!([
        rest_issue(11, "octo/app", 1, &secs(&t1), &secs(&t1), None, None),
        rest_issue(12, "octo/lib", 2, &old, &secs(&t2), None, Some(None)),
    ]);
    let page2 = json!([
        rest_issue(12, "octo/lib", 2, &old, &secs(&t2), None, Some(None)),
        rest_issue(
            13,
            "octo/app",
            3,
            &secs(&t1),
            &secs(&t3),
            Some(&secs(&t3)),
            Some(Some(&secs(&t3)))
        ),
    ]);
    let watermark = secs(&(t2 - Duration::seconds(1)));
    issues_query(&watermark)
        .respond_with(github_200(page2, "W/\"page2\""))
        .expect(1)
        .mount(&gh.mock)
        .await;
    let link = format!(
        "<{0}/issues?filter=all&state=all&sort=updated&direction=asc&per_page=100&page=2>; rel=\"next\", <{0}/issues?filter=all&state=all&sort=updated&direction=asc&per_page=100&page=2>; rel=\"last\"",
        gh.uri()
    );
    Mock::given(method("GET"))
        .and(path("/issues"))
        .and(query_param("filter", "all"))
        .respond_with(github_200(page1, "W/\"page1\"").insert_header("Link", link.as_str()))
        .up_to_n_times(1)
        .expect(1)
        .mount(&gh.mock)
        .await;
    let first = gh.page(None).await.expect("page 1");
    assert!(first.more);
    assert_eq!(
        kinds_and_keys(&first),
        [
            pair("issue_created", "issue:11:created".into()),
            pair("pr_updated", format!("pr:octo/lib#2:changed:{}", secs(&t2))),
        ]
    );
    let floor =
        chrono::DateTime::parse_from_rfc3339(first.cursor["floor"].as_str().expect("floor"))
            .expect("time")
            .to_utc();
    assert!(
        (floor - (at - Duration::days(30))).num_seconds().abs() <= 2,
        "{floor}"
    );
    assert_eq!(
        first.cursor["since"],
        watermark.as_str(),
        "{}",
        first.cursor
    );
    assert!(
        first.cursor.get("next").is_none(),
        "the watermark moved: no link needed"
    );

    let second = gh.page(Some(&first.cursor)).await.expect("page 2");
    assert_eq!(
        kinds_and_keys(&second),
        [
            pair("pr_updated", format!("pr:octo/lib#2:changed:{}", secs(&t2))),
            pair("pr_opened", "pr:octo/app#3:created".into()),
            pair("pr_merged", format!("pr:octo/app#3:closed:{}", secs(&t3))),
        ]
    );
    assert!(second.more, "the releases follow");
    assert_eq!(second.cursor["phase"], "releases");
    assert_eq!(
        second.cursor["since"],
        secs(&(t3 - Duration::seconds(1))).as_str()
    );
    let merged = &second.signals[2];
    assert_eq!(merged.external_id.as_deref(), Some("octo/app#3"));
    assert_eq!(
        merged.url.as_deref(),
        Some("https://github.com/octo/app/pull/3")
    );
    assert_eq!(merged.occurred_at, t3);

    Mock::given(method("GET"))
        .and(path("/repos/octo/app/releases"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(github_200(
            json!([
                rest_release(300, "octo/app", "v2.0.0", None, true),
                rest_release(200, "octo/app", "v1.1.0", Some(&secs(&t1)), false),
                rest_release(100, "octo/app", "v1.0.0", Some(&old), false),
            ]),
            "\"releases-app\"",
        ))
        .expect(1)
        .mount(&gh.mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/octo/lib/releases"))
        .respond_with(
            Rest::new(
                404,
                json!({
                    "message": "Not Found",
                    "documentation_url": "https://docs.github.com/rest/releases/releases#list-releases"
                }),
            )
            .insert_header("X-RateLimit-Remaining", "4980"),
        )
        .expect(1)
        .mount(&gh.mock)
        .await;
    let third = gh
        .page(Some(&second.cursor))
        .await
        .expect("releases of octo/app");
    assert_eq!(
        kinds_and_keys(&third),
        [pair("release_published", "release:200:published".into())]
    );
    assert!(third.more);
    assert_eq!(third.cursor["repos"][0]["etag"], "\"releases-app\"");
    let fourth = gh
        .page(Some(&third.cursor))
        .await
        .expect("releases of octo/lib");
    assert!(fourth.signals.is_empty());
    assert!(fourth.more, "the comments follow");
    assert_eq!(fourth.cursor["phase"], "comments");
    assert_eq!(
        fourth.cursor["repos"],
        json!([{ "full_name": "octo/app", "etag": "\"releases-app\"" }]),
        "a repository that is gone is forgotten"
    );

    // The comments of the repository since the cycle began, as
    // https://docs.github.com/en/rest/issues/comments#list-issue-comments-for-a-repository lists them.
    let cycle_since = secs(&(at - Duration::days(30)));
    let cycle_since_seen = fourth.cursor["cycle_since"].as_str().expect("cycle_since");
    Mock::given(method("GET"))
        .and(path("/repos/octo/app/issues/comments"))
        .and(query_param("since", cycle_since_seen))
        .and(query_param("sort", "updated"))
        .and(query_param("direction", "asc"))
        .respond_with(github_200(
            json!([
                rest_comment(900, "octo/app", 3, &secs(&t3), 7),
                rest_comment(800, "octo/app", 1, &old, 7),
            ]),
            "\"comments\"",
        ))
        .expect(1)
        .mount(&gh.mock)
        .await;
    let fifth = gh.page(Some(&fourth.cursor)).await.expect("comments");
    assert!(
        (time_of(cycle_since_seen) - time_of(&cycle_since))
            .num_seconds()
            .abs()
            <= 2,
        "the first cycle's comments start at the floor"
    );
    assert_eq!(
        kinds_and_keys(&fifth),
        [pair("issue_commented", "comment:900".into())],
        "a comment from before the floor is history"
    );
    assert_eq!(
        fifth.signals[0].title.as_deref(),
        Some("Item 3 of octo/app")
    );
    assert_eq!(
        fifth.signals[0].actor.as_ref().map(|a| a.id.as_str()),
        Some("7")
    );
    assert!(fifth.more, "the reviews follow");
    assert_eq!(fifth.cursor["phase"], "reviews");

    // The reviews of each pull request the listing showed: octo/lib#2 is gone (404), octo/app#3
    // has one (https://docs.github.com/en/rest/pulls/reviews#list-reviews-for-a-pull-request).
    let sixth = gh
        .page(Some(&fifth.cursor))
        .await
        .expect("reviews of octo/lib#2");
    assert!(sixth.signals.is_empty() && sixth.more);
    Mock::given(method("GET"))
        .and(path("/repos/octo/app/pulls/3/reviews"))
        .respond_with(github_200(
            json!([rest_review(
                70,
                "octo/app",
                3,
                "APPROVED",
                Some(&secs(&t3)),
                8
            )]),
            "\"reviews\"",
        ))
        .expect(1)
        .mount(&gh.mock)
        .await;
    let seventh = gh
        .page(Some(&sixth.cursor))
        .await
        .expect("reviews of octo/app#3");
    assert_eq!(
        kinds_and_keys(&seventh),
        [pair("pr_reviewed", "review:70".into())]
    );
    assert!(seventh.more, "the pushes of the repositories known follow");
    assert_eq!(seventh.cursor["phase"], "pushes");
    assert!(
        seventh.cursor.get("seen").is_none(),
        "forgotten with the reviews"
    );
}

fn time_of(text: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .expect("time")
        .to_utc()
}

/// A comment of the repository comments listing: the description's example
/// (`issue-comment-items`) with this id, issue, time and author.
fn rest_comment(id: u64, repo: &str, number: u64, created: &str, user: u64) -> Value {
    let mut comment = published("issue-comment-items", 0, repo);
    let login = format!("user{user}");
    for (field, value) in [
        ("id", json!(id)),
        (
            "url",
            json!(format!(
                "https://api.github.com/repos/{repo}/issues/comments/{id}"
            )),
        ),
        (
            "html_url",
            json!(format!(
                "https://github.com/{repo}/issues/{number}#issuecomment-{id}"
            )),
        ),
        (
            "issue_url",
            json!(format!(
                "https://api.github.com/repos/{repo}/issues/{number}"
            )),
        ),
        ("created_at", json!(created)),
        ("updated_at", json!(created)),
    ] {
        comment[field] = value;
    }
    comment["user"]["id"] = json!(user);
    comment["user"]["login"] = json!(login);
    comment
}

/// A review of a pull request's reviews listing: the description's example
/// (`pull-request-review-items`) with this id, state, submission and author.
fn rest_review(
    id: u64,
    repo: &str,
    number: u64,
    state: &str,
    submitted: Option<&str>,
    user: u64,
) -> Value {
    let mut review = published("pull-request-review-items", 0, repo);
    for (field, value) in [
        ("id", json!(id)),
        ("state", json!(state)),
        (
            "html_url",
            json!(format!(
                "https://github.com/{repo}/pull/{number}#pullrequestreview-{id}"
            )),
        ),
        (
            "pull_request_url",
            json!(format!(
                "https://api.github.com/repos/{repo}/pulls/{number}"
            )),
        ),
        ("submitted_at", json!(submitted)),
    ] {
        review[field] = value;
    }
    review["_links"]["html"]["href"] = review["html_url"].clone();
    review["_links"]["pull_request"]["href"] = review["pull_request_url"].clone();
    review["user"]["id"] = json!(user);
    review["user"]["login"] = json!(format!("user{user}"));
    review
}

#[tokio::test]
async fn a_page_that_cannot_move_the_watermark_follows_the_link_header() {
    let gh = FakeGithub::start().await;
    let since = second_now() - Duration::days(3);
    let floor = since - Duration::days(1);
    let same = secs(&(since + Duration::seconds(1)));
    let cursor = json!({ "v": 1, "floor": secs(&floor), "since": secs(&since) });
    let next = format!(
        "{}/issues?filter=all&state=all&sort=updated&direction=asc&since={}&per_page=100&page=2",
        gh.uri(),
        secs(&since)
    );
    Mock::given(method("GET"))
        .and(path("/issues"))
        .and(query_param("page", "2"))
        .and(query_param("since", secs(&since).as_str()))
        .respond_with(github_200(
            json!([rest_issue(
                23,
                "octo/app",
                9,
                &same,
                &secs(&(since + Duration::seconds(5))),
                None,
                None
            )]),
            "W/\"p2\"",
        ))
        .expect(1)
        .mount(&gh.mock)
        .await;
    issues_query(&secs(&since))
        .respond_with(
            github_200(
                json!([
                    rest_issue(21, "octo/app", 7, &same, &same, None, None),
                    rest_issue(22, "octo/app", 8, &same, &same, None, None),
                ]),
                "W/\"p1\"",
            )
            .insert_header(
                "Link",
                format!("<{next}>; rel=\"next\", <{next}>; rel=\"last\"").as_str(),
            ),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&gh.mock)
        .await;
    let first = gh.page(Some(&cursor)).await.expect("page 1");
    assert!(first.more);
    assert_eq!(first.signals.len(), 2);
    assert_eq!(first.cursor["next"], next.as_str());
    assert_eq!(first.cursor["since"], secs(&since).as_str());
    let second = gh.page(Some(&first.cursor)).await.expect("page 2");
    assert_eq!(
        kinds_and_keys(&second),
        [
            pair("issue_created", "issue:23:created".into()),
            pair(
                "issue_updated",
                format!("issue:23:changed:{}", secs(&(since + Duration::seconds(5))))
            ),
        ]
    );
    assert!(second.cursor.get("next").is_none());
    assert_eq!(
        second.cursor["since"],
        secs(&(since + Duration::seconds(4))).as_str()
    );
}

#[tokio::test]
async fn unchanged_listings_answer_304_to_if_none_match_and_report_nothing() {
    let gh = FakeGithub::start().await;
    let since = second_now() - Duration::hours(5);
    let cursor = json!({ "v": 1, "floor": secs(&since), "since": secs(&since) });
    issues_query(&secs(&since))
        .and(header("if-none-match", "W/\"7a4e0b\""))
        .respond_with(
            with_rate_headers(ResponseTemplate::new(304), 4987, 3600)
                .insert_header("ETag", "W/\"7a4e0b\""),
        )
        .expect(1)
        .mount(&gh.mock)
        .await;
    issues_query(&secs(&since))
        .respond_with(github_200(json!([]), "W/\"7a4e0b\""))
        .up_to_n_times(1)
        .expect(1)
        .mount(&gh.mock)
        .await;
    let first = gh.page(Some(&cursor)).await.expect("first cycle");
    assert!(first.signals.is_empty() && !first.more);
    assert_eq!(first.cursor["issues_etag"]["etag"], "W/\"7a4e0b\"");
    let second = gh.page(Some(&first.cursor)).await.expect("second cycle");
    assert!(second.signals.is_empty() && !second.more);
    assert_eq!(second.cursor["since"], first.cursor["since"]);

    // The releases of a known repository, asked again with their ETag.
    Mock::given(method("GET"))
        .and(path("/repos/octo/app/releases"))
        .and(header("if-none-match", "\"r1\""))
        .respond_with(with_rate_headers(ResponseTemplate::new(304), 4987, 3600))
        .expect(1)
        .mount(&gh.mock)
        .await;
    let mut releases = second.cursor.clone();
    releases["phase"] = json!("releases");
    releases["repos"] = json!([{ "full_name": "octo/app", "etag": "\"r1\"" }]);
    let page = gh.page(Some(&releases)).await.expect("releases");
    assert!(page.signals.is_empty() && page.more, "the comments follow");
    assert_eq!(page.cursor["repos"][0]["etag"], "\"r1\"");
}

/// A known repository's events are asked again with their `ETag`: a `304` reads no commit; a
/// push is read once, its head commit on the next page, and the same listing seen again (a new
/// `ETag`, nothing newer) reads nothing more.
#[tokio::test]
async fn repository_events_are_polled_with_their_etag_and_each_push_is_read_once() {
    let gh = FakeGithub::start().await;
    let since = second_now() - Duration::hours(5);
    let cursor = json!({
        "v": 1, "floor": secs(&since), "since": secs(&since), "phase": "pushes",
        "repos": [{ "full_name": "octo/app", "events_etag": "\"ev1\"" }]
    });
    Mock::given(method("GET"))
        .and(path("/repos/octo/app/events"))
        .and(header("if-none-match", "\"ev1\""))
        .respond_with(with_rate_headers(ResponseTemplate::new(304), 4987, 3600))
        .expect(1)
        .mount(&gh.mock)
        .await;
    let unchanged = gh.page(Some(&cursor)).await.expect("unchanged");
    assert!(unchanged.signals.is_empty() && !unchanged.more);
    assert_eq!(
        unchanged.cursor["phase"], "events",
        "the pushes end the cycle"
    );
    gh.mock.reset().await;

    let pushed_at = second_now() - Duration::hours(1);
    let mut events = crate::github_rest::example("repo-events-items");
    events[0]["repo"]["name"] = json!("octo/app");
    events[0]["created_at"] = json!(secs(&pushed_at));
    events[1]["created_at"] = json!(secs(&pushed_at));
    let head = events[0]["payload"]["head"]
        .as_str()
        .expect("head")
        .to_string();
    Mock::given(method("GET"))
        .and(path("/repos/octo/app/events"))
        .respond_with(github_200(events, "\"ev2\""))
        .mount(&gh.mock)
        .await;
    let mut commit = crate::github_rest::example("git-commit-2");
    commit["sha"] = json!(head);
    commit["html_url"] = json!(format!("https://github.com/octo/app/commit/{head}"));
    commit["author"]["date"] = json!(secs(&(pushed_at - Duration::minutes(3))));
    Mock::given(method("GET"))
        .and(path(format!("/repos/octo/app/git/commits/{head}")))
        .respond_with(github_200(commit, "\"c\""))
        .expect(1)
        .mount(&gh.mock)
        .await;
    let listed = gh.page(Some(&cursor)).await.expect("the events");
    assert!(listed.signals.is_empty() && listed.more);
    assert_eq!(listed.cursor["repos"][0]["events_etag"], "\"ev2\"");
    assert_eq!(
        listed.cursor["pending_pushes"].as_array().map(Vec::len),
        Some(1)
    );
    let read = gh
        .page(Some(&listed.cursor))
        .await
        .expect("the head commit");
    assert_eq!(
        kinds_and_keys(&read),
        [pair(
            "code_pushed",
            format!("push:1296269:refs/heads/master:{head}")
        )]
    );
    assert_eq!(read.cursor["phase"], "events");
    assert!(!read.more);
    let mut again = read.cursor.clone();
    again["phase"] = json!("pushes");
    let nothing_new = gh.page(Some(&again)).await.expect("the same events");
    assert!(nothing_new.signals.is_empty());
    assert!(nothing_new.cursor.get("pending_pushes").is_none());
}

fn waited(result: Result<SyncPage, ProviderCallError>) -> u64 {
    match result {
        Err(ProviderCallError::RateLimited {
            retry_after: Some(secs),
        }) => secs,
        other => panic!("expected a rate limit, got {other:?}"),
    }
}

#[tokio::test]
async fn rate_limits_wait_as_github_says_and_a_refused_token_is_unauthorized() {
    let gh = FakeGithub::start().await;
    let cursor = json!({ "v": 1, "floor": secs(&(second_now() - Duration::days(1))), "since": secs(&(second_now() - Duration::days(1))) });
    // Primary limit spent: wait until X-RateLimit-Reset.
    Mock::given(method("GET"))
        .respond_with(with_rate_headers(ResponseTemplate::new(403), 0, 120).set_body_json(json!({
            "message": "API rate limit exceeded for user ID 1.",
            "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
        })))
        .mount(&gh.mock)
        .await;
    let wait = waited(gh.page(Some(&cursor)).await);
    assert!((119..=121).contains(&wait), "{wait}");
    // A secondary limit with Retry-After.
    gh.mock.reset().await;
    Mock::given(method("GET"))
        .respond_with(with_rate_headers(ResponseTemplate::new(429), 4000, 3000).insert_header("Retry-After", "30").set_body_json(json!({
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
        })))
        .mount(&gh.mock)
        .await;
    assert_eq!(waited(gh.page(Some(&cursor)).await), 30);
    // A secondary limit naming no wait: at least a minute.
    gh.mock.reset().await;
    Mock::given(method("GET"))
        .respond_with(with_rate_headers(ResponseTemplate::new(403), 4000, 3000).set_body_json(json!({
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
        })))
        .mount(&gh.mock)
        .await;
    assert_eq!(waited(gh.page(Some(&cursor)).await), 60);
    // Forbidden for another reason is no rate limit.
    gh.mock.reset().await;
    Mock::given(method("GET"))
        .respond_with(
            with_rate_headers(ResponseTemplate::new(403), 4000, 3000).set_body_json(json!({
                "message": "Resource protected by organization SAML enforcement."
            })),
        )
        .mount(&gh.mock)
        .await;
    assert!(matches!(
        gh.page(Some(&cursor)).await,
        Err(ProviderCallError::Rejected(_))
    ));
    // 401: the engine refreshes once and retries.
    gh.mock.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "message": "Bad credentials",
            "documentation_url": "https://docs.github.com/rest"
        })))
        .mount(&gh.mock)
        .await;
    assert!(matches!(
        gh.page(Some(&cursor)).await,
        Err(ProviderCallError::Unauthorized)
    ));
    // The last request of the quota: the page is used, the next one waits for the reset
    // without calling.
    gh.mock.reset().await;
    Mock::given(method("GET"))
        .respond_with(with_rate_headers(
            ResponseTemplate::new(200)
                .set_body_json(json!([]))
                .insert_header("ETag", "W/\"e\""),
            0,
            90,
        ))
        .expect(1)
        .mount(&gh.mock)
        .await;
    let page = gh.page(Some(&cursor)).await.expect("the last request");
    assert!(page.cursor["rate_limited_until"].is_string());
    let wait = waited(gh.page(Some(&page.cursor)).await);
    assert!((89..=91).contains(&wait), "{wait}");
}

/// `GET /user` for Codertocat: the description's public-profile example with Codertocat's
/// login and id.
fn codertocat_user() -> Value {
    let mut user =
        crate::github_rest::example("private-user-response-with-public-profile-information");
    let text = serde_json::to_string(&user)
        .expect("json")
        .replace("/octocat", "/Codertocat");
    user = serde_json::from_str(&text).expect("json");
    user["login"] = json!("Codertocat");
    user["id"] = json!(21031067);
    user
}

/// Connects GitHub through the OAuth flow against `mock` and returns the connection id.
async fn connect_through_oauth(app: &TestApp, mock: &MockServer, t: TenantId) -> ConnectionId {
    Mock::given(method("POST"))
        .and(path("/login/oauth/access_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": TOKEN,
            "scope": "repo,read:org,read:user",
            "token_type": "bearer"
        })))
        .mount(mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/user"))
        .respond_with(github_200(codertocat_user(), "W/\"user\""))
        .mount(mock)
        .await;
    let (status, started) = json(
        app.operator(Method::POST, "/connect/github")
            .header("X-Tenant-Id", t.to_string())
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let authorize = app
        .through_hop(started["authorize_url"].as_str().expect("url"))
        .await;
    let state = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state");
    let (status, body) = json(
        app.anonymous(
            Method::GET,
            &format!("/connect/github/callback?code=gh-code&state={state}"),
        )
        .send()
        .await
        .expect("sent"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["connection"]["external_account"]["id"], "21031067");
    body["connection"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid")
}

/// An app whose GitHub OAuth app and API are both the fake GitHub it returns.
async fn spawn_with_fake_github() -> (MockServer, TestApp) {
    let mock = MockServer::start().await;
    let uri = mock.uri();
    let app = spawn(&[
        ("POBLYSH_GITHUB_CLIENT_ID", "Iv1.test-client"),
        ("POBLYSH_GITHUB_CLIENT_SECRET", "github-test-secret-value"),
        ("POBLYSH_GITHUB_AUTH_BASE_URL", uri.as_str()),
        ("POBLYSH_GITHUB_API_BASE_URL", uri.as_str()),
    ])
    .await;
    (mock, app)
}

async fn sync_connection(
    app: &TestApp,
    t: TenantId,
    id: ConnectionId,
) -> Vec<connectors::ingest::sync::JobOutcome> {
    let response = app
        .operator(Method::POST, &format!("/connections/{id}/sync"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    SyncWorker::new().drain(&app.state).await.expect("drain")
}

#[tokio::test]
async fn a_connection_made_through_oauth_gets_webhooks_and_sync_and_one_change_is_one_signal() {
    let (mock, app) = spawn_with_fake_github().await;
    let t = tenant();
    let connection = connect_through_oauth(&app, &mock, t).await;
    let at = second_now();
    let (opened_at, created_pr, merged_at) = (
        at - Duration::hours(3),
        at - Duration::days(60),
        at - Duration::hours(1),
    );
    // The webhooks: an issue opened, a pull request merged (real payloads, recent times).
    let mut opened = example("issues", "opened");
    opened["issue"]["created_at"] = json!(secs(&opened_at));
    opened["issue"]["updated_at"] = json!(secs(&opened_at));
    let mut merged = example("pull_request", "closed");
    for field in ["closed_at", "merged_at", "updated_at"] {
        merged["pull_request"][field] = json!(secs(&merged_at));
    }
    merged["pull_request"]["created_at"] = json!(secs(&created_pr));
    merged["pull_request"]["merged"] = json!(true);
    for (i, (event, body)) in [("issues", &opened), ("pull_request", &merged)]
        .into_iter()
        .enumerate()
    {
        let body = serde_json::to_vec(body).expect("json");
        accepted(deliver(&app, t, event, &format!("oauth-{i}"), &body, |_| {}).await).await;
    }
    inbox::drain(&app.state).await.expect("drain");
    let before = signals_of(&app, t).await;
    assert_eq!(
        before.iter().map(|s| s.kind.as_str()).collect::<Vec<_>>(),
        ["issue_created", "pr_merged"]
    );
    assert!(before.iter().all(|s| s.connection_id == connection));

    // The sync sees the same issue and pull request, unchanged since.
    let repo = "Codertocat/Hello-World";
    Mock::given(method("GET"))
        .and(path("/issues"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(github_200(
            json!([
                rest_issue(
                    444500041,
                    repo,
                    1,
                    &secs(&opened_at),
                    &secs(&opened_at),
                    None,
                    None
                ),
                rest_issue(
                    444500042,
                    repo,
                    2,
                    &secs(&created_pr),
                    &secs(&merged_at),
                    Some(&secs(&merged_at)),
                    Some(Some(&secs(&merged_at)))
                ),
            ]),
            "W/\"issues\"",
        ))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/repos/{repo}/releases")))
        .respond_with(github_200(json!([]), "\"releases\""))
        .mount(&mock)
        .await;
    let outcomes = sync_connection(&app, t, connection).await;
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].result, JobResult::Succeeded, "{outcomes:?}");
    assert_eq!(
        outcomes[0].pages, 5,
        "the issues, the releases, the comments, the pull request's reviews, the pushes"
    );
    assert_eq!(outcomes[0].new_signals, 0, "the webhooks already told");
    let after = signals_of(&app, t).await;
    assert_eq!(after.len(), 2);
    assert_eq!(after[0].id, before[0].id);

    // GitHub out of quota: the job waits until the reset.
    mock.reset().await;
    Mock::given(method("GET"))
        .respond_with(
            with_rate_headers(ResponseTemplate::new(403), 0, 600).set_body_json(json!({
                "message": "API rate limit exceeded for user ID 21031067."
            })),
        )
        .mount(&mock)
        .await;
    let outcomes = sync_connection(&app, t, connection).await;
    match &outcomes[0].result {
        JobResult::Retrying { at, .. } => {
            assert!(*at >= now() + Duration::seconds(590), "retry at {at}");
        }
        other => panic!("expected a retry after the reset, got {other:?}"),
    }
}

/// A tenant connected one member's account; the organization's webhook sends deliveries
/// naming the organization and another member. They reach the connection whose sync listed
/// the organization's repositories; a delivery naming a stranger's repository stays unmatched
/// although the tenant has a single connection.
#[tokio::test]
async fn an_organizations_delivery_reaches_the_connection_that_syncs_its_repositories() {
    let (mock, app) = spawn_with_fake_github().await;
    let t = tenant();
    let connection = connect_through_oauth(&app, &mock, t).await;
    let (org, org_id) = ("octo-org", 6811672u64);
    let repo = format!("{org}/Hello-World");
    let at = second_now() - Duration::hours(1);
    let mut item = rest_issue(7, &repo, 1, &secs(&at), &secs(&at), None, None);
    let owner = &mut item["repository"]["owner"];
    owner["login"] = json!(org);
    owner["id"] = json!(org_id);
    owner["type"] = json!("Organization");
    Mock::given(method("GET"))
        .and(path("/issues"))
        .respond_with(github_200(json!([item]), "W/\"issues\""))
        .mount(&mock)
        .await;
    let outcomes = sync_connection(&app, t, connection).await;
    assert_eq!(outcomes[0].result, JobResult::Succeeded, "{outcomes:?}");

    let mut from_org = example("issues", "opened");
    from_org["repository"]["owner"] = json!({ "login": org, "id": org_id, "type": "Organization" });
    from_org["repository"]["full_name"] = json!(repo);
    from_org["organization"] = json!({ "login": org, "id": org_id });
    from_org["sender"]["id"] = json!(583231);
    let body = serde_json::to_vec(&from_org).expect("json");
    let routed = accepted(deliver(&app, t, "issues", "org-1", &body, |_| {}).await).await;
    let mut stranger = example("issues", "opened");
    stranger["repository"]["owner"]["id"] = json!(2);
    stranger["sender"]["id"] = json!(2);
    stranger["issue"]["id"] = json!(3);
    let body = serde_json::to_vec(&stranger).expect("json");
    let unmatched = accepted(deliver(&app, t, "issues", "org-2", &body, |_| {}).await).await;
    inbox::drain(&app.state).await.expect("drain");

    let event = app
        .store()
        .get_webhook_event(t, event_id(&routed))
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(event.status, EventStatus::Processed);
    assert_eq!(event.connection_id, Some(connection));
    let (status, _) = stored_status(&app, t, event_id(&unmatched)).await;
    assert_eq!(
        status,
        EventStatus::Unmatched,
        "one connection, not the stranger's"
    );
}

/// The organizations the account belongs to (`GET /user/orgs`) are known from the connect on:
/// a delivery naming one reaches the connection before any sync.
#[tokio::test]
async fn an_organization_of_the_connected_account_routes_to_it_from_the_connect_on() {
    let (mock, app) = spawn_with_fake_github().await;
    let org_id = 38302899u64;
    let text = serde_json::to_string(&crate::github_rest::example("organization-simple-items"))
        .expect("json")
        .replace("orgs/github", "orgs/Octocoders");
    let mut orgs: Value = serde_json::from_str(&text).expect("json");
    orgs[0]["login"] = json!("Octocoders");
    orgs[0]["id"] = json!(org_id);
    Mock::given(method("GET"))
        .and(path("/user/orgs"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(github_200(orgs, "W/\"orgs\""))
        .expect(1)
        .mount(&mock)
        .await;
    let t = tenant();
    let connection = connect_through_oauth(&app, &mock, t).await;
    let mut from_org = example("issues", "opened");
    from_org["repository"]["owner"]["id"] = json!(org_id);
    from_org["organization"] = json!({ "login": "Octocoders", "id": org_id });
    from_org["sender"]["id"] = json!(583231);
    let body = serde_json::to_vec(&from_org).expect("json");
    let routed = accepted(deliver(&app, t, "issues", "orgs-1", &body, |_| {}).await).await;
    inbox::drain(&app.state).await.expect("drain");
    let event = app
        .store()
        .get_webhook_event(t, event_id(&routed))
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(event.status, EventStatus::Processed);
    assert_eq!(event.connection_id, Some(connection));
}

/// The stored event keeps GitHub's delivery id but neither signature: they carry no
/// timestamp, so a database reader could replay a stored one.
#[tokio::test]
async fn the_stored_event_keeps_the_delivery_id_but_no_signature() {
    let app = spawn(&[]).await;
    let t = tenant();
    let body = serde_json::to_vec(&example("issues", "opened")).expect("json");
    let response = deliver(&app, t, "issues", "delivery-no-signature", &body, |h| {
        h.push(("X-Hub-Signature", "sha1=0123456789abcdef".into()));
    })
    .await;
    let event = crate::helpers::stored_event(&app, t, &accepted(response).await).await;
    assert_eq!(event.headers["x-github-delivery"], "delivery-no-signature");
    assert!(event.headers.contains_key("x-github-event"));
    for signature in ["x-hub-signature-256", "x-hub-signature"] {
        assert!(
            !event.headers.contains_key(signature),
            "{signature} in {:?}",
            event.headers
        );
    }
}

/// What a signal says, apart from where it was stored and what the payload adds.
fn said(s: &Signal) -> Value {
    json!({
        "kind": s.kind.to_string(), "dedupe_key": s.dedupe_key, "occurred_at": time(&s.occurred_at),
        "actor": s.actor.as_ref().map(|a| a.id.clone()), "url": s.url, "external_id": s.external_id,
        "title": s.title,
    })
}

/// GitHub's published `issue_comment.created` and `pull_request_review.submitted` examples,
/// moved into the last hours, delivered to one tenant; the same activity served by a fake
/// REST API to another tenant's sync. The comment and the review are the same signals either
/// way; so are a reopening and a push (the published `push` example to a branch), which the
/// next cycle reads from the issue events and the repository events; and delivering the
/// webhooks after the sync adds nothing.
#[tokio::test]
async fn comments_reviews_reopenings_and_pushes_synced_are_the_signals_their_webhooks_give() {
    let (mock, app) = spawn_with_fake_github().await;
    let at = second_now();
    let (commented, reviewed) = (
        secs(&(at - Duration::hours(2))),
        secs(&(at - Duration::hours(1))),
    );
    let mut comment = example("issue_comment", "created");
    comment["comment"]["created_at"] = json!(commented);
    comment["comment"]["updated_at"] = json!(commented);
    comment["issue"]["updated_at"] = json!(commented);
    let mut review = example("pull_request_review", "submitted");
    review["review"]["submitted_at"] = json!(reviewed);
    review["pull_request"]["updated_at"] = json!(reviewed);
    let repo = comment["repository"]["full_name"]
        .as_str()
        .expect("repo")
        .to_string();
    assert_eq!(review["repository"]["full_name"], repo.as_str());

    // By webhook.
    let by_webhook = tenant();
    github_connection(&app, by_webhook, "21031067", "Codertocat").await;
    let deliveries = [
        ("issue_comment", "d-comment", &comment),
        ("pull_request_review", "d-review", &review),
    ];
    for (event, delivery, body) in deliveries {
        let body = serde_json::to_vec(body).expect("json");
        accepted(deliver(&app, by_webhook, event, delivery, &body, |_| {}).await).await;
    }
    inbox::drain(&app.state).await.expect("drain");

    // By sync: the listing shows the commented issue and the reviewed pull request, then the
    // repository's comments and the pull request's reviews, in their REST shapes.
    let by_sync = tenant();
    let connection = connect_through_oauth(&app, &mock, by_sync).await;
    let (issue, pr) = (&comment["issue"], &review["pull_request"]);
    let number = |v: &Value| v["number"].as_u64().expect("number");
    let mut listed_issue = rest_issue(
        issue["id"].as_u64().expect("id"),
        &repo,
        number(issue),
        &secs(&(at - Duration::days(3))),
        &commented,
        None,
        None,
    );
    listed_issue["title"] = issue["title"].clone();
    let mut listed_pr = rest_issue(
        9_000_001,
        &repo,
        number(pr),
        &secs(&(at - Duration::days(3))),
        &reviewed,
        None,
        Some(None),
    );
    listed_pr["title"] = pr["title"].clone();
    Mock::given(method("GET"))
        .and(path("/issues"))
        .respond_with(github_200(
            json!([listed_issue.clone(), listed_pr]),
            "W/\"issues\"",
        ))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/repos/{repo}/releases")))
        .respond_with(github_200(json!([]), "\"releases\""))
        .mount(&mock)
        .await;
    let c = &comment["comment"];
    let mut listed_comment = rest_comment(
        c["id"].as_u64().expect("id"),
        &repo,
        number(issue),
        &commented,
        c["user"]["id"].as_u64().expect("user"),
    );
    listed_comment["html_url"] = c["html_url"].clone();
    Mock::given(method("GET"))
        .and(path(format!("/repos/{repo}/issues/comments")))
        .respond_with(github_200(json!([listed_comment]), "\"comments\""))
        .mount(&mock)
        .await;
    let r = &review["review"];
    let mut listed_review = rest_review(
        r["id"].as_u64().expect("id"),
        &repo,
        number(pr),
        r["state"].as_str().expect("state"),
        Some(&reviewed),
        r["user"]["id"].as_u64().expect("user"),
    );
    listed_review["html_url"] = r["html_url"].clone();
    Mock::given(method("GET"))
        .and(path(format!("/repos/{repo}/pulls/{}/reviews", number(pr))))
        .respond_with(github_200(json!([listed_review]), "\"reviews\""))
        .mount(&mock)
        .await;
    let outcomes = sync_connection(&app, by_sync, connection).await;
    assert_eq!(outcomes[0].result, JobResult::Succeeded, "{outcomes:?}");

    // Then the issue is reopened: by webhook, and in the repository's issue events, which the
    // next cycle reads first (https://docs.github.com/en/rest/issues/events#list-issue-events-for-a-repository).
    let reopened_at = secs(&(at - Duration::minutes(10)));
    let push = pushed_to_a_branch(&at);
    assert_eq!(push["repository"]["full_name"], repo.as_str());
    let body = serde_json::to_vec(&push).expect("json");
    accepted(deliver(&app, by_webhook, "push", "d-push", &body, |_| {}).await).await;
    serve_the_push(&mock, &push, &at).await;
    let mut reopen = example("issues", "reopened");
    reopen["issue"]["updated_at"] = json!(reopened_at);
    let body = serde_json::to_vec(&reopen).expect("json");
    accepted(deliver(&app, by_webhook, "issues", "d-reopen", &body, |_| {}).await).await;
    inbox::drain(&app.state).await.expect("drain");
    let reopen_repo = reopen["repository"]["full_name"].as_str().expect("repo");
    assert_eq!(reopen_repo, repo, "the examples share a repository");
    Mock::given(method("GET"))
        .and(path(format!("/repos/{repo}/issues/events")))
        .respond_with(github_200(
            json!([{
                "id": 6430295168u64, "node_id": "LOE_lADODwFebM5HwC0kzwAAAAF_RoSA",
                "url": format!("https://api.github.com/repos/{repo}/issues/events/6430295168"),
                "actor": reopen["sender"], "event": "reopened", "commit_id": null,
                "commit_url": null, "created_at": reopened_at, "issue": reopen["issue"],
                "performed_via_github_app": null
            }]),
            "\"events\"",
        ))
        .mount(&mock)
        .await;
    let mut relisted = listed_issue.clone();
    relisted["id"] = reopen["issue"]["id"].clone();
    relisted["number"] = reopen["issue"]["number"].clone();
    relisted["title"] = reopen["issue"]["title"].clone();
    relisted["updated_at"] = json!(reopened_at);
    // The listing now shows the reopened issue updated at that moment.
    Mock::given(method("GET"))
        .and(path("/issues"))
        .respond_with(github_200(json!([relisted]), "W/\"relisted\""))
        .with_priority(1)
        .mount(&mock)
        .await;
    let outcomes = sync_connection(&app, by_sync, connection).await;
    assert_eq!(outcomes[0].result, JobResult::Succeeded, "{outcomes:?}");

    let activity = |signals: Vec<Signal>| -> Vec<Value> {
        signals
            .iter()
            .filter(|s| {
                matches!(
                    s.kind.as_str(),
                    "issue_commented" | "pr_reviewed" | "issue_reopened" | "code_pushed"
                )
            })
            .map(said)
            .collect()
    };
    let webhooks = activity(signals_of(&app, by_webhook).await);
    let synced = activity(signals_of(&app, by_sync).await);
    assert_eq!(webhooks.len(), 4, "{webhooks:?}");
    assert_eq!(synced, webhooks);

    // The same deliveries reaching the synced tenant afterwards are the same signals.
    let before = signals_of(&app, by_sync).await.len();
    let later = [("issues", "d-reopen", &reopen), ("push", "d-push", &push)];
    for (event, delivery, body) in deliveries.into_iter().chain(later) {
        let body = serde_json::to_vec(body).expect("json");
        accepted(deliver(&app, by_sync, event, delivery, &body, |_| {}).await).await;
    }
    inbox::drain(&app.state).await.expect("drain");
    assert_eq!(
        signals_of(&app, by_sync).await.len(),
        before,
        "one signal each"
    );
}

/// GitHub's published `push` example to a branch, its head commit made half an hour before `at`.
fn pushed_to_a_branch(at: &chrono::DateTime<chrono::Utc>) -> Value {
    let mut push = examples()
        .into_iter()
        .find(|(event, p)| event == "push" && p["ref"] == "refs/heads/master")
        .map(|(_, p)| p)
        .expect("a push to a branch");
    push["head_commit"]["timestamp"] = json!(secs(&(*at - Duration::minutes(30))));
    push
}

/// The push in the shapes of the REST API: a `PushEvent` of the repository's events listing
/// (without commits, as GitHub.com sends it since 2025:
/// https://docs.github.com/en/rest/using-the-rest-api/github-event-types#pushevent), then its
/// head commit in the Git database (https://docs.github.com/en/rest/git/commits#get-a-commit-object).
async fn serve_the_push(mock: &MockServer, push: &Value, at: &chrono::DateTime<chrono::Utc>) {
    let repo = push["repository"]["full_name"].as_str().expect("repo");
    let api = format!("https://api.github.com/repos/{repo}");
    let (head, sender) = (&push["head_commit"], &push["sender"]);
    let sha = push["after"].as_str().expect("after");
    let event = json!({
        "id": "22249084947",
        "type": "PushEvent",
        "actor": {
            "id": sender["id"], "login": sender["login"], "display_login": sender["login"],
            "gravatar_id": "", "url": sender["url"], "avatar_url": sender["avatar_url"]
        },
        "repo": { "id": push["repository"]["id"], "name": repo, "url": api },
        "payload": {
            "repository_id": push["repository"]["id"], "push_id": 10115855396u64,
            "ref": push["ref"], "head": sha, "before": push["before"]
        },
        "public": true,
        "created_at": secs(&(*at - Duration::minutes(29)))
    });
    Mock::given(method("GET"))
        .and(path(format!("/repos/{repo}/events")))
        .and(query_param("per_page", "100"))
        .respond_with(github_200(json!([event]), "\"repo-events\""))
        .mount(mock)
        .await;
    let person = json!({
        "date": head["timestamp"], "name": head["author"]["name"], "email": head["author"]["email"]
    });
    Mock::given(method("GET"))
        .and(path(format!("/repos/{repo}/git/commits/{sha}")))
        .respond_with(github_200(
            json!({
                "sha": sha,
                "node_id": "C_kwDOAAABbNoAKDYxMTM3MjhmMjdhZTgyYzdiMWExNzdjOGQwM2Y5ZTk2ZTBhZGYyNDY",
                "url": format!("{api}/git/commits/{sha}"),
                "html_url": head["url"],
                "author": person,
                "committer": person,
                "message": head["message"],
                "tree": {
                    "url": format!("{api}/git/trees/{}", head["tree_id"].as_str().expect("tree")),
                    "sha": head["tree_id"]
                },
                "parents": [],
                "verification": {
                    "verified": false, "reason": "unsigned", "signature": null, "payload": null,
                    "verified_at": null
                }
            }),
            "\"commit\"",
        ))
        .mount(mock)
        .await;
}
