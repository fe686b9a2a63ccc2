//! tal's Python package (`python/tal_telemetry`): its socket client and its
//! RHAPSODY bridge against a real `tal record`, driven by
//! tests/python/client_check.py in the venv of `scripts/setup-python.sh`
//! (RHAPSODY's own event classes feed the bridge). An agent that answers,
//! one that is stopped (SIGSTOP) while they send, none at all, and one that
//! finishes while they send: no exception escapes either, and every event
//! either is in the agent's JSONL or is counted as dropped.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// `tal record` with its socket at `dir/s.sock` and its output in
/// `dir/out`, once it answers.
fn agent(dir: &Path, session: &str) -> (Child, PathBuf) {
    let sock = dir.join("s.sock");
    let child = tal()
        .args(["record", "--interval", "0.1", "--session-id", session])
        .args(["--node-id", "n", "--socket"])
        .arg(&sock)
        .arg("--out")
        .arg(dir.join("out"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&sock);
    run_ok(tal().arg("wait").arg("--socket").arg(&sock));
    (child, sock)
}

/// Runs the check script's `case`; returns its report and its stderr.
fn check(case: &str, sock: &Path, extra: &[String]) -> (Value, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run(Command::new(python())
        .arg(root.join("tests/python/client_check.py"))
        .arg(case)
        .arg(sock)
        .args(extra)
        .env("PYTHONPATH", root.join("python"))
        .env_remove("TAL_SOCKET"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{case}: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{case}: no report ({e}): {stdout}\n{stderr}"));
    (report, stderr)
}

fn count(v: &[Value], ty: &str, prefix: &str) -> u64 {
    lines(v, "event", Some(ty))
        .iter()
        .filter(|l| l["task_id"].as_str().is_some_and(|t| t.starts_with(prefix)))
        .count() as u64
}

fn n(r: &Value, who: &str, k: &str) -> u64 {
    r[who][k]
        .as_u64()
        .unwrap_or_else(|| panic!("{who}.{k} in {r}"))
}

#[test]
fn the_client_and_the_bridge_record_through_a_real_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (child, sock) = agent(dir.path(), "py.ok");
    let (r, _) = check("agent", &sock, &[]);
    let _ = wait_output(child, std::time::Duration::from_secs(60));
    let v = read_jsonl_in(&dir.path().join("out"));
    assert_complete(&v);

    assert_eq!(r["flushed"], true, "{r}");
    assert_eq!(n(&r, "client", "dropped"), 0, "{r}");
    assert_eq!(n(&r, "bridge", "dropped"), 0, "{r}");
    // The one line the agent refused is counted, with its reason.
    assert_eq!(n(&r, "client", "refused"), 1, "{r}");
    assert!(
        r["client"]["refusals"][0]
            .as_str()
            .unwrap()
            .contains("unknown event_type 'NotAType'"),
        "{r}"
    );
    assert_eq!(n(&r, "bridge", "refused"), 0, "{r}");
    // Everything sent and not refused is in the JSONL.
    let tasks = |p| count(&v, "TaskStarted", p) + count(&v, "TaskCompleted", p);
    let steps = lines(&v, "event", Some("app.Step")).len() as u64;
    // Two tasks reported by `with client.task(...)`: four lines.
    assert_eq!(tasks("c") + steps + 4 + 1, n(&r, "client", "sent"));
    let one = |ty, id| {
        let l = lines(&v, "event", Some(ty));
        let l: Vec<&&Value> = l.iter().filter(|l| l["task_id"] == id).collect();
        assert_eq!(l.len(), 1, "{ty} {id}");
        (*l[0]).clone()
    };
    one("TaskStarted", "k-ok");
    one("TaskCompleted", "k-ok");
    assert!(one("TaskStarted", "k-ok")["attributes"]["pid"].is_u64());
    one("TaskStarted", "k-bad");
    assert_eq!(one("TaskFailed", "k-bad")["error_type"], "ValueError");
    assert_eq!(tasks("b"), n(&r, "bridge", "sent"));
    let step = lines(&v, "event", Some("app.Step"))[0];
    assert_eq!(
        (step["step"].clone(), step["loss"].clone()),
        (7.into(), 0.5.into())
    );
    // The bridge keeps RHAPSODY's durations.
    for l in lines(&v, "event", Some("TaskCompleted")) {
        if l["task_id"].as_str().unwrap().starts_with('b') {
            assert_eq!(l["duration_seconds"], 0.25, "{l}");
        }
    }
    // The subscription saw every accepted event of its types.
    assert_eq!(r["subscribed"], tasks("c") + tasks("b") + 3 + steps, "{r}");
    assert_eq!(r["sub_dropped"], 0);
    // stop's answer names the files.
    assert!(
        Path::new(r["stop"]["jsonl"].as_str().unwrap()).exists(),
        "{r}"
    );
}

#[test]
fn a_full_agent_costs_events_that_are_counted_never_an_exception() {
    let dir = tempfile::tempdir().unwrap();
    let (child, sock) = agent(dir.path(), "py.full");
    let (r, stderr) = check("full", &sock, &[child.id().to_string()]);
    run_ok(tal().arg("stop").arg("--socket").arg(&sock));
    let _ = wait_output(child, std::time::Duration::from_secs(60));
    let v = read_jsonl_in(&dir.path().join("out"));

    // While the agent was stopped nothing answered, and both dropped.
    assert_eq!(r["flushed_while_stopped"], false, "{r}");
    assert_eq!(r["flushed"], true, "{r}");
    for (who, prefix, attempted) in [
        ("client", "c", "attempted_client"),
        ("bridge", "b", "attempted_bridge"),
    ] {
        let (sent, dropped) = (n(&r, who, "sent"), n(&r, who, "dropped"));
        assert!(dropped > 0, "{who}: {r}");
        assert_eq!(sent + dropped, r[attempted].as_u64().unwrap(), "{who}: {r}");
        // Every line it did not drop reached the agent.
        assert_eq!(count(&v, "TaskStarted", prefix), sent, "{who}: {r}");
    }
    assert!(stderr.contains("tal_bridge: "), "{stderr}");
    assert!(stderr.contains(" dropped"), "{stderr}");
}

#[test]
fn without_an_agent_everything_is_dropped_and_counted_and_requests_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let (r, stderr) = check("absent", &sock, &[]);
    for who in ["client", "bridge"] {
        assert_eq!(
            (n(&r, who, "sent"), n(&r, who, "dropped")),
            (0, 10),
            "{who}: {r}"
        );
    }
    assert_eq!(
        (r["flushed"].clone(), r["connected"].clone()),
        (false.into(), false.into())
    );
    assert_eq!(r["ping"], Value::Null);
    // The blocking requests raise TalError, saying where they looked.
    let raised: Vec<&str> = r["raised"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_str().unwrap())
        .collect();
    assert_eq!(raised, ["stop", "wait", "subscribe"], "{r}");
    for e in r["raised"].as_array().unwrap() {
        assert!(
            e[1].as_str().unwrap().contains(sock.to_str().unwrap()),
            "{e}"
        );
    }
    // One warning each, not one per event.
    assert_eq!(stderr.matches("no tal agent at").count(), 2, "{stderr}");
}

#[test]
fn an_agent_that_finishes_while_they_send_is_noticed_and_what_follows_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (child, sock) = agent(dir.path(), "py.gone");
    let (r, stderr) = check("gone", &sock, &[]);
    let _ = wait_output(child, std::time::Duration::from_secs(60));
    let v = read_jsonl_in(&dir.path().join("out"));
    assert_eq!(r["flushed"], true, "{r}");
    for (who, prefix) in [("client", "c"), ("bridge", "b")] {
        let (sent, dropped) = (n(&r, who, "sent"), n(&r, who, "dropped"));
        assert_eq!(count(&v, "TaskStarted", prefix), 5, "{who}");
        assert_eq!(sent + dropped, 25, "{who}: {r}");
        // A line the kernel took before the connection closed is lost
        // unseen; every later one is counted.
        assert!(dropped >= 19, "{who}: {r}");
    }
    assert!(stderr.contains("lost the agent at"), "{stderr}");
}

/// In a Slurm job, `tal record` runs as a step of its own: the job's
/// Python processes are not its children and have no `TAL_SOCKET`. The
/// client finds the job's agent on its node as `tal emit` does. Here
/// another user made `tal-<uid>` first (anyone may write it), so the agent
/// listens in a private directory of its own making (`tal-<uid>-<random>`);
/// a socket of the same name, newer, in another `tal-<uid>-*` that anyone
/// may write, is not taken.
#[test]
fn in_a_slurm_job_the_client_finds_the_jobs_agent_on_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let uid = String::from_utf8(run_ok(Command::new("id").arg("-u")).stdout).unwrap();
    let taken = tmp.join(format!("tal-{}", uid.trim()));
    use std::os::unix::fs::PermissionsExt;
    let open_to_all = || std::fs::Permissions::from_mode(0o777);
    std::fs::create_dir(&taken).unwrap();
    std::fs::set_permissions(&taken, open_to_all()).unwrap();
    let name = "tal.slurm.4242.nodeA.sock";
    let child = tal()
        .args(["record", "--interval", "0.1", "--session-id", "slurm.4242"])
        .args(["--node-id", "nodeA", "--out"])
        .arg(dir.path().join("out"))
        .env("TMPDIR", &tmp)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("TAL_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut own = None;
    wait_until("the agent's socket", || {
        own = std::fs::read_dir(&tmp)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path().join(name))
            .find(|p| p.exists());
        own.is_some()
    });
    let own = own.unwrap();
    assert_ne!(own.parent(), Some(taken.as_path()));
    run_ok(tal().arg("wait").arg("--socket").arg(&own));
    let decoy = PathBuf::from(format!("{}-zzz", taken.display()));
    std::fs::create_dir(&decoy).unwrap();
    std::fs::set_permissions(&decoy, open_to_all()).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(decoy.join(name)).unwrap();

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run(Command::new(python())
        .arg(root.join("tests/python/client_check.py"))
        .args(["slurm", "-"])
        .env("PYTHONPATH", root.join("python"))
        .env("TMPDIR", &tmp)
        .env("SLURM_JOB_ID", "4242")
        .env("SLURMD_NODENAME", "nodeA")
        .env_remove("SLURM_ARRAY_JOB_ID")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("TAL_SOCKET"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let r: Value = serde_json::from_slice(out.stdout.trim_ascii_end()).unwrap();
    assert_eq!(r["socket"], own.to_str().unwrap(), "{r}");
    let sent = (n(&r, "client", "sent"), n(&r, "client", "dropped"));
    assert_eq!(sent, (2, 0), "{r}");
    assert_eq!(r["stop"]["ok"], true, "{r}");
    let status = wait_output(child, std::time::Duration::from_secs(30)).status;
    assert!(status.success(), "{status}");
    let v = read_jsonl_in(&dir.path().join("out"));
    assert_eq!(count(&v, "TaskCompleted", "slurm-task"), 1);
}
