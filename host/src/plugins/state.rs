//! Plugins' key-value state: small, durable, private to one team's plugin,
//! and capped by the quota its manifest grants.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::{Batch, RawTable, Store, StoreError};

const VALUES: &str = "plugin_kv";

/// Longest key a plugin may use, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// Why a state operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The manifest grants no key-value state.
    #[error("key-value state is not granted to this plugin")]
    Denied,
    /// The key is empty or too long.
    #[error("key must be 1 to {MAX_KEY_BYTES} bytes")]
    BadKey,
    /// The write would go past the quota.
    #[error("write would use {would_use} bytes, over the quota of {quota} bytes")]
    QuotaExceeded {
        /// Bytes the plugin would hold after the write.
        would_use: u64,
        /// Bytes granted.
        quota: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Key-value state of every plugin, keyed `team/plugin/key`.
///
/// A plugin's usage (bytes of keys and values) is counted in memory, from a
/// scan of its keys the first time it is needed; the stored values are the
/// truth. Writes to one key are serialised so the size they replace is
/// exact; writes to different keys, even of one plugin, run and commit in
/// parallel, each reserving its change of size before it writes.
pub struct PluginState {
    store: Store,
    values: RawTable,
    /// Each plugin's usage, by `team/plugin`, from the first time it was
    /// needed.
    usage: Mutex<HashMap<String, Usage>>,
    key_turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl PluginState {
    /// State kept in `store`.
    pub fn new(store: &Store) -> Self {
        Self {
            store: store.clone(),
            values: store.raw_table(VALUES),
            usage: Mutex::default(),
            key_turns: Mutex::default(),
        }
    }

    fn owner(team: &str, plugin: &str) -> String {
        format!("{team}/{plugin}")
    }

    fn full_key(team: &str, plugin: &str, key: &str) -> Result<String, StateError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(StateError::BadKey);
        }
        Ok(format!("{team}/{plugin}/{key}"))
    }

    /// Reads one value.
    pub fn get(&self, team: &str, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.values.get(&Self::full_key(team, plugin, key)?)?)
    }

    /// Lists keys starting with `prefix`.
    pub fn keys(&self, team: &str, plugin: &str, prefix: &str) -> Result<Vec<String>, StateError> {
        let owner_prefix = format!("{}/", Self::owner(team, plugin));
        let records = self.values.scan(&format!("{owner_prefix}{prefix}"))?;
        Ok(records
            .into_iter()
            .map(|(key, _)| key[owner_prefix.len()..].to_owned())
            .collect())
    }

    /// Bytes of keys and values a plugin holds, writes in flight included.
    pub fn usage(&self, team: &str, plugin: &str) -> Result<u64, StateError> {
        let owner = Self::owner(team, plugin);
        let mut usage = self.usage.lock().expect("state usage poisoned");
        self.usage_entry(&mut usage, &owner)
            .map(|used| used.bytes())
    }

    /// `owner`'s usage, counted from the store the first time.
    fn usage_entry<'u>(
        &self,
        usage: &'u mut HashMap<String, Usage>,
        owner: &str,
    ) -> Result<&'u mut Usage, StateError> {
        if !usage.contains_key(owner) {
            let prefix = format!("{owner}/");
            let total = self
                .values
                .scan(&prefix)?
                .iter()
                .map(|(key, value)| (key.len() - prefix.len() + value.len()) as u64)
                .sum();
            usage.insert(owner.to_owned(), Usage(total));
        }
        Ok(usage.get_mut(owner).expect("inserted above"))
    }

    /// Writes (`Some`) or deletes (`None`) one value durably, keeping the
    /// plugin within `quota` bytes.
    pub async fn write(
        &self,
        team: &str,
        plugin: &str,
        quota: u64,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Result<(), StateError> {
        let full_key = Self::full_key(team, plugin, key)?;
        let owner = Self::owner(team, plugin);
        let turn = self
            .key_turns
            .lock()
            .expect("state key map poisoned")
            .entry(full_key.clone())
            .or_default()
            .clone();
        let outcome = {
            let _turn = turn.lock().await;
            self.write_in_turn(&owner, &full_key, key, quota, value)
                .await
        };
        // Forget the key's turn unless someone else is waiting for it.
        let mut turns = self.key_turns.lock().expect("state key map poisoned");
        if turns
            .get(&full_key)
            .is_some_and(|t| Arc::strong_count(t) == 2)
        {
            turns.remove(&full_key);
        }
        outcome
    }

    /// Writes one value while holding its key's turn, so the value it
    /// replaces cannot change underneath it.
    async fn write_in_turn(
        &self,
        owner: &str,
        full_key: &str,
        key: &str,
        quota: u64,
        value: Option<Vec<u8>>,
    ) -> Result<(), StateError> {
        let old_len = self.values.get(full_key)?.map(|old| old.len());
        let resize = Resize::of(key, old_len, value.as_ref().map(Vec::len));
        {
            let mut usage = self.usage.lock().expect("state usage poisoned");
            self.usage_entry(&mut usage, owner)?
                .reserve(resize, quota)?;
        }
        let mut batch = Batch::new();
        batch.push(match value {
            Some(value) => self.values.put_op(full_key, value),
            None => self.values.delete_op(full_key),
        });
        if let Err(err) = self.store.write(batch).await {
            // Give the reservation back; the value did not change.
            let mut usage = self.usage.lock().expect("state usage poisoned");
            if let Ok(used) = self.usage_entry(&mut usage, owner) {
                used.release(resize);
            }
            return Err(err.into());
        }
        Ok(())
    }
}

/// Bytes of keys and values one plugin holds, writes in flight included.
///
/// Only bookkeeping: the stored values are the truth, scanned once to start
/// the count; each write reserves its change of size here before it goes to
/// the store, and gives it back if the store refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Usage(u64);

/// The change of size one write makes: the bytes of the key and value it
/// replaces (0 for a new key) and of those it leaves (0 for a delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resize {
    old: u64,
    new: u64,
}

impl Resize {
    /// The write of `key` from a value of `old_len` bytes (`None`: absent)
    /// to one of `new_len` bytes (`None`: deleted).
    fn of(key: &str, old_len: Option<usize>, new_len: Option<usize>) -> Self {
        let size = |len: Option<usize>| len.map_or(0, |len| (key.len() + len) as u64);
        Self {
            old: size(old_len),
            new: size(new_len),
        }
    }
}

impl Usage {
    /// The bytes counted.
    fn bytes(self) -> u64 {
        self.0
    }

    /// Counts a write before it is made. A write that grows usage past
    /// `quota` is refused and changes nothing; one that does not grow it is
    /// always allowed, so a plugin over a lowered quota can still shrink.
    fn reserve(&mut self, resize: Resize, quota: u64) -> Result<(), StateError> {
        let would_use = self.0.saturating_sub(resize.old) + resize.new;
        if resize.new > resize.old && would_use > quota {
            return Err(StateError::QuotaExceeded { would_use, quota });
        }
        self.0 = would_use;
        Ok(())
    }

    /// Gives back what [`Usage::reserve`] counted for a write that did not
    /// happen.
    fn release(&mut self, resize: Resize) {
        self.0 = self.0.saturating_sub(resize.new) + resize.old;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RedbBackend;

    const QUOTA: u64 = 100;

    fn quota_of(err: StateError) -> (u64, u64) {
        match err {
            StateError::QuotaExceeded { would_use, quota } => (would_use, quota),
            other => panic!("expected a refusal over the quota, got {other}"),
        }
    }

    #[test]
    fn a_write_counts_its_key_and_value_and_a_delete_gives_them_back() {
        let mut usage = Usage(0);
        usage
            .reserve(Resize::of("k", None, Some(9)), QUOTA)
            .unwrap();
        assert_eq!(usage.bytes(), 10);
        usage
            .reserve(Resize::of("key", None, Some(0)), QUOTA)
            .unwrap();
        assert_eq!(usage.bytes(), 13);
        usage
            .reserve(Resize::of("k", Some(9), None), QUOTA)
            .unwrap();
        assert_eq!(usage.bytes(), 3);
    }

    #[test]
    fn replacing_a_value_counts_only_the_difference() {
        let mut usage = Usage(90);
        // `k` holds 9 bytes (10 with its key); 19 replace them: 90 - 10 + 20.
        usage
            .reserve(Resize::of("k", Some(9), Some(19)), QUOTA)
            .unwrap();
        assert_eq!(usage.bytes(), 100);
        usage
            .reserve(Resize::of("k", Some(19), Some(4)), QUOTA)
            .unwrap();
        assert_eq!(usage.bytes(), 85);
    }

    #[test]
    fn a_write_over_the_quota_is_refused_and_changes_nothing() {
        let mut usage = Usage(90);
        // Exactly the quota is allowed...
        usage
            .reserve(Resize::of("k", None, Some(9)), QUOTA)
            .unwrap();
        assert_eq!(usage.bytes(), 100);
        // ...one byte more is not, whether new or a replacement.
        let err = usage.reserve(Resize::of("j", None, Some(0)), QUOTA);
        assert_eq!(quota_of(err.unwrap_err()), (101, QUOTA));
        let err = usage.reserve(Resize::of("k", Some(9), Some(10)), QUOTA);
        assert_eq!(quota_of(err.unwrap_err()), (101, QUOTA));
        assert_eq!(usage.bytes(), 100);
    }

    #[test]
    fn a_plugin_over_a_lowered_quota_may_still_shrink() {
        let mut usage = Usage(150);
        usage
            .reserve(Resize::of("k", Some(49), Some(9)), QUOTA)
            .unwrap();
        assert_eq!(usage.bytes(), 110);
        // Same size is no growth either.
        usage
            .reserve(Resize::of("k", Some(9), Some(9)), QUOTA)
            .unwrap();
        assert_eq!(usage.bytes(), 110);
        let err = usage.reserve(Resize::of("k", Some(9), Some(10)), QUOTA);
        assert_eq!(quota_of(err.unwrap_err()), (111, QUOTA));
    }

    #[test]
    fn releasing_a_reservation_restores_the_count() {
        for resize in [
            Resize::of("k", None, Some(30)),
            Resize::of("k", Some(30), Some(5)),
            Resize::of("k", Some(5), None),
        ] {
            let mut usage = Usage(40);
            usage.reserve(resize, QUOTA).unwrap();
            assert_ne!(usage.bytes(), 40, "{resize:?} changes the count");
            usage.release(resize);
            assert_eq!(usage.bytes(), 40, "{resize:?} given back");
        }
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let backend = RedbBackend::open(&dir.path().join("test.redb")).unwrap();
        (dir, Store::new(Arc::new(backend)))
    }

    #[tokio::test]
    async fn the_store_holds_what_the_quota_allowed_and_a_restart_counts_the_same() {
        let (_dir, store) = open();
        let state = PluginState::new(&store);
        let write = |key: &'static str, value: Option<&[u8]>| {
            state.write("ops", "tickets", QUOTA, key, value.map(<[u8]>::to_vec))
        };
        write("a", Some(&[1; 49])).await.unwrap();
        write("b", Some(&[2; 39])).await.unwrap();
        assert_eq!(state.usage("ops", "tickets").unwrap(), 90);
        // A replacement counts the difference; one past the quota is
        // refused and leaves the value and the count as they were.
        write("b", Some(&[3; 49])).await.unwrap();
        assert_eq!(state.usage("ops", "tickets").unwrap(), 100);
        let err = write("a", Some(&[4; 50])).await.unwrap_err();
        assert_eq!(quota_of(err), (101, QUOTA));
        let err = write("c", Some(&[])).await.unwrap_err();
        assert_eq!(quota_of(err), (101, QUOTA));
        assert_eq!(state.get("ops", "tickets", "a").unwrap(), Some(vec![1; 49]));
        assert_eq!(state.get("ops", "tickets", "c").unwrap(), None);
        assert_eq!(state.usage("ops", "tickets").unwrap(), 100);
        // Another plugin, even of the same team, has its own count.
        assert_eq!(state.usage("ops", "alerts").unwrap(), 0);
        write("a", None).await.unwrap();
        assert_eq!(state.usage("ops", "tickets").unwrap(), 50);
        assert_eq!(state.keys("ops", "tickets", "").unwrap(), ["b"]);
        // A fresh count from the store agrees with the one kept in memory.
        drop(state);
        let state = PluginState::new(&store);
        assert_eq!(state.usage("ops", "tickets").unwrap(), 50);
    }

    #[tokio::test]
    async fn keys_are_one_to_512_bytes() {
        let (_dir, store) = open();
        let state = PluginState::new(&store);
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        for key in ["", long.as_str()] {
            let err = state
                .write("ops", "tickets", QUOTA, key, Some(vec![1]))
                .await;
            assert!(matches!(err, Err(StateError::BadKey)), "{key:?}");
        }
        let longest = "k".repeat(MAX_KEY_BYTES);
        state
            .write("ops", "tickets", 1024, &longest, Some(vec![1]))
            .await
            .unwrap();
        assert_eq!(state.usage("ops", "tickets").unwrap(), 513);
    }
}
