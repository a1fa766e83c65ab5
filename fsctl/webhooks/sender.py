"""``fsctl webhooks``: the process that delivers status webhooks.

A bounded pool of greenlets takes due deliveries from Redis (one per callback at a time,
so each callback's deliveries arrive in order), checks the URL again (the SSRF guard; DNS
may have changed), signs and POSTs it with httpx to the address just checked: bounded
timeouts, no redirects followed, at most RESPONSE_READ_MAX_BYTES of the answer read.
2xx: delivered. Connection errors, timeouts, 408, 429 and 5xx: tried again after an
exponential backoff with jitter, up to ``webhook_max_attempts``; then dead-lettered with the
reason. 410: the callback's deliveries to that URL stop. Another 4xx, a redirect or a refused
address: dead at once (replayable through the API). It never touches call control.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections import Counter
from collections.abc import Callable

import gevent
import httpx
import redis
from gevent.event import Event as GEvent
from gevent.pool import Pool

from .. import __version__
from ..errors import HostUnresolved, UrlRefused
from ..settings import Settings
from ..store import Keys, connect
from .events import RESULTS
from .guard import check_url
from .queue import Delivery, DeliveryQueue
from .signing import Signer

log = logging.getLogger(__name__)

RESPONSE_READ_MAX_BYTES = 4096
"""Most bytes of a receiver's answer read (kept for the log of a failure)."""
LEASE_MARGIN_S = 2.0
"""A leased callback is held this much longer than an attempt may take."""
IDLE_POLL_S = 0.05
"""Pause before looking for due deliveries again when none were due."""
REDIS_RETRY_S = 0.5
"""Pause after a Redis error."""


class AttemptTimeout(Exception):
    """The whole attempt outlived ``webhook_timeout_s``."""


class Sender:
    """Delivers due status webhooks until stopped."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None,
                 on_result: Callable[[str, str], None] | None = None) -> None:
        self.settings = settings
        self.r = client or connect(settings.redis_url)
        self.queue = DeliveryQueue(self.r, Keys(settings.redis_prefix), settings.record_ttl_s)
        self.signer = Signer(settings.webhook_secrets)
        self.stats: Counter[str] = Counter({name: 0 for name in RESULTS})
        """Deliveries by result: delivered, retried (attempts that will be made again), dead,
        gone (dropped because the URL answered 410)."""
        self.on_result = on_result
        self.results_key = Keys(settings.redis_prefix).webhook_results
        self.pool = Pool(settings.webhook_concurrency)
        timeout = settings.webhook_timeout_s
        self.http = httpx.Client(
            timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False,
            limits=httpx.Limits(max_connections=settings.webhook_concurrency,
                                max_keepalive_connections=settings.webhook_concurrency))
        self.stopping = GEvent()
        self._loop: gevent.Greenlet | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> Sender:
        self._loop = gevent.spawn(self.run)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop leasing; let attempts under way finish for up to ``timeout_s`` (what is cut
        off is tried again after its lease)."""
        self.stopping.set()
        if self._loop is not None:
            self._loop.join(timeout=timeout_s)
        self.pool.join(timeout=timeout_s)
        self.pool.kill(timeout=1)
        self.http.close()

    def run(self) -> None:
        lease_s = self.settings.webhook_timeout_s + LEASE_MARGIN_S
        while not self.stopping.is_set():
            free = self.pool.free_count()
            if free <= 0:
                self.pool.wait_available(timeout=0.5)
                continue
            now = time.time()
            try:
                due = self.queue.lease(now, free, now + lease_s)
            except redis.RedisError as exc:
                log.warning("webhooks: redis unavailable: %s", exc)
                self.stopping.wait(REDIS_RETRY_S)
                continue
            for callback_id, msg_id in due:
                self.pool.spawn(self._attempt, callback_id, msg_id)
            if not due:
                self.stopping.wait(IDLE_POLL_S)

    # -- one attempt --------------------------------------------------------------------

    def _count(self, result: str, callback_id: str) -> None:
        self.stats[result] += 1
        try:  # the API's /metrics shows every sender's counts (fsctl_webhook_deliveries)
            self.r.hincrby(self.results_key, result, 1)
        except redis.RedisError as exc:
            log.warning("callback %s: webhook %s not counted, redis: %s", callback_id, result,
                        exc)
        if self.on_result is not None:
            self.on_result(result, callback_id)

    def _attempt(self, callback_id: str, msg_id: str) -> None:
        try:
            d = self.queue.load(msg_id)
            if d is None:  # its hash was deleted by hand: take it off the queue, go on
                log.error("callback %s: delivery %s vanished from Redis; skipped", callback_id,
                          msg_id)
                self.queue.delivered(Delivery(msg_id, callback_id, "", "", 0, "", 0, ""),
                                     time.time())
                return
            self._settle(d, *self._post(d))
        except redis.RedisError as exc:
            # Its lease runs out and it is tried again: at least once, never lost.
            log.warning("callback %s: delivery %s not settled, redis: %s", callback_id, msg_id,
                        exc)
        except Exception:
            log.exception("callback %s: delivery %s failed unexpectedly; tried again after "
                          "its lease", callback_id, msg_id)

    def _post(self, d: Delivery) -> tuple[str, str]:
        """One attempt: (verdict, detail); verdict is ok, retry, dead or gone."""
        try:
            target = check_url(d.url, self.settings.webhook_allow_private)
        except HostUnresolved as exc:
            return "retry", str(exc)
        except UrlRefused as exc:
            return "dead", str(exc)
        now = time.time()
        headers = {"content-type": "application/json",
                   "user-agent": f"fsctl-webhooks/{__version__}",
                   **self.signer.headers(d.id, d.body, now)}
        url = httpx.URL(d.url)
        headers["host"] = url.netloc.decode("ascii")  # the name, not the address connected to
        extensions = ({"sni_hostname": url.raw_host.decode("ascii")}
                      if target.scheme == "https" else {})
        try:
            with gevent.Timeout(self.settings.webhook_timeout_s, AttemptTimeout), \
                    self.http.stream("POST", url.copy_with(host=target.address),
                                     content=d.body.encode(), headers=headers,
                                     extensions=extensions) as resp:
                answer = _read_some(resp)
                status = resp.status_code
                location = resp.headers.get("location", "")
        except AttemptTimeout:
            return "retry", f"no answer within {self.settings.webhook_timeout_s}s"
        except httpx.TimeoutException as exc:
            return "retry", f"timeout: {type(exc).__name__}"
        except (httpx.TransportError, OSError, socket.gaierror) as exc:
            return "retry", f"connection failed: {exc or type(exc).__name__}"
        if 200 <= status < 300:
            return "ok", f"HTTP {status}"
        if status == 410:
            return "gone", "HTTP 410"
        if status >= 500 or status in (408, 429):
            return "retry", f"HTTP {status}: {answer[:200]!r}"
        if 300 <= status < 400:
            return "dead", f"HTTP {status}: redirect to {location[:200]!r} not followed"
        return "dead", f"HTTP {status}: {answer[:200]!r}"

    def _settle(self, d: Delivery, verdict: str, detail: str) -> None:
        now = time.time()
        attempts = d.attempts + 1
        if verdict == "ok":
            self.queue.delivered(d, now)
            log.info("callback %s: %s (seq %d) delivered (%s, attempt %d)", d.callback_id,
                     d.event, d.seq, detail, attempts)
            self._count("delivered", d.callback_id)
        elif verdict == "gone":
            dropped = self.queue.gone(d, now)
            log.warning("callback %s: %s answered 410 Gone: no more deliveries to it (%d dropped)",
                        d.callback_id, d.url, max(dropped, 0))
            self._count("gone", d.callback_id)
        elif verdict == "retry" and attempts < self.settings.webhook_max_attempts:
            delay = self.backoff_s(attempts)
            self.queue.retry(d, now, now + delay, attempts, detail)
            log.warning("callback %s: %s (seq %d) attempt %d failed (%s); again in %.2fs",
                        d.callback_id, d.event, d.seq, attempts, detail, delay)
            self._count("retried", d.callback_id)
        else:
            reason = (f"{attempts} attempts; last: {detail}" if verdict == "retry" else detail)
            self.queue.dead(d, now, attempts, reason)
            log.error("callback %s: %s (seq %d) dead-lettered: %s", d.callback_id, d.event,
                      d.seq, reason)
            self._count("dead", d.callback_id)

    def backoff_s(self, attempts: int) -> float:
        """Delay before attempt ``attempts + 1``: exponential, capped, half of it jitter."""
        s = self.settings
        ceiling = min(s.webhook_backoff_max_s, s.webhook_backoff_base_s * 2 ** (attempts - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def _read_some(resp: httpx.Response) -> str:
    """At most RESPONSE_READ_MAX_BYTES of the answer, as text (the rest is not read)."""
    got = b""
    for chunk in resp.iter_raw():
        got += chunk
        if len(got) >= RESPONSE_READ_MAX_BYTES:
            break
    return got[:RESPONSE_READ_MAX_BYTES].decode("utf-8", "replace")


def main() -> int:
    """``fsctl webhooks``: deliver until SIGTERM / SIGINT."""
    import signal

    from .. import settings as settings_mod

    s = settings_mod.load()
    sender = Sender(s)
    stop = GEvent()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    sender.start()
    log.info("webhooks: delivering (pool %d, timeout %.1fs, %d attempts at most)",
             s.webhook_concurrency, s.webhook_timeout_s, s.webhook_max_attempts)
    stop.wait()
    log.info("webhooks: stopping; %s", dict(sender.stats))
    sender.stop()
    return 0
