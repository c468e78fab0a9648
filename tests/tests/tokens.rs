//! API tokens and team isolation: a team's token acts for that team only;
//! the local operator of a loopback host acts as admin without one.

use std::process::Command;

use autoagent_tests::{Client, Host, Value, binary, echo_wasm, json, probe_manifest};

async fn create_token(client: &Client, host: &Host, body: Value, bearer: Option<&str>) -> Value {
    let auth = bearer.map(|secret| format!("Bearer {secret}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    client
        .send(
            "POST",
            &host.url("/tokens"),
            Some(("application/json", body.to_string().into_bytes())),
            &headers,
        )
        .await
        .expect_ok(201)
}

/// A request made with a token.
async fn as_token(
    client: &Client,
    method: &str,
    url: &str,
    secret: &str,
) -> autoagent_tests::Reply {
    let auth = format!("Bearer {secret}");
    client
        .send(method, url, None, &[("authorization", auth.as_str())])
        .await
}

#[tokio::test]
async fn a_team_token_reaches_its_own_plugins_and_no_others() {
    let mut host = Host::start();
    let client = Client::new();
    // Without a token, the loopback operator is admin.
    let ops = create_token(&client, &host, json!({"role": "team", "team": "ops"}), None).await;
    let web = create_token(&client, &host, json!({"role": "team", "team": "web"}), None).await;
    let admin = create_token(&client, &host, json!({"role": "admin"}), None).await;
    let secret = |token: &Value| token["secret"].as_str().unwrap().to_owned();
    let (ops, web, admin) = (secret(&ops), secret(&web), secret(&admin));

    // Each team uploads its own `probe` (the same component) with its token.
    for (team, secret) in [("ops", &ops), ("web", &web)] {
        let manifest =
            probe_manifest("1.0.0").replace("team = \"ops\"", &format!("team = \"{team}\""));
        let url = host.url(&format!("/teams/{team}/plugins/probe"));
        client
            .put_plugin_as(&url, &manifest, echo_wasm(), Some(secret))
            .await
            .expect_ok(201);
    }

    // web cannot list, read, call, replace or remove ops's plugins: to its
    // token they do not exist.
    let ops_probe = host.url("/teams/ops/plugins/probe");
    for (method, url) in [
        ("GET", host.url("/teams/ops/plugins")),
        ("GET", ops_probe.clone()),
        ("DELETE", ops_probe.clone()),
    ] {
        assert_eq!(
            as_token(&client, method, &url, &web)
                .await
                .expect_error(404),
            "not_found"
        );
    }
    let call = |capability: &str, input: Value| {
        json!({"capability": capability, "input": input}).to_string()
    };
    let invoke = |secret: &str, team: &str, body: String| {
        let auth = format!("Bearer {secret}");
        let url = host.url(&format!("/teams/{team}/plugins/probe/invoke"));
        let client = &client;
        async move {
            client
                .send(
                    "POST",
                    &url,
                    Some(("application/json", body.into_bytes())),
                    &[("authorization", &auth)],
                )
                .await
        }
    };
    let refused = invoke(&web, "ops", call("echo", json!({}))).await;
    assert_eq!(refused.expect_error(404), "not_found");
    let upload = client
        .put_plugin_as(
            &ops_probe,
            &probe_manifest("6.6.6"),
            echo_wasm(),
            Some(&web),
        )
        .await;
    assert_eq!(upload.expect_error(404), "not_found");

    // Key-value state is each plugin's own: web's probe does not see what
    // ops's probe wrote under the same key.
    invoke(
        &ops,
        "ops",
        call("kv_roundtrip", json!({"key": "k", "value": "ops secret"})),
    )
    .await
    .expect_ok(200);
    let theirs = invoke(&web, "web", call("kv_get", json!({"key": "k"})))
        .await
        .expect_ok(200);
    assert_eq!(theirs, Value::Null);
    let ours = invoke(&ops, "ops", call("kv_get", json!({"key": "k"})))
        .await
        .expect_ok(200);
    assert_eq!(ours, "ops secret");

    // A team sees its own plugins and the bundled ones; an admin sees all.
    let teams_seen = |reply: autoagent_tests::Reply| {
        let mut teams: Vec<String> = reply
            .expect_ok(200)
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p["team"].as_str().unwrap(),
                    p["name"].as_str().unwrap()
                )
            })
            .collect();
        teams.sort();
        teams
    };
    let plugins = host.url("/plugins");
    // Every team sees the bundled plugins, and its own.
    let (bundled, teams): (Vec<String>, Vec<String>) =
        teams_seen(as_token(&client, "GET", &plugins, &admin).await)
            .into_iter()
            .partition(|name| name.starts_with("core/"));
    assert!(
        bundled.iter().any(|n| n == "core/todo") && bundled.iter().any(|n| n == "core/system"),
        "{bundled:?}"
    );
    assert_eq!(teams, ["ops/probe", "web/probe"]);
    let (web_bundled, web_own): (Vec<String>, Vec<String>) =
        teams_seen(as_token(&client, "GET", &plugins, &web).await)
            .into_iter()
            .partition(|name| name.starts_with("core/"));
    assert_eq!(web_bundled, bundled);
    assert_eq!(web_own, ["web/probe"]);

    // Only admins manage tokens; unknown and malformed tokens are refused.
    let denied = client
        .send(
            "POST",
            &host.url("/tokens"),
            Some(("application/json", br#"{"role": "admin"}"#.to_vec())),
            &[("authorization", &format!("Bearer {ops}"))],
        )
        .await;
    assert_eq!(denied.expect_error(403), "forbidden");
    assert_eq!(
        as_token(&client, "GET", &plugins, "aat_nope")
            .await
            .expect_error(401),
        "unauthorized"
    );
    let basic = client
        .send("GET", &plugins, None, &[("authorization", "Basic eDp5")])
        .await;
    assert_eq!(basic.expect_error(401), "unauthorized");
    let bad_team = client
        .post_json(
            &host.url("/tokens"),
            r#"{"role": "team", "team": "Not A Team"}"#,
        )
        .await;
    assert_eq!(bad_team.expect_error(422), "invalid_request");

    // Tokens are durable, listed without secrets, and revocable.
    host.kill9();
    host.restart();
    let plugins = host.url("/plugins");
    let listed = as_token(&client, "GET", &host.url("/tokens"), &admin)
        .await
        .expect_ok(200);
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    assert!(
        !listed.to_string().contains("aat_") && !listed.to_string().contains("secret"),
        "{listed}"
    );
    let web_id = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["team"] == "web")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    as_token(
        &client,
        "DELETE",
        &host.url(&format!("/tokens/{web_id}")),
        &admin,
    )
    .await
    .expect_ok(200);
    assert_eq!(
        as_token(&client, "GET", &plugins, &web)
            .await
            .expect_error(401),
        "unauthorized"
    );
    assert_eq!(
        as_token(&client, "GET", &host.url("/teams/ops/plugins"), &ops)
            .await
            .expect_ok(200)
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_non_loopback_host_needs_a_token_to_exist_first() {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let logs = scratch.path().join("logs");
    let serve = || {
        Command::new(binary())
            .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
            .arg(&data)
            .arg("--log-dir")
            .arg(&logs)
            .output()
            .unwrap()
    };
    let refused = serve();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("autoagent token create"));

    let created = Command::new(binary())
        .args(["token", "create", "--team", "ops", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let printed = String::from_utf8_lossy(&created.stdout);
    assert!(
        printed.lines().any(|line| line.starts_with("aat_")),
        "{printed}"
    );

    let neither = Command::new(binary())
        .args(["token", "create", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(neither.status.code(), Some(2), "{neither:?}");
}
