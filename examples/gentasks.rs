//! Generates one synthetic node log full of tasks, for the conversion's
//! memory benchmark (`scripts/bench-tasks.sh`): OPEN tasks that never end
//! and CLOSED tasks that do, written through the real `LogWriter` over 60 s
//! of 10 Hz per_node samples, with a clean end.
//!
//! Every task is reported as `tal run` reports one: TaskCreated and
//! TaskSubmitted with `executable` and `task_type`, TaskStarted with its
//! `pid`, and for a closed task TaskCompleted with its resource use
//! (`cpu_user_seconds`, `max_rss_bytes`). Task ids are `task.000001`-style,
//! as RHAPSODY names them. The closed tasks' events come first, one task
//! after another; the open tasks are created and started after them.
//!
//! Usage: gentasks FILE OPEN CLOSED

use std::path::PathBuf;
use tal::log::{Header, LogWriter, DEFAULT_CHUNK_BYTES};
use tal::record::*;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 4 {
        eprintln!("usage: gentasks FILE OPEN CLOSED");
        std::process::exit(2);
    }
    let path = PathBuf::from(&a[1]);
    let open: u64 = a[2].parse().expect("OPEN: a number");
    let closed: u64 = a[3].parse().expect("CLOSED: a number");
    let t0: i64 = 1_795_000_000_000_000_000;
    let secs = 60i64;
    let header = Header {
        session_id: "bench.tasks".into(),
        node_id: "node0000".into(),
        hostname: "node0000".into(),
        backend: "tal".into(),
        pid: 1,
        tal_version: env!("CARGO_PKG_VERSION").into(),
        start_wall_ns: t0,
        start_mono_ns: 0,
        interval_ns: 100_000_000,
        chunk_bytes: DEFAULT_CHUNK_BYTES,
        ncpus: 2,
        attributes: vec![],
    };
    let _ = std::fs::remove_file(&path);
    let mut w = LogWriter::create(&path, &header).expect("create the log");
    let mut ids = tal::ids::EventIdGen::with_seed(7);
    let mut append = |t: i64, task: Option<String>, attributes: Attributes, kind: EventKind| {
        let backend = match &kind {
            EventKind::Task(t) if t.state == TaskState::Created => None,
            _ => Some("concurrent".to_string()),
        };
        w.append(&Record::Event(Event {
            event_id: ids.next_id(),
            event_time_ns: t,
            emit_time_ns: t + 20_000,
            backend,
            task_id: task,
            node_id: None,
            attributes,
            kind,
        }))
        .expect("append");
    };
    let task = |state| {
        EventKind::Task(TaskEvent {
            state,
            duration_seconds: None,
            error_type: None,
            extra: vec![],
        })
    };
    let base = |i: u64| -> Attributes {
        vec![
            (
                "executable".into(),
                Value::Str(["/bin/sleep", "/usr/bin/python3", "./train.sh"][i as usize % 3].into()),
            ),
            ("task_type".into(), Value::Str("ComputeTask".into())),
        ]
    };
    append(t0, None, vec![], EventKind::SessionStarted);
    let total = open + closed;
    let samples = secs * 10;
    let mut sample = 0i64;
    for i in 0..total {
        // Tasks spread evenly over the run, samples between them.
        let t = t0 + 1_000_000 + (i as i64) * (secs * 1_000_000_000 - 2_000_000) / total as i64;
        while t0 + sample * 100_000_000 < t && sample < samples {
            let mut u = ResourceUpdate::empty(ResourceScope::PerNode);
            u.cpu_percent = Some((sample % 100) as f64);
            u.memory_percent = Some(42.0);
            u.cpu_percent_per_core = vec![10.0, 20.0];
            append(
                t0 + sample * 100_000_000,
                None,
                vec![],
                EventKind::ResourceUpdate(u),
            );
            sample += 1;
        }
        let id = Some(format!("task.{:06}", i + 1));
        append(t, id.clone(), base(i), task(TaskState::Created));
        append(t + 1, id.clone(), base(i), task(TaskState::Submitted));
        let mut started = base(i);
        started.push(("pid".into(), Value::Int(1000 + (i % 4_000_000) as i64)));
        append(t + 2, id.clone(), started, task(TaskState::Started));
        if i < closed {
            let mut done = base(i);
            done.push(("cpu_user_seconds".into(), Value::Float(0.25)));
            done.push(("max_rss_bytes".into(), Value::Int(1 << 20)));
            append(t + 3, id, done, task(TaskState::Completed));
        }
    }
    let end = t0 + secs * 1_000_000_000;
    append(
        end,
        None,
        vec![],
        EventKind::SessionEnded {
            duration_seconds: secs as f64,
        },
    );
    w.finish(Some(&Record::End(EndMarker {
        wall_ns: end,
        reason: EndReason::Signal(15),
    })))
    .expect("finish the log");
}
