"""The fault-test harness: fsctl as real processes that can be ``kill -9``-ed.

Everything listens on 127.0.0.1 on free ports and runs in its own session
(``start_new_session=True``), so one ``os.killpg(pid, SIGKILL)`` is a crash:

- :class:`RedisProc`   redis-server (``fsctl.embedded.start_redis``, AOF everysec); restart on
  the same port and data directory.
- :class:`SimProc`     ``fsctl simulate`` with ``--command-log`` (one JSON line per received
  command) and ``--numbers`` (far ends that ring long, are busy, never answer, talk long);
  restart = kill -9 + start on the same port: every channel gone, a new Core-UUID.
- :class:`WorkerProc`  ``fsctl worker`` on its own simulator (directly or through a proxy).
- :class:`ApiProc`     ``fsctl api``.
- :class:`EslProxy`    an in-process gevent TCP proxy between a worker and its simulator:
  ``reset()`` (RST both ways), ``blackhole()`` (sockets stay open, nothing flows),
  ``restore()``, and ``mangle`` (duplicate, swap or hold events on the way to the worker).
- :class:`LoadGen`     POSTs callbacks with retries on connection errors and 503 (round robin
  over the API processes), remembering every id that got a ``202``; each request carries a
  tag (``leg_A.caller_id_name``) so duplicates made by client retries are counted honestly.
- :func:`check`        the invariant checker: after a settle time, reads every record from
  Redis, every simulator's command log and every simulator's live channels, and makes one
  :class:`Report` row: submitted | completed | failed(outcomes) | cancelled | lost |
  dialled twice | orphans.

On a real FreeSWITCH (``make test-freeswitch``), :mod:`.realnode`'s ``FreeSwitchNode`` stands
where a SimProc stands (tests/realfs.py + one sipp switchboard; the worker logs in as the
restricted user) and ``FreeSwitchCluster`` builds a Cluster of them; what was dialled is
counted from FreeSWITCH's own events (CHANNEL_CREATE, BACKGROUND_JOB).

Every wait is bounded; :meth:`Cluster.close` kills every process it started.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import http.client
import itertools
import json
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.pool
import redis
import support
from fscli import FsCliView
from gevent.event import Event as GEvent
from gevent.lock import Semaphore
from gevent.server import StreamServer
from procs import kill_group, terminate_group

from fsctl.embedded import free_port, start_redis, wait_port
from fsctl.errors import ESLError
from fsctl.esl import ESLClient

REPO = Path(__file__).resolve().parents[2]
VAR = REPO / "var"
LOG_ROOT = VAR / "faults"
REPORT_PATH = VAR / "faults-report.txt"
PY = sys.executable
HOST = "127.0.0.1"
BASE = "/voice/call/callback"
PREFIX = "fsctl"
FINAL = ("completed", "failed", "cancelled")

# ---- numbers and routes -----------------------------------------------------------------

RINGING = "1000777"
"""A far end (user/ route) that rings 8 s, then answers."""
RINGING2 = "1000778"
"""Another one like RINGING (both legs of one callback may not call the same number)."""
BUSY = "1000666"
"""A far end that rings 1 s, then answers 486 Busy Here."""
NOANSWER = "1000555"
"""A far end that rings until the ring timeout."""
LONGTALK = "1000444"
"""A far end that answers at once and hangs up 8 s after the bridge (the other leg must be
LONGTALK2 for the call to last: each SIP-like leg hangs up after its own talk time)."""
LONGTALK2 = "1000445"

NUMBERS = {
    RINGING: {"outcome": "answer", "answer_delay_s": 8.0, "talk_s": 2.0},
    RINGING2: {"outcome": "answer", "answer_delay_s": 8.0, "talk_s": 2.0},
    BUSY: {"outcome": "busy", "answer_delay_s": 1.0},
    NOANSWER: {"outcome": "no_answer"},
    LONGTALK: {"outcome": "answer", "answer_delay_s": 0.3, "talk_s": 8.0},
    LONGTALK2: {"outcome": "answer", "answer_delay_s": 0.3, "talk_s": 8.0},
}

_POLICY = {"allow": [r"\+?1[0-9]{6}"], "deny_prefixes": ["1900"]}
ROUTES = {
    "default_route": "user",
    "routes": {
        # user/: SIP-like far ends of the simulator (--answer-delay 0.3 --talk 2, or NUMBERS)
        "user": {"template": "user/{to}", **_POLICY},
        # null/: mod_loopback's null endpoint (never hangs up by itself once bridged)
        "answer": {"template": "null/{to}", **_POLICY},
        "ring": {"template": "{null_auto_answer_delay=2000}null/{to}", **_POLICY},
        "slow": {"template": "{null_auto_answer_delay=10000}null/{to}", **_POLICY},
        "noanswer": {"template": "{null_enable_auto_answer=false}null/{to}", **_POLICY},
        "busy": {"template": "error/USER_BUSY", **_POLICY},
    },
}

_counter = itertools.count(1)


def number(kind: str = "a") -> str:
    """A fresh ordinary destination (answers after 0.3 s, talks 2 s)."""
    n = next(_counter) % 100_000
    return f"{'1001' if kind == 'a' else '1002'}{n % 1000:03d}"


def long_call() -> dict[str, Any]:
    """A callback that talks 8 s once bridged."""
    return body(a=LONGTALK, b=LONGTALK2)


def body(a: str | None = None, b: str | None = None, *, a_route: str | None = None,
         b_route: str | None = None, mode: str | None = None, first: str | None = None,
         ring: int | None = None) -> dict[str, Any]:
    """A callback request; ordinary numbers unless given."""
    leg_a: dict[str, Any] = {"to": a or number("a")}
    leg_b: dict[str, Any] = {"to": b or number("b")}
    if a_route:
        leg_a["route"] = a_route
    if b_route:
        leg_b["route"] = b_route
    if ring:
        leg_a["ring_timeout"] = leg_b["ring_timeout"] = ring
    req: dict[str, Any] = {"leg_A": leg_a, "leg_B": leg_b}
    if mode:
        req["mode"] = mode
    if first:
        req["first"] = first
    return req


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]


def wait_until(pred: Callable[[], Any], timeout_s: float, what: str,
               interval_s: float = 0.1) -> Any:
    """Poll ``pred`` until it returns something truthy; AssertionError after ``timeout_s``."""
    return support.wait_until(pred, timeout_s, what, interval_s)


# ---- processes ----------------------------------------------------------------------------

_ALL_PROCS: list[Proc] = []
_ALL_REDIS: list[RedisProc] = []


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSCTL_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """One child process in its own session, logging to a file; kill -9 is one killpg."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_offset = 0
        _ALL_PROCS.append(self)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> Proc:
        if self.alive:
            raise RuntimeError(f"{self.name} is running already")
        self.starts += 1
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as fh:
            fh.write(f"==== {self.name} start #{self.starts} at {time.time():.3f}\n".encode())
            self._log_offset = fh.tell()
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=fh,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=str(REPO), start_new_session=True)
        return self

    def kill9(self) -> None:
        """SIGKILL to the whole process group: a crash, no goodbye."""
        kill_group(self.proc)

    def terminate(self, timeout_s: float) -> int | None:
        """SIGTERM; the exit code, or None when it had to be killed after ``timeout_s``."""
        return terminate_group(self.proc, timeout_s)

    def log_text(self, since_start: bool = True) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[self._log_offset if since_start else 0:].decode(errors="replace")

    def wait_log(self, pattern: str, timeout_s: float) -> bool:
        """Wait until the log (of this start) matches ``pattern``; False on timeout."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if rx.search(self.log_text()):
                return True
            if not self.alive:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode if self.proc else '?'})"
                                     f": {self.log_text()[-2000:]}")
            gevent.sleep(0.1)
        return False


class RedisProc:
    """redis-server with AOF (everysec) in a data directory; restart on the same port/dir."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://{HOST}:{self.port}/0"
        self.starts = 0
        _ALL_REDIS.append(self)

    def start(self) -> RedisProc:
        self.starts += 1
        self.proc = start_redis(self.port, self.data_dir,
                                extra_args=("--logfile", str(self.log_path)))
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()

    def terminate(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM (Redis shuts down cleanly, AOF written); kill -9 after ``timeout_s``."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None
        finally:
            if self.proc.stderr is not None:
                self.proc.stderr.close()

    def restart(self) -> None:
        self.kill9()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5,
                                    socket_connect_timeout=2)


class SimProc(FsCliView, Proc):
    """``fsctl simulate`` on a fixed port; each start logs commands to a new file."""

    def __init__(self, name: str, workdir: Path, password: str, numbers_file: Path,
                 answer_delay_s: float = 0.3, talk_s: float = 2.0,
                 sessions_per_second: int | None = None) -> None:
        self.port = free_port()
        self.sessions_per_second = sessions_per_second
        """None: FreeSWITCH's default (30), as the simulator's."""
        self.password = password
        self.workdir = workdir
        self.numbers_file = numbers_file
        self.answer_delay_s = answer_delay_s
        self.talk_s = talk_s
        self.command_logs: list[Path] = []
        env = base_env()
        env["FSCTL_ESL_PASSWORD"] = password
        super().__init__(name, [], env, workdir / f"{name}.log")

    def start(self) -> SimProc:
        cmdlog = self.workdir / f"{self.name}-commands-{self.starts + 1}.jsonl"
        self.command_logs.append(cmdlog)
        self.argv = [PY, "-m", "fsctl", "simulate", "--host", HOST, "--port", str(self.port),
                     "--password-env", "FSCTL_ESL_PASSWORD",
                     "--answer-delay", str(self.answer_delay_s), "--talk", str(self.talk_s),
                     "--command-log", str(cmdlog), "--numbers", str(self.numbers_file)]
        if self.sessions_per_second is not None:
            self.argv += ["--sessions-per-second", str(self.sessions_per_second)]
        super().start()
        try:
            wait_port(HOST, self.port, 15)
        except TimeoutError:
            raise AssertionError(f"{self.name} did not listen: {self.log_text()[-2000:]}") from None
        return self

    def restart(self) -> None:
        """A FreeSWITCH crash and restart: every channel gone, a new Core-UUID."""
        self.kill9()
        self.start()

    @property
    def node(self) -> str:
        return f"{HOST}:{self.port}"

    def esl(self) -> ESLClient:
        client = ESLClient(HOST, self.port, self.password, connect_timeout_s=3,
                           command_timeout_s=5)
        client.connect()
        return client

    def originates(self) -> list[dict[str, Any]]:
        """Every originate this simulator (all its starts) received: uuid, conn, at, start."""
        out = []
        for start, path in enumerate(self.command_logs, 1):
            for cmd in read_command_log(path):
                text = cmd.get("text", "")
                if not re.match(r"(bg)?api originate ", text):
                    continue
                m = re.search(r"origination_uuid=([0-9A-Fa-f-]{36})", text)
                out.append({"uuid": m.group(1) if m else None, "conn": cmd.get("conn"),
                            "at": cmd.get("at"), "sim": self.name, "start": start,
                            "fsctl": "fsctl_callback_id=" in text})
        return out


def read_command_log(path: Path) -> list[dict[str, Any]]:
    out = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


class WorkerProc(Proc):
    """``fsctl worker`` named ``name`` on one simulator (directly or through a proxy)."""

    def __init__(self, name: str, workdir: Path, redis_url: str, sim: SimProc,
                 routes_file: Path, esl_port: int | None = None) -> None:
        self.sim = sim
        self.esl_port = esl_port or sim.port
        env = base_env()
        env.update({
            "FSCTL_REDIS_URL": redis_url,
            "FSCTL_ESL_HOST": HOST, "FSCTL_ESL_PORT": str(self.esl_port),
            "FSCTL_ESL_PASSWORD": sim.password,
            "FSCTL_WORKER_NAME": name,
            "FSCTL_RECLAIM_IDLE_S": "3",
            "FSCTL_SHUTDOWN_GRACE_S": "10",
            "FSCTL_ESL_PING_S": "0.5",
            "FSCTL_ROUTES_FILE": str(routes_file),
            "FSCTL_DEST_MAX_PER_HOUR": "1000000",
            "FSCTL_RATE_PER_MINUTE": "1000000",
            "FSCTL_MAX_LIVE": "1000000",
            "FSCTL_LOG_LEVEL": "INFO",
            # the scenario's own spool (final states Redis could not take when it stopped),
            # kept across this worker's restarts, never shared with another scenario's
            "FSCTL_SPOOL_DIR": str(workdir / "spool"),
        })
        user = getattr(sim, "esl_user", None)
        if user:  # a real FreeSWITCH: the restricted event-socket user (userauth)
            env["FSCTL_ESL_USER"] = user
        super().__init__(name, [PY, "-m", "fsctl", "worker"], env, workdir / f"{name}.log")

    def start(self, wait_connected: bool = True) -> WorkerProc:
        super().start()
        if wait_connected and not self.wait_log(r"(?<!dis)connected", 15):
            raise AssertionError(f"{self.name} did not connect: {self.log_text()[-2000:]}")
        return self


class ApiProc(Proc):
    """``fsctl api`` on a free port."""

    def __init__(self, name: str, workdir: Path, redis_url: str, routes_file: Path) -> None:
        self.port = free_port()
        env = base_env()
        env.update({
            "FSCTL_REDIS_URL": redis_url, "FSCTL_API_HOST": HOST,
            "FSCTL_API_PORT": str(self.port), "FSCTL_ROUTES_FILE": str(routes_file),
            "FSCTL_DEST_MAX_PER_HOUR": "1000000", "FSCTL_RATE_PER_MINUTE": "1000000",
            "FSCTL_MAX_LIVE": "1000000", "FSCTL_LOG_LEVEL": "INFO",
        })
        super().__init__(name, [PY, "-m", "fsctl", "api"], env, workdir / f"{name}.log")

    def start(self) -> ApiProc:
        super().start()
        try:
            wait_port(HOST, self.port, 20)
        except TimeoutError:
            raise AssertionError(f"{self.name} did not listen: {self.log_text()[-2000:]}") from None
        return self


# ---- the ESL proxy ------------------------------------------------------------------------

_CL_RE = re.compile(rb"(?m)^Content-Length: *(\d+) *$")
_NAME_RE = re.compile(rb"(?m)^Event-Name: *(\S+) *$")
_UUID_RE = re.compile(rb"(?m)^(?:Unique-ID|Job-UUID): *(\S+) *$")


class _FrameSplitter:
    """Cuts the server → client byte stream into whole ESL frames (raw bytes, outer head)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self.buf += data
        out = []
        while True:
            end = self.buf.find(b"\n\n")
            if end < 0:
                return out
            head = bytes(self.buf[:end])
            m = _CL_RE.search(head)
            total = end + 2 + (int(m.group(1)) if m else 0)
            if len(self.buf) < total:
                return out
            out.append((bytes(self.buf[:total]), head))
            del self.buf[:total]


@dataclass
class Mangle:
    """What the proxy does to events on their way to the worker (commands pass untouched).

    ``duplicate``: probability an event is sent twice; ``swap``: probability an event is
    held back and sent after the next one (at most ``swap_wait_s`` later);
    ``hold_names`` + ``hold_ids``: events of these names about these Unique-IDs/Job-UUIDs
    are delayed by ``hold_s`` (e.g. a leg's ANSWER arriving after its HANGUP).
    """

    duplicate: float = 0.0
    swap: float = 0.0
    swap_wait_s: float = 0.05
    hold_names: frozenset[str] = frozenset()
    hold_ids: set[str] = field(default_factory=set)
    hold_s: float = 0.0
    seed: int = 7
    stats: collections.Counter[str] = field(default_factory=collections.Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


class _Pair:
    """One proxied connection: client (worker) ↔ upstream (simulator)."""

    def __init__(self, proxy: EslProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.flowing = GEvent()
        self.flowing.set()
        self.closed = False
        self.down_lock = Semaphore()
        self.held: list[bytes] | None = None
        self.held_timer: gevent.Greenlet | None = None

    def run(self) -> None:
        pumps = [gevent.spawn(self._pump, self.client, self.upstream, False),
                 gevent.spawn(self._pump, self.upstream, self.client, True)]
        gevent.joinall(pumps)

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        splitter = _FrameSplitter()
        try:
            while not self.closed:
                self.flowing.wait()
                data = src.recv(65536)
                if not data:
                    break
                self.flowing.wait()  # black-holed: what was read waits here, like TCP in flight
                if self.closed:
                    break
                if not downstream:
                    dst.sendall(data)
                    continue
                for frame, head in splitter.feed(data):
                    self._deliver(frame, head)
        except OSError:
            pass
        finally:
            self.close()

    # -- server → client, maybe mangled ------------------------------------------------------

    def _send_down(self, *frames: bytes) -> None:
        if self.closed:
            return
        with self.down_lock:
            try:
                for frame in frames:
                    self.client.sendall(frame)
            except OSError:
                self.close()

    def _deliver(self, frame: bytes, head: bytes) -> None:
        m = self.proxy.mangle
        is_event = b"text/event-" in head
        body = frame[len(head) + 2:]
        if is_event and self.proxy.observer is not None:
            self.proxy.observer(body)
        if m is None or not is_event:
            self._flush_held()
            self._send_down(frame)
            return
        if m.hold_names and m.hold_s > 0:
            name = _NAME_RE.search(body)
            ids = {x.decode(errors="replace") for x in _UUID_RE.findall(body)}
            if name and name.group(1).decode() in m.hold_names and ids & m.hold_ids:
                m.stats["held"] += 1
                gevent.spawn_later(m.hold_s, self._send_down, frame)
                return
        copies = [frame, frame] if m.rng.random() < m.duplicate else [frame]
        if len(copies) == 2:
            m.stats["duplicated"] += 1
        if self.held is not None:
            held, self.held = self.held, None
            if self.held_timer is not None:
                self.held_timer.kill(block=False)
            m.stats["swapped"] += 1
            self._send_down(*copies, *held)
        elif m.rng.random() < m.swap:
            self.held = copies
            self.held_timer = gevent.spawn_later(m.swap_wait_s, self._flush_held)
        else:
            self._send_down(*copies)

    def _flush_held(self) -> None:
        if self.held is not None:
            held, self.held = self.held, None
            self._send_down(*held)

    # -- faults --------------------------------------------------------------------------------

    def hold(self) -> None:
        self.flowing.clear()

    def release(self) -> None:
        self.flowing.set()

    def reset(self) -> None:
        """Close both sockets with SO_LINGER 0: both ends see a connection reset."""
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.flowing.set()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.close()


class EslProxy:
    """A TCP proxy on 127.0.0.1 in front of one simulator (in this process, gevent)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.pairs: list[_Pair] = []
        self.accepted: list[float] = []
        self.mangle: Mangle | None = None
        self.observer: Callable[[bytes], None] | None = None
        """Called with the body of every event on its way to the worker."""
        self._server = StreamServer((HOST, 0), self._handle)
        self.port = 0

    def start(self) -> EslProxy:
        self._server.start()
        self.port = self._server.server_port
        return self

    def _handle(self, client: socket.socket, _addr: Any) -> None:
        self.accepted.append(time.time())
        try:
            upstream = socket.create_connection((HOST, self.target_port), timeout=3)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        client.settimeout(None)
        pair = _Pair(self, client, upstream)
        self.pairs.append(pair)
        try:
            pair.run()
        finally:
            pair.close()

    @property
    def live_pairs(self) -> list[_Pair]:
        return [p for p in self.pairs if not p.closed]

    def reset(self) -> int:
        """Reset every current connection; returns how many."""
        pairs = self.live_pairs
        for pair in pairs:
            pair.reset()
        return len(pairs)

    def blackhole(self) -> int:
        """Stop forwarding both ways on every current connection (sockets stay open)."""
        pairs = self.live_pairs
        for pair in pairs:
            pair.hold()
        return len(pairs)

    def restore(self) -> None:
        for pair in self.pairs:
            pair.release()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._server.stop(timeout=0)
        for pair in self.pairs:
            pair.close()


# ---- load ---------------------------------------------------------------------------------


@dataclass
class Accepted:
    id: str
    tag: str
    body: dict[str, Any]
    api_port: int
    at: float
    record: dict[str, Any]


class LoadGen:
    """POSTs callbacks over HTTP, retrying connection errors, 503 and 409 (the key still
    held by an attempt whose API process died) on the next API process.

    A retry after a connection error is the idempotent-client pattern: the first attempt may
    have been stored without its 202 reaching us, so every attempt carries the same
    ``Idempotency-Key``. The tag is also put in ``leg_A.caller_id_name``, so duplicates and
    records nobody got a 202 for would still be counted.
    """

    def __init__(self, ports: Callable[[], list[int]] | list[int], scenario: str) -> None:
        self._ports = ports if callable(ports) else (lambda p=list(ports): p)
        self.scenario = slug(scenario)[:24]
        self.accepted: dict[str, Accepted] = {}
        self.by_tag: dict[str, Accepted] = {}
        self.conn_errors = 0
        self.unavailable = 0
        self.key_busy = 0
        self.retried_tags: set[str] = set()
        self.rejected: list[tuple[str, int, Any]] = []
        self.gave_up: list[str] = []
        self._n = itertools.count(1)
        self._rr = itertools.count()

    def http(self, port: int, method: str, path: str, payload: Any = None,
             timeout_s: float = 6.0, extra: dict[str, str] | None = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
        try:
            data = json.dumps(payload).encode() if payload is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else {}
            headers.update(extra or {})
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode(errors="replace")

    def post(self, req: dict[str, Any], deadline_s: float = 25.0) -> Accepted | None:
        tag = f"{self.scenario}-{next(self._n)}"[:40]
        req = copy.deepcopy(req)
        req["leg_A"]["caller_id_name"] = tag
        start = next(self._rr)
        deadline = time.monotonic() + deadline_s
        for attempt in itertools.count():
            if time.monotonic() > deadline:
                self.gave_up.append(tag)
                return None
            ports = self._ports()
            port = ports[(start + attempt) % len(ports)]
            if attempt:
                self.retried_tags.add(tag)
            try:
                # the idempotent client: every attempt of one request carries the same key
                code, reply = self.http(port, "POST", BASE, req,
                                        extra={"Idempotency-Key": tag})
            except (OSError, http.client.HTTPException):
                self.conn_errors += 1
                gevent.sleep(min(0.05 * (attempt + 1), 0.5))
                continue
            if code == 202:
                acc = Accepted(reply["id"], tag, req, port, time.time(), reply)
                self.accepted[acc.id] = acc
                self.by_tag[tag] = acc
                return acc
            if code == 503:
                self.unavailable += 1
                gevent.sleep(min(0.1 * (attempt + 1), 0.5))
                continue
            if code == 409:  # the key is held by an attempt an API died with: Retry-After
                self.key_busy += 1
                gevent.sleep(1.0)
                continue
            self.rejected.append((tag, code, reply))
            return None
        return None  # pragma: no cover - the loop only ends by returning

    def burst(self, reqs: Iterable[dict[str, Any]], concurrency: int = 10) -> list[Accepted | None]:
        pool = gevent.pool.Pool(concurrency)
        return list(pool.imap(self.post, list(reqs)))

    def stream(self, make: Callable[[int], dict[str, Any]], count: int,
               interval_s: float) -> gevent.Greenlet:
        """Post ``count`` requests, one every ``interval_s`` (each in its own greenlet)."""

        def run() -> None:
            posts = []
            for i in range(count):
                posts.append(gevent.spawn(self.post, make(i)))
                gevent.sleep(interval_s)
            gevent.joinall(posts)

        return gevent.spawn(run)

    def cancel(self, callback_id: str) -> int:
        for port in self._ports():
            with contextlib.suppress(OSError, http.client.HTTPException):
                code, _ = self.http(port, "DELETE", f"{BASE}/{callback_id}")
                return code
        return 0


# ---- records ------------------------------------------------------------------------------


def records(r: redis.Redis, ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    ids = list(ids)
    if not ids:
        return {}
    raws = r.mget([f"{PREFIX}:callback:{i}" for i in ids])
    return {i: (json.loads(raw) if raw else None) for i, raw in zip(ids, raws, strict=True)}


def all_records(r: redis.Redis) -> dict[str, dict[str, Any]]:
    keys = list(r.scan_iter(match=f"{PREFIX}:callback:*", count=1000))
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(keys), 500):
        chunk = keys[i:i + 500]
        for raw in r.mget(chunk):
            if raw:
                rec = json.loads(raw)
                out[rec["id"]] = rec
    return out


def wait_records(r: redis.Redis, ids: Iterable[str],
                 pred: Callable[[dict[str, Any]], bool], timeout_s: float, what: str) -> None:
    """Wait until every record satisfies ``pred`` (AssertionError with the laggards)."""
    ids = list(ids)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            recs = records(r, ids)
        except redis.RedisError:
            recs = {}
        bad = [i for i in ids if not (recs.get(i) and pred(recs[i]))]
        if not bad:
            return
        if time.monotonic() > deadline:
            detail = {i: summary(recs.get(i)) for i in bad[:5]}
            raise AssertionError(f"{len(bad)} callbacks not {what} after {timeout_s}s: {detail}")
        gevent.sleep(0.1)


def summary(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "<no record>"
    legs = " ".join(f"{n}={leg['state']}" for n, leg in rec["legs"].items())
    return f"{rec['state']}/{rec.get('outcome')} {legs} worker={rec.get('worker')}"


# ---- the invariant checker ----------------------------------------------------------------

REPORT_HEADER = ("scenario | submitted | completed | failed(outcomes) | cancelled | lost | "
                 "dialled twice | orphans")
ROWS: list[str] = []
"""Every report row of this session (written to var/faults-report.txt at the end)."""


@dataclass
class Report:
    scenario: str
    submitted: int = 0
    completed: int = 0
    failed: collections.Counter[str] = field(default_factory=collections.Counter)
    cancelled: int = 0
    lost: dict[str, str] = field(default_factory=dict)
    dialled_twice: dict[str, list[str]] = field(default_factory=dict)
    orphans: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    ok_extra: list[str] = field(default_factory=list)

    def row(self) -> str:
        failed = ", ".join(f"{k or '?'}:{v}" for k, v in sorted(self.failed.items()))
        failed_txt = f"{sum(self.failed.values())}" + (f" ({failed})" if failed else "")
        row = (f"{self.scenario} | {self.submitted} | {self.completed} | {failed_txt} | "
               f"{self.cancelled} | {len(self.lost)} | {len(self.dialled_twice)} | "
               f"{len(self.orphans)}")
        if self.notes:
            row += "   [" + "; ".join(self.notes) + "]"
        return row

    def problems(self) -> list[str]:
        out = []
        if self.lost:
            out.append(f"lost {len(self.lost)}: " + json.dumps(dict(list(self.lost.items())[:8])))
        if self.dialled_twice:
            out.append(f"dialled twice {len(self.dialled_twice)}: "
                       + json.dumps(dict(list(self.dialled_twice.items())[:8])))
        if self.orphans:
            out.append(f"orphan channels {len(self.orphans)}: {self.orphans[:8]}")
        return out + self.ok_extra

    def assert_ok(self) -> None:
        problems = self.problems()
        assert not problems, f"{self.row()}\n" + "\n".join(problems)


def check(cluster: Cluster, load: LoadGen | None, *, settle_s: float = 30.0,
          orphan_grace_s: float = 6.0, extra_ids: Iterable[str] = (),
          notes: Iterable[str] = ()) -> Report:
    """Settle, then count: every 202'd callback final? any leg dialled twice? orphans?

    The row is recorded (``ROWS``) before anything is asserted, so failures are reported.
    """
    report = Report(cluster.scenario, notes=list(notes))
    accepted = dict(load.accepted) if load is not None else {}
    ids = list(dict.fromkeys([*accepted, *extra_ids]))
    report.submitted = len(ids)
    try:
        r = cluster.redis.client() if cluster.redis is not None else None
        # 1. every submitted callback final (or settle_s passed)
        deadline = time.monotonic() + settle_s
        recs: dict[str, dict[str, Any] | None] = {}
        while r is not None:
            try:
                recs = records(r, ids)
            except redis.RedisError:
                recs = {}
            if all(rec and rec["state"] in FINAL for rec in recs.values()) and recs:
                break
            if not ids or time.monotonic() > deadline:
                break
            gevent.sleep(0.25)
        # 2. their channels gone (or orphan_grace_s passed)
        deadline = time.monotonic() + orphan_grace_s
        while True:
            tagged = cluster.tagged_channels()
            if not tagged or time.monotonic() > deadline:
                break
            gevent.sleep(0.25)
        everything = all_records(r) if r is not None else {}
    except (redis.RedisError, ESLError, OSError) as exc:
        report.ok_extra.append(f"checker could not read state: {exc!r}")
        everything, tagged = {}, []
        recs = {}
    report.records = everything
    for cid in ids:
        rec = everything.get(cid) or recs.get(cid)
        if rec is None:
            report.lost[cid] = "<no record>"
            continue
        state = rec["state"]
        if state == "completed":
            report.completed += 1
        elif state == "failed":
            report.failed[rec.get("outcome") or "?"] += 1
        elif state == "cancelled":
            report.cancelled += 1
        else:
            report.lost[cid] = summary(rec)
    # 3. dialled twice: one origination_uuid in more than one originate, over every simulator
    #    (a real FreeSWITCH node also keys the channels it created by callback and leg)
    seen: dict[str, list[str]] = collections.defaultdict(list)
    for sim in cluster.sims:
        for o in sim.originates():
            if o["uuid"] and o["fsctl"]:
                seen[o.get("key") or o["uuid"]].append(
                    f"{o['sim']}#{o['start']}/conn{o['conn']}@{o['at']:.2f}")
    report.dialled_twice = {u: where for u, where in seen.items() if len(where) > 1}
    # 4. orphans: fsctl-tagged channels still up anywhere
    report.orphans = [f"{row['uuid']} ({row['callback_id']}, {row.get('callstate')})"
                      for row in tagged]
    # honest counts of what client retries did
    if load is not None:
        tags = collections.Counter(
            (rec["legs"]["A"].get("caller_id_name") or "") for rec in everything.values())
        dups = {t: n for t, n in tags.items() if t.startswith(load.scenario) and n > 1}
        unacked = [rec for rec in everything.values()
                   if (rec["legs"]["A"].get("caller_id_name") or "").startswith(load.scenario)
                   and rec["id"] not in accepted]
        if load.conn_errors or load.unavailable or load.key_busy:
            report.notes.append(f"client retries: {load.conn_errors} conn errors, "
                                f"{load.unavailable}x503, {load.key_busy}x409")
        if dups:
            report.notes.append(f"duplicate callbacks from retried POSTs: {sum(dups.values()) - len(dups)}")
        if unacked:
            unfinished = [r_["id"] for r_ in unacked if r_["state"] not in FINAL]
            report.notes.append(f"created without a 202 reaching the client: {len(unacked)}"
                                + (f" ({len(unfinished)} not final!)" if unfinished else ""))
            for cid in unfinished:
                report.lost.setdefault(cid, "unacknowledged and " + summary(everything[cid]))
        if load.gave_up:
            report.notes.append(f"requests given up: {len(load.gave_up)}")
        if load.rejected:
            report.notes.append(f"rejected: {collections.Counter(c for _, c, _ in load.rejected)}")
    ROWS.append(report.row())
    print("\n" + REPORT_HEADER + "\n" + report.row())
    return report


def write_report(extra: Iterable[str] = (), path: Path = REPORT_PATH) -> str:
    text = "\n".join([REPORT_HEADER, *ROWS, *extra]) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text


# ---- a cluster ------------------------------------------------------------------------------


class Cluster:
    """Everything one scenario runs; ``close()`` kills all of it (also after a failure)."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self.dir = LOG_ROOT / slug(scenario)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.data = Path(tempfile.mkdtemp(prefix="fsctl-faults-"))
        self.password = "sim-" + secrets.token_urlsafe(12)
        self.routes_file = self.dir / "routes.json"
        self.routes_file.write_text(json.dumps(ROUTES, indent=1))
        self.numbers_file = self.dir / "numbers.json"
        self.numbers_file.write_text(json.dumps(NUMBERS, indent=1))
        self.redis: RedisProc | None = None
        self.sims: list[SimProc] = []
        self.workers: list[WorkerProc] = []
        self.apis: list[ApiProc] = []
        self.proxies: list[EslProxy] = []
        self.procs: list[Proc] = []
        self.t0 = time.time()

    def log(self, msg: str) -> None:
        line = f"{time.time() - self.t0:7.2f}s {msg}"
        print(line)
        with open(self.dir / "scenario.log", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    # -- parts ---------------------------------------------------------------------------------

    def start_redis(self) -> RedisProc:
        self.redis = RedisProc(self.data / "redis", self.dir / "redis.log").start()
        return self.redis

    def add_sim(self, name: str | None = None, sessions_per_second: int | None = None) -> SimProc:
        sim = SimProc(name or f"sim{len(self.sims) + 1}", self.dir, self.password,
                      self.numbers_file, sessions_per_second=sessions_per_second)
        self.sims.append(sim)
        self.procs.append(sim)
        return sim.start()

    def add_proxy(self, sim: SimProc) -> EslProxy:
        proxy = EslProxy(sim.port).start()
        self.proxies.append(proxy)
        return proxy

    def add_worker(self, name: str, sim: SimProc, proxy: EslProxy | None = None,
                   start: bool = True) -> WorkerProc:
        assert self.redis is not None
        worker = WorkerProc(name, self.dir, self.redis.url, sim, self.routes_file,
                            esl_port=proxy.port if proxy else None)
        self.workers.append(worker)
        self.procs.append(worker)
        return worker.start() if start else worker

    def add_api(self, name: str | None = None) -> ApiProc:
        assert self.redis is not None
        api = ApiProc(name or f"api{len(self.apis) + 1}", self.dir, self.redis.url,
                      self.routes_file)
        self.apis.append(api)
        self.procs.append(api)
        return api.start()

    def start_all(self, sims: int = 1, workers: int = 1, apis: int = 1) -> None:
        """Redis, then simulators, APIs and one worker per simulator, started in parallel."""
        self.start_redis()
        for _ in range(sims):
            self.add_sim()
        jobs = [gevent.spawn(self.add_api) for _ in range(apis)]
        jobs += [gevent.spawn(self.add_worker, f"w{i + 1}", self.sims[i % sims])
                 for i in range(workers)]
        gevent.joinall(jobs, raise_error=True)

    def api_ports(self) -> list[int]:
        """Ports of the API processes believed alive (all of them if none is)."""
        alive = [a.port for a in self.apis if a.alive]
        return alive or [a.port for a in self.apis]

    def load(self) -> LoadGen:
        return LoadGen(self.api_ports, self.scenario)

    def tagged_channels(self) -> list[dict[str, str]]:
        out = []
        for sim in self.sims:
            if sim.alive:
                out += [{**row, "sim": sim.name} for row in sim.tagged_channels()]
        return out

    def check(self, load: LoadGen | None, **kw: Any) -> Report:
        return check(self, load, **kw)

    # -- teardown ------------------------------------------------------------------------------

    def close(self) -> None:
        for proc in [*self.workers, *self.apis]:
            proc.kill9()
        for proxy in self.proxies:
            proxy.stop()
        for sim in self.sims:
            sim.kill9()
        if self.redis is not None:
            self.redis.kill9()
        shutil.rmtree(self.data, ignore_errors=True)


def kill_leftovers() -> None:
    """Last resort at the end of the session: nothing started here may outlive it."""
    for proc in _ALL_PROCS:
        if proc.alive:
            proc.kill9()
    for server in _ALL_REDIS:
        if server.alive:
            server.kill9()
