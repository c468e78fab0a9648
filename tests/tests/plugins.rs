//! Plugins through the API of a real host: the bundled `todo` plugin, and
//! hostile plugins that must fail alone while good ones keep answering.

use autoagent_tests::{Client, Host, guests, install_guest as install, json};

#[tokio::test]
async fn the_bundled_todo_plugin_answers_through_the_api() {
    let host = Host::start();
    let client = Client::new();

    let plugins = client.get(&host.url("/plugins")).await.expect_ok(200);
    let todo = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["team"] == "core" && p["name"] == "todo")
        .expect("core/todo is bundled");
    assert_eq!(todo["state"], "loaded");
    assert_eq!(todo["kind"], "capability");
    let names: Vec<_> = todo["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["task_creation", "task_assignment", "task_monitoring"]
    );

    let invoke = host.url("/teams/core/plugins/todo/invoke");
    let created = client
        .post_json(
            &invoke,
            r#"{"capability": "task_creation", "input": {"title": "새로운 기능 개발", "description": "사용자 인증 시스템 개선"}}"#,
        )
        .await
        .expect_ok(200);
    assert_eq!(created["title"], "새로운 기능 개발");
    assert_eq!(created["status"], "open");
    let todo_id = created["todoId"].as_str().expect("todo id").to_owned();

    let assigned = client
        .post_json(
            &invoke,
            &json!({"capability": "task_assignment", "input": {"todoId": todo_id, "assignee": "user_456"}})
                .to_string(),
        )
        .await
        .expect_ok(200);
    assert_eq!(assigned["assignee"], "user_456");
    assert_eq!(assigned["status"], "assigned");

    // State lives in the store between calls, not in the instance.
    let summary = client
        .post_json(&invoke, r#"{"capability": "task_monitoring", "input": {}}"#)
        .await
        .expect_ok(200);
    assert_eq!(summary["total"], 1, "{summary}");

    // A plugin's own error comes back in the envelope.
    let code = client
        .post_json(
            &invoke,
            r#"{"capability": "task_assignment", "input": {"todoId": "todo_999", "assignee": "x"}}"#,
        )
        .await
        .expect_error(422);
    assert_eq!(code, "invalid_input");
    // Unknown plugin, unknown capability, another team's plugin.
    client
        .post_json(
            &host.url("/teams/core/plugins/nope/invoke"),
            r#"{"capability": "x"}"#,
        )
        .await
        .expect_error(404);
    client
        .post_json(&invoke, r#"{"capability": "task_deletion"}"#)
        .await
        .expect_error(404);
    client
        .post_json(
            &host.url("/teams/other/plugins/todo/invoke"),
            r#"{"capability": "task_creation"}"#,
        )
        .await
        .expect_error(404);
}

#[tokio::test]
async fn a_workers_capabilities_resolve_to_the_bundled_plugin() {
    let host = Host::start();
    let client = Client::new();
    let worker = client
        .post_json(
            &host.url("/workers"),
            r#"{"id": "W1", "name": "w", "type": "TODO", "capabilities": ["task_creation", "teleport"]}"#,
        )
        .await
        .expect_ok(201);
    let resolved = &worker["resolvedCapabilities"];
    assert_eq!(resolved[0]["plugin"], "core/todo");
    assert_eq!(resolved[0]["version"], "0.1.0");
    assert_eq!(resolved[1]["plugin"], json!(null));
    assert!(
        resolved[1]["unresolvedReason"]
            .as_str()
            .unwrap()
            .contains("no loaded")
    );
}

#[tokio::test]
async fn hostile_plugins_fail_alone_while_good_ones_keep_answering() {
    let host = Host::start_with_guests();
    let client = Client::new();
    let hostile = host.url("/teams/testing/plugins/hostile/invoke");
    let echo = host.url("/teams/testing/plugins/echo/invoke");

    // Each misbehaviour, all at once, with good calls running beside them.
    let cases = [
        ("trap", 502, "trap"),
        ("spin", 504, "timeout"),
        ("grow_memory", 502, "memory_limit"),
        ("recurse", 502, "trap"),
    ];
    let mut handles = Vec::new();
    for (capability, status, code) in cases {
        let url = hostile.clone();
        handles.push(tokio::spawn(async move {
            let reply = Client::new()
                .post_json(
                    &url,
                    &json!({"capability": capability, "input": {}}).to_string(),
                )
                .await;
            (capability, status, code, reply)
        }));
    }
    for n in 0..20 {
        let reply = client
            .post_json(
                &echo,
                &json!({"capability": "echo", "input": {"n": n}}).to_string(),
            )
            .await
            .expect_ok(200);
        assert_eq!(reply, json!({"n": n}));
    }
    for handle in handles {
        let (capability, status, code, reply) = handle.await.unwrap();
        let got = reply.expect_error(status);
        assert_eq!(got, code, "{capability}: {}", reply.text);
    }

    // The hostile plugin itself recovers: its next good call succeeds.
    let ok = client
        .post_json(&hostile, r#"{"capability": "ok", "input": {}}"#)
        .await
        .expect_ok(200);
    assert_eq!(ok, json!({"ok": true}));

    // A plugin's failure is counted and logged; the host is still healthy.
    let info = client
        .get(&host.url("/teams/testing/plugins/hostile"))
        .await
        .expect_ok(200);
    assert_eq!(info["failures"], 4);
    client.get(&host.url("/status")).await.expect_ok(200);
    host.log_containing(&["plugin call failed"]).await;
}

#[tokio::test]
async fn a_broken_plugin_folder_is_listed_as_failed_and_the_host_runs() {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    install(&data, "echo", guests::GUEST_ECHO);
    // Not a component at all.
    let broken = data.join("plugins/testing/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("plugin.toml"),
        "name = \"broken\"\nversion = \"1.0.0\"\nkind = \"capability\"\nteam = \"testing\"\ncapabilities = [\"x\"]\n",
    )
    .unwrap();
    std::fs::write(broken.join("broken.wasm"), b"not wasm").unwrap();
    // A manifest error that names its field.
    let typo = data.join("plugins/testing/typo");
    std::fs::create_dir_all(&typo).unwrap();
    std::fs::write(
        typo.join("plugin.toml"),
        "name = \"typo\"\nversion = \"1.0.0\"\nkind = \"capability\"\nteam = \"testing\"\ncapabilities = [\"x\"]\n[limits]\nmemory-mb = 5\n",
    )
    .unwrap();
    std::fs::copy(guests::GUEST_ECHO, typo.join("typo.wasm")).unwrap();

    let host = Host::start_with(data, scratch.path().join("logs"));
    let client = Client::new();
    let list = client
        .get(&host.url("/teams/testing/plugins"))
        .await
        .expect_ok(200);
    let by_name = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {list}"))
            .clone()
    };
    assert_eq!(by_name("echo")["state"], "loaded");
    let broken = by_name("broken");
    assert_eq!(broken["state"], "failed");
    assert!(
        broken["lastError"]
            .as_str()
            .unwrap()
            .contains("not a valid WebAssembly component")
    );
    let typo = by_name("typo");
    assert_eq!(typo["state"], "failed");
    assert!(
        typo["lastError"].as_str().unwrap().contains("memory-mb"),
        "{typo}"
    );
    // A failed load is an ERROR line.
    host.log_containing(&["ERROR"]).await;
}
