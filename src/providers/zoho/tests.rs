use proptest::prelude::*;
use serde_json::json;

use super::*;

fn settings(auth: Option<&str>, api: Option<&str>) -> ProviderSettings {
    ProviderSettings {
        api_base_url: api.map(|u| Url::parse(u).expect("url")),
        auth_base_url: auth.map(|u| Url::parse(u).expect("url")),
        ..ProviderSettings::bare("zoho_mail")
    }
}

fn params(accounts: &str) -> Vec<(String, String)> {
    vec![
        ("location".into(), "eu".into()),
        ("accounts-server".into(), accounts.into()),
    ]
}

fn url(u: &str) -> Url {
    Url::parse(u).expect("url")
}

#[test]
fn the_api_host_follows_the_accounts_server_data_centre() {
    let none = settings(None, None);
    let api =
        |accounts: &str, product| api_base_at(&none, Some(&url(accounts)), product).to_string();
    assert_eq!(
        api("https://accounts.zoho.eu", "mail"),
        "https://mail.zoho.eu/"
    );
    assert_eq!(
        api("https://accounts.zoho.com.au", "cliq"),
        "https://cliq.zoho.com.au/"
    );
    assert_eq!(
        api("https://accounts.zohocloud.ca", "mail"),
        "https://mail.zohocloud.ca/"
    );
    assert_eq!(
        api("https://accounts.zoho.com.cn", "cliq"),
        "https://cliq.zoho.com.cn/"
    );
    // Not one of Zoho's: the configured server's DC, else the US.
    assert_eq!(api("http://127.0.0.1:9", "mail"), "https://mail.zoho.com/");
    let eu = settings(Some("https://accounts.zoho.eu"), None);
    assert_eq!(
        api_base_at(&eu, None, "mail").as_str(),
        "https://mail.zoho.eu/"
    );
    // A configured API base wins for every connection.
    let fake = settings(
        Some("https://accounts.zoho.eu"),
        Some("http://127.0.0.1:9/x"),
    );
    assert_eq!(
        api_base_at(&fake, Some(&url("https://accounts.zoho.in")), "mail").as_str(),
        "http://127.0.0.1:9/x"
    );
    let e = endpoints(&settings(Some("https://accounts.zoho.in"), None));
    assert_eq!(
        e.token_url.as_str(),
        "https://accounts.zoho.in/oauth/v2/token"
    );
}

#[test]
fn only_zohos_accounts_servers_and_the_configured_one_are_accepted() {
    let s = settings(Some("http://127.0.0.1:4010"), None);
    for (dc, host, _) in DATA_CENTRES {
        let got = accounts_server(&s, &params(&format!("https://{host}"))).expect(dc);
        assert_eq!(got.expect("named").host_str(), Some(*host));
        let slash = accounts_server(&s, &params(&format!("https://{host}/"))).expect(dc);
        assert!(slash.is_some());
    }
    let configured = accounts_server(&s, &params("http://127.0.0.1:4010")).expect("configured");
    assert_eq!(configured, Some(url("http://127.0.0.1:4010")));
    assert_eq!(accounts_server(&s, &[]).expect("absent"), None);
    for bad in [
        "https://accounts.zoho.eu.evil.example",
        "https://evil.example",
        "https://xaccounts.zoho.eu",
        "http://accounts.zoho.eu",
        "https://accounts.zoho.eu:444",
        "https://a:b@accounts.zoho.eu",
        "https://accounts.zoho.eu/path",
        "https://accounts.zoho.eu/?q=1",
        "https://accounts.zoho.eu/#f",
        "http://127.0.0.1:4011",
        "http://127.0.0.1:4010/other",
        "//accounts.zoho.eu",
        "accounts.zoho.eu",
        "",
    ] {
        assert!(accounts_server(&s, &params(bad)).is_err(), "{bad}");
        assert!(check_callback(&s, &params(bad)).is_err(), "{bad}");
    }
    let bad_location = vec![("location".to_string(), "EU/../x".to_string())];
    let (field, _) = check_callback(&s, &bad_location).expect_err("refused");
    assert_eq!(field, "location");
}

proptest! {
    /// Whatever the redirect says, the accounts server used is Zoho's over HTTPS or exactly
    /// the configured one, and nothing panics.
    #[test]
    fn no_accounts_server_outside_the_list_is_ever_used(raw in ".{0,120}", host in "[a-z.]{1,30}") {
        let s = settings(Some("http://127.0.0.1:4010"), None);
        for candidate in [raw.clone(), format!("https://{host}"), format!("https://accounts.zoho.eu{raw}")] {
            if let Ok(Some(u)) = accounts_server(&s, &params(&candidate)) {
                let zoho = DATA_CENTRES.iter().any(|(_, h, _)| u.as_str() == format!("https://{h}/"));
                prop_assert!(zoho || u == url("http://127.0.0.1:4010"), "{}", u);
            }
        }
    }

    /// Epoch milliseconds are read from numbers and numeric strings only; nothing panics.
    #[test]
    fn millis_never_panics(text in ".{0,30}", n in any::<i64>()) {
        let _ = millis(Some(&json!(text)));
        let read = millis(Some(&json!(n)));
        prop_assert_eq!(read, (n >= 0).then_some(n));
        prop_assert_eq!(millis(Some(&json!(n.to_string()))), (n >= 0).then_some(n));
    }
}

fn dc_tokens() -> TokenSet {
    let body =
        json!({"access_token": "a", "api_domain": "https://www.zohoapis.eu", "expires_in": 3600});
    let mut tokens =
        interpret_token_response(200, body.as_object().expect("object")).expect("tokens");
    tokens.extra.insert(
        META_ACCOUNTS_SERVER.into(),
        json!("https://accounts.zoho.eu"),
    );
    tokens.extra.insert(META_DATA_CENTRE.into(), json!("eu"));
    tokens
}

#[test]
fn fresh_tokens_name_their_data_centre_and_hosts() {
    let tokens = dc_tokens();
    let meta = dc_metadata(&tokens);
    assert_eq!(meta["data_centre"], "eu");
    assert_eq!(meta["accounts_server"], "https://accounts.zoho.eu");
    assert_eq!(meta["api_domain"], "https://www.zohoapis.eu");
    let none = settings(None, None);
    assert_eq!(
        api_base_for_tokens(&none, &tokens, "mail").as_str(),
        "https://mail.zoho.eu/"
    );
    assert_eq!(
        accounts_for_tokens(&none, &tokens).as_str(),
        "https://accounts.zoho.eu/"
    );
    assert_eq!(
        connection_accounts(&none, &meta).as_str(),
        "https://accounts.zoho.eu/"
    );
    assert_eq!(
        connection_accounts(&none, &Metadata::new()).as_str(),
        "https://accounts.zoho.com/"
    );
}

#[test]
fn invalid_code_is_an_invalid_grant() {
    let body = |v: Value| v.as_object().expect("object").clone();
    let err = interpret_token_response(200, &body(json!({"error": "invalid_code"})));
    assert!(matches!(err, Err(ProviderCallError::InvalidGrant(_))));
    let err = interpret_token_response(200, &body(json!({"error": "invalid_client"})));
    assert!(matches!(err, Err(ProviderCallError::Rejected(_))));
}

const T: Throttle = Throttle { lockout_secs: 600 };

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/zoho/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

#[test]
fn throttling_backs_off_for_the_lock_and_error_bodies_fail_whatever_the_status() {
    let waited = |r: Result<(), ProviderCallError>| match r {
        Err(ProviderCallError::RateLimited { retry_after }) => retry_after,
        other => panic!("expected a back-off, got {other:?}"),
    };
    let throttle = fixture("cliq_throttle");
    assert_eq!(
        waited(classify(400, None, Some(&throttle), T, "x")),
        Some(600)
    );
    assert_eq!(
        waited(classify(200, None, Some(&throttle), T, "x")),
        Some(600)
    );
    assert_eq!(waited(classify(429, Some(30), None, T, "x")), Some(30));
    assert_eq!(waited(classify(429, None, None, T, "x")), Some(600));
    let nested = json!({"error": {"code": "request_limit_exceeded", "message": "slow down"}});
    assert_eq!(
        waited(classify(400, None, Some(&nested), T, "x")),
        Some(600)
    );
    let mail = json!({"status": {"code": 429, "description": "Too many requests"}});
    assert_eq!(waited(classify(200, None, Some(&mail), T, "x")), Some(600));
    // Mail's error body under HTTP 200 is the provider's failure, never a success.
    let error = fixture("mail_error");
    assert!(matches!(
        classify(200, None, Some(&error), T, "x"),
        Err(ProviderCallError::Unauthorized)
    ));
    let internal = json!({"status": {"code": 500, "description": "Internal Error"}});
    assert!(matches!(
        classify(200, None, Some(&internal), T, "x"),
        Err(ProviderCallError::Unavailable(_))
    ));
    // Some samples quote the code: `"code": "200"` is a success, `"500"` a failure.
    let quoted = json!({"status": {"code": "500", "description": "Internal Error"}});
    assert!(matches!(
        classify(200, None, Some(&quoted), T, "x"),
        Err(ProviderCallError::Unavailable(_))
    ));
    assert!(classify(200, None, Some(&fixture("mail_accounts")), T, "x").is_ok());
    let bad = json!({"status": {"code": 400, "description": "Invalid Input"}, "data": {"errorCode": "INVALID_INPUT"}});
    assert!(matches!(
        classify(200, None, Some(&bad), T, "x"),
        Err(ProviderCallError::Rejected(_))
    ));
    let cliq = json!({"code": "access_denied", "message": "no"});
    assert!(matches!(
        classify(200, None, Some(&cliq), T, "x"),
        Err(ProviderCallError::Rejected(_))
    ));
    // Successes.
    let ok = json!({"status": {"code": 200, "description": "success"}, "data": []});
    assert!(classify(200, None, Some(&ok), T, "x").is_ok());
    assert!(classify(200, None, Some(&fixture("cliq_chats")), T, "x").is_ok());
    assert!(matches!(
        classify(401, None, None, T, "x"),
        Err(ProviderCallError::Unauthorized)
    ));
    assert!(matches!(
        classify(503, None, None, T, "x"),
        Err(ProviderCallError::Unavailable(_))
    ));
}

proptest! {
    /// No body or status makes `classify` panic, and a 2xx answer naming no error passes.
    #[test]
    fn classify_never_panics(status in 100u16..600, code in any::<i64>(), text in ".{0,20}") {
        let body = json!({"status": {"code": code, "description": text}, "code": text});
        let _ = classify(status, None, Some(&body), T, "x");
        let clean = json!({"data": [text]});
        if (200..300).contains(&status) {
            prop_assert!(classify(status, None, Some(&clean), T, "x").is_ok());
        }
    }
}

fn connection_at(accounts: &str) -> Connection {
    use crate::domain::{now, ConnectionId, ConnectionStatus, TenantId};
    let mut metadata = Metadata::new();
    metadata.insert(META_ACCOUNTS_SERVER.into(), json!(accounts));
    metadata.insert(META_DATA_CENTRE.into(), json!("eu"));
    Connection {
        id: ConnectionId::generate(),
        tenant_id: TenantId(uuid::Uuid::new_v4()),
        provider: "zoho_mail".into(),
        external_account_id: "6000000004001".into(),
        external_account_name: None,
        status: ConnectionStatus::Active,
        scopes: Vec::new(),
        token_expires_at: None,
        last_synced_at: None,
        last_error: None,
        metadata,
        created_at: now(),
        updated_at: now(),
    }
}

/// Refresh and revocation go to the connection's own accounts server, not the configured one.
#[tokio::test]
async fn refresh_and_revoke_go_to_the_connections_accounts_server() {
    use wiremock::matchers::{body_string_contains, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let configured = MockServer::start().await;
    let home = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/v2/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": "1000.new", "api_domain": "https://www.zohoapis.eu", "token_type": "Bearer", "expires_in": 3600}),
        ))
        .expect(1)
        .mount(&home)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/v2/token/revoke"))
        .and(query_param("token", "1000.refresh"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&home)
        .await;
    let settings = ProviderSettings {
        client_id: Some("1000.client".into()),
        client_secret: Some(Secret::new("secret")),
        ..settings(Some(&configured.uri()), None)
    };
    let http = crate::connector::http_client(std::time::Duration::from_secs(5));
    let ctx = ProviderContext {
        http: &http,
        settings: &settings,
    };
    let connection = connection_at(&home.uri());
    let tokens = refresh_tokens(ctx, &connection, &Secret::new("1000.refresh"))
        .await
        .expect("refreshed");
    assert_eq!(tokens.access_token.expose(), "1000.new");
    assert!(
        tokens.refresh_token.is_none(),
        "Zoho's refresh tokens do not rotate"
    );
    let held = ConnectionTokens {
        access_token: Secret::new("1000.new"),
        refresh_token: Some(Secret::new("1000.refresh")),
        expires_at: None,
    };
    revoke(ctx, &connection, &held).await.expect("revoked");
    home.verify().await;
    assert!(configured
        .received_requests()
        .await
        .expect("recorded")
        .is_empty());
}
