//! Which worker takes a task, or why none can.

use super::Task;
use crate::workers::{Worker, WorkerStatus};

/// The least-loaded worker that can take `task` now, or why none can, in
/// the order an operator would check: a worker of the type, one with the
/// capabilities, a plugin serving them, a free slot.
///
/// `load` says how many attempts a worker runs; `serves` whether a loaded
/// plugin serves a capability for a team.
pub(super) fn pick_worker<'w>(
    task: &Task,
    needed: &[String],
    workers: &'w [Worker],
    load: impl Fn(&str) -> usize,
    serves: impl Fn(&str, &str) -> bool,
) -> Result<&'w Worker, String> {
    let of_type: Vec<&Worker> = workers.iter().filter(|w| w.kind == task.kind).collect();
    if of_type.is_empty() {
        return Err(format!("no worker of type {:?} is registered", task.kind));
    }
    let capable: Vec<&Worker> = of_type
        .into_iter()
        .filter(|w| needed.iter().all(|c| w.capabilities.contains(c)))
        .collect();
    if capable.is_empty() {
        return Err(format!(
            "no worker of type {:?} has all of the capabilities {needed:?}",
            task.kind
        ));
    }
    let served: Vec<&Worker> = capable
        .into_iter()
        .filter(|w| needed.iter().all(|c| serves(&w.team, c)))
        .collect();
    if served.is_empty() {
        return Err(format!(
            "no loaded plugin serves the capabilities {needed:?} for the workers of type {:?}",
            task.kind
        ));
    }
    served
        .into_iter()
        .filter(|w| w.status == WorkerStatus::Idle)
        .filter(|w| load(&w.id) < w.concurrency as usize)
        .min_by_key(|w| load(&w.id))
        .ok_or_else(|| format!("every capable worker of type {:?} is busy", task.kind))
}

/// Slots free on the workers that take work now.
pub(super) fn free_slots(workers: &[Worker], load: impl Fn(&str) -> usize) -> usize {
    workers
        .iter()
        .filter(|w| w.status == WorkerStatus::Idle)
        .map(|w| (w.concurrency as usize).saturating_sub(load(&w.id)))
        .sum()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    fn worker(id: &str, kind: &str, capabilities: &[&str], concurrency: u32) -> Worker {
        serde_json::from_value(json!({
            "id": id,
            "name": id,
            "type": kind,
            "team": "default",
            "capabilities": capabilities,
            "concurrency": concurrency,
            "status": "idle",
            "tasksCompleted": 0,
            "tasksFailed": 0,
            "registeredAt": "2026-01-01T00:00:00.000Z",
            "lastSeenAt": "2026-01-01T00:00:00.000Z",
        }))
        .expect("a worker record")
    }

    fn task(kind: &str) -> Task {
        Task {
            kind: kind.into(),
            ..super::super::fixtures::task("t1")
        }
    }

    fn pick<'w>(
        task: &Task,
        workers: &'w [Worker],
        load: &HashMap<&str, usize>,
        served: bool,
    ) -> Result<&'w str, String> {
        pick_worker(
            task,
            &["todo".to_owned()],
            workers,
            |id| load.get(id).copied().unwrap_or(0),
            |_, _| served,
        )
        .map(|w| w.id.as_str())
    }

    #[test]
    fn waiting_reasons_name_the_first_missing_piece() {
        let load = HashMap::new();
        let none: Vec<Worker> = vec![];
        assert_eq!(
            pick(&task("TODO"), &none, &load, true).unwrap_err(),
            "no worker of type \"TODO\" is registered"
        );
        let other = vec![worker("w1", "TODO", &["mail"], 1)];
        assert_eq!(
            pick(&task("TODO"), &other, &load, true).unwrap_err(),
            "no worker of type \"TODO\" has all of the capabilities [\"todo\"]"
        );
        let capable = vec![worker("w1", "TODO", &["todo"], 1)];
        assert_eq!(
            pick(&task("TODO"), &capable, &load, false).unwrap_err(),
            "no loaded plugin serves the capabilities [\"todo\"] for the workers of type \"TODO\""
        );
        let busy = HashMap::from([("w1", 1)]);
        assert_eq!(
            pick(&task("TODO"), &capable, &busy, true).unwrap_err(),
            "every capable worker of type \"TODO\" is busy"
        );
    }

    #[test]
    fn the_least_loaded_capable_worker_takes_it() {
        let workers = vec![
            worker("w1", "TODO", &["todo"], 4),
            worker("w2", "TODO", &["todo", "mail"], 4),
            worker("w3", "OTHER", &["todo"], 4),
        ];
        let load = HashMap::from([("w1", 3), ("w2", 1)]);
        assert_eq!(pick(&task("TODO"), &workers, &load, true), Ok("w2"));
        assert_eq!(
            free_slots(&workers, |id| load.get(id).copied().unwrap_or(0)),
            8
        );
    }
}
