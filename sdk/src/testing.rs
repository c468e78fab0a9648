//! An in-memory host for unit-testing plugin logic natively.
//!
//! On every target other than `wasm32` the SDK's host wrappers ([`log`](crate::log),
//! [`kv`](crate::kv), [`config`](crate::config), [`commands`](crate::commands)
//! and [`http`](crate::http)) talk to this test host instead of the real one,
//! so plain `cargo test` runs a plugin's code without wasm or a running host.
//!
//! The state is thread-local. `cargo test` runs each test on its own thread,
//! but call [`reset`] at the start of a test anyway: it also restores the
//! defaults if another test on the same thread changed them.
//!
//! Defaults differ from the real host on purpose, to keep tests short:
//! key-value state is granted with no quota, no config key is granted, and
//! every command and HTTP request is refused until [`on_command`] or
//! [`on_http`] installs a handler.
//!
//! ```
//! use autoagent_sdk::{kv, log, testing};
//!
//! testing::reset();
//! kv::set_json("counter", &1).unwrap();
//! log::info("counted");
//! assert_eq!(kv::get_json::<u32>("counter").unwrap(), Some(1));
//! assert_eq!(testing::logs()[0].message, "counted");
//!
//! testing::set_kv_quota(Some(8));
//! assert!(matches!(kv::set("big", b"0123456789"), Err(kv::KvError::QuotaExceeded(_))));
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::CallContext;
use crate::commands::CommandOutput;
use crate::http::{HttpError, Request, Response};
use crate::kv::KvError;
use crate::log::Level;

/// One line a plugin logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Severity.
    pub level: Level,
    /// The message.
    pub message: String,
    /// Key-value fields, in the order given.
    pub fields: Vec<(String, String)>,
}

impl LogLine {
    /// The value of field `key`, if the line has it.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One program a plugin asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandCall {
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
}

type CommandHandler = Box<dyn FnMut(&str, &[String]) -> Result<CommandOutput, String>>;

type HttpHandler = Box<dyn FnMut(&Request) -> Result<Response, HttpError>>;

#[derive(Default)]
struct TestHost {
    kv: BTreeMap<String, Vec<u8>>,
    kv_quota: Option<usize>,
    kv_failure: Option<KvError>,
    config: BTreeMap<String, Option<String>>,
    logs: Vec<LogLine>,
    commands: Vec<CommandCall>,
    command_handler: Option<CommandHandler>,
    http_requests: Vec<Request>,
    http_handler: Option<HttpHandler>,
}

impl TestHost {
    fn kv_used_bytes(&self) -> usize {
        self.kv.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    fn kv_check(&self) -> Result<(), KvError> {
        match &self.kv_failure {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }
}

thread_local! {
    static HOST: RefCell<TestHost> = RefCell::new(TestHost::default());
}

fn with_host<R>(f: impl FnOnce(&mut TestHost) -> R) -> R {
    HOST.with(|host| f(&mut host.borrow_mut()))
}

/// Forgets all state and restores the defaults.
pub fn reset() {
    with_host(|host| *host = TestHost::default());
}

/// A call context for tests: team `test`, plugin `test`, call id `call_test`.
pub fn context() -> CallContext {
    CallContext::new("test", "test", "call_test")
}

/// Limits the key-value state to `bytes` (keys plus values); `None` lifts the limit.
pub fn set_kv_quota(bytes: Option<usize>) {
    with_host(|host| host.kv_quota = bytes);
}

/// Makes every key-value call fail as if the manifest did not grant key-value state.
pub fn deny_kv() {
    fail_kv(Some(KvError::Denied(
        "the manifest does not grant key-value state (kv-quota-bytes)".to_owned(),
    )));
}

/// Makes every key-value call fail with `error` (e.g. [`KvError::Storage`]);
/// `None` makes them work again.
pub fn fail_kv(error: Option<KvError>) {
    with_host(|host| host.kv_failure = error);
}

/// Everything in the key-value state.
pub fn kv_entries() -> BTreeMap<String, Vec<u8>> {
    with_host(|host| host.kv.clone())
}

/// Bytes the key-value state uses, counted as the quota counts them.
pub fn kv_used_bytes() -> usize {
    with_host(|host| host.kv_used_bytes())
}

/// Grants config key `key` with `value`.
pub fn set_config(key: impl Into<String>, value: impl Into<String>) {
    with_host(|host| host.config.insert(key.into(), Some(value.into())));
}

/// Grants config key `key` without a value, so [`config::get`](crate::config::get) returns `None`.
pub fn grant_config(key: impl Into<String>) {
    with_host(|host| host.config.insert(key.into(), None));
}

/// The lines logged since the last [`reset`] or [`take_logs`].
pub fn logs() -> Vec<LogLine> {
    with_host(|host| host.logs.clone())
}

/// Returns the logged lines and forgets them.
pub fn take_logs() -> Vec<LogLine> {
    with_host(|host| std::mem::take(&mut host.logs))
}

/// Answers [`commands::run`](crate::commands::run) with `handler` instead of refusing.
///
/// The handler gets the program and arguments; an `Err` is the host's refusal message.
pub fn on_command(handler: impl FnMut(&str, &[String]) -> Result<CommandOutput, String> + 'static) {
    with_host(|host| host.command_handler = Some(Box::new(handler)));
}

/// The programs the plugin asked to run, refused ones included.
pub fn command_calls() -> Vec<CommandCall> {
    with_host(|host| host.commands.clone())
}

/// Answers [`Request::send`](crate::http::Request::send) with `handler`
/// instead of refusing. The handler sees each request the plugin sends.
pub fn on_http(handler: impl FnMut(&Request) -> Result<Response, HttpError> + 'static) {
    with_host(|host| host.http_handler = Some(Box::new(handler)));
}

/// The HTTP requests the plugin sent, refused ones included.
pub fn http_requests() -> Vec<Request> {
    with_host(|host| host.http_requests.clone())
}

// The backend the host wrappers call on native targets.

/// The host refuses empty keys and keys longer than [`MAX_KEY_BYTES`](crate::kv::MAX_KEY_BYTES).
fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > crate::kv::MAX_KEY_BYTES {
        return Err(KvError::Denied(format!(
            "key must be 1 to {} bytes",
            crate::kv::MAX_KEY_BYTES
        )));
    }
    Ok(())
}

pub(crate) fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let line = LogLine {
        level,
        message: message.to_owned(),
        fields: fields
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    };
    // Shown by the test harness when a test fails, like the host's log would be.
    let rendered: String = line
        .fields
        .iter()
        .map(|(k, v)| format!(" {k}={v}"))
        .collect();
    eprintln!("{} {}{rendered}", level.as_str(), line.message);
    with_host(|host| host.logs.push(line));
}

pub(crate) fn kv_get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    with_host(|host| {
        host.kv_check()?;
        check_key(key)?;
        Ok(host.kv.get(key).cloned())
    })
}

pub(crate) fn kv_set(key: &str, value: &[u8]) -> Result<(), KvError> {
    with_host(|host| {
        host.kv_check()?;
        check_key(key)?;
        if let Some(quota) = host.kv_quota {
            let old_size = host.kv.get(key).map_or(0, |old| key.len() + old.len());
            let new_size = key.len() + value.len();
            let after = host.kv_used_bytes() - old_size + new_size;
            // Like the host: a write that does not grow the state is always
            // allowed, so a plugin over quota (after the quota was lowered)
            // can still shrink its state.
            if new_size > old_size && after > quota {
                return Err(KvError::QuotaExceeded(format!(
                    "writing `{key}` would use {after} of {quota} bytes"
                )));
            }
        }
        host.kv.insert(key.to_owned(), value.to_vec());
        Ok(())
    })
}

pub(crate) fn kv_delete(key: &str) -> Result<(), KvError> {
    with_host(|host| {
        host.kv_check()?;
        check_key(key)?;
        host.kv.remove(key);
        Ok(())
    })
}

pub(crate) fn kv_list_keys(prefix: &str) -> Result<Vec<String>, KvError> {
    with_host(|host| {
        host.kv_check()?;
        Ok(host
            .kv
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    })
}

pub(crate) fn config_get(key: &str) -> Result<Option<String>, String> {
    with_host(|host| match host.config.get(key) {
        Some(value) => Ok(value.clone()),
        None => Err(format!(
            "config key `{key}` is not granted by the manifest (config-keys)"
        )),
    })
}

pub(crate) fn commands_run(program: &str, args: &[&str]) -> Result<CommandOutput, String> {
    let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
    // The handler runs outside the borrow so that it may itself use the test host.
    let handler = with_host(|host| {
        host.commands.push(CommandCall {
            program: program.to_owned(),
            args: args.clone(),
        });
        host.command_handler.take()
    });
    let Some(mut handler) = handler else {
        return Err(format!(
            "command `{program}` is not allowed by the manifest (commands)"
        ));
    };
    let result = handler(program, &args);
    with_host(|host| {
        // Keep a handler the callee installed meanwhile; otherwise put ours back.
        host.command_handler.get_or_insert(handler);
    });
    result
}

pub(crate) fn http_send(request: &Request, _url: &::http::Uri) -> Result<Response, HttpError> {
    // As with commands, the handler runs outside the borrow.
    let handler = with_host(|host| {
        host.http_requests.push(request.clone());
        host.http_handler.take()
    });
    let Some(mut handler) = handler else {
        return Err(HttpError::Denied(format!(
            "{} is not allowed by the manifest (http-hosts)",
            request.url
        )));
    };
    let result = handler(request);
    with_host(|host| {
        host.http_handler.get_or_insert(handler);
    });
    result
}
