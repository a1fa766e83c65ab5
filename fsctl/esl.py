"""The inbound event-socket client: greenswitch's InboundESL with its defects removed.

:class:`_Connection` subclasses ``greenswitch.InboundESL`` (keeping its FIFO of waiting
commands, auth event, event queue and handler registry) and replaces its reader,
dispatcher, writer, connect and stop: bytes are ``recv``'d into
:class:`fsctl.wire.FrameReader`; replies go to the oldest waiting command (a timed-out
command keeps its slot, so its late reply is dropped); writes are ``sendall`` under one
lock, built by :func:`fsctl.wire.format_command`; every wait is bounded; EOF, socket or
parse errors, disconnect notices and rude rejections end the connection and fail every
waiter at once; events reach the handlers through one dispatcher greenlet.

An :class:`ESLClient` is single-use (one TCP connection): reconnecting means building a
new one; a dead one has no greenlet left and its socket closed.
"""

from __future__ import annotations

import logging
import re
import socket as _stdsocket
import time
from collections import deque
from collections.abc import Callable

import gevent
import gevent.event
import gevent.lock
import gevent.socket
import greenswitch

from . import wire
from .errors import (
    AuthFailed,
    ESLDisconnected,
    ESLError,
    ESLNotSent,
    ESLTimeout,
    InvalidValue,
    ProtocolError,
)

log = logging.getLogger(__name__)

EventHandler = Callable[[wire.Event], None]
DisconnectHandler = Callable[[str], None]

_STOP = object()  # queued after the last event of a connection
_RECV_BYTES = 64 * 1024
_YIELD_EVERY_S = 0.005  # the reader and the dispatcher never hold the CPU longer than this
_YIELD_S = 1e-6  # sleep(>0), not sleep(0): only a full loop turn lets greenlets doing I/O run
_JOB_UUID_RE = re.compile(r"[A-Za-z0-9-]{1,36}")
_EVENT_NAME_RE = re.compile(r"[A-Za-z0-9_:.-]+")
_REPLY_TYPES = ("command/reply", "api/response")


class _Connection(greenswitch.InboundESL):
    """One event-socket connection (greenswitch's InboundESL, reader and writer replaced)."""

    def __init__(self, host: str, port: int, password: str, user: str | None,
                 connect_timeout_s: float) -> None:
        super().__init__(host, port, password, timeout=connect_timeout_s)
        self.user = user
        self.sock: gevent.socket.socket | None = None
        self._commands_sent: deque[gevent.event.AsyncResult] = deque()  # FIFO of waiters
        self._write_lock = gevent.lock.Semaphore()
        self._frames = wire.FrameReader()
        self.lost_reason: str | None = None
        self.established = False
        self.closing = False
        self.event_handlers = {"*": [], "DISCONNECT": []}

    # -- connect / auth -----------------------------------------------------------------

    def connect(self) -> None:
        """TCP connect, wait for ``auth/request``, authenticate; all within ``timeout``."""
        timer = gevent.Timeout(self.timeout)
        timer.start()
        try:
            try:
                self.sock = gevent.socket.create_connection((self.host, self.port))
            except OSError as exc:
                self._lost(f"connect to {self.host}:{self.port} failed: {exc}")
                raise ESLDisconnected(self.lost_reason) from exc
            self.sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            self.connected = True
            self.start_event_handlers()
            self._auth_request_event.wait()
            self.authenticate(self.timeout)
            if self.lost_reason is not None:
                raise ESLDisconnected(self.lost_reason)
            self.established = True
        except gevent.Timeout as exc:
            if exc is not timer:
                self._lost("connect interrupted")
                raise
            self._lost(f"connect timed out after {self.timeout} s")
            raise ESLTimeout(self.lost_reason) from None
        except BaseException:
            self._lost("connect failed")
            raise
        finally:
            timer.close()

    def authenticate(self, timeout_s: float) -> None:
        if self.lost_reason is not None:
            raise ESLDisconnected(self.lost_reason)
        if self.user is not None:
            line = f"userauth {self.user}:{self.password}"
        else:
            line = f"auth {self.password}"
        frame = self.request(wire.format_command(line), timeout_s)
        reply = frame.headers.get("Reply-Text", "")
        if reply != "+OK accepted":
            self._lost(f"authentication refused: {reply}")
            raise AuthFailed(f"FreeSWITCH refused the {'user' if self.user else 'password'}: "
                             f"{reply or frame.content_type}")

    # -- writing ------------------------------------------------------------------------

    def request(self, data: bytes, timeout_s: float) -> wire.Frame:
        """Write one formatted command and wait for its reply frame (bounded)."""
        return self.request_many([data], timeout_s)[0]

    def request_many(self, datas: list[bytes], timeout_s: float) -> list[wire.Frame]:
        """Write formatted commands in one write (FreeSWITCH runs a connection's commands
        in order and answers in order) and wait for every reply, all within ``timeout_s``."""
        results = [gevent.event.AsyncResult() for _ in datas]
        timer = gevent.Timeout(timeout_s)
        timer.start()
        try:
            with self._write_lock:
                if self.lost_reason is not None or self.sock is None:
                    raise ESLNotSent(self.lost_reason or "not connected")
                self._commands_sent.extend(results)
                try:
                    self.sock.sendall(datas[0] if len(datas) == 1 else b"".join(datas))
                except gevent.Timeout:
                    # Part of the command may be on the wire: the stream is unusable.
                    self._lost("write timed out")
                    raise
                except OSError as exc:
                    self._lost(f"write failed: {exc}")
            return [result.get() for result in results]
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            # The slots stay in the FIFO: the late replies will be consumed by them and dropped.
            raise ESLTimeout(f"no reply within {timeout_s} s to {_first_line(datas[0])!r}") from None
        finally:
            timer.close()

    def send(self, data: str) -> wire.Frame:  # greenswitch's API, made safe and bounded
        return self.request(wire.format_command(data), self.timeout)

    # -- reading ------------------------------------------------------------------------

    def receive_events(self) -> None:
        """The reader greenlet: bytes → frames → replies / event queue, until the end."""
        reason: str | None = None
        last_yield = time.perf_counter()
        try:
            while reason is None:
                data = self.sock.recv(_RECV_BYTES)
                if not data:
                    if self.closing:
                        reason = "closed by client"
                    elif self._frames.at_eof():
                        reason = "closed by FreeSWITCH"
                    else:
                        reason = "closed by FreeSWITCH in the middle of a frame"
                    break
                for frame in self._frames.feed(data):
                    reason = self.handle_event(frame)
                    if reason is not None:
                        break
                # recv() does not yield while data is waiting: without this, a flood of
                # events would starve command waiters, the dispatcher and all other I/O.
                if time.perf_counter() - last_yield > _YIELD_EVERY_S:
                    gevent.sleep(_YIELD_S)
                    last_yield = time.perf_counter()
        except ProtocolError as exc:
            log.error("ESL %s:%s sent bytes that are not ESL: %s", self.host, self.port, exc)
            reason = f"protocol error: {exc}"
        except OSError as exc:
            reason = f"socket error: {exc}"
        finally:
            self._lost(reason or "reader stopped")

    def handle_event(self, frame: wire.Frame) -> str | None:
        """Route one frame; returns a reason string when the connection is over."""
        ctype = frame.content_type
        if frame.event is not None:
            self._esl_event_queue.put(frame.event)
        elif ctype in _REPLY_TYPES:
            if self._commands_sent:
                self._commands_sent.popleft().set(frame)
            else:
                log.warning("ESL reply with no command waiting, dropped: %s", frame.headers)
        elif ctype == "auth/request":
            self._auth_request_event.set()
        elif ctype == "text/disconnect-notice":
            if frame.headers.get("Content-Disposition") == "linger":
                return None
            return "closed by client" if self.closing else "disconnect notice: " + _body_text(frame)
        elif ctype == "text/rude-rejection":
            return "rude rejection: " + _body_text(frame)
        else:
            log.debug("ESL frame ignored: %s", ctype)
        return None

    def process_events(self) -> None:
        """The dispatcher greenlet: one event at a time, in arrival order."""
        queue, last_yield = self._esl_event_queue, time.perf_counter()
        while True:
            if queue.qsize() and time.perf_counter() - last_yield > _YIELD_EVERY_S:
                gevent.sleep(_YIELD_S)  # CPU-bound handlers must not starve the reader
                last_yield = time.perf_counter()
            event = queue.get()
            if event is _STOP:
                break
            for handler in self.event_handlers["*"]:
                try:
                    handler(event)
                except Exception:
                    log.exception("ESL event handler %r failed on %s (Unique-ID %s)",
                                  handler, event.name, event.get("Unique-ID"))
        if self.established:
            for handler in self.event_handlers["DISCONNECT"]:
                try:
                    handler(self.lost_reason or "disconnected")
                except Exception:
                    log.exception("ESL disconnect handler %r failed", handler)

    # -- teardown -----------------------------------------------------------------------

    def _lost(self, reason: str) -> None:
        """End the connection (idempotent): close, fail every waiter, stop both greenlets."""
        if self.lost_reason is not None:
            return
        self.lost_reason = reason
        self.connected = False
        self._run = False
        if self.established:
            log.log(logging.INFO if self.closing else logging.WARNING,
                    "ESL %s:%s disconnected: %s", self.host, self.port, reason)
        if self.sock is not None:
            self.sock.close()  # wakes the reader's recv with an error
        waiters, self._commands_sent = self._commands_sent, deque()
        for waiter in waiters:
            waiter.set_exception(ESLDisconnected(reason))
        self._auth_request_event.set()
        self._esl_event_queue.put(_STOP)
        reader = self._receive_events_greenlet
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=False)

    def stop(self, join_timeout_s: float = 1.0) -> None:
        self._lost("closed by client")
        for glet in (self._receive_events_greenlet, self._process_events_greenlet):
            if glet is not None and glet is not gevent.getcurrent():
                glet.join(timeout=join_timeout_s)
                if not glet.dead:
                    log.warning("ESL greenlet %r still running after close", glet)


class ESLClient:
    """One authenticated inbound event-socket connection (single use)."""

    def __init__(self, host: str, port: int, password: str, *, user: str | None = None,
                 connect_timeout_s: float = 5.0, command_timeout_s: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self._conn = _Connection(host, port, password, user, connect_timeout_s)
        self._used = False
        self._closed = False

    def __repr__(self) -> str:
        state = "connected" if self.connected else (self._conn.lost_reason or "new")
        return f"<ESLClient {self.host}:{self.port} {state}>"

    @property
    def connected(self) -> bool:
        return self._conn.established and self._conn.lost_reason is None

    @property
    def disconnect_reason(self) -> str | None:
        """Why the connection ended, or None while it is alive (or not yet connected)."""
        return self._conn.lost_reason

    def connect(self) -> None:
        """Connect and authenticate within ``connect_timeout_s``.

        Raises :class:`AuthFailed`, :class:`ESLDisconnected` or :class:`ESLTimeout`;
        after a failure nothing of this client is left running. Single use.
        """
        if self._used or self._closed:
            raise ESLError("an ESLClient connects once; build a new one to reconnect")
        self._used = True
        self._conn.connect()

    def command(self, text: str, headers: dict[str, str] | None = None,
                timeout_s: float | None = None) -> str:
        """Send a raw command; returns its ``Reply-Text`` (or body, for an api/response)."""
        return _reply_text(self._request(text, headers, timeout_s))

    def api(self, command: str, timeout_s: float | None = None) -> str:
        """``api <command>``: the response body (e.g. ``+OK\\n``, ``-ERR No such channel!\\n``).

        Blocks this connection in FreeSWITCH until done: never ``api originate``.
        A command FreeSWITCH refuses before running it (``-ERR permission denied`` for
        a restricted user) comes back as that reply text.
        """
        return self.command(f"api {command}", timeout_s=timeout_s)

    def api_many(self, commands: list[str], timeout_s: float | None = None) -> list[str]:
        """``api`` for each command, written at once (one write, replies in order): their
        response bodies. A later command runs even if an earlier one failed."""
        datas = [wire.format_command(f"api {command}") for command in commands]
        if not self._conn.established:
            raise ESLNotSent(self._conn.lost_reason or "not connected")
        frames = self._conn.request_many(
            datas, self.command_timeout_s if timeout_s is None else timeout_s)
        return [_reply_text(frame) for frame in frames]

    def bgapi(self, command: str, job_uuid: str, timeout_s: float | None = None) -> str:
        """``bgapi <command>`` with ``Job-UUID: <job_uuid>``; returns the Reply-Text.

        The result comes later as a BACKGROUND_JOB event carrying this Job-UUID.
        """
        reply = self.bgapi_many([(command, job_uuid)], timeout_s)[0]
        if isinstance(reply, ESLError):
            raise reply
        return reply

    def bgapi_many(self, jobs: list[tuple[str, str]],
                   timeout_s: float | None = None) -> list[str | ESLError]:
        """``bgapi`` for each (command, Job-UUID), written at once (one write, replies in
        order): each one's Reply-Text, or the ESLError of a refused one. Raises for the
        connection (disconnect, timeout, a reply out of order)."""
        for _command, job_uuid in jobs:
            if not _JOB_UUID_RE.fullmatch(job_uuid):
                raise InvalidValue(f"Job-UUID must be 1-36 of [A-Za-z0-9-]: {job_uuid!r}")
        datas = [wire.format_command(f"bgapi {command}", {"Job-UUID": job_uuid})
                 for command, job_uuid in jobs]
        if not self._conn.established:
            raise ESLNotSent(self._conn.lost_reason or "not connected")
        frames = self._conn.request_many(
            datas, self.command_timeout_s if timeout_s is None else timeout_s)
        out: list[str | ESLError] = []
        for (_command, job_uuid), frame in zip(jobs, frames, strict=True):
            reply = frame.headers.get("Reply-Text", "")
            echoed = frame.headers.get("Job-UUID")
            if echoed is not None and echoed != job_uuid:
                # Replies are matched by order only: a wrong echo means the FIFO is off.
                reason = f"reply out of order: sent Job-UUID {job_uuid}, reply for {echoed}"
                log.error("ESL %s:%s %s", self.host, self.port, reason)
                self._conn._lost(reason)
                raise ESLDisconnected(reason)
            out.append(ESLError(f"bgapi refused: {reply}") if reply.startswith("-ERR") else reply)
        return out

    def subscribe(self, events: list[str], fmt: str = "plain") -> None:
        """``event <fmt> A B C`` (subscriptions add up; the last format wins)."""
        if fmt not in ("plain", "json"):
            raise InvalidValue(f"event format must be plain or json, not {fmt!r}")
        if not events or not all(_EVENT_NAME_RE.fullmatch(name) for name in events):
            raise InvalidValue(f"bad event names: {events!r}")
        self._expect_ok(f"event {fmt} {' '.join(events)}")

    def add_filter(self, header: str, value: str) -> None:
        """``filter <header> <value>`` (with any filter, only matching events pass)."""
        if not _EVENT_NAME_RE.fullmatch(header) or not value:
            raise InvalidValue(f"bad filter: {header!r} {value!r}")
        self._expect_ok(f"filter {header} {value}")

    def on_event(self, handler: EventHandler) -> None:
        """Call ``handler(event)`` for every event, in order, from one dispatcher greenlet.

        Register before :meth:`connect` so no event is missed. Exceptions are logged.
        """
        self._conn.register_handle("*", handler)

    def on_disconnect(self, handler: DisconnectHandler) -> None:
        """Call ``handler(reason)`` once when an established connection ends (also on
        :meth:`close`), from the dispatcher greenlet after the last event."""
        self._conn.register_handle("DISCONNECT", handler)

    def ping(self, timeout_s: float) -> bool:
        """``api status`` within ``timeout_s``: False on timeout or disconnect."""
        return self.status(timeout_s) is not None

    def status(self, timeout_s: float) -> str | None:
        """``api status`` within ``timeout_s``: its text, None on timeout or disconnect."""
        try:
            return self.api("status", timeout_s=timeout_s)
        except (ESLTimeout, ESLDisconnected):
            return None

    def close(self, timeout_s: float = 1.0) -> None:
        """Polite ``exit`` (bounded), then close the socket and stop the greenlets. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._conn.closing = True
        if self.connected:
            try:
                self.command("exit", timeout_s=timeout_s)
            except ESLError as exc:
                log.debug("ESL exit failed: %s", exc)
        self._conn.stop(join_timeout_s=timeout_s)

    # -- helpers ------------------------------------------------------------------------

    def _request(self, text: str, headers: dict[str, str] | None,
                 timeout_s: float | None) -> wire.Frame:
        data = wire.format_command(text, headers)  # UnsafeCommand before any I/O
        if not self._conn.established:
            raise ESLNotSent(self._conn.lost_reason or "not connected")
        timeout = self.command_timeout_s if timeout_s is None else timeout_s
        return self._conn.request(data, timeout)

    def _expect_ok(self, text: str) -> str:
        reply = self.command(text)
        if not reply.startswith("+OK"):
            raise ESLError(f"{text.split(' ', 1)[0]} refused: {reply}")
        return reply


def _reply_text(frame: wire.Frame) -> str:
    """An api/response's body, or a command/reply's Reply-Text."""
    if frame.content_type == "api/response":
        return frame.body.decode("utf-8", errors="replace")
    return frame.headers.get("Reply-Text", "")


def _first_line(data: bytes) -> str:
    line = data.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    if line.startswith(("auth ", "userauth ")):
        return line.split(" ", 1)[0] + " ***"
    return line[:120]


def _body_text(frame: wire.Frame) -> str:
    return frame.body.decode("utf-8", errors="replace").strip().replace("\n", " ")
