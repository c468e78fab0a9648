//! The bundled `system` plugin reading the machine the tests run on, through
//! the API of a real host: every capability answers with a status, the
//! readings agree with the machine, `failOn` fails a call, and a path the
//! manifest does not grant is refused by the host.

use autoagent_tests::{Client, Host, Reply, Value, json};

/// Everything the plugin offers, in the order it describes them.
const CAPABILITIES: [&str; 13] = [
    "cpu_load",
    "memory_usage",
    "disk_usage",
    "listening_services",
    "network_reachability",
    "uptime",
    "accounts_audit",
    "world_writable",
    "log_usage",
    "old_logs",
    "backup_verification",
    "summarize",
    "machine",
];

async fn invoke(client: &Client, host: &Host, capability: &str, input: Value) -> Reply {
    client
        .post_json(
            &host.url("/teams/core/plugins/system/invoke"),
            &json!({ "capability": capability, "input": input }).to_string(),
        )
        .await
}

#[tokio::test]
async fn the_bundled_system_plugin_reads_this_machine_only_as_granted() {
    let host = Host::start();
    let client = Client::new();

    let plugins = client.get(&host.url("/plugins")).await.expect_ok(200);
    let system = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["team"] == "core" && p["name"] == "system")
        .expect("core/system is bundled");
    assert_eq!(system["state"], "loaded", "{system}");
    assert_eq!(system["kind"], "capability");
    let names: Vec<&str> = system["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, CAPABILITIES);

    // Every check answers on this machine with a status and a summary.
    let mut outputs = serde_json::Map::new();
    for capability in CAPABILITIES.iter().filter(|c| **c != "summarize") {
        let output = invoke(&client, &host, capability, json!({}))
            .await
            .expect_ok(200);
        assert!(
            ["ok", "warning", "critical"].contains(&output["status"].as_str().unwrap_or("")),
            "{capability}: {output}"
        );
        assert!(
            output["summary"]
                .as_str()
                .is_some_and(|s| !s.is_empty() && !s.contains('\n')),
            "{capability}: {output}"
        );
        outputs.insert((*capability).to_owned(), output);
    }

    // The readings agree with the machine.
    assert!(
        outputs["cpu_load"]["cpus"].as_u64().unwrap() >= 1,
        "{}",
        outputs["cpu_load"]
    );
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(outputs["machine"]["hostname"], hostname.trim());
    assert!(outputs["memory_usage"]["totalKib"].as_u64().unwrap() > 0);
    assert_eq!(outputs["log_usage"]["dir"], "/var/log");

    // The summary of them all is their worst status.
    let worst = ["critical", "warning", "ok"]
        .into_iter()
        .find(|status| outputs.values().any(|o| o["status"] == *status))
        .unwrap();
    let summary = invoke(
        &client,
        &host,
        "summarize",
        json!({ "checks": Value::Object(outputs) }),
    )
    .await
    .expect_ok(200);
    assert_eq!(summary["status"], worst, "{summary}");
    let counts = &summary["counts"];
    let total: u64 = ["ok", "warning", "critical", "missing"]
        .iter()
        .map(|k| counts[k].as_u64().unwrap())
        .sum();
    assert_eq!((total, counts["missing"].as_u64()), (12, Some(0)));

    // A backup that is not there is critical.
    let missing = invoke(
        &client,
        &host,
        "backup_verification",
        json!({ "path": format!("/var/backups/autoagent-missing-{}", std::process::id()) }),
    )
    .await
    .expect_ok(200);
    assert_eq!(
        (&missing["status"], &missing["exists"]),
        (&json!("critical"), &json!(false)),
        "{missing}"
    );

    // failOn turns a finding into a failed call: any memory use is a
    // warning with these thresholds, whatever this machine's memory holds.
    let reply = invoke(
        &client,
        &host,
        "memory_usage",
        json!({ "warnPercent": 0, "critPercent": 1000, "failOn": "warning" }),
    )
    .await;
    assert_eq!(reply.expect_error(502), "failed");
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("memory"),
        "{}",
        reply.text
    );

    // The grant is narrow: the plugin asks the host to stat /etc/shadow and
    // the host refuses, because plugin.toml grants stat only under /var/backups.
    let reply = invoke(
        &client,
        &host,
        "backup_verification",
        json!({ "path": "/etc/shadow" }),
    )
    .await;
    assert_eq!(reply.expect_error(502), "denied", "{}", reply.text);
    host.log_containing(&["plugin denied command", "/etc/shadow"])
        .await;
}
