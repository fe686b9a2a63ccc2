//! Schema conformance: every line tal writes has the keys and JSON types of
//! the line of the same section and event type in the checkpoint RHAPSODY
//! 0.6.0 wrote itself (`tests/fixtures/`, a copy of the project's reference file). Extension keys are allowed;
//! none of RHAPSODY's may be missing or retyped. `null` is accepted in place
//! of a float only where SCHEMA.md allows it.

mod common;
use common::*;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tal::log::{Header, LogWriter};
use tal::record::*;

fn reference_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rhapsody-0.6.0-tasks.telemetry.jsonl")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn line_key(l: &Value) -> String {
    match l["section"].as_str().unwrap() {
        "event" => {
            let t = l["event_type"].as_str().unwrap();
            match l.get("resource_scope").and_then(Value::as_str) {
                Some(scope) => format!("event/{t}/{scope}"),
                None => format!("event/{t}"),
            }
        }
        "span" if l["name"] == "task" => {
            // Failed task spans carry error_type; others do not. Canceled
            // ones (none in the reference) have the completed ones' keys.
            match l["attributes"]["status"].as_str().unwrap() {
                "failed" => "span/task/failed".to_string(),
                _ => "span/task/completed".to_string(),
            }
        }
        "span" => format!("span/{}", l["name"].as_str().unwrap()),
        s => s.to_string(),
    }
}

/// Key → type of the first reference line of each kind.
fn reference() -> BTreeMap<String, Map<String, Value>> {
    let mut m = BTreeMap::new();
    for l in read_jsonl(&reference_path()) {
        m.entry(line_key(&l))
            .or_insert_with(|| l.as_object().unwrap().clone());
    }
    m
}

/// Keys SCHEMA.md allows to be null where the reference happens to hold a
/// float (first-sample deltas, and a node without GPUs).
const NULLABLE: &[&str] = &[
    "disk_read_bytes",
    "disk_write_bytes",
    "net_sent_bytes",
    "net_recv_bytes",
    "gpu_percent",
    "cpu_percent",
    "memory_percent",
];

fn check_conforms(lines: &[Value]) -> usize {
    let reference = reference();
    let mut checked = 0;
    for l in lines {
        let k = line_key(l);
        let Some(r) = reference.get(&k) else {
            // Custom event types have no reference line; they still carry
            // every common event key.
            if k.starts_with("event/") && l["event_type"].as_str().unwrap().contains('.') {
                let base = &reference["event/SessionStarted"];
                for key in base.keys() {
                    assert!(l.get(key).is_some(), "{k}: missing {key}: {l}");
                }
                continue;
            }
            panic!("no reference line of kind {k}");
        };
        let obj = l.as_object().unwrap();
        for (key, rv) in r {
            // The metric line lists only instruments with data.
            if k == "metric" && !["checkpoint_time", "section"].contains(&key.as_str()) {
                if let Some(v) = obj.get(key) {
                    assert_eq!(kind(v), kind(rv), "metric key {key} retyped: {l}");
                }
                continue;
            }
            let v = obj
                .get(key)
                .unwrap_or_else(|| panic!("{k}: missing key {key}: {l}"));
            let ok = kind(v) == kind(rv)
                || (kind(v) == "null" && NULLABLE.contains(&key.as_str()))
                // SCHEMA.md: backend and node_id are "string or null"; the
                // agent fills in the node of a client event (DESIGN.md).
                || (kind(v) == "string" && kind(rv) == "null" && (key == "backend" || key == "node_id"))
                || (kind(rv) == "string" && kind(v) == "null" && key == "backend");
            assert!(
                ok,
                "{k}: key {key} is {} in tal, {} in RHAPSODY: {l}",
                kind(v),
                kind(rv)
            );
            // Nested attribute objects: RHAPSODY's attribute keys are kept.
            if let (Value::Object(a), Value::Object(ra)) = (v, rv) {
                for (ak, arv) in ra {
                    let av = a
                        .get(ak)
                        .unwrap_or_else(|| panic!("{k}: attributes lack {ak}: {l}"));
                    assert_eq!(kind(av), kind(arv), "{k}: attribute {ak} retyped: {l}");
                }
            }
        }
        // Ids keep RHAPSODY's forms.
        for idk in ["trace_id", "span_id", "parent_span_id"] {
            if let Some(Value::String(s)) = obj.get(idk) {
                assert!(s.starts_with("0x") && !s.starts_with("0x0"), "{idk} {s}");
                assert!(s[2..]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            }
        }
        if let Some(Value::String(id)) = obj.get("event_id") {
            assert_eq!(id.len(), 32);
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
        checked += 1;
    }
    checked
}

#[test]
fn recorded_lines_match_rhapsody_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tal()
        .args(["record", "--interval", "50ms", "--out"])
        .arg(dir.path())
        .args(["--", "sleep", "0.5"]));
    assert!(out.status.success());
    let v = read_jsonl_in(dir.path());
    assert_complete(&v);
    let n = check_conforms(&v);
    assert!(n >= 10, "only {n} lines checked");
    // The first sample's deltas are null, later ones are floats.
    let res = lines(&v, "event", Some("ResourceUpdate"));
    assert!(res[0]["disk_read_bytes"].is_null());
    assert!(res[1]["disk_read_bytes"].is_f64());
    assert!(res[1]["cpu_percent_per_core"].is_array());
}

fn ev(t: i64, task: Option<&str>, backend: Option<&str>, kind: EventKind) -> Record {
    let attributes = match task {
        Some(_) => vec![
            ("executable".to_string(), Value2::Str("/bin/true".into())),
            ("task_type".to_string(), Value2::Str("ComputeTask".into())),
        ],
        None => vec![],
    };
    Record::Event(Event {
        event_id: t as u128 * 31,
        event_time_ns: 1_795_000_000_000_000_000 + t * 1_000_000,
        emit_time_ns: 1_795_000_000_000_000_000 + t * 1_000_000 + 1000,
        backend: backend.map(String::from),
        task_id: task.map(String::from),
        node_id: None,
        attributes,
        kind,
    })
}

use tal::record::Value as Value2;

fn task(state: TaskState, d: Option<f64>, err: Option<&str>) -> EventKind {
    EventKind::Task(TaskEvent {
        state,
        duration_seconds: d,
        error_type: err.map(String::from),
        extra: vec![],
    })
}

#[test]
fn task_and_custom_event_lines_match_rhapsody_reference() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.tasks.n1.tal");
    let header = Header {
        session_id: "s.tasks".into(),
        node_id: "n1".into(),
        hostname: "n1".into(),
        backend: "tal".into(),
        pid: 1,
        tal_version: "0".into(),
        start_wall_ns: 1_795_000_000_000_000_000,
        start_mono_ns: 0,
        interval_ns: 100_000_000,
        chunk_bytes: 1 << 20,
        ncpus: 1,
        attributes: vec![],
    };
    let mut w = LogWriter::create(&path, &header).unwrap();
    let mut u = ResourceUpdate::empty(ResourceScope::PerNode);
    u.cpu_percent = Some(1.5);
    u.memory_percent = Some(2.5);
    u.disk_read_bytes = Some(0.0);
    u.disk_write_bytes = Some(0.0);
    u.net_sent_bytes = Some(0.0);
    u.net_recv_bytes = Some(0.0);
    let records = vec![
        ev(0, None, Some("tal"), EventKind::SessionStarted),
        ev(1, Some("t1"), None, task(TaskState::Created, None, None)),
        ev(
            2,
            Some("t1"),
            Some("concurrent"),
            task(TaskState::Submitted, None, None),
        ),
        ev(
            3,
            Some("t1"),
            Some("concurrent"),
            task(TaskState::Queued, None, None),
        ),
        ev(
            4,
            Some("t1"),
            Some("concurrent"),
            task(TaskState::Started, None, None),
        ),
        ev(5, None, Some("tal"), EventKind::ResourceUpdate(u)),
        ev(
            6,
            Some("t1"),
            Some("concurrent"),
            task(TaskState::Completed, Some(0.002), None),
        ),
        ev(
            7,
            Some("t2"),
            Some("concurrent"),
            task(TaskState::Failed, Some(0.0), Some("exit:3")),
        ),
        ev(
            8,
            Some("t2"),
            Some("concurrent"),
            EventKind::Custom {
                event_type: "app.Checkpoint".into(),
                fields: vec![("step".into(), Value2::Int(3))],
            },
        ),
        ev(
            9,
            None,
            Some("tal"),
            EventKind::SessionEnded {
                duration_seconds: 0.009,
            },
        ),
    ];
    for r in &records {
        w.append(r).unwrap();
    }
    w.finish(None).unwrap();
    let (target, _) =
        tal::convert::to_jsonl(&[path], &tal::convert::Output::DefaultIn(dir.path().into()))
            .unwrap();
    let v = read_jsonl(&target.unwrap());
    assert_complete(&v);
    let n = check_conforms(&v);
    // Every line but the custom one is checked: the events, the metric line,
    // two task spans and the session span.
    assert_eq!(n, records.len() - 1 + 1 + 2 + 1);
    assert_eq!(lines(&v, "span", None).len(), 3);
    let failed = lines(&v, "event", Some("TaskFailed"))[0];
    assert_eq!(failed["error_type"], "exit:3");
    let custom = lines(&v, "event", Some("app.Checkpoint"))[0];
    assert_eq!(custom["step"], 3);
    // Task events carry the task's span id, others the session span's.
    let created = lines(&v, "event", Some("TaskCreated"))[0];
    let completed = lines(&v, "event", Some("TaskCompleted"))[0];
    assert_eq!(created["span_id"], completed["span_id"]);
    assert_eq!(
        custom["span_id"], failed["span_id"],
        "a custom event with a task_id joins its span"
    );
    assert_ne!(
        created["span_id"],
        lines(&v, "event", Some("SessionStarted"))[0]["span_id"]
    );
    assert_eq!(
        created["trace_id"],
        lines(&v, "event", Some("SessionStarted"))[0]["trace_id"]
    );
}
