//! The RHAPSODY bridge against real RHAPSODY: `rhapsody-py[telemetry]==0.6.0`
//! from PyPI (in a venv that `scripts/setup-python.sh` makes), a real
//! `Session` on its `ConcurrentExecutionBackend` running 60 shell tasks
//! (successes, /bin/false, missing executables, `exit 3` in a shell,
//! sleeps) under `tal record`, with RHAPSODY's own checkpoint enabled too.
//! tal's JSONL must have the same tasks, terminal states, error types and
//! (within 1 ms) durations as RHAPSODY's file, and the same counters.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn terminals(v: &[Value]) -> BTreeMap<String, (String, Option<String>, f64)> {
    v.iter()
        .filter(|l| {
            l["section"] == "event"
                && matches!(
                    l["event_type"].as_str(),
                    Some("TaskCompleted" | "TaskFailed" | "TaskCanceled")
                )
        })
        .map(|l| {
            (
                l["task_id"].as_str().unwrap().to_string(),
                (
                    l["event_type"].as_str().unwrap().to_string(),
                    l["error_type"].as_str().map(String::from),
                    l["duration_seconds"].as_f64().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn a_real_rhapsody_session_matches_rhapsodys_own_checkpoint() {
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    let rh_dir = dir.path().join("rhapsody");
    std::fs::create_dir_all(&rh_dir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rhapsody_session.py");
    let out = run(tal()
        .args([
            "record",
            "--interval",
            "0.1",
            "--session-id",
            "s.rh",
            "--node-id",
            "n",
            "--out",
        ])
        .arg(dir.path())
        .arg("--")
        .arg(&py)
        .arg(&script)
        .arg(&rh_dir)
        .arg("60")
        // RHAPSODY makes its session's work directory in the current one.
        .current_dir(dir.path()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(stdout.contains("dropped 0, refused 0"), "{stdout}");

    let tal_v = read_jsonl_in(dir.path());
    let rh_files = files_with_ext(&rh_dir, ".telemetry.jsonl");
    assert_eq!(rh_files.len(), 1);
    let rh_v = read_jsonl(&rh_files[0]);
    assert_complete(&tal_v);

    let (a, b) = (terminals(&tal_v), terminals(&rh_v));
    assert_eq!(b.len(), 60, "RHAPSODY finished every task");
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "same tasks"
    );
    for (id, (ty, err, d)) in &b {
        let (tty, terr, td) = &a[id];
        assert_eq!(tty, ty, "{id}: terminal state");
        assert_eq!(terr, err, "{id}: error type");
        assert!((td - d).abs() <= 1e-3, "{id}: duration {td} vs {d}");
    }
    let kinds: Vec<&str> = b.values().map(|(t, _, _)| t.as_str()).collect();
    assert!(kinds.contains(&"TaskCompleted") && kinds.contains(&"TaskFailed"));
    assert!(b
        .values()
        .any(|(_, e, _)| e.as_deref() == Some("FileNotFoundError")));

    // The same counter values in the metric line.
    let m = |v: &[Value]| (*lines(v, "metric", None).last().unwrap()).clone();
    let (ma, mb) = (m(&tal_v), m(&rh_v));
    for k in [
        "tasks_submitted",
        "tasks_started",
        "tasks_completed",
        "tasks_failed",
        "tasks_running",
        "task_duration_seconds_count",
    ] {
        assert_eq!(ma[k], mb[k], "{k}");
    }
    let (sa, sb) = (
        ma["task_duration_seconds_sum"].as_f64().unwrap(),
        mb["task_duration_seconds_sum"].as_f64().unwrap(),
    );
    assert!((sa - sb).abs() < 1e-3 * 60.0, "duration sums {sa} vs {sb}");

    // One task span per task, parented to the session span, RHAPSODY statuses.
    let spans: Vec<&Value> = lines(&tal_v, "span", None)
        .into_iter()
        .filter(|s| s["name"] == "task")
        .collect();
    assert_eq!(spans.len(), 60);
    let session_span = lines(&tal_v, "span", None).pop().unwrap()["span_id"].clone();
    assert!(spans.iter().all(|s| s["parent_span_id"] == session_span));
}
