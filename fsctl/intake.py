"""Jobs in: claim a queued callback, adopt one a dead worker left live, create one from a
redis-cli request (or dead-letter it with the reason). Never a second dial: a started
callback is only adopted, by a worker of the FreeSWITCH node its channels are on."""

from __future__ import annotations

import json
import logging
import time
import uuid as uuidlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis
from marshmallow import ValidationError

from . import schemas
from .callback import Due, apply
from .dispatch import StartPlan
from .errors import PolicyDenied, StoreError
from .model import Callback
from .store import OPEN_OWNER, Limits, Refused

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger(__name__)

JOB_NAMESPACE = uuidlib.UUID("5b0e7c53-2f6a-4d0e-9b7e-6f2a1c1d2e3f")
"""Namespace of the callback ids derived from redis-cli job entry ids (uuid5)."""


ENTRY_TIME_MAX_AGE_S = 86_400
"""A job's entry id older than this is taken for a hand-made id, not for when it was added."""


def entry_time(entry_id: str, now: float) -> float:
    """When a stream entry was added (its id is ``<ms>-<seq>``, Redis's clock): a redis-cli
    job waited from then, not from when a worker read it. ``now`` for ids that cannot be."""
    ms, _, _ = entry_id.partition("-")
    added = int(ms) / 1000 if ms.isdigit() else now
    return added if now - ENTRY_TIME_MAX_AGE_S < added <= now else now


def _reason(exc: Exception) -> str:
    """Why a redis-cli request is invalid, for its dead-letter entry."""
    if isinstance(exc, ValidationError):
        return json.dumps(exc.messages)
    if isinstance(exc, PolicyDenied):
        return f"{exc}: {json.dumps(exc.errors)}"
    return str(exc)


class Intake:
    """The worker's job intake (I/O through the worker's store and link)."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.claiming: set[str] = set()
        """Callback ids being claimed right now (a claim yields on its Redis round trip)."""

    def resume_own_jobs(self) -> None:
        """After a restart under the same name: this worker's unacknowledged jobs first."""
        self.take_all(self.w.store.own_pending(self.w.name))

    def take_all(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        """Claim a batch of jobs: their records in one round trip (redis-cli requests are
        made callbacks first). A job Redis failed on is left pending, to be taken again."""
        claims: list[tuple[str, str, dict[str, str]]] = []
        for entry_id, fields in entries:
            if "requests" in fields and "callback_id" not in fields:
                self._fan_out(entry_id, fields)
                continue
            try:
                callback_id = self._callback_of(entry_id, fields)
            except redis.RedisError as exc:
                log.warning("job %s: redis failed, left pending: %s", entry_id, exc)
                continue
            except Exception as exc:
                log.exception("job %s: unexpected error", entry_id)
                self.w.store.dead_letter(entry_id, fields, f"internal error: {exc!r}")
                continue
            if callback_id is not None:
                claims.append((callback_id, entry_id, fields))
        if not claims:
            return
        self.claiming.update(callback_id for callback_id, _, _ in claims)
        # The first ones the node has pacer slots for now are also started in the claim's
        # own write (one write, not two).
        plans = [StartPlan(self.w) if now else None
                 for now in self.w.dispatcher.start_now(len(claims))]
        try:
            results = self.w.store.swap_many([
                (callback_id, self._claim_change(entry_id, plan), None)
                for (callback_id, entry_id, _), plan in zip(claims, plans, strict=True)])
        except redis.RedisError as exc:
            log.warning("jobs %s: redis failed, left pending: %s",
                        ", ".join(entry_id for _, entry_id, _ in claims), exc)
            return
        finally:
            self.claiming.difference_update(callback_id for callback_id, _, _ in claims)
        for (callback_id, entry_id, fields), (cb, raw), plan in zip(claims, results, plans,
                                                                   strict=True):
            try:
                if cb is not None and plan is not None and plan.actions:
                    log.info("callback %s: claimed job %s and started", cb.id, entry_id)
                    self.w.adopt(cb, entry_id)
                    self.w.dispatcher.started(cb, plan)
                    continue
                self._claimed(callback_id, entry_id, fields, cb, raw)
            except redis.RedisError as exc:
                log.warning("job %s: redis failed, left pending: %s", entry_id, exc)
            except Exception as exc:
                log.exception("job %s: unexpected error", entry_id)
                self.w.store.dead_letter(entry_id, fields, f"internal error: {exc!r}")

    def _callback_of(self, entry_id: str, fields: dict[str, str]) -> str | None:
        """The callback a job stands for, None when there is nothing to claim (it is live
        here already, being claimed, or the job was invalid and dead-lettered)."""
        callback_id = fields.get("callback_id")
        if callback_id is None:
            callback_id = self._create_from_request(entry_id, fields)
            if callback_id is None:
                return None
        if callback_id in self.w.live or callback_id in self.claiming:
            if callback_id in self.w.live:
                self.w.entries[callback_id] = entry_id
            return None
        return callback_id

    def _claim_change(self, entry_id: str, start: StartPlan | None = None
                      ) -> Callable[[Callback], bool]:
        """The claim's change; with ``start``, a queued callback is started in it too."""
        node, core, name = self.w.link.node, self.w.link.core_uuid, self.w.name

        def claim(cb: Callback) -> bool:
            if start is not None:
                start.actions.clear()
            if cb.final:
                return False
            if cb.state == "scheduled":
                apply(cb, Due(self.w.clock()))  # its job exists: its time has come
            if cb.state == "queued":
                cb.node, cb.core_uuid = node, core  # started when it can be dialled
            elif cb.node != node:
                return False  # live on another FreeSWITCH: only that node's worker adopts it
            cb.worker, cb.job_id = name, entry_id
            if start is not None and cb.state == "queued":
                start.change(cb)
            return True

        return claim

    def _claimed(self, callback_id: str, entry_id: str, fields: dict[str, str],
                 cb: Callback | None, raw: bytes | str | None) -> None:
        """After the claim's compare-and-set: start, adopt, or let the job go."""
        if cb is None:
            self.w.store.dead_letter(entry_id, fields, f"no callback record {callback_id!r}")
            return
        if cb.final:
            self.w.store.ack(entry_id)
            return
        if cb.worker != self.w.name:
            log.info("callback %s: live on node %s, not ours (%s)", cb.id, cb.node,
                     self.w.link.node)
            return
        self.w.adopt(cb, entry_id)
        if cb.state == "queued":
            log.info("callback %s: claimed job %s", cb.id, entry_id)
            # (a queued callback is cancelled by the API in its record: the start sees it)
            self.w.dispatcher.start_later(cb.id, raw)
            return
        log.warning("callback %s: adopting (state %s) from a previous worker", cb.id, cb.state)
        if self.w.link.core_uuid is not None:
            self.w.recovery.reconcile_one(cb, self.w.link.core_uuid, self.w.clock())
        self.w.resume_dialing(cb)
        # Checked once the callback is live here: a cancel asked for before that was not
        # heard on the control stream (no worker had it), one asked for after it will be.
        if self.w.store.cancel_requested(cb.id):
            self.w.cancel(cb.id)

    def _fan_out(self, entry_id: str, fields: dict[str, str]) -> None:
        """A redis-cli batch (``requests``: a JSON list of callback requests): each valid one
        becomes a callback with its own job (stored as an API request is, counted against the
        per-destination limit), each invalid one is dead-lettered with its index and reason,
        then the batch's job is acknowledged and ``job:<entry>`` lists the callbacks made (in
        order, null for a rejected one). Redelivered, it makes nothing twice: the callbacks'
        ids come from the entry id and each item's index."""
        try:
            items = json.loads(fields["requests"])
        except ValueError as exc:
            self.w.store.dead_letter(entry_id, fields, f"invalid batch: not JSON: {exc}")
            return
        most = self.w.settings.batch_max
        if not isinstance(items, list) or not 1 <= len(items) <= most:
            self.w.store.dead_letter(entry_id, fields, f"invalid batch: 'requests' must be a "
                                     f"JSON list of 1 to {most} callback requests")
            return
        made: list[tuple[int, Callback]] = []
        rejected: list[tuple[int, str]] = []
        for i, body in enumerate(items):
            try:
                made.append((i, self._build(body, uuidlib.uuid5(JOB_NAMESPACE,
                                                                f"{entry_id}#{i}").hex,
                                            entry_time(entry_id, time.time()))))
            except (ValueError, ValidationError, PolicyDenied) as exc:
                rejected.append((i, f"invalid request: {_reason(exc)}"))
        self._store_made(entry_id, items, made, rejected)

    def _store_made(self, entry_id: str, items: list[object], made: list[tuple[int, Callback]],
                    rejected: list[tuple[int, str]], single: bool = False) -> None:
        """Store the callbacks a redis-cli job made (as API requests are: each with its own
        job, or scheduled), dead-letter what was rejected, acknowledge the job."""
        store = self.w.store
        try:
            limits = Limits(owner=OPEN_OWNER, dest_max_per_hour=self.w.settings.dest_max_per_hour)
            stored = store.create_many([(cb, limits) for _, cb in made]) if made else []
            ids: list[str | None] = [None] * len(items)
            for (index, cb), result in zip(made, stored, strict=True):
                if isinstance(result, StoreError) and store.get(cb.id) is None:
                    rejected.append((index, f"refused: {result}"))
                else:
                    ids[index] = cb.id  # made now, or by an earlier delivery of this job
            if single and rejected:
                store.dead_letter(entry_id, {"request": json.dumps(items[0])}, rejected[0][1])
                return
            store.fan_out_done(entry_id, items, ids, sorted(rejected), single)
        except redis.RedisError as exc:
            log.warning("job %s: redis failed, left pending: %s", entry_id, exc)
            return
        log.info("job %s: %d callbacks made, %d items dead-lettered", entry_id,
                 len(items) - len(rejected), len(rejected))

    def _build(self, body: object, callback_id: str, now: float) -> Callback:
        """A queued callback from one redis-cli request (raises what makes it invalid)."""
        if not isinstance(body, dict):
            raise ValidationError({"_schema": ["request must be a JSON object"]})
        req = schemas.REQUEST_SCHEMA.load(body)
        return schemas.build_callback(req, self.w.settings, callback_id=callback_id, now=now)

    def _create_from_request(self, entry_id: str, fields: dict[str, str]) -> str | None:
        raw = fields.get("request")
        if raw is None:
            self.w.store.dead_letter(entry_id, fields, "job has neither 'callback_id' nor 'request'")
            return None
        try:
            cb = self._build(json.loads(raw), uuidlib.uuid5(JOB_NAMESPACE, entry_id).hex,
                             entry_time(entry_id, time.time()))
        except (ValueError, ValidationError, PolicyDenied) as exc:
            reason = _reason(exc)
            log.warning("job %s: invalid, dead-lettered: %s", entry_id, reason)
            self.w.store.dead_letter(entry_id, fields, f"invalid request: {reason}")
            return None
        if cb.state == "scheduled":
            self._store_made(entry_id, [json.loads(raw)], [(0, cb)], [], single=True)
            return None  # its own job comes when its time does
        cb.job_id = entry_id
        try:
            self.w.store.create_from_job(cb, entry_id, self.w.settings.dest_max_per_hour)
        except Refused as exc:  # the API's per-destination limit holds here too
            log.warning("job %s: refused, dead-lettered: %s", entry_id, exc)
            self.w.store.dead_letter(entry_id, fields, f"refused: {exc}")
            return None
        log.info("callback %s: created from redis-cli job %s", cb.id, entry_id)
        return cb.id

    def take_over_stale_jobs(self) -> None:
        """Claim the silent jobs that are ours to take: queued ones, or live on our node.

        A live callback on another node is left alone (never claimed), so it waits for a
        worker of its own node instead of bouncing between workers that cannot adopt it.
        Our own silent jobs are taken again too: a job a Redis error interrupted is left
        pending, and without this only a restart would retry it.
        """
        idle = self.w.settings.reclaim_idle_s
        for entry_id, consumer, fields in self.w.store.stale_jobs(idle):
            callback_id = self.w.store.callback_id_of(entry_id, fields)
            cb = self.w.store.get(callback_id) if callback_id else None
            if cb is not None and not cb.final and cb.state != "queued" \
                    and cb.node != self.w.link.node:
                continue
            if self.w.store.claim(self.w.name, entry_id, idle):
                log.warning("job %s: %s", entry_id, "retried" if consumer == self.w.name
                            else f"taken over from silent worker {consumer}")
                self.take_all([(entry_id, fields)])
