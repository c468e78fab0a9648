//! `/status` and `/metrics`.

use std::sync::Arc;

use super::Routes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::routes;

use super::error::{ApiError, ok};
use super::extract::ApiQuery;
use super::metrics::MetricsSnapshot;
use crate::App;
use crate::clock::Timestamp;
use crate::store::{StorageStatus, StoreHealth};

pub(super) fn routes() -> Routes {
    Routes::new()
        .routes(routes!(status))
        .routes(routes!(metrics))
}

/// `GET /status`, in the shape of the user's guide, plus `storage` and
/// `alerts`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Status {
    timestamp: Timestamp,
    version: &'static str,
    components: Components,
    storage: Storage,
    alerts: crate::alerts::AlertCounts,
}

/// Whether the store takes writes. While it is `unavailable` (a full disk,
/// an I/O error) writes answer 503 `storage_unavailable`, the components
/// that keep state say `degraded`, and the host keeps trying to reopen it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Storage {
    status: StorageState,
    /// When the store became unavailable; `null` while it is ok.
    #[schema(required = true)]
    since: Option<Timestamp>,
    /// The storage error that keeps it unavailable; `null` while it is ok.
    #[schema(required = true)]
    last_error: Option<String>,
}

/// `ok`, or `unavailable` while writes are refused.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum StorageState {
    Ok,
    Unavailable,
}

impl From<StoreHealth> for Storage {
    fn from(health: StoreHealth) -> Self {
        Self {
            status: match health.status {
                StorageStatus::Ok => StorageState::Ok,
                StorageStatus::Unavailable => StorageState::Unavailable,
            },
            since: health.since,
            last_error: health.last_error,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Components {
    worker_automation: WorkerAutomation,
    action_plan_automation: ActionPlanAutomation,
    auto_recovery_system: AutoRecoverySystem,
}

/// `running` for a component that works; `degraded` for one that runs but
/// cannot store what it does (the store is unavailable).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum ComponentStatus {
    Running,
    Degraded,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct WorkerAutomation {
    status: ComponentStatus,
    workers: u64,
    active_tasks: u64,
    performance: TaskPerformance,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TaskPerformance {
    total_tasks: u64,
    completed_tasks: u64,
    success_rate: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ActionPlanAutomation {
    status: ComponentStatus,
    total_plans: u64,
    active_plans: u64,
    performance: PlanPerformance,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct PlanPerformance {
    success_rate: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct AutoRecoverySystem {
    status: ComponentStatus,
    total_incidents: u64,
    active_incidents: u64,
    performance: RecoveryPerformance,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct RecoveryPerformance {
    auto_recovered: u64,
    success_rate: f64,
}

/// Succeeded ÷ ended as a percentage with one decimal; 0 before anything
/// ended.
fn rate(succeeded: u64, failed: u64) -> f64 {
    let ended = succeeded + failed;
    if ended == 0 {
        0.0
    } else {
        (succeeded as f64 * 1000.0 / ended as f64).round() / 10.0
    }
}

/// The state of the three automation systems, and of the store. Answered
/// from memory, so it works while the store is unavailable.
#[utoipa::path(
    get, path = "/status", tag = "system",
    responses((status = 200, description = "`data` is the status", body = Status))
)]
async fn status(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let workers = app.workers.count();
    let tasks = app.tasks.counts();
    let success_rate = rate(tasks.succeeded, tasks.failed);
    let plans = app.plans.counts();
    let incidents = app.recovery.counts();
    let storage = app.store.health();
    let component_status = || match storage.status {
        StorageStatus::Ok => ComponentStatus::Running,
        StorageStatus::Unavailable => ComponentStatus::Degraded,
    };
    Ok(ok(Status {
        timestamp: Timestamp::now(),
        version: env!("CARGO_PKG_VERSION"),
        components: Components {
            worker_automation: WorkerAutomation {
                status: component_status(),
                workers,
                active_tasks: tasks.running,
                performance: TaskPerformance {
                    total_tasks: tasks.total,
                    completed_tasks: tasks.succeeded,
                    success_rate,
                },
            },
            action_plan_automation: ActionPlanAutomation {
                status: component_status(),
                total_plans: plans.total,
                active_plans: plans.active,
                performance: PlanPerformance {
                    success_rate: rate(plans.succeeded, plans.failed),
                },
            },
            auto_recovery_system: AutoRecoverySystem {
                status: component_status(),
                total_incidents: incidents.total,
                active_incidents: incidents.active,
                performance: RecoveryPerformance {
                    auto_recovered: incidents.auto_recovered,
                    // Repaired by a stage ÷ resolved by any means.
                    success_rate: rate(
                        incidents.auto_recovered,
                        incidents.resolved - incidents.auto_recovered.min(incidents.resolved),
                    ),
                },
            },
        },
        storage: storage.into(),
        alerts: app.alerts.counts(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct MetricsQuery {
    /// `json` (the default) or `prometheus`.
    #[param(inline)]
    format: Option<MetricsFormat>,
}

/// How `/metrics` renders.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum MetricsFormat {
    /// The envelope with JSON.
    Json,
    /// OpenMetrics text, which Prometheus scrapes.
    Prometheus,
}

/// Counters and gauges, as JSON or in the Prometheus text format
/// (`?format=prometheus` or `Accept: text/plain`).
#[utoipa::path(
    get, path = "/metrics", tag = "system",
    params(MetricsQuery),
    responses(
        (status = 200, description = "`data` is the metrics; or OpenMetrics text", content(
            (MetricsSnapshot = "application/json"),
            (String = "application/openmetrics-text"),
        )),
    )
)]
async fn metrics(
    State(app): State<Arc<App>>,
    ApiQuery(query): ApiQuery<MetricsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let wants_text = match query.format {
        None => headers
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok())
            .is_some_and(|accept| {
                accept.contains("text/plain") || accept.contains("application/openmetrics-text")
            }),
        Some(MetricsFormat::Prometheus) => true,
        Some(MetricsFormat::Json) => false,
    };
    let (snapshot, requests) = MetricsSnapshot::gather(&app);
    if wants_text {
        let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        return Ok((
            [(header::CONTENT_TYPE, content_type)],
            snapshot.to_prometheus(&requests),
        )
            .into_response());
    }
    Ok(ok(snapshot))
}
