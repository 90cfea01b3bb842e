//! Gmail's Pub/Sub pushes at `POST /webhooks/gmail/{tenant_id}`, verified by the OIDC token
//! Google signs them with, against a JWKS served by a fake key server: a signed push is
//! stored once; a missing, forged, expired, foreign or `alg: none` token is refused with `401`;
//! and when the key server is down, verification fails closed. Tokens carry the claims of
//! Google's documented example (<https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions>);
//! the body is the push message of the Gmail push guide
//! (<https://developers.google.com/gmail/api/guides/push>).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use connectors::domain::EventStatus;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{accepted, assert_problem, post_delivery, stored_event, tenant, TestApp};

const KEY: &str = include_str!("../keys/jwt-test-rsa-1.pem");
const OTHER_KEY: &str = include_str!("../keys/jwt-test-rsa-2.pem");
const AUDIENCE: &str = "https://connectors.example.com/webhooks/gmail";
const SERVICE_ACCOUNT: &str = "gmail-push@example-project.iam.gserviceaccount.com";

fn encoding_key(pem: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(pem.as_bytes()).expect("test key parses")
}

/// A key server publishing the first test key as `kid` `k1`.
async fn key_server() -> MockServer {
    let server = MockServer::start().await;
    let mut jwk = serde_json::to_value(
        Jwk::from_encoding_key(&encoding_key(KEY), Algorithm::RS256).expect("a JWK"),
    )
    .expect("JWK serializes");
    jwk["kid"] = json!("k1");
    jwk["use"] = json!("sig");
    Mock::given(method("GET"))
        .and(path("/oauth2/v3/certs"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("cache-control", "public, max-age=3600")
                .set_body_json(json!({ "keys": [jwk] })),
        )
        .mount(&server)
        .await;
    server
}

async fn spawn(jwks: &str) -> TestApp {
    TestApp::spawn_with(&[
        ("POBLYSH_GMAIL_PUSH_AUDIENCE", AUDIENCE),
        ("POBLYSH_GMAIL_PUSH_JWKS_URL", jwks),
        ("POBLYSH_GMAIL_PUSH_SERVICE_ACCOUNT", SERVICE_ACCOUNT),
    ])
    .await
}

/// The claims of a push token, as Google's example shows them.
fn claims() -> Value {
    let now = connectors::domain::now().timestamp();
    json!({
        "aud": AUDIENCE,
        "azp": "113774264463038321964",
        "email": SERVICE_ACCOUNT,
        "email_verified": true,
        "exp": now + 3600,
        "iat": now,
        "iss": "https://accounts.google.com",
        "sub": "113774264463038321964",
    })
}

fn token(pem: &str, claims: &Value) -> String {
    let header = Header {
        kid: Some("k1".into()),
        ..Header::new(Algorithm::RS256)
    };
    jsonwebtoken::encode(&header, claims, &encoding_key(pem)).expect("token signs")
}

/// A push of a change to `address`'s mailbox, as Pub/Sub delivers it.
fn push(message_id: &str, address: &str) -> Vec<u8> {
    let data =
        STANDARD.encode(json!({ "emailAddress": address, "historyId": "9876543210" }).to_string());
    serde_json::to_vec(&json!({
        "message": {
            "data": data,
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": "2021-02-26T19:13:55.749Z",
            "publish_time": "2021-02-26T19:13:55.749Z"
        },
        "subscription": "projects/myproject/subscriptions/mysubscription"
    }))
    .expect("json")
}

async fn deliver(
    app: &TestApp,
    t: connectors::domain::TenantId,
    token: Option<String>,
    body: &[u8],
) -> reqwest::Response {
    let mut headers = vec![("content-type", "application/json".to_string())];
    if let Some(token) = token {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    post_delivery(app, &format!("/webhooks/gmail/{t}"), headers, body).await
}

/// A Gmail connection of `t` to the mailbox `address` (kept as its `email`, as connecting does).
async fn mailbox(
    app: &TestApp,
    t: connectors::domain::TenantId,
    address: &str,
) -> connectors::domain::Connection {
    let mut metadata = serde_json::Map::new();
    metadata.insert("email".into(), json!(address));
    app.store()
        .upsert_connection(&connectors::domain::ConnectionUpsert {
            id: connectors::domain::ConnectionId::generate(),
            tenant_id: t,
            provider: "gmail".into(),
            external_account_id: format!("sub-{address}"),
            external_account_name: Some(address.into()),
            scopes: vec![],
            tokens: Default::default(),
            metadata,
            secrets_sealed: None,
            now: connectors::domain::now(),
        })
        .await
        .expect("upsert")
        .expect("created")
}

#[tokio::test]
async fn a_signed_push_is_stored_once_without_its_token() {
    let keys = key_server().await;
    let app = spawn(&format!("{}/oauth2/v3/certs", keys.uri())).await;
    let t = tenant();
    let named = mailbox(&app, t, "user@example.com").await;
    let other = mailbox(&app, t, "other@example.com").await;
    let body = push("2070443601311540", "user@example.com");
    let first = accepted(deliver(&app, t, Some(token(KEY, &claims())), &body).await).await;
    assert_eq!(first["duplicate"], false);
    let again = accepted(deliver(&app, t, Some(token(KEY, &claims())), &body).await).await;
    assert_eq!(
        again["duplicate"], true,
        "Pub/Sub redelivers with the same messageId"
    );
    assert_eq!(again["event_id"], first["event_id"]);
    let stored = stored_event(&app, t, &first).await;
    assert_eq!(stored.dedupe_key, "pubsub:2070443601311540");
    assert!(
        !stored.headers.contains_key("authorization"),
        "{:?}",
        stored.headers
    );
    // It names one of the tenant's two mailboxes: that one is synced, the other is not.
    connectors::ingest::inbox::drain(&app.state)
        .await
        .expect("drain");
    let processed = stored_event(&app, t, &first).await;
    assert_eq!(processed.status, EventStatus::Processed);
    assert_eq!(
        crate::helpers::webhook_jobs(&app, t, &named.id.to_string())
            .await
            .len(),
        1
    );
    assert!(crate::helpers::webhook_jobs(&app, t, &other.id.to_string())
        .await
        .is_empty());
}

#[tokio::test]
async fn tokens_that_do_not_prove_a_push_are_refused() {
    let keys = key_server().await;
    let app = spawn(&format!("{}/oauth2/v3/certs", keys.uri())).await;
    let t = tenant();
    let body = push("1", "user@example.com");
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims();
        change(&mut c);
        c
    };
    let none_alg = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({ "alg": "none", "typ": "JWT" }).to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("another key", Some(token(OTHER_KEY, &claims()))),
        (
            "another audience",
            Some(token(
                KEY,
                &with(&|c| c["aud"] = json!("https://elsewhere.example")),
            )),
        ),
        (
            "another issuer",
            Some(token(
                KEY,
                &with(&|c| c["iss"] = json!("https://evil.example")),
            )),
        ),
        (
            "expired",
            Some(token(KEY, &with(&|c| c["exp"] = json!(1_550_185_935)))),
        ),
        (
            "another service account",
            Some(token(
                KEY,
                &with(&|c| c["email"] = json!("someone@example.com")),
            )),
        ),
        (
            "unverified e-mail",
            Some(token(KEY, &with(&|c| c["email_verified"] = json!(false)))),
        ),
        ("alg none", Some(none_alg)),
        ("garbage", Some("not.a.token".into())),
    ];
    for (case, token) in cases {
        let response = deliver(&app, t, token, &body).await;
        let problem = assert_problem(response, 401, "INVALID_SIGNATURE").await;
        assert!(
            !problem.to_string().contains("eyJ"),
            "{case}: the token is never echoed: {problem}"
        );
    }
    // Nothing was stored: the signed delivery is new.
    let first = accepted(deliver(&app, t, Some(token(KEY, &claims())), &body).await).await;
    assert_eq!(first["duplicate"], false);
}

#[tokio::test]
async fn a_key_server_that_is_down_fails_verification_closed() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = closed.local_addr().expect("address");
    drop(closed);
    let app = spawn(&format!("http://{address}/oauth2/v3/certs")).await;
    let t = tenant();
    let response = deliver(
        &app,
        t,
        Some(token(KEY, &claims())),
        &push("1", "u@example.com"),
    )
    .await;
    assert_problem(response, 401, "INVALID_SIGNATURE").await;

    // A key server answering 500 fails closed too.
    let broken = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&broken)
        .await;
    let app = spawn(&format!("{}/oauth2/v3/certs", broken.uri())).await;
    let response = deliver(
        &app,
        t,
        Some(token(KEY, &claims())),
        &push("1", "u@example.com"),
    )
    .await;
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
}

/// Without `POBLYSH_GMAIL_PUSH_AUDIENCE`, the audience is the URL pushed to, as Pub/Sub sets it
/// when the subscription names none.
#[tokio::test]
async fn without_an_audience_configured_the_push_url_is_the_audience() {
    let keys = key_server().await;
    let app = TestApp::spawn_with(&[
        (
            "POBLYSH_GMAIL_PUSH_JWKS_URL",
            &format!("{}/oauth2/v3/certs", keys.uri()),
        ),
        ("POBLYSH_GMAIL_PUSH_SERVICE_ACCOUNT", SERVICE_ACCOUNT),
    ])
    .await;
    let t = tenant();
    let public = app
        .state
        .config
        .public_base_url
        .as_str()
        .trim_end_matches('/');
    let for_url = |aud: String| {
        let mut c = claims();
        c["aud"] = json!(aud);
        token(KEY, &c)
    };
    let body = push("1", "u@example.com");
    let refused = deliver(&app, t, Some(token(KEY, &claims())), &body).await;
    assert_problem(refused, 401, "INVALID_SIGNATURE").await;
    let other_tenant = for_url(format!("{public}/webhooks/gmail/{}", tenant()));
    let refused = deliver(&app, t, Some(other_tenant), &body).await;
    assert_problem(refused, 401, "INVALID_SIGNATURE").await;
    let own = for_url(format!("{public}/webhooks/gmail/{t}"));
    accepted(deliver(&app, t, Some(own), &body).await).await;
}
