//! Plain Rust mirrors of the WIT types in `autoagent:plugin/types`.
//!
//! Plugin code only ever sees these; the export macros convert between them
//! and the types `wit_bindgen` generates in the plugin's crate, so a plugin's
//! logic compiles and runs natively without any bindings.

use std::error::Error;
use std::fmt;

use serde_json::Value;

/// Who is calling a plugin and on whose behalf. Passed to every export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallContext {
    /// Team that owns the plugin being called.
    pub team: String,
    /// Name of the plugin being called.
    pub plugin: String,
    /// Unique id of this call; the host logs it with every line the call causes.
    pub call_id: String,
    /// Worker on whose behalf the call runs, if any.
    pub worker_id: Option<String>,
    /// Task, plan, execution or incident the call serves, if any.
    pub subject_id: Option<String>,
}

impl CallContext {
    /// A context for `team`'s plugin `plugin` in call `call_id`, with no worker or subject.
    pub fn new(
        team: impl Into<String>,
        plugin: impl Into<String>,
        call_id: impl Into<String>,
    ) -> Self {
        Self {
            team: team.into(),
            plugin: plugin.into(),
            call_id: call_id.into(),
            worker_id: None,
            subject_id: None,
        }
    }

    /// Sets the worker the call runs for.
    #[must_use]
    pub fn with_worker(mut self, worker_id: impl Into<String>) -> Self {
        self.worker_id = Some(worker_id.into());
        self
    }

    /// Sets the task, plan, execution or incident the call serves.
    #[must_use]
    pub fn with_subject(mut self, subject_id: impl Into<String>) -> Self {
        self.subject_id = Some(subject_id.into());
        self
    }
}

/// A failure reported by the plugin itself.
///
/// Traps, timeouts and memory exhaustion never appear here: the host detects
/// those on its own. Returning an error is the polite way to fail a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// The input did not have the shape the export expects.
    InvalidInput(String),
    /// The plugin does not offer what was asked (an unknown capability).
    Unsupported(String),
    /// The work was attempted and failed; a later retry may succeed.
    Failed(String),
    /// A host import refused the plugin (permission, quota).
    Denied(String),
}

impl PluginError {
    /// The input did not have the expected shape.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    /// The plugin does not offer what was asked.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::Unsupported(message.into())
    }

    /// The plugin was asked for a capability it does not have; the usual
    /// fallback arm of a capability plugin's `match`.
    pub fn unknown_capability(capability: &str) -> Self {
        Self::Unsupported(format!("unknown capability `{capability}`"))
    }

    /// The work was attempted and failed.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }

    /// A host import refused the plugin.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::Denied(message.into())
    }

    /// The message without the kind prefix that `Display` adds.
    pub fn message(&self) -> &str {
        match self {
            Self::InvalidInput(m) | Self::Unsupported(m) | Self::Failed(m) | Self::Denied(m) => m,
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Self::Unsupported(m) => write!(f, "unsupported: {m}"),
            Self::Failed(m) => write!(f, "failed: {m}"),
            Self::Denied(m) => write!(f, "denied: {m}"),
        }
    }
}

impl Error for PluginError {}

/// One capability offered by a capability plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityInfo {
    /// Name workers and workflow steps refer to, e.g. `task_creation`.
    pub name: String,
    /// One line for operators.
    pub description: String,
}

impl CapabilityInfo {
    /// Describes the capability `name`.
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
        }
    }
}

/// Outcome of a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// The service works as expected.
    Healthy,
    /// The service works, but worse than it should (slow, partly failing).
    Degraded,
    /// The service does not work; counts towards opening an incident.
    Unhealthy,
}

/// One number a health check measured, e.g. a latency.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// What was measured, e.g. `latency`.
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// Unit of `value`, e.g. `ms`.
    pub unit: String,
}

impl Measurement {
    /// A measurement of `name` with `value` in `unit`.
    pub fn new(name: impl Into<String>, value: f64, unit: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value,
            unit: unit.into(),
        }
    }
}

/// What a health check found.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    /// The verdict.
    pub status: HealthStatus,
    /// One line for operators, shown with the check and any incident it opens.
    pub message: String,
    /// Numbers measured on the way.
    pub measurements: Vec<Measurement>,
}

impl HealthReport {
    /// A report with `status` and `message` and no measurements.
    pub fn new(status: HealthStatus, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            measurements: Vec::new(),
        }
    }

    /// A healthy report.
    pub fn healthy(message: impl Into<String>) -> Self {
        Self::new(HealthStatus::Healthy, message)
    }

    /// A degraded report.
    pub fn degraded(message: impl Into<String>) -> Self {
        Self::new(HealthStatus::Degraded, message)
    }

    /// An unhealthy report.
    pub fn unhealthy(message: impl Into<String>) -> Self {
        Self::new(HealthStatus::Unhealthy, message)
    }

    /// Adds a measurement.
    #[must_use]
    pub fn with_measurement(
        mut self,
        name: impl Into<String>,
        value: f64,
        unit: impl Into<String>,
    ) -> Self {
        self.measurements.push(Measurement::new(name, value, unit));
        self
    }
}

/// An open incident handed to a recovery strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// Incident id, e.g. `incident_1733000000000`.
    pub id: String,
    /// Health check whose failures opened the incident.
    pub check_id: String,
    /// `critical`, `high`, `medium` or `low`.
    pub severity: String,
    /// Index of the recovery stage now running, from 0.
    pub stage: u32,
    /// What the last failed check said.
    pub summary: String,
    /// The check's target configuration (JSON text in the WIT, parsed here).
    pub target: Value,
    /// This recovery stage's configuration, from the health check's
    /// `recovery` stage (JSON text in the WIT, parsed here): what this
    /// strategy should do at this stage, e.g. which program to run. An
    /// empty object when the stage configures nothing.
    pub config: Value,
}

/// Outcome of one recovery stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecoveryOutcome {
    /// The strategy believes the service is repaired; the host re-checks.
    Recovered,
    /// The strategy tried and failed; the host moves to the next stage.
    NotRecovered,
    /// The strategy asks to skip the remaining stages and alert people now.
    Escalate,
}

/// What a recovery strategy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The verdict.
    pub outcome: RecoveryOutcome,
    /// What was done, for the incident's timeline.
    pub notes: String,
}

impl RecoveryReport {
    /// A report with `outcome` and `notes`.
    pub fn new(outcome: RecoveryOutcome, notes: impl Into<String>) -> Self {
        Self {
            outcome,
            notes: notes.into(),
        }
    }

    /// The service is believed repaired.
    pub fn recovered(notes: impl Into<String>) -> Self {
        Self::new(RecoveryOutcome::Recovered, notes)
    }

    /// The attempt failed; the host moves on to the next stage.
    pub fn not_recovered(notes: impl Into<String>) -> Self {
        Self::new(RecoveryOutcome::NotRecovered, notes)
    }

    /// Stop trying and alert people now.
    pub fn escalate(notes: impl Into<String>) -> Self {
        Self::new(RecoveryOutcome::Escalate, notes)
    }
}
