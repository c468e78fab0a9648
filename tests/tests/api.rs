//! The management API against a real host: the user's guide's calls
//! verbatim, the envelope, and every kind of bad input.

use autoagent_tests::{Client, Host, eventually, json};

/// The body of the guide's worker-registration curl, byte for byte.
const SEED_WORKER: &str = r#"{
    "id": "TODO_WORKER_001",
    "name": "TODO 관리 워커",
    "type": "TODO",
    "capabilities": ["task_creation", "task_assignment", "task_monitoring"]
  }"#;

#[tokio::test]
async fn the_guides_worker_calls_work_verbatim() {
    let host = Host::start();
    let client = Client::new();

    let data = client
        .post_json(&host.url("/workers"), SEED_WORKER)
        .await
        .expect_ok(201);
    assert_eq!(data["id"], "TODO_WORKER_001");
    assert_eq!(data["name"], "TODO 관리 워커");
    assert_eq!(data["type"], "TODO");
    assert_eq!(data["status"], "idle");
    assert_eq!(data["team"], "default");
    assert_eq!(data["concurrency"], 1);

    let list = client.get(&host.url("/workers")).await.expect_ok(200);
    let workers = list.as_array().expect("a list");
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0]["id"], "TODO_WORKER_001");
    assert_eq!(
        workers[0]["capabilities"],
        json!(["task_creation", "task_assignment", "task_monitoring"])
    );

    let one = client
        .get(&host.url("/workers/TODO_WORKER_001"))
        .await
        .expect_ok(200);
    assert_eq!(one["name"], "TODO 관리 워커");
}

#[tokio::test]
async fn a_second_registration_of_the_same_id_conflicts_and_changes_nothing() {
    let host = Host::start();
    let client = Client::new();
    client
        .post_json(&host.url("/workers"), SEED_WORKER)
        .await
        .expect_ok(201);
    let again = SEED_WORKER.replace("TODO 관리 워커", "someone else");
    let code = client
        .post_json(&host.url("/workers"), &again)
        .await
        .expect_error(409);
    assert_eq!(code, "conflict");
    let one = client
        .get(&host.url("/workers/TODO_WORKER_001"))
        .await
        .expect_ok(200);
    assert_eq!(one["name"], "TODO 관리 워커");
}

#[tokio::test]
async fn bad_input_gets_the_right_status_in_the_envelope_and_writes_nothing() {
    let host = Host::start();
    let client = Client::new();
    let url = host.url("/workers");

    // Malformed JSON.
    client
        .post_json(&url, r#"{"id": "W1", "#)
        .await
        .expect_error(400);
    // Wrong content type, and none at all.
    let body = SEED_WORKER.as_bytes().to_vec();
    client
        .send("POST", &url, Some(("text/plain", body.clone())), &[])
        .await
        .expect_error(415);
    client
        .send("POST", &url, Some(("", body)), &[])
        .await
        .expect_error(415);
    // Wrong field types, missing fields, an unknown field.
    for body in [
        r#"{"id": 1, "name": "n", "type": "T", "capabilities": ["a"]}"#,
        r#"{"id": "W1", "name": "n", "type": "T", "capabilities": "task_creation"}"#,
        r#"{"id": "W1", "name": "n", "capabilities": ["a"]}"#,
        r#"{"id": "W1", "name": "n", "type": "T", "capabilities": ["a"], "colour": "red"}"#,
        r#"[]"#,
    ] {
        client.post_json(&url, body).await.expect_error(422);
    }
    // Values that are well-typed but not allowed.
    for body in [
        r#"{"id": "", "name": "n", "type": "T", "capabilities": ["a"]}"#,
        r#"{"id": "has space", "name": "n", "type": "T", "capabilities": ["a"]}"#,
        r#"{"id": "W1", "name": "n", "type": "T", "capabilities": []}"#,
        r#"{"id": "W1", "name": "n", "type": "T", "capabilities": ["a"], "concurrency": 0}"#,
    ] {
        let code = client.post_json(&url, body).await.expect_error(422);
        assert_eq!(code, "invalid_request");
    }
    // A body over 1 MiB.
    let huge = format!(
        r#"{{"id": "W1", "name": "{}", "type": "T", "capabilities": ["a"]}}"#,
        "x".repeat(1_100_000)
    );
    let code = client.post_json(&url, &huge).await.expect_error(413);
    assert_eq!(code, "payload_too_large");

    // Unknown id, unknown route, wrong method.
    client
        .get(&host.url("/workers/NOPE"))
        .await
        .expect_error(404);
    client
        .get(&host.url("/no-such-route"))
        .await
        .expect_error(404);
    client
        .get(&format!("{}/elsewhere", host.origin))
        .await
        .expect_error(404);
    client
        .send("DELETE", &url, None, &[])
        .await
        .expect_error(405);

    let list = client.get(&url).await.expect_ok(200);
    assert_eq!(
        list,
        json!([]),
        "nothing may be written by a rejected request"
    );
}

#[tokio::test]
async fn status_has_the_guides_shape_plus_storage_and_alerts() {
    let host = Host::start();
    let client = Client::new();
    client
        .post_json(&host.url("/workers"), SEED_WORKER)
        .await
        .expect_ok(201);
    let data = client.get(&host.url("/status")).await.expect_ok(200);

    // Every key of the guide's example, and no other but `storage` (the
    // store's health, README "When the disk fills") and `alerts` (README
    // "How alerts are raised and escalate"), with the same types.
    let guide = json!({
        "storage": {"status": "ok", "since": null, "lastError": null},
        "alerts": {"raised": 0, "open": 0, "firing": 0, "acknowledged": 0, "held": 0,
                   "silences": 0, "escalations": 0, "renotifications": 0},
        "timestamp": "2025-10-02T10:30:00.000Z",
        "version": "1.0.0",
        "components": {
            "workerAutomation": {
                "status": "running", "workers": 5, "activeTasks": 3,
                "performance": {"totalTasks": 150, "completedTasks": 147, "successRate": 98.0}
            },
            "actionPlanAutomation": {
                "status": "running", "totalPlans": 25, "activePlans": 2,
                "performance": {"successRate": 96.0}
            },
            "autoRecoverySystem": {
                "status": "running", "totalIncidents": 8, "activeIncidents": 0,
                "performance": {"autoRecovered": 7, "successRate": 87.5}
            }
        }
    });
    assert_same_shape(&guide, &data, "data");
    assert_eq!(data["components"]["workerAutomation"]["workers"], 1);
    let stamp = data["timestamp"].as_str().unwrap();
    assert!(stamp.ends_with('Z') && stamp.len() == "2025-10-02T10:30:00.000Z".len());
}

fn assert_same_shape(expected: &serde_json::Value, actual: &serde_json::Value, at: &str) {
    use serde_json::Value::*;
    match (expected, actual) {
        (Object(want), Object(got)) => {
            let mut want_keys: Vec<_> = want.keys().collect();
            let mut got_keys: Vec<_> = got.keys().collect();
            want_keys.sort();
            got_keys.sort();
            assert_eq!(want_keys, got_keys, "keys of {at}");
            for (key, value) in want {
                assert_same_shape(value, &got[key], &format!("{at}.{key}"));
            }
        }
        (Number(want), Number(got)) => {
            assert_eq!(
                want.is_f64(),
                got.is_f64(),
                "{at}: {want} and {got} differ in kind"
            );
        }
        (String(_), String(_)) | (Null, Null) => {}
        _ => panic!("{at}: expected something like {expected}, got {actual}"),
    }
}

#[tokio::test]
async fn metrics_come_as_json_and_as_prometheus_text() {
    let host = Host::start();
    let client = Client::new();
    client
        .post_json(&host.url("/workers"), SEED_WORKER)
        .await
        .expect_ok(201);

    let data = client.get(&host.url("/metrics")).await.expect_ok(200);
    assert_eq!(data["workers"], 1);
    assert_eq!(
        data["tasks"],
        json!({"total": 0, "queued": 0, "running": 0, "succeeded": 0, "failed": 0})
    );
    assert!(data["plugins"]["loaded"].as_u64().unwrap() >= 1, "{data}");
    assert!(data["http"]["requests"].as_u64().unwrap() >= 1);

    for reply in [
        client.get(&host.url("/metrics?format=prometheus")).await,
        client
            .send(
                "GET",
                &host.url("/metrics"),
                None,
                &[("accept", "text/plain")],
            )
            .await,
    ] {
        assert_eq!(reply.status, 200);
        assert!(
            reply
                .content_type
                .starts_with("application/openmetrics-text")
        );
        assert!(
            reply.text.contains("\nautoagent_workers 1"),
            "{}",
            reply.text
        );
        assert!(reply.text.contains(
            "autoagent_http_requests_total{method=\"POST\",route=\"/api/autoagents-management/v1/workers\",status=\"201\"} 1"
        ), "{}", reply.text);
        assert!(reply.text.trim_end().ends_with("# EOF"));
    }
    let code = client
        .get(&host.url("/metrics?format=xml"))
        .await
        .expect_error(400);
    assert_eq!(code, "invalid_query");
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let host = Host::start();
    let client = Client::new();
    let doc = client.get(&host.url("/openapi.json")).await;
    assert_eq!(doc.status, 200);
    let paths = doc.json["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/workers", "post"),
        ("/workers", "get"),
        ("/workers/{id}", "get"),
        ("/status", "get"),
        ("/metrics", "get"),
        ("/plugins", "get"),
        ("/teams/{team}/plugins", "get"),
        ("/teams/{team}/plugins/{name}", "get"),
        ("/teams/{team}/plugins/{name}/invoke", "post"),
        ("/workers/{id}/restart", "post"),
        ("/tasks", "post"),
        ("/tasks", "get"),
        ("/tasks/{id}", "get"),
        ("/tasks/{id}/cancel", "post"),
        ("/workflows", "get"),
        ("/workflows", "post"),
        ("/workflows/{name}", "get"),
        ("/workflows/{name}/execute", "post"),
        ("/workflows/{name}/executions/{id}", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn log_lines_carry_level_and_ids() {
    let host = Host::start();
    let client = Client::new();
    client
        .post_json(&host.url("/workers"), SEED_WORKER)
        .await
        .expect_ok(201);
    // The log is written by a background thread: give it a moment.
    let line = eventually(10, "the registration's log line", || async {
        host.log()
            .lines()
            .find(|line| line.contains("TODO_WORKER_001"))
            .map(str::to_owned)
    })
    .await;
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.starts_with("20"), "starts with a timestamp: {line}");
}
