//! Every CPU figure is measurable or null (see `tal::agent::window`): a
//! property over many short recordings, and an idle `sleep 5` that must
//! not read as a busy node.
//!
//! It has a file (a test binary) of its own, so that no CPU-heavy test of
//! another file runs in its process; its two tests take turns ([`SERIAL`]).
//!
//! What the recordings show, sample by sample (per_node ResourceUpdates):
//! the first (the warm-up reading) has no CPU figure; `cpu_percent` and
//! `cpu_percent_per_core` are both null or both there; where both are,
//! the mean over the cores is within what one tick per CPU can move a
//! figure of the node's (both come from the same ticks: busy over all
//! ticks); and a sample less than half an interval after the one its
//! figures are measured from has no CPU figure, nor disk or network bytes.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::sync::Mutex;

/// The two tests run one after the other, never side by side.
static SERIAL: Mutex<()> = Mutex::new(());

/// How many recordings the property holds over, and how many run at once.
const RECORDINGS: usize = 200;
const AT_ONCE: usize = 4;

/// Slack for a time read from the JSONL (`event_time` is the sample's
/// deadline, or its wake-up when it is taken at stop), in seconds.
const TIME_SLACK_S: f64 = 0.002;

/// A small deterministic generator (xorshift), so that a failure names a
/// case that can be run again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }
}

/// One recording: its interval, and the command's idle, busy and idle
/// stretches (s).
#[derive(Debug, Clone, Copy)]
struct Case {
    interval: f64,
    before: f64,
    busy: f64,
    after: f64,
}

fn cases() -> Vec<Case> {
    let mut rng = Rng(0x5eed_cafe_f00d_0025);
    (0..RECORDINGS)
        .map(|_| {
            let interval = (rng.between(0.05, 0.2) * 1000.0).round() / 1000.0;
            let total = rng.between(0.05, 1.0);
            let busy = total * rng.between(0.1, 0.8);
            let before = (total - busy) * rng.next();
            Case {
                interval,
                before,
                busy,
                after: total - busy - before,
            }
        })
        .collect()
}

/// Records `case` in `dir`: a command that sleeps, starts a CPU burner,
/// stops it, and sleeps again.
fn record(case: &Case, dir: &Path) -> std::process::Child {
    let script = format!(
        "sleep {:.3}; yes >/dev/null & p=$!; sleep {:.3}; kill $p; sleep {:.3}",
        case.before, case.busy, case.after
    );
    tal()
        .args(["record", "--interval", &format!("{:.3}", case.interval)])
        .arg("--out")
        .arg(dir)
        .args(["--", "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The kernel's clock ticks a second (`USER_HZ`), which /proc/stat counts.
fn user_hz() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// The node's per_node samples, in time order.
fn node_samples(v: &[Value]) -> Vec<&Value> {
    lines(v, "event", Some("ResourceUpdate"))
        .into_iter()
        .filter(|e| e["resource_scope"] == "per_node")
        .collect()
}

/// The per-core figures of a sample: `None` when absent or null.
fn per_core(s: &Value) -> Option<Vec<f64>> {
    match &s["cpu_percent_per_core"] {
        Value::Null => None,
        Value::Array(a) if a.is_empty() => None,
        Value::Array(a) => Some(a.iter().map(|x| x.as_f64().unwrap()).collect()),
        other => panic!("cpu_percent_per_core is {other}"),
    }
}

/// Checks the property over one recording's samples; the error names the
/// sample that breaks it.
fn check(samples: &[&Value], interval: f64) -> Result<(), String> {
    let first = samples.first().ok_or("no per_node sample")?;
    if !first["cpu_percent"].is_null() || per_core(first).is_some() {
        return Err(format!("the warm-up sample has a CPU figure: {first}"));
    }
    // The figures' window starts at the last sample that had figures (a
    // window too short is folded into the next), or at the warm-up one.
    let mut base = first["event_time"].as_f64().unwrap();
    // The shortest window that may carry a figure gives the loosest bound
    // for the agreement of the two figures: one tick a CPU over it.
    let bound = 100.0 / (user_hz() * interval / 2.0) + 0.2;
    for s in &samples[1..] {
        let t = s["event_time"].as_f64().unwrap();
        let node = s["cpu_percent"].as_f64();
        let cores = per_core(s);
        let window = t - base;
        match (node, cores) {
            (None, None) => {}
            (Some(node), Some(cores)) => {
                if window < interval / 2.0 - TIME_SLACK_S {
                    return Err(format!("a figure over {window:.4} s: {s}"));
                }
                let mean = cores.iter().sum::<f64>() / cores.len() as f64;
                if (mean - node).abs() > bound {
                    return Err(format!(
                        "node {node} vs mean of cores {mean} (bound {bound:.1}): {s}"
                    ));
                }
                base = t;
            }
            _ => return Err(format!("one CPU figure without the other: {s}")),
        }
        if window < interval / 2.0 - TIME_SLACK_S {
            for k in [
                "disk_read_bytes",
                "disk_write_bytes",
                "net_recv_bytes",
                "net_sent_bytes",
            ] {
                if !s[k].is_null() {
                    return Err(format!("{k} over {window:.4} s: {s}"));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn every_cpu_figure_is_measurable_or_null_over_short_recordings() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cases = cases();
    let mut failures = Vec::new();
    let mut measured = 0usize;
    for (k, chunk) in cases.chunks(AT_ONCE).enumerate() {
        let dirs: Vec<_> = chunk.iter().map(|_| tempfile::tempdir().unwrap()).collect();
        let children: Vec<_> = chunk
            .iter()
            .zip(&dirs)
            .map(|(c, d)| record(c, d.path()))
            .collect();
        for (i, ((case, dir), child)) in chunk.iter().zip(&dirs).zip(children).enumerate() {
            let out = wait_output(child, std::time::Duration::from_secs(60));
            assert!(
                out.status.success(),
                "case {} {case:?}: {}",
                k * AT_ONCE + i,
                String::from_utf8_lossy(&out.stderr)
            );
            let v = read_jsonl_in(dir.path());
            let samples = node_samples(&v);
            measured += samples
                .iter()
                .filter(|s| s["cpu_percent"].is_number())
                .count();
            if let Err(e) = check(&samples, case.interval) {
                failures.push(format!("case {} {case:?}: {e}", k * AT_ONCE + i));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {RECORDINGS} recordings break the property:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Not a vacuous pass: most recordings are long enough for figures.
    assert!(measured >= RECORDINGS, "only {measured} CPU figures in all");
}

/// The node's busy share from /proc/stat's aggregate line, read here with
/// code that shares nothing with tal's: (busy, total) ticks.
fn node_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let f: Vec<u64> = stat.lines().next().unwrap()[3..]
        .split_whitespace()
        .take(8)
        .map(|x| x.parse().unwrap())
        .collect();
    let total: u64 = f.iter().sum();
    (total - f[3] - f[4], total)
}

#[test]
fn an_idle_sleep_does_not_read_as_a_busy_node() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let before = node_ticks();
    run_ok(
        tal()
            .args(["record", "--interval", "0.1", "--out"])
            .arg(dir.path())
            .args(["--", "sleep", "5"]),
    );
    let after = node_ticks();
    let busy = (after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64 * 100.0;

    let v = read_jsonl_in(dir.path());
    let samples = node_samples(&v);
    check(&samples, 0.1).unwrap();
    // The one-tick artefact, whatever else the machine did meanwhile: a
    // node figure of half the CPUs or more while every core reads 0.
    for s in &samples {
        if let (Some(node), Some(cores)) = (s["cpu_percent"].as_f64(), per_core(s)) {
            assert!(
                !(node >= 50.0 && cores.iter().all(|&c| c == 0.0)),
                "a one-tick artefact: {s}"
            );
        }
    }

    let jsonl = files_with_ext(dir.path(), ".telemetry.jsonl");
    let out = run_ok(tal().args(["summary", "--json"]).arg(&jsonl[0]));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let max = summary["nodes"][0]["cpu_percent"]["max"]
        .as_f64()
        .unwrap_or_else(|| panic!("no node CPU max in {summary}"));
    eprintln!("node CPU max {max} %, the node's own busy share meanwhile {busy:.1} %");
    // On an idle node (what /proc said over the whole recording, read
    // independently), the summary's max is below 10 %. On a busy one the
    // max is whatever the machine did, and only the checks above hold.
    if busy < 2.0 {
        assert!(max < 10.0, "node CPU max {max} % of an idle sleep 5");
    }
}
