//! The real host: calls the `host-imports` world's imports.
//!
//! Only the import-only world is generated here. The export worlds are
//! generated in the plugin's crate by the export macros, because wit-component
//! merges every component-type section linked into a module: an export world
//! generated in the SDK would demand its exports from every plugin.

use crate::commands::CommandOutput;
use crate::kv::KvError;
use crate::log::Level;

/// Bindings for the imports; the export macros point their `with` option here
/// so that a plugin does not generate the import glue a second time.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    reason = "generated code; the WIT carries the documentation"
)]
pub mod bindings {
    __autoagent_generate!({
        world: "host-imports",
        runtime_path: "crate::wit_bindgen::rt",
    });
}

use bindings::autoagent::plugin as wit;

pub(crate) fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let level = match level {
        Level::Trace => wit::log::Level::Trace,
        Level::Debug => wit::log::Level::Debug,
        Level::Info => wit::log::Level::Info,
        Level::Warn => wit::log::Level::Warn,
        Level::Error => wit::log::Level::Error,
    };
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    wit::log::log(level, message, &fields);
}

fn kv_error(err: wit::kv::KvError) -> KvError {
    match err {
        wit::kv::KvError::Denied(m) => KvError::Denied(m),
        wit::kv::KvError::QuotaExceeded(m) => KvError::QuotaExceeded(m),
        wit::kv::KvError::Storage(m) => KvError::Storage(m),
    }
}

pub(crate) fn kv_get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    wit::kv::get(key).map_err(kv_error)
}

pub(crate) fn kv_set(key: &str, value: &[u8]) -> Result<(), KvError> {
    wit::kv::set(key, value).map_err(kv_error)
}

pub(crate) fn kv_delete(key: &str) -> Result<(), KvError> {
    wit::kv::delete(key).map_err(kv_error)
}

pub(crate) fn kv_list_keys(prefix: &str) -> Result<Vec<String>, KvError> {
    wit::kv::list_keys(prefix).map_err(kv_error)
}

pub(crate) fn config_get(key: &str) -> Result<Option<String>, String> {
    wit::config::get(key)
}

pub(crate) fn commands_run(program: &str, args: &[&str]) -> Result<CommandOutput, String> {
    let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
    wit::commands::run(program, &args).map(|out| CommandOutput {
        status: out.status,
        stdout: out.stdout,
        stderr: out.stderr,
    })
}
