//! Connection caps: in total and per client address, counted as connections open and close,
//! and the process's open-file limit they must stay under.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Descriptors kept for everything that is not a client connection (database, model and hub
/// files, logs) before the rest is shared out.
const RESERVED_FILES: u64 = 256;

/// How the server bounds its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections from one client address (IPv6: one /64).
    pub max_connections_per_address: usize,
    /// How long a request head may take from its first byte.
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight stays open.
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// The largest total cap the open-file limit `files` allows: half of what is left after
    /// the reserve, since a request may open a file or an upstream connection of its own.
    pub fn fitting(files: u64) -> usize {
        usize::try_from(files.saturating_sub(RESERVED_FILES) / 2)
            .unwrap_or(usize::MAX)
            .max(1)
    }
}

/// Raises the soft limit on open files to the hard limit (where the system allows) and
/// returns the soft limit now in force.
pub fn raise_open_files_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            let current =
                rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
            tracing::warn!(error = %e, limit = current, "cannot raise the open-file limit");
            current
        }
    }
}

/// Who a connection is counted against: its address, an IPv6 one by its /64 (one host's
/// usual allocation), an IPv4-mapped one as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client(IpAddr);

impl Client {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Self(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// The open connections' counts.
pub struct Slots {
    limits: ConnectionLimits,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_client: HashMap<Client, usize>,
}

impl Slots {
    pub fn new(limits: &ConnectionLimits) -> Self {
        Self {
            limits: *limits,
            counts: Mutex::default(),
        }
    }

    /// Count a new connection from `ip`, or say which cap it is over; `per_address`: whether
    /// the cap per address applies (not to a trusted proxy).
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, per_address: bool) -> Result<Slot, Refusal> {
        let client = Client::of(ip);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = counts.by_client.get(&client).copied().unwrap_or(0);
        if per_address && mine >= self.limits.max_connections_per_address {
            return Err(Refusal::PerAddress {
                client,
                limit: self.limits.max_connections_per_address,
            });
        }
        if counts.total >= self.limits.max_connections {
            return Err(Refusal::Total {
                client,
                limit: self.limits.max_connections,
            });
        }
        counts.total += 1;
        *counts.by_client.entry(client).or_insert(0) += 1;
        Ok(Slot {
            slots: self.clone(),
            client,
        })
    }
}

/// One counted connection; dropping it frees its place.
pub struct Slot {
    slots: Arc<Slots>,
    client: Client,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .slots
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                counts.by_client.remove(&self.client);
            }
        }
    }
}

/// A connection over a cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    PerAddress { client: Client, limit: usize },
    Total { client: Client, limit: usize },
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::PerAddress { .. } => "per_address",
            Refusal::Total { .. } => "total",
        }
    }

    pub fn client(&self) -> Client {
        match self {
            Refusal::PerAddress { client, .. } | Refusal::Total { client, .. } => *client,
        }
    }

    /// The whole HTTP response: the API's error shape, `Retry-After`, and `Connection: close`.
    pub fn response(&self) -> String {
        let (status, message) = match self {
            Refusal::PerAddress { limit, .. } => (
                "429 Too Many Requests",
                format!("Too many open connections from your address (at most {limit}). Close idle connections or reuse keep-alive ones, then retry."),
            ),
            Refusal::Total { limit, .. } => (
                "503 Service Unavailable",
                format!("The server has too many open connections (at most {limit}). Retry in a few seconds."),
            ),
        };
        let body = serde_json::json!({
            "error": {
                "message": message,
                "type": "server_error",
                "code": "too_many_connections",
                "param": null,
            }
        })
        .to_string();
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: total,
            max_connections_per_address: per,
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn caps_per_address_then_in_total_and_frees_on_drop() {
        let slots = Arc::new(Slots::new(&limits(3, 2)));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = slots.acquire(a, true).expect("first");
        let _a2 = slots.acquire(a, true).expect("second");
        let Err(refused) = slots.acquire(a, true) else {
            panic!("a third connection from a was accepted")
        };
        assert_eq!(refused.reason(), "per_address");
        assert!(refused.response().starts_with("HTTP/1.1 429"));
        let _b1 = slots.acquire(b, true).expect("b is another address");
        let Err(refused) = slots.acquire(b, true) else {
            panic!("a connection past the total was accepted")
        };
        assert_eq!(refused.reason(), "total");
        drop(a1);
        let _b2 = slots.acquire(b, true).expect("a freed one");
    }

    #[test]
    fn a_proxy_is_held_to_the_total_only() {
        let slots = Arc::new(Slots::new(&limits(3, 1)));
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        let _held: Vec<Slot> = (0..3)
            .map(|_| slots.acquire(proxy, false).expect("under the total"))
            .collect();
        let Err(refused) = slots.acquire(proxy, false) else {
            panic!("a connection past the total was accepted")
        };
        assert_eq!(refused.reason(), "total");
    }

    #[test]
    fn ipv6_clients_count_by_64_and_mapped_ipv4_as_ipv4() {
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let two: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Client::of(one), Client::of(two));
        assert_ne!(Client::of(one), Client::of(other));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(Client::of(mapped).to_string(), "127.0.0.2");
    }

    #[test]
    fn the_refusal_is_a_complete_http_response_with_an_api_error() {
        let r = Refusal::Total {
            client: Client::of("127.0.0.1".parse().unwrap()),
            limit: 7,
        };
        let text = r.response();
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(json["error"]["code"], "too_many_connections");
    }

    #[test]
    fn the_total_cap_fits_the_open_file_limit() {
        assert_eq!(ConnectionLimits::fitting(1024), 384);
        assert_eq!(ConnectionLimits::fitting(100), 1);
    }
}
