//! The GPU agent through the real `tal record` and the real JSONL, with a
//! stub `libnvidia-ml.so.1` (tests/nvml-stub/nvml_stub.c) built here with
//! the system C compiler and scripted per test (CI machines have no NVIDIA
//! driver; the real library is checked on a GPU machine, see
//! docs/performance.md).

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

/// The non-null `gpu_percent` values of device `gpu`.
fn values(v: &[Value], gpu: u64) -> Vec<f64> {
    series(v, gpu, "gpu_percent")
        .iter()
        .filter_map(Value::as_f64)
        .collect()
}

/// What the stub's driver did (its `dump` file): each device's samples
/// `(ts µs, value)`, its exact model energy `(from µs, to µs, mJ)`, and
/// the C calls made, by name.
struct Dump {
    samples: Vec<Vec<(u64, f64)>>,
    energy: Vec<(u64, u64, f64)>,
    calls: std::collections::HashMap<String, u64>,
}

fn read_dump(path: &Path) -> Dump {
    let text = std::fs::read_to_string(path).expect("the stub wrote its dump at nvmlShutdown");
    let mut d = Dump {
        samples: Vec::new(),
        energy: Vec::new(),
        calls: Default::default(),
    };
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f[0] {
            "sample" => {
                let dev: usize = f[1].parse().unwrap();
                if d.samples.len() <= dev {
                    d.samples.resize(dev + 1, Vec::new());
                }
                d.samples[dev].push((f[2].parse().unwrap(), f[3].parse().unwrap()));
            }
            "energy" => d.energy.push((
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
            )),
            "call" => {
                d.calls.insert(f[1].into(), f[2].parse().unwrap());
            }
            _ => {}
        }
    }
    d
}

fn secs_to_us(t: &Value) -> f64 {
    t.as_f64().unwrap() * 1e6
}

#[test]
fn two_gpus_give_per_gpu_series_and_the_node_max() {
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
        assert!(l["nvml_latency_us"].as_f64().unwrap() > 0.0);
        assert_eq!(l["gpu_memory_total_bytes"], MEM);
        // Every poll is covered by a back-fill (the last one at stop).
        assert!(l["gpu_samples"].is_u64(), "{l}");
    }

    // Device 0's series walks the stub's per-sample sequence in order.
    let got = values(&v, 0);
    assert!(got.windows(2).all(|w| w[0] <= w[1]), "{got:?}");
    assert!(got.iter().all(|x| x % 5.0 == 0.0 || (x * 2.0) % 5.0 == 0.0));
    assert!(got.len() >= 15);
    // The stub derives the other fields from its current utilisation.
    for l in resources(&v, "per_gpu") {
        let u = l["gpu_memory_percent"].as_f64().unwrap();
        assert_eq!(l["gpu_power_watts"].as_f64(), Some(100.0 + u), "{l}");
        let half = l["gpu_memory_util_percent"].as_f64().unwrap();
        assert_eq!(half, (u / 2.0).floor(), "{l}");
        assert_eq!(l["gpu_temperature_celsius"].as_f64(), Some(30.0 + half));
        assert_eq!(l["gpu_sm_clock_mhz"].as_f64(), Some(1000.0 + 10.0 * u));
    }
    assert!(values(&v, 1).iter().all(|p| *p == 7.0));

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
            .filter_map(|g| g["gpu_percent"].as_f64())
            .reduce(f64::max);
        assert_eq!(l["gpu_percent"].as_f64(), max, "{l}");
        paired += 1;
    }
    let nodes = resources(&v, "per_node");
    assert!(
        paired + 2 >= nodes.len(),
        "{paired} of {} per_node lines paired",
        nodes.len()
    );

    let m = metric(&v);
    assert!(m["node_gpu_utilization"].is_number(), "{m}");
    assert!(m["agent_gpu_polls"].as_u64().unwrap() >= 20, "{m}");
    assert_eq!(m["agent_gpu_devices_disabled"], 0);
    assert_eq!(m["agent_gpu_errors"], 0);
    assert!(m["agent_gpu_cpu_us_per_poll"].as_f64().unwrap() > 0.0);
    assert!(m["agent_nvml_latency_p50_us"].as_f64().unwrap() > 0.0);
    // One back-fill per device at stop at least (a 1 s run is shorter than
    // the H200-cost period).
    assert!(m["agent_gpu_backfills"].as_u64().unwrap() >= 2, "{m}");
    assert_eq!(m["agent_gpu_backfills_dropped"], 0);
    let attrs = &m["tal_logs"][0]["attributes"];
    assert_eq!(attrs["gpu.0.uuid"], UUID0);
    assert_eq!(attrs["gpu.1.pci_bus_id"], "00000000:2A:00.0");
    assert_eq!(
        m["tal_logs"][0]["gpu_errors"],
        serde_json::json!({"0": 0, "1": 0})
    );
}

/// The freshness check of a duty cycle (0.3 s at 100 %, 0.3 s idle) at the
/// H200's 167 ms sample period: in the JSONL every poll carries exactly the
/// driver samples of its own interval (the back-fill), or says that none
/// came; through the plain query (a driver without `GetSamples`) each poll
/// reads the driver's newest sample, so it lags by at most one period.
#[test]
fn per_gpu_series_follow_the_drivers_own_samples() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump");
    let cfg = two_devices(&format!(
        "pattern 0 300 300\npattern 1 300 300 80 10\ndump {}\n",
        dump.display()
    ));
    let (code, stderr, v) = record_in(dir.path(), &stub("full"), &cfg, &[], &[], &["sleep", "2.5"]);
    assert_eq!(code, Some(0), "{stderr}");
    let d = read_dump(&dump);
    const SLACK_US: f64 = 2000.0;
    for gpu in [0u64, 1] {
        let samples = &d.samples[gpu as usize];
        assert!(samples.len() >= 12, "{} samples", samples.len());
        assert!(samples.iter().any(|s| s.1 > 50.0) && samples.iter().any(|s| s.1 < 50.0));
        let polls: Vec<&Value> = resources(&v, "per_gpu")
            .into_iter()
            .filter(|l| l["gpu_id"] == gpu)
            .collect();
        let (mut next, mut prev_t) = (0usize, f64::MIN);
        let mut fresh = 0;
        let mut carried = 0;
        for p in &polls {
            let t = secs_to_us(&p["event_time"]);
            let n = p["gpu_samples"].as_u64().expect("every poll back-filled") as usize;
            if n > 0 {
                let taken = &samples[next..next + n];
                for s in taken {
                    assert!(
                        s.0 as f64 > prev_t - SLACK_US && s.0 as f64 <= t + SLACK_US,
                        "sample at {} outside the poll interval ({prev_t}, {t}]",
                        s.0
                    );
                }
                let mean = taken.iter().map(|s| s.1).sum::<f64>() / n as f64;
                assert_eq!(
                    p["gpu_percent"].as_f64(),
                    Some((mean * 10.0).round() / 10.0),
                    "{p}"
                );
                let age = t - taken[n - 1].0 as f64;
                assert!((p["gpu_percent_age_ms"].as_f64().unwrap() * 1e3 - age).abs() < SLACK_US);
                next += n;
                fresh += 1;
            } else if next > 0 {
                // No new driver sample: the previous one, with its age.
                let last = samples[next - 1];
                assert_eq!(p["gpu_percent"].as_f64(), Some(last.1), "{p}");
                let age_ms = p["gpu_percent_age_ms"].as_f64().unwrap();
                assert!((age_ms * 1e3 - (t - last.0 as f64)).abs() < SLACK_US, "{p}");
                assert!(age_ms > 0.0);
                carried += 1;
            } else {
                assert!(p["gpu_percent"].is_null(), "no sample yet: {p}");
            }
            prev_t = t;
        }
        // Every sample up to the last poll was used, exactly once.
        let last_t = secs_to_us(&polls.last().unwrap()["event_time"]);
        let due = samples
            .iter()
            .filter(|s| s.0 as f64 <= last_t - SLACK_US)
            .count();
        assert!(
            next >= due && next <= due + 1,
            "{next} of {due} samples used"
        );
        assert!(
            fresh >= 10 && carried >= 5,
            "{fresh} fresh, {carried} carried"
        );
    }

    // The plain query: each poll reads the newest sample at its time.
    let dump2 = dir.path().join("dump2");
    let cfg = two_devices(&format!("pattern 0 300 300\ndump {}\n", dump2.display()));
    let dir2 = tempfile::tempdir().unwrap();
    let (code, stderr, v) = record_in(
        dir2.path(),
        &stub("nosamples"),
        &cfg,
        &[],
        &[],
        &["sleep", "1.5"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let samples = &read_dump(&dump2).samples[0];
    let polls: Vec<&Value> = resources(&v, "per_gpu")
        .into_iter()
        .filter(|l| l["gpu_id"] == 0)
        .collect();
    assert!(polls.len() >= 20);
    let period_us = 167_000.0;
    for p in polls {
        assert!(p["gpu_samples"].is_null(), "{p}");
        let t = secs_to_us(&p["event_time"]);
        let got = p["gpu_percent"].as_f64().unwrap();
        let newest = samples.iter().rev().find(|s| s.0 as f64 <= t + SLACK_US);
        match newest {
            Some(s) => {
                let lag = t - s.0 as f64;
                let near = samples
                    .iter()
                    .filter(|s| {
                        (s.0 as f64) > t - period_us - SLACK_US && s.0 as f64 <= t + SLACK_US
                    })
                    .any(|s| s.1 == got);
                assert!(
                    near,
                    "{got} at {t} is no driver sample of the last period (lag {lag})"
                );
            }
            None => assert_eq!(got, 0.0, "before the first sample"),
        }
    }
}

/// The GPU thread never calls the costly queries on its polling path:
/// `GetSamples` once per device at start, then at most one back-fill per
/// device every second, plus one each at stop; the 4 ms energy counter
/// never.
#[test]
fn the_polling_path_makes_only_cheap_calls() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump");
    // Back-fill calls that cost nothing are made as often as allowed (1 s).
    let cfg = two_devices(&format!(
        "util 0 50\nutil 1 50\ncost nvmlDeviceGetSamples 0\ndump {}\n",
        dump.display()
    ));
    let (code, stderr, v) = record_in(dir.path(), &stub("full"), &cfg, &[], &[], &["sleep", "2.2"]);
    assert_eq!(code, Some(0), "{stderr}");
    let d = read_dump(&dump);
    let polls = metric(&v)["agent_gpu_polls"].as_u64().unwrap();
    assert!(polls >= 40);
    assert_eq!(d.calls["nvmlDeviceGetUtilizationRates"], 2 * (polls + 1));
    let samples = d.calls["nvmlDeviceGetSamples"];
    assert!(
        (2 * 3..=2 * 5).contains(&samples),
        "{samples} GetSamples calls"
    );
    assert_eq!(d.calls["nvmlDeviceGetTotalEnergyConsumption"], 0);
    assert_eq!(d.calls["nvmlDeviceGetFieldValues"], 0);
    assert_eq!(d.calls["nvmlDeviceGetMemoryInfo"], 0);
    // The processes are asked for only when a device's memory in use
    // changed (here once: the driver's first sample), or a second after
    // the previous call: two to four times per device in 2.2 s, not at
    // each poll; and each time with one C call, no count query (which
    // would double the count).
    let procs = d.calls["nvmlDeviceGetComputeRunningProcesses_v3"];
    assert!(
        (2 * 2..=2 * 6).contains(&procs),
        "{procs} process queries in {polls} polls"
    );
}

/// Records `sh -c` of the script `script(tal, procs)` gives, sampling
/// tasks every 0.1 s, on two devices at 50 % whose compute processes the
/// script lists in the file `procs` (empty at first); it must exit 0. The
/// session's JSONL lines.
fn record_with_procs(dir: &Path, script: impl FnOnce(&str, &str) -> String) -> Vec<Value> {
    record_with_procs_and(dir, &[], script)
}

/// [`record_with_procs`], with more flags for `tal record`.
fn record_with_procs_and(
    dir: &Path,
    flags: &[&str],
    script: impl FnOnce(&str, &str) -> String,
) -> Vec<Value> {
    let procs = dir.join("procs");
    std::fs::write(&procs, "").unwrap();
    let cfg = two_devices(&format!(
        "util 0 50\nutil 1 50\nprocs {}\n",
        procs.display()
    ));
    let script = script(env!("CARGO_BIN_EXE_tal"), &procs.display().to_string());
    let mut args = vec!["--task-interval", "0.1s"];
    args.extend_from_slice(flags);
    let (code, stderr, v) = record_in(dir, &stub("full"), &cfg, &args, &[], &["sh", "-c", &script]);
    assert_eq!(code, Some(0), "{stderr}");
    v
}

/// The process list is reused while a device's memory in use holds
/// still, and asked for again at least every second: a process that
/// takes over exactly the memory another held (the device's total
/// unchanged) is still found.
#[test]
fn a_process_list_that_changes_at_equal_memory_is_seen_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    // Task b's process lists itself with the 5 MB that task a's (gone)
    // process was listed with: the device's memory does not move.
    let v = record_with_procs(dir.path(), |tal, p| {
        format!(
            "{tal} run --task-id a -- sh -c 'echo 0 $$ 5000000 > {p}; sleep 0.6' && \
             {tal} run --task-id b -- sh -c 'echo 0 $$ 5000000 > {p}; sleep 2; : > {p}'"
        )
    });
    let done = lines(&v, "event", Some("TaskCompleted"));
    for task in ["a", "b"] {
        let t = done.iter().find(|l| l["task_id"] == task).unwrap();
        assert_eq!(
            t["attributes"]["gpu_memory_peak_bytes"],
            serde_json::json!({"0": 5000000}),
            "{t}"
        );
    }
}

/// Energy: the power readings integrated over the polls, per device, on
/// every per_gpu event, on the session span and the metric line, and per
/// task (the devices' energy while it ran).
#[test]
fn gpu_energy_is_integrated_per_device_session_and_task() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump");
    // Constant utilisation: 150 W on device 0, 120 W on device 1, once the
    // driver's first sample is in.
    let cfg = two_devices(&format!("util 0 50\nutil 1 20\ndump {}\n", dump.display()));
    let tal = env!("CARGO_BIN_EXE_tal");
    let script = format!("sleep 0.4; {tal} run --task-id gpu.work -- sleep 1; sleep 0.3");
    let (code, stderr, v) = record_in(
        dir.path(),
        &stub("full"),
        &cfg,
        &[],
        &[],
        &["sh", "-c", &script],
    );
    assert_eq!(code, Some(0), "{stderr}");
    for (gpu, watts) in [(0u64, 150.0), (1, 120.0)] {
        let polls: Vec<&Value> = resources(&v, "per_gpu")
            .into_iter()
            .filter(|l| l["gpu_id"] == gpu)
            .collect();
        let e: Vec<f64> = polls
            .iter()
            .map(|l| l["gpu_energy_joules"].as_f64().unwrap())
            .collect();
        assert_eq!(e[0], 0.0);
        assert!(e.windows(2).all(|w| w[0] <= w[1]), "{e:?}");
        // From the driver's second sample on, the power is constant.
        let t = |l: &Value| l["event_time"].as_f64().unwrap();
        let from = polls
            .iter()
            .position(|l| l["gpu_power_watts"] == watts)
            .unwrap()
            + 1;
        let (a, b) = (polls[from], *polls.last().unwrap());
        let want = watts * (t(b) - t(a));
        let got = e[e.len() - 1] - e[from];
        // Trapezoids between poll completions (not deadlines): one poll's
        // jitter of slack.
        assert!(
            (got - want).abs() < watts * 0.01,
            "device {gpu}: {got} J, want {want}"
        );
    }
    let m = metric(&v);
    let last = |g: u64| {
        resources(&v, "per_gpu")
            .into_iter()
            .rfind(|l| l["gpu_id"] == g)
            .unwrap()["gpu_energy_joules"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(m["gpu_energy_joules"]["0"].as_f64(), Some(last(0)));
    assert_eq!(m["gpu_energy_joules"]["1"].as_f64(), Some(last(1)));
    let total = m["gpu_energy_joules_total"].as_f64().unwrap();
    assert!((total - last(0) - last(1)).abs() < 0.01);
    // The stub's exact model energy over its whole life, against tal's
    // integral over the polls: tal misses the time before its first poll
    // and after its last, a fraction of a second.
    let d = read_dump(&dump);
    let (from, to, mj) = d.energy[0];
    let life = (to - from) as f64 / 1e6;
    assert!(
        last(0) < mj / 1e3 && last(0) > mj / 1e3 - 150.0 * 0.5,
        "{} vs {} over {life} s",
        last(0),
        mj / 1e3
    );

    let session = lines(&v, "span", None)
        .into_iter()
        .find(|s| s["name"] == "session")
        .unwrap();
    assert_eq!(
        session["attributes"]["gpu_energy_joules"],
        m["gpu_energy_joules"]
    );
    assert_eq!(
        session["attributes"]["gpu_energy_joules_total"],
        m["gpu_energy_joules_total"]
    );

    // The task ran ~1 s: each device's energy over it, to within a poll at
    // either end.
    let done = lines(&v, "event", Some("TaskCompleted"));
    let task = done.iter().find(|l| l["task_id"] == "gpu.work").unwrap();
    let dur = task["duration_seconds"].as_f64().unwrap();
    let te = &task["attributes"]["gpu_energy_joules"];
    for (g, watts) in [("0", 150.0), ("1", 120.0)] {
        let j = te[g].as_f64().unwrap_or_else(|| panic!("{task}"));
        assert!(
            (j - watts * dur).abs() <= watts * 0.15,
            "device {g}: {j} J over {dur} s"
        );
    }
    let span = lines(&v, "span", None)
        .into_iter()
        .find(|s| s["attributes"]["task_id"] == "gpu.work")
        .unwrap();
    assert_eq!(&span["attributes"]["gpu_energy_joules"], te);
}

#[test]
fn a_failing_device_is_disabled_once_and_the_other_goes_on() {
    let cfg = two_devices("util 0 40\nutil 1 60\nfail 1 8\n");
    let (code, stderr, v) = record_with(&stub("full"), &cfg, &[], &[], "1");
    assert_eq!(code, Some(0), "{stderr}");
    let reports: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("retrying with backoff"))
        .collect();
    assert_eq!(reports.len(), 1, "{stderr}");
    assert!(
        reports[0].starts_with(&format!("tal: GPU 1 ({UUID1})")),
        "{stderr}"
    );
    assert!(!stderr.contains("answers again"), "{stderr}");
    // Device 1 answered its first polls (the probe took one), then nothing.
    assert_eq!(series(&v, 1, "gpu_percent").len(), 7);
    assert!(series(&v, 0, "gpu_percent").len() >= 15);
    // The node max follows the devices that still answer.
    let nodes = resources(&v, "per_node");
    assert_eq!(nodes.last().unwrap()["gpu_percent"].as_f64(), Some(40.0));
    assert!(nodes.iter().any(|l| l["gpu_percent"] == 60.0));
    let m = metric(&v);
    assert_eq!(m["agent_gpu_devices_disabled"], 1);
    // The first error, then one per retry (0.25 s, 0.5 s: about 3 in 1 s).
    let errs = m["tal_logs"][0]["gpu_errors"]["1"].as_u64().unwrap();
    assert!((2..=4).contains(&errs), "{m}");
    assert_eq!(m["tal_logs"][0]["gpu_errors"]["0"], 0);
    assert_eq!(m["agent_gpu_errors"].as_u64(), Some(errs));
}

/// A device that fails for a while is retried with backoff and comes
/// back: said once when it stops and once when it answers again.
#[test]
fn a_device_that_comes_back_is_sampled_again() {
    let cfg = two_devices("util 0 40\nutil 1 60\noutage 1 400 900\n");
    let (code, stderr, v) = record_with(&stub("full"), &cfg, &[], &[], "2");
    assert_eq!(code, Some(0), "{stderr}");
    let stops: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("retrying with backoff"))
        .collect();
    let backs: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("answers again"))
        .collect();
    assert_eq!((stops.len(), backs.len()), (1, 1), "{stderr}");
    assert!(
        stops[0].starts_with(&format!("tal: GPU 1 ({UUID1}): ")),
        "{stderr}"
    );
    assert!(
        backs[0].starts_with(&format!("tal: GPU 1 ({UUID1}) answers again after ")),
        "{stderr}"
    );
    // A gap in device 1's series, samples on both sides of it.
    let t: Vec<f64> = resources(&v, "per_gpu")
        .into_iter()
        .filter(|l| l["gpu_id"] == 1)
        .map(|l| l["event_time"].as_f64().unwrap())
        .collect();
    let gap = t.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!((0.45..1.2).contains(&gap), "longest gap {gap} s");
    assert!(t.len() >= 20);
    let m = metric(&v);
    assert_eq!(m["agent_gpu_devices_disabled"], 1);
    let errs = m["tal_logs"][0]["gpu_errors"]["1"].as_u64().unwrap();
    assert!((1..=3).contains(&errs), "{m}");
}

#[test]
fn without_nvmldevicegetsamples_the_plain_query_is_used() {
    let cfg = two_devices("util 0 10,20,30,40,50\nutil 1 0\n");
    let (code, stderr, v) = record_with(&stub("nosamples"), &cfg, &[], &[], "1");
    assert_eq!(code, Some(0), "{stderr}");
    // The driver's newest sample at each poll (0 before its first).
    let got = values(&v, 0);
    assert!(got.windows(2).all(|w| w[0] <= w[1]), "{got:?}");
    assert!(got
        .iter()
        .all(|x| [0.0, 10.0, 20.0, 30.0, 40.0, 50.0].contains(x)));
    assert_eq!(got.last(), Some(&50.0));
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
    assert!(series(&v, 0, "gpu_samples").iter().all(Value::is_u64));
    assert!(series(&v, 1, "gpu_samples").iter().all(Value::is_null));
    let one = values(&v, 1);
    assert!(one.iter().all(|p| *p == 50.0 || *p == 0.0));
    assert_eq!(one.last(), Some(&50.0));
    assert!(!stderr.contains("retrying"), "{stderr}");
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
    assert!(values(&v, 0).iter().all(|p| *p == 22.0));
    assert!(values(&v, 1).iter().all(|p| *p == 11.0));
    assert!(!values(&v, 0).is_empty());
    assert_eq!(metric(&v)["tal_logs"][0]["attributes"]["gpu.0.uuid"], UUID1);

    // --gpus overrides the environment; `none` and a hidden list sample nothing.
    let (_, _, v) = record_with(
        &lib,
        &cfg,
        &["--gpus", "1"],
        &[("CUDA_VISIBLE_DEVICES", "0")],
        "0.4",
    );
    assert!(values(&v, 0).iter().all(|p| *p == 22.0));
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
    // The task's own shell uses GPU 0 (1 MB, then 3 MB), and a child of it
    // GPU 1 (5 MB); a process that is not the task's uses GPU 1 too.
    let v = record_with_procs(dir.path(), |tal, p| {
        format!(
            "{tal} run --task-id gpu.task -- sh -c '\
               echo 0 $$ 1000000 > {p}; sleep 0.4; \
               echo 0 $$ 3000000 > {p}; sleep 1 & \
               printf \"0 $$ 3000000\\n1 $! 5000000\\n1 1 9000000\\n\" > {p}; sleep 0.4; \
               echo 0 $$ 2000000 > {p}; sleep 0.3; : > {p}; wait' && \
             {tal} run --task-id cpu.task -- sleep 0.3"
        )
    });
    // Each of its resource samples carries what its processes used on
    // each GPU at the latest poll: one of the states the script went
    // through (or none, between them), never the other process's 9 MB.
    let allowed = [
        serde_json::json!({"0": 1000000}),
        serde_json::json!({"0": 3000000}),
        serde_json::json!({"0": 3000000, "1": 5000000}),
        serde_json::json!({"0": 2000000}),
        Value::Null,
    ];
    let task_samples: Vec<&Value> = lines(&v, "event", Some("tal.TaskResourceUpdate"))
        .into_iter()
        .filter(|l| l["task_id"] == "gpu.task")
        .collect();
    assert!(task_samples.len() >= 5, "{}", task_samples.len());
    for s in &task_samples {
        assert!(allowed.contains(&s["gpu_memory_bytes"]), "{s}");
    }
    assert!(
        task_samples
            .iter()
            .any(|s| s["gpu_memory_bytes"] == allowed[2]),
        "both devices at once in some sample"
    );
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

    // The report shows both devices' series, and the task's GPU memory.
    let page = dir.path().join("gpu.html");
    let jsonl = files_with_ext(&dir.path().join("out"), ".telemetry.jsonl");
    let out = run(common::tal()
        .arg("report")
        .arg(&jsonl[0])
        .arg("-o")
        .arg(&page));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = report_data(&std::fs::read_to_string(&page).unwrap());
    let gpus = d["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 2);
    assert!(gpus
        .iter()
        .all(|g| g["v"][0].as_array().unwrap().iter().any(|x| x == 50)));
    let ids = d["tasks"]["id"].as_array().unwrap();
    let at = ids.iter().position(|x| x == "gpu.task").unwrap();
    assert_eq!(d["tasks"]["gpu_mem"][at], 8_000_000.0);
    // Timeline, two task charts, four node charts, heatmap, three GPU charts.
    let charts = assert_renders(&page, 11);
    assert_panels_match(&charts, &v);
}

/// A node of 14 GPUs (more than the report's 12 colours): its GPU charts
/// draw the devices combined, and no two lines of a chart share a colour
/// (the page's geometry check, run by `assert_renders`).
#[test]
fn fourteen_gpus_are_drawn_combined_in_colours_of_their_own() {
    let lib = stub("full");
    let cfg: String = (0..14)
        .map(|i| {
            format!(
                "device GPU-{i:08}-0000-0000-0000-000000000000 00000000:{:02X}:00.0 {MEM} stub GPU\nutil {i} {}\n",
                i + 16,
                i * 5
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr, v) = record_in(dir.path(), &lib, &cfg, &[], &[], &["sleep", "0.6"]);
    assert_eq!(code, Some(0), "{stderr}");
    let jsonl = files_with_ext(&dir.path().join("out"), ".telemetry.jsonl");
    let page = dir.path().join("gpus.html");
    let out = run(common::tal()
        .arg("report")
        .arg(&jsonl[0])
        .arg("-o")
        .arg(&page));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let charts = assert_renders(&page, 8);
    assert_panels_match(&charts, &v);
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
    assert!(values(&v, 0).iter().all(|p| *p == 10.0));
    // MIG instances tell memory, not utilisation.
    for g in [1, 2] {
        let mem = series(&v, g, "gpu_memory_total_bytes");
        assert!(!mem.is_empty());
        assert!(mem.iter().all(|m| *m == MEM / 2));
        assert!(series(&v, g, "gpu_percent").iter().all(Value::is_null));
    }
    assert!(!stderr.contains("retrying"), "{stderr}");
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

/// `tal summary` of a session with GPUs: tasks ranked by GPU memory and
/// GPU energy as their terminal events say, each GPU's mean, idle share
/// and energy, and a note on the idle one.
#[test]
fn the_summary_ranks_tasks_by_gpu_memory_and_energy_and_notes_an_idle_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let procs = dir.path().join("procs");
    std::fs::write(&procs, "").unwrap();
    let cfg = two_devices(&format!("util 0 50\nutil 1 0\nprocs {}\n", procs.display()));
    let (tal, p) = (env!("CARGO_BIN_EXE_tal"), procs.display());
    let script = format!(
        "{tal} run --task-id gpu.task -- sh -c 'echo 0 $$ 3000000 > {p}; sleep 0.6; : > {p}' && \
         {tal} run --task-id cpu.task -- sleep 0.3"
    );
    let (code, stderr, v) = record_in(
        dir.path(),
        &stub("full"),
        &cfg,
        &["--task-interval", "0.1s"],
        &[],
        &["sh", "-c", &script],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let jsonl = files_with_ext(&dir.path().join("out"), ".telemetry.jsonl");
    let out = run_ok(common::tal().arg("summary").arg("--json").arg(&jsonl[0]));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    let done = lines(&v, "event", Some("TaskCompleted"));
    let summed = |t: &Value, k: &str| {
        let m = t["attributes"][k].as_object()?;
        Some(m.values().map(|x| x.as_f64().unwrap()).sum::<f64>())
    };
    let gm = s["rankings"]["gpu_memory"]["top"].as_array().unwrap();
    let gpu_task = done.iter().find(|l| l["task_id"] == "gpu.task").unwrap();
    assert_eq!(gm.len(), 1, "only gpu.task had GPU processes: {gm:?}");
    assert_eq!(gm[0]["task_id"], "gpu.task");
    assert_eq!(
        gm[0]["gpu_memory_peak_bytes"].as_f64(),
        summed(gpu_task, "gpu_memory_peak_bytes")
    );
    let mut want: Vec<(&str, f64)> = done
        .iter()
        .filter_map(|t| Some((t["task_id"].as_str()?, summed(t, "gpu_energy_joules")?)))
        .collect();
    want.sort_by(|a, b| b.1.total_cmp(&a.1));
    let ge = s["rankings"]["gpu_energy"]["top"].as_array().unwrap();
    assert_eq!(ge.len(), want.len(), "{ge:?}");
    for (g, (id, j)) in ge.iter().zip(&want) {
        assert_eq!(g["task_id"], *id);
        assert!((g["gpu_energy_joules"].as_f64().unwrap() - j).abs() < 1e-9);
    }
    let m = metric(&v);
    let gpus = &s["nodes"][0]["gpus"];
    for g in ["0", "1"] {
        let i: usize = g.parse().unwrap();
        assert_eq!(
            gpus[i]["energy_joules"].as_f64(),
            m["gpu_energy_joules"][g].as_f64()
        );
    }
    assert!(gpus[1]["idle_percent"].as_f64().unwrap() >= 90.0, "{gpus}");
    assert!(gpus[0]["idle_percent"].as_f64().unwrap() < 50.0, "{gpus}");
    assert!((gpus[0]["utilization_mean_percent"].as_f64().unwrap() - 50.0).abs() < 10.0);
    let notes = s["notes"].to_string();
    assert!(notes.contains("GPU 1 idle (< 5 %) for "), "{notes}");
    assert!(!notes.contains("GPU 0 idle"), "{notes}");
    assert_eq!(s["job"]["gpus"]["gpus"], 2);
    let text = run_ok(common::tal().arg("summary").arg(&jsonl[0])).stdout;
    let text = String::from_utf8_lossy(&text);
    let at = text.find("tasks by GPU memory").expect(&text);
    assert!(text[at..]
        .lines()
        .nth(2)
        .unwrap()
        .trim_start()
        .starts_with("gpu.task"));
    assert!(text.contains("    gpu 1      mean "), "{text}");
}

/// The Parquet dataset of a session with GPUs, written by the agent at the
/// end: every per_gpu poll (with its back-filled driver samples, memory,
/// power, energy, temperature and clock) is a row of `gpu_samples`, and the
/// tasks' GPU memory and energy are in `tasks` and `task_samples`, equal
/// to the JSONL's as pyarrow, DuckDB and polars read them
/// (tests/python/dataset_check.py).
#[test]
fn the_dataset_holds_every_gpu_poll_and_the_tasks_gpu_figures() {
    let dir = tempfile::tempdir().unwrap();
    let v = record_with_procs_and(dir.path(), &["--format", "jsonl,parquet"], |tal, p| {
        format!(
            "{tal} run --task-id gpu.task -- sh -c 'echo 0 $$ 3000000 > {p}; sleep 0.6; : > {p}' && \
             {tal} run --task-id bad -- false; true"
        )
    });
    assert!(resources(&v, "per_gpu").len() > 20);
    let jsonl = files_with_ext(&dir.path().join("out"), ".telemetry.jsonl");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/dataset_check.py");
    let out = Command::new(python())
        .arg(script)
        .arg(&jsonl[0])
        .arg(dir.path().join("out/gpu.dataset"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let counts: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        counts["rows"]["gpu_samples"].as_u64(),
        Some(resources(&v, "per_gpu").len() as u64)
    );
    // `tal summary` and `tal report` of the dataset: what they say of the
    // log, GPU panels and the agent's GPU figures included.
    let logs = files_with_ext(&dir.path().join("out"), ".tal");
    let ds = dir.path().join("out/gpu.dataset");
    let summary = |input: &Path| {
        let out = run_ok(tal().args(["summary", "--json", "-q"]).arg(input));
        String::from_utf8(out.stdout).unwrap()
    };
    let from_logs = summary(&logs[0]);
    assert!(
        from_logs.contains("agent_gpu_cpu_us_per_poll"),
        "{from_logs}"
    );
    assert_eq!(from_logs, summary(&ds));
    let report = |input: &Path, page: &str| {
        let page = dir.path().join(page);
        run_ok(tal().args(["report", "-q"]).arg(input).arg("-o").arg(&page));
        std::fs::read(page).unwrap()
    };
    assert!(report(&logs[0], "logs.html") == report(&ds, "ds.html"));
}

/// `tal report` and `tal summary` read the node log of a session with
/// GPUs (per-device series, a task's GPU memory and energy) as they read
/// its JSONL (see `tests/from_logs.rs`).
#[test]
fn a_session_with_gpus_reads_from_its_log_as_from_its_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let v = record_with_procs(dir.path(), |tal, p| {
        format!(
            "{tal} run --task-id a -- sh -c 'echo 0 $$ 5000000 > {p}; sleep 0.4; : > {p}' && \
             {tal} run --task-id b -- sleep 0.2"
        )
    });
    let done = lines(&v, "event", Some("TaskCompleted"));
    assert!(done
        .iter()
        .any(|t| t["attributes"]["gpu_memory_peak_bytes"].is_object()));
    assert!(!resources(&v, "per_gpu").is_empty());
    let logs = files_with_ext(&dir.path().join("out"), ".tal");
    let cmp = dir.path().join("cmp");
    std::fs::create_dir(&cmp).unwrap();
    assert_logs_read_as_their_jsonl(&cmp, &logs);
}
