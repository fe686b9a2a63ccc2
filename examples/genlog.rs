//! Generates synthetic node logs for benchmarks: N nodes × M seconds at a
//! given rate of per_node ResourceUpdate events (with per-core values),
//! written through the real `LogWriter`, with snapshots every 10 s and a
//! clean end. Node clocks start within the same second.
//!
//! With TASKS, each node also runs that many tasks one after another
//! (every seventh fails within 0.2 ms; the others complete with CPU time,
//! peak RSS and I/O figures), and the first node emits a custom event
//! (`app.PhaseStarted`) at half time: what the report's screenshots need.
//!
//! Usage: genlog DIR NODES SECONDS [HZ] [CORES] [SESSION] [TASKS]

use std::path::PathBuf;
use tal::log::{Header, LogWriter, DEFAULT_CHUNK_BYTES};
use tal::record::*;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 4 {
        eprintln!("usage: genlog DIR NODES SECONDS [HZ] [CORES] [SESSION] [TASKS]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&a[1]);
    let nodes: usize = a[2].parse().unwrap();
    let secs: u64 = a[3].parse().unwrap();
    let hz: u64 = a.get(4).map_or(10, |s| s.parse().unwrap());
    let cores: usize = a.get(5).map_or(2, |s| s.parse().unwrap());
    let session = a.get(6).cloned().unwrap_or_else(|| "bench.session".into());
    let tasks: u64 = a.get(7).map_or(0, |s| s.parse().unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    let t0: i64 = 1_795_000_000_000_000_000;
    let step = 1_000_000_000 / hz as i64;
    let mut ids = tal::ids::EventIdGen::with_seed(1);
    let mut total = 0u64;
    for n in 0..nodes {
        let node = format!("node{n:04}");
        let start = t0 + (n as i64 * 7_919_000) % 1_000_000_000;
        let header = Header {
            session_id: session.clone(),
            node_id: node.clone(),
            hostname: node.clone(),
            backend: "tal".into(),
            pid: 1,
            tal_version: env!("CARGO_PKG_VERSION").into(),
            start_wall_ns: start,
            start_mono_ns: 0,
            interval_ns: step as u64,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            ncpus: cores as u32,
            attributes: vec![],
        };
        let path = dir.join(format!("{session}.{node}.tal"));
        let _ = std::fs::remove_file(&path);
        let mut w = LogWriter::create(&path, &header).unwrap();
        let mut ev = |t: i64, kind: EventKind| {
            Record::Event(Event {
                event_id: ids.next_id(),
                event_time_ns: t,
                emit_time_ns: t + 20_000,
                backend: Some("tal".into()),
                task_id: None,
                node_id: None,
                attributes: vec![],
                kind,
            })
        };
        w.append(&ev(start, EventKind::SessionStarted)).unwrap();
        let samples = secs * hz;
        let mut lifecycle = task_events(n, start, secs as i64 * 1_000_000_000, tasks);
        if n == 0 && tasks > 0 {
            let custom = EventKind::Custom {
                event_type: "app.PhaseStarted".into(),
                fields: vec![("phase".into(), Value::Str("second half".into()))],
            };
            lifecycle.push((start + secs as i64 * 500_000_000, None, custom, vec![]));
            lifecycle.sort_by_key(|e| e.0);
        }
        let mut next = 0;
        for i in 0..samples {
            let t = start + i as i64 * step;
            while next < lifecycle.len() && lifecycle[next].0 <= t {
                let (at, task, kind, attributes) = lifecycle[next].clone();
                let mut e = ev(at, kind);
                if let Record::Event(e) = &mut e {
                    e.task_id = task;
                    e.attributes = attributes;
                }
                w.append(&e).unwrap();
                next += 1;
            }
            let mut u = ResourceUpdate::empty(ResourceScope::PerNode);
            u.cpu_percent = Some(((i * 37 + n as u64) % 1000) as f64 / 10.0);
            u.memory_percent = Some(((i * 13) % 1000) as f64 / 10.0);
            if i > 0 {
                u.disk_read_bytes = Some(((i * 4096) % 1_000_000) as f64);
                u.disk_write_bytes = Some(((i * 8192) % 2_000_000) as f64);
                u.net_sent_bytes = Some(((i * 1500) % 3_000_000) as f64);
                u.net_recv_bytes = Some(((i * 9000) % 3_000_000) as f64);
            }
            u.cpu_percent_per_core = (0..cores).map(|c| ((i + c as u64) % 100) as f32).collect();
            w.append(&ev(t, EventKind::ResourceUpdate(u))).unwrap();
            if i % (10 * hz) == 0 {
                w.append(&Record::Snapshot(AgentSnapshot {
                    wall_ns: t,
                    samples_taken: i + 1,
                    ..Default::default()
                }))
                .unwrap();
            }
            total += 1;
        }
        let end = start + samples as i64 * step;
        w.append(&ev(
            end,
            EventKind::SessionEnded {
                duration_seconds: (end - start) as f64 / 1e9,
            },
        ))
        .unwrap();
        w.finish(Some(&Record::End(EndMarker {
            wall_ns: end,
            reason: EndReason::Signal(15),
        })))
        .unwrap();
    }
    println!("{total}");
}

/// Node `n`'s `count` tasks over `span` ns from `start`, one after
/// another: their lifecycle events by time, with their attributes.
type Lifecycle = Vec<(i64, Option<String>, EventKind, Attributes)>;

fn task_events(n: usize, start: i64, span: i64, count: u64) -> Lifecycle {
    let mut out = Vec::new();
    for j in 0..count {
        let id = format!("n{n:04}.t{j}");
        let slot = span / count as i64;
        let s = start + j as i64 * slot + slot / 20;
        let failed = j % 7 == 3;
        let d = if failed {
            200_000
        } else {
            slot / 2 + (n as i64 * 7_919 + j as i64 * 104_729) % (slot / 3)
        };
        let task = |state, duration_seconds, error_type| {
            EventKind::Task(TaskEvent {
                state,
                duration_seconds,
                error_type,
                extra: vec![],
            })
        };
        let ty: Attributes = vec![("task_type".into(), Value::Str("ComputeTask".into()))];
        out.push((
            s,
            Some(id.clone()),
            task(TaskState::Created, None, None),
            ty.clone(),
        ));
        out.push((
            s + 1_000,
            Some(id.clone()),
            task(TaskState::Started, None, None),
            ty.clone(),
        ));
        let secs = d as f64 / 1e9;
        let mut figures = ty;
        figures.extend([
            ("cpu_user_seconds".into(), Value::Float(secs * 0.8)),
            ("cpu_system_seconds".into(), Value::Float(secs * 0.1)),
            (
                "max_rss_bytes".into(),
                Value::Int(((n as i64 * 31 + j as i64 * 17) % 900 + 100) << 20),
            ),
            (
                "read_bytes".into(),
                Value::Int(((j as i64 * 13) % 50) << 20),
            ),
            (
                "write_bytes".into(),
                Value::Int(((n as i64 + j as i64) % 20) << 20),
            ),
        ]);
        out.push(if failed {
            let e = task(TaskState::Failed, Some(secs), Some("exit:1".into()));
            (s + d, Some(id), e, vec![])
        } else {
            (
                s + d,
                Some(id),
                task(TaskState::Completed, Some(secs), None),
                figures,
            )
        });
    }
    out
}
