//! Action plans against a real host: templates, the DAG executor, time
//! limits, retries with backoff, retrying only what failed, cancel, and
//! resuming after `kill -9`. Actions call the test guests (team `testing`):
//! echo's `tally` counts its calls per key in the plugin's own state, and
//! `gate` fails until a test opens it.

use autoagent_tests::{Client, Host, Value, eventually, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

async fn define(client: &Client, host: &Host, template: Value) {
    client
        .post_json(&host.url("/action-plan-templates"), &template.to_string())
        .await
        .expect_ok(201);
}

async fn create(client: &Client, host: &Host, template: &str) -> String {
    let plan = client
        .post_json(
            &host.url("/action-plans"),
            &json!({"templateId": template, "team": "testing"}).to_string(),
        )
        .await
        .expect_ok(201);
    assert_eq!(plan["status"], "pending");
    plan["id"].as_str().unwrap().to_owned()
}

async fn post(client: &Client, host: &Host, id: &str, what: &str) -> Value {
    client
        .post_json(&host.url(&format!("/action-plans/{id}/{what}")), "")
        .await
        .expect_ok(200)
}

/// Waits until the plan is no longer pending or running.
async fn ended(client: &Client, host: &Host, id: &str) -> Value {
    let url = host.url(&format!("/action-plans/{id}"));
    eventually(30, &format!("plan {id} to end"), || async {
        let plan = client.get(&url).await.expect_ok(200);
        let status = plan["status"].as_str().unwrap().to_owned();
        (status != "pending" && status != "running").then_some(plan)
    })
    .await
}

/// Waits until the plan's action `name` has the status `wanted`.
async fn action_is(client: &Client, host: &Host, id: &str, name: &str, wanted: &str) {
    let url = host.url(&format!("/action-plans/{id}"));
    eventually(
        30,
        &format!("action {name} of {id} to be {wanted}"),
        || async {
            let plan = client.get(&url).await.expect_ok(200);
            (action(&plan, name)["status"] == wanted).then_some(())
        },
    )
    .await;
}

fn action<'p>(plan: &'p Value, name: &str) -> &'p Value {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no action {name} in {plan}"))
}

fn statuses(plan: &Value) -> Vec<(String, String)> {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_owned(),
                a["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// How often echo's `tally` ran for `key`, as its own state says.
async fn tally(client: &Client, host: &Host, key: &str) -> u64 {
    let reply = client
        .post_json(
            &host.url("/teams/testing/plugins/echo/invoke"),
            &json!({"capability": "kv_get", "input": {"key": key}}).to_string(),
        )
        .await
        .expect_ok(200);
    reply.as_u64().unwrap_or(0)
}

async fn open_gate(client: &Client, host: &Host, key: &str) {
    client
        .post_json(
            &host.url("/teams/testing/plugins/echo/invoke"),
            &json!({"capability": "kv_roundtrip", "input": {"key": key, "value": true}})
                .to_string(),
        )
        .await
        .expect_ok(200);
}

fn step(name: &str, capability: &str, input: Value, depends_on: &[&str]) -> Value {
    json!({"name": name, "capability": capability, "input": input, "dependsOn": depends_on})
}

#[tokio::test]
async fn a_diamond_whose_middle_fails_retries_only_it_and_what_it_blocked() {
    let host = Host::start_with_guests();
    let client = Client::new();
    define(
        &client,
        &host,
        json!({
            "id": "DIAMOND", "name": "Diamond", "category": "test", "team": "testing",
            "actions": [
                step("top", "tally", json!({"key": "top"}), &[]),
                step("left", "tally", json!({"key": "left"}), &["top"]),
                step("right", "gate", json!({"key": "diamond"}), &["top"]),
                step("bottom", "tally", json!({"key": "bottom", "after": "$.actions.left.count"}), &["left", "right"]),
            ]
        }),
    )
    .await;
    let id = create(&client, &host, "DIAMOND").await;
    assert_eq!(
        post(&client, &host, &id, "execute").await["status"],
        "running"
    );
    let plan = ended(&client, &host, &id).await;
    assert_eq!(plan["status"], "failed", "{plan}");
    assert_eq!(
        statuses(&plan),
        [
            ("top".into(), "succeeded".into()),
            ("left".into(), "succeeded".into()),
            ("right".into(), "failed".into()),
            ("bottom".into(), "skipped".into()),
        ]
    );
    assert!(
        plan["error"]
            .as_str()
            .unwrap()
            .contains("gate \"diamond\" is closed"),
        "{plan}"
    );
    let right = action(&plan, "right");
    assert_eq!(right["attempts"][0]["errorKind"], "failed");
    assert!(
        right["attempts"][0]["plugin"]
            .as_str()
            .unwrap()
            .starts_with("testing/echo@"),
        "{right}"
    );

    open_gate(&client, &host, "diamond").await;
    assert_eq!(
        post(&client, &host, &id, "retry").await["status"],
        "running"
    );
    let plan = ended(&client, &host, &id).await;
    assert_eq!(plan["status"], "succeeded", "{plan}");
    // What succeeded the first time ran exactly once in all.
    assert_eq!(tally(&client, &host, "top").await, 1);
    assert_eq!(tally(&client, &host, "left").await, 1);
    assert_eq!(tally(&client, &host, "bottom").await, 1);
    assert_eq!(action(&plan, "bottom")["output"]["count"], 1);
    // Nothing is left to retry now.
    let reply = client
        .post_json(&host.url(&format!("/action-plans/{id}/retry")), "")
        .await;
    assert_eq!(reply.expect_error(409), "nothing_to_retry");
}

#[tokio::test]
async fn time_limits_retries_with_backoff_and_cancel() {
    let host = Host::start_with_guests();
    let client = Client::new();
    define(
        &client,
        &host,
        json!({
            "id": "SLOW", "name": "Slow", "category": "test", "team": "testing",
            "actions": [{"name": "slow", "capability": "sleepish", "input": {"ms": 900}, "timeoutMs": 200}]
        }),
    )
    .await;
    define(
        &client,
        &host,
        json!({
            "id": "RETRIED", "name": "Retried", "category": "test", "team": "testing",
            "actions": [{"name": "closed", "capability": "gate", "input": {"key": "never"}, "retries": 2, "backoffMs": 200}]
        }),
    )
    .await;
    define(
        &client,
        &host,
        json!({
            "id": "LONG", "name": "Long", "category": "test", "team": "testing",
            "actions": [
                {"name": "long", "capability": "sleepish", "input": {"ms": 900}},
                {"name": "after", "capability": "tally", "input": {"key": "after-cancel"}, "dependsOn": ["long"]}
            ]
        }),
    )
    .await;

    let slow = create(&client, &host, "SLOW").await;
    post(&client, &host, &slow, "execute").await;
    let plan = ended(&client, &host, &slow).await;
    assert_eq!(plan["status"], "failed");
    let action = action(&plan, "slow");
    assert_eq!(action["status"], "timed_out", "{action}");
    assert_eq!(action["attempts"][0]["errorKind"], "timeout");

    let retried = create(&client, &host, "RETRIED").await;
    post(&client, &host, &retried, "execute").await;
    let plan = ended(&client, &host, &retried).await;
    let attempts = self::action(&plan, "closed")["attempts"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(attempts.len(), 3, "{plan}");
    let at = |n: usize, field: &str| {
        OffsetDateTime::parse(attempts[n][field].as_str().unwrap(), &Rfc3339).unwrap()
    };
    // 200 ms, then 400 ms, between the attempts.
    assert!(at(1, "startedAt") - at(0, "finishedAt") >= time::Duration::milliseconds(200));
    assert!(at(2, "startedAt") - at(1, "finishedAt") >= time::Duration::milliseconds(400));

    let long = create(&client, &host, "LONG").await;
    post(&client, &host, &long, "execute").await;
    action_is(&client, &host, &long, "long", "running").await;
    let plan = post(&client, &host, &long, "cancel").await;
    assert_eq!(plan["status"], "cancelled");
    assert_eq!(
        statuses(&plan),
        [
            ("long".into(), "cancelled".into()),
            ("after".into(), "cancelled".into())
        ]
    );
    let reply = client
        .post_json(&host.url(&format!("/action-plans/{long}/cancel")), "")
        .await;
    assert_eq!(reply.expect_error(409), "already_ended");
    assert_eq!(tally(&client, &host, "after-cancel").await, 0);
}

#[tokio::test]
async fn bad_templates_and_data_are_refused_naming_what_is_wrong() {
    let host = Host::start_with_guests();
    let client = Client::new();
    let url = host.url("/action-plan-templates");
    let cycle = json!({
        "id": "LOOP", "name": "Loop", "category": "test",
        "actions": [
            step("a", "echo", json!({}), &["c"]),
            step("b", "echo", json!({}), &["a"]),
            step("c", "echo", json!({}), &["b"]),
        ]
    });
    let reply = client.post_json(&url, &cycle.to_string()).await;
    assert_eq!(reply.expect_error(422), "invalid_request");
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cycle: a → c → b → a"),
        "{}",
        reply.text
    );
    let unknown = json!({
        "id": "DANGLING", "name": "Dangling", "category": "test",
        "actions": [step("a", "echo", json!({}), &["nope"])]
    });
    client
        .post_json(&url, &unknown.to_string())
        .await
        .expect_error(422);

    // The guide's body, with a check level the template does not have.
    let reply = client
        .post_json(
            &host.url("/action-plans"),
            r#"{"templateId": "SYSTEM_CHECK", "data": {"serverId": "server_001", "checkLevel": "deep"}}"#,
        )
        .await;
    assert_eq!(reply.expect_error(422), "invalid_request");
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("data.checkLevel"),
        "{}",
        reply.text
    );
    let reply = client
        .post_json(&host.url("/action-plans"), r#"{"templateId": "NO_SUCH"}"#)
        .await;
    assert_eq!(reply.expect_error(404), "not_found");
}

#[tokio::test]
async fn the_guides_calls_on_a_fresh_host_answer_in_the_envelope() {
    let host = Host::start();
    let client = Client::new();
    for path in [
        "/action-plans/plan_1234567890/execute",
        "/action-plans/plan_1234567890/retry",
        "/action-plans/PLAN_ID/retry",
    ] {
        let reply = client.post_json(&host.url(path), "").await;
        assert_eq!(reply.expect_error(404), "not_found", "{path}");
    }
    let reply = client.get(&host.url("/action-plans/PLAN_ID")).await;
    assert_eq!(reply.expect_error(404), "not_found");
    for query in ["", "?status=running", "?category=security"] {
        let page = client
            .get(&host.url(&format!("/action-plans{query}")))
            .await
            .expect_ok(200);
        assert_eq!(page["items"], json!([]), "{query}");
    }
    let templates = client
        .get(&host.url("/action-plan-templates"))
        .await
        .expect_ok(200);
    let ids: Vec<&str> = templates
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "BACKUP_VERIFICATION",
            "LOG_CLEANUP_CHECK",
            "SECURITY_AUDIT",
            "SYSTEM_CHECK"
        ]
    );
    let plan = client
        .post_json(
            &host.url("/action-plans"),
            r#"{"templateId": "SYSTEM_CHECK", "data": {"serverId": "server_001", "checkLevel": "comprehensive"}}"#,
        )
        .await
        .expect_ok(201);
    assert!(plan["id"].as_str().unwrap().starts_with("plan_"));
    assert_eq!(plan["serverId"], "server_001");
    assert_eq!(plan["category"], "system");
    let page = client
        .get(&host.url("/action-plans?category=system&status=pending"))
        .await
        .expect_ok(200);
    assert_eq!(page["items"][0]["id"], plan["id"]);

    // Execute, as the guide does, with the id creation returned: the
    // bundled `system` plugin checks this machine.
    let id = plan["id"].as_str().unwrap();
    let running = client
        .post_json(&host.url(&format!("/action-plans/{id}/execute")), "")
        .await
        .expect_ok(200);
    assert_eq!(running["status"], "running");
    let done = ended(&client, &host, id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(done["checkedOn"], hostname.trim());
    assert_eq!(
        action(&done, "machine")["output"]["hostname"],
        hostname.trim()
    );
    assert_eq!(
        done["actions"].as_array().unwrap().len(),
        8,
        "comprehensive"
    );
    let summary = &action(&done, "summary")["output"];
    assert_eq!(summary["counts"]["missing"], 0, "{summary}");
    let reply = client
        .post_json(&host.url(&format!("/action-plans/{id}/retry")), "")
        .await;
    assert_eq!(reply.expect_error(409), "nothing_to_retry");
    let status = client.get(&host.url("/status")).await.expect_ok(200);
    let plans = &status["components"]["actionPlanAutomation"];
    assert_eq!(plans["status"], "running");
    assert_eq!(plans["totalPlans"], 1);
    assert_eq!(plans["performance"]["successRate"], 100.0);
    // Every action's wait from ready to started is in the histogram.
    let metrics = client.get(&host.url("/metrics")).await.expect_ok(200);
    assert_eq!(metrics["actionStartDelay"]["count"], 8, "{metrics}");
    let text = client
        .get(&host.url("/metrics?format=prometheus"))
        .await
        .text;
    assert!(
        text.contains("autoagent_plan_action_start_delay_seconds_count 8"),
        "{text}"
    );
    assert!(
        client
            .get(&host.url("/action-plans?category=security"))
            .await
            .expect_ok(200)["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_plan_killed_mid_run_resumes_and_never_reruns_a_non_idempotent_action_on_its_own() {
    let mut host = Host::start_with_guests();
    let client = Client::new();
    define(
        &client,
        &host,
        json!({
            "id": "RESUME", "name": "Resume", "category": "test", "team": "testing",
            "actions": [
                {"name": "first", "capability": "tally", "input": {"key": "resume-first"}},
                {"name": "again", "capability": "sleepish", "input": {"ms": 800}, "dependsOn": ["first"]},
                {"name": "once", "capability": "sleepish", "input": {"ms": 800}, "dependsOn": ["first"], "idempotent": false},
            ]
        }),
    )
    .await;
    let id = create(&client, &host, "RESUME").await;
    post(&client, &host, &id, "execute").await;
    // Killed while both long actions run (they start together).
    let url = host.url(&format!("/action-plans/{id}"));
    eventually(30, "both long actions to run", || async {
        let plan = client.get(&url).await.expect_ok(200);
        let running = |name| action(&plan, name)["status"] == "running";
        (running("once") && running("again")).then_some(())
    })
    .await;
    host.kill9();
    host.restart();
    let plan = ended(&client, &host, &id).await;
    assert_eq!(plan["status"], "failed", "{plan}");
    assert_eq!(action(&plan, "again")["status"], "succeeded");
    assert_eq!(
        action(&plan, "again")["attempts"][0]["status"],
        "interrupted"
    );
    assert_eq!(action(&plan, "once")["status"], "interrupted");
    assert_eq!(
        action(&plan, "once")["attempts"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        tally(&client, &host, "resume-first").await,
        1,
        "kept, not re-run"
    );
    // An operator's retry runs it.
    post(&client, &host, &id, "retry").await;
    let plan = ended(&client, &host, &id).await;
    assert_eq!(plan["status"], "succeeded", "{plan}");
    assert_eq!(tally(&client, &host, "resume-first").await, 1);
}

#[tokio::test]
async fn dry_runs_say_what_would_run_and_plans_wait_for_the_plans_they_depend_on() {
    let host = Host::start_with_guests();
    let client = Client::new();
    define(
        &client,
        &host,
        json!({
            "id": "GATED", "name": "Gated", "category": "test", "team": "testing",
            "actions": [
                step("top", "tally", json!({"key": "g-top"}), &[]),
                step("left", "tally", json!({"key": "g-left"}), &["top"]),
                step("right", "gate", json!({"key": "g-gate"}), &["top"]),
                step("bottom", "tally", json!({"key": "g-bottom"}), &["left", "right"]),
            ]
        }),
    )
    .await;
    define(
        &client,
        &host,
        json!({
            "id": "AFTER", "name": "After", "category": "test", "team": "testing",
            "actions": [step("count", "tally", json!({"key": "after"}), &[])]
        }),
    )
    .await;
    let first = create(&client, &host, "GATED").await;
    let dry = post(&client, &host, &first, "execute?dryRun=true").await;
    assert_eq!(
        dry,
        json!({"planId": first, "dryRun": true, "layers": [["top"], ["left", "right"], ["bottom"]]})
    );
    let plan = client
        .get(&host.url(&format!("/action-plans/{first}")))
        .await
        .expect_ok(200);
    assert_eq!(plan["status"], "pending", "a dry run runs nothing");
    assert_eq!(tally(&client, &host, "g-top").await, 0);

    let body = json!({"templateId": "AFTER", "team": "testing", "dependsOn": [first]});
    let second = client
        .post_json(&host.url("/action-plans"), &body.to_string())
        .await
        .expect_ok(201);
    let second = second["id"].as_str().unwrap().to_owned();
    post(&client, &host, &second, "execute").await;
    let url = host.url(&format!("/action-plans/{second}"));
    eventually(
        30,
        "the dependent plan to say what it waits for",
        || async {
            let plan = client.get(&url).await.expect_ok(200);
            plan["waitingReason"]
                .as_str()
                .is_some_and(|reason| reason.contains(&first))
                .then_some(())
        },
    )
    .await;

    post(&client, &host, &first, "execute").await;
    assert_eq!(ended(&client, &host, &first).await["status"], "failed");
    let plan = ended(&client, &host, &second).await;
    assert_eq!(plan["status"], "failed", "{plan}");
    assert!(
        plan["error"].as_str().unwrap().contains("ended failed"),
        "{plan}"
    );
    assert_eq!(tally(&client, &host, "after").await, 0);

    let dry = post(&client, &host, &first, "retry?dryRun=true").await;
    assert_eq!(dry["layers"], json!([["right"], ["bottom"]]));
    open_gate(&client, &host, "g-gate").await;
    post(&client, &host, &first, "retry").await;
    assert_eq!(ended(&client, &host, &first).await["status"], "succeeded");
    post(&client, &host, &second, "retry").await;
    assert_eq!(ended(&client, &host, &second).await["status"], "succeeded");
    assert_eq!(tally(&client, &host, "after").await, 1);
    assert_eq!(tally(&client, &host, "g-top").await, 1);

    let body = json!({"templateId": "AFTER", "team": "testing", "dependsOn": ["plan_0"]});
    let reply = client
        .post_json(&host.url("/action-plans"), &body.to_string())
        .await;
    assert_eq!(reply.expect_error(422), "invalid_request");
}
