//! Alert rules: for each severity, who is told on which channels, how long
//! an alert may stay unacknowledged before the next escalation step, and
//! whether it waits for a running recovery's outcome.
//!
//! The defaults are the guide's table: Critical (service down, data loss) →
//! Email, SMS, Slack, PagerDuty to Admin, Manager, OnCall, escalating after
//! 5 minutes; High (performance degradation, resource shortage) → Email,
//! Slack to Admin, Manager, 15 minutes; Medium (warning threshold exceeded)
//! → Email, Slack to Admin, 30 minutes.

use serde::{Deserialize, Serialize};

use super::delivery::ChannelKind;
use crate::recovery::Severity;

/// Most escalation steps of one rule.
pub const MAX_STEPS: usize = 10;
/// Most recipient groups one step names.
pub const MAX_GROUPS: usize = 20;
/// Longest description of a rule, in characters.
pub const MAX_DESCRIPTION: usize = 500;
/// Longest wait before an escalation step, in milliseconds (one week).
pub const MAX_AFTER_MS: u64 = 7 * 86_400_000;

/// One escalation step: if the alert is still unacknowledged `afterMs`
/// after the step before it (the first notice for step 1), these are told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EscalationStep {
    /// Milliseconds after the step before.
    pub after_ms: u64,
    /// The channels.
    pub channels: Vec<ChannelKind>,
    /// The recipient groups, e.g. `OnCall`.
    pub recipients: Vec<String>,
}

/// The rule of one severity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SeverityRule {
    /// The severity it applies to.
    pub severity: Severity,
    /// What it is for, for people.
    pub description: String,
    /// The channels of the first notice.
    pub channels: Vec<ChannelKind>,
    /// The recipient groups told first, e.g. `Admin`, `Manager`.
    pub recipients: Vec<String>,
    /// The escalation chain, in order.
    pub escalation: Vec<EscalationStep>,
    /// Whether an alert waits for a running recovery's outcome before it
    /// notifies (an incident repaired in time pages nobody).
    pub wait_for_recovery: bool,
}

/// The rules of every severity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AlertRules {
    /// One rule per severity: `critical`, `high`, `medium`.
    pub rules: Vec<SeverityRule>,
}

impl Default for AlertRules {
    fn default() -> Self {
        use ChannelKind::{Email, PagerDuty, Slack, Sms};
        let names = |recipients: &[&str]| -> Vec<String> {
            recipients.iter().map(|r| (*r).to_owned()).collect()
        };
        let minutes = |m: u64| m * 60_000;
        Self {
            rules: vec![
                SeverityRule {
                    severity: Severity::Critical,
                    description: "service down, data loss".into(),
                    channels: vec![Email, Sms, Slack, PagerDuty],
                    recipients: names(&["Admin", "Manager", "OnCall"]),
                    escalation: vec![EscalationStep {
                        after_ms: minutes(5),
                        channels: vec![Email, Sms, Slack, PagerDuty],
                        recipients: names(&["Ops team", "Dev team"]),
                    }],
                    wait_for_recovery: false,
                },
                SeverityRule {
                    severity: Severity::High,
                    description: "performance degradation, resource shortage".into(),
                    channels: vec![Email, Slack],
                    recipients: names(&["Admin", "Manager"]),
                    escalation: vec![EscalationStep {
                        after_ms: minutes(15),
                        channels: vec![Sms, PagerDuty],
                        recipients: names(&["OnCall"]),
                    }],
                    wait_for_recovery: true,
                },
                SeverityRule {
                    severity: Severity::Medium,
                    description: "warning threshold exceeded".into(),
                    channels: vec![Email, Slack],
                    recipients: names(&["Admin"]),
                    escalation: vec![EscalationStep {
                        after_ms: minutes(30),
                        channels: vec![Email, Slack],
                        recipients: names(&["Manager"]),
                    }],
                    wait_for_recovery: true,
                },
            ],
        }
    }
}

impl AlertRules {
    /// The rule of `severity`.
    pub fn of(&self, severity: Severity) -> &SeverityRule {
        self.rules
            .iter()
            .find(|r| r.severity == severity)
            .expect("validated rules have every severity")
    }

    /// Checks the rules: one per severity, known groups, sane times. The
    /// error names the field.
    pub fn validate(&self, known_group: &dyn Fn(&str) -> bool) -> Result<(), (String, String)> {
        for severity in [Severity::Critical, Severity::High, Severity::Medium] {
            let n = self.rules.iter().filter(|r| r.severity == severity).count();
            if n != 1 {
                return Err((
                    "rules".into(),
                    format!("needs exactly one rule for {}, has {n}", severity.as_str()),
                ));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            if rule.description.chars().count() > MAX_DESCRIPTION {
                return Err((
                    format!("{at}.description"),
                    format!("is longer than {MAX_DESCRIPTION} characters"),
                ));
            }
            check_audience(&at, &rule.channels, &rule.recipients, known_group)?;
            if rule.escalation.len() > MAX_STEPS {
                return Err((
                    format!("{at}.escalation"),
                    format!("has more than {MAX_STEPS} steps"),
                ));
            }
            for (s, step) in rule.escalation.iter().enumerate() {
                let at = format!("{at}.escalation[{s}]");
                if step.after_ms == 0 || step.after_ms > MAX_AFTER_MS {
                    return Err((
                        format!("{at}.afterMs"),
                        format!(
                            "is {}; it must be 1 to {MAX_AFTER_MS} (a week)",
                            step.after_ms
                        ),
                    ));
                }
                check_audience(&at, &step.channels, &step.recipients, known_group)?;
            }
        }
        Ok(())
    }
}

fn check_audience(
    at: &str,
    channels: &[ChannelKind],
    recipients: &[String],
    known_group: &dyn Fn(&str) -> bool,
) -> Result<(), (String, String)> {
    if channels.is_empty() {
        return Err((format!("{at}.channels"), "names no channel".into()));
    }
    if recipients.is_empty() || recipients.len() > MAX_GROUPS {
        return Err((
            format!("{at}.recipients"),
            format!("must name 1 to {MAX_GROUPS} recipient groups"),
        ));
    }
    if let Some(unknown) = recipients.iter().find(|g| !known_group(g)) {
        return Err((
            format!("{at}.recipients"),
            format!("names {unknown:?}, which is not a recipient group of the alerts file"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUIDE_GROUPS: [&str; 5] = ["Admin", "Manager", "OnCall", "Dev team", "Ops team"];

    fn known(group: &str) -> bool {
        GUIDE_GROUPS.contains(&group)
    }

    #[test]
    fn the_defaults_are_the_guides_table() {
        let rules = AlertRules::default();
        rules.validate(&known).unwrap();
        let critical = rules.of(Severity::Critical);
        assert_eq!(critical.channels.len(), 4);
        assert_eq!(critical.recipients, ["Admin", "Manager", "OnCall"]);
        assert_eq!(critical.escalation[0].after_ms, 300_000);
        assert!(!critical.wait_for_recovery);
        let high = rules.of(Severity::High);
        assert_eq!(high.channels, [ChannelKind::Email, ChannelKind::Slack]);
        assert_eq!(high.recipients, ["Admin", "Manager"]);
        assert_eq!(high.escalation[0].after_ms, 900_000);
        let medium = rules.of(Severity::Medium);
        assert_eq!(medium.recipients, ["Admin"]);
        assert_eq!(medium.escalation[0].after_ms, 1_800_000);
    }

    #[test]
    fn a_bad_rule_names_its_field() {
        let mut rules = AlertRules::default();
        rules.rules[1].recipients = vec!["Nobody".into()];
        assert_eq!(rules.validate(&known).unwrap_err().0, "rules[1].recipients");
        let mut rules = AlertRules::default();
        rules.rules[0].escalation[0].after_ms = 0;
        assert_eq!(
            rules.validate(&known).unwrap_err().0,
            "rules[0].escalation[0].afterMs"
        );
        let mut rules = AlertRules::default();
        rules.rules.pop();
        assert_eq!(rules.validate(&known).unwrap_err().0, "rules");
        let mut rules = AlertRules::default();
        rules.rules[0].description = "x".repeat(501);
        assert_eq!(
            rules.validate(&known).unwrap_err().0,
            "rules[0].description"
        );
        let mut rules = AlertRules::default();
        rules.rules[2].channels.clear();
        assert_eq!(rules.validate(&known).unwrap_err().0, "rules[2].channels");
    }
}

/// The rules in force, kept in the store (`alert_rules`) so that a change
/// survives a restart; the guide's table until someone changes them.
pub struct RuleBook {
    table: crate::store::Table<AlertRules>,
    current: std::sync::RwLock<AlertRules>,
    /// Serialises changes, so the stored and the served rules agree.
    turn: tokio::sync::Mutex<()>,
}

/// The one key the rules are stored under.
const RULES_KEY: &str = "rules";

/// Why new rules were refused.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// A field is wrong; the rules in force stay.
    #[error("`{field}` {message}")]
    Invalid {
        /// The field, e.g. `rules[1].recipients`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The store failed; the rules in force stay.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl RuleBook {
    /// Loads the stored rules, or the defaults.
    pub fn open(store: &crate::store::Store) -> Result<Self, crate::store::StoreError> {
        let table = store.table("alert_rules");
        let current = table.get(RULES_KEY)?.unwrap_or_default();
        Ok(Self {
            table,
            current: std::sync::RwLock::new(current),
            turn: tokio::sync::Mutex::new(()),
        })
    }

    /// The rules in force.
    pub fn get(&self) -> AlertRules {
        self.current.read().expect("alert rules poisoned").clone()
    }

    /// Replaces the rules once they pass [`AlertRules::validate`] (groups
    /// checked with `known_group`) and are stored; otherwise the rules in
    /// force stay.
    pub async fn replace(
        &self,
        rules: AlertRules,
        known_group: impl Fn(&str) -> bool,
    ) -> Result<AlertRules, RulesError> {
        rules
            .validate(&known_group)
            .map_err(|(field, message)| RulesError::Invalid { field, message })?;
        let _turn = self.turn.lock().await;
        self.table.put(RULES_KEY, &rules).await?;
        *self.current.write().expect("alert rules poisoned") = rules.clone();
        tracing::info!("alert rules changed");
        Ok(rules)
    }
}
