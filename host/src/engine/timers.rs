//! Timers kept in memory over durable due times.

use std::collections::BTreeSet;

use crate::clock::Timestamp;

/// A set of timers, each a due time and the key of what it is for, served
/// earliest first.
///
/// Timers are a cache: the due time is a field of a stored record (a task's
/// `notBefore` or `deadline`), written before the timer is set, and a module
/// sets its timers again from its records when it opens. So a timer survives
/// a restart, and a timer that came due while the host was down fires on the
/// first pass after the start.
#[derive(Debug)]
pub struct Timers<K: Ord> {
    due: BTreeSet<(Timestamp, K)>,
}

impl<K: Ord> Default for Timers<K> {
    fn default() -> Self {
        Self {
            due: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone> Timers<K> {
    /// Sets a timer for `key` at `at`. A key may have several timers.
    pub fn set(&mut self, at: Timestamp, key: K) {
        self.due.insert((at, key));
    }

    /// Removes the timer for `key` at `at`; true if there was one.
    pub fn cancel(&mut self, at: Timestamp, key: &K) -> bool {
        self.due.remove(&(at, key.clone()))
    }

    /// Removes and returns the keys of every timer due at `now` or before,
    /// earliest first.
    pub fn take_due(&mut self, now: Timestamp) -> Vec<K> {
        let mut fired = Vec::new();
        while let Some((at, _)) = self.due.first() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.due.pop_first() {
                fired.push(key);
            }
        }
        fired
    }

    /// When the earliest timer is due.
    pub fn next(&self) -> Option<Timestamp> {
        self.due.first().map(|(at, _)| *at)
    }

    /// How many timers are set.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// True when no timer is set.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(seconds: u64) -> Timestamp {
        Timestamp::EARLIEST.plus(Duration::from_secs(seconds))
    }

    #[test]
    fn fires_what_is_due_earliest_first_and_keeps_the_rest() {
        let mut timers = Timers::default();
        timers.set(at(30), "c");
        timers.set(at(10), "a");
        timers.set(at(20), "b");
        assert_eq!(timers.next(), Some(at(10)));
        assert_eq!(timers.take_due(at(20)), ["a", "b"]);
        assert_eq!(timers.next(), Some(at(30)));
        assert!(timers.take_due(at(29)).is_empty());
        assert_eq!(timers.take_due(at(1000)), ["c"]);
        assert!(timers.is_empty());
    }

    #[test]
    fn a_cancelled_timer_never_fires() {
        let mut timers = Timers::default();
        timers.set(at(5), "a");
        timers.set(at(5), "b");
        assert!(timers.cancel(at(5), &"a"));
        assert!(
            !timers.cancel(at(6), &"b"),
            "only the timer at its own time"
        );
        assert_eq!(timers.take_due(at(5)), ["b"]);
    }
}
