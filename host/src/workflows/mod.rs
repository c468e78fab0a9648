//! Workflows: named sequences of steps, each calling one capability.
//!
//! A step's input is a JSON template whose `$` strings are JSONPath queries
//! into the execution's data and earlier steps' outputs; [`template`] says
//! how, and bounds what a query may cost.

mod run;
pub mod template;

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use run::{Run, StepInputError};
pub use template::render;

use crate::clock::Timestamp;
use crate::names::{DEFAULT_TEAM, Name};
use crate::store::{Store, StoreError, Table};

const WORKFLOWS: &str = "workflows";

/// Most steps one workflow may have.
pub const MAX_STEPS: usize = 64;

/// The workflow that ships with the host, backed by the bundled `todo`
/// plugin.
pub const TODO_WORKFLOW: &str = "TODO_WORKFLOW";

/// One step of a workflow.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Name, unique in the workflow; later steps read its output as
    /// `$.steps.<name>`.
    pub name: Name,
    /// Capability the step calls.
    pub capability: Name,
    /// Input template.
    #[serde(default)]
    #[schema(value_type = serde_json::Value)]
    pub input: Value,
}

/// A workflow definition, as `POST /workflows` takes it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewWorkflow {
    /// Unique name, e.g. `TODO_WORKFLOW`.
    pub name: Name,
    /// One line for operators.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub description: String,
    /// Type of worker that runs it.
    #[schema(min_length = 1, max_length = 128)]
    pub worker_type: String,
    /// Owning team; `default` when absent.
    pub team: Option<Name>,
    /// The steps, run in order.
    #[schema(min_items = 1, max_items = 64)]
    pub steps: Vec<Step>,
}

/// A stored workflow.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workflow {
    /// Unique name.
    pub name: String,
    /// One line for operators.
    pub description: String,
    /// Type of worker that runs it.
    pub worker_type: String,
    /// Owning team.
    pub team: String,
    /// The steps, run in order.
    pub steps: Vec<Step>,
    /// True for workflows that ship with the host.
    pub built_in: bool,
    /// When it was defined.
    pub created_at: Timestamp,
}

impl Workflow {
    /// The capabilities its steps call, without repeats.
    pub fn capabilities(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .steps
            .iter()
            .map(|s| s.capability.to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Why a workflow operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// A field has a value that is not allowed.
    #[error("`{field}` {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The name is taken.
    #[error("a workflow named {0:?} already exists")]
    AlreadyExists(String),
    /// No workflow has the name.
    #[error("no workflow is named {0:?}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

/// Defined workflows: the built-in ones and those teams added.
pub struct Workflows {
    table: Table<Workflow>,
    cache: RwLock<BTreeMap<String, Workflow>>,
}

impl Workflows {
    /// Loads the stored workflows and adds the built-in ones.
    pub async fn open(store: &Store) -> Result<Self, WorkflowError> {
        let table: Table<Workflow> = store.table(WORKFLOWS);
        let mut cache: BTreeMap<String, Workflow> = table
            .load()
            .await
            .map_err(WorkflowError::Store)?
            .into_iter()
            .map(|w| (w.name.clone(), w))
            .collect();
        for workflow in built_in() {
            cache.insert(workflow.name.clone(), workflow);
        }
        Ok(Self {
            table,
            cache: RwLock::new(cache),
        })
    }

    /// Every workflow, by name.
    pub fn list(&self) -> Vec<Workflow> {
        self.cache
            .read()
            .expect("workflow cache poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// One workflow.
    pub fn get(&self, name: &str) -> Result<Workflow, WorkflowError> {
        self.cache
            .read()
            .expect("workflow cache poisoned")
            .get(name)
            .cloned()
            .ok_or_else(|| WorkflowError::NotFound(name.to_owned()))
    }

    /// Defines a workflow of `team` (the caller's scope decided it; the
    /// body's `team` is not read here); durable when it returns.
    pub async fn define(&self, team: Name, new: NewWorkflow) -> Result<Workflow, WorkflowError> {
        validate(&new)?;
        if self.get(&new.name).is_ok() {
            return Err(WorkflowError::AlreadyExists(new.name.into()));
        }
        let workflow = Workflow {
            name: new.name.into(),
            description: new.description,
            worker_type: new.worker_type,
            team: team.into(),
            steps: new.steps,
            built_in: false,
            created_at: Timestamp::now(),
        };
        match self.table.insert(&workflow.name, &workflow).await {
            Ok(()) => {}
            Err(StoreError::AlreadyExists { .. }) => {
                return Err(WorkflowError::AlreadyExists(workflow.name));
            }
            Err(err) => return Err(WorkflowError::Store(err)),
        }
        self.cache
            .write()
            .expect("workflow cache poisoned")
            .insert(workflow.name.clone(), workflow.clone());
        tracing::info!(workflow = %workflow.name, team = %workflow.team, steps = workflow.steps.len(), "workflow defined");
        Ok(workflow)
    }
}

fn built_in() -> Vec<Workflow> {
    vec![Workflow {
        name: TODO_WORKFLOW.to_owned(),
        description: "Creates a todo from the task data, assigns it, and reports its status"
            .to_owned(),
        worker_type: "TODO".to_owned(),
        team: DEFAULT_TEAM.to_owned(),
        steps: vec![
            Step {
                name: Name::from_static("create"),
                capability: Name::from_static("task_creation"),
                input: json!({
                    "title": "$.data.title",
                    "description": "$.data.description",
                    "deadline": "$.data.deadline",
                    "taskId": "$.data.taskId",
                }),
            },
            Step {
                name: Name::from_static("assign"),
                capability: Name::from_static("task_assignment"),
                input: json!({
                    "todoId": "$.steps.create.todoId",
                    "assignee": "$.data.assignee",
                    "userId": "$.data.userId",
                }),
            },
            Step {
                name: Name::from_static("monitor"),
                capability: Name::from_static("task_monitoring"),
                input: json!({"todoId": "$.steps.create.todoId"}),
            },
        ],
        built_in: true,
        created_at: Timestamp::now(),
    }]
}

fn validate(new: &NewWorkflow) -> Result<(), WorkflowError> {
    let invalid = |field, message: String| Err(WorkflowError::Invalid { field, message });
    if new.worker_type.trim().is_empty() || new.worker_type.len() > 128 {
        return invalid("workerType", "must be 1 to 128 characters".into());
    }
    if new.description.len() > 1024 {
        return invalid("description", "must be at most 1024 bytes".into());
    }
    if new.steps.is_empty() || new.steps.len() > MAX_STEPS {
        return invalid("steps", format!("must have 1 to {MAX_STEPS} steps"));
    }
    let mut seen = Vec::new();
    for step in &new.steps {
        if seen.contains(&&step.name) {
            return invalid(
                "steps.name",
                format!(
                    "{:?} names two steps; step names are unique",
                    step.name.as_str()
                ),
            );
        }
        seen.push(&step.name);
        if let Err(err) = template::check(&step.input) {
            return invalid(
                "steps.input",
                format!("step {:?}: {err}", step.name.as_str()),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_query_is_refused_when_the_workflow_is_defined() {
        let new = NewWorkflow {
            name: Name::from_static("W"),
            description: String::new(),
            worker_type: "T".into(),
            team: None,
            steps: vec![Step {
                name: Name::from_static("one"),
                capability: Name::from_static("cap"),
                input: json!({"x": "$.data[?"}),
            }],
        };
        let err = validate(&new).unwrap_err().to_string();
        assert!(err.contains("steps.input"), "{err}");
    }
}
