//! The task service: submission, lookup, lists, cancel, worker restart, and
//! the scheduling loop that runs tasks on workers through plugins.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;

use super::outcome::{self, Outcome, Stop};
use super::queue::{Claim, Queue};
use super::records::{TaskCounts, TaskRecords, prune_forever};
use super::{NewTask, Priority, Task, TaskError, TaskPage, TaskQuery, TaskStatus, assign, attempt};
use crate::clock::Timestamp;
use crate::engine::{Clock, Loops, run_timed, wait_until_idle};
use crate::names::Name;
use crate::plugins::Plugins;
use crate::store::{Batch, Store, StoreError};
use crate::workers::{Worker, Workers};
use crate::workflows::Workflows;

/// Attempts a task gets when the submission does not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// What the task service needs from the rest of the app.
pub struct TaskDeps {
    /// Durable state.
    pub store: Store,
    /// Who can run tasks.
    pub workers: Arc<Workers>,
    /// Workflow definitions.
    pub workflows: Arc<Workflows>,
    /// What runs capabilities.
    pub plugins: Arc<Plugins>,
    /// The clock timers read.
    pub clock: Clock,
    /// How long finished tasks are kept.
    pub retention: Duration,
}

/// The task service and its scheduler.
pub struct Tasks {
    records: TaskRecords,
    store: Store,
    workers: Arc<Workers>,
    workflows: Arc<Workflows>,
    plugins: Arc<Plugins>,
    clock: Clock,
    queue: Mutex<Queue>,
    /// Pokes the scheduling loop: a submission, a worker, an ended attempt.
    wake: Arc<Notify>,
    /// Told whenever an attempt ends, for [`Tasks::drain`].
    attempt_ended: Notify,
    next_id: AtomicU64,
    total: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
}

impl Tasks {
    /// Loads the unfinished tasks from the store and starts the scheduling
    /// and retention loops on `loops`. Tasks that were running when the host
    /// stopped are queued again, their attempt counted.
    pub async fn open(deps: TaskDeps, loops: &Loops) -> Result<Arc<Self>, TaskError> {
        let records = TaskRecords::open(&deps.store).await?;
        let now = deps.clock.now();
        let mut queue = Queue::default();
        let mut requeued = Batch::new();
        for task in records.load_unfinished().await? {
            if task.status == TaskStatus::Running {
                tracing::warn!(
                    task_id = %task.id,
                    worker_id = %task.worker_id.as_deref().unwrap_or("-"),
                    attempt = task.attempts,
                    "task was running when the host stopped; queued again"
                );
                let mut again = task.clone();
                again.status = TaskStatus::Queued;
                again.updated_at = now;
                requeued.extend(records.change_ops(Some(&task), &again));
                queue.enqueue(again, now);
            } else {
                queue.enqueue(task, now);
            }
        }
        deps.store.write(requeued).await?;
        let (total, succeeded, failed) = records.totals()?;
        let tasks = Arc::new(Self {
            records: records.clone(),
            store: deps.store,
            workers: deps.workers,
            workflows: deps.workflows,
            plugins: deps.plugins,
            clock: deps.clock,
            queue: Mutex::new(queue),
            wake: Arc::new(Notify::new()),
            attempt_ended: Notify::new(),
            next_id: AtomicU64::new(0),
            total: AtomicU64::new(total),
            succeeded: AtomicU64::new(succeeded),
            failed: AtomicU64::new(failed),
        });
        let scheduler = tasks.clone();
        loops.spawn("task-scheduler", move |shutdown| {
            let (clock, wake) = (scheduler.clock, scheduler.wake.clone());
            run_timed(clock, wake, shutdown, move || {
                let scheduler = scheduler.clone();
                async move { scheduler.pass().await }
            })
        });
        // A plugin loaded, swapped or removed can make waiting tasks
        // runnable (or not); claims refused while the store was unavailable
        // left their tasks queued, and the store coming back must start
        // them without waiting for the next submission. Either wakes the
        // scheduler.
        let mut plugin_changes = tasks.plugins.subscribe();
        let mut store_changes = tasks.store.health_changes();
        let wake = tasks.wake.clone();
        loops.spawn("task-wakers", move |mut shutdown| async move {
            loop {
                tokio::select! {
                    () = shutdown.requested() => break,
                    Ok(()) = plugin_changes.changed() => wake.notify_one(),
                    Ok(()) = store_changes.changed() => wake.notify_one(),
                    else => break,
                }
            }
        });
        let clock = tasks.clock;
        loops.spawn("task-retention", move |shutdown| {
            prune_forever(records, clock, deps.retention, shutdown)
        });
        Ok(tasks)
    }

    /// Wakes the scheduler, e.g. after a worker registered.
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// Accepts a task of `team` (the caller's scope decided it; the body's
    /// `team` is not read here); durable and queued when it returns.
    pub async fn submit(&self, team: Name, new: NewTask) -> Result<Task, TaskError> {
        self.validate(&new)?;
        let now = self.clock.now();
        let n = self.next_id.fetch_add(1, Ordering::Relaxed) % 10_000;
        let task = Task {
            id: format!("task_{}{n:04}", now.unix_millis()),
            kind: new.kind,
            priority: new.priority.unwrap_or(Priority::Medium),
            data: Value::Object(new.data),
            workflow: new.workflow.map(String::from),
            capability: new.capability.map(String::from),
            team: team.into(),
            deadline: new.deadline,
            attempts: 0,
            max_attempts: new.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            status: TaskStatus::Queued,
            worker_id: None,
            result: None,
            error: None,
            error_kind: None,
            waiting_reason: None,
            not_before: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
        };
        let mut batch = Batch::new();
        batch.extend(self.records.submit_ops(&task));
        self.store.write(batch).await?;
        self.total.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            task_id = %task.id,
            task_type = %task.kind,
            priority = %task.priority.as_str(),
            workflow = %task.workflow.as_deref().unwrap_or("-"),
            capability = %task.capability.as_deref().unwrap_or("-"),
            "task queued"
        );
        self.lock().enqueue(task.clone(), now);
        self.wake.notify_one();
        Ok(task)
    }

    fn validate(&self, new: &NewTask) -> Result<(), TaskError> {
        let invalid = |field, message: String| Err(TaskError::Invalid { field, message });
        if new.kind.trim().is_empty() || new.kind.len() > 128 {
            return invalid("type", "must be 1 to 128 characters".into());
        }
        match (&new.workflow, &new.capability) {
            (None, None) => return invalid("workflow", "or `capability` is required".into()),
            (Some(_), Some(_)) => {
                return invalid(
                    "capability",
                    "cannot be given together with `workflow`".into(),
                );
            }
            (Some(name), None) => {
                if self.workflows.get(name).is_err() {
                    return invalid("workflow", format!("{name:?} is not a defined workflow"));
                }
            }
            (None, Some(_)) => {}
        }
        if let Some(max) = new.max_attempts
            && !(1..=100).contains(&max)
        {
            return invalid("maxAttempts", "must be 1 to 100".into());
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().expect("task queue poisoned")
    }

    /// One task, with why it waits if it does.
    pub fn get(&self, id: &str) -> Result<Task, TaskError> {
        let mut task = self
            .records
            .get(id)?
            .ok_or_else(|| TaskError::NotFound(id.to_owned()))?;
        task.waiting_reason = self.lock().reason(id).cloned();
        Ok(task)
    }

    /// A filtered page of tasks, oldest first; only `only_team`'s when the
    /// caller sees one team. The store is read on the blocking pool, so a
    /// long page never holds up the API's other requests.
    pub async fn list(
        &self,
        query: TaskQuery,
        only_team: Option<String>,
    ) -> Result<TaskPage, TaskError> {
        let records = self.records.clone();
        let mut page =
            tokio::task::spawn_blocking(move || records.page(&query, only_team.as_deref()))
                .await
                .map_err(|err| TaskError::Internal(err.to_string()))??;
        let queue = self.lock();
        for task in &mut page.items {
            task.waiting_reason = queue.reason(&task.id).cloned();
        }
        Ok(page)
    }

    /// Totals for `/status`.
    pub fn counts(&self) -> TaskCounts {
        let (unfinished, running) = self.lock().sizes();
        TaskCounts {
            total: self.total.load(Ordering::Relaxed),
            queued: (unfinished - running) as u64,
            running: running as u64,
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Tasks a worker is running now.
    pub fn active_on(&self, worker_id: &str) -> usize {
        self.lock().attempts.load_of(worker_id)
    }

    /// Cancels a queued or running task (stopping its call).
    pub async fn cancel(&self, id: &str) -> Result<Task, TaskError> {
        let (queued, running) = {
            let mut queue = self.lock();
            match queue.get(id).map(|task| task.status) {
                None => (None, None),
                Some(TaskStatus::Queued) => (queue.forget(id), None),
                Some(_) => {
                    let task = queue.get(id).cloned();
                    (None, queue.attempts.stop(&id.to_owned()).and(task))
                }
            }
        };
        if let Some(before) = queued {
            let now = self.clock.now();
            let mut task = before.clone();
            task.status = TaskStatus::Cancelled;
            task.updated_at = now;
            task.finished_at = Some(now);
            let mut batch = Batch::new();
            batch.extend(self.records.change_ops(Some(&before), &task));
            self.store.write(batch).await?;
            tracing::info!(task_id = %task.id, "task cancelled while queued");
            return Ok(task);
        }
        if let Some(task) = running {
            self.finish(task, Outcome::Stopped(Stop::Cancel)).await;
            return self.get(id);
        }
        // Unknown, already ended, or it ended in the meantime.
        let task = self.get(id)?;
        Err(TaskError::AlreadyEnded {
            id: task.id,
            status: task.status,
        })
    }

    /// Stops every call a worker is running and queues its tasks again (the
    /// attempt counts). Returns the ids of the tasks requeued.
    pub async fn restart_worker(&self, worker_id: &str) -> Vec<String> {
        let stopped: Vec<Task> = {
            let mut queue = self.lock();
            let stopped = queue.attempts.stop_held_by(worker_id);
            stopped
                .into_iter()
                .filter_map(|(id, _)| queue.get(&id).cloned())
                .collect()
        };
        let mut ids = Vec::new();
        for task in stopped {
            ids.push(task.id.clone());
            self.finish(task, Outcome::Stopped(Stop::Restart)).await;
        }
        tracing::info!(worker_id = %worker_id, requeued = ids.len(), tasks = %ids.join(","), "worker restarted");
        self.wake.notify_one();
        ids
    }

    /// Lets the attempts in flight finish, for at most `grace`, then stops
    /// the rest: they stay `running` in the store and run again after the
    /// next start. Call after the loops have stopped, so nothing new starts.
    pub async fn drain(&self, grace: Duration) {
        let left = wait_until_idle(grace, &self.attempt_ended, || self.lock().attempts.len()).await;
        if left > 0 {
            tracing::warn!(
                running = left,
                grace_secs = grace.as_secs(),
                "tasks still running after the grace period are stopped; they run again after the next start"
            );
            self.lock().attempts.abort_all();
        }
    }

    /// One scheduling pass: expire deadlines, release backoffs, assign what
    /// can be assigned. Returns when the next timer is due.
    async fn pass(self: &Arc<Self>) -> Option<Timestamp> {
        let now = self.clock.now();
        let (expired, overdue, claims) = {
            let mut queue = self.lock();
            let mut expired = Vec::new();
            let mut overdue = Vec::new();
            for id in queue.take_overdue(now) {
                if queue.attempts.stop(&id).is_some() {
                    overdue.extend(queue.get(&id).cloned());
                } else if let Some(task) = queue.forget(&id) {
                    expired.push(task);
                }
            }
            queue.release_backoffs(now);
            let claims = self.claim(&mut queue, now);
            (expired, overdue, claims)
        };
        for before in expired {
            let mut task = before.clone();
            outcome::expire_queued(&mut task, now);
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(task_id = %task.id, "task timed out while queued");
            let mut batch = Batch::new();
            batch.extend(self.records.change_ops(Some(&before), &task));
            if let Err(err) = self.store.write(batch).await {
                write_failed(&err, &task.id, "could not record timeout");
            }
        }
        for task in overdue {
            self.finish(task, Outcome::Stopped(Stop::Deadline)).await;
        }
        self.start(claims).await;
        self.lock().next_timer()
    }

    /// Claims a worker for each ready task that one can take now.
    fn claim(&self, queue: &mut Queue, now: Timestamp) -> Vec<Claim<Worker>> {
        let workers = self.workers.list();
        // Once every worker is full, the rest of the queue waits as it is.
        let free = assign::free_slots(&workers, |id| queue.attempts.load_of(id));
        queue.claim_ready(
            now,
            free,
            |task, attempts| {
                let needed = self.needed_capabilities(task);
                assign::pick_worker(
                    task,
                    &needed,
                    &workers,
                    |id| attempts.load_of(id),
                    |team, capability| self.plugins.resolve_capability(team, capability).is_some(),
                )
                .cloned()
            },
            |worker| worker.id.as_str(),
        )
    }

    fn needed_capabilities(&self, task: &Task) -> Vec<String> {
        match (&task.capability, &task.workflow) {
            (Some(capability), _) => vec![capability.clone()],
            (None, Some(name)) => self
                .workflows
                .get(name)
                .map(|w| w.capabilities())
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }

    /// Records the claims in one durable batch, then starts each.
    async fn start(self: &Arc<Self>, claims: Vec<Claim<Worker>>) {
        if claims.is_empty() {
            return;
        }
        let mut batch = Batch::new();
        for claim in &claims {
            batch.extend(self.records.change_ops(Some(&claim.before), &claim.task));
        }
        if let Err(err) = self.store.write(batch).await {
            write_failed(
                &err,
                "-",
                "could not record task assignments; they stay queued",
            );
            let now = self.clock.now();
            let mut queue = self.lock();
            for claim in &claims {
                queue.unclaim(claim, now);
            }
            return;
        }
        for Claim { task, holder, .. } in claims {
            tracing::info!(
                task_id = %task.id,
                worker_id = %holder.id,
                attempt = task.attempts,
                "task assigned"
            );
            let (id, attempt) = (task.id.clone(), task.attempts);
            // Spawned and attached under the queue's lock, which the attempt
            // takes first: it cannot finish (and free its entry) before its
            // call is attached, and a stop that came first is seen by both.
            let mut queue = self.lock();
            // On the guest pool: an attempt is mostly plugin calls, which
            // then run in place instead of hopping threads for each.
            let handle = self
                .plugins
                .guest_runtime()
                .spawn(self.clone().execute(task, holder));
            queue.attempts.attach(&id, attempt, handle.abort_handle());
        }
    }

    async fn execute(self: Arc<Self>, task: Task, worker: Worker) {
        // A cancel, restart or deadline may have stopped this attempt between
        // its claim and now; then it must not run at all.
        if !self.lock().attempts.is_current(&task.id, task.attempts) {
            return;
        }
        let outcome = match attempt::run(&self.plugins, &self.workflows, &task, &worker).await {
            Ok(output) => Outcome::Succeeded(output),
            Err(failure) => Outcome::Failed(failure),
        };
        // Whoever removes the attempt owns the task's next state: a cancel,
        // restart or deadline may have taken it already.
        if !self.lock().attempts.finish(&task.id, task.attempts) {
            return;
        }
        self.finish(task, outcome).await;
    }

    /// Writes the task's state after an attempt (`task` is the running
    /// copy, as stored) and queues it again if it is not over.
    async fn finish(&self, before: Task, outcome: Outcome) {
        let now = self.clock.now();
        let worker_id = before.worker_id.clone().unwrap_or_default();
        let mut task = before.clone();
        let counted = outcome::apply(&mut task, outcome, now);
        // The task's new state and its worker's counters commit together:
        // one durable write per attempt, not two in a row.
        let mut batch = Batch::new();
        batch.extend(self.records.change_ops(Some(&before), &task));
        if let Some(ok) = counted {
            match self.workers.count_outcome(&worker_id, ok) {
                Ok(op) => {
                    batch.push(op);
                }
                Err(err) => {
                    tracing::warn!(worker_id = %worker_id, error = %err, "could not count the task on its worker");
                }
            }
        }
        if let Err(err) = self.store.write(batch).await {
            write_failed(&err, &task.id, "could not record the task's state");
        }
        self.log_outcome(&task, &worker_id);
        {
            let mut queue = self.lock();
            queue.forget(&task.id);
            if !task.status.is_terminal() {
                queue.enqueue(task, now);
            }
        }
        self.attempt_ended.notify_waiters();
        self.wake.notify_one();
    }

    fn log_outcome(&self, task: &Task, worker_id: &str) {
        match task.status {
            TaskStatus::Succeeded => {
                self.succeeded.fetch_add(1, Ordering::Relaxed);
                tracing::info!(task_id = %task.id, worker_id = %worker_id, attempt = task.attempts, "task succeeded");
            }
            TaskStatus::Failed | TaskStatus::TimedOut => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    task_id = %task.id, worker_id = %worker_id, attempt = task.attempts,
                    status = ?task.status, kind = %task.error_kind.map_or("-", |k| k.as_str()),
                    error = %task.error.as_deref().unwrap_or("-"),
                    "task failed"
                );
            }
            TaskStatus::Cancelled => {
                tracing::info!(task_id = %task.id, worker_id = %worker_id, "task cancelled while running");
            }
            TaskStatus::Queued => tracing::warn!(
                task_id = %task.id, worker_id = %worker_id, attempt = task.attempts,
                error = %task.error.as_deref().unwrap_or("-"),
                retry_at = %task.not_before.map(|t| t.to_string()).unwrap_or_else(|| "now".into()),
                "task attempt failed; queued again"
            ),
            TaskStatus::Running => {}
        }
    }
}

/// Logs a write the scheduler could not make. While the store is
/// unavailable its episode has logged the one ERROR line; each refused
/// write is a WARN then.
fn write_failed(err: &StoreError, task_id: &str, what: &str) {
    if err.is_unavailable() {
        tracing::warn!(task_id = %task_id, error = %err, "{what}");
    } else {
        tracing::error!(task_id = %task_id, error = %err, "{what}");
    }
}
