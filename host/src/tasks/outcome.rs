//! How an attempt ended, and the task's next state that follows.

use std::time::Duration;

use serde_json::Value;

use super::{Task, TaskStatus};
use crate::clock::Timestamp;
use crate::engine::{Backoff, Retry, next_attempt};
use crate::plugins::ErrorKind;

/// The retry policy of tasks: 0.5 s before the second attempt, doubling,
/// at most a minute.
pub(super) const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(500),
    max: Duration::from_secs(60),
};

/// Why a running attempt was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// An operator cancelled the task.
    Cancel,
    /// Its worker was restarted.
    Restart,
    /// The task's deadline passed.
    Deadline,
}

/// How one attempt ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// With this output.
    Succeeded(Value),
    /// With this failure.
    Failed(Failure),
    /// Stopped from outside.
    Stopped(Stop),
}

/// Why an attempt failed: its kind decides whether it is retried.
#[derive(Debug)]
pub(super) struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The same failure, said of one workflow step.
    pub fn in_step(self, step: &str) -> Self {
        Self::new(self.kind, format!("step {step:?}: {}", self.message))
    }
}

/// Applies an attempt's outcome to `task` at `now`: its status, result or
/// error, and when a retry is due. Returns whether the attempt counts as a
/// success or a failure of its worker (`None`: it was stopped).
pub(super) fn apply(task: &mut Task, outcome: Outcome, now: Timestamp) -> Option<bool> {
    task.updated_at = now;
    let counted = match outcome {
        Outcome::Succeeded(output) => {
            task.status = TaskStatus::Succeeded;
            task.result = Some(output);
            task.error = None;
            task.error_kind = None;
            Some(true)
        }
        Outcome::Failed(failure) => {
            task.error = Some(failure.message);
            task.error_kind = Some(failure.kind);
            retry_or_fail(task, failure.kind.retryable(), now);
            Some(false)
        }
        Outcome::Stopped(Stop::Cancel) => {
            task.status = TaskStatus::Cancelled;
            None
        }
        Outcome::Stopped(Stop::Deadline) => {
            task.status = TaskStatus::TimedOut;
            task.error = Some("deadline passed while it ran; its call was stopped".into());
            task.error_kind = Some(ErrorKind::Timeout);
            None
        }
        Outcome::Stopped(Stop::Restart) => {
            let worker = task.worker_id.clone().unwrap_or_default();
            task.error = Some(format!("worker {worker} was restarted during the attempt"));
            task.error_kind = None;
            retry_or_fail(task, true, now);
            // The restart itself was the wait: no backoff.
            task.not_before = None;
            None
        }
    };
    if task.status.is_terminal() {
        task.finished_at = Some(now);
    }
    counted
}

/// A task that timed out while still queued.
pub(super) fn expire_queued(task: &mut Task, now: Timestamp) {
    task.status = TaskStatus::TimedOut;
    task.error = Some("deadline passed before a worker finished it".into());
    task.error_kind = Some(ErrorKind::Timeout);
    task.updated_at = now;
    task.finished_at = Some(now);
}

fn retry_or_fail(task: &mut Task, retryable: bool, now: Timestamp) {
    match next_attempt(&BACKOFF, task.attempts, task.max_attempts, retryable) {
        Retry::After(wait) => {
            task.status = TaskStatus::Queued;
            task.not_before = Some(now.plus(wait));
        }
        Retry::GiveUp => task.status = TaskStatus::Failed,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn running(attempts: u32, max_attempts: u32) -> Task {
        Task {
            attempts,
            max_attempts,
            status: TaskStatus::Running,
            worker_id: Some("w1".into()),
            ..super::super::fixtures::task("t1")
        }
    }

    fn now() -> Timestamp {
        Timestamp::parse_deadline("2026-01-01T00:01:00Z").unwrap()
    }

    #[test]
    fn a_retryable_failure_waits_its_backoff_then_fails_on_the_last_attempt() {
        let mut task = running(2, 3);
        let failure = Failure::new(ErrorKind::Trap, "boom");
        assert_eq!(
            apply(&mut task, Outcome::Failed(failure), now()),
            Some(false)
        );
        assert_eq!(task.status, TaskStatus::Queued);
        assert_eq!(task.not_before, Some(now().plus(Duration::from_secs(1))));
        assert_eq!(task.finished_at, None);

        let mut last = running(3, 3);
        apply(
            &mut last,
            Outcome::Failed(Failure::new(ErrorKind::Trap, "boom")),
            now(),
        );
        assert_eq!(last.status, TaskStatus::Failed);
        assert_eq!(last.finished_at, Some(now()));
    }

    #[test]
    fn a_failure_no_retry_can_help_fails_at_once() {
        for kind in [ErrorKind::InvalidInput, ErrorKind::Unsupported] {
            let mut task = running(1, 5);
            apply(&mut task, Outcome::Failed(Failure::new(kind, "no")), now());
            assert_eq!(task.status, TaskStatus::Failed, "{kind:?}");
            assert_eq!(task.error_kind, Some(kind));
        }
    }

    #[test]
    fn a_restart_requeues_without_backoff_and_counts_nothing() {
        let mut task = running(1, 3);
        assert_eq!(
            apply(&mut task, Outcome::Stopped(Stop::Restart), now()),
            None
        );
        assert_eq!(task.status, TaskStatus::Queued);
        assert_eq!(task.not_before, None);
        assert_eq!(
            task.error.as_deref(),
            Some("worker w1 was restarted during the attempt")
        );
    }

    #[test]
    fn success_clears_the_last_error() {
        let mut task = running(2, 3);
        task.error = Some("earlier".into());
        task.error_kind = Some(ErrorKind::Trap);
        assert_eq!(
            apply(&mut task, Outcome::Succeeded(json!(1)), now()),
            Some(true)
        );
        assert_eq!(
            (task.status, task.error, task.error_kind),
            (TaskStatus::Succeeded, None, None)
        );
        assert_eq!(task.finished_at, Some(now()));
    }

    #[test]
    fn a_deadline_ends_it_timed_out() {
        let mut task = running(1, 3);
        apply(&mut task, Outcome::Stopped(Stop::Deadline), now());
        assert_eq!(task.status, TaskStatus::TimedOut);
        assert_eq!(task.error_kind, Some(ErrorKind::Timeout));
    }
}
