"""``fsctl simulate``: run the FreeSWITCH simulator in the foreground."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from typing import IO

import gevent
from gevent.event import Event as GEvent

from ..allocator import tune_collector
from ..errors import ConfigError
from .config import Behaviour, SimConfig
from .server import LOOPBACK_HOSTS, Simulator
from .trace import Trace

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
    parser.add_argument("--sessions-per-second", type=_at_least_one, default=30, metavar="N",
                        help="switch.conf.xml sessions-per-second: every leg counts, and a "
                             "burst over it fails with DESTINATION_OUT_OF_ORDER (default 30)")
    parser.add_argument("--max-sessions", type=_at_least_one, default=1000, metavar="N",
                        help="switch.conf.xml max-sessions: legs that may exist at once "
                             "(default 1000)")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--command-log", metavar="PATH",
                        help="append every received command to PATH as one JSON line "
                             "{conn, text, headers, at} (auth secrets are masked)")
    parser.add_argument("--trace", metavar="PATH",
                        help="append timing records of every channel to PATH as JSON lines "
                             "(originate received, PARK sent, uuid_bridge received, hangup; "
                             "wall-clock times), for benchmarks; see fsctl/simulator/trace.py")
    parser.add_argument("--numbers", metavar="FILE",
                        help="JSON object: destination number -> behaviour of that far end, "
                             'e.g. {"1000777": {"outcome": "answer", "answer_delay_s": 8}}')
    return parser


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def load_numbers(path: str) -> dict[str, Behaviour]:
    """Per-number behaviours (see :class:`Behaviour`) from a JSON file."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--numbers {path!r}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"--numbers {path!r}: must hold a JSON object")
    try:
        return {str(number): Behaviour(**spec) for number, spec in doc.items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--numbers {path!r}: {exc}") from exc


def _masked(text: str) -> str:
    """A command as it may be logged: the secret of ``auth``/``userauth`` is masked."""
    word = text.strip().split(" ", 1)[0].lower()
    if word == "auth":
        return "auth ****"
    if word == "userauth":
        who = text.strip()[9:].partition(":")[0]
        return f"userauth {who}:****"
    return text


class CommandLog:
    """Appends every command the simulator receives to a file, one JSON line each."""

    def __init__(self, path: str) -> None:
        self._fh: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, conn_id: int, text: str, headers: dict[str, str]) -> None:
        line = json.dumps({"conn": conn_id, "text": _masked(text), "headers": headers,
                           "at": time.time()}, separators=(",", ":"))
        self._fh.write(line + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def attach_command_log(sim: Simulator, log_file: CommandLog) -> None:
    """Make ``sim`` log every received command to ``log_file`` (besides ``sim.commands``)."""
    record = sim.record

    def record_and_log(conn_id: int, text: str, headers: dict[str, str]) -> None:
        record(conn_id, text, headers)
        log_file.write(conn_id, text, headers)

    sim.record = record_and_log  # type: ignore[method-assign]


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
    try:
        numbers = load_numbers(args.numbers) if args.numbers else {}
        command_log = CommandLog(args.command_log) if args.command_log else None
        trace = Trace(args.trace) if args.trace else None
    except (ConfigError, OSError) as exc:
        print(f"fsctl simulate: {exc}", file=sys.stderr)
        return 2
    config = SimConfig(answer_delay_s=args.answer_delay,
                       talk_s=None if args.talk < 0 else args.talk,
                       heartbeat_s=args.heartbeat, numbers=numbers,
                       sessions_per_second=args.sessions_per_second,
                       max_sessions=args.max_sessions)
    sim = Simulator(config, host=args.host, port=args.port, password=password, trace=trace,
                    keep_commands=False)
    if command_log is not None:
        attach_command_log(sim, command_log)
    tune_collector()
    try:
        sim.start()
    except OSError as exc:
        print(f"fsctl simulate: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        if trace is not None:
            trace.close()
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
        if command_log is not None:
            command_log.close()
        if trace is not None:
            trace.close()
    return 0
