//! What tal writes, attacked: an output never replaces an input (through
//! any name or link), a replaced output keeps its mode, temporaries are
//! private and gone after SIGINT, SIGTERM or SIGHUP (and, after a SIGKILL,
//! at the next run), and a name only ever holds a complete JSONL, even when
//! `tal record`'s end-of-run conversion is interrupted.

mod common;
use common::*;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// A small recorded session's log, in `dir`.
fn a_log(dir: &Path) -> PathBuf {
    record_tasks(dir, "s.out")
}

/// Every file in `dir` (recursively), as paths relative to it.
fn files_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            out.extend(files_in(&p).into_iter().map(|f| format!("{rel}/{f}")));
            out.push(format!("{rel}/"));
        } else {
            out.push(rel);
        }
    }
    out.sort();
    out
}

#[test]
fn an_output_that_is_an_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = a_log(dir.path());
    let jsonl = dir.path().join("x.jsonl");
    run_ok(tal().arg("convert").arg(&log).arg("-o").arg(&jsonl));
    let log_bytes = std::fs::read(&log).unwrap();
    let jsonl_bytes = std::fs::read(&jsonl).unwrap();
    // The same file, through its name, a symbolic link and a hard link.
    let sym = dir.path().join("sym.jsonl");
    std::os::unix::fs::symlink(&log, &sym).unwrap();
    let hard = dir.path().join("hard.out");
    std::fs::hard_link(&jsonl, &hard).unwrap();
    let cases: Vec<Vec<std::ffi::OsString>> = vec![
        vec![
            "convert".into(),
            log.clone().into(),
            "-o".into(),
            log.clone().into(),
        ],
        vec![
            "convert".into(),
            log.clone().into(),
            "-o".into(),
            sym.clone().into(),
        ],
        vec![
            "report".into(),
            jsonl.clone().into(),
            "-o".into(),
            jsonl.clone().into(),
        ],
        vec![
            "report".into(),
            jsonl.clone().into(),
            "-o".into(),
            hard.clone().into(),
        ],
        vec![
            "convert".into(),
            jsonl.clone().into(),
            "--format".into(),
            "chrome-trace".into(),
            "-o".into(),
            jsonl.clone().into(),
        ],
        vec![
            "convert".into(),
            log.clone().into(),
            "--format".into(),
            "chrome-trace".into(),
            "-o".into(),
            log.clone().into(),
        ],
    ];
    for args in cases {
        let out = run(tal().args(&args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
        assert!(stderr.contains("it is the input"), "{args:?}: {stderr}");
        assert_eq!(std::fs::read(&log).unwrap(), log_bytes, "{args:?}");
        assert_eq!(std::fs::read(&jsonl).unwrap(), jsonl_bytes, "{args:?}");
    }
    // Nothing was left beside them either.
    let left = files_in(dir.path());
    assert!(left.iter().all(|f| !f.ends_with(".tmp")), "{left:?}");
}

#[test]
fn a_replaced_output_keeps_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let log = a_log(dir.path());
    let jsonl = dir.path().join("x.jsonl");
    let html = dir.path().join("x.html");
    for mode in [0o600, 0o444, 0o640] {
        for (path, args) in [
            (
                &jsonl,
                vec!["convert".to_string(), log.display().to_string()],
            ),
            (&html, vec!["report".to_string(), log.display().to_string()]),
        ] {
            std::fs::write(path, b"old").unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
            run_ok(tal().args(&args).arg("-o").arg(path));
            let m = std::fs::metadata(path).unwrap();
            assert_eq!(m.mode() & 0o777, mode, "{}", path.display());
            assert!(m.len() > 3, "replaced");
        }
    }
    // A new file: 0666 less the umask.
    let new = dir.path().join("new.jsonl");
    let cmd = format!(
        "umask 027; exec {} convert {} -o {}",
        env!("CARGO_BIN_EXE_tal"),
        log.display(),
        new.display()
    );
    run_ok(std::process::Command::new("sh").args(["-c", &cmd]));
    assert_eq!(std::fs::metadata(&new).unwrap().mode() & 0o777, 0o640);
}

#[test]
fn report_to_stdout_and_a_missing_folder() {
    let dir = tempfile::tempdir().unwrap();
    let log = a_log(dir.path());
    let before = files_in(dir.path());
    let out = run_ok(
        tal()
            .current_dir(dir.path())
            .arg("report")
            .arg(&log)
            .args(["-o", "-"]),
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("<!DOCTYPE html>"));
    assert_eq!(files_in(dir.path()), before, "no file named -");
    let missing = dir.path().join("no/such/dir/x.jsonl");
    let out = run(tal().arg("convert").arg(&log).arg("-o").arg(&missing));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "the folder {} does not exist",
            missing.parent().unwrap().display()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains(".x.jsonl."),
        "names a temporary file: {stderr}"
    );
}

/// Makes a FIFO at `path`.
fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// `tal summary`, `tal report` and `tal convert --format chrome-trace` of
/// logs convert them to a JSONL first: in a private directory (0700, so no
/// other user can read the session's task attributes), removed when a
/// SIGINT, SIGTERM or SIGHUP ends tal. Each run here blocks on a FIFO as
/// its output, with its temporary JSONL written, and is then signalled.
#[test]
fn interrupted_runs_leave_no_temporary_and_none_is_readable_by_others() {
    let dir = tempfile::tempdir().unwrap();
    let log = a_log(dir.path());
    let tmpdir = tempfile::tempdir().unwrap();
    let outdir = tempfile::tempdir().unwrap();
    let fifo = outdir.path().join("out.fifo");
    mkfifo(&fifo);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        for cmd in ["report", "chrome-trace"] {
            let mut c = tal();
            match cmd {
                "report" => c.arg("report").arg(&log),
                _ => c
                    .arg("convert")
                    .arg(&log)
                    .args(["--format", "chrome-trace"]),
            };
            let child = c
                .arg("-o")
                .arg(&fifo)
                .env("TMPDIR", tmpdir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // The trace's temporary JSONL goes beside the output; the
            // report reads the log straight, with no temporary, and then
            // waits for a reader of its output (the fifo).
            let work_base = if cmd == "report" {
                wait_until("the report waiting for a reader", || {
                    let wchan = format!("/proc/{}/wchan", child.id());
                    let w = std::fs::read_to_string(wchan).unwrap_or_default();
                    w.contains("partner") || w.contains("fifo")
                });
                tmpdir.path()
            } else {
                wait_until("the temporary JSONL", || {
                    files_in(outdir.path())
                        .iter()
                        .any(|f| f.ends_with("session.telemetry.jsonl"))
                });
                outdir.path()
            };
            for e in std::fs::read_dir(work_base).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    let m = e.metadata().unwrap();
                    assert_eq!(m.mode() & 0o777, 0o700, "{cmd}: {:?}", e.path());
                    // SAFETY: geteuid has no preconditions.
                    assert_eq!(m.uid(), unsafe { libc::geteuid() });
                }
            }
            // It waits for a reader of its output now: signal it.
            std::thread::sleep(Duration::from_millis(100));
            signal(&child, sig);
            let out = wait_output(child, Duration::from_secs(10));
            assert_eq!(out.status.code(), Some(130), "{cmd} {sig}");
            assert_eq!(files_in(tmpdir.path()), Vec::<String>::new(), "{cmd} {sig}");
            assert_eq!(files_in(outdir.path()), ["out.fifo"], "{cmd} {sig}");
        }
    }
}

/// A conversion killed with SIGKILL leaves its temporary beside the
/// output; the next run of tal on this host for that output removes it (its
/// tal is gone), but not one of a tal that still runs, nor another host's.
#[test]
fn a_killed_conversions_temporary_goes_at_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let log = a_log(dir.path());
    let out = dir.path().join("x.jsonl");
    let host = tal::tempfiles::host_tag();
    // Beyond any pid_max: a tal that is gone.
    let stale = dir
        .path()
        .join(format!(".x.jsonl.tal-{host}-4194999-a1b2c3.tmp"));
    let live = dir.path().join(format!(
        ".x.jsonl.tal-{host}-{}-a1b2c3.tmp",
        std::process::id()
    ));
    let other = dir.path().join(".x.jsonl.tal-otherhost-4194999-a1b2c3.tmp");
    for p in [&stale, &live, &other] {
        std::fs::write(p, b"partial").unwrap();
    }
    run_ok(tal().arg("convert").arg(&log).arg("-o").arg(&out));
    assert!(!stale.exists());
    assert!(live.exists() && other.exists());
    // And a real one: killed while its output waits for a reader (a FIFO
    // as the chrome trace's output keeps its private work directory).
    let fifo = dir.path().join("t.fifo");
    mkfifo(&fifo);
    let child = tal()
        .arg("convert")
        .arg(&log)
        .args(["--format", "chrome-trace", "-o"])
        .arg(&fifo)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the work directory", || {
        files_in(dir.path())
            .iter()
            .any(|f| f.contains("tal-work.tal-"))
    });
    signal(&child, libc::SIGKILL);
    wait_output(child, Duration::from_secs(10));
    assert!(files_in(dir.path())
        .iter()
        .any(|f| f.contains("tal-work.tal-")));
    run_ok(
        tal()
            .arg("convert")
            .arg(&log)
            .args(["--format", "chrome-trace", "-o"])
            .arg(dir.path().join("t.json")),
    );
    let left = files_in(dir.path());
    assert!(
        left.iter().all(|f| !f.contains("tal-work.tal-")),
        "{left:?}"
    );
}

/// Sends `n` small events to the agent at `socket`.
fn flood(socket: &Path, n: usize) {
    let mut s = UnixStream::connect(socket).unwrap();
    let mut buf = Vec::new();
    for i in 0..n {
        writeln!(buf, "{{\"event_type\": \"app.Load\", \"i\": {i}, \"pad\": \"0123456789abcdef0123456789abcdef\"}}").unwrap();
        if buf.len() > 1 << 20 {
            s.write_all(&buf).unwrap();
            buf.clear();
        }
    }
    s.write_all(&buf).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut rest);
}

/// A stop signal while `tal record` writes its end-of-run JSONL (after a
/// first SIGINT, or after a SIGTERM) exits at once: no name holds a
/// partial or empty JSONL, the temporary is gone, and tal says how to
/// convert the log, which is complete.
#[test]
fn interrupting_the_end_of_run_conversion_leaves_no_partial_jsonl() {
    for first in [libc::SIGINT, libc::SIGTERM] {
        let mut interrupted = false;
        for events in [200_000, 600_000, 2_000_000] {
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("a.sock");
            let child = tal()
                .args([
                    "record",
                    "--interval",
                    "0.1",
                    "--session-id",
                    "s.int",
                    "--node-id",
                    "n",
                ])
                .arg("--out")
                .arg(dir.path())
                .arg("--socket")
                .arg(&socket)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            wait_until("the socket", || socket.exists());
            flood(&socket, events);
            signal(&child, first);
            wait_until("the JSONL's temporary", || {
                files_in(dir.path()).iter().any(|f| f.ends_with(".tmp"))
                    || files_in(dir.path())
                        .iter()
                        .any(|f| f.ends_with(".telemetry.jsonl"))
            });
            signal(&child, libc::SIGINT);
            let out = wait_output(child, Duration::from_secs(60));
            let stderr = String::from_utf8_lossy(&out.stderr);
            let left = files_in(dir.path());
            if left.iter().any(|f| f.ends_with(".telemetry.jsonl")) {
                // The conversion finished first: try a longer one.
                assert_eq!(out.status.code(), Some(0), "{stderr}");
                continue;
            }
            assert_eq!(out.status.code(), Some(130), "{stderr}");
            assert_eq!(left, ["s.int.n.tal"], "{stderr}");
            assert!(stderr.contains("tal convert"), "{stderr}");
            assert!(log_finished(&dir.path().join("s.int.n.tal")));
            // The log converts, whole.
            let jsonl = dir.path().join("again.jsonl");
            run_ok(
                tal()
                    .arg("convert")
                    .arg(dir.path().join("s.int.n.tal"))
                    .arg("-o")
                    .arg(&jsonl),
            );
            assert_complete(&read_jsonl(&jsonl));
            interrupted = true;
            break;
        }
        assert!(interrupted, "never caught the conversion running");
    }
}
