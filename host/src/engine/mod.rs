//! The engine for timed, durable, retried work.
//!
//! Tasks use it today; action plans, health-check loops and alert
//! escalation are built on the same parts instead of copying a scheduler:
//!
//! - [`Clock`]: wall time advanced by tokio's clock, so tests pause time
//!   instead of sleeping, and timers follow elapsed time.
//! - [`Timers`]: due times in memory over due-time fields of stored records;
//!   rebuilt from the records at start, which is what makes them durable.
//! - [`Backoff`] and [`next_attempt`]: whether and when a failed attempt is
//!   tried again.
//! - [`Attempts`]: attempts in flight, their load per holder, stopping a
//!   running call, and the rule that whoever removes an attempt writes its
//!   outcome (so no outcome is written twice).
//! - [`Loops`], [`Shutdown`] and [`run_timed`]: background loops owned by the
//!   app, woken by their next timer or a poke, stopped on shutdown.
//!
//! What a subsystem adds is its own record and its own outcome rules. The
//! pattern, as `tasks` follows it: write a state change before acting on it
//! (a claim before its call starts); on open, load the unfinished records,
//! set their timers again, and queue again what was running when the host
//! stopped, counting that attempt (delivery is at least once).

mod attempts;
mod background;
mod backoff;
mod clock;
mod delays;
mod retention;
mod timers;

pub use attempts::{Attempts, Stopped, wait_until_idle};
pub use background::{Loops, Shutdown, run_timed};
pub use backoff::{Backoff, Retry, next_attempt};
pub use clock::Clock;
pub use delays::DelayHistogram;
pub use retention::{
    PRUNE_CHUNK, PRUNE_EVERY, RETENTION_DEFAULT, prune_forever, prune_table_forever,
};
pub use timers::Timers;
