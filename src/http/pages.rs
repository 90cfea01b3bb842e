//! Serves the pages providers declare ([`ProviderPage`]): the HTTP side of a page described
//! without HTTP types.

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::connector::{PageRequest, PageResponse, ProviderPage};

/// A handler answering for `page`.
pub fn serve(
    page: ProviderPage,
) -> impl Fn(State<AppState>, RawQuery) -> std::future::Ready<Response> + Clone + Send + Sync + 'static
{
    move |State(state): State<AppState>, RawQuery(raw): RawQuery| {
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(raw.as_deref().unwrap_or_default().as_bytes())
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .collect();
        let request = PageRequest {
            query: &query,
            public_base_url: &state.config.public_base_url,
            allowed_redirect_uris: &state.config.allowed_redirect_uris,
        };
        let response = match (page.handle)(&request) {
            PageResponse::Redirect(url) => {
                (StatusCode::SEE_OTHER, [(header::LOCATION, url.to_string())]).into_response()
            }
            PageResponse::Invalid { field, problem } => {
                ApiError::invalid_field(field, problem).into_response()
            }
        };
        std::future::ready(response)
    }
}
