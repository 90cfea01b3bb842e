//! Keyset pagination: every row exactly once, in order, even while rows are inserted; cursors
//! that are tampered with, foreign, or for other filters are refused.

use std::collections::HashSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use connectors::domain::{now, JobStatus, JobType};
use serde_json::Value;

use crate::helpers::{assert_problem, job, signal, tenant, TestApp};

/// Follows `next_cursor` from `path` to the end, calling `between` after each page.
async fn walk<F, Fut>(
    app: &TestApp,
    t: connectors::domain::TenantId,
    path: &str,
    items: &str,
    mut between: F,
) -> Vec<Value>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0.. {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}cursor={c}"),
            None => path.to_string(),
        };
        let (status, body) = app.get_json(t, &url).await;
        assert_eq!(status, 200, "{url}: {body}");
        let rows = body[items].as_array().expect("items array").clone();
        assert!(
            body.get("next_cursor").is_some(),
            "next_cursor is always present"
        );
        seen.extend(rows);
        between(page).await;
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(page < 1000, "pagination does not end");
    }
    seen
}

fn time(v: &Value, field: &str) -> DateTime<Utc> {
    v[field]
        .as_str()
        .expect("timestamp")
        .parse()
        .expect("RFC 3339")
}

#[tokio::test]
async fn signal_pages_cover_every_row_once_in_order_while_rows_arrive() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let conn = app.connection(t, "github").await;
    // Several rows share a timestamp so the id tie-break is exercised.
    let mut rows: Vec<_> = (0..237)
        .map(|i| signal(&conn, "pr_opened", 10 + i / 3))
        .collect();
    let shared = rows[0].occurred_at;
    for r in rows.iter_mut().take(9) {
        r.occurred_at = shared;
    }
    let original = app.signals(rows).await;

    let store = app.store();
    let conn_for_inserts = conn.clone();
    let seen = walk(&app, t, "/signals?limit=20", "signals", |page| {
        let store = store.clone();
        let conn = conn_for_inserts.clone();
        async move {
            // Newer rows arriving mid-walk land before the cursor and must not disturb it.
            let mut fresh = signal(&conn, "issue_created", 0);
            fresh.occurred_at = now();
            fresh.dedupe_key = format!("fresh-{page}");
            store.insert_signals(&[fresh]).await.expect("insert");
        }
    })
    .await;

    let ids: Vec<&str> = seen.iter().map(|s| s["id"].as_str().expect("id")).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no row is served twice");
    for s in &original {
        assert!(
            unique.contains(s.id.to_string().as_str()),
            "row {} was skipped",
            s.id
        );
    }
    for pair in seen.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let key_a = (time(a, "occurred_at"), a["id"].as_str().expect("id"));
        let key_b = (time(b, "occurred_at"), b["id"].as_str().expect("id"));
        assert!(
            key_a > key_b,
            "newest first, ties by id descending: {key_a:?} then {key_b:?}"
        );
    }
}

#[tokio::test]
async fn job_pages_cover_every_row_once_newest_first() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let conn = app.connection(t, "github").await;
    for i in 0..55 {
        app.job(job(&conn, JobStatus::Succeeded, JobType::Incremental, i))
            .await;
    }
    let seen = walk(&app, t, "/jobs?limit=10", "jobs", |_| async {}).await;
    assert_eq!(seen.len(), 55);
    for pair in seen.windows(2) {
        assert!(time(&pair[0], "created_at") >= time(&pair[1], "created_at"));
    }
}

#[tokio::test]
async fn connection_pages_cover_every_row_once_oldest_first() {
    let app = TestApp::spawn().await;
    let t = tenant();
    for i in 0..23 {
        app.connection_at(t, "github", now() - chrono::Duration::minutes(100 - i))
            .await;
    }
    let seen = walk(&app, t, "/connections?limit=5", "connections", |_| async {}).await;
    assert_eq!(seen.len(), 23);
    let unique: HashSet<&str> = seen.iter().map(|c| c["id"].as_str().expect("id")).collect();
    assert_eq!(unique.len(), 23);
    for pair in seen.windows(2) {
        assert!(time(&pair[0], "created_at") <= time(&pair[1], "created_at"));
    }
}

#[tokio::test]
async fn the_last_page_has_a_null_cursor() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let conn = app.connection(t, "github").await;
    app.signals((0..3).map(|i| signal(&conn, "pr_opened", i)).collect())
        .await;
    let (_, body) = app.get_json(t, "/signals?limit=3").await;
    assert_eq!(body["signals"].as_array().expect("array").len(), 3);
    assert_eq!(body["next_cursor"], Value::Null);
    let (_, empty) = app.get_json(tenant(), "/signals").await;
    assert_eq!(empty["signals"], serde_json::json!([]));
    assert_eq!(empty["next_cursor"], Value::Null);
}

async fn first_cursor(app: &TestApp, t: connectors::domain::TenantId, path: &str) -> String {
    let (status, body) = app.get_json(t, path).await;
    assert_eq!(status, 200, "{body}");
    body["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string()
}

#[tokio::test]
async fn a_tampered_cursor_is_refused() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let conn = app.connection(t, "github").await;
    app.signals((0..5).map(|i| signal(&conn, "pr_opened", i)).collect())
        .await;
    let cursor = first_cursor(&app, t, "/signals?limit=2").await;
    let mut bytes = URL_SAFE_NO_PAD.decode(&cursor).expect("base64url");
    // Move the position one microsecond: a forged cursor, MAC left as it was.
    let last = 1 + 16 + 7;
    bytes[last] ^= 0x01;
    let forged = URL_SAFE_NO_PAD.encode(&bytes);
    for bad in [
        forged.as_str(),
        "not-a-cursor",
        "AAAA",
        &cursor[..cursor.len() - 2],
    ] {
        let response = app
            .get(t, &format!("/signals?limit=2&cursor={bad}"))
            .send()
            .await
            .expect("sent");
        let body = assert_problem(response, 400, "INVALID_CURSOR").await;
        assert!(body["details"]["cursor"].is_string());
    }
}

#[tokio::test]
async fn a_cursor_from_another_tenant_is_refused() {
    let app = TestApp::spawn().await;
    let (a, b) = (tenant(), tenant());
    let conn = app.connection(a, "github").await;
    app.signals((0..5).map(|i| signal(&conn, "pr_opened", i)).collect())
        .await;
    let cursor = first_cursor(&app, a, "/signals?limit=2").await;
    let response = app
        .get(b, &format!("/signals?limit=2&cursor={cursor}"))
        .send()
        .await
        .expect("sent");
    assert_problem(response, 400, "INVALID_CURSOR").await;
}

#[tokio::test]
async fn a_cursor_used_with_other_filters_or_another_list_is_refused() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let conn = app.connection(t, "github").await;
    app.signals((0..5).map(|i| signal(&conn, "pr_opened", i)).collect())
        .await;
    for i in 0..3 {
        app.job(job(&conn, JobStatus::Succeeded, JobType::Full, i))
            .await;
    }
    let cursor = first_cursor(&app, t, "/signals?limit=2&kind=pr_opened").await;
    for path in [
        format!("/signals?limit=2&cursor={cursor}"),
        format!("/signals?limit=2&kind=pr_merged&cursor={cursor}"),
        format!("/signals?limit=2&kind=pr_opened&provider=github&cursor={cursor}"),
        format!("/jobs?limit=2&cursor={cursor}"),
        format!("/connections?cursor={cursor}"),
    ] {
        let response = app.get(t, &path).send().await.expect("sent");
        assert_problem(response, 400, "INVALID_CURSOR").await;
    }
    // The same filters with another page size are the same list.
    let (status, _) = app
        .get_json(
            t,
            &format!("/signals?limit=3&kind=pr_opened&cursor={cursor}"),
        )
        .await;
    assert_eq!(status, 200);
}
