"""The operations layer of HTTP: a WSGI middleware that answers ``/livez``, ``/readyz`` and
``/metrics`` itself, and counts and logs every request (one access line: method, path,
status, duration, the callback id when known, the error message of a 4xx/5xx).

The API wraps its Flask app in it (:func:`install`), so ``fsctl api``, gunicorn and the tests
serve the same; a worker serves it, around nothing else, on its metrics port
(:func:`serve_worker`). These endpoints are operations, not the public API: they are not in
the OpenAPI document.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from gevent.pywsgi import WSGIServer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from . import health
from .metrics import ApiMetrics

if TYPE_CHECKING:
    from flask import Flask

    from ..store import Store
    from ..worker import Worker

log = logging.getLogger(__name__)
access_log = logging.getLogger("fsctl.access")

BASE = "/voice/call/callback"
PROBES = frozenset({"/livez", "/readyz", "/metrics", "/health", "/health/ready"})
"""Paths probed every few seconds: their access lines are DEBUG, not INFO."""
KNOWN_ROUTES = frozenset({BASE, "/openapi.json", *PROBES})
"""Paths that are their own metrics label (any other: ``other``, bounding the labels)."""
ERROR_KEY = "fsctl.error"
"""WSGI environ key where the API leaves an error's message and errors for the access line."""
_ID_RE = re.compile(r"/voice/call/callback/([0-9a-f]{32})$")

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def route_of(path: str) -> str:
    """The metrics label of a path: a known route, the callback item route, or other."""
    if path in KNOWN_ROUTES:
        return path
    if path.startswith(BASE + "/"):
        return BASE + "/{callback_id}"
    return "other"


class OpsMiddleware:
    """Answers the operations endpoints; counts and logs every request to ``app``."""

    def __init__(self, app: WsgiApp, registry: Callable[[], CollectorRegistry],
                 readiness: Callable[[], health.Readiness],
                 metrics: ApiMetrics | None = None) -> None:
        """``registry``: what a scrape of /metrics reads (called on each scrape)."""
        self.app, self.registry, self.readiness, self.metrics = app, registry, readiness, metrics

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        t0 = time.perf_counter()
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        seen: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            seen["status"], seen["headers"] = status, headers
            return start_response(status, headers, *exc)

        if path in ("/livez", "/readyz", "/metrics") and method in ("GET", "HEAD"):
            body = self._ops(path, capture)
        else:
            body = self.app(environ, capture)
        duration_s = time.perf_counter() - t0
        status = int(str(seen.get("status", "500")).split(" ", 1)[0])
        if self.metrics is not None:
            self.metrics.observe(method, route_of(path), status, duration_s)
        self._log(environ, method, path, status, duration_s, seen.get("headers") or [])
        return body

    def _ops(self, path: str, start_response: StartResponse) -> list[bytes]:
        if path == "/metrics":
            data = generate_latest(self.registry())
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                                      ("Content-Length", str(len(data)))])
            return [data]
        if path == "/livez":
            ok, doc = True, health.live()
        else:
            ok, doc = self.readiness()
        data = json.dumps(doc, separators=(",", ":")).encode()
        start_response("200 OK" if ok else "503 Service Unavailable",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                        ("Cache-Control", "no-store")])
        return [data]

    def _log(self, environ: Environ, method: str, path: str, status: int, duration_s: float,
             headers: list[tuple[str, str]]) -> None:
        level = logging.DEBUG if path in PROBES else logging.INFO
        if not access_log.isEnabledFor(level):
            return
        fields: dict[str, Any] = {"method": method, "path": path, "status": status,
                                  "duration_ms": round(duration_s * 1000, 3)}
        found = _ID_RE.search(path)
        if found is None:
            location = next((v for k, v in headers if k.lower() == "location"), "")
            found = _ID_RE.search(location)
        if found is not None:
            fields["callback_id"] = found.group(1)
        error = environ.get(ERROR_KEY)
        suffix = ""
        if error is not None:
            message, errors = error
            fields["error"] = message
            if errors is not None:
                fields["errors"] = errors
            suffix = f": {message}" + (f" {json.dumps(errors, separators=(',', ':'))}"
                                       if errors is not None else "")
        cid = f" callback {fields['callback_id']}" if "callback_id" in fields else ""
        access_log.log(level, "%s %s %d %.1fms%s%s", method, path, status,
                       duration_s * 1000, cid, suffix, extra=fields)


def install(app: Flask, store: Store) -> ApiMetrics:
    """Wrap the API app: /livez, /readyz, /metrics, request metrics, the access log."""
    metrics = ApiMetrics(store)
    app.wsgi_app = OpsMiddleware(app.wsgi_app,  # type: ignore[method-assign]
                                 metrics.scrape_registry,
                                 lambda: health.api_readiness(store), metrics)
    app.extensions["fsctl.metrics"] = metrics
    return metrics


def _not_found(_environ: Environ, start_response: StartResponse) -> list[bytes]:
    body = b'{"code":404,"status":"Not Found","message":"only /livez, /readyz, /metrics"}'
    start_response("404 Not Found", [("Content-Type", "application/json"),
                                     ("Content-Length", str(len(body)))])
    return [body]


def serve_worker(worker: Worker, host: str, port: int) -> WSGIServer:
    """Start the worker's /metrics, /livez and /readyz on ``host:port``; returns the server."""
    registry = worker.metrics.registry
    app = OpsMiddleware(_not_found, lambda: registry, lambda: health.worker_readiness(worker))
    server = WSGIServer((host, port), app, log=None)
    server.start()
    log.info("worker %s: metrics on http://%s:%d/metrics", worker.name, host,
             server.server_port)
    return server
