//! [`KeyCache::verify_rs256`] against a real OpenID Provider: oidc-provider (panva), run by
//! `tests/oidc/server.mjs`, issues a genuine ID token through the authorization code flow with
//! PKCE, signed RS256 with the key it publishes at `{issuer}/jwks` (kid `test`). The token must
//! verify, and the same token with its payload changed must not.
//!
//! Needs Node.js 18 or later on `PATH` and `npm ci --prefix tests/oidc`, as `oidc.rs` does.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use connectors::connector::keys::{JwtError, JwtExpectation, KeyCache, KeyCachePolicy, KeyError};
use connectors::connector::pkce;
use reqwest::StatusCode;
use serde_json::Value;
use url::Url;

use crate::oidc::{follow_to_callback, query, OidcServer, ACCOUNT_ID, CLIENT_ID, CLIENT_SECRET};

/// Never visited: the test stops at the redirect to it and takes the code.
const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";

/// An ID token for the configured account, from the authorization code flow.
async fn id_token(oidc: &OidcServer) -> String {
    let verifier = pkce::new_verifier();
    let mut authorize = Url::parse(&format!("{}/login/oauth/authorize", oidc.base)).expect("URL");
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("scope", "openid")
        .append_pair("state", "jwks-test-state")
        .append_pair("nonce", "jwks-test-nonce")
        .append_pair("code_challenge", &pkce::challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("browser client");
    let callback = follow_to_callback(&browser, oidc, &authorize, REDIRECT_URI).await;
    let code = query(&callback, "code");

    let response = reqwest::Client::new()
        .post(format!("{}/login/oauth/access_token", oidc.base))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code_verifier", verifier.expose()),
        ])
        .send()
        .await
        .expect("authorization server reachable");
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON token response");
    assert_eq!(status, StatusCode::OK, "{body}\n{}", oidc.stderr());
    body["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no id_token in {body}"))
        .to_string()
}

#[tokio::test]
async fn a_genuine_id_token_verifies_against_the_providers_jwks_and_a_tampered_one_does_not() {
    let mut oidc = OidcServer::start().await;
    oidc.configure(REDIRECT_URI).await;
    let token = id_token(&oidc).await;

    let keys = KeyCache::new(reqwest::Client::new(), KeyCachePolicy::default());
    let expectation = JwtExpectation {
        jwks_url: Url::parse(&format!("{}/jwks", oidc.base)).expect("URL"),
        issuers: vec![oidc.base.clone()],
        audience: CLIENT_ID.to_string(),
        leeway_secs: 30,
    };

    let claims = keys
        .verify_rs256(&token, &expectation)
        .await
        .unwrap_or_else(|e| panic!("the provider's ID token is refused: {e}"));
    assert_eq!(claims["iss"], oidc.base);
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["sub"], ACCOUNT_ID.to_string());
    assert_eq!(claims["nonce"], "jwks-test-nonce");

    // The provider's key is the one it signs with; other kids are unknown.
    assert!(keys.key(&expectation.jwks_url, "test").await.is_ok());
    assert_eq!(
        keys.key(&expectation.jwks_url, "not-published").await.err(),
        Some(KeyError::UnknownKid)
    );

    // The same token with another subject, the signature kept: refused.
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS");
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url"))
            .expect("JSON claims");
    payload["sub"] = Value::String("someone-else".into());
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );
    assert_eq!(
        keys.verify_rs256(&tampered, &expectation).await,
        Err(JwtError::BadSignature)
    );

    // Genuine, but meant for someone else or from another issuer: refused.
    let other_audience = JwtExpectation {
        audience: "another-client".into(),
        ..expectation.clone()
    };
    assert_eq!(
        keys.verify_rs256(&token, &other_audience).await,
        Err(JwtError::WrongAudience)
    );
    let other_issuer = JwtExpectation {
        issuers: vec!["https://accounts.google.com".into()],
        ..expectation.clone()
    };
    assert_eq!(
        keys.verify_rs256(&token, &other_issuer).await,
        Err(JwtError::WrongIssuer)
    );
}
