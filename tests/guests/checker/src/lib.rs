//! `guest-checker`: a health-check plugin for the host's tests. Its target
//! says what to report (`{"status": "degraded"}`) or how to misbehave
//! (`{"do": "fail" | "trap" | "spin"}`), so each path through the host's
//! call of `check` can be tried.

use std::hint::black_box;

use autoagent_sdk::serde_json::Value;
use autoagent_sdk::{CallContext, HealthCheck, HealthReport, PluginError};

/// The plugin; all behaviour lives in its [`HealthCheck`] implementation.
pub struct Checker;

impl HealthCheck for Checker {
    fn check(_ctx: &CallContext, target: Value) -> Result<HealthReport, PluginError> {
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
