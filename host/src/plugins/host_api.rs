//! What a plugin may ask of the host: the imports of world `host-imports`.
//!
//! Each import checks the calling plugin's manifest first; anything not
//! granted is refused with an error the plugin can read, and logged.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::manifest::Manifest;
use super::reach::Reach;
use super::runtime::CallState;
use super::runtime::bindings::capability::autoagent::plugin::types as wit_types;
use super::runtime::bindings::imports::autoagent::plugin::{commands, config, kv, log};
use super::state::{PluginState, StateError};

/// The unique number of one plugin call, shown as `call_<n>` in every log
/// line the call causes and in the call context the plugin gets. A number,
/// so that a call hands it around without copying text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallId(pub u64);

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "call_{}", self.0)
    }
}

/// Who a call is for and what its plugin may do.
#[derive(Clone)]
pub struct HostContext {
    /// The plugin's manifest: its identity and grants.
    pub manifest: Arc<Manifest>,
    /// Unique id of the call, in every log line it causes.
    pub call_id: CallId,
    /// Worker the call runs for, if any.
    pub worker_id: Option<String>,
    /// Task, execution or incident the call serves, if any.
    pub subject_id: Option<String>,
    /// Where key-value state lives.
    pub state: Arc<PluginState>,
    /// The network this call may use: a health check's target, when its
    /// manifest grants `reach-target`; `None` (no network) otherwise.
    pub reach: Option<Reach>,
    /// The plugin's team's share of the guest threads (see `Slice`).
    pub share: Arc<Semaphore>,
}

impl HostContext {
    pub(super) fn wit_context(&self) -> wit_types::CallContext {
        wit_types::CallContext {
            team: self.manifest.team.clone(),
            plugin: self.manifest.name.clone(),
            call_id: self.call_id.to_string(),
            worker_id: self.worker_id.clone(),
            subject_id: self.subject_id.clone(),
        }
    }

    fn team(&self) -> &str {
        &self.manifest.team
    }

    fn plugin(&self) -> &str {
        &self.manifest.name
    }

    fn kv_quota(&self) -> Result<u64, kv::KvError> {
        self.manifest.permissions.kv_quota_bytes.ok_or_else(|| {
            tracing::warn!(
                team = %self.team(),
                plugin = %self.plugin(),
                call_id = %self.call_id,
                "plugin denied key-value state: not granted"
            );
            kv::KvError::Denied("key-value state is not granted in plugin.toml".into())
        })
    }
}

fn kv_error(err: StateError) -> kv::KvError {
    match err {
        StateError::Denied => kv::KvError::Denied(err.to_string()),
        StateError::QuotaExceeded { .. } => kv::KvError::QuotaExceeded(err.to_string()),
        StateError::BadKey => kv::KvError::Denied(err.to_string()),
        StateError::Store(_) => kv::KvError::Storage(err.to_string()),
    }
}

impl log::Host for CallState {
    async fn log(&mut self, level: log::Level, message: String, fields: Vec<(String, String)>) {
        let host = &self.host;
        let fields = fields
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(" ");
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(
                    target: "plugin",
                    $level,
                    team = %host.team(),
                    plugin = %host.plugin(),
                    call_id = %host.call_id,
                    worker_id = %host.worker_id.as_deref().unwrap_or("-"),
                    subject_id = %host.subject_id.as_deref().unwrap_or("-"),
                    "{message} {fields}"
                )
            };
        }
        match level {
            log::Level::Trace => emit!(tracing::Level::TRACE),
            log::Level::Debug => emit!(tracing::Level::DEBUG),
            log::Level::Info => emit!(tracing::Level::INFO),
            log::Level::Warn => emit!(tracing::Level::WARN),
            log::Level::Error => emit!(tracing::Level::ERROR),
        }
    }
}

impl kv::Host for CallState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::KvError> {
        let host = &self.host;
        host.kv_quota()?;
        host.state
            .get(host.team(), host.plugin(), &key)
            .map_err(kv_error)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), kv::KvError> {
        // Waiting for the commit is not computing: free the team's share.
        self.slice.release();
        let host = &self.host;
        let quota = host.kv_quota()?;
        host.state
            .write(host.team(), host.plugin(), quota, &key, Some(value))
            .await
            .map_err(|err| {
                tracing::warn!(
                    team = %host.team(),
                    plugin = %host.plugin(),
                    call_id = %host.call_id,
                    error = %err,
                    "plugin key-value write refused"
                );
                kv_error(err)
            })
    }

    async fn delete(&mut self, key: String) -> Result<(), kv::KvError> {
        self.slice.release();
        let host = &self.host;
        let quota = host.kv_quota()?;
        host.state
            .write(host.team(), host.plugin(), quota, &key, None)
            .await
            .map_err(kv_error)
    }

    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, kv::KvError> {
        let host = &self.host;
        host.kv_quota()?;
        host.state
            .keys(host.team(), host.plugin(), &prefix)
            .map_err(kv_error)
    }
}

impl config::Host for CallState {
    async fn get(&mut self, key: String) -> Result<Option<String>, String> {
        let host = &self.host;
        host.manifest.granted_config(&key).ok_or_else(|| {
            tracing::warn!(
                team = %host.team(),
                plugin = %host.plugin(),
                call_id = %host.call_id,
                key = %key,
                "plugin denied config key: not granted"
            );
            format!("config key {key:?} is not granted in plugin.toml")
        })
    }
}

impl commands::Host for CallState {
    async fn run(
        &mut self,
        program: String,
        args: Vec<String>,
    ) -> Result<commands::CommandOutput, String> {
        // The program runs in its own process: free the team's share.
        self.slice.release();
        let host = &self.host;
        let Some(grant) = host.manifest.command_grant(&program, &args) else {
            tracing::warn!(
                team = %host.team(),
                plugin = %host.plugin(),
                call_id = %host.call_id,
                program = %program,
                args = %args.join(" "),
                "plugin denied command: not granted in plugin.toml"
            );
            return Err(format!(
                "running {program:?} with {args:?} is denied: plugin.toml grants no such command"
            ));
        };
        let finished = super::commands::run(grant, &program, &args, self.deadline)
            .await
            .map_err(|err| {
                tracing::warn!(
                    team = %host.team(),
                    plugin = %host.plugin(),
                    call_id = %host.call_id,
                    program = %program,
                    error = %err,
                    "plugin command could not start"
                );
                format!("cannot start {program:?}: {err}")
            })?;
        tracing::info!(
            team = %host.team(),
            plugin = %host.plugin(),
            call_id = %host.call_id,
            worker_id = %host.worker_id.as_deref().unwrap_or("-"),
            subject_id = %host.subject_id.as_deref().unwrap_or("-"),
            program = %program,
            args = %args.join(" "),
            status = finished.status,
            timed_out = finished.timed_out,
            millis = finished.elapsed.as_millis() as u64,
            "plugin ran command"
        );
        Ok(commands::CommandOutput {
            status: finished.status,
            stdout: finished.stdout,
            stderr: finished.stderr,
        })
    }
}
