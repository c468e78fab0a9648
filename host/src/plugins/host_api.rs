//! What a plugin may ask of the host: the imports of world `host-imports`.
//!
//! Each import checks the calling plugin's manifest first; anything not
//! granted is refused with an error the plugin can read, and logged.

use std::sync::Arc;

use tokio::sync::Semaphore;
use wasmtime::component::{ComponentType, Lower};

use super::manifest::Manifest;
use super::reach::Reach;
use super::runtime::CallState;
use super::runtime::bindings::imports::autoagent::plugin::{commands, config, kv, log};
use super::state::{PluginState, StateError};

/// The unique number of one plugin call, shown as `call_<n>` in every log
/// line the call causes and in the call context the plugin gets. A number,
/// so that a call hands it around without copying text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallId(pub u64);

impl CallId {
    /// The id as the plugin and the logs see it, `call_<n>`. Written out
    /// by hand: `format!` machinery costs a call more than the rest of its
    /// context.
    pub fn text(self) -> CallIdText {
        const PREFIX: &[u8] = b"call_";
        let mut digits = [0; 20];
        let mut first = digits.len();
        let mut rest = self.0;
        loop {
            first -= 1;
            digits[first] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let len = PREFIX.len() + digits.len() - first;
        let mut bytes = [0; CallIdText::CAPACITY];
        bytes[..PREFIX.len()].copy_from_slice(PREFIX);
        bytes[PREFIX.len()..len].copy_from_slice(&digits[first..]);
        CallIdText { bytes, len }
    }
}

/// A call id written out, kept on the stack: a call hands its id to the
/// plugin without allocating.
#[derive(Clone, Copy)]
pub struct CallIdText {
    bytes: [u8; Self::CAPACITY],
    len: usize,
}

impl CallIdText {
    const CAPACITY: usize = "call_".len() + 20;

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only `CallId::text` fills the bytes, with ASCII.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text().as_str())
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
    /// Who the call is for, as the plugin is told, kept apart from this
    /// context (which the call's store owns) so that it can be lent to the
    /// call.
    pub(super) fn told(&self) -> Told {
        Told {
            manifest: self.manifest.clone(),
            call_id: self.call_id.text(),
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

/// Who a call is for, as its plugin is told (see [`HostContext::told`]).
pub(super) struct Told {
    manifest: Arc<Manifest>,
    call_id: CallIdText,
    worker_id: Option<String>,
    subject_id: Option<String>,
}

impl Told {
    /// The `call-context` record, borrowed from `self`.
    pub(super) fn context(&self) -> CallContext<'_> {
        CallContext {
            team: &self.manifest.team,
            plugin: &self.manifest.name,
            call_id: self.call_id.as_str(),
            worker_id: self.worker_id.as_deref(),
            subject_id: self.subject_id.as_deref(),
        }
    }
}

/// WIT's `call-context`, lowered into the plugin from borrowed text (the
/// generated bindings' own type owns its strings, which would cost a call
/// three allocations before the copy into the guest).
#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
pub(super) struct CallContext<'a> {
    team: &'a str,
    plugin: &'a str,
    #[component(name = "call-id")]
    call_id: &'a str,
    #[component(name = "worker-id")]
    worker_id: Option<&'a str>,
    #[component(name = "subject-id")]
    subject_id: Option<&'a str>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_id_text_is_what_the_logs_show() {
        for (n, text) in [
            (0, "call_0"),
            (7, "call_7"),
            (10, "call_10"),
            (1_733_000_000_000, "call_1733000000000"),
            (u64::MAX, "call_18446744073709551615"),
        ] {
            assert_eq!(CallId(n).text().as_str(), text);
            assert_eq!(CallId(n).to_string(), text);
        }
    }
}
