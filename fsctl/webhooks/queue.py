"""Status webhooks in Redis: the outbox (what writers of records enqueue) and the delivery
queue (what the sender leases, settles, dead-letters and replays).

Each callback has its own FIFO of delivery ids (``wh:q:<id>``); only its head is ever in
flight, so seq n+1 is never sent before n is delivered or dead. ``wh:due`` holds every
callback with deliveries, scored by when its head may be tried next; a sender leases a
callback by moving that score past the attempt's longest duration, so a sender that dies
mid-attempt leaves it to be tried again (at least once; ``webhook-id`` lets receivers
dedupe). Enqueuing is idempotent per (callback, event): whoever writes the record — the API,
the worker, a worker that adopted it after a crash — may enqueue, the first one wins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from ..model import Callback
from .events import subscribed
from .payload import body_parts, message_id

if TYPE_CHECKING:
    from ..store import Keys

log = logging.getLogger(__name__)

MEMO_MAX = 50_000
"""Callbacks whose enqueued events one process remembers (beyond: Redis dedupes)."""

def enqueue_lua(k: int, a: int) -> str:
    """The enqueue, as a section of a Lua script whose own KEYS and ARGV end at ``k`` and ``a``
    (so a record's compare-and-set can carry it: one atomic step). It sets ``wh_added``.

    KEYS after ``k``: the callback's webhook hash, its queue, the due zset, one delivery hash
    per event. ARGV after ``a``: ttl, now, callback id, url, owner, then per event: key,
    msg id, body head, body tail. Each (callback, event) is enqueued once; a callback whose
    URL answered 410 gets nothing more (``wh_added`` -1)."""
    return f"""
if redis.call('HEXISTS', KEYS[{k} + 1], 'gone') == 0 then
  wh_added = 0
  local n = (#ARGV - {a} - 5) / 4
  for i = 0, n - 1 do
    local b = {a} + 6 + i * 4
    if redis.call('HSETNX', KEYS[{k} + 1], 'e:' .. ARGV[b], '1') == 1 then
      local seq = redis.call('HINCRBY', KEYS[{k} + 1], 'seq', 1)
      redis.call('HSET', KEYS[{k} + 4 + i], 'id', ARGV[b + 1],
                 'body', ARGV[b + 2] .. seq .. ARGV[b + 3], 'seq', seq, 'url', ARGV[{a} + 4],
                 'callback_id', ARGV[{a} + 3], 'owner', ARGV[{a} + 5], 'event', ARGV[b],
                 'attempts', 0, 'created_at', ARGV[{a} + 2])
      redis.call('RPUSH', KEYS[{k} + 2], ARGV[b + 1])
      wh_added = wh_added + 1
    end
  end
  redis.call('EXPIRE', KEYS[{k} + 1], tonumber(ARGV[{a} + 1]))
  if wh_added > 0 then redis.call('ZADD', KEYS[{k} + 3], 'NX', ARGV[{a} + 2], ARGV[{a} + 3]) end
end
"""


_ENQUEUE = "local wh_added = -1\n" + enqueue_lua(0, 0) + "return wh_added\n"

# KEYS: due. ARGV: now, most, lease until, queue key prefix. Returns id, head, id, head …
_LEASE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local head = redis.call('LINDEX', ARGV[4] .. id, 0)
  if head then
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    table.insert(out, id)
    table.insert(out, head)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

# KEYS: due, queue, delivery, dead (everyone), dead (owner), callback's webhook hash.
# ARGV: ok|retry|dead|gone, msg id, callback id, now, due at, attempts, error, ttl, msg prefix.
# Returns -1 when the head is no longer this delivery, else how many deliveries left the queue.
_SETTLE = """
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[2] then return -1 end
local mode = ARGV[1]
if mode == 'retry' then
  redis.call('HSET', KEYS[3], 'attempts', ARGV[6], 'last_error', ARGV[7])
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[3])
  return 0
end
local left = 1
redis.call('LPOP', KEYS[2])
if mode == 'ok' then
  redis.call('DEL', KEYS[3])
elseif mode == 'dead' then
  redis.call('HSET', KEYS[3], 'attempts', ARGV[6], 'reason', ARGV[7], 'dead_at', ARGV[4])
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[8]))
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
  redis.call('ZADD', KEYS[5], ARGV[4], ARGV[2])
else
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[6], 'gone', ARGV[7])
  redis.call('EXPIRE', KEYS[6], tonumber(ARGV[8]))
  local rest = redis.call('LRANGE', KEYS[2], 0, -1)
  for _, m in ipairs(rest) do redis.call('DEL', ARGV[9] .. m) end
  left = left + #rest
  redis.call('DEL', KEYS[2])
end
if redis.call('LLEN', KEYS[2]) > 0 then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
else
  redis.call('ZREM', KEYS[1], ARGV[3])
end
return left
"""

# KEYS: dead (everyone), delivery, due. ARGV: msg id, now, owner dead prefix, queue prefix,
# owner ('' = anyone's). A replayed delivery goes to the end of its callback's queue.
_REPLAY = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local f = redis.call('HMGET', KEYS[2], 'callback_id', 'owner')
if not f[1] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
if ARGV[5] ~= '' and f[2] ~= ARGV[5] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', ARGV[3] .. f[2], ARGV[1])
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[2], 'attempts', 0, 'replayed_at', ARGV[2])
redis.call('HDEL', KEYS[2], 'reason', 'dead_at', 'last_error')
redis.call('RPUSH', ARGV[4] .. f[1], ARGV[1])
redis.call('ZADD', KEYS[3], 'NX', ARGV[2], f[1])
return 1
"""


def _owner(cb: Callback) -> str:
    from ..store import OPEN_OWNER

    return cb.owner or OPEN_OWNER


class Outbox:
    """Enqueues the status events records have reached (API, worker, anyone who writes)."""

    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: int) -> None:
        self.r, self.keys, self.ttl_s = client, keys, ttl_s
        self._memo: dict[str, set[str]] = {}

    def prepare(self, cb: Callback) -> tuple[list[str], list[Any], list[str]] | None:
        """The enqueue script's keys and args for the events of ``cb`` not enqueued by this
        process yet (None: nothing new), and those events' keys."""
        if not cb.status_callback:
            return None
        known = self._memo.get(cb.id, ())
        new = [m for m in subscribed(cb) if m.key not in known]
        if not new:
            return None
        from ..schemas import present

        view = present(cb, raw_history=True)
        keys = [self.keys.wh_callback(cb.id), self.keys.wh_queue(cb.id), self.keys.wh_due]
        args: list[Any] = [self.ttl_s, repr(time.time()), cb.id, cb.status_callback, _owner(cb)]
        for m in new:
            msg = message_id(cb.id, m)
            keys.append(self.keys.wh_msg(msg))
            try:
                parts = body_parts(cb.id, m, view)
            except TypeError:  # a lone surrogate: json writes it, but not orjson's Fragment
                view = present(cb)
                parts = body_parts(cb.id, m, view)
            args.extend([m.key, msg, *parts])
        return keys, args, [m.key for m in new]

    def stage(self, pipe: Any, cb: Callback) -> tuple[str, list[str]] | None:
        """Add the enqueue of ``cb``'s new events to ``pipe`` (the record's own transaction);
        call :meth:`committed` with the result once ``pipe`` ran."""
        call = self.prepare(cb)
        if call is None:
            return None
        keys, args, events = call
        pipe.eval(_ENQUEUE, len(keys), *keys, *args)
        return cb.id, events

    def committed(self, staged: Iterable[tuple[str, list[str]] | None]) -> None:
        """The pipelines these stages were in ran: remember what was enqueued."""
        for item in staged:
            if item is None:
                continue
            callback_id, events = item
            memo = self._memo.get(callback_id)
            if memo is None:
                if len(self._memo) >= MEMO_MAX:
                    self._memo.pop(next(iter(self._memo)))
                memo = self._memo[callback_id] = set()
            memo.update(events)

    def enqueue_now(self, cb: Callback) -> int:
        """Enqueue ``cb``'s new events in a round trip of their own (after a record write that
        could not carry them: a compare-and-set, the API's admission script). A Redis error is
        logged, not raised: the record is written, and its next write enqueues them."""
        call = self.prepare(cb)
        if call is None:
            return 0
        keys, args, events = call
        try:
            added = int(self.r.eval(_ENQUEUE, len(keys), *keys, *args))
        except redis.RedisError as exc:
            log.error("callback %s: status events %s not enqueued yet: %s", cb.id, events, exc)
            return 0
        self.committed([(cb.id, events)])
        return max(0, added)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery as the sender attempts it."""

    id: str
    callback_id: str
    url: str
    body: str
    seq: int
    event: str
    attempts: int
    owner: str


class DeliveryQueue:
    """The sender's and the API's side: lease, settle, dead-letter, list and replay."""

    def __init__(self, client: redis.Redis, keys: Keys, dead_ttl_s: int) -> None:
        self.r, self.keys, self.dead_ttl_s = client, keys, dead_ttl_s
        self._lease = client.register_script(_LEASE)
        self._settle = client.register_script(_SETTLE)
        self._replay = client.register_script(_REPLAY)

    def lease(self, now: float, most: int, until: float) -> list[tuple[str, str]]:
        """Up to ``most`` callbacks whose head delivery is due, held until ``until``:
        (callback id, delivery id)."""
        reply = self._lease(keys=[self.keys.wh_due],
                            args=[repr(now), most, repr(until), self.keys.wh_queue("")])
        return list(zip(reply[::2], reply[1::2], strict=True))

    def load(self, msg_id: str) -> Delivery | None:
        f = self.r.hgetall(self.keys.wh_msg(msg_id))
        if not f or "body" not in f:
            return None
        return Delivery(id=msg_id, callback_id=f["callback_id"], url=f["url"], body=f["body"],
                        seq=int(f["seq"]), event=f["event"], attempts=int(f.get("attempts", 0)),
                        owner=f.get("owner", ""))

    def _settle_call(self, mode: str, d: Delivery, now: float, due_at: float = 0.0,
                     attempts: int = 0, text: str = "") -> int:
        keys = [self.keys.wh_due, self.keys.wh_queue(d.callback_id), self.keys.wh_msg(d.id),
                self.keys.wh_dead(everyone=True), self.keys.wh_dead(d.owner),
                self.keys.wh_callback(d.callback_id)]
        return int(self._settle(keys=keys, args=[
            mode, d.id, d.callback_id, repr(now), repr(due_at), attempts, text, self.dead_ttl_s,
            self.keys.wh_msg("")]))

    def delivered(self, d: Delivery, now: float) -> int:
        return self._settle_call("ok", d, now)

    def retry(self, d: Delivery, now: float, due_at: float, attempts: int, error: str) -> int:
        return self._settle_call("retry", d, now, due_at, attempts, error)

    def dead(self, d: Delivery, now: float, attempts: int, reason: str) -> int:
        return self._settle_call("dead", d, now, attempts=attempts, text=reason)

    def gone(self, d: Delivery, now: float) -> int:
        """The URL answered 410: this and every later delivery of the callback are dropped,
        and nothing more is enqueued for it. Returns how many were dropped."""
        return self._settle_call("gone", d, now, text=d.url)

    def pending(self, callback_id: str) -> list[str]:
        """The callback's deliveries not delivered yet, in order."""
        return list(self.r.lrange(self.keys.wh_queue(callback_id), 0, -1))

    def gone_url(self, callback_id: str) -> str | None:
        return self.r.hget(self.keys.wh_callback(callback_id), "gone")

    def list_dead(self, owner: str | None, limit: int) -> list[dict[str, Any]]:
        """Dead deliveries, newest first: everyone's (``owner`` None) or one owner's."""
        index = self.keys.wh_dead(everyone=True) if owner is None else self.keys.wh_dead(owner)
        ids = self.r.zrevrange(index, 0, limit - 1)
        pipe = self.r.pipeline(transaction=False)
        for msg_id in ids:
            pipe.hgetall(self.keys.wh_msg(msg_id))
        out = []
        for msg_id, f in zip(ids, pipe.execute() if ids else [], strict=True):
            if not f:
                self.r.zrem(index, msg_id)  # expired with its record
                continue
            out.append({"id": msg_id, "callback_id": f["callback_id"], "event": f["event"],
                        "seq": int(f["seq"]), "url": f["url"], "attempts": int(f["attempts"]),
                        "reason": f.get("reason", ""), "created_at": float(f["created_at"]),
                        "failed_at": float(f.get("dead_at", 0.0))})
        return out

    def replay(self, msg_id: str, owner: str | None, now: float | None = None) -> bool:
        """Put a dead delivery back at the end of its callback's queue; False when there is
        no such dead delivery (of this owner)."""
        now = time.time() if now is None else now
        return bool(self._replay(
            keys=[self.keys.wh_dead(everyone=True), self.keys.wh_msg(msg_id), self.keys.wh_due],
            args=[msg_id, repr(now), self.keys.wh_dead("x")[:-1], self.keys.wh_queue(""),
                  owner or ""]))

    def replay_all(self, owner: str | None, most: int = 10_000) -> list[str]:
        """Replay every dead delivery (of one owner), oldest first; the ids replayed."""
        index = self.keys.wh_dead(everyone=True) if owner is None else self.keys.wh_dead(owner)
        return [msg_id for msg_id in self.r.zrange(index, 0, most - 1)
                if self.replay(msg_id, owner)]
