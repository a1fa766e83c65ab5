"""Coalesced writes of the worker's records to Redis.

Every change marks its callback dirty (remembering the state last written, so the
state indexes move correctly); a flush writes all of them and acknowledges the jobs of
finished callbacks in one go. A failed flush keeps everything for the next one.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from .model import Callback
from .store import Store


class Recorder:
    """The records a worker changed but has not written yet, and the jobs to acknowledge."""

    def __init__(self, store: Store, on_work: Callable[[], None] = lambda: None) -> None:
        """``on_work()`` is called whenever there comes to be something to write."""
        self.store = store
        self._on_work = on_work
        self._dirty: dict[str, tuple[Callback, str]] = {}
        self._to_ack: list[str] = []
        self._outcomes: dict[str, int] = {}  # fsctl.ops: finished callbacks, for the counters

    @property
    def idle(self) -> bool:
        """Nothing to write or acknowledge."""
        return not (self._dirty or self._to_ack or self._outcomes)

    def mark(self, cb: Callback) -> None:
        """``cb`` is about to change (or just did, from the state it was last written in)."""
        if not self._dirty:
            self._on_work()
        self._dirty.setdefault(cb.id, (cb, cb.state))

    def replace(self, cb: Callback) -> None:
        """``cb`` was just read back and written by a compare-and-set: any older copy
        waiting here is stale, and is not written (the next change marks ``cb`` again)."""
        self._dirty.pop(cb.id, None)

    def ack_later(self, entry_id: str) -> None:
        self._to_ack.append(entry_id)
        self._on_work()

    def count_outcome(self, field: str) -> None:
        """One more callback ended so (``store.outcome_field``): added to the shared counters
        with the next flush (lost, like the records it goes with, only if they are)."""
        self._outcomes[field] = self._outcomes.get(field, 0) + 1
        self._on_work()

    def save_now_many(self, cbs: list[Callback]) -> None:
        """Write these records synchronously, in one transaction (before their originates);
        raises RedisError (and keeps them to be written later)."""
        items = {cb.id: self._dirty.pop(cb.id, (cb, cb.state)) for cb in cbs}
        try:
            self.store.save_many(list(items.values()))
        except redis.RedisError:
            for cb_id, item in items.items():
                self._dirty.setdefault(cb_id, item)
            self._on_work()
            raise

    def pending(self) -> tuple[list[Callback], list[str]]:
        """What is still to be written and acknowledged (for the spool, at stop)."""
        return [cb for cb, _ in self._dirty.values()], list(self._to_ack)

    def flush(self) -> None:
        """Write every changed record and acknowledge finished jobs; raises RedisError."""
        if not self._dirty and not self._to_ack and not self._outcomes:
            return
        dirty, self._dirty = self._dirty, {}
        acks, self._to_ack = self._to_ack, []
        outcomes, self._outcomes = self._outcomes, {}
        try:
            self.store.save_many(list(dirty.values()), acks, outcomes)
        except redis.RedisError:
            for cb_id, item in dirty.items():
                self._dirty.setdefault(cb_id, item)
            self._to_ack.extend(acks)
            for field, n in outcomes.items():
                self._outcomes[field] = self._outcomes.get(field, 0) + n
            self._on_work()
            raise
