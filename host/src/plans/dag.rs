//! The graph of a plan's actions: checking it, and how a plan moves along
//! it. Pure functions, no I/O.

use std::collections::HashMap;

use super::{ActionStatus, Plan, PlanStatus};
use crate::clock::Timestamp;

/// Checks a dependency graph given as `(node, its dependencies)`: unique
/// names, every dependency another node, and no cycle (the message names
/// one, as `a → b → a`).
pub fn check(graph: &[(&str, Vec<&str>)]) -> Result<(), String> {
    let index: HashMap<&str, usize> = graph
        .iter()
        .enumerate()
        .map(|(n, (name, _))| (*name, n))
        .collect();
    if index.len() != graph.len() {
        let mut seen = Vec::new();
        for (name, _) in graph {
            if seen.contains(name) {
                return Err(format!("{name:?} names two actions; names are unique"));
            }
            seen.push(name);
        }
    }
    for (name, deps) in graph {
        for dep in deps {
            if dep == name {
                return Err(format!("action {name:?} depends on itself"));
            }
            if !index.contains_key(dep) {
                return Err(format!(
                    "action {name:?} depends on {dep:?}, which is not one of the actions"
                ));
            }
        }
    }
    // Depth-first, without recursion: a node met again while it is on the
    // path closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; graph.len()];
    for start in 0..graph.len() {
        if marks[start] != Mark::New {
            continue;
        }
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::OnPath;
        while let Some((node, next_dep)) = path.last_mut() {
            let deps = &graph[*node].1;
            if *next_dep == deps.len() {
                marks[*node] = Mark::Done;
                path.pop();
                continue;
            }
            let dep = index[deps[*next_dep]];
            *next_dep += 1;
            match marks[dep] {
                Mark::Done => {}
                Mark::New => {
                    marks[dep] = Mark::OnPath;
                    path.push((dep, 0));
                }
                Mark::OnPath => {
                    let from = path.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                    let mut names: Vec<&str> =
                        path[from..].iter().map(|(n, _)| graph[*n].0).collect();
                    names.push(graph[dep].0);
                    return Err(format!("has a cycle: {}", names.join(" → ")));
                }
            }
        }
    }
    Ok(())
}

/// Where a plan stands after [`advance`].
#[derive(Debug)]
pub struct Progress {
    /// The actions that can start now, by index.
    pub ready: Vec<usize>,
    /// What the plan's status is now.
    pub status: PlanStatus,
    /// Whether some action was skipped just now.
    pub skipped: bool,
}

/// What the plan's actions make of it now: skips the pending actions a
/// failed dependency blocks, and says which actions can start (pending
/// with every dependency succeeded, or waiting for a retry that is due)
/// and the plan's status.
pub fn advance(plan: &mut Plan, now: Timestamp) -> Progress {
    let status_of: HashMap<String, ActionStatus> = plan
        .actions
        .iter()
        .map(|a| (a.name.clone(), a.status))
        .collect();
    // Skipping can block further actions; repeat until nothing changes
    // (at most one round per action).
    let mut statuses = status_of;
    let mut skipped = false;
    loop {
        let mut changed = false;
        for action in &mut plan.actions {
            if action.status != ActionStatus::Pending {
                continue;
            }
            if let Some(blocker) = action
                .depends_on
                .iter()
                .find(|dep| statuses.get(*dep).is_some_and(|s| s.needs_retry()))
            {
                action.status = ActionStatus::Skipped;
                action.error = Some(format!("not run: {blocker:?} did not succeed"));
                statuses.insert(action.name.clone(), ActionStatus::Skipped);
                changed = true;
                skipped = true;
            }
        }
        if !changed {
            break;
        }
    }
    let ready: Vec<usize> = plan
        .actions
        .iter()
        .enumerate()
        .filter(|(_, a)| match a.status {
            ActionStatus::Pending => a
                .depends_on
                .iter()
                .all(|dep| statuses.get(dep) == Some(&ActionStatus::Succeeded)),
            ActionStatus::Retrying => a.not_before.is_none_or(|at| at <= now),
            _ => false,
        })
        .map(|(n, _)| n)
        .collect();
    let active = plan
        .actions
        .iter()
        .any(|a| matches!(a.status, ActionStatus::Running | ActionStatus::Retrying));
    let status = if plan
        .actions
        .iter()
        .all(|a| a.status == ActionStatus::Succeeded)
    {
        PlanStatus::Succeeded
    } else if ready.is_empty() && !active {
        PlanStatus::Failed
    } else {
        PlanStatus::Running
    };
    Progress {
        ready,
        status,
        skipped,
    }
}

/// The actions `will_run` selects, in layers: the first layer's
/// dependencies all succeeded already (and do not run again), each later
/// layer's are in the layers before it. An action whose dependency neither
/// succeeded nor runs would never start and is left out.
pub fn layers(plan: &Plan, will_run: impl Fn(&super::PlanAction) -> bool) -> Vec<Vec<String>> {
    let mut done: Vec<&str> = plan
        .actions
        .iter()
        .filter(|a| a.status == ActionStatus::Succeeded && !will_run(a))
        .map(|a| a.name.as_str())
        .collect();
    let mut remaining: Vec<&super::PlanAction> =
        plan.actions.iter().filter(|a| will_run(a)).collect();
    let mut layers = Vec::new();
    loop {
        let (layer, rest): (Vec<_>, Vec<_>) = remaining
            .into_iter()
            .partition(|a| a.depends_on.iter().all(|d| done.contains(&d.as_str())));
        if layer.is_empty() {
            return layers;
        }
        done.extend(layer.iter().map(|a| a.name.as_str()));
        layers.push(layer.iter().map(|a| a.name.clone()).collect());
        remaining = rest;
    }
}

/// When the plan's next retry is due.
pub fn next_retry(plan: &Plan) -> Option<Timestamp> {
    plan.actions
        .iter()
        .filter(|a| a.status == ActionStatus::Retrying)
        .filter_map(|a| a.not_before)
        .min()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plans::PlanAction;
    use crate::tasks::Priority;

    fn action(name: &str, deps: &[&str]) -> PlanAction {
        PlanAction {
            name: name.into(),
            capability: "echo".into(),
            input: json!({}),
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            timeout_ms: 1000,
            max_attempts: 1,
            backoff_ms: 100,
            idempotent: true,
            status: ActionStatus::Pending,
            attempts: Vec::new(),
            attempts_made: 0,
            output: None,
            error: None,
            not_before: None,
        }
    }

    fn diamond() -> Plan {
        Plan {
            id: "plan_1".into(),
            template_id: "T".into(),
            name: "t".into(),
            category: "test".into(),
            priority: Priority::Medium,
            team: "default".into(),
            data: json!({}),
            server_id: None,
            checked_on: "here".into(),
            depends_on: Vec::new(),
            waiting_reason: None,
            status: PlanStatus::Running,
            actions: vec![
                action("top", &[]),
                action("left", &["top"]),
                action("right", &["top"]),
                action("bottom", &["left", "right"]),
            ],
            error: None,
            created_at: Timestamp::EARLIEST,
            updated_at: Timestamp::EARLIEST,
            started_at: None,
            finished_at: None,
        }
    }

    fn set(plan: &mut Plan, name: &str, status: ActionStatus) {
        plan.actions
            .iter_mut()
            .find(|a| a.name == name)
            .unwrap()
            .status = status;
    }

    fn names(plan: &Plan, ready: &[usize]) -> Vec<String> {
        ready
            .iter()
            .map(|n| plan.actions[*n].name.clone())
            .collect()
    }

    #[test]
    fn actions_start_as_their_dependencies_succeed() {
        let mut plan = diamond();
        let now = Timestamp::EARLIEST;
        let progress = advance(&mut plan, now);
        assert_eq!(
            (names(&plan, &progress.ready), progress.status),
            (vec!["top".to_owned()], PlanStatus::Running)
        );
        set(&mut plan, "top", ActionStatus::Succeeded);
        let ready = advance(&mut plan, now).ready;
        assert_eq!(names(&plan, &ready), ["left", "right"], "in parallel");
        set(&mut plan, "left", ActionStatus::Succeeded);
        set(&mut plan, "right", ActionStatus::Running);
        assert!(advance(&mut plan, now).ready.is_empty());
        set(&mut plan, "right", ActionStatus::Succeeded);
        let ready = advance(&mut plan, now).ready;
        assert_eq!(names(&plan, &ready), ["bottom"]);
        set(&mut plan, "bottom", ActionStatus::Succeeded);
        assert_eq!(advance(&mut plan, now).status, PlanStatus::Succeeded);
    }

    #[test]
    fn a_failure_skips_what_it_blocks_and_fails_the_plan_once_nothing_runs() {
        let mut plan = diamond();
        let now = Timestamp::EARLIEST;
        set(&mut plan, "top", ActionStatus::Succeeded);
        set(&mut plan, "left", ActionStatus::Failed);
        set(&mut plan, "right", ActionStatus::Running);
        let progress = advance(&mut plan, now);
        assert!(progress.ready.is_empty());
        assert!(progress.skipped);
        assert_eq!(progress.status, PlanStatus::Running, "right still runs");
        assert_eq!(plan.action("bottom").unwrap().status, ActionStatus::Skipped);
        set(&mut plan, "right", ActionStatus::Succeeded);
        assert_eq!(advance(&mut plan, now).status, PlanStatus::Failed);
    }

    #[test]
    fn a_retry_is_ready_once_its_backoff_passed() {
        let mut plan = diamond();
        let later = Timestamp::EARLIEST.plus(std::time::Duration::from_secs(5));
        let top = &mut plan.actions[0];
        top.status = ActionStatus::Retrying;
        top.not_before = Some(later);
        assert!(advance(&mut plan, Timestamp::EARLIEST).ready.is_empty());
        assert_eq!(next_retry(&plan), Some(later));
        let ready = advance(&mut plan, later).ready;
        assert_eq!(names(&plan, &ready), ["top"]);
    }

    #[test]
    fn layers_say_what_would_run_in_which_order() {
        let mut plan = diamond();
        assert_eq!(
            layers(&plan, |_| true),
            [vec!["top"], vec!["left", "right"], vec!["bottom"]]
        );
        // A retry after `right` failed: `top` and `left` keep their output.
        set(&mut plan, "top", ActionStatus::Succeeded);
        set(&mut plan, "left", ActionStatus::Succeeded);
        set(&mut plan, "right", ActionStatus::Failed);
        set(&mut plan, "bottom", ActionStatus::Skipped);
        assert_eq!(
            layers(&plan, |a| a.status.needs_retry()),
            [vec!["right"], vec!["bottom"]]
        );
    }

    #[test]
    fn graphs_with_unknown_or_self_dependencies_are_refused() {
        assert_eq!(
            check(&[("a", vec!["a"])]).unwrap_err(),
            "action \"a\" depends on itself"
        );
        assert_eq!(
            check(&[("a", vec!["zz"])]).unwrap_err(),
            "action \"a\" depends on \"zz\", which is not one of the actions"
        );
        assert!(check(&[("a", vec![]), ("b", vec!["a"]), ("c", vec!["a", "b"])]).is_ok());
    }
}
