//! The bundled `service` health-check plugin (team `core`).
//!
//! Target: `{"name": "nginx"}`, a process name of 1 to 64 characters from
//! `A-Z a-z 0-9 _ . @ -`. Healthy when a process with exactly that name runs
//! on the host machine, unhealthy ("no process named …") when none does;
//! the measurement `processes` counts them.
//!
//! It asks through one command grant, `/usr/bin/pgrep -x -- NAME`. The
//! kernel keeps only a process name's first 15 characters, so a longer name
//! is matched on those (as `pgrep` itself would warn); a `.` in the name is
//! escaped, since `pgrep` reads the name as a pattern. `pgrep` exiting 0 is
//! healthy, 1 unhealthy, anything else a failed check.
//!
//! Written only against `autoagent-sdk`, as any outside plugin would be.

use autoagent_sdk::commands::{self, CommandOutput};
use autoagent_sdk::serde_json::Value;
use autoagent_sdk::{CallContext, HealthCheck, HealthReport, PluginError, from_input};
use serde::Deserialize;

/// The plugin; all behaviour lives in its [`HealthCheck`] implementation.
pub struct Service;

/// The program the manifest grants, under its Debian path.
const PGREP: &str = "/usr/bin/pgrep";
/// Characters the kernel keeps of a process name (`TASK_COMM_LEN` - 1).
const COMM_CHARS: usize = 15;

/// What the target asks for.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Target {
    name: String,
}

impl HealthCheck for Service {
    fn check(_ctx: &CallContext, target: Value) -> Result<HealthReport, PluginError> {
        if target.get("name").is_none() {
            return Err(PluginError::invalid_input(
                "no target: set `target.name` (a process name)",
            ));
        }
        let Target { name } = from_input(target)?;
        if !is_process_name(&name) {
            return Err(PluginError::invalid_input(format!(
                "field `name`: {name:?} is not a process name (1 to 64 of A-Z a-z 0-9 _ . @ -)"
            )));
        }
        let pattern = pattern(&name);
        let output = run(&["-x", "--", &pattern])?;
        let processes = output
            .stdout_text()
            .lines()
            .filter(|line| !line.trim().is_empty())
            .count();
        let report = match output.status {
            0 => HealthReport::healthy(format!(
                "{processes} process{} named {name} running",
                if processes == 1 { "" } else { "es" }
            )),
            1 => HealthReport::unhealthy(format!("no process named {name} is running")),
            status => {
                return Err(PluginError::failed(format!(
                    "pgrep exited with {status}: {}",
                    output.stderr_text().trim()
                )));
            }
        };
        Ok(report.with_measurement("processes", processes as f64, "count"))
    }
}

/// 1 to 64 characters of `A-Z a-z 0-9 _ . @ -`.
fn is_process_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b))
}

/// What `pgrep -x` is given: the name as the kernel keeps it, a `.`
/// escaped so it matches only itself.
fn pattern(name: &str) -> String {
    name.chars()
        .take(COMM_CHARS)
        .map(|c| match c {
            '.' => "\\.".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// Runs the granted `pgrep`. The host answers a refusal and a failure to
/// start with one string; a refusal becomes `denied`.
fn run(args: &[&str]) -> Result<CommandOutput, PluginError> {
    commands::run(PGREP, args).map_err(|err| {
        let message = err.message();
        // The real host's wording, then the SDK test host's.
        if message.contains("grants no such command")
            || message.contains("not allowed by the manifest")
        {
            PluginError::denied(message)
        } else {
            PluginError::failed(message)
        }
    })
}

autoagent_sdk::export_health_check!(Service);

#[cfg(test)]
mod tests {
    use autoagent_sdk::serde_json::json;
    use autoagent_sdk::{HealthStatus, testing};

    use super::*;

    /// Answers `pgrep` as the machine would, but only as `plugin.toml`
    /// grants it: the exact program, `-x`, `--`, and a non-empty name.
    fn machine(status: i32, stdout: &'static str) {
        testing::reset();
        testing::on_command(move |program, args| {
            let granted = program == PGREP
                && args.len() == 3
                && args[0] == "-x"
                && args[1] == "--"
                && !args[2].is_empty();
            if !granted {
                return Err(format!(
                    "running {program:?} with {args:?} is denied: plugin.toml grants no such command"
                ));
            }
            Ok(CommandOutput {
                status,
                stdout: stdout.into(),
                stderr: b"pgrep: bad".to_vec(),
            })
        });
    }

    fn check(target: Value) -> Result<HealthReport, PluginError> {
        Service::check(&testing::context(), target)
    }

    #[test]
    fn a_running_process_is_healthy_and_counted() {
        machine(0, "812\n813\n");
        let report = check(json!({"name": "nginx"})).unwrap();
        assert_eq!(report.status, HealthStatus::Healthy);
        assert_eq!(report.message, "2 processes named nginx running");
        assert_eq!(report.measurements[0].value, 2.0);
        assert_eq!(testing::command_calls()[0].args, ["-x", "--", "nginx"]);
    }

    #[test]
    fn an_absent_process_is_unhealthy() {
        machine(1, "");
        let report = check(json!({"name": "nginx"})).unwrap();
        assert_eq!(report.status, HealthStatus::Unhealthy);
        assert_eq!(report.message, "no process named nginx is running");
        assert_eq!(report.measurements[0].value, 0.0);
    }

    #[test]
    fn pgrep_trouble_fails_the_check() {
        machine(2, "");
        let err = check(json!({"name": "nginx"})).unwrap_err();
        assert_eq!(err, PluginError::failed("pgrep exited with 2: pgrep: bad"));
    }

    #[test]
    fn names_are_escaped_and_cut_as_the_kernel_keeps_them() {
        machine(0, "1\n");
        check(json!({"name": "php-fpm8.2"})).unwrap();
        check(json!({"name": "systemd-journald-extra"})).unwrap();
        let calls = testing::command_calls();
        assert_eq!(calls[0].args[2], "php-fpm8\\.2");
        assert_eq!(calls[1].args[2], "systemd-journal");
    }

    #[test]
    fn a_bad_or_missing_name_is_invalid_input_and_runs_nothing() {
        machine(0, "");
        for target in [json!(null), json!({})] {
            assert_eq!(
                check(target).unwrap_err(),
                PluginError::invalid_input("no target: set `target.name` (a process name)")
            );
        }
        for name in ["", "a b", "x;rm", "../x", "ü", "a\nb", &"a".repeat(65)] {
            let err = check(json!({"name": name})).unwrap_err();
            assert!(
                matches!(&err, PluginError::InvalidInput(m) if m.contains("`name`")),
                "{name}: {err}"
            );
        }
        assert!(testing::command_calls().is_empty());
    }

    #[test]
    fn a_host_that_grants_no_pgrep_is_denied() {
        testing::reset();
        let err = check(json!({"name": "nginx"})).unwrap_err();
        assert!(matches!(err, PluginError::Denied(_)), "{err}");
    }
}
