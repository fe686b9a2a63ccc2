//! `tal_telemetry.rhapsody.TalAdapter` in a real RHAPSODY 0.6.0 session
//! (`rhapsody-py[telemetry]` in the venv of `scripts/setup-python.sh`): the
//! concurrent backend, 20 tasks, one failing, the adapter at 0.1 s, driven
//! by tests/python/rhapsody_adapter_session.py. RHAPSODY's own checkpoint
//! must hold tal's samples, per node and per GPU (a stub NVML library with
//! two devices, as in tests/gpu.rs), each equal, field by field, to the one
//! in tal's log (converted with `tal convert`), none from psutil, and
//! RHAPSODY's `read_metrics()` node gauges must show them.
//!
//! Two ways in: `start_telemetry(session, ...)` with the adapter's own
//! `tal record` (RHAPSODY's psutil adapter is never made), and RHAPSODY's
//! `session.start_telemetry()` then `register_adapter(TalAdapter())` under
//! a `tal record` that wraps the script (the adapter attaches to it, and
//! stops RHAPSODY's poller; the two private attributes it touches,
//! `_manager` and `_adapters`, are what this path exercises).

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The stub NVML library (tests/nvml-stub), built once for this file.
fn nvml_stub() -> PathBuf {
    static LIB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LIB.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nvml-stub-adapter");
        std::fs::create_dir_all(&dir).unwrap();
        let lib = dir.join("libnvidia-ml.so.1");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nvml-stub/nvml_stub.c");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let out = Command::new(&cc)
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&lib)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("cannot run the C compiler '{cc}' (set CC): {e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        lib
    })
    .clone()
}

/// Two GPUs, with utilisations that change from poll to poll.
const NVML: &str = "device GPU-11111111-2222-3333-4444-555555555555 00000000:19:00.0 85899345920 NVIDIA H100 80GB HBM3\n\
device GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee 00000000:2A:00.0 85899345920 NVIDIA H100 80GB HBM3\n\
util 0 5,15,25,35,45,55,65,75,85,95\nutil 1 7,17,27\nnosamples 0\nnosamples 1\n";

/// The fields of RHAPSODY 0.6.0's `ResourceUpdate` as its checkpoint
/// writes them (the dataclass's, then the checkpoint's own four).
const RH_FIELDS: [&str; 22] = [
    "event_id",
    "event_type",
    "event_time",
    "emit_time",
    "session_id",
    "backend",
    "task_id",
    "node_id",
    "attributes",
    "cpu_percent",
    "memory_percent",
    "gpu_percent",
    "gpu_id",
    "disk_read_bytes",
    "disk_write_bytes",
    "net_sent_bytes",
    "net_recv_bytes",
    "resource_scope",
    "trace_id",
    "span_id",
    "name",
    "section",
];

/// Runs the session script in `dir` (`mode`: helper or register), wrapped
/// in `tal record` (whose output goes to `dir/agent`) when `wrapped`.
fn session(dir: &Path, mode: &str, wrapped: bool) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = dir.join("nvml.cfg");
    std::fs::write(&cfg, NVML).unwrap();
    let script = root.join("tests/python/rhapsody_adapter_session.py");
    let mut cmd = if wrapped {
        let mut c = tal();
        c.args(["record", "--interval", "0.1", "--session-id", "agent"])
            .args(["--node-id", "n", "--socket"])
            .arg(dir.join("agent.sock"))
            .arg("--out")
            .arg(dir.join("agent"))
            .arg("--")
            .arg(python());
        c
    } else {
        Command::new(python())
    };
    cmd.arg(&script)
        .arg(dir.join("rhapsody"))
        .arg(dir.join("tal"))
        .arg(mode)
        .env("PYTHONPATH", root.join("python"))
        .env("TAL_BIN", env!("CARGO_BIN_EXE_tal"))
        .env("TAL_NVML_LIBRARY", nvml_stub())
        .env("NVML_STUB_CONFIG", &cfg)
        .env_remove("CUDA_VISIBLE_DEVICES")
        .env_remove("TAL_SOCKET")
        // RHAPSODY makes its session's work directory in the current one.
        .current_dir(dir);
    let out = run(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no report ({e}): {stdout}\n{stderr}"))
}

fn resource_updates(v: &[Value]) -> Vec<&Value> {
    lines(v, "event", Some("ResourceUpdate"))
}

/// RHAPSODY's checkpoint, one file.
fn rhapsody_checkpoint(dir: &Path) -> Vec<Value> {
    let files = files_with_ext(&dir.join("rhapsody"), ".telemetry.jsonl");
    assert_eq!(files.len(), 1, "{files:?}");
    read_jsonl(&files[0])
}

/// The node log in `dir`, converted by `tal convert`.
fn converted(dir: &Path) -> Vec<Value> {
    let logs = files_with_ext(dir, ".tal");
    assert_eq!(logs.len(), 1, "{logs:?}");
    let jsonl = dir.join("converted.jsonl.out");
    run_ok(tal().arg("convert").arg("-o").arg(&jsonl).arg(&logs[0]));
    read_jsonl(&jsonl)
}

/// Checks that each of RHAPSODY's samples from tal is the sample of the
/// same event id in tal's log, field by field, and that they are a run of
/// tal's per-node samples with none missing; returns them.
fn assert_samples_are_tals<'a>(
    rh: &'a [Value],
    tal_v: &[Value],
    same_session: bool,
) -> Vec<&'a Value> {
    let tal_by_id: BTreeMap<&str, &Value> = resource_updates(tal_v)
        .into_iter()
        .map(|l| (l["event_id"].as_str().unwrap(), l))
        .collect();
    let ours: Vec<&Value> = resource_updates(rh)
        .into_iter()
        .filter(|l| l["backend"] == "tal")
        .collect();
    for s in &ours {
        let keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, RH_FIELDS, "RHAPSODY's fields exactly: {s}");
        let t = tal_by_id
            .get(s["event_id"].as_str().unwrap())
            .unwrap_or_else(|| panic!("not in tal's log: {s}"));
        for k in &RH_FIELDS[..18] {
            match *k {
                // When RHAPSODY got it; RHAPSODY's session.
                "emit_time" => assert!(s[k].as_f64().unwrap() >= t["event_time"].as_f64().unwrap()),
                "session_id" if !same_session => {}
                _ => assert_eq!(s[k], t[*k], "{k}: {s} vs {t}"),
            }
        }
    }
    // Per node, RHAPSODY's are a run of tal's, in order, none left out.
    let node_ids = |v: Vec<&Value>| -> Vec<String> {
        v.into_iter()
            .filter(|l| l["resource_scope"] == "per_node")
            .map(|l| l["event_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (a, b) = (node_ids(ours.clone()), node_ids(resource_updates(tal_v)));
    assert!(
        a.len() >= 4,
        "{} per-node samples reached RHAPSODY",
        a.len()
    );
    let at = b.iter().position(|id| *id == a[0]).unwrap();
    assert_eq!(b[at..at + a.len()], a[..], "a run of tal's samples");
    ours
}

/// The gauges RHAPSODY's `read_metrics()` showed equal the last values its
/// subscribers saw (its metric instruments were fed tal's samples).
fn assert_gauges(r: &Value) {
    for g in [
        "node_cpu_utilization",
        "node_memory_utilization",
        "node_gpu_utilization",
    ] {
        let (got, want) = (r["gauges"][g].as_f64(), r["last"][g].as_f64());
        let (got, want) = (got.unwrap_or_else(|| panic!("{g}: {r}")), want.unwrap());
        assert!((got - want).abs() < 1e-6, "{g}: {got} vs {want}");
    }
}

/// What RHAPSODY's two plot scripts read of its checkpoint (see
/// tests/python/rhapsody_plot_inputs.py): every field they index, and tal's
/// samples for their CPU, memory and GPU panels.
fn assert_plot_inputs(dir: &Path) {
    let files = files_with_ext(&dir.join("rhapsody"), ".telemetry.jsonl");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/rhapsody_plot_inputs.py");
    let out = run_ok(Command::new(python()).arg(script).arg(&files[0]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = v["node_samples"].as_object().unwrap();
    assert_eq!(nodes.len(), 1, "{v}");
    assert!(nodes.values().all(|n| n.as_u64() >= Some(4)), "{v}");
    assert_eq!(v["gpus"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v["task_ends"], 20, "{v}");
}

fn assert_tasks(rh: &[Value]) {
    let ends: Vec<&str> = rh
        .iter()
        .filter(|l| l["section"] == "event")
        .filter_map(|l| l["event_type"].as_str())
        .filter(|t| matches!(*t, "TaskCompleted" | "TaskFailed"))
        .collect();
    assert_eq!(ends.len(), 20);
    assert_eq!(ends.iter().filter(|t| **t == "TaskFailed").count(), 1);
}

#[test]
fn rhapsodys_checkpoint_holds_tals_samples_from_the_adapters_own_agent() {
    let dir = tempfile::tempdir().unwrap();
    let r = session(dir.path(), "helper", false);
    assert_eq!(r["error"], Value::Null, "{r}");
    assert_eq!(r["owns_agent"], true, "{r}");
    assert_eq!(r["dropped"], 0, "{r}");
    // The adapter stopped the agent it started with the session, which
    // wrote its log and JSONL.
    assert_eq!(
        (
            r["agent_up_before_close"].clone(),
            r["agent_up_after_close"].clone()
        ),
        (true.into(), false.into()),
        "{r}"
    );
    assert!(Path::new(r["finished"]["jsonl"].as_str().unwrap()).exists());

    let rh = rhapsody_checkpoint(dir.path());
    assert_tasks(&rh);
    assert_plot_inputs(dir.path());
    let tal_v = converted(&dir.path().join("tal"));
    // The adapter's agent records RHAPSODY's session.
    assert_eq!(tal_v[0]["session_id"], rh[0]["session_id"]);
    let ours = assert_samples_are_tals(&rh, &tal_v, true);
    // None from psutil: RHAPSODY's poller was never made.
    assert_eq!(resource_updates(&rh).len(), ours.len());
    assert_eq!(r["samples"].as_u64().unwrap() as usize, ours.len(), "{r}");
    // Per GPU too, with each device's own values.
    for gpu in [0, 1] {
        let g: Vec<&&Value> = ours.iter().filter(|l| l["gpu_id"] == gpu).collect();
        assert!(!g.is_empty(), "GPU {gpu}");
        assert!(g
            .iter()
            .all(|l| l["resource_scope"] == "per_gpu" && l["cpu_percent"].is_null()));
    }
    assert_gauges(&r);
}

#[test]
fn registered_after_rhapsodys_start_it_attaches_to_the_wrapping_agent_and_stops_psutil() {
    let dir = tempfile::tempdir().unwrap();
    let r = session(dir.path(), "register", true);
    assert_eq!(r["error"], Value::Null, "{r}");
    assert_eq!(r["owns_agent"], false, "{r}");
    assert_eq!(r["agent"]["session_id"], "agent", "{r}");
    // The agent it attached to is not its to stop.
    assert_eq!(r["agent_up_after_close"], true, "{r}");

    let rh = rhapsody_checkpoint(dir.path());
    assert_tasks(&rh);
    let tal_v = converted(&dir.path().join("agent"));
    let ours = assert_samples_are_tals(&rh, &tal_v, false);
    assert!(ours.iter().all(|l| l["session_id"] == rh[0]["session_id"]));
    // RHAPSODY's poller took at most the sample it takes as it starts.
    let psutil = resource_updates(&rh).len() - ours.len();
    assert!(psutil <= 1, "{psutil} samples from RHAPSODY's own adapter");
    assert_eq!(
        r["stopped_adapters"],
        serde_json::json!(["ConcurrentTelemetryAdapter"])
    );
    assert_gauges(&r);
}

#[test]
fn without_tal_the_adapter_says_why_and_rhapsodys_own_adapter_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let r = session(dir.path(), "notal", false);
    // No exception reached RHAPSODY: the session ran, the reason is kept.
    assert!(
        r["error"].as_str().unwrap().contains("/nonexistent/tal"),
        "{r}"
    );
    assert_eq!(r["samples"], 0, "{r}");
    // RHAPSODY's own adapter, all it has, is left polling.
    assert_eq!(r["stopped_adapters"], serde_json::json!([]), "{r}");
    let rh = rhapsody_checkpoint(dir.path());
    assert_tasks(&rh);
    let updates = resource_updates(&rh);
    assert!(updates.iter().all(|l| l["backend"] == "concurrent"));
    assert!(updates.len() >= 4, "{} samples", updates.len());
}
