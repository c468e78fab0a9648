//! Attempts in flight: who runs what, how to stop it, and who writes what
//! comes after it.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// One attempt in flight.
#[derive(Debug)]
struct Running {
    attempt: u32,
    holder: String,
    call: Option<AbortHandle>,
}

/// An attempt taken out of the table by [`Attempts::stop`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// Its number.
    pub attempt: u32,
    /// Who ran it (a worker, a check loop, …).
    pub holder: String,
}

/// The attempts in flight of one kind of work, keyed by what they work on,
/// with the load each holder carries.
///
/// The table settles who writes an attempt's outcome when the attempt itself
/// and a stop from outside (cancel, deadline, restart, shutdown) race:
/// whoever removes the entry owns the outcome, through
/// [`Attempts::finish`] for the attempt and [`Attempts::stop`] for the rest.
/// An entry carries its attempt number, so an attempt stopped before it
/// started, or a stale one, can tell it no longer owns anything.
#[derive(Debug)]
pub struct Attempts<K> {
    running: HashMap<K, Running>,
    load: HashMap<String, usize>,
}

impl<K> Default for Attempts<K> {
    fn default() -> Self {
        Self {
            running: HashMap::new(),
            load: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Attempts<K> {
    /// Records that `holder` runs attempt `attempt` of `key`. The call
    /// itself is attached once spawned.
    pub fn claim(&mut self, key: K, attempt: u32, holder: &str) {
        *self.load.entry(holder.to_owned()).or_default() += 1;
        let previous = self.running.insert(
            key,
            Running {
                attempt,
                holder: holder.to_owned(),
                call: None,
            },
        );
        if let Some(previous) = previous {
            self.release(&previous.holder);
        }
    }

    /// Gives back a claim that never started (e.g. it could not be recorded).
    pub fn unclaim(&mut self, key: &K, attempt: u32) -> bool {
        self.finish(key, attempt)
    }

    /// Attaches the spawned call of attempt `attempt`, so that a stop can
    /// abort it. Returns false when the attempt was stopped in the
    /// meantime; the call is then aborted here.
    ///
    /// Attach before the call can reach [`Attempts::finish`] (spawn and
    /// attach under the lock around this table, which the call takes
    /// first): a call that finished on its own before being attached would
    /// be taken for a stopped one and aborted while writing its outcome.
    pub fn attach(&mut self, key: &K, attempt: u32, call: AbortHandle) -> bool {
        match self.running.get_mut(key) {
            Some(running) if running.attempt == attempt => {
                running.call = Some(call);
                true
            }
            _ => {
                call.abort();
                false
            }
        }
    }

    /// True while attempt `attempt` of `key` is the one in flight.
    pub fn is_current(&self, key: &K, attempt: u32) -> bool {
        self.running
            .get(key)
            .is_some_and(|running| running.attempt == attempt)
    }

    /// Called by an attempt that ended: removes its entry if it is still the
    /// current one. True means the caller owns writing the outcome; false
    /// means a stop took it first and writes instead.
    pub fn finish(&mut self, key: &K, attempt: u32) -> bool {
        if !self.is_current(key, attempt) {
            return false;
        }
        if let Some(running) = self.running.remove(key) {
            self.release(&running.holder);
        }
        true
    }

    /// Stops the attempt in flight on `key`, aborting its call (which drops
    /// a plugin call in progress at its next yield). The caller owns
    /// writing the outcome.
    pub fn stop(&mut self, key: &K) -> Option<Stopped> {
        let running = self.running.remove(key)?;
        if let Some(call) = &running.call {
            call.abort();
        }
        self.release(&running.holder);
        Some(Stopped {
            attempt: running.attempt,
            holder: running.holder,
        })
    }

    /// Stops every attempt `holder` runs; see [`Attempts::stop`].
    pub fn stop_held_by(&mut self, holder: &str) -> Vec<(K, Stopped)> {
        let keys: Vec<K> = self
            .running
            .iter()
            .filter(|(_, running)| running.holder == holder)
            .map(|(key, _)| key.clone())
            .collect();
        keys.into_iter()
            .filter_map(|key| Some((key.clone(), self.stop(&key)?)))
            .collect()
    }

    /// Aborts every call in flight without taking its entry: at shutdown,
    /// what was running stays running in the store and runs again after the
    /// next start (delivery is at least once).
    pub fn abort_all(&self) {
        for running in self.running.values() {
            if let Some(call) = &running.call {
                call.abort();
            }
        }
    }

    /// Attempts `holder` runs now.
    pub fn load_of(&self, holder: &str) -> usize {
        self.load.get(holder).copied().unwrap_or(0)
    }

    /// Attempts in flight.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// True when nothing runs.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    fn release(&mut self, holder: &str) {
        if let Some(load) = self.load.get_mut(holder) {
            *load -= 1;
            if *load == 0 {
                self.load.remove(holder);
            }
        }
    }
}

/// Waits until `running()` says no attempt is in flight, looking again
/// each time `ended` is told an attempt ended, for at most `grace`.
/// Returns how many still run when the grace ran out (0: all ended). For
/// a shutdown: the caller then aborts the rest.
pub async fn wait_until_idle(
    grace: Duration,
    ended: &Notify,
    running: impl Fn() -> usize,
) -> usize {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        // Registered before looking, so an end between the two is not missed.
        let next_end = ended.notified();
        let left = running();
        if left == 0 {
            return 0;
        }
        if tokio::time::timeout_at(deadline, next_end).await.is_err() {
            return running();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::pending;

    use super::*;

    #[test]
    fn the_attempt_that_finishes_first_owns_its_outcome_once() {
        let mut attempts = Attempts::default();
        attempts.claim("t1", 1, "w1");
        assert_eq!(attempts.load_of("w1"), 1);
        assert!(attempts.finish(&"t1", 1));
        assert!(!attempts.finish(&"t1", 1), "only once");
        assert!(attempts.stop(&"t1").is_none(), "nothing left to stop");
        assert_eq!(attempts.load_of("w1"), 0);
    }

    #[test]
    fn a_stopped_attempt_no_longer_owns_its_outcome() {
        let mut attempts = Attempts::default();
        attempts.claim("t1", 2, "w1");
        assert_eq!(
            attempts.stop(&"t1"),
            Some(Stopped {
                attempt: 2,
                holder: "w1".into()
            })
        );
        assert!(!attempts.finish(&"t1", 2));
        assert_eq!(attempts.load_of("w1"), 0);
    }

    #[test]
    fn a_stale_attempt_cannot_take_the_next_one() {
        let mut attempts = Attempts::default();
        attempts.claim("t1", 1, "w1");
        attempts.stop(&"t1");
        attempts.claim("t1", 2, "w2");
        assert!(!attempts.is_current(&"t1", 1));
        assert!(!attempts.finish(&"t1", 1));
        assert!(attempts.finish(&"t1", 2));
    }

    #[test]
    fn stopping_a_holder_stops_only_its_attempts() {
        let mut attempts = Attempts::default();
        attempts.claim("a", 1, "w1");
        attempts.claim("b", 1, "w2");
        attempts.claim("c", 1, "w1");
        let mut stopped: Vec<&str> = attempts
            .stop_held_by("w1")
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        stopped.sort();
        assert_eq!(stopped, ["a", "c"]);
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts.load_of("w2"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_idle_ends_with_the_last_attempt_or_the_grace() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        let running = Arc::new(AtomicUsize::new(2));
        let ended = Arc::new(Notify::new());
        let (count, told) = (running.clone(), ended.clone());
        tokio::spawn(async move {
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                count.fetch_sub(1, Ordering::SeqCst);
                told.notify_waiters();
            }
        });
        let started = tokio::time::Instant::now();
        let left = wait_until_idle(Duration::from_secs(10), &ended, || {
            running.load(Ordering::SeqCst)
        })
        .await;
        assert_eq!((left, started.elapsed()), (0, Duration::from_secs(2)));

        running.store(1, Ordering::SeqCst);
        let left = wait_until_idle(Duration::from_secs(3), &ended, || {
            running.load(Ordering::SeqCst)
        })
        .await;
        assert_eq!(left, 1, "the grace ran out with one still running");
    }

    #[tokio::test]
    async fn stopping_aborts_the_attached_call() {
        let mut attempts = Attempts::default();
        attempts.claim("t1", 1, "w1");
        let call = tokio::spawn(pending::<()>());
        assert!(attempts.attach(&"t1", 1, call.abort_handle()));
        attempts.stop(&"t1");
        assert!(call.await.unwrap_err().is_cancelled());
    }

    #[tokio::test]
    async fn a_call_attached_after_its_stop_is_aborted_at_once() {
        let mut attempts = Attempts::default();
        attempts.claim("t1", 1, "w1");
        attempts.stop(&"t1");
        let call = tokio::spawn(pending::<()>());
        assert!(!attempts.attach(&"t1", 1, call.abort_handle()));
        assert!(call.await.unwrap_err().is_cancelled());
    }
}
