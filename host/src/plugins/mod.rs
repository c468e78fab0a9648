//! Plugins: loading WebAssembly components, keeping the loaded ones, and
//! calling them.
//!
//! A plugin is a component plus its [`Manifest`]. Loading compiles the
//! component off the async executor, checks it against its kind's WIT world,
//! asks a capability plugin what it offers, and only then makes it visible.
//! Each call takes an `Arc` of the plugin as it is at that moment, so a later
//! replacement never disturbs calls in flight.
//!
//! [`Plugins`] is defined here; its methods live by concern: what is loaded
//! and how it is found in `registry`, how plugins come and go in
//! `lifecycle`, and how they are called in `calls`.

mod artifacts;
mod bundled;
mod calls;
mod commands;
pub mod compiler;
mod errors;
pub mod folder;
mod host_api;
mod http;
mod lifecycle;
pub mod manifest;
mod outcome;
mod reach;
mod registry;
mod reports;
pub mod residency;
mod runtime;
mod state;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use artifacts::ArtifactCache;
use calls::CallStats;
use registry::{FailedPlugin, LoadedPlugin, PluginKey};

use crate::store::Store;

pub use calls::{Caller, PluginTotals};
pub use errors::{InvokeError, LoadError, RemoveError};
pub use host_api::{CallId, HostContext};
pub use lifecycle::{FolderSync, Uploaded};
pub use manifest::{Manifest, ManifestError, PluginKind};
pub use outcome::{CallError, ErrorKind};
pub use reach::{Reach, TargetAddress};
pub use registry::{CapabilityInfo, PluginInfo, PluginLoadState, PluginSource};
pub use reports::{
    HealthReport, HealthStatus, Incident, Measurement, RecoveryOutcome, RecoveryReport,
};
pub use runtime::{DEFAULT_KEEP_RESIDENT, MemoryBudget, Prepared, Runtime, RuntimeConfig};
pub use state::PluginState;
pub use watch::FolderWatcher;

/// The team whose plugins every team may use: the ones shipped in the binary.
pub const CORE_TEAM: &str = "core";

/// The loaded plugins of every team.
///
/// Every change to one plugin (a folder sync, an upload, a removal) takes
/// that plugin's turn first, so changes to one plugin apply in the order
/// they were asked for, while other plugins change in parallel.
pub struct Plugins {
    /// The sandbox every plugin runs in.
    runtime: Runtime,
    /// Compiled components by hash, so unchanged plugins load fast.
    artifacts: ArtifactCache,
    /// Every plugin's key-value state.
    state: Arc<PluginState>,
    /// Where plugin folders live; `None` means uploads are off.
    folders: Option<PathBuf>,
    /// The versions serving now.
    loaded: RwLock<BTreeMap<PluginKey, Arc<LoadedPlugin>>>,
    /// Plugins whose last load failed, kept to show why.
    failed: RwLock<BTreeMap<PluginKey, FailedPlugin>>,
    /// Call counters per plugin. Kept across versions and removals, so
    /// totals never go down.
    stats: RwLock<BTreeMap<PluginKey, Arc<CallStats>>>,
    /// Each plugin's turn to change; see [`lifecycle::Turns`].
    turns: lifecycle::Turns,
    /// Bumped whenever the set of serving plugins changes.
    generation: tokio::sync::watch::Sender<u64>,
    /// The number of the next call, for its `call_id`.
    next_call: AtomicU64,
    /// One permit per compile that may run at once
    /// ([`RuntimeConfig::compiles_at_once`]).
    compiles: Arc<tokio::sync::Semaphore>,
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
            turns: lifecycle::Turns::default(),
            generation: tokio::sync::watch::Sender::new(0),
            next_call: AtomicU64::new(1),
            compiles: Arc::new(tokio::sync::Semaphore::new(config.compiles_at_once.max(1))),
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

    /// Compiles what the artifact cache lacks in separate processes as
    /// `compiler` says (the `autoagent` binary and its limits; see
    /// [`compiler`]). Call it after [`Plugins::with_artifact_cache`];
    /// without a cache it changes nothing.
    pub fn with_compiler_process(mut self, compiler: compiler::CompilerProcess) -> Self {
        self.artifacts = self.artifacts.with_compiler(compiler);
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
}
