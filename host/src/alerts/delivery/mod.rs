//! Alert delivery: the durable outbox between the alert core and the
//! channels.
//!
//! The core describes one message about one alert as a [`Notice`] and asks
//! [`Outbox::enqueue_ops`] for the store operations that queue it: one
//! [`Delivery`] per (channel, recipient) of the groups it names. It writes
//! those in the same batch as its own change (raising an alert and queuing
//! its messages are one atomic write), then calls [`Outbox::wake`]. From
//! there the outbox owns the message:
//!
//! - `config.rs` — the alerts file: channels, recipient groups, policy.
//! - `records.rs` — the `alert_deliveries` table (an `IndexedTable` over
//!   alert, status, channel and, for retention, `finished`).
//! - `grouping.rs` — pure: which due deliveries travel as one message.
//! - `channels/` — one file per protocol (SMTP, Slack webhook, SMS gateway,
//!   PagerDuty Events v2), and `Retry-After`.
//! - `outbox.rs` — [`Outbox`]: the `alert-delivery` loop on the engine
//!   (timers over each pending delivery's `nextTry`, sends spawned under a
//!   per-channel limit, outcomes, retries), the metrics, the test notice.
//!
//! Every delivery is written `sending` (with its attempt) before its send
//! starts and `sent`, `pending` (with its next try) or `failed` after it,
//! so a delivery is sent successfully at most once, except when the host
//! dies during the send: it is then sent again after the restart (its
//! interrupted attempt recorded), so delivery is at least once across a
//! crash. PagerDuty's `dedup_key` and the email's `Message-ID` let the far
//! side fold such a repeat.

mod channels;
mod config;
mod grouping;
mod outbox;
mod records;

pub use channels::{pagerduty_severity, parse_retry_after};
pub use config::{
    ChannelsView, ConfigError, DEFAULT_GROUPS, DeliveryConfig, DeliveryPolicy, Group, Secret,
    SmtpSecurity, fill_template, mask,
};
pub use outbox::{
    ChannelMetrics, DeliveryMetrics, Outbox, OutboxDeps, TestNotice, TestQueued, TestSeverity,
};
pub use records::{DeliveryPage, DeliveryQuery};

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::store::StoreError;

/// What happened to an alert that a notice tells about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum NoticeEvent {
    /// The alert was raised.
    Trigger,
    /// Nobody acknowledged in time; escalation step `step` (1 for the first).
    Escalation {
        /// The step, from 1.
        step: u32,
    },
    /// An acknowledgement ran out while the alert is still open.
    Renotify,
    /// What is known about an open alert changed (its recovery gave up,
    /// its check started or stopped flapping); told on email and Slack to
    /// those told so far.
    Update,
    /// Someone acknowledged the alert.
    Acknowledge,
    /// The alert was resolved.
    Resolve,
}

impl NoticeEvent {
    /// A word for logs and keys.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Escalation { .. } => "escalation",
            Self::Renotify => "renotify",
            Self::Update => "update",
            Self::Acknowledge => "acknowledge",
            Self::Resolve => "resolve",
        }
    }
}

/// One message about one alert, as the alert core hands it over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// The alert (`alert_…`).
    pub alert_id: String,
    /// The incident behind it, if any: PagerDuty's `dedup_key`.
    pub incident_id: Option<String>,
    /// The team the alert belongs to; grouping is per team.
    pub team: String,
    /// What happened.
    pub event: NoticeEvent,
    /// `critical`, `high` or `medium`.
    pub severity: String,
    /// One line.
    pub title: String,
    /// The details.
    pub body: String,
    /// Where to look (the incident's page).
    pub link: Option<String>,
    /// What raised it (`check:web-1`, `plan:…`, `worker:…`).
    pub source: String,
    /// When the event happened; latency is measured from here.
    pub raised_at: Timestamp,
    /// Unique per (alert, event, step), e.g. `alert_1/escalation/2`: the
    /// first part of each delivery's idempotency key.
    pub key: String,
}

impl Notice {
    /// Whether the notice waits for the grouping window (high and medium;
    /// critical never waits).
    pub fn groupable(&self) -> bool {
        self.severity != "critical"
    }
}

/// A channel a notice can go out on.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// Email by SMTP.
    Email,
    /// Slack incoming webhook.
    Slack,
    /// SMS through an HTTP gateway.
    Sms,
    /// PagerDuty Events API v2.
    #[serde(rename = "pagerduty")]
    PagerDuty,
}

impl ChannelKind {
    /// Every channel, in the order they are listed.
    pub const ALL: [ChannelKind; 4] = [Self::Email, Self::Slack, Self::Sms, Self::PagerDuty];

    /// The word the file, the API and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Slack => "slack",
            Self::Sms => "sms",
            Self::PagerDuty => "pagerduty",
        }
    }

    /// The channel a word names.
    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == word)
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its next try (`nextTry`).
    Pending,
    /// An attempt is in flight.
    Sending,
    /// The receiver took it.
    Sent,
    /// Given up: attempts used up, or a failure a retry cannot help.
    Failed,
    /// Never sent: the channel is not configured or the group has no
    /// address on it (`error` says which).
    Skipped,
}

impl DeliveryStatus {
    /// The word the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    /// True once nothing more happens to it.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Sent | Self::Failed | Self::Skipped)
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttemptStatus {
    /// Under way: the send has started and not ended yet.
    Sending,
    /// The receiver took it.
    Sent,
    /// It failed (`error`).
    Failed,
    /// The host stopped during the send; whether it arrived is unknown.
    Interrupted,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAttempt {
    /// Its number, from 1.
    pub attempt: u32,
    /// When it started.
    pub at: Timestamp,
    /// How it ended.
    pub status: AttemptStatus,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The receiver's HTTP status, for HTTP channels (and the SMTP reply
    /// code where there is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// How long the send took.
    pub latency_ms: u64,
    /// The send that carried it (`send_…`); deliveries grouped into one
    /// message share it.
    pub send_id: String,
    /// How many deliveries that send carried (1: not grouped).
    pub grouped: u32,
}

/// Most attempts kept on a delivery; older ones are dropped (the count
/// stays in `attemptsMade`).
pub const MAX_RECORDED_ATTEMPTS: usize = 20;

/// One message to one recipient on one channel: the outbox's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The idempotency key: `{notice.key}/{channel}/{recipient digest}`.
    pub id: String,
    /// The notice it carries.
    pub notice: Notice,
    /// The channel.
    pub channel: ChannelKind,
    /// The recipient group it was addressed through.
    pub group: String,
    /// The address as stored: a mailbox, a number, a webhook URL, or the
    /// name of the environment variable holding a PagerDuty routing key.
    /// Views show it masked.
    pub recipient: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// When it was queued.
    pub queued_at: Timestamp,
    /// When it is next tried (pending).
    pub next_try: Timestamp,
    /// Attempts made so far.
    pub attempts_made: u32,
    /// The most recent attempts, oldest first.
    pub attempts: Vec<DeliveryAttempt>,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was sent, failed or skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

impl Delivery {
    /// The same delivery with its recipient masked, as the API shows it.
    pub fn masked(mut self) -> Self {
        if self.status != DeliveryStatus::Skipped || self.recipient != NO_RECIPIENT {
            self.recipient = mask(self.channel, &self.recipient);
        }
        self
    }
}

/// The recipient of a skipped delivery that had none.
pub const NO_RECIPIENT: &str = "-";

/// Why an outbox operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A value is not allowed (unknown group, channel, severity).
    #[error("`{field}` {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
