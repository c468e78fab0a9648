//! Parsers of what the granted programs print.
//!
//! Each is a pure function of the text, so it is tested on captured outputs.
//! Text that does not have the expected shape is an `Err` naming what was
//! wrong; nothing here panics on any input.

use std::net::IpAddr;

/// A parser's complaint, turned into `PluginError::Failed` by the caller,
/// which knows which command printed the text.
pub type Parsed<T> = Result<T, String>;

/// Route flags shared by `/proc/net/route` and `/proc/net/ipv6_route`.
const RTF_UP: u32 = 0x0001;
/// A route that answers "unreachable" (the kernel's default IPv6 route on
/// a machine without IPv6 connectivity is one).
const RTF_REJECT: u32 = 0x0200;

/// The lines of `text` that were printed whole. A program's output is cut
/// at its grant's byte cap; a last line without its newline is a piece of a
/// line, so it is dropped and reported as `true` rather than misread.
pub fn complete_lines(text: &str) -> (Vec<&str>, bool) {
    let mut lines: Vec<&str> = text.split('\n').collect();
    // After the final newline `split` yields "", the whole rest of the text.
    let rest = lines.pop().unwrap_or_default();
    (lines, !rest.is_empty())
}

/// `/proc/loadavg`'s first three fields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAvg {
    /// Average run-queue length over 1 minute.
    pub load1: f64,
    /// Over 5 minutes.
    pub load5: f64,
    /// Over 15 minutes.
    pub load15: f64,
}

/// Parses `/proc/loadavg`: `0.52 0.38 0.62 5/97 9452`.
pub fn loadavg(text: &str) -> Parsed<LoadAvg> {
    let mut fields = text.split_whitespace();
    let mut next = |name: &str| -> Parsed<f64> {
        let field = fields.next().ok_or_else(|| format!("no {name} field"))?;
        field
            .parse::<f64>()
            .ok()
            .filter(|value| value.is_finite() && *value >= 0.0)
            .ok_or_else(|| format!("{name} is {field:?}, not a load"))
    };
    Ok(LoadAvg {
        load1: next("1-minute load")?,
        load5: next("5-minute load")?,
        load15: next("15-minute load")?,
    })
}

/// The `processor` lines of `/proc/cpuinfo` (one per online CPU on x86 and
/// arm64 alike); 0 when there are none.
pub fn cpuinfo_processors(text: &str) -> u32 {
    let count = text
        .lines()
        .filter(|line| line.split(':').next().map(str::trim) == Some("processor"))
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// Parses `nproc`: one positive number.
pub fn nproc(text: &str) -> Parsed<u32> {
    let trimmed = text.trim();
    trimmed
        .parse::<u32>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{trimmed:?} is not a CPU count"))
}

/// What `/proc/meminfo` says about memory as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total_kib: u64,
    /// `MemAvailable`, or free + buffers + page cache on kernels before
    /// 3.14, which lack it; never more than the total.
    pub available_kib: u64,
}

/// Parses `/proc/meminfo`: `MemTotal:  24684092 kB` lines.
pub fn meminfo(text: &str) -> Parsed<MemInfo> {
    let value = |key: &str| -> Parsed<Option<u64>> {
        let Some(line) = text
            .lines()
            .find(|line| line.split(':').next() == Some(key))
        else {
            return Ok(None);
        };
        let rest = line.split_once(':').map_or("", |(_, rest)| rest);
        let number = rest.split_whitespace().next().unwrap_or_default();
        number
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("{key} is {:?}, not a number of KiB", rest.trim()))
    };
    let total_kib = value("MemTotal")?
        .filter(|&total| total > 0)
        .ok_or("no MemTotal")?;
    let available_kib = match value("MemAvailable")? {
        Some(available) => available,
        None => match (value("MemFree")?, value("Buffers")?, value("Cached")?) {
            (Some(free), Some(buffers), Some(cached)) => {
                free.saturating_add(buffers).saturating_add(cached)
            }
            _ => return Err("neither MemAvailable nor MemFree, Buffers and Cached".into()),
        },
    };
    Ok(MemInfo {
        total_kib,
        available_kib: available_kib.min(total_kib),
    })
}

/// One line of `df -P -k -T`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DfEntry {
    /// The device or source, as df prints it.
    pub filesystem: String,
    /// The filesystem type (`ext4`, `tmpfs`, ...).
    pub fs_type: String,
    /// Size in KiB.
    pub size_kib: u64,
    /// Used KiB.
    pub used_kib: u64,
    /// Available KiB.
    pub available_kib: u64,
    /// df's own percentage: used / (used + available), rounded up.
    pub used_percent: u32,
    /// Where it is mounted; may contain spaces.
    pub mount: String,
}

/// Parses `df -P -k -T`. A mount point (or a source) may contain spaces, so
/// a line is split at the run of three numbers and a percentage, which
/// neither can be mistaken for, and the mount point is the rest of the line.
pub fn df(text: &str) -> Parsed<Vec<DfEntry>> {
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    let header = lines.next().ok_or("no output")?;
    if !(header.starts_with("Filesystem") && header.contains("Type")) {
        return Err(format!("unexpected header {header:?}"));
    }
    lines.map(df_line).collect()
}

fn df_line(line: &str) -> Parsed<DfEntry> {
    let tokens = tokens(line);
    let number = |i: usize| {
        tokens
            .get(i)
            .and_then(|&(s, e)| line[s..e].parse::<u64>().ok())
    };
    let percent = |i: usize| -> Option<Option<u32>> {
        let (s, e) = *tokens.get(i)?;
        match &line[s..e] {
            "-" => Some(None),
            text => text.strip_suffix('%')?.parse::<u32>().ok().map(Some),
        }
    };
    // The source is at least one token and the type exactly one, so the
    // numbers start at the third token or later.
    for k in 2..tokens.len() {
        let (Some(size_kib), Some(used_kib), Some(available_kib), Some(given), Some(&mount)) = (
            number(k),
            number(k + 1),
            number(k + 2),
            percent(k + 3),
            tokens.get(k + 4),
        ) else {
            continue;
        };
        let used_percent = given.unwrap_or_else(|| ceil_percent(used_kib, available_kib));
        return Ok(DfEntry {
            filesystem: line[tokens[0].0..tokens[k - 2].1].to_owned(),
            fs_type: line[tokens[k - 1].0..tokens[k - 1].1].to_owned(),
            size_kib,
            used_kib,
            available_kib,
            used_percent,
            mount: line[mount.0..].trim_end().to_owned(),
        });
    }
    Err(format!("unexpected line {line:?}"))
}

/// used / (used + available) in percent, rounded up as df rounds it.
fn ceil_percent(used: u64, available: u64) -> u32 {
    let whole = u128::from(used) + u128::from(available);
    if whole == 0 {
        return 0;
    }
    let percent = (u128::from(used) * 100).div_ceil(whole);
    u32::try_from(percent).unwrap_or(100)
}

/// Byte ranges of the whitespace-separated tokens of `line`.
fn tokens(line: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, line.len()));
    }
    out
}

/// Whether a df entry is storage worth checking. Memory-backed filesystems
/// come and go with processes; squashfs and iso9660 are read-only images,
/// always 100% full by design (snaps, live media); overlay mounts elsewhere
/// than `/` are container layers that repeat the disk under them, while an
/// overlay root is what a container's own disk is. Empty ones hold nothing.
pub fn df_counts(entry: &DfEntry) -> bool {
    const SKIPPED: [&str; 5] = ["tmpfs", "devtmpfs", "ramfs", "squashfs", "iso9660"];
    entry.size_kib > 0
        && !SKIPPED.contains(&entry.fs_type.as_str())
        && (entry.fs_type != "overlay" || entry.mount == "/")
}

/// The ports in state LISTEN (`0A`) in `/proc/net/tcp` or `/proc/net/tcp6`,
/// in the order listed, and whether the text was cut off.
pub fn listening_ports(text: &str) -> Parsed<(Vec<u16>, bool)> {
    let (lines, cut) = complete_lines(text);
    let mut lines = lines.into_iter().filter(|line| !line.trim().is_empty());
    let header = lines.next().ok_or("no output")?;
    if header.split_whitespace().next() != Some("sl") {
        return Err(format!("unexpected header {header:?}"));
    }
    let mut ports = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
            return Err(format!("unexpected line {line:?}"));
        };
        let port = local
            .rsplit_once(':')
            .and_then(|(_, port)| u16::from_str_radix(port, 16).ok())
            .ok_or_else(|| format!("unexpected local address {local:?}"))?;
        if *state == "0A" {
            ports.push(port);
        }
    }
    Ok((ports, cut))
}

/// The interfaces of the usable IPv4 default routes in `/proc/net/route`.
/// Columns are found by the header's names, which the kernel has kept
/// since 2.2, rather than by position.
pub fn default_routes_v4(text: &str) -> Parsed<Vec<String>> {
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("no output")?
        .split_whitespace()
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("no {name} column in the header"))
    };
    let (iface, destination, flags, mask) = (
        column("Iface")?,
        column("Destination")?,
        column("Flags")?,
        column("Mask")?,
    );
    let mut out = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .copied()
                .ok_or_else(|| format!("unexpected line {line:?}"))
        };
        let route_flags = u32::from_str_radix(field(flags)?, 16)
            .map_err(|_| format!("unexpected flags in {line:?}"))?;
        if field(destination)? == "00000000" && field(mask)? == "00000000" && usable(route_flags) {
            out.push(field(iface)?.to_owned());
        }
    }
    Ok(out)
}

/// The interfaces of the usable IPv6 default routes in
/// `/proc/net/ipv6_route` (no header; ten columns: destination, prefix
/// length, source, its length, next hop, metric, references, use, flags,
/// interface).
pub fn default_routes_v6(text: &str) -> Parsed<Vec<String>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [destination, prefix, _, _, _, _, _, _, flags, iface] = fields[..] else {
            return Err(format!("unexpected line {line:?}"));
        };
        let route_flags =
            u32::from_str_radix(flags, 16).map_err(|_| format!("unexpected flags in {line:?}"))?;
        if destination.len() == 32
            && destination.bytes().all(|b| b == b'0')
            && prefix == "00"
            && usable(route_flags)
        {
            out.push(iface.to_owned());
        }
    }
    Ok(out)
}

fn usable(flags: u32) -> bool {
    flags & RTF_UP != 0 && flags & RTF_REJECT == 0
}

/// The addresses `getent hosts NAME` printed (`ADDRESS NAME ALIAS...` per
/// line), first seen first.
pub fn getent_addresses(text: &str) -> Parsed<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let first = line.split_whitespace().next().unwrap_or_default();
        let address: IpAddr = first
            .parse()
            .map_err(|_| format!("{first:?} is not an address"))?;
        let address = address.to_string();
        if !out.contains(&address) {
            out.push(address);
        }
    }
    Ok(out)
}

/// Parses `/proc/uptime`: seconds since boot, then idle seconds.
pub fn uptime_seconds(text: &str) -> Parsed<f64> {
    let first = text.split_whitespace().next().ok_or("no output")?;
    first
        .parse::<f64>()
        .ok()
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .ok_or_else(|| format!("{first:?} is not a number of seconds"))
}

/// `3 days, 4 hours, 5 minutes`: the non-zero parts down to minutes, or
/// the seconds when under a minute.
pub fn human_duration(seconds: u64) -> String {
    fn part(n: u64, unit: &str) -> String {
        format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
    }
    if seconds < 60 {
        return part(seconds, "second");
    }
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60);
    [(days, "day"), (hours, "hour"), (minutes, "minute")]
        .into_iter()
        .filter(|&(n, _)| n > 0)
        .map(|(n, unit)| part(n, unit))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One account of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Login shell; empty means `/bin/sh` to login(1).
    pub shell: String,
}

/// `/etc/passwd` read line by line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Passwd {
    /// The well-formed accounts.
    pub accounts: Vec<Account>,
    /// Lines that are not `name:password:uid:gid:gecos:home:shell`.
    pub malformed: usize,
}

/// Parses `/etc/passwd`. A bad line is counted, not fatal: an audit should
/// report a damaged file, not refuse to read the rest of it. Comments and
/// NIS compat lines (`+`, `-`) are not accounts and are skipped.
pub fn passwd(text: &str) -> Passwd {
    let mut out = Passwd::default();
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with(['#', '+', '-']) {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        match fields[..] {
            [name, _, uid, _, _, _, shell] if !name.is_empty() => match uid.parse::<u32>() {
                Ok(uid) => out.accounts.push(Account {
                    name: name.to_owned(),
                    uid,
                    shell: shell.to_owned(),
                }),
                Err(_) => out.malformed += 1,
            },
            _ => out.malformed += 1,
        }
    }
    out
}

/// Whether someone could log in with `shell`: anything but the shells that
/// refuse (`nologin`, `false`, `true`) or run one command and stop (`sync`,
/// `shutdown`, `halt`). Empty means `/bin/sh`.
pub fn is_login_shell(shell: &str) -> bool {
    let name = shell.rsplit('/').next().unwrap_or_default();
    !["nologin", "false", "true", "sync", "shutdown", "halt"].contains(&name)
}

/// Parses `du -sk DIR`: `KIB<TAB>DIR`.
pub fn du_kib(text: &str) -> Parsed<u64> {
    let line = text
        .lines()
        .rfind(|line| !line.trim().is_empty())
        .ok_or("no output")?;
    let first = line.split_whitespace().next().unwrap_or_default();
    first
        .parse::<u64>()
        .map_err(|_| format!("unexpected line {line:?}"))
}

/// Parses `stat -c '%Y %s'`: modification time (Unix seconds) and size.
pub fn stat_mtime_size(text: &str) -> Parsed<(i64, u64)> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [mtime, size] = fields[..] else {
        return Err(format!("expected two numbers, got {:?}", text.trim()));
    };
    match (mtime.parse::<i64>(), size.parse::<u64>()) {
        (Ok(mtime), Ok(size)) => Ok((mtime, size)),
        _ => Err(format!("expected two numbers, got {:?}", text.trim())),
    }
}

/// Parses `sha256sum FILE`: the digest in lowercase hex. A name with a
/// backslash or newline makes sha256sum escape it and start the line
/// with `\`.
pub fn sha256sum(text: &str) -> Parsed<String> {
    let first = text.split_whitespace().next().ok_or("no output")?;
    let digest = first.strip_prefix('\\').unwrap_or(first);
    if is_sha256(digest) {
        Ok(digest.to_ascii_lowercase())
    } else {
        Err(format!("{first:?} is not a SHA-256 digest"))
    }
}

/// Whether `text` is 64 hex digits.
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The paths `find` printed, one per line, and whether the output was cut
/// off. A file name holding a newline shows as two lines; the grant fixes
/// find's arguments, so `-print0` is not on offer, and such names are rare
/// enough under `/etc` and `/var/log` that they are reported as found.
pub fn find_paths(text: &str) -> (Vec<String>, bool) {
    let (lines, cut) = complete_lines(text);
    let paths = lines
        .into_iter()
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    (paths, cut)
}
