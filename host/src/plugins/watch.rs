//! Hot loading: watches the plugin folders and brings each changed plugin
//! in line with its folder.
//!
//! File events are debounced (an editor or `cp` makes several in a row) and
//! mapped to the plugins whose folders they touch; each such plugin is then
//! synced through [`Plugins::sync_folder`], which loads a changed folder,
//! removes the plugin of a deleted one and ignores one whose files are what
//! already serves (such as the folder an upload just wrote).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_mini::notify::{self, RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use tokio::sync::mpsc;

use super::{Plugins, folder};
use crate::engine::{Loops, Shutdown};
use crate::names::Name;

/// How long the folder must stay quiet before a change is loaded.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// Hot loading of the plugin folders, run as one of the app's loops.
pub struct FolderWatcher;

/// A plugin folder, or a whole team's folder, that changed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Touched {
    Plugin(Name, Name),
    Team(Name),
}

fn touched(root: &Path, path: &Path) -> Option<Touched> {
    if let Some((team, name)) = folder::owner_of(root, path) {
        return Some(Touched::Plugin(team, name));
    }
    let mut parts = path.strip_prefix(root).ok()?.components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(team)), None) => {
            Some(Touched::Team(Name::parse(team.to_str()?).ok()?))
        }
        _ => None,
    }
}

impl FolderWatcher {
    /// Watches `plugins`' folder root (creating it if needed) and syncs
    /// every plugin whose folder changes, on `loops` until shutdown. Does
    /// nothing for plugins without folders. Must be called inside the tokio
    /// runtime.
    pub fn start(plugins: Arc<Plugins>, loops: &Loops) -> notify::Result<()> {
        let Some(root) = plugins.folders().map(Path::to_path_buf) else {
            return Ok(());
        };
        std::fs::create_dir_all(&root).map_err(notify::Error::io)?;
        // Events carry absolute paths; compare them with an absolute root,
        // or a relative data dir (the default `./data`) would match nothing.
        let root = std::fs::canonicalize(&root).map_err(notify::Error::io)?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let event_root = root.clone();
        let mut debouncer =
            new_debouncer(DEBOUNCE, move |events: DebounceEventResult| match events {
                Ok(events) => {
                    let changed: BTreeSet<Touched> = events
                        .iter()
                        .filter_map(|event| touched(&event_root, &event.path))
                        .collect();
                    if !changed.is_empty() {
                        let _ = sender.send(changed);
                    }
                }
                Err(err) => tracing::error!(error = %err, "watching plugin folders failed"),
            })?;
        debouncer.watcher().watch(&root, RecursiveMode::Recursive)?;
        tracing::info!(path = %root.display(), "watching plugin folders for changes");
        loops.spawn("plugin-folder-watcher", move |shutdown| {
            sync_changes(plugins, root, receiver, debouncer, shutdown)
        });
        Ok(())
    }
}

async fn sync_changes(
    plugins: Arc<Plugins>,
    root: PathBuf,
    mut changes: mpsc::UnboundedReceiver<BTreeSet<Touched>>,
    // Held for as long as the loop runs: dropping it stops the watch.
    _debouncer: Debouncer<RecommendedWatcher>,
    mut shutdown: Shutdown,
) {
    loop {
        let changed = tokio::select! {
            () = shutdown.requested() => break,
            changed = changes.recv() => match changed {
                Some(changed) => changed,
                None => break,
            },
        };
        let mut wanted = BTreeSet::new();
        for touched in changed {
            match touched {
                Touched::Plugin(team, name) => {
                    wanted.insert((team, name));
                }
                Touched::Team(team) => {
                    // A team folder appeared or vanished whole: look at both
                    // what is on disk and what is loaded for it.
                    for dir in folder::plugin_dirs(&root) {
                        if let Some((t, name)) = folder::owner_of(&root, &dir)
                            && t == team
                        {
                            wanted.insert((t, name));
                        }
                    }
                    for name in plugins.names_of(&team) {
                        wanted.insert((team.clone(), name));
                    }
                }
            }
        }
        for (team, name) in wanted {
            // Failures are logged and recorded on the plugin by sync_folder.
            let _ = plugins.sync_folder(&team, &name).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_map_to_plugins_and_teams() {
        let root = Path::new("/d/plugins");
        assert_eq!(
            touched(root, Path::new("/d/plugins/ops/probe/probe.wasm")),
            Some(Touched::Plugin(
                Name::from_static("ops"),
                Name::from_static("probe")
            ))
        );
        assert_eq!(
            touched(root, Path::new("/d/plugins/ops")),
            Some(Touched::Team(Name::from_static("ops")))
        );
        assert_eq!(touched(root, Path::new("/d/plugins/ops/.probe.old")), None);
        assert_eq!(touched(root, Path::new("/d/plugins")), None);
    }
}
