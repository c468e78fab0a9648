//! The AutoAgent host: an automation server whose workers, health checks and
//! recovery strategies are sandboxed WebAssembly plugins.
//!
//! Start reading at [`App`], which wires the domain modules together, and at
//! [`server::serve`], which puts them behind HTTP. `ARCHITECTURE.md` at the
//! repository root has the map.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod authoring;
pub mod clock;
pub mod digest;
pub mod engine;
pub mod logging;
pub mod names;
pub mod plans;
pub mod plugins;
pub mod recovery;
pub mod server;
pub mod store;
pub mod tasks;
pub mod workers;
pub mod workflows;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alerts::delivery::{DeliveryConfig, Outbox, OutboxDeps};
use auth::Tokens;
use engine::{Clock, Loops};
use plans::{ActionPlans, PlanDeps};
use plugins::compiler::CompilerProcess;
use plugins::{FolderWatcher, Plugins, RuntimeConfig};
use recovery::{Recovery, RecoveryDeps};
use store::{RedbBackend, Store};
use tasks::{TaskDeps, Tasks};
use workers::Workers;
use workflows::Workflows;

/// Name of the database file inside the data directory.
pub const DATABASE_FILE: &str = "autoagent.redb";

/// Folder inside the data directory for compiled plugin components.
pub const ARTIFACT_CACHE_DIR: &str = "cache/components";

/// Where the host keeps its state.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Holds the redb file and the `plugins/<team>/<name>/` folders.
    pub data_dir: PathBuf,
    /// Sizes of the plugin runtime's pools.
    pub runtime: RuntimeConfig,
    /// Whether requests without a token act as admin: true for a host that
    /// listens on loopback only, where the caller is the local operator.
    pub anonymous_is_admin: bool,
    /// Requests a second each API token may send on average (bursts of
    /// twice that); 0 turns the limit off.
    pub token_rate_per_sec: u32,
    /// How long finished records (tasks, action plans, resolved incidents)
    /// are kept before they are deleted.
    pub retention: Duration,
    /// Most incidents whose recovery stages run at once.
    pub max_concurrent_recoveries: usize,
    /// The alert channels, recipient groups and delivery policy
    /// (`--alerts-config FILE`); none: every alert delivery is recorded
    /// `skipped`.
    pub alerts: Option<DeliveryConfig>,
    /// How to compile plugins in processes of their own (the `autoagent`
    /// binary and the limits it runs within; see [`plugins::compiler`]);
    /// none: they compile in the host's.
    pub compiler: Option<CompilerProcess>,
}

/// Requests a second an API token may send by default.
pub const DEFAULT_TOKEN_RATE_PER_SEC: u32 = 200;

impl AppConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            runtime: RuntimeConfig::default(),
            anonymous_is_admin: true,
            token_rate_per_sec: DEFAULT_TOKEN_RATE_PER_SEC,
            retention: engine::RETENTION_DEFAULT,
            max_concurrent_recoveries: 8,
            alerts: None,
            compiler: None,
        }
    }
}

/// Every domain module of one running host.
pub struct App {
    /// Durable state.
    pub store: Store,
    /// Registered workers.
    pub workers: Arc<Workers>,
    /// API tokens.
    pub tokens: Arc<Tokens>,
    /// Whether requests without a token act as admin.
    pub anonymous_is_admin: bool,
    /// Requests a second each token may send; 0 for no limit.
    pub token_rate_per_sec: u32,
    /// Loaded plugins and the sandbox that runs them.
    pub plugins: Arc<Plugins>,
    /// Defined workflows.
    pub workflows: Arc<Workflows>,
    /// The task queue and its scheduler.
    pub tasks: Arc<Tasks>,
    /// Action plans, their templates and their executor.
    pub plans: Arc<ActionPlans>,
    /// Health checks, incidents and their recovery.
    pub recovery: Arc<Recovery>,
    /// The alert outbox: deliveries to email, Slack, SMS and PagerDuty.
    pub alert_outbox: Arc<Outbox>,
    /// The alert rules in force.
    pub alert_rules: Arc<alerts::rules::RuleBook>,
    /// Alerts: raised, escalated, acknowledged, silenced, resolved.
    pub alerts: Arc<alerts::Alerts>,
    /// HTTP counters for `/metrics`.
    pub http: api::HttpStats,
    /// When the host started.
    pub started: Instant,
    /// The background loops (scheduler, retention, folder watcher), stopped
    /// by [`App::shutdown`].
    loops: Loops,
}

impl App {
    /// Opens the store, loads the bundled plugins and those under
    /// `<data_dir>/plugins` (and watches that folder for changes), and
    /// starts the scheduler (which queues again the
    /// tasks that were running when the host last stopped). A plugin folder
    /// that fails to load is logged and listed as failed; it does not stop
    /// the host.
    pub async fn open(config: &AppConfig) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(&config.data_dir).map_err(|err| {
            anyhow::anyhow!(
                "cannot create data directory {}: {err}",
                config.data_dir.display()
            )
        })?;
        let db_path = config.data_dir.join(DATABASE_FILE);
        let backend = RedbBackend::open(&db_path)
            .map_err(|err| anyhow::anyhow!("cannot open {}: {err}", db_path.display()))?;
        let store = Store::new(Arc::new(backend));
        let mut plugins = Plugins::new(&config.runtime, &store)
            .map_err(|err| anyhow::anyhow!("cannot start the plugin runtime: {err}"))?
            .with_folders(plugin_root(&config.data_dir))
            .with_artifact_cache(config.data_dir.join(ARTIFACT_CACHE_DIR));
        if let Some(compiler) = &config.compiler {
            plugins = plugins.with_compiler_process(compiler.clone());
        }
        plugins
            .load_bundled()
            .await
            .map_err(|err| anyhow::anyhow!("a bundled plugin failed to load: {err}"))?;
        plugins.load_folders().await;
        let plugins = Arc::new(plugins);
        let loops = Loops::new();
        plugins::residency::start(plugins.clone(), &loops);
        FolderWatcher::start(plugins.clone(), &loops)
            .map_err(|err| anyhow::anyhow!("cannot watch the plugin folders: {err}"))?;
        let tokens = Arc::new(Tokens::open(&store).await?);
        let workers = Arc::new(Workers::open(&store).await?);
        let workflows = Arc::new(Workflows::open(&store).await?);
        let deps = TaskDeps {
            store: store.clone(),
            workers: workers.clone(),
            workflows: workflows.clone(),
            plugins: plugins.clone(),
            clock: Clock::new(),
            retention: config.retention,
        };
        let clock = deps.clock;
        let tasks = Tasks::open(deps, &loops).await?;
        let plan_deps = PlanDeps {
            store: store.clone(),
            plugins: plugins.clone(),
            clock,
            retention: config.retention,
        };
        let plans = ActionPlans::open(plan_deps, &loops).await?;
        let recovery_deps = RecoveryDeps {
            store: store.clone(),
            plugins: plugins.clone(),
            clock,
            retention: config.retention,
            max_concurrent_recoveries: config.max_concurrent_recoveries,
        };
        let recovery = Recovery::open(recovery_deps, &loops).await?;
        let outbox_deps = OutboxDeps {
            store: store.clone(),
            clock,
            config: config.alerts.clone().unwrap_or_default(),
            retention: config.retention,
        };
        let alert_outbox = Outbox::open(outbox_deps, &loops).await?;
        let alert_rules = Arc::new(alerts::rules::RuleBook::open(&store)?);
        let alert_deps = alerts::AlertsDeps {
            store: store.clone(),
            clock,
            retention: config.retention,
            outbox: alert_outbox.clone(),
            rules: alert_rules.clone(),
            recovery: recovery.clone(),
            plans: plans.clone(),
            workers: workers.clone(),
            plugins: plugins.clone(),
        };
        let alerts = alerts::Alerts::open(alert_deps, &loops).await?;
        loops.spawn("memory-trim", trim_memory_forever);
        Ok(Arc::new(Self {
            tokens,
            anonymous_is_admin: config.anonymous_is_admin,
            token_rate_per_sec: config.token_rate_per_sec,
            workers,
            plugins,
            workflows,
            tasks,
            plans,
            recovery,
            alert_outbox,
            alert_rules,
            alerts,
            store,
            http: api::HttpStats::default(),
            started: Instant::now(),
            loops,
        }))
    }

    /// Stops the host's work: the background loops first (nothing new
    /// starts), then the tasks and plan actions running now get `grace` to
    /// finish; those still running after it are stopped and run again (or
    /// resume) after the next start.
    pub async fn shutdown(&self, grace: Duration) {
        let started = Instant::now();
        self.loops.stop(grace).await;
        // A recovery stopped here goes on from its step after the next start.
        self.recovery.stop();
        let left = grace.saturating_sub(started.elapsed());
        tokio::join!(
            self.tasks.drain(left),
            self.plans.drain(left),
            self.alert_outbox.drain(left)
        );
    }
}

/// How often freed memory is handed back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Hands memory freed after a burst (a walk through a long list, a flood of
/// tasks, plugins compiled at start) back to the system. glibc keeps what
/// its per-thread arenas freed for reuse, so without this a host's resident
/// memory stays at the peak of its busiest moment; `malloc_trim` returns the
/// free pages of every arena. Elsewhere this loop only waits for shutdown.
async fn trim_memory_forever(mut shutdown: engine::Shutdown) {
    loop {
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(TRIM_EVERY) => {}
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: `malloc_trim` only releases free heap memory; it takes
        // the allocator's own locks and touches no memory the program uses.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Where plugin folders live inside a data directory.
pub fn plugin_root(data_dir: &Path) -> PathBuf {
    data_dir.join("plugins")
}
