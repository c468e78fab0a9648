//! Running the local programs a manifest grants, for the `commands` import.
//!
//! A granted program runs directly (no shell), with an empty environment
//! apart from a fixed `PATH`, no standard input, in `/`. It is killed when
//! its grant's time limit or the calling plugin's own deadline passes,
//! whichever comes first, and at most the grant's byte cap of each output
//! stream is kept; the rest is read and dropped so the program never blocks
//! on a full pipe.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

use super::manifest::CommandGrant;

/// `PATH` for granted programs, which may run others by name.
const COMMAND_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a granted program did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Exit status; -1 if it was killed or ended by a signal.
    pub status: i32,
    /// Standard output, capped.
    pub stdout: Vec<u8>,
    /// Standard error, capped.
    pub stderr: Vec<u8>,
    /// Whether it was killed at its time limit.
    pub timed_out: bool,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Runs `program` with `args` under `grant`, stopping it at `deadline` at
/// the latest. Fails only if the program cannot be started.
pub async fn run(
    grant: &CommandGrant,
    program: &str,
    args: &[String],
    deadline: Instant,
) -> std::io::Result<Finished> {
    let started = Instant::now();
    let limit =
        Duration::from_millis(grant.timeout_ms).min(deadline.saturating_duration_since(started));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", COMMAND_PATH)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let cap = grant.max_output_bytes as usize;
    let stdout = tokio::spawn(capped(child.stdout.take(), cap));
    let stderr = tokio::spawn(capped(child.stderr.take(), cap));
    let (status, timed_out) = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => (status?.code().unwrap_or(-1), false),
        Err(_) => {
            let _ = child.kill().await;
            (-1, true)
        }
    };
    let mut stderr = collect(stderr).await;
    if timed_out {
        stderr.extend_from_slice(format!("\nkilled after {} ms", limit.as_millis()).as_bytes());
    }
    Ok(Finished {
        status,
        stdout: collect(stdout).await,
        stderr,
        timed_out,
        elapsed: started.elapsed(),
    })
}

/// What a reader kept. A program that left a child holding its pipe open
/// would keep the reader waiting forever, so it gets a moment, then is
/// stopped with what it has not yet handed over lost.
async fn collect(reader: tokio::task::JoinHandle<Vec<u8>>) -> Vec<u8> {
    let abort = reader.abort_handle();
    match tokio::time::timeout(Duration::from_millis(200), reader).await {
        Ok(Ok(kept)) => kept,
        _ => {
            abort.abort();
            Vec::new()
        }
    }
}

/// Reads a stream to its end, keeping its first `cap` bytes.
async fn capped(stream: Option<impl AsyncRead + Unpin + Send>, cap: usize) -> Vec<u8> {
    let Some(mut stream) = stream else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}
