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
//! would write artifacts the host can load (the binary on disk may have
//! been replaced by an upgrade since the host started); if not, or if the
//! child cannot be started, the host compiles in its own process as before.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

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

/// How to start the compiler process: this binary's path.
#[derive(Debug, Clone)]
pub struct CompilerProcess {
    program: PathBuf,
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
    /// Compiler processes run `program compile-plugin …`.
    pub fn new(program: PathBuf) -> Self {
        Self { program }
    }

    /// Compiles `wasm` into the artifact `output`, for an engine whose
    /// [`engine_key`] is `key`. Blocks until the child exits.
    pub(super) fn compile(
        &self,
        wasm: &[u8],
        output: &Path,
        key: &str,
    ) -> Result<(), CompileFailure> {
        let mut child = Command::new(&self.program)
            .arg(SUBCOMMAND)
            .arg("--output")
            .arg(output)
            .arg("--engine-key")
            .arg(key)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| {
                CompileFailure::Unavailable(format!(
                    "cannot start {}: {err}",
                    self.program.display()
                ))
            })?;
        // A child that stops reading early (another build) closes the pipe;
        // its exit code says why, so a failed write is not the error.
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(wasm);
        }
        let finished = child.wait_with_output().map_err(|err| {
            CompileFailure::Crashed(format!("cannot wait for the compiler process: {err}"))
        })?;
        let said = String::from_utf8_lossy(&finished.stderr).trim().to_owned();
        match finished.status.code().map(|code| code as u8) {
            Some(COMPILED) => Ok(()),
            Some(REFUSED) => Err(CompileFailure::Refused(said)),
            Some(UNAVAILABLE) => Err(CompileFailure::Unavailable(said)),
            _ => Err(CompileFailure::Crashed(format!(
                "{}: {said}",
                finished.status
            ))),
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
