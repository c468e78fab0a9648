//! One incident's recovery: its check's stages in order, each followed by
//! the check again, until the check passes (`resolved`, auto-recovered), a
//! stage asks for people, the stages or the restart budget run out
//! (`escalated`), or the check starts flapping (repair stops).
//!
//! Each step is written before the next starts (`Running` before the
//! stage's call, `Rechecking` after it), which is what lets a restarted
//! host go on from where it was: see `Recovery::resume`.

use std::sync::Arc;
use std::time::Duration;

use super::check::{HealthCheck, Stage};
use super::incident::{IncidentStatus, RecoveryStep, TimelineEvent};
use super::rules::FlapChange;
use super::service::Recovery;
use crate::plugins::{self, Caller, PluginKind, RecoveryOutcome};

/// Where a recovery starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JobStart {
    /// With the incident's next stage.
    NextStage,
    /// With a re-check of what `after_stage` did (the host stopped while it
    /// ran or was being checked), then the next stage.
    Recheck {
        /// The stage whose effect is checked.
        after_stage: u32,
    },
}

/// What the next step of a recovery is.
enum Step {
    /// Run this stage.
    Run(Box<StageRun>),
    /// Nothing more to do: resolved, escalated, flapping, or gone.
    Stop,
}

/// A stage about to run: its index, definition, check, and what the
/// strategy is handed.
struct StageRun {
    index: u32,
    stage: Stage,
    check: Arc<HealthCheck>,
    input: plugins::Incident,
}

/// What a re-check found.
enum Recheck {
    /// The check passed its success threshold: resolved.
    Resolved,
    /// It still fails: on to the next stage.
    Failing,
    /// Stop: flapping, resolved by hand, or gone.
    Stop,
    /// It passed, not yet as often as it must: run it again.
    Again,
}

impl Recovery {
    /// Runs the recovery of `check_id`'s incident to its end.
    pub(super) async fn run_job(self: Arc<Self>, check_id: String, start: JobStart) {
        let _slot = self.slots.clone().acquire_owned().await;
        let mut recheck_after = match start {
            JobStart::Recheck { after_stage } => Some(after_stage),
            JobStart::NextStage => None,
        };
        loop {
            if let Some(stage) = recheck_after {
                match self.recheck(&check_id, stage).await {
                    Recheck::Failing | Recheck::Again => {}
                    Recheck::Resolved | Recheck::Stop => break,
                }
            }
            let Step::Run(run) = self.next_step(&check_id).await else {
                break;
            };
            let outcome = self.run_stage(&run.check, &run.stage, &run.input).await;
            let wait = self
                .record_stage(&check_id, run.index, &run.stage, outcome)
                .await;
            let Some(wait) = wait else { break };
            let until = self.clock.now().plus(wait);
            self.clock.sleep_until(until).await;
            recheck_after = Some(run.index);
        }
        self.job_ended(&check_id);
    }

    /// Picks the next stage, or escalates when none is left or the budget
    /// is spent, and writes `Running` before the stage starts.
    async fn next_step(&self, check_id: &str) -> Step {
        self.change(check_id, |state, _, now| {
            let entry = state.checks.get_mut(check_id)?;
            let check = entry.check.clone();
            let left = entry.rt.budget_left(&check.budget, now);
            let incident = entry.incident.as_mut()?;
            if incident.status != IncidentStatus::Active || incident.flapping {
                return None;
            }
            let index = incident.next_stage;
            let Some(stage) = check.recovery.get(index as usize).cloned() else {
                let why = format!(
                    "all {} recovery stage(s) ran and the check still fails",
                    check.recovery.len()
                );
                tracing::warn!(check_id = %check.id, incident_id = %incident.id, "incident escalated: {why}");
                incident.escalate(now, why);
                return None;
            };
            if left == 0 {
                let why = format!(
                    "restart budget spent: {} stage run(s) in {} s; it refills after {} s of steady health",
                    check.budget.max_runs,
                    check.budget.window_ms / 1000,
                    check.budget.refill_after_ms / 1000
                );
                tracing::warn!(check_id = %check.id, incident_id = %incident.id, "incident escalated: {why}");
                incident.escalate(now, why);
                return None;
            }
            incident.recovery = RecoveryStep::Running { stage: index };
            incident.next_stage = index + 1;
            incident.note(
                now,
                TimelineEvent::StageStarted,
                Some(index),
                None,
                format!("strategy {}", stage.strategy),
            );
            let input = plugins::Incident {
                id: incident.id.clone(),
                check_id: check.id.clone(),
                severity: check.severity.as_str().to_owned(),
                stage: index,
                summary: incident.summary.clone(),
                target: check.target.clone().unwrap_or_default(),
                config: stage.config.clone(),
            };
            entry.rt.count_stage(now);
            tracing::info!(check_id = %check.id, incident_id = %input.id, stage = index, strategy = %stage.strategy, "recovery stage started");
            Some(Step::Run(Box::new(StageRun {
                index,
                stage,
                check,
                input,
            })))
        })
        .await
        .flatten()
        .unwrap_or(Step::Stop)
    }

    /// Calls the stage's strategy plugin.
    async fn run_stage(
        &self,
        check: &HealthCheck,
        stage: &Stage,
        input: &plugins::Incident,
    ) -> Result<plugins::RecoveryReport, String> {
        let Some((team, name)) =
            self.plugins
                .resolve_plugin(&check.team, &stage.strategy, PluginKind::RecoveryStrategy)
        else {
            return Err(format!(
                "no recovery-strategy plugin named {:?} serves team {:?} (nor core)",
                stage.strategy, check.team
            ));
        };
        let caller = Caller {
            worker_id: None,
            subject_id: Some(input.id.clone()),
        };
        self.plugins
            .recover(&team, &name, input, caller)
            .await
            .map_err(|err| match err {
                plugins::InvokeError::Call(call) => {
                    format!("the strategy failed ({}): {call}", call.kind().as_str())
                }
                other => format!("the strategy could not run: {other}"),
            })
    }

    /// Writes how a stage ended. Returns how long to wait before the
    /// re-check, or `None` when the recovery ends here.
    async fn record_stage(
        &self,
        check_id: &str,
        index: u32,
        stage: &Stage,
        outcome: Result<plugins::RecoveryReport, String>,
    ) -> Option<Duration> {
        self.change(check_id, |state, _, now| {
            let entry = state.checks.get_mut(check_id)?;
            let incident = entry.incident.as_mut()?;
            let (word, notes) = match &outcome {
                Ok(report) => (outcome_word(report.outcome), report.notes.clone()),
                Err(error) => ("error", error.clone()),
            };
            incident.note(now, TimelineEvent::StageFinished, Some(index), Some(word), notes.clone());
            tracing::info!(check_id = %check_id, incident_id = %incident.id, stage = index, outcome = word, "recovery stage finished: {notes}");
            match outcome.as_ref().map(|r| r.outcome) {
                Ok(RecoveryOutcome::Escalate) => {
                    incident.escalate(now, format!("stage {index} ({}) asked for people: {notes}", stage.strategy));
                    None
                }
                Ok(RecoveryOutcome::Recovered) => {
                    // What failed before the repair no longer counts.
                    entry.rt.reset_failures();
                    incident.recovery = RecoveryStep::Rechecking { stage: index };
                    Some(Duration::from_millis(stage.wait_ms))
                }
                Ok(RecoveryOutcome::NotRecovered) | Err(_) => {
                    incident.recovery = RecoveryStep::Rechecking { stage: index };
                    Some(Duration::from_millis(stage.wait_ms))
                }
            }
        })
        .await
        .flatten()
    }

    /// Runs the check until it passes its success threshold or fails once.
    async fn recheck(&self, check_id: &str, stage: u32) -> Recheck {
        loop {
            let Some(check) = self.current_check(check_id) else {
                return Recheck::Stop;
            };
            let result = self.probe(&check).await;
            let verdict = self
                .change(check_id, |state, _, now| {
                    let Some(entry) = state.checks.get_mut(check_id) else {
                        return Recheck::Stop;
                    };
                    let observed = entry.rt.observe(&check, &result);
                    let successes = entry.rt.successes;
                    let Some(incident) = entry.incident.as_mut() else {
                        return Recheck::Stop;
                    };
                    if incident.status != IncidentStatus::Active {
                        return Recheck::Stop;
                    }
                    incident.note_result(&result, &format!("re-check after stage {stage}"));
                    if let Some(FlapChange::Started(changes)) = observed.flap {
                        incident.flapping = true;
                        incident.recovery = RecoveryStep::Idle;
                        incident.note(
                            now,
                            TimelineEvent::Flapping,
                            None,
                            None,
                            format!("{changes} changes in the last 21 results: automatic repair stops until it settles"),
                        );
                        tracing::warn!(check_id = %check_id, incident_id = %incident.id, "check is flapping; automatic repair stops");
                        return Recheck::Stop;
                    }
                    if result.failed() {
                        return Recheck::Failing;
                    }
                    if successes >= check.success_threshold {
                        let strategy = check
                            .recovery
                            .get(stage as usize)
                            .map_or("?", |s| s.strategy.as_str());
                        incident.auto_recovered = true;
                        incident.recovered_by_stage = Some(stage);
                        incident.resolve(
                            now,
                            "recovery",
                            format!(
                                "stage {stage} ({strategy}) repaired it: the check passed {successes} time(s) after it"
                            ),
                        );
                        return Recheck::Resolved;
                    }
                    Recheck::Again
                })
                .await
                .unwrap_or(Recheck::Stop);
            match verdict {
                Recheck::Again => {
                    let until = self.clock.now().plus(Duration::from_millis(check.interval));
                    self.clock.sleep_until(until).await;
                }
                done => return done,
            }
        }
    }
}

fn outcome_word(outcome: RecoveryOutcome) -> &'static str {
    match outcome {
        RecoveryOutcome::Recovered => "recovered",
        RecoveryOutcome::NotRecovered => "not_recovered",
        RecoveryOutcome::Escalate => "escalate",
    }
}
