//! Roles on every route: each module's representative endpoints, tried by a
//! team's viewer, operator and admin, by another team's admin, and by the
//! local operator. Another team's objects answer 404; a role too small for
//! the action answers 403; a body naming another team answers 403.

use autoagent_tests::{Client, Host, Reply, Value, echo_wasm, json, probe_manifest};

/// Creates a token as the local operator and returns its secret.
async fn token(client: &Client, host: &Host, role: &str, team: &str) -> String {
    let body = json!({"role": role, "team": team}).to_string();
    let data = client
        .post_json(&host.url("/tokens"), &body)
        .await
        .expect_ok(201);
    data["secret"].as_str().unwrap().to_owned()
}

async fn call(
    client: &Client,
    method: &str,
    url: &str,
    secret: &str,
    body: Option<Value>,
) -> Reply {
    let auth = format!("Bearer {secret}");
    let body = body.map(|body| ("application/json", body.to_string().into_bytes()));
    client
        .send(method, url, body, &[("authorization", &auth)])
        .await
}

async fn upload(host: &Host, team: &str, secret: &str) -> u16 {
    let manifest = probe_manifest("1.0.0").replace("team = \"ops\"", &format!("team = \"{team}\""));
    let url = host.url(&format!("/teams/{team}/plugins/probe"));
    Client::new()
        .put_plugin_as(&url, &manifest, echo_wasm(), Some(secret))
        .await
        .status
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[key].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn each_role_does_what_it_may_for_its_own_team_only() {
    let host = Host::start();
    let client = Client::new();
    let viewer = token(&client, &host, "viewer", "ops").await;
    let operator = token(&client, &host, "operator", "ops").await;
    let admin = token(&client, &host, "admin", "ops").await;
    let web = token(&client, &host, "admin", "web").await;
    let url = |path: &str| host.url(path);

    // Workers: admins register them, for their own team only.
    let worker = |id: &str| json!({"id": id, "name": "w", "type": "T", "capabilities": ["echo"]});
    for secret in [&viewer, &operator] {
        let reply = call(
            &client,
            "POST",
            &url("/workers"),
            secret,
            Some(worker("OPS_W")),
        )
        .await;
        assert_eq!(reply.expect_error(403), "forbidden");
    }
    let registered = call(
        &client,
        "POST",
        &url("/workers"),
        &admin,
        Some(worker("OPS_W")),
    )
    .await
    .expect_ok(201);
    assert_eq!(registered["team"], "ops");
    let mut elsewhere = worker("OPS_X");
    elsewhere["team"] = json!("web");
    let reply = call(&client, "POST", &url("/workers"), &admin, Some(elsewhere)).await;
    assert_eq!(reply.expect_error(403), "forbidden");
    call(
        &client,
        "POST",
        &url("/workers"),
        &web,
        Some(worker("WEB_W")),
    )
    .await
    .expect_ok(201);
    let seen = call(&client, "GET", &url("/workers"), &viewer, None)
        .await
        .expect_ok(200);
    assert_eq!(ids(&seen, "id"), ["OPS_W"]);
    let reply = call(&client, "GET", &url("/workers/WEB_W"), &admin, None).await;
    assert_eq!(reply.expect_error(404), "not_found");
    let reply = call(
        &client,
        "POST",
        &url("/workers/OPS_W/restart"),
        &viewer,
        None,
    )
    .await;
    assert_eq!(reply.expect_error(403), "forbidden");
    call(
        &client,
        "POST",
        &url("/workers/OPS_W/restart"),
        &operator,
        None,
    )
    .await
    .expect_ok(200);
    let reply = call(
        &client,
        "POST",
        &url("/workers/WEB_W/restart"),
        &operator,
        None,
    )
    .await;
    assert_eq!(reply.expect_error(404), "not_found");

    // Tasks: operators submit and cancel; viewers read their team's.
    let task = json!({"type": "T", "capability": "echo"});
    let reply = call(&client, "POST", &url("/tasks"), &viewer, Some(task.clone())).await;
    assert_eq!(reply.expect_error(403), "forbidden");
    let ours = call(
        &client,
        "POST",
        &url("/tasks"),
        &operator,
        Some(task.clone()),
    )
    .await
    .expect_ok(201);
    assert_eq!(ours["team"], "ops");
    let theirs = call(&client, "POST", &url("/tasks"), &web, Some(task.clone()))
        .await
        .expect_ok(201);
    let page = call(&client, "GET", &url("/tasks"), &viewer, None)
        .await
        .expect_ok(200);
    assert_eq!(ids(&page["items"], "id"), [ours["id"].as_str().unwrap()]);
    assert_eq!(page["nextCursor"], serde_json::Value::Null);
    // Asking for another team's tasks by filter shows nothing either.
    let page = call(&client, "GET", &url("/tasks?team=web"), &viewer, None)
        .await
        .expect_ok(200);
    assert_eq!(page["items"], json!([]));
    let their_url = url(&format!("/tasks/{}", theirs["id"].as_str().unwrap()));
    let reply = call(&client, "GET", &their_url, &viewer, None).await;
    assert_eq!(reply.expect_error(404), "not_found");
    let cancel = url(&format!("/tasks/{}/cancel", ours["id"].as_str().unwrap()));
    let reply = call(&client, "POST", &cancel, &viewer, None).await;
    assert_eq!(reply.expect_error(403), "forbidden");
    call(&client, "POST", &cancel, &operator, None)
        .await
        .expect_ok(200);

    // Workflows: admins define them, operators run them.
    let workflow = json!({
        "name": "OPS_WF", "workerType": "T",
        "steps": [{"name": "one", "capability": "echo", "input": {}}]
    });
    let reply = call(
        &client,
        "POST",
        &url("/workflows"),
        &operator,
        Some(workflow.clone()),
    )
    .await;
    assert_eq!(reply.expect_error(403), "forbidden");
    let defined = call(&client, "POST", &url("/workflows"), &admin, Some(workflow))
        .await
        .expect_ok(201);
    assert_eq!(defined["team"], "ops");
    let listed = call(&client, "GET", &url("/workflows"), &web, None)
        .await
        .expect_ok(200);
    assert_eq!(ids(&listed, "name"), ["TODO_WORKFLOW"]);
    let reply = call(&client, "GET", &url("/workflows/OPS_WF"), &web, None).await;
    assert_eq!(reply.expect_error(404), "not_found");
    let execute = url("/workflows/OPS_WF/execute");
    let reply = call(
        &client,
        "POST",
        &execute,
        &viewer,
        Some(json!({"data": {}})),
    )
    .await;
    assert_eq!(reply.expect_error(403), "forbidden");
    call(
        &client,
        "POST",
        &execute,
        &operator,
        Some(json!({"data": {}})),
    )
    .await
    .expect_ok(201);
    // The built-in workflow belongs to team `default`.
    let reply = call(
        &client,
        "POST",
        &url("/workflows/TODO_WORKFLOW/execute"),
        &operator,
        Some(json!({"data": {}})),
    )
    .await;
    assert_eq!(reply.expect_error(403), "forbidden");

    // Plugins: admins upload, operators call, viewers read.
    assert_eq!(upload(&host, "ops", &operator).await, 403);
    assert_eq!(upload(&host, "ops", &admin).await, 201);
    let invoke = url("/teams/ops/plugins/probe/invoke");
    let echo = json!({"capability": "echo", "input": 7});
    let reply = call(&client, "POST", &invoke, &viewer, Some(echo.clone())).await;
    assert_eq!(reply.expect_error(403), "forbidden");
    let answer = call(&client, "POST", &invoke, &operator, Some(echo))
        .await
        .expect_ok(200);
    assert_eq!(answer, 7);
    call(
        &client,
        "GET",
        &url("/teams/ops/plugins/probe"),
        &viewer,
        None,
    )
    .await
    .expect_ok(200);
    let reply = call(&client, "GET", &url("/teams/ops/plugins/probe"), &web, None).await;
    assert_eq!(reply.expect_error(404), "not_found");

    // Tokens: a team admin manages its own team's.
    let made = call(
        &client,
        "POST",
        &url("/tokens"),
        &admin,
        Some(json!({"role": "viewer", "team": "ops"})),
    )
    .await
    .expect_ok(201);
    let reply = call(
        &client,
        "POST",
        &url("/tokens"),
        &admin,
        Some(json!({"role": "viewer", "team": "web"})),
    )
    .await;
    assert_eq!(reply.expect_error(403), "forbidden");
    let reply = call(
        &client,
        "POST",
        &url("/tokens"),
        &admin,
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(reply.expect_error(403), "forbidden");
    let reply = call(&client, "GET", &url("/tokens"), &viewer, None).await;
    assert_eq!(reply.expect_error(403), "forbidden");
    let listed = call(&client, "GET", &url("/tokens"), &admin, None)
        .await
        .expect_ok(200);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["team"] == "ops"),
        "{listed}"
    );
    assert_eq!(listed.as_array().unwrap().len(), 4);
    let web_tokens = client.get(&url("/tokens")).await.expect_ok(200);
    let web_id = web_tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["team"] == "web")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = call(
        &client,
        "DELETE",
        &url(&format!("/tokens/{web_id}")),
        &admin,
        None,
    )
    .await;
    assert_eq!(reply.expect_error(404), "not_found");
    let made_id = made["id"].as_str().unwrap();
    call(
        &client,
        "DELETE",
        &url(&format!("/tokens/{made_id}")),
        &admin,
        None,
    )
    .await
    .expect_ok(200);

    // Action plans: an operator creates, runs and retries its team's plans;
    // a viewer reads them; another team sees none of them; templates are
    // defined by admins.
    let plan_body = json!({"templateId": "LOG_CLEANUP_CHECK", "data": {"days": 400}});
    let reply = call(
        &client,
        "POST",
        &url("/action-plans"),
        &viewer,
        Some(plan_body.clone()),
    )
    .await;
    assert_eq!(reply.expect_error(403), "forbidden");
    let plan = call(
        &client,
        "POST",
        &url("/action-plans"),
        &operator,
        Some(plan_body.clone()),
    )
    .await
    .expect_ok(201);
    assert_eq!(plan["team"], "ops");
    let plan_url = url(&format!("/action-plans/{}", plan["id"].as_str().unwrap()));
    call(&client, "GET", &plan_url, &viewer, None)
        .await
        .expect_ok(200);
    let reply = call(
        &client,
        "POST",
        &format!("{plan_url}/execute"),
        &viewer,
        None,
    )
    .await;
    assert_eq!(reply.expect_error(403), "forbidden");
    let reply = call(&client, "GET", &plan_url, &web, None).await;
    assert_eq!(reply.expect_error(404), "not_found");
    let reply = call(&client, "POST", &format!("{plan_url}/execute"), &web, None).await;
    assert_eq!(reply.expect_error(404), "not_found");
    let theirs = call(&client, "GET", &url("/action-plans"), &web, None)
        .await
        .expect_ok(200);
    assert_eq!(theirs["items"], json!([]));
    call(
        &client,
        "POST",
        &format!("{plan_url}/execute"),
        &operator,
        None,
    )
    .await
    .expect_ok(200);
    let template = json!({
        "id": "OPS_ONLY", "name": "ops", "category": "ops",
        "actions": [{"name": "load", "capability": "cpu_load"}]
    });
    let reply = call(
        &client,
        "POST",
        &url("/action-plan-templates"),
        &operator,
        Some(template.clone()),
    )
    .await;
    assert_eq!(reply.expect_error(403), "forbidden");
    call(
        &client,
        "POST",
        &url("/action-plan-templates"),
        &admin,
        Some(template),
    )
    .await
    .expect_ok(201);
    let reply = call(
        &client,
        "GET",
        &url("/action-plan-templates/OPS_ONLY"),
        &web,
        None,
    )
    .await;
    assert_eq!(reply.expect_error(404), "not_found");
    let reply = call(
        &client,
        "POST",
        &url("/action-plans"),
        &web,
        Some(json!({"templateId": "OPS_ONLY"})),
    )
    .await;
    assert_eq!(
        reply.expect_error(404),
        "not_found",
        "another team's template"
    );

    // Health checks: admins register them; operators run them and resolve
    // incidents; viewers read; another team sees none of it.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let check = json!({
        "id": "ops_db", "name": "db", "type": "tcp", "interval": 200, "timeout": 200,
        "threshold": 1, "target": {"host": "127.0.0.1", "port": closed_port}
    });
    for secret in [&viewer, &operator] {
        let reply = call(
            &client,
            "POST",
            &url("/health-checks"),
            secret,
            Some(check.clone()),
        )
        .await;
        assert_eq!(reply.expect_error(403), "forbidden");
    }
    let made = call(&client, "POST", &url("/health-checks"), &admin, Some(check))
        .await
        .expect_ok(201);
    assert_eq!(made["team"], "ops");
    let check_url = url("/health-checks/ops_db");
    call(&client, "GET", &check_url, &viewer, None)
        .await
        .expect_ok(200);
    let reply = call(&client, "GET", &check_url, &web, None).await;
    assert_eq!(reply.expect_error(404), "not_found");
    let theirs = call(&client, "GET", &url("/health-checks"), &web, None)
        .await
        .expect_ok(200);
    assert_eq!(theirs["items"], json!([]));
    let reply = call(&client, "POST", &format!("{check_url}/run"), &viewer, None).await;
    assert_eq!(reply.expect_error(403), "forbidden");
    let incident_id = autoagent_tests::eventually(30, "the check's incident", || async {
        let view = call(&client, "GET", &check_url, &operator, None)
            .await
            .expect_ok(200);
        view["openIncident"].as_str().map(str::to_owned)
    })
    .await;
    let incident_url = url(&format!("/incidents/{incident_id}"));
    call(&client, "GET", &incident_url, &viewer, None)
        .await
        .expect_ok(200);
    let reply = call(&client, "GET", &incident_url, &web, None).await;
    assert_eq!(reply.expect_error(404), "not_found");
    let theirs = call(&client, "GET", &url("/incidents"), &web, None)
        .await
        .expect_ok(200);
    assert_eq!(theirs["items"], json!([]));
    let resolution = json!({"resolution": "port opened by hand"});
    let resolve_url = format!("{incident_url}/resolve");
    for (secret, status) in [(&viewer, 403), (&web, 404)] {
        let reply = call(
            &client,
            "POST",
            &resolve_url,
            secret,
            Some(resolution.clone()),
        )
        .await;
        reply.expect_error(status);
    }
    let resolved = call(&client, "POST", &resolve_url, &operator, Some(resolution))
        .await
        .expect_ok(200);
    assert!(
        resolved["resolvedBy"]
            .as_str()
            .unwrap()
            .starts_with("token:"),
        "{resolved}"
    );
    let reply = call(&client, "DELETE", &check_url, &operator, None).await;
    assert_eq!(reply.expect_error(403), "forbidden");
    call(&client, "DELETE", &check_url, &admin, None)
        .await
        .expect_ok(200);

    // Every write names its token, team and role; no secret reaches the log.
    let log = host
        .log_containing(&[
            "write request",
            "team=ops role=operator",
            "team=ops role=viewer",
        ])
        .await;
    for secret in [&viewer, &operator, &admin, &web] {
        assert!(!log.contains(secret.as_str()), "a secret reached the log");
    }
}

#[tokio::test]
async fn a_token_past_its_rate_limit_gets_429_in_the_envelope() {
    let host = Host::start_with_args(&["--token-rate-limit", "5"]);
    let client = Client::new();
    let secret = token(&client, &host, "viewer", "ops").await;
    // A burst of twice the rate passes at once; the bucket starts full.
    for _ in 0..10 {
        call(&client, "GET", &host.url("/workers"), &secret, None)
            .await
            .expect_ok(200);
    }
    let mut limited = None;
    for _ in 0..50 {
        let reply = call(&client, "GET", &host.url("/workers"), &secret, None).await;
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
    }
    let reply = limited.expect("no request was limited");
    assert_eq!(reply.expect_error(429), "rate_limited");
    // The local operator, without a token, is not limited.
    for _ in 0..20 {
        client.get(&host.url("/workers")).await.expect_ok(200);
    }
}
