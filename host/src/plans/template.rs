//! Action-plan templates: the built-in ones, a team's own, their typed
//! inputs, and turning a template and its data into a plan's actions.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{ActionStatus, PlanAction, PlanError, dag};
use crate::clock::Timestamp;
use crate::names::Name;
use crate::plugins::CORE_TEAM;
use crate::tasks::Priority;
use crate::workflows::template as query;

/// Most actions one template may have.
pub const MAX_ACTIONS: usize = 64;
/// Most inputs one template may declare.
pub const MAX_INPUTS: usize = 32;
/// Time limit of an action's attempt when the template does not say.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Wait before an action's second attempt when the template does not say.
pub const DEFAULT_BACKOFF_MS: u64 = 1_000;

/// The type of a template input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// A JSON string.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
}

impl InputKind {
    fn admits(self, value: &Value) -> bool {
        match self {
            Self::String => value.is_string(),
            Self::Integer => value.is_i64() || value.is_u64(),
            Self::Number => value.is_number(),
            Self::Boolean => value.is_boolean(),
            Self::Object => value.is_object(),
            Self::Array => value.is_array(),
        }
    }

    fn word(self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Integer => "a whole number",
            Self::Number => "a number",
            Self::Boolean => "true or false",
            Self::Object => "an object",
            Self::Array => "an array",
        }
    }
}

/// One input a template takes in `data`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputField {
    /// The key in `data`.
    pub name: Name,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: InputKind,
    /// Whether `data` must have it (an input with a default never must).
    #[serde(default)]
    pub required: bool,
    /// The value used when `data` does not have it.
    #[schema(value_type = Option<serde_json::Value>)]
    pub default: Option<Value>,
    /// The only values allowed, when given.
    #[serde(rename = "enum")]
    #[schema(value_type = Option<Vec<serde_json::Value>>)]
    pub allowed: Option<Vec<Value>>,
    /// One line for operators.
    #[serde(default)]
    pub description: String,
}

fn yes() -> bool {
    true
}

/// One action of a template.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActionSpec {
    /// Unique in the template; later actions read its output as
    /// `$.actions.<name>`.
    pub name: Name,
    /// The capability it calls, served by the plan team's plugins or
    /// `core`'s.
    pub capability: Name,
    /// Input template over `{"data": <the plan's data>, "actions":
    /// {<action>: <its output>}}` (the workflows' JSONPath templates).
    #[serde(default)]
    #[schema(value_type = serde_json::Value)]
    pub input: Value,
    /// Actions that must succeed before it starts.
    #[serde(default)]
    pub depends_on: Vec<Name>,
    /// Time limit of one attempt, in milliseconds (default 30,000).
    #[schema(minimum = 1, maximum = 3_600_000)]
    pub timeout_ms: Option<u64>,
    /// Attempts after the first when one fails in a way a retry can help
    /// (default 0, at most 10).
    #[schema(maximum = 10)]
    pub retries: Option<u32>,
    /// Wait before the second attempt in milliseconds, doubling for each
    /// further one (default 1,000).
    #[schema(minimum = 10, maximum = 600_000)]
    pub backoff_ms: Option<u64>,
    /// Whether running it twice is harmless (default true). An action that
    /// is not is never run again on its own after the host stopped while it
    /// ran.
    #[serde(default = "yes")]
    pub idempotent: bool,
    /// A JSONPath query over `{"data"}`: the action is part of a plan only
    /// when it selects a value other than `null` or `false`.
    pub when: Option<String>,
}

/// A template, as `POST /action-plan-templates` takes it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTemplate {
    /// Unique id, e.g. `DB_FAILOVER_CHECK`.
    pub id: Name,
    /// Human-readable name.
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// Category, e.g. `system`, `security`, `maintenance`, `backup`.
    pub category: Name,
    /// Priority of its plans (default `medium`).
    pub priority: Option<Priority>,
    /// One paragraph for operators.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub description: String,
    /// The inputs its plans take in `data`.
    #[serde(default)]
    pub inputs: Vec<InputField>,
    /// The actions.
    #[schema(min_items = 1, max_items = 64)]
    pub actions: Vec<ActionSpec>,
    /// Owning team; the caller's (or `default`) when absent.
    pub team: Option<Name>,
}

/// A stored template.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    /// Unique id.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Category.
    pub category: String,
    /// Priority of its plans.
    pub priority: Priority,
    /// One paragraph for operators.
    pub description: String,
    /// Owning team (`core` for the built-in ones, which every team uses).
    pub team: String,
    /// True for the templates that ship with the host.
    pub built_in: bool,
    /// The inputs its plans take in `data`.
    pub inputs: Vec<InputField>,
    /// The actions.
    pub actions: Vec<ActionSpec>,
    /// When it was defined.
    pub created_at: Timestamp,
}

impl Template {
    /// A team's template from what `POST` took.
    pub fn from_new(team: Name, new: NewTemplate, now: Timestamp) -> Result<Self, PlanError> {
        validate(&new)?;
        Ok(Self {
            id: new.id.into(),
            name: new.name,
            category: new.category.into(),
            priority: new.priority.unwrap_or(Priority::Medium),
            description: new.description,
            team: team.into(),
            built_in: false,
            inputs: new.inputs,
            actions: new.actions,
            created_at: now,
        })
    }

    /// `data` checked against the inputs, with defaults filled in. A
    /// missing required input, a value of the wrong type or outside the
    /// allowed values, or a key no input declares is refused, naming it.
    pub fn check_data(&self, data: Map<String, Value>) -> Result<Map<String, Value>, PlanError> {
        let invalid = |name: &str, message: String| PlanError::Invalid {
            field: format!("data.{name}"),
            message,
        };
        if let Some(unknown) = data
            .keys()
            .find(|key| !self.inputs.iter().any(|input| input.name == key.as_str()))
        {
            let known: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(invalid(
                unknown,
                format!("is not an input of {} (its inputs: {known:?})", self.id),
            ));
        }
        let mut checked = data;
        for input in &self.inputs {
            let name = input.name.as_str();
            let Some(value) = checked.get(name).or(input.default.as_ref()).cloned() else {
                if input.required {
                    return Err(invalid(name, "is required".into()));
                }
                continue;
            };
            if !input.kind.admits(&value) {
                return Err(invalid(name, format!("must be {}", input.kind.word())));
            }
            if let Some(allowed) = &input.allowed
                && !allowed.contains(&value)
            {
                return Err(invalid(name, format!("must be one of {}", json!(allowed))));
            }
            checked.insert(name.to_owned(), value);
        }
        Ok(checked)
    }

    /// The plan's actions for `data`: those whose `when` holds, with their
    /// dependencies on left-out actions dropped (a left-out action counts
    /// as done).
    pub fn actions_for(&self, data: &Value) -> Result<Vec<PlanAction>, PlanError> {
        let context = json!({ "data": data });
        let mut included = Vec::new();
        for spec in &self.actions {
            let holds = match &spec.when {
                None => true,
                Some(condition) => {
                    let selected = query::render(&Value::String(condition.clone()), &context)
                        .map_err(|message| PlanError::Invalid {
                            field: format!("actions.{}.when", spec.name),
                            message,
                        })?;
                    !matches!(selected, Value::Null | Value::Bool(false))
                }
            };
            if holds {
                included.push(spec);
            }
        }
        let names: Vec<&str> = included.iter().map(|spec| spec.name.as_str()).collect();
        Ok(included
            .into_iter()
            .map(|spec| PlanAction {
                name: spec.name.to_string(),
                capability: spec.capability.to_string(),
                input: spec.input.clone(),
                depends_on: spec
                    .depends_on
                    .iter()
                    .filter(|dep| names.contains(&dep.as_str()))
                    .map(|dep| dep.to_string())
                    .collect(),
                timeout_ms: spec.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
                max_attempts: spec.retries.unwrap_or(0) + 1,
                backoff_ms: spec.backoff_ms.unwrap_or(DEFAULT_BACKOFF_MS),
                idempotent: spec.idempotent,
                status: ActionStatus::Pending,
                attempts: Vec::new(),
                attempts_made: 0,
                output: None,
                error: None,
                not_before: None,
            })
            .collect())
    }
}

/// Checks a new template: sizes, unique names, known dependencies and no
/// cycle among them, bounded queries, inputs whose defaults and allowed
/// values have their type.
fn validate(new: &NewTemplate) -> Result<(), PlanError> {
    let invalid = |field: &str, message: String| {
        Err(PlanError::Invalid {
            field: field.to_owned(),
            message,
        })
    };
    if new.name.trim().is_empty() || new.name.len() > 128 {
        return invalid("name", "must be 1 to 128 characters".into());
    }
    if new.description.len() > 1024 {
        return invalid("description", "must be at most 1024 bytes".into());
    }
    if new.actions.is_empty() || new.actions.len() > MAX_ACTIONS {
        return invalid("actions", format!("must have 1 to {MAX_ACTIONS} actions"));
    }
    if new.inputs.len() > MAX_INPUTS {
        return invalid("inputs", format!("must have at most {MAX_INPUTS} inputs"));
    }
    for (n, input) in new.inputs.iter().enumerate() {
        if new.inputs[..n].iter().any(|other| other.name == input.name) {
            return invalid(
                "inputs",
                format!("{:?} names two inputs", input.name.as_str()),
            );
        }
        let field = format!("inputs.{}", input.name);
        if let Some(default) = &input.default
            && !input.kind.admits(default)
        {
            return invalid(&field, format!("default must be {}", input.kind.word()));
        }
        if let Some(allowed) = &input.allowed {
            if allowed.is_empty() || allowed.iter().any(|v| !input.kind.admits(v)) {
                return invalid(
                    &field,
                    format!(
                        "enum must list one or more values, each {}",
                        input.kind.word()
                    ),
                );
            }
            if let Some(default) = &input.default
                && !allowed.contains(default)
            {
                return invalid(&field, "default must be one of the enum values".into());
            }
        }
    }
    for action in &new.actions {
        let field = format!("actions.{}", action.name);
        if action
            .timeout_ms
            .is_some_and(|ms| !(1..=3_600_000).contains(&ms))
        {
            return invalid(&field, "timeoutMs must be 1 to 3600000".into());
        }
        if action.retries.is_some_and(|n| n > 10) {
            return invalid(&field, "retries must be at most 10".into());
        }
        if action
            .backoff_ms
            .is_some_and(|ms| !(10..=600_000).contains(&ms))
        {
            return invalid(&field, "backoffMs must be 10 to 600000".into());
        }
        if let Err(err) = query::check(&action.input) {
            return invalid(&format!("{field}.input"), err);
        }
        if let Some(condition) = &action.when {
            if !condition.starts_with('$') {
                return invalid(&format!("{field}.when"), "must be a JSONPath query".into());
            }
            if let Err(err) = query::check(&Value::String(condition.clone())) {
                return invalid(&format!("{field}.when"), err);
            }
        }
    }
    let graph: Vec<(&str, Vec<&str>)> = new
        .actions
        .iter()
        .map(|a| {
            (
                a.name.as_str(),
                a.depends_on.iter().map(|d| d.as_str()).collect(),
            )
        })
        .collect();
    dag::check(&graph).map_err(|message| PlanError::Invalid {
        field: "actions.dependsOn".into(),
        message,
    })
}

/// Id of the built-in system check.
pub const SYSTEM_CHECK: &str = "SYSTEM_CHECK";

/// The templates that ship with the host. Their actions call the bundled
/// `system` plugin, which reads this machine only through the commands its
/// manifest grants.
pub fn built_in() -> Vec<Template> {
    let check = |name: &str, capability: &str, input: Value, when: Option<&str>| ActionSpec {
        name: Name::parse(name).expect("a valid built-in name"),
        capability: Name::parse(capability).expect("a valid built-in name"),
        input,
        depends_on: Vec::new(),
        timeout_ms: Some(30_000),
        retries: Some(1),
        backoff_ms: Some(1_000),
        idempotent: true,
        when: when.map(str::to_owned),
    };
    let summary = |after: &[&ActionSpec]| ActionSpec {
        depends_on: after.iter().map(|a| a.name.clone()).collect(),
        ..check("summary", "summarize", json!({"checks": "$.actions"}), None)
    };
    let input = |name: &str,
                 kind,
                 default: Option<Value>,
                 allowed: Option<Vec<Value>>,
                 description: &str| InputField {
        name: Name::parse(name).expect("a valid built-in name"),
        kind,
        required: false,
        default,
        allowed,
        description: description.to_owned(),
    };
    let template =
        |id: &str, name: &str, category: &str, priority, description: &str, inputs, actions| {
            Template {
                id: id.to_owned(),
                name: name.to_owned(),
                category: category.to_owned(),
                priority,
                description: description.to_owned(),
                team: CORE_TEAM.to_owned(),
                built_in: true,
                inputs,
                actions,
                created_at: Timestamp::EARLIEST,
            }
        };
    let server_id = || {
        input(
            "serverId",
            InputKind::String,
            None,
            None,
            "The machine the plan is about; the checks run on the machine the host runs on",
        )
    };
    let comprehensive = Some("$[?@.checkLevel == 'comprehensive']");

    let system: Vec<ActionSpec> = vec![
        check("machine", "machine", json!({}), None),
        check("cpu_load", "cpu_load", json!({}), None),
        check("memory_usage", "memory_usage", json!({}), None),
        check("disk_usage", "disk_usage", json!({}), None),
        check(
            "listening_services",
            "listening_services",
            json!({}),
            comprehensive,
        ),
        check(
            "network_reachability",
            "network_reachability",
            json!({}),
            comprehensive,
        ),
        check("uptime", "uptime", json!({}), comprehensive),
    ];
    let security = vec![
        check("accounts_audit", "accounts_audit", json!({}), None),
        check("world_writable", "world_writable", json!({}), None),
        check("listening_services", "listening_services", json!({}), None),
    ];
    let maintenance = vec![
        check("log_usage", "log_usage", json!({}), None),
        check("old_logs", "old_logs", json!({"days": "$.data.days"}), None),
    ];
    let backup = vec![check(
        "backup_verification",
        "backup_verification",
        json!({"path": "$.data.path", "maxAgeHours": "$.data.maxAgeHours", "sha256": "$.data.sha256"}),
        None,
    )];
    let with_summary = |mut actions: Vec<ActionSpec>| {
        let last = summary(&actions.iter().collect::<Vec<_>>());
        actions.push(last);
        actions
    };
    vec![
        template(
            SYSTEM_CHECK,
            "System check",
            "system",
            Priority::Medium,
            "CPU load, memory and disk usage; at checkLevel comprehensive also listening services, \
             network reachability and uptime; then a summary.",
            vec![
                server_id(),
                input(
                    "checkLevel",
                    InputKind::String,
                    Some(json!("basic")),
                    Some(vec![json!("basic"), json!("comprehensive")]),
                    "basic or comprehensive",
                ),
            ],
            with_summary(system),
        ),
        template(
            "SECURITY_AUDIT",
            "Security audit",
            "security",
            Priority::High,
            "Accounts with uid 0 besides root, world-writable files under /etc, and the ports \
             listening; then a summary.",
            vec![server_id()],
            with_summary(security),
        ),
        template(
            "LOG_CLEANUP_CHECK",
            "Log cleanup check",
            "maintenance",
            Priority::Low,
            "Space taken by /var/log and the log files older than `days` there (reported, never \
             deleted); then a summary.",
            vec![
                server_id(),
                input(
                    "days",
                    InputKind::Integer,
                    Some(json!(30)),
                    None,
                    "Age in days past which a log file is reported",
                ),
            ],
            with_summary(maintenance),
        ),
        template(
            "BACKUP_VERIFICATION",
            "Backup verification",
            "backup",
            Priority::High,
            "A backup under /var/backups exists, is recent and, when `sha256` is given, matches it; \
             then a summary.",
            vec![
                server_id(),
                input(
                    "path",
                    InputKind::String,
                    Some(json!("/var/backups")),
                    None,
                    "The backup file or folder, under /var/backups",
                ),
                input(
                    "maxAgeHours",
                    InputKind::Integer,
                    Some(json!(26)),
                    None,
                    "Older than this is a warning",
                ),
                input(
                    "sha256",
                    InputKind::String,
                    None,
                    None,
                    "Expected SHA-256 of the backup file",
                ),
            ],
            with_summary(backup),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system_check() -> Template {
        built_in()
            .into_iter()
            .find(|t| t.id == SYSTEM_CHECK)
            .unwrap()
    }

    #[test]
    fn the_built_in_templates_are_valid() {
        for template in built_in() {
            let new = NewTemplate {
                id: Name::parse(&template.id).unwrap(),
                name: template.name.clone(),
                category: Name::parse(&template.category).unwrap(),
                priority: Some(template.priority),
                description: template.description.clone(),
                inputs: template.inputs.clone(),
                actions: template.actions.clone(),
                team: None,
            };
            validate(&new).unwrap_or_else(|err| panic!("{}: {err}", template.id));
        }
    }

    #[test]
    fn data_is_checked_and_defaults_filled_in() {
        let template = system_check();
        let data = template
            .check_data(
                json!({"serverId": "server_001"})
                    .as_object()
                    .unwrap()
                    .clone(),
            )
            .unwrap();
        assert_eq!(data["checkLevel"], "basic");
        let err = template
            .check_data(json!({"checkLevel": "deep"}).as_object().unwrap().clone())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`data.checkLevel` must be one of [\"basic\",\"comprehensive\"]"
        );
        let err = template
            .check_data(json!({"serverId": 7}).as_object().unwrap().clone())
            .unwrap_err();
        assert_eq!(err.to_string(), "`data.serverId` must be a string");
        let err = template
            .check_data(json!({"level": "basic"}).as_object().unwrap().clone())
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`data.level` is not an input of SYSTEM_CHECK")
        );
    }

    #[test]
    fn the_check_level_chooses_the_actions() {
        let template = system_check();
        let names = |level: &str| -> Vec<String> {
            let data = template
                .check_data(json!({"checkLevel": level}).as_object().unwrap().clone())
                .unwrap();
            template
                .actions_for(&Value::Object(data))
                .unwrap()
                .into_iter()
                .map(|a| a.name)
                .collect()
        };
        assert_eq!(
            names("basic"),
            [
                "machine",
                "cpu_load",
                "memory_usage",
                "disk_usage",
                "summary"
            ]
        );
        assert_eq!(names("comprehensive").len(), 8);
        let basic = template
            .actions_for(&json!({"checkLevel": "basic"}))
            .unwrap();
        let summary = basic.iter().find(|a| a.name == "summary").unwrap();
        assert_eq!(
            summary.depends_on,
            ["machine", "cpu_load", "memory_usage", "disk_usage"],
            "dependencies on left-out actions are dropped"
        );
    }

    #[test]
    fn a_cycle_is_refused_and_named() {
        let action = |name: &str, deps: &[&str]| ActionSpec {
            name: Name::parse(name).unwrap(),
            capability: Name::parse("echo").unwrap(),
            input: json!({}),
            depends_on: deps.iter().map(|d| Name::parse(d).unwrap()).collect(),
            timeout_ms: None,
            retries: None,
            backoff_ms: None,
            idempotent: true,
            when: None,
        };
        let new = NewTemplate {
            id: Name::parse("LOOP").unwrap(),
            name: "loop".into(),
            category: Name::parse("test").unwrap(),
            priority: None,
            description: String::new(),
            inputs: Vec::new(),
            actions: vec![
                action("a", &[]),
                action("b", &["a", "d"]),
                action("c", &["b"]),
                action("d", &["c"]),
            ],
            team: None,
        };
        let err = validate(&new).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`actions.dependsOn` has a cycle: b → d → c → b"
        );
    }
}
