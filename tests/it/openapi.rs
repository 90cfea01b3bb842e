//! The committed `openapi.json` is exactly what the code generates, and the document says what
//! the routes do: security, header and query parameters in the right place, error responses.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{json, TestApp};

fn committed() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    std::fs::read_to_string(path).expect("openapi.json is committed at the repository root")
}

#[test]
fn the_committed_openapi_json_is_current() {
    assert!(
        committed() == connectors::openapi::json(),
        "openapi.json is stale: regenerate it with `cargo run -- openapi > openapi.json`"
    );
}

#[tokio::test]
async fn the_served_document_is_the_committed_one() {
    let app = TestApp::spawn().await;
    let response = app
        .anonymous(Method::GET, "/openapi.json")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.text().await.expect("text"), committed());
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            ops.push((method.to_uppercase(), path.clone(), op.clone()));
        }
    }
    ops
}

#[tokio::test]
async fn tenant_operations_declare_security_the_tenant_header_and_their_errors() {
    let app = TestApp::spawn().await;
    let (_, doc) = json(
        app.anonymous(Method::GET, "/openapi.json")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"));
    assert_eq!(
        doc["components"]["securitySchemes"]["operator_token"]["scheme"],
        "bearer"
    );

    let mut tenant_ops = 0;
    for (method, path, op) in operations(&doc) {
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let tenant_header = params
            .iter()
            .any(|p| p["name"] == "X-Tenant-Id" && p["in"] == "header" && p["required"] == true);
        let secured = op["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("operator_token").is_some()));
        if tenant_header {
            tenant_ops += 1;
            assert!(secured, "{method} {path} needs the operator token");
            for status in ["400", "401", "500", "503"] {
                let content = &op["responses"][status]["content"];
                assert!(
                    content.get("application/problem+json").is_some(),
                    "{method} {path} {status}"
                );
            }
        }
        for p in &params {
            let name = p["name"].as_str().expect("name");
            // Headers are Title-Case with dashes; query parameters snake_case.
            let expected =
                if name.starts_with(|c: char| c.is_ascii_uppercase()) && name.contains('-') {
                    "header"
                } else if path.contains(&format!("{{{name}}}")) {
                    "path"
                } else {
                    "query"
                };
            assert_eq!(p["in"], expected, "{method} {path} parameter {name}");
        }
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses
                .keys()
                .any(|status| status.starts_with('2') || status == "303"),
            "{method} {path} documents its success"
        );
    }
    assert_eq!(
        tenant_ops, 12,
        "connect; a provider's tenant webhook; connections list, get, delete, sync; signals and jobs list and get; the signal stream; tenant erasure"
    );
}

#[tokio::test]
async fn every_documented_route_exists_and_every_public_get_answers() {
    let app = TestApp::spawn().await;
    let doc: Value = serde_json::from_str(connectors::openapi::json()).expect("json");
    for (method, path, _) in operations(&doc) {
        let concrete = path
            .replace("{id}", "0190f5f0-0000-7000-8000-000000000000")
            .replace("{provider}", "sandbox");
        let response = app
            .anonymous(
                Method::from_bytes(method.as_bytes()).expect("method"),
                &concrete,
            )
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        // Anonymous calls get an answer from the route itself: never 404/405, never a 5xx.
        assert!(
            matches!(status, 200 | 400 | 401),
            "{method} {path} answered {status}: documented routes are routed"
        );
    }
}

#[tokio::test]
async fn list_parameters_document_their_types_and_limits() {
    let doc: Value = serde_json::from_str(connectors::openapi::json()).expect("json");
    let params = doc["paths"]["/signals"]["get"]["parameters"]
        .as_array()
        .expect("params")
        .clone();
    let find = |name: &str| {
        params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
            .clone()
    };
    assert_eq!(find("limit")["schema"]["minimum"], 1);
    assert_eq!(find("limit")["schema"]["maximum"], 100);
    assert_eq!(find("occurred_after")["schema"]["format"], "date-time");
    assert_eq!(find("connection_id")["schema"]["format"], "uuid");
    let jobs = doc["paths"]["/jobs"]["get"]["parameters"]
        .as_array()
        .expect("params")
        .clone();
    let status = jobs.iter().find(|p| p["name"] == "status").expect("status");
    let text = status.to_string();
    assert!(
        text.contains("JobStatus"),
        "status documents its enum: {text}"
    );
}
