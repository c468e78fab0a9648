//! Where tasks are kept: the `tasks` table with its indexes, the durable
//! totals, paged lists, and retention.

use std::time::Duration;

use super::{Task, TaskPage, TaskQuery, TaskStatus};
use crate::engine::{self, Clock, Shutdown};
use crate::store::{Counters, Indexed, IndexedTable, Op, Store, StoreError, time_key};

const TASKS: &str = "tasks";
const TASKS_INDEX: &str = "tasks_index";
const TASKS_INDEX_COUNTS: &str = "tasks_index_counts";
const TASK_TOTALS: &str = "task_totals";

/// Bump when [`Task::index`] changes: a store indexed at another version is
/// indexed again at start.
const INDEX_VERSION: i64 = 1;

/// The counters behind `/status` and `/metrics`, kept apart from the records
/// so that they stay right when finished tasks are pruned.
mod totals {
    pub const SUBMITTED: &str = "submitted";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
}

/// Field names of the task index.
mod field {
    pub const STATUS: &str = "status";
    pub const TYPE: &str = "type";
    pub const TEAM: &str = "team";
    pub const PRIORITY: &str = "priority";
    pub const WORKER: &str = "worker";
    pub const FINISHED: &str = "finished";
}

impl Indexed for Task {
    fn key(&self) -> &str {
        &self.id
    }

    fn index(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (field::STATUS, self.status.as_str().to_owned()),
            (field::TYPE, self.kind.clone()),
            (field::TEAM, self.team.clone()),
            (field::PRIORITY, self.priority.as_str().to_owned()),
        ];
        if let Some(worker) = &self.worker_id {
            pairs.push((field::WORKER, worker.clone()));
        }
        if let Some(finished) = self.finished_at.filter(|_| self.status.is_terminal()) {
            pairs.push((field::FINISHED, time_key(finished)));
        }
        pairs
    }
}

/// Totals for `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskCounts {
    /// Tasks ever submitted.
    pub total: u64,
    /// Tasks waiting for a worker or a retry.
    pub queued: u64,
    /// Tasks running now.
    pub running: u64,
    /// Tasks that succeeded.
    pub succeeded: u64,
    /// Tasks that ended failed or timed out.
    pub failed: u64,
}

/// The stored tasks.
#[derive(Clone)]
pub(super) struct TaskRecords {
    store: Store,
    table: IndexedTable<Task>,
    totals: Counters,
}

impl TaskRecords {
    /// Opens the tables, indexing a store written before the index existed.
    pub async fn open(store: &Store) -> Result<Self, StoreError> {
        let records = Self {
            store: store.clone(),
            table: IndexedTable::new(store, TASKS, TASKS_INDEX, TASKS_INDEX_COUNTS),
            totals: store.counters(TASK_TOTALS),
        };
        if records.table.index_version()? != INDEX_VERSION {
            let indexed = records.table.rebuild_index(INDEX_VERSION).await?;
            records.rebuild_totals().await?;
            if indexed > 0 {
                tracing::info!(tasks = indexed, "task index built");
            }
        }
        Ok(records)
    }

    /// Sets the totals from the index counts, for a store that had tasks
    /// before it kept totals.
    async fn rebuild_totals(&self) -> Result<(), StoreError> {
        let count = |status: TaskStatus| self.table.count(field::STATUS, status.as_str());
        let submitted: u64 = [
            TaskStatus::Queued,
            TaskStatus::Running,
            TaskStatus::Succeeded,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
            TaskStatus::TimedOut,
        ]
        .into_iter()
        .map(count)
        .sum::<Result<u64, _>>()?;
        let succeeded = count(TaskStatus::Succeeded)?;
        let failed = count(TaskStatus::Failed)? + count(TaskStatus::TimedOut)?;
        let mut batch = crate::store::Batch::new();
        for (key, value) in [
            (totals::SUBMITTED, submitted),
            (totals::SUCCEEDED, succeeded),
            (totals::FAILED, failed),
        ] {
            let delta = value as i64 - self.totals.get(key)?;
            batch.push(self.totals.add_op(key, delta));
        }
        self.store.write(batch).await
    }

    /// Every unfinished task (queued or running), to load the queue.
    pub async fn load_unfinished(&self) -> Result<Vec<Task>, StoreError> {
        let mut tasks = self
            .table
            .load_where(field::STATUS, TaskStatus::Queued.as_str())
            .await?;
        tasks.extend(
            self.table
                .load_where(field::STATUS, TaskStatus::Running.as_str())
                .await?,
        );
        Ok(tasks)
    }

    /// One task.
    pub fn get(&self, id: &str) -> Result<Option<Task>, StoreError> {
        self.table.get(id)
    }

    /// The operations that store a new task and count it.
    pub fn submit_ops(&self, task: &Task) -> Vec<Op> {
        let mut ops = self.table.insert_ops(task);
        ops.push(self.totals.add_op(totals::SUBMITTED, 1));
        ops
    }

    /// The operations that replace `old` with `new`, counting `new`'s end
    /// when it ended.
    pub fn change_ops(&self, old: Option<&Task>, new: &Task) -> Vec<Op> {
        let mut ops = self.table.put_ops(old, new);
        let ended = old.is_none_or(|old| !old.status.is_terminal());
        match new.status {
            TaskStatus::Succeeded if ended => ops.push(self.totals.add_op(totals::SUCCEEDED, 1)),
            TaskStatus::Failed | TaskStatus::TimedOut if ended => {
                ops.push(self.totals.add_op(totals::FAILED, 1));
            }
            _ => {}
        }
        ops
    }

    /// Totals kept durably: submitted, succeeded, failed.
    pub fn totals(&self) -> Result<(u64, u64, u64), StoreError> {
        let get = |key| Ok::<_, StoreError>(self.totals.get(key)?.max(0) as u64);
        Ok((
            get(totals::SUBMITTED)?,
            get(totals::SUCCEEDED)?,
            get(totals::FAILED)?,
        ))
    }

    /// A page of the tasks matching `query`, limited to `team` when the
    /// caller sees one team only. Reads the store: call it off the async
    /// workers.
    pub fn page(&self, query: &TaskQuery, only_team: Option<&str>) -> Result<TaskPage, StoreError> {
        let limit = query.limit.unwrap_or(50).clamp(1, 500);
        let empty = TaskPage {
            items: Vec::new(),
            limit,
            next_cursor: None,
        };
        let Some(team) = crate::auth::team_filter(only_team, query.team.as_deref()) else {
            return Ok(empty);
        };
        let mut filter: Vec<(&'static str, String)> = Vec::new();
        filter.extend(query.status.map(|s| (field::STATUS, s.as_str().to_owned())));
        filter.extend(query.kind.clone().map(|kind| (field::TYPE, kind)));
        filter.extend(team.map(|team| (field::TEAM, team)));
        filter.extend(
            query
                .priority
                .map(|p| (field::PRIORITY, p.as_str().to_owned())),
        );
        filter.extend(query.worker.clone().map(|worker| (field::WORKER, worker)));
        let page = self.table.page_rarest_first(
            filter,
            query.cursor.as_ref().map(|c| c.as_str()),
            limit,
        )?;
        Ok(TaskPage {
            items: page.items,
            limit,
            next_cursor: page.next,
        })
    }
}

/// The retention loop of tasks (see [`engine::prune_forever`]).
pub(super) async fn prune_forever(
    records: TaskRecords,
    clock: Clock,
    retention: Duration,
    shutdown: Shutdown,
) {
    engine::prune_table_forever(
        "tasks",
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
    use crate::clock::Timestamp;
    use crate::engine::{Loops, PRUNE_EVERY, RETENTION_DEFAULT};
    use crate::store::{Batch, RedbBackend};

    fn open_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let backend = RedbBackend::open(&dir.path().join("t.redb")).unwrap();
        (dir, Store::new(Arc::new(backend)))
    }

    fn task(n: u32, status: TaskStatus, finished: Option<Timestamp>) -> Task {
        Task {
            attempts: 1,
            worker_id: Some("w1".into()),
            status,
            finished_at: finished,
            ..super::super::fixtures::task(&format!("task_{n:05}"))
        }
    }

    async fn submit_and_end(records: &TaskRecords, store: &Store, task: &Task) {
        let queued = {
            let mut queued = task.clone();
            queued.status = TaskStatus::Queued;
            queued.finished_at = None;
            queued
        };
        let mut batch = Batch::new();
        batch.extend(records.submit_ops(&queued));
        store.write(batch).await.unwrap();
        let mut batch = Batch::new();
        batch.extend(records.change_ops(Some(&queued), task));
        store.write(batch).await.unwrap();
    }

    /// Waits, in real time, until the task `id` is deleted. It yields rather
    /// than sleeps: a sleep would let the paused clock jump ahead while the
    /// store's writer thread works.
    async fn until_gone(records: &TaskRecords, id: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while records.get(id).unwrap().is_some() {
            assert!(std::time::Instant::now() < deadline, "{id} was not pruned");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retention_deletes_old_finished_tasks_and_keeps_the_totals() {
        let (_dir, store) = open_store();
        let records = TaskRecords::open(&store).await.unwrap();
        let clock = Clock::new();
        let day = Duration::from_secs(86_400);
        let long_ago = clock.now().minus(day * 40);
        let recently = clock.now().minus(day);
        for n in 0..300 {
            let status = if n % 3 == 0 {
                TaskStatus::Failed
            } else {
                TaskStatus::Succeeded
            };
            submit_and_end(&records, &store, &task(n, status, Some(long_ago))).await;
        }
        submit_and_end(
            &records,
            &store,
            &task(300, TaskStatus::Succeeded, Some(recently)),
        )
        .await;
        submit_and_end(&records, &store, &task(301, TaskStatus::Queued, None)).await;
        assert_eq!(records.totals().unwrap(), (302, 201, 100));

        let loops = Loops::new();
        let pruning = records.clone();
        loops.spawn("retention", move |shutdown| {
            prune_forever(pruning, clock, RETENTION_DEFAULT, shutdown)
        });
        until_gone(&records, "task_00299").await;
        assert!(records.get("task_00000").unwrap().is_none());
        assert!(
            records.get("task_00300").unwrap().is_some(),
            "too recent to go"
        );
        assert!(records.get("task_00301").unwrap().is_some(), "unfinished");
        assert_eq!(records.totals().unwrap(), (302, 201, 100), "totals stay");
        let query = TaskQuery {
            status: Some(TaskStatus::Succeeded),
            ..TaskQuery::default()
        };
        let page = records.page(&query, None).unwrap();
        assert_eq!(page.items.len(), 1);

        // Ten minutes on, the next pass takes what has aged since.
        let ages_out = clock
            .now()
            .minus(RETENTION_DEFAULT)
            .plus(Duration::from_secs(60));
        submit_and_end(
            &records,
            &store,
            &task(302, TaskStatus::Cancelled, Some(ages_out)),
        )
        .await;
        tokio::time::sleep(PRUNE_EVERY + Duration::from_secs(1)).await;
        until_gone(&records, "task_00302").await;
        // (Not asserted: under the paused clock a pass still waiting for
        // the store's writer thread would see its grace jump by at once;
        // stopping loops is tested in `engine`.)
        loops.stop(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn a_team_caller_sees_only_its_team_whatever_the_filter() {
        let (_dir, store) = open_store();
        let records = TaskRecords::open(&store).await.unwrap();
        let mut ours = task(1, TaskStatus::Queued, None);
        ours.team = "ops".into();
        let theirs = task(2, TaskStatus::Queued, None);
        submit_and_end(&records, &store, &ours).await;
        submit_and_end(&records, &store, &theirs).await;
        let all = TaskQuery::default();
        let page = records.page(&all, Some("ops")).unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].team, "ops");
        let other = TaskQuery {
            team: Some(crate::names::Name::parse("default").unwrap()),
            ..TaskQuery::default()
        };
        assert!(records.page(&other, Some("ops")).unwrap().items.is_empty());
        assert_eq!(records.page(&other, None).unwrap().items.len(), 1);
    }
}
