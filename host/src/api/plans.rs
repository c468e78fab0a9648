//! `/action-plan-templates` and `/action-plans`: templates, and plans made
//! from them, executed, cancelled and retried.

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
use crate::plans::{
    DryRun, NewPlan, NewTemplate, Plan, PlanError, PlanPage, PlanQuery, RunOptions, Template,
};

/// What `execute` and `retry` answer: the plan, or with `dryRun=true` what
/// would run.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
enum RunAnswer {
    /// The plan, executing.
    Plan(Box<Plan>),
    /// What would run, in order; nothing ran.
    DryRun(DryRun),
}

pub(super) fn routes() -> Routes {
    Routes::new()
        .routes(routes!(list_templates, define_template))
        .routes(routes!(get_template))
        .routes(routes!(create_plan, list_plans))
        .routes(routes!(get_plan))
        .routes(routes!(execute_plan))
        .routes(routes!(cancel_plan))
        .routes(routes!(retry_plan))
}

/// The templates the caller may use: the built-in ones and its teams'.
#[utoipa::path(
    get, path = "/action-plan-templates", tag = "action-plans",
    responses((status = 200, description = "`data` is the list of templates", body = Vec<Template>))
)]
async fn list_templates(State(app): State<Arc<App>>, scope: Scope) -> Response {
    ok(app.plans.templates(&|team| scope.sees(team)))
}

/// One template.
#[utoipa::path(
    get, path = "/action-plan-templates/{id}", tag = "action-plans",
    params(("id" = Name, Path, description = "Template id, e.g. SYSTEM_CHECK")),
    responses(
        (status = 200, description = "`data` is the template", body = Template),
        (status = 404, description = "No such template", body = super::ErrorEnvelope),
    )
)]
async fn get_template(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
) -> Result<Response, ApiError> {
    let missing = || ApiError::from(PlanError::TemplateNotFound(id.to_string()));
    let template = app.plans.template(&id).map_err(|_| missing())?;
    if !template.built_in {
        scope.object(&template.team, Access::Read, missing)?;
    }
    Ok(ok(template))
}

/// Defines a team's template.
#[utoipa::path(
    post, path = "/action-plan-templates", tag = "action-plans",
    request_body = NewTemplate,
    responses(
        (status = 201, description = "Defined; `data` is the template", body = Template),
        (status = 409, description = "A template with the id exists", body = super::ErrorEnvelope),
        (status = 422, description = "A field is missing or not allowed, or the actions' dependencies have a cycle", body = super::ErrorEnvelope),
    )
)]
async fn define_template(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiJson(mut new): ApiJson<NewTemplate>,
) -> Result<Response, ApiError> {
    let team = scope.team_for(new.team.take(), Access::Manage)?;
    Ok(created(app.plans.define_template(team, new).await?))
}

/// Creates a `pending` plan from a template and its `data`.
#[utoipa::path(
    post, path = "/action-plans", tag = "action-plans",
    request_body = NewPlan,
    responses(
        (status = 201, description = "Created; `data` is the plan", body = Plan),
        (status = 404, description = "No such template", body = super::ErrorEnvelope),
        (status = 422, description = "`data` does not fit the template's inputs", body = super::ErrorEnvelope),
    )
)]
async fn create_plan(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiJson(mut new): ApiJson<NewPlan>,
) -> Result<Response, ApiError> {
    let team = scope.team_for(new.team.take(), Access::Operate)?;
    Ok(created(app.plans.create(team, new).await?))
}

/// Plans, oldest first, filtered and paged by cursor.
#[utoipa::path(
    get, path = "/action-plans", tag = "action-plans",
    params(PlanQuery),
    responses(
        (status = 200, description = "`data` is a page of plans", body = PlanPage),
        (status = 400, description = "A filter has an unknown value", body = super::ErrorEnvelope),
    )
)]
async fn list_plans(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiQuery(query): ApiQuery<PlanQuery>,
) -> Result<Response, ApiError> {
    check_page_limit(query.limit)?;
    let only_team = scope.only_team().map(str::to_owned);
    Ok(ok(app.plans.list(query, only_team).await?))
}

/// The plan `id` if the caller may do `access` to it; another team's plan
/// is as missing as one that does not exist.
fn visible_plan(app: &App, scope: &Scope, id: &Name, access: Access) -> Result<Plan, ApiError> {
    let missing = || ApiError::from(PlanError::NotFound(id.to_string()));
    let plan = app.plans.get(id).map_err(|err| match err {
        PlanError::NotFound(_) => missing(),
        other => ApiError::from(other),
    })?;
    scope.object(&plan.team, access, missing)?;
    Ok(plan)
}

/// One plan, with every action's status, attempts, output or error.
#[utoipa::path(
    get, path = "/action-plans/{id}", tag = "action-plans",
    params(("id" = Name, Path, description = "Plan id")),
    responses(
        (status = 200, description = "`data` is the plan", body = Plan),
        (status = 404, description = "No such plan", body = super::ErrorEnvelope),
    )
)]
async fn get_plan(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
) -> Result<Response, ApiError> {
    Ok(ok(visible_plan(&app, &scope, &id, Access::Read)?))
}

/// Executes a `pending` plan; with `dryRun=true`, says what would run.
#[utoipa::path(
    post, path = "/action-plans/{id}/execute", tag = "action-plans",
    params(("id" = Name, Path, description = "Plan id"), RunOptions),
    responses(
        (status = 200, description = "Executing; `data` is the plan (or, dry, what would run)", body = RunAnswer),
        (status = 404, description = "No such plan", body = super::ErrorEnvelope),
        (status = 409, description = "It is executing or has run", body = super::ErrorEnvelope),
    )
)]
async fn execute_plan(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
    ApiQuery(options): ApiQuery<RunOptions>,
) -> Result<Response, ApiError> {
    visible_plan(&app, &scope, &id, Access::Operate)?;
    Ok(ok(if options.dry_run == Some(true) {
        RunAnswer::DryRun(app.plans.execute_dry_run(&id)?)
    } else {
        RunAnswer::Plan(Box::new(app.plans.execute(&id).await?))
    }))
}

/// Cancels a pending or executing plan; running calls are stopped.
#[utoipa::path(
    post, path = "/action-plans/{id}/cancel", tag = "action-plans",
    params(("id" = Name, Path, description = "Plan id")),
    responses(
        (status = 200, description = "Cancelled; `data` is the plan", body = Plan),
        (status = 404, description = "No such plan", body = super::ErrorEnvelope),
        (status = 409, description = "It has ended", body = super::ErrorEnvelope),
    )
)]
async fn cancel_plan(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
) -> Result<Response, ApiError> {
    visible_plan(&app, &scope, &id, Access::Operate)?;
    Ok(ok(app.plans.cancel(&id).await?))
}

/// Runs again what did not succeed (failed, timed out, interrupted,
/// cancelled, and what they blocked), keeping what succeeded; with
/// `dryRun=true`, says what would run.
#[utoipa::path(
    post, path = "/action-plans/{id}/retry", tag = "action-plans",
    params(("id" = Name, Path, description = "Plan id"), RunOptions),
    responses(
        (status = 200, description = "Executing again; `data` is the plan (or, dry, what would run)", body = RunAnswer),
        (status = 404, description = "No such plan", body = super::ErrorEnvelope),
        (status = 409, description = "Nothing to retry (`nothing_to_retry`), or not executed yet", body = super::ErrorEnvelope),
    )
)]
async fn retry_plan(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
    ApiQuery(options): ApiQuery<RunOptions>,
) -> Result<Response, ApiError> {
    visible_plan(&app, &scope, &id, Access::Operate)?;
    Ok(ok(if options.dry_run == Some(true) {
        RunAnswer::DryRun(app.plans.retry_dry_run(&id).await?)
    } else {
        RunAnswer::Plan(Box::new(app.plans.retry(&id).await?))
    }))
}
