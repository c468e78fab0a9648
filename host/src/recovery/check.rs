//! What a health check is, and the rules a new or changed one must meet.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rules::{CheckResult, CheckState};
use super::{RecoveryError, Severity};
use crate::clock::Timestamp;
use crate::names::Name;

/// Shortest interval between two runs of a check, in milliseconds.
pub const MIN_INTERVAL_MS: u64 = 100;
/// Longest interval, timeout, delay or wait, in milliseconds (one day).
pub const MAX_DURATION_MS: u64 = 86_400_000;
/// Most consecutive results a threshold may ask for.
pub const MAX_THRESHOLD: u32 = 100;
/// Most recovery stages of one check.
pub const MAX_STAGES: usize = 10;
/// Most checks one check may depend on.
pub const MAX_DEPENDENCIES: usize = 16;
/// Most characters of a check's display name.
pub const MAX_DISPLAY_NAME: usize = 200;
/// Largest target or stage configuration, in bytes of JSON.
pub const MAX_CONFIG_BYTES: usize = 16 * 1024;

/// A health check: what is probed, how often, when it counts as down, and
/// how it is repaired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// Unique id, chosen by whoever registers it.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The health-check plugin that probes: the team's, else `core`'s
    /// (`http`, `tcp` and `service` are bundled).
    #[serde(rename = "type")]
    pub kind: String,
    /// Owning team; its plugins (and `core`'s) run the probes and stages.
    pub team: String,
    /// Milliseconds from the start of one run to the start of the next.
    pub interval: u64,
    /// Milliseconds one probe may take; past it the probe fails.
    pub timeout: u64,
    /// Consecutive failures that open an incident.
    pub threshold: u32,
    /// Consecutive passes that call the service healthy again.
    pub success_threshold: u32,
    /// Milliseconds from registration (or host start) to the first run.
    pub initial_delay: u64,
    /// The severity of its incidents.
    pub severity: Severity,
    /// What the plugin probes (a URL, a host and port, a process name);
    /// without one the check has nothing to probe and reports so.
    #[schema(value_type = Option<Object>)]
    pub target: Option<Value>,
    /// Checks this one depends on: while one of them fails, this check's
    /// incident is `suppressed` and no recovery runs for it.
    pub depends_on: Vec<String>,
    /// Recovery stages, tried in order.
    pub recovery: Vec<Stage>,
    /// How many stages may run in a window.
    pub budget: Budget,
    /// When it was registered.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// One recovery stage: a strategy plugin, its configuration, and how long
/// to wait before checking again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    /// The recovery-strategy plugin: the team's, else `core`'s (`command`,
    /// `webhook` and `wait` are bundled).
    pub strategy: String,
    /// Handed to the strategy as the incident's `config`.
    #[schema(value_type = Object)]
    pub config: Value,
    /// Milliseconds from the stage's end to the re-check.
    pub wait_ms: u64,
}

/// A check's restart budget: at most `maxRuns` stages in `windowMs`; after
/// `refillAfterMs` of steady health the budget is full again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// Stages that may run in one window.
    pub max_runs: u32,
    /// The window, in milliseconds.
    pub window_ms: u64,
    /// Milliseconds of passing results after which the budget is full.
    pub refill_after_ms: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_runs: 5,
            window_ms: 3_600_000,
            refill_after_ms: 600_000,
        }
    }
}

/// The body of `POST /health-checks` and `PUT /health-checks/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewHealthCheck {
    /// Unique id (on `PUT`, if given, the path's id).
    #[schema(value_type = Option<String>)]
    pub id: Option<Name>,
    /// Display name.
    pub name: String,
    /// The health-check plugin, e.g. `http`, `tcp`, `service`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: Name,
    /// Milliseconds between runs (at least 100).
    pub interval: u64,
    /// Milliseconds a probe may take (at most the interval).
    pub timeout: u64,
    /// Consecutive failures that open an incident (1 to 100).
    pub threshold: u32,
    /// Consecutive passes that call it healthy again (default 1).
    pub success_threshold: Option<u32>,
    /// Milliseconds before the first run (default 0).
    pub initial_delay: Option<u64>,
    /// `critical`, `high` (default) or `medium`.
    pub severity: Option<Severity>,
    /// What to probe; a JSON object.
    #[schema(value_type = Option<Object>)]
    pub target: Option<Value>,
    /// Ids of checks of the same team this one depends on.
    #[schema(value_type = Option<Vec<String>>)]
    pub depends_on: Option<Vec<Name>>,
    /// Owning team (default: the caller's).
    #[schema(value_type = Option<String>)]
    pub team: Option<Name>,
    /// Recovery stages, in order.
    pub recovery: Option<Vec<NewStage>>,
    /// The restart budget.
    pub budget: Option<NewBudget>,
}

/// A stage as registered.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewStage {
    /// The recovery-strategy plugin.
    #[schema(value_type = String)]
    pub strategy: Name,
    /// Its configuration; a JSON object (default `{}`).
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    /// Milliseconds before the re-check (default: the check's interval).
    pub wait_ms: Option<u64>,
}

/// A budget as registered; what is left out keeps its default.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewBudget {
    /// Stages per window (default 5).
    pub max_runs: Option<u32>,
    /// The window in milliseconds (default one hour).
    pub window_ms: Option<u64>,
    /// Steady health that refills it, in milliseconds (default ten minutes).
    pub refill_after_ms: Option<u64>,
}

impl NewHealthCheck {
    /// Checks every field on its own and builds the check of `team` with id
    /// `id`. What depends on other checks (existence, team, cycles) is
    /// checked by the caller, which sees them.
    pub fn build(self, id: Name, team: Name, now: Timestamp) -> Result<HealthCheck, RecoveryError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > MAX_DISPLAY_NAME {
            return Err(RecoveryError::invalid(
                "name",
                format!("must be 1 to {MAX_DISPLAY_NAME} characters"),
            ));
        }
        duration("interval", self.interval, MIN_INTERVAL_MS)?;
        duration("timeout", self.timeout, 1)?;
        if self.timeout > self.interval {
            return Err(RecoveryError::invalid(
                "timeout",
                format!(
                    "is {} ms, longer than the interval ({} ms)",
                    self.timeout, self.interval
                ),
            ));
        }
        threshold("threshold", self.threshold)?;
        let success_threshold = self.success_threshold.unwrap_or(1);
        threshold("successThreshold", success_threshold)?;
        let initial_delay = self.initial_delay.unwrap_or(0);
        duration("initialDelay", initial_delay, 0)?;
        if let Some(target) = &self.target {
            config_object("target", target)?;
        }
        let depends_on = self.depends_on.unwrap_or_default();
        if depends_on.len() > MAX_DEPENDENCIES {
            return Err(RecoveryError::invalid(
                "dependsOn",
                format!("names more than {MAX_DEPENDENCIES} checks"),
            ));
        }
        if depends_on.contains(&id) {
            return Err(RecoveryError::invalid(
                "dependsOn",
                format!("names the check itself ({id})"),
            ));
        }
        let mut parents: Vec<String> = Vec::new();
        for parent in depends_on {
            if !parents.iter().any(|p| p == parent.as_str()) {
                parents.push(parent.into());
            }
        }
        let stages = self.recovery.unwrap_or_default();
        if stages.len() > MAX_STAGES {
            return Err(RecoveryError::invalid(
                "recovery",
                format!("has more than {MAX_STAGES} stages"),
            ));
        }
        let mut recovery = Vec::with_capacity(stages.len());
        for (n, stage) in stages.into_iter().enumerate() {
            let config = stage
                .config
                .unwrap_or_else(|| Value::Object(Default::default()));
            config_object(&format!("recovery[{n}].config"), &config)?;
            let wait_ms = stage.wait_ms.unwrap_or(self.interval);
            duration(&format!("recovery[{n}].waitMs"), wait_ms, 0)?;
            recovery.push(Stage {
                strategy: stage.strategy.into(),
                config,
                wait_ms,
            });
        }
        let budget = {
            let asked = self.budget;
            let default = Budget::default();
            let budget = Budget {
                max_runs: asked.and_then(|b| b.max_runs).unwrap_or(default.max_runs),
                window_ms: asked.and_then(|b| b.window_ms).unwrap_or(default.window_ms),
                refill_after_ms: asked
                    .and_then(|b| b.refill_after_ms)
                    .unwrap_or(default.refill_after_ms),
            };
            if !(1..=1000).contains(&budget.max_runs) {
                return Err(RecoveryError::invalid(
                    "budget.maxRuns",
                    "must be 1 to 1000",
                ));
            }
            duration("budget.windowMs", budget.window_ms, 1)?;
            duration("budget.refillAfterMs", budget.refill_after_ms, 1)?;
            budget
        };
        Ok(HealthCheck {
            id: id.into(),
            name: name.to_owned(),
            kind: self.kind.into(),
            team: team.into(),
            interval: self.interval,
            timeout: self.timeout,
            threshold: self.threshold,
            success_threshold,
            initial_delay,
            severity: self.severity.unwrap_or(Severity::High),
            target: self.target,
            depends_on: parents,
            recovery,
            budget,
            created_at: now,
            updated_at: now,
        })
    }
}

fn duration(field: &str, ms: u64, min: u64) -> Result<(), RecoveryError> {
    if ms < min || ms > MAX_DURATION_MS {
        return Err(RecoveryError::invalid(
            field,
            format!("is {ms} ms; it must be {min} to {MAX_DURATION_MS} (one day)"),
        ));
    }
    Ok(())
}

fn threshold(field: &str, n: u32) -> Result<(), RecoveryError> {
    if !(1..=MAX_THRESHOLD).contains(&n) {
        return Err(RecoveryError::invalid(
            field,
            format!("is {n}; it must be 1 to {MAX_THRESHOLD}"),
        ));
    }
    Ok(())
}

fn config_object(field: &str, value: &Value) -> Result<(), RecoveryError> {
    if !value.is_object() {
        return Err(RecoveryError::invalid(field, "must be a JSON object"));
    }
    if value.to_string().len() > MAX_CONFIG_BYTES {
        return Err(RecoveryError::invalid(
            field,
            format!("is larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// A check as `GET /health-checks/{id}` shows it: its definition and where
/// it stands.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckView {
    /// The definition.
    #[serde(flatten)]
    pub check: HealthCheck,
    /// Where it stands.
    pub state: CheckState,
    /// Failures in a row, up to the latest result.
    pub consecutive_failures: u32,
    /// Passes in a row, up to the latest result.
    pub consecutive_successes: u32,
    /// Whether it changes state too often (see the README's rule).
    pub flapping: bool,
    /// The latest results, oldest first (at most 21).
    pub recent_results: Vec<CheckResult>,
    /// When it runs next; none while a recovery re-checks it.
    pub next_run: Option<Timestamp>,
    /// Its open incident, if any.
    pub open_incident: Option<String>,
    /// Stages it may still run in the budget's window.
    pub budget_left: u32,
}

/// Filters and paging of `GET /health-checks`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CheckQuery {
    /// Only checks of this team.
    pub team: Option<Name>,
    /// Only checks in this state.
    pub state: Option<CheckState>,
    /// Page size (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// Where the page starts: the `nextCursor` of the page before.
    pub cursor: Option<Name>,
}

/// One page of checks, in id order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckPage {
    /// The checks.
    pub items: Vec<CheckView>,
    /// The page size used.
    pub limit: usize,
    /// Where the next page starts; none on the last page.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guide_body() -> NewHealthCheck {
        serde_json::from_value(serde_json::json!({
            "id": "custom_service_check",
            "name": "커스텀 서비스 확인",
            "type": "service",
            "interval": 30000,
            "timeout": 10000,
            "threshold": 3
        }))
        .unwrap()
    }

    fn build(new: NewHealthCheck) -> Result<HealthCheck, RecoveryError> {
        let id = new.id.clone().unwrap();
        new.build(id, Name::from_static("default"), Timestamp::EARLIEST)
    }

    #[test]
    fn the_guide_body_registers_with_defaults_and_no_target() {
        let check = build(guide_body()).unwrap();
        assert_eq!(check.kind, "service");
        assert_eq!(check.severity, Severity::High);
        assert_eq!(check.success_threshold, 1);
        assert_eq!(check.target, None);
        assert!(check.recovery.is_empty());
        assert_eq!(check.budget, Budget::default());
    }

    #[test]
    fn each_bad_field_is_named() {
        type Spoil = Box<dyn Fn(&mut NewHealthCheck)>;
        let cases: Vec<(&str, Spoil)> = vec![
            ("interval", Box::new(|c| c.interval = 5)),
            ("timeout", Box::new(|c| c.timeout = 40_000)),
            ("threshold", Box::new(|c| c.threshold = 0)),
            (
                "successThreshold",
                Box::new(|c| c.success_threshold = Some(101)),
            ),
            ("name", Box::new(|c| c.name = "  ".into())),
            (
                "target",
                Box::new(|c| c.target = Some(serde_json::json!([1]))),
            ),
            (
                "dependsOn",
                Box::new(|c| {
                    c.depends_on = Some(vec![Name::parse("custom_service_check").unwrap()])
                }),
            ),
            (
                "recovery[0].config",
                Box::new(|c| {
                    c.recovery = Some(vec![NewStage {
                        strategy: Name::from_static("command"),
                        config: Some(serde_json::json!("restart")),
                        wait_ms: None,
                    }])
                }),
            ),
            (
                "budget.maxRuns",
                Box::new(|c| {
                    c.budget = Some(NewBudget {
                        max_runs: Some(0),
                        window_ms: None,
                        refill_after_ms: None,
                    })
                }),
            ),
        ];
        for (field, spoil) in cases {
            let mut body = guide_body();
            spoil(&mut body);
            match build(body) {
                Err(RecoveryError::Invalid { field: named, .. }) => assert_eq!(named, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
