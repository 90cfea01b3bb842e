//! The edge's own answers: closed metric labels, `nosniff` on every response, oversized request
//! lines and headers as problem+json, bounded validation answers, and the configured body limit.

use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_problem, post_delivery, tenant, TestApp};

/// Sends `head` (a raw HTTP/1.1 request head) and returns the raw answer, read to its end.
async fn raw(app: &TestApp, head: &[u8]) -> String {
    let addr = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // hyper may answer and close before reading everything; the answer is what matters.
    let _ = stream.write_all(head).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the service answers");
    String::from_utf8_lossy(&answer).into_owned()
}

/// A status line, headers and body of a raw answer.
fn split(answer: &str) -> (String, String, String) {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (
        status.to_string(),
        headers.to_ascii_lowercase(),
        body.to_string(),
    )
}

#[tokio::test]
async fn metric_labels_take_values_from_closed_sets_whatever_the_requests() {
    let app = TestApp::spawn().await;
    let methods = ["XQWERTY", "FROBNICATE", "GETX", "PROPFIND"];
    let paths = [
        "/nope-zzyzx",
        "/signals/qqqq-path-token",
        "/webhooks/wxyzzy",
    ];
    for method in methods {
        for path in paths {
            let method = Method::from_bytes(method.as_bytes()).expect("a token");
            let response = app.anonymous(method, path).send().await.expect("sent");
            assert!(response.status().is_client_error(), "{}", response.status());
        }
    }
    app.anonymous(Method::GET, "/nope-zzyzx")
        .send()
        .await
        .expect("sent");
    let text = app
        .anonymous(Method::GET, "/metrics")
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    for needle in methods
        .iter()
        .chain(&paths)
        .chain(&["zzyzx", "qqqq", "wxyzzy"])
    {
        assert!(!text.contains(needle), "{needle} reached /metrics:\n{text}");
    }
    let standard = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "other",
    ];
    // The recorder is shared by every test of this process: any route a test may hit.
    let templates = connectors::openapi::router().1.paths.paths;
    let pages: Vec<&str> = app
        .state
        .registry
        .entries()
        .iter()
        .flat_map(|e| e.connector.pages())
        .map(|p| p.path)
        .collect();
    let mut lines = 0;
    for line in text
        .lines()
        .filter(|l| l.starts_with("http_request"))
        .filter(|l| !l.starts_with('#'))
    {
        lines += 1;
        let labels = &line[line.find('{').expect("labels") + 1..line.rfind('}').expect("labels")];
        for pair in labels.split("\",") {
            let (name, value) = pair.split_once("=\"").expect("name=\"value\"");
            let value = value.trim_end_matches('"');
            match name {
                "method" => assert!(standard.contains(&value), "method {value}"),
                "route" => assert!(
                    value == "unmatched"
                        || templates.contains_key(value)
                        || pages.contains(&value)
                        || value == "/openapi.json"
                        // The benchmarks' floor route, served only when configured.
                        || value == "/bench/floor"
                        || value.starts_with("/docs"),
                    "route {value}"
                ),
                "status" => assert!(
                    value.len() == 3 && value.bytes().all(|b| b.is_ascii_digit()),
                    "status {value}"
                ),
                "le" => {}
                other => panic!("unexpected label {other} in {line}"),
            }
        }
    }
    assert!(lines > 0, "{text}");
    assert!(
        text.contains("method=\"other\",route=\"unmatched\",status=\"404\""),
        "{text}"
    );
}

#[tokio::test]
async fn every_response_says_nosniff() {
    let app = TestApp::spawn().await;
    let caller = tenant();
    let responses = vec![
        app.anonymous(Method::GET, "/healthz").send().await,
        app.anonymous(Method::GET, "/providers").send().await,
        app.anonymous(Method::GET, "/openapi.json").send().await,
        app.anonymous(Method::GET, "/docs").send().await,
        app.anonymous(Method::GET, "/docs/").send().await,
        app.anonymous(Method::GET, "/metrics").send().await,
        app.anonymous(Method::GET, "/no-such-route").send().await,
        app.anonymous(Method::DELETE, "/providers").send().await,
        app.anonymous(Method::GET, "/signals").send().await,
        app.get(caller, "/signals?limit=0").send().await,
        // The sandbox's authorize page, a provider page outside the API.
        app.anonymous(Method::GET, "/sandbox/authorize")
            .send()
            .await,
    ];
    for response in responses {
        let response = response.expect("sent");
        assert_eq!(
            response
                .headers()
                .get("x-content-type-options")
                .map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{} {}",
            response.url(),
            response.status()
        );
    }
}

#[tokio::test]
async fn a_request_target_over_the_limit_answers_414_problem_json() {
    let app = TestApp::spawn().await;
    let long = format!("/signals?{}", "a".repeat(40 * 1024));
    let response = app
        .anonymous(Method::GET, &long)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_problem(response, 414, "URI_TOO_LONG").await;

    // Over hyper's own cap (65,534 bytes) hyper answers before the service runs, with an empty
    // body: what the edge module documents.
    let target = format!("/signals?{}", "a".repeat(70 * 1024));
    let answer = raw(
        &app,
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    let (status, _, body) = split(&answer);
    assert!(status.starts_with("HTTP/1.1 414"), "{answer}");
    assert!(body.is_empty(), "{answer}");
}

#[tokio::test]
async fn headers_over_the_limit_answer_431_problem_json() {
    let app = TestApp::spawn().await;
    let response = app
        .anonymous(Method::GET, "/healthz")
        .header("X-Padding", "p".repeat(80 * 1024))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_problem(response, 431, "HEADERS_TOO_LARGE").await;

    // The same over a raw connection: the service, not hyper, answers.
    let answer = raw(
        &app,
        format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Padding: {}\r\n\r\n",
            "p".repeat(80 * 1024)
        )
        .as_bytes(),
    )
    .await;
    let (status, headers, body) = split(&answer);
    assert!(status.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(
        headers.contains("content-type: application/problem+json"),
        "{headers}"
    );
    assert!(body.contains("HEADERS_TOO_LARGE"), "{body}");

    // More than 100 headers: hyper answers itself, with an empty body.
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = raw(
        &app,
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    let (status, _, body) = split(&answer);
    assert!(status.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(body.is_empty(), "{answer}");
}

#[tokio::test]
async fn bad_path_encoding_and_extractor_rejections_are_problem_json() {
    let app = TestApp::spawn().await;
    let caller = tenant();
    // A path id that is not UTF-8 once decoded.
    let response = app
        .get(caller, "/connections/%FF%FE")
        .send()
        .await
        .expect("sent");
    assert_problem(response, 400, "VALIDATION_FAILED").await;
    // Undecodable path segments on other routes: whatever the status, it is problem+json.
    for path in [
        "/webhooks/%FF%FE/x",
        "/webhooks/sandbox/%FF%FE",
        "/providers/%FF%FE/webhook",
        "/signals/%FF",
    ] {
        let response = app.get(caller, path).send().await.expect("sent");
        assert!(
            response.status().is_client_error(),
            "{path}: {}",
            response.status()
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
}

#[tokio::test]
async fn thousands_of_unknown_parameters_answer_a_small_400_naming_the_first() {
    let app = TestApp::spawn().await;
    let query: Vec<String> = (0..5000).map(|i| format!("a{i}")).collect();
    let long_name = "z".repeat(500);
    let response = app
        .get(
            tenant(),
            &format!("/signals?{long_name}&{}", query.join("&")),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    let bytes = response.bytes().await.expect("body");
    assert!(bytes.len() < 4096, "{} bytes", bytes.len());
    let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(body["code"], "VALIDATION_FAILED");
    let details = body["details"].as_object().expect("details");
    assert_eq!(details.len(), 20, "{body}");
    let cut = format!("{}…", "z".repeat(100));
    assert!(details.contains_key(&cut), "{body}");
    for i in 0..19 {
        assert!(details.contains_key(&format!("a{i}")), "a{i} in {body}");
    }
    assert!(!details.contains_key("a19"), "{body}");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .ends_with("and 4981 more unknown parameters"),
        "{body}"
    );
}

const SECRET: &str = "edge-test-webhook-secret";

#[tokio::test]
async fn a_body_limit_above_two_mib_applies_to_webhook_deliveries() {
    let app = TestApp::spawn_with(&[
        ("POBLYSH_MAX_BODY_BYTES", "4194304"),
        ("POBLYSH_SANDBOX_WEBHOOK_SECRET", SECRET),
    ])
    .await;
    let t = tenant();
    let path = format!("/webhooks/sandbox/{t}");
    // 3 MiB, unsigned: it reaches the handler, which refuses its signature.
    let body = vec![b' '; 3 * 1024 * 1024];
    let response = post_delivery(&app, &path, vec![], &body).await;
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
    // Over the configured limit, with a length: refused before the handler.
    let body = vec![b' '; 4 * 1024 * 1024 + 1];
    let response = post_delivery(&app, &path, vec![], &body).await;
    let problem = assert_problem(response, 413, "PAYLOAD_TOO_LARGE").await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("4194304"),
        "{problem}"
    );
}
