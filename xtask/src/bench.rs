//! `cargo xtask bench`: runs the benchmark suite and rewrites the tables at
//! the top of BENCHMARKS.md from what the benchmarks report.
//!
//! Each benchmark is an ordinary `cargo bench` target of `autoagent-tests`
//! and runs alone too. Run here, each gets `BENCH_REPORT=<file>` and writes
//! its figures there as JSON (`tests/src/report.rs`); this task lays them
//! out, one table per benchmark, between markers in BENCHMARKS.md. Only the
//! benchmarks of this run are rewritten, so `cargo xtask bench api_load`
//! refreshes one table and leaves the others as they were.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::{cargo, ensure_aiosmtpd, ensure_wasm_target, run, workspace_root};

/// The suite, in the order it runs: each benchmark's `--bench` name.
pub const SUITE: &[&str] = &[
    "plugin_call",
    "isolation",
    "task_throughput",
    "api_load",
    "plan_executor",
    "recovery",
    "alert_latency",
    "plugin_swap",
    "footprint",
    "task_history",
];

/// The target the Extism comparison's guest (a core module) is built for.
const EXTISM_TARGET: &str = "wasm32-unknown-unknown";

const SECTION_BEGIN: &str = "<!-- cargo xtask bench: begin. Everything down to the end marker is rewritten by `cargo xtask bench`. -->";
const SECTION_END: &str = "<!-- cargo xtask bench: end -->";

/// Runs `names` (the whole suite when empty) and rewrites their tables.
pub fn bench(names: &[String]) -> Result<(), String> {
    let chosen: Vec<&str> = if names.is_empty() {
        SUITE.to_vec()
    } else {
        names
            .iter()
            .map(|name| {
                SUITE
                    .iter()
                    .copied()
                    .find(|known| known == name)
                    .ok_or_else(|| {
                        format!("no benchmark {name:?}; the suite: {}", SUITE.join(", "))
                    })
            })
            .collect::<Result<_, _>>()?
    };
    prepare()?;
    let reports = workspace_root().join("target").join("bench-report");
    std::fs::create_dir_all(&reports)
        .map_err(|err| format!("cannot create {}: {err}", reports.display()))?;
    let machine = machine();
    let stamp = stamp();
    let mut failed = Vec::new();
    let mut tables = Vec::new();
    for name in chosen {
        eprintln!("xtask: benchmark {name}");
        let file = reports.join(format!("{name}.json"));
        let _ = std::fs::remove_file(&file);
        let mut command = cargo();
        command
            .args(["bench", "-p", "autoagent-tests", "--features", "extism"])
            .args(["--bench", name])
            .env("BENCH_REPORT", &file)
            .env(
                "AUTOAGENT_BIN",
                workspace_root().join("target/release/autoagent"),
            );
        let outcome = run(command).and_then(|()| read_report(&file));
        match outcome {
            Ok(report) => tables.push((name, render_table(name, &report, &stamp))),
            Err(err) => {
                eprintln!("xtask: benchmark {name} failed: {err}");
                failed.push(name);
            }
        }
    }
    let path = workspace_root().join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let updated = rewrite(&text, &machine, &tables)?;
    std::fs::write(&path, updated)
        .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    eprintln!("xtask: BENCHMARKS.md rewritten ({} tables)", tables.len());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("benchmarks failed: {}", failed.join(", ")))
    }
}

/// Installs what the suite uses and builds the host and every benchmark.
fn prepare() -> Result<(), String> {
    ensure_wasm_target()?;
    ensure_rust_target(EXTISM_TARGET)?;
    ensure_aiosmtpd()?;
    ensure_wrk()?;
    let mut build = cargo();
    build.args(["build", "--release", "-p", "autoagent"]);
    run(build)?;
    let mut benches = cargo();
    benches.args([
        "bench",
        "-p",
        "autoagent-tests",
        "--features",
        "extism",
        "--no-run",
    ]);
    run(benches)
}

fn ensure_rust_target(target: &str) -> Result<(), String> {
    let mut add = Command::new("rustup");
    add.args(["target", "add", target])
        .current_dir(workspace_root());
    run(add)
}

/// `wrk`, the load tool of the API benchmark, from Debian.
fn ensure_wrk() -> Result<(), String> {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("xtask: installing wrk from Debian (the API benchmark's load tool)");
    let mut update = Command::new("apt-get");
    update.arg("update");
    run(update)?;
    let mut install = Command::new("apt-get");
    install.args(["install", "-y", "wrk"]);
    run(install)
}

fn read_report(file: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|err| format!("it wrote no report to {} ({err})", file.display()))?;
    serde_json::from_str(&text).map_err(|err| format!("its report is not JSON: {err}"))
}

/// The date, time and commit this run is of, e.g. `2026-11-26 10:40 UTC,
/// commit 1a2b3c4`.
fn stamp() -> String {
    let date = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .unwrap_or_else(|| "unknown date".into());
    let commit = output(Command::new("git").args(["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let dirty = output(Command::new("git").args(["status", "--porcelain", "--untracked-files=no"]))
        .is_some_and(|changes| !changes.is_empty());
    format!(
        "{date}, commit {commit}{}",
        if dirty { " with local changes" } else { "" }
    )
}

/// The machine: processor, cores, memory, kernel and Rust.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split(':').nth(1))
        .map_or("unknown processor".to_owned(), |model| {
            model.trim().to_owned()
        });
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
    let kernel = output(Command::new("uname").args(["-sr"])).unwrap_or_default();
    let rustc = output(Command::new("rustc").arg("-V")).unwrap_or_default();
    format!("{cpu}, {cores} cores, {memory_gib:.0} GiB, {kernel}, {rustc}")
}

fn output(command: &mut Command) -> Option<String> {
    let out = command.current_dir(workspace_root()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// One benchmark's block: its title, command, stamp and table.
fn render_table(name: &str, report: &Value, stamp: &str) -> String {
    let text = |value: &Value, key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .replace('|', "\\|")
            .replace('\n', " ")
    };
    let mut out = String::new();
    out.push_str(&format!("<!-- bench:{name} -->\n"));
    out.push_str(&format!("### {}\n\n", text(report, "title")));
    out.push_str(&format!(
        "`cargo xtask bench {name}` (alone: `cargo bench -p autoagent-tests --features extism --bench {name}`), {stamp}.\n\n"
    ));
    out.push_str(
        "| figure | ours | compared with (same run) | ratio | target | what limits it |\n",
    );
    out.push_str("| --- | --- | --- | --- | --- | --- |\n");
    for figure in report
        .get("figures")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let cells: Vec<String> = ["figure", "ours", "against", "ratio", "target", "limit"]
            .iter()
            .map(|key| {
                let cell = text(figure, key);
                if cell.is_empty() {
                    "–".to_owned()
                } else {
                    cell
                }
            })
            .collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out.push_str(&format!("<!-- /bench:{name} -->\n"));
    out
}

/// `text` with the generated section's machine line and the given
/// benchmarks' blocks replaced (added when new), the rest left alone. The
/// section goes after the first heading when the file has none yet.
fn rewrite(text: &str, machine: &str, tables: &[(&str, String)]) -> Result<String, String> {
    let (before, mut blocks, after) = match (text.find(SECTION_BEGIN), text.find(SECTION_END)) {
        (Some(begin), Some(end)) if begin < end => {
            let inside = &text[begin + SECTION_BEGIN.len()..end];
            (
                text[..begin].to_owned(),
                existing_blocks(inside),
                text[end + SECTION_END.len()..].to_owned(),
            )
        }
        (None, None) => {
            // After the title line and its paragraph.
            let split = text.find("\n## ").map_or(text.len(), |at| at + 1);
            (
                text[..split].to_owned(),
                Vec::new(),
                format!("\n{}", &text[split..]),
            )
        }
        _ => return Err("BENCHMARKS.md has one of the bench markers without the other".into()),
    };
    for (name, table) in tables {
        match blocks.iter_mut().find(|(known, _)| known == name) {
            Some(block) => block.1 = table.clone(),
            None => blocks.push(((*name).to_owned(), table.clone())),
        }
    }
    // Keep the suite's order.
    blocks.sort_by_key(|(name, _)| SUITE.iter().position(|known| known == name));
    let mut section = String::new();
    section.push_str(SECTION_BEGIN);
    section.push_str("\n## Latest run of the suite\n\n");
    section.push_str(&format!(
        "Machine of the last run: {machine}. Each table is one benchmark's run (its date and commit \
         under its title); what it is compared with ran in the same process or right beside it in \
         the same run. How each figure is measured, and its history, are in the sections below.\n\n"
    ));
    for (_, block) in &blocks {
        section.push_str(block);
        section.push('\n');
    }
    section.push_str(SECTION_END);
    Ok(format!("{before}{section}{after}"))
}

/// The `<!-- bench:NAME -->` blocks of the generated section, in order.
fn existing_blocks(inside: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut rest = inside;
    while let Some(start) = rest.find("<!-- bench:") {
        let after_tag = &rest[start + "<!-- bench:".len()..];
        let Some(name_end) = after_tag.find(" -->") else {
            break;
        };
        let name = &after_tag[..name_end];
        let closing = format!("<!-- /bench:{name} -->\n");
        let Some(end) = rest[start..].find(&closing) else {
            break;
        };
        let end = start + end + closing.len();
        blocks.push((name.to_owned(), rest[start..end].to_owned()));
        rest = &rest[end..];
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(title: &str, ours: &str) -> Value {
        serde_json::json!({
            "bench": "x",
            "title": title,
            "figures": [{"figure": "a|b", "ours": ours, "against": "", "ratio": "", "target": "", "limit": ""}],
        })
    }

    #[test]
    fn first_run_adds_the_section_after_the_intro() {
        let text = "# Benchmarks\n\nIntro.\n\n## Machine\n\nold\n";
        let table = render_table("plugin_call", &report("Call", "9 µs"), "today");
        let out = rewrite(text, "box", &[("plugin_call", table)]).unwrap();
        let begin = out.find(SECTION_BEGIN).unwrap();
        assert!(out[..begin].ends_with("Intro.\n\n"));
        assert!(out.contains("| a\\|b | 9 µs | – | – | – | – |"));
        assert!(out.ends_with(&format!("{SECTION_END}\n## Machine\n\nold\n")));
    }

    #[test]
    fn a_later_run_replaces_only_its_own_tables() {
        let text = "# B\n\n## M\n";
        let call = render_table("plugin_call", &report("Call", "9 µs"), "day 1");
        let api = render_table("api_load", &report("API", "70k"), "day 1");
        let once = rewrite(text, "box", &[("api_load", api), ("plugin_call", call)]).unwrap();
        let call = render_table("plugin_call", &report("Call", "8 µs"), "day 2");
        let twice = rewrite(&once, "box 2", &[("plugin_call", call)]).unwrap();
        assert!(twice.contains("| a\\|b | 8 µs |"));
        assert!(!twice.contains("9 µs"));
        assert!(twice.contains("| a\\|b | 70k |"));
        assert!(twice.contains("Machine of the last run: box 2."));
        // Suite order: plugin_call before api_load.
        assert!(twice.find("bench:plugin_call").unwrap() < twice.find("bench:api_load").unwrap());
        assert_eq!(twice.matches(SECTION_BEGIN).count(), 1);
    }
}
