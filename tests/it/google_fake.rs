//! A fake Google for the Drive and Calendar journeys: the OAuth endpoints and userinfo as
//! Google documents them, the product API mounted by each test through [`Discovery`]
//! responders, and the service set up to call it for everything; plus connecting over HTTP,
//! posting push notifications as Google sends them, and running the workers.

use chrono::DateTime;
use connectors::connector::derive::derive_secret;
use connectors::crypto::Secret;
use connectors::domain::{ConnectionId, TenantId, Timestamp};
use connectors::ingest::inbox;
use connectors::ingest::sync::{JobOutcome, JobResult, SyncWorker};
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::{json, tenant, TestApp};

pub const WEBHOOK_SECRET: &str = "google-channel-secret-for-tests-0001";
pub const ACCESS: &str = "ya29.a0AfH6SMBx-google-access";
pub const REFRESH: &str = "1//xEoDL4iW3cxlI7yDbSRFYNG01kVKM2C-259HOF2aQbI";

/// The fake Google and a service whose `slug` provider calls it for everything.
pub struct Google {
    pub mock: MockServer,
    pub app: TestApp,
    pub slug: &'static str,
}

impl Google {
    pub async fn start(slug: &'static str, extra: &[(&str, &str)]) -> Self {
        let mock = MockServer::start().await;
        let var = |suffix: &str| format!("POBLYSH_{}_{suffix}", slug.to_ascii_uppercase());
        let uri = mock.uri();
        let settings = [
            (var("CLIENT_ID"), "google-client-id".to_string()),
            (var("CLIENT_SECRET"), "google-client-secret".to_string()),
            (var("AUTH_BASE_URL"), uri.clone()),
            (var("API_BASE_URL"), uri.clone()),
            (var("WEBHOOK_SECRET"), WEBHOOK_SECRET.to_string()),
            ("POBLYSH_PROVIDER_TIMEOUT_SECS".to_string(), "5".to_string()),
        ];
        let mut pairs: Vec<(&str, &str)> = settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        pairs.extend_from_slice(extra);
        let app = TestApp::spawn_with(&pairs).await;
        // https://developers.google.com/identity/protocols/oauth2/web-server#exchange-authorization-code
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": ACCESS, "expires_in": 3920, "token_type": "Bearer",
                "refresh_token": REFRESH,
                "scope": "openid https://www.googleapis.com/auth/userinfo.email",
            })))
            .mount(&mock)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/userinfo"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "sub": "110169484474386276334", "email": "paula@zylker.com", "email_verified": true,
            })))
            .mount(&mock)
            .await;
        // https://developers.google.com/identity/protocols/oauth2/web-server#tokenrevoke
        Mock::given(method("POST"))
            .and(path("/revoke"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&mock)
            .await;
        Self { mock, app, slug }
    }

    /// Connects a fresh tenant over HTTP (authorize, Google's redirect back, callback) and
    /// returns it with the connection id.
    pub async fn connect(&self) -> (TenantId, String) {
        let t = tenant();
        let response = self
            .app
            .operator(Method::POST, &format!("/connect/{}", self.slug))
            .header("X-Tenant-Id", t.to_string())
            .send()
            .await
            .expect("sent");
        let (status, body) = json(response).await;
        assert_eq!(status, 200, "{body}");
        let url = self
            .app
            .through_hop(body["authorize_url"].as_str().expect("url"))
            .await;
        let state = url
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .expect("state");
        let callback = format!(
            "/connect/{}/callback?code=4/P7q7W91a-oMsCeLvIaQm6bTrgtp7&state={state}",
            self.slug
        );
        let (status, body) = json(
            self.app
                .anonymous(Method::GET, &callback)
                .send()
                .await
                .expect("sent"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let id = body["connection"]["id"].as_str().expect("id").to_string();
        (t, id)
    }

    /// Every request the fake received on `path`.
    pub async fn requests(&self, on: &str) -> Vec<Request> {
        self.mock
            .received_requests()
            .await
            .expect("recorded")
            .into_iter()
            .filter(|r| r.url.path() == on)
            .collect()
    }

    /// The connection's detail.
    pub async fn detail(&self, t: TenantId, id: &str) -> Value {
        let (status, body) = self.app.get_json(t, &format!("/connections/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Asserts the inbox has nothing left to process: what was refused was not stored.
    pub async fn assert_inbox_stored_nothing(&self) {
        let processed = inbox::drain(&self.app.state).await.expect("drain");
        assert_eq!(processed, 0, "nothing was stored");
    }

    /// Posts a notification as Google sends one (headers only, an empty body) for `channel`.
    #[allow(clippy::too_many_arguments)]
    pub async fn notify(
        &self,
        t: TenantId,
        channel: &str,
        resource_id: &str,
        state: &str,
        number: u64,
        token: Option<&str>,
    ) -> reqwest::Response {
        let derived = channel_token(self.slug, t, channel);
        self.app
            .anonymous(Method::POST, &format!("/webhooks/{}/{t}", self.slug))
            .header("X-Goog-Channel-ID", channel)
            .header("X-Goog-Channel-Expiration", "Wed, 09 Dec 2026 10:00:00 GMT")
            .header("X-Goog-Resource-State", state)
            .header("X-Goog-Message-Number", number.to_string())
            .header("X-Goog-Resource-ID", resource_id)
            .header("X-Goog-Resource-URI", "https://www.googleapis.com/")
            .header(
                "X-Goog-Channel-Token",
                token.unwrap_or_else(|| derived.expose()),
            )
            .header("Content-Length", "0")
            .send()
            .await
            .expect("sent")
    }

    /// Queues a manual sync of the connection.
    pub async fn sync_now(&self, t: TenantId, id: &str) {
        let response = self
            .app
            .operator(Method::POST, &format!("/connections/{id}/sync"))
            .header("X-Tenant-Id", t.to_string())
            .send()
            .await
            .expect("sent");
        let (status, body) = json(response).await;
        assert_eq!(status, 202, "{body}");
    }

    /// Processes the inbox, then runs every due job.
    pub async fn work(&self) -> Vec<JobOutcome> {
        inbox::drain(&self.app.state).await.expect("inbox");
        SyncWorker::new()
            .drain(&self.app.state)
            .await
            .expect("drain")
    }

    /// Runs the job due at `at` (a retry's time), as a worker would once it is.
    pub async fn run_at(&self, at: Timestamp) -> Option<JobOutcome> {
        let worker = SyncWorker::new();
        let lease = chrono::Duration::from_std(SyncWorker::lease(&self.app.state)).expect("lease");
        let job = self
            .app
            .store()
            .claim_sync_job(worker.owner(), at, at + lease)
            .await
            .expect("claim")?;
        let connector = self
            .app
            .state
            .registry
            .get(&job.provider)
            .map(|e| e.connector);
        Some(
            worker
                .run_job(&self.app.state, connector, job)
                .await
                .expect("recorded"),
        )
    }

    /// The connection's signals, oldest first: `(kind, external_id, title)`.
    pub async fn signals(&self, t: TenantId, id: &str) -> Vec<Value> {
        let (status, body) = self
            .app
            .get_json(t, &format!("/signals?connection_id={id}&limit=100"))
            .await;
        assert_eq!(status, 200, "{body}");
        let mut signals = body["signals"].as_array().expect("signals").clone();
        signals.sort_by_key(|s| s["occurred_at"].as_str().unwrap_or("").to_string());
        signals
    }

    /// The stored cursor.
    pub async fn cursor(&self, id: &str) -> Option<Value> {
        let id: ConnectionId = id.parse().expect("uuid");
        self.app.store().sync_cursor(id).await.expect("cursor")
    }

    /// Disconnects.
    pub async fn disconnect(&self, t: TenantId, id: &str) {
        let response = self
            .app
            .operator(Method::DELETE, &format!("/connections/{id}"))
            .header("X-Tenant-Id", t.to_string())
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
    }
}

/// The token of `channel`, derived as `docs/providers/google.md` says.
pub fn channel_token(slug: &str, t: TenantId, channel: &str) -> Secret {
    derive_secret(
        &Secret::new(WEBHOOK_SECRET),
        &format!("{slug}-channel"),
        &[&t.to_string(), channel],
    )
}

/// Google's answer to a watch: the channel asked for, with its resource and expiry.
pub fn channel_answer(request: &Request, resource_id: &str, resource_uri: &str) -> Value {
    let asked: Value = serde_json::from_slice(&request.body).expect("a channel");
    json!({
        "kind": "api#channel",
        "id": asked["id"],
        "resourceId": resource_id,
        "resourceUri": resource_uri,
        "token": asked["token"],
        "expiration": asked["expiration"],
    })
}

/// The retry time and error of an outcome that must be a retry.
pub fn retrying(outcome: &JobOutcome) -> (Timestamp, String) {
    match &outcome.result {
        JobResult::Retrying { at, error } => (*at, error.clone()),
        other => panic!("expected a retry, got {other:?}"),
    }
}

pub fn time(value: &Value) -> Timestamp {
    DateTime::parse_from_rfc3339(value.as_str().expect("a timestamp"))
        .expect("RFC 3339")
        .to_utc()
}
