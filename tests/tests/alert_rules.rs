//! `/alert-rules` on a real host: the guide's table by default, a bad rule
//! refused with its field named while the old rules stay, a change that
//! survives `kill -9`, and only global admins may change them.

use autoagent_tests::{Client, Host, json};

#[tokio::test]
async fn the_rules_are_the_guides_table_until_a_valid_change_which_survives_kill_9() {
    let mut host = Host::start();
    let client = Client::new();
    let url = host.url("/alert-rules");
    let defaults = client.get(&url).await.expect_ok(200);
    let rule = |rules: &autoagent_tests::Value, severity: &str| {
        rules["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["severity"] == severity)
            .cloned()
            .unwrap()
    };
    let critical = rule(&defaults, "critical");
    assert_eq!(
        critical["channels"],
        json!(["email", "sms", "slack", "pagerduty"])
    );
    assert_eq!(
        critical["recipients"],
        json!(["Admin", "Manager", "OnCall"])
    );
    assert_eq!(critical["escalation"][0]["afterMs"], 300_000);
    let high = rule(&defaults, "high");
    assert_eq!(high["channels"], json!(["email", "slack"]));
    assert_eq!(high["recipients"], json!(["Admin", "Manager"]));
    assert_eq!(high["escalation"][0]["afterMs"], 900_000);
    let medium = rule(&defaults, "medium");
    assert_eq!(medium["channels"], json!(["email", "slack"]));
    assert_eq!(medium["recipients"], json!(["Admin"]));
    assert_eq!(medium["escalation"][0]["afterMs"], 1_800_000);

    let put = |body: String| {
        let (client, url) = (&client, url.clone());
        async move {
            client
                .send(
                    "PUT",
                    &url,
                    Some(("application/json", body.into_bytes())),
                    &[],
                )
                .await
        }
    };
    // An unknown group: refused, naming the field; nothing changed.
    let mut bad = defaults.clone();
    bad["rules"][1]["recipients"] = json!(["Nobody"]);
    let reply = put(bad.to_string()).await;
    assert_eq!(reply.expect_error(422), "invalid_request");
    assert!(reply.text.contains("rules[1].recipients"), "{}", reply.text);
    assert_eq!(client.get(&url).await.expect_ok(200), defaults);
    // A missing severity: refused.
    let mut missing = defaults.clone();
    missing["rules"].as_array_mut().unwrap().pop();
    put(missing.to_string()).await.expect_error(422);

    // Scaled for a test: critical escalates after 2 s.
    let mut fast = defaults.clone();
    fast["rules"][0]["escalation"][0]["afterMs"] = json!(2000);
    assert_eq!(put(fast.to_string()).await.expect_ok(200), fast);
    host.kill9();
    host.restart();
    let url = host.url("/alert-rules");
    assert_eq!(client.get(&url).await.expect_ok(200), fast);

    // Only a global admin changes them; a team admin reads them.
    let secret = client
        .post_json(
            &host.url("/tokens"),
            &json!({"role": "admin", "team": "ops"}).to_string(),
        )
        .await
        .expect_ok(201)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth = format!("Bearer {secret}");
    let reply = client
        .send(
            "PUT",
            &url,
            Some(("application/json", defaults.to_string().into_bytes())),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(reply.expect_error(403), "forbidden");
    let read = client
        .send("GET", &url, None, &[("authorization", &auth)])
        .await;
    assert_eq!(read.expect_ok(200), fast);
}
