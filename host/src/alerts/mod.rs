//! Alerting: alerts that reach people on their channels and escalate when
//! nobody reacts.
//!
//! - `alert` — an alert and its state machine (pure): held, fired,
//!   escalated, acknowledged, re-notified, resolved; each step says which
//!   notice goes to whom.
//! - `service` — [`Alerts`]: raises alerts from incidents, failed plans and
//!   unhealthy workers, keeps one per source, runs the durable timers
//!   (escalation, end of an acknowledgement, of a silence, of the wait for
//!   a recovery) and answers the API.
//! - `records` — the `alerts` table.
//! - `silences` — matchers on check, team and severity, with an end time.
//! - `rules` — per severity, who is told on which channels and when an
//!   unacknowledged alert escalates; the guide's table by default.
//! - `delivery` — the durable outbox that sends what the core hands it
//!   ([`delivery::Notice`]) to the configured channels (email by SMTP,
//!   Slack, SMS through an HTTP gateway, PagerDuty), with retries, grouping
//!   and a record of every attempt.

pub mod alert;
pub mod delivery;
mod records;
pub mod rules;
mod service;
pub mod silences;

pub use alert::{Alert, AlertPage, AlertQuery, AlertStatus, SourceKind};
pub use service::{AlertCounts, AlertDetail, AlertError, Alerts, AlertsDeps, MAX_ACK_MS};
pub use silences::{Matchers, NewSilence, Silence, SilenceError};
