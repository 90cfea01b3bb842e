//! Push delivery settings: whether plain `http` endpoints are allowed, which otherwise
//! forbidden addresses deliveries may reach, and how long a rotated secret keeps signing.

use std::net::IpAddr;
use std::time::Duration;

use super::{parse, ConfigError, Source};

/// A range of addresses: an address and how many leading bits of it are fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressRange {
    pub base: IpAddr,
    pub prefix: u8,
}

impl AddressRange {
    /// Parses `10.0.0.0/8`, `fd00::/8` or a single address.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let base: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a prefix length outside 0..={max}"))?,
            None => max,
        };
        Ok(Self { base, prefix })
    }

    /// Whether `addr` is inside the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        match (self.base, addr) {
            (IpAddr::V4(base), IpAddr::V4(addr)) => prefix_matches(
                u128::from(u32::from(base)) << 96,
                u128::from(u32::from(addr)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(base), IpAddr::V6(addr)) => {
                prefix_matches(u128::from(base), u128::from(addr), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_matches(base: u128, addr: u128, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    base & mask == addr & mask
}

/// Settings of push delivery.
#[derive(Clone, Debug)]
pub struct PushSettings {
    /// Plain `http` endpoint URLs are accepted (`POBLYSH_PUSH_ALLOW_HTTP`; development and
    /// tests only).
    pub allow_http: bool,
    /// Addresses deliveries may reach although they are not global
    /// (`POBLYSH_PUSH_ALLOWED_ADDRESSES`).
    pub allowed_addresses: Vec<AddressRange>,
    /// How long the secret before a rotation keeps signing
    /// (`POBLYSH_PUSH_SECRET_OVERLAP_SECS`).
    pub secret_overlap: Duration,
}

/// The longest overlap: 30 days.
const MAX_SECRET_OVERLAP_SECS: u64 = 30 * 86_400;

pub(super) fn settings(source: &Source) -> Result<PushSettings, ConfigError> {
    Ok(PushSettings {
        allow_http: parse::optional(source, "POBLYSH_PUSH_ALLOW_HTTP", parse::boolean)?
            .unwrap_or(false),
        allowed_addresses: parse::optional(source, "POBLYSH_PUSH_ALLOWED_ADDRESSES", |text| {
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(AddressRange::parse)
                .collect()
        })?
        .unwrap_or_default(),
        secret_overlap: parse::optional(
            source,
            "POBLYSH_PUSH_SECRET_OVERLAP_SECS",
            parse::bounded(0u64, MAX_SECRET_OVERLAP_SECS),
        )?
        .map_or(Duration::from_secs(24 * 3600), Duration::from_secs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_contain_what_their_prefix_covers() {
        let ten = AddressRange::parse("10.0.0.0/8").expect("valid");
        assert!(ten.contains("10.200.3.4".parse().expect("ip")));
        assert!(!ten.contains("11.0.0.1".parse().expect("ip")));
        let one = AddressRange::parse("127.0.0.1").expect("valid");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(one.contains("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        let ula = AddressRange::parse("fd00::/8").expect("valid");
        assert!(ula.contains("fd12::1".parse().expect("ip")));
        assert!(AddressRange::parse("10.0.0.0/33").is_err());
        assert!(AddressRange::parse("example.com").is_err());
        assert!(AddressRange::parse("0.0.0.0/0")
            .expect("valid")
            .contains("8.8.8.8".parse().expect("ip")));
    }

    #[test]
    fn the_overlap_is_seconds_within_thirty_days() {
        let read = |value: &str| {
            settings(&Source::from_pairs([(
                "POBLYSH_PUSH_SECRET_OVERLAP_SECS",
                value,
            )]))
        };
        assert_eq!(
            read("3600").expect("valid").secret_overlap,
            Duration::from_secs(3600)
        );
        assert_eq!(read("0").expect("valid").secret_overlap, Duration::ZERO);
        for bad in ["24h", "2592001", "-1", "soon"] {
            let err = read(bad).expect_err(bad);
            assert!(
                err.to_string().contains("POBLYSH_PUSH_SECRET_OVERLAP_SECS"),
                "{err}"
            );
        }
        let default = settings(&Source::default()).expect("valid");
        assert_eq!(default.secret_overlap, Duration::from_secs(86_400));
    }
}
