//! `POST /connect/{provider}` and `GET /connect/{provider}/callback`: the OAuth connect journey.
//! The work happens in [`crate::oauth::flow`]; these handlers translate HTTP.

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::connections::ConnectionView;
use crate::http::{ApiError, AppState, Problem, Tenant, TenantHeader};
use crate::oauth::flow::{self, CallbackParams, ConnectParams, ReturnTo};

/// Optional settings for a new connection.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    /// Where to send the user after the callback, with `status`, `connection_id` or `code`
    /// added to its query. Must start with one of `POBLYSH_ALLOWED_RETURN_URLS`. Without it,
    /// the callback answers with JSON.
    #[schema(example = "https://app.poblysh.com/settings/connectors")]
    return_to: Option<String>,
    /// Scopes to request instead of the provider's defaults.
    scopes: Option<Vec<String>>,
    /// A redirect URI of Core's own (one of `POBLYSH_ALLOWED_REDIRECT_URIS`), when Core receives
    /// the provider's redirect and forwards `code` and `state` to the callback.
    redirect_uri: Option<String>,
}

/// Where to send the user to authorize.
#[derive(Serialize, ToSchema)]
pub struct ConnectResponse {
    /// Where the browser goes (a full-page navigation). With the service's callback, the
    /// service's own single-use authorize hop, which binds the connect to that browser with a
    /// cookie and redirects to the provider; with Core's `redirect_uri`, the provider's page.
    #[schema(
        example = "https://connectors.poblysh.com/connect/github/authorize?state=6fizDzmTys6YroUfIVR3kcCEccayjRiTm170wWLx5Bk"
    )]
    authorize_url: String,
    /// The state is single-use and expires at this instant.
    state_expires_at: DateTime<Utc>,
    /// Only with Core's own `redirect_uri`: keep it in the user's session and forward it as
    /// `binding` with `code` and `state` to the callback, which refuses the connect without it
    /// (outside the `local` profile).
    #[serde(skip_serializing_if = "Option::is_none")]
    binding: Option<String>,
}

/// Starts connecting the tenant to a provider. Send the user's browser to `authorize_url`.
#[utoipa::path(
    post,
    path = "/connect/{provider}",
    tag = "connect",
    params(("provider" = String, Path, description = "Provider slug"), TenantHeader),
    request_body(content = Option<ConnectRequest>, content_type = "application/json"),
    security(("operator_token" = [])),
    responses(
        (status = 200, body = ConnectResponse),
        (status = 400, description = "Invalid body, `return_to`, `redirect_uri`, `scopes` (a control character in any of them, too) or tenant header (`VALIDATION_FAILED`, `TENANT_HEADER_REQUIRED`, `INVALID_TENANT_ID`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong operator token (`UNAUTHORIZED`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown provider (`PROVIDER_NOT_FOUND`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The provider has no client credentials (`PROVIDER_NOT_CONFIGURED`)", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Unexpected failure (`INTERNAL_ERROR`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unreachable (`SERVICE_UNAVAILABLE`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn start_connect(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(provider): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ConnectResponse>, ApiError> {
    let request: ConnectRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ConnectRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid_field("body", format!("must be a JSON object: {e}")))?
    };
    let params = ConnectParams {
        return_to: request.return_to,
        scopes: request.scopes,
        redirect_uri: request.redirect_uri,
    };
    let slug = state
        .registry
        .parse(&provider)
        .ok_or_else(|| ApiError::unknown_provider(&provider))?;
    let started = flow::start(&state, tenant, slug, params).await?;
    Ok(Json(ConnectResponse {
        authorize_url: started.authorize_url.to_string(),
        state_expires_at: started.state_expires_at,
        binding: started.binding,
    }))
}

/// The query of the service's authorize hop.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuthorizeQuery {
    /// The state minted by `POST /connect/{provider}`.
    state: Option<String>,
}

/// The service's authorize hop, where `authorize_url` points when the provider redirects to
/// the service: usable once per state, it sets a `__Host-` cookie (`HttpOnly`,
/// `SameSite=Lax`; without the prefix and `Secure` when the service is reached over plain
/// HTTP) that binds the connect to this browser, and redirects to the provider. The callback
/// refuses a connect whose browser lacks the cookie.
#[utoipa::path(
    get,
    path = "/connect/{provider}/authorize",
    tag = "connect",
    params(("provider" = String, Path, description = "Provider slug"), AuthorizeQuery),
    responses(
        (status = 303, description = "To the provider's authorization page, with the binding cookie set"),
        (status = 400, description = "`OAUTH_STATE_INVALID` (`details.reason`: `unknown`, `expired`, `already_used` — the hop was passed before —, `provider_mismatch`) or `VALIDATION_FAILED`; with a `return_to`, `303` to it with `status=error&code=...` instead (to `POBLYSH_CONNECT_FALLBACK_RETURN_URL`, when set, if the state is missing or unknown)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown provider (`PROVIDER_NOT_FOUND`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The provider has no client credentials (`PROVIDER_NOT_CONFIGURED`)", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Unexpected failure (`INTERNAL_ERROR`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn authorize(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    Query(query): Query<AuthorizeQuery>,
) -> Response {
    match flow::open(&state, &provider, query.state.as_deref()).await {
        Ok(opened) => {
            let mut response = (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, opened.authorize_url.to_string()),
                    (header::CACHE_CONTROL, "no-store".to_string()),
                    (header::REFERRER_POLICY, "no-referrer".to_string()),
                ],
            )
                .into_response();
            set_cookie(&mut response, &opened.cookie.set(opened.max_age_secs));
            response
        }
        Err((error, return_to)) => {
            let fallback = state.config.connect_fallback_return_url.as_ref();
            outcome_response(Err(ApiError::from(error)), return_to, fallback)
        }
    }
}

/// Adds a `Set-Cookie` header.
fn set_cookie(response: &mut Response, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The provider's redirect back to us.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The authorization code.
    code: Option<String>,
    /// The state minted by `POST /connect/{provider}`.
    state: Option<String>,
    /// Set by the provider when the user or the provider declined.
    error: Option<String>,
    /// The provider's explanation of `error`.
    error_description: Option<String>,
    /// With Core's own `redirect_uri`: the `binding` `POST /connect/{provider}` answered, which
    /// Core kept in the user's session.
    binding: Option<String>,
}

/// The connection the callback created or refreshed.
#[derive(Serialize, ToSchema)]
pub struct CallbackResponse {
    connection: ConnectionView,
}

/// Where the provider sends the user back. Consumes the state once, checks that the connect
/// comes from the browser that started it (the authorize hop's cookie, or the `binding` Core
/// forwards), exchanges the code and stores the connection. With a `return_to`, answers `303`
/// to it with `status=connected&connection_id=...` or `status=error&code=...`; a failure whose
/// state identifies no connect goes to `POBLYSH_CONNECT_FALLBACK_RETURN_URL` when it is set;
/// otherwise JSON.
#[utoipa::path(
    get,
    path = "/connect/{provider}/callback",
    tag = "connect",
    params(("provider" = String, Path, description = "Provider slug"), CallbackQuery),
    responses(
        (status = 200, body = CallbackResponse),
        (status = 303, description = "Redirect to the `return_to` given at start, with the outcome in its query; when the state is missing or unknown and `POBLYSH_CONNECT_FALLBACK_RETURN_URL` is set, to that URL with `status=error&code=...` (never for a callback Core forwards with `binding`)"),
        (status = 400, description = "`OAUTH_STATE_INVALID` (`details.reason`: `unknown`, `expired`, `already_used`, `provider_mismatch`, `browser_mismatch` — no binding cookie or `binding`, or a wrong one), `OAUTH_DENIED`, or `VALIDATION_FAILED`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown provider (`PROVIDER_NOT_FOUND`)", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The provider failed the exchange (`PROVIDER_ERROR`)", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Unexpected failure (`INTERNAL_ERROR`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn callback(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    Query(query): Query<CallbackQuery>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    // A callback Core forwards (with its `binding`) is answered to Core, never redirected to
    // the fallback.
    let fallback = match query.binding {
        None => state.config.connect_fallback_return_url.clone(),
        Some(_) => None,
    };
    let named = ["code", "state", "error", "error_description", "binding"];
    let extra = url::form_urlencoded::parse(raw.as_deref().unwrap_or_default().as_bytes())
        .filter(|(name, _)| !named.contains(&name.as_ref()))
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .take(20)
        .collect();
    let params = CallbackParams {
        code: query.code,
        state: query.state,
        error: query.error,
        error_description: query.error_description,
        extra,
        binding: query.binding,
        cookies: headers
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let completed = flow::complete(&state, &provider, params).await;
    let mut response = outcome_response(
        completed
            .result
            .map(ConnectionView::from)
            .map_err(ApiError::from),
        completed.return_to,
        fallback.as_ref(),
    );
    if let Some(cookie) = completed.spent_cookie {
        set_cookie(&mut response, &cookie.clear());
    }
    response
}

/// The end of a browser's pass through the service: `303` to the connect's `return_to` with
/// the outcome in its query; when no connect could be identified, a failure goes to the
/// `fallback` (`POBLYSH_CONNECT_FALLBACK_RETURN_URL`) the same way; otherwise JSON.
fn outcome_response(
    outcome: Result<ConnectionView, ApiError>,
    return_to: ReturnTo,
    fallback: Option<&url::Url>,
) -> Response {
    let back = match (&outcome, return_to) {
        (_, ReturnTo::Url(url)) => Some(url),
        (Err(_), ReturnTo::Unidentified) => fallback.cloned(),
        _ => None,
    };
    match (outcome, back) {
        (Ok(connection), None) => Json(CallbackResponse { connection }).into_response(),
        (Err(err), None) => err.into_response(),
        (outcome, Some(mut url)) => {
            {
                let mut q = url.query_pairs_mut();
                match &outcome {
                    Ok(connection) => q
                        .append_pair("status", "connected")
                        .append_pair("connection_id", &connection.id.to_string()),
                    Err(err) => q
                        .append_pair("status", "error")
                        .append_pair("code", err.code().as_str()),
                };
            }
            if let Err(err) = outcome {
                tracing::info!(
                    code = err.code().as_str(),
                    "connect failed; returning the user to Core"
                );
            }
            (StatusCode::SEE_OTHER, [(header::LOCATION, url.to_string())]).into_response()
        }
    }
}
