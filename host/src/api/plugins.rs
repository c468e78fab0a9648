//! `/plugins` and `/teams/{team}/plugins`: what is loaded, and calling it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiJson, ok};
use crate::App;
use crate::plugins::{Caller, PluginInfo};

pub(super) fn routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(list_plugins))
        .routes(routes!(list_team_plugins))
        .routes(routes!(get_team_plugin))
        .routes(routes!(invoke_plugin))
}

/// Every plugin of every team, serving or failed.
#[utoipa::path(
    get, path = "/plugins", tag = "plugins",
    responses((status = 200, description = "`data` is the list of plugins", body = Vec<PluginInfo>))
)]
async fn list_plugins(State(app): State<Arc<App>>) -> Response {
    ok(app.plugins.list(None))
}

/// The plugins of one team.
#[utoipa::path(
    get, path = "/teams/{team}/plugins", tag = "plugins",
    params(("team" = String, Path, description = "Team")),
    responses((status = 200, description = "`data` is the team's plugins", body = Vec<PluginInfo>))
)]
async fn list_team_plugins(State(app): State<Arc<App>>, Path(team): Path<String>) -> Response {
    ok(app.plugins.list(Some(&team)))
}

/// One plugin of a team.
#[utoipa::path(
    get, path = "/teams/{team}/plugins/{name}", tag = "plugins",
    params(
        ("team" = String, Path, description = "Team"),
        ("name" = String, Path, description = "Plugin name"),
    ),
    responses(
        (status = 200, description = "`data` is the plugin", body = PluginInfo),
        (status = 404, description = "No such plugin", body = super::ErrorEnvelope),
    )
)]
async fn get_team_plugin(
    State(app): State<Arc<App>>,
    Path((team, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let info = app.plugins.get(&team, &name).ok_or_else(|| {
        ApiError::not_found(format!("team {team:?} has no plugin named {name:?}"))
    })?;
    Ok(ok(info))
}

/// A direct call of one capability, for operators and tests.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InvokeRequest {
    /// Capability to run.
    #[schema(example = "task_creation")]
    capability: String,
    /// JSON input handed to the plugin.
    #[serde(default)]
    #[schema(value_type = Object)]
    input: serde_json::Value,
    /// Worker to attribute the call to, for the log.
    worker_id: Option<String>,
}

/// Calls one capability of a team's capability plugin and returns its output.
#[utoipa::path(
    post, path = "/teams/{team}/plugins/{name}/invoke", tag = "plugins",
    params(
        ("team" = String, Path, description = "Team"),
        ("name" = String, Path, description = "Plugin name"),
    ),
    request_body = InvokeRequest,
    responses(
        (status = 200, description = "`data` is the plugin's JSON output"),
        (status = 404, description = "No such plugin or capability", body = super::ErrorEnvelope),
        (status = 422, description = "The plugin rejected the input", body = super::ErrorEnvelope),
        (status = 502, description = "The plugin failed, trapped or ran out of memory", body = super::ErrorEnvelope),
        (status = 504, description = "The plugin ran past its time limit", body = super::ErrorEnvelope),
    )
)]
async fn invoke_plugin(
    State(app): State<Arc<App>>,
    Path((team, name)): Path<(String, String)>,
    ApiJson(request): ApiJson<InvokeRequest>,
) -> Result<Response, ApiError> {
    let caller = Caller {
        worker_id: request.worker_id,
        subject_id: None,
    };
    let output = app
        .plugins
        .invoke(&team, &name, &request.capability, &request.input, caller)
        .await?;
    Ok(ok(output))
}
