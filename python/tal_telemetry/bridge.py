"""Forward RHAPSODY telemetry events to a local tal agent.

Pure Python (standard library only): subscribe its forwarder to a
RHAPSODY session's telemetry::

    from tal_telemetry import bridge
    telemetry = await session.start_telemetry(checkpoint_path="out/")
    telemetry.subscribe(bridge.forwarder())

Every RHAPSODY event is sent to the agent's ingest socket as one JSON line
in the shape of RHAPSODY's own checkpoint lines (so its event ids, times,
durations and error types are kept as RHAPSODY decided them). The socket is
``path`` if given, else ``$TAL_SOCKET`` (which ``tal record`` exports to the
command it wraps), else a Slurm job's agent on this node (see
:func:`tal_telemetry.client.resolve_socket`).

The forwarder never blocks RHAPSODY's dispatch loop and never raises into
it: it sends through a :class:`tal_telemetry.client.Client`, whose lines
wait in a buffer of at most ``max_buffer`` bytes when the agent does not
keep up; beyond that, events are dropped and counted, and so is every event
while no agent is reachable (it warns once on stderr). ``close()`` (also
run at interpreter exit) sends what is left, then reports on stderr how
many events were dropped or refused.

By default the forwarder skips SessionStarted/SessionEnded (the agent
records its own session) and ResourceUpdate (the agent samples the node
itself, and a :class:`tal_telemetry.rhapsody.TalAdapter` brings its samples
into RHAPSODY: forwarding them back would record them twice); pass
``include_resources=True`` to forward RHAPSODY's own samples too.

This module was ``scripts/tal_bridge.py`` in tal's repository; that script
is now a shim that imports it.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import sys
from typing import Any, Dict, List, Optional

from .client import Client

__all__ = ["Forwarder", "forwarder"]

_SESSION_EVENTS = frozenset({"SessionStarted", "SessionEnded"})


def _as_dict(event: Any) -> Dict[str, Any]:
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        d = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    elif isinstance(event, dict):
        d = dict(event)
    else:
        d = dict(vars(event))
    # Derived by tal from gpu_id.
    d.pop("resource_scope", None)
    return d


def _event_type(event: Any) -> Optional[str]:
    t = getattr(event, "event_type", None)
    if t is None and isinstance(event, dict):
        t = event.get("event_type")
    return t


class Forwarder:
    """A RHAPSODY telemetry subscriber that forwards events to tal.

    ``sent``, ``dropped``, ``refused`` and ``refusals`` are its client's
    counts (see :class:`tal_telemetry.client.Client`)."""

    def __init__(
        self,
        path: Optional[str] = None,
        include_resources: bool = False,
        max_buffer: int = 8 << 20,
    ) -> None:
        self.include_resources = include_resources
        self.client = Client(path, max_buffer=max_buffer, name="tal_bridge", quiet=True)
        self.path = self.client.path
        self._closed = False
        if self.client.error is not None:
            self._warn(self.client.error)

    @property
    def sent(self) -> int:
        return self.client.sent

    @property
    def dropped(self) -> int:
        return self.client.dropped

    @property
    def refused(self) -> int:
        return self.client.refused

    @property
    def refusals(self) -> List[str]:
        return self.client.refusals

    def _warn(self, msg: str) -> None:
        print(f"tal_bridge: {msg}; RHAPSODY events are not forwarded", file=sys.stderr)

    def __call__(self, event: Any) -> None:
        try:
            etype = _event_type(event)
            if etype in _SESSION_EVENTS:
                return
            if etype == "ResourceUpdate" and not self.include_resources:
                return
            line = json.dumps(_as_dict(event), default=str).encode() + b"\n"
        except Exception:  # an event we cannot read must not reach RHAPSODY's loop
            self.client.dropped += 1
            return
        was_connected = self.client.connected
        self.client.send_line(line)
        if was_connected and not self.client.connected and self.client.error:
            self._warn(self.client.error)

    def close(self, timeout: float = 10.0) -> None:
        """Sends what is buffered (waiting up to ``timeout``), reads the
        agent's replies and closes. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.client.close(timeout)
        if self.dropped or self.refused:
            print(
                f"tal_bridge: {self.sent} events sent, {self.dropped} dropped, "
                f"{self.refused} refused {self.refusals[:3]}",
                file=sys.stderr,
            )


def forwarder(path: Optional[str] = None, **kwargs: Any) -> Forwarder:
    """A :class:`Forwarder` that is closed at interpreter exit."""
    f = Forwarder(path, **kwargs)
    atexit.register(f.close)
    return f
