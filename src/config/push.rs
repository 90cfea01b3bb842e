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
    /// How long the secret before a rotation keeps signing (`POBLYSH_PUSH_SECRET_OVERLAP`).
    pub secret_overlap: Duration,
}

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
        secret_overlap: parse::optional(source, "POBLYSH_PUSH_SECRET_OVERLAP", duration)?
            .unwrap_or(Duration::from_secs(24 * 3600)),
    })
}

/// A duration such as `24h`, `90m`, `3600s` or `2d` (0 to 30 days).
fn duration(text: &str) -> Result<Duration, String> {
    let problem =
        || format!("must be a duration such as 24h, 90m or 3600s (at most 30d), got {text:?}");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(problem)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| problem())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(problem()),
    };
    let seconds = number
        .checked_mul(unit)
        .filter(|s| *s <= 30 * 86_400)
        .ok_or_else(problem)?;
    Ok(Duration::from_secs(seconds))
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
    fn durations_take_a_unit_and_a_bound() {
        assert_eq!(duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(duration("90m"), Ok(Duration::from_secs(5_400)));
        assert!(duration("24").is_err());
        assert!(duration("31d").is_err());
        assert!(duration("h").is_err());
    }
}
