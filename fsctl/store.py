"""The only place that knows Redis keys: callback records, indexes, the job queue.

Keys (``<p>`` is the prefix, ``fsctl`` by default):

- ``<p>:callback:<id>``   the callback record (JSON string)
- ``<p>:callbacks``       every callback id, scored by creation time (zset)
- ``<p>:state:<state>``   callback ids in that state, scored by creation time (zset)
- ``<p>:jobs``            the job queue (stream; consumer group ``workers``)
- ``<p>:jobs:dead``       invalid jobs with the payload and the reason (stream)
- ``<p>:job:<entry-id>``  which callback a redis-cli job became (string)
- ``<p>:control``         cancel requests for live callbacks (stream)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import redis

from .errors import StoreError
from .model import CALLBACK_STATES, Callback

log = logging.getLogger(__name__)

GROUP = "workers"
"""The consumer group every worker reads jobs through."""
CONTROL_MAXLEN = 10_000
"""Approximate length the control stream is trimmed to."""
DEAD_MAXLEN = 100_000
"""Approximate length the dead-letter stream is trimmed to."""


class Keys:
    """Every Redis key fsctl uses, built from one prefix."""

    def __init__(self, prefix: str = "fsctl") -> None:
        self.prefix = prefix
        self.callbacks = f"{prefix}:callbacks"
        self.jobs = f"{prefix}:jobs"
        self.dead = f"{prefix}:jobs:dead"
        self.control = f"{prefix}:control"

    def callback(self, callback_id: str) -> str:
        return f"{self.prefix}:callback:{callback_id}"

    def state(self, state: str) -> str:
        return f"{self.prefix}:state:{state}"

    def job(self, entry_id: str) -> str:
        return f"{self.prefix}:job:{entry_id}"


def _dump(cb: Callback) -> str:
    return json.dumps(cb.to_dict(), separators=(",", ":"))


def connect(url: str) -> redis.Redis:
    """A Redis client with bounded waits (decode_responses: str in, str out)."""
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5,
                                socket_connect_timeout=3, health_check_interval=15)


class Store:
    """Callback records and jobs in Redis."""

    def __init__(self, client: redis.Redis, prefix: str = "fsctl", record_ttl_s: int = 7 * 86400):
        self.r = client
        self.keys = Keys(prefix)
        self.record_ttl_s = record_ttl_s

    # -- records ------------------------------------------------------------------

    def create(self, cb: Callback) -> str:
        """Store a new queued callback and enqueue its job atomically; returns the entry id."""
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.keys.callback(cb.id), _dump(cb), nx=True)
        pipe.zadd(self.keys.callbacks, {cb.id: cb.created_at})
        pipe.zadd(self.keys.state(cb.state), {cb.id: cb.created_at})
        pipe.xadd(self.keys.jobs, {"callback_id": cb.id})
        try:
            created, _, _, entry_id = pipe.execute()
        except redis.RedisError as exc:
            raise StoreError(f"could not store callback {cb.id}: {exc}") from exc
        if not created:
            raise StoreError(f"callback {cb.id} exists already")
        return entry_id

    def get(self, callback_id: str) -> Callback | None:
        raw = self.r.get(self.keys.callback(callback_id))
        return Callback.from_dict(json.loads(raw)) if raw else None

    def save(self, cb: Callback, previous_state: str | None = None) -> None:
        """Write a record; move it between state indexes when its state changed."""
        self.save_many([(cb, previous_state)])

    def save_many(self, items: list[tuple[Callback, str | None]]) -> None:
        """Write records in one transaction, each moved between state indexes if needed."""
        pipe = self.r.pipeline(transaction=True)
        for cb, previous_state in items:
            self._queue_save(pipe, cb, previous_state)
        pipe.execute()

    def _queue_save(self, pipe: Any, cb: Callback, previous_state: str | None) -> None:
        pipe.set(self.keys.callback(cb.id), _dump(cb), ex=self.record_ttl_s if cb.final else None)
        if previous_state is not None and previous_state != cb.state:
            pipe.zrem(self.keys.state(previous_state), cb.id)
            pipe.zadd(self.keys.state(cb.state), {cb.id: cb.created_at})

    def update_if(self, callback_id: str, change: Callable[[Callback], bool]) -> Callback | None:
        """Compare-and-set: read, let ``change`` edit (return True to write), write if untouched."""
        key = self.keys.callback(callback_id)
        while True:
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if not raw:
                        return None
                    cb = Callback.from_dict(json.loads(raw))
                    before = cb.state
                    if not change(cb):
                        return cb
                    pipe.multi()
                    self._queue_save(pipe, cb, before)
                    pipe.execute()
                    return cb
                except redis.WatchError:
                    continue

    def list(self, state: str | None = None, limit: int = 50,
             before: float | None = None, owner: str | None = None) -> list[Callback]:
        """Newest first; ``before`` is the created_at of the last item of the previous page."""
        if state is not None and state not in CALLBACK_STATES:
            raise StoreError(f"unknown state {state!r}")
        index = self.keys.state(state) if state else self.keys.callbacks
        hi = f"({before}" if before is not None else "+inf"
        out: list[Callback] = []
        offset = 0
        while len(out) < limit:
            ids = self.r.zrevrangebyscore(index, hi, "-inf", start=offset, num=limit * 2)
            if not ids:
                break
            offset += len(ids)
            raws = self.r.mget([self.keys.callback(i) for i in ids])
            for raw in raws:
                if not raw:
                    continue
                cb = Callback.from_dict(json.loads(raw))
                if owner is None or cb.owner == owner:
                    out.append(cb)
                    if len(out) == limit:
                        break
        return out

    # -- jobs ---------------------------------------------------------------------

    def ensure_group(self) -> None:
        try:
            self.r.xgroup_create(self.keys.jobs, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_jobs(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, dict[str, str]]]:
        reply = self.r.xreadgroup(GROUP, consumer, {self.keys.jobs: ">"}, count=count, block=block_ms)
        if not reply:
            return []
        return [(entry_id, fields) for _stream, entries in reply for entry_id, fields in entries]

    def ack(self, entry_id: str) -> None:
        self.r.xack(self.keys.jobs, GROUP, entry_id)

    def dead_letter(self, entry_id: str, fields: dict[str, Any], reason: str) -> None:
        """Move an invalid job aside with its payload and the reason; never drop it."""
        pipe = self.r.pipeline(transaction=True)
        pipe.xadd(self.keys.dead, {"entry_id": entry_id, "payload": json.dumps(fields),
                                   "reason": reason}, maxlen=DEAD_MAXLEN, approximate=True)
        pipe.xack(self.keys.jobs, GROUP, entry_id)
        pipe.execute()

    def create_from_job(self, cb: Callback, entry_id: str) -> bool:
        """Store the callback a redis-cli job became (idempotent on redelivery)."""
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.keys.callback(cb.id), _dump(cb), nx=True)
        pipe.set(self.keys.job(entry_id), cb.id, ex=self.record_ttl_s)
        pipe.zadd(self.keys.callbacks, {cb.id: cb.created_at}, nx=True)
        pipe.zadd(self.keys.state(cb.state), {cb.id: cb.created_at}, nx=True)
        created, *_ = pipe.execute()
        return bool(created)

    # -- control ------------------------------------------------------------------

    def request_cancel(self, callback_id: str) -> None:
        self.r.xadd(self.keys.control, {"cmd": "cancel", "callback_id": callback_id},
                    maxlen=CONTROL_MAXLEN, approximate=True)

    def read_control(self, last_id: str, block_ms: int) -> list[tuple[str, dict[str, str]]]:
        reply = self.r.xread({self.keys.control: last_id}, block=block_ms, count=100)
        if not reply:
            return []
        return [(entry_id, fields) for _stream, entries in reply for entry_id, fields in entries]
