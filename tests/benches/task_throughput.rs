//! Tasks per second end to end: concurrent HTTP clients submit tasks that
//! run through the bundled `todo` plugin on several workers of a real host,
//! every write durable. Reports throughput, submit-to-done latency, the host's
//! CPU time per task, and, on the same disk, its fsync rate and the rate of a
//! minimal redb queue that commits once per task (what group commit buys).
//!
//! Run with `cargo xtask build && cargo bench -p autoagent-tests --bench task_throughput`.
//! `TASKS`, `CLIENTS`, `WORKERS` and `CONCURRENCY` override the defaults
//! (20000, 64, 8, 16).

use std::io::Write;
use std::time::{Duration, Instant};

use autoagent_tests::report::{self, Figure, Report};
use autoagent_tests::{Client, Host, json, setting};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[tokio::main]
async fn main() {
    run().await;
}

async fn run() {
    let tasks = setting("TASKS", 20_000);
    let clients = setting("CLIENTS", 64);
    let workers = setting("WORKERS", 8);
    let concurrency = setting("CONCURRENCY", 16);

    let host = Host::start();
    let fsyncs = fsync_rate(&host.data_dir, Duration::from_secs(2));
    let queue_rate = one_commit_per_task_rate(&host.data_dir, Duration::from_secs(2));
    let client = Client::new();
    for n in 0..workers {
        let worker = json!({
            "id": format!("BENCH_{n}"), "name": "bench", "type": "TODO",
            "capabilities": ["task_creation"], "concurrency": concurrency
        });
        client
            .post_json(&host.url("/workers"), &worker.to_string())
            .await
            .expect_ok(201);
    }

    let url = host.url("/tasks");
    let started = Instant::now();
    let submitters: Vec<_> = (0..clients)
        .map(|c| {
            let url = url.clone();
            let share = tasks / clients + usize::from(c < tasks % clients);
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for n in 0..share {
                    let body = json!({
                        "type": "TODO", "priority": "medium", "capability": "task_creation",
                        "data": {"title": format!("bench {c}-{n}")}
                    });
                    let response = http.post(&url).json(&body).send().await.unwrap();
                    assert_eq!(response.status(), 201);
                }
            })
        })
        .collect();
    for submitter in submitters {
        submitter.await.unwrap();
    }
    let submitted_in = started.elapsed();

    let metrics_url = host.url("/metrics");
    loop {
        let metrics = client.get(&metrics_url).await.expect_ok(200);
        let counts = &metrics["tasks"];
        if counts["queued"] == 0 && counts["running"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done_in = started.elapsed();
    // Read before the listing below, which costs the host CPU of its own.
    let host_cpu = host.cpu_time();

    // Server-side timestamps give each task's submit-to-done latency.
    let mut latencies = Vec::with_capacity(tasks);
    let mut failed = 0;
    let (mut first, mut last) = (None::<OffsetDateTime>, None::<OffsetDateTime>);
    let mut cursor: Option<String> = None;
    loop {
        let after = cursor
            .as_deref()
            .map_or(String::new(), |c| format!("&cursor={c}"));
        let page = client
            .get(&host.url(&format!("/tasks?limit=500{after}")))
            .await
            .expect_ok(200);
        let items = page["items"].as_array().unwrap();
        for task in items {
            if task["status"] != "succeeded" {
                failed += 1;
                continue;
            }
            let at = |f: &str| OffsetDateTime::parse(task[f].as_str().unwrap(), &Rfc3339).unwrap();
            let (created, finished) = (at("createdAt"), at("finishedAt"));
            latencies.push((finished - created).as_seconds_f64() * 1000.0);
            first = Some(first.map_or(created, |f| f.min(created)));
            last = Some(last.map_or(finished, |l| l.max(finished)));
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    let span = (last.unwrap() - first.unwrap()).as_seconds_f64();

    println!(
        "task throughput: {tasks} tasks (capability task_creation of core/todo), {clients} clients, {workers} workers x concurrency {concurrency}"
    );
    println!(
        "  all submitted (201) after {:.2} s: {:.0} submissions/s",
        submitted_in.as_secs_f64(),
        tasks as f64 / submitted_in.as_secs_f64()
    );
    println!(
        "  all succeeded after {:.2} s: {:.0} tasks/s end to end",
        done_in.as_secs_f64(),
        tasks as f64 / done_in.as_secs_f64()
    );
    println!(
        "  first submit to last done (server clock): {span:.2} s: {:.0} tasks/s",
        tasks as f64 / span
    );
    println!(
        "  submit-to-done latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(0.5),
        percentile(0.99),
        percentile(1.0)
    );
    if let Some(cpu) = host_cpu {
        println!(
            "  host CPU from its start to the last task done: {:.2} s, {:.0} µs per task",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / tasks as f64
        );
    }
    println!("  tasks that did not succeed: {failed}");
    println!(
        "  fsync ceiling on the same disk: {fsyncs:.0} fsyncs/s (4 KiB write + fdatasync, one thread)"
    );
    println!("  a minimal redb queue, one durable commit per task: {queue_rate:.0} tasks/s");

    let rate = tasks as f64 / span;
    let cpu_per_task = host_cpu.map(|cpu| cpu.as_secs_f64() * 1e6 / tasks as f64);
    let mut report = Report::new(
        "task_throughput",
        "Durable tasks per second, end to end over HTTP",
    );
    let limit = match cpu_per_task {
        Some(us) => format!(
            "CPU: the host uses {us:.0} µs a task ({:.2} of the 2 cores at this rate); the 64 clients \
             share the cores; commits carry many tasks each, so fsync is not the limit",
            us * rate / 1e6
        ),
        None => "CPU, shared by the host and the clients".to_owned(),
    };
    report.add(
        Figure::new(
            format!("tasks/s, {tasks} tasks, {clients} clients"),
            format!(
                "{}/s, p50 {:.0} ms, p99 {:.0} ms, {failed} failed",
                report::thousands(rate),
                percentile(0.5),
                percentile(0.99)
            ),
        )
        .against(
            format!(
                "one commit per task on the same redb: {}/s",
                report::thousands(queue_rate)
            ),
            rate / queue_rate,
        )
        .target(report::at_least(rate, 5000.0, " tasks/s"))
        .limit(limit),
    );
    report.add(
        Figure::new(
            "tasks/s against the disk",
            format!("{}/s", report::thousands(rate)),
        )
        .against(
            format!(
                "fsyncs/s of the disk (4 KiB write + fdatasync): {}/s",
                report::thousands(fsyncs)
            ),
            rate / fsyncs,
        )
        .limit("group commit: each durable commit carries the writes of many tasks"),
    );
    report.finish();
}

/// Tasks per second of the simplest durable queue on the same disk: one
/// thread appending a task-sized record to a redb table, one durable commit
/// each (redb's default durability). What group commit is measured against.
fn one_commit_per_task_rate(dir: &std::path::Path, for_how_long: Duration) -> f64 {
    const QUEUE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("queue");
    let path = dir.join("queue-probe.redb");
    let db = redb::Database::create(&path).unwrap();
    let record = json!({
        "id": "0d3c7c1e-5d7a-4b7e-9d8f-1b2c3d4e5f60", "type": "TODO", "priority": "medium",
        "capability": "task_creation", "status": "queued",
        "data": {"title": "bench 1-1"}, "createdAt": "2026-11-26T10:00:00.000Z"
    })
    .to_string();
    let started = Instant::now();
    let mut tasks = 0u64;
    while started.elapsed() < for_how_long {
        let txn = db.begin_write().unwrap();
        txn.open_table(QUEUE)
            .unwrap()
            .insert(tasks, record.as_bytes())
            .unwrap();
        txn.commit().unwrap();
        tasks += 1;
    }
    let rate = tasks as f64 / started.elapsed().as_secs_f64();
    drop(db);
    std::fs::remove_file(&path).unwrap();
    rate
}

/// How many `write + fdatasync` rounds one thread completes per second.
fn fsync_rate(dir: &std::path::Path, for_how_long: Duration) -> f64 {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = [7u8; 4096];
    let started = Instant::now();
    let mut rounds = 0u64;
    while started.elapsed() < for_how_long {
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        rounds += 1;
    }
    std::fs::remove_file(&path).unwrap();
    rounds as f64 / started.elapsed().as_secs_f64()
}
