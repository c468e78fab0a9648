//! Retention: deleting finished records once they are older than the time
//! they are kept, so that the store and every list stay as large as the
//! recent past, not the whole history.
//!
//! Each subsystem keeps its finished records under a time index (see
//! [`crate::store::time_key`]) and hands [`prune_forever`] a function that
//! deletes one chunk of them before a cutoff. Totals behind `/status` and
//! `/metrics` are counters of their own, so they stay right.

use std::future::Future;
use std::time::Duration;

use super::{Clock, Shutdown};
use crate::clock::Timestamp;
use crate::store::{Indexed, IndexedTable, StoreError, time_key};

/// How long finished records are kept by default.
pub const RETENTION_DEFAULT: Duration = Duration::from_secs(30 * 86_400);

/// Records deleted per batch: small enough that the store's writer
/// interleaves other batches between them.
pub const PRUNE_CHUNK: usize = 256;

/// How often retention looks for records past their age.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The retention loop of an indexed table whose finished records carry
/// `field`, a time index (see [`time_key`]): a record whose `field` is
/// older than `retention` is deleted, a chunk at a time, with its index
/// entries. Every subsystem that keeps finished records uses this.
pub async fn prune_table_forever<T: Indexed + Send + Sync + 'static>(
    what: &'static str,
    table: IndexedTable<T>,
    field: &'static str,
    clock: Clock,
    retention: Duration,
    shutdown: Shutdown,
) {
    prune_forever(what, clock, retention, shutdown, move |cutoff| {
        let table = table.clone();
        async move {
            table
                .prune_before(field, &time_key(cutoff), PRUNE_CHUNK)
                .await
        }
    })
    .await
}

/// The retention loop: at start and then every [`PRUNE_EVERY`], calls
/// `prune_chunk(cutoff)` (which deletes up to [`PRUNE_CHUNK`] records that
/// finished before `cutoff` and says how many it deleted) until a chunk
/// comes back short. `what` names the records in log lines.
pub async fn prune_forever<F, Fut>(
    what: &'static str,
    clock: Clock,
    retention: Duration,
    mut shutdown: Shutdown,
    mut prune_chunk: F,
) where
    F: FnMut(Timestamp) -> Fut,
    Fut: Future<Output = Result<usize, StoreError>>,
{
    loop {
        let cutoff = Timestamp::EARLIEST.max(clock.now().minus(retention));
        let mut pruned = 0;
        loop {
            if shutdown.is_requested() {
                return;
            }
            match prune_chunk(cutoff).await {
                Ok(deleted) => {
                    pruned += deleted;
                    if deleted < PRUNE_CHUNK {
                        break;
                    }
                }
                Err(err) if err.is_unavailable() => {
                    // The store's episode has its own ERROR line.
                    tracing::warn!(error = %err, records = what, "could not prune finished records; trying again later");
                    break;
                }
                Err(err) => {
                    tracing::error!(error = %err, records = what, "could not prune finished records; trying again later");
                    break;
                }
            }
            // Let other work in between chunks.
            tokio::task::yield_now().await;
        }
        if pruned > 0 {
            tracing::info!(records = what, deleted = pruned, finished_before = %cutoff, "finished records past retention deleted");
        }
        tokio::select! {
            () = shutdown.requested() => return,
            () = clock.sleep_until(clock.now().plus(PRUNE_EVERY)) => {}
        }
    }
}
