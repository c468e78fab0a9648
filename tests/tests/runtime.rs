//! The plugin runtime in-process, with real compiled guests: each kind of
//! misbehaviour fails its own call with its own typed error, denials reach
//! the plugin as errors it can read, and broken components never load.

use std::sync::Arc;

use autoagent::names::Name;
use autoagent::plugins::{
    CallError, Caller, ErrorKind, HealthReport, HealthStatus, Incident, InvokeError, LoadError,
    PluginSource, Plugins, RecoveryOutcome, RecoveryReport, RuntimeConfig,
};
use autoagent::store::{RedbBackend, Store};
use autoagent_tests::{guests, json};
use serde_json::Value;

struct Fixture {
    plugins: Plugins,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    // Small pools: several fixtures run in one test process.
    fixture_with(RuntimeConfig::with_instances(64)).await
}

async fn fixture_with(config: RuntimeConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(Arc::new(
        RedbBackend::open(&dir.path().join("db.redb")).unwrap(),
    ));
    let plugins = Plugins::new(&config, &store).unwrap();
    for (manifest, wasm) in [
        (guests::GUEST_ECHO_MANIFEST, guests::GUEST_ECHO),
        (guests::GUEST_HOSTILE_MANIFEST, guests::GUEST_HOSTILE),
        (guests::GUEST_CHECKER_MANIFEST, guests::GUEST_CHECKER),
        (guests::GUEST_FIXER_MANIFEST, guests::GUEST_FIXER),
    ] {
        plugins
            .load(
                &std::fs::read_to_string(manifest).unwrap(),
                std::fs::read(wasm).unwrap(),
                PluginSource::Bundled,
            )
            .await
            .unwrap();
    }
    Fixture { plugins, _dir: dir }
}

impl Fixture {
    async fn call(
        &self,
        plugin: &str,
        capability: &str,
        input: Value,
    ) -> Result<Value, InvokeError> {
        self.plugins
            .invoke(
                &Name::from_static("testing"),
                &Name::parse(plugin).expect("a plugin name"),
                capability,
                &input,
                Caller::default(),
            )
            .await
    }

    async fn call_error(&self, plugin: &str, capability: &str, input: Value) -> CallError {
        match self.call(plugin, capability, input).await {
            Err(InvokeError::Call(err)) => err,
            other => panic!("{plugin}/{capability}: expected a call error, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_misbehaviour_fails_its_own_call_with_its_own_error() {
    let f = fixture().await;
    let trap = f.call_error("hostile", "trap", json!({})).await;
    assert!(
        matches!(&trap, CallError::Trap(message) if message.contains("trapped on purpose")),
        "a panic is a trap that carries the panic message: {trap:?}"
    );
    assert_eq!(
        f.call_error("hostile", "spin", json!({})).await,
        CallError::Timeout(1000)
    );
    assert_eq!(
        f.call_error("hostile", "grow_memory", json!({})).await,
        CallError::MemoryLimit(32)
    );
    // Rust guests keep their frames on a shadow stack in linear memory, so
    // unbounded recursion runs off its bottom before wasm's own stack is
    // exhausted: either way it is a trap of this call.
    let recursion = f.call_error("hostile", "recurse", json!({})).await;
    assert!(matches!(recursion, CallError::Trap(_)), "{recursion:?}");
    let huge = f
        .call_error("hostile", "huge_output", json!({"mib": 2}))
        .await;
    assert!(
        matches!(huge, CallError::OutputTooLarge { limit: 1048576, .. }),
        "{huge:?}"
    );
    // The same plugin answers its next call: nothing of the failed ones stayed.
    assert_eq!(
        f.call("hostile", "ok", json!({})).await.unwrap(),
        json!({"ok": true})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_guest_does_not_hold_up_other_calls() {
    let f = Arc::new(fixture().await);
    let spinner = {
        let f = f.clone();
        tokio::spawn(async move { f.call_error("hostile", "spin", json!({})).await })
    };
    // Wait until the spinner runs: its instance holds guest memory.
    let started = std::time::Instant::now();
    while f.plugins.memory_budget().used() == 0 {
        assert!(
            started.elapsed().as_secs() < 10,
            "the spinner never started"
        );
        tokio::task::yield_now().await;
    }
    for n in 0..50 {
        assert_eq!(f.call("echo", "echo", json!(n)).await.unwrap(), json!(n));
    }
    assert!(
        !spinner.is_finished(),
        "all good calls finished while the spinner was still running"
    );
    assert_eq!(spinner.await.unwrap(), CallError::Timeout(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_far_over_its_limit_is_output_too_large_not_a_trap() {
    // With room to build it, a 200 MiB answer ran out of wasmtime's
    // hostcall fuel while being read and was reported as a trap.
    let f = fixture().await;
    let manifest = std::fs::read_to_string(guests::GUEST_HOSTILE_MANIFEST)
        .unwrap()
        .replace("name = \"hostile\"", "name = \"roomy\"")
        .replace("memory-mib = 32", "memory-mib = 1024")
        .replace("timeout-ms = 1000", "timeout-ms = 30000");
    f.plugins
        .load(
            &manifest,
            std::fs::read(guests::GUEST_HOSTILE).unwrap(),
            PluginSource::Bundled,
        )
        .await
        .unwrap();
    let huge = f
        .call_error("roomy", "huge_output", json!({"mib": 200}))
        .await;
    assert_eq!(
        huge,
        CallError::OutputTooLarge {
            size: None,
            limit: 1 << 20
        }
    );
    assert_eq!(huge.code(), "output_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_memory_budget_bounds_all_calls_together() {
    let mut config = RuntimeConfig::with_instances(16);
    config.guest_memory_bytes = 16 << 20;
    let f = fixture_with(config).await;
    // Under its own 32 MiB limit, but over what the host grants all calls.
    let bomb = f.call_error("hostile", "grow_memory", json!({})).await;
    assert_eq!(bomb, CallError::HostMemory(16));
    assert_eq!(bomb.code(), "memory_limit");
    // Everything it held is given back; small calls go on.
    assert_eq!(f.plugins.memory_budget().used(), 0);
    assert_eq!(f.call("echo", "echo", json!(1)).await.unwrap(), json!(1));
    assert_eq!(f.plugins.memory_budget().used(), 0);
}

fn testing(name: &'static str) -> (Name, Name) {
    (Name::from_static("testing"), Name::from_static(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_export_gets_the_call_context_of_its_call() {
    let f = fixture().await;
    let caller = || Caller {
        worker_id: Some("worker_7".into()),
        subject_id: Some("task_9".into()),
    };
    let (team, echo) = testing("echo");
    let seen = f
        .plugins
        .invoke(&team, &echo, "context", &json!(null), caller())
        .await
        .unwrap();
    let call_id = seen["callId"].as_str().unwrap().to_owned();
    assert!(call_id.starts_with("call_"), "{call_id}");
    assert_eq!(
        seen,
        json!({"team": "testing", "plugin": "echo", "callId": call_id,
               "workerId": "worker_7", "subjectId": "task_9"})
    );
    // No worker or subject: none reach the plugin; every call has its own id.
    let bare = f.call("echo", "context", json!(null)).await.unwrap();
    assert_eq!(
        (&bare["workerId"], &bare["subjectId"]),
        (&Value::Null, &Value::Null)
    );
    assert_ne!(bare["callId"], seen["callId"]);

    let (_, checker) = testing("checker");
    let report = f
        .plugins
        .check(&team, &checker, &json!({"context": true}), caller())
        .await
        .unwrap();
    assert_told(
        &report.message,
        "checker",
        ["Some(\"worker_7\")", "Some(\"task_9\")"],
    );

    let (_, fixer) = testing("fixer");
    let incident = Incident {
        id: "incident_1".into(),
        check_id: "web".into(),
        severity: "high".into(),
        stage: 0,
        summary: "down".into(),
        target: json!({"do": "context"}),
        config: json!({}),
    };
    let report = f
        .plugins
        .recover(&team, &fixer, &incident, Caller::default())
        .await
        .unwrap();
    assert_told(&report.notes, "fixer", ["None", "None"]);
}

/// A test guest's report of the context it was told: `testing <plugin>
/// call_<n> <worker> <subject>`.
fn assert_told(report: &str, plugin: &str, worker_and_subject: [&str; 2]) {
    let words: Vec<&str> = report.split(' ').collect();
    assert_eq!(words[..2], ["testing", plugin]);
    assert!(words[2].starts_with("call_"), "{report}");
    assert_eq!(words[3..], worker_and_subject);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_are_called_like_capabilities_with_the_same_failure_kinds() {
    let f = fixture().await;
    let (team, checker) = testing("checker");
    let check = |target: serde_json::Value| {
        let (team, checker, plugins) = (&team, &checker, &f.plugins);
        async move {
            plugins
                .check(team, checker, &target, Caller::default())
                .await
        }
    };
    let report = check(json!({"status": "healthy"})).await.unwrap();
    assert_eq!(report.status, HealthStatus::Healthy);
    assert_eq!(report.measurements[0].name, "latency");
    assert_eq!(
        check(json!({"status": "unhealthy"})).await.unwrap().status,
        HealthStatus::Unhealthy
    );
    let kind = |outcome: Result<HealthReport, InvokeError>| match outcome {
        Err(InvokeError::Call(call)) => call.kind(),
        other => panic!("expected a failed call, got {other:?}"),
    };
    assert_eq!(kind(check(json!({})).await), ErrorKind::InvalidInput);
    assert_eq!(kind(check(json!({"do": "fail"})).await), ErrorKind::Failed);
    assert_eq!(kind(check(json!({"do": "trap"})).await), ErrorKind::Trap);
    assert_eq!(kind(check(json!({"do": "spin"})).await), ErrorKind::Timeout);
    // The wrong kind of plugin has no `check`.
    let (_, echo) = testing("echo");
    let wrong = f
        .plugins
        .check(&team, &echo, &json!({}), Caller::default())
        .await;
    assert_eq!(kind(wrong), ErrorKind::WrongKind);
    // Counted like every other call.
    let info = f.plugins.get(&team, &checker).unwrap();
    assert_eq!((info.calls, info.failures), (6, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_strategies_are_called_like_capabilities_with_the_same_failure_kinds() {
    let f = fixture().await;
    let (team, fixer) = testing("fixer");
    let incident = |action: &str, stage: u32| Incident {
        id: "incident_1".into(),
        check_id: "web".into(),
        severity: "high".into(),
        stage,
        summary: "down".into(),
        target: json!({"do": action}),
        config: json!({}),
    };
    let recover = |incident: Incident| {
        let (team, fixer, plugins) = (&team, &fixer, &f.plugins);
        async move {
            plugins
                .recover(team, fixer, &incident, Caller::default())
                .await
        }
    };
    let report = recover(incident("recover", 0)).await.unwrap();
    assert_eq!(report.outcome, RecoveryOutcome::Recovered);
    assert_eq!(report.notes, "incident_1 stage 0");
    assert_eq!(
        recover(incident("escalate", 2)).await.unwrap().outcome,
        RecoveryOutcome::Escalate
    );
    let kind = |outcome: Result<RecoveryReport, InvokeError>| match outcome {
        Err(InvokeError::Call(call)) => call.kind(),
        other => panic!("expected a failed call, got {other:?}"),
    };
    assert_eq!(kind(recover(incident("fail", 0)).await), ErrorKind::Failed);
    assert_eq!(
        kind(recover(incident("?", 0)).await),
        ErrorKind::InvalidInput
    );
    assert_eq!(kind(recover(incident("spin", 0)).await), ErrorKind::Timeout);
}

#[tokio::test]
async fn plugin_errors_and_kv_quota_reach_the_caller() {
    let f = fixture().await;
    let failed = f.call_error("echo", "fail", json!({})).await;
    assert_eq!(
        failed,
        CallError::Plugin {
            kind: ErrorKind::Failed,
            message: "failed on purpose".into()
        }
    );
    let stored = f
        .call(
            "echo",
            "kv_roundtrip",
            json!({"key": "k", "value": "small"}),
        )
        .await
        .unwrap();
    assert_eq!(stored["value"], "small");
    // The echo plugin's quota is 4096 bytes.
    let over = f
        .call_error(
            "echo",
            "kv_roundtrip",
            json!({"key": "big", "value": "x".repeat(5000)}),
        )
        .await;
    assert!(
        matches!(&over, CallError::Plugin { message, .. } if message.contains("quota")),
        "{over:?}"
    );
    let unknown = f.call("echo", "teleport", json!({})).await.unwrap_err();
    assert!(
        matches!(unknown, InvokeError::UnknownCapability { .. }),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn broken_components_do_not_load_and_the_old_version_keeps_serving() {
    let f = fixture().await;
    let manifest = std::fs::read_to_string(guests::GUEST_ECHO_MANIFEST).unwrap();
    let wasm = std::fs::read(guests::GUEST_ECHO).unwrap();

    let not_wasm = f
        .plugins
        .load(
            &manifest.replace("0.1.0", "0.2.0"),
            b"\0asm garbage".to_vec(),
            PluginSource::Bundled,
        )
        .await
        .unwrap_err();
    assert!(matches!(not_wasm, LoadError::Compile(_)), "{not_wasm}");

    let wrong_world = f
        .plugins
        .load(
            &manifest
                .replace("kind = \"capability\"", "kind = \"health-check\"")
                .lines()
                .filter(|line| !line.starts_with("capabilities ="))
                .collect::<Vec<_>>()
                .join("\n"),
            wasm.clone(),
            PluginSource::Bundled,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            wrong_world,
            LoadError::WrongWorld {
                world: "health-check",
                ..
            }
        ),
        "{wrong_world}"
    );

    let overpromised = f
        .plugins
        .load(
            &manifest.replace("\"ping\"", "\"ping\", \"fly\""),
            wasm,
            PluginSource::Bundled,
        )
        .await
        .unwrap_err();
    assert!(
        overpromised.to_string().contains("\"fly\""),
        "{overpromised}"
    );

    let info = f
        .plugins
        .get(&Name::from_static("testing"), &Name::from_static("echo"))
        .unwrap();
    assert_eq!(info.version, "0.1.0", "the old version still serves");
    assert_eq!(
        f.call("echo", "ping", json!(null)).await.unwrap(),
        json!({"pong": true})
    );
}

#[tokio::test]
async fn no_state_leaks_from_one_call_to_the_next() {
    let f = fixture().await;
    for _ in 0..5 {
        assert_eq!(
            f.call("echo", "counter", json!(null)).await.unwrap(),
            json!(1)
        );
    }
}

#[tokio::test]
async fn config_and_commands_are_denied_unless_granted() {
    let f = fixture().await;
    let granted = f
        .call("echo", "config", json!({"key": "greeting"}))
        .await
        .unwrap();
    assert_eq!(granted, json!("hello"));
    let denied = f
        .call_error("echo", "config", json!({"key": "secret"}))
        .await;
    assert!(
        matches!(&denied, CallError::Plugin { kind: ErrorKind::Denied, message } if message.contains("secret")),
        "{denied:?}"
    );
    let refused = f
        .call_error("echo", "run", json!({"program": "/bin/true"}))
        .await;
    assert!(
        matches!(&refused, CallError::Plugin { message, .. } if message.contains("denied")),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_commands_run_within_their_time_and_output_limits() {
    let f = fixture().await;
    let run = |program: &str, args: &[&str]| json!({ "program": program, "args": args });
    let greeted = f
        .call("echo", "run", run("/bin/echo", &["hello", "world"]))
        .await
        .unwrap();
    assert_eq!(greeted["status"], 0);
    assert_eq!(greeted["stdout"], "hello world\n");

    // Arguments must match the grant's patterns, one for one.
    for (program, args) in [
        ("/bin/echo", &["goodbye", "world"][..]),
        ("/bin/echo", &["hello"][..]),
        ("/bin/echo", &["hello", "world", "again"][..]),
        ("echo", &["hello", "world"][..]),
    ] {
        let refused = f.call_error("echo", "run", run(program, args)).await;
        assert!(
            matches!(&refused, CallError::Plugin { message, .. } if message.contains("denied")),
            "{program} {args:?}: {refused:?}"
        );
    }

    // The sleeper is killed at its grant's 300 ms, well before it is done,
    // and the plugin's own call carries on.
    let started = std::time::Instant::now();
    let slept = f
        .call("echo", "run", run("/bin/sleep", &["5"]))
        .await
        .unwrap();
    assert_eq!(slept["status"], -1, "{slept}");
    assert!(
        slept["stderr"]
            .as_str()
            .unwrap()
            .contains("killed after 300 ms")
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));

    // A flood of output is cut at the grant's cap.
    let flooded = f
        .call(
            "echo",
            "run",
            run("/usr/bin/head", &["-c", "1000000", "/dev/zero"]),
        )
        .await
        .unwrap();
    assert_eq!(
        (flooded["status"].clone(), flooded["stdoutBytes"].clone()),
        (json!(0), json!(1000))
    );
}

/// A real HTTP server on loopback that answers every request with what it
/// received, and counts the requests.
async fn http_receiver() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use axum::http::{HeaderMap, Method, Uri};
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: String| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                axum::Json(json!({
                    "method": method.as_str(),
                    "path": uri.path(),
                    "plugin": headers.get("x-plugin").and_then(|v| v.to_str().ok()),
                    "body": body,
                }))
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_reaches_only_the_hosts_the_manifest_allows() {
    let f = fixture().await;
    let (addr, hits) = http_receiver().await;
    let manifest = std::fs::read_to_string(guests::GUEST_ECHO_MANIFEST)
        .unwrap()
        .replace("name = \"echo\"", "name = \"web\"")
        .replace(
            "http-hosts = []",
            &format!("http-hosts = [\"127.0.0.1:{}\"]", addr.port()),
        );
    f.plugins
        .load(
            &manifest,
            std::fs::read(guests::GUEST_ECHO).unwrap(),
            PluginSource::Bundled,
        )
        .await
        .unwrap();

    let answered = f
        .call(
            "web",
            "fetch",
            json!({"url": format!("http://{addr}/status?x=1"), "method": "POST", "body": "ping"}),
        )
        .await
        .unwrap();
    assert_eq!(answered["status"], 200, "{answered}");
    let said: Value = serde_json::from_str(answered["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        said,
        json!({"method": "POST", "path": "/status", "plugin": "echo", "body": "ping"})
    );

    // Another name for the same address, another port, and a plugin granted
    // nothing: each is refused inside the plugin, and nothing is sent.
    let port = addr.port();
    for (plugin, url) in [
        ("web", format!("http://localhost:{port}/")),
        ("web", format!("http://127.0.0.1:{}/", port.wrapping_add(1))),
        ("echo", format!("http://{addr}/")),
    ] {
        let refused = f.call_error(plugin, "fetch", json!({ "url": url })).await;
        assert!(
            matches!(&refused, CallError::Plugin { kind: ErrorKind::Denied, message } if message.contains("http-hosts")),
            "{plugin} {url}: {refused:?}"
        );
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A plugin compiled on this start is served from the artifact it was just
/// cached as, as it will be on the next start: its code is clean pages of
/// that file (which the kernel can drop and read again), not anonymous
/// memory held while the plugin is loaded.
#[tokio::test]
async fn a_freshly_compiled_plugin_runs_from_its_cached_artifact() {
    let (_dir, plugins, artifact) = echo_compiled_into_a_cache(7_001).await;

    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let artifact = artifact.display().to_string();
    assert!(
        maps.lines().any(|line| line.ends_with(&artifact)),
        "{artifact} is mapped"
    );
    assert_eq!(ping(&plugins).await, json!({"pong": true}));
}

/// A loaded plugin's compiled code is handed back to the kernel once it is
/// loaded: what the load touched (metadata, `describe`) is not held while
/// the plugin waits for its first call, which reads back what it runs.
#[tokio::test]
async fn a_loaded_plugin_holds_little_of_its_code_until_called() {
    let (_dir, plugins, artifact) = echo_compiled_into_a_cache(7_002).await;
    let size = std::fs::metadata(&artifact).unwrap().len();

    let after_load = file_pages_mapped(&artifact);
    assert!(
        after_load * 8 < size,
        "{after_load} of the artifact's {size} bytes resident after the load"
    );
    assert_eq!(ping(&plugins).await, json!({"pong": true}));
    assert!(
        file_pages_mapped(&artifact) > after_load,
        "the call read its code back"
    );
}

/// Plugins with an artifact cache and the echo guest made unique with `n`
/// (bytes no other test loads, so the load compiles), and its artifact.
async fn echo_compiled_into_a_cache(n: usize) -> (tempfile::TempDir, Plugins, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(Arc::new(
        RedbBackend::open(&dir.path().join("db.redb")).unwrap(),
    ));
    let cache = dir.path().join("cache");
    let plugins = Plugins::new(&RuntimeConfig::with_instances(16), &store)
        .unwrap()
        .with_artifact_cache(cache.clone());
    let wasm = autoagent_tests::unseen_component(autoagent_tests::echo_wasm(), n);
    let manifest = std::fs::read_to_string(guests::GUEST_ECHO_MANIFEST).unwrap();
    plugins
        .load(&manifest, wasm, PluginSource::Bundled)
        .await
        .unwrap();
    let cached = walk(&cache);
    assert_eq!(cached.len(), 1, "one artifact cached: {cached:?}");
    let artifact = cached[0].clone();
    (dir, plugins, artifact)
}

async fn ping(plugins: &Plugins) -> Value {
    plugins
        .invoke(
            &Name::from_static("testing"),
            &Name::from_static("echo"),
            "ping",
            &Value::Null,
            Caller::default(),
        )
        .await
        .unwrap()
}

/// How many bytes of `file` this process has resident as pages of the file
/// (not the copies it wrote to), from `/proc/self/smaps`.
fn file_pages_mapped(file: &std::path::Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let file = file.display().to_string();
    let kib = |line: &str| -> u64 { line.split_whitespace().nth(1).unwrap().parse().unwrap() };
    let mut total = 0;
    let mut inside = false;
    for line in smaps.lines() {
        // A mapping starts with its address range, `start-end`.
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            inside = line.ends_with(&file);
        } else if inside && line.starts_with("Rss:") {
            total += kib(line) * 1024;
        } else if inside && line.starts_with("Anonymous:") {
            total -= kib(line) * 1024;
        }
    }
    total
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
