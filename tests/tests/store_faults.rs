//! A full disk under a running host: writes answer 503 `storage_unavailable`
//! with `Retry-After`, `/status` says the store is unavailable, the log has
//! one ERROR line for the episode, and once space is freed the store reopens
//! itself with no restart and nothing acknowledged lost.
//!
//! The data folder is a small tmpfs, so this test needs root (CI runs as
//! root); without it, it fails saying so rather than skipping.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use autoagent_tests::{Client, Host, Reply, Value};

/// A tmpfs mounted for the test, unmounted when dropped, also when the test
/// fails.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("mount point");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("running mount");
        assert!(
            output.status.success(),
            "this test mounts a tmpfs and needs root (CI runs as root): `mount -t tmpfs` at {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Self {
            dir: dir.to_owned(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so that a host still holding a file does not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Appends to `path` until the filesystem is full; returns its size.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("filler file");
    let chunk = vec![0x5a_u8; 64 * 1024];
    loop {
        if file
            .write_all(&chunk)
            .and_then(|()| file.sync_all())
            .is_err()
        {
            break;
        }
    }
    // A chunk may have gone in part; what is on disk is the truth.
    let _ = file.sync_all();
    std::fs::metadata(path).expect("filler size").len()
}

/// A task of a type no worker has, so that it stays queued and the only
/// writes are the submissions; its data makes each record a few KiB, so
/// the disk fills in a few dozen of them.
fn task_body() -> String {
    let blob = "x".repeat(4096);
    format!(r#"{{"type": "FILL", "capability": "task_creation", "data": {{"blob": "{blob}"}}}}"#)
}

/// Asserts the refusal of a faulted store.
fn expect_storage_unavailable(reply: &Reply) {
    assert_eq!(reply.expect_error(503), "storage_unavailable");
    let seconds: u64 = reply
        .retry_after
        .as_deref()
        .expect("Retry-After on a storage_unavailable answer")
        .parse()
        .expect("Retry-After in whole seconds");
    assert!((1..=5).contains(&seconds), "Retry-After: {seconds}");
}

fn error_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.contains(" ERROR "))
        .collect()
}

#[tokio::test]
async fn a_full_disk_refuses_writes_with_503_and_the_store_reopens_itself_once_space_is_freed() {
    // Dropped last: the host first, then the mount, then the folders.
    let scratch = tempfile::tempdir().expect("temp dir");
    let mount = scratch.path().join("disk");
    // Room for the bundled plugins' compiled components (about 6 MiB in
    // `cache/`) and a store: the test fills whatever is left.
    let tmpfs = Tmpfs::mount(&mount, "16m");
    let data_dir = mount.join("data");
    // The log stays off the full disk, as an operator's would.
    let mut host = Host::start_with(data_dir, scratch.path().join("logs"));
    let client = Client::new();
    let tasks = host.url("/tasks");
    let body = task_body();

    // Fill the disk but for a little room, then submit until it runs out.
    let filler = tmpfs.dir.join("filler");
    let size = fill(&filler);
    let leave = 256 * 1024;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .and_then(|file| file.set_len(size.saturating_sub(leave)))
        .expect("making a little room");
    let mut acknowledged: Vec<String> = Vec::new();
    let mut refused = 0u64;
    for _ in 0..2000 {
        let reply = client.post_json(&tasks, &body).await;
        if reply.status == 201 {
            acknowledged.push(reply.json["data"]["id"].as_str().unwrap().to_owned());
            continue;
        }
        expect_storage_unavailable(&reply);
        refused += 1;
        break;
    }
    assert_eq!(refused, 1, "2000 tasks of 4 KiB fitted into 256 KiB");
    assert!(!acknowledged.is_empty(), "the very first write was refused");

    // Take the last byte too, so that nothing can be written until the
    // filler is gone. Writes stay refused while the store tries to reopen:
    // `Retry-After` follows its backoff (100 ms doubling), so 2 s means
    // that four reopen attempts have failed on the full disk.
    fill(&filler);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = client.post_json(&tasks, &body).await;
        expect_storage_unavailable(&reply);
        refused += 1;
        let retry_after: u64 = reply.retry_after.as_deref().unwrap().parse().unwrap();
        if refused >= 5 && retry_after >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store did not back off within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = client.get(&host.url("/status")).await.expect_ok(200);
    assert_eq!(status["storage"]["status"], "unavailable", "{status}");
    assert!(status["storage"]["since"].is_string(), "{status}");
    assert!(status["storage"]["lastError"].is_string(), "{status}");
    assert_eq!(
        status["components"]["workerAutomation"]["status"], "degraded",
        "{status}"
    );

    // Free the disk: writes resume without a restart.
    std::fs::remove_file(&filler).expect("removing the filler");
    let deadline = Instant::now() + Duration::from_secs(30);
    let resumed = loop {
        let reply = client.post_json(&tasks, &body).await;
        if reply.status == 201 {
            break reply.json["data"]["id"].as_str().unwrap().to_owned();
        }
        // Until the store has reopened, it keeps refusing the same way.
        expect_storage_unavailable(&reply);
        refused += 1;
        assert!(
            Instant::now() < deadline,
            "no write succeeded within 30 s of freeing the disk"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    acknowledged.push(resumed);
    let status = client.get(&host.url("/status")).await.expect_ok(200);
    assert_eq!(status["storage"]["status"], "ok", "{status}");
    assert_eq!(status["storage"]["since"], Value::Null, "{status}");
    assert_eq!(status["storage"]["lastError"], Value::Null, "{status}");
    assert_eq!(
        status["components"]["workerAutomation"]["status"], "running",
        "{status}"
    );

    // One ERROR line for the episode, none for the refused requests, and
    // one line for its end that counts them.
    let log = host
        .log_containing(&["store unavailable", "store available again"])
        .await;
    let errors = error_lines(&log);
    assert_eq!(errors.len(), 1, "ERROR lines: {errors:#?}");
    assert!(errors[0].contains("store unavailable"), "{}", errors[0]);
    let recovered: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("store available again"))
        .collect();
    assert_eq!(recovered.len(), 1, "{recovered:#?}");
    assert!(
        recovered[0]
            .split_whitespace()
            .any(|field| field == format!("refused_writes={refused}")),
        "{refused} writes were refused: {}",
        recovered[0]
    );

    // Every acknowledged task is there, and after a crash too.
    for id in &acknowledged {
        client
            .get(&host.url(&format!("/tasks/{id}")))
            .await
            .expect_ok(200);
    }
    host.kill9();
    host.restart();
    for id in &acknowledged {
        client
            .get(&host.url(&format!("/tasks/{id}")))
            .await
            .expect_ok(200);
    }
    let mut listed = 0;
    let mut cursor = String::new();
    loop {
        let page = client
            .get(&host.url(&format!("/tasks?type=FILL&limit=500{cursor}")))
            .await
            .expect_ok(200);
        listed += page["items"].as_array().map_or(0, Vec::len);
        match page["nextCursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(
        listed,
        acknowledged.len(),
        "only acknowledged tasks are stored (a refused write writes nothing)"
    );
    drop(host);
}
