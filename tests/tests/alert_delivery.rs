//! Alert delivery against real receivers: aiosmtpd (a real SMTP server,
//! installed by `cargo xtask test`) writing a maildir, and local HTTP
//! servers standing for Slack's webhooks, an SMS gateway and PagerDuty's
//! Events API. Notices are queued through `POST /alert-channels/test`, the
//! outbox's own path.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autoagent_tests::{Client, Host, Value, eventually, json};

#[path = "support/alerting.rs"]
mod alerting;

use alerting::{
    ROUTING_KEY, Receivers, SMS_TOKEN, SMTP_PASSWORD, Smtp, env, free_port, write_config,
};

/// An alerts file for the receivers; `delivery` is the `[delivery]` table's
/// body, `sms_url` the gateway.
fn config(smtp_port: u16, origin: &str, sms_url: &str, delivery: &str) -> String {
    format!(
        r#"
[delivery]
{delivery}

[channels.email]
host = "127.0.0.1"
port = {smtp_port}
security = "plain"
from = "AutoAgent <alerts@autoagent.test>"
timeout-ms = 3000

[channels.slack]
timeout-ms = 3000

[channels.sms]
url = "{sms_url}"
auth-header = "X-Api-Key"
auth-env = "AA_TEST_SMS_TOKEN"
body-template = '{{"recipient": "{{{{to}}}}", "message": "{{{{text}}}}", "sender": "AutoAgent"}}'

[channels.pagerduty]
base-url = "{origin}/pd"

[groups.Admin]
email = ["admin@example.com"]
sms = ["+821012345678"]
slack = ["{origin}/slack/T000/B000/XXXXsecretXXXX"]
pagerduty = ["AA_TEST_PD_KEY"]

[groups."Ops team"]
email = ["ops@example.com"]
slack = ["{origin}/slack/ops"]
"#
    )
}

fn start_host(config_path: &str) -> Host {
    Host::start_with_args_and_env(&["--alerts-config", config_path], &env())
}

async fn queue_test(host: &Host, body: Value) -> Value {
    Client::new()
        .post_json(&host.url("/alert-channels/test"), &body.to_string())
        .await
        .expect_ok(202)
}

async fn deliveries(host: &Host, alert_id: &str) -> Vec<Value> {
    let page = Client::new()
        .get(&host.url(&format!("/alert-deliveries?alertId={alert_id}")))
        .await
        .expect_ok(200);
    page["items"].as_array().cloned().unwrap_or_default()
}

/// Waits until every delivery of the alert is final; returns them.
async fn settled(host: &Host, alert_id: &str, seconds: u64) -> Vec<Value> {
    eventually(
        seconds,
        &format!("the deliveries of {alert_id} to settle"),
        || async {
            let items = deliveries(host, alert_id).await;
            (!items.is_empty()
                && items.iter().all(|d| {
                    ["sent", "failed", "skipped"].contains(&d["status"].as_str().unwrap_or(""))
                }))
            .then_some(items)
        },
    )
    .await
}

fn of_channel<'a>(items: &'a [Value], channel: &str) -> &'a Value {
    items
        .iter()
        .find(|d| d["channel"] == channel)
        .unwrap_or_else(|| panic!("no {channel} delivery in {items:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_channel_receives_its_protocols_payload_and_no_secret_is_shown() {
    let (receivers, origin) = Receivers::start().await;
    let smtp_port = free_port();
    let smtp = Smtp::start(smtp_port);
    let (_dir, path) = write_config(&config(
        smtp_port,
        &origin,
        &format!("{origin}/sms"),
        "group-window-ms = 500",
    ));
    let host = start_host(&path);
    let queued = queue_test(&host, json!({"group": "Admin", "severity": "critical"})).await;
    let alert_id = queued["alertId"].as_str().unwrap().to_owned();
    assert_eq!(queued["keys"].as_array().unwrap().len(), 4, "{queued}");

    let items = settled(&host, &alert_id, 20).await;
    for channel in ["email", "slack", "sms", "pagerduty"] {
        let delivery = of_channel(&items, channel);
        assert_eq!(delivery["status"], "sent", "{delivery}");
        assert_eq!(delivery["attemptsMade"], 1);
        assert_eq!(delivery["attempts"][0]["status"], "sent");
        assert!(delivery["attempts"][0]["latencyMs"].is_u64());
    }
    assert_eq!(
        of_channel(&items, "pagerduty")["attempts"][0]["httpStatus"],
        202
    );

    // Email: subject, recipient, body.
    let mails = eventually(10, "the mail", || async {
        let mails = smtp.messages();
        (!mails.is_empty()).then_some(mails)
    })
    .await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert!(
        mail.contains(&format!("Subject: [CRITICAL] Test alert {alert_id}")),
        "{mail}"
    );
    assert!(mail.contains("To: admin@example.com"), "{mail}");
    assert!(mail.contains("X-RcptTo: admin@example.com"), "{mail}");
    assert!(
        mail.contains("From: AutoAgent <alerts@autoagent.test>"),
        "{mail}"
    );
    assert!(mail.contains("Message-ID: <"), "{mail}");
    assert!(mail.contains("A test of the alert channels"), "{mail}");

    // Slack: text and blocks.
    let slack = receivers.at("/slack/T000/B000/XXXXsecretXXXX");
    assert_eq!(slack.len(), 1);
    let body = &slack[0].body;
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .starts_with("[CRITICAL] Test alert"),
        "{body}"
    );
    assert_eq!(body["blocks"][0]["type"], "section");
    assert!(
        body["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .contains(&alert_id)
    );

    // SMS: the template, filled, with the auth header.
    let sms = receivers.at("/sms");
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].headers["x-api-key"], SMS_TOKEN);
    assert_eq!(sms[0].body["recipient"], "+821012345678");
    assert_eq!(sms[0].body["sender"], "AutoAgent");
    let text = sms[0].body["message"].as_str().unwrap();
    assert!(
        text.starts_with("[CRITICAL] Test alert") && text.chars().count() <= 160,
        "{text}"
    );

    // PagerDuty: a trigger with the routing key and dedup key.
    let pd = receivers.at("/pd/v2/enqueue");
    assert_eq!(pd.len(), 1);
    let event = &pd[0].body;
    assert_eq!(event["routing_key"], ROUTING_KEY);
    assert_eq!(event["event_action"], "trigger");
    assert_eq!(event["dedup_key"], alert_id.as_str());
    assert_eq!(event["payload"]["severity"], "critical");
    assert_eq!(event["payload"]["source"], "autoagent:test");
    assert!(
        event["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains(&alert_id)
    );

    // Neither the channel view nor the deliveries show a secret.
    let client = Client::new();
    let view = client.get(&host.url("/alert-channels")).await;
    let deliveries_text = client
        .get(&host.url(&format!("/alert-deliveries?alertId={alert_id}")))
        .await
        .text;
    for shown in [&view.text, &deliveries_text] {
        for secret in [
            ROUTING_KEY,
            SMS_TOKEN,
            SMTP_PASSWORD,
            "XXXXsecretXXXX",
            "admin@example.com",
        ] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
    }
    let view = view.expect_ok(200);
    assert_eq!(view["email"]["host"], "127.0.0.1");
    let admin = view["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "Admin")
        .unwrap();
    assert_eq!(admin["email"], json!(["a***@example.com"]));
    assert_eq!(admin["pagerduty"], 1);

    // Metrics: one sent attempt per channel, four latencies.
    let metrics = client
        .get(&host.url("/metrics?format=prometheus"))
        .await
        .text;
    assert!(
        metrics.contains(r#"autoagent_alert_deliveries_total{channel="email",outcome="sent"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("autoagent_alert_delivery_latency_seconds_count 4"),
        "{metrics}"
    );
    let log = host.log_containing(&["alert delivered", &alert_id]).await;
    assert!(
        log.contains("channel=pagerduty"),
        "log lines name the channel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_retried_after_that_time() {
    let (receivers, origin) = Receivers::start().await;
    let slack_path = "/slack/T000/B000/XXXXsecretXXXX";
    receivers.script(slack_path, &[(429, Some("2"))]);
    let (_dir, path) = write_config(&config(
        free_port(),
        &origin,
        &format!("{origin}/sms"),
        "backoff-ms = 100\nmax-attempts = 4",
    ));
    let host = start_host(&path);
    let queued = queue_test(&host, json!({"group": "Admin", "channels": ["slack"]})).await;
    let alert_id = queued["alertId"].as_str().unwrap();
    let items = settled(&host, alert_id, 20).await;
    let slack = of_channel(&items, "slack");
    assert_eq!(slack["status"], "sent", "{slack}");
    assert_eq!(slack["attemptsMade"], 2);
    let attempts = slack["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["status"], "failed");
    assert_eq!(attempts[0]["httpStatus"], 429);
    assert!(attempts[0]["error"].as_str().unwrap().contains("429"));
    assert_eq!(attempts[1]["status"], "sent");
    let got = receivers.at(slack_path);
    assert_eq!(got.len(), 2);
    let waited = got[1].at - got[0].at;
    assert!(
        waited >= Duration::from_millis(1900),
        "retried after {waited:?}, not after Retry-After's 2 s (backoff was 100 ms)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_channel_delays_no_other_and_is_failed_after_its_attempts() {
    let (receivers, origin) = Receivers::start().await;
    // The SMS gateway takes connections and never answers.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole = black_hole.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = black_hole.accept().await {
            held.push(socket);
        }
    });
    let smtp_port = free_port();
    let smtp = Smtp::start(smtp_port);
    let text = config(
        smtp_port,
        &origin,
        &format!("http://{hole}/send"),
        "backoff-ms = 200\nmax-attempts = 3\nconcurrency = 1",
    )
    .replace(
        "[channels.sms]\nurl",
        "[channels.sms]\ntimeout-ms = 700\nurl",
    );
    let (_dir, path) = write_config(&text);
    let host = start_host(&path);
    let started = Instant::now();
    // Two alerts: the second's SMS waits for the first's (one send at a
    // time on the channel), the other channels wait for nothing.
    let first = queue_test(&host, json!({"group": "Admin"})).await;
    let second = queue_test(&host, json!({"group": "Admin"})).await;
    for queued in [&first, &second] {
        let alert_id = queued["alertId"].as_str().unwrap().to_owned();
        eventually(5, "the live channels", || async {
            let items = deliveries(&host, &alert_id).await;
            ["email", "slack", "pagerduty"]
                .iter()
                .all(|c| {
                    items
                        .iter()
                        .any(|d| d["channel"] == *c && d["status"] == "sent")
                })
                .then_some(())
        })
        .await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the live channels took {:?} next to a dead one",
        started.elapsed()
    );
    assert_eq!(receivers.accepted_at("/pd/v2/enqueue").len(), 2);
    eventually(10, "both mails", || async {
        (smtp.messages().len() == 2).then_some(())
    })
    .await;

    let alert_id = first["alertId"].as_str().unwrap();
    let items = settled(&host, alert_id, 30).await;
    let sms = of_channel(&items, "sms");
    assert_eq!(sms["status"], "failed", "{sms}");
    assert_eq!(sms["attemptsMade"], 3);
    for attempt in sms["attempts"].as_array().unwrap() {
        assert_eq!(attempt["status"], "failed");
        assert!(
            attempt["error"].as_str().unwrap().contains("timed out"),
            "{attempt}"
        );
    }
    let metrics = Client::new()
        .get(&host.url("/metrics"))
        .await
        .expect_ok(200);
    assert!(
        metrics["alertDeliveries"]["channels"]["sms"]["failed"]
            .as_u64()
            .unwrap()
            >= 3
    );
    host.log_containing(&["alert delivery failed; giving up", "channel=sms"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_high_notices_for_one_team_go_out_as_one_message() {
    let (receivers, origin) = Receivers::start().await;
    let smtp_port = free_port();
    let smtp = Smtp::start(smtp_port);
    let (_dir, path) = write_config(&config(
        smtp_port,
        &origin,
        &format!("{origin}/sms"),
        "group-window-ms = 1500",
    ));
    let host = start_host(&path);
    let body = json!({"group": "Ops team", "channels": ["email", "slack"], "severity": "high"});
    let first = queue_test(&host, body.clone()).await;
    let second = queue_test(&host, body).await;
    let (a, b) = (
        first["alertId"].as_str().unwrap(),
        second["alertId"].as_str().unwrap(),
    );
    let items_a = settled(&host, a, 20).await;
    let items_b = settled(&host, b, 20).await;
    for channel in ["email", "slack"] {
        let (da, db) = (of_channel(&items_a, channel), of_channel(&items_b, channel));
        assert_eq!(da["status"], "sent");
        assert_eq!(
            da["attempts"][0]["sendId"], db["attempts"][0]["sendId"],
            "one send carried both"
        );
        assert_eq!(da["attempts"][0]["grouped"], 2);
    }
    let slack = receivers.at("/slack/ops");
    assert_eq!(slack.len(), 1, "one Slack message for both");
    let text = slack[0].body.to_string();
    assert!(text.contains(a) && text.contains(b), "{text}");
    assert!(
        slack[0].body["text"]
            .as_str()
            .unwrap()
            .starts_with("[HIGH] 2 alerts for team default")
    );
    eventually(10, "the mail", || async {
        (!smtp.messages().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "one mail for both");
    assert!(
        mails[0].contains("Subject: [HIGH] 2 alerts for team default"),
        "{}",
        mails[0]
    );
    assert!(mails[0].contains(a) && mails[0].contains(b));
    // Critical is not held back by the window.
    let started = Instant::now();
    let critical = queue_test(&host, json!({"group": "Ops team", "channels": ["slack"]})).await;
    settled(&host, critical["alertId"].as_str().unwrap(), 5).await;
    assert!(started.elapsed() < Duration::from_millis(1400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_queued_before_kill_9_is_delivered_after_restart_once_per_receiver() {
    let (receivers, origin) = Receivers::start().await;
    *receivers.down.lock().unwrap() = true;
    // Nothing listens on the SMTP port until after the crash.
    let smtp_port = free_port();
    let (_dir, path) = write_config(&config(
        smtp_port,
        &origin,
        &format!("{origin}/sms"),
        "backoff-ms = 300\nmax-backoff-ms = 600",
    ));
    let mut host = start_host(&path);
    let queued = queue_test(&host, json!({"group": "Admin"})).await;
    let alert_id = queued["alertId"].as_str().unwrap().to_owned();
    eventually(10, "a failed attempt on every channel", || async {
        let items = deliveries(&host, &alert_id).await;
        (items.len() == 4
            && items
                .iter()
                .all(|d| d["attemptsMade"].as_u64().unwrap_or(0) >= 1))
        .then_some(())
    })
    .await;
    host.kill9();
    *receivers.down.lock().unwrap() = false;
    let smtp = Smtp::start(smtp_port);
    host.restart();
    let items = settled(&host, &alert_id, 20).await;
    assert!(items.iter().all(|d| d["status"] == "sent"), "{items:?}");
    // Give a duplicate every chance to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for path in ["/slack/T000/B000/XXXXsecretXXXX", "/sms", "/pd/v2/enqueue"] {
        assert_eq!(receivers.accepted_at(path).len(), 1, "{path} took it once");
    }
    assert_eq!(smtp.messages().len(), 1, "one mail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_under_way_reads_sending_and_a_kill_9_during_it_records_it_interrupted() {
    let (_receivers, origin) = Receivers::start().await;
    // An SMTP port that takes the connection and never says a word: the
    // first attempt stays under way for the channel's 3 s time limit.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let smtp_port = silent.local_addr().unwrap().port();
    let (_dir, path) = write_config(&config(
        smtp_port,
        &origin,
        &format!("{origin}/sms"),
        "backoff-ms = 300",
    ));
    let mut host = start_host(&path);
    let queued = queue_test(&host, json!({"group": "Admin", "channels": ["email"]})).await;
    let alert_id = queued["alertId"].as_str().unwrap().to_owned();
    let under_way = eventually(5, "the first attempt under way", || async {
        let items = deliveries(&host, &alert_id).await;
        items.into_iter().find(|d| d["attemptsMade"] == 1)
    })
    .await;
    assert_eq!(under_way["status"], "sending", "{under_way}");
    assert_eq!(under_way["attempts"][0]["status"], "sending", "{under_way}");

    host.kill9();
    drop(silent);
    let smtp = Smtp::start(smtp_port);
    host.restart();
    let items = settled(&host, &alert_id, 20).await;
    let email = of_channel(&items, "email");
    assert_eq!(email["status"], "sent", "{email}");
    assert_eq!(email["attemptsMade"], 2, "{email}");
    let attempts = email["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["status"], "interrupted", "{email}");
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("the host stopped"),
        "{email}"
    );
    assert_eq!(attempts[1]["status"], "sent", "{email}");
    assert_eq!(smtp.messages().len(), 1, "one mail");
}

/// Runs `autoagent serve` with an alerts file and returns its exit code
/// and standard error.
fn refused(config_text: &str) -> (Option<i32>, String) {
    let (dir, path) = write_config(config_text);
    let output = Command::new(autoagent_tests::binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .args(["--alerts-config", &path])
        .envs(env())
        .stdout(Stdio::null())
        .output()
        .expect("running autoagent");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_bad_alerts_file_stops_the_start_naming_the_key() {
    let good = config(2525, "http://127.0.0.1:9", "http://127.0.0.1:9/sms", "");
    let cases = [
        (
            good.replace("security = \"plain\"", "security = \"plain\"\nhots = \"x\""),
            "channels.email.hots: unknown field `hots`",
        ),
        (
            good.replace("AA_TEST_PD_KEY", "AA_TEST_NOT_SET"),
            "groups.Admin.pagerduty[0]",
        ),
        (
            good.replace("max-attempts", "x")
                .replace("[delivery]", "[delivery]\nmax-attempts = 0"),
            "delivery.max-attempts",
        ),
    ];
    for (text, key) in cases {
        let (code, stderr) = refused(&text);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(key), "{stderr:?} should name {key}");
        assert!(
            stderr.contains("alerts.toml"),
            "{stderr:?} should name the file"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_alerts_file_deliveries_are_skipped_with_the_reason() {
    let host = Host::start();
    let queued = queue_test(&host, json!({"group": "Admin", "channels": ["email"]})).await;
    let items = settled(&host, queued["alertId"].as_str().unwrap(), 10).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["status"], "skipped");
    assert!(
        items[0]["error"]
            .as_str()
            .unwrap()
            .contains("--alerts-config")
    );
    let code = Client::new()
        .post_json(&host.url("/alert-channels/test"), r#"{"group": "Nobody"}"#)
        .await
        .expect_error(422);
    assert_eq!(code, "invalid_request");
}
