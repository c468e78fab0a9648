//! A harness for black-box tests: starts the real `autoagent` binary on a
//! free loopback port with its own data and log folders, and speaks HTTP to
//! it.
//!
//! The binary is found through `AUTOAGENT_BIN` (set by `cargo xtask test`,
//! which builds it first) or next to the test executable's target folder.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub use serde_json::{Value, json};

pub mod report;

/// Paths of the test guest components, built for `wasm32-wasip2` by
/// `build.rs`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));

    /// Path of `guests/extism-echo`, the echo guest's `ping` as an Extism
    /// plugin (a core module for `wasm32-unknown-unknown`).
    #[cfg(feature = "extism")]
    pub const GUEST_EXTISM_ECHO: &str = env!("GUEST_EXTISM_ECHO");
}

/// The API's base path.
pub const BASE_PATH: &str = "/api/autoagents-management/v1";

/// Path of the `autoagent` binary under test.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("AUTOAGENT_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>/autoagent
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let candidate = profile_dir.join("autoagent");
    assert!(
        candidate.exists(),
        "{} is missing: run the tests with `cargo xtask test`, which builds the host first",
        candidate.display()
    );
    candidate
}

/// A running host, killed when dropped.
pub struct Host {
    child: Option<Child>,
    /// The binary it runs ([`binary`] unless started with
    /// [`Host::start_program`]), kept for [`Host::restart`].
    program: PathBuf,
    /// `http://127.0.0.1:PORT`, or `https://` for a host started with
    /// `--tls-cert`.
    pub origin: String,
    /// `127.0.0.1:PORT`, for tests that speak raw TCP.
    pub address: String,
    /// Arguments given to `serve` besides `--listen`, `--data-dir` and
    /// `--log-dir`, kept for [`Host::restart`].
    extra_args: Vec<String>,
    /// Environment variables given to the host, kept for [`Host::restart`].
    extra_env: Vec<(String, String)>,
    /// The data folder (redb file, plugin folders).
    pub data_dir: PathBuf,
    /// The log folder.
    pub log_dir: PathBuf,
    _scratch: Option<tempfile::TempDir>,
}

impl Host {
    /// Starts a host with fresh, temporary data and log folders.
    pub fn start() -> Self {
        let scratch = tempfile::tempdir().expect("temp dir");
        let mut host = Self::start_with(scratch.path().join("data"), scratch.path().join("logs"));
        host._scratch = Some(scratch);
        host
    }

    /// Starts a host with fresh, temporary data and log folders and `args`
    /// added to `serve`, e.g. `["--header-timeout-secs", "1"]`.
    pub fn start_with_args(args: &[&str]) -> Self {
        let scratch = tempfile::tempdir().expect("temp dir");
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        let mut host = Self::spawn(
            scratch.path().join("data"),
            scratch.path().join("logs"),
            args,
        );
        host._scratch = Some(scratch);
        host
    }

    /// Starts a host on the given folders (to restart on the same data).
    pub fn start_with(data_dir: PathBuf, log_dir: PathBuf) -> Self {
        Self::spawn(data_dir, log_dir, Vec::new())
    }

    /// Starts a host with extra arguments and environment variables (kept
    /// for [`Host::restart`]).
    pub fn start_with_args_and_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let scratch = tempfile::tempdir().expect("temp dir");
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut host = Self::spawn_with_env(
            scratch.path().join("data"),
            scratch.path().join("logs"),
            args,
            env,
        );
        host._scratch = Some(scratch);
        host
    }

    /// Starts `program` (a copy of the binary, say) as a host on the given
    /// folders with `args` added to `serve`.
    pub fn start_program(
        program: &Path,
        data_dir: PathBuf,
        log_dir: PathBuf,
        args: &[&str],
    ) -> Self {
        let args = args.iter().map(|arg| (*arg).to_owned()).collect();
        Self::spawn_program(program.to_owned(), data_dir, log_dir, args, Vec::new())
    }

    fn spawn(data_dir: PathBuf, log_dir: PathBuf, extra_args: Vec<String>) -> Self {
        Self::spawn_with_env(data_dir, log_dir, extra_args, Vec::new())
    }

    fn spawn_with_env(
        data_dir: PathBuf,
        log_dir: PathBuf,
        extra_args: Vec<String>,
        extra_env: Vec<(String, String)>,
    ) -> Self {
        Self::spawn_program(binary(), data_dir, log_dir, extra_args, extra_env)
    }

    fn spawn_program(
        program: PathBuf,
        data_dir: PathBuf,
        log_dir: PathBuf,
        extra_args: Vec<String>,
        extra_env: Vec<(String, String)>,
    ) -> Self {
        let mut child = Command::new(&program)
            .envs(extra_env.iter().map(|(k, v)| (k, v)))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .arg("--log-dir")
            .arg(&log_dir)
            .args(&extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting autoagent");
        let stdout = child.stdout.take().expect("piped stdout");
        let (found, address) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = found.send(addr);
                    sent = true;
                }
                // Keep draining so the host never blocks on a full pipe.
            }
        });
        let address = match address.recv_timeout(Duration::from_secs(60)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                panic!("autoagent did not report its address within 60 s");
            }
        };
        let scheme = if extra_args.iter().any(|arg| arg == "--tls-cert") {
            "https"
        } else {
            "http"
        };
        Self {
            child: Some(child),
            program,
            origin: format!("{scheme}://{address}"),
            address,
            extra_args,
            extra_env,
            data_dir,
            log_dir,
            _scratch: None,
        }
    }

    /// Full URL of an API path such as `/workers`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{BASE_PATH}{path}", self.origin)
    }

    /// CPU time (user + system, all threads) the host process has used so
    /// far, read from `/proc`; `None` where that is not readable (not Linux,
    /// or the host is not running).
    pub fn cpu_time(&self) -> Option<Duration> {
        let pid = self.child.as_ref()?.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name is in parentheses and may hold spaces; utime and
        // stime are the 12th and 13th fields after it.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // Linux reports them in USER_HZ ticks, 100 a second.
        Some(Duration::from_millis(ticks * 10))
    }

    /// The host process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        Some(self.child.as_ref()?.id())
    }

    /// The host process's resident memory, read from `/proc`; `None` where
    /// that is not readable.
    pub fn rss_bytes(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Kills the host with SIGKILL, as a crash would, and waits for it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaping the host");
        }
    }

    /// Stops the host with SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.terminate();
        self.wait()
    }

    /// Sends SIGTERM and returns at once; [`Host::wait`] waits for the exit.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends the signal named `name` (`TERM`, `HUP`, ...) to the host.
    pub fn signal(&self, name: &str) {
        let pid = self
            .child
            .as_ref()
            .expect("host is running")
            .id()
            .to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the host to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("host is running");
        child.wait().expect("waiting for the host")
    }

    /// Restarts a stopped or killed host on the same folders.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the host first");
        let scratch = self._scratch.take();
        let mut fresh = Self::spawn_program(
            self.program.clone(),
            self.data_dir.clone(),
            self.log_dir.clone(),
            self.extra_args.clone(),
            self.extra_env.clone(),
        );
        fresh._scratch = scratch;
        *self = fresh;
    }

    /// The log file's text.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_dir.join("autoagent.log")).unwrap_or_default()
    }

    /// The log file's text once it contains every one of `needles`. The host
    /// writes its log from a background thread, so a line may trail the
    /// response that caused it by a moment.
    pub async fn log_containing(&self, needles: &[&str]) -> String {
        eventually(10, &format!("log lines with {needles:?}"), || async {
            let log = self.log();
            needles.iter().all(|n| log.contains(n)).then_some(log)
        })
        .await
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Installs a test guest from `tests/guests/<name>` as
/// `<data_dir>/plugins/testing/<name>/`, as an operator would.
pub fn install_guest(data_dir: &Path, name: &str, wasm: &str) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("guests")
        .join(name);
    let dir = data_dir.join("plugins/testing").join(name);
    std::fs::create_dir_all(&dir).expect("plugin folder");
    std::fs::copy(source.join("plugin.toml"), dir.join("plugin.toml")).expect("manifest copied");
    std::fs::copy(wasm, dir.join(format!("{name}.wasm"))).expect("component copied");
}

/// A manifest for the echo guest as team `ops`'s plugin `probe`, whose
/// `config` capability answers `version` with the manifest's own version.
pub fn probe_manifest(version: &str) -> String {
    format!(
        r#"name = "probe"
version = "{version}"
kind = "capability"
team = "ops"
capabilities = ["echo", "config", "kv_roundtrip", "kv_get", "fetch", "run"]

[permissions]
kv-quota-bytes = 4096
config-keys = ["version"]

[limits]
max-concurrent-calls = 64

[config]
version = "{version}"
"#
    )
}

/// The echo guest's component.
pub fn echo_wasm() -> Vec<u8> {
    std::fs::read(guests::GUEST_ECHO).expect("the echo guest is built")
}

/// `wasm` with a custom section numbered `n` appended: the same component
/// to run, but bytes never seen before, so the host must compile it (its
/// artifact cache is keyed by the bytes).
pub fn unseen_component(mut wasm: Vec<u8>, n: usize) -> Vec<u8> {
    let name = b"bench";
    let payload = n.to_le_bytes();
    let size = 1 + name.len() + payload.len();
    assert!(size < 128, "one-byte LEB128 sizes");
    wasm.extend_from_slice(&[0, size as u8, name.len() as u8]);
    wasm.extend_from_slice(name);
    wasm.extend_from_slice(&payload);
    wasm
}

impl Host {
    /// Starts a host with the `echo` and `hostile` test guests installed.
    pub fn start_with_guests() -> Self {
        Self::start_with_installed(&[
            ("echo", guests::GUEST_ECHO),
            ("hostile", guests::GUEST_HOSTILE),
        ])
    }

    /// Starts a host with the test guests `(name, component)` installed as
    /// team `testing`'s plugins.
    pub fn start_with_installed(installed: &[(&str, &str)]) -> Self {
        Self::start_with_installed_and_args(installed, &[])
    }

    /// The same, with `args` added to `serve`.
    pub fn start_with_installed_and_args(installed: &[(&str, &str)], args: &[&str]) -> Self {
        let scratch = tempfile::tempdir().expect("temp dir");
        let data = scratch.path().join("data");
        for (name, wasm) in installed {
            install_guest(&data, name, wasm);
        }
        let args = args.iter().map(|arg| (*arg).to_owned()).collect();
        let mut host = Self::spawn(data, scratch.path().join("logs"), args);
        host._scratch = Some(scratch);
        host
    }
}

/// A benchmark's setting: the environment variable `name` as a number, or
/// `default`.
pub fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `seconds`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A response: status and parsed JSON body (`Value::Null` if not JSON).
#[derive(Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: String,
    /// `Retry-After`, if any.
    pub retry_after: Option<String>,
    /// Body as text.
    pub text: String,
    /// Body as JSON.
    pub json: Value,
}

impl Reply {
    /// Asserts the error envelope with `status` and returns its code.
    pub fn expect_error(&self, status: u16) -> String {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(self.json["success"], json!(false), "body: {}", self.text);
        let code = self.json["error"]["code"]
            .as_str()
            .expect("error.code")
            .to_owned();
        assert!(
            self.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "error.message missing: {}",
            self.text
        );
        code
    }

    /// Asserts the success envelope with `status` and returns `data`.
    pub fn expect_ok(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(self.json["success"], json!(true), "body: {}", self.text);
        self.json["data"].clone()
    }
}

/// A plain HTTP client for the tests.
pub struct Client {
    http: reqwest::Client,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client with a generous timeout.
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
        }
    }

    /// Sends a request with an optional raw body and content type.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, url);
        if let Some((content_type, bytes)) = body {
            if !content_type.is_empty() {
                request = request.header("content-type", content_type);
            }
            request = request.body(bytes);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request sent");
        Reply::read(response).await
    }

    /// GET.
    pub async fn get(&self, url: &str) -> Reply {
        self.send("GET", url, None, &[]).await
    }

    /// POST with a JSON text body sent exactly as given.
    pub async fn post_json(&self, url: &str, body: &str) -> Reply {
        self.send(
            "POST",
            url,
            Some(("application/json", body.as_bytes().to_vec())),
            &[],
        )
        .await
    }
}

impl Client {
    /// DELETE.
    pub async fn delete(&self, url: &str) -> Reply {
        self.send("DELETE", url, None, &[]).await
    }

    /// PUT of a plugin upload: a multipart form with `manifest` and
    /// `component`, as `autoagent plugin push` sends it.
    pub async fn put_plugin(&self, url: &str, manifest: &str, component: Vec<u8>) -> Reply {
        self.put_plugin_as(url, manifest, component, None).await
    }

    /// PUT of a plugin upload with the `manifest` part alone, for a
    /// manifest that names a bundled component (`component = "core/..."`).
    pub async fn put_plugin_manifest(&self, url: &str, manifest: &str) -> Reply {
        let form = reqwest::multipart::Form::new().text("manifest", manifest.to_owned());
        Reply::read(
            self.http
                .put(url)
                .multipart(form)
                .send()
                .await
                .expect("request sent"),
        )
        .await
    }

    /// The same upload, sent with `Authorization: Bearer <secret>` when a
    /// secret is given.
    pub async fn put_plugin_as(
        &self,
        url: &str,
        manifest: &str,
        component: Vec<u8>,
        secret: Option<&str>,
    ) -> Reply {
        let form = reqwest::multipart::Form::new()
            .text("manifest", manifest.to_owned())
            .part(
                "component",
                reqwest::multipart::Part::bytes(component).file_name("plugin.wasm"),
            );
        let mut request = self.http.put(url).multipart(form);
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        Reply::read(request.send().await.expect("request sent")).await
    }
}

impl Reply {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.expect("body read");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            content_type,
            retry_after,
            text,
            json,
        }
    }
}

/// One team attacking the host with runaway plugins while another team's
/// calls are measured: shared by the isolation test and benchmark.
pub mod attack {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::{Client, Host, echo_wasm, guests, probe_manifest};

    /// Uploads the hostile guest as team `attack`'s plugin `hostile` and
    /// the echo guest as team `ops`'s plugin `probe`.
    pub async fn install(host: &Host) {
        let client = Client::new();
        let manifest = std::fs::read_to_string(guests::GUEST_HOSTILE_MANIFEST)
            .expect("hostile manifest")
            .replace("team = \"testing\"", "team = \"attack\"");
        let wasm = std::fs::read(guests::GUEST_HOSTILE).expect("hostile guest");
        client
            .put_plugin(&host.url("/teams/attack/plugins/hostile"), &manifest, wasm)
            .await
            .expect_ok(201);
        client
            .put_plugin(
                &host.url("/teams/ops/plugins/probe"),
                &probe_manifest("1.0.0"),
                echo_wasm(),
            )
            .await
            .expect_ok(201);
    }

    /// Runaway calls kept going until dropped.
    pub struct Attack {
        stop: Arc<AtomicBool>,
        /// Attacking calls that have ended so far.
        pub ended: Arc<AtomicUsize>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    }

    impl Attack {
        /// Starts `spinners` clients calling `spin` and `bombs` calling
        /// `grow_memory`, each again as soon as its last call ends.
        pub fn start(host: &Host, spinners: usize, bombs: usize) -> Self {
            let stop = Arc::new(AtomicBool::new(false));
            let ended = Arc::new(AtomicUsize::new(0));
            let url = host.url("/teams/attack/plugins/hostile/invoke");
            let tasks = (0..spinners + bombs)
                .map(|n| {
                    let (stop, ended, url) = (stop.clone(), ended.clone(), url.clone());
                    let capability = if n < spinners { "spin" } else { "grow_memory" };
                    tokio::spawn(async move {
                        let client = Client::new();
                        let body = format!(r#"{{"capability": "{capability}", "input": {{}}}}"#);
                        while !stop.load(Ordering::Relaxed) {
                            let _ = client.post_json(&url, &body).await;
                            ended.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            Self { stop, ended, tasks }
        }

        /// Stops the attack and waits for its last calls to end.
        pub async fn stop(self) {
            self.stop.store(true, Ordering::Relaxed);
            for task in self.tasks {
                let _ = task.await;
            }
        }
    }

    /// Latencies of `n` calls, one after another, of team `ops`'s `echo`;
    /// every call must succeed.
    pub async fn victim_calls(host: &Host, n: usize) -> Vec<Duration> {
        let client = Client::new();
        let url = host.url("/teams/ops/plugins/probe/invoke");
        let mut latencies = Vec::with_capacity(n);
        for i in 0..n {
            let started = Instant::now();
            let body = format!(r#"{{"capability": "echo", "input": {i}}}"#);
            let data = client.post_json(&url, &body).await.expect_ok(200);
            latencies.push(started.elapsed());
            assert_eq!(data, serde_json::json!(i));
        }
        latencies
    }

    /// Latencies of `n` `GET /status` calls, one after another.
    pub async fn status_calls(host: &Host, n: usize) -> Vec<Duration> {
        let client = Client::new();
        let url = host.url("/status");
        let mut latencies = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            client.get(&url).await.expect_ok(200);
            latencies.push(started.elapsed());
        }
        latencies
    }

    /// The `q` quantile (0 to 1) of `latencies`.
    pub fn quantile(latencies: &[Duration], q: f64) -> Duration {
        let mut sorted = latencies.to_vec();
        sorted.sort();
        let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted[index]
    }
}
