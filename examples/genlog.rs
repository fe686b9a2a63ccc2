//! Generates synthetic node logs for benchmarks: N nodes × M seconds at a
//! given rate of per_node ResourceUpdate events (with per-core values),
//! written through the real `LogWriter`, with snapshots every 10 s and a
//! clean end. Node clocks start within the same second.
//!
//! Usage: genlog DIR NODES SECONDS [HZ] [CORES] [SESSION]

use std::path::PathBuf;
use tal::log::{Header, LogWriter, DEFAULT_CHUNK_BYTES};
use tal::record::*;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 4 {
        eprintln!("usage: genlog DIR NODES SECONDS [HZ] [CORES] [SESSION]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&a[1]);
    let nodes: usize = a[2].parse().unwrap();
    let secs: u64 = a[3].parse().unwrap();
    let hz: u64 = a.get(4).map_or(10, |s| s.parse().unwrap());
    let cores: usize = a.get(5).map_or(2, |s| s.parse().unwrap());
    let session = a.get(6).cloned().unwrap_or_else(|| "bench.session".into());
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
        for i in 0..samples {
            let t = start + i as i64 * step;
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
