//! Configuration values from the plugin's manifest.
//!
//! A plugin may read only the keys its manifest lists in
//! `[permissions] config-keys`; their values come from the manifest's
//! `[config]` table.

use crate::PluginError;

/// Returns the value of `key`, `None` if the key is granted but has no value.
///
/// Reading a key the manifest does not grant fails with [`PluginError::Denied`].
pub fn get(key: &str) -> Result<Option<String>, PluginError> {
    crate::backend::config_get(key).map_err(PluginError::Denied)
}
