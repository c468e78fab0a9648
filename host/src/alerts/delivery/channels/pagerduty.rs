//! PagerDuty Events API v2: one event per notice, deduplicated by the
//! incident (else the alert).

use serde_json::{Value, json};

use super::truncate_chars;
use crate::alerts::delivery::{Notice, NoticeEvent};

/// PagerDuty's severity for ours: critical stays critical, high is
/// `error`, medium `warning`, anything else `info`.
pub fn pagerduty_severity(severity: &str) -> &'static str {
    match severity {
        "critical" => "critical",
        "high" => "error",
        "medium" => "warning",
        _ => "info",
    }
}

/// PagerDuty's `event_action` for an event.
fn action(event: NoticeEvent) -> &'static str {
    match event {
        // An update never goes to PagerDuty; were one routed there, a
        // trigger on the same dedup key only refreshes the open incident.
        NoticeEvent::Trigger
        | NoticeEvent::Escalation { .. }
        | NoticeEvent::Renotify
        | NoticeEvent::Update => "trigger",
        NoticeEvent::Acknowledge => "acknowledge",
        NoticeEvent::Resolve => "resolve",
    }
}

/// The event's JSON body (`POST {base-url}/v2/enqueue`).
pub(super) fn event(routing_key: &str, notice: &Notice) -> Value {
    let dedup_key = notice.incident_id.as_deref().unwrap_or(&notice.alert_id);
    let action = action(notice.event);
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup_key,
    });
    if action == "trigger" {
        event["payload"] = json!({
            "summary": truncate_chars(&notice.title, 1024),
            "source": notice.source,
            "severity": pagerduty_severity(&notice.severity),
            "timestamp": notice.raised_at,
            "custom_details": {
                "alert_id": notice.alert_id,
                "incident_id": notice.incident_id,
                "team": notice.team,
                "event": notice.event.as_str(),
                "details": notice.body,
            },
        });
        event["client"] = json!("AutoAgent");
        if let Some(link) = &notice.link {
            event["links"] = json!([{"href": link, "text": "Incident"}]);
        }
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;

    fn notice(event: NoticeEvent, incident: Option<&str>) -> Notice {
        Notice {
            alert_id: "alert_1".into(),
            incident_id: incident.map(str::to_owned),
            team: "ops".into(),
            event,
            severity: "high".into(),
            title: "web-1 is slow".into(),
            body: "p99 over 2 s".into(),
            link: Some("https://autoagent.example/incidents/inc_1".into()),
            source: "check:web-1".into(),
            raised_at: Timestamp::EARLIEST,
            key: "alert_1/trigger/0".into(),
        }
    }

    #[test]
    fn severities_map_to_pagerduty_words() {
        assert_eq!(pagerduty_severity("critical"), "critical");
        assert_eq!(pagerduty_severity("high"), "error");
        assert_eq!(pagerduty_severity("medium"), "warning");
        assert_eq!(pagerduty_severity("low"), "info");
    }

    #[test]
    fn a_trigger_carries_the_payload_and_dedups_on_the_incident() {
        let event = event(
            "KEY",
            &notice(NoticeEvent::Escalation { step: 2 }, Some("inc_1")),
        );
        assert_eq!(event["event_action"], "trigger");
        assert_eq!(event["dedup_key"], "inc_1");
        assert_eq!(event["routing_key"], "KEY");
        assert_eq!(event["payload"]["severity"], "error");
        assert_eq!(event["payload"]["summary"], "web-1 is slow");
        assert_eq!(
            event["links"][0]["href"],
            "https://autoagent.example/incidents/inc_1"
        );
    }

    #[test]
    fn resolve_and_acknowledge_carry_no_payload_and_fall_back_to_the_alert() {
        let resolve = event("KEY", &notice(NoticeEvent::Resolve, None));
        assert_eq!(resolve["event_action"], "resolve");
        assert_eq!(resolve["dedup_key"], "alert_1");
        assert!(resolve.get("payload").is_none());
        let ack = event("KEY", &notice(NoticeEvent::Acknowledge, Some("inc_1")));
        assert_eq!(ack["event_action"], "acknowledge");
    }
}
