//! Turning one variable's text into a typed value, or a [`ConfigError`] that names it.
//! Nothing falls back to a default when a value is present but malformed.

use std::net::SocketAddr;
use std::str::FromStr;

use url::Url;

use super::{ConfigError, Source};

/// Reads `name` with `parse`, or `None` when unset.
pub fn optional<T>(
    source: &Source,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    match source.get(name) {
        None => Ok(None),
        Some(text) => parse(text.trim())
            .map(Some)
            .map_err(|problem| ConfigError::new(name, problem)),
    }
}

/// A positive integer no larger than `max`.
pub fn bounded<T>(min: T, max: T) -> impl Fn(&str) -> Result<T, String>
where
    T: FromStr + PartialOrd + Copy + std::fmt::Display,
{
    move |text| {
        let value: T = text
            .parse()
            .map_err(|_| format!("must be an integer between {min} and {max}, got {text:?}"))?;
        if value < min || value > max {
            return Err(format!("must be between {min} and {max}, got {value}"));
        }
        Ok(value)
    }
}

/// A socket address such as `127.0.0.1:8080`.
pub fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("must be host:port with an IP address, e.g. 127.0.0.1:8080, got {text:?}")
    })
}

/// An absolute `http` or `https` URL.
pub fn http_url(text: &str) -> Result<Url, String> {
    let url =
        Url::parse(text).map_err(|e| format!("must be an absolute URL ({e}), got {text:?}"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(format!("must be an http(s) URL with a host, got {text:?}")),
    }
}

/// A comma-separated list of `http(s)` URLs.
pub fn url_list(text: &str) -> Result<Vec<Url>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(http_url)
        .collect()
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`).
pub fn boolean(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("must be true or false, got {text:?}")),
    }
}

/// A comma- or space-separated list of non-empty words.
pub fn word_list(text: &str) -> Result<Vec<String>, String> {
    let words: Vec<String> = text
        .split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if words.is_empty() {
        return Err("must list at least one value".into());
    }
    Ok(words)
}

/// One of a fixed set of spellings.
pub fn one_of<T: FromStr>(expected: &'static [&'static str]) -> impl Fn(&str) -> Result<T, String> {
    move |text| {
        text.parse()
            .map_err(|_| format!("must be one of: {}, got {text:?}", expected.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_integers_reject_garbage_and_out_of_range() {
        let parse = bounded(1u32, 100);
        assert_eq!(parse("5"), Ok(5));
        assert!(parse("0").is_err());
        assert!(parse("five").unwrap_err().contains("\"five\""));
    }

    #[test]
    fn urls_need_http_and_a_host() {
        assert!(http_url("https://example.com/x").is_ok());
        assert!(http_url("ftp://example.com").is_err());
        assert!(http_url("example.com").is_err());
    }
}
