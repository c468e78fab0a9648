//! The host's log: one event a line, UTC timestamp, level in capitals, and
//! the ids involved as `key=value` fields, so `grep ERROR` and
//! `grep TODO_WORKER_001` on `logs/autoagent.log` find what they should.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::time::UtcTime;
use tracing_subscriber::fmt::writer::Tee;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Name of the log file inside the log directory.
pub const LOG_FILE: &str = "autoagent.log";

/// How large the log file grows and how many full ones are kept.
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    /// Once the file passes this size it is renamed `autoagent.log.1` (the
    /// older ones move up one) and a new `autoagent.log` is started.
    pub max_bytes: u64,
    /// Full files kept besides the current one; older ones are deleted.
    pub keep: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            max_bytes: 100 << 20,
            keep: 5,
        }
    }
}

/// Set by [`reopen`]; the writer reopens the file before its next write.
static REOPEN: AtomicBool = AtomicBool::new(false);

/// Makes the log writer close its file and open `autoagent.log` afresh, for
/// an external `logrotate` that moved the file away (the host calls it on
/// SIGHUP).
pub fn reopen() {
    REOPEN.store(true, Ordering::Release);
}

/// The log file, rotated by size: the current file always keeps its name,
/// so `tail -F` and `grep` on `logs/autoagent.log` work as the guide says.
struct RotatingFile {
    path: PathBuf,
    rotation: Rotation,
    file: FileRotate<AppendCount>,
}

impl RotatingFile {
    fn open(path: PathBuf, rotation: Rotation) -> Self {
        let file = FileRotate::new(
            &path,
            AppendCount::new(rotation.keep),
            // Rotates after the write that passes the size, so a burst of
            // whole lines is never split across two files.
            ContentLimit::BytesSurpassed(rotation.max_bytes.max(1) as usize),
            Compression::None,
            None,
        );
        Self {
            path,
            rotation,
            file,
        }
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if REOPEN.swap(false, Ordering::AcqRel) {
            let _ = self.file.flush();
            *self = Self::open(self.path.clone(), self.rotation);
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Sends events to `<log_dir>/autoagent.log` and to standard output. Keep the
/// guard alive for as long as the host runs: dropping it flushes both.
///
/// Each event is formatted once and handed to one writer thread, which writes
/// the line to both outputs; it takes every line waiting at once and writes
/// them through buffers, so a burst is one system call per output. The host
/// logs several lines per task: formatting each twice and writing standard
/// output line by line on the tokio workers cost a fifth of its CPU under
/// load (BENCHMARKS.md, "Tasks per second, end to end").
///
/// The file is rotated by size (see [`Rotation`]) and reopened after
/// [`reopen`]. `RUST_LOG` overrides the default level (`info`).
pub fn init(log_dir: &Path, rotation: Rotation) -> std::io::Result<WorkerGuard> {
    std::fs::create_dir_all(log_dir)?;
    // Fail here, with the reason, rather than in the writer thread.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join(LOG_FILE))?;
    let file = RotatingFile::open(log_dir.join(LOG_FILE), rotation);
    let both = Tee::new(BufWriter::new(file), BufWriter::new(std::io::stdout()));
    // Standard output may be a pipe read by a supervisor: when the writer
    // falls behind, the host waits rather than dropping lines, as a blocking
    // write would.
    let (writer, guard) = NonBlockingBuilder::default().lossy(false).finish(both);
    let timer = UtcTime::new(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_timer(timer)
                .with_ansi(false)
                .with_writer(writer),
        )
        .init();
    Ok(guard)
}
