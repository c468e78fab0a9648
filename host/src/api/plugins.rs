//! `/plugins` and `/teams/{team}/plugins`: what is loaded, and calling it.

use std::sync::Arc;

use super::Routes;
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa_axum::routes;

use super::error::{ApiError, created, ok};
use super::extract::{ApiJson, ApiPath};
use super::scope::Scope;
use crate::App;
use crate::auth::Access;
use crate::names::Name;
use crate::plugins::{Caller, HealthReport, Incident, PluginInfo, RecoveryReport};

/// Largest upload accepted (manifest and component together), in bytes.
pub const MAX_UPLOAD_BYTES: usize = 64 << 20;

pub(super) fn routes() -> Routes {
    let (schemas, paths, upload) = routes!(upload_plugin);
    Routes::new()
        .routes(routes!(list_plugins))
        .routes(routes!(list_team_plugins))
        .routes(routes!(get_team_plugin, delete_plugin))
        .routes((
            schemas,
            paths,
            upload.layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        ))
        .routes(routes!(invoke_plugin))
        .routes(routes!(check_plugin))
        .routes(routes!(recover_plugin))
}

/// Every plugin the caller may see, serving or failed: all of them for an
/// admin; its own team's and the bundled ones for a team token.
#[utoipa::path(
    get, path = "/plugins", tag = "plugins",
    responses((status = 200, description = "`data` is the list of plugins", body = Vec<PluginInfo>))
)]
async fn list_plugins(State(app): State<Arc<App>>, scope: Scope) -> Response {
    let mut plugins = app.plugins.list(None);
    plugins.retain(|plugin| scope.0.sees_plugins_of(&plugin.team));
    ok(plugins)
}

/// 404 unless the caller may see `team`'s plugins (its own and the bundled
/// ones), 403 unless it also has the role for `access`.
fn check(scope: &Scope, team: &Name, access: Access) -> Result<(), ApiError> {
    let missing = || ApiError::not_found(format!("there is no team {:?}", team.as_str()));
    if access == Access::Read && scope.0.sees_plugins_of(team) {
        return Ok(());
    }
    scope.object(team, access, missing)
}

/// The plugins of one team.
#[utoipa::path(
    get, path = "/teams/{team}/plugins", tag = "plugins",
    params(("team" = Name, Path, description = "Team")),
    responses((status = 200, description = "`data` is the team's plugins", body = Vec<PluginInfo>))
)]
async fn list_team_plugins(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(team): ApiPath<Name>,
) -> Result<Response, ApiError> {
    check(&scope, &team, Access::Read)?;
    Ok(ok(app.plugins.list(Some(&team))))
}

/// One plugin of a team.
#[utoipa::path(
    get, path = "/teams/{team}/plugins/{name}", tag = "plugins",
    params(
        ("team" = Name, Path, description = "Team"),
        ("name" = Name, Path, description = "Plugin name"),
    ),
    responses(
        (status = 200, description = "`data` is the plugin", body = PluginInfo),
        (status = 404, description = "No such plugin", body = super::ErrorEnvelope),
    )
)]
async fn get_team_plugin(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath((team, name)): ApiPath<(Name, Name)>,
) -> Result<Response, ApiError> {
    check(&scope, &team, Access::Read)?;
    let info = app.plugins.get(&team, &name).ok_or_else(|| {
        ApiError::not_found(format!("team {team:?} has no plugin named {name:?}"))
    })?;
    Ok(ok(info))
}

/// A direct call of one capability, for operators and tests.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InvokeRequest {
    /// Capability to run.
    #[schema(example = "task_creation")]
    capability: Name,
    /// JSON input handed to the plugin.
    #[serde(default)]
    #[schema(value_type = serde_json::Value)]
    input: serde_json::Value,
    /// Worker to attribute the call to, for the log.
    worker_id: Option<Name>,
}

/// Calls one capability of a team's capability plugin and returns its output.
#[utoipa::path(
    post, path = "/teams/{team}/plugins/{name}/invoke", tag = "plugins",
    params(
        ("team" = Name, Path, description = "Team"),
        ("name" = Name, Path, description = "Plugin name"),
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
    scope: Scope,
    ApiPath((team, name)): ApiPath<(Name, Name)>,
    ApiJson(request): ApiJson<InvokeRequest>,
) -> Result<Response, ApiError> {
    check(&scope, &team, Access::Operate)?;
    let caller = Caller {
        worker_id: request.worker_id.map(String::from),
        subject_id: None,
    };
    let output = app
        .plugins
        .invoke(&team, &name, &request.capability, &request.input, caller)
        .await?;
    Ok(ok(output))
}

/// A health check tried by hand.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CheckRequest {
    /// The target handed to the plugin, as a health check would configure
    /// it, e.g. `{"url": "http://localhost:8080/health"}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    target: serde_json::Value,
}

/// Runs a team's health-check plugin once against a target and returns its
/// report: trying a check by hand, before a health check uses it. The call
/// is made as a health check would make it (the same sandbox, limits and
/// per-call grants, `reach-target` included). Team admins only: the target
/// decides where a plugin granted `reach-target` connects.
#[utoipa::path(
    post, path = "/teams/{team}/plugins/{name}/check", tag = "plugins",
    params(
        ("team" = Name, Path, description = "Team"),
        ("name" = Name, Path, description = "Health-check plugin"),
    ),
    request_body = CheckRequest,
    responses(
        (status = 200, description = "`data` is the plugin's health report", body = HealthReport),
        (status = 404, description = "No such plugin", body = super::ErrorEnvelope),
        (status = 422, description = "The plugin rejected the target (`invalid_input`: nothing to probe)", body = super::ErrorEnvelope),
        (status = 502, description = "The plugin failed, was denied, trapped, or is not a health check", body = super::ErrorEnvelope),
        (status = 504, description = "The plugin ran past its time limit", body = super::ErrorEnvelope),
    )
)]
async fn check_plugin(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath((team, name)): ApiPath<(Name, Name)>,
    ApiJson(request): ApiJson<CheckRequest>,
) -> Result<Response, ApiError> {
    check(&scope, &team, Access::Manage)?;
    let report = app
        .plugins
        .check(&team, &name, &request.target, Caller::default())
        .await?;
    Ok(ok(report))
}

/// An incident handed to a recovery strategy tried by hand; every field
/// may be left out.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TryIncident {
    /// Incident id; `incident_manual` if left out.
    id: Option<Name>,
    /// Health check id; `manual` if left out.
    check_id: Option<Name>,
    /// `critical`, `high`, `medium` (if left out) or `low`.
    severity: Option<String>,
    /// Recovery stage, from 0.
    #[serde(default)]
    stage: u32,
    /// What the last failed check said.
    #[serde(default)]
    summary: String,
    /// The health check's target.
    #[serde(default)]
    #[schema(value_type = Object)]
    target: serde_json::Value,
    /// The stage's configuration, e.g. `{"program": "/usr/bin/systemctl",
    /// "args": ["restart", "nginx"]}` for `core/command`.
    #[serde(default)]
    #[schema(value_type = Object)]
    config: serde_json::Value,
}

/// A recovery strategy tried by hand.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RecoverRequest {
    /// The incident to hand the plugin.
    incident: TryIncident,
}

/// The severities an incident may have.
const SEVERITIES: [&str; 4] = ["critical", "high", "medium", "low"];

impl TryIncident {
    fn into_incident(self) -> Result<Incident, ApiError> {
        let severity = self.severity.unwrap_or_else(|| "medium".into());
        if !SEVERITIES.contains(&severity.as_str()) {
            return Err(ApiError::invalid(format!(
                "`incident.severity` is {severity:?}; it must be one of {}",
                SEVERITIES.join(", ")
            )));
        }
        let object_or_empty = |value: serde_json::Value| match value {
            serde_json::Value::Null => serde_json::json!({}),
            other => other,
        };
        Ok(Incident {
            id: self
                .id
                .map_or_else(|| "incident_manual".into(), String::from),
            check_id: self.check_id.map_or_else(|| "manual".into(), String::from),
            severity,
            stage: self.stage,
            summary: self.summary,
            target: object_or_empty(self.target),
            config: object_or_empty(self.config),
        })
    }
}

/// Runs a team's recovery-strategy plugin once for an incident and returns
/// its report: trying a strategy by hand. It really runs (a granted command
/// runs, a webhook is sent), so team admins only.
#[utoipa::path(
    post, path = "/teams/{team}/plugins/{name}/recover", tag = "plugins",
    params(
        ("team" = Name, Path, description = "Team"),
        ("name" = Name, Path, description = "Recovery-strategy plugin"),
    ),
    request_body = RecoverRequest,
    responses(
        (status = 200, description = "`data` is the strategy's recovery report", body = RecoveryReport),
        (status = 404, description = "No such plugin", body = super::ErrorEnvelope),
        (status = 422, description = "A bad incident, or the plugin rejected its config", body = super::ErrorEnvelope),
        (status = 502, description = "The plugin failed, was denied (e.g. a program it is not granted), trapped, or is not a recovery strategy", body = super::ErrorEnvelope),
        (status = 504, description = "The plugin ran past its time limit", body = super::ErrorEnvelope),
    )
)]
async fn recover_plugin(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath((team, name)): ApiPath<(Name, Name)>,
    ApiJson(request): ApiJson<RecoverRequest>,
) -> Result<Response, ApiError> {
    check(&scope, &team, Access::Manage)?;
    let incident = request.incident.into_incident()?;
    let caller = Caller {
        worker_id: None,
        subject_id: Some(incident.id.clone()),
    };
    let report = app.plugins.recover(&team, &name, &incident, caller).await?;
    Ok(ok(report))
}

/// The form of an upload: `multipart/form-data` with two parts.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Describes the form for the OpenAPI document only.
struct UploadForm {
    /// The text of `plugin.toml`.
    manifest: String,
    /// The component, built for `wasm32-wasip2`. Left out when the manifest
    /// names a bundled component (`component = "core/<name>"`).
    #[schema(value_type = Option<String>, format = Binary)]
    component: Option<Vec<u8>>,
}

/// An upload read from its form; every malformed form is an [`ApiError`].
struct PluginUpload {
    manifest: String,
    /// Absent for a manifest that names a bundled component.
    component: Option<Vec<u8>>,
}

fn form_error(err: MultipartError) -> ApiError {
    let status = err.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "payload_too_large"
    } else {
        "invalid_form"
    };
    ApiError::new(status, code, err.body_text())
}

impl<S: Send + Sync> FromRequest<S> for PluginUpload {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let mut form = Multipart::from_request(req, state).await.map_err(
            |rejection: MultipartRejection| {
                ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!(
                        "expected `Content-Type: multipart/form-data` with parts `manifest` \
                         and `component` ({})",
                        rejection.body_text()
                    ),
                )
            },
        )?;
        let (mut manifest, mut component) = (None, None);
        while let Some(field) = form.next_field().await.map_err(form_error)? {
            match field.name().unwrap_or_default() {
                "manifest" => {
                    let text = field.text().await.map_err(form_error)?;
                    manifest = Some(text);
                }
                "component" => {
                    let bytes = field.bytes().await.map_err(form_error)?;
                    component = Some(bytes.to_vec());
                }
                other => {
                    return Err(ApiError::invalid(format!(
                        "unknown form part {other:?}; expected `manifest` and `component`"
                    )));
                }
            }
        }
        // Without `component`, the manifest must name a bundled one; the
        // registry says so if it does not.
        match manifest {
            Some(manifest) => Ok(Self {
                manifest,
                component,
            }),
            None => Err(ApiError::invalid("form part `manifest` is missing")),
        }
    }
}

/// Uploads a new version of a team's plugin (or its first). The component is
/// compiled and checked against its kind's world before anything changes;
/// then its folder is written durably and the new version serves the next
/// call, while calls in flight finish on the old one. A broken upload leaves
/// the serving version as it was and is recorded as the plugin's `lastError`.
#[utoipa::path(
    put, path = "/teams/{team}/plugins/{name}", tag = "plugins",
    params(
        ("team" = Name, Path, description = "Team"),
        ("name" = Name, Path, description = "Plugin name; must match the manifest"),
    ),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Replaced; `data` is the plugin now serving", body = PluginInfo),
        (status = 201, description = "Added; `data` is the plugin now serving", body = PluginInfo),
        (status = 403, description = "The team may not hold this plugin (`core` is reserved)", body = super::ErrorEnvelope),
        (status = 413, description = "Over the upload limit", body = super::ErrorEnvelope),
        (status = 415, description = "Not a multipart form", body = super::ErrorEnvelope),
        (status = 422, description = "Bad manifest, not a component, wrong world, or a manifest the component contradicts", body = super::ErrorEnvelope),
    )
)]
async fn upload_plugin(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath((team, name)): ApiPath<(Name, Name)>,
    request: Request,
) -> Result<Response, ApiError> {
    // Check who is calling before reading up to 64 MiB of their form.
    check(&scope, &team, Access::Manage)?;
    let upload = PluginUpload::from_request(request, &()).await?;
    let uploaded = app
        .plugins
        .upload(&team, &name, upload.manifest, upload.component)
        .await?;
    Ok(if uploaded.replaced {
        ok(uploaded.info)
    } else {
        created(uploaded.info)
    })
}

/// Removes a team's plugin and its folder. Calls in flight finish; bundled
/// plugins cannot be removed.
#[utoipa::path(
    delete, path = "/teams/{team}/plugins/{name}", tag = "plugins",
    params(
        ("team" = Name, Path, description = "Team"),
        ("name" = Name, Path, description = "Plugin name"),
    ),
    responses(
        (status = 200, description = "Removed; `data` is the plugin as it was", body = PluginInfo),
        (status = 403, description = "A bundled plugin", body = super::ErrorEnvelope),
        (status = 404, description = "No such plugin", body = super::ErrorEnvelope),
    )
)]
async fn delete_plugin(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath((team, name)): ApiPath<(Name, Name)>,
) -> Result<Response, ApiError> {
    check(&scope, &team, Access::Manage)?;
    Ok(ok(app.plugins.remove(&team, &name).await?))
}
