//! The channels' protocols: what one send puts on the wire, and how its
//! answer is judged (sent, worth a retry and when, or failed for good).

mod email;
mod pagerduty;
mod slack;
mod sms;

use std::time::{Duration, SystemTime};

pub use pagerduty::pagerduty_severity;

use super::config::DeliveryConfig;
use super::{ChannelKind, Delivery, Notice};

/// Longest `Retry-After` honoured; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why one send failed.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SendError {
    /// What went wrong, for the record.
    pub error: String,
    /// The receiver's status, when it answered.
    pub http_status: Option<u16>,
    /// Whether another attempt can help.
    pub retryable: bool,
    /// How long the receiver asked us to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl SendError {
    fn transient(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            http_status: None,
            retryable: true,
            retry_after: None,
        }
    }

    fn permanent(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            http_status: None,
            retryable: false,
            retry_after: None,
        }
    }
}

/// What one send carries: one notice, or several grouped for one
/// recipient.
pub(super) struct Content<'a> {
    pub notices: Vec<&'a Notice>,
}

impl<'a> Content<'a> {
    pub fn of(deliveries: &'a [Delivery]) -> Self {
        Self {
            notices: deliveries.iter().map(|d| &d.notice).collect(),
        }
    }

    fn first(&self) -> &Notice {
        self.notices[0]
    }

    /// The highest severity among the notices.
    pub fn severity(&self) -> &str {
        let rank = |s: &str| match s {
            "critical" => 3,
            "high" => 2,
            "medium" => 1,
            _ => 0,
        };
        self.notices
            .iter()
            .map(|n| n.severity.as_str())
            .max_by_key(|s| rank(s))
            .unwrap_or("medium")
    }

    /// One line: the title, or for a group how many and their titles.
    pub fn title(&self) -> String {
        match self.notices.as_slice() {
            [one] => format!("{}{}", event_prefix(one), one.title),
            many => {
                let titles: Vec<String> = many
                    .iter()
                    .map(|n| format!("{}{}", event_prefix(n), n.title))
                    .collect();
                format!(
                    "{} alerts for team {}: {}",
                    many.len(),
                    self.first().team,
                    titles.join("; ")
                )
            }
        }
    }

    /// The text body: each notice's title, body and link.
    pub fn text(&self) -> String {
        let parts: Vec<String> = self
            .notices
            .iter()
            .map(|n| {
                let mut part = String::new();
                if self.notices.len() > 1 {
                    part.push_str(&format!("{}{}\n\n", event_prefix(n), n.title));
                }
                part.push_str(&n.body);
                if let Some(link) = &n.link {
                    part.push_str(&format!("\n\n{link}"));
                }
                part.push_str(&format!(
                    "\n\nalert {} · {} · {} · source {}",
                    n.alert_id, n.severity, n.team, n.source
                ));
                part
            })
            .collect();
        parts.join("\n\n----\n\n")
    }
}

fn event_prefix(notice: &Notice) -> String {
    match notice.event {
        super::NoticeEvent::Trigger => String::new(),
        super::NoticeEvent::Escalation { step } => format!("Escalation {step}: "),
        super::NoticeEvent::Renotify => "Still open: ".to_owned(),
        super::NoticeEvent::Update => "Update: ".to_owned(),
        super::NoticeEvent::Acknowledge => "Acknowledged: ".to_owned(),
        super::NoticeEvent::Resolve => "Resolved: ".to_owned(),
    }
}

/// The channels' clients.
pub(super) struct Senders {
    http: reqwest::Client,
    email: Option<email::Smtp>,
}

impl Senders {
    /// Clients for the configured channels.
    pub fn new(config: &DeliveryConfig) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("autoagent/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with default TLS builds");
        Self {
            http,
            email: config.channels.email.as_ref().map(email::Smtp::new),
        }
    }

    /// Sends `deliveries` (one, or several grouped: same channel and
    /// recipient) as one message. `Ok` carries the receiver's status.
    pub async fn send(
        &self,
        config: &DeliveryConfig,
        channel: ChannelKind,
        recipient: &str,
        deliveries: &[Delivery],
        message_key: &str,
    ) -> Result<Option<u16>, SendError> {
        let content = Content::of(deliveries);
        let timeout = config.timeout_of(channel);
        match channel {
            ChannelKind::Email => {
                let smtp = self
                    .email
                    .as_ref()
                    .ok_or_else(|| SendError::permanent("the email channel is not configured"))?;
                smtp.send(recipient, &content, message_key).await
            }
            ChannelKind::Slack => {
                let body = slack::payload(&content);
                post_json(&self.http, recipient, &[], body.to_string(), timeout).await
            }
            ChannelKind::Sms => {
                let sms = config
                    .channels
                    .sms
                    .as_ref()
                    .ok_or_else(|| SendError::permanent("the sms channel is not configured"))?;
                let body = sms::body(&sms.body_template, recipient, &content);
                let headers: Vec<(&str, &str)> = sms
                    .auth
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.expose()))
                    .collect();
                post_json(&self.http, &sms.url, &headers, body, timeout).await
            }
            ChannelKind::PagerDuty => {
                let pd = config.channels.pagerduty.as_ref().ok_or_else(|| {
                    SendError::permanent("the pagerduty channel is not configured")
                })?;
                let key = config.routing_keys.get(recipient).ok_or_else(|| {
                    SendError::permanent(format!(
                        "no routing key under {recipient:?} in the alerts config"
                    ))
                })?;
                let body = pagerduty::event(key.expose(), content.first());
                let url = format!("{}/v2/enqueue", pd.base_url);
                post_json(&self.http, &url, &[], body.to_string(), timeout).await
            }
        }
    }
}

/// POSTs a JSON body and judges the answer: 2xx is sent; 408, 429 and 5xx
/// (and no answer at all) are worth a retry, after `Retry-After` when
/// given; any other status is a failure a retry cannot help.
async fn post_json(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: String,
    timeout: Duration,
) -> Result<Option<u16>, SendError> {
    let mut request = http
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .send()
        .await
        .map_err(|err| SendError::transient(describe_reqwest(&err)))?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        return Ok(Some(status));
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let text = truncate_chars(&response.text().await.unwrap_or_default(), 200);
    Err(SendError {
        error: format!("the receiver answered {status}: {}", text.trim()),
        http_status: Some(status),
        retryable: matches!(status, 408 | 429) || status >= 500,
        retry_after,
    })
}

/// `text` cut to at most `max` characters.
pub(super) fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => text[..at].to_owned(),
        None => text.to_owned(),
    }
}

/// The error of a request without its URL (a webhook URL is a secret).
fn describe_reqwest(err: &reqwest::Error) -> String {
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(err);
    let mut detail = String::new();
    while let Some(inner) = source {
        detail = inner.to_string();
        source = inner.source();
    }
    if detail.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {detail}")
    }
}

/// Reads a `Retry-After` value: whole seconds, or an HTTP date (how long
/// from `now` until then; zero if it has passed). Cut to one hour.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past: at once"
        );
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
