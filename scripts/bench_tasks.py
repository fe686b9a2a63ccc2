"""Memory per task at conversion (issue: a session's end must not cost
memory without bound).

Usage: python bench_tasks.py TAL GENTASKS [OPEN=1000000] [CLOSED=1000000] [RECORD_OPEN=500000]

Measured side by side in one run, each as the peak resident memory of the
process (the kernel's figure, by /usr/bin/time), with the
conversion's own peak that tal reports on stderr beside it:

  - `tal convert` of a log with no tasks (the baseline), of OPEN tasks that
    never end, and of CLOSED tasks that do (logs made by examples/gentasks
    through the real writer: every task as `tal run` reports it). Bytes per
    task = (peak - baseline peak) / tasks; the budget is <= 300 bytes per
    open task.
  - `tal record` whose client sends RECORD_OPEN tasks (TaskCreated and
    TaskStarted with a pid, as `tal run` does) over the socket and never
    ends them, then `tal stop`: the agent's own peak
    (`agent_peak_rss_bytes` of the metric line, taken before the
    conversion), the conversion's peak as tal reports it, and the whole
    process's peak.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

MIB = 1 << 20


def reported_peak(stderr: str) -> tuple[float, float] | None:
    """tal's report of its conversion: (peak MiB, MiB more than at its start)."""
    m = re.search(r"peak memory ([0-9.]+) MiB, ([0-9.]+) MiB more", stderr)
    return (float(m.group(1)), float(m.group(2))) if m else None


def timed(cmd: list[str], work: str) -> tuple[int, str, float]:
    """Runs cmd under /usr/bin/time; returns its peak RSS (bytes, the
    kernel's figure), its stderr and the wall seconds."""
    out = os.path.join(work, "time")
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out, *cmd],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{cmd[:2]} failed: {p.stderr}")
    with open(out) as f:
        kib = int(f.read().split()[-1])
    return kib * 1024, p.stderr, dt


def convert_peak(tal: str, gentasks: str, work: str, open_: int, closed: int, otlp: bool = False):
    """Peak RSS, tal's report and seconds of `tal convert` of a gentasks
    log to JSONL (and, with otlp, then to OTLP JSON: (peak, seconds))."""
    log = os.path.join(work, f"t.{open_}.{closed}.tal")
    subprocess.run([gentasks, log, str(open_), str(closed)], check=True)
    peak, err, dt = timed([tal, "convert", log, "-o", os.path.join(work, "out.jsonl")], work)
    os.remove(os.path.join(work, "out.jsonl"))
    o = None
    if otlp:
        prefix = os.path.join(work, "out")
        opeak, _, odt = timed([tal, "convert", log, "--format", "otlp-json", "-o", prefix], work)
        o = (opeak, odt)
        for suffix in (".traces.json", ".metrics.json"):
            os.remove(prefix + suffix)
    os.remove(log)
    return peak, reported_peak(err), dt, o


def record_open_tasks(tal: str, work: str, n: int):
    sock = os.path.join(work, "bench.sock")
    out = os.path.join(work, "rec")
    payload = os.path.join(work, "tasks.jsonl")
    with open(payload, "w") as f:
        for i in range(n):
            attrs = '{"executable": "/bin/sleep", "task_type": "ComputeTask"}'
            f.write('{"event_type": "TaskCreated", "task_id": "task.%07d", "attributes": %s}\n' % (i, attrs))
            f.write('{"event_type": "TaskStarted", "task_id": "task.%07d", "backend": "concurrent", '
                    '"attributes": {"executable": "/bin/sleep", "task_type": "ComputeTask", "pid": %d}}\n'
                    % (i, 1000 + i))
    agent = subprocess.Popen(
        ["/usr/bin/time", "-f", "%M", "-o", os.path.join(work, "time"), tal, "record", "--interval", "0.1", "--session-id", "bench.tasks",
         "--node-id", "n", "--out", out, "--socket", sock, "--gpus", "none"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        # Ready when it answers a ping.
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock)
            s.sendall(b'{"op": "ping"}\n')
            if b'"ok": true' in s.makefile("rb").readline():
                break
        except OSError:
            pass
        finally:
            s.close()
        if time.monotonic() > deadline:
            agent.kill()
            sys.exit("tal record did not answer within 60 s")
        time.sleep(0.05)
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    with open(payload, "rb") as f:
        s.sendfile(f)
    s.sendall(b'{"op": "ping"}\n')
    assert b'"ok": true' in s.makefile("rb").readline()
    s.close()
    stop = subprocess.run([tal, "stop", "--socket", sock], capture_output=True, text=True, timeout=600)
    assert stop.returncode == 0, stop.stderr
    _, err = agent.communicate(timeout=600)
    with open(os.path.join(work, "time")) as f:
        whole = int(f.read().split()[-1]) * 1024
    jsonl = json.loads(stop.stdout)["jsonl"]
    agent_peak = 0
    with open(jsonl) as fh:
        for line in fh:
            if '"section": "metric"' in line:
                m = json.loads(line)
                agent_peak = m["agent_peak_rss_bytes"]
                assert m.get("ingest_events_accepted", 0) == 2 * n, m
    for name in os.listdir(out):
        os.remove(os.path.join(out, name))
    os.remove(payload)
    return whole, agent_peak, reported_peak(err)


def main() -> None:
    tal, gentasks = sys.argv[1], sys.argv[2]
    open_ = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
    closed = int(sys.argv[4]) if len(sys.argv) > 4 else 1_000_000
    rec = int(sys.argv[5]) if len(sys.argv) > 5 else 500_000
    with tempfile.TemporaryDirectory() as work:
        base, base_rep, _, _ = convert_peak(tal, gentasks, work, 0, 0)
        rows = []
        for label, o, c in [(f"{open_} open tasks", open_, 0), (f"{closed} closed tasks", 0, closed)]:
            peak, rep, dt, otlp = convert_peak(tal, gentasks, work, o, c, otlp=c > 0)
            per = (peak - base) / max(o + c, 1)
            rows.append((label, peak, rep, dt, per, o > 0))
            if otlp:
                rows.append((f"{label}, to OTLP JSON (--format otlp-json)", otlp[0], None, otlp[1],
                             (otlp[0] - base) / c, False))
        whole, agent_peak, conv_peak = record_open_tasks(tal, work, rec)
    fmt = lambda r: f"{r[0]} MiB ({r[1]} MiB over its start)" if r else "?"
    print(f"# memory at conversion: gentasks logs (TaskCreated, TaskSubmitted, TaskStarted with pid, "
          f"TaskCompleted for closed ones), {os.cpu_count()} CPUs")
    print("| measure | peak RSS | the conversion's peak, as tal reports it | per task | time |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| tal convert, no tasks (baseline) | {base / MIB:.1f} MiB | {fmt(base_rep)} | | |")
    for label, peak, rep, dt, per, is_open in rows:
        budget = " (budget <= 300)" if is_open else ""
        print(f"| tal convert, {label} | {peak / MIB:.1f} MiB | {fmt(rep)} | {per:.0f} B{budget} | {dt:.1f} s |")
    grow = conv_peak[1] * MIB / rec if conv_peak else float("nan")
    print(f"| tal record, {rec} open tasks over the socket: the agent before converting "
          f"(agent_peak_rss_bytes) | {agent_peak / MIB:.1f} MiB | | | |")
    print(f"| tal record, the same: its conversion | | {fmt(conv_peak)} | {grow:.0f} B | |")
    print(f"| tal record, the same: the whole process | {whole / MIB:.1f} MiB | | | |")

if __name__ == "__main__":
    main()
