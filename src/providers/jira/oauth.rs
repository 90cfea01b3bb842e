//! Atlassian OAuth 2.0 (3LO) for Jira Cloud
//! (<https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/>).
//!
//! - Authorize at `https://auth.atlassian.com/authorize` with `audience=api.atlassian.com` and
//!   `prompt=consent`; token at `https://auth.atlassian.com/oauth/token`. Both on the auth base
//!   (`POBLYSH_JIRA_AUTH_BASE_URL`).
//! - The account: `GET https://api.atlassian.com/oauth/token/accessible-resources` on the API
//!   base (`POBLYSH_JIRA_API_BASE_URL`), which lists the sites the grant covers.
//! - No revocation endpoint: 3LO offers none; users remove an app's access from their Atlassian
//!   account settings. Disconnecting therefore only forgets the tokens here.

use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::connector::{check_status, rate_limited, transport};
use crate::connector::{join_path, Metadata, ProviderSettings};
use crate::connector::{read_body, MAX_BODY_BYTES};
use crate::connector::{
    ClientAuth, ExternalAccount, OAuthEndpoints, ProviderCallError, ProviderContext,
};
use crate::crypto::Secret;

const AUTH_BASE: &str = "https://auth.atlassian.com";
use super::api::API_BASE;

pub(super) fn endpoints(settings: &ProviderSettings) -> OAuthEndpoints {
    let auth = settings.auth_base(AUTH_BASE);
    OAuthEndpoints {
        authorize_url: join_path(&auth, "/authorize"),
        token_url: join_path(&auth, "/oauth/token"),
        // 3LO has no revocation endpoint (see the module docs).
        revoke_url: None,
        // PKCE is not part of the documented 3LO flow for confidential clients; the client
        // secret authenticates the exchange.
        pkce: false,
        // `audience` selects the Atlassian API gateway and `prompt=consent` shows the consent
        // screen each time (https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/#1--direct-the-user-to-the-authorization-url-to-get-an-authorization-code).
        extra_authorize_params: vec![("audience", "api.atlassian.com"), ("prompt", "consent")],
        // Space-separated; `offline_access` (in the default scopes) is what yields a refresh
        // token (https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/#use-a-refresh-token-to-get-another-access-token-and-refresh-token-pair).
        scope_separator: " ",
        scope_param: "scope",
        // Unused by the JSON exchange below, which puts the credentials in the body as documented.
        client_auth: ClientAuth::RequestBody,
    }
}

/// POSTs a JSON body to the token endpoint. Atlassian documents the exchange and the refresh
/// with `Content-Type: application/json` bodies carrying `client_id` and `client_secret`
/// (https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/#2--exchange-authorization-code-for-access-token).
/// Whether it also takes RFC 6749 form bodies is not documented, so we send JSON. Refresh tokens rotate:
/// every refresh answers with a new one and disables the old
/// (https://developer.atlassian.com/cloud/oauth/getting-started/refresh-tokens/), which the
/// token store already keeps.
pub(super) async fn token_request(
    ctx: ProviderContext<'_>,
    endpoints: &OAuthEndpoints,
    fields: &[(&str, &str)],
) -> Result<(u16, Map<String, Value>), ProviderCallError> {
    let (Some(client_id), Some(secret)) = (&ctx.settings.client_id, &ctx.settings.client_secret)
    else {
        return Err(ProviderCallError::Rejected(
            "client credentials are not configured".into(),
        ));
    };
    let mut body: Map<String, Value> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    body.insert("client_id".into(), Value::String(client_id.clone()));
    body.insert(
        "client_secret".into(),
        Value::String(secret.expose().to_string()),
    );
    let response = ctx
        .http
        .post(endpoints.token_url.clone())
        .header(ACCEPT, "application/json")
        .json(&body)
        .send()
        .await
        .map_err(transport)?;
    let status = response.status().as_u16();
    if status == 429 {
        return Err(rate_limited(&response));
    }
    let bytes = read_body(response, MAX_BODY_BYTES).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok((status, map)),
        _ if status >= 500 => Err(ProviderCallError::Unavailable(format!(
            "Atlassian token endpoint answered {status}"
        ))),
        _ => Err(ProviderCallError::Rejected(format!(
            "Atlassian token endpoint answered {status} without JSON"
        ))),
    }
}

/// One entry of `accessible-resources`
/// (https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/#3-1-get-the-cloudid-for-your-site).
#[derive(Deserialize)]
struct Resource {
    /// The site's cloud id, used in `https://api.atlassian.com/ex/jira/{cloudid}/...`.
    id: String,
    name: Option<String>,
    url: Option<String>,
}

/// The Jira site behind the grant. The consent screen grants one site at a time, but the list
/// holds every site this user has granted the app, in no documented order. We choose the first
/// entry: a connection is one site (its cloud id is what API calls need), and `identify`
/// returns one account. Picking among several sites would need a site chooser in the connect
/// journey.
pub(super) async fn identify(
    ctx: ProviderContext<'_>,
    token: &Secret,
) -> Result<ExternalAccount, ProviderCallError> {
    let api = ctx.settings.api_base(API_BASE);
    let response = ctx
        .http
        .get(join_path(&api, "/oauth/token/accessible-resources"))
        .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(transport)?;
    if response.status().as_u16() == 429 {
        return Err(rate_limited(&response));
    }
    check_status(response.status().as_u16(), "Atlassian accessible-resources")?;
    let body = read_body(response, MAX_BODY_BYTES).await?;
    let resources: Vec<Resource> = serde_json::from_slice(&body).map_err(|_| {
        ProviderCallError::Rejected(
            "Atlassian accessible-resources answered an unexpected body".into(),
        )
    })?;
    let site = resources
        .into_iter()
        .next()
        .ok_or_else(|| ProviderCallError::Rejected("the grant covers no Atlassian site".into()))?;
    let name = site.name.filter(|n| !n.is_empty());
    let mut metadata = Metadata::new();
    metadata.insert(super::api::CLOUD_ID.into(), site.id.clone().into());
    if let Some(url) = &site.url {
        metadata.insert("site_url".into(), url.clone().into());
    }
    if let Some(name) = &name {
        metadata.insert("site_name".into(), name.clone().into());
    }
    Ok(ExternalAccount::new(site.id, name.or(site.url)).with_metadata(metadata))
}
