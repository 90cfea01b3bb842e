//! HTTP clients for deliveries, kept per host and checked address so that attempts to the
//! same consumer reuse its open connections. [`egress`](super::egress) resolves and checks
//! the address anew on every attempt; a client is bound to that one address (a host name is
//! pinned to it, an address literal is the address itself) and follows no redirects, so a
//! reused connection is always one to an address the current attempt checked. A DNS answer
//! that changes gets a client of its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use url::Url;

/// Clients kept at most; past it the cache starts over (the consumers of one service are few).
const MAX_CLIENTS: usize = 256;
/// How long an unused connection stays open.
const IDLE: Duration = Duration::from_secs(60);

/// The clients of one dispatcher.
pub struct Clients {
    timeout: Duration,
    cache: Mutex<HashMap<(Option<String>, SocketAddr), reqwest::Client>>,
}

impl Clients {
    /// No clients yet; each built later gives an attempt `timeout` at most.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The client that reaches `url` at `addr`, an address checked for this attempt.
    pub fn for_address(&self, url: &Url, addr: SocketAddr) -> Result<reqwest::Client, String> {
        let key = (url.domain().map(str::to_ascii_lowercase), addr);
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| "no HTTP client".to_string())?;
        if let Some(client) = cache.get(&key) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .pool_idle_timeout(IDLE)
            .tcp_nodelay(true)
            .no_proxy();
        if let Some(domain) = &key.0 {
            builder = builder.resolve(domain, addr);
        }
        let client = builder.build().map_err(|_| "no HTTP client".to_string())?;
        if cache.len() >= MAX_CLIENTS {
            cache.clear();
        }
        cache.insert(key, client.clone());
        Ok(client)
    }

    /// How many clients are kept.
    pub fn len(&self) -> usize {
        self.cache.lock().map_or(0, |c| c.len())
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_per_host_and_checked_address() {
        let clients = Clients::new(Duration::from_secs(1));
        let url = Url::parse("https://core.example.com/hooks").expect("url");
        let first: SocketAddr = "93.184.216.34:443".parse().expect("addr");
        let second: SocketAddr = "93.184.216.35:443".parse().expect("addr");
        clients.for_address(&url, first).expect("client");
        clients.for_address(&url, first).expect("client");
        assert_eq!(
            clients.len(),
            1,
            "the same host at the same address shares one"
        );
        clients.for_address(&url, second).expect("client");
        assert_eq!(clients.len(), 2, "a changed DNS answer gets its own client");
        let other = Url::parse("https://other.example.com/hooks").expect("url");
        clients.for_address(&other, first).expect("client");
        assert_eq!(clients.len(), 3, "another host is pinned on its own");
    }
}
