"""Liveness and readiness: what ``/livez`` and ``/readyz`` answer.

- ``/livez``: the process is up and answering (no dependency is asked).
- ``/readyz`` of the API: Redis answers, and at least one worker's heartbeat has not expired
  (it is alive) with its event socket to FreeSWITCH connected — so a callback accepted now
  gets dialled.
- ``/readyz`` of a worker (on its metrics port): Redis answers and its own event socket is
  connected.

Workers write their heartbeat (``Store.heartbeat``) every third of ``FSCTL_HEARTBEAT_TTL_S``
and at once when their event socket goes up or down; it expires after the TTL, so a killed
worker stops counting within that.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import redis

from ..store import Store

if TYPE_CHECKING:
    from ..worker import Worker

Readiness = tuple[bool, dict[str, Any]]
"""Ready or not, and the JSON document saying why."""


def live() -> dict[str, Any]:
    return {"status": "ok"}


def api_readiness(store: Store) -> Readiness:
    """Redis reachable and a worker alive with its event socket connected."""
    try:
        store.r.ping()
        beats = store.worker_heartbeats()
    except redis.RedisError as exc:
        return False, {"status": "not ready", "redis": f"unreachable: {exc}", "workers": {}}
    now = time.time()
    workers = {name: {"node": b.get("node"), "esl_connected": bool(b.get("esl_connected")),
                      "heartbeat_age_s": round(max(0.0, now - float(b.get("ts", now))), 3)}
               for name, b in beats.items()}
    ready = any(w["esl_connected"] for w in workers.values())
    doc: dict[str, Any] = {"status": "ready" if ready else "not ready", "redis": "ok",
                           "workers": workers}
    if not ready:
        doc["reason"] = ("no worker has its event socket connected" if workers
                         else "no worker heartbeat")
    return ready, doc


def worker_readiness(worker: Worker) -> Readiness:
    """This worker's Redis answers and its event socket is connected."""
    esl = worker.link.up.is_set()
    try:
        worker.store.r.ping()
        redis_state = "ok"
    except redis.RedisError as exc:
        redis_state = f"unreachable: {exc}"
    ready = esl and redis_state == "ok"
    return ready, {"status": "ready" if ready else "not ready", "redis": redis_state,
                   "esl_connected": esl, "node": worker.link.node, "worker": worker.name}
