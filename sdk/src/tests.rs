//! Native tests of the helpers, the export glue and the test host.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::commands::CommandOutput;
use crate::kv::KvError;
use crate::log::Level;
use crate::testing;
use crate::*;

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Input {
    todo_id: String,
    assignee: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

#[test]
fn from_input_parses_typed_input() {
    let input: Input = from_input(json!({ "todoId": "todo_1", "assignee": "kim" })).unwrap();
    assert_eq!(
        input,
        Input {
            todo_id: "todo_1".into(),
            assignee: Some("kim".into()),
            tags: vec![]
        }
    );
}

#[test]
fn from_input_names_the_field_of_a_type_mismatch() {
    let err = from_input::<Input>(json!({ "todoId": "todo_1", "assignee": 5 })).unwrap_err();
    assert_eq!(
        err,
        PluginError::invalid_input(
            "field `assignee`: invalid type: integer `5`, expected a string"
        )
    );
    let err = from_input::<Input>(json!({ "todoId": "t", "tags": ["a", 1] })).unwrap_err();
    assert!(err.message().starts_with("field `tags[1]`:"), "{err}");
}

#[test]
fn from_input_names_a_missing_field() {
    let err = from_input::<Input>(json!({})).unwrap_err();
    assert_eq!(err, PluginError::invalid_input("missing field `todoId`"));
}

#[test]
fn from_input_rejects_the_wrong_root_type() {
    let err = from_input::<Input>(json!([1])).unwrap_err();
    assert!(matches!(err, PluginError::InvalidInput(_)), "{err}");
}

#[test]
fn to_output_serializes_and_reports_what_json_cannot_hold() {
    let input = Input {
        todo_id: "todo_1".into(),
        assignee: None,
        tags: vec!["x".into()],
    };
    assert_eq!(
        to_output(&input).unwrap(),
        json!({ "todoId": "todo_1", "assignee": null, "tags": ["x"] })
    );
    let mut bad = std::collections::HashMap::new();
    bad.insert((1, 2), 3);
    assert!(matches!(to_output(&bad), Err(PluginError::Failed(_))));
}

#[test]
fn plugin_error_constructors_and_display() {
    assert_eq!(
        PluginError::invalid_input("x"),
        PluginError::InvalidInput("x".into())
    );
    assert_eq!(
        PluginError::unsupported("x"),
        PluginError::Unsupported("x".into())
    );
    assert_eq!(PluginError::failed("x"), PluginError::Failed("x".into()));
    assert_eq!(PluginError::denied("x"), PluginError::Denied("x".into()));
    assert_eq!(
        PluginError::unknown_capability("fly").to_string(),
        "unsupported: unknown capability `fly`"
    );
    assert_eq!(PluginError::failed("boom").to_string(), "failed: boom");
    assert_eq!(PluginError::denied("no").message(), "no");
    let boxed: Box<dyn std::error::Error> = Box::new(PluginError::failed("e"));
    assert_eq!(boxed.to_string(), "failed: e");
}

#[test]
fn kv_errors_convert_to_denied_or_failed() {
    let denied: PluginError = KvError::Denied("no grant".into()).into();
    assert!(matches!(denied, PluginError::Denied(m) if m.contains("no grant")));
    let quota: PluginError = KvError::QuotaExceeded("full".into()).into();
    assert!(matches!(quota, PluginError::Denied(m) if m.contains("quota")));
    let storage: PluginError = KvError::Storage("disk".into()).into();
    assert!(matches!(storage, PluginError::Failed(_)));
    let json: PluginError = KvError::Json("bad".into()).into();
    assert!(matches!(json, PluginError::Failed(_)));
}

#[test]
fn report_builders() {
    let report = HealthReport::degraded("slow").with_measurement("latency", 250.0, "ms");
    assert_eq!(report.status, HealthStatus::Degraded);
    assert_eq!(
        report.measurements,
        [Measurement::new("latency", 250.0, "ms")]
    );
    assert_eq!(HealthReport::healthy("ok").status, HealthStatus::Healthy);
    assert_eq!(
        HealthReport::unhealthy("down").status,
        HealthStatus::Unhealthy
    );
    assert_eq!(
        RecoveryReport::recovered("r").outcome,
        RecoveryOutcome::Recovered
    );
    assert_eq!(
        RecoveryReport::not_recovered("n").outcome,
        RecoveryOutcome::NotRecovered
    );
    assert_eq!(
        RecoveryReport::escalate("e").outcome,
        RecoveryOutcome::Escalate
    );
    let ctx = CallContext::new("core", "todo", "call_1")
        .with_worker("w1")
        .with_subject("task_1");
    assert_eq!(ctx.worker_id.as_deref(), Some("w1"));
    assert_eq!(ctx.subject_id.as_deref(), Some("task_1"));
}

// The test host.

#[test]
fn kv_set_get_delete_list() {
    testing::reset();
    kv::set("b/1", b"one").unwrap();
    kv::set("a", b"zero").unwrap();
    kv::set("b/2", b"two").unwrap();
    assert_eq!(kv::get("b/1").unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(kv::get("missing").unwrap(), None);
    assert_eq!(kv::list_keys("b/").unwrap(), ["b/1", "b/2"]);
    assert_eq!(kv::list_keys("").unwrap(), ["a", "b/1", "b/2"]);
    kv::delete("b/1").unwrap();
    kv::delete("never-there").unwrap();
    assert_eq!(kv::list_keys("b/").unwrap(), ["b/2"]);
    assert_eq!(testing::kv_entries().len(), 2);
}

#[test]
fn kv_json_helpers_round_trip_and_report_corrupt_values() {
    testing::reset();
    kv::set_json("n", &json!({ "n": 1 })).unwrap();
    assert_eq!(kv::get_json::<Value>("n").unwrap(), Some(json!({ "n": 1 })));
    assert_eq!(kv::get_json::<Value>("absent").unwrap(), None);
    kv::set("n", b"not json").unwrap();
    let err = kv::get_json::<Value>("n").unwrap_err();
    assert!(
        matches!(&err, KvError::Json(m) if m.contains("`n`")),
        "{err}"
    );
}

#[test]
fn kv_quota_counts_keys_and_values_and_replacements() {
    testing::reset();
    testing::set_kv_quota(Some(10));
    kv::set("ab", b"cdef").unwrap(); // 6 bytes
    assert_eq!(testing::kv_used_bytes(), 6);
    // Replacing a value counts the new size only.
    kv::set("ab", b"cdefghij").unwrap(); // 10 bytes
    let err = kv::set("x", b"").unwrap_err();
    assert!(
        matches!(&err, KvError::QuotaExceeded(m) if m.contains("11 of 10")),
        "{err}"
    );
    assert_eq!(kv::get("x").unwrap(), None, "nothing written over quota");
    kv::delete("ab").unwrap();
    kv::set("x", b"").unwrap();
    testing::set_kv_quota(None);
    kv::set("big", &[0; 100]).unwrap();
}

#[test]
fn kv_over_quota_may_still_shrink() {
    testing::reset();
    kv::set("k", &[0; 20]).unwrap();
    testing::set_kv_quota(Some(10));
    assert!(matches!(
        kv::set("k", &[0; 21]),
        Err(KvError::QuotaExceeded(_))
    ));
    kv::set("k", &[0; 15]).unwrap();
    assert_eq!(testing::kv_used_bytes(), 16);
}

#[test]
fn kv_refuses_empty_and_long_keys() {
    testing::reset();
    assert!(matches!(kv::set("", b"v"), Err(KvError::Denied(_))));
    assert!(matches!(kv::get(""), Err(KvError::Denied(_))));
    let long = "k".repeat(kv::MAX_KEY_BYTES + 1);
    assert!(matches!(kv::set(&long, b"v"), Err(KvError::Denied(_))));
    kv::set(&long[1..], b"v").unwrap();
}

#[test]
fn kv_can_be_denied_or_failed_and_reset_restores_it() {
    testing::reset();
    kv::set("k", b"v").unwrap();
    testing::deny_kv();
    assert!(matches!(kv::get("k"), Err(KvError::Denied(_))));
    assert!(matches!(kv::set("k", b"v"), Err(KvError::Denied(_))));
    assert!(matches!(kv::delete("k"), Err(KvError::Denied(_))));
    assert!(matches!(kv::list_keys(""), Err(KvError::Denied(_))));
    testing::fail_kv(Some(KvError::Storage("disk full".into())));
    assert_eq!(kv::get("k"), Err(KvError::Storage("disk full".into())));
    testing::fail_kv(None);
    assert_eq!(kv::get("k").unwrap().as_deref(), Some(&b"v"[..]));
    testing::reset();
    assert_eq!(kv::get("k").unwrap(), None);
}

#[test]
fn config_grants_values_and_denies_the_rest() {
    testing::reset();
    testing::set_config("url", "http://localhost");
    testing::grant_config("optional");
    assert_eq!(
        config::get("url").unwrap().as_deref(),
        Some("http://localhost")
    );
    assert_eq!(config::get("optional").unwrap(), None);
    assert!(matches!(config::get("secret"), Err(PluginError::Denied(m)) if m.contains("`secret`")));
}

#[test]
fn logs_are_captured_with_fields() {
    testing::reset();
    log::trace("t");
    log::debug("d");
    log::info("i");
    log::warn("w");
    log::error(String::from("e"));
    log::log(Level::Info, "todo created", &[("todoId", "todo_1")]);
    let lines = testing::logs();
    let levels: Vec<Level> = lines.iter().map(|l| l.level).collect();
    assert_eq!(
        levels,
        [
            Level::Trace,
            Level::Debug,
            Level::Info,
            Level::Warn,
            Level::Error,
            Level::Info
        ]
    );
    assert_eq!(lines[5].field("todoId"), Some("todo_1"));
    assert_eq!(lines[5].field("other"), None);
    assert_eq!(testing::take_logs().len(), 6);
    assert!(testing::logs().is_empty());
    assert_eq!(Level::Warn.as_str(), "WARN");
}

#[test]
fn commands_are_refused_by_default_and_recorded() {
    testing::reset();
    let err = commands::run("systemctl", &["restart", "web"]).unwrap_err();
    assert!(
        matches!(&err, PluginError::Failed(m) if m.contains("systemctl")),
        "{err}"
    );
    assert_eq!(testing::command_calls()[0].args, ["restart", "web"]);
}

#[test]
fn commands_use_the_installed_handler() {
    testing::reset();
    testing::on_command(|program, args| {
        // A handler may use the test host itself.
        log::info(format!("ran {program}"));
        Ok(CommandOutput {
            status: if args.first().map(String::as_str) == Some("ok") {
                0
            } else {
                3
            },
            stdout: b"out".to_vec(),
            stderr: b"err \xff".to_vec(),
        })
    });
    let ok = commands::run("svc", &["ok"]).unwrap();
    assert!(ok.success());
    assert_eq!(ok.stdout_text(), "out");
    let bad = commands::run("svc", &["bad"]).unwrap();
    assert!(!bad.success());
    assert_eq!(bad.stderr_text(), "err \u{fffd}");
    assert_eq!(testing::command_calls().len(), 2);
    assert_eq!(testing::logs()[0].message, "ran svc");
}

// The glue the export macros call.

struct Echo;

impl Capability for Echo {
    fn describe() -> Vec<CapabilityInfo> {
        vec![CapabilityInfo::new("echo", "echoes")]
    }

    fn invoke(ctx: &CallContext, capability: &str, input: Value) -> Result<Value, PluginError> {
        match capability {
            "echo" => Ok(input),
            "whoami" => Ok(json!([ctx.team, ctx.plugin, ctx.call_id])),
            other => Err(PluginError::unknown_capability(other)),
        }
    }
}

crate::export_capability!(Echo);

#[test]
fn invoke_glue_parses_input_and_prints_output() {
    let ctx = testing::context();
    assert_eq!(
        __private::invoke::<Echo>(&ctx, "echo", r#"{"a": [1, "b"]}"#).unwrap(),
        r#"{"a":[1,"b"]}"#
    );
    assert_eq!(
        __private::invoke::<Echo>(&ctx, "echo", "  ").unwrap(),
        "null"
    );
    assert_eq!(
        __private::invoke::<Echo>(&ctx, "whoami", "null").unwrap(),
        r#"["test","test","call_test"]"#
    );
    let err = __private::invoke::<Echo>(&ctx, "echo", "{not json").unwrap_err();
    assert!(
        matches!(&err, PluginError::InvalidInput(m) if m.starts_with("input is not valid JSON")),
        "{err}"
    );
    assert!(matches!(
        __private::invoke::<Echo>(&ctx, "fly", "{}"),
        Err(PluginError::Unsupported(_))
    ));
}

struct Ping;

impl HealthCheck for Ping {
    fn check(_ctx: &CallContext, target: Value) -> Result<HealthReport, PluginError> {
        match target["up"].as_bool() {
            Some(true) => Ok(HealthReport::healthy("up")),
            Some(false) => Ok(HealthReport::unhealthy("down")),
            None => Err(PluginError::invalid_input("target needs `up`")),
        }
    }
}

crate::export_health_check!(Ping);

#[test]
fn check_glue_parses_the_target() {
    let ctx = testing::context();
    assert_eq!(
        __private::check::<Ping>(&ctx, r#"{"up":true}"#)
            .unwrap()
            .status,
        HealthStatus::Healthy
    );
    assert!(
        matches!(__private::check::<Ping>(&ctx, "{"), Err(PluginError::InvalidInput(m)) if m.starts_with("target"))
    );
    assert!(matches!(
        __private::check::<Ping>(&ctx, "{}"),
        Err(PluginError::InvalidInput(_))
    ));
}

struct Restart;

impl RecoveryStrategy for Restart {
    fn recover(_ctx: &CallContext, incident: &Incident) -> Result<RecoveryReport, PluginError> {
        if incident.stage > 0 {
            return Ok(RecoveryReport::escalate("second stage"));
        }
        Ok(RecoveryReport::recovered(format!(
            "{} {} {} {}",
            incident.id, incident.severity, incident.target["service"], incident.config["unit"]
        )))
    }
}

crate::export_recovery_strategy!(Restart);

#[test]
fn recover_glue_builds_the_incident() {
    let ctx = testing::context();
    let text = |stage: u32, target: &str, config: &str| __private::IncidentText {
        id: "incident_1".into(),
        check_id: "check_1".into(),
        severity: "high".into(),
        stage,
        summary: "down".into(),
        target: target.into(),
        config: config.into(),
    };
    let report = __private::recover::<Restart>(
        &ctx,
        text(0, r#"{"service":"web"}"#, r#"{"unit":"web.service"}"#),
    )
    .unwrap();
    assert_eq!(
        report,
        RecoveryReport::recovered(r#"incident_1 high "web" "web.service""#)
    );
    let err = __private::recover::<Restart>(&ctx, text(1, "nope", "{}")).unwrap_err();
    assert!(
        matches!(&err, PluginError::InvalidInput(m) if m.starts_with("incident target")),
        "{err}"
    );
    let err = __private::recover::<Restart>(&ctx, text(0, "{}", "{")).unwrap_err();
    assert!(
        matches!(&err, PluginError::InvalidInput(m) if m.starts_with("incident config")),
        "{err}"
    );
}
