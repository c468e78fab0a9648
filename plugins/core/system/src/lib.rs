//! The bundled `system` capability plugin (team `core`).
//!
//! It reads the machine the host runs on for the action-plan templates
//! (system check, security audit, log maintenance, backup verification).
//! The sandbox gives it no files, sockets or environment: it sees the
//! machine only through the programs its `plugin.toml` grants, each with
//! exact or patterned arguments (`/usr/bin/cat` of `/proc/loadavg` and a
//! few other files, `df -P -k -T`, `find` under `/etc` and `/var/log`,
//! `du -sk /var/log`, `getent hosts NAME`, `stat` and `sha256sum` under
//! `/var/backups`). It changes nothing: `old_logs` only reports the old
//! files, it never deletes one.
//!
//! Every capability takes a JSON object whose fields are all optional and
//! answers an object with `status` (`ok`, `warning` or `critical`), a
//! one-line `summary` and its details. With `"failOn": "warning"` (or
//! `"critical"`) a status at least that bad is returned as a `failed` error
//! whose message is the summary, so a plan fails on a finding.
//!
//! Written only against `autoagent-sdk`, as any outside plugin would be.

mod checks;
pub mod parse;

use autoagent_sdk::log::{self, Level};
use autoagent_sdk::serde_json::{Map, Value};
use autoagent_sdk::{CallContext, Capability, CapabilityInfo, PluginError, from_input};
use serde::{Deserialize, Serialize};

/// The plugin; all behaviour lives in its [`Capability`] implementation.
pub struct System;

/// Every capability with its description, in the order `describe` lists them.
const CAPABILITIES: [(&str, &str); 13] = [
    (
        "cpu_load",
        "Load averages per CPU from /proc/loadavg and /proc/cpuinfo",
    ),
    ("memory_usage", "Memory in use from /proc/meminfo"),
    (
        "disk_usage",
        "Usage of each disk filesystem from df, and the fullest",
    ),
    (
        "listening_services",
        "TCP ports listening (/proc/net/tcp, tcp6), and expected ones missing",
    ),
    (
        "network_reachability",
        "A default route, and name resolution of hosts through getent",
    ),
    ("uptime", "Time since boot from /proc/uptime"),
    (
        "accounts_audit",
        "Accounts with uid 0 besides root, and accounts with a login shell",
    ),
    (
        "world_writable",
        "World-writable files under /etc (find, same filesystem)",
    ),
    ("log_usage", "Space used by /var/log (du)"),
    (
        "old_logs",
        "Files under /var/log older than N days; reports only, never deletes",
    ),
    (
        "backup_verification",
        "A backup under /var/backups: exists, age, size and SHA-256",
    ),
    (
        "summarize",
        "The worst status of earlier checks' outputs, with counts",
    ),
    ("machine", "The machine's hostname and kernel"),
];

impl Capability for System {
    fn describe() -> Vec<CapabilityInfo> {
        CAPABILITIES
            .iter()
            .map(|&(name, description)| CapabilityInfo::new(name, description))
            .collect()
    }

    fn invoke(_ctx: &CallContext, capability: &str, input: Value) -> Result<Value, PluginError> {
        // No input at all means "nothing specified", which every capability accepts.
        let input = if input.is_null() {
            Value::Object(Map::new())
        } else {
            input
        };
        // Checked before any command runs, so a bad `failOn` costs nothing.
        let Common { fail_on } = from_input(input.clone())?;
        let finding = match capability {
            "cpu_load" => checks::cpu_load(from_input(input)?)?,
            "memory_usage" => checks::memory_usage(from_input(input)?)?,
            "disk_usage" => checks::disk_usage(from_input(input)?)?,
            "listening_services" => checks::listening_services(from_input(input)?)?,
            "network_reachability" => checks::network_reachability(from_input(input)?)?,
            "uptime" => checks::uptime()?,
            "accounts_audit" => checks::accounts_audit()?,
            "world_writable" => checks::world_writable()?,
            "log_usage" => checks::log_usage(from_input(input)?)?,
            "old_logs" => checks::old_logs(from_input(input)?)?,
            "backup_verification" => checks::backup_verification(from_input(input)?)?,
            "summarize" => checks::summarize(from_input(input)?)?,
            "machine" => checks::machine()?,
            other => return Err(PluginError::unknown_capability(other)),
        };
        finish(capability, finding, fail_on.map(Status::from))
    }
}

autoagent_sdk::export_capability!(System);

/// How bad a finding is; ordered, so the worst of several is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing to report.
    Ok,
    /// Worth a look.
    Warning,
    /// Needs action.
    Critical,
}

impl Status {
    /// `critical` from `crit` up, else `warning` from `warn` up, else `ok`.
    pub fn from_thresholds(value: f64, warn: f64, crit: f64) -> Self {
        if value >= crit {
            Self::Critical
        } else if value >= warn {
            Self::Warning
        } else {
            Self::Ok
        }
    }

    /// The word used in outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// The statuses `failOn` accepts: failing on `ok` would fail every call.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FailOn {
    Warning,
    Critical,
}

impl From<FailOn> for Status {
    fn from(fail_on: FailOn) -> Self {
        match fail_on {
            FailOn::Warning => Self::Warning,
            FailOn::Critical => Self::Critical,
        }
    }
}

/// The input fields every capability takes. Other fields are ignored here
/// and by each capability's own input, so a template may hand every action
/// the same data (a `serverId`, say) without tripping any of them.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Common {
    fail_on: Option<FailOn>,
}

/// What one check found: the status, the one-line summary and the details
/// (a JSON object) that go beside them in the output.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The verdict.
    pub status: Status,
    /// One line for people.
    pub summary: String,
    /// The check's own fields.
    pub details: Map<String, Value>,
}

/// The output of a finding, or, when its status reaches `fail_on`, a
/// `failed` error carrying the summary. A finding that is not `ok` is
/// logged, so an operator sees it without opening the plan.
fn finish(
    capability: &str,
    finding: Finding,
    fail_on: Option<Status>,
) -> Result<Value, PluginError> {
    if finding.status > Status::Ok {
        log::log(
            Level::Warn,
            &finding.summary,
            &[
                ("capability", capability),
                ("status", finding.status.as_str()),
            ],
        );
    }
    if fail_on.is_some_and(|threshold| finding.status >= threshold) {
        return Err(PluginError::failed(finding.summary));
    }
    let mut output = finding.details;
    output.insert("status".into(), Value::from(finding.status.as_str()));
    output.insert("summary".into(), Value::from(finding.summary));
    Ok(Value::Object(output))
}

#[cfg(test)]
mod tests;
