//! Footprint: start-up time and idle memory of a host with `PLUGINS`
//! plugins installed (50 by default), on its first start (every plugin
//! compiled) and on the next (compiled artifacts read from the cache),
//! against the same host with only its bundled plugins.
//!
//! Run with `cargo xtask build && cargo bench -p autoagent-tests --bench footprint`.
//! Each installed plugin is the echo guest with a custom section of its own,
//! so all of them are distinct components that compile separately, as 50
//! different plugins would.

use std::path::Path;
use std::time::{Duration, Instant};

use autoagent_tests::report::{self, Figure, Report};
use autoagent_tests::{Client, Host, echo_wasm, setting, unseen_component};

/// How long a started host is left alone before its memory is read: its
/// start-up loops settle and freed memory goes back to the system.
const SETTLE: Duration = Duration::from_secs(5);

/// The plugins every host loads from its own binary.
const BUNDLED: usize = 8;

#[tokio::main]
async fn main() {
    let plugins = setting("PLUGINS", 50);
    let bare = starts(0).await;
    let loaded = starts(plugins).await;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);

    println!("footprint: host with its {BUNDLED} bundled plugins, then with {plugins} more");
    for (label, starts) in [("bundled only", &bare), ("with plugins", &loaded)] {
        println!(
            "  {label}: first start {:.0} ms, idle RSS {:.1} MiB; cached start {:.0} ms, idle RSS {:.1} MiB",
            starts.first.as_secs_f64() * 1e3,
            mib(starts.first_rss),
            starts.cached.as_secs_f64() * 1e3,
            mib(starts.cached_rss),
        );
    }

    let mut report = Report::new(
        "footprint",
        "Footprint: start-up and idle memory with 50 plugins",
    );
    let cached_ms = loaded.cached.as_secs_f64() * 1e3;
    report.add(
        Figure::new(
            format!("start, {plugins} plugins, artifacts cached"),
            format!("{cached_ms:.0} ms"),
        )
        .against(
            format!("bundled plugins only: {:.0} ms", bare.cached.as_secs_f64() * 1e3),
            loaded.cached.as_secs_f64() / bare.cached.as_secs_f64(),
        )
        .target(report::at_most(cached_ms / 1e3, 1.0, " s"))
        .limit("reading and mapping each compiled artifact, linking it and one `describe` call per plugin, one plugin after another"),
    );
    report.add(
        Figure::new(
            format!("start, {plugins} plugins, first (compiled)"),
            format!("{:.1} s", loaded.first.as_secs_f64()),
        )
        .against(
            format!("bundled plugins only: {:.1} s", bare.first.as_secs_f64()),
            loaded.first.as_secs_f64() / bare.first.as_secs_f64(),
        )
        .limit("Cranelift compiling each component (both cores); once per component, then cached in the data folder"),
    );
    let idle = mib(loaded.cached_rss);
    let parts = loaded.cached_parts;
    println!("  resident, bundled only: {:?}", bare.cached_parts);
    println!("  resident, with plugins: {parts:?}");
    report.add(
        Figure::new(
            format!("idle RSS, {plugins} plugins (cached start)"),
            format!(
                "{idle:.1} MiB: own (anonymous) {:.1}, compiled plugins mapped {:.1}, binary {:.1}, libraries {:.1}",
                mib(parts.anonymous),
                mib(parts.compiled_plugins),
                mib(parts.binary),
                mib(parts.other)
            ),
        )
        .against(
            format!("bundled plugins only: {:.1} MiB", mib(bare.cached_rss)),
            loaded.cached_rss as f64 / bare.cached_rss as f64,
        )
        .target(format!(
            "{}; the host's own memory {:.1} MiB",
            report::at_most(idle, 60.0, " MiB"),
            mib(parts.anonymous)
        ))
        .limit(
            "the host's own memory (heap, thread stacks, the guest instance pool's warm slots) \
             and the binary's code; each plugin's compiled code is handed back to the kernel \
             after its load and read back by its first call",
        ),
    );
    if let Some(called) = &loaded.called {
        let ms = |took: Duration| took.as_secs_f64() * 1e3;
        let median = |sorted: &[Duration]| sorted[sorted.len() / 2];
        report.add(
            Figure::new(
                format!("first call of each of the {plugins} plugins after the start, over HTTP"),
                format!(
                    "{:.2} ms median, max {:.2} ms",
                    ms(median(&called.first)),
                    ms(*called.first.last().unwrap())
                ),
            )
            .against(
                format!(
                    "each one's next call: {:.2} ms median",
                    ms(median(&called.next))
                ),
                ms(median(&called.first)) / ms(median(&called.next)),
            )
            .limit(
                "reading the code the call runs back from the artifact file (page faults), \
                 paid by a plugin's first call after its load and after a minute without calls",
            ),
        );
        let parts = called.parts;
        report.add(
            Figure::new(
                format!("RSS once every plugin was called, {plugins} plugins"),
                format!(
                    "{:.1} MiB: own (anonymous) {:.1}, compiled plugins mapped {:.1}, binary {:.1}",
                    mib(called.rss),
                    mib(parts.anonymous),
                    mib(parts.compiled_plugins),
                    mib(parts.binary)
                ),
            )
            .against(
                format!("idle (above): {idle:.1} MiB"),
                called.rss as f64 / loaded.cached_rss as f64,
            )
            .limit(
                "each called plugin's code, read back with the kernel's read-ahead and \
                 fault-around (most of a 0.5 MiB text for one `ping` of a fresh instance); handed \
                 back again once the plugin goes a minute without calls",
            ),
        );
    }
    report.add(
        Figure::new(
            format!("idle RSS, {plugins} plugins (first start)"),
            format!("{:.1} MiB", mib(loaded.first_rss)),
        )
        .against(
            format!("bundled plugins only: {:.1} MiB", mib(bare.first_rss)),
            loaded.first_rss as f64 / bare.first_rss as f64,
        )
        .limit(
            "what a cached start holds, and nothing of the compiler: each component compiles in a \
             child process (`autoagent compile-plugin`), whose memory leaves with it",
        ),
    );
    report.finish();
}

/// One host's first and cached start.
struct Starts {
    first: Duration,
    first_rss: u64,
    cached: Duration,
    cached_rss: u64,
    /// Where the cached start's resident memory is.
    cached_parts: Resident,
    /// The cached start's plugins called once each, if it has any.
    called: Option<Called>,
}

/// Resident memory by kind, from `/proc/<pid>/smaps`, in bytes.
#[derive(Debug, Default, Clone, Copy)]
struct Resident {
    /// Memory of the process's own: heap, stacks, wasm instance slots.
    anonymous: u64,
    /// Pages of the `autoagent` binary itself.
    binary: u64,
    /// Pages of compiled plugins mapped from the artifact cache.
    compiled_plugins: u64,
    /// Everything else (shared libraries).
    other: u64,
}

impl Resident {
    /// Sums each mapping's resident pages by kind; pages a process wrote
    /// to in a file mapping (copied on write) count as its own.
    fn of(pid: u32) -> Self {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
        let mut parts = Self::default();
        let mut kind = Kind::Anonymous;
        let mut rss = 0;
        let add = |parts: &mut Self, kind: Kind, rss: u64, anonymous: u64| {
            parts.anonymous += anonymous;
            let file = rss.saturating_sub(anonymous);
            match kind {
                Kind::Anonymous => parts.anonymous += file,
                Kind::Binary => parts.binary += file,
                Kind::CompiledPlugin => parts.compiled_plugins += file,
                Kind::Other => parts.other += file,
            }
        };
        for line in smaps.lines() {
            let mut fields = line.split_whitespace();
            let first = fields.next().unwrap_or_default();
            let kib = || {
                fields
                    .clone()
                    .next()
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
                    * 1024
            };
            if first == "Rss:" {
                rss = kib();
            } else if first == "Anonymous:" {
                // The last of a mapping's lines this reads.
                add(&mut parts, kind, rss, kib());
            } else if first.contains('-')
                && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            {
                // A mapping's header: address, perms, offset, dev, inode, path.
                let path = fields.nth(4).unwrap_or_default();
                kind = if path.is_empty() || path.starts_with('[') {
                    Kind::Anonymous
                } else if path.contains("/cache/components/") {
                    Kind::CompiledPlugin
                } else if path.ends_with("/autoagent") {
                    Kind::Binary
                } else {
                    Kind::Other
                };
            }
        }
        parts
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Anonymous,
    Binary,
    CompiledPlugin,
    Other,
}

/// Starts a host with `plugins` distinct plugins installed on fresh data,
/// then again on the same data.
async fn starts(plugins: usize) -> Starts {
    let scratch = tempfile::tempdir().unwrap();
    let (data, logs) = (scratch.path().join("data"), scratch.path().join("logs"));
    install(&data, plugins);
    let (first, first_rss, _, _) = start(&data, &logs, plugins).await;
    let (cached, cached_rss, cached_parts, called) = start(&data, &logs, plugins).await;
    Starts {
        first,
        first_rss,
        cached,
        cached_rss,
        cached_parts,
        called,
    }
}

/// Spawn to listening (plugins load before the host listens), checked to
/// have loaded every plugin; then the idle RSS, whole and by kind, and what
/// calling every installed plugin once brings. Stops the host.
async fn start(
    data: &Path,
    logs: &Path,
    plugins: usize,
) -> (Duration, u64, Resident, Option<Called>) {
    let started = Instant::now();
    let mut host = Host::start_with(data.to_owned(), logs.to_owned());
    let took = started.elapsed();
    let listed = Client::new()
        .get(&host.url("/plugins"))
        .await
        .expect_ok(200);
    let loaded = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|plugin| plugin["state"] == "loaded")
        .count();
    assert_eq!(loaded, plugins + BUNDLED, "every plugin loaded: {listed}");
    tokio::time::sleep(SETTLE).await;
    let rss = host.rss_bytes().unwrap();
    let parts = Resident::of(host.pid().unwrap());
    let called = if plugins > 0 {
        Some(call_each(&host, plugins).await)
    } else {
        None
    };
    host.stop();
    (took, rss, parts, called)
}

/// What calling each installed plugin once, then once more, costs and brings.
struct Called {
    /// Latency of each plugin's first call after the load, sorted.
    first: Vec<Duration>,
    /// Latency of each plugin's second call, sorted.
    next: Vec<Duration>,
    /// Resident memory after every plugin answered.
    parts: Resident,
    rss: u64,
}

/// Calls `ping` of every installed plugin once, one after another, then
/// again, over HTTP.
async fn call_each(host: &Host, plugins: usize) -> Called {
    let client = Client::new();
    let mut rounds = [Vec::new(), Vec::new()];
    for round in &mut rounds {
        for n in 0..plugins {
            let url = host.url(&format!("/teams/testing/plugins/p{n:02}/invoke"));
            let started = Instant::now();
            let reply = client
                .post_json(&url, r#"{"capability": "ping", "input": {}}"#)
                .await
                .expect_ok(200);
            round.push(started.elapsed());
            assert_eq!(reply["pong"], true, "{reply}");
        }
        round.sort();
    }
    let [first, next] = rounds;
    Called {
        first,
        next,
        parts: Resident::of(host.pid().unwrap()),
        rss: host.rss_bytes().unwrap(),
    }
}

/// `plugins` folders `testing/pNN`, each the echo guest made unique.
fn install(data: &Path, plugins: usize) {
    let manifest = std::fs::read_to_string(autoagent_tests::guests::GUEST_ECHO_MANIFEST).unwrap();
    let wasm = echo_wasm();
    for n in 0..plugins {
        let name = format!("p{n:02}");
        let dir = data.join("plugins/testing").join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = manifest.replacen("name = \"echo\"", &format!("name = \"{name}\""), 1);
        std::fs::write(dir.join("plugin.toml"), manifest).unwrap();
        std::fs::write(
            dir.join(format!("{name}.wasm")),
            unseen_component(wasm.clone(), n),
        )
        .unwrap();
    }
}
