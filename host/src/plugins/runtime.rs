//! The sandbox: one wasmtime [`Engine`], a pooling allocator, and a fresh
//! [`Store`] for every call.
//!
//! A call gets its own instance, made from the plugin's pre-instantiated
//! component, and nothing of it outlives the call: no state leaks from one
//! call to the next, and a trap, a timeout or a memory bomb poisons only that
//! call's store, which is then dropped. Time is enforced by epoch
//! interruption (a ticker thread advances the epoch; the guest yields to tokio
//! on every tick and is interrupted past its deadline), memory by a
//! [`ResourceLimiter`] sized from the manifest and charged against one
//! host-wide [`MemoryBudget`].
//!
//! Guest code never runs on the threads that serve the API: every call runs
//! on the runtime's own pool of threads ([`GuestPool`]). A call that keeps
//! computing past an epoch tick needs a [`Slice`] of its team's share of the
//! pool, half of its threads, so that a team whose plugins spin or eat
//! memory slows its own long calls and nobody else's; short calls, most of
//! them, never wait for one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::Either;
use tokio::sync::Semaphore;

use wasmtime::component::{
    Component, ComponentExportIndex, HasSelf, InstancePre, Linker, ResourceTable,
};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap, UpdateDeadline,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::host_api::{CallContext, HostContext};
use super::http::HttpGate;
use super::manifest::{Limits, MAX_MEMORY_MIB, PluginKind};
use super::outcome::{CallError, Observed};

/// Generated bindings for the WIT package in `wit/`.
pub(crate) mod bindings {
    /// The host imports, shared by all three worlds.
    pub(crate) mod imports {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "host-imports",
            imports: { default: async },
        });
    }

    /// World `capability`.
    pub(crate) mod capability {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "capability",
            imports: { default: async },
            exports: { default: async },
            with: {
                "autoagent:plugin/log": super::imports::autoagent::plugin::log,
                "autoagent:plugin/kv": super::imports::autoagent::plugin::kv,
                "autoagent:plugin/config": super::imports::autoagent::plugin::config,
                "autoagent:plugin/commands": super::imports::autoagent::plugin::commands,
            },
        });
    }

    /// World `health-check`.
    pub(crate) mod health_check {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "health-check",
            imports: { default: async },
            exports: { default: async },
            with: {
                "autoagent:plugin/types": super::capability::autoagent::plugin::types,
                "autoagent:plugin/log": super::imports::autoagent::plugin::log,
                "autoagent:plugin/kv": super::imports::autoagent::plugin::kv,
                "autoagent:plugin/config": super::imports::autoagent::plugin::config,
                "autoagent:plugin/commands": super::imports::autoagent::plugin::commands,
            },
        });
    }

    /// World `recovery-strategy`.
    pub(crate) mod recovery_strategy {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "recovery-strategy",
            imports: { default: async },
            exports: { default: async },
            with: {
                "autoagent:plugin/types": super::capability::autoagent::plugin::types,
                "autoagent:plugin/log": super::imports::autoagent::plugin::log,
                "autoagent:plugin/kv": super::imports::autoagent::plugin::kv,
                "autoagent:plugin/config": super::imports::autoagent::plugin::config,
                "autoagent:plugin/commands": super::imports::autoagent::plugin::commands,
            },
        });
    }
}

use bindings::capability::{CapabilityIndices, autoagent::plugin::types as wit};
use bindings::health_check::HealthCheckIndices;
use bindings::recovery_strategy::RecoveryStrategyIndices;

/// How often the epoch advances. A call's deadline is checked, and the guest
/// yields to other tasks, once per tick.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Room for a guest's panic message: enough to explain, small enough to keep.
const STDERR_CAPTURE_BYTES: usize = 16 * 1024;

/// Room for what a guest hands the host in one go besides its output (a
/// key-value write, a log line, an HTTP body chunk), on top of the larger of
/// its output limit and key-value quota.
const HOSTCALL_SLACK_BYTES: usize = 1 << 20;

/// Sizes of the instance pools and of the guest thread pool, and the
/// host-wide budget for guest memory, shared by all plugins of one runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Plugin calls that may hold an instance at the same moment.
    pub max_instances: u32,
    /// Linear memory all calls together may hold, in bytes. A call whose
    /// memory would grow past it fails with `memory_limit`.
    pub guest_memory_bytes: u64,
    /// Threads that run guest code, apart from the API's.
    pub guest_threads: usize,
    /// Bytes of each linear memory kept resident between calls (zeroed
    /// with memset) rather than returned to the kernel and faulted in
    /// again; see [`DEFAULT_KEEP_RESIDENT`].
    pub keep_resident: usize,
    /// Components compiled (or read from the artifact cache) at the same
    /// moment; more loads wait their turn. One per core: compiling is
    /// CPU-bound, and each compile may hold up to its compiler process's
    /// memory limit.
    pub compiles_at_once: usize,
}

/// What stays resident of a call's linear memory when its instance is
/// dropped, chosen by measurement (BENCHMARKS.md, "One plugin call"): 128
/// KiB covers a plugin built with the SDK's 64 KiB stack and its first heap
/// pages, so a typical call faults in nothing (9 µs a call against 20 µs at
/// 64 KiB); more buys nothing for such a plugin and, for one with a large
/// memory, memset costs more than the faults it saves.
pub const DEFAULT_KEEP_RESIDENT: usize = 128 << 10;

impl Default for RuntimeConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            max_instances: 1000,
            guest_memory_bytes: default_guest_memory_bytes(),
            guest_threads: (2 * cores).max(4),
            keep_resident: DEFAULT_KEEP_RESIDENT,
            compiles_at_once: cores,
        }
    }
}

impl RuntimeConfig {
    /// The defaults with a smaller instance pool, for tests and benchmarks.
    pub fn with_instances(max_instances: u32) -> Self {
        Self {
            max_instances,
            ..Self::default()
        }
    }
}

/// Half of the machine's memory (from `/proc/meminfo`), or 2 GiB where that
/// cannot be read.
pub fn default_guest_memory_bytes() -> u64 {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        });
    total_kib.map_or(2 << 30, |kib| kib * 1024 / 2)
}

/// Guest memory in use by all calls together, against one limit.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes, none used.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
        }
    }

    /// Takes `bytes` from the budget if they fit.
    fn reserve(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes in use now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// The threads guest code runs on, and each team's share of them.
struct GuestPool {
    /// Taken out in `Drop`, where it is shut down without blocking.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    per_team: usize,
    shares: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl GuestPool {
    fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(2);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("guest")
            .enable_all()
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            per_team: threads / 2,
            shares: Mutex::default(),
        })
    }

    fn share_of(&self, team: &str) -> Arc<Semaphore> {
        let mut shares = self.shares.lock().expect("guest shares poisoned");
        if let Some(share) = shares.get(team) {
            return share.clone();
        }
        let share = Arc::new(Semaphore::new(self.per_team));
        shares.insert(team.to_owned(), share.clone());
        share
    }

    /// Runs `call` on the pool. If the caller stops waiting (its task was
    /// cancelled), the call is stopped too.
    ///
    /// A plain function, not `async`: an `async fn` would keep `call` twice
    /// in its own future (once as its argument, once as what it awaits),
    /// and a call's future is large.
    fn run<T, F>(&self, call: F) -> Either<F, Hop<T>>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, CallError>> + Send + 'static,
    {
        // Work already on the pool (a task's attempt) calls in place; a
        // call from elsewhere (an API request) hops over, which costs two
        // thread wake-ups.
        if tokio::runtime::Handle::try_current().is_ok_and(|here| here.id() == self.handle.id()) {
            Either::Left(call)
        } else {
            Either::Right(Hop(self.handle.spawn(call)))
        }
    }
}

impl Drop for GuestPool {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A call's claim on its team's share of the guest threads.
///
/// A call takes one only when it is still computing at an epoch tick (it
/// waits for it there, without running), keeps it to its end, and gives it
/// back while it waits on the host (a key-value write, a command), so a
/// team's long computations use at most its share of the threads while its
/// short and waiting calls never queue behind them.
pub(super) struct Slice {
    /// Where a claim is kept once the call first makes one (most calls
    /// end before an epoch tick and never do).
    held: Option<Arc<Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>>,
}

impl Slice {
    /// A call's slice before any claim: nothing allocated, nothing shared,
    /// so that the many calls that never claim one pay nothing for it.
    fn new() -> Self {
        Self { held: None }
    }

    /// Gives the claim back, for the time the call waits on the host.
    pub(super) fn release(&self) {
        if let Some(held) = &self.held {
            held.lock().expect("slice poisoned").take();
        }
    }

    fn is_held(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|held| held.lock().expect("slice poisoned").is_some())
    }

    /// Waits for a claim on `share` (the call's team's) and keeps it.
    fn claim(
        &mut self,
        share: &Arc<Semaphore>,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        let held = self.held.get_or_insert_with(Arc::default).clone();
        let share = share.clone();
        Box::pin(async move {
            if let Ok(permit) = share.acquire_owned().await {
                *held.lock().expect("slice poisoned") = Some(permit);
            }
        })
    }
}

/// A call spawned onto the guest pool, aborted when its waiter goes away.
struct Hop<T>(tokio::task::JoinHandle<Result<T, CallError>>);

impl<T> Future for Hop<T> {
    type Output = Result<T, CallError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|err| {
                Err(CallError::Host(format!("the call's task failed: {err}")))
            })
        })
    }
}

impl<T> Drop for Hop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A component compiled, linked and checked against its kind's world, ready
/// to be instantiated once per call. Cheap to clone (one reference count).
#[derive(Clone)]
pub struct Prepared(Arc<Linked>);

struct Linked {
    kind: PluginKind,
    pre: InstancePre<CallState>,
    /// Where the kind's exports are in the component: `invoke` (and
    /// `describe`), `check` or `recover`.
    call: ComponentExportIndex,
    describe: Option<ComponentExportIndex>,
}

/// Everything one call's store holds. Built afresh for every call.
pub struct CallState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_gate: HttpGate,
    table: ResourceTable,
    limiter: CallLimiter,
    stderr: MemoryOutputPipe,
    pub(super) deadline: Instant,
    timed_out: bool,
    pub(super) host: HostContext,
    pub(super) slice: Slice,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_gate,
        }
    }
}

/// Enforces the manifest's memory limit and remembers that it did, so the
/// resulting trap can be reported as what it is.
struct CallLimiter {
    max_memory_bytes: usize,
    memory_exceeded: bool,
    budget: Arc<MemoryBudget>,
    /// Bytes this call holds of the budget; given back on drop.
    reserved: u64,
    budget_exceeded: bool,
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.memory_exceeded = true;
            return Ok(false);
        }
        let growth = desired.saturating_sub(current) as u64;
        if !self.budget.reserve(growth) {
            self.budget_exceeded = true;
            return Ok(false);
        }
        self.reserved += growth;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far past any real need.
        Ok(desired <= 1_000_000)
    }
}

impl Drop for CallLimiter {
    fn drop(&mut self) {
        self.budget.release(self.reserved);
    }
}

/// The engine settings that shape compiled code, and nothing else: what a
/// [`compiler_engine`] shares with every runtime's engine.
fn code_settings() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    config
}

/// An engine that compiles components exactly as a [`Runtime`]'s engine
/// does (same compatibility hash; a test checks it) but holds no instance
/// pool: what the compiler process uses (see `plugins::compiler`).
pub fn compiler_engine() -> wasmtime::Result<Engine> {
    Engine::new(&code_settings())
}

/// The engine, the linker with every host import, the epoch ticker, the
/// guest threads and the memory budget.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    pool: GuestPool,
    budget: Arc<MemoryBudget>,
}

impl Runtime {
    /// Builds the engine and linker and starts the epoch ticker.
    pub fn new(config: &RuntimeConfig) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * 4)
            .total_memories(config.max_instances * 2)
            .total_tables(config.max_instances * 4)
            .total_stacks(config.max_instances)
            .max_memory_size((MAX_MEMORY_MIB << 20) as usize)
            // What stays resident is zeroed with memset when a call's
            // instance is dropped; the rest is returned with madvise and
            // faulted in again.
            .linear_memory_keep_resident(config.keep_resident)
            .table_keep_resident(1 << 16);

        let mut wasm = code_settings();
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // Outbound HTTP; every request passes the plugin's allow-list in
        // `HttpGate`, so a plugin that is granted no host can reach none.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::imports::HostImports::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;

        spawn_epoch_ticker(&engine);
        let pool = GuestPool::new(config.guest_threads)?;
        Ok(Self {
            engine,
            linker,
            pool,
            budget: Arc::new(MemoryBudget::new(config.guest_memory_bytes)),
        })
    }

    /// The host-wide guest memory budget.
    pub fn memory_budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// `team`'s share of the guest threads, which every call of its
    /// plugins takes a slice of (see [`Slice`]).
    pub(super) fn team_share(&self, team: &str) -> Arc<Semaphore> {
        self.pool.share_of(team)
    }

    /// The guest pool's runtime. Work that calls plugins many times (a
    /// task's attempt) runs there, so its calls need no hop between
    /// threads.
    pub fn guest_runtime(&self) -> &tokio::runtime::Handle {
        &self.pool.handle
    }

    /// The engine, for compiling components (CPU-heavy: off the executor).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Links a compiled component and checks it against `kind`'s world.
    pub fn prepare(&self, kind: PluginKind, component: &Component) -> wasmtime::Result<Prepared> {
        let pre: InstancePre<CallState> = self.linker.instantiate_pre(component)?;
        // The generated bindings check every export of the world against
        // its WIT types; calls then find their export by index.
        let call = match kind {
            PluginKind::Capability => CapabilityIndices::new(&pre).map(|_| "invoke"),
            PluginKind::HealthCheck => HealthCheckIndices::new(&pre).map(|_| "check"),
            PluginKind::RecoveryStrategy => RecoveryStrategyIndices::new(&pre).map(|_| "recover"),
        }?;
        let index = |name: &str| {
            component
                .get_export_index(None, name)
                .ok_or_else(|| wasmtime::format_err!("no export `{name}` found"))
        };
        Ok(Prepared(Arc::new(Linked {
            kind,
            call: index(call)?,
            describe: match kind {
                PluginKind::Capability => Some(index("describe")?),
                PluginKind::HealthCheck | PluginKind::RecoveryStrategy => None,
            },
            pre,
        })))
    }

    /// Runs one export on a fresh store on the guest pool, within the
    /// call's limits, and names what went wrong if it failed. Every export
    /// of every plugin kind is called through here, so each gets the same
    /// isolation, limits and error kinds.
    ///
    /// The store is made here, before the call's future: that future is
    /// moved at every layer above it, so it holds as little as it can.
    fn call<T, R>(
        &self,
        limits: &Limits,
        host: HostContext,
        run: R,
    ) -> impl Future<Output = Result<T, CallError>> + Send + use<T, R>
    where
        T: Send + 'static,
        R: for<'s> FnOnce(&'s mut Store<CallState>, CallContext<'s>) -> ExportCall<'s, T>
            + Send
            + 'static,
    {
        let limits = limits.clone();
        let told = host.told();
        let mut store = new_store(&self.engine, &self.budget, &limits, host);
        self.pool.run(async move {
            let outcome = bounded(&limits, run(&mut store, told.context())).await;
            settle(&store, &limits, outcome)
        })
    }

    /// `prepared`'s linked component, if it is of `kind`.
    fn linked(prepared: &Prepared, kind: PluginKind) -> Result<Arc<Linked>, CallError> {
        if prepared.0.kind == kind {
            Ok(prepared.0.clone())
        } else {
            Err(CallError::WrongKind(prepared.0.kind))
        }
    }

    /// Runs `describe` on a capability plugin.
    pub async fn describe(
        &self,
        prepared: &Prepared,
        limits: &Limits,
        host: HostContext,
    ) -> Result<Vec<(String, String)>, CallError> {
        let linked = Self::linked(prepared, PluginKind::Capability)?;
        let describe = linked
            .describe
            .ok_or(CallError::WrongKind(PluginKind::Capability))?;
        let infos = self
            .call(limits, host, move |store, _ctx| {
                Box::pin(async move {
                    let instance = linked.pre.instantiate_async(&mut *store).await?;
                    let describe = instance.get_typed_func::<(), (Vec<wit::CapabilityInfo>,)>(
                        &mut *store,
                        &describe,
                    )?;
                    Ok(describe.call_async(&mut *store, ()).await?.0)
                })
            })
            .await?;
        Ok(infos
            .into_iter()
            .map(|info| (info.name, info.description))
            .collect())
    }

    /// Runs `invoke` on a capability plugin and returns its JSON output text.
    pub async fn invoke(
        &self,
        prepared: &Prepared,
        limits: &Limits,
        host: HostContext,
        capability: &str,
        input: String,
    ) -> Result<String, CallError> {
        let linked = Self::linked(prepared, PluginKind::Capability)?;
        let capability = capability.to_owned();
        let output = self
            .call(limits, host, move |store, ctx| {
                Box::pin(async move {
                    let instance = linked.pre.instantiate_async(&mut *store).await?;
                    let invoke = instance.get_typed_func::<
                        (CallContext<'_>, &str, &str),
                        (Result<String, wit::PluginError>,),
                    >(&mut *store, &linked.call)?;
                    let params = (ctx, capability.as_str(), input.as_str());
                    Ok(invoke.call_async(&mut *store, params).await?.0)
                })
            })
            .await?
            .map_err(CallError::from)?;
        if output.len() as u64 > limits.max_output_bytes {
            return Err(CallError::OutputTooLarge {
                size: Some(output.len()),
                limit: limits.max_output_bytes,
            });
        }
        Ok(output)
    }

    /// Runs `check` on a health-check plugin against `target` (JSON text).
    pub async fn check(
        &self,
        prepared: &Prepared,
        limits: &Limits,
        host: HostContext,
        target: String,
    ) -> Result<wit::HealthReport, CallError> {
        let linked = Self::linked(prepared, PluginKind::HealthCheck)?;
        self.call(limits, host, move |store, ctx| {
            Box::pin(async move {
                let instance = linked.pre.instantiate_async(&mut *store).await?;
                let check = instance.get_typed_func::<
                    (CallContext<'_>, &str),
                    (Result<wit::HealthReport, wit::PluginError>,),
                >(&mut *store, &linked.call)?;
                Ok(check
                    .call_async(&mut *store, (ctx, target.as_str()))
                    .await?
                    .0)
            })
        })
        .await?
        .map_err(CallError::from)
    }

    /// Runs `recover` on a recovery-strategy plugin for `incident`.
    pub async fn recover(
        &self,
        prepared: &Prepared,
        limits: &Limits,
        host: HostContext,
        incident: wit::Incident,
    ) -> Result<wit::RecoveryReport, CallError> {
        let linked = Self::linked(prepared, PluginKind::RecoveryStrategy)?;
        self.call(limits, host, move |store, ctx| {
            Box::pin(async move {
                let instance = linked.pre.instantiate_async(&mut *store).await?;
                let recover = instance.get_typed_func::<
                    (CallContext<'_>, &wit::Incident),
                    (Result<wit::RecoveryReport, wit::PluginError>,),
                >(&mut *store, &linked.call)?;
                Ok(recover.call_async(&mut *store, (ctx, &incident)).await?.0)
            })
        })
        .await?
        .map_err(CallError::from)
    }
}

/// One export's call on a store, as [`Runtime::call`] runs it.
type ExportCall<'s, T> = std::pin::Pin<Box<dyn Future<Output = wasmtime::Result<T>> + Send + 's>>;

/// A fresh store for one call: its WASI context, limits and deadline.
fn new_store(
    engine: &Engine,
    budget: &Arc<MemoryBudget>,
    limits: &Limits,
    host: HostContext,
) -> Store<CallState> {
    let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_BYTES);
    // Deny by default: no preopened directories, no environment, no
    // arguments, no network; stdout is discarded and stderr kept only to
    // explain a panic. A health check granted `reach-target` may reach its
    // target's address during this call only (see `reach`).
    let mut wasi = WasiCtx::builder();
    wasi.stderr(stderr.clone());
    if let Some(reach) = &host.reach {
        let who = [
            host.manifest.team.clone(),
            host.manifest.name.clone(),
            host.call_id.to_string(),
        ];
        reach.grant(&mut wasi, who);
    }
    let wasi = wasi.build();
    let http_gate = HttpGate::new(host.manifest.clone(), host.call_id)
        .with_extra(host.reach.as_ref().map(|reach| reach.http_pattern()));
    // The most a guest may hand the host in one go: its output (or a
    // key-value value up to its quota) and some room. Past it wasmtime stops
    // the transfer before allocating, which `settle` reports as an output
    // that is too large.
    let largest_transfer = limits
        .max_output_bytes
        .max(host.manifest.permissions.kv_quota_bytes.unwrap_or(0))
        .min(usize::MAX as u64) as usize;
    let state = CallState {
        wasi,
        http: WasiHttpCtx::new(),
        http_gate,
        table: ResourceTable::new(),
        limiter: CallLimiter {
            max_memory_bytes: (limits.memory_mib << 20) as usize,
            memory_exceeded: false,
            budget: budget.clone(),
            reserved: 0,
            budget_exceeded: false,
        },
        stderr,
        deadline: Instant::now() + Duration::from_millis(limits.timeout_ms),
        timed_out: false,
        host,
        slice: Slice::new(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    store.set_hostcall_fuel(largest_transfer.saturating_add(HOSTCALL_SLACK_BYTES));
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut store| {
        let state = store.data_mut();
        if Instant::now() >= state.deadline {
            state.timed_out = true;
            return Ok(UpdateDeadline::Interrupt);
        }
        // Still computing at a tick: go on within the team's share, waiting
        // (not running) for a slice of it if none is held.
        if state.slice.is_held() {
            Ok(UpdateDeadline::Yield(1))
        } else {
            Ok(UpdateDeadline::YieldCustom(
                1,
                state.slice.claim(&state.host.share),
            ))
        }
    });
    store
}

impl Prepared {
    /// The kind of plugin this is.
    pub fn kind(&self) -> PluginKind {
        self.0.kind
    }
}

/// Outer bound on a call, for time spent in host imports, where epoch
/// interruption does not reach. The epoch deadline normally fires first,
/// and bounds a first poll too (guest code yields at every epoch tick).
async fn bounded<T>(
    limits: &Limits,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> Option<wasmtime::Result<T>> {
    let grace = Duration::from_millis(limits.timeout_ms) + EPOCH_TICK * 10;
    crate::clock::within_after_first_poll(grace, call).await
}

/// Turns the raw outcome of a call into its result, naming what went wrong
/// from what the store saw (a deadline, the memory limit, a trap; see
/// [`CallError::of_failed_call`]). `None` is a call the host's own timer
/// gave up on.
fn settle<T>(
    store: &Store<CallState>,
    limits: &Limits,
    outcome: Option<wasmtime::Result<T>>,
) -> Result<T, CallError> {
    let state = store.data();
    let err = match outcome {
        Some(Ok(value)) => return Ok(value),
        Some(Err(err)) => err,
        None => return Err(CallError::Timeout(limits.timeout_ms)),
    };
    let stderr = state.stderr.contents();
    Err(CallError::of_failed_call(
        &Observed {
            timed_out: state.timed_out,
            memory_exceeded: state.limiter.memory_exceeded,
            budget_exceeded: state.limiter.budget_exceeded,
            budget_mib: state.limiter.budget.limit() >> 20,
            trap: err.downcast_ref::<Trap>().copied(),
            error: format!("{err:#}"),
            stderr: &stderr,
        },
        limits,
    ))
}

fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            // Ends once every handle on the engine is gone.
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}

#[cfg(test)]
mod tests {
    use std::hash::{Hash, Hasher};

    use super::*;

    fn hash_of(value: impl Hash) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        value.hash(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn the_compiler_engine_compiles_what_every_runtime_runs() {
        let compiler = hash_of(compiler_engine().unwrap().precompile_compatibility_hash());
        for config in [
            RuntimeConfig::default(),
            RuntimeConfig::with_instances(4),
            RuntimeConfig {
                keep_resident: 1 << 20,
                guest_threads: 7,
                ..RuntimeConfig::with_instances(64)
            },
        ] {
            let runtime = Runtime::new(&config).unwrap();
            let engine = hash_of(runtime.engine().precompile_compatibility_hash());
            assert_eq!(engine, compiler, "{config:?}");
        }
    }
}
