//! Automatic recovery against a real host: checks on short intervals,
//! incidents at the threshold, stages in order, escalation when they run
//! out or the budget is spent, suppression under a failing parent,
//! flapping, manual resolve, hostile probes, and `kill -9` mid-recovery.
//!
//! The probes here are the `checker` test guest (its target says what to
//! report, or to spin or trap) and the stages the `fixer` guest (the
//! check's target says what each stage answers), both of team `testing`.

use autoagent_tests::{Client, Host, Value, eventually, guests, json};

const RESOLUTION: &str = "서비스 재시작으로 문제 해결됨";

fn start() -> Host {
    Host::start_with_installed(&[
        ("checker", guests::GUEST_CHECKER),
        ("fixer", guests::GUEST_FIXER),
    ])
}

/// A check of team `testing` probed by `checker` every 100 ms.
fn check(id: &str, target: Value, threshold: u32, stages: &[&str]) -> Value {
    let recovery: Vec<Value> = stages
        .iter()
        .map(|strategy| json!({"strategy": strategy, "waitMs": 50}))
        .collect();
    json!({
        "id": id, "name": format!("check {id}"), "type": "checker", "team": "testing",
        "interval": 100, "timeout": 100, "threshold": threshold,
        "target": target, "recovery": recovery
    })
}

async fn register(client: &Client, host: &Host, body: &Value) -> Value {
    client
        .post_json(&host.url("/health-checks"), &body.to_string())
        .await
        .expect_ok(201)
}

async fn put(client: &Client, host: &Host, id: &str, body: &Value) -> Value {
    client
        .send(
            "PUT",
            &host.url(&format!("/health-checks/{id}")),
            Some(("application/json", body.to_string().into_bytes())),
            &[],
        )
        .await
        .expect_ok(200)
}

/// Waits until check `id` has an incident whose status is `wanted`.
async fn incident_of(client: &Client, host: &Host, id: &str, wanted: &str) -> Value {
    let url = host.url(&format!("/incidents?checkId={id}&status={wanted}"));
    eventually(30, &format!("a {wanted} incident of {id}"), || async {
        let page = client.get(&url).await.expect_ok(200);
        page["items"].as_array().unwrap().first().cloned()
    })
    .await
}

async fn incident(client: &Client, host: &Host, id: &str) -> Value {
    client
        .get(&host.url(&format!("/incidents/{id}")))
        .await
        .expect_ok(200)
}

fn events(incident: &Value) -> Vec<String> {
    incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut text = e["event"].as_str().unwrap().to_owned();
            if let Some(outcome) = e["outcome"].as_str() {
                text.push(':');
                text.push_str(outcome);
            }
            text
        })
        .collect()
}

#[tokio::test]
async fn the_guides_incident_calls_on_a_fresh_host() {
    let host = Host::start();
    let client = Client::new();
    let body = r#"{
    "id": "custom_service_check",
    "name": "커스텀 서비스 확인",
    "type": "service",
    "interval": 30000,
    "timeout": 10000,
    "threshold": 3
  }"#;
    let check = client
        .post_json(&host.url("/health-checks"), body)
        .await
        .expect_ok(201);
    assert_eq!(check["id"], "custom_service_check");
    assert_eq!(check["name"], "커스텀 서비스 확인");
    assert_eq!(check["severity"], "high");
    assert_eq!(check["target"], Value::Null);
    // Without a target there is nothing to probe, and it says so; it never
    // reports a healthy result it did not see.
    let result = client
        .post_json(&host.url("/health-checks/custom_service_check/run"), "")
        .await
        .expect_ok(200);
    assert_eq!(result["status"], "no_target", "{result}");
    let view = client
        .get(&host.url("/health-checks/custom_service_check"))
        .await
        .expect_ok(200);
    assert_eq!(view["state"], "no_target");

    for url in ["/incidents", "/incidents?status=active"] {
        let page = client.get(&host.url(url)).await.expect_ok(200);
        assert_eq!(page["items"], json!([]), "{url}");
    }
    for id in ["incident_1234567890", "INCIDENT_ID"] {
        let code = client
            .post_json(
                &host.url(&format!("/incidents/{id}/resolve")),
                &json!({"resolution": RESOLUTION}).to_string(),
            )
            .await
            .expect_error(404);
        assert_eq!(code, "not_found");
    }
    let status = client.get(&host.url("/status")).await.expect_ok(200);
    let recovery = &status["components"]["autoRecoverySystem"];
    assert_eq!(recovery["status"], "running");
    assert_eq!(recovery["totalIncidents"], 0);
}

#[tokio::test]
async fn failures_open_an_incident_whose_stages_run_in_order_then_escalate() {
    let host = start();
    let client = Client::new();
    register(
        &client,
        &host,
        &check(
            "web",
            json!({"status": "unhealthy", "do": "not_recovered"}),
            3,
            &["fixer", "fixer"],
        ),
    )
    .await;
    let opened = incident_of(&client, &host, "web", "escalated").await;
    let incident = incident(&client, &host, opened["id"].as_str().unwrap()).await;
    assert_eq!(
        incident["failures"].as_array().unwrap().len(),
        3,
        "{incident}"
    );
    assert_eq!(incident["severity"], "high");
    assert_eq!(incident["autoRecovered"], false);
    assert!(
        incident["detectionMs"].as_u64().unwrap() >= 150,
        "{incident}"
    );
    assert_eq!(
        events(&incident),
        [
            "check_failed:failed",
            "check_failed:failed",
            "check_failed:failed",
            "opened",
            "stage_started",
            "stage_finished:not_recovered",
            "check_failed:failed",
            "stage_started",
            "stage_finished:not_recovered",
            "check_failed:failed",
            "escalated",
        ],
        "{incident}"
    );
    let view = client
        .get(&host.url("/health-checks/web"))
        .await
        .expect_ok(200);
    assert_eq!(view["state"], "unhealthy");
    assert_eq!(view["openIncident"], incident["id"]);
    assert!(view["consecutiveFailures"].as_u64().unwrap() >= 3);
    let metrics = client.get(&host.url("/metrics")).await.expect_ok(200);
    assert_eq!(metrics["incidents"]["total"], 1, "{metrics}");
    assert_eq!(metrics["incidentDetection"]["count"], 1, "{metrics}");
    let text = client
        .get(&host.url("/metrics?format=prometheus"))
        .await
        .text;
    assert!(
        text.contains("autoagent_incident_detection_seconds_bucket"),
        "{text}"
    );
    let incident_field = format!("incident_id={}", incident["id"].as_str().unwrap());
    host.log_containing(&["incident opened", "check_id=web", &incident_field])
        .await;

    // Resolved by hand, with who and why; the check counts afresh.
    let id = incident["id"].as_str().unwrap();
    let resolved = client
        .post_json(
            &host.url(&format!("/incidents/{id}/resolve")),
            &json!({"resolution": RESOLUTION}).to_string(),
        )
        .await
        .expect_ok(200);
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["resolution"], RESOLUTION);
    assert_eq!(resolved["resolvedBy"], "local");
    assert!(resolved["resolvedAt"].is_string());
    let again = client
        .post_json(
            &host.url(&format!("/incidents/{id}/resolve")),
            &json!({"resolution": RESOLUTION}).to_string(),
        )
        .await
        .expect_error(409);
    assert_eq!(again, "already_resolved");
    // Still failing: a second incident opens after three more failures.
    let second = incident_of(&client, &host, "web", "escalated").await;
    assert_ne!(second["id"], incident["id"]);
    let status = client.get(&host.url("/status")).await.expect_ok(200);
    let recovery = &status["components"]["autoRecoverySystem"];
    assert_eq!(recovery["totalIncidents"], 2);
    assert_eq!(recovery["activeIncidents"], 1);
}

#[tokio::test]
async fn a_stage_that_asks_for_people_escalates_and_a_spent_budget_stops_repairs() {
    let host = start();
    let client = Client::new();
    register(
        &client,
        &host,
        &check(
            "asks",
            json!({"status": "unhealthy", "do": "escalate"}),
            1,
            &["fixer", "fixer"],
        ),
    )
    .await;
    let mut spent = check(
        "spent",
        json!({"status": "unhealthy", "do": "not_recovered"}),
        1,
        &["fixer", "fixer", "fixer"],
    );
    spent["budget"] = json!({"maxRuns": 1, "windowMs": 3_600_000});
    register(&client, &host, &spent).await;

    let asks = incident_of(&client, &host, "asks", "escalated").await;
    assert_eq!(
        events(&asks)[1..],
        [
            "opened",
            "stage_started",
            "stage_finished:escalate",
            "escalated"
        ],
        "{asks}"
    );
    let spent = incident_of(&client, &host, "spent", "escalated").await;
    let last = spent["timeline"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        last["notes"]
            .as_str()
            .unwrap()
            .contains("restart budget spent"),
        "{spent}"
    );
    assert_eq!(
        events(&spent)
            .iter()
            .filter(|e| *e == "stage_started")
            .count(),
        1,
        "{spent}"
    );
    let view = client
        .get(&host.url("/health-checks/spent"))
        .await
        .expect_ok(200);
    assert_eq!(view["budgetLeft"], 0);
}

#[tokio::test]
async fn a_child_of_a_failing_parent_is_suppressed_until_the_parent_recovers() {
    let host = start();
    let client = Client::new();
    register(
        &client,
        &host,
        &check("host", json!({"status": "unhealthy"}), 2, &[]),
    )
    .await;
    let parent = incident_of(&client, &host, "host", "escalated").await;
    let mut child = check(
        "app",
        json!({"status": "unhealthy", "do": "escalate"}),
        2,
        &["fixer"],
    );
    child["dependsOn"] = json!(["host"]);
    register(&client, &host, &child).await;
    let suppressed = incident_of(&client, &host, "app", "suppressed").await;
    assert_eq!(suppressed["parentIncident"], parent["id"]);
    assert!(!events(&suppressed).contains(&"stage_started".to_owned()));

    // The parent comes back: its incident closes on its own, and the
    // child's own recovery runs.
    put(
        &client,
        &host,
        "host",
        &check("host", json!({"status": "healthy"}), 2, &[]),
    )
    .await;
    let url = host.url(&format!("/incidents/{}", parent["id"].as_str().unwrap()));
    let closed = eventually(30, "the parent's incident to close", || async {
        let i = client.get(&url).await.expect_ok(200);
        (i["status"] == "resolved").then_some(i)
    })
    .await;
    assert_eq!(closed["resolvedBy"], "check");
    assert_eq!(closed["autoRecovered"], false);
    let child = incident_of(&client, &host, "app", "escalated").await;
    assert_eq!(child["id"], suppressed["id"]);
    let seen = events(&child);
    let unsuppressed = seen
        .iter()
        .position(|e| e == "unsuppressed")
        .expect("unsuppressed");
    let started = seen
        .iter()
        .position(|e| e == "stage_started")
        .expect("a stage ran");
    assert!(unsuppressed < started, "{child}");
}

#[tokio::test]
async fn a_check_that_flaps_stops_repairs_and_settles() {
    let host = start();
    let client = Client::new();
    // Long interval: the test runs the check itself, one result at a time.
    let body = |status: &str| {
        let mut body = check(
            "flappy",
            json!({"status": status, "do": "recover"}),
            3,
            &["fixer"],
        );
        body["interval"] = json!(86_400_000);
        body["initialDelay"] = json!(86_400_000);
        body
    };
    register(&client, &host, &body("healthy")).await;
    let run = || async {
        client
            .post_json(&host.url("/health-checks/flappy/run"), "")
            .await
            .expect_ok(200)
    };
    for n in 0..11 {
        let status = if n % 2 == 0 { "healthy" } else { "unhealthy" };
        put(&client, &host, "flappy", &body(status)).await;
        run().await;
    }
    let view = client
        .get(&host.url("/health-checks/flappy"))
        .await
        .expect_ok(200);
    assert_eq!(view["state"], "flapping", "{view}");
    let flapping = incident_of(&client, &host, "flappy", "active").await;
    assert_eq!(flapping["flapping"], true);
    assert_eq!(flapping["recovery"]["step"], "idle");
    assert!(
        !events(&flapping).contains(&"stage_started".to_owned()),
        "{flapping}"
    );

    // Steady passes settle it; settled and passing, the incident closes.
    put(&client, &host, "flappy", &body("healthy")).await;
    let mut runs = 0;
    loop {
        run().await;
        runs += 1;
        let i = incident(&client, &host, flapping["id"].as_str().unwrap()).await;
        if i["status"] == "resolved" {
            let seen = events(&i);
            assert!(seen.contains(&"settled".to_owned()), "{i}");
            assert!(!seen.contains(&"stage_started".to_owned()), "{i}");
            break;
        }
        assert!(runs < 21, "it never settled: {i}");
    }
}

#[tokio::test]
async fn recoveries_beyond_the_host_wide_bound_wait_their_turn() {
    let host = Host::start_with_installed_and_args(
        &[
            ("checker", guests::GUEST_CHECKER),
            ("fixer", guests::GUEST_FIXER),
        ],
        &["--max-concurrent-recoveries", "1"],
    );
    let client = Client::new();
    // Each stage spins until the fixer's 1 s limit.
    for id in ["first", "second"] {
        register(
            &client,
            &host,
            &check(
                id,
                json!({"status": "unhealthy", "do": "spin"}),
                1,
                &["fixer"],
            ),
        )
        .await;
    }
    // While one runs its stage, the other waits for the one slot; never
    // both at once.
    let url = host.url("/incidents?status=active");
    let mut saw_queued = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let page = client.get(&url).await.expect_ok(200);
        let steps: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["recovery"]["step"].as_str().unwrap().to_owned())
            .collect();
        let busy = steps
            .iter()
            .filter(|s| *s == "running" || *s == "rechecking")
            .count();
        assert!(busy <= 1, "{steps:?}");
        if busy == 1 && steps.iter().any(|s| s == "queued") {
            saw_queued = true;
        }
        if steps.is_empty() && saw_queued {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{steps:?} {saw_queued}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for id in ["first", "second"] {
        incident_of(&client, &host, id, "escalated").await;
    }
}

#[tokio::test]
async fn hostile_probes_fail_their_own_check_and_nothing_else() {
    let host = start();
    let client = Client::new();
    let mut spin = check("spins", json!({"do": "spin"}), 1, &[]);
    spin["interval"] = json!(300);
    spin["timeout"] = json!(200);
    register(&client, &host, &spin).await;
    register(
        &client,
        &host,
        &check("traps", json!({"do": "trap"}), 1, &[]),
    )
    .await;
    register(
        &client,
        &host,
        &check("fine", json!({"status": "healthy"}), 1, &[]),
    )
    .await;

    let spins = incident_of(&client, &host, "spins", "escalated").await;
    assert!(
        spins["summary"].as_str().unwrap().contains("timeout"),
        "{spins}"
    );
    let traps = incident_of(&client, &host, "traps", "escalated").await;
    assert!(
        traps["summary"].as_str().unwrap().contains("trap"),
        "{traps}"
    );
    let fine = client
        .get(&host.url("/health-checks/fine"))
        .await
        .expect_ok(200);
    assert_eq!(fine["state"], "healthy", "{fine}");
    assert_eq!(fine["openIncident"], Value::Null);
}

#[tokio::test]
async fn a_recovery_goes_on_from_its_next_stage_after_kill_9() {
    let mut host = start();
    let client = Client::new();
    // The first stage spins until the fixer's 1 s limit; the host dies
    // while it runs.
    let body = json!({
        "id": "svc", "name": "svc", "type": "checker", "team": "testing",
        "interval": 100, "timeout": 100, "threshold": 1,
        "target": {"status": "unhealthy", "do": "spin"},
        "recovery": [{"strategy": "fixer", "waitMs": 50}, {"strategy": "fixer", "waitMs": 50}]
    });
    register(&client, &host, &body).await;
    let url = host.url("/incidents?checkId=svc");
    let running = eventually(30, "stage 0 to run", || async {
        let page = client.get(&url).await.expect_ok(200);
        let first = page["items"].as_array().unwrap().first().cloned()?;
        (first["recovery"]["step"] == "running").then_some(first)
    })
    .await;
    assert_eq!(running["recovery"]["stage"], 0);
    host.kill9();
    host.restart();

    let view = client
        .get(&host.url("/health-checks/svc"))
        .await
        .expect_ok(200);
    assert_eq!(view["type"], "checker", "the check survived");
    let escalated = incident_of(&client, &host, "svc", "escalated").await;
    assert_eq!(escalated["id"], running["id"]);
    let seen = events(&escalated);
    let interrupted = seen
        .iter()
        .position(|e| e == "interrupted")
        .expect("interrupted");
    let starts: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, e)| *e == "stage_started")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(starts.len(), 2, "stage 0 is not run again: {escalated}");
    assert!(
        starts[0] < interrupted && interrupted < starts[1],
        "{escalated}"
    );
    let stage_of_second = &escalated["timeline"][starts[1]]["stage"];
    assert_eq!(stage_of_second, 1);
}

#[tokio::test]
async fn bad_checks_are_refused_with_the_field_named() {
    let host = start();
    let client = Client::new();
    let base = check("a", json!({"status": "healthy"}), 1, &[]);
    let cases = [
        (json!({"interval": 10}), "interval"),
        (json!({"timeout": 1000}), "timeout"),
        (json!({"type": "nosuch"}), "type"),
        (
            json!({"recovery": [{"strategy": "checker"}]}),
            "recovery[0].strategy",
        ),
        (json!({"dependsOn": ["ghost"]}), "dependsOn"),
        (json!({"severity": "apocalyptic"}), "severity"),
        (json!({"threshold": -1}), "threshold"),
    ];
    for (spoil, field) in cases {
        let mut body = base.clone();
        for (key, value) in spoil.as_object().unwrap() {
            body[key] = value.clone();
        }
        let reply = client
            .post_json(&host.url("/health-checks"), &body.to_string())
            .await;
        assert_eq!(reply.expect_error(422), "invalid_request", "{field}");
        assert!(reply.text.contains(field), "{field}: {}", reply.text);
    }
    // A team's checks together ask for at most 5,000 probes a second.
    let mut greedy = base.clone();
    greedy["id"] = json!("greedy");
    greedy["interval"] = json!(100);
    greedy["initialDelay"] = json!(86_400_000);
    // Registered 50 at a time: they share the store's commits.
    let base_url = host.url("");
    for chunk in 0..10 {
        let mut tasks = tokio::task::JoinSet::new();
        for n in chunk * 50..(chunk + 1) * 50 {
            let mut body = greedy.clone();
            body["id"] = json!(format!("greedy{n}"));
            let url = format!("{base_url}/health-checks");
            tasks.spawn(async move {
                Client::new()
                    .post_json(&url, &body.to_string())
                    .await
                    .expect_ok(201);
            });
        }
        tasks.join_all().await;
    }
    greedy["id"] = json!("one_too_many");
    let reply = client
        .post_json(&host.url("/health-checks"), &greedy.to_string())
        .await;
    assert_eq!(reply.expect_error(422), "invalid_request");
    assert!(reply.text.contains("probes a second"), "{}", reply.text);
    for chunk in 0..10 {
        let mut tasks = tokio::task::JoinSet::new();
        for n in chunk * 50..(chunk + 1) * 50 {
            let url = format!("{base_url}/health-checks/greedy{n}");
            tasks.spawn(async move { Client::new().delete(&url).await.expect_ok(200) });
        }
        tasks.join_all().await;
    }
    register(&client, &host, &base).await;
    let code = client
        .post_json(&host.url("/health-checks"), &base.to_string())
        .await
        .expect_error(409);
    assert_eq!(code, "check_exists");
    let mut b = check("b", json!({"status": "healthy"}), 1, &[]);
    b["dependsOn"] = json!(["a"]);
    register(&client, &host, &b).await;
    // a → b → a would be a cycle.
    let mut cycle = base.clone();
    cycle["dependsOn"] = json!(["b"]);
    let reply = client
        .send(
            "PUT",
            &host.url("/health-checks/a"),
            Some(("application/json", cycle.to_string().into_bytes())),
            &[],
        )
        .await;
    reply.expect_error(422);
    assert!(reply.text.contains("cycle"), "{}", reply.text);
    let code = client
        .delete(&host.url("/health-checks/a"))
        .await
        .expect_error(409);
    assert_eq!(code, "check_in_use");
    client
        .get(&host.url("/health-checks/nosuch"))
        .await
        .expect_error(404);
    client
        .delete(&host.url("/health-checks/b"))
        .await
        .expect_ok(200);
    client
        .delete(&host.url("/health-checks/a"))
        .await
        .expect_ok(200);
    let page = client.get(&host.url("/health-checks")).await.expect_ok(200);
    assert_eq!(page["items"], json!([]));
}

/// Writes an executable shell script.
fn script(path: &std::path::Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The Python interpreter itself (not a shim that needs the environment):
/// the host runs commands with an empty environment.
fn python() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Kills the service whose pid `start.sh` wrote.
fn stop_service(dir: &std::path::Path) {
    let pid = std::fs::read_to_string(dir.join("pid")).unwrap();
    let status = std::process::Command::new("kill")
        .arg(pid.trim())
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_stopped_service_is_restarted_by_an_allow_listed_command_and_the_incident_resolves() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(dir.join("health"), "ok").unwrap();
    // The service: Python's HTTP server over this folder, started in the
    // background by the script the recovery stage is allowed to run.
    let start = dir.join("start.sh");
    script(
        &start,
        &format!(
            "cd {dir:?}\n{python:?} -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1 &\necho $! > pid",
            python = python()
        ),
    );
    let data = dir.join("data");
    let folder = data.join("plugins/ops/restart-web");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("plugin.toml"),
        format!(
            "name = \"restart-web\"\nversion = \"1.0.0\"\nkind = \"recovery-strategy\"\nteam = \"ops\"\n\
             component = \"core/command\"\n\
             [[permissions.commands]]\nprogram = {start:?}\nargs = []\n"
        ),
    )
    .unwrap();
    assert!(
        std::process::Command::new(&start)
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !accepts(port) {
        assert!(
            std::time::Instant::now() < deadline,
            "the service never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let host = Host::start_with(data, dir.join("logs"));
    let client = Client::new();
    register(
        &client,
        &host,
        &json!({
            "id": "web", "name": "web front", "type": "http", "team": "ops",
            "interval": 200, "timeout": 200, "threshold": 3, "successThreshold": 2,
            "severity": "critical",
            "target": {"url": format!("http://127.0.0.1:{port}/health"), "expectStatus": 200, "bodyContains": "ok"},
            "recovery": [{"strategy": "restart-web", "config": {"program": start, "args": []}, "waitMs": 1500}]
        }),
    )
    .await;
    register(
        &client,
        &host,
        &json!({
            "id": "web_port", "name": "web port", "type": "tcp", "team": "ops",
            "interval": 200, "timeout": 200, "threshold": 3,
            "target": {"host": "127.0.0.1", "port": port}
        }),
    )
    .await;
    for id in ["web", "web_port"] {
        let url = host.url(&format!("/health-checks/{id}"));
        eventually(30, &format!("{id} to be healthy"), || async {
            let view = client.get(&url).await.expect_ok(200);
            (view["state"] == "healthy").then_some(())
        })
        .await;
    }

    stop_service(&dir);
    let repaired = incident_of(&client, &host, "web", "resolved").await;
    assert_eq!(repaired["autoRecovered"], true, "{repaired}");
    assert_eq!(repaired["recoveredByStage"], 0);
    assert_eq!(repaired["resolvedBy"], "recovery");
    assert_eq!(repaired["severity"], "critical");
    assert_eq!(
        repaired["failures"].as_array().unwrap().len(),
        3,
        "{repaired}"
    );
    assert_eq!(
        events(&repaired),
        [
            "check_failed:failed",
            "check_failed:failed",
            "check_failed:failed",
            "opened",
            "stage_started",
            "stage_finished:recovered",
            "check_passed:passed",
            "check_passed:passed",
            "resolved",
        ],
        "{repaired}"
    );
    assert!(accepts(port), "the stage started the service again");
    // The port check saw the same outage; with no stages of its own, its
    // incident escalated and closed once the service was back.
    let port_incident = incident_of(&client, &host, "web_port", "resolved").await;
    assert_eq!(port_incident["resolvedBy"], "check", "{port_incident}");
    assert_eq!(port_incident["autoRecovered"], false);

    let status = client.get(&host.url("/status")).await.expect_ok(200);
    let recovery = &status["components"]["autoRecoverySystem"];
    assert_eq!(recovery["totalIncidents"], 2, "{status}");
    assert_eq!(recovery["activeIncidents"], 0);
    assert_eq!(recovery["performance"]["autoRecovered"], 1);
    assert_eq!(recovery["performance"]["successRate"], 50.0);
    let metrics = client.get(&host.url("/metrics")).await.expect_ok(200);
    assert_eq!(metrics["incidentTimeToRecover"]["count"], 1, "{metrics}");
    stop_service(&dir);
}
