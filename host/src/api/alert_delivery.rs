//! `/alert-channels` and `/alert-deliveries`: what the alert channels are
//! (without secrets), a test notice through them, and the deliveries with
//! their attempts.

use std::sync::Arc;

use super::Routes;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::routes;

use super::error::{ApiError, ok};
use super::extract::{ApiJson, ApiQuery, check_page_limit};
use super::scope::{Scope, forbidden};
use crate::App;
use crate::alerts::delivery::{
    ChannelsView, DeliveryError, DeliveryPage, DeliveryQuery, TestNotice,
};
use crate::auth::{Access, Identity};

pub(super) fn routes() -> Routes {
    Routes::new()
        .routes(routes!(get_channels))
        .routes(routes!(test_channels))
        .routes(routes!(list_deliveries))
}

impl From<DeliveryError> for ApiError {
    fn from(err: DeliveryError) -> Self {
        match err {
            DeliveryError::Invalid { .. } => ApiError::invalid(err.to_string()),
            DeliveryError::Store(err) => err.into(),
        }
    }
}

fn require_global_admin(scope: &Scope) -> Result<(), ApiError> {
    if scope.is_global_admin() {
        Ok(())
    } else {
        Err(forbidden(
            "the alert channels are the host's: only a global admin may do this",
        ))
    }
}

/// The alert channels, recipient groups and delivery policy in force;
/// passwords, tokens and routing keys are never shown, webhook URLs only by
/// their origin, addresses masked.
#[utoipa::path(
    get, path = "/alert-channels", tag = "alerts",
    responses(
        (status = 200, description = "`data` is the redacted configuration", body = ChannelsView),
        (status = 403, description = "Not a global admin", body = super::ErrorEnvelope),
    )
)]
async fn get_channels(State(app): State<Arc<App>>, scope: Scope) -> Result<Response, ApiError> {
    require_global_admin(&scope)?;
    Ok(ok(app.alert_outbox.config().view()))
}

/// What a test queued.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TestAccepted {
    /// The test alert's id; `GET /alert-deliveries?alertId=` lists its
    /// deliveries.
    alert_id: String,
    /// The keys of the deliveries queued.
    keys: Vec<String>,
}

/// Queues a test notice to a recipient group on some (or all) channels,
/// through the same outbox as alerts; answers once it is queued.
#[utoipa::path(
    post, path = "/alert-channels/test", tag = "alerts",
    request_body = TestNotice,
    responses(
        (status = 202, description = "Queued; `data` has the alert id and delivery keys", body = TestAccepted),
        (status = 403, description = "Not a global admin", body = super::ErrorEnvelope),
        (status = 422, description = "Unknown group, channel or severity", body = super::ErrorEnvelope),
    )
)]
async fn test_channels(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiJson(test): ApiJson<TestNotice>,
) -> Result<Response, ApiError> {
    require_global_admin(&scope)?;
    let queued = app.alert_outbox.send_test(test).await?;
    let body = serde_json::json!({
        "success": true,
        "data": TestAccepted { alert_id: queued.alert_id, keys: queued.keys },
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Alert deliveries in key order (alert, event, channel), each with its
/// attempts; recipients masked. A team's operators and admins see their
/// team's.
#[utoipa::path(
    get, path = "/alert-deliveries", tag = "alerts",
    params(DeliveryQuery),
    responses(
        (status = 200, description = "`data` is a page of deliveries", body = DeliveryPage),
        (status = 400, description = "A filter has an unknown value", body = super::ErrorEnvelope),
        (status = 403, description = "A viewer token", body = super::ErrorEnvelope),
    )
)]
async fn list_deliveries(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> Result<Response, ApiError> {
    check_page_limit(query.limit)?;
    if let Identity::Team { team, .. } = &scope.0
        && !scope.0.allows(team, Access::Operate)
    {
        return Err(forbidden(
            "listing alert deliveries needs the operator role",
        ));
    }
    let only_team = scope.only_team().map(str::to_owned);
    Ok(ok(app.alert_outbox.page(query, only_team).await?))
}
