//! `tal summary`: a recorded session (text and `--json`), RHAPSODY's own
//! checkpoint, a log cut off by SIGKILL, and bad input.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

fn summary_json(args: &[&Path]) -> Value {
    let out = run(tal().arg("summary").arg("--json").args(args));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn a_recorded_session_is_summarised_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let log = record_tasks(dir.path(), "summary.s");
    let s = summary_json(&[&log]);
    assert_eq!(s["session_id"], "summary.s");
    let t = &s["tasks"];
    assert_eq!(t["total"], 4);
    assert_eq!(t["by_state"]["completed"], 3);
    assert_eq!(t["by_state"]["failed"], 1);
    assert_eq!(t["error_types"]["exit:1"], 1);
    assert_eq!(t["peak_running"], 2, "long and short ran at once");
    assert_eq!(t["slowest"][0]["task_id"], "long");
    assert_eq!(t["slowest"][0]["node_id"], "n1");
    assert_eq!(t["slowest"].as_array().unwrap().len(), 4);
    assert_eq!(t["failed"][0]["task_id"], "bad");
    let d = &t["duration_s"];
    assert_eq!(d["count"], 4);
    assert!(d["max"].as_f64().unwrap() >= 0.6, "{d}");
    assert!(d["p50"].as_f64().unwrap() <= d["p90"].as_f64().unwrap());
    let n = &s["nodes"][0];
    assert_eq!(n["node_id"], "n1");
    assert!(n["samples"].as_u64().unwrap() >= 5, "{n}");
    assert!(n["cpu_percent"]["p50"].is_number());
    assert!(s["agent"]["agent_cpu_us_per_sample"].as_f64().unwrap() > 0.0);
    // It agrees with the metric line's counters and percentiles (those
    // come from an HDR histogram of 3 significant digits).
    let v = read_jsonl_in(dir.path());
    let m = lines(&v, "metric", None)[0];
    for state in ["completed", "failed"] {
        assert_eq!(t["by_state"][state], m[format!("tasks_{state}").as_str()]);
    }
    assert_eq!(d["count"], m["task_duration_seconds_count"]);
    for q in ["p50", "p90", "p99", "max"] {
        let ours = d[q].as_f64().unwrap();
        let theirs = m[format!("task_duration_seconds_{q}").as_str()]
            .as_f64()
            .unwrap();
        assert!(
            (ours - theirs).abs() <= theirs * 2e-3 + 1e-6,
            "{q}: {ours} vs {theirs}"
        );
    }
    let node = &s["nodes"][0]["cpu_percent"];
    let metric_p50 = m["node_cpu_utilization_p50"].as_f64().unwrap();
    assert!(
        (node["p50"].as_f64().unwrap() - metric_p50).abs() <= 0.2,
        "{node} vs {metric_p50}"
    );
    assert_eq!(s["logs"][0]["clean_end"], true);
    assert_eq!(s["events"]["app.Phase"], 1);

    let out = run(tal().arg("summary").arg(&log));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for want in [
        "session summary.s",
        "tasks: 4",
        "completed 3, failed 1",
        "failures by type: exit:1 1",
        "at most 2 running at once",
        "slowest tasks:",
        "failed tasks:",
        "n1",
        "tal's own cost:",
        "records: complete",
    ] {
        assert!(text.contains(want), "no '{want}' in:\n{text}");
    }
}

#[test]
fn rhapsodys_checkpoint_is_summarised_without_tals_own_figures() {
    let reference = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rhapsody-0.6.0-tasks.telemetry.jsonl");
    let s = summary_json(&[&reference]);
    let v = read_jsonl(&reference);
    let metric = lines(&v, "metric", None)[0];
    let t = &s["tasks"];
    assert_eq!(t["total"], 20);
    assert_eq!(t["by_state"]["completed"], metric["tasks_completed"]);
    assert_eq!(t["by_state"]["failed"], metric["tasks_failed"]);
    assert_eq!(
        t["duration_s"]["count"],
        metric["task_duration_seconds_count"]
    );
    let sum: f64 = ["TaskCompleted", "TaskFailed", "TaskCanceled"]
        .iter()
        .flat_map(|ty| lines(&v, "event", Some(ty)))
        .filter_map(|e| e["duration_seconds"].as_f64())
        .sum();
    let mean = t["duration_s"]["mean"].as_f64().unwrap();
    assert!((mean * 20.0 - sum).abs() < 1e-9, "{mean} vs {sum}");
    assert!(s["agent"].is_null());
    assert_eq!(s["nodes"][0]["node_id"], "vm");
}

#[test]
fn a_log_cut_off_by_sigkill_is_summarised_and_said_to_be_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, log) = spawn_recorder(dir.path(), "summary.cut", "0.05");
    wait_until("three samples in the log", || samples_in_log(&log) >= 3);
    child.kill().unwrap();
    child.wait().unwrap();
    let s = summary_json(&[&log]);
    assert_eq!(s["logs"][0]["clean_end"], false);
    assert!(s["nodes"][0]["samples"].as_u64().unwrap() >= 3);
    let out = run(tal().arg("summary").arg(&log));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no end marker") || text.contains("CUT OFF"),
        "{text}"
    );
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"section\": \"metric\"}\n\n[oops\n").unwrap();
    let out = run(tal().arg("summary").arg(&bad));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("line 3"), "{err}");

    let log = dir.path().join("x.tal");
    std::fs::write(&log, b"not a tal log").unwrap();
    let out = run(tal().arg("summary").arg(&log).arg(&bad));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not both"));
    let out = run(tal().arg("summary").arg(&log));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("x.tal"), "{err}");
}

/// The small workflow's logs (see its `workflow.sh`), and its JSONL as
/// `tal convert` writes it.
fn small_workflow(dir: &Path) -> (Vec<std::path::PathBuf>, Vec<Value>) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small-workflow");
    let logs = files_with_ext(&fixture, ".tal");
    assert!(!logs.is_empty(), "no logs in {}", fixture.display());
    let jsonl = dir.join("small.telemetry.jsonl");
    run_ok(tal().arg("convert").arg("-o").arg(&jsonl).args(&logs));
    (logs, read_jsonl(&jsonl))
}

/// Each task's first terminal event (a reused id's later runs are not its).
fn first_terminal_events(v: &[Value]) -> Vec<&Value> {
    let mut seen = std::collections::HashSet::new();
    v.iter()
        .filter(|l| l["section"] == "event")
        .filter(|l| {
            ["TaskCompleted", "TaskFailed", "TaskCanceled"]
                .contains(&l["event_type"].as_str().unwrap())
        })
        .filter(|l| seen.insert(l["task_id"].as_str().unwrap().to_string()))
        .collect()
}

/// A task's figure from its terminal event, as the summary defines it:
/// `cpu` (user + system), `rss` (the larger of the two peaks), `io` (read
/// + written).
fn figure(e: &Value, what: &str) -> Option<f64> {
    let a = &e["attributes"];
    let f = |k: &str| a[k].as_f64();
    let sum = |x: Option<f64>, y: Option<f64>| x.zip(y).map(|(x, y)| x + y).or(x).or(y);
    match what {
        "cpu" => sum(f("cpu_user_seconds"), f("cpu_system_seconds")),
        "rss" => [f("max_rss_bytes"), f("rss_bytes_peak")]
            .into_iter()
            .flatten()
            .reduce(f64::max),
        "io" => sum(f("read_bytes"), f("write_bytes")),
        _ => unreachable!(),
    }
}

#[test]
fn the_small_workflow_ranks_its_tasks_as_their_terminal_events_say() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, v) = small_workflow(dir.path());
    let log_refs: Vec<&Path> = logs.iter().map(|p| p.as_path()).collect();
    let s = summary_json(&log_refs);
    let ends = first_terminal_events(&v);
    for (ranking, what, first) in [
        ("peak_rss", "rss", Some("alloc-400mb")),
        ("io", "io", Some("disk-io")),
        ("cpu_time", "cpu", None),
    ] {
        let r = &s["rankings"][ranking];
        let with: Vec<&&Value> = ends.iter().filter(|e| figure(e, what).is_some()).collect();
        assert_eq!(r["tasks_with_data"], with.len() as u64, "{ranking}");
        let top = r["top"].as_array().unwrap();
        assert_eq!(top.len(), with.len().min(10), "{ranking}");
        // Largest first, and every listed figure is its terminal event's.
        let key = match what {
            "cpu" => "cpu_seconds",
            "rss" => "peak_rss_bytes",
            _ => "io_bytes",
        };
        let figures: Vec<f64> = top.iter().map(|t| t[key].as_f64().unwrap()).collect();
        assert!(
            figures.windows(2).all(|w| w[0] >= w[1]),
            "{ranking}: {figures:?}"
        );
        let largest = with
            .iter()
            .map(|e| figure(e, what).unwrap())
            .fold(0.0, f64::max);
        assert!((figures[0] - largest).abs() < 1e-9, "{ranking}");
        for t in top {
            let id = t["task_id"].as_str().unwrap();
            let e = ends.iter().find(|e| e["task_id"] == id).unwrap();
            let want = figure(e, what).unwrap();
            assert!(
                (t[key].as_f64().unwrap() - want).abs() < 1e-9,
                "{ranking} {id}"
            );
            assert_eq!(t["node_id"], e["node_id"], "{id}");
            let a = &e["attributes"];
            for k in [
                "cpu_percent_mean",
                "cpu_percent_peak",
                "max_rss_bytes",
                "rss_bytes_peak",
            ] {
                assert_eq!(t[k].as_f64(), a[k].as_f64(), "{id} {k}");
            }
        }
        if let Some(first) = first {
            assert_eq!(top[0]["task_id"], first, "{ranking}");
            assert_eq!(top[0]["status"], "completed");
        }
    }
    // No GPU in this workflow: those rankings are empty and say why.
    for r in ["gpu_memory", "gpu_energy"] {
        assert!(s["rankings"][r]["top"].as_array().unwrap().is_empty());
        assert!(s["rankings"][r]["missing"].is_string());
    }
    let text = String::from_utf8(run_ok(tal().arg("summary").args(&logs)).stdout).unwrap();
    for (title, first) in [("peak RSS", "alloc-400mb"), ("I/O bytes", "disk-io")] {
        let at = text.find(&format!("tasks by {title}")).expect(title);
        let row = text[at..].lines().nth(2).unwrap();
        assert!(row.trim_start().starts_with(first), "{title}: {row}");
    }
    assert!(
        text.contains("\ntasks not ranked:\n  by GPU memory, peak of its devices summed: "),
        "{text}"
    );
}

#[test]
fn the_small_workflow_names_its_failed_and_reused_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, v) = small_workflow(dir.path());
    let log_refs: Vec<&Path> = logs.iter().map(|p| p.as_path()).collect();
    let s = summary_json(&log_refs);
    let t = &s["tasks"];
    // The failures, from the events: "N of M tasks failed: type (n), …".
    let failed = first_terminal_events(&v)
        .into_iter()
        .filter(|e| e["event_type"] == "TaskFailed")
        .map(|e| e["error_type"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(failed.len(), 2, "the workflow has two failures");
    let notes: Vec<&str> = s["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let note = notes
        .iter()
        .find(|n| n.contains("tasks failed: "))
        .unwrap_or_else(|| panic!("no failure note in {notes:?}"));
    assert!(
        note.starts_with(&format!("2 of {} tasks failed: ", t["total"])),
        "{note}"
    );
    for e in &failed {
        assert!(note.contains(&format!("{e} (1)")), "{note}");
    }
    // `dup` ran twice: its lifecycle starts again after its terminal event.
    let dup_starts = lines(&v, "event", Some("TaskStarted"))
        .iter()
        .filter(|e| e["task_id"] == "dup")
        .count();
    assert_eq!(dup_starts, 2);
    assert_eq!(t["reused_ids"], 1);
    assert_eq!(t["reused"][0]["task_id"], "dup");
    assert_eq!(t["reused"][0]["later_runs"], 1);
    assert!(
        notes.contains(&"task dup: id reused, its second run was not counted"),
        "{notes:?}"
    );
    // Its second run is not counted: durations as the spans and the metric.
    let m = lines(&v, "metric", None)[0];
    assert_eq!(t["duration_s"]["count"], m["task_duration_seconds_count"]);
    assert_eq!(t["total"], lines(&v, "span", None).len() as u64 - 1);
    let text = String::from_utf8(run_ok(tal().arg("summary").args(&logs)).stdout).unwrap();
    assert!(
        text.contains("  - task dup: id reused, its second run was not counted"),
        "{text}"
    );
    assert!(text.contains(&format!("  - {note}")), "{text}");
}

#[test]
fn the_small_workflow_gives_each_nodes_efficiency_and_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, v) = small_workflow(dir.path());
    let log_refs: Vec<&Path> = logs.iter().map(|p| p.as_path()).collect();
    let s = summary_json(&log_refs);
    let samples: Vec<&Value> = lines(&v, "event", Some("ResourceUpdate"))
        .into_iter()
        .filter(|e| e["resource_scope"] == "per_node")
        .collect();
    // Busy CPU-seconds / (CPUs × wall), each window weighed by its length
    // and the null ones (too short to measure) left out.
    let (mut busy, mut wall) = (0.0, 0.0);
    for w in samples.windows(2) {
        let dt = w[1]["event_time"].as_f64().unwrap() - w[0]["event_time"].as_f64().unwrap();
        if let Some(c) = w[1]["cpu_percent"].as_f64() {
            busy += c / 100.0 * dt;
            wall += dt;
        }
    }
    let cpus = samples
        .iter()
        .filter_map(|e| e["cpu_percent_per_core"].as_array())
        .map(|c| c.len())
        .max()
        .unwrap() as f64;
    let n = &s["nodes"][0];
    let cpu = &n["cpu"];
    assert_eq!(cpu["cpus"].as_f64(), Some(cpus));
    let close = |a: &Value, b: f64| (a.as_f64().unwrap() - b).abs() < 1e-6 * b.max(1.0);
    assert!(
        close(&cpu["efficiency_percent"], busy / wall * 100.0),
        "{cpu}"
    );
    assert!(close(&cpu["busy_cpu_seconds"], busy * cpus), "{cpu}");
    assert!(close(&cpu["available_cpu_seconds"], wall * cpus), "{cpu}");
    // The disk's bytes are the samples' (the workflow moves 64 MB each way).
    for (key, field) in [
        ("disk_read", "disk_read_bytes"),
        ("disk_write", "disk_write_bytes"),
    ] {
        let total: f64 = samples.iter().filter_map(|e| e[field].as_f64()).sum();
        assert!(total >= 64e6, "{key}: {total}");
        assert!(close(&n[key]["total_bytes"], total), "{key}");
        assert!(n[key]["peak_bytes_per_s"].as_f64().unwrap() > 0.0);
    }
    let peak = samples
        .iter()
        .filter_map(|e| e["memory_percent"].as_f64())
        .fold(0.0, f64::max);
    assert_eq!(n["memory"]["peak_percent"].as_f64(), Some(peak));
    // One node: the job is that node.
    for k in ["cpu", "memory", "disk_read", "disk_write"] {
        assert_eq!(s["job"][k], n[k], "{k}");
    }
    let text = String::from_utf8(run_ok(tal().arg("summary").args(&logs)).stdout).unwrap();
    assert!(text.contains("bytes in decimal units"), "{text}");
    assert!(text.contains("CPU        efficiency "), "{text}");
}

#[test]
fn a_recorded_node_gives_its_memory_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = record_tasks(dir.path(), "summary.mem");
    let v = read_jsonl_in(dir.path());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().strip_suffix("kB"))
        .and_then(|k| k.trim().parse().ok())
        .unwrap();
    let m = lines(&v, "metric", None)[0];
    let attr = &m["tal_logs"][0]["attributes"]["node.memory_total_bytes"];
    assert_eq!(attr.as_str(), Some((kb * 1024).to_string().as_str()), "{m}");
    let s = summary_json(&[&log]);
    let mem = &s["nodes"][0]["memory"];
    assert_eq!(mem["total_bytes"].as_f64(), Some((kb * 1024) as f64));
    let peak = mem["peak_percent"].as_f64().unwrap();
    let bytes = mem["peak_bytes"].as_f64().unwrap();
    assert!(
        (bytes - peak / 100.0 * (kb * 1024) as f64).abs() < 1.0,
        "{mem}"
    );
    let text = String::from_utf8(run_ok(tal().arg("summary").arg(&log)).stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("memory     peak "))
        .expect(&text);
    assert!(line.contains("B (") && line.contains(" of "), "{line}");
    assert!(!line.contains("not in the file"), "{line}");
}

/// A task's lifecycle events, as JSONL lines.
fn task_lines(id: &str, t: f64, attrs: &str) -> String {
    let ev = |ty: &str, t: f64, extra: &str| {
        format!(
            "{{\"section\": \"event\", \"event_type\": \"{ty}\", \"event_time\": {t}, \"session_id\": \"s\", \"task_id\": \"{id}\", \"node_id\": \"n1\", \"attributes\": {{{extra}}}{}}}\n",
            if ty == "TaskCompleted" { ", \"duration_seconds\": 0.5" } else { "" }
        )
    };
    ev("TaskCreated", t, "") + &ev("TaskStarted", t, "") + &ev("TaskCompleted", t + 0.5, attrs)
}

#[test]
fn absurd_figures_and_thousands_of_tasks_keep_the_summary_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.jsonl");
    let mut f = String::new();
    for i in 0..5000 {
        f += &task_lines(
            &format!("t{i}"),
            1e9 + i as f64,
            &format!(
                "\"cpu_user_seconds\": {}, \"max_rss_bytes\": {}",
                i % 977,
                1000 + i
            ),
        );
    }
    // Absurd: a negative CPU time, u64::MAX bytes, NaN (read as null).
    f += &task_lines(
        "absurd",
        1e9 + 6000.0,
        &format!("\"cpu_user_seconds\": -5.0, \"cpu_system_seconds\": NaN, \"max_rss_bytes\": {}, \"read_bytes\": -1", u64::MAX),
    );
    // One id run three times: two later runs, not counted.
    for k in 0..3 {
        f += &task_lines(
            "again",
            1e9 + 7000.0 + f64::from(k),
            "\"cpu_user_seconds\": 1e6",
        );
    }
    std::fs::write(&path, f).unwrap();
    let s = summary_json(&[&path]);
    let r = &s["rankings"];
    for k in ["cpu_time", "peak_rss"] {
        assert_eq!(r[k]["top"].as_array().unwrap().len(), 10, "{k}");
    }
    assert_eq!(r["peak_rss"]["top"][0]["task_id"], "absurd");
    assert_eq!(r["peak_rss"]["top"][0]["peak_rss_bytes"], u64::MAX);
    // The negative and NaN CPU figures are left out, not ranked as 0.
    assert_eq!(r["cpu_time"]["tasks_with_data"], 5001);
    assert_eq!(r["cpu_time"]["top"][0]["task_id"], "again");
    assert_eq!(
        r["cpu_time"]["top"][0]["cpu_seconds"], 1e6,
        "its first run only"
    );
    assert!(r["io"]["top"].as_array().unwrap().is_empty());
    assert_eq!(s["tasks"]["duration_s"]["count"], 5002);
    assert_eq!(s["tasks"]["reused"][0]["later_runs"], 2);
    let notes = s["notes"].to_string();
    assert!(
        notes.contains("task again: id reused, its 2 later runs were not counted"),
        "{notes}"
    );
    let out = run_ok(tal().arg("summary").arg(&path));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().count() < 150, "{text}");
    assert!(text.lines().all(|l| l.chars().count() < 300), "{text}");
    assert!(text.contains("18.4 EB"), "u64::MAX bytes, short: {text}");
}

#[test]
fn a_two_node_session_sums_its_nodes_into_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let record = |node: &str, secs: &str| {
        let mut c = tal();
        c.args([
            "record",
            "--interval",
            "0.1",
            "--session-id",
            "two",
            "--node-id",
            node,
        ])
        .arg("--socket")
        .arg(dir.path().join(format!("{node}.sock")))
        .arg("--out")
        .arg(dir.path())
        .args(["--", "sleep", secs]);
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (record("a", "0.6"), record("b", "0.8"));
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let logs = files_with_ext(dir.path(), ".tal");
    assert_eq!(logs.len(), 2);
    let refs: Vec<&Path> = logs.iter().map(|p| p.as_path()).collect();
    let s = summary_json(&refs);
    let nodes = s["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    let job = &s["job"];
    assert_eq!(job["nodes"], 2);
    let sum = |f: &dyn Fn(&Value) -> &Value| -> f64 {
        nodes.iter().map(|n| f(n).as_f64().unwrap()).sum()
    };
    for k in ["busy_cpu_seconds", "available_cpu_seconds", "cpus"] {
        let want = sum(&|n| &n["cpu"][k]);
        assert!((job["cpu"][k].as_f64().unwrap() - want).abs() < 1e-6, "{k}");
    }
    let want = sum(&|n| &n["memory"]["total_bytes"]);
    assert_eq!(job["memory"]["total_bytes"].as_f64(), Some(want));
    let want = sum(&|n| &n["disk_write"]["total_bytes"]);
    assert_eq!(job["disk_write"]["total_bytes"].as_f64(), Some(want));
    let text = String::from_utf8(run_ok(tal().arg("summary").args(&logs)).stdout).unwrap();
    assert!(text.contains("  job (2 nodes; "), "{text}");
    assert!(
        text.contains("  node a:") && text.contains("  node b:"),
        "{text}"
    );
}
