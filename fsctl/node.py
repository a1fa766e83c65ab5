"""The link to one FreeSWITCH node: two ESL connections kept alive.

Events arrive on one connection, commands go over the other (FREESWITCH.md §7).
A dropped connection is noticed at once (disconnect notice, EOF); a silent one by a
periodic ``api status`` on both with a short timeout. On loss: both are closed,
then rebuilt with capped exponential backoff and jitter, subscriptions and filters
set once on the fresh connection, and the owner is told (``on_up``) with the node's
``core_uuid`` so it can reconcile. Every ping's ``api status`` reply on the command
connection goes to ``on_status``: it carries the node's session limits and load.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import gevent
from gevent.event import Event as GEvent

from .errors import ESLError, ESLNotSent
from .esl import ESLClient
from .events import EVENT_FILTERS, SUBSCRIBED_EVENTS
from .settings import Settings
from .wire import Event

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.1
"""First wait before reconnecting."""
BACKOFF_MAX_S = 1.0
"""Longest wait between reconnect attempts (so dispatching resumes within ~1 s)."""
PING_MISSES = 2
"""Unanswered pings in a row that declare a connection dead."""


class NodeLink:
    """Keeps an event and a command connection to one FreeSWITCH up."""

    def __init__(self, settings: Settings, on_event: Callable[[Event], None],
                 on_up: Callable[[str], None], on_down: Callable[[str], None],
                 on_status: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.node = f"{settings.esl_host}:{settings.esl_port}"
        self._on_event, self._on_up, self._on_down = on_event, on_up, on_down
        self._on_status = on_status or (lambda _text: None)
        self.events: ESLClient | None = None
        self.cmds: ESLClient | None = None
        self.core_uuid: str | None = None
        self.up = GEvent()
        self._lost = GEvent()
        self._stopping = GEvent()
        self._runner: gevent.Greenlet | None = None
        self.connects = 0

    # -- public ---------------------------------------------------------------------

    def start(self) -> None:
        self.settings.check_esl_password()
        self._runner = gevent.spawn(self._run)

    def stop(self) -> None:
        self._stopping.set()
        self._lost.set()
        if self._runner is not None:
            self._runner.join(timeout=3)
        self._close()

    def api(self, command: str) -> str:
        return self._commands().api(command)

    def api_many(self, commands: list[str]) -> list[str]:
        """Several ``api`` commands in one write; their replies in order."""
        return self._commands().api_many(commands)

    def bgapi_many(self, jobs: list[tuple[str, str]]) -> list[str | ESLError]:
        """Several ``bgapi`` commands in one write: each one's reply, or its error."""
        return self._commands().bgapi_many(jobs)

    def _commands(self) -> ESLClient:
        """The command connection, or ESLNotSent while the node is down."""
        conn = self.cmds
        if conn is None or not self.up.is_set():
            raise ESLNotSent(f"FreeSWITCH {self.node} is not connected")
        return conn

    # -- the loop -------------------------------------------------------------------

    def _client(self) -> ESLClient:
        s = self.settings
        return ESLClient(s.esl_host, s.esl_port, s.esl_password, user=s.esl_user,
                         connect_timeout_s=s.esl_connect_timeout_s,
                         command_timeout_s=s.esl_command_timeout_s)

    def _connect(self) -> str:
        events, cmds = self._client(), self._client()
        self.events, self.cmds = events, cmds
        events.on_event(self._on_event)
        generation = self._generation
        for conn in (events, cmds):
            conn.on_disconnect(lambda reason, g=generation: self._disconnected(g, reason))
            conn.connect()
        for header, value in EVENT_FILTERS:
            events.add_filter(header, value)
        events.subscribe(list(SUBSCRIBED_EVENTS))
        self._on_status(cmds.api("status"))
        return cmds.api("global_getvar core_uuid").strip()

    def _run(self) -> None:
        backoff = BACKOFF_FIRST_S
        while not self._stopping.is_set():
            self._generation += 1
            self._lost.clear()
            self._lost_reason = None
            try:
                core_uuid = self._connect()
            except ESLError as exc:
                log.warning("FreeSWITCH %s: connect failed: %s", self.node, exc)
                self._close()
                self._stopping.wait(backoff * random.uniform(0.5, 1.0))
                backoff = min(BACKOFF_MAX_S, backoff * 2)
                continue
            backoff = BACKOFF_FIRST_S
            self.connects += 1
            previous, self.core_uuid = self.core_uuid, core_uuid
            log.info("FreeSWITCH %s: connected (core %s%s)", self.node, core_uuid,
                     "" if previous in (None, core_uuid) else f", was {previous}: restarted")
            self.up.set()
            try:
                self._on_up(core_uuid)
            except Exception:
                log.exception("FreeSWITCH %s: reconcile failed", self.node)
            reason = self._watch()
            self.up.clear()
            self._close()
            if self._stopping.is_set():
                return
            log.error("FreeSWITCH %s: connection lost: %s; reconnecting", self.node, reason)
            self._on_down(reason)

    def _watch(self) -> str:
        """Block until a connection is lost; returns why."""
        interval = self.settings.esl_ping_s
        misses = 0
        while not self._lost.wait(interval):
            conns = [c for c in (self.events, self.cmds) if c is not None]
            if not all(c.connected for c in conns):
                return "connection closed"
            pings = [gevent.spawn(c.status, interval) for c in conns]
            gevent.joinall(pings, timeout=interval + 0.5)
            if all(p.value is not None for p in pings):
                misses = 0
                self._on_status(pings[-1].value)  # the command connection's
                continue
            misses += 1
            if misses >= PING_MISSES:
                return f"no answer to {misses} pings of {interval}s"
        return self._lost_reason or "stopped"

    _lost_reason: str | None = None
    _generation = 0

    def _disconnected(self, generation: int, reason: str) -> None:
        if generation == self._generation:  # not a late notice of an old connection
            self._lost_reason = reason
            self._lost.set()

    def _close(self) -> None:
        for conn in (self.events, self.cmds):
            if conn is not None:
                conn.close(timeout_s=0.5)
        self.events = self.cmds = None
