//! The capabilities: run the granted programs, parse what they print, judge it.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use autoagent_sdk::commands::{self, CommandOutput};
use autoagent_sdk::serde_json::{Map, Value, json};
use autoagent_sdk::{PluginError, to_output};
use serde::{Deserialize, Serialize};

use crate::parse;
use crate::{Finding, Status};

// Programs by the path they have on Debian 12 and later, where /bin is a
// link to /usr/bin. A grant matches the exact path asked for, so these must
// agree with plugin.toml.
const CAT: &str = "/usr/bin/cat";
const NPROC: &str = "/usr/bin/nproc";
const DF: &str = "/usr/bin/df";
const GETENT: &str = "/usr/bin/getent";
const FIND: &str = "/usr/bin/find";
const DU: &str = "/usr/bin/du";
const STAT: &str = "/usr/bin/stat";
const SHA256SUM: &str = "/usr/bin/sha256sum";

/// The directory `log_usage` and `old_logs` look at; the grants fix it.
const LOG_DIR: &str = "/var/log";
/// Where backups may be checked; the grants allow this folder and below.
const BACKUP_DIR: &str = "/var/backups";

/// Most paths listed by `world_writable` and by `old_logs`; the counts are whole.
const WORLD_WRITABLE_LISTED: usize = 100;
const OLD_LOGS_LISTED: usize = 200;
/// Most names `network_reachability` resolves: each lookup may take its
/// grant's whole second when DNS does not answer, and the call has five.
const MAX_HOSTS: usize = 4;
/// The largest `days` the `old_logs` grant's pattern (one to four digits) allows.
const MAX_DAYS: u32 = 9999;

/// Runs a granted program. The host answers a refusal and a failure to
/// start with one string; a refusal becomes `denied` so that a plan (and
/// an operator) can tell "not allowed" from "broken".
fn run(program: &str, args: &[&str]) -> Result<CommandOutput, PluginError> {
    commands::run(program, args).map_err(|err| {
        let message = err.message();
        // The real host's wording, then the SDK test host's.
        if message.contains("grants no such command")
            || message.contains("not allowed by the manifest")
        {
            PluginError::denied(message)
        } else {
            PluginError::failed(message)
        }
    })
}

/// `program args...` as one would type it, for messages.
fn command_line(program: &str, args: &[&str]) -> String {
    let mut line = program.to_owned();
    for arg in args {
        line.push(' ');
        line.push_str(arg);
    }
    line
}

/// Why a program that ran did not succeed: its exit and last stderr line.
fn failure(program: &str, args: &[&str], out: &CommandOutput) -> PluginError {
    let exit = if out.status < 0 {
        "was killed".to_owned()
    } else {
        format!("exited with {}", out.status)
    };
    let stderr = out.stderr_text();
    let reason = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    let reason: String = reason.trim().chars().take(200).collect();
    PluginError::failed(format!(
        "`{}` {exit}: {reason}",
        command_line(program, args)
    ))
}

/// Runs a program that must succeed and returns what it printed.
fn run_ok(program: &str, args: &[&str]) -> Result<String, PluginError> {
    let out = run(program, args)?;
    if !out.success() {
        return Err(failure(program, args, &out));
    }
    Ok(out.stdout_text())
}

/// Reads a file through the `cat` grant for exactly that file.
fn read(path: &str) -> Result<String, PluginError> {
    run_ok(CAT, &[path])
}

/// Reads a file that may be absent on some kernels (`/proc/net/tcp6`
/// without IPv6): `None` when cat fails. A refusal still fails the call.
fn read_optional(path: &str) -> Result<Option<String>, PluginError> {
    let out = run(CAT, &[path])?;
    Ok(out.success().then(|| out.stdout_text()))
}

/// Turns a parser's complaint into the call's error, naming the source.
fn unexpected(source: &str) -> impl FnOnce(String) -> PluginError + '_ {
    move |why| PluginError::failed(format!("unexpected output of {source}: {why}"))
}

/// The details of a finding from a serializable struct.
fn details<T: Serialize>(value: &T) -> Result<Map<String, Value>, PluginError> {
    match to_output(value)? {
        Value::Object(map) => Ok(map),
        other => Err(PluginError::failed(format!(
            "details are not an object: {other}"
        ))),
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `1.5 GiB`: KiB in the largest binary unit that keeps the number over 1.
fn human_kib(kib: u64) -> String {
    let mut value = kib as f64;
    for unit in ["KiB", "MiB", "GiB", "TiB"] {
        if value < 1024.0 {
            return format!("{value:.1} {unit}");
        }
        value /= 1024.0;
    }
    format!("{value:.1} PiB")
}

/// Up to ten items joined with commas, then how many more.
fn short_list<T: ToString>(items: &[T]) -> String {
    let mut text: Vec<String> = items.iter().take(10).map(ToString::to_string).collect();
    if items.len() > 10 {
        text.push(format!("and {} more", items.len() - 10));
    }
    text.join(", ")
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

// ---- cpu_load ----

/// Input of `cpu_load`.
#[derive(Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CpuLoadInput {
    warn_per_cpu: f64,
    crit_per_cpu: f64,
}

impl Default for CpuLoadInput {
    fn default() -> Self {
        Self {
            warn_per_cpu: 1.0,
            crit_per_cpu: 2.0,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CpuLoad {
    load1: f64,
    load5: f64,
    load15: f64,
    cpus: u32,
    load1_per_cpu: f64,
}

/// Load averages and the load per CPU, judged on the 1-minute load.
pub fn cpu_load(input: CpuLoadInput) -> Result<Finding, PluginError> {
    let load = parse::loadavg(&read("/proc/loadavg")?).map_err(unexpected("/proc/loadavg"))?;
    let cpus = cpu_count()?;
    // Judged on the rounded value the output shows, so the two agree.
    let per_cpu = round2(load.load1 / f64::from(cpus));
    let status = Status::from_thresholds(per_cpu, input.warn_per_cpu, input.crit_per_cpu);
    Ok(Finding {
        status,
        summary: format!(
            "load {:.2} on {}: {per_cpu:.2} per CPU",
            load.load1,
            plural(cpus as usize, "CPU", "CPUs")
        ),
        details: details(&CpuLoad {
            load1: load.load1,
            load5: load.load5,
            load15: load.load15,
            cpus,
            load1_per_cpu: per_cpu,
        })?,
    })
}

/// Online CPUs: the `processor` lines of /proc/cpuinfo, which count the
/// CPUs the load average is spread over, or nproc where cpuinfo has none
/// (some architectures list no such lines).
fn cpu_count() -> Result<u32, PluginError> {
    if let Some(text) = read_optional("/proc/cpuinfo")? {
        let n = parse::cpuinfo_processors(&text);
        if n > 0 {
            return Ok(n);
        }
    }
    parse::nproc(&run_ok(NPROC, &[])?).map_err(unexpected("nproc"))
}

// ---- memory_usage ----

/// Input of `memory_usage`.
#[derive(Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MemoryInput {
    warn_percent: f64,
    crit_percent: f64,
}

impl Default for MemoryInput {
    fn default() -> Self {
        Self {
            warn_percent: 80.0,
            crit_percent: 95.0,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Memory {
    total_kib: u64,
    available_kib: u64,
    used_percent: f64,
}

/// Memory in use: what is not available (free, or reclaimable cache).
pub fn memory_usage(input: MemoryInput) -> Result<Finding, PluginError> {
    let mem = parse::meminfo(&read("/proc/meminfo")?).map_err(unexpected("/proc/meminfo"))?;
    let used_kib = mem.total_kib - mem.available_kib;
    let used_percent = round1(used_kib as f64 * 100.0 / mem.total_kib as f64);
    Ok(Finding {
        status: Status::from_thresholds(used_percent, input.warn_percent, input.crit_percent),
        summary: format!(
            "memory {used_percent:.1}% used ({} of {})",
            human_kib(used_kib),
            human_kib(mem.total_kib)
        ),
        details: details(&Memory {
            total_kib: mem.total_kib,
            available_kib: mem.available_kib,
            used_percent,
        })?,
    })
}

// ---- disk_usage ----

/// Input of `disk_usage`.
#[derive(Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DiskInput {
    warn_percent: f64,
    crit_percent: f64,
}

impl Default for DiskInput {
    fn default() -> Self {
        Self {
            warn_percent: 80.0,
            crit_percent: 90.0,
        }
    }
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Filesystem {
    mount: String,
    #[serde(rename = "type")]
    fs_type: String,
    size_kib: u64,
    used_kib: u64,
    used_percent: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Disk {
    filesystems: Vec<Filesystem>,
    worst: Option<Filesystem>,
}

/// Usage of every disk filesystem, judged on the fullest.
///
/// Memory-backed and image filesystems are left out in code rather than
/// with `df -x`: excluding `overlay` that way would hide a container's own
/// root, and df fails outright when every filesystem is excluded.
pub fn disk_usage(input: DiskInput) -> Result<Finding, PluginError> {
    const ARGS: [&str; 3] = ["-P", "-k", "-T"];
    let out = run(DF, &ARGS)?;
    // df exits 1 when one mount cannot be read (a stale network share) but
    // still lists the others; only output without its header is a failure.
    let entries = match parse::df(&out.stdout_text()) {
        Ok(entries) => entries,
        Err(_) if !out.success() => return Err(failure(DF, &ARGS, &out)),
        Err(why) => return Err(unexpected("df")(why)),
    };
    let filesystems: Vec<Filesystem> = entries
        .iter()
        .filter(|entry| parse::df_counts(entry))
        .map(|entry| Filesystem {
            mount: entry.mount.clone(),
            fs_type: entry.fs_type.clone(),
            size_kib: entry.size_kib,
            used_kib: entry.used_kib,
            used_percent: entry.used_percent,
        })
        .collect();
    // The first of the fullest, so ties go to the one df lists first (`/`).
    let worst = filesystems
        .iter()
        .rev()
        .max_by_key(|fs| fs.used_percent)
        .cloned();
    let (status, summary) = match &worst {
        None => (
            Status::Warning,
            "df listed no disk filesystem to check".to_owned(),
        ),
        Some(fs) => (
            Status::from_thresholds(
                f64::from(fs.used_percent),
                input.warn_percent,
                input.crit_percent,
            ),
            format!(
                "{} is {}% full, the fullest of {}",
                fs.mount,
                fs.used_percent,
                plural(filesystems.len(), "filesystem", "filesystems")
            ),
        ),
    };
    Ok(Finding {
        status,
        summary,
        details: details(&Disk { filesystems, worst })?,
    })
}

// ---- listening_services ----

/// Input of `listening_services`.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct ListeningInput {
    expect: Vec<u16>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Listening {
    ports: Vec<u16>,
    count: usize,
    expected: Vec<u16>,
    missing: Vec<u16>,
}

/// TCP ports in LISTEN on IPv4 and IPv6; any expected one missing is critical.
pub fn listening_services(input: ListeningInput) -> Result<Finding, PluginError> {
    let (mut ports, _) =
        parse::listening_ports(&read("/proc/net/tcp")?).map_err(unexpected("/proc/net/tcp"))?;
    if let Some(text) = read_optional("/proc/net/tcp6")? {
        let (v6, _) = parse::listening_ports(&text).map_err(unexpected("/proc/net/tcp6"))?;
        ports.extend(v6);
    }
    ports.sort_unstable();
    ports.dedup();
    let mut expected = input.expect;
    expected.sort_unstable();
    expected.dedup();
    let missing: Vec<u16> = expected
        .iter()
        .copied()
        .filter(|port| ports.binary_search(port).is_err())
        .collect();
    let (status, summary) = if missing.is_empty() {
        let listed = if ports.is_empty() {
            String::new()
        } else {
            format!(": {}", short_list(&ports))
        };
        (
            Status::Ok,
            format!(
                "{} listening{listed}",
                plural(ports.len(), "TCP port", "TCP ports")
            ),
        )
    } else {
        (
            Status::Critical,
            format!(
                "expected {} not listening: {}",
                if missing.len() == 1 { "port" } else { "ports" },
                short_list(&missing)
            ),
        )
    };
    Ok(Finding {
        status,
        summary,
        details: details(&Listening {
            count: ports.len(),
            ports,
            expected,
            missing,
        })?,
    })
}

// ---- network_reachability ----

/// Input of `network_reachability`.
#[derive(Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ReachabilityInput {
    hosts: Vec<String>,
}

impl Default for ReachabilityInput {
    fn default() -> Self {
        Self {
            hosts: vec!["localhost".to_owned()],
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Reachability {
    default_route: bool,
    default_route_interfaces: Vec<String>,
    resolved: BTreeMap<String, Vec<String>>,
    unresolved: Vec<String>,
}

/// Whether `name` may be handed to getent: a host name or an address. The
/// grant already refuses a leading `-` (an option to getent); this also
/// keeps out text no resolver would accept.
fn valid_host(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
}

/// A usable default route (IPv4 or IPv6) and name resolution, with no
/// socket of its own: routes from /proc, names through getent, which asks
/// the machine's resolver (/etc/hosts, DNS) as any program would.
pub fn network_reachability(input: ReachabilityInput) -> Result<Finding, PluginError> {
    let mut hosts: Vec<String> = Vec::new();
    for name in input.hosts {
        if !valid_host(&name) {
            return Err(PluginError::invalid_input(format!(
                "field `hosts`: {name:?} is not a host name or address"
            )));
        }
        if !hosts.contains(&name) {
            hosts.push(name);
        }
    }
    if hosts.len() > MAX_HOSTS {
        return Err(PluginError::invalid_input(format!(
            "field `hosts`: at most {MAX_HOSTS} names, got {}",
            hosts.len()
        )));
    }
    let mut interfaces = parse::default_routes_v4(&read("/proc/net/route")?)
        .map_err(unexpected("/proc/net/route"))?;
    if let Some(text) = read_optional("/proc/net/ipv6_route")? {
        interfaces
            .extend(parse::default_routes_v6(&text).map_err(unexpected("/proc/net/ipv6_route"))?);
    }
    interfaces.sort();
    interfaces.dedup();
    let mut resolved = BTreeMap::new();
    let mut unresolved = Vec::new();
    for name in &hosts {
        let out = run(GETENT, &["hosts", name])?;
        // 2 is "not found"; a timeout or any other exit is as good as that
        // for the question asked: the name does not resolve now.
        let addresses = if out.success() {
            parse::getent_addresses(&out.stdout_text()).map_err(unexpected("getent hosts"))?
        } else {
            Vec::new()
        };
        if addresses.is_empty() {
            unresolved.push(name.clone());
        } else {
            resolved.insert(name.clone(), addresses);
        }
    }
    let default_route = !interfaces.is_empty();
    let route = if default_route {
        format!("default route via {}", interfaces.join(", "))
    } else {
        "no default route".to_owned()
    };
    let names = if unresolved.is_empty() {
        format!("{} resolved", plural(hosts.len(), "name", "names"))
    } else {
        format!(
            "{} of {} did not resolve: {}",
            unresolved.len(),
            plural(hosts.len(), "name", "names"),
            short_list(&unresolved)
        )
    };
    let status = if !hosts.is_empty() && unresolved.len() == hosts.len() {
        Status::Critical
    } else if !unresolved.is_empty() || !default_route {
        Status::Warning
    } else {
        Status::Ok
    };
    Ok(Finding {
        status,
        summary: format!("{route}; {names}"),
        details: details(&Reachability {
            default_route,
            default_route_interfaces: interfaces,
            resolved,
            unresolved,
        })?,
    })
}

// ---- uptime ----

/// Time since boot; always `ok`.
pub fn uptime() -> Result<Finding, PluginError> {
    let seconds =
        parse::uptime_seconds(&read("/proc/uptime")?).map_err(unexpected("/proc/uptime"))?;
    // Whole seconds; the fraction says nothing to a person or a plan.
    let seconds = seconds as u64;
    Ok(Finding {
        status: Status::Ok,
        summary: format!("up {}", parse::human_duration(seconds)),
        details: details(&json!({ "seconds": seconds }))?,
    })
}

// ---- accounts_audit ----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accounts {
    accounts: usize,
    uid_zero: Vec<String>,
    login_shells: usize,
    login_accounts: Vec<String>,
    malformed_lines: usize,
}

/// Accounts in /etc/passwd: a uid 0 other than root's is critical, a
/// damaged line a warning; the accounts one can log in to are listed.
pub fn accounts_audit() -> Result<Finding, PluginError> {
    let passwd = parse::passwd(&read("/etc/passwd")?);
    if passwd.accounts.is_empty() {
        return Err(PluginError::failed(
            "unexpected output of /etc/passwd: no account in it",
        ));
    }
    let uid_zero: Vec<String> = passwd
        .accounts
        .iter()
        .filter(|account| account.uid == 0 && account.name != "root")
        .map(|account| account.name.clone())
        .collect();
    let login_accounts: Vec<String> = passwd
        .accounts
        .iter()
        .filter(|account| parse::is_login_shell(&account.shell))
        .map(|account| account.name.clone())
        .collect();
    let (status, summary) = if !uid_zero.is_empty() {
        (
            Status::Critical,
            format!(
                "uid 0 besides root: {} ({} with a login shell)",
                short_list(&uid_zero),
                plural(login_accounts.len(), "account", "accounts")
            ),
        )
    } else if passwd.malformed > 0 {
        (
            Status::Warning,
            format!(
                "/etc/passwd has {}",
                plural(passwd.malformed, "malformed line", "malformed lines")
            ),
        )
    } else {
        (
            Status::Ok,
            format!(
                "{}, none but root with uid 0, {} with a login shell",
                plural(passwd.accounts.len(), "account", "accounts"),
                login_accounts.len()
            ),
        )
    };
    Ok(Finding {
        status,
        summary,
        details: details(&Accounts {
            accounts: passwd.accounts.len(),
            uid_zero,
            login_shells: login_accounts.len(),
            login_accounts,
            malformed_lines: passwd.malformed,
        })?,
    })
}

// ---- world_writable and old_logs (find) ----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Found {
    files: Vec<String>,
    count: usize,
    /// find could not read part of the tree, or its output was cut off.
    incomplete: bool,
}

/// Runs a granted `find` and lists what it printed. find exits 1 when some
/// directory cannot be read and still prints what it found elsewhere, so
/// that is a partial answer; only a run that printed nothing and complained
/// of something else than permissions failed.
fn run_find(args: &[&str], listed: usize) -> Result<Found, PluginError> {
    let out = run(FIND, args)?;
    let (paths, cut) = parse::find_paths(&out.stdout_text());
    if !out.success() {
        let stderr = out.stderr_text();
        let only_permissions = stderr
            .lines()
            .filter(|line| !line.trim().is_empty())
            .all(|line| line.contains("Permission denied"));
        if paths.is_empty() && !only_permissions {
            return Err(failure(FIND, args, &out));
        }
    }
    Ok(Found {
        count: paths.len(),
        files: paths.into_iter().take(listed).collect(),
        incomplete: cut || !out.success(),
    })
}

/// World-writable regular files under /etc (one filesystem); any is a warning.
pub fn world_writable() -> Result<Finding, PluginError> {
    let found = run_find(
        &["/etc", "-xdev", "-type", "f", "-perm", "-0002"],
        WORLD_WRITABLE_LISTED,
    )?;
    let (status, summary) = if found.count == 0 {
        (Status::Ok, "no world-writable file under /etc".to_owned())
    } else {
        (
            Status::Warning,
            format!(
                "{} under /etc: {}",
                plural(found.count, "world-writable file", "world-writable files"),
                short_list(&found.files)
            ),
        )
    };
    Ok(Finding {
        status,
        summary,
        details: details(&found)?,
    })
}

/// Input of `old_logs`.
#[derive(Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OldLogsInput {
    days: u32,
}

impl Default for OldLogsInput {
    fn default() -> Self {
        Self { days: 30 }
    }
}

/// Files under /var/log last changed more than `days` days ago (find's
/// `-mtime +N`); any is a warning. It only reports: deleting logs is an
/// operator's decision, and the grants allow no command that could.
pub fn old_logs(input: OldLogsInput) -> Result<Finding, PluginError> {
    if input.days > MAX_DAYS {
        return Err(PluginError::invalid_input(format!(
            "field `days`: at most {MAX_DAYS}, got {}",
            input.days
        )));
    }
    let age = format!("+{}", input.days);
    let found = run_find(
        &[LOG_DIR, "-xdev", "-type", "f", "-mtime", &age],
        OLD_LOGS_LISTED,
    )?;
    let (status, summary) = if found.count == 0 {
        (
            Status::Ok,
            format!("no file under {LOG_DIR} older than {} days", input.days),
        )
    } else {
        (
            Status::Warning,
            format!(
                "{} under {LOG_DIR} older than {} days (reported only, nothing deleted)",
                plural(found.count, "file", "files"),
                input.days
            ),
        )
    };
    let mut details = details(&found)?;
    details.insert("days".into(), Value::from(input.days));
    Ok(Finding {
        status,
        summary,
        details,
    })
}

// ---- log_usage ----

/// Input of `log_usage`.
#[derive(Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LogUsageInput {
    warn_mib: f64,
    crit_mib: f64,
}

impl Default for LogUsageInput {
    fn default() -> Self {
        Self {
            warn_mib: 1024.0,
            crit_mib: 10240.0,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LogUsage {
    dir: &'static str,
    total_kib: u64,
    incomplete: bool,
}

/// Space used under /var/log (the grant fixes the folder).
pub fn log_usage(input: LogUsageInput) -> Result<Finding, PluginError> {
    const ARGS: [&str; 2] = ["-sk", LOG_DIR];
    let out = run(DU, &ARGS)?;
    // Like find, du prints its total even when part of the tree is
    // unreadable, and exits 1; the total is then a lower bound.
    let total_kib = match parse::du_kib(&out.stdout_text()) {
        Ok(kib) => kib,
        Err(_) if !out.success() => return Err(failure(DU, &ARGS, &out)),
        Err(why) => return Err(unexpected("du")(why)),
    };
    let mib = total_kib as f64 / 1024.0;
    Ok(Finding {
        status: Status::from_thresholds(mib, input.warn_mib, input.crit_mib),
        summary: format!("{LOG_DIR} uses {}", human_kib(total_kib)),
        details: details(&LogUsage {
            dir: LOG_DIR,
            total_kib,
            incomplete: !out.success(),
        })?,
    })
}

// ---- backup_verification ----

/// Input of `backup_verification`.
#[derive(Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct BackupInput {
    path: String,
    sha256: Option<String>,
    max_age_hours: f64,
}

impl Default for BackupInput {
    fn default() -> Self {
        Self {
            path: BACKUP_DIR.to_owned(),
            sha256: None,
            max_age_hours: 26.0,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Backup {
    path: String,
    exists: bool,
    age_hours: Option<f64>,
    size_bytes: Option<u64>,
    sha256: Option<String>,
    sha256_matches: Option<bool>,
}

/// A backup file (or folder): missing is critical, a SHA-256 that differs
/// from `sha256` is critical, older than `maxAgeHours` is a warning.
pub fn backup_verification(input: BackupInput) -> Result<Finding, PluginError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    backup_at(input, i64::try_from(now).unwrap_or(i64::MAX))
}

/// [`backup_verification`] at `now` (Unix seconds), so tests fix the clock.
pub(crate) fn backup_at(input: BackupInput, now: i64) -> Result<Finding, PluginError> {
    let path = input.path;
    // The grants allow /var/backups and anything below it; which folder is
    // theirs to say, so a path elsewhere goes to the host and is refused
    // there. But a glob cannot refuse `..`, which would climb out from
    // below, so that is refused here.
    if path.split('/').any(|part| part == "..") || path.contains('\0') {
        return Err(PluginError::invalid_input(format!(
            "field `path`: {path:?} must not contain `..`"
        )));
    }
    let expected = match input.sha256 {
        Some(digest) if parse::is_sha256(&digest) => Some(digest.to_ascii_lowercase()),
        Some(digest) => {
            return Err(PluginError::invalid_input(format!(
                "field `sha256`: {digest:?} is not 64 hex digits"
            )));
        }
        None => None,
    };
    let args = ["-c", "%Y %s", path.as_str()];
    let out = run(STAT, &args)?;
    if !out.success() {
        if out.stderr_text().contains("No such file or directory") {
            return Ok(Finding {
                status: Status::Critical,
                summary: format!("backup {path} does not exist"),
                details: details(&Backup {
                    path,
                    exists: false,
                    age_hours: None,
                    size_bytes: None,
                    sha256: None,
                    sha256_matches: None,
                })?,
            });
        }
        return Err(failure(STAT, &args, &out));
    }
    let (mtime, size) = parse::stat_mtime_size(&out.stdout_text()).map_err(unexpected("stat"))?;
    let age_hours = round1(now.saturating_sub(mtime) as f64 / 3600.0);
    let actual = match &expected {
        Some(_) => {
            Some(parse::sha256sum(&run_ok(SHA256SUM, &[&path])?).map_err(unexpected("sha256sum"))?)
        }
        None => None,
    };
    let matches = expected.as_ref().map(|e| Some(e) == actual.as_ref());
    let (status, summary) = if matches == Some(false) {
        (
            Status::Critical,
            format!("backup {path} does not have the expected SHA-256"),
        )
    } else if age_hours > input.max_age_hours {
        (
            Status::Warning,
            format!(
                "backup {path} is {age_hours:.1} hours old, over {} hours",
                input.max_age_hours
            ),
        )
    } else {
        (
            Status::Ok,
            format!(
                "backup {path} is {age_hours:.1} hours old, {size} bytes{}",
                if matches == Some(true) {
                    ", SHA-256 matches"
                } else {
                    ""
                }
            ),
        )
    };
    Ok(Finding {
        status,
        summary,
        details: details(&Backup {
            path,
            exists: true,
            age_hours: Some(age_hours),
            size_bytes: Some(size),
            sha256: actual,
            sha256_matches: matches,
        })?,
    })
}

// ---- summarize ----

/// Input of `summarize`: earlier checks' outputs by name, `null` for one
/// that produced none.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct SummarizeInput {
    checks: BTreeMap<String, Value>,
}

#[derive(Serialize, Default)]
struct Counts {
    ok: usize,
    warning: usize,
    critical: usize,
    missing: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    counts: Counts,
    critical: Vec<String>,
    warning: Vec<String>,
    missing: Vec<String>,
    findings: Vec<Value>,
}

/// The worst status among the checks, with counts. A check without a
/// recognisable `status` (`null`, an error, anything else) is missing: it
/// is counted and named, but it cannot make the result worse or better.
pub fn summarize(input: SummarizeInput) -> Result<Finding, PluginError> {
    let mut counts = Counts::default();
    let mut by_status: BTreeMap<Status, Vec<String>> = BTreeMap::new();
    let mut missing = Vec::new();
    let mut findings = Vec::new();
    for (name, output) in &input.checks {
        let status = output
            .get("status")
            .cloned()
            .and_then(|s| autoagent_sdk::serde_json::from_value::<Status>(s).ok());
        let Some(status) = status else {
            counts.missing += 1;
            missing.push(name.clone());
            continue;
        };
        match status {
            Status::Ok => counts.ok += 1,
            Status::Warning => counts.warning += 1,
            Status::Critical => counts.critical += 1,
        }
        if status > Status::Ok {
            findings.push(json!({
                "check": name,
                "status": status,
                "summary": output.get("summary").cloned().unwrap_or(Value::Null),
            }));
        }
        by_status.entry(status).or_default().push(name.clone());
    }
    let status = by_status.keys().max().copied().unwrap_or(Status::Ok);
    let mut parts = Vec::new();
    for (word, names) in [
        ("critical", by_status.get(&Status::Critical)),
        ("warning", by_status.get(&Status::Warning)),
    ] {
        if let Some(names) = names {
            parts.push(format!("{} {word} ({})", names.len(), short_list(names)));
        }
    }
    if counts.ok > 0 {
        parts.push(format!("{} ok", counts.ok));
    }
    if !missing.is_empty() {
        parts.push(format!(
            "{} missing ({})",
            missing.len(),
            short_list(&missing)
        ));
    }
    let summary = if input.checks.is_empty() {
        "no checks to summarize".to_owned()
    } else {
        format!(
            "{}: {}",
            plural(input.checks.len(), "check", "checks"),
            parts.join(", ")
        )
    };
    Ok(Finding {
        status,
        summary,
        details: details(&Summary {
            counts,
            critical: by_status.remove(&Status::Critical).unwrap_or_default(),
            warning: by_status.remove(&Status::Warning).unwrap_or_default(),
            missing,
            findings,
        })?,
    })
}

// ---- machine ----

/// The machine's hostname and kernel release; always `ok`. It names the
/// machine the other checks read, for a plan's `serverId`.
pub fn machine() -> Result<Finding, PluginError> {
    let hostname = read("/proc/sys/kernel/hostname")?.trim().to_owned();
    if hostname.is_empty() {
        return Err(PluginError::failed(
            "unexpected output of /proc/sys/kernel/hostname: empty",
        ));
    }
    let kernel = read("/proc/sys/kernel/osrelease")?.trim().to_owned();
    Ok(Finding {
        status: Status::Ok,
        summary: format!("{hostname}, Linux {kernel}"),
        details: details(&json!({ "hostname": hostname, "kernel": kernel }))?,
    })
}
