//! Support for the code the export macros expand to in a plugin's crate.
//!
//! Not part of the public API: it may change in any release. What can live
//! here instead of in the macros does, so it is written and tested once.

use serde_json::Value;

use crate::plugin::{Capability, HealthCheck, RecoveryStrategy};
use crate::types::{CallContext, HealthReport, Incident, PluginError, RecoveryReport};

#[cfg(target_arch = "wasm32")]
pub use crate::wasm_host::bindings;

/// Compiles only if `T` implements [`Capability`]; gives a clear error at the macro call.
pub const fn assert_capability<T: Capability>() {}

/// Compiles only if `T` implements [`HealthCheck`].
pub const fn assert_health_check<T: HealthCheck>() {}

/// Compiles only if `T` implements [`RecoveryStrategy`].
pub const fn assert_recovery_strategy<T: RecoveryStrategy>() {}

/// Parses JSON text that the host sent. Blank text counts as `null`, so a
/// host that has nothing to send may send nothing.
pub fn parse_json(text: &str, what: &str) -> Result<Value, PluginError> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text)
        .map_err(|err| PluginError::InvalidInput(format!("{what} is not valid JSON: {err}")))
}

/// The `invoke` export: JSON text in, JSON text out.
pub fn invoke<C: Capability>(
    ctx: &CallContext,
    capability: &str,
    input: &str,
) -> Result<String, PluginError> {
    let input = parse_json(input, "input")?;
    let output = C::invoke(ctx, capability, input)?;
    Ok(output.to_string())
}

/// The `check` export.
pub fn check<H: HealthCheck>(ctx: &CallContext, target: &str) -> Result<HealthReport, PluginError> {
    let target = parse_json(target, "target")?;
    H::check(ctx, target)
}

/// The WIT incident's fields as the export glue hands them over, with the
/// target and stage configuration still JSON text.
pub struct IncidentText {
    /// Incident id.
    pub id: String,
    /// Health check id.
    pub check_id: String,
    /// Severity.
    pub severity: String,
    /// Stage index.
    pub stage: u32,
    /// Last failed check's message.
    pub summary: String,
    /// The check's target, JSON text.
    pub target: String,
    /// The stage's configuration, JSON text.
    pub config: String,
}

/// The `recover` export, taking the WIT incident's fields.
pub fn recover<R: RecoveryStrategy>(
    ctx: &CallContext,
    incident: IncidentText,
) -> Result<RecoveryReport, PluginError> {
    let incident = Incident {
        id: incident.id,
        check_id: incident.check_id,
        severity: incident.severity,
        stage: incident.stage,
        summary: incident.summary,
        target: parse_json(&incident.target, "incident target")?,
        config: parse_json(&incident.config, "incident config")?,
    };
    R::recover(ctx, &incident)
}
