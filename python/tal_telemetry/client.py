"""A client for tal's ingest socket, for runtimes written in Python.

A Python runtime reports its tasks to the local agent through this module
instead of spawning one ``tal emit`` process per event. It speaks the
agent's line protocol (``src/ingest/protocol.rs`` in tal's sources): one
JSON object per line, an event (``event_type``, ``task_id``, ...) or a
control request (``{"op": "ping" | "stop" | "subscribe"}``). The agent
answers only a refused line (``{"error": REASON, "line": N}``), a task id
used again (``{"warning": ...}``) and control requests (``{"ok": true,
...}``).

The socket is ``path`` if given, else ``$TAL_SOCKET`` (which ``tal record``
exports to the command it wraps), else, in a Slurm job, the default socket
of the job's agent on this node, which ``tal record`` under ``srun`` makes
as a step of its own (:func:`find_socket`, as ``tal emit`` finds it). Like
``tal emit``, a client talks only to an agent of its own user or root: it
checks the listening process's uid (``SO_PEERCRED``) before it sends
anything.

:class:`Client` is made for a runtime's event loop: it never raises for a
full or absent agent and never blocks in :meth:`Client.emit`. Lines go to a
non-blocking socket; what the socket cannot take at once waits in a buffer
of at most ``max_buffer`` bytes, and a line beyond that is dropped and
counted (``dropped``), as is every line sent while no agent is connected
(none was found, or it went away: a client does not reconnect). Each line
is stamped with ``event_time`` when it is emitted, so a line that waited in
the buffer keeps the time its event happened. :meth:`Client.flush` and
:meth:`Client.close` wait, at most ``timeout`` seconds, for the buffer to be
sent and the agent's answers to be read (``refused``, ``warnings``).

:func:`subscribe`, :func:`stop`, :func:`wait` and :func:`ping` are the
blocking requests of ``tal subscribe``, ``tal stop`` and ``tal wait``; every
one has a timeout, and the first three raise :class:`TalError` with a
message that says what to do when the agent cannot be reached.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import socket
import stat
import struct
import sys
import time
from typing import Any, Deque, Dict, Iterator, List, Mapping, Optional, Sequence

__all__ = [
    "TalError",
    "Client",
    "Subscription",
    "resolve_socket",
    "connect",
    "subscribe",
    "stop",
    "wait",
    "ping",
]

#: The longest line the agent accepts (``MAX_LINE_BYTES``); longer ones are
#: dropped here rather than refused there.
MAX_LINE_BYTES = 64 << 10

#: The most reply bytes kept while no newline comes (a hostile or broken
#: peer must not make a client allocate without bound).
_MAX_REPLY_BYTES = 1 << 20

#: How many refusal reasons a client keeps to show.
_KEEP_REASONS = 10


class TalError(OSError):
    """The agent could not be reached, or it refused a request."""


def _env(name: str) -> Optional[str]:
    v = os.environ.get(name)
    return v if v else None


def slurm_session_id() -> Optional[str]:
    """The session id ``tal record`` gives the Slurm job this process runs
    in (``slurm.<job>``, or ``slurm.<array job>_<task>``), if any."""
    array, task = _env("SLURM_ARRAY_JOB_ID"), _env("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"slurm.{array}_{task}"
    job = _env("SLURM_JOB_ID")
    return f"slurm.{job}" if job else None


def socket_name(session_id: str, node_id: str) -> str:
    """The default socket's file name: ``tal.<session>.<node>.sock`` (one
    ``tal.`` prefix)."""
    session = session_id[4:] if session_id.startswith("tal.") else session_id
    return f"tal.{session}.{node_id}.sock"


def _private(d: str) -> bool:
    """``d`` is a real directory of this user's that no one else may enter
    or write (as tal checks its socket directories)."""
    try:
        st = os.lstat(d)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & 0o077 == 0


def _socket_mtime(p: str) -> Optional[int]:
    try:
        st = os.lstat(p)
    except OSError:
        return None
    return st.st_mtime_ns if stat.S_ISSOCK(st.st_mode) else None


def find_socket(session_id: str, node_id: str) -> str:
    """Where the agent of ``session_id`` on ``node_id`` listens when it was
    not told a path, as ``tal emit`` looks for it: ``$XDG_RUNTIME_DIR``,
    else ``tal-<uid>`` in ``$TMPDIR`` or ``/tmp``; then the ``tal-<uid>-*``
    directories tal makes when those cannot be used, the newest socket of
    that name. Only directories that are the user's own and private are
    taken (another user cannot make one of them); the default path where
    none has the socket."""
    name = socket_name(session_id, node_id)
    uid = os.geteuid()
    xdg = _env("XDG_RUNTIME_DIR")
    tmp = _env("TMPDIR") or "/tmp"
    own = os.path.join(tmp, f"tal-{uid}")
    default = os.path.join(xdg or own, name)
    if (xdg is not None or _private(own)) and _socket_mtime(default) is not None:
        return default
    dirs = [own]
    for base in dict.fromkeys([tmp, "/tmp"]):
        try:
            names = os.listdir(base)
        except OSError:
            continue
        dirs.extend(os.path.join(base, n) for n in names if n.startswith(f"tal-{uid}-"))
    found = []
    for d in dirs:
        p = os.path.join(d, name)
        t = _socket_mtime(p)
        if t is not None and _private(d):
            found.append((t, p))
    return max(found)[1] if found else default


def resolve_socket(path: Optional[str] = None) -> str:
    """The agent's socket: ``path``, else ``$TAL_SOCKET``, else in a Slurm
    job (``SLURM_JOB_ID`` and ``SLURMD_NODENAME`` set) the job's agent on
    this node (:func:`find_socket`).

    Raises :class:`TalError` when there is none of these."""
    p = path or _env("TAL_SOCKET")
    if p:
        return p
    session, node = slurm_session_id(), _env("SLURMD_NODENAME")
    if session and node:
        return find_socket(session, node)
    raise TalError(
        "no agent socket: set TAL_SOCKET (tal record exports it to the command it "
        "wraps), run in a Slurm job whose agent runs on this node, or pass the "
        "socket's path"
    )


def connect(path: Optional[str] = None, timeout: float = 5.0) -> socket.socket:
    """A blocking connection to the agent at ``path`` (see
    :func:`resolve_socket`), after checking that the agent is this user's
    or root's. Raises :class:`TalError`."""
    p = resolve_socket(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(p)
        _check_peer(s, p)
    except TalError:
        s.close()
        raise
    except OSError as e:
        s.close()
        raise TalError(f"no tal agent at {p}: {e}") from e
    return s


def _check_peer(s: socket.socket, path: str) -> None:
    """Refuses a socket served by another user (see the module doc)."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:  # not Linux: nothing to check with
        return
    creds = s.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    me = os.geteuid()
    if uid not in (me, 0):
        raise TalError(
            f"the socket {path} is served by uid {uid}, not by you (uid {me}) or root: "
            "not talking to it (another user may have taken the path); pass the path"
        )


_PING = b'{"op":"ping"}\n'


def _data_lines(lines: Deque[bytes]) -> int:
    """How many of these queued lines are events (not our pings)."""
    return sum(1 for line in lines if line is not _PING)


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, default=str, separators=(",", ":")).encode() + b"\n"


class Client:
    """A connection that sends events to the agent without ever blocking
    or raising for a full or absent agent (see the module doc).

    Counts: ``sent`` (lines written whole to the socket), ``dropped``
    (lines that never were: no agent, buffer full, connection lost, or
    longer than the agent accepts), ``refused`` (lines the agent refused;
    their first reasons are in ``refusals``), ``warnings``. After
    :meth:`close`, ``sent + dropped`` is every line emitted. A line written
    just before the agent finished may still be lost unseen: the kernel
    took it, and nobody read it (the agent stops reading when its
    recording ends).
    """

    def __init__(
        self,
        path: Optional[str] = None,
        *,
        max_buffer: int = 8 << 20,
        connect_timeout: float = 5.0,
        name: str = "tal_telemetry",
        quiet: bool = False,
    ) -> None:
        self.name = name
        self.quiet = quiet
        self.max_buffer = max_buffer
        self.path: Optional[str] = None
        self.sent = 0
        self.dropped = 0
        self.refused = 0
        self.warnings = 0
        self.refusals: List[str] = []
        self.error: Optional[str] = None
        self._lines: Deque[bytes] = collections.deque()
        self._offset = 0  # bytes of _lines[0] already written
        self._buffered = 0  # bytes in _lines, less _offset
        self._replies = bytearray()
        self._acks = 0
        self._pings = 0
        self._sock: Optional[socket.socket] = None
        self._closed = False
        try:
            self.path = resolve_socket(path)
            self._sock = connect(self.path, connect_timeout)
            self._sock.setblocking(False)
        except TalError as e:
            self._lost(str(e))

    @property
    def connected(self) -> bool:
        """Whether lines can still reach the agent."""
        return self._sock is not None

    @property
    def buffered_bytes(self) -> int:
        """Bytes waiting for the socket."""
        return self._buffered

    def _lost(self, why: str) -> None:
        """Notes that no line can reach the agent any more: what waits is
        dropped, and the reason is said once."""
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        self.dropped += _data_lines(self._lines)
        self._lines.clear()
        self._buffered = self._offset = 0
        if self.error is None:
            self.error = why
            if not self.quiet:
                print(f"{self.name}: {why}; events are not recorded", file=sys.stderr)

    # -- sending ---------------------------------------------------------

    def send_line(self, line: bytes) -> bool:
        """Queues one newline-terminated protocol line; returns whether it
        was taken (else it is counted in ``dropped``)."""
        if self._sock is None or self._closed:
            self.dropped += 1
            return False
        if len(line) > MAX_LINE_BYTES + 1 or self._buffered + len(line) > self.max_buffer:
            self.dropped += 1
            self._pump()
            return False
        self._lines.append(line)
        self._buffered += len(line)
        self._pump()
        return True

    def emit(
        self,
        event_type: str,
        task_id: Optional[str] = None,
        *,
        attributes: Optional[Mapping[str, Any]] = None,
        event_time: Optional[float] = None,
        backend: Optional[str] = None,
        **fields: Any,
    ) -> bool:
        """Sends one event: a task lifecycle type (needs ``task_id``), a
        ``ResourceUpdate``, or a namespaced custom type (``app.Checkpoint``)
        whose ``fields`` are kept at top level. ``event_time`` defaults to
        now. Returns whether it was queued; never raises for the agent."""
        ev: Dict[str, Any] = {"event_type": event_type}
        if task_id is not None:
            ev["task_id"] = task_id
        if backend is not None:
            ev["backend"] = backend
        ev["event_time"] = time.time() if event_time is None else event_time
        if attributes:
            ev["attributes"] = dict(attributes)
        ev.update(fields)
        try:
            line = _line(ev)
        except (TypeError, ValueError):
            self.dropped += 1
            return False
        return self.send_line(line)

    def task_started(
        self, task_id: str, *, pid: Optional[int] = None, **kwargs: Any
    ) -> bool:
        """``TaskStarted``; with ``pid``, the agent samples that process and
        its descendants until the task ends (``tal.TaskResourceUpdate``)."""
        if pid is not None:
            attrs = dict(kwargs.pop("attributes", None) or {})
            attrs["pid"] = pid
            kwargs["attributes"] = attrs
        return self.emit("TaskStarted", task_id, **kwargs)

    def task_completed(self, task_id: str, **kwargs: Any) -> bool:
        """``TaskCompleted`` (``duration_seconds`` optional: the agent takes
        it from the task's start)."""
        return self.emit("TaskCompleted", task_id, **kwargs)

    def task_failed(self, task_id: str, error_type: Optional[str] = None, **kwargs: Any) -> bool:
        """``TaskFailed``, with the error's type name if known."""
        if error_type is not None:
            kwargs["error_type"] = error_type
        return self.emit("TaskFailed", task_id, **kwargs)

    def task_canceled(self, task_id: str, **kwargs: Any) -> bool:
        """``TaskCanceled``."""
        return self.emit("TaskCanceled", task_id, **kwargs)

    @contextlib.contextmanager
    def task(self, task_id: str, **kwargs: Any) -> Iterator[None]:
        """Reports the block as a task: ``TaskStarted`` (``kwargs`` as for
        :meth:`task_started`, ``pid`` included), then ``TaskCompleted``, or
        ``TaskFailed`` with the exception's type name as ``error_type`` (the
        exception goes on), or ``TaskCanceled`` for a cancellation or an
        interrupt."""
        self.task_started(task_id, **kwargs)
        try:
            yield
        except Exception as e:
            self.task_failed(task_id, type(e).__name__)
            raise
        except BaseException:
            self.task_canceled(task_id)
            raise
        self.task_completed(task_id)

    def _pump(self) -> None:
        """Writes what the socket takes now, and reads any replies."""
        sock = self._sock
        if sock is None:
            return
        try:
            while self._lines:
                head = self._lines[0]
                chunk = memoryview(head)[self._offset :]
                n = sock.send(chunk)
                self._buffered -= n
                if n < len(chunk):
                    self._offset += n
                    break
                if self._lines.popleft() is not _PING:
                    self.sent += 1
                self._offset = 0
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            self._lost(f"lost the agent at {self.path}: {e}")
            return
        self._read_replies()

    def _read_replies(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                chunk = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not chunk:
                return
            self._take_replies(chunk)

    def _take_replies(self, chunk: bytes) -> None:
        self._replies += chunk
        *lines, rest = bytes(self._replies).split(b"\n")
        self._replies = bytearray(rest if len(rest) <= _MAX_REPLY_BYTES else b"")
        for raw in lines:
            self._reply(raw)

    def _reply(self, raw: bytes) -> None:
        try:
            v = json.loads(raw)
        except ValueError:
            v = {"error": raw.decode(errors="replace")}
        if not isinstance(v, dict):
            return
        if v.get("ok") is True:
            self._acks += 1
        elif "error" in v:
            self.refused += 1
            if len(self.refusals) < _KEEP_REASONS:
                self.refusals.append(str(v["error"]))
        elif "warning" in v:
            self.warnings += 1

    def flush(self, timeout: float = 10.0) -> bool:
        """Sends what is buffered and waits until the agent has read it all
        (a ping it answers after every line before it), at most ``timeout``
        seconds; ``refused`` then counts every refusal of those lines.
        Returns whether the agent answered; never raises for the agent."""
        if self._sock is None or self._closed:
            return False
        # Answers come in order: this ping's is the `_pings`-th.
        self._pings += 1
        target = self._pings
        self._lines.append(_PING)
        self._buffered += len(_PING)
        deadline = time.monotonic() + timeout
        while self._sock is not None and self._acks < target:
            self._pump()
            if self._sock is None or self._acks >= target:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _wait_io(self._sock, bool(self._lines), min(left, 0.05))
        return self._acks >= target

    def close(self, timeout: float = 10.0) -> None:
        """Sends what is buffered (waiting up to ``timeout``), reads the
        agent's replies and closes. Safe to call twice; never raises."""
        if self._closed:
            return
        self._closed = True
        sock = self._sock
        if sock is None:
            return
        deadline = time.monotonic() + timeout
        while self._lines and self._sock is not None:
            self._pump()
            left = deadline - time.monotonic()
            if not self._lines or left <= 0 or self._sock is None:
                break
            _wait_io(self._sock, True, min(left, 0.05))
        if self._sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_WR)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                self._take_replies(chunk)
        except OSError:
            pass
        if self._replies.strip():
            self._reply(bytes(self._replies))
        self._replies.clear()
        self.dropped += _data_lines(self._lines)
        self._lines.clear()
        self._sock = None
        try:
            sock.close()
        except OSError:
            pass

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wait_io(sock: socket.socket, want_write: bool, timeout: float) -> None:
    import select

    try:
        select.select([sock], [sock] if want_write else [], [], timeout)
    except (OSError, ValueError):
        pass


def _request(path: Optional[str], op: Mapping[str, Any], timeout: float) -> List[Dict[str, Any]]:
    """Sends one control line, ends the sending side and reads every reply
    until the agent closes the connection (at most ``timeout``)."""
    s = connect(path, min(timeout, 5.0))
    p = resolve_socket(path)
    try:
        s.sendall(_line(op))
        s.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + timeout
        got = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TalError(f"the agent at {p} did not answer within {timeout} s")
            s.settimeout(left)
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
            if len(got) > _MAX_REPLY_BYTES:
                break
    except socket.timeout as e:
        raise TalError(f"the agent at {p} did not answer within {timeout} s") from e
    except TalError:
        raise
    except OSError as e:
        raise TalError(f"talking to the agent at {p}: {e}") from e
    finally:
        s.close()
    out = []
    for raw in bytes(got).split(b"\n"):
        if raw.strip():
            try:
                v = json.loads(raw)
            except ValueError:
                continue
            if isinstance(v, dict):
                out.append(v)
    return out


def ping(path: Optional[str] = None, timeout: float = 5.0) -> Optional[Dict[str, Any]]:
    """The agent's answer to a ping (its ``session_id``, ``node_id`` and
    ``log``), or None when no agent answers. Never raises."""
    try:
        replies = _request(path, {"op": "ping"}, timeout)
    except TalError:
        return None
    return next((r for r in replies if r.get("ok") is True), None)


def wait(path: Optional[str] = None, timeout: float = 60.0) -> Dict[str, Any]:
    """Pings until the agent answers (``tal wait``); returns its answer.
    Raises :class:`TalError` when none did within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        answer = ping(path, max(0.1, min(left, 5.0)))
        if answer is not None:
            return answer
        if time.monotonic() >= deadline:
            try:
                where = resolve_socket(path)
            except TalError:
                where = "(no socket: set TAL_SOCKET)"
            raise TalError(f"no tal agent answered at {where} within {timeout} s")
        time.sleep(0.05)


def stop(path: Optional[str] = None, timeout: float = 60.0) -> Dict[str, Any]:
    """Asks the agent to finish (``tal stop``) and waits until it says its
    log and JSONL are written; returns that answer (``log``, ``jsonl``).
    Raises :class:`TalError` otherwise."""
    replies = _request(path, {"op": "stop"}, timeout)
    if replies and replies[-1].get("ok") is True:
        return replies[-1]
    if replies:
        raise TalError(f"the agent answered: {json.dumps(replies[-1])}")
    raise TalError("the agent closed the connection without confirming it finished")


class Subscription:
    """The agent's live feed (``tal subscribe``): an iterator of events,
    each a dict shaped as the JSONL's event lines.

    ``dropped`` counts the lines the agent told this subscriber it lost
    (``{"dropped": N}``: the subscriber fell more than the agent's backlog
    behind) and ``oversized`` the lines longer than ``max_line`` that were
    skipped here. Iteration ends when the agent ends the feed (its
    recording finished) or :meth:`close` is called from another thread.
    """

    def __init__(
        self,
        types: Optional[Sequence[str]] = None,
        path: Optional[str] = None,
        *,
        timeout: float = 10.0,
        max_line: int = 1 << 20,
    ) -> None:
        self.types = list(types) if types is not None else None
        self.dropped = 0
        self.oversized = 0
        self.max_line = max_line
        self._pending: Deque[Dict[str, Any]] = collections.deque()
        self._partial = bytearray()
        self._skipping = False
        self._eof = False
        self._closing = False
        self._reading = False
        req: Dict[str, Any] = {"op": "subscribe"}
        if self.types is not None:
            req["types"] = self.types
        self._sock = connect(path, timeout)
        p = resolve_socket(path)
        try:
            self._sock.sendall(_line(req))
            self.answer = self._first_line(p, timeout)
        except BaseException:
            self._sock.close()
            raise
        self._sock.settimeout(None)

    def _first_line(self, p: str, timeout: float) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._partial:
            left = deadline - time.monotonic()
            if left <= 0 or len(self._partial) > _MAX_REPLY_BYTES:
                raise TalError(f"the agent at {p} did not answer the subscription")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout as e:
                raise TalError(f"the agent at {p} did not answer the subscription") from e
            except OSError as e:
                raise TalError(f"talking to the agent at {p}: {e}") from e
            if not chunk:
                raise TalError(f"the agent at {p} closed the connection without answering")
            self._partial += chunk
        nl = self._partial.index(b"\n")
        first = bytes(self._partial[:nl])
        del self._partial[: nl + 1]
        try:
            answer = json.loads(first)
        except ValueError as e:
            raise TalError(f"the agent's answer is not JSON: {first[:200]!r}") from e
        if not isinstance(answer, dict) or answer.get("ok") is not True:
            why = answer.get("error") if isinstance(answer, dict) else None
            raise TalError(f"the agent refused the subscription: {why or first[:200]!r}")
        self._split()
        return answer

    def fileno(self) -> int:
        """The socket's descriptor (for ``select``)."""
        return self._sock.fileno()

    def _split(self) -> None:
        """Moves every whole line of ``_partial`` to ``_pending``."""
        buf = self._partial
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            raw = bytes(buf[start:nl])
            start = nl + 1
            if self._skipping:
                self._skipping = False
                continue
            self._take(raw)
        del buf[:start]
        if len(buf) > self.max_line:
            # A line longer than we keep: skip it to its newline.
            self.oversized += 1
            self._skipping = True
            buf.clear()

    def _take(self, raw: bytes) -> None:
        try:
            v = json.loads(raw)
        except ValueError:
            return
        if not isinstance(v, dict):
            return
        if "event_type" not in v and isinstance(v.get("dropped"), int):
            self.dropped += v["dropped"]
            return
        self._pending.append(v)

    def read_batch(self) -> List[Dict[str, Any]]:
        """Blocks until at least one event arrives; returns every event read
        so far (an empty list: the feed ended)."""
        self._reading = True
        try:
            while not self._pending and not self._eof:
                try:
                    chunk = self._sock.recv(1 << 16)
                except InterruptedError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    self._eof = True
                    break
                self._partial += chunk
                self._split()
        finally:
            self._reading = False
        if self._eof and self._closing:
            self._sock.close()
        out = list(self._pending)
        self._pending.clear()
        return out

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        while True:
            batch = self.read_batch()
            if not batch:
                return
            yield from batch

    def close(self) -> None:
        """Ends the feed; a thread blocked reading it returns (and closes
        the socket, which is closed here when no thread reads). Safe to
        call twice."""
        self._closing = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if not self._reading:
            self._sock.close()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def subscribe(
    types: Optional[Sequence[str]] = None, path: Optional[str] = None, timeout: float = 10.0
) -> Subscription:
    """A :class:`Subscription` to the agent's feed, of these event types
    (None: every type). Every event the agent handles after this returns is
    in it. Raises :class:`TalError` if no agent answers or it refuses."""
    return Subscription(types, path, timeout=timeout)
