//! Request counters and the two renderings of `/metrics`: JSON in the
//! envelope, and the Prometheus (OpenMetrics) text format.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{Method, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use prometheus_client::metrics::histogram::Histogram;

use crate::alerts::delivery::{ChannelKind, DeliveryMetrics};
use crate::engine::DelayHistogram;
use crate::plans::PlanCounts;
use crate::plugins::PluginTotals;
use crate::recovery::{IncidentCounts, RecoveryMetrics};
use crate::tasks::TaskCounts;

/// Requests served, by method, route template and status.
///
/// Counted on every request, so the common case takes no lock that blocks
/// and allocates nothing: the counters are atomics in a map keyed by a hash
/// of the labels, read-locked to count (each bucket checks the labels, so
/// two label sets with one hash keep their own counters) and write-locked
/// only the first time a combination is seen.
#[derive(Debug, Default)]
pub struct HttpStats {
    counts: RwLock<HashMap<u64, Vec<RequestCounter>>>,
}

#[derive(Debug)]
struct RequestCounter {
    method: Method,
    route: String,
    status: u16,
    count: AtomicU64,
}

impl RequestCounter {
    fn is(&self, method: &Method, route: &str, status: u16) -> bool {
        self.status == status && self.method == method && self.route == route
    }
}

fn labels_hash(method: &Method, route: &str, status: u16) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    (method.as_str(), route, status).hash(&mut hasher);
    hasher.finish()
}

impl HttpStats {
    /// Counts one answered request. Unmatched paths share one label so that
    /// scanners cannot blow up the number of series.
    pub fn record(&self, method: &Method, route: Option<&str>, status: StatusCode) {
        let (route, status) = (route.unwrap_or("unmatched"), status.as_u16());
        let hash = labels_hash(method, route, status);
        {
            let counts = self.counts.read().unwrap_or_else(|p| p.into_inner());
            if let Some(counter) = counts
                .get(&hash)
                .and_then(|bucket| bucket.iter().find(|c| c.is(method, route, status)))
            {
                counter.count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut counts = self.counts.write().unwrap_or_else(|p| p.into_inner());
        let bucket = counts.entry(hash).or_default();
        match bucket.iter().find(|c| c.is(method, route, status)) {
            Some(counter) => {
                counter.count.fetch_add(1, Ordering::Relaxed);
            }
            None => bucket.push(RequestCounter {
                method: method.clone(),
                route: route.to_owned(),
                status,
                count: AtomicU64::new(1),
            }),
        }
    }

    fn snapshot(&self) -> BTreeMap<(String, String, u16), u64> {
        let counts = self.counts.read().unwrap_or_else(|p| p.into_inner());
        counts
            .values()
            .flatten()
            .map(|c| {
                (
                    (c.method.as_str().to_owned(), c.route.clone(), c.status),
                    c.count.load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

/// Everything `/metrics` reports, gathered at one moment.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSnapshot {
    /// Seconds since the host started.
    pub uptime_seconds: f64,
    /// Registered workers.
    pub workers: u64,
    /// Task totals.
    pub tasks: TaskCounts,
    /// Plugin totals.
    pub plugins: PluginTotals,
    /// Action-plan totals.
    pub plans: PlanCounts,
    /// Delay from an action being ready to its start.
    pub action_start_delay: DelayMetrics,
    /// Incident totals.
    pub incidents: IncidentCounts,
    /// From a check's first failing result to its incident opening.
    pub incident_detection: DelayMetrics,
    /// From an incident opening to a recovery stage repairing it.
    pub incident_time_to_recover: DelayMetrics,
    /// Alerts raised, open by status, escalations and re-notifications.
    pub alerts: crate::alerts::AlertCounts,
    /// Alert delivery attempts per channel, and event-to-delivery latency.
    pub alert_deliveries: AlertDeliveryMetrics,
    /// HTTP requests answered.
    pub http: HttpMetrics,
    #[serde(skip)]
    #[schema(ignore)]
    alert_latency: Histogram,
    /// The histogram itself, for the text rendering.
    #[serde(skip)]
    #[schema(ignore)]
    start_delay: Histogram,
    #[serde(skip)]
    #[schema(ignore)]
    detection: Histogram,
    #[serde(skip)]
    #[schema(ignore)]
    time_to_recover: Histogram,
}

/// A histogram's count and sum in the JSON rendering.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DelayMetrics {
    /// Observations.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_seconds: f64,
}

impl DelayMetrics {
    fn of(histogram: &DelayHistogram) -> Self {
        let (count, sum_seconds) = histogram.totals();
        Self { count, sum_seconds }
    }
}

/// Alert deliveries in the JSON rendering.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertDeliveryMetrics {
    /// From a notice's event to its delivery, all channels.
    pub latency: DelayMetrics,
    /// Per channel.
    pub channels: BTreeMap<String, AlertChannelMetrics>,
}

/// One channel's alert deliveries.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertChannelMetrics {
    /// Attempts the receiver took.
    pub sent: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// From the event to the delivery.
    pub latency: DelayMetrics,
}

impl AlertDeliveryMetrics {
    fn of(metrics: &DeliveryMetrics) -> Self {
        use std::sync::atomic::Ordering;
        let channels = ChannelKind::ALL
            .into_iter()
            .map(|channel| {
                let counters = metrics.channel(channel);
                (
                    channel.as_str().to_owned(),
                    AlertChannelMetrics {
                        sent: counters.sent.load(Ordering::Relaxed),
                        failed: counters.failed.load(Ordering::Relaxed),
                        latency: DelayMetrics::of(metrics.channel_latency(channel)),
                    },
                )
            })
            .collect();
        Self {
            latency: DelayMetrics::of(&metrics.latency),
            channels,
        }
    }
}

/// HTTP counters in the JSON rendering.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpMetrics {
    /// All requests answered.
    pub requests: u64,
    /// Requests by status code (JSON object keys are text).
    #[schema(value_type = std::collections::HashMap<String, u64>)]
    pub by_status: BTreeMap<u16, u64>,
}

impl MetricsSnapshot {
    /// Gathers the numbers of every module of `app`.
    pub fn gather(app: &crate::App) -> (Self, BTreeMap<(String, String, u16), u64>) {
        let uptime_seconds = app.started.elapsed().as_secs_f64();
        let workers = app.workers.count();
        let tasks = app.tasks.counts();
        let plugins = app.plugins.totals();
        let plans = app.plans.counts();
        let start_delay = app.plans.start_delay();
        let incidents = app.recovery.counts();
        let recovery: &RecoveryMetrics = app.recovery.metrics();
        let alerts: &DeliveryMetrics = app.alert_outbox.metrics();
        let requests = app.http.snapshot();
        let mut by_status = BTreeMap::new();
        for ((_, _, status), count) in &requests {
            *by_status.entry(*status).or_default() += count;
        }
        let snapshot = Self {
            uptime_seconds,
            workers,
            tasks,
            plugins,
            plans,
            action_start_delay: DelayMetrics::of(start_delay),
            start_delay: start_delay.histogram(),
            incidents,
            incident_detection: DelayMetrics::of(&recovery.detection),
            incident_time_to_recover: DelayMetrics::of(&recovery.time_to_recover),
            detection: recovery.detection.histogram(),
            time_to_recover: recovery.time_to_recover.histogram(),
            alerts: app.alerts.counts(),
            alert_deliveries: AlertDeliveryMetrics::of(alerts),
            alert_latency: alerts.latency.histogram(),
            http: HttpMetrics {
                requests: requests.values().sum(),
                by_status,
            },
        };
        (snapshot, requests)
    }

    /// The OpenMetrics text exposition, which Prometheus scrapes natively.
    pub fn to_prometheus(&self, requests: &BTreeMap<(String, String, u16), u64>) -> String {
        let mut registry = Registry::with_prefix("autoagent");
        let gauge = |value: f64| {
            let gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
            gauge.set(value);
            gauge
        };
        let counter = |value: u64| {
            let counter = Counter::<u64>::default();
            counter.inc_by(value);
            counter
        };
        registry.register(
            "uptime_seconds",
            "Seconds since the host started",
            gauge(self.uptime_seconds),
        );
        registry.register("workers", "Registered workers", gauge(self.workers as f64));
        let task_gauges = Family::<Vec<(String, String)>, Gauge>::default();
        for (status, count) in [
            ("queued", self.tasks.queued),
            ("running", self.tasks.running),
        ] {
            task_gauges
                .get_or_create(&vec![("status".to_owned(), status.to_owned())])
                .set(count as i64);
        }
        registry.register("tasks", "Unfinished tasks by status", task_gauges);
        let task_counters = Family::<Vec<(String, String)>, Counter>::default();
        for (outcome, count) in [
            ("succeeded", self.tasks.succeeded),
            ("failed", self.tasks.failed),
        ] {
            task_counters
                .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
                .inc_by(count);
        }
        registry.register(
            "tasks_finished",
            "Tasks that ended, by outcome",
            task_counters,
        );
        registry.register(
            "tasks_submitted",
            "Tasks submitted",
            counter(self.tasks.total),
        );
        registry.register(
            "plugins_loaded",
            "Plugins serving calls",
            gauge(self.plugins.loaded as f64),
        );
        registry.register(
            "plugins_failed",
            "Plugins whose last load failed",
            gauge(self.plugins.failed as f64),
        );
        registry.register(
            "plugin_calls",
            "Plugin calls made",
            counter(self.plugins.calls),
        );
        registry.register(
            "plugin_call_failures",
            "Plugin calls that failed",
            counter(self.plugins.failures),
        );
        let seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        seconds.inc_by(self.plugins.call_seconds);
        registry.register("plugin_call_seconds", "Time spent in plugin calls", seconds);
        registry.register(
            "plans_created",
            "Action plans created",
            counter(self.plans.total),
        );
        registry.register(
            "plans_executing",
            "Action plans executing now",
            gauge(self.plans.active as f64),
        );
        let plan_counters = Family::<Vec<(String, String)>, Counter>::default();
        for (outcome, count) in [
            ("succeeded", self.plans.succeeded),
            ("failed", self.plans.failed),
        ] {
            plan_counters
                .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
                .inc_by(count);
        }
        registry.register(
            "plans_finished",
            "Action-plan executions that ended, by outcome",
            plan_counters,
        );
        registry.register(
            "plan_action_start_delay_seconds",
            "Time from an action being ready (dependencies done, retry due) to its call starting",
            self.start_delay.clone(),
        );
        registry.register(
            "incidents_opened",
            "Incidents ever opened",
            counter(self.incidents.total),
        );
        registry.register(
            "incidents_open",
            "Incidents open now (active, escalated or suppressed)",
            gauge(self.incidents.active as f64),
        );
        registry.register(
            "incidents_auto_recovered",
            "Incidents a recovery stage repaired",
            counter(self.incidents.auto_recovered),
        );
        registry.register(
            "alerts_raised",
            "Alerts ever raised",
            counter(self.alerts.raised),
        );
        let open_alerts = Family::<Vec<(String, String)>, Gauge>::default();
        for (status, n) in [
            ("firing", self.alerts.firing),
            ("acknowledged", self.alerts.acknowledged),
            ("held", self.alerts.held),
        ] {
            open_alerts
                .get_or_create(&vec![("status".to_owned(), status.to_owned())])
                .set(n as i64);
        }
        registry.register(
            "alerts_open",
            "Alerts open now, by status (held: waiting for recovery, silenced or suppressed)",
            open_alerts,
        );
        registry.register(
            "alert_escalations",
            "Escalation steps taken since the host started",
            counter(self.alerts.escalations),
        );
        registry.register(
            "incident_detection_seconds",
            "Time from a health check's first failing result to its incident opening",
            self.detection.clone(),
        );
        registry.register(
            "incident_time_to_recover_seconds",
            "Time from an incident opening to a recovery stage repairing it",
            self.time_to_recover.clone(),
        );
        let deliveries = Family::<Vec<(String, String)>, Counter>::default();
        for (channel, counts) in &self.alert_deliveries.channels {
            for (outcome, count) in [("sent", counts.sent), ("failed", counts.failed)] {
                deliveries
                    .get_or_create(&vec![
                        ("channel".to_owned(), channel.clone()),
                        ("outcome".to_owned(), outcome.to_owned()),
                    ])
                    .inc_by(count);
            }
        }
        registry.register(
            "alert_deliveries",
            "Alert delivery attempts, by channel and outcome",
            deliveries,
        );
        registry.register(
            "alert_delivery_latency_seconds",
            "Time from an alert's event to its delivery being taken by the receiver",
            self.alert_latency.clone(),
        );
        let http = Family::<Vec<(String, String)>, Counter>::default();
        for ((method, route, status), count) in requests {
            let labels = vec![
                ("method".to_owned(), method.clone()),
                ("route".to_owned(), route.clone()),
                ("status".to_owned(), status.to_string()),
            ];
            http.get_or_create(&labels).inc_by(*count);
        }
        registry.register("http_requests", "HTTP requests answered", http);
        let mut text = String::new();
        encode(&mut text, &registry).expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_per_method_route_and_status() {
        let stats = HttpStats::default();
        for _ in 0..3 {
            stats.record(&Method::GET, Some("/status"), StatusCode::OK);
        }
        stats.record(&Method::POST, Some("/status"), StatusCode::OK);
        stats.record(&Method::GET, Some("/status"), StatusCode::NOT_FOUND);
        stats.record(&Method::GET, None, StatusCode::NOT_FOUND);
        let counts = stats.snapshot();
        let of = |m: &str, r: &str, s: u16| counts.get(&(m.to_owned(), r.to_owned(), s)).copied();
        assert_eq!(of("GET", "/status", 200), Some(3));
        assert_eq!(of("POST", "/status", 200), Some(1));
        assert_eq!(of("GET", "/status", 404), Some(1));
        assert_eq!(of("GET", "unmatched", 404), Some(1));
        assert_eq!(counts.len(), 4);
    }
}
