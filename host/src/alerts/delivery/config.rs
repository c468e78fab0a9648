//! The alert channels file (`--alerts-config FILE`): which channels exist,
//! who is in each recipient group, and the delivery policy.
//!
//! Parsed strictly (an unknown key is an error naming it) and checked
//! whole at start, so a bad file stops the host before it listens. Secrets
//! (the SMTP password, the SMS gateway's auth value, PagerDuty routing keys)
//! are read from the environment variables the file names, once, here; they
//! are never shown (see [`ChannelsView`]) and never written to the store.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ChannelKind;

/// The recipient groups that always exist (empty unless the file fills
/// them): the guide's Admin, Manager, OnCall, Dev team and Ops team.
pub const DEFAULT_GROUPS: [&str; 5] = ["Admin", "Manager", "OnCall", "Dev team", "Ops team"];

/// Longest SMS text, in characters.
pub const SMS_MAX_CHARS: usize = 160;

/// Why the alerts file was refused; the message names the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("alerts config {file}: {message}")]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// What is wrong, starting with the key (`channels.email.port: ...`).
    pub message: String,
}

/// A secret read from the environment: shown nowhere, not even in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded by `STARTTLS`, which is required (587).
    Starttls,
    /// TLS from the first byte (465).
    Tls,
    /// No encryption (a relay on the same host, tests).
    Plain,
}

/// `[channels.email]`.
#[derive(Debug, Clone)]
pub struct EmailChannel {
    /// SMTP server.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// `starttls`, `tls` or `plain`.
    pub security: SmtpSecurity,
    /// Login, with the password read from `password-env`.
    pub credentials: Option<(String, Secret)>,
    /// The `From` mailbox.
    pub from: String,
    /// Per-attempt time limit.
    pub timeout: Duration,
}

/// `[channels.slack]`: incoming webhooks, whose URLs are the groups' `slack`
/// addresses.
#[derive(Debug, Clone)]
pub struct SlackChannel {
    /// Per-attempt time limit.
    pub timeout: Duration,
}

/// `[channels.sms]`: an HTTP SMS gateway.
#[derive(Debug, Clone)]
pub struct SmsChannel {
    /// Where the message is POSTed.
    pub url: String,
    /// A header carrying the gateway's credentials, and its value (read
    /// from `auth-env`).
    pub auth: Option<(String, Secret)>,
    /// The JSON body with `{{to}}` and `{{text}}` placeholders.
    pub body_template: String,
    /// Per-attempt time limit.
    pub timeout: Duration,
}

/// `[channels.pagerduty]`: Events API v2.
#[derive(Debug, Clone)]
pub struct PagerDutyChannel {
    /// `https://events.pagerduty.com` unless set (tests point it at a local
    /// receiver); events go to `{base-url}/v2/enqueue`.
    pub base_url: String,
    /// Per-attempt time limit.
    pub timeout: Duration,
}

/// The configured channels; a channel left out is not configured.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    /// Email by SMTP.
    pub email: Option<EmailChannel>,
    /// Slack incoming webhooks.
    pub slack: Option<SlackChannel>,
    /// SMS gateway.
    pub sms: Option<SmsChannel>,
    /// PagerDuty.
    pub pagerduty: Option<PagerDutyChannel>,
}

/// One recipient group's addresses per channel.
#[derive(Debug, Clone, Default)]
pub struct Group {
    /// Mailboxes.
    pub email: Vec<String>,
    /// Phone numbers, `+` and digits.
    pub sms: Vec<String>,
    /// Incoming-webhook URLs.
    pub slack: Vec<String>,
    /// Names of the environment variables holding the routing keys (what
    /// deliveries record); the keys themselves are in
    /// [`DeliveryConfig::routing_keys`].
    pub pagerduty: Vec<String>,
}

impl Group {
    /// The addresses for one channel.
    pub fn addresses(&self, channel: ChannelKind) -> &[String] {
        match channel {
            ChannelKind::Email => &self.email,
            ChannelKind::Slack => &self.slack,
            ChannelKind::Sms => &self.sms,
            ChannelKind::PagerDuty => &self.pagerduty,
        }
    }
}

/// `[delivery]`: retries, grouping and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Attempts per delivery before it is `failed`.
    pub max_attempts: u32,
    /// Wait before the first retry, doubling after each.
    pub backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// High and medium notices to one recipient due within this much of the
    /// first go out as one message.
    pub group_window: Duration,
    /// Per-attempt time limit of a channel that sets none.
    pub attempt_timeout: Duration,
    /// Sends in flight at once per channel.
    pub concurrency: usize,
    /// The address people reach this host's API at, for the links in
    /// notices (`link-base`).
    pub link_base: String,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            backoff: Duration::from_millis(1000),
            max_backoff: Duration::from_millis(300_000),
            group_window: Duration::from_millis(30_000),
            attempt_timeout: Duration::from_millis(10_000),
            concurrency: 8,
            link_base: DEFAULT_LINK_BASE.to_owned(),
        }
    }
}

/// The links' base when the file names none: the host on its default port.
pub const DEFAULT_LINK_BASE: &str = "http://localhost:50000";

/// The whole alerts file, checked, with its secrets read.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Where it was read from, for the view.
    pub file: Option<String>,
    /// The channels.
    pub channels: Channels,
    /// Recipient groups by name (the defaults always present).
    pub groups: BTreeMap<String, Group>,
    /// PagerDuty routing keys by the name of their environment variable.
    pub routing_keys: BTreeMap<String, Secret>,
    /// Retries, grouping, limits.
    pub policy: DeliveryPolicy,
}

impl Default for DeliveryConfig {
    /// No channel: every delivery is recorded `skipped`.
    fn default() -> Self {
        Self {
            file: None,
            channels: Channels::default(),
            groups: DEFAULT_GROUPS
                .iter()
                .map(|name| ((*name).to_owned(), Group::default()))
                .collect(),
            routing_keys: BTreeMap::new(),
            policy: DeliveryPolicy::default(),
        }
    }
}

// ---- the file as written ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    channels: FileChannels,
    #[serde(default)]
    groups: BTreeMap<String, FileGroup>,
    #[serde(default)]
    delivery: FileDelivery,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileChannels {
    email: Option<FileEmail>,
    slack: Option<FileSlack>,
    sms: Option<FileSms>,
    pagerduty: Option<FilePagerDuty>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileEmail {
    host: String,
    port: u16,
    security: SmtpSecurity,
    username: Option<String>,
    password_env: Option<String>,
    from: String,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileSlack {
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileSms {
    url: String,
    auth_header: Option<String>,
    auth_env: Option<String>,
    body_template: String,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FilePagerDuty {
    base_url: Option<String>,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGroup {
    #[serde(default)]
    email: Vec<String>,
    #[serde(default)]
    sms: Vec<String>,
    #[serde(default)]
    slack: Vec<String>,
    #[serde(default)]
    pagerduty: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileDelivery {
    max_attempts: Option<u32>,
    backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    group_window_ms: Option<u64>,
    attempt_timeout_ms: Option<u64>,
    concurrency: Option<usize>,
    link_base: Option<String>,
}

/// Most addresses of one channel in one group.
const MAX_ADDRESSES: usize = 100;

impl DeliveryConfig {
    /// Reads and checks `path`, reading secrets from the environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            file: file.clone(),
            message: format!("cannot read: {err}"),
        })?;
        Self::parse(&text, |name| std::env::var(name).ok())
            .map(|mut config| {
                config.file = Some(file.clone());
                config
            })
            .map_err(|message| ConfigError { file, message })
    }

    /// Parses and checks the text of an alerts file; `env` reads an
    /// environment variable. The error names the key.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let deserializer = toml::Deserializer::parse(text).map_err(|err| err.to_string())?;
        let raw: File = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let message = inner.message().to_owned();
            if path == "." || path.is_empty() {
                message
            } else {
                format!("{path}: {message}")
            }
        })?;
        let secret = |key: &str, name: &str| -> Result<Secret, String> {
            if name.trim().is_empty() {
                return Err(format!("{key}: names no environment variable"));
            }
            match env(name) {
                Some(value) if !value.is_empty() => Ok(Secret(value)),
                _ => Err(format!(
                    "{key}: the environment variable {name:?} is not set (or empty)"
                )),
            }
        };
        let timeout = |key: &str, ms: Option<u64>, default: Duration| -> Result<Duration, String> {
            match ms {
                None => Ok(default),
                Some(ms) if (1..=600_000).contains(&ms) => Ok(Duration::from_millis(ms)),
                Some(_) => Err(format!("{key}: must be 1 to 600000")),
            }
        };
        let d = &raw.delivery;
        let defaults = DeliveryPolicy::default();
        let policy = DeliveryPolicy {
            max_attempts: match d.max_attempts {
                None => defaults.max_attempts,
                Some(n) if (1..=100).contains(&n) => n,
                Some(_) => return Err("delivery.max-attempts: must be 1 to 100".into()),
            },
            backoff: timeout("delivery.backoff-ms", d.backoff_ms, defaults.backoff)?,
            max_backoff: match d.max_backoff_ms {
                None => defaults.max_backoff,
                Some(ms) if (1..=86_400_000).contains(&ms) => Duration::from_millis(ms),
                Some(_) => return Err("delivery.max-backoff-ms: must be 1 to 86400000".into()),
            },
            group_window: match d.group_window_ms {
                None => defaults.group_window,
                Some(ms) if ms <= 3_600_000 => Duration::from_millis(ms),
                Some(_) => return Err("delivery.group-window-ms: must be 0 to 3600000".into()),
            },
            attempt_timeout: timeout(
                "delivery.attempt-timeout-ms",
                d.attempt_timeout_ms,
                defaults.attempt_timeout,
            )?,
            concurrency: match d.concurrency {
                None => defaults.concurrency,
                Some(n) if (1..=256).contains(&n) => n,
                Some(_) => return Err("delivery.concurrency: must be 1 to 256".into()),
            },
            link_base: match &d.link_base {
                None => defaults.link_base,
                Some(base) => {
                    check_http_url("delivery.link-base", base)?;
                    base.trim_end_matches('/').to_owned()
                }
            },
        };
        if policy.max_backoff < policy.backoff {
            return Err("delivery.max-backoff-ms: must not be less than backoff-ms".into());
        }
        let default_timeout = policy.attempt_timeout;

        let mut channels = Channels::default();
        if let Some(email) = raw.channels.email {
            let key = "channels.email";
            if email.host.trim().is_empty() {
                return Err(format!("{key}.host: must not be empty"));
            }
            if email.port == 0 {
                return Err(format!("{key}.port: must be 1 to 65535"));
            }
            email
                .from
                .parse::<lettre::message::Mailbox>()
                .map_err(|err| format!("{key}.from: not a mailbox ({err})"))?;
            let credentials = match (email.username, email.password_env) {
                (None, None) => None,
                (Some(user), Some(env_name)) => {
                    Some((user, secret(&format!("{key}.password-env"), &env_name)?))
                }
                (Some(_), None) => {
                    return Err(format!("{key}.password-env: required with username"));
                }
                (None, Some(_)) => {
                    return Err(format!("{key}.username: required with password-env"));
                }
            };
            channels.email = Some(EmailChannel {
                host: email.host,
                port: email.port,
                security: email.security,
                credentials,
                from: email.from,
                timeout: timeout(
                    &format!("{key}.timeout-ms"),
                    email.timeout_ms,
                    default_timeout,
                )?,
            });
        }
        if let Some(slack) = raw.channels.slack {
            channels.slack = Some(SlackChannel {
                timeout: timeout(
                    "channels.slack.timeout-ms",
                    slack.timeout_ms,
                    default_timeout,
                )?,
            });
        }
        if let Some(sms) = raw.channels.sms {
            let key = "channels.sms";
            check_http_url(&format!("{key}.url"), &sms.url)?;
            let auth = match (sms.auth_header, sms.auth_env) {
                (None, None) => None,
                (Some(header), Some(env_name)) => {
                    http::HeaderName::from_bytes(header.as_bytes())
                        .map_err(|_| format!("{key}.auth-header: not a header name"))?;
                    let value = secret(&format!("{key}.auth-env"), &env_name)?;
                    http::HeaderValue::from_str(value.expose()).map_err(|_| {
                        format!("{key}.auth-env: the value is not allowed in a header")
                    })?;
                    Some((header, value))
                }
                (Some(_), None) => {
                    return Err(format!("{key}.auth-env: required with auth-header"));
                }
                (None, Some(_)) => {
                    return Err(format!("{key}.auth-header: required with auth-env"));
                }
            };
            check_template(&sms.body_template)
                .map_err(|message| format!("{key}.body-template: {message}"))?;
            channels.sms = Some(SmsChannel {
                url: sms.url,
                auth,
                body_template: sms.body_template,
                timeout: timeout(
                    &format!("{key}.timeout-ms"),
                    sms.timeout_ms,
                    default_timeout,
                )?,
            });
        }
        if let Some(pd) = raw.channels.pagerduty {
            let key = "channels.pagerduty";
            let base_url = pd
                .base_url
                .unwrap_or_else(|| "https://events.pagerduty.com".to_owned())
                .trim_end_matches('/')
                .to_owned();
            check_http_url(&format!("{key}.base-url"), &base_url)?;
            channels.pagerduty = Some(PagerDutyChannel {
                base_url,
                timeout: timeout(&format!("{key}.timeout-ms"), pd.timeout_ms, default_timeout)?,
            });
        }

        let mut config = DeliveryConfig {
            file: None,
            channels,
            policy,
            ..DeliveryConfig::default()
        };
        for (name, group) in raw.groups {
            let key = format!("groups.{}", quote_key(&name));
            if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                return Err(format!(
                    "{key}: a group name is 1 to 64 printable characters"
                ));
            }
            for channel in ChannelKind::ALL {
                let addresses = match channel {
                    ChannelKind::Email => &group.email,
                    ChannelKind::Slack => &group.slack,
                    ChannelKind::Sms => &group.sms,
                    ChannelKind::PagerDuty => &group.pagerduty,
                };
                if addresses.is_empty() {
                    continue;
                }
                let key = format!("{key}.{}", channel.as_str());
                if !config.channels.is_configured(channel) {
                    return Err(format!(
                        "{key}: the {} channel is not configured ([channels.{}] is missing)",
                        channel.as_str(),
                        channel.as_str()
                    ));
                }
                if addresses.len() > MAX_ADDRESSES {
                    return Err(format!("{key}: at most {MAX_ADDRESSES} addresses"));
                }
                for (n, address) in addresses.iter().enumerate() {
                    let key = format!("{key}[{n}]");
                    match channel {
                        ChannelKind::Email => {
                            address
                                .parse::<lettre::Address>()
                                .map_err(|err| format!("{key}: not an email address ({err})"))?;
                        }
                        ChannelKind::Sms => {
                            check_phone(address).map_err(|message| format!("{key}: {message}"))?
                        }
                        ChannelKind::Slack => check_http_url(&key, address)?,
                        ChannelKind::PagerDuty => {
                            let value = secret(&key, address)?;
                            config.routing_keys.insert(address.clone(), value);
                        }
                    }
                }
            }
            config.groups.insert(
                name,
                Group {
                    email: group.email,
                    sms: group.sms,
                    slack: group.slack,
                    pagerduty: group.pagerduty,
                },
            );
        }
        Ok(config)
    }

    /// The per-attempt time limit of a channel.
    pub fn timeout_of(&self, channel: ChannelKind) -> Duration {
        let c = &self.channels;
        match channel {
            ChannelKind::Email => c.email.as_ref().map(|e| e.timeout),
            ChannelKind::Slack => c.slack.as_ref().map(|s| s.timeout),
            ChannelKind::Sms => c.sms.as_ref().map(|s| s.timeout),
            ChannelKind::PagerDuty => c.pagerduty.as_ref().map(|p| p.timeout),
        }
        .unwrap_or(self.policy.attempt_timeout)
    }

    /// What `GET /alert-channels` shows: no secret, no full webhook URL.
    pub fn view(&self) -> ChannelsView {
        let c = &self.channels;
        ChannelsView {
            file: self.file.clone(),
            email: c.email.as_ref().map(|e| EmailView {
                host: e.host.clone(),
                port: e.port,
                security: e.security,
                username: e.credentials.as_ref().map(|(user, _)| user.clone()),
                password_set: e.credentials.is_some(),
                from: e.from.clone(),
                timeout_ms: e.timeout.as_millis() as u64,
            }),
            slack: c.slack.as_ref().map(|s| SlackView {
                timeout_ms: s.timeout.as_millis() as u64,
            }),
            sms: c.sms.as_ref().map(|s| SmsView {
                url: origin_of(&s.url),
                auth_header: s.auth.as_ref().map(|(header, _)| header.clone()),
                timeout_ms: s.timeout.as_millis() as u64,
            }),
            pagerduty: c.pagerduty.as_ref().map(|p| PagerDutyView {
                base_url: p.base_url.clone(),
                timeout_ms: p.timeout.as_millis() as u64,
            }),
            groups: self
                .groups
                .iter()
                .map(|(name, group)| GroupView {
                    name: name.clone(),
                    email: group
                        .email
                        .iter()
                        .map(|a| mask(ChannelKind::Email, a))
                        .collect(),
                    sms: group
                        .sms
                        .iter()
                        .map(|a| mask(ChannelKind::Sms, a))
                        .collect(),
                    slack: group
                        .slack
                        .iter()
                        .map(|a| mask(ChannelKind::Slack, a))
                        .collect(),
                    pagerduty: group.pagerduty.len(),
                })
                .collect(),
            delivery: PolicyView {
                max_attempts: self.policy.max_attempts,
                backoff_ms: self.policy.backoff.as_millis() as u64,
                max_backoff_ms: self.policy.max_backoff.as_millis() as u64,
                group_window_ms: self.policy.group_window.as_millis() as u64,
                attempt_timeout_ms: self.policy.attempt_timeout.as_millis() as u64,
                concurrency: self.policy.concurrency,
                link_base: self.policy.link_base.clone(),
            },
        }
    }
}

impl Channels {
    /// Whether `channel` has its `[channels.…]` table.
    pub fn is_configured(&self, channel: ChannelKind) -> bool {
        match channel {
            ChannelKind::Email => self.email.is_some(),
            ChannelKind::Slack => self.slack.is_some(),
            ChannelKind::Sms => self.sms.is_some(),
            ChannelKind::PagerDuty => self.pagerduty.is_some(),
        }
    }
}

fn quote_key(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

fn check_http_url(key: &str, url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|err| format!("{key}: not a URL ({err})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{key}: must be an http or https URL"));
    }
    Ok(())
}

fn check_phone(number: &str) -> Result<(), String> {
    let digits = number.strip_prefix('+').unwrap_or("");
    if (6..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err("a phone number is `+` and 6 to 15 digits (E.164)".into())
    }
}

/// Checks an SMS body template: both placeholders present, and JSON once
/// they are filled.
fn check_template(template: &str) -> Result<(), String> {
    for placeholder in ["{{to}}", "{{text}}"] {
        if !template.contains(placeholder) {
            return Err(format!("must contain {placeholder}"));
        }
    }
    let filled = fill_template(template, "+100000000", "a \"quoted\" text\n");
    serde_json::from_str::<serde_json::Value>(&filled).map_err(|err| {
        format!("is not JSON once filled in ({err}); put the placeholders inside JSON strings")
    })?;
    Ok(())
}

/// Fills `{{to}}` and `{{text}}` in an SMS body template, each value
/// JSON-escaped (the placeholders stand inside JSON strings).
pub fn fill_template(template: &str, to: &str, text: &str) -> String {
    template
        .replace("{{to}}", &json_escaped(to))
        .replace("{{text}}", &json_escaped(text))
}

fn json_escaped(value: &str) -> String {
    let quoted = serde_json::to_string(value).expect("a string serializes");
    quoted[1..quoted.len() - 1].to_owned()
}

/// An address as views show it: mailboxes and phone numbers partly,
/// webhook URLs only by their origin.
pub fn mask(channel: ChannelKind, address: &str) -> String {
    match channel {
        ChannelKind::Email => match address.split_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                format!("{first}***@{domain}")
            }
            None => "***".to_owned(),
        },
        ChannelKind::Sms => {
            let chars: Vec<char> = address.chars().collect();
            let tail: String = chars[chars.len().saturating_sub(2)..].iter().collect();
            format!("+***{tail}")
        }
        ChannelKind::Slack => format!("{}/***", origin_of(address)),
        // Deliveries record the variable's name, which is no secret.
        ChannelKind::PagerDuty => format!("env:{address}"),
    }
}

fn origin_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => parsed.origin().ascii_serialization(),
        Err(_) => "***".to_owned(),
    }
}

/// `GET /alert-channels`: what is configured, without secrets.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelsView {
    /// The file it was read from; none when the host started without one.
    pub file: Option<String>,
    /// The SMTP channel, if configured.
    pub email: Option<EmailView>,
    /// The Slack channel, if configured.
    pub slack: Option<SlackView>,
    /// The SMS gateway, if configured.
    pub sms: Option<SmsView>,
    /// PagerDuty, if configured.
    pub pagerduty: Option<PagerDutyView>,
    /// Recipient groups, addresses masked.
    pub groups: Vec<GroupView>,
    /// The delivery policy.
    pub delivery: PolicyView,
}

/// The SMTP channel as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailView {
    /// Server.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Connection security.
    pub security: SmtpSecurity,
    /// Login name, if any.
    pub username: Option<String>,
    /// Whether a password was read (never the password).
    pub password_set: bool,
    /// Sender.
    pub from: String,
    /// Per-attempt limit.
    pub timeout_ms: u64,
}

/// The Slack channel as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlackView {
    /// Per-attempt limit.
    pub timeout_ms: u64,
}

/// The SMS gateway as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmsView {
    /// The gateway's origin (scheme, host, port); its path may hold a key.
    pub url: String,
    /// The auth header's name (never its value).
    pub auth_header: Option<String>,
    /// Per-attempt limit.
    pub timeout_ms: u64,
}

/// PagerDuty as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PagerDutyView {
    /// Events API base URL.
    pub base_url: String,
    /// Per-attempt limit.
    pub timeout_ms: u64,
}

/// A recipient group as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupView {
    /// Its name.
    pub name: String,
    /// Mailboxes, masked (`a***@example.com`).
    pub email: Vec<String>,
    /// Numbers, masked (`+***78`).
    pub sms: Vec<String>,
    /// Webhooks, by origin only (`https://hooks.slack.com/***`).
    pub slack: Vec<String>,
    /// How many PagerDuty routing keys.
    pub pagerduty: usize,
}

/// `[delivery]` as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    /// Attempts per delivery.
    pub max_attempts: u32,
    /// First retry's wait.
    pub backoff_ms: u64,
    /// Longest wait.
    pub max_backoff_ms: u64,
    /// Grouping window of high and medium notices.
    pub group_window_ms: u64,
    /// Default per-attempt limit.
    pub attempt_timeout_ms: u64,
    /// Sends at once per channel.
    pub concurrency: usize,
    /// The base of links in notices.
    pub link_base: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
[delivery]
max-attempts = 3
backoff-ms = 100

[channels.email]
host = "127.0.0.1"
port = 2525
security = "plain"
username = "alerts"
password-env = "SMTP_PW"
from = "AutoAgent <alerts@example.com>"

[channels.slack]
[channels.sms]
url = "http://127.0.0.1:9000/send"
auth-header = "X-Token"
auth-env = "SMS_TOKEN"
body-template = '{"to": "{{to}}", "message": "{{text}}"}'

[channels.pagerduty]
base-url = "http://127.0.0.1:9001/"

[groups.Admin]
email = ["admin@example.com"]
sms = ["+821012345678"]
slack = ["https://hooks.slack.com/services/T0/B0/secretpart"]
pagerduty = ["PD_ADMIN"]

[groups."Dev team"]
email = ["dev@example.com"]
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "SMTP_PW" => Some("hunter2".into()),
            "SMS_TOKEN" => Some("sms-secret".into()),
            "PD_ADMIN" => Some("R0UTINGKEY".into()),
            _ => None,
        }
    }

    #[test]
    fn a_full_file_parses_with_its_secrets_from_the_environment() {
        let config = DeliveryConfig::parse(FULL, env).unwrap();
        assert_eq!(config.policy.max_attempts, 3);
        assert_eq!(config.policy.backoff, Duration::from_millis(100));
        assert_eq!(config.policy.group_window, Duration::from_secs(30));
        assert_eq!(
            config.channels.pagerduty.as_ref().unwrap().base_url,
            "http://127.0.0.1:9001"
        );
        assert_eq!(config.routing_keys["PD_ADMIN"].expose(), "R0UTINGKEY");
        assert_eq!(config.groups["Dev team"].email, ["dev@example.com"]);
        assert!(config.groups.contains_key("OnCall"), "default groups exist");
    }

    #[test]
    fn the_view_shows_no_secret() {
        let config = DeliveryConfig::parse(FULL, env).unwrap();
        let shown = serde_json::to_string(&config.view()).unwrap();
        for secret in [
            "hunter2",
            "sms-secret",
            "R0UTINGKEY",
            "secretpart",
            "admin@example.com",
            "12345678",
        ] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert!(shown.contains("a***@example.com"), "{shown}");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                FULL.replace("port = 2525", "port = 2525\nhots = 1"),
                "channels.email.hots: unknown field `hots`",
            ),
            (
                FULL.replace("max-attempts = 3", "max-attempts = 0"),
                "delivery.max-attempts",
            ),
            (
                FULL.replace("SMTP_PW", "NOPE"),
                "channels.email.password-env",
            ),
            (
                FULL.replace("{{text}}", "{{txt}}"),
                "channels.sms.body-template",
            ),
            (
                FULL.replace("+821012345678", "0101234"),
                "groups.Admin.sms[0]",
            ),
            (
                FULL.replace("[channels.slack]", ""),
                "groups.Admin.slack: the slack channel is not configured",
            ),
            (
                FULL.replace("dev@example.com", "dev"),
                "groups.\"Dev team\".email[0]",
            ),
            (
                FULL.replace("\"plain\"", "\"ssl\""),
                "channels.email.security",
            ),
        ];
        for (text, expected) in cases {
            let err = DeliveryConfig::parse(&text, env).unwrap_err();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn template_values_are_json_escaped() {
        let filled = fill_template(
            r#"{"to": "{{to}}", "text": "{{text}}"}"#,
            "+8210",
            "say \"hi\"\\\n{{to}}",
        );
        let value: serde_json::Value = serde_json::from_str(&filled).unwrap();
        assert_eq!(value["text"], "say \"hi\"\\\n{{to}}");
        assert_eq!(value["to"], "+8210");
    }

    #[test]
    fn addresses_are_masked() {
        assert_eq!(
            mask(ChannelKind::Email, "bob@example.com"),
            "b***@example.com"
        );
        assert_eq!(mask(ChannelKind::Sms, "+821012345678"), "+***78");
        assert_eq!(
            mask(ChannelKind::Slack, "https://hooks.slack.com/services/T/B/X"),
            "https://hooks.slack.com/***"
        );
    }
}
