"""tal's Python package: talk to a running tal agent from Python.

Pure Python, standard library only, typed (``py.typed``):

- :mod:`tal_telemetry.client`: the agent's socket protocol. A
  :class:`~tal_telemetry.client.Client` sends events and task starts and
  ends without spawning ``tal emit`` processes, never blocking or raising
  for a full or absent agent (it counts what it drops);
  :func:`~tal_telemetry.client.subscribe`, :func:`~tal_telemetry.client.stop`,
  :func:`~tal_telemetry.client.wait` and :func:`~tal_telemetry.client.ping`
  are ``tal subscribe``, ``tal stop`` and ``tal wait``.
- :mod:`tal_telemetry.bridge`: forwards a RHAPSODY session's events to tal.
- :mod:`tal_telemetry.rhapsody`: ``TalAdapter``, RHAPSODY's resource
  adapter fed by tal's samples (imports RHAPSODY; not imported here).
"""

from .bridge import Forwarder, forwarder
from .client import Client, Subscription, TalError, ping, resolve_socket, stop, subscribe, wait

__all__ = [
    "Client",
    "Forwarder",
    "Subscription",
    "TalError",
    "forwarder",
    "ping",
    "resolve_socket",
    "stop",
    "subscribe",
    "wait",
]
