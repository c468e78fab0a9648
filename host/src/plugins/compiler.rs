//! Compiling components in a process of their own.
//!
//! Cranelift needs tens of MiB to compile a component, and once it is done
//! glibc keeps most of that in its arenas and the compiler's own code stays
//! mapped: a host that compiled its plugins at start idled about 12 MiB
//! above one that found them all in the artifact cache (BENCHMARKS.md,
//! "Footprint"). Compiled by a child process (the same binary, run as
//! `autoagent compile-plugin`), all of it goes away when the child exits,
//! and a compiler crash (a bug a hostile component could hit) fails that
//! one load instead of the host.
//!
//! The child reads the component on stdin, compiles it with an engine of
//! the same code settings (see [`compiler_engine`]) and writes the artifact
//! through the cache's own synced rename. It first checks that its engine
//! would write artifacts the host can load (the program it was started
//! from may be another build: `serve` runs `/proc/self/exe`, the running
//! image, but a library user may name any binary); if not, or if the child
//! cannot be started, the host compiles in its own process as before.
//!
//! The child runs under limits of its own ([`CompileLimits`]: memory it may
//! write, CPU time), set by the kernel before it starts, so that a
//! component made to blow up the compiler fails its own load and cannot
//! starve the host of memory or CPU.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use wasmtime::component::Component;

use super::artifacts::{engine_key, store};
use super::runtime::compiler_engine;

/// The hidden subcommand the host runs its compiler process with.
pub const SUBCOMMAND: &str = "compile-plugin";

/// Exit code of a child that compiled and stored the artifact.
const COMPILED: u8 = 0;
/// Exit code of a child whose component does not compile; stderr says why.
const REFUSED: u8 = 1;
/// Exit code of a child that could not do its job for a reason that is not
/// the component's: it is another build, or it cannot write the artifact.
const UNAVAILABLE: u8 = 3;

/// The most of a compiler process's stderr kept for its error.
const SAID_BYTES: u64 = 64 * 1024;
/// How often the host looks whether its compiler process has exited.
const WAIT_STEP: Duration = Duration::from_millis(20);

/// How to start the compiler process: this binary's path, and its limits.
#[derive(Debug, Clone)]
pub struct CompilerProcess {
    program: PathBuf,
    limits: CompileLimits,
}

/// What one compiler process may use, enforced by the kernel
/// (`RLIMIT_DATA`, `RLIMIT_CPU`). The defaults are far above what real
/// plugins need (README, "Compiling and memory") and far below what would
/// hurt the host.
///
/// The host also gives up on a child past its wall-clock time and kills it:
/// a child out of memory can hang instead of exiting (Rust's allocation
/// failure report takes a lock that a panic in flight may hold), and a
/// hung child uses no CPU time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// Memory the process may write (heap and private mappings), in bytes.
    pub memory_bytes: u64,
    /// CPU time, all its threads together, in seconds.
    pub cpu_seconds: u64,
    /// Time from its start to its exit, in seconds.
    pub wall_seconds: u64,
}

impl CompileLimits {
    /// The defaults: 2 GiB, 300 s of CPU time, 600 s in all. The `serve`
    /// command's `--compile-*` flags change them.
    pub const DEFAULT: Self = Self {
        memory_bytes: 2 << 30,
        cpu_seconds: 300,
        wall_seconds: 600,
    };

    /// Sets these limits on the calling process.
    fn apply(self) -> std::io::Result<()> {
        let set = |resource, soft: u64, hard: u64| {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: `setrlimit` only reads the struct passed by reference.
            if unsafe { libc::setrlimit(resource, &limit) } == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        set(libc::RLIMIT_DATA, self.memory_bytes, self.memory_bytes)?;
        // SIGXCPU at the limit; SIGKILL a second later if that is ignored.
        set(
            libc::RLIMIT_CPU,
            self.cpu_seconds,
            self.cpu_seconds.saturating_add(1),
        )
    }

    /// What a compiler process that ended with `status`, having said
    /// `said`, ran into: one of these limits, or a crash of its own.
    fn overrun(&self, status: ExitStatus, said: &str) -> String {
        // The soft CPU limit's SIGXCPU ends the child (it does not catch
        // it); a SIGKILL may be anyone's, so it is reported as it is.
        if status.signal() == Some(libc::SIGXCPU) {
            format!(
                "the compiler process used its {} s of CPU time ({status})",
                self.cpu_seconds
            )
        } else if said.contains("memory allocation of") {
            format!(
                "the compiler process ran out of its {} MiB of memory ({status})",
                self.memory_bytes >> 20
            )
        } else {
            format!("the compiler process failed: {status}: {said}")
        }
    }
}

impl Default for CompileLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why the compiler process did not store an artifact.
#[derive(Debug)]
pub(super) enum CompileFailure {
    /// The component does not compile: wasmtime's message.
    Refused(String),
    /// The process ended some other way (a crash, a signal): what it said.
    Crashed(String),
    /// No usable compiler process (it cannot start, or it is another
    /// build): the host compiles in its own process instead.
    Unavailable(String),
}

impl CompilerProcess {
    /// Compiler processes run `program compile-plugin …`, within the
    /// default limits.
    pub fn new(program: PathBuf) -> Self {
        Self {
            program,
            limits: CompileLimits::default(),
        }
    }

    /// The same, within `limits`.
    pub fn with_limits(self, limits: CompileLimits) -> Self {
        Self { limits, ..self }
    }

    /// Compiles `wasm` into the artifact `output`, for an engine whose
    /// [`engine_key`] is `key`. Blocks until the child exits.
    pub(super) fn compile(
        &self,
        wasm: &[u8],
        output: &Path,
        key: &str,
    ) -> Result<(), CompileFailure> {
        let mut command = Command::new(&self.program);
        command
            .arg(SUBCOMMAND)
            .arg("--output")
            .arg(output)
            .arg("--engine-key")
            .arg(key)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let limits = self.limits;
        // SAFETY: runs in the forked child before exec; it only calls
        // `setrlimit`, which is async-signal-safe, and allocates nothing.
        unsafe {
            command.pre_exec(move || limits.apply());
        }
        let mut child = command.spawn().map_err(|err| {
            CompileFailure::Unavailable(format!("cannot start {}: {err}", self.program.display()))
        })?;
        // What the child says is read beside it, so that a full pipe never
        // stops it; kept up to `SAID_BYTES`.
        let stderr = child.stderr.take();
        let said = std::thread::spawn(move || {
            let mut said = Vec::new();
            if let Some(stderr) = stderr {
                let _ = stderr.take(SAID_BYTES).read_to_end(&mut said);
            }
            String::from_utf8_lossy(&said).trim().to_owned()
        });
        // A child that stops reading early (another build) closes the pipe;
        // its exit code says why, so a failed write is not the error.
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(wasm);
        }
        let status = self.wait(&mut child);
        // The child is gone (waited for), so its end of the pipe is closed.
        let said = said.join().unwrap_or_default();
        let status = status?;
        match status.code().map(|code| code as u8) {
            Some(COMPILED) => Ok(()),
            Some(REFUSED) => Err(CompileFailure::Refused(said)),
            Some(UNAVAILABLE) => Err(CompileFailure::Unavailable(said)),
            _ => Err(CompileFailure::Crashed(self.limits.overrun(status, &said))),
        }
    }

    /// Waits for `child` to exit, at most its wall-clock time; past it the
    /// child is killed.
    fn wait(&self, child: &mut Child) -> Result<ExitStatus, CompileFailure> {
        let deadline = Instant::now() + Duration::from_secs(self.limits.wall_seconds);
        loop {
            let exited = child.try_wait().map_err(|err| {
                CompileFailure::Crashed(format!("cannot wait for the compiler process: {err}"))
            })?;
            if let Some(status) = exited {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CompileFailure::Crashed(format!(
                    "the compiler process took more than its {} s and was stopped",
                    self.limits.wall_seconds
                )));
            }
            // A compile takes tenths of a second to minutes: checking every
            // 20 ms costs nothing and ends a wait soon after the exit. Polled
            // rather than woken by SIGCHLD (as `wait-timeout` does): tokio
            // owns that signal for the processes plugins run.
            std::thread::sleep(WAIT_STEP);
        }
    }
}

/// The compiler process's side: the component on stdin, the artifact
/// written to `output`, for a host whose engine key is `key`.
pub fn run_compiler_process(output: &Path, key: &str) -> ExitCode {
    let engine = match compiler_engine() {
        Ok(engine) => engine,
        Err(err) => {
            return fail(
                UNAVAILABLE,
                &format!("cannot build the compiler's engine: {err:#}"),
            );
        }
    };
    let own_key = engine_key(&engine);
    if own_key != key {
        return fail(
            UNAVAILABLE,
            &format!("this build compiles for engine {own_key}, the host runs {key}"),
        );
    }
    let mut wasm = Vec::new();
    if let Err(err) = std::io::stdin().read_to_end(&mut wasm) {
        return fail(REFUSED, &format!("cannot read the component: {err}"));
    }
    let compiled = Component::new(&engine, &wasm).and_then(|component| component.serialize());
    match compiled {
        Ok(artifact) => match store(output, &artifact) {
            Ok(()) => ExitCode::from(COMPILED),
            Err(err) => fail(
                UNAVAILABLE,
                &format!("cannot write {}: {err}", output.display()),
            ),
        },
        Err(err) => fail(REFUSED, &format!("{err:#}")),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(code)
}
