//! Where deliveries may go. An endpoint URL is `https` (plain `http` only when
//! `POBLYSH_PUSH_ALLOW_HTTP` says so), without userinfo. Each attempt resolves the host once
//! and connects to an address it checked: loopback, private (RFC 1918, ULA), link-local
//! (cloud metadata at 169.254.169.254 included), unspecified, CGNAT, multicast, documentation
//! and other non-global space is refused unless `POBLYSH_PUSH_ALLOWED_ADDRESSES` names it, so
//! neither a URL nor a DNS answer that changes between check and use can reach inside.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::Url;

use crate::config::{AddressRange, PushSettings};

/// The longest a host's resolution may take.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The rules deliveries follow.
#[derive(Clone, Debug)]
pub struct EgressPolicy {
    allow_http: bool,
    allowed: Vec<AddressRange>,
}

/// Why a URL or an address is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EgressError {
    #[error("must be an absolute https URL")]
    NotHttps,
    #[error("must not carry a user name or password")]
    Userinfo,
    #[error("its host does not resolve: {0}")]
    Unresolved(String),
    #[error("its host resolves only to addresses deliveries may not reach ({0})")]
    Forbidden(IpAddr),
}

impl EgressPolicy {
    /// The policy of `settings`.
    pub fn new(settings: &PushSettings) -> Self {
        Self {
            allow_http: settings.allow_http,
            allowed: settings.allowed_addresses.clone(),
        }
    }

    /// Checks an endpoint URL's form.
    pub fn check_url(&self, text: &str) -> Result<Url, EgressError> {
        let url = Url::parse(text).map_err(|_| EgressError::NotHttps)?;
        let scheme_ok = url.scheme() == "https" || (self.allow_http && url.scheme() == "http");
        if !scheme_ok || url.host().is_none() {
            return Err(EgressError::NotHttps);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EgressError::Userinfo);
        }
        Ok(url)
    }

    /// Whether deliveries may reach `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        is_global(ip) || self.allowed.iter().any(|r| r.contains(ip))
    }

    /// Resolves the URL's host once and returns the first address deliveries may reach.
    pub async fn resolve(&self, url: &Url) -> Result<SocketAddr, EgressError> {
        let host = url.host_str().ok_or(EgressError::NotHttps)?;
        let port = url.port_or_known_default().ok_or(EgressError::NotHttps)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let lookup = tokio::net::lookup_host((host, port));
        let addrs: Vec<SocketAddr> = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
            .await
            .map_err(|_| EgressError::Unresolved("timed out".into()))?
            .map_err(|e| EgressError::Unresolved(e.kind().to_string()))?
            .collect();
        let first = addrs
            .first()
            .ok_or_else(|| EgressError::Unresolved("no addresses".into()))?;
        addrs
            .iter()
            .find(|a| self.permits(a.ip()))
            .copied()
            .ok_or(EgressError::Forbidden(first.ip()))
    }
}

/// Whether `ip` is in globally reachable unicast space.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_global_v4(v4),
            None => is_global_v6(v6),
        },
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        // CGNAT, 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments, 192.0.0.0/24.
        || (a == 192 && b == 0 && c == 0)
        // Benchmarking, 198.18.0.0/15.
        || (a == 198 && (b == 18 || b == 19))
        // Reserved, 240.0.0.0/4.
        || a >= 240)
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // Unique local, fc00::/7.
        || (first & 0xfe00) == 0xfc00
        // Link-local, fe80::/10.
        || (first & 0xffc0) == 0xfe80
        // Documentation, 2001:db8::/32.
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        // Discard, 100::/64; IPv4-compatible and NAT64 forms carry an IPv4 address inside.
        || first == 0x0100
        || first == 0
        || (first == 0x0064 && ip.segments()[1] == 0xff9b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow_http: bool, allowed: &[&str]) -> EgressPolicy {
        EgressPolicy {
            allow_http,
            allowed: allowed
                .iter()
                .map(|a| AddressRange::parse(a).expect("range"))
                .collect(),
        }
    }

    #[test]
    fn inner_addresses_are_refused_and_global_ones_reached() {
        let p = policy(false, &[]);
        for inner in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!p.permits(inner.parse().expect("ip")), "{inner}");
        }
        for outer in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "1.1.1.1",
        ] {
            assert!(p.permits(outer.parse().expect("ip")), "{outer}");
        }
        assert!(policy(false, &["127.0.0.1"]).permits("127.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn urls_are_https_without_userinfo_unless_http_is_allowed() {
        let strict = policy(false, &[]);
        assert!(strict.check_url("https://core.example.com/hooks").is_ok());
        assert_eq!(
            strict.check_url("http://core.example.com/hooks"),
            Err(EgressError::NotHttps)
        );
        assert_eq!(
            strict.check_url("ftp://core.example.com"),
            Err(EgressError::NotHttps)
        );
        assert_eq!(strict.check_url("not a url"), Err(EgressError::NotHttps));
        assert_eq!(
            strict.check_url("https://user:pw@core.example.com/"),
            Err(EgressError::Userinfo)
        );
        assert!(policy(true, &[]).check_url("http://127.0.0.1:9/").is_ok());
    }

    #[tokio::test]
    async fn an_address_literal_resolves_to_itself_and_is_checked() {
        let url = Url::parse("http://127.0.0.1:8080/").expect("url");
        assert_eq!(
            policy(true, &[]).resolve(&url).await,
            Err(EgressError::Forbidden("127.0.0.1".parse().expect("ip")))
        );
        let allowed = policy(true, &["127.0.0.0/8"])
            .resolve(&url)
            .await
            .expect("allowed");
        assert_eq!(allowed, "127.0.0.1:8080".parse().expect("addr"));
    }
}
