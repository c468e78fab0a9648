//! Every acknowledged write survives a restart and a `kill -9`.

use autoagent_tests::{Client, Host};

fn worker(id: &str) -> String {
    format!(
        r#"{{"id": "{id}", "name": "worker {id}", "type": "TODO", "capabilities": ["task_creation"]}}"#
    )
}

#[tokio::test]
async fn a_worker_survives_a_clean_restart() {
    let mut host = Host::start();
    let client = Client::new();
    client
        .post_json(&host.url("/workers"), &worker("W1"))
        .await
        .expect_ok(201);
    let status = host.stop();
    assert!(
        status.success(),
        "SIGTERM should end the host cleanly: {status}"
    );
    host.restart();
    let data = client.get(&host.url("/workers/W1")).await.expect_ok(200);
    assert_eq!(data["name"], "worker W1");
}

#[tokio::test]
async fn every_acknowledged_worker_survives_kill_9() {
    let mut host = Host::start();
    let client = Client::new();
    // Kill right after the last 201: nothing acknowledged may be lost.
    let mut acknowledged = Vec::new();
    for n in 0..25 {
        let id = format!("W{n:03}");
        client
            .post_json(&host.url("/workers"), &worker(&id))
            .await
            .expect_ok(201);
        acknowledged.push(id);
    }
    host.kill9();
    host.restart();
    for id in &acknowledged {
        client
            .get(&host.url(&format!("/workers/{id}")))
            .await
            .expect_ok(200);
    }
    let list = client.get(&host.url("/workers")).await.expect_ok(200);
    assert_eq!(list.as_array().unwrap().len(), acknowledged.len());
}

#[tokio::test]
async fn concurrent_registrations_all_survive_kill_9() {
    let mut host = Host::start();
    let url = host.url("/workers");
    let handles: Vec<_> = (0..64)
        .map(|n| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = Client::new();
                client
                    .post_json(&url, &worker(&format!("C{n:03}")))
                    .await
                    .status
            })
        })
        .collect();
    let mut acknowledged = 0;
    for handle in handles {
        if handle.await.unwrap() == 201 {
            acknowledged += 1;
        }
    }
    assert_eq!(acknowledged, 64);
    host.kill9();
    host.restart();
    let list = Client::new()
        .get(&host.url("/workers"))
        .await
        .expect_ok(200);
    assert_eq!(list.as_array().unwrap().len(), 64);
}
