//! Task lifecycle through the real agent: the ingest socket under many
//! concurrent clients with malformed lines interleaved, a client that
//! disconnects mid-line, `tal run` in every outcome, `tal emit`, `tal stop`
//! under load, and the socket's permissions and stale-file handling.

mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

struct Agent {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

fn start_agent(session: &str) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let child = tal()
        .args([
            "record",
            "--interval",
            "0.1",
            "--session-id",
            session,
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
    wait_for_file(&socket);
    Agent { child, dir, socket }
}

fn stop_agent(a: Agent) -> (tempfile::TempDir, Vec<Value>) {
    let out = run(tal().arg("stop").arg("--socket").arg(&a.socket));
    assert!(
        out.status.success(),
        "tal stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["ok"], true);
    let jsonl = PathBuf::from(reply["jsonl"].as_str().unwrap());
    assert!(
        jsonl.exists(),
        "the JSONL is written before tal stop returns"
    );
    let status = wait_output(a.child, Duration::from_secs(20));
    assert!(status.status.success());
    assert!(!a.socket.exists(), "the socket file is removed");
    let v = read_jsonl(&jsonl);
    (a.dir, v)
}

fn send_and_collect(socket: &Path, payload: &[u8]) -> Vec<Value> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(payload).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    BufReader::new(s)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

/// A connection subscribed to `types` (JSON; `null`: every type), once the
/// agent has said so.
fn subscribe_raw(socket: &Path, types: &str) -> UnixStream {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(format!("{{\"op\": \"subscribe\", \"types\": {types}}}\n").as_bytes())
        .unwrap();
    let types = if types == "null" { "[]" } else { types };
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // Byte by byte, so that nothing after the answer is read here.
    let mut answer = Vec::new();
    let mut b = [0u8; 1];
    while answer.last() != Some(&b'\n') {
        assert_eq!(std::io::Read::read(&mut s, &mut b).unwrap(), 1);
        answer.push(b[0]);
    }
    let v: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        v["subscribed"],
        serde_json::from_str::<Value>(types).unwrap()
    );
    s
}

/// The agent's log (its ping answer says where).
fn agent_log(socket: &Path) -> PathBuf {
    let r = send_and_collect(socket, b"{\"op\": \"ping\"}\n");
    PathBuf::from(r[0]["log"].as_str().unwrap())
}

/// Over-long lines are answered and counted, the last one too when the
/// client closes without its newline; the lines around them are recorded.
#[test]
fn over_long_lines_are_answered_even_at_the_end_of_the_stream() {
    let a = start_agent("s.long");
    let long = vec![b'x'; 70 << 10];
    let mut payload = Vec::new();
    payload.extend_from_slice(&long);
    payload.extend_from_slice(b"\n{\"event_type\": \"TaskCreated\", \"task_id\": \"ok\"}\n");
    payload.extend_from_slice(&long); // no newline: the stream ends in it
    let replies = send_and_collect(&a.socket, &payload);
    let got: Vec<u64> = replies
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [1, 3], "{replies:?}");
    assert!(replies
        .iter()
        .all(|r| r["error"].as_str().unwrap().contains("line longer than")));
    let (_dir, v) = stop_agent(a);
    assert_eq!(lines(&v, "event", Some("TaskCreated")).len(), 1);
    let m = lines(&v, "metric", None)[0];
    assert_eq!(m["ingest_lines_rejected"], 2);
    assert_eq!(m["ingest_events_accepted"], 1);
}

#[test]
fn many_clients_with_bad_lines_interleaved() {
    let a = start_agent("s.many");
    assert_eq!(
        std::fs::metadata(&a.socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    const CLIENTS: usize = 8;
    const TASKS: usize = 100;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let socket = a.socket.clone();
            std::thread::spawn(move || {
                let mut payload = Vec::new();
                let mut bad_lines = vec![];
                let mut line = 0;
                for t in 0..TASKS {
                    for ty in ["TaskCreated", "TaskStarted", "TaskCompleted"] {
                        line += 1;
                        payload.extend_from_slice(
                            format!(
                                "{{\"event_type\": \"{ty}\", \"task_id\": \"c{c}.t{t}\", \"attributes\": {{\"executable\": \"/bin/x\", \"task_type\": \"T\"}}}}\n"
                            )
                            .as_bytes(),
                        );
                    }
                    if t % 10 == 3 {
                        line += 1;
                        bad_lines.push(line);
                        payload.extend_from_slice(b"{\"event_type\": \"TaskStarted\"}\n");
                    }
                    if t % 25 == 7 {
                        line += 1;
                        bad_lines.push(line);
                        payload.extend_from_slice(b"this is not json\n");
                    }
                }
                let replies = send_and_collect(&socket, &payload);
                let got: Vec<u64> = replies.iter().map(|r| r["line"].as_u64().unwrap()).collect();
                assert_eq!(got, bad_lines, "client {c}: every bad line answered, by number");
                assert!(replies.iter().all(|r| r["error"].is_string()));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (_dir, v) = stop_agent(a);
    assert_complete(&v);
    let n = |ty| lines(&v, "event", Some(ty)).len();
    assert_eq!(n("TaskCreated"), CLIENTS * TASKS);
    assert_eq!(n("TaskStarted"), CLIENTS * TASKS);
    assert_eq!(n("TaskCompleted"), CLIENTS * TASKS);
    let spans = lines(&v, "span", None);
    assert_eq!(spans.len(), CLIENTS * TASKS + 1);
    let m = lines(&v, "metric", None)[0];
    assert_eq!(m["tasks_completed"], (CLIENTS * TASKS) as u64);
    assert_eq!(m["tasks_running"], 0);
    assert_eq!(m["ingest_events_accepted"], (CLIENTS * TASKS * 3) as u64);
    let bad_per_client =
        (0..TASKS).filter(|t| t % 10 == 3).count() + (0..TASKS).filter(|t| t % 25 == 7).count();
    assert_eq!(
        m["ingest_lines_rejected"],
        (CLIENTS * bad_per_client) as u64
    );
    assert_eq!(m["ingest_events_dropped"], 0);
}

#[test]
fn a_client_that_disconnects_mid_line_disturbs_nothing() {
    let a = start_agent("s.cut");
    {
        let mut s = UnixStream::connect(&a.socket).unwrap();
        s.write_all(
            b"{\"event_type\": \"app.Good\", \"n\": 1}\n{\"event_type\": \"app.Cut\", \"n\"",
        )
        .unwrap();
        // dropped here: the connection closes in the middle of a line
    }
    let r = send_and_collect(&a.socket, b"{\"event_type\": \"app.After\"}\n");
    assert!(r.is_empty());
    // A complete last line without its newline is still accepted.
    let r = send_and_collect(&a.socket, b"{\"event_type\": \"app.NoNewline\"}");
    assert!(r.is_empty());
    // A ping is answered.
    let r = send_and_collect(&a.socket, b"{\"op\": \"ping\"}\n");
    assert_eq!(r[0]["session_id"], "s.cut");
    let (_dir, v) = stop_agent(a);
    assert_eq!(lines(&v, "event", Some("app.Good")).len(), 1);
    assert_eq!(lines(&v, "event", Some("app.Cut")).len(), 0);
    assert_eq!(lines(&v, "event", Some("app.After")).len(), 1);
    assert_eq!(lines(&v, "event", Some("app.NoNewline")).len(), 1);
    let m = lines(&v, "metric", None)[0];
    assert_eq!(
        m["ingest_lines_rejected"], 1,
        "the cut line is counted as refused"
    );
}

#[test]
fn a_subscriber_like_client_that_never_reads_does_not_block_the_agent() {
    // A client that floods bad lines and never reads the replies: replies
    // are capped, the agent keeps serving others.
    let a = start_agent("s.deaf");
    let mut deaf = UnixStream::connect(&a.socket).unwrap();
    let junk = b"x\n".repeat(200_000);
    deaf.write_all(&junk).unwrap();
    let r = send_and_collect(&a.socket, b"{\"event_type\": \"app.Fine\"}\n");
    assert!(r.is_empty());
    drop(deaf);
    let (_dir, v) = stop_agent(a);
    assert_eq!(lines(&v, "event", Some("app.Fine")).len(), 1);
}

#[test]
fn tal_run_reports_every_outcome() {
    let a = start_agent("s.run");
    let runs = [
        (
            "ok",
            vec!["sh", "-c", "head -c 100000 /dev/zero > /dev/null"],
            0,
        ),
        ("bad", vec!["sh", "-c", "exit 3"], 3),
        ("seg", vec!["sh", "-c", "kill -SEGV $$"], 128 + 11),
        ("missing", vec!["/nonexistent/tal-test"], 127),
    ];
    for (id, cmd, want) in &runs {
        let out = run(tal()
            .args(["run", "--task-id", id, "--socket"])
            .arg(&a.socket)
            .arg("--")
            .args(cmd));
        assert_eq!(
            out.status.code(),
            Some(*want),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (_dir, v) = stop_agent(a);
    let span = |id: &str| {
        lines(&v, "span", None)
            .into_iter()
            .find(|s| s["attributes"]["task_id"] == id)
            .unwrap_or_else(|| panic!("no span for {id}"))
            .clone()
    };
    let ok = span("ok");
    assert_eq!(ok["status_code"], "OK");
    assert!(ok["attributes"]["cpu_user_seconds"].is_f64());
    assert!(ok["attributes"]["max_rss_bytes"].as_u64().unwrap() > 0);
    assert!(ok["attributes"]["pid"].as_u64().unwrap() > 0);
    assert!(ok["attributes"]["write_bytes"].is_u64());
    assert_eq!(span("bad")["status_description"], "exit:3");
    assert_eq!(span("seg")["status_description"], "signal:SIGSEGV");
    let missing = span("missing");
    assert_eq!(missing["status_description"], "exec:ENOENT");
    // Started, then failed, as RHAPSODY reports a launch failure: the
    // started-minus-finished count never goes negative.
    assert_ne!(missing["attributes"]["incomplete_lifecycle"], true);
    let steps: Vec<&str> = lines(&v, "event", None)
        .into_iter()
        .filter(|l| l["task_id"] == "missing")
        .map(|l| l["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["TaskCreated", "TaskSubmitted", "TaskStarted", "TaskFailed"]
    );
    let completed = lines(&v, "event", Some("TaskCompleted"));
    let d = completed[0]["duration_seconds"].as_f64().unwrap();
    assert!(d > 0.0 && d < 10.0);
    let m = lines(&v, "metric", None)[0];
    assert_eq!(m["tasks_completed"], 1);
    assert_eq!(m["tasks_failed"], 3);
    assert_eq!(m["tasks_started"], 4);
    assert_eq!(m["tasks_submitted"], 4);
}

#[test]
fn tal_run_without_an_agent_still_runs_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let out = run(tal()
        .env_remove("TAL_SOCKET")
        .env_remove("SLURM_JOB_ID")
        .args(["run", "--socket"])
        .arg(dir.path().join("nobody.sock"))
        .args(["--", "sh", "-c"])
        .arg(format!("touch {}; exit 5", marker.display())));
    assert_eq!(out.status.code(), Some(5));
    assert!(marker.exists());
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(e.matches("tal run:").count(), 1, "warns once: {e}");
}

#[test]
fn tal_emit_and_its_errors() {
    let a = start_agent("s.emit");
    let emit = |args: &[&str]| run(tal().arg("emit").args(args).arg("--socket").arg(&a.socket));
    assert!(
        emit(&["app.Checkpoint", "--field", "step=3", "--attr", "note=hi"])
            .status
            .success()
    );
    assert!(emit(&[
        "TaskCreated",
        "--task-id",
        "t9",
        "--attr",
        "executable=/bin/y"
    ])
    .status
    .success());
    let out = emit(&["TaskStarted"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a task id: pass --task-id ID"));
    let out = emit(&["Checkpoint"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("namespaced"));
    let (_dir, v) = stop_agent(a);
    let c = lines(&v, "event", Some("app.Checkpoint"))[0];
    assert_eq!(c["step"], 3);
    assert_eq!(c["attributes"]["note"], "hi");
    // t9 never finished: closed as canceled at the session's end.
    let t9 = lines(&v, "span", None)
        .into_iter()
        .find(|s| s["attributes"]["task_id"] == "t9")
        .unwrap()
        .clone();
    assert_eq!(t9["attributes"]["status"], "canceled");
    assert_eq!(t9["attributes"]["incomplete_lifecycle"], true);
    assert_eq!(lines(&v, "metric", None)[0]["tasks_canceled"], 1);

    // No agent: a warning and exit 0, unless --strict.
    let dir = tempfile::tempdir().unwrap();
    let nobody = dir.path().join("nobody.sock");
    let out = run(tal().args(["emit", "app.X", "--socket"]).arg(&nobody));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not recorded"));
    let out = run(tal()
        .args(["emit", "app.X", "--strict", "--socket"])
        .arg(&nobody));
    assert!(!out.status.success());
}

#[test]
fn tal_stop_under_load_keeps_every_accepted_event() {
    let a = start_agent("s.load");
    let stop_flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let senders: Vec<_> = (0..4)
        .map(|c| {
            let socket = a.socket.clone();
            let stop = stop_flag.clone();
            let progress = progress.clone();
            std::thread::spawn(move || {
                let mut sent = 0u64;
                let Ok(mut s) = UnixStream::connect(&socket) else {
                    return 0;
                };
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut batch = Vec::new();
                    for _ in 0..100 {
                        batch.extend_from_slice(
                            format!("{{\"event_type\": \"app.Load\", \"c\": {c}, \"i\": {i}}}\n")
                                .as_bytes(),
                        );
                        i += 1;
                    }
                    if s.write_all(&batch).is_err() {
                        break;
                    }
                    sent += 100;
                    progress.fetch_add(100, std::sync::atomic::Ordering::Relaxed);
                }
                sent
            })
        })
        .collect();
    // The stop comes while the four clients are in full flow.
    wait_until("20 000 events sent", || {
        progress.load(std::sync::atomic::Ordering::Relaxed) >= 20_000
    });
    let (_dir, v) = stop_agent(a);
    stop_flag.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent: u64 = senders.into_iter().map(|t| t.join().unwrap()).sum();
    assert_complete(&v);
    let m = lines(&v, "metric", None)[0];
    let accepted = m["ingest_events_accepted"].as_u64().unwrap();
    let dropped = m["ingest_events_dropped"].as_u64().unwrap();
    let recorded = lines(&v, "event", Some("app.Load")).len() as u64;
    assert!(recorded > 1000, "{recorded} recorded");
    assert_eq!(recorded, accepted, "every accepted event is in the JSONL");
    assert!(accepted + dropped <= sent);
}

#[test]
fn socket_file_rules() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    // A stale socket file (no one listening) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let a = start_agent_at("s.stale", dir.path(), &sock);
    // A live one is not taken: the second agent says so and listens on a
    // path of its own; its command runs.
    let out = run(tal()
        .args(["record", "--session-id", "s.other", "--socket"])
        .arg(&sock)
        .arg("--out")
        .arg(dir.path())
        .args(["--", "sh", "-c", "test -S \"$TAL_SOCKET\" && echo ran"]));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{e}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ran");
    assert!(
        e.contains("another tal agent is listening") && e.contains("instead (TAL_SOCKET)"),
        "{e}"
    );
    stop_agent(a);
    // A path that is not a socket is left alone; the command runs.
    std::fs::write(&sock, b"precious").unwrap();
    let out = run(tal()
        .args(["record", "--socket"])
        .arg(&sock)
        .arg("--out")
        .arg(dir.path())
        .args(["--", "echo", "ran"]));
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ran");
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists and is not a socket"));
    assert_eq!(std::fs::read(&sock).unwrap(), b"precious");
}

fn start_agent_at(session: &str, out: &Path, socket: &Path) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let child = tal()
        .args(["record", "--session-id", session, "--node-id", "n", "--out"])
        .arg(out)
        .arg("--socket")
        .arg(socket)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while UnixStream::connect(socket).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(10));
    }
    Agent {
        child,
        dir,
        socket: socket.to_path_buf(),
    }
}

#[test]
fn subscribers_see_events_as_they_are_handled() {
    let a = start_agent("s.sub");
    let mut sub = tal()
        .args([
            "subscribe",
            "--type",
            "app.Sub",
            "--type",
            "TaskFailed",
            "--socket",
        ])
        .arg(&a.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Registered once it says so on stderr.
    let mut err = BufReader::new(sub.stderr.take().unwrap());
    let mut said = String::new();
    err.read_line(&mut said).unwrap();
    assert_eq!(
        said.trim(),
        "tal subscribe: subscribed to app.Sub, TaskFailed"
    );
    // Every line the subscriber prints, as it comes.
    let stdout = sub.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let _ = tx.send(serde_json::from_str::<Value>(&l.unwrap()).unwrap());
        }
    });
    let mut payload = Vec::new();
    for i in 0..10 {
        payload
            .extend_from_slice(format!("{{\"event_type\": \"app.Sub\", \"i\": {i}}}\n").as_bytes());
        payload.extend_from_slice(b"{\"event_type\": \"app.Other\"}\n");
    }
    payload.extend_from_slice(
        b"{\"event_type\": \"TaskFailed\", \"task_id\": \"x\", \"error_type\": \"exit:1\"}\n",
    );
    assert!(send_and_collect(&a.socket, &payload).is_empty());
    // The dispatcher hands them over with its next batch.
    let mut got = Vec::new();
    while got.len() < 11 {
        got.push(
            rx.recv_timeout(Duration::from_secs(60))
                .expect("the subscriber's 11 lines"),
        );
    }
    let (_dir, v) = stop_agent(a);
    let st = wait_output(sub, Duration::from_secs(20));
    assert!(st.status.success(), "the subscriber ends with the agent");
    reader.join().unwrap();
    // Nothing else came (the session's own events are of other types).
    got.extend(rx.try_iter());
    assert_eq!(
        got.iter().filter(|l| l["event_type"] == "app.Sub").count(),
        10
    );
    // app.Other lines are filtered out (and nothing else of the session's
    // events is of a subscribed type).
    assert_eq!(
        got.iter()
            .filter(|l| l["event_type"] == "TaskFailed")
            .count(),
        1
    );
    assert_eq!(got.len(), 11, "only the subscribed types");
    assert!(got
        .iter()
        .all(|l| l["section"] == "event" && l["trace_id"].is_string()));
    assert_eq!(lines(&v, "event", Some("app.Other")).len(), 10);
}

#[test]
fn a_subscriber_that_never_reads_loses_events_and_is_told() {
    let a = start_agent("s.slow");
    let mut stuck = subscribe_raw(&a.socket, "null");
    // Far more than the agent holds for its subscribers (its 4 MiB feed,
    // and 16,384 lines in the ring to the listener).
    let mut payload = Vec::new();
    for i in 0..80_000 {
        payload.extend_from_slice(
            format!(
                "{{\"event_type\": \"app.Flood\", \"i\": {i}, \"pad\": \"{}\"}}\n",
                "x".repeat(100)
            )
            .as_bytes(),
        );
    }
    assert!(send_and_collect(&a.socket, &payload).is_empty());
    // The dispatcher has handled them all once they are in the log.
    let log = agent_log(&a.socket);
    wait_until("the flood in the log", || {
        tal::log::LogReader::open(&log).map_or(0, |r| r.count()) >= 80_000
    });
    // The agent is not held up: pings answer while the subscriber is stuck.
    let r = send_and_collect(&a.socket, b"{\"op\": \"ping\"}\n");
    assert_eq!(r[0]["ok"], true);
    // The subscriber wakes up and reads everything until the agent ends.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stuck
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let _ = std::io::Read::read_to_string(&mut stuck, &mut text);
        text
    });
    let (_dir, v) = stop_agent(a);
    assert_eq!(
        lines(&v, "event", Some("app.Flood")).len(),
        80_000,
        "the log loses nothing"
    );
    let m = lines(&v, "metric", None)[0];
    assert!(m["subscriber_events_dropped"].as_u64().unwrap() > 0, "{m}");
    let text = reader.join().unwrap();
    let dropped: u64 = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|l| l["dropped"].as_u64())
        .sum();
    assert!(dropped > 0, "the subscriber was never told it lost events");
    let received = text.lines().filter(|l| l.contains("app.Flood")).count() as u64;
    assert!(
        received + dropped >= 80_000,
        "{received} received + {dropped} dropped"
    );
}

#[test]
fn a_subscriber_that_half_closes_still_gets_lines_and_one_that_leaves_is_forgotten() {
    let a = start_agent("s.half");
    // Subscribes, then closes its sending side: it still wants the feed.
    let half = subscribe_raw(&a.socket, r#"["app.H"]"#);
    half.shutdown(std::net::Shutdown::Write).unwrap();
    // Subscribes, then goes away entirely.
    drop(subscribe_raw(&a.socket, "null"));
    assert!(send_and_collect(&a.socket, b"{\"event_type\": \"app.H\"}\n").is_empty());
    half.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut feed = BufReader::new(half);
    let mut line = String::new();
    feed.read_line(&mut line).unwrap();
    assert!(line.contains("\"app.H\""), "{line}");
    let (_dir, v) = stop_agent(a);
    assert_eq!(lines(&v, "event", Some("app.H")).len(), 1);
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut feed, &mut rest);
    assert!(!rest.contains("\"app.H\""), "{rest}");
}

/// A peer that sends pings and never reads the answers is not read any
/// further once a few MiB of answers wait for it: it cannot make the agent
/// buffer without bound, and the agent goes on serving everyone else.
#[test]
fn a_client_that_never_reads_its_answers_is_paused_not_buffered() {
    let a = start_agent("s.noread");
    let mut s = UnixStream::connect(&a.socket).unwrap();
    s.set_nonblocking(true).unwrap();
    let chunk = b"{\"op\": \"ping\"}\n".repeat(4096);
    // 50 MB of pings would be 500 MB of answers.
    let total = 50usize << 20;
    let mut written = 0usize;
    let mut stalled = 0;
    // Written until the agent stops taking them (no progress for 3 s: a
    // stall, which is what the test wants to see) or until all were taken.
    while written < total && stalled < 300 {
        let at = written % chunk.len();
        match s.write(&chunk[at..]) {
            Ok(n) => {
                written += n;
                stalled = 0;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                stalled += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        written < total / 10,
        "the agent read {written} bytes of pings whose answers nobody reads"
    );
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", a.child.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(rss_kib < 100 << 10, "the agent holds {rss_kib} KiB");
    // Everyone else is served.
    let r = send_and_collect(&a.socket, b"{\"op\": \"ping\"}\n");
    assert_eq!(r[0]["ok"], true);
    drop(s);
    let (_dir, v) = stop_agent(a);
    assert_complete(&v);
}

/// Out of file descriptors (a low `ulimit -n` and many clients), the agent
/// turns new clients away with an error line instead of spinning its
/// accept loop on the CPU the job shares, counts them, and serves again
/// once clients leave.
#[test]
fn out_of_descriptors_the_agent_turns_clients_away_without_spinning() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fd.sock");
    let mut cmd = tal();
    cmd.args(["record", "--session-id", "s.fd", "--node-id", "n", "--out"])
        .arg(dir.path())
        .arg("--socket")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: (a test) setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 48,
                rlim_max: 48,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let start = std::time::Instant::now();
    while UnixStream::connect(&socket).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(10));
    }
    let a = Agent {
        child,
        dir,
        socket: socket.clone(),
    };
    // More clients than the agent has descriptors; each sends a ping, so
    // the ones it serves answer and the ones it turns away say why.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..80 {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(b"{\"op\": \"ping\"}\n");
        let mut line = String::new();
        let _ = BufReader::new(s.try_clone().unwrap()).read_line(&mut line);
        if line.contains("no file descriptors left") {
            refused += 1;
        } else {
            assert!(line.contains("\"ok\""), "{line}");
        }
        held.push(s);
    }
    assert!(refused > 0, "no client was turned away");
    // While they are held, the agent idles: its CPU over a second is far
    // from the whole second a spinning accept loop takes.
    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    };
    let pid = a.child.id();
    let before = cpu(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu(pid) - before;
    assert!(used < 0.5, "the agent used {used} s of CPU in 1 s");
    drop(held);
    // Served again once clients left.
    let replies = send_and_collect(
        &socket,
        b"{\"event_type\": \"TaskCreated\", \"task_id\": \"after\"}\n",
    );
    assert!(replies.is_empty(), "{replies:?}");
    let (_dir, v) = stop_agent(a);
    assert_eq!(lines(&v, "event", Some("TaskCreated")).len(), 1);
    let m = lines(&v, "metric", None)[0];
    assert_eq!(m["ingest_clients_refused"].as_u64(), Some(refused), "{m}");
}

/// `tal record` of `sh -c 'echo $TAL_SOCKET; tal emit app.Hello'`, with
/// `TMPDIR` set to `tmp` and `env` on top: the command's output, tal's
/// stderr, and the JSONL's lines.
fn record_in_tmp(tmp: &Path, session: &str, env: &[(&str, &str)]) -> (String, String, Vec<Value>) {
    let out_dir = tmp.join(format!("out.{session}"));
    let mut cmd = tal();
    cmd.args(["record", "--session-id", session, "--node-id", "n", "--out"])
        .arg(&out_dir)
        .env("TMPDIR", tmp)
        .env("TAL", env!("CARGO_BIN_EXE_tal"))
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("TAL_SOCKET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(cmd.args([
        "--",
        "sh",
        "-c",
        "echo $TAL_SOCKET; \"$TAL\" emit app.Hello && test -S \"$TAL_SOCKET\"",
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let socket = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (socket, stderr, read_jsonl_in(&out_dir))
}

/// The default socket lives in a directory of the user's own (0700), so
/// another user cannot take the path first.
#[test]
fn the_default_socket_is_in_a_private_directory() {
    let tmp = tempfile::tempdir().unwrap();
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let dir = tmp.path().join(format!("tal-{uid}"));
    let (socket, _, v) = record_in_tmp(tmp.path(), "s.priv", &[]);
    assert_eq!(Path::new(&socket).parent(), Some(dir.as_path()));
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(lines(&v, "event", Some("app.Hello")).len(), 1);
}

/// Another user who makes `tal-<uid>` first (open to all, or a link to a
/// directory of theirs) cannot stop the job: tal listens in a new private
/// directory of its own instead, says so, exports it as TAL_SOCKET, and
/// the command runs and is recorded. Nothing is made in the planted
/// directory, and tal's own directory is gone at the end.
#[test]
fn a_planted_socket_directory_does_not_stop_the_job() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    for planted in ["open", "link"] {
        let tmp = tempfile::tempdir().unwrap();
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o777)).unwrap();
        let dir = tmp.path().join(format!("tal-{uid}"));
        match planted {
            "open" => {
                std::fs::create_dir(&dir).unwrap();
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            }
            _ => std::os::unix::fs::symlink(&theirs, &dir).unwrap(),
        }
        let (socket, stderr, v) = record_in_tmp(tmp.path(), "s.planted", &[]);
        assert!(
            stderr.contains("is not a private directory of yours"),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("listening on {socket} instead")),
            "{stderr}"
        );
        let fallback = Path::new(&socket).parent().unwrap();
        let name = fallback.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&format!("tal-{uid}-")), "{socket}");
        assert_eq!(fallback.parent(), Some(tmp.path()));
        assert!(!fallback.exists(), "{} left behind", fallback.display());
        assert_eq!(lines(&v, "event", Some("app.Hello")).len(), 1, "{planted}");
        assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 0, "{planted}");
    }
}

/// A login node's `XDG_RUNTIME_DIR`, exported into a job where it does not
/// exist, does not stop the job either: tal uses `tal-<uid>` in TMPDIR.
#[test]
fn a_missing_xdg_runtime_dir_does_not_stop_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let xdg = tmp.path().join("run/user/12345");
    let (socket, stderr, v) = record_in_tmp(
        tmp.path(),
        "s.xdg",
        &[("XDG_RUNTIME_DIR", xdg.to_str().unwrap())],
    );
    assert_eq!(
        Path::new(&socket).parent(),
        Some(tmp.path().join(format!("tal-{uid}")).as_path()),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("cannot listen on {}", xdg.display())),
        "{stderr}"
    );
    assert_eq!(lines(&v, "event", Some("app.Hello")).len(), 1);
}

/// Under Slurm, a job's steps find their node's agent by the job's ids
/// (no TAL_SOCKET): also when the agent had to listen in a directory of
/// its own because another user planted `tal-<uid>`. A planted
/// `tal-<uid>-*` directory with a socket of the same name is not taken.
#[test]
fn job_steps_find_an_agent_that_had_to_listen_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let planted = tmp.path().join(format!("tal-{uid}"));
    std::fs::create_dir(&planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();
    // A decoy that looks like one of tal's fallback directories, open to
    // all, holding a socket of the job's name nobody serves.
    let decoy = tmp.path().join(format!("tal-{uid}-zzzzzz"));
    std::fs::create_dir(&decoy).unwrap();
    std::fs::set_permissions(&decoy, std::fs::Permissions::from_mode(0o777)).unwrap();
    let _decoy = std::os::unix::net::UnixListener::bind(decoy.join("tal.slurm.4242.nodeA.sock"));
    let out_dir = tmp.path().join("out");
    let slurm = |cmd: &mut std::process::Command| {
        cmd.env("TMPDIR", tmp.path())
            .env("SLURM_JOB_ID", "4242")
            .env("SLURMD_NODENAME", "nodeA")
            .env_remove("SLURM_ARRAY_JOB_ID")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("TAL_SOCKET");
    };
    let mut rec = tal();
    rec.args(["record", "--interval", "0.1", "--out"])
        .arg(&out_dir);
    slurm(&mut rec);
    let agent = rec
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut wait = tal();
    wait.args(["wait", "--timeout", "20s"]);
    slurm(&mut wait);
    run_ok(&mut wait);
    let mut emit = tal();
    emit.args(["emit", "app.FromStep"]);
    slurm(&mut emit);
    run_ok(&mut emit);
    let mut stop = tal();
    stop.arg("stop");
    slurm(&mut stop);
    run_ok(&mut stop);
    let out = wait_output(agent, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("instead (TAL_SOCKET)"), "{stderr}");
    let v = read_jsonl_in(&out_dir);
    assert_eq!(lines(&v, "event", Some("app.FromStep")).len(), 1);
}

/// A client talks only to an agent of its own user (or root): a socket
/// another user serves at the path gets nothing, and the client says why.
#[test]
fn clients_refuse_a_socket_another_user_serves() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to serve a socket as another user");
        return;
    }
    let dir = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = dir.path().join("impostor.sock");
    let got = dir.path().join("got");
    // An impostor as uid 65534 (nobody): listens, and writes down whatever
    // a client sends.
    let mut imp = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import os, socket, sys\n\
             os.setgid(65534); os.setuid(65534)\n\
             s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8)\n\
             print('up', flush=True)\n\
             while True:\n\
             \x20   c, _ = s.accept(); data = c.recv(65536)\n\
             \x20   open(sys.argv[2], 'ab').write(data); c.close()\n",
        )
        .arg(&path)
        .arg(&got)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(imp.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    /// Stops the impostor whatever happens.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let imp = Reap(imp);
    assert_eq!(line.trim(), "up");
    for args in [
        vec![
            "emit",
            "TaskCreated",
            "--task-id",
            "secret.task",
            "--attr",
            "executable=/secret",
        ],
        vec!["stop"],
        vec!["wait"],
        vec!["subscribe"],
    ] {
        let out = run(tal().args(&args).arg("--socket").arg(&path));
        let stderr = String::from_utf8_lossy(&out.stderr);
        // `tal emit` never fails a workflow over telemetry (without
        // --strict): it says why and exits 0; the others fail.
        assert_eq!(
            out.status.success(),
            args[0] == "emit",
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains("is served by uid 65534, not by you"),
            "{args:?}: {stderr}"
        );
    }
    // tal run runs its command all the same, and tells the impostor nothing.
    let out = run(tal()
        .args(["run", "--task-id", "secret.run", "--socket"])
        .arg(&path)
        .args(["--", "true"]));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is served by uid 65534"));
    drop(imp);
    // It saw connections (the uid check needs one), and not a byte.
    let seen = std::fs::read(&got).unwrap_or_default();
    assert!(
        seen.is_empty(),
        "the impostor received: {}",
        String::from_utf8_lossy(&seen)
    );
}

/// At most 64 subscribers at once: a further one is refused with an error
/// line (and counted), so idle subscribers cannot grow the agent's memory
/// without bound; the others get their lines.
#[test]
fn subscribers_are_bounded_in_number() {
    let a = start_agent("s.subs");
    let (mut refused, mut served) = (0, Vec::new());
    for _ in 0..70 {
        let mut s = UnixStream::connect(&a.socket).unwrap();
        // Answered either way: taken, or refused.
        s.write_all(b"{\"op\": \"subscribe\", \"types\": [\"TaskCreated\"]}\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line.contains("too many subscribers") {
            refused += 1;
        } else {
            assert_eq!(
                line.trim(),
                r#"{"ok": true, "subscribed": ["TaskCreated"]}"#
            );
            served.push(r);
        }
    }
    assert_eq!((served.len(), refused), (64, 6));
    let replies = send_and_collect(
        &a.socket,
        b"{\"event_type\": \"TaskCreated\", \"task_id\": \"x\"}\n",
    );
    assert!(replies.is_empty());
    for r in &mut served {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"task_id\": \"x\""), "{line}");
    }
    drop(served);
    let (_dir, v) = stop_agent(a);
    let m = lines(&v, "metric", None)[0];
    assert_eq!(m["ingest_lines_rejected"], 6);
}

/// A subscriber that does nothing but read gets every line, however fast a
/// client floods the agent: lines are dropped only for a reader that falls
/// behind by more than the agent buffers, not because one drain of the
/// dispatcher's is larger than a buffer (it was: 1 MiB per drain, so a
/// reader that kept up lost two thirds of a 10,000 events/s feed).
#[test]
fn a_subscriber_that_keeps_up_gets_every_line_of_a_flood() {
    const N: usize = 20_000;
    let a = start_agent("s.flood");
    let mut feed = subscribe_raw(&a.socket, r#"["app.Flood"]"#);
    // Reads as fast as it can, until it has every line or is told of a loss.
    let reader = std::thread::spawn(move || {
        let (mut got, mut dropped, mut partial) = (0usize, 0u64, Vec::new());
        let mut buf = vec![0u8; 1 << 16];
        while got < N && dropped == 0 {
            let n = match std::io::Read::read(&mut feed, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            partial.extend_from_slice(&buf[..n]);
            let end = partial
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            for l in partial[..end]
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
            {
                let v: Value = serde_json::from_slice(l).unwrap();
                match v["dropped"].as_u64() {
                    Some(d) => dropped += d,
                    None => got += usize::from(v["event_type"] == "app.Flood"),
                }
            }
            partial.drain(..end);
        }
        (got, dropped)
    });
    // ~460-byte lines in the feed, sent as fast as the socket takes them.
    let pad = "p".repeat(300);
    let mut payload = Vec::new();
    for i in 0..N {
        payload.extend_from_slice(
            format!("{{\"event_type\": \"app.Flood\", \"i\": {i}, \"pad\": \"{pad}\"}}\n")
                .as_bytes(),
        );
    }
    assert!(send_and_collect(&a.socket, &payload).is_empty());
    let (got, dropped) = reader.join().unwrap();
    let (_dir, v) = stop_agent(a);
    assert_eq!(lines(&v, "event", Some("app.Flood")).len(), N);
    assert_eq!(
        (got, dropped),
        (N, 0),
        "lines received, and announced as dropped"
    );
    let m = lines(&v, "metric", None)[0];
    assert_eq!(m["subscriber_events_dropped"], 0, "{m}");
}

/// A subscription must name event types: `[]` once subscribed to every
/// type and unknown names were acknowledged, then never matched. Both are
/// refused with the reason, and the connection is not a subscriber; `tal
/// subscribe` with no `--type` still gets every event.
#[test]
fn a_subscription_to_no_type_or_to_unknown_types_is_refused() {
    let a = start_agent("s.types");
    let mut s = UnixStream::connect(&a.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(
        b"{\"op\": \"subscribe\", \"types\": []}\n\
          {\"op\": \"subscribe\", \"types\": [\"TaskFailed\", \"TaskFialed\", \"Checkpoint\"]}\n\
          {\"op\": \"ping\"}\n",
    )
    .unwrap();
    let mut answers = BufReader::new(s);
    let r: Vec<Value> = (0..3)
        .map(|_| {
            let mut l = String::new();
            answers.read_line(&mut l).unwrap();
            serde_json::from_str(&l).unwrap()
        })
        .collect();
    drop(answers);
    let e0 = r[0]["error"].as_str().unwrap_or_else(|| panic!("{r:?}"));
    assert!(
        e0.contains("types is empty") && e0.contains("leave types out"),
        "{e0}"
    );
    let e1 = r[1]["error"].as_str().unwrap_or_else(|| panic!("{r:?}"));
    assert!(
        e1.contains(r#"unknown event type "TaskFialed", "Checkpoint""#),
        "{e1}"
    );
    assert_eq!(r[2]["ok"], true);
    // Every type: `tal subscribe` leaves the list out.
    let mut sub = tal()
        .args(["subscribe", "--socket"])
        .arg(&a.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(sub.stderr.take().unwrap());
    let mut said = String::new();
    err.read_line(&mut said).unwrap();
    assert_eq!(said.trim(), "tal subscribe: subscribed to every event type");
    assert!(send_and_collect(&a.socket, b"{\"event_type\": \"app.Any\"}\n").is_empty());
    let mut out = BufReader::new(sub.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("app.Any") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the feed ended early"
        );
    }
    let (_dir, v) = stop_agent(a);
    assert!(sub.wait().unwrap().success());
    let m = lines(&v, "metric", None)[0];
    assert_eq!(m["ingest_lines_rejected"], 2, "{m}");
}

/// Every error line a client is sent is counted in `ingest_lines_rejected`:
/// a client floods the agent past a full log (each line refused: "the
/// agent's log is full") and goes on while the recording ends. Lines
/// refused after the session's final counters were taken were once
/// answered but never counted (hundreds while the session was converted);
/// now the agent stops reading at the end, and the client's write fails.
#[test]
fn every_error_reply_is_counted_after_the_disk_filled_and_as_the_recording_ends() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    // A 3 MB file-size limit: the log fills up like a full disk.
    let agent = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 3000 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_tal"))
        .args(["record", "--interval", "0.1", "--session-id", "s.full"])
        .args(["--node-id", "n", "--socket"])
        .arg(&socket)
        .arg("--out")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&socket);
    let log = agent_log(&socket);
    let mut s = UnixStream::connect(&socket).unwrap();
    let mut answers = BufReader::new(s.try_clone().unwrap());
    let counter = std::thread::spawn(move || {
        let (mut errors, mut line) = (Vec::new(), String::new());
        while answers.read_line(&mut line).unwrap_or(0) > 0 {
            let v: Value = serde_json::from_str(&line).unwrap();
            errors.push(v["error"].as_str().unwrap().to_string());
            line.clear();
        }
        errors
    });
    let chunk = format!(
        "{{\"event_type\": \"app.Fill\", \"pad\": \"{}\"}}\n",
        "x".repeat(400)
    )
    .repeat(100);
    let (mut written, mut stopper) = (0usize, None);
    let start = std::time::Instant::now();
    // Until the agent takes no more (a broken pipe), stopping it once the
    // log is well past full.
    while s.write_all(chunk.as_bytes()).is_ok() && start.elapsed() < Duration::from_secs(60) {
        written += chunk.len();
        if written > 8 << 20 && stopper.is_none() {
            let sock = socket.clone();
            stopper = Some(std::thread::spawn(move || {
                run(tal().arg("stop").arg("--socket").arg(sock))
            }));
        }
    }
    drop(s);
    let errors = counter.join().unwrap();
    stopper.expect("the agent never took 8 MB").join().unwrap();
    let out = wait_output(agent, Duration::from_secs(30));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("File too large"),
        "the log never filled"
    );
    assert!(errors.iter().any(|e| e.contains("the agent's log is full")));
    let jsonl = dir.path().join("all.jsonl");
    run_ok(tal().arg("convert").arg(&log).arg("-o").arg(&jsonl));
    let v = read_jsonl(&jsonl);
    let m = lines(&v, "metric", None)[0];
    assert_eq!(
        m["ingest_lines_rejected"].as_u64(),
        Some(errors.len() as u64),
        "error lines sent; {} of them 'the recording has ended'",
        errors.iter().filter(|e| e.contains("has ended")).count()
    );
}
