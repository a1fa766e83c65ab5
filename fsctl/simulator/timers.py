"""The simulator's channel timers: one greenlet and a heap, not a greenlet per timer.

FreeSWITCH runs a channel's timeouts on its own threads; the simulator models them as
callbacks due at a time. Thousands of channels each hold a few (answer, ring timeout,
talk, park_timeout), so a greenlet apiece cost more than everything else the simulator
does for a call. A timer that is cancelled stays in the heap, marked, until it is due
(or until cancelled ones are half the heap, which is then rebuilt without them).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event

log = logging.getLogger(__name__)

IDLE_WAIT_S = 60.0
"""Longest the timer greenlet sleeps with nothing due (a new earlier timer wakes it)."""
SLACK_S = 0.001
"""How late a timer may run: the timer greenlet wakes this long after the first due timer,
so that timers due within a millisecond of each other (both legs of a call answer, their
originates return) run in one wake-up and their events go out in one write."""
BATCH_S = 0.002
"""Longest the timer greenlet runs due timers before it lets the connections' greenlets
run: timers due together (both legs of a call answer) go out in one write, yet a burst
of due timers cannot hold the commands back for long."""


COMPACT_MIN = 4096
"""Cancelled timers in the heap before it may be rebuilt without them (when they are half
of it): each call leaves a few long ones (originate and park timeouts, sched_hangup)."""


class Timer:
    """One pending call; ``cancel()`` makes sure it never runs."""

    __slots__ = ("args", "due", "fn", "queue")

    def __init__(self, due: float, fn: Callable[..., None], args: tuple[Any, ...],
                 queue: TimerQueue) -> None:
        self.due = due
        self.fn: Callable[..., None] | None = fn
        self.args = args
        self.queue: TimerQueue | None = queue

    def cancel(self) -> None:
        if self.fn is not None:
            self.fn = None
            self.args = ()
            if self.queue is not None:
                self.queue.cancelled += 1
                self.queue = None

    @property
    def pending(self) -> bool:
        return self.fn is not None


class TimerQueue:
    """Runs each timer's function at its time, in order of time then of creation."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []  # (due, creation order, timer)
        self._seq = itertools.count()
        self._wake = Event()
        self._runner: gevent.Greenlet[Any, Any] | None = None
        self.cancelled = 0
        """Cancelled timers still in the heap."""

    def call_later(self, delay_s: float, fn: Callable[..., None], *args: Any) -> Timer:
        due = time.monotonic() + max(0.0, delay_s)
        timer = Timer(due, fn, args, self)
        heap = self._heap
        if self.cancelled > COMPACT_MIN and 2 * self.cancelled > len(heap):
            self._compact()
        heapq.heappush(heap, (due, next(self._seq), timer))
        if heap[0][2] is timer:
            self._wake.set()
        if self._runner is None:
            self._runner = gevent.spawn(self._run)
        return timer

    def _compact(self) -> None:
        """Drop the cancelled timers from the heap."""
        self._heap[:] = [entry for entry in self._heap if entry[2].fn is not None]
        heapq.heapify(self._heap)
        self.cancelled = 0

    def clear(self) -> None:
        """Cancel every timer and stop the greenlet (the next timer starts it again)."""
        for _, _, timer in self._heap:
            timer.cancel()
        self._heap.clear()
        self.cancelled = 0
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.kill(block=False)

    def _run(self) -> None:
        heap, wake, clock = self._heap, self._wake, time.monotonic
        batch_end = 0.0
        while True:
            now = clock()
            wait = heap[0][0] - now if heap else IDLE_WAIT_S
            if wait > 0:
                wait += SLACK_S
                wake.clear()
                wake.wait(wait)
                batch_end = clock() + BATCH_S
                continue
            if now > batch_end:
                gevent.sleep(0)  # due timers must not starve the connections' greenlets
                batch_end = clock() + BATCH_S
                continue
            timer = heapq.heappop(heap)[2]
            fn, args = timer.fn, timer.args
            if fn is None:
                self.cancelled -= 1
                continue
            timer.queue = None  # it runs: no longer counted among the cancelled ones
            timer.cancel()
            try:
                fn(*args)
            except Exception:
                log.exception("simulator timer %s failed", getattr(fn, "__name__", fn))
