"""A real RHAPSODY session whose resource telemetry comes from tal.

Usage: python rhapsody_adapter_session.py RH_CHECKPOINT_DIR TAL_OUT_DIR MODE

Runs 20 shell tasks (one of them /bin/false) on RHAPSODY's
ConcurrentExecutionBackend with RHAPSODY's JSONL checkpoint in
RH_CHECKPOINT_DIR and a ``TalAdapter`` at 0.1 s, which starts a ``tal
record`` of its own (node ``n``, log in TAL_OUT_DIR) unless ``$TAL_SOCKET``
names a running agent. MODE says how the adapter is attached:

- ``helper``: ``tal_telemetry.rhapsody.start_telemetry(session, ...)``;
- ``register``: RHAPSODY's own ``session.start_telemetry(...)`` (which
  attaches its psutil adapter) then ``telemetry.register_adapter(...)``;
- ``notal``: as ``register``, with no agent and a ``tal`` binary that does
  not exist (the session must run as without the adapter).

It waits (bounded) for tal samples to reach RHAPSODY before the tasks and
again after them, reads RHAPSODY's ``read_metrics()`` node gauges beside the
last value of each that RHAPSODY's subscribers saw, and prints one JSON
line with those and the adapter's counts. Used by tests/rhapsody_adapter.rs.
"""

import asyncio
import json
import sys
import time

from rhapsody.api.session import Session
from rhapsody.api.task import ComputeTask
from rhapsody.backends.execution.concurrent import ConcurrentExecutionBackend
from tal_telemetry import client
from tal_telemetry.rhapsody import TalAdapter, start_telemetry

GAUGES = {
    "node_cpu_utilization": "cpu_percent",
    "node_memory_utilization": "memory_percent",
    "node_gpu_utilization": "gpu_percent",
}


async def until(what, cond, limit=30.0):
    """A readiness wait, not a timing assertion."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > limit:
            raise SystemExit(f"gave up waiting for {what}")
        await asyncio.sleep(0.02)


def tasks():
    out = []
    for i in range(20):
        if i == 7:
            out.append(ComputeTask(executable="/bin/false"))
        elif i % 3 == 0:
            out.append(ComputeTask(executable="/bin/sleep", arguments=["0.1"]))
        else:
            out.append(ComputeTask(executable="/bin/true"))
    return out


def gauges(telemetry, node):
    got = {}
    for rm in telemetry.read_metrics().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name in GAUGES:
                    for dp in m.data.data_points:
                        if dp.attributes.get("node_id") == node:
                            got[m.name] = dp.value
    return got


async def main(rh_out, tal_out, mode):
    backend = await ConcurrentExecutionBackend()
    session = Session(backends=[backend])
    tal = "/nonexistent/tal" if mode == "notal" else None
    adapter = TalAdapter(interval=0.1, out_dir=tal_out, node_id="n", tal=tal)
    kwargs = dict(checkpoint_path=rh_out, resource_poll_interval=0.1)
    if mode == "helper":
        telemetry = await start_telemetry(session, adapter, **kwargs)
    else:
        telemetry = await session.start_telemetry(**kwargs)
        telemetry.register_adapter(adapter)
    seen = []
    telemetry.subscribe(lambda e: seen.append(e) if e.event_type == "ResourceUpdate" else None)

    last = {}

    def last_values():
        for e in seen:
            if e.node_id == "n":
                for g, f in GAUGES.items():
                    if getattr(e, f) is not None:
                        last[g] = getattr(e, f)

    ts = tasks()
    want = "tal" if mode != "notal" else "concurrent"

    def node_samples():
        return sum(1 for e in seen if e.backend == want and e.gpu_id is None)

    async with session:
        await until("the first samples", lambda: node_samples() >= 2)
        await session.submit_tasks(ts)
        await session.wait_tasks(ts)
        n0 = node_samples()
        await until("samples after the tasks", lambda: node_samples() >= n0 + 2)
        # Nothing is dispatched while this code runs: what the subscriber
        # saw is what the gauges were fed.
        g = gauges(telemetry, "n")
        last_values()
        agent_up_before_close = adapter.socket_path and client.ping(adapter.socket_path) is not None
    report = {
        "mode": mode,
        "gauges": g,
        "last": last,
        "samples": adapter.samples,
        "dropped": adapter.dropped,
        "error": adapter.error,
        "owns_agent": adapter.owns_agent,
        "agent": adapter.agent,
        "finished": adapter.finished,
        "stopped_adapters": adapter.stopped_adapters,
        "agent_up_before_close": agent_up_before_close,
        "agent_up_after_close": bool(adapter.socket_path)
        and client.ping(adapter.socket_path, 2.0) is not None,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
