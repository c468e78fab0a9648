//! An HTTP SMS gateway: the configured body template, filled with the
//! number and a short text.

use super::Content;
use crate::alerts::delivery::config::{SMS_MAX_CHARS, fill_template};

/// The text: severity, title and the first link, at most 160 characters.
pub(super) fn text(content: &Content<'_>) -> String {
    let mut text = format!(
        "[{}] {}",
        content.severity().to_uppercase(),
        content.title()
    );
    if let Some(link) = content.notices.iter().find_map(|n| n.link.as_deref()) {
        let room = SMS_MAX_CHARS.saturating_sub(link.chars().count() + 1);
        if room >= 20 {
            text = format!("{} {link}", super::truncate_chars(&text, room));
        }
    }
    super::truncate_chars(&text, SMS_MAX_CHARS)
}

/// The request body.
pub(super) fn body(template: &str, to: &str, content: &Content<'_>) -> String {
    fill_template(template, to, &text(content))
}
