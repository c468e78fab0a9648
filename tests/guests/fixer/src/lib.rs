//! `guest-fixer`: a recovery-strategy plugin for the host's tests. The
//! incident's target says what the stage does (`{"do": "recover" |
//! "not_recovered" | "escalate" | "fail" | "spin"}`), so each path through the
//! host's call of `recover` can be tried.

use std::hint::black_box;

use autoagent_sdk::{CallContext, Incident, PluginError, RecoveryReport, RecoveryStrategy};

/// The plugin; all behaviour lives in its [`RecoveryStrategy`] implementation.
pub struct Fixer;

impl RecoveryStrategy for Fixer {
    fn recover(ctx: &CallContext, incident: &Incident) -> Result<RecoveryReport, PluginError> {
        let notes = format!("{} stage {}", incident.id, incident.stage);
        match incident.target["do"].as_str() {
            Some("context") => Ok(RecoveryReport::recovered(format!(
                "{} {} {} {:?} {:?}",
                ctx.team, ctx.plugin, ctx.call_id, ctx.worker_id, ctx.subject_id
            ))),
            Some("recover") => Ok(RecoveryReport::recovered(notes)),
            Some("not_recovered") => Ok(RecoveryReport::not_recovered(notes)),
            Some("escalate") => Ok(RecoveryReport::escalate(notes)),
            Some("fail") => Err(PluginError::failed("the restart command failed")),
            Some("spin") => spin(),
            _ => Err(PluginError::invalid_input("incident target needs `do`")),
        }
    }
}

fn spin() -> ! {
    let mut turns = 0u64;
    loop {
        turns = black_box(turns.wrapping_add(1));
    }
}

autoagent_sdk::export_recovery_strategy!(Fixer);
