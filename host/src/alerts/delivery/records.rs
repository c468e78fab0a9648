//! Where deliveries are kept: the `alert_deliveries` table, indexed by
//! alert, status, channel, team and (once final) `finished` for retention.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ChannelKind, Delivery, DeliveryStatus};
use crate::engine::{self, Clock, Shutdown};
use crate::store::{Batch, Indexed, IndexedTable, Op, Store, StoreError, time_key};

const DELIVERIES: &str = "alert_deliveries";
const DELIVERIES_INDEX: &str = "alert_deliveries_index";
const DELIVERIES_INDEX_COUNTS: &str = "alert_deliveries_index_counts";

/// Bump when [`Delivery::index`] changes.
const INDEX_VERSION: i64 = 1;

/// Field names of the delivery index.
mod field {
    pub const ALERT: &str = "alert";
    pub const STATUS: &str = "status";
    pub const CHANNEL: &str = "channel";
    pub const TEAM: &str = "team";
    pub const FINISHED: &str = "finished";
}

impl Indexed for Delivery {
    fn key(&self) -> &str {
        &self.id
    }

    fn index(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (field::ALERT, self.notice.alert_id.clone()),
            (field::STATUS, self.status.as_str().to_owned()),
            (field::CHANNEL, self.channel.as_str().to_owned()),
            (field::TEAM, self.notice.team.clone()),
        ];
        if let Some(at) = self.finished_at.filter(|_| self.status.is_final()) {
            pairs.push((field::FINISHED, time_key(at)));
        }
        pairs
    }
}

/// `GET /alert-deliveries`: filters and paging.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only the deliveries of this alert.
    pub alert_id: Option<String>,
    /// Only deliveries in this status.
    pub status: Option<DeliveryStatus>,
    /// Only deliveries on this channel.
    pub channel: Option<ChannelKind>,
    /// At most this many (1 to 500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// Where the previous page ended (`nextCursor`).
    pub cursor: Option<String>,
}

/// A page of deliveries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPage {
    /// Deliveries in key order, recipients masked.
    pub items: Vec<Delivery>,
    /// The limit applied.
    pub limit: usize,
    /// Where the next page starts; none at the end.
    pub next_cursor: Option<String>,
}

/// The stored deliveries.
#[derive(Clone)]
pub(super) struct DeliveryRecords {
    store: Store,
    deliveries: IndexedTable<Delivery>,
}

impl DeliveryRecords {
    /// Opens the table.
    pub async fn open(store: &Store) -> Result<Self, StoreError> {
        let records = Self {
            store: store.clone(),
            deliveries: IndexedTable::new(
                store,
                DELIVERIES,
                DELIVERIES_INDEX,
                DELIVERIES_INDEX_COUNTS,
            ),
        };
        if records.deliveries.index_version()? != INDEX_VERSION {
            records.deliveries.rebuild_index(INDEX_VERSION).await?;
        }
        Ok(records)
    }

    /// Every delivery not yet final (pending, and sending when the host
    /// stopped during a send).
    pub async fn load_unfinished(&self) -> Result<Vec<Delivery>, StoreError> {
        let mut unfinished = Vec::new();
        for status in [DeliveryStatus::Pending, DeliveryStatus::Sending] {
            unfinished.extend(
                self.deliveries
                    .load_where(field::STATUS, status.as_str())
                    .await?,
            );
        }
        Ok(unfinished)
    }

    /// One delivery.
    pub fn get(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        self.deliveries.get(id)
    }

    /// The operations that store a new delivery (failing the batch if its
    /// key is taken).
    pub fn insert_ops(&self, delivery: &Delivery) -> Vec<Op> {
        self.deliveries.insert_ops(delivery)
    }

    /// The operations that replace `old` with `new`.
    pub fn put_ops(&self, old: &Delivery, new: &Delivery) -> Vec<Op> {
        self.deliveries.put_ops(Some(old), new)
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

    /// Every delivery of one alert (a few per channel and step).
    pub async fn of_alert(&self, alert_id: &str) -> Result<Vec<Delivery>, StoreError> {
        self.deliveries.load_where(field::ALERT, alert_id).await
    }

    /// A page of deliveries matching `query`, limited to `only_team` when
    /// the caller sees one team. Reads the store: call it off the async
    /// workers.
    pub fn page(
        &self,
        query: &DeliveryQuery,
        only_team: Option<&str>,
    ) -> Result<DeliveryPage, StoreError> {
        let limit = query.limit.unwrap_or(50).clamp(1, 500);
        let mut filter: Vec<(&'static str, String)> = Vec::new();
        filter.extend(query.alert_id.clone().map(|a| (field::ALERT, a)));
        filter.extend(query.status.map(|s| (field::STATUS, s.as_str().to_owned())));
        filter.extend(
            query
                .channel
                .map(|c| (field::CHANNEL, c.as_str().to_owned())),
        );
        filter.extend(only_team.map(|t| (field::TEAM, t.to_owned())));
        let page = if filter.is_empty() {
            self.deliveries.page(&[], query.cursor.as_deref(), limit)?
        } else {
            self.deliveries
                .page_rarest_first(filter, query.cursor.as_deref(), limit)?
        };
        Ok(DeliveryPage {
            items: page.items.into_iter().map(Delivery::masked).collect(),
            limit,
            next_cursor: page.next,
        })
    }
}

/// The retention loop of deliveries: one that ended longer ago than
/// `retention` is deleted with its attempts.
pub(super) async fn prune_forever(
    records: DeliveryRecords,
    clock: Clock,
    retention: Duration,
    shutdown: Shutdown,
) {
    engine::prune_table_forever(
        "alert deliveries",
        records.deliveries,
        field::FINISHED,
        clock,
        retention,
        shutdown,
    )
    .await
}
