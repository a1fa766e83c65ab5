"""The simulator: an ESL server on 127.0.0.1 that behaves like FreeSWITCH."""

from __future__ import annotations

import itertools
import logging
import socket as stdsocket
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self

import gevent
from gevent.server import StreamServer

from ..errors import ConfigError
from .commands import API_COMMANDS, Deferred, heartbeat_pairs
from .config import SimConfig
from .connection import DISCONNECT_NOTICE, Connection
from .events import EventFactory, OutEvent
from .limits import SessionLimits
from .model import CallModel

if TYPE_CHECKING:
    import socket

    from .channel import Channel
    from .trace import Trace

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
RATE_TICK_LATE_S = 0.001
"""The rate timer wakes this long after a window's end, so that the window has ended."""


@dataclass(frozen=True, slots=True)
class ReceivedCommand:
    """One command as the simulator received it (test hook ``Simulator.commands``)."""

    conn_id: int
    text: str
    headers: dict[str, str] = field(default_factory=dict)
    at: float = 0.0


class Simulator:
    """A FreeSWITCH stand-in. ``start()`` returns once listening; ``port`` is the bound port.

    Test hooks: ``commands`` (every command received), ``channels`` (live legs by uuid),
    ``limits`` (sessions-per-second / max-sessions counters, limits.py),
    ``drop_connections()``, ``blackhole`` (keep sockets, answer nothing, send nothing),
    ``restart()`` (a crash: channels vanish silently, new Core-UUID, counters reset).
    ``trace`` (trace.py): when given, timing records of every channel are appended to it.
    ``keep_commands`` False leaves ``commands`` empty (``fsctl simulate``: nobody reads it,
    and it would keep every command of a long run in memory).
    """

    def __init__(self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0,
                 password: str | None = None, trace: Trace | None = None,
                 keep_commands: bool = True) -> None:
        if host not in LOOPBACK_HOSTS:
            raise ConfigError(f"the simulator listens on 127.0.0.1 only, not {host!r}")
        if not password:
            raise ConfigError("the simulator needs a password")
        self.config = config or SimConfig()
        self.host = "127.0.0.1"
        self.password = password
        self._requested_port = port
        self.port = 0
        self.blackhole = False
        self.internal_errors = 0
        """Commands whose handling raised (a simulator defect): logged, and the connection
        that sent one is dropped."""
        self.trace = trace
        self.keep_commands = keep_commands
        self.commands: list[ReceivedCommand] = []
        self.global_vars: dict[str, str] = {}
        self.dtmf: list[tuple[str, str, float]] = []
        """(channel uuid, digits, when) of every ``uuid_send_dtmf`` a live channel took."""
        self.core_uuid = str(uuidlib.uuid4())
        self.factory = EventFactory(self.core_uuid, self.config.hostname)
        self.model = CallModel(self)
        self.limits = self._new_limits()
        self.started_at = time.time()
        self._connections: dict[int, Connection] = {}
        self._listeners: list[Connection] = []
        self._wanted_all = False
        self._wanted: set[str] = set()
        self._ids = itertools.count(1)
        self._server: StreamServer | None = None
        self._heartbeat: gevent.Greenlet | None = None
        self._rate_timer: gevent.Greenlet | None = None
        self._trace_timer: gevent.Greenlet | None = None

    # ---- life cycle ----------------------------------------------------------------------

    @property
    def channels(self) -> dict[str, Channel]:
        return self.model.channels

    def start(self) -> Simulator:
        self._server = StreamServer((self.host, self._requested_port), self._handle)
        self._server.start()
        self.port = self._server.server_port
        self._heartbeat = gevent.spawn(self._heartbeat_loop)
        self._rate_timer = gevent.spawn(self._rate_loop)
        if self.trace is not None:
            self._trace_timer = gevent.spawn(self._trace_loop, self.trace)
        log.info("simulator listening on %s:%d (Core-UUID %s)", self.host, self.port,
                 self.core_uuid)
        return self

    def stop(self) -> None:
        for timer in (self._heartbeat, self._rate_timer, self._trace_timer):
            if timer is not None:
                timer.kill(block=False)
        self._heartbeat = self._rate_timer = self._trace_timer = None
        if self._server is not None:
            self._server.stop(timeout=0)
            self._server = None
        for conn in list(self._connections.values()):
            conn.close(DISCONNECT_NOTICE)
        self.model.drop_all()
        deadline = time.monotonic() + 1.0
        while self._connections and time.monotonic() < deadline:
            gevent.sleep(0.01)
        for conn in list(self._connections.values()):
            conn.abort()
        if self.trace is not None:
            self.trace.flush()
        log.info("simulator on port %d stopped", self.port)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def restart(self) -> None:
        """Like a FreeSWITCH crash and restart: no events, connections cut, new Core-UUID."""
        self.model.drop_all()
        self.drop_connections()
        self.core_uuid = str(uuidlib.uuid4())
        self.factory = EventFactory(self.core_uuid, self.config.hostname)
        self.started_at = time.time()
        self.limits = self._new_limits()

    def _new_limits(self) -> SessionLimits:
        return SessionLimits(self.config.sessions_per_second, self.config.max_sessions)

    def drop_connections(self) -> None:
        for conn in list(self._connections.values()):
            conn.abort()
        self._connections.clear()
        self.subscriptions_changed()

    def uptime_text(self) -> str:
        up = time.time() - self.started_at
        secs = int(up)
        ms, us = int((up - secs) * 1000), int((up * 1_000_000) % 1000)
        days, rem = divmod(secs, 86400)
        hours, rem = divmod(rem, 3600)
        minutes, seconds = divmod(rem, 60)
        return (f"0 years, {days} days, {hours} hours, {minutes} minutes, {seconds} seconds, "
                f"{ms} milliseconds, {us} microseconds")

    # ---- connections ---------------------------------------------------------------------

    def _handle(self, sock: socket.socket, address: tuple[str, int]) -> None:
        # as mod_event_socket's listener_run(): SWITCH_SO_TCP_NODELAY on every connection, so
        # an event is not held back by Nagle until the client's (delayed) ACK
        sock.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_NODELAY, 1)
        conn = Connection(self, sock, next(self._ids))
        self._connections[conn.id] = conn
        log.debug("simulator: connection %d from %s", conn.id, address)
        try:
            conn.run()
        finally:
            self.forget(conn)

    def forget(self, conn: Connection) -> None:
        if self._connections.pop(conn.id, None) is not None or conn in self._listeners:
            self.subscriptions_changed()

    def record(self, conn_id: int, text: str, headers: dict[str, str]) -> None:
        if self.keep_commands:
            self.commands.append(ReceivedCommand(conn_id, text, dict(headers), time.time()))

    # ---- events --------------------------------------------------------------------------

    def subscriptions_changed(self) -> None:
        listeners = [c for c in self._connections.values()
                     if not c.closed and (c.all_events or c.event_names)]
        self._listeners = listeners
        self._wanted_all = any(c.all_events for c in listeners)
        self._wanted = set().union(*(c.event_names for c in listeners)) if listeners else set()

    def wants(self, name: str) -> bool:
        """True when some connection is subscribed to ``name`` (build the event only then)."""
        if self.blackhole:
            return False
        return self._wanted_all or name in self._wanted

    def publish(self, ev: OutEvent) -> None:
        if self.blackhole:
            return
        for conn in self._listeners:
            if conn.wants(ev):
                conn.push_event(ev)

    def _heartbeat_loop(self) -> None:
        while True:
            gevent.sleep(self.config.heartbeat_s)
            seq = self.factory.next_seq()
            if self.wants("HEARTBEAT"):
                self.publish(self.factory.simple("HEARTBEAT", heartbeat_pairs(self), seq=seq))

    def _rate_loop(self) -> None:
        """FreeSWITCH's timer thread: the session-rate window closes every second, on time."""
        while True:
            gevent.sleep(self.limits.seconds_to_next_window() + RATE_TICK_LATE_S)
            self.limits.advance(len(self.model.channels))

    @staticmethod
    def _trace_loop(trace: Trace) -> None:
        """Write the trace's buffered lines every so often (and so while the load runs)."""
        while True:
            gevent.sleep(trace.flush_interval_s)
            trace.flush()

    # ---- api -----------------------------------------------------------------------------

    def execute_api(self, command: str, arg: str) -> tuple[str, Deferred | None]:
        handler = API_COMMANDS.get(command)
        if handler is None:
            return f"-ERR {command} Command not found!\n", None
        try:
            result = handler(self, arg)
        except Exception:
            log.exception("simulator: api %s %s failed", command, arg)
            return f"-ERR {command} failed in the simulator\n", None
        if isinstance(result, tuple):
            return result
        return result, None
