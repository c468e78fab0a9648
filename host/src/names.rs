//! Names of things: teams, plugins, workers, workflows, capabilities, steps.
//!
//! Every name that arrives from outside (a URL, a request body, a folder on
//! disk, a manifest) is parsed into a [`Name`] at the edge, so that maps,
//! locks and paths only ever see names that passed one rule. The rule rules
//! out everything a path could misuse: no dots, slashes, separators,
//! whitespace or non-ASCII, and a bounded length.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// The rule, as a regular expression for the OpenAPI document.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$";

/// The rule, in words; every refusal of a name says it.
pub const NAME_RULE: &str = "a name is 1 to 64 characters of ASCII letters, digits, `_` or `-`, starting with a letter or digit";

/// The team of a worker, task or workflow created without one.
pub const DEFAULT_TEAM: &str = "default";

/// A validated name: 1 to 64 ASCII letters, digits, `_` and `-`, starting
/// with a letter or a digit. Safe as a path component, a map key and a log
/// field as it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Name(String);

/// A text that is not a [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown} is not a valid name: {NAME_RULE}")]
pub struct NameError {
    shown: String,
}

impl NameError {
    fn of(text: &str) -> Self {
        // Show a bounded, escaped prefix: the text may be long or hostile.
        let mut shown: String = text.chars().take(MAX_NAME_LEN + 1).collect();
        if shown.len() < text.len() {
            shown.push('…');
        }
        Self {
            shown: format!("{shown:?}"),
        }
    }
}

impl Name {
    /// Parses `text` by the rule.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        if is_name(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err(NameError::of(text))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name known to pass the rule at compile time, such as a built-in
    /// team's. Panics on a bad literal, which is a bug in the host.
    pub fn from_static(text: &'static str) -> Self {
        Self::parse(text).unwrap_or_else(|err| panic!("built-in name: {err}"))
    }
}

/// Whether `text` passes the rule.
pub fn is_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    matches!(bytes.first(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.len() <= MAX_NAME_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Name {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<Name> for String {
    fn from(name: Name) -> Self {
        name.0
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Borrow when the input allows it, so a long hostile string is not
        // copied before it is refused.
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Name {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(NAME_PATTERN))
            .min_length(Some(1))
            .max_length(Some(MAX_NAME_LEN))
            .description(Some(NAME_RULE))
            .into()
    }
}

impl utoipa::ToSchema for Name {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_every_name() {
        for good in ["ops", "TODO_WORKER_001", "a", "9-lives", &"x".repeat(64)] {
            assert!(Name::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            "_x",
            "-x",
            "a.b",
            "a b",
            "é",
            "a\0",
            &"x".repeat(65),
        ] {
            let err = Name::parse(bad).unwrap_err().to_string();
            assert!(err.contains(NAME_RULE), "{err}");
        }
    }

    #[test]
    fn refusals_show_a_bounded_prefix() {
        let err = Name::parse(&"/".repeat(10_000)).unwrap_err().to_string();
        assert!(err.len() < 300, "{err}");
    }

    #[test]
    fn deserializing_applies_the_rule() {
        assert!(serde_json::from_str::<Name>("\"..\"").is_err());
        assert_eq!(
            serde_json::from_str::<Name>("\"ops\"").unwrap().as_str(),
            "ops"
        );
    }
}
