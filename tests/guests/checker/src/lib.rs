//! `guest-checker`: a health-check plugin for the host's tests. Its target
//! says what to report (`{"status": "degraded"}`) or how to misbehave
//! (`{"do": "fail" | "trap" | "spin"}`), so each path through the host's
//! call of `check` can be tried. With `{"fetch": URL}` or `{"connect":
//! "HOST:PORT"}` (beside a `url` or `host` and `port` naming its target) it
//! tries to reach that address instead, and reports healthy if it could,
//! unhealthy with the error if not: how the tests see what a call's
//! network grant lets through.

use std::hint::black_box;
use std::net::TcpStream;

use autoagent_sdk::http::Request;

use autoagent_sdk::serde_json::Value;
use autoagent_sdk::{CallContext, HealthCheck, HealthReport, PluginError};

/// The plugin; all behaviour lives in its [`HealthCheck`] implementation.
pub struct Checker;

impl HealthCheck for Checker {
    fn check(ctx: &CallContext, target: Value) -> Result<HealthReport, PluginError> {
        if target["context"].as_bool() == Some(true) {
            return Ok(HealthReport::healthy(context_line(ctx)));
        }
        if let Some(url) = target["fetch"].as_str() {
            return Ok(match Request::get(url).send() {
                Ok(response) => HealthReport::healthy(format!("fetched {}", response.status)),
                Err(err) => HealthReport::unhealthy(format!("fetch: {err}")),
            });
        }
        if let Some(address) = target["connect"].as_str() {
            return Ok(match TcpStream::connect(address) {
                Ok(_) => HealthReport::healthy("connected"),
                Err(err) => HealthReport::unhealthy(format!("connect: {err} ({:?})", err.kind())),
            });
        }
        match (target["status"].as_str(), target["do"].as_str()) {
            (Some("healthy"), _) => {
                Ok(HealthReport::healthy("all good").with_measurement("latency", 1.5, "ms"))
            }
            (Some("degraded"), _) => Ok(HealthReport::degraded("slow")),
            (Some("unhealthy"), _) => Ok(HealthReport::unhealthy("down")),
            (_, Some("fail")) => Err(PluginError::failed("the probe could not run")),
            (_, Some("trap")) => panic!("checker trapped on purpose"),
            (_, Some("spin")) => spin(),
            _ => Err(PluginError::invalid_input(
                "target needs `status` (healthy, degraded, unhealthy) or `do` (fail, trap, spin)",
            )),
        }
    }
}

fn spin() -> ! {
    let mut turns = 0u64;
    loop {
        turns = black_box(turns.wrapping_add(1));
    }
}

autoagent_sdk::export_health_check!(Checker);

/// The call context as one line: team, plugin, call id, worker and subject.
fn context_line(ctx: &CallContext) -> String {
    format!(
        "{} {} {} {:?} {:?}",
        ctx.team, ctx.plugin, ctx.call_id, ctx.worker_id, ctx.subject_id
    )
}
