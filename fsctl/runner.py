"""``fsctl run``: the embedded default — a local redis-server, the FreeSWITCH simulator, the
API and one worker from one command, each a child that never outlives it.

- Every port is checked before anything starts: a busy one is one error line and exit 2.
- "fsctl is running" is printed only once everything is up: Redis answers, the simulator
  listens, the API answers ``/health/ready``, and the worker has logged in to FreeSWITCH and
  reads jobs.
- The children die with it, even on its SIGKILL: each asks the kernel for a SIGTERM when its
  parent dies (``PR_SET_PDEATHSIG``, set in the child before it runs its program).
- Ctrl-C (or SIGTERM) stops them in order: API and worker while Redis and FreeSWITCH still
  answer, then the simulator, then Redis.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import http.client
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from .embedded import port_in_use, start_redis
from .errors import ConfigError
from .settings import Settings

log = logging.getLogger(__name__)

RUN_SHUTDOWN_GRACE_S = 5.0
"""How long live calls may go on after Ctrl-C (FSCTL_SHUTDOWN_GRACE_S wins)."""
RUN_STOP_MARGIN_S = 5.0
"""How long a process may take to exit after its SIGTERM (beyond the grace)."""
RUN_DEST_MAX_PER_HOUR = 1000
"""The per-destination limit of the embedded default (simulator only: nobody real is rung),
unless FSCTL_DEST_MAX_PER_HOUR is set; production's default is Settings.dest_max_per_hour."""
START_TIMEOUT_S = 30.0
"""Longest wait for one child to be up."""
PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal this process gets when its parent dies (Linux)."""

Procs = list[tuple[str, "subprocess.Popen[bytes]"]]


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    return libc.prctl  # type: ignore[no-any-return]


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child get ``sig`` when this process dies, however it dies
    (SIGKILL included). None where prctl is not available (the child then relies on the
    orderly stop)."""
    prctl = _libc_prctl()  # resolved here, before the fork: the child only calls it
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl: go now
            os.kill(os.getpid(), sig)

    return preexec


def port_free(host: str, port: int) -> bool:
    """True when a listener could bind host:port (as the API and the simulator do)."""
    if port_in_use(host, port):
        return False
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _require_free(host: str, port: int, what: str, how: str) -> None:
    if not port_free(host, port):
        raise ConfigError(f"{host}:{port} is already in use ({what}): stop what listens there "
                          f"or {how}")


def _http_ready(host: str, port: int) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        conn.request("GET", "/health/ready")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _worker_reading(redis_url: str, prefix: str, name: str) -> bool:
    """The worker logged in to FreeSWITCH and reads jobs: its consumer exists in the group
    (it reads only with a connection up) and was active within the last seconds."""
    client = redis.Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        consumers = client.xinfo_consumers(f"{prefix}:jobs", "workers")
    except redis.RedisError:
        return False
    finally:
        client.close()
    return any(c.get("name") in (name, name.encode()) and int(c.get("idle", 10**9)) < 5000
               for c in consumers)


def _wait_up(name: str, proc: subprocess.Popen[bytes], check: Callable[[], bool],
             timeout_s: float = START_TIMEOUT_S) -> bool:
    """Wait until ``check()``; ConfigError if the process exits first, False on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        code = proc.poll()
        if code is not None:
            raise ConfigError(f"the {name} exited with status {code} before it was up "
                              "(its error is above)")
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def run(var_dir: str, redis_port: int, esl_port: int, sim_args: list[str] | None = None) -> int:
    """Start everything, print how to use it, wait for Ctrl-C; stop everything.
    ``sim_args``: more options of ``fsctl simulate`` (its far ends' behaviour)."""
    from . import settings as settings_mod
    from .cli import LOOPBACK, check_api_exposure

    env = dict(os.environ)
    # Live calls get a short grace on Ctrl-C; what is still up then is adopted on the next run.
    env.setdefault("FSCTL_SHUTDOWN_GRACE_S", str(RUN_SHUTDOWN_GRACE_S))
    var = Path(var_dir).resolve()
    env.setdefault("FSCTL_SPOOL_DIR", str(var / "spool"))
    embedded_redis = not env.get("FSCTL_REDIS_URL")
    embedded_esl = not env.get("FSCTL_ESL_HOST")
    notes: list[str] = []
    if embedded_redis:
        env["FSCTL_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    if embedded_esl:
        env["FSCTL_ESL_HOST"], env["FSCTL_ESL_PORT"] = "127.0.0.1", str(esl_port)
        env["FSCTL_ESL_PASSWORD"] = secrets.token_urlsafe(18)
        env.pop("FSCTL_ESL_USER", None)
        if not env.get("FSCTL_DEST_MAX_PER_HOUR"):
            env["FSCTL_DEST_MAX_PER_HOUR"] = str(RUN_DEST_MAX_PER_HOUR)
            notes.append(f"development setting: FSCTL_DEST_MAX_PER_HOUR={RUN_DEST_MAX_PER_HOUR} "
                         "calls per number per hour (the simulator rings nobody; the default, "
                         f"{settings_mod.Settings().dest_max_per_hour}, applies as soon as "
                         "FSCTL_ESL_HOST points at a FreeSWITCH; set it to choose)")
    s = settings_mod.load(env)  # every setting checked before anything starts
    s.check_esl_password()
    if s.tokens or s.api_host not in LOOPBACK:
        check_api_exposure(s)  # refuses an open API off loopback (the API warns of the rest)
    if not notes:
        notes.append(f"per-destination limit: {s.dest_max_per_hour} calls per number per hour "
                     "(FSCTL_DEST_MAX_PER_HOUR)")
    if sim_args and not embedded_esl:
        raise ConfigError("--answer-delay / --talk set the simulator's far ends: there is no "
                          "simulator with FSCTL_ESL_HOST set")
    if embedded_esl:
        _require_free("127.0.0.1", esl_port, "the simulator's event socket port",
                      "choose another with --esl-port")
    _require_free(s.api_host, s.api_port, "the API's port", "choose another with FSCTL_API_PORT")

    preexec = die_with_parent()
    procs: Procs = []

    def spawn(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        # A session of its own: Ctrl-C reaches only this process, which stops the others in
        # order (API and worker while Redis and FreeSWITCH still answer, then those two).
        # preexec_fn: fsctl run has no threads (it only polls and waits)
        proc = subprocess.Popen(argv, env=env, start_new_session=True,
                                preexec_fn=preexec)  # noqa: PLW1509
        procs.append((name, proc))
        return proc

    previous_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if embedded_redis:
            procs.append(("redis", start_redis(redis_port, var / "redis", preexec_fn=preexec)))
        if embedded_esl:
            sim = spawn("simulator", [sys.executable, "-m", "fsctl", "simulate", "--host",
                                      "127.0.0.1", "--port", str(esl_port), "--password-env",
                                      "FSCTL_ESL_PASSWORD", *(sim_args or [])])
            if not _wait_up("simulator", sim, lambda: port_in_use("127.0.0.1", esl_port)):
                raise ConfigError(f"the simulator is not listening on 127.0.0.1:{esl_port} "
                                  f"after {START_TIMEOUT_S:.0f}s")
        api = spawn("API", [sys.executable, "-m", "fsctl", "api"])
        worker = spawn("worker", [sys.executable, "-m", "fsctl", "worker"])
        if env.get("FSCTL_WEBHOOK_SECRETS"):
            spawn("webhooks", [sys.executable, "-m", "fsctl", "webhooks"])
        if not _wait_up("API", api, lambda: _http_ready(s.api_host, s.api_port)):
            raise ConfigError(f"the API does not answer on {s.api_host}:{s.api_port} after "
                              f"{START_TIMEOUT_S:.0f}s")
        name = s.worker_name or f"{socket.gethostname()}-{worker.pid}"
        if not _wait_up("worker", worker,
                        lambda: _worker_reading(s.redis_url, s.redis_prefix, name),
                        START_TIMEOUT_S if embedded_esl else 10.0):
            if embedded_esl:
                raise ConfigError(f"the worker did not log in to the simulator within "
                                  f"{START_TIMEOUT_S:.0f}s")
            notes.append(f"the worker is not connected to FreeSWITCH at {s.esl_host}:"
                         f"{s.esl_port} yet (see its log): callbacks wait queued until it is")
        banner(s, var / "redis" if embedded_redis else None, embedded_esl, notes)
        while all(p.poll() is None for _, p in procs):
            time.sleep(0.3)
        dead = [name for name, p in procs if p.poll() is not None]
        log.error("%s exited; stopping everything", ", ".join(dead))
        return 1
    except KeyboardInterrupt:
        log.info("stopping")
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        grace_s = float(env["FSCTL_SHUTDOWN_GRACE_S"]) + RUN_STOP_MARGIN_S
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: still stop them all
            stop([(n, p) for n, p in procs if n in ("API", "worker", "webhooks")], grace_s)
        stop([(n, p) for n, p in procs if n == "simulator"], RUN_STOP_MARGIN_S)
        stop([(n, p) for n, p in procs if n == "redis"], RUN_STOP_MARGIN_S)


def banner(s: Settings, redis_dir: Path | None, embedded_esl: bool, notes: list[str]) -> None:
    """What is running and how to reach each part (stdout, once everything is up)."""
    base = f"http://{s.api_host}:{s.api_port}"
    url = "" if base == "http://127.0.0.1:8080" else f" --url {base}"
    lines = ["fsctl is running (Ctrl-C stops everything):",
             (f"  API        POST {base}/voice/call/callback   "
              f"try: fsctl call 1000123 1000125 --watch{url}"),
             f"  Redis      {s.redis_url}" + (f" (data in {redis_dir})" if redis_dir else "")]
    if embedded_esl:
        lines += [(f"  simulator  FreeSWITCH event socket on {s.esl_host}:{s.esl_port}, "
                   f"password {s.esl_password}"),
                  (f"  fs_cli     fs_cli -H {s.esl_host} -P {s.esl_port} -p {s.esl_password} "
                   "-x \"show channels as json\"")]
    else:
        lines.append(f"  FreeSWITCH {s.esl_host}:{s.esl_port}"
                     + (f" (user {s.esl_user})" if s.esl_user else ""))
    if os.environ.get("FSCTL_WEBHOOK_SECRETS"):
        lines.append("  webhooks   fsctl webhooks delivers status webhooks (FSCTL_WEBHOOK_SECRETS)")
    lines += [f"  {note}" for note in notes]
    print("\n".join(lines), flush=True)


def stop(procs: Procs, timeout_s: float) -> None:
    """SIGTERM these processes together; SIGKILL what is still running after ``timeout_s``."""
    for _, p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for name, p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", name)
            p.kill()
            p.wait()
