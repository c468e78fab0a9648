//! The task service: submission, lookup, cancel, worker restart, and the
//! scheduling loop that runs tasks on workers through plugins.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::{NewTask, Priority, Task, TaskError, TaskPage, TaskQuery, TaskStatus};
use crate::clock::Timestamp;
use crate::names::Name;
use crate::plugins::{Caller, ErrorKind, InvokeError, Plugins};
use crate::store::{Batch, Store, Table};
use crate::workers::{Worker, WorkerStatus, Workers};
use crate::workflows::{Workflows, render};

const TASKS: &str = "tasks";

/// Attempts a task gets when the submission does not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Backoff before the second attempt; it doubles for each further one.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest backoff between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Queue order: priority, then age, then id.
type QueueKey = (Priority, Timestamp, String);

/// Why a running task was stopped from outside.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Cancel,
    Restart,
    Deadline,
}

/// How one attempt ended.
enum Outcome {
    Succeeded(Value),
    Failed(Failure),
    Stopped(Stop),
}

/// Why an attempt failed: its kind decides whether it is retried.
struct Failure {
    kind: ErrorKind,
    message: String,
}

impl Failure {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The same failure, said of one workflow step.
    fn in_step(self, step: &str) -> Self {
        Self::new(self.kind, format!("step {step:?}: {}", self.message))
    }
}

/// A task's attempt in flight. `attempt` tells a stale execution (one whose
/// attempt was stopped before it even started) from the current one.
struct Running {
    worker_id: String,
    attempt: u32,
    abort: Option<AbortHandle>,
}

/// What the scheduler holds in memory: every unfinished task, and who runs
/// what.
#[derive(Default)]
struct Queue {
    unfinished: HashMap<String, Task>,
    ready: BTreeSet<QueueKey>,
    delayed: BTreeSet<(Timestamp, String)>,
    deadlines: BTreeSet<(Timestamp, String)>,
    running: HashMap<String, Running>,
    load: HashMap<String, usize>,
    reasons: HashMap<String, String>,
}

impl Queue {
    fn enqueue(&mut self, task: Task) {
        if let Some(deadline) = task.deadline {
            self.deadlines.insert((deadline, task.id.clone()));
        }
        match task.not_before {
            Some(at) if at > Timestamp::now() => {
                self.delayed.insert((at, task.id.clone()));
            }
            _ => {
                self.ready
                    .insert((task.priority, task.created_at, task.id.clone()));
            }
        }
        self.unfinished.insert(task.id.clone(), task);
    }

    fn forget(&mut self, task: &Task) {
        self.ready
            .remove(&(task.priority, task.created_at, task.id.clone()));
        if let Some(at) = task.not_before {
            self.delayed.remove(&(at, task.id.clone()));
        }
        if let Some(deadline) = task.deadline {
            self.deadlines.remove(&(deadline, task.id.clone()));
        }
        self.unfinished.remove(&task.id);
        self.reasons.remove(&task.id);
    }
}

/// Totals for `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskCounts {
    /// Tasks ever submitted.
    pub total: u64,
    /// Tasks waiting for a worker or a retry.
    pub queued: u64,
    /// Tasks running now.
    pub running: u64,
    /// Tasks that succeeded.
    pub succeeded: u64,
    /// Tasks that ended failed or timed out.
    pub failed: u64,
}

/// The task service and its scheduler.
pub struct Tasks {
    table: Table<Task>,
    store: Store,
    workers: Arc<Workers>,
    workflows: Arc<Workflows>,
    plugins: Arc<Plugins>,
    queue: Mutex<Queue>,
    wake: Notify,
    next_id: AtomicU64,
    total: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
}

impl Tasks {
    /// Loads the queue from the store. Tasks that were running when the
    /// host stopped are queued again, their attempt counted.
    pub async fn open(
        store: &Store,
        workers: Arc<Workers>,
        workflows: Arc<Workflows>,
        plugins: Arc<Plugins>,
    ) -> Result<Arc<Self>, TaskError> {
        let table: Table<Task> = store.table(TASKS);
        let mut queue = Queue::default();
        let (mut total, mut succeeded, mut failed) = (0, 0, 0);
        let mut requeued = Batch::new();
        for mut task in table.load().await? {
            total += 1;
            match task.status {
                TaskStatus::Succeeded => succeeded += 1,
                TaskStatus::Failed | TaskStatus::TimedOut => failed += 1,
                TaskStatus::Cancelled => {}
                TaskStatus::Queued => queue.enqueue(task),
                TaskStatus::Running => {
                    tracing::warn!(
                        task_id = %task.id,
                        worker_id = %task.worker_id.as_deref().unwrap_or("-"),
                        attempt = task.attempts,
                        "task was running when the host stopped; queued again"
                    );
                    task.status = TaskStatus::Queued;
                    task.updated_at = Timestamp::now();
                    requeued.push(table.put_op(&task.id, &task));
                    queue.enqueue(task);
                }
            }
        }
        store.write(requeued).await?;
        let tasks = Arc::new(Self {
            table,
            store: store.clone(),
            workers,
            workflows,
            plugins,
            queue: Mutex::new(queue),
            wake: Notify::new(),
            next_id: AtomicU64::new(0),
            total: AtomicU64::new(total),
            succeeded: AtomicU64::new(succeeded),
            failed: AtomicU64::new(failed),
        });
        tokio::spawn(tasks.clone().schedule_forever());
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
        let now = Timestamp::now();
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
        self.table.insert(&task.id, &task).await?;
        self.total.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            task_id = %task.id,
            task_type = %task.kind,
            priority = %task.priority.as_str(),
            workflow = %task.workflow.as_deref().unwrap_or("-"),
            capability = %task.capability.as_deref().unwrap_or("-"),
            "task queued"
        );
        self.lock().enqueue(task.clone());
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
            .table
            .get(id)?
            .ok_or_else(|| TaskError::NotFound(id.to_owned()))?;
        task.waiting_reason = self.lock().reasons.get(id).cloned();
        Ok(task)
    }

    /// A filtered page of the tasks of the teams `visible` admits, oldest
    /// first.
    pub fn list(
        &self,
        query: &TaskQuery,
        visible: &dyn Fn(&str) -> bool,
    ) -> Result<TaskPage, TaskError> {
        let limit = query.limit.unwrap_or(50).clamp(1, 500);
        let offset = query.offset.unwrap_or(0);
        let mut matching: Vec<Task> = self
            .table
            .list()?
            .into_iter()
            .filter(|t| visible(&t.team))
            .filter(|t| {
                query
                    .team
                    .as_ref()
                    .is_none_or(|team| t.team == team.as_str())
            })
            .filter(|t| query.status.is_none_or(|s| t.status == s))
            .filter(|t| query.kind.as_ref().is_none_or(|k| &t.kind == k))
            .filter(|t| query.priority.is_none_or(|p| t.priority == p))
            .filter(|t| query.worker.is_none() || t.worker_id == query.worker)
            .collect();
        matching.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let total = matching.len();
        let reasons = self.lock().reasons.clone();
        let items = matching
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|mut task| {
                task.waiting_reason = reasons.get(&task.id).cloned();
                task
            })
            .collect();
        Ok(TaskPage {
            items,
            total,
            limit,
            offset,
        })
    }

    /// Totals for `/status`.
    pub fn counts(&self) -> TaskCounts {
        let (unfinished, running) = {
            let queue = self.lock();
            (queue.unfinished.len() as u64, queue.running.len() as u64)
        };
        TaskCounts {
            total: self.total.load(Ordering::Relaxed),
            queued: unfinished - running,
            running,
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Tasks a worker is running now.
    pub fn active_on(&self, worker_id: &str) -> usize {
        self.lock().load.get(worker_id).copied().unwrap_or(0)
    }

    /// Cancels a queued or running task (stopping its call).
    pub async fn cancel(&self, id: &str) -> Result<Task, TaskError> {
        let (queued, running) = {
            let mut queue = self.lock();
            match queue.unfinished.get(id).cloned() {
                None => (None, None),
                Some(task) if task.status == TaskStatus::Queued => {
                    queue.forget(&task);
                    (Some(task), None)
                }
                Some(task) => (
                    None,
                    queue.running.remove(id).map(|running| (task, running)),
                ),
            }
        };
        if let Some(mut task) = queued {
            let now = Timestamp::now();
            task.status = TaskStatus::Cancelled;
            task.updated_at = now;
            task.finished_at = Some(now);
            self.table.put(&task.id, &task).await?;
            tracing::info!(task_id = %task.id, "task cancelled while queued");
            return Ok(task);
        }
        if let Some((task, running)) = running {
            if let Some(abort) = running.abort {
                abort.abort();
            }
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
        let stopped: Vec<(Task, Running)> = {
            let mut queue = self.lock();
            let ids: Vec<String> = queue
                .running
                .iter()
                .filter(|(_, running)| running.worker_id == worker_id)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| {
                    let running = queue.running.remove(&id)?;
                    let task = queue.unfinished.get(&id)?.clone();
                    Some((task, running))
                })
                .collect()
        };
        let mut ids = Vec::new();
        for (task, running) in stopped {
            if let Some(abort) = running.abort {
                abort.abort();
            }
            ids.push(task.id.clone());
            self.finish(task, Outcome::Stopped(Stop::Restart)).await;
        }
        tracing::info!(worker_id = %worker_id, requeued = ids.len(), tasks = %ids.join(","), "worker restarted");
        self.wake.notify_one();
        ids
    }

    async fn schedule_forever(self: Arc<Self>) {
        // A plugin loaded, swapped or removed can make waiting tasks
        // runnable (or not), so a change to the plugins wakes the loop too.
        let mut plugin_changes = self.plugins.subscribe();
        // Claims refused while the store was unavailable left their tasks
        // queued; the store coming back must start them without waiting
        // for the next submission.
        let mut store_changes = self.store.health_changes();
        loop {
            let next_timer = self.pass().await;
            let sleep = next_timer.map_or(Duration::from_secs(3600), |at| at.from_now());
            tokio::select! {
                _ = self.wake.notified() => {}
                Ok(()) = plugin_changes.changed() => {}
                Ok(()) = store_changes.changed() => {}
                _ = tokio::time::sleep(sleep.max(Duration::from_millis(1))) => {}
            }
        }
    }

    /// One scheduling pass: expire deadlines, release backoffs, assign what
    /// can be assigned. Returns when the next timer is due.
    async fn pass(self: &Arc<Self>) -> Option<Timestamp> {
        let now = Timestamp::now();
        let (expired, overdue, claims) = {
            let mut queue = self.lock();
            // Deadlines.
            let due: Vec<String> = queue
                .deadlines
                .iter()
                .take_while(|(at, _)| *at <= now)
                .map(|(_, id)| id.clone())
                .collect();
            let mut expired = Vec::new();
            let mut overdue = Vec::new();
            for id in due {
                let Some(task) = queue.unfinished.get(&id).cloned() else {
                    continue;
                };
                if let Some(running) = queue.running.remove(&id) {
                    overdue.push((task, running));
                } else {
                    queue.forget(&task);
                    expired.push(task);
                }
            }
            // Backoffs that have passed.
            let released: Vec<(Timestamp, String)> = queue
                .delayed
                .iter()
                .take_while(|(at, _)| *at <= now)
                .cloned()
                .collect();
            for key in released {
                queue.delayed.remove(&key);
                if let Some(task) = queue.unfinished.get(&key.1) {
                    let ready = (task.priority, task.created_at, task.id.clone());
                    queue.ready.insert(ready);
                }
            }
            let claims = self.assign(&mut queue, now);
            (expired, overdue, claims)
        };
        for mut task in expired {
            task.status = TaskStatus::TimedOut;
            task.error = Some("deadline passed before a worker finished it".into());
            task.error_kind = Some(ErrorKind::Timeout);
            task.updated_at = now;
            task.finished_at = Some(now);
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(task_id = %task.id, "task timed out while queued");
            if let Err(err) = self.table.put(&task.id, &task).await {
                // A faulted store has logged its episode; one ERROR is enough.
                if err.is_unavailable() {
                    tracing::warn!(task_id = %task.id, error = %err, "could not record timeout");
                } else {
                    tracing::error!(task_id = %task.id, error = %err, "could not record timeout");
                }
            }
        }
        for (task, running) in overdue {
            if let Some(abort) = running.abort {
                abort.abort();
            }
            self.finish(task, Outcome::Stopped(Stop::Deadline)).await;
        }
        self.start(claims).await;
        let queue = self.lock();
        let next_delay = queue.delayed.first().map(|(at, _)| *at);
        let next_deadline = queue.deadlines.first().map(|(at, _)| *at);
        next_delay.into_iter().chain(next_deadline).min()
    }

    /// Picks a worker for each ready task it can, marking both as taken.
    fn assign(&self, queue: &mut Queue, now: Timestamp) -> Vec<(Task, Worker)> {
        let workers = self.workers.list();
        let mut claims = Vec::new();
        // Once every worker is full, the rest of the queue waits as it is.
        let mut free_slots: usize = workers
            .iter()
            .filter(|w| w.status == WorkerStatus::Idle)
            .map(|w| {
                (w.concurrency as usize).saturating_sub(queue.load.get(&w.id).copied().unwrap_or(0))
            })
            .sum();
        // Walk the queue in order without copying it: it may hold many
        // thousands of tasks while only a few slots are free.
        let mut cursor: Option<QueueKey> = None;
        while free_slots > 0 {
            let next = match &cursor {
                None => queue.ready.first(),
                Some(after) => queue
                    .ready
                    .range((Bound::Excluded(after.clone()), Bound::Unbounded))
                    .next(),
            };
            let Some(key) = next.cloned() else { break };
            cursor = Some(key.clone());
            let Some(task) = queue.unfinished.get(&key.2) else {
                continue;
            };
            let needed = self.needed_capabilities(task);
            let chosen = match self.pick_worker(task, &needed, &workers, &queue.load) {
                Ok(worker) => worker,
                Err(reason) => {
                    queue.reasons.insert(task.id.clone(), reason);
                    continue;
                }
            };
            let mut task = task.clone();
            task.status = TaskStatus::Running;
            task.attempts += 1;
            task.worker_id = Some(chosen.id.clone());
            task.started_at = Some(now);
            task.updated_at = now;
            task.not_before = None;
            queue.ready.remove(&key);
            queue.reasons.remove(&task.id);
            *queue.load.entry(chosen.id.clone()).or_default() += 1;
            queue.running.insert(
                task.id.clone(),
                Running {
                    worker_id: chosen.id.clone(),
                    attempt: task.attempts,
                    abort: None,
                },
            );
            queue.unfinished.insert(task.id.clone(), task.clone());
            claims.push((task, chosen.clone()));
            free_slots -= 1;
        }
        claims
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

    /// The least-loaded worker that can take `task` now, or why none can.
    fn pick_worker<'w>(
        &self,
        task: &Task,
        needed: &[String],
        workers: &'w [Worker],
        load: &HashMap<String, usize>,
    ) -> Result<&'w Worker, String> {
        let of_type: Vec<&Worker> = workers.iter().filter(|w| w.kind == task.kind).collect();
        if of_type.is_empty() {
            return Err(format!("no worker of type {:?} is registered", task.kind));
        }
        let capable: Vec<&Worker> = of_type
            .into_iter()
            .filter(|w| needed.iter().all(|c| w.capabilities.contains(c)))
            .collect();
        if capable.is_empty() {
            return Err(format!(
                "no worker of type {:?} has all of the capabilities {needed:?}",
                task.kind
            ));
        }
        let served: Vec<&Worker> = capable
            .into_iter()
            .filter(|w| {
                needed
                    .iter()
                    .all(|c| self.plugins.resolve_capability(&w.team, c).is_some())
            })
            .collect();
        if served.is_empty() {
            return Err(format!(
                "no loaded plugin serves the capabilities {needed:?} for the workers of type {:?}",
                task.kind
            ));
        }
        served
            .into_iter()
            .filter(|w| w.status == WorkerStatus::Idle)
            .filter(|w| load.get(&w.id).copied().unwrap_or(0) < w.concurrency as usize)
            .min_by_key(|w| load.get(&w.id).copied().unwrap_or(0))
            .ok_or_else(|| format!("every capable worker of type {:?} is busy", task.kind))
    }

    /// Records the claims in one durable batch, then starts each.
    async fn start(self: &Arc<Self>, claims: Vec<(Task, Worker)>) {
        if claims.is_empty() {
            return;
        }
        let mut batch = Batch::new();
        for (task, _) in &claims {
            batch.push(self.table.put_op(&task.id, task));
        }
        if let Err(err) = self.store.write(batch).await {
            // A faulted store has logged its episode; one ERROR is enough.
            if err.is_unavailable() {
                tracing::warn!(error = %err, "could not record task assignments; they stay queued");
            } else {
                tracing::error!(error = %err, "could not record task assignments; they stay queued");
            }
            let mut queue = self.lock();
            for (mut task, worker) in claims {
                queue.running.remove(&task.id);
                if let Some(load) = queue.load.get_mut(&worker.id) {
                    *load = load.saturating_sub(1);
                }
                task.status = TaskStatus::Queued;
                task.attempts -= 1;
                queue.enqueue(task);
            }
            return;
        }
        for (task, worker) in claims {
            tracing::info!(
                task_id = %task.id,
                worker_id = %worker.id,
                attempt = task.attempts,
                "task assigned"
            );
            let (id, attempt) = (task.id.clone(), task.attempts);
            // On the guest pool: an attempt is mostly plugin calls, which
            // then run in place instead of hopping threads for each.
            let handle = self
                .plugins
                .guest_runtime()
                .spawn(self.clone().execute(task, worker));
            if let Some(running) = self.lock().running.get_mut(&id)
                && running.attempt == attempt
            {
                running.abort = Some(handle.abort_handle());
            }
        }
    }

    async fn execute(self: Arc<Self>, task: Task, worker: Worker) {
        // A cancel, restart or deadline may have stopped this attempt between
        // its claim and now; then it must not run at all.
        if !self.owns_attempt(&task) {
            return;
        }
        let outcome = match self.run(&task, &worker).await {
            Ok(output) => Outcome::Succeeded(output),
            Err(error) => Outcome::Failed(error),
        };
        // Whoever removes the running entry owns the task's next state: a
        // cancel, restart or deadline may have taken it already.
        if !self.take_attempt(&task) {
            return;
        }
        self.finish(task, outcome).await;
    }

    fn owns_attempt(&self, task: &Task) -> bool {
        self.lock()
            .running
            .get(&task.id)
            .is_some_and(|running| running.attempt == task.attempts)
    }

    /// Removes the task's running entry if it still belongs to this attempt.
    fn take_attempt(&self, task: &Task) -> bool {
        let mut queue = self.lock();
        let ours = queue
            .running
            .get(&task.id)
            .is_some_and(|running| running.attempt == task.attempts);
        if ours {
            queue.running.remove(&task.id);
        }
        ours
    }

    /// Runs the task's capability, or its workflow's steps in order.
    async fn run(&self, task: &Task, worker: &Worker) -> Result<Value, Failure> {
        if let Some(capability) = &task.capability {
            return self.call(task, worker, capability, &task.data).await;
        }
        let name = task.workflow.as_deref().unwrap_or_default();
        // A workflow defined now is defined for good: a missing one is
        // no passing condition.
        let workflow = self
            .workflows
            .get(name)
            .map_err(|err| Failure::new(ErrorKind::Unsupported, err.to_string()))?;
        let mut context = json!({"data": task.data, "steps": {}});
        let mut outputs = Map::new();
        for step in &workflow.steps {
            // A template over its bounds fails the same way every time.
            let input = render(&step.input, &context)
                .map_err(|err| Failure::new(ErrorKind::InvalidInput, err).in_step(&step.name))?;
            let output = self
                .call(task, worker, &step.capability, &input)
                .await
                .map_err(|failure| failure.in_step(&step.name))?;
            tracing::info!(task_id = %task.id, worker_id = %worker.id, workflow = %name, step = %step.name, "workflow step done");
            context["steps"][step.name.as_str()] = output.clone();
            outputs.insert(step.name.to_string(), output);
        }
        Ok(json!({"workflow": name, "steps": outputs}))
    }

    async fn call(
        &self,
        task: &Task,
        worker: &Worker,
        capability: &str,
        input: &Value,
    ) -> Result<Value, Failure> {
        let (team, plugin, _) = self
            .plugins
            .resolve_capability(&worker.team, capability)
            .ok_or_else(|| {
                Failure::new(
                    ErrorKind::Unavailable,
                    format!("no loaded plugin serves capability {capability:?}"),
                )
            })?;
        let caller = Caller {
            worker_id: Some(worker.id.clone()),
            subject_id: Some(task.id.clone()),
        };
        self.plugins
            .invoke(&team, &plugin, capability, input, caller)
            .await
            .map_err(|err| {
                let kind = match &err {
                    InvokeError::Call(call) => call.kind(),
                    // Unloaded or changed since it was resolved a moment ago.
                    InvokeError::NotFound { .. } | InvokeError::UnknownCapability { .. } => {
                        ErrorKind::Unavailable
                    }
                };
                Failure::new(kind, err.to_string())
            })
    }

    /// Writes the task's state after an attempt and frees its worker slot.
    async fn finish(&self, mut task: Task, outcome: Outcome) {
        let now = Timestamp::now();
        let worker_id = task.worker_id.clone().unwrap_or_default();
        task.updated_at = now;
        let mut succeeded = None;
        match outcome {
            Outcome::Succeeded(output) => {
                task.status = TaskStatus::Succeeded;
                task.result = Some(output);
                task.error = None;
                task.error_kind = None;
                succeeded = Some(true);
            }
            Outcome::Failed(failure) => {
                task.error = Some(failure.message);
                task.error_kind = Some(failure.kind);
                succeeded = Some(false);
                if failure.kind.retryable() {
                    self.retry_or_fail(&mut task, now);
                } else {
                    // A retry cannot help (see `ErrorKind::retryable`).
                    task.status = TaskStatus::Failed;
                }
            }
            Outcome::Stopped(Stop::Cancel) => task.status = TaskStatus::Cancelled,
            Outcome::Stopped(Stop::Deadline) => {
                task.status = TaskStatus::TimedOut;
                task.error = Some("deadline passed while it ran; its call was stopped".into());
                task.error_kind = Some(ErrorKind::Timeout);
            }
            Outcome::Stopped(Stop::Restart) => {
                task.error = Some(format!(
                    "worker {worker_id} was restarted during the attempt"
                ));
                task.error_kind = None;
                self.retry_or_fail(&mut task, now);
                task.not_before = None;
            }
        }
        if task.status.is_terminal() {
            task.finished_at = Some(now);
        }
        // The task's new state and its worker's counters commit together:
        // one durable write per attempt, not two in a row.
        let mut batch = Batch::new();
        batch.push(self.table.put_op(&task.id, &task));
        if let Some(ok) = succeeded {
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
            // A faulted store has logged its episode; one ERROR is enough.
            if err.is_unavailable() {
                tracing::warn!(task_id = %task.id, error = %err, "could not record the task's state");
            } else {
                tracing::error!(task_id = %task.id, error = %err, "could not record the task's state");
            }
        }
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
        {
            let mut queue = self.lock();
            if let Some(load) = queue.load.get_mut(&worker_id) {
                *load = load.saturating_sub(1);
            }
            if let Some(old) = queue.unfinished.get(&task.id).cloned() {
                queue.forget(&old);
            }
            if !task.status.is_terminal() {
                queue.enqueue(task);
            }
        }
        self.wake.notify_one();
    }

    fn retry_or_fail(&self, task: &mut Task, now: Timestamp) {
        if task.attempts < task.max_attempts {
            let factor = 2u32.saturating_pow(task.attempts.saturating_sub(1));
            let backoff = BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX);
            task.status = TaskStatus::Queued;
            task.not_before = Some(now.plus(backoff));
        } else {
            task.status = TaskStatus::Failed;
        }
    }
}
