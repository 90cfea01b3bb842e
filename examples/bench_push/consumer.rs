//! The fast consumer: an in-process HTTP server on 127.0.0.1 that answers every push at once,
//! after checking its Standard Webhooks signature with its own HMAC (not the service's code),
//! and records what arrived: `webhook-id`, the signal's id, the event's `timestamp` and the
//! harness's clock at receipt. Each endpoint posts to its own path, `/hooks/{n}`, signed with
//! its own secret.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// One push as received.
#[derive(Clone, Debug)]
pub struct Push {
    /// The endpoint's number (its path).
    pub endpoint: usize,
    pub webhook_id: String,
    /// `data.id` of a `signal.created` message.
    pub signal: Option<String>,
    /// The message's `timestamp`: when its event was committed with the signal.
    pub committed_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
}

#[derive(Default)]
struct Shared {
    /// Secret bytes by endpoint number.
    secrets: RwLock<HashMap<usize, Vec<u8>>>,
    pushes: Mutex<Vec<Push>>,
    bad_signatures: Mutex<u64>,
}

/// A running consumer.
pub struct Consumer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    shared: Arc<Shared>,
}

impl Consumer {
    pub async fn start() -> Result<Self> {
        let shared = Arc::new(Shared::default());
        let router = axum::Router::new()
            .route("/hooks/{n}", axum::routing::post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the consumer")?;
        let addr: SocketAddr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(Self {
            base: format!("http://{addr}"),
            shared,
        })
    }

    /// The URL endpoint `n` posts to.
    pub fn url(&self, n: usize) -> String {
        format!("{}/hooks/{n}", self.base)
    }

    /// Verifies endpoint `n`'s messages with `secret` (`whsec_<base64>`).
    pub fn expect(&self, n: usize, secret: &str) -> Result<()> {
        let bytes = STANDARD
            .decode(secret.trim_start_matches("whsec_"))
            .context("decoding a whsec_ secret")?;
        self.shared
            .secrets
            .write()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(n, bytes);
        Ok(())
    }

    /// Everything received so far.
    pub fn pushes(&self) -> Vec<Push> {
        self.shared
            .pushes
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    /// How many messages have been received so far.
    pub fn count(&self) -> usize {
        self.shared.pushes.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// Messages whose signature did not verify (answered `400`, so the service retries).
    pub fn bad_signatures(&self) -> u64 {
        self.shared.bad_signatures.lock().map(|b| *b).unwrap_or(0)
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Path(n): Path<usize>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let received_at = Utc::now();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return bad(&shared);
    };
    let secret = shared.secrets.read().ok().and_then(|s| s.get(&n).cloned());
    let Some(secret) = secret else {
        return bad(&shared);
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&secret) else {
        return bad(&shared);
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    if !signatures.split(' ').any(|s| s == expected) {
        return bad(&shared);
    }
    let message: Value = serde_json::from_slice(&body).unwrap_or_default();
    let push = Push {
        endpoint: n,
        webhook_id: id.to_string(),
        signal: (message["type"] == "signal.created")
            .then(|| message["data"]["id"].as_str().map(str::to_string))
            .flatten(),
        committed_at: message["timestamp"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        received_at,
    };
    if let Ok(mut pushes) = shared.pushes.lock() {
        pushes.push(push);
    }
    StatusCode::NO_CONTENT
}

fn bad(shared: &Shared) -> StatusCode {
    if let Ok(mut b) = shared.bad_signatures.lock() {
        *b += 1;
    }
    StatusCode::BAD_REQUEST
}
