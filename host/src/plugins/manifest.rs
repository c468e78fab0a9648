//! `plugin.toml`: what a plugin is, what it may do and what it may use.
//!
//! Anything the manifest does not grant is denied. Parsing is strict: an
//! unknown key is an error, so a typo cannot silently drop a limit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::{NAME_RULE, is_name};

/// The three plugin kinds, one WIT world each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    /// Gives workers capabilities; world `capability`.
    Capability,
    /// Tells whether a service is healthy; world `health-check`.
    HealthCheck,
    /// Repairs a service; world `recovery-strategy`.
    RecoveryStrategy,
}

impl PluginKind {
    /// The WIT world a plugin of this kind must target.
    pub fn world(self) -> &'static str {
        match self {
            Self::Capability => "capability",
            Self::HealthCheck => "health-check",
            Self::RecoveryStrategy => "recovery-strategy",
        }
    }
}

/// A parsed and validated `plugin.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Manifest {
    /// Plugin name, unique within its team.
    pub name: String,
    /// Semantic version of this build.
    pub version: String,
    /// Which world the component targets.
    pub kind: PluginKind,
    /// Owning team.
    pub team: String,
    /// One line for operators.
    #[serde(default)]
    pub description: String,
    /// Capabilities a capability plugin promises to offer.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// `core/<name>`: the plugin has no component of its own and runs the
    /// bundled plugin `<name>`'s component, under this manifest's kind
    /// (which must be the bundled plugin's), grants and limits. How a team
    /// gives a bundled strategy (`core/command`, `core/webhook`) its own
    /// allow-list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// What the plugin may use; absent means nothing.
    #[serde(default)]
    pub permissions: Permissions,
    /// How much the plugin may take per call.
    #[serde(default)]
    pub limits: Limits,
    /// Values the plugin reads through the `config` import, if granted.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
}

/// Grants. Each is denied unless given here.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Permissions {
    /// Key-value state with this many bytes of keys and values at most.
    pub kv_quota_bytes: Option<u64>,
    /// Keys of `[config]` the plugin may read.
    #[serde(default)]
    pub config_keys: Vec<String>,
    /// Hosts outbound HTTP may reach: `host`, `host:port`, `*.domain`,
    /// `*.domain:port` (IPv6 in brackets).
    #[serde(default)]
    pub http_hosts: Vec<String>,
    /// Local programs the plugin may run.
    #[serde(default)]
    pub commands: Vec<CommandGrant>,
    /// Health checks only: during each `check` call, and only then, the
    /// plugin may reach the address its target names (`url`, or `host` and
    /// `port`): `wasi:http` requests to exactly that host and port, and
    /// TCP connections to the addresses it resolves to on that port.
    #[serde(default)]
    pub reach_target: bool,
}

/// One program a plugin may run, with the arguments it may pass.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CommandGrant {
    /// Absolute path of the program; it runs only under exactly this path.
    pub program: String,
    /// One glob pattern per argument (`*`, `?`, `[abc]`, `{a,b}`): a run
    /// must pass exactly as many arguments, each matching its pattern.
    #[serde(default)]
    pub args: Vec<String>,
    /// Longest the program may run, in milliseconds; it is killed after.
    #[serde(default = "CommandGrant::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Most bytes of stdout, and of stderr, handed back to the plugin.
    #[serde(default = "CommandGrant::default_max_output_bytes")]
    pub max_output_bytes: u64,
}

impl CommandGrant {
    fn default_timeout_ms() -> u64 {
        10_000
    }

    fn default_max_output_bytes() -> u64 {
        64 << 10
    }

    fn patterns(&self) -> Result<Vec<globset::GlobMatcher>, globset::Error> {
        self.args
            .iter()
            .map(|pattern| {
                globset::GlobBuilder::new(pattern)
                    .literal_separator(false)
                    .build()
                    .map(|glob| glob.compile_matcher())
            })
            .collect()
    }

    /// Whether this grant lets `program` run with exactly `args`.
    ///
    /// A pattern's wildcards match any text, `/` included, so
    /// `/var/backups/*` would also match `/var/backups/../../etc/shadow`.
    /// An argument with a `..` path segment therefore passes only a pattern
    /// that is that very argument: no wildcard can lead a path out of the
    /// folder a grant names.
    pub fn allows(&self, program: &str, args: &[String]) -> bool {
        program == self.program
            && args.len() == self.args.len()
            && self.patterns().is_ok_and(|patterns| {
                patterns.iter().zip(args).all(|(pattern, arg)| {
                    pattern.is_match(arg) && (!climbs(arg) || pattern.glob().glob() == arg.as_str())
                })
            })
    }
}

/// True when `arg`, read as a path, has a `..` segment.
fn climbs(arg: &str) -> bool {
    arg.split('/').any(|segment| segment == "..")
}

/// Per-call limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory a call may grow to, in MiB.
    pub memory_mib: u64,
    /// Wall-clock time a call may take, in milliseconds.
    pub timeout_ms: u64,
    /// Calls of this plugin that may run at once; more wait their turn.
    pub max_concurrent_calls: u32,
    /// Largest output a call may return, in bytes.
    pub max_output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mib: 64,
            timeout_ms: 5_000,
            max_concurrent_calls: 16,
            max_output_bytes: 1 << 20,
        }
    }
}

/// Ceilings no manifest may exceed; the engine's pools are sized for them.
pub const MAX_MEMORY_MIB: u64 = 1024;
/// Longest time limit a manifest may ask for.
pub const MAX_TIMEOUT_MS: u64 = 10 * 60 * 1000;
/// Most concurrent calls a manifest may ask for.
pub const MAX_CONCURRENT_CALLS: u32 = 256;
/// Largest output a manifest may allow.
pub const MAX_OUTPUT_BYTES: u64 = 64 << 20;

/// A manifest that cannot be used, naming the field at fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ManifestError {
    /// Not TOML, a wrong type, a missing or unknown key.
    #[error("plugin.toml: {0}")]
    Syntax(String),
    /// A well-formed value that is not allowed.
    #[error("plugin.toml: `{field}` {message}")]
    Invalid {
        /// Dotted path of the key.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl Manifest {
    /// Parses and validates a manifest.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let manifest: Self = toml::from_str(text)
            .map_err(|err| ManifestError::Syntax(one_line(&err.to_string())))?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), ManifestError> {
        let invalid = |field, message: &str| {
            Err(ManifestError::Invalid {
                field,
                message: message.to_owned(),
            })
        };
        if !is_name(&self.name) {
            return invalid("name", NAME_RULE);
        }
        if !is_name(&self.team) {
            return invalid("team", NAME_RULE);
        }
        if semver::Version::parse(&self.version).is_err() {
            return invalid("version", "must be a semantic version such as 1.2.3");
        }
        match self.kind {
            PluginKind::Capability if self.capabilities.is_empty() => {
                return invalid("capabilities", "must list at least one capability");
            }
            PluginKind::HealthCheck | PluginKind::RecoveryStrategy
                if !self.capabilities.is_empty() =>
            {
                return invalid("capabilities", "is only for capability plugins");
            }
            _ => {}
        }
        if self.permissions.reach_target && self.kind != PluginKind::HealthCheck {
            return invalid(
                "permissions.reach-target",
                "is only for health-check plugins (the target is what a check probes)",
            );
        }
        if let Some(component) = &self.component
            && bundled_name(component).is_none()
        {
            return Err(ManifestError::Invalid {
                field: "component",
                message: format!(
                    "is {component:?}; it must name a bundled plugin as `core/<name>` ({NAME_RULE})"
                ),
            });
        }
        if let Some(bad) = self.capabilities.iter().find(|c| !is_name(c)) {
            return Err(ManifestError::Invalid {
                field: "capabilities",
                message: format!("has {bad:?}; {NAME_RULE}"),
            });
        }
        if let Some(key) = self
            .permissions
            .config_keys
            .iter()
            .find(|key| !self.config.contains_key(*key))
        {
            return Err(ManifestError::Invalid {
                field: "permissions.config-keys",
                message: format!("grants {key:?}, which [config] does not define"),
            });
        }
        if let Some((key, _)) = self
            .config
            .iter()
            .find(|(_, value)| config_text(value).is_none())
        {
            return Err(ManifestError::Invalid {
                field: "config",
                message: format!("has {key:?} that is not a string, number or boolean"),
            });
        }
        if let Some(grant) = self
            .permissions
            .commands
            .iter()
            .find(|grant| !grant.program.starts_with('/'))
        {
            return Err(ManifestError::Invalid {
                field: "permissions.commands",
                message: format!("has {:?}, which is not an absolute path", grant.program),
            });
        }
        for grant in &self.permissions.commands {
            if let Err(err) = grant.patterns() {
                return Err(ManifestError::Invalid {
                    field: "permissions.commands.args",
                    message: format!("of {:?} has a bad pattern: {err}", grant.program),
                });
            }
            if !(1..=MAX_TIMEOUT_MS).contains(&grant.timeout_ms) {
                return Err(ManifestError::Invalid {
                    field: "permissions.commands.timeout-ms",
                    message: format!("of {:?} must be 1 to {MAX_TIMEOUT_MS}", grant.program),
                });
            }
            if !(1..=MAX_OUTPUT_BYTES).contains(&grant.max_output_bytes) {
                return Err(ManifestError::Invalid {
                    field: "permissions.commands.max-output-bytes",
                    message: format!("of {:?} must be 1 to {MAX_OUTPUT_BYTES}", grant.program),
                });
            }
        }
        for entry in &self.permissions.http_hosts {
            if let Err(message) = super::http::HostPattern::parse(entry) {
                return Err(ManifestError::Invalid {
                    field: "permissions.http-hosts",
                    message: format!("has {entry:?}, which {message}"),
                });
            }
        }
        let limits = &self.limits;
        if !(1..=MAX_MEMORY_MIB).contains(&limits.memory_mib) {
            return invalid(
                "limits.memory-mib",
                &format!("must be 1 to {MAX_MEMORY_MIB}"),
            );
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&limits.timeout_ms) {
            return invalid(
                "limits.timeout-ms",
                &format!("must be 1 to {MAX_TIMEOUT_MS}"),
            );
        }
        if !(1..=MAX_CONCURRENT_CALLS).contains(&limits.max_concurrent_calls) {
            return invalid(
                "limits.max-concurrent-calls",
                &format!("must be 1 to {MAX_CONCURRENT_CALLS}"),
            );
        }
        if !(1..=MAX_OUTPUT_BYTES).contains(&limits.max_output_bytes) {
            return invalid(
                "limits.max-output-bytes",
                &format!("must be 1 to {MAX_OUTPUT_BYTES}"),
            );
        }
        Ok(())
    }

    /// The bundled plugin whose component this plugin runs, if it names one
    /// with `component = "core/<name>"`.
    pub fn bundled_component(&self) -> Option<&str> {
        self.component.as_deref().and_then(bundled_name)
    }

    /// The grant that lets `program` run with `args`, if any.
    pub fn command_grant(&self, program: &str, args: &[String]) -> Option<&CommandGrant> {
        self.permissions
            .commands
            .iter()
            .find(|grant| grant.allows(program, args))
    }

    /// The text value of a granted config key, or `None` if not granted.
    pub fn granted_config(&self, key: &str) -> Option<Option<String>> {
        if !self.permissions.config_keys.iter().any(|k| k == key) {
            return None;
        }
        Some(self.config.get(key).and_then(config_text))
    }
}

/// `<name>` of `core/<name>`, if `component` is that with a valid name.
fn bundled_name(component: &str) -> Option<&str> {
    component
        .strip_prefix(super::CORE_TEAM)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|name| is_name(name))
}

fn config_text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(n) => Some(n.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_wildcard_never_leads_a_path_out_of_its_folder() {
        let grant = CommandGrant {
            program: "/usr/bin/stat".into(),
            args: vec!["/var/backups/*".into()],
            timeout_ms: 1000,
            max_output_bytes: 1024,
        };
        let run = |arg: &str| grant.allows("/usr/bin/stat", &[arg.to_owned()]);
        assert!(run("/var/backups/db.tar.gz"));
        assert!(
            run("/var/backups/daily/db..tar"),
            "dots inside a name are fine"
        );
        assert!(!run("/var/backups/../../etc/shadow"));
        assert!(!run("/var/backups/x/.."));
        let literal = CommandGrant {
            args: vec!["../data".into()],
            ..grant.clone()
        };
        assert!(literal.allows("/usr/bin/stat", &["../data".to_owned()]));
    }

    use super::*;

    const MINIMAL: &str = r#"
        name = "todo"
        version = "0.1.0"
        kind = "capability"
        team = "core"
        capabilities = ["task_creation"]
    "#;

    #[test]
    fn a_minimal_manifest_grants_nothing() {
        let manifest = Manifest::parse(MINIMAL).unwrap();
        assert_eq!(manifest.permissions.kv_quota_bytes, None);
        assert!(manifest.permissions.commands.is_empty());
        assert_eq!(manifest.limits.timeout_ms, 5_000);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (MINIMAL.replace("0.1.0", "one"), "version"),
            (MINIMAL.replace("\"core\"", "\"co re\""), "team"),
            (
                format!("{MINIMAL}\n[limits]\nmemory-mib = 0"),
                "limits.memory-mib",
            ),
            (format!("{MINIMAL}\n[limits]\nmemroy-mib = 8"), "memroy-mib"),
            (
                format!("{MINIMAL}\n[permissions]\nconfig-keys = [\"token\"]"),
                "permissions.config-keys",
            ),
            (
                MINIMAL.replace("capabilities = [\"task_creation\"]", ""),
                "capabilities",
            ),
        ];
        for (text, field) in cases {
            let err = Manifest::parse(&text).unwrap_err().to_string();
            assert!(err.contains(field), "{err:?} should name {field}");
        }
    }

    #[test]
    fn commands_run_only_as_granted() {
        let text = format!(
            "{MINIMAL}\n[[permissions.commands]]\nprogram = \"/usr/bin/systemctl\"\nargs = [\"restart\", \"{{nginx,apache2}}.service\"]"
        );
        let manifest = Manifest::parse(&text).unwrap();
        let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let grant = manifest
            .command_grant("/usr/bin/systemctl", &args(&["restart", "nginx.service"]))
            .unwrap();
        assert_eq!((grant.timeout_ms, grant.max_output_bytes), (10_000, 65_536));
        for (program, list) in [
            ("/usr/bin/systemctl", &["restart", "sshd.service"][..]),
            ("/usr/bin/systemctl", &["restart"][..]),
            (
                "/usr/bin/systemctl",
                &["restart", "nginx.service", "--now"][..],
            ),
            ("/bin/systemctl", &["restart", "nginx.service"][..]),
            ("systemctl", &["restart", "nginx.service"][..]),
        ] {
            assert!(
                manifest.command_grant(program, &args(list)).is_none(),
                "{program} {list:?}"
            );
        }
        let bad = format!(
            "{MINIMAL}\n[[permissions.commands]]\nprogram = \"/bin/echo\"\nargs = [\"[unclosed\"]"
        );
        let err = Manifest::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("permissions.commands.args"), "{err}");
    }

    const CHECK: &str = r#"
        name = "web"
        version = "0.1.0"
        kind = "health-check"
        team = "ops"
    "#;

    #[test]
    fn reach_target_is_for_health_checks_only() {
        let check =
            Manifest::parse(&format!("{CHECK}\n[permissions]\nreach-target = true")).unwrap();
        assert!(check.permissions.reach_target);
        assert!(!Manifest::parse(CHECK).unwrap().permissions.reach_target);
        for kind in ["capability", "recovery-strategy"] {
            let text = CHECK.replace("health-check", kind)
                + if kind == "capability" {
                    "capabilities = [\"x\"]\n"
                } else {
                    ""
                }
                + "[permissions]\nreach-target = true";
            let err = Manifest::parse(&text).unwrap_err().to_string();
            assert!(
                err.contains("permissions.reach-target") && err.contains("only for health-check"),
                "{kind}: {err}"
            );
        }
    }

    #[test]
    fn component_names_a_bundled_plugin() {
        let text = format!("{CHECK}component = \"core/http\"\n");
        let manifest = Manifest::parse(&text).unwrap();
        assert_eq!(manifest.bundled_component(), Some("http"));
        assert_eq!(Manifest::parse(CHECK).unwrap().bundled_component(), None);
        for bad in [
            "http",
            "core/",
            "ops/http",
            "core/a/b",
            "core/../x",
            "core/h.t",
        ] {
            let text = format!("{CHECK}component = {bad:?}\n");
            let err = Manifest::parse(&text).unwrap_err().to_string();
            assert!(
                err.contains("`component`") && err.contains("core/<name>"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn config_is_readable_only_when_granted() {
        let text = format!(
            "{MINIMAL}\n[permissions]\nconfig-keys = [\"region\"]\n[config]\nregion = \"eu\"\nsecret = \"x\""
        );
        let manifest = Manifest::parse(&text).unwrap();
        assert_eq!(manifest.granted_config("region"), Some(Some("eu".into())));
        assert_eq!(manifest.granted_config("secret"), None);
    }
}
