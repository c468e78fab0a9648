//! `guest-echo`: a well-behaved capability plugin for the host's tests.
//!
//! Each capability exercises one path through the host: `echo` the JSON
//! round trip, `ping` the cheapest possible call (the benchmark's), `fail` a
//! plugin-reported error, and `kv_roundtrip` the key-value imports.

use autoagent_sdk::serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

use autoagent_sdk::{
    CallContext, Capability, CapabilityInfo, PluginError, commands, config, http, kv,
};

/// Counts calls within one instance. The host gives every call a fresh
/// instance, so `counter` must always answer 1.
static CALLS: AtomicU64 = AtomicU64::new(0);

/// The plugin; all behaviour lives in its [`Capability`] implementation.
pub struct Echo;

impl Capability for Echo {
    fn describe() -> Vec<CapabilityInfo> {
        vec![
            CapabilityInfo::new("echo", "Returns its input unchanged"),
            CapabilityInfo::new("ping", "Returns {\"pong\":true}"),
            CapabilityInfo::new("context", "Returns the call context it was given"),
            CapabilityInfo::new("fail", "Always fails with a plugin error"),
            CapabilityInfo::new("counter", "Counts calls seen by this instance"),
            CapabilityInfo::new("config", "Reads config key input.key"),
            CapabilityInfo::new(
                "run",
                "Runs input.program with input.args; returns status, stdout and stderr",
            ),
            CapabilityInfo::new("kv_get", "Reads input.key from key-value state"),
            CapabilityInfo::new(
                "tally",
                "Adds one to the count under input.key in key-value state and returns it",
            ),
            CapabilityInfo::new("gate", "Fails unless input.key is true in key-value state"),
            CapabilityInfo::new(
                "fetch",
                "Sends input.method (default GET) to input.url with input.body; returns status and body",
            ),
            CapabilityInfo::new(
                "kv_roundtrip",
                "Writes input.value under input.key, reads it back and returns it",
            ),
        ]
    }

    fn invoke(ctx: &CallContext, capability: &str, input: Value) -> Result<Value, PluginError> {
        match capability {
            "context" => Ok(json!({
                "team": ctx.team,
                "plugin": ctx.plugin,
                "callId": ctx.call_id,
                "workerId": ctx.worker_id,
                "subjectId": ctx.subject_id,
            })),
            "echo" => Ok(input),
            "ping" => Ok(json!({ "pong": true })),
            "fail" => Err(PluginError::failed("failed on purpose")),
            "kv_roundtrip" => kv_roundtrip(&input),
            "fetch" => fetch(&input),
            "kv_get" => {
                let key = input.get("key").and_then(Value::as_str).unwrap_or_default();
                Ok(kv::get_json::<Value>(key)?.unwrap_or(Value::Null))
            }
            "counter" => Ok(json!(CALLS.fetch_add(1, Ordering::SeqCst) + 1)),
            "tally" => {
                // Counts its calls per key in the plugin's state, so a test
                // can tell how often an action really ran.
                let key = input.get("key").and_then(Value::as_str).unwrap_or("tally");
                let count = kv::get_json::<u64>(key)?.unwrap_or(0) + 1;
                kv::set_json(key, &count)?;
                Ok(json!({ "key": key, "count": count }))
            }
            "gate" => {
                // Fails until a test opens the gate (sets the key to true).
                let key = input.get("key").and_then(Value::as_str).unwrap_or("gate");
                match kv::get_json::<bool>(key)? {
                    Some(true) => Ok(json!({ "open": true })),
                    _ => Err(PluginError::failed(format!("gate {key:?} is closed"))),
                }
            }
            "config" => {
                let key = input.get("key").and_then(Value::as_str).unwrap_or_default();
                Ok(json!(config::get(key)?))
            }
            "run" => {
                let program = input
                    .get("program")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let args: Vec<&str> = input
                    .get("args")
                    .and_then(Value::as_array)
                    .map(|args| args.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let output = commands::run(program, &args)?;
                Ok(json!({
                    "status": output.status,
                    "stdout": output.stdout_text(),
                    "stdoutBytes": output.stdout.len(),
                    "stderr": output.stderr_text(),
                }))
            }
            other => Err(PluginError::unknown_capability(other)),
        }
    }
}

/// Sends one HTTP request as `input` describes and reports the answer.
fn fetch(input: &Value) -> Result<Value, PluginError> {
    let text = |key: &str| input.get(key).and_then(Value::as_str);
    let url = text("url").ok_or_else(|| PluginError::invalid_input("`url` is required"))?;
    let request = http::Request::new(text("method").unwrap_or("GET"), url)
        .header("x-plugin", "echo")
        .body(text("body").unwrap_or_default());
    let response = request.send()?;
    Ok(json!({
        "status": response.status,
        "body": response.text(),
        "contentType": response.header("content-type"),
    }))
}

/// Sets `input.key` (default `roundtrip`) to `input.value` (default the whole
/// input), then reads it back, so a test sees what the store really kept.
fn kv_roundtrip(input: &Value) -> Result<Value, PluginError> {
    let key = input
        .get("key")
        .and_then(Value::as_str)
        .unwrap_or("roundtrip");
    let value = input.get("value").unwrap_or(input);
    kv::set_json(key, value)?;
    let stored: Option<Value> = kv::get_json(key)?;
    let stored = stored.ok_or_else(|| {
        PluginError::failed(format!("`{key}` was written but reads back as missing"))
    })?;
    Ok(json!({ "key": key, "value": stored }))
}

autoagent_sdk::export_capability!(Echo);

#[cfg(test)]
mod tests {
    use autoagent_sdk::testing;

    use super::*;

    fn call(capability: &str, input: Value) -> Result<Value, PluginError> {
        Echo::invoke(&testing::context(), capability, input)
    }

    #[test]
    fn echo_returns_input_unchanged() {
        testing::reset();
        let input = json!({ "a": [1, 2, { "b": null }], "c": "d" });
        assert_eq!(call("echo", input.clone()).unwrap(), input);
    }

    #[test]
    fn ping_pongs() {
        testing::reset();
        assert_eq!(call("ping", Value::Null).unwrap(), json!({ "pong": true }));
    }

    #[test]
    fn fail_fails() {
        testing::reset();
        assert_eq!(
            call("fail", Value::Null),
            Err(PluginError::failed("failed on purpose"))
        );
    }

    #[test]
    fn kv_roundtrip_reads_back_what_it_wrote() {
        testing::reset();
        let out = call("kv_roundtrip", json!({ "key": "k", "value": { "n": 1 } })).unwrap();
        assert_eq!(out, json!({ "key": "k", "value": { "n": 1 } }));
        assert_eq!(testing::kv_entries()["k"], br#"{"n":1}"#);
    }

    #[test]
    fn kv_roundtrip_reports_quota() {
        testing::reset();
        testing::set_kv_quota(Some(4));
        assert!(matches!(
            call("kv_roundtrip", json!({ "value": "too long" })),
            Err(PluginError::Denied(_))
        ));
    }

    #[test]
    fn unknown_capability_is_unsupported() {
        testing::reset();
        assert!(matches!(
            call("nope", Value::Null),
            Err(PluginError::Unsupported(_))
        ));
    }
}
