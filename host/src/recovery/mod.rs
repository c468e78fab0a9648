//! Automatic recovery: health checks run on their intervals, incidents open
//! when a check keeps failing, recovery stages repair the service one at a
//! time, and people take over (escalation) when repair runs out.
//!
//! - `check.rs` — what a health check is (`HealthCheck`) and the rules a
//!   new or changed one must meet.
//! - `rules.rs` — pure per-check bookkeeping: failure and success streaks,
//!   flapping over the last results, the restart budget.
//! - `incident.rs` — incidents and their timelines.
//! - `records.rs` — where checks, incidents and budgets are kept.
//! - `service.rs` — `Recovery`: the API's operations and the check loop.
//! - `runner.rs` — one incident's recovery, stage by stage.

mod check;
mod incident;
mod records;
mod rules;
mod runner;
mod service;

pub use check::{Budget, CheckPage, CheckQuery, CheckView, HealthCheck, NewHealthCheck, Stage};
pub use incident::{
    Incident, IncidentChange, IncidentEvent, IncidentPage, IncidentQuery, IncidentStatus,
    RecoveryStep, TimelineEntry, TimelineEvent,
};
pub use records::IncidentCounts;
pub use rules::{CheckResult, CheckState, ResultStatus};
pub use service::{EVENT_BACKLOG, Recovery, RecoveryDeps, RecoveryMetrics};

use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// How bad an incident of a check is; alerting picks its channels by it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A warning threshold was crossed.
    Medium,
    /// Performance degraded or a resource runs short.
    High,
    /// A service is down or data is at risk.
    Critical,
}

impl Severity {
    /// The word the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::High => "high",
            Self::Medium => "medium",
        }
    }
}

/// Why a recovery operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// A field has a value that is not allowed.
    #[error("`{field}` {message}")]
    Invalid {
        /// The field, e.g. `interval` or `recovery[0].strategy`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No health check has the id.
    #[error("no health check has id {0:?}")]
    CheckNotFound(String),
    /// No incident has the id.
    #[error("no incident has id {0:?}")]
    IncidentNotFound(String),
    /// The operation conflicts with the state of the object.
    #[error("{message}")]
    Conflict {
        /// A word for the API's error code, e.g. `already_resolved`.
        code: &'static str,
        /// What cannot be done, and why.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RecoveryError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}
