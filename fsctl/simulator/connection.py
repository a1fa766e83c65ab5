"""One ESL client connection: mod_event_socket's command protocol and event delivery."""

from __future__ import annotations

import logging
import re
import socket
import uuid as uuidlib
from typing import TYPE_CHECKING

import gevent
from gevent.event import AsyncResult
from gevent.event import Event as GEvent

from ..wire import encode_api_response, encode_framed, encode_reply, parse_commands
from .model import Job

if TYPE_CHECKING:
    from .events import OutEvent
    from .server import Simulator

log = logging.getLogger(__name__)

GREETING = b"Content-Type: auth/request\n\n"
DISCONNECT_NOTICE = encode_framed(
    "text/disconnect-notice",
    "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n",
)
LOST_EVENTS_NOTICE = encode_framed("text/disconnect-notice",
                                   "killed listener because of lost events\n")
_EVENT_NAMES = (
    "CUSTOM CLONE CHANNEL_CREATE CHANNEL_DESTROY CHANNEL_STATE CHANNEL_CALLSTATE CHANNEL_ANSWER "
    "CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE CHANNEL_HOLD "
    "CHANNEL_UNHOLD CHANNEL_BRIDGE CHANNEL_UNBRIDGE CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA "
    "CHANNEL_OUTGOING CHANNEL_PARK CHANNEL_UNPARK CHANNEL_APPLICATION CHANNEL_ORIGINATE "
    "CHANNEL_UUID API LOG INBOUND_CHAN OUTBOUND_CHAN STARTUP SHUTDOWN PUBLISH UNPUBLISH TALK "
    "NOTALK SESSION_CRASH MODULE_LOAD MODULE_UNLOAD DTMF MESSAGE PRESENCE_IN NOTIFY_IN "
    "PRESENCE_OUT PRESENCE_PROBE MESSAGE_WAITING MESSAGE_QUERY ROSTER CODEC BACKGROUND_JOB "
    "DETECTED_SPEECH DETECTED_TONE PRIVATE_COMMAND HEARTBEAT TRAP ADD_SCHEDULE DEL_SCHEDULE "
    "EXE_SCHEDULE RE_SCHEDULE RELOADXML NOTIFY PHONE_FEATURE PHONE_FEATURE_SUBSCRIBE SEND_MESSAGE "
    "RECV_MESSAGE REQUEST_PARAMS CHANNEL_DATA GENERAL COMMAND SESSION_HEARTBEAT CLIENT_DISCONNECTED "
    "SERVER_DISCONNECTED SEND_INFO RECV_INFO RECV_RTCP_MESSAGE SEND_RTCP_MESSAGE CALL_SECURE NAT "
    "RECORD_START RECORD_STOP PLAYBACK_START PLAYBACK_STOP CALL_UPDATE FAILURE SOCKET_DATA "
    "MEDIA_BUG_START MEDIA_BUG_STOP CONFERENCE_DATA_QUERY CONFERENCE_DATA CALL_SETUP_REQ "
    "CALL_SETUP_RESULT CALL_DETAIL DEVICE_STATE TEXT SHUTDOWN_REQUESTED ALL"
)
KNOWN_EVENTS = frozenset(_EVENT_NAMES.split())


class Connection:
    def __init__(self, sim: Simulator, sock: socket.socket, conn_id: int) -> None:
        self.sim = sim
        self.sock = sock
        self.id = conn_id
        self.authed = False
        self.user: str | None = None
        self.allowed_api: frozenset[str] | None = None
        self.allowed_events: frozenset[str] | None = None
        self.all_events = False
        self.event_names: set[str] = set()
        self.format = "plain"
        self.filters: list[tuple[str, str]] = []
        self._match_order: list[tuple[str, str]] = []  # the filters, cheapest to test first
        self._out: list[bytes] = []
        self._held: list[bytes] | None = None
        self._queued = 0
        self._wake = GEvent()
        self._closing = False
        self.closed = False
        self._reader: gevent.Greenlet | None = None

    # ---- outbound ------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        self._out.append(data)
        self._wake.set()

    def push_event(self, ev: OutEvent) -> None:
        if self._closing or self.closed:
            return
        data = ev.json() if self.format == "json" else ev.plain()
        self._queued += 1
        if self._queued > self.sim.config.max_queued_events:
            log.warning("simulator: connection %d does not read; killing listener", self.id)
            self._out.clear()
            self._held = None
            self.close(LOST_EVENTS_NOTICE)
            return
        if self._held is not None:
            self._held.append(data)
        else:
            self._out.append(data)
            self._wake.set()

    def wants(self, ev: OutEvent) -> bool:
        if not (self.all_events or ev.name in self.event_names):
            return False
        if self.allowed_events is not None and ev.name not in self.allowed_events:
            return False
        if self.filters:
            for header, value in self._match_order:
                for got in ev.values(header):
                    if got == value or (len(value) > 2 and value[0] == value[-1] == "/"
                                        and re.search(value[1:-1], got)):
                        return True
            return False
        return True

    def close(self, notice: bytes | None = None) -> None:
        """Send ``notice`` (if any) after what is queued, then close the socket."""
        if self._closing or self.closed:
            return
        self._closing = True
        if notice:
            self._out.append(notice)
        self._wake.set()

    def abort(self) -> None:
        """Close at once, without a notice (network drop, crash)."""
        self.closed = True
        self._wake.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _writer(self) -> None:
        try:
            while not self.closed:
                self._wake.wait()
                self._wake.clear()
                if self.closed:
                    break
                if self._out and not self.sim.blackhole:
                    data = b"".join(self._out)
                    self._out.clear()
                    self._queued = 0
                    self._send_all(data)
                if self._closing and not self._out:
                    break
        except OSError as exc:
            log.debug("simulator: connection %d write failed: %s", self.id, exc)
        finally:
            if not self.closed:
                self.abort()
            if self._reader is not None and self._reader is not gevent.getcurrent():
                self._reader.kill(block=False)
            self.sim.forget(self)

    def _send_all(self, data: bytes) -> None:
        """socket.sendall() without gevent's SO_SNDBUF query (a syscall) on every write."""
        view = memoryview(data)
        sent = self.sock.send(view)
        while sent < len(view):
            sent += self.sock.send(view[sent:])

    # ---- inbound -------------------------------------------------------------------------

    def run(self) -> None:
        self._reader = gevent.getcurrent()
        writer = gevent.spawn(self._writer)
        auth_timer = gevent.spawn_later(self.sim.config.auth_timeout_s, self._auth_timeout)
        self.send(GREETING)
        buf = bytearray()
        try:
            while not self._closing and not self.closed:
                data = self.sock.recv(65536)
                if not data:
                    break
                buf += data
                for command, headers in parse_commands(buf):
                    self.sim.record(self.id, command, headers)
                    if self.sim.blackhole:
                        continue
                    try:
                        self.handle(command, headers)
                    except Exception:
                        # A defect of the simulator, not FreeSWITCH behaviour: said loudly and
                        # counted (tests.stack fails on it), and this connection is dropped.
                        self.sim.internal_errors += 1
                        log.exception("simulator: connection %d: %r failed; closing it",
                                      self.id, command[:200])
                        return  # (the finally below closes it)
                    if self._closing:
                        break
                gevent.sleep(0)  # a client flooding commands must not starve the writers
        except OSError as exc:
            log.debug("simulator: connection %d read failed: %s", self.id, exc)
        finally:
            auth_timer.kill(block=False)
            if not self._closing:
                self.closed = True
                self._wake.set()
            writer.join()

    def _auth_timeout(self) -> None:
        if not self.authed:
            self.close(DISCONNECT_NOTICE)

    def handle(self, command: str, headers: dict[str, str]) -> None:
        cmd = command.strip()
        lowered = cmd.lower()
        if "mod_event_socket" in lowered and ("reload" in lowered or "unload" in lowered):
            log.warning("simulator: %r reloads mod_event_socket: dropping every connection", cmd)
            self.sim.drop_connections()
            return
        if lowered == "exit" or lowered.startswith("exit "):
            self.send(encode_reply("+OK bye"))
            self.close(DISCONNECT_NOTICE)
            return
        if not self.authed:
            if lowered.startswith("auth "):
                self._auth(cmd[5:].strip())
            elif lowered.startswith("userauth "):
                self._userauth(cmd[9:].strip())
            else:
                self.send(encode_reply("-ERR command not found"))
            return
        word, _, rest = cmd.partition(" ")
        word = word.lower()
        rest = rest.strip()
        if word == "api":
            self._api(rest)
        elif word == "bgapi":
            self._bgapi(rest, headers.get("Job-UUID", "").strip())
        elif word == "event":
            self._event(rest.split())
        elif word == "nixevent":
            for name in rest.split():
                self.event_names.discard(name.upper())
                if name.upper() == "ALL":
                    self.all_events = False
            self.sim.subscriptions_changed()
            self.send(encode_reply("+OK events nixed"))
        elif word == "noevents":
            self.all_events = False
            self.event_names.clear()
            self.sim.subscriptions_changed()
            self.send(encode_reply("+OK no longer listening for events"))
        elif word == "filter":
            self._filter(rest)
        else:
            self.send(encode_reply("-ERR command not found"))

    def _auth(self, password: str) -> None:
        if password == self.sim.password:
            self.authed = True
            self.send(encode_reply("+OK accepted"))
        else:
            self.send(encode_reply("-ERR invalid"))
            self.close(DISCONNECT_NOTICE)

    def _userauth(self, spec: str) -> None:
        who, _, password = spec.partition(":")
        user = self.sim.config.users.get(who)
        if user is None or user.password != password:
            self.send(encode_reply("-ERR invalid"))
            self.close(DISCONNECT_NOTICE)
            return
        self.authed = True
        self.user = who
        self.allowed_api = user.allowed_api
        self.allowed_events = user.allowed_events
        self.send(encode_reply("+OK accepted"))

    def _event(self, words: list[str]) -> None:
        if words and words[0].lower() in ("plain", "json", "xml"):
            self.format = words.pop(0).lower()
        added = False
        for word in words:
            name = word.upper()
            if name == "ALL":
                self.all_events = True
                added = True
            elif name in KNOWN_EVENTS:
                self.event_names.add(name)
                added = True
        if not added and not words:
            self.send(encode_reply("-ERR no keywords supplied"))
            return
        self.sim.subscriptions_changed()
        self.send(encode_reply(f"+OK event listener enabled {self.format}"))

    def _filters_changed(self) -> None:
        """Filters are ORed: testing ``variable_*`` ones first (a dict lookup, where a
        header is a scan) gives the same answer sooner."""
        self._match_order = sorted(self.filters, key=lambda f: not f[0].startswith("variable_"))

    def _filter(self, rest: str) -> None:
        name, _, value = rest.partition(" ")
        if name.lower() == "delete":
            target, _, tval = value.partition(" ")
            if target.lower() == "all":
                self.filters.clear()
            else:
                self.filters = [(h, v) for h, v in self.filters
                                if not (h == target and (not tval or v == tval))]
            self._filters_changed()
            self.send(encode_reply(f"+OK filter deleted. [{target}]=[{tval}]"))
        elif name and value:
            self.filters.append((name, value))
            self._filters_changed()
            self.send(encode_reply(f"+OK filter added. [{name}]=[{value}]"))
        else:
            self.send(encode_reply("-ERR invalid syntax"))

    def _permitted(self, command: str) -> bool:
        return self.allowed_api is None or command in self.allowed_api

    def _api(self, text: str) -> None:
        command, _, arg = text.partition(" ")
        if not self._permitted(command):
            self.send(encode_reply("-ERR permission denied"))
            return
        result: AsyncResult = AsyncResult()
        job = Job(command, arg, self.sim.factory.next_seq(), on_result=result.set)
        if command == "originate":
            self._held = []  # api originate blocks every reply and event of this connection
            try:
                self.sim.model.originate(job)
                body = result.get()
            finally:
                held, self._held = self._held or [], None
            self.send(encode_api_response(body or "-ERR no reply\n"))
            self._out.extend(held)
            self._wake.set()
            return
        body, deferred = self.sim.execute_api(command, arg)
        self.send(encode_api_response(body or "-ERR no reply\n"))
        self.sim.model.finish_job(job, body)
        if deferred is not None:
            deferred()

    def _bgapi(self, text: str, job_uuid: str) -> None:
        command, _, arg = text.partition(" ")
        if not self._permitted(command):
            self.send(encode_reply("-ERR permission denied"))
            return
        if not job_uuid or len(job_uuid) > 36:
            job_uuid = str(uuidlib.uuid4())
        self.send(encode_reply(f"+OK Job-UUID: {job_uuid}", {"Job-UUID": job_uuid}))
        job = Job(command, arg, self.sim.factory.next_seq(), job_uuid=job_uuid)
        if command == "originate":
            self.sim.model.originate(job)
            return
        body, deferred = self.sim.execute_api(command, arg)
        self.sim.model.finish_job(job, body or "-ERR no reply\n")
        if deferred is not None:
            deferred()
