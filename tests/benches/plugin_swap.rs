//! Loading and swapping plugins: compile time and cached load time per
//! plugin, then, on a real host, how long an upload takes to swap a new
//! version in and how many calls per second keep flowing meanwhile.
//!
//! Run with `cargo xtask build && cargo bench -p autoagent-tests --bench plugin_swap`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use autoagent::plugins::{PluginSource, Plugins, RuntimeConfig};
use autoagent::store::{RedbBackend, Store};
use autoagent_tests::report::{self, Figure, Report};
use autoagent_tests::{Client, Host, echo_wasm, guests, probe_manifest, unseen_component};

const ROUNDS: usize = 3;
const CLIENTS: usize = 16;
const SWAPS: usize = 20;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut report = Report::new("plugin_swap", "Loading and swapping plugins");
    runtime.block_on(async {
        let echo_compiled = load_times(&mut report).await;
        swaps_under_load(&mut report, echo_compiled).await;
    });
    report.finish();
}

/// Median milliseconds of loading each plugin with an empty cache
/// (compiling) and with the cache the first load filled; adds a row per
/// plugin to `report` and returns the echo guest's compiled load.
async fn load_times(report: &mut Report) -> f64 {
    println!("plugin load, median of {ROUNDS} rounds (ms)");
    println!("  plugin            size KiB   compiled   cached");
    let plugins = [
        (
            "todo",
            guests::AUTOAGENT_PLUGIN_TODO_MANIFEST,
            guests::AUTOAGENT_PLUGIN_TODO,
        ),
        ("echo", guests::GUEST_ECHO_MANIFEST, guests::GUEST_ECHO),
        (
            "hostile",
            guests::GUEST_HOSTILE_MANIFEST,
            guests::GUEST_HOSTILE,
        ),
    ];
    let mut echo_compiled = 0.0;
    for (name, manifest, wasm) in plugins {
        let manifest = std::fs::read_to_string(manifest).unwrap();
        let wasm = std::fs::read(wasm).unwrap();
        let (mut compiled, mut cached) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let dir = tempfile::tempdir().unwrap();
            for (label, times) in [("compiled", &mut compiled), ("cached", &mut cached)] {
                // A fresh registry each time; only the cache folder carries over.
                let store = Store::new(Arc::new(
                    RedbBackend::open(&dir.path().join(format!("{label}.redb"))).unwrap(),
                ));
                let registry = Plugins::new(&RuntimeConfig::with_instances(16), &store)
                    .unwrap()
                    .with_artifact_cache(dir.path().join("cache"));
                let started = Instant::now();
                registry
                    .load(&manifest, wasm.clone(), PluginSource::Bundled)
                    .await
                    .unwrap();
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        let (compiled, cached) = (median(&mut compiled), median(&mut cached));
        let kib = wasm.len() as f64 / 1024.0;
        println!("  {name:<16} {kib:>9.0} {compiled:>10.1} {cached:>8.1}");
        if name == "echo" {
            echo_compiled = compiled;
        }
        // Issue 5 asks for these times, with no numeric target.
        report.add(
            Figure::new(
                format!("load {name} ({kib:.0} KiB), median of {ROUNDS}"),
                format!("{cached:.1} ms cached, {compiled:.0} ms compiled"),
            )
            .limit(
                "compiled: Cranelift on both cores; cached: deserializing the artifact, \
                 linking, the world check and one `describe` call",
            ),
        );
    }
    echo_compiled
}

/// Calls per second of 16 clients calling one plugin, first alone, then
/// while its version is replaced by upload 20 times; and each swap's time.
/// `echo_compiled` is the echo guest's compiled load on a quiet host (ms).
async fn swaps_under_load(report: &mut Report, echo_compiled: f64) {
    let host = Arc::new(Host::start());
    let client = Arc::new(Client::new());
    let url = host.url("/teams/ops/plugins/probe");
    client
        .put_plugin(&url, &probe_manifest("1.0.0"), echo_wasm())
        .await
        .expect_ok(201);

    let calls = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (host, calls, failures, stop) =
                (host.clone(), calls.clone(), failures.clone(), stop.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let invoke = host.url("/teams/ops/plugins/probe/invoke");
                while !stop.load(Ordering::Relaxed) {
                    let reply = http
                        .post(&invoke)
                        .header("content-type", "application/json")
                        .body(r#"{"capability": "config", "input": {"key": "version"}}"#)
                        .send()
                        .await;
                    match reply {
                        Ok(reply) if reply.status() == 200 => calls.fetch_add(1, Ordering::Relaxed),
                        _ => failures.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = calls.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let quiet_rate =
        (calls.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();

    let before = calls.load(Ordering::Relaxed);
    let started = Instant::now();
    // Even swaps bring the same component (a new manifest: its compiled
    // form comes from the cache); odd ones a component never seen (it
    // compiles on the upload's path).
    let (mut cached_ms, mut compiled_ms) = (Vec::new(), Vec::new());
    for n in 0..SWAPS {
        let (wasm, times) = if n.is_multiple_of(2) {
            (echo_wasm(), &mut cached_ms)
        } else {
            (unseen_component(echo_wasm(), n), &mut compiled_ms)
        };
        let swap_started = Instant::now();
        client
            .put_plugin(&url, &probe_manifest(&format!("1.1.{n}")), wasm)
            .await
            .expect_ok(200);
        times.push(swap_started.elapsed().as_secs_f64() * 1e3);
    }
    let swapping_rate =
        (calls.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    println!("swaps by upload under {CLIENTS} clients calling `config` of the same plugin");
    println!("  calls/s without swaps: {quiet_rate:.0}");
    println!(
        "  calls/s during {SWAPS} back-to-back swaps: {swapping_rate:.0} (over {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let mut swaps = Vec::new();
    for (what, times) in [("cached", &mut cached_ms), ("compiled", &mut compiled_ms)] {
        let max = times.iter().copied().fold(0.0, f64::max);
        let median = median(times);
        println!(
            "  swap, {what} component (PUT to answer): median {median:.1} ms, max {max:.1} ms"
        );
        swaps.push((median, max));
    }
    let failed = failures.load(Ordering::Relaxed);
    println!("  failed calls: {failed}");

    report.add(
        Figure::new(
            format!("calls/s of {CLIENTS} clients during {SWAPS} back-to-back swaps"),
            format!("{}/s, {failed} failed", report::thousands(swapping_rate)),
        )
        .against(
            format!(
                "the same calls without swaps: {}/s",
                report::thousands(quiet_rate)
            ),
            swapping_rate / quiet_rate,
        )
        .limit(
            "Cranelift takes both cores while a new component compiles; no call waits \
             for a swap (calls keep the version they started on)",
        ),
    );
    let (cached, compiled) = (swaps[0], swaps[1]);
    report.add(
        Figure::new(
            "swap, cached component (PUT to answer)",
            format!("{:.1} ms median, max {:.1} ms", cached.0, cached.1),
        )
        .limit(
            "the upload's path with the artifact from the cache, on cores shared with \
             the callers; the swap itself is one pointer exchange",
        ),
    );
    report.add(
        Figure::new(
            "swap, new component (PUT to answer)",
            format!("{:.0} ms median, max {:.0} ms", compiled.0, compiled.1),
        )
        .against(
            format!("loading echo compiled, no callers (above): {echo_compiled:.0} ms"),
            compiled.0 / echo_compiled,
        )
        .limit("compiling on the upload's path, with Cranelift sharing the cores with the callers"),
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
