//! Alerts end to end: failing TCP health checks open incidents, the alert
//! core raises, holds, escalates and resolves alerts, and the notices reach
//! real receivers (aiosmtpd for mail, local HTTP servers for Slack, the SMS
//! gateway and PagerDuty). Escalation times are scaled down through
//! `PUT /alert-rules`.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use autoagent_tests::{Client, Host, Value, eventually, json};

#[path = "support/alerting.rs"]
mod alerting;

use alerting::{Receivers, Smtp, env, free_port, write_config};

/// Escalation wait of critical alerts in these tests.
const CRITICAL_ESCALATION_MS: u64 = 1500;

/// An alerts file: every guide group, each with its own Slack path and
/// mailbox; Admin and OnCall on PagerDuty; short retries and grouping.
fn config(smtp_port: u16, origin: &str) -> String {
    format!(
        r#"
[delivery]
backoff-ms = 200
max-backoff-ms = 400
group-window-ms = 200
link-base = "http://aa.example:50000"

[channels.email]
host = "127.0.0.1"
port = {smtp_port}
security = "plain"
from = "AutoAgent <alerts@autoagent.test>"
timeout-ms = 2000

[channels.slack]
timeout-ms = 2000

[channels.sms]
url = "{origin}/sms"
auth-header = "X-Api-Key"
auth-env = "AA_TEST_SMS_TOKEN"
body-template = '{{"to": "{{{{to}}}}", "text": "{{{{text}}}}"}}'

[channels.pagerduty]
base-url = "{origin}/pd"

[groups.Admin]
email = ["admin@example.com"]
sms = ["+821012345678"]
slack = ["{origin}/slack/admin"]
pagerduty = ["AA_TEST_PD_KEY"]

[groups.Manager]
email = ["manager@example.com"]
slack = ["{origin}/slack/manager"]

[groups.OnCall]
sms = ["+821099999999"]
slack = ["{origin}/slack/oncall"]
pagerduty = ["AA_TEST_PD_KEY"]

[groups."Ops team"]
email = ["ops@example.com"]
slack = ["{origin}/slack/ops"]

[groups."Dev team"]
slack = ["{origin}/slack/dev"]
"#
    )
}

/// Rules with the guide's channels, scaled: critical escalates to the Ops
/// team after 1.5 s; high waits for recovery and escalates after 6 s.
fn rules() -> Value {
    json!({"rules": [
        {"severity": "critical", "description": "service down, data loss",
         "channels": ["email", "sms", "slack", "pagerduty"], "recipients": ["Admin"],
         "escalation": [{"afterMs": CRITICAL_ESCALATION_MS, "channels": ["slack", "email"], "recipients": ["Ops team"]}],
         "waitForRecovery": false},
        {"severity": "high", "description": "performance degradation",
         "channels": ["email", "slack"], "recipients": ["Admin", "Manager"],
         "escalation": [{"afterMs": 6000, "channels": ["slack"], "recipients": ["OnCall"]}],
         "waitForRecovery": true},
        {"severity": "medium", "description": "warning threshold exceeded",
         "channels": ["email", "slack"], "recipients": ["Admin"],
         "escalation": [{"afterMs": 6000, "channels": ["slack"], "recipients": ["Manager"]}],
         "waitForRecovery": true}
    ]})
}

struct Setup {
    host: Host,
    receivers: Receivers,
    client: Client,
    _config: tempfile::TempDir,
}

/// A host with the alerts file and the scaled rules; `smtp_port` may have
/// no server behind it.
async fn setup(smtp_port: u16) -> Setup {
    let (receivers, origin) = Receivers::start().await;
    let (dir, path) = write_config(&config(smtp_port, &origin));
    let host = Host::start_with_args_and_env(&["--alerts-config", &path], &env());
    let client = Client::new();
    let body = rules().to_string().into_bytes();
    client
        .send(
            "PUT",
            &host.url("/alert-rules"),
            Some(("application/json", body)),
            &[],
        )
        .await
        .expect_ok(200);
    Setup {
        host,
        receivers,
        client,
        _config: dir,
    }
}

/// Registers a TCP check of team `ops` on `port` (nothing listens there
/// unless the test binds it).
async fn tcp_check(setup: &Setup, id: &str, severity: &str, port: u16, extra: Value) {
    let mut body = json!({
        "id": id, "name": format!("{id} service"), "type": "tcp", "team": "ops",
        "severity": severity, "interval": 200, "timeout": 200, "threshold": 2,
        "target": {"host": "127.0.0.1", "port": port}
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            body.insert(k.clone(), v.clone());
        }
    }
    setup
        .client
        .post_json(&setup.host.url("/health-checks"), &body.to_string())
        .await
        .expect_ok(201);
}

/// The alerts of check `id` (through its incidents), waiting until one is
/// in `status`.
async fn alert_of(setup: &Setup, check: &str, status: &str) -> Value {
    eventually(20, &format!("a {status} alert of {check}"), || async {
        let page = setup
            .client
            .get(&setup.host.url(&format!("/alerts?status={status}")))
            .await
            .expect_ok(200);
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["checkId"] == check)
            .cloned()
    })
    .await
}

async fn alert(setup: &Setup, id: &str) -> Value {
    setup
        .client
        .get(&setup.host.url(&format!("/alerts/{id}")))
        .await
        .expect_ok(200)
}

/// The error's message, once its status is `status` (in the envelope).
fn refused(reply: autoagent_tests::Reply, status: u16) -> String {
    reply.expect_error(status);
    reply.json["error"]["message"].as_str().unwrap().to_owned()
}

async fn post(setup: &Setup, path: &str, body: Value) -> autoagent_tests::Reply {
    setup
        .client
        .post_json(&setup.host.url(path), &body.to_string())
        .await
}

/// PagerDuty events received with `action` for `dedup_key`.
fn pd_events(receivers: &Receivers, action: &str, dedup_key: &str) -> Vec<Value> {
    receivers
        .accepted_at("/pd/v2/enqueue")
        .into_iter()
        .map(|r| r.body)
        .filter(|b| b["event_action"] == action && b["dedup_key"] == dedup_key)
        .collect()
}

async fn wait_for_posts(receivers: &Receivers, path: &str, n: usize, seconds: u64) {
    eventually(
        seconds,
        &format!("{n} accepted posts at {path}"),
        || async { (receivers.accepted_at(path).len() >= n).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_incident_pages_every_channel_escalates_unacknowledged_and_resolves_on_pagerduty()
 {
    let smtp_port = free_port();
    let smtp = Smtp::start(smtp_port);
    let setup = setup(smtp_port).await;
    let port = free_port();
    tcp_check(&setup, "web", "critical", port, json!({})).await;

    let firing = alert_of(&setup, "web", "firing").await;
    let alert_id = firing["id"].as_str().unwrap().to_owned();
    let incident_id = firing["sourceId"].as_str().unwrap().to_owned();
    assert!(alert_id.starts_with("alert_"), "{firing}");
    assert_eq!(firing["sourceKind"], "incident");
    assert!(incident_id.starts_with("incident_"));
    assert_eq!(firing["severity"], "critical");

    // PagerDuty: a trigger deduplicated on the incident.
    let receivers = &setup.receivers;
    eventually(10, "a PagerDuty trigger", || async {
        (!pd_events(receivers, "trigger", &incident_id).is_empty()).then_some(())
    })
    .await;
    let trigger = &pd_events(receivers, "trigger", &incident_id)[0];
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["source"], "check:web");
    assert!(
        trigger["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("web service"),
        "{trigger}"
    );
    // Slack: the Admin webhook, with a link to the incident.
    wait_for_posts(receivers, "/slack/admin", 1, 10).await;
    let slack = receivers.accepted_at("/slack/admin")[0].body.to_string();
    assert!(
        slack.contains(&format!(
            "http://aa.example:50000/api/autoagents-management/v1/incidents/{incident_id}"
        )),
        "{slack}"
    );
    // SMS: the gateway got the Admin number.
    wait_for_posts(receivers, "/sms", 1, 10).await;
    let sms = &receivers.accepted_at("/sms")[0];
    assert_eq!(sms.body["to"], "+821012345678");
    assert!(sms.body["text"].as_str().unwrap().contains("CRITICAL"));
    // Mail: subject, recipient, a body naming the incident.
    let mail = eventually(10, "the mail to Admin", || async {
        smtp.messages()
            .into_iter()
            .find(|m| m.contains("admin@example.com"))
    })
    .await;
    assert!(mail.contains("Subject: [CRITICAL]"), "{mail}");
    assert!(mail.contains(&incident_id), "{mail}");
    assert!(
        receivers.accepted_at("/slack/ops").is_empty(),
        "no escalation yet"
    );

    // Nobody acknowledges: step 1 reaches the Ops team after its wait.
    let triggered_at = receivers.accepted_at("/slack/admin")[0].at;
    wait_for_posts(receivers, "/slack/ops", 1, 15).await;
    let waited = receivers.accepted_at("/slack/ops")[0].at - triggered_at;
    assert!(
        waited >= Duration::from_millis(CRITICAL_ESCALATION_MS - 100),
        "escalated after {waited:?}"
    );
    // The receiver has the post; the outbox records it sent once the
    // receiver's answer is back.
    let escalation = format!("{alert_id}/escalation/1");
    let detail = eventually(10, "the escalation's Slack delivery recorded", || async {
        let detail = alert(&setup, &alert_id).await;
        let recorded = detail["deliveries"].as_array().unwrap().iter().any(|d| {
            d["notice"]["key"] == escalation.as_str()
                && d["channel"] == "slack"
                && d["status"] != "pending"
                && d["status"] != "sending"
        });
        recorded.then_some(detail)
    })
    .await;
    assert_eq!(detail["alert"]["step"], 1, "{detail}");
    let keys: Vec<&str> = detail["alert"]["notices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            format!("{alert_id}/trigger"),
            format!("{alert_id}/escalation/1")
        ]
    );
    let deliveries = detail["deliveries"].as_array().unwrap();
    assert!(
        deliveries
            .iter()
            .any(|d| d["notice"]["key"] == escalation.as_str()
                && d["group"] == "Ops team"
                && d["channel"] == "slack"
                && d["status"] == "sent"),
        "{deliveries:?}"
    );
    assert!(detail["nextEscalation"].is_null(), "the chain has one step");

    // The service comes back: the incident resolves, the alert with it, and
    // PagerDuty hears `resolve` for the incident.
    let _listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let resolved = alert_of(&setup, "web", "resolved").await;
    assert_eq!(resolved["id"], alert_id.as_str());
    assert_eq!(resolved["resolvedBy"], "incident");
    eventually(10, "a PagerDuty resolve", || async {
        (!pd_events(receivers, "resolve", &incident_id).is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        pd_events(receivers, "trigger", &incident_id).len(),
        1,
        "one trigger: one alert per incident"
    );
    let status = setup
        .client
        .get(&setup.host.url("/status"))
        .await
        .expect_ok(200);
    assert_eq!(status["alerts"]["raised"], 1, "{status}");
    assert_eq!(status["alerts"]["escalations"], 1, "{status}");
    let log = setup
        .host
        .log_containing(&[&alert_id, &incident_id, "alert notice queued"])
        .await;
    assert!(log.contains("INFO"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_stops_escalation_and_when_it_runs_out_everyone_is_told_again() {
    // No SMTP server: the email channel is dead throughout.
    let setup = setup(free_port()).await;
    let receivers = &setup.receivers;
    // One short stage: the alert fires at once (critical), then the
    // incident escalates when the stage did not help.
    tcp_check(
        &setup,
        "db",
        "critical",
        free_port(),
        json!({"recovery": [{"strategy": "wait", "waitMs": 300}]}),
    )
    .await;
    let firing = alert_of(&setup, "db", "firing").await;
    let alert_id = firing["id"].as_str().unwrap().to_owned();
    let incident_id = firing["sourceId"].as_str().unwrap().to_owned();
    wait_for_posts(receivers, "/slack/admin", 1, 5).await;

    let acked = post(
        &setup,
        &format!("/alerts/{alert_id}/acknowledge"),
        json!({"by": "alice", "forMs": 3000}),
    )
    .await
    .expect_ok(200);
    assert_eq!(acked["status"], "acknowledged");
    assert_eq!(acked["acknowledgedBy"], "alice");
    eventually(10, "a PagerDuty acknowledge", || async {
        (!pd_events(receivers, "acknowledge", &incident_id).is_empty()).then_some(())
    })
    .await;

    // The acknowledgement runs out (3 s) while the incident is open: a
    // re-notification to Admin, then escalation resumes from there.
    let renotified = eventually(15, "the re-notification", || async {
        let detail = alert(&setup, &alert_id).await;
        (detail["alert"]["status"] == "firing").then_some(detail)
    })
    .await;
    let history: Vec<&str> = renotified["alert"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        // `updated` (the incident escalating) may come before or after
        // the acknowledgement; the notices' order is what is specified.
        .filter(|e| *e != "updated")
        .collect();
    assert_eq!(
        history,
        ["raised", "notified", "acknowledged", "renotified"],
        "no escalation while acknowledged"
    );
    // Admin's Slack: the trigger, the update (recovery gave up), the
    // re-notification.
    wait_for_posts(receivers, "/slack/admin", 3, 10).await;
    let posts: Vec<String> = receivers
        .accepted_at("/slack/admin")
        .iter()
        .map(|r| r.body.to_string())
        .collect();
    let first = &posts[0];
    let update = posts
        .iter()
        .find(|p| p.contains("Update:"))
        .expect("an update when recovery gave up");
    assert!(update.contains("Recovery gave up"), "{update}");
    let again = posts
        .iter()
        .find(|p| p.contains("Still open"))
        .expect("the re-notification");
    let incident = setup
        .client
        .get(&setup.host.url(&format!("/incidents/{incident_id}")))
        .await
        .expect_ok(200);
    assert_eq!(incident["status"], "escalated");
    assert!(!first.contains("recovery gave up"), "{first}");
    assert!(
        again.contains("recovery gave up"),
        "the re-notification tells the incident as it is now: {again}"
    );
    assert!(receivers.accepted_at("/slack/ops").is_empty());
    wait_for_posts(receivers, "/slack/ops", 1, 10).await;

    // The dead channel: every email delivery failed attempts, recorded,
    // while Slack, SMS and PagerDuty delivered. The escalation's email may
    // still be on its first attempt (`sending`): wait for it to end.
    let detail = eventually(10, "every email's first attempt ended", || async {
        let detail = alert(&setup, &alert_id).await;
        let ended = detail["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["channel"] == "email")
            .all(|d| {
                d["attempts"]
                    .get(0)
                    .is_some_and(|first| first["status"] != "sending")
            });
        ended.then_some(detail)
    })
    .await;
    let deliveries = detail["deliveries"].as_array().unwrap();
    let email: Vec<&Value> = deliveries
        .iter()
        .filter(|d| d["channel"] == "email")
        .collect();
    assert!(!email.is_empty());
    for d in email {
        assert_ne!(d["status"], "sent", "{d}");
        let attempts = d["attempts"].as_array().unwrap();
        assert!(!attempts.is_empty(), "{d}");
        assert_eq!(attempts[0]["status"], "failed", "{d}");
        assert!(attempts[0]["error"].as_str().unwrap().contains("smtp"));
    }
    for channel in ["slack", "sms", "pagerduty"] {
        assert!(
            deliveries
                .iter()
                .any(|d| d["channel"] == channel && d["status"] == "sent"),
            "{channel} delivered"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_holds_the_page_until_it_lapses_and_a_suppressed_check_pages_nobody() {
    let setup = setup(free_port()).await;
    let receivers = &setup.receivers;
    let silence = post(
        &setup,
        "/silences",
        json!({"matchers": {"checkId": "cache"}, "durationMs": 2500, "createdBy": "bob",
               "comment": "maintenance"}),
    )
    .await
    .expect_ok(201);
    assert_eq!(silence["active"], true);
    let started = Instant::now();
    tcp_check(&setup, "cache", "critical", free_port(), json!({})).await;
    let held = alert_of(&setup, "cache", "silenced").await;
    assert_eq!(held["silenceId"], silence["id"]);
    assert!(receivers.accepted_at("/slack/admin").is_empty());

    // The silence lapses at its end time: the page goes out then.
    wait_for_posts(receivers, "/slack/admin", 1, 15).await;
    assert!(
        started.elapsed() >= Duration::from_millis(2400),
        "paged only after the silence"
    );
    let fired = alert_of(&setup, "cache", "firing").await;
    assert_eq!(fired["id"], held["id"]);
    let listed = setup
        .client
        .get(&silence_url(&setup, &silence))
        .await
        .expect_ok(200);
    assert_eq!(listed["active"], false);

    // Deleting a silence ends it at once: what it held is told then.
    let long = post(
        &setup,
        "/silences",
        json!({"matchers": {"checkId": "queue", "team": "ops"}, "durationMs": 3_600_000,
               "createdBy": "bob"}),
    )
    .await
    .expect_ok(201);
    tcp_check(&setup, "queue", "critical", free_port(), json!({})).await;
    let held = alert_of(&setup, "queue", "silenced").await;
    let ended = setup
        .client
        .delete(&silence_url(&setup, &long))
        .await
        .expect_ok(200);
    assert_eq!(ended["active"], false);
    let fired = alert_of(&setup, "queue", "firing").await;
    assert_eq!(fired["id"], held["id"]);

    // A child check under the failing parent: suppressed, nobody paged.
    tcp_check(
        &setup,
        "cache_child",
        "critical",
        free_port(),
        json!({"dependsOn": ["cache"]}),
    )
    .await;
    let suppressed = alert_of(&setup, "cache_child", "suppressed").await;
    let detail = alert(&setup, suppressed["id"].as_str().unwrap()).await;
    assert!(detail["deliveries"].as_array().unwrap().is_empty());
    let told_of_child = receivers
        .received
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.body.to_string().contains("cache_child"))
        .count();
    assert_eq!(told_of_child, 0, "nobody is told of the suppressed check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_alert_waits_for_the_running_recovery_and_a_repair_in_time_pages_nobody() {
    let setup = setup(free_port()).await;
    let receivers = &setup.receivers;
    let port = free_port();
    tcp_check(
        &setup,
        "api",
        "high",
        port,
        json!({"recovery": [{"strategy": "wait", "waitMs": 3000}]}),
    )
    .await;
    let waiting = alert_of(&setup, "api", "waiting").await;
    // The service heals during the stage's wait: the re-check passes, the
    // incident resolves as recovered, the alert resolves quietly.
    let _listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let resolved = alert_of(&setup, "api", "resolved").await;
    assert_eq!(resolved["id"], waiting["id"]);
    assert_eq!(resolved["notices"].as_array().unwrap().len(), 0);
    assert!(resolved.get("notifiedAt").is_none());
    assert!(
        receivers.received.lock().unwrap().is_empty(),
        "nobody paged"
    );

    // A high check whose recovery gives up: the alert is told then.
    tcp_check(
        &setup,
        "queue",
        "high",
        free_port(),
        json!({"recovery": [{"strategy": "wait", "waitMs": 300}]}),
    )
    .await;
    let fired = alert_of(&setup, "queue", "firing").await;
    let history: Vec<&str> = fired["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["raised", "held", "updated", "notified"]);
    wait_for_posts(receivers, "/slack/manager", 1, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_raised_before_kill_9_is_delivered_after_restart_once_per_receiver() {
    let smtp_port = free_port();
    let mut setup = setup(smtp_port).await;
    *setup.receivers.down.lock().unwrap() = true;
    tcp_check(&setup, "edge", "critical", free_port(), json!({})).await;
    let firing = alert_of(&setup, "edge", "firing").await;
    let alert_id = firing["id"].as_str().unwrap().to_owned();
    eventually(10, "a failed attempt on a channel", || async {
        let detail = alert(&setup, &alert_id).await;
        detail["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["attemptsMade"].as_u64().unwrap_or(0) >= 1)
            .then_some(())
    })
    .await;
    setup.host.kill9();
    *setup.receivers.down.lock().unwrap() = false;
    let smtp = Smtp::start(smtp_port);
    setup.host.restart();
    for path in ["/slack/admin", "/sms", "/pd/v2/enqueue"] {
        wait_for_posts(&setup.receivers, path, 1, 20).await;
    }
    eventually(20, "the mail", || async {
        (!smtp.messages().is_empty()).then_some(())
    })
    .await;
    let detail = eventually(20, "every trigger delivery sent", || async {
        let detail = alert(&setup, &alert_id).await;
        detail["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["notice"]["event"]["kind"] == "trigger")
            .all(|d| d["status"] == "sent")
            .then_some(detail)
    })
    .await;
    assert_eq!(detail["alert"]["id"], alert_id.as_str());
    // The incident's "recovery gave up" may also reach Admin by email and
    // Slack as an update, whenever the check gets to it; only the trigger
    // is counted.
    let is_update = |text: &str| text.contains("Update:");
    for path in ["/slack/admin", "/sms"] {
        let accepted = setup.receivers.accepted_at(path);
        let triggers: Vec<&Value> = accepted
            .iter()
            .map(|r| &r.body)
            .filter(|body| !is_update(&body.to_string()))
            .collect();
        assert_eq!(
            triggers.len(),
            1,
            "{path} took the trigger once: {triggers:#?}"
        );
    }
    let to_admin = smtp
        .messages()
        .into_iter()
        .filter(|m| m.contains("To: admin@example.com") && !is_update(m))
        .count();
    assert_eq!(to_admin, 1, "one mail to Admin");
    let page = setup
        .client
        .get(&setup.host.url("/alerts"))
        .await
        .expect_ok(200);
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        1,
        "the restart raised no second alert for the incident"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_calls_refuse_bad_input_with_the_envelope() {
    let setup = setup(free_port()).await;
    tcp_check(&setup, "svc", "critical", free_port(), json!({})).await;
    let firing = alert_of(&setup, "svc", "firing").await;
    let id = firing["id"].as_str().unwrap();
    let ack = format!("/alerts/{id}/acknowledge");
    let message = refused(post(&setup, &ack, json!({"by": ""})).await, 422);
    assert!(message.contains("`by`"), "{message}");
    let message = refused(
        post(&setup, &ack, json!({"by": "a", "forMs": 0})).await,
        422,
    );
    assert!(message.contains("`forMs`"), "{message}");
    post(
        &setup,
        "/alerts/alert_nosuch/acknowledge",
        json!({"by": "a"}),
    )
    .await
    .expect_error(404);
    post(&setup, "/alerts/..%2F/acknowledge", json!({"by": "a"}))
        .await
        .expect_error(404);
    let resolve = format!("/alerts/{id}/resolve");
    post(&setup, &resolve, json!({"resolution": "handled"}))
        .await
        .expect_ok(200);
    let message = refused(
        post(&setup, &resolve, json!({"resolution": "again"})).await,
        409,
    );
    assert!(message.contains("resolved"), "{message}");
    post(&setup, &ack, json!({"by": "a"}))
        .await
        .expect_error(409);
    setup
        .client
        .get(&setup.host.url("/alerts?status=bogus"))
        .await
        .expect_error(400);
    setup
        .client
        .get(&setup.host.url("/alerts?limit=501"))
        .await
        .expect_error(400);
    let message = refused(
        post(
            &setup,
            "/silences",
            json!({"matchers": {}, "durationMs": 1000, "createdBy": "a"}),
        )
        .await,
        422,
    );
    assert!(message.contains("`matchers`"), "{message}");
    post(
        &setup,
        "/silences",
        json!({"matchers": {"team": "ops"}, "durationMs": 0, "createdBy": "a"}),
    )
    .await
    .expect_error(422);
    setup
        .client
        .delete(&setup.host.url("/silences/silence_nosuch"))
        .await
        .expect_error(404);
    // One team cannot use up the host's room for silences.
    let silence = |team: &str| json!({"matchers": {"team": team, "severity": "medium"}, "durationMs": 60000, "createdBy": "a"});
    for _ in 0..100 {
        post(&setup, "/silences", silence("ops"))
            .await
            .expect_ok(201);
    }
    assert_eq!(
        post(&setup, "/silences", silence("ops"))
            .await
            .expect_error(409),
        "too_many_silences"
    );
    post(&setup, "/silences", silence("dev"))
        .await
        .expect_ok(201);
    // Resolved by hand, the incident's alert is not raised again while the
    // incident stays open.
    let page = setup
        .client
        .get(&setup.host.url("/alerts?source=incident"))
        .await
        .expect_ok(200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_plan_and_an_unhealthy_worker_raise_alerts() {
    let setup = setup(free_port()).await;
    // A worker none of whose capabilities any plugin offers is unhealthy.
    setup
        .client
        .post_json(
            &setup.host.url("/workers"),
            &json!({"id": "W_LOST", "name": "lost", "type": "NONE",
                    "capabilities": ["nobody_offers_this"], "team": "ops"})
            .to_string(),
        )
        .await
        .expect_ok(201);
    let worker_alert = eventually(20, "the worker's alert", || async {
        let page = setup
            .client
            .get(&setup.host.url("/alerts?source=worker"))
            .await
            .expect_ok(200);
        page["items"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(worker_alert["sourceId"], "W_LOST");
    assert_eq!(worker_alert["severity"], "high");
    assert_eq!(worker_alert["team"], "ops");
    wait_for_posts(&setup.receivers, "/slack/manager", 1, 10).await;

    // A plan that depends on a cancelled one fails: a plan alert.
    let create = |priority: &str, depends_on: Vec<String>| {
        json!({"templateId": "SYSTEM_CHECK", "team": "ops", "priority": priority,
               "data": {"serverId": "server_001", "checkLevel": "basic"},
               "dependsOn": depends_on})
        .to_string()
    };
    let first = setup
        .client
        .post_json(&setup.host.url("/action-plans"), &create("low", vec![]))
        .await
        .expect_ok(201);
    let first_id = first["id"].as_str().unwrap().to_owned();
    setup
        .client
        .post_json(
            &setup.host.url(&format!("/action-plans/{first_id}/cancel")),
            "",
        )
        .await
        .expect_ok(200);
    let plan = setup
        .client
        .post_json(
            &setup.host.url("/action-plans"),
            &create("critical", vec![first_id]),
        )
        .await
        .expect_ok(201);
    let plan_id = plan["id"].as_str().unwrap().to_owned();
    setup
        .client
        .post_json(
            &setup.host.url(&format!("/action-plans/{plan_id}/execute")),
            "",
        )
        .await
        .expect_ok(200);
    let plan_alert = eventually(20, "the plan's alert", || async {
        let page = setup
            .client
            .get(&setup.host.url("/alerts?source=plan"))
            .await
            .expect_ok(200);
        page["items"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(plan_alert["sourceId"], plan_id.as_str());
    assert_eq!(plan_alert["severity"], "critical");
    assert_eq!(plan_alert["status"], "firing");
}

/// The URL of `silence` (as `POST /silences` answered it).
fn silence_url(setup: &Setup, silence: &Value) -> String {
    let id = silence["id"].as_str().expect("a silence has an id");
    setup.host.url(&format!("/silences/{id}"))
}
