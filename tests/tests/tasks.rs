//! Worker flow automation against a real host: the guide's flow verbatim,
//! priorities, capability matching, retries, deadlines, cancel, restart, and
//! `kill -9` under a stream of submissions.

use autoagent_tests::{Client, Host, Value, eventually, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const SEED_WORKER: &str = r#"{
    "id": "TODO_WORKER_001",
    "name": "TODO 관리 워커",
    "type": "TODO",
    "capabilities": ["task_creation", "task_assignment", "task_monitoring"]
  }"#;

const SEED_TASK: &str = r#"{
    "type": "TODO",
    "priority": "high",
    "data": {
      "title": "새로운 기능 개발",
      "description": "사용자 인증 시스템 개선",
      "deadline": "2025-10-10"
    },
    "workflow": "TODO_WORKFLOW"
  }"#;

const SEED_EXECUTE: &str = r#"{
    "data": {
      "taskId": "task_123",
      "userId": "user_456"
    }
  }"#;

/// Waits until a task is in a state `wanted` accepts and returns it.
async fn task_when(
    client: &Client,
    host: &Host,
    id: &str,
    what: &str,
    wanted: fn(&str) -> bool,
) -> Value {
    let url = host.url(&format!("/tasks/{id}"));
    eventually(30, &format!("task {id} to {what}"), || async {
        let task = client.get(&url).await.expect_ok(200);
        wanted(task["status"].as_str().unwrap()).then_some(task)
    })
    .await
}

/// Waits until a task ends and returns it.
async fn terminal(client: &Client, host: &Host, id: &str) -> Value {
    task_when(client, host, id, "end", |s| s != "queued" && s != "running").await
}

/// Waits until a task's attempt is running.
async fn started(client: &Client, host: &Host, id: &str) {
    task_when(client, host, id, "start", |s| s == "running").await;
}

async fn submit(client: &Client, host: &Host, body: Value) -> String {
    let task = client
        .post_json(&host.url("/tasks"), &body.to_string())
        .await
        .expect_ok(201);
    task["id"].as_str().unwrap().to_owned()
}

async fn register(client: &Client, host: &Host, body: Value) {
    client
        .post_json(&host.url("/workers"), &body.to_string())
        .await
        .expect_ok(201);
}

#[tokio::test]
async fn the_guides_worker_flow_works_verbatim() {
    let host = Host::start();
    let client = Client::new();
    client
        .post_json(&host.url("/workers"), SEED_WORKER)
        .await
        .expect_ok(201);

    let task = client
        .post_json(&host.url("/tasks"), SEED_TASK)
        .await
        .expect_ok(201);
    assert_eq!(task["status"], "queued");
    assert_eq!(task["priority"], "high");
    assert!(task["id"].as_str().unwrap().starts_with("task_"));
    let execution = client
        .post_json(&host.url("/workflows/TODO_WORKFLOW/execute"), SEED_EXECUTE)
        .await
        .expect_ok(201);
    let execution_id = execution["executionId"].as_str().unwrap().to_owned();

    let done = terminal(&client, &host, task["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["workerId"], "TODO_WORKER_001");
    let steps = &done["result"]["steps"];
    assert_eq!(steps["create"]["title"], "새로운 기능 개발");
    assert_eq!(steps["assign"]["status"], "assigned");
    assert_eq!(steps["monitor"]["todoId"], steps["create"]["todoId"]);

    terminal(&client, &host, &execution_id).await;
    let execution = client
        .get(&host.url(&format!(
            "/workflows/TODO_WORKFLOW/executions/{execution_id}"
        )))
        .await
        .expect_ok(200);
    assert_eq!(execution["status"], "succeeded");
    assert_eq!(
        execution["task"]["result"]["steps"]["assign"]["assignee"],
        "user_456"
    );

    // The guide lists workers twice; both answer.
    for _ in 0..2 {
        let workers = client.get(&host.url("/workers")).await.expect_ok(200);
        assert_eq!(workers[0]["tasksCompleted"], 2);
        assert_eq!(workers[0]["status"], "idle");
    }
    // Restart: the placeholder id is unknown; the real worker restarts.
    client
        .send("POST", &host.url("/workers/WORKER_ID/restart"), None, &[])
        .await
        .expect_error(404);
    let restarted = client
        .send(
            "POST",
            &host.url("/workers/TODO_WORKER_001/restart"),
            None,
            &[],
        )
        .await
        .expect_ok(200);
    assert_eq!(restarted["status"], "idle");

    let status = client.get(&host.url("/status")).await.expect_ok(200);
    let automation = &status["components"]["workerAutomation"];
    assert_eq!(automation["performance"]["totalTasks"], 2);
    assert_eq!(automation["performance"]["completedTasks"], 2);
    assert_eq!(automation["performance"]["successRate"], 100.0);

    // The worker's story is in the log, one line per event.
    let log = host.log_containing(&["worker restarted"]).await;
    let story: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("TODO_WORKER_001"))
        .collect();
    for event in [
        "worker registered",
        "task assigned",
        "task succeeded",
        "worker restarted",
    ] {
        assert!(
            story.iter().any(|l| l.contains(event)),
            "no {event:?} line in {story:#?}"
        );
    }
}

#[tokio::test]
async fn tasks_run_by_priority_then_age() {
    let host = Host::start_with_guests();
    let client = Client::new();
    let mut ids = Vec::new();
    for priority in ["low", "medium", "critical", "high", "critical"] {
        let body = json!({"type": "ECHO", "priority": priority, "capability": "echo", "team": "testing", "data": {"p": priority}});
        ids.push((priority, submit(&client, &host, body).await));
    }
    // One worker, one slot: the order it takes them is the queue's order.
    register(&client, &host, json!({"id": "E1", "name": "e", "type": "ECHO", "capabilities": ["echo"], "team": "testing"})).await;
    for (_, id) in &ids {
        let task = terminal(&client, &host, id).await;
        assert_eq!(task["status"], "succeeded");
    }
    // Timestamps have millisecond resolution and short tasks share one, so
    // the order of assignment is read from the log, where the scheduler
    // writes one line per assignment as it makes it.
    let needles: Vec<String> = ids
        .iter()
        .map(|(_, id)| format!("task assigned task_id={id} "))
        .collect();
    let wanted: Vec<&str> = needles.iter().map(String::as_str).collect();
    let log = host.log_containing(&wanted).await;
    let mut assigned: Vec<(usize, &str, &str)> = ids
        .iter()
        .zip(&needles)
        .map(|((priority, id), needle)| (log.find(needle).unwrap(), *priority, id.as_str()))
        .collect();
    assigned.sort();
    let order: Vec<&str> = assigned.iter().map(|(_, p, _)| *p).collect();
    assert_eq!(order, ["critical", "critical", "high", "medium", "low"]);
    assert_eq!(
        assigned[0].2, ids[2].1,
        "the older critical task goes first"
    );
}

#[tokio::test]
async fn a_task_waits_for_a_worker_whose_capabilities_cover_it_and_says_why() {
    let host = Host::start_with_guests();
    let client = Client::new();
    register(&client, &host, json!({"id": "P1", "name": "p", "type": "ECHO", "capabilities": ["ping"], "team": "testing"})).await;
    register(&client, &host, json!({"id": "O1", "name": "o", "type": "OTHER", "capabilities": ["echo"], "team": "testing"})).await;
    let id = submit(
        &client,
        &host,
        json!({"type": "ECHO", "capability": "echo", "team": "testing", "data": {"n": 1}}),
    )
    .await;
    let reason = eventually(10, "a waiting reason", || async {
        let task = client
            .get(&host.url(&format!("/tasks/{id}")))
            .await
            .expect_ok(200);
        task["waitingReason"].as_str().map(str::to_owned)
    })
    .await;
    assert!(reason.contains("capabilities"), "{reason}");
    let task = client
        .get(&host.url(&format!("/tasks/{id}")))
        .await
        .expect_ok(200);
    assert_eq!(task["status"], "queued");

    register(&client, &host, json!({"id": "E1", "name": "e", "type": "ECHO", "capabilities": ["echo", "ping"], "team": "testing"})).await;
    let task = terminal(&client, &host, &id).await;
    assert_eq!(task["status"], "succeeded");
    assert_eq!(task["workerId"], "E1");
    assert_eq!(task["result"], json!({"n": 1}));
}

#[tokio::test]
async fn a_failing_task_is_retried_with_backoff_then_fails() {
    let host = Host::start_with_guests();
    let client = Client::new();
    register(&client, &host, json!({"id": "E1", "name": "e", "type": "ECHO", "capabilities": ["fail"], "team": "testing"})).await;
    let id = submit(
        &client,
        &host,
        json!({"type": "ECHO", "capability": "fail", "team": "testing", "maxAttempts": 3}),
    )
    .await;
    let task = terminal(&client, &host, &id).await;
    assert_eq!(task["status"], "failed");
    assert_eq!(task["attempts"], 3);
    assert!(
        task["error"]
            .as_str()
            .unwrap()
            .contains("failed on purpose")
    );
    // Backoff of 0.5 s then 1 s separates the three attempts.
    let at = |field: &str| OffsetDateTime::parse(task[field].as_str().unwrap(), &Rfc3339).unwrap();
    assert!(
        at("finishedAt") - at("createdAt") >= time::Duration::milliseconds(1_400),
        "{task}"
    );
    let log = host.log_containing(&["task failed"]).await;
    let failures = log
        .lines()
        .filter(|l| l.contains(&id) && l.contains("queued again"))
        .count();
    assert_eq!(failures, 2);
    assert!(log.lines().any(|l| l.contains(&id) && l.contains("ERROR")));
    let worker = client.get(&host.url("/workers/E1")).await.expect_ok(200);
    assert_eq!(worker["tasksFailed"], 3);
}

#[tokio::test]
async fn a_task_past_its_deadline_times_out_queued_or_running() {
    let host = Host::start_with_guests();
    let client = Client::new();
    // Queued with no worker to take it.
    let soon = |ms: u64| {
        let at = OffsetDateTime::now_utc() + std::time::Duration::from_millis(ms);
        at.format(&Rfc3339).unwrap()
    };
    let queued = submit(
        &client,
        &host,
        json!({"type": "NOBODY", "capability": "echo", "deadline": soon(1000)}),
    )
    .await;
    let task = terminal(&client, &host, &queued).await;
    assert_eq!(task["status"], "timed_out");

    // Running: an endless call is stopped at the deadline, before its own
    // time limit (1 s) would stop it. It ran (one attempt), and it ended
    // well before that limit, so the deadline is what stopped it.
    register(&client, &host, json!({"id": "S1", "name": "s", "type": "SLOW", "capabilities": ["spin"], "team": "testing"})).await;
    let running = submit(&client, &host, json!({"type": "SLOW", "capability": "spin", "team": "testing", "maxAttempts": 1, "deadline": soon(500)})).await;
    let task = terminal(&client, &host, &running).await;
    assert_eq!(task["status"], "timed_out", "{task}");
    assert_eq!(task["attempts"], 1, "{task}");
    let millis = |field: &str| {
        let text = task[field].as_str().unwrap();
        OffsetDateTime::parse(text, &Rfc3339)
            .unwrap()
            .unix_timestamp_nanos()
            / 1_000_000
    };
    let ran = millis("finishedAt") - millis("startedAt");
    assert!(
        ran < 1000,
        "stopped by its own time limit, not the deadline: {task}"
    );
    // Dates alone mean the end of that day; a past one times out at once.
    let past = submit(
        &client,
        &host,
        json!({"type": "NOBODY", "capability": "echo", "deadline": "2025-10-10"}),
    )
    .await;
    assert_eq!(terminal(&client, &host, &past).await["status"], "timed_out");
}

#[tokio::test]
async fn cancel_ends_a_queued_or_running_task_once() {
    let host = Host::start_with_guests();
    let client = Client::new();
    let queued = submit(
        &client,
        &host,
        json!({"type": "NOBODY", "capability": "echo"}),
    )
    .await;
    let cancelled = client
        .send(
            "POST",
            &host.url(&format!("/tasks/{queued}/cancel")),
            None,
            &[],
        )
        .await
        .expect_ok(200);
    assert_eq!(cancelled["status"], "cancelled");
    client
        .send(
            "POST",
            &host.url(&format!("/tasks/{queued}/cancel")),
            None,
            &[],
        )
        .await
        .expect_error(409);
    client
        .send("POST", &host.url("/tasks/task_nope/cancel"), None, &[])
        .await
        .expect_error(404);

    register(&client, &host, json!({"id": "S1", "name": "s", "type": "SLOW", "capabilities": ["sleepish"], "team": "testing"})).await;
    let running = submit(
        &client,
        &host,
        json!({"type": "SLOW", "capability": "sleepish", "team": "testing", "data": {"ms": 800}}),
    )
    .await;
    started(&client, &host, &running).await;
    let cancelled = client
        .send(
            "POST",
            &host.url(&format!("/tasks/{running}/cancel")),
            None,
            &[],
        )
        .await
        .expect_ok(200);
    assert_eq!(cancelled["status"], "cancelled");
    let worker = client.get(&host.url("/workers/S1")).await.expect_ok(200);
    assert_eq!(worker["activeTasks"], 0);
}

#[tokio::test]
async fn restart_stops_the_workers_calls_and_requeues_its_tasks() {
    let host = Host::start_with_guests();
    let client = Client::new();
    register(&client, &host, json!({"id": "S1", "name": "s", "type": "SLOW", "capabilities": ["sleepish"], "team": "testing"})).await;
    let id = submit(
        &client,
        &host,
        json!({"type": "SLOW", "capability": "sleepish", "team": "testing", "data": {"ms": 700}}),
    )
    .await;
    started(&client, &host, &id).await;
    let restarted = client
        .send("POST", &host.url("/workers/S1/restart"), None, &[])
        .await
        .expect_ok(200);
    assert_eq!(restarted["requeuedTasks"], json!([id]));
    let task = terminal(&client, &host, &id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["attempts"], 2, "the stopped attempt counts");
}

#[tokio::test]
async fn bad_task_submissions_are_refused_and_filters_work() {
    let host = Host::start();
    let client = Client::new();
    let url = host.url("/tasks");
    for body in [
        r#"{"type": "TODO", "priority": "urgent", "workflow": "TODO_WORKFLOW"}"#,
        r#"{"type": "TODO"}"#,
        r#"{"type": "TODO", "workflow": "NO_SUCH_WORKFLOW"}"#,
        r#"{"type": "TODO", "workflow": "TODO_WORKFLOW", "capability": "task_creation"}"#,
        r#"{"type": "TODO", "workflow": "TODO_WORKFLOW", "deadline": "someday"}"#,
        r#"{"type": "TODO", "workflow": "TODO_WORKFLOW", "maxAttempts": 0}"#,
    ] {
        client.post_json(&url, body).await.expect_error(422);
    }
    submit(
        &client,
        &host,
        json!({"type": "TODO", "workflow": "TODO_WORKFLOW", "priority": "low"}),
    )
    .await;
    submit(
        &client,
        &host,
        json!({"type": "TODO", "workflow": "TODO_WORKFLOW", "priority": "high"}),
    )
    .await;
    let page = client
        .get(&host.url("/tasks?priority=high"))
        .await
        .expect_ok(200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["priority"], "high");
    // Two queued tasks, a page of one at a time, by cursor, oldest first.
    let first = client
        .get(&host.url("/tasks?status=queued&limit=1"))
        .await
        .expect_ok(200);
    assert_eq!(first["items"][0]["priority"], "low");
    let cursor = first["nextCursor"]
        .as_str()
        .expect("a cursor to the second page");
    let second = client
        .get(&host.url(&format!("/tasks?status=queued&limit=1&cursor={cursor}")))
        .await
        .expect_ok(200);
    assert_eq!(second["items"][0]["priority"], "high");
    let cursor = second["nextCursor"].as_str().unwrap();
    let end = client
        .get(&host.url(&format!("/tasks?status=queued&limit=1&cursor={cursor}")))
        .await
        .expect_ok(200);
    assert_eq!(end["items"], json!([]));
    assert_eq!(end["nextCursor"], serde_json::Value::Null);
    client
        .get(&host.url("/tasks?status=sleeping"))
        .await
        .expect_error(400);
    client
        .get(&host.url("/tasks/task_nope"))
        .await
        .expect_error(404);
    client
        .post_json(&host.url("/workflows/NOPE/execute"), "{}")
        .await
        .expect_error(404);
}

#[tokio::test]
async fn a_team_defines_and_runs_its_own_workflow() {
    let host = Host::start_with_guests();
    let client = Client::new();
    let definition = json!({
        "name": "ECHO_TWICE",
        "workerType": "ECHO",
        "team": "testing",
        "steps": [
            {"name": "first", "capability": "echo", "input": {"said": "$.data.word"}},
            {"name": "second", "capability": "echo", "input": {"again": "$.steps.first.said", "n": 2}}
        ]
    });
    client
        .post_json(&host.url("/workflows"), &definition.to_string())
        .await
        .expect_ok(201);
    client
        .post_json(&host.url("/workflows"), &definition.to_string())
        .await
        .expect_error(409);
    let listed = client.get(&host.url("/workflows")).await.expect_ok(200);
    assert_eq!(
        listed.as_array().unwrap().len(),
        2,
        "TODO_WORKFLOW and ours"
    );
    register(&client, &host, json!({"id": "E1", "name": "e", "type": "ECHO", "capabilities": ["echo"], "team": "testing"})).await;
    let execution = client
        .post_json(
            &host.url("/workflows/ECHO_TWICE/execute"),
            r#"{"data": {"word": "hi"}}"#,
        )
        .await
        .expect_ok(201);
    let task = terminal(&client, &host, execution["executionId"].as_str().unwrap()).await;
    assert_eq!(
        task["result"]["steps"]["second"],
        json!({"again": "hi", "n": 2})
    );
}

#[tokio::test]
async fn kill_9_under_a_stream_of_submissions_loses_nothing() {
    let mut host = Host::start_with_guests();
    let client = Client::new();
    register(&client, &host, json!({"id": "E1", "name": "e", "type": "ECHO", "capabilities": ["echo"], "team": "testing", "concurrency": 4})).await;
    let url = host.url("/tasks");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let url = url.clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut acknowledged = Vec::new();
                for n in 0..1000 {
                    let body = json!({"type": "ECHO", "capability": "echo", "team": "testing", "data": {"w": w, "n": n}});
                    let Ok(response) = client.post(&url).json(&body).send().await else { break };
                    if response.status() != 201 {
                        break;
                    }
                    let Ok(task) = response.json::<Value>().await else { break };
                    acknowledged.push(task["data"]["id"].as_str().unwrap().to_owned());
                    accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                acknowledged
            })
        })
        .collect();
    // Crash once the stream is well under way.
    eventually(30, "submissions to be flowing", || async {
        (accepted.load(std::sync::atomic::Ordering::Relaxed) >= 50).then_some(())
    })
    .await;
    host.kill9();
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    assert!(
        acknowledged.len() > 20,
        "the stream was running: {}",
        acknowledged.len()
    );
    host.restart();
    let mut reran = 0;
    for id in &acknowledged {
        let task = terminal(&client, &host, id).await;
        assert_eq!(task["status"], "succeeded", "{task}");
        if task["attempts"].as_u64().unwrap() > 1 {
            reran += 1;
        }
    }
    // Only what was running at the crash (at most the worker's 4 slots) runs twice.
    assert!(reran <= 4, "{reran} tasks ran twice");
}

#[tokio::test]
async fn a_failure_that_a_retry_cannot_help_is_not_retried_and_keeps_its_kind() {
    let host = Host::start();
    let client = Client::new();
    register(
        &client,
        &host,
        json!({"id": "T1", "name": "t", "type": "TODO", "capabilities": ["task_assignment"]}),
    )
    .await;
    // The bundled todo plugin answers an unknown todo with `invalid-input`.
    let id = submit(
        &client,
        &host,
        json!({"type": "TODO", "capability": "task_assignment", "maxAttempts": 3,
               "data": {"todoId": "todo_999", "assignee": "x"}}),
    )
    .await;
    let task = terminal(&client, &host, &id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["errorKind"], "invalid_input", "{task}");
    assert_eq!(task["attempts"], 1, "{task}");
}

#[tokio::test]
async fn sigterm_lets_a_running_task_finish_and_records_its_outcome() {
    let mut host = Host::start_with_guests();
    let client = Client::new();
    register(&client, &host, json!({"id": "H1", "name": "h", "type": "BUSY", "capabilities": ["sleepish"], "team": "testing"})).await;
    let id = submit(
        &client,
        &host,
        json!({"type": "BUSY", "capability": "sleepish", "team": "testing", "data": {"ms": 800}, "maxAttempts": 1}),
    )
    .await;
    started(&client, &host, &id).await;
    host.terminate();
    let status = host.wait();
    assert!(
        status.success(),
        "SIGTERM should end the host cleanly: {status}"
    );
    // The log was written out to its last line, after the task's outcome.
    let log = host.log();
    let succeeded = log
        .lines()
        .position(|l| l.contains(&id) && l.contains("task succeeded"))
        .expect("the running task finished within the grace period");
    let stopped = log
        .lines()
        .position(|l| l.ends_with(": stopped"))
        .expect("the last line says the host stopped");
    assert!(succeeded < stopped, "{log}");
    host.restart();
    let task = client
        .get(&host.url(&format!("/tasks/{id}")))
        .await
        .expect_ok(200);
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["attempts"], 1, "it ran once: {task}");
}
