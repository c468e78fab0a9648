//! The bundled `todo` capability plugin (team `core`).
//!
//! It backs the built-in `TODO_WORKFLOW`: `task_creation` makes a todo,
//! `task_assignment` gives it to someone, `task_monitoring` reports on one
//! todo or on all of them. Todos live in the plugin's key-value state as JSON,
//! one key per todo, so they survive host restarts and plugin upgrades.
//!
//! Outputs name the todo `todoId`, the same key the inputs use, so a workflow
//! can feed one step's output into the next step's input unchanged.
//!
//! Written only against `autoagent-sdk`, as any outside plugin would be.

use autoagent_sdk::log::{self, Level};
use autoagent_sdk::serde_json::{Map, Value, json};
use autoagent_sdk::{
    CallContext, Capability, CapabilityInfo, PluginError, from_input, kv, to_output,
};
use serde::{Deserialize, Serialize};

/// Key of the counter that numbers todos; holds the last number handed out.
const COUNTER_KEY: &str = "counter";
/// Prefix of the keys that hold todos, followed by the todo's id.
const TODO_PREFIX: &str = "todo/";

/// The plugin; all behaviour lives in its [`Capability`] implementation.
pub struct Todos;

impl Capability for Todos {
    fn describe() -> Vec<CapabilityInfo> {
        vec![
            CapabilityInfo::new(
                "task_creation",
                "Creates a todo from the task's title, description and deadline",
            ),
            CapabilityInfo::new("task_assignment", "Assigns a todo to someone"),
            CapabilityInfo::new(
                "task_monitoring",
                "Reports one todo's status, or counts of all todos by status",
            ),
        ]
    }

    fn invoke(ctx: &CallContext, capability: &str, input: Value) -> Result<Value, PluginError> {
        // No input at all means "nothing specified", which every capability accepts.
        let input = if input.is_null() {
            Value::Object(Map::new())
        } else {
            input
        };
        match capability {
            "task_creation" => to_output(&create(ctx, from_input(input)?)?),
            "task_assignment" => to_output(&assign(from_input(input)?)?),
            "task_monitoring" => monitor(from_input(input)?),
            other => Err(PluginError::unknown_capability(other)),
        }
    }
}

autoagent_sdk::export_capability!(Todos);

/// Where a todo stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created, nobody assigned yet.
    Open,
    /// Someone is on it.
    Assigned,
    /// Finished.
    Done,
}

/// A todo as stored and as returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Todo {
    /// `todo_<n>`.
    pub todo_id: String,
    /// Short title.
    pub title: String,
    /// Longer text, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Deadline exactly as given (a date string or a timestamp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Value>,
    /// Who the todo is for, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// Where it stands.
    pub status: Status,
    /// The task the todo was made for, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<Value>,
    /// Every other field of the creating input, kept as given.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub data: Map<String, Value>,
}

/// Input of `task_creation`; every field is optional.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateInput {
    title: Option<String>,
    description: Option<String>,
    deadline: Option<Value>,
    assignee: Option<String>,
    task_id: Option<Value>,
    #[serde(flatten)]
    data: Map<String, Value>,
}

/// Input of `task_assignment`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssignInput {
    todo_id: String,
    assignee: Option<String>,
    /// Task data often names the person `userId`; used when `assignee` is absent.
    user_id: Option<String>,
}

/// Input of `task_monitoring`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MonitorInput {
    todo_id: Option<String>,
}

fn create(ctx: &CallContext, input: CreateInput) -> Result<Todo, PluginError> {
    // The call's subject is the task when a worker runs one; it links the todo back.
    let task_id = input
        .task_id
        .or_else(|| ctx.subject_id.clone().map(Value::String));
    let title = input
        .title
        .or_else(|| task_id.as_ref().map(display_id))
        .unwrap_or_else(|| "untitled".to_owned());

    // A todo made while a task runs is named after that task: a retried or
    // requeued task (delivery is at least once) then rewrites its own todo
    // instead of adding a duplicate, and no shared counter serialises
    // concurrent tasks. Direct calls number their todos.
    let (todo_id, number) = match &ctx.subject_id {
        Some(subject) => (format!("todo_{subject}"), None),
        None => {
            let number = kv::get_json::<u64>(COUNTER_KEY)?.unwrap_or(0) + 1;
            (format!("todo_{number}"), Some(number))
        }
    };
    let todo = Todo {
        todo_id,
        title,
        description: input.description,
        deadline: input.deadline,
        assignee: input.assignee,
        status: Status::Open,
        task_id,
        data: input.data,
    };
    // The todo first, then the counter: if the second write fails, the next
    // call reuses the number and overwrites the orphan rather than skipping it.
    store(&todo)?;
    if let Some(number) = number {
        kv::set_json(COUNTER_KEY, &number)?;
    }
    log::log(
        Level::Info,
        format!("todo {} created: {}", todo.todo_id, todo.title),
        &[("todoId", &todo.todo_id)],
    );
    Ok(todo)
}

fn assign(input: AssignInput) -> Result<Todo, PluginError> {
    let mut todo = load(&input.todo_id)?;
    let assignee = input
        .assignee
        .or(input.user_id)
        .unwrap_or_else(|| "unassigned".to_owned());
    todo.assignee = Some(assignee);
    todo.status = Status::Assigned;
    store(&todo)?;
    let assignee = todo.assignee.as_deref().unwrap_or_default();
    log::log(
        Level::Info,
        format!("todo {} assigned to {assignee}", todo.todo_id),
        &[("todoId", &todo.todo_id), ("assignee", assignee)],
    );
    Ok(todo)
}

fn monitor(input: MonitorInput) -> Result<Value, PluginError> {
    if let Some(todo_id) = input.todo_id {
        let todo = load(&todo_id)?;
        log::log(
            Level::Info,
            format!("todo {} is {}", todo.todo_id, status_name(todo.status)),
            &[("todoId", &todo.todo_id)],
        );
        return to_output(&todo);
    }
    let (mut open, mut assigned, mut done) = (0u64, 0u64, 0u64);
    for key in kv::list_keys(TODO_PREFIX)? {
        // A key listed a moment ago may be gone; it simply is not counted.
        if let Some(todo) = kv::get_json::<Todo>(&key)? {
            match todo.status {
                Status::Open => open += 1,
                Status::Assigned => assigned += 1,
                Status::Done => done += 1,
            }
        }
    }
    Ok(json!({ "total": open + assigned + done, "open": open, "assigned": assigned, "done": done }))
}

fn load(todo_id: &str) -> Result<Todo, PluginError> {
    kv::get_json::<Todo>(&format!("{TODO_PREFIX}{todo_id}"))?
        .ok_or_else(|| PluginError::invalid_input(format!("unknown todoId `{todo_id}`")))
}

fn store(todo: &Todo) -> Result<(), PluginError> {
    Ok(kv::set_json(
        &format!("{TODO_PREFIX}{}", todo.todo_id),
        todo,
    )?)
}

/// A task id as a title: strings without their JSON quotes.
fn display_id(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Open => "open",
        Status::Assigned => "assigned",
        Status::Done => "done",
    }
}

#[cfg(test)]
mod tests {
    use autoagent_sdk::testing;

    use super::*;

    fn call(capability: &str, input: Value) -> Result<Value, PluginError> {
        Todos::invoke(&testing::context(), capability, input)
    }

    #[test]
    fn describes_its_three_capabilities() {
        let names: Vec<String> = Todos::describe().into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            ["task_creation", "task_assignment", "task_monitoring"]
        );
    }

    #[test]
    fn creation_numbers_todos_and_keeps_extra_fields_as_data() {
        testing::reset();
        let first = call(
            "task_creation",
            json!({
                "title": "Write report",
                "description": "Q3 numbers",
                "deadline": "2025-01-31",
                "priority": "high",
                "taskId": "task_7"
            }),
        )
        .unwrap();
        assert_eq!(
            first,
            json!({
                "todoId": "todo_1",
                "title": "Write report",
                "description": "Q3 numbers",
                "deadline": "2025-01-31",
                "status": "open",
                "taskId": "task_7",
                "data": { "priority": "high" }
            })
        );
        let second = call("task_creation", json!({ "title": "Second" })).unwrap();
        assert_eq!(second["todoId"], "todo_2");
        assert_eq!(kv::get_json::<u64>(COUNTER_KEY).unwrap(), Some(2));

        let line = &testing::logs()[0];
        assert_eq!(line.level, Level::Info);
        assert_eq!(line.field("todoId"), Some("todo_1"));
        assert!(line.message.contains("todo_1"));
    }

    #[test]
    fn creation_without_title_uses_task_id_then_untitled() {
        testing::reset();
        let from_task = call("task_creation", json!({ "taskId": 42 })).unwrap();
        assert_eq!(from_task["title"], "42");
        let nothing = call("task_creation", Value::Null).unwrap();
        assert_eq!(nothing["title"], "untitled");
        assert_eq!(nothing["status"], "open");
    }

    #[test]
    fn creation_links_the_call_subject_as_task() {
        testing::reset();
        let ctx = testing::context().with_subject("task_9");
        let todo = Todos::invoke(&ctx, "task_creation", json!({})).unwrap();
        assert_eq!(todo["taskId"], "task_9");
        assert_eq!(todo["title"], "task_9");
    }

    #[test]
    fn a_task_that_runs_twice_rewrites_its_own_todo() {
        testing::reset();
        let ctx = testing::context().with_subject("task_9");
        let first = Todos::invoke(&ctx, "task_creation", json!({"title": "a"})).unwrap();
        let again = Todos::invoke(&ctx, "task_creation", json!({"title": "a"})).unwrap();
        assert_eq!(first["todoId"], "todo_task_9");
        assert_eq!(again["todoId"], first["todoId"]);
        let summary = call("task_monitoring", json!({})).unwrap();
        assert_eq!(summary["total"], 1);
    }

    #[test]
    fn creation_rejects_a_title_of_the_wrong_type() {
        testing::reset();
        let err = call("task_creation", json!({ "title": 5 })).unwrap_err();
        assert!(
            matches!(&err, PluginError::InvalidInput(m) if m.contains("`title`")),
            "{err}"
        );
        assert!(
            testing::kv_entries().is_empty(),
            "nothing is written on bad input"
        );
    }

    #[test]
    fn assignment_sets_assignee_and_status() {
        testing::reset();
        call("task_creation", json!({ "title": "Deploy" })).unwrap();
        let todo = call(
            "task_assignment",
            json!({ "todoId": "todo_1", "assignee": "kim" }),
        )
        .unwrap();
        assert_eq!(todo["assignee"], "kim");
        assert_eq!(todo["status"], "assigned");
        // Stored, not only returned.
        assert_eq!(
            call("task_monitoring", json!({ "todoId": "todo_1" })).unwrap(),
            todo
        );
    }

    #[test]
    fn assignment_falls_back_to_user_id_then_unassigned() {
        testing::reset();
        call("task_creation", json!({})).unwrap();
        call("task_creation", json!({})).unwrap();
        let by_user = call(
            "task_assignment",
            json!({ "todoId": "todo_1", "userId": "lee" }),
        )
        .unwrap();
        assert_eq!(by_user["assignee"], "lee");
        let nobody = call("task_assignment", json!({ "todoId": "todo_2" })).unwrap();
        assert_eq!(nobody["assignee"], "unassigned");
    }

    #[test]
    fn assignment_accepts_the_creation_output_as_input() {
        testing::reset();
        let created = call(
            "task_creation",
            json!({ "title": "Chain", "userId": "park" }),
        )
        .unwrap();
        let mut input = created.clone();
        input["assignee"] = json!("park");
        let assigned = call("task_assignment", input).unwrap();
        assert_eq!(assigned["todoId"], created["todoId"]);
        assert_eq!(assigned["assignee"], "park");
    }

    #[test]
    fn assignment_of_an_unknown_todo_names_it() {
        testing::reset();
        let err = call(
            "task_assignment",
            json!({ "todoId": "todo_99", "assignee": "kim" }),
        )
        .unwrap_err();
        assert_eq!(err, PluginError::invalid_input("unknown todoId `todo_99`"));
    }

    #[test]
    fn assignment_without_todo_id_is_invalid_input() {
        testing::reset();
        let err = call("task_assignment", json!({ "assignee": "kim" })).unwrap_err();
        assert_eq!(err, PluginError::invalid_input("missing field `todoId`"));
    }

    #[test]
    fn monitoring_without_todo_id_counts_by_status() {
        testing::reset();
        assert_eq!(
            call("task_monitoring", json!({})).unwrap(),
            json!({ "total": 0, "open": 0, "assigned": 0, "done": 0 })
        );
        for _ in 0..3 {
            call("task_creation", json!({})).unwrap();
        }
        call(
            "task_assignment",
            json!({ "todoId": "todo_2", "assignee": "kim" }),
        )
        .unwrap();
        assert_eq!(
            call("task_monitoring", Value::Null).unwrap(),
            json!({ "total": 3, "open": 2, "assigned": 1, "done": 0 })
        );
    }

    #[test]
    fn monitoring_an_unknown_todo_names_it() {
        testing::reset();
        let err = call("task_monitoring", json!({ "todoId": "todo_5" })).unwrap_err();
        assert_eq!(err, PluginError::invalid_input("unknown todoId `todo_5`"));
    }

    #[test]
    fn state_errors_become_plugin_errors() {
        testing::reset();
        testing::deny_kv();
        assert!(matches!(
            call("task_creation", json!({})),
            Err(PluginError::Denied(_))
        ));

        testing::reset();
        testing::set_kv_quota(Some(16));
        assert!(matches!(
            call("task_creation", json!({})),
            Err(PluginError::Denied(_))
        ));

        testing::reset();
        testing::fail_kv(Some(kv::KvError::Storage("disk full".into())));
        assert!(
            matches!(call("task_monitoring", json!({})), Err(PluginError::Failed(m)) if m.contains("disk full"))
        );
    }

    #[test]
    fn unknown_capability_is_unsupported() {
        testing::reset();
        assert_eq!(
            call("task_deletion", json!({})),
            Err(PluginError::unsupported(
                "unknown capability `task_deletion`"
            ))
        );
    }
}
