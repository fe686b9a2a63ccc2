"""Drives tal_telemetry's client and RHAPSODY bridge against a real agent.

Usage: python client_check.py CASE SOCKET [AGENT_PID]

Each case prints one JSON line of what the client and the bridge counted;
tests/python_client.rs checks it against the agent's JSONL. Every call into
the package is made the way a runtime's loop would make it: an exception
escaping one fails the script (and the test).

- ``agent``: task events (client and bridge, with RHAPSODY's own event
  classes), a custom event, a refused line, a subscription that sees them,
  then ``stop``.
- ``full``: the agent is stopped (SIGSTOP to AGENT_PID) while the client
  and the bridge, with small buffers, emit until each has dropped lines;
  then it is continued (SIGCONT) and both flush.
- ``absent``: SOCKET has no agent.
- ``gone``: lines sent after the agent finished (``stop``).
- ``slurm``: no path and no ``$TAL_SOCKET``, in a Slurm job's environment
  (``SLURM_JOB_ID``, ``SLURMD_NODENAME``): the client finds the job's agent
  on the node, reports a task to it, and stops it. SOCKET is not used.
"""

import json
import os
import signal
import sys
import threading

from rhapsody.telemetry.events import TaskCompleted, TaskStarted, make_event
from tal_telemetry import TalError, bridge, client


def rh(cls, task_id, **kw):
    return make_event(cls, session_id="rh", backend="concurrent", task_id=task_id, **kw)


def agent(path):
    sub = client.subscribe(["TaskStarted", "TaskCompleted", "app.Step"], path)
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(sub))
    reader.start()
    c = client.Client(path)
    for i in range(50):
        c.task_started(f"c{i}", attributes={"i": i})
    c.emit("app.Step", step=7, loss=0.5)
    c.emit("NotAType")
    for i in range(50):
        c.task_completed(f"c{i}")
    with c.task("k-ok", pid=os.getpid()):
        pass
    try:
        with c.task("k-bad"):
            raise ValueError("in the task")
    except ValueError:
        pass
    flushed = c.flush()
    fwd = bridge.Forwarder(path)
    for i in range(30):
        fwd(rh(TaskStarted, f"b{i}"))
        fwd(rh(TaskCompleted, f"b{i}", duration_seconds=0.25))
    fwd.close()
    c.close()
    answer = client.stop(path)
    reader.join(30)
    return {
        "flushed": flushed,
        "client": counts(c),
        "bridge": counts(fwd),
        "subscribed": len(seen),
        "sub_dropped": sub.dropped,
        "stop": answer,
    }


def counts(x):
    return {"sent": x.sent, "dropped": x.dropped, "refused": x.refused, "refusals": x.refusals}


def full(path, pid):
    c = client.Client(path, max_buffer=64 << 10)
    fwd = bridge.Forwarder(path, max_buffer=64 << 10)
    os.kill(pid, signal.SIGSTOP)
    try:
        attempted_c = attempted_b = 0
        # The socket's own buffers take a few hundred KiB first.
        while c.dropped == 0 or fwd.dropped == 0:
            if attempted_c > 2_000_000:
                raise SystemExit("never dropped")
            c.task_started(f"c{attempted_c}", attributes={"pad": "x" * 200})
            attempted_c += 1
            fwd(rh(TaskStarted, f"b{attempted_b}", attributes={"pad": "x" * 200}))
            attempted_b += 1
        flushed_while_stopped = c.flush(timeout=0.2)
    finally:
        os.kill(pid, signal.SIGCONT)
    flushed = c.flush(timeout=60)
    c.close()
    fwd.close()
    return {
        "attempted_client": attempted_c,
        "attempted_bridge": attempted_b,
        "flushed_while_stopped": flushed_while_stopped,
        "flushed": flushed,
        "client": counts(c),
        "bridge": counts(fwd),
    }


def absent(path):
    c = client.Client(path)
    fwd = bridge.Forwarder(path)
    for i in range(10):
        c.task_started(f"t{i}")
        fwd(rh(TaskStarted, f"t{i}"))
    flushed = c.flush(timeout=1)
    c.close()
    fwd.close()
    raised = []
    for name, call in [
        ("stop", lambda: client.stop(path, 1)),
        ("wait", lambda: client.wait(path, 0.3)),
        ("subscribe", lambda: client.subscribe(None, path, 1)),
    ]:
        try:
            call()
        except TalError as e:
            raised.append([name, str(e)])
    return {
        "flushed": flushed,
        "connected": c.connected,
        "client": counts(c),
        "bridge": counts(fwd),
        "ping": client.ping(path, 1),
        "raised": raised,
    }


def gone(path):
    c = client.Client(path)
    fwd = bridge.Forwarder(path)
    for i in range(5):
        c.task_started(f"c{i}")
        fwd(rh(TaskStarted, f"b{i}"))
    flushed = c.flush()
    fwd.client.flush()
    client.stop(path)
    # Lines sent after the agent has finished reach no one.
    for i in range(5, 25):
        c.task_started(f"c{i}")
        fwd(rh(TaskStarted, f"b{i}"))
    c.flush(timeout=5)
    fwd.client.flush(timeout=5)
    c.close()
    fwd.close()
    return {"flushed": flushed, "client": counts(c), "bridge": counts(fwd)}


def slurm():
    found = client.resolve_socket()
    c = client.Client()
    c.task_started("slurm-task")
    c.task_completed("slurm-task")
    flushed = c.flush()
    c.close()
    answer = client.stop()
    return {"socket": found, "flushed": flushed, "client": counts(c), "stop": answer}


if __name__ == "__main__":
    case, path = sys.argv[1], sys.argv[2]
    if case == "agent":
        out = agent(path)
    elif case == "full":
        out = full(path, int(sys.argv[3]))
    elif case == "absent":
        out = absent(path)
    elif case == "slurm":
        out = slurm()
    else:
        out = gone(path)
    print(json.dumps(out))
