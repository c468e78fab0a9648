//! Running allow-listed local programs, e.g. to restart a service.
//!
//! The manifest's `[permissions] commands` lists what may run; the host runs
//! nothing else and caps the output it hands back.

use crate::PluginError;

/// What a finished program left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit status; -1 if the program was killed.
    pub status: i32,
    /// Standard output, capped by the host.
    pub stdout: Vec<u8>,
    /// Standard error, capped by the host.
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    /// Whether the program exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// Standard output as text, invalid UTF-8 replaced.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text, invalid UTF-8 replaced.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `program` with `args` and waits for it to finish.
///
/// A program that runs and exits non-zero is `Ok` with that status. When the
/// host refuses (not allow-listed) or cannot start the program, the result is
/// [`PluginError::Failed`] carrying the host's reason: the WIT reports both as
/// one string, and a recovery strategy usually treats both as "not recovered".
pub fn run(program: &str, args: &[&str]) -> Result<CommandOutput, PluginError> {
    crate::backend::commands_run(program, args).map_err(PluginError::Failed)
}
