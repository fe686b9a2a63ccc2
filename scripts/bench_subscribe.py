"""Live subscriber throughput: does a reader that keeps up get every line?

Usage: python3 bench_subscribe.py TAL_BINARY [RATES=3000,5000,10000,30000,100000] [SECONDS=5]

For each rate R (events per second), a fresh `tal record` agent; one
subscriber to `app.Bench` that does nothing but `recv` (and counts lines
and `{"dropped": N}` notices); one client that sends R events a second,
each ~460 bytes as a feed line, in batches every 10 ms, for SECONDS. Then
a ping (every line sent has been handled by the listener), a wait until
the feed has delivered every line or has been quiet for 2 s, and the
agent's metric line (`subscriber_events_dropped`) through `tal stop`.

Prints, per rate: events sent and the rate achieved, lines received and
their rate (over the time spent sending), lines announced as dropped, the agent's count of lines its
subscribers lost, and received / sent. A reader that keeps up should get
a ratio of 1.000 at every rate the agent ingests.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time


def start_agent(tal: str, d: str) -> tuple[subprocess.Popen, str]:
    sock = os.path.join(d, "agent.sock")
    agent = subprocess.Popen(
        [tal, "record", "--interval", "1", "--session-id", "bench.sub", "--node-id", "n",
         "--socket", sock, "--out", d],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while not os.path.exists(sock):
        if time.time() > deadline or agent.poll() is not None:
            sys.exit("the agent did not start")
        time.sleep(0.01)
    return agent, sock


class Reader(threading.Thread):
    """Subscribes, then only reads: counts lines and loss notices."""

    def __init__(self, sock: str):
        super().__init__(daemon=True)
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(sock)
        self.s.sendall(b'{"op": "subscribe", "types": ["app.Bench"]}\n')
        ack = b""
        while not ack.endswith(b"\n"):
            ack += self.s.recv(1)
        if not json.loads(ack).get("ok"):
            sys.exit(f"subscription refused: {ack!r}")
        self.lines = 0
        self.dropped = 0
        self.last = None

    def run(self):
        rest = b""
        while True:
            b = self.s.recv(1 << 16)
            if not b:
                return
            now = time.monotonic()
            self.last = now
            rest += b
            *whole, rest = rest.split(b"\n")
            for line in whole:
                if line.startswith(b'{"dropped"'):
                    self.dropped += json.loads(line)["dropped"]
                elif line:
                    self.lines += 1


def one_rate(tal: str, rate: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as d:
        agent, sock = start_agent(tal, d)
        reader = Reader(sock)
        reader.start()
        pad = "p" * 300
        client = socket.socket(socket.AF_UNIX)
        client.connect(sock)
        sent, t0 = 0, time.monotonic()
        tick = 0.01
        while True:
            now = time.monotonic()
            if now - t0 >= seconds:
                break
            due = int((now - t0 + tick) * rate) - sent
            if due > 0:
                batch = "".join(
                    f'{{"event_type": "app.Bench", "i": {sent + k}, "pad": "{pad}"}}\n'
                    for k in range(due))
                client.sendall(batch.encode())
                sent += due
            time.sleep(max(0.0, t0 + (now - t0) + tick - time.monotonic()))
        send_s = time.monotonic() - t0
        client.sendall(b'{"op": "ping"}\n')
        client.shutdown(socket.SHUT_WR)
        while client.recv(1 << 16):
            pass
        # Until every line has come, or the feed has been quiet for 2 s.
        while reader.lines + reader.dropped < sent:
            if time.monotonic() - (reader.last or t0) > 2:
                break
            time.sleep(0.05)
        stop = subprocess.run([tal, "stop", "--socket", sock], capture_output=True, text=True)
        agent.wait(timeout=60)
        metric = {}
        try:
            with open(json.loads(stop.stdout)["jsonl"]) as f:
                for line in f:
                    if '"section": "metric"' in line or '"section":"metric"' in line:
                        metric = json.loads(line)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return {
            "rate": rate,
            "sent": sent,
            "sent_per_s": sent / send_s,
            "received": reader.lines,
            # Over the same span as the sending: the feed arrives in the
            # dispatcher's drains (every --interval, or sooner under load).
            "received_per_s": reader.lines / send_s,
            "told_dropped": reader.dropped,
            "agent_dropped": metric.get("subscriber_events_dropped"),
            "ratio": reader.lines / sent if sent else 0.0,
        }


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    tal = sys.argv[1]
    rates = [int(r) for r in (sys.argv[2] if len(sys.argv) > 2 else "3000,5000,10000,30000,100000").split(",")]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
    print(f"{'rate/s':>8} {'sent':>9} {'sent/s':>9} {'received':>9} {'recv/s':>9} "
          f"{'told':>7} {'agent':>7} {'ratio':>6}")
    for rate in rates:
        r = one_rate(tal, rate, seconds)
        print(f"{r['rate']:>8} {r['sent']:>9} {r['sent_per_s']:>9.0f} {r['received']:>9} "
              f"{r['received_per_s']:>9.0f} {r['told_dropped']:>7} {str(r['agent_dropped']):>7} "
              f"{r['ratio']:>6.3f}", flush=True)


if __name__ == "__main__":
    main()
