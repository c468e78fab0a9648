//! The plan executor: starts the actions that are ready, runs each through
//! the plugins with its time limit, and records how it ended.
//!
//! Every change to a plan is made under the plan's lock and written before
//! it is acted on: an action is recorded `running` (with its attempt) before
//! its call starts. On start, the plans that were executing are resumed: an
//! action that was running when the host stopped runs again if it is
//! idempotent (delivery is at least once), and otherwise is `interrupted`
//! and waits for an operator's retry; retries keep their due time.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::service::{ActionPlans, attempt_key};
use super::{ActionAttempt, ActionStatus, Plan, PlanError, PlanStatus, dag};
use crate::clock::Timestamp;
use crate::engine::{Backoff, Retry, next_attempt};
use crate::names::Name;
use crate::plugins::{Caller, ErrorKind, InvokeError};
use crate::workflows::template as query;

/// Attempts kept in an action's record; older ones are dropped.
const KEPT_ATTEMPTS: usize = 20;

/// Where a plan's plan-level dependencies stand.
enum Dependencies {
    /// All succeeded (or there are none).
    Met,
    /// Some has not ended yet.
    Waiting(String),
    /// Some ended without success.
    Failed(String),
}

/// How an action's call ended.
type CallOutcome = Result<Value, (ErrorKind, String)>;

/// An action the pass has recorded as running, to be called.
struct Start {
    action: String,
    attempt: u32,
    team: Name,
    plugin: Name,
    capability: String,
    input: Value,
    timeout: Duration,
}

impl ActionPlans {
    /// Resumes the plans that were executing when the host stopped.
    pub(super) async fn resume(&self) -> Result<(), PlanError> {
        let now = self.clock.now();
        for stored in self.records.load_running().await? {
            let mut plan = stored.clone();
            for action in &mut plan.actions {
                if action.status != ActionStatus::Running {
                    continue;
                }
                let attempt = action.attempts.last_mut();
                if action.idempotent {
                    // Runs again at once; the interrupted attempt counts.
                    action.status = ActionStatus::Retrying;
                    action.not_before = None;
                    if let Some(attempt) = attempt {
                        attempt.status = ActionStatus::Interrupted;
                        attempt.finished_at = Some(now);
                        attempt.error = Some("the host stopped while it ran".into());
                    }
                    tracing::warn!(plan_id = %plan.id, action = %action.name, "action was running when the host stopped; runs again");
                } else {
                    action.status = ActionStatus::Interrupted;
                    action.error = Some(
                        "the host stopped while it ran; it is not idempotent, so it runs again \
                         only when an operator retries the plan"
                            .into(),
                    );
                    if let Some(attempt) = attempt {
                        attempt.status = ActionStatus::Interrupted;
                        attempt.finished_at = Some(now);
                    }
                    tracing::warn!(plan_id = %plan.id, action = %action.name, "non-idempotent action was running when the host stopped; waits for a retry");
                }
            }
            plan.updated_at = now;
            self.records.change(&stored, &plan).await?;
            self.track(plan);
        }
        Ok(())
    }

    /// One executor pass over the executing plans. Returns when the next
    /// retry is due.
    pub(super) async fn pass(self: &Arc<Self>) -> Option<Timestamp> {
        let plans: Vec<_> = self
            .running
            .lock()
            .expect("running plans poisoned")
            .values()
            .cloned()
            .collect();
        let mut next = None::<Timestamp>;
        for handle in plans {
            let mut plan = handle.lock().await;
            if plan.status != PlanStatus::Running {
                continue;
            }
            let before = plan.clone();
            if !self.step(&mut plan, before, None).await {
                continue;
            }
            if let Some(at) = dag::next_retry(&plan) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next
    }

    /// Moves a plan along and writes the result: checks its plan-level
    /// dependencies, skips what is blocked, starts what is ready (recording
    /// it first), or ends it. `before` is the plan as stored. When the write
    /// fails, the plan goes back to `fallback` (or to `before`) and the
    /// executor tries again on its next pass. Returns whether the plan is
    /// still executing.
    async fn step(self: &Arc<Self>, plan: &mut Plan, before: Plan, fallback: Option<Plan>) -> bool {
        let now = self.clock.now();
        let dirty = fallback.is_some();
        let (starts, changed) = match self.dependencies(plan) {
            Dependencies::Met => {
                let waited = plan.waiting_reason.take().is_some();
                let (starts, changed) = self.advance(plan, now);
                (starts, changed || waited)
            }
            Dependencies::Waiting(reason) => {
                let changed = plan.waiting_reason.as_deref() != Some(reason.as_str());
                plan.waiting_reason = Some(reason);
                (Vec::new(), changed)
            }
            Dependencies::Failed(reason) => {
                fail_on_dependency(plan, reason, now);
                (Vec::new(), true)
            }
        };
        if !changed && !dirty {
            return true;
        }
        if let Err(err) = self.records.change(&before, plan).await {
            tracing::warn!(plan_id = %plan.id, error = %err, "could not record the plan's progress; trying again");
            *plan = fallback.unwrap_or(before);
            self.wake.notify_one();
            return plan.status == PlanStatus::Running;
        }
        if plan.status != PlanStatus::Running {
            self.untrack(&plan.id);
            log_end(self, plan);
            // Plans waiting for this one look again.
            self.wake.notify_one();
            return false;
        }
        for start in starts {
            self.spawn(plan, start);
        }
        true
    }

    /// Whether the plans `plan` depends on have succeeded. A plan executing
    /// is not locked here (its lock may be held by whoever wakes this pass);
    /// being tracked is enough to know it has not ended.
    fn dependencies(&self, plan: &Plan) -> Dependencies {
        for id in &plan.depends_on {
            if self.tracked(id).is_some() {
                return Dependencies::Waiting(format!("waiting for plan {id} to finish"));
            }
            match self.records.get(id) {
                Ok(Some(dependency)) => match dependency.status {
                    PlanStatus::Succeeded => {}
                    PlanStatus::Pending => {
                        return Dependencies::Waiting(format!(
                            "waiting for plan {id}, which has not been executed"
                        ));
                    }
                    PlanStatus::Running => {
                        return Dependencies::Waiting(format!("waiting for plan {id} to finish"));
                    }
                    PlanStatus::Failed | PlanStatus::Cancelled => {
                        return Dependencies::Failed(format!(
                            "depends on plan {id}, which ended {}",
                            dependency.status.as_str()
                        ));
                    }
                },
                Ok(None) => {
                    return Dependencies::Failed(format!("depends on plan {id}, which is gone"));
                }
                Err(err) => {
                    return Dependencies::Waiting(format!("cannot read plan {id}: {err}"));
                }
            }
        }
        Dependencies::Met
    }

    /// Moves a plan along: skips what is blocked, marks the ready actions
    /// running (or failed, when their input cannot be rendered or no plugin
    /// serves them), and ends the plan when nothing more can happen.
    /// Returns the calls to start and whether the plan changed.
    fn advance(&self, plan: &mut Plan, now: Timestamp) -> (Vec<Start>, bool) {
        let mut starts = Vec::new();
        let mut changed = false;
        loop {
            let progress = dag::advance(plan, now);
            changed |= progress.skipped;
            if progress.ready.is_empty() {
                if progress.status != PlanStatus::Running {
                    plan.status = progress.status;
                    plan.finished_at = Some(now);
                    plan.error = first_failure(plan);
                    changed = true;
                }
                if changed {
                    plan.updated_at = now;
                }
                return (starts, changed);
            }
            let context = context_of(plan);
            for index in progress.ready {
                match self.prepare(plan, index, &context, now) {
                    Ok(start) => starts.push(start),
                    Err(failure) => {
                        let action = &mut plan.actions[index];
                        action.attempts_made += 1;
                        push_attempt(action, now, None);
                        settle(action, Err(failure), now);
                    }
                }
            }
            changed = true;
            plan.updated_at = now;
            // An action that failed at once may end the plan or, retried,
            // wait: go round until only started actions are left.
            if !starts.is_empty() {
                return (starts, changed);
            }
        }
    }

    fn prepare(
        &self,
        plan: &mut Plan,
        index: usize,
        context: &Value,
        now: Timestamp,
    ) -> Result<Start, (ErrorKind, String)> {
        let action = &plan.actions[index];
        let input = query::render(&action.input, context)
            .map_err(|err| (ErrorKind::InvalidInput, format!("its input: {err}")))?;
        let (team, plugin, version) = self
            .plugins
            .resolve_capability(&plan.team, &action.capability)
            .ok_or_else(|| {
                (
                    ErrorKind::Unavailable,
                    format!("no loaded plugin serves capability {:?}", action.capability),
                )
            })?;
        let ready_at = ready_since(plan, index);
        self.start_delay.observe(now.since(ready_at));
        let action = &mut plan.actions[index];
        action.attempts_made += 1;
        action.status = ActionStatus::Running;
        action.not_before = None;
        push_attempt(action, now, Some(format!("{team}/{plugin}@{version}")));
        tracing::info!(plan_id = %plan.id, action = %action.name, attempt = action.attempts_made, plugin = %format!("{team}/{plugin}"), "action started");
        Ok(Start {
            action: action.name.clone(),
            attempt: action.attempts_made,
            team,
            plugin,
            capability: action.capability.clone(),
            input,
            timeout: Duration::from_millis(action.timeout_ms),
        })
    }

    /// Claims the attempt and spawns its call on the guest pool.
    fn spawn(self: &Arc<Self>, plan: &Plan, start: Start) {
        let key = attempt_key(&plan.id, &start.action);
        let attempt = start.attempt;
        let mut attempts = self.attempts.lock().expect("attempts poisoned");
        attempts.claim(key.clone(), attempt, &plan.id);
        // Spawned and attached under the attempts' lock, which the call
        // takes first (see `Attempts::attach`).
        let handle = self
            .plugins
            .guest_runtime()
            .spawn(self.clone().call(plan.id.clone(), start));
        attempts.attach(&key, attempt, handle.abort_handle());
    }

    async fn call(self: Arc<Self>, plan_id: String, start: Start) {
        let key = attempt_key(&plan_id, &start.action);
        if !self
            .attempts
            .lock()
            .expect("attempts poisoned")
            .is_current(&key, start.attempt)
        {
            return;
        }
        let caller = Caller {
            worker_id: None,
            subject_id: Some(key.clone()),
        };
        let call = self.plugins.invoke(
            &start.team,
            &start.plugin,
            &start.capability,
            &start.input,
            caller,
        );
        let outcome: CallOutcome = match tokio::time::timeout(start.timeout, call).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(err)) => Err((invoke_kind(&err), err.to_string())),
            Err(_) => Err((
                ErrorKind::Timeout,
                format!(
                    "ran past the action's time limit of {} ms",
                    start.timeout.as_millis()
                ),
            )),
        };
        if !self
            .attempts
            .lock()
            .expect("attempts poisoned")
            .finish(&key, start.attempt)
        {
            return;
        }
        self.record(&plan_id, &start.action, start.attempt, outcome)
            .await;
        self.call_ended.notify_waiters();
    }

    /// Writes how an attempt ended, then wakes the executor for what comes
    /// next.
    async fn record(
        self: &Arc<Self>,
        plan_id: &str,
        action_name: &str,
        attempt: u32,
        outcome: CallOutcome,
    ) {
        let Some(handle) = self.tracked(plan_id) else {
            return;
        };
        let mut plan = handle.lock().await;
        let before = plan.clone();
        let now = self.clock.now();
        let Some(action) = plan.actions.iter_mut().find(|a| a.name == action_name) else {
            return;
        };
        if action.status != ActionStatus::Running || action.attempts_made != attempt {
            return;
        }
        settle(action, outcome, now);
        match action.status {
            ActionStatus::Succeeded => {
                tracing::info!(plan_id = %plan_id, action = %action_name, attempt, "action succeeded");
            }
            ActionStatus::Retrying => tracing::warn!(
                plan_id = %plan_id, action = %action_name, attempt,
                error = %action.error.as_deref().unwrap_or("-"),
                retry_at = %action.not_before.map(|t| t.to_string()).unwrap_or_default(),
                "action attempt failed; retried"
            ),
            _ => tracing::error!(
                plan_id = %plan_id, action = %action_name, attempt, status = ?action.status,
                error = %action.error.as_deref().unwrap_or("-"),
                "action failed"
            ),
        }
        plan.updated_at = now;
        // The outcome and what it makes ready are written together: one
        // durable write per step of a chain. Should the write fail, the
        // outcome stays in memory and the next pass writes it.
        let settled = plan.clone();
        self.step(&mut plan, before, Some(settled)).await;
        // The pass keeps the retry timers: it must see a retry set here.
        if dag::next_retry(&plan).is_some() {
            self.wake.notify_one();
        }
    }
}

/// Applies an attempt's outcome to its action: succeeded, retried after its
/// backoff, or failed (timed out).
fn settle(action: &mut super::PlanAction, outcome: CallOutcome, now: Timestamp) {
    let attempt = action.attempts.last_mut();
    match outcome {
        Ok(output) => {
            action.status = ActionStatus::Succeeded;
            action.output = Some(output);
            action.error = None;
            if let Some(attempt) = attempt {
                attempt.status = ActionStatus::Succeeded;
                attempt.finished_at = Some(now);
            }
        }
        Err((kind, message)) => {
            let ended = if kind == ErrorKind::Timeout {
                ActionStatus::TimedOut
            } else {
                ActionStatus::Failed
            };
            if let Some(attempt) = attempt {
                attempt.status = ended;
                attempt.finished_at = Some(now);
                attempt.error = Some(message.clone());
                attempt.error_kind = Some(kind);
            }
            action.error = Some(message);
            let policy = Backoff {
                base: Duration::from_millis(action.backoff_ms),
                max: Duration::from_secs(600),
            };
            match next_attempt(
                &policy,
                action.attempts_made,
                action.max_attempts,
                kind.retryable(),
            ) {
                Retry::After(wait) => {
                    action.status = ActionStatus::Retrying;
                    action.not_before = Some(now.plus(wait));
                }
                Retry::GiveUp => action.status = ended,
            }
        }
    }
}

/// Ends a plan whose dependency did not succeed: its actions are skipped,
/// so that a retry (once the dependency succeeded) runs them.
fn fail_on_dependency(plan: &mut Plan, reason: String, now: Timestamp) {
    for action in &mut plan.actions {
        if !action.status.is_final() {
            action.status = ActionStatus::Skipped;
            action.error = Some(reason.clone());
        }
    }
    plan.status = PlanStatus::Failed;
    plan.error = Some(reason);
    plan.waiting_reason = None;
    plan.finished_at = Some(now);
    plan.updated_at = now;
}

fn push_attempt(action: &mut super::PlanAction, now: Timestamp, plugin: Option<String>) {
    action.attempts.push(ActionAttempt {
        number: action.attempts_made,
        status: ActionStatus::Running,
        started_at: now,
        finished_at: None,
        plugin,
        error: None,
        error_kind: None,
    });
    if action.attempts.len() > KEPT_ATTEMPTS {
        let extra = action.attempts.len() - KEPT_ATTEMPTS;
        action.attempts.drain(..extra);
    }
}

/// When the action at `index` became ready: its retry's due time, else
/// when its last dependency ended, else when the plan started.
fn ready_since(plan: &Plan, index: usize) -> Timestamp {
    let action = &plan.actions[index];
    if let Some(due) = action.not_before {
        return due;
    }
    action
        .depends_on
        .iter()
        .filter_map(|dep| plan.action(dep))
        .filter_map(|dep| dep.attempts.last().and_then(|a| a.finished_at))
        .max()
        .or(plan.started_at)
        .unwrap_or(plan.created_at)
}

/// What an action's input template reads: the plan's data and the outputs
/// of the actions that succeeded.
fn context_of(plan: &Plan) -> Value {
    let outputs: Map<String, Value> = plan
        .actions
        .iter()
        .filter(|a| a.status == ActionStatus::Succeeded)
        .filter_map(|a| Some((a.name.clone(), a.output.clone()?)))
        .collect();
    json!({"data": plan.data, "actions": outputs})
}

/// The plan's error once it failed: its first action that did not succeed
/// and was not merely skipped.
fn first_failure(plan: &Plan) -> Option<String> {
    plan.actions
        .iter()
        .find(|a| a.status.needs_retry() && a.status != ActionStatus::Skipped)
        .map(|a| {
            format!(
                "action {:?} {}: {}",
                a.name,
                match a.status {
                    ActionStatus::TimedOut => "timed out",
                    ActionStatus::Interrupted => "was interrupted",
                    ActionStatus::Cancelled => "was cancelled",
                    _ => "failed",
                },
                a.error.as_deref().unwrap_or("-")
            )
        })
}

fn invoke_kind(err: &InvokeError) -> ErrorKind {
    match err {
        InvokeError::Call(call) => call.kind(),
        InvokeError::NotFound { .. } | InvokeError::UnknownCapability { .. } => {
            ErrorKind::Unavailable
        }
    }
}

fn log_end(plans: &ActionPlans, plan: &Plan) {
    use std::sync::atomic::Ordering;
    match plan.status {
        PlanStatus::Succeeded => plans.succeeded.fetch_add(1, Ordering::Relaxed),
        _ => plans.failed.fetch_add(1, Ordering::Relaxed),
    };
    match plan.status {
        PlanStatus::Succeeded => {
            tracing::info!(plan_id = %plan.id, template_id = %plan.template_id, "action plan succeeded");
        }
        _ => tracing::error!(
            plan_id = %plan.id, template_id = %plan.template_id, status = %plan.status.as_str(),
            error = %plan.error.as_deref().unwrap_or("-"),
            "action plan failed"
        ),
    }
}
