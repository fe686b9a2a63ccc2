"""Task sampling as a Python runtime would write it with psutil, for
scripts/bench-task-sampling.sh to run beside tal: every INTERVAL seconds,
on absolute deadlines, for each task's root process, its descendants
(`children(recursive=True)`), then each process's CPU times, memory,
threads and I/O counters in one `oneshot()`. Nothing is kept or sent:
this is the cost of the reads alone, the way psutil makes them.

With --known, the pids given are every process to sample, and no
descendants are looked for (the reads alone: psutil's `children()` scans
all of /proc for each call).

Usage: psutil_tasks.py [--known] INTERVAL_SECONDS PID...   (until SIGTERM)
"""
import signal
import sys
import time

import psutil

args = sys.argv[1:]
known = args[0] == "--known"
if known:
    args = args[1:]
interval = float(args[0])
roots = [psutil.Process(int(p)) for p in args[1:]]
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)
deadline = time.monotonic()
while not stop:
    deadline += interval
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    for root in roots:
        try:
            tree = [root] if known else [root] + root.children(recursive=True)
        except psutil.Error:
            continue
        for p in tree:
            try:
                with p.oneshot():
                    p.cpu_times()
                    p.memory_info()
                    p.num_threads()
                    p.io_counters()
            except psutil.Error:
                pass
