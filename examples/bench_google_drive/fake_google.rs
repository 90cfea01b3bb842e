//! The fake Google the Drive benchmark's server calls through `POBLYSH_GOOGLE_DRIVE_AUTH_BASE_URL`
//! and `_API_BASE_URL`: an axum server on 127.0.0.1 in the harness's runtime answering the
//! OAuth token exchange, userinfo and revocation at once, and Drive's
//! `changes.getStartPageToken`, `changes.watch`, `channels.stop` and `changes.list` after the
//! configured latency. The start page token is `0`; page `n` of `changes.list` holds
//! `page_size` file changes and names page `n + 1` until the last, which ends the round
//! (`newStartPageToken: end`); `end` lists nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use reqwest::Url;
use serde::Deserialize;
use serde_json::{json, Value};

/// What the fake serves.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub latency: Duration,
    pub pages: u64,
    pub page_size: u64,
}

/// What it saw since the last reset.
pub struct Stats {
    pub pages: u64,
}

struct Shared {
    settings: Settings,
    tokens: AtomicU64,
    watches: AtomicU64,
    pages: AtomicU64,
}

pub struct FakeGoogle {
    pub base: Url,
    shared: Arc<Shared>,
}

impl FakeGoogle {
    pub async fn start(settings: Settings) -> Result<Self> {
        let shared = Arc::new(Shared {
            settings,
            tokens: AtomicU64::new(0),
            watches: AtomicU64::new(0),
            pages: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/token", post(token))
            .route("/revoke", post(|| async { StatusCode::OK }))
            .route("/v1/userinfo", get(userinfo))
            .route("/drive/v3/changes/startPageToken", get(start_page_token))
            .route("/drive/v3/changes/watch", post(watch))
            .route(
                "/drive/v3/channels/stop",
                post(|| async { StatusCode::NO_CONTENT }),
            )
            .route("/drive/v3/changes", get(changes))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fake Google")?;
        let base = Url::parse(&format!("http://{}/", listener.local_addr()?))?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { base, shared })
    }

    pub fn watches(&self) -> u64 {
        self.shared.watches.load(Ordering::Relaxed)
    }

    pub fn reset(&self) {
        self.shared.pages.store(0, Ordering::Relaxed);
    }

    pub fn stats(&self) -> Stats {
        Stats {
            pages: self.shared.pages.load(Ordering::Relaxed),
        }
    }
}

async fn token(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let n = shared.tokens.fetch_add(1, Ordering::Relaxed);
    Json(json!({
        "access_token": format!("ya29.bench-{n}"), "expires_in": 3599, "token_type": "Bearer",
        "refresh_token": format!("1//bench-refresh-{n}"),
        "scope": "openid https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/drive.metadata.readonly",
    }))
}

async fn userinfo(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let n = shared.tokens.load(Ordering::Relaxed);
    Json(
        json!({"sub": format!("1{n:020}"), "email": format!("user{n}@example.com"), "email_verified": true}),
    )
}

async fn start_page_token(State(shared): State<Arc<Shared>>) -> Json<Value> {
    tokio::time::sleep(shared.settings.latency).await;
    Json(json!({"kind": "drive#startPageToken", "startPageToken": "0"}))
}

async fn watch(State(shared): State<Arc<Shared>>, Json(asked): Json<Value>) -> Json<Value> {
    tokio::time::sleep(shared.settings.latency).await;
    shared.watches.fetch_add(1, Ordering::Relaxed);
    Json(json!({
        "kind": "api#channel", "id": asked["id"], "resourceId": "bench-resource",
        "resourceUri": "https://www.googleapis.com/drive/v3/changes?alt=json",
        "expiration": asked["expiration"],
    }))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(rename = "pageToken")]
    page_token: String,
}

async fn changes(State(shared): State<Arc<Shared>>, Query(q): Query<ListQuery>) -> Response {
    tokio::time::sleep(shared.settings.latency).await;
    let Settings {
        pages, page_size, ..
    } = shared.settings;
    if q.page_token == "end" {
        return Json(
            json!({"kind": "drive#changeList", "newStartPageToken": "end", "changes": []}),
        )
        .into_response();
    }
    let Ok(n) = q.page_token.parse::<u64>() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    shared.pages.fetch_add(1, Ordering::Relaxed);
    let changes: Vec<Value> = (0..page_size)
        .map(|i| {
            let id = format!("file-{n}-{i}");
            let seconds = (n * page_size + i) % 60;
            let minutes = (n * page_size + i) / 60 % 60;
            json!({
                "kind": "drive#change", "changeType": "file", "removed": false, "fileId": id,
                "time": format!("2026-12-01T10:{minutes:02}:{seconds:02}.000Z"),
                "file": {
                    "id": id, "name": format!("Report {n}-{i}.docx"),
                    "mimeType": "application/vnd.google-apps.document",
                    "createdTime": "2025-06-01T08:00:00.000Z", "modifiedTime": "2026-12-01T10:00:00.000Z",
                    "trashed": false, "webViewLink": format!("https://docs.google.com/document/d/{id}/edit"),
                    "lastModifyingUser": {"displayName": "Bench User", "emailAddress": "bench@example.com", "permissionId": "0712"}
                }
            })
        })
        .collect();
    let mut body = json!({"kind": "drive#changeList", "changes": changes});
    if n + 1 < pages {
        body["nextPageToken"] = json!((n + 1).to_string());
    } else {
        body["newStartPageToken"] = json!("end");
    }
    Json(body).into_response()
}
