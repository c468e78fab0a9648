//! Plugins: loading WebAssembly components, keeping the loaded ones, and
//! calling them.
//!
//! A plugin is a component plus its [`Manifest`]. Loading compiles the
//! component off the async executor, checks it against its kind's WIT world,
//! asks a capability plugin what it offers, and only then makes it visible.
//! Each call takes an `Arc` of the plugin as it is at that moment, so a later
//! replacement never disturbs calls in flight.

mod artifacts;
mod bundled;
mod commands;
pub mod folder;
mod host_api;
mod http;
pub mod manifest;
mod outcome;
mod reports;
mod runtime;
mod state;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::digest::sha256_hex;
use artifacts::{ArtifactCache, Origin};
use folder::PluginFiles;

use crate::clock::Timestamp;
use crate::names::Name;
use crate::store::Store;

pub use host_api::HostContext;
pub use manifest::{Manifest, ManifestError, PluginKind};
pub use outcome::{CallError, ErrorKind};
pub use reports::{
    HealthReport, HealthStatus, Incident, Measurement, RecoveryOutcome, RecoveryReport,
};
pub use runtime::{MemoryBudget, Prepared, Runtime, RuntimeConfig};
pub use state::PluginState;
pub use watch::FolderWatcher;

/// The team whose plugins every team may use: the ones shipped in the binary.
pub const CORE_TEAM: &str = "core";

/// Why a plugin could not be loaded. The previous version, if any, keeps
/// serving.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The manifest is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The bytes are not a component wasmtime can compile.
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    /// The component does not match its kind's world, or imports something
    /// the host does not offer.
    #[error("component does not fit world `{world}`: {message}")]
    WrongWorld {
        /// The world the manifest's kind names.
        world: &'static str,
        /// What the linker said.
        message: String,
    },
    /// The component's own description contradicts its manifest.
    #[error("{0}")]
    Mismatch(String),
    /// Reading or writing the plugin's folder failed.
    #[error("{path}: {message}")]
    Io {
        /// File or folder at fault.
        path: PathBuf,
        /// What the system said.
        message: String,
    },
    /// The plugin may not be placed where it was asked to go.
    #[error("{0}")]
    Forbidden(String),
}

impl From<folder::FolderError> for LoadError {
    fn from(err: folder::FolderError) -> Self {
        Self::Io {
            path: err.path,
            message: err.message,
        }
    }
}

/// Why a plugin could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// No such plugin, serving or failed.
    #[error("team {team:?} has no plugin named {name:?}")]
    NotFound {
        /// Team asked for.
        team: String,
        /// Plugin asked for.
        name: String,
    },
    /// Bundled plugins are part of the binary.
    #[error("{0}")]
    Forbidden(String),
    /// The folder could not be removed; the plugin still serves.
    #[error("cannot remove the plugin folder: {0}")]
    Io(String),
}

/// Why a plugin call could not be made or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// No plugin of that name is loaded for the team.
    #[error("team {team:?} has no plugin named {name:?}")]
    NotFound {
        /// Team asked for.
        team: String,
        /// Plugin asked for.
        name: String,
    },
    /// The plugin does not offer the capability.
    #[error("plugin {plugin:?} does not offer capability {capability:?}")]
    UnknownCapability {
        /// The plugin.
        plugin: String,
        /// Capability asked for.
        capability: String,
    },
    /// The call ran and failed.
    #[error(transparent)]
    Call(#[from] CallError),
}

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

/// Counters of one plugin's calls.
#[derive(Debug, Default)]
struct CallStats {
    calls: AtomicU64,
    failures: AtomicU64,
    micros: AtomicU64,
}

/// A plugin version ready to serve.
struct LoadedPlugin {
    manifest: Arc<Manifest>,
    /// The manifest as written, to tell an unchanged folder from a new one.
    manifest_text: String,
    wasm_sha256: String,
    prepared: Prepared,
    capabilities: Vec<CapabilityInfo>,
    slots: Semaphore,
    source: PluginSource,
    loaded_at: Timestamp,
}

impl LoadedPlugin {
    fn holds(&self, manifest_text: &str, wasm_sha256: &str) -> bool {
        self.manifest_text == manifest_text && self.wasm_sha256 == wasm_sha256
    }
}

/// A plugin whose load failed, kept so operators can see why.
struct FailedPlugin {
    manifest: Option<Arc<Manifest>>,
    error: String,
    source: PluginSource,
    /// The manifest text and component hash that failed, if they were read:
    /// the same files are not tried again until they change.
    content: Option<(String, String)>,
}

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

/// `(team, name)`; built only from validated [`Name`]s.
type PluginKey = (String, String);

fn key_of(team: &Name, name: &Name) -> PluginKey {
    (team.to_string(), name.to_string())
}

/// One plugin's turn to change; see [`Plugins::turn`].
struct Turn<'a> {
    turns: &'a Mutex<HashMap<PluginKey, Arc<tokio::sync::Mutex<()>>>>,
    key: PluginKey,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut turns = self.turns.lock().expect("plugin turns poisoned");
        // The map's handle and ours: nobody else holds or waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            turns.remove(&self.key);
        }
    }
}

/// Who a call is made for, beyond the plugin itself.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// Worker the call runs for.
    pub worker_id: Option<String>,
    /// Task, execution or incident it serves.
    pub subject_id: Option<String>,
}

/// Totals over every plugin, for `/metrics`.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginTotals {
    /// Plugins serving.
    pub loaded: u64,
    /// Plugins whose last load failed.
    pub failed: u64,
    /// Calls since start.
    pub calls: u64,
    /// Failed calls since start.
    pub failures: u64,
    /// Time spent in calls since start, in seconds.
    pub call_seconds: f64,
}

/// The loaded plugins of every team.
///
/// Every change to one plugin (a folder sync, an upload, a removal) takes
/// that plugin's turn first, so changes to one plugin apply in the order
/// they were asked for, while other plugins change in parallel.
pub struct Plugins {
    runtime: Runtime,
    artifacts: ArtifactCache,
    state: Arc<PluginState>,
    folders: Option<PathBuf>,
    loaded: RwLock<BTreeMap<PluginKey, Arc<LoadedPlugin>>>,
    failed: RwLock<BTreeMap<PluginKey, FailedPlugin>>,
    stats: RwLock<BTreeMap<PluginKey, Arc<CallStats>>>,
    turns: Mutex<HashMap<PluginKey, Arc<tokio::sync::Mutex<()>>>>,
    generation: tokio::sync::watch::Sender<u64>,
    next_call: AtomicU64,
}

impl Plugins {
    /// An empty registry on a fresh runtime, with state kept in `store`,
    /// no plugin folders and no artifact cache.
    pub fn new(config: &RuntimeConfig, store: &Store) -> Result<Self, String> {
        let runtime = Runtime::new(config).map_err(|err| format!("{err:#}"))?;
        Ok(Self {
            artifacts: ArtifactCache::new(None, runtime.engine()),
            runtime,
            state: Arc::new(PluginState::new(store)),
            folders: None,
            loaded: RwLock::default(),
            failed: RwLock::default(),
            stats: RwLock::default(),
            turns: Mutex::default(),
            generation: tokio::sync::watch::Sender::new(0),
            next_call: AtomicU64::new(1),
        })
    }

    /// Keeps plugins in folders under `root` (`<team>/<name>/`): uploads
    /// are written there and [`Plugins::load_folders`] reads them.
    pub fn with_folders(mut self, root: PathBuf) -> Self {
        self.folders = Some(root);
        self
    }

    /// Caches compiled components in `dir`, so unchanged plugins load
    /// without compiling.
    pub fn with_artifact_cache(mut self, dir: PathBuf) -> Self {
        self.artifacts = ArtifactCache::new(Some(dir), self.runtime.engine());
        self
    }

    /// The host-wide budget for guest memory.
    pub fn memory_budget(&self) -> &MemoryBudget {
        self.runtime.memory_budget()
    }

    /// The runtime plugin code runs on; see [`Runtime::guest_runtime`].
    pub fn guest_runtime(&self) -> &tokio::runtime::Handle {
        self.runtime.guest_runtime()
    }

    /// The folder plugins are kept in, if any.
    pub fn folders(&self) -> Option<&Path> {
        self.folders.as_deref()
    }

    /// A receiver that sees a new number whenever the set of serving
    /// plugins changes (a load, a swap, a removal).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

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

    /// Waits for `key`'s turn. The turn's entry in the map lives only while
    /// someone holds or waits for it, so the map stays as small as the
    /// changes under way.
    async fn turn(&self, key: &PluginKey) -> Turn<'_> {
        let lock = self
            .turns
            .lock()
            .expect("plugin turns poisoned")
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        Turn {
            turns: &self.turns,
            key: key.clone(),
            lock,
            guard: Some(guard),
        }
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
        let _turn = self.turn(&key).await;
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
        let wasm_sha256 = sha256_hex(&files.wasm);
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

    /// Whether `key` already serves, or already failed on, these files.
    fn serves_or_failed(&self, key: &PluginKey, manifest_text: &str, wasm_sha256: &str) -> bool {
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
        let refuse = |err| Err((Some(manifest.clone()), err));
        if team == CORE_TEAM {
            return refuse(reserved_team());
        }
        if manifest.team != team.as_str() || manifest.name != name.as_str() {
            return refuse(LoadError::Mismatch(format!(
                "plugin.toml names {}/{}, but the plugin is placed as {team}/{name}",
                manifest.team, manifest.name
            )));
        }
        self.prepare(manifest.clone(), files, wasm_sha256, source)
            .await
            .map_err(|err| (Some(manifest), err))
    }

    /// Replaces (or adds) a team's plugin with an uploaded component and
    /// manifest. The new version is compiled and checked first; only then is
    /// its folder written durably and the version swapped in. If anything
    /// fails, the version serving before goes on serving, and the failure is
    /// logged and recorded on the plugin.
    pub async fn upload(
        &self,
        team: &Name,
        name: &Name,
        manifest_text: String,
        wasm: Vec<u8>,
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
        let _turn = self.turn(&key).await;
        let wasm_sha256 = sha256_hex(&wasm);
        let source = PluginSource::Directory {
            path: dir.display().to_string(),
        };
        let files = PluginFiles {
            manifest: manifest_text,
            wasm,
        };
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
        let _turn = self.turn(&key).await;
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
            wasm,
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
        // Compiling is CPU-bound and can take a second: keep it off the
        // executor so requests keep flowing.
        let engine = self.runtime.engine().clone();
        let artifacts = self.artifacts.clone();
        let (files, sha, compiled) = tokio::task::spawn_blocking(move || {
            let compiled = artifacts.component(&engine, &files.wasm, &wasm_sha256);
            (files, wasm_sha256, compiled)
        })
        .await
        .map_err(|err| LoadError::Compile(format!("compiler thread failed: {err}")))?;
        let (component, origin) = compiled.map_err(|err| LoadError::Compile(format!("{err:#}")))?;
        let prepared = self
            .runtime
            .prepare(manifest.kind, &component)
            .map_err(|err| LoadError::WrongWorld {
                world: manifest.kind.world(),
                message: format!("{err:#}"),
            })?;
        let capabilities = match manifest.kind {
            PluginKind::Capability => {
                let host = self.host_context(&manifest, Caller::default());
                let described = self
                    .runtime
                    .describe(&prepared, &manifest.limits, host)
                    .await
                    .map_err(|err| LoadError::Mismatch(format!("describe failed: {err}")))?;
                check_capabilities(&manifest, described)?
            }
            PluginKind::HealthCheck | PluginKind::RecoveryStrategy => Vec::new(),
        };
        Ok(Ready {
            plugin: LoadedPlugin {
                slots: Semaphore::new(manifest.limits.max_concurrent_calls as usize),
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

    fn host_context(&self, manifest: &Arc<Manifest>, caller: Caller) -> HostContext {
        let n = self.next_call.fetch_add(1, Ordering::Relaxed);
        HostContext {
            manifest: manifest.clone(),
            call_id: format!("call_{n}"),
            worker_id: caller.worker_id,
            subject_id: caller.subject_id,
            state: self.state.clone(),
        }
    }

    fn stats_of(&self, key: &PluginKey) -> Arc<CallStats> {
        if let Some(stats) = self
            .stats
            .read()
            .expect("plugin registry poisoned")
            .get(key)
        {
            return stats.clone();
        }
        self.stats
            .write()
            .expect("plugin registry poisoned")
            .entry(key.clone())
            .or_default()
            .clone()
    }

    fn info_of(&self, key: &PluginKey, plugin: &LoadedPlugin) -> PluginInfo {
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
            source: plugin.source.clone(),
            loaded_at: Some(plugin.loaded_at),
            component_sha256: Some(plugin.wasm_sha256.clone()),
            calls: stats.calls.load(Ordering::Relaxed),
            failures: stats.failures.load(Ordering::Relaxed),
        }
    }

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
            source: failed.source.clone(),
            loaded_at: None,
            component_sha256: failed.content.as_ref().map(|(_, sha)| sha.clone()),
            calls: stats.calls.load(Ordering::Relaxed),
            failures: stats.failures.load(Ordering::Relaxed),
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

    /// The plugin of `team` (or of the bundled `core` team) that offers
    /// `capability`, as `(team, name, version)`.
    pub fn resolve_capability(&self, team: &str, capability: &str) -> Option<(Name, Name, String)> {
        let loaded = self.loaded.read().expect("plugin registry poisoned");
        [team, CORE_TEAM].into_iter().find_map(|owner| {
            let ((t, n), plugin) = loaded
                .range((owner.to_owned(), String::new())..)
                .take_while(|((t, _), _)| t == owner)
                .find(|(_, plugin)| plugin.capabilities.iter().any(|c| c.name == capability))?;
            // Keys are made from names, so these parse.
            Some((
                Name::parse(t).ok()?,
                Name::parse(n).ok()?,
                plugin.manifest.version.clone(),
            ))
        })
    }

    /// Runs one capability of a team's plugin on JSON input.
    pub async fn invoke(
        &self,
        team: &Name,
        name: &Name,
        capability: &str,
        input: &serde_json::Value,
        caller: Caller,
    ) -> Result<serde_json::Value, InvokeError> {
        let (plugin, host, record) = self.begin(team, name, capability, caller)?;
        if !plugin.capabilities.iter().any(|c| c.name == capability) {
            return Err(InvokeError::UnknownCapability {
                plugin: format!("{team}/{name}"),
                capability: capability.to_owned(),
            });
        }
        let outcome = async {
            let input = serde_json::to_string(input)
                .map_err(|err| CallError::InvalidInput(err.to_string()))?;
            let _slot = slot(&plugin).await?;
            let output = self
                .runtime
                .invoke(
                    &plugin.prepared,
                    &plugin.manifest.limits,
                    host,
                    capability,
                    input,
                )
                .await?;
            serde_json::from_str(&output).map_err(|err| CallError::InvalidOutput(err.to_string()))
        }
        .await;
        record.finish(outcome)
    }

    /// Runs a team's health-check plugin against `target`.
    pub async fn check(
        &self,
        team: &Name,
        name: &Name,
        target: &serde_json::Value,
        caller: Caller,
    ) -> Result<HealthReport, InvokeError> {
        let (plugin, host, record) = self.begin(team, name, "check", caller)?;
        let outcome = async {
            let _slot = slot(&plugin).await?;
            let limits = &plugin.manifest.limits;
            self.runtime
                .check(&plugin.prepared, limits, host, target.to_string())
                .await
        }
        .await;
        record.finish(outcome).map(HealthReport::from)
    }

    /// Runs a team's recovery-strategy plugin for `incident`.
    pub async fn recover(
        &self,
        team: &Name,
        name: &Name,
        incident: &Incident,
        caller: Caller,
    ) -> Result<RecoveryReport, InvokeError> {
        let (plugin, host, record) = self.begin(team, name, "recover", caller)?;
        let outcome = async {
            let _slot = slot(&plugin).await?;
            let limits = &plugin.manifest.limits;
            self.runtime
                .recover(&plugin.prepared, limits, host, incident.into())
                .await
        }
        .await;
        record.finish(outcome).map(RecoveryReport::from)
    }

    /// Starts a call of a loaded plugin: the plugin, the call's host
    /// context, and the record that counts and logs how it ended. Every
    /// kind of call goes through here and [`CallRecord::finish`].
    fn begin(
        &self,
        team: &Name,
        name: &Name,
        what: &str,
        caller: Caller,
    ) -> Result<(Arc<LoadedPlugin>, HostContext, CallRecord), InvokeError> {
        let key = key_of(team, name);
        let plugin = self
            .loaded
            .read()
            .expect("plugin registry poisoned")
            .get(&key)
            .cloned()
            .ok_or_else(|| InvokeError::NotFound {
                team: team.to_string(),
                name: name.to_string(),
            })?;
        let host = self.host_context(&plugin.manifest, caller);
        let record = CallRecord {
            stats: self.stats_of(&key),
            started: Instant::now(),
            call_id: host.call_id.clone(),
            team: team.clone(),
            name: name.clone(),
            what: what.to_owned(),
        };
        Ok((plugin, host, record))
    }

    /// Totals over every plugin.
    pub fn totals(&self) -> PluginTotals {
        let stats = self.stats.read().expect("plugin registry poisoned");
        let sum = |f: fn(&CallStats) -> u64| stats.values().map(|s| f(s)).sum::<u64>();
        PluginTotals {
            loaded: self.loaded.read().expect("plugin registry poisoned").len() as u64,
            failed: self.failed.read().expect("plugin registry poisoned").len() as u64,
            calls: sum(|s| s.calls.load(Ordering::Relaxed)),
            failures: sum(|s| s.failures.load(Ordering::Relaxed)),
            call_seconds: sum(|s| s.micros.load(Ordering::Relaxed)) as f64 / 1e6,
        }
    }
}

/// The folder of `team/name` under `root`, as a load error if it is not one.
fn plugin_dir(root: &Path, team: &Name, name: &Name) -> Result<PathBuf, LoadError> {
    folder::plugin_dir(root, team, name).map_err(|err| LoadError::Io {
        path: root.to_owned(),
        message: err.to_string(),
    })
}

/// Waits for one of the plugin's call slots, at most its time limit.
async fn slot(plugin: &LoadedPlugin) -> Result<tokio::sync::SemaphorePermit<'_>, CallError> {
    let limits = &plugin.manifest.limits;
    tokio::time::timeout(
        Duration::from_millis(limits.timeout_ms),
        plugin.slots.acquire(),
    )
    .await
    .map_err(|_| CallError::Busy(limits.max_concurrent_calls))?
    .map_err(|_| CallError::Host("plugin is shutting down".into()))
}

/// How one call is counted and, if it failed, logged.
struct CallRecord {
    stats: Arc<CallStats>,
    started: Instant,
    call_id: String,
    team: Name,
    name: Name,
    what: String,
}

impl CallRecord {
    fn finish<T>(self, outcome: Result<T, CallError>) -> Result<T, InvokeError> {
        let stats = &self.stats;
        stats.calls.fetch_add(1, Ordering::Relaxed);
        stats
            .micros
            .fetch_add(self.started.elapsed().as_micros() as u64, Ordering::Relaxed);
        if let Err(err) = &outcome {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                team = %self.team, plugin = %self.name, export = %self.what,
                call_id = %self.call_id, kind = %err.kind(), error = %err,
                "plugin call failed"
            );
        }
        outcome.map_err(InvokeError::Call)
    }
}

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
