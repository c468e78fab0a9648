//! How long to wait before the next attempt.

use std::time::Duration;

/// Exponential backoff: `base` before the second attempt, doubling for each
/// further one, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait before the second attempt.
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The wait before the attempt after attempt number `attempts_made`
    /// (1 for the first attempt). Zero attempts made means no wait.
    pub fn after(&self, attempts_made: u32) -> Duration {
        if attempts_made == 0 {
            return Duration::ZERO;
        }
        let factor = 2u32.saturating_pow(attempts_made - 1);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// The outcome of one failed attempt under a limit of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again after this long.
    After(Duration),
    /// The attempts are used up (or a retry cannot help): give up.
    GiveUp,
}

/// Whether and when a failed attempt is tried again: only when its failure
/// is `retryable` and fewer than `max_attempts` attempts were made.
pub fn next_attempt(
    backoff: &Backoff,
    attempts_made: u32,
    max_attempts: u32,
    retryable: bool,
) -> Retry {
    if retryable && attempts_made < max_attempts {
        Retry::After(backoff.after(attempts_made))
    } else {
        Retry::GiveUp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Backoff = Backoff {
        base: Duration::from_millis(500),
        max: Duration::from_secs(60),
    };

    #[test]
    fn doubles_from_the_base_up_to_the_cap() {
        let waits: Vec<u64> = (1..=9)
            .map(|n| POLICY.after(n).as_millis() as u64)
            .collect();
        assert_eq!(
            waits,
            [
                500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000
            ]
        );
    }

    #[test]
    fn huge_attempt_counts_saturate_at_the_cap() {
        assert_eq!(POLICY.after(u32::MAX), POLICY.max);
        assert_eq!(POLICY.after(0), Duration::ZERO);
    }

    #[test]
    fn retries_only_retryable_failures_with_attempts_left() {
        assert_eq!(
            next_attempt(&POLICY, 1, 3, true),
            Retry::After(Duration::from_millis(500))
        );
        assert_eq!(
            next_attempt(&POLICY, 2, 3, true),
            Retry::After(Duration::from_secs(1))
        );
        assert_eq!(next_attempt(&POLICY, 3, 3, true), Retry::GiveUp);
        assert_eq!(next_attempt(&POLICY, 1, 3, false), Retry::GiveUp);
    }
}
