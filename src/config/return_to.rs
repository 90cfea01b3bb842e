//! Where Core may send a user back to after a connect: the one rule for `return_to`, checked
//! per connect and, for the configured fallback, at start-up.

use url::Url;

/// `raw` if it is an absolute URL under one of the allowed prefixes: the same origin, and the
/// prefix's path segments as whole segments at the start of its path (`/connectors` allows
/// `/connectors/done`, not `/connectors-evil`). Credentials in the URL, and encoded separators
/// or dots that could mean another path to whoever reads it next, are refused.
pub(crate) fn allowed_return_to(raw: &str, allowed: &[Url]) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|_| "must be an absolute URL".to_string())?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    let path = url.path().to_ascii_lowercase();
    if ["%2f", "%5c", "%2e", "\\"].iter().any(|s| path.contains(s)) {
        return Err("must not hide path separators or dots".into());
    }
    let under = |prefix: &Url| {
        url.origin() == prefix.origin() && segments_start_with(url.path(), prefix.path())
    };
    if allowed.iter().any(under) {
        Ok(url)
    } else {
        Err("must start with one of POBLYSH_ALLOWED_RETURN_URLS".into())
    }
}

/// Whether `path`'s segments begin with all of `prefix`'s (an empty last segment of the
/// prefix, a trailing slash, counts for none).
fn segments_start_with(path: &str, prefix: &str) -> bool {
    let mut prefix: Vec<&str> = prefix.split('/').skip(1).collect();
    if prefix.last() == Some(&"") {
        prefix.pop();
    }
    let path: Vec<&str> = path.split('/').skip(1).collect();
    path.len() >= prefix.len() && path.iter().zip(&prefix).all(|(a, b)| a == b)
}
