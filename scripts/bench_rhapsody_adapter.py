"""One side of scripts/bench-rhapsody-adapter.sh: an idle RHAPSODY session
whose resource samples come from tal (MODE ``tal``: ``TalAdapter`` at
INTERVAL, with its own ``tal record``) or from RHAPSODY's own
ConcurrentTelemetryAdapter (MODE ``rhapsody``, ``resource_poll_interval``
INTERVAL), with RHAPSODY's checkpoint written to OUT in both.

After WARMUP seconds it takes, over SECONDS, the CPU time of every thread
of this process (and, for ``tal``, of the agent), from the kernel's
accounting (``se.sum_exec_runtime`` in /proc/PID/task/*/sched, else
utime+stime), and the per-node samples RHAPSODY's manager handled, and
prints one JSON line: CPU µs per sample of each.

Usage: python bench_rhapsody_adapter.py MODE SECONDS WARMUP INTERVAL OUT
"""

import asyncio
import glob
import json
import os
import sys

from rhapsody.api.session import Session
from rhapsody.backends.execution.concurrent import ConcurrentExecutionBackend


def cpu_ns(pid):
    """CPU time of every thread of `pid`, in ns."""
    total = 0.0
    found = False
    for path in glob.glob(f"/proc/{pid}/task/*/sched"):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("se.sum_exec_runtime"):
                        total += float(line.split(":")[1]) * 1e6
                        found = True
                        break
        except OSError:
            pass
    if found:
        return total
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1e9 / os.sysconf("SC_CLK_TCK")


async def main(mode, secs, warmup, interval, out):
    backend = await ConcurrentExecutionBackend()
    session = Session(backends=[backend])
    adapter = None
    if mode == "tal":
        from tal_telemetry.rhapsody import TalAdapter, start_telemetry

        adapter = TalAdapter(interval=interval, out_dir=out)
        telemetry = await start_telemetry(session, adapter, checkpoint_path=out)
    else:
        telemetry = await session.start_telemetry(
            checkpoint_path=out, resource_poll_interval=interval
        )
    count = [0]

    def on_event(e):
        if e.event_type == "ResourceUpdate" and e.gpu_id is None:
            count[0] += 1

    telemetry.subscribe(on_event)
    agent = adapter.agent_pid if adapter is not None else None
    async with session:
        await asyncio.sleep(warmup)
        c0, n0 = cpu_ns("self"), count[0]
        a0 = cpu_ns(agent) if agent else None
        await asyncio.sleep(secs)
        c1, n1 = cpu_ns("self"), count[0]
        a1 = cpu_ns(agent) if agent else None
    n = max(n1 - n0, 1)
    print(
        json.dumps(
            {
                "mode": mode,
                "samples": n1 - n0,
                "python_us_per_sample": (c1 - c0) / n / 1e3,
                "agent_us_per_sample": (a1 - a0) / n / 1e3 if agent else None,
            }
        )
    )


if __name__ == "__main__":
    m, s, w, i, o = sys.argv[1:6]
    asyncio.run(main(m, float(s), float(w), float(i), o))
