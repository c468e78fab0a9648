//! The sandbox: one wasmtime [`Engine`], a pooling allocator, and a fresh
//! [`Store`] for every call.
//!
//! A call gets its own instance, made from the plugin's pre-instantiated
//! component, and nothing of it outlives the call: no state leaks from one
//! call to the next, and a trap, a timeout or a memory bomb poisons only that
//! call's store, which is then dropped. Time is enforced by epoch
//! interruption (a ticker thread advances the epoch; the guest yields to tokio
//! on every tick and is interrupted past its deadline), memory by a
//! [`ResourceLimiter`] sized from the manifest.

use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap, UpdateDeadline,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::host_api::HostContext;
use super::http::HttpGate;
use super::manifest::{Limits, MAX_MEMORY_MIB, PluginKind};

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
                "autoagent:plugin/log": super::imports::autoagent::plugin::log,
                "autoagent:plugin/kv": super::imports::autoagent::plugin::kv,
                "autoagent:plugin/config": super::imports::autoagent::plugin::config,
                "autoagent:plugin/commands": super::imports::autoagent::plugin::commands,
            },
        });
    }
}

use bindings::capability::{CapabilityPre, autoagent::plugin::types as cap_types};
use bindings::health_check::HealthCheckPre;
use bindings::recovery_strategy::RecoveryStrategyPre;

/// How often the epoch advances. A call's deadline is checked, and the guest
/// yields to other tasks, once per tick.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Room for a guest's panic message: enough to explain, small enough to keep.
const STDERR_CAPTURE_BYTES: usize = 16 * 1024;

/// Sizes of the instance pools, shared by all plugins of one runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Plugin calls that may hold an instance at the same moment.
    pub max_instances: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_instances: 1000,
        }
    }
}

/// Why a plugin call did not produce a result. Each variant is the failure of
/// that one call; the host and other calls are unaffected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The plugin ran and reported an error of its own.
    #[error("{kind}: {message}")]
    Plugin {
        /// `invalid-input`, `unsupported`, `failed` or `denied`.
        kind: &'static str,
        /// The plugin's message.
        message: String,
    },
    /// The call ran past its time limit and was interrupted.
    #[error("call exceeded its time limit of {0} ms and was stopped")]
    Timeout(u64),
    /// The guest tried to grow its memory past its limit.
    #[error("call exceeded its memory limit of {0} MiB and was stopped")]
    MemoryLimit(u64),
    /// The guest trapped (a panic, a stack overflow, an invalid operation).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The guest answered with more bytes than its manifest allows.
    #[error("plugin output is {size} bytes, over its limit of {limit} bytes")]
    OutputTooLarge {
        /// Bytes returned.
        size: usize,
        /// Bytes allowed.
        limit: u64,
    },
    /// The guest answered with text that is not JSON.
    #[error("plugin output is not valid JSON: {0}")]
    InvalidOutput(String),
    /// The call's input could not be sent (not JSON-encodable).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Every slot for this plugin stayed taken for the whole time limit.
    #[error("plugin is busy: all {0} call slots stayed taken")]
    Busy(u32),
    /// The called export does not exist for this plugin's kind.
    #[error("plugin is a {0:?} plugin and has no such export")]
    WrongKind(PluginKind),
    /// The host could not set the call up (instance pool exhausted, ...).
    #[error("host could not run the call: {0}")]
    Host(String),
}

impl CallError {
    /// A stable, machine-readable name for the error, used in the API and in
    /// metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Plugin { .. } => "plugin_error",
            Self::Timeout(_) => "timeout",
            Self::MemoryLimit(_) => "memory_limit",
            Self::Trap(_) => "trap",
            Self::OutputTooLarge { .. } => "output_too_large",
            Self::InvalidOutput(_) => "invalid_output",
            Self::InvalidInput(_) => "invalid_input",
            Self::Busy(_) => "busy",
            Self::WrongKind(_) => "wrong_kind",
            Self::Host(_) => "host_error",
        }
    }
}

impl From<cap_types::PluginError> for CallError {
    fn from(err: cap_types::PluginError) -> Self {
        use cap_types::PluginError as E;
        let (kind, message) = match err {
            E::InvalidInput(m) => ("invalid-input", m),
            E::Unsupported(m) => ("unsupported", m),
            E::Failed(m) => ("failed", m),
            E::Denied(m) => ("denied", m),
        };
        Self::Plugin { kind, message }
    }
}

/// A component compiled, linked and checked against its kind's world, ready
/// to be instantiated once per call.
#[derive(Clone)]
pub enum Prepared {
    /// World `capability`.
    Capability(CapabilityPre<CallState>),
    /// World `health-check`.
    HealthCheck(HealthCheckPre<CallState>),
    /// World `recovery-strategy`.
    RecoveryStrategy(RecoveryStrategyPre<CallState>),
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
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.memory_exceeded = true;
            return Ok(false);
        }
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

/// The engine, the linker with every host import, and the epoch ticker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
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
            // faulted in again. 64 KiB (a guest's stack and first data)
            // measured fastest per call: 1 MiB spent more on memset than it
            // saved in faults (BENCHMARKS.md).
            .linear_memory_keep_resident(64 << 10)
            .table_keep_resident(1 << 16);

        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // Outbound HTTP; every request passes the plugin's allow-list in
        // `HttpGate`, so a plugin that is granted no host can reach none.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::imports::HostImports::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;

        spawn_epoch_ticker(&engine);
        Ok(Self { engine, linker })
    }

    /// The engine, for compiling components (CPU-heavy: off the executor).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Links a compiled component and checks it against `kind`'s world.
    pub fn prepare(&self, kind: PluginKind, component: &Component) -> wasmtime::Result<Prepared> {
        let pre: InstancePre<CallState> = self.linker.instantiate_pre(component)?;
        Ok(match kind {
            PluginKind::Capability => Prepared::Capability(CapabilityPre::new(pre)?),
            PluginKind::HealthCheck => Prepared::HealthCheck(HealthCheckPre::new(pre)?),
            PluginKind::RecoveryStrategy => {
                Prepared::RecoveryStrategy(RecoveryStrategyPre::new(pre)?)
            }
        })
    }

    fn new_store(&self, limits: &Limits, host: HostContext) -> Store<CallState> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_BYTES);
        // Deny by default: no preopened directories, no environment, no
        // arguments, no network; stdout is discarded and stderr kept only to
        // explain a panic.
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        let state = CallState {
            wasi,
            http: WasiHttpCtx::new(),
            http_gate: HttpGate::new(host.manifest.clone(), host.call_id.clone()),
            table: ResourceTable::new(),
            limiter: CallLimiter {
                max_memory_bytes: (limits.memory_mib << 20) as usize,
                memory_exceeded: false,
            },
            stderr,
            deadline: Instant::now() + Duration::from_millis(limits.timeout_ms),
            timed_out: false,
            host,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut store| {
            let state = store.data_mut();
            if Instant::now() >= state.deadline {
                state.timed_out = true;
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }

    /// Runs `describe` on a capability plugin.
    pub async fn describe(
        &self,
        prepared: &Prepared,
        limits: &Limits,
        host: HostContext,
    ) -> Result<Vec<(String, String)>, CallError> {
        let Prepared::Capability(pre) = prepared else {
            return Err(CallError::WrongKind(prepared.kind()));
        };
        let mut store = self.new_store(limits, host);
        let outcome = bounded(limits, async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_describe(&mut store).await
        })
        .await;
        let infos = settle(&store, limits, outcome)?;
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
        input: &str,
    ) -> Result<String, CallError> {
        let Prepared::Capability(pre) = prepared else {
            return Err(CallError::WrongKind(prepared.kind()));
        };
        let ctx = host.wit_context();
        let mut store = self.new_store(limits, host);
        let outcome = bounded(limits, async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance
                .call_invoke(&mut store, &ctx, capability, input)
                .await
        })
        .await;
        let output = settle(&store, limits, outcome)?.map_err(CallError::from)?;
        if output.len() as u64 > limits.max_output_bytes {
            return Err(CallError::OutputTooLarge {
                size: output.len(),
                limit: limits.max_output_bytes,
            });
        }
        Ok(output)
    }
}

impl Prepared {
    /// The kind of plugin this is.
    pub fn kind(&self) -> PluginKind {
        match self {
            Self::Capability(_) => PluginKind::Capability,
            Self::HealthCheck(_) => PluginKind::HealthCheck,
            Self::RecoveryStrategy(_) => PluginKind::RecoveryStrategy,
        }
    }
}

/// Outer bound on a call, for time spent in host imports, where epoch
/// interruption does not reach. The epoch deadline normally fires first.
async fn bounded<T>(
    limits: &Limits,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> Option<wasmtime::Result<T>> {
    let grace = Duration::from_millis(limits.timeout_ms) + EPOCH_TICK * 10;
    tokio::time::timeout(grace, call).await.ok()
}

/// Turns the raw outcome of a call into its result, naming what went wrong
/// from what the store saw: a deadline, the memory limit, or a trap.
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
    if state.timed_out {
        return Err(CallError::Timeout(limits.timeout_ms));
    }
    if state.limiter.memory_exceeded {
        return Err(CallError::MemoryLimit(limits.memory_mib));
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Err(CallError::Timeout(limits.timeout_ms)),
        Some(Trap::StackOverflow) => Err(CallError::Trap("stack overflow".into())),
        Some(trap) => {
            let stderr = state.stderr.contents();
            let said = String::from_utf8_lossy(&stderr);
            let said = said.trim();
            if said.is_empty() {
                Err(CallError::Trap(trap.to_string()))
            } else {
                Err(CallError::Trap(format!("{trap}; the plugin said: {said}")))
            }
        }
        None => {
            let message = format!("{err:#}");
            if message.contains("instance") && message.contains("limit") {
                Err(CallError::Host(format!(
                    "instance pool exhausted: {message}"
                )))
            } else {
                Err(CallError::Trap(message))
            }
        }
    }
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
