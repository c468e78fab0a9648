//! Project tasks, run as `cargo xtask <task>` (an alias in `.cargo/config.toml`).
//!
//! The tasks exist so that the README's two commands work on a machine that
//! has only the Rust toolchain: each installs the `wasm32-wasip2` target the
//! plugins are compiled for before it builds anything. Plain Rust keeps them
//! portable and free of shell quoting.

use std::env;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

const WASM_TARGET: &str = "wasm32-wasip2";

const USAGE: &str = "\
usage: cargo xtask <task> [args...]

tasks:
  serve [ARGS...]  build the host (release) and run `autoagent serve ARGS...`
  test [ARGS...]   build the host and run every test (`cargo test --release --workspace ARGS...`)
  build            build the host (release) into target/release/autoagent";

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    let outcome = match task.as_deref() {
        Some("serve") => serve(&rest),
        Some("test") => test(&rest),
        Some("build") => build_host(),
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

fn test(args: &[String]) -> Result<(), String> {
    // The black-box tests start the real binary, so build it first.
    build_host()?;
    let mut test = cargo();
    test.args(["test", "--release", "--workspace"]).args(args);
    test.env(
        "AUTOAGENT_BIN",
        workspace_root().join("target/release/autoagent"),
    );
    run(test)
}
