"""The figures of one scripts/gpu-machine/check.sh run, from its result folder (argv[1]).

Prints, for docs/performance.md: how tal's per-GPU series followed the load's known
phases (beside RHAPSODY's adapter at the same moments), each task's GPU
memory and energy, the UUID mapping, the idle overhead side by side, tal's
own memory, and the task-sampling benchmark's table.
"""
import glob
import json
import os
import statistics
import sys

res = sys.argv[1]


def jsonl(name):
    path = os.path.join(res, name)
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path):
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def per_gpu(lines):
    return [l for l in lines if l.get("event_type") == "ResourceUpdate" and l.get("gpu_id") is not None]


def metric(lines):
    m = [l for l in lines if l.get("section") == "metric"]
    return m[-1] if m else {}


def stats(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "none"
    return "mean %.1f, min %.1f, max %.1f (n=%d)" % (statistics.mean(vals), min(vals), max(vals), len(vals))


print("# 1. phases (gpu_percent in each phase, its first 0.2 s left out)")
phases = jsonl("phases.jsonl")
tal = per_gpu(jsonl("t1.jsonl"))
rh = per_gpu(jsonl("rh1.jsonl"))
for p in phases:
    t0, t1 = p["t0"] + 0.2, p["t1"]
    mine = [l for l in tal if t0 <= l["event_time"] <= t1]
    theirs = [l for l in rh if t0 <= l["event_time"] <= t1]
    fresh = sum(1 for l in mine if (l.get("gpu_samples") or 0) > 0)
    mem = [l.get("gpu_memory_used_bytes") for l in mine]
    print(
        "%-7s %5.2f s | tal %s; fresh %d of %d; memory max %s GB; power %s | RHAPSODY %s"
        % (
            p["phase"],
            p["t1"] - p["t0"],
            stats([l.get("gpu_percent") for l in mine]),
            fresh,
            len(mine),
            "%.2f" % (max(m for m in mem if m is not None) / 1e9) if any(m is not None for m in mem) else "-",
            stats([l.get("gpu_power_watts") for l in mine]),
            stats([l.get("gpu_percent") for l in theirs]),
        )
    )
m1 = metric(jsonl("t1.jsonl"))
print("metric line (under load):", {k: m1.get(k) for k in (
    "agent_gpu_cpu_us_per_poll", "agent_nvml_latency_p50_us", "agent_nvml_latency_p99_us",
    "agent_gpu_backfills", "agent_gpu_backfill_cpu_us", "agent_gpu_errors", "gpu_energy_joules_total")})

print("\n# 2. per task")
for l in jsonl("t2.jsonl"):
    if l.get("event_type") in ("TaskCompleted", "TaskFailed"):
        a = l.get("attributes", {})
        print("%-9s %s: gpu_memory_peak_bytes %s, gpu_energy_joules %s, duration %.2f s, cpu_percent_peak %s"
              % (l["task_id"], l["event_type"], a.get("gpu_memory_peak_bytes"), a.get("gpu_energy_joules"),
                 l.get("duration_seconds") or 0, a.get("cpu_percent_peak")))
for l in jsonl("t2.jsonl"):
    if l.get("event_type") == "tal.TaskResourceUpdate" and l.get("gpu_memory_bytes"):
        print("  a sample of", l["task_id"], "gpu_memory_bytes", l["gpu_memory_bytes"])
        break
m2 = metric(jsonl("t2.jsonl"))
print("session energy:", m2.get("gpu_energy_joules"), "total", m2.get("gpu_energy_joules_total"))

print("\n# 3. CUDA_VISIBLE_DEVICES by UUID")
m3 = metric(jsonl("t3.jsonl"))
for log in m3.get("tal_logs", []):
    print({k: v for k, v in log.get("attributes", {}).items() if k.startswith("gpu.")})
print("gpu_ids seen:", sorted({l["gpu_id"] for l in per_gpu(jsonl("t3.jsonl"))}))

print("\n# 4. idle overhead, side by side (µs of CPU per 0.1 s sample)")
try:
    o = json.load(open(os.path.join(res, "overhead.json")))
    rh4 = json.load(open(os.path.join(res, "rh4.json")))
    print(o)
    print("RHAPSODY adapter:", rh4)
    r = rh4["rhapsody_cpu_us_per_sample"]
    print(
        "tal whole %.1f, RHAPSODY %.1f: RHAPSODY / tal = %.2f (budget >= 5); tal without its GPU thread / floor = %.3f (budget <= 1.25); "
        "GPU thread beyond one wake-up, per poll of one device: %.1f µs (budget <= 50); whole tal vs 1.25 x floor + wake-up + 50: %.1f vs %.1f"
        % (
            o["tal_us_per_sample"], r, r / o["tal_us_per_sample"],
            o["tal_without_gpu_thread_us_per_sample"] / o["floor_us_per_sample"],
            o["tal_gpu_thread_us_per_poll"] - o["wake_us"],
            o["tal_us_per_sample"], 1.25 * o["floor_us_per_sample"] + o["wake_us"] + 50,
        )
    )
except (OSError, ValueError, KeyError) as e:
    print("no overhead figures:", e)
print(open(os.path.join(res, "tal-memory.txt")).read() if os.path.exists(os.path.join(res, "tal-memory.txt")) else "")
m4 = metric(jsonl("t4.jsonl"))
print("metric line (idle):", {k: m4.get(k) for k in (
    "agent_cpu_us_per_sample", "agent_gpu_cpu_us_per_poll", "agent_nvml_latency_p50_us",
    "agent_peak_rss_bytes", "agent_sampling_jitter_p99_ms", "agent_gpu_backfills")})

print("\n# 5. task sampling")
for f in sorted(glob.glob(os.path.join(res, "tasks-*.txt"))):
    print("##", os.path.basename(f))
    for line in open(f):
        if line.startswith("|") or line.startswith("#"):
            print(line.rstrip())
