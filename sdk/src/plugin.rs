//! The three plugin kinds and the serde helpers their code uses.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::types::{
    CallContext, CapabilityInfo, HealthReport, Incident, PluginError, RecoveryReport,
};

/// A plugin that gives workers capabilities (`task_creation`, ...).
///
/// Export an implementation with [`export_capability!`](crate::export_capability).
/// The functions take no `self`: the host makes a fresh instance for every
/// call, so there is nothing to keep between calls except key-value state
/// ([`kv`](crate::kv)).
pub trait Capability {
    /// The capabilities this plugin offers.
    fn describe() -> Vec<CapabilityInfo>;

    /// Runs `capability` on `input` and returns its output.
    ///
    /// Answer an unknown `capability` with [`PluginError::unknown_capability`].
    fn invoke(ctx: &CallContext, capability: &str, input: Value) -> Result<Value, PluginError>;
}

/// A plugin that tells whether a service is healthy.
///
/// Export an implementation with [`export_health_check!`](crate::export_health_check).
pub trait HealthCheck {
    /// Checks the service that `target` (the health check's configured target) describes.
    ///
    /// An unreachable service is a report with [`HealthStatus::Unhealthy`](crate::HealthStatus),
    /// not an error: errors are for a check that could not be carried out at
    /// all, such as a malformed `target`.
    fn check(ctx: &CallContext, target: Value) -> Result<HealthReport, PluginError>;
}

/// A plugin that tries to repair a service, one recovery stage at a time.
///
/// Export an implementation with [`export_recovery_strategy!`](crate::export_recovery_strategy).
pub trait RecoveryStrategy {
    /// Runs this strategy against an open incident, for the stage
    /// `incident.stage`, as that stage's `incident.config` asks.
    fn recover(ctx: &CallContext, incident: &Incident) -> Result<RecoveryReport, PluginError>;
}

/// Parses a capability's JSON input into `T`.
///
/// A mismatch becomes [`PluginError::InvalidInput`] naming the offending
/// field, e.g. ``field `assignee`: invalid type: integer `5`, expected a string``,
/// so the caller learns what to fix.
///
/// ```
/// #[derive(Debug, serde::Deserialize)]
/// struct Input {
///     title: String,
/// }
///
/// let input: Input = autoagent_sdk::from_input(serde_json::json!({"title": "write docs"}))?;
/// assert_eq!(input.title, "write docs");
///
/// let err = autoagent_sdk::from_input::<Input>(serde_json::json!({"title": 5})).unwrap_err();
/// assert!(err.message().contains("`title`"), "{err}");
/// # Ok::<(), autoagent_sdk::PluginError>(())
/// ```
pub fn from_input<T: DeserializeOwned>(input: Value) -> Result<T, PluginError> {
    serde_path_to_error::deserialize(input).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        // The root path is ".", which says nothing; serde already names a missing field.
        if path == "." {
            PluginError::InvalidInput(inner.to_string())
        } else {
            PluginError::InvalidInput(format!("field `{path}`: {inner}"))
        }
    })
}

/// Serializes a capability's output.
///
/// Fails with [`PluginError::Failed`] only for values JSON cannot hold, such
/// as a map with non-string keys.
pub fn to_output<T: Serialize + ?Sized>(output: &T) -> Result<Value, PluginError> {
    serde_json::to_value(output)
        .map_err(|err| PluginError::Failed(format!("cannot serialize the output: {err}")))
}
