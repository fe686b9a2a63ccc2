//! Node logs handed to `tal convert`, `tal summary` and `tal report` by
//! someone else, or by mistake: a checksum-valid log whose header ids name
//! other folders, a log cut inside its header among good ones, thousands
//! of logs under a small limit of open files, and the same log given
//! twice. Each log is written here through the library's `LogWriter`, so
//! its header says exactly what the test wants.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tal::log::{Header, LogWriter};
use tal::record::*;

const T0: i64 = 1_795_000_000_000_000_000;

fn header(session: &str, node: &str, start: i64) -> Header {
    Header {
        session_id: session.into(),
        node_id: node.into(),
        hostname: format!("{node}.example"),
        backend: "tal".into(),
        pid: 4242,
        tal_version: "0".into(),
        start_wall_ns: start,
        start_mono_ns: 1000,
        interval_ns: 100_000_000,
        chunk_bytes: 4096,
        ncpus: 2,
        attributes: vec![],
    }
}

/// A clean log of `events` per_node samples, 100 ms apart.
fn write_log(path: &Path, h: &Header, events: u64) {
    let mut w = LogWriter::create(path, h).unwrap();
    for i in 0..events {
        let mut u = ResourceUpdate::empty(ResourceScope::PerNode);
        u.cpu_percent = Some((i % 100) as f64);
        let t = h.start_wall_ns + i as i64 * 100_000_000;
        w.append(&Record::Event(Event {
            event_id: u128::from(i) + 1,
            event_time_ns: t,
            emit_time_ns: t + 5000,
            backend: Some("tal".into()),
            task_id: None,
            node_id: None,
            attributes: vec![],
            kind: EventKind::ResourceUpdate(u),
        }))
        .unwrap();
    }
    let end = Record::End(EndMarker {
        wall_ns: h.start_wall_ns + events as i64 * 100_000_000,
        reason: EndReason::Signal(15),
    });
    w.finish(Some(&end)).unwrap();
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// ResourceUpdate events per node in a JSONL.
fn samples_per_node(v: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for l in lines(v, "event", Some("ResourceUpdate")) {
        *n.entry(l["node_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    n
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn header_ids_that_name_other_folders_are_refused_and_nothing_is_written() {
    let root = tempfile::tempdir().unwrap();
    let abs = root.path().join("abs");
    let input = root.path().join("in");
    let work = root.path().join("work");
    for d in [&abs, &input, &work, &root.path().join("out")] {
        std::fs::create_dir(d).unwrap();
    }
    let abs_id = format!("{}/X", abs.display());
    // (session id, node id, what the error names, the id as printed)
    let crafted = [
        ("../out/X", "n1", "session id", "\"../out/X\""),
        (abs_id.as_str(), "n1", "session id", ""),
        ("..", "n1", "session id", "\"..\""),
        ("s.ok", "..", "node id", "\"..\""),
        ("s.ok", "../../n", "node id", "\"../../n\""),
        ("evil\nX", "n1", "session id", "\"evil\\nX\""),
        (
            "evil\u{1b}]0;pwned\u{7}",
            "n1",
            "session id",
            "\"evil\\u{1b}]0;pwned\\u{7}\"",
        ),
    ];
    let commands: [&[&str]; 5] = [
        &["convert"],
        &["convert", "--format", "chrome-trace"],
        &["convert", "--format", "otlp-json"],
        &["report"],
        &["summary"],
    ];
    for (session, node, what, printed) in crafted {
        let log = input.join("crafted.tal");
        let _ = std::fs::remove_file(&log);
        write_log(&log, &header(session, node, T0), 5);
        for args in commands {
            let out = run(tal().current_dir(&work).args(args).arg(&log));
            assert_eq!(
                files_under(root.path()),
                [PathBuf::from("in/crafted.tal")],
                "{args:?} on {session:?}/{node:?} wrote a file: {}",
                stderr(&out)
            );
            let err = stderr(&out);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{args:?} on {session:?}/{node:?}: {err}"
            );
            assert!(
                err.contains(&log.display().to_string()) && err.contains(what),
                "{args:?}: the error names the log and the bad id: {err}"
            );
            assert!(err.contains(printed), "{args:?}: the id escaped: {err}");
            assert!(
                !err.contains('\u{1b}') && err.trim_end().lines().count() == 1,
                "{args:?}: nothing raw: {err:?}"
            );
        }
    }
}

#[test]
fn a_bad_input_among_good_logs_is_named_and_the_rest_converted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = d.join("s.a.tal");
    write_log(&a, &header("s", "a", T0), 20);
    let c = d.join("s.c.tal");
    write_log(&c, &header("s", "c", T0 + 1000), 7);
    // b's log cut inside its header, an empty file, a stray file, a
    // missing one, and a log whose header's session id is crafted.
    let b = d.join("s.b.tal");
    write_log(&b, &header("s", "b", T0), 20);
    let bytes = std::fs::read(&b).unwrap();
    std::fs::write(&b, &bytes[..50]).unwrap();
    let empty = d.join("s.empty.tal");
    std::fs::write(&empty, b"").unwrap();
    let stray = d.join("notes.txt");
    std::fs::write(&stray, b"not a log\n").unwrap();
    let missing = d.join("s.missing.tal");
    let crafted = d.join("s.crafted.tal");
    write_log(&crafted, &header("../s", "x", T0), 3);
    let bad = [&b, &empty, &stray, &missing, &crafted];
    let inputs = [&a, &b, &empty, &stray, &c, &missing, &crafted];

    let check = |out: &std::process::Output, what: &str| {
        let err = stderr(out);
        assert_eq!(out.status.code(), Some(1), "{what}: rc 1: {err}");
        for p in bad {
            assert!(
                err.contains(&p.display().to_string()),
                "{what} names {}: {err}",
                p.display()
            );
        }
        assert!(
            !err.contains(&a.display().to_string()),
            "{what}: a is fine: {err}"
        );
    };
    // To a file named by -o, and to the default name.
    let jsonl = d.join("out.jsonl");
    let out = run(tal().arg("convert").args(inputs).arg("-o").arg(&jsonl));
    check(&out, "convert -o");
    let v = read_jsonl(&jsonl);
    assert_complete(&v);
    let want: BTreeMap<String, usize> = [("a".into(), 20), ("c".into(), 7)].into();
    assert_eq!(samples_per_node(&v), want);
    let out = run(tal().arg("convert").args(inputs));
    check(&out, "convert");
    let default = d.join(format!("s.{}.telemetry.jsonl", T0 / 1_000_000_000));
    assert_eq!(samples_per_node(&read_jsonl(&default)), want);
    // The forms made from the JSONL, the summary and the report.
    for (args, made) in [
        (
            &["convert", "--format", "otlp-json"][..],
            "s.1795000000.otlp.traces.json",
        ),
        (
            &["convert", "--format", "chrome-trace"],
            "s.1795000000.trace.json",
        ),
        (&["report"], "s.1795000000.report.html"),
    ] {
        let out = run(tal().args(args).args(inputs));
        check(&out, &format!("{args:?}"));
        assert!(d.join(made).is_file(), "{args:?} made {made}");
    }
    let out = run(tal().args(["summary", "--json"]).args(inputs));
    check(&out, "summary");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"a\""),
        "summary of a and c"
    );

    // Nothing to convert at all: an error, naming each input.
    let out = run(tal()
        .arg("convert")
        .args([&b, &empty])
        .arg("-o")
        .arg(d.join("none.jsonl")));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    for p in [&b, &empty] {
        assert!(stderr(&out).contains(&p.display().to_string()));
    }
}

#[test]
fn two_thousand_logs_convert_under_a_limit_of_256_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let nodes = 2000;
    let mut logs = Vec::new();
    for n in 0..nodes {
        let p = d.join(format!("s.node{n:04}.tal"));
        // 1 to 4 samples each, so that a node's count is its own.
        write_log(
            &p,
            &header("s", &format!("node{n:04}"), T0 + n as i64),
            1 + n % 4,
        );
        logs.push(p);
    }
    let want: BTreeMap<String, usize> = (0..nodes)
        .map(|n| (format!("node{n:04}"), 1 + n as usize % 4))
        .collect();
    // A hard limit of 256 (nothing to raise to), and a soft one of 256
    // under a higher hard one (raised, as `tal record` does).
    for limits in ["ulimit -S -n 256 && ulimit -H -n 256", "ulimit -S -n 256"] {
        let out_path = d.join("all.jsonl");
        let out = run(std::process::Command::new("sh")
            .current_dir(d)
            .arg("-c")
            .arg(format!(
                "{limits} && exec \"$0\" convert s.node*.tal -o all.jsonl"
            ))
            .arg(env!("CARGO_BIN_EXE_tal")));
        assert_eq!(out.status.code(), Some(0), "{limits}: {}", stderr(&out));
        let v = read_jsonl(&out_path);
        assert_complete(&v);
        assert_eq!(samples_per_node(&v), want, "{limits}");
        std::fs::remove_file(&out_path).unwrap();
    }
}

#[test]
fn the_same_log_given_twice_or_copied_is_taken_once_and_said_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = d.join("s.a.tal");
    write_log(&a, &header("s", "a", T0), 30);
    let b = d.join("s.b.tal");
    write_log(&b, &header("s", "b", T0 + 5), 10);
    // Another name for a (a hard link), a copy, and a shorter copy (taken
    // while the log grew): given before the whole log, it loses to it.
    let link = d.join("link.tal");
    std::fs::hard_link(&a, &link).unwrap();
    let copy = d.join("copy-of-a.tal");
    std::fs::copy(&a, &copy).unwrap();
    let short = d.join("early-copy-of-b.tal");
    let bytes = std::fs::read(&b).unwrap();
    std::fs::write(&short, &bytes[..bytes.len() / 2]).unwrap();
    let dot_a = d.join(".").join("s.a.tal");
    let want: BTreeMap<String, usize> = [("a".into(), 30), ("b".into(), 10)].into();
    for (inputs, repeats) in [
        (vec![&a, &a, &b], vec![&a]),
        (vec![&a, &dot_a, &link, &b], vec![&dot_a, &link]),
        (vec![&copy, &b, &a], vec![&a]),
        (vec![&short, &a, &b], vec![&short]),
    ] {
        let jsonl = d.join("out.jsonl");
        let out = run(tal().arg("convert").args(&inputs).arg("-o").arg(&jsonl));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{inputs:?}: {err}");
        assert_eq!(
            samples_per_node(&read_jsonl(&jsonl)),
            want,
            "{inputs:?}: {err}"
        );
        for r in repeats {
            assert!(
                err.contains(&r.display().to_string()),
                "{inputs:?}: says {}: {err}",
                r.display()
            );
        }
        assert!(err.contains("once"), "{inputs:?}: {err}");
    }
    // The summary counts each node's samples once too.
    let out = run(tal().args(["summary", "--json"]).args([&a, &copy, &b]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("once"), "{}", stderr(&out));
}
