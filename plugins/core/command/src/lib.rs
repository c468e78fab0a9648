//! The bundled `command` recovery-strategy plugin (team `core`).
//!
//! Stage config: `{"program": "/usr/bin/systemctl", "args": ["restart",
//! "nginx"]}`. It runs that program through the `commands` import and
//! reports `recovered` when it exits 0 (notes: the command, its exit status
//! and the last line it printed), `not-recovered` otherwise (notes: the exit
//! status, or that it was killed at its time limit, and the end of its
//! stderr). A command the manifest does not grant is a `denied` error; one
//! that cannot start is `failed`.
//!
//! Its own manifest grants no command, so `core/command` by itself can run
//! nothing. A team uses it through a plugin folder (or upload) of its own
//! whose `plugin.toml` says `component = "core/command"` and grants exactly
//! the programs and arguments its stages may run.
//!
//! Written only against `autoagent-sdk`, as any outside plugin would be.

use autoagent_sdk::commands::{self, CommandOutput};
use autoagent_sdk::{
    CallContext, Incident, PluginError, RecoveryReport, RecoveryStrategy, from_input, log,
};
use serde::Deserialize;

/// The plugin; all behaviour lives in its [`RecoveryStrategy`] implementation.
pub struct Command;

/// Most characters of output quoted in the notes.
const TAIL_CHARS: usize = 400;

/// What a stage asks for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    program: String,
    #[serde(default)]
    args: Vec<String>,
}

impl RecoveryStrategy for Command {
    fn recover(_ctx: &CallContext, incident: &Incident) -> Result<RecoveryReport, PluginError> {
        if incident.config.get("program").is_none() {
            return Err(PluginError::invalid_input(
                "no program: set the stage's `config.program` (an absolute path) and `config.args`",
            ));
        }
        let config: Config = from_input(incident.config.clone())?;
        if !config.program.starts_with('/') {
            return Err(PluginError::invalid_input(format!(
                "field `program`: {:?} is not an absolute path",
                config.program
            )));
        }
        let line = command_line(&config.program, &config.args);
        log::info(format!(
            "incident {} stage {}: running {line}",
            incident.id, incident.stage
        ));
        let args: Vec<&str> = config.args.iter().map(String::as_str).collect();
        let output = run(&config.program, &args)?;
        Ok(report(&line, &output))
    }
}

/// `recovered` for exit 0, `not-recovered` otherwise, with what it printed.
fn report(line: &str, output: &CommandOutput) -> RecoveryReport {
    match output.status {
        0 => {
            let stdout = output.stdout_text();
            let last = stdout.lines().rev().map(str::trim).find(|l| !l.is_empty());
            RecoveryReport::recovered(match last {
                Some(last) => format!("ran {line}: exit status 0; last output: {}", clip(last)),
                None => format!("ran {line}: exit status 0"),
            })
        }
        -1 => RecoveryReport::not_recovered(format!(
            "{line} was killed at its time limit{}",
            tail(output)
        )),
        status => RecoveryReport::not_recovered(format!(
            "{line} exited with status {status}{}",
            tail(output)
        )),
    }
}

/// The end of stderr (or of stdout when stderr is empty), for the notes.
fn tail(output: &CommandOutput) -> String {
    let stderr = output.stderr_text();
    let stdout = output.stdout_text();
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let count = text.chars().count();
    let start = text
        .char_indices()
        .nth(count.saturating_sub(TAIL_CHARS))
        .map_or(0, |(i, _)| i);
    let ellipsis = if start > 0 { "…" } else { "" };
    format!(": {ellipsis}{}", &text[start..])
}

/// A line cut to [`TAIL_CHARS`].
fn clip(text: &str) -> String {
    let mut clipped: String = text.chars().take(TAIL_CHARS).collect();
    if text.chars().count() > TAIL_CHARS {
        clipped.push('…');
    }
    clipped
}

/// `program args...` as one would type it, for the notes.
fn command_line(program: &str, args: &[String]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(|word| {
            if word.is_empty() || word.contains(char::is_whitespace) {
                format!("{word:?}")
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a program. The host answers a refusal and a failure to start with
/// one string; a refusal becomes `denied`, so the host (and an operator)
/// can tell "not allowed" from "broken".
fn run(program: &str, args: &[&str]) -> Result<CommandOutput, PluginError> {
    commands::run(program, args).map_err(|err| {
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

autoagent_sdk::export_recovery_strategy!(Command);

#[cfg(test)]
mod tests {
    use autoagent_sdk::serde_json::{Value, json};
    use autoagent_sdk::{RecoveryOutcome, testing};

    use super::*;

    fn incident(config: Value) -> Incident {
        Incident {
            id: "incident_1".into(),
            check_id: "web".into(),
            severity: "high".into(),
            stage: 0,
            summary: "down".into(),
            target: json!({"url": "http://web/"}),
            config,
        }
    }

    fn recover(config: Value) -> Result<RecoveryReport, PluginError> {
        Command::recover(&testing::context(), &incident(config))
    }

    fn machine(status: i32, stdout: &'static str, stderr: &'static str) {
        testing::reset();
        testing::on_command(move |_, _| {
            Ok(CommandOutput {
                status,
                stdout: stdout.into(),
                stderr: stderr.into(),
            })
        });
    }

    #[test]
    fn exit_0_is_recovered_with_the_last_line() {
        machine(0, "stopping\nstarted nginx\n\n", "");
        let report =
            recover(json!({"program": "/usr/bin/systemctl", "args": ["restart", "nginx"]}))
                .unwrap();
        assert_eq!(report.outcome, RecoveryOutcome::Recovered);
        assert_eq!(
            report.notes,
            "ran /usr/bin/systemctl restart nginx: exit status 0; last output: started nginx"
        );
        let call = &testing::command_calls()[0];
        assert_eq!(
            (call.program.as_str(), call.args.as_slice()),
            (
                "/usr/bin/systemctl",
                &["restart".to_owned(), "nginx".to_owned()][..]
            )
        );
        machine(0, "", "");
        let report = recover(json!({"program": "/bin/true"})).unwrap();
        assert_eq!(report.notes, "ran /bin/true: exit status 0");
    }

    #[test]
    fn another_status_is_not_recovered_with_the_end_of_stderr() {
        machine(3, "", "Job for nginx.service failed.\n");
        let report =
            recover(json!({"program": "/usr/bin/systemctl", "args": ["restart", "nginx"]}))
                .unwrap();
        assert_eq!(report.outcome, RecoveryOutcome::NotRecovered);
        assert_eq!(
            report.notes,
            "/usr/bin/systemctl restart nginx exited with status 3: Job for nginx.service failed."
        );
        let long = "x".repeat(1000);
        let leaked: &'static str = Box::leak(format!("{long}END").into_boxed_str());
        machine(1, "", leaked);
        let notes = recover(json!({"program": "/bin/false"})).unwrap().notes;
        assert!(
            notes.ends_with("xxxEND") && notes.contains('…') && notes.len() < 500,
            "{notes}"
        );
        machine(-1, "", "");
        let report = recover(json!({"program": "/bin/sleep", "args": ["60"]})).unwrap();
        assert_eq!(report.notes, "/bin/sleep 60 was killed at its time limit");
    }

    #[test]
    fn a_program_the_manifest_does_not_grant_is_denied() {
        testing::reset();
        let err = recover(json!({"program": "/usr/bin/systemctl", "args": ["restart", "nginx"]}))
            .unwrap_err();
        assert!(matches!(err, PluginError::Denied(_)), "{err}");
        testing::on_command(|_, _| Err("cannot start \"/x\": No such file or directory".into()));
        let err = recover(json!({"program": "/x"})).unwrap_err();
        assert!(matches!(err, PluginError::Failed(_)), "{err}");
    }

    #[test]
    fn a_stage_without_a_program_is_invalid_input() {
        testing::reset();
        for config in [json!({}), json!(null)] {
            let err = recover(config).unwrap_err();
            assert!(
                matches!(&err, PluginError::InvalidInput(m) if m.starts_with("no program")),
                "{err}"
            );
        }
        for (config, field) in [
            (json!({"program": "systemctl"}), "program"),
            (json!({"program": "/bin/x", "args": "restart"}), "args"),
            (json!({"program": "/bin/x", "args": [1]}), "args"),
            (json!({"program": "/bin/x", "shell": true}), "shell"),
        ] {
            let err = recover(config).unwrap_err();
            assert!(
                matches!(&err, PluginError::InvalidInput(m) if m.contains(field)),
                "{field}: {err}"
            );
        }
        assert!(testing::command_calls().is_empty());
    }
}
