//! Durable state behind one seam.
//!
//! Domain modules never see redb. Each owns one or more [`Table`]s: typed,
//! named collections of records keyed by strings. A [`Table`] talks to a
//! [`Backend`], the trait a storage engine implements; [`RedbBackend`] is the
//! embedded default, and a server-backed engine (PostgreSQL) can implement the
//! same trait later without touching the domain.
//!
//! Every write goes through [`Backend::write`], which returns only once the
//! write is durable. The redb backend commits many concurrent writes in one
//! transaction (group commit), so durability costs one fsync per batch, not one
//! per request.
//!
//! A storage fault (a full disk, an I/O error) is an episode, not an error
//! per request: the backend refuses writes with [`StoreError::Unavailable`]
//! until it has reopened its file and a probe write succeeded, and
//! [`Store::health`] says so meanwhile (see `redb_backend` and `health`).

mod counters;
mod health;
mod indexed;
mod redb_backend;

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use counters::Counters;
pub use health::{StorageStatus, StoreHealth};
pub use indexed::{Filter, Indexed, IndexedTable, Page, time_key};
pub use redb_backend::RedbBackend;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An insert found its key already taken; nothing was written.
    #[error("{table} already has a record with key {key:?}")]
    AlreadyExists {
        /// Table the insert went to.
        table: &'static str,
        /// The key that was taken.
        key: String,
    },
    /// A stored record could not be decoded into its type.
    #[error("record {key:?} in {table} is corrupt: {message}")]
    Corrupt {
        /// Table of the record.
        table: &'static str,
        /// Key of the record.
        key: String,
        /// What the decoder said.
        message: String,
    },
    /// The storage engine failed. The write may or may not be durable: redb
    /// does not promise a rollback after a failed commit.
    #[error("storage failed: {0}")]
    Backend(String),
    /// The store is faulted (a full disk, an I/O error) and refuses writes,
    /// and reads that fail, until it has reopened its file. A write refused
    /// on arrival wrote nothing; the write whose commit failed may or may
    /// not be durable, as with [`StoreError::Backend`]. Retry later.
    #[error("storage unavailable: {reason}")]
    Unavailable {
        /// The storage error behind the episode.
        reason: String,
        /// Whole seconds until the store next tries to reopen, at least 1.
        retry_after_secs: u64,
    },
}

impl StoreError {
    /// True when the store is faulted, so that the same request may succeed
    /// later: the one question every caller that maps store errors asks, so
    /// that a fault answers the same way whichever module met it.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// One operation in a [`Batch`].
#[derive(Debug, Clone)]
pub enum Op {
    /// Writes `value` under `key`, replacing what was there.
    Put {
        /// Table name.
        table: &'static str,
        /// Record key.
        key: String,
        /// Encoded record.
        value: Vec<u8>,
    },
    /// Writes `value` under `key` only if the key is free; otherwise the whole
    /// batch fails with [`StoreError::AlreadyExists`].
    Insert {
        /// Table name.
        table: &'static str,
        /// Record key.
        key: String,
        /// Encoded record.
        value: Vec<u8>,
    },
    /// Removes `key`; removing a missing key is not an error.
    Delete {
        /// Table name.
        table: &'static str,
        /// Record key.
        key: String,
    },
    /// Adds `delta` to the counter under `key` (a missing counter is 0), in
    /// the transaction: concurrent batches that count the same thing never
    /// lose an update, whatever order they commit in.
    Add {
        /// Table name.
        table: &'static str,
        /// Counter key.
        key: String,
        /// Amount to add; negative to subtract.
        delta: i64,
    },
}

/// Operations applied atomically: all of them become durable, or none.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one operation.
    pub fn push(&mut self, op: Op) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// Adds several operations, in order.
    pub fn extend(&mut self, ops: impl IntoIterator<Item = Op>) -> &mut Self {
        self.ops.extend(ops);
        self
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// True when the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// What a storage engine offers the domain: keyed byte records in named
/// tables, prefix scans, and atomic durable batches.
///
/// Reads are synchronous because they are short and never wait for a disk
/// flush; writes are async because they wait for durability.
pub trait Backend: Send + Sync + 'static {
    /// Reads one record.
    fn get(&self, table: &'static str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Reads every record whose key starts with `prefix`, in key order.
    fn scan(&self, table: &'static str, prefix: &str)
    -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Reads at most `limit` records whose key starts with `prefix` and
    /// comes after `after` (when given), in key order: one page of a scan.
    fn scan_after(
        &self,
        table: &'static str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Counts the records of a table.
    fn count(&self, table: &'static str) -> Result<u64, StoreError>;

    /// Applies a batch atomically and returns once it is durable.
    fn write(
        &self,
        batch: Batch,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>>;

    /// Whether the engine takes writes now, as a watch: its value is the
    /// current health, and it changes when a fault episode begins, when its
    /// error changes, and when it ends. Reading it never touches storage.
    fn health(&self) -> tokio::sync::watch::Receiver<StoreHealth>;
}

/// A handle on the storage engine, cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl Store {
    /// Wraps a backend.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    /// A typed table. The name must be unique to the module that owns it.
    pub fn table<T>(&self, name: &'static str) -> Table<T> {
        Table {
            backend: self.backend.clone(),
            name,
            _record: PhantomData,
        }
    }

    /// An untyped table of raw bytes.
    pub fn raw_table(&self, name: &'static str) -> RawTable {
        RawTable {
            backend: self.backend.clone(),
            name,
        }
    }

    /// Durable counters in a table of their own.
    pub fn counters(&self, name: &'static str) -> Counters {
        Counters::new(self.raw_table(name))
    }

    /// Applies a batch built from several tables' operations atomically.
    pub async fn write(&self, batch: Batch) -> Result<(), StoreError> {
        self.backend.write(batch).await
    }

    /// Whether the store takes writes now, for `/status`. Answered from
    /// memory, so it works while the store is faulted.
    pub fn health(&self) -> StoreHealth {
        self.backend.health().borrow().clone()
    }

    /// A watch that changes whenever [`Store::health`] does, for loops that
    /// should act again once the store is back.
    pub fn health_changes(&self) -> tokio::sync::watch::Receiver<StoreHealth> {
        self.backend.health()
    }
}

/// The table that keeps records set aside by [`Table::load`] because they
/// could not be decoded.
pub const SET_ASIDE: &str = "set_aside";

/// A named collection of `T` records, stored as JSON.
pub struct Table<T> {
    backend: Arc<dyn Backend>,
    name: &'static str,
    _record: PhantomData<fn() -> T>,
}

impl<T> Clone for Table<T> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            name: self.name,
            _record: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Table<T> {
    /// The table's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The same table, its records as bytes.
    pub fn raw(&self) -> RawTable {
        RawTable {
            backend: self.backend.clone(),
            name: self.name,
        }
    }

    /// Reads one record.
    pub fn get(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.backend
            .get(self.name, key)?
            .map(|bytes| self.decode(key, &bytes))
            .transpose()
    }

    /// Reads every record, in key order. A record that does not decode is
    /// left out and logged (see [`Table::load`]).
    pub fn list(&self) -> Result<Vec<T>, StoreError> {
        self.scan("")
    }

    /// Reads every record whose key starts with `prefix`, in key order. A
    /// record that does not decode is left out and logged, so one bad record
    /// never fails a whole list.
    pub fn scan(&self, prefix: &str) -> Result<Vec<T>, StoreError> {
        Ok(self.scan_sorting(prefix)?.0)
    }

    /// Decodes a scan: the good records, and the raw corrupt ones.
    #[allow(clippy::type_complexity)]
    fn scan_sorting(&self, prefix: &str) -> Result<(Vec<T>, Vec<(String, Vec<u8>)>), StoreError> {
        let mut good = Vec::new();
        let mut corrupt = Vec::new();
        for (key, bytes) in self.backend.scan(self.name, prefix)? {
            match self.decode(&key, &bytes) {
                Ok(record) => good.push(record),
                Err(err) => {
                    tracing::error!(table = %self.name, key = %key, error = %err, "stored record does not decode; left out");
                    corrupt.push((key, bytes));
                }
            }
        }
        Ok((good, corrupt))
    }

    /// Reads every record to load a module's state at start. A record that
    /// does not decode is set aside, atomically moved to the
    /// [`SET_ASIDE`] table under `<table>/<key>` with its bytes intact and
    /// named in the log, so that it can neither stop the host from starting
    /// nor fail a later list, and an operator can still inspect it.
    pub async fn load(&self) -> Result<Vec<T>, StoreError> {
        let (good, corrupt) = self.scan_sorting("")?;
        self.set_aside(corrupt).await?;
        Ok(good)
    }

    /// Moves records that do not decode to the [`SET_ASIDE`] table (see
    /// [`Table::load`]).
    pub(crate) async fn set_aside(
        &self,
        corrupt: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        if corrupt.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new();
        for (key, bytes) in corrupt {
            tracing::error!(
                table = %self.name,
                key = %key,
                set_aside = %format!("{SET_ASIDE}/{}/{key}", self.name),
                "a stored record could not be decoded and was set aside"
            );
            batch.push(Op::Put {
                table: SET_ASIDE,
                key: format!("{}/{key}", self.name),
                value: bytes,
            });
            batch.push(self.delete_op(&key));
        }
        self.backend.write(batch).await
    }

    /// Counts the records.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.backend.count(self.name)
    }

    /// Stores a new record; fails if `key` is taken.
    pub async fn insert(&self, key: &str, record: &T) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.push(self.insert_op(key, record));
        self.backend.write(batch).await
    }

    /// Stores a record, replacing any earlier one.
    pub async fn put(&self, key: &str, record: &T) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.push(self.put_op(key, record));
        self.backend.write(batch).await
    }

    /// An insert to put in a [`Batch`].
    pub fn insert_op(&self, key: &str, record: &T) -> Op {
        Op::Insert {
            table: self.name,
            key: key.to_owned(),
            value: encode(record),
        }
    }

    /// A put to put in a [`Batch`].
    pub fn put_op(&self, key: &str, record: &T) -> Op {
        Op::Put {
            table: self.name,
            key: key.to_owned(),
            value: encode(record),
        }
    }

    /// A delete to put in a [`Batch`].
    pub fn delete_op(&self, key: &str) -> Op {
        Op::Delete {
            table: self.name,
            key: key.to_owned(),
        }
    }

    /// Decodes one stored record.
    pub(crate) fn decode(&self, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|err| StoreError::Corrupt {
            table: self.name,
            key: key.to_owned(),
            message: err.to_string(),
        })
    }
}

fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Serializing our own plain data types to JSON cannot fail: they have
    // string keys and no custom serializers that return errors.
    serde_json::to_vec(record).expect("records serialize to JSON")
}

/// A named collection of raw byte values, for data the host does not
/// interpret (a plugin's key-value state).
#[derive(Clone)]
pub struct RawTable {
    backend: Arc<dyn Backend>,
    name: &'static str,
}

impl RawTable {
    /// Reads one value.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.get(self.name, key)
    }

    /// Reads every key and value whose key starts with `prefix`.
    pub fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.backend.scan(self.name, prefix)
    }

    /// Reads one page of a scan: at most `limit` keys and values starting
    /// with `prefix`, after the key `after` when given.
    pub fn scan_after(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.backend.scan_after(self.name, prefix, after, limit)
    }

    /// A put to put in a [`Batch`].
    pub fn put_op(&self, key: &str, value: Vec<u8>) -> Op {
        Op::Put {
            table: self.name,
            key: key.to_owned(),
            value,
        }
    }

    /// A delete to put in a [`Batch`].
    pub fn delete_op(&self, key: &str) -> Op {
        Op::Delete {
            table: self.name,
            key: key.to_owned(),
        }
    }
}
