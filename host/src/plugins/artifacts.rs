//! Compiled components, cached on disk so that a restart or a reload of an
//! unchanged plugin does not compile it again.
//!
//! An entry is named after the SHA-256 of the component's bytes and a hash
//! of the engine's compatibility key (wasmtime's version and every setting
//! that changes generated code). A host built with another wasmtime, or
//! configured differently, looks for other names and never loads an artifact
//! it cannot run. Entries are written to a temporary file, synced and renamed,
//! so a crash leaves either a whole entry or none; an entry that still fails
//! to load is compiled again and rewritten.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use wasmtime::Engine;
use wasmtime::component::Component;

use super::compiler::{CompileFailure, CompilerProcess};
use super::errors::LoadError;

/// How a component was obtained, for the load log line and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled now (and stored in the cache, if there is one).
    Compiled,
    /// Loaded from the cache.
    Cached,
}

impl Origin {
    /// `compiled` or `cached`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compiled => "compiled",
            Self::Cached => "cached",
        }
    }
}

/// The name artifacts of `engine` carry: a hash of its compatibility key.
pub(super) fn engine_key(engine: &Engine) -> String {
    // `DefaultHasher::new()` has fixed keys, so the name is stable from one
    // run of the same binary to the next; a different toolchain may name
    // entries differently, which only costs a recompile.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// The on-disk cache of compiled components, or none (everything compiles).
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: Option<PathBuf>,
    engine_key: String,
    /// Compiles what the cache lacks in a process of its own; none: in
    /// this one.
    compiler: Option<CompilerProcess>,
}

impl ArtifactCache {
    /// A cache in `dir` for artifacts of `engine`; `None` disables caching.
    pub fn new(dir: Option<PathBuf>, engine: &Engine) -> Self {
        Self {
            dir,
            engine_key: engine_key(engine),
            compiler: None,
        }
    }

    /// Compiles in processes started with `compiler` (only with a cache
    /// folder: the artifact is how the child hands its work over).
    pub fn with_compiler(mut self, compiler: CompilerProcess) -> Self {
        self.compiler = Some(compiler);
        self
    }

    fn entry(&self, wasm_sha256: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|dir| dir.join(format!("{wasm_sha256}-{}.cwasm", self.engine_key)))
    }

    /// The compiled form of `wasm`, from the cache when it holds a usable
    /// entry, else compiled now and stored. CPU-heavy: call it on a
    /// blocking thread.
    pub fn component(
        &self,
        engine: &Engine,
        wasm: &[u8],
        wasm_sha256: &str,
    ) -> Result<(Component, Origin), LoadError> {
        let entry = self.entry(wasm_sha256);
        if let Some(path) = entry.as_deref().filter(|path| path.exists()) {
            // SAFETY: entries are written only by `store` below, from
            // `Component::serialize` of this engine configuration (the file
            // name carries its compatibility hash), into the host's own data
            // folder, which is trusted like the binary itself. wasmtime still
            // checks the header and refuses an incompatible artifact.
            match unsafe { Component::deserialize_file(engine, path) } {
                Ok(component) => return Ok((component, Origin::Cached)),
                Err(err) => tracing::warn!(
                    path = %path.display(),
                    error = %format!("{err:#}"),
                    "cached plugin artifact unusable; compiling again"
                ),
            }
        }
        let started = Instant::now();
        if let (Some(compiler), Some(path)) = (&self.compiler, &entry) {
            match compiler.compile(wasm, path, &self.engine_key) {
                // SAFETY: as above; the compiler process wrote the entry
                // with an engine of this one's compatibility key (it checks).
                Ok(()) => match unsafe { Component::deserialize_file(engine, path) } {
                    Ok(component) => {
                        tracing::debug!(
                            millis = started.elapsed().as_millis() as u64,
                            "plugin component compiled by the compiler process"
                        );
                        return Ok((component, Origin::Compiled));
                    }
                    Err(err) => tracing::warn!(
                        path = %path.display(),
                        error = %format!("{err:#}"),
                        "the compiler process's artifact is unusable; compiling here"
                    ),
                },
                Err(CompileFailure::Refused(message)) => return Err(LoadError::Compile(message)),
                Err(CompileFailure::Crashed(message)) => return Err(LoadError::Compiler(message)),
                Err(CompileFailure::Unavailable(message)) => tracing::warn!(
                    error = %message,
                    "no compiler process; compiling in the host's"
                ),
            }
        }
        let mut component =
            Component::new(engine, wasm).map_err(|err| LoadError::Compile(format!("{err:#}")))?;
        if let Some(path) = entry {
            match component.serialize() {
                Ok(bytes) => match store(&path, &bytes) {
                    // Serve the stored artifact, as a later start will: its
                    // code is then clean pages of a file, which the kernel
                    // can drop and read again, instead of anonymous memory
                    // held for as long as the plugin is loaded.
                    // SAFETY: as above; the entry was just written from
                    // this engine's own serialization.
                    Ok(()) => match unsafe { Component::deserialize_file(engine, &path) } {
                        Ok(mapped) => component = mapped,
                        Err(err) => tracing::warn!(
                            path = %path.display(),
                            error = %format!("{err:#}"),
                            "cannot map the plugin artifact just cached; serving it from memory"
                        ),
                    },
                    Err(err) => tracing::warn!(
                        path = %path.display(),
                        error = %err,
                        "cannot cache compiled plugin; it will compile again next time"
                    ),
                },
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "cannot serialize compiled plugin")
                }
            }
        }
        tracing::debug!(
            millis = started.elapsed().as_millis() as u64,
            "plugin component compiled"
        );
        Ok((component, Origin::Compiled))
    }
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
pub(super) fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache entries live in a folder");
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|err| err.error)?;
    Ok(())
}
