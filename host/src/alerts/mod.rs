//! Alerting: alerts that reach people on their channels and escalate when
//! nobody reacts.
//!
//! - `delivery` — the durable outbox that sends what the alert core hands
//!   it ([`delivery::Notice`]) to the configured channels (email by SMTP,
//!   Slack, SMS through an HTTP gateway, PagerDuty), with retries, grouping
//!   and a record of every attempt.
//! - `rules` — per severity, who is told on which channels and when an
//!   unacknowledged alert escalates; the guide's table by default.

pub mod delivery;
pub mod rules;
