//! [`Alerts`]: alerts raised from incidents, failed plans and unhealthy
//! workers; held, notified, escalated on durable timers, acknowledged and
//! resolved.
//!
//! Every change of alerts is one write: the alerts' records and the
//! deliveries their notices queue in the outbox go in one batch, under one
//! turn, so an alert raised before a crash is delivered after the restart
//! and a notice is queued exactly once. Memory (the open alerts, one per
//! source, and their timers) follows a written change; the store is the
//! truth at start.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::alert::{
    Alert, AlertPage, AlertQuery, AlertStatus, Hold, NextEscalation, Outgoing, SourceKind,
    recovery_wait, source_key,
};
use super::delivery::{Delivery, Notice, NoticeEvent, Outbox};
use super::records::{self, AlertRecords};
use super::rules::{AlertRules, RuleBook};
use super::silences::{NewSilence, Silence, SilenceError, Silences};
use crate::clock::Timestamp;
use crate::engine::{Clock, Loops, Shutdown, Timers, run_timed};
use crate::plans::{ActionPlans, Plan, PlanStatus};
use crate::plugins::Plugins;
use crate::recovery::{Incident, IncidentStatus, Recovery, Severity};
use crate::store::{Batch, Store, StoreError};
use crate::tasks::Priority;
use crate::workers::{self, Workers};

/// Most open plan alerts of one team; past it a failed plan is logged but
/// raises no alert until some are resolved.
pub const MAX_OPEN_PLAN_ALERTS: usize = 100;

/// How often workers' health is looked at.
const WORKER_POLL: Duration = Duration::from_secs(5);

/// How far back failed plans are looked through at start and after a lag.
const PLAN_LOOKBACK: Duration = Duration::from_secs(86_400);

/// How often silences that ended a day ago are deleted.
const SILENCE_PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Events handled in one write.
const EVENT_BATCH: usize = 256;

/// Wait before a timer whose change failed to be written fires again.
const RETRY_AFTER_FAILED_WRITE: Duration = Duration::from_secs(1);

/// The API's base path, for links in notices.
const API_BASE: &str = "/api/autoagents-management/v1";

/// What [`Alerts::open`] needs.
pub struct AlertsDeps {
    /// Durable state.
    pub store: Store,
    /// The engine's clock.
    pub clock: Clock,
    /// How long resolved alerts are kept.
    pub retention: Duration,
    /// Where notices go.
    pub outbox: Arc<Outbox>,
    /// Who is told, on which channels, when.
    pub rules: Arc<RuleBook>,
    /// Incidents.
    pub recovery: Arc<Recovery>,
    /// Action plans.
    pub plans: Arc<ActionPlans>,
    /// Workers.
    pub workers: Arc<Workers>,
    /// Plugins, to tell a worker's health.
    pub plugins: Arc<Plugins>,
}

/// Why an alert operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// A field is wrong.
    #[error("`{field}` {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No alert has the id.
    #[error("no alert has id {0:?}")]
    NotFound(String),
    /// The operation conflicts with the alert's state.
    #[error("{message}")]
    Conflict {
        /// A word for the API's error code.
        code: &'static str,
        /// What cannot be done, and why.
        message: String,
    },
    /// A silence operation failed.
    #[error(transparent)]
    Silence(#[from] SilenceError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counts for `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertCounts {
    /// Alerts ever raised.
    pub raised: u64,
    /// Open now (any status but resolved).
    pub open: u64,
    /// Told and escalating now.
    pub firing: u64,
    /// Acknowledged now.
    pub acknowledged: u64,
    /// Held now (waiting for recovery, silenced, suppressed).
    pub held: u64,
    /// Silences in force.
    pub silences: u64,
    /// Escalation steps taken since the start.
    pub escalations: u64,
    /// Re-notifications after an acknowledgement ran out, since the start.
    pub renotifications: u64,
}

/// An alert with what `GET /alerts/{id}` adds: every delivery and the next
/// escalation step.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertDetail {
    /// The alert.
    pub alert: Alert,
    /// The next escalation step, while it fires and one is left.
    pub next_escalation: Option<NextEscalation>,
    /// Every delivery of its notices, with every attempt (recipients
    /// masked).
    pub deliveries: Vec<Delivery>,
}

#[derive(Default)]
struct State {
    /// Open alerts by id.
    open: HashMap<String, Alert>,
    /// Open alert ids by source key.
    by_source: HashMap<String, String>,
    /// Each open alert's `dueAt`.
    timers: Timers<String>,
    /// Workers whose alert was resolved by hand while they were still
    /// unhealthy: not alerted again until they are healthy.
    quiet_workers: HashSet<String>,
}

/// The alert core; see the module documentation.
pub struct Alerts {
    records: AlertRecords,
    silences: Silences,
    store: Store,
    clock: Clock,
    outbox: Arc<Outbox>,
    rules: Arc<RuleBook>,
    recovery: Arc<Recovery>,
    plans: Arc<ActionPlans>,
    workers: Arc<Workers>,
    plugins: Arc<Plugins>,
    state: Mutex<State>,
    /// Serialises changes: staging reads memory, the write follows, memory
    /// follows the write.
    turn: tokio::sync::Mutex<()>,
    wake: Arc<Notify>,
    /// Set when a change failed to be written: the sources are looked
    /// through again.
    reconcile: AtomicBool,
    next_id: AtomicU64,
    raised: AtomicU64,
    escalations: AtomicU64,
    renotifications: AtomicU64,
}

/// A change staged for the next write.
struct Staged {
    before: Option<Alert>,
    after: Alert,
    outgoing: Vec<Outgoing>,
}

/// The changes of one turn.
#[derive(Default)]
struct Work {
    staged: BTreeMap<String, Staged>,
    by_source: HashMap<String, String>,
}

impl Work {
    fn stage(&mut self, before: Option<Alert>, after: Alert, outgoing: Option<Outgoing>) {
        let id = after.id.clone();
        self.by_source.insert(after.source_key(), id.clone());
        match self.staged.get_mut(&id) {
            Some(staged) => {
                staged.after = after;
                staged.outgoing.extend(outgoing);
            }
            None => {
                self.staged.insert(
                    id,
                    Staged {
                        before,
                        after,
                        outgoing: outgoing.into_iter().collect(),
                    },
                );
            }
        }
    }
}

impl Alerts {
    /// Loads the open alerts and their timers, subscribes to incidents and
    /// plans, and starts the `alert-sources` (events, reconciliation,
    /// workers' health), `alert-timers` and `alert-retention` loops.
    pub async fn open(deps: AlertsDeps, loops: &Loops) -> Result<Arc<Self>, StoreError> {
        let records = AlertRecords::open(&deps.store).await?;
        let silences = Silences::open(&deps.store).await?;
        let raised = records.raised()?;
        let mut state = State::default();
        for alert in records.load_open().await? {
            if let Some(due) = alert.due_at {
                state.timers.set(due, alert.id.clone());
            }
            state.by_source.insert(alert.source_key(), alert.id.clone());
            state.open.insert(alert.id.clone(), alert);
        }
        let alerts = Arc::new(Self {
            records: records.clone(),
            silences,
            store: deps.store,
            clock: deps.clock,
            outbox: deps.outbox,
            rules: deps.rules,
            recovery: deps.recovery,
            plans: deps.plans,
            workers: deps.workers,
            plugins: deps.plugins,
            state: Mutex::new(state),
            turn: tokio::sync::Mutex::new(()),
            wake: Arc::new(Notify::new()),
            reconcile: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            raised: AtomicU64::new(raised),
            escalations: AtomicU64::new(0),
            renotifications: AtomicU64::new(0),
        });
        // Subscribed before looking: nothing that happens from here on is
        // missed, and what happened before is in the sources' state.
        let incidents = alerts.recovery.subscribe();
        let plans = alerts.plans.subscribe_ended();
        let sources = alerts.clone();
        loops.spawn("alert-sources", move |shutdown| {
            sources.follow_sources(incidents, plans, shutdown)
        });
        let timed = alerts.clone();
        loops.spawn("alert-timers", move |shutdown| {
            let (clock, wake) = (timed.clock, timed.wake.clone());
            run_timed(clock, wake, shutdown, move || {
                let timed = timed.clone();
                async move { timed.timer_pass().await }
            })
        });
        let pruning = alerts.clone();
        loops.spawn("alert-silence-retention", move |mut shutdown| async move {
            loop {
                tokio::select! {
                    () = shutdown.requested() => return,
                    () = tokio::time::sleep(SILENCE_PRUNE_EVERY) => {}
                }
                if let Err(err) = pruning.prune_silences().await {
                    tracing::warn!(error = %err, "ended silences not pruned; will try again");
                }
            }
        });
        let (clock, retention) = (alerts.clock, deps.retention);
        loops.spawn("alert-retention", move |shutdown| {
            records::prune_forever(records, clock, retention, shutdown)
        });
        Ok(alerts)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn alert_id(&self, now: Timestamp) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed) % 10_000;
        format!("alert_{}{n:04}", now.unix_millis())
    }

    /// The open alert of a source, as staged in `work` or in memory.
    fn open_of(&self, work: &Work, key: &str) -> Option<Alert> {
        if let Some(id) = work.by_source.get(key) {
            let staged = &work.staged[id];
            return staged.after.is_open().then(|| staged.after.clone());
        }
        let state = self.lock();
        let id = state.by_source.get(key)?;
        state.open.get(id).cloned()
    }

    /// The open alert `id`, from memory.
    fn open_alert(&self, id: &str) -> Option<Alert> {
        self.lock().open.get(id).cloned()
    }

    /// The open alert `id`; 404 when there is none, 409
    /// `already_resolved` when it is resolved.
    fn open_or_conflict(&self, id: &str) -> Result<Alert, AlertError> {
        if let Some(alert) = self.open_alert(id) {
            return Ok(alert);
        }
        self.alert(id)?;
        Err(AlertError::Conflict {
            code: "already_resolved",
            message: format!("alert {id} is resolved"),
        })
    }

    /// The open alert `id`, as staged or in memory.
    fn current(&self, work: &Work, id: &str) -> Option<Alert> {
        if let Some(staged) = work.staged.get(id) {
            return Some(staged.after.clone());
        }
        self.lock().open.get(id).cloned()
    }

    fn link(&self, path: &str) -> String {
        format!(
            "{}{API_BASE}/{path}",
            self.outbox.config().policy.link_base.trim_end_matches('/')
        )
    }

    // ----- deciding -----

    /// What holds a new (or reconsidered) alert of an incident.
    fn hold_for(
        &self,
        alert: &Alert,
        incident: Option<&Incident>,
        rules: &AlertRules,
        now: Timestamp,
    ) -> Hold {
        if incident.is_some_and(|i| i.status == IncidentStatus::Suppressed) {
            return Hold::Suppressed;
        }
        if let Some(silence) =
            self.silences
                .matching(alert.check_id.as_deref(), &alert.team, alert.severity, now)
        {
            return Hold::Silence {
                id: silence.id,
                ends_at: silence.ends_at,
            };
        }
        let rule = rules.of(alert.severity);
        if let Some(incident) = incident
            && alert.severity != Severity::Critical
            && rule.wait_for_recovery
            && incident.status == IncidentStatus::Active
            && !incident.flapping
        {
            let until = alert.raised_at.plus(recovery_wait(rule));
            if now < until {
                return Hold::Recovery { until };
            }
        }
        Hold::None
    }

    /// Brings the alert of `incident` in line with it: raised when it
    /// opens, released when recovery gives up or it flaps, resolved when
    /// it is. Idempotent, so an event seen twice (or a reconciliation)
    /// changes nothing more.
    fn on_incident(
        &self,
        work: &mut Work,
        incident: &Incident,
        rules: &AlertRules,
        now: Timestamp,
    ) {
        let key = source_key(SourceKind::Incident, &incident.id);
        let existing = self.open_of(work, &key);
        if !incident.status.is_open() {
            if let Some(alert) = existing {
                let mut after = alert.clone();
                let why = incident
                    .resolution
                    .clone()
                    .unwrap_or_else(|| "the incident was resolved".into());
                let outgoing = after.resolve("incident", &why, now);
                work.stage(Some(alert), after, outgoing);
            }
            return;
        }
        let Some(alert) = existing else {
            if work.by_source.contains_key(&key) {
                return;
            }
            match self.records.has_origin(&key) {
                Ok(false) => {}
                // One alert per incident: one resolved by hand stays so.
                Ok(true) => return,
                Err(err) => {
                    tracing::error!(incident_id = %incident.id, error = %err, "cannot tell whether the incident has an alert; will look again");
                    self.reconcile.store(true, Ordering::Relaxed);
                    return;
                }
            }
            let mut alert = Alert::new(
                self.alert_id(now),
                SourceKind::Incident,
                incident.id.clone(),
                Some(incident.check_id.clone()),
                incident.team.clone(),
                incident.severity,
                incident_title(incident),
                incident.summary.clone(),
                Some(self.link(&format!("incidents/{}", incident.id))),
                now,
            );
            alert.recovery_gave_up = incident.status == IncidentStatus::Escalated;
            alert.flapping = incident.flapping;
            let hold = self.hold_for(&alert, Some(incident), rules, now);
            let outgoing = alert.hold_or_fire(hold, rules, now);
            work.stage(None, alert, outgoing);
            return;
        };
        let mut after = alert.clone();
        after.title = incident_title(incident);
        after.summary = incident.summary.clone();
        let gave_up = incident.status == IncidentStatus::Escalated;
        let news = match (
            gave_up && !alert.recovery_gave_up,
            incident.flapping,
            alert.flapping,
        ) {
            (true, _, _) => Some(GAVE_UP),
            (false, true, false) => Some(FLAPPING),
            (false, false, true) => Some(SETTLED),
            _ => None,
        };
        after.recovery_gave_up = gave_up;
        after.flapping = incident.flapping;
        let mut outgoing = None;
        match alert.status {
            AlertStatus::Suppressed if incident.status != IncidentStatus::Suppressed => {
                after.note(now, "updated", "its check is no longer suppressed");
                let hold = self.hold_for(&after, Some(incident), rules, now);
                outgoing = after.hold_or_fire(hold, rules, now);
            }
            AlertStatus::Waiting if gave_up || incident.flapping => {
                after.note(now, "updated", news.unwrap_or(GAVE_UP));
                let hold = self.hold_for(&after, Some(incident), rules, now);
                outgoing = after.hold_or_fire(hold, rules, now);
            }
            _ => {
                if let Some(news) = news {
                    outgoing = after.update(news, now);
                }
            }
        }
        if after != alert {
            work.stage(Some(alert), after, outgoing);
        }
    }

    /// Raises an alert for a failed plan (or notes a repeated failure), or
    /// resolves it once the plan succeeds.
    fn on_plan(&self, work: &mut Work, plan: &Plan, rules: &AlertRules, now: Timestamp) {
        let key = source_key(SourceKind::Plan, &plan.id);
        let existing = self.open_of(work, &key);
        match (plan.status, existing) {
            (PlanStatus::Succeeded, Some(alert)) => {
                let mut after = alert.clone();
                let outgoing = after.resolve("plan", "a retry of the plan succeeded", now);
                work.stage(Some(alert), after, outgoing);
            }
            (PlanStatus::Failed, Some(alert)) => {
                let mut after = alert.clone();
                after.summary = plan_summary(plan);
                after.note(now, "updated", "the plan failed again");
                work.stage(Some(alert), after, None);
            }
            (PlanStatus::Failed, None) if !work.by_source.contains_key(&key) => {
                if self.open_plan_alerts(work, &plan.team) >= MAX_OPEN_PLAN_ALERTS {
                    // Bounded: a team whose failed plans nobody looks at
                    // must not grow memory without end.
                    tracing::warn!(plan_id = %plan.id, team = %plan.team, "plan failed; no alert raised: the team has {MAX_OPEN_PLAN_ALERTS} open plan alerts");
                    return;
                }
                let mut alert = Alert::new(
                    self.alert_id(now),
                    SourceKind::Plan,
                    plan.id.clone(),
                    None,
                    plan.team.clone(),
                    plan_severity(plan.priority),
                    format!("action plan {} ({}) failed", plan.name, plan.id),
                    plan_summary(plan),
                    Some(self.link(&format!("action-plans/{}", plan.id))),
                    now,
                );
                let hold = self.hold_for(&alert, None, rules, now);
                let outgoing = alert.hold_or_fire(hold, rules, now);
                work.stage(None, alert, outgoing);
            }
            _ => {}
        }
    }

    /// How many plan alerts of `team` are open, staged ones included.
    fn open_plan_alerts(&self, work: &Work, team: &str) -> usize {
        let is_team_plan = |a: &Alert| a.source_kind == SourceKind::Plan && a.team == team;
        let staged_new = work
            .staged
            .values()
            .filter(|s| s.before.is_none() && s.after.is_open() && is_team_plan(&s.after))
            .count();
        self.lock()
            .open
            .values()
            .filter(|a| is_team_plan(a))
            .count()
            + staged_new
    }

    /// Raises alerts for workers that became unhealthy and resolves those
    /// of workers that are healthy (or gone).
    fn on_workers(&self, work: &mut Work, rules: &AlertRules, now: Timestamp) {
        let unhealthy = workers::unhealthy(&self.workers, &self.plugins);
        let sick: HashSet<&str> = unhealthy.iter().map(|(w, _)| w.id.as_str()).collect();
        let (open_worker_alerts, quiet): (Vec<Alert>, HashSet<String>) = {
            let mut state = self.lock();
            state.quiet_workers.retain(|id| sick.contains(id.as_str()));
            let open = state
                .open
                .values()
                .filter(|a| a.source_kind == SourceKind::Worker)
                .cloned()
                .collect();
            (open, state.quiet_workers.clone())
        };
        for alert in open_worker_alerts {
            if !sick.contains(alert.source_id.as_str()) {
                let mut after = alert.clone();
                let outgoing = after.resolve("worker", "the worker is healthy again", now);
                work.stage(Some(alert), after, outgoing);
            }
        }
        for (worker, why) in &unhealthy {
            let key = source_key(SourceKind::Worker, &worker.id);
            if quiet.contains(&worker.id) || self.open_of(work, &key).is_some() {
                continue;
            }
            let mut alert = Alert::new(
                self.alert_id(now),
                SourceKind::Worker,
                worker.id.clone(),
                None,
                worker.team.clone(),
                Severity::High,
                format!("worker {} ({}) is unhealthy", worker.name, worker.id),
                why.clone(),
                Some(self.link(&format!("workers/{}", worker.id))),
                now,
            );
            let hold = self.hold_for(&alert, None, rules, now);
            let outgoing = alert.hold_or_fire(hold, rules, now);
            work.stage(None, alert, outgoing);
        }
    }

    /// Everything the sources say now: open incidents, recently failed
    /// plans, workers' health; and the open alerts whose source is over.
    fn reconcile_all(&self, work: &mut Work, rules: &AlertRules, now: Timestamp) {
        let open = self.recovery.open_incidents();
        let open_ids: HashSet<&str> = open.iter().map(|i| i.id.as_str()).collect();
        for incident in &open {
            self.on_incident(work, incident, rules, now);
        }
        let alerts: Vec<Alert> = self.lock().open.values().cloned().collect();
        for alert in alerts {
            match alert.source_kind {
                SourceKind::Incident if !open_ids.contains(alert.source_id.as_str()) => {
                    match self.recovery.incident(&alert.source_id) {
                        Ok(incident) => self.on_incident(work, &incident, rules, now),
                        Err(crate::recovery::RecoveryError::IncidentNotFound(_)) => {
                            let mut after = alert.clone();
                            let outgoing = after.resolve("incident", "the incident is gone", now);
                            work.stage(Some(alert), after, outgoing);
                        }
                        Err(err) => {
                            tracing::warn!(alert_id = %alert.id, error = %err, "cannot read the alert's incident");
                        }
                    }
                }
                SourceKind::Plan => match self.plans.get(&alert.source_id) {
                    Ok(plan) => self.on_plan(work, &plan, rules, now),
                    Err(crate::plans::PlanError::NotFound(_)) => {
                        let mut after = alert.clone();
                        let outgoing = after.resolve("plan", "the plan is gone", now);
                        work.stage(Some(alert), after, outgoing);
                    }
                    Err(err) => {
                        tracing::warn!(alert_id = %alert.id, error = %err, "cannot read the alert's plan");
                    }
                },
                _ => {}
            }
        }
        match self.plans.failed_since(now.minus(PLAN_LOOKBACK)) {
            Ok(failed) => {
                for plan in failed {
                    let key = source_key(SourceKind::Plan, &plan.id);
                    if self.open_of(work, &key).is_some() {
                        continue;
                    }
                    match self.records.has_origin(&key) {
                        Ok(false) => self.on_plan(work, &plan, rules, now),
                        Ok(true) => {}
                        Err(err) => {
                            tracing::warn!(plan_id = %plan.id, error = %err, "cannot tell whether the plan has an alert");
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot list the failed plans"),
        }
        self.on_workers(work, rules, now);
    }

    // ----- writing -----

    fn notice_of(&self, alert: &Alert, outgoing: &Outgoing, now: Timestamp) -> Notice {
        let source = match (&alert.source_kind, &alert.check_id) {
            (SourceKind::Incident, Some(check)) => format!("check:{check}"),
            _ => alert.source_key(),
        };
        Notice {
            alert_id: alert.id.clone(),
            incident_id: (alert.source_kind == SourceKind::Incident)
                .then(|| alert.source_id.clone()),
            team: alert.team.clone(),
            event: outgoing.event,
            severity: alert.severity.as_str().to_owned(),
            title: alert.title.clone(),
            body: self.body_of(alert, outgoing.event),
            link: alert.link.clone(),
            source,
            raised_at: now,
            key: outgoing.key.clone(),
        }
    }

    fn body_of(&self, alert: &Alert, event: NoticeEvent) -> String {
        let what = match event {
            NoticeEvent::Trigger => "Raised".to_owned(),
            NoticeEvent::Escalation { step } => {
                format!("Not acknowledged in time: escalation step {step}")
            }
            NoticeEvent::Renotify => "The acknowledgement ran out and it is still open".to_owned(),
            NoticeEvent::Update => alert
                .history
                .last()
                .map_or_else(|| "Updated".to_owned(), |e| capitalized(&e.notes)),
            NoticeEvent::Acknowledge => format!(
                "Acknowledged by {}",
                alert.acknowledged_by.as_deref().unwrap_or("someone")
            ),
            NoticeEvent::Resolve => format!(
                "Resolved: {}",
                alert.resolution.as_deref().unwrap_or("resolved")
            ),
        };
        let source = match alert.source_kind {
            SourceKind::Incident => format!(
                "Incident {} of health check {}",
                alert.source_id,
                alert.check_id.as_deref().unwrap_or("-")
            ),
            SourceKind::Plan => format!("Action plan {}", alert.source_id),
            SourceKind::Worker => format!("Worker {}", alert.source_id),
        };
        format!(
            "{what}.\n{source}, team {}, severity {}.\n{}\nAlert {}: acknowledge with POST {}",
            alert.team,
            alert.severity.as_str(),
            alert.summary,
            alert.id,
            self.link(&format!("alerts/{}/acknowledge", alert.id)),
        )
    }

    /// Writes the staged changes in one batch and, once written, makes
    /// memory and timers follow. A failed write changes nothing; the
    /// sources are looked through again and failed timers fire again soon.
    async fn commit(&self, work: Work, now: Timestamp) -> Result<(), StoreError> {
        if work.staged.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new();
        let mut queued = false;
        for staged in work.staged.values() {
            batch.extend(self.records.put_ops(staged.before.as_ref(), &staged.after));
            for outgoing in &staged.outgoing {
                let notice = self.notice_of(&staged.after, outgoing, now);
                batch.extend(self.outbox.enqueue_ops(&notice, &outgoing.targets));
                queued = true;
            }
        }
        if let Err(err) = self.store.write(batch).await {
            tracing::error!(alerts = work.staged.len(), error = %err, "alert changes not written; will try again");
            self.reconcile.store(true, Ordering::Relaxed);
            let mut state = self.lock();
            let retry = now.plus(RETRY_AFTER_FAILED_WRITE);
            for id in work.staged.keys() {
                if let Some(alert) = state.open.get(id)
                    && let Some(due) = alert.due_at
                {
                    state.timers.cancel(due, id);
                    state.timers.set(retry.max(due), id.clone());
                }
            }
            return Err(err);
        }
        let mut state = self.lock();
        for (id, staged) in work.staged {
            if let Some(old) = state.open.remove(&id)
                && let Some(due) = old.due_at
            {
                state.timers.cancel(due, &id);
            }
            let after = staged.after;
            if staged.before.is_none() {
                self.raised.fetch_add(1, Ordering::Relaxed);
            }
            for outgoing in &staged.outgoing {
                match outgoing.event {
                    NoticeEvent::Escalation { .. } => {
                        self.escalations.fetch_add(1, Ordering::Relaxed);
                    }
                    NoticeEvent::Renotify => {
                        self.renotifications.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
                tracing::info!(
                    alert_id = %after.id,
                    incident_id = %incident_of(&after),
                    event = outgoing.event.as_str(),
                    severity = after.severity.as_str(),
                    deliveries = outgoing.targets.len(),
                    "alert notice queued"
                );
            }
            if staged.before.as_ref().map(|b| b.status) != Some(after.status) {
                tracing::info!(
                    alert_id = %after.id,
                    incident_id = %incident_of(&after),
                    source = %after.source_key(),
                    status = after.status.as_str(),
                    "alert {}",
                    after.status.as_str()
                );
            }
            let key = after.source_key();
            if after.is_open() {
                if let Some(due) = after.due_at {
                    state.timers.set(due, id.clone());
                }
                state.by_source.insert(key, id.clone());
                state.open.insert(id, after);
            } else if state.by_source.get(&key) == Some(&id) {
                state.by_source.remove(&key);
            }
        }
        drop(state);
        if queued {
            self.outbox.wake();
        }
        self.wake.notify_one();
        Ok(())
    }

    // ----- loops -----

    async fn follow_sources(
        self: Arc<Self>,
        mut incidents: tokio::sync::broadcast::Receiver<crate::recovery::IncidentEvent>,
        mut plans: tokio::sync::broadcast::Receiver<Plan>,
        mut shutdown: Shutdown,
    ) {
        self.reconcile.store(true, Ordering::Relaxed);
        let mut poll = tokio::time::interval(WORKER_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.reconcile.swap(false, Ordering::Relaxed) {
                let _turn = self.turn.lock().await;
                let (rules, now) = (self.rules.get(), self.clock.now());
                let mut work = Work::default();
                self.reconcile_all(&mut work, &rules, now);
                let _ = self.commit(work, now).await;
            }
            tokio::select! {
                () = shutdown.requested() => return,
                event = incidents.recv() => {
                    let mut batch = Vec::new();
                    match event {
                        Ok(event) => batch.push(event.incident),
                        Err(RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "alerting fell behind the incident events; looking through the open incidents");
                            self.reconcile.store(true, Ordering::Relaxed);
                            continue;
                        }
                        Err(RecvError::Closed) => return,
                    }
                    while batch.len() < EVENT_BATCH {
                        match incidents.try_recv() {
                            Ok(event) => batch.push(event.incident),
                            Err(TryRecvError::Lagged(_)) => {
                                self.reconcile.store(true, Ordering::Relaxed);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let _turn = self.turn.lock().await;
                    let (rules, now) = (self.rules.get(), self.clock.now());
                    let mut work = Work::default();
                    for incident in &batch {
                        self.on_incident(&mut work, incident, &rules, now);
                    }
                    let _ = self.commit(work, now).await;
                }
                plan = plans.recv() => {
                    let plan = match plan {
                        Ok(plan) => plan,
                        Err(RecvError::Lagged(_)) => {
                            self.reconcile.store(true, Ordering::Relaxed);
                            continue;
                        }
                        Err(RecvError::Closed) => return,
                    };
                    let _turn = self.turn.lock().await;
                    let (rules, now) = (self.rules.get(), self.clock.now());
                    let mut work = Work::default();
                    self.on_plan(&mut work, &plan, &rules, now);
                    let _ = self.commit(work, now).await;
                }
                _ = poll.tick() => {
                    let _turn = self.turn.lock().await;
                    let (rules, now) = (self.rules.get(), self.clock.now());
                    let mut work = Work::default();
                    self.on_workers(&mut work, &rules, now);
                    let _ = self.commit(work, now).await;
                }
            }
        }
    }

    /// Does what is due: escalation steps, ends of acknowledgements, of
    /// silences and of waits for recovery. Returns when the next is due.
    async fn timer_pass(self: &Arc<Self>) -> Option<Timestamp> {
        let _turn = self.turn.lock().await;
        let now = self.clock.now();
        let due = self.lock().timers.take_due(now);
        if !due.is_empty() {
            let rules = self.rules.get();
            let mut work = Work::default();
            for id in due {
                if let Some(alert) = self.current(&work, &id) {
                    self.on_due(&mut work, alert, &rules, now);
                }
            }
            let _ = self.commit(work, now).await;
        }
        self.lock().timers.next()
    }

    /// An alert's timer fired: acts on it if it is due.
    fn on_due(&self, work: &mut Work, alert: Alert, rules: &AlertRules, now: Timestamp) {
        if alert.due_at.is_none_or(|due| due > now) {
            return;
        }
        self.act_on_due(work, alert, rules, now);
    }

    /// Does what an alert's due time means for its status: the next
    /// escalation step, the end of the wait for recovery, of a silence or
    /// of an acknowledgement. A source that is over meanwhile resolves it.
    fn act_on_due(&self, work: &mut Work, alert: Alert, rules: &AlertRules, now: Timestamp) {
        let mut after = alert.clone();
        let outgoing = match alert.status {
            AlertStatus::Firing => after.escalate(rules, now),
            AlertStatus::Waiting | AlertStatus::Silenced if !self.refresh(&mut after) => {
                after.resolve(resolver_of(&alert), "its source is over", now)
            }
            AlertStatus::Waiting => {
                after.note(
                    now,
                    "updated",
                    "the recovery is still running; it waited long enough",
                );
                after.due_at = None;
                Some(after.fire(rules, now))
            }
            AlertStatus::Silenced => {
                after.note(now, "updated", "its silence ended");
                after.silence_id = None;
                let incident = self.incident_of_alert(&alert);
                let hold = self.hold_for(&after, incident.as_ref(), rules, now);
                after.hold_or_fire(hold, rules, now)
            }
            AlertStatus::Acknowledged => {
                if !self.refresh(&mut after) {
                    after.resolve(resolver_of(&alert), "its source is over", now)
                } else if after.notified_at.is_none() {
                    after.note(now, "updated", "the acknowledgement ran out");
                    Some(after.fire(rules, now))
                } else {
                    Some(after.renotify(rules, now))
                }
            }
            AlertStatus::Suppressed | AlertStatus::Resolved => {
                after.due_at = None;
                None
            }
        };
        if after != alert {
            work.stage(Some(alert), after, outgoing);
        }
    }

    fn incident_of_alert(&self, alert: &Alert) -> Option<Incident> {
        (alert.source_kind == SourceKind::Incident)
            .then(|| self.recovery.incident(&alert.source_id).ok())
            .flatten()
    }

    /// Takes the source's current state into the alert (a re-notification
    /// tells what is true now); false when the source is over.
    fn refresh(&self, alert: &mut Alert) -> bool {
        match alert.source_kind {
            SourceKind::Incident => match self.recovery.incident(&alert.source_id) {
                Ok(incident) => {
                    alert.title = incident_title(&incident);
                    alert.summary = incident.summary.clone();
                    incident.status.is_open()
                }
                Err(_) => false,
            },
            SourceKind::Plan => match self.plans.get(&alert.source_id) {
                Ok(plan) => {
                    alert.summary = plan_summary(&plan);
                    plan.status == PlanStatus::Failed
                }
                Err(_) => false,
            },
            SourceKind::Worker => workers::unhealthy(&self.workers, &self.plugins)
                .iter()
                .any(|(w, _)| w.id == alert.source_id),
        }
    }

    // ----- the API's calls -----

    /// Alert `id`, with its deliveries and next escalation step.
    pub async fn get(&self, id: &str) -> Result<AlertDetail, AlertError> {
        let alert = self.alert(id)?;
        let deliveries = self.outbox.deliveries_of(id).await?;
        Ok(AlertDetail {
            next_escalation: alert.next_escalation(&self.rules.get()),
            alert,
            deliveries,
        })
    }

    /// Alert `id`: from memory while open, else from the store.
    pub fn alert(&self, id: &str) -> Result<Alert, AlertError> {
        if let Some(alert) = self.lock().open.get(id) {
            return Ok(alert.clone());
        }
        self.records
            .get(id)?
            .ok_or_else(|| AlertError::NotFound(id.to_owned()))
    }

    /// A page of alerts, oldest first.
    pub async fn page(
        &self,
        query: AlertQuery,
        only_team: Option<String>,
    ) -> Result<AlertPage, AlertError> {
        let records = self.records.clone();
        tokio::task::spawn_blocking(move || records.page(&query, only_team.as_deref()))
            .await
            .map_err(|err| StoreError::Backend(format!("listing alerts: {err}")))?
            .map_err(AlertError::from)
    }

    /// Acknowledges alert `id` for `by`: escalation stops, until `for_ms`
    /// from now when given.
    pub async fn acknowledge(
        &self,
        id: &str,
        by: &str,
        for_ms: Option<u64>,
    ) -> Result<Alert, AlertError> {
        let by = who(by)?;
        if for_ms.is_some_and(|ms| ms == 0 || ms > MAX_ACK_MS) {
            return Err(AlertError::Invalid {
                field: "forMs",
                message: format!("must be 1 to {MAX_ACK_MS} (30 days)"),
            });
        }
        let _turn = self.turn.lock().await;
        let now = self.clock.now();
        let alert = self.open_or_conflict(id)?;
        let mut after = alert.clone();
        let until = for_ms.map(|ms| now.plus(Duration::from_millis(ms)));
        let outgoing = after.acknowledge(by, until, now);
        let mut work = Work::default();
        work.stage(Some(alert), after.clone(), outgoing);
        self.commit(work, now).await?;
        Ok(after)
    }

    /// Resolves alert `id` by hand. Its source stays as it is; an
    /// incident's alert is not raised again for the same incident.
    pub async fn resolve(&self, id: &str, by: &str, resolution: &str) -> Result<Alert, AlertError> {
        let by = who(by)?;
        if resolution.trim().is_empty() || resolution.chars().count() > 500 {
            return Err(AlertError::Invalid {
                field: "resolution",
                message: "must be 1 to 500 characters".into(),
            });
        }
        let _turn = self.turn.lock().await;
        let now = self.clock.now();
        let alert = self.open_or_conflict(id)?;
        let mut after = alert.clone();
        let outgoing = after.resolve(by, resolution.trim(), now);
        let mut work = Work::default();
        work.stage(Some(alert.clone()), after.clone(), outgoing);
        self.commit(work, now).await?;
        if alert.source_kind == SourceKind::Worker {
            self.lock().quiet_workers.insert(alert.source_id);
        }
        Ok(after)
    }

    /// Creates a silence; alerts it matches that are firing now go on (a
    /// silence holds what is raised from now on).
    pub async fn silence(&self, new: NewSilence) -> Result<Silence, AlertError> {
        let now = self.clock.now();
        let n = self.next_id.fetch_add(1, Ordering::Relaxed) % 10_000;
        let id = format!("silence_{}{n:04}", now.unix_millis());
        Ok(self.silences.create(id, new, now).await?)
    }

    /// Ends a silence now; alerts it held are looked at again at once.
    pub async fn end_silence(&self, id: &str) -> Result<Silence, AlertError> {
        let _turn = self.turn.lock().await;
        let now = self.clock.now();
        let silence = self.silences.end(id, now).await?;
        let held: Vec<Alert> = self
            .lock()
            .open
            .values()
            .filter(|a| a.silence_id.as_deref() == Some(id))
            .cloned()
            .collect();
        let rules = self.rules.get();
        let mut work = Work::default();
        for alert in held {
            self.act_on_due(&mut work, alert, &rules, now);
        }
        self.commit(work, now).await?;
        Ok(silence)
    }

    /// One silence.
    pub fn silence_of(&self, id: &str) -> Result<Silence, AlertError> {
        Ok(self.silences.get(id, self.clock.now())?)
    }

    /// A page of silences.
    pub fn silences(
        &self,
        after: Option<&str>,
        limit: usize,
        only_team: Option<&str>,
    ) -> (Vec<Silence>, Option<String>) {
        self.silences
            .page(after, limit, only_team, self.clock.now())
    }

    /// Counts for `/status` and `/metrics`, from memory.
    pub fn counts(&self) -> AlertCounts {
        let state = self.lock();
        let mut counts = AlertCounts {
            raised: self.raised.load(Ordering::Relaxed),
            open: state.open.len() as u64,
            silences: self.silences.active(self.clock.now()) as u64,
            escalations: self.escalations.load(Ordering::Relaxed),
            renotifications: self.renotifications.load(Ordering::Relaxed),
            ..AlertCounts::default()
        };
        for alert in state.open.values() {
            match alert.status {
                AlertStatus::Firing => counts.firing += 1,
                AlertStatus::Acknowledged => counts.acknowledged += 1,
                s if s.is_held() => counts.held += 1,
                _ => {}
            }
        }
        counts
    }

    /// Deletes silences that ended a day ago; run by the retention loop.
    pub async fn prune_silences(&self) -> Result<usize, StoreError> {
        self.silences.prune(self.clock.now()).await
    }
}

/// `by` of an acknowledgement or resolution, trimmed: 1 to 128 characters.
fn who(by: &str) -> Result<&str, AlertError> {
    let by = by.trim();
    if by.is_empty() || by.chars().count() > 128 {
        return Err(AlertError::Invalid {
            field: "by",
            message: "must be 1 to 128 characters".into(),
        });
    }
    Ok(by)
}

/// Longest acknowledgement with an end, in milliseconds (30 days).
pub const MAX_ACK_MS: u64 = 30 * 86_400_000;

const GAVE_UP: &str = "recovery gave up: the incident escalated";
const FLAPPING: &str = "its check is flapping: automatic repair is off";
const SETTLED: &str = "its check settled: automatic repair is on again";

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn incident_title(incident: &Incident) -> String {
    let state = match incident.status {
        IncidentStatus::Escalated => "down; recovery gave up",
        IncidentStatus::Resolved => "recovered",
        _ => "down",
    };
    format!("{} ({}) is {state}", incident.check_name, incident.check_id)
}

fn incident_of(alert: &Alert) -> &str {
    if alert.source_kind == SourceKind::Incident {
        &alert.source_id
    } else {
        "-"
    }
}

fn resolver_of(alert: &Alert) -> &'static str {
    match alert.source_kind {
        SourceKind::Incident => "incident",
        SourceKind::Plan => "plan",
        SourceKind::Worker => "worker",
    }
}

fn plan_summary(plan: &Plan) -> String {
    plan.error
        .clone()
        .unwrap_or_else(|| format!("the plan ended {}", plan.status.as_str()))
}

fn plan_severity(priority: Priority) -> Severity {
    match priority {
        Priority::Critical => Severity::Critical,
        Priority::High => Severity::High,
        Priority::Medium | Priority::Low => Severity::Medium,
    }
}
