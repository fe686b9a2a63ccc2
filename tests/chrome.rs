//! `tal convert --format chrome-trace`: a recorded session with overlapping
//! `tal run` tasks, a failure and a custom event, from node logs; RHAPSODY's
//! own checkpoint; and bad input.

mod common;
use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

fn events(trace: &Value) -> &Vec<Value> {
    trace["traceEvents"].as_array().expect("traceEvents")
}

/// The Trace Event Format's rules, as Perfetto and chrome://tracing read
/// them: known phases only; numeric `ts` (µs) on every timed event, and
/// `dur` on every complete slice; every pid and every slice's (pid, tid)
/// named by metadata; counters with numeric args; every task span of the
/// JSONL `v` exactly once; the session slice as long as the session span
/// (in µs).
fn assert_trace_event_format(trace: &Value, v: &[Value]) {
    let ev = events(trace);
    let mut procs = std::collections::HashSet::new();
    let mut threads = std::collections::HashSet::new();
    for e in ev.iter().filter(|e| e["ph"] == "M") {
        let pid = e["pid"].as_u64().expect("metadata pid");
        match e["name"].as_str().unwrap() {
            "process_name" => {
                procs.insert(pid);
            }
            "thread_name" => {
                threads.insert((pid, e["tid"].as_u64().unwrap()));
            }
            "process_sort_index" => {}
            other => panic!("unknown metadata {other}"),
        }
        assert!(
            e["args"]["name"].is_string() || e["args"]["sort_index"].is_u64(),
            "{e}"
        );
    }
    let mut slices: HashMap<String, usize> = HashMap::new();
    for e in ev.iter().filter(|e| e["ph"] != "M") {
        let ph = e["ph"].as_str().unwrap();
        assert!(["X", "C", "i"].contains(&ph), "phase {ph}");
        assert!(e["ts"].as_f64().is_some_and(|t| t >= 0.0), "{e}");
        let pid = e["pid"].as_u64().unwrap();
        assert!(procs.contains(&pid), "pid {pid} has no process_name");
        match ph {
            "X" => {
                assert!(e["dur"].as_f64().is_some_and(|d| d >= 0.0), "{e}");
                if e["cat"] != "session" {
                    let tid = e["tid"].as_u64().unwrap();
                    assert!(
                        threads.contains(&(pid, tid)),
                        "({pid}, {tid}) has no thread_name"
                    );
                    *slices
                        .entry(e["name"].as_str().unwrap().into())
                        .or_default() += 1;
                }
            }
            "C" => {
                let args = e["args"].as_object().unwrap();
                assert!(
                    !args.is_empty() && args.values().all(Value::is_number),
                    "{e}"
                );
            }
            _ => assert!(["g", "p", "t"].contains(&e["s"].as_str().unwrap()), "{e}"),
        }
    }
    let spans: Vec<&Value> = lines(v, "span", None);
    let mut want: HashMap<String, usize> = HashMap::new();
    for s in spans.iter().filter(|s| s["name"] == "task") {
        *want
            .entry(s["attributes"]["task_id"].as_str().unwrap().into())
            .or_default() += 1;
    }
    assert_eq!(slices, want, "every task exactly once");
    let session = spans.iter().find(|s| s["name"] == "session").unwrap();
    let us = (session["end_ns"].as_i64().unwrap() - session["start_ns"].as_i64().unwrap()) as f64
        / 1000.0;
    let slice = ev
        .iter()
        .find(|e| e["ph"] == "X" && e["cat"] == "session")
        .unwrap();
    assert!(
        (slice["dur"].as_f64().unwrap() - us).abs() < 1.0,
        "{slice} vs {us} µs"
    );
}

/// No two slices on one track overlap (the viewers need it).
fn assert_slots_are_disjoint(trace: &Value) {
    let mut tracks: HashMap<(u64, u64), Vec<(f64, f64)>> = HashMap::new();
    for e in events(trace).iter().filter(|e| e["cat"] != "session") {
        if e["ph"] == "X" {
            let (ts, dur) = (e["ts"].as_f64().unwrap(), e["dur"].as_f64().unwrap());
            assert!(ts >= 0.0 && dur >= 0.0, "{e}");
            tracks
                .entry((e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap()))
                .or_default()
                .push((ts, ts + dur));
        }
    }
    for (track, mut v) in tracks {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        for w in v.windows(2) {
            assert!(w[0].1 <= w[1].0, "track {track:?}: {w:?} overlap");
        }
    }
}

#[test]
fn a_recorded_session_becomes_a_trace_with_slots_counters_and_instants() {
    let dir = tempfile::tempdir().unwrap();
    let log = record_tasks(dir.path(), "chrome.s");
    let trace_path = dir.path().join("t.json");
    let out = run(tal()
        .args(["convert", "--format", "chrome-trace", "-o"])
        .arg(&trace_path)
        .arg(&log));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("4 tasks"), "{err}");
    let trace: Value = serde_json::from_slice(&std::fs::read(&trace_path).unwrap()).unwrap();
    let ev = events(&trace);
    let slice = |name: &str| {
        ev.iter()
            .find(|e| e["ph"] == "X" && e["name"] == name)
            .unwrap_or_else(|| panic!("no slice {name}"))
    };
    let (long, short, bad, after) = (slice("long"), slice("short"), slice("bad"), slice("after"));
    // All four ran on node n1's process; the two concurrent ones on
    // different slots, the later ones back on slot 1.
    let node_pid = ev
        .iter()
        .find(|e| e["name"] == "process_name" && e["args"]["name"] == "node n1")
        .unwrap()["pid"]
        .clone();
    for s in [long, short, bad, after] {
        assert_eq!(s["pid"], node_pid, "{s}");
    }
    assert_ne!(long["tid"], short["tid"]);
    assert_eq!(bad["tid"], 1);
    assert_eq!(after["tid"], 1);
    assert_eq!(bad["cname"], "bad");
    assert_eq!(bad["args"]["error_type"], "exit:1");
    assert_eq!(long["cname"], "good");
    let long_ms = long["dur"].as_f64().unwrap() / 1000.0;
    assert!((550.0..2000.0).contains(&long_ms), "{long_ms} ms");
    assert_slots_are_disjoint(&trace);
    assert_trace_event_format(&trace, &read_jsonl_in(dir.path()));
    // The node's series as counters, the custom event as an instant.
    let cpu = ev
        .iter()
        .filter(|e| e["ph"] == "C" && e["name"] == "cpu_percent")
        .count();
    assert!(cpu >= 5, "{cpu} cpu_percent samples");
    let phase = ev
        .iter()
        .find(|e| e["ph"] == "i" && e["name"] == "app.Phase")
        .expect("the custom event");
    assert_eq!(phase["args"]["phase"], "load");
    assert_eq!(phase["pid"], node_pid);
    assert_eq!(trace["otherData"]["session_id"], "chrome.s");
    assert!(ev
        .iter()
        .any(|e| e["ph"] == "X" && e["name"] == "session" && e["ts"] == 0.0));
}

#[test]
fn rhapsodys_own_checkpoint_converts_with_every_task() {
    let reference = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rhapsody-0.6.0-tasks.telemetry.jsonl");
    let out = run(tal()
        .args(["convert", "--format", "chrome-trace", "-o", "-"])
        .arg(&reference));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace: Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = read_jsonl(&reference);
    let spans = lines(&v, "span", None)
        .into_iter()
        .filter(|s| s["name"] == "task")
        .count();
    let failed = lines(&v, "event", Some("TaskFailed")).len();
    let slices: Vec<_> = events(&trace)
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] != "session")
        .collect();
    assert_eq!(slices.len(), spans);
    assert_eq!(
        slices.iter().filter(|e| e["cname"] == "bad").count(),
        failed
    );
    assert_trace_event_format(&trace, &v);
    // RHAPSODY's task events name no node: the session's process.
    assert!(slices.iter().all(|e| e["pid"] == 1));
    assert_slots_are_disjoint(&trace);
    assert!(events(&trace)
        .iter()
        .any(|e| e["ph"] == "C" && e["name"] == "cpu_percent"));
}

#[test]
fn bad_input_is_refused_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    std::fs::write(&input, "{\"section\": \"event\"}\n{not json\n").unwrap();
    let out_path = dir.path().join("bad.trace.json");
    let out = run(tal()
        .args(["convert", "--format", "chrome-trace"])
        .arg(&input));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("line 2"), "{err}");
    assert!(!out_path.exists(), "a partial trace was left behind");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only the input is left"
    );
}
