//! Structured logging into the host's log file.
//!
//! The host adds the team, plugin and call id to every line, so a message
//! only needs to say what happened and name the ids it concerns, e.g.
//! `log::log(Level::Info, "todo created", &[("todoId", "todo_1")])`.
//! In native tests the lines are captured by [`testing`](crate::testing).

/// Severity of a log event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Step-by-step detail, usually filtered out.
    Trace,
    /// Detail useful when investigating a plugin.
    Debug,
    /// Normal operation worth recording.
    Info,
    /// Something unexpected that the plugin worked around.
    Warn,
    /// Something failed.
    Error,
}

impl Level {
    /// The level in capitals, as the host's log file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

/// Writes `message` with key-value `fields` at `level`.
pub fn log(level: Level, message: impl AsRef<str>, fields: &[(&str, &str)]) {
    crate::backend::log(level, message.as_ref(), fields);
}

/// Writes `message` at [`Level::Trace`].
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message, &[]);
}

/// Writes `message` at [`Level::Debug`].
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message, &[]);
}

/// Writes `message` at [`Level::Info`].
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message, &[]);
}

/// Writes `message` at [`Level::Warn`].
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message, &[]);
}

/// Writes `message` at [`Level::Error`].
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message, &[]);
}
