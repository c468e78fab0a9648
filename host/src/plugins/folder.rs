//! Plugin folders on disk: `<root>/<team>/<name>/` holding a `plugin.toml`
//! and one `.wasm` file, or no `.wasm` at all when the manifest names a
//! bundled component (`component = "core/<name>"`).
//!
//! The folders are the source of truth for every plugin that is not bundled:
//! an operator copies files in, an upload writes the same layout. Names
//! starting with a dot are the host's own scratch (a folder being written, a
//! replaced or deleted one) and are never loaded.
//!
//! A folder is replaced whole: the new one is written and synced beside the
//! old under a dot-name, then the old is renamed away and the new renamed
//! into place. [`recover`] finishes or rolls back a replacement that a crash
//! interrupted, so a plugin folder is always the old version or the new one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use crate::names::Name;

/// The file that describes a plugin.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// What a plugin folder holds.
pub struct PluginFiles {
    /// The text of `plugin.toml`.
    pub manifest: String,
    /// The component's bytes; `None` for a folder with no `.wasm` (its
    /// manifest must then name a bundled component).
    pub wasm: Option<Vec<u8>>,
}

/// Why a folder could not be read.
#[derive(Debug)]
pub struct FolderError {
    /// File or folder at fault.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

fn is_scratch(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

/// `<root>/<team>/<name>` folders, in name order, scratch folders left out.
pub fn plugin_dirs(root: &Path) -> Vec<PathBuf> {
    let subdirs = |dir: &Path| -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| !is_scratch(&entry.file_name()))
            .map(|entry| entry.path())
            .filter(|path| path.is_dir())
            .collect();
        dirs.sort();
        dirs
    };
    subdirs(root)
        .iter()
        .flat_map(|team| subdirs(team))
        .collect()
}

/// The `(team, name)` whose folder `path` is in or is, if any. Folders
/// whose names are not valid [`Name`]s belong to no plugin and are ignored.
pub fn owner_of(root: &Path, path: &Path) -> Option<(Name, Name)> {
    let mut parts = path.strip_prefix(root).ok()?.components();
    let mut next = || match parts.next() {
        Some(Component::Normal(part)) if !is_scratch(part) => Name::parse(part.to_str()?).ok(),
        _ => None,
    };
    Some((next()?, next()?))
}

/// The folder of plugin `team/name` under `root`. Built only from
/// validated names, and checked once more to lie exactly two levels under
/// `root`: every path this module writes or deletes comes from here.
pub fn plugin_dir(root: &Path, team: &Name, name: &Name) -> io::Result<PathBuf> {
    let dir = root.join(team.as_str()).join(name.as_str());
    let inside = dir.strip_prefix(root).is_ok_and(|rest| {
        let parts: Vec<Component> = rest.components().collect();
        parts.len() == 2
            && parts
                .iter()
                .all(|part| matches!(part, Component::Normal(_)))
    });
    if inside {
        Ok(dir)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a plugin folder under {}",
                dir.display(),
                root.display()
            ),
        ))
    }
}

/// Reads `plugin.toml` and the `.wasm` file, if there is one, of a plugin
/// folder. More than one `.wasm` file is an error; whether none is allowed
/// is the manifest's to say (`component`), checked when it loads.
pub fn read(dir: &Path) -> Result<PluginFiles, FolderError> {
    let fail = |path: &Path, message: String| FolderError {
        path: path.to_owned(),
        message,
    };
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest =
        fs::read_to_string(&manifest_path).map_err(|err| fail(&manifest_path, err.to_string()))?;
    let wasm_files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|err| fail(dir, err.to_string()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
        .collect();
    let wasm = match wasm_files.as_slice() {
        [] => None,
        [wasm_path] => Some(fs::read(wasm_path).map_err(|err| fail(wasm_path, err.to_string()))?),
        more => {
            return Err(fail(
                dir,
                format!("expected one .wasm file at most, found {}", more.len()),
            ));
        }
    };
    Ok(PluginFiles { manifest, wasm })
}

/// Replaces (or creates) `<root>/<team>/<name>/` with `files`, durably:
/// when this returns, the new folder survives a crash.
pub fn write(root: &Path, team: &Name, name: &Name, files: &PluginFiles) -> io::Result<PathBuf> {
    let target = plugin_dir(root, team, name)?;
    let team_dir = root.join(team.as_str());
    create_dir_durably(&team_dir)?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.staging-"))
        .tempdir_in(&team_dir)?;
    write_synced(
        &staging.path().join(MANIFEST_FILE),
        files.manifest.as_bytes(),
    )?;
    if let Some(wasm) = &files.wasm {
        write_synced(&staging.path().join(format!("{name}.wasm")), wasm)?;
    }
    sync_dir(staging.path())?;

    let old = team_dir.join(format!(".{name}.old"));
    if old.exists() {
        fs::remove_dir_all(&old)?;
    }
    if target.exists() {
        fs::rename(&target, &old)?;
    }
    fs::rename(staging.keep(), &target)?;
    sync_dir(&team_dir)?;
    let _ = fs::remove_dir_all(&old);
    Ok(target)
}

/// Removes `<root>/<team>/<name>/` durably. Returns whether it existed.
pub fn remove(root: &Path, team: &Name, name: &Name) -> io::Result<bool> {
    let target = plugin_dir(root, team, name)?;
    let team_dir = root.join(team.as_str());
    if !target.exists() {
        return Ok(false);
    }
    let doomed = team_dir.join(format!(".{name}.deleted"));
    if doomed.exists() {
        fs::remove_dir_all(&doomed)?;
    }
    fs::rename(&target, &doomed)?;
    sync_dir(&team_dir)?;
    let _ = fs::remove_dir_all(&doomed);
    Ok(true)
}

/// Finishes what a crash interrupted: a replaced folder whose successor did
/// not land is put back, and leftover scratch is removed.
pub fn recover(root: &Path) {
    let teams = fs::read_dir(root).into_iter().flatten().flatten();
    for team in teams.filter(|entry| entry.path().is_dir()) {
        let team_dir = team.path();
        let entries = fs::read_dir(&team_dir).into_iter().flatten().flatten();
        for entry in entries {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let Some(scratch) = file_name.strip_prefix('.') else {
                continue;
            };
            let path = entry.path();
            if let Some(name) = scratch.strip_suffix(".old")
                && !team_dir.join(name).exists()
            {
                tracing::warn!(path = %path.display(), "restoring a plugin folder whose replacement was interrupted");
                let _ = fs::rename(&path, team_dir.join(name));
                let _ = sync_dir(&team_dir);
            } else {
                let _ = fs::remove_dir_all(&path);
            }
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents, syncing each parent that gained
/// an entry so the new folders survive a crash.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_durably(parent)?;
        fs::create_dir(dir).or_else(|err| match err.kind() {
            io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(err),
        })?;
        sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &'static str) -> Name {
        Name::from_static(text)
    }

    fn files(version: &str) -> PluginFiles {
        PluginFiles {
            manifest: format!("version = \"{version}\""),
            wasm: Some(version.as_bytes().to_vec()),
        }
    }

    #[test]
    fn write_replaces_the_folder_whole() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), &n("ops"), &n("probe"), &files("1")).unwrap();
        let dir = write(root.path(), &n("ops"), &n("probe"), &files("2")).unwrap();
        let read_back = read(&dir).unwrap();
        assert_eq!(read_back.manifest, "version = \"2\"");
        assert_eq!(read_back.wasm.as_deref(), Some(&b"2"[..]));
        assert_eq!(plugin_dirs(root.path()), vec![dir.clone()]);
        // A version without a component of its own leaves no .wasm behind.
        let bare = PluginFiles {
            manifest: "component = \"core/command\"".into(),
            wasm: None,
        };
        write(root.path(), &n("ops"), &n("probe"), &bare).unwrap();
        assert_eq!(read(&dir).unwrap().wasm, None);
        fs::write(dir.join("a.wasm"), b"a").unwrap();
        fs::write(dir.join("b.wasm"), b"b").unwrap();
        assert!(read(&dir).err().unwrap().message.contains("found 2"));
    }

    #[test]
    fn recover_restores_an_interrupted_replacement() {
        let root = tempfile::tempdir().unwrap();
        let dir = write(root.path(), &n("ops"), &n("probe"), &files("1")).unwrap();
        // A crash between renaming the old folder away and the new one in.
        fs::rename(&dir, root.path().join("ops/.probe.old")).unwrap();
        fs::create_dir(root.path().join("ops/.probe.staging-x")).unwrap();
        assert!(plugin_dirs(root.path()).is_empty());
        recover(root.path());
        assert_eq!(read(&dir).unwrap().manifest, "version = \"1\"");
        assert_eq!(fs::read_dir(root.path().join("ops")).unwrap().count(), 1);
    }

    #[test]
    fn remove_deletes_and_reports() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), &n("ops"), &n("probe"), &files("1")).unwrap();
        assert!(remove(root.path(), &n("ops"), &n("probe")).unwrap());
        assert!(!remove(root.path(), &n("ops"), &n("probe")).unwrap());
        assert!(plugin_dirs(root.path()).is_empty());
    }

    #[test]
    fn owner_of_skips_scratch() {
        let root = Path::new("/data/plugins");
        assert_eq!(
            owner_of(root, Path::new("/data/plugins/ops/probe/plugin.toml")),
            Some((n("ops"), n("probe")))
        );
        assert_eq!(
            owner_of(root, Path::new("/data/plugins/ops/bad.name/x")),
            None
        );
        assert_eq!(
            owner_of(root, Path::new("/data/plugins/ops/.probe.old/x")),
            None
        );
        assert_eq!(owner_of(root, Path::new("/data/plugins/ops")), None);
        assert_eq!(owner_of(root, Path::new("/elsewhere/ops/probe")), None);
    }
}
