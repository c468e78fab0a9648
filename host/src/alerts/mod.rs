//! Alerting: alerts that reach people on their channels and escalate when
//! nobody reacts.
//!
//! - `delivery` — the durable outbox that sends what the alert core hands
//!   it ([`delivery::Notice`]) to the configured channels (email by SMTP,
//!   Slack, SMS through an HTTP gateway, PagerDuty), with retries, grouping
//!   and a record of every attempt.

pub mod delivery;
