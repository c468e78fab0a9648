//! `/workflows`: define, list and execute workflows.
//!
//! An execution is a task that runs the workflow; its id is the task's id.

use std::sync::Arc;

use super::Routes;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa_axum::routes;

use super::error::{ApiError, created, ok};
use super::extract::{ApiJson, ApiPath};
use super::scope::Scope;
use super::tasks::visible_task;
use crate::App;
use crate::auth::Access;
use crate::names::Name;
use crate::tasks::{NewTask, Priority, Task, TaskStatus};
use crate::workflows::{NewWorkflow, Workflow, WorkflowError};

pub(super) fn routes() -> Routes {
    Routes::new()
        .routes(routes!(define_workflow, list_workflows))
        .routes(routes!(get_workflow))
        .routes(routes!(execute_workflow))
        .routes(routes!(get_execution))
}

/// Every workflow, built-in ones included.
#[utoipa::path(
    get, path = "/workflows", tag = "workflows",
    responses((status = 200, description = "`data` is the list of workflows", body = Vec<Workflow>))
)]
async fn list_workflows(State(app): State<Arc<App>>, scope: Scope) -> Response {
    let mut workflows = app.workflows.list();
    workflows.retain(|workflow| workflow.built_in || scope.sees(&workflow.team));
    ok(workflows)
}

/// The workflow `name` if the caller may do `access` to it. Built-in
/// workflows are visible to everyone; another team's workflow is as missing
/// as one that does not exist.
fn visible_workflow(
    app: &App,
    scope: &Scope,
    name: &Name,
    access: Access,
) -> Result<Workflow, ApiError> {
    let missing = || ApiError::from(WorkflowError::NotFound(name.to_string()));
    let workflow = app.workflows.get(name).map_err(|_| missing())?;
    if workflow.built_in && access == Access::Read {
        return Ok(workflow);
    }
    if workflow.built_in && !scope.sees(&workflow.team) {
        // Everyone sees it, so the answer is about the role, not existence.
        return Err(super::scope::forbidden(format!(
            "workflow {:?} runs for team {:?}, which this token does not act for",
            workflow.name, workflow.team
        )));
    }
    scope.object(&workflow.team, access, missing)?;
    Ok(workflow)
}

/// One workflow.
#[utoipa::path(
    get, path = "/workflows/{name}", tag = "workflows",
    params(("name" = Name, Path, description = "Workflow name")),
    responses(
        (status = 200, description = "`data` is the workflow", body = Workflow),
        (status = 404, description = "No such workflow", body = super::ErrorEnvelope),
    )
)]
async fn get_workflow(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(name): ApiPath<Name>,
) -> Result<Response, ApiError> {
    Ok(ok(visible_workflow(&app, &scope, &name, Access::Read)?))
}

/// Defines a workflow of a team.
#[utoipa::path(
    post, path = "/workflows", tag = "workflows",
    request_body = NewWorkflow,
    responses(
        (status = 201, description = "Defined; `data` is the workflow", body = Workflow),
        (status = 409, description = "The name is taken", body = super::ErrorEnvelope),
        (status = 422, description = "A field is missing or not allowed", body = super::ErrorEnvelope),
    )
)]
async fn define_workflow(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiJson(mut new): ApiJson<NewWorkflow>,
) -> Result<Response, ApiError> {
    let team = scope.team_for(new.team.take(), Access::Manage)?;
    Ok(created(app.workflows.define(team, new).await?))
}

/// What `POST /workflows/{name}/execute` takes.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExecuteRequest {
    /// Input of the execution; steps read it as `$.data`.
    #[serde(default)]
    #[schema(value_type = Object)]
    data: serde_json::Map<String, serde_json::Value>,
    /// Priority of the execution's task (default `medium`).
    priority: Option<Priority>,
}

/// An execution of a workflow.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Execution {
    /// Execution id (the id of the task that runs it).
    execution_id: String,
    /// The workflow.
    workflow: String,
    /// Where it is.
    status: TaskStatus,
    /// The task, with the steps' outputs in `result` once it succeeded.
    task: Task,
}

impl Execution {
    fn of(task: Task) -> Self {
        Self {
            execution_id: task.id.clone(),
            workflow: task.workflow.clone().unwrap_or_default(),
            status: task.status,
            task,
        }
    }
}

/// Starts an execution: a task of the workflow's worker type that runs its
/// steps.
#[utoipa::path(
    post, path = "/workflows/{name}/execute", tag = "workflows",
    params(("name" = Name, Path, description = "Workflow name")),
    request_body = ExecuteRequest,
    responses(
        (status = 201, description = "Queued; `data` is the execution", body = Execution),
        (status = 404, description = "No such workflow", body = super::ErrorEnvelope),
    )
)]
async fn execute_workflow(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(name): ApiPath<Name>,
    ApiJson(request): ApiJson<ExecuteRequest>,
) -> Result<Response, ApiError> {
    let workflow = visible_workflow(&app, &scope, &name, Access::Operate)?;
    let team = Name::parse(&workflow.team).map_err(ApiError::internal)?;
    let task = app
        .tasks
        .submit(
            team,
            NewTask {
                kind: workflow.worker_type,
                priority: request.priority,
                data: request.data,
                workflow: Some(name),
                capability: None,
                deadline: None,
                max_attempts: None,
                team: None,
            },
        )
        .await?;
    Ok(created(Execution::of(task)))
}

/// One execution of a workflow.
#[utoipa::path(
    get, path = "/workflows/{name}/executions/{id}", tag = "workflows",
    params(
        ("name" = Name, Path, description = "Workflow name"),
        ("id" = Name, Path, description = "Execution id"),
    ),
    responses(
        (status = 200, description = "`data` is the execution", body = Execution),
        (status = 404, description = "No such execution of this workflow", body = super::ErrorEnvelope),
    )
)]
async fn get_execution(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath((name, id)): ApiPath<(Name, Name)>,
) -> Result<Response, ApiError> {
    let task = visible_task(&app, &scope, &id, Access::Read)?;
    if task.workflow.as_deref() != Some(name.as_str()) {
        return Err(ApiError::not_found(format!(
            "workflow {name:?} has no execution {id:?}"
        )));
    }
    Ok(ok(Execution::of(task)))
}
