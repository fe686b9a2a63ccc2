//! tal under a real Slurm: a one-node cluster on localhost (munge,
//! slurmctld, slurmd from Debian's packages) that `scripts/slurm-up.sh`
//! brings up (idempotently; `scripts/test.sh` stops it afterwards with
//! `scripts/slurm-down.sh`), and a four-node one beside it
//! (`slurm-up.sh --nodes 4`: four slurmd, each in its own network and UTS
//! namespace). Jobs go through real `sbatch`, steps through
//! real `srun`, and the agent is stopped the ways Slurm stops steps
//! (SLURM-NOTES.md): gracefully with `tal stop`, by `scancel` (SIGTERM,
//! SIGKILL after KillWait=5 s), by `scancel JOB.STEP` (SIGKILL at once) and
//! by the time limit.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The cluster's slurm.conf (brought up once per test binary).
fn cluster() -> &'static Path {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| slurm_up(&[], None))
}

/// The four-node cluster's slurm.conf: four slurmd in network namespaces
/// (`scripts/slurm-up.sh --nodes 4`, in its own directory).
fn cluster4() -> &'static Path {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| slurm_up(&["--nodes", "4"], Some("/tmp/tal-slurm-4")))
}

fn slurm_up(args: &[&str], dir: Option<&str>) -> PathBuf {
    {
        let mut cmd = Command::new("bash");
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-up.sh"))
            .args(args);
        if let Some(d) = dir {
            cmd.env("TAL_SLURM_DIR", d);
        }
        let out = cmd.output().expect("run scripts/slurm-up.sh");
        assert!(
            out.status.success(),
            "scripts/slurm-up.sh failed (it needs root and Debian's packages): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    }
}

fn slurm(cmd: &str) -> Command {
    let mut c = Command::new(cmd);
    c.env("SLURM_CONF", cluster());
    c
}

/// Submits `body` as a batch job (1 task, 1 CPU) from `dir`; its job id.
fn sbatch(dir: &Path, body: &str, extra: &[&str]) -> String {
    let script = dir.join("job.sh");
    std::fs::write(&script, format!("#!/bin/sh\nset -u\n{body}\n")).unwrap();
    let out = slurm("sbatch")
        .args(["--parsable", "-n1", "-c1", "-J", "tal-test"])
        .arg("-o")
        .arg(dir.join("job.out"))
        .args(extra)
        .arg(&script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// Waits until the job has left the queue.
fn wait_gone(job: &str, limit: Duration) {
    wait_gone_on(cluster(), job, limit)
}

/// [`wait_gone`] on the cluster of `conf`.
fn wait_gone_on(conf: &Path, job: &str, limit: Duration) {
    let t0 = Instant::now();
    loop {
        let out = Command::new("squeue")
            .env("SLURM_CONF", conf)
            .args(["-h", "-j", job])
            .output()
            .unwrap();
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        assert!(
            t0.elapsed() < limit,
            "job {job} still queued after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for a file to appear (the agent's socket).
fn wait_path(p: &Path, limit: Duration) {
    let t0 = Instant::now();
    while !p.exists() {
        assert!(t0.elapsed() < limit, "{} did not appear", p.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the agent's log in `out` holds `n` samples.
fn wait_samples(out: &Path, n: usize) {
    wait_until(&format!("{n} samples in the agent's log"), || {
        files_with_ext(out, ".tal")
            .first()
            .is_some_and(|log| samples_in_log(log) >= n)
    });
}

fn job_out(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("job.out")).unwrap_or_default()
}

/// The lines of the JSONL the agent wrote into `out`.
fn agent_jsonl(out: &Path) -> Vec<Value> {
    let files = files_with_ext(out, ".telemetry.jsonl");
    assert_eq!(files.len(), 1, "{files:?}");
    read_jsonl(&files[0])
}

/// The agent step of a job: `tal record` under `srun --overlap`, with its
/// socket in the test's directory, started in the background.
fn agent_step(dir: &Path) -> String {
    let tal = env!("CARGO_BIN_EXE_tal");
    format!(
        "export TAL_SOCKET={d}/agent.sock\n\
         srun -N1 -n1 --overlap --ntasks-per-node=1 -c1 {tal} record --interval 0.1 --out {d}/out --socket {d}/agent.sock --gpus none &\n\
         while [ ! -S {d}/agent.sock ]; do sleep 0.05; done",
        d = dir.display()
    )
}

fn per_node(v: &[Value]) -> usize {
    lines(v, "event", Some("ResourceUpdate"))
        .iter()
        .filter(|l| l["resource_scope"] == "per_node")
        .count()
}

#[test]
fn a_batch_job_with_a_per_node_agent_and_tasks_stops_gracefully() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let d = dir.path();
    let tal = env!("CARGO_BIN_EXE_tal");
    let job = sbatch(
        d,
        &format!(
            "{agent}\n\
             srun --overlap -n1 {tal} run --task-id step.work -- sh -c 'sleep 0.5'\n\
             {tal} run --task-id t.ok -- sleep 0.3\n\
             {tal} run --task-id t.fail -- sh -c 'exit 3' || true\n\
             srun --overlap --ntasks-per-node=1 {tal} stop\n\
             wait\n\
             {tal} convert {d}/out/*.tal -o {d}/merged.telemetry.jsonl",
            agent = agent_step(d),
            d = d.display()
        ),
        &[],
    );
    wait_gone(&job, Duration::from_secs(240));
    let v = agent_jsonl(&d.join("out"));
    assert_complete(&v);
    let merged = read_jsonl(&d.join("merged.telemetry.jsonl"));
    assert_eq!(merged.len(), v.len(), "{}", job_out(d));

    // Job identity.
    let started = lines(&v, "event", Some("SessionStarted"))[0];
    assert_eq!(started["session_id"], format!("slurm.{job}"));
    let m = lines(&v, "metric", None).last().copied().unwrap();
    let attrs = &m["tal_logs"][0]["attributes"];
    assert_eq!(attrs["slurm.job_id"], job.as_str());
    assert_eq!(
        attrs["slurm.step_id"], "0",
        "the agent is the job's first step"
    );
    assert_eq!(attrs["slurm.cluster"], "tal");
    assert!(attrs["slurm.nodelist"].is_string());
    let node = m["tal_logs"][0]["node_id"].as_str().unwrap().to_string();
    assert!(!node.is_empty());

    // The tasks, with their outcomes.
    let term = |id: &str| {
        lines(&v, "event", None)
            .into_iter()
            .find(|l| {
                l["task_id"] == id
                    && matches!(
                        l["event_type"].as_str(),
                        Some("TaskCompleted" | "TaskFailed" | "TaskCanceled")
                    )
            })
            .unwrap_or_else(|| panic!("no terminal event for {id}: {}", job_out(d)))
            .clone()
    };
    assert_eq!(term("step.work")["event_type"], "TaskCompleted");
    assert_eq!(term("t.ok")["event_type"], "TaskCompleted");
    assert_eq!(term("t.fail")["event_type"], "TaskFailed");
    assert_eq!(term("t.fail")["error_type"], "exit:3");
    assert_eq!(m["tasks_completed"], 2);
    assert_eq!(m["tasks_failed"], 1);

    // A resource series covering the job: one sample per 0.1 s.
    let s0 = started["event_time"].as_f64().unwrap();
    let ended = lines(&v, "event", Some("SessionEnded"))[0];
    let secs = ended["event_time"].as_f64().unwrap() - s0;
    assert!(secs > 0.5, "{secs}");
    let n = per_node(&v);
    assert!(n as f64 >= secs / 0.1 * 0.8, "{n} samples over {secs} s");
    assert_eq!(m["agent_samples_dropped"], 0);
}

#[test]
fn scancel_of_the_job_lets_the_agent_finalise_within_killwait() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let d = dir.path();
    let job = sbatch(d, &format!("{}\nsleep 120\nwait", agent_step(d)), &[]);
    wait_path(&d.join("agent.sock"), Duration::from_secs(180));
    wait_samples(&d.join("out"), 5);
    let t0 = Instant::now();
    let out = slurm("scancel").arg(&job).output().unwrap();
    assert!(out.status.success());
    wait_gone(&job, Duration::from_secs(60));
    // KillWait is 5 s: the agent must be done well before SIGKILL.
    assert!(t0.elapsed() < Duration::from_secs(30));
    let v = agent_jsonl(&d.join("out"));
    assert_complete(&v);
    assert!(per_node(&v) >= 5);
    let ended = lines(&v, "event", Some("SessionEnded"))[0];
    assert_eq!(ended["attributes"], serde_json::json!({}), "a clean end");
}

#[test]
fn scancel_of_the_agents_step_sigkills_it_and_convert_recovers_the_log() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let d = dir.path();
    let job = sbatch(d, &format!("{}\nsleep 120\nwait", agent_step(d)), &[]);
    wait_path(&d.join("agent.sock"), Duration::from_secs(180));
    // A few of the dispatcher's batches are in the log.
    wait_samples(&d.join("out"), 10);
    let out = slurm("scancel").arg(format!("{job}.0")).output().unwrap();
    assert!(out.status.success());
    // The step goes at once (SIGKILL); then end the job.
    wait_until("the agent's step to end", || {
        let out = slurm("squeue")
            .args(["-h", "-s", "-o", "%i", "-j", &job])
            .output()
            .unwrap();
        !String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == format!("{job}.0"))
    });
    let _ = slurm("scancel").arg(&job).output();
    wait_gone(&job, Duration::from_secs(60));
    assert!(
        files_with_ext(&d.join("out"), ".telemetry.jsonl").is_empty(),
        "a SIGKILLed agent writes no JSONL"
    );
    let log = files_with_ext(&d.join("out"), ".tal")[0].clone();
    let conv = run(tal()
        .arg("convert")
        .arg(&log)
        .arg("-o")
        .arg(d.join("r.jsonl")));
    assert_eq!(conv.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&conv.stderr);
    assert!(stderr.contains("no end marker"), "{stderr}");
    let v = read_jsonl(&d.join("r.jsonl"));
    assert_complete(&v);
    // Every batch before the kill made it.
    assert!(per_node(&v) >= 10, "{} samples recovered", per_node(&v));
    let ended = lines(&v, "event", Some("SessionEnded"))[0];
    assert_eq!(ended["attributes"]["recovered"], true);
}

#[test]
fn a_time_limit_kill_is_like_scancel() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let d = dir.path();
    // Slurm's time limits are whole minutes, checked about twice a minute:
    // this job ends after 60–90 s.
    let job = sbatch(
        d,
        &format!("{}\nsleep 300\nwait", agent_step(d)),
        &["--time=1"],
    );
    wait_gone(&job, Duration::from_secs(400));
    let v = agent_jsonl(&d.join("out"));
    assert_complete(&v);
    let ended = lines(&v, "event", Some("SessionEnded"))[0];
    assert_eq!(ended["attributes"], serde_json::json!({}), "a clean end");
    assert!(per_node(&v) >= 300, "a minute of samples: {}", per_node(&v));
}

/// Runs one of the `slurm/` templates through sbatch with stand-in
/// programs in the submit directory; returns the directory.
fn template(name: &str, extra: &[&str]) -> tempfile::TempDir {
    template_on(cluster(), name, extra)
}

/// Submits the template `name` to the cluster of `conf`.
fn template_on(conf: &Path, name: &str, extra: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let d = dir.path();
    let prog = |n: &str, body: &str| {
        let p = d.join(n);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    };
    prog("my_program", "sleep 0.5");
    prog("prepare.sh", "sleep 0.2");
    prog("simulate", "sleep 0.3; [ \"$2\" != 3 ]");
    prog("analyse.sh", "true");
    prog("solver", "sleep 0.4");
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("slurm")
        .join(name);
    let out = Command::new("sbatch")
        .env("SLURM_CONF", conf)
        .args(["--parsable", "-o"])
        .arg(d.join("job.out"))
        .args(extra)
        .arg(&src)
        .current_dir(d)
        .env("TAL", env!("CARGO_BIN_EXE_tal"))
        .env("OUT", d.join("out"))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = String::from_utf8(out.stdout).unwrap().trim().to_string();
    wait_gone_on(conf, &job, Duration::from_secs(300));
    dir
}

fn terminal_states(v: &[Value]) -> std::collections::BTreeMap<String, String> {
    lines(v, "event", None)
        .into_iter()
        .filter(|l| {
            matches!(
                l["event_type"].as_str(),
                Some("TaskCompleted" | "TaskFailed" | "TaskCanceled")
            )
        })
        .map(|l| {
            (
                l["task_id"].as_str().unwrap().to_string(),
                l["event_type"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_single_node_and_multi_node_templates_stop_gracefully_and_merge() {
    let d = template("single-node.sbatch", &[]);
    let v = agent_jsonl(&d.path().join("out"));
    assert_complete(&v);
    assert!(per_node(&v) >= 5, "{}", job_out(d.path()));
    // `tal record --report`: the report beside the JSONL.
    assert_eq!(
        files_with_ext(&d.path().join("out"), ".report.html").len(),
        1,
        "{}",
        job_out(d.path())
    );

    // One node here (one slurmd per machine): the same path, merged.
    let d = template("multi-node.sbatch", &["-N1"]);
    let merged = read_jsonl(&d.path().join("out/job.telemetry.jsonl"));
    assert_complete(&merged);
    let m = lines(&merged, "metric", None).last().copied().unwrap();
    assert_eq!(m["tal_logs"].as_array().unwrap().len(), 1);
    assert_eq!(m["tal_logs"][0]["clean_end"], true, "{}", job_out(d.path()));
    let page = std::fs::read_to_string(d.path().join("out/job.report.html"))
        .unwrap_or_else(|e| panic!("job.report.html: {e}\n{}", job_out(d.path())));
    assert_eq!(report_data(&page)["nodes"].as_array().unwrap().len(), 2);
}

#[test]
fn the_workflow_and_mpi_templates_record_their_tasks() {
    let d = template("workflow.sbatch", &["-n2"]);
    let v = agent_jsonl(&d.path().join("out"));
    assert_complete(&v);
    let t = terminal_states(&v);
    let state = |id: &str| t.get(id).map(String::as_str);
    let why = || format!("states {t:?}; job output:\n{}", job_out(d.path()));
    assert_eq!(state("prepare"), Some("TaskCompleted"), "{}", why());
    assert_eq!(state("sim.1"), Some("TaskCompleted"), "{}", why());
    assert_eq!(state("sim.3"), Some("TaskFailed"), "{}", why());
    assert_eq!(state("analyse"), Some("TaskCompleted"), "{}", why());
    assert_eq!(lines(&v, "event", Some("app.Checkpoint")).len(), 1);

    let d = template("mpi-step.sbatch", &["-N1", "--ntasks-per-node=1"]);
    let merged = read_jsonl(&d.path().join("out/job.telemetry.jsonl"));
    assert_complete(&merged);
    assert_eq!(
        terminal_states(&merged)["mpi.solve"],
        "TaskCompleted",
        "{}",
        job_out(d.path())
    );
}

#[test]
fn the_multi_node_template_on_four_nodes_gives_one_agent_per_node() {
    let d = template_on(cluster4(), "multi-node.sbatch", &["-N4"]);
    let merged = read_jsonl(&d.path().join("out/job.telemetry.jsonl"));
    assert_complete(&merged);
    let m = lines(&merged, "metric", None).last().copied().unwrap();
    let logs = m["tal_logs"].as_array().unwrap();
    let mut nodes: Vec<&str> = logs
        .iter()
        .map(|l| l["node_id"].as_str().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(
        nodes,
        ["taln1", "taln2", "taln3", "taln4"],
        "{}",
        job_out(d.path())
    );
    assert!(logs.iter().all(|l| l["clean_end"] == true), "{m}");
    // Each agent ran on a node with a host name of its own (its UTS
    // namespace), and says its clock anchor.
    for l in logs {
        assert_eq!(l["hostname"], l["node_id"], "{l}");
        assert!(l["start_monotonic_ns"].as_u64().unwrap() > 0, "{l}");
    }
    // Every node's own series, and one session span.
    for n in &nodes {
        let samples = lines(&merged, "event", Some("ResourceUpdate"))
            .iter()
            .filter(|e| e["node_id"] == *n && e["resource_scope"] == "per_node")
            .count();
        assert!(samples >= 3, "{n}: {samples} samples");
    }
    let sessions = lines(&merged, "span", None)
        .into_iter()
        .filter(|s| s["name"] == "session")
        .count();
    assert_eq!(sessions, 1);
    let page = std::fs::read_to_string(d.path().join("out/job.report.html")).unwrap();
    assert_eq!(report_data(&page)["nodes"].as_array().unwrap().len(), 5);
    // `tal stop` on every node left no agent behind (the job's processes
    // are all in this machine's PID namespace).
    let out_dir = d.path().join("out");
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(" record ") && c.contains(out_dir.to_str().unwrap()))
        .collect();
    assert!(left.is_empty(), "agents left: {left:?}");
}

#[test]
fn the_mpi_template_on_four_nodes_runs_its_step_beside_four_agents() {
    let d = template_on(
        cluster4(),
        "mpi-step.sbatch",
        &["-N4", "--ntasks-per-node=1"],
    );
    let merged = read_jsonl(&d.path().join("out/job.telemetry.jsonl"));
    assert_complete(&merged);
    assert_eq!(
        terminal_states(&merged)["mpi.solve"],
        "TaskCompleted",
        "{}",
        job_out(d.path())
    );
    let m = lines(&merged, "metric", None).last().copied().unwrap();
    let logs = m["tal_logs"].as_array().unwrap();
    assert_eq!(logs.len(), 4, "{}", job_out(d.path()));
    assert!(logs.iter().all(|l| l["clean_end"] == true), "{m}");
}
