//! Pure: which due deliveries go out together.
//!
//! High and medium deliveries to one recipient of one team on one channel
//! whose due times fall within the window of the first travel as one
//! message. Critical deliveries and PagerDuty events (one event per dedup
//! key) always go alone.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::{ChannelKind, Delivery};

/// Most deliveries one grouped message carries.
pub(super) const MAX_GROUP: usize = 50;

/// Whether a delivery may share a message.
pub(super) fn groupable(delivery: &Delivery) -> bool {
    delivery.notice.groupable() && delivery.channel != ChannelKind::PagerDuty
}

type GroupKey<'a> = (&'a str, ChannelKind, &'a str);

fn key_of(delivery: &Delivery) -> GroupKey<'_> {
    (
        delivery.notice.team.as_str(),
        delivery.channel,
        delivery.recipient.as_str(),
    )
}

/// Forms the sends of one pass: `due` are the ids whose timer fired,
/// earliest first; `waiting` every delivery waiting for a send (the due
/// ones included). Each send lists its deliveries' ids, earliest due
/// first; a delivery is in at most one send. Due ids missing from
/// `waiting` are ignored.
pub(super) fn form_sends(
    due: &[String],
    waiting: &HashMap<String, Delivery>,
    window: Duration,
) -> Vec<Vec<String>> {
    let mut by_key: HashMap<GroupKey<'_>, Vec<&Delivery>> = HashMap::new();
    for delivery in waiting.values().filter(|d| groupable(d)) {
        by_key.entry(key_of(delivery)).or_default().push(delivery);
    }
    for members in by_key.values_mut() {
        members.sort_by(|a, b| (a.next_try, &a.id).cmp(&(b.next_try, &b.id)));
    }
    let mut taken: HashSet<&str> = HashSet::new();
    let mut sends = Vec::new();
    for id in due {
        let Some(anchor) = waiting.get(id) else {
            continue;
        };
        if taken.contains(anchor.id.as_str()) {
            continue;
        }
        if !groupable(anchor) {
            taken.insert(&anchor.id);
            sends.push(vec![anchor.id.clone()]);
            continue;
        }
        let until = anchor.next_try.plus(window);
        let mut send = vec![anchor.id.clone()];
        taken.insert(&anchor.id);
        for member in &by_key[&key_of(anchor)] {
            if send.len() >= MAX_GROUP || member.next_try > until {
                break;
            }
            if taken.insert(&member.id) {
                send.push(member.id.clone());
            }
        }
        sends.push(send);
    }
    sends
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::delivery::{DeliveryStatus, Notice, NoticeEvent};
    use crate::clock::Timestamp;

    fn at(ms: u64) -> Timestamp {
        Timestamp::EARLIEST.plus(Duration::from_millis(ms))
    }

    fn delivery(id: &str, severity: &str, channel: ChannelKind, to: &str, due_ms: u64) -> Delivery {
        Delivery {
            id: id.into(),
            notice: Notice {
                alert_id: format!("alert_{id}"),
                incident_id: None,
                team: "ops".into(),
                event: NoticeEvent::Trigger,
                severity: severity.into(),
                title: id.into(),
                body: String::new(),
                link: None,
                source: "test".into(),
                raised_at: at(0),
                key: id.into(),
            },
            channel,
            group: "Admin".into(),
            recipient: to.into(),
            status: DeliveryStatus::Pending,
            queued_at: at(0),
            next_try: at(due_ms),
            attempts_made: 0,
            attempts: Vec::new(),
            error: None,
            finished_at: None,
        }
    }

    fn waiting(deliveries: Vec<Delivery>) -> HashMap<String, Delivery> {
        deliveries.into_iter().map(|d| (d.id.clone(), d)).collect()
    }

    const WINDOW: Duration = Duration::from_millis(1000);

    #[test]
    fn high_and_medium_to_one_recipient_within_the_window_travel_together() {
        let waiting = waiting(vec![
            delivery("a", "high", ChannelKind::Email, "x@y", 100),
            delivery("b", "medium", ChannelKind::Email, "x@y", 900),
            delivery("c", "high", ChannelKind::Email, "x@y", 1200),
            delivery("d", "high", ChannelKind::Email, "z@y", 100),
            delivery("e", "high", ChannelKind::Slack, "x@y", 100),
        ]);
        let sends = form_sends(&["a".into(), "d".into(), "e".into()], &waiting, WINDOW);
        assert_eq!(sends, [vec!["a", "b"], vec!["d"], vec!["e"]]);
    }

    #[test]
    fn critical_and_pagerduty_always_go_alone() {
        let waiting = waiting(vec![
            delivery("a", "critical", ChannelKind::Email, "x@y", 100),
            delivery("b", "high", ChannelKind::Email, "x@y", 100),
            delivery("p", "high", ChannelKind::PagerDuty, "KEY", 100),
            delivery("q", "high", ChannelKind::PagerDuty, "KEY", 100),
        ]);
        let sends = form_sends(
            &["a".into(), "b".into(), "p".into(), "q".into()],
            &waiting,
            WINDOW,
        );
        assert_eq!(sends, [vec!["a"], vec!["b"], vec!["p"], vec!["q"]]);
    }

    #[test]
    fn another_team_is_another_message_and_nothing_goes_twice() {
        let mut other = delivery("o", "high", ChannelKind::Email, "x@y", 100);
        other.notice.team = "dev".into();
        let waiting = waiting(vec![
            delivery("a", "high", ChannelKind::Email, "x@y", 100),
            delivery("b", "high", ChannelKind::Email, "x@y", 100),
            other,
        ]);
        let sends = form_sends(
            &["a".into(), "b".into(), "o".into(), "gone".into()],
            &waiting,
            WINDOW,
        );
        assert_eq!(sends, [vec!["a", "b"], vec!["o"]]);
    }
}
