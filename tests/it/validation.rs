//! Every malformed query parameter, path id and filter combination of every list route is a
//! `400 VALIDATION_FAILED` naming the field; nothing a client sends produces a `5xx`.

use crate::helpers::{assert_problem, tenant, TestApp};

/// `(route, parameter, bad value)`.
const BAD_PARAMETERS: &[(&str, &str, &str)] = &[
    ("/signals", "limit", "0"),
    ("/signals", "limit", "101"),
    ("/signals", "limit", "-5"),
    ("/signals", "limit", "fifty"),
    ("/signals", "limit", ""),
    ("/signals", "provider", "myspace"),
    ("/signals", "connection_id", "42"),
    ("/signals", "kind", "pr_exploded"),
    ("/signals", "occurred_after", "yesterday"),
    ("/signals", "occurred_after", "2026-02-30T00:00:00Z"),
    ("/signals", "occurred_before", "2026-01-01"),
    ("/signals", "include_payload", "yes"),
    ("/signals", "bogus", "1"),
    ("/jobs", "limit", "1000"),
    ("/jobs", "status", "done"),
    ("/jobs", "provider", "GitHub"),
    ("/jobs", "connection_id", "not-a-uuid"),
    ("/jobs", "job_type", "partial"),
    ("/jobs", "started_after", "12:00"),
    ("/jobs", "finished_after", "2026-13-01T00:00:00Z"),
    ("/jobs", "occurred_after", "2026-01-01T00:00:00Z"),
    ("/connections", "limit", "0"),
    ("/connections", "provider", "orkut"),
    ("/connections", "status", "ACTIVE"),
    ("/connections", "kind", "pr_opened"),
];

#[tokio::test]
async fn each_bad_parameter_is_refused_and_named() {
    let app = TestApp::spawn().await;
    let t = tenant();
    for (route, name, value) in BAD_PARAMETERS {
        let path = format!("{route}?{name}={}", urlencode(value));
        let response = app.get(t, &path).send().await.expect("sent");
        let body = assert_problem(response, 400, "VALIDATION_FAILED").await;
        assert!(
            body["details"][name].is_string(),
            "{path}: details should name {name}: {body}"
        );
    }
}

#[tokio::test]
async fn every_bad_parameter_is_reported_at_once() {
    let app = TestApp::spawn().await;
    let response = app
        .get(
            tenant(),
            "/signals?limit=0&kind=nope&occurred_after=soon&extra=1",
        )
        .send()
        .await
        .expect("sent");
    let body = assert_problem(response, 400, "VALIDATION_FAILED").await;
    for field in ["limit", "kind", "occurred_after", "extra"] {
        assert!(body["details"][field].is_string(), "{field} in {body}");
    }
}

#[tokio::test]
async fn a_repeated_parameter_is_refused() {
    let app = TestApp::spawn().await;
    let response = app
        .get(tenant(), "/jobs?status=queued&status=failed")
        .send()
        .await
        .expect("sent");
    let body = assert_problem(response, 400, "VALIDATION_FAILED").await;
    assert_eq!(body["details"]["status"], "given more than once");
}

#[tokio::test]
async fn an_inverted_time_range_is_refused() {
    let app = TestApp::spawn().await;
    let response = app
        .get(
            tenant(),
            "/signals?occurred_after=2026-02-01T00:00:00Z&occurred_before=2026-01-01T00:00:00Z",
        )
        .send()
        .await
        .expect("sent");
    let body = assert_problem(response, 400, "VALIDATION_FAILED").await;
    assert!(body["details"]["occurred_after"].is_string());
}

#[tokio::test]
async fn path_ids_that_are_not_uuids_are_refused() {
    let app = TestApp::spawn().await;
    for route in ["/connections", "/signals", "/jobs"] {
        for id in [
            "42",
            "not-a-uuid",
            "0190f5f0-0000-7000-8000-00000000000g",
            "%00",
        ] {
            let response = app
                .get(tenant(), &format!("{route}/{id}"))
                .send()
                .await
                .expect("sent");
            let body = assert_problem(response, 400, "VALIDATION_FAILED").await;
            assert_eq!(body["details"]["id"], "must be a UUID", "{route}/{id}");
        }
    }
}

#[tokio::test]
async fn a_limit_at_either_bound_is_accepted() {
    let app = TestApp::spawn().await;
    for route in ["/signals", "/jobs", "/connections"] {
        for limit in [1, 100] {
            let (status, _) = app
                .get_json(tenant(), &format!("{route}?limit={limit}"))
                .await;
            assert_eq!(status, 200, "{route}?limit={limit}");
        }
    }
}

#[tokio::test]
async fn timestamps_with_offsets_are_accepted() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .get_json(
            tenant(),
            "/signals?occurred_after=2026-01-01T00:00:00%2B02:00&occurred_before=2026-12-31T23:59:59.999999Z",
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
