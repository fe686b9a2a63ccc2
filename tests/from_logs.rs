//! `tal report` and `tal summary` read node logs straight through the
//! session's replay, without a JSONL in between: what they say must be
//! what they say of the JSONL `tal convert` writes of the same logs (the
//! summary's text and `--json`, the report's page byte for byte). Checked
//! on the small workflow's log, a synthetic multi-node session (tasks with
//! figures, failures, a reused id, a task open at the end, custom events,
//! task samples, GPU samples, job cgroup fields, a figure that is not
//! finite, a node killed without its end), the same with one log cut off
//! mid-record, and a log cut off by SIGKILL while recording. (A recorded
//! session with stub GPUs is checked in `tests/gpu.rs`.)

mod common;
use common::*;
use std::path::{Path, PathBuf};
use tal::log::{Header, LogWriter, DEFAULT_CHUNK_BYTES};
use tal::record::*;

const T0: i64 = 1_795_000_000_000_000_000;

/// A task event.
fn task(state: TaskState, duration_seconds: Option<f64>, error_type: Option<&str>) -> EventKind {
    EventKind::Task(TaskEvent {
        state,
        duration_seconds,
        error_type: error_type.map(String::from),
        extra: vec![],
    })
}

/// Node `n` of a synthetic session `session` in `dir`, `secs` long at 2
/// Hz: see the module doc. Node 2 is killed (no SessionEnded, no end).
fn write_node(dir: &Path, session: &str, n: usize, secs: i64) -> PathBuf {
    let node = format!("node{n}");
    let start = T0 + n as i64 * 3_000_000;
    let header = Header {
        session_id: session.into(),
        node_id: node.clone(),
        hostname: node.clone(),
        backend: "tal".into(),
        pid: 1,
        tal_version: env!("CARGO_PKG_VERSION").into(),
        start_wall_ns: start,
        start_mono_ns: 0,
        interval_ns: 500_000_000,
        chunk_bytes: DEFAULT_CHUNK_BYTES,
        ncpus: 4,
        attributes: vec![("node.memory_total_bytes".into(), (16u64 << 30).to_string())],
    };
    let path = dir.join(format!("{session}.{node}.tal"));
    let mut w = LogWriter::create(&path, &header).unwrap();
    let mut id = (n as u128 + 1) << 64;
    let mut ev = |t: i64, task_id: Option<&str>, attributes: Attributes, kind: EventKind| {
        id += 1;
        Record::Event(Event {
            event_id: id,
            event_time_ns: t,
            emit_time_ns: t + 20_000,
            backend: Some("tal".into()),
            task_id: task_id.map(String::from),
            node_id: None,
            attributes,
            kind,
        })
    };
    w.append(&ev(start, None, vec![], EventKind::SessionStarted))
        .unwrap();
    let s = |k: &str, v: &str| (k.to_string(), Value::Str(v.into()));
    let f = |k: &str, v: f64| (k.to_string(), Value::Float(v));
    for i in 0..secs * 2 {
        let t = start + i * 500_000_000;
        let mut u = ResourceUpdate::empty(ResourceScope::PerNode);
        // A CPU figure that is not finite: `null` in the JSONL.
        u.cpu_percent = Some(if i == 7 {
            f64::NAN
        } else {
            ((i * 37 + n as i64) % 1000) as f64 / 10.0
        });
        u.memory_percent = Some(((i * 13) % 1000) as f64 / 10.0);
        if i > 0 {
            u.disk_read_bytes = Some((i * 4096) as f64);
            u.net_recv_bytes = Some((i * 9000) as f64);
        }
        u.cpu_percent_per_core = (0..4)
            .map(|c| {
                if i == 5 && c == 1 {
                    f32::NAN
                } else {
                    (i + c) as f32 * 1.37
                }
            })
            .collect();
        u.extra = vec![
            f("job_cpu_percent", (i % 50) as f64),
            ("job_memory_bytes".into(), Value::Int((i + 1) << 24)),
        ];
        w.append(&ev(t, None, vec![], EventKind::ResourceUpdate(u)))
            .unwrap();
        if n == 0 {
            for g in 0..2u32 {
                let mut u = ResourceUpdate::empty(ResourceScope::PerGpu(g));
                u.gpu_percent = Some(((i * 7 + i64::from(g)) % 100) as f64);
                u.extra = vec![
                    ("gpu_memory_used_bytes".into(), Value::Int(i << 20)),
                    ("gpu_memory_total_bytes".into(), Value::Int(80 << 30)),
                    f("gpu_power_watts", 100.5 + i as f64),
                    f("gpu_energy_joules", 50.25 * i as f64),
                ];
                w.append(&ev(t + 1000, None, vec![], EventKind::ResourceUpdate(u)))
                    .unwrap();
            }
        }
        // A task every 4 s: created, started, sampled, then ended (every
        // third fails, the fifth's id is used again by the sixth).
        let k = i / 8;
        let id = if k == 5 {
            format!("n{n}.t4")
        } else {
            format!("n{n}.t{k}")
        };
        let ty = vec![s("task_type", "Compute"), s("executable", "/bin/x")];
        let tk = Some(id.as_str());
        match i % 8 {
            0 => {
                w.append(&ev(
                    t + 10,
                    tk,
                    ty.clone(),
                    task(TaskState::Created, None, None),
                ))
                .unwrap();
                w.append(&ev(t + 20, tk, ty, task(TaskState::Started, None, None)))
                    .unwrap();
            }
            2 | 3 => {
                let r = TaskResources {
                    cpu_user_percent: 12.34 * (i % 8) as f32,
                    cpu_system_percent: 1.05,
                    rss_bytes: (k as u64 + 1) << 22,
                    threads: 3,
                    processes: 1,
                    read_bytes: (i % 8 == 3).then_some(4096),
                    write_bytes: None,
                    interval_seconds: 0.5,
                    gpu_memory_bytes: vec![],
                };
                w.append(&ev(t + 30, tk, vec![], EventKind::TaskResources(r)))
                    .unwrap();
            }
            5 if k == 2 && n == 1 => {
                // An application's own event, naming the task.
                let custom = EventKind::Custom {
                    event_type: "app.Checkpoint".into(),
                    fields: vec![
                        ("step".into(), Value::Int(3)),
                        s("phase", "write"),
                        s("phase", "write again"),
                    ],
                };
                w.append(&ev(t + 40, tk, vec![], custom)).unwrap();
            }
            6 if !(n == 2 && k == 3) => {
                // (Node 2's fourth task never ends: open at the end.)
                let d = 3.0 + k as f64 * 0.01;
                let end = if k % 3 == 1 {
                    task(TaskState::Failed, Some(d), Some("exit:2"))
                } else {
                    task(TaskState::Completed, None, None)
                };
                let figures = vec![
                    f("cpu_user_seconds", 1.25 * k as f64),
                    f("cpu_system_seconds", 0.5),
                    ("max_rss_bytes".into(), Value::Int((k + 1) << 23)),
                    ("read_bytes".into(), Value::Int(k << 12)),
                    (
                        "gpu_memory_peak_bytes".into(),
                        Value::Json(format!("{{\"0\": {}}}", k << 20)),
                    ),
                ];
                w.append(&ev(t + 50, tk, figures, end)).unwrap();
            }
            _ => {}
        }
        if i % 20 == 0 {
            w.append(&Record::Snapshot(AgentSnapshot {
                wall_ns: t,
                samples_taken: i as u64 + 1,
                ..Default::default()
            }))
            .unwrap();
        }
    }
    let end = start + secs * 1_000_000_000;
    if n == 2 {
        w.finish(None).unwrap();
    } else {
        let ended = EventKind::SessionEnded {
            duration_seconds: (end - start) as f64 / 1e9,
        };
        w.append(&ev(end, None, vec![], ended)).unwrap();
        w.finish(Some(&Record::End(EndMarker {
            wall_ns: end,
            reason: EndReason::Signal(15),
        })))
        .unwrap();
    }
    path
}

/// The synthetic session's three logs.
fn synthetic(dir: &Path, session: &str) -> Vec<PathBuf> {
    (0..3).map(|n| write_node(dir, session, n, 40)).collect()
}

#[test]
fn the_small_workflows_log_reads_as_its_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small-workflow");
    let logs = files_with_ext(&fixture, ".tal");
    assert!(!logs.is_empty());
    assert_logs_read_as_their_jsonl(dir.path(), &logs);
}

#[test]
fn a_multi_node_session_reads_as_its_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let logs = synthetic(dir.path(), "multi");
    // What the session has, so that the comparison compares something.
    let v = {
        let j = dir.path().join("check.jsonl");
        run_ok(tal().arg("convert").arg("-o").arg(&j).args(&logs));
        read_jsonl(&j)
    };
    let count = |section: &str, ty: &str| lines(&v, section, Some(ty)).len();
    assert!(count("event", "TaskFailed") > 0 && count("event", "app.Checkpoint") == 1);
    assert!(count("event", "tal.TaskResourceUpdate") > 0);
    let spans = lines(&v, "span", None);
    assert!(spans
        .iter()
        .any(|s| s["attributes"]["closed_at_session_end"] == true));
    let gpu = lines(&v, "event", Some("ResourceUpdate"))
        .into_iter()
        .filter(|l| l["resource_scope"] == "per_gpu")
        .count();
    assert!(gpu > 0);
    // Given as the directory the logs are in.
    assert_logs_read_as_their_jsonl(dir.path(), &[dir.path().to_path_buf()]);
}

#[test]
fn a_log_cut_off_mid_record_reads_as_its_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let logs = synthetic(dir.path(), "cut");
    let bytes = std::fs::read(&logs[1]).unwrap();
    std::fs::write(&logs[1], &bytes[..bytes.len() * 2 / 3 + 7]).unwrap();
    assert_logs_read_as_their_jsonl(dir.path(), &logs);
}

#[test]
fn a_log_cut_off_by_sigkill_reads_as_its_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, log) = spawn_recorder(dir.path(), "killed", "0.05");
    wait_until("three samples in the log", || samples_in_log(&log) >= 3);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!log_finished(&log));
    assert_logs_read_as_their_jsonl(dir.path(), &[log]);
}
