//! The embedded storage engine: one redb file, one writer thread.
//!
//! Faults: once a commit fails on an I/O error (a full disk), redb refuses
//! every later operation ("Previous I/O error") until the `Database` is
//! dropped and opened again. So the writer thread, which owns all writes,
//! turns such a failure into an episode: it marks the backend faulted (new
//! writes are refused on arrival, queued ones as they come), empties the
//! slot reads take their handle from, waits until the last handle is gone,
//! and reopens the file with backoff. A reopened database that commits a
//! probe write ends the episode. Nothing is lost: a failed commit is not
//! durable and was never acknowledged, and what was acknowledged was
//! committed before the fault.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, mpsc};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::{oneshot, watch};

use super::health::{Episodes, REOPEN_BACKOFF, retry_after_secs};
use super::{Backend, Batch, Op, StoreError, StoreHealth};
use crate::clock::Timestamp;

/// How many waiting batches one transaction may take. Large enough to
/// amortise an fsync across a burst, small enough to keep latency flat.
const MAX_GROUP: usize = 512;

/// redb's page cache. Its default (1 GiB) lets a host that read through
/// its history once hold that history in memory for good; the hot pages
/// (unfinished tasks, index heads, counters) fit in far less, and the
/// kernel's page cache still holds the file.
const CACHE_BYTES: usize = 8 << 20;

/// The table the probe write after a reopen goes to (and is removed from).
const PROBE_TABLE: &str = "store_probe";

/// How much the probe writes. A tiny probe can succeed on a full disk by
/// reusing pages the file already holds, ending an episode that the next
/// real write starts again; a probe of 1 MiB proves there is room for a
/// burst of writes, and the pages it frees are that room.
const PROBE_BYTES: usize = 1 << 20;

struct PendingWrite {
    batch: Batch,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Opens the database: the file in production, a backend that fails on
/// demand in tests.
type Opener = Box<dyn Fn() -> Result<Database, redb::Error> + Send + Sync>;

/// [`Backend`] on a single redb file.
///
/// Writes are queued to one thread that commits every batch waiting at that
/// moment in a single durable transaction (group commit). Each batch is
/// still all-or-nothing: a batch whose insert finds its key taken is left out
/// of the transaction and fails alone. After a storage fault the same thread
/// reopens the file (see the module's documentation).
pub struct RedbBackend {
    shared: Arc<Shared>,
    writes: mpsc::Sender<PendingWrite>,
}

/// What the writer thread and the readers share.
struct Shared {
    open: Opener,
    /// The open database. Reads clone the handle for the length of one
    /// read; the writer empties the slot to reopen, since redb holds a file
    /// lock until the last handle is dropped.
    db: RwLock<Option<Arc<Database>>>,
    /// Set from the first failed commit of an episode until its end: writes
    /// check it before they queue, so they fail fast while faulted.
    faulted: AtomicBool,
    /// The delay before the next reopen attempt, for `Retry-After`.
    retry_delay_ms: AtomicU64,
    episodes: Mutex<Episodes>,
    health: watch::Sender<StoreHealth>,
}

impl RedbBackend {
    /// Opens (or creates) the database file and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_owned();
        Self::with_opener(Box::new(move || {
            Ok(Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&path)?)
        }))
    }

    fn with_opener(open: Opener) -> Result<Self, StoreError> {
        let db = open().map_err(backend_error)?;
        let shared = Arc::new(Shared {
            open,
            db: RwLock::new(Some(Arc::new(db))),
            faulted: AtomicBool::new(false),
            retry_delay_ms: AtomicU64::new(REOPEN_BACKOFF.base.as_millis() as u64),
            episodes: Mutex::default(),
            health: watch::Sender::new(StoreHealth::OK),
        });
        let (writes, queue) = mpsc::channel::<PendingWrite>();
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run_writer(&writer, &queue))
            .map_err(backend_error)?;
        Ok(Self { shared, writes })
    }

    /// The database for one read, or the fault while it is being reopened.
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.shared
            .current()
            .ok_or_else(|| self.shared.unavailable())
    }

    /// A read's error: a storage fault is `Unavailable` like a refused
    /// write (the writer starts the episode on its next commit), anything
    /// else a backend error.
    fn read_error(&self, err: impl Into<redb::Error>) -> StoreError {
        let err = err.into();
        if is_fault(&err) {
            StoreError::Unavailable {
                reason: err.to_string(),
                retry_after_secs: self.shared.retry_after_secs(),
            }
        } else {
            backend_error(err)
        }
    }
}

impl Shared {
    fn current(&self) -> Option<Arc<Database>> {
        self.db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn take(&self) -> Option<Arc<Database>> {
        self.db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn install(&self, db: Arc<Database>) {
        *self.db.write().unwrap_or_else(PoisonError::into_inner) = Some(db);
    }

    fn episodes(&self) -> MutexGuard<'_, Episodes> {
        self.episodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn retry_after_secs(&self) -> u64 {
        retry_after_secs(Duration::from_millis(
            self.retry_delay_ms.load(Ordering::Relaxed),
        ))
    }

    /// The error for a request met by the current episode.
    fn unavailable(&self) -> StoreError {
        let reason = self.episodes().health().last_error;
        StoreError::Unavailable {
            reason: reason.unwrap_or_else(|| "the store is being reopened".into()),
            retry_after_secs: self.retry_after_secs(),
        }
    }

    /// Refuses `writes` writes of the current episode: counts them for the
    /// line that ends it and returns what to answer them with.
    fn refuse(&self, writes: u64) -> StoreError {
        self.episodes().refuse(writes);
        self.unavailable()
    }

    /// Records a storage fault. The first one of an episode is the
    /// episode's one ERROR line; requests refused later log nothing, so a
    /// full disk under load does not flood the log (which may share it).
    fn fail(&self, err: &redb::Error) {
        let error = err.to_string();
        let mut episodes = self.episodes();
        self.faulted.store(true, Ordering::SeqCst);
        if episodes.fail(Timestamp::now(), Instant::now(), error.clone()) {
            tracing::error!(error = %error, "store unavailable; writes are refused until it can be reopened");
        } else {
            tracing::debug!(error = %error, "store still unavailable");
        }
        // Only a change is published: watchers (the scheduler) act on each.
        let health = episodes.health();
        self.health.send_if_modified(|current| {
            let changed = *current != health;
            *current = health;
            changed
        });
    }

    /// Ends the episode once a reopened database took the probe write.
    fn recovered(&self) {
        let mut episodes = self.episodes();
        self.faulted.store(false, Ordering::SeqCst);
        self.retry_delay_ms
            .store(REOPEN_BACKOFF.base.as_millis() as u64, Ordering::Relaxed);
        if let Some(end) = episodes.recover(Instant::now()) {
            tracing::warn!(
                duration_ms = end.duration.as_millis() as u64,
                refused_writes = end.refused,
                "store available again"
            );
        }
        self.health.send_replace(episodes.health());
    }
}

fn backend_error(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(err.to_string())
}

/// Whether a redb error is a storage fault (the medium or the engine
/// failed, not the request), after which redb refuses everything until the
/// database is reopened. A request's own error (a value too large, a table
/// of another type) is not one: it fails that request alone.
fn is_fault(err: &redb::Error) -> bool {
    matches!(
        err,
        redb::Error::Io(_)
            | redb::Error::PreviousIo
            | redb::Error::DatabaseClosed
            | redb::Error::Backend(_)
            | redb::Error::LockPoisoned(_)
            | redb::Error::TransactionPoisoned
    )
}

fn definition(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

fn run_writer(shared: &Shared, queue: &mpsc::Receiver<PendingWrite>) {
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
        // The slot is empty only while `recover` runs, on this thread.
        let committed = match shared.current() {
            Some(db) => commit_group(&db, &batches),
            None => Err(redb::Error::DatabaseClosed),
        };
        match committed {
            Ok(outcomes) => {
                for (pending, outcome) in group.into_iter().zip(outcomes) {
                    let _ = pending.done.send(outcome);
                }
            }
            Err(err) if is_fault(&err) => {
                shared.fail(&err);
                shared.refuse(group.len() as u64);
                for pending in group {
                    let _ = pending.done.send(Err(shared.unavailable()));
                }
                if !recover(shared, queue) {
                    return;
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

/// Reopens the database after a fault, refusing the writes that arrive
/// meanwhile, until a reopened database takes the probe write. Returns
/// false if the backend was dropped first.
fn recover(shared: &Shared, queue: &mpsc::Receiver<PendingWrite>) -> bool {
    let mut attempts = 0;
    // Emptying the slot lets reads fail fast instead of meeting a database
    // that refuses them, and lets the last handle go, which redb needs
    // before the file can be opened again.
    let mut old = shared.take();
    loop {
        attempts += 1;
        let delay = REOPEN_BACKOFF.after(attempts);
        shared
            .retry_delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
        if !refuse_for(shared, queue, delay) {
            return false;
        }
        if let Some(db) = old.take() {
            match Arc::try_unwrap(db) {
                Ok(db) => {
                    if let Err(err) = db.close() {
                        tracing::debug!(error = %err, "closing the faulted database");
                    }
                }
                Err(db) => {
                    // A read in flight still holds it; it ends soon (the
                    // database refuses it), and the next attempt retries.
                    old = Some(db);
                    continue;
                }
            }
        }
        match (shared.open)().and_then(|db| probe(&db).map(|()| db)) {
            Ok(db) => {
                shared.install(Arc::new(db));
                shared.recovered();
                return true;
            }
            // A database whose probe failed is dropped (closed) here.
            Err(err) => shared.fail(&err),
        }
    }
}

/// Refuses every write that arrives within `delay`. Returns false if the
/// backend was dropped.
fn refuse_for(shared: &Shared, queue: &mpsc::Receiver<PendingWrite>, delay: Duration) -> bool {
    let deadline = Instant::now() + delay;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        match queue.recv_timeout(left) {
            Ok(pending) => {
                let _ = pending.done.send(Err(shared.refuse(1)));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => return true,
            Err(mpsc::RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// Proves that a reopened database takes durable writes with room to
/// spare: commits [`PROBE_BYTES`], then removes them, each durably.
fn probe(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(definition(PROBE_TABLE))?
        .insert("probe", vec![0u8; PROBE_BYTES].as_slice())?;
    txn.commit()?;
    let txn = db.begin_write()?;
    txn.open_table(definition(PROBE_TABLE))?.remove("probe")?;
    txn.commit()?;
    Ok(())
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
        let mut adds = PendingAdds::new();
        for batch in batches {
            let outcome = match first_conflict(&txn, &mut tables, &mut adds, batch)? {
                Some(conflict) => Err(conflict),
                None => {
                    apply(&txn, &mut tables, &mut adds, batch)?;
                    Ok(())
                }
            };
            outcomes.push(outcome);
        }
        for (name, keys) in adds {
            for (key, delta) in keys {
                add_now(&txn, &mut tables, name, &key, delta)?;
            }
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
    adds: &mut PendingAdds,
    batch: &Batch,
) -> Result<Option<StoreError>, redb::Error> {
    let mut inserted: HashSet<(&str, &str)> = HashSet::new();
    for op in batch.ops() {
        if let Op::Insert {
            table: name, key, ..
        } = op
        {
            // A pending sum on the key is part of what is there.
            flush_add(txn, tables, adds, name, key)?;
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

/// The counter additions of a group not applied yet, by table and key. A
/// group of many batches (say, many tasks ending) moves each hot counter
/// once, with the sum of its deltas, instead of once per batch. A key's sum
/// is applied before anything else in the group reads or writes that key,
/// and at the end of the group, so the outcome is that of applying every
/// operation in order.
type PendingAdds = HashMap<&'static str, HashMap<String, i64>>;

/// Applies the pending sum of `name`/`key`, if there is one.
fn flush_add<'txn>(
    txn: &'txn redb::WriteTransaction,
    tables: &mut OpenTables<'txn>,
    adds: &mut PendingAdds,
    name: &'static str,
    key: &str,
) -> Result<(), redb::Error> {
    if let Some(delta) = adds.get_mut(name).and_then(|keys| keys.remove(key)) {
        add_now(txn, tables, name, key, delta)?;
    }
    Ok(())
}

fn add_now<'txn>(
    txn: &'txn redb::WriteTransaction,
    tables: &mut OpenTables<'txn>,
    name: &'static str,
    key: &str,
    delta: i64,
) -> Result<(), redb::Error> {
    let table = table(txn, tables, name)?;
    let current = table
        .get(key)?
        .map_or(0, |stored| super::counters::decode_counter(stored.value()));
    let next = current.saturating_add(delta).to_le_bytes();
    table.insert(key, next.as_slice())?;
    Ok(())
}

fn apply<'txn>(
    txn: &'txn redb::WriteTransaction,
    tables: &mut OpenTables<'txn>,
    adds: &mut PendingAdds,
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
                flush_add(txn, tables, adds, name, key)?;
                table(txn, tables, name)?.insert(key.as_str(), value.as_slice())?;
            }
            Op::Delete { table: name, key } => {
                flush_add(txn, tables, adds, name, key)?;
                table(txn, tables, name)?.remove(key.as_str())?;
            }
            Op::Add {
                table: name,
                key,
                delta,
            } => {
                let sum = adds
                    .entry(name)
                    .or_default()
                    .entry(key.clone())
                    .or_default();
                *sum = sum.saturating_add(*delta);
            }
        }
    }
    Ok(())
}

impl Backend for RedbBackend {
    fn get(&self, table: &'static str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        // Held for the whole read: the writer reopens only once it is back.
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| self.read_error(e))?;
        let table = match txn.open_table(definition(table)) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(err) => return Err(self.read_error(err)),
        };
        let value = table.get(key).map_err(|e| self.read_error(e))?;
        Ok(value.map(|guard| guard.value().to_vec()))
    }

    fn scan(
        &self,
        table: &'static str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.scan_after(table, prefix, None, usize::MAX)
    }

    fn scan_after(
        &self,
        table: &'static str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        // Held for the whole read: the writer reopens only once it is back.
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| self.read_error(e))?;
        let table = match txn.open_table(definition(table)) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(err) => return Err(self.read_error(err)),
        };
        let range = match after {
            Some(after) if after >= prefix => {
                table.range::<&str>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            }
            _ => table.range::<&str>(prefix..),
        }
        .map_err(|e| self.read_error(e))?;
        let mut records = Vec::new();
        for entry in range {
            if records.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(|e| self.read_error(e))?;
            if !key.value().starts_with(prefix) {
                break;
            }
            records.push((key.value().to_owned(), value.value().to_vec()));
        }
        Ok(records)
    }

    fn count(&self, table: &'static str) -> Result<u64, StoreError> {
        // Held for the whole read: the writer reopens only once it is back.
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| self.read_error(e))?;
        match txn.open_table(definition(table)) {
            Ok(table) => table.len().map_err(|e| self.read_error(e)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(err) => Err(self.read_error(err)),
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
            // While faulted, refused on arrival: the writer is busy
            // reopening, and a queued write could only wait to be refused.
            if self.shared.faulted.load(Ordering::SeqCst) {
                return Err(self.shared.refuse(1));
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

    fn health(&self) -> watch::Receiver<StoreHealth> {
        self.shared.health.subscribe()
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

    #[test]
    fn additions_in_one_group_are_summed_in_order_with_the_other_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("g.redb")).unwrap();
        let add = |key: &str, delta| Op::Add {
            table: "counts",
            key: key.into(),
            delta,
        };
        let mut first = Batch::new();
        first.push(add("a", 2)).push(add("b", 5));
        let mut second = Batch::new();
        // A put between two additions: the first is overwritten, the
        // second counts from the put.
        second
            .push(add("a", 3))
            .push(Op::Put {
                table: "counts",
                key: "a".into(),
                value: 10i64.to_le_bytes().to_vec(),
            })
            .push(add("a", 1))
            .push(add("b", -1));
        let mut third = Batch::new();
        third.push(Op::Delete {
            table: "counts",
            key: "b".into(),
        });
        third.push(add("b", 7));
        let outcomes = commit_group(&db, &[&first, &second, &third]).unwrap();
        assert!(outcomes.iter().all(Result::is_ok));
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(definition("counts")).unwrap();
        let read = |key: &str| {
            super::super::counters::decode_counter(table.get(key).unwrap().unwrap().value())
        };
        assert_eq!(read("a"), 11);
        assert_eq!(read("b"), 7);
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

    /// A database file in memory whose writes fail while `full` is set, as
    /// on a full disk, and which outlives the databases opened on it.
    #[derive(Debug, Clone, Default)]
    struct FlakyFile {
        bytes: Arc<redb::backends::InMemoryBackend>,
        full: Arc<AtomicBool>,
    }

    impl FlakyFile {
        fn check(&self) -> Result<(), std::io::Error> {
            if self.full.load(Ordering::SeqCst) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "No space left on device",
                ));
            }
            Ok(())
        }
    }

    impl redb::StorageBackend for FlakyFile {
        fn len(&self) -> Result<u64, std::io::Error> {
            redb::StorageBackend::len(&*self.bytes)
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            redb::StorageBackend::read(&*self.bytes, offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.check()?;
            redb::StorageBackend::set_len(&*self.bytes, len)
        }
        fn sync_data(&self) -> Result<(), std::io::Error> {
            self.check()?;
            redb::StorageBackend::sync_data(&*self.bytes)
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            self.check()?;
            redb::StorageBackend::write(&*self.bytes, offset, data)
        }
    }

    fn open_flaky() -> (FlakyFile, Arc<RedbBackend>, Store) {
        let file = FlakyFile::default();
        let opened = file.clone();
        let backend = RedbBackend::with_opener(Box::new(move || {
            Ok(Database::builder().create_with_backend(opened.clone())?)
        }))
        .unwrap();
        let backend = Arc::new(backend);
        (file, backend.clone(), Store::new(backend))
    }

    /// Polls `check` every 10 ms until it holds, for at most 10 s.
    async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check().await {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_full_disk_is_an_episode_that_ends_by_itself_and_loses_nothing() {
        let (file, _backend, store) = open_flaky();
        let table = store.table::<u32>("numbers");
        for n in 0..20u32 {
            table.put(&format!("{n:02}"), &n).await.unwrap();
        }
        assert_eq!(store.health(), StoreHealth::OK);
        let mut changes = store.health_changes();

        file.full.store(true, Ordering::SeqCst);
        let err = table.put("lost", &99).await.unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        let StoreError::Unavailable {
            retry_after_secs, ..
        } = err
        else {
            unreachable!()
        };
        assert!((1..=5).contains(&retry_after_secs));
        let health = store.health();
        assert_eq!(health.status, super::super::StorageStatus::Unavailable);
        assert!(health.since.is_some());
        assert!(health.last_error.is_some_and(|e| !e.is_empty()));
        changes.changed().await.unwrap();
        // Later writes, and reads, are refused while the disk stays full.
        for n in 0..5u32 {
            let err = table.put(&format!("late{n}"), &n).await.unwrap_err();
            assert!(err.is_unavailable(), "{err}");
        }
        eventually("a read is refused too", async || {
            table.get("00").is_err_and(|err| err.is_unavailable())
        })
        .await;

        file.full.store(false, Ordering::SeqCst);
        eventually("the store reopened itself", async || {
            store.health() == StoreHealth::OK
        })
        .await;
        table.put("after", &100).await.unwrap();
        for n in 0..20u32 {
            assert_eq!(table.get(&format!("{n:02}")).unwrap(), Some(n));
        }
        assert_eq!(table.get("after").unwrap(), Some(100));
    }

    #[tokio::test]
    async fn a_read_holding_the_faulted_database_delays_the_reopen_without_blocking_it() {
        let (file, backend, store) = open_flaky();
        let table = store.table::<u32>("numbers");
        table.put("kept", &1).await.unwrap();
        // What a long read in flight holds: a handle on the database.
        let reading = backend.shared.current().expect("open");
        file.full.store(true, Ordering::SeqCst);
        assert!(table.put("lost", &2).await.unwrap_err().is_unavailable());
        file.full.store(false, Ordering::SeqCst);
        // The writer cannot close a database a read holds, so the episode
        // lasts; writes are refused, not queued behind the read.
        eventually("backoff passed several reopen attempts", async || {
            backend.shared.retry_delay_ms.load(Ordering::Relaxed) >= 400
        })
        .await;
        assert_eq!(
            store.health().status,
            super::super::StorageStatus::Unavailable
        );
        assert!(table.put("refused", &3).await.unwrap_err().is_unavailable());
        // Once the read ends, the next attempt reopens.
        drop(reading);
        eventually("the store reopened itself", async || {
            store.health() == StoreHealth::OK
        })
        .await;
        table.put("after", &4).await.unwrap();
        assert_eq!(table.get("kept").unwrap(), Some(1));
    }

    #[test]
    fn only_storage_faults_start_an_episode() {
        let io = || std::io::Error::new(std::io::ErrorKind::StorageFull, "full");
        assert!(is_fault(&redb::Error::Io(io())));
        assert!(is_fault(&redb::Error::PreviousIo));
        assert!(is_fault(&redb::Error::DatabaseClosed));
        assert!(is_fault(&redb::Error::TransactionPoisoned));
        // A request's own mistakes fail that request alone.
        assert!(!is_fault(&redb::Error::ValueTooLarge(1 << 40)));
        assert!(!is_fault(&redb::Error::TableDoesNotExist("t".into())));
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
