//! One plugin call through AutoAgent (registry lookup, call slot, fresh
//! store with limits and deadline, instantiate, invoke, JSON in and out)
//! against the same call through bare wasmtime with the same engine
//! settings (pooling allocator, epoch interruption), in the same run.
//!
//! Run with `cargo bench -p autoagent-tests --bench plugin_call`; add
//! `--features extism` for the same call through Extism (fresh instance
//! per call, and its default: one reused instance).
//! The guest is `guest-echo`, capability `ping`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use autoagent::names::Name;
use autoagent::plugins::{Caller, PluginSource, Plugins, RuntimeConfig};
use autoagent::store::{RedbBackend, Store};
use autoagent_tests::guests;
use autoagent_tests::report::{self, Figure, Report};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

mod bare {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "capability",
        exports: { default: async },
    });
}

// No-op host imports: bare wasmtime has no log, state, config or commands.
impl bare::autoagent::plugin::log::Host for BareState {
    fn log(&mut self, _: bare::autoagent::plugin::log::Level, _: String, _: Vec<(String, String)>) {
    }
}

impl bare::autoagent::plugin::kv::Host for BareState {
    fn get(&mut self, _: String) -> Result<Option<Vec<u8>>, bare::autoagent::plugin::kv::KvError> {
        Ok(None)
    }
    fn set(&mut self, _: String, _: Vec<u8>) -> Result<(), bare::autoagent::plugin::kv::KvError> {
        Ok(())
    }
    fn delete(&mut self, _: String) -> Result<(), bare::autoagent::plugin::kv::KvError> {
        Ok(())
    }
    fn list_keys(
        &mut self,
        _: String,
    ) -> Result<Vec<String>, bare::autoagent::plugin::kv::KvError> {
        Ok(Vec::new())
    }
}

impl bare::autoagent::plugin::config::Host for BareState {
    fn get(&mut self, _: String) -> Result<Option<String>, String> {
        Ok(None)
    }
}

impl bare::autoagent::plugin::commands::Host for BareState {
    fn run(
        &mut self,
        _: String,
        _: Vec<String>,
    ) -> Result<bare::autoagent::plugin::commands::CommandOutput, String> {
        Err("no commands".into())
    }
}

impl bare::autoagent::plugin::types::Host for BareState {}

struct BareState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiHttpView for BareState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

const CALLS_PER_ROUND: u32 = 5_000;
const ROUNDS: usize = 7;
/// How long each calls-per-second round runs.
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(2);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let wasm = std::fs::read(guests::GUEST_ECHO).unwrap();
    let manifest = std::fs::read_to_string(guests::GUEST_ECHO_MANIFEST).unwrap();

    // Ours.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(Arc::new(
        RedbBackend::open(&dir.path().join("b.redb")).unwrap(),
    ));
    let config = RuntimeConfig {
        keep_resident: keep_resident(),
        ..RuntimeConfig::with_instances(100)
    };
    let plugins = Plugins::new(&config, &store).unwrap();
    plugins
        .load(&manifest, wasm.clone(), PluginSource::Bundled)
        .await
        .unwrap();
    // Measure where the host makes its calls: on the guest pool, as a
    // task's attempt does (a call from another runtime, such as an API
    // request's, adds a hop between threads; see BENCHMARKS.md).
    let plugins = Arc::new(plugins);
    let pool = plugins.guest_runtime().clone();
    pool.spawn(measure(plugins, wasm, config.guest_threads))
        .await
        .unwrap();
}

/// `KEEP_RESIDENT` bytes (the host's default when unset), for both sides.
fn keep_resident() -> usize {
    autoagent_tests::setting("KEEP_RESIDENT", autoagent::plugins::DEFAULT_KEEP_RESIDENT)
}

async fn measure(plugins: Arc<Plugins>, wasm: Vec<u8>, threads: usize) {
    let input = serde_json::Value::Null;
    let (team, plugin) = (Name::from_static("testing"), Name::from_static("echo"));
    let ours = || async {
        let out = plugins
            .invoke(&team, &plugin, "ping", &input, Caller::default())
            .await
            .unwrap();
        assert_eq!(out["pong"], true);
    };
    let bare = Arc::new(Bare::new(&wasm));
    #[cfg(feature = "extism")]
    let extism = ExtismSide::new();
    #[cfg(feature = "extism")]
    let mut reused = extism.instance();

    // Warm every side up, then alternate rounds so drift hits all alike.
    for _ in 0..1_000 {
        ours().await;
        bare.call().await;
        #[cfg(feature = "extism")]
        {
            extism.call_fresh();
            ExtismSide::call(&mut reused);
        }
    }
    let mut ours_us = Vec::new();
    let mut bare_us = Vec::new();
    #[cfg(feature = "extism")]
    let (mut fresh_us, mut reused_us) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for _ in 0..CALLS_PER_ROUND {
            ours().await;
        }
        ours_us.push(per_call(started.elapsed()));
        let started = Instant::now();
        for _ in 0..CALLS_PER_ROUND {
            bare.call().await;
        }
        bare_us.push(per_call(started.elapsed()));
        #[cfg(feature = "extism")]
        {
            let started = Instant::now();
            for _ in 0..CALLS_PER_ROUND {
                extism.call_fresh();
            }
            fresh_us.push(per_call(started.elapsed()));
            let started = Instant::now();
            for _ in 0..CALLS_PER_ROUND {
                ExtismSide::call(&mut reused);
            }
            reused_us.push(per_call(started.elapsed()));
        }
    }
    let ours_median = median(&mut ours_us);
    let bare_median = median(&mut bare_us);
    println!(
        "plugin call, guest-echo `ping`, {ROUNDS} rounds of {CALLS_PER_ROUND} calls, one thread"
    );
    println!("  autoagent: median {ours_median:.1} µs/call  (rounds: {ours_us:.1?})");
    println!("  bare:      median {bare_median:.1} µs/call  (rounds: {bare_us:.1?})");
    let mut report = Report::new(
        "plugin_call",
        "One plugin call, fresh sandbox, JSON in and out",
    );
    let ratio = ours_median / bare_median;
    report.add(
        Figure::new("call, one thread", format!("{ours_median:.1} µs"))
            .against(format!("bare wasmtime 48 {bare_median:.1} µs"), ratio)
            .target(report::at_most(ratio, 1.1, "×"))
            .limit(
                "instantiation and the reset of the guest's memory (most of both sides); \
                 ours adds about 0.5 µs: the stderr capture, the boxed export future, the \
                 call slot, the limiter and the counters",
            ),
    );
    report.add(
        Figure::new(
            "call, one thread (absolute)",
            format!("{ours_median:.1} µs"),
        )
        .target(report::at_most(ours_median, 10.0, " µs")),
    );
    #[cfg(feature = "extism")]
    {
        let fresh = median(&mut fresh_us);
        let reused = median(&mut reused_us);
        println!("  extism, fresh instance: median {fresh:.1} µs/call  (rounds: {fresh_us:.1?})");
        println!("  extism, reused:         median {reused:.1} µs/call  (rounds: {reused_us:.1?})");
        let verdict = if ours_median < fresh {
            "faster than Extism at equal isolation: met"
        } else {
            "faster than Extism at equal isolation: missed"
        };
        report.add(
            Figure::new(
                "call vs Extism, fresh instance each",
                format!("{ours_median:.1} µs"),
            )
            .against(format!("Extism 1.30 {fresh:.1} µs"), ours_median / fresh)
            .target(verdict)
            .limit(
                "Extism links a new `Linker` and its kernel module for every new plugin instance",
            ),
        );
        report.add(
            Figure::new(
                "call vs Extism, reused instance (its default)",
                format!("{ours_median:.1} µs"),
            )
            .against(format!("Extism 1.30 {reused:.1} µs"), ours_median / reused)
            .limit("a reused instance keeps state between calls: not our isolation"),
        );
    }

    // Calls per second with every guest thread busy.
    let mut ours_rates = Vec::new();
    let mut bare_rates = Vec::new();
    for _ in 0..3 {
        let (plugins, team, plugin) = (plugins.clone(), team.clone(), plugin.clone());
        ours_rates.push(
            rate(threads, move || {
                let plugins = plugins.clone();
                let (team, plugin) = (team.clone(), plugin.clone());
                tokio::spawn(async move {
                    let input = serde_json::Value::Null;
                    plugins
                        .invoke(&team, &plugin, "ping", &input, Caller::default())
                        .await
                        .unwrap();
                })
            })
            .await,
        );
        let bare = bare.clone();
        bare_rates.push(
            rate(threads, move || {
                let bare = bare.clone();
                tokio::spawn(async move { bare.call().await })
            })
            .await,
        );
    }
    let ours_rate = median(&mut ours_rates);
    let bare_rate = median(&mut bare_rates);
    println!("  calls/s on {threads} guest threads: autoagent {ours_rate:.0}, bare {bare_rate:.0}");
    report.add(
        Figure::new(
            format!("calls/s, {threads} guest threads on all cores"),
            format!("{}/s", report::thousands(ours_rate)),
        )
        .against(
            format!("bare wasmtime 48 {}/s", report::thousands(bare_rate)),
            ours_rate / bare_rate,
        )
        .limit("CPU: both cores busy instantiating; the pool's slots and memory resets scale with cores"),
    );
    report.finish();
}

/// Calls per second over `THROUGHPUT_WINDOW` with `concurrency` loops each
/// starting the next call (made by `call`) when its last one ends.
async fn rate<F>(concurrency: usize, call: F) -> f64
where
    F: Fn() -> tokio::task::JoinHandle<()> + Send + Sync + 'static,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let loops: Vec<_> = (0..concurrency)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while started.elapsed() < THROUGHPUT_WINDOW {
                    call().await.unwrap();
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for one in loops {
        total += one.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// The same call through bare wasmtime: the same engine settings and
/// imports and the same JSON in and out; no registry, call slot, limiter,
/// deadline check, stderr capture or counters.
struct Bare {
    engine: Engine,
    pre: bare::CapabilityPre<BareState>,
    ctx: bare::autoagent::plugin::types::CallContext,
}

impl Bare {
    fn new(wasm: &[u8]) -> Self {
        // The engine settings the host's runtime uses for 100 instances
        // (`Runtime::new`): the pool's sizes, the largest memory a plugin
        // may ask for, and epoch interruption (which adds a check at every
        // function entry and loop of the compiled guest).
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(100)
            .total_core_instances(400)
            .total_memories(200)
            .total_tables(400)
            .total_stacks(100)
            .max_memory_size((autoagent::plugins::manifest::MAX_MEMORY_MIB << 20) as usize)
            .linear_memory_keep_resident(keep_resident())
            .table_keep_resident(1 << 16);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).unwrap();
        let component = Component::new(&engine, wasm).unwrap();
        let mut linker: Linker<BareState> = Linker::new(&engine);
        // WASI and wasi:http as the host links them (the guest imports
        // wasi:http for its `fetch` capability), and our imports as no-ops:
        // `ping` calls none of them.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).unwrap();
        bare::Capability::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state).unwrap();
        let pre = bare::CapabilityPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        let ctx = bare::autoagent::plugin::types::CallContext {
            team: "testing".into(),
            plugin: "echo".into(),
            call_id: "bench".into(),
            worker_id: None,
            subject_id: None,
        };
        Self { engine, pre, ctx }
    }

    /// `ping` with JSON in and out, as a program embedding wasmtime would
    /// make it: the input value written as JSON text, the output parsed.
    async fn call(&self) {
        let input = serde_json::to_string(&serde_json::Value::Null).unwrap();
        let mut store = wasmtime::Store::new(
            &self.engine,
            BareState {
                wasi: WasiCtx::builder().build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
            },
        );
        // No ticker runs for this engine: the deadline is never reached.
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = self.pre.instantiate_async(&mut store).await.unwrap();
        let out = instance
            .call_invoke(&mut store, &self.ctx, "ping", &input)
            .await
            .unwrap()
            .unwrap();
        let out: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(out["pong"], true);
    }
}

/// The same logic as an Extism plugin (`guests/extism-echo`, built with
/// `extism-pdk`), compiled once.
#[cfg(feature = "extism")]
struct ExtismSide {
    compiled: extism::CompiledPlugin,
}

#[cfg(feature = "extism")]
impl ExtismSide {
    fn new() -> Self {
        let wasm = std::fs::read(guests::GUEST_EXTISM_ECHO).unwrap();
        let manifest = extism::Manifest::new([extism::Wasm::data(wasm)]);
        let builder = extism::PluginBuilder::new(manifest)
            .with_wasi(false)
            .with_cache_disabled();
        Self {
            compiled: extism::CompiledPlugin::new(builder).unwrap(),
        }
    }

    /// A new plugin instance, as Extism makes one from a compiled plugin.
    fn instance(&self) -> extism::Plugin {
        extism::Plugin::new_from_compiled(&self.compiled).unwrap()
    }

    /// One call on a new instance: the isolation our every call has.
    fn call_fresh(&self) {
        Self::call(&mut self.instance());
    }

    fn call(plugin: &mut extism::Plugin) {
        let out: String = plugin.call("ping", "null").unwrap();
        assert_eq!(out, r#"{"pong":true}"#);
    }
}

fn per_call(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1e6 / f64::from(CALLS_PER_ROUND)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
