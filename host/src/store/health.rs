//! Whether the store can take writes, and the episodes when it could not.
//!
//! These are the pure parts of surviving a storage fault (a full disk, an
//! I/O error): the state an episode keeps, what the API and `/status` see of
//! it, and how long to wait between attempts to reopen the database. The
//! engine (see `redb_backend`) drives them.

use std::time::{Duration, Instant};

use crate::clock::Timestamp;

/// Whether the store takes writes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageStatus {
    /// Reads and writes work.
    Ok,
    /// A commit failed on a storage fault; writes are refused until the
    /// database has been reopened and a probe write succeeded.
    Unavailable,
}

/// What `/status` shows of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    /// Whether the store takes writes now.
    pub status: StorageStatus,
    /// When the current episode began; `None` while the store is ok.
    pub since: Option<Timestamp>,
    /// The last storage error of the current episode; `None` while ok.
    pub last_error: Option<String>,
}

impl StoreHealth {
    /// A store that works.
    pub const OK: Self = Self {
        status: StorageStatus::Ok,
        since: None,
        last_error: None,
    };
}

/// How an episode ended, for the one line that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EpisodeEnd {
    /// How long writes were refused.
    pub duration: Duration,
    /// How many writes were refused meanwhile (the failed commit's included).
    pub refused: u64,
}

/// The current fault episode, if any. One episode runs from the first
/// failed commit to the first successful probe after a reopen, however many
/// writes fail or reopen attempts are made in between; it is logged once
/// when it begins and once when it ends.
#[derive(Debug, Default)]
pub(crate) struct Episodes {
    current: Option<Episode>,
}

#[derive(Debug)]
struct Episode {
    since: Timestamp,
    started: Instant,
    last_error: String,
    refused: u64,
}

impl Episodes {
    /// Records a storage fault. Returns true when it begins a new episode
    /// (the caller logs it then, and only then).
    pub fn fail(&mut self, now: Timestamp, started: Instant, error: String) -> bool {
        match &mut self.current {
            Some(episode) => {
                episode.last_error = error;
                false
            }
            None => {
                self.current = Some(Episode {
                    since: now,
                    started,
                    last_error: error,
                    refused: 0,
                });
                true
            }
        }
    }

    /// Counts writes refused during the episode; nothing outside one.
    pub fn refuse(&mut self, writes: u64) {
        if let Some(episode) = &mut self.current {
            episode.refused += writes;
        }
    }

    /// Ends the episode, if one runs, and says how it went.
    pub fn recover(&mut self, now: Instant) -> Option<EpisodeEnd> {
        self.current.take().map(|episode| EpisodeEnd {
            duration: now.saturating_duration_since(episode.started),
            refused: episode.refused,
        })
    }

    /// What `/status` shows.
    pub fn health(&self) -> StoreHealth {
        match &self.current {
            None => StoreHealth::OK,
            Some(episode) => StoreHealth {
                status: StorageStatus::Unavailable,
                since: Some(episode.since),
                last_error: Some(episode.last_error.clone()),
            },
        }
    }
}

/// Delays between attempts to reopen the database: 100 ms, doubling, at
/// most 5 s. Short first, because most faults (a file briefly locked, space
/// freed at once) clear fast; capped, so a disk freed after an hour is
/// noticed within seconds.
pub(crate) const REOPEN_BACKOFF: crate::engine::Backoff = crate::engine::Backoff {
    base: Duration::from_millis(100),
    max: Duration::from_secs(5),
};

/// Whole seconds a client should wait before retrying, for `Retry-After`:
/// the delay rounded up, at least 1 (the header takes whole seconds, and 0
/// would invite a busy loop).
pub(crate) fn retry_after_secs(delay: Duration) -> u64 {
    delay.as_millis().div_ceil(1000).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: u64) -> Timestamp {
        Timestamp::EARLIEST.plus(Duration::from_secs(second))
    }

    #[test]
    fn an_episode_begins_once_however_many_faults_it_sees() {
        let mut episodes = Episodes::default();
        let start = Instant::now();
        assert_eq!(episodes.health(), StoreHealth::OK);
        assert!(episodes.fail(at(1), start, "disk full".into()));
        assert!(!episodes.fail(at(2), start, "still full".into()));
        assert!(!episodes.fail(at(3), start, "Previous I/O error".into()));
        let health = episodes.health();
        assert_eq!(health.status, StorageStatus::Unavailable);
        // The episode keeps its first moment and its latest error.
        assert_eq!(health.since, Some(at(1)));
        assert_eq!(health.last_error.as_deref(), Some("Previous I/O error"));
    }

    #[test]
    fn recovery_reports_the_duration_and_the_refused_writes_once() {
        let mut episodes = Episodes::default();
        let start = Instant::now();
        // Outside an episode nothing is counted.
        episodes.refuse(7);
        episodes.fail(at(1), start, "disk full".into());
        episodes.refuse(3);
        episodes.refuse(2);
        let end = episodes
            .recover(start + Duration::from_secs(4))
            .expect("an episode ran");
        assert_eq!(
            end,
            EpisodeEnd {
                duration: Duration::from_secs(4),
                refused: 5
            }
        );
        assert_eq!(episodes.health(), StoreHealth::OK);
        assert_eq!(episodes.recover(Instant::now()), None);
        // The next fault is a new episode, counted from zero.
        assert!(episodes.fail(at(9), start, "disk full".into()));
        assert_eq!(episodes.recover(start).map(|end| end.refused), Some(0));
    }

    #[test]
    fn reopening_backs_off_from_100_ms_to_at_most_5_s() {
        let delays: Vec<u64> = (1..=9)
            .map(|attempt| REOPEN_BACKOFF.after(attempt).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn retry_after_is_whole_seconds_and_never_zero() {
        assert_eq!(retry_after_secs(Duration::from_millis(100)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1600)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(5)), 5);
    }
}
