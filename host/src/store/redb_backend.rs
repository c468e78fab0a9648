//! The embedded storage engine: one redb file, one writer thread.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::oneshot;

use super::{Backend, Batch, Op, StoreError};

/// How many waiting batches one transaction may take. Large enough to
/// amortise an fsync across a burst, small enough to keep latency flat.
const MAX_GROUP: usize = 512;

/// redb's page cache. Its default (1 GiB) lets a host that read through
/// its history once hold that history in memory for good; the hot pages
/// (unfinished tasks, index heads, counters) fit in far less, and the
/// kernel's page cache still holds the file.
const CACHE_BYTES: usize = 32 << 20;

struct PendingWrite {
    batch: Batch,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// [`Backend`] on a single redb file.
///
/// Writes are queued to one thread that commits every batch waiting at that
/// moment in a single durable transaction (group commit). Each batch is
/// still all-or-nothing: a batch whose insert finds its key taken is left out
/// of the transaction and fails alone.
pub struct RedbBackend {
    db: Arc<Database>,
    writes: mpsc::Sender<PendingWrite>,
}

impl RedbBackend {
    /// Opens (or creates) the database file and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Arc::new(
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(path)
                .map_err(backend_error)?,
        );
        let (writes, queue) = mpsc::channel::<PendingWrite>();
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run_writer(&writer_db, &queue))
            .map_err(backend_error)?;
        Ok(Self { db, writes })
    }
}

fn backend_error(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(err.to_string())
}

fn definition(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

fn run_writer(db: &Database, queue: &mpsc::Receiver<PendingWrite>) {
    // The loop ends when every sender is gone, i.e. the backend was dropped.
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let batches: Vec<&Batch> = group.iter().map(|p| &p.batch).collect();
        match commit_group(db, &batches) {
            Ok(outcomes) => {
                for (pending, outcome) in group.into_iter().zip(outcomes) {
                    let _ = pending.done.send(outcome);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, batches = group.len(), "store commit failed");
                for pending in group {
                    let _ = pending.done.send(Err(StoreError::Backend(err.to_string())));
                }
            }
        }
    }
}

/// A write transaction's tables, each opened once for the whole group: a
/// group touches few tables with many operations, and redb re-reads a
/// table's root on every open.
type OpenTables<'txn> = HashMap<&'static str, redb::Table<'txn, &'static str, &'static [u8]>>;

/// Applies every batch that passes its preconditions in one transaction and
/// commits it durably. Returns one outcome per batch.
fn commit_group(
    db: &Database,
    batches: &[&Batch],
) -> Result<Vec<Result<(), StoreError>>, redb::Error> {
    let txn = db.begin_write()?;
    let mut outcomes = Vec::with_capacity(batches.len());
    {
        let mut tables = OpenTables::new();
        for batch in batches {
            let outcome = match first_conflict(&txn, &mut tables, batch)? {
                Some(conflict) => Err(conflict),
                None => {
                    apply(&txn, &mut tables, batch)?;
                    Ok(())
                }
            };
            outcomes.push(outcome);
        }
        // The tables borrow the transaction; they close before it commits.
    }
    txn.commit()?;
    Ok(outcomes)
}

fn table<'t, 'txn>(
    txn: &'txn redb::WriteTransaction,
    tables: &'t mut OpenTables<'txn>,
    name: &'static str,
) -> Result<&'t mut redb::Table<'txn, &'static str, &'static [u8]>, redb::Error> {
    match tables.entry(name) {
        Entry::Occupied(open) => Ok(open.into_mut()),
        Entry::Vacant(slot) => Ok(slot.insert(txn.open_table(definition(name))?)),
    }
}

/// Finds the first insert of a batch whose key is already taken, counting
/// keys inserted earlier in the same batch.
fn first_conflict<'txn>(
    txn: &'txn redb::WriteTransaction,
    tables: &mut OpenTables<'txn>,
    batch: &Batch,
) -> Result<Option<StoreError>, redb::Error> {
    let mut inserted: HashSet<(&str, &str)> = HashSet::new();
    for op in batch.ops() {
        if let Op::Insert {
            table: name, key, ..
        } = op
        {
            let taken = !inserted.insert((name, key))
                || table(txn, tables, name)?.get(key.as_str())?.is_some();
            if taken {
                return Ok(Some(StoreError::AlreadyExists {
                    table: name,
                    key: key.clone(),
                }));
            }
        }
    }
    Ok(None)
}

fn apply<'txn>(
    txn: &'txn redb::WriteTransaction,
    tables: &mut OpenTables<'txn>,
    batch: &Batch,
) -> Result<(), redb::Error> {
    for op in batch.ops() {
        match op {
            Op::Put {
                table: name,
                key,
                value,
            }
            | Op::Insert {
                table: name,
                key,
                value,
            } => {
                table(txn, tables, name)?.insert(key.as_str(), value.as_slice())?;
            }
            Op::Delete { table: name, key } => {
                table(txn, tables, name)?.remove(key.as_str())?;
            }
            Op::Add {
                table: name,
                key,
                delta,
            } => {
                let table = table(txn, tables, name)?;
                let current = table
                    .get(key.as_str())?
                    .map_or(0, |stored| super::counters::decode_counter(stored.value()));
                let next = current.saturating_add(*delta).to_le_bytes();
                table.insert(key.as_str(), next.as_slice())?;
            }
        }
    }
    Ok(())
}

impl Backend for RedbBackend {
    fn get(&self, table: &'static str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(backend_error)?;
        let table = match txn.open_table(definition(table)) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(err) => return Err(backend_error(err)),
        };
        let value = table.get(key).map_err(backend_error)?;
        Ok(value.map(|guard| guard.value().to_vec()))
    }

    fn scan(
        &self,
        table: &'static str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(backend_error)?;
        let table = match txn.open_table(definition(table)) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(err) => return Err(backend_error(err)),
        };
        let mut records = Vec::new();
        for entry in table.range(prefix..).map_err(backend_error)? {
            let (key, value) = entry.map_err(backend_error)?;
            if !key.value().starts_with(prefix) {
                break;
            }
            records.push((key.value().to_owned(), value.value().to_vec()));
        }
        Ok(records)
    }

    fn scan_after(
        &self,
        table: &'static str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(backend_error)?;
        let table = match txn.open_table(definition(table)) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(err) => return Err(backend_error(err)),
        };
        let range = match after {
            Some(after) if after >= prefix => {
                table.range::<&str>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            }
            _ => table.range::<&str>(prefix..),
        }
        .map_err(backend_error)?;
        let mut records = Vec::new();
        for entry in range {
            if records.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(backend_error)?;
            if !key.value().starts_with(prefix) {
                break;
            }
            records.push((key.value().to_owned(), value.value().to_vec()));
        }
        Ok(records)
    }

    fn count(&self, table: &'static str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(backend_error)?;
        match txn.open_table(definition(table)) {
            Ok(table) => table.len().map_err(backend_error),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(err) => Err(backend_error(err)),
        }
    }

    fn write(
        &self,
        batch: Batch,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(());
            }
            let (done, outcome) = oneshot::channel();
            self.writes
                .send(PendingWrite { batch, done })
                .map_err(|_| StoreError::Backend("the store writer has stopped".into()))?;
            outcome
                .await
                .map_err(|_| StoreError::Backend("the store writer has stopped".into()))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let backend = RedbBackend::open(&dir.path().join("test.redb")).unwrap();
        (dir, Store::new(Arc::new(backend)))
    }

    #[tokio::test]
    async fn a_record_that_does_not_decode_is_set_aside_not_fatal() {
        let (_dir, store) = open();
        let table = store.table::<crate::clock::Timestamp>("stamps");
        table
            .put("good", &crate::clock::Timestamp::EARLIEST)
            .await
            .unwrap();
        // What an older build could write: a year the format cannot read.
        let mut batch = Batch::new();
        batch.push(
            store
                .raw_table("stamps")
                .put_op("bad", b"\"-0001-12-31T23:59:00.000Z\"".to_vec()),
        );
        store.write(batch).await.unwrap();
        // A list leaves it out instead of failing whole.
        assert_eq!(table.list().unwrap().len(), 1);
        // Loading sets it aside, bytes intact, and it is gone from the table.
        assert_eq!(table.load().await.unwrap().len(), 1);
        assert!(store.raw_table("stamps").get("bad").unwrap().is_none());
        let kept = store
            .raw_table(crate::store::SET_ASIDE)
            .get("stamps/bad")
            .unwrap();
        assert_eq!(kept.as_deref(), Some(&b"\"-0001-12-31T23:59:00.000Z\""[..]));
    }

    #[tokio::test]
    async fn insert_refuses_a_taken_key_and_writes_nothing() {
        let (_dir, store) = open();
        let table = store.table::<String>("things");
        table.insert("a", &"first".to_owned()).await.unwrap();
        let err = table.insert("a", &"second".to_owned()).await.unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
        assert_eq!(table.get("a").unwrap().as_deref(), Some("first"));
    }

    #[tokio::test]
    async fn a_failed_batch_writes_none_of_its_operations() {
        let (_dir, store) = open();
        let table = store.table::<u32>("numbers");
        table.insert("taken", &1).await.unwrap();
        let mut batch = Batch::new();
        batch.push(table.put_op("fresh", &2));
        batch.push(table.insert_op("taken", &3));
        assert!(store.write(batch).await.is_err());
        assert_eq!(table.get("fresh").unwrap(), None);
        assert_eq!(table.get("taken").unwrap(), Some(1));
    }

    #[tokio::test]
    async fn concurrent_writes_are_grouped_and_all_land() {
        let (_dir, store) = open();
        let table = store.table::<u32>("numbers");
        let writes = (0..200u32).map(|n| {
            let table = table.clone();
            async move { table.put(&format!("{n:04}"), &n).await }
        });
        for outcome in futures_join_all(writes).await {
            outcome.unwrap();
        }
        assert_eq!(table.count().unwrap(), 200);
        assert_eq!(table.scan("001").unwrap(), (10..20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn records_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.redb");
        {
            let store = Store::new(Arc::new(RedbBackend::open(&path).unwrap()));
            store
                .table::<String>("t")
                .put("k", &"v".into())
                .await
                .unwrap();
        }
        // The writer thread holds the database until its channel closes.
        let reopened = loop {
            match RedbBackend::open(&path) {
                Ok(backend) => break backend,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        };
        let store = Store::new(Arc::new(reopened));
        assert_eq!(
            store.table::<String>("t").get("k").unwrap().as_deref(),
            Some("v")
        );
    }

    async fn futures_join_all<F: Future + Send + 'static>(
        futures: impl Iterator<Item = F>,
    ) -> Vec<F::Output>
    where
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = futures.map(tokio::spawn).collect();
        let mut outputs = Vec::new();
        for handle in handles {
            outputs.push(handle.await.unwrap());
        }
        outputs
    }
}
