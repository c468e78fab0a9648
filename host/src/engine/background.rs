//! Background loops the app owns, and how they are stopped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::Clock;
use crate::clock::Timestamp;

/// How long a loop with no timer set sleeps before it looks again anyway.
const IDLE_PASS: Duration = Duration::from_secs(3600);

/// Tells a loop that the host is stopping; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    stopping: watch::Receiver<bool>,
}

impl Shutdown {
    /// Completes once shutdown has begun (at once if it already has).
    pub async fn requested(&mut self) {
        // An error means the sender is gone, which only happens when the
        // loops' owner was dropped: that is a shutdown too.
        let _ = self.stopping.wait_for(|stopping| *stopping).await;
    }

    /// True once shutdown has begun.
    pub fn is_requested(&self) -> bool {
        *self.stopping.borrow()
    }
}

/// The app's background loops: each is spawned through here, so that one
/// call stops all of them.
pub struct Loops {
    stopping: watch::Sender<bool>,
    running: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
}

impl Default for Loops {
    fn default() -> Self {
        Self::new()
    }
}

impl Loops {
    /// No loops yet.
    pub fn new() -> Self {
        Self {
            stopping: watch::channel(false).0,
            running: Mutex::new(Vec::new()),
        }
    }

    /// A handle a loop watches to learn that it must stop.
    pub fn shutdown(&self) -> Shutdown {
        Shutdown {
            stopping: self.stopping.subscribe(),
        }
    }

    /// Spawns `body` on the current runtime as the loop `name`. The loop
    /// must return soon after its [`Shutdown`] is requested.
    pub fn spawn<F>(&self, name: &'static str, body: impl FnOnce(Shutdown) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(body(self.shutdown()));
        self.lock().push((name, handle));
    }

    /// Asks every loop to stop and waits for them, at most `grace`; a loop
    /// still running then is aborted. Returns the names of those aborted.
    pub async fn stop(&self, grace: Duration) -> Vec<&'static str> {
        self.stopping.send_replace(true);
        let running = std::mem::take(&mut *self.lock());
        let deadline = tokio::time::Instant::now() + grace;
        let mut aborted = Vec::new();
        for (name, mut handle) in running {
            if tokio::time::timeout_at(deadline, &mut handle)
                .await
                .is_err()
            {
                handle.abort();
                tracing::warn!(
                    background_loop = name,
                    "did not stop within the grace period; aborted"
                );
                aborted.push(name);
            }
        }
        aborted
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(&'static str, JoinHandle<()>)>> {
        // The list is only pushed to and taken whole; a panic cannot leave
        // it half-changed.
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The loop every timed subsystem runs: a pass, then sleep until the time
/// the pass asks for (its next timer), a poke, or shutdown.
///
/// `pass` does the work that is due and returns when it next has something
/// due; the loop runs it again at that moment on `clock`, or earlier when
/// `wake` is notified (new work arrived). It returns once `shutdown` is
/// requested, between passes.
pub async fn run_timed<F, Fut>(clock: Clock, wake: Arc<Notify>, mut shutdown: Shutdown, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<Timestamp>>,
{
    while !shutdown.is_requested() {
        let next = pass().await;
        let at = next.unwrap_or_else(|| clock.now().plus(IDLE_PASS));
        tokio::select! {
            () = shutdown.requested() => break,
            () = wake.notified() => {}
            () = clock.sleep_until(at) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_timed_loop_runs_when_its_timer_is_due_and_when_poked() {
        let clock = Clock::new();
        let loops = Loops::new();
        let wake = Arc::new(Notify::new());
        let passes = Arc::new(AtomicU32::new(0));
        let counted = passes.clone();
        let start = clock.now();
        let poked = wake.clone();
        loops.spawn("test", move |shutdown| {
            run_timed(clock, poked, shutdown, move || {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                // The first pass asks to run again in ten seconds; later
                // ones have nothing due.
                let next = (n == 0).then(|| start.plus(Duration::from_secs(10)));
                async move { next }
            })
        });
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 1, "nothing is due yet");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 2, "the timer fired");
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 3, "the poke ran a pass");
        tokio::time::sleep(Duration::from_secs(1800)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 3, "idle: no pass");
        assert!(loops.stop(Duration::from_secs(1)).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn stop_aborts_a_loop_that_ignores_shutdown_after_the_grace() {
        let loops = Loops::new();
        loops.spawn("well-behaved", |mut shutdown| async move {
            shutdown.requested().await;
        });
        loops.spawn("stubborn", |_| std::future::pending());
        let started = tokio::time::Instant::now();
        assert_eq!(loops.stop(Duration::from_secs(5)).await, ["stubborn"]);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
