//! The server's limits and TLS, black-box: slow clients are cut off, the
//! connection limit holds, HTTPS serves with the operator's certificate, and
//! a host that would send tokens in clear text does not start.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autoagent_tests::{BASE_PATH, Host, Reply, Value, binary, eventually, guests, probe_manifest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one HTTP/1.1 response (head, then a `Content-Length` body) from a
/// raw connection.
async fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let read = stream.read(&mut chunk).await.expect("reading the response");
        assert!(read > 0, "connection closed before a whole response head");
        bytes.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    let header = |name: &str| {
        head.lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let length: usize = header("content-length").parse().unwrap_or(0);
    while bytes.len() < head_end + length {
        let read = stream.read(&mut chunk).await.expect("reading the body");
        assert!(read > 0, "connection closed before the whole body");
        bytes.extend_from_slice(&chunk[..read]);
    }
    let text = String::from_utf8_lossy(&bytes[head_end..head_end + length]).into_owned();
    Reply {
        status,
        content_type: header("content-type"),
        retry_after: Some(header("retry-after")).filter(|value| !value.is_empty()),
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

const GET_STATUS: &[u8] =
    b"GET /api/autoagents-management/v1/status HTTP/1.1\r\nHost: test\r\n\r\n";

#[tokio::test]
async fn a_client_that_stops_inside_its_request_line_is_disconnected_after_the_header_timeout() {
    let host = Host::start_with_args(&["--header-timeout-secs", "1"]);
    let mut stream = TcpStream::connect(&host.address).await.unwrap();
    stream.write_all(b"GET /api/autoag").await.unwrap();
    let sent = Instant::now();

    let mut buffer = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buffer))
        .await
        .expect("the host closed the connection within 20 s")
        .expect("reading from the connection");

    assert_eq!(
        read,
        0,
        "expected the connection closed without an answer, got {:?}",
        String::from_utf8_lossy(&buffer[..read])
    );
    // Closed by the timeout, not refused at once: hyper's timer started a
    // moment before the bytes were sent.
    assert!(
        sent.elapsed() >= Duration::from_millis(500),
        "closed after {:?}",
        sent.elapsed()
    );
}

#[tokio::test]
async fn a_request_body_that_stalls_is_answered_408_in_the_envelope() {
    let host = Host::start_with_args(&["--body-timeout-secs", "1"]);
    let mut stream = TcpStream::connect(&host.address).await.unwrap();
    stream
        .write_all(
            format!(
                "POST {BASE_PATH}/workers HTTP/1.1\r\nHost: test\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // 10 of the 100 bytes promised, then nothing.
    stream.write_all(b"{\"workerId").await.unwrap();

    let reply = tokio::time::timeout(Duration::from_secs(20), read_reply(&mut stream))
        .await
        .expect("answered within 20 s");

    assert_eq!(reply.expect_error(408), "request_timeout");
    assert!(reply.content_type.starts_with("application/json"));
}

#[tokio::test]
async fn a_connection_past_max_connections_waits_until_a_held_one_closes() {
    let host = Host::start_with_args(&["--max-connections", "2"]);
    // Two keep-alive connections, each answered once (so the host has
    // accepted them) and then held idle.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&host.address).await.unwrap();
        stream.write_all(GET_STATUS).await.unwrap();
        read_reply(&mut stream).await.expect_ok(200);
        held.push(stream);
    }
    // The kernel completes the third connection into the listen backlog;
    // the host does not accept it while both slots are taken.
    let mut third = TcpStream::connect(&host.address).await.unwrap();
    third.write_all(GET_STATUS).await.unwrap();
    let early = tokio::time::timeout(Duration::from_secs(2), read_reply(&mut third)).await;
    assert!(
        early.is_err(),
        "the third connection was answered while two were held"
    );

    drop(held.pop());

    let reply = tokio::time::timeout(Duration::from_secs(20), read_reply(&mut third))
        .await
        .expect("the third connection was answered once a slot was free");
    reply.expect_ok(200);
}

#[tokio::test]
async fn sigterm_stops_accepting_and_lets_a_request_in_flight_finish() {
    let mut host = Host::start();
    let body =
        r#"{"id": "W1", "name": "worker W1", "type": "TODO", "capabilities": ["task_creation"]}"#;
    let mut stream = TcpStream::connect(&host.address).await.unwrap();
    stream
        .write_all(
            format!(
                "POST {BASE_PATH}/workers HTTP/1.1\r\nHost: test\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\
                 Expect: 100-continue\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // hyper says `100 Continue` once the handler reads the body: from then
    // on the request is in flight.
    let continued = read_reply(&mut stream).await;
    assert_eq!(continued.status, 100);

    host.terminate();
    host.log_containing(&["SIGTERM received"]).await;
    eventually(10, "the listener to close", || async {
        TcpStream::connect(&host.address)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    stream.write_all(body.as_bytes()).await.unwrap();

    read_reply(&mut stream).await.expect_ok(201);
    let status = host.wait();
    assert!(
        status.success(),
        "SIGTERM should end the host cleanly: {status}"
    );
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM
/// files into `dir`: (certificate, key).
fn self_signed_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("generating a certificate");
    let (cert, key) = (dir.join("host.crt"), dir.join("host.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

fn start_https_host(cert: &Path, key: &Path) -> Host {
    Host::start_with_args(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
}

#[tokio::test]
async fn a_host_with_a_certificate_serves_https_and_not_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_certificate(dir.path());
    let host = start_https_host(&cert, &key);
    assert!(host.origin.starts_with("https://"));

    let trusting = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let response = trusting
        .get(host.url("/status"))
        .send()
        .await
        .expect("an https answer");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], true, "body: {body}");

    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let refused = plain
        .get(format!("http://{}{BASE_PATH}/status", host.address))
        .send()
        .await
        .expect_err("plain HTTP to the TLS port must fail");
    assert!(
        !refused.is_timeout(),
        "plain HTTP should fail at once, not hang: {refused}"
    );
}

/// Runs `autoagent` with `args` and returns (exit code, stdout, stderr),
/// failing the test if it has not exited within 60 s.
fn run_autoagent(args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let mut child = Command::new(binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting autoagent");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("polling autoagent").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("autoagent {args:?} still runs after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("autoagent's output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_non_loopback_host_without_a_certificate_refuses_to_start_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let logs = dir.path().join("logs");
    // A token exists, so TLS is the only thing missing.
    let (code, _, stderr) = run_autoagent(&[
        "token".as_ref(),
        "create".as_ref(),
        "--admin".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "token create failed: {stderr}");

    let (code, _, stderr) = run_autoagent(&[
        "serve".as_ref(),
        "--listen".as_ref(),
        "0.0.0.0:0".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--log-dir".as_ref(),
        logs.as_os_str(),
    ]);

    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("--tls-cert"), "stderr: {stderr}");
}

/// A plugin folder with the echo guest's manifest, as `plugin push` reads it.
fn probe_plugin_dir(dir: &Path) -> PathBuf {
    let plugin = dir.join("probe");
    std::fs::create_dir_all(&plugin).unwrap();
    std::fs::write(plugin.join("plugin.toml"), probe_manifest("0.1.0")).unwrap();
    plugin
}

#[test]
fn plugin_push_uploads_to_an_https_host_whose_certificate_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_certificate(dir.path());
    let host = start_https_host(&cert, &key);
    let plugin = probe_plugin_dir(dir.path());

    let (code, stdout, stderr) = run_autoagent(&[
        "plugin".as_ref(),
        "push".as_ref(),
        plugin.as_os_str(),
        "--host".as_ref(),
        host.origin.as_ref(),
        "--wasm".as_ref(),
        guests::GUEST_ECHO.as_ref(),
        "--ca-cert".as_ref(),
        cert.as_os_str(),
    ]);

    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(stdout.contains("added ops/probe@0.1.0"), "stdout: {stdout}");
}

#[test]
fn plugin_push_refuses_an_https_host_whose_certificate_it_does_not_trust() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_certificate(dir.path());
    let host = start_https_host(&cert, &key);
    let plugin = probe_plugin_dir(dir.path());

    let (code, _, stderr) = run_autoagent(&[
        "plugin".as_ref(),
        "push".as_ref(),
        plugin.as_os_str(),
        "--host".as_ref(),
        host.origin.as_ref(),
        "--wasm".as_ref(),
        guests::GUEST_ECHO.as_ref(),
    ]);

    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(stderr.contains("certificate"), "stderr: {stderr}");
}

/// Reads a response head from a raw connection.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 1024];
    while !bytes.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut chunk).await.expect("reading the response");
        assert!(read > 0, "connection closed before a whole response head");
        bytes.extend_from_slice(&chunk[..read]);
    }
    String::from_utf8_lossy(&bytes).to_ascii_lowercase()
}

#[tokio::test]
async fn an_answer_sent_before_the_body_was_read_closes_the_connection() {
    let host = Host::start();
    // Refused on its path before the body is looked at: the host will not
    // read the rest, so the client must not reuse the connection.
    let mut stream = TcpStream::connect(&host.address).await.unwrap();
    let head = format!(
        "PUT {BASE_PATH}/teams/ops/plugins/bad.name HTTP/1.1\r\nHost: test\r\n\
         Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'x'; 1000]).await.unwrap();
    let answer = read_head(&mut stream).await;
    assert!(answer.starts_with("http/1.1 422"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");

    // A body read to its end keeps the connection open for the next one.
    let mut stream = TcpStream::connect(&host.address).await.unwrap();
    let body = "{}";
    let request = format!(
        "POST {BASE_PATH}/workers HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = read_head(&mut stream).await;
    assert!(answer.starts_with("http/1.1 422"), "{answer}");
    assert!(!answer.contains("connection: close"), "{answer}");
}
