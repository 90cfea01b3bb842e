//! The test harness: a real service on port 0 over a fresh database per test (SQLite in a
//! temporary directory, or a new PostgreSQL database when `POBLYSH_TEST_DATABASE_URL` is set),
//! and a client that speaks to it over HTTP.

use std::sync::Arc;

use chrono::Duration;
use connectors::app::App;
use connectors::config::{Config, Source};
use connectors::crypto::CryptoKey;
use connectors::domain::{
    now, ConnectionId, ConnectionStatus, JobId, JobStatus, JobType, NewConnection, NewJob,
    NewSignal, SignalId, TenantId, Timestamp,
};
use connectors::domain::{Connection, Job, StoredWebhookEvent};
use connectors::http::AppState;
use connectors::store::Store;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use sqlx::{Connection as _, Executor, PgConnection};
use uuid::Uuid;

/// The operator token every test app accepts.
pub const TOKEN: &str = "test-operator-token-0123456789";

#[path = "../support/database.rs"]
mod database;

pub use database::TestDatabase;

/// A running service and a client for it.
pub struct TestApp {
    pub base: String,
    /// The database URL, for a second instance sharing it.
    pub database_url: String,
    pub client: reqwest::Client,
    pub state: AppState,
    _db: Option<TestDatabase>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl TestApp {
    /// A service with the default test configuration.
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// A service with extra `POBLYSH_*` settings.
    pub async fn spawn_with(extra: &[(&str, &str)]) -> Self {
        let db = TestDatabase::create().await;
        let url = db.url.clone();
        let key = CryptoKey::generate().to_base64();
        Self::start(Some(db), url, key.to_string(), extra).await
    }

    /// A second instance over this one's database and keys, as in a multi-instance deployment.
    pub async fn sibling(&self, extra: &[(&str, &str)]) -> Self {
        let key = self.state.config.crypto_key.to_base64();
        Self::start(None, self.database_url.clone(), key.to_string(), extra).await
    }

    async fn start(
        db: Option<TestDatabase>,
        url: String,
        key: String,
        extra: &[(&str, &str)],
    ) -> Self {
        let mut pairs: Vec<(String, String)> = vec![
            ("POBLYSH_PROFILE".into(), "test".into()),
            ("POBLYSH_API_BIND_ADDR".into(), "127.0.0.1:0".into()),
            ("POBLYSH_DATABASE_URL".into(), url.clone()),
            ("POBLYSH_OPERATOR_TOKENS".into(), TOKEN.into()),
            ("POBLYSH_CRYPTO_KEY".into(), key),
            ("POBLYSH_SANDBOX_ENABLED".into(), "true".into()),
            ("POBLYSH_DB_MAX_CONNECTIONS".into(), "4".into()),
            // Tests drive the workers themselves (`drain`); a test that wants the background
            // loops sets `POBLYSH_ROLES=api,worker`.
            ("POBLYSH_ROLES".into(), "api".into()),
        ];
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_source(&Source::from_pairs(pairs)).expect("valid test config");
        let app = App::build(config).await.expect("app builds");
        let base = format!("http://{}", app.local_addr());
        let state = app.state().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run(async move {
            let _ = stopped.await;
        }));
        Self {
            base,
            database_url: url,
            // The client is the user's browser too: it keeps the cookie that binds a connect
            // to it.
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .cookie_store(true)
                .build()
                .expect("client"),
            state,
            _db: db,
            _stop: stop,
        }
    }

    /// Runs `sqlite` or `postgres`, whichever the service's database speaks, on a connection
    /// of the test's own: a trigger or a row the service's API cannot make.
    pub async fn execute_sql(&self, sqlite: &str, postgres: &str) {
        if self.database_url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(&self.database_url)
                .await
                .expect("connect to SQLite");
            conn.execute(sqlite).await.expect("SQLite statement");
        } else {
            let mut conn = PgConnection::connect(&self.database_url)
                .await
                .expect("connect to PostgreSQL");
            conn.execute(postgres).await.expect("PostgreSQL statement");
        }
    }

    /// What a browser does with an `authorize_url` the service answered: passes the service's
    /// authorize hop (keeping its binding cookie) and returns the provider's page it redirects
    /// to. Any other URL (Core's callback pattern) is the provider's page already.
    pub async fn through_hop(&self, authorize_url: &str) -> url::Url {
        let url = url::Url::parse(authorize_url).expect("an absolute authorize_url");
        let ours = url.as_str().starts_with(&self.base)
            && url.path().starts_with("/connect/")
            && url.path().ends_with("/authorize");
        if !ours {
            return url;
        }
        let response = self.client.get(url.clone()).send().await.expect("sent");
        assert_eq!(response.status(), 303, "the authorize hop redirects");
        assert!(
            response.headers().get("set-cookie").is_some(),
            "the authorize hop sets the binding cookie"
        );
        url::Url::parse(response.headers()["location"].to_str().expect("ascii"))
            .expect("the provider's page")
    }

    /// The store behind the service.
    pub fn store(&self) -> Arc<dyn Store> {
        self.state.store.clone()
    }

    /// A request with no credentials.
    pub fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    /// A request with the operator token but no tenant.
    pub fn operator(&self, method: Method, path: &str) -> RequestBuilder {
        self.anonymous(method, path).bearer_auth(TOKEN)
    }

    /// A GET on behalf of `tenant`.
    pub fn get(&self, tenant: TenantId, path: &str) -> RequestBuilder {
        self.operator(Method::GET, path)
            .header("X-Tenant-Id", tenant.to_string())
    }

    /// GETs `path` for `tenant` and returns status and JSON body.
    pub async fn get_json(&self, tenant: TenantId, path: &str) -> (StatusCode, Value) {
        json(self.get(tenant, path).send().await.expect("request sent")).await
    }

    /// Every signal stored for `tenant` (up to 1,000, payloads included), in the store's order.
    pub async fn stored_signals(&self, tenant: TenantId) -> Vec<connectors::domain::Signal> {
        let filter = connectors::store::SignalFilter {
            include_payload: true,
            ..Default::default()
        };
        let page = connectors::store::PageRequest {
            after: None,
            fetch: 1000,
        };
        self.store()
            .list_signals(tenant, &filter, page)
            .await
            .expect("signals")
    }

    /// Creates an active connection for `tenant`.
    pub async fn connection(&self, tenant: TenantId, provider: &str) -> Connection {
        self.connection_at(tenant, provider, now()).await
    }

    /// Creates an active connection created at `at`.
    pub async fn connection_at(
        &self,
        tenant: TenantId,
        provider: &str,
        at: Timestamp,
    ) -> Connection {
        self.store()
            .insert_connection(&NewConnection {
                id: ConnectionId::generate(),
                tenant_id: tenant,
                provider: provider.to_string(),
                external_account_id: Uuid::new_v4().to_string(),
                external_account_name: Some("octocat".into()),
                status: ConnectionStatus::Active,
                scopes: vec!["repo".into()],
                token_expires_at: None,
                created_at: at,
            })
            .await
            .expect("insert connection")
    }

    /// Stores signals and returns them.
    pub async fn signals(&self, signals: Vec<NewSignal>) -> Vec<NewSignal> {
        self.store()
            .insert_signals(&signals)
            .await
            .expect("insert signals");
        signals
    }

    /// Stores a job and returns it.
    pub async fn job(&self, job: NewJob) -> Job {
        self.store().insert_job(&job).await.expect("insert job")
    }
}

/// A fresh tenant.
pub fn tenant() -> TenantId {
    TenantId(Uuid::new_v4())
}

/// A signal of `connection`, `minutes_ago` minutes old.
pub fn signal(connection: &Connection, kind: &str, minutes_ago: i64) -> NewSignal {
    let id = SignalId::generate();
    NewSignal {
        id,
        tenant_id: connection.tenant_id,
        connection_id: connection.id,
        provider: connection.provider.clone(),
        kind: kind.to_string(),
        occurred_at: now() - Duration::minutes(minutes_ago),
        received_at: now(),
        actor: Some(connectors::domain::Actor {
            id: "1".into(),
            name: Some("octocat".into()),
            email: None,
        }),
        title: Some(format!("{kind} {id}")),
        url: Some("https://github.com/octo/repo/pull/1".into()),
        external_id: Some(id.to_string()),
        dedupe_key: id.to_string(),
        payload: serde_json::json!({ "number": 1, "repository": "octo/repo" }),
    }
}

/// A job of `connection` with `status` and `job_type`, created `minutes_ago` minutes ago.
pub fn job(
    connection: &Connection,
    status: JobStatus,
    job_type: JobType,
    minutes_ago: i64,
) -> NewJob {
    let created = now() - Duration::minutes(minutes_ago);
    let finished = matches!(status, JobStatus::Succeeded | JobStatus::Failed);
    NewJob {
        id: JobId::generate(),
        tenant_id: connection.tenant_id,
        connection_id: connection.id,
        provider: connection.provider.clone(),
        job_type,
        status,
        attempts: if status == JobStatus::Queued { 0 } else { 1 },
        max_attempts: 5,
        scheduled_at: created,
        started_at: (status != JobStatus::Queued).then_some(created),
        finished_at: finished.then_some(created + Duration::seconds(3)),
        error: (status == JobStatus::Failed).then(|| "upstream answered 500".to_string()),
        created_at: created,
    }
}

/// Status and JSON body of a response (`Value::Null` when the body is not JSON).
pub async fn json(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.bytes().await.expect("body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Asserts that `response` is a problem+json error with `status` and `code` and every
/// documented member, and returns its body.
pub async fn assert_problem(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(content_type, "application/problem+json");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    let (_, body) = json(response).await;
    assert_eq!(body["code"], code, "code in {body}");
    assert_eq!(body["status"], status, "status member");
    assert_eq!(
        body["trace_id"],
        request_id.as_str(),
        "trace_id matches x-request-id"
    );
    assert_eq!(body["message"], body["detail"], "message mirrors detail");
    let type_uri = body["type"].as_str().expect("type is a string");
    assert!(
        type_uri.starts_with("https://docs.poblysh.com/errors/"),
        "{type_uri}"
    );
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "title"
    );
    assert!(
        body["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "detail"
    );
    body
}

/// Posts `body` to `path` with no credentials but `headers`, as a provider delivers a webhook.
pub async fn post_delivery(
    app: &TestApp,
    path: &str,
    headers: Vec<(&'static str, String)>,
    body: &[u8],
) -> Response {
    let mut request = app.anonymous(Method::POST, path).body(body.to_vec());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await.expect("sent")
}

/// The body of a `202` webhook answer (asserting it).
pub async fn accepted(response: Response) -> Value {
    let (status, body) = json(response).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "accepted");
    body
}

/// The inbox event an accepted delivery's `event_id` names, as stored for tenant `t`.
pub async fn stored_event(app: &TestApp, t: TenantId, accepted: &Value) -> StoredWebhookEvent {
    let id = accepted["event_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("event_id is a UUID");
    app.store()
        .get_webhook_event(t, id)
        .await
        .expect("read")
        .expect("the accepted event is stored")
}

/// The connection's `webhook` jobs (syncs a provider notification started), newest first.
pub async fn webhook_jobs(app: &TestApp, t: TenantId, connection: &str) -> Vec<Value> {
    let (status, body) = app
        .get_json(
            t,
            &format!("/jobs?connection_id={connection}&job_type=webhook"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["jobs"].as_array().expect("jobs").clone()
}

/// Answers the sandbox API's subscription calls (`docs/providers/sandbox.md`) on `api`: each
/// open or renewal gets a fresh id that lasts an hour; closing answers `204`.
pub async fn mount_sandbox_subscriptions(api: &wiremock::MockServer) {
    use wiremock::matchers::{method, path, path_regex};
    use wiremock::{Mock, Request, ResponseTemplate};
    let answer = |_: &Request| {
        ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "id": format!("sub-{}", Uuid::new_v4().simple()),
            "expires_at": connectors::domain::format_time(&(now() + Duration::hours(1))),
        }))
    };
    Mock::given(method("POST"))
        .and(path("/v1/subscriptions"))
        .respond_with(answer)
        .mount(api)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("^/v1/subscriptions/[^/]+/renew$"))
        .respond_with(answer)
        .mount(api)
        .await;
    Mock::given(method("DELETE"))
        .and(path_regex("^/v1/subscriptions/[^/]+$"))
        .respond_with(ResponseTemplate::new(204))
        .mount(api)
        .await;
}
