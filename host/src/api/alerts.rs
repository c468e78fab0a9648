//! `/alert-rules` (who is told of an alert of each severity, on which
//! channels, and when it escalates), `/alerts` (read, acknowledge,
//! resolve) and `/silences`.

use std::sync::Arc;

use super::Routes;
use axum::extract::State;
use axum::response::Response;
use utoipa_axum::routes;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, created, ok};
use super::extract::{ApiJson, ApiPath, ApiQuery, check_page_limit};
use super::recovery::actor;
use super::scope::{Scope, forbidden};
use crate::App;
use crate::alerts::rules::{AlertRules, RulesError};
use crate::alerts::{
    Alert, AlertDetail, AlertError, AlertPage, AlertQuery, NewSilence, Silence, SilenceError,
};
use crate::auth::Access;
use crate::names::Name;

pub(super) fn routes() -> Routes {
    Routes::new().routes(routes!(get_rules, put_rules))
}

impl From<RulesError> for ApiError {
    fn from(err: RulesError) -> Self {
        match err {
            RulesError::Invalid { .. } => Self::invalid(err.to_string()),
            RulesError::Store(store) => store.into(),
        }
    }
}

/// The alert rules in force: one per severity (the guide's table unless
/// changed).
#[utoipa::path(
    get, path = "/alert-rules", tag = "alerts",
    responses((status = 200, description = "`data` is the rules", body = AlertRules))
)]
async fn get_rules(State(app): State<Arc<App>>) -> Response {
    ok(app.alert_rules.get())
}

/// Replaces the alert rules (global admins); a bad rule → 422 naming its
/// field, and the rules in force stay.
#[utoipa::path(
    put, path = "/alert-rules", tag = "alerts",
    request_body = AlertRules,
    responses(
        (status = 200, description = "In force; `data` is the rules", body = AlertRules),
        (status = 403, description = "Not a global admin", body = super::ErrorEnvelope),
        (status = 422, description = "A rule is wrong; nothing changed", body = super::ErrorEnvelope),
    )
)]
async fn put_rules(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiJson(rules): ApiJson<AlertRules>,
) -> Result<Response, ApiError> {
    if !scope.is_global_admin() {
        return Err(forbidden(
            "the alert rules are the host's: only a global admin may change them",
        ));
    }
    let groups = &app.alert_outbox.config().groups;
    let known = |group: &str| groups.contains_key(group);
    Ok(ok(app.alert_rules.replace(rules, known).await?))
}

/// Routes of `/alerts` and `/silences`.
pub(super) fn alert_routes() -> Routes {
    Routes::new()
        .routes(routes!(list_alerts))
        .routes(routes!(get_alert))
        .routes(routes!(acknowledge_alert))
        .routes(routes!(resolve_alert))
        .routes(routes!(create_silence, list_silences))
        .routes(routes!(get_silence, end_silence))
}

impl From<AlertError> for ApiError {
    fn from(err: AlertError) -> Self {
        match err {
            AlertError::Invalid { .. } => Self::invalid(err.to_string()),
            AlertError::NotFound(_) => Self::not_found(err.to_string()),
            AlertError::Conflict { code, .. } => {
                Self::new(StatusCode::CONFLICT, code, err.to_string())
            }
            AlertError::Silence(silence) => silence.into(),
            AlertError::Store(store) => store.into(),
        }
    }
}

impl From<SilenceError> for ApiError {
    fn from(err: SilenceError) -> Self {
        match err {
            SilenceError::Invalid { .. } => Self::invalid(err.to_string()),
            SilenceError::Full(_) => {
                Self::new(StatusCode::CONFLICT, "too_many_silences", err.to_string())
            }
            SilenceError::NotFound(_) => Self::not_found(err.to_string()),
            SilenceError::Store(store) => store.into(),
        }
    }
}

/// The body of `POST /alerts/{id}/acknowledge`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Acknowledgement {
    /// Who acknowledges (1 to 128 characters).
    by: String,
    /// For how long, in milliseconds (1 to 30 days); when it runs out and
    /// the alert is still open, everyone told is told again. Left out: until
    /// the alert is resolved.
    #[serde(default)]
    for_ms: Option<u64>,
}

/// The body of `POST /alerts/{id}/resolve`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AlertResolution {
    /// Who resolves it; the caller's token when left out.
    #[serde(default)]
    by: Option<String>,
    /// Why (1 to 500 characters).
    resolution: String,
}

fn visible_alert(app: &App, scope: &Scope, id: &Name, access: Access) -> Result<Alert, ApiError> {
    let missing = || ApiError::from(AlertError::NotFound(id.to_string()));
    let alert = app.alerts.alert(id).map_err(|err| match err {
        AlertError::NotFound(_) => missing(),
        other => ApiError::from(other),
    })?;
    scope.object(&alert.team, access, missing)?;
    Ok(alert)
}

/// Alerts in id (raising) order, filtered by status, severity, source and
/// team, paged by cursor.
#[utoipa::path(
    get, path = "/alerts", tag = "alerts",
    params(AlertQuery),
    responses((status = 200, description = "`data` is a page of alerts", body = AlertPage))
)]
async fn list_alerts(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiQuery(query): ApiQuery<AlertQuery>,
) -> Result<Response, ApiError> {
    check_page_limit(query.limit)?;
    let only_team = scope.only_team().map(str::to_owned);
    Ok(ok(app.alerts.page(query, only_team).await?))
}

/// An alert with every delivery of its notices (each attempt) and its next
/// escalation step.
#[utoipa::path(
    get, path = "/alerts/{id}", tag = "alerts",
    params(("id" = Name, Path, description = "Alert id")),
    responses(
        (status = 200, description = "`data` is the alert", body = AlertDetail),
        (status = 404, description = "No such alert", body = super::ErrorEnvelope),
    )
)]
async fn get_alert(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
) -> Result<Response, ApiError> {
    visible_alert(&app, &scope, &id, Access::Read)?;
    Ok(ok(app.alerts.get(&id).await?))
}

/// Acknowledges an alert: its escalation stops (for `forMs`, when given)
/// and PagerDuty hears of it.
#[utoipa::path(
    post, path = "/alerts/{id}/acknowledge", tag = "alerts",
    params(("id" = Name, Path, description = "Alert id")),
    request_body = Acknowledgement,
    responses(
        (status = 200, description = "Acknowledged; `data` is the alert", body = Alert),
        (status = 404, description = "No such alert", body = super::ErrorEnvelope),
        (status = 409, description = "Already resolved (`already_resolved`)", body = super::ErrorEnvelope),
        (status = 422, description = "A field is wrong", body = super::ErrorEnvelope),
    )
)]
async fn acknowledge_alert(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
    ApiJson(body): ApiJson<Acknowledgement>,
) -> Result<Response, ApiError> {
    visible_alert(&app, &scope, &id, Access::Operate)?;
    Ok(ok(app
        .alerts
        .acknowledge(&id, &body.by, body.for_ms)
        .await?))
}

/// Resolves an alert by hand (its incident, plan or worker stays as it
/// is); PagerDuty and Slack hear it is over where they were told.
#[utoipa::path(
    post, path = "/alerts/{id}/resolve", tag = "alerts",
    params(("id" = Name, Path, description = "Alert id")),
    request_body = AlertResolution,
    responses(
        (status = 200, description = "Resolved; `data` is the alert", body = Alert),
        (status = 404, description = "No such alert", body = super::ErrorEnvelope),
        (status = 409, description = "Already resolved (`already_resolved`)", body = super::ErrorEnvelope),
        (status = 422, description = "A field is wrong", body = super::ErrorEnvelope),
    )
)]
async fn resolve_alert(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
    ApiJson(body): ApiJson<AlertResolution>,
) -> Result<Response, ApiError> {
    visible_alert(&app, &scope, &id, Access::Operate)?;
    let by = body.by.unwrap_or_else(|| actor(&scope.0));
    Ok(ok(app.alerts.resolve(&id, &by, &body.resolution).await?))
}

/// Paging of `GET /silences`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SilenceQuery {
    /// Page size (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// Where the page starts: the `nextCursor` of the page before.
    cursor: Option<Name>,
}

/// One page of silences, in id order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct SilencePage {
    /// The silences (those that ended stay listed for a day).
    items: Vec<Silence>,
    /// The page size used.
    limit: usize,
    /// Where the next page starts; none on the last page.
    next_cursor: Option<String>,
}

/// Silences alerts matching its check, team and severity until it ends. A
/// team's token silences its own team only.
#[utoipa::path(
    post, path = "/silences", tag = "alerts",
    request_body = NewSilence,
    responses(
        (status = 201, description = "In force; `data` is the silence", body = Silence),
        (status = 403, description = "Another team's alerts", body = super::ErrorEnvelope),
        (status = 409, description = "Too many silences (`too_many_silences`)", body = super::ErrorEnvelope),
        (status = 422, description = "A field is wrong", body = super::ErrorEnvelope),
    )
)]
async fn create_silence(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiJson(mut new): ApiJson<NewSilence>,
) -> Result<Response, ApiError> {
    if !scope.is_global_admin() || new.matchers.team.is_some() {
        let team = scope.team_for(new.matchers.team.take(), Access::Operate)?;
        new.matchers.team = Some(team);
    }
    Ok(created(app.alerts.silence(new).await?))
}

/// The silences, in id order, paged by cursor.
#[utoipa::path(
    get, path = "/silences", tag = "alerts",
    params(SilenceQuery),
    responses((status = 200, description = "`data` is a page of silences", body = SilencePage))
)]
async fn list_silences(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiQuery(query): ApiQuery<SilenceQuery>,
) -> Result<Response, ApiError> {
    check_page_limit(query.limit)?;
    let limit = query.limit.unwrap_or(50);
    let (items, next_cursor) =
        app.alerts
            .silences(query.cursor.as_deref(), limit, scope.only_team());
    Ok(ok(SilencePage {
        items,
        limit,
        next_cursor,
    }))
}

fn visible_silence(
    app: &App,
    scope: &Scope,
    id: &Name,
    access: Access,
) -> Result<Silence, ApiError> {
    let missing = || ApiError::from(SilenceError::NotFound(id.to_string()));
    let silence = app.alerts.silence_of(id).map_err(|err| match err {
        AlertError::Silence(SilenceError::NotFound(_)) => missing(),
        other => ApiError::from(other),
    })?;
    match &silence.matchers.team {
        Some(team) => scope.object(team, access, missing)?,
        None if scope.is_global_admin() => {}
        None => return Err(missing()),
    }
    Ok(silence)
}

/// One silence.
#[utoipa::path(
    get, path = "/silences/{id}", tag = "alerts",
    params(("id" = Name, Path, description = "Silence id")),
    responses(
        (status = 200, description = "`data` is the silence", body = Silence),
        (status = 404, description = "No such silence", body = super::ErrorEnvelope),
    )
)]
async fn get_silence(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
) -> Result<Response, ApiError> {
    Ok(ok(visible_silence(&app, &scope, &id, Access::Read)?))
}

/// Ends a silence now: the alerts it held are looked at again at once.
#[utoipa::path(
    delete, path = "/silences/{id}", tag = "alerts",
    params(("id" = Name, Path, description = "Silence id")),
    responses(
        (status = 200, description = "Ended; `data` is the silence", body = Silence),
        (status = 404, description = "No such silence", body = super::ErrorEnvelope),
    )
)]
async fn end_silence(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
) -> Result<Response, ApiError> {
    visible_silence(&app, &scope, &id, Access::Operate)?;
    Ok(ok(app.alerts.end_silence(&id).await?))
}
