//! Costs that must not grow with history: with `TASKS` finished tasks in
//! the store, the latency of list pages (unfiltered, deep, by each filter, a
//! rare combination), the host's memory after the load, idle after a
//! restart and after the lists, and the cost of pruning them all.
//!
//! Tasks call the echo guest's `ping` (no plugin state), one in a hundred
//! at `high` priority. Run with
//! `cargo xtask build && cargo bench -p autoagent-tests --bench task_history`.
//! `TASKS` (default 100000) and `CLIENTS` (64) override the defaults.

use std::time::{Duration, Instant};

use autoagent_tests::report::{self, Figure, Report};
use autoagent_tests::{Client, Host, eventually, json, setting};

const WORKERS: usize = 8;

#[tokio::main]
async fn main() {
    run().await;
}

async fn run() {
    let tasks = setting("TASKS", 100_000);
    let clients = setting("CLIENTS", 64);
    // The echo guest's `ping` keeps no state: what grows is task history
    // alone, not a plugin's key-value data.
    let mut host = Host::start_with_guests();
    let client = Client::new();
    println!("idle RSS, empty store: {}", mib(host.rss_bytes()));
    for n in 0..WORKERS {
        let worker = json!({
            "id": format!("BENCH_{n}"), "name": "bench", "type": "TODO",
            "capabilities": ["ping"], "team": "testing", "concurrency": 16
        });
        client
            .post_json(&host.url("/workers"), &worker.to_string())
            .await
            .expect_ok(201);
    }

    // One task in a hundred is high priority: the rare filter value.
    let started = Instant::now();
    let url = host.url("/tasks");
    let submitters: Vec<_> = (0..clients)
        .map(|c| {
            let url = url.clone();
            let share = tasks / clients + usize::from(c < tasks % clients);
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for n in 0..share {
                    let priority = if (c + n * clients).is_multiple_of(100) {
                        "high"
                    } else {
                        "medium"
                    };
                    let body = json!({
                        "type": "TODO", "priority": priority, "capability": "ping",
                        "team": "testing", "data": {"title": format!("history {c}-{n}")}
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
    let status_url = host.url("/status");
    eventually(3600, "every task to finish", || async {
        let status = client.get(&status_url).await.expect_ok(200);
        let done = status["components"]["workerAutomation"]["performance"]["completedTasks"]
            .as_u64()
            .unwrap_or(0);
        (done >= tasks as u64).then_some(())
    })
    .await;
    println!(
        "{tasks} tasks submitted and run in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("RSS after the load: {}", mib(host.rss_bytes()));
    tokio::time::sleep(Duration::from_secs(31)).await;
    let idle_after_load = host.rss_bytes();
    println!("RSS idle 31 s after the load: {}", mib(idle_after_load));
    let file = host.data_dir.join(autoagent::DATABASE_FILE);
    let size = std::fs::metadata(&file).map_or(0, |m| m.len());
    println!("store file: {:.0} MiB", size as f64 / (1 << 20) as f64);

    assert!(host.stop().success());
    host.restart();
    // The restart is done once the host answers (on a new port).
    client.get(&host.url("/status")).await.expect_ok(200);
    let idle_after_restart = host.rss_bytes();
    println!("idle RSS after a restart: {}", mib(idle_after_restart));

    let (_, middle) = walk(&client, &host, tasks / 2).await;
    let queries = [
        ("first page, unfiltered", "limit=50".to_owned()),
        ("deep page, unfiltered", format!("limit=50&cursor={middle}")),
        ("status=succeeded", "status=succeeded&limit=50".to_owned()),
        ("worker=BENCH_3", "worker=BENCH_3&limit=50".to_owned()),
        ("priority=high (1%)", "priority=high&limit=50".to_owned()),
        (
            "status+worker+priority=high",
            "status=succeeded&worker=BENCH_3&priority=high&limit=50".to_owned(),
        ),
        (
            "team=testing&type=TODO",
            "team=testing&type=TODO&limit=50".to_owned(),
        ),
        ("status=failed (none)", "status=failed&limit=50".to_owned()),
    ];
    println!("| list | p50 | p99 | items |");
    println!("| --- | --- | --- | --- |");
    // The slowest list by p99: the target is on every filtered page.
    let mut slowest = ("", Duration::ZERO, Duration::ZERO);
    for (name, query) in &queries {
        let url = host.url(&format!("/tasks?{query}"));
        let mut times = Vec::new();
        let mut items = 0;
        for _ in 0..100 {
            let begun = Instant::now();
            let page = client.get(&url).await.expect_ok(200);
            times.push(begun.elapsed());
            items = page["items"].as_array().map_or(0, Vec::len);
        }
        times.sort();
        if times[98] > slowest.2 {
            slowest = (*name, times[49], times[98]);
        }
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {items} |",
            ms(times[49]),
            ms(times[98])
        );
    }
    let walking = Instant::now();
    let (pages, _) = walk(&client, &host, usize::MAX).await;
    println!(
        "walking every task, 500 a page: {pages} pages in {:.2} s",
        walking.elapsed().as_secs_f64()
    );
    println!("RSS after the lists: {}", mib(host.rss_bytes()));
    // The host hands freed memory back every 30 s; a bench may sleep.
    tokio::time::sleep(Duration::from_secs(31)).await;
    let idle_after_lists = host.rss_bytes();
    println!("RSS idle 31 s after the lists: {}", mib(idle_after_lists));

    // Pruning: the same store opened in-process with a retention of zero,
    // so every finished task is past it at once.
    assert!(host.stop().success());
    let mut config = autoagent::AppConfig::new(&host.data_dir);
    config.retention = Duration::ZERO;
    let begun = Instant::now();
    let app = autoagent::App::open(&config)
        .await
        .expect("opening the store");
    loop {
        let query = autoagent::tasks::TaskQuery {
            limit: Some(1),
            ..Default::default()
        };
        if app.tasks.list(query, None).await.unwrap().items.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = begun.elapsed();
    let counts = app.tasks.counts();
    println!(
        "pruning {tasks} finished tasks: {:.2} s ({:.0} tasks/s); totals after: {} submitted, {} succeeded",
        took.as_secs_f64(),
        tasks as f64 / took.as_secs_f64(),
        counts.total,
        counts.succeeded
    );
    app.shutdown(Duration::from_secs(5)).await;

    let mut report = Report::new("task_history", "History: lists, memory and pruning");
    let history = format!("{} tasks", report::thousands(tasks as f64));
    // The list target is set at a million tasks; a smaller run says so.
    let at_tasks = if tasks >= 1_000_000 {
        String::new()
    } else {
        format!(" (set at 1,000,000 tasks; this run: {history})")
    };
    report.add(
        Figure::new(
            format!(
                "slowest of {} list pages (limit 50), {history}",
                queries.len()
            ),
            format!(
                "{:.2} ms p99, {:.2} ms p50 (`{}`)",
                ms(slowest.2),
                ms(slowest.1),
                slowest.0
            ),
        )
        .target(format!(
            "{}{at_tasks}",
            report::at_most(ms(slowest.2), 10.0, " ms")
        ))
        .limit(
            "a page reads one index range whatever the history; the rest is the \
             loopback round trip and 50 tasks' JSON",
        ),
    );
    // The host's own memory, whatever the history: the binary's file-backed
    // pages (~24 MiB) and its anonymous memory (~36 MiB).
    let memory = "the binary's code and bundled components (~24 MiB, file-backed) and \
                  guest instance pools, thread stacks, allocator and the 8 MiB redb cache";
    for (what, bytes, limit) in [
        (
            "idle RSS after a restart",
            idle_after_restart,
            format!("{memory}; the host holds only unfinished tasks"),
        ),
        (
            "RSS idle 31 s after the lists",
            idle_after_lists,
            format!("{memory}; freed memory goes back with `malloc_trim` every 30 s"),
        ),
        (
            "RSS idle 31 s after the load",
            idle_after_load,
            format!("{memory}; freed memory goes back with `malloc_trim` every 30 s"),
        ),
    ] {
        report.add(
            Figure::new(format!("{what}, {history}"), mib(bytes))
                .target(rss_verdict(bytes))
                .limit(limit),
        );
    }
    report.add(
        Figure::new(
            format!("pruning every task, {history}"),
            format!(
                "{:.2} s ({}/s)",
                took.as_secs_f64(),
                report::thousands(tasks as f64 / took.as_secs_f64())
            ),
        )
        .limit("one durable batch per 256 tasks, each record deleted with its index entries"),
    );
    report.finish();
}

/// The verdict on an RSS against issue 10's 60 MB (decimal: 57.2 MiB).
fn rss_verdict(bytes: Option<u64>) -> String {
    const LIMIT: f64 = 60e6;
    let Some(bytes) = bytes else {
        return "≤ 60 MB: not measured".to_owned();
    };
    let bytes = bytes as f64;
    if bytes <= LIMIT {
        "≤ 60 MB (57.2 MiB): met".to_owned()
    } else {
        format!(
            "≤ 60 MB (57.2 MiB): missed by {:.1} MiB",
            (bytes - LIMIT) / f64::from(1 << 20)
        )
    }
}

/// Walks the tasks by cursor, 500 a page, until `enough` tasks were seen
/// or the list ends. Returns the pages read and the cursor reached.
async fn walk(client: &Client, host: &Host, enough: usize) -> (usize, String) {
    let mut cursor: Option<String> = None;
    let (mut pages, mut seen) = (0, 0);
    loop {
        let after = cursor
            .as_deref()
            .map_or(String::new(), |c| format!("&cursor={c}"));
        let page = client
            .get(&host.url(&format!("/tasks?limit=500{after}")))
            .await
            .expect_ok(200);
        pages += 1;
        seen += page["items"].as_array().map_or(0, Vec::len);
        cursor = page["nextCursor"].as_str().map(str::to_owned);
        if seen >= enough || cursor.is_none() {
            return (pages, cursor.unwrap_or_default());
        }
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    })
}
