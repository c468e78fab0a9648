//! Plugins' key-value state: small, durable, private to one team's plugin,
//! and capped by the quota its manifest grants.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::{Batch, RawTable, Store, StoreError, Table};

const VALUES: &str = "plugin_kv";
const USAGE: &str = "plugin_kv_usage";

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
pub struct PluginState {
    store: Store,
    values: RawTable,
    usage: Table<u64>,
    /// Writes of one plugin are serialised so that its usage count stays
    /// exact; different plugins write in parallel.
    writers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl PluginState {
    /// State kept in `store`.
    pub fn new(store: &Store) -> Self {
        Self {
            store: store.clone(),
            values: store.raw_table(VALUES),
            usage: store.table(USAGE),
            writers: Mutex::default(),
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

    /// Bytes of keys and values a plugin holds.
    pub fn usage(&self, team: &str, plugin: &str) -> Result<u64, StateError> {
        Ok(self.usage.get(&Self::owner(team, plugin))?.unwrap_or(0))
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
        let writer = self
            .writers
            .lock()
            .expect("state writer map poisoned")
            .entry(owner.clone())
            .or_default()
            .clone();
        let _turn = writer.lock().await;

        let old_size = self
            .values
            .get(&full_key)?
            .map_or(0, |old| (key.len() + old.len()) as u64);
        let new_size = value.as_ref().map_or(0, |v| (key.len() + v.len()) as u64);
        let used = self.usage(team, plugin)?;
        let would_use = used.saturating_sub(old_size) + new_size;
        if new_size > old_size && would_use > quota {
            return Err(StateError::QuotaExceeded { would_use, quota });
        }
        let mut batch = Batch::new();
        batch.push(match value {
            Some(value) => self.values.put_op(&full_key, value),
            None => self.values.delete_op(&full_key),
        });
        batch.push(self.usage.put_op(&owner, &would_use));
        self.store.write(batch).await?;
        Ok(())
    }
}
