//! The Parquet dataset (`tal convert --format parquet`, `tal record
//! --format parquet`), read by the engines people use: pyarrow, DuckDB and
//! polars from PyPI (tests/python/dataset_check.py, in the test venv). For
//! each recording the dataset must hold the same rows, values and types as
//! the JSONL converted from the same logs.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// Runs the checker on `jsonl` and the dataset `dir`; its counts.
fn check(jsonl: &Path, dir: &Path, merged: bool) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/dataset_check.py");
    let mut cmd = std::process::Command::new(python());
    cmd.arg(script).arg(jsonl).arg(dir);
    if merged {
        cmd.arg("--merged");
    }
    let out = cmd.output().expect("run the dataset checker");
    assert!(
        out.status.success(),
        "the dataset differs from the JSONL:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("the checker's counts")
}

/// The JSONL of `log`, in `dir`.
fn jsonl_of(log: &Path, dir: &Path) -> PathBuf {
    let p = dir.join("of.jsonl");
    run_ok(tal().arg("convert").arg(log).arg("-o").arg(&p));
    p
}

/// `tal convert LOG --format parquet -o DIR`.
fn parquet(
    log: impl AsRef<std::ffi::OsStr>,
    dir: impl AsRef<std::ffi::OsStr>,
) -> std::process::Command {
    let mut c = tal();
    c.arg("convert")
        .arg(log)
        .args(["--format", "parquet", "-o"])
        .arg(dir);
    c
}

/// `tal record --interval 0.1` of `ids` (session, node) into `out`, with
/// `flags`, around `sh -c script`; checked to succeed.
fn record(out: &Path, ids: (&str, &str), flags: &[&str], script: &str) -> std::process::Output {
    run_ok(
        tal()
            .args([
                "record",
                "--interval",
                "0.1",
                "--session-id",
                ids.0,
                "--node-id",
                ids.1,
            ])
            .args(flags)
            .arg("--out")
            .arg(out)
            .args(["--", "sh", "-c", script]),
    )
}

/// The part files in a node's folder.
fn parts(dir: &Path) -> Vec<PathBuf> {
    files_with_ext(dir, ".parquet")
}

/// `tal summary --json` and `tal report` of the dataset `ds` say what they
/// say of its `logs`: the same figures, the same page, byte for byte.
fn views_agree(logs: &[PathBuf], ds: &Path, dir: &Path) {
    let summary = |input: &[PathBuf]| {
        let out = run_ok(tal().args(["summary", "--json", "-q"]).args(input));
        String::from_utf8(out.stdout).unwrap()
    };
    let from_logs = summary(logs);
    assert_eq!(
        from_logs,
        summary(&[ds.to_path_buf()]),
        "tal summary differs"
    );
    let v: serde_json::Value = serde_json::from_str(&from_logs).unwrap();
    assert!(v["nodes"].as_array().is_some_and(|n| !n.is_empty()), "{v}");
    let report = |input: &[PathBuf], name: &str| {
        let page = dir.join(name);
        run_ok(
            tal()
                .args(["report", "-q"])
                .args(input)
                .arg("-o")
                .arg(&page),
        );
        std::fs::read(page).unwrap()
    };
    assert!(
        report(logs, "logs.html") == report(&[ds.to_path_buf()], "ds.html"),
        "tal report differs"
    );
}

/// `tal convert LOGS --format parquet -o DIR` and `tal convert LOGS -o
/// JSONL`, both checked to succeed.
fn convert_both(logs: &[PathBuf], dir: &Path) -> (PathBuf, PathBuf) {
    let jsonl = dir.join("run.jsonl");
    let ds = dir.join("ds");
    run_ok(tal().arg("convert").args(logs).arg("-o").arg(&jsonl));
    run_ok(
        tal()
            .arg("convert")
            .args(logs)
            .args(["--format", "parquet", "-o"])
            .arg(&ds),
    );
    (jsonl, ds)
}

#[test]
fn the_small_workflow_dataset_equals_its_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let log = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/small-workflow/small-workflow.vm.tal");
    let (jsonl, ds) = convert_both(std::slice::from_ref(&log), dir.path());
    let counts = check(&jsonl, &ds, false);
    views_agree(&[log], &ds, dir.path());
    assert!(counts["rows"]["samples"].as_u64().unwrap() > 10, "{counts}");
    assert!(counts["rows"]["tasks"].as_u64().unwrap() > 5, "{counts}");
    assert!(
        counts["rows"]["task_samples"].as_u64().unwrap() > 0,
        "{counts}"
    );
    for t in [
        "samples",
        "gpu_samples",
        "tasks",
        "task_samples",
        "events",
        "session",
    ] {
        assert_eq!(
            parts(&ds.join(t).join("node=vm")).len(),
            1,
            "{t} has a part for the node, empty or not"
        );
    }
    // Converting again replaces the log's own parts.
    let again = run_ok(
        tal()
            .arg("convert")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small-workflow"))
            .args(["--format", "parquet", "-o"])
            .arg(&ds),
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("wrote the dataset"));
    check(&jsonl, &ds, false);
}

/// A recording with tasks (one failing), a custom event and task series,
/// whose agent writes the dataset itself at the end beside its JSONL.
#[test]
fn tal_record_writes_its_node_s_parts_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let tal_bin = env!("CARGO_BIN_EXE_tal");
    let script = format!(
        "{tal_bin} run --task-id busy -- sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done' & \
         {tal_bin} run --task-id short -- sleep 0.2 & \
         {tal_bin} emit app.Phase --field phase=load; \
         wait; {tal_bin} run --task-id bad -- false; true"
    );
    let out = record(
        dir.path(),
        ("ds", "n1"),
        &["--task-interval", "0.1", "--format", "jsonl,parquet"],
        &script,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wrote the dataset"), "{stderr}");
    let jsonl = files_with_ext(dir.path(), "jsonl").remove(0);
    let ds = dir.path().join("ds.dataset");
    let counts = check(&jsonl, &ds, false);
    views_agree(&files_with_ext(dir.path(), ".tal"), &ds, dir.path());
    assert_eq!(counts["rows"]["tasks"], 3, "{counts}");
    assert!(
        counts["rows"]["task_samples"].as_u64().unwrap() > 0,
        "{counts}"
    );
}

/// Two nodes of one session: one dataset with a part per node, which
/// DuckDB's Hive partitioning finds; the merged JSONL's rows are all in it.
#[test]
fn two_nodes_make_one_dataset_with_a_partition_each() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = Vec::new();
    for node in ["n1", "n2"] {
        let out = dir.path().join(node);
        let script = format!(
            "{} run --task-id t-{node} -- sleep 0.3",
            env!("CARGO_BIN_EXE_tal")
        );
        record(&out, ("two", node), &["--no-convert"], &script);
        logs.push(out.join(format!("two.{node}.tal")));
    }
    let (jsonl, ds) = convert_both(&logs, dir.path());
    let counts = check(&jsonl, &ds, true);
    views_agree(&logs, &ds, dir.path());
    assert_eq!(counts["nodes"], 2, "{counts}");
    assert_eq!(parts(&ds.join("samples/node=n2")).len(), 1);
}

/// A log cut mid-record (its agent killed) gives the same rows as its
/// JSONL: what the JSONL recovers, the dataset has.
#[test]
fn a_log_cut_mid_record_gives_the_rows_of_its_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let log = record_tasks(&dir.path().join("rec"), "cut");
    let bytes = std::fs::read(&log).unwrap();
    let cut = dir.path().join("cut.n1.tal");
    // Inside a record near the end (the log ends at its last record).
    assert!(bytes.len() > 1000, "a log of {} bytes", bytes.len());
    std::fs::write(&cut, &bytes[..bytes.len() - 37]).unwrap();
    let (jsonl, ds) = convert_both(std::slice::from_ref(&cut), dir.path());
    let counts = check(&jsonl, &ds, false);
    views_agree(&[cut], &ds, dir.path());
    assert!(counts["rows"]["samples"].as_u64().unwrap() > 0, "{counts}");
}

/// A second recording of the same node in the session (a requeued job, a
/// second job step) adds its own parts beside the first one's; a log of
/// another session is refused by the folder.
#[test]
fn a_second_recording_of_a_node_adds_its_parts_and_other_sessions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for i in 1..=2 {
        let script = format!("{} emit app.Step{i}", env!("CARGO_BIN_EXE_tal"));
        record(
            dir.path(),
            ("again", "n1"),
            &["--format", "parquet"],
            &script,
        );
    }
    let ds = dir.path().join("again.dataset");
    assert_eq!(parts(&ds.join("events/node=n1")).len(), 2);
    let q = format!(
        "import duckdb; print(sorted(r[0] for r in duckdb.sql(\"select event_type from read_parquet('{}/events/*/*.parquet') where event_type like 'app.%'\").fetchall()))",
        ds.display()
    );
    let out = std::process::Command::new(python())
        .args(["-c", &q])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "['app.Step1', 'app.Step2']"
    );
    let other = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/small-workflow/small-workflow.vm.tal");
    let out = run(&mut parquet(&other, &ds));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds the dataset of session \"again\""),
        "{err}"
    );
    assert!(!ds.join("samples/node=vm").exists());
}

#[test]
fn bad_outputs_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let log = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/small-workflow/small-workflow.vm.tal");
    // A link planted where a table's folder goes is not followed.
    let ds = dir.path().join("ds");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&ds).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, ds.join("samples")).unwrap();
    let out = run(&mut parquet(&log, &ds));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a folder of this user's"), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    // Anything but a regular file at a part's name (a FIFO would stall
    // the writer, a link to a device would swallow the rows) is refused.
    std::fs::remove_file(ds.join("samples")).unwrap();
    let ok = dir.path().join("ok");
    run_ok(&mut parquet(&log, &ok));
    let part = parts(&ok.join("events/node=vm")).remove(0);
    std::fs::remove_file(&part).unwrap();
    std::os::unix::fs::symlink("/dev/null", &part).unwrap();
    let out = run(&mut parquet(&log, &ok));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a regular file"), "{err}");
    // A file where the dataset goes.
    let out = run(&mut parquet(&log, jsonl_of(&log, dir.path())));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a dataset is a folder"), "{err}");
    // Standard output is not a folder; a JSONL is not node logs.
    let out = run(tal()
        .arg("convert")
        .arg(&log)
        .args(["--format", "parquet", "-o", "-"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a dataset is a folder"));
    let jsonl = dir.path().join("x.jsonl");
    run_ok(tal().arg("convert").arg(&log).arg("-o").arg(&jsonl));
    let out = run(tal()
        .arg("convert")
        .arg(&jsonl)
        .args(["--format", "parquet"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("made from node logs"));
    // A folder that cannot be made: said, and nothing else is written.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let out = run(&mut parquet(&log, file.join("ds")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot make the dataset folder"), "{err}");
}

/// Starts its arguments but the first, waits for them, and writes their
/// peak resident memory (KiB) into the file the first names (a small
/// process between the test and `tal`, whose own memory would count).
const MEASURE: &str = r#"
import os, subprocess, sys
p = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, ru = os.wait4(p.pid, 0)
open(sys.argv[1], "w").write(str(ru.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// The header of a log of `session` on `node` written by the test, from
/// `t0` at 10 Hz.
fn header(session: &str, node: &str, t0: i64, ncpus: u32) -> tal::log::Header {
    tal::log::Header {
        session_id: session.into(),
        node_id: node.into(),
        hostname: node.into(),
        backend: "tal".into(),
        pid: 1,
        tal_version: "test".into(),
        start_wall_ns: t0,
        start_mono_ns: 0,
        interval_ns: 100_000_000,
        chunk_bytes: tal::log::DEFAULT_CHUNK_BYTES,
        ncpus,
        attributes: vec![],
    }
}

/// A log whose events carry long strings (as a client's may: up to a
/// line's 64 KiB): the dataset's batches are cut by their bytes, so the
/// conversion's memory does not grow with a batch's rows times their
/// strings (16,384 rows of 32 KiB would be 512 MiB).
#[test]
fn long_strings_do_not_grow_the_conversion_s_memory() {
    use tal::log::LogWriter;
    use tal::record::{Event, EventKind, Record, Value};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("big.n.tal");
    let t0 = 1_795_000_000_000_000_000i64;
    let mut w = LogWriter::create(&log, &header("big", "n", t0, 1)).unwrap();
    let mut ids = tal::ids::EventIdGen::with_seed(7);
    let n = 8000u32;
    for i in 0..n {
        // Different text per event, as real attributes are.
        let text: String = (0..32 * 1024)
            .map(|j| char::from(b'a' + ((i as usize * 7 + j * 13) % 26) as u8))
            .collect();
        w.append(&Record::Event(Event {
            event_id: ids.next_id(),
            event_time_ns: t0 + i64::from(i) * 1_000_000,
            emit_time_ns: t0 + i64::from(i) * 1_000_000,
            backend: Some("tal".into()),
            task_id: None,
            node_id: None,
            attributes: vec![("note".into(), Value::Str(text))],
            kind: EventKind::Custom {
                event_type: "app.Note".into(),
                fields: vec![],
            },
        }))
        .unwrap();
    }
    w.finish(None).unwrap();
    let rss = dir.path().join("rss");
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg(MEASURE)
        .arg(&rss)
        .arg(env!("CARGO_BIN_EXE_tal"))
        .arg("convert")
        .arg(&log)
        .args(["--format", "parquet", "-o"])
        .arg(dir.path().join("ds"))
        .status()
        .unwrap();
    assert!(status.success());
    let kib: u64 = std::fs::read_to_string(&rss).unwrap().parse().unwrap();
    // The merge's reorder window holds 2,048 events (64 MiB of these);
    // the dataset adds a batch and a row group.
    assert!(kib < 192 << 10, "peak RSS {} MiB", kib >> 10);
    let q = format!(
        "import duckdb; print(duckdb.sql(\"select count(*), min(length(json_extract_string(attributes, '$.note'))) from read_parquet('{}/events/*/*.parquet')\").fetchall())",
        dir.path().join("ds").display()
    );
    let out = std::process::Command::new(python())
        .args(["-c", &q])
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&out.stdout);
    // Every event and its whole string (and the SessionEnded made up for
    // the log, whose note is null).
    assert!(got.contains(&format!("[({}, 32768)]", n + 2)), "{got}");
}

/// A damaged dataset is refused with the file to blame and what to do: a
/// part missing, a part that is not Parquet, a FIFO at a part's name
/// (which would make a reader wait), a part of another session; and a
/// dataset is read alone, not with logs.
#[test]
fn a_damaged_dataset_is_refused_naming_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/small-workflow/small-workflow.vm.tal");
    let fresh = |name: &str| {
        let ds = dir.path().join(name);
        run_ok(&mut parquet(&log, &ds));
        let part = parts(&ds.join("samples/node=vm")).remove(0);
        (ds, part)
    };
    let refused = |ds: &Path, says: &[&str]| {
        for cmd in ["summary", "report"] {
            let out = tal().arg(cmd).arg(ds).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_ne!(out.status.code(), Some(0), "{cmd}: {err}");
            for s in says {
                assert!(err.contains(s), "{cmd}: {s:?} not in {err}");
            }
        }
    };
    let (ds, part) = fresh("missing");
    std::fs::remove_file(&part).unwrap();
    refused(&ds, &[&part.display().to_string(), "convert its log again"]);
    let (ds, part) = fresh("garbage");
    std::fs::write(&part, b"not parquet at all").unwrap();
    refused(&ds, &[&part.display().to_string(), "convert its log again"]);
    let (ds, part) = fresh("fifo");
    std::fs::remove_file(&part).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&part)
        .status()
        .unwrap();
    assert!(made.success());
    refused(&ds, &[&part.display().to_string(), "not a regular file"]);
    // Another session's session row, put into this dataset's folder.
    let (ds, _) = fresh("mixed");
    let rec = dir.path().join("rec");
    record(&rec, ("other", "vm"), &["--no-convert"], "true");
    let other = dir.path().join("other");
    run_ok(&mut parquet(rec.join("other.vm.tal"), &other));
    let theirs = parts(&other.join("session/node=vm")).remove(0);
    let foreign = ds.join("session/node=zz");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::copy(&theirs, foreign.join("part-1.parquet")).unwrap();
    refused(&ds, &["node=zz", "of session \"other\""]);
    // Another session's part in a table other than `session`: refused.
    let (ds2, part2) = fresh("mixed-table");
    let theirs_samples = parts(&other.join("samples/node=vm")).remove(0);
    std::fs::copy(&theirs_samples, &part2).unwrap();
    refused(
        &ds2,
        &[&part2.display().to_string(), "of session \"other\""],
    );
    // A log's parts whose session row is gone: refused, not left out.
    let (ds3, _) = fresh("orphan");
    let row = parts(&ds3.join("session/node=vm")).remove(0);
    std::fs::remove_file(&row).unwrap();
    std::fs::create_dir_all(ds3.join("session/node=zz")).unwrap();
    std::fs::copy(&theirs, ds3.join("session/node=zz/part-1.parquet")).unwrap();
    refused(&ds3, &["has no session row"]);
    // A table's folder that is a link (to a folder of another's, say).
    let (ds4, _) = fresh("linked");
    let real = dir.path().join("elsewhere");
    std::fs::rename(ds4.join("events"), &real).unwrap();
    std::os::unix::fs::symlink(&real, ds4.join("events")).unwrap();
    refused(&ds4, &["events", "not a folder (a link?)"]);
    // A session row without its log's other parts: named.
    std::fs::copy(
        parts(&ds.join("session/node=vm")).remove(0),
        foreign.join("part-1.parquet"),
    )
    .unwrap();
    refused(&ds, &["node=zz", "convert its log again"]);
    // A dataset with logs: refused, saying why.
    let out = tal().arg("summary").arg(&ds).arg(&log).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("one dataset folder alone"), "{err}");
}

/// Five nodes: the dataset's readers merge several logs each (one worker
/// a core, at most eight), and the views still say what they say of the
/// logs.
#[test]
fn five_nodes_read_back_as_their_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = Vec::new();
    // At the same time, so that their samples interleave.
    let mut agents = Vec::new();
    for node in ["a", "b", "c", "d", "e"] {
        let out = dir.path().join(node);
        let script = format!(
            "{} run --task-id t-{node} -- sleep 0.5",
            env!("CARGO_BIN_EXE_tal")
        );
        let agent = tal()
            .args(["record", "--interval", "0.1", "--session-id", "five"])
            .args(["--node-id", node, "--no-convert", "--out"])
            .arg(&out)
            .args(["--", "sh", "-c", &script])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        agents.push(agent);
        logs.push(out.join(format!("five.{node}.tal")));
    }
    for mut a in agents {
        assert!(a.wait().unwrap().success());
    }
    let ds = dir.path().join("ds");
    run_ok(parquet(&logs[0], &ds).args(&logs[1..]));
    views_agree(&logs, &ds, dir.path());
    // The items themselves, in their order: every event as the logs'
    // replay hands it (its type, time, node, task and figures), and the
    // task spans in their closing order.
    use tal::items::{dataset::Dataset, logs::Logs, Body, Item, Source};
    let said = |src: &mut dyn Source| {
        let (mut events, mut spans) = (Vec::new(), Vec::new());
        src.each(&mut |item| match item {
            Item::Event(h, Body::Other(f)) => events.push(format!(
                "{h:?} {:?} {} {:?}",
                f.num("duration_seconds"),
                f.attributes(),
                f.first_own_string()
            )),
            Item::Event(h, body) => events.push(format!("{h:?} {body:?}")),
            Item::TaskSpan(s) => {
                spans.push(format!("{} {} {}", s.start_ns, s.end_ns, s.attributes))
            }
            _ => {}
        })
        .unwrap();
        (events, spans)
    };
    let from_logs = said(&mut Logs::open(&logs, "test", true).unwrap());
    let from_ds = said(&mut Dataset::open(&ds, "test", true).unwrap());
    assert!(from_logs.0.len() > 30, "{} events", from_logs.0.len());
    assert_eq!(from_logs.0.len(), from_ds.0.len());
    for (a, b) in from_logs.0.iter().zip(&from_ds.0) {
        assert_eq!(a, b);
    }
    assert_eq!(from_logs.1, from_ds.1);
}

/// Node logs written through tal's own writer, whose nodes all reach the
/// same CPU and memory peaks, at different times: seven nodes, the peak
/// first reached by the fifth and the sixth at the same ns (the earlier
/// log's is the one named). If `step_back`, one node's clock steps back
/// halfway (its samples out of time order, which a dataset's reader then
/// reads again merged). One node is named by a custom event before its
/// first sample.
fn tied_peaks(dir: &Path, step_back: bool) -> Vec<PathBuf> {
    use tal::log::LogWriter;
    use tal::record::*;
    let t0: i64 = 1_795_000_000_000_000_000;
    let mut ids = tal::ids::EventIdGen::with_seed(7);
    let mut logs = Vec::new();
    for n in 0..7i64 {
        let node = format!("tied{n}");
        let path = dir.join(format!("tied.session.{node}.tal"));
        let mut w = LogWriter::create(&path, &header("tied.session", &node, t0, 2)).unwrap();
        let mut ev = |t: i64, kind: EventKind| Event {
            event_id: ids.next_id(),
            event_time_ns: t,
            emit_time_ns: t,
            backend: Some("tal".into()),
            task_id: None,
            node_id: None,
            attributes: vec![],
            kind,
        };
        w.append(&Record::Event(ev(t0, EventKind::SessionStarted)))
            .unwrap();
        if n == 6 {
            let mut e = ev(
                t0 + 1_000,
                EventKind::Custom {
                    event_type: "app.Hello".into(),
                    fields: vec![],
                },
            );
            e.node_id = Some("tied3".into());
            w.append(&Record::Event(e)).unwrap();
        }
        // The peak (95 % CPU, 90 % memory) at sample 40 - 3n, but the
        // fifth and sixth nodes' at sample 8, at the same ns: the first.
        let peak_at = match n {
            4 | 5 => 8,
            _ => 40 - 3 * n,
        };
        for i in 0..60i64 {
            let mut t = t0 + 50_000_000 + i * 100_000_000 + n * 1_000;
            if n == 5 {
                t -= 1_000;
            }
            if step_back && n == 2 && i >= 30 {
                t -= 2_500_000_000;
            }
            let mut u = ResourceUpdate::empty(ResourceScope::PerNode);
            let peak = i == peak_at || (n == 1 && i == 55);
            u.cpu_percent = Some(if peak { 95.0 } else { (i % 9) as f64 * 10.0 });
            u.memory_percent = Some(if peak { 90.0 } else { 50.0 });
            u.cpu_percent_per_core = vec![(i % 100) as f32, 95.0];
            w.append(&Record::Event(ev(t, EventKind::ResourceUpdate(u))))
                .unwrap();
        }
        let end = t0 + 6_200_000_000;
        let ended = EventKind::SessionEnded {
            duration_seconds: 6.2,
        };
        w.append(&Record::Event(ev(end, ended))).unwrap();
        w.finish(Some(&Record::End(EndMarker {
            wall_ns: end,
            reason: EndReason::Signal(15),
        })))
        .unwrap();
        logs.push(path);
    }
    logs
}

#[test]
fn equal_peaks_on_many_nodes_name_the_same_node_from_a_dataset() {
    for step_back in [false, true] {
        equal_peaks_read_as_from_the_logs(step_back);
    }
}

fn equal_peaks_read_as_from_the_logs(step_back: bool) {
    let dir = tempfile::tempdir().unwrap();
    let logs = tied_peaks(dir.path(), step_back);
    let (_, ds) = convert_both(&logs, dir.path());
    views_agree(&logs, &ds, dir.path());
    // The node named is the one whose peak came first.
    let page = dir.path().join("r.html");
    run_ok(tal().args(["report", "-q"]).arg(&ds).arg("-o").arg(&page));
    let html = std::fs::read_to_string(&page).unwrap();
    let data = report_data(&html);
    let facts = &data["facts"];
    assert_eq!(facts["cpu_percent"]["node"], "tied4", "{facts}");
    assert_eq!(facts["memory_percent"]["node"], "tied4", "{facts}");
}
