//! Incidents: one per check while it is down, with the timeline of what
//! happened to it.

use serde::{Deserialize, Serialize};

use super::Severity;
use super::rules::CheckResult;
use crate::clock::Timestamp;
use crate::names::Name;

/// Most entries a timeline keeps; past it the oldest entries after the
/// opening go, counted in `timelineDropped`.
pub const MAX_TIMELINE: usize = 200;

/// Where an incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    /// The check is down; recovery runs or waits.
    Active,
    /// Over: recovered, passing again, or resolved by hand.
    Resolved,
    /// Recovery ran out (or was not possible): people must act.
    Escalated,
    /// Opened while a check it depends on fails: no recovery, no page.
    Suppressed,
}

impl IncidentStatus {
    /// The word the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Resolved => "resolved",
            Self::Escalated => "escalated",
            Self::Suppressed => "suppressed",
        }
    }

    /// Whether the incident is still open.
    pub fn is_open(self) -> bool {
        self != Self::Resolved
    }
}

/// What the recovery of an incident is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum RecoveryStep {
    /// Not running: not started, not possible, stopped or over.
    Idle,
    /// Waiting for one of the host's recovery slots.
    Queued,
    /// Stage `stage` runs.
    Running {
        /// Its index, from 0.
        stage: u32,
    },
    /// Stage `stage` ran; the check runs again to see whether it helped.
    Rechecking {
        /// Its index, from 0.
        stage: u32,
    },
}

/// One thing that happened to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimelineEvent {
    /// The incident opened.
    Opened,
    /// A run of the check failed.
    CheckFailed,
    /// A run of the check passed.
    CheckPassed,
    /// A recovery stage started.
    StageStarted,
    /// A recovery stage ended (see `outcome`).
    StageFinished,
    /// The host stopped while a stage ran or was being checked.
    Interrupted,
    /// The check changes state too often: automatic repair stops.
    Flapping,
    /// It stopped flapping.
    Settled,
    /// A check it depends on fails: it waits for that one.
    Suppressed,
    /// The check it depends on passes again: its own recovery may run.
    Unsuppressed,
    /// People must act.
    Escalated,
    /// Over.
    Resolved,
}

/// One entry of a timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// When.
    pub at: Timestamp,
    /// What.
    pub event: TimelineEvent,
    /// The recovery stage concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<u32>,
    /// How a stage or a check run came out, e.g. `recovered`, `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Details for people.
    pub notes: String,
}

/// An incident: a check that failed its threshold, and what was done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    /// Unique id, `incident_…`.
    pub id: String,
    /// The check whose failures opened it.
    pub check_id: String,
    /// The check's display name when it opened.
    pub check_name: String,
    /// The check's team.
    pub team: String,
    /// The check's severity.
    pub severity: Severity,
    /// Where it is.
    pub status: IncidentStatus,
    /// What the latest failure said.
    pub summary: String,
    /// The failures that led to it.
    pub failures: Vec<CheckResult>,
    /// Whether the check flaps (automatic repair is off while it does).
    pub flapping: bool,
    /// What recovery is doing.
    pub recovery: RecoveryStep,
    /// The stage recovery goes on with.
    pub next_stage: u32,
    /// For a suppressed incident: the open incident of the check it depends on.
    pub parent_incident: Option<String>,
    /// Whether a recovery stage repaired it.
    pub auto_recovered: bool,
    /// The stage that repaired it.
    pub recovered_by_stage: Option<u32>,
    /// How it was resolved.
    pub resolution: Option<String>,
    /// Who resolved it: `recovery`, `check` (it passed again on its own) or
    /// the token that resolved it by hand (`-` for the local operator).
    pub resolved_by: Option<String>,
    /// Milliseconds from the first failing result to the opening.
    pub detection_ms: u64,
    /// When it opened.
    pub opened_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When it escalated.
    pub escalated_at: Option<Timestamp>,
    /// When it was resolved.
    pub resolved_at: Option<Timestamp>,
    /// What happened, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// Timeline entries dropped to keep it at most 200 long.
    #[serde(default)]
    pub timeline_dropped: u32,
}

impl Incident {
    /// Appends to the timeline, keeping it bounded: the opening stays, the
    /// oldest entries after it go.
    pub fn note(
        &mut self,
        at: Timestamp,
        event: TimelineEvent,
        stage: Option<u32>,
        outcome: Option<&str>,
        notes: impl Into<String>,
    ) {
        if self.timeline.len() >= MAX_TIMELINE {
            self.timeline.remove(1);
            self.timeline_dropped = self.timeline_dropped.saturating_add(1);
        }
        self.timeline.push(TimelineEntry {
            at,
            event,
            stage,
            outcome: outcome.map(str::to_owned),
            notes: notes.into(),
        });
        self.updated_at = at;
    }

    /// Appends a check run's result.
    pub fn note_result(&mut self, result: &CheckResult, notes: &str) {
        let (event, outcome) = if result.passed() {
            (TimelineEvent::CheckPassed, "passed")
        } else {
            (TimelineEvent::CheckFailed, "failed")
        };
        let text = if notes.is_empty() {
            result.message.clone()
        } else {
            format!("{notes}: {}", result.message)
        };
        self.note(result.at, event, None, Some(outcome), text);
    }

    /// Resolves it at `at`.
    pub fn resolve(&mut self, at: Timestamp, by: &str, resolution: impl Into<String>) {
        let resolution = resolution.into();
        self.status = IncidentStatus::Resolved;
        self.recovery = RecoveryStep::Idle;
        self.resolved_at = Some(at);
        self.resolved_by = Some(by.to_owned());
        self.note(at, TimelineEvent::Resolved, None, None, resolution.clone());
        self.resolution = Some(resolution);
    }

    /// Escalates it at `at`: recovery stops and people must act.
    pub fn escalate(&mut self, at: Timestamp, why: impl Into<String>) {
        self.status = IncidentStatus::Escalated;
        self.recovery = RecoveryStep::Idle;
        self.escalated_at = Some(at);
        self.note(at, TimelineEvent::Escalated, None, None, why);
    }
}

/// What happened to an incident, as alerting hears of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentChange {
    /// It opened (active or suppressed; see the incident's status).
    Opened,
    /// It escalated: people must act.
    Escalated,
    /// Its check started flapping.
    Flapping,
    /// Its check settled.
    Settled,
    /// The check it depended on passes again: it is active now.
    Unsuppressed,
    /// It was resolved.
    Resolved,
}

/// A change of an incident, with the incident as it is after it.
#[derive(Debug, Clone)]
pub struct IncidentEvent {
    /// What changed.
    pub change: IncidentChange,
    /// The incident after the change.
    pub incident: Incident,
}

impl IncidentEvent {
    /// The changes from `before` to `after` (none, one or several).
    pub fn between(before: Option<&Incident>, after: Option<&Incident>) -> Vec<Self> {
        let Some(after) = after else {
            return Vec::new();
        };
        let mut changes = Vec::new();
        let was = |status: IncidentStatus| before.is_some_and(|b| b.status == status);
        if before.is_none() {
            changes.push(IncidentChange::Opened);
        }
        if after.status == IncidentStatus::Active && was(IncidentStatus::Suppressed) {
            changes.push(IncidentChange::Unsuppressed);
        }
        let was_flapping = before.is_some_and(|b| b.flapping);
        if after.flapping && !was_flapping && before.is_some() {
            changes.push(IncidentChange::Flapping);
        }
        if !after.flapping && was_flapping {
            changes.push(IncidentChange::Settled);
        }
        if after.status == IncidentStatus::Escalated && !was(IncidentStatus::Escalated) {
            changes.push(IncidentChange::Escalated);
        }
        if after.status == IncidentStatus::Resolved && before.is_none_or(|b| b.status.is_open()) {
            changes.push(IncidentChange::Resolved);
        }
        changes
            .into_iter()
            .map(|change| Self {
                change,
                incident: after.clone(),
            })
            .collect()
    }
}

/// Filters and paging of `GET /incidents`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IncidentQuery {
    /// Only incidents in this status.
    pub status: Option<IncidentStatus>,
    /// Only incidents of this check.
    pub check_id: Option<Name>,
    /// Only incidents of this severity.
    pub severity: Option<Severity>,
    /// Only incidents of this team.
    pub team: Option<Name>,
    /// Page size (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// Where the page starts: the `nextCursor` of the page before.
    pub cursor: Option<Name>,
}

/// One page of incidents, oldest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentPage {
    /// The incidents.
    pub items: Vec<Incident>,
    /// The page size used.
    pub limit: usize,
    /// Where the next page starts; none on the last page.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(status: IncidentStatus, flapping: bool) -> Incident {
        Incident {
            id: "incident_1".into(),
            check_id: "web".into(),
            check_name: "web".into(),
            team: "default".into(),
            severity: Severity::High,
            status,
            summary: String::new(),
            failures: Vec::new(),
            flapping,
            recovery: RecoveryStep::Idle,
            next_stage: 0,
            parent_incident: None,
            auto_recovered: false,
            recovered_by_stage: None,
            resolution: None,
            resolved_by: None,
            detection_ms: 0,
            opened_at: Timestamp::EARLIEST,
            updated_at: Timestamp::EARLIEST,
            escalated_at: None,
            resolved_at: None,
            timeline: Vec::new(),
            timeline_dropped: 0,
        }
    }

    fn changes(before: Option<&Incident>, after: Option<&Incident>) -> Vec<IncidentChange> {
        IncidentEvent::between(before, after)
            .into_iter()
            .map(|e| e.change)
            .collect()
    }

    #[test]
    fn each_change_of_an_incident_is_one_event() {
        use IncidentChange as C;
        use IncidentStatus as S;
        let active = incident(S::Active, false);
        assert_eq!(changes(None, Some(&active)), [C::Opened]);
        assert_eq!(
            changes(None, Some(&incident(S::Escalated, false))),
            [C::Opened, C::Escalated]
        );
        assert_eq!(changes(Some(&active), Some(&active)), []);
        assert_eq!(changes(Some(&active), None), []);
        assert_eq!(
            changes(Some(&active), Some(&incident(S::Active, true))),
            [C::Flapping]
        );
        assert_eq!(
            changes(
                Some(&incident(S::Active, true)),
                Some(&incident(S::Resolved, false))
            ),
            [C::Settled, C::Resolved]
        );
        assert_eq!(
            changes(Some(&incident(S::Suppressed, false)), Some(&active)),
            [C::Unsuppressed]
        );
        assert_eq!(
            changes(
                Some(&incident(S::Escalated, false)),
                Some(&incident(S::Resolved, false))
            ),
            [C::Resolved]
        );
        assert_eq!(
            changes(
                Some(&incident(S::Resolved, false)),
                Some(&incident(S::Resolved, false))
            ),
            []
        );
    }
}
