//! Where plans and teams' templates are kept: indexed plan records, durable
//! totals, paged lists.

use std::time::Duration;

use super::{Plan, PlanPage, PlanQuery, PlanStatus, Template};
use crate::clock::Timestamp;
use crate::engine::{self, Clock, Shutdown};
use crate::store::{Counters, Indexed, IndexedTable, Op, Store, StoreError, Table, time_key};

const PLANS: &str = "plans";
const PLANS_INDEX: &str = "plans_index";
const PLANS_INDEX_COUNTS: &str = "plans_index_counts";
const PLAN_TOTALS: &str = "plan_totals";
const TEMPLATES: &str = "plan_templates";

/// Bump when [`Plan::index`] changes: a store indexed at another version is
/// indexed again at start.
const INDEX_VERSION: i64 = 1;

/// Names of the durable totals.
mod totals {
    pub const CREATED: &str = "created";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
}

/// Field names of the plan index.
mod field {
    pub const STATUS: &str = "status";
    pub const CATEGORY: &str = "category";
    pub const PRIORITY: &str = "priority";
    pub const TEMPLATE: &str = "template";
    pub const TEAM: &str = "team";
    pub const FINISHED: &str = "finished";
}

impl Indexed for Plan {
    fn key(&self) -> &str {
        &self.id
    }

    fn index(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (field::STATUS, self.status.as_str().to_owned()),
            (field::CATEGORY, self.category.clone()),
            (field::PRIORITY, self.priority.as_str().to_owned()),
            (field::TEMPLATE, self.template_id.clone()),
            (field::TEAM, self.team.clone()),
        ];
        if let Some(finished) = self.finished_at.filter(|_| self.status.is_finished()) {
            pairs.push((field::FINISHED, time_key(finished)));
        }
        pairs
    }
}

/// Totals for `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanCounts {
    /// Plans ever created.
    pub total: u64,
    /// Plans running now.
    pub active: u64,
    /// Plan executions that ended succeeded.
    pub succeeded: u64,
    /// Plan executions that ended failed.
    pub failed: u64,
}

/// The stored plans and templates.
#[derive(Clone)]
pub(super) struct PlanRecords {
    store: Store,
    table: IndexedTable<Plan>,
    totals: Counters,
    templates: Table<Template>,
    /// Plans whose execution ended (succeeded or failed), sent once written.
    ended: tokio::sync::broadcast::Sender<Plan>,
}

/// Plan endings a slow listener may fall behind by before it is told it
/// lagged.
const ENDED_BACKLOG: usize = 1024;

/// Most failed plans [`PlanRecords::failed_since`] returns.
pub(super) const MAX_FAILED_SINCE: usize = 1000;

impl PlanRecords {
    /// Opens the tables, indexing again a store indexed at another version.
    pub async fn open(store: &Store) -> Result<Self, StoreError> {
        let records = Self {
            store: store.clone(),
            table: IndexedTable::new(store, PLANS, PLANS_INDEX, PLANS_INDEX_COUNTS),
            totals: store.counters(PLAN_TOTALS),
            templates: store.table(TEMPLATES),
            ended: tokio::sync::broadcast::channel(ENDED_BACKLOG).0,
        };
        if records.table.index_version()? != INDEX_VERSION {
            let indexed = records.table.rebuild_index(INDEX_VERSION).await?;
            if indexed > 0 {
                tracing::info!(plans = indexed, "plan index built");
            }
        }
        Ok(records)
    }

    /// The teams' templates.
    pub async fn load_templates(&self) -> Result<Vec<Template>, StoreError> {
        self.templates.load().await
    }

    /// Stores a new team template; fails if its id is taken.
    pub async fn insert_template(&self, template: &Template) -> Result<(), StoreError> {
        self.templates.insert(&template.id, template).await
    }

    /// The plans that were running when the host stopped.
    pub async fn load_running(&self) -> Result<Vec<Plan>, StoreError> {
        self.table
            .load_where(field::STATUS, PlanStatus::Running.as_str())
            .await
    }

    /// One plan.
    pub fn get(&self, id: &str) -> Result<Option<Plan>, StoreError> {
        self.table.get(id)
    }

    /// Stores a new plan and counts it.
    pub async fn create(&self, plan: &Plan) -> Result<(), StoreError> {
        let mut batch = crate::store::Batch::new();
        batch.extend(self.table.insert_ops(plan));
        batch.push(self.totals.add_op(totals::CREATED, 1));
        self.store.write(batch).await
    }

    /// Replaces `old` with `new`, counting an execution that ended; once
    /// written, an execution that ended is announced to
    /// [`PlanRecords::subscribe_ended`].
    pub async fn change(&self, old: &Plan, new: &Plan) -> Result<(), StoreError> {
        let mut batch = crate::store::Batch::new();
        batch.extend(self.change_ops(old, new));
        self.store.write(batch).await?;
        let ended = matches!(new.status, PlanStatus::Succeeded | PlanStatus::Failed);
        if ended && old.status != new.status {
            // Nobody listening is fine: the send only fails then.
            let _ = self.ended.send(new.clone());
        }
        Ok(())
    }

    /// Plans whose execution ends from now on, as written.
    pub fn subscribe_ended(&self) -> tokio::sync::broadcast::Receiver<Plan> {
        self.ended.subscribe()
    }

    /// Failed plans created at `since` or later (plan ids grow with their
    /// creation time), oldest first, at most [`MAX_FAILED_SINCE`].
    pub fn failed_since(&self, since: Timestamp) -> Result<Vec<Plan>, StoreError> {
        let filter = vec![(field::STATUS, PlanStatus::Failed.as_str().to_owned())];
        let after = format!("plan_{:013}", since.unix_millis().max(0));
        Ok(self
            .table
            .page(&filter, Some(&after), MAX_FAILED_SINCE)?
            .items)
    }

    fn change_ops(&self, old: &Plan, new: &Plan) -> Vec<Op> {
        let mut ops = self.table.put_ops(Some(old), new);
        if old.status != new.status {
            match new.status {
                PlanStatus::Succeeded => ops.push(self.totals.add_op(totals::SUCCEEDED, 1)),
                PlanStatus::Failed => ops.push(self.totals.add_op(totals::FAILED, 1)),
                _ => {}
            }
        }
        ops
    }

    /// Totals as stored: created, succeeded, failed, and running now.
    pub fn counts(&self) -> Result<PlanCounts, StoreError> {
        let get = |key| Ok::<_, StoreError>(self.totals.get(key)?.max(0) as u64);
        Ok(PlanCounts {
            total: get(totals::CREATED)?,
            active: self
                .table
                .count(field::STATUS, PlanStatus::Running.as_str())?,
            succeeded: get(totals::SUCCEEDED)?,
            failed: get(totals::FAILED)?,
        })
    }

    /// A page of the plans matching `query`, limited to `only_team` when the
    /// caller sees one team. Reads the store: call it off the async workers.
    pub fn page(&self, query: &PlanQuery, only_team: Option<&str>) -> Result<PlanPage, StoreError> {
        let limit = query.limit.unwrap_or(50).clamp(1, 500);
        let Some(team) = crate::auth::team_filter(only_team, query.team.as_deref()) else {
            return Ok(PlanPage {
                items: Vec::new(),
                limit,
                next_cursor: None,
            });
        };
        let mut filter: Vec<(&'static str, String)> = Vec::new();
        filter.extend(query.status.map(|s| (field::STATUS, s.as_str().to_owned())));
        filter.extend(
            query
                .category
                .as_ref()
                .map(|c| (field::CATEGORY, c.to_string())),
        );
        filter.extend(
            query
                .priority
                .map(|p| (field::PRIORITY, p.as_str().to_owned())),
        );
        filter.extend(
            query
                .template_id
                .as_ref()
                .map(|t| (field::TEMPLATE, t.to_string())),
        );
        filter.extend(team.map(|team| (field::TEAM, team)));
        let page = self.table.page_rarest_first(
            filter,
            query.cursor.as_ref().map(|c| c.as_str()),
            limit,
        )?;
        Ok(PlanPage {
            items: page.items,
            limit,
            next_cursor: page.next,
        })
    }
}

/// The retention loop of plans (see [`engine::prune_forever`]): a plan that
/// succeeded, failed or was cancelled longer ago than `retention` is
/// deleted with its attempts.
pub(super) async fn prune_forever(
    records: PlanRecords,
    clock: Clock,
    retention: Duration,
    shutdown: Shutdown,
) {
    engine::prune_table_forever(
        "action plans",
        records.table,
        field::FINISHED,
        clock,
        retention,
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::{Loops, PRUNE_EVERY, RETENTION_DEFAULT};
    use crate::store::RedbBackend;
    use crate::tasks::Priority;

    fn plan(id: &str, status: PlanStatus, finished_at: Option<Timestamp>) -> Plan {
        Plan {
            id: id.to_owned(),
            template_id: "SYSTEM_CHECK".into(),
            name: "System check".into(),
            category: "system".into(),
            priority: Priority::Medium,
            team: "default".into(),
            data: serde_json::json!({}),
            server_id: None,
            checked_on: "here".into(),
            status,
            actions: Vec::new(),
            depends_on: Vec::new(),
            waiting_reason: None,
            error: None,
            created_at: Timestamp::EARLIEST,
            updated_at: Timestamp::EARLIEST,
            started_at: None,
            finished_at,
        }
    }

    /// Waits, in real time, until `id` is gone; it yields rather than
    /// sleeps, so the paused clock does not jump while the writer works.
    async fn until_gone(records: &PlanRecords, id: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while records.get(id).unwrap().is_some() {
            assert!(std::time::Instant::now() < deadline, "{id} was not pruned");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retention_deletes_old_finished_plans_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let backend = RedbBackend::open(&dir.path().join("p.redb")).unwrap();
        let store = Store::new(Arc::new(backend));
        let records = PlanRecords::open(&store).await.unwrap();
        let clock = Clock::new();
        let day = Duration::from_secs(86_400);
        let long_ago = Some(clock.now().minus(day * 40));
        let recently = Some(clock.now().minus(day));
        let stored = [
            plan("plan_old_ok", PlanStatus::Succeeded, long_ago),
            plan("plan_old_failed", PlanStatus::Failed, long_ago),
            plan("plan_old_cancelled", PlanStatus::Cancelled, long_ago),
            plan("plan_recent", PlanStatus::Succeeded, recently),
            // Retried after it failed long ago: running again, so kept.
            plan("plan_retried", PlanStatus::Running, long_ago),
            plan("plan_pending", PlanStatus::Pending, None),
        ];
        for p in &stored {
            records.create(p).await.unwrap();
        }

        let loops = Loops::new();
        let pruning = records.clone();
        loops.spawn("retention", move |shutdown| {
            prune_forever(pruning, clock, RETENTION_DEFAULT, shutdown)
        });
        for gone in ["plan_old_ok", "plan_old_failed", "plan_old_cancelled"] {
            until_gone(&records, gone).await;
        }
        for kept in ["plan_recent", "plan_retried", "plan_pending"] {
            assert!(records.get(kept).unwrap().is_some(), "{kept} was deleted");
        }
        assert_eq!(records.counts().unwrap().total, 6, "the total stays");
        let page = records.page(&PlanQuery::default(), None).unwrap();
        assert_eq!(page.items.len(), 3);

        // The next pass, ten minutes on, takes what has aged since.
        let ages_out = clock
            .now()
            .minus(RETENTION_DEFAULT)
            .plus(Duration::from_secs(60));
        records
            .create(&plan("plan_ages_out", PlanStatus::Failed, Some(ages_out)))
            .await
            .unwrap();
        tokio::time::sleep(PRUNE_EVERY + Duration::from_secs(1)).await;
        until_gone(&records, "plan_ages_out").await;
        assert!(records.get("plan_recent").unwrap().is_some());
        loops.stop(Duration::from_secs(1)).await;
    }
}
