"""Which status events a callback record has reached. Pure.

An event is a milestone of the record, not a transition seen once: ``queued`` (always),
``ringing`` and ``answered`` per leg (their ``times``), ``bridged``, and the final state.
Whoever writes a record (API, worker, a worker that adopted it) can derive the same set, and
the Redis outbox enqueues each one once per callback (see :mod:`fsctl.webhooks.queue`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import Callback

RESULTS = ("delivered", "retried", "dead", "gone")
"""How an attempt settles: delivered, retried (tried again later), dead (dead-lettered),
gone (the URL answered 410: no more deliveries there for that callback)."""

EVENTS = ("queued", "ringing", "answered", "bridged", "completed", "failed", "cancelled")
"""Event names a request may subscribe to (``status_events``); all of them by default."""
LEG_EVENTS = frozenset({"ringing", "answered"})
"""Events sent once per leg (the delivery names the leg)."""
_RANK = {name: i for i, name in enumerate(EVENTS)}


@dataclass(frozen=True, slots=True)
class Milestone:
    """One event a callback reached: ``key`` is unique per callback (``answered.A``)."""

    event: str
    ts: float
    leg: str | None = None

    @property
    def key(self) -> str:
        return f"{self.event}.{self.leg}" if self.leg else self.event


def milestones(cb: Callback) -> list[Milestone]:
    """Every event ``cb`` has reached, in the order they happened (the final one last).

    Times are the record's: FreeSWITCH's event clock for leg events, ``created_at`` for
    ``queued``, ``ended_at`` for the final state.
    """
    out = [Milestone("queued", cb.created_at)]
    bridged: list[float] = []
    for name in sorted(cb.legs):
        times = cb.legs[name].times
        ringing = [times[s] for s in ("ringing", "early") if s in times]
        if ringing:
            out.append(Milestone("ringing", min(ringing), name))
        if "answered" in times:
            out.append(Milestone("answered", times["answered"], name))
        if "bridged" in times:
            bridged.append(times["bridged"])
    if bridged:
        out.append(Milestone("bridged", min(bridged)))
    out.sort(key=lambda m: (m.ts, _RANK[m.event], m.leg or ""))
    if cb.final:
        out.append(Milestone(cb.state, cb.ended_at if cb.ended_at is not None else cb.updated_at))
    return out


def subscribed(cb: Callback) -> list[Milestone]:
    """The milestones ``cb``'s request asked to hear of (none without a status_callback)."""
    if not cb.status_callback:
        return []
    wanted = set(cb.status_events) if cb.status_events else set(EVENTS)
    return [m for m in milestones(cb) if m.event in wanted]
