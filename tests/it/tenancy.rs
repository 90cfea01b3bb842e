//! One tenant never sees another's rows: not by list, not by id, not by cursor.

use connectors::domain::{JobStatus, JobType};
use reqwest::Method;

use crate::helpers::{assert_problem, job, signal, tenant, TestApp};

#[tokio::test]
async fn lists_show_only_the_callers_rows() {
    let app = TestApp::spawn().await;
    let (a, b) = (tenant(), tenant());
    let conn_a = app.connection(a, "github").await;
    let conn_b = app.connection(b, "github").await;
    app.signals(vec![
        signal(&conn_a, "pr_opened", 1),
        signal(&conn_b, "pr_opened", 1),
    ])
    .await;
    app.job(job(&conn_a, JobStatus::Queued, JobType::Full, 1))
        .await;

    for (t, conn) in [(a, &conn_a), (b, &conn_b)] {
        let (_, signals) = app.get_json(t, "/signals").await;
        let signals = signals["signals"].as_array().expect("array");
        assert_eq!(signals.len(), 1);
        assert_eq!(signals[0]["connection_id"], conn.id.to_string());
        let (_, connections) = app.get_json(t, "/connections").await;
        let connections = connections["connections"].as_array().expect("array");
        assert_eq!(connections.len(), 1);
        assert_eq!(connections[0]["id"], conn.id.to_string());
    }
    let (_, jobs_b) = app.get_json(b, "/jobs").await;
    assert_eq!(jobs_b["jobs"], serde_json::json!([]));
}

#[tokio::test]
async fn another_tenants_rows_by_id_look_like_they_do_not_exist() {
    let app = TestApp::spawn().await;
    let (owner, stranger) = (tenant(), tenant());
    let conn = app.connection(owner, "github").await;
    let s = app
        .signals(vec![signal(&conn, "pr_merged", 1)])
        .await
        .remove(0);
    let j = app
        .job(job(&conn, JobStatus::Failed, JobType::Incremental, 1))
        .await;

    for (path, code) in [
        (format!("/connections/{}", conn.id), "CONNECTION_NOT_FOUND"),
        (format!("/signals/{}", s.id), "NOT_FOUND"),
        (format!("/jobs/{}", j.id), "NOT_FOUND"),
    ] {
        let (status, _) = app.get_json(owner, &path).await;
        assert_eq!(status, 200, "the owner sees {path}");
        let response = app.get(stranger, &path).send().await.expect("sent");
        assert_problem(response, 404, code).await;
    }
}

#[tokio::test]
async fn filtering_by_another_tenants_connection_finds_nothing() {
    let app = TestApp::spawn().await;
    let (owner, stranger) = (tenant(), tenant());
    let conn = app.connection(owner, "github").await;
    app.signals(vec![signal(&conn, "pr_merged", 1)]).await;
    app.job(job(&conn, JobStatus::Queued, JobType::Full, 1))
        .await;
    for path in [
        format!("/signals?connection_id={}", conn.id),
        format!("/jobs?connection_id={}", conn.id),
    ] {
        let response = app
            .operator(Method::GET, &path)
            .header("X-Tenant-Id", stranger.to_string())
            .send()
            .await
            .expect("sent");
        let (status, body) = crate::helpers::json(response).await;
        assert_eq!(status, 200);
        let items = body
            .as_object()
            .expect("object")
            .values()
            .find_map(|v| v.as_array())
            .expect("items");
        assert!(items.is_empty(), "{path}: {body}");
    }
}
