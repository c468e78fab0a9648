//! Keeping a plugin's compiled code out of memory while nobody calls it.
//!
//! A compiled plugin is mapped from its cached artifact: clean pages of a
//! file, which count in the host's resident memory once touched. Loading
//! touches most of them (wasmtime reads the metadata, a capability plugin
//! answers `describe`, and the kernel maps the cached pages around every
//! page touched), so a host with many plugins would hold all their code
//! from start-up on, called or not. Instead the code is handed back to the
//! kernel right after the load, and again whenever a plugin has not been
//! called for a whole [`IDLE_AFTER`]. Its next call reads the pages it runs
//! back from the file (about a millisecond for a first call, measured in
//! BENCHMARKS.md); a plugin called more often than that keeps its code.
//!
//! `MADV_PAGEOUT` only reclaims: a clean page is dropped and read again on
//! its next use, a page the process wrote to is swapped out or left alone,
//! and nothing is ever lost. Elsewhere than Linux this does nothing.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::component::Component;

use super::Plugins;
use crate::engine::{Loops, Shutdown};

/// How long a plugin goes uncalled before its code is handed back.
pub const IDLE_AFTER: Duration = Duration::from_secs(60);

/// Where one loaded version's code lives, and whether it is handed back.
///
/// Held by the loaded plugin, which owns the component: the range stays
/// mapped for as long as this exists.
#[derive(Debug)]
pub(super) struct CodePages {
    range: Range<usize>,
    /// The plugin's call count at the last sweep.
    calls_seen: AtomicU64,
    /// Whether the pages were handed back and no call came since.
    released: AtomicBool,
}

impl CodePages {
    /// The code of `component`, handed back at once: what the load
    /// touched is not what its calls will need.
    pub(super) fn released_after_load(component: &Component, calls: u64) -> Self {
        let range = component.image_range();
        let pages = Self {
            range: range.start as usize..range.end as usize,
            calls_seen: AtomicU64::new(calls),
            released: AtomicBool::new(false),
        };
        pages.release();
        pages
    }

    /// One sweep, given the plugin's call count now: hands the code back
    /// if no call came since the last sweep and it is not already. Returns
    /// whether it did.
    pub(super) fn sweep(&self, calls: u64) -> bool {
        if self.calls_seen.swap(calls, Ordering::Relaxed) != calls {
            self.released.store(false, Ordering::Relaxed);
            return false;
        }
        if self.released.load(Ordering::Relaxed) {
            return false;
        }
        self.release();
        true
    }

    fn release(&self) {
        self.released.store(true, Ordering::Relaxed);
        page_out(&self.range);
    }
}

/// Asks the kernel to reclaim the pages of `range` now.
#[cfg(target_os = "linux")]
fn page_out(range: &Range<usize>) {
    // madvise wants a start aligned to the kernel's page size (4 KiB on
    // x86-64, up to 64 KiB on some arm64 kernels); the end may be anywhere.
    // SAFETY: sysconf only reads a system setting.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        size if size > 0 => size as usize,
        _ => 4096,
    };
    let start = range.start & !(page - 1);
    if range.end <= start {
        return;
    }
    // SAFETY: the range is a mapping wasmtime made for a component that is
    // still alive (see `CodePages`). MADV_PAGEOUT changes no contents: clean
    // pages are read back from their file, written ones are swapped or
    // kept. A kernel without it (before 5.4) returns EINVAL, which only
    // means the pages stay.
    let result = unsafe {
        libc::madvise(
            start as *mut libc::c_void,
            range.end - start,
            libc::MADV_PAGEOUT,
        )
    };
    if result != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "cannot hand plugin code back to the kernel"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn page_out(_range: &Range<usize>) {}

impl Plugins {
    /// One sweep over the loaded plugins: hands back the code of those not
    /// called since the last sweep. Returns how many were handed back.
    fn release_idle_code(&self) -> usize {
        let loaded: Vec<_> = self
            .loaded
            .read()
            .expect("plugin registry poisoned")
            .values()
            .cloned()
            .collect();
        loaded
            .iter()
            .filter(|plugin| plugin.code.sweep(plugin.stats.calls()))
            .count()
    }
}

/// Starts the loop that hands back the code of plugins left uncalled.
pub fn start(plugins: Arc<Plugins>, loops: &Loops) {
    loops.spawn("plugin-code-release", move |shutdown| {
        release_idle_forever(plugins, shutdown)
    });
}

async fn release_idle_forever(plugins: Arc<Plugins>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(IDLE_AFTER) => {}
        }
        let released = plugins.release_idle_code();
        if released > 0 {
            tracing::debug!(
                plugins = released,
                "handed idle plugins' code back to the kernel"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages with nothing to hand back, as after a load with `calls`.
    fn after_load(calls: u64) -> CodePages {
        CodePages {
            range: 0..0,
            calls_seen: AtomicU64::new(calls),
            released: AtomicBool::new(true),
        }
    }

    #[test]
    fn code_goes_back_after_a_whole_sweep_without_calls() {
        let code = after_load(5);
        assert!(!code.sweep(5), "already handed back at load");
        assert!(!code.sweep(6), "called since: kept");
        assert!(code.sweep(6), "no call for a whole sweep: handed back");
        assert!(!code.sweep(6), "handed back once");
        assert!(!code.sweep(9), "called again: kept");
        assert!(!code.sweep(12), "still called: kept");
        assert!(code.sweep(12));
    }
}
