//! `/tasks`: submit, list, look up and cancel tasks.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, created, ok};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::App;
use crate::names::Name;
use crate::tasks::{NewTask, Task, TaskPage, TaskQuery};

pub(super) fn routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
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
    ApiJson(new): ApiJson<NewTask>,
) -> Result<Response, ApiError> {
    Ok(created(app.tasks.submit(new).await?))
}

/// Tasks, oldest first, filtered and paged.
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
    ApiQuery(query): ApiQuery<TaskQuery>,
) -> Result<Response, ApiError> {
    Ok(ok(app.tasks.list(&query)?))
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
    ApiPath(id): ApiPath<Name>,
) -> Result<Response, ApiError> {
    Ok(ok(app.tasks.get(&id)?))
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
    ApiPath(id): ApiPath<Name>,
) -> Result<Response, ApiError> {
    Ok(ok(app.tasks.cancel(&id).await?))
}
