"""The only place that knows Redis keys: callback records, indexes, the job queue.

Keys (``<p>`` is the prefix, ``fsctl`` by default):

- ``<p>:callback:<id>``   the callback record (JSON string)
- ``<p>:callbacks``       every callback id, scored by creation time (zset)
- ``<p>:state:<state>``   callback ids in that state, scored by creation time (zset)
- ``<p>:owner:<owner>``   the callback ids one API token created, scored by creation time (zset)
- ``<p>:jobs``            the job queue (stream; consumer group ``workers``)
- ``<p>:jobs:dead``       invalid jobs with the payload and the reason (stream)
- ``<p>:job:<entry-id>``  which callback a redis-cli job became (string)
- ``<p>:control``         cancel requests for live callbacks (stream)
- ``<p>:cancel:<id>``     a cancel was asked for this live callback (string, 24 h): read by
  whoever adopts it later, so a cancel sent while no worker listened is not lost
- ``<p>:rate:<owner>:<minute>``  API requests of one token in one minute (counter)
- ``<p>:live:<owner>``    the token's callbacks not yet finished (zset by creation time)
- ``<p>:dest:<number>``   callbacks to one destination in the current hour (counter)
- ``<p>:idem:<owner>:<key>``  an Idempotency-Key (hash): ``state`` ``processing`` (a request
  holds it, 30 s at most) or ``done`` (24 h), the request's ``fingerprint``, the
  ``callback_id`` it created, the ``claim`` token of the request processing it
- ``<p>:workers``         names of the workers that sent a heartbeat (set)
- ``<p>:worker:<name>``   a worker's heartbeat: node, event socket connected, time (string,
  expires after the heartbeat TTL: a dead worker's vanishes)
- ``<p>:stats:outcomes``  callbacks finished, per ``<state>:<outcome>``, all workers (hash)
- ``<p>:stats:webhooks``  webhook deliveries settled, per result (delivered, retried, dead,
  gone), all senders (hash)
- ``<p>:wh:cb:<id>``      a callback's webhook state: ``seq``, ``gone`` (a URL that answered
  410), ``e:<event>`` for every event enqueued (hash; expires with the record)
- ``<p>:wh:q:<id>``       the callback's deliveries not yet delivered, in order (list of ids)
- ``<p>:wh:msg:<msg-id>`` one delivery: body, url, seq, attempts, last error (hash)
- ``<p>:wh:due``          callbacks with deliveries, scored by when the next attempt is due
- ``<p>:wh:dead``, ``<p>:wh:dead:<owner>``  dead deliveries by when they died (zsets)
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from .callback import Input, apply
from .errors import StoreError
from .model import CALLBACK_STATES, Callback, decode_json
from .policy import destination
from .redis_lane import Command, Lane
from .webhooks.queue import Outbox, enqueue_lua

log = logging.getLogger(__name__)

GROUP = "workers"
"""The consumer group every worker reads jobs through."""
CONTROL_MAXLEN = 10_000
"""Approximate length the control stream is trimmed to."""
CANCEL_TTL_S = 86_400
"""How long a cancel request for a live callback is remembered."""
LIST_SCAN_MAX = 1000
"""Most index entries one list request reads (then it answers with a cursor)."""
DEAD_MAXLEN = 100_000
"""Approximate length the dead-letter stream is trimmed to."""
LIVE_MAX_AGE_S = 4 * 3600
"""A live-set entry older than this is dropped (a callback never takes that long)."""
DEST_WINDOW_S = 3600
"""The window of the per-destination cooldown counter."""
IDEMPOTENCY_TTL_S = 86400
"""How long an Idempotency-Key keeps pointing at the callback it created."""
IDEMPOTENCY_PROCESSING_TTL_S = 10
"""Longest an Idempotency-Key stays claimed by a request being processed (one whose API
process died lets it go after this; a request slower than this finds its claim taken over
and creates nothing: the callback is created only under the claim that holds the key)."""
OPEN_OWNER = "_open"
"""Owner key of callbacks made through the open (token-less) API."""

# Admission and creation in one atomic step, so limits hold across any number of
# API processes: rate window, live callbacks, destination cooldown, then the record,
# its indexes and its job. Returns {"ok", entry-id} or {reason, retry-after-s[, index]}.
_ADMIT = """
if ARGV[11] == '1' then
  local kind = redis.call('TYPE', KEYS[7]).ok
  if kind == 'string' then return {'dup', redis.call('GET', KEYS[7]), ''} end
  if kind == 'hash' then
    local h = redis.call('HMGET', KEYS[7], 'state', 'callback_id', 'fingerprint', 'claim')
    if h[1] == 'done' then return {'dup', h[2], h[3] or ''} end
    if h[1] == 'processing' and ARGV[15] ~= '' and h[4] ~= ARGV[15] then return {'busy'} end
  end
end
local rate = redis.call('INCR', KEYS[5])
if rate == 1 then redis.call('EXPIRE', KEYS[5], tonumber(ARGV[9])) end
if tonumber(ARGV[4]) >= 0 and rate > tonumber(ARGV[4]) then
  return {'rate', redis.call('TTL', KEYS[5])}
end
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', tonumber(ARGV[7]) - tonumber(ARGV[8]))
if tonumber(ARGV[5]) >= 0 and redis.call('ZCARD', KEYS[6]) >= tonumber(ARGV[5]) then
  return {'live', 5}
end
for i = 10, #KEYS do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tonumber(ARGV[6]) >= 0 and n >= tonumber(ARGV[6]) then
    return {'dest', redis.call('TTL', KEYS[i]), i - 9}
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', 0} end
if ARGV[11] == '1' then
  redis.call('DEL', KEYS[7])
  redis.call('HSET', KEYS[7], 'state', 'done', 'callback_id', ARGV[2], 'fingerprint', ARGV[14])
  redis.call('EXPIRE', KEYS[7], tonumber(ARGV[12]))
end
for i = 10, #KEYS do
  if redis.call('INCR', KEYS[i]) == 1 then redis.call('EXPIRE', KEYS[i], tonumber(ARGV[10])) end
end
redis.call('ZADD', KEYS[6], ARGV[7], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', ARGV[13])
redis.call('ZADD', KEYS[8], ARGV[3], ARGV[2])
if ARGV[16] ~= '' then
  redis.call('ZADD', KEYS[9], ARGV[16], ARGV[2])
  return {'ok', 'scheduled'}
end
local entry = redis.call('XADD', KEYS[4], '*', 'callback_id', ARGV[2])
return {'ok', entry}
"""

# Scheduled callbacks whose time has come get their job (each once, whichever worker runs
# it). Returns the ids promoted, then the next one's not_before ('' when none is left).
_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('XADD', KEYS[2], '*', 'callback_id', id)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
table.insert(due, nxt[2] or '')
return due
"""


# A redis-cli job's callback, stored under the same per-destination limit as the API's
# (idempotent: a redelivered job finds its record and counts nothing again).
# Returns {"ok"}, {"exists"} or {"dest", retry-after-s, index}.
_ADMIT_JOB = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  for i = 5, #KEYS do
    local n = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tonumber(ARGV[4]) >= 0 and n >= tonumber(ARGV[4]) then
      return {'dest', redis.call('TTL', KEYS[i]), i - 4}
    end
  end
  for i = 5, #KEYS do
    if redis.call('INCR', KEYS[i]) == 1 then redis.call('EXPIRE', KEYS[i], tonumber(ARGV[5])) end
  end
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[6]))
  redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[2])
  redis.call('ZADD', KEYS[4], 'NX', ARGV[3], ARGV[2])
  return {'ok'}
end
redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[6]))
redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[4], 'NX', ARGV[3], ARGV[2])
return {'exists'}
"""


# An Idempotency-Key's first step (IETF draft-ietf-httpapi-idempotency-key-header): claim a
# new key for this request (state processing, with the request's fingerprint and a claim
# token), or say what the key already stands for. Returns {'new'}, {'busy'} (another request
# with that key is being processed), {'mismatch'} (the key was used with another request),
# {'done', callback id} (the request was answered: replay). A plain string is a key written
# before fingerprints were stored (a callback id): replayed, its request cannot be compared.
_IDEM_BEGIN = """
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'none' then
  redis.call('HSET', KEYS[1], 'state', 'processing', 'fingerprint', ARGV[1], 'claim', ARGV[2])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
  return {'new', ''}
end
if kind == 'string' then return {'done', redis.call('GET', KEYS[1])} end
local h = redis.call('HMGET', KEYS[1], 'state', 'fingerprint', 'callback_id')
if h[2] ~= ARGV[1] then return {'mismatch', ''} end
if h[1] == 'done' then return {'done', h[3]} end
return {'busy', ''}
"""


# Let go of a key this request claimed and did not use (it was refused): only while it is
# still this claim's (same token, still processing). 1 when deleted.
_IDEM_RELEASE = """
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return 0 end
local h = redis.call('HMGET', KEYS[1], 'state', 'claim')
if h[1] == 'processing' and h[2] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# Give back one count per destination (never below zero): legs that were never dialled.
_RELEASE = """
for i = 1, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
end
return 0
"""


# Compare-and-set of one record: written (with its index moves, as _queue_save does) only
# if it still reads exactly as the copy the change was made on. One round trip, where
# WATCH / GET / MULTI-EXEC take three. Returns 1 when written, 0 when it had changed. With
# more keys it also enqueues the status webhooks the new record reached (fsctl.webhooks).
_SWAP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
else
  redis.call('SET', KEYS[1], ARGV[2])
end
if ARGV[6] == '1' then redis.call('ZREM', KEYS[4], ARGV[4]) end
if ARGV[7] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[4])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
end
if #KEYS > 4 then
  local wh_added = -1
""" + enqueue_lua(4, 7) + """
end
return 1
"""
SWAP_ATTEMPTS = 50
"""Most reads of a record one compare-and-set makes before giving up (it kept changing)."""


class KeyBusy(StoreError):
    """The Idempotency-Key is held by another request's claim (this one's had expired)."""


class Duplicate(StoreError):
    """The Idempotency-Key was used before: ``callback_id`` is what it created, for the
    request whose ``fingerprint`` is given ("" when that is not known)."""

    def __init__(self, callback_id: str, fingerprint: str = "") -> None:
        super().__init__(f"idempotency key already used for callback {callback_id}")
        self.callback_id, self.fingerprint = callback_id, fingerprint


@dataclass(frozen=True, slots=True)
class IdempotencyBegin:
    """What an Idempotency-Key stands for when a request arrives with it.

    ``verdict``: ``new`` (claimed for this request: ``claim`` is its token), ``busy``
    (another request with the key is being processed), ``mismatch`` (it was used with a
    different request), ``done`` (``callback_id`` is what the first request created).
    """

    verdict: str
    callback_id: str | None = None
    claim: str | None = None


class Refused(StoreError):
    """A limit refused the request: ``reason`` is rate, live or dest."""

    def __init__(self, reason: str, retry_after_s: int, detail: str = "") -> None:
        super().__init__(f"{reason} limit: {detail}".strip())
        self.reason, self.retry_after_s, self.detail = reason, max(1, retry_after_s), detail


@dataclass(frozen=True, slots=True)
class Limits:
    """What one API caller may do; -1 means unlimited."""

    owner: str
    rate_per_minute: int = -1
    max_live: int = -1
    dest_max_per_hour: int = -1


class Keys:
    """Every Redis key fsctl uses, built from one prefix."""

    def __init__(self, prefix: str = "fsctl") -> None:
        self.prefix = prefix
        self.callbacks = f"{prefix}:callbacks"
        self.jobs = f"{prefix}:jobs"
        self.dead = f"{prefix}:jobs:dead"
        self.control = f"{prefix}:control"
        self.scheduled = f"{prefix}:scheduled"
        """Scheduled callbacks' ids by ``not_before`` (their job is added when it comes)."""

    def callback(self, callback_id: str) -> str:
        return f"{self.prefix}:callback:{callback_id}"

    def state(self, state: str) -> str:
        return f"{self.prefix}:state:{state}"

    def cancel(self, callback_id: str) -> str:
        return f"{self.prefix}:cancel:{callback_id}"

    def job(self, entry_id: str) -> str:
        return f"{self.prefix}:job:{entry_id}"

    def rate(self, owner: str, window: int) -> str:
        return f"{self.prefix}:rate:{owner}:{window}"

    def live(self, owner: str | None) -> str:
        return f"{self.prefix}:live:{owner or OPEN_OWNER}"

    def owner(self, owner: str | None) -> str:
        return f"{self.prefix}:owner:{owner or OPEN_OWNER}"

    def dest(self, number: str) -> str:
        return f"{self.prefix}:dest:{number}"

    def idempotency(self, owner: str | None, key: str) -> str:
        return f"{self.prefix}:idem:{owner or OPEN_OWNER}:{key}"

    # -- operations (fsctl.ops): heartbeats and counters -----------------------------------

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    @property
    def outcomes(self) -> str:
        return f"{self.prefix}:stats:outcomes"

    @property
    def webhook_results(self) -> str:
        return f"{self.prefix}:stats:webhooks"

    # -- status webhooks (fsctl.webhooks.queue) --

    def wh_callback(self, callback_id: str) -> str:
        return f"{self.prefix}:wh:cb:{callback_id}"

    def wh_queue(self, callback_id: str) -> str:
        return f"{self.prefix}:wh:q:{callback_id}"

    def wh_msg(self, msg_id: str) -> str:
        return f"{self.prefix}:wh:msg:{msg_id}"

    @property
    def wh_due(self) -> str:
        return f"{self.prefix}:wh:due"

    def wh_dead(self, owner: str | None = None, *, everyone: bool = False) -> str:
        """Dead deliveries of everyone (``everyone``) or of one owner."""
        if everyone:
            return f"{self.prefix}:wh:dead"
        return f"{self.prefix}:wh:dead:{owner or OPEN_OWNER}"


def outcome_field(state: str, outcome: str | None) -> str:
    """The field of ``<p>:stats:outcomes`` counting callbacks that ended so."""
    return f"{state}:{outcome or state}"


def _dump(cb: Callback) -> bytes:
    """A record as compact JSON (orjson: the worker writes one on every change)."""
    return cb.to_json()


def _load(raw: str | bytes) -> Callback:
    return Callback.from_dict(decode_json(raw))


def connect(url: str) -> redis.Redis:
    """A Redis client with bounded waits (str in, str out).

    Bytes that are not UTF-8 (a hand-made redis-cli job) decode as ``\\xff`` escapes
    rather than raising, so such a job reaches the dead-letter stream, readable.
    """
    return redis.Redis.from_url(url, decode_responses=True, encoding_errors="backslashreplace",
                                socket_timeout=5, socket_connect_timeout=3,
                                health_check_interval=15)


class _Batch:
    """Commands for :meth:`Lane.batch`, with the one pipeline method the webhook outbox
    stages through (``eval``)."""

    def __init__(self) -> None:
        self.commands: list[Command] = []

    def eval(self, script: str, numkeys: int, *args: Any) -> None:
        self.commands.append(("EVAL", script, numkeys, *args))


class Store:
    """Callback records and jobs in Redis."""

    def __init__(self, client: redis.Redis, prefix: str = "fsctl", record_ttl_s: int = 7 * 86400):
        self.r = client
        self.keys = Keys(prefix)
        self.record_ttl_s = record_ttl_s
        self._admit = client.register_script(_ADMIT)
        self._release = client.register_script(_RELEASE)
        self._admit_job = client.register_script(_ADMIT_JOB)
        self._promote = client.register_script(_PROMOTE)
        self._idem_begin = client.register_script(_IDEM_BEGIN)
        self._idem_release = client.register_script(_IDEM_RELEASE)
        self._swap = client.register_script(_SWAP)
        self.lane = Lane(client)
        """The connection of the hot path: record writes and compare-and-sets."""
        self._jobs_lane = Lane(client)  # the job loop's blocking reads, on their own
        self.outbox = Outbox(client, self.keys, record_ttl_s)
        """Status webhooks: every record write enqueues the events the record reached."""

    # -- records ------------------------------------------------------------------

    def create(self, cb: Callback, limits: Limits | None = None,
               idempotency_key: str | None = None, fingerprint: str = "",
               claim: str = "") -> str:
        """Admit and store a new queued callback and enqueue its job, atomically.

        Returns the job's entry id; raises :class:`Refused` when a limit says no,
        :class:`Duplicate` when the idempotency key was answered before (nothing is stored
        then), :class:`KeyBusy` when another request's ``claim`` now holds the key, and
        StoreError when Redis fails. With a key, the key is marked ``done`` with
        ``fingerprint`` (the request's) and the callback in the same step.
        """
        limits = limits or Limits(owner=cb.owner or OPEN_OWNER)
        keys, args, now = self._admission(cb, limits, idempotency_key, fingerprint, claim)
        try:
            reply = self._admit(keys=keys, args=args)
        except redis.RedisError as exc:
            raise StoreError(f"could not store callback {cb.id}: {exc}") from exc
        return self._admitted(cb, reply, limits, now)

    def create_many(self, items: list[tuple[Callback, Limits]]) -> list[str | StoreError]:
        """:meth:`create` for several callbacks in one round trip (no idempotency keys),
        each admitted on its own against its limits, in order: each one's job entry id, or
        the :class:`Refused` (or StoreError) that kept it out. Raises StoreError when Redis
        fails the round trip itself."""
        pipe = self.r.pipeline(transaction=False)
        nows: list[float] = []
        for cb, limits in items:
            keys, args, now = self._admission(cb, limits, None, "", "")
            self._admit(keys=keys, args=args, client=pipe)
            nows.append(now)
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            raise StoreError(f"could not store {len(items)} callbacks: {exc}") from exc
        out: list[str | StoreError] = []
        for (cb, limits), reply, now in zip(items, replies, nows, strict=True):
            try:
                if isinstance(reply, Exception):
                    raise StoreError(f"could not store callback {cb.id}: {reply}")
                out.append(self._admitted(cb, reply, limits, now))
            except StoreError as exc:
                out.append(exc)
        return out

    def _admission(self, cb: Callback, limits: Limits, idempotency_key: str | None,
                   fingerprint: str, claim: str) -> tuple[list[str], list[Any], float]:
        """The admission script's keys and arguments for ``cb`` (and when they were made)."""
        cb.dest_counted = True  # stored with the record only if the script admits it
        now = time.time()
        window = int(now // 60)
        dests = sorted({destination(leg.to) for leg in cb.legs.values()})
        keys = [self.keys.callback(cb.id), self.keys.callbacks, self.keys.state(cb.state),
                self.keys.jobs, self.keys.rate(limits.owner, window), self.keys.live(cb.owner),
                self.keys.idempotency(cb.owner, idempotency_key or "-"),
                self.keys.owner(cb.owner), self.keys.scheduled,
                *[self.keys.dest(d) for d in dests]]
        args = [_dump(cb), cb.id, cb.created_at, limits.rate_per_minute, limits.max_live,
                limits.dest_max_per_hour, now, LIVE_MAX_AGE_S, 61, DEST_WINDOW_S,
                "1" if idempotency_key else "0", IDEMPOTENCY_TTL_S, self.index_cutoff(now),
                fingerprint, claim,
                repr(cb.not_before) if cb.state == "scheduled" and cb.not_before else ""]
        return keys, args, now

    def promote_due(self, now: float, count: int = 100) -> tuple[list[str], float | None]:
        """Give the scheduled callbacks due at ``now`` their job (atomic: each once, whatever
        the number of workers); returns their ids and the next one's time (None: none)."""
        reply = self._promote(keys=[self.keys.scheduled, self.keys.jobs], args=[repr(now), count])
        *ids, nxt = reply
        return [str(i) for i in ids], (float(nxt) if nxt not in ("", None) else None)

    def _admitted(self, cb: Callback, reply: Any, limits: Limits, now: float) -> str:
        """What the admission script answered for ``cb``: its job entry id, or the error."""
        dests = sorted({destination(leg.to) for leg in cb.legs.values()})
        verdict = reply[0]
        if verdict == "ok":
            self.outbox.enqueue_now(cb)
            return str(reply[1])
        if verdict == "dup":
            raise Duplicate(str(reply[1]), str(reply[2]))
        if verdict == "busy":
            raise KeyBusy(f"idempotency key of callback {cb.id} is claimed by another request")
        if verdict == "rate":
            raise Refused("rate", int(reply[1]) if int(reply[1]) > 0 else 60 - int(now) % 60,
                          f"more than {limits.rate_per_minute} requests per minute")
        if verdict == "live":
            raise Refused("live", int(reply[1]), f"{limits.max_live} callbacks are still live")
        if verdict == "dest":
            number = dests[int(reply[2]) - 1]
            raise Refused("dest", int(reply[1]),
                          f"{number} was called {limits.dest_max_per_hour} times this hour")
        raise StoreError(f"callback {cb.id} exists already")

    def get(self, callback_id: str) -> Callback | None:
        raw = self.r.get(self.keys.callback(callback_id))
        return _load(raw) if raw else None

    # -- idempotency keys ------------------------------------------------------------

    def idempotency_begin(self, owner: str | None, key: str,
                          fingerprint: str) -> IdempotencyBegin:
        """Claim ``key`` for a request with ``fingerprint``, or say what it stands for."""
        claim = secrets.token_hex(16)
        reply = self._idem_begin(keys=[self.keys.idempotency(owner, key)],
                                 args=[fingerprint, claim, IDEMPOTENCY_PROCESSING_TTL_S])
        verdict = str(reply[0])
        if verdict == "new":
            return IdempotencyBegin("new", claim=claim)
        if verdict == "done":
            return IdempotencyBegin("done", callback_id=str(reply[1]))
        return IdempotencyBegin(verdict)

    def idempotency_release(self, owner: str | None, key: str, claim: str) -> bool:
        """Let go of a key claimed by :meth:`idempotency_begin` whose request created
        nothing (refused, invalid): a corrected retry with the same key may go ahead."""
        return bool(self._idem_release(keys=[self.keys.idempotency(owner, key)], args=[claim]))

    # -- cancel requests (as the API shows them) ---------------------------------------

    def get_with_cancel(self, callback_id: str) -> tuple[Callback | None, bool]:
        """A record and whether a cancel was asked for it (one round trip)."""
        raw, cancel = self.r.mget([self.keys.callback(callback_id), self.keys.cancel(callback_id)])
        return (_load(raw) if raw else None), bool(cancel)

    def cancels_requested(self, callback_ids: list[str]) -> set[str]:
        """Which of these callbacks a cancel was asked for (one round trip)."""
        if not callback_ids:
            return set()
        found = self.r.mget([self.keys.cancel(i) for i in callback_ids])
        return {i for i, flag in zip(callback_ids, found, strict=True) if flag}

    def save_many(self, items: list[tuple[Callback, str | None]],
                  acks: list[str] | None = None,
                  outcomes: dict[str, int] | None = None) -> None:
        """Write records in one transaction, each moved between state indexes if needed,
        and acknowledge the jobs ``acks`` (of callbacks these records end) with them;
        ``outcomes`` (``<state>:<outcome>`` → how many more ended so) go into the shared
        counters in the same transaction."""
        batch = _Batch()
        staged = [self._queue_save(batch, cb, previous_state) for cb, previous_state in items]
        if acks:
            batch.commands.append(("XACK", self.keys.jobs, GROUP, *acks))
        for field, n in (outcomes or {}).items():
            batch.commands.append(("HINCRBY", self.keys.outcomes, field, n))
        self.lane.batch(batch.commands, transaction=True)
        self.outbox.committed(staged)

    def _queue_save(self, batch: _Batch, cb: Callback,
                    previous_state: str | None) -> tuple[str, list[str]] | None:
        """Add the record's write (and its status webhooks') to ``batch``; what the outbox
        staged, for :meth:`Outbox.committed` once ``batch`` ran."""
        cmds = batch.commands
        key, raw = self.keys.callback(cb.id), _dump(cb)
        cmds.append(("SET", key, raw, "EX", self.record_ttl_s) if cb.final else ("SET", key, raw))
        if cb.final:
            cmds.append(("ZREM", self.keys.live(cb.owner), cb.id))
        if previous_state is not None and previous_state != cb.state:
            cmds.append(("ZREM", self.keys.state(previous_state), cb.id))
            cmds.append(("ZADD", self.keys.state(cb.state), repr(cb.created_at), cb.id))
        return self.outbox.stage(batch, cb) if cb.status_callback else None

    def restore(self, cb: Callback) -> bool:
        """Write a record a worker spooled while Redis was down; False when Redis's copy wins:
        a final state seen in FreeSWITCH's events, or a live one newer than the spooled."""
        key = self.keys.callback(cb.id)
        while True:
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    cur = _load(raw) if raw else None
                    if cur is not None and cur.final and not cur.inferred:
                        return False
                    if cur is not None and not cb.final and cur.updated_at > cb.updated_at:
                        return False
                    pipe.multi()
                    batch = _Batch()
                    staged = self._queue_save(batch, cb, cur.state if cur else None)
                    for command in batch.commands:
                        pipe.execute_command(*command)
                    pipe.execute()
                    self.outbox.committed([staged])
                    return True
                except redis.WatchError:
                    continue

    def update_if(self, callback_id: str, change: Callable[[Callback], bool]) -> Callback | None:
        """Compare-and-set: read, let ``change`` edit (return True to write), write if untouched."""
        return self.swap(callback_id, change)[0]

    def swap(self, callback_id: str, change: Callable[[Callback], bool],
             known: bytes | str | None = None) -> tuple[Callback | None, bytes | str | None]:
        """:meth:`update_if`, also returning the record as Redis now holds it (what to pass
        as ``known`` next time). With ``known`` (the record as this process last wrote
        it) the first try needs no read: one round trip when nobody changed it since."""
        key = self.keys.callback(callback_id)
        raw = known
        for _ in range(SWAP_ATTEMPTS):
            if raw is None:
                raw = self.lane.call("GET", key)
                if not raw:
                    return None, None
            cb = _load(raw)
            before = cb.state
            if not change(cb):
                if known is not None and raw is known:
                    raw = None  # judged on a copy that may be stale: read it and judge again
                    known = None
                    continue
                return cb, raw
            new = _dump(cb)
            call, staged = self._swap_call(key, raw, cb, before, new)
            if self._swaps([call])[0]:
                self.outbox.committed([staged])
                return cb, new
            raw = known = None
        raise redis.WatchError(f"callback {callback_id}: record kept changing, not updated")

    def swap_many(self, items: list[tuple[str, Callable[[Callback], bool], bytes | str | None]]
                  ) -> list[tuple[Callback | None, bytes | str | None]]:
        """:meth:`swap` for several records (callback id, change, known) in one or two round
        trips: one read of those not known, then every compare-and-set in one pipeline (each
        atomic on its own); a record that changed meanwhile is tried again alone."""
        keys = [self.keys.callback(callback_id) for callback_id, _, _ in items]
        raws: list[bytes | str | None] = [known for _, _, known in items]
        unknown = [i for i, raw in enumerate(raws) if raw is None]
        if unknown:
            for i, raw in zip(unknown, self.lane.call("MGET", *[keys[i] for i in unknown]),
                              strict=True):
                raws[i] = raw
        out: list[tuple[Callback | None, bytes | str | None]] = [(None, None)] * len(items)
        again: list[int] = []
        sent: list[tuple[int, Callback, bytes, tuple[str, list[str]] | None]] = []
        calls: list[tuple[list[str], list[Any]]] = []
        for i, ((_callback_id, change, known), raw) in enumerate(zip(items, raws, strict=True)):
            if not raw:
                continue
            cb = _load(raw)
            before = cb.state
            if not change(cb):
                if known is not None:
                    again.append(i)  # judged on a copy that may be stale
                else:
                    out[i] = (cb, raw)
                continue
            new = _dump(cb)
            call, staged = self._swap_call(keys[i], raw, cb, before, new)
            calls.append(call)
            sent.append((i, cb, new, staged))
        for (i, cb, new, staged), written in zip(sent, self._swaps(calls), strict=True):
            if written:
                out[i] = (cb, new)
                self.outbox.committed([staged])
            else:
                again.append(i)
        for i in sorted(again):
            out[i] = self.swap(items[i][0], items[i][1])
        return out

    def _swap_call(self, key: str, raw: bytes | str, cb: Callback, before: str, new: bytes
                   ) -> tuple[tuple[list[str], list[Any]], tuple[str, list[str]] | None]:
        """The compare-and-set script's keys and args: ``key`` from ``raw`` to ``new``, the
        state indexes moved from ``before``, as :meth:`_queue_save` does; with the status
        webhooks ``cb`` reached (and what to tell :meth:`Outbox.committed` once written)."""
        keys = [key, self.keys.state(before), self.keys.state(cb.state), self.keys.live(cb.owner)]
        args = [raw, new, self.record_ttl_s if cb.final else 0, cb.id, repr(cb.created_at),
                int(cb.final), int(before != cb.state)]
        hooks = self.outbox.prepare(cb) if cb.status_callback else None
        if hooks is None:
            return (keys, args), None
        return (keys + hooks[0], args + hooks[1]), (cb.id, hooks[2])

    def _swaps(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run the compare-and-set script for each (keys, args), in one round trip: EVALSHA
        pipelined on the hot-path connection, the script loaded again if Redis lost it (a
        restart: then every one was refused, none ran)."""
        if not calls:
            return []
        for _ in range(2):
            try:
                return self.lane.batch([("EVALSHA", self._swap.sha, len(keys), *keys, *args)
                                        for keys, args in calls])
            except redis.exceptions.NoScriptError:
                self.lane.call("SCRIPT", "LOAD", _SWAP)
        raise redis.exceptions.NoScriptError("the compare-and-set script cannot be loaded")

    def end_queued(self, callback_id: str, event: Input,
                   waiting_before: float | None = None) -> tuple[Callback | None, bool]:
        """Apply ``event`` (a Cancel, an Expire) to a callback still queued (or scheduled),
        atomically, and give back its destination counts: nobody was rung. With
        ``waiting_before``, only if it has waited since before then (from ``created_at``, or
        from ``not_before`` for a scheduled one). Returns the record and whether this call
        ended it."""
        ended, counted = [False], [False]

        def change(cb: Callback) -> bool:
            ended[0] = counted[0] = False
            if cb.state not in ("scheduled", "queued"):
                return False
            if waiting_before is not None and \
                    max(cb.created_at, cb.not_before or 0.0) >= waiting_before:
                return False
            apply(cb, event)
            ended[0], counted[0], cb.dest_counted = True, cb.dest_counted, False
            return True

        cb = self.update_if(callback_id, change)
        if cb is not None and ended[0]:
            self.r.zrem(self.keys.scheduled, callback_id)  # no job when its time comes
        if cb is not None and counted[0]:
            self.release_destinations(cb)
        if cb is not None and ended[0]:
            self.r.hincrby(self.keys.outcomes, outcome_field(cb.state, cb.outcome), 1)
        return cb, ended[0]

    def end_queued_before(self, cutoff: float, make_event: Callable[[], Input],
                          count: int = 100) -> list[Callback]:
        """End (with ``make_event()``) the callbacks still queued that were created before
        ``cutoff``; returns those ended."""
        ids = self.r.zrangebyscore(self.keys.state("queued"), "-inf", cutoff, start=0, num=count)
        out = []
        for callback_id in ids:
            cb, ended = self.end_queued(callback_id, make_event(), cutoff)
            if cb is not None and ended:
                out.append(cb)
        return out

    def list(self, state: str | None = None, limit: int = 50, before: float | None = None,
             owner: str | None = None) -> tuple[list[Callback], float | None]:
        """Newest first; ``before`` is the created_at of the last item of the previous page.

        Returns the items and where the next page starts (None: no more). One call reads at
        most LIST_SCAN_MAX index entries, so a filter that matches little answers a short
        page with a cursor rather than walking everything.
        """
        if state is not None and state not in CALLBACK_STATES:
            raise StoreError(f"unknown state {state!r}")
        # A token pages through its own index only, however many callbacks others have.
        if owner is not None:
            index = self.keys.owner(owner)
        else:
            index = self.keys.state(state) if state else self.keys.callbacks
        hi = f"({before}" if before is not None else "+inf"
        out: list[Callback] = []
        offset, last_score = 0, None
        while len(out) < limit and offset < LIST_SCAN_MAX:
            rows = self.r.zrevrangebyscore(index, hi, "-inf", start=offset,
                                           num=min(limit * 2, LIST_SCAN_MAX - offset),
                                           withscores=True)
            if not rows:
                return out, None
            offset += len(rows)
            raws = self.r.mget([self.keys.callback(i) for i, _ in rows])
            for (_, score), raw in zip(rows, raws, strict=True):
                last_score = score
                if not raw:
                    continue
                cb = _load(raw)
                if (owner is None or cb.owner == owner) and (state is None or cb.state == state):
                    out.append(cb)
                    if len(out) == limit:
                        return out, cb.created_at
        return out, last_score if offset >= LIST_SCAN_MAX else None

    def index_cutoff(self, now: float) -> float:
        """Creation time before which every record has expired (finished within
        LIVE_MAX_AGE_S, then kept record_ttl_s): older index entries point at nothing."""
        return now - self.record_ttl_s - LIVE_MAX_AGE_S

    def prune_indexes(self, now: float) -> int:
        """Drop index entries whose records have expired; the number dropped. (A token's own
        index is pruned each time it creates a callback.)"""
        cutoff = self.index_cutoff(now)
        pipe = self.r.pipeline(transaction=False)
        for key in (self.keys.callbacks, *(self.keys.state(s) for s in CALLBACK_STATES)):
            pipe.zremrangebyscore(key, "-inf", cutoff)
        return sum(pipe.execute())

    # -- jobs ---------------------------------------------------------------------

    def ensure_group(self) -> None:
        try:
            self.r.xgroup_create(self.keys.jobs, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_jobs(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, dict[str, str]]]:
        """New jobs for ``consumer`` (waiting up to ``block_ms`` for one)."""
        reply = self._jobs_lane.call("XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count,
                                     "BLOCK", block_ms, "STREAMS", self.keys.jobs, ">")
        streams = reply.items() if isinstance(reply, dict) else reply or ()  # RESP3: a map
        return [(entry_id, dict(zip(flat[::2], flat[1::2], strict=True)))
                for _stream, entries in streams for entry_id, flat in entries]

    def own_pending(self, consumer: str, count: int = 1000) -> list[tuple[str, dict[str, str]]]:
        """Jobs this consumer name had claimed but not acknowledged (e.g. before a crash)."""
        reply = self.r.xreadgroup(GROUP, consumer, {self.keys.jobs: "0"}, count=count)
        if not reply:
            return []
        return [(entry_id, fields) for _stream, entries in reply for entry_id, fields in entries
                if fields]

    def stale_jobs(self, min_idle_s: float,
                   count: int = 100) -> list[tuple[str, str, dict[str, str]]]:
        """Jobs whose consumer has been silent for ``min_idle_s`` (a dead worker), unclaimed.

        Returns (entry id, consumer, fields); the caller decides whether the job is its to
        take (a live callback belongs to the workers of its node) and then :meth:`claim` s it.
        """
        pending = self.r.xpending_range(self.keys.jobs, GROUP, "-", "+", count,
                                        idle=int(min_idle_s * 1000))
        out: list[tuple[str, str, dict[str, str]]] = []
        for item in pending:
            consumer = item["consumer"]
            entries = self.r.xrange(self.keys.jobs, item["message_id"], item["message_id"])
            if entries:
                out.append((item["message_id"], consumer, entries[0][1]))
        return out

    def claim(self, consumer: str, entry_id: str, min_idle_s: float) -> bool:
        """Take one stale job over; False if another worker was quicker (or its owner woke)."""
        got = self.r.xclaim(self.keys.jobs, GROUP, consumer, int(min_idle_s * 1000), [entry_id],
                            justid=True)
        return bool(got)

    def callback_id_of(self, entry_id: str, fields: dict[str, str]) -> str | None:
        """The callback a job stands for (a redis-cli job: once the worker created it)."""
        return fields.get("callback_id") or self.r.get(self.keys.job(entry_id))

    def touch(self, consumer: str, entry_ids: list[str]) -> None:
        """Reset the idle time of this worker's jobs: it is alive and still owns them."""
        if entry_ids:
            self.r.xclaim(self.keys.jobs, GROUP, consumer, 0, entry_ids, justid=True)

    def ack(self, entry_id: str) -> None:
        self.r.xack(self.keys.jobs, GROUP, entry_id)

    def dead_letter(self, entry_id: str, fields: dict[str, Any], reason: str) -> None:
        """Move an invalid job aside with its payload and the reason; never drop it."""
        pipe = self.r.pipeline(transaction=True)
        pipe.xadd(self.keys.dead, {"entry_id": entry_id, "payload": json.dumps(fields),
                                   "reason": reason}, maxlen=DEAD_MAXLEN, approximate=True)
        pipe.xack(self.keys.jobs, GROUP, entry_id)
        pipe.execute()

    def fan_out_done(self, entry_id: str, items: list[Any], ids: list[str | None],
                     rejected: list[tuple[int, str]], single: bool = False) -> None:
        """A redis-cli batch job handled: its rejected items dead-lettered (each with its
        index and reason), ``job:<entry>`` set to the callbacks made (JSON list, null where
        rejected; ``single``: the one callback's id), the job acknowledged; in one
        transaction."""
        pipe = self.r.pipeline(transaction=True)
        for index, reason in rejected:
            payload = json.dumps({"request": json.dumps(items[index]), "batch_index": index})
            pipe.xadd(self.keys.dead, {"entry_id": entry_id, "payload": payload,
                                       "reason": f"item {index}: {reason}"},
                      maxlen=DEAD_MAXLEN, approximate=True)
        pipe.set(self.keys.job(entry_id), str(ids[0]) if single else json.dumps(ids),
                 ex=self.record_ttl_s)
        pipe.xack(self.keys.jobs, GROUP, entry_id)
        pipe.execute()

    def create_from_job(self, cb: Callback, entry_id: str, dest_max_per_hour: int = -1) -> bool:
        """Store the callback a redis-cli job became (idempotent on redelivery), counted
        against the per-destination limit like an API request (-1: no limit). True when
        stored now, False when a redelivery found it; :class:`Refused` over the limit."""
        dests = sorted({destination(leg.to) for leg in cb.legs.values()})
        cb.dest_counted = True  # stored with the record only if the script admits it
        keys = [self.keys.callback(cb.id), self.keys.job(entry_id), self.keys.callbacks,
                self.keys.state(cb.state), *[self.keys.dest(d) for d in dests]]
        args = [_dump(cb), cb.id, cb.created_at, dest_max_per_hour, DEST_WINDOW_S,
                self.record_ttl_s]
        reply = self._admit_job(keys=keys, args=args)
        if reply[0] != "dest":
            self.outbox.enqueue_now(cb)  # its status webhooks (the script could not carry them)
        else:
            cb.dest_counted = False
            number = dests[int(reply[2]) - 1]
            raise Refused("dest", int(reply[1]),
                          f"{number} was called {dest_max_per_hour} times this hour")
        return bool(reply[0] == "ok")

    def release_destinations(self, cb: Callback) -> None:
        """Give back the cooldown counts of the legs a finished callback never dialled:
        nobody was rung, so a cancelled or failed request does not block a number for
        others. Callers do it once, for a callback whose ``dest_counted`` they clear."""
        spared = sorted({destination(leg.to) for leg in cb.legs.values()
                         if "dialed" not in leg.times})
        if spared:
            self._release(keys=[self.keys.dest(d) for d in spared])

    # -- control ------------------------------------------------------------------

    def request_cancel(self, callback_id: str) -> None:
        """Ask for a live callback to be cancelled: remembered first, then announced, so a
        worker either hears it on the control stream or finds it when it adopts the callback."""
        with self.r.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.cancel(callback_id), "1", ex=CANCEL_TTL_S)
            pipe.xadd(self.keys.control, {"cmd": "cancel", "callback_id": callback_id},
                      maxlen=CONTROL_MAXLEN, approximate=True)
            pipe.execute()

    def cancel_requested(self, callback_id: str) -> bool:
        return bool(self.r.exists(self.keys.cancel(callback_id)))

    def control_tail(self) -> str:
        """The id of the control stream's last entry ("0-0" while it has none)."""
        last = self.r.xrevrange(self.keys.control, count=1)
        return str(last[0][0]) if last else "0-0"

    def read_control(self, last_id: str, block_ms: int) -> list[tuple[str, dict[str, str]]]:
        reply = self.r.xread({self.keys.control: last_id}, block=block_ms, count=100)
        if not reply:
            return []
        return [(entry_id, fields) for _stream, entries in reply for entry_id, fields in entries]

    # -- operations (fsctl.ops): heartbeats, counters, queue --------------------------------

    def heartbeat(self, name: str, node: str, esl_connected: bool, ttl_s: float) -> None:
        """This worker is alive (for ``ttl_s``) and its event socket is (not) connected."""
        doc = json.dumps({"node": node, "esl_connected": esl_connected, "ts": time.time()})
        pipe = self.r.pipeline(transaction=False)
        pipe.sadd(self.keys.workers, name)
        pipe.set(self.keys.worker(name), doc, px=max(1, int(ttl_s * 1000)))
        pipe.execute()

    def forget_worker(self, name: str) -> None:
        """A worker stopping cleanly: it no longer counts for readiness."""
        pipe = self.r.pipeline(transaction=False)
        pipe.srem(self.keys.workers, name)
        pipe.delete(self.keys.worker(name))
        pipe.execute()

    def worker_heartbeats(self) -> dict[str, dict[str, Any]]:
        """The workers whose heartbeat has not expired: name → node, esl_connected, ts.
        Names whose heartbeat expired are dropped from the set."""
        names = sorted(self.r.smembers(self.keys.workers))
        if not names:
            return {}
        raws = self.r.mget([self.keys.worker(n) for n in names])
        out: dict[str, dict[str, Any]] = {}
        gone = []
        for name, raw in zip(names, raws, strict=True):
            if raw:
                out[name] = json.loads(raw)
            else:
                gone.append(name)
        if gone:
            self.r.srem(self.keys.workers, *gone)
        return out

    def outcome_counts(self) -> dict[str, int]:
        """Callbacks finished so far (all workers), per ``<state>:<outcome>``."""
        return {k: int(v) for k, v in self.r.hgetall(self.keys.outcomes).items()}

    def webhook_result_counts(self) -> dict[str, int]:
        """Webhook deliveries settled so far (all senders), per result."""
        return {k: int(v) for k, v in self.r.hgetall(self.keys.webhook_results).items()}

    def queue_stats(self) -> tuple[int, float | None, dict[str, int]]:
        """Callbacks queued, the creation time of the oldest queued one (None: none), and
        how many callbacks each state index holds (finished ones: kept record_ttl_s)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zrange(self.keys.state("queued"), 0, 0, withscores=True)
        for state in CALLBACK_STATES:
            pipe.zcard(self.keys.state(state))
        oldest, *counts = pipe.execute()
        by_state = dict(zip(CALLBACK_STATES, (int(n) for n in counts), strict=True))
        return by_state["queued"], (float(oldest[0][1]) if oldest else None), by_state
