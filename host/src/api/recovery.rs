//! `/health-checks` and `/incidents`: checks registered, changed, run by
//! hand; incidents read and resolved by hand.

use std::sync::Arc;

use super::Routes;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa_axum::routes;

use super::error::{ApiError, created, ok};
use super::extract::{ApiJson, ApiPath, ApiQuery, check_page_limit};
use super::scope::Scope;
use crate::App;
use crate::auth::{Access, Identity};
use crate::names::Name;
use crate::recovery::{
    CheckPage, CheckQuery, CheckResult, CheckView, Incident, IncidentPage, IncidentQuery,
    NewHealthCheck, RecoveryError,
};

pub(super) fn routes() -> Routes {
    Routes::new()
        .routes(routes!(create_check, list_checks))
        .routes(routes!(get_check, replace_check, delete_check))
        .routes(routes!(run_check))
        .routes(routes!(list_incidents))
        .routes(routes!(get_incident))
        .routes(routes!(resolve_incident))
}

/// The body of `POST /incidents/{id}/resolve`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Resolution {
    /// How it was resolved, for the record.
    resolution: String,
}

/// Who did something, as records name them: the token's id, or `local`
/// for the local operator of a loopback host.
pub(super) fn actor(identity: &Identity) -> String {
    match identity {
        Identity::Local => "local".to_owned(),
        other => format!("token:{}", other.token_id()),
    }
}

/// Registers a health check.
#[utoipa::path(
    post, path = "/health-checks", tag = "recovery",
    request_body = NewHealthCheck,
    responses(
        (status = 201, description = "Registered; `data` is the check", body = CheckView),
        (status = 409, description = "A check with the id exists", body = super::ErrorEnvelope),
        (status = 422, description = "A field is missing or not allowed", body = super::ErrorEnvelope),
    )
)]
async fn create_check(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiJson(mut new): ApiJson<NewHealthCheck>,
) -> Result<Response, ApiError> {
    let team = scope.team_for(new.team.take(), Access::Manage)?;
    Ok(created(app.recovery.create(team, new).await?))
}

/// Health checks in id order, filtered and paged by cursor.
#[utoipa::path(
    get, path = "/health-checks", tag = "recovery",
    params(CheckQuery),
    responses((status = 200, description = "`data` is a page of checks", body = CheckPage))
)]
async fn list_checks(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiQuery(query): ApiQuery<CheckQuery>,
) -> Result<Response, ApiError> {
    check_page_limit(query.limit)?;
    Ok(ok(app.recovery.checks(&query, scope.only_team())))
}

/// The check `id` if the caller may do `access` to it; another team's
/// check is as missing as one that does not exist.
fn visible_check(
    app: &App,
    scope: &Scope,
    id: &Name,
    access: Access,
) -> Result<CheckView, ApiError> {
    let missing = || ApiError::from(RecoveryError::CheckNotFound(id.to_string()));
    let view = app.recovery.check(id).map_err(|_| missing())?;
    scope.object(&view.check.team, access, missing)?;
    Ok(view)
}

/// A check with its recent results, streaks, state and next run.
#[utoipa::path(
    get, path = "/health-checks/{id}", tag = "recovery",
    params(("id" = Name, Path, description = "Check id")),
    responses(
        (status = 200, description = "`data` is the check", body = CheckView),
        (status = 404, description = "No such check", body = super::ErrorEnvelope),
    )
)]
async fn get_check(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
) -> Result<Response, ApiError> {
    Ok(ok(visible_check(&app, &scope, &id, Access::Read)?))
}

/// Replaces a check's definition; its results and open incident stay.
#[utoipa::path(
    put, path = "/health-checks/{id}", tag = "recovery",
    params(("id" = Name, Path, description = "Check id")),
    request_body = NewHealthCheck,
    responses(
        (status = 200, description = "Changed; `data` is the check", body = CheckView),
        (status = 404, description = "No such check", body = super::ErrorEnvelope),
        (status = 422, description = "A field is missing or not allowed", body = super::ErrorEnvelope),
    )
)]
async fn replace_check(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
    ApiJson(new): ApiJson<NewHealthCheck>,
) -> Result<Response, ApiError> {
    let view = visible_check(&app, &scope, &id, Access::Manage)?;
    if new
        .team
        .as_ref()
        .is_some_and(|t| t.as_str() != view.check.team)
    {
        return Err(RecoveryError::Invalid {
            field: "team".into(),
            message: format!("cannot change; the check belongs to {}", view.check.team),
        }
        .into());
    }
    Ok(ok(app.recovery.replace(&id, new).await?))
}

/// Deletes a check; its open incident is resolved, saying so.
#[utoipa::path(
    delete, path = "/health-checks/{id}", tag = "recovery",
    params(("id" = Name, Path, description = "Check id")),
    responses(
        (status = 200, description = "Deleted; `data` is the check as it was", body = CheckView),
        (status = 404, description = "No such check", body = super::ErrorEnvelope),
        (status = 409, description = "Other checks depend on it", body = super::ErrorEnvelope),
    )
)]
async fn delete_check(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
) -> Result<Response, ApiError> {
    let view = visible_check(&app, &scope, &id, Access::Manage)?;
    app.recovery.delete(&id, &actor(&scope.0)).await?;
    Ok(ok(view))
}

/// Runs a check now, out of its schedule; the result counts like any other.
#[utoipa::path(
    post, path = "/health-checks/{id}/run", tag = "recovery",
    params(("id" = Name, Path, description = "Check id")),
    responses(
        (status = 200, description = "`data` is the result", body = CheckResult),
        (status = 404, description = "No such check", body = super::ErrorEnvelope),
        (status = 409, description = "A recovery is checking it (`recovery_running`)", body = super::ErrorEnvelope),
    )
)]
async fn run_check(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
) -> Result<Response, ApiError> {
    visible_check(&app, &scope, &id, Access::Operate)?;
    Ok(ok(app.recovery.run_now(&id).await?))
}

/// Incidents, oldest first, filtered and paged by cursor.
#[utoipa::path(
    get, path = "/incidents", tag = "recovery",
    params(IncidentQuery),
    responses(
        (status = 200, description = "`data` is a page of incidents", body = IncidentPage),
        (status = 400, description = "A filter has an unknown value", body = super::ErrorEnvelope),
    )
)]
async fn list_incidents(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiQuery(query): ApiQuery<IncidentQuery>,
) -> Result<Response, ApiError> {
    check_page_limit(query.limit)?;
    let only_team = scope.only_team().map(str::to_owned);
    Ok(ok(app.recovery.incidents(query, only_team).await?))
}

fn visible_incident(
    app: &App,
    scope: &Scope,
    id: &Name,
    access: Access,
) -> Result<Incident, ApiError> {
    let missing = || ApiError::from(RecoveryError::IncidentNotFound(id.to_string()));
    let incident = app.recovery.incident(id).map_err(|err| match err {
        RecoveryError::IncidentNotFound(_) => missing(),
        other => ApiError::from(other),
    })?;
    scope.object(&incident.team, access, missing)?;
    Ok(incident)
}

/// An incident with the failures that opened it and its timeline.
#[utoipa::path(
    get, path = "/incidents/{id}", tag = "recovery",
    params(("id" = Name, Path, description = "Incident id")),
    responses(
        (status = 200, description = "`data` is the incident", body = Incident),
        (status = 404, description = "No such incident", body = super::ErrorEnvelope),
    )
)]
async fn get_incident(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
) -> Result<Response, ApiError> {
    Ok(ok(visible_incident(&app, &scope, &id, Access::Read)?))
}

/// Resolves an open incident by hand, with who and why; its recovery stops.
#[utoipa::path(
    post, path = "/incidents/{id}/resolve", tag = "recovery",
    params(("id" = Name, Path, description = "Incident id")),
    request_body = Resolution,
    responses(
        (status = 200, description = "Resolved; `data` is the incident", body = Incident),
        (status = 404, description = "No such incident", body = super::ErrorEnvelope),
        (status = 409, description = "Already resolved (`already_resolved`)", body = super::ErrorEnvelope),
        (status = 422, description = "No resolution text", body = super::ErrorEnvelope),
    )
)]
async fn resolve_incident(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
    ApiJson(body): ApiJson<Resolution>,
) -> Result<Response, ApiError> {
    visible_incident(&app, &scope, &id, Access::Operate)?;
    let by = actor(&scope.0);
    Ok(ok(app.recovery.resolve(&id, &by, &body.resolution).await?))
}
