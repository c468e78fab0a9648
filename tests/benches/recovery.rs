//! The recovery loop's cost and speed on a real host, with the bundled
//! `tcp` check probing real listeners in this process:
//!
//! 1. `CHECKS` checks (default 2,000) at a 1 s interval against a healthy
//!    listener: the host's CPU over 20 s, and probes run per second.
//! 2. The listener stops: every check's incident opens. Detection latency
//!    (listener stopped → incident opened) against its floor: between
//!    (threshold − 1) × interval and threshold × (interval + its jitter).
//! 3. Time to recover: 8 checks whose one stage is the bundled `wait` (3 s)
//!    against a second listener that comes back while they wait: opened →
//!    resolved by the stage, against the floor (the wait plus a probe).
//!
//! Run with `cargo xtask build && cargo bench -p autoagent-tests --bench recovery`.

use std::time::{Duration, Instant};

use autoagent_tests::report::{self, Figure, Report};
use autoagent_tests::{Client, Host, Value, eventually, json, setting};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const INTERVAL_MS: u64 = 1000;
const THRESHOLD: u64 = 3;

#[tokio::main]
async fn main() {
    let checks = setting("CHECKS", 2000);
    let host = Host::start();
    let client = Client::new();

    // 1. The loop's cost at a steady state.
    let (port, listener) = listen().await;
    for n in 0..checks {
        register(&client, &host, &format!("c{n:05}"), port, &[]).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu_before, calls_before) = (host.cpu_time().unwrap(), plugin_calls(&client, &host).await);
    let measured = Instant::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (cpu_after, calls_after) = (host.cpu_time().unwrap(), plugin_calls(&client, &host).await);
    let seconds = measured.elapsed().as_secs_f64();
    let cores = (cpu_after - cpu_before).as_secs_f64() / seconds;
    let probes = (calls_after - calls_before) / seconds;
    let rss_mib = host.rss_bytes().unwrap_or(0) >> 20;
    println!(
        "recovery: {checks} tcp checks at a {INTERVAL_MS} ms interval: {probes:.0} probes/s, host CPU {cores:.2} cores ({:.0} % of one core), RSS {rss_mib} MiB",
        cores * 100.0,
    );
    let mut report = Report::new(
        "recovery",
        "Automatic recovery: checks per host, detection, time to recover",
    );
    // The target is set at 2,000 checks; a run with another `CHECKS` says so.
    let at_checks = if checks == 2000 {
        String::new()
    } else {
        format!(
            " (set for 2,000 checks; this run: {})",
            report::thousands(checks as f64)
        )
    };
    report.add(
        Figure::new(
            format!(
                "{} checks at 1 s: host CPU",
                report::thousands(checks as f64)
            ),
            format!(
                "{cores:.2} cores, {} probes/s, RSS {rss_mib} MiB",
                report::thousands(probes)
            ),
        )
        .target(format!(
            "{}{at_checks}",
            report::at_most(cores, 0.5, " cores")
        ))
        .limit(format!(
            "the probe itself: a fresh sandbox, a socket connect and the result's \
             bookkeeping, {:.0} µs of CPU a probe here; probes/s under checks/s from \
             the interval's jitter (up to 10 %)",
            cores * 1e6 / probes
        )),
    );

    // 2. Detection: stop the listener; every check opens an incident.
    let stopped = OffsetDateTime::now_utc();
    listener.abort();
    let _ = listener.await;
    let mut latencies: Vec<f64> = eventually(120, "every incident to open", || async {
        let opened = all_incidents(&client, &host).await;
        (opened.len() >= checks).then(|| {
            opened
                .iter()
                .map(|i| (at(&i["openedAt"]) - stopped).as_seconds_f64() * 1000.0)
                .collect()
        })
    })
    .await;
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let (floor_low, floor_high) = (
        (THRESHOLD - 1) * INTERVAL_MS,
        THRESHOLD * INTERVAL_MS * 11 / 10,
    );
    println!(
        "  detection, listener stopped → incident opened, {} incidents: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; floor {floor_low}–{floor_high} ms ((threshold − 1) × interval to threshold × (interval + its 10 % jitter))",
        latencies.len(),
        q(0.5),
        q(0.99),
        q(1.0),
    );
    let (low, high) = (floor_low as f64, floor_high as f64);
    let (first, last) = (q(0.0), q(1.0));
    // Every incident must open within the floor: sooner would mean a probe
    // counted before the outage, later a wait on the host's side.
    let within = if first < low {
        format!(
            "missed: one opened after {first:.0} ms, {:.0} ms too soon",
            low - first
        )
    } else if last > high {
        format!("missed: max {last:.0} ms, {:.0} ms over", last - high)
    } else {
        "met".to_owned()
    };
    report.add(
        Figure::new(
            format!(
                "detection, {} incidents at once",
                report::thousands(latencies.len() as f64)
            ),
            format!(
                "{} ms p50, {} ms p99, max {} ms",
                report::thousands(q(0.5)),
                report::thousands(q(0.99)),
                report::thousands(last)
            ),
        )
        .against(
            format!(
                "the floor {}–{} ms (ratio: max over its upper end)",
                report::thousands(low),
                report::thousands(high)
            ),
            last / high,
        )
        .target(format!("every incident within the floor: {within}"))
        .limit(
            "the floor itself (threshold 3 × interval 1 s, plus jitter); beyond it, \
             writing the incidents: each check its own turn, different checks' writes \
             sharing the store's group commits",
        ),
    );

    // 3. Time to recover, through a stage.
    let (port, listener) = listen().await;
    let wait_ms = 3000;
    for n in 0..8 {
        register(
            &client,
            &host,
            &format!("r{n}"),
            port,
            &[json!({"strategy": "wait", "waitMs": wait_ms})],
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    listener.abort();
    let _ = listener.await;
    // Every one of them opens (within an interval of each other) before
    // the listener comes back, while their stage waits.
    let opened = eventually(30, "the recoverable incidents to open", || async {
        let mut first = None;
        for n in 0..8 {
            let page = client
                .get(&host.url(&format!("/incidents?checkId=r{n}&status=active")))
                .await
                .expect_ok(200);
            let incident = page["items"].as_array().unwrap().first().cloned()?;
            first.get_or_insert(incident);
        }
        first
    })
    .await;
    let (_port, listener) = listen_on(port).await;
    let mut recovered = Vec::new();
    for n in 0..8 {
        let url = host.url(&format!("/incidents?checkId=r{n}&status=resolved"));
        let incident = eventually(60, "the incident to be repaired", || async {
            let page = client.get(&url).await.expect_ok(200);
            page["items"].as_array().unwrap().first().cloned()
        })
        .await;
        assert_eq!(incident["autoRecovered"], true, "{incident}");
        recovered.push(
            (at(&incident["resolvedAt"]) - at(&incident["openedAt"])).as_seconds_f64() * 1000.0,
        );
    }
    recovered.sort_by(f64::total_cmp);
    let (median, max) = (
        recovered[recovered.len() / 2],
        recovered[recovered.len() - 1],
    );
    println!(
        "  time to recover with a `wait` stage of {wait_ms} ms, 8 incidents: median {median:.0} ms, max {max:.0} ms (first opened {})",
        opened["openedAt"]
    );
    listener.abort();
    report.add(
        Figure::new(
            format!(
                "time to recover, a `wait` stage of {} ms, 8 incidents",
                report::thousands(f64::from(wait_ms))
            ),
            format!(
                "{} ms median, max {} ms",
                report::thousands(median),
                report::thousands(max)
            ),
        )
        .against(
            format!(
                "the floor: the stage's {} ms wait, then one probe",
                report::thousands(f64::from(wait_ms))
            ),
            median / f64::from(wait_ms),
        )
        .limit("the stage's wait; what is over it is the probe that sees the target back"),
    );
    report.finish();
}

/// Registers a tcp check of `port`.
async fn register(client: &Client, host: &Host, id: &str, port: u16, stages: &[Value]) {
    client
        .post_json(
            &host.url("/health-checks"),
            &json!({
                "id": id, "name": id, "type": "tcp", "interval": INTERVAL_MS, "timeout": 500,
                "threshold": THRESHOLD, "target": {"host": "127.0.0.1", "port": port},
                "recovery": stages
            })
            .to_string(),
        )
        .await
        .expect_ok(201);
}

/// A listener on a free port that accepts and closes connections.
async fn listen() -> (u16, tokio::task::JoinHandle<()>) {
    listen_on(0).await
}

async fn listen_on(port: u16) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            if let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        }
    });
    (port, task)
}

/// Every incident, walking the pages.
async fn all_incidents(client: &Client, host: &Host) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => host.url(&format!("/incidents?limit=500&cursor={c}")),
            None => host.url("/incidents?limit=500"),
        };
        let page = client.get(&url).await.expect_ok(200);
        all.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return all,
        }
    }
}

fn at(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().unwrap(), &Rfc3339).unwrap()
}

/// Plugin calls made so far.
async fn plugin_calls(client: &Client, host: &Host) -> f64 {
    let metrics = client.get(&host.url("/metrics")).await.expect_ok(200);
    metrics["plugins"]["calls"].as_f64().unwrap()
}
