//! Builds AutoAgent plugin crates of this workspace into WebAssembly
//! components from a build script.
//!
//! A crate whose tests or binary need real plugins (the host, the black-box
//! tests) calls this from its `build.rs`:
//!
//! ```no_run
//! // build.rs, in `fn main`:
//! let plugins = autoagent_plugin_build::build_plugins(&["guest-echo", "guest-hostile"])
//!     .unwrap_or_else(|err| panic!("{err}"));
//! autoagent_plugin_build::write_plugin_consts(&plugins, "plugins.rs")
//!     .unwrap_or_else(|err| panic!("{err}"));
//! ```
//!
//! ```ignore
//! // src/lib.rs or a test
//! mod plugins {
//!     include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
//! }
//! let bytes = std::fs::read(plugins::GUEST_ECHO)?;
//! ```
//!
//! [`build_plugins`] runs a nested `cargo build --release --target
//! wasm32-wasip2` for the named packages into `<workspace>/target/guests`
//! (one directory shared by every caller, so each plugin is compiled once) and
//! prints `cargo:rerun-if-changed` for exactly the files the plugins were
//! built from, so the calling build script reruns only when a plugin's source,
//! its dependencies or the WIT contract change.

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::error::Error;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target plugins are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Variables the outer cargo sets for build scripts (or that configure the
/// outer build) which would make the nested build wrong if inherited. A build
/// script that runs another nested wasm build removes them too.
pub const ENV_NOT_INHERITED: &[&str] = &[
    // Flags meant for the host target (e.g. `-C target-cpu=native`,
    // coverage instrumentation) break or bloat a wasm build; cargo reads the
    // encoded form first, so both must go.
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    // The nested build chooses its own target and directory.
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    // Set by `cargo clippy`: the nested build would lint the plugins with the
    // outer run's lint flags, and clippy's failures would look like build failures.
    "RUSTC_WORKSPACE_WRAPPER",
    "CLIPPY_ARGS",
    "CARGO_PRIMARY_PACKAGE",
];

/// One plugin package compiled to a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltPlugin {
    /// Cargo package name, e.g. `guest-echo`.
    pub package: String,
    /// Absolute path of the component, e.g. `.../target/guests/wasm32-wasip2/release/guest_echo.wasm`.
    pub wasm: PathBuf,
    /// Absolute path of the package's `plugin.toml`, if it has one beside its `Cargo.toml`.
    pub manifest: Option<PathBuf>,
}

impl BuiltPlugin {
    /// The name [`write_plugin_consts`] gives this plugin's constant: the
    /// package name in capitals with `-` as `_`, e.g. `GUEST_ECHO`.
    pub fn const_name(&self) -> String {
        self.package
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    }
}

/// Why plugins could not be built. Its `Display` is one sentence meant for
/// the person running the build.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// The `wasm32-wasip2` standard library is not installed.
    MissingTarget,
    /// The nested `cargo build` failed; its errors are in the build script's output.
    CargoFailed {
        /// The packages that were being built.
        packages: Vec<String>,
        /// How cargo exited.
        status: String,
    },
    /// A package was built but cargo reported no component for it
    /// (not a workspace member, or not `crate-type = ["cdylib"]`).
    NoComponent {
        /// The package.
        package: String,
    },
    /// Running a program or reading or writing a file failed.
    Io {
        /// What was being done.
        action: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Something this helper relies on was not as expected.
    Unexpected(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::MissingTarget => write!(
                f,
                "the {TARGET} target is not installed, so plugins cannot be built: \
                 run `rustup target add {TARGET}` (or `cargo xtask test`, which does it)"
            ),
            BuildError::CargoFailed { packages, status } => write!(
                f,
                "building the plugins {} for {TARGET} failed ({status}); cargo's errors are printed above",
                packages.join(", ")
            ),
            BuildError::NoComponent { package } => write!(
                f,
                "cargo built `{package}` but produced no .wasm for it: \
                 is it a workspace member with `crate-type = [\"cdylib\"]`?"
            ),
            BuildError::Io { action, source } => write!(f, "{action}: {source}"),
            BuildError::Unexpected(message) => f.write_str(message),
        }
    }
}

impl Error for BuildError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            BuildError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let action = action.into();
    move |source| BuildError::Io { action, source }
}

/// Builds `packages` (workspace members with `crate-type = ["cdylib", ...]`)
/// into components and returns them in the order given.
///
/// Meant to be called from a build script: it uses the `CARGO`, `RUSTC` and
/// `CARGO_MANIFEST_DIR` variables cargo sets there (falling back to `cargo`,
/// `rustc` and the current directory), and prints `cargo:rerun-if-changed`
/// lines for every file the components were built from. The nested build
/// always uses the release profile and `<workspace>/target/guests`.
pub fn build_plugins(packages: &[&str]) -> Result<Vec<BuiltPlugin>, BuildError> {
    if packages.is_empty() {
        return Ok(Vec::new());
    }
    ensure_target_installed()?;

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let start_dir =
        env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from("."), PathBuf::from);
    let workspace = workspace_root(&cargo, &start_dir)?;
    let target_dir = workspace.join("target").join("guests");

    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
            "--target",
            TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    for package in packages {
        cmd.arg("--package").arg(package);
    }
    for var in ENV_NOT_INHERITED {
        cmd.env_remove(var);
    }
    // stdout carries the JSON messages; cargo's own progress and rendered
    // errors go to stderr, which cargo shows when a build script fails.
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let output = cmd
        .output()
        .map_err(io_error(format!("cannot run {}", cargo.to_string_lossy())))?;
    if !output.status.success() {
        return Err(BuildError::CargoFailed {
            packages: packages.iter().map(|p| (*p).to_owned()).collect(),
            status: output.status.to_string(),
        });
    }

    let artifacts = component_artifacts(&String::from_utf8_lossy(&output.stdout))?;
    let mut built = Vec::with_capacity(packages.len());
    // Plugins share most of their sources (the SDK, the WIT); print each once.
    let mut watched = BTreeSet::new();
    for &package in packages {
        let artifact = artifacts
            .get(package)
            .ok_or_else(|| BuildError::NoComponent {
                package: package.to_owned(),
            })?;
        let dep_info_path = artifact.wasm.with_extension("d");
        let dep_info = fs::read_to_string(&dep_info_path)
            .map_err(io_error(format!("cannot read {}", dep_info_path.display())))?;
        watched.extend(dep_info_paths(&dep_info));
        watched.insert(artifact.manifest_path.display().to_string());
        let manifest = artifact.manifest_path.with_file_name("plugin.toml");
        let manifest = manifest.is_file().then_some(manifest);
        if let Some(manifest) = &manifest {
            // Callers usually embed it. (Watching a missing file would rerun every time.)
            watched.insert(manifest.display().to_string());
        }
        built.push(BuiltPlugin {
            package: package.to_owned(),
            wasm: artifact.wasm.clone(),
            manifest,
        });
    }
    // A new dependency version changes the build without touching any source file.
    watched.insert(workspace.join("Cargo.lock").display().to_string());
    // The workspace's cargo config sets the plugins' link flags (their
    // stack size): a change there must rebuild them.
    let cargo_config = workspace.join(".cargo").join("config.toml");
    if cargo_config.is_file() {
        watched.insert(cargo_config.display().to_string());
    }
    for path in watched {
        println!("cargo:rerun-if-changed={path}");
    }
    Ok(built)
}

/// Writes `$OUT_DIR/<file_name>` with, for each plugin (see [`BuiltPlugin::const_name`]):
///
/// - `pub const GUEST_ECHO: &str` — absolute path of the component;
/// - `pub const GUEST_ECHO_BYTES: &[u8]` — the component, via `include_bytes!`;
/// - `pub const GUEST_ECHO_MANIFEST: &str` — absolute path of its `plugin.toml`, if it has one;
///
/// and `pub const ALL_PLUGINS: &[(&str, &str)]`, the package names with their
/// paths. Returns the file's path; include it with
/// `include!(concat!(env!("OUT_DIR"), "/<file_name>"))`.
pub fn write_plugin_consts(
    plugins: &[BuiltPlugin],
    file_name: &str,
) -> Result<PathBuf, BuildError> {
    let out_dir = env::var_os("OUT_DIR").ok_or_else(|| {
        BuildError::Unexpected("OUT_DIR is not set: call this from a build script".to_owned())
    })?;
    let path = Path::new(&out_dir).join(file_name);
    let source = plugin_consts_source(plugins)?;
    fs::write(&path, source).map_err(io_error(format!("cannot write {}", path.display())))?;
    Ok(path)
}

/// The text [`write_plugin_consts`] writes.
pub fn plugin_consts_source(plugins: &[BuiltPlugin]) -> Result<String, BuildError> {
    let mut src = String::from("// Generated by autoagent-plugin-build. Do not edit.\n");
    let mut all = String::new();
    for plugin in plugins {
        let name = plugin.const_name();
        let wasm = rust_str(&plugin.wasm)?;
        // `allow(dead_code)`: a crate usually needs only some of the constants.
        src.push_str(&format!(
            "\n/// `{package}` compiled to a component: its path.\n#[allow(dead_code)]\npub const {name}: &str = {wasm};\n\
             /// `{package}` compiled to a component: its bytes.\n#[allow(dead_code)]\npub const {name}_BYTES: &[u8] = include_bytes!({wasm});\n",
            package = plugin.package,
        ));
        if let Some(manifest) = &plugin.manifest {
            src.push_str(&format!(
                "/// The path of `{package}`'s `plugin.toml`.\n#[allow(dead_code)]\npub const {name}_MANIFEST: &str = {manifest};\n",
                package = plugin.package,
                manifest = rust_str(manifest)?,
            ));
        }
        all.push_str(&format!("    ({:?}, {name}),\n", plugin.package));
    }
    src.push_str(&format!(
        "\n/// Every plugin built, as (package, path of the component).\n#[allow(dead_code)]\npub const ALL_PLUGINS: &[(&str, &str)] = &[\n{all}];\n"
    ));
    Ok(src)
}

/// A Rust string literal for `path`.
fn rust_str(path: &Path) -> Result<String, BuildError> {
    let text = path
        .to_str()
        .ok_or_else(|| BuildError::Unexpected(format!("{} is not valid UTF-8", path.display())))?;
    // `Debug` escapes quotes and backslashes the way Rust literals expect.
    Ok(format!("{text:?}"))
}

/// Fails with [`BuildError::MissingTarget`] unless the sysroot has the wasm standard library.
///
/// Checked up front because a missing target otherwise shows up as a wall of
/// "can't find crate for `core`" errors.
fn ensure_target_installed() -> Result<(), BuildError> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(io_error(format!("cannot run {}", rustc.to_string_lossy())))?;
    if !output.status.success() {
        return Err(BuildError::Unexpected(format!(
            "`{} --print sysroot` failed: {}",
            rustc.to_string_lossy(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if sysroot
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib")
        .is_dir()
    {
        Ok(())
    } else {
        Err(BuildError::MissingTarget)
    }
}

fn workspace_root(cargo: &std::ffi::OsStr, start_dir: &Path) -> Result<PathBuf, BuildError> {
    let output = Command::new(cargo)
        .current_dir(start_dir)
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .map_err(io_error(format!("cannot run {}", cargo.to_string_lossy())))?;
    if !output.status.success() {
        return Err(BuildError::Unexpected(format!(
            "cannot find the workspace of {}: {}",
            start_dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let manifest = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    manifest.parent().map(Path::to_path_buf).ok_or_else(|| {
        BuildError::Unexpected(format!(
            "odd workspace manifest path {}",
            manifest.display()
        ))
    })
}

/// What cargo reported for one package's component.
#[derive(Debug)]
struct Artifact {
    wasm: PathBuf,
    manifest_path: PathBuf,
}

/// Picks the `.wasm` files out of cargo's `compiler-artifact` messages, by package name.
fn component_artifacts(messages: &str) -> Result<BTreeMap<String, Artifact>, BuildError> {
    let mut artifacts = BTreeMap::new();
    for line in messages.lines().filter(|l| l.starts_with('{')) {
        let message: serde_json::Value = serde_json::from_str(line).map_err(|err| {
            BuildError::Unexpected(format!(
                "cargo printed a message that is not JSON ({err}): {line}"
            ))
        })?;
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(wasm) = message["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .find(|f| f.ends_with(".wasm"))
        else {
            continue;
        };
        let Some(manifest_path) = message["manifest_path"].as_str() else {
            continue;
        };
        let Some(package) = package_name(&message) else {
            continue;
        };
        artifacts.insert(
            package,
            Artifact {
                wasm: PathBuf::from(wasm),
                manifest_path: PathBuf::from(manifest_path),
            },
        );
    }
    Ok(artifacts)
}

/// The package name in an artifact message's `package_id`.
///
/// Cargo's current ids look like `path+file:///abs/dir#name@0.1.0`, or
/// `path+file:///abs/name#0.1.0` when the directory is named like the
/// package; the oldest were `name 0.1.0 (path+file:///abs/dir)`.
fn package_name(message: &serde_json::Value) -> Option<String> {
    let id = message["package_id"].as_str()?;
    if let Some((url, fragment)) = id.rsplit_once('#') {
        return Some(match fragment.split_once('@') {
            Some((name, _version)) => name.to_owned(),
            None => url.rsplit('/').next()?.to_owned(),
        });
    }
    id.split(' ').next().map(str::to_owned)
}

/// The prerequisites of the rules in a dep-info file (`target: dep dep ...`),
/// each once. Spaces inside paths are escaped as `\ `.
fn dep_info_paths(text: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for line in text.lines() {
        let Some(deps) = rule_prerequisites(line) else {
            continue;
        };
        let mut current = String::new();
        let mut chars = deps.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&' ') => {
                    current.push(' ');
                    chars.next();
                }
                ' ' | '\t' => {
                    if !current.is_empty() {
                        paths.push(std::mem::take(&mut current));
                    }
                }
                _ => current.push(c),
            }
        }
        if !current.is_empty() {
            paths.push(current);
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

/// The text after the rule's `: `; the target before it may itself contain
/// escaped spaces, and Windows paths contain `:` not followed by a space.
fn rule_prerequisites(line: &str) -> Option<&str> {
    let bytes = line.as_bytes();
    (0..bytes.len())
        .find(|&i| bytes[i] == b':' && matches!(bytes.get(i + 1), None | Some(b' ')))
        .map(|i| &line[i + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep_info_paths_unescape_spaces_and_dedup() {
        let text = "/t/guest_echo.wasm: /src/a.rs /src/my\\ dir/b.rs /src/a.rs\n\n/src/a.rs:\n";
        assert_eq!(dep_info_paths(text), ["/src/a.rs", "/src/my dir/b.rs"]);
    }

    #[test]
    fn dep_info_target_may_contain_colons_and_spaces() {
        let text = "C:\\t\\my\\ out\\x.wasm: C:\\src\\a.rs\n";
        assert_eq!(dep_info_paths(text), ["C:\\src\\a.rs"]);
    }

    #[test]
    fn package_names_from_every_id_format() {
        let id = |s: &str| serde_json::json!({ "package_id": s });
        assert_eq!(
            package_name(&id("path+file:///w/tests/guests/echo#guest-echo@0.1.0")).as_deref(),
            Some("guest-echo")
        );
        assert_eq!(
            package_name(&id("path+file:///w/sdk#0.1.0")).as_deref(),
            Some("sdk")
        );
        assert_eq!(
            package_name(&id("guest-echo 0.1.0 (path+file:///w/echo)")).as_deref(),
            Some("guest-echo")
        );
    }

    #[test]
    fn artifacts_keep_only_components() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/sdk#autoagent-sdk@0.1.0","manifest_path":"/w/sdk/Cargo.toml","filenames":["/t/libautoagent_sdk.rlib"]}"#,
            "\n",
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests/guests/echo#guest-echo@0.1.0","manifest_path":"/w/tests/guests/echo/Cargo.toml","filenames":["/t/libguest_echo.rlib","/t/guest_echo.wasm"]}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\n"
        );
        let artifacts = component_artifacts(messages).unwrap();
        assert_eq!(artifacts.len(), 1);
        assert_eq!(
            artifacts["guest-echo"].wasm,
            Path::new("/t/guest_echo.wasm")
        );
        assert_eq!(
            artifacts["guest-echo"].manifest_path,
            Path::new("/w/tests/guests/echo/Cargo.toml")
        );
    }

    #[test]
    fn consts_source_is_valid_rust_shape() {
        let plugins = [BuiltPlugin {
            package: "guest-echo".to_owned(),
            wasm: PathBuf::from("/t/guest \"echo\".wasm"),
            manifest: Some(PathBuf::from("/w/echo/plugin.toml")),
        }];
        let src = plugin_consts_source(&plugins).unwrap();
        assert!(
            src.contains(r#"pub const GUEST_ECHO: &str = "/t/guest \"echo\".wasm";"#),
            "{src}"
        );
        assert!(src.contains(
            r#"pub const GUEST_ECHO_BYTES: &[u8] = include_bytes!("/t/guest \"echo\".wasm");"#
        ));
        assert!(src.contains(r#"pub const GUEST_ECHO_MANIFEST: &str = "/w/echo/plugin.toml";"#));
        assert!(src.contains(r#"("guest-echo", GUEST_ECHO),"#));
    }

    #[test]
    fn missing_target_message_is_one_actionable_sentence() {
        let text = BuildError::MissingTarget.to_string();
        assert!(text.contains("rustup target add wasm32-wasip2"));
        assert!(!text.contains('\n'));
    }
}
