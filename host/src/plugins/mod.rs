//! Plugins: loading WebAssembly components, keeping the loaded ones, and
//! calling them.
//!
//! A plugin is a component plus its [`Manifest`]. Loading compiles the
//! component off the async executor, checks it against its kind's WIT world,
//! asks a capability plugin what it offers, and only then makes it visible.
//! Each call takes an `Arc` of the plugin as it is at that moment, so a later
//! replacement never disturbs calls in flight.

mod bundled;
mod host_api;
pub mod manifest;
mod runtime;
mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::clock::Timestamp;
use crate::store::Store;

pub use host_api::HostContext;
pub use manifest::{Manifest, ManifestError, PluginKind};
pub use runtime::{CallError, Prepared, Runtime, RuntimeConfig};
pub use state::PluginState;

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
    /// Reading the plugin's folder failed.
    #[error("{path}: {message}")]
    Io {
        /// File or folder at fault.
        path: PathBuf,
        /// What the system said.
        message: String,
    },
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
    prepared: Prepared,
    capabilities: Vec<CapabilityInfo>,
    slots: Semaphore,
    source: PluginSource,
    loaded_at: Timestamp,
}

/// A plugin whose load failed, kept so operators can see why.
struct FailedPlugin {
    manifest: Option<Arc<Manifest>>,
    error: String,
    source: PluginSource,
}

type PluginKey = (String, String);

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
pub struct Plugins {
    runtime: Runtime,
    state: Arc<PluginState>,
    loaded: RwLock<BTreeMap<PluginKey, Arc<LoadedPlugin>>>,
    failed: RwLock<BTreeMap<PluginKey, FailedPlugin>>,
    stats: RwLock<BTreeMap<PluginKey, Arc<CallStats>>>,
    next_call: AtomicU64,
}

impl Plugins {
    /// An empty registry on a fresh runtime, with state kept in `store`.
    pub fn new(config: &RuntimeConfig, store: &Store) -> Result<Self, String> {
        let runtime = Runtime::new(config).map_err(|err| format!("{err:#}"))?;
        Ok(Self {
            runtime,
            state: Arc::new(PluginState::new(store)),
            loaded: RwLock::default(),
            failed: RwLock::default(),
            stats: RwLock::default(),
            next_call: AtomicU64::new(1),
        })
    }

    /// Loads the plugins embedded in the binary.
    pub async fn load_bundled(&self) -> Result<(), LoadError> {
        for plugin in bundled::PLUGINS {
            self.load(plugin.manifest, plugin.wasm.to_vec(), PluginSource::Bundled)
                .await?;
        }
        Ok(())
    }

    /// Loads every plugin under `root`, laid out as `<team>/<name>/` with a
    /// `plugin.toml` and one `.wasm` file each. A broken plugin is logged and
    /// listed as failed; the others load.
    pub async fn load_directory(&self, root: &Path) -> Vec<(PathBuf, LoadError)> {
        let mut errors = Vec::new();
        for dir in plugin_dirs(root) {
            let source = PluginSource::Directory {
                path: dir.display().to_string(),
            };
            let outcome = match read_plugin_dir(&dir) {
                Ok((manifest, wasm)) => {
                    self.load_expecting(&manifest, wasm, source.clone(), &dir)
                        .await
                }
                Err(err) => Err(err),
            };
            if let Err(err) = outcome {
                tracing::error!(path = %dir.display(), error = %err, "plugin failed to load");
                self.record_failure(&dir, None, &err, source);
                errors.push((dir, err));
            }
        }
        errors
    }

    async fn load_expecting(
        &self,
        manifest_text: &str,
        wasm: Vec<u8>,
        source: PluginSource,
        dir: &Path,
    ) -> Result<PluginInfo, LoadError> {
        let manifest = Manifest::parse(manifest_text)?;
        let folder = |n: usize| {
            dir.iter()
                .rev()
                .nth(n)
                .map(|s| s.to_string_lossy().into_owned())
        };
        if folder(0).as_deref() != Some(manifest.name.as_str())
            || folder(1).as_deref() != Some(manifest.team.as_str())
        {
            return Err(LoadError::Mismatch(format!(
                "plugin.toml names {}/{}, but the folder is {}",
                manifest.team,
                manifest.name,
                dir.display()
            )));
        }
        self.load(manifest_text, wasm, source).await
    }

    fn record_failure(
        &self,
        dir: &Path,
        manifest: Option<Arc<Manifest>>,
        err: &LoadError,
        source: PluginSource,
    ) {
        let mut parts = dir.iter().rev().map(|s| s.to_string_lossy().into_owned());
        let name = parts.next().unwrap_or_default();
        let team = parts.next().unwrap_or_default();
        self.failed
            .write()
            .expect("plugin registry poisoned")
            .insert(
                (team, name),
                FailedPlugin {
                    manifest,
                    error: err.to_string(),
                    source,
                },
            );
    }

    /// Compiles, checks and installs one plugin; on success it serves the
    /// next call. On failure nothing changes.
    pub async fn load(
        &self,
        manifest_text: &str,
        wasm: Vec<u8>,
        source: PluginSource,
    ) -> Result<PluginInfo, LoadError> {
        let manifest = Arc::new(Manifest::parse(manifest_text)?);
        let started = Instant::now();
        // Compiling is CPU-bound and can take a second: keep it off the
        // executor so requests keep flowing.
        let engine = self.runtime.engine().clone();
        let component = tokio::task::spawn_blocking(move || {
            wasmtime::component::Component::new(&engine, &wasm)
        })
        .await
        .map_err(|err| LoadError::Compile(format!("compiler thread failed: {err}")))?
        .map_err(|err| LoadError::Compile(format!("{err:#}")))?;
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
        let plugin = Arc::new(LoadedPlugin {
            slots: Semaphore::new(manifest.limits.max_concurrent_calls as usize),
            manifest: manifest.clone(),
            prepared,
            capabilities,
            source,
            loaded_at: Timestamp::now(),
        });
        let key = (manifest.team.clone(), manifest.name.clone());
        self.loaded
            .write()
            .expect("plugin registry poisoned")
            .insert(key.clone(), plugin.clone());
        self.failed
            .write()
            .expect("plugin registry poisoned")
            .remove(&key);
        tracing::info!(
            team = %manifest.team,
            plugin = %manifest.name,
            version = %manifest.version,
            kind = manifest.kind.world(),
            millis = started.elapsed().as_millis() as u64,
            "plugin loaded"
        );
        Ok(self.info_of(&key, &plugin))
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

    /// One plugin of a team.
    pub fn get(&self, team: &str, name: &str) -> Option<PluginInfo> {
        self.list(Some(team))
            .into_iter()
            .find(|info| info.name == name)
    }

    /// The plugin of `team` (or of the bundled `core` team) that offers
    /// `capability`, as `(team, name, version)`.
    pub fn resolve_capability(
        &self,
        team: &str,
        capability: &str,
    ) -> Option<(String, String, String)> {
        let loaded = self.loaded.read().expect("plugin registry poisoned");
        [team, CORE_TEAM].into_iter().find_map(|owner| {
            loaded
                .range((owner.to_owned(), String::new())..)
                .take_while(|((t, _), _)| t == owner)
                .find(|(_, plugin)| plugin.capabilities.iter().any(|c| c.name == capability))
                .map(|((t, n), plugin)| (t.clone(), n.clone(), plugin.manifest.version.clone()))
        })
    }

    /// Runs one capability of a team's plugin on JSON input.
    pub async fn invoke(
        &self,
        team: &str,
        name: &str,
        capability: &str,
        input: &serde_json::Value,
        caller: Caller,
    ) -> Result<serde_json::Value, InvokeError> {
        let key = (team.to_owned(), name.to_owned());
        let plugin = self
            .loaded
            .read()
            .expect("plugin registry poisoned")
            .get(&key)
            .cloned()
            .ok_or_else(|| InvokeError::NotFound {
                team: team.to_owned(),
                name: name.to_owned(),
            })?;
        if !plugin.capabilities.iter().any(|c| c.name == capability) {
            return Err(InvokeError::UnknownCapability {
                plugin: format!("{team}/{name}"),
                capability: capability.to_owned(),
            });
        }
        let stats = self.stats_of(&key);
        let started = Instant::now();
        let host = self.host_context(&plugin.manifest, caller);
        let call_id = host.call_id.clone();
        let outcome = self
            .call(&plugin, host, capability, input)
            .await
            .map_err(InvokeError::Call);
        stats.calls.fetch_add(1, Ordering::Relaxed);
        stats
            .micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        if let Err(err) = &outcome {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                team, plugin = name, capability, call_id = %call_id, error = %err,
                "plugin call failed"
            );
        }
        outcome
    }

    async fn call(
        &self,
        plugin: &LoadedPlugin,
        host: HostContext,
        capability: &str,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value, CallError> {
        let limits = &plugin.manifest.limits;
        let wait = Duration::from_millis(limits.timeout_ms);
        let _slot = tokio::time::timeout(wait, plugin.slots.acquire())
            .await
            .map_err(|_| CallError::Busy(limits.max_concurrent_calls))?
            .map_err(|_| CallError::Host("plugin is shutting down".into()))?;
        let input =
            serde_json::to_string(input).map_err(|err| CallError::InvalidInput(err.to_string()))?;
        let output = self
            .runtime
            .invoke(&plugin.prepared, limits, host, capability, &input)
            .await?;
        serde_json::from_str(&output).map_err(|err| CallError::InvalidOutput(err.to_string()))
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

/// `<root>/<team>/<name>` folders, in name order.
fn plugin_dirs(root: &Path) -> Vec<PathBuf> {
    let subdirs = |dir: &Path| -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.is_dir())
            .collect();
        dirs.sort();
        dirs
    };
    subdirs(root)
        .iter()
        .flat_map(|team| subdirs(team))
        .collect()
}

/// Reads `plugin.toml` and the one `.wasm` file of a plugin folder.
fn read_plugin_dir(dir: &Path) -> Result<(String, Vec<u8>), LoadError> {
    let io = |path: &Path, err: std::io::Error| LoadError::Io {
        path: path.to_owned(),
        message: err.to_string(),
    };
    let manifest_path = dir.join("plugin.toml");
    let manifest =
        std::fs::read_to_string(&manifest_path).map_err(|err| io(&manifest_path, err))?;
    let wasm_files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|err| io(dir, err))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
        .collect();
    let [wasm_path] = wasm_files.as_slice() else {
        return Err(LoadError::Io {
            path: dir.to_owned(),
            message: format!(
                "expected exactly one .wasm file, found {}",
                wasm_files.len()
            ),
        });
    };
    let wasm = std::fs::read(wasm_path).map_err(|err| io(wasm_path, err))?;
    Ok((manifest, wasm))
}
