//! Checks the fuzz targets in `fuzz/` drive that the rest of the public API does not reach.
//! Not part of the service's interface: nothing here is stable.

use url::Url;

/// The `return_to` check of a connect: `raw` if it is an absolute URL under one of the
/// `allowed` prefixes (same origin, whole path segments, no credentials, no encoded
/// separators), else why not.
pub fn allowed_return_to(raw: &str, allowed: &[Url]) -> Result<Url, String> {
    crate::config::allowed_return_to(raw, allowed)
}
