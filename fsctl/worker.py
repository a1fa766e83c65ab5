"""The worker: jobs in → commands out; events in → state out.

One gevent process per FreeSWITCH node. It claims jobs from the Redis stream while its
node has room (:mod:`fsctl.dispatch` paces every originate under the node's limits),
drives each callback's pure state machine with FreeSWITCH's events, executes the
actions over ESL, and writes the records back to Redis (coalesced; a leg's record
is written before its originate is sent). No greenlet waits per call: events are
dispatched to their callback through in-memory indexes by leg UUID and Job-UUID.
Times come from FreeSWITCH's event clock; fsctl's own moments (a dial, a cancel) are
read on :meth:`Worker.clock`, fsctl's clock brought to FreeSWITCH's.

Jobs are acknowledged only when their callback is final. A worker refreshes its
jobs' idle time while it lives; the jobs of a dead worker are taken over by
another after ``reclaim_idle_s`` (or at once by a restart under the same name),
and live callbacks are adopted after checking their channels, never re-dialled.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import gevent
import redis
from gevent.event import Event as GEvent

from . import commands
from .allocator import Trimmer
from .callback import (
    THROTTLE_RETRY_TOTAL_S,
    Action,
    Bridge,
    Broadcast,
    Cancel,
    CommandFailed,
    DtmfDone,
    Expire,
    Finished,
    Input,
    JobDone,
    Kill,
    LegSignal,
    Lost,
    Originate,
    Record,
    Retry,
    SendDtmf,
    apply,
    stamp,
)
from .commander import Commander
from .commands import dtmf_play_s
from .dispatch import Dispatcher
from .errors import ESLDisconnected, ESLError, ESLNotSent, FsctlError, InvalidValue
from .events import ChannelFact, JobFact, translate
from .intake import Intake
from .model import Callback, other
from .node import NodeLink
from .ops import logs as ops_logs
from .ops.metrics import WorkerMetrics
from .recorder import Recorder
from .recovery import Recovery
from .settings import Settings
from .spool import Spool
from .store import Store, outcome_field
from .wire import Event

if TYPE_CHECKING:
    from gevent.pywsgi import WSGIServer

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.05
"""How often changed records are written to Redis in one pipeline (a record is at most
this much behind the worker; a leg's record is always written before its originate)."""
FLUSH_IDLE_WAIT_S = 1.0
"""Longest the flush loop sleeps with nothing to write (it is woken when something comes)."""
JOB_BLOCK_MS = 1000
"""Longest one XREADGROUP waits for a job."""
JOB_BATCH = 50
"""Most jobs claimed in one read."""
REDIS_RETRY_S = 0.5
"""Pause before retrying after a Redis error (the worker resumes within this of Redis)."""
ROOM_WAIT_S = 0.05
"""Pause before looking again when the node has no room for another callback."""
EXPIRE_EVERY_S = 1.0
"""How often callbacks queued longer than queue_timeout_s (never claimed) are ended."""
SCHEDULE_POLL_S = 0.5
"""Longest the scheduler sleeps before looking for scheduled callbacks that came due (it
sleeps until the next one's time when that is sooner)."""
ENDED_KEEP_S = 10.0
"""How long a finished callback still takes its legs' late events (HANGUP_COMPLETE carries
the SIP status and disposition, and comes after the HANGUP that ended the callback)."""
CLOCK_DRIFT_S_PER_S = 0.001
"""How fast the estimate of FreeSWITCH's clock may fall back (if that clock is set back)."""
_ENDS_LEGS = (JobDone, Lost)
"""Inputs besides a hangup signal that may hang a leg up (counted in the metrics)."""


class Worker:
    """Drives callbacks through one FreeSWITCH node."""

    def __init__(self, settings: Settings, store: Store, name: str | None = None) -> None:
        self.settings = settings
        self.store = store
        self.name = name or settings.worker_name or f"{socket.gethostname()}-{os.getpid()}"
        self.dispatcher = Dispatcher(self)
        self.commander = Commander(self)
        self.link = NodeLink(settings, self.on_event, self._on_link_up, self._on_link_down,
                             self.dispatcher.on_status)
        self.recovery = Recovery(self)
        self._trim = Trimmer()
        self.intake = Intake(self)
        self.live: dict[str, Callback] = {}
        self.by_uuid: dict[str, tuple[str, str]] = {}
        self.by_job: dict[str, tuple[str, str]] = {}
        self.dtmf_jobs: dict[str, tuple[str, str, str, str]] = {}
        """Job-UUID of a ``bgapi uuid_send_dtmf`` → (callback id, leg, its uuid, digits)."""
        self.entries: dict[str, str] = {}
        self._flush_work = GEvent()  # set when there comes to be something to flush
        self.recorder = Recorder(store, self._flush_work.set)
        self.spool = Spool(settings.spool_dir, self.name)
        self.stopping = GEvent()
        self.draining = GEvent()
        self._resumed = GEvent()
        self._retry_originates: set[tuple[str, str]] = set()
        self._greenlets: list[gevent.Greenlet] = []
        self._ended: dict[str, Callback] = {}
        self._ended_order: deque[tuple[float, str]] = deque()
        self._late_kills: deque[tuple[float, str, Kill]] = deque()  # in due order
        self._clock_offset: float | None = None
        self._clock_at = 0.0
        self.metrics = WorkerMetrics(self)
        self.ops_server: WSGIServer | None = None
        ops_logs.add_leg_lookup(self._leg_uuids)

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Connect (in the background, with retries) and start every loop."""
        self._retry_redis(self.store.ensure_group)
        self._retry_redis(self._replay_spool)  # what it knew at its last stop, first
        self.link.start()
        loops: list[Callable[[], None]] = [self._job_loop, self.dispatcher.run, self.commander.run,
                                           self._control_loop,
                                           self._flush_loop, self._heartbeat_loop,
                                           self._sweep_loop, self._expire_loop, self._beat_loop,
                                           self._schedule_loop]
        self._greenlets = [gevent.spawn(loop) for loop in loops]
        if self.settings.worker_metrics_port:
            from .ops.endpoints import serve_worker

            self.ops_server = serve_worker(self, self.settings.worker_metrics_host,
                                           self.settings.worker_metrics_port)

    def drain(self, grace_s: float) -> None:
        """Stop claiming and starting callbacks; let the started ones finish for up to
        ``grace_s``. Claimed ones not started yet stay queued, for another worker (or this
        one's next run) to take."""
        self.draining.set()
        deadline = time.monotonic() + grace_s

        def started() -> int:
            return sum(1 for cb in self.live.values() if cb.state != "queued")

        while started() and time.monotonic() < deadline:
            gevent.sleep(0.1)
        if started():
            log.warning("worker %s: %d callbacks still live after %.0fs; leaving them to be "
                        "taken over", self.name, started(), grace_s)

    def stop(self) -> bool:
        """Stop every loop and write what is left; False when some of it had to be spooled."""
        clean = True
        self.draining.set()
        self.stopping.set()
        self._flush_work.set()  # a flush loop asleep with nothing to write wakes to stop
        gevent.joinall(self._greenlets, timeout=3)
        try:
            self.flush()
        except redis.RedisError as exc:
            log.error("worker %s: final flush failed: %s", self.name, exc)
            records, acks = self.recorder.pending()
            clean = False
            try:
                self.spool.save(records, acks)
            except OSError as err:
                log.error("worker %s: could not spool %d records to %s: %s", self.name,
                          len(records), self.spool.path, err)
        self.link.stop()
        try:
            self.store.forget_worker(self.name)
        except redis.RedisError as exc:
            log.warning("worker %s: heartbeat not removed (it expires): %s", self.name, exc)
        if self.ops_server is not None:
            self.ops_server.stop(timeout=1)
        ops_logs.remove_leg_lookup(self._leg_uuids)
        return clean

    def wait(self) -> None:
        self.stopping.wait()

    def _replay_spool(self) -> None:
        """Put back into Redis what a previous run of this worker could not write."""
        try:
            records, acks = self.spool.load()
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.error("worker %s: spool %s unreadable, left in place: %s", self.name,
                      self.spool.path, exc)
            return
        for cb in records:
            if self.store.restore(cb):
                log.warning("callback %s: %s (%s) written from the spool", cb.id, cb.state,
                            cb.outcome)
            else:
                log.info("callback %s: spooled copy not written, Redis holds a newer or seen "
                         "final state", cb.id)
        for entry in acks:
            self.store.ack(entry)
        if records or acks:
            self.spool.clear()

    def _retry_redis(self, fn: Callable[[], object]) -> None:
        while not self.stopping.is_set():
            try:
                fn()
                return
            except redis.RedisError as exc:
                log.warning("worker %s: redis unavailable: %s", self.name, exc)
                self.stopping.wait(REDIS_RETRY_S)

    # -- link -----------------------------------------------------------------------

    def _on_link_up(self, core_uuid: str) -> None:
        if not self._resumed.is_set():
            self._retry_redis(self.intake.resume_own_jobs)
            self._resumed.set()
        self.recovery.reconcile(core_uuid)
        gevent.spawn(self._beat)  # /readyz hears of it now (the link's greenlet never waits)

    def _on_link_down(self, reason: str) -> None:
        log.warning("worker %s: not claiming jobs until FreeSWITCH is back (%s)", self.name, reason)
        gevent.spawn(self._beat)

    # -- jobs -----------------------------------------------------------------------

    def _job_loop(self) -> None:
        while not self.draining.is_set():
            if not self.link.up.wait(timeout=1.0) or not self._resumed.wait(timeout=1.0):
                continue
            room = min(JOB_BATCH, self.dispatcher.room())
            if room <= 0:
                self.stopping.wait(ROOM_WAIT_S)  # a burst waits in Redis, queued, in order
                continue
            try:
                entries = self.store.read_jobs(self.name, room, JOB_BLOCK_MS)
            except redis.RedisError as exc:
                log.warning("worker %s: redis read failed: %s", self.name, exc)
                self.stopping.wait(REDIS_RETRY_S)
                continue
            except Exception:
                log.exception("worker %s: reading jobs failed", self.name)
                self.stopping.wait(REDIS_RETRY_S)
                continue
            self.intake.take_all(entries)

    def adopt(self, cb: Callback, entry_id: str | None) -> None:
        """``cb`` is live here now, as Redis holds it (just written by a compare-and-set)."""
        self.live[cb.id] = cb
        if entry_id:
            self.entries[cb.id] = entry_id
        for name, leg in cb.legs.items():
            self.by_uuid[leg.uuid] = self.by_job[leg.job_uuid] = (cb.id, name)

    def replace(self, cb: Callback) -> None:
        """``cb`` is the fresh copy of a live callback's record (read back from Redis)."""
        old = self.live.get(cb.id)
        if old is not None and old is not cb:
            self._forget(old)
        self.adopt(cb, None)
        if cb.job_id is not None and self.entries.get(cb.id) == cb.job_id:
            self.entries[cb.id] = cb.job_id  # one copy of the entry id per live callback
        self.recorder.replace(cb)

    def reindex(self, cb: Callback, name: str, uuid: str, job_uuid: str) -> None:
        """Leg ``name`` is about to be dialled again under new ids."""
        leg = cb.legs[name]
        self.by_uuid.pop(leg.uuid, None)
        self.by_job.pop(leg.job_uuid, None)
        self.by_uuid[uuid] = self.by_job[job_uuid] = (cb.id, name)

    def drop(self, callback_id: str) -> None:
        """A claimed callback that was not started (cancelled first, or no longer ours)."""
        cb = self.live.get(callback_id)
        if cb is not None:
            self._forget(cb)
        entry = self.entries.pop(callback_id, None)
        fresh = self.store.get(callback_id)
        if entry and (fresh is None or fresh.final):
            self.recorder.ack_later(entry)

    def resume_dialing(self, cb: Callback) -> None:
        """After adopting a started callback: legs it asked for but never sent are sent,
        a leg that waited to be dialled again after a throttle is dialled again."""
        for name, leg in cb.legs.items():
            if leg.dtmf_sent and not leg.dtmf_done and not cb.final:
                # sent before the restart (its result went to the worker that died): the
                # bridge waits no longer
                self.feed(cb, DtmfDone(name, self.clock()))
            if cb.final or leg.state != "dialing":
                continue
            if leg.awaiting_redial:
                self.dispatcher.redial_later(cb, name, 0.0)
            elif "dialed" not in leg.times:
                self.dispatcher.originate_later(cb, name)

    def _forget(self, cb: Callback) -> None:
        self.live.pop(cb.id, None)
        for leg in cb.legs.values():
            self.by_uuid.pop(leg.uuid, None)
            self.by_job.pop(leg.job_uuid, None)

    # -- the clock ------------------------------------------------------------------

    def clock(self) -> float:
        """Now, on FreeSWITCH's event clock as far as its events tell (never ahead of it)."""
        return time.time() + (self._clock_offset or 0.0)

    def _learn_clock(self, event_ts: float) -> None:
        """An event stamped ``event_ts`` by FreeSWITCH was made no later than now: the
        largest (event time − our time) seen is the closest bound on the clocks' offset."""
        now = time.time()
        sample = event_ts - now
        offset = self._clock_offset
        if offset is not None:
            offset -= CLOCK_DRIFT_S_PER_S * (now - self._clock_at)
        if offset is None or sample > offset:
            offset = sample
        self._clock_offset, self._clock_at = offset, now

    # -- background duties ----------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        """Keep our jobs ours (reset their idle time); take over those of dead workers."""
        period = max(0.5, self.settings.reclaim_idle_s / 3)
        while not self.stopping.wait(period):
            try:
                self.store.touch(self.name, list(self.entries.values()))
                if not self.draining.is_set() and self.link.up.is_set():
                    self.intake.take_over_stale_jobs()
            except redis.RedisError as exc:
                log.warning("worker %s: heartbeat failed: %s", self.name, exc)

    def _beat(self) -> None:
        """Say in Redis that this worker lives, and whether its event socket is up (what the
        API's /readyz reads); expires after heartbeat_ttl_s."""
        try:
            self.store.heartbeat(self.name, self.link.node, self.link.up.is_set(),
                                 self.settings.heartbeat_ttl_s)
        except redis.RedisError as exc:
            log.warning("worker %s: heartbeat failed: %s", self.name, exc)

    def _beat_loop(self) -> None:
        self._beat()
        while not self.stopping.wait(self.settings.heartbeat_ttl_s / 3):
            self._beat()

    def _leg_uuids(self, callback_id: str) -> dict[str, str] | None:
        """The legs' UUIDs of a callback this worker holds (for the log lines' fields)."""
        cb = self.live.get(callback_id) or self._ended.get(callback_id)
        return {name: leg.uuid for name, leg in cb.legs.items()} if cb is not None else None

    def _sweep_loop(self) -> None:
        while not self.stopping.wait(self.settings.sweep_interval_s):
            try:
                self.store.prune_indexes(time.time())
                if self.link.up.is_set():
                    self.recovery.sweep()
                    self._trim()  # the sweep's big reply must not stay in the heap
            except (FsctlError, redis.RedisError, ValueError) as exc:
                log.warning("worker %s: sweep failed: %s", self.name, exc)
            except Exception:
                log.exception("worker %s: sweep failed", self.name)  # the sweeper must not die

    def _expire_loop(self) -> None:
        """End callbacks no worker claimed within queue_timeout_s (no node connected or
        none with room): they are not dialled late. Any worker does it, connected or not."""
        while not self.stopping.wait(EXPIRE_EVERY_S):
            try:
                for cb in self.store.end_queued_before(
                        time.time() - self.settings.queue_timeout_s, lambda: Expire(self.clock())):
                    log.warning("callback %s: not dialled within queue_timeout_s (%ss): expired",
                                cb.id, self.settings.queue_timeout_s)
                    self.metrics.callback_finished(cb)  # (the shared counter: by the store)
            except redis.RedisError as exc:
                log.warning("worker %s: expiring queued callbacks failed: %s", self.name, exc)

    def _schedule_loop(self) -> None:
        """Scheduled callbacks get their job when their ``not_before`` comes (any worker,
        connected or not: the job goes to whichever node has room)."""
        while not self.stopping.is_set():
            wait = SCHEDULE_POLL_S
            try:
                if not self.draining.is_set():
                    # wall-clock time, as the requester's not_before is (the times a record
                    # shows are on FreeSWITCH's event clock, which fsctl only learns as a lower
                    # bound: the events' latency behind it)
                    ids, nxt = self.store.promote_due(time.time())
                    for callback_id in ids:
                        log.info("callback %s: its not_before has come: queued", callback_id)
                    if nxt is not None:
                        wait = min(wait, max(0.0, nxt - time.time()))
            except redis.RedisError as exc:
                log.warning("worker %s: scheduled callbacks not promoted: %s", self.name, exc)
            self.stopping.wait(wait)

    def _control_loop(self) -> None:
        # Read on from the stream's tail as it was at the start, by entry id (never "$"
        # again): a cancel announced while a read failed (Redis restarting) is read next.
        last: str | None = None
        while not self.stopping.is_set():
            try:
                if last is None:
                    last = self.store.control_tail()
                entries = self.store.read_control(last, 1000)
            except redis.RedisError as exc:
                log.warning("worker %s: control read failed: %s", self.name, exc)
                self.stopping.wait(REDIS_RETRY_S)
                continue
            for entry_id, fields in entries:
                last = entry_id
                if fields.get("cmd") == "cancel":
                    self.cancel(fields.get("callback_id", ""))

    def cancel(self, callback_id: str) -> None:
        """Cancel a callback live on this worker (others' are ignored; repeats are harmless)."""
        cb = self.live.get(callback_id)
        if cb is not None and not cb.final:
            log.info("callback %s: cancel", cb.id)
            self.feed(cb, Cancel(ts=self.clock()))

    # -- events ---------------------------------------------------------------------

    def on_event(self, ev: Event) -> None:
        fact = translate(ev)
        if fact is None:
            return
        if fact.ts > 0:
            self._learn_clock(fact.ts)
        if isinstance(fact, JobFact):
            if fact.job_uuid in self.dtmf_jobs:
                self._dtmf_sent(self.dtmf_jobs.pop(fact.job_uuid), fact)
                return
            ref = self.by_job.get(fact.job_uuid)
            cb = self.live.get(ref[0]) if ref else None
            if ref is not None and cb is not None:
                self.feed(cb, JobDone(leg=ref[1], ok=fact.ok, text=fact.text, ts=fact.ts))
            return
        self._on_channel(fact)

    def _dtmf_sent(self, job: tuple[str, str, str, str], fact: JobFact) -> None:
        """The result of a leg's ``bgapi uuid_send_dtmf``: on +OK the bridge waits until the
        digits have played (:func:`fsctl.commands.dtmf_play_s`); -ERR fails the callback."""
        callback_id, name, uuid, digits = job
        cb = self.live.get(callback_id)
        if cb is None or cb.final or cb.legs[name].uuid != uuid:
            return
        if not fact.ok:
            log.warning("callback %s: DTMF to leg %s refused: %s", cb.id, name, fact.text.strip())
            self.feed(cb, CommandFailed("send_dtmf", fact.text.strip(), fact.ts, name))
            return
        log.info("callback %s: DTMF %s queued to leg %s", cb.id, digits, name)
        gevent.spawn_later(dtmf_play_s(digits), self._dtmf_played, callback_id, name, uuid,
                           fact.text.strip())

    def _dtmf_played(self, callback_id: str, name: str, uuid: str, result: str) -> None:
        cb = self.live.get(callback_id)
        if cb is not None and not cb.final and cb.legs[name].uuid == uuid:
            self.feed(cb, DtmfDone(name, self.clock(), result))

    def _on_channel(self, fact: ChannelFact) -> None:
        ref = self.by_uuid.get(fact.uuid)
        if ref is None and fact.callback_id and fact.leg in ("A", "B"):
            ref = (fact.callback_id, fact.leg)
        if ref is None:
            return
        cb = self.live.get(ref[0]) or self._ended.get(ref[0])
        if cb is None or cb.legs[ref[1]].uuid != fact.uuid:
            return
        self.feed(cb, LegSignal(leg=ref[1], kind=fact.kind, ts=fact.ts, cause=fact.cause,
                                sip_status=fact.sip_status, disposition=fact.disposition,
                                record_ms=fact.record_ms, record_samples=fact.record_samples))

    def feed(self, cb: Callback, event: Input) -> None:
        """Apply one input to a live callback and carry out what it asks."""
        self.recorder.mark(cb)
        if isinstance(event, _ENDS_LEGS) or (isinstance(event, LegSignal)
                                             and event.kind == "hangup"):
            # a leg may hang up here: counted once, at the change (never per event scan)
            legs = [(leg, leg.state == "hungup", bool(leg.sip_status))
                    for leg in cb.legs.values()]
            actions = apply(cb, event)
            for leg, was_hungup, had_status in legs:
                if leg.state == "hungup" and not (was_hungup and had_status):
                    self.metrics.leg_changed(leg, was_hungup, had_status)
        else:
            actions = apply(cb, event)
        self.execute(cb, actions)
        if cb.state == "bridged":
            cb.history.pack()  # nothing changes until the hangup: kept small meanwhile

    # -- actions --------------------------------------------------------------------

    def execute(self, cb: Callback, actions: Iterable[Action]) -> None:
        for action in actions:
            try:
                self._do(cb, action)
            except (ESLError, InvalidValue, redis.RedisError) as exc:
                self.action_failed(cb, action, exc)
        self._retire_if_over(cb)

    def _retire_if_over(self, cb: Callback) -> None:
        """A final callback with no leg left is no longer live (its late events still count)."""
        if not cb.final or any(leg.alive for leg in cb.legs.values()) or cb.id not in self.live:
            return
        self._forget(cb)
        now = time.monotonic()
        self._ended[cb.id] = cb
        self._ended_order.append((now + ENDED_KEEP_S, cb.id))
        while self._ended_order and self._ended_order[0][0] < now:
            self._ended.pop(self._ended_order.popleft()[1], None)

    def action_failed(self, cb: Callback, action: Action, exc: Exception) -> None:
        """An action could not be carried out: the state machine hears of a failed originate
        or bridge (the others are only logged)."""
        log.error("callback %s: %s failed: %s", cb.id, type(action).__name__, exc)
        if isinstance(action, Originate):
            self.feed(cb, CommandFailed("originate", str(exc), self.clock(), action.leg))
        elif isinstance(action, Bridge):
            self.feed(cb, CommandFailed("bridge", str(exc), self.clock()))
        elif isinstance(action, SendDtmf):
            self.feed(cb, CommandFailed("send_dtmf", str(exc), self.clock(), action.leg))

    def _do(self, cb: Callback, action: Action) -> None:
        if isinstance(action, Originate):
            self.dispatcher.originate_later(cb, action.leg)
        elif isinstance(action, Retry):
            if action.why == "throttled":
                log.warning("callback %s: FreeSWITCH refused leg %s for capacity; dialling it "
                            "again in %ss", cb.id, action.leg, action.delay_s)
                self.metrics.throttled.inc()
            else:
                log.info("callback %s: leg %s failed (%s); its retry policy dials it again in "
                         "%ss", cb.id, action.leg, cb.legs[action.leg].hangup_cause,
                         action.delay_s)
            self.dispatcher.redial_later(cb, action.leg, action.delay_s)
        elif isinstance(action, Kill) and action.after_s > 0:
            self._late_kills.append((time.monotonic() + action.after_s, cb.id, action))
            self._flush_work.set()  # the flush loop checks them
        elif isinstance(action, Broadcast | SendDtmf | Bridge | Kill | Record):
            self.commander.later(cb, action)  # the event handler never waits for FreeSWITCH
        elif isinstance(action, Finished):
            log.info("callback %s: %s (%s)", cb.id, action.state, action.outcome)
            self.metrics.callback_finished(cb)
            self.recorder.count_outcome(outcome_field(cb.state, cb.outcome))
            if cb.dest_counted:
                cb.dest_counted = False  # saved with the final record
                self.store.release_destinations(cb)
            entry = self.entries.pop(cb.id, None)
            if entry:
                self.recorder.ack_later(entry)

    def send_originates(self, batch: list[tuple[Callback, str]]) -> None:
        """Send these legs' originates now (the dispatcher's slots): their records first, in
        one write, then the commands, in one write; a failure ends only its own call."""
        ready: list[tuple[Callback, str, str]] = []
        for cb, name in batch:
            try:
                command = self.originate_command(cb, name)
            except InvalidValue as exc:
                self.action_failed(cb, Originate(name), exc)
                self._retire_if_over(cb)
                continue
            self.recorder.mark(cb)
            stamp(cb.legs[name], "dialed", self.clock())
            ready.append((cb, name, command))
        if not ready:
            return
        # Durable before dialled: a worker that dies now leaves records saying "dialing",
        # so whoever adopts a callback checks the channel instead of dialling again.
        try:
            self.recorder.save_now_many([cb for cb, _, _ in ready])
        except redis.RedisError as exc:
            # Not durable, so not dialled yet: retried as soon as Redis answers again (an
            # answered leg keeps hearing ringback; its park_timeout bounds the wait).
            for cb, name, _ in ready:
                self._retry_originates.add((cb.id, name))
                log.warning("callback %s: leg %s not dialled yet, Redis unavailable: %s",
                            cb.id, name, exc)
            self._flush_work.set()  # the flush loop retries them
            return
        for cb, name, _ in ready:
            self._retry_originates.discard((cb.id, name))
        replies: list[str | ESLError] | list[FsctlError]
        try:
            replies = self.link.bgapi_many([(command, cb.legs[name].job_uuid)
                                            for cb, name, command in ready])
        except ESLNotSent as exc:
            # Never written (FreeSWITCH went away meanwhile): dialled once it is back (the
            # dispatcher waits for the link), as for Redis above; never dialled twice.
            for cb, name, _ in ready:
                self._retry_originates.add((cb.id, name))
                log.warning("callback %s: leg %s not dialled yet, FreeSWITCH unavailable: %s",
                            cb.id, name, exc)
            self._flush_work.set()  # the flush loop retries them
            return
        except ESLDisconnected as exc:
            # Written, and the connection dropped before the reply: FreeSWITCH may or may
            # not have the command. Not a failed dial: the reconcile after the reconnect (or
            # the sweeper, past the dial grace) finds the channel or declares the leg lost.
            for cb, name, _ in ready:
                log.warning("callback %s: leg %s's originate was cut off by a disconnect: "
                            "left to the reconcile: %s", cb.id, name, exc)
            return
        except (ESLError, InvalidValue) as exc:
            replies = [exc] * len(ready)
        for (cb, name, _), reply in zip(ready, replies, strict=True):
            if isinstance(reply, FsctlError):
                self.action_failed(cb, Originate(name), reply)
            else:
                log.info("callback %s: originate leg %s (%s)", cb.id, name, cb.legs[name].uuid)
            self._retire_if_over(cb)

    def originate_command(self, cb: Callback, name: str) -> str:
        """Leg ``name``'s originate command (built from validated values; raises
        InvalidValue for one that is not allowed)."""
        leg, peer = cb.legs[name], cb.legs[other(name)]
        dial = commands.Dial(
            uuid=leg.uuid, callback_id=cb.id, leg=name, to=leg.to,
            caller_id_number=leg.from_, caller_id_name=leg.caller_id_name,
            route=self.settings.route(leg.route), ring_timeout_s=leg.ring_timeout_s,
            # the other leg's dialling may also be put off by throttle retries, and the
            # bridge waits for either leg's digits to play out
            park_timeout_s=peer.ring_timeout_s + self.settings.park_margin_s
            + int(THROTTLE_RETRY_TOTAL_S + 0.999)
            + sum(math.ceil(dtmf_play_s(x.send_dtmf)) for x in (leg, peer) if x.send_dtmf),
            record_stereo=name == "A" and cb.record == "stereo",
        )
        return commands.originate(dial)

    # -- persistence ----------------------------------------------------------------

    def _flush_loop(self) -> None:
        while not self.stopping.is_set():
            if self.recorder.idle and not (self._retry_originates or self._late_kills):
                # nothing to do: no wake-up every FLUSH_INTERVAL_S (an idle worker's CPU)
                self._flush_work.clear()
                if self.recorder.idle:
                    self._flush_work.wait(FLUSH_IDLE_WAIT_S)
            if self.stopping.wait(FLUSH_INTERVAL_S):
                break
            try:
                self.flush()
                self._retry_pending_originates()
                self._late_kill_survivors()
            except redis.RedisError as exc:
                log.warning("worker %s: redis write failed, will retry: %s", self.name, exc)
                self.stopping.wait(REDIS_RETRY_S)

    def _retry_pending_originates(self) -> None:
        for cb_id, name in list(self._retry_originates):
            self._retry_originates.discard((cb_id, name))
            cb = self.live.get(cb_id)
            if cb is None or cb.final or cb.legs[name].state != "dialing" \
                    or cb.legs[name].job_result is not None:
                continue
            self.execute(cb, [Originate(name)])

    def _late_kill_survivors(self) -> None:
        """Kill the legs a ``Kill(after_s=…)`` left to FreeSWITCH that are still up."""
        now = time.monotonic()
        while self._late_kills and self._late_kills[0][0] <= now:
            _due, cb_id, action = self._late_kills.popleft()
            cb = self.live.get(cb_id) or self._ended.get(cb_id)
            if cb is None or cb.legs[action.leg].uuid != action.uuid \
                    or cb.legs[action.leg].state == "hungup":
                continue
            log.warning("callback %s: leg %s still up %.0fs after its bridge ended: killing it",
                        cb.id, action.leg, action.after_s)
            self.execute(cb, [Kill(action.leg, action.uuid, action.cause)])

    def flush(self) -> None:
        """Write every changed record (and ack finished jobs) in one go."""
        self.recorder.flush()
