"""Socket ingest benchmark: tal's agent vs RHAPSODY's TelemetryManager.emit.

Usage: python bench_ingest.py TAL_BINARY [EVENTS=1000000] [RUNS=3]

Side by side in one run, on the same machine, RHAPSODY 0.6.0's
TelemetryManager with 10 000 TaskSubmitted events (what its own
performance test emits), three ways:
  - "emit only": make_event + emit timed until the last emit returns, no
    checkpoint -- how RHAPSODY's own performance test times it. The events
    are then only queued, not yet handled or written anywhere.
  - "emit + dispatch": prebuilt events, emit, timed until its dispatch loop
    has handled the queue, no checkpoint.
  - "emit + dispatch + checkpoint": the same with its JSONL checkpoint on.
    This is the like-for-like measure, and the one the budget's ratio uses:
    tal's number below is also events handled and recorded in a file.
tal: one client sends EVENTS TaskSubmitted lines (a prebuilt file, with
sendfile(2), so that the client's own cost stays small) over the ingest
socket, then a ping on the same connection; timed until the ping's answer
(every earlier line has then been parsed, validated and handed to the
dispatcher, which writes it to the log). Twice: with tal's default pinning
(all its threads on one CPU, which is what an HPC job wants: the agent
never spreads over the job's cores) and with --pin none (listener and
dispatcher free to use two CPUs). The agent's CPU per event comes from the
kernel's per-thread accounting. Events dropped are read from the final
metric line.
Prints medians and the ratio of throughputs.
"""

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def cpu_ns(pid: int) -> float:
    total = 0.0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/sched") as f:
                for line in f:
                    if line.startswith("se.sum_exec_runtime"):
                        total += float(line.split(":")[1]) * 1e6
        except OSError:
            pass
    return total


async def rhapsody_once(n: int, out: str | None, drain: bool) -> float:
    from rhapsody.telemetry.events import TaskSubmitted, make_event
    from rhapsody.telemetry.manager import TelemetryManager

    tm = TelemetryManager(session_id="bench.rhapsody", checkpoint_path=out)
    await tm.start()
    if not drain:
        # As RHAPSODY's own performance test: events built in the loop.
        t0 = time.perf_counter()
        for i in range(n):
            tm.emit(make_event(TaskSubmitted, session_id="bench.rhapsody",
                               backend="concurrent", task_id=f"task.{i:06d}"))
        dt = time.perf_counter() - t0
        await tm._queue.join()
        await tm.stop()
        return n / dt
    events = [
        make_event(TaskSubmitted, session_id="bench.rhapsody", backend="concurrent",
                   task_id=f"task.{i:06d}",
                   attributes={"executable": "/bin/true", "task_type": "ComputeTask"})
        for i in range(n)
    ]
    t0 = time.perf_counter()
    for e in events:
        tm.emit(e)
    await tm._queue.join()
    dt = time.perf_counter() - t0
    await tm.stop()
    return n / dt


def tal_once(tal: str, n: int, work: str, payload_path: str, pin: list[str]) -> tuple[float, float, int]:
    sock = os.path.join(work, "bench.sock")
    out = os.path.join(work, "out")
    agent = subprocess.Popen(
        [tal, "record", "--interval", "0.1", "--session-id", "bench.ingest", "--node-id", "n",
         "--out", out, "--socket", sock, "--gpus", "none", *pin],
        stderr=subprocess.DEVNULL)
    while not os.path.exists(sock):
        time.sleep(0.01)
    time.sleep(0.3)
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    c0 = cpu_ns(agent.pid)
    t0 = time.perf_counter()
    with open(payload_path, "rb") as f:
        s.sendfile(f)
    s.sendall(b'{"op": "ping"}\n')
    f = s.makefile("rb")
    reply = f.readline()
    dt = time.perf_counter() - t0
    c1 = cpu_ns(agent.pid)
    assert b'"ok": true' in reply, reply
    s.close()
    stop = subprocess.run([tal, "stop", "--socket", sock], capture_output=True, timeout=300)
    assert stop.returncode == 0, stop.stderr
    agent.wait(timeout=300)
    jsonl = json.loads(stop.stdout)["jsonl"]
    dropped = 0
    with open(jsonl) as fh:
        for line in fh:
            if '"section": "metric"' in line:
                m = json.loads(line)
                dropped = m.get("ingest_events_dropped", 0)
                assert m.get("ingest_events_accepted", 0) + dropped == n, m
    for name in os.listdir(out):
        os.remove(os.path.join(out, name))
    return n / dt, (c1 - c0) / n, dropped


def main() -> None:
    tal = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    line = ('{"event_id": "%032x", "event_type": "TaskSubmitted", "event_time": 1795574441.8567670, '
            '"emit_time": 1795574441.8567696, "session_id": "bench", "backend": "concurrent", '
            '"task_id": "task.%07d", "node_id": null, '
            '"attributes": {"executable": "/bin/true", "task_type": "ComputeTask"}}\n')
    payload = "".join(line % (i + 1, i) for i in range(n)).encode()
    with tempfile.TemporaryDirectory() as work:
        rh = {
            "emit only (its own test's timing)": [
                asyncio.run(rhapsody_once(10_000, None, False)) for _ in range(runs)],
            "emit + dispatch": [
                asyncio.run(rhapsody_once(10_000, None, True)) for _ in range(runs)],
            "emit + dispatch + checkpoint": [
                asyncio.run(rhapsody_once(10_000, work, True)) for _ in range(runs)],
        }
        payload_path = os.path.join(work, "payload.jsonl")
        with open(payload_path, "wb") as fh:
            fh.write(payload)
        res = [tal_once(tal, n, work, payload_path, []) for _ in range(runs)]
        free = [tal_once(tal, n, work, payload_path, ["--pin", "none"]) for _ in range(runs)]
    tal_rate = statistics.median(r[0] for r in res)
    tal_cpu = statistics.median(r[1] for r in res)
    free_rate = statistics.median(r[0] for r in free)
    free_cpu = statistics.median(r[1] for r in free)
    print(f"# socket ingest: {n} events per tal run, 10000 per RHAPSODY run, {runs} runs each, {os.cpu_count()} CPUs")
    print("| measure | events/s (median) | runs | tal (one CPU) / this | tal (--pin none) / this |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| tal, default pinning (one CPU) | {tal_rate / 1e6:.2f} M | {', '.join(f'{r[0] / 1e6:.2f} M' for r in res)} | | |")
    print(f"| tal, --pin none | {free_rate / 1e6:.2f} M | {', '.join(f'{r[0] / 1e6:.2f} M' for r in free)} | | |")
    for name, rates in rh.items():
        med = statistics.median(rates)
        print(f"| RHAPSODY TelemetryManager: {name} | {med / 1e3:.1f} k | {', '.join(f'{r / 1e3:.1f} k' for r in rates)} | {tal_rate / med:.0f}x | {free_rate / med:.0f}x |")
    like = statistics.median(rh["emit + dispatch + checkpoint"])
    print(f"\ntal agent CPU per event (median): {tal_cpu:.0f} ns pinned, {free_cpu:.0f} ns unpinned; "
          f"events dropped: {', '.join(str(r[2]) for r in res + free)}")
    print(f"budget: tal >= 1 M events/s: {'met' if tal_rate >= 1e6 else 'NOT met'}; "
          f">= 50x RHAPSODY (like for like, emit + dispatch + checkpoint): "
          f"{tal_rate / like:.0f}x pinned, {free_rate / like:.0f}x unpinned, "
          f"{'met' if max(tal_rate, free_rate) >= 50 * like else 'NOT met'}")


if __name__ == "__main__":
    main()
