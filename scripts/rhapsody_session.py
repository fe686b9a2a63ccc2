"""Runs a real RHAPSODY session whose telemetry is forwarded to tal.

Usage: python rhapsody_session.py CHECKPOINT_DIR N_TASKS

Runs N_TASKS shell tasks on RHAPSODY's ConcurrentExecutionBackend — a mix of
/bin/true, /bin/false, missing executables, `exit 3` in a shell and short
sleeps — with RHAPSODY's own JSONL checkpoint written to CHECKPOINT_DIR and
every event forwarded to the tal agent at $TAL_SOCKET (tal_bridge). Used by
the integration test that compares tal's JSONL with RHAPSODY's.
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tal_bridge  # noqa: E402
from rhapsody.api.session import Session  # noqa: E402
from rhapsody.api.task import ComputeTask  # noqa: E402
from rhapsody.backends.execution.concurrent import ConcurrentExecutionBackend  # noqa: E402


def make_task(i: int) -> ComputeTask:
    kind = i % 5
    if kind == 0:
        return ComputeTask(executable="/bin/true")
    if kind == 1:
        return ComputeTask(executable="/bin/false")
    if kind == 2:
        return ComputeTask(executable="/nonexistent/binary")
    if kind == 3:
        return ComputeTask(executable="exit 3", task_backend_specific_kwargs={"shell": True})
    return ComputeTask(executable="/bin/sleep", arguments=["0.2"])


async def main(out: str, n: int) -> None:
    backend = await ConcurrentExecutionBackend()
    session = Session(backends=[backend])
    telemetry = await session.start_telemetry(checkpoint_path=out, resource_poll_interval=0.5)
    fwd = tal_bridge.forwarder()
    telemetry.subscribe(fwd)
    tasks = [make_task(i) for i in range(n)]
    async with session:
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks)
    fwd.close()
    print(f"forwarded {fwd.sent} events, dropped {fwd.dropped}, refused {fwd.refused}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
