//! Behind a reverse proxy: which connections' `X-Forwarded-For` is believed (`--trusted-proxies`),
//! and the client address a request is then taken to come from. A header from anyone else is
//! ignored, so a client cannot choose the address it is logged and counted under.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose forwarding headers are trusted: addresses and CIDR blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Comma-separated addresses or CIDR blocks (`10.0.0.0/8,127.0.0.1,::1`); empty: none.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => item.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                    format!("'{item}' is neither an IP address nor a CIDR block (like 10.0.0.0/8)")
                })?,
            };
            nets.push(net.trunc());
        }
        Ok(Self(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The address a request on a connection from `peer` comes from: `peer` itself unless
    /// it is a trusted proxy; then the nearest `X-Forwarded-For` hop (from the right) that is
    /// not one, or the farthest hop when all are. An unreadable hop ends the walk at the
    /// trusted address before it.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.contains(client) {
            return client;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        client
    }
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| canonical(a.ip()))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_addresses_and_blocks_and_refuses_the_rest() {
        let t = TrustedProxies::parse(" 10.0.0.0/8, 127.0.0.1 ,::1,").unwrap();
        assert!(t.contains(ip("10.1.2.3")));
        assert!(t.contains(ip("127.0.0.1")));
        assert!(t.contains(ip("::ffff:127.0.0.1")));
        assert!(t.contains(ip("::1")));
        assert!(!t.contains(ip("127.0.0.2")));
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        let err = TrustedProxies::parse("10.0.0.0/8,proxy.local").unwrap_err();
        assert!(err.contains("proxy.local"), "{err}");
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let t = TrustedProxies::parse("10.0.0.1").unwrap();
        let h = headers(&["1.1.1.1"]);
        assert_eq!(t.client(ip("192.0.2.7"), &h), ip("192.0.2.7"));
    }

    #[test]
    fn a_trusted_proxy_names_the_nearest_untrusted_hop() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        // The client forged the first hop; the proxies appended the rest.
        let h = headers(&["6.6.6.6, 203.0.113.9", "10.0.0.2"]);
        assert_eq!(t.client(ip("10.0.0.1"), &h), ip("203.0.113.9"));
        assert_eq!(t.client(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
        let h = headers(&["[2001:db8::5]:443, 198.51.100.4:9000"]);
        assert_eq!(t.client(ip("10.0.0.1"), &h), ip("198.51.100.4"));
    }

    #[test]
    fn an_unreadable_hop_stops_at_the_last_trusted_address() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let h = headers(&["203.0.113.9, unknown, 10.0.0.3"]);
        assert_eq!(t.client(ip("10.0.0.1"), &h), ip("10.0.0.3"));
        let h = headers(&["10.0.0.5, 10.0.0.3"]);
        assert_eq!(t.client(ip("10.0.0.1"), &h), ip("10.0.0.5"));
    }
}
