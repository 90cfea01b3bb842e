//! Each filter of each list route selects exactly the rows it names.

use chrono::Duration;
use connectors::domain::{format_time, now, parse_rfc3339, JobStatus, JobType};
use serde_json::Value;

use crate::helpers::{job, signal, tenant, TestApp};

fn ids(body: &Value, items: &str) -> Vec<String> {
    body[items]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| v["id"].as_str().expect("id").to_string())
        .collect()
}

fn enc(t: &connectors::domain::Timestamp) -> String {
    url::form_urlencoded::byte_serialize(format_time(t).as_bytes()).collect()
}

#[tokio::test]
async fn signals_filter_by_provider_connection_and_kind() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let gh = app.connection(t, "github").await;
    let gh2 = app.connection(t, "github").await;
    let slack = app.connection(t, "slack").await;
    let s = app
        .signals(vec![
            signal(&gh, "pr_opened", 5),
            signal(&gh, "pr_merged", 4),
            signal(&gh2, "pr_opened", 3),
            signal(&slack, "message_posted", 2),
        ])
        .await;

    let (_, body) = app.get_json(t, "/signals?provider=slack").await;
    assert_eq!(ids(&body, "signals"), [s[3].id.to_string()]);
    let (_, body) = app
        .get_json(t, &format!("/signals?connection_id={}", gh.id))
        .await;
    assert_eq!(
        ids(&body, "signals"),
        [s[1].id.to_string(), s[0].id.to_string()]
    );
    let (_, body) = app.get_json(t, "/signals?kind=pr_opened").await;
    assert_eq!(
        ids(&body, "signals"),
        [s[2].id.to_string(), s[0].id.to_string()]
    );
    let (_, body) = app
        .get_json(
            t,
            &format!("/signals?kind=pr_opened&connection_id={}", gh2.id),
        )
        .await;
    assert_eq!(ids(&body, "signals"), [s[2].id.to_string()]);
}

#[tokio::test]
async fn signal_time_bounds_are_inclusive() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let s = app
        .signals(
            (0..5)
                .map(|i| signal(&conn, "issue_created", 10 * i))
                .collect(),
        )
        .await;
    // s[1] is 10 minutes old, s[3] 30 minutes old: both bounds hit a row exactly.
    let path = format!(
        "/signals?occurred_after={}&occurred_before={}",
        enc(&s[3].occurred_at),
        enc(&s[1].occurred_at)
    );
    let (status, body) = app.get_json(t, &path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ids(&body, "signals"),
        [
            s[1].id.to_string(),
            s[2].id.to_string(),
            s[3].id.to_string()
        ]
    );
}

#[tokio::test]
async fn payloads_appear_only_when_asked_for_and_on_the_single_signal() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let s = app
        .signals(vec![signal(&conn, "pr_opened", 1)])
        .await
        .remove(0);

    let (_, list) = app.get_json(t, "/signals").await;
    let item = &list["signals"][0];
    assert!(item.get("payload").is_none(), "{item}");
    assert_eq!(item["kind"], "pr_opened");
    assert_eq!(item["actor"]["name"], "octocat");
    assert_eq!(item["title"], s.title.clone().expect("title"));

    let (_, with) = app.get_json(t, "/signals?include_payload=true").await;
    assert_eq!(with["signals"][0]["payload"], s.payload);

    let (status, one) = app.get_json(t, &format!("/signals/{}", s.id)).await;
    assert_eq!(status, 200);
    assert_eq!(one["payload"], s.payload);
    assert_eq!(
        one["external_id"],
        s.external_id.clone().expect("external id")
    );
    // The same instant, however many digits of the second it is written with.
    let occurred = one["occurred_at"].as_str().map(parse_rfc3339);
    assert_eq!(occurred, Some(Ok(s.occurred_at)), "{one}");
}

#[tokio::test]
async fn a_redelivered_signal_is_stored_once() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let first = signal(&conn, "pr_opened", 1);
    let mut again = signal(&conn, "pr_opened", 1);
    again.dedupe_key = first.dedupe_key.clone();
    let inserted = app
        .store()
        .insert_signals(&[first, again])
        .await
        .expect("insert");
    assert_eq!(inserted, 1);
    let (_, body) = app.get_json(t, "/signals").await;
    assert_eq!(body["signals"].as_array().expect("array").len(), 1);
}

#[tokio::test]
async fn jobs_filter_by_status_type_provider_connection_and_times() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let gh = app.connection(t, "github").await;
    let jira = app.connection(t, "jira").await;
    let queued = app
        .job(job(&gh, JobStatus::Queued, JobType::Incremental, 50))
        .await;
    let failed = app
        .job(job(&gh, JobStatus::Failed, JobType::Full, 40))
        .await;
    let done = app
        .job(job(&jira, JobStatus::Succeeded, JobType::Webhook, 5))
        .await;

    let check = |path: &'static str, expected: Vec<String>| {
        let app = &app;
        async move {
            let (status, body) = app.get_json(t, path).await;
            assert_eq!(status, 200, "{path}: {body}");
            assert_eq!(ids(&body, "jobs"), expected, "{path}");
        }
    };
    check("/jobs?status=failed", vec![failed.id.to_string()]).await;
    check("/jobs?job_type=webhook", vec![done.id.to_string()]).await;
    check(
        "/jobs?provider=github",
        vec![failed.id.to_string(), queued.id.to_string()],
    )
    .await;
    let (_, body) = app
        .get_json(t, &format!("/jobs?connection_id={}", jira.id))
        .await;
    assert_eq!(ids(&body, "jobs"), [done.id.to_string()]);

    let since = now() - Duration::minutes(45);
    let (_, body) = app
        .get_json(t, &format!("/jobs?started_after={}", enc(&since)))
        .await;
    assert_eq!(
        ids(&body, "jobs"),
        [done.id.to_string(), failed.id.to_string()]
    );
    let (_, body) = app
        .get_json(t, &format!("/jobs?finished_after={}", enc(&since)))
        .await;
    assert_eq!(
        ids(&body, "jobs"),
        [done.id.to_string(), failed.id.to_string()]
    );

    let (_, one) = app.get_json(t, &format!("/jobs/{}", failed.id)).await;
    assert_eq!(one["status"], "failed");
    assert_eq!(one["error"], "upstream answered 500");
    assert_eq!(one["job_type"], "full");
}

#[tokio::test]
async fn connections_filter_by_provider_and_status_and_never_show_tokens() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let gh = app.connection(t, "github").await;
    app.connection(t, "slack").await;
    let (_, body) = app
        .get_json(t, "/connections?provider=github&status=active")
        .await;
    assert_eq!(ids(&body, "connections"), [gh.id.to_string()]);
    let (_, body) = app.get_json(t, "/connections?status=revoked").await;
    assert_eq!(body["connections"], serde_json::json!([]));

    let (_, one) = app.get_json(t, &format!("/connections/{}", gh.id)).await;
    assert_eq!(one["status"], "active");
    assert_eq!(one["external_account"]["id"], gh.external_account_id);
    assert_eq!(one["external_account"]["display_name"], "octocat");
    assert_eq!(one["scopes"], serde_json::json!(["repo"]));
    for field in [
        "created_at",
        "updated_at",
        "token_expires_at",
        "last_synced_at",
    ] {
        assert!(one.get(field).is_some(), "{field}");
    }
    let text = one.to_string();
    assert!(
        !text.contains("token\":") && !text.contains("sealed"),
        "{text}"
    );
}
