//! Event-to-delivery latency of alerts, per channel, to local receivers:
//! aiosmtpd for email and local HTTP servers for Slack, the SMS gateway and
//! PagerDuty (the same receivers as the alert tests).
//!
//! `ALERTS` (default 100) critical TCP checks against closed ports open one
//! incident each; each incident's alert pages Admin on all four channels.
//! The latency of a delivery is from its incident's `openedAt` to the
//! receiver's answer (its sent attempt's `at` plus `latencyMs`). Then the
//! SMTP server stops and `ALERTS` more incidents open: the other channels'
//! latency with email dead.
//!
//! Run with `cargo xtask build && cargo bench -p autoagent-tests --bench alert_latency`
//! (needs `python3 -m aiosmtpd`, which `cargo xtask test` installs).

use std::collections::BTreeMap;
use std::time::Duration;

use autoagent_tests::report::{Figure, Report};
use autoagent_tests::{Client, Host, Value, eventually, json, setting};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[path = "../tests/support/alerting.rs"]
mod alerting;

use alerting::{Receivers, Smtp, env, free_port, write_config};

fn config(smtp_port: u16, origin: &str) -> String {
    format!(
        r#"
[delivery]
backoff-ms = 500
max-backoff-ms = 2000
max-attempts = 3

[channels.email]
host = "127.0.0.1"
port = {smtp_port}
security = "plain"
from = "AutoAgent <alerts@autoagent.test>"
timeout-ms = 2000

[channels.slack]
[channels.sms]
url = "{origin}/sms"
body-template = '{{"to": "{{{{to}}}}", "text": "{{{{text}}}}"}}'

[channels.pagerduty]
base-url = "{origin}/pd"

[groups.Admin]
email = ["admin@example.com"]
sms = ["+821012345678"]
slack = ["{origin}/slack/admin"]
pagerduty = ["AA_TEST_PD_KEY"]
"#
    )
}

fn rules() -> Value {
    let rule = |severity: &str| {
        json!({"severity": severity, "description": "bench",
               "channels": ["email", "sms", "slack", "pagerduty"], "recipients": ["Admin"],
               "escalation": [], "waitForRecovery": false})
    };
    json!({"rules": [rule("critical"), rule("high"), rule("medium")]})
}

fn at(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().unwrap(), &Rfc3339).unwrap()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Opens `n` incidents (checks `{prefix}NNN`) and returns, per channel, the
/// latencies (ms) of the deliveries that were sent, and how many were not.
async fn run(
    client: &Client,
    host: &Host,
    prefix: &str,
    n: usize,
    channels: &[&str],
) -> BTreeMap<String, (Vec<f64>, usize)> {
    for i in 0..n {
        let body = json!({
            "id": format!("{prefix}{i:04}"), "name": "bench", "type": "tcp", "team": "ops",
            "severity": "critical", "interval": 1000, "timeout": 200, "threshold": 1,
            "target": {"host": "127.0.0.1", "port": free_port()}
        });
        client
            .post_json(&host.url("/health-checks"), &body.to_string())
            .await
            .expect_ok(201);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let alerts: Vec<Value> = eventually(120, "every alert raised", || async {
        let mut all = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = client
                .get(&host.url(&format!("/alerts?limit=500{cursor}")))
                .await
                .expect_ok(200);
            all.extend(
                page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|a| a["checkId"].as_str().is_some_and(|c| c.starts_with(prefix)))
                    .cloned(),
            );
            match page["nextCursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break,
            }
        }
        (all.len() >= n).then_some(all)
    })
    .await;
    let mut by_channel: BTreeMap<String, (Vec<f64>, usize)> = BTreeMap::new();
    for alert in &alerts {
        let id = alert["id"].as_str().unwrap();
        let incident = client
            .get(&host.url(&format!(
                "/incidents/{}",
                alert["sourceId"].as_str().unwrap()
            )))
            .await
            .expect_ok(200);
        let opened = at(&incident["openedAt"]);
        let deliveries: Vec<Value> = eventually(120, "the alert's channels to settle", || async {
            let detail = client
                .get(&host.url(&format!("/alerts/{id}")))
                .await
                .expect_ok(200);
            let deliveries = detail["deliveries"].as_array().unwrap().clone();
            let settled = channels.iter().all(|c| {
                deliveries
                    .iter()
                    .any(|d| d["channel"] == *c && d["status"] == "sent")
            });
            settled.then_some(deliveries)
        })
        .await;
        for delivery in deliveries {
            let entry = by_channel
                .entry(delivery["channel"].as_str().unwrap().to_owned())
                .or_default();
            let sent = delivery["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["status"] == "sent");
            match sent {
                Some(attempt) => {
                    let answered = at(&attempt["at"])
                        + Duration::from_millis(attempt["latencyMs"].as_u64().unwrap());
                    entry.0.push((answered - opened).as_seconds_f64() * 1000.0);
                }
                None => entry.1 += 1,
            }
        }
    }
    by_channel
}

/// p50, p99 and max (ms) of a channel's sent deliveries; `None` when none
/// was sent.
fn summary(latencies: &[f64]) -> Option<(f64, f64, f64)> {
    let mut sorted = latencies.to_vec();
    sorted.sort_by(f64::total_cmp);
    let max = *sorted.last()?;
    Some((quantile(&sorted, 0.5), quantile(&sorted, 0.99), max))
}

fn print_latencies(what: &str, results: &BTreeMap<String, (Vec<f64>, usize)>) {
    for (channel, (latencies, unsent)) in results {
        let Some((p50, p99, max)) = summary(latencies) else {
            println!("alert latency ({what}): {channel}: none sent, {unsent} not delivered");
            continue;
        };
        println!(
            "alert latency ({what}): {channel}: {} sent, p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; {unsent} not delivered",
            latencies.len(),
        );
    }
}

/// One row per channel with every channel up, and one per channel with
/// email dead compared with the same channel up. There is no numeric
/// target (issue: report the latency per channel).
fn add_figures(
    report: &mut Report,
    up: &BTreeMap<String, (Vec<f64>, usize)>,
    dead: &BTreeMap<String, (Vec<f64>, usize)>,
) {
    // Times have millisecond resolution (the attempt's `at` and
    // `latencyMs`): whole milliseconds are all there is to say.
    let text = |(p50, p99, max): (f64, f64, f64)| {
        format!("{p50:.0} ms p50, {p99:.0} ms p99, max {max:.0} ms")
    };
    // Unsent deliveries are read when the other channels have settled:
    // some may still be retrying, so they are counted, not called failed.
    let not_sent = |unsent: usize| format!("none delivered ({unsent} unsent)");
    for (channel, (latencies, unsent)) in up {
        let ours = match summary(latencies) {
            Some(stats) if *unsent == 0 => text(stats),
            Some(stats) => format!("{}; {unsent} unsent", text(stats)),
            None => not_sent(*unsent),
        };
        report.add(
            Figure::new(format!("{}, event to delivery", label(channel)), ours)
                .limit(limit(channel)),
        );
    }
    for (channel, (latencies, unsent)) in dead {
        let figure = format!("{}, while email is dead", label(channel));
        let (Some(dead_stats), Some(up_stats)) = (
            summary(latencies),
            up.get(channel).and_then(|(l, _)| summary(l)),
        ) else {
            report.add(
                Figure::new(figure, not_sent(*unsent))
                    .limit("the SMTP server is stopped: each delivery retries, then fails"),
            );
            continue;
        };
        report.add(
            Figure::new(figure, text(dead_stats))
                .against(
                    format!(
                        "the same channel, email up (ratio of p99s): {}",
                        text(up_stats)
                    ),
                    dead_stats.1 / up_stats.1,
                )
                .limit(
                    "each send waits only for its own channel's slots: a dead channel \
                     costs the others nothing",
                ),
        );
    }
}

/// The channel's name in the report.
fn label(channel: &str) -> &str {
    match channel {
        "email" => "Email (SMTP)",
        "slack" => "Slack",
        "sms" => "SMS gateway",
        "pagerduty" => "PagerDuty",
        other => other,
    }
}

/// What a channel's latency is made of, as far as it is known.
fn limit(channel: &str) -> &'static str {
    match channel {
        "email" => {
            "one SMTP conversation per message (connect, EHLO, MAIL, RCPT, DATA, QUIT) \
             with a Python server; maybe Linux's 40 ms delayed ACK without `TCP_NODELAY` \
             (not yet looked into)"
        }
        _ => {
            "incident event → alert core → outbox → one HTTP request to a local axum \
             receiver; millisecond timestamps"
        }
    }
}

#[tokio::main]
async fn main() {
    let n = setting("ALERTS", 100);
    let smtp_port = free_port();
    let smtp = Smtp::start(smtp_port);
    let (_receivers, origin) = Receivers::start().await;
    let (_dir, path) = write_config(&config(smtp_port, &origin));
    let host = Host::start_with_args_and_env(&["--alerts-config", &path], &env());
    let client = Client::new();
    client
        .send(
            "PUT",
            &host.url("/alert-rules"),
            Some(("application/json", rules().to_string().into_bytes())),
            &[],
        )
        .await
        .expect_ok(200);

    let all = ["email", "slack", "sms", "pagerduty"];
    let up = run(&client, &host, "up", n, &all).await;
    print_latencies("every channel up", &up);

    drop(smtp);
    let dead = run(&client, &host, "dead", n, &["slack", "sms", "pagerduty"]).await;
    print_latencies("email dead", &dead);

    let mut report = Report::new(
        "alert_latency",
        "Alerts: event-to-delivery latency per channel",
    );
    add_figures(&mut report, &up, &dead);
    report.finish();
}
