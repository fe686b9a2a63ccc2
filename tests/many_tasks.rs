//! Sessions with many tasks: span lines wait on disk rather than in memory
//! when there are more than a few MiB of them, and come out whole and in
//! RHAPSODY's order all the same; a spill that cannot be written is a
//! clear error.

mod common;

use common::{lines, read_jsonl, run, tal};
use std::collections::HashSet;
use std::path::Path;
use tal::log::{Header, LogWriter};
use tal::record::{EndMarker, EndReason, Event, EventKind, Record, TaskEvent, TaskState, Value};

const T0: i64 = 1_795_000_000_000_000_000;

fn task_event(t: i64, id: &str, state: TaskState) -> Record {
    let mut attributes = vec![
        ("executable".to_string(), Value::Str("/bin/true".into())),
        ("task_type".to_string(), Value::Str("ComputeTask".into())),
    ];
    if state == TaskState::Started {
        attributes.push(("pid".into(), Value::Int(1000 + t % 30_000)));
    }
    Record::Event(Event {
        event_id: (t as u128) << 8 | state as u128,
        event_time_ns: T0 + t * 1000,
        emit_time_ns: T0 + t * 1000,
        backend: Some("concurrent".into()),
        task_id: Some(id.into()),
        node_id: None,
        attributes,
        kind: EventKind::Task(TaskEvent {
            state,
            duration_seconds: None,
            error_type: None,
            extra: vec![],
        }),
    })
}

/// A log of `closed` tasks that end in an order unlike their start (and
/// some repeat their end), then `open` tasks that never end.
fn write_log(path: &Path, closed: usize, open: usize) {
    let header = Header {
        session_id: "s.many".into(),
        node_id: "n1".into(),
        hostname: "n1".into(),
        backend: "tal".into(),
        pid: 1,
        tal_version: "0".into(),
        start_wall_ns: T0,
        start_mono_ns: 0,
        interval_ns: 100_000_000,
        chunk_bytes: 1 << 20,
        ncpus: 1,
        attributes: vec![],
    };
    let mut w = LogWriter::create(path, &header).unwrap();
    let mut t = 1;
    for i in 0..closed {
        let id = format!("task.{i:06}");
        w.append(&task_event(t, &id, TaskState::Created)).unwrap();
        w.append(&task_event(t + 1, &id, TaskState::Started))
            .unwrap();
        t += 2;
        // Every third task ends at once, the others in batches of 100,
        // last started first.
        if i % 3 == 0 {
            w.append(&task_event(t, &id, TaskState::Completed)).unwrap();
            t += 1;
        }
        if i % 100 == 99 {
            for j in (i - 99..=i).rev().filter(|j| j % 3 != 0) {
                let state = if j % 7 == 0 {
                    TaskState::Failed
                } else {
                    TaskState::Completed
                };
                w.append(&task_event(t, &format!("task.{j:06}"), state))
                    .unwrap();
                t += 1;
            }
            // A repeated end changes nothing.
            w.append(&task_event(
                t,
                &format!("task.{:06}", i - 1),
                TaskState::Completed,
            ))
            .unwrap();
            t += 1;
        }
    }
    for i in (0..open).rev() {
        let id = format!("open.{i:06}");
        w.append(&task_event(t, &id, TaskState::Created)).unwrap();
        t += 1;
    }
    w.finish(Some(&Record::End(EndMarker {
        wall_ns: T0 + t * 1000,
        reason: EndReason::Signal(15),
    })))
    .unwrap();
}

#[test]
fn spans_beyond_memory_come_out_whole_and_in_closing_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("s.many.n1.tal");
    // About 600 bytes per span line: 10 000 spans are well past what is
    // kept in memory.
    let (closed, open) = (9_000, 1_000);
    write_log(&log, closed, open);
    let out = dir.path().join("out.jsonl");
    let o = run(tal().arg("convert").arg(&log).arg("-o").arg(&out));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("10000 tasks, 1000 of them open at the end") && err.contains("peak memory"),
        "{err}"
    );
    let v = read_jsonl(&out);
    // More span lines than are kept in memory (4 MiB): the spill was used.
    let text = std::fs::read_to_string(&out).unwrap();
    let span_bytes: usize = text
        .lines()
        .filter(|l| l.ends_with(r#""section": "span"}"#))
        .map(|l| l.len() + 1)
        .sum();
    assert!(span_bytes > 5 << 20, "{span_bytes}");
    // Only the log and the output remain: the spill file had no name.
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["out.jsonl", "s.many.n1.tal"]);

    // The terminal event lines, in file order, are the order the spans closed.
    let ends: Vec<String> = v
        .iter()
        .filter(|l| l["section"] == "event")
        .filter(|l| {
            ["TaskCompleted", "TaskFailed", "TaskCanceled"]
                .contains(&l["event_type"].as_str().unwrap_or(""))
        })
        .map(|l| l["task_id"].as_str().unwrap().to_string())
        .collect();
    let mut seen = HashSet::new();
    let first_ends: Vec<&String> = ends.iter().filter(|id| seen.insert(*id)).collect();
    let spans = lines(&v, "span", None);
    let task_spans: Vec<&str> = spans
        .iter()
        .filter(|s| s["name"] == "task")
        .map(|s| s["attributes"]["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(task_spans.len(), closed + open);
    assert_eq!(
        task_spans,
        first_ends.iter().map(|s| s.as_str()).collect::<Vec<_>>()
    );
    // Open tasks close last, in task order; the session span is the last line.
    assert_eq!(task_spans[closed], "open.000000");
    assert_eq!(task_spans[closed + open - 1], "open.000999");
    assert_eq!(v.last().unwrap()["name"], "session");
    // The layout: events, then the metric line, then spans.
    let sections: Vec<&str> = v.iter().map(|l| l["section"].as_str().unwrap()).collect();
    let first_span = sections.iter().position(|s| *s == "span").unwrap();
    assert_eq!(sections[first_span - 1], "metric");
    assert!(sections[first_span..].iter().all(|s| *s == "span"));
    assert!(sections[..first_span - 1].iter().all(|s| *s == "event"));
    // A failed task's span says so.
    let failed = spans
        .iter()
        .find(|s| s["attributes"]["task_id"] == "task.000007")
        .unwrap();
    assert_eq!(failed["status_code"], "ERROR");
    // To stdout, the same bytes.
    let o = run(tal().arg("convert").arg(&log).arg("-o").arg("-"));
    assert!(o.status.success());
    assert_eq!(o.stdout, std::fs::read(&out).unwrap());

    // OTLP JSON, whose spans are written as they are read: one request
    // with every span, in the JSONL's order.
    let prefix = dir.path().join("otlp");
    let o = run(tal()
        .arg("convert")
        .arg(&log)
        .args(["--format", "otlp-json", "-o"])
        .arg(&prefix));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let traces: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("otlp.traces.json")).unwrap())
            .unwrap();
    let rs = traces["resourceSpans"].as_array().unwrap();
    assert_eq!(rs.len(), 1);
    let otlp_spans = rs[0]["scopeSpans"][0]["spans"].as_array().unwrap();
    assert_eq!(otlp_spans.len(), closed + open + 1);
    let jsonl_span_ids: Vec<String> = spans
        .iter()
        .map(|s| {
            format!(
                "{:0>16}",
                s["span_id"].as_str().unwrap().trim_start_matches("0x")
            )
        })
        .collect();
    let otlp_span_ids: Vec<&str> = otlp_spans
        .iter()
        .map(|s| s["spanId"].as_str().unwrap())
        .collect();
    assert_eq!(otlp_span_ids, jsonl_span_ids);
}

#[test]
fn a_spill_that_cannot_be_written_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("s.many.n1.tal");
    write_log(&log, 9_000, 0);
    // To stdout, spans wait in $TMPDIR: here, a directory that is not there.
    let missing = dir.path().join("no-such-dir");
    let o = run(tal()
        .env("TMPDIR", &missing)
        .arg("convert")
        .arg(&log)
        .arg("-o")
        .arg("-"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("temporary file for task spans") && err.contains("no-such-dir"),
        "{err}"
    );
    assert!(err.contains("TMPDIR"), "{err}");
    // The log is untouched, and converts where there is room.
    let o = run(tal().arg("convert").arg(&log).arg("-o").arg("-"));
    assert!(o.status.success());
}
