"""Prometheus metrics (``fsctl_`` names), for the API and for each worker.

Each process has its own :class:`~prometheus_client.CollectorRegistry` (the API app and
each :class:`~fsctl.worker.Worker` their own), served at ``/metrics``.

Counting is kept out of the worker's hot path: counters move when a callback ends and
when a leg hangs up (state transitions, a few per callback), never per event; what is a
plain number already (originates sent, connects, live callbacks) is read at scrape time
by a collector. What the whole cluster shares — queue depth, the oldest queued callback's
age, callbacks per state and per outcome, workers ready — is read from Redis when the
API is scraped (:class:`RedisCollector`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..model import Callback, Leg
from ..store import Store
from ..webhooks.events import RESULTS as WEBHOOK_RESULTS

if TYPE_CHECKING:
    from ..worker import Worker

log = logging.getLogger(__name__)

ANSWER_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
                    120.0, 300.0)
"""Buckets of originate-to-answer, in seconds (ring time: up to the ring timeout, 300 s)."""
BRIDGE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Buckets of answer-to-bridge, in seconds (fsctl's own reaction, milliseconds when well)."""
HTTP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Buckets of the API's request durations, in seconds."""
NO_LABEL = "none"
"""Label value when there is none (no hangup cause, no SIP status, no outcome)."""
CHILDREN_CACHED_MAX = 1000
"""Most (method, route, status) label sets whose metric children the API keeps at hand."""
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Set (by fsctl.ops.gunicorn_conf with several worker processes): prometheus_client keeps
the counters in files there, and a scrape of any process adds up all of them."""


class WorkerMetrics:
    """A worker's counters and histograms, and the collector of its live numbers."""

    def __init__(self, worker: Worker, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.callbacks = Counter(
            "fsctl_worker_callbacks_finished", "Callbacks this worker saw end, by final state "
            "and outcome", ["state", "outcome"], registry=r)
        self.legs_hungup = Counter(
            "fsctl_worker_legs_hungup", "Legs hung up, by FreeSWITCH hangup cause",
            ["cause"], registry=r)
        self.legs_sip_status = Counter(
            "fsctl_worker_legs_sip_status", "Legs by the SIP final status FreeSWITCH recorded "
            "(counted when it becomes known: it may come after the hangup)", ["status"],
            registry=r)
        self.originate_to_answer = Histogram(
            "fsctl_worker_originate_to_answer_seconds", "From a leg's originate to its "
            "answer (observed when its callback ends)", buckets=ANSWER_BUCKETS_S, registry=r)
        self.answer_to_bridge = Histogram(
            "fsctl_worker_answer_to_bridge_seconds", "From the second leg's answer to the "
            "bridge (observed when its callback ends)", buckets=BRIDGE_BUCKETS_S, registry=r)
        self.throttled = Counter(
            "fsctl_worker_originates_throttled", "Originates FreeSWITCH refused for capacity "
            "(each is dialled again, up to 4 times)", registry=r)
        r.register(_WorkerCollector(worker))

    def callback_finished(self, cb: Callback) -> None:
        """A callback ended (its Finished action): its outcome and its legs' latencies."""
        self.callbacks.labels(cb.state, cb.outcome or NO_LABEL).inc()
        a, b = cb.legs["A"], cb.legs["B"]
        for leg in (a, b):
            times = leg.times
            if "answered" in times and "dialed" in times:
                self.originate_to_answer.observe(max(0.0, times["answered"] - times["dialed"]))
        if "answered" in a.times and "answered" in b.times:
            bridged = [t for t in (a.times.get("bridged"), b.times.get("bridged")) if t]
            if bridged:
                answered = max(a.times["answered"], b.times["answered"])
                self.answer_to_bridge.observe(max(0.0, min(bridged) - answered))

    def leg_changed(self, leg: Leg, was_hungup: bool, had_sip_status: bool) -> None:
        """A leg's state or SIP status changed on a hangup input: count what became known."""
        if not was_hungup and leg.state == "hungup":
            self.legs_hungup.labels(leg.hangup_cause or NO_LABEL).inc()
        if not had_sip_status and leg.sip_status:
            self.legs_sip_status.labels(leg.sip_status).inc()


class _WorkerCollector:
    """The worker's numbers that exist anyway, read at scrape time (no cost per call)."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker

    def describe(self) -> list[Metric]:
        return []  # registered without a collect at registration

    def collect(self) -> Iterator[Metric]:
        w = self.w
        up = GaugeMetricFamily("fsctl_worker_esl_connected",
                               "1 while the worker's event socket to FreeSWITCH is up",
                               labels=["node"])
        up.add_metric([w.link.node], 1.0 if w.link.up.is_set() else 0.0)
        yield up
        connects = w.link.connects
        yield CounterMetricFamily("fsctl_worker_esl_connects",
                                  "Successful connections to FreeSWITCH (the first included)",
                                  value=connects)
        yield CounterMetricFamily("fsctl_worker_esl_reconnects",
                                  "Connections to FreeSWITCH after the first (each one a loss "
                                  "and reconnect)", value=max(0, connects - 1))
        yield CounterMetricFamily("fsctl_worker_originates_sent",
                                  "Originates sent to FreeSWITCH", value=w.dispatcher.sent)
        yield CounterMetricFamily("fsctl_worker_originates_paced",
                                  "Times the dispatcher held an originate back to stay under "
                                  "its node's rate", value=w.dispatcher.paced)
        yield GaugeMetricFamily("fsctl_worker_originate_rate_limit",
                                "Originates per second this worker allows itself (0 until "
                                "the node's limits are known)",
                                value=w.dispatcher.budget.originates_per_s
                                if w.dispatcher.budget else 0.0)
        yield GaugeMetricFamily("fsctl_worker_live_callbacks",
                                "Callbacks this worker holds (claimed, not yet final)",
                                value=len(w.live))


class ApiMetrics:
    """The API's request counters and the Redis collector of the cluster's state."""

    def __init__(self, store: Store, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.requests = Counter("fsctl_api_requests", "HTTP requests answered, by method, "
                                "route and status", ["method", "route", "status"], registry=r)
        self.duration = Histogram("fsctl_api_request_duration_seconds", "Time spent answering "
                                  "an HTTP request, by method and route", ["method", "route"],
                                  buckets=HTTP_BUCKETS_S, registry=r)
        self.redis = RedisCollector(store)
        r.register(self.redis)
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        """(method, route, status) → its counter and histogram children (labels() once)."""

    def scrape_registry(self) -> CollectorRegistry:
        """What /metrics shows: this process's registry, or — several gunicorn processes
        sharing PROMETHEUS_MULTIPROC_DIR — every process's counters added up, and Redis's."""
        if not os.environ.get(MULTIPROC_ENV):
            return self.registry
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        merged.register(self.redis)
        return merged

    def observe(self, method: str, route: str, status: int, duration_s: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(method, route, str(status)),
                        self.duration.labels(method, route))
            if len(self._children) < CHILDREN_CACHED_MAX:
                self._children[key] = children
        children[0].inc()
        children[1].observe(duration_s)


class RedisCollector:
    """What all workers and APIs share, read from Redis at scrape time: a few commands in
    one round trip. Redis unreachable: ``fsctl_redis_up 0`` and nothing else from here."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("fsctl_redis_up", "1 when Redis answered this scrape")
        try:
            depth, oldest, by_state = self.store.queue_stats()
            outcomes = self.store.outcome_counts()
            webhooks = self.store.webhook_result_counts()
            beats = self.store.worker_heartbeats()
        except redis.RedisError as exc:
            log.warning("metrics: redis unavailable: %s", exc)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield GaugeMetricFamily("fsctl_queue_depth", "Callbacks queued (accepted, not yet "
                                "dialled)", value=depth)
        yield GaugeMetricFamily("fsctl_queue_oldest_age_seconds", "How long the oldest queued "
                                "callback has waited (0: none queued)",
                                value=max(0.0, time.time() - oldest) if oldest else 0.0)
        states = GaugeMetricFamily("fsctl_callbacks", "Callbacks per state (finished ones "
                                   "while their records are kept)", labels=["state"])
        for state, n in by_state.items():
            states.add_metric([state], n)
        yield states
        finished = CounterMetricFamily("fsctl_callbacks_finished", "Callbacks ended, all "
                                       "workers and APIs, by final state and outcome",
                                       labels=["state", "outcome"])
        for field, n in sorted(outcomes.items()):
            state, _, outcome = field.partition(":")
            finished.add_metric([state, outcome or NO_LABEL], n)
        yield finished
        deliveries = CounterMetricFamily("fsctl_webhook_deliveries", "Status-webhook attempts "
                                         "settled, all senders: delivered, retried (tried "
                                         "again later), dead (dead-lettered), gone (410)",
                                         labels=["result"])
        for result in WEBHOOK_RESULTS:
            deliveries.add_metric([result], webhooks.get(result, 0))
        yield deliveries
        yield GaugeMetricFamily("fsctl_workers_alive", "Workers whose heartbeat has not "
                                "expired", value=len(beats))
        yield GaugeMetricFamily("fsctl_workers_ready", "Workers alive with their event socket "
                                "connected", value=sum(1 for b in beats.values()
                                                       if b.get("esl_connected")))
