//! The action-plan service: templates, plans, and the operator's calls on
//! them (create, execute, cancel, retry). The executor is in `executor.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;

use super::records::{PlanCounts, PlanRecords, prune_forever};
use super::template::{self, NewTemplate, Template};
use super::{ActionStatus, DryRun, NewPlan, Plan, PlanError, PlanPage, PlanQuery, PlanStatus, dag};
use crate::clock::Timestamp;
use crate::engine::{Attempts, Clock, DelayHistogram, Loops, run_timed, wait_until_idle};
use crate::names::Name;
use crate::plugins::{CORE_TEAM, Plugins};
use crate::store::Store;

/// What the plan service needs from the rest of the app.
pub struct PlanDeps {
    /// Durable state.
    pub store: Store,
    /// What runs the actions' capabilities.
    pub plugins: Arc<Plugins>,
    /// The clock timers read.
    pub clock: Clock,
    /// How long finished plans are kept.
    pub retention: Duration,
}

/// Most plans one plan may depend on.
const MAX_PLAN_DEPENDENCIES: usize = 16;

/// A running plan in memory: its lock serialises every change (and its
/// write) of that one plan.
pub(super) type Running = Arc<tokio::sync::Mutex<Plan>>;

/// Action plans and their templates.
pub struct ActionPlans {
    pub(super) records: PlanRecords,
    pub(super) plugins: Arc<Plugins>,
    pub(super) clock: Clock,
    templates: RwLock<BTreeMap<String, Template>>,
    /// The plans executing now, by id.
    pub(super) running: Mutex<HashMap<String, Running>>,
    /// Action attempts in flight, keyed `plan/action`; holders are plan ids.
    pub(super) attempts: Mutex<Attempts<String>>,
    /// Pokes the executor: a plan executed or retried, an action ended.
    pub(super) wake: Arc<Notify>,
    /// Told whenever an action's call ends, for [`ActionPlans::drain`].
    pub(super) call_ended: Notify,
    /// Seconds from an action being ready (its dependencies done, its
    /// retry due) to its call starting: the executor's own delay.
    pub(super) start_delay: DelayHistogram,
    next_id: AtomicU64,
    /// Totals for `/status`, kept in memory (seeded from the store's
    /// durable ones) so that they answer while the store is unavailable.
    created: AtomicU64,
    pub(super) succeeded: AtomicU64,
    pub(super) failed: AtomicU64,
    /// This machine's name, which plans record as where they ran.
    machine: String,
}

impl ActionPlans {
    /// Plans whose execution ends (succeeded or failed) from now on, each
    /// sent once its state is written. A receiver that lags should read
    /// [`ActionPlans::failed_since`].
    pub fn subscribe_ended(&self) -> tokio::sync::broadcast::Receiver<Plan> {
        self.records.subscribe_ended()
    }

    /// Failed plans created at `since` or later, oldest first (at most
    /// 1,000): what a listener that lagged or restarted looks through.
    pub fn failed_since(&self, since: Timestamp) -> Result<Vec<Plan>, PlanError> {
        Ok(self.records.failed_since(since)?)
    }

    /// Loads the templates and the plans that were executing when the host
    /// stopped (resuming them: see [`super::executor`]), and starts the
    /// executor on `loops`.
    pub async fn open(deps: PlanDeps, loops: &Loops) -> Result<Arc<Self>, PlanError> {
        let records = PlanRecords::open(&deps.store).await?;
        let mut templates: BTreeMap<String, Template> = template::built_in()
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect();
        for stored in records.load_templates().await? {
            templates.insert(stored.id.clone(), stored);
        }
        let totals = records.counts()?;
        let plans = Arc::new(Self {
            records,
            plugins: deps.plugins,
            clock: deps.clock,
            templates: RwLock::new(templates),
            running: Mutex::new(HashMap::new()),
            attempts: Mutex::new(Attempts::default()),
            wake: Arc::new(Notify::new()),
            call_ended: Notify::new(),
            start_delay: DelayHistogram::new(0.000_25, 16),
            next_id: AtomicU64::new(0),
            created: AtomicU64::new(totals.total),
            succeeded: AtomicU64::new(totals.succeeded),
            failed: AtomicU64::new(totals.failed),
            machine: machine_name(),
        });
        plans.resume().await?;
        let (pruning, clock, retention) = (plans.records.clone(), deps.clock, deps.retention);
        loops.spawn("plan-retention", move |shutdown| {
            prune_forever(pruning, clock, retention, shutdown)
        });
        let executor = plans.clone();
        loops.spawn("plan-executor", move |shutdown| {
            let (clock, wake) = (executor.clock, executor.wake.clone());
            run_timed(clock, wake, shutdown, move || {
                let executor = executor.clone();
                async move { executor.pass().await }
            })
        });
        Ok(plans)
    }

    /// Every template `team_sees` admits, built-in ones included.
    pub fn templates(&self, team_sees: &dyn Fn(&str) -> bool) -> Vec<Template> {
        self.templates
            .read()
            .expect("template map poisoned")
            .values()
            .filter(|t| t.built_in || team_sees(&t.team))
            .cloned()
            .collect()
    }

    /// One template.
    pub fn template(&self, id: &str) -> Result<Template, PlanError> {
        self.templates
            .read()
            .expect("template map poisoned")
            .get(id)
            .cloned()
            .ok_or_else(|| PlanError::TemplateNotFound(id.to_owned()))
    }

    /// Defines a template of `team`; durable when it returns.
    pub async fn define_template(
        &self,
        team: Name,
        new: NewTemplate,
    ) -> Result<Template, PlanError> {
        let template = Template::from_new(team, new, self.clock.now())?;
        if self.template(&template.id).is_ok() {
            return Err(PlanError::TemplateExists(template.id));
        }
        self.records
            .insert_template(&template)
            .await
            .map_err(|err| match err {
                crate::store::StoreError::AlreadyExists { .. } => {
                    PlanError::TemplateExists(template.id.clone())
                }
                other => other.into(),
            })?;
        tracing::info!(template_id = %template.id, team = %template.team, actions = template.actions.len(), "action-plan template defined");
        self.templates
            .write()
            .expect("template map poisoned")
            .insert(template.id.clone(), template.clone());
        Ok(template)
    }

    /// Creates a `pending` plan of `team` from a template the team may use
    /// (its own or a built-in one); durable when it returns.
    pub async fn create(&self, team: Name, new: NewPlan) -> Result<Plan, PlanError> {
        let template = self
            .template(&new.template_id)
            .ok()
            .filter(|t| t.team == team.as_str() || t.team == CORE_TEAM)
            .ok_or_else(|| PlanError::TemplateNotFound(new.template_id.to_string()))?;
        if new.depends_on.len() > MAX_PLAN_DEPENDENCIES {
            return Err(PlanError::Invalid {
                field: "dependsOn".into(),
                message: format!("must name at most {MAX_PLAN_DEPENDENCIES} plans"),
            });
        }
        let mut depends_on = Vec::new();
        for dependency in &new.depends_on {
            // Only an existing plan of the same team; so no cycle can form.
            if self
                .records
                .get(dependency)?
                .is_none_or(|plan| plan.team != team.as_str())
            {
                return Err(PlanError::Invalid {
                    field: "dependsOn".into(),
                    message: format!("{:?} is not a plan of team {team}", dependency.as_str()),
                });
            }
            if !depends_on.contains(&dependency.to_string()) {
                depends_on.push(dependency.to_string());
            }
        }
        let data = Value::Object(template.check_data(new.data)?);
        let actions = template.actions_for(&data)?;
        let now = self.clock.now();
        let n = self.next_id.fetch_add(1, Ordering::Relaxed) % 10_000;
        let plan = Plan {
            id: format!("plan_{}{n:04}", now.unix_millis()),
            template_id: template.id.clone(),
            name: template.name.clone(),
            category: template.category.clone(),
            priority: new.priority.unwrap_or(template.priority),
            team: team.into(),
            server_id: data
                .get("serverId")
                .and_then(Value::as_str)
                .map(str::to_owned),
            data,
            checked_on: self.machine.clone(),
            status: PlanStatus::Pending,
            actions,
            depends_on,
            waiting_reason: None,
            error: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
        };
        self.records.create(&plan).await?;
        self.created.fetch_add(1, Ordering::Relaxed);
        tracing::info!(plan_id = %plan.id, template_id = %plan.template_id, team = %plan.team, actions = plan.actions.len(), "action plan created");
        Ok(plan)
    }

    /// One plan.
    pub fn get(&self, id: &str) -> Result<Plan, PlanError> {
        self.records
            .get(id)?
            .ok_or_else(|| PlanError::NotFound(id.to_owned()))
    }

    /// A filtered page of plans, oldest first; only `only_team`'s when the
    /// caller sees one team. Read on the blocking pool.
    pub async fn list(
        &self,
        query: PlanQuery,
        only_team: Option<String>,
    ) -> Result<PlanPage, PlanError> {
        let records = self.records.clone();
        tokio::task::spawn_blocking(move || records.page(&query, only_team.as_deref()))
            .await
            .map_err(|err| {
                PlanError::Store(crate::store::StoreError::Backend(format!(
                    "a list's read stopped: {err}"
                )))
            })?
            .map_err(PlanError::from)
    }

    /// The delay from an action being ready to its start, for `/metrics`.
    pub fn start_delay(&self) -> &DelayHistogram {
        &self.start_delay
    }

    /// Totals for `/status` and `/metrics`, from memory.
    pub fn counts(&self) -> PlanCounts {
        let active = self.running.lock().expect("running plans poisoned").len() as u64;
        PlanCounts {
            total: self.created.load(Ordering::Relaxed),
            active,
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Starts a `pending` plan; its ready actions start at once.
    pub async fn execute(&self, id: &str) -> Result<Plan, PlanError> {
        let stored = self.get(id)?;
        if stored.status != PlanStatus::Pending {
            let (code, message) = match stored.status {
                PlanStatus::Running => ("already_executing", "it is already executing"),
                _ => (
                    "already_executed",
                    "it has run; retry it to run what did not succeed",
                ),
            };
            return Err(conflict(&stored, code, message));
        }
        let mut plan = stored.clone();
        let now = self.clock.now();
        plan.status = PlanStatus::Running;
        plan.started_at = Some(now);
        plan.updated_at = now;
        self.records.change(&stored, &plan).await?;
        tracing::info!(plan_id = %plan.id, template_id = %plan.template_id, "action plan executing");
        self.track(plan.clone());
        Ok(plan)
    }

    /// What [`ActionPlans::execute`] would run, in order, without running it.
    pub fn execute_dry_run(&self, id: &str) -> Result<DryRun, PlanError> {
        let plan = self.get(id)?;
        if plan.status != PlanStatus::Pending {
            return Err(conflict(
                &plan,
                "already_executed",
                "it has run; ask a retry's dry run instead",
            ));
        }
        Ok(DryRun {
            plan_id: plan.id.clone(),
            dry_run: true,
            layers: dag::layers(&plan, |_| true),
        })
    }

    /// What [`ActionPlans::retry`] would run, in order, without running it.
    pub async fn retry_dry_run(&self, id: &str) -> Result<DryRun, PlanError> {
        let plan = match self.tracked(id) {
            Some(running) => running.lock().await.clone(),
            None => self.get(id)?,
        };
        if plan.status == PlanStatus::Pending {
            return Err(conflict(
                &plan,
                "not_executed",
                "it has not run yet; execute it",
            ));
        }
        let layers = dag::layers(&plan, |a| a.status.needs_retry());
        if layers.is_empty() {
            return Err(conflict(
                &plan,
                "nothing_to_retry",
                "nothing in it failed, so nothing is retried",
            ));
        }
        Ok(DryRun {
            plan_id: plan.id.clone(),
            dry_run: true,
            layers,
        })
    }

    /// Runs again what did not succeed: failed, timed-out, interrupted and
    /// cancelled actions and those skipped because of them, keeping the
    /// outputs of those that succeeded. Works on a plan that ended and on a
    /// running one (its failed branches).
    pub async fn retry(&self, id: &str) -> Result<Plan, PlanError> {
        if let Some(running) = self.tracked(id) {
            let mut plan = running.lock().await;
            let before = plan.clone();
            if reset_for_retry(&mut plan, self.clock.now()) == 0 {
                return Err(conflict(
                    &plan,
                    "nothing_to_retry",
                    "nothing in it failed, so nothing is retried",
                ));
            }
            self.records.change(&before, &plan).await.inspect_err(|_| {
                *plan = before.clone();
            })?;
            tracing::info!(plan_id = %plan.id, "action plan retried while executing");
            self.wake.notify_one();
            return Ok(plan.clone());
        }
        let stored = self.get(id)?;
        match stored.status {
            PlanStatus::Pending => {
                return Err(conflict(
                    &stored,
                    "not_executed",
                    "it has not run yet; execute it",
                ));
            }
            PlanStatus::Succeeded => {
                return Err(conflict(
                    &stored,
                    "nothing_to_retry",
                    "every action succeeded, so nothing is retried",
                ));
            }
            _ => {}
        }
        let mut plan = stored.clone();
        let now = self.clock.now();
        if reset_for_retry(&mut plan, now) == 0 {
            return Err(conflict(
                &plan,
                "nothing_to_retry",
                "nothing in it failed, so nothing is retried",
            ));
        }
        plan.status = PlanStatus::Running;
        plan.error = None;
        plan.finished_at = None;
        plan.started_at = Some(now);
        self.records.change(&stored, &plan).await?;
        tracing::info!(plan_id = %plan.id, "action plan retried");
        self.track(plan.clone());
        Ok(plan)
    }

    /// Cancels a pending or executing plan, stopping its running calls.
    pub async fn cancel(&self, id: &str) -> Result<Plan, PlanError> {
        if let Some(running) = self.tracked(id) {
            let mut plan = running.lock().await;
            if plan.status == PlanStatus::Running {
                let before = plan.clone();
                {
                    let mut attempts = self.attempts.lock().expect("attempts poisoned");
                    for action in &plan.actions {
                        attempts.stop(&attempt_key(&plan.id, &action.name));
                    }
                }
                cancel_in_place(&mut plan, self.clock.now());
                self.records.change(&before, &plan).await?;
                self.untrack(id);
                tracing::info!(plan_id = %plan.id, "action plan cancelled while executing");
                return Ok(plan.clone());
            }
        }
        let stored = self.get(id)?;
        if stored.status != PlanStatus::Pending {
            return Err(conflict(&stored, "already_ended", "it has ended"));
        }
        let mut plan = stored.clone();
        cancel_in_place(&mut plan, self.clock.now());
        self.records.change(&stored, &plan).await?;
        tracing::info!(plan_id = %plan.id, "action plan cancelled before it ran");
        Ok(plan)
    }

    /// Lets the action calls in flight finish, for at most `grace`, then
    /// stops the rest: they stay `running` in the store and are resumed
    /// after the next start. Call after the loops have stopped.
    pub async fn drain(&self, grace: std::time::Duration) {
        let attempts = || self.attempts.lock().expect("attempts poisoned");
        let left = wait_until_idle(grace, &self.call_ended, || attempts().len()).await;
        if left > 0 {
            tracing::warn!(
                running = left,
                "actions still running after the grace period are stopped; they resume after the next start"
            );
            attempts().abort_all();
        }
    }

    /// Holds an executing plan in memory and wakes the executor.
    pub(super) fn track(&self, plan: Plan) {
        let id = plan.id.clone();
        self.running
            .lock()
            .expect("running plans poisoned")
            .insert(id, Arc::new(tokio::sync::Mutex::new(plan)));
        self.wake.notify_one();
    }

    pub(super) fn tracked(&self, id: &str) -> Option<Running> {
        self.running
            .lock()
            .expect("running plans poisoned")
            .get(id)
            .cloned()
    }

    pub(super) fn untrack(&self, id: &str) {
        self.running
            .lock()
            .expect("running plans poisoned")
            .remove(id);
    }
}

/// The key of an action's attempts in [`ActionPlans::attempts`].
pub(super) fn attempt_key(plan: &str, action: &str) -> String {
    format!("{plan}/{action}")
}

fn conflict(plan: &Plan, code: &'static str, message: &str) -> PlanError {
    PlanError::Conflict {
        code,
        id: plan.id.clone(),
        status: plan.status.as_str(),
        message: message.to_owned(),
    }
}

/// Marks what did not succeed to run again; returns how many actions.
fn reset_for_retry(plan: &mut Plan, now: Timestamp) -> usize {
    let mut reset = 0;
    for action in &mut plan.actions {
        if action.status.needs_retry() {
            action.status = ActionStatus::Pending;
            action.attempts_made = 0;
            action.error = None;
            action.not_before = None;
            reset += 1;
        }
    }
    if reset > 0 {
        plan.updated_at = now;
    }
    reset
}

fn cancel_in_place(plan: &mut Plan, now: Timestamp) {
    for action in &mut plan.actions {
        if !action.status.is_final() {
            action.status = ActionStatus::Cancelled;
            action.not_before = None;
            if let Some(attempt) = action.attempts.last_mut()
                && attempt.status == ActionStatus::Running
            {
                attempt.status = ActionStatus::Cancelled;
                attempt.finished_at = Some(now);
            }
        }
    }
    plan.status = PlanStatus::Cancelled;
    plan.updated_at = now;
    plan.finished_at = Some(now);
}

/// This machine's host name, or `localhost` where it cannot be read.
fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
