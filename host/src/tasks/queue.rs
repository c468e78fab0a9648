//! What the scheduler holds in memory: every unfinished task, in queue
//! order, with its timers, its waiting reason and the attempts in flight.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use super::{Priority, Task, TaskStatus};
use crate::clock::Timestamp;
use crate::engine::{Attempts, Timers};

/// Queue order: priority, then age, then id.
type QueueKey = (Priority, Timestamp, String);

fn queue_key(task: &Task) -> QueueKey {
    (task.priority, task.created_at, task.id.clone())
}

/// A task claimed for a holder by [`Queue::claim_ready`].
pub(super) struct Claim<W> {
    /// The task as stored before the claim.
    pub before: Task,
    /// The task as the claim makes it: running, its attempt counted.
    pub task: Task,
    /// Who runs it.
    pub holder: W,
}

/// The unfinished tasks. A cache of the store's unfinished records, rebuilt
/// from them at start.
#[derive(Default)]
pub(super) struct Queue {
    unfinished: HashMap<String, Task>,
    ready: BTreeSet<QueueKey>,
    backoffs: Timers<String>,
    deadlines: Timers<String>,
    reasons: HashMap<String, String>,
    /// Attempts in flight, by task id; holders are worker ids.
    pub attempts: Attempts<String>,
}

impl Queue {
    /// Adds an unfinished task: ready now, or after its backoff.
    pub fn enqueue(&mut self, task: Task, now: Timestamp) {
        if let Some(deadline) = task.deadline {
            self.deadlines.set(deadline, task.id.clone());
        }
        match task.not_before {
            Some(at) if at > now => self.backoffs.set(at, task.id.clone()),
            _ => {
                self.ready.insert(queue_key(&task));
            }
        }
        self.unfinished.insert(task.id.clone(), task);
    }

    /// Drops a task and its timers (it ended, or it is about to be queued
    /// again in a new state).
    pub fn forget(&mut self, id: &str) -> Option<Task> {
        let task = self.unfinished.remove(id)?;
        self.ready.remove(&queue_key(&task));
        if let Some(at) = task.not_before {
            self.backoffs.cancel(at, &task.id);
        }
        if let Some(deadline) = task.deadline {
            self.deadlines.cancel(deadline, &task.id);
        }
        self.reasons.remove(id);
        Some(task)
    }

    /// The unfinished task `id`.
    pub fn get(&self, id: &str) -> Option<&Task> {
        self.unfinished.get(id)
    }

    /// Why `id` waits, if it does.
    pub fn reason(&self, id: &str) -> Option<&String> {
        self.reasons.get(id)
    }

    /// Moves the tasks whose backoff has passed into the ready set.
    pub fn release_backoffs(&mut self, now: Timestamp) {
        for id in self.backoffs.take_due(now) {
            if let Some(task) = self.unfinished.get(&id) {
                self.ready.insert(queue_key(task));
            }
        }
    }

    /// The tasks whose deadline has passed; their deadline timers are gone.
    pub fn take_overdue(&mut self, now: Timestamp) -> Vec<String> {
        self.deadlines.take_due(now)
    }

    /// When the next backoff or deadline is due.
    pub fn next_timer(&self) -> Option<Timestamp> {
        self.backoffs
            .next()
            .into_iter()
            .chain(self.deadlines.next())
            .min()
    }

    /// Walks the ready tasks in queue order while `free_slots` lasts and
    /// claims each that `pick` finds a holder for (a worker id), or records
    /// the reason `pick` gives. Returns the claims, each task already marked
    /// running with its attempt counted.
    pub fn claim_ready<W>(
        &mut self,
        now: Timestamp,
        mut free_slots: usize,
        mut pick: impl FnMut(&Task, &Attempts<String>) -> Result<W, String>,
        holder_of: impl Fn(&W) -> &str,
    ) -> Vec<Claim<W>> {
        let mut claims = Vec::new();
        // Walk without copying the set: it may hold many thousands of tasks
        // while only a few slots are free.
        let mut cursor: Option<QueueKey> = None;
        while free_slots > 0 {
            let next = match &cursor {
                None => self.ready.first(),
                Some(after) => self
                    .ready
                    .range((Bound::Excluded(after.clone()), Bound::Unbounded))
                    .next(),
            };
            let Some(key) = next.cloned() else { break };
            cursor = Some(key.clone());
            let Some(task) = self.unfinished.get(&key.2) else {
                continue;
            };
            let chosen = match pick(task, &self.attempts) {
                Ok(chosen) => chosen,
                Err(reason) => {
                    self.reasons.insert(task.id.clone(), reason);
                    continue;
                }
            };
            let before = task.clone();
            let mut task = task.clone();
            task.status = TaskStatus::Running;
            task.attempts += 1;
            task.worker_id = Some(holder_of(&chosen).to_owned());
            task.started_at = Some(now);
            task.updated_at = now;
            task.not_before = None;
            self.ready.remove(&key);
            self.reasons.remove(&task.id);
            self.attempts
                .claim(task.id.clone(), task.attempts, holder_of(&chosen));
            self.unfinished.insert(task.id.clone(), task.clone());
            claims.push(Claim {
                before,
                task,
                holder: chosen,
            });
            free_slots -= 1;
        }
        claims
    }

    /// Takes back a claim that could not be recorded: the task is queued
    /// again as it was before.
    pub fn unclaim(&mut self, claim: &Claim<impl Sized>, now: Timestamp) {
        self.attempts.unclaim(&claim.task.id, claim.task.attempts);
        self.forget(&claim.task.id);
        self.enqueue(claim.before.clone(), now);
    }

    /// Unfinished tasks, and of those how many run.
    pub fn sizes(&self) -> (usize, usize) {
        (self.unfinished.len(), self.attempts.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn task(id: &str, priority: Priority, age_secs: u64) -> Task {
        let created = Timestamp::EARLIEST.plus(Duration::from_secs(1000 - age_secs));
        Task {
            priority,
            created_at: created,
            updated_at: created,
            ..super::super::fixtures::task(id)
        }
    }

    fn now() -> Timestamp {
        Timestamp::EARLIEST.plus(Duration::from_secs(2000))
    }

    fn claim_all(queue: &mut Queue, slots: usize) -> Vec<String> {
        queue
            .claim_ready(now(), slots, |_, _| Ok("w1".to_owned()), |w| w.as_str())
            .into_iter()
            .map(|claim| claim.task.id)
            .collect()
    }

    #[test]
    fn serves_priority_first_then_the_oldest() {
        let mut queue = Queue::default();
        queue.enqueue(task("low-old", Priority::Low, 900), now());
        queue.enqueue(task("high-new", Priority::High, 10), now());
        queue.enqueue(task("high-old", Priority::High, 500), now());
        queue.enqueue(task("critical", Priority::Critical, 1), now());
        assert_eq!(
            claim_all(&mut queue, 10),
            ["critical", "high-old", "high-new", "low-old"]
        );
    }

    #[test]
    fn claims_only_as_many_as_there_are_free_slots() {
        let mut queue = Queue::default();
        for n in 0..5 {
            queue.enqueue(task(&format!("t{n}"), Priority::Medium, 100 - n), now());
        }
        assert_eq!(claim_all(&mut queue, 2), ["t0", "t1"]);
        assert_eq!(queue.sizes(), (5, 2));
        assert_eq!(queue.attempts.load_of("w1"), 2);
        let claimed = queue.get("t0").unwrap();
        assert_eq!(claimed.status, TaskStatus::Running);
        assert_eq!(claimed.attempts, 1);
    }

    #[test]
    fn a_task_no_worker_can_take_keeps_its_place_and_says_why() {
        let mut queue = Queue::default();
        queue.enqueue(task("blocked", Priority::High, 50), now());
        queue.enqueue(task("fine", Priority::Low, 50), now());
        let claimed = queue.claim_ready(
            now(),
            5,
            |task, _| {
                if task.id == "blocked" {
                    Err("no worker of type \"X\" is registered".to_owned())
                } else {
                    Ok("w1".to_owned())
                }
            },
            |w| w.as_str(),
        );
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            queue.reason("blocked").map(String::as_str),
            Some("no worker of type \"X\" is registered")
        );
        assert_eq!(claim_all(&mut queue, 5), ["blocked"]);
        assert_eq!(queue.reason("blocked"), None, "claimed: no reason left");
    }

    #[test]
    fn a_backoff_holds_a_task_until_it_passes() {
        let mut queue = Queue::default();
        let mut waiting = task("retry", Priority::Medium, 10);
        let at = now().plus(Duration::from_secs(30));
        waiting.not_before = Some(at);
        queue.enqueue(waiting, now());
        assert!(claim_all(&mut queue, 1).is_empty());
        assert_eq!(queue.next_timer(), Some(at));
        queue.release_backoffs(at);
        assert_eq!(claim_all(&mut queue, 1), ["retry"]);
    }

    #[test]
    fn deadlines_come_due_once_and_forgetting_cancels_them() {
        let mut queue = Queue::default();
        let mut a = task("a", Priority::Medium, 10);
        a.deadline = Some(now().plus(Duration::from_secs(5)));
        let mut b = task("b", Priority::Medium, 10);
        b.deadline = Some(now().plus(Duration::from_secs(5)));
        queue.enqueue(a, now());
        queue.enqueue(b, now());
        queue.forget("b");
        let later = now().plus(Duration::from_secs(6));
        assert_eq!(queue.take_overdue(later), ["a"]);
        assert!(queue.take_overdue(later).is_empty());
        assert_eq!(queue.next_timer(), None);
    }
}
