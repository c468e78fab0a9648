//! The bundled `http` health-check plugin (team `core`).
//!
//! Target: `{"url": "https://web.internal/health", "expectStatus": 200,
//! "bodyContains": "ok", "method": "GET", "timeoutMs": 5000}`; only `url`
//! is required. It sends one request and is healthy when the status is
//! `expectStatus` (any 2xx when left out) and the body contains
//! `bodyContains` (when given); unhealthy, saying what differed, otherwise.
//! A request that gets no answer (refused, timed out, reset, a TLS error) is
//! unhealthy too, with the reason: that is what a failing service looks
//! like. The measurement `latency` is the time to the whole response, in ms.
//!
//! Its manifest grants `reach-target`: each call may reach its target's host
//! and port, and nothing else. A target without `url` is `invalid-input`
//! ("nothing to probe").
//!
//! Written only against `autoagent-sdk`, as any outside plugin would be.

use std::time::{Duration, Instant};

use autoagent_sdk::http::{HttpError, Request, Response};
use autoagent_sdk::serde_json::Value;
use autoagent_sdk::{CallContext, HealthCheck, HealthReport, PluginError, from_input};
use serde::Deserialize;

/// The plugin; all behaviour lives in its [`HealthCheck`] implementation.
pub struct Http;

/// How long the request waits for the connection, then for the answer, by default.
const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// The longest `timeoutMs`: under the call's own limit (10 s), so a
/// service that does not answer is reported unhealthy, not timed out.
const MAX_TIMEOUT_MS: u64 = 8_000;
/// Most characters of a body quoted in a message.
const QUOTE_CHARS: usize = 120;

/// What the target asks for.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Target {
    url: String,
    expect_status: Option<u16>,
    body_contains: Option<String>,
    method: Option<String>,
    timeout_ms: Option<u64>,
}

impl HealthCheck for Http {
    fn check(_ctx: &CallContext, target: Value) -> Result<HealthReport, PluginError> {
        if target.get("url").is_none() {
            return Err(PluginError::invalid_input(
                "no target: set `target.url` (an http:// or https:// URL)",
            ));
        }
        let target: Target = from_input(target)?;
        let method = method(target.method.as_deref())?;
        let timeout = timeout(target.timeout_ms)?;
        if let Some(status) = target.expect_status
            && !(100..=599).contains(&status)
        {
            return Err(PluginError::invalid_input(format!(
                "field `expectStatus`: {status} is not an HTTP status (100 to 599)"
            )));
        }
        if !is_http_url(&target.url) {
            return Err(PluginError::invalid_input(format!(
                "field `url`: {:?} is not an absolute http:// or https:// URL",
                target.url
            )));
        }
        let started = Instant::now();
        let sent = Request::new(method.as_str(), target.url.as_str())
            .timeout(timeout)
            .send();
        let millis = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
        let what = format!("{method} {}", target.url);
        let report = match sent {
            Ok(response) => verdict(&target, &what, &response, millis),
            Err(HttpError::Denied(message)) => {
                return Err(PluginError::denied(format!(
                    "{what}: {message} (a check of its own target needs `reach-target = true`)"
                )));
            }
            Err(HttpError::InvalidRequest(message)) => {
                return Err(PluginError::invalid_input(format!("{what}: {message}")));
            }
            Err(HttpError::Failed(reason)) => {
                HealthReport::unhealthy(format!("{what} got no answer: {reason}"))
            }
        };
        Ok(report.with_measurement("latency", millis, "ms"))
    }
}

/// Healthy when the status and body are as the target expects.
fn verdict(target: &Target, what: &str, response: &Response, millis: f64) -> HealthReport {
    let status = response.status;
    let status_ok = match target.expect_status {
        Some(expected) => status == expected,
        None => response.is_success(),
    };
    if !status_ok {
        let expected = target
            .expect_status
            .map_or_else(|| "a 2xx status".to_owned(), |s| s.to_string());
        return HealthReport::unhealthy(format!(
            "{what} answered {status}, expected {expected}{}",
            quote(&response.text())
        ));
    }
    if let Some(needle) = &target.body_contains
        && !response.text().contains(needle.as_str())
    {
        return HealthReport::unhealthy(format!(
            "{what} answered {status}, but the body does not contain {needle:?}{}",
            quote(&response.text())
        ));
    }
    HealthReport::healthy(format!("{what} answered {status} in {millis} ms"))
}

/// The start of a body, for a message: `: "..."`, or nothing when empty.
fn quote(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return String::new();
    }
    let mut quoted: String = body.chars().take(QUOTE_CHARS).collect();
    if body.chars().count() > QUOTE_CHARS {
        quoted.push('…');
    }
    format!(" (body {quoted:?})")
}

/// The method, upper-case: `GET` when left out, else an HTTP token.
fn method(method: Option<&str>) -> Result<String, PluginError> {
    let method = method.unwrap_or("GET").to_ascii_uppercase();
    let token = !method.is_empty()
        && method.len() <= 16
        && method.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-');
    if token {
        Ok(method)
    } else {
        Err(PluginError::invalid_input(format!(
            "field `method`: {method:?} is not an HTTP method"
        )))
    }
}

/// `timeoutMs`, 1 to [`MAX_TIMEOUT_MS`]; [`DEFAULT_TIMEOUT_MS`] when left out.
fn timeout(millis: Option<u64>) -> Result<Duration, PluginError> {
    match millis.unwrap_or(DEFAULT_TIMEOUT_MS) {
        millis @ 1..=MAX_TIMEOUT_MS => Ok(Duration::from_millis(millis)),
        other => Err(PluginError::invalid_input(format!(
            "field `timeoutMs`: {other} must be 1 to {MAX_TIMEOUT_MS}"
        ))),
    }
}

fn is_http_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    ["http://", "https://"].iter().any(|scheme| {
        lower
            .strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty())
    })
}

autoagent_sdk::export_health_check!(Http);

#[cfg(test)]
mod tests {
    use autoagent_sdk::serde_json::json;
    use autoagent_sdk::{HealthStatus, testing};

    use super::*;

    fn check(target: Value) -> Result<HealthReport, PluginError> {
        Http::check(&testing::context(), target)
    }

    fn answer(status: u16, body: &'static str) {
        testing::reset();
        testing::on_http(move |_| Ok(Response::new(status, body)));
    }

    #[test]
    fn any_2xx_is_healthy_by_default_and_latency_is_measured() {
        answer(204, "");
        let report = check(json!({"url": "http://web:8080/health"})).unwrap();
        assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
        assert!(
            report
                .message
                .starts_with("GET http://web:8080/health answered 204")
        );
        assert_eq!(report.measurements[0].name, "latency");
        assert_eq!(report.measurements[0].unit, "ms");
        let sent = &testing::http_requests()[0];
        assert_eq!(
            (sent.method.as_str(), sent.url.as_str()),
            ("GET", "http://web:8080/health")
        );
        assert_eq!(
            sent.timeout,
            Some(Duration::from_millis(DEFAULT_TIMEOUT_MS))
        );
    }

    #[test]
    fn a_status_other_than_expected_is_unhealthy_and_says_both() {
        answer(503, "maintenance");
        let report = check(json!({"url": "http://web/"})).unwrap();
        assert_eq!(report.status, HealthStatus::Unhealthy);
        assert_eq!(
            report.message,
            "GET http://web/ answered 503, expected a 2xx status (body \"maintenance\")"
        );
        answer(200, "ok");
        let report = check(json!({"url": "http://web/", "expectStatus": 301})).unwrap();
        assert_eq!(
            report.message,
            "GET http://web/ answered 200, expected 301 (body \"ok\")"
        );
        answer(301, "");
        let report = check(json!({"url": "http://web/", "expectStatus": 301})).unwrap();
        assert_eq!(report.status, HealthStatus::Healthy);
    }

    #[test]
    fn the_body_must_contain_what_is_asked() {
        answer(200, "{\"status\":\"degraded\"}");
        let target = json!({"url": "http://web/", "bodyContains": "\"status\":\"ok\""});
        let report = check(target.clone()).unwrap();
        assert_eq!(report.status, HealthStatus::Unhealthy);
        assert!(
            report.message.contains("does not contain"),
            "{}",
            report.message
        );
        answer(200, "{\"status\":\"ok\"}");
        assert_eq!(check(target).unwrap().status, HealthStatus::Healthy);
    }

    #[test]
    fn no_answer_is_unhealthy_with_the_reason() {
        testing::reset();
        testing::on_http(|_| Err(HttpError::Failed("ConnectionRefused".into())));
        let report = check(json!({"url": "http://127.0.0.1:1/", "method": "head"})).unwrap();
        assert_eq!(report.status, HealthStatus::Unhealthy);
        assert_eq!(
            report.message,
            "HEAD http://127.0.0.1:1/ got no answer: ConnectionRefused"
        );
    }

    #[test]
    fn a_refused_host_is_denied() {
        testing::reset();
        let err = check(json!({"url": "http://elsewhere/"})).unwrap_err();
        assert!(
            matches!(&err, PluginError::Denied(m) if m.contains("reach-target")),
            "{err}"
        );
    }

    #[test]
    fn a_target_without_url_or_with_a_bad_field_is_invalid_input() {
        testing::reset();
        for target in [json!(null), json!({}), json!({"host": "web"})] {
            let err = check(target).unwrap_err();
            assert_eq!(
                err,
                PluginError::invalid_input(
                    "no target: set `target.url` (an http:// or https:// URL)"
                )
            );
        }
        for (target, field) in [
            (json!({"url": "ftp://web/"}), "url"),
            (json!({"url": "web/health"}), "url"),
            (json!({"url": 5}), "url"),
            (
                json!({"url": "http://web/", "expectStatus": 42}),
                "expectStatus",
            ),
            (json!({"url": "http://web/", "method": "GE T"}), "method"),
            (json!({"url": "http://web/", "timeoutMs": 0}), "timeoutMs"),
            (
                json!({"url": "http://web/", "timeoutMs": 60000}),
                "timeoutMs",
            ),
            (json!({"url": "http://web/", "expect": 200}), "expect"),
        ] {
            let err = check(target).unwrap_err();
            assert!(
                matches!(&err, PluginError::InvalidInput(m) if m.contains(field)),
                "{field}: {err}"
            );
        }
        assert!(testing::http_requests().is_empty());
    }
}
