//! Several node logs of one session merge into one JSONL: one trace, one
//! session span covering every node, every node's per_node series, events
//! in time order. Logs of different sessions are refused.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn three_agents_merge_into_one_trace() {
    let dir = tempfile::tempdir().unwrap();
    let mut children = vec![];
    for node in ["n1", "n2", "n3"] {
        let child = tal()
            .args([
                "record",
                "--interval",
                "50ms",
                "--session-id",
                "s.multi",
                "--node-id",
                node,
            ])
            .arg("--out")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        children.push(child);
        // Staggered starts, so the session starts with n1 and ends with n3:
        // the next agent starts once this one is sampling.
        let log = dir.path().join(format!("s.multi.{node}.tal"));
        wait_until("the agent's first samples", || samples_in_log(&log) >= 3);
    }
    // Stopped in turn, each after the one before has finished.
    for c in children {
        signal(&c, libc::SIGTERM);
        let out = wait_output(c, Duration::from_secs(20));
        assert!(out.status.success());
    }
    // Each agent wrote its own JSONL without overwriting another's.
    assert_eq!(files_with_ext(dir.path(), ".telemetry.jsonl").len(), 3);

    let merged = dir.path().join("merged.jsonl");
    let mut cmd = tal();
    cmd.arg("convert");
    for log in files_with_ext(dir.path(), ".tal") {
        cmd.arg(log);
    }
    let out = run(cmd.arg("-o").arg(&merged));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = read_jsonl(&merged);
    assert_complete(&v);

    let traces: BTreeSet<&str> = v.iter().filter_map(|l| l["trace_id"].as_str()).collect();
    assert_eq!(traces.len(), 1, "one trace: {traces:?}");
    // One session span, last, the root of the trace.
    let spans = lines(&v, "span", None);
    assert_eq!(spans.iter().filter(|s| s["name"] == "session").count(), 1);
    let session = (*spans.last().unwrap()).clone();
    assert_eq!(session["name"], "session");
    assert!(session["parent_span_id"].is_null());
    assert_eq!(session["attributes"]["nodes"], 3);
    for s in &spans {
        assert_eq!(s["trace_id"], session["trace_id"], "{s}");
    }

    let nodes: BTreeSet<&str> = lines(&v, "event", Some("ResourceUpdate"))
        .iter()
        .map(|l| l["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["n1", "n2", "n3"].into_iter().collect());

    // The session span covers every node's own first and last sample.
    let start = session["start_time_s"].as_f64().unwrap();
    let end = session["end_time_s"].as_f64().unwrap();
    for e in lines(&v, "event", None) {
        let t = e["event_time"].as_f64().unwrap();
        assert!(
            start <= t && t <= end,
            "event at {t} outside the session [{start}, {end}]"
        );
    }
    let started = lines(&v, "event", Some("SessionStarted"))[0]["event_time"]
        .as_f64()
        .unwrap();
    assert_eq!(started, start);
    let ended = lines(&v, "event", Some("SessionEnded"))[0];
    assert_eq!(ended["event_time"].as_f64().unwrap(), end);
    let dur = ended["duration_seconds"].as_f64().unwrap();
    assert!((dur - (end - start)).abs() < 1e-3);

    // Agent cost merges over nodes: three logs described.
    let metric = lines(&v, "metric", None)[0];
    assert_eq!(metric["tal_logs"].as_array().unwrap().len(), 3);
    let taken = metric["agent_samples_taken"].as_u64().unwrap();
    assert_eq!(
        taken as usize,
        lines(&v, "event", Some("ResourceUpdate")).len()
    );
    // node utilisation gauges are the latest per node, summed over nodes.
    assert!(metric["node_memory_utilization"].as_f64().unwrap() > 0.0);
}

#[test]
fn logs_of_different_sessions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for s in ["s.a", "s.b"] {
        let out = run(tal()
            .args([
                "record",
                "--no-convert",
                "--node-id",
                "n",
                "--session-id",
                s,
                "--out",
            ])
            .arg(dir.path())
            .args(["--", "true"]));
        assert!(out.status.success());
    }
    let out = run(tal()
        .arg("convert")
        .arg(dir.path().join("s.a.n.tal"))
        .arg(dir.path().join("s.b.n.tal")));
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("different sessions") && e.contains("s.a") && e.contains("s.b"),
        "{e}"
    );
}

#[test]
fn local_disorder_within_a_log_is_repaired() {
    use tal::log::{Header, LogWriter};
    use tal::record::*;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.dis.n.tal");
    let t0: i64 = 1_795_000_000_000_000_000;
    let header = Header {
        session_id: "s.dis".into(),
        node_id: "n".into(),
        hostname: "n".into(),
        backend: "tal".into(),
        pid: 1,
        tal_version: "0".into(),
        start_wall_ns: t0,
        start_mono_ns: 0,
        interval_ns: 1,
        chunk_bytes: 1 << 20,
        ncpus: 1,
        attributes: vec![],
    };
    let mut w = LogWriter::create(&path, &header).unwrap();
    // Batches of 100 events, each batch sorted, each starting 30 events
    // before the previous batch ended (as a late resource sample would).
    let mut k = 0u128;
    for b in 0..20i64 {
        for i in 0..100i64 {
            k += 1;
            let t = t0 + (b * 70 + i) * 1_000_000;
            w.append(&Record::Event(Event {
                event_id: k,
                event_time_ns: t,
                emit_time_ns: t,
                backend: None,
                task_id: None,
                node_id: None,
                attributes: vec![],
                kind: EventKind::Custom {
                    event_type: "app.E".into(),
                    fields: vec![],
                },
            }))
            .unwrap();
        }
    }
    w.finish(None).unwrap();
    let out = dir.path().join("o.jsonl");
    let r = run(tal().arg("convert").arg(&path).arg("-o").arg(&out));
    assert!(r.status.success());
    let v = read_jsonl(&out);
    assert_complete(&v);
    assert_eq!(lines(&v, "event", Some("app.E")).len(), 2000);
}

#[test]
fn agents_that_stop_at_the_same_moment_each_keep_their_own_jsonl() {
    // Eight agents of one session in one directory, all stopped at once
    // (as `scancel` stops every node of a job): each must end up with a
    // JSONL of its own, none overwritten by another that chose the same
    // name at the same moment.
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<String> = (1..=8).map(|i| format!("n{i}")).collect();
        let children: Vec<_> = nodes
            .iter()
            .map(|node| {
                tal()
                    .args(["record", "--interval", "2ms", "--session-id", "s.race"])
                    .args(["--node-id", node, "--task-interval", "off"])
                    .arg("--out")
                    .arg(dir.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for node in &nodes {
            let log = dir.path().join(format!("s.race.{node}.tal"));
            wait_until("the agent's samples", || samples_in_log(&log) >= 300);
        }
        for c in &children {
            signal(c, libc::SIGTERM);
        }
        for c in children {
            assert!(wait_output(c, Duration::from_secs(20)).status.success());
        }
        let jsonl = files_with_ext(dir.path(), ".telemetry.jsonl");
        assert_eq!(jsonl.len(), 8, "round {round}: {jsonl:?}");
        let mut seen = BTreeSet::new();
        for f in &jsonl {
            let v = read_jsonl(f);
            assert_complete(&v);
            let m = lines(&v, "metric", None).last().copied().unwrap();
            seen.insert(m["tal_logs"][0]["node_id"].as_str().unwrap().to_string());
        }
        assert_eq!(seen.len(), 8, "every node's own JSONL: {seen:?}");
    }
}
