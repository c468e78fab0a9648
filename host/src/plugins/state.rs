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
    usage: Mutex<HashMap<String, u64>>,
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
        self.usage_entry(&mut usage, &owner).map(|used| *used)
    }

    fn usage_entry<'u>(
        &self,
        usage: &'u mut HashMap<String, u64>,
        owner: &str,
    ) -> Result<&'u mut u64, StateError> {
        if !usage.contains_key(owner) {
            let prefix = format!("{owner}/");
            let total = self
                .values
                .scan(&prefix)?
                .iter()
                .map(|(key, value)| (key.len() - prefix.len() + value.len()) as u64)
                .sum();
            usage.insert(owner.to_owned(), total);
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

    async fn write_in_turn(
        &self,
        owner: &str,
        full_key: &str,
        key: &str,
        quota: u64,
        value: Option<Vec<u8>>,
    ) -> Result<(), StateError> {
        let old_size = self
            .values
            .get(full_key)?
            .map_or(0, |old| (key.len() + old.len()) as u64);
        let new_size = value.as_ref().map_or(0, |v| (key.len() + v.len()) as u64);
        {
            let mut usage = self.usage.lock().expect("state usage poisoned");
            let used = self.usage_entry(&mut usage, owner)?;
            let would_use = used.saturating_sub(old_size) + new_size;
            if new_size > old_size && would_use > quota {
                return Err(StateError::QuotaExceeded { would_use, quota });
            }
            *used = would_use;
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
                *used = used.saturating_sub(new_size) + old_size;
            }
            return Err(err.into());
        }
        Ok(())
    }
}
