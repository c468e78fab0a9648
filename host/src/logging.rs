//! The host's log: one event a line, UTC timestamp, level in capitals, and
//! the ids involved as `key=value` fields, so `grep ERROR` and
//! `grep TODO_WORKER_001` on `logs/autoagent.log` find what they should.

use std::io::BufWriter;
use std::path::Path;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::time::UtcTime;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Name of the log file inside the log directory.
pub const LOG_FILE: &str = "autoagent.log";

/// Keeps the log's writer threads alive; dropping it flushes what they
/// still hold. Keep it for as long as the host runs.
#[must_use = "dropping the guard stops the log writers"]
pub struct LogGuard {
    _file: WorkerGuard,
    _stdout: WorkerGuard,
}

/// Sends events to `<log_dir>/autoagent.log` and to standard output.
///
/// Each event is formatted once and the same line goes to both; neither
/// write happens on the thread that logged. The host logs several lines per
/// task, so formatting twice and writing stdout in line on the tokio workers
/// cost about a fifth of its CPU under load (see BENCHMARKS.md).
///
/// `RUST_LOG` overrides the default level (`info`).
pub fn init(log_dir: &Path) -> std::io::Result<LogGuard> {
    std::fs::create_dir_all(log_dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join(LOG_FILE))?;
    // Each writer thread takes every line waiting, writes them through its
    // buffer and flushes once: one system call per burst, not per line.
    let (file_writer, file_guard) = tracing_appender::non_blocking(BufWriter::new(file));
    // Standard output may be a pipe read by a supervisor: when it falls
    // behind, the host waits rather than dropping lines, as a blocking write
    // would.
    let (stdout_writer, stdout_guard) = NonBlockingBuilder::default()
        .lossy(false)
        .finish(BufWriter::new(std::io::stdout()));
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
                .with_writer(file_writer.and(stdout_writer)),
        )
        .init();
    Ok(LogGuard {
        _file: file_guard,
        _stdout: stdout_guard,
    })
}
