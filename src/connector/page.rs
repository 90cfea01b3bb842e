//! Pages a provider serves from this service itself (the sandbox's authorize page), described
//! without HTTP types: the HTTP layer mounts them and answers for them.

use url::Url;

/// A `GET` page a connector serves.
#[derive(Clone, Copy)]
pub struct ProviderPage {
    /// The path it is served at, e.g. `/sandbox/authorize`.
    pub path: &'static str,
    /// Answers one request.
    pub handle: fn(&PageRequest<'_>) -> PageResponse,
}

/// One request to a provider page.
#[derive(Clone, Copy, Debug)]
pub struct PageRequest<'a> {
    /// The query parameters, decoded, in order.
    pub query: &'a [(String, String)],
    /// The service's public base URL.
    pub public_base_url: &'a Url,
    /// The redirect URIs Core may ask for (`POBLYSH_ALLOWED_REDIRECT_URIS`).
    pub allowed_redirect_uris: &'a [Url],
}

impl PageRequest<'_> {
    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How a provider page answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageResponse {
    /// `303 See Other` to this URL.
    Redirect(Url),
    /// `400 VALIDATION_FAILED`, naming the parameter at fault.
    Invalid {
        field: &'static str,
        problem: String,
    },
}
