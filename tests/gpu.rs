//! The GPU agent through the real `tal record` and the real JSONL, with a
//! stub `libnvidia-ml.so.1` (tests/nvml-stub/nvml_stub.c) built here with
//! the system C compiler and scripted per test (CI machines have no NVIDIA
//! driver; the real library is checked on a GPU machine, see README).

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Builds the stub (once per variant) and returns the library's path.
fn stub(variant: &'static str) -> PathBuf {
    static FULL: OnceLock<PathBuf> = OnceLock::new();
    static NO_SAMPLES: OnceLock<PathBuf> = OnceLock::new();
    let cell = if variant == "nosamples" {
        &NO_SAMPLES
    } else {
        &FULL
    };
    cell.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("nvml-stub")
            .join(variant);
        std::fs::create_dir_all(&dir).unwrap();
        let lib = dir.join("libnvidia-ml.so.1");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nvml-stub/nvml_stub.c");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let mut cmd = Command::new(&cc);
        cmd.args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&lib)
            .arg(&src);
        if variant == "nosamples" {
            cmd.arg("-DNO_SAMPLES");
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run the C compiler '{cc}' (set CC): {e}"));
        assert!(
            out.status.success(),
            "building the NVML stub failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lib
    })
    .clone()
}

const UUID0: &str = "GPU-11111111-2222-3333-4444-555555555555";
const UUID1: &str = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const MEM: u64 = 85_899_345_920;

fn two_devices(extra: &str) -> String {
    format!(
        "device {UUID0} 00000000:19:00.0 {MEM} NVIDIA H100 80GB HBM3\n\
         device {UUID1} 00000000:2A:00.0 {MEM} NVIDIA H100 80GB HBM3\n{extra}"
    )
}

/// Runs `tal record --interval 0.05 ARGS -- sleep SECS` against the stub
/// with `config`; returns (exit status, stderr, JSONL lines).
fn record_with(
    lib: &Path,
    config: &str,
    args: &[&str],
    env: &[(&str, &str)],
    secs: &str,
) -> (Option<i32>, String, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    record_in(dir.path(), lib, config, args, env, &["sleep", secs])
}

/// The same in `dir`, wrapping `command`.
fn record_in(
    dir: &Path,
    lib: &Path,
    config: &str,
    args: &[&str],
    env: &[(&str, &str)],
    command: &[&str],
) -> (Option<i32>, String, Vec<Value>) {
    let cfg = dir.join("nvml.cfg");
    std::fs::write(&cfg, config).unwrap();
    let out_dir = dir.join("out");
    let mut cmd = tal();
    cmd.arg("record")
        .args([
            "--interval",
            "0.05",
            "--session-id",
            "gpu",
            "--node-id",
            "n",
        ])
        .arg("--socket")
        .arg(dir.join("s.sock"))
        .arg("--out")
        .arg(&out_dir)
        .args(args)
        .arg("--")
        .args(command)
        .env("TAL_NVML_LIBRARY", lib)
        .env("NVML_STUB_CONFIG", &cfg)
        .env_remove("CUDA_VISIBLE_DEVICES");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = read_jsonl_in(&out_dir);
    (out.status.code(), stderr, v)
}

fn resources<'a>(v: &'a [Value], scope: &str) -> Vec<&'a Value> {
    lines(v, "event", Some("ResourceUpdate"))
        .into_iter()
        .filter(|l| l["resource_scope"] == scope)
        .collect()
}

fn series(v: &[Value], gpu: u64, key: &str) -> Vec<Value> {
    resources(v, "per_gpu")
        .into_iter()
        .filter(|l| l["gpu_id"] == gpu)
        .map(|l| l[key].clone())
        .collect()
}

fn metric(v: &[Value]) -> &Value {
    lines(v, "metric", None).last().copied().unwrap()
}

#[test]
fn two_gpus_give_fresh_per_gpu_series_and_the_node_max() {
    let util: Vec<String> = (1..=20).map(|i| (i * 5).to_string()).collect();
    let cfg = two_devices(&format!("util 0 {}\nutil 1 7\n", util.join(",")));
    let (code, stderr, v) = record_with(&stub("full"), &cfg, &[], &[], "1");
    assert_eq!(code, Some(0), "{stderr}");
    assert_complete(&v);
    assert!(
        stderr.contains(&format!(
            "tal: GPUs: 0={UUID0} (NVIDIA H100 80GB HBM3, 00000000:19:00.0); 1={UUID1}"
        )),
        "{stderr}"
    );

    // RHAPSODY's per_gpu shape: only gpu_percent and gpu_id are set.
    let per_gpu = resources(&v, "per_gpu");
    assert!(per_gpu.len() >= 20, "{} per_gpu lines", per_gpu.len());
    for l in &per_gpu {
        for k in [
            "cpu_percent",
            "memory_percent",
            "disk_read_bytes",
            "disk_write_bytes",
            "net_sent_bytes",
            "net_recv_bytes",
        ] {
            assert!(l[k].is_null(), "{k} set on per_gpu: {l}");
        }
        assert!(l["gpu_percent"].is_number(), "{l}");
        assert!(l["nvml_latency_us"].as_f64().unwrap() > 0.0);
        assert_eq!(l["gpu_memory_total_bytes"], MEM);
    }

    // Device 0 reports each poll's new samples, in order: the stub's
    // sequence from its second value (the first went to tal's start-up
    // probe), then its last value repeated.
    let got: Vec<f64> = series(&v, 0, "gpu_percent")
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let want: Vec<f64> = (2..=20)
        .map(|i| f64::from(i * 5))
        .chain(std::iter::repeat(100.0))
        .take(got.len())
        .collect();
    assert_eq!(got, want);
    assert!(series(&v, 0, "gpu_samples").iter().all(|s| *s == 3));
    // The stub derives the other fields from the utilisation.
    for l in resources(&v, "per_gpu")
        .into_iter()
        .filter(|l| l["gpu_id"] == 0)
    {
        let u = l["gpu_percent"].as_f64().unwrap();
        assert_eq!(l["gpu_memory_percent"].as_f64(), Some(u), "{l}");
        assert_eq!(
            l["gpu_memory_util_percent"].as_f64(),
            Some((u / 2.0).floor())
        );
        assert_eq!(l["gpu_power_watts"].as_f64(), Some(100.0 + u));
        assert_eq!(
            l["gpu_temperature_celsius"].as_f64(),
            Some(30.0 + (u / 2.0).floor())
        );
        assert_eq!(l["gpu_sm_clock_mhz"].as_f64(), Some(1000.0 + 10.0 * u));
    }
    assert!(series(&v, 1, "gpu_percent").iter().all(|p| *p == 7.0));

    // Each per_node line is followed by its poll's per_gpu lines (same
    // event_time), and its gpu_percent is their max.
    let res = lines(&v, "event", Some("ResourceUpdate"));
    let mut paired = 0;
    for (i, l) in res.iter().enumerate() {
        if l["resource_scope"] != "per_node" {
            continue;
        }
        let polls: Vec<&&Value> = res[i + 1..]
            .iter()
            .take_while(|g| g["resource_scope"] == "per_gpu")
            .collect();
        if polls.is_empty() {
            continue;
        }
        assert!(polls.iter().all(|g| g["event_time"] == l["event_time"]));
        let max = polls
            .iter()
            .map(|g| g["gpu_percent"].as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert_eq!(l["gpu_percent"].as_f64(), Some(max), "{l}");
        paired += 1;
    }
    let nodes = resources(&v, "per_node");
    assert!(
        paired + 2 >= nodes.len(),
        "{paired} of {} per_node lines paired",
        nodes.len()
    );
    assert!(nodes.iter().skip(1).all(|l| l["gpu_percent"].is_number()));

    let m = metric(&v);
    assert!(m["node_gpu_utilization"].is_number(), "{m}");
    assert!(m["agent_gpu_polls"].as_u64().unwrap() >= 20, "{m}");
    assert_eq!(m["agent_gpu_devices_disabled"], 0);
    assert!(m["agent_gpu_cpu_us_per_poll"].as_f64().unwrap() > 0.0);
    assert!(m["agent_nvml_latency_p50_us"].as_f64().unwrap() > 0.0);
    let attrs = &m["tal_logs"][0]["attributes"];
    assert_eq!(attrs["gpu.0.uuid"], UUID0);
    assert_eq!(attrs["gpu.1.pci_bus_id"], "00000000:2A:00.0");
}

#[test]
fn a_failing_device_is_disabled_once_and_the_other_goes_on() {
    let cfg = two_devices("util 0 40\nutil 1 60\nfail 1 5\n");
    let (code, stderr, v) = record_with(&stub("full"), &cfg, &[], &[], "1");
    assert_eq!(code, Some(0), "{stderr}");
    let reports: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("no more samples from this device"))
        .collect();
    assert_eq!(reports.len(), 1, "{stderr}");
    assert!(
        reports[0].starts_with(&format!("tal: GPU 1 ({UUID1})")),
        "{stderr}"
    );
    // Device 1 answered its first polls (the probe took one), then nothing.
    assert_eq!(series(&v, 1, "gpu_percent").len(), 4);
    assert!(series(&v, 0, "gpu_percent").len() >= 15);
    // The node max follows the devices that still answer.
    let nodes = resources(&v, "per_node");
    assert_eq!(nodes.last().unwrap()["gpu_percent"].as_f64(), Some(40.0));
    assert!(nodes.iter().any(|l| l["gpu_percent"] == 60.0));
    assert_eq!(metric(&v)["agent_gpu_devices_disabled"], 1);
}

#[test]
fn without_nvmldevicegetsamples_the_plain_query_is_used() {
    let cfg = two_devices("util 0 10,20,30,40,50\nutil 1 0\n");
    let (code, stderr, v) = record_with(&stub("nosamples"), &cfg, &[], &[], "0.6");
    assert_eq!(code, Some(0), "{stderr}");
    let got = series(&v, 0, "gpu_percent");
    assert_eq!(got[..4], [20.0, 30.0, 40.0, 50.0].map(Value::from));
    assert!(series(&v, 0, "gpu_samples").iter().all(Value::is_null));
    assert!(series(&v, 0, "gpu_memory_util_percent")
        .iter()
        .all(Value::is_number));
}

#[test]
fn a_device_without_a_query_keeps_that_field_null() {
    let cfg = two_devices("util 0 30\nnosamples 1\nutil 1 50\n");
    let (code, stderr, v) = record_with(&stub("full"), &cfg, &[], &[], "0.5");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(series(&v, 0, "gpu_samples").iter().all(|s| *s == 3));
    assert!(series(&v, 1, "gpu_samples").iter().all(Value::is_null));
    assert!(series(&v, 1, "gpu_percent").iter().all(|p| *p == 50.0));
    assert!(!stderr.contains("no more samples"), "{stderr}");
}

/// No usable NVML: one line on stderr saying why, exit 0, GPU fields null.
fn assert_no_gpu_data(lib: &Path, cfg: &str, why: &str) {
    let (code, stderr, v) = record_with(lib, cfg, &[], &[], "0.4");
    assert_eq!(code, Some(0), "{stderr}");
    let notes: Vec<&str> = stderr.lines().filter(|l| l.contains("GPU")).collect();
    assert_eq!(notes.len(), 1, "{stderr}");
    assert!(notes[0].starts_with("tal: no GPU data: "), "{stderr}");
    assert!(notes[0].contains(why), "wanted '{why}' in: {stderr}");
    assert_complete(&v);
    assert!(resources(&v, "per_gpu").is_empty());
    let nodes = resources(&v, "per_node");
    assert!(nodes.len() >= 3);
    assert!(nodes.iter().all(|l| l["gpu_percent"].is_null()));
    let m = metric(&v);
    assert!(m.get("node_gpu_utilization").is_none(), "{m}");
    assert!(m.get("agent_gpu_polls").is_none(), "{m}");
}

#[test]
fn no_driver_no_permission_no_devices_no_library() {
    let lib = stub("full");
    assert_no_gpu_data(&lib, "init 9\n", "the NVIDIA driver is not loaded");
    assert_no_gpu_data(
        &lib,
        "init 4\n",
        "no permission to talk to the NVIDIA driver",
    );
    assert_no_gpu_data(&lib, "", "NVML lists no GPUs on this node");
    let missing = lib.with_file_name("no-such-libnvidia-ml.so.1");
    assert_no_gpu_data(&missing, "", "cannot load the NVIDIA management library");
}

#[test]
fn gpu_ids_follow_cuda_visible_devices_and_gpus() {
    let lib = stub("full");
    let cfg = two_devices("util 0 11\nutil 1 22\n");
    // By UUID prefix and by index, in the job's order: gpu_id 0 is NVML's 1.
    let (_, stderr, v) = record_with(
        &lib,
        &cfg,
        &[],
        &[("CUDA_VISIBLE_DEVICES", "GPU-aaaaaaaa,0")],
        "0.4",
    );
    assert!(stderr.contains(&format!("GPUs: 0={UUID1}")), "{stderr}");
    assert!(series(&v, 0, "gpu_percent").iter().all(|p| *p == 22.0));
    assert!(series(&v, 1, "gpu_percent").iter().all(|p| *p == 11.0));
    assert_eq!(metric(&v)["tal_logs"][0]["attributes"]["gpu.0.uuid"], UUID1);

    // --gpus overrides the environment; `none` and a hidden list sample nothing.
    let (_, _, v) = record_with(
        &lib,
        &cfg,
        &["--gpus", "1"],
        &[("CUDA_VISIBLE_DEVICES", "0")],
        "0.4",
    );
    assert!(series(&v, 0, "gpu_percent").iter().all(|p| *p == 22.0));
    assert!(series(&v, 1, "gpu_percent").is_empty());
    for (args, env) in [
        (&["--gpus", "none"][..], &[][..]),
        (&[][..], &[("CUDA_VISIBLE_DEVICES", "")][..]),
        (&[][..], &[("CUDA_VISIBLE_DEVICES", "-1")][..]),
    ] {
        let (code, stderr, v) = record_with(&lib, &cfg, args, env, "0.3");
        assert_eq!(code, Some(0));
        assert!(!stderr.contains("GPU"), "{args:?} {env:?}: {stderr}");
        assert!(resources(&v, "per_gpu").is_empty());
    }

    // A device that does not exist: said once, and the recording goes on.
    let (code, stderr, v) = record_with(&lib, &cfg, &["--gpus", "GPU-ffff"], &[], "0.3");
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains("tal: no GPU data: no GPU has the UUID GPU-ffff"),
        "{stderr}"
    );
    assert_complete(&v);
}

#[test]
fn a_tasks_gpu_processes_give_its_peak_gpu_memory() {
    let dir = tempfile::tempdir().unwrap();
    let procs = dir.path().join("procs");
    std::fs::write(&procs, "").unwrap();
    let cfg = two_devices(&format!(
        "util 0 50\nutil 1 50\nprocs {}\n",
        procs.display()
    ));
    let tal = env!("CARGO_BIN_EXE_tal");
    let p = procs.display();
    // The task's own shell uses GPU 0 (1 MB, then 3 MB), and a child of it
    // GPU 1 (5 MB); a process that is not the task's uses GPU 1 too.
    let script = format!(
        "{tal} run --task-id gpu.task -- sh -c '\
           echo 0 $$ 1000000 > {p}; sleep 0.4; \
           echo 0 $$ 3000000 > {p}; sleep 1 & \
           printf \"0 $$ 3000000\\n1 $! 5000000\\n1 1 9000000\\n\" > {p}; sleep 0.4; \
           echo 0 $$ 2000000 > {p}; sleep 0.3; : > {p}; wait' && \
         {tal} run --task-id cpu.task -- sleep 0.3"
    );
    let (code, stderr, v) = record_in(
        dir.path(),
        &stub("full"),
        &cfg,
        &[],
        &[],
        &["sh", "-c", &script],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let done = lines(&v, "event", Some("TaskCompleted"));
    let gpu_task = done.iter().find(|l| l["task_id"] == "gpu.task").unwrap();
    assert_eq!(
        gpu_task["attributes"]["gpu_memory_peak_bytes"],
        serde_json::json!({"0": 3000000, "1": 5000000}),
        "{gpu_task}"
    );
    let cpu_task = done.iter().find(|l| l["task_id"] == "cpu.task").unwrap();
    assert!(cpu_task["attributes"]
        .get("gpu_memory_peak_bytes")
        .is_none());
    let span = lines(&v, "span", None)
        .into_iter()
        .find(|s| s["attributes"]["task_id"] == "gpu.task")
        .unwrap();
    assert_eq!(
        span["attributes"]["gpu_memory_peak_bytes"],
        serde_json::json!({"0": 3000000, "1": 5000000})
    );
    // tal's own process records are not JSONL lines.
    assert!(lines(&v, "event", Some("GpuProcesses")).is_empty());
}

#[test]
fn a_gpu_in_mig_mode_shows_its_instances() {
    let lib = stub("full");
    let cfg = two_devices("util 0 10\nutil 1 20\nmig 1 2\n");
    let (code, stderr, v) = record_with(&lib, &cfg, &[], &[], "0.4");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("GPUs: 0={UUID0} "))
            && stderr.contains("; 1=MIG-1-0 ")
            && stderr.contains("; 2=MIG-1-1 "),
        "{stderr}"
    );
    assert!(series(&v, 0, "gpu_percent").iter().all(|p| *p == 10.0));
    // MIG instances tell memory, not utilisation.
    for g in [1, 2] {
        let mem = series(&v, g, "gpu_memory_total_bytes");
        assert!(!mem.is_empty());
        assert!(mem.iter().all(|m| *m == MEM / 2));
        assert!(series(&v, g, "gpu_percent").iter().all(Value::is_null));
    }
    assert!(!stderr.contains("no more samples"), "{stderr}");
    // A MIG UUID in CUDA_VISIBLE_DEVICES names that instance.
    let (_, stderr, _) = record_with(
        &lib,
        &cfg,
        &[],
        &[("CUDA_VISIBLE_DEVICES", "MIG-1-1")],
        "0.3",
    );
    assert!(stderr.contains("GPUs: 0=MIG-1-1 "), "{stderr}");
}
