"""What every part of ``make bench`` shares: CPU and memory of a process read from /proc,
percentiles, and an open-loop HTTP load generator.

Open loop: request *i* is due at ``t0 + i / rate`` whatever happened to earlier ones, and its
latency counts from that due time (so a stalled server shows up as latency, not as a lower
offered rate: no coordinated omission). Needs gevent's monkey patching in the caller.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.queue

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
HTTP_TIMEOUT_S = 30.0
"""Longest wait for one HTTP answer of the load generator."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size of a process now, in bytes."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class CpuMeter:
    """CPU seconds used by named processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._t0: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> CpuMeter:
        self._t0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def stop(self) -> dict[str, float]:
        self.used = {name: cpu_seconds(pid) - self._t0[name] for name, pid in self.pids.items()}
        return self.used


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100, nearest rank) of values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary_ms(values_s: list[float]) -> dict[str, float | int | None]:
    """p50 / p99 / max in milliseconds and the count, of latencies given in seconds."""
    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 2)
    return {"n": len(values_s), "p50_ms": ms(percentile(values_s, 50)),
            "p99_ms": ms(percentile(values_s, 99)), "max_ms": ms(max(values_s, default=None))}


@dataclass
class LoadResult:
    """What an open-loop run posted and what came back."""

    offered_per_s: float
    sent: int = 0
    codes: dict[int, int] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    accepted_at: dict[str, float] = field(default_factory=dict)
    """callback id → wall-clock time (time.time()) its 202 arrived."""
    latencies_s: list[float] = field(default_factory=list)
    """Per request: answer time − due time."""
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"offered_per_s": self.offered_per_s, "sent": self.sent,
                "accepted": len(self.ids), "codes": {str(k): v for k, v in self.codes.items()},
                "errors": self.errors[:5], "wall_s": round(self.wall_s, 2),
                "api_latency": summary_ms(self.latencies_s)}


class PostConnection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON: the load generator's client.

    Hand-rolled on a socket because http.client parses every response's headers with the
    email package: one request after another against a bare pywsgi server, this takes 0.46
    ms of CPU a request where http.client takes 0.76, CPU taken from the two cores fsctl is
    measured on. The API's responses always carry Content-Length (Flask sets it).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self._buf = b""

    def post(self, path: str, data: bytes) -> tuple[int, bytes]:
        """Send one request and read its response: (status, body). Raises OSError or
        ValueError (a malformed response), after which the connection is closed."""
        try:
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port),
                                                     timeout=HTTP_TIMEOUT_S)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._buf = b""
            self.sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                              b"application/json\r\nContent-Length: %d\r\n\r\n%s"
                              % (path.encode(), len(data), data))
            while (end := self._buf.find(b"\r\n\r\n")) < 0:
                self._buf += self._recv()
            head, self._buf = self._buf[:end].decode("latin-1"), self._buf[end + 4:]
            lines = head.split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            fields = {k.strip().lower(): v.strip()
                      for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(fields["content-length"])
            while len(self._buf) < length:
                self._buf += self._recv()
            body, self._buf = self._buf[:length], self._buf[length:]
            if fields.get("connection", "").lower() == "close":
                self.close()
            return status, body
        except (OSError, ValueError, KeyError, IndexError):
            self.close()
            raise

    def _recv(self) -> bytes:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        return chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def open_loop(port: int, rate: float, count: int, body: Callable[[int], dict[str, Any]], *,
              path: str = "/voice/call/callback", connections: int = 64,
              tick: Callable[[LoadResult], None] | None = None) -> LoadResult:
    """POST ``count`` bodies at ``rate`` per second over keep-alive connections.

    A request whose connection is busy waits for one (that wait counts in its latency);
    ``tick`` is called about every 0.25 s with the result so far (for a progress bar).
    """
    result = LoadResult(offered_per_s=rate)
    pool: gevent.queue.Queue[PostConnection] = gevent.queue.Queue()
    for _ in range(connections):
        pool.put(PostConnection(port))

    def post(i: int, due: float) -> None:
        conn = pool.get()
        try:
            status, payload = conn.post(path, json.dumps(body(i)).encode())
            done = time.monotonic()
            result.latencies_s.append(done - due)
            result.codes[status] = result.codes.get(status, 0) + 1
            if status in (200, 201, 202):
                cid = json.loads(payload)["id"]
                result.ids.append(cid)
                result.accepted_at[cid] = time.time()
        except (OSError, ValueError, KeyError, IndexError) as exc:
            result.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            pool.put(conn)

    t0 = time.monotonic()
    last_tick = t0
    jobs = []
    for i in range(count):
        due = t0 + i / rate
        now = time.monotonic()
        if due > now:
            gevent.sleep(due - now)
        jobs.append(gevent.spawn(post, i, due))
        result.sent += 1
        if tick is not None and time.monotonic() - last_tick > 0.25:
            last_tick = time.monotonic()
            tick(result)
    gevent.joinall(jobs, timeout=HTTP_TIMEOUT_S + 5)
    result.wall_s = time.monotonic() - t0
    while not pool.empty():
        pool.get().close()
    return result
