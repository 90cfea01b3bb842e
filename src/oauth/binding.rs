//! Binding a connect to the user agent that started it, so a leaked or forwarded authorize link
//! cannot connect someone else's provider account into the tenant (RFC 6749 §10.12; RFC 9700
//! §4.7).
//!
//! - **Service callback** (the provider redirects to the service): the link Core hands the
//!   browser is the service's own authorize hop, usable once. It sets a cookie whose value is a
//!   MAC of the state, and the callback requires that cookie.
//! - **Core's callback** (`redirect_uri` of Core's): `POST /connect` answers a `binding` value,
//!   a MAC of the state, which Core keeps in the user's session and forwards with `code` and
//!   `state`.
//!
//! Both values are derived from the service key and the state, so nothing more is stored than
//! the hop's single use.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::crypto::{hex, CryptoKey};

/// The cookie of one connect: its name and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingCookie {
    pub name: String,
    pub value: String,
    /// Whether the service is reached over HTTPS: the cookie is then `Secure` with the
    /// `__Host-` prefix (one host, path `/`, never set by a subdomain).
    pub secure: bool,
}

impl BindingCookie {
    /// The `Set-Cookie` value that stores it for `max_age_secs`.
    pub fn set(&self, max_age_secs: i64) -> String {
        self.header(&self.value, max_age_secs.max(1))
    }

    /// The `Set-Cookie` value that removes it.
    pub fn clear(&self) -> String {
        self.header("", 0)
    }

    fn header(&self, value: &str, max_age: i64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax{secure}",
            self.name
        )
    }
}

/// The cookie binding the connect of `state_hash` to a browser.
pub fn cookie(key: &CryptoKey, state_hash: &[u8], secure: bool) -> BindingCookie {
    // Several connects may run in one browser at once (two tabs): each has its own cookie.
    let short = hex(state_hash.get(..8).unwrap_or(state_hash));
    let prefix = if secure { "__Host-" } else { "" };
    BindingCookie {
        name: format!("{prefix}poblysh-connect-{short}"),
        value: mac(key, "cookie", state_hash),
        secure,
    }
}

/// The value Core keeps in the user's session and forwards with `code` and `state`.
pub fn core_value(key: &CryptoKey, state_hash: &[u8]) -> String {
    mac(key, "core", state_hash)
}

/// Whether `presented` is `expected`, in constant time.
pub fn matches(presented: &str, expected: &str) -> bool {
    presented.len() == expected.len() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

/// The value of the cookie `name` in a `Cookie` request header, if present.
pub fn read_cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
}

fn mac(key: &CryptoKey, kind: &str, state_hash: &[u8]) -> String {
    let derived = key.derive("oauth-connect-binding");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(derived.as_ref())
        .expect("HMAC accepts keys of any length");
    mac.update(kind.as_bytes());
    mac.update(b"\0");
    mac.update(state_hash);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_per_state_and_host_only_over_https() {
        let key = CryptoKey::generate();
        let a = cookie(&key, &[1; 32], true);
        let b = cookie(&key, &[2; 32], true);
        assert_ne!(a.name, b.name);
        assert_ne!(a.value, b.value);
        assert!(a.name.starts_with("__Host-poblysh-connect-"));
        assert_eq!(
            a.set(600),
            format!(
                "{}={}; Max-Age=600; Path=/; HttpOnly; SameSite=Lax; Secure",
                a.name, a.value
            )
        );
        assert!(a.clear().contains("Max-Age=0"));
        let plain = cookie(&key, &[1; 32], false);
        assert!(plain.name.starts_with("poblysh-connect-"));
        assert!(!plain.set(600).contains("Secure"));
        // The value depends on the key: another deployment's cookie does not fit.
        assert_ne!(
            cookie(&CryptoKey::generate(), &[1; 32], true).value,
            a.value
        );
        // Core's value is not the cookie's: one cannot stand in for the other.
        assert_ne!(core_value(&key, &[1; 32]), a.value);
    }

    #[test]
    fn reads_one_cookie_among_many() {
        let header = "a=1; poblysh-connect-00=xyz ;b=2=3";
        assert_eq!(read_cookie(header, "poblysh-connect-00"), Some("xyz"));
        assert_eq!(read_cookie(header, "b"), Some("2=3"));
        assert_eq!(read_cookie(header, "poblysh-connect"), None);
        assert!(matches("abc", "abc"));
        assert!(!matches("abd", "abc"));
        assert!(!matches("ab", "abc"));
    }

    proptest::proptest! {
        /// No cookie header, however malformed, panics the reader or yields the right value
        /// unless it holds it.
        #[test]
        fn arbitrary_cookie_headers_never_bind(header in ".{0,300}") {
            let key = CryptoKey::generate();
            let expected = cookie(&key, &[7; 32], false);
            if let Some(value) = read_cookie(&header, &expected.name) {
                proptest::prop_assert!(!matches(value, &expected.value) || header.contains(&expected.value));
            }
        }
    }
}
