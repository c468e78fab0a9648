//! Plugins that come and go while the host runs: uploads, removals, folder
//! changes, restarts, and swaps under a steady load of calls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autoagent_tests::{Client, Host, Value, echo_wasm, eventually, guests, json, probe_manifest};

/// Uploads the echo guest as a new `ops/probe` of `version`.
async fn upload_probe(client: &Client, host: &Host, version: &str) {
    client
        .put_plugin(
            &host.url("/teams/ops/plugins/probe"),
            &probe_manifest(version),
            echo_wasm(),
        )
        .await
        .expect_ok(201);
}

/// Which version answered a call of `ops/probe`'s `config` capability.
async fn version_answering(client: &Client, host: &Host) -> Result<String, String> {
    let reply = client
        .post_json(
            &host.url("/teams/ops/plugins/probe/invoke"),
            r#"{"capability": "config", "input": {"key": "version"}}"#,
        )
        .await;
    match reply.status {
        200 => Ok(reply.json["data"].as_str().unwrap_or_default().to_owned()),
        _ => Err(reply.text),
    }
}

#[tokio::test]
async fn an_upload_adds_replaces_and_deletes_a_plugin() {
    let host = Host::start();
    let client = Client::new();
    let url = host.url("/teams/ops/plugins/probe");

    let added = client
        .put_plugin(&url, &probe_manifest("1.0.0"), echo_wasm())
        .await
        .expect_ok(201);
    assert_eq!(added["version"], "1.0.0");
    assert_eq!(added["state"], "loaded");
    assert_eq!(added["componentSha256"].as_str().unwrap().len(), 64);
    assert_eq!(version_answering(&client, &host).await.unwrap(), "1.0.0");

    let replaced = client
        .put_plugin(&url, &probe_manifest("1.1.0"), echo_wasm())
        .await
        .expect_ok(200);
    assert_eq!(replaced["version"], "1.1.0");
    assert_eq!(version_answering(&client, &host).await.unwrap(), "1.1.0");
    let listed = client
        .get(&host.url("/teams/ops/plugins"))
        .await
        .expect_ok(200);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    host.log_containing(&["plugin loaded", "previous_version=1.0.0"])
        .await;

    let removed = client.delete(&url).await.expect_ok(200);
    assert_eq!(removed["version"], "1.1.0");
    assert_eq!(client.get(&url).await.expect_error(404), "not_found");
    let call = client
        .post_json(
            &host.url("/teams/ops/plugins/probe/invoke"),
            r#"{"capability": "echo", "input": {}}"#,
        )
        .await;
    assert_eq!(call.expect_error(404), "not_found");
    assert!(!host.data_dir.join("plugins/ops/probe").exists());
    assert_eq!(client.delete(&url).await.expect_error(404), "not_found");
    // Bundled plugins are part of the binary.
    let core = client.delete(&host.url("/teams/core/plugins/todo")).await;
    assert_eq!(core.expect_error(403), "forbidden");
}

#[tokio::test]
async fn a_broken_upload_leaves_the_serving_version_and_says_why() {
    let host = Host::start();
    let client = Client::new();
    let url = host.url("/teams/ops/plugins/probe");
    client
        .put_plugin(&url, &probe_manifest("1.0.0"), echo_wasm())
        .await
        .expect_ok(201);

    // Not a component.
    let reply = client
        .put_plugin(
            &url,
            &probe_manifest("2.0.0"),
            b"\0asm but not really".to_vec(),
        )
        .await;
    assert_eq!(reply.expect_error(422), "invalid_component");
    // A component of another kind than the manifest says.
    let health = probe_manifest("2.0.0")
        .replace("kind = \"capability\"", "kind = \"health-check\"")
        .replace(
            "capabilities = [\"echo\", \"config\", \"kv_roundtrip\", \"kv_get\", \"fetch\", \"run\"]",
            "",
        );
    let reply = client.put_plugin(&url, &health, echo_wasm()).await;
    assert_eq!(reply.expect_error(422), "wrong_world");
    // A manifest error names its field.
    let typo = probe_manifest("2.0.0").replace("max-concurrent-calls", "max-concurent-calls");
    let reply = client.put_plugin(&url, &typo, echo_wasm()).await;
    assert_eq!(reply.expect_error(422), "invalid_manifest");
    assert!(reply.text.contains("max-concurent-calls"), "{}", reply.text);
    // A capability the component does not have.
    let promise = probe_manifest("2.0.0").replace("\"echo\",", "\"echo\", \"fly\",");
    let reply = client.put_plugin(&url, &promise, echo_wasm()).await;
    assert_eq!(reply.expect_error(422), "manifest_mismatch");
    assert!(reply.text.contains("fly"), "{}", reply.text);
    // A manifest for another place than the URL.
    let elsewhere = probe_manifest("2.0.0").replace("team = \"ops\"", "team = \"web\"");
    let reply = client.put_plugin(&url, &elsewhere, echo_wasm()).await;
    assert_eq!(reply.expect_error(422), "manifest_mismatch");
    // The bundled team is reserved.
    let reply = client
        .put_plugin(
            &host.url("/teams/core/plugins/probe"),
            &probe_manifest("2.0.0").replace("team = \"ops\"", "team = \"core\""),
            echo_wasm(),
        )
        .await;
    assert_eq!(reply.expect_error(403), "forbidden");
    // Not a form, and a form without its component.
    let reply = client
        .send("PUT", &url, Some(("application/json", b"{}".to_vec())), &[])
        .await;
    assert_eq!(reply.expect_error(415), "unsupported_media_type");

    // Version 1 still serves, from its folder, and the last failure shows.
    assert_eq!(version_answering(&client, &host).await.unwrap(), "1.0.0");
    let info = client.get(&url).await.expect_ok(200);
    assert_eq!(
        (&info["version"], &info["state"]),
        (&json!("1.0.0"), &json!("loaded"))
    );
    assert!(
        info["lastError"].as_str().unwrap().contains("web/probe"),
        "{info}"
    );
    let on_disk =
        std::fs::read_to_string(host.data_dir.join("plugins/ops/probe/plugin.toml")).unwrap();
    assert!(on_disk.contains("version = \"1.0.0\""));
    host.log_containing(&[" WARN ", "plugin upload refused"])
        .await;
}

#[tokio::test]
async fn an_acknowledged_upload_survives_kill_9_and_loads_from_the_cache() {
    let mut host = Host::start();
    let client = Client::new();
    upload_probe(&client, &host, "3.1.4").await;
    host.kill9();
    host.restart();
    assert_eq!(version_answering(&client, &host).await.unwrap(), "3.1.4");
    // The log is written in the background, so the first run's line may
    // have died with it; the restart's line says where the code came from.
    let line = eventually(10, "the restart's load line", || async {
        host.log()
            .lines()
            .filter(|line| line.contains("plugin loaded") && line.contains("plugin=probe"))
            .find(|line| line.contains("previous_version=-") && line.contains("artifact=cached"))
            .map(str::to_owned)
    })
    .await;
    assert!(line.contains("version=3.1.4"), "{line}");
    let info = client
        .get(&host.url("/teams/ops/plugins/probe"))
        .await
        .expect_ok(200);
    let sha = info["componentSha256"].as_str().unwrap();
    let cached: Vec<String> = std::fs::read_dir(host.data_dir.join("cache/components"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(sha) && name.ends_with(".cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
}

#[tokio::test]
async fn a_changed_folder_is_loaded_and_a_removed_one_unloaded() {
    let host = Host::start();
    let client = Client::new();
    let dir = host.data_dir.join("plugins/ops/probe");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(guests::GUEST_ECHO, dir.join("probe.wasm")).unwrap();
    std::fs::write(dir.join("plugin.toml"), probe_manifest("1.0.0")).unwrap();
    let url = host.url("/teams/ops/plugins/probe");
    let version_listed = || async {
        let reply = client.get(&url).await;
        (reply.status == 200).then(|| reply.json["data"]["version"].as_str().unwrap().to_owned())
    };
    eventually(10, "the new folder to load", || async {
        version_listed().await.filter(|v| v == "1.0.0")
    })
    .await;

    std::fs::write(dir.join("plugin.toml"), probe_manifest("1.0.1")).unwrap();
    eventually(10, "the changed manifest to load", || async {
        version_listed().await.filter(|v| v == "1.0.1")
    })
    .await;
    assert_eq!(version_answering(&client, &host).await.unwrap(), "1.0.1");

    // A broken change keeps the serving version and records why.
    std::fs::write(dir.join("plugin.toml"), "name = ").unwrap();
    eventually(10, "the failure to be recorded", || async {
        let info = client.get(&url).await.json["data"].clone();
        info["lastError"].as_str().map(str::to_owned)
    })
    .await;
    assert_eq!(version_answering(&client, &host).await.unwrap(), "1.0.1");

    std::fs::remove_dir_all(&dir).unwrap();
    eventually(10, "the removed plugin to go", || async {
        (client.get(&url).await.status == 404).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_task_waiting_for_a_capability_runs_once_a_plugin_brings_it() {
    let host = Host::start();
    let client = Client::new();
    client
        .post_json(
            &host.url("/workers"),
            r#"{"id": "OPS_1", "name": "ops", "type": "OPS", "capabilities": ["echo"], "team": "ops"}"#,
        )
        .await
        .expect_ok(201);
    let task = client
        .post_json(
            &host.url("/tasks"),
            r#"{"type": "OPS", "capability": "echo", "data": {"n": 1}, "team": "ops"}"#,
        )
        .await
        .expect_ok(201);
    let task_url = host.url(&format!("/tasks/{}", task["id"].as_str().unwrap()));
    let waiting = client.get(&task_url).await.expect_ok(200);
    assert_eq!(waiting["status"], "queued", "{waiting}");
    // A worker none of whose capabilities resolves is unhealthy until a
    // plugin brings one.
    let worker_url = host.url("/workers/OPS_1");
    let worker = client.get(&worker_url).await.expect_ok(200);
    assert_eq!(worker["status"], "unhealthy", "{worker}");
    upload_probe(&client, &host, "1.0.0").await;
    let done = eventually(10, "the task to succeed", || async {
        let task = client.get(&task_url).await.json["data"].clone();
        (task["status"] == "succeeded").then_some(task)
    })
    .await;
    assert_eq!(done["workerId"], "OPS_1");
    let worker = client.get(&worker_url).await.expect_ok(200);
    assert_eq!(worker["status"], "idle", "{worker}");
}

/// One call made during the swaps.
struct Call {
    started: Instant,
    answer: Result<u32, String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_swaps_under_sixteen_busy_clients_fail_no_call() {
    const CLIENTS: usize = 16;
    const SWAPS: u32 = 20;
    let host = Arc::new(Host::start());
    let client = Arc::new(Client::new());
    let url = host.url("/teams/ops/plugins/probe");
    let version = |n: u32| format!("1.0.{n}");
    client
        .put_plugin(&url, &probe_manifest(&version(0)), echo_wasm())
        .await
        .expect_ok(201);

    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for _ in 0..CLIENTS {
        let (host, client, stop) = (host.clone(), client.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            let mut calls = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let answer = version_answering(&client, &host).await.and_then(|v| {
                    v.rsplit('.')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .ok_or(format!("unexpected version {v:?}"))
                });
                calls.push(Call { started, answer });
            }
            calls
        }));
    }

    // (when the swap was seen to be done, the version it brought)
    let swaps: Arc<Mutex<Vec<(Instant, u32)>>> = Arc::default();
    let folder = host.data_dir.join("plugins/ops/probe/plugin.toml");
    for n in 1..=SWAPS {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if n % 2 == 1 {
            client
                .put_plugin(&url, &probe_manifest(&version(n)), echo_wasm())
                .await
                .expect_ok(200);
        } else {
            std::fs::write(&folder, probe_manifest(&version(n))).unwrap();
            let wanted = version(n);
            eventually(10, "the file change to be swapped in", || async {
                let info = client.get(&url).await.json["data"].clone();
                (info["version"] == json!(wanted)).then_some(())
            })
            .await;
        }
        swaps.lock().unwrap().push((Instant::now(), n));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);

    let swaps = swaps.lock().unwrap().clone();
    let mut total = 0;
    let mut seen = std::collections::BTreeSet::new();
    for caller in callers {
        let calls = caller.await.unwrap();
        total += calls.len();
        let mut last = 0;
        for call in calls {
            let answered = call
                .answer
                .unwrap_or_else(|err| panic!("a call failed during the swaps: {err}"));
            // Versions only move forward for each client...
            assert!(
                answered >= last,
                "version went back from {last} to {answered}"
            );
            last = answered;
            // ...and a call started after a swap was done gets that version
            // or a newer one.
            let floor = swaps
                .iter()
                .filter(|(done, _)| *done <= call.started)
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(0);
            assert!(
                answered >= floor,
                "call after swap {floor} answered by {answered}"
            );
            seen.insert(answered);
        }
    }
    assert!(total > 200, "only {total} calls were made");
    assert!(
        seen.contains(&SWAPS),
        "the last version never answered: {seen:?}"
    );
    let info: Value = client.get(&url).await.expect_ok(200);
    assert_eq!(info["failures"], 0);
    assert_eq!(info["version"], json!(version(SWAPS)));
}

#[tokio::test]
async fn denied_requests_fail_in_the_plugin_and_are_logged() {
    let host = Host::start();
    let client = Client::new();
    upload_probe(&client, &host, "1.0.0").await;
    let invoke = host.url("/teams/ops/plugins/probe/invoke");
    let fetch = client
        .post_json(
            &invoke,
            &json!({"capability": "fetch", "input": {"url": host.origin.clone()}}).to_string(),
        )
        .await;
    fetch.expect_error(502);
    assert!(fetch.text.contains("denied"), "{}", fetch.text);
    let run = client
        .post_json(
            &invoke,
            r#"{"capability": "run", "input": {"program": "/bin/true"}}"#,
        )
        .await;
    run.expect_error(502);
    assert!(run.text.contains("denied"), "{}", run.text);
    let log = host
        .log_containing(&["plugin denied HTTP request", "plugin denied command"])
        .await;
    for line in log.lines().filter(|line| line.contains("plugin denied")) {
        assert!(
            line.contains("WARN") && line.contains("team=ops plugin=probe"),
            "{line}"
        );
    }
}

#[tokio::test]
async fn a_folder_in_the_reserved_core_team_never_touches_the_bundled_plugin() {
    let host = Host::start();
    let client = Client::new();
    let dir = host.data_dir.join("plugins/core/todo");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(guests::GUEST_ECHO, dir.join("todo.wasm")).unwrap();
    std::fs::write(
        dir.join("plugin.toml"),
        probe_manifest("9.9.9")
            .replace("name = \"probe\"", "name = \"todo\"")
            .replace("team = \"ops\"", "team = \"core\""),
    )
    .unwrap();
    let url = host.url("/teams/core/plugins/todo");
    let refused = eventually(10, "the folder to be refused", || async {
        let info = client.get(&url).await.json["data"].clone();
        info["lastError"].as_str().is_some().then_some(info)
    })
    .await;
    assert!(
        refused["lastError"].as_str().unwrap().contains("reserved"),
        "{refused}"
    );
    assert_eq!(
        refused["version"], "0.1.0",
        "the bundled version still serves"
    );

    std::fs::remove_dir_all(&dir).unwrap();
    // The removal is seen when the refused folder's error is forgotten.
    let info = eventually(10, "the folder's removal to be seen", || async {
        let info = client.get(&url).await.expect_ok(200);
        info["lastError"].is_null().then_some(info)
    })
    .await;
    assert_eq!(
        (&info["state"], &info["version"]),
        (&json!("loaded"), &json!("0.1.0"))
    );
    client
        .post_json(
            &host.url("/teams/core/plugins/todo/invoke"),
            r#"{"capability": "task_creation", "input": {"title": "still here"}}"#,
        )
        .await
        .expect_ok(200);
}
