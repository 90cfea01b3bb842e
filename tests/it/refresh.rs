//! Token refresh: ahead of expiry, once on a `401`, one upstream call however many callers and
//! instances ask at once, rotated refresh tokens stored, `invalid_grant` → `needs_reauth`, an
//! outage leaving the connection alone, and no token in plaintext at rest.

use std::time::Duration;

use connectors::crypto::Secret;
use connectors::domain::{Connection, TenantId};
use connectors::tokens::{open_tokens, TokenError};
use reqwest::Method;
use serde_json::json;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{json, tenant, TestApp};

fn github_settings(uri: &str) -> Vec<(&'static str, String)> {
    vec![
        ("POBLYSH_GITHUB_CLIENT_ID", "Iv1.refresh-client".into()),
        (
            "POBLYSH_GITHUB_CLIENT_SECRET",
            "github-refresh-secret".into(),
        ),
        ("POBLYSH_GITHUB_AUTH_BASE_URL", uri.into()),
        ("POBLYSH_GITHUB_API_BASE_URL", uri.into()),
    ]
}

async fn spawn(mock: &MockServer) -> TestApp {
    let settings = github_settings(&mock.uri());
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestApp::spawn_with(&pairs).await
}

/// Connects a GitHub account whose expiring user token (60 s) carries a refresh token.
async fn connect_expiring(app: &TestApp, mock: &MockServer, t: TenantId) -> Connection {
    Mock::given(method("POST"))
        .and(path("/login/oauth/access_token"))
        .and(body_string_contains("grant_type=authorization_code"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "ghu_first_access_token",
            "expires_in": 60,
            "refresh_token": "ghr_first_refresh_token",
            "refresh_token_expires_in": 15897600,
            "scope": "",
            "token_type": "bearer"
        })))
        .mount(mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/user"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "login": "octocat", "id": 1 })),
        )
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
    assert_eq!(status, 200);
    let url = app
        .through_hop(started["authorize_url"].as_str().expect("url"))
        .await;
    let state = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .expect("state")
        .1
        .into_owned();
    let (status, body) = json(
        app.anonymous(
            Method::GET,
            &format!("/connect/github/callback?code=c&state={state}"),
        )
        .send()
        .await
        .expect("sent"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["connection"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    app.store()
        .get_connection(t, id)
        .await
        .expect("get")
        .expect("exists")
}

/// The refresh grant answers after a pause, so concurrent callers overlap.
async fn mount_refresh(mock: &MockServer, template: ResponseTemplate, times: u64) {
    Mock::given(method("POST"))
        .and(path("/login/oauth/access_token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains(
            "refresh_token=ghr_first_refresh_token",
        ))
        .respond_with(template.set_delay(Duration::from_millis(300)))
        .expect(times)
        .mount(mock)
        .await;
}

fn rotated() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "access_token": "ghu_second_access_token",
        "expires_in": 28800,
        "refresh_token": "ghr_second_refresh_token",
        "refresh_token_expires_in": 15897600,
        "scope": "",
        "token_type": "bearer"
    }))
}

#[tokio::test]
async fn fifty_concurrent_callers_cause_one_upstream_refresh() {
    let mock = MockServer::start().await;
    let app = spawn(&mock).await;
    let connection = connect_expiring(&app, &mock, tenant()).await;
    mount_refresh(&mock, rotated(), 1).await;

    let calls = (0..50).map(|_| connectors::tokens::access_token(&app.state, &connection));
    let tokens = futures::future::join_all(calls).await;
    for token in tokens {
        assert_eq!(
            token.expect("fresh token").expose(),
            "ghu_second_access_token"
        );
    }
    let stored = open_tokens(&app.state, &connection).await.expect("tokens");
    assert_eq!(
        stored.refresh_token.expect("rotated").expose(),
        "ghr_second_refresh_token"
    );
    assert!(
        stored.expires_at.expect("expiry") > connectors::domain::now() + chrono::Duration::hours(7)
    );
    mock.verify().await;
}

#[tokio::test]
async fn two_instances_sharing_a_database_refresh_once() {
    let mock = MockServer::start().await;
    let app = spawn(&mock).await;
    let settings = github_settings(&mock.uri());
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sibling = app.sibling(&pairs).await;
    let connection = connect_expiring(&app, &mock, tenant()).await;
    mount_refresh(&mock, rotated(), 1).await;

    let here = (0..25).map(|_| connectors::tokens::access_token(&app.state, &connection));
    let there = (0..25).map(|_| connectors::tokens::access_token(&sibling.state, &connection));
    let (a, b) = futures::future::join(
        futures::future::join_all(here),
        futures::future::join_all(there),
    )
    .await;
    for token in a.into_iter().chain(b) {
        assert_eq!(
            token.expect("fresh token").expose(),
            "ghu_second_access_token"
        );
    }
    mock.verify().await;
}

#[tokio::test]
async fn a_token_refused_with_401_is_refreshed_once_then_reused() {
    let mock = MockServer::start().await;
    let app = spawn(&mock).await;
    let connection = connect_expiring(&app, &mock, tenant()).await;
    mount_refresh(&mock, rotated(), 1).await;
    let rejected = Secret::new("ghu_first_access_token");
    let calls = (0..10).map(|_| {
        connectors::tokens::refresh_after_unauthorized(&app.state, &connection, &rejected)
    });
    for token in futures::future::join_all(calls).await {
        assert_eq!(
            token.expect("replacement").expose(),
            "ghu_second_access_token"
        );
    }
    mock.verify().await;
}

#[tokio::test]
async fn the_background_scan_refreshes_tokens_that_expire_within_the_lead_time() {
    let mock = MockServer::start().await;
    let app = spawn(&mock).await;
    let connection = connect_expiring(&app, &mock, tenant()).await;
    mount_refresh(&mock, rotated(), 1).await;
    let refreshed = connectors::tokens::refresh_due(&app.state)
        .await
        .expect("scan");
    assert_eq!(refreshed, 1);
    assert_eq!(
        connectors::tokens::refresh_due(&app.state)
            .await
            .expect("scan"),
        0,
        "now fresh"
    );
    let stored = open_tokens(&app.state, &connection).await.expect("tokens");
    assert_eq!(stored.access_token.expose(), "ghu_second_access_token");
}

#[tokio::test]
async fn an_absurd_expires_in_is_clamped_and_the_scan_goes_on() {
    let mock = MockServer::start().await;
    let app = spawn(&mock).await;
    let first = connect_expiring(&app, &mock, tenant()).await;
    let second = connect_expiring(&app, &mock, tenant()).await;
    // Both connections hold the same refresh token, so both refreshes get this answer (1e13 s,
    // past chrono's last year); unclamped, the first one overflowed the clock and took the
    // whole scan down with it.
    let absurd = ResponseTemplate::new(200).set_body_json(json!({
        "access_token": "ghu_second_access_token",
        "expires_in": 10_000_000_000_000_i64,
        "refresh_token": "ghr_second_refresh_token",
        "token_type": "bearer"
    }));
    mount_refresh(&mock, absurd, 2).await;
    let refreshed = connectors::tokens::refresh_due(&app.state)
        .await
        .expect("scan");
    assert_eq!(refreshed, 2);
    let ceiling = connectors::domain::now()
        + chrono::Duration::seconds(connectors::connector::MAX_TOKEN_LIFETIME_SECS);
    for connection in [&first, &second] {
        let stored = open_tokens(&app.state, connection).await.expect("tokens");
        assert_eq!(stored.access_token.expose(), "ghu_second_access_token");
        assert!(stored.expires_at.expect("expiry") <= ceiling);
    }
    mock.verify().await;
}

#[tokio::test]
async fn invalid_grant_moves_the_connection_to_needs_reauth() {
    let mock = MockServer::start().await;
    let app = spawn(&mock).await;
    let t = tenant();
    let connection = connect_expiring(&app, &mock, t).await;
    // GitHub reports a dead refresh token with status 200 and an error member.
    mount_refresh(
        &mock,
        ResponseTemplate::new(200).set_body_json(json!({
            "error": "bad_refresh_token",
            "error_description": "The refresh token passed is incorrect or expired."
        })),
        1,
    )
    .await;
    let err = connectors::tokens::access_token(&app.state, &connection)
        .await
        .expect_err("refused");
    assert!(matches!(err, TokenError::NeedsReauth), "{err:?}");
    let (_, body) = app
        .get_json(t, &format!("/connections/{}", connection.id))
        .await;
    assert_eq!(body["status"], "needs_reauth");
    assert!(body["last_error"]
        .as_str()
        .expect("last_error")
        .contains("bad_refresh_token"));
    let (_, listed) = app.get_json(t, "/connections?status=needs_reauth").await;
    assert_eq!(listed["connections"].as_array().expect("array").len(), 1);
}

#[tokio::test]
async fn a_provider_outage_leaves_the_connection_active() {
    let mock = MockServer::start().await;
    let app = spawn(&mock).await;
    let t = tenant();
    let connection = connect_expiring(&app, &mock, t).await;
    mount_refresh(
        &mock,
        ResponseTemplate::new(503).set_body_string("unavailable"),
        1,
    )
    .await;
    let err = connectors::tokens::access_token(&app.state, &connection)
        .await
        .expect_err("outage");
    assert!(matches!(err, TokenError::Provider(_)), "{err:?}");
    let (_, body) = app
        .get_json(t, &format!("/connections/{}", connection.id))
        .await;
    assert_eq!(body["status"], "active");
    let stored = open_tokens(&app.state, &connection).await.expect("tokens");
    assert_eq!(
        stored.access_token.expose(),
        "ghu_first_access_token",
        "old tokens kept"
    );
}

#[tokio::test]
async fn tokens_are_never_stored_in_plaintext() {
    let mock = MockServer::start().await;
    let app = spawn(&mock).await;
    let connection = connect_expiring(&app, &mock, tenant()).await;
    let stored = open_tokens(&app.state, &connection).await.expect("tokens");
    assert_eq!(
        stored.access_token.expose(),
        "ghu_first_access_token",
        "the vault opens them"
    );
    let dump = database_dump(&app).await;
    assert!(!dump.is_empty());
    for secret in [
        "ghu_first_access_token",
        "ghr_first_refresh_token",
        "github-refresh-secret",
    ] {
        assert!(!dump.contains(secret), "{secret} found in the database");
    }
}

/// Everything the database holds, as text: the SQLite files, or every row of PostgreSQL.
async fn database_dump(app: &TestApp) -> String {
    if let Some(path) = app.database_url.strip_prefix("sqlite://") {
        // Checkpoint-free: read the main file and the write-ahead log as they are.
        let mut bytes = Vec::new();
        for suffix in ["", "-wal"] {
            if let Ok(b) = std::fs::read(format!("{path}{suffix}")) {
                bytes.extend(b);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        use sqlx::{Connection as _, Row};
        let mut conn = sqlx::PgConnection::connect(&app.database_url)
            .await
            .expect("connect");
        let mut dump = String::new();
        for table in ["connections", "oauth_states"] {
            let rows = sqlx::query(&format!("SELECT row_to_json(t)::text AS j FROM {table} t"))
                .fetch_all(&mut conn)
                .await
                .expect("dump");
            for row in rows {
                dump.push_str(&row.get::<String, _>("j"));
            }
        }
        dump
    }
}
