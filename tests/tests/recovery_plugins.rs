//! The bundled health checks (`http`, `tcp`, `service`) and recovery
//! strategies (`command`, `webhook`, `wait`) through the API of a real host,
//! against real servers, processes and scripts started here: what each
//! reports, that a check reaches its own target and nothing else (and only
//! during its call), and that a team runs a bundled strategy with its own
//! allow-list (`component = "core/..."`) while the bundled one alone may do
//! nothing.

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use autoagent_tests::{Client, Host, Reply, Value, guests, json};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};

/// Starts an HTTP server on a free loopback port: `/ok` (200 "all good"),
/// `/down` (503 "maintenance") and `/hook` (records each request's body,
/// answers 202), `/broken-hook` (500). Returns its port and the bodies
/// `/hook` received.
async fn server() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = received.clone();
    let app = Router::new()
        .route("/ok", get(|| async { "all good" }))
        .route(
            "/down",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "maintenance") }),
        )
        .route(
            "/hook",
            post(move |body: String| {
                let seen = seen.clone();
                async move {
                    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
                    seen.lock().unwrap().push(value);
                    (StatusCode::ACCEPTED, "queued")
                }
            }),
        )
        .route(
            "/broken-hook",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "restart failed") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, received)
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn check(client: &Client, host: &Host, plugin: &str, target: Value) -> Reply {
    client
        .post_json(
            &host.url(&format!("/teams/{plugin}/check")),
            &json!({ "target": target }).to_string(),
        )
        .await
}

async fn recover(client: &Client, host: &Host, plugin: &str, config: Value) -> Reply {
    let incident = json!({
        "id": "incident_42", "checkId": "web", "severity": "high", "stage": 0,
        "summary": "GET /ok answered 503", "target": {"url": "http://web/"}, "config": config,
    });
    client
        .post_json(
            &host.url(&format!("/teams/{plugin}/recover")),
            &json!({ "incident": incident }).to_string(),
        )
        .await
}

/// The report's status and message, after checking the envelope.
fn verdict(reply: &Reply) -> (String, String) {
    let data = reply.expect_ok(200);
    (
        data["status"].as_str().unwrap().to_owned(),
        data["message"].as_str().unwrap().to_owned(),
    )
}

/// A plugin error's code and message.
fn error(reply: &Reply, status: u16) -> (String, String) {
    let code = reply.expect_error(status);
    (
        code,
        reply.json["error"]["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn the_http_check_compares_status_and_body_of_a_real_server() {
    let host = Host::start();
    let client = Client::new();
    let (port, _) = server().await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");

    let reply = check(
        &client,
        &host,
        "core/plugins/http",
        json!({"url": url("/ok")}),
    )
    .await;
    let data = reply.expect_ok(200);
    assert_eq!(data["status"], "healthy", "{data}");
    assert_eq!(data["measurements"][0]["name"], "latency");
    assert_eq!(data["measurements"][0]["unit"], "ms");
    assert!(data["measurements"][0]["value"].as_f64().unwrap() >= 0.0);

    let (status, message) = verdict(
        &check(
            &client,
            &host,
            "core/plugins/http",
            json!({"url": url("/down")}),
        )
        .await,
    );
    assert_eq!(status, "unhealthy");
    assert!(
        message.contains("answered 503, expected a 2xx status"),
        "{message}"
    );
    let target = json!({"url": url("/down"), "expectStatus": 503});
    assert_eq!(
        verdict(&check(&client, &host, "core/plugins/http", target).await).0,
        "healthy"
    );
    let target = json!({"url": url("/ok"), "expectStatus": 204});
    let (status, message) = verdict(&check(&client, &host, "core/plugins/http", target).await);
    assert_eq!(status, "unhealthy");
    assert!(message.contains("answered 200, expected 204"), "{message}");

    let target = json!({"url": url("/ok"), "bodyContains": "all good"});
    assert_eq!(
        verdict(&check(&client, &host, "core/plugins/http", target).await).0,
        "healthy"
    );
    let target = json!({"url": url("/ok"), "bodyContains": "all bad"});
    let (status, message) = verdict(&check(&client, &host, "core/plugins/http", target).await);
    assert_eq!(status, "unhealthy");
    assert!(
        message.contains("does not contain \"all bad\""),
        "{message}"
    );

    // A name works as well as an address: the host resolves it for the call.
    let target = json!({"url": format!("http://localhost:{port}/ok")});
    assert_eq!(
        verdict(&check(&client, &host, "core/plugins/http", target).await).0,
        "healthy"
    );

    // Nothing listening: unhealthy with the reason, not a failed call.
    let refused = closed_port();
    let target = json!({"url": format!("http://127.0.0.1:{refused}/")});
    let (status, message) = verdict(&check(&client, &host, "core/plugins/http", target).await);
    assert_eq!(status, "unhealthy");
    assert!(message.contains("got no answer"), "{message}");

    // No target: nothing to probe.
    for target in [json!({}), Value::Null] {
        let (code, message) = error(
            &check(&client, &host, "core/plugins/http", target).await,
            422,
        );
        assert_eq!(code, "invalid_input");
        assert!(message.contains("no target: set `target.url`"), "{message}");
    }
}

#[tokio::test]
async fn the_tcp_check_connects_to_its_target() {
    let host = Host::start();
    let client = Client::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    for name in ["127.0.0.1", "localhost"] {
        let reply = check(
            &client,
            &host,
            "core/plugins/tcp",
            json!({"host": name, "port": port}),
        )
        .await;
        let data = reply.expect_ok(200);
        assert_eq!(data["status"], "healthy", "{name}: {data}");
        assert_eq!(data["measurements"][0]["name"], "latency");
    }
    let refused = closed_port();
    let target = json!({"host": "127.0.0.1", "port": refused});
    let (status, message) = verdict(&check(&client, &host, "core/plugins/tcp", target).await);
    assert_eq!(status, "unhealthy");
    assert!(
        message.starts_with(&format!("cannot connect to 127.0.0.1:{refused}")),
        "{message}"
    );

    let (code, message) = error(
        &check(&client, &host, "core/plugins/tcp", json!({})).await,
        422,
    );
    assert_eq!(code, "invalid_input");
    assert!(
        message.contains("no target: set `target.host` and `target.port`"),
        "{message}"
    );
    drop(listener);
}

#[tokio::test]
async fn a_check_reaches_only_its_own_target_and_only_during_its_call() {
    let scratch = tempfile::tempdir().unwrap();
    let host = Host::start_with(scratch.path().join("data"), scratch.path().join("logs"));
    let client = Client::new();
    let checker = std::fs::read(guests::GUEST_CHECKER).unwrap();
    let manifest = |name: &str, reach: bool| {
        format!(
            "name = \"{name}\"\nversion = \"0.1.0\"\nkind = \"health-check\"\nteam = \"probes\"\n\
             [permissions]\nreach-target = {reach}\n[limits]\ntimeout-ms = 5000\n"
        )
    };
    for (name, reach) in [("reaching", true), ("plain", false)] {
        client
            .put_plugin(
                &host.url(&format!("/teams/probes/plugins/{name}")),
                &manifest(name, reach),
                checker.clone(),
            )
            .await
            .expect_ok(201);
    }
    let (a, _) = server().await;
    let (b, _) = server().await;
    let ok = |port: u16| format!("http://127.0.0.1:{port}/ok");

    // Its target is reachable, over HTTP and TCP...
    let target = json!({"url": ok(b), "fetch": ok(b)});
    let (status, message) =
        verdict(&check(&client, &host, "probes/plugins/reaching", target).await);
    assert_eq!(
        (status.as_str(), message.as_str()),
        ("healthy", "fetched 200")
    );
    let target = json!({"host": "127.0.0.1", "port": b, "connect": format!("127.0.0.1:{b}")});
    let (status, message) =
        verdict(&check(&client, &host, "probes/plugins/reaching", target).await);
    assert_eq!(
        (status.as_str(), message.as_str()),
        ("healthy", "connected")
    );

    // ...and in the next call, whose target is another server, it is not:
    // the grant was for that call only.
    let target = json!({"url": ok(a), "fetch": ok(b)});
    let (status, message) =
        verdict(&check(&client, &host, "probes/plugins/reaching", target).await);
    assert_eq!(status, "unhealthy");
    assert!(message.contains("denied"), "{message}");
    let target = json!({"host": "127.0.0.1", "port": a, "connect": format!("127.0.0.1:{b}")});
    let (status, message) =
        verdict(&check(&client, &host, "probes/plugins/reaching", target).await);
    assert_eq!(status, "unhealthy");
    assert!(message.contains("PermissionDenied"), "{message}");
    // The same host on another port is another address.
    let target = json!({"url": format!("http://127.0.0.1:{a}/"), "fetch": ok(b)});
    let (status, _) = verdict(&check(&client, &host, "probes/plugins/reaching", target).await);
    assert_eq!(status, "unhealthy");

    // Without the grant, not even its target.
    let target = json!({"url": ok(b), "fetch": ok(b)});
    let (status, message) = verdict(&check(&client, &host, "probes/plugins/plain", target).await);
    assert_eq!(status, "unhealthy");
    assert!(message.contains("denied"), "{message}");
    let target = json!({"host": "127.0.0.1", "port": b, "connect": format!("127.0.0.1:{b}")});
    let (status, _) = verdict(&check(&client, &host, "probes/plugins/plain", target).await);
    assert_eq!(status, "unhealthy");

    host.log_containing(&[
        "plugin denied HTTP request",
        "plugin denied socket: not its target",
    ])
    .await;

    // The grant is for health checks only.
    let strategy = manifest("fixer", true).replace("health-check", "recovery-strategy");
    let fixer = std::fs::read(guests::GUEST_FIXER).unwrap();
    let (code, message) = error(
        &client
            .put_plugin(&host.url("/teams/probes/plugins/fixer"), &strategy, fixer)
            .await,
        422,
    );
    assert_eq!(code, "invalid_manifest");
    assert!(message.contains("permissions.reach-target"), "{message}");
}

#[tokio::test]
async fn the_service_check_finds_a_process_by_its_exact_name() {
    let host = Host::start();
    let client = Client::new();
    // A copy of sleep under a name no other process has.
    let scratch = tempfile::tempdir().unwrap();
    let name = format!("aasvc{}", std::process::id() % 100_000);
    let program = scratch.path().join(&name);
    std::fs::copy("/bin/sleep", &program).unwrap();
    let mut running = std::process::Command::new(&program)
        .arg("30")
        .spawn()
        .unwrap();

    let reply = check(
        &client,
        &host,
        "core/plugins/service",
        json!({"name": name}),
    )
    .await;
    let data = reply.expect_ok(200);
    assert_eq!(data["status"], "healthy", "{data}");
    assert_eq!(data["measurements"][0]["value"], 1.0, "{data}");

    running.kill().unwrap();
    running.wait().unwrap();
    let (status, message) = verdict(
        &check(
            &client,
            &host,
            "core/plugins/service",
            json!({"name": name}),
        )
        .await,
    );
    assert_eq!(status, "unhealthy");
    assert_eq!(message, format!("no process named {name} is running"));

    let (code, message) = error(
        &check(&client, &host, "core/plugins/service", json!({})).await,
        422,
    );
    assert_eq!(code, "invalid_input");
    assert!(
        message.contains("no target: set `target.name`"),
        "{message}"
    );
    let (code, _) = error(
        &check(
            &client,
            &host,
            "core/plugins/service",
            json!({"name": "a;b"}),
        )
        .await,
        422,
    );
    assert_eq!(code, "invalid_input");
}

/// Writes an executable shell script.
fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn a_team_runs_core_command_with_its_own_allow_list() {
    let scratch = tempfile::tempdir().unwrap();
    let (ok, fails) = (
        scratch.path().join("ok.sh"),
        scratch.path().join("fails.sh"),
    );
    script(&ok, "echo stopping\necho restarted web");
    script(&fails, "echo 'cannot restart web' >&2\nexit 1");
    let data = scratch.path().join("data");
    let folder = data.join("plugins/ops/restart-web");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("plugin.toml"),
        format!(
            "name = \"restart-web\"\nversion = \"1.0.0\"\nkind = \"recovery-strategy\"\nteam = \"ops\"\n\
             component = \"core/command\"\n\
             [[permissions.commands]]\nprogram = {ok:?}\nargs = []\n\
             [[permissions.commands]]\nprogram = {fails:?}\nargs = []\n"
        ),
    )
    .unwrap();
    // A component of the wrong kind does not load.
    let wrong = data.join("plugins/ops/wrong-kind");
    std::fs::create_dir_all(&wrong).unwrap();
    std::fs::write(
        wrong.join("plugin.toml"),
        "name = \"wrong-kind\"\nversion = \"1.0.0\"\nkind = \"health-check\"\nteam = \"ops\"\n\
         component = \"core/command\"\n",
    )
    .unwrap();
    let host = Host::start_with(data, scratch.path().join("logs"));
    let client = Client::new();

    let info = client
        .get(&host.url("/teams/ops/plugins/restart-web"))
        .await
        .expect_ok(200);
    assert_eq!(info["state"], "loaded", "{info}");
    assert_eq!(info["component"], "core/command");
    let info = client
        .get(&host.url("/teams/ops/plugins/wrong-kind"))
        .await
        .expect_ok(200);
    assert_eq!(info["state"], "failed", "{info}");
    let why = info["lastError"].as_str().unwrap();
    assert!(
        why.contains("health-check") && why.contains("recovery-strategy"),
        "{why}"
    );

    let ok_path = ok.to_str().unwrap();
    let data = recover(
        &client,
        &host,
        "ops/plugins/restart-web",
        json!({"program": ok_path}),
    )
    .await
    .expect_ok(200);
    assert_eq!(data["outcome"], "recovered", "{data}");
    assert_eq!(
        data["notes"],
        format!("ran {ok_path}: exit status 0; last output: restarted web")
    );

    let fails_path = fails.to_str().unwrap();
    let data = recover(
        &client,
        &host,
        "ops/plugins/restart-web",
        json!({"program": fails_path}),
    )
    .await
    .expect_ok(200);
    assert_eq!(data["outcome"], "not_recovered", "{data}");
    assert_eq!(
        data["notes"],
        format!("{fails_path} exited with status 1: cannot restart web")
    );

    // Not on its allow-list: other programs, other arguments.
    for config in [
        json!({"program": "/bin/true"}),
        json!({"program": ok_path, "args": ["--now"]}),
    ] {
        let (code, _) = error(
            &recover(&client, &host, "ops/plugins/restart-web", config).await,
            502,
        );
        assert_eq!(code, "denied");
    }
    // core/command alone grants nothing.
    let (code, _) = error(
        &recover(
            &client,
            &host,
            "core/plugins/command",
            json!({"program": ok_path}),
        )
        .await,
        502,
    );
    assert_eq!(code, "denied");
    // A stage without a program.
    let (code, message) = error(
        &recover(&client, &host, "ops/plugins/restart-web", json!({})).await,
        422,
    );
    assert_eq!(code, "invalid_input");
    assert!(message.contains("no program"), "{message}");
}

#[tokio::test]
async fn a_team_uploads_core_webhook_with_its_own_hosts() {
    let host = Host::start();
    let client = Client::new();
    let (port, received) = server().await;
    let (elsewhere, _) = server().await;
    let manifest = format!(
        "name = \"page-ops\"\nversion = \"1.0.0\"\nkind = \"recovery-strategy\"\nteam = \"ops\"\n\
         component = \"core/webhook\"\n[permissions]\nhttp-hosts = [\"127.0.0.1:{port}\"]\n"
    );
    let info = client
        .put_plugin_manifest(&host.url("/teams/ops/plugins/page-ops"), &manifest)
        .await
        .expect_ok(201);
    assert_eq!(info["component"], "core/webhook");
    // A manifest naming no component needs one in the form.
    let (code, message) = error(
        &client
            .put_plugin_manifest(
                &host.url("/teams/ops/plugins/bare"),
                &manifest
                    .replace("page-ops", "bare")
                    .replace("component = \"core/webhook\"\n", ""),
            )
            .await,
        422,
    );
    assert_eq!(code, "manifest_mismatch");
    assert!(message.contains("no component"), "{message}");

    let hook = format!("http://127.0.0.1:{port}/hook");
    let data = recover(&client, &host, "ops/plugins/page-ops", json!({"url": hook}))
        .await
        .expect_ok(200);
    assert_eq!(data["outcome"], "recovered", "{data}");
    assert_eq!(data["notes"], format!("POST {hook} answered 202"));
    assert_eq!(
        received.lock().unwrap().as_slice(),
        [
            json!({"id": "incident_42", "checkId": "web", "severity": "high", "stage": 0,
                "summary": "GET /ok answered 503"})
        ]
    );
    let config = json!({"url": hook, "body": {"restart": "web"}});
    recover(&client, &host, "ops/plugins/page-ops", config)
        .await
        .expect_ok(200);
    assert_eq!(received.lock().unwrap()[1], json!({"restart": "web"}));

    let broken = format!("http://127.0.0.1:{port}/broken-hook");
    let data = recover(
        &client,
        &host,
        "ops/plugins/page-ops",
        json!({"url": broken}),
    )
    .await
    .expect_ok(200);
    assert_eq!(data["outcome"], "not_recovered", "{data}");
    assert_eq!(
        data["notes"],
        format!("POST {broken} answered 500: restart failed")
    );

    // Another host (or port) than the team's, and core/webhook alone: denied.
    let other = format!("http://127.0.0.1:{elsewhere}/hook");
    let (code, _) = error(
        &recover(
            &client,
            &host,
            "ops/plugins/page-ops",
            json!({"url": other}),
        )
        .await,
        502,
    );
    assert_eq!(code, "denied");
    let (code, _) = error(
        &recover(&client, &host, "core/plugins/webhook", json!({"url": hook})).await,
        502,
    );
    assert_eq!(code, "denied");
    assert_eq!(received.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn the_wait_strategy_leaves_the_waiting_to_the_host() {
    let host = Host::start();
    let client = Client::new();
    let data = recover(&client, &host, "core/plugins/wait", json!({}))
        .await
        .expect_ok(200);
    assert_eq!(
        data,
        json!({"outcome": "recovered", "notes": "waited; the host re-checks"})
    );
    // A check is not a strategy, and the other way round.
    let (code, _) = error(
        &check(&client, &host, "core/plugins/wait", json!({})).await,
        422,
    );
    assert_eq!(code, "wrong_kind");
}
