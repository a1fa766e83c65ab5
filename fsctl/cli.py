"""``fsctl api | worker | webhooks | simulate | run | call | status``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .errors import FsctlError
from .settings import Settings

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
RUN_SHUTDOWN_GRACE_S = 5.0
"""`fsctl run`: how long live calls may go on after Ctrl-C (FSCTL_SHUTDOWN_GRACE_S wins)."""
EXIT_SPOOLED = 75
"""`fsctl worker`'s exit status when Redis was down at its stop and records were spooled
(EX_TEMPFAIL: a supervisor can tell it from a clean stop)."""
RUN_STOP_MARGIN_S = 5.0
"""`fsctl run`: how long a process may take to exit after its SIGTERM (beyond the grace)."""


def _logging() -> None:
    """FSCTL_LOG_LEVEL, FSCTL_LOG_FORMAT (json / text / auto): see fsctl.ops.logs."""
    from .ops.logs import setup

    setup()


def cmd_api(_: argparse.Namespace) -> int:
    from gevent import monkey

    monkey.patch_all()
    from gevent.pywsgi import WSGIServer

    from . import settings as settings_mod
    from .api import create_app

    s = settings_mod.load()
    check_api_exposure(s)
    import socket

    family = socket.AF_INET6 if ":" in s.api_host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # pywsgi writes headers and body separately: without NODELAY a keep-alive client
    # waits ~40 ms (delayed ACK) on every response. Accepted sockets inherit the option.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind((s.api_host, s.api_port))
    listener.listen(1024)
    server = WSGIServer(listener, create_app(s), log=None)
    log.info("API on http://%s:%d", s.api_host, s.api_port)
    import gevent

    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    server.serve_forever()
    return 0


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def check_api_exposure(s: Settings) -> None:
    """An API without tokens is a fraud tool: allow that only on a loopback address."""
    if not s.tokens:
        if s.api_host not in LOOPBACK:
            raise FsctlError(f"refusing to serve an open API on {s.api_host}: configure "
                             "FSCTL_TOKENS_FILE (see `fsctl token`) or bind to 127.0.0.1")
        log.warning("no FSCTL_TOKENS_FILE: the API is open to anyone on this host "
                    "(development mode, loopback only)")


def cmd_token(args: argparse.Namespace) -> int:
    """Print a new random token and the tokens-file entry holding only its hash."""
    from .auth import PERMISSIONS, TOKEN_NAME_RE, new_token

    if not TOKEN_NAME_RE.fullmatch(args.name):
        raise FsctlError("token name: 1-32 of a-z 0-9 _ -")
    token, digest = new_token()
    entry = {args.name: {"sha256": digest, "permissions": sorted(PERMISSIONS),
                         "rate_per_minute": 60, "max_live": 20}}
    print(f"token (give it to the client, it is not stored anywhere): {token}")
    print("entry for FSCTL_TOKENS_FILE under \"tokens\":")
    print(json.dumps(entry, indent=2))
    return 0


def cmd_worker(_: argparse.Namespace) -> int:
    from gevent import monkey

    monkey.patch_all()
    import gevent
    import gevent.event

    from . import settings as settings_mod
    from .store import Store, connect
    from .worker import Worker

    s = settings_mod.load()
    s.check_esl_password()
    worker = Worker(s, Store(connect(s.redis_url), s.redis_prefix, s.record_ttl_s))
    worker.start()
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    stop.wait()
    log.info("worker %s: stopping: no new jobs; live calls may finish within %.0fs",
             worker.name, s.shutdown_grace_s)
    worker.drain(s.shutdown_grace_s)
    if not worker.stop():
        return EXIT_SPOOLED
    return 0


def cmd_webhooks(_: argparse.Namespace) -> int:
    from gevent import monkey

    monkey.patch_all()
    from .webhooks.sender import main as webhooks_main

    return webhooks_main()


def cmd_simulate(argv: list[str]) -> int:
    from .simulator import main as sim_main

    return sim_main(argv)


def cmd_run(args: argparse.Namespace) -> int:
    """The embedded default: local redis, simulator, API and one worker; Ctrl-C stops all."""
    from .embedded import start_redis, wait_port

    env = dict(os.environ)
    # Live calls get a short grace on Ctrl-C; what is still up then is adopted on the next run.
    env.setdefault("FSCTL_SHUTDOWN_GRACE_S", str(RUN_SHUTDOWN_GRACE_S))
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    var = Path(args.var).resolve()
    env.setdefault("FSCTL_SPOOL_DIR", str(var / "spool"))

    def spawn(name: str, argv: list[str]) -> None:
        # A session of its own: Ctrl-C reaches only this process, which stops the others in
        # order (API and worker while Redis and FreeSWITCH still answer, then those two).
        procs.append((name, subprocess.Popen(argv, env=env, start_new_session=True)))

    try:
        if not env.get("FSCTL_REDIS_URL"):
            procs.append(("redis", start_redis(args.redis_port, var / "redis")))
            env["FSCTL_REDIS_URL"] = f"redis://127.0.0.1:{args.redis_port}/0"
        if not env.get("FSCTL_ESL_HOST"):
            port = str(args.esl_port)
            env["FSCTL_ESL_HOST"], env["FSCTL_ESL_PORT"] = "127.0.0.1", port
            env["FSCTL_ESL_PASSWORD"] = secrets.token_urlsafe(18)
            env.pop("FSCTL_ESL_USER", None)
            spawn("simulator", [sys.executable, "-m", "fsctl", "simulate", "--host", "127.0.0.1",
                                "--port", port, "--password-env", "FSCTL_ESL_PASSWORD"])
            wait_port("127.0.0.1", args.esl_port, 10)
        spawn("api", [sys.executable, "-m", "fsctl", "api"])
        spawn("worker", [sys.executable, "-m", "fsctl", "worker"])
        if env.get("FSCTL_WEBHOOK_SECRETS"):
            spawn("webhooks", [sys.executable, "-m", "fsctl", "webhooks"])
        wait_port(env.get("FSCTL_API_HOST", "127.0.0.1"), int(env.get("FSCTL_API_PORT", "8080")),
                  15)
        log.info("fsctl is running: POST http://127.0.0.1:%s/voice/call/callback (Ctrl-C stops)",
                 env.get("FSCTL_API_PORT", "8080"))
        while all(p.poll() is None for _, p in procs):
            time.sleep(0.3)
        dead = [name for name, p in procs if p.poll() is not None]
        log.error("%s exited; stopping everything", ", ".join(dead))
        return 1
    except KeyboardInterrupt:
        log.info("stopping")
        return 0
    finally:
        grace_s = float(env["FSCTL_SHUTDOWN_GRACE_S"]) + RUN_STOP_MARGIN_S
        apps = [(n, p) for n, p in procs if n in ("api", "worker", "webhooks")]
        stop(apps, grace_s)
        stop([(n, p) for n, p in procs if n == "simulator"], RUN_STOP_MARGIN_S)
        stop([(n, p) for n, p in procs if n == "redis"], RUN_STOP_MARGIN_S)


def stop(procs: list[tuple[str, subprocess.Popen[bytes]]], timeout_s: float) -> None:
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


def _http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def cmd_call(args: argparse.Namespace) -> int:
    body = {"leg_A": {"to": args.a}, "leg_B": {"to": args.b}, "mode": args.mode,
            "first": args.first}
    code, reply = _http("POST", f"{args.url}/voice/call/callback", body)
    print(json.dumps(reply, indent=2))
    return 0 if code == 202 else 1


def cmd_status(args: argparse.Namespace) -> int:
    code, reply = _http("GET", f"{args.url}/voice/call/callback/{args.id}")
    print(json.dumps(reply, indent=2))
    return 0 if code == 200 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fsctl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="serve the HTTP API").set_defaults(func=cmd_api)
    sub.add_parser("worker", help="drive callbacks through FreeSWITCH").set_defaults(
        func=cmd_worker)
    sub.add_parser("webhooks", help="deliver status webhooks (FSCTL_WEBHOOK_SECRETS)"
                   ).set_defaults(func=cmd_webhooks)
    sub.add_parser("simulate", help="run the FreeSWITCH simulator (see fsctl simulate -h)",
                   add_help=False)
    p = sub.add_parser("run", help="start redis, simulator, API and worker (embedded default)")
    p.add_argument("--var", default="var", help="data directory for the embedded redis")
    p.add_argument("--redis-port", type=int, default=6379,
                   help="port of the embedded redis (when FSCTL_REDIS_URL is unset)")
    p.add_argument("--esl-port", type=int, default=8021,
                   help="port of the simulator (when FSCTL_ESL_HOST is unset)")
    p.set_defaults(func=cmd_run)
    default_url = f"http://127.0.0.1:{os.environ.get('FSCTL_API_PORT', '8080')}"
    p = sub.add_parser("call", help="POST a callback to the API")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--mode", default="sequential", choices=("sequential", "simultaneous"))
    p.add_argument("--first", default="A", choices=("A", "B"))
    p.add_argument("--url", default=default_url)
    p.set_defaults(func=cmd_call)
    p = sub.add_parser("token", help="make a new API token (prints it and its hash entry)")
    p.add_argument("name")
    p.set_defaults(func=cmd_token)
    p = sub.add_parser("status", help="show a callback")
    p.add_argument("id")
    p.add_argument("--url", default=default_url)
    p.set_defaults(func=cmd_status)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:
        return cmd_simulate(argv[1:])  # its own parser: fsctl simulate -h
    args = parser.parse_args(argv)
    try:
        _logging()
        return int(args.func(args))
    except FsctlError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
