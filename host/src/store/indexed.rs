//! Records with secondary indexes, listed a page at a time.

use std::collections::HashSet;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Counters, Op, RawTable, Store, StoreError, Table};

/// How many index entries one page may examine at most. Filters that match
/// rarely still cost a bounded time per request: the page then comes back
/// short (even empty) with a cursor to go on from.
pub const PAGE_BUDGET: usize = 20_000;

/// Index entries read from the store at a time.
const CHUNK: usize = 512;

/// A record kept in an [`IndexedTable`].
pub trait Indexed: Serialize + DeserializeOwned {
    /// The record's key; keys order every list.
    fn key(&self) -> &str;

    /// The `(field, value)` pairs the record is listed under. A field the
    /// record lacks is left out; a field appears at most once.
    fn index(&self) -> Vec<(&'static str, String)>;
}

/// Which records a list wants: every pair must match.
pub type Filter = [(&'static str, String)];

/// One page of a list.
#[derive(Debug)]
pub struct Page<T> {
    /// The records, in key order.
    pub items: Vec<T>,
    /// Where the next page starts (the last key looked at), or `None` when
    /// the list has been read to its end.
    pub next: Option<String>,
}

/// A table of records plus, in a second table, one index entry per
/// `(field, value)` pair of each record, and in a third, how many records
/// each pair has.
///
/// An index entry's key is `field/len/value/record-key` (the value's length
/// in bytes makes the prefix of one value never a prefix of another), so the
/// entries of one value are in record-key order. Its value holds all the
/// record's pairs, so further filters are checked on the entry without
/// reading the record. Every change to a record writes its index changes in
/// the same batch.
pub struct IndexedTable<T> {
    store: Store,
    records: Table<T>,
    index: RawTable,
    counts: Counters,
}

impl<T> Clone for IndexedTable<T> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            records: self.records.clone(),
            index: self.index.clone(),
            counts: self.counts.clone(),
        }
    }
}

fn index_prefix(field: &str, value: &str) -> String {
    format!("{field}/{}/{value}/", value.len())
}

/// A time as an index value: zero-padded milliseconds, so that an index's
/// order is the time order (retention walks such an index from its start).
pub fn time_key(at: crate::clock::Timestamp) -> String {
    format!("{:015}", at.unix_millis())
}

impl<T: Indexed> IndexedTable<T> {
    /// The records table `name`, its index `index` and the per-value counts
    /// `counts`. The names must be unique to the module that owns them.
    pub fn new(
        store: &Store,
        name: &'static str,
        index: &'static str,
        counts: &'static str,
    ) -> Self {
        Self {
            store: store.clone(),
            records: store.table(name),
            index: store.raw_table(index),
            counts: store.counters(counts),
        }
    }

    /// Reads one record.
    pub fn get(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.records.get(key)
    }

    /// How many records are listed under `field` = `value`.
    pub fn count(&self, field: &str, value: &str) -> Result<u64, StoreError> {
        Ok(self.counts.get(&index_prefix(field, value))?.max(0) as u64)
    }

    /// The operations that store a new record (failing if its key is taken)
    /// with its index entries.
    pub fn insert_ops(&self, record: &T) -> Vec<Op> {
        let mut ops = vec![self.records.insert_op(record.key(), record)];
        self.index_changes(None, Some(record), &mut ops);
        ops
    }

    /// The operations that replace `old` (the stored version, if any) with
    /// `new`, index entries included.
    pub fn put_ops(&self, old: Option<&T>, new: &T) -> Vec<Op> {
        let mut ops = vec![self.records.put_op(new.key(), new)];
        self.index_changes(old, Some(new), &mut ops);
        ops
    }

    /// The operations that delete `old` and its index entries.
    pub fn delete_ops(&self, old: &T) -> Vec<Op> {
        let mut ops = vec![self.records.delete_op(old.key())];
        self.index_changes(Some(old), None, &mut ops);
        ops
    }

    fn index_changes(&self, old: Option<&T>, new: Option<&T>, ops: &mut Vec<Op>) {
        let old_pairs = old.map(Indexed::index).unwrap_or_default();
        let new_pairs = new.map(Indexed::index).unwrap_or_default();
        let old_set: HashSet<&(&str, String)> = old_pairs.iter().collect();
        let new_set: HashSet<&(&str, String)> = new_pairs.iter().collect();
        for pair in &old_pairs {
            if !new_set.contains(pair) {
                let prefix = index_prefix(pair.0, &pair.1);
                let key = old.map_or("", |old| old.key());
                ops.push(self.index.delete_op(&format!("{prefix}{key}")));
                ops.push(self.counts.add_op(&prefix, -1));
            }
        }
        if let Some(new) = new {
            // Each entry covers every pair, so all are rewritten when any
            // changed; entries of unchanged records are left alone.
            if old_set == new_set {
                return;
            }
            let covering = serde_json::to_vec(&new_pairs).expect("pairs of strings serialize");
            for pair in &new_pairs {
                let prefix = index_prefix(pair.0, &pair.1);
                ops.push(
                    self.index
                        .put_op(&format!("{prefix}{}", new.key()), covering.clone()),
                );
                if !old_set.contains(pair) {
                    ops.push(self.counts.add_op(&prefix, 1));
                }
            }
        }
    }

    /// The operations that delete the record `key` and its entry under
    /// `field` = `value`, for a record that cannot be read whole (missing or
    /// corrupt): its other entries, if any, are left to point at nothing,
    /// which lists skip.
    pub fn delete_unreadable_ops(&self, key: &str, field: &str, value: &str) -> Vec<Op> {
        let prefix = index_prefix(field, value);
        vec![
            self.records.delete_op(key),
            self.index.delete_op(&format!("{prefix}{key}")),
            self.counts.add_op(&prefix, -1),
        ]
    }

    /// Deletes up to `chunk` records whose `field` value sorts before
    /// `cutoff`, oldest first, with all their index entries, in one batch.
    /// Returns how many it deleted; fewer than `chunk` means none older is
    /// left. `field` must hold values of one length (see [`time_key`]).
    pub async fn prune_before(
        &self,
        field: &str,
        cutoff: &str,
        chunk: usize,
    ) -> Result<usize, StoreError> {
        let due: Vec<(String, String)> = self
            .scan_field(field, None, chunk)?
            .into_iter()
            .take_while(|(value, _)| value.as_str() < cutoff)
            .collect();
        let mut batch = super::Batch::new();
        for (value, key) in &due {
            let ops = match self.get(key) {
                Ok(Some(record)) => self.delete_ops(&record),
                // Gone or unreadable: its entry must still go, or every
                // later pass would stop at it.
                Ok(None) | Err(StoreError::Corrupt { .. }) => {
                    self.delete_unreadable_ops(key, field, value)
                }
                Err(err) => return Err(err),
            };
            batch.extend(ops);
        }
        self.store.write(batch).await?;
        Ok(due.len())
    }

    /// One page of the records matching `filter`, in key order, after the
    /// key `after`. The first pair of `filter` picks the index walked (the
    /// caller puts the rarest first, see [`IndexedTable::count`]); the rest
    /// are checked on its entries. At most [`PAGE_BUDGET`] entries are
    /// examined, so a page can be short while `next` says there is more.
    pub fn page(
        &self,
        filter: &Filter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<T>, StoreError> {
        let limit = limit.max(1);
        let Some((lead, rest)) = filter.split_first() else {
            return self.page_unfiltered(after, limit);
        };
        let prefix = index_prefix(lead.0, &lead.1);
        let mut cursor = after.map(|key| format!("{prefix}{key}"));
        let mut keys = Vec::new();
        let mut examined = 0;
        let mut last_seen = None;
        loop {
            let chunk = self.index.scan_after(
                &prefix,
                cursor.as_deref(),
                CHUNK.min(PAGE_BUDGET - examined),
            )?;
            let ended = chunk.len() < CHUNK.min(PAGE_BUDGET - examined);
            for (entry_key, covering) in &chunk {
                examined += 1;
                let record_key = &entry_key[prefix.len()..];
                last_seen = Some(record_key.to_owned());
                if covers(covering, rest) {
                    keys.push(record_key.to_owned());
                    if keys.len() == limit {
                        let items = self.read_all(&keys)?;
                        return Ok(Page {
                            items,
                            next: last_seen,
                        });
                    }
                }
            }
            if ended {
                return Ok(Page {
                    items: self.read_all(&keys)?,
                    next: None,
                });
            }
            if examined >= PAGE_BUDGET {
                return Ok(Page {
                    items: self.read_all(&keys)?,
                    next: last_seen,
                });
            }
            cursor = chunk.last().map(|(key, _)| key.clone());
        }
    }

    /// A page as [`IndexedTable::page`] gives it, with the filter's pairs
    /// ordered rarest first by their counts, so the shortest index is
    /// walked; a pair no record has answers an empty page at once.
    pub fn page_rarest_first(
        &self,
        filter: Vec<(&'static str, String)>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<T>, StoreError> {
        let mut sized = Vec::with_capacity(filter.len());
        for pair in filter {
            sized.push((self.count(pair.0, &pair.1)?, pair));
        }
        sized.sort_by_key(|(count, _)| *count);
        if sized.first().is_some_and(|(count, _)| *count == 0) {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        }
        let filter: Vec<_> = sized.into_iter().map(|(_, pair)| pair).collect();
        self.page(&filter, after, limit)
    }

    fn page_unfiltered(&self, after: Option<&str>, limit: usize) -> Result<Page<T>, StoreError> {
        let rows = self.records.raw().scan_after("", after, limit)?;
        let next = (rows.len() == limit)
            .then(|| rows.last().map(|(key, _)| key.clone()))
            .flatten();
        let items = rows
            .into_iter()
            .filter_map(|(key, bytes)| self.decode_or_log(&key, &bytes))
            .collect();
        Ok(Page { items, next })
    }

    fn read_all(&self, keys: &[String]) -> Result<Vec<T>, StoreError> {
        let mut items = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(bytes) = self.records.raw().get(key)?
                && let Some(record) = self.decode_or_log(key, &bytes)
            {
                items.push(record);
            }
        }
        Ok(items)
    }

    fn decode_or_log(&self, key: &str, bytes: &[u8]) -> Option<T> {
        match self.records.decode(key, bytes) {
            Ok(record) => Some(record),
            Err(err) => {
                tracing::error!(table = %self.records.name(), key = %key, error = %err, "stored record does not decode; left out");
                None
            }
        }
    }

    /// Every record listed under `field` = `value`, to load a module's
    /// state at start. Records that do not decode are set aside (see
    /// [`Table::load`]).
    pub async fn load_where(&self, field: &str, value: &str) -> Result<Vec<T>, StoreError> {
        let prefix = index_prefix(field, value);
        let mut records = Vec::new();
        let mut corrupt = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let chunk = self.index.scan_after(&prefix, cursor.as_deref(), CHUNK)?;
            for (entry_key, _) in &chunk {
                let key = &entry_key[prefix.len()..];
                if let Some(bytes) = self.records.raw().get(key)? {
                    match self.records.decode(key, &bytes) {
                        Ok(record) => records.push(record),
                        Err(_) => corrupt.push((key.to_owned(), bytes)),
                    }
                }
            }
            if chunk.len() < CHUNK {
                break;
            }
            cursor = chunk.last().map(|(key, _)| key.clone());
        }
        self.records.set_aside(corrupt).await?;
        Ok(records)
    }

    /// At most `limit` `(value, record key)` pairs of `field`, in the index's
    /// order, after the pair `after`. For fields whose values have one length
    /// (such as zero-padded times) that order is the values' order, which
    /// makes the index a timeline: retention walks one from its start.
    pub fn scan_field(
        &self,
        field: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let field_prefix = format!("{field}/");
        let after = after.map(|(value, key)| format!("{}{key}", index_prefix(field, value)));
        let rows = self
            .index
            .scan_after(&field_prefix, after.as_deref(), limit)?;
        Ok(rows
            .into_iter()
            .filter_map(|(entry_key, _)| split_entry(&entry_key[field_prefix.len()..]))
            .collect())
    }

    /// True once every record has its index entries: the index was built
    /// with this table's records at `version`.
    pub fn index_version(&self) -> Result<i64, StoreError> {
        self.counts.get(VERSION_KEY)
    }

    /// Builds the index from the records, for a table written before it had
    /// one (or with an older [`Indexed::index`]): drops every entry and count,
    /// then indexes each record, a chunk per batch, and records `version`.
    pub async fn rebuild_index(&self, version: i64) -> Result<u64, StoreError> {
        let store_write = |ops: Vec<Op>| {
            let mut batch = super::Batch::new();
            for op in ops {
                batch.push(op);
            }
            self.store.write(batch)
        };
        loop {
            let stale = self.index.scan_after("", None, CHUNK)?;
            if stale.is_empty() {
                break;
            }
            store_write(
                stale
                    .iter()
                    .map(|(key, _)| self.index.delete_op(key))
                    .collect(),
            )
            .await?;
        }
        for (key, _) in self.counts.scan("")? {
            store_write(vec![self.counts.delete_op(&key)]).await?;
        }
        let mut indexed = 0;
        let mut cursor: Option<String> = None;
        loop {
            let rows = self
                .records
                .raw()
                .scan_after("", cursor.as_deref(), CHUNK)?;
            let mut ops = Vec::new();
            for (key, bytes) in &rows {
                if let Ok(record) = self.records.decode(key, bytes) {
                    self.index_changes(None, Some(&record), &mut ops);
                    indexed += 1;
                }
            }
            store_write(ops).await?;
            if rows.len() < CHUNK {
                break;
            }
            cursor = rows.last().map(|(key, _)| key.clone());
        }
        let current = self.index_version()?;
        store_write(vec![self.counts.add_op(VERSION_KEY, version - current)]).await?;
        Ok(indexed)
    }
}

/// Where the index's version is kept, among the counts (a key no pair can
/// have: pairs' keys hold two slashes).
const VERSION_KEY: &str = "~version";

/// Splits `len/value/record-key` (an entry key without its field).
fn split_entry(rest: &str) -> Option<(String, String)> {
    let (len, tail) = rest.split_once('/')?;
    let len: usize = len.parse().ok()?;
    let value = tail.get(..len)?;
    let key = tail.get(len..)?.strip_prefix('/')?;
    Some((value.to_owned(), key.to_owned()))
}

/// True when the covering value of an entry has every pair of `wanted`.
fn covers(covering: &[u8], wanted: &Filter) -> bool {
    if wanted.is_empty() {
        return true;
    }
    let Ok(pairs) = serde_json::from_slice::<Vec<(String, String)>>(covering) else {
        return false;
    };
    wanted
        .iter()
        .all(|(field, value)| pairs.iter().any(|(f, v)| f == field && v == value))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde::Deserialize;

    use super::*;
    use crate::store::{Batch, RedbBackend};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Job {
        id: String,
        state: String,
        owner: String,
    }

    impl Indexed for Job {
        fn key(&self) -> &str {
            &self.id
        }
        fn index(&self) -> Vec<(&'static str, String)> {
            vec![("state", self.state.clone()), ("owner", self.owner.clone())]
        }
    }

    fn job(n: usize, state: &str, owner: &str) -> Job {
        Job {
            id: format!("job{n:05}"),
            state: state.into(),
            owner: owner.into(),
        }
    }

    fn open() -> (tempfile::TempDir, Store, IndexedTable<Job>) {
        let dir = tempfile::tempdir().unwrap();
        let backend = RedbBackend::open(&dir.path().join("t.redb")).unwrap();
        let store = Store::new(Arc::new(backend));
        let table = IndexedTable::new(&store, "jobs", "jobs_index", "jobs_counts");
        (dir, store, table)
    }

    async fn write(store: &Store, ops: Vec<Op>) {
        let mut batch = Batch::new();
        batch.extend(ops);
        store.write(batch).await.unwrap();
    }

    fn ids(page: &Page<Job>) -> Vec<&str> {
        page.items.iter().map(|job| job.id.as_str()).collect()
    }

    #[tokio::test]
    async fn pages_follow_the_cursor_through_one_index_and_check_the_rest() {
        let (_dir, store, table) = open();
        for n in 0..10 {
            let state = if n % 2 == 0 { "done" } else { "open" };
            let owner = if n < 5 { "a" } else { "b" };
            write(&store, table.insert_ops(&job(n, state, owner))).await;
        }
        let filter = [("state", "done".to_owned())];
        let first = table.page(&filter, None, 3).unwrap();
        assert_eq!(ids(&first), ["job00000", "job00002", "job00004"]);
        let second = table.page(&filter, first.next.as_deref(), 3).unwrap();
        assert_eq!(ids(&second), ["job00006", "job00008"]);
        assert_eq!(second.next, None);

        let both = [("owner", "b".to_owned()), ("state", "done".to_owned())];
        let page = table.page(&both, None, 10).unwrap();
        assert_eq!(ids(&page), ["job00006", "job00008"]);

        let all = table.page(&[], Some("job00007"), 10).unwrap();
        assert_eq!(ids(&all), ["job00008", "job00009"]);
        assert_eq!(table.count("state", "done").unwrap(), 5);
        assert_eq!(table.count("owner", "a").unwrap(), 5);
    }

    #[tokio::test]
    async fn a_change_moves_the_record_between_index_values_and_counts() {
        let (_dir, store, table) = open();
        let before = job(1, "open", "a");
        write(&store, table.insert_ops(&before)).await;
        let after = job(1, "done", "a");
        write(&store, table.put_ops(Some(&before), &after)).await;
        let open_page = table
            .page(&[("state", "open".to_owned())], None, 10)
            .unwrap();
        assert!(open_page.items.is_empty());
        let done_page = table
            .page(&[("state", "done".to_owned())], None, 10)
            .unwrap();
        assert_eq!(done_page.items, std::slice::from_ref(&after));
        assert_eq!(table.count("state", "open").unwrap(), 0);
        assert_eq!(table.count("state", "done").unwrap(), 1);
        // The covering entry of the unchanged pair says the new state too.
        let by_owner = [("owner", "a".to_owned()), ("state", "done".to_owned())];
        assert_eq!(table.page(&by_owner, None, 10).unwrap().items.len(), 1);

        write(&store, table.delete_ops(&after)).await;
        assert!(table.get("job00001").unwrap().is_none());
        assert_eq!(table.count("owner", "a").unwrap(), 0);
        assert!(table.scan_field("owner", None, 10).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_value_that_looks_like_another_prefix_stays_apart() {
        let (_dir, store, table) = open();
        write(&store, table.insert_ops(&job(1, "a", "x"))).await;
        write(&store, table.insert_ops(&job(2, "a/1/b", "x"))).await;
        let page = table.page(&[("state", "a".to_owned())], None, 10).unwrap();
        assert_eq!(ids(&page), ["job00001"]);
        assert_eq!(
            table.scan_field("state", None, 10).unwrap(),
            [
                ("a".to_owned(), "job00001".to_owned()),
                ("a/1/b".to_owned(), "job00002".to_owned())
            ]
        );
    }

    #[tokio::test]
    async fn a_rare_match_costs_a_bounded_page_that_says_where_to_go_on() {
        let (_dir, store, table) = open();
        let many = PAGE_BUDGET + 10;
        let mut ops = Vec::new();
        for n in 0..many {
            let owner = if n == many - 1 { "rare" } else { "common" };
            ops.extend(table.insert_ops(&job(n, "open", owner)));
        }
        write(&store, ops).await;
        let filter = [("state", "open".to_owned()), ("owner", "rare".to_owned())];
        let first = table.page(&filter, None, 10).unwrap();
        assert!(first.items.is_empty(), "the budget ends the page first");
        let next = first.next.expect("a cursor to go on from");
        let second = table.page(&filter, Some(&next), 10).unwrap();
        assert_eq!(ids(&second), [format!("job{:05}", many - 1)]);
        assert_eq!(second.next, None);
    }

    #[tokio::test]
    async fn the_index_is_rebuilt_from_the_records() {
        let (_dir, store, table) = open();
        // Records written without index entries, as by an older version.
        let records: Table<Job> = store.table("jobs");
        for n in 0..3 {
            records
                .put(&job(n, "open", "a").id, &job(n, "open", "a"))
                .await
                .unwrap();
        }
        assert_eq!(table.index_version().unwrap(), 0);
        assert_eq!(table.rebuild_index(1).await.unwrap(), 3);
        assert_eq!(table.index_version().unwrap(), 1);
        assert_eq!(table.count("state", "open").unwrap(), 3);
        let page = table.page(&[("owner", "a".to_owned())], None, 10).unwrap();
        assert_eq!(page.items.len(), 3);
        // Rebuilding again counts nothing twice.
        table.rebuild_index(1).await.unwrap();
        assert_eq!(table.count("state", "open").unwrap(), 3);
    }

    #[test]
    fn entry_keys_split_back_into_value_and_record_key() {
        assert_eq!(
            split_entry("5/a/b/c/job1"),
            Some(("a/b/c".to_owned(), "job1".to_owned()))
        );
        assert_eq!(split_entry("9/short/x"), None);
    }
}
