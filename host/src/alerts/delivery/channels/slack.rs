//! Slack incoming webhooks: `{"text", "blocks"}`, a section per notice and
//! a button to its incident.

use serde_json::{Value, json};

use super::{Content, truncate_chars};

/// Slack allows 50 blocks a message; a section and a button per notice.
const MAX_NOTICES_SHOWN: usize = 20;

/// Slack's limit on a section's text.
const MAX_SECTION_CHARS: usize = 3000;

/// The webhook's JSON body.
pub(super) fn payload(content: &Content<'_>) -> Value {
    let severity = content.severity().to_uppercase();
    let mut blocks = Vec::new();
    for notice in content.notices.iter().take(MAX_NOTICES_SHOWN) {
        let text = format!(
            "*[{}] {}{}*\n{}",
            notice.severity.to_uppercase(),
            super::event_prefix(notice),
            notice.title,
            notice.body
        );
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate_chars(&text, MAX_SECTION_CHARS)},
        }));
        if let Some(link) = &notice.link {
            blocks.push(json!({
                "type": "actions",
                "elements": [{
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open incident"},
                    "url": link,
                }],
            }));
        }
    }
    if content.notices.len() > MAX_NOTICES_SHOWN {
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!("and {} more", content.notices.len() - MAX_NOTICES_SHOWN)}],
        }));
    }
    json!({
        "text": truncate_chars(&format!("[{severity}] {}", content.title()), MAX_SECTION_CHARS),
        "blocks": blocks,
    })
}
