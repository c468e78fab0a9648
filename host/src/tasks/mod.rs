//! Tasks: the durable queue and the scheduler that hands tasks to workers.
//!
//! Every task lives in the store; the scheduler keeps the unfinished ones in
//! memory as well, ordered by priority then age. A scheduling pass assigns
//! each queued task to a worker of the same type whose capabilities cover
//! the task and have a plugin to serve them, up to the worker's concurrency.
//! All claims of one pass are written in one batch before any runs. A task
//! that fails is retried with exponential backoff up to `maxAttempts`; a task
//! past its deadline ends `timed_out`, stopping its call if one runs.
//!
//! Delivery is at least once: a task that was running when the host died is
//! queued again on the next start (its attempt counted), so a plugin may see
//! it twice. Nothing acknowledged is lost.

mod assign;
mod attempt;
mod outcome;
mod queue;
mod records;
mod service;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;
use crate::names::Name;
use crate::plugins::ErrorKind;
use crate::store::StoreError;

pub use records::TaskCounts;
pub use service::{DEFAULT_MAX_ATTEMPTS, TaskDeps, Tasks};

/// How urgent a task is; the queue serves `critical` first.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Served first.
    Critical,
    /// Served before medium and low.
    High,
    /// The default.
    Medium,
    /// Served last.
    Low,
}

impl Priority {
    /// The word the API uses, e.g. `high`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::High => "high",
            Self::Medium => "medium",
            Self::Low => "low",
        }
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for a worker (or for its retry backoff to pass).
    Queued,
    /// A worker is running it.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Failed on its last attempt.
    Failed,
    /// Cancelled by an operator.
    Cancelled,
    /// Its deadline passed before it finished.
    TimedOut,
}

impl TaskStatus {
    /// The word the API uses, e.g. `timed_out`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }

    /// True once the task will never change again.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

/// A task submission, as `POST /tasks` takes it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTask {
    /// Task type; only workers of this type take it.
    #[serde(rename = "type")]
    #[schema(example = "TODO", min_length = 1, max_length = 128)]
    pub kind: String,
    /// `critical`, `high`, `medium` (default) or `low`.
    pub priority: Option<Priority>,
    /// Input for the workflow or capability: a JSON object (`{}` when
    /// absent).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: serde_json::Map<String, Value>,
    /// Workflow to run (one of `workflow` and `capability` is required).
    #[schema(example = "TODO_WORKFLOW")]
    pub workflow: Option<Name>,
    /// Capability to run.
    pub capability: Option<Name>,
    /// When the task must be done by: a date (end of that day, UTC) or an
    /// RFC 3339 timestamp.
    #[serde(default, deserialize_with = "deadline")]
    #[schema(value_type = Option<String>, example = "2025-10-10")]
    pub deadline: Option<Timestamp>,
    /// Attempts before it fails for good (default 3).
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// Team whose plugins serve it; `default` when absent.
    pub team: Option<Name>,
}

fn deadline<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Timestamp>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|text| Timestamp::parse_deadline(&text).map_err(serde::de::Error::custom))
        .transpose()
}

/// A task.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// Unique id, `task_…`.
    pub id: String,
    /// Task type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Priority.
    pub priority: Priority,
    /// Input.
    #[schema(value_type = serde_json::Value)]
    pub data: Value,
    /// Workflow it runs, if any.
    pub workflow: Option<String>,
    /// Capability it runs, if any.
    pub capability: Option<String>,
    /// Team whose plugins serve it.
    pub team: String,
    /// When it must be done by.
    pub deadline: Option<Timestamp>,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Where it is.
    pub status: TaskStatus,
    /// Worker running it, or that ran it last.
    pub worker_id: Option<String>,
    /// Output, once succeeded.
    #[schema(value_type = Option<serde_json::Value>)]
    pub result: Option<Value>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// The kind of that failure (`invalid_input`, `timeout`, `trap`, …),
    /// which decided whether the task was retried.
    #[serde(default)]
    pub error_kind: Option<ErrorKind>,
    /// Why a queued task is still waiting.
    pub waiting_reason: Option<String>,
    /// Not retried before this moment.
    pub not_before: Option<Timestamp>,
    /// When it was submitted.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When its last attempt started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
}

/// Filters and paging of `GET /tasks`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// Only tasks with this status.
    pub status: Option<TaskStatus>,
    /// Only tasks of this type.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Only tasks of this priority.
    pub priority: Option<Priority>,
    /// Only tasks this worker runs or ran last.
    pub worker: Option<String>,
    /// Only tasks of this team.
    pub team: Option<Name>,
    /// Page size (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// Where the page starts: the `nextCursor` of the page before.
    pub cursor: Option<Name>,
}

/// A page of tasks.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskPage {
    /// The tasks on this page, oldest first (by id, which starts with the
    /// submission time).
    pub items: Vec<Task>,
    /// Page size used.
    pub limit: usize,
    /// Pass as `cursor` for the next page; `null` once the list has been
    /// read to its end. A page may hold fewer than `limit` tasks (even none)
    /// while this is set: each page looks at a bounded number of tasks.
    pub next_cursor: Option<String>,
}

/// Why a task operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A field has a value that is not allowed.
    #[error("`{field}` {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No task has the id.
    #[error("no task has id {0:?}")]
    NotFound(String),
    /// The task has already ended.
    #[error("task {id:?} has already ended as {status:?}")]
    AlreadyEnded {
        /// The task.
        id: String,
        /// How it ended.
        status: TaskStatus,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something that should not fail did (a read's worker thread died).
    #[error("{0}")]
    Internal(String),
}

/// Tasks for the unit tests of this module's parts.
#[cfg(test)]
mod fixtures {
    use super::{Priority, Task, TaskStatus};
    use crate::clock::Timestamp;

    /// A queued, never attempted task `id` of type `TODO` that runs
    /// capability `todo` for team `default`, made at the epoch.
    pub fn task(id: &str) -> Task {
        Task {
            id: id.into(),
            kind: "TODO".into(),
            priority: Priority::Medium,
            data: serde_json::json!({}),
            workflow: None,
            capability: Some("todo".into()),
            team: "default".into(),
            deadline: None,
            attempts: 0,
            max_attempts: 3,
            status: TaskStatus::Queued,
            worker_id: None,
            result: None,
            error: None,
            error_kind: None,
            waiting_reason: None,
            not_before: None,
            created_at: Timestamp::EARLIEST,
            updated_at: Timestamp::EARLIEST,
            started_at: None,
            finished_at: None,
        }
    }
}
