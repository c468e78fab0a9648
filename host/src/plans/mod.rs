//! Action plans: operational work run as a graph of actions.
//!
//! A plan is made from a [`Template`] (built in, such as `SYSTEM_CHECK`, or a
//! team's own) and the caller's `data`, checked against the template's typed
//! inputs. Its actions call capability plugins of the plan's team (or the
//! bundled `core` ones); an action starts once every action it depends on
//! has succeeded, so independent actions run in parallel. Each action has a
//! time limit and a number of attempts with backoff; a failure that a retry
//! cannot help fails the action at once. An action whose dependency failed is
//! `skipped`. The plan ends `succeeded` when every action did, and `failed`
//! when an action failed and nothing else can run.
//!
//! Plans live in the store, one record each, rewritten (under the plan's own
//! lock, so writes of one plan never cross) at every state change, before
//! the change is acted on. The executor is built on [`crate::engine`].

mod dag;
mod executor;
mod records;
mod service;
mod template;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;
use crate::names::Name;
use crate::plugins::ErrorKind;
use crate::store::StoreError;
use crate::tasks::Priority;

pub use records::PlanCounts;
pub use service::{ActionPlans, PlanDeps};
pub use template::{ActionSpec, InputField, InputKind, NewTemplate, Template};

/// Where a plan is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    /// Created, not executed yet.
    Pending,
    /// Executing: some action is running, waiting for a retry, or ready.
    Running,
    /// Every action succeeded.
    Succeeded,
    /// An action failed (or timed out) and nothing else can run.
    Failed,
    /// Cancelled by an operator.
    Cancelled,
}

impl PlanStatus {
    /// The word the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// True once the plan will not change unless an operator acts.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Where one action of a plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// Waiting for the plan to run or for its dependencies.
    Pending,
    /// Its call is running.
    Running,
    /// Waiting for its next attempt (see `notBefore`).
    Retrying,
    /// Done, with an output.
    Succeeded,
    /// Its last attempt failed.
    Failed,
    /// Its last attempt ran past the action's time limit.
    TimedOut,
    /// Not run, because an action it depends on failed.
    Skipped,
    /// Stopped by a cancel.
    Cancelled,
    /// The host stopped while it ran, and it is not idempotent: it is not
    /// run again on its own, but waits for an operator's retry.
    Interrupted,
}

impl ActionStatus {
    /// True for the states an action leaves only by an operator's retry.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Running | Self::Retrying)
    }

    /// True for an action that ended without its output, which a retry of
    /// the plan runs again.
    pub fn needs_retry(self) -> bool {
        matches!(
            self,
            Self::Failed | Self::TimedOut | Self::Skipped | Self::Interrupted | Self::Cancelled
        )
    }
}

/// One attempt of an action.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionAttempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// How it ended (`running` while it runs).
    pub status: ActionStatus,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// The plugin that ran it, `team/name@version`.
    pub plugin: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The kind of that failure, which decided whether it was retried.
    pub error_kind: Option<ErrorKind>,
}

/// An action of a plan: what the template said, and what happened.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanAction {
    /// Unique in the plan.
    pub name: String,
    /// The capability it calls.
    pub capability: String,
    /// Input template over `{"data", "actions"}`.
    #[schema(value_type = serde_json::Value)]
    pub input: Value,
    /// Actions that must succeed first.
    pub depends_on: Vec<String>,
    /// Time limit of one attempt.
    pub timeout_ms: u64,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles for each further one.
    pub backoff_ms: u64,
    /// Whether running it twice is harmless.
    pub idempotent: bool,
    /// Where it is.
    pub status: ActionStatus,
    /// Its attempts, oldest first (the last 20 are kept).
    pub attempts: Vec<ActionAttempt>,
    /// Attempts started since it last became ready.
    pub attempts_made: u32,
    /// Its output, once succeeded.
    #[schema(value_type = Option<serde_json::Value>)]
    pub output: Option<Value>,
    /// Why it failed, or why it was skipped.
    pub error: Option<String>,
    /// Not retried before this moment.
    pub not_before: Option<Timestamp>,
}

/// A plan.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Unique id, `plan_…`.
    pub id: String,
    /// The template it was made from.
    pub template_id: String,
    /// The template's name.
    pub name: String,
    /// The template's category, e.g. `system`, `security`.
    pub category: String,
    /// Priority.
    pub priority: Priority,
    /// Owning team; its plugins (and `core`'s) run the actions.
    pub team: String,
    /// The input, with the template's defaults filled in.
    #[schema(value_type = Object)]
    pub data: Value,
    /// The machine the plan is about: `data.serverId` when given.
    pub server_id: Option<String>,
    /// The machine the actions ran on: this host's name.
    pub checked_on: String,
    /// Where it is.
    pub status: PlanStatus,
    /// Its actions.
    pub actions: Vec<PlanAction>,
    /// Plans that must succeed before its actions start.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Why an executing plan has not started its actions yet.
    #[serde(default)]
    pub waiting_reason: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When it was last executed.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
}

impl Plan {
    /// The action called `name`.
    pub fn action(&self, name: &str) -> Option<&PlanAction> {
        self.actions.iter().find(|a| a.name == name)
    }
}

/// `POST /action-plans`, as the guide writes it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewPlan {
    /// The template, e.g. `SYSTEM_CHECK`.
    #[schema(example = "SYSTEM_CHECK")]
    pub template_id: Name,
    /// The template's inputs.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: serde_json::Map<String, Value>,
    /// Overrides the template's priority.
    pub priority: Option<Priority>,
    /// Owning team; the caller's (or `default`) when absent.
    pub team: Option<Name>,
    /// Plans (of the same team) that must succeed before this one's
    /// actions start; at most 16.
    #[serde(default)]
    #[schema(max_items = 16)]
    pub depends_on: Vec<Name>,
}

/// What `execute` or `retry` would run, in order, when asked with
/// `dryRun=true`; nothing runs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    /// The plan.
    pub plan_id: String,
    /// Always true: nothing ran.
    pub dry_run: bool,
    /// The actions that would run, in the DAG's layers: every action of a
    /// layer can start once the layers before it succeeded.
    pub layers: Vec<Vec<String>>,
}

/// Options of `execute` and `retry`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunOptions {
    /// Say what would run, in which order, without running anything.
    pub dry_run: Option<bool>,
}

/// Filters and paging of `GET /action-plans`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlanQuery {
    /// Only plans with this status.
    pub status: Option<PlanStatus>,
    /// Only plans of this category.
    pub category: Option<Name>,
    /// Only plans of this priority.
    pub priority: Option<Priority>,
    /// Only plans made from this template.
    pub template_id: Option<Name>,
    /// Only plans of this team.
    pub team: Option<Name>,
    /// Page size (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// Where the page starts: the `nextCursor` of the page before.
    pub cursor: Option<Name>,
}

/// A page of plans.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanPage {
    /// The plans, oldest first.
    pub items: Vec<Plan>,
    /// Page size used.
    pub limit: usize,
    /// Pass as `cursor` for the next page; `null` at the end.
    pub next_cursor: Option<String>,
}

/// Why a plan or template operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A field has a value that is not allowed.
    #[error("`{field}` {message}")]
    Invalid {
        /// The field, e.g. `data.checkLevel` or `actions`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No plan has the id.
    #[error("no action plan has id {0:?}")]
    NotFound(String),
    /// No template has the id (or the caller's team cannot use it).
    #[error("no action-plan template has id {0:?}")]
    TemplateNotFound(String),
    /// A template with the id exists.
    #[error("an action-plan template with id {0:?} already exists")]
    TemplateExists(String),
    /// The plan is not in a state that allows the operation.
    #[error("action plan {id:?} is {status}: {message}")]
    Conflict {
        /// A word for the API's error code, e.g. `nothing_to_retry`.
        code: &'static str,
        /// The plan.
        id: String,
        /// Its status.
        status: &'static str,
        /// What cannot be done.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
