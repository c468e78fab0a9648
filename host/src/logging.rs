//! The host's log: one event a line, UTC timestamp, level in capitals, and
//! the ids involved as `key=value` fields, so `grep ERROR` and
//! `grep TODO_WORKER_001` on `logs/autoagent.log` find what they should.

use std::io::BufWriter;
use std::path::Path;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::time::UtcTime;
use tracing_subscriber::fmt::writer::Tee;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Name of the log file inside the log directory.
pub const LOG_FILE: &str = "autoagent.log";

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
/// `RUST_LOG` overrides the default level (`info`).
pub fn init(log_dir: &Path) -> std::io::Result<WorkerGuard> {
    std::fs::create_dir_all(log_dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join(LOG_FILE))?;
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
