//! Where plans and teams' templates are kept: indexed plan records, durable
//! totals, paged lists.

use super::{Plan, PlanPage, PlanQuery, PlanStatus, Template};
use crate::store::{Counters, Indexed, IndexedTable, Op, Store, StoreError, Table};

const PLANS: &str = "plans";
const PLANS_INDEX: &str = "plans_index";
const PLANS_INDEX_COUNTS: &str = "plans_index_counts";
const PLAN_TOTALS: &str = "plan_totals";
const TEMPLATES: &str = "plan_templates";

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
}

impl Indexed for Plan {
    fn key(&self) -> &str {
        &self.id
    }

    fn index(&self) -> Vec<(&'static str, String)> {
        vec![
            (field::STATUS, self.status.as_str().to_owned()),
            (field::CATEGORY, self.category.clone()),
            (field::PRIORITY, self.priority.as_str().to_owned()),
            (field::TEMPLATE, self.template_id.clone()),
            (field::TEAM, self.team.clone()),
        ]
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
}

impl PlanRecords {
    /// Opens the tables.
    pub fn open(store: &Store) -> Self {
        Self {
            store: store.clone(),
            table: IndexedTable::new(store, PLANS, PLANS_INDEX, PLANS_INDEX_COUNTS),
            totals: store.counters(PLAN_TOTALS),
            templates: store.table(TEMPLATES),
        }
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

    /// Replaces `old` with `new`, counting an execution that ended.
    pub async fn change(&self, old: &Plan, new: &Plan) -> Result<(), StoreError> {
        let mut batch = crate::store::Batch::new();
        batch.extend(self.change_ops(old, new));
        self.store.write(batch).await
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
