//! `/endpoints`: registration, validation, tenant rules and secret rotation.

use reqwest::Method;
use serde_json::json;
use wiremock::MockServer;

use crate::helpers::{assert_problem, tenant, TestApp};
use crate::push_support::{app, endpoint_to, get_as, register};

#[tokio::test]
async fn a_registered_endpoint_shows_its_secret_once_and_is_listed_and_read_back() {
    let app = app().await;
    let receiver = MockServer::start().await;
    let t = tenant();
    let created = register(
        &app,
        Some(t),
        json!({
            "url": format!("{}/hooks", receiver.uri()),
            "description": "Core",
            "event_types": ["signal.created"],
            "filter": { "providers": ["github"], "kinds": ["pr_merged"] },
        }),
    )
    .await;
    let secret = created["secret"].as_str().expect("secret");
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(created["tenant_id"], t.to_string());
    assert_eq!(created["status"], "active");
    assert_eq!(created["event_types"], json!(["signal.created"]));
    assert_eq!(created["filter"]["kinds"], json!(["pr_merged"]));
    let id = created["id"].as_str().expect("id");

    let (status, one) = get_as(&app, Some(t), &format!("/endpoints/{id}")).await;
    assert_eq!(status, 200);
    assert!(
        one.get("secret").is_none(),
        "the secret is shown only at creation"
    );
    assert_eq!(one["backlog"], 0);
    assert_eq!(one["description"], "Core");
    let (_, list) = get_as(&app, Some(t), "/endpoints").await;
    assert_eq!(list["endpoints"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["next_cursor"], serde_json::Value::Null);
}

#[tokio::test]
async fn a_foreign_tenants_endpoint_is_not_found_and_a_wide_one_is_managed_without_the_header() {
    let app = app().await;
    let receiver = MockServer::start().await;
    let (owner, stranger) = (tenant(), tenant());
    let created = endpoint_to(&app, Some(owner), &receiver).await;
    let path = format!("/endpoints/{}", created["id"].as_str().expect("id"));

    for probe in [Some(stranger), None] {
        let (status, body) = get_as(&app, probe, &path).await;
        assert_eq!(status, 404, "{body}");
        let mut request = app.operator(Method::DELETE, &path);
        if let Some(t) = probe {
            request = request.header("X-Tenant-Id", t.to_string());
        }
        assert_problem(request.send().await.expect("sent"), 404, "NOT_FOUND").await;
    }
    let (_, list) = get_as(&app, Some(stranger), "/endpoints").await;
    assert_eq!(list["endpoints"], json!([]));

    let wide = endpoint_to(&app, None, &receiver).await;
    assert_eq!(wide["tenant_id"], serde_json::Value::Null);
    let wide_path = format!("/endpoints/{}", wide["id"].as_str().expect("id"));
    assert_eq!(get_as(&app, None, &wide_path).await.0, 200);
    assert_eq!(get_as(&app, Some(owner), &wide_path).await.0, 404);
    let deleted = app
        .operator(Method::DELETE, &wide_path)
        .send()
        .await
        .expect("sent");
    assert_eq!(deleted.status(), 204);
    assert_eq!(get_as(&app, None, &wide_path).await.0, 404);
}

#[tokio::test]
async fn bad_urls_and_unknown_filters_are_refused_naming_each_field() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let post = |body: serde_json::Value| {
        app.operator(Method::POST, "/endpoints")
            .header("X-Tenant-Id", t.to_string())
            .json(&body)
    };
    let problem = assert_problem(
        post(json!({
            "url": "http://core.example.com/hooks",
            "event_types": ["signal.deleted"],
            "filter": { "providers": ["myspace"], "kinds": ["pr_exploded"] },
        }))
        .send()
        .await
        .expect("sent"),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    for field in ["url", "event_types", "filter.providers", "filter.kinds"] {
        assert!(
            problem["details"][field].is_string(),
            "{field} in {problem}"
        );
    }
    for url in [
        "https://user:secret@core.example.com/hooks",
        "https://127.0.0.1/hooks",
        "https://10.1.2.3/hooks",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hooks",
        "not a url",
    ] {
        let problem = assert_problem(
            post(json!({ "url": url })).send().await.expect("sent"),
            400,
            "VALIDATION_FAILED",
        )
        .await;
        assert!(problem["details"]["url"].is_string(), "{url}: {problem}");
    }
    let unknown = assert_problem(
        post(json!({ "url": "https://8.8.8.8/", "colour": "red" }))
            .send()
            .await
            .expect("sent"),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert!(unknown["details"]["body"].is_string(), "{unknown}");
}

#[tokio::test]
async fn a_patch_changes_what_it_names_and_keeps_the_rest() {
    let app = app().await;
    let receiver = MockServer::start().await;
    let t = tenant();
    let created = endpoint_to(&app, Some(t), &receiver).await;
    let path = format!("/endpoints/{}", created["id"].as_str().expect("id"));
    let response = app
        .operator(Method::PATCH, &path)
        .header("X-Tenant-Id", t.to_string())
        .json(&json!({ "description": "renamed", "event_types": ["connection.status_changed"] }))
        .send()
        .await
        .expect("sent");
    let (status, body) = crate::helpers::json(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["description"], "renamed");
    assert_eq!(body["event_types"], json!(["connection.status_changed"]));
    assert_eq!(body["url"], created["url"]);
    assert_eq!(body["include_payload"], true);
    let bad = app
        .operator(Method::PATCH, &path)
        .header("X-Tenant-Id", t.to_string())
        .json(&json!({ "filter": { "kinds": ["pr_exploded"] } }))
        .send()
        .await
        .expect("sent");
    let problem = assert_problem(bad, 400, "VALIDATION_FAILED").await;
    assert!(problem["details"]["filter.kinds"].is_string(), "{problem}");
}

#[tokio::test]
async fn rotating_answers_a_new_secret_and_the_overlap() {
    let app = app().await;
    let receiver = MockServer::start().await;
    let t = tenant();
    let created = endpoint_to(&app, Some(t), &receiver).await;
    let path = format!(
        "/endpoints/{}/secret/rotate",
        created["id"].as_str().expect("id")
    );
    let rotate = |tenant_id: connectors::domain::TenantId| {
        app.operator(Method::POST, &path)
            .header("X-Tenant-Id", tenant_id.to_string())
    };
    let (status, rotated) = crate::helpers::json(rotate(t).send().await.expect("sent")).await;
    assert_eq!(status, 200, "{rotated}");
    let secret = rotated["secret"].as_str().expect("secret");
    assert!(secret.starts_with("whsec_"));
    assert_ne!(secret, created["secret"].as_str().expect("first secret"));
    let until = chrono::DateTime::parse_from_rfc3339(
        rotated["previous_secret_expires_at"]
            .as_str()
            .expect("until"),
    )
    .expect("RFC 3339");
    let hours = (until.with_timezone(&chrono::Utc) - connectors::domain::now()).num_minutes();
    assert!((23 * 60..=24 * 60).contains(&hours), "{hours} minutes");
    assert_problem(
        rotate(tenant()).send().await.expect("sent"),
        404,
        "NOT_FOUND",
    )
    .await;
}

#[tokio::test]
async fn the_configuration_summary_shows_the_push_rules() {
    let app = app().await;
    let (status, body) = get_as(&app, None, "/config/summary").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["push"],
        json!({ "allow_http": true, "allowed_addresses": ["127.0.0.1/32"], "secret_overlap_secs": 86_400 })
    );
}
