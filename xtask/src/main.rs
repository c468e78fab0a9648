//! Project tasks, run as `cargo xtask <task>` (an alias in `.cargo/config.toml`).
//!
//! The tasks exist so that the README's two commands work on a machine that
//! has only the Rust toolchain: each installs the `wasm32-wasip2` target the
//! plugins are compiled for before it builds anything. Plain Rust keeps them
//! portable and free of shell quoting.

mod bench;

use std::env;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

const WASM_TARGET: &str = "wasm32-wasip2";

/// The aiosmtpd release the alert delivery tests run as their SMTP server,
/// from PyPI.
const AIOSMTPD: &str = "1.4.6";

/// The schemathesis release the fuzz run is pinned to, from PyPI.
const SCHEMATHESIS: &str = "4.32.5";

const USAGE: &str = "\
usage: cargo xtask <task> [args...]

tasks:
  serve [ARGS...]  build the host (release) and run `autoagent serve ARGS...`
  test [ARGS...]   build the host and run every test (`cargo test --release --workspace ARGS...`),
                   then the API fuzz run
  fuzz-api         the API fuzz run alone: schemathesis against a fresh host's OpenAPI document
  bench [NAMES...] run the benchmark suite (or the named benchmarks) and rewrite the tables at
                   the top of BENCHMARKS.md
  build            build the host (release) into target/release/autoagent";

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    let outcome = match task.as_deref() {
        Some("serve") => serve(&rest),
        Some("test") => test(&rest),
        Some("build") => build_host(),
        Some("fuzz-api") => build_host().and_then(|()| fuzz_api()),
        Some("bench") => bench::bench(&rest),
        Some("help" | "--help" | "-h") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown task {other:?}\n{USAGE}")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent folder")
        .to_owned()
}

fn cargo() -> Command {
    let mut command = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

fn run(mut command: Command) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|err| format!("cannot run {command:?}: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed with {status}"))
    }
}

/// Installs the wasm target if rustup does not list it yet.
fn ensure_wasm_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(workspace_root())
        .output()
        .map_err(|err| {
            format!(
                "cannot run rustup ({err}); install the `{WASM_TARGET}` target for your toolchain by hand"
            )
        })?;
    let listed = String::from_utf8_lossy(&installed.stdout);
    if listed.lines().any(|line| line.trim() == WASM_TARGET) {
        return Ok(());
    }
    eprintln!("xtask: installing the {WASM_TARGET} target (plugins are compiled for it)");
    let mut add = Command::new("rustup");
    add.args(["target", "add", WASM_TARGET])
        .current_dir(workspace_root());
    run(add)
}

fn build_host() -> Result<(), String> {
    ensure_wasm_target()?;
    let mut build = cargo();
    build.args(["build", "--release", "-p", "autoagent"]);
    run(build)
}

fn serve(args: &[String]) -> Result<(), String> {
    build_host()?;
    let binary = workspace_root().join("target/release/autoagent");
    // Replace this process so that Ctrl-C and SIGTERM reach the host itself.
    let err = Command::new(&binary).arg("serve").args(args).exec();
    Err(format!("cannot start {}: {err}", binary.display()))
}

/// Builds the binaries and every test in one go. One invocation matters:
/// building tests lets the tests' dev-dependencies unify features of
/// shared crates (anyhow, ring, ...), and a binary built apart (`-p
/// autoagent`) would get other features, so wasmtime and all above it would
/// compile twice.
fn build_for_tests() -> Result<(), String> {
    ensure_wasm_target()?;
    let mut build = cargo();
    build.args(["build", "--release", "--workspace", "--bins", "--tests"]);
    run(build)
}

fn test(args: &[String]) -> Result<(), String> {
    // The black-box tests start the real binary, so build it first.
    build_for_tests()?;
    ensure_aiosmtpd()?;
    let mut test = cargo();
    test.args(["test", "--release", "--workspace"]).args(args);
    test.env(
        "AUTOAGENT_BIN",
        workspace_root().join("target/release/autoagent"),
    );
    run(test)?;
    fuzz_api()
}

/// Installs the pinned aiosmtpd (the real SMTP server the alert delivery
/// tests send mail to) if it is not there yet.
fn ensure_aiosmtpd() -> Result<(), String> {
    let version = Command::new("python3")
        .args(["-m", "aiosmtpd", "--version"])
        .output();
    if version.is_ok_and(|out| {
        String::from_utf8_lossy(&out.stdout).contains(AIOSMTPD)
            || String::from_utf8_lossy(&out.stderr).contains(AIOSMTPD)
    }) {
        return Ok(());
    }
    eprintln!(
        "xtask: installing aiosmtpd {AIOSMTPD} from PyPI (the alert delivery tests' SMTP server)"
    );
    let mut install = Command::new("python3");
    install.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        &format!("aiosmtpd=={AIOSMTPD}"),
    ]);
    run(install)
}

/// Installs the pinned schemathesis if it is not there yet.
fn ensure_schemathesis() -> Result<(), String> {
    let version = Command::new("python3")
        .args(["-m", "schemathesis.cli", "--version"])
        .output();
    if version.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(SCHEMATHESIS)) {
        return Ok(());
    }
    eprintln!("xtask: installing schemathesis {SCHEMATHESIS} from PyPI (the API fuzz run uses it)");
    let mut install = Command::new("python3");
    install.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        &format!("schemathesis=={SCHEMATHESIS}"),
    ]);
    run(install)
}

/// Starts a fresh host on a free loopback port and runs schemathesis
/// against its own OpenAPI document with every check (the settings are in
/// `tests/fuzz/schemathesis.toml`); fails on any finding.
fn fuzz_api() -> Result<(), String> {
    ensure_schemathesis()?;
    let scratch = env::temp_dir().join(format!("autoagent-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let mut host = Command::new(workspace_root().join("target/release/autoagent"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(scratch.join("data"))
        .arg("--log-dir")
        .arg(scratch.join("logs"))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot start the host: {err}"))?;
    let mut lines = BufReader::new(host.stdout.take().expect("piped stdout")).lines();
    let address = lines.by_ref().map_while(Result::ok).find_map(|line| {
        let rest = line.split("listening on ").nth(1)?;
        Some(rest.split_whitespace().next()?.to_owned())
    });
    // Keep reading the host's output so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let outcome = match address {
        None => Err("the host stopped before it listened".to_owned()),
        Some(address) => {
            let base = format!("http://{address}/api/autoagents-management/v1");
            let mut fuzz = Command::new("python3");
            fuzz.args(["-m", "schemathesis.cli", "--config-file"])
                .arg(workspace_root().join("tests/fuzz/schemathesis.toml"))
                .args(["run", &format!("{base}/openapi.json"), "--url", &base])
                .args(["--checks", "all", "--no-color"]);
            run(fuzz)
        }
    };
    let _ = host.kill();
    let _ = host.wait();
    let _ = std::fs::remove_dir_all(&scratch);
    outcome
}
