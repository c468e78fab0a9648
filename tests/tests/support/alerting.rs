//! Real receivers for alert tests: local HTTP servers standing for Slack's
//! webhooks, an SMS gateway and PagerDuty's Events API, and aiosmtpd (a
//! real SMTP server, installed by `cargo xtask test`) writing a maildir.
//! Shared by the alert test files through `#[path]`.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autoagent_tests::Value;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    pub status: u16,
    pub at: Instant,
}

/// Per path, the answers still to give: status and `Retry-After`.
type Script = HashMap<String, VecDeque<(u16, Option<&'static str>)>>;

/// Local HTTP receivers: every request is recorded; each path answers from
/// its script (status, `Retry-After`) and then 200 (202 under `/pd`), or
/// 503 for everything while `down`.
#[derive(Clone, Default)]
pub struct Receivers {
    pub received: Arc<Mutex<Vec<Received>>>,
    pub script: Arc<Mutex<Script>>,
    pub down: Arc<Mutex<bool>>,
}

impl Receivers {
    pub async fn start() -> (Self, String) {
        let receivers = Self::default();
        let state = receivers.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move { state.answer(uri, headers, body) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receivers, origin)
    }

    fn answer(&self, uri: Uri, headers: HeaderMap, body: Bytes) -> axum::response::Response {
        let path = uri.path().to_owned();
        let scripted = self
            .script
            .lock()
            .unwrap()
            .get_mut(&path)
            .and_then(VecDeque::pop_front);
        let (status, retry_after) = if *self.down.lock().unwrap() {
            (503, None)
        } else {
            scripted.unwrap_or(if path.starts_with("/pd") {
                (202, None)
            } else {
                (200, None)
            })
        };
        self.received.lock().unwrap().push(Received {
            path,
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            status,
            at: Instant::now(),
        });
        let mut response = (
            StatusCode::from_u16(status).unwrap(),
            r#"{"status":"success"}"#,
        )
            .into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", seconds.parse().unwrap());
        }
        response
    }

    pub fn script(&self, path: &str, answers: &[(u16, Option<&'static str>)]) {
        self.script
            .lock()
            .unwrap()
            .insert(path.to_owned(), answers.iter().copied().collect());
    }

    pub fn at(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub fn accepted_at(&self, path: &str) -> Vec<Received> {
        self.at(path)
            .into_iter()
            .filter(|r| r.status < 300)
            .collect()
    }
}

/// A free loopback port (nothing listens on it once this returns).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// aiosmtpd on `port`, delivering into a maildir.
pub struct Smtp {
    child: Child,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Smtp {
    pub fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("mail");
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect(
                "python3 -m aiosmtpd (run the tests with `cargo xtask test`, which installs it)",
            );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            maildir,
            _dir: dir,
        }
    }

    /// The messages received, as text.
    pub fn messages(&self) -> Vec<String> {
        let new = self.maildir.join("new");
        let Ok(entries) = std::fs::read_dir(&new) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const ROUTING_KEY: &str = "R0UTING-KEY-0123456789abcdef";
pub const SMS_TOKEN: &str = "sms-gateway-secret-token";
pub const SMTP_PASSWORD: &str = "smtp-password-not-used";

pub fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AA_TEST_PD_KEY", ROUTING_KEY),
        ("AA_TEST_SMS_TOKEN", SMS_TOKEN),
        ("AA_TEST_SMTP_PASSWORD", SMTP_PASSWORD),
    ]
}

pub fn write_config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path.display().to_string())
}
