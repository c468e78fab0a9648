//! Workers: the agents that take tasks. Registration, lookup and listing.
//!
//! A worker declares a type and the capabilities it has; capabilities resolve
//! to capability plugins of the worker's team (or the bundled `core` team).

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::names::Name;
use crate::plugins::Plugins;
use crate::store::{Op, Store, StoreError, Table};

const WORKERS: &str = "workers";

/// Longest worker id, name or type accepted.
pub const MAX_TEXT: usize = 128;

/// What a worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    /// Ready for tasks.
    Idle,
    /// Running as many tasks as its concurrency allows.
    Busy,
    /// Taken out of service. Reserved: nothing stops a worker yet.
    Stopped,
    /// None of its capabilities resolves to a loaded plugin, so no task can
    /// be given to it until a plugin brings one.
    Unhealthy,
}

/// A registration request, as `POST /workers` takes it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewWorker {
    /// Unique id, e.g. `TODO_WORKER_001`.
    #[schema(example = "TODO_WORKER_001")]
    pub id: Name,
    /// Human-readable name.
    #[schema(example = "TODO 관리 워커", min_length = 1, max_length = 128)]
    pub name: String,
    /// Worker type; tasks of the same type go to it.
    #[serde(rename = "type")]
    #[schema(example = "TODO", min_length = 1, max_length = 128)]
    pub kind: String,
    /// Capabilities the worker has, e.g. `task_creation`.
    #[schema(min_items = 1)]
    pub capabilities: Vec<Name>,
    /// Owning team; `default` when absent.
    pub team: Option<Name>,
    /// Tasks it may run at once; 1 when absent.
    #[schema(minimum = 1, maximum = 1024)]
    pub concurrency: Option<u32>,
}

/// A registered worker.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Worker {
    /// Unique id.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Worker type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Capabilities it has.
    pub capabilities: Vec<String>,
    /// Owning team.
    pub team: String,
    /// Tasks it may run at once.
    pub concurrency: u32,
    /// What it is doing.
    pub status: WorkerStatus,
    /// Tasks it finished successfully.
    pub tasks_completed: u64,
    /// Tasks that failed on it.
    pub tasks_failed: u64,
    /// When it was registered.
    pub registered_at: Timestamp,
    /// When it last did anything.
    pub last_seen_at: Timestamp,
}

/// A worker with each capability resolved against the loaded plugins.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerView {
    /// The stored worker.
    #[serde(flatten)]
    pub worker: Worker,
    /// Tasks it is running now.
    pub active_tasks: usize,
    /// How each capability resolves.
    pub resolved_capabilities: Vec<ResolvedCapability>,
}

/// Which plugin serves one of a worker's capabilities, if any.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedCapability {
    /// The capability.
    pub capability: String,
    /// `team/name` of the plugin serving it, if one does.
    pub plugin: Option<String>,
    /// Version of that plugin.
    pub version: Option<String>,
    /// Why it is unresolved, if it is.
    pub unresolved_reason: Option<String>,
}

/// Why a worker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A field has a value that is not allowed.
    #[error("`{field}` {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The id is taken.
    #[error("a worker with id {0:?} already exists")]
    AlreadyExists(String),
    /// No worker has the id.
    #[error("no worker has id {0:?}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

/// The worker registry. Workers are few and read on every scheduling pass,
/// so they are cached in memory; the store is the truth on restart.
pub struct Workers {
    table: Table<Worker>,
    cache: RwLock<BTreeMap<String, Worker>>,
}

impl Workers {
    /// The registry kept in `store`.
    pub async fn open(store: &Store) -> Result<Self, WorkerError> {
        let table: Table<Worker> = store.table(WORKERS);
        let cache = table
            .load()
            .await
            .map_err(WorkerError::Store)?
            .into_iter()
            .map(|worker| (worker.id.clone(), worker))
            .collect();
        Ok(Self {
            table,
            cache: RwLock::new(cache),
        })
    }

    /// Registers a worker of `team` (the caller's scope decided it; the
    /// body's `team` is not read here); durable when it returns.
    pub async fn register(&self, team: Name, new: NewWorker) -> Result<Worker, WorkerError> {
        validate(&new)?;
        let now = Timestamp::now();
        let worker = Worker {
            id: new.id.into(),
            name: new.name,
            kind: new.kind,
            capabilities: new.capabilities.into_iter().map(String::from).collect(),
            team: team.into(),
            concurrency: new.concurrency.unwrap_or(1),
            status: WorkerStatus::Idle,
            tasks_completed: 0,
            tasks_failed: 0,
            registered_at: now,
            last_seen_at: now,
        };
        match self.table.insert(&worker.id, &worker).await {
            Ok(()) => {}
            Err(StoreError::AlreadyExists { .. }) => {
                return Err(WorkerError::AlreadyExists(worker.id));
            }
            Err(err) => return Err(WorkerError::Store(err)),
        }
        self.cache
            .write()
            .expect("worker cache poisoned")
            .insert(worker.id.clone(), worker.clone());
        tracing::info!(
            worker_id = %worker.id,
            worker_type = %worker.kind,
            team = %worker.team,
            capabilities = %worker.capabilities.join(","),
            "worker registered"
        );
        Ok(worker)
    }

    /// One worker.
    pub fn get(&self, id: &str) -> Result<Worker, WorkerError> {
        self.cache
            .read()
            .expect("worker cache poisoned")
            .get(id)
            .cloned()
            .ok_or_else(|| WorkerError::NotFound(id.to_owned()))
    }

    /// Every worker, in id order.
    pub fn list(&self) -> Vec<Worker> {
        self.cache
            .read()
            .expect("worker cache poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// How many workers are registered.
    pub fn count(&self) -> u64 {
        self.cache.read().expect("worker cache poisoned").len() as u64
    }

    /// Counts a finished task on the worker that ran it, and returns the
    /// write that records the new counters. The caller puts it in the same
    /// batch as the task's outcome, so a task and the count of it become
    /// durable together, in one commit.
    ///
    /// The count is taken in memory at once. If the batch then fails, memory
    /// is one ahead of the store until the worker's next counted task.
    pub fn count_outcome(&self, id: &str, succeeded: bool) -> Result<Op, WorkerError> {
        let mut cache = self.cache.write().expect("worker cache poisoned");
        let Some(worker) = cache.get_mut(id) else {
            return Err(WorkerError::NotFound(id.to_owned()));
        };
        if succeeded {
            worker.tasks_completed += 1;
        } else {
            worker.tasks_failed += 1;
        }
        worker.last_seen_at = Timestamp::now();
        Ok(self.table.put_op(id, worker))
    }
}

/// Resolves each capability of `worker` against the plugins loaded now, and
/// shows its live status: `busy` while it runs as many tasks as its
/// concurrency allows, `unhealthy` while none of its capabilities resolves to
/// a loaded plugin (the scheduler can give it nothing until one does).
pub fn resolve(mut worker: Worker, plugins: &Plugins, active_tasks: usize) -> WorkerView {
    let resolved_capabilities = worker
        .capabilities
        .iter()
        .map(
            |capability| match plugins.resolve_capability(&worker.team, capability) {
                Some((team, name, version)) => ResolvedCapability {
                    capability: capability.clone(),
                    plugin: Some(format!("{team}/{name}")),
                    version: Some(version),
                    unresolved_reason: None,
                },
                None => ResolvedCapability {
                    capability: capability.clone(),
                    plugin: None,
                    version: None,
                    unresolved_reason: Some(format!(
                        "no loaded capability plugin of team {:?} or \"core\" offers it",
                        worker.team
                    )),
                },
            },
        )
        .collect::<Vec<ResolvedCapability>>();
    if worker.status == WorkerStatus::Idle {
        if active_tasks >= worker.concurrency as usize {
            worker.status = WorkerStatus::Busy;
        } else if resolved_capabilities.iter().all(|c| c.plugin.is_none()) {
            worker.status = WorkerStatus::Unhealthy;
        }
    }
    WorkerView {
        worker,
        active_tasks,
        resolved_capabilities,
    }
}

/// The workers that are unhealthy now (none of their capabilities
/// resolves to a loaded plugin), each with why, in id order: what alerting
/// watches. A worker taken out of service is not counted.
pub fn unhealthy(workers: &Workers, plugins: &Plugins) -> Vec<(Worker, String)> {
    workers
        .list()
        .into_iter()
        .filter(|w| w.status == WorkerStatus::Idle)
        .filter_map(|worker| {
            let unresolved = worker
                .capabilities
                .iter()
                .all(|c| plugins.resolve_capability(&worker.team, c).is_none());
            unresolved.then(|| {
                let why = format!(
                    "none of its capabilities ({}) resolves to a loaded plugin of team {:?} or \"core\"",
                    worker.capabilities.join(", "),
                    worker.team
                );
                (worker, why)
            })
        })
        .collect()
}

fn validate(new: &NewWorker) -> Result<(), WorkerError> {
    let invalid = |field, message: &str| {
        Err(WorkerError::Invalid {
            field,
            message: message.to_owned(),
        })
    };
    if new.name.trim().is_empty() || new.name.len() > MAX_TEXT {
        return invalid("name", "must be 1 to 128 characters");
    }
    if new.kind.trim().is_empty() || new.kind.len() > MAX_TEXT {
        return invalid("type", "must be 1 to 128 characters");
    }
    if new.capabilities.is_empty() {
        return invalid("capabilities", "must list at least one capability");
    }
    if let Some(concurrency) = new.concurrency
        && !(1..=1024).contains(&concurrency)
    {
        return invalid("concurrency", "must be 1 to 1024");
    }
    Ok(())
}
