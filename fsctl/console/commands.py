"""``fsctl call | status | ls | tail | cancel``: the API from the command line.

Exit codes (every client command):

====  ===============================================================================
0     done: the request was accepted / found; with ``--watch`` the callback *completed*
1     the API answered an error (401, 403, 404, 422, 429 …): its message is printed
2     usage error (bad option or argument)
3     the API could not be reached (refused, timed out, not an fsctl API)
4     ``--watch``: the callback ended *failed* (its outcome is printed: ``b_busy`` …)
5     ``--watch``: the callback ended *cancelled*
6     ``--watch --timeout``: still not finished when the timeout ran out
130   Ctrl-C while watching (the callback goes on; ``fsctl cancel <id>`` stops it)
====  ===============================================================================
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from ..errors import ApiRefused, ApiUnreachable
from ..model import CALLBACK_STATES
from . import render
from .client import DEFAULT_TIMEOUT_S, Api, valid_url

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_FAILED = 4
EXIT_CANCELLED = 5
EXIT_TIMEOUT = 6
EXIT_INTERRUPTED = 130
EXIT_FOR_STATE = {"completed": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}

POLL_S = 0.25
"""How often ``--watch`` reads the callback."""
TAIL_POLL_S = 0.5
"""How often ``tail`` reads the newest callbacks."""
TAIL_PAGE = 100
"""Newest callbacks ``tail`` reads per poll (live ones beyond it are read one by one)."""
TAIL_FETCH_MAX = 20
"""Most live callbacks off the newest page ``tail`` reads one by one per poll."""
UNREACHABLE_GRACE_S = 10.0
"""``--watch`` / ``tail`` go on through an API outage this long, then give up (exit 3)."""
LEG_VALUE_RE = re.compile(r"^([ABab])=(.*)$", re.DOTALL)

F = TypeVar("F", bound=Callable[..., int])


def default_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('FSCTL_API_PORT') or '8080'}"


def _fail(message: str, code: int) -> int:
    click.echo(f"fsctl: {message}", err=True)
    return code


def _refusal_text(exc: ApiRefused) -> str:
    text = f"{exc.status} {exc}"
    details = [e for e in _flat_errors(exc.errors or {}) if not e.endswith(f": {exc}")]
    if details:  # (not those that only repeat the message)
        text += ": " + "; ".join(details)
    if exc.status == 401:
        text += " (give --token or set FSCTL_TOKEN)"
    if exc.retry_after:
        text += f" (retry after {exc.retry_after} s)"
    return text


def _flat_errors(errors: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(errors, dict):
        for key, value in errors.items():
            yield from _flat_errors(value, f"{prefix}{key}." if key != "_schema" else prefix)
    elif isinstance(errors, list) and all(isinstance(e, str) for e in errors):
        yield f"{prefix.rstrip('.') or 'request'}: {' '.join(errors)}"
    else:
        yield f"{prefix.rstrip('.') or 'request'}: {errors}"


def client_command(func: F) -> F:
    """The options every client command takes, and its errors as one line and an exit code."""

    @click.option("--url", default=default_url, show_default="http://127.0.0.1:$FSCTL_API_PORT "
                  "or :8080", envvar="FSCTL_URL", help="the fsctl API (env FSCTL_URL)")
    @click.option("--token", envvar="FSCTL_TOKEN", default=None, metavar="TOKEN",
                  help="bearer token when the API has FSCTL_TOKENS_FILE (env FSCTL_TOKEN, "
                       "which keeps it out of `ps`)")
    @click.option("--timeout", "http_timeout", type=click.FloatRange(0.1, 300),
                  default=DEFAULT_TIMEOUT_S, show_default=True,
                  help="seconds to wait for the API on each request")
    @functools.wraps(func)
    def wrapper(url: str, token: str | None, http_timeout: float, **kwargs: Any) -> int:
        if not valid_url(url):
            raise click.BadParameter(f"{url!r}: give http://host:port (or https://)",
                                     param_hint="--url")
        try:
            with Api(url, token, http_timeout) as api:
                return func(api, **kwargs)
        except ApiUnreachable as exc:
            return _fail(str(exc), EXIT_UNREACHABLE)
        except ApiRefused as exc:
            return _fail(_refusal_text(exc), EXIT_REFUSED)

    return wrapper  # type: ignore[return-value]


def _per_leg(values: tuple[str, ...], option: str,
             convert: Callable[[str], Any] = str) -> dict[str, Any]:
    """``--route R`` (both legs) or ``--route B=R`` (one leg), repeatable; the last wins."""
    out: dict[str, Any] = {}
    for value in values:
        match = LEG_VALUE_RE.match(value)
        legs, raw = ((match.group(1).upper(),), match.group(2)) if match else (("A", "B"), value)
        try:
            converted = convert(raw)
        except ValueError:
            raise click.BadParameter(f"{raw!r} is not valid", param_hint=option) from None
        for leg in legs:
            out[leg] = converted
    return out


def build_request(a: str, b: str, *, first: str, simultaneous: bool, mode: str | None,
                  routes: tuple[str, ...], froms: tuple[str, ...], ring: tuple[str, ...],
                  names: tuple[str, ...]) -> dict[str, Any]:
    """The API body of ``fsctl call``; only what was given (the API's defaults otherwise)."""
    legs: dict[str, dict[str, Any]] = {"A": {"to": a}, "B": {"to": b}}
    for field, values, convert in (("route", routes, str), ("from", froms, str),
                                   ("ring_timeout", ring, int), ("caller_id_name", names, str)):
        option = "--" + field.replace("_", "-") if field != "ring_timeout" else "--ring-timeout"
        for leg, value in _per_leg(values, option, convert).items():
            legs[leg][field] = value
    body: dict[str, Any] = {"leg_A": legs["A"], "leg_B": legs["B"]}
    if simultaneous or mode == "simultaneous":
        body["mode"] = "simultaneous"
    elif mode:
        body["mode"] = mode
    if first.upper() != "A":
        body["first"] = first.upper()
    return body


def _entry_key(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True)


def watch(api: Api, out: render.Out, rec: dict[str, Any], timeout_s: float | None) -> int:
    """Follow one callback until it ends; its exit code (see the module's table)."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    base = float(rec.get("created_at") or time.time())
    shown: set[str] = set()
    recent: list[str] = []
    deadline = time.monotonic() + timeout_s if timeout_s else None
    down_since: float | None = None
    live = Live(console=out.console, refresh_per_second=8, transient=False) if out.tty else None
    if live is not None:
        live.start()
    try:
        while True:
            for entry in rec.get("history", []):
                key = _entry_key(entry)
                if key in shown:
                    continue
                shown.add(key)
                text = render.history_text(entry, base)
                if text is None:
                    continue
                if live is None:
                    out.line(text)
                else:
                    recent = [*recent, text][-8:]
            if live is not None:
                live.update(Group(render.summary_renderable(rec, width=out.console.width),
                                  Text("\n".join(recent), style="dim")))
            if rec.get("state") in render.FINAL:
                break
            if deadline is not None and time.monotonic() > deadline:
                if live is not None:
                    live.stop()
                    live = None
                return _fail(f"callback {rec['id']} still {rec['state']} after {timeout_s:g} s "
                             "(it goes on: fsctl status / fsctl cancel)", EXIT_TIMEOUT)
            time.sleep(POLL_S)
            try:
                rec = api.get(rec["id"])
                down_since = None
            except ApiUnreachable:
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > UNREACHABLE_GRACE_S:
                    raise
    except KeyboardInterrupt:
        if live is not None:
            live.stop()
            live = None
        return _fail(f"stopped watching: callback {rec['id']} is {rec['state']} and goes on "
                     f"(fsctl cancel {rec['id']} stops it)", EXIT_INTERRUPTED)
    finally:
        if live is not None:
            live.stop()
    state = str(rec.get("state"))
    out.line(render.final_text(rec), render.STATE_STYLE.get(state, ""))
    return EXIT_FOR_STATE.get(state, EXIT_FAILED)


leg_help = "; for both legs, or A=… / B=… for one (repeatable)"


@click.command("call")
@click.argument("a", metavar="A_NUMBER")
@click.argument("b", metavar="B_NUMBER")
@click.option("--first", type=click.Choice(["A", "B"], case_sensitive=False), default="A",
              show_default=True, help="who is called first (sequential mode)")
@click.option("--simultaneous", is_flag=True, help="call both legs at once")
@click.option("--mode", type=click.Choice(["sequential", "simultaneous"]), default=None,
              hidden=True)
@click.option("--route", "routes", multiple=True, metavar="[A=|B=]ROUTE",
              help="operator-configured route name" + leg_help)
@click.option("--from", "froms", multiple=True, metavar="[A=|B=]NUMBER",
              help="caller ID shown to the leg (default: the other leg's number)" + leg_help)
@click.option("--ring-timeout", "ring", multiple=True, metavar="[A=|B=]SECONDS",
              help="how long the leg may ring, 5-300" + leg_help)
@click.option("--caller-id-name", "names", multiple=True, metavar="[A=|B=]NAME",
              help="caller ID name, 1-40 of A-Z a-z 0-9 . _ -" + leg_help)
@click.option("--status-callback", default=None, metavar="URL",
              help="https URL that gets the callback's signed status webhooks")
@click.option("--idempotency-key", default=None, metavar="KEY",
              help="a retried call with the same key answers the first callback")
@click.option("--watch", "-w", "watch_it", is_flag=True,
              help="follow the legs live until the callback ends; the exit code says how")
@click.option("--watch-timeout", type=click.FloatRange(min=0.1), default=None,
              metavar="SECONDS", help="with --watch: give up (exit 6) after this long")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON record")
@client_command
def call(api: Api, a: str, b: str, first: str, simultaneous: bool, mode: str | None,
         routes: tuple[str, ...], froms: tuple[str, ...], ring: tuple[str, ...],
         names: tuple[str, ...], status_callback: str | None,
         idempotency_key: str | None, watch_it: bool,
         watch_timeout: float | None, as_json: bool) -> int:
    """Ask for a callback: call A_NUMBER and B_NUMBER and bridge them.

    \b
    fsctl call 1000123 1000125 --watch
    fsctl call 1000123 1000125 --first B --route B=ext --ring-timeout 20
    """
    body = build_request(a, b, first=first, simultaneous=simultaneous, mode=mode,
                         routes=routes, froms=froms, ring=ring, names=names)
    if status_callback:
        body["status_callback"] = status_callback
    _status, rec = api.create(body, idempotency_key)
    out = render.Out()
    if as_json and not watch_it:
        click.echo(json.dumps(rec, indent=2))
        return EXIT_OK
    out.line(f"callback {rec['id']} {rec['state']}: {render.leg_text(rec)}", "bold")
    if not watch_it:
        out.line(f"follow it: fsctl status {rec['id']}  (or fsctl call … --watch)", "dim")
        return EXIT_OK
    code = watch(api, out, rec, watch_timeout)
    if as_json:
        click.echo(json.dumps(api.get(rec["id"]), indent=2))
    return code


@click.command("status")
@click.argument("callback_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="the raw record, as the API answers it")
@click.option("--watch", "-w", "watch_it", is_flag=True,
              help="follow it live until it ends; the exit code says how (as fsctl call)")
@client_command
def status(api: Api, callback_id: str, as_json: bool, watch_it: bool) -> int:
    """Show one callback: its state, outcome, talk time and both legs."""
    rec = api.get(callback_id)
    out = render.Out()
    if watch_it and rec.get("state") not in render.FINAL:
        return watch(api, out, rec, None)
    if as_json:
        click.echo(json.dumps(rec, indent=2))
    else:
        out.summary(rec)
    return EXIT_FOR_STATE.get(str(rec.get("state")), EXIT_OK) if watch_it else EXIT_OK


@click.command("ls")
@click.option("--state", type=click.Choice(CALLBACK_STATES), default=None,
              help="only callbacks in this state")
@click.option("--limit", "-n", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="at most this many, newest first")
@click.option("--json", "as_json", is_flag=True, help="one JSON record per line")
@client_command
def ls(api: Api, state: str | None, limit: int, as_json: bool) -> int:
    """List callbacks, newest first (those of your token only)."""
    items = list(api.list(state, limit))
    if as_json:
        for rec in items:
            click.echo(json.dumps(rec, separators=(",", ":")))
        return EXIT_OK
    out = render.Out()
    if not items:
        out.line("no callbacks" + (f" in state {state}" if state else ""), "dim")
        return EXIT_OK
    out.table(render.list_rows(items))
    return EXIT_OK


@click.command("cancel")
@click.argument("callback_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON record")
@click.option("--watch", "-w", "watch_it", is_flag=True,
              help="follow it until it has ended (a live call is hung up by the worker)")
@client_command
def cancel(api: Api, callback_id: str, as_json: bool, watch_it: bool) -> int:
    """Cancel a callback: a queued one at once, a live one is hung up by its worker
    (a call already talking ends completed). Cancelling twice is harmless."""
    code, rec = api.cancel(callback_id)
    out = render.Out()
    if as_json:
        click.echo(json.dumps(rec, indent=2))
    elif code == 200:
        out.line(f"callback {rec['id']} {rec['state']}", "bold")
    else:
        out.line(f"callback {rec['id']}: cancel requested (it was {rec['state']}); the "
                 "worker hangs up what is up", "bold")
    if watch_it and rec.get("state") not in render.FINAL:
        watch(api, out, rec, None)
    return EXIT_OK


class _Follower:
    """What ``tail`` has shown of each callback. List items are summaries (no history): a
    callback that changed is read in full (at most TAIL_FETCH_MAX a poll) and its new history
    entries shown; beyond that, its new state alone."""

    def __init__(self, api: Api, out: render.Out, state: str | None) -> None:
        self.api, self.out, self.state = api, out, state
        self.known: dict[str, dict[str, Any]] = {}
        self.since: dict[str, float] = {}
        """History up to this time was there when tail started (not shown)."""
        self.seen: dict[str, set[str]] = {}
        self.ended: set[str] = set()

    def start(self, items: list[dict[str, Any]]) -> None:
        for rec in items:
            self.known[rec["id"]] = rec
            self.since[rec["id"]] = float(rec.get("updated_at") or 0)
            if rec.get("state") in render.FINAL:
                self.ended.add(rec["id"])

    def changed(self, rec: dict[str, Any]) -> bool:
        before = self.known.get(rec["id"])
        return before is None or (before.get("updated_at"), before.get("state")) != \
            (rec.get("updated_at"), rec.get("state"))

    def show(self, rec: dict[str, Any], full: dict[str, Any] | None) -> int:
        """Print what is new about ``rec``; 1 when it has just ended."""
        callback_id = rec["id"]
        base = float(rec.get("created_at") or 0)
        since = self.since.get(callback_id, float("-inf"))
        seen = self.seen.setdefault(callback_id, set())
        before = self.known.get(callback_id)
        entries = full.get("history", []) if full is not None else (
            [] if before is not None and before.get("state") == rec.get("state") else
            [{"ts": rec.get("updated_at"), "event": "state", "state": rec.get("state")}])
        for entry in entries:
            key = _entry_key(entry)
            if key in seen or float(entry.get("ts") or 0) <= since:
                continue
            seen.add(key)
            if entry.get("event") == "state" and entry.get("state") in render.FINAL:
                continue  # the end gets its own line below, with the outcome
            if self.state and (entry.get("event") != "state" or entry.get("state") != self.state):
                continue
            text = render.history_text(entry, base)
            if text is not None:
                self.out.line(f"{render.clock(entry.get('ts'))}  {callback_id}  "
                              f"{render.leg_text(rec)}  {text.split('  ', 1)[1]}")
        self.known[callback_id] = rec
        if rec.get("state") not in render.FINAL or callback_id in self.ended:
            return 0
        self.ended.add(callback_id)
        if not self.state or rec.get("state") == self.state:
            self.out.line(f"{render.clock(rec.get('ended_at'))}  {callback_id}  "
                          f"{render.leg_text(rec)}  {render.final_text(full or rec)}",
                          render.STATE_STYLE.get(str(rec.get("state")), ""))
        return 1

    def poll(self) -> int:
        """One round: the newest page, the live ones beyond it; how many ended."""
        page = list(self.api.list(None, TAIL_PAGE))
        ids = {r["id"] for r in page}
        beyond = [i for i, r in self.known.items()
                  if i not in ids and r.get("state") not in render.FINAL][:TAIL_FETCH_MAX]
        fetched, ended = 0, 0
        todo: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
        for callback_id in beyond:
            try:
                full = self.api.get(callback_id)
            except ApiRefused:  # expired or gone: nothing more to follow
                self.known.pop(callback_id, None)
                continue
            fetched += 1
            todo.append((full, full))
        for rec in sorted(page, key=lambda r: r.get("created_at") or 0):
            if not self.changed(rec):
                continue
            full = None
            if fetched < TAIL_FETCH_MAX:
                try:
                    full = self.api.get(rec["id"])
                    fetched += 1
                except ApiRefused:
                    full = None
            todo.append((rec, full))
        for rec, full in todo:
            ended += self.show(rec, full)
        if len(self.known) > 10 * TAIL_PAGE:  # forget ended ones no longer on the page
            for callback_id in [i for i, r in self.known.items()
                                if i not in ids and r.get("state") in render.FINAL]:
                self.known.pop(callback_id)
                self.seen.pop(callback_id, None)
                self.since.pop(callback_id, None)
        return ended


@click.command("tail")
@click.option("--state", type=click.Choice(CALLBACK_STATES), default=None,
              help="show only callbacks entering this state")
@click.option("--exit-after", type=click.IntRange(min=1), default=None, metavar="N",
              help="stop after N callbacks have ended (for scripts)")
@client_command
def tail(api: Api, state: str | None, exit_after: int | None) -> int:
    """Follow every callback live: one line per change (Ctrl-C stops).

    Lines: time, callback id, its numbers, what changed (state, leg state, the end)."""
    follower = _Follower(api, render.Out(), state)
    follower.start(list(api.list(None, TAIL_PAGE)))
    live = sum(1 for r in follower.known.values() if r.get("state") not in render.FINAL)
    click.echo(f"fsctl: following callbacks at {api.url} ({live} live now; Ctrl-C stops)",
               err=True)
    ended = 0
    down_since: float | None = None
    try:
        while exit_after is None or ended < exit_after:
            time.sleep(TAIL_POLL_S)
            try:
                ended += follower.poll()
                down_since = None
            except ApiUnreachable:
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > UNREACHABLE_GRACE_S:
                    raise
    except KeyboardInterrupt:
        pass
    return EXIT_OK


COMMANDS = (call, status, ls, tail, cancel)
