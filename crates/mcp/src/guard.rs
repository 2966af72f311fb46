//! Which outbound addresses an MCP connection may reach: public addresses, and what the operator
//! allows (`--mcp-allow-hosts`, `host[:port]` entries). Checked on the *resolved* address of every
//! connection (a client per port resolves through [`Guard::client`]), so a name that resolved to
//! a public address when it was registered and to loopback later (DNS rebinding) is refused.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::error::McpError;

/// One `host[:port]` entry of the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    host: EntryHost,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum EntryHost {
    Ip(IpAddr),
    Name(String),
}

/// The operator's allow-list; empty: public addresses only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Entry>);

impl AllowList {
    /// Parses `host[:port],…` (IPv6 in brackets when a port follows: `[::1]:8080`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for raw in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            entries.push(entry(raw).ok_or_else(|| {
                format!("'{raw}' is not host[:port] (an IPv6 address with a port goes in brackets: [::1]:8080)")
            })?);
        }
        Ok(Self(entries))
    }

    /// Whether `addr`, reached for the URL host `host` (a name or an IP literal), is allowed.
    fn allows(&self, host: &str, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        if refusal(ip).is_none() {
            return true;
        }
        self.0.iter().any(|e| {
            let host_matches = match &e.host {
                EntryHost::Ip(allowed) => canonical(*allowed) == ip,
                EntryHost::Name(name) => name.eq_ignore_ascii_case(host.trim_end_matches('.')),
            };
            host_matches && e.port.is_none_or(|p| p == addr.port())
        })
    }
}

fn entry(raw: &str) -> Option<Entry> {
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(Entry {
            host: EntryHost::Ip(ip),
            port: None,
        });
    }
    if let Ok(sa) = raw.parse::<SocketAddr>() {
        return Some(Entry {
            host: EntryHost::Ip(sa.ip()),
            port: Some(sa.port()),
        });
    }
    let (host, port) = match raw.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
        None => (raw, None),
    };
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then(|| Entry {
        host: EntryHost::Name(host.trim_end_matches('.').to_ascii_lowercase()),
        port,
    })
}

/// An IPv4 address written in IPv6 (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d`) is judged as the IPv4 address it reaches.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded =
                Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
            let mapped = s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff;
            let compatible = s[..6] == [0; 6] && !matches!(s[6..], [0, 0] | [0, 1]);
            let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            if mapped || compatible || nat64 {
                IpAddr::V4(embedded)
            } else {
                ip
            }
        }
        v4 => v4,
    }
}

/// Why an address is not public, if it is not.
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_unspecified() || o[0] == 0 {
                Some("unspecified (0.0.0.0/8)")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local (169.254.0.0/16)")
            } else if o[0] == 100 && (64..128).contains(&o[1]) {
                Some("shared (100.64.0.0/10)")
            } else if v4.is_broadcast() || v4.is_multicast() || o[0] >= 240 {
                Some("multicast or reserved")
            } else if (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || v4.is_documentation()
            {
                Some("special-purpose")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if (first & 0xfe00) == 0xfc00 {
                Some("unique local (fc00::/7)")
            } else if (first & 0xffc0) == 0xfe80 {
                Some("link-local (fe80::/10)")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if first == 0x2001 && v6.segments()[1] == 0x0db8 {
                Some("documentation")
            } else if v6 == Ipv6Addr::from([0u8; 16]) {
                Some("unspecified")
            } else {
                None
            }
        }
    }
}

/// The outbound rules, shared by every MCP connection.
#[derive(Clone)]
pub struct Guard {
    allow: Arc<AllowList>,
    timeout: Duration,
    /// What connects and which flag allows more, for messages.
    purpose: Purpose,
    clients: Arc<Mutex<HashMap<(String, u16), reqwest::Client>>>,
}

/// Who uses a [`Guard`], for its refusals: what connects, and the flag that allows more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purpose {
    pub what: &'static str,
    pub flag: &'static str,
}

impl Purpose {
    pub const MCP: Self = Self {
        what: "MCP connections",
        flag: "--mcp-allow-hosts",
    };
}

impl Guard {
    pub fn new(allow: AllowList, timeout: Duration) -> Self {
        Self::with_purpose(allow, timeout, Purpose::MCP)
    }

    /// The same rules for another kind of outbound connection (budget webhooks).
    pub fn with_purpose(allow: AllowList, timeout: Duration, purpose: Purpose) -> Self {
        Self {
            allow: Arc::new(allow),
            timeout,
            purpose,
            clients: Arc::default(),
        }
    }

    /// Checks a URL before it is stored or called: `http`/`https`, a host, no credentials in
    /// it, and, for an IP literal, an allowed address.
    pub fn check_url(&self, url: &str) -> Result<Url, McpError> {
        let parsed = Url::parse(url)
            .map_err(|e| McpError::invalid("url", format!("'{url}' is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(McpError::invalid(
                "url",
                "the URL must be http:// or https://",
            ));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(McpError::invalid(
                "url",
                "put credentials in headers, not in the URL",
            ));
        }
        let port = parsed.port_or_known_default().unwrap_or(80);
        match parsed.host() {
            None => return Err(McpError::invalid("url", "the URL has no host")),
            Some(Host::Ipv4(v4)) => {
                self.check_addr(&v4.to_string(), SocketAddr::new(v4.into(), port))?
            }
            Some(Host::Ipv6(v6)) => {
                self.check_addr(&v6.to_string(), SocketAddr::new(v6.into(), port))?
            }
            Some(Host::Domain(_)) => {}
        }
        Ok(parsed)
    }

    fn check_addr(&self, host: &str, addr: SocketAddr) -> Result<(), McpError> {
        match refusal(addr.ip()) {
            Some(why) if !self.allow.allows(host, addr) => Err(McpError::Forbidden(format!(
                "{addr} is a {why} address, which {} may not reach; the operator can allow it with {}",
                self.purpose.what, self.purpose.flag
            ))),
            _ => Ok(()),
        }
    }

    /// Resolves a URL's host now and checks every address (registration's early answer; each
    /// connection checks again).
    pub async fn check_resolved(&self, url: &Url) -> Result<(), McpError> {
        let Some(Host::Domain(name)) = url.host() else {
            return Ok(());
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs = tokio::net::lookup_host((name, port)).await.map_err(|e| {
            McpError::invalid(
                "url",
                format!("'{name}' does not resolve ({e}); check the host name"),
            )
        })?;
        for addr in addrs {
            self.check_addr(name, addr)?;
        }
        Ok(())
    }

    /// The HTTP client for `url`'s host and port: no proxies, no redirects, the call time
    /// bounded, and every name resolved through the allow-list.
    pub fn client(&self, url: &Url) -> Result<reqwest::Client, McpError> {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let port = url.port_or_known_default().unwrap_or(80);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&(host.clone(), port)) {
            return Ok(c.clone());
        }
        let resolver = Checked {
            allow: self.allow.clone(),
            port,
            purpose: self.purpose,
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .connect_timeout(Duration::from_secs(10))
            .dns_resolver(Arc::new(resolver))
            .build()
            .map_err(|e| McpError::Internal(format!("could not build an HTTP client: {e}")))?;
        if clients.len() > 1024 {
            clients.clear();
        }
        clients.insert((host, port), client.clone());
        Ok(client)
    }
}

/// A resolver that refuses a name if any address it resolves to is not allowed.
struct Checked {
    allow: Arc<AllowList>,
    port: u16,
    purpose: Purpose,
}

impl Resolve for Checked {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        let port = self.port;
        let purpose = self.purpose;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect();
            if let Some(bad) = addrs.iter().find(|a| !allow.allows(&host, **a)) {
                let why = refusal(bad.ip()).unwrap_or("refused");
                return Err(format!(
                    "'{host}' resolves to {bad}, a {why} address, which {} may not reach; the operator can allow it with {}",
                    purpose.what, purpose.flag
                )
                .into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn private_loopback_link_local_and_their_ipv6_forms_are_refused() {
        for ip in [
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
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(refusal(ip).is_some(), "{ip} should be refused");
        }
        for ip in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(refusal(ip), None, "{ip} is public");
        }
    }

    #[test]
    fn the_allow_list_matches_address_or_name_and_port() {
        let allow = AllowList::parse("127.0.0.1:8080, mcp.internal, [::1]:9000").expect("parses");
        assert!(allow.allows("127.0.0.1", sa("127.0.0.1:8080")));
        assert!(!allow.allows("127.0.0.1", sa("127.0.0.1:8081")));
        // A name resolving to an allowed address and port is allowed; to another port, not.
        assert!(allow.allows("evil.example", sa("127.0.0.1:8080")));
        assert!(!allow.allows("evil.example", sa("127.0.0.1:22")));
        assert!(allow.allows("MCP.internal.", sa("10.0.0.5:443")));
        assert!(allow.allows("::1", sa("[::1]:9000")));
        assert!(!allow.allows("::1", sa("[::1]:9001")));
        assert!(allow.allows("anything", sa("1.1.1.1:25")));
        assert!(AllowList::parse("bad host").is_err());
        assert!(AllowList::parse("h:99999").is_err());
        assert_eq!(
            AllowList::parse(" , ").expect("empty"),
            AllowList::default()
        );
    }

    #[test]
    fn urls_are_checked_before_they_are_stored() {
        let guard = Guard::new(AllowList::default(), Duration::from_secs(5));
        for bad in [
            "ftp://example.com/mcp",
            "http://user:pw@example.com/mcp",
            "http://127.0.0.1:8000/mcp",
            "http://[::1]:8000/mcp",
            "http://[::ffff:7f00:1]/mcp",
            "http://169.254.169.254/latest",
            "http://10.0.0.1/mcp",
            "not a url",
        ] {
            assert!(guard.check_url(bad).is_err(), "{bad}");
        }
        assert!(guard.check_url("https://mcp.example.com/mcp").is_ok());
        let open = Guard::new(
            AllowList::parse("127.0.0.1").expect("parses"),
            Duration::from_secs(5),
        );
        assert!(open.check_url("http://127.0.0.1:8000/mcp").is_ok());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_at_connect_time() {
        let resolver = Checked {
            allow: Arc::new(AllowList::default()),
            port: 80,
            purpose: Purpose::MCP,
        };
        let name: Name = "localhost".parse().expect("name");
        let err = resolver.resolve(name).await.err().expect("refused");
        assert!(err.to_string().contains("loopback"), "{err}");
    }
}
