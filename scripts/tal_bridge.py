"""Forward RHAPSODY telemetry events to a local tal agent.

Pure Python (standard library only): import it next to RHAPSODY and
subscribe its forwarder to a session's telemetry::

    import tal_bridge
    telemetry = await session.start_telemetry(checkpoint_path="out/")
    telemetry.subscribe(tal_bridge.forwarder())

Every RHAPSODY event is sent to the agent's ingest socket as one JSON line
in the shape of RHAPSODY's own checkpoint lines (so its event ids, times,
durations and error types are kept as RHAPSODY decided them). The socket is
``path`` if given, else ``$TAL_SOCKET`` (which ``tal record`` exports to the
command it wraps).

The forwarder never blocks RHAPSODY's dispatch loop: lines are written to a
non-blocking socket, and what the socket cannot take at once waits in a
buffer of at most ``max_buffer`` bytes; beyond that, events are dropped and
counted. Without a reachable agent it warns once on stderr and does
nothing. ``close()`` (also run at interpreter exit) sends what is left,
then reports on stderr how many events were dropped or refused.

By default the forwarder skips SessionStarted/SessionEnded (the agent
records its own session) and ResourceUpdate (the agent samples the node
itself); pass ``include_resources=True`` to forward RHAPSODY's samples too.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import socket
import sys
import time

__all__ = ["Forwarder", "forwarder"]

_SESSION_EVENTS = frozenset({"SessionStarted", "SessionEnded"})


def _as_dict(event) -> dict:
    if dataclasses.is_dataclass(event):
        d = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    elif isinstance(event, dict):
        d = dict(event)
    else:
        d = dict(vars(event))
    # Derived by tal from gpu_id.
    d.pop("resource_scope", None)
    return d


class Forwarder:
    """A RHAPSODY telemetry subscriber that forwards events to tal."""

    def __init__(self, path: str | None = None, include_resources: bool = False,
                 max_buffer: int = 8 << 20):
        self.path = path or os.environ.get("TAL_SOCKET")
        self.include_resources = include_resources
        self.max_buffer = max_buffer
        self.sent = 0
        self.dropped = 0
        self.refused = 0
        self.refusals: list[str] = []
        self._buf = bytearray()
        self._replies = bytearray()
        self._sock = None
        self._closed = False
        if not self.path:
            self._warn("no agent socket (set TAL_SOCKET or pass path=...)")
            return
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.path)
            s.setblocking(False)
            self._sock = s
        except OSError as e:
            self._warn(f"no tal agent at {self.path}: {e}")

    def _warn(self, msg: str) -> None:
        print(f"tal_bridge: {msg}; RHAPSODY events are not forwarded", file=sys.stderr)

    def __call__(self, event) -> None:
        if self._sock is None:
            return
        etype = getattr(event, "event_type", None) or event.get("event_type")
        if etype in _SESSION_EVENTS:
            return
        if etype == "ResourceUpdate" and not self.include_resources:
            return
        line = json.dumps(_as_dict(event), default=str).encode() + b"\n"
        if len(self._buf) + len(line) > self.max_buffer:
            self.dropped += 1
            return
        self._buf += line
        self.sent += 1
        self._pump()

    def _pump(self) -> None:
        """Writes what the socket takes now, and reads any replies."""
        try:
            while self._buf:
                n = self._sock.send(self._buf)
                if n <= 0:
                    break
                del self._buf[:n]
        except BlockingIOError:
            pass
        except OSError as e:
            self._warn(f"lost the agent at {self.path}: {e}")
            self._sock = None
            return
        self._read_replies()

    def _read_replies(self) -> None:
        while True:
            try:
                chunk = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not chunk:
                return
            self._replies += chunk
            *lines, rest = self._replies.split(b"\n")
            self._replies = bytearray(rest)
            for l in lines:
                self.refused += 1
                if len(self.refusals) < 10:
                    self.refusals.append(l.decode(errors="replace"))

    def close(self, timeout: float = 10.0) -> None:
        """Sends what is buffered (waiting up to ``timeout``), reads the
        agent's replies and closes. Safe to call twice."""
        if self._closed or self._sock is None:
            self._closed = True
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        while self._buf and time.monotonic() < deadline and self._sock is not None:
            self._pump()
            if self._buf:
                time.sleep(0.001)
        if self._sock is None:
            return
        try:
            self._sock.shutdown(socket.SHUT_WR)
            self._sock.setblocking(True)
            self._sock.settimeout(max(0.1, deadline - time.monotonic()))
            while True:
                chunk = self._sock.recv(65536)
                if not chunk:
                    break
                self._replies += chunk
        except OSError:
            pass
        for l in bytes(self._replies).split(b"\n"):
            if l.strip():
                self.refused += 1
                if len(self.refusals) < 10:
                    self.refusals.append(l.decode(errors="replace"))
        self._sock.close()
        self._sock = None
        if self._buf:
            self.dropped += 1
        if self.dropped or self.refused:
            print(f"tal_bridge: {self.sent} events sent, {self.dropped} dropped, "
                  f"{self.refused} refused {self.refusals[:3]}", file=sys.stderr)


def forwarder(path: str | None = None, **kwargs) -> Forwarder:
    """A :class:`Forwarder` that is closed at interpreter exit."""
    f = Forwarder(path, **kwargs)
    atexit.register(f.close)
    return f
