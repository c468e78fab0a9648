//! The log file as operators use it: it is rotated by size with a bounded
//! number of old files, the current file keeps its name, and SIGHUP reopens
//! it after an external logrotate moved it away.

use autoagent_tests::{Client, Host, eventually, json};

#[tokio::test]
async fn the_log_is_rotated_by_size_and_keeps_a_bounded_number_of_files() {
    let host = Host::start_with_args(&["--log-max-bytes", "8192", "--log-keep", "2"]);
    let client = Client::new();
    let dir = host.log_dir.clone();
    // Each refused registration is a "write request" line in the log.
    eventually(60, "the log to rotate twice", || async {
        for n in 0..50 {
            let body =
                json!({"id": format!("W{n}"), "name": "", "type": "T", "capabilities": ["c"]});
            client
                .post_json(&host.url("/workers"), &body.to_string())
                .await;
        }
        dir.join("autoagent.log.2").exists().then_some(())
    })
    .await;
    // Keep rotating well past the number of kept files.
    for n in 0..400 {
        let body = json!({"id": format!("X{n}"), "name": "", "type": "T", "capabilities": ["c"]});
        client
            .post_json(&host.url("/workers"), &body.to_string())
            .await;
    }
    // The last line reaches the current file (logging trails the answer).
    client
        .post_json(&host.url("/workers/LAST_ONE/restart"), "")
        .await;
    host.log_containing(&["LAST_ONE"]).await;
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["autoagent.log", "autoagent.log.1", "autoagent.log.2"]
    );
    // Rotation happens after the write that passes the size: a file is at
    // most the size plus one burst of lines.
    let size = std::fs::metadata(dir.join("autoagent.log.1"))
        .unwrap()
        .len();
    assert!((8192..8192 + 64 * 1024).contains(&size), "{size}");
}

#[tokio::test]
async fn sighup_reopens_a_log_file_that_was_moved_away() {
    let host = Host::start();
    let client = Client::new();
    let log = host.log_dir.join("autoagent.log");
    std::fs::rename(&log, host.log_dir.join("autoagent.log.old")).unwrap();
    host.signal("HUP");
    client.get(&host.url("/workers/AFTER_HUP")).await;
    eventually(10, "a new log file with the lines after SIGHUP", || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("SIGHUP received").then_some(())
    })
    .await;
    let old = std::fs::read_to_string(host.log_dir.join("autoagent.log.old")).unwrap();
    assert!(
        old.contains("listening on"),
        "the moved file kept the earlier lines"
    );
    assert!(!old.contains("SIGHUP received"));
}
