//! Per-task resource series (`tal.TaskResourceUpdate`): what each task's
//! processes used, sample by sample, against workloads whose use is known:
//! a busy CPU, a sleep, a 500 MB allocation, children and grandchildren,
//! tasks too short for one sample, tasks side by side on one node, and a
//! task whose pid a runtime sends. Then what the converters make of them
//! (the terminal event's and span's peaks and means, OTLP gauges with
//! `task.id`, the report's panel), and bad input.
//!
//! The tests run one at a time: CPU percentages are what a process got,
//! and two busy tests at once on a 2-core machine would share the cores.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records session `session` around the shell script `script` (which
/// finds the agent through `TAL_SOCKET`, as `tal record` exports it),
/// sampling tasks every `task_interval`; the session's JSONL lines.
fn record(dir: &Path, session: &str, task_interval: &str, script: &str) -> Vec<Value> {
    run_ok(
        tal()
            .args([
                "record",
                "--interval",
                "0.1",
                "--task-interval",
                task_interval,
            ])
            .args(["--session-id", session, "--node-id", "n1", "--out"])
            .arg(dir)
            .args(["--", "sh", "-c", script]),
    );
    read_jsonl_in(dir)
}

/// The `tal.TaskResourceUpdate` lines of `task`.
fn samples<'a>(v: &'a [Value], task: &str) -> Vec<&'a Value> {
    lines(v, "event", Some("tal.TaskResourceUpdate"))
        .into_iter()
        .filter(|l| l["task_id"] == task)
        .collect()
}

/// The terminal event of `task`.
fn terminal<'a>(v: &'a [Value], task: &str) -> &'a Value {
    lines(v, "event", None)
        .into_iter()
        .find(|l| {
            l["task_id"] == task
                && matches!(
                    l["event_type"].as_str(),
                    Some("TaskCompleted" | "TaskFailed" | "TaskCanceled")
                )
        })
        .unwrap_or_else(|| panic!("no terminal event of {task}"))
}

/// The span of `task`.
fn span<'a>(v: &'a [Value], task: &str) -> &'a Value {
    lines(v, "span", None)
        .into_iter()
        .find(|l| l["attributes"]["task_id"] == task)
        .unwrap_or_else(|| panic!("no span of {task}"))
}

fn tal_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tal")
}

/// Samples of `task` whose whole interval lies within [from, to] seconds
/// of its TaskStarted.
fn inside<'a>(v: &'a [Value], task: &str, from: f64, to: f64) -> Vec<&'a Value> {
    let started = lines(v, "event", Some("TaskStarted"))
        .into_iter()
        .find(|l| l["task_id"] == task)
        .unwrap()["event_time"]
        .as_f64()
        .unwrap();
    samples(v, task)
        .into_iter()
        .filter(|s| {
            let end = s["event_time"].as_f64().unwrap() - started;
            let begin = end - s["interval_seconds"].as_f64().unwrap();
            begin >= from && end <= to
        })
        .collect()
}

/// Two tasks at once for `secs` seconds, sampled every 0.25 s: `busy`
/// keeps one CPU busy, `idle` sleeps.
fn busy_beside_idle(
    dir: &Path,
    session: &str,
    secs: &str,
    (busy, idle): (&str, &str),
) -> Vec<Value> {
    let tal = tal_bin();
    record(
        dir,
        session,
        "0.25s",
        &format!(
            "{tal} run --task-id {busy} -- timeout {secs} sh -c 'while :; do :; done' & \
             {tal} run --task-id {idle} -- sleep {secs} & wait"
        ),
    )
}

#[test]
fn a_busy_task_shows_one_cpu_and_a_sleeping_one_none_side_by_side() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let v = busy_beside_idle(dir.path(), "tr.cpu", "2", ("busy", "idle"));
    assert_complete(&v);
    // Samples wholly inside the busy loop's 2 s (leaving its start-up):
    // one CPU, ±10.
    let busy = inside(&v, "busy", 0.1, 1.95);
    assert!(busy.len() >= 4, "{} samples inside the loop", busy.len());
    for s in &busy {
        let c = s["cpu_percent"].as_f64().unwrap();
        assert!((90.0..=110.0).contains(&c), "busy at {c} %: {s}");
        // A shell's loop runs in user space: the split says so.
        let user = s["cpu_user_percent"].as_f64().unwrap();
        assert!(user >= 80.0 && user <= c + 0.01, "user {user} of {c}: {s}");
        assert_eq!(s["node_id"], "n1");
        assert!(s["processes"].as_u64().unwrap() >= 2, "timeout and its sh");
        assert!(s["rss_bytes"].as_u64().unwrap() > 0);
        assert!(s["threads"].as_u64().unwrap() >= 2);
    }
    // The sleeping task next to it on the same node: its own, near zero.
    let idle = samples(&v, "idle");
    assert!(idle.len() >= 4, "{}", idle.len());
    for s in &idle {
        let c = s["cpu_percent"].as_f64().unwrap();
        assert!(c < 5.0, "idle at {c} %: {s}");
        assert_eq!(s["processes"], 1);
    }
    // Peaks and means on the terminal event and the span.
    for t in [
        &terminal(&v, "busy")["attributes"],
        &span(&v, "busy")["attributes"],
    ] {
        let peak = t["cpu_percent_peak"].as_f64().unwrap();
        let mean = t["cpu_percent_mean"].as_f64().unwrap();
        assert!((90.0..=115.0).contains(&peak), "{peak}");
        assert!(mean > 60.0 && mean <= peak, "{mean}");
        assert_eq!(
            t["resource_samples"].as_u64().unwrap() as usize,
            samples(&v, "busy").len()
        );
    }
    assert!(
        terminal(&v, "idle")["attributes"]["cpu_percent_peak"]
            .as_f64()
            .unwrap()
            < 5.0
    );
}

#[test]
fn system_time_and_the_threads_of_an_idle_many_threaded_process_show() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let tal = tal_bin();
    // `cat /dev/zero` spends its time in the kernel (copying zeros); the
    // Python process holds 8 threads that sleep: it is not read again
    // after its start-up (its CPU clock stands still), and its values
    // stand.
    let v = record(
        dir.path(),
        "tr.sys",
        "0.25s",
        &format!(
            "{tal} run --task-id kernel -- timeout 2 sh -c 'cat /dev/zero > /dev/null' & \
             {tal} run --task-id threads -- python3 -c 'import threading, time; \
             [threading.Thread(target=time.sleep, args=(2.5,)).start() for _ in range(7)]; time.sleep(2.5)' & wait"
        ),
    );
    assert_complete(&v);
    let kernel = inside(&v, "kernel", 0.2, 1.9);
    assert!(kernel.len() >= 3, "{}", kernel.len());
    for s in &kernel {
        let c = s["cpu_percent"].as_f64().unwrap();
        let sys = s["cpu_system_percent"].as_f64().unwrap();
        let user = s["cpu_user_percent"].as_f64().unwrap();
        assert!((90.0..=110.0).contains(&c), "{c}: {s}");
        assert!(sys >= 70.0 && user < 30.0, "system {sys}, user {user}: {s}");
        assert!((user + sys - c).abs() <= 0.2, "{s}"); // each rounded to 0.1
    }
    let threads = inside(&v, "threads", 0.6, 2.4);
    assert!(threads.len() >= 3, "{}", threads.len());
    for s in &threads {
        assert_eq!(s["threads"], 8, "{s}");
        assert!(s["cpu_percent"].as_f64().unwrap() < 5.0, "{s}");
        assert!(s["rss_bytes"].as_u64().unwrap() > 1 << 20, "{s}");
    }
}

#[test]
fn threads_that_start_and_end_in_a_busy_process_are_counted() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let tal = tal_bin();
    // The main thread computes for 3 s (so the process is read every
    // round); 7 threads live from its second 1.0 to 2.0. Their ends make
    // no pid: the count must still come down.
    let v = record(
        dir.path(),
        "tr.threads",
        "0.25s",
        &format!(
            "{tal} run --task-id churn -- python3 -c 'import threading, time\n\
             t0 = time.monotonic()\n\
             def spin(t):\n    while time.monotonic() < t0 + t: pass\n\
             spin(1.0)\n\
             ts = [threading.Thread(target=time.sleep, args=(1.0,)) for _ in range(7)]\n\
             [t.start() for t in ts]\n\
             spin(2.0)\n\
             [t.join() for t in ts]\n\
             spin(3.0)'"
        ),
    );
    assert_complete(&v);
    for (from, to, want) in [(0.35, 0.95, 1), (1.35, 1.9, 8), (2.4, 2.95, 1)] {
        let s = inside(&v, "churn", from, to);
        assert!(!s.is_empty(), "no sample within {from}–{to} s");
        for s in s {
            assert_eq!(s["threads"], want, "{from}–{to} s: {s}");
            assert!(s["cpu_percent"].as_f64().unwrap() > 50.0, "{s}");
        }
    }
}

#[test]
fn a_task_that_allocates_500_mb_shows_its_rss_step() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let v = record(
        dir.path(),
        "tr.mem",
        "0.25s",
        &format!(
            "{} run --task-id alloc -- python3 -c 'import time; time.sleep(1); b = bytearray(500 << 20); time.sleep(1.5)'",
            tal_bin()
        ),
    );
    let before = inside(&v, "alloc", 0.2, 0.9);
    let after = inside(&v, "alloc", 1.3, 2.4);
    assert!(!before.is_empty() && !after.is_empty());
    for s in &before {
        assert!(s["rss_bytes"].as_u64().unwrap() < 100 << 20, "{s}");
    }
    for s in &after {
        assert!(s["rss_bytes"].as_u64().unwrap() >= 500 << 20, "{s}");
    }
    let t = &terminal(&v, "alloc")["attributes"];
    assert!(t["rss_bytes_peak"].as_u64().unwrap() >= 500 << 20);
    let mean = t["rss_bytes_mean"].as_u64().unwrap();
    assert!(mean > 100 << 20 && mean < t["rss_bytes_peak"].as_u64().unwrap());
}

#[test]
fn children_and_grandchildren_count_with_their_task() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    // The busy loop is a grandchild (sh → sh → timeout → sh); two sleeps
    // beside it.
    let v = record(
        dir.path(),
        "tr.kids",
        "0.25s",
        &format!(
            "{} run --task-id tree -- sh -c '(timeout 2 sh -c \"while :; do :; done\") & sleep 2 & sleep 2 & wait'",
            tal_bin()
        ),
    );
    let mid = inside(&v, "tree", 0.3, 1.9);
    assert!(mid.len() >= 3, "{}", mid.len());
    for s in &mid {
        let c = s["cpu_percent"].as_f64().unwrap();
        assert!(
            (90.0..=110.0).contains(&c),
            "the grandchild's CPU: {c}: {s}"
        );
        assert!(s["processes"].as_u64().unwrap() >= 5, "every process: {s}");
    }
    assert!(
        terminal(&v, "tree")["attributes"]["processes_peak"]
            .as_u64()
            .unwrap()
            >= 5
    );
}

#[test]
fn a_task_shorter_than_an_interval_keeps_everything_its_end_carries() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let tal = tal_bin();
    let v = record(
        dir.path(),
        "tr.short",
        "1s",
        &format!(
            "{tal} run --task-id quick -- sh -c 'dd if=/dev/zero of=/dev/null bs=8M count=4 status=none'; \
             {tal} run --task-id later -- sleep 1.6"
        ),
    );
    assert!(samples(&v, "quick").is_empty());
    // What `tal run` measured is all there, and no sampled figure is made up.
    let t = terminal(&v, "quick");
    assert_eq!(t["event_type"], "TaskCompleted");
    assert!(t["attributes"]["max_rss_bytes"].as_u64().unwrap() >= 8 << 20);
    assert!(t["attributes"]["cpu_user_seconds"].is_number());
    assert!(t["attributes"].get("cpu_percent_peak").is_none(), "{t}");
    assert!(span(&v, "quick")["attributes"]
        .get("resource_samples")
        .is_none());
    // A task that ends between two samples: its samples stop at its end.
    let later = samples(&v, "later");
    assert!(!later.is_empty());
    let end = terminal(&v, "later")["event_time"].as_f64().unwrap();
    assert!(later
        .iter()
        .all(|s| s["event_time"].as_f64().unwrap() <= end));
    assert_eq!(
        terminal(&v, "later")["attributes"]["resource_samples"]
            .as_u64()
            .unwrap() as usize,
        later.len()
    );
}

/// Sends `lines` to the agent at `sock`, one per line, then a ping, and
/// returns the replies.
fn send(sock: &Path, lines: &[String]) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    for l in lines {
        s.write_all(l.as_bytes()).unwrap();
        s.write_all(b"\n").unwrap();
    }
    s.write_all(b"{\"op\": \"ping\"}\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut r = String::new();
    for l in BufReader::new(s).lines() {
        r.push_str(&l.unwrap());
        r.push('\n');
    }
    r
}

#[test]
fn a_pid_a_runtime_sends_is_sampled_until_the_task_ends_and_bad_ones_are_refused() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let agent = tal()
        .args(["record", "--interval", "0.1", "--task-interval", "0.2s"])
        .args(["--session-id", "tr.rt", "--node-id", "n1", "--socket"])
        .arg(&sock)
        .arg("--out")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&sock);
    // The runtime's worker process, outliving the task it runs.
    let mut worker = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = worker.id();
    let ev = |ty: &str, task: &str, attrs: &str| {
        format!(r#"{{"event_type": "{ty}", "task_id": "{task}", "attributes": {{{attrs}}}}}"#)
    };
    let replies = send(
        &sock,
        &[
            // The fast path's form, and the general parser's (an extra
            // top-level field).
            ev("TaskStarted", "rt.1", &format!(r#""pid": {pid}"#)),
            format!(
                r#"{{"event_type": "TaskStarted", "task_id": "rt.2", "attributes": {{"pid": {pid}}}, "note": "x"}}"#
            ),
            // Bad pids: none of these is sampled, and nothing breaks.
            ev("TaskStarted", "bad.gone", r#""pid": 4000000"#),
            ev("TaskStarted", "bad.zero", r#""pid": 0"#),
            ev("TaskStarted", "bad.neg", r#""pid": -5"#),
            ev("TaskStarted", "bad.text", r#""pid": "12""#),
            ev("TaskStarted", "bad.float", r#""pid": 1.5"#),
            ev("TaskStarted", "bad.huge", r#""pid": 99999999999999999999"#),
            // A live pid, but an id too long to hold.
            ev(
                "TaskStarted",
                &"long".repeat(200),
                &format!(r#""pid": {}"#, std::process::id()),
            ),
        ],
    );
    assert!(replies.contains("\"ok\": true"), "{replies}");
    // A second of the task (five task intervals), its end, then more time
    // in which its process lives on.
    std::thread::sleep(Duration::from_millis(1000));
    send(&sock, &[ev("TaskCompleted", "rt.1", "")]);
    std::thread::sleep(Duration::from_millis(700));
    signal(&agent, libc::SIGTERM);
    let out = wait_output(agent, Duration::from_secs(20));
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(out.status.success());
    let v = read_jsonl_in(dir.path());
    let rt1 = samples(&v, "rt.1");
    assert!(rt1.len() >= 2, "{}", rt1.len());
    assert!(rt1.iter().all(|s| s["processes"] == 1));
    // Sampling stopped at the task's end, though its process lives on.
    let end = terminal(&v, "rt.1")["event_time"].as_f64().unwrap();
    assert!(
        rt1.iter()
            .all(|s| s["event_time"].as_f64().unwrap() <= end + 0.05),
        "samples after the end"
    );
    // The second task named the same process: one task owns a process.
    assert!(samples(&v, "rt.2").is_empty());
    for bad in [
        "bad.gone",
        "bad.zero",
        "bad.neg",
        "bad.text",
        "bad.float",
        "bad.huge",
    ] {
        assert!(samples(&v, bad).is_empty(), "{bad}");
    }
    let m = lines(&v, "metric", None).last().copied().unwrap();
    assert!(samples(&v, &"long".repeat(200)).is_empty());
    assert_eq!(
        m["task_tasks_refused"], 3,
        "bad.gone, rt.2 and the long id: {m}"
    );
    assert_eq!(m["task_samples_dropped"], 0);
}

#[test]
fn no_task_sampling_when_off_and_the_interval_is_checked() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let v = record(
        dir.path(),
        "tr.off",
        "off",
        &format!("{} run --task-id t -- sleep 1.2", tal_bin()),
    );
    assert!(lines(&v, "event", Some("tal.TaskResourceUpdate")).is_empty());
    assert!(terminal(&v, "t")["attributes"]
        .get("cpu_percent_peak")
        .is_none());
    // Faster than the node's own interval, or not a duration: refused, and
    // said how.
    for (bad, says) in [
        ("50ms", "at most as often as the node"),
        ("soon", "invalid --task-interval"),
    ] {
        let out = run(tal()
            .args([
                "record",
                "--interval",
                "0.1",
                "--task-interval",
                bad,
                "--out",
            ])
            .arg(dir.path())
            .args(["--", "true"]));
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn otlp_chrome_trace_and_report_carry_the_task_series() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let v = busy_beside_idle(dir.path(), "tr.views", "1.2", ("a", "b"));
    let jsonl = files_with_ext(dir.path(), ".telemetry.jsonl").remove(0);
    // OTLP: gauges with the task's id.
    let prefix = dir.path().join("export");
    run_ok(
        tal()
            .arg("convert")
            .arg(&jsonl)
            .args(["--format", "otlp-json", "-o"])
            .arg(&prefix),
    );
    let metrics_file = dir.path().join("export.metrics.json");
    let metrics: Value = serde_json::from_slice(&std::fs::read(metrics_file).unwrap()).unwrap();
    let mut points = std::collections::BTreeMap::<String, usize>::new();
    for rm in metrics["resourceMetrics"].as_array().unwrap() {
        for sm in rm["scopeMetrics"].as_array().unwrap() {
            for m in sm["metrics"].as_array().unwrap() {
                if m["name"] != "task_cpu_utilization" {
                    continue;
                }
                for p in m["gauge"]["dataPoints"].as_array().unwrap() {
                    let task = p["attributes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|a| a["key"] == "task.id")
                        .unwrap()["value"]["stringValue"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    *points.entry(task).or_default() += 1;
                }
            }
        }
    }
    for task in ["a", "b"] {
        assert_eq!(
            points.get(task).copied(),
            Some(samples(&v, task).len()),
            "{task}"
        );
    }
    // The Chrome trace: counter tracks, not one instant per sample.
    let trace = dir.path().join("t.trace.json");
    let out = run(tal()
        .arg("convert")
        .arg(&jsonl)
        .args(["--format", "chrome-trace", "-o"])
        .arg(&trace));
    assert_eq!(out.status.code(), Some(0));
    let t: Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let evs = t["traceEvents"].as_array().unwrap();
    assert!(evs
        .iter()
        .any(|e| e["ph"] == "C" && e["name"] == "task a cpu_percent"));
    assert!(!evs
        .iter()
        .any(|e| e["ph"] == "i" && e["name"] == "tal.TaskResourceUpdate"));
    // The report: the panel with one series per sampled task, and the
    // table's peaks.
    let page = dir.path().join("r.html");
    let out = run(tal().arg("report").arg(&jsonl).arg("-o").arg(&page));
    assert_eq!(out.status.code(), Some(0));
    let data = report_data(&std::fs::read_to_string(&page).unwrap());
    assert_eq!(data["task_series"].as_array().unwrap().len(), 2);
    assert_eq!(data["sampled_tasks"], 2);
    let charts = assert_renders(&page, 4);
    assert_panels_match(&charts, &v);
}

/// `tal record` under the limits of open files `ulimit` sets, around
/// `script` (it must exit 0): the session's JSONL lines.
fn record_limited(dir: &Path, ulimit: &str, script: &str) -> Vec<Value> {
    run_ok(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit {ulimit} && exec \"$0\" \"$@\""))
            .arg(tal_bin())
            .args(["record", "--interval", "0.1", "--task-interval", "0.2s"])
            .args(["--session-id", "tr.fds", "--node-id", "n1", "--out"])
            .arg(dir)
            .args(["--", "sh", "-c", script]),
    );
    read_jsonl_in(dir)
}

#[test]
fn the_sampler_takes_at_most_half_the_descriptors_and_the_command_keeps_its_limit() {
    let _one = serial();
    // A hard limit of 400 open files: the sampler may hold (400 - 256) / 2
    // descriptors, 18 processes of four files. A task of 31 processes
    // gets 18 sampled, the rest counted as refused, and the agent's log,
    // clients and conversion keep the other half. (The loop's list is
    // written out: a `$(seq 30)` is a short-lived child that may take a
    // slot and leave it after the others were refused.)
    let dir = tempfile::tempdir().unwrap();
    let list = (1..=30)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let v = record_limited(
        dir.path(),
        "-n 400",
        &format!(
            "{} run --task-id wide -- sh -c 'for i in {list}; do sleep 1.5 & done; wait'",
            tal_bin()
        ),
    );
    assert_complete(&v);
    let wide = samples(&v, "wide");
    assert!(!wide.is_empty());
    assert!(wide.iter().all(|s| s["processes"].as_u64().unwrap() <= 18));
    assert_eq!(terminal(&v, "wide")["attributes"]["processes_peak"], 18);
    let m = lines(&v, "metric", None).last().copied().unwrap();
    assert!(m["task_processes_refused"].as_u64().unwrap() >= 13, "{m}");

    // A soft limit under the hard one: the agent raises its own to the
    // hard one, and the command it runs gets the one it was started with.
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let hard: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4)?.parse().ok())
        .unwrap_or(0);
    if hard <= 512 {
        eprintln!("hard limit of open files {hard}: the raise is not checked");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let said = dir.path().join("limits");
    record_limited(
        dir.path(),
        "-Sn 512",
        &format!(
            "ulimit -Sn > {0}; grep 'Max open files' /proc/$PPID/limits >> {0}",
            said.display()
        ),
    );
    let said = std::fs::read_to_string(said).unwrap();
    let mut l = said.lines();
    assert_eq!(l.next(), Some("512"), "{said}");
    let agent: Vec<&str> = l.next().unwrap().split_whitespace().collect();
    assert_eq!(
        agent[3], agent[4],
        "the agent's soft and hard limits: {said}"
    );
    assert_eq!(agent[4], hard.min(1 << 20).to_string(), "{said}");
}

/// A worker pool: task `first` runs in worker W1, then 4,100 tasks that
/// never end name worker W2 (one is sampled, the rest refused: W2 is
/// taken). `first` completes, and `later` runs in W1. The listener's memory
/// of which tasks it told the sampler about stays bounded, but it never
/// forgets a task the sampler holds: `first` is not sampled after its end,
/// and W1 is free again for `later`.
#[test]
fn a_task_end_is_not_forgotten_after_thousands_of_open_tasks() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let agent = tal()
        .args(["record", "--interval", "0.1", "--task-interval", "0.1s"])
        .args(["--session-id", "tr.pool", "--node-id", "n1", "--socket"])
        .arg(&sock)
        .arg("--out")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&sock);
    let mut w1 = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let mut w2 = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let started = |task: &str, pid: u32| {
        format!(
            r#"{{"event_type": "TaskStarted", "task_id": "{task}", "attributes": {{"pid": {pid}}}}}"#
        )
    };
    send(&sock, &[started("first", w1.id())]);
    // In slices, each answered (so handled) before the next, so that the
    // sampler keeps up with its ring: no start or end is lost to it here.
    let open: Vec<String> = (0..4100)
        .map(|i| started(&format!("w2.{i}"), w2.id()))
        .collect();
    for slice in open.chunks(256) {
        send(&sock, slice);
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    send(
        &sock,
        &[r#"{"event_type": "TaskCompleted", "task_id": "first"}"#.to_string()],
    );
    std::thread::sleep(Duration::from_millis(300));
    send(&sock, &[started("later", w1.id())]);
    std::thread::sleep(Duration::from_millis(1000));
    signal(&agent, libc::SIGTERM);
    let out = wait_output(agent, Duration::from_secs(20));
    for w in [&mut w1, &mut w2] {
        let _ = w.kill();
        let _ = w.wait();
    }
    assert!(out.status.success());
    let v = read_jsonl_in(dir.path());
    let end = terminal(&v, "first")["event_time"].as_f64().unwrap();
    let after: Vec<f64> = samples(&v, "first")
        .iter()
        .map(|s| s["event_time"].as_f64().unwrap())
        .filter(|&t| t > end + 0.05)
        .collect();
    assert!(
        after.is_empty(),
        "{} samples of first after its end",
        after.len()
    );
    assert!(
        samples(&v, "later").len() >= 3,
        "later: {}",
        samples(&v, "later").len()
    );
    let m = lines(&v, "metric", None).last().copied().unwrap();
    assert_eq!(m["task_watches_dropped"], 0, "{m}");
}
