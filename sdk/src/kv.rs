//! Small persistent key-value state, private to one team's plugin.
//!
//! The manifest grants it with `[permissions] kv-quota-bytes`; without that
//! every call fails with [`KvError::Denied`]. The quota counts the bytes of
//! all keys plus all values the plugin has stored; a write that does not grow
//! the state is always allowed. Keys are 1 to [`MAX_KEY_BYTES`] bytes (others
//! are refused with [`KvError::Denied`]). Each write is durable when it
//! returns. Values are bytes; [`get_json`] and [`set_json`] store any serde
//! type as JSON.

use std::error::Error;
use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::PluginError;

/// Longest key the host accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// Why a state operation did not happen. Nothing was written in any case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The manifest does not grant key-value state.
    Denied(String),
    /// The write would take the plugin past its quota in bytes.
    QuotaExceeded(String),
    /// The host's store failed.
    Storage(String),
    /// A value could not be converted to or from JSON by [`get_json`] or [`set_json`].
    Json(String),
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::Denied(m) => write!(f, "key-value state denied: {m}"),
            KvError::QuotaExceeded(m) => write!(f, "key-value quota exceeded: {m}"),
            KvError::Storage(m) => write!(f, "key-value storage failed: {m}"),
            KvError::Json(m) => write!(f, "key-value JSON: {m}"),
        }
    }
}

impl Error for KvError {}

impl From<KvError> for PluginError {
    /// A refusal (permission or quota) is [`PluginError::Denied`]; anything
    /// else is [`PluginError::Failed`], which a retry may fix.
    fn from(err: KvError) -> Self {
        match err {
            KvError::Denied(_) | KvError::QuotaExceeded(_) => PluginError::Denied(err.to_string()),
            KvError::Storage(_) | KvError::Json(_) => PluginError::Failed(err.to_string()),
        }
    }
}

/// Reads `key`; `None` if it was never written or was deleted.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    crate::backend::kv_get(key)
}

/// Writes `value` under `key`, replacing what was there.
pub fn set(key: &str, value: &[u8]) -> Result<(), KvError> {
    crate::backend::kv_set(key, value)
}

/// Deletes `key`; deleting a missing key is not an error.
pub fn delete(key: &str) -> Result<(), KvError> {
    crate::backend::kv_delete(key)
}

/// Lists the keys that start with `prefix`, in byte order.
pub fn list_keys(prefix: &str) -> Result<Vec<String>, KvError> {
    crate::backend::kv_list_keys(prefix)
}

/// Reads `key` and parses it as JSON into `T`.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, KvError> {
    match get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|err| {
            KvError::Json(format!("value of `{key}` is not the expected JSON: {err}"))
        }),
    }
}

/// Serializes `value` as JSON and writes it under `key`.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), KvError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|err| KvError::Json(format!("cannot serialize the value for `{key}`: {err}")))?;
    set(key, &bytes)
}
