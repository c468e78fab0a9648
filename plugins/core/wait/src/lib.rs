//! The bundled `wait` recovery-strategy plugin (team `core`).
//!
//! A stage that does nothing: it reports `recovered` with the notes
//! "waited; the host re-checks". It is for services that heal themselves
//! (a restart loop, a cache warming up): the host waits between a stage and
//! its re-check, and only moves on to the next stage if the re-check still
//! fails. The plugin itself never sleeps, and reads no stage config
//! (`{}`).
//!
//! Written only against `autoagent-sdk`, as any outside plugin would be.

use autoagent_sdk::{CallContext, Incident, PluginError, RecoveryReport, RecoveryStrategy};

/// The plugin; all behaviour lives in its [`RecoveryStrategy`] implementation.
pub struct Wait;

/// The notes of every stage it runs.
pub const NOTES: &str = "waited; the host re-checks";

impl RecoveryStrategy for Wait {
    fn recover(_ctx: &CallContext, _incident: &Incident) -> Result<RecoveryReport, PluginError> {
        Ok(RecoveryReport::recovered(NOTES))
    }
}

autoagent_sdk::export_recovery_strategy!(Wait);

#[cfg(test)]
mod tests {
    use autoagent_sdk::serde_json::json;
    use autoagent_sdk::{RecoveryOutcome, testing};

    use super::*;

    #[test]
    fn every_stage_is_recovered_and_the_host_re_checks() {
        testing::reset();
        let incident = Incident {
            id: "incident_1".into(),
            check_id: "web".into(),
            severity: "low".into(),
            stage: 2,
            summary: "down".into(),
            target: json!({}),
            config: json!({}),
        };
        let report = Wait::recover(&testing::context(), &incident).unwrap();
        assert_eq!(report.outcome, RecoveryOutcome::Recovered);
        assert_eq!(report.notes, "waited; the host re-checks");
        assert!(testing::command_calls().is_empty() && testing::http_requests().is_empty());
    }
}
