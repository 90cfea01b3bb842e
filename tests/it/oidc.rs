//! The OAuth connect journey against a real OAuth 2.0 authorization server: oidc-provider
//! (panva), run by `tests/oidc/server.mjs` on a loopback port and serving GitHub's OAuth App
//! paths, so the GitHub connector talks to it unchanged. Authorization code with PKCE (S256),
//! a client authenticated in the form body, refresh tokens that rotate.
//!
//! Needs Node.js 18 or later on `PATH` and `npm ci --prefix tests/oidc`; without them these
//! tests fail and say so.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connectors::connector::callback_url;
use connectors::connector::pkce;
use connectors::connector::{CodeExchange, ProviderCallError, ProviderContext};
use connectors::crypto::hex;
use connectors::crypto::{Aad, Secret};
use connectors::domain::{now, ConnectionId, SealedField, StateConsumption, TenantId};
use connectors::tokens::{open_tokens, TokenError};
use reqwest::header::LOCATION;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use url::Url;

use crate::helpers::{assert_problem, json, tenant, TestApp};

pub(crate) const CLIENT_ID: &str = "poblysh-connectors-test";
pub(crate) const CLIENT_SECRET: &str = "test-client-secret-0123456789abcdef";
/// GitHub's own example account.
pub(crate) const ACCOUNT_ID: u64 = 583231;
const ACCOUNT_LOGIN: &str = "octocat";
/// `openid` lets the access token read the userinfo endpoint that stands in for `GET /user`.
const SCOPES: [&str; 4] = ["openid", "repo", "read:org", "read:user"];
/// The access token lifetime the server is configured with (`tests/oidc/server.mjs`).
const ACCESS_TOKEN_TTL_SECS: i64 = 120;
const WAIT: Duration = Duration::from_secs(15);

/// `node tests/oidc/server.mjs`: killed when dropped, and it exits on its own when its stdin
/// closes.
pub(crate) struct OidcServer {
    pub(crate) base: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: tokio::sync::mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
    events: VecDeque<Value>,
}

impl OidcServer {
    pub(crate) async fn start() -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        assert!(
            dir.join("node_modules/oidc-provider/package.json").is_file(),
            "{} is missing: these tests run a real OAuth 2.0 authorization server (oidc-provider); \
             install it with `npm ci --prefix tests/oidc` (Node.js 18 or later)",
            dir.join("node_modules").display()
        );
        let mut child = Command::new("node")
            .arg(dir.join("server.mjs"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not run `node` ({e}): these tests need Node.js 18 or later on PATH")
            });
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut chunk) {
                let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&text);
            }
        });
        let mut server = Self {
            base: String::new(),
            stdin: child.stdin.take(),
            child,
            stdout: rx,
            stderr,
            events: VecDeque::new(),
        };
        let port: u16 = server
            .line("READY ")
            .await
            .parse()
            .expect("READY carries a port");
        server.base = format!("http://127.0.0.1:{port}");
        server
    }

    /// Registers our client, with the one redirect URI it may use, and the account that signs in.
    pub(crate) async fn configure(&mut self, redirect_uri: &str) {
        let settings = json!({
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uri": redirect_uri,
            "account": { "id": ACCOUNT_ID, "login": ACCOUNT_LOGIN },
        });
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{settings}").expect("configuration sent");
        stdin.flush().expect("configuration flushed");
        self.line("CONFIGURED").await;
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The rest of the next stdout line starting with `prefix`; events read meanwhile are kept.
    async fn line(&mut self, prefix: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.stdout.recv()).await {
                Ok(Some(line)) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                    if let Some(event) = line.strip_prefix("EVENT ") {
                        self.events
                            .push_back(serde_json::from_str(event).expect("events are JSON"));
                    }
                }
                Ok(None) => panic!(
                    "the authorization server exited before printing {prefix:?}; its stderr:\n{}",
                    self.stderr()
                ),
                Err(_) => panic!(
                    "the authorization server printed no {prefix:?} within {WAIT:?}; its stderr:\n{}",
                    self.stderr()
                ),
            }
        }
    }

    /// The oldest event named `name` not yet taken (others stay queued, in order).
    async fn event(&mut self, name: &str) -> Value {
        loop {
            if let Some(at) = self.events.iter().position(|e| e["event"] == name) {
                return self.events.remove(at).expect("position is in range");
            }
            let line = self.line("EVENT ").await;
            self.events
                .push_back(serde_json::from_str(&line).expect("events are JSON"));
        }
    }

    /// `GET /user` (the userinfo endpoint) with `token`, as the GitHub connector calls it.
    async fn user(&self, token: &Secret) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .get(format!("{}/user", self.base))
            .bearer_auth(token.expose())
            .send()
            .await
            .expect("authorization server reachable");
        json(response).await
    }
}

impl Drop for OidcServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Follows `authorize_url` with `browser` (which keeps the server's cookies and does not follow
/// redirects itself), signing in and consenting, until the server redirects to `redirect_uri`;
/// returns that redirect.
pub(crate) async fn follow_to_callback(
    browser: &reqwest::Client,
    oidc: &OidcServer,
    authorize_url: &Url,
    redirect_uri: &str,
) -> Url {
    let mut url = authorize_url.clone();
    let mut hops = Vec::new();
    for _ in 0..10 {
        let response = browser
            .get(url.clone())
            .send()
            .await
            .expect("authorization server reachable");
        let status = response.status();
        hops.push(format!("{status} {url}"));
        let location = response
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().expect("ascii location").to_string());
        let Some(location) = location.filter(|_| status.is_redirection()) else {
            let body = response.text().await.unwrap_or_default();
            panic!(
                "the authorization server answered {status} instead of redirecting; \
                 hops: {hops:#?}\nbody: {body}\nstderr: {}",
                oidc.stderr()
            );
        };
        let next = url.join(&location).expect("location is a URL");
        if next.as_str().starts_with(redirect_uri) {
            return next;
        }
        url = next;
    }
    panic!("no redirect to our callback after {hops:#?}");
}

/// The service configured for GitHub at the authorization server, a tenant, and a browser.
struct Journey {
    oidc: OidcServer,
    app: TestApp,
    tenant: TenantId,
    redirect_uri: String,
    browser: reqwest::Client,
}

impl Journey {
    async fn start() -> Self {
        let mut oidc = OidcServer::start().await;
        let scopes = SCOPES.join(" ");
        let app = TestApp::spawn_with(&[
            ("POBLYSH_GITHUB_CLIENT_ID", CLIENT_ID),
            ("POBLYSH_GITHUB_CLIENT_SECRET", CLIENT_SECRET),
            ("POBLYSH_GITHUB_AUTH_BASE_URL", &oidc.base),
            ("POBLYSH_GITHUB_API_BASE_URL", &oidc.base),
            ("POBLYSH_GITHUB_SCOPES", &scopes),
            // Tokens live 120 s, so every token is due within the lead; the background scan
            // runs once at start-up (no connection yet) and not again during a test.
            ("POBLYSH_TOKEN_REFRESH_LEAD_SECS", "3600"),
            ("POBLYSH_TOKEN_REFRESH_INTERVAL_SECS", "3000"),
        ])
        .await;
        let redirect_uri = callback_url(&app.state.config.public_base_url, "github").to_string();
        oidc.configure(&redirect_uri).await;
        let browser = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("browser client");
        Self {
            oidc,
            app,
            tenant: tenant(),
            redirect_uri,
            browser,
        }
    }

    /// `POST /connect/github`: the authorize URL.
    async fn connect(&self) -> Url {
        let response = self
            .app
            .operator(Method::POST, "/connect/github")
            .header("X-Tenant-Id", self.tenant.to_string())
            .send()
            .await
            .expect("request sent");
        let (status, body) = json(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        self.app
            .through_hop(body["authorize_url"].as_str().expect("authorize_url"))
            .await
    }

    /// Follows `authorize_url` like a browser, signing in and consenting, until the server
    /// redirects to our callback; returns that redirect.
    async fn authorize(&self, authorize_url: &Url) -> Url {
        follow_to_callback(&self.browser, &self.oidc, authorize_url, &self.redirect_uri).await
    }

    /// `GET` our callback as the browser's redirect would.
    async fn callback(&self, url: &Url) -> Response {
        self.app
            .client
            .get(url.clone())
            .send()
            .await
            .expect("request sent")
    }

    async fn connection(&self, id: ConnectionId) -> connectors::domain::Connection {
        self.app
            .state
            .store
            .get_connection(self.tenant, id)
            .await
            .expect("store answers")
            .expect("connection exists")
    }

    async fn api_connection(&self, id: ConnectionId) -> Value {
        let (status, body) = self
            .app
            .get_json(self.tenant, &format!("/connections/{id}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

pub(crate) fn query(url: &Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("{url} has no {name}"))
}

/// `url` with the query member `name` set to `value`.
fn with_query(url: &Url, name: &str, value: &str) -> Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    let mut url = url.clone();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url
}

fn connection_id(body: &Value) -> ConnectionId {
    body["connection"]["id"]
        .as_str()
        .expect("connection id")
        .parse()
        .expect("a UUID")
}

#[tokio::test]
async fn connects_refreshes_and_refuses_replays_against_a_real_authorization_server() {
    let mut j = Journey::start().await;

    let authorize_url = j.connect().await;
    assert!(
        authorize_url
            .as_str()
            .starts_with(&format!("{}/login/oauth/authorize?", j.oidc.base)),
        "{authorize_url}"
    );
    assert_eq!(query(&authorize_url, "response_type"), "code");
    assert_eq!(query(&authorize_url, "client_id"), CLIENT_ID);
    assert_eq!(query(&authorize_url, "redirect_uri"), j.redirect_uri);
    assert_eq!(query(&authorize_url, "scope"), SCOPES.join(" "));
    assert_eq!(query(&authorize_url, "code_challenge_method"), "S256");

    // The server signs the user in, asks for consent, and sends the browser back with a code.
    let redirect = j.authorize(&authorize_url).await;
    // The account picker (`prompt=select_account`, which signs the picked account in): no
    // connect completes unseen.
    assert_eq!(
        j.oidc.event("interaction").await["prompt"],
        "select_account"
    );
    assert_eq!(j.oidc.event("interaction").await["prompt"], "consent");
    assert_eq!(query(&redirect, "state"), query(&authorize_url, "state"));
    assert_eq!(query(&redirect, "iss"), j.oidc.base, "RFC 9207 issuer");

    // The callback exchanges the code (with the PKCE verifier) and asks `/user` who this is.
    let (status, body) = json(j.callback(&redirect).await).await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", j.oidc.stderr());
    assert_eq!(
        j.oidc.event("grant.success").await["grant_type"],
        "authorization_code"
    );
    let connection = &body["connection"];
    assert_eq!(connection["provider"], "github");
    assert_eq!(connection["status"], "active");
    assert_eq!(connection["external_account"]["id"], ACCOUNT_ID.to_string());
    assert_eq!(
        connection["external_account"]["display_name"],
        ACCOUNT_LOGIN
    );
    assert_eq!(connection["scopes"], json!(SCOPES), "the scopes granted");
    let expires_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(connection["token_expires_at"].clone()).expect("an expiry");
    let lifetime = (expires_at - now()).num_seconds();
    assert!(
        (ACCESS_TOKEN_TTL_SECS - 30..=ACCESS_TOKEN_TTL_SECS).contains(&lifetime),
        "expires in {lifetime} s"
    );
    let id = connection_id(&body);

    // The stored tokens are the server's: the access token reads `/user`.
    let connection = j.connection(id).await;
    let first = open_tokens(&j.app.state, &connection)
        .await
        .expect("tokens open");
    let first_refresh = first.refresh_token.clone().expect("a refresh token");
    let (status, user) = j.oidc.user(&first.access_token).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["id"], ACCOUNT_ID);
    assert_eq!(user["login"], ACCOUNT_LOGIN);

    // The browser's redirect replayed: the state was used.
    let problem = assert_problem(j.callback(&redirect).await, 400, "OAUTH_STATE_INVALID").await;
    assert_eq!(problem["details"]["reason"], "already_used");

    // Due within the lead time: `access_token` refreshes at the server and stores the result,
    // the rotated refresh token included.
    let second = connectors::tokens::access_token(&j.app.state, &connection)
        .await
        .expect("refreshed ahead of expiry");
    assert_ne!(second, first.access_token, "a new access token");
    assert_eq!(
        j.oidc.event("grant.success").await["grant_type"],
        "refresh_token"
    );
    let stored = open_tokens(&j.app.state, &connection)
        .await
        .expect("tokens open");
    assert_eq!(
        stored.access_token, second,
        "the new access token is stored"
    );
    let second_refresh = stored.refresh_token.expect("a refresh token");
    assert_ne!(
        second_refresh, first_refresh,
        "the rotated refresh token is stored"
    );

    // Refused with a 401: one refresh, against the stored (rotated) refresh token.
    let third = connectors::tokens::refresh_after_unauthorized(&j.app.state, &connection, &second)
        .await
        .expect("refreshed after a 401");
    assert_ne!(third, second, "a new access token");
    assert_eq!(
        j.oidc.event("grant.success").await["grant_type"],
        "refresh_token"
    );
    let stored = open_tokens(&j.app.state, &connection)
        .await
        .expect("tokens open");
    assert_eq!(stored.access_token, third, "the new access token is stored");
    assert_ne!(stored.refresh_token.as_ref(), Some(&second_refresh));
    let (status, user) = j.oidc.user(&third).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["id"], ACCOUNT_ID);
    let view = j.api_connection(id).await;
    assert_eq!(view["status"], "active");
    let refreshed_expiry: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(view["token_expires_at"].clone()).expect("an expiry");
    assert!(
        refreshed_expiry >= expires_at,
        "the expiry follows the refresh"
    );

    // A refresh token that was rotated away, used again (as a thief would): the server treats
    // it as stolen and revokes the whole grant.
    let entry = j.app.state.registry.get("github").expect("github enabled");
    let settings = j.app.state.config.provider("github").expect("settings");
    let endpoints = entry
        .connector
        .oauth(settings, &j.app.state.config.public_base_url)
        .expect("oauth endpoints");
    let ctx = ProviderContext {
        http: &j.app.state.http,
        settings,
    };
    let reused = entry
        .connector
        .refresh_tokens(ctx, &endpoints, &connection, &first_refresh)
        .await
        .expect_err("a used refresh token is refused");
    assert!(
        matches!(reused, ProviderCallError::InvalidGrant(_)),
        "{reused}"
    );
    let error = j.oidc.event("grant.error").await;
    assert_eq!(error["detail"], "refresh token already used", "{error}");
    j.oidc.event("grant.revoked").await;
    let (status, _) = j.oidc.user(&third).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the grant's tokens are revoked"
    );

    // The service's next refresh meets `invalid_grant`: the tenant must connect again.
    let outcome =
        connectors::tokens::refresh_after_unauthorized(&j.app.state, &connection, &third).await;
    assert!(
        matches!(outcome, Err(TokenError::NeedsReauth)),
        "{outcome:?}"
    );
    assert_eq!(j.api_connection(id).await["status"], "needs_reauth");
}

#[tokio::test]
async fn the_server_binds_each_code_to_its_pkce_verifier() {
    let mut j = Journey::start().await;
    let redirect_a = j.authorize(&j.connect().await).await;
    // A second journey: its state carries another PKCE verifier.
    let state_b = query(&j.connect().await, "state");

    // Code A completed with journey B's state: the service sends B's verifier, which does not
    // match A's challenge.
    let swapped = with_query(&redirect_a, "state", &state_b);
    let problem = assert_problem(j.callback(&swapped).await, 502, "PROVIDER_ERROR").await;
    let provider_error = problem["details"]["provider_error"]
        .as_str()
        .expect("provider_error");
    assert!(provider_error.contains("invalid_grant"), "{provider_error}");
    let error = j.oidc.event("grant.error").await;
    assert_eq!(error["detail"], "PKCE verification failed", "{error}");

    // The code is still good with its own state and verifier.
    let (status, body) = json(j.callback(&redirect_a).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["connection"]["external_account"]["id"],
        ACCOUNT_ID.to_string()
    );
    assert_eq!(
        j.oidc.event("grant.success").await["grant_type"],
        "authorization_code"
    );

    // A used code through a fresh state: refused (the fresh state's verifier fails first).
    let state_c = query(&j.connect().await, "state");
    let reused = with_query(&redirect_a, "state", &state_c);
    let problem = assert_problem(j.callback(&reused).await, 502, "PROVIDER_ERROR").await;
    assert!(
        problem["details"]["provider_error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid_grant")),
        "{problem}"
    );
    assert_eq!(j.oidc.event("grant.error").await["error"], "invalid_grant");
}

#[tokio::test]
async fn a_code_exchanged_twice_is_refused_and_its_tokens_revoked() {
    let mut j = Journey::start().await;
    let redirect = j.authorize(&j.connect().await).await;
    let (code, state) = (query(&redirect, "code"), query(&redirect, "state"));

    // The test plays the callback's part, to send the right verifier twice.
    let saved = match j
        .app
        .state
        .store
        .consume_oauth_state(&pkce::state_hash(&state), now())
        .await
        .expect("store answers")
    {
        StateConsumption::Consumed(saved) => saved,
        other => panic!("the state was not consumable: {other:?}"),
    };
    let aad = Aad::new(
        saved.tenant_id,
        "github",
        &hex(&saved.state_hash),
        SealedField::PkceVerifier.aad_name(),
    );
    let verifier = j
        .app
        .state
        .vault
        .open_str(
            saved
                .pkce_verifier_sealed
                .as_ref()
                .expect("a sealed verifier"),
            &aad,
        )
        .expect("verifier opens");
    let entry = j.app.state.registry.get("github").expect("github enabled");
    let settings = j.app.state.config.provider("github").expect("settings");
    let endpoints = entry
        .connector
        .oauth(settings, &j.app.state.config.public_base_url)
        .expect("oauth endpoints");
    let ctx = ProviderContext {
        http: &j.app.state.http,
        settings,
    };
    let exchange = || {
        entry.connector.exchange_code(
            ctx,
            &endpoints,
            CodeExchange {
                code: &code,
                redirect_uri: &saved.redirect_uri,
                verifier: Some(&verifier),
                params: &[],
            },
        )
    };

    let tokens = exchange().await.expect("the first exchange succeeds");
    let account = entry
        .connector
        .identify(ctx, &tokens)
        .await
        .expect("the account");
    assert_eq!(account.id, ACCOUNT_ID.to_string());
    assert_eq!(account.display_name.as_deref(), Some(ACCOUNT_LOGIN));

    let again = exchange()
        .await
        .expect_err("the second exchange is refused");
    assert!(
        matches!(again, ProviderCallError::InvalidGrant(_)),
        "{again}"
    );
    let error = j.oidc.event("grant.error").await;
    assert_eq!(
        error["detail"], "authorization code already consumed",
        "{error}"
    );
    j.oidc.event("grant.revoked").await;

    // RFC 6749 §4.1.2: what the code granted is revoked.
    let identified = entry.connector.identify(ctx, &tokens).await;
    assert!(
        matches!(identified, Err(ProviderCallError::Unauthorized)),
        "{identified:?}"
    );
    let refresh = tokens.refresh_token.as_ref().expect("a refresh token");
    let unrelated = j.app.connection(j.tenant, "github").await;
    let refreshed = entry
        .connector
        .refresh_tokens(ctx, &endpoints, &unrelated, refresh)
        .await;
    assert!(
        matches!(refreshed, Err(ProviderCallError::InvalidGrant(_))),
        "{refreshed:?}"
    );
}
