//! Connection limits: a slow request head is cut off, and a flood of idle sockets leaves
//! probes an answer (black-box, raw sockets to 127.0.0.1).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::TestApp;

fn addr(app: &TestApp) -> String {
    let addr = app.base.trim_start_matches("http://").trim_end_matches('/');
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    addr.to_string()
}

/// `GET /healthz` on a new connection: the whole answer, read until the server closes.
async fn healthz(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("answered within 5 s")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_half_sent_request_head_is_cut_off_after_the_header_read_timeout() {
    let app = TestApp::spawn_with(&[("POBLYSH_HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let addr = addr(&app);
    let mut half = TcpStream::connect(&addr).await.expect("connect");
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("write");
    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    let start = Instant::now();
    for stream in [&mut half, &mut silent] {
        let mut buf = [0u8; 1024];
        let read = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                // hyper may answer `408` before closing; what matters is the close.
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(read.is_ok(), "still open after {:?}", start.elapsed());
    }
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "closed before the timeout"
    );
}

#[tokio::test]
async fn idle_sockets_over_the_connection_bound_leave_probes_an_answer() {
    let app = TestApp::spawn_with(&[
        ("POBLYSH_MAX_CONNECTIONS", "20"),
        ("POBLYSH_HEADER_READ_TIMEOUT_SECS", "30"),
        ("POBLYSH_IDLE_TIMEOUT_SECS", "30"),
    ])
    .await;
    let addr = addr(&app);
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = healthz(&addr).await;
    if answer.starts_with("HTTP/1.1 200") {
        // Within the bound after all: fine.
    } else {
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        let lower = answer.to_ascii_lowercase();
        assert!(
            lower.contains("content-type: application/problem+json"),
            "{answer}"
        );
        assert!(lower.contains("\r\nretry-after: "), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).expect("a body");
        let problem: serde_json::Value = serde_json::from_str(body).expect("json body");
        assert_eq!(problem["code"], "SERVICE_UNAVAILABLE", "{problem}");
        assert_eq!(problem["status"], 503, "{problem}");
    }
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = healthz(&addr).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
