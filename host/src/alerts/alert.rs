//! An alert and what can happen to it: raised, held, notified, escalated,
//! acknowledged (for a while), resolved. Pure: the service decides when,
//! these methods say what changes and which notice goes out.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::delivery::{ChannelKind, NoticeEvent};
use super::rules::{AlertRules, EscalationStep, SeverityRule};
use crate::clock::Timestamp;
use crate::names::Name;
use crate::recovery::Severity;

/// Most entries of an alert's history; past it the oldest after the first
/// go.
pub const MAX_HISTORY: usize = 100;

/// Most notices recorded on an alert (the count stays in `noticesSent`).
pub const MAX_NOTICES: usize = 50;

/// Where an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// Held while a recovery stage may still repair the incident (high and
    /// medium, when their rule says so).
    Waiting,
    /// Held by a silence until it ends.
    Silenced,
    /// Its check is suppressed under a failing parent: nobody is paged.
    Suppressed,
    /// People were told; it escalates until someone acknowledges it.
    Firing,
    /// Someone acknowledged it: escalation stops (until `acknowledgedUntil`).
    Acknowledged,
    /// Over.
    Resolved,
}

impl AlertStatus {
    /// The word the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Silenced => "silenced",
            Self::Suppressed => "suppressed",
            Self::Firing => "firing",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
        }
    }

    /// Whether nobody has been told yet because something holds it.
    pub fn is_held(self) -> bool {
        matches!(self, Self::Waiting | Self::Silenced | Self::Suppressed)
    }
}

/// What raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// An incident of a health check.
    Incident,
    /// An action plan that failed.
    Plan,
    /// A worker that became unhealthy.
    Worker,
}

impl SourceKind {
    /// The word the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incident => "incident",
            Self::Plan => "plan",
            Self::Worker => "worker",
        }
    }
}

/// One notice an alert sent: what, when, to whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NoticeRecord {
    /// The notice's key (`alert_…/escalation/1`): the first part of each of
    /// its deliveries' keys.
    pub key: String,
    /// What it told.
    pub event: NoticeEvent,
    /// When it was queued.
    pub at: Timestamp,
    /// The channels.
    pub channels: Vec<ChannelKind>,
    /// The recipient groups.
    pub recipients: Vec<String>,
}

/// One thing that happened to an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertEntry {
    /// When.
    pub at: Timestamp,
    /// What, one word: `raised`, `held`, `notified`, `escalated`,
    /// `acknowledged`, `renotified`, `updated`, `resolved`.
    pub event: String,
    /// Details for people.
    pub notes: String,
}

/// An alert: one per incident (or failed plan, or unhealthy worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Unique id, `alert_…`.
    pub id: String,
    /// What raised it.
    pub source_kind: SourceKind,
    /// The incident, plan or worker id.
    pub source_id: String,
    /// The health check, for an incident's alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_id: Option<String>,
    /// The team it belongs to.
    pub team: String,
    /// Its severity, which picks its rule.
    pub severity: Severity,
    /// Where it is.
    pub status: AlertStatus,
    /// One line.
    pub title: String,
    /// What the source says now.
    pub summary: String,
    /// Where to look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// When it was raised.
    pub raised_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When people were first told; none while it was only held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified_at: Option<Timestamp>,
    /// Escalation steps taken (0: only the first notice).
    pub step: u32,
    /// When the current step (or the first notice) went out: the next
    /// step's wait counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_at: Option<Timestamp>,
    /// When something is next due: the next escalation step, the end of
    /// an acknowledgement, of a silence or of the wait for recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Timestamp>,
    /// The silence holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_id: Option<String>,
    /// Who acknowledged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<Timestamp>,
    /// Until when; none: for as long as it stays open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_until: Option<Timestamp>,
    /// When it was resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    /// Who resolved it: `incident` (its incident was resolved), `plan`,
    /// `worker`, or a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// The notices it sent, oldest first (at most 50).
    pub notices: Vec<NoticeRecord>,
    /// How many notices it sent in all.
    pub notices_sent: u32,
    /// What happened, oldest first (at most 100).
    pub history: Vec<AlertEntry>,
    /// Whether its incident's recovery gave up (the incident escalated), as
    /// the alert last heard.
    #[serde(default)]
    pub recovery_gave_up: bool,
    /// Whether its check flaps, as the alert last heard.
    #[serde(default)]
    pub flapping: bool,
}

/// A notice to queue: the event and its audience.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// What it tells.
    pub event: NoticeEvent,
    /// Its key, unique per alert and step.
    pub key: String,
    /// (channel, recipient group) pairs.
    pub targets: Vec<(ChannelKind, String)>,
}

/// Whether a new alert is held, and by what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Told at once.
    None,
    /// Its check is suppressed.
    Suppressed,
    /// A silence matches; it ends at the time given.
    Silence {
        /// The silence.
        id: String,
        /// When it ends.
        ends_at: Timestamp,
    },
    /// It waits for a running recovery, at most until the time given.
    Recovery {
        /// The latest it waits to.
        until: Timestamp,
    },
}

fn audience(channels: &[ChannelKind], recipients: &[String]) -> Vec<(ChannelKind, String)> {
    let mut targets = Vec::with_capacity(channels.len() * recipients.len());
    for channel in channels {
        for group in recipients {
            targets.push((*channel, group.clone()));
        }
    }
    targets
}

/// The longest an alert waits for a running recovery when its rule has no
/// escalation step to bound the wait.
pub const MAX_RECOVERY_WAIT: Duration = Duration::from_secs(15 * 60);

/// How long an alert of `rule` waits for a running recovery: until its
/// first escalation step would have been due, so a recovery that never
/// ends never hides it for longer than the rule allows.
pub fn recovery_wait(rule: &SeverityRule) -> Duration {
    rule.escalation
        .first()
        .map_or(MAX_RECOVERY_WAIT, |s| Duration::from_millis(s.after_ms))
}

impl Alert {
    /// A new alert, not yet notified.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        source_kind: SourceKind,
        source_id: String,
        check_id: Option<String>,
        team: String,
        severity: Severity,
        title: String,
        summary: String,
        link: Option<String>,
        now: Timestamp,
    ) -> Self {
        let mut alert = Self {
            id,
            source_kind,
            source_id,
            check_id,
            team,
            severity,
            status: AlertStatus::Waiting,
            title,
            summary,
            link,
            raised_at: now,
            updated_at: now,
            notified_at: None,
            step: 0,
            step_at: None,
            due_at: None,
            silence_id: None,
            acknowledged_by: None,
            acknowledged_at: None,
            acknowledged_until: None,
            resolved_at: None,
            resolved_by: None,
            resolution: None,
            notices: Vec::new(),
            notices_sent: 0,
            history: Vec::new(),
            recovery_gave_up: false,
            flapping: false,
        };
        alert.note(now, "raised", String::new());
        alert
    }

    /// Whether it is still open.
    pub fn is_open(&self) -> bool {
        self.status != AlertStatus::Resolved
    }

    /// `kind:id` of its source; one open alert per source.
    pub fn source_key(&self) -> String {
        source_key(self.source_kind, &self.source_id)
    }

    /// Appends to the history, keeping it bounded.
    pub fn note(&mut self, at: Timestamp, event: &str, notes: impl Into<String>) {
        if self.history.len() >= MAX_HISTORY {
            self.history.remove(1);
        }
        self.history.push(AlertEntry {
            at,
            event: event.to_owned(),
            notes: notes.into(),
        });
        self.updated_at = at;
    }

    fn record(&mut self, outgoing: &Outgoing, at: Timestamp) {
        if self.notices.len() >= MAX_NOTICES {
            self.notices.remove(0);
        }
        let mut channels: Vec<ChannelKind> = outgoing.targets.iter().map(|t| t.0).collect();
        channels.sort();
        channels.dedup();
        let mut recipients: Vec<String> = Vec::new();
        for (_, group) in &outgoing.targets {
            if !recipients.contains(group) {
                recipients.push(group.clone());
            }
        }
        self.notices.push(NoticeRecord {
            key: outgoing.key.clone(),
            event: outgoing.event,
            at,
            channels,
            recipients,
        });
        self.notices_sent = self.notices_sent.saturating_add(1);
    }

    /// Holds it (or not) as `hold` says; `Hold::None` notifies at once.
    pub fn hold_or_fire(
        &mut self,
        hold: Hold,
        rules: &AlertRules,
        now: Timestamp,
    ) -> Option<Outgoing> {
        match hold {
            Hold::None => Some(self.fire(rules, now)),
            Hold::Suppressed => {
                self.status = AlertStatus::Suppressed;
                self.due_at = None;
                self.note(
                    now,
                    "held",
                    "its check is suppressed under a failing parent",
                );
                None
            }
            Hold::Silence { id, ends_at } => {
                self.status = AlertStatus::Silenced;
                self.due_at = Some(ends_at);
                self.note(now, "held", format!("silenced by {id} until {ends_at}"));
                self.silence_id = Some(id);
                None
            }
            Hold::Recovery { until } => {
                self.status = AlertStatus::Waiting;
                self.due_at = Some(until);
                self.note(
                    now,
                    "held",
                    format!("waiting for the running recovery, at most until {until}"),
                );
                None
            }
        }
    }

    /// Tells the rule's first audience: it fires, and its first escalation
    /// step is due after that step's wait.
    pub fn fire(&mut self, rules: &AlertRules, now: Timestamp) -> Outgoing {
        let rule = rules.of(self.severity);
        self.status = AlertStatus::Firing;
        self.silence_id = None;
        self.notified_at = Some(now);
        self.step = 0;
        self.step_at = Some(now);
        self.due_at = next_step(rule, 0).map(|s| now.plus(Duration::from_millis(s.after_ms)));
        let outgoing = Outgoing {
            event: NoticeEvent::Trigger,
            key: format!("{}/trigger", self.id),
            targets: audience(&rule.channels, &rule.recipients),
        };
        self.record(&outgoing, now);
        self.note(now, "notified", describe(&outgoing));
        outgoing
    }

    /// The next escalation step, if it fires and one is left: the step's
    /// audience is told and the step after it is due after its wait.
    pub fn escalate(&mut self, rules: &AlertRules, now: Timestamp) -> Option<Outgoing> {
        if self.status != AlertStatus::Firing {
            return None;
        }
        let rule = rules.of(self.severity);
        let Some(step) = next_step(rule, self.step) else {
            self.due_at = None;
            return None;
        };
        self.step += 1;
        self.step_at = Some(now);
        self.due_at =
            next_step(rule, self.step).map(|s| now.plus(Duration::from_millis(s.after_ms)));
        let outgoing = Outgoing {
            event: NoticeEvent::Escalation { step: self.step },
            key: format!("{}/escalation/{}", self.id, self.step),
            targets: audience(&step.channels, &step.recipients),
        };
        self.record(&outgoing, now);
        self.note(
            now,
            "escalated",
            format!("step {}: {}", self.step, describe(&outgoing)),
        );
        Some(outgoing)
    }

    /// Someone acknowledged it: escalation stops, until `until` if given.
    /// PagerDuty hears of it where it was paged.
    pub fn acknowledge(
        &mut self,
        by: &str,
        until: Option<Timestamp>,
        now: Timestamp,
    ) -> Option<Outgoing> {
        let notified = self.notified_at.is_some();
        self.status = AlertStatus::Acknowledged;
        self.acknowledged_by = Some(by.to_owned());
        self.acknowledged_at = Some(now);
        self.acknowledged_until = until;
        self.due_at = until;
        self.note(
            now,
            "acknowledged",
            match until {
                Some(until) => format!("by {by} until {until}"),
                None => format!("by {by}"),
            },
        );
        let paged = self.told_on(&[ChannelKind::PagerDuty]);
        if !notified || paged.is_empty() {
            return None;
        }
        // Repeatable notices are numbered by the alert's notice count, so
        // each has its own key (an acknowledgement may come again after a
        // re-notification).
        let n = self.notices_sent + 1;
        let outgoing = Outgoing {
            event: NoticeEvent::Acknowledge,
            key: format!("{}/acknowledge/{n}", self.id),
            targets: paged,
        };
        self.record(&outgoing, now);
        Some(outgoing)
    }

    /// An acknowledgement ran out while it is still open: everyone told so
    /// far is told again (with what the source says now) and escalation
    /// goes on from the step it had reached.
    pub fn renotify(&mut self, rules: &AlertRules, now: Timestamp) -> Outgoing {
        let rule = rules.of(self.severity);
        self.status = AlertStatus::Firing;
        self.acknowledged_until = None;
        self.step_at = Some(now);
        self.due_at =
            next_step(rule, self.step).map(|s| now.plus(Duration::from_millis(s.after_ms)));
        let mut targets = audience(&rule.channels, &rule.recipients);
        for step in rule.escalation.iter().take(self.step as usize) {
            for target in audience(&step.channels, &step.recipients) {
                if !targets.contains(&target) {
                    targets.push(target);
                }
            }
        }
        let n = self.notices_sent + 1;
        let outgoing = Outgoing {
            event: NoticeEvent::Renotify,
            key: format!("{}/renotify/{n}", self.id),
            targets,
        };
        self.record(&outgoing, now);
        self.note(
            now,
            "renotified",
            format!("the acknowledgement ran out; {}", describe(&outgoing)),
        );
        outgoing
    }

    /// Notes that what is known about it changed (`what`) and, if people
    /// were told of it and it is still firing or acknowledged, tells those
    /// told so far on email and Slack.
    pub fn update(&mut self, what: &str, now: Timestamp) -> Option<Outgoing> {
        self.note(now, "updated", what);
        if !matches!(self.status, AlertStatus::Firing | AlertStatus::Acknowledged) {
            return None;
        }
        let targets = self.told_on(&[ChannelKind::Email, ChannelKind::Slack]);
        if targets.is_empty() {
            return None;
        }
        let outgoing = Outgoing {
            event: NoticeEvent::Update,
            key: format!("{}/update/{}", self.id, self.notices_sent + 1),
            targets,
        };
        self.record(&outgoing, now);
        Some(outgoing)
    }

    /// Resolves it. Those told are told it is over on PagerDuty (where it
    /// was paged) and Slack (where it was posted); an alert nobody heard of
    /// resolves quietly.
    pub fn resolve(&mut self, by: &str, resolution: &str, now: Timestamp) -> Option<Outgoing> {
        self.status = AlertStatus::Resolved;
        self.due_at = None;
        self.resolved_at = Some(now);
        self.resolved_by = Some(by.to_owned());
        self.resolution = Some(resolution.to_owned());
        self.note(now, "resolved", format!("by {by}: {resolution}"));
        let targets = self.told_on(&[ChannelKind::PagerDuty, ChannelKind::Slack]);
        if targets.is_empty() {
            return None;
        }
        let outgoing = Outgoing {
            event: NoticeEvent::Resolve,
            key: format!("{}/resolve", self.id),
            targets,
        };
        self.record(&outgoing, now);
        Some(outgoing)
    }

    /// The (channel, group) pairs told of it so far (by its trigger,
    /// escalation steps and re-notifications) on any of `channels`, in the
    /// order they were first told.
    fn told_on(&self, channels: &[ChannelKind]) -> Vec<(ChannelKind, String)> {
        let mut targets: Vec<(ChannelKind, String)> = Vec::new();
        let telling = self.notices.iter().filter(|n| {
            matches!(
                n.event,
                NoticeEvent::Trigger | NoticeEvent::Escalation { .. } | NoticeEvent::Renotify
            )
        });
        for notice in telling {
            for channel in notice.channels.iter().filter(|c| channels.contains(c)) {
                for group in &notice.recipients {
                    let target = (*channel, group.clone());
                    if !targets.contains(&target) {
                        targets.push(target);
                    }
                }
            }
        }
        targets
    }

    /// The next escalation step of its rule, as it stands, with when it is
    /// due; for `GET /alerts/{id}`.
    pub fn next_escalation(&self, rules: &AlertRules) -> Option<NextEscalation> {
        if self.status != AlertStatus::Firing {
            return None;
        }
        let step = next_step(rules.of(self.severity), self.step)?;
        Some(NextEscalation {
            step: self.step + 1,
            due_at: self.due_at?,
            channels: step.channels.clone(),
            recipients: step.recipients.clone(),
        })
    }
}

/// The step after `taken` steps, if the rule has one.
fn next_step(rule: &SeverityRule, taken: u32) -> Option<&EscalationStep> {
    rule.escalation.get(taken as usize)
}

fn describe(outgoing: &Outgoing) -> String {
    let mut channels: Vec<&str> = outgoing.targets.iter().map(|t| t.0.as_str()).collect();
    channels.sort_unstable();
    channels.dedup();
    let mut groups: Vec<&str> = Vec::new();
    for (_, group) in &outgoing.targets {
        if !groups.contains(&group.as_str()) {
            groups.push(group);
        }
    }
    format!("{} to {}", channels.join(", "), groups.join(", "))
}

/// `kind:id`: the key one open alert per source is kept under.
pub fn source_key(kind: SourceKind, id: &str) -> String {
    format!("{}:{id}", kind.as_str())
}

/// The escalation step an alert reaches next.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NextEscalation {
    /// Its number, from 1.
    pub step: u32,
    /// When it is due unless someone acknowledges the alert.
    pub due_at: Timestamp,
    /// The channels.
    pub channels: Vec<ChannelKind>,
    /// The recipient groups.
    pub recipients: Vec<String>,
}

/// Filters and paging of `GET /alerts`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AlertQuery {
    /// Only alerts in this status.
    pub status: Option<AlertStatus>,
    /// Only alerts of this severity.
    pub severity: Option<Severity>,
    /// Only alerts raised by this kind of source.
    pub source: Option<SourceKind>,
    /// Only alerts of this team.
    pub team: Option<Name>,
    /// Page size (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// Where the page starts: the `nextCursor` of the page before.
    pub cursor: Option<Name>,
}

/// One page of alerts, oldest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertPage {
    /// The alerts.
    pub items: Vec<Alert>,
    /// The page size used.
    pub limit: usize,
    /// Where the next page starts; none on the last page.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::EARLIEST.plus(Duration::from_millis(ms))
    }

    fn alert(severity: Severity) -> Alert {
        Alert::new(
            "alert_1".into(),
            SourceKind::Incident,
            "incident_1".into(),
            Some("web".into()),
            "ops".into(),
            severity,
            "web is down".into(),
            "connection refused".into(),
            None,
            at(0),
        )
    }

    fn rules() -> AlertRules {
        let mut rules = AlertRules::default();
        for rule in &mut rules.rules {
            rule.escalation = vec![
                EscalationStep {
                    after_ms: 1000,
                    channels: vec![ChannelKind::Sms],
                    recipients: vec!["OnCall".into()],
                },
                EscalationStep {
                    after_ms: 2000,
                    channels: vec![ChannelKind::Email],
                    recipients: vec!["Manager".into()],
                },
            ];
        }
        rules
    }

    #[test]
    fn firing_escalates_step_by_step_until_the_chain_ends() {
        let rules = rules();
        let mut alert = alert(Severity::Critical);
        let first = alert.fire(&rules, at(10));
        assert_eq!(first.event, NoticeEvent::Trigger);
        assert_eq!(first.targets.len(), 12, "4 channels × 3 groups");
        assert_eq!(alert.due_at, Some(at(1010)));
        let one = alert.escalate(&rules, at(1010)).unwrap();
        assert_eq!(one.event, NoticeEvent::Escalation { step: 1 });
        assert_eq!(one.targets, [(ChannelKind::Sms, "OnCall".to_owned())]);
        assert_eq!(one.key, "alert_1/escalation/1");
        assert_eq!(alert.due_at, Some(at(3010)));
        let two = alert.escalate(&rules, at(3010)).unwrap();
        assert_eq!(two.event, NoticeEvent::Escalation { step: 2 });
        assert_eq!(alert.due_at, None, "the chain ended");
        assert_eq!(alert.escalate(&rules, at(9000)), None);
        assert_eq!(alert.notices_sent, 3);
    }

    #[test]
    fn an_acknowledgement_stops_escalation_and_its_end_renotifies_everyone_told() {
        let rules = rules();
        let mut alert = alert(Severity::Critical);
        alert.fire(&rules, at(0));
        alert.escalate(&rules, at(1000)).unwrap();
        let ack = alert
            .acknowledge("alice", Some(at(5000)), at(1500))
            .unwrap();
        assert_eq!(ack.event, NoticeEvent::Acknowledge);
        assert!(
            ack.targets.iter().all(|t| t.0 == ChannelKind::PagerDuty),
            "only PagerDuty hears of an acknowledgement"
        );
        assert_eq!(alert.status, AlertStatus::Acknowledged);
        assert_eq!(alert.due_at, Some(at(5000)));
        assert_eq!(alert.escalate(&rules, at(3000)), None, "acknowledged");
        let again = alert.renotify(&rules, at(5000));
        assert_eq!(again.event, NoticeEvent::Renotify);
        assert!(
            again
                .targets
                .contains(&(ChannelKind::Sms, "OnCall".to_owned()))
        );
        assert!(
            again
                .targets
                .contains(&(ChannelKind::Email, "Admin".to_owned()))
        );
        assert_eq!(alert.status, AlertStatus::Firing);
        assert_eq!(alert.due_at, Some(at(7000)), "step 2 after its wait");
    }

    #[test]
    fn resolving_tells_pagerduty_and_slack_and_a_held_alert_resolves_quietly() {
        let rules = rules();
        let mut told = alert(Severity::Critical);
        told.fire(&rules, at(0));
        let resolve = told.resolve("incident", "recovered", at(100)).unwrap();
        assert_eq!(resolve.event, NoticeEvent::Resolve);
        assert!(
            resolve
                .targets
                .iter()
                .all(|t| matches!(t.0, ChannelKind::PagerDuty | ChannelKind::Slack))
        );
        assert_eq!(resolve.targets.len(), 6);
        let mut held = alert(Severity::High);
        assert_eq!(
            held.hold_or_fire(Hold::Recovery { until: at(900) }, &rules, at(0)),
            None
        );
        assert_eq!(held.status, AlertStatus::Waiting);
        assert_eq!(held.resolve("incident", "recovered", at(10)), None);
        assert_eq!(held.notices_sent, 0);
    }

    #[test]
    fn an_update_goes_by_email_and_slack_to_those_told_and_to_nobody_before() {
        let rules = rules();
        let mut held = alert(Severity::High);
        held.hold_or_fire(Hold::Recovery { until: at(900) }, &rules, at(0));
        assert_eq!(held.update("flapping", at(1)), None, "nobody was told yet");
        let mut told = alert(Severity::Critical);
        told.fire(&rules, at(0));
        let update = told.update("recovery gave up", at(5)).unwrap();
        assert_eq!(update.event, NoticeEvent::Update);
        assert_eq!(update.key, "alert_1/update/2");
        assert_eq!(
            update.targets,
            [
                (ChannelKind::Email, "Admin".to_owned()),
                (ChannelKind::Email, "Manager".to_owned()),
                (ChannelKind::Email, "OnCall".to_owned()),
                (ChannelKind::Slack, "Admin".to_owned()),
                (ChannelKind::Slack, "Manager".to_owned()),
                (ChannelKind::Slack, "OnCall".to_owned()),
            ]
        );
        assert_eq!(
            told.due_at,
            Some(at(1000)),
            "an update does not move escalation"
        );
    }

    #[test]
    fn the_wait_for_recovery_is_bounded_by_the_first_step() {
        let rules = AlertRules::default();
        assert_eq!(
            recovery_wait(rules.of(Severity::High)),
            Duration::from_secs(900)
        );
        let mut rule = rules.of(Severity::Medium).clone();
        rule.escalation.clear();
        assert_eq!(recovery_wait(&rule), MAX_RECOVERY_WAIT);
    }
}
