//! Slack OAuth v2 (<https://api.slack.com/authentication/oauth-v2>).
//!
//! - Authorize at `https://slack.com/oauth/v2/authorize`; token at
//!   `https://slack.com/api/oauth.v2.access`. Both live on the auth base
//!   (`POBLYSH_SLACK_AUTH_BASE_URL`, default `https://slack.com`).
//! - Web API calls (`auth.revoke`) go to the API base (`POBLYSH_SLACK_API_BASE_URL`, default
//!   `https://slack.com/api`).
//! - The token response names the workspace (`team.id`, `team.name`), so identifying the account
//!   needs no further call.

use reqwest::header::AUTHORIZATION;
use serde_json::{Map, Value};

use crate::connector::{check_status, rate_limited, transport};
use crate::connector::{join_path, ProviderSettings};
use crate::connector::{read_body, MAX_BODY_BYTES};
use crate::connector::{
    standard_token_response, ClientAuth, ExternalAccount, OAuthEndpoints, ProviderCallError,
    ProviderContext, TokenSet,
};
use crate::crypto::Secret;

const AUTH_BASE: &str = "https://slack.com";
pub(super) const API_BASE: &str = "https://slack.com/api";

pub(super) fn endpoints(settings: &ProviderSettings) -> OAuthEndpoints {
    let auth = settings.auth_base(AUTH_BASE);
    OAuthEndpoints {
        authorize_url: join_path(&auth, "/oauth/v2/authorize"),
        token_url: join_path(&auth, "/api/oauth.v2.access"),
        // Revocation is the Web API method `auth.revoke`, called by `revoke` below.
        revoke_url: None,
        // Slack documents PKCE only for its user-token flow (`oauth.v2.user.access`); the bot
        // install flow used here is the confidential-client code flow.
        pkce: false,
        extra_authorize_params: Vec::new(),
        // Bot scopes go in `scope`, comma-separated (https://api.slack.com/authentication/oauth-v2#asking).
        // User scopes (`user_scope`) are not requested: the connector acts as the app's bot user.
        scope_separator: ",",
        scope_param: "scope",
        // Slack asks for the client credentials as HTTP Basic rather than form fields
        // (https://api.slack.com/methods/oauth.v2.access#arg_client_id).
        client_auth: ClientAuth::BasicAuth,
    }
}

/// Reads `oauth.v2.access`, which answers HTTP 200 with `{"ok": false, "error": ...}` on failure
/// (https://api.slack.com/methods/oauth.v2.access#errors; token rotation errors:
/// https://api.slack.com/authentication/rotation).
pub(super) fn interpret_token_response(
    status: u16,
    body: &Map<String, Value>,
) -> Result<TokenSet, ProviderCallError> {
    if body.get("ok").and_then(Value::as_bool) == Some(false) || body.contains_key("error") {
        let error = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown_error");
        let message = format!("Slack answered {error}");
        return Err(match error {
            "invalid_code" | "invalid_grant" | "invalid_refresh_token" | "code_already_used" => {
                ProviderCallError::InvalidGrant(message)
            }
            "ratelimited" => ProviderCallError::RateLimited { retry_after: None },
            "internal_error" | "fatal_error" | "service_unavailable" => {
                ProviderCallError::Unavailable(message)
            }
            _ if status >= 500 => ProviderCallError::Unavailable(message),
            _ => ProviderCallError::Rejected(message),
        });
    }
    let mut tokens = standard_token_response(status, body)?;
    // `authed_user` carries the installing user's own token when user scopes were asked for;
    // keep the user's id in `extra`, never a second credential.
    if let Some(Value::Object(user)) = tokens.extra.get_mut("authed_user") {
        user.remove("access_token");
        user.remove("refresh_token");
    }
    Ok(tokens)
}

fn named(extra: &Map<String, Value>, key: &str) -> Option<(String, Option<String>)> {
    let object = extra.get(key)?.as_object()?;
    let id = object.get("id")?.as_str().filter(|id| !id.is_empty())?;
    let name = object
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string);
    Some((id.to_string(), name))
}

/// The workspace the app was installed in: `team` from the token response. An org-wide install
/// on Enterprise Grid has `team: null` and names the organization in `enterprise` instead
/// (https://api.slack.com/enterprise/apps), so that is the account then.
pub(super) fn identify(tokens: &TokenSet) -> Result<ExternalAccount, ProviderCallError> {
    let (id, display_name) = named(&tokens.extra, "team")
        .or_else(|| named(&tokens.extra, "enterprise"))
        .ok_or_else(|| {
            ProviderCallError::Rejected("Slack's token response names no workspace".into())
        })?;
    Ok(ExternalAccount::new(id, display_name))
}

/// `auth.revoke` with the token as Bearer (https://api.slack.com/methods/auth.revoke). Like
/// every Web API method it answers 200 with `ok: false` on failure; a token Slack already
/// considers dead (`invalid_auth`, `token_revoked`, `account_inactive`) needs no revoking.
pub(super) async fn revoke(
    ctx: ProviderContext<'_>,
    token: &Secret,
) -> Result<(), ProviderCallError> {
    let api = ctx.settings.api_base(API_BASE);
    let response = ctx
        .http
        .post(join_path(&api, "/auth.revoke"))
        .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
        .send()
        .await
        .map_err(transport)?;
    let status = response.status().as_u16();
    if status == 429 {
        return Err(rate_limited(&response));
    }
    check_status(status, "Slack auth.revoke")?;
    let body = read_body(response, MAX_BODY_BYTES).await?;
    let body: Value = serde_json::from_slice(&body).map_err(|_| {
        ProviderCallError::Rejected("Slack auth.revoke answered an unexpected body".into())
    })?;
    if body.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(());
    }
    match body.get("error").and_then(Value::as_str).unwrap_or("") {
        "invalid_auth" | "token_revoked" | "account_inactive" => Ok(()),
        error => Err(ProviderCallError::Rejected(format!(
            "Slack auth.revoke answered {error}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().expect("object").clone()
    }

    #[test]
    fn ok_false_errors_map_to_grant_or_rejection() {
        for grant in [
            "invalid_code",
            "invalid_grant",
            "invalid_refresh_token",
            "code_already_used",
        ] {
            let err = interpret_token_response(200, &body(json!({"ok": false, "error": grant})));
            assert!(
                matches!(err, Err(ProviderCallError::InvalidGrant(_))),
                "{grant}"
            );
        }
        let err = interpret_token_response(
            200,
            &body(json!({"ok": false, "error": "bad_client_secret"})),
        );
        assert!(matches!(err, Err(ProviderCallError::Rejected(_))));
    }

    #[test]
    fn the_published_exchange_names_its_workspace_and_keeps_no_user_token() {
        let path = format!(
            "{}/tests/slack/oauth_v2_access.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let example: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
        let tokens = interpret_token_response(200, &body(example)).expect("tokens");
        assert_eq!(
            tokens.access_token.expose(),
            "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"
        );
        assert!(tokens.refresh_token.is_none(), "no rotation in the example");
        assert!(!Value::Object(tokens.extra.clone())
            .to_string()
            .contains("xoxp-1234"));
        let account = identify(&tokens).expect("account");
        assert_eq!(account.id, "T9TK3CUKW", "the team, not the enterprise");
        assert_eq!(account.display_name.as_deref(), Some("Slack Softball Team"));
        let limited =
            interpret_token_response(200, &body(json!({"error": "ratelimited", "ok": false})));
        assert!(matches!(
            limited,
            Err(ProviderCallError::RateLimited { .. })
        ));
    }

    #[test]
    fn an_org_wide_install_is_identified_by_its_enterprise_and_user_tokens_are_dropped() {
        let tokens = interpret_token_response(
            200,
            &body(json!({
                "ok": true, "access_token": "xoxb-1", "team": null,
                "enterprise": {"id": "E12345678", "name": "slack-sports"},
                "authed_user": {"id": "U1234", "access_token": "xoxp-1234"}
            })),
        )
        .expect("tokens");
        assert_eq!(tokens.extra["authed_user"], json!({"id": "U1234"}));
        let account = identify(&tokens).expect("account");
        assert_eq!(account.id, "E12345678");
        assert_eq!(account.display_name.as_deref(), Some("slack-sports"));
    }
}
