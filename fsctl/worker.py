"""The worker: jobs in → commands out; events in → state out.

One gevent process per FreeSWITCH node. It claims jobs from the Redis stream,
drives each callback's pure state machine with FreeSWITCH's events, executes the
actions over ESL, and writes the records back to Redis (coalesced).
No greenlet waits per call: events are dispatched to their callback through
in-memory indexes by leg UUID and Job-UUID.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid as uuidlib
from collections.abc import Iterable

import gevent
import redis
from gevent.event import Event as GEvent
from marshmallow import ValidationError

from . import commands, schemas
from .callback import (
    Action,
    Bridge,
    Broadcast,
    Cancel,
    CommandFailed,
    Finished,
    Input,
    JobDone,
    Kill,
    LegSignal,
    Originate,
    Start,
    apply,
)
from .errors import ESLError, InvalidValue, PolicyDenied
from .esl import ESLClient
from .events import EVENT_FILTERS, SUBSCRIBED_EVENTS, ChannelFact, JobFact, translate
from .model import Callback, other
from .settings import Settings
from .store import Store
from .wire import Event

log = logging.getLogger(__name__)

JOB_NAMESPACE = uuidlib.UUID("5b0e7c53-2f6a-4d0e-9b7e-6f2a1c1d2e3f")
"""Namespace of the callback ids derived from redis-cli job entry ids (uuid5)."""
FLUSH_INTERVAL_S = 0.02
"""How often changed records are written to Redis in one pipeline."""
JOB_BLOCK_MS = 1000
"""Longest one XREADGROUP waits for a job."""
JOB_BATCH = 100
"""Most jobs claimed in one read."""
FORGET_AFTER_S = 3600.0
"""A finished callback whose legs never reported hangup is forgotten after this long."""


class Worker:
    """Drives callbacks through one FreeSWITCH node."""

    def __init__(self, settings: Settings, store: Store, name: str | None = None) -> None:
        self.settings = settings
        self.store = store
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.live: dict[str, Callback] = {}
        self.by_uuid: dict[str, tuple[str, str]] = {}
        self.by_job: dict[str, tuple[str, str]] = {}
        self.entries: dict[str, str] = {}
        self._dirty: dict[str, tuple[Callback, str]] = {}
        self._to_ack: list[str] = []
        self._stopping = GEvent()
        self._greenlets: list[gevent.Greenlet] = []
        self.events: ESLClient | None = None
        self.cmds: ESLClient | None = None

    # -- lifecycle ------------------------------------------------------------------

    def _esl(self) -> ESLClient:
        s = self.settings
        return ESLClient(s.esl_host, s.esl_port, s.esl_password, user=s.esl_user,
                         connect_timeout_s=s.esl_connect_timeout_s,
                         command_timeout_s=s.esl_command_timeout_s)

    def connect(self) -> None:
        """Open the event and the command connection; subscribe with filters."""
        self.settings.check_esl_password()
        self.events, self.cmds = self._esl(), self._esl()
        self.events.on_event(self.on_event)
        for conn in (self.events, self.cmds):
            conn.on_disconnect(self._on_disconnect)
            conn.connect()
        for header, value in EVENT_FILTERS:
            self.events.add_filter(header, value)
        self.events.subscribe(list(SUBSCRIBED_EVENTS))
        log.info("worker %s: connected to %s:%s", self.name, self.settings.esl_host,
                 self.settings.esl_port)

    def start(self) -> None:
        self.store.ensure_group()
        self.connect()
        self._greenlets = [gevent.spawn(self._job_loop), gevent.spawn(self._control_loop),
                           gevent.spawn(self._flush_loop)]

    def stop(self) -> None:
        self._stopping.set()
        gevent.joinall(self._greenlets, timeout=3)
        self.flush()
        for conn in (self.events, self.cmds):
            if conn is not None:
                conn.close()

    def wait(self) -> None:
        self._stopping.wait()

    def _on_disconnect(self, reason: str) -> None:
        if not self._stopping.is_set():
            log.error("worker %s: FreeSWITCH connection lost: %s", self.name, reason)
            self._stopping.set()

    # -- jobs -----------------------------------------------------------------------

    def _job_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                entries = self.store.read_jobs(self.name, JOB_BATCH, JOB_BLOCK_MS)
            except redis.RedisError as exc:
                log.warning("worker %s: redis read failed: %s", self.name, exc)
                gevent.sleep(0.5)
                continue
            for entry_id, fields in entries:
                try:
                    self.take_job(entry_id, fields)
                except redis.RedisError as exc:
                    log.warning("job %s: redis failed, left pending: %s", entry_id, exc)
                except Exception as exc:  # noqa: BLE001 - one bad job must not stop the loop
                    log.exception("job %s: unexpected error", entry_id)
                    self.store.dead_letter(entry_id, fields, f"internal error: {exc!r}")

    def take_job(self, entry_id: str, fields: dict[str, str]) -> None:
        """Claim one job: a callback stored by the API, or a redis-cli request."""
        callback_id = fields.get("callback_id")
        if callback_id is None:
            callback_id = self._create_from_request(entry_id, fields)
            if callback_id is None:
                return
        started: list[Action] = []

        def claim(cb: Callback) -> bool:
            started.clear()
            if cb.state != "queued":
                return False
            cb.worker = self.name
            cb.job_id = entry_id
            started.extend(apply(cb, Start(ts=time.time())))
            return True

        cb = self.store.update_if(callback_id, claim)
        if cb is None:
            self.store.dead_letter(entry_id, fields, f"no callback record {callback_id!r}")
            return
        if not started:
            if cb.final:
                self.store.ack(entry_id)
            else:
                log.warning("callback %s: job %s already started by %s", cb.id, entry_id, cb.worker)
                self.store.ack(entry_id)
            return
        self._adopt(cb, entry_id)
        self._dirty.setdefault(cb.id, (cb, cb.state))
        log.info("callback %s: claimed job %s", cb.id, entry_id)
        self._execute(cb, started)

    def _create_from_request(self, entry_id: str, fields: dict[str, str]) -> str | None:
        raw = fields.get("request")
        if raw is None:
            self.store.dead_letter(entry_id, fields, "job has neither 'callback_id' nor 'request'")
            return None
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValidationError({"_schema": ["request must be a JSON object"]})
            req = schemas.REQUEST_SCHEMA.load(body)
            cb = schemas.build_callback(
                req, self.settings, callback_id=uuidlib.uuid5(JOB_NAMESPACE, entry_id).hex)
        except (ValueError, ValidationError, PolicyDenied) as exc:
            if isinstance(exc, ValidationError):
                reason = json.dumps(exc.messages)
            elif isinstance(exc, PolicyDenied):
                reason = f"{exc}: {json.dumps(exc.errors)}"
            else:
                reason = str(exc)
            log.warning("job %s: invalid, dead-lettered: %s", entry_id, reason)
            self.store.dead_letter(entry_id, fields, f"invalid request: {reason}")
            return None
        cb.job_id = entry_id
        self.store.create_from_job(cb, entry_id)
        log.info("callback %s: created from redis-cli job %s", cb.id, entry_id)
        return cb.id

    def _adopt(self, cb: Callback, entry_id: str | None) -> None:
        self.live[cb.id] = cb
        if entry_id:
            self.entries[cb.id] = entry_id
        for name, leg in cb.legs.items():
            self.by_uuid[leg.uuid] = (cb.id, name)
            self.by_job[leg.job_uuid] = (cb.id, name)

    def _forget(self, cb: Callback) -> None:
        self.live.pop(cb.id, None)
        for leg in cb.legs.values():
            self.by_uuid.pop(leg.uuid, None)
            self.by_job.pop(leg.job_uuid, None)

    # -- control --------------------------------------------------------------------

    def _control_loop(self) -> None:
        last = "$"
        while not self._stopping.is_set():
            try:
                entries = self.store.read_control(last, 1000)
            except redis.RedisError as exc:
                log.warning("worker %s: control read failed: %s", self.name, exc)
                gevent.sleep(0.5)
                continue
            for entry_id, fields in entries:
                last = entry_id
                cb = self.live.get(fields.get("callback_id", ""))
                if cb is not None and fields.get("cmd") == "cancel":
                    log.info("callback %s: cancel", cb.id)
                    self.feed(cb, Cancel(ts=time.time()))

    # -- events ---------------------------------------------------------------------

    def on_event(self, ev: Event) -> None:
        fact = translate(ev)
        if fact is None:
            return
        if isinstance(fact, JobFact):
            ref = self.by_job.get(fact.job_uuid)
            if ref is None:
                return
            cb = self.live.get(ref[0])
            if cb is not None:
                self.feed(cb, JobDone(leg=ref[1], ok=fact.ok, text=fact.text, ts=fact.ts))
            return
        self._on_channel(fact)

    def _on_channel(self, fact: ChannelFact) -> None:
        ref = self.by_uuid.get(fact.uuid)
        if ref is None and fact.callback_id and fact.leg in ("A", "B"):
            ref = (fact.callback_id, fact.leg)
        if ref is None:
            return
        cb = self.live.get(ref[0])
        if cb is None or cb.legs[ref[1]].uuid != fact.uuid:
            return
        self.feed(cb, LegSignal(leg=ref[1], kind=fact.kind, ts=fact.ts, cause=fact.cause,
                                sip_status=fact.sip_status))

    def feed(self, cb: Callback, event: Input) -> None:
        """Apply one input to a live callback and carry out what it asks."""
        self._dirty.setdefault(cb.id, (cb, cb.state))
        self._execute(cb, apply(cb, event))

    # -- actions --------------------------------------------------------------------

    def _execute(self, cb: Callback, actions: Iterable[Action]) -> None:
        for action in actions:
            try:
                self._do(cb, action)
            except (ESLError, InvalidValue) as exc:
                log.error("callback %s: %s failed: %s", cb.id, type(action).__name__, exc)
                if isinstance(action, Originate):
                    self.feed(cb, CommandFailed("originate", str(exc), time.time(), action.leg))
                elif isinstance(action, Bridge):
                    self.feed(cb, CommandFailed("bridge", str(exc), time.time()))
        if cb.final and all(not leg.alive for leg in cb.legs.values()):
            self._forget(cb)

    def _do(self, cb: Callback, action: Action) -> None:
        assert self.cmds is not None
        if isinstance(action, Originate):
            leg = cb.legs[action.leg]
            peer = cb.legs[other(action.leg)]
            dial = commands.Dial(
                uuid=leg.uuid, callback_id=cb.id, leg=action.leg, to=leg.to,
                caller_id_number=leg.from_, caller_id_name=leg.caller_id_name,
                route=self.settings.route(leg.route), ring_timeout_s=leg.ring_timeout_s,
                park_timeout_s=peer.ring_timeout_s + self.settings.park_margin_s,
            )
            self.cmds.bgapi(commands.originate(dial), leg.job_uuid)
            log.info("callback %s: originate leg %s (%s)", cb.id, action.leg, leg.uuid)
        elif isinstance(action, Broadcast):
            reply = self.cmds.api(commands.uuid_broadcast(cb.legs[action.leg].uuid,
                                                          self.settings.ringback))
            log.info("callback %s: ringback to leg %s: %s", cb.id, action.leg, reply.strip())
        elif isinstance(action, Bridge):
            reply = self.cmds.api(commands.uuid_bridge(action.a_uuid, action.b_uuid))
            log.info("callback %s: bridge: %s", cb.id, reply.strip())
            if not reply.startswith("+OK"):
                self.feed(cb, CommandFailed("bridge", reply.strip(), time.time()))
        elif isinstance(action, Kill):
            reply = self.cmds.api(commands.uuid_kill(action.uuid, action.cause))
            log.info("callback %s: kill leg %s (%s): %s", cb.id, action.leg, action.cause,
                     reply.strip())
        elif isinstance(action, Finished):
            log.info("callback %s: %s (%s)", cb.id, action.state, action.outcome)
            entry = self.entries.pop(cb.id, None)
            if entry:
                self._to_ack.append(entry)

    # -- persistence ----------------------------------------------------------------

    def _flush_loop(self) -> None:
        while not self._stopping.wait(FLUSH_INTERVAL_S):
            try:
                self.flush()
            except redis.RedisError as exc:
                log.warning("worker %s: redis write failed, will retry: %s", self.name, exc)

    def flush(self) -> None:
        """Write every changed record (and ack finished jobs) in one go."""
        if not self._dirty and not self._to_ack:
            return
        dirty, self._dirty = self._dirty, {}
        acks, self._to_ack = self._to_ack, []
        try:
            self.store.save_many([(cb, saved) for cb, saved in dirty.values()])
            for entry in acks:
                self.store.ack(entry)
        except redis.RedisError:
            for cb_id, item in dirty.items():
                self._dirty.setdefault(cb_id, item)
            self._to_ack.extend(acks)
            raise
