"""RHAPSODY's resource telemetry from tal: :class:`TalAdapter`.

RHAPSODY (``rhapsody-py[telemetry]``, tested with 0.6.0) takes a node's
resource samples from *adapters*, subclasses of
``rhapsody.telemetry.adapters.base.TelemetryAdapter`` that emit
``ResourceUpdate`` events to its ``TelemetryManager``. Its own one for the
concurrent backend polls psutil and pynvml in a thread of the Python
process. :class:`TalAdapter` takes the samples from tal instead::

    from tal_telemetry.rhapsody import TalAdapter, start_telemetry

    telemetry = await start_telemetry(session, checkpoint_path="out/")
    # or, keeping RHAPSODY's own call:
    telemetry = await session.start_telemetry(checkpoint_path="out/")
    telemetry.register_adapter(TalAdapter(interval=0.1))

Registered, it attaches to the agent on ``$TAL_SOCKET`` (the ``tal record``
that wraps the program; in a Slurm job, else the job's agent on this node,
started as a step of its own), or, when no agent answers there, starts a ``tal
record`` of its own (``--interval``, the session id of RHAPSODY's session,
its socket in a private temporary directory, its log in ``out_dir``), which
it stops when RHAPSODY stops it, at the session's close. It subscribes to
the agent's ``ResourceUpdate`` feed and emits each sample to RHAPSODY's
manager as RHAPSODY's own ``ResourceUpdate``, per node and per GPU, with
RHAPSODY's fields exactly: tal's ``event_id``, ``event_time``, ``node_id``,
``backend`` (``"tal"``), ``gpu_id`` and measurements, RHAPSODY's session id,
and ``emit_time`` when it is handed to RHAPSODY. (tal's extension fields,
such as ``cpu_percent_per_core``, stay in tal's own log.) RHAPSODY's OTel
gauges, subscribers, metric readers and checkpoint then carry tal's
samples. The feed is read by a daemon thread, which hands each batch of
samples to RHAPSODY's event loop in one ``call_soon_threadsafe``, as
RHAPSODY's own adapter does with each sample. The agent hands its samples
to its live feed once per second's worth (its dispatcher wakes that
often), so they reach RHAPSODY up to a second after they were taken, each
with its own ``event_time``; those of the session's last second are in
tal's log only.

Keeping RHAPSODY's own adapter from also polling: ``Session.start_telemetry``
in RHAPSODY 0.6.0 attaches its psutil adapter to every concurrent, Dask or
Dragon backend in ``session.backends`` and starts it at once, which takes a
first sample; it has no switch to leave it out, and adding the backends
after ``start_telemetry`` fails in 0.6.0 (``Session.add_backend`` calls a
``_attach_telemetry_adapter`` that does not exist). So:

- :func:`start_telemetry` ``(session, **kwargs)`` calls
  ``session.start_telemetry(**kwargs)`` while ``session.backends`` (a public
  attribute) is empty, puts the backends back and registers a
  :class:`TalAdapter`: RHAPSODY's poller is never made, and every
  ``ResourceUpdate`` in RHAPSODY's telemetry is tal's.
- ``telemetry.register_adapter(TalAdapter())`` after RHAPSODY's own
  ``start_telemetry`` stops RHAPSODY's pollers (``stop_rhapsody_adapters``,
  on by default) through their public ``stop()`` as soon as an agent
  answers: they take no sample after that, but the first one each took
  when it started may already be in the telemetry (its ``backend`` is the
  execution backend's name, not ``"tal"``), and more if the adapter has to
  start its own agent first (a few hundred ms). If no agent can be had,
  they are left running.

What of RHAPSODY's is not public API, and is used here: the adapter
attribute ``_manager``, which ``TelemetryManager.register_adapter`` sets and
the base class documents as the adapter's back-reference (here a property,
so that registering on a running manager starts the adapter, as
``TelemetryManager.register_adapter`` in 0.6.0 does not); and the manager's
``_adapters`` list, read only to find RHAPSODY's pollers to stop. Both are
exercised by tal's tests against RHAPSODY 0.6.0.

Nothing here raises into RHAPSODY's loop: an adapter that cannot reach or
start an agent logs a warning (logger ``tal_telemetry``), keeps the reason
in ``error`` and emits nothing. ``start()`` blocks RHAPSODY's loop while it
starts its own agent (until the agent answers, at most ``start_timeout``)
and ``stop()`` while that agent writes its log and JSONL (at most
``stop_timeout``).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

# RHAPSODY 0.6.0 ships no type information (no py.typed).
from rhapsody.telemetry.adapters.base import TelemetryAdapter  # type: ignore[import-untyped]
from rhapsody.telemetry.events import ResourceUpdate  # type: ignore[import-untyped]

from . import client

__all__ = ["TalAdapter", "start_telemetry", "find_tal"]

logger = logging.getLogger("tal_telemetry")

#: The fields of RHAPSODY's ResourceUpdate that carry a measurement.
_MEASURES = (
    "cpu_percent",
    "memory_percent",
    "gpu_percent",
    "disk_read_bytes",
    "disk_write_bytes",
    "net_sent_bytes",
    "net_recv_bytes",
)


def find_tal() -> str:
    """The ``tal`` binary: ``$TAL_BIN``, else the one beside this Python
    (a venv's ``bin``, where ``pip install tal-telemetry`` puts it, on
    ``PATH`` or not), else ``tal`` on ``PATH``. Raises
    :class:`client.TalError`."""
    env = os.environ.get("TAL_BIN")
    if env:
        return env
    beside = os.path.join(os.path.dirname(sys.executable), "tal")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("tal")
    if found:
        return found
    raise client.TalError(
        "no tal binary: pip install tal-telemetry into this environment, put tal on PATH, "
        "or set TAL_BIN"
    )


def _number(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _agent_socket() -> Optional[str]:
    """The socket of the agent this process would report to (see
    :func:`tal_telemetry.client.resolve_socket`), if it has one."""
    try:
        return client.resolve_socket()
    except client.TalError:
        return None


class TalAdapter(TelemetryAdapter):  # type: ignore[misc]
    """A RHAPSODY telemetry adapter fed by tal's samples (see the module
    doc).

    Args:
        socket_path: the agent to attach to (default ``$TAL_SOCKET``, or in
            a Slurm job its agent's on this node: see
            :func:`tal_telemetry.client.resolve_socket`).
        interval: ``--interval`` of the agent it starts when none answers
            (an agent it attaches to keeps its own).
        out_dir: ``--out`` of that agent (its log and JSONL; default the
            current directory).
        node_id: ``--node-id`` of that agent (default tal's: the host name).
        tal: the ``tal`` binary (default :func:`find_tal`).
        record_args: more ``tal record`` arguments for that agent.
        stop_rhapsody_adapters: stop RHAPSODY's own resource adapters on the
            same manager as soon as an agent answers (not when none can be
            had: they are then all RHAPSODY has).

    After ``start()``: ``socket_path`` (the agent's socket: pass it to
    :func:`tal_telemetry.bridge.forwarder` to record RHAPSODY's task events
    in tal's log too), ``agent`` (the agent's answer to a ping: its
    ``session_id``, ``node_id``, ``log``), ``owns_agent``; as it runs,
    ``samples`` (emitted to RHAPSODY) and ``dropped`` (lost by the agent's
    feed, as it reported); after ``stop()`` of an agent it started,
    ``finished`` (its answer: ``log`` and ``jsonl``).
    """

    def __init__(
        self,
        socket_path: Optional[str] = None,
        *,
        interval: float = 0.1,
        out_dir: Optional[str] = None,
        node_id: Optional[str] = None,
        tal: Optional[str] = None,
        record_args: Sequence[str] = (),
        stop_rhapsody_adapters: bool = True,
        start_timeout: float = 30.0,
        stop_timeout: float = 60.0,
    ) -> None:
        self._mgr: Any = None
        self._socket_arg = socket_path
        self.interval = interval
        self.out_dir = out_dir
        self.node_id = node_id
        self.tal = tal
        self.record_args = list(record_args)
        self.stop_rhapsody_adapters = stop_rhapsody_adapters
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.socket_path: Optional[str] = None
        self.agent: Optional[Dict[str, Any]] = None
        self.finished: Optional[Dict[str, Any]] = None
        self.owns_agent = False
        self.samples = 0
        self.error: Optional[str] = None
        self.stopped_adapters: List[str] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._sub: Optional[client.Subscription] = None
        self._thread: Optional[threading.Thread] = None
        self._proc: Optional["subprocess.Popen[bytes]"] = None
        self._tmp: Optional[str] = None
        self._started = False
        self._stopped = False
        self._lock = threading.Lock()

    # RHAPSODY's TelemetryManager.register_adapter sets `adapter._manager`
    # (the base class's documented back-reference) and, in 0.6.0, starts
    # only adapters registered before the manager starts. Registering after
    # `session.start_telemetry()` is the usual way, so setting the manager
    # from a running event loop starts this adapter (start() is idempotent:
    # the manager's own start() may call it again).
    @property
    def _manager(self) -> Any:
        return self._mgr

    @_manager.setter
    def _manager(self, manager: Any) -> None:
        self._mgr = manager
        if manager is None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # the manager's start() will start it
        self.start()

    @property
    def agent_pid(self) -> Optional[int]:
        """The pid of the ``tal record`` this adapter started (None when it
        attached to one, or has stopped it)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def dropped(self) -> int:
        """Samples the agent's feed lost for this adapter (it told how many)."""
        return self._sub.dropped if self._sub is not None else 0

    def start(self) -> None:
        """Attaches to (or starts) the agent and subscribes to its samples.
        Never raises: a failure is logged and kept in ``error``."""
        with self._lock:
            if self._started or self._stopped:
                return
            self._started = True
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = asyncio.get_event_loop()
        try:
            self._attach()
        except Exception as e:  # never into RHAPSODY's loop
            self.error = str(e)
            logger.warning("TalAdapter: %s; RHAPSODY gets no resource samples from tal", e)
            self._release()

    def _attach(self) -> None:
        path = self._socket_arg or _agent_socket()
        self.agent = client.ping(path, 5.0) if path else None
        if self.agent is None:
            path = self._start_agent()
        else:
            logger.info("TalAdapter: attached to the tal agent at %s", path)
        self.socket_path = path
        # As soon as an agent answers (RHAPSODY's pollers sample every
        # interval until then), and only then (without one, they are all
        # RHAPSODY has).
        if self.stop_rhapsody_adapters:
            self._stop_rhapsody_pollers()
        self._sub = client.subscribe(["ResourceUpdate"], path, timeout=self.start_timeout)
        self._thread = threading.Thread(
            target=self._read_feed, name="tal-adapter-feed", daemon=True
        )
        self._thread.start()

    def _session_id(self) -> Optional[str]:
        sid = getattr(self._mgr, "session_id", None)
        return sid if isinstance(sid, str) and sid else None

    def _start_agent(self) -> str:
        """Starts `tal record` in the background; returns its socket once
        it answers."""
        exe = self.tal or find_tal()
        self._tmp = tempfile.mkdtemp(prefix="tal-adapter-")
        sock = os.path.join(self._tmp, "tal.sock")
        args = [exe, "record", "--interval", str(self.interval), "--socket", sock]
        sid = self._session_id()
        if sid:
            args += ["--session-id", sid]
        if self.node_id:
            args += ["--node-id", self.node_id]
        args += ["--out", self.out_dir or "."] + self.record_args
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        self.owns_agent = True
        atexit.register(self._stop_agent)
        deadline = time.monotonic() + self.start_timeout
        while True:
            rc = self._proc.poll()
            if rc is not None:
                raise client.TalError(f"tal record exited with status {rc} (its stderr says why)")
            self.agent = client.ping(sock, 1.0) if os.path.exists(sock) else None
            if self.agent is not None:
                logger.info("TalAdapter: started tal record (%s)", self.agent.get("log"))
                return sock
            if time.monotonic() > deadline:
                raise client.TalError(
                    f"tal record did not answer on {sock} within {self.start_timeout} s"
                )
            time.sleep(0.02)

    def _stop_rhapsody_pollers(self) -> None:
        """Stops RHAPSODY's own resource adapters on this manager."""
        from rhapsody.telemetry import adapters as rh  # type: ignore[import-untyped]

        pollers = tuple(
            getattr(rh, n)
            for n in ("ConcurrentTelemetryAdapter", "DaskTelemetryAdapter", "DragonTelemetryAdapter")
            if hasattr(rh, n)
        )
        for a in list(getattr(self._mgr, "_adapters", None) or []):
            if a is not self and isinstance(a, pollers):
                try:
                    a.stop()
                    self.stopped_adapters.append(type(a).__name__)
                except Exception:
                    logger.debug("TalAdapter: stopping %r failed", a, exc_info=True)

    def _convert(self, d: Dict[str, Any], session_id: str) -> ResourceUpdate:
        gpu = d.get("gpu_id")
        kw = {k: _number(d.get(k)) for k in _MEASURES}
        return ResourceUpdate(
            event_id=str(d.get("event_id") or ""),
            event_time=float(d["event_time"]),
            emit_time=time.time(),
            session_id=session_id,
            backend=str(d.get("backend") or "tal"),
            task_id=None,
            node_id=d.get("node_id"),
            attributes={},
            gpu_id=gpu if isinstance(gpu, int) and not isinstance(gpu, bool) else None,
            **kw,
        )

    def _read_feed(self) -> None:
        """The feed thread: each batch of samples to RHAPSODY's loop."""
        sub, loop = self._sub, self._loop
        if sub is None or loop is None:
            return
        session_id = self._session_id() or ""
        try:
            while True:
                batch = sub.read_batch()
                if not batch:
                    break
                events = []
                for d in batch:
                    if d.get("event_type") != "ResourceUpdate":
                        continue
                    try:
                        events.append(self._convert(d, session_id))
                    except (KeyError, TypeError, ValueError):
                        logger.debug("TalAdapter: unreadable sample %r", d)
                if events:
                    loop.call_soon_threadsafe(self._emit_all, events)
        except RuntimeError:
            pass  # the loop closed
        except Exception:
            logger.debug("TalAdapter: the feed ended", exc_info=True)

    def _emit_all(self, events: List[ResourceUpdate]) -> None:
        mgr = self._mgr
        if mgr is None:
            return
        for e in events:
            mgr.emit(e)
        self.samples += len(events)

    def stop(self) -> None:
        """Ends the subscription and stops the agent this adapter started
        (waiting until it has written its log and JSONL). Safe to call
        twice, or without start()."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._release()

    def _release(self) -> None:
        if self._sub is not None:
            self._sub.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        self._stop_agent()

    def _stop_agent(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None and self.socket_path:
            try:
                self.finished = client.stop(self.socket_path, self.stop_timeout)
            except client.TalError as e:
                logger.warning("TalAdapter: stopping tal record: %s", e)
        try:
            proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(10.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


async def start_telemetry(
    session: Any, adapter: Optional[TalAdapter] = None, **kwargs: Any
) -> Any:
    """``session.start_telemetry(**kwargs)`` with tal's samples in place of
    RHAPSODY's own adapters: they are never made (see the module doc), and
    ``adapter`` (default ``TalAdapter()``) is registered. Returns RHAPSODY's
    ``TelemetryManager``."""
    backends = session.backends
    session.backends = {}
    try:
        telemetry = await session.start_telemetry(**kwargs)
    finally:
        session.backends = backends
    telemetry.register_adapter(adapter if adapter is not None else TalAdapter())
    return telemetry
