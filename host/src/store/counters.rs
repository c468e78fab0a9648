//! Durable counters: totals that stay right when the records they count are
//! pruned.

use super::{Op, RawTable, StoreError};

/// A table of named `i64` counters, changed only by [`Op::Add`] in the
/// batch that makes the change they count, so a count and its cause become
/// durable together.
#[derive(Clone)]
pub struct Counters {
    table: RawTable,
}

impl Counters {
    pub(super) fn new(table: RawTable) -> Self {
        Self { table }
    }

    /// The counter's value (0 if it was never added to).
    pub fn get(&self, key: &str) -> Result<i64, StoreError> {
        Ok(self
            .table
            .get(key)?
            .map_or(0, |bytes| decode_counter(&bytes)))
    }

    /// Adds `delta` to the counter, as part of a batch.
    pub fn add_op(&self, key: &str, delta: i64) -> Op {
        Op::Add {
            table: self.table.name,
            key: key.to_owned(),
            delta,
        }
    }

    /// Every counter whose key starts with `prefix`, with its value.
    pub fn scan(&self, prefix: &str) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(self
            .table
            .scan(prefix)?
            .into_iter()
            .map(|(key, bytes)| (key, decode_counter(&bytes)))
            .collect())
    }

    /// Removes a counter, as part of a batch.
    pub fn delete_op(&self, key: &str) -> Op {
        self.table.delete_op(key)
    }
}

/// Reads a counter as [`Op::Add`] writes it: eight bytes, little-endian. A
/// value of another length (never written by us) reads as 0.
pub(super) fn decode_counter(bytes: &[u8]) -> i64 {
    bytes.try_into().map_or(0, i64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::store::{Batch, RedbBackend, Store};

    #[tokio::test]
    async fn concurrent_additions_are_never_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Arc::new(
            RedbBackend::open(&dir.path().join("c.redb")).unwrap(),
        ));
        let counters = store.counters("totals");
        let writes: Vec<_> = (0..100)
            .map(|n| {
                let (store, counters) = (store.clone(), counters.clone());
                tokio::spawn(async move {
                    let mut batch = Batch::new();
                    batch.push(counters.add_op("done", if n % 10 == 0 { -1 } else { 2 }));
                    store.write(batch).await.unwrap();
                })
            })
            .collect();
        for write in writes {
            write.await.unwrap();
        }
        assert_eq!(counters.get("done").unwrap(), 90 * 2 - 10);
        assert_eq!(counters.get("never").unwrap(), 0);
    }
}
