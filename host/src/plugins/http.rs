//! Outbound HTTP for plugins: `wasi:http`, with the manifest's allow-list
//! enforced where the request leaves the host.
//!
//! The check is made on the request's URI authority, the address the host
//! is about to connect to, never on a `Host` header the guest set. A denied
//! request fails inside the plugin with `HttpRequestDenied` and is logged
//! with the plugin's team and name.

use std::sync::Arc;

use http::Request;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::host_api::CallId;
use super::manifest::Manifest;

/// One entry of `permissions.http-hosts`: `host`, `host:port`, `*.domain`
/// or `*.domain:port`; IPv6 addresses in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lower-case host, without brackets; for a wildcard, the domain after `*.`.
    host: String,
    /// Whether any subdomain of `host` matches (and `host` itself does not).
    subdomains: bool,
    /// The only port allowed, if one is named.
    port: Option<u16>,
}

impl HostPattern {
    /// Parses an allow-list entry; the error says what is wrong with it.
    pub fn parse(entry: &str) -> Result<Self, String> {
        if entry.contains("://") || entry.contains('/') {
            return Err("must be a host or host:port, without scheme or path".into());
        }
        let (host, port) = match entry.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("has port {port:?}, which is not a number up to 65535"))?;
                (host, Some(port))
            }
            _ => (entry, None),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let (host, subdomains) = match host.strip_prefix("*.") {
            Some(domain) => (domain, true),
            None => (host, false),
        };
        if host.is_empty() || host.contains('*') || host.contains(char::is_whitespace) {
            return Err("must name a host; `*.` is allowed only at the start".into());
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            subdomains,
            port,
        })
    }

    /// The entry that allows exactly `host` (a name or an IP address,
    /// brackets allowed) on `port`.
    pub fn exact(host: &str, port: u16) -> Self {
        Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase(),
            subdomains: false,
            port: Some(port),
        }
    }

    /// Whether a request to `host` (as in a URI, brackets allowed) on
    /// `port` is allowed by this entry.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let host_matches = if self.subdomains {
            host.strip_suffix(&self.host)
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.'))
        } else {
            host == self.host
        };
        host_matches && self.port.is_none_or(|allowed| allowed == port)
    }
}

/// The `wasi:http` hooks of one call: sends what the manifest allows, and
/// what this one call is granted besides (a health check's target, see
/// `reach`).
pub struct HttpGate {
    manifest: Arc<Manifest>,
    call_id: CallId,
    /// An entry allowed for this call only.
    extra: Option<HostPattern>,
}

impl HttpGate {
    /// The gate for a call of the plugin `manifest` describes.
    pub fn new(manifest: Arc<Manifest>, call_id: CallId) -> Self {
        Self {
            manifest,
            call_id,
            extra: None,
        }
    }

    /// Also allows `pattern`, for this call only.
    pub fn with_extra(mut self, pattern: Option<HostPattern>) -> Self {
        self.extra = pattern;
        self
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        self.extra.iter().any(|pattern| pattern.allows(host, port))
            || self
                .manifest
                .permissions
                .http_hosts
                .iter()
                .filter_map(|entry| HostPattern::parse(entry).ok())
                .any(|pattern| pattern.allows(host, port))
    }
}

type SendResult = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendResult {
        let uri = request.uri();
        let default_port = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
            443
        } else {
            80
        };
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri.port_u16().unwrap_or(default_port);
        let (team, plugin) = (&self.manifest.team, &self.manifest.name);
        if !self.allows(&host, port) {
            tracing::warn!(
                team = %team,
                plugin = %plugin,
                call_id = %self.call_id,
                host = %host,
                port,
                "plugin denied HTTP request: host not in http-hosts (nor its check's target)"
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        tracing::debug!(
            team = %team,
            plugin = %plugin,
            call_id = %self.call_id,
            method = %request.method(),
            uri = %uri,
            "plugin sends HTTP request"
        );
        drop(fut);
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entry: &str, host: &str, port: u16) -> bool {
        HostPattern::parse(entry).unwrap().allows(host, port)
    }

    #[test]
    fn entries_match_hosts_and_ports() {
        assert!(allows("api.example.com", "API.example.com", 443));
        assert!(allows("api.example.com:8443", "api.example.com", 8443));
        assert!(!allows("api.example.com:8443", "api.example.com", 443));
        assert!(allows("*.example.com", "a.b.example.com", 80));
        assert!(!allows("*.example.com", "example.com", 80));
        assert!(!allows("*.example.com", "badexample.com", 80));
        assert!(!allows("example.com", "example.com.evil.net", 80));
        assert!(allows("127.0.0.1:8080", "127.0.0.1", 8080));
        assert!(allows("[::1]:8080", "[::1]", 8080));
        assert!(allows("[::1]", "[::1]", 1));
    }

    #[test]
    fn an_exact_entry_allows_one_host_and_port() {
        let pattern = HostPattern::exact("[::1]", 8080);
        assert!(pattern.allows("[::1]", 8080));
        assert!(!pattern.allows("[::1]", 8081));
        let gate = |extra| {
            let manifest = Manifest::parse(
                "name = \"c\"\nversion = \"0.1.0\"\nkind = \"health-check\"\nteam = \"ops\"\n\
                 [permissions]\nhttp-hosts = [\"api.example.com\"]",
            )
            .unwrap();
            HttpGate::new(Arc::new(manifest), CallId(1)).with_extra(extra)
        };
        let plain = gate(None);
        assert!(plain.allows("api.example.com", 443));
        assert!(!plain.allows("web", 81));
        let granted = gate(Some(HostPattern::exact("web", 81)));
        assert!(granted.allows("api.example.com", 443));
        assert!(granted.allows("web", 81));
        assert!(!granted.allows("web", 80));
    }

    #[test]
    fn bad_entries_are_refused() {
        for entry in [
            "https://x.com",
            "x.com/path",
            "x.com:http",
            "*",
            "a.*.com",
            "",
        ] {
            assert!(HostPattern::parse(entry).is_err(), "{entry:?}");
        }
    }
}
