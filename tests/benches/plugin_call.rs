//! One plugin call through AutoAgent (registry lookup, call slot, fresh
//! store with limits and deadline, instantiate, invoke, JSON in and out)
//! against the same call through bare wasmtime with the same pooling
//! allocator, in the same run.
//!
//! Run with `cargo bench -p autoagent-tests --bench plugin_call`.
//! The guest is `guest-echo`, capability `ping`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use autoagent::names::Name;
use autoagent::plugins::{Caller, PluginSource, Plugins, RuntimeConfig};
use autoagent::store::{RedbBackend, Store};
use autoagent_tests::guests;
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
    pool.spawn(measure(plugins, wasm)).await.unwrap();
}

/// `KEEP_RESIDENT` bytes (the host's default when unset), for both sides.
fn keep_resident() -> usize {
    autoagent_tests::setting("KEEP_RESIDENT", autoagent::plugins::DEFAULT_KEEP_RESIDENT)
}

async fn measure(plugins: Arc<Plugins>, wasm: Vec<u8>) {
    let input = serde_json::Value::Null;
    let (team, plugin) = (Name::from_static("testing"), Name::from_static("echo"));
    let ours = || async {
        let out = plugins
            .invoke(&team, &plugin, "ping", &input, Caller::default())
            .await
            .unwrap();
        assert_eq!(out["pong"], true);
    };

    // Bare wasmtime: same pooling knobs, no limiter, no deadline, no JSON.
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(100)
        .linear_memory_keep_resident(keep_resident())
        .table_keep_resident(1 << 16);
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).unwrap();
    let component = Component::new(&engine, &wasm).unwrap();
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
    let bare_call = || async {
        let mut store = wasmtime::Store::new(
            &engine,
            BareState {
                wasi: WasiCtx::builder().build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
            },
        );
        let instance = pre.instantiate_async(&mut store).await.unwrap();
        let out = instance
            .call_invoke(&mut store, &ctx, "ping", "null")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out, r#"{"pong":true}"#);
    };

    // Warm both up, then alternate rounds so drift hits both alike.
    for _ in 0..1_000 {
        ours().await;
        bare_call().await;
    }
    let mut ours_us = Vec::new();
    let mut bare_us = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for _ in 0..CALLS_PER_ROUND {
            ours().await;
        }
        ours_us.push(per_call(started.elapsed()));
        let started = Instant::now();
        for _ in 0..CALLS_PER_ROUND {
            bare_call().await;
        }
        bare_us.push(per_call(started.elapsed()));
    }
    let ours_median = median(&mut ours_us);
    let bare_median = median(&mut bare_us);
    println!(
        "plugin call, guest-echo `ping`, {ROUNDS} rounds of {CALLS_PER_ROUND} calls, one thread"
    );
    println!("  autoagent: median {ours_median:.1} µs/call  (rounds: {ours_us:.1?})");
    println!("  bare:      median {bare_median:.1} µs/call  (rounds: {bare_us:.1?})");
    println!("  ratio autoagent/bare: {:.2}", ours_median / bare_median);
}

fn per_call(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1e6 / f64::from(CALLS_PER_ROUND)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
