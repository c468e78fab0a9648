//! `Recovery`: the checks in memory, the check loop, and what the API asks
//! of them (register, change, delete, run now; read and resolve incidents).
//!
//! Every change to an incident or a budget goes through [`Recovery::change`]:
//! it takes its check's turn, changes the check's entry under the state
//! lock, and writes what changed in one batch, so that one check's writes
//! reach the store in the order its changes were made, while the changes
//! of different checks are written in parallel (and share the store's
//! group commits).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};

use super::RecoveryError;
use super::check::{CheckPage, CheckQuery, CheckView, HealthCheck, NewHealthCheck};
use super::incident::{
    Incident, IncidentEvent, IncidentPage, IncidentQuery, IncidentStatus, RecoveryStep,
    TimelineEvent,
};
use super::records::{IncidentCounts, RecoveryRecords, prune_forever};
use super::rules::{CheckResult, CheckRuntime, FlapChange, ResultStatus};
use super::runner::JobStart;
use crate::clock::Timestamp;
use crate::engine::{Clock, DelayHistogram, Loops, Timers, run_timed};
use crate::names::Name;
use crate::plugins::{Caller, HealthStatus, InvokeError, PluginKind, Plugins};
use crate::store::{Op, Store};

/// Most health checks one host runs.
pub const MAX_CHECKS: usize = 10_000;

/// Most probes a second one team's checks may ask for together (a check at
/// a 1 s interval asks for one): so that one team cannot buy the host's
/// CPU with short intervals.
pub const MAX_TEAM_PROBES_PER_SEC: f64 = 5_000.0;

/// Events a slow listener may fall behind by before it must read the open
/// incidents again.
pub const EVENT_BACKLOG: usize = 4096;

/// What [`Recovery::open`] needs.
pub struct RecoveryDeps {
    /// Durable state.
    pub store: Store,
    /// What runs the probes and the stages.
    pub plugins: Arc<Plugins>,
    /// The clock timers read.
    pub clock: Clock,
    /// How long resolved incidents are kept.
    pub retention: Duration,
    /// Most incidents whose recovery runs at once, host-wide.
    pub max_concurrent_recoveries: usize,
}

/// The histograms of `/metrics`.
pub struct RecoveryMetrics {
    /// From a check's first failing result to its incident opening.
    pub detection: DelayHistogram,
    /// From an incident opening to a recovery stage repairing it.
    pub time_to_recover: DelayHistogram,
}

/// One check in memory.
pub(super) struct Entry {
    pub check: Arc<HealthCheck>,
    pub rt: CheckRuntime,
    /// When the check loop runs it next; none while a recovery re-checks it.
    pub next_run: Option<Timestamp>,
    /// A scheduled run is under way.
    pub probing: bool,
    /// Its open incident.
    pub incident: Option<Incident>,
    /// The recovery running for its incident.
    pub job: Option<tokio::task::AbortHandle>,
    /// The turn to change and write its incident and budget.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Entry {
    /// Whether it fails now: its latest results failed or an incident is
    /// open. Checks that depend on it hold back their own recovery.
    fn is_failing(&self) -> bool {
        self.rt.failures > 0 || self.incident.is_some()
    }
}

/// Everything in memory, under one lock.
#[derive(Default)]
pub(super) struct State {
    pub checks: BTreeMap<String, Entry>,
    timers: Timers<String>,
    /// Open incident id → its check.
    open: HashMap<String, String>,
}

impl State {
    /// The first check `parents` names that fails now, with its open
    /// incident.
    fn failing_parent(&self, parents: &[String]) -> Option<(String, Option<String>)> {
        parents.iter().find_map(|id| {
            let entry = self.checks.get(id)?;
            entry
                .is_failing()
                .then(|| (id.clone(), entry.incident.as_ref().map(|i| i.id.clone())))
        })
    }
}

/// Health checks, incidents and their recovery.
pub struct Recovery {
    pub(super) records: RecoveryRecords,
    pub(super) plugins: Arc<Plugins>,
    pub(super) clock: Clock,
    state: Mutex<State>,
    /// The turn to change the set of checks and their definitions.
    definitions: tokio::sync::Mutex<()>,
    /// Pokes the check loop when a check is added or its schedule changes.
    wake: Arc<Notify>,
    /// Recovery slots, host-wide.
    pub(super) slots: Arc<Semaphore>,
    next_id: AtomicU64,
    /// What happens to incidents, for alerting.
    events: tokio::sync::broadcast::Sender<IncidentEvent>,
    /// Totals for `/status`, seeded from the store.
    total: AtomicU64,
    auto_recovered: AtomicU64,
    resolved: AtomicU64,
    metrics: RecoveryMetrics,
}

impl Recovery {
    /// Loads the checks, their budgets and the open incidents, resumes the
    /// recoveries the host was running when it stopped, and starts the
    /// check loop and retention on `loops`.
    pub async fn open(deps: RecoveryDeps, loops: &Loops) -> Result<Arc<Self>, RecoveryError> {
        let records = RecoveryRecords::open(&deps.store).await?;
        let totals = records.counts()?;
        let checks = records.load_checks().await?;
        let mut stage_runs: HashMap<String, Vec<Timestamp>> = records
            .load_stage_runs()
            .await?
            .into_iter()
            .map(|r| (r.check_id, r.runs))
            .collect();
        let open = records.load_open().await?;
        let recovery = Arc::new(Self {
            records,
            plugins: deps.plugins,
            clock: deps.clock,
            state: Mutex::new(State::default()),
            definitions: tokio::sync::Mutex::new(()),
            wake: Arc::new(Notify::new()),
            slots: Arc::new(Semaphore::new(deps.max_concurrent_recoveries.max(1))),
            next_id: AtomicU64::new(0),
            events: tokio::sync::broadcast::channel(EVENT_BACKLOG).0,
            total: AtomicU64::new(totals.total),
            auto_recovered: AtomicU64::new(totals.auto_recovered),
            resolved: AtomicU64::new(totals.resolved),
            metrics: RecoveryMetrics {
                // 1 ms to about 9 hours.
                detection: DelayHistogram::new(0.001, 25),
                time_to_recover: DelayHistogram::new(0.001, 25),
            },
        });
        let now = recovery.clock.now();
        {
            let mut state = recovery.lock();
            for check in checks {
                let mut rt = CheckRuntime::default();
                rt.stage_runs = stage_runs.remove(&check.id).unwrap_or_default().into();
                // Spread over the first interval, so that a restart does
                // not run every check at once.
                let first = now
                    .plus(Duration::from_millis(check.initial_delay))
                    .plus(random_below(check.interval));
                state.timers.set(first, check.id.clone());
                state.checks.insert(
                    check.id.clone(),
                    Entry {
                        check: Arc::new(check),
                        rt,
                        next_run: Some(first),
                        probing: false,
                        incident: None,
                        job: None,
                        turn: Arc::default(),
                    },
                );
            }
        }
        for incident in open {
            recovery.resume(incident).await;
        }
        let (pruning, clock, retention) = (recovery.records.clone(), deps.clock, deps.retention);
        loops.spawn("incident-retention", move |shutdown| {
            prune_forever(pruning, clock, retention, shutdown)
        });
        let looping = recovery.clone();
        loops.spawn("recovery-checks", move |shutdown| {
            let (clock, wake) = (looping.clock, looping.wake.clone());
            run_timed(clock, wake, shutdown, move || {
                let looping = looping.clone();
                async move { looping.pass() }
            })
        });
        Ok(recovery)
    }

    /// Puts an incident that was open when the host stopped back on its
    /// check, and goes on with its recovery: a stage that was running or
    /// being checked counts as run, so the check runs again and, if it
    /// still fails, the next stage follows.
    async fn resume(self: &Arc<Self>, incident: Incident) {
        let check_id = incident.check_id.clone();
        let known = self.lock().checks.contains_key(&check_id);
        if !known {
            // Its check was deleted while the host was down.
            let mut resolved = incident.clone();
            resolved.resolve(
                self.clock.now(),
                "recovery",
                "its health check no longer exists",
            );
            let ops = self.records.put_incident_ops(Some(&incident), &resolved);
            if let Err(err) = self.records.write(ops).await {
                tracing::error!(incident_id = %incident.id, error = %err, "could not close an orphaned incident");
            }
            return;
        }
        {
            let mut state = self.lock();
            state.open.insert(incident.id.clone(), check_id.clone());
            if let Some(entry) = state.checks.get_mut(&check_id) {
                entry.incident = Some(incident);
            }
        }
        let start = self
            .change(&check_id, |state, _, now| {
                let incident = state.checks.get_mut(&check_id)?.incident.as_mut()?;
                let start = match incident.recovery {
                    RecoveryStep::Running { stage } | RecoveryStep::Rechecking { stage } => {
                        incident.note(
                            now,
                            TimelineEvent::Interrupted,
                            Some(stage),
                            None,
                            "the host stopped; the check runs again, then the next stage",
                        );
                        incident.recovery = RecoveryStep::Queued;
                        Some(JobStart::Recheck { after_stage: stage })
                    }
                    RecoveryStep::Queued => Some(JobStart::NextStage),
                    RecoveryStep::Idle => None,
                };
                start.filter(|_| incident.status == IncidentStatus::Active && !incident.flapping)
            })
            .await
            .flatten();
        if let Some(start) = start {
            self.start_job(&check_id, start);
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("recovery state poisoned")
    }

    /// Makes a change to the check `check_id`'s entry (and anything else
    /// in `state`) and writes what changed of its incident and budget.
    /// `change` also gets the list of extra operations to write with it.
    /// Returns `None` when the check is gone.
    pub(super) async fn change<R>(
        &self,
        check_id: &str,
        change: impl FnOnce(&mut State, &mut Vec<Op>, Timestamp) -> R,
    ) -> Option<R> {
        let turn = self.lock().checks.get(check_id)?.turn.clone();
        let _turn = turn.lock().await;
        let mut events = Vec::new();
        let (ops, answer) = {
            let mut state = self.lock();
            let now = self.clock.now();
            let entry = state.checks.get(check_id)?;
            let (before, runs_before) = (entry.incident.clone(), entry.rt.stage_runs.len());
            let last_run_before = entry.rt.stage_runs.back().copied();
            let mut ops = Vec::new();
            let answer = change(&mut state, &mut ops, now);
            if let Some(entry) = state.checks.get_mut(check_id) {
                if entry.rt.stage_runs.len() != runs_before
                    || entry.rt.stage_runs.back().copied() != last_run_before
                {
                    let runs = entry.rt.stage_runs.iter().copied().collect();
                    ops.push(self.records.put_stage_runs_op(check_id, runs));
                }
                events = IncidentEvent::between(before.as_ref(), entry.incident.as_ref());
                let closed = self.settle_incident(entry, before.as_ref(), &mut ops, now);
                if let Some(id) = closed {
                    state.open.remove(&id);
                }
            }
            (ops, answer)
        };
        if let Err(err) = self.records.write(ops).await {
            tracing::error!(check_id = %check_id, error = %err, "could not write a change of a health check's incident");
        }
        for event in events {
            // Nobody listening is fine; a listener that fell behind reads
            // the open incidents again (see `subscribe`).
            let _ = self.events.send(event);
        }
        Some(answer)
    }

    /// Writes an incident that changed, counts what it ended, and takes it
    /// off its check once resolved. Returns the id of an incident resolved.
    fn settle_incident(
        &self,
        entry: &mut Entry,
        before: Option<&Incident>,
        ops: &mut Vec<Op>,
        now: Timestamp,
    ) -> Option<String> {
        let incident = entry.incident.as_ref()?;
        if before == Some(incident) {
            return None;
        }
        ops.extend(self.records.put_incident_ops(before, incident));
        if before.is_none() {
            self.total.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .detection
                .observe(Duration::from_millis(incident.detection_ms));
        }
        if incident.status.is_open() {
            return None;
        }
        self.resolved.fetch_add(1, Ordering::Relaxed);
        if incident.auto_recovered {
            self.auto_recovered.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .time_to_recover
                .observe(now.since(incident.opened_at));
        }
        tracing::info!(
            check_id = %incident.check_id,
            incident_id = %incident.id,
            resolved_by = incident.resolved_by.as_deref().unwrap_or("-"),
            auto_recovered = incident.auto_recovered,
            "incident resolved"
        );
        // The recovery, if one runs, is not aborted here: this may be that
        // recovery's own change, still to be written. It sees the incident
        // resolved and ends; a resolve by hand aborts it itself.
        entry.rt.reset_failures();
        entry.incident.take().map(|i| i.id)
    }

    /// One pass of the check loop: starts the checks that are due and
    /// returns when the next one is.
    fn pass(self: &Arc<Self>) -> Option<Timestamp> {
        let now = self.clock.now();
        let mut due = Vec::new();
        let next = {
            let mut guard = self.lock();
            let State { checks, timers, .. } = &mut *guard;
            for id in timers.take_due(now) {
                let Some(entry) = checks.get_mut(&id) else {
                    continue;
                };
                entry.next_run = None;
                if entry.job.is_some() {
                    // The recovery re-checks it; the loop takes over again
                    // when the recovery ends.
                    continue;
                }
                let next = now
                    .plus(Duration::from_millis(entry.check.interval))
                    .plus(jitter(entry.check.interval));
                entry.next_run = Some(next);
                timers.set(next, id);
                if !entry.probing {
                    entry.probing = true;
                    due.push(entry.check.clone());
                }
            }
            timers.next()
        };
        for check in due {
            let this = self.clone();
            self.plugins.guest_runtime().spawn(async move {
                let result = this.probe(&check).await;
                this.take_result(&check.id, result, true).await;
            });
        }
        next
    }

    /// Runs `check`'s plugin once against its target, within its timeout.
    pub(super) async fn probe(&self, check: &HealthCheck) -> CheckResult {
        let at = self.clock.now();
        let started = Instant::now();
        let finish = |status, health, message: String, measurements| CheckResult {
            at,
            status,
            health,
            message,
            duration_ms: started.elapsed().as_millis() as u64,
            measurements,
        };
        let Some(target) = &check.target else {
            return finish(
                ResultStatus::NoTarget,
                None,
                "nothing to probe: the check has no target".into(),
                Vec::new(),
            );
        };
        let Some((team, name)) =
            self.plugins
                .resolve_plugin(&check.team, &check.kind, PluginKind::HealthCheck)
        else {
            return finish(
                ResultStatus::Failed,
                None,
                format!(
                    "no health-check plugin named {:?} serves team {:?} (nor core)",
                    check.kind, check.team
                ),
                Vec::new(),
            );
        };
        let caller = Caller {
            worker_id: None,
            subject_id: Some(check.id.clone()),
        };
        let call = self.plugins.check(&team, &name, target, caller);
        match tokio::time::timeout(Duration::from_millis(check.timeout), call).await {
            Ok(Ok(report)) => {
                let status = match report.status {
                    HealthStatus::Healthy | HealthStatus::Degraded => ResultStatus::Passed,
                    HealthStatus::Unhealthy => ResultStatus::Failed,
                };
                finish(
                    status,
                    Some(report.status),
                    report.message,
                    report.measurements,
                )
            }
            Ok(Err(err)) => finish(ResultStatus::Failed, None, probe_error(&err), Vec::new()),
            Err(_) => finish(
                ResultStatus::Failed,
                None,
                format!(
                    "the probe took longer than its timeout of {} ms",
                    check.timeout
                ),
                Vec::new(),
            ),
        }
    }

    /// Takes in a result of the check loop (`scheduled`) or of a run asked
    /// for by hand: counts it, and opens, changes or resolves the incident.
    pub(super) async fn take_result(
        self: &Arc<Self>,
        check_id: &str,
        result: CheckResult,
        scheduled: bool,
    ) {
        let start = self
            .change(check_id, |state, _, now| {
                let parents = state.checks.get(check_id)?.check.depends_on.clone();
                let failing_parent = state.failing_parent(&parents);
                let entry = state.checks.get_mut(check_id)?;
                if scheduled {
                    entry.probing = false;
                }
                let start = self.judge(entry, &result, failing_parent, now);
                if let Some(incident) = &entry.incident {
                    let id = incident.id.clone();
                    state.open.insert(id, check_id.to_owned());
                }
                start
            })
            .await
            .flatten();
        if let Some(start) = start {
            self.start_job(check_id, start);
        }
    }

    /// What a result of the check loop means for the check's incident.
    /// Returns the recovery to start, if one should.
    fn judge(
        &self,
        entry: &mut Entry,
        result: &CheckResult,
        failing_parent: Option<(String, Option<String>)>,
        now: Timestamp,
    ) -> Option<JobStart> {
        let check = entry.check.clone();
        let previous_passed = entry.rt.recent.back().map(CheckResult::passed);
        let observed = entry.rt.observe(&check, result);
        if result.status == ResultStatus::NoTarget {
            return None;
        }
        let recovering = entry.job.is_some();
        let Some(incident) = entry.incident.as_mut() else {
            let flapping_now = matches!(observed.flap, Some(FlapChange::Started(_)));
            if !((result.failed() && observed.reached_threshold) || flapping_now) {
                return None;
            }
            let id = self.incident_id(now);
            let incident = open_incident(&check, &entry.rt, result, failing_parent, id, now);
            tracing::warn!(
                check_id = %check.id,
                incident_id = %incident.id,
                severity = check.severity.as_str(),
                status = incident.status.as_str(),
                "incident opened: {}",
                incident.summary
            );
            let start = (incident.status == IncidentStatus::Active && !incident.flapping)
                .then_some(JobStart::NextStage);
            entry.incident = Some(incident);
            return start.and_then(|start| self.first_stage_or_escalate(entry, start, now));
        };
        // A result that changes the picture goes on the timeline; a run of
        // the same result does not (a service down for a day would fill it).
        if previous_passed != Some(result.passed()) && !recovering {
            incident.note_result(result, "");
        }
        match observed.flap {
            Some(FlapChange::Started(changes)) => {
                incident.flapping = true;
                incident.recovery = RecoveryStep::Idle;
                incident.note(
                    now,
                    TimelineEvent::Flapping,
                    None,
                    None,
                    format!("{changes} changes in the last 21 results: automatic repair stops until it settles"),
                );
                tracing::warn!(check_id = %check.id, incident_id = %incident.id, "check is flapping; automatic repair stops");
                if let Some(job) = entry.job.take() {
                    job.abort();
                }
                return None;
            }
            Some(FlapChange::Settled(changes)) => {
                incident.flapping = false;
                incident.note(
                    now,
                    TimelineEvent::Settled,
                    None,
                    None,
                    format!("{changes} changes left in the last 21 results"),
                );
                tracing::info!(check_id = %check.id, incident_id = %incident.id, "check settled");
                if result.passed() {
                    incident.resolve(now, "check", "the check settled and passes");
                    return None;
                }
                if incident.status == IncidentStatus::Active && !recovering {
                    return self.first_stage_or_escalate(entry, JobStart::NextStage, now);
                }
                return None;
            }
            None => {}
        }
        if incident.flapping || recovering {
            return None;
        }
        if observed.healthy_again {
            let n = check.success_threshold;
            incident.resolve(
                now,
                "check",
                format!("the check passed {n} time(s) in a row on its own"),
            );
            return None;
        }
        if incident.status == IncidentStatus::Suppressed
            && result.failed()
            && failing_parent.is_none()
        {
            incident.status = IncidentStatus::Active;
            incident.parent_incident = None;
            incident.note(
                now,
                TimelineEvent::Unsuppressed,
                None,
                None,
                "the checks it depends on pass again; its own recovery may run",
            );
            return self.first_stage_or_escalate(entry, JobStart::NextStage, now);
        }
        None
    }

    /// Starts recovery for an active incident, or escalates it when the
    /// check has no stages to run.
    fn first_stage_or_escalate(
        &self,
        entry: &mut Entry,
        start: JobStart,
        now: Timestamp,
    ) -> Option<JobStart> {
        let incident = entry.incident.as_mut()?;
        if entry.check.recovery.is_empty() {
            incident.escalate(now, "the check has no recovery stages");
            tracing::warn!(check_id = %entry.check.id, incident_id = %incident.id, "incident escalated: no recovery stages");
            return None;
        }
        incident.recovery = RecoveryStep::Queued;
        Some(start)
    }

    fn incident_id(&self, now: Timestamp) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed) % 10_000;
        format!("incident_{}{n:04}", now.unix_millis())
    }

    /// Starts the recovery of `check_id`'s incident on the guest pool,
    /// where plugin calls run.
    pub(super) fn start_job(self: &Arc<Self>, check_id: &str, start: JobStart) {
        let mut state = self.lock();
        let Some(entry) = state.checks.get_mut(check_id) else {
            return;
        };
        if entry.job.is_some() {
            return;
        }
        let this = self.clone();
        let id = check_id.to_owned();
        let handle = self
            .plugins
            .guest_runtime()
            .spawn(async move { this.run_job(id, start).await });
        entry.job = Some(handle.abort_handle());
    }

    /// After a recovery ends: the check loop takes the check back.
    pub(super) fn job_ended(&self, check_id: &str) {
        let mut guard = self.lock();
        let State { checks, timers, .. } = &mut *guard;
        if let Some(entry) = checks.get_mut(check_id) {
            entry.job = None;
            let next = self
                .clock
                .now()
                .plus(Duration::from_millis(entry.check.interval));
            if let Some(old) = entry.next_run.replace(next) {
                timers.cancel(old, &entry.check.id);
            }
            timers.set(next, check_id.to_owned());
        }
        drop(guard);
        self.wake.notify_one();
    }

    /// The check, as it is now.
    pub(super) fn current_check(&self, check_id: &str) -> Option<Arc<HealthCheck>> {
        self.lock().checks.get(check_id).map(|e| e.check.clone())
    }

    // ---- what the API asks ----

    /// Registers a check of `team`.
    pub async fn create(
        self: &Arc<Self>,
        team: Name,
        new: NewHealthCheck,
    ) -> Result<CheckView, RecoveryError> {
        let id = new
            .id
            .clone()
            .ok_or_else(|| RecoveryError::invalid("id", "is required"))?;
        let check = new.build(id, team, self.clock.now())?;
        let _definitions = self.definitions.lock().await;
        {
            let state = self.lock();
            if state.checks.contains_key(&check.id) {
                return Err(RecoveryError::Conflict {
                    code: "check_exists",
                    message: format!("a health check with id {:?} already exists", check.id),
                });
            }
            if state.checks.len() >= MAX_CHECKS {
                return Err(RecoveryError::Conflict {
                    code: "too_many_checks",
                    message: format!("this host runs at most {MAX_CHECKS} health checks"),
                });
            }
            self.validate_links(&state, &check)?;
        }
        self.records
            .write(vec![self.records.put_check_op(&check)])
            .await?;
        tracing::info!(check_id = %check.id, team = %check.team, kind = %check.kind, "health check registered");
        let first = self
            .clock
            .now()
            .plus(Duration::from_millis(check.initial_delay));
        let view = {
            let mut state = self.lock();
            state.timers.set(first, check.id.clone());
            let entry = Entry {
                check: Arc::new(check),
                rt: CheckRuntime::default(),
                next_run: Some(first),
                probing: false,
                incident: None,
                job: None,
                turn: Arc::default(),
            };
            let view = view_of(&entry, self.clock.now());
            state.checks.insert(entry.check.id.clone(), entry);
            view
        };
        self.wake.notify_one();
        Ok(view)
    }

    /// Checks what a check names outside itself: its plugin, its stages'
    /// plugins, and the checks it depends on (same team, no cycle).
    fn validate_links(&self, state: &State, check: &HealthCheck) -> Result<(), RecoveryError> {
        if self
            .plugins
            .resolve_plugin(&check.team, &check.kind, PluginKind::HealthCheck)
            .is_none()
        {
            return Err(RecoveryError::invalid(
                "type",
                format!(
                    "names no health-check plugin of team {:?} or core: {:?}",
                    check.team, check.kind
                ),
            ));
        }
        for (n, stage) in check.recovery.iter().enumerate() {
            if self
                .plugins
                .resolve_plugin(&check.team, &stage.strategy, PluginKind::RecoveryStrategy)
                .is_none()
            {
                return Err(RecoveryError::invalid(
                    format!("recovery[{n}].strategy"),
                    format!(
                        "names no recovery-strategy plugin of team {:?} or core: {:?}",
                        check.team, stage.strategy
                    ),
                ));
            }
        }
        for parent in &check.depends_on {
            match state.checks.get(parent) {
                Some(entry) if entry.check.team == check.team => {}
                _ => {
                    return Err(RecoveryError::invalid(
                        "dependsOn",
                        format!(
                            "names {parent:?}, which is not a health check of team {:?}",
                            check.team
                        ),
                    ));
                }
            }
        }
        let rate = |c: &HealthCheck| 1000.0 / c.interval as f64;
        let team_rate: f64 = state
            .checks
            .values()
            .filter(|e| e.check.team == check.team && e.check.id != check.id)
            .map(|e| rate(&e.check))
            .sum::<f64>()
            + rate(check);
        if team_rate > MAX_TEAM_PROBES_PER_SEC {
            return Err(RecoveryError::invalid(
                "interval",
                format!(
                    "would make team {:?}'s checks run {team_rate:.0} probes a second; a team may run at most {MAX_TEAM_PROBES_PER_SEC:.0}",
                    check.team
                ),
            ));
        }
        // A cycle would go through this check: walk up from its parents.
        let mut seen: Vec<&str> = Vec::new();
        let mut stack: Vec<&str> = check.depends_on.iter().map(String::as_str).collect();
        while let Some(id) = stack.pop() {
            if id == check.id {
                return Err(RecoveryError::invalid(
                    "dependsOn",
                    format!("makes a cycle through {id:?}"),
                ));
            }
            if seen.contains(&id) {
                continue;
            }
            seen.push(id);
            if let Some(entry) = state.checks.get(id) {
                stack.extend(entry.check.depends_on.iter().map(String::as_str));
            }
        }
        Ok(())
    }

    /// Replaces the definition of check `id`; its results, budget and open
    /// incident stay.
    pub async fn replace(
        self: &Arc<Self>,
        id: &Name,
        new: NewHealthCheck,
    ) -> Result<CheckView, RecoveryError> {
        if new.id.as_ref().is_some_and(|given| given != id) {
            return Err(RecoveryError::invalid(
                "id",
                format!("must be the path's id, {id}"),
            ));
        }
        let _definitions = self.definitions.lock().await;
        let turn = self.turn_of(id)?;
        let _turn = turn.lock().await;
        let check = {
            let state = self.lock();
            let entry = state
                .checks
                .get(id.as_str())
                .ok_or_else(|| RecoveryError::CheckNotFound(id.to_string()))?;
            let team = Name::parse(&entry.check.team).expect("stored teams are names");
            let mut check = new.build(id.clone(), team, self.clock.now())?;
            check.created_at = entry.check.created_at;
            self.validate_links(&state, &check)?;
            check
        };
        self.records
            .write(vec![self.records.put_check_op(&check)])
            .await?;
        let view = {
            let mut guard = self.lock();
            let now = self.clock.now();
            let State { checks, timers, .. } = &mut *guard;
            let entry = checks
                .get_mut(id.as_str())
                .ok_or_else(|| RecoveryError::CheckNotFound(id.to_string()))?;
            entry.check = Arc::new(check);
            if let Some(old) = entry.next_run.take() {
                timers.cancel(old, &entry.check.id);
                let next = now.plus(Duration::from_millis(entry.check.initial_delay));
                entry.next_run = Some(next);
                timers.set(next, entry.check.id.clone());
            }
            view_of(entry, now)
        };
        self.wake.notify_one();
        Ok(view)
    }

    /// Deletes check `id`; its open incident is resolved, saying so.
    pub async fn delete(&self, id: &Name, by: &str) -> Result<(), RecoveryError> {
        let _definitions = self.definitions.lock().await;
        let turn = self.turn_of(id)?;
        let _turn = turn.lock().await;
        let ops = {
            let state = self.lock();
            let entry = state
                .checks
                .get(id.as_str())
                .ok_or_else(|| RecoveryError::CheckNotFound(id.to_string()))?;
            let dependants: Vec<&str> = state
                .checks
                .values()
                .filter(|e| e.check.depends_on.iter().any(|p| p == id.as_str()))
                .map(|e| e.check.id.as_str())
                .collect();
            if !dependants.is_empty() {
                return Err(RecoveryError::Conflict {
                    code: "check_in_use",
                    message: format!(
                        "health checks {dependants:?} depend on {id}; change them first"
                    ),
                });
            }
            let mut ops = self.records.delete_check_ops(id).to_vec();
            if let Some(incident) = &entry.incident {
                let mut resolved = incident.clone();
                resolved.resolve(self.clock.now(), by, "its health check was deleted");
                ops.extend(self.records.put_incident_ops(Some(incident), &resolved));
            }
            ops
        };
        self.records.write(ops).await?;
        let mut state = self.lock();
        if let Some(entry) = state.checks.remove(id.as_str()) {
            if let Some(job) = entry.job {
                job.abort();
            }
            if let Some(incident) = entry.incident {
                state.open.remove(&incident.id);
                self.resolved.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(next) = entry.next_run {
                state.timers.cancel(next, &entry.check.id);
            }
        }
        tracing::info!(check_id = %id, "health check deleted");
        Ok(())
    }

    fn turn_of(&self, id: &Name) -> Result<Arc<tokio::sync::Mutex<()>>, RecoveryError> {
        self.lock()
            .checks
            .get(id.as_str())
            .map(|entry| entry.turn.clone())
            .ok_or_else(|| RecoveryError::CheckNotFound(id.to_string()))
    }

    /// Check `id` and where it stands.
    pub fn check(&self, id: &str) -> Result<CheckView, RecoveryError> {
        let state = self.lock();
        let entry = state
            .checks
            .get(id)
            .ok_or_else(|| RecoveryError::CheckNotFound(id.to_owned()))?;
        Ok(view_of(entry, self.clock.now()))
    }

    /// A page of checks in id order, limited to `only_team` when the
    /// caller sees one team.
    pub fn checks(&self, query: &CheckQuery, only_team: Option<&str>) -> CheckPage {
        let limit = query.limit.unwrap_or(50).clamp(1, 500);
        let Some(team) = crate::auth::team_filter(only_team, query.team.as_deref()) else {
            return CheckPage {
                items: Vec::new(),
                limit,
                next_cursor: None,
            };
        };
        let now = self.clock.now();
        let state = self.lock();
        let after = query.cursor.as_ref().map(|c| c.to_string());
        let range = match &after {
            Some(after) => state
                .checks
                .range::<String, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => state.checks.range::<String, _>(..),
        };
        let mut items = Vec::new();
        let mut next_cursor = None;
        for (id, entry) in range {
            if team.as_ref().is_some_and(|t| *t != entry.check.team) {
                continue;
            }
            let view = view_of(entry, now);
            if query.state.is_some_and(|s| s != view.state) {
                continue;
            }
            if items.len() == limit {
                next_cursor = items.last().map(|v: &CheckView| v.check.id.clone());
                break;
            }
            let _ = id;
            items.push(view);
        }
        CheckPage {
            items,
            limit,
            next_cursor,
        }
    }

    /// Runs check `id` now, out of its schedule, and takes in the result
    /// like any other. While a recovery re-checks it, the run is refused.
    pub async fn run_now(self: &Arc<Self>, id: &Name) -> Result<CheckResult, RecoveryError> {
        let check = {
            let state = self.lock();
            let entry = state
                .checks
                .get(id.as_str())
                .ok_or_else(|| RecoveryError::CheckNotFound(id.to_string()))?;
            if entry.job.is_some() {
                return Err(RecoveryError::Conflict {
                    code: "recovery_running",
                    message: format!("a recovery runs for {id} and checks it itself"),
                });
            }
            entry.check.clone()
        };
        let result = self.probe(&check).await;
        self.take_result(&check.id, result.clone(), false).await;
        Ok(result)
    }

    /// Incident `id`: from memory while open, else from the store.
    pub fn incident(&self, id: &str) -> Result<Incident, RecoveryError> {
        {
            let state = self.lock();
            if let Some(check_id) = state.open.get(id)
                && let Some(incident) = state.checks.get(check_id).and_then(|e| e.incident.clone())
            {
                return Ok(incident);
            }
        }
        self.records
            .get(id)?
            .ok_or_else(|| RecoveryError::IncidentNotFound(id.to_owned()))
    }

    /// A page of incidents, oldest first.
    pub async fn incidents(
        &self,
        query: IncidentQuery,
        only_team: Option<String>,
    ) -> Result<IncidentPage, RecoveryError> {
        let records = self.records.clone();
        tokio::task::spawn_blocking(move || records.page(&query, only_team.as_deref()))
            .await
            .map_err(|err| {
                RecoveryError::Store(crate::store::StoreError::Backend(err.to_string()))
            })?
            .map_err(RecoveryError::from)
    }

    /// Resolves incident `id` by hand: `by` (who) and `resolution` (why).
    pub async fn resolve(
        self: &Arc<Self>,
        id: &str,
        by: &str,
        resolution: &str,
    ) -> Result<Incident, RecoveryError> {
        let resolution = resolution.trim();
        if resolution.is_empty() || resolution.chars().count() > 2000 {
            return Err(RecoveryError::invalid(
                "resolution",
                "must be 1 to 2000 characters",
            ));
        }
        let incident = self.incident(id)?;
        if !incident.status.is_open() {
            return Err(RecoveryError::Conflict {
                code: "already_resolved",
                message: format!("incident {id} is already resolved"),
            });
        }
        let check_id = incident.check_id.clone();
        let resolved = self
            .change(&check_id, |state, _, now| {
                let entry = state.checks.get_mut(&check_id)?;
                let open = entry.incident.as_mut().filter(|i| i.id == id)?;
                open.resolve(now, by, resolution);
                let resolved = open.clone();
                if let Some(job) = entry.job.take() {
                    job.abort();
                }
                Some(resolved)
            })
            .await
            .flatten();
        match resolved {
            Some(incident) => {
                self.job_ended(&check_id);
                Ok(incident)
            }
            None => Err(RecoveryError::Conflict {
                code: "already_resolved",
                message: format!("incident {id} was resolved meanwhile"),
            }),
        }
    }

    /// What happens to incidents from now on: opened, escalated, flapping,
    /// settled, back from suppression, resolved. Events are sent once the
    /// change is written. A receiver that falls more than
    /// [`EVENT_BACKLOG`] events behind gets `Lagged` and should read
    /// [`Recovery::open_incidents`] again; at start, likewise, the open
    /// incidents are the state to begin from.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<IncidentEvent> {
        self.events.subscribe()
    }

    /// Every open incident, as it is now.
    pub fn open_incidents(&self) -> Vec<Incident> {
        self.lock()
            .checks
            .values()
            .filter_map(|e| e.incident.clone())
            .collect()
    }

    /// Totals for `/status`, from memory.
    pub fn counts(&self) -> IncidentCounts {
        IncidentCounts {
            total: self.total.load(Ordering::Relaxed),
            active: self.lock().open.len() as u64,
            auto_recovered: self.auto_recovered.load(Ordering::Relaxed),
            resolved: self.resolved.load(Ordering::Relaxed),
        }
    }

    /// The histograms of `/metrics`.
    pub fn metrics(&self) -> &RecoveryMetrics {
        &self.metrics
    }

    /// Stops every recovery under way: their incidents keep the step they
    /// were at and go on after the next start.
    pub fn stop(&self) {
        let mut state = self.lock();
        for entry in state.checks.values_mut() {
            if let Some(job) = entry.job.take() {
                job.abort();
            }
        }
    }
}

/// Opens an incident for `check`, whose latest result just failed its
/// threshold (or started flapping).
fn open_incident(
    check: &HealthCheck,
    rt: &CheckRuntime,
    result: &CheckResult,
    failing_parent: Option<(String, Option<String>)>,
    id: String,
    now: Timestamp,
) -> Incident {
    let failures = rt.failure_streak();
    let first = failures.first().map_or(result.at, |r| r.at);
    let mut incident = Incident {
        id,
        check_id: check.id.clone(),
        check_name: check.name.clone(),
        team: check.team.clone(),
        severity: check.severity,
        status: IncidentStatus::Active,
        summary: if rt.flapping {
            format!(
                "the check flaps: {} changes in its last 21 results",
                rt.changes()
            )
        } else {
            result.message.clone()
        },
        failures: failures.clone(),
        flapping: rt.flapping,
        recovery: RecoveryStep::Idle,
        next_stage: 0,
        parent_incident: None,
        auto_recovered: false,
        recovered_by_stage: None,
        resolution: None,
        resolved_by: None,
        detection_ms: now.since(first).as_millis() as u64,
        opened_at: now,
        updated_at: now,
        escalated_at: None,
        resolved_at: None,
        timeline: Vec::new(),
        timeline_dropped: 0,
    };
    for failure in &failures {
        incident.note_result(failure, "");
    }
    let why = if rt.flapping {
        format!(
            "the check flaps ({} changes in the last 21 results)",
            rt.changes()
        )
    } else {
        format!("{} failures in a row: {}", failures.len(), result.message)
    };
    incident.note(now, TimelineEvent::Opened, None, None, why);
    if rt.flapping {
        incident.note(
            now,
            TimelineEvent::Flapping,
            None,
            None,
            "automatic repair stays off until it settles",
        );
    }
    if let Some((parent, parent_incident)) = failing_parent {
        incident.status = IncidentStatus::Suppressed;
        incident.note(
            now,
            TimelineEvent::Suppressed,
            None,
            None,
            format!("{parent}, which it depends on, fails: no recovery and no page for this one"),
        );
        incident.parent_incident = parent_incident;
    }
    incident
}

fn view_of(entry: &Entry, now: Timestamp) -> CheckView {
    let mut rt = entry.rt.clone();
    let budget_left = rt.budget_left(&entry.check.budget, now);
    CheckView {
        check: (*entry.check).clone(),
        state: entry
            .rt
            .state(entry.check.target.is_some(), entry.incident.is_some()),
        consecutive_failures: entry.rt.failures,
        consecutive_successes: entry.rt.successes,
        flapping: entry.rt.flapping,
        recent_results: entry.rt.recent.iter().cloned().collect(),
        next_run: entry.next_run,
        open_incident: entry.incident.as_ref().map(|i| i.id.clone()),
        budget_left,
    }
}

/// Why a probe's call failed, for its result.
fn probe_error(err: &InvokeError) -> String {
    match err {
        InvokeError::Call(call) => format!("the probe failed ({}): {call}", call.kind().as_str()),
        other => format!("the probe could not run: {other}"),
    }
}

/// A random delay of up to a tenth of `interval_ms` (at most a second), so
/// checks registered together do not run in lockstep.
fn jitter(interval_ms: u64) -> Duration {
    random_below((interval_ms / 10).min(1000) + 1)
}

/// A random delay of less than `ms` milliseconds.
fn random_below(ms: u64) -> Duration {
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(getrandom::u64().unwrap_or(0) % ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_tenth_of_the_interval_and_a_second() {
        for _ in 0..1000 {
            assert!(jitter(100) <= Duration::from_millis(10));
            assert!(jitter(60_000) <= Duration::from_millis(1000));
            assert!(random_below(1000) < Duration::from_millis(1000));
        }
        assert_eq!(random_below(0), Duration::ZERO);
        // Spread, not one value: a thousand draws over a second differ.
        let draws: std::collections::BTreeSet<Duration> =
            (0..1000).map(|_| random_below(1000)).collect();
        assert!(draws.len() > 100, "{}", draws.len());
    }
}
