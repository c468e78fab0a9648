//! Where health checks, incidents and restart budgets are kept.

use std::time::Duration;

use super::check::HealthCheck;
use super::incident::{Incident, IncidentPage, IncidentQuery, IncidentStatus};
use crate::clock::Timestamp;
use crate::engine::{self, Clock, Shutdown};
use crate::store::{
    Batch, Counters, Indexed, IndexedTable, Op, Store, StoreError, Table, time_key,
};

const CHECKS: &str = "health_checks";
const STAGE_RUNS: &str = "health_check_stage_runs";
const INCIDENTS: &str = "incidents";
const INCIDENTS_INDEX: &str = "incidents_index";
const INCIDENTS_INDEX_COUNTS: &str = "incidents_index_counts";
const INCIDENT_TOTALS: &str = "incident_totals";

/// Bump when [`Incident::index`] changes.
const INDEX_VERSION: i64 = 1;

/// Names of the durable totals.
mod totals {
    pub const OPENED: &str = "opened";
    pub const AUTO_RECOVERED: &str = "auto_recovered";
    pub const RESOLVED: &str = "resolved";
}

/// Field names of the incident index.
mod field {
    pub const STATUS: &str = "status";
    pub const CHECK: &str = "check";
    pub const SEVERITY: &str = "severity";
    pub const TEAM: &str = "team";
    pub const FINISHED: &str = "finished";
}

impl Indexed for Incident {
    fn key(&self) -> &str {
        &self.id
    }

    fn index(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (field::STATUS, self.status.as_str().to_owned()),
            (field::CHECK, self.check_id.clone()),
            (field::SEVERITY, self.severity.as_str().to_owned()),
            (field::TEAM, self.team.clone()),
        ];
        if let Some(at) = self.resolved_at.filter(|_| !self.status.is_open()) {
            pairs.push((field::FINISHED, time_key(at)));
        }
        pairs
    }
}

/// When recovery stages of one check ran, within its budget's window: kept
/// so that a restart of the host does not refill a spent budget.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct StageRuns {
    pub check_id: String,
    pub runs: Vec<Timestamp>,
}

/// Totals for `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentCounts {
    /// Incidents ever opened.
    pub total: u64,
    /// Incidents open now (active, escalated or suppressed).
    pub active: u64,
    /// Incidents a recovery stage repaired.
    pub auto_recovered: u64,
    /// Incidents resolved, by any means.
    pub resolved: u64,
}

/// The stored checks, incidents and budgets.
#[derive(Clone)]
pub(super) struct RecoveryRecords {
    store: Store,
    checks: Table<HealthCheck>,
    stage_runs: Table<StageRuns>,
    incidents: IndexedTable<Incident>,
    totals: Counters,
}

impl RecoveryRecords {
    /// Opens the tables.
    pub async fn open(store: &Store) -> Result<Self, StoreError> {
        let records = Self {
            store: store.clone(),
            checks: store.table(CHECKS),
            stage_runs: store.table(STAGE_RUNS),
            incidents: IndexedTable::new(store, INCIDENTS, INCIDENTS_INDEX, INCIDENTS_INDEX_COUNTS),
            totals: store.counters(INCIDENT_TOTALS),
        };
        if records.incidents.index_version()? != INDEX_VERSION {
            records.incidents.rebuild_index(INDEX_VERSION).await?;
        }
        Ok(records)
    }

    /// Every check.
    pub async fn load_checks(&self) -> Result<Vec<HealthCheck>, StoreError> {
        self.checks.load().await
    }

    /// The stage runs counted against each check's budget.
    pub async fn load_stage_runs(&self) -> Result<Vec<StageRuns>, StoreError> {
        self.stage_runs.load().await
    }

    /// Every open incident.
    pub async fn load_open(&self) -> Result<Vec<Incident>, StoreError> {
        let mut open = Vec::new();
        for status in [
            IncidentStatus::Active,
            IncidentStatus::Escalated,
            IncidentStatus::Suppressed,
        ] {
            open.extend(
                self.incidents
                    .load_where(field::STATUS, status.as_str())
                    .await?,
            );
        }
        Ok(open)
    }

    /// Writes a check (new or changed).
    pub fn put_check_op(&self, check: &HealthCheck) -> Op {
        self.checks.put_op(&check.id, check)
    }

    /// Deletes a check and its budget.
    pub fn delete_check_ops(&self, id: &str) -> [Op; 2] {
        [self.checks.delete_op(id), self.stage_runs.delete_op(id)]
    }

    /// Writes the stage runs counted against a check's budget.
    pub fn put_stage_runs_op(&self, check_id: &str, runs: Vec<Timestamp>) -> Op {
        let record = StageRuns {
            check_id: check_id.to_owned(),
            runs,
        };
        self.stage_runs.put_op(check_id, &record)
    }

    /// One incident.
    pub fn get(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        self.incidents.get(id)
    }

    /// Writes an incident (`old` is what is stored, none for a new one),
    /// counting an opening, a resolution, an automatic recovery.
    pub fn put_incident_ops(&self, old: Option<&Incident>, new: &Incident) -> Vec<Op> {
        let mut ops = self.incidents.put_ops(old, new);
        if old.is_none() {
            ops.push(self.totals.add_op(totals::OPENED, 1));
        }
        let was_open = old.is_none_or(|o| o.status.is_open());
        if was_open && !new.status.is_open() {
            ops.push(self.totals.add_op(totals::RESOLVED, 1));
            if new.auto_recovered {
                ops.push(self.totals.add_op(totals::AUTO_RECOVERED, 1));
            }
        }
        ops
    }

    /// Writes `ops` as one batch.
    pub async fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new();
        batch.extend(ops);
        self.store.write(batch).await
    }

    /// The totals as stored.
    pub fn counts(&self) -> Result<IncidentCounts, StoreError> {
        let get = |key| Ok::<_, StoreError>(self.totals.get(key)?.max(0) as u64);
        let open = |status: IncidentStatus| self.incidents.count(field::STATUS, status.as_str());
        Ok(IncidentCounts {
            total: get(totals::OPENED)?,
            active: open(IncidentStatus::Active)?
                + open(IncidentStatus::Escalated)?
                + open(IncidentStatus::Suppressed)?,
            auto_recovered: get(totals::AUTO_RECOVERED)?,
            resolved: get(totals::RESOLVED)?,
        })
    }

    /// A page of the incidents matching `query`, limited to `only_team`
    /// when the caller sees one team. Reads the store: call it off the async
    /// workers.
    pub fn page(
        &self,
        query: &IncidentQuery,
        only_team: Option<&str>,
    ) -> Result<IncidentPage, StoreError> {
        let limit = query.limit.unwrap_or(50).clamp(1, 500);
        let Some(team) = crate::auth::team_filter(only_team, query.team.as_deref()) else {
            return Ok(IncidentPage {
                items: Vec::new(),
                limit,
                next_cursor: None,
            });
        };
        let mut filter: Vec<(&'static str, String)> = Vec::new();
        filter.extend(query.status.map(|s| (field::STATUS, s.as_str().to_owned())));
        filter.extend(
            query
                .check_id
                .as_ref()
                .map(|c| (field::CHECK, c.to_string())),
        );
        filter.extend(
            query
                .severity
                .map(|s| (field::SEVERITY, s.as_str().to_owned())),
        );
        filter.extend(team.map(|team| (field::TEAM, team)));
        let page = self.incidents.page_rarest_first(
            filter,
            query.cursor.as_ref().map(|c| c.as_str()),
            limit,
        )?;
        Ok(IncidentPage {
            items: page.items,
            limit,
            next_cursor: page.next,
        })
    }
}

/// The retention loop of incidents: one resolved longer ago than
/// `retention` is deleted with its timeline.
pub(super) async fn prune_forever(
    records: RecoveryRecords,
    clock: Clock,
    retention: Duration,
    shutdown: Shutdown,
) {
    engine::prune_table_forever(
        "incidents",
        records.incidents,
        field::FINISHED,
        clock,
        retention,
        shutdown,
    )
    .await
}
