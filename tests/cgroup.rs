//! Per-job attribution through a real cgroup: the test makes a cgroup (v1
//! controllers cpuacct, memory and blkio, as these machines have them; this
//! needs root), runs a workload in it next to `tal record --cgroup DIR`,
//! and checks the `job_*` fields against what the workload did. (Slurm
//! makes such a cgroup per job where its cgroup plugins are configured;
//! `--cgroup auto` finds it there, see `src/agent/cgroup.rs`. The one-node
//! test cluster runs without them, as SLURM-NOTES.md says works here.)

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;

/// A v1 cgroup under every controller; removed on drop.
struct Cgroup {
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    fn new(name: &str) -> Self {
        let mut dirs = Vec::new();
        for ctl in ["cpuacct", "memory", "blkio"] {
            let d = PathBuf::from("/sys/fs/cgroup").join(ctl).join(name);
            std::fs::create_dir_all(&d).unwrap_or_else(|e| {
                panic!(
                    "cannot make the cgroup {} (this test needs root and cgroup v1): {e}",
                    d.display()
                )
            });
            dirs.push(d);
        }
        Self { dirs }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[test]
fn the_jobs_own_cpu_memory_and_io_come_from_its_cgroup() {
    let name = format!("tal-test-{}", std::process::id());
    let cg = Cgroup::new(&name);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = dir.path().join("written");
    // The workload joins the cgroup, then: 1.2 s of one busy CPU, a 64 MiB
    // buffer, 32 MiB written with O_DIRECT (so it reaches the disk now).
    let join: String = cg
        .dirs
        .iter()
        .map(|d| format!("echo $$ > {}/cgroup.procs; ", d.display()))
        .collect();
    let script = format!(
        "{join} sleep 0.5; timeout 1.2 sh -c 'while :; do :; done'; \
         dd if=/dev/zero of=/dev/null bs=64M count=1 status=none; \
         dd if=/dev/zero of={} bs=1M count=32 oflag=direct status=none; sleep 0.5",
        file.display()
    );
    // A memory limit of 1 GiB, which the log header and the summary carry.
    std::fs::write(cg.dirs[1].join("memory.limit_in_bytes"), "1073741824\n").unwrap();
    let mut work = Command::new("sh").args(["-c", &script]).spawn().unwrap();
    let out = run(tal()
        .args([
            "record",
            "--interval",
            "0.1",
            "--session-id",
            "cg",
            "--node-id",
            "n",
            "--gpus",
            "none",
        ])
        .arg("--cgroup")
        .arg(&cg.dirs[1])
        .arg("--out")
        .arg(dir.path().join("rec"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .args(["--", "sleep", "3.5"]));
    assert!(work.wait().unwrap().success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "tal: job: cgroup v1 /sys/fs/cgroup/{{cpuacct,memory,blkio}}/{name}"
        )),
        "{stderr}"
    );

    let v = read_jsonl_in(&dir.path().join("rec"));
    let summary = run(tal()
        .args(["summary", "--json"])
        .arg(dir.path().join("rec")));
    assert!(summary.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&summary.stdout).unwrap();
    let job = &summary["nodes"][0]["job_cgroup"];
    assert_eq!(
        job["memory_limit_bytes"].as_f64(),
        Some(1073741824.0),
        "{job}"
    );
    let of_limit = job["memory_peak_percent_of_limit"].as_f64().unwrap();
    let peak = job["memory_peak_bytes"].as_f64().unwrap();
    assert!(
        (of_limit - peak / 1073741824.0 * 100.0).abs() < 1e-6,
        "{of_limit} % of the limit for a peak of {peak}"
    );
    let nodes: Vec<_> = lines(&v, "event", Some("ResourceUpdate"))
        .into_iter()
        .filter(|l| l["resource_scope"] == "per_node")
        .collect();
    let f = |l: &serde_json::Value, k: &str| l[k].as_f64();
    // One of the node's CPUs busy in the job: its share of all CPUs.
    let ncpu = std::thread::available_parallelism().unwrap().get() as f64;
    let busiest = nodes
        .iter()
        .filter_map(|l| f(l, "job_cpu_percent"))
        .fold(0.0, f64::max);
    assert!(
        busiest >= 100.0 / ncpu * 0.7,
        "job_cpu_percent peaked at {busiest}"
    );
    // The job never uses more CPU than the node.
    for l in &nodes {
        if let (Some(j), Some(n)) = (f(l, "job_cpu_percent"), f(l, "cpu_percent")) {
            assert!(j <= n + 15.0, "job {j} > node {n}: {l}");
        }
    }
    let peak = nodes
        .iter()
        .filter_map(|l| f(l, "job_memory_peak_bytes"))
        .fold(0.0, f64::max);
    assert!(peak >= 64.0 * 1048576.0, "peak {peak}");
    // I/O: the fields are there and never exceed the node's. (The amount is
    // not checked: on these VMs the v1 blkio controller accounts nothing,
    // `Total 0` even for O_DIRECT writes from inside the cgroup; the
    // parsers of io.stat and blkio are unit-tested on the kernel's format.)
    let written: f64 = nodes
        .iter()
        .filter_map(|l| f(l, "job_disk_write_bytes"))
        .sum();
    let node_written: f64 = nodes.iter().filter_map(|l| f(l, "disk_write_bytes")).sum();
    assert!(
        node_written >= 32.0 * 1048576.0,
        "the node saw the writes: {node_written}"
    );
    assert!(
        written <= node_written,
        "job {written} > node {node_written}"
    );
    // The job's deltas follow the node's window rule: after the warm-up
    // sample, a figure wherever the node's disk bytes have one (a window
    // too short to measure, the one at stop or after a late wake-up, is
    // null in both), and most samples have one.
    let measured = nodes[1..]
        .iter()
        .filter(|l| l["job_disk_write_bytes"].is_number())
        .count();
    for l in &nodes[1..] {
        assert_eq!(
            l["job_disk_write_bytes"].is_number(),
            l["disk_write_bytes"].is_number(),
            "{l}"
        );
    }
    assert!(measured * 2 >= nodes.len(), "{measured} of {}", nodes.len());
    // The first sample has no deltas; the series is complete.
    assert!(nodes[0]["job_cpu_percent"].is_null());
    assert!(nodes
        .iter()
        .skip(1)
        .all(|l| l["job_memory_bytes"].is_number()));
}

#[test]
fn a_bad_cgroup_is_refused_clearly_and_none_turns_it_off() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tal()
        .args(["record", "--cgroup", "/nonexistent/cg", "--out"])
        .arg(dir.path())
        .args(["--", "true"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--cgroup: /nonexistent/cg: not a readable cgroup directory"));
    let out = run(tal()
        .args([
            "record",
            "--interval",
            "0.1",
            "--cgroup",
            "none",
            "--gpus",
            "none",
            "--out",
        ])
        .arg(dir.path())
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .args(["--", "sleep", "0.3"]));
    assert_eq!(out.status.code(), Some(0));
    let v = read_jsonl_in(dir.path());
    assert!(lines(&v, "event", Some("ResourceUpdate"))
        .iter()
        .all(|l| l.get("job_cpu_percent").is_none()));
}

/// Read errors are counted per source: a cgroup file that stops parsing
/// mid-run is named in the metric line (and its node's `tal_logs` entry),
/// while the other sources stay at zero. The cgroup is a v2-shaped
/// directory of plain files, so the test needs no root.
#[test]
fn read_errors_are_counted_per_source() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cg = dir.path().join("cg");
    std::fs::create_dir(&cg).unwrap();
    for (f, text) in [
        ("cgroup.controllers", "cpu memory io\n"),
        (
            "cpu.stat",
            "usage_usec 1000\nuser_usec 600\nsystem_usec 400\n",
        ),
        ("memory.current", "1048576\n"),
        ("io.stat", "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2\n"),
    ] {
        std::fs::write(cg.join(f), text).unwrap();
    }
    let out = dir.path().join("rec");
    let child = tal()
        .args(["record", "--interval", "0.05", "--session-id", "cgerr"])
        .args(["--node-id", "n", "--gpus", "none", "--cgroup"])
        .arg(&cg)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = out.join("cgerr.n.tal");
    wait_until("samples with the cgroup readable", || {
        samples_in_log(&log) >= 3
    });
    // The same file (tal keeps it open), now unparseable.
    std::fs::write(cg.join("memory.current"), "not a number\n").unwrap();
    let before = samples_in_log(&log);
    wait_until("samples after the file broke", || {
        samples_in_log(&log) >= before + 3
    });
    signal(&child, libc::SIGTERM);
    let o = wait_output(child, std::time::Duration::from_secs(20));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = read_jsonl_in(&out);
    let m = lines(&v, "metric", None)[0];
    let by = &m["agent_read_errors_by_source"];
    assert!(by["cgroup_memory"].as_u64().unwrap() >= 2, "{by}");
    for other in [
        "proc_stat",
        "proc_meminfo",
        "proc_diskstats",
        "proc_net_dev",
        "cgroup_cpu",
        "cgroup_memory_peak",
        "cgroup_io",
    ] {
        assert_eq!(by[other], 0, "{other}: {by}");
    }
    assert_eq!(m["agent_read_errors"], by["cgroup_memory"]);
    assert_eq!(m["tal_logs"][0]["read_errors_by_source"], *by);
}
