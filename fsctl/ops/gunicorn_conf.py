"""gunicorn configuration of the API: ``gunicorn -c python:fsctl.ops.gunicorn_conf``.

- the gevent worker (``-k gevent``), ``FSCTL_API_WORKERS`` processes (default 1: one gevent
  process answers thousands of concurrent requests; add one per spare core);
- bind to ``FSCTL_API_HOST:FSCTL_API_PORT`` (127.0.0.1:8080), as ``fsctl api`` does;
- TCP_NODELAY on the listening socket, which accepted sockets inherit (pywsgi writes headers
  and body apart: without it a keep-alive client waits ~40 ms for a delayed ACK);
- the access log is fsctl's own (logger ``fsctl.access``, one line a request with method,
  path, status, duration and the callback id, in FSCTL_LOG_FORMAT), set up here; gunicorn's
  own access log stays off (it would say the same twice, without the callback id);
- gunicorn's error log goes through the same formatter (JSON off a terminal).

Anything here can be overridden on the command line (``-b 127.0.0.1:9000``); set the number
of processes with FSCTL_API_WORKERS rather than ``-w``: with several, their request counters
(``fsctl_api_*``) are kept in files under ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary
directory unless set; emptied of old counts at start), so a scrape of any process shows the
sum of all.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from fsctl.ops.logs import DEFAULT_LOG_LEVEL
from fsctl.settings import load

_settings = load()

GRACEFUL_TIMEOUT_S = 10
"""On SIGTERM, how long a worker process may finish the requests it has."""
KEEPALIVE_S = 5
"""How long an idle keep-alive connection is kept open."""
WORKER_CONNECTIONS = 1000
"""Most concurrent connections of one gevent worker process."""

wsgi_app = "fsctl.wsgi:app"
worker_class = "gevent"
workers = _settings.api_workers
worker_connections = WORKER_CONNECTIONS
_host = _settings.api_host
bind = [f"[{_host}]:{_settings.api_port}" if ":" in _host else f"{_host}:{_settings.api_port}"]
backlog = 1024
keepalive = KEEPALIVE_S
graceful_timeout = GRACEFUL_TIMEOUT_S
proc_name = "fsctl-api"
accesslog = None  # fsctl.access is the access log (below)
# gunicorn >= 25's control socket (gunicornc) would go to $HOME/.gunicorn: the service user has
# no home, and systemd's reload (HUP) and stop (TERM) are all it needs (ignored by older ones)
control_socket_disable = True

_level = (os.environ.get("FSCTL_LOG_LEVEL") or DEFAULT_LOG_LEVEL).upper()
loglevel = _level.lower()
logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"fsctl": {"()": "fsctl.ops.logs.handler"}},
    "root": {"level": _level, "handlers": ["fsctl"]},
    "loggers": {
        "fsctl.access": {"level": _level, "propagate": True},  # the access log
        "gunicorn.error": {"level": _level, "handlers": ["fsctl"], "propagate": False},
        "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
    },
}


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""fsctl.ops.metrics.MULTIPROC_ENV, not imported: prometheus_client must not be imported in
the master before it is set (the forked workers would inherit its single-process mode)."""
_made_dir: str | None = None
if workers > 1 and not os.environ.get(MULTIPROC_ENV):
    # set before any worker process imports prometheus_client (it reads it at import)
    _made_dir = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="fsctl-metrics-")


def on_starting(server: Any) -> None:
    """Counts a previous run left in PROMETHEUS_MULTIPROC_DIR would be added to this run's."""
    path = os.environ.get(MULTIPROC_ENV)
    if path and os.path.isdir(path):
        for old in Path(path).glob("*.db"):
            old.unlink()


def on_exit(server: Any) -> None:
    if _made_dir:
        shutil.rmtree(_made_dir, ignore_errors=True)


def _nodelay(server: Any) -> None:
    for listener in getattr(server, "LISTENERS", []):
        sock = getattr(listener, "sock", None)
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def when_ready(server: Any) -> None:
    """The listeners exist (before any worker is forked): TCP_NODELAY on them."""
    _nodelay(server)
    server.log.info("fsctl API on %s, %d gevent worker(s)", ", ".join(bind), workers)
