"""How a callback looks in the CLI: a rich table on a terminal, plain aligned lines in a pipe
(no colours, no wrapping, one line per change: readable by people and by ``grep``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

FINAL = ("completed", "failed", "cancelled")
LEG_COLUMNS = ("leg", "to", "from", "route", "state", "dialed", "ringing", "answered",
               "bridged", "hungup", "cause", "sip")
WIDE_COLUMNS = 110
"""A terminal at least this wide shows every leg column."""
STATE_STYLE = {"completed": "bold green", "failed": "bold red", "cancelled": "yellow",
               "bridged": "bold cyan", "waiting": "cyan", "dialing": "blue", "queued": "dim",
               "answered": "cyan", "ringing": "blue", "early": "blue", "hungup": "dim"}


def clock(ts: float | None) -> str:
    """A Unix time as the local wall-clock time of day (with the date if not today)."""
    if ts is None:
        return "-"
    t = time.localtime(ts)
    if time.strftime("%Y-%m-%d", t) != time.strftime("%Y-%m-%d"):
        return time.strftime("%Y-%m-%d %H:%M:%S", t)
    return time.strftime("%H:%M:%S", t)


def since(ts: float | None, base: float) -> str:
    """Seconds from the callback's creation: ``+1.02``."""
    return "-" if ts is None else f"+{max(0.0, ts - base):.2f}"


def talk_time(rec: dict[str, Any], now: float | None = None) -> float | None:
    """The record's talk time; while bridged, the time since the bridge (live)."""
    if rec.get("talk_time_s") is not None:
        return float(rec["talk_time_s"])
    if rec.get("state") != "bridged":
        return None
    bridged = [leg["times"]["bridged"] for leg in rec.get("legs", {}).values()
               if "bridged" in leg.get("times", {})]
    return max(0.0, (now or time.time()) - min(bridged)) if bridged else None


def leg_text(rec: dict[str, Any]) -> str:
    """``A 1000123 B 1000125``: who a callback calls."""
    legs = rec.get("legs", {})
    return f"A {legs.get('A', {}).get('to', '?')} B {legs.get('B', {}).get('to', '?')}"


def leg_rows(rec: dict[str, Any]) -> list[list[str]]:
    base = rec.get("created_at") or 0.0
    rows = []
    for name in ("A", "B"):
        leg = rec.get("legs", {}).get(name)
        if leg is None:
            continue
        times = leg.get("times", {})
        rows.append([name, str(leg.get("to", "")), str(leg.get("from") or "-"),
                     str(leg.get("route") or "default"), str(leg.get("state", "")),
                     *[since(times.get(k), base) for k in ("dialed", "ringing", "answered",
                                                           "bridged", "hungup")],
                     str(leg.get("hangup_cause") or "-"), str(leg.get("sip_status") or "-")])
    return rows


def headline(rec: dict[str, Any], now: float | None = None) -> str:
    """``<id>  bridged  talk 3.2 s`` / ``<id>  failed (b_busy)``."""
    parts = [str(rec.get("id")), str(rec.get("state"))]
    if rec.get("outcome") and rec.get("outcome") != rec.get("state"):
        parts[-1] += f" ({rec['outcome']})"
    talk = talk_time(rec, now)
    if talk is not None:
        parts.append(f"talk {talk:.1f} s")
    if rec.get("inferred"):
        parts.append("(end inferred)")
    return "  ".join(parts)


def aligned(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def summary_lines(rec: dict[str, Any]) -> list[str]:
    """``fsctl status`` in a pipe."""
    lines = [f"callback {headline(rec)}",
             (f"  mode {rec.get('mode')}, first {rec.get('first')}; created "
              f"{clock(rec.get('created_at'))}, ended {clock(rec.get('ended_at'))}")]
    lines += aligned([list(LEG_COLUMNS), *leg_rows(rec)])
    return lines


def legs_table(rec: dict[str, Any], width: int = 200) -> Table:
    """The legs as a table; on a narrow terminal without from, route and dialed."""
    keep = [i for i, col in enumerate(LEG_COLUMNS)
            if width >= WIDE_COLUMNS or col not in ("from", "route", "dialed")]
    table = Table(box=None, pad_edge=False, header_style="bold")
    for i in keep:
        table.add_column(LEG_COLUMNS[i], no_wrap=True)
    for row in leg_rows(rec):
        cells = [Text(c) for c in row]
        cells[4].stylize(STATE_STYLE.get(row[4], ""))
        table.add_row(*[cells[i] for i in keep])
    return table


def styled_headline(rec: dict[str, Any], now: float | None = None) -> Text:
    text = Text(f"callback {headline(rec, now)}", style="bold")
    at = len("callback ") + len(str(rec.get("id"))) + 2
    state = str(rec.get("state"))
    text.stylize(STATE_STYLE.get(state, ""), at, at + len(state))
    return text


def summary_renderable(rec: dict[str, Any], now: float | None = None,
                       width: int = 200) -> RenderableType:
    """``fsctl status`` on a terminal (and the live view of ``--watch``)."""
    info = Text(f"mode {rec.get('mode')}, first {rec.get('first')}; created "
                f"{clock(rec.get('created_at'))}, ended {clock(rec.get('ended_at'))}",
                style="dim")
    return Group(styled_headline(rec, now), info, legs_table(rec, width))


def history_text(entry: dict[str, Any], base: float) -> str | None:
    """One history entry as a line of ``--watch`` / ``tail``; None for entries of no interest."""
    kind = entry.get("event")
    at = since(entry.get("ts"), base)
    if kind == "state":
        extra = f" ({entry['outcome']})" if entry.get("outcome") not in (None, entry.get("state")) \
            else ""
        return f"{at}  {entry.get('state')}{extra}"
    if kind == "leg":
        return f"{at}  leg {entry.get('leg')} {entry.get('state')}"
    if kind in ("throttled", "redial"):
        return f"{at}  leg {entry.get('leg')} {kind} (attempt {entry.get('attempt')})"
    if kind == "hangup_requested":
        return f"{at}  hangup requested ({entry.get('reason')})"
    if kind == "command_failed":
        return f"{at}  {entry.get('what')} failed: {entry.get('reason')}"
    return None


def final_text(rec: dict[str, Any]) -> str:
    """How a callback ended, in one line."""
    state = rec.get("state")
    if state == "completed":
        talk = rec.get("talk_time_s")
        return "completed" + (f": talk time {talk:.1f} s" if talk is not None else "")
    causes = []
    for name, leg in sorted(rec.get("legs", {}).items()):
        if leg.get("hangup_cause"):
            sip = f", SIP {leg['sip_status']}" if leg.get("sip_status") else ""
            causes.append(f"{name} {leg['hangup_cause']}{sip}")
    detail = f" [{'; '.join(causes)}]" if causes else ""
    return f"{state}: {rec.get('outcome')}{detail}"


def list_rows(items: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = [["id", "created", "state", "outcome", "A", "B", "talk"]]
    for rec in items:
        legs = rec.get("legs", {})
        talk = talk_time(rec)
        rows.append([str(rec.get("id")), clock(rec.get("created_at")), str(rec.get("state")),
                     str(rec.get("outcome") or "-"), str(legs.get("A", {}).get("to", "")),
                     str(legs.get("B", {}).get("to", "")),
                     "-" if talk is None else f"{talk:.1f}"])
    return rows


class Out:
    """Where the CLI writes: rich on a terminal, plain flushed lines otherwise."""

    def __init__(self, tty: bool | None = None) -> None:
        self.console = Console(highlight=False, soft_wrap=True)
        self.tty = self.console.is_terminal if tty is None else tty

    def line(self, text: str, style: str = "") -> None:
        if self.tty:
            self.console.print(Text(text, style=style))
        else:
            print(text, flush=True)

    def lines(self, texts: Sequence[str]) -> None:
        for text in texts:
            self.line(text)

    def table(self, rows: list[list[str]]) -> None:
        if not self.tty:
            self.lines(aligned(rows, indent=""))
            return
        table = Table(box=None, pad_edge=False, header_style="bold")
        for col in rows[0]:
            table.add_column(col, no_wrap=True)
        for row in rows[1:]:
            cells = [Text(c) for c in row]
            cells[2].stylize(STATE_STYLE.get(row[2], ""))
            table.add_row(*cells)
        self.console.print(table)

    def summary(self, rec: dict[str, Any]) -> None:
        if self.tty:
            self.console.print(summary_renderable(rec, width=self.console.width))
        else:
            self.lines(summary_lines(rec))
