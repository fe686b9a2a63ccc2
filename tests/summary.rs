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
