"""Commands out: the worker's ``uuid_*`` commands, written in batches by one greenlet.

The event handler never waits for FreeSWITCH: the ringback, bridge and kill a callback's
events ask for are queued here (one FIFO, so a callback's commands keep their order), and
one greenlet writes everything waiting in one ESL write (``api`` commands; FreeSWITCH runs a
connection's commands in order and answers in order), then acts on the replies: a bridge
FreeSWITCH refused goes back to the state machine. Originates are the dispatcher's
(:mod:`fsctl.dispatch`): they are paced, these are not.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections import deque
from typing import TYPE_CHECKING

from gevent.event import Event as GEvent

from . import commands
from .callback import Bridge, Broadcast, CommandFailed, Kill, Record, RecordFailed, SendDtmf
from .errors import ESLError, InvalidValue
from .model import Callback

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger(__name__)

COMMAND_BATCH = 128
"""Most commands' actions written in one ESL write."""
IDLE_WAIT_S = 1.0
"""Longest sleep of the command greenlet with nothing to send (it is woken for work)."""
NO_SUCH_CHANNEL = "-ERR No such channel"
"""FreeSWITCH's answer to a kill of a leg that is gone already: expected, logged at DEBUG."""

Command = Broadcast | SendDtmf | Bridge | Kill | Record


class Commander:
    """The queue of a worker's ``uuid_*`` commands and the greenlet that sends them."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self._queue: deque[tuple[Callback, Command]] = deque()
        self._work = GEvent()

    def later(self, cb: Callback, action: Command) -> None:
        """Send ``action``'s command(s) soon, after every command queued before it."""
        self._queue.append((cb, action))
        self._work.set()

    def run(self) -> None:
        while not self.w.stopping.is_set():
            if not self._queue:
                self._work.clear()
                self._work.wait(IDLE_WAIT_S)
                continue
            batch = [self._queue.popleft() for _ in range(min(COMMAND_BATCH, len(self._queue)))]
            try:
                self._send(batch)
            except Exception:
                log.exception("worker %s: sending commands failed", self.w.name)  # must live

    def talk_bounds(self, uuids: tuple[str, str]) -> list[str]:
        """``sched_hangup`` of each leg: FreeSWITCH itself ends the call after max_talk_s,
        fsctl alive or not (the sweep enforces it too, so a refusal is only logged; sent
        after a bridge that failed, it is harmless: the legs are being hung up anyway)."""
        return [commands.sched_hangup(uuid, self.w.settings.max_talk_s) for uuid in uuids]

    def waiting_media(self, cb: Callback, uuid: str) -> list[str]:
        """What the answered leg ``uuid`` hears while the other rings: the request's
        announcement once, then its music (looped) or its country's ringback (the default:
        FSCTL's ringback). Names were checked against the configured media at request time;
        one removed since is skipped (logged), not an error."""
        media, known = cb.waiting_media or {}, self.w.settings.media
        out: list[str] = []
        if "announcement" in media:
            if media["announcement"] in known:
                out.append(commands.uuid_broadcast(uuid, known[media["announcement"]]))
            else:
                log.warning("callback %s: media %r is no longer configured", cb.id,
                            media["announcement"])
        if media.get("music") in known:
            return [*out, commands.uuid_broadcast(uuid, known[media["music"]], "endless_playback")]
        tone = commands.RINGBACK_TONES.get(media.get("ringback", ""), self.w.settings.ringback)
        return [*out, commands.uuid_broadcast(uuid, tone)]

    def _commands(self, cb: Callback, action: Command) -> list[str]:
        if isinstance(action, SendDtmf):
            raise InvalidValue("DTMF goes with bgapi (_send_dtmf)")
        if isinstance(action, Broadcast):
            return self.waiting_media(cb, cb.legs[action.leg].uuid)
        if isinstance(action, Record):
            return [commands.uuid_record(action.uuid, action.path)]
        if isinstance(action, Bridge):
            uuids = (action.a_uuid, action.b_uuid)
            return [commands.uuid_bridge(*uuids), *self.talk_bounds(uuids)]
        return [commands.uuid_kill(action.uuid, action.cause)]

    def _send(self, batch: list[tuple[Callback, Command]]) -> None:
        dtmf = [(cb, a) for cb, a in batch if isinstance(a, SendDtmf)]
        if dtmf:
            self._send_dtmf(dtmf)
            batch = [(cb, a) for cb, a in batch if not isinstance(a, SendDtmf)]
        texts: list[str] = []
        spans: list[tuple[Callback, Command, int, int]] = []
        for cb, action in batch:
            try:
                cmds = self._commands(cb, action)
            except InvalidValue as exc:
                self.w.action_failed(cb, action, exc)
                continue
            spans.append((cb, action, len(texts), len(cmds)))
            texts += cmds
        if not texts:
            return
        try:
            replies = self.w.link.api_many(texts)
        except ESLError as exc:
            for cb, action, _start, _n in spans:
                self.w.action_failed(cb, action, exc)
            return
        for cb, action, start, n in spans:
            self._done(cb, action, texts[start:start + n], replies[start:start + n])

    def _send_dtmf(self, batch: list[tuple[Callback, SendDtmf]]) -> None:
        """``bgapi uuid_send_dtmf`` (never ``api``: FreeSWITCH may wait out a pause in the
        command's thread); each result comes as a BACKGROUND_JOB (Worker.dtmf_jobs)."""
        jobs: list[tuple[str, str]] = []
        sent: list[tuple[Callback, SendDtmf, str]] = []
        for cb, action in batch:
            try:
                command = commands.uuid_send_dtmf(action.uuid, action.digits)
            except InvalidValue as exc:
                self.w.action_failed(cb, action, exc)
                continue
            job_uuid = str(uuidlib.uuid4())
            self.w.dtmf_jobs[job_uuid] = (cb.id, action.leg, action.uuid, action.digits)
            jobs.append((command, job_uuid))
            sent.append((cb, action, job_uuid))
        if not jobs:
            return
        try:
            replies: list[str | ESLError] = self.w.link.bgapi_many(jobs)
        except ESLError as exc:
            replies = [exc] * len(jobs)
        for (cb, action, job_uuid), reply in zip(sent, replies, strict=True):
            if isinstance(reply, ESLError):
                self.w.dtmf_jobs.pop(job_uuid, None)
                self.w.action_failed(cb, action, reply)

    def _done(self, cb: Callback, action: Command, sent: list[str], replies: list[str]) -> None:
        first = replies[0].strip()
        if isinstance(action, Broadcast):
            log.info("callback %s: ringback to leg %s: %s", cb.id, action.leg, first)
        elif isinstance(action, Record):
            log.info("callback %s: recording to %s: %s", cb.id, action.path, first)
            if not first.startswith("+OK"):
                self.w.feed(cb, RecordFailed(first, self.w.clock()))
        elif isinstance(action, Kill):
            # "-ERR No such channel!": the leg hung up already (every normal completion)
            level = logging.DEBUG if first.startswith(NO_SUCH_CHANNEL) else logging.INFO
            log.log(level, "callback %s: kill leg %s (%s): %s", cb.id, action.leg, action.cause,
                    first)
        else:
            log.info("callback %s: bridge: %s", cb.id, first)
            if not first.startswith("+OK"):
                self.w.feed(cb, CommandFailed("bridge", first, self.w.clock()))
                return
            for command, reply in zip(sent[1:], replies[1:], strict=True):
                if not reply.startswith("+OK"):
                    log.warning("callback %s: %s: %s", cb.id, command, reply.strip())
