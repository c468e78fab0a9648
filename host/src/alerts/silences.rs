//! Silences: while one matches an alert (its check, team, severity), the
//! alert is held instead of paging; at its end time the alert is looked at
//! again. A silence ends on its own; deleting it ends it at once.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::names::Name;
use crate::recovery::Severity;
use crate::store::{Store, StoreError, Table};

/// Most silences kept (active, and ended within [`KEEP_ENDED`]).
pub const MAX_SILENCES: usize = 1000;
/// Most silences of one team kept, so that one team cannot use up the
/// host's room.
pub const MAX_TEAM_SILENCES: usize = 100;
/// Longest silence: 30 days.
pub const MAX_SILENCE: Duration = Duration::from_secs(30 * 86_400);
/// How long an ended silence stays listed.
pub const KEEP_ENDED: Duration = Duration::from_secs(86_400);
/// Longest comment, in characters.
pub const MAX_COMMENT: usize = 500;

/// What a silence matches; every field given must match, and at least one
/// is given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Matchers {
    /// The health check (only incidents' alerts have one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_id: Option<Name>,
    /// The team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<Name>,
    /// The severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
}

impl Matchers {
    /// Whether an alert of this check, team and severity matches.
    pub fn matches(&self, check_id: Option<&str>, team: &str, severity: Severity) -> bool {
        self.check_id
            .as_ref()
            .is_none_or(|c| check_id == Some(c.as_str()))
            && self.team.as_ref().is_none_or(|t| t.as_str() == team)
            && self.severity.is_none_or(|s| s == severity)
    }
}

/// The body of `POST /silences`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewSilence {
    /// What it matches.
    pub matchers: Matchers,
    /// How long it lasts, in milliseconds (1 to 30 days).
    pub duration_ms: u64,
    /// Who asks for it.
    pub created_by: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
}

/// A silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    /// Unique id, `silence_…`.
    pub id: String,
    /// What it matches.
    pub matchers: Matchers,
    /// When it started.
    pub starts_at: Timestamp,
    /// When it ends (or ended).
    pub ends_at: Timestamp,
    /// Who asked for it.
    pub created_by: String,
    /// Why.
    pub comment: String,
    /// Whether it holds alerts now; computed when shown.
    #[serde(default)]
    pub active: bool,
}

impl Silence {
    /// Whether it holds alerts at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.starts_at <= now && now < self.ends_at
    }
}

/// Why a silence was refused.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    /// A field is wrong.
    #[error("`{field}` {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Too many silences (on the host, or of the team).
    #[error("there are {0} silences already; delete one first")]
    Full(usize),
    /// No silence has the id.
    #[error("no silence has id {0:?}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl NewSilence {
    /// Checks it; the error names the field.
    pub fn validate(&self) -> Result<(), SilenceError> {
        let invalid = |field, message: &str| {
            Err(SilenceError::Invalid {
                field,
                message: message.to_owned(),
            })
        };
        if self.matchers == Matchers::default() {
            return invalid(
                "matchers",
                "must name at least one of checkId, team, severity",
            );
        }
        if self.duration_ms == 0 || self.duration_ms > MAX_SILENCE.as_millis() as u64 {
            return invalid("durationMs", "must be 1 to 2592000000 (30 days)");
        }
        let by = self.created_by.trim();
        if by.is_empty() || by.chars().count() > 128 {
            return invalid("createdBy", "must be 1 to 128 characters");
        }
        if self.comment.chars().count() > MAX_COMMENT {
            return invalid("comment", "is longer than 500 characters");
        }
        Ok(())
    }
}

/// The silences, in memory over the `alert_silences` table.
pub struct Silences {
    store: Store,
    table: Table<Silence>,
    by_id: std::sync::RwLock<BTreeMap<String, Silence>>,
}

impl Silences {
    /// Loads the stored silences.
    pub async fn open(store: &Store) -> Result<Self, StoreError> {
        let table: Table<Silence> = store.table("alert_silences");
        let by_id = table
            .load()
            .await?
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        Ok(Self {
            store: store.clone(),
            table,
            by_id: std::sync::RwLock::new(by_id),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Silence>> {
        self.by_id.read().expect("silences poisoned")
    }

    /// The active silence that matches and ends last, if any.
    pub fn matching(
        &self,
        check_id: Option<&str>,
        team: &str,
        severity: Severity,
        now: Timestamp,
    ) -> Option<Silence> {
        self.read()
            .values()
            .filter(|s| s.is_active(now) && s.matchers.matches(check_id, team, severity))
            .max_by_key(|s| s.ends_at)
            .cloned()
    }

    /// Stores a new silence starting at `now`; the caller checked it.
    pub async fn create(
        &self,
        id: String,
        new: NewSilence,
        now: Timestamp,
    ) -> Result<Silence, SilenceError> {
        new.validate()?;
        {
            let silences = self.read();
            if silences.len() >= MAX_SILENCES {
                return Err(SilenceError::Full(MAX_SILENCES));
            }
            if let Some(team) = &new.matchers.team
                && silences
                    .values()
                    .filter(|s| s.matchers.team.as_ref() == Some(team))
                    .count()
                    >= MAX_TEAM_SILENCES
            {
                return Err(SilenceError::Full(MAX_TEAM_SILENCES));
            }
        }
        let silence = Silence {
            id,
            matchers: new.matchers,
            starts_at: now,
            ends_at: now.plus(Duration::from_millis(new.duration_ms)),
            created_by: new.created_by.trim().to_owned(),
            comment: new.comment,
            active: true,
        };
        self.table.insert(&silence.id, &silence).await?;
        self.by_id
            .write()
            .expect("silences poisoned")
            .insert(silence.id.clone(), silence.clone());
        Ok(silence)
    }

    /// Ends a silence now.
    pub async fn end(&self, id: &str, now: Timestamp) -> Result<Silence, SilenceError> {
        let mut silence = self
            .read()
            .get(id)
            .cloned()
            .ok_or_else(|| SilenceError::NotFound(id.to_owned()))?;
        if silence.ends_at > now {
            silence.ends_at = now;
            self.table.put(id, &silence).await?;
            self.by_id
                .write()
                .expect("silences poisoned")
                .insert(id.to_owned(), silence.clone());
        }
        silence.active = false;
        Ok(silence)
    }

    /// One silence, as shown at `now`.
    pub fn get(&self, id: &str, now: Timestamp) -> Result<Silence, SilenceError> {
        let mut silence = self
            .read()
            .get(id)
            .cloned()
            .ok_or_else(|| SilenceError::NotFound(id.to_owned()))?;
        silence.active = silence.is_active(now);
        Ok(silence)
    }

    /// The silences in id order after `after`, at most `limit`, those of
    /// `only_team` alone when given (a silence without a team matcher
    /// belongs to the admins); and where the next page starts.
    pub fn page(
        &self,
        after: Option<&str>,
        limit: usize,
        only_team: Option<&str>,
        now: Timestamp,
    ) -> (Vec<Silence>, Option<String>) {
        let silences = self.read();
        let range = match after {
            Some(after) => silences
                .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => silences.range::<str, _>(..),
        };
        let mut items = Vec::new();
        let mut next = None;
        for silence in range.map(|(_, s)| s) {
            if let Some(team) = only_team
                && silence.matchers.team.as_deref() != Some(team)
            {
                continue;
            }
            if items.len() == limit {
                next = items.last().map(|s: &Silence| s.id.clone());
                break;
            }
            let mut shown = silence.clone();
            shown.active = shown.is_active(now);
            items.push(shown);
        }
        (items, next)
    }

    /// Deletes the silences that ended more than [`KEEP_ENDED`] ago.
    pub async fn prune(&self, now: Timestamp) -> Result<usize, StoreError> {
        let cutoff = now.minus(KEEP_ENDED);
        let old: Vec<String> = self
            .read()
            .values()
            .filter(|s| s.ends_at < cutoff)
            .map(|s| s.id.clone())
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        let mut batch = crate::store::Batch::new();
        for id in &old {
            batch.push(self.table.delete_op(id));
        }
        self.store.write(batch).await?;
        let mut silences = self.by_id.write().expect("silences poisoned");
        for id in &old {
            silences.remove(id);
        }
        Ok(old.len())
    }

    /// How many are active at `now`.
    pub fn active(&self, now: Timestamp) -> usize {
        self.read().values().filter(|s| s.is_active(now)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Option<Name> {
        Some(Name::parse(text).unwrap())
    }

    #[test]
    fn every_given_matcher_must_match() {
        let m = Matchers {
            check_id: name("web"),
            team: None,
            severity: Some(Severity::Critical),
        };
        assert!(m.matches(Some("web"), "ops", Severity::Critical));
        assert!(!m.matches(Some("web"), "ops", Severity::High));
        assert!(!m.matches(Some("db"), "ops", Severity::Critical));
        assert!(
            !m.matches(None, "ops", Severity::Critical),
            "a plan has no check"
        );
        let team = Matchers {
            team: name("ops"),
            ..Matchers::default()
        };
        assert!(team.matches(None, "ops", Severity::Medium));
        assert!(!team.matches(None, "dev", Severity::Medium));
    }

    #[test]
    fn a_silence_holds_from_its_start_until_its_end() {
        let start = Timestamp::EARLIEST.plus(Duration::from_secs(10));
        let silence = Silence {
            id: "silence_1".into(),
            matchers: Matchers::default(),
            starts_at: start,
            ends_at: start.plus(Duration::from_secs(5)),
            created_by: "alice".into(),
            comment: String::new(),
            active: false,
        };
        assert!(!silence.is_active(start.minus(Duration::from_millis(1))));
        assert!(silence.is_active(start));
        assert!(silence.is_active(start.plus(Duration::from_millis(4999))));
        assert!(!silence.is_active(start.plus(Duration::from_secs(5))));
    }

    #[test]
    fn bad_silences_name_their_field() {
        let good = NewSilence {
            matchers: Matchers {
                team: name("ops"),
                ..Matchers::default()
            },
            duration_ms: 60_000,
            created_by: "alice".into(),
            comment: String::new(),
        };
        good.validate().unwrap();
        let field = |s: NewSilence| match s.validate() {
            Err(SilenceError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let mut s = good.clone();
        s.matchers = Matchers::default();
        assert_eq!(field(s), "matchers");
        let mut s = good.clone();
        s.duration_ms = 0;
        assert_eq!(field(s), "durationMs");
        let mut s = good.clone();
        s.duration_ms = 31 * 86_400_000;
        assert_eq!(field(s), "durationMs");
        let mut s = good;
        s.created_by = " ".into();
        assert_eq!(field(s), "createdBy");
    }
}
