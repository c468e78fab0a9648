//! The API under load from a real load tool, against a bare axum handler in
//! the same run: `wrk` (Debian's `wrk` package: `apt-get install wrk`) at
//! `CONNECTIONS` connections (default 64) on 2 threads for `LOAD_SECONDS`
//! (default 5) per figure; the `/status` pair is run `ROUNDS` times (default
//! 5), interleaved, and their medians compared.
//!
//! 1. `GET /status` of a host started with its defaults.
//! 2. The floor: a bare axum server in this process (its own 2-thread
//!    runtime) answering the same JSON document on one route, serialized on
//!    every request, with nothing else (no middleware, no counters read).
//! 3. `POST /tasks` (the guide's TODO task) on the same host, and on the
//!    bare server, which parses the task and answers it without storing it.
//!
//! Run with `cargo xtask build && cargo bench -p autoagent-tests --bench api_load`.

use std::process::Command;

use autoagent_tests::report::{self, Figure, Report};
use autoagent_tests::{Client, Host, setting};

/// What wrk reported.
struct Load {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: String,
}

/// Reads a wrk latency like `1.23ms`, `850.00us` or `1.01s` as milliseconds.
fn millis(text: &str) -> f64 {
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic()).unwrap());
    let n: f64 = number.parse().unwrap();
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        other => panic!("unknown wrk unit {other:?}"),
    }
}

fn wrk(url: &str, script: Option<&str>, connections: usize, seconds: usize) -> Load {
    let mut command = Command::new("wrk");
    command
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
        ])
        .arg(url);
    let _script_file;
    if let Some(script) = script {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), script).unwrap();
        command.arg("-s").arg(file.path());
        _script_file = file;
    }
    let output = command
        .output()
        .expect("wrk (Debian: `apt-get install wrk`) must be on PATH");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "wrk failed: {text}");
    let line = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk's output:\n{text}"))
            .to_owned()
    };
    let field = |prefix: &str| line(prefix).split_whitespace().nth(1).unwrap().to_owned();
    let errors = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Non-2xx") || l.starts_with("Socket errors"))
        .collect::<Vec<_>>()
        .join("; ");
    Load {
        requests_per_sec: field("Requests/sec:").parse().unwrap(),
        p50_ms: millis(&field("50%")),
        p99_ms: millis(&field("99%")),
        errors: if errors.is_empty() {
            "none".into()
        } else {
            errors
        },
    }
}

fn print_load(what: &str, load: &Load) {
    println!(
        "api load: {what}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms; errors: {}",
        load.requests_per_sec, load.p50_ms, load.p99_ms, load.errors
    );
}

/// A bare axum server answering `body` on `GET /status`, and `POST /tasks`
/// by parsing the task and answering it back with an id (nothing stored),
/// on its own runtime; returns its origin.
fn bare_axum(body: String) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            // The same document, serialized on every request as our
            // handler does with its own.
            let document: serde_json::Value = serde_json::from_str(&body).unwrap();
            let document = std::sync::Arc::new(document);
            let next_id = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let app = axum::Router::new()
                .route(
                    "/status",
                    axum::routing::get(move || {
                        let document = document.clone();
                        async move { axum::Json(document.as_ref().clone()) }
                    }),
                )
                .route(
                    "/tasks",
                    axum::routing::post(
                        move |axum::Json(mut task): axum::Json<serde_json::Value>| {
                            let id = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            async move {
                                task["id"] = serde_json::json!(format!("task-{id}"));
                                (axum::http::StatusCode::CREATED, axum::Json(task))
                            }
                        },
                    ),
                );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    origin
}

#[tokio::main]
async fn main() {
    let connections = setting("CONNECTIONS", 64);
    let seconds = setting("LOAD_SECONDS", 5);
    let rounds = setting("ROUNDS", 5);
    let host = Host::start();
    let status_url = host.url("/status");
    let sample = Client::new().get(&status_url).await;
    assert_eq!(sample.status, 200);
    let bare_origin = bare_axum(sample.text.clone());
    let bare_url = format!("{bare_origin}/status");
    println!(
        "api load: wrk -t2 -c{connections} -d{seconds}s --latency; /status body {} bytes",
        sample.text.len()
    );

    // Interleaved rounds, medians: the machine's load drifts between runs
    // and moves both sides together.
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let load = wrk(&status_url, None, connections, seconds);
        print_load(&format!("GET /status (autoagent), round {round}"), &load);
        ours.push(load);
        let load = wrk(&bare_url, None, connections, seconds);
        print_load(
            &format!("GET /status (bare axum, same body), round {round}"),
            &load,
        );
        bare.push(load);
    }
    let median = |loads: &[Load], f: fn(&Load) -> f64| {
        let mut values: Vec<f64> = loads.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (ours_rps, bare_rps) = (
        median(&ours, |l| l.requests_per_sec),
        median(&bare, |l| l.requests_per_sec),
    );
    let (ours_p99, bare_p99) = (median(&ours, |l| l.p99_ms), median(&bare, |l| l.p99_ms));
    println!(
        "api load: /status medians of {rounds} rounds: autoagent {ours_rps:.0} req/s p99 {ours_p99:.2} ms, bare {bare_rps:.0} req/s p99 {bare_p99:.2} ms; ratio throughput {:.2}, p99 {:.2}",
        ours_rps / bare_rps,
        ours_p99 / bare_p99
    );

    let post = r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"type": "TODO", "priority": "high", "data": {"title": "load", "description": "api bench", "deadline": "2025-10-10"}, "workflow": "TODO_WORKFLOW"}'
"#;
    let tasks = wrk(&host.url("/tasks"), Some(post), connections, seconds);
    print_load("POST /tasks (autoagent, durable)", &tasks);
    let bare_tasks = wrk(
        &format!("{bare_origin}/tasks"),
        Some(post),
        connections,
        seconds,
    );
    print_load(
        "POST /tasks (bare axum, parsed and answered, not stored)",
        &bare_tasks,
    );

    let mut report = Report::new("api_load", "API under load against bare axum");
    let (ours_p50, bare_p50) = (median(&ours, |l| l.p50_ms), median(&bare, |l| l.p50_ms));
    // Where the time goes, from `perf record -g` on the host (BENCHMARKS.md).
    let status_limit = "the kernel's TCP send path and wake-ups (over half of the host's \
                        samples) and glibc malloc, as for the floor; ours adds the guard around \
                        the router and the front door on each route, one boxed future each; \
                        the floor is served by `axum::serve` (HTTP/1 and HTTP/2 on each \
                        connection), the host by hyper's HTTP/1 connection directly";
    // The ratio is the median of the rounds' own ratios (each pair run back
    // to back), which the machine's drift moves less than a ratio of the
    // two sides' medians taken apart.
    let mut paired: Vec<f64> = ours
        .iter()
        .zip(&bare)
        .map(|(o, b)| o.requests_per_sec / b.requests_per_sec)
        .collect();
    paired.sort_by(f64::total_cmp);
    let throughput = paired[paired.len() / 2];
    let rounds_text = format!(
        "; rounds' ratios {:.2}–{:.2}×, median shown",
        paired[0],
        paired[paired.len() - 1],
    );
    report.add(
        Figure::new(
            format!("`GET /status`, wrk -c{connections}, median of {rounds} rounds"),
            format!(
                "{} req/s, p50 {ours_p50:.2} ms{}",
                report::thousands(ours_rps),
                errors(&ours)
            ),
        )
        .against(
            format!(
                "bare axum, same document: {} req/s, p50 {bare_p50:.2} ms{}{rounds_text}",
                report::thousands(bare_rps),
                errors(&bare)
            ),
            throughput,
        )
        .target(report::at_least(throughput, 0.95, "×"))
        .limit(status_limit),
    );
    let tail = ours_p99 / bare_p99;
    report.add(
        Figure::new(
            format!("`GET /status` p99, median of {rounds} rounds"),
            format!("{ours_p99:.2} ms"),
        )
        .against(format!("bare axum {bare_p99:.2} ms"), tail)
        .target(report::at_most(tail, 1.5, "×"))
        .limit(status_limit),
    );
    report.add(
        Figure::new(
            format!("`POST /tasks`, wrk -c{connections}, one run"),
            format!(
                "{} req/s, p50 {:.2} ms, p99 {:.2} ms{}",
                report::thousands(tasks.requests_per_sec),
                tasks.p50_ms,
                tasks.p99_ms,
                errors(std::slice::from_ref(&tasks))
            ),
        )
        .against(
            format!(
                "bare axum parsing the task and answering it, nothing stored: {} req/s, p99 {:.2} ms",
                report::thousands(bare_tasks.requests_per_sec),
                bare_tasks.p99_ms
            ),
            tasks.requests_per_sec / bare_tasks.requests_per_sec,
        )
        .target(format!(
            "{} (issue 4's tasks/s, end to end in task_throughput)",
            report::at_least(tasks.requests_per_sec, 5000.0, " req/s")
        ))
        .limit(
            "each task durable before its 201 (the store's group commit, one fsync per commit), \
             its index entries and counters in the same batch, and the worker queue",
        ),
    );
    report.finish();
}

/// `; errors: …` with what wrk reported as errors in any of `loads`, or
/// nothing when there were none.
fn errors(loads: &[Load]) -> String {
    let seen: Vec<&str> = loads
        .iter()
        .map(|l| l.errors.as_str())
        .filter(|e| *e != "none")
        .collect();
    if seen.is_empty() {
        String::new()
    } else {
        format!("; errors: {}", seen.join("; "))
    }
}
