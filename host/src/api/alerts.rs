//! `/alert-rules`: who is told of an alert of each severity, on which
//! channels, and when it escalates.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ok};
use super::extract::ApiJson;
use super::scope::{Scope, forbidden};
use crate::App;
use crate::alerts::rules::{AlertRules, RulesError};

pub(super) fn routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(get_rules, put_rules))
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
