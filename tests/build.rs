//! Builds the test guest components for `wasm32-wasip2` and writes their
//! paths into `guests.rs`, so tests load real compiled plugins.

/// Test guests under `tests/guests/`, and the bundled `todo` plugin (for
/// the load benchmark).
const GUESTS: &[&str] = &[
    "guest-echo",
    "guest-hostile",
    "guest-checker",
    "guest-fixer",
    "autoagent-plugin-todo",
];

fn main() {
    let outcome = autoagent_plugin_build::build_plugins(GUESTS)
        .and_then(|built| autoagent_plugin_build::write_plugin_consts(&built, "guests.rs"));
    if let Err(err) = outcome {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
    if std::env::var_os("CARGO_FEATURE_EXTISM").is_some() {
        build_extism_guest();
    }
}

/// Builds `guests/extism-echo` (a core module for Extism, its own workspace)
/// for `wasm32-unknown-unknown` and passes its path as `GUEST_EXTISM_ECHO`.
/// Only the plugin call benchmark's Extism comparison needs it.
fn build_extism_guest() {
    use std::path::PathBuf;
    const TARGET: &str = "wasm32-unknown-unknown";
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let guest = manifest_dir.join("guests").join("extism-echo");
    let target_dir = manifest_dir.join("..").join("target").join("extism-guest");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(&guest)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    for var in autoagent_plugin_build::ENV_NOT_INHERITED {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("cannot run cargo for the Extism guest");
    if !status.success() {
        eprintln!(
            "error: building {} failed ({status}); is {TARGET} installed?",
            guest.display()
        );
        std::process::exit(1);
    }
    let wasm = target_dir
        .join(TARGET)
        .join("release")
        .join("guest_extism_echo.wasm");
    println!("cargo:rustc-env=GUEST_EXTISM_ECHO={}", wasm.display());
    for watched in [
        "src/lib.rs",
        "Cargo.toml",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", guest.join(watched).display());
    }
}
