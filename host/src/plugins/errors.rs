//! Why a plugin could not be loaded, removed or called: the registry's
//! public errors, which the API maps to statuses (`api::error`).

use std::path::PathBuf;

use super::folder::FolderError;
use super::manifest::ManifestError;
use super::outcome::CallError;

/// Why a plugin could not be loaded. The previous version, if any, keeps
/// serving.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The manifest is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The bytes are not a component wasmtime can compile.
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    /// The compile did not finish, whatever the bytes: the compiler
    /// process failed or ran past one of its limits, or the host is
    /// stopping.
    #[error("the component could not be compiled: {0}")]
    Compiler(String),
    /// The component does not match its kind's world, or imports something
    /// the host does not offer.
    #[error("component does not fit world `{world}`: {message}")]
    WrongWorld {
        /// The world the manifest's kind names.
        world: &'static str,
        /// What the linker said.
        message: String,
    },
    /// The component's own description contradicts its manifest.
    #[error("{0}")]
    Mismatch(String),
    /// Reading or writing the plugin's folder failed.
    #[error("{path}: {message}")]
    Io {
        /// File or folder at fault.
        path: PathBuf,
        /// What the system said.
        message: String,
    },
    /// The plugin may not be placed where it was asked to go.
    #[error("{0}")]
    Forbidden(String),
}

impl From<FolderError> for LoadError {
    fn from(err: FolderError) -> Self {
        Self::Io {
            path: err.path,
            message: err.message,
        }
    }
}

/// Why a plugin could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// No such plugin, serving or failed.
    #[error("team {team:?} has no plugin named {name:?}")]
    NotFound {
        /// Team asked for.
        team: String,
        /// Plugin asked for.
        name: String,
    },
    /// Bundled plugins are part of the binary.
    #[error("{0}")]
    Forbidden(String),
    /// The folder could not be removed; the plugin still serves.
    #[error("cannot remove the plugin folder: {0}")]
    Io(String),
}

/// Why a plugin call could not be made or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// No plugin of that name is loaded for the team.
    #[error("team {team:?} has no plugin named {name:?}")]
    NotFound {
        /// Team asked for.
        team: String,
        /// Plugin asked for.
        name: String,
    },
    /// The plugin does not offer the capability.
    #[error("plugin {plugin:?} does not offer capability {capability:?}")]
    UnknownCapability {
        /// The plugin.
        plugin: String,
        /// Capability asked for.
        capability: String,
    },
    /// The call ran and failed.
    #[error(transparent)]
    Call(#[from] CallError),
}
