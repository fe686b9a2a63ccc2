//! tal under a real Slurm: a one-node cluster on localhost (munge,
//! slurmctld, slurmd from Debian's packages) that `scripts/slurm-up.sh`
//! brings up (idempotently; `scripts/test.sh` stops it afterwards with
//! `scripts/slurm-down.sh`), and a four-node one beside it
//! (`slurm-up.sh --nodes 4`: four slurmd, each in its own network and UTS
//! namespace, and cgroups of its own where the machine allows: see
//! slurm/README.md, "The test clusters"). The four-node tests share that
//! cluster; the node-failure test, which kills a node, runs alone. Jobs go
//! through real `sbatch`, steps through
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

/// Says what the Slurm tests are doing on stderr as it happens (the test
/// harness captures only the print macros, not a direct write): each job
/// submitted and finished, so that a slow run shows where it is.
fn progress(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "slurm tests: {msg}");
}

/// Submits `body` as a batch job (1 task, 1 CPU) from `dir`; its job id.
fn sbatch(dir: &Path, body: &str, extra: &[&str]) -> String {
    let mut args = vec!["-n1", "-c1"];
    args.extend_from_slice(extra);
    sbatch_on(cluster(), dir, body, &args)
}

/// Submits `body` as a batch job with the sbatch options `args` to the
/// cluster of `conf`, from `dir`; its job id.
fn sbatch_on(conf: &Path, dir: &Path, body: &str, args: &[&str]) -> String {
    let script = dir.join("job.sh");
    std::fs::write(&script, format!("#!/bin/sh\nset -u\n{body}\n")).unwrap();
    let out = Command::new("sbatch")
        .env("SLURM_CONF", conf)
        .args(["--parsable", "-J", "tal-test"])
        .arg("-o")
        .arg(dir.join("job.out"))
        .args(args)
        .arg(&script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    progress(&format!("job {job} submitted (sbatch {})", args.join(" ")));
    job
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
            progress(&format!(
                "job {job} finished ({:.1} s after the wait began)",
                t0.elapsed().as_secs_f64()
            ));
            return;
        }
        assert!(
            t0.elapsed() < limit,
            "job {job} still queued after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until step `job`.`step` has left the queue of the cluster of
/// `conf`.
fn wait_step_gone_on(conf: &Path, job: &str, step: &str) {
    let id = format!("{job}.{step}");
    wait_until(&format!("step {id} to end"), || {
        let out = Command::new("squeue")
            .env("SLURM_CONF", conf)
            .args(["-h", "-s", "-o", "%i", "-j", job])
            .output()
            .unwrap();
        !String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == id)
    });
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
    wait_step_gone_on(cluster(), &job, "0");
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
    // The job's program: on its third node (of several), a 256 MiB buffer
    // filled once, which that node's job cgroup alone must show.
    prog(
        "my_program",
        "if [ \"${SLURM_NODEID:-0}\" = 2 ]; then hostname >big.host; \
         dd if=/dev/zero of=/dev/null bs=256M count=1 status=none; fi; sleep 0.5",
    );
    prog("prepare.sh", "sleep 0.2");
    // Each simulation says where it ran; part 3 fails.
    prog(
        "simulate",
        "hostname >placed.$2; sleep 0.3; [ \"$2\" != 3 ]",
    );
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
    progress(&format!("job {job} submitted ({name} {})", extra.join(" ")));
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
    let v = read_jsonl(&d.path().join("out/job.telemetry.jsonl"));
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

// --- Four nodes -------------------------------------------------------------

/// The four-node tests share one cluster. The node-failure test kills a
/// node's daemons, so it runs alone (the write side); the others may run
/// together (the read side).
static FOUR_NODES: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn four_nodes() -> std::sync::RwLockReadGuard<'static, ()> {
    FOUR_NODES.read().unwrap_or_else(|e| e.into_inner())
}

/// The four-node cluster's directory (its `cgroups` note, PID files).
const DIR4: &str = "/tmp/tal-slurm-4";
const NODES: [&str; 4] = ["taln1", "taln2", "taln3", "taln4"];

/// Whether the nodes have cgroups of their own (`slurm-up.sh` says in
/// `$D/cgroups`): `Err(why)` where this machine does not allow them.
fn node_cgroups() -> Result<(), String> {
    let s = std::fs::read_to_string(Path::new(DIR4).join("cgroups")).unwrap_or_default();
    match s.trim() {
        "v1" => Ok(()),
        other => Err(other.strip_prefix("none: ").unwrap_or(other).to_string()),
    }
}

/// The last metric line.
fn metric(v: &[Value]) -> &Value {
    lines(v, "metric", None)
        .last()
        .copied()
        .expect("a metric line")
}

/// `tal_logs` by node id.
fn logs_by_node(v: &[Value]) -> std::collections::BTreeMap<String, Value> {
    metric(v)["tal_logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["node_id"].as_str().unwrap().to_string(), l.clone()))
        .collect()
}

/// The per-node samples of `node`.
fn node_samples<'a>(v: &'a [Value], node: &str) -> Vec<&'a Value> {
    lines(v, "event", Some("ResourceUpdate"))
        .into_iter()
        .filter(|e| e["node_id"] == node && e["resource_scope"] == "per_node")
        .collect()
}

/// Each node's number of samples against its agent's own time (from its
/// start to its last record, as `tal_logs` says): an agent samples at its
/// start, once per interval, and once more as it stops, so a log of `d`
/// seconds holds ⌊d / interval⌋ + 2 samples; within one of that.
fn assert_sample_counts(v: &[Value], interval: f64) {
    for (node, l) in logs_by_node(v) {
        let d = l["last_record_time_s"].as_f64().unwrap() - l["start_time_s"].as_f64().unwrap();
        let want = (d / interval).floor() + 2.0;
        let n = node_samples(v, &node).len() as f64;
        assert!(
            (n - want).abs() <= 1.0,
            "{node}: {n} samples over {d:.3} s at {interval} s (expected {want} ± 1)"
        );
    }
}

/// `tal convert` of every log in `out` into one session; its lines and
/// what it said on stderr.
fn merge(out: &Path) -> (Vec<Value>, String) {
    let logs = files_with_ext(out, ".tal");
    let to = out.with_file_name("merged.telemetry.jsonl");
    let conv = run(tal().arg("convert").args(&logs).arg("-o").arg(&to));
    let stderr = String::from_utf8_lossy(&conv.stderr).into_owned();
    assert_eq!(conv.status.code(), Some(0), "{stderr}");
    (read_jsonl(&to), stderr)
}

/// A four-node job (one CPU on each node) whose first step is an agent on
/// every node (step 0, writing into `<dir>/out`), then `tal wait` on each,
/// then `sleep 300`; waits until every node's log holds `samples` samples.
fn agents_on_four_nodes(d: &Path, extra: &[&str], samples: usize) -> String {
    let tal = env!("CARGO_BIN_EXE_tal");
    let per_node = "srun -N4 -n4 --ntasks-per-node=1 --overlap";
    let body = format!(
        "{per_node} {tal} record --interval 0.1 --out {d}/out --gpus none &\n\
         {per_node} {tal} wait --timeout 60s >/dev/null\n\
         sleep 300\n\
         wait",
        d = d.display()
    );
    let mut args = vec!["-N4", "--ntasks-per-node=1", "-c1"];
    args.extend_from_slice(extra);
    let job = sbatch_on(cluster4(), d, &body, &args);
    let out = d.join("out");
    let t0 = Instant::now();
    while !NODES
        .iter()
        .all(|n| samples_in_log(&out.join(format!("slurm.{job}.{n}.tal"))) >= samples)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "job {job}: not every node's log has {samples} samples: {}",
            std::fs::read_to_string(d.join("job.out")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    job
}

/// The step id of job `job`'s agents, as their logs in `out` say
/// (`slurm.step_id`).
fn agents_step(out: &Path, job: &str) -> String {
    let log = out.join(format!("slurm.{job}.taln1.tal"));
    let r = tal::log::LogReader::open(&log).unwrap();
    r.header()
        .attributes
        .iter()
        .find(|(k, _)| k == "slurm.step_id")
        .map(|(_, v)| v.clone())
        .expect("the agent's step id in its log")
}

/// `cmd` on the four-node cluster.
fn slurm4(cmd: &str) -> Command {
    let mut c = Command::new(cmd);
    c.env("SLURM_CONF", cluster4());
    c
}

/// The dataset template: every node's agent writes its own parts when it
/// stops, and the dataset has a Hive partition per node, read here by
/// DuckDB.
#[test]
fn the_dataset_template_on_four_nodes_gives_a_partition_per_node() {
    let _shared = four_nodes();
    let d = template_on(cluster4(), "dataset.sbatch", &["-N4"]);
    let ds = d.path().join("out/job.dataset");
    let q = format!(
        "import duckdb; print(duckdb.sql(\"select node, count(*) from read_parquet('{}/samples/*/*.parquet', hive_partitioning=true) group by node order by node\").fetchall())",
        ds.display()
    );
    let out = Command::new(python()).args(["-c", &q]).output().unwrap();
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in NODES {
        assert!(
            got.contains(&format!("('{n}', ")),
            "{n} not in {got}: {}",
            job_out(d.path())
        );
    }
    for t in ["tasks", "events", "session"] {
        assert_eq!(
            std::fs::read_dir(ds.join(t)).unwrap().count(),
            NODES.len(),
            "{t}"
        );
    }
}

#[test]
fn the_multi_node_template_on_four_nodes_gives_one_agent_per_node() {
    let _shared = four_nodes();
    let d = template_on(cluster4(), "multi-node.sbatch", &["-N4"]);
    let merged = read_jsonl(&d.path().join("out/job.telemetry.jsonl"));
    assert_complete(&merged);
    let logs = logs_by_node(&merged);
    assert_eq!(
        logs.keys().map(String::as_str).collect::<Vec<_>>(),
        NODES,
        "{}",
        job_out(d.path())
    );
    assert!(logs.values().all(|l| l["clean_end"] == true), "{logs:?}");
    // Each agent ran on a node with a host name of its own (its UTS
    // namespace), and says its clock anchor.
    for l in logs.values() {
        assert_eq!(l["hostname"], l["node_id"], "{l}");
        assert!(l["start_monotonic_ns"].as_u64().unwrap() > 0, "{l}");
    }
    // Every node's own series, one sample per interval, and one session span.
    assert_sample_counts(&merged, 0.1);
    let sessions = lines(&merged, "span", None)
        .into_iter()
        .filter(|s| s["name"] == "session")
        .count();
    assert_eq!(sessions, 1);
    let page = std::fs::read_to_string(d.path().join("out/job.report.html")).unwrap();
    assert_eq!(report_data(&page)["nodes"].as_array().unwrap().len(), 5);

    // Per-node attribution: every node's samples are the same machine's
    // /proc, but `--cgroup auto` reads each node's own job cgroup, so only
    // the node where the program filled 256 MiB shows it.
    let big = std::fs::read_to_string(d.path().join("big.host")).unwrap();
    let peak = |n: &str| {
        node_samples(&merged, n)
            .iter()
            .filter_map(|e| e["job_memory_peak_bytes"].as_u64())
            .max()
    };
    match node_cgroups() {
        Ok(()) => {
            for n in NODES {
                let p = peak(n).unwrap_or_else(|| panic!("{n}: no job cgroup found"));
                if n == big.trim() {
                    assert!(p >= 256 << 20, "{n} filled 256 MiB, its job peaked at {p}");
                } else {
                    assert!(p < 128 << 20, "{n} filled nothing, its job peaked at {p}");
                }
            }
        }
        Err(why) => {
            progress(&format!(
                "no per-node cgroups here ({why}): job_* fields must be null"
            ));
            assert!(NODES.iter().all(|n| peak(n).is_none()));
        }
    }

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
fn the_workflow_template_on_four_nodes_records_each_task_on_its_node() {
    let _shared = four_nodes();
    let d = template_on(cluster4(), "workflow.sbatch", &["-N4", "-n4"]);
    let why = || job_out(d.path());
    let merged = read_jsonl(&d.path().join("out/job.telemetry.jsonl"));
    assert_complete(&merged);
    let logs = logs_by_node(&merged);
    assert_eq!(logs.len(), 4, "{}", why());
    assert!(logs.values().all(|l| l["clean_end"] == true), "{logs:?}");
    assert_sample_counts(&merged, 0.1);
    let t = terminal_states(&merged);
    assert_eq!(t.len(), 6, "{t:?}");
    assert_eq!(t["sim.3"], "TaskFailed");
    // Each task's every event carries the node it ran on.
    let node_of = |id: &str| {
        let nodes: std::collections::BTreeSet<&str> = lines(&merged, "event", None)
            .into_iter()
            .filter(|e| e["task_id"] == id)
            .map(|e| e["node_id"].as_str().unwrap())
            .collect();
        assert_eq!(nodes.len(), 1, "{id}: events from {nodes:?}");
        nodes.into_iter().next().unwrap().to_string()
    };
    let mut placed = Vec::new();
    for i in 1..=4 {
        let host = std::fs::read_to_string(d.path().join(format!("placed.{i}")))
            .unwrap_or_else(|e| panic!("placed.{i}: {e}\n{}", why()));
        assert_eq!(node_of(&format!("sim.{i}")), host.trim(), "sim.{i}");
        placed.push(host.trim().to_string());
    }
    // One CPU per node and four steps at once: Slurm spread them.
    placed.sort();
    assert_eq!(placed, NODES, "{}", why());
    // The batch script's own tasks ran on its node.
    assert_eq!(node_of("prepare"), node_of("analyse"));
}

#[test]
fn the_mpi_template_on_four_nodes_runs_its_step_beside_four_agents() {
    let _shared = four_nodes();
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
    let logs = logs_by_node(&merged);
    assert_eq!(logs.len(), 4, "{}", job_out(d.path()));
    assert!(logs.values().all(|l| l["clean_end"] == true), "{logs:?}");
}

#[test]
fn scancel_of_a_four_node_job_or_of_its_agents_step_leaves_every_log_whole() {
    let _shared = four_nodes();
    // Two jobs at once: one cancelled whole (SIGTERM on every node), one
    // whose agents' step is cancelled (SIGKILL on every node). Then every
    // agent of the first stops at the same moment, and each must still
    // write a JSONL of its own.
    let (a, b) = (
        tempfile::tempdir_in("/tmp").unwrap(),
        tempfile::tempdir_in("/tmp").unwrap(),
    );
    let ja = agents_on_four_nodes(a.path(), &[], 5);
    let jb = agents_on_four_nodes(b.path(), &[], 10);
    // The agents' step: the first `srun` of the script, but the `tal wait`
    // step started right after it may get its id first; each log says.
    let step = agents_step(&b.path().join("out"), &jb);
    for target in [ja.clone(), format!("{jb}.{step}")] {
        let out = slurm4("scancel").arg(&target).output().unwrap();
        assert!(
            out.status.success(),
            "scancel {target}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            job_out(b.path())
        );
    }
    wait_step_gone_on(cluster4(), &jb, &step);
    let _ = slurm4("scancel").arg(&jb).status();
    wait_gone_on(cluster4(), &ja, Duration::from_secs(60));
    wait_gone_on(cluster4(), &jb, Duration::from_secs(60));

    // scancel: every agent finalised within KillWait, its own JSONL too.
    let (v, _) = merge(&a.path().join("out"));
    assert_complete(&v);
    let logs = logs_by_node(&v);
    assert_eq!(logs.len(), 4);
    assert!(logs.values().all(|l| l["clean_end"] == true), "{logs:?}");
    assert_eq!(
        files_with_ext(&a.path().join("out"), ".telemetry.jsonl").len(),
        4,
        "{}",
        job_out(a.path())
    );
    assert_sample_counts(&v, 0.1);

    // scancel JOB.STEP: every log is recovered up to its last flushed batch,
    // and the merge says each was cut.
    let (v, stderr) = merge(&b.path().join("out"));
    assert_complete(&v);
    let logs = logs_by_node(&v);
    assert_eq!(logs.len(), 4);
    assert!(logs.values().all(|l| l["clean_end"] == false), "{logs:?}");
    assert_eq!(stderr.matches("no end marker").count(), 4, "{stderr}");
    for n in NODES {
        assert!(node_samples(&v, n).len() >= 10, "{n}");
    }
    assert_eq!(
        lines(&v, "event", Some("SessionEnded"))[0]["attributes"]["recovered"],
        true
    );
}

#[test]
fn a_time_limit_on_a_four_node_job_ends_every_agent_cleanly() {
    let _shared = four_nodes();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    // Whole minutes, checked about twice a minute: 60–90 s.
    let job = agents_on_four_nodes(dir.path(), &["--time=1"], 1);
    wait_gone_on(cluster4(), &job, Duration::from_secs(400));
    let (v, _) = merge(&dir.path().join("out"));
    assert_complete(&v);
    let logs = logs_by_node(&v);
    assert_eq!(logs.len(), 4);
    assert!(logs.values().all(|l| l["clean_end"] == true), "{logs:?}");
    assert_sample_counts(&v, 0.1);
    for n in NODES {
        assert!(node_samples(&v, n).len() >= 300, "{n}: a minute of samples");
    }
}

/// Brings node `name` back when dropped (even after a failed assertion),
/// so that the other tests keep four nodes.
struct Revive(&'static str);

impl Drop for Revive {
    fn drop(&mut self) {
        let ok = Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-up.sh"))
            .args(["--revive-node", self.0])
            .env("TAL_SLURM_DIR", DIR4)
            .status()
            .is_ok_and(|s| s.success());
        progress(&format!("node {} back: {ok}", self.0));
    }
}

/// SIGKILLs every process in node `name`'s network namespace (its slurmd,
/// its step daemons and what they run: the node's whole share of the
/// machine, as a node that fails); how many there were.
fn kill_node(name: &str) -> usize {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata(format!("/run/netns/{name}")).unwrap();
    let on_node = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                let pid = e.file_name().into_string().ok()?;
                pid.parse::<u32>().ok()?;
                let m = std::fs::metadata(e.path().join("ns/net")).ok()?;
                (m.ino() == ns.ino() && m.dev() == ns.dev()).then_some(pid)
            })
            .collect()
    };
    let first = on_node();
    let mut pids = first.clone();
    while !pids.is_empty() {
        let _ = Command::new("kill").arg("-KILL").args(&pids).status();
        std::thread::sleep(Duration::from_millis(50));
        // Gone, or zombies that PID 1 reaps late.
        pids = on_node()
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                    !s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
            })
            .collect();
    }
    first.len()
}

#[test]
fn a_node_that_fails_mid_job_loses_only_its_own_unflushed_samples() {
    cluster4();
    let _alone = FOUR_NODES.write().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let out = dir.path().join("out");
    let job = agents_on_four_nodes(dir.path(), &["--no-requeue"], 10);
    let log4 = out.join(format!("slurm.{job}.taln4.tal"));
    let before = samples_in_log(&log4);
    // taln4 fails: everything on it is SIGKILLed, and slurmctld marks it
    // down, as it does once SlurmdTimeout passes without a word from it,
    // ending the job (NODE_FAIL) on the other nodes.
    let revive = Revive("taln4");
    let killed = kill_node("taln4");
    let t_kill = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    progress(&format!("node taln4 failed: {killed} processes SIGKILLed"));
    assert!(killed >= 3, "slurmd, a step daemon and the agent: {killed}");
    assert!(slurm4("scontrol")
        .args([
            "update",
            "nodename=taln4",
            "state=down",
            "reason=tal test: node failure"
        ])
        .status()
        .unwrap()
        .success());
    wait_gone_on(cluster4(), &job, Duration::from_secs(60));
    let t0 = Instant::now();
    while files_with_ext(&out, ".telemetry.jsonl").len() < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the three other agents' JSONL: {:?}\n{}",
            files_with_ext(&out, ".telemetry.jsonl"),
            job_out(dir.path())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(revive);

    let (v, stderr) = merge(&out);
    assert_complete(&v);
    let logs = logs_by_node(&v);
    assert_eq!(logs.len(), 4, "{stderr}");
    for n in ["taln1", "taln2", "taln3"] {
        assert_eq!(logs[n]["clean_end"], true, "{n}: {}", logs[n]);
        // It went on after the node failed, to its own graceful end.
        let last = node_samples(&v, n).last().unwrap()["event_time"]
            .as_f64()
            .unwrap();
        assert!(last > t_kill, "{n}");
    }
    assert_eq!(logs["taln4"]["clean_end"], false, "{}", logs["taln4"]);
    // One session, ended at the latest node's end, marked as recovered.
    let ended = lines(&v, "event", Some("SessionEnded"))[0];
    assert_eq!(ended["attributes"]["recovered"], true);
    let last_sample = node_samples(&v, "taln1").last().unwrap()["event_time"]
        .as_f64()
        .unwrap();
    assert!(ended["event_time"].as_f64().unwrap() >= last_sample);
    assert_eq!(stderr.matches("no end marker").count(), 1, "{stderr}");
    assert!(stderr.contains("taln4.tal: no end marker"), "{stderr}");
    // taln4's log converts up to its last flushed record.
    let flushed = samples_in_log(&log4);
    assert!(flushed >= before, "{flushed} < {before}");
    assert_eq!(node_samples(&v, "taln4").len(), flushed);
    assert_eq!(logs["taln4"]["records"].as_u64().unwrap() as usize, {
        tal::log::LogReader::open(&log4).unwrap().count()
    });
}
