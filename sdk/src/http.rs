//! Outbound HTTP, through `wasi:http`, to the hosts the manifest allows.
//!
//! The manifest's `permissions.http-hosts` lists where a plugin may send
//! requests (`api.example.com`, `api.example.com:8443`, `*.example.com`);
//! the host refuses anything else with [`HttpError::Denied`] and logs it.
//! Requests are blocking: a plugin call is one synchronous run, bounded as a
//! whole by the plugin's time limit.
//!
//! ```no_run
//! use autoagent_sdk::http::Request;
//!
//! # fn probe() -> Result<(), autoagent_sdk::PluginError> {
//! let response = Request::get("https://status.example.com/health")
//!     .header("accept", "application/json")
//!     .send()?;
//! if response.status != 200 {
//!     return Err(autoagent_sdk::PluginError::failed(format!("status {}", response.status)));
//! }
//! let body: autoagent_sdk::serde_json::Value = response.json()?;
//! # let _ = body;
//! # Ok(())
//! # }
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::PluginError;

/// Largest response body a plugin receives; more is an error rather than a
/// memory bomb of the server's making.
pub const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// An HTTP request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes; empty for none.
    pub body: Vec<u8>,
    /// How long to wait for the connection, and then for the response to
    /// start and for each part of its body; `None` waits as long as the
    /// call may last. Past it, [`Request::send`] fails with
    /// [`HttpError::Failed`].
    pub timeout: Option<std::time::Duration>,
}

impl Request {
    /// A request with `method` to `url`, no headers and no body.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// A `GET` of `url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` to `url`; add the body with [`Request::body`] or [`Request::json`].
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Gives up on the connection, on the response's start and on each
    /// part of its body after `timeout` each.
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets a JSON body and `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, PluginError> {
        let body = serde_json::to_vec(value)
            .map_err(|err| PluginError::failed(format!("cannot encode the request body: {err}")))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Sends the request and waits for the whole response.
    pub fn send(&self) -> Result<Response, HttpError> {
        let url: ::http::Uri = self
            .url
            .parse()
            .map_err(|err| HttpError::InvalidRequest(format!("bad URL {:?}: {err}", self.url)))?;
        match url.scheme_str() {
            Some("http" | "https") if url.authority().is_some() => {}
            _ => {
                return Err(HttpError::InvalidRequest(format!(
                    "URL {:?} must be absolute, with http or https",
                    self.url
                )));
            }
        }
        crate::backend::http_send(self, &url)
    }
}

/// A response received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Header names (lower-case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with `status` and `body` and no headers.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// The first value of header `name`, compared without case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        serde_json::from_slice(&self.body).map_err(|err| {
            PluginError::failed(format!("response body is not the expected JSON: {err}"))
        })
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The manifest does not allow this host.
    Denied(String),
    /// The request is malformed (URL, method, header).
    InvalidRequest(String),
    /// The request was sent and failed (connection, TLS, protocol, size).
    Failed(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Denied(message) => write!(f, "denied: {message}"),
            Self::InvalidRequest(message) => write!(f, "invalid request: {message}"),
            Self::Failed(message) => write!(f, "failed: {message}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for PluginError {
    fn from(err: HttpError) -> Self {
        match err {
            HttpError::Denied(message) => PluginError::Denied(message),
            HttpError::InvalidRequest(message) | HttpError::Failed(message) => {
                PluginError::Failed(message)
            }
        }
    }
}
