//! How a plugin call can fail, and what each kind of failure means.
//!
//! A failure keeps its [`ErrorKind`] from the sandbox to the task record and
//! the API: the kind decides whether a retry can help ([`ErrorKind::retryable`],
//! the one table of that) and which status and code the API answers with.
//! Nothing downstream looks at a failure's message to decide anything.

use serde::{Deserialize, Serialize};

use wasmtime::Trap;

use super::manifest::{Limits, PluginKind};
use super::runtime::bindings::capability::autoagent::plugin::types as wit;

/// The kind of a failed call, or of a failed task attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The input does not have the shape the plugin expects (the plugin
    /// said so, or the host could not encode it).
    InvalidInput,
    /// The plugin does not offer what was asked.
    Unsupported,
    /// The plugin tried and failed; it says a retry may succeed.
    Failed,
    /// A host import refused the plugin (a permission, a quota).
    Denied,
    /// The call ran past its time limit.
    Timeout,
    /// The guest grew past its own memory limit.
    MemoryLimit,
    /// The host-wide guest memory budget was in use by other calls.
    HostMemory,
    /// The guest trapped: a panic, a stack overflow, an invalid operation.
    Trap,
    /// The answer was larger than the manifest allows.
    OutputTooLarge,
    /// The answer was not JSON.
    InvalidOutput,
    /// Every call slot of the plugin stayed taken.
    Busy,
    /// The plugin is of another kind and has no such export.
    WrongKind,
    /// No loaded plugin serves what was asked (it may be loaded later).
    Unavailable,
    /// The host could not set the call up.
    Host,
}

impl ErrorKind {
    /// Whether another attempt can succeed where this one failed. The one
    /// table of retries: a task's failed attempt is retried only for these.
    pub fn retryable(self) -> bool {
        match self {
            // The plugin said a retry may help, or the cause is passing:
            // time, other calls' memory or slots, a plugin not loaded yet,
            // the host itself. A trap may come from a passing condition too.
            Self::Failed
            | Self::Timeout
            | Self::HostMemory
            | Self::Busy
            | Self::Unavailable
            | Self::Host
            | Self::Trap => true,
            // The same input meets the same plugin the same way again.
            Self::InvalidInput
            | Self::Unsupported
            | Self::Denied
            | Self::MemoryLimit
            | Self::OutputTooLarge
            | Self::InvalidOutput
            | Self::WrongKind => false,
        }
    }

    /// The word the API and the log use, e.g. `invalid_input`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid_input",
            Self::Unsupported => "unsupported",
            Self::Failed => "failed",
            Self::Denied => "denied",
            Self::Timeout => "timeout",
            Self::MemoryLimit => "memory_limit",
            Self::HostMemory => "host_memory",
            Self::Trap => "trap",
            Self::OutputTooLarge => "output_too_large",
            Self::InvalidOutput => "invalid_output",
            Self::Busy => "busy",
            Self::WrongKind => "wrong_kind",
            Self::Unavailable => "unavailable",
            Self::Host => "host_error",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a plugin call did not produce a result. Each variant is the failure of
/// that one call; the host and other calls are unaffected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The plugin ran and reported an error of its own: one of
    /// [`ErrorKind::InvalidInput`], `Unsupported`, `Failed` or `Denied`.
    #[error("{kind}: {message}")]
    Plugin {
        /// What the plugin said happened.
        kind: ErrorKind,
        /// The plugin's message.
        message: String,
    },
    /// The call ran past its time limit and was interrupted.
    #[error("call exceeded its time limit of {0} ms and was stopped")]
    Timeout(u64),
    /// The guest tried to grow its memory past its limit.
    #[error("call exceeded its memory limit of {0} MiB and was stopped")]
    MemoryLimit(u64),
    /// The guest trapped (a panic, a stack overflow, an invalid operation).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The guest answered with more bytes than its manifest allows (or
    /// tried to hand the host more in one go than that and its key-value
    /// quota allow; then the size is not known).
    #[error("plugin output is {}, over its limit of {limit} bytes", size.map_or("larger than the host accepts".to_owned(), |size| format!("{size} bytes")))]
    OutputTooLarge {
        /// Bytes returned, when they were read.
        size: Option<usize>,
        /// Bytes allowed.
        limit: u64,
    },
    /// The guest answered with text that is not JSON.
    #[error("plugin output is not valid JSON: {0}")]
    InvalidOutput(String),
    /// The call's input could not be sent (not JSON-encodable).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Every slot for this plugin stayed taken for the whole time limit.
    #[error("plugin is busy: all {0} call slots stayed taken")]
    Busy(u32),
    /// Growing the guest's memory would pass the host-wide budget for guest
    /// memory.
    #[error(
        "the host's guest memory budget of {0} MiB is in use by other calls; this call was stopped"
    )]
    HostMemory(u64),
    /// The called export does not exist for this plugin's kind.
    #[error("plugin is a {0:?} plugin and has no such export")]
    WrongKind(PluginKind),
    /// The host could not set the call up (instance pool exhausted, ...).
    #[error("host could not run the call: {0}")]
    Host(String),
}

impl CallError {
    /// The kind of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Plugin { kind, .. } => *kind,
            Self::Timeout(_) => ErrorKind::Timeout,
            Self::MemoryLimit(_) => ErrorKind::MemoryLimit,
            Self::Trap(_) => ErrorKind::Trap,
            Self::OutputTooLarge { .. } => ErrorKind::OutputTooLarge,
            Self::InvalidOutput(_) => ErrorKind::InvalidOutput,
            Self::InvalidInput(_) => ErrorKind::InvalidInput,
            Self::Busy(_) => ErrorKind::Busy,
            Self::HostMemory(_) => ErrorKind::HostMemory,
            Self::WrongKind(_) => ErrorKind::WrongKind,
            Self::Host(_) => ErrorKind::Host,
        }
    }

    /// A stable, machine-readable name for the error, used in the API and in
    /// metrics labels: the kind's word, except that both memory kinds are
    /// `memory_limit` to callers.
    pub fn code(&self) -> &'static str {
        match self.kind() {
            ErrorKind::HostMemory => "memory_limit",
            kind => kind.as_str(),
        }
    }
}

/// What the host saw of a call that failed in the sandbox: the flags the
/// store's callbacks set, and wasmtime's error.
#[derive(Debug)]
pub(super) struct Observed<'a> {
    /// The epoch callback stopped the call past its deadline.
    pub(super) timed_out: bool,
    /// The guest asked for more memory than its manifest allows.
    pub(super) memory_exceeded: bool,
    /// Growing the guest's memory would have passed the host-wide budget.
    pub(super) budget_exceeded: bool,
    /// That budget, in MiB.
    pub(super) budget_mib: u64,
    /// The trap, if the error is one.
    pub(super) trap: Option<Trap>,
    /// wasmtime's error, with its causes.
    pub(super) error: String,
    /// What the guest wrote to stderr (a panic message, say).
    pub(super) stderr: &'a [u8],
}

/// How wasmtime words a transfer past the store's hostcall fuel. Its error
/// type is private, so the text is the only thing to recognise it by.
const HOSTCALL_FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

impl CallError {
    /// Names a failed call's error from what the store saw. The host's own
    /// flags come first: a limit the host enforced surfaces in the guest as
    /// a trap or a failed allocation, and must be reported as that limit.
    pub(super) fn of_failed_call(seen: &Observed<'_>, limits: &Limits) -> Self {
        if seen.timed_out {
            return Self::Timeout(limits.timeout_ms);
        }
        if seen.memory_exceeded {
            return Self::MemoryLimit(limits.memory_mib);
        }
        if seen.budget_exceeded {
            return Self::HostMemory(seen.budget_mib);
        }
        if seen.error.contains(HOSTCALL_FUEL_EXHAUSTED) {
            return Self::OutputTooLarge {
                size: None,
                limit: limits.max_output_bytes,
            };
        }
        match seen.trap {
            Some(Trap::Interrupt) => Self::Timeout(limits.timeout_ms),
            Some(Trap::StackOverflow) => Self::Trap("stack overflow".into()),
            Some(trap) => {
                let said = String::from_utf8_lossy(seen.stderr);
                let said = said.trim();
                if said.is_empty() {
                    Self::Trap(trap.to_string())
                } else {
                    Self::Trap(format!("{trap}; the plugin said: {said}"))
                }
            }
            None if seen.error.contains("instance") && seen.error.contains("limit") => {
                Self::Host(format!("instance pool exhausted: {}", seen.error))
            }
            None => Self::Trap(seen.error.clone()),
        }
    }
}

impl From<wit::PluginError> for CallError {
    fn from(err: wit::PluginError) -> Self {
        use wit::PluginError as E;
        let (kind, message) = match err {
            E::InvalidInput(m) => (ErrorKind::InvalidInput, m),
            E::Unsupported(m) => (ErrorKind::Unsupported, m),
            E::Failed(m) => (ErrorKind::Failed, m),
            E::Denied(m) => (ErrorKind::Denied, m),
        };
        Self::Plugin { kind, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind.
    const ALL: [ErrorKind; 14] = [
        ErrorKind::InvalidInput,
        ErrorKind::Unsupported,
        ErrorKind::Failed,
        ErrorKind::Denied,
        ErrorKind::Timeout,
        ErrorKind::MemoryLimit,
        ErrorKind::HostMemory,
        ErrorKind::Trap,
        ErrorKind::OutputTooLarge,
        ErrorKind::InvalidOutput,
        ErrorKind::Busy,
        ErrorKind::WrongKind,
        ErrorKind::Unavailable,
        ErrorKind::Host,
    ];

    /// What each kind should be: its word (API and log), the word task
    /// records store (serde), and whether a retry can help. The match has no
    /// wildcard, so a new kind does not compile until it has a row here (and
    /// `ALL` must grow with it).
    fn expected(kind: ErrorKind) -> (&'static str, &'static str, bool) {
        match kind {
            ErrorKind::InvalidInput => ("invalid_input", "invalid_input", false),
            ErrorKind::Unsupported => ("unsupported", "unsupported", false),
            ErrorKind::Failed => ("failed", "failed", true),
            ErrorKind::Denied => ("denied", "denied", false),
            ErrorKind::Timeout => ("timeout", "timeout", true),
            ErrorKind::MemoryLimit => ("memory_limit", "memory_limit", false),
            ErrorKind::HostMemory => ("host_memory", "host_memory", true),
            ErrorKind::Trap => ("trap", "trap", true),
            ErrorKind::OutputTooLarge => ("output_too_large", "output_too_large", false),
            ErrorKind::InvalidOutput => ("invalid_output", "invalid_output", false),
            ErrorKind::Busy => ("busy", "busy", true),
            ErrorKind::WrongKind => ("wrong_kind", "wrong_kind", false),
            ErrorKind::Unavailable => ("unavailable", "unavailable", true),
            // Stored as `host` since typed outcomes began; the API and the
            // log say `host_error`.
            ErrorKind::Host => ("host_error", "host", true),
        }
    }

    #[test]
    fn every_kind_has_its_word_its_stored_word_and_its_retry_row() {
        for kind in ALL {
            let (word, stored, retryable) = expected(kind);
            assert_eq!(kind.as_str(), word);
            assert_eq!(kind.to_string(), word);
            assert_eq!(serde_json::to_value(kind).unwrap(), stored, "{kind:?}");
            let back: ErrorKind = serde_json::from_value(stored.into()).unwrap();
            assert_eq!(back, kind);
            assert_eq!(kind.retryable(), retryable, "{kind:?}");
        }
        let words: std::collections::HashSet<_> = ALL.map(ErrorKind::as_str).into();
        assert_eq!(words.len(), ALL.len(), "every kind is in ALL once");
    }

    #[test]
    fn plugin_errors_keep_their_kind() {
        use wit::PluginError as E;
        for (err, kind) in [
            (E::InvalidInput("no title".into()), ErrorKind::InvalidInput),
            (E::Unsupported("no such op".into()), ErrorKind::Unsupported),
            (E::Failed("backend down".into()), ErrorKind::Failed),
            (E::Denied("not allowed".into()), ErrorKind::Denied),
        ] {
            let err = CallError::from(err);
            assert_eq!(err.kind(), kind);
            assert_eq!(err.code(), kind.as_str());
            assert!(err.to_string().starts_with(kind.as_str()), "{err}");
        }
    }

    #[test]
    fn every_call_error_has_its_kind_and_code() {
        let cases = [
            (CallError::Timeout(5), ErrorKind::Timeout, "timeout"),
            (
                CallError::MemoryLimit(32),
                ErrorKind::MemoryLimit,
                "memory_limit",
            ),
            // Callers see both memory kinds as one code.
            (
                CallError::HostMemory(16),
                ErrorKind::HostMemory,
                "memory_limit",
            ),
            (
                CallError::Trap("unreachable".into()),
                ErrorKind::Trap,
                "trap",
            ),
            (
                CallError::OutputTooLarge {
                    size: Some(2),
                    limit: 1,
                },
                ErrorKind::OutputTooLarge,
                "output_too_large",
            ),
            (
                CallError::InvalidOutput("eof".into()),
                ErrorKind::InvalidOutput,
                "invalid_output",
            ),
            (
                CallError::InvalidInput("nan".into()),
                ErrorKind::InvalidInput,
                "invalid_input",
            ),
            (CallError::Busy(4), ErrorKind::Busy, "busy"),
            (
                CallError::WrongKind(PluginKind::HealthCheck),
                ErrorKind::WrongKind,
                "wrong_kind",
            ),
            (
                CallError::Host("pool".into()),
                ErrorKind::Host,
                "host_error",
            ),
        ];
        for (err, kind, code) in cases {
            assert_eq!(err.kind(), kind, "{err}");
            assert_eq!(err.code(), code, "{err}");
        }
    }

    fn limits() -> Limits {
        Limits {
            memory_mib: 32,
            timeout_ms: 250,
            max_concurrent_calls: 1,
            max_output_bytes: 4096,
        }
    }

    /// A failure with no flag set and no trap.
    fn plain(error: &str) -> Observed<'static> {
        Observed {
            timed_out: false,
            memory_exceeded: false,
            budget_exceeded: false,
            budget_mib: 512,
            trap: None,
            error: error.to_owned(),
            stderr: b"",
        }
    }

    fn of(seen: Observed<'_>) -> CallError {
        CallError::of_failed_call(&seen, &limits())
    }

    #[test]
    fn the_hosts_flags_name_the_failure_before_what_the_guest_saw() {
        let trapped = || Observed {
            trap: Some(Trap::UnreachableCodeReached),
            ..plain("wasm trap: unreachable")
        };
        let timed_out = Observed {
            timed_out: true,
            memory_exceeded: true,
            budget_exceeded: true,
            ..trapped()
        };
        assert_eq!(of(timed_out), CallError::Timeout(250));
        let memory = Observed {
            memory_exceeded: true,
            budget_exceeded: true,
            ..trapped()
        };
        assert_eq!(of(memory), CallError::MemoryLimit(32));
        let budget = Observed {
            budget_exceeded: true,
            ..trapped()
        };
        assert_eq!(of(budget), CallError::HostMemory(512));
        let fuel = Observed {
            error: format!("transfer failed: {HOSTCALL_FUEL_EXHAUSTED}"),
            ..trapped()
        };
        assert_eq!(
            of(fuel),
            CallError::OutputTooLarge {
                size: None,
                limit: 4096
            }
        );
    }

    #[test]
    fn traps_are_named_by_their_kind_and_what_the_guest_said() {
        let trap = |trap, stderr: &'static [u8]| Observed {
            trap: Some(trap),
            stderr,
            ..plain("wasm trap")
        };
        // An interrupt is the epoch deadline, even without the flag.
        assert_eq!(of(trap(Trap::Interrupt, b"")), CallError::Timeout(250));
        assert_eq!(
            of(trap(Trap::StackOverflow, b"thread panicked")),
            CallError::Trap("stack overflow".into())
        );
        let unreachable = Trap::UnreachableCodeReached.to_string();
        assert_eq!(
            of(trap(Trap::UnreachableCodeReached, b" \n")),
            CallError::Trap(unreachable.clone())
        );
        assert_eq!(
            of(trap(
                Trap::UnreachableCodeReached,
                b"panicked at src/lib.rs:3: no title\n"
            )),
            CallError::Trap(format!(
                "{unreachable}; the plugin said: panicked at src/lib.rs:3: no title"
            ))
        );
    }

    #[test]
    fn other_errors_are_traps_except_an_exhausted_instance_pool() {
        let pool = "maximum concurrent instance limit of 100 reached";
        assert_eq!(
            of(plain(pool)),
            CallError::Host(format!("instance pool exhausted: {pool}"))
        );
        assert_eq!(
            of(plain("component export failed")),
            CallError::Trap("component export failed".into())
        );
    }
}
