//! `/tasks`: submit, list, look up and cancel tasks.

use std::sync::Arc;

use super::Routes;
use axum::extract::State;
use axum::response::Response;
use utoipa_axum::routes;

use super::error::{ApiError, created, ok};
use super::extract::{ApiJson, ApiPath, ApiQuery, check_page_limit};
use super::scope::Scope;
use crate::App;
use crate::auth::Access;
use crate::names::Name;
use crate::tasks::{NewTask, Task, TaskError, TaskPage, TaskQuery};

pub(super) fn routes() -> Routes {
    Routes::new()
        .routes(routes!(submit_task, list_tasks))
        .routes(routes!(get_task))
        .routes(routes!(cancel_task))
}

/// Queues a task; a worker of its type picks it up.
#[utoipa::path(
    post, path = "/tasks", tag = "tasks",
    request_body = NewTask,
    responses(
        (status = 201, description = "Queued; `data` is the task", body = Task),
        (status = 422, description = "A field is missing or not allowed", body = super::ErrorEnvelope),
    )
)]
async fn submit_task(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiJson(mut new): ApiJson<NewTask>,
) -> Result<Response, ApiError> {
    let team = scope.team_for(new.team.take(), Access::Operate)?;
    Ok(created(app.tasks.submit(team, new).await?))
}

/// Tasks, oldest first, filtered and paged by cursor.
#[utoipa::path(
    get, path = "/tasks", tag = "tasks",
    params(TaskQuery),
    responses(
        (status = 200, description = "`data` is a page of tasks", body = TaskPage),
        (status = 400, description = "A filter has an unknown value", body = super::ErrorEnvelope),
    )
)]
async fn list_tasks(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiQuery(query): ApiQuery<TaskQuery>,
) -> Result<Response, ApiError> {
    check_page_limit(query.limit)?;
    let only_team = scope.only_team().map(str::to_owned);
    Ok(ok(app.tasks.list(query, only_team).await?))
}

/// One task, with its result or error, and why it waits if it does.
#[utoipa::path(
    get, path = "/tasks/{id}", tag = "tasks",
    params(("id" = Name, Path, description = "Task id")),
    responses(
        (status = 200, description = "`data` is the task", body = Task),
        (status = 404, description = "No such task", body = super::ErrorEnvelope),
    )
)]
async fn get_task(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
) -> Result<Response, ApiError> {
    Ok(ok(visible_task(&app, &scope, &id, Access::Read)?))
}

/// The task `id` if the caller may do `access` to it; another team's task
/// is as missing as one that does not exist.
pub(super) fn visible_task(
    app: &App,
    scope: &Scope,
    id: &Name,
    access: Access,
) -> Result<Task, ApiError> {
    let missing = || ApiError::from(TaskError::NotFound(id.to_string()));
    let task = app.tasks.get(id).map_err(|err| match err {
        TaskError::NotFound(_) => missing(),
        other => ApiError::from(other),
    })?;
    scope.object(&task.team, access, missing)?;
    Ok(task)
}

/// Cancels a queued or running task; a running task's call is stopped.
#[utoipa::path(
    post, path = "/tasks/{id}/cancel", tag = "tasks",
    params(("id" = Name, Path, description = "Task id")),
    responses(
        (status = 200, description = "Cancelled; `data` is the task", body = Task),
        (status = 404, description = "No such task", body = super::ErrorEnvelope),
        (status = 409, description = "The task has already ended", body = super::ErrorEnvelope),
    )
)]
async fn cancel_task(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
) -> Result<Response, ApiError> {
    visible_task(&app, &scope, &id, Access::Operate)?;
    Ok(ok(app.tasks.cancel(&id).await?))
}
