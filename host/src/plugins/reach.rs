//! `permissions.reach-target`: the network a health check gets for one call,
//! to the one address its target names, and nothing else.
//!
//! Before each `check` call of a plugin with the grant, the host reads the
//! address from the target ([`TargetAddress::of`]: `url`, or `host` and
//! `port`) and resolves a name itself ([`Reach::resolve`]). That call's
//! sandbox may then send `wasi:http` requests to exactly that host and port
//! (`HttpGate` gets it as an extra allow-list entry) and open TCP
//! connections (`wasi:sockets`) to the resolved addresses on that port; no
//! UDP, no listening, no other address. When the target names a host by
//! name, the call may also look names up (`ip-name-lookup`), so that a
//! plugin's own `connect(("localhost", port))` works; what it connects to
//! is still checked against the addresses the host resolved. Every other
//! call (another plugin, another kind, a target without an address) keeps
//! the default sandbox, which has no network at all.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

use super::http::HostPattern;

/// The address a health check's target names: a host (a name or an IP
/// address, lower-case, without brackets) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetAddress {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl TargetAddress {
    /// The address `target` names, if any: its `url` (`http` or `https`;
    /// the URL's port, else 80 or 443), else its `host` (a string) and
    /// `port` (1 to 65535). A target naming neither gets no network; the
    /// plugin itself says what is missing.
    pub fn of(target: &Value) -> Option<Self> {
        if let Some(url) = target.get("url").and_then(Value::as_str) {
            return Self::of_url(url);
        }
        let host = target.get("host").and_then(Value::as_str)?;
        let port = target.get("port").and_then(Value::as_u64)?;
        let port = u16::try_from(port).ok().filter(|port| *port > 0)?;
        Self::new(host, port)
    }

    fn of_url(url: &str) -> Option<Self> {
        let uri: http::Uri = url.parse().ok()?;
        let default_port = match uri.scheme_str()?.to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        Self::new(uri.host()?, uri.port_u16().unwrap_or(default_port))
    }

    fn new(host: &str, port: u16) -> Option<Self> {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let valid = !host.is_empty()
            && host.len() <= 253
            && !host.contains(|c: char| c.is_whitespace() || "/?#@*".contains(c));
        valid.then_some(Self { host, port })
    }

    /// The IP address the host is, if it is one rather than a name.
    fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// One call's grant: the target's address and what it resolved to.
#[derive(Debug, Clone)]
pub struct Reach {
    /// The address the target names.
    pub address: TargetAddress,
    /// The IP addresses TCP connections may go to (on `address.port`).
    resolved: Arc<BTreeSet<IpAddr>>,
}

impl Reach {
    /// Resolves `address` (at most `within`; a name that does not resolve
    /// in time, or at all, grants HTTP to the name but no TCP address).
    pub async fn resolve(address: TargetAddress, within: Duration) -> Self {
        let resolved: BTreeSet<IpAddr> = match address.ip() {
            Some(ip) => [ip.to_canonical()].into(),
            None => {
                let lookup = tokio::net::lookup_host((address.host.as_str(), address.port));
                match tokio::time::timeout(within, lookup).await {
                    Ok(Ok(addrs)) => addrs.map(|addr| addr.ip().to_canonical()).collect(),
                    Ok(Err(err)) => {
                        tracing::debug!(host = %address.host, error = %err, "target name did not resolve");
                        BTreeSet::new()
                    }
                    Err(_) => {
                        tracing::debug!(host = %address.host, "target name did not resolve in time");
                        BTreeSet::new()
                    }
                }
            }
        };
        Self {
            address,
            resolved: Arc::new(resolved),
        }
    }

    /// The `http-hosts` entry this call adds: exactly the target's host and port.
    pub fn http_pattern(&self) -> HostPattern {
        HostPattern::exact(&self.address.host, self.address.port)
    }

    /// Whether a TCP socket may be used for `addr` in this way: connecting
    /// to a resolved address on the target's port, and the implicit bind
    /// to the wildcard address that every connect asks for first.
    pub fn allows(&self, addr: SocketAddr, usage: SocketAddrUse) -> bool {
        match usage {
            SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
            SocketAddrUse::TcpConnect => {
                addr.port() == self.address.port
                    && self.resolved.contains(&addr.ip().to_canonical())
            }
            _ => false,
        }
    }

    /// Opens the call's sandbox to the target: TCP (checked by
    /// [`Reach::allows`]), name lookup when the target is a name, no UDP.
    /// Denied sockets are logged with `who` (team, plugin, call id).
    pub fn grant(&self, wasi: &mut WasiCtxBuilder, who: [String; 3]) {
        let reach = self.clone();
        wasi.allow_tcp(true)
            .allow_udp(false)
            .allow_ip_name_lookup(self.address.ip().is_none())
            .socket_addr_check(move |addr, usage| {
                let allowed = reach.allows(addr, usage);
                if !allowed {
                    let [team, plugin, call_id] = &who;
                    tracing::warn!(
                        team = %team,
                        plugin = %plugin,
                        call_id = %call_id,
                        address = %addr,
                        usage = ?usage,
                        target = %format!("{}:{}", reach.address.host, reach.address.port),
                        "plugin denied socket: not its target"
                    );
                }
                Box::pin(async move { allowed })
            });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn of(target: Value) -> Option<(String, u16)> {
        TargetAddress::of(&target).map(|a| (a.host, a.port))
    }

    fn at(host: &str, port: u16) -> Option<(String, u16)> {
        Some((host.to_owned(), port))
    }

    #[test]
    fn the_address_comes_from_the_url_or_host_and_port() {
        assert_eq!(
            of(json!({"url": "http://Example.com/health"})),
            at("example.com", 80)
        );
        assert_eq!(
            of(json!({"url": "https://example.com"})),
            at("example.com", 443)
        );
        assert_eq!(
            of(json!({"url": "HTTPS://example.com:8443/x?y"})),
            at("example.com", 8443)
        );
        assert_eq!(
            of(json!({"url": "http://127.0.0.1:9000/"})),
            at("127.0.0.1", 9000)
        );
        assert_eq!(of(json!({"url": "http://[::1]:8080/"})), at("::1", 8080));
        assert_eq!(of(json!({"url": "http://user@web:81/"})), at("web", 81));
        assert_eq!(
            of(json!({"host": "db.internal", "port": 5432})),
            at("db.internal", 5432)
        );
        assert_eq!(
            of(json!({"host": "localhost", "port": 1})),
            at("localhost", 1)
        );
        // The url wins over host and port.
        assert_eq!(
            of(json!({"url": "http://a:1/", "host": "b", "port": 2})),
            at("a", 1)
        );
    }

    #[test]
    fn a_target_without_a_usable_address_gets_none() {
        for target in [
            json!(null),
            json!({}),
            json!("http://example.com"),
            json!({"url": "ftp://example.com/"}),
            json!({"url": "/relative"}),
            json!({"url": "example.com"}),
            json!({"url": 80}),
            json!({"host": "example.com"}),
            json!({"host": "example.com", "port": 0}),
            json!({"host": "example.com", "port": 65536}),
            json!({"host": "example.com", "port": "80"}),
            json!({"host": "", "port": 80}),
            json!({"host": "a b", "port": 80}),
            json!({"host": "*.example.com", "port": 80}),
            json!({"port": 80}),
        ] {
            assert_eq!(of(target.clone()), None, "{target}");
        }
    }

    fn reach(host: &str, port: u16, ips: &[&str]) -> Reach {
        Reach {
            address: TargetAddress {
                host: host.into(),
                port,
            },
            resolved: Arc::new(ips.iter().map(|ip| ip.parse().unwrap()).collect()),
        }
    }

    #[test]
    fn sockets_reach_only_the_resolved_addresses_on_the_port() {
        let grant = reach("localhost", 8080, &["127.0.0.1", "::1"]);
        let addr = |text: &str| text.parse::<SocketAddr>().unwrap();
        assert!(grant.allows(addr("127.0.0.1:8080"), SocketAddrUse::TcpConnect));
        assert!(grant.allows(addr("[::1]:8080"), SocketAddrUse::TcpConnect));
        assert!(grant.allows(addr("[::ffff:127.0.0.1]:8080"), SocketAddrUse::TcpConnect));
        assert!(!grant.allows(addr("127.0.0.1:8081"), SocketAddrUse::TcpConnect));
        assert!(!grant.allows(addr("127.0.0.2:8080"), SocketAddrUse::TcpConnect));
        // The implicit bind of a connect, and nothing else.
        assert!(grant.allows(addr("0.0.0.0:0"), SocketAddrUse::TcpBind));
        assert!(grant.allows(addr("[::]:0"), SocketAddrUse::TcpBind));
        assert!(!grant.allows(addr("0.0.0.0:8080"), SocketAddrUse::TcpBind));
        assert!(!grant.allows(addr("127.0.0.1:0"), SocketAddrUse::TcpBind));
        for usage in [
            SocketAddrUse::TcpListen,
            SocketAddrUse::TcpAccept,
            SocketAddrUse::UdpBind,
            SocketAddrUse::UdpSend,
            SocketAddrUse::UdpReceive,
        ] {
            assert!(!grant.allows(addr("127.0.0.1:8080"), usage), "{usage:?}");
        }
    }

    #[test]
    fn http_reaches_exactly_the_host_and_port() {
        let pattern = reach("web.internal", 8443, &[]).http_pattern();
        assert!(pattern.allows("WEB.internal", 8443));
        assert!(!pattern.allows("web.internal", 443));
        assert!(!pattern.allows("a.web.internal", 8443));
        let v6 = reach("::1", 80, &["::1"]).http_pattern();
        assert!(v6.allows("[::1]", 80));
    }

    #[tokio::test]
    async fn names_are_resolved_by_the_host_and_addresses_kept_as_they_are() {
        let local = Reach::resolve(
            TargetAddress {
                host: "localhost".into(),
                port: 80,
            },
            Duration::from_secs(5),
        )
        .await;
        assert!(
            local.resolved.iter().all(|ip| ip.is_loopback()) && !local.resolved.is_empty(),
            "{:?}",
            local.resolved
        );
        let ip = Reach::resolve(
            TargetAddress {
                host: "10.1.2.3".into(),
                port: 80,
            },
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            ip.resolved.iter().collect::<Vec<_>>(),
            ["10.1.2.3".parse::<IpAddr>().unwrap()]
                .iter()
                .collect::<Vec<_>>()
        );
        let nowhere = Reach::resolve(
            TargetAddress {
                host: "no-such-host.invalid".into(),
                port: 80,
            },
            Duration::from_secs(5),
        )
        .await;
        assert!(nowhere.resolved.is_empty());
    }
}
