//! Workflows: named sequences of steps, each calling one capability.
//!
//! A step's input is a JSON template. Any string in it that starts with `$`
//! is a JSONPath query (RFC 9535, via `serde_json_path`) evaluated against
//! the execution's context, `{"data": <execution data>, "steps": {<step
//! name>: <its output>, ...}}`, and replaced by the value it selects (`null`
//! when it selects nothing). A string that starts with `$$` stands for the
//! literal text with one `$` removed. Everything else is copied as is.

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use serde_json_path::JsonPath;

use crate::clock::Timestamp;
use crate::plugins::manifest::is_identifier;
use crate::store::{Store, StoreError, Table};

const WORKFLOWS: &str = "workflows";

/// The workflow that ships with the host, backed by the bundled `todo`
/// plugin.
pub const TODO_WORKFLOW: &str = "TODO_WORKFLOW";

/// One step of a workflow.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Name, unique in the workflow; later steps read its output as
    /// `$.steps.<name>`.
    pub name: String,
    /// Capability the step calls.
    pub capability: String,
    /// Input template.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub input: Value,
}

/// A workflow definition, as `POST /workflows` takes it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewWorkflow {
    /// Unique name, e.g. `TODO_WORKFLOW`.
    pub name: String,
    /// One line for operators.
    #[serde(default)]
    pub description: String,
    /// Type of worker that runs it.
    pub worker_type: String,
    /// Owning team; `default` when absent.
    pub team: Option<String>,
    /// The steps, run in order.
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
        let mut names: Vec<String> = self.steps.iter().map(|s| s.capability.clone()).collect();
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
    pub fn open(store: &Store) -> Result<Self, WorkflowError> {
        let table: Table<Workflow> = store.table(WORKFLOWS);
        let mut cache: BTreeMap<String, Workflow> = table
            .list()
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

    /// Defines a workflow; durable when it returns.
    pub async fn define(&self, new: NewWorkflow) -> Result<Workflow, WorkflowError> {
        validate(&new)?;
        if self.get(&new.name).is_ok() {
            return Err(WorkflowError::AlreadyExists(new.name));
        }
        let workflow = Workflow {
            name: new.name,
            description: new.description,
            worker_type: new.worker_type,
            team: new.team.unwrap_or_else(|| "default".to_owned()),
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
        team: "default".to_owned(),
        steps: vec![
            Step {
                name: "create".to_owned(),
                capability: "task_creation".to_owned(),
                input: json!({
                    "title": "$.data.title",
                    "description": "$.data.description",
                    "deadline": "$.data.deadline",
                    "taskId": "$.data.taskId",
                }),
            },
            Step {
                name: "assign".to_owned(),
                capability: "task_assignment".to_owned(),
                input: json!({
                    "todoId": "$.steps.create.todoId",
                    "assignee": "$.data.assignee",
                    "userId": "$.data.userId",
                }),
            },
            Step {
                name: "monitor".to_owned(),
                capability: "task_monitoring".to_owned(),
                input: json!({"todoId": "$.steps.create.todoId"}),
            },
        ],
        built_in: true,
        created_at: Timestamp::now(),
    }]
}

fn validate(new: &NewWorkflow) -> Result<(), WorkflowError> {
    let invalid = |field, message: String| Err(WorkflowError::Invalid { field, message });
    let name_ok = !new.name.is_empty()
        && new.name.len() <= 128
        && new
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !name_ok {
        return invalid(
            "name",
            "must be 1 to 128 letters, digits, `_`, `-` or `.`".into(),
        );
    }
    if new.worker_type.trim().is_empty() {
        return invalid("workerType", "must not be empty".into());
    }
    if let Some(team) = &new.team
        && !is_identifier(team)
    {
        return invalid(
            "team",
            "must be 1 to 64 lower-case letters, digits, `_` or `-`".into(),
        );
    }
    if new.steps.is_empty() {
        return invalid("steps", "must have at least one step".into());
    }
    let mut seen = Vec::new();
    for step in &new.steps {
        if !is_identifier(&step.name) || seen.contains(&&step.name) {
            return invalid(
                "steps.name",
                format!("{:?} must be a unique lower-case identifier", step.name),
            );
        }
        seen.push(&step.name);
        if !is_identifier(&step.capability) {
            return invalid(
                "steps.capability",
                format!("{:?} is not a capability name", step.capability),
            );
        }
        if let Err(message) = check_template(&step.input) {
            return invalid("steps.input", format!("step {:?}: {message}", step.name));
        }
    }
    Ok(())
}

/// Checks every query in a template parses.
fn check_template(template: &Value) -> Result<(), String> {
    match template {
        Value::String(text) if text.starts_with('$') && !text.starts_with("$$") => {
            JsonPath::parse(text)
                .map(|_| ())
                .map_err(|err| format!("{text:?}: {err}"))
        }
        Value::Array(items) => items.iter().try_for_each(check_template),
        Value::Object(map) => map.values().try_for_each(check_template),
        _ => Ok(()),
    }
}

/// Builds a step's input from its template and the execution's context.
pub fn render(template: &Value, context: &Value) -> Result<Value, String> {
    Ok(match template {
        Value::String(text) if text.starts_with("$$") => Value::String(text[1..].to_owned()),
        Value::String(text) if text.starts_with('$') => {
            let path = JsonPath::parse(text).map_err(|err| format!("{text:?}: {err}"))?;
            path.query(context)
                .at_most_one()
                .ok()
                .flatten()
                .cloned()
                .unwrap_or(Value::Null)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| render(item, context))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| Ok((key.clone(), render(value, context)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_take_values_from_data_and_earlier_steps() {
        let context = json!({
            "data": {"title": "t", "n": 3, "tags": ["a"]},
            "steps": {"create": {"todoId": "todo_1"}}
        });
        let template = json!({
            "title": "$.data.title",
            "n": "$.data.n",
            "tags": "$.data.tags",
            "id": "$.steps.create.todoId",
            "missing": "$.data.nope",
            "literal": "$$.not.a.query",
            "plain": "text",
            "nested": [{"x": "$.data.n"}]
        });
        assert_eq!(
            render(&template, &context).unwrap(),
            json!({
                "title": "t", "n": 3, "tags": ["a"], "id": "todo_1", "missing": null,
                "literal": "$.not.a.query", "plain": "text", "nested": [{"x": 3}]
            })
        );
    }

    #[test]
    fn a_bad_query_is_refused_when_the_workflow_is_defined() {
        let new = NewWorkflow {
            name: "W".into(),
            description: String::new(),
            worker_type: "T".into(),
            team: None,
            steps: vec![Step {
                name: "one".into(),
                capability: "cap".into(),
                input: json!({"x": "$.data[?"}),
            }],
        };
        let err = validate(&new).unwrap_err().to_string();
        assert!(err.contains("steps.input"), "{err}");
    }
}
