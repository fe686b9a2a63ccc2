//! Process-level behaviour of `tal record` and `tal convert`: exit codes,
//! signals, kill -9 recovery, and one-line errors for bad input.

mod common;
use common::*;
use std::process::Stdio;
use std::time::Duration;
use tal::log::LogReader;

#[test]
fn wrapped_command_exit_status_and_complete_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tal()
        .args(["record", "--interval", "50ms", "--out"])
        .arg(dir.path())
        .args([
            "--session-id",
            "s.exit3",
            "--",
            "sh",
            "-c",
            "sleep 0.3; exit 3",
        ]));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap();
    for want in ["session=s.exit3", "node=", "log=", "interval="] {
        assert!(first.contains(want), "start line lacks {want}: {first}");
    }
    let v = read_jsonl_in(dir.path());
    assert_complete(&v);
    let ends = lines(&v, "event", Some("SessionEnded"));
    assert_eq!(
        ends[0]["attributes"],
        serde_json::json!({}),
        "a clean end is not 'recovered'"
    );
    assert!(lines(&v, "event", Some("ResourceUpdate")).len() >= 3);
    // The file name is RHAPSODY's: {session}.{start seconds}.telemetry.jsonl
    let name = files_with_ext(dir.path(), ".telemetry.jsonl")[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let start = lines(&v, "event", Some("SessionStarted"))[0]["event_time"]
        .as_f64()
        .unwrap() as i64;
    assert_eq!(name, format!("s.exit3.{start}.telemetry.jsonl"));
}

#[test]
fn wrapped_command_killed_by_signal_and_missing_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tal()
        .args(["record", "--no-convert", "--out"])
        .arg(dir.path())
        .args(["--", "sh", "-c", "kill -SEGV $$"]));
    assert_eq!(out.status.code(), Some(128 + 11));

    let dir = tempfile::tempdir().unwrap();
    let out = run(tal()
        .args(["record", "--out"])
        .arg(dir.path())
        .args(["--", "/nonexistent/tal-test-binary"]));
    assert_eq!(out.status.code(), Some(127));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot run '/nonexistent/tal-test-binary'")
    );
    assert_complete(&read_jsonl_in(dir.path()));
}

#[test]
fn the_wrapped_command_sees_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tal()
        .args([
            "record",
            "--no-convert",
            "--session-id",
            "s.env",
            "--node-id",
            "n7",
            "--out",
        ])
        .arg(dir.path())
        .args(["--", "sh", "-c", "echo $TAL_SESSION_ID $TAL_NODE_ID"]));
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "s.env n7");
    assert!(dir.path().join("s.env.n7.tal").exists());
}

#[test]
fn sigterm_mid_run_leaves_a_complete_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let (child, log) = spawn_recorder(dir.path(), "s.term", "0.05");
    wait_until("5 samples in the log", || samples_in_log(&log) >= 5);
    signal(&child, libc::SIGTERM);
    let out = wait_output(child, Duration::from_secs(20));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = read_jsonl_in(dir.path());
    assert_complete(&v);
    let samples = lines(&v, "event", Some("ResourceUpdate"));
    assert!(samples.len() >= 5, "{} samples", samples.len());
    // The series covers the recording: the last sample is the final one
    // taken at shutdown, close to SessionEnded.
    let last = samples.last().unwrap()["event_time"].as_f64().unwrap();
    let end = lines(&v, "event", Some("SessionEnded"))[0]["event_time"]
        .as_f64()
        .unwrap();
    assert!(end - last < 0.5, "last sample {last}, end {end}");
}

#[test]
fn kill_9_loses_nothing_that_reached_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, log) = spawn_recorder(dir.path(), "s.kill", "0.05");
    wait_until("20 samples in the log", || samples_in_log(&log) >= 20);
    // What the writer has put in the file so far: read it
    // through the page cache from this process, then SIGKILL the agent.
    let seen = LogReader::open(&log).unwrap().count();
    child.kill().unwrap();
    child.wait().unwrap();

    let out = run(tal().arg("convert").arg(&log));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no end marker"), "{stderr}");
    assert!(stderr.contains("recovered"), "{stderr}");
    let recovered = LogReader::open(&log).unwrap().count();
    assert!(
        recovered >= seen,
        "recovered {recovered} < {seen} seen before the kill"
    );
    let v = read_jsonl_in(dir.path());
    assert_complete(&v);
    let end = lines(&v, "event", Some("SessionEnded"))[0];
    assert_eq!(end["attributes"]["recovered"], true);
    // Every sample read back is on the sampling grid (its deadline), in
    // order; how many deadlines a loaded machine made the sampler skip is
    // the benchmarks' business, not this test's.
    let times: Vec<f64> = lines(&v, "event", Some("ResourceUpdate"))
        .iter()
        .map(|e| e["event_time"].as_f64().unwrap())
        .collect();
    assert!(times.len() >= 20);
    for w in times.windows(2) {
        let steps = (w[1] - w[0]) / 0.05;
        assert!(
            steps >= 0.999 && (steps - steps.round()).abs() < 1e-3,
            "samples {} and {} are not one or more intervals apart",
            w[0],
            w[1]
        );
    }
    // The session span closes at the last record's time.
    let span = lines(&v, "span", None).pop().unwrap().clone();
    assert!(span["end_time_s"].as_f64().unwrap() >= *times.last().unwrap());
}

#[test]
fn second_sigint_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("cmd.pid");
    // The wrapped command ignores SIGINT, so after the first one tal has
    // finalised and waits for it; the second SIGINT must end tal with 130.
    let child = tal()
        .args([
            "record",
            "--no-convert",
            "--session-id",
            "s.int",
            "--node-id",
            "n",
            "--out",
        ])
        .arg(dir.path())
        .args([
            "--",
            "sh",
            "-c",
            &format!(
                "trap '' INT; echo $$ > {}; exec sleep 20",
                pidfile.display()
            ),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = dir.path().join("s.int.n.tal");
    // The command runs (so tal's handlers are in place), and tal is sampling.
    wait_for_file(&pidfile);
    wait_until("a sample in the log", || samples_in_log(&log) >= 1);
    signal(&child, libc::SIGINT);
    // The first SIGINT finalises the log; tal then waits for the command.
    wait_until("the log's end marker", || log_finished(&log));
    signal(&child, libc::SIGINT);
    let out = wait_output(child, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(130));
    // The wrapped command ignored SIGINT and outlived tal: end it, by pid.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: signalling the test's own grandchild by its recorded pid.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn one_line_error(args: &[&str]) -> String {
    let out = run(tal().args(args));
    assert!(!out.status.success(), "{args:?} succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "{args:?}: not one line: {stderr}"
    );
    stderr
}

#[test]
fn ids_that_make_too_long_a_file_name_are_refused_up_front() {
    let session = "a".repeat(200);
    let node = "b".repeat(60);
    let e = one_line_error(&[
        "record",
        "--socket",
        "/tmp/tal-test-unused.sock",
        "--session-id",
        &session,
        "--node-id",
        &node,
        "--out",
        "/tmp",
        "--",
        "true",
    ]);
    assert!(
        e.contains("--session-id (200 bytes) and --node-id (60 bytes)"),
        "{e}"
    );
    assert!(e.contains("at most 230 bytes together"), "{e}");
}

#[test]
fn bad_intervals_are_one_line_errors() {
    for bad in ["0", "-1", "abc", "0.0001", "5parsecs"] {
        let e = one_line_error(&["record", "--interval", bad, "--out", "/tmp"]);
        assert!(e.contains("--interval"), "{e}");
        assert!(e.contains(bad), "{e}");
    }
}

#[test]
fn unwritable_out_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let under_file = file.join("sub");
    let e = one_line_error(&[
        "record",
        "--out",
        under_file.to_str().unwrap(),
        "--",
        "true",
    ]);
    assert!(e.contains("--out"), "{e}");
    // /proc refuses new entries even to root.
    let e = one_line_error(&["record", "--out", "/proc/tal-test-out", "--", "true"]);
    assert!(
        e.contains("/proc/tal-test-out") && e.contains("--out"),
        "{e}"
    );
}

#[test]
fn convert_refuses_unknown_files_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let e = one_line_error(&["convert", dir.path().join("missing.tal").to_str().unwrap()]);
    assert!(
        e.contains("missing.tal") && e.contains("No such file"),
        "{e}"
    );
    let junk = dir.path().join("junk.tal");
    std::fs::write(&junk, b"#!/bin/sh\necho not a log\n").unwrap();
    let e = one_line_error(&["convert", junk.to_str().unwrap()]);
    assert!(e.contains("is not a tal log"), "{e}");
    let empty = dir.path().join("empty.tal");
    std::fs::write(&empty, b"").unwrap();
    let e = one_line_error(&["convert", empty.to_str().unwrap()]);
    assert!(e.contains("is not a tal log"), "{e}");
    // A directory stands for the logs in it: refused as they are.
    let e = one_line_error(&["convert", dir.path().to_str().unwrap()]);
    assert!(
        e.contains("junk.tal is not a tal log") && e.contains("empty.tal is not a tal log"),
        "{e}"
    );
}

#[test]
fn convert_to_stdout_and_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tal()
        .args([
            "record",
            "--no-convert",
            "--session-id",
            "s.conv",
            "--node-id",
            "n",
            "--out",
        ])
        .arg(dir.path())
        .args(["--", "sleep", "0.3"]));
    assert!(out.status.success());
    let log = dir.path().join("s.conv.n.tal");
    let out = run(tal().arg("convert").arg(&log).args(["-o", "-"]));
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let target = dir.path().join("x.jsonl");
    let out = run(tal().arg("convert").arg(&log).arg("-o").arg(&target));
    assert!(out.status.success());
    // Converting is deterministic: the same log gives the same bytes.
    assert_eq!(std::fs::read_to_string(&target).unwrap(), text);
    assert_complete(&read_jsonl(&target));
}

/// Less room than one log chunk (here a 500 KiB file-size limit, as
/// `ulimit -f 500` sets): the wrapped command runs all the same, its
/// status is passed on, and tal says why on stderr (it once died of
/// SIGBUS writing a memory map past the file's end).
#[test]
fn no_room_for_the_log_still_runs_the_command() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tal();
    cmd.args([
        "record",
        "--session-id",
        "s.room",
        "--node-id",
        "n",
        "--out",
    ])
    .arg(dir.path())
    .args(["--", "sh", "-c", "echo RAN; exit 3"]);
    // SAFETY: (a test) setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 500 << 10,
                rlim_max: 500 << 10,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            Ok(())
        });
    }
    let out = run(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "RAN\n");
    assert!(
        stderr.contains("cannot create log")
            && stderr.contains("running the command without recording"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("s.room.n.tal").exists(),
        "no half-made log"
    );
}

#[test]
fn a_full_disk_mid_run_keeps_every_record_before_it() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let tal_bin = env!("CARGO_BIN_EXE_tal");
    let mut cmd = tal();
    cmd.args([
        "record",
        "--interval",
        "1ms",
        "--log-chunk",
        "4096",
        "--session-id",
        "s.full",
    ])
    .args(["--node-id", "n", "--out"])
    .arg(dir.path())
    .args([
        "--",
        "sh",
        "-c",
        // Probes until the agent refuses one (its log is full), then one
        // more event, whose refusal tal's stderr must tell.
        &format!(
            "while {tal_bin} emit test.Probe 2>/dev/null; do sleep 0.01; done; \
             {tal_bin} emit TaskCreated --task-id late; exit 4"
        ),
    ]);
    // A 128 KiB file-size limit: the log fills it within a second at 1 ms,
    // like a disk that runs full while the job goes on.
    // SAFETY: (a test) setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 128 << 10,
                rlim_max: 128 << 10,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            Ok(())
        });
    }
    let out = run(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(4),
        "the wrapped command's status survives: {stderr}"
    );
    assert!(
        stderr.contains("cannot write log") || stderr.contains("disk full"),
        "{stderr}"
    );
    // A client event after the log filled is refused, and told why.
    assert!(stderr.contains("the agent's log is full"), "{stderr}");
    let log = dir.path().join("s.full.n.tal");
    let mut r = LogReader::open(&log).unwrap();
    let n = r.by_ref().count();
    assert!(n > 100, "{n} records kept");
    assert_eq!(r.stats().corrupt_frames, 0);
    // The room kept for the last records: the log still ends cleanly, with
    // the final counters.
    assert!(r.stats().end_marker, "{:?}", r.stats());
    let out = run(tal()
        .arg("convert")
        .arg(&log)
        .arg("-o")
        .arg(dir.path().join("x.jsonl")));
    assert!(out.status.success());
    let v = read_jsonl(&dir.path().join("x.jsonl"));
    assert_complete(&v);
    let m = lines(&v, "metric", None)[0];
    assert!(m["agent_records_dropped"].as_u64().unwrap() > 0, "{m}");
    assert!(m["ingest_lines_rejected"].as_u64().unwrap() >= 1, "{m}");
    assert!(lines(&v, "event", Some("TaskCreated")).is_empty());
}

#[test]
fn convert_into_a_closed_pipe_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tal()
        .args([
            "record",
            "--no-convert",
            "--interval",
            "1ms",
            "--session-id",
            "s.pipe",
            "--node-id",
            "n",
            "--out",
        ])
        .arg(dir.path())
        .args(["--", "sleep", "1"]));
    assert!(out.status.success());
    let mut child = tal()
        .arg("convert")
        .arg(dir.path().join("s.pipe.n.tal"))
        .args(["-o", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away at once, like `| head -0`
    let out = wait_output(child, Duration::from_secs(20));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_log_cut_off_after_its_header_still_converts() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tal()
        .args([
            "record",
            "--no-convert",
            "--session-id",
            "s.cut",
            "--node-id",
            "n",
            "--out",
        ])
        .arg(dir.path())
        .args(["--", "true"]));
    assert!(out.status.success());
    let log = dir.path().join("s.cut.n.tal");
    let full = std::fs::read(&log).unwrap();
    let header_end = {
        let r = LogReader::open(&log).unwrap();
        r.stats().valid_bytes as usize
    };
    for cut in [header_end, header_end + 3, full.len() - 9] {
        std::fs::write(&log, &full[..cut]).unwrap();
        let target = dir.path().join(format!("cut{cut}.jsonl"));
        let out = run(tal().arg("convert").arg(&log).arg("-o").arg(&target));
        assert!(
            out.status.success(),
            "cut {cut}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("no end marker"));
        assert_complete(&read_jsonl(&target));
    }
}

/// `-o` at a device or a FIFO writes into it and never replaces it; files
/// planted where a temporary file used to be named (`<target>.tmp`, in a
/// shared `--out` too) are neither followed nor overwritten.
#[test]
fn convert_never_replaces_a_special_file_or_follows_a_planted_link() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    // A shared --out where another user planted the old temporary names.
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for s in started..started + 5 {
        std::os::unix::fs::symlink(
            &victim,
            out_dir.join(format!("s.plant.{s}.telemetry.jsonl.tmp")),
        )
        .unwrap();
    }
    let out = run(tal()
        .args([
            "record",
            "--session-id",
            "s.plant",
            "--node-id",
            "n",
            "--out",
        ])
        .arg(&out_dir)
        .args(["--", "sleep", "0.2"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_complete(&read_jsonl_in(&out_dir));

    let log = out_dir.join("s.plant.n.tal");
    let target = dir.path().join("x.jsonl");
    std::os::unix::fs::symlink(&victim, dir.path().join("x.jsonl.tmp")).unwrap();
    let out = run(tal().arg("convert").arg(&log).arg("-o").arg(&target));
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_complete(&read_jsonl(&target));
    let expected = std::fs::read(&target).unwrap();

    // A FIFO stays a FIFO, and its reader gets the whole JSONL.
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let out = run(tal().arg("convert").arg(&log).arg("-o").arg(&fifo));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(reader.join().unwrap(), expected);
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    // No temporary file is left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") && n != "x.jsonl.tmp")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A requeued Slurm job keeps its job id, so its session id: a second
/// `tal record` with the same session and node starts a numbered log beside
/// the first (and runs its command), and the logs convert to one session.
#[test]
fn a_second_run_of_a_session_starts_a_numbered_log_beside_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let record = |marker: &str| {
        run(tal()
            .args([
                "record",
                "--session-id",
                "slurm.77",
                "--node-id",
                "n",
                "--out",
            ])
            .arg(dir.path())
            .args(["--", "sh", "-c", &format!("echo {marker}; sleep 0.3")]))
    };
    let first = record("FIRST");
    assert!(first.status.success());
    // The first run's agent was "killed": its log stays.
    let second = record("SECOND");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&second.stdout), "SECOND\n");
    let a = dir.path().join("slurm.77.n.tal");
    let b = dir.path().join("slurm.77.n.1.tal");
    assert!(a.exists() && b.exists(), "{stderr}");
    assert!(
        stderr.contains("log=") && stderr.contains("slurm.77.n.1.tal"),
        "{stderr}"
    );
    // Two JSONL files, neither replaced by the other.
    let jsonl: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".telemetry.jsonl"))
        .collect();
    assert_eq!(jsonl.len(), 2, "{jsonl:?}");
    let target = dir.path().join("both.jsonl");
    let out = run(tal().arg("convert").arg(&a).arg(&b).arg("-o").arg(&target));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = read_jsonl(&target);
    assert_complete(&v);
    assert_eq!(lines(&v, "event", Some("SessionStarted")).len(), 1);
    let m = lines(&v, "metric", None)[0];
    assert_eq!(m["tal_logs"].as_array().unwrap().len(), 2);
    assert!(v
        .iter()
        .all(|l| l["section"] != "event" || l["session_id"] == "slurm.77"));
}
