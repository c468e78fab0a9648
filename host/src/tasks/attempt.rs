//! One attempt of a task: its capability, or its workflow's steps, called
//! through the plugins on the worker's behalf.

use serde_json::Value;

use super::Task;
use super::outcome::Failure;
use crate::plugins::{Caller, ErrorKind, InvokeError, Plugins};
use crate::workers::Worker;
use crate::workflows::Workflows;

/// Runs the task's capability, or its workflow's steps in order.
pub(super) async fn run(
    plugins: &Plugins,
    workflows: &Workflows,
    task: &Task,
    worker: &Worker,
) -> Result<Value, Failure> {
    if let Some(capability) = &task.capability {
        return call(plugins, task, worker, capability, &task.data).await;
    }
    let name = task.workflow.as_deref().unwrap_or_default();
    // A workflow defined now is defined for good: a missing one is no
    // passing condition.
    let workflow = workflows
        .get(name)
        .map_err(|err| Failure::new(ErrorKind::Unsupported, err.to_string()))?;
    let mut run = workflow.start(&task.data);
    while let Some(next) = run.next_step() {
        // A template over its bounds fails the same way every time.
        let (step, input) =
            next.map_err(|err| Failure::new(ErrorKind::InvalidInput, err.to_string()))?;
        let output = call(plugins, task, worker, &step.capability, &input)
            .await
            .map_err(|failure| failure.in_step(&step.name))?;
        tracing::info!(task_id = %task.id, worker_id = %worker.id, workflow = %name, step = %step.name, "workflow step done");
        run.record(output);
    }
    Ok(run.result())
}

async fn call(
    plugins: &Plugins,
    task: &Task,
    worker: &Worker,
    capability: &str,
    input: &Value,
) -> Result<Value, Failure> {
    let (team, plugin, _) = plugins
        .resolve_capability(&worker.team, capability)
        .ok_or_else(|| {
            Failure::new(
                ErrorKind::Unavailable,
                format!("no loaded plugin serves capability {capability:?}"),
            )
        })?;
    let caller = Caller {
        worker_id: Some(worker.id.clone()),
        subject_id: Some(task.id.clone()),
    };
    plugins
        .invoke(&team, &plugin, capability, input, caller)
        .await
        .map_err(|err| Failure::new(failure_kind(&err), err.to_string()))
}

/// The kind of a failed capability call, for the retry table.
fn failure_kind(err: &InvokeError) -> ErrorKind {
    match err {
        InvokeError::Call(call) => call.kind(),
        // Unloaded or changed since it was resolved a moment ago.
        InvokeError::NotFound { .. } | InvokeError::UnknownCapability { .. } => {
            ErrorKind::Unavailable
        }
    }
}
