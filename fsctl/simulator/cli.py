"""``fsctl simulate``: run the FreeSWITCH simulator in the foreground."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import gevent
from gevent.event import Event as GEvent

from ..errors import ConfigError
from .config import SimConfig
from .server import LOOPBACK_HOSTS, Simulator

log = logging.getLogger(__name__)

DEFAULT_PASSWORD = "ClueCon"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsctl simulate",
        description="Run an ESL server on 127.0.0.1 that behaves like FreeSWITCH.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback only)")
    parser.add_argument("--port", type=int, default=8021)
    parser.add_argument("--password-env", default="FSCTL_ESL_PASSWORD",
                        help="name of the environment variable holding the ESL password")
    parser.add_argument("--allow-default-password", action="store_true",
                        help="accept FreeSWITCH's well-known default password ClueCon")
    parser.add_argument("--answer-delay", type=float, default=1.0,
                        help="seconds before a non-null leg answers")
    parser.add_argument("--talk", type=float, default=5.0,
                        help="seconds after the bridge before the far end hangs up (<0: never)")
    parser.add_argument("--heartbeat", type=float, default=20.0, help="HEARTBEAT interval (s)")
    parser.add_argument("--log-level", default="INFO")
    return parser


def resolve_password(env_name: str, allow_default: bool) -> str:
    password = os.environ.get(env_name, "")
    if not password:
        if allow_default:
            return DEFAULT_PASSWORD
        raise ConfigError(f"set the ESL password in ${env_name} (or pass --allow-default-password)")
    if password == DEFAULT_PASSWORD and not allow_default:
        raise ConfigError("refusing the default password ClueCon without --allow-default-password")
    return password


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.host not in LOOPBACK_HOSTS:
        print(f"fsctl simulate: refusing to listen on {args.host}: 127.0.0.1 only",
              file=sys.stderr)
        return 2
    try:
        password = resolve_password(args.password_env, args.allow_default_password)
    except ConfigError as exc:
        print(f"fsctl simulate: {exc}", file=sys.stderr)
        return 2
    config = SimConfig(answer_delay_s=args.answer_delay,
                       talk_s=None if args.talk < 0 else args.talk,
                       heartbeat_s=args.heartbeat)
    sim = Simulator(config, host=args.host, port=args.port, password=password)
    try:
        sim.start()
    except OSError as exc:
        print(f"fsctl simulate: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"fsctl simulate: listening on {sim.host}:{sim.port}", flush=True)
    done = GEvent()
    handlers = [gevent.signal_handler(sig, done.set) for sig in (signal.SIGINT, signal.SIGTERM)]
    try:
        done.wait()
    finally:
        for handler in handlers:
            handler.cancel()
        sim.stop()
    return 0
