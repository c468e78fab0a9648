//! Running a workflow: its steps in order, each step's input rendered from
//! the task's data and the outputs of the steps before it.

use serde_json::{Map, Value, json};

use super::{Step, Workflow, render};

/// One execution of a workflow, a step at a time. The caller runs each
/// step's capability (with its own limits, retries and logging) and hands
/// the output back; the run keeps the context later templates read and the
/// result's shape.
///
/// ```text
/// let mut run = workflow.start(&data);
/// while let Some(step) = run.next_step() {
///     let (step, input) = step?;          // a template over its bounds fails here
///     run.record(call(step, input).await?);
/// }
/// let result = run.result();
/// ```
pub struct Run<'w> {
    workflow: &'w Workflow,
    next: usize,
    context: Value,
    outputs: Map<String, Value>,
}

/// A step whose input template could not be rendered; the same data fails
/// the same way every time, so a retry cannot help.
#[derive(Debug, thiserror::Error)]
#[error("step {step:?}: {message}")]
pub struct StepInputError {
    /// The step.
    pub step: String,
    /// What the template evaluation said.
    pub message: String,
}

impl Workflow {
    /// Starts a run over `data` (the task's input).
    pub fn start(&self, data: &Value) -> Run<'_> {
        Run {
            workflow: self,
            next: 0,
            context: json!({"data": data, "steps": {}}),
            outputs: Map::new(),
        }
    }
}

impl<'w> Run<'w> {
    /// The next step and its input, or `None` once every step has run.
    pub fn next_step(&self) -> Option<Result<(&'w Step, Value), StepInputError>> {
        let step = self.workflow.steps.get(self.next)?;
        Some(
            render(&step.input, &self.context)
                .map(|input| (step, input))
                .map_err(|message| StepInputError {
                    step: step.name.to_string(),
                    message,
                }),
        )
    }

    /// Records the output of the step [`Run::next_step`] gave, which later
    /// steps read as `$.steps.<name>`.
    pub fn record(&mut self, output: Value) {
        let Some(step) = self.workflow.steps.get(self.next) else {
            return;
        };
        self.context["steps"][step.name.as_str()] = output.clone();
        self.outputs.insert(step.name.to_string(), output);
        self.next += 1;
    }

    /// The run's result: the workflow's name and each step's output.
    pub fn result(self) -> Value {
        json!({"workflow": self.workflow.name, "steps": self.outputs})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;

    fn workflow(steps: Value) -> Workflow {
        Workflow {
            name: "W".into(),
            description: String::new(),
            worker_type: "T".into(),
            team: "default".into(),
            steps: serde_json::from_value(steps).unwrap(),
            built_in: false,
            created_at: Timestamp::EARLIEST,
        }
    }

    #[test]
    fn each_step_reads_the_data_and_the_outputs_before_it() {
        let workflow = workflow(json!([
            {"name": "first", "capability": "a", "input": {"title": "$.data.title"}},
            {"name": "second", "capability": "b", "input": {"id": "$.steps.first.id"}},
        ]));
        let mut run = workflow.start(&json!({"title": "hello"}));
        let (step, input) = run.next_step().unwrap().unwrap();
        assert_eq!(step.name.as_str(), "first");
        assert_eq!(input, json!({"title": "hello"}));
        run.record(json!({"id": 7}));
        let (step, input) = run.next_step().unwrap().unwrap();
        assert_eq!(step.name.as_str(), "second");
        assert_eq!(input, json!({"id": 7}));
        run.record(json!("ok"));
        assert!(run.next_step().is_none());
        assert_eq!(
            run.result(),
            json!({"workflow": "W", "steps": {"first": {"id": 7}, "second": "ok"}})
        );
    }

    #[test]
    fn a_template_that_cannot_render_names_its_step() {
        let workflow = workflow(json!([
            {"name": "only", "capability": "a", "input": "$[?length(@) > 1 && "},
        ]));
        let run = workflow.start(&json!({}));
        let err = run.next_step().unwrap().unwrap_err();
        assert_eq!(err.step, "only");
    }
}
