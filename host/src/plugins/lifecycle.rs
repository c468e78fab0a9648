//! How plugins come and go: loading the bundled ones and the folders at
//! start, making a plugin serve what its folder holds, uploads, removals,
//! and the checks a version passes before it serves (compiled, linked,
//! of its world, describing what its manifest promises).
//!
//! Every change to one plugin takes that plugin's turn ([`Turns`]), so
//! changes to one plugin apply in order while others change in parallel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Semaphore;

use super::artifacts::Origin;
use super::bundled;
use super::calls::Caller;
use super::errors::{LoadError, RemoveError};
use super::folder::{self, PluginFiles};
use super::manifest::{Manifest, PluginKind};
use super::registry::{
    CapabilityInfo, FailedPlugin, LoadedPlugin, PluginInfo, PluginKey, PluginSource, key_of,
};
use super::residency::CodePages;
use super::{CORE_TEAM, Plugins};
use crate::clock::Timestamp;
use crate::digest::sha256_hex;
use crate::names::Name;

/// What [`Plugins::sync_folder`] found and did.
#[derive(Debug)]
pub enum FolderSync {
    /// A new version from the folder serves now.
    Loaded(Box<PluginInfo>),
    /// The folder holds what already serves (or what already failed).
    Unchanged,
    /// The folder is gone, and so is the plugin.
    Removed,
    /// There is neither a folder nor a plugin.
    Absent,
}

/// A version compiled and checked, not yet serving.
struct Ready {
    plugin: LoadedPlugin,
    files: PluginFiles,
    origin: Origin,
    started: Instant,
}

impl Ready {
    fn manifest_arc(&self) -> Arc<Manifest> {
        self.plugin.manifest.clone()
    }
}

/// What an upload did.
#[derive(Debug)]
pub struct Uploaded {
    /// The plugin as it serves now.
    pub info: PluginInfo,
    /// Whether an earlier version was replaced.
    pub replaced: bool,
}

/// Each plugin's turn to change: an async mutex per team+name. A plugin's
/// entry lives only while someone holds or waits for its turn, so the map
/// stays as small as the changes under way.
#[derive(Default)]
pub(super) struct Turns(Mutex<HashMap<PluginKey, Arc<tokio::sync::Mutex<()>>>>);

impl Turns {
    /// Waits for `key`'s turn; it ends when the [`Turn`] is dropped.
    async fn take(&self, key: &PluginKey) -> Turn<'_> {
        let lock = self
            .0
            .lock()
            .expect("plugin turns poisoned")
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        Turn {
            turns: self,
            key: key.clone(),
            lock,
            guard: Some(guard),
        }
    }

    /// How many plugins have a turn held or waited for.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().expect("plugin turns poisoned").len()
    }
}

/// One plugin's turn to change; see [`Turns`].
struct Turn<'a> {
    turns: &'a Turns,
    key: PluginKey,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut turns = self.turns.0.lock().expect("plugin turns poisoned");
        // The map's handle and ours: nobody else holds or waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            turns.remove(&self.key);
        }
    }
}

impl Plugins {
    /// Loads the plugins embedded in the binary.
    pub async fn load_bundled(&self) -> Result<(), LoadError> {
        for plugin in bundled::PLUGINS {
            self.load(plugin.manifest, plugin.wasm.to_vec(), PluginSource::Bundled)
                .await?;
        }
        Ok(())
    }

    /// Loads every plugin folder, after finishing any replacement a crash
    /// interrupted. A broken plugin is logged and listed as failed; the
    /// others load.
    pub async fn load_folders(&self) -> Vec<(PathBuf, LoadError)> {
        let Some(root) = self.folders.clone() else {
            return Vec::new();
        };
        folder::recover(&root);
        let mut errors = Vec::new();
        for dir in folder::plugin_dirs(&root) {
            let Some((team, name)) = folder::owner_of(&root, &dir) else {
                continue;
            };
            if let Err(err) = self.sync_folder(&team, &name).await {
                errors.push((dir, err));
            }
        }
        errors
    }

    /// Makes the plugin serve what its folder holds: loads a new or changed
    /// folder, removes the plugin of a folder that is gone, and leaves an
    /// unchanged one alone. A folder that fails to load is logged and
    /// recorded; the version already serving, if any, goes on serving.
    pub async fn sync_folder(&self, team: &Name, name: &Name) -> Result<FolderSync, LoadError> {
        let Some(root) = self.folders.clone() else {
            return Ok(FolderSync::Absent);
        };
        let key = key_of(team, name);
        let _turn = self.turns.take(&key).await;
        let dir = plugin_dir(&root, team, name)?;
        let source = PluginSource::Directory {
            path: dir.display().to_string(),
        };
        if !dir.is_dir() {
            return Ok(if self.unload(&key, "its folder was removed") {
                FolderSync::Removed
            } else {
                FolderSync::Absent
            });
        }
        let files = match folder::read(&dir) {
            Ok(files) => files,
            Err(err) => {
                let err = LoadError::from(err);
                self.record_failure(&key, None, &err, source, None);
                return Err(err);
            }
        };
        let wasm_sha256 = content_sha256(&files);
        if self.serves_or_failed(&key, &files.manifest, &wasm_sha256) {
            return Ok(FolderSync::Unchanged);
        }
        let content = Some((files.manifest.clone(), wasm_sha256.clone()));
        match self
            .place_and_prepare(team, name, files, wasm_sha256, source.clone())
            .await
        {
            Ok(prepared) => Ok(FolderSync::Loaded(Box::new(self.install(prepared)))),
            Err((manifest, err)) => {
                self.record_failure(&key, manifest, &err, source, content);
                Err(err)
            }
        }
    }

    /// Checks that a plugin for folder `team/name` may live there and
    /// prepares it.
    async fn place_and_prepare(
        &self,
        team: &Name,
        name: &Name,
        files: PluginFiles,
        wasm_sha256: String,
        source: PluginSource,
    ) -> Result<Ready, (Option<Arc<Manifest>>, LoadError)> {
        let manifest = Manifest::parse(&files.manifest).map_err(|err| (None, err.into()))?;
        let manifest = Arc::new(manifest);
        if let Err(err) = check_placement(team, name, &manifest) {
            return Err((Some(manifest), err));
        }
        self.prepare(manifest.clone(), files, wasm_sha256, source)
            .await
            .map_err(|err| (Some(manifest), err))
    }

    /// Replaces (or adds) a team's plugin with an uploaded component and
    /// manifest. The new version is compiled and checked first; only then is
    /// its folder written durably and the version swapped in. If anything
    /// fails, the version serving before goes on serving, and the failure is
    /// logged and recorded on the plugin. `wasm` is `None` for a manifest
    /// that names a bundled component (`component = "core/<name>"`).
    pub async fn upload(
        &self,
        team: &Name,
        name: &Name,
        manifest_text: String,
        wasm: Option<Vec<u8>>,
    ) -> Result<Uploaded, LoadError> {
        let root = self.folders.clone().ok_or_else(|| {
            LoadError::Forbidden("this host keeps no plugin folders; uploads are off".into())
        })?;
        if team == CORE_TEAM {
            // Refused before it touches anything: there is no plugin of
            // `core` to record the failure on.
            tracing::warn!(
                team = %team,
                plugin = %name,
                "plugin upload refused: team is reserved"
            );
            return Err(reserved_team());
        }
        let dir = plugin_dir(&root, team, name)?;
        let key = key_of(team, name);
        let _turn = self.turns.take(&key).await;
        let source = PluginSource::Directory {
            path: dir.display().to_string(),
        };
        let files = PluginFiles {
            manifest: manifest_text,
            wasm,
        };
        let wasm_sha256 = content_sha256(&files);
        let content = Some((files.manifest.clone(), wasm_sha256.clone()));
        let outcome = match self
            .place_and_prepare(team, name, files, wasm_sha256, source.clone())
            .await
        {
            Ok(ready) => match folder::write(&root, team, name, &ready.files) {
                Ok(_) => Ok(ready),
                Err(err) => Err((
                    Some(ready.manifest_arc()),
                    LoadError::Io {
                        path: dir.clone(),
                        message: err.to_string(),
                    },
                )),
            },
            Err(failure) => Err(failure),
        };
        match outcome {
            Ok(ready) => {
                let replaced = self
                    .loaded
                    .read()
                    .expect("plugin registry poisoned")
                    .contains_key(&key);
                Ok(Uploaded {
                    info: self.install(ready),
                    replaced,
                })
            }
            Err((manifest, err)) => {
                // The client's mistake (a bad component or manifest) is a
                // WARN; a failure of the host's own (the disk) is an ERROR.
                if matches!(err, LoadError::Io { .. }) {
                    tracing::error!(team = %team, plugin = %name, error = %err, "plugin upload failed; the serving version, if any, is unchanged");
                } else {
                    tracing::warn!(team = %team, plugin = %name, error = %err, "plugin upload refused; the serving version, if any, is unchanged");
                }
                self.note_failure(&key, manifest, &err, source, content);
                Err(err)
            }
        }
    }

    /// Stops serving a team's plugin and deletes its folder. Calls in flight
    /// finish on the version they started with.
    pub async fn remove(&self, team: &Name, name: &Name) -> Result<PluginInfo, RemoveError> {
        let key = key_of(team, name);
        let _turn = self.turns.take(&key).await;
        let info = self.get(team, name).ok_or_else(|| RemoveError::NotFound {
            team: team.to_string(),
            name: name.to_string(),
        })?;
        if matches!(info.source, PluginSource::Bundled) {
            return Err(RemoveError::Forbidden(format!(
                "{team}/{name} is bundled in the binary and cannot be removed"
            )));
        }
        if let Some(root) = &self.folders {
            folder::remove(root, team, name).map_err(|err| RemoveError::Io(err.to_string()))?;
        }
        self.unload(&key, "removed through the API");
        Ok(info)
    }

    /// Forgets a plugin, serving or failed. Returns whether there was one.
    /// Bundled plugins are part of the binary and never unloaded, whatever
    /// happens to a folder of the same name.
    fn unload(&self, key: &PluginKey, why: &str) -> bool {
        let served = {
            let mut loaded = self.loaded.write().expect("plugin registry poisoned");
            let bundled = loaded
                .get(key)
                .is_some_and(|plugin| matches!(plugin.source, PluginSource::Bundled));
            !bundled && loaded.remove(key).is_some()
        };
        let failed = self
            .failed
            .write()
            .expect("plugin registry poisoned")
            .remove(key)
            .is_some();
        if served {
            self.generation.send_modify(|g| *g += 1);
            tracing::info!(team = %key.0, plugin = %key.1, "plugin unloaded: {why}");
        }
        served || failed
    }

    /// Logs a folder that failed to load (an ERROR: what an operator placed
    /// does not serve) and records it.
    fn record_failure(
        &self,
        key: &PluginKey,
        manifest: Option<Arc<Manifest>>,
        err: &LoadError,
        source: PluginSource,
        content: Option<(String, String)>,
    ) {
        tracing::error!(team = %key.0, plugin = %key.1, error = %err, "plugin failed to load");
        self.note_failure(key, manifest, err, source, content);
    }

    /// Records a failed load or upload as the plugin's `lastError`.
    fn note_failure(
        &self,
        key: &PluginKey,
        manifest: Option<Arc<Manifest>>,
        err: &LoadError,
        source: PluginSource,
        content: Option<(String, String)>,
    ) {
        self.failed
            .write()
            .expect("plugin registry poisoned")
            .insert(
                key.clone(),
                FailedPlugin {
                    manifest,
                    error: err.to_string(),
                    source,
                    content,
                },
            );
    }

    /// Compiles, checks and installs one plugin; on success it serves the
    /// next call. On failure nothing changes. Used for bundled plugins and
    /// by tests; folders and uploads go through their own paths.
    pub async fn load(
        &self,
        manifest_text: &str,
        wasm: Vec<u8>,
        source: PluginSource,
    ) -> Result<PluginInfo, LoadError> {
        let manifest = Arc::new(Manifest::parse(manifest_text)?);
        let wasm_sha256 = sha256_hex(&wasm);
        let files = PluginFiles {
            manifest: manifest_text.to_owned(),
            wasm: Some(wasm),
        };
        let ready = self.prepare(manifest, files, wasm_sha256, source).await?;
        Ok(self.install(ready))
    }

    /// Compiles (or takes from the cache), links and checks a component
    /// against its manifest. Nothing is installed.
    async fn prepare(
        &self,
        manifest: Arc<Manifest>,
        files: PluginFiles,
        wasm_sha256: String,
        source: PluginSource,
    ) -> Result<Ready, LoadError> {
        let started = Instant::now();
        let bundled = bundled_component(&manifest, files.wasm.is_some())?;
        // Compiling is CPU-bound and can take a second: keep it off the
        // executor so requests keep flowing.
        let engine = self.runtime.engine().clone();
        let artifacts = self.artifacts.clone();
        // A turn among the compiles, kept by the compile itself: a load
        // that is given up on does not free it while its compile runs.
        let turn = self
            .compiles
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| LoadError::Compiler("the host is shutting down".into()))?;
        let (files, sha, compiled) = tokio::task::spawn_blocking(move || {
            let wasm = bundled.or(files.wasm.as_deref()).unwrap_or_default();
            let compiled = artifacts.component(&engine, wasm, &wasm_sha256);
            drop(turn);
            (files, wasm_sha256, compiled)
        })
        .await
        .map_err(|err| LoadError::Compiler(format!("compiler thread failed: {err}")))?;
        let (component, origin) = compiled?;
        let prepared = self
            .runtime
            .prepare(manifest.kind, &component)
            .map_err(|err| LoadError::WrongWorld {
                world: manifest.kind.world(),
                message: format!("{err:#}"),
            })?;
        let capabilities = match manifest.kind {
            PluginKind::Capability => {
                let share = self.runtime.team_share(&manifest.team);
                let host = self.host_context(&manifest, share, Caller::default());
                let described = self
                    .runtime
                    .describe(&prepared, &manifest.limits, host)
                    .await
                    .map_err(|err| LoadError::Mismatch(format!("describe failed: {err}")))?;
                check_capabilities(&manifest, described)?
            }
            PluginKind::HealthCheck | PluginKind::RecoveryStrategy => Vec::new(),
        };
        let stats = self.stats_of(&(manifest.team.clone(), manifest.name.clone()));
        Ok(Ready {
            plugin: LoadedPlugin {
                slots: Semaphore::new(manifest.limits.max_concurrent_calls as usize),
                code: CodePages::released_after_load(&component, stats.calls()),
                stats,
                share: self.runtime.team_share(&manifest.team),
                manifest,
                manifest_text: files.manifest.clone(),
                wasm_sha256: sha,
                prepared,
                capabilities,
                source,
                loaded_at: Timestamp::now(),
            },
            files,
            origin,
            started,
        })
    }

    /// Swaps a prepared version in: the next call gets it, calls in flight
    /// keep the one they hold.
    fn install(&self, ready: Ready) -> PluginInfo {
        let Ready {
            plugin,
            origin,
            started,
            ..
        } = ready;
        let plugin = Arc::new(plugin);
        let manifest = plugin.manifest.clone();
        let key = (manifest.team.clone(), manifest.name.clone());
        let previous = self
            .loaded
            .write()
            .expect("plugin registry poisoned")
            .insert(key.clone(), plugin.clone());
        self.failed
            .write()
            .expect("plugin registry poisoned")
            .remove(&key);
        self.generation.send_modify(|g| *g += 1);
        tracing::info!(
            team = %manifest.team,
            plugin = %manifest.name,
            version = %manifest.version,
            previous_version = %previous.as_ref().map_or("-", |p| p.manifest.version.as_str()),
            kind = %manifest.kind.world(),
            artifact = %origin.as_str(),
            millis = started.elapsed().as_millis() as u64,
            "plugin loaded"
        );
        self.info_of(&key, &plugin)
    }
}

/// The folder of `team/name` under `root`, as a load error if it is not one.
fn plugin_dir(root: &Path, team: &Name, name: &Name) -> Result<PathBuf, LoadError> {
    folder::plugin_dir(root, team, name).map_err(|err| LoadError::Io {
        path: root.to_owned(),
        message: err.to_string(),
    })
}

/// Checks that a plugin whose manifest is `manifest` may live in folder
/// `team/name`: not in the bundled plugins' team, and named as placed.
fn check_placement(team: &Name, name: &Name, manifest: &Manifest) -> Result<(), LoadError> {
    if team == CORE_TEAM {
        return Err(reserved_team());
    }
    if manifest.team != team.as_str() || manifest.name != name.as_str() {
        return Err(LoadError::Mismatch(format!(
            "plugin.toml names {}/{}, but the plugin is placed as {team}/{name}",
            manifest.team, manifest.name
        )));
    }
    Ok(())
}

/// The SHA-256 of the component `files` run, to tell changed files from
/// unchanged ones: of their own `.wasm`, else of the bundled component their
/// manifest names (empty if it names none that exists).
fn content_sha256(files: &PluginFiles) -> String {
    match &files.wasm {
        Some(wasm) => sha256_hex(wasm),
        None => Manifest::parse(&files.manifest)
            .ok()
            .and_then(|manifest| {
                let (_, wasm) = bundled::find(manifest.bundled_component()?)?;
                Some(sha256_hex(wasm))
            })
            .unwrap_or_default(),
    }
}

/// The bundled component a plugin runs instead of its own, checked: a
/// manifest naming `component = "core/<name>"` brings no `.wasm` (`own`),
/// names a plugin that is bundled, and has that plugin's kind. `None` for a
/// plugin that brings its own component, as every other plugin must.
fn bundled_component(manifest: &Manifest, own: bool) -> Result<Option<&'static [u8]>, LoadError> {
    let Some(name) = manifest.bundled_component() else {
        return if own {
            Ok(None)
        } else {
            Err(LoadError::Mismatch(format!(
                "the plugin has no component: add its .wasm (an upload's `component` part), \
                 or name a bundled one with `component = \"{CORE_TEAM}/<name>\"` in plugin.toml"
            )))
        };
    };
    if own {
        return Err(LoadError::Mismatch(format!(
            "plugin.toml names `component = \"{CORE_TEAM}/{name}\"`, so the plugin brings no \
             .wasm of its own; remove the .wasm or the key"
        )));
    }
    let Some((bundled, wasm)) = bundled::find(name) else {
        let names: Vec<String> = bundled::PLUGINS
            .iter()
            .filter_map(|plugin| Manifest::parse(plugin.manifest).ok())
            .map(|manifest| format!("{CORE_TEAM}/{}", manifest.name))
            .collect();
        return Err(LoadError::Mismatch(format!(
            "plugin.toml names `component = \"{CORE_TEAM}/{name}\"`, but no such plugin is \
             bundled (bundled: {})",
            names.join(", ")
        )));
    };
    if bundled.kind != manifest.kind {
        return Err(LoadError::Mismatch(format!(
            "plugin.toml has `kind = \"{}\"`, but its component {CORE_TEAM}/{name} is a {} plugin",
            manifest.kind.world(),
            bundled.kind.world()
        )));
    }
    Ok(Some(wasm))
}

/// The refusal of a plugin placed in the bundled plugins' team.
fn reserved_team() -> LoadError {
    LoadError::Forbidden(format!(
        "team `{CORE_TEAM}` is reserved for the plugins bundled in the binary"
    ))
}

/// Keeps what the component describes, after checking it offers every
/// capability its manifest promises.
fn check_capabilities(
    manifest: &Manifest,
    described: Vec<(String, String)>,
) -> Result<Vec<CapabilityInfo>, LoadError> {
    if let Some(missing) = manifest
        .capabilities
        .iter()
        .find(|name| !described.iter().any(|(d, _)| d == *name))
    {
        return Err(LoadError::Mismatch(format!(
            "plugin.toml lists capability {missing:?}, but the component does not describe it"
        )));
    }
    Ok(described
        .into_iter()
        .filter(|(name, _)| manifest.capabilities.contains(name))
        .map(|(name, description)| CapabilityInfo { name, description })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn manifest(team: &str, name: &str, capabilities: &[&str]) -> Manifest {
        let listed = capabilities
            .iter()
            .map(|c| format!("{c:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        Manifest::parse(&format!(
            r#"
            name = "{name}"
            version = "0.1.0"
            kind = "capability"
            team = "{team}"
            capabilities = [{listed}]
            "#
        ))
        .unwrap()
    }

    fn described(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, description)| ((*name).to_owned(), (*description).to_owned()))
            .collect()
    }

    fn n(text: &'static str) -> Name {
        Name::from_static(text)
    }

    #[test]
    fn capabilities_are_what_the_manifest_lists_and_the_component_describes() {
        let manifest = manifest("ops", "tickets", &["open", "close"]);
        let offered = check_capabilities(
            &manifest,
            described(&[
                ("close", "Closes a ticket"),
                ("reopen", "Not in the manifest"),
                ("open", "Opens a ticket"),
            ]),
        )
        .unwrap();
        // Kept in the component's order, with its descriptions; a capability
        // the manifest does not list is not offered.
        let offered: Vec<_> = offered
            .iter()
            .map(|c| (c.name.as_str(), c.description.as_str()))
            .collect();
        assert_eq!(
            offered,
            [("close", "Closes a ticket"), ("open", "Opens a ticket")]
        );
    }

    #[test]
    fn a_listed_capability_the_component_does_not_describe_is_refused() {
        let manifest = manifest("ops", "tickets", &["open", "close"]);
        let err =
            check_capabilities(&manifest, described(&[("open", "Opens a ticket")])).unwrap_err();
        assert!(
            matches!(&err, LoadError::Mismatch(message) if message.contains("\"close\"")),
            "{err}"
        );
    }

    #[test]
    fn a_plugin_lives_only_where_its_manifest_names_it_and_never_in_core() {
        let ops = manifest("ops", "tickets", &["open"]);
        assert!(check_placement(&n("ops"), &n("tickets"), &ops).is_ok());
        for (team, name) in [(n("dev"), n("tickets")), (n("ops"), n("alerts"))] {
            let err = check_placement(&team, &name, &ops).unwrap_err();
            assert!(
                matches!(&err, LoadError::Mismatch(message)
                    if message.contains("ops/tickets") && message.contains(&format!("{team}/{name}"))),
                "{err}"
            );
        }
        // Even a manifest that says `core` may not be placed there.
        let core = manifest(CORE_TEAM, "todo", &["open"]);
        let err = check_placement(&n("core"), &n("todo"), &core).unwrap_err();
        assert!(matches!(err, LoadError::Forbidden(_)), "{err}");
    }

    #[tokio::test]
    async fn one_plugins_changes_take_turns_and_leave_no_entry_behind() {
        let turns = Turns::default();
        let tickets = ("ops".to_owned(), "tickets".to_owned());
        let alerts = ("ops".to_owned(), "alerts".to_owned());
        let first = turns.take(&tickets).await;
        // Another plugin's turn does not wait for this one.
        let other = tokio::time::timeout(Duration::from_secs(5), turns.take(&alerts))
            .await
            .expect("another plugin's turn is free");
        // The same plugin's does, until the first turn ends.
        let mut second = Box::pin(turns.take(&tickets));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut second)
                .await
                .is_err(),
            "a second turn of one plugin must wait for the first"
        );
        assert_eq!(turns.len(), 2);
        drop(first);
        // Still waited for: the entry stays.
        assert_eq!(turns.len(), 2);
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the turn passes on once the first ends");
        drop(second);
        drop(other);
        assert_eq!(turns.len(), 0);
    }
}
