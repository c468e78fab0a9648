//! `autoagent plugin new` and `autoagent plugin push`: the two commands a
//! plugin author runs, outside any workspace of ours.
//!
//! `new` writes a ready plugin crate (Cargo.toml, plugin.toml, a working
//! `src/lib.rs` with native tests) from the templates beside this file.
//! `push` builds that crate for `wasm32-wasip2` and uploads the component
//! and its manifest to a running host, as `PUT /teams/{team}/plugins/{name}`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::plugins::manifest::{Manifest, PluginKind};

/// Target plugins are compiled for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// Why an authoring command failed. `Usage` errors are the caller's to fix
/// (exit code 2); the others are failures of the work itself (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum AuthoringError {
    /// The command was asked something it cannot do as asked.
    #[error("{0}")]
    Usage(String),
    /// Building, reading or uploading failed.
    #[error("{0}")]
    Failed(String),
}

impl AuthoringError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Failed(_) => 1,
        }
    }
}

/// Where the SDK this binary was built with lives, if that folder still
/// exists: a scaffold made on a machine with our sources depends on them by
/// path; anywhere else it depends on the published crate.
fn sdk_beside_sources() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    sdk.join("Cargo.toml")
        .is_file()
        .then(|| sdk.canonicalize().ok())
        .flatten()
}

/// What `autoagent plugin new` is asked to make.
#[derive(Debug, Clone)]
pub struct NewPlugin {
    /// Plugin kind.
    pub kind: PluginKind,
    /// Plugin (and crate) name.
    pub name: String,
    /// Owning team.
    pub team: String,
    /// Folder to create; must not exist or be empty.
    pub dir: PathBuf,
    /// The SDK crate's folder, for a path dependency; `None` picks the
    /// sources this binary was built from if present, else the published
    /// crate.
    pub sdk: Option<PathBuf>,
}

fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase());
            first.into_iter().chain(chars).collect::<String>()
        })
        .collect()
}

/// Writes a new plugin crate and returns its folder.
pub fn new_plugin(request: &NewPlugin) -> Result<PathBuf, AuthoringError> {
    let NewPlugin {
        kind,
        name,
        team,
        dir,
        sdk,
    } = request;
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(AuthoringError::Usage(format!(
            "plugin name {name:?} must start with a lower-case letter (it is also the crate name)"
        )));
    }
    let capability = name.replace('-', "_");
    let capabilities = match kind {
        PluginKind::Capability => format!("capabilities = [\"{capability}\"]\n"),
        PluginKind::HealthCheck | PluginKind::RecoveryStrategy => String::new(),
    };
    let description = match kind {
        PluginKind::Capability => "A capability plugin made with autoagent plugin new",
        PluginKind::HealthCheck => "A health check made with autoagent plugin new",
        PluginKind::RecoveryStrategy => "A recovery strategy made with autoagent plugin new",
    };
    let manifest = fill(
        include_str!("templates/plugin.toml.tmpl"),
        &[
            ("__NAME__", name),
            ("__KIND__", kind.world()),
            ("__TEAM__", team),
            ("__DESCRIPTION__", description),
            ("__CAPABILITIES__", &capabilities),
        ],
    );
    // The manifest must be one the host accepts; this also checks the name
    // and team against the host's rules, with its messages.
    Manifest::parse(&manifest).map_err(|err| AuthoringError::Usage(err.to_string()))?;

    let sdk_dependency = match sdk.clone().or_else(sdk_beside_sources) {
        Some(path) => format!(
            "autoagent-sdk = {{ path = {:?} }}",
            path.display().to_string()
        ),
        None => format!("autoagent-sdk = \"{}\"", env!("CARGO_PKG_VERSION")),
    };
    let cargo_toml = fill(
        include_str!("templates/Cargo.toml.tmpl"),
        &[("__NAME__", name), ("__SDK_DEPENDENCY__", &sdk_dependency)],
    );
    let source = match kind {
        PluginKind::Capability => include_str!("templates/capability.rs.tmpl"),
        PluginKind::HealthCheck => include_str!("templates/health-check.rs.tmpl"),
        PluginKind::RecoveryStrategy => include_str!("templates/recovery-strategy.rs.tmpl"),
    };
    let lib_rs = fill(
        source,
        &[
            ("__NAME__", name),
            ("__TYPE__", &type_name(name)),
            ("__CAPABILITY__", &capability),
        ],
    );

    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(true)
    {
        return Err(AuthoringError::Usage(format!(
            "{} already exists and is not empty",
            dir.display()
        )));
    }
    let write = |path: PathBuf, text: &str| {
        std::fs::write(&path, text).map_err(|err| {
            AuthoringError::Failed(format!("cannot write {}: {err}", path.display()))
        })
    };
    std::fs::create_dir_all(dir.join("src"))
        .map_err(|err| AuthoringError::Failed(format!("cannot create {}: {err}", dir.display())))?;
    write(dir.join("Cargo.toml"), &cargo_toml)?;
    write(dir.join("plugin.toml"), &manifest)?;
    write(dir.join("src/lib.rs"), &lib_rs)?;
    write(
        dir.join(".gitignore"),
        include_str!("templates/gitignore.tmpl"),
    )?;
    std::fs::create_dir_all(dir.join(".cargo"))
        .map_err(|err| AuthoringError::Failed(format!("cannot create {}: {err}", dir.display())))?;
    write(
        dir.join(".cargo/config.toml"),
        include_str!("templates/cargo-config.toml.tmpl"),
    )?;
    Ok(dir.clone())
}

fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values
        .iter()
        .fold(template.to_owned(), |text, (key, value)| {
            text.replace(key, value)
        })
}

/// What `autoagent plugin push` is asked to do.
#[derive(Debug, Clone)]
pub struct Push {
    /// The plugin crate's folder (holding Cargo.toml and plugin.toml).
    pub dir: PathBuf,
    /// The host's origin, e.g. `http://127.0.0.1:50000`.
    pub host: String,
    /// A component to upload instead of building the crate.
    pub wasm: Option<PathBuf>,
    /// A PEM file of certificates to trust for an https host besides the
    /// public roots (a self-signed host certificate, or its private CA).
    pub ca_cert: Option<PathBuf>,
    /// The API token to send as `Authorization: Bearer`.
    pub token: Option<String>,
}

/// What a successful push reports.
#[derive(Debug)]
pub struct Pushed {
    /// `team/name@version` as the host now serves it.
    pub plugin: String,
    /// Whether it replaced an earlier version.
    pub replaced: bool,
}

/// Builds the crate (unless a component is given) and uploads it.
pub async fn push(request: &Push) -> Result<Pushed, AuthoringError> {
    let manifest_path = request.dir.join("plugin.toml");
    let manifest_text = std::fs::read_to_string(&manifest_path).map_err(|err| {
        AuthoringError::Usage(format!("cannot read {}: {err}", manifest_path.display()))
    })?;
    let manifest = Manifest::parse(&manifest_text)
        .map_err(|err| AuthoringError::Usage(format!("{}: {err}", manifest_path.display())))?;
    // The client first: a CA file that does not load is a usage error worth
    // reporting before a build of several seconds.
    let client = upload_client(request.ca_cert.as_deref())?;
    let wasm_path = match &request.wasm {
        Some(path) => path.clone(),
        None => build(&request.dir)?,
    };
    let component = std::fs::read(&wasm_path).map_err(|err| {
        AuthoringError::Failed(format!("cannot read {}: {err}", wasm_path.display()))
    })?;
    let url = format!(
        "{}{}/teams/{}/plugins/{}",
        request.host.trim_end_matches('/'),
        crate::api::BASE_PATH,
        manifest.team,
        manifest.name
    );
    let form = reqwest::multipart::Form::new()
        .text("manifest", manifest_text)
        .part(
            "component",
            reqwest::multipart::Part::bytes(component).file_name(format!("{}.wasm", manifest.name)),
        );
    let mut upload = client.put(&url).multipart(form);
    if let Some(token) = &request.token {
        upload = upload.bearer_auth(token);
    }
    let response = upload.send().await.map_err(|err| {
        // reqwest's own message stops at "error sending request"; the cause,
        // such as an untrusted certificate, is further down the chain.
        let err = err.without_url();
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message = format!("{message}: {cause}");
            source = cause.source();
        }
        AuthoringError::Failed(format!("cannot reach {url}: {message}"))
    })?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.map_err(|err| {
        AuthoringError::Failed(format!("{url} answered {status} without JSON: {err}"))
    })?;
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        let code = body["error"]["code"].as_str().unwrap_or("error");
        return Err(AuthoringError::Failed(format!(
            "the host refused the upload ({status}, {code}): {message}"
        )));
    }
    let data = &body["data"];
    Ok(Pushed {
        plugin: format!(
            "{}/{}@{}",
            data["team"].as_str().unwrap_or_default(),
            data["name"].as_str().unwrap_or_default(),
            data["version"].as_str().unwrap_or_default()
        ),
        replaced: status == reqwest::StatusCode::OK,
    })
}

/// An HTTP client that trusts the public roots and, if given, the
/// certificates in the PEM file `ca_cert`.
fn upload_client(ca_cert: Option<&Path>) -> Result<reqwest::Client, AuthoringError> {
    let mut builder = reqwest::Client::builder();
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).map_err(|err| {
            AuthoringError::Usage(format!("cannot read {}: {err}", path.display()))
        })?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| {
            AuthoringError::Usage(format!(
                "{} holds no PEM certificate: {err}",
                path.display()
            ))
        })?;
        if certificates.is_empty() {
            return Err(AuthoringError::Usage(format!(
                "{} holds no PEM certificate",
                path.display()
            )));
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build()
        .map_err(|err| AuthoringError::Failed(format!("cannot set up the HTTP client: {err}")))
}

/// Runs `cargo build --release --target wasm32-wasip2` in `dir` and returns
/// the component it made.
fn build(dir: &Path) -> Result<PathBuf, AuthoringError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let metadata = Command::new(&cargo)
        .current_dir(dir)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .map_err(|err| AuthoringError::Failed(format!("cannot run cargo: {err}")))?;
    if !metadata.status.success() {
        return Err(AuthoringError::Usage(format!(
            "{} is not a cargo crate: {}",
            dir.display(),
            String::from_utf8_lossy(&metadata.stderr).trim()
        )));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout)
        .map_err(|err| AuthoringError::Failed(format!("cargo metadata: {err}")))?;
    let target_dir = metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| AuthoringError::Failed("cargo metadata names no target dir".into()))?;
    let package = metadata["packages"][0]["name"]
        .as_str()
        .ok_or_else(|| AuthoringError::Failed("cargo metadata names no package".into()))?
        .to_owned();
    let status = Command::new(&cargo)
        .current_dir(dir)
        .args(["build", "--release", "--target", WASM_TARGET])
        .status()
        .map_err(|err| AuthoringError::Failed(format!("cannot run cargo: {err}")))?;
    if !status.success() {
        return Err(AuthoringError::Failed(format!(
            "cargo build --release --target {WASM_TARGET} failed ({status}); is the target \
             installed (`rustup target add {WASM_TARGET}`)?"
        )));
    }
    Ok(target_dir
        .join(WASM_TARGET)
        .join("release")
        .join(format!("{}.wasm", package.replace('-', "_"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("disk-usage_probe"), "DiskUsageProbe");
        assert_eq!(type_name("greeter"), "Greeter");
    }

    #[test]
    fn every_kind_scaffolds_a_valid_manifest() {
        for kind in [
            PluginKind::Capability,
            PluginKind::HealthCheck,
            PluginKind::RecoveryStrategy,
        ] {
            let scratch = tempfile::tempdir().unwrap();
            let dir = scratch.path().join("probe");
            new_plugin(&NewPlugin {
                kind,
                name: "disk-probe".into(),
                team: "ops".into(),
                dir: dir.clone(),
                sdk: Some("/sdk".into()),
            })
            .unwrap();
            let manifest =
                Manifest::parse(&std::fs::read_to_string(dir.join("plugin.toml")).unwrap())
                    .unwrap();
            assert_eq!((manifest.kind, manifest.team.as_str()), (kind, "ops"));
            let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
            assert!(lib.contains("DiskProbe") && !lib.contains("__"), "{lib}");
            let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            assert!(
                cargo.contains(r#"autoagent-sdk = { path = "/sdk" }"#),
                "{cargo}"
            );
        }
    }

    #[test]
    fn refuses_a_folder_in_use_and_a_bad_name() {
        let scratch = tempfile::tempdir().unwrap();
        std::fs::write(scratch.path().join("keep"), "x").unwrap();
        let mut request = NewPlugin {
            kind: PluginKind::Capability,
            name: "probe".into(),
            team: "ops".into(),
            dir: scratch.path().to_owned(),
            sdk: None,
        };
        assert!(matches!(
            new_plugin(&request),
            Err(AuthoringError::Usage(_))
        ));
        request.dir = scratch.path().join("fresh");
        request.name = "9lives".into();
        assert!(matches!(
            new_plugin(&request),
            Err(AuthoringError::Usage(_))
        ));
        request.name = "Probe".into();
        assert!(matches!(
            new_plugin(&request),
            Err(AuthoringError::Usage(_))
        ));
        assert!(!request.dir.exists());
    }
}
