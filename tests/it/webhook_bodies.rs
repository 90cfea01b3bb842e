//! Webhook bodies cost memory only when they may be kept: a delivery for an unknown provider,
//! without a configured secret, or without well-formed signature headers is refused before its
//! body is read, and the bytes of bodies being received at once are bounded.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{tenant, TestApp};

const SECRET: &str = "sandbox-webhook-secret-value";
/// What a client announces and never finishes sending.
const ANNOUNCED: usize = 1024 * 1024;

/// Opens a delivery to `path` announcing a 1 MiB body, sends `sent` bytes of it and stops.
async fn start_delivery(
    app: &TestApp,
    path: &str,
    headers: &[(&str, String)],
    sent: usize,
) -> TcpStream {
    let address = app.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {ANNOUNCED}\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("head");
    stream
        .write_all(&vec![b' '; sent])
        .await
        .expect("part of the body");
    stream
}

/// The status line of the answer, if one comes while the body is still unsent.
async fn answer_without_body(stream: &mut TcpStream) -> Option<String> {
    let mut buffer = vec![0u8; 4096];
    // Bounded only so a failure ends the test: an answer that waits for the body never comes.
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await {
        Ok(Ok(n)) if n > 0 => {
            let text = String::from_utf8_lossy(&buffer[..n]).to_string();
            Some(text.lines().next().unwrap_or_default().to_string())
        }
        _ => None,
    }
}

fn signed_looking(timestamp: i64) -> Vec<(&'static str, String)> {
    vec![
        ("X-Sandbox-Delivery", "d-1".to_string()),
        ("X-Sandbox-Event", "event.created".to_string()),
        ("X-Sandbox-Timestamp", timestamp.to_string()),
        ("X-Sandbox-Signature", format!("v1={}", "ab".repeat(32))),
    ]
}

/// A path, its headers, and the status expected before the body is read.
type Case = (String, Vec<(&'static str, String)>, &'static str);

#[tokio::test]
async fn unverifiable_deliveries_are_refused_before_their_body_is_read() {
    let app = TestApp::spawn_with(&[
        ("POBLYSH_SANDBOX_WEBHOOK_SECRET", SECRET),
        ("POBLYSH_GITHUB_WEBHOOK_SECRET", SECRET),
        ("POBLYSH_SLACK_WEBHOOK_SECRET", SECRET),
        ("POBLYSH_JIRA_WEBHOOK_SECRET", SECRET),
        ("POBLYSH_GOOGLE_DRIVE_WEBHOOK_SECRET", SECRET),
    ])
    .await;
    let t = tenant();
    let now = connectors::domain::now().timestamp();
    let cases: Vec<Case> = vec![
        // Every provider's scheme, checked on the headers: GitHub without its SHA-256
        // signature, Slack with a signature that is not one, Jira with neither a token nor a
        // signature, a Pub/Sub push without its token, a Drive notification without a channel.
        (
            format!("/webhooks/github/{t}"),
            vec![("X-GitHub-Delivery", "d".to_string())],
            "401",
        ),
        (
            "/webhooks/github".to_string(),
            vec![("X-Hub-Signature-256", "sha256=12".to_string())],
            "401",
        ),
        (
            "/webhooks/slack".to_string(),
            vec![
                ("X-Slack-Request-Timestamp", now.to_string()),
                ("X-Slack-Signature", "v0=nothex".to_string()),
            ],
            "401",
        ),
        (format!("/webhooks/jira/{t}"), vec![], "401"),
        ("/webhooks/gmail".to_string(), vec![], "401"),
        (
            format!("/webhooks/google_drive/{t}"),
            vec![("X-Goog-Resource-State", "change".to_string())],
            "401",
        ),
        // No signature at all.
        (format!("/webhooks/sandbox/{t}"), vec![], "401"),
        // A signature that is not the scheme's shape.
        (
            format!("/webhooks/sandbox/{t}"),
            vec![
                ("X-Sandbox-Timestamp", now.to_string()),
                ("X-Sandbox-Signature", "v1=zz".to_string()),
            ],
            "401",
        ),
        // A timestamp outside the replay window, or one that is no number a clock has.
        (
            format!("/webhooks/sandbox/{t}"),
            signed_looking(now - 3600),
            "401",
        ),
        (
            format!("/webhooks/sandbox/{t}"),
            signed_looking(i64::MIN),
            "401",
        ),
        // A provider nobody knows.
        (format!("/webhooks/myspace/{t}"), signed_looking(now), "404"),
        ("/webhooks/myspace".to_string(), signed_looking(now), "404"),
    ];
    for (path, headers, status) in cases {
        let mut stream = start_delivery(&app, &path, &headers, 1024).await;
        let line = answer_without_body(&mut stream).await;
        assert!(
            line.as_deref().is_some_and(|l| l.contains(status)),
            "{path} {headers:?}: {line:?}"
        );
    }

    // Without a configured secret, the sandbox refuses before reading too.
    let unconfigured = TestApp::spawn().await;
    let mut stream = start_delivery(
        &unconfigured,
        &format!("/webhooks/sandbox/{t}"),
        &signed_looking(now),
        1024,
    )
    .await;
    let line = answer_without_body(&mut stream).await;
    assert!(
        line.as_deref().is_some_and(|l| l.contains("401")),
        "{line:?}"
    );
}

#[tokio::test]
async fn bodies_in_flight_are_bounded_and_the_excess_is_shed_with_retry_after() {
    let app = TestApp::spawn_with(&[
        ("POBLYSH_SANDBOX_WEBHOOK_SECRET", SECRET),
        ("POBLYSH_WEBHOOK_BYTES_IN_FLIGHT", "65536"),
        ("POBLYSH_MAX_BODY_BYTES", "2097152"),
    ])
    .await;
    let t = tenant();
    let path = format!("/webhooks/sandbox/{t}");
    let now = connectors::domain::now().timestamp();
    // A delivery that passes the precheck holds 60 KiB of the 64 KiB budget while it trickles.
    let mut holding = start_delivery(&app, &path, &signed_looking(now), 60 * 1024).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The next one cannot have the 8 KiB it sends: shed at once, nothing read to its end.
    let mut shed = start_delivery(&app, &path, &signed_looking(now), 8 * 1024).await;
    let line = answer_without_body(&mut shed).await.expect("an answer");
    assert!(line.contains("503"), "{line}");
    let mut rest = vec![0u8; 4096];
    let _ = shed.read(&mut rest).await;
    // Once the holder goes away, its budget is back: a real delivery is accepted.
    holding.shutdown().await.expect("closed");
    drop(holding);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = br#"{"id":"e1","title":"t","occurred_at":"2026-11-20T10:00:00Z","actor":{"id":"u","name":"A"}}"#;
        let timestamp = connectors::domain::now().timestamp().to_string();
        let signature = connectors::connector::signature::hmac_sha256_hex(
            &connectors::crypto::Secret::new(SECRET),
            &[timestamp.as_bytes(), b".", body],
        );
        let response = app
            .anonymous(reqwest::Method::POST, &path)
            .header("X-Sandbox-Delivery", "after")
            .header("X-Sandbox-Event", "event.created")
            .header("X-Sandbox-Timestamp", timestamp)
            .header("X-Sandbox-Signature", format!("v1={signature}"))
            .header("Content-Type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .expect("sent");
        if response.status() == 202 {
            break;
        }
        assert_eq!(response.status(), 503, "only shedding may delay it");
        assert!(response.headers().get("retry-after").is_some());
        assert!(
            tokio::time::Instant::now() < deadline,
            "the budget never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
