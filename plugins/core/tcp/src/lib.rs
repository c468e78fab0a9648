//! The bundled `tcp` health-check plugin (team `core`).
//!
//! Target: `{"host": "db.internal", "port": 5432, "timeoutMs": 5000}`;
//! `host` (a name or an IP address) and `port` are required. Healthy when a
//! TCP connection to one of the host's addresses on that port opens (it is
//! closed at once, nothing is sent); unhealthy, with the reason, when none
//! does (refused, timed out, unreachable, the name does not resolve). The
//! measurement `latency` is the time to the connection, in ms.
//!
//! Its manifest grants `reach-target`: each call may connect to its
//! target's address, and nothing else. A target without `host` and `port`
//! is `invalid-input` ("nothing to probe"). On `wasm32-wasip2` the
//! connection is made through `wasi:sockets` directly (std's
//! `connect_timeout` there reports a refused connection as made), which the
//! host opens for that call only; natively, through `std::net`.
//!
//! Written only against `autoagent-sdk`, as any outside plugin would be.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use autoagent_sdk::serde_json::Value;
use autoagent_sdk::{CallContext, HealthCheck, HealthReport, PluginError, from_input};
use serde::Deserialize;

/// The plugin; all behaviour lives in its [`HealthCheck`] implementation.
pub struct Tcp;

/// How long a connection may take to open, by default.
const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// The longest `timeoutMs`: under the call's own limit (10 s).
const MAX_TIMEOUT_MS: u64 = 8_000;

/// What the target asks for.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Target {
    host: String,
    port: u16,
    timeout_ms: Option<u64>,
}

impl HealthCheck for Tcp {
    fn check(_ctx: &CallContext, target: Value) -> Result<HealthReport, PluginError> {
        if target.get("host").is_none() && target.get("port").is_none() {
            return Err(PluginError::invalid_input(
                "no target: set `target.host` and `target.port`",
            ));
        }
        let target: Target = from_input(target)?;
        if target.host.is_empty() || target.host.contains(char::is_whitespace) {
            return Err(PluginError::invalid_input(format!(
                "field `host`: {:?} is not a host name or address",
                target.host
            )));
        }
        if target.port == 0 {
            return Err(PluginError::invalid_input(
                "field `port`: must be 1 to 65535",
            ));
        }
        let timeout = match target.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS) {
            millis @ 1..=MAX_TIMEOUT_MS => Duration::from_millis(millis),
            other => {
                return Err(PluginError::invalid_input(format!(
                    "field `timeoutMs`: {other} must be 1 to {MAX_TIMEOUT_MS}"
                )));
            }
        };
        let host = target.host.trim_start_matches('[').trim_end_matches(']');
        let what = format!("{}:{}", target.host, target.port);
        let started = Instant::now();
        let outcome = connect(host, target.port, timeout);
        let millis = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
        let report = match outcome {
            Ok(addr) => {
                HealthReport::healthy(format!("connected to {what} ({addr}) in {millis} ms"))
            }
            Err(Failure::Denied(reason)) => {
                return Err(PluginError::denied(format!(
                    "connecting to {what}: {reason} (a check of its own target needs `reach-target = true`)"
                )));
            }
            Err(Failure::Down(reason)) => {
                HealthReport::unhealthy(format!("cannot connect to {what}: {reason}"))
            }
        };
        Ok(report.with_measurement("latency", millis, "ms"))
    }
}

/// Why no connection opened.
#[derive(Debug)]
enum Failure {
    /// The sandbox refused the address: not the call's target.
    Denied(String),
    /// The service did not take it.
    Down(String),
}

/// Connects to the first of `host`'s addresses that takes a connection,
/// and closes it.
fn connect(host: &str, port: u16, timeout: Duration) -> Result<SocketAddr, Failure> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|err| Failure::Down(format!("{host} does not resolve: {err}")))?
        .collect();
    let mut last = Failure::Down(format!("{host} resolves to no address"));
    for addr in addrs {
        match connect_one(addr, timeout) {
            Ok(()) => return Ok(addr),
            Err(failure) => last = failure,
        }
    }
    Err(last)
}

/// Opens (and closes) one connection, natively through `std::net`.
#[cfg(not(target_arch = "wasm32"))]
fn connect_one(addr: SocketAddr, timeout: Duration) -> Result<(), Failure> {
    use std::io::ErrorKind;
    match std::net::TcpStream::connect_timeout(&addr, timeout) {
        Ok(_stream) => Ok(()),
        Err(err) if err.kind() == ErrorKind::PermissionDenied => {
            Err(Failure::Denied(format!("{addr}: {err}")))
        }
        Err(err) if err.kind() == ErrorKind::TimedOut => Err(Failure::Down(format!(
            "{addr}: no answer within {} ms",
            timeout.as_millis()
        ))),
        Err(err) => Err(Failure::Down(format!("{addr}: {err}"))),
    }
}

/// Opens (and closes) one connection through `wasi:sockets`, waiting for
/// it at most `timeout`.
#[cfg(target_arch = "wasm32")]
fn connect_one(addr: SocketAddr, timeout: Duration) -> Result<(), Failure> {
    use wasip2::clocks::monotonic_clock;
    use wasip2::io::poll;
    use wasip2::sockets::network::{
        ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
    };
    use wasip2::sockets::{instance_network, tcp_create_socket};

    let (family, remote) = match addr {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            let remote = Ipv4SocketAddress {
                port: v4.port(),
                address: (a, b, c, d),
            };
            (IpAddressFamily::Ipv4, IpSocketAddress::Ipv4(remote))
        }
        SocketAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.ip().segments();
            let remote = Ipv6SocketAddress {
                port: v6.port(),
                flow_info: v6.flowinfo(),
                address: (a, b, c, d, e, f, g, h),
                scope_id: v6.scope_id(),
            };
            (IpAddressFamily::Ipv6, IpSocketAddress::Ipv6(remote))
        }
    };
    let failure = |code: ErrorCode| match code {
        ErrorCode::AccessDenied => Failure::Denied(format!("{addr}: {}", code.message())),
        ErrorCode::Timeout => Failure::Down(format!(
            "{addr}: no answer within {} ms",
            timeout.as_millis()
        )),
        other => Failure::Down(format!("{addr}: {}", other.message())),
    };
    let network = instance_network::instance_network();
    let socket = tcp_create_socket::create_tcp_socket(family).map_err(failure)?;
    socket.start_connect(&network, remote).map_err(failure)?;
    // Declared after the socket, so dropped before it: a pollable is the
    // socket's child.
    let connected = socket.subscribe();
    let deadline =
        monotonic_clock::subscribe_duration(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
    loop {
        match socket.finish_connect() {
            Ok(_streams) => return Ok(()),
            Err(ErrorCode::WouldBlock) => {
                let ready = poll::poll(&[&connected, &deadline]);
                if !ready.contains(&0) {
                    return Err(failure(ErrorCode::Timeout));
                }
            }
            Err(code) => return Err(failure(code)),
        }
    }
}

autoagent_sdk::export_health_check!(Tcp);

#[cfg(test)]
mod tests {
    //! Natively, `std::net` is the machine's own: these tests open real
    //! connections on loopback.

    use std::net::TcpListener;

    use autoagent_sdk::serde_json::json;
    use autoagent_sdk::{HealthStatus, testing};

    use super::*;

    fn check(target: Value) -> Result<HealthReport, PluginError> {
        testing::reset();
        Tcp::check(&testing::context(), target)
    }

    #[test]
    fn a_listening_port_is_healthy() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        for host in ["127.0.0.1", "localhost"] {
            let report = check(json!({"host": host, "port": port})).unwrap();
            assert_eq!(report.status, HealthStatus::Healthy, "{host}: {report:?}");
            assert!(
                report
                    .message
                    .starts_with(&format!("connected to {host}:{port}"))
            );
            assert_eq!(report.measurements[0].name, "latency");
        }
    }

    #[test]
    fn a_closed_port_or_unknown_name_is_unhealthy_with_the_reason() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let report = check(json!({"host": "127.0.0.1", "port": port})).unwrap();
        assert_eq!(report.status, HealthStatus::Unhealthy);
        assert!(
            report.message.starts_with(&format!(
                "cannot connect to 127.0.0.1:{port}: 127.0.0.1:{port}:"
            )),
            "{}",
            report.message
        );
        let report = check(json!({"host": "no-such-host.invalid", "port": 80})).unwrap();
        assert_eq!(report.status, HealthStatus::Unhealthy);
        assert!(
            report.message.contains("does not resolve"),
            "{}",
            report.message
        );
    }

    #[test]
    fn a_target_without_an_address_is_invalid_input() {
        for target in [json!(null), json!({}), json!({"url": "http://web/"})] {
            assert_eq!(
                check(target).unwrap_err(),
                PluginError::invalid_input("no target: set `target.host` and `target.port`")
            );
        }
        for (target, field) in [
            (json!({"host": "web"}), "port"),
            (json!({"port": 80}), "host"),
            (json!({"host": "web", "port": 0}), "port"),
            (json!({"host": "web", "port": 70000}), "port"),
            (json!({"host": "", "port": 80}), "host"),
            (
                json!({"host": "web", "port": 80, "timeoutMs": 0}),
                "timeoutMs",
            ),
            (json!({"host": "web", "port": 80, "tls": true}), "tls"),
        ] {
            let err = check(target).unwrap_err();
            assert!(
                matches!(&err, PluginError::InvalidInput(m) if m.contains(field)),
                "{field}: {err}"
            );
        }
    }
}
