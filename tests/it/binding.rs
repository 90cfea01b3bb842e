//! A connect completes only in the user agent that started it: a leaked or forwarded
//! `authorize_url` cannot connect someone else's provider account into the tenant. The
//! service's callback binds through the authorize hop's cookie; Core's callback through the
//! `binding` Core keeps in its session.

use reqwest::{Client, Method};
use serde_json::json;
use url::Url;

use crate::connect::start;
use crate::helpers::{assert_problem, json, tenant, TestApp};

/// A browser of its own: keeps cookies, follows no redirects.
fn browser() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .expect("client")
}

fn location(response: &reqwest::Response) -> Url {
    Url::parse(response.headers()["location"].to_str().expect("ascii")).expect("a URL")
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Follows redirects with `client` until one leaves for `return_to` or a response is final;
/// returns the last response.
async fn follow(client: &Client, mut url: Url, stop_at: &str) -> reqwest::Response {
    for _ in 0..5 {
        let response = client.get(url.clone()).send().await.expect("sent");
        if response.status() != 303 {
            return response;
        }
        let next = location(&response);
        if next.as_str().starts_with(stop_at) {
            return response;
        }
        url = next;
    }
    panic!("too many redirects");
}

async fn authorize_url(app: &TestApp, t: connectors::domain::TenantId) -> Url {
    let (status, started) = json(
        start(
            app,
            t,
            "sandbox",
            Some(json!({ "return_to": "http://127.0.0.1:3000/connectors" })),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{started}");
    assert!(started.get("binding").is_none(), "{started}");
    Url::parse(started["authorize_url"].as_str().expect("url")).expect("url")
}

async fn connections(app: &TestApp, t: connectors::domain::TenantId) -> usize {
    let (status, list) = app.get_json(t, "/connections").await;
    assert_eq!(status, 200);
    list["connections"].as_array().expect("connections").len()
}

fn core_app_settings() -> Vec<(&'static str, &'static str)> {
    vec![(
        "POBLYSH_ALLOWED_RETURN_URLS",
        "http://127.0.0.1:3000/connectors",
    )]
}

#[tokio::test]
async fn a_leaked_authorize_url_opened_in_another_browser_connects_nothing() {
    let app = TestApp::spawn_with(&core_app_settings()).await;
    let t = tenant();
    let authorize = authorize_url(&app, t).await;
    // The service's own hop, not the provider's page.
    assert_eq!(authorize.path(), "/connect/sandbox/authorize");
    assert!(param(&authorize, "state").is_some());

    // The victim's browser was never at the hop... the attacker was: it opens the hop, then
    // hands the provider's page it leads to (state and all) to someone else.
    let attacker = browser();
    let hop = attacker.get(authorize.clone()).send().await.expect("sent");
    assert_eq!(hop.status(), 303);
    assert_eq!(hop.headers()["cache-control"], "no-store");
    let provider_page = location(&hop);
    let victim = browser();
    let back = follow(&victim, provider_page, "http://127.0.0.1:3000").await;
    assert_eq!(back.status(), 303);
    let at_core = location(&back);
    assert_eq!(param(&at_core, "status").as_deref(), Some("error"));
    assert_eq!(
        param(&at_core, "code").as_deref(),
        Some("OAUTH_STATE_INVALID")
    );
    assert_eq!(connections(&app, t).await, 0, "nothing was connected");
}

#[tokio::test]
async fn the_hop_binds_one_browser_once_and_the_callback_spends_its_cookie() {
    let app = TestApp::spawn_with(&core_app_settings()).await;
    let t = tenant();
    let authorize = authorize_url(&app, t).await;
    let user = browser();
    let hop = user.get(authorize.clone()).send().await.expect("sent");
    assert_eq!(hop.status(), 303);
    let cookie = hop.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(cookie.starts_with("poblysh-connect-"), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    let provider_page = location(&hop);

    // A second pass through the hop (the link forwarded after use) binds nothing.
    let other = browser();
    let again = other.get(authorize).send().await.expect("sent");
    assert_eq!(again.status(), 303, "sent back to Core with the error");
    let at_core = location(&again);
    assert_eq!(param(&at_core, "status").as_deref(), Some("error"));
    assert!(again.headers().get("set-cookie").is_none());

    // The browser that passed the hop completes the connect; its cookie is spent.
    let back = follow(&user, provider_page, "http://127.0.0.1:3000").await;
    let at_core = location(&back);
    assert_eq!(
        param(&at_core, "status").as_deref(),
        Some("connected"),
        "{at_core}"
    );
    let cleared = back.headers()["set-cookie"].to_str().expect("ascii");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(connections(&app, t).await, 1);
}

#[tokio::test]
async fn a_wrong_cookie_or_a_hop_for_an_unknown_state_is_refused() {
    let app = TestApp::spawn_with(&core_app_settings()).await;
    let t = tenant();
    let authorize = authorize_url(&app, t).await;
    let user = browser();
    let hop = user.get(authorize.clone()).send().await.expect("sent");
    let name = hop.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .split('=')
        .next()
        .expect("a name")
        .to_string();
    let sandbox = location(&hop);
    let to_callback = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(sandbox)
        .send()
        .await
        .expect("sent");
    let callback = location(&to_callback);
    // A forged cookie of the right name.
    let response = app
        .anonymous(
            Method::GET,
            &format!(
                "{}?{}",
                callback.path(),
                callback.query().unwrap_or_default()
            ),
        )
        .header("cookie", format!("{name}=forged"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 303);
    assert_eq!(
        param(&location(&response), "code").as_deref(),
        Some("OAUTH_STATE_INVALID")
    );
    assert_eq!(connections(&app, t).await, 0);

    // A hop for a state nobody minted, or without one.
    let problem = assert_problem(
        app.anonymous(Method::GET, "/connect/sandbox/authorize?state=forged")
            .send()
            .await
            .expect("sent"),
        400,
        "OAUTH_STATE_INVALID",
    )
    .await;
    assert_eq!(problem["details"]["reason"], "unknown");
    assert_problem(
        app.anonymous(Method::GET, "/connect/sandbox/authorize")
            .send()
            .await
            .expect("sent"),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    // A state minted for the sandbox, at another provider's hop.
    let fresh = authorize_url(&app, t).await;
    let state = param(&fresh, "state").expect("state");
    let crossed = app
        .anonymous(
            Method::GET,
            &format!("/connect/github/authorize?state={state}"),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(crossed.status(), 303);
    assert_eq!(
        param(&location(&crossed), "code").as_deref(),
        Some("OAUTH_STATE_INVALID")
    );
}

/// Starts a connect with Core's own callback and passes the provider's page; returns the
/// `code` and `state` Core receives, and the binding it kept.
async fn start_core(app: &TestApp, t: connectors::domain::TenantId) -> (String, String, String) {
    let (status, started) = json(
        start(
            app,
            t,
            "sandbox",
            Some(json!({ "redirect_uri": "http://127.0.0.1:3000/connectors/callback/sandbox" })),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let authorize = Url::parse(started["authorize_url"].as_str().expect("url")).expect("url");
    assert_eq!(
        authorize.path(),
        "/sandbox/authorize",
        "the provider's page"
    );
    let at_core = location(&browser().get(authorize).send().await.expect("sent"));
    assert!(at_core
        .as_str()
        .starts_with("http://127.0.0.1:3000/connectors/callback/sandbox"));
    (
        param(&at_core, "code").expect("code"),
        param(&at_core, "state").expect("state"),
        started["binding"].as_str().expect("binding").to_string(),
    )
}

#[tokio::test]
async fn core_callback_needs_the_binding_core_kept() {
    let app = TestApp::spawn_with(&[(
        "POBLYSH_ALLOWED_REDIRECT_URIS",
        "http://127.0.0.1:3000/connectors/callback/sandbox",
    )])
    .await;
    let t = tenant();
    let callback = |(code, state): (&str, &str), binding: Option<&str>| {
        let mut path = format!("/connect/sandbox/callback?code={code}&state={state}");
        if let Some(binding) = binding {
            path.push_str(&format!("&binding={binding}"));
        }
        app.anonymous(Method::GET, &path).send()
    };
    // Forwarded without the binding (a leaked link landing in a session that never started
    // it), or with another connect's binding: refused, and the state is spent.
    let (code, state, _) = start_core(&app, t).await;
    let problem = assert_problem(
        callback((&code, &state), None).await.expect("sent"),
        400,
        "OAUTH_STATE_INVALID",
    )
    .await;
    assert_eq!(problem["details"]["reason"], "browser_mismatch");
    let (code, state, _) = start_core(&app, t).await;
    let (_, _, other) = start_core(&app, t).await;
    let problem = assert_problem(
        callback((&code, &state), Some(&other)).await.expect("sent"),
        400,
        "OAUTH_STATE_INVALID",
    )
    .await;
    assert_eq!(problem["details"]["reason"], "browser_mismatch");
    assert_eq!(connections(&app, t).await, 0);
    // The binding of this very connect: connected.
    let (code, state, binding) = start_core(&app, t).await;
    let (status, body) = json(
        callback((&code, &state), Some(&binding))
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(connections(&app, t).await, 1);
}

#[tokio::test]
async fn the_local_profile_lets_a_callback_without_proof_through_but_never_a_wrong_one() {
    let data = tempfile::tempdir().expect("dir");
    let data_dir = data.path().display().to_string();
    let app = TestApp::spawn_with(&[
        ("POBLYSH_PROFILE", "local"),
        ("POBLYSH_DATA_DIR", &data_dir),
    ])
    .await;
    let t = tenant();
    let (status, started) = json(start(&app, t, "sandbox", None).await).await;
    assert_eq!(status, 200);
    let authorize = Url::parse(started["authorize_url"].as_str().expect("url")).expect("url");
    // A cookie-less client (curl in a walkthrough) completes the connect in `local`.
    let plain = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = follow(&plain, authorize, "http://unused").await;
    assert_eq!(response.status(), 200, "the callback's JSON");
    assert_eq!(connections(&app, t).await, 1);
    // A wrong cookie is refused even here.
    let (_, started) = json(start(&app, t, "sandbox", None).await).await;
    let authorize = Url::parse(started["authorize_url"].as_str().expect("url")).expect("url");
    let hop = plain.get(authorize).send().await.expect("sent");
    let name = hop.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .split('=')
        .next()
        .expect("name")
        .to_string();
    let to_callback = plain.get(location(&hop)).send().await.expect("sent");
    let callback = location(&to_callback);
    let response = plain
        .get(callback)
        .header("cookie", format!("{name}=forged"))
        .send()
        .await
        .expect("sent");
    let problem = assert_problem(response, 400, "OAUTH_STATE_INVALID").await;
    assert_eq!(problem["details"]["reason"], "browser_mismatch");
}
