//! The connect journey for Slack, Jira, the Google providers and the Zoho providers, each
//! against a wiremock server answering as the provider documents: the authorize URL, the code
//! exchange, the account lookup, the provider's quirks, and the revocation on disconnect.

use std::collections::HashMap;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use url::Url;
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Match, Mock, MockBuilder, MockServer, Request, ResponseTemplate};

use crate::helpers::{assert_problem, json, tenant, TestApp};
use connectors::domain::TenantId;

const SECRET: &str = "provider-client-secret-value";

/// One connect journey: a provider stood in for by `mock`, and the authorize URL it started.
struct Journey {
    mock: MockServer,
    app: TestApp,
    tenant: TenantId,
    slug: &'static str,
    url: Url,
}

impl Journey {
    /// A service whose `slug` provider has credentials and both base URLs on a fresh mock (the
    /// API base under `api_path`, as Slack's lives under `/api`), and `POST /connect/{slug}`,
    /// checking what every authorize URL carries.
    async fn start(slug: &'static str, api_path: &str) -> Self {
        let mock = MockServer::start().await;
        let var = |suffix: &str| format!("POBLYSH_{}_{suffix}", slug.to_ascii_uppercase());
        let (id, auth) = (format!("{slug}-client-id"), mock.uri());
        let api = format!("{auth}{api_path}");
        let settings = [
            (var("CLIENT_ID"), id.as_str()),
            (var("CLIENT_SECRET"), SECRET),
            (var("AUTH_BASE_URL"), auth.as_str()),
            (var("API_BASE_URL"), api.as_str()),
        ];
        let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let app = TestApp::spawn_with(&pairs).await;
        let tenant = tenant();
        let response = app
            .operator(Method::POST, &format!("/connect/{slug}"))
            .header("X-Tenant-Id", tenant.to_string())
            .send()
            .await
            .expect("sent");
        let (status, body) = json(response).await;
        assert_eq!(status, 200, "{body}");
        let url = app
            .through_hop(body["authorize_url"].as_str().expect("url"))
            .await;
        let journey = Self {
            mock,
            app,
            tenant,
            slug,
            url,
        };
        journey.expect_param("response_type", Some("code"));
        journey.expect_param("client_id", Some(&id));
        journey.expect_param("redirect_uri", Some(&journey.redirect_uri()));
        assert!(journey.param("state").is_some_and(|s| s.len() >= 43));
        journey
    }

    fn param(&self, name: &str) -> Option<String> {
        let mut pairs = self.url.query_pairs();
        pairs.find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    fn expect_param(&self, name: &str, value: Option<&str>) {
        assert_eq!(self.param(name).as_deref(), value, "{name} in {}", self.url);
    }

    fn redirect_uri(&self) -> String {
        format!("{}/connect/{}/callback", self.app.base, self.slug)
    }

    /// The RFC 6749 exchange fields, with the client credentials in the body when asked.
    fn exchange(&self, code: &str, credentials_in_body: bool) -> Form {
        let mut fields = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", self.redirect_uri()),
        ];
        if credentials_in_body {
            fields.push(("client_id", format!("{}-client-id", self.slug)));
            fields.push(("client_secret", SECRET.to_string()));
        }
        Form(fields)
    }

    /// Mounts `mock` answering 200 with `body`, to be called exactly once.
    async fn once(&self, mock: MockBuilder, body: Value) {
        let response = ResponseTemplate::new(200).set_body_json(body);
        mock.respond_with(response)
            .expect(1)
            .mount(&self.mock)
            .await;
    }

    /// The provider's redirect back: `GET /connect/{slug}/callback?code=...&state=...`.
    async fn callback(&self, code: &str) -> reqwest::Response {
        let state = self.param("state").expect("state");
        let uri = format!("/connect/{}/callback?code={code}&state={state}", self.slug);
        self.app
            .anonymous(Method::GET, &uri)
            .send()
            .await
            .expect("sent")
    }

    /// Runs the callback, expects a connection for `id` named `name`, and returns it.
    async fn connected(&self, code: &str, id: &str, name: &str) -> Value {
        let (status, body) = json(self.callback(code).await).await;
        assert_eq!(status, 200, "{body}");
        let connection = body["connection"].clone();
        assert_eq!(connection["provider"], self.slug);
        assert_eq!(connection["status"], "active");
        assert_eq!(
            connection["external_account"],
            json!({ "id": id, "display_name": name })
        );
        connection
    }

    /// The callback fails with `502 PROVIDER_ERROR` naming a rejected grant; nothing is stored.
    async fn grant_rejected(&self, code: &str) {
        let response = self.callback(code).await;
        let problem = assert_problem(response, 502, "PROVIDER_ERROR").await;
        let detail = problem["details"]["provider_error"]
            .as_str()
            .expect("detail");
        assert!(detail.contains("rejected the grant"), "{detail}");
        assert!(detail.contains("invalid_code"), "{detail}");
        let (status, list) = self.app.get_json(self.tenant, "/connections").await;
        assert_eq!(status, 200);
        assert_eq!(list["connections"], json!([]), "{list}");
    }

    /// `DELETE /connections/{id}`, which revokes the grant at the provider first.
    async fn disconnect(&self, connection: &Value) {
        let id = connection["id"].as_str().expect("id");
        let response = self
            .app
            .operator(Method::DELETE, &format!("/connections/{id}"))
            .header("X-Tenant-Id", self.tenant.to_string())
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
    }
}

/// Matches a form-encoded body holding every given field.
struct Form(Vec<(&'static str, String)>);

impl Match for Form {
    fn matches(&self, request: &Request) -> bool {
        let fields = form_fields(&request.body);
        self.0.iter().all(|(k, v)| fields.get(*k) == Some(v))
    }
}

fn form_fields(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

// --- Slack -------------------------------------------------------------------------------

const SLACK_SCOPES: &str =
    "channels:history,channels:read,groups:history,groups:read,reactions:read,team:read,users:read";
const SLACK_BOT_TOKEN: &str = "xoxe.xoxb-1-MS0yLTE3NjUzNjcyNDgxLTE5ODc0Njk4MzIz";

#[tokio::test]
async fn slack_connects_the_workspace_named_in_the_token_response_and_revokes_on_disconnect() {
    let journey = Journey::start("slack", "/api").await;
    assert_eq!(journey.url.path(), "/oauth/v2/authorize");
    journey.expect_param("scope", Some(SLACK_SCOPES));
    journey.expect_param("code_challenge", None);

    // Client credentials as HTTP Basic; the response as https://api.slack.com/methods/oauth.v2.access
    // documents it, with token rotation on.
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("slack-client-id:{SECRET}"))
    );
    let exchange = Mock::given(method("POST"))
        .and(path("/api/oauth.v2.access"))
        .and(header("authorization", basic.as_str()))
        .and(journey.exchange("slack-code-1", false));
    let user = json!({ "id": "U1234", "scope": "chat:write", "access_token": "xoxp-1234", "token_type": "user" });
    let tokens = json!({
        "ok": true, "access_token": SLACK_BOT_TOKEN, "token_type": "bot", "scope": SLACK_SCOPES,
        "bot_user_id": "U0KRQLJ9H", "app_id": "A0KRD7HC3",
        "team": { "name": "Slack Softball Team", "id": "T9TK3CUKW" },
        "enterprise": null, "is_enterprise_install": false, "authed_user": user,
        "refresh_token": "xoxe-1-My0xLTE3NjUzNjcyNDgxLTE5ODc0Njk4MzIz", "expires_in": 43200
    });
    journey.once(exchange, tokens).await;
    let connection = journey
        .connected("slack-code-1", "T9TK3CUKW", "Slack Softball Team")
        .await;
    assert_eq!(connection["scopes"][0], "channels:history");
    assert!(
        connection["token_expires_at"].is_string(),
        "rotation sets an expiry"
    );

    let bearer = format!("Bearer {SLACK_BOT_TOKEN}");
    let revoke = Mock::given(method("POST"))
        .and(path("/api/auth.revoke"))
        .and(header("authorization", bearer.as_str()));
    journey
        .once(revoke, json!({ "ok": true, "revoked": true }))
        .await;
    journey.disconnect(&connection).await;
}

#[tokio::test]
async fn slack_ok_false_at_http_200_is_a_provider_error_and_stores_nothing() {
    let journey = Journey::start("slack", "/api").await;
    let exchange = Mock::given(method("POST")).and(path("/api/oauth.v2.access"));
    let answer = json!({ "ok": false, "error": "invalid_code" });
    journey.once(exchange, answer).await;
    journey.grant_rejected("used-code").await;
}

// --- Jira --------------------------------------------------------------------------------

#[tokio::test]
async fn jira_connects_the_first_accessible_site_with_a_json_exchange() {
    let journey = Journey::start("jira", "").await;
    assert_eq!(journey.url.path(), "/authorize");
    journey.expect_param("audience", Some("api.atlassian.com"));
    journey.expect_param("prompt", Some("consent"));
    journey.expect_param(
        "scope",
        Some("read:jira-work read:jira-user manage:jira-webhook offline_access"),
    );
    journey.expect_param("code_challenge", None);

    let exchange = Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(header("content-type", "application/json"))
        .and(body_partial_json(json!({
            "grant_type": "authorization_code", "client_id": "jira-client-id",
            "client_secret": SECRET, "code": "jira-code-1", "redirect_uri": journey.redirect_uri(),
        })));
    let tokens = json!({
        "access_token": "eyJraWQiOiJhdXRoLmF0bGFzc2lhbi5jb20", "expires_in": 3600,
        "token_type": "Bearer", "refresh_token": "eyJraWQiOiI1MWE2YjE2MjRlMTQ5ZDFi",
        "scope": "read:jira-work read:jira-user offline_access"
    });
    journey.once(exchange, tokens).await;
    // The sample of https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/, twice.
    let site = |id: &str, name: &str| {
        json!({ "id": id, "name": name, "url": format!("https://{name}.atlassian.net"),
                "scopes": ["read:jira-work", "read:jira-user"],
                "avatarUrl": "https://site-admin-avatar-cdn.prod.public.atl-paas.net/avatars/240/flag.png" })
    };
    let resources = Mock::given(method("GET"))
        .and(path("/oauth/token/accessible-resources"))
        .and(header(
            "authorization",
            "Bearer eyJraWQiOiJhdXRoLmF0bGFzc2lhbi5jb20",
        ));
    let sites = json!([
        site("1324a887-45db-1bf4-1e99-ef0ff456d421", "zylker"),
        site("9f2b0d5e-0000-4c3d-8a9e-123456789abc", "zylker-sandbox"),
    ]);
    journey.once(resources, sites).await;
    let connection = journey
        .connected(
            "jira-code-1",
            "1324a887-45db-1bf4-1e99-ef0ff456d421",
            "zylker",
        )
        .await;

    let before = journey
        .mock
        .received_requests()
        .await
        .expect("recorded")
        .len();
    journey.disconnect(&connection).await;
    let after = journey
        .mock
        .received_requests()
        .await
        .expect("recorded")
        .len();
    assert_eq!(before, after, "3LO has no revocation endpoint to call");
}

// --- Google ------------------------------------------------------------------------------

/// The whole journey for one of the Google providers, whose API scope is `scope`.
async fn google_journey(slug: &'static str, scope: &str, at_connect: &[(&str, Value)]) {
    let journey = Journey::start(slug, "").await;
    assert_eq!(journey.url.path(), "/o/oauth2/v2/auth");
    journey.expect_param("access_type", Some("offline"));
    journey.expect_param("prompt", Some("consent"));
    journey.expect_param("include_granted_scopes", Some("true"));
    journey.expect_param("scope", Some(&format!("openid email {scope}")));
    journey.expect_param("code_challenge_method", Some("S256"));
    let challenge = journey.param("code_challenge").expect("PKCE challenge");

    // https://developers.google.com/identity/protocols/oauth2/web-server#exchange-authorization-code
    let code = "4/P7q7W91a-oMsCeLvIaQm6bTrgtp7";
    let refresh = "1//xEoDL4iW3cxlI7yDbSRFYNG01kVKM2C-259HOF2aQbI";
    let exchange = Mock::given(method("POST"))
        .and(path("/token"))
        .and(journey.exchange(code, true));
    let tokens = json!({
        "access_token": "ya29.a0AfH6SMBx-google-access", "expires_in": 3920,
        "token_type": "Bearer", "refresh_token": refresh, "id_token": "eyJhbGciOiJSUzI1NiJ9.e30.sig",
        "scope": format!("openid https://www.googleapis.com/auth/userinfo.email {scope}"),
    });
    journey.once(exchange, tokens).await;
    let userinfo = Mock::given(method("GET"))
        .and(path("/v1/userinfo"))
        .and(header(
            "authorization",
            "Bearer ya29.a0AfH6SMBx-google-access",
        ));
    let claims = json!({
        "sub": "110169484474386276334", "email": "paula@zylker.com", "email_verified": true,
        "picture": "https://lh3.googleusercontent.com/a/photo.jpg"
    });
    journey.once(userinfo, claims).await;
    for (at, body) in at_connect {
        let call = Mock::given(method("GET")).and(path(*at)).and(header(
            "authorization",
            "Bearer ya29.a0AfH6SMBx-google-access",
        ));
        journey.once(call, body.clone()).await;
    }
    let connection = journey
        .connected(code, "110169484474386276334", "paula@zylker.com")
        .await;
    assert_eq!(connection["scopes"][2], scope);

    // The verifier sent to the token endpoint is the one behind the authorize URL's challenge.
    let requests = journey.mock.received_requests().await.expect("recorded");
    let sent = requests
        .iter()
        .find(|r| r.url.path() == "/token")
        .expect("exchange");
    let verifier = form_fields(&sent.body)
        .remove("code_verifier")
        .expect("code_verifier");
    assert_eq!(
        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
        challenge
    );

    // https://developers.google.com/identity/protocols/oauth2/web-server#tokenrevoke
    let revoke = Mock::given(method("POST"))
        .and(path("/revoke"))
        .and(Form(vec![("token", refresh.to_string())]));
    journey.once(revoke, json!({})).await;
    journey.disconnect(&connection).await;
}

#[tokio::test]
async fn google_drive_connects_offline_with_pkce_and_names_the_account_by_userinfo() {
    let scope = "https://www.googleapis.com/auth/drive.metadata.readonly";
    // Drive takes the changes feed's start page token at connect.
    let start = json!({"kind": "drive#startPageToken", "startPageToken": "100"});
    google_journey(
        "google_drive",
        scope,
        &[("/drive/v3/changes/startPageToken", start)],
    )
    .await;
}

#[tokio::test]
async fn google_calendar_connects_offline_with_pkce_and_names_the_account_by_userinfo() {
    let scope = "https://www.googleapis.com/auth/calendar.readonly";
    // Calendar reads which calendars the user selected at connect.
    let list = json!({"kind": "calendar#calendarList", "items": [
        {"kind": "calendar#calendarListEntry", "id": "paula@zylker.com", "summary": "Paula", "accessRole": "owner", "primary": true, "selected": true}
    ]});
    google_journey(
        "google_calendar",
        scope,
        &[("/calendar/v3/users/me/calendarList", list)],
    )
    .await;
}

// Gmail names the account by its mailbox (`users.getProfile`): `tests/it/gmail.rs`.

// --- Zoho --------------------------------------------------------------------------------

const ZOHO_ACCESS: &str = "1000.2deaf8d0c268e3c85daa2a013a843b10.703adef2bb337b8ca36cfc5d7b83cf24";
const ZOHO_REFRESH: &str = "1000.18e983526f0ca8575ea9c53b0cd5bb58.1bd83a6f2e22c3a7e1309d96ae439cc1";

/// The Zoho journey for `slug`: checks the authorize URL and the exchange, answers the
/// product's who-am-I call at `api_path` with `identity`, expects the account `(id, name)`,
/// and revokes the refresh token on disconnect.
async fn zoho_journey(
    slug: &'static str,
    scopes: &str,
    api_path: &str,
    identity: Value,
    account: (&str, &str),
) {
    let journey = Journey::start(slug, "").await;
    assert_eq!(journey.url.path(), "/oauth/v2/auth");
    journey.expect_param("access_type", Some("offline"));
    journey.expect_param("prompt", Some("consent"));
    journey.expect_param("scope", Some(scopes));
    journey.expect_param("code_challenge", None);

    // https://www.zoho.com/accounts/protocol/oauth/multi-dc/client-authorization.html
    let code = "1000.86a03ca5dbfccb7445b1889b8215efb0.cad9e1ae4989a1196fe05aa729fcb4e1";
    let exchange = Mock::given(method("POST"))
        .and(path("/oauth/v2/token"))
        .and(journey.exchange(code, true));
    let tokens = json!({
        "access_token": ZOHO_ACCESS, "refresh_token": ZOHO_REFRESH,
        "api_domain": "https://www.zohoapis.com", "token_type": "Bearer", "expires_in": 3600
    });
    journey.once(exchange, tokens).await;
    let scheme = format!("Zoho-oauthtoken {ZOHO_ACCESS}");
    let whoami = Mock::given(method("GET"))
        .and(path(api_path))
        .and(header("authorization", scheme.as_str()));
    journey.once(whoami, identity).await;
    let connection = journey.connected(code, account.0, account.1).await;

    let revoke = Mock::given(method("POST"))
        .and(path("/oauth/v2/token/revoke"))
        .and(query_param("token", ZOHO_REFRESH));
    journey.once(revoke, json!({ "status": "success" })).await;
    journey.disconnect(&connection).await;
}

#[tokio::test]
async fn zoho_cliq_connects_the_user_behind_the_token() {
    // Zoho Accounts' user info (https://www.zoho.com/accounts/protocol/oauth/use-access-token.html).
    let user = json!({
        "First_Name": "Scott", "Email": "scott.fisher@zylker.com", "Last_Name": "Fisher",
        "Display_Name": "Scott Fisher", "ZUID": 55500123
    });
    let scopes = "ZohoCliq.Chats.READ,ZohoCliq.Messages.READ,AaaServer.profile.READ";
    let account = ("55500123", "scott.fisher@zylker.com");
    zoho_journey("zoho_cliq", scopes, "/oauth/user/info", user, account).await;
}

#[tokio::test]
async fn zoho_mail_connects_the_first_mailbox_of_the_user() {
    // Trimmed from https://www.zoho.com/mail/help/api/get-user-account-details.html.
    let accounts = json!({
        "status": { "code": 200, "description": "success" },
        "data": [{
            "accountId": "6000000000293", "accountName": "zylker",
            "displayName": "Rebecca Training", "primaryEmailAddress": "rebecca@zylker.com",
            "mailboxAddress": "rebecca@zylker.com", "incomingUserName": "rebecca@zylker.com",
            "type": "ZOHO_ACCOUNT", "sequence": 1, "zuid": 809451734,
            "emailAddress": [{ "isAlias": false, "isPrimary": true, "mailId": "rebecca@zylker.com", "isConfirmed": true }]
        }]
    });
    let scopes = "ZohoMail.accounts.READ,ZohoMail.folders.READ,ZohoMail.messages.READ";
    let account = ("6000000000293", "rebecca@zylker.com");
    zoho_journey("zoho_mail", scopes, "/api/accounts", accounts, account).await;
}

#[tokio::test]
async fn zoho_invalid_code_at_http_200_is_a_provider_error_and_stores_nothing() {
    for slug in ["zoho_cliq", "zoho_mail"] {
        let journey = Journey::start(slug, "").await;
        let exchange = Mock::given(method("POST")).and(path("/oauth/v2/token"));
        journey
            .once(exchange, json!({ "error": "invalid_code" }))
            .await;
        journey.grant_rejected("expired-code").await;
    }
}
