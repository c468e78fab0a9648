//! Where alerts are kept: an indexed table over status, severity, source,
//! team, the source's key (one alert per incident) and, for retention, when
//! they were resolved.

use std::time::Duration;

use super::alert::{Alert, AlertPage, AlertQuery, AlertStatus};
use crate::engine::{self, Clock, Shutdown};
use crate::store::{Counters, Indexed, IndexedTable, Op, Store, StoreError, time_key};

const ALERTS: &str = "alerts";
const ALERTS_INDEX: &str = "alerts_index";
const ALERTS_INDEX_COUNTS: &str = "alerts_index_counts";
const ALERT_TOTALS: &str = "alert_totals";

/// Bump when [`Alert::index`] changes.
const INDEX_VERSION: i64 = 1;

/// Names of the durable totals.
mod totals {
    pub const RAISED: &str = "raised";
}

mod field {
    pub const STATUS: &str = "status";
    pub const SEVERITY: &str = "severity";
    pub const SOURCE: &str = "source";
    pub const TEAM: &str = "team";
    pub const ORIGIN: &str = "origin";
    pub const FINISHED: &str = "finished";
}

impl Indexed for Alert {
    fn key(&self) -> &str {
        &self.id
    }

    fn index(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (field::STATUS, self.status.as_str().to_owned()),
            (field::SEVERITY, self.severity.as_str().to_owned()),
            (field::SOURCE, self.source_kind.as_str().to_owned()),
            (field::TEAM, self.team.clone()),
            (field::ORIGIN, self.source_key()),
        ];
        if let Some(at) = self.resolved_at.filter(|_| !self.is_open()) {
            pairs.push((field::FINISHED, time_key(at)));
        }
        pairs
    }
}

/// The stored alerts.
#[derive(Clone)]
pub(super) struct AlertRecords {
    table: IndexedTable<Alert>,
    totals: Counters,
}

impl AlertRecords {
    /// Opens the table, indexing it again at another index version.
    pub async fn open(store: &Store) -> Result<Self, StoreError> {
        let records = Self {
            table: IndexedTable::new(store, ALERTS, ALERTS_INDEX, ALERTS_INDEX_COUNTS),
            totals: store.counters(ALERT_TOTALS),
        };
        if records.table.index_version()? != INDEX_VERSION {
            records.table.rebuild_index(INDEX_VERSION).await?;
        }
        Ok(records)
    }

    /// Every open alert.
    pub async fn load_open(&self) -> Result<Vec<Alert>, StoreError> {
        let mut open = Vec::new();
        for status in [
            AlertStatus::Waiting,
            AlertStatus::Silenced,
            AlertStatus::Suppressed,
            AlertStatus::Firing,
            AlertStatus::Acknowledged,
        ] {
            open.extend(
                self.table
                    .load_where(field::STATUS, status.as_str())
                    .await?,
            );
        }
        Ok(open)
    }

    /// One alert.
    pub fn get(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        self.table.get(id)
    }

    /// Whether any alert (open or not) came from the source `key`.
    pub fn has_origin(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.table.count(field::ORIGIN, key)? > 0)
    }

    /// The writes of an alert (`old` as stored, none for a new one).
    pub fn put_ops(&self, old: Option<&Alert>, new: &Alert) -> Vec<Op> {
        let mut ops = self.table.put_ops(old, new);
        if old.is_none() {
            ops.push(self.totals.add_op(totals::RAISED, 1));
        }
        ops
    }

    /// Alerts ever raised.
    pub fn raised(&self) -> Result<u64, StoreError> {
        Ok(self.totals.get(totals::RAISED)?.max(0) as u64)
    }

    /// A page of the alerts matching `query`, limited to `only_team` when
    /// the caller sees one team. Reads the store: call it off the async
    /// workers.
    pub fn page(
        &self,
        query: &AlertQuery,
        only_team: Option<&str>,
    ) -> Result<AlertPage, StoreError> {
        let limit = query.limit.unwrap_or(50).clamp(1, 500);
        let Some(team) = crate::auth::team_filter(only_team, query.team.as_deref()) else {
            return Ok(AlertPage {
                items: Vec::new(),
                limit,
                next_cursor: None,
            });
        };
        let mut filter: Vec<(&'static str, String)> = Vec::new();
        filter.extend(query.status.map(|s| (field::STATUS, s.as_str().to_owned())));
        filter.extend(
            query
                .severity
                .map(|s| (field::SEVERITY, s.as_str().to_owned())),
        );
        filter.extend(query.source.map(|s| (field::SOURCE, s.as_str().to_owned())));
        filter.extend(team.map(|team| (field::TEAM, team)));
        let page = self.table.page_rarest_first(
            filter,
            query.cursor.as_ref().map(|c| c.as_str()),
            limit,
        )?;
        Ok(AlertPage {
            items: page.items,
            limit,
            next_cursor: page.next,
        })
    }
}

/// The retention loop of alerts: one resolved longer ago than `retention`
/// is deleted (its deliveries go by the outbox's own retention).
pub(super) async fn prune_forever(
    records: AlertRecords,
    clock: Clock,
    retention: Duration,
    shutdown: Shutdown,
) {
    engine::prune_table_forever(
        "alerts",
        records.table,
        field::FINISHED,
        clock,
        retention,
        shutdown,
    )
    .await
}
