//! `/workers`: register, list and look up workers.

use std::sync::Arc;

use super::Routes;
use axum::extract::State;
use axum::response::Response;
use utoipa_axum::routes;

use super::error::{ApiError, created, ok};
use super::extract::{ApiJson, ApiPath};
use super::scope::Scope;
use crate::App;
use crate::auth::Access;
use crate::names::Name;
use crate::workers::{NewWorker, WorkerError, WorkerView, resolve};

pub(super) fn routes() -> Routes {
    Routes::new()
        .routes(routes!(register_worker, list_workers))
        .routes(routes!(get_worker))
        .routes(routes!(restart_worker))
}

/// Registers a worker.
#[utoipa::path(
    post, path = "/workers", tag = "workers",
    request_body = NewWorker,
    responses(
        (status = 201, description = "Registered; `data` is the worker", body = WorkerView),
        (status = 409, description = "The id is taken", body = super::ErrorEnvelope),
        (status = 422, description = "A field is missing or not allowed", body = super::ErrorEnvelope),
    )
)]
async fn register_worker(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiJson(mut new): ApiJson<NewWorker>,
) -> Result<Response, ApiError> {
    let team = scope.team_for(new.team.take(), Access::Manage)?;
    let worker = app.workers.register(team, new).await?;
    app.tasks.poke();
    Ok(created(resolve(worker, &app.plugins, 0)))
}

/// Lists every worker, each capability resolved to the plugin serving it.
#[utoipa::path(
    get, path = "/workers", tag = "workers",
    responses((status = 200, description = "`data` is the list of workers", body = Vec<WorkerView>))
)]
async fn list_workers(State(app): State<Arc<App>>, scope: Scope) -> Response {
    let views: Vec<WorkerView> = app
        .workers
        .list()
        .into_iter()
        .filter(|worker| scope.sees(&worker.team))
        .map(|worker| {
            let active = app.tasks.active_on(&worker.id);
            resolve(worker, &app.plugins, active)
        })
        .collect();
    ok(views)
}

/// One worker.
#[utoipa::path(
    get, path = "/workers/{id}", tag = "workers",
    params(("id" = Name, Path, description = "Worker id")),
    responses(
        (status = 200, description = "`data` is the worker", body = WorkerView),
        (status = 404, description = "No such worker", body = super::ErrorEnvelope),
    )
)]
async fn get_worker(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
) -> Result<Response, ApiError> {
    let worker = visible_worker(&app, &scope, &id, Access::Read)?;
    let active = app.tasks.active_on(&id);
    Ok(ok(resolve(worker, &app.plugins, active)))
}

/// The worker `id` if the caller may do `access` to it; another team's
/// worker is as missing as one that does not exist.
fn visible_worker(
    app: &App,
    scope: &Scope,
    id: &Name,
    access: Access,
) -> Result<crate::workers::Worker, ApiError> {
    let missing = || ApiError::from(WorkerError::NotFound(id.to_string()));
    let worker = app.workers.get(id).map_err(|_| missing())?;
    scope.object(&worker.team, access, missing)?;
    Ok(worker)
}

/// What a worker restart did.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Restarted {
    worker_id: String,
    status: crate::workers::WorkerStatus,
    /// Tasks whose calls were stopped and that were queued again.
    requeued_tasks: Vec<String>,
}

/// Stops the worker's running calls, queues their tasks again (the attempt
/// counts) and returns the worker to `idle`.
#[utoipa::path(
    post, path = "/workers/{id}/restart", tag = "workers",
    params(("id" = Name, Path, description = "Worker id")),
    responses(
        (status = 200, description = "Restarted", body = Restarted),
        (status = 404, description = "No such worker", body = super::ErrorEnvelope),
    )
)]
async fn restart_worker(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
) -> Result<Response, ApiError> {
    let worker = visible_worker(&app, &scope, &id, Access::Operate)?;
    let requeued_tasks = app.tasks.restart_worker(&id).await;
    Ok(ok(Restarted {
        worker_id: worker.id,
        status: worker.status,
        requeued_tasks,
    }))
}
