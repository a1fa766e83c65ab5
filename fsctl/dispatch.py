"""Dispatch: every originate a worker sends goes through here, paced under its node's
limits (FreeSWITCH counts each leg against sessions-per-second and max-sessions).

Two queues feed one dispatcher greenlet, one originate per pacer slot:

1. legs of callbacks already under way (the second leg of a sequential callback, the
   other leg of a simultaneous one, a leg dialled again after a throttle): someone may
   already be waiting on the line, so these always go first;
2. callbacks this worker claimed: each is started (a compare-and-set on its record, so a
   cancel or an expiry that got there first wins) when its first originate can go.

The job loop claims new callbacks only while the pacer and the node's session budget
have room for them, so a burst waits in Redis as ``queued`` (in order, for whichever node
has room) rather than in one worker's memory; one that waited longer than
``queue_timeout_s`` ends ``expired`` instead of being dialled late.
"""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent
import redis
from gevent.event import Event as GEvent

from .callback import Action, Cancel, Expire, Redial, Start, apply
from .capacity import SESSIONS_PER_CALLBACK, Budget, Pacer, budget, parse_status
from .commands import uuid_exists
from .errors import ESLError
from .model import Callback

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger(__name__)

INTAKE_HORIZON_S = 0.25
"""New callbacks are claimed for the originate slots of this coming stretch of time only."""
REDIS_RETRY_S = 0.5
"""Pause before starting a callback again after Redis failed to answer."""
IDLE_WAIT_S = 1.0
"""Longest the dispatcher sleeps with nothing to send (it is woken when work arrives)."""
LEG_BATCH = 64
"""Most originates sent together: their records in one Redis write, their commands in one
ESL write (only legs already due share a batch: the pacing is the same)."""
START_BATCH = 64
"""Most claimed callbacks started in one Redis round trip."""
BATCH_EARLY_S = 0.002
"""A leg may go this much before its even slot, to share the write of the one before."""


class Dispatcher:
    """The worker's paced originates (I/O through the worker's link and store)."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.pacer = Pacer(1.0)
        self.budget: Budget | None = None
        """What this worker may use of its node; None until the node's status is known."""
        self.others = 0
        """Channels on the node that are not this worker's (at the last status)."""
        self.sent = 0
        """Originates sent (for the logs, the metrics and the benchmark)."""
        self.paced = 0
        """Times an originate waited for its pacer slot (the metrics)."""
        self._legs: deque[tuple[str, str, str]] = deque()
        self._starts: deque[str] = deque()
        self._start_known: dict[str, bytes | str | None] = {}  # the record as claimed
        self._queued: set[tuple[str, str, str]] = set()
        self._work = GEvent()

    # -- the node's limits -----------------------------------------------------------

    def on_status(self, text: str) -> None:
        """Learn the node's limits and load from an ``api status`` reply."""
        status = parse_status(text)
        if status is None:
            return
        s = self.w.settings
        new = budget(status, s.capacity_headroom, s.originates_per_s_max or None,
                     s.sessions_max or None)
        if new != self.budget:
            log.info("FreeSWITCH %s: %s sessions/s, %s sessions at most; this worker uses up "
                     "to %s originates/s and %s sessions", self.w.link.node,
                     status.sessions_per_second_max, status.max_sessions, new.originates_per_s,
                     new.max_sessions)
            self.budget = new
            self.pacer.set_rate(new.originates_per_s)
        self.others = max(0, status.sessions - self._own_channels())

    def _own_channels(self) -> int:
        return sum(1 for cb in self.w.live.values() for leg in cb.legs.values()
                   if leg.alive and "dialed" in leg.times)

    def room(self) -> int:
        """How many more callbacks this worker may claim now."""
        if self.budget is None:
            return 0
        sessions = (self.budget.max_sessions - self.others
                    - SESSIONS_PER_CALLBACK * len(self.w.live)) // SESSIONS_PER_CALLBACK
        slots = (self.pacer.backlog(time.monotonic(), INTAKE_HORIZON_S)
                 - len(self._legs) - len(self._starts))
        return max(0, min(sessions, slots))

    # -- queues ----------------------------------------------------------------------

    def start_later(self, callback_id: str, known: bytes | str | None = None) -> None:
        """A claimed, still queued callback: start it when its first originate can go
        (``known``: its record as the claim wrote it, so the start needs no read)."""
        self._starts.append(callback_id)
        self._start_known[callback_id] = known
        self._work.set()

    def originate_later(self, cb: Callback, name: str) -> None:
        """Dial leg ``name`` at the next free slot (before any new callback)."""
        key = (cb.id, name, cb.legs[name].uuid)
        if key not in self._queued:
            self._queued.add(key)
            self._legs.append(key)
            self._work.set()

    def redial_later(self, cb: Callback, name: str, delay_s: float) -> None:
        gevent.spawn_later(delay_s, self._redial, cb.id, name)

    def _redial(self, callback_id: str, name: str) -> None:
        cb = self.w.live.get(callback_id)
        leg = cb.legs[name] if cb is not None else None
        if cb is None or leg is None or cb.final or not leg.awaiting_redial:
            return  # cancelled or ended meanwhile
        # FreeSWITCH gives the same -ERR for an origination_uuid already in use: a leg whose
        # channel exists was not refused for capacity, and is never dialled a second time.
        try:
            exists = self.w.link.api(uuid_exists(leg.uuid)).strip() == "true"
        except ESLError as exc:
            log.warning("callback %s: cannot check leg %s before dialling it again: %s", cb.id,
                        name, exc)
            self.redial_later(cb, name, 1.0)
            return
        if exists and leg.retry_wait:
            self.redial_later(cb, name, 1.0)  # the failed attempt's channel is going away
            return
        if exists:
            log.error("callback %s: leg %s's originate was refused but its channel %s exists: "
                      "not dialled again", cb.id, name, leg.uuid)
            return
        new_uuid, new_job = str(uuidlib.uuid4()), str(uuidlib.uuid4())
        self.w.reindex(cb, name, new_uuid, new_job)
        log.info("callback %s: dialling leg %s again (attempt %d) after %s", cb.id, name,
                 leg.attempts + 2, f"it failed ({leg.hangup_cause})" if leg.retry_wait
                 else "FreeSWITCH refused it for capacity")
        self.w.feed(cb, Redial(name, new_uuid, new_job, self.w.clock()))

    # -- the dispatcher greenlet -----------------------------------------------------

    def run(self) -> None:
        w = self.w
        while not w.stopping.is_set():
            starts = self._starts if not w.draining.is_set() else ()  # no new call when draining
            if not (self._legs or starts):
                self._work.clear()
                self._work.wait(IDLE_WAIT_S)
                continue
            if not w.link.up.wait(IDLE_WAIT_S):
                continue
            delay = self.pacer.delay(time.monotonic())
            if delay > 0:
                self.paced += 1
                w.stopping.wait(delay)
                continue
            try:
                if self._legs:
                    self._send_due_legs()
                else:
                    self._start_next()  # (not draining: checked above)
            except Exception:
                log.exception("worker %s: dispatch failed", w.name)  # the dispatcher must live

    def _send_due_legs(self) -> None:
        """Send every leg due now (up to LEG_BATCH), each in its pacer slot, in one go."""
        now = time.monotonic()
        batch: list[tuple[Callback, str]] = []
        while self._legs and len(batch) < LEG_BATCH and self.pacer.delay(now) <= BATCH_EARLY_S:
            key = self._legs.popleft()
            self._queued.discard(key)
            callback_id, name, leg_uuid = key
            cb = self.w.live.get(callback_id)
            if cb is None or cb.final or cb.legs[name].uuid != leg_uuid \
                    or cb.legs[name].state != "dialing":
                continue  # cancelled or ended while it waited
            self.pacer.take(now)
            self.sent += 1
            batch.append((cb, name))
        if batch:
            self.w.send_originates(batch)

    def _start_next(self) -> None:
        """Start the claimed callbacks waiting (up to START_BATCH), in one Redis round trip."""
        ids = [self._starts.popleft() for _ in range(min(START_BATCH, len(self._starts)))]
        try:
            self._start(ids)
        except redis.RedisError as exc:
            # not started: they go first again once Redis answers (they are still queued there)
            log.warning("callbacks %s: not started yet, Redis unavailable: %s",
                        ", ".join(ids), exc)
            self._starts.extendleft(reversed(ids))
            self.w.stopping.wait(REDIS_RETRY_S)

    def _start(self, callback_ids: list[str]) -> None:
        """Start claimed callbacks: Start (or Expire) applied to each record atomically."""
        w = self.w
        items: list[tuple[str, Callable[[Callback], bool], bytes | str | None]] = []
        plans: list[tuple[Callback, StartPlan]] = []
        for callback_id in callback_ids:
            known = self._start_known.pop(callback_id, None)
            mine = w.live.get(callback_id)
            if mine is None or mine.final:
                continue  # ended here meanwhile (a cancel this worker heard; written later)
            plan = StartPlan(w)
            items.append((callback_id, plan.change, known))
            plans.append((mine, plan))
        if not items:
            return
        results = w.store.swap_many(items)
        for (callback_id, _change, _known), (mine, plan), (fresh, _raw) in zip(
                items, plans, results, strict=True):
            if fresh is None or not plan.actions:
                w.drop(callback_id)  # cancelled (or gone) before it was dialled
                continue
            if mine.final:
                # Cancelled here while its start was being written (the API saw it started
                # and asked): the started record is cancelled in its turn, nothing dialled.
                w.replace(fresh)
                w.feed(fresh, Cancel(ts=w.clock()))
                continue
            self.started(fresh, plan)

    def start_now(self, count: int) -> list[bool]:
        """Which of ``count`` callbacks being claimed may be started in their claim's own
        write: as many as the pacer has slots free for now, none while legs of callbacks
        under way or claimed callbacks wait (they go first). Their originates go through
        the dispatcher as any other (each record written "dialed" before its command)."""
        if self._legs or self._starts or self.w.draining.is_set():
            return [False] * count
        free = self.pacer.free(time.monotonic(), BATCH_EARLY_S)
        return [i < free for i in range(count)]

    def started(self, fresh: Callback, plan: StartPlan) -> None:
        """``fresh`` was just written started (or expired) by ``plan``'s change: carry out
        what it asked."""
        w = self.w
        if fresh.outcome == "expired":
            log.warning("callback %s: waited %.1fs (queue_timeout_s %ss, not_after %s): "
                        "expired", fresh.id,
                        w.clock() - max(fresh.created_at, fresh.not_before or 0.0),
                        w.settings.queue_timeout_s, fresh.not_after)
        w.replace(fresh)
        w.execute(fresh, plan.actions)


class StartPlan:
    """The compare-and-set change that starts a queued callback of this worker's (or
    expires it, queued too long): what it asks for goes to :attr:`actions`."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.actions: list[Action] = []

    def change(self, cb: Callback) -> bool:
        w = self.w
        self.actions.clear()
        if cb.state != "queued" or cb.worker != w.name:
            return False
        now = w.clock()
        waited = now - max(cb.created_at, cb.not_before or 0.0)
        if waited > w.settings.queue_timeout_s or (cb.not_after is not None
                                                    and now > cb.not_after):
            self.actions.extend(apply(cb, Expire(now)))
            return True
        self.actions.extend(apply(cb, Start(now)))
        return True
