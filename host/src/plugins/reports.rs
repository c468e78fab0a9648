//! What health-check and recovery-strategy plugins are handed and answer,
//! as the host keeps and shows them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::runtime::bindings::capability::autoagent::plugin::types as wit;

/// What a health check found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// Healthy, degraded or unhealthy.
    pub status: HealthStatus,
    /// One line for operators.
    pub message: String,
    /// Numbers the check measured.
    pub measurements: Vec<Measurement>,
}

/// The verdict of a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Works as it should.
    Healthy,
    /// Works, but not as it should.
    Degraded,
    /// Does not work.
    Unhealthy,
}

/// One number a health check measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    /// What was measured, e.g. `latency`.
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Its unit, e.g. `ms`.
    pub unit: String,
}

/// An open incident, as a recovery strategy is handed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    /// Incident id, `incident_…`.
    pub id: String,
    /// The health check whose failures opened it.
    pub check_id: String,
    /// `critical`, `high`, `medium` or `low`.
    pub severity: String,
    /// Index of the recovery stage now running, from 0.
    pub stage: u32,
    /// What the last failed check said.
    pub summary: String,
    /// The check's target.
    #[schema(value_type = Object)]
    pub target: Value,
    /// This recovery stage's configuration (the health check's `recovery`
    /// stage, e.g. `{"program": "/usr/bin/systemctl", "args": [...]}`);
    /// an empty object when absent.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub config: Value,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// What one recovery stage did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryReport {
    /// Recovered, not recovered, or escalate to people now.
    pub outcome: RecoveryOutcome,
    /// What the strategy did, for operators.
    pub notes: String,
}

/// The outcome of a recovery stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryOutcome {
    /// The strategy believes the service is repaired; the host re-checks.
    Recovered,
    /// It tried and failed; the next stage runs.
    NotRecovered,
    /// Skip the remaining stages and alert people now.
    Escalate,
}

impl From<wit::HealthReport> for HealthReport {
    fn from(report: wit::HealthReport) -> Self {
        Self {
            status: match report.status {
                wit::HealthStatus::Healthy => HealthStatus::Healthy,
                wit::HealthStatus::Degraded => HealthStatus::Degraded,
                wit::HealthStatus::Unhealthy => HealthStatus::Unhealthy,
            },
            message: report.message,
            measurements: report
                .measurements
                .into_iter()
                .map(|m| Measurement {
                    name: m.name,
                    value: m.value,
                    unit: m.unit,
                })
                .collect(),
        }
    }
}

impl From<wit::RecoveryReport> for RecoveryReport {
    fn from(report: wit::RecoveryReport) -> Self {
        Self {
            outcome: match report.outcome {
                wit::RecoveryOutcome::Recovered => RecoveryOutcome::Recovered,
                wit::RecoveryOutcome::NotRecovered => RecoveryOutcome::NotRecovered,
                wit::RecoveryOutcome::Escalate => RecoveryOutcome::Escalate,
            },
            notes: report.notes,
        }
    }
}

impl From<&Incident> for wit::Incident {
    fn from(incident: &Incident) -> Self {
        Self {
            id: incident.id.clone(),
            check_id: incident.check_id.clone(),
            severity: incident.severity.clone(),
            stage: incident.stage,
            summary: incident.summary.clone(),
            target: incident.target.to_string(),
            config: incident.config.to_string(),
        }
    }
}
