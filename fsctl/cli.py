"""``fsctl``: the services (``api | worker | webhooks | simulate | run | token``) and, in
fsctl/console/, the API's command-line client (``call | status | ls | tail | cancel``)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from . import __version__
from .allocator import tune_collector
from .errors import FsctlError
from .settings import Settings

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EXIT_SPOOLED = 75
"""`fsctl worker`'s exit status when Redis was down at its stop and records were spooled
(EX_TEMPFAIL: a supervisor can tell it from a clean stop)."""
EXIT_CONFIG = 2
"""A service refused its configuration (one error line says why)."""


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
    try:
        listener.bind((s.api_host, s.api_port))
    except OSError as exc:
        raise FsctlError(f"cannot listen on {s.api_host}:{s.api_port}: {exc.strerror}") from None
    listener.listen(1024)
    server = WSGIServer(listener, create_app(s), log=None)
    log.info("API on http://%s:%d", s.api_host, s.api_port)
    import gevent

    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    tune_collector()
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
    tune_collector()
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

    tune_collector()
    return webhooks_main()


def cmd_simulate(argv: list[str]) -> int:
    from .simulator import main as sim_main

    return sim_main(argv)


CLIENT_COMMANDS = ("call", "status", "ls", "tail", "cancel")
"""Commands of fsctl/console/ (imported only when used: the services start without them)."""


class FsctlGroup(click.Group):
    """The ``fsctl`` group: services here, client commands loaded from fsctl/console/."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*CLIENT_COMMANDS, *super().list_commands(ctx)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in CLIENT_COMMANDS:
            from .console import commands

            return getattr(commands, cmd_name)  # type: ignore[no-any-return]
        return super().get_command(ctx, cmd_name)


def _service(func: Callable[[], int]) -> int:
    """Run a service command with fsctl's logging; a refused configuration is one line."""
    try:
        _logging()
        return int(func())
    except FsctlError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG


@click.group(cls=FsctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="fsctl",
                      message="%(prog)s %(version)s")
def cli() -> None:
    """fsctl: a voice callback controller for FreeSWITCH.

    \b
    Services:  fsctl run (everything, embedded default) | api | worker | webhooks | simulate
               | token
    Client:    fsctl call A B [--watch] | status ID | ls | tail | cancel ID
    Client commands take --url (FSCTL_URL) and --token (FSCTL_TOKEN).
    """


@cli.command("api")
def api_command() -> int:
    """Serve the HTTP API on FSCTL_API_HOST:FSCTL_API_PORT."""
    return _service(lambda: cmd_api(argparse.Namespace()))


@cli.command("worker")
def worker_command() -> int:
    """Drive callbacks through FreeSWITCH (one worker per node)."""
    return _service(lambda: cmd_worker(argparse.Namespace()))


@cli.command("webhooks")
def webhooks_command() -> int:
    """Deliver status webhooks (FSCTL_WEBHOOK_SECRETS)."""
    return _service(lambda: cmd_webhooks(argparse.Namespace()))


@cli.command("run")
@click.option("--var", default="var", show_default=True,
              help="data directory for the embedded redis")
@click.option("--redis-port", type=click.IntRange(1, 65535), default=6379, show_default=True,
              help="port of the embedded redis (when FSCTL_REDIS_URL is unset)")
@click.option("--esl-port", type=click.IntRange(1, 65535), default=8021, show_default=True,
              help="port of the simulator (when FSCTL_ESL_HOST is unset)")
@click.option("--answer-delay", type=click.FloatRange(0, 300), default=None, metavar="SECONDS",
              help="simulator: seconds a leg rings before it answers (default 1)")
@click.option("--talk", type=click.FloatRange(min=-1), default=None, metavar="SECONDS",
              help="simulator: seconds after the bridge until the far end hangs up "
                   "(default 5; <0: never)")
def run_command(var: str, redis_port: int, esl_port: int, answer_delay: float | None,
                talk: float | None) -> int:
    """Start redis, the simulator, the API and a worker (the embedded default); Ctrl-C stops
    all. Set FSCTL_REDIS_URL / FSCTL_ESL_HOST to use a Redis / FreeSWITCH of yours."""
    from .runner import run

    sim_args = [*(["--answer-delay", str(answer_delay)] if answer_delay is not None else []),
                *(["--talk", str(talk)] if talk is not None else [])]
    return _service(lambda: run(var, redis_port, esl_port, sim_args))


@cli.command("token")
@click.argument("name")
def token_command(name: str) -> int:
    """Make a new API token NAME: prints it and the tokens-file entry (only its hash)."""
    return _service(lambda: cmd_token(argparse.Namespace(name=name)))


@cli.command("simulate", context_settings={"ignore_unknown_options": True,
                                           "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def simulate_command(args: tuple[str, ...]) -> int:
    """Run the FreeSWITCH simulator (see fsctl simulate -h)."""
    return cmd_simulate(list(args))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:
        return cmd_simulate(argv[1:])  # its own parser: fsctl simulate -h
    try:
        result: Any = cli.main(args=argv, prog_name="fsctl", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("fsctl: interrupted", err=True)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
