//! What is loaded, and finding it: the serving and failed plugins of every
//! team, what operators see of them, and which plugin offers a capability.
//!
//! Only `lifecycle` changes what is loaded; this file only reads it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;

use super::calls::CallStats;
use super::manifest::{Manifest, PluginKind};
use super::residency::CodePages;
use super::runtime::Prepared;
use super::{CORE_TEAM, Plugins};
use crate::clock::Timestamp;
use crate::names::Name;

/// Where a loaded plugin came from.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum PluginSource {
    /// Embedded in the `autoagent` binary.
    Bundled,
    /// Loaded from a folder under the data directory.
    Directory {
        /// The folder.
        path: String,
    },
}

/// One capability a plugin offers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityInfo {
    /// Name workers and steps use.
    pub name: String,
    /// One line for operators.
    pub description: String,
}

/// What operators see of a plugin.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginInfo {
    /// Owning team.
    pub team: String,
    /// Name within the team.
    pub name: String,
    /// Version serving now.
    pub version: String,
    /// Plugin kind.
    pub kind: PluginKind,
    /// One line for operators.
    pub description: String,
    /// `loaded` or `failed`.
    pub state: PluginLoadState,
    /// Why the last load failed, if it did.
    pub last_error: Option<String>,
    /// What a capability plugin offers.
    pub capabilities: Vec<CapabilityInfo>,
    /// The bundled component it runs (`core/<name>`), for a plugin that
    /// brings none of its own; `null` otherwise.
    pub component: Option<String>,
    /// Where it came from.
    pub source: PluginSource,
    /// When the serving version was loaded.
    pub loaded_at: Option<Timestamp>,
    /// SHA-256 of the serving component's bytes.
    pub component_sha256: Option<String>,
    /// Calls made to it since the host started.
    pub calls: u64,
    /// Calls that failed.
    pub failures: u64,
}

/// Whether a plugin is serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginLoadState {
    /// Loaded and serving calls.
    Loaded,
    /// Its last load failed and no version serves.
    Failed,
}

/// `(team, name)`; built only from validated [`Name`]s.
pub(super) type PluginKey = (String, String);

/// The registry key of `team/name`.
pub(super) fn key_of(team: &Name, name: &Name) -> PluginKey {
    (team.to_string(), name.to_string())
}

/// A `(team, name)` as the registry's maps compare it, owned or borrowed:
/// a call finds its plugin from the names it was given without building
/// an owned key (`map.get(&(team, name) as &dyn KeyView)`).
pub(super) trait KeyView {
    /// Team and name.
    fn parts(&self) -> (&str, &str);
}

impl KeyView for PluginKey {
    fn parts(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl KeyView for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn KeyView + 'a> for PluginKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

// Ordered as `PluginKey` (a tuple) is, which `Borrow` requires.
impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyView + '_ {}

impl PartialOrd for dyn KeyView + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn KeyView + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

/// A plugin version ready to serve.
pub(super) struct LoadedPlugin {
    pub(super) manifest: Arc<Manifest>,
    /// The manifest as written, to tell an unchanged folder from a new one.
    pub(super) manifest_text: String,
    pub(super) wasm_sha256: String,
    pub(super) prepared: Prepared,
    pub(super) capabilities: Vec<CapabilityInfo>,
    /// One permit per concurrent call the manifest allows.
    pub(super) slots: Semaphore,
    /// The counters of this plugin's calls (kept across its versions).
    pub(super) stats: Arc<CallStats>,
    /// Its team's share of the guest threads. Held here so that a call
    /// looks up neither (both are shared by every call of the plugin).
    pub(super) share: Arc<Semaphore>,
    /// Its compiled code, handed back to the kernel while it is not called.
    pub(super) code: CodePages,
    pub(super) source: PluginSource,
    pub(super) loaded_at: Timestamp,
}

impl LoadedPlugin {
    /// Whether this version was loaded from exactly these files.
    fn holds(&self, manifest_text: &str, wasm_sha256: &str) -> bool {
        self.manifest_text == manifest_text && self.wasm_sha256 == wasm_sha256
    }

    /// Whether it offers `capability`.
    pub(super) fn offers(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c.name == capability)
    }
}

/// A plugin whose load failed, kept so operators can see why.
pub(super) struct FailedPlugin {
    pub(super) manifest: Option<Arc<Manifest>>,
    pub(super) error: String,
    pub(super) source: PluginSource,
    /// The manifest text and component hash that failed, if they were read:
    /// the same files are not tried again until they change.
    pub(super) content: Option<(String, String)>,
}

impl Plugins {
    /// The version of `key` serving now, if any.
    pub(super) fn serving(&self, key: &dyn KeyView) -> Option<Arc<LoadedPlugin>> {
        self.loaded
            .read()
            .expect("plugin registry poisoned")
            .get(key)
            .cloned()
    }

    /// Whether `key` already serves, or already failed on, these files.
    pub(super) fn serves_or_failed(
        &self,
        key: &PluginKey,
        manifest_text: &str,
        wasm_sha256: &str,
    ) -> bool {
        let serving = self
            .loaded
            .read()
            .expect("plugin registry poisoned")
            .get(key)
            .is_some_and(|plugin| plugin.holds(manifest_text, wasm_sha256));
        let failed = self
            .failed
            .read()
            .expect("plugin registry poisoned")
            .get(key)
            .and_then(|failed| failed.content.as_ref())
            .is_some_and(|(text, sha)| text == manifest_text && sha == wasm_sha256);
        serving || failed
    }

    /// What operators see of a serving plugin.
    pub(super) fn info_of(&self, key: &PluginKey, plugin: &LoadedPlugin) -> PluginInfo {
        let stats = self.stats_of(key);
        let manifest = &plugin.manifest;
        PluginInfo {
            team: manifest.team.clone(),
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            kind: manifest.kind,
            description: manifest.description.clone(),
            state: PluginLoadState::Loaded,
            last_error: None,
            capabilities: plugin.capabilities.clone(),
            component: manifest.component.clone(),
            source: plugin.source.clone(),
            loaded_at: Some(plugin.loaded_at),
            component_sha256: Some(plugin.wasm_sha256.clone()),
            calls: stats.calls(),
            failures: stats.failures(),
        }
    }

    /// What operators see of a plugin that does not serve.
    fn failed_info(&self, key: &PluginKey, failed: &FailedPlugin) -> PluginInfo {
        let stats = self.stats_of(key);
        let manifest = failed.manifest.as_deref();
        PluginInfo {
            team: key.0.clone(),
            name: key.1.clone(),
            version: manifest.map(|m| m.version.clone()).unwrap_or_default(),
            kind: manifest.map_or(PluginKind::Capability, |m| m.kind),
            description: manifest.map(|m| m.description.clone()).unwrap_or_default(),
            state: PluginLoadState::Failed,
            last_error: Some(failed.error.clone()),
            capabilities: Vec::new(),
            component: manifest.and_then(|m| m.component.clone()),
            source: failed.source.clone(),
            loaded_at: None,
            component_sha256: failed.content.as_ref().map(|(_, sha)| sha.clone()),
            calls: stats.calls(),
            failures: stats.failures(),
        }
    }

    /// Every plugin, serving or failed, optionally of one team only.
    pub fn list(&self, team: Option<&str>) -> Vec<PluginInfo> {
        let wanted = |key: &PluginKey| team.is_none_or(|t| key.0 == t);
        let mut infos: BTreeMap<PluginKey, PluginInfo> = BTreeMap::new();
        for (key, failed) in self.failed.read().expect("plugin registry poisoned").iter() {
            if wanted(key) {
                infos.insert(key.clone(), self.failed_info(key, failed));
            }
        }
        for (key, plugin) in self.loaded.read().expect("plugin registry poisoned").iter() {
            if wanted(key) {
                let mut info = self.info_of(key, plugin);
                // A serving plugin whose newer version failed shows both.
                if let Some(previous) = infos.remove(key) {
                    info.last_error = previous.last_error;
                }
                infos.insert(key.clone(), info);
            }
        }
        infos.into_values().collect()
    }

    /// Names of a team's plugins, serving or failed.
    pub fn names_of(&self, team: &Name) -> Vec<Name> {
        self.list(Some(team))
            .into_iter()
            .filter_map(|info| Name::parse(&info.name).ok())
            .collect()
    }

    /// One plugin of a team.
    pub fn get(&self, team: &Name, name: &Name) -> Option<PluginInfo> {
        self.list(Some(team))
            .into_iter()
            .find(|info| info.name == name.as_str())
    }

    /// The plugin called `name` of `kind` that `team` uses: its own, else
    /// the bundled `core` team's. Returns the owning team and the name.
    pub fn resolve_plugin(&self, team: &str, name: &str, kind: PluginKind) -> Option<(Name, Name)> {
        let loaded = self.loaded.read().expect("plugin registry poisoned");
        [team, CORE_TEAM].into_iter().find_map(|owner| {
            let plugin = loaded.get(&(owner.to_owned(), name.to_owned()))?;
            (plugin.manifest.kind == kind)
                .then(|| Some((Name::parse(owner).ok()?, Name::parse(name).ok()?)))
                .flatten()
        })
    }

    /// The plugin of `team` (or of the bundled `core` team) that offers
    /// `capability`, as `(team, name, version)`.
    pub fn resolve_capability(&self, team: &str, capability: &str) -> Option<(Name, Name, String)> {
        let loaded = self.loaded.read().expect("plugin registry poisoned");
        [team, CORE_TEAM].into_iter().find_map(|owner| {
            let ((t, n), plugin) = loaded
                .range((owner.to_owned(), String::new())..)
                .take_while(|((t, _), _)| t == owner)
                .find(|(_, plugin)| plugin.offers(capability))?;
            // Keys are made from names, so these parse.
            Some((
                Name::parse(t).ok()?,
                Name::parse(n).ok()?,
                plugin.manifest.version.clone(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_key_finds_what_the_owned_key_does() {
        let keys = [
            ("ops", "alerts"),
            ("ops", "tickets"),
            ("dev", "tickets"),
            ("op", "salerts"),
        ];
        let map: BTreeMap<PluginKey, usize> = keys
            .iter()
            .enumerate()
            .map(|(n, (team, name))| (((*team).to_owned(), (*name).to_owned()), n))
            .collect();
        for (n, key) in keys.iter().enumerate() {
            assert_eq!(map.get(key as &dyn KeyView), Some(&n), "{key:?}");
        }
        assert_eq!(map.get(&("ops", "nothing") as &dyn KeyView), None);
        assert_eq!(map.get(&("opsalerts", "") as &dyn KeyView), None);
    }
}
