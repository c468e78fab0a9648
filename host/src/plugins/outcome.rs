//! How a plugin call can fail, and what each kind of failure means.
//!
//! A failure keeps its [`ErrorKind`] from the sandbox to the task record and
//! the API: the kind decides whether a retry can help ([`ErrorKind::retryable`],
//! the one table of that) and which status and code the API answers with.
//! Nothing downstream looks at a failure's message to decide anything.

use serde::{Deserialize, Serialize};

use super::manifest::PluginKind;
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

    #[test]
    fn only_passing_failures_are_retried() {
        let retried: Vec<&str> = [
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
        ]
        .into_iter()
        .filter(|kind| kind.retryable())
        .map(ErrorKind::as_str)
        .collect();
        assert_eq!(
            retried,
            [
                "failed",
                "timeout",
                "host_memory",
                "trap",
                "busy",
                "unavailable",
                "host_error"
            ]
        );
    }

    #[test]
    fn plugin_errors_keep_their_kind() {
        let err = CallError::from(wit::PluginError::InvalidInput("no title".into()));
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(err.code(), "invalid_input");
        assert_eq!(CallError::HostMemory(16).code(), "memory_limit");
        assert!(!CallError::MemoryLimit(32).kind().retryable());
    }
}
