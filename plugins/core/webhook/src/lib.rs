//! The bundled `webhook` recovery-strategy plugin (team `core`).
//!
//! Stage config: `{"url": "https://hooks.internal/restart", "method":
//! "POST", "body": {...}, "headers": {"x-token": "..."}, "timeoutMs":
//! 10000}`; only `url` is required. It sends one request: `method` (`POST`
//! when left out) with `body` as JSON, or, when no body is given, the
//! incident as JSON (`id`, `checkId`, `severity`, `stage`, `summary`). A
//! 2xx answer is `recovered`; any other answer, or none (refused, timed
//! out), is `not-recovered` with the status or the reason. A host the
//! manifest does not allow is a `denied` error.
//!
//! Its own manifest allows no host, so `core/webhook` by itself can reach
//! nobody. A team uses it through a plugin folder (or upload) of its own
//! whose `plugin.toml` says `component = "core/webhook"` and lists the hosts
//! in `permissions.http-hosts`.
//!
//! Written only against `autoagent-sdk`, as any outside plugin would be.

use std::collections::BTreeMap;
use std::time::Duration;

use autoagent_sdk::http::{HttpError, Request};
use autoagent_sdk::serde_json::{Value, json};
use autoagent_sdk::{
    CallContext, Incident, PluginError, RecoveryReport, RecoveryStrategy, from_input,
};
use serde::Deserialize;

/// The plugin; all behaviour lives in its [`RecoveryStrategy`] implementation.
pub struct Webhook;

/// How long the request waits for the connection, then for the answer, by default.
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// The longest `timeoutMs`: under the call's own limit (15 s).
const MAX_TIMEOUT_MS: u64 = 12_000;
/// Most characters of an answer's body quoted in the notes.
const QUOTE_CHARS: usize = 200;

/// What a stage asks for.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    url: String,
    method: Option<String>,
    body: Option<Value>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    timeout_ms: Option<u64>,
}

impl RecoveryStrategy for Webhook {
    fn recover(_ctx: &CallContext, incident: &Incident) -> Result<RecoveryReport, PluginError> {
        if incident.config.get("url").is_none() {
            return Err(PluginError::invalid_input(
                "no url: set the stage's `config.url` (an http:// or https:// URL)",
            ));
        }
        let config: Config = from_input(incident.config.clone())?;
        let method = config
            .method
            .as_deref()
            .unwrap_or("POST")
            .to_ascii_uppercase();
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(PluginError::invalid_input(format!(
                "field `method`: {method:?} is not an HTTP method"
            )));
        }
        let timeout = match config.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS) {
            millis @ 1..=MAX_TIMEOUT_MS => Duration::from_millis(millis),
            other => {
                return Err(PluginError::invalid_input(format!(
                    "field `timeoutMs`: {other} must be 1 to {MAX_TIMEOUT_MS}"
                )));
            }
        };
        let body = config
            .body
            .clone()
            .unwrap_or_else(|| incident_json(incident));
        let mut request = Request::new(method.as_str(), config.url.as_str()).timeout(timeout);
        for (name, value) in &config.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if method != "GET" && method != "HEAD" {
            request = request.json(&body)?;
        }
        let what = format!("{method} {}", config.url);
        match request.send() {
            Ok(response) if response.is_success() => Ok(RecoveryReport::recovered(format!(
                "{what} answered {}",
                response.status
            ))),
            Ok(response) => Ok(RecoveryReport::not_recovered(format!(
                "{what} answered {}{}",
                response.status,
                quote(&response.text())
            ))),
            Err(HttpError::Denied(message)) => Err(PluginError::denied(format!(
                "{what}: {message}; list the host in the manifest's permissions.http-hosts"
            ))),
            Err(HttpError::InvalidRequest(message)) => {
                Err(PluginError::invalid_input(format!("{what}: {message}")))
            }
            Err(HttpError::Failed(reason)) => Ok(RecoveryReport::not_recovered(format!(
                "{what} got no answer: {reason}"
            ))),
        }
    }
}

/// The body sent when the stage gives none: the incident.
fn incident_json(incident: &Incident) -> Value {
    json!({
        "id": incident.id,
        "checkId": incident.check_id,
        "severity": incident.severity,
        "stage": incident.stage,
        "summary": incident.summary,
    })
}

/// The start of a body, for the notes.
fn quote(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return String::new();
    }
    let mut quoted: String = body.chars().take(QUOTE_CHARS).collect();
    if body.chars().count() > QUOTE_CHARS {
        quoted.push('…');
    }
    format!(": {quoted}")
}

autoagent_sdk::export_recovery_strategy!(Webhook);

#[cfg(test)]
mod tests {
    use autoagent_sdk::http::Response;
    use autoagent_sdk::{RecoveryOutcome, testing};

    use super::*;

    fn recover(config: Value) -> Result<RecoveryReport, PluginError> {
        let incident = Incident {
            id: "incident_7".into(),
            check_id: "web".into(),
            severity: "critical".into(),
            stage: 1,
            summary: "GET http://web/ answered 503".into(),
            target: json!({"url": "http://web/"}),
            config,
        };
        Webhook::recover(&testing::context(), &incident)
    }

    fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
        request
            .headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn answer(status: u16, body: &'static str) {
        testing::reset();
        testing::on_http(move |_| Ok(Response::new(status, body)));
    }

    #[test]
    fn a_2xx_is_recovered_and_the_incident_is_the_default_body() {
        answer(202, "queued");
        let report = recover(json!({"url": "https://hooks.internal/restart"})).unwrap();
        assert_eq!(report.outcome, RecoveryOutcome::Recovered);
        assert_eq!(
            report.notes,
            "POST https://hooks.internal/restart answered 202"
        );
        let sent = &testing::http_requests()[0];
        assert_eq!(sent.method, "POST");
        assert_eq!(header(sent, "content-type"), Some("application/json"));
        let body: Value = autoagent_sdk::serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(
            body,
            json!({"id": "incident_7", "checkId": "web", "severity": "critical", "stage": 1,
                   "summary": "GET http://web/ answered 503"})
        );
    }

    #[test]
    fn the_stage_may_set_method_body_and_headers() {
        answer(200, "");
        recover(
            json!({"url": "http://hooks/x", "method": "put", "body": {"restart": "web"},
                       "headers": {"x-token": "t"}}),
        )
        .unwrap();
        let sent = &testing::http_requests()[0];
        assert_eq!(sent.method, "PUT");
        assert_eq!(sent.body, br#"{"restart":"web"}"#);
        assert_eq!(header(sent, "x-token"), Some("t"));
    }

    #[test]
    fn another_status_or_no_answer_is_not_recovered() {
        answer(500, "restart failed");
        let report = recover(json!({"url": "http://hooks/x"})).unwrap();
        assert_eq!(report.outcome, RecoveryOutcome::NotRecovered);
        assert_eq!(
            report.notes,
            "POST http://hooks/x answered 500: restart failed"
        );
        testing::reset();
        testing::on_http(|_| Err(HttpError::Failed("ConnectionRefused".into())));
        let report = recover(json!({"url": "http://hooks/x"})).unwrap();
        assert_eq!(
            report.notes,
            "POST http://hooks/x got no answer: ConnectionRefused"
        );
    }

    #[test]
    fn a_host_not_allowed_is_denied() {
        testing::reset();
        let err = recover(json!({"url": "http://hooks/x"})).unwrap_err();
        assert!(
            matches!(&err, PluginError::Denied(m) if m.contains("http-hosts")),
            "{err}"
        );
    }

    #[test]
    fn a_stage_without_a_url_is_invalid_input() {
        testing::reset();
        for config in [json!({}), json!(null)] {
            let err = recover(config).unwrap_err();
            assert!(
                matches!(&err, PluginError::InvalidInput(m) if m.starts_with("no url")),
                "{err}"
            );
        }
        for (config, field) in [
            (json!({"url": "http://h/", "method": "P O"}), "method"),
            (json!({"url": "http://h/", "timeoutMs": 0}), "timeoutMs"),
            (json!({"url": "http://h/", "headers": {"a": 1}}), "headers"),
            (json!({"url": "http://h/", "retries": 3}), "retries"),
        ] {
            let err = recover(config).unwrap_err();
            assert!(
                matches!(&err, PluginError::InvalidInput(m) if m.contains(field)),
                "{field}: {err}"
            );
        }
        assert!(testing::http_requests().is_empty());
    }
}
