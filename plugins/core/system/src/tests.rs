//! Native tests: the parsers on outputs captured on a Debian 12 machine (and
//! awkward ones), and every capability end to end against the SDK's test
//! host, which answers only the commands `plugin.toml` grants.

use autoagent_sdk::commands::CommandOutput;
use autoagent_sdk::serde_json::json;
use autoagent_sdk::testing;

use super::*;
use crate::parse::*;

// ---- outputs captured on the development machine (Debian 12) ----

const LOADAVG: &str = "2.52 2.38 2.62 5/97 9452\n";

const CPUINFO: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel name\t: AMD EPYC\nflags\t\t: fpu vme de pse tsc msr pae\nbogomips\t: 5192.23\npower management:\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel name\t: AMD EPYC\nflags\t\t: fpu vme de pse tsc msr pae\nbogomips\t: 5192.23\npower management:\n\n";

const MEMINFO: &str = "MemTotal:       24684092 kB\nMemFree:         3098224 kB\nMemAvailable:   22728964 kB\nBuffers:           52552 kB\nCached:         19352388 kB\nSwapCached:            0 kB\nActive(anon):       1548 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\n";

const DF: &str = "\
Filesystem              Type     1024-blocks     Used Available Capacity Mounted on
devtmpfs                devtmpfs    12334492        0  12334492       0% /dev
tmpfs                   tmpfs       24684092        0  24684092       0% /dev/shm
/dev/vda                ext4       264212084 81566376  13719512      86% /
model_tools_unavailable tmpfs              4        0         4       0% /mnt/sandboxing/model_tools_env/v1/python
tmpfs                   tmpfs       12342044        0  12342044       0% /sys/fs/cgroup
";

const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     \n   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1658 1 00000000e5cdec49 100 0 0 10 0                      \n";

/// This machine has no IPv6 socket, so its tcp6 is the header alone.
const TCP6_EMPTY: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

/// sshd on [::]:22 listening, and an established connection to port 443.
const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20223 1 0000000000000000 100 0 0 10 0\n   1: 0000000000000000FFFF00000100007F:01BB 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 20224 1 0000000000000000 20 4 30 10 -1\n";

const ROUTE: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT                                                       \neth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0                                                                               \neth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0                                                                               \n";

const IPV6_ROUTE: &str = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";

/// The kernel's unreachable default route alone: a machine without IPv6.
const IPV6_ROUTE_REJECT_ONLY: &str = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";

const UPTIME: &str = "11750.60 6935.18\n";

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
sync:x:4:65534:sync:/bin:/bin/sync
games:x:5:60:games:/usr/games:/usr/sbin/nologin
man:x:6:12:man:/var/cache/man:/usr/sbin/nologin
lp:x:7:7:lp:/var/spool/lpd:/usr/sbin/nologin
mail:x:8:8:mail:/var/mail:/usr/sbin/nologin
news:x:9:9:news:/var/spool/news:/usr/sbin/nologin
uucp:x:10:10:uucp:/var/spool/uucp:/usr/sbin/nologin
proxy:x:13:13:proxy:/bin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
backup:x:34:34:backup:/var/backups:/usr/sbin/nologin
list:x:38:38:Mailing List Manager:/var/list:/usr/sbin/nologin
irc:x:39:39:ircd:/run/ircd:/usr/sbin/nologin
_apt:x:42:65534::/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
cloudsdk:x:1000:1000::/home/cloudsdk:/bin/bash
systemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin
systemd-timesync:x:997:997:systemd Time Synchronization:/:/usr/sbin/nologin
messagebus:x:100:102::/nonexistent:/usr/sbin/nologin
polkitd:x:996:996:polkit:/nonexistent:/usr/sbin/nologin
postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash
";

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

// ---- the fake machine ----

fn out(stdout: &str) -> CommandOutput {
    CommandOutput {
        status: 0,
        stdout: stdout.as_bytes().to_vec(),
        stderr: Vec::new(),
    }
}

fn exit(status: i32, stdout: &str, stderr: &str) -> CommandOutput {
    CommandOutput {
        status,
        stdout: stdout.as_bytes().to_vec(),
        stderr: stderr.as_bytes().to_vec(),
    }
}

/// The command grants of plugin.toml, matched as the host matches them
/// (`host/src/plugins/manifest.rs`: exact program, one glob per argument,
/// `*` crossing `/`).
fn grants() -> Vec<(String, Vec<globset::GlobMatcher>)> {
    let manifest: toml::Value = toml::from_str(include_str!("../plugin.toml")).unwrap();
    manifest["permissions"]["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|grant| {
            let patterns = grant
                .get("args")
                .and_then(toml::Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|pattern| {
                    globset::GlobBuilder::new(pattern.as_str().unwrap())
                        .literal_separator(false)
                        .build()
                        .unwrap()
                        .compile_matcher()
                })
                .collect();
            (grant["program"].as_str().unwrap().to_owned(), patterns)
        })
        .collect()
}

fn granted(grants: &[(String, Vec<globset::GlobMatcher>)], program: &str, args: &[String]) -> bool {
    grants.iter().any(|(granted, patterns)| {
        granted == program
            && patterns.len() == args.len()
            && patterns.iter().zip(args).all(|(p, a)| p.is_match(a))
    })
}

/// Installs a machine that answers with `answer`, then with the captured
/// outputs. Like the host, it refuses (in the host's words) whatever
/// plugin.toml does not grant, so a test passes only if the grant does.
fn machine(answer: impl Fn(&str, &[&str]) -> Option<CommandOutput> + 'static) {
    testing::reset();
    let grants = grants();
    testing::on_command(move |program, args| {
        if !granted(&grants, program, args) {
            return Err(format!(
                "running {program:?} with {args:?} is denied: plugin.toml grants no such command"
            ));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Ok(answer(program, &args)
            .or_else(|| captured(program, &args))
            .unwrap_or_else(|| panic!("no answer for {program} {args:?}")))
    });
}

/// The development machine as captured.
fn captured(program: &str, args: &[&str]) -> Option<CommandOutput> {
    let text = match (program, args) {
        ("/usr/bin/cat", ["/proc/loadavg"]) => LOADAVG,
        ("/usr/bin/cat", ["/proc/cpuinfo"]) => CPUINFO,
        ("/usr/bin/cat", ["/proc/meminfo"]) => MEMINFO,
        ("/usr/bin/cat", ["/proc/net/tcp"]) => TCP,
        ("/usr/bin/cat", ["/proc/net/tcp6"]) => TCP6_EMPTY,
        ("/usr/bin/cat", ["/proc/net/route"]) => ROUTE,
        ("/usr/bin/cat", ["/proc/net/ipv6_route"]) => IPV6_ROUTE,
        ("/usr/bin/cat", ["/proc/uptime"]) => UPTIME,
        ("/usr/bin/cat", ["/etc/passwd"]) => PASSWD,
        ("/usr/bin/cat", ["/proc/sys/kernel/hostname"]) => "vm\n",
        ("/usr/bin/cat", ["/proc/sys/kernel/osrelease"]) => "6.1.0-18-amd64\n",
        ("/usr/bin/df", _) => DF,
        ("/usr/bin/getent", ["hosts", "localhost"]) => "127.0.0.1       localhost\n",
        ("/usr/bin/getent", ["hosts", _]) => return Some(exit(2, "", "")),
        ("/usr/bin/find", _) => "",
        ("/usr/bin/du", _) => "656\t/var/log\n",
        ("/usr/bin/stat", _) => "1746802200 4096\n",
        _ => return None,
    };
    Some(out(text))
}

fn call(capability: &str, input: Value) -> Result<Value, PluginError> {
    System::invoke(&testing::context(), capability, input)
}

fn args_of(program: &str) -> Vec<Vec<String>> {
    testing::command_calls()
        .into_iter()
        .filter(|c| c.program == program)
        .map(|c| c.args)
        .collect()
}

// ---- parsers ----

#[test]
fn complete_lines_drop_a_cut_off_last_line() {
    assert_eq!(complete_lines("a\nb\n"), (vec!["a", "b"], false));
    assert_eq!(complete_lines("a\nb"), (vec!["a"], true));
    assert_eq!(complete_lines(""), (vec![], false));
}

#[test]
fn loadavg_parses_the_three_loads() {
    assert_eq!(
        loadavg(LOADAVG),
        Ok(LoadAvg {
            load1: 2.52,
            load5: 2.38,
            load15: 2.62
        })
    );
}

#[test]
fn loadavg_refuses_garbage() {
    for text in ["", "1.0 2.0", "1.0 x 2.0", "-1 0 0", "NaN 1 1", "<html>"] {
        assert!(loadavg(text).is_err(), "{text:?}");
    }
}

#[test]
fn cpu_counts() {
    assert_eq!(cpuinfo_processors(CPUINFO), 2);
    assert_eq!(cpuinfo_processors("garbage\n"), 0);
    assert_eq!(cpuinfo_processors(""), 0);
    assert_eq!(nproc("2\n"), Ok(2));
    assert!(nproc("0\n").is_err());
    assert!(nproc("two").is_err());
    assert!(nproc("").is_err());
}

#[test]
fn meminfo_reads_total_and_available() {
    assert_eq!(
        meminfo(MEMINFO),
        Ok(MemInfo {
            total_kib: 24_684_092,
            available_kib: 22_728_964
        })
    );
}

#[test]
fn meminfo_without_mem_available_adds_free_buffers_and_cache() {
    let old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n";
    assert_eq!(
        meminfo(old),
        Ok(MemInfo {
            total_kib: 1000,
            available_kib: 400
        })
    );
    // Never more available than there is.
    let odd = "MemTotal: 1000 kB\nMemAvailable: 5000 kB\n";
    assert_eq!(meminfo(odd).unwrap().available_kib, 1000);
}

#[test]
fn meminfo_refuses_garbage() {
    for text in [
        "",
        "garbage",
        "MemTotal: 0 kB\nMemAvailable: 0 kB\n",
        "MemTotal: lots kB\n",
        "MemTotal: 1000 kB\n",
    ] {
        assert!(meminfo(text).is_err(), "{text:?}");
    }
}

#[test]
fn df_parses_every_line_of_the_captured_output() {
    let entries = df(DF).unwrap();
    assert_eq!(entries.len(), 5);
    assert_eq!(
        entries[2],
        DfEntry {
            filesystem: "/dev/vda".into(),
            fs_type: "ext4".into(),
            size_kib: 264_212_084,
            used_kib: 81_566_376,
            available_kib: 13_719_512,
            used_percent: 86,
            mount: "/".into(),
        }
    );
    let counted: Vec<&str> = entries
        .iter()
        .filter(|e| df_counts(e))
        .map(|e| e.mount.as_str())
        .collect();
    assert_eq!(counted, ["/"]);
}

#[test]
fn df_keeps_spaces_in_mount_points_and_sources() {
    let text = "Filesystem Type 1024-blocks Used Available Capacity Mounted on\n\
        /dev/sdb1 vfat 1000 250 750 25% /media/usb stick/My Files\n\
        //nas/share name cifs 2000 1000 1000 50% /mnt/nas share\n\
        /dev/sdc1 ext4 0 0 0 - /mnt/empty\n";
    let entries = df(text).unwrap();
    assert_eq!(entries[0].mount, "/media/usb stick/My Files");
    assert_eq!(entries[0].used_percent, 25);
    assert_eq!(entries[1].filesystem, "//nas/share name");
    assert_eq!(entries[1].fs_type, "cifs");
    assert_eq!(entries[1].mount, "/mnt/nas share");
    assert_eq!(entries[2].used_percent, 0);
    assert!(
        !df_counts(&entries[2]),
        "an empty filesystem is not counted"
    );
}

#[test]
fn df_without_a_percentage_computes_it_rounded_up() {
    let text = "Filesystem Type 1024-blocks Used Available Capacity Mounted on\n\
        a ext4 300 100 200 - /a\n";
    assert_eq!(df(text).unwrap()[0].used_percent, 34);
}

#[test]
fn df_keeps_an_overlay_root_and_skips_other_overlays_and_images() {
    let text = "Filesystem Type 1024-blocks Used Available Capacity Mounted on\n\
        overlay overlay 1000 500 500 50% /\n\
        overlay overlay 1000 500 500 50% /var/lib/docker/overlay2/abc/merged\n\
        /dev/loop0 squashfs 1000 1000 0 100% /snap/core/1\n";
    let counted: Vec<String> = df(text)
        .unwrap()
        .into_iter()
        .filter(df_counts)
        .map(|e| e.mount)
        .collect();
    assert_eq!(counted, ["/"]);
}

#[test]
fn df_refuses_garbage() {
    for text in [
        "",
        "garbage\n",
        "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/vda 1 1 0 100% /\n",
        "Filesystem Type 1024-blocks Used Available Capacity Mounted on\n/dev/vda ext4 lots 1 0 100% /\n",
        "Filesystem Type 1024-blocks Used Available Capacity Mounted on\n/dev/vda ext4 1 1 0 100%\n",
    ] {
        assert!(df(text).is_err(), "{text:?}");
    }
}

#[test]
fn tcp_lists_the_listening_ports() {
    assert_eq!(listening_ports(TCP), Ok((vec![2024], false)));
    assert_eq!(listening_ports(TCP6), Ok((vec![22], false)));
    assert_eq!(listening_ports(TCP6_EMPTY), Ok((vec![], false)));
}

#[test]
fn tcp_cut_off_by_the_output_cap_drops_the_partial_line() {
    let cut = &TCP6[..TCP6.len() - 20];
    assert_eq!(listening_ports(cut), Ok((vec![22], true)));
}

#[test]
fn tcp_refuses_garbage() {
    for text in [
        "",
        "garbage\n",
        "  sl  local_address\n   0: nonsense\n",
        "  sl  local_address rem_address st\n   0: 00000000:XYZ 00000000:0000 0A\n",
    ] {
        assert!(listening_ports(text).is_err(), "{text:?}");
    }
}

#[test]
fn routes_find_usable_default_routes() {
    assert_eq!(default_routes_v4(ROUTE), Ok(vec!["eth0".to_owned()]));
    let header_only = ROUTE.lines().next().unwrap();
    assert_eq!(default_routes_v4(header_only), Ok(vec![]));
    assert_eq!(default_routes_v6(IPV6_ROUTE), Ok(vec!["eth0".to_owned()]));
    assert_eq!(default_routes_v6(IPV6_ROUTE_REJECT_ONLY), Ok(vec![]));
    assert_eq!(default_routes_v6(""), Ok(vec![]));
}

#[test]
fn routes_refuse_garbage() {
    assert!(default_routes_v4("").is_err());
    assert!(default_routes_v4("Iface Gateway\neth0 0\n").is_err());
    assert!(
        default_routes_v4("Iface\tDestination\tFlags\tMask\neth0\t00000000\tzz\t00000000\n")
            .is_err()
    );
    assert!(default_routes_v6("garbage\n").is_err());
}

#[test]
fn getent_lists_addresses_once() {
    assert_eq!(
        getent_addresses("127.0.0.1       localhost\n"),
        Ok(vec!["127.0.0.1".to_owned()])
    );
    assert_eq!(
        getent_addresses("::1 localhost ip6-localhost\n10.0.0.1 db\n::1 localhost\n"),
        Ok(vec!["::1".to_owned(), "10.0.0.1".to_owned()])
    );
    assert_eq!(getent_addresses(""), Ok(vec![]));
    assert!(getent_addresses("localhost 127.0.0.1\n").is_err());
}

#[test]
fn uptime_and_its_words() {
    assert_eq!(uptime_seconds(UPTIME), Ok(11750.60));
    assert!(uptime_seconds("").is_err());
    assert!(uptime_seconds("up 3 days").is_err());
    assert_eq!(human_duration(42), "42 seconds");
    assert_eq!(human_duration(60), "1 minute");
    assert_eq!(human_duration(11_750), "3 hours, 15 minutes");
    assert_eq!(human_duration(90_061), "1 day, 1 hour, 1 minute");
    assert_eq!(human_duration(2 * 86_400), "2 days");
}

#[test]
fn passwd_reads_accounts_and_counts_bad_lines() {
    let parsed = passwd(PASSWD);
    assert_eq!(parsed.accounts.len(), 24);
    assert_eq!(parsed.malformed, 0);
    assert_eq!(
        parsed.accounts[0],
        Account {
            name: "root".into(),
            uid: 0,
            shell: "/bin/bash".into()
        }
    );
    let odd = "# comment\n+::::::\nbroken line\nx:x:notanumber:0::/:/bin/sh\n:x:5:5::/:/bin/sh\nok:x:5:5::/:\n";
    let parsed = passwd(odd);
    assert_eq!(parsed.accounts.len(), 1);
    assert_eq!(parsed.malformed, 3);
}

#[test]
fn login_shells() {
    for shell in ["/bin/bash", "/usr/bin/zsh", "", "/bin/sh"] {
        assert!(is_login_shell(shell), "{shell:?}");
    }
    for shell in [
        "/usr/sbin/nologin",
        "/sbin/nologin",
        "/bin/false",
        "/bin/sync",
        "/sbin/shutdown",
        "/sbin/halt",
    ] {
        assert!(!is_login_shell(shell), "{shell:?}");
    }
}

#[test]
fn du_stat_and_sha256sum() {
    assert_eq!(du_kib("656\t/var/log\n"), Ok(656));
    assert!(du_kib("").is_err());
    assert!(du_kib("du: cannot read\n").is_err());
    assert_eq!(
        stat_mtime_size("1746802200 4096\n"),
        Ok((1_746_802_200, 4096))
    );
    assert!(stat_mtime_size("1746802200\n").is_err());
    assert!(stat_mtime_size("a b\n").is_err());
    assert_eq!(
        sha256sum(&format!("{}  /var/backups/db.gz\n", SHA.to_uppercase())),
        Ok(SHA.to_owned())
    );
    assert_eq!(
        sha256sum(&format!("\\{SHA}  /var/backups/odd\\nname\n")),
        Ok(SHA.to_owned())
    );
    assert!(sha256sum("").is_err());
    assert!(sha256sum("abc  file\n").is_err());
}

#[test]
fn find_lists_paths() {
    assert_eq!(find_paths(""), (vec![], false));
    assert_eq!(
        find_paths("/etc/a\n/etc/b c\n"),
        (vec!["/etc/a".to_owned(), "/etc/b c".to_owned()], false)
    );
    assert_eq!(
        find_paths("/etc/a\n/etc/b"),
        (vec!["/etc/a".to_owned()], true)
    );
}

#[test]
fn thresholds() {
    assert_eq!(Status::from_thresholds(0.5, 1.0, 2.0), Status::Ok);
    assert_eq!(Status::from_thresholds(1.0, 1.0, 2.0), Status::Warning);
    assert_eq!(Status::from_thresholds(2.0, 1.0, 2.0), Status::Critical);
    // A critical threshold below the warning one still wins.
    assert_eq!(Status::from_thresholds(1.5, 2.0, 1.0), Status::Critical);
    assert!(Status::Ok < Status::Warning && Status::Warning < Status::Critical);
}

// ---- capabilities end to end ----

#[test]
fn describes_the_capabilities_plugin_toml_lists() {
    let manifest: toml::Value = toml::from_str(include_str!("../plugin.toml")).unwrap();
    let listed: Vec<&str> = manifest["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let described: Vec<String> = System::describe().into_iter().map(|c| c.name).collect();
    assert_eq!(described, listed);
}

#[test]
fn cpu_load_on_the_captured_machine_is_a_warning() {
    machine(|_, _| None);
    let output = call("cpu_load", json!({})).unwrap();
    assert_eq!(
        output,
        json!({
            "status": "warning",
            "summary": "load 2.52 on 2 CPUs: 1.26 per CPU",
            "load1": 2.52, "load5": 2.38, "load15": 2.62,
            "cpus": 2, "load1PerCpu": 1.26
        })
    );
    let line = &testing::logs()[0];
    assert_eq!(line.level, Level::Warn);
    assert_eq!(line.field("capability"), Some("cpu_load"));
}

#[test]
fn cpu_load_takes_thresholds_from_the_input() {
    machine(|_, _| None);
    let relaxed = call("cpu_load", json!({"warnPerCpu": 1.5, "critPerCpu": 3})).unwrap();
    assert_eq!(relaxed["status"], "ok");
    let strict = call("cpu_load", json!({"critPerCpu": 1.26})).unwrap();
    assert_eq!(strict["status"], "critical");
}

#[test]
fn cpu_load_counts_cpus_with_nproc_when_cpuinfo_has_none() {
    machine(|program, args| match (program, args) {
        ("/usr/bin/cat", ["/proc/cpuinfo"]) => Some(out("Hardware\t: something\n")),
        ("/usr/bin/nproc", []) => Some(out("4\n")),
        _ => None,
    });
    let output = call("cpu_load", Value::Null).unwrap();
    assert_eq!(output["cpus"], 4);
    assert_eq!(output["load1PerCpu"], 0.63);
}

#[test]
fn cpu_load_with_garbage_in_loadavg_fails_with_a_clear_message() {
    machine(|program, args| match (program, args) {
        ("/usr/bin/cat", ["/proc/loadavg"]) => Some(out("<html>oops</html>")),
        _ => None,
    });
    let err = call("cpu_load", json!({})).unwrap_err();
    assert!(
        matches!(&err, PluginError::Failed(m) if m.starts_with("unexpected output of /proc/loadavg")),
        "{err}"
    );
}

#[test]
fn memory_usage_reports_used_percent_with_one_decimal() {
    machine(|_, _| None);
    let output = call("memory_usage", json!({})).unwrap();
    assert_eq!(output["totalKib"], 24_684_092);
    assert_eq!(output["availableKib"], 22_728_964);
    assert_eq!(output["usedPercent"], 7.9);
    assert_eq!(output["status"], "ok");
    let tight = call("memory_usage", json!({"warnPercent": 7.9})).unwrap();
    assert_eq!(tight["status"], "warning");
}

#[test]
fn disk_usage_judges_the_fullest_disk_filesystem() {
    machine(|_, _| None);
    let output = call("disk_usage", json!({})).unwrap();
    assert_eq!(output["status"], "warning", "{output}");
    assert_eq!(
        output["filesystems"],
        json!([{"mount": "/", "type": "ext4", "sizeKib": 264_212_084u64, "usedKib": 81_566_376u64, "usedPercent": 86}])
    );
    assert_eq!(output["worst"]["mount"], "/");
    assert_eq!(args_of("/usr/bin/df"), [["-P", "-k", "-T"]]);
    let critical = call("disk_usage", json!({"critPercent": 86})).unwrap();
    assert_eq!(critical["status"], "critical");
}

#[test]
fn disk_usage_uses_a_partial_listing_and_fails_on_none() {
    machine(|program, _| {
        (program == "/usr/bin/df").then(|| {
            exit(
                1,
                "Filesystem Type 1024-blocks Used Available Capacity Mounted on\n/dev/vda ext4 100 10 90 10% /\n",
                "df: /mnt/nfs: Stale file handle\n",
            )
        })
    });
    assert_eq!(call("disk_usage", json!({})).unwrap()["status"], "ok");

    machine(|program, _| {
        (program == "/usr/bin/df")
            .then(|| exit(1, "", "df: cannot read table of mounted file systems\n"))
    });
    let err = call("disk_usage", json!({})).unwrap_err();
    assert!(
        matches!(&err, PluginError::Failed(m) if m.contains("cannot read table")),
        "{err}"
    );
}

#[test]
fn disk_usage_with_nothing_to_check_is_a_warning() {
    machine(|program, _| {
        (program == "/usr/bin/df").then(|| {
            out("Filesystem Type 1024-blocks Used Available Capacity Mounted on\ntmpfs tmpfs 10 0 10 0% /run\n")
        })
    });
    let output = call("disk_usage", json!({})).unwrap();
    assert_eq!(output["status"], "warning");
    assert_eq!(output["worst"], Value::Null);
}

#[test]
fn listening_services_lists_ports_of_both_families() {
    machine(|program, args| match (program, args) {
        ("/usr/bin/cat", ["/proc/net/tcp6"]) => Some(out(TCP6)),
        _ => None,
    });
    let output = call("listening_services", json!({})).unwrap();
    assert_eq!(output["ports"], json!([22, 2024]));
    assert_eq!(output["count"], 2);
    assert_eq!(output["status"], "ok");
}

#[test]
fn listening_services_missing_an_expected_port_is_critical() {
    machine(|_, _| None);
    let output = call("listening_services", json!({"expect": [5432, 2024, 5432]})).unwrap();
    assert_eq!(output["missing"], json!([5432]));
    assert_eq!(output["status"], "critical");
    assert_eq!(output["summary"], "expected port not listening: 5432");
}

#[test]
fn listening_services_without_tcp6_reads_tcp_alone() {
    machine(|program, args| match (program, args) {
        ("/usr/bin/cat", ["/proc/net/tcp6"]) => Some(exit(
            1,
            "",
            "/usr/bin/cat: /proc/net/tcp6: No such file or directory\n",
        )),
        _ => None,
    });
    let output = call("listening_services", json!({})).unwrap();
    assert_eq!(output["ports"], json!([2024]));
}

#[test]
fn network_reachability_on_the_captured_machine_is_ok() {
    machine(|_, _| None);
    let output = call("network_reachability", json!({})).unwrap();
    assert_eq!(output["defaultRoute"], true);
    assert_eq!(output["defaultRouteInterfaces"], json!(["eth0"]));
    assert_eq!(output["resolved"], json!({"localhost": ["127.0.0.1"]}));
    assert_eq!(output["unresolved"], json!([]));
    assert_eq!(output["status"], "ok");
}

#[test]
fn network_reachability_some_unresolved_is_a_warning_all_critical() {
    machine(|_, _| None);
    let some = call(
        "network_reachability",
        json!({"hosts": ["localhost", "nope.invalid"]}),
    )
    .unwrap();
    assert_eq!(some["unresolved"], json!(["nope.invalid"]));
    assert_eq!(some["status"], "warning");
    let all = call("network_reachability", json!({"hosts": ["nope.invalid"]})).unwrap();
    assert_eq!(all["status"], "critical");
}

#[test]
fn network_reachability_a_lookup_that_timed_out_is_unresolved() {
    machine(|program, _| {
        (program == "/usr/bin/getent").then(|| exit(-1, "", "\nkilled after 1000 ms"))
    });
    let output = call("network_reachability", json!({"hosts": ["db.example"]})).unwrap();
    assert_eq!(output["unresolved"], json!(["db.example"]));
}

#[test]
fn network_reachability_without_a_default_route_is_a_warning() {
    machine(|program, args| match (program, args) {
        ("/usr/bin/cat", ["/proc/net/route"]) => Some(out(ROUTE.lines().next().unwrap())),
        ("/usr/bin/cat", ["/proc/net/ipv6_route"]) => Some(out(IPV6_ROUTE_REJECT_ONLY)),
        _ => None,
    });
    let output = call("network_reachability", json!({})).unwrap();
    assert_eq!(output["defaultRoute"], false);
    assert_eq!(output["status"], "warning");
}

#[test]
fn network_reachability_refuses_bad_host_lists_before_running_anything() {
    machine(|_, _| None);
    for hosts in [
        json!(["-s"]),
        json!(["a b"]),
        json!([""]),
        json!(["a", "b", "c", "d", "e"]),
    ] {
        let err = call("network_reachability", json!({ "hosts": hosts })).unwrap_err();
        assert!(
            matches!(err, PluginError::InvalidInput(_)),
            "{hosts}: {err}"
        );
    }
    assert!(testing::command_calls().is_empty());
}

#[test]
fn the_getent_grant_refuses_an_option_as_a_name() {
    // The plugin never sends one (see above); the grant refuses it anyway.
    machine(|_, _| None);
    let err = autoagent_sdk::commands::run("/usr/bin/getent", &["hosts", "--help"]).unwrap_err();
    assert!(err.message().contains("grants no such command"), "{err}");
}

#[test]
fn uptime_reports_whole_seconds_and_words() {
    machine(|_, _| None);
    assert_eq!(
        call("uptime", json!({})).unwrap(),
        json!({"status": "ok", "summary": "up 3 hours, 15 minutes", "seconds": 11_750})
    );
}

#[test]
fn accounts_audit_of_the_captured_passwd_is_ok() {
    machine(|_, _| None);
    let output = call("accounts_audit", json!({})).unwrap();
    assert_eq!(output["status"], "ok");
    assert_eq!(output["accounts"], 24);
    assert_eq!(output["uidZero"], json!([]));
    assert_eq!(output["loginShells"], 3);
    assert_eq!(
        output["loginAccounts"],
        json!(["root", "cloudsdk", "postgres"])
    );
}

#[test]
fn accounts_audit_a_second_uid_zero_is_critical() {
    machine(|program, args| {
        (program == "/usr/bin/cat" && args == ["/etc/passwd"])
            .then(|| out(&format!("{PASSWD}toor:x:0:0::/root:/bin/sh\n")))
    });
    let output = call("accounts_audit", json!({})).unwrap();
    assert_eq!(output["uidZero"], json!(["toor"]));
    assert_eq!(output["status"], "critical");
}

#[test]
fn accounts_audit_a_damaged_line_is_a_warning_and_garbage_fails() {
    machine(|program, args| {
        (program == "/usr/bin/cat" && args == ["/etc/passwd"])
            .then(|| out(&format!("{PASSWD}broken\n")))
    });
    let output = call("accounts_audit", json!({})).unwrap();
    assert_eq!(output["malformedLines"], 1);
    assert_eq!(output["status"], "warning");

    machine(|program, _| (program == "/usr/bin/cat").then(|| out("\u{0}\u{1}binary")));
    assert!(matches!(
        call("accounts_audit", json!({})),
        Err(PluginError::Failed(_))
    ));
}

#[test]
fn world_writable_runs_exactly_the_granted_find() {
    machine(|_, _| None);
    let output = call("world_writable", json!({})).unwrap();
    assert_eq!(output["status"], "ok");
    assert_eq!(output["count"], 0);
    assert_eq!(
        args_of("/usr/bin/find"),
        [["/etc", "-xdev", "-type", "f", "-perm", "-0002"]]
    );
}

#[test]
fn world_writable_files_are_a_warning_listed_up_to_100() {
    let listing: String = (0..150).map(|i| format!("/etc/f{i}\n")).collect();
    machine(move |program, _| (program == "/usr/bin/find").then(|| out(&listing)));
    let output = call("world_writable", json!({})).unwrap();
    assert_eq!(output["status"], "warning");
    assert_eq!(output["count"], 150);
    assert_eq!(output["files"].as_array().unwrap().len(), 100);
    assert_eq!(output["incomplete"], false);
}

#[test]
fn world_writable_partial_and_failed_runs() {
    machine(|program, _| {
        (program == "/usr/bin/find")
            .then(|| exit(1, "/etc/bad\n", "find: '/etc/secret': Permission denied\n"))
    });
    let output = call("world_writable", json!({})).unwrap();
    assert_eq!(output["files"], json!(["/etc/bad"]));
    assert_eq!(output["incomplete"], true);

    machine(|program, _| {
        (program == "/usr/bin/find")
            .then(|| exit(1, "", "find: '/etc': No such file or directory\n"))
    });
    let err = call("world_writable", json!({})).unwrap_err();
    assert!(
        matches!(&err, PluginError::Failed(m) if m.contains("No such file")),
        "{err}"
    );
}

#[test]
fn log_usage_judges_mib() {
    machine(|_, _| None);
    let output = call("log_usage", json!({})).unwrap();
    assert_eq!(output["totalKib"], 656);
    assert_eq!(output["dir"], "/var/log");
    assert_eq!(output["status"], "ok");
    assert_eq!(args_of("/usr/bin/du"), [["-sk", "/var/log"]]);

    machine(|program, _| (program == "/usr/bin/du").then(|| out("2097152\t/var/log\n")));
    assert_eq!(call("log_usage", json!({})).unwrap()["status"], "warning");
    assert_eq!(
        call("log_usage", json!({"critMib": 2048})).unwrap()["status"],
        "critical"
    );
}

#[test]
fn old_logs_passes_days_to_find_and_only_reports() {
    machine(|program, _| {
        (program == "/usr/bin/find").then(|| out("/var/log/old.1\n/var/log/old.2.gz\n"))
    });
    let output = call("old_logs", json!({})).unwrap();
    assert_eq!(output["count"], 2);
    assert_eq!(output["days"], 30);
    assert_eq!(output["status"], "warning");
    assert!(
        output["summary"]
            .as_str()
            .unwrap()
            .contains("nothing deleted")
    );
    call("old_logs", json!({"days": 7})).unwrap();
    assert_eq!(
        args_of("/usr/bin/find"),
        [
            ["/var/log", "-xdev", "-type", "f", "-mtime", "+30"],
            ["/var/log", "-xdev", "-type", "f", "-mtime", "+7"]
        ]
    );
}

#[test]
fn old_logs_refuses_days_the_grant_would_not_pass() {
    machine(|_, _| None);
    for days in [json!(10_000), json!(-1), json!("30"), json!(1.5)] {
        let err = call("old_logs", json!({ "days": days })).unwrap_err();
        assert!(matches!(err, PluginError::InvalidInput(_)), "{days}: {err}");
    }
    assert!(testing::command_calls().is_empty());
}

#[test]
fn old_logs_lists_up_to_200() {
    let listing: String = (0..250).map(|i| format!("/var/log/f{i}\n")).collect();
    machine(move |program, _| (program == "/usr/bin/find").then(|| out(&listing)));
    let output = call("old_logs", json!({})).unwrap();
    assert_eq!(output["count"], 250);
    assert_eq!(output["files"].as_array().unwrap().len(), 200);
}

fn backup(input: Value, now: i64) -> Result<Value, PluginError> {
    let finding = checks::backup_at(from_input(input)?, now)?;
    finish("backup_verification", finding, None)
}

#[test]
fn backup_verification_reports_age_and_size() {
    machine(|program, _| (program == "/usr/bin/stat").then(|| out("1000000 4096\n")));
    let output = backup(json!({}), 1_000_000 + 5 * 3600).unwrap();
    assert_eq!(
        output,
        json!({
            "status": "ok",
            "summary": "backup /var/backups is 5.0 hours old, 4096 bytes",
            "path": "/var/backups", "exists": true, "ageHours": 5.0, "sizeBytes": 4096,
            "sha256": null, "sha256Matches": null
        })
    );
    assert_eq!(args_of("/usr/bin/stat"), [["-c", "%Y %s", "/var/backups"]]);
    let old = backup(json!({}), 1_000_000 + 27 * 3600).unwrap();
    assert_eq!(old["status"], "warning");
    let allowed = backup(json!({"maxAgeHours": 48}), 1_000_000 + 27 * 3600).unwrap();
    assert_eq!(allowed["status"], "ok");
}

#[test]
fn backup_verification_of_a_missing_path_is_critical() {
    machine(|program, _| {
        (program == "/usr/bin/stat").then(|| {
            exit(
                1,
                "",
                "/usr/bin/stat: cannot statx '/var/backups/db.gz': No such file or directory\n",
            )
        })
    });
    let output = call(
        "backup_verification",
        json!({"path": "/var/backups/db.gz", "sha256": SHA}),
    )
    .unwrap();
    assert_eq!(output["exists"], false);
    assert_eq!(output["status"], "critical");
    assert!(args_of("/usr/bin/sha256sum").is_empty());
}

#[test]
fn backup_verification_compares_the_sha256() {
    machine(|program, _| match program {
        "/usr/bin/stat" => Some(out("1000000 4\n")),
        "/usr/bin/sha256sum" => Some(out(&format!("{SHA}  /var/backups/db.gz\n"))),
        _ => None,
    });
    let path = "/var/backups/db.gz";
    let same = backup(
        json!({"path": path, "sha256": SHA.to_uppercase()}),
        1_000_000,
    )
    .unwrap();
    assert_eq!(same["sha256Matches"], true);
    assert_eq!(same["status"], "ok");
    assert_eq!(args_of("/usr/bin/sha256sum"), [[path]]);
    let other = backup(json!({"path": path, "sha256": "0".repeat(64)}), 1_000_000).unwrap();
    assert_eq!(other["sha256Matches"], false);
    assert_eq!(other["status"], "critical");
    let err = backup(json!({"path": path, "sha256": "abc"}), 1_000_000).unwrap_err();
    assert!(matches!(err, PluginError::InvalidInput(_)), "{err}");
}

#[test]
fn backup_verification_outside_the_grant_is_denied_by_the_grant() {
    machine(|_, _| None);
    let err = call("backup_verification", json!({"path": "/etc/shadow"})).unwrap_err();
    assert!(
        matches!(&err, PluginError::Denied(m) if m.contains("grants no such command")),
        "{err}"
    );
    // The plugin did ask: the refusal is the grant's, not the plugin's.
    assert_eq!(args_of("/usr/bin/stat"), [["-c", "%Y %s", "/etc/shadow"]]);
}

#[test]
fn backup_verification_refuses_climbing_out_with_dot_dot() {
    machine(|_, _| None);
    let err = call(
        "backup_verification",
        json!({"path": "/var/backups/../../etc/shadow"}),
    )
    .unwrap_err();
    assert!(matches!(err, PluginError::InvalidInput(_)), "{err}");
    assert!(testing::command_calls().is_empty());
}

#[test]
fn summarize_takes_the_worst_status_and_counts_missing() {
    testing::reset();
    let output = call(
        "summarize",
        json!({"checks": {
            "cpu": {"status": "ok", "summary": "fine"},
            "disk": {"status": "critical", "summary": "/ is 95% full"},
            "memory": {"status": "warning", "summary": "memory 85% used"},
            "network": null,
            "odd": {"no": "status"},
        }}),
    )
    .unwrap();
    assert_eq!(output["status"], "critical");
    assert_eq!(
        output["counts"],
        json!({"ok": 1, "warning": 1, "critical": 1, "missing": 2})
    );
    assert_eq!(output["missing"], json!(["network", "odd"]));
    assert_eq!(
        output["findings"],
        json!([
            {"check": "disk", "status": "critical", "summary": "/ is 95% full"},
            {"check": "memory", "status": "warning", "summary": "memory 85% used"}
        ])
    );
    assert_eq!(
        output["summary"],
        "5 checks: 1 critical (disk), 1 warning (memory), 1 ok, 2 missing (network, odd)"
    );
}

#[test]
fn summarize_of_nothing_and_of_all_ok() {
    testing::reset();
    let none = call("summarize", json!({})).unwrap();
    assert_eq!(none["status"], "ok");
    assert_eq!(none["summary"], "no checks to summarize");
    let only_missing = call("summarize", json!({"checks": {"a": null}})).unwrap();
    assert_eq!(only_missing["status"], "ok");
    assert_eq!(only_missing["counts"]["missing"], 1);
    let fine = call(
        "summarize",
        json!({"checks": {"a": {"status": "ok"}, "b": {"status": "ok"}}}),
    )
    .unwrap();
    assert_eq!(fine["summary"], "2 checks: 2 ok");
}

#[test]
fn fail_on_turns_a_finding_at_least_that_bad_into_an_error() {
    machine(|_, _| None);
    // The captured load is a warning.
    let err = call("cpu_load", json!({"failOn": "warning"})).unwrap_err();
    assert_eq!(
        err,
        PluginError::failed("load 2.52 on 2 CPUs: 1.26 per CPU")
    );
    let output = call("cpu_load", json!({"failOn": "critical"})).unwrap();
    assert_eq!(output["status"], "warning");
    let ok = call("uptime", json!({"failOn": "warning"})).unwrap();
    assert_eq!(ok["status"], "ok");
    let summary = call(
        "summarize",
        json!({"failOn": "critical", "checks": {"disk": {"status": "critical"}}}),
    )
    .unwrap_err();
    assert!(matches!(summary, PluginError::Failed(_)), "{summary}");
}

#[test]
fn fail_on_accepts_only_warning_or_critical() {
    machine(|_, _| None);
    for fail_on in ["ok", "bogus"] {
        let err = call("uptime", json!({ "failOn": fail_on })).unwrap_err();
        assert!(
            matches!(&err, PluginError::InvalidInput(m) if m.contains("failOn")),
            "{err}"
        );
    }
    assert!(testing::command_calls().is_empty());
}

#[test]
fn machine_reports_hostname_and_kernel() {
    machine(|_, _| None);
    assert_eq!(
        call("machine", json!({})).unwrap(),
        json!({"status": "ok", "summary": "vm, Linux 6.1.0-18-amd64", "hostname": "vm", "kernel": "6.1.0-18-amd64"})
    );
    machine(|program, args| {
        (program == "/usr/bin/cat" && args == ["/proc/sys/kernel/hostname"]).then(|| out("\n"))
    });
    assert!(matches!(
        call("machine", json!({})),
        Err(PluginError::Failed(_))
    ));
}

#[test]
fn other_fields_are_ignored_and_wrong_shapes_refused() {
    machine(|_, _| None);
    let output = call("uptime", json!({"serverId": "web-1"})).unwrap();
    assert_eq!(output["status"], "ok");
    assert!(matches!(
        call("memory_usage", json!("everything")),
        Err(PluginError::InvalidInput(_))
    ));
    assert!(matches!(
        call("memory_usage", json!({"warnPercent": "high"})),
        Err(PluginError::InvalidInput(m)) if m.contains("warnPercent")
    ));
}

#[test]
fn a_program_that_cannot_start_fails_rather_than_denied() {
    testing::reset();
    testing::on_command(|program, _| {
        Err(format!(
            "cannot start {program:?}: Permission denied (os error 13)"
        ))
    });
    let err = call("uptime", json!({})).unwrap_err();
    assert!(matches!(err, PluginError::Failed(_)), "{err}");
}

#[test]
fn unknown_capability_is_unsupported() {
    testing::reset();
    assert_eq!(
        call("reboot", json!({})),
        Err(PluginError::unsupported("unknown capability `reboot`"))
    );
}
