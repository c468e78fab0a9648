//! The plugin author's path, as an outside author walks it: scaffold a
//! plugin crate with `autoagent plugin new`, test it natively, then build and
//! upload it with `autoagent plugin push` to a running host, and call it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use autoagent_tests::{Client, Host, binary, json};

/// Scaffolds share one target folder, so their dependencies build once.
fn scaffold_target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffolds")
}

fn autoagent(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env("CARGO_TARGET_DIR", scaffold_target_dir())
        .output()
        .expect("running autoagent")
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn an_author_scaffolds_tests_pushes_and_calls_each_kind_of_plugin() {
    let host = Host::start();
    let client = Client::new();
    let scratch = tempfile::tempdir().unwrap();
    let kinds = [
        ("capability", "greeter"),
        ("health-check", "disk-probe"),
        ("recovery-strategy", "restart-it"),
    ];
    for (kind, name) in kinds {
        let dir = scratch.path().join(name);
        let dir_arg = dir.to_str().unwrap();
        let made = autoagent(&[
            "plugin", "new", kind, name, "--team", "authors", "--path", dir_arg,
        ]);
        assert!(made.status.success(), "{}", text(&made));
        // Small-memory plugins by default: a 64 KiB shadow stack.
        let cargo_config = std::fs::read_to_string(dir.join(".cargo/config.toml")).unwrap();
        assert!(
            cargo_config.contains("link-arg=-zstack-size=65536"),
            "{cargo_config}"
        );

        // The scaffold's own unit tests pass natively.
        let tested = Command::new(env!("CARGO"))
            .current_dir(&dir)
            .args(["test", "--quiet"])
            .env("CARGO_TARGET_DIR", scaffold_target_dir())
            .output()
            .unwrap();
        assert!(tested.status.success(), "{}", text(&tested));

        let pushed = autoagent(&["plugin", "push", dir_arg, "--host", &host.origin]);
        assert!(pushed.status.success(), "{}", text(&pushed));
        let said = String::from_utf8_lossy(&pushed.stdout);
        assert!(
            said.contains(&format!("added authors/{name}@0.1.0")),
            "{said}"
        );
    }

    let listed = client
        .get(&host.url("/teams/authors/plugins"))
        .await
        .expect_ok(200);
    let kinds_loaded: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["kind"].as_str().unwrap(), p["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds_loaded,
        [
            ("health-check", "loaded"),
            ("capability", "loaded"),
            ("recovery-strategy", "loaded")
        ]
    );

    let greeting = client
        .post_json(
            &host.url("/teams/authors/plugins/greeter/invoke"),
            r#"{"capability": "greeter", "input": {"name": "kim"}}"#,
        )
        .await
        .expect_ok(200);
    assert_eq!(
        greeting,
        json!({ "greeting": "hello, kim", "plugin": "authors/greeter" })
    );
    // The field a caller got wrong is named in the answer.
    let wrong = client
        .post_json(
            &host.url("/teams/authors/plugins/greeter/invoke"),
            r#"{"capability": "greeter", "input": {"name": 5}}"#,
        )
        .await;
    assert_eq!(wrong.expect_error(422), "invalid_input");
    assert!(wrong.text.contains("`name`"), "{}", wrong.text);

    // Pushing again replaces; a ready component can be pushed as it is.
    let greeter = scratch.path().join("greeter");
    let wasm = scaffold_target_dir().join("wasm32-wasip2/release/greeter.wasm");
    let again = autoagent(&[
        "plugin",
        "push",
        greeter.to_str().unwrap(),
        "--host",
        &host.origin,
        "--wasm",
        wasm.to_str().unwrap(),
    ]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("replaced authors/greeter@0.1.0"));
}

#[test]
fn authoring_mistakes_exit_with_a_message_and_code() {
    let scratch = tempfile::tempdir().unwrap();
    let taken = scratch.path().join("taken");
    std::fs::create_dir_all(&taken).unwrap();
    std::fs::write(taken.join("keep.txt"), "mine").unwrap();
    let refused = autoagent(&[
        "plugin",
        "new",
        "capability",
        "probe",
        "--path",
        taken.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("not empty"));

    let bad_kind = autoagent(&["plugin", "new", "gadget", "probe"]);
    assert_eq!(bad_kind.status.code(), Some(2), "{}", text(&bad_kind));

    let no_manifest = autoagent(&["plugin", "push", taken.to_str().unwrap()]);
    assert_eq!(no_manifest.status.code(), Some(2), "{}", text(&no_manifest));
    assert!(text(&no_manifest).contains("plugin.toml"));

    // Nobody listens on this port: the upload fails with exit code 1.
    std::fs::write(
        taken.join("plugin.toml"),
        "name = \"probe\"\nversion = \"0.1.0\"\nkind = \"capability\"\nteam = \"ops\"\ncapabilities = [\"x\"]\n",
    )
    .unwrap();
    std::fs::write(taken.join("probe.wasm"), b"\0asm").unwrap();
    let unreachable = autoagent(&[
        "plugin",
        "push",
        taken.to_str().unwrap(),
        "--host",
        "http://127.0.0.1:9",
        "--wasm",
        taken.join("probe.wasm").to_str().unwrap(),
    ]);
    assert_eq!(unreachable.status.code(), Some(1), "{}", text(&unreachable));
    assert!(text(&unreachable).contains("cannot reach"));
}
