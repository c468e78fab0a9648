//! The clock timed work reads: wall time as the API shows it, advanced by
//! tokio's monotonic time.

use std::time::Duration;

use tokio::time::Instant;

use crate::clock::Timestamp;

/// Wall-clock time for timers, read from tokio's clock.
///
/// The wall clock is read once, when the `Clock` is made; after that `now`
/// adds the tokio time elapsed since. Two things follow. Under
/// `tokio::time::pause()` the clock stands still and jumps with
/// `tokio::time::advance` (or with the runtime's auto-advance while every
/// task sleeps), so time-driven logic is tested without sleeping. And a
/// step of the system clock (an NTP correction, an operator's `date -s`)
/// neither fires every timer at once nor stalls them: timers follow elapsed
/// time. Timestamps written by the work stay comparable with the stored ones
/// across restarts, because each start reads the wall clock afresh.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_at_origin: Timestamp,
    origin: Instant,
}

impl Clock {
    /// A clock that starts at the current wall time.
    pub fn new() -> Self {
        Self::starting_at(Timestamp::now())
    }

    /// A clock that reads `wall` now; for tests that need a known date.
    pub fn starting_at(wall: Timestamp) -> Self {
        Self {
            wall_at_origin: wall,
            origin: Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        self.wall_at_origin.plus(self.origin.elapsed())
    }

    /// The tokio instant at which this clock will read `at` (now, if `at`
    /// has passed).
    pub fn instant_of(&self, at: Timestamp) -> Instant {
        let from_origin = at.since(self.wall_at_origin);
        self.origin
            .checked_add(from_origin)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365))
            .max(Instant::now())
    }

    /// Waits until the clock reads `at`.
    pub async fn sleep_until(&self, at: Timestamp) {
        tokio::time::sleep_until(self.instant_of(at)).await;
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_tokio_time_not_the_system_clock() {
        let start = Timestamp::parse_deadline("2030-01-01T00:00:00Z").unwrap();
        let clock = Clock::starting_at(start);
        assert_eq!(clock.now(), start);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), start.plus(Duration::from_secs(90)));
    }

    #[tokio::test(start_paused = true)]
    async fn sleeping_until_a_moment_wakes_exactly_then() {
        let clock = Clock::new();
        let at = clock.now().plus(Duration::from_millis(1500));
        clock.sleep_until(at).await;
        assert_eq!(clock.now(), at);
    }

    #[tokio::test(start_paused = true)]
    async fn a_moment_in_the_past_is_due_at_once() {
        let clock = Clock::new();
        let before = Instant::now();
        clock.sleep_until(Timestamp::EARLIEST).await;
        assert_eq!(Instant::now(), before);
    }
}
