//! Pure bookkeeping of one check: its streaks, its recent results, whether
//! it flaps, and its restart budget. No I/O and no clock of its own: the
//! service hands in each result and the time, so every rule is tested here
//! on plain values.
//!
//! **Flapping.** Over the last [`FLAP_WINDOW`] results (pass or fail; a run
//! with nothing to probe is not a result), count the changes between one
//! result and the next. A check starts flapping when at least
//! [`FLAP_START`] of those changes are seen, and settles when at most
//! [`FLAP_SETTLE`] are left in the window.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::check::{Budget, HealthCheck};
use crate::clock::Timestamp;
use crate::plugins::{HealthStatus, Measurement};

/// Results that flapping looks at.
pub const FLAP_WINDOW: usize = 21;
/// Changes in the window that make a check flap (half of the 20 possible).
pub const FLAP_START: usize = 10;
/// Changes in the window at or under which a flapping check settles.
pub const FLAP_SETTLE: usize = 4;

/// How one run of a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// Healthy or degraded.
    Passed,
    /// Unhealthy, or the probe failed, trapped or ran out of time.
    Failed,
    /// The check has no target: nothing was probed.
    NoTarget,
}

/// One run of a check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// When the run started.
    pub at: Timestamp,
    /// Passed, failed, or nothing to probe.
    pub status: ResultStatus,
    /// What the plugin reported, when it reported.
    pub health: Option<HealthStatus>,
    /// The plugin's message, or why the run failed.
    pub message: String,
    /// How long the run took, in milliseconds.
    pub duration_ms: u64,
    /// Numbers the plugin measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<Measurement>,
}

impl CheckResult {
    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        self.status == ResultStatus::Passed
    }

    /// Whether the run failed.
    pub fn failed(&self) -> bool {
        self.status == ResultStatus::Failed
    }
}

/// Where a check stands, as lists and filters show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    /// Not run yet.
    Unknown,
    /// Registered without a target: nothing to probe.
    NoTarget,
    /// Its latest result passed.
    Healthy,
    /// Failing, fewer times in a row than its threshold.
    Failing,
    /// Failed its threshold: an incident is open.
    Unhealthy,
    /// Changing state too often; automatic repair is off.
    Flapping,
}

/// A change of flapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlapChange {
    /// It started flapping with this many changes in the window.
    Started(usize),
    /// It settled with this many changes left in the window.
    Settled(usize),
}

/// What one result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observed {
    /// The failure streak reached the threshold with this result.
    pub reached_threshold: bool,
    /// The success streak reached the success threshold with this result.
    pub healthy_again: bool,
    /// Flapping started or settled.
    pub flap: Option<FlapChange>,
}

/// The running bookkeeping of one check.
#[derive(Debug, Clone, Default)]
pub struct CheckRuntime {
    /// Failures in a row.
    pub failures: u32,
    /// Passes in a row.
    pub successes: u32,
    /// The latest results, oldest first.
    pub recent: VecDeque<CheckResult>,
    /// Pass (true) or fail of the latest results, for flapping.
    outcomes: VecDeque<bool>,
    /// Whether it flaps now.
    pub flapping: bool,
    /// When recovery stages ran, oldest first, within the budget's window.
    pub stage_runs: VecDeque<Timestamp>,
    /// Since when every result has passed.
    pub passing_since: Option<Timestamp>,
}

impl CheckRuntime {
    /// Takes in one result of `check`.
    pub fn observe(&mut self, check: &HealthCheck, result: &CheckResult) -> Observed {
        if self.recent.len() == FLAP_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(result.clone());
        let mut observed = Observed::default();
        match result.status {
            ResultStatus::NoTarget => {
                self.failures = 0;
                self.successes = 0;
                return observed;
            }
            ResultStatus::Passed => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                observed.healthy_again = self.successes == check.success_threshold;
                self.passing_since.get_or_insert(result.at);
                let steady = self.passing_since.is_some_and(|since| {
                    result.at.since(since).as_millis() >= check.budget.refill_after_ms as u128
                });
                if steady {
                    self.stage_runs.clear();
                }
            }
            ResultStatus::Failed => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                observed.reached_threshold = self.failures == check.threshold;
                self.passing_since = None;
            }
        }
        if self.outcomes.len() == FLAP_WINDOW {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back(result.passed());
        let changes = self.changes();
        if !self.flapping && changes >= FLAP_START {
            self.flapping = true;
            observed.flap = Some(FlapChange::Started(changes));
        } else if self.flapping && changes <= FLAP_SETTLE {
            self.flapping = false;
            observed.flap = Some(FlapChange::Settled(changes));
        }
        observed
    }

    /// Changes between consecutive results in the window.
    pub fn changes(&self) -> usize {
        self.outcomes
            .iter()
            .zip(self.outcomes.iter().skip(1))
            .filter(|(a, b)| a != b)
            .count()
    }

    /// Forgets the failure streak: a recovery stage reported success, so
    /// what failed before it no longer counts toward anything.
    pub fn reset_failures(&mut self) {
        self.failures = 0;
    }

    /// Stages left in the budget's window at `now`.
    pub fn budget_left(&mut self, budget: &Budget, now: Timestamp) -> u32 {
        let window = std::time::Duration::from_millis(budget.window_ms);
        while self
            .stage_runs
            .front()
            .is_some_and(|&ran| now.since(ran) >= window)
        {
            self.stage_runs.pop_front();
        }
        budget.max_runs.saturating_sub(self.stage_runs.len() as u32)
    }

    /// Counts a stage run at `at` against the budget.
    pub fn count_stage(&mut self, at: Timestamp) {
        self.stage_runs.push_back(at);
        // Bounded: a budget never counts more than 1,000 runs.
        while self.stage_runs.len() > 1000 {
            self.stage_runs.pop_front();
        }
    }

    /// Where the check stands, `open_incident` saying whether one is open.
    pub fn state(&self, has_target: bool, open_incident: bool) -> CheckState {
        if !has_target {
            CheckState::NoTarget
        } else if self.flapping {
            CheckState::Flapping
        } else if open_incident {
            CheckState::Unhealthy
        } else if self.failures > 0 {
            CheckState::Failing
        } else if self.recent.back().is_some_and(CheckResult::passed) {
            CheckState::Healthy
        } else {
            CheckState::Unknown
        }
    }

    /// The failures of the current streak, oldest first: what led to an
    /// incident.
    pub fn failure_streak(&self) -> Vec<CheckResult> {
        let mut streak: Vec<CheckResult> = self
            .recent
            .iter()
            .rev()
            .take_while(|r| r.failed())
            .cloned()
            .collect();
        streak.reverse();
        streak
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::recovery::check::NewHealthCheck;

    fn check(threshold: u32, success_threshold: u32) -> HealthCheck {
        let new: NewHealthCheck = serde_json::from_value(serde_json::json!({
            "name": "web", "type": "http", "interval": 1000, "timeout": 500,
            "threshold": threshold, "successThreshold": success_threshold,
            "target": {"url": "http://127.0.0.1:1/"},
            "budget": {"maxRuns": 2, "windowMs": 60000, "refillAfterMs": 10000}
        }))
        .unwrap();
        new.build(
            crate::names::Name::from_static("web"),
            crate::names::Name::from_static("default"),
            Timestamp::EARLIEST,
        )
        .unwrap()
    }

    fn result(at_secs: u64, passed: bool) -> CheckResult {
        CheckResult {
            at: Timestamp::EARLIEST.plus(Duration::from_secs(at_secs)),
            status: if passed {
                ResultStatus::Passed
            } else {
                ResultStatus::Failed
            },
            health: None,
            message: String::new(),
            duration_ms: 1,
            measurements: Vec::new(),
        }
    }

    #[test]
    fn the_threshold_is_reached_once_per_streak() {
        let check = check(3, 2);
        let mut rt = CheckRuntime::default();
        let seen: Vec<bool> = (0..5)
            .map(|s| rt.observe(&check, &result(s, false)).reached_threshold)
            .collect();
        assert_eq!(seen, [false, false, true, false, false]);
        assert_eq!(rt.failure_streak().len(), 5);
        assert!(
            !rt.observe(&check, &result(5, true)).healthy_again,
            "needs two passes"
        );
        assert!(rt.observe(&check, &result(6, true)).healthy_again);
        assert_eq!(rt.failures, 0);
        assert!(
            !rt.observe(&check, &result(7, false)).reached_threshold,
            "a new streak starts"
        );
    }

    #[test]
    fn alternating_results_flap_and_steady_ones_settle() {
        let check = check(3, 1);
        let mut rt = CheckRuntime::default();
        let mut started_at = None;
        for s in 0..30 {
            if let Some(FlapChange::Started(changes)) =
                rt.observe(&check, &result(s, s % 2 == 0)).flap
            {
                assert_eq!(changes, FLAP_START);
                started_at = Some(s);
                break;
            }
        }
        assert_eq!(started_at, Some(10), "ten changes take eleven results");
        assert_eq!(rt.state(true, false), CheckState::Flapping);
        let mut settled_at = None;
        for s in 11..60 {
            if let Some(FlapChange::Settled(changes)) = rt.observe(&check, &result(s, true)).flap {
                assert!(changes <= FLAP_SETTLE);
                settled_at = Some(s);
                break;
            }
        }
        assert!(settled_at.is_some(), "steady passes settle it");
        assert!(!rt.flapping);
    }

    #[test]
    fn a_service_down_for_long_does_not_flap() {
        let check = check(3, 1);
        let mut rt = CheckRuntime::default();
        for s in 0..100 {
            let passed = (s / 10) % 2 == 0;
            assert_eq!(rt.observe(&check, &result(s, passed)).flap, None, "at {s}");
        }
    }

    #[test]
    fn the_budget_counts_runs_in_its_window_and_refills_after_steady_health() {
        // Budget: 2 runs a 60 s window, full again after 10 s of passes.
        let check = check(1, 1);
        let mut rt = CheckRuntime::default();
        let at = |s| Timestamp::EARLIEST.plus(Duration::from_secs(s));
        assert_eq!(rt.budget_left(&check.budget, at(0)), 2);
        rt.count_stage(at(0));
        rt.count_stage(at(1));
        assert_eq!(rt.budget_left(&check.budget, at(2)), 0, "spent");
        // Passing, but not for the refill period yet.
        rt.observe(&check, &result(3, true));
        rt.observe(&check, &result(8, true));
        assert_eq!(
            rt.budget_left(&check.budget, at(9)),
            0,
            "not steady long enough"
        );
        rt.observe(&check, &result(13, true));
        assert_eq!(rt.budget_left(&check.budget, at(14)), 2, "refilled");
        // A failure breaks the steady period.
        rt.count_stage(at(15));
        rt.observe(&check, &result(16, false));
        rt.observe(&check, &result(20, true));
        rt.observe(&check, &result(25, true));
        assert_eq!(rt.budget_left(&check.budget, at(26)), 1);
        // A run leaves the window 60 s after it ran.
        assert_eq!(rt.budget_left(&check.budget, at(74)), 1);
        assert_eq!(rt.budget_left(&check.budget, at(75)), 2);
    }

    #[test]
    fn no_target_is_neither_pass_nor_fail() {
        let check = check(1, 1);
        let mut rt = CheckRuntime::default();
        let mut nothing = result(0, false);
        nothing.status = ResultStatus::NoTarget;
        let observed = rt.observe(&check, &nothing);
        assert_eq!(observed, Observed::default());
        assert_eq!(rt.state(false, false), CheckState::NoTarget);
        assert_eq!(rt.changes(), 0);
    }
}
