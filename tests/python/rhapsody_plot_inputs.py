"""Checks that a RHAPSODY checkpoint gives RHAPSODY's two plot scripts
(examples/telemetry/plot_dashboard.py and plot_session_snapshot.py in
RHAPSODY's repository; they are not in its PyPI package) what they read
without a default: every field they index, of the type they compute with,
and the samples their panels draw.

The scripts read each line as JSON, keep the `section: event` lines, and
then: `event_type` (a string) and `event_time` (a number) of every event;
`emit_time` minus `event_time` where `emit_time` is not null; the
`node_id` of every ResourceUpdate (compared, then sorted as strings) and
its `gpu_id` (None for a node's own sample, else an integer, sorted);
`cpu_percent`, `memory_percent`, `gpu_percent` (a number or null);
`duration_seconds` of TaskCompleted and TaskFailed (a number or null).

Usage: rhapsody_plot_inputs.py CHECKPOINT; prints what the panels get, as
JSON; exits 1 naming the first line a script would fail on.
"""

import json
import numbers
import sys


def fail(n, why, line):
    print(f"line {n}: {why}: {json.dumps(line)[:300]}", file=sys.stderr)
    sys.exit(1)


def number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def main(path):
    events = 0
    node_samples = {}
    gpus = set()
    ends = 0
    with open(path) as f:
        for n, text in enumerate(f, 1):
            line = json.loads(text)
            if line.get("section") != "event":
                continue
            events += 1
            if not isinstance(line.get("event_type"), str):
                fail(n, "no `event_type` string", line)
            if not number(line.get("event_time")):
                fail(n, "no `event_time` number", line)
            if line.get("emit_time") is not None and not number(line["emit_time"]):
                fail(n, "`emit_time` is not a number", line)
            ty = line["event_type"]
            if ty in ("TaskCompleted", "TaskFailed"):
                ends += 1
                d = line.get("duration_seconds")
                if d is not None and not number(d):
                    fail(n, "`duration_seconds` is not a number", line)
            if ty != "ResourceUpdate":
                continue
            if "node_id" not in line:
                fail(n, "a ResourceUpdate with no `node_id` key", line)
            node = line["node_id"]
            if node is not None and not isinstance(node, str):
                fail(n, "`node_id` is not a string", line)
            for k in ("cpu_percent", "memory_percent", "gpu_percent"):
                if line.get(k) is not None and not number(line[k]):
                    fail(n, f"`{k}` is not a number", line)
            gpu = line.get("gpu_id")
            if gpu is None:
                if node and number(line.get("cpu_percent")):
                    node_samples[node] = node_samples.get(node, 0) + 1
            elif isinstance(gpu, int) and not isinstance(gpu, bool):
                if number(line.get("gpu_percent")):
                    gpus.add((node, gpu))
            else:
                fail(n, "`gpu_id` is neither null nor an integer", line)
    if not events:
        print("no events: the scripts stop at once", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({
        "events": events,
        "node_samples": node_samples,
        "gpus": sorted(f"{n} GPU {g}" for n, g in gpus),
        "task_ends": ends,
    }))


if __name__ == "__main__":
    main(sys.argv[1])
