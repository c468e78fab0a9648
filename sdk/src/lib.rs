//! Write AutoAgent plugins in Rust.
//!
//! An AutoAgent plugin is a WebAssembly component built for `wasm32-wasip2`
//! that implements one of three kinds, each a world in `wit/autoagent.wit`:
//!
//! | kind | trait | export macro |
//! | --- | --- | --- |
//! | capability | [`Capability`] | [`export_capability!`] |
//! | health check | [`HealthCheck`] | [`export_health_check!`] |
//! | recovery strategy | [`RecoveryStrategy`] | [`export_recovery_strategy!`] |
//!
//! A plugin implements the trait on a type of its own and names that type in
//! the export macro. Plugin code works with the plain Rust types of this crate
//! ([`CallContext`], [`PluginError`], [`serde_json::Value`], ...); the macro
//! generates the WebAssembly glue. What a plugin may ask of the host goes
//! through [`log`], [`kv`], [`config`] and [`commands`], each granted by the
//! plugin's manifest.
//!
//! Compiled for any target other than `wasm32`, those modules talk to the
//! in-memory host in [`testing`] instead, and the export macros only check the
//! trait is implemented; so a plugin's logic is unit-tested with plain
//! `cargo test`.
//!
//! ```
//! use autoagent_sdk::serde_json::{Value, json};
//! use autoagent_sdk::{CallContext, Capability, CapabilityInfo, PluginError, kv, log};
//!
//! struct Counter;
//!
//! impl Capability for Counter {
//!     fn describe() -> Vec<CapabilityInfo> {
//!         vec![CapabilityInfo::new("count", "Counts how often it was called")]
//!     }
//!
//!     fn invoke(_ctx: &CallContext, capability: &str, _input: Value) -> Result<Value, PluginError> {
//!         match capability {
//!             "count" => {
//!                 let n = kv::get_json::<u64>("n")?.unwrap_or(0) + 1;
//!                 kv::set_json("n", &n)?;
//!                 log::info(format!("called {n} times"));
//!                 Ok(json!({ "count": n }))
//!             }
//!             other => Err(PluginError::unknown_capability(other)),
//!         }
//!     }
//! }
//!
//! autoagent_sdk::export_capability!(Counter);
//!
//! // A native unit test of the logic:
//! autoagent_sdk::testing::reset();
//! let ctx = autoagent_sdk::testing::context();
//! Counter::invoke(&ctx, "count", Value::Null).unwrap();
//! assert_eq!(Counter::invoke(&ctx, "count", Value::Null).unwrap(), json!({ "count": 2 }));
//! ```
//!
//! The crate's dependency must keep the name `autoagent_sdk` (no `package =`
//! renaming): the generated glue refers to it by that name.

#![deny(missing_docs)]

// `__autoagent_generate!`: `wit_bindgen::generate!` with the WIT inlined (see
// build.rs). Included first so that `wasm_host` can name it: a macro produced
// by `include!` is reachable inside this crate only by textual scope.
include!(concat!(env!("OUT_DIR"), "/wit_macro.rs"));

pub mod commands;
pub mod config;
pub mod http;
pub mod kv;
pub mod log;
mod plugin;
mod types;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
#[cfg(not(target_arch = "wasm32"))]
use testing as backend;

#[cfg(target_arch = "wasm32")]
mod wasm_host;
#[cfg(target_arch = "wasm32")]
use wasm_host as backend;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use plugin::{Capability, HealthCheck, RecoveryStrategy, from_input, to_output};
pub use types::{
    CallContext, CapabilityInfo, HealthReport, HealthStatus, Incident, Measurement, PluginError,
    RecoveryOutcome, RecoveryReport,
};

/// The bindings generator the export macros use, re-exported so that plugins
/// need not depend on it (and cannot pick a version that disagrees).
pub use wit_bindgen;

/// JSON values, re-exported so that plugins use the version the SDK speaks.
pub use serde_json;

/// Glue shared by the export macros: generates `world` in the calling crate
/// and converts the types every world uses. Expands inside the hidden module.
#[doc(hidden)]
#[macro_export]
macro_rules! __autoagent_export_common {
    ($world:literal) => {
        // The imports are already generated in the SDK; `with` reuses those
        // bindings instead of generating a second copy here. The keys carry
        // the WIT package version (build.rs checks it is still 0.1.0).
        $crate::__autoagent_generate!({
            world: $world,
            runtime_path: "::autoagent_sdk::wit_bindgen::rt",
            with: {
                "autoagent:plugin/log@0.1.0": ::autoagent_sdk::__private::bindings::autoagent::plugin::log,
                "autoagent:plugin/kv@0.1.0": ::autoagent_sdk::__private::bindings::autoagent::plugin::kv,
                "autoagent:plugin/config@0.1.0": ::autoagent_sdk::__private::bindings::autoagent::plugin::config,
                "autoagent:plugin/commands@0.1.0": ::autoagent_sdk::__private::bindings::autoagent::plugin::commands,
            },
        });

        fn __context(ctx: self::autoagent::plugin::types::CallContext) -> $crate::CallContext {
            $crate::CallContext {
                team: ctx.team,
                plugin: ctx.plugin,
                call_id: ctx.call_id,
                worker_id: ctx.worker_id,
                subject_id: ctx.subject_id,
            }
        }

        fn __error(err: $crate::PluginError) -> self::autoagent::plugin::types::PluginError {
            use self::autoagent::plugin::types::PluginError as Wit;
            match err {
                $crate::PluginError::InvalidInput(m) => Wit::InvalidInput(m),
                $crate::PluginError::Unsupported(m) => Wit::Unsupported(m),
                $crate::PluginError::Failed(m) => Wit::Failed(m),
                $crate::PluginError::Denied(m) => Wit::Denied(m),
            }
        }
    };
}

/// Exports a [`Capability`] implementation as the plugin's `capability` world.
///
/// # Requirements
///
/// - Called once, at module level, in a crate with `crate-type = ["cdylib"]`
///   (add `"rlib"` too to unit-test it natively).
/// - The argument is a type implementing [`Capability`]; it need not be `pub`.
/// - The crate depends on this SDK under its own name, `autoagent_sdk`.
///
/// # Example
///
/// ```
/// use autoagent_sdk::serde_json::Value;
/// use autoagent_sdk::{CallContext, Capability, CapabilityInfo, PluginError};
///
/// struct Echo;
///
/// impl Capability for Echo {
///     fn describe() -> Vec<CapabilityInfo> {
///         vec![CapabilityInfo::new("echo", "Returns its input")]
///     }
///
///     fn invoke(_ctx: &CallContext, capability: &str, input: Value) -> Result<Value, PluginError> {
///         match capability {
///             "echo" => Ok(input),
///             other => Err(PluginError::unknown_capability(other)),
///         }
///     }
/// }
///
/// autoagent_sdk::export_capability!(Echo);
/// ```
///
/// # Generated code
///
/// A compile-time check that the type implements [`Capability`], and, when
/// compiling for `wasm32`, a hidden module `__autoagent_capability_export`
/// holding `wit_bindgen::generate!` for the `capability` world and a glue
/// type implementing the generated `Guest` trait: it turns the WIT call
/// context into a [`CallContext`], parses the input JSON text (invalid JSON
/// becomes [`PluginError::InvalidInput`] without calling the plugin), calls
/// the trait and turns the output [`Value`](serde_json::Value) back into text.
#[macro_export]
macro_rules! export_capability {
    ($plugin:ty) => {
        #[doc(hidden)]
        type __AutoagentCapability = $plugin;

        const _: () = $crate::__private::assert_capability::<__AutoagentCapability>();

        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        // Generated code: the author's lint settings are not meant for it.
        #[allow(
            clippy::all,
            clippy::pedantic,
            clippy::nursery,
            clippy::restriction,
            unsafe_code,
            unused_qualifications,
            unreachable_pub,
            missing_docs
        )]
        mod __autoagent_capability_export {
            $crate::__autoagent_export_common!("capability");

            struct Glue;

            impl Guest for Glue {
                fn describe() -> ::std::vec::Vec<self::autoagent::plugin::types::CapabilityInfo> {
                    <super::__AutoagentCapability as $crate::Capability>::describe()
                        .into_iter()
                        .map(|info| self::autoagent::plugin::types::CapabilityInfo {
                            name: info.name,
                            description: info.description,
                        })
                        .collect()
                }

                fn invoke(
                    ctx: self::autoagent::plugin::types::CallContext,
                    capability: ::std::string::String,
                    input: ::std::string::String,
                ) -> ::std::result::Result<
                    ::std::string::String,
                    self::autoagent::plugin::types::PluginError,
                > {
                    $crate::__private::invoke::<super::__AutoagentCapability>(
                        &__context(ctx),
                        &capability,
                        &input,
                    )
                    .map_err(__error)
                }
            }

            export!(Glue);
        }
    };
}

/// Exports a [`HealthCheck`] implementation as the plugin's `health-check` world.
///
/// # Requirements
///
/// As for [`export_capability!`], with a type implementing [`HealthCheck`].
///
/// # Example
///
/// ```
/// use autoagent_sdk::serde_json::Value;
/// use autoagent_sdk::{CallContext, HealthCheck, HealthReport, PluginError};
///
/// struct AlwaysFine;
///
/// impl HealthCheck for AlwaysFine {
///     fn check(_ctx: &CallContext, _target: Value) -> Result<HealthReport, PluginError> {
///         Ok(HealthReport::healthy("fine").with_measurement("latency", 0.0, "ms"))
///     }
/// }
///
/// autoagent_sdk::export_health_check!(AlwaysFine);
/// ```
///
/// # Generated code
///
/// As for [`export_capability!`], for the `health-check` world, in a hidden
/// module `__autoagent_health_check_export`; the target's JSON text is parsed
/// into a [`Value`](serde_json::Value) (invalid JSON becomes
/// [`PluginError::InvalidInput`]) and the [`HealthReport`] is converted back.
#[macro_export]
macro_rules! export_health_check {
    ($plugin:ty) => {
        #[doc(hidden)]
        type __AutoagentHealthCheck = $plugin;

        const _: () = $crate::__private::assert_health_check::<__AutoagentHealthCheck>();

        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        // Generated code: the author's lint settings are not meant for it.
        #[allow(
            clippy::all,
            clippy::pedantic,
            clippy::nursery,
            clippy::restriction,
            unsafe_code,
            unused_qualifications,
            unreachable_pub,
            missing_docs
        )]
        mod __autoagent_health_check_export {
            $crate::__autoagent_export_common!("health-check");

            struct Glue;

            impl Guest for Glue {
                fn check(
                    ctx: self::autoagent::plugin::types::CallContext,
                    target: ::std::string::String,
                ) -> ::std::result::Result<
                    self::autoagent::plugin::types::HealthReport,
                    self::autoagent::plugin::types::PluginError,
                > {
                    use self::autoagent::plugin::types as wit;
                    let report = $crate::__private::check::<super::__AutoagentHealthCheck>(
                        &__context(ctx),
                        &target,
                    )
                    .map_err(__error)?;
                    ::std::result::Result::Ok(wit::HealthReport {
                        status: match report.status {
                            $crate::HealthStatus::Healthy => wit::HealthStatus::Healthy,
                            $crate::HealthStatus::Degraded => wit::HealthStatus::Degraded,
                            $crate::HealthStatus::Unhealthy => wit::HealthStatus::Unhealthy,
                        },
                        message: report.message,
                        measurements: report
                            .measurements
                            .into_iter()
                            .map(|m| wit::Measurement {
                                name: m.name,
                                value: m.value,
                                unit: m.unit,
                            })
                            .collect(),
                    })
                }
            }

            export!(Glue);
        }
    };
}

/// Exports a [`RecoveryStrategy`] implementation as the plugin's `recovery-strategy` world.
///
/// # Requirements
///
/// As for [`export_capability!`], with a type implementing [`RecoveryStrategy`].
///
/// # Example
///
/// ```
/// use autoagent_sdk::{CallContext, Incident, PluginError, RecoveryReport, RecoveryStrategy, commands};
///
/// struct Restart;
///
/// impl RecoveryStrategy for Restart {
///     fn recover(_ctx: &CallContext, incident: &Incident) -> Result<RecoveryReport, PluginError> {
///         let Some(service) = incident.target["service"].as_str() else {
///             return Err(PluginError::invalid_input("target has no `service`"));
///         };
///         let out = commands::run("systemctl", &["restart", service])?;
///         Ok(if out.success() {
///             RecoveryReport::recovered(format!("restarted {service}"))
///         } else {
///             RecoveryReport::not_recovered(out.stderr_text())
///         })
///     }
/// }
///
/// autoagent_sdk::export_recovery_strategy!(Restart);
/// ```
///
/// # Generated code
///
/// As for [`export_capability!`], for the `recovery-strategy` world, in a
/// hidden module `__autoagent_recovery_strategy_export`; the WIT incident
/// becomes an [`Incident`] with its target and stage config parsed (invalid JSON becomes
/// [`PluginError::InvalidInput`]) and the [`RecoveryReport`] is converted back.
#[macro_export]
macro_rules! export_recovery_strategy {
    ($plugin:ty) => {
        #[doc(hidden)]
        type __AutoagentRecoveryStrategy = $plugin;

        const _: () = $crate::__private::assert_recovery_strategy::<__AutoagentRecoveryStrategy>();

        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        // Generated code: the author's lint settings are not meant for it.
        #[allow(
            clippy::all,
            clippy::pedantic,
            clippy::nursery,
            clippy::restriction,
            unsafe_code,
            unused_qualifications,
            unreachable_pub,
            missing_docs
        )]
        mod __autoagent_recovery_strategy_export {
            $crate::__autoagent_export_common!("recovery-strategy");

            struct Glue;

            impl Guest for Glue {
                fn recover(
                    ctx: self::autoagent::plugin::types::CallContext,
                    incident: self::autoagent::plugin::types::Incident,
                ) -> ::std::result::Result<
                    self::autoagent::plugin::types::RecoveryReport,
                    self::autoagent::plugin::types::PluginError,
                > {
                    use self::autoagent::plugin::types as wit;
                    let report = $crate::__private::recover::<super::__AutoagentRecoveryStrategy>(
                        &__context(ctx),
                        $crate::__private::IncidentText {
                            id: incident.id,
                            check_id: incident.check_id,
                            severity: incident.severity,
                            stage: incident.stage,
                            summary: incident.summary,
                            target: incident.target,
                            config: incident.config,
                        },
                    )
                    .map_err(__error)?;
                    ::std::result::Result::Ok(wit::RecoveryReport {
                        outcome: match report.outcome {
                            $crate::RecoveryOutcome::Recovered => wit::RecoveryOutcome::Recovered,
                            $crate::RecoveryOutcome::NotRecovered => {
                                wit::RecoveryOutcome::NotRecovered
                            }
                            $crate::RecoveryOutcome::Escalate => wit::RecoveryOutcome::Escalate,
                        },
                        notes: report.notes,
                    })
                }
            }

            export!(Glue);
        }
    };
}

#[cfg(test)]
mod tests;

/// Compiles the examples in `README.md` as doctests, so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
