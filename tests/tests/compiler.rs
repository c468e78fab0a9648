//! Plugins compile in a process of their own (`autoagent compile-plugin`,
//! `host/src/plugins/compiler.rs`): the artifact it writes is what the host
//! loads; a component that does not compile is refused with wasmtime's own
//! message; a compiler that crashes fails that one load; one of another
//! build is passed over and the host compiles in its own process.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use autoagent::names::Name;
use autoagent::plugins::compiler::{CompileLimits, CompilerProcess};
use autoagent::plugins::{Caller, LoadError, PluginSource, Plugins, RuntimeConfig};
use autoagent::store::{RedbBackend, Store};
use autoagent_tests::{
    Client, Host, binary, echo_wasm, guests, json, probe_manifest, unseen_component,
};
use serde_json::Value;

/// Held by each test for its whole run: a script written while another
/// thread of this process forks could not be executed ("text file busy").
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Plugins with an artifact cache, compiling with `program` if given.
fn plugins(dir: &Path, program: Option<PathBuf>) -> Plugins {
    plugins_compiling_with(dir, program.map(CompilerProcess::new))
}

fn plugins_compiling_with(dir: &Path, compiler: Option<CompilerProcess>) -> Plugins {
    std::fs::create_dir_all(dir).unwrap();
    let store = Store::new(Arc::new(RedbBackend::open(&dir.join("db.redb")).unwrap()));
    let plugins = Plugins::new(&RuntimeConfig::with_instances(8), &store)
        .unwrap()
        .with_artifact_cache(dir.join("cache"));
    match compiler {
        Some(compiler) => plugins.with_compiler_process(compiler),
        None => plugins,
    }
}

/// Why `compiler` could not compile `wasm` (the echo guest's manifest): a
/// failure of the compile, not a refusal of the bytes.
async fn compile_error(dir: &Path, compiler: CompilerProcess, wasm: Vec<u8>) -> String {
    let plugins = plugins_compiling_with(dir, Some(compiler));
    let err = plugins
        .load(&echo_manifest(), wasm, PluginSource::Bundled)
        .await
        .unwrap_err();
    let LoadError::Compiler(message) = err else {
        panic!("expected a failed compile, got {err:?}");
    };
    assert_eq!(artifacts(dir), 0, "nothing cached");
    assert!(plugins.list(None).is_empty(), "nothing loaded");
    message
}

/// An executable shell script `name` in `dir` with `body`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    let mut permissions = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&path, permissions).unwrap();
    path
}

fn echo_manifest() -> String {
    std::fs::read_to_string(guests::GUEST_ECHO_MANIFEST).unwrap()
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

fn artifacts(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("cache"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_plugin_compiled_by_the_compiler_process_loads_from_its_artifact() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("compiler-ran");
    let program = script(
        dir.path(),
        "compiler",
        &format!(
            "touch '{}'\nexec '{}' \"$@\"",
            marker.display(),
            binary().display()
        ),
    );
    let plugins = plugins(dir.path(), Some(program));
    let wasm = unseen_component(echo_wasm(), 9_001);
    plugins
        .load(&echo_manifest(), wasm, PluginSource::Bundled)
        .await
        .unwrap();

    assert!(marker.exists(), "the compiler process ran");
    assert_eq!(artifacts(dir.path()), 1, "it wrote the artifact");
    assert_eq!(ping(&plugins).await, json!({"pong": true}));
}

#[tokio::test]
async fn a_component_that_does_not_compile_is_refused_with_the_message_the_host_would_give() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // A wasm header and then nothing valid.
    let broken = b"\0asm\x0d\0\x01\0\x07\x03zzz".to_vec();
    let load = |plugins: Plugins| {
        let broken = broken.clone();
        async move {
            match plugins
                .load(&echo_manifest(), broken, PluginSource::Bundled)
                .await
            {
                Err(LoadError::Compile(message)) => message,
                other => panic!("expected a compile error, got {other:?}"),
            }
        }
    };
    let in_host = load(plugins(&dir.path().join("host"), None)).await;
    let in_child = load(plugins(&dir.path().join("child"), Some(binary()))).await;

    assert!(!in_child.is_empty());
    assert_eq!(in_child, in_host);
    assert_eq!(artifacts(&dir.path().join("child")), 0, "nothing cached");
}

#[tokio::test]
async fn a_compiler_that_crashes_fails_that_load_and_nothing_else() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let program = script(dir.path(), "compiler", "kill -SEGV $$");
    let wasm = unseen_component(echo_wasm(), 9_002);
    let message = compile_error(dir.path(), CompilerProcess::new(program), wasm).await;
    assert!(
        message.starts_with("the compiler process failed: signal: 11"),
        "{message}"
    );
}

#[tokio::test]
async fn a_compiler_of_another_build_is_passed_over() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // What a compiler process of another build answers (see the next test).
    let program = script(dir.path(), "compiler", "cat > /dev/null\nexit 3");
    let plugins = plugins(dir.path(), Some(program));
    let wasm = unseen_component(echo_wasm(), 9_003);
    plugins
        .load(&echo_manifest(), wasm, PluginSource::Bundled)
        .await
        .unwrap();

    assert_eq!(artifacts(dir.path()), 1, "compiled and cached by the host");
    assert_eq!(ping(&plugins).await, json!({"pong": true}));
}

#[test]
fn the_compiler_process_refuses_a_host_of_another_build() {
    let _turn = ONE_AT_A_TIME.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.cwasm");
    let mut child = Command::new(binary())
        .args([
            "compile-plugin",
            "--engine-key",
            "0000000000000000",
            "--output",
        ])
        .arg(&output)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It may stop reading before the whole component: a failed write is fine.
    let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), &echo_wasm());
    let finished = child.wait_with_output().unwrap();

    assert_eq!(finished.status.code(), Some(3));
    let said = String::from_utf8_lossy(&finished.stderr);
    assert!(said.contains("the host runs 0000000000000000"), "{said}");
    assert!(!output.exists());
}

#[tokio::test]
async fn a_compiler_past_its_cpu_time_is_stopped_and_fails_that_load() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // What a component made to keep the compiler busy forever would do.
    let program = script(
        dir.path(),
        "compiler",
        "cat > /dev/null\nwhile :; do :; done",
    );
    let compiler = CompilerProcess::new(program).with_limits(CompileLimits {
        cpu_seconds: 1,
        ..CompileLimits::default()
    });
    let message = compile_error(dir.path(), compiler, unseen_component(echo_wasm(), 9_004)).await;
    assert!(
        message.starts_with("the compiler process used its 1 s of CPU time"),
        "{message}"
    );
}

#[tokio::test]
async fn a_compiler_past_its_memory_is_stopped_and_fails_that_load() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // The real compiler, with less memory than compiling the echo guest
    // needs (measured: it fails below about 20 MiB and reports so down to
    // about 6 MiB; below that it can hang, which the next test covers).
    let compiler = CompilerProcess::new(binary()).with_limits(CompileLimits {
        memory_bytes: 12 << 20,
        ..CompileLimits::default()
    });
    let message = compile_error(dir.path(), compiler, unseen_component(echo_wasm(), 9_005)).await;
    assert!(
        message.starts_with("the compiler process ran out of its 12 MiB of memory"),
        "{message}"
    );
}

#[tokio::test]
async fn a_compiler_that_hangs_is_stopped_at_its_time_and_fails_that_load() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // Waiting, not computing: no CPU limit would ever end it.
    let program = script(dir.path(), "compiler", "cat > /dev/null\nexec sleep 600");
    let compiler = CompilerProcess::new(program).with_limits(CompileLimits {
        wall_seconds: 1,
        ..CompileLimits::default()
    });
    let message = compile_error(dir.path(), compiler, unseen_component(echo_wasm(), 9_006)).await;
    assert_eq!(
        message,
        "the compiler process took more than its 1 s and was stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_compilers_run_at_once_than_the_host_allows() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // Each compiler notes how many are running as it starts, lingers, then
    // compiles for real.
    let running = dir.path().join("running");
    std::fs::create_dir_all(&running).unwrap();
    let seen = dir.path().join("seen");
    let program = script(
        dir.path(),
        "compiler",
        &format!(
            "mkdir '{running}/'$$\nls '{running}' | wc -l >> '{seen}'\nsleep 0.3\nrmdir '{running}/'$$\nexec '{binary}' \"$@\"",
            running = running.display(),
            seen = seen.display(),
            binary = binary().display()
        ),
    );
    std::fs::create_dir_all(dir.path().join("host")).unwrap();
    let store = Store::new(Arc::new(
        RedbBackend::open(&dir.path().join("host/db.redb")).unwrap(),
    ));
    let config = RuntimeConfig {
        compiles_at_once: 1,
        ..RuntimeConfig::with_instances(8)
    };
    let plugins = Plugins::new(&config, &store)
        .unwrap()
        .with_artifact_cache(dir.path().join("host/cache"))
        .with_compiler_process(CompilerProcess::new(program));
    // Three plugins (three names: loads of one plugin take turns anyway),
    // all at once.
    let load = |n: usize| {
        let manifest =
            echo_manifest().replacen("name = \"echo\"", &format!("name = \"echo{n}\""), 1);
        let wasm = unseen_component(echo_wasm(), 9_100 + n);
        let plugins = &plugins;
        async move { plugins.load(&manifest, wasm, PluginSource::Bundled).await }
    };
    let (one, two, three) = tokio::join!(load(1), load(2), load(3));
    for loaded in [one, two, three] {
        loaded.unwrap();
    }

    let seen = std::fs::read_to_string(&seen).unwrap();
    let counts: Vec<&str> = seen.lines().map(str::trim).collect();
    assert_eq!(counts, ["1", "1", "1"], "compilers running at each start");
}

#[test]
fn the_serve_command_runs_its_compilers_within_the_limits_its_flags_give() {
    let _turn = ONE_AT_A_TIME.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    // A fresh data folder: the bundled plugins compile as the host starts,
    // each in a compiler process, here given 12 MiB where compiling one
    // needs about 20. A bundled plugin that does not load stops the start.
    let output = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--compile-memory-mib", "12", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the compiler process ran out of its 12 MiB of memory"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_upgrade_in_place_the_running_build_still_compiles_within_its_limits() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("bin/autoagent");
    std::fs::create_dir_all(program.parent().unwrap()).unwrap();
    std::fs::copy(binary(), &program).unwrap();
    let (data, logs) = (dir.path().join("data"), dir.path().join("logs"));
    // The first start compiles the bundled plugins into the cache; the
    // second gives its compilers too little memory for any compile, so only
    // what is cached loads.
    Host::start_program(&program, data.clone(), logs.clone(), &[]).stop();
    let host = Host::start_program(&program, data, logs, &["--compile-memory-mib", "12"]);

    // The upgrade: another file renamed over the binary, here one that
    // answers as another build would (exit 3, "unavailable").
    let next = dir.path().join("bin/autoagent.next");
    std::fs::write(&next, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&next, &program).unwrap();

    // A component not seen before: compiled by the running build in a
    // child within its 12 MiB, which is too little. Had the host run the
    // file now at its path, it would have compiled it in its own process,
    // without limits, and loaded it.
    let reply = Client::new()
        .put_plugin(
            &host.url("/teams/ops/plugins/probe"),
            &probe_manifest("1.0.0"),
            unseen_component(echo_wasm(), 9_010),
        )
        .await;
    assert_eq!(reply.expect_error(422), "invalid_component");
    let message = reply.json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the compiler process ran out of its 12 MiB of memory"),
        "{message}"
    );
}
