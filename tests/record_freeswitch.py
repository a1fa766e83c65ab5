"""Record byte-exact event-socket transcripts of a real FreeSWITCH (tests/fixtures/freeswitch).

    .venv/bin/python tests/record_freeswitch.py [--out DIR] [--readme FILE] [NAME ...]
    .venv/bin/python tests/record_freeswitch.py --list

For each scenario it starts nothing new but two raw TCP connections to a FreeSWITCH that
tests/realfs.py started (unrestricted admin login) and, for SIP legs, one switchboard sipp
(tests/sipp.py, tests/sip/switchboard.xml):

- ``rec``: ``auth``, ``event plain ALL``, finally ``exit``; every byte it receives is written
  unmodified to ``<name>.rx``;
- ``cmd``: ``auth``, then every ``api`` / ``bgapi`` of the scenario, finally ``exit``.

Every command sent on either goes to ``<name>.tx.jsonl`` with the fields of the README
(t, conn, cmd, reply, t_reply, wall, rx_bytes; then_received / then_closed after ``exit``).
The one thing not written verbatim is the password of ``auth``: realfs gives each FreeSWITCH
a random one, written ``auth <password>``. Then the scenario's section of the README is
written (replaced if it exists, appended otherwise) in the style of the existing ones.

Originates always have the form the README documents:
``bgapi originate {origination_uuid=<uuid>,fsctl_callback_id=<32 hex>,fsctl_leg=A|B,
ignore_early_media=true,originate_timeout=<n>[,...]}<dial string> &park()``.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid as uuidlib  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import unquote  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import realfs  # noqa: E402
from sipp import Sipp, behaviour_for  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "freeswitch"
WAIT_S = 40.0
"""Longest wait for any event a scenario waits for."""
GREETING = b"Content-Type: auth/request\n\n"


# ---- frames --------------------------------------------------------------------------------


@dataclass
class Frame:
    """One frame of a connection: outer headers, body, and where it ends in the stream."""

    index: int  # 1-based, as the README counts (the auth/request is #1)
    end: int
    raw: bytes
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def event(self) -> Event | None:
        if self.content_type != "text/event-plain":
            return None
        return Event.parse(self.index, self.body)


@dataclass
class Event:
    index: int
    headers: dict[str, str]
    body: str

    @classmethod
    def parse(cls, index: int, data: bytes) -> Event:
        head, sep, rest = data.partition(b"\n\n")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", errors="replace").split("\n"):
            name, colon, value = line.partition(": ")
            if colon:
                headers[name] = unquote(value)  # split first, then decode (the last value wins)
        length = int(headers.get("Content-Length", "0") or 0)
        return cls(index, headers, rest[:length].decode("utf-8", errors="replace") if sep else "")

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    @property
    def name(self) -> str:
        return self.headers.get("Event-Name", "")


def parse_frames(data: bytes, start_index: int = 1) -> tuple[list[Frame], int]:
    """Complete frames in ``data`` and the offset where the incomplete rest begins."""
    frames: list[Frame] = []
    pos = 0
    while True:
        end = data.find(b"\n\n", pos)
        if end < 0:
            return frames, pos
        head = data[pos:end].decode("utf-8", errors="replace")
        headers = dict(line.split(": ", 1) for line in head.split("\n") if ": " in line)
        length = int(headers.get("Content-Length", "0") or 0)
        stop = end + 2 + length
        if stop > len(data):
            return frames, pos
        frames.append(Frame(start_index + len(frames), stop, data[pos:stop], headers,
                            data[end + 2:stop]))
        pos = stop


# ---- connections ---------------------------------------------------------------------------


class Conn:
    """A raw event-socket connection; a reader thread keeps every byte it receives."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.settimeout(None)
        self.data = bytearray()
        self.frames: list[Frame] = []
        self.arrival: list[float] = []
        """time.monotonic() when each frame had arrived completely"""
        self._parsed = 0
        self.closed = False
        self.cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            with self.cond:
                if not chunk:
                    self.closed = True
                    self.cond.notify_all()
                    return
                self.data += chunk
                frames, rest = parse_frames(bytes(self.data[self._parsed:]), len(self.frames) + 1)
                now = time.monotonic()
                for f in frames:
                    f.end += self._parsed
                self.frames += frames
                self.arrival += [now] * len(frames)
                self._parsed += rest
                self.cond.notify_all()

    def wait(self, cond: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while not cond():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.2))
            return True

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n\n")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ---- one recording -------------------------------------------------------------------------


@dataclass
class Leg:
    label: str
    uuid: str
    job: str
    dial: str
    callback_id: str
    note: str = ""


@dataclass
class Recording:
    name: str
    fs: realfs.FreeSwitch
    sipp: Sipp | None
    out: Path
    notes: list[str] = field(default_factory=list)
    legs: list[Leg] = field(default_factory=list)
    tx: list[dict] = field(default_factory=list)
    rec: Conn | None = None
    cmd: Conn | None = None
    t0: float = 0.0
    log_offset: int = 0
    version: str = ""

    # -- commands ------------------------------------------------------------------------

    def _command(self, conn: Conn, text: str, *, is_exit: bool = False,
                 shown: str | None = None) -> str:
        assert self.rec is not None
        with conn.cond:
            n_before = len(conn.frames)
        with self.rec.cond:
            rx_bytes = len(self.rec.data)
        entry = {"t": round(time.monotonic() - self.t0, 6), "conn": conn.name,
                 "cmd": shown if shown is not None else text}
        wall = time.time()
        conn.send(text)

        def reply_frame() -> Frame | None:
            for f in conn.frames[n_before:]:
                if f.content_type in ("command/reply", "api/response"):
                    return f
            return None

        if not conn.wait(lambda: reply_frame() is not None or conn.closed, 15):
            raise RuntimeError(f"no reply to {text!r} on {conn.name}")
        frame = reply_frame()
        if frame is None:
            raise RuntimeError(f"{conn.name} closed without a reply to {text!r}")
        entry["reply"] = frame.raw.decode("utf-8", errors="replace")
        entry["t_reply"] = round(time.monotonic() - self.t0, 6)
        entry["wall"] = round(wall, 6)
        entry["rx_bytes"] = rx_bytes
        if is_exit:
            conn.wait(lambda: conn.closed, 5)
            with conn.cond:
                rest = bytes(conn.data[frame.end:])
            entry["then_received"] = rest.decode("utf-8", errors="replace")
            entry["then_closed"] = conn.closed
        self.tx.append(entry)
        return entry["reply"]

    def api(self, command: str) -> str:
        assert self.cmd is not None
        reply = self._command(self.cmd, f"api {command}")
        return reply.split("\n\n", 1)[1]

    def originate(self, label: str, dial: str, *, timeout: int = 30, extra: str = "",
                  callback_id: str | None = None, note: str = "") -> Leg:
        assert self.cmd is not None
        callback_id = callback_id or (self.legs[0].callback_id if self.legs
                                      else uuidlib.uuid4().hex)
        leg = Leg(label, str(uuidlib.uuid4()), str(uuidlib.uuid4()), dial, callback_id, note)
        variables = (f"origination_uuid={leg.uuid},fsctl_callback_id={callback_id},"
                     f"fsctl_leg={label},ignore_early_media=true,originate_timeout={timeout}"
                     + (f",{extra}" if extra else ""))
        self.legs.append(leg)
        self._command(self.cmd, f"bgapi originate {{{variables}}}{dial} &park()\n"
                                f"Job-UUID: {leg.job}")
        return leg

    def sip(self, number: str) -> str:
        assert self.sipp is not None
        return self.sipp.dial_string(number)

    # -- events --------------------------------------------------------------------------

    def events(self) -> list[Event]:
        assert self.rec is not None
        with self.rec.cond:
            frames = list(self.rec.frames)
        return [e for e in (f.event for f in frames) if e is not None]

    def find(self, name: str, leg: Leg | None = None, **headers: str) -> Event | None:
        for e in self.events():
            if e.name != name:
                continue
            if leg is not None and name == "BACKGROUND_JOB" and e.get("Job-UUID") != leg.job:
                continue
            if leg is not None and name != "BACKGROUND_JOB" and e.get("Unique-ID") != leg.uuid:
                continue
            if all(e.get(k) == v for k, v in headers.items()):
                return e
        return None

    def wait_for(self, name: str, leg: Leg | None = None, timeout_s: float = WAIT_S,
                 **headers: str) -> Event:
        assert self.rec is not None
        found: list[Event] = []

        def check() -> bool:
            e = self.find(name, leg, **headers)
            if e is not None:
                found.append(e)
            return bool(found)

        # the reader notifies rec.cond on every chunk; events() takes the same lock
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return found[0]
            with self.rec.cond:
                self.rec.cond.wait(0.1)
        raise RuntimeError(f"{self.name}: no {name} for {leg.label if leg else '-'} "
                           f"within {timeout_s}s")

    def job_result(self, leg: Leg) -> str:
        return self.wait_for("BACKGROUND_JOB", leg).body

    def wait_gone(self, *legs: Leg, settle_s: float = 1.0) -> None:
        """Every leg's CHANNEL_DESTROY (a refused leg has none: its job result then), then
        ``settle_s`` more for late events."""
        for leg in legs:
            job = self.wait_for("BACKGROUND_JOB", leg)
            if job.body.startswith("+OK") or self.find("CHANNEL_CREATE", leg) is not None:
                self.wait_for("CHANNEL_DESTROY", leg)
        time.sleep(settle_s)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    # -- run -----------------------------------------------------------------------------

    def run(self, play: Callable[[Recording], None]) -> None:
        fs = self.fs
        self.log_offset = fs.log_file.stat().st_size if fs.log_file.exists() else 0
        self.t0 = time.monotonic()
        self.rec = Conn("rec", fs.esl_port)
        if not self.rec.wait(lambda: bool(self.rec.frames), 5):
            raise RuntimeError("no auth/request greeting")
        self._command(self.rec, f"auth {fs.admin_password}", shown="auth <password>")
        self._command(self.rec, "event plain ALL")
        self.cmd = Conn("cmd", fs.esl_port)
        if not self.cmd.wait(lambda: bool(self.cmd.frames), 5):
            raise RuntimeError("no auth/request greeting on cmd")
        self._command(self.cmd, f"auth {fs.admin_password}", shown="auth <password>")
        try:
            play(self)
        finally:
            self._command(self.cmd, "exit", is_exit=True)
            self._command(self.rec, "exit", is_exit=True)
            self.rec.close()
            self.cmd.close()

    def write(self) -> tuple[Path, Path]:
        assert self.rec is not None
        self.out.mkdir(parents=True, exist_ok=True)
        rx = self.out / f"{self.name}.rx"
        txp = self.out / f"{self.name}.tx.jsonl"
        with self.rec.cond:
            data = bytes(self.rec.data)
        if not data.startswith(GREETING):
            raise RuntimeError("recording does not start with the auth/request greeting")
        rx.write_bytes(data)
        txp.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in self.tx))
        return rx, txp

    def log_lines(self, min_level: str = "WARNING") -> list[str]:
        """FreeSWITCH log lines written while the scenario ran, at min_level or above."""
        levels = ["DEBUG", "INFO", "NOTICE", "WARNING", "ERR", "CRIT", "ALERT"]
        wanted = levels[levels.index(min_level):]
        try:
            text = self.fs.log_file.read_bytes()[self.log_offset:].decode(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines()
                if any(f"[{lv}]" in line for lv in wanted)
                and not any(p.search(line) for p in realfs.STARTUP_WARNINGS_ALLOWED)]


# ---- README section ------------------------------------------------------------------------


def short(u: str | None) -> str:
    return (u or "")[:8]


def shorten_uuids(text: str, labels: dict[str, str]) -> str:
    for u, label in labels.items():
        text = text.replace(u, f"<{label}:{short(u)}>")
    return text


def detail_of(e: Event, labels: dict[str, str]) -> str:
    n = e.name
    if n == "CHANNEL_STATE":
        return e.get("Channel-State", "")
    if n == "CHANNEL_CALLSTATE":
        return f"{e.get('Original-Channel-Call-State', '')} -> {e.get('Channel-Call-State', '')}"
    if n in ("CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE"):
        data = e.get("Application-Data") or ""
        if data in ("", "_undef_"):
            arg = ""
        else:
            arg = data[:8] + "…"
        text = f"{e.get('Application', '')}({arg})"
        if n == "CHANNEL_EXECUTE_COMPLETE":
            text += f" → {e.get('Application-Response') or '_none_'}"
        return text
    if n in ("CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE"):
        return f"Other-Leg-Unique-ID {short(e.get('Other-Leg-Unique-ID'))}"
    if n == "CHANNEL_UUID":
        return f"Old-Unique-ID {short(e.get('Old-Unique-ID'))}"
    if n == "PRIVATE_COMMAND":
        return f"{e.get('call-command', '')} {e.get('execute-app-name', '')}".strip()
    if n in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
        parts = []
        for var, name in (("variable_sip_term_status", "sip_term_status"),
                          ("variable_sip_invite_failure_status", "sip_invite_failure_status"),
                          ("variable_sip_hangup_disposition", "sip_hangup_disposition")):
            if e.get(var):
                parts.append(f"{name} {e.get(var)}")
        return ", ".join(parts)
    return ""


def leg_of_events(events: list[Event], legs: list[Leg]) -> dict[int, tuple[Leg, bool]]:
    """Event index → (leg, pre-rename) for every event of a leg (temporary uuids included)."""
    by_uuid = {leg.uuid: leg for leg in legs}
    temp: dict[str, Leg] = {}
    for e in events:
        if e.name == "CHANNEL_UUID" and e.get("Unique-ID") in by_uuid and e.get("Old-Unique-ID"):
            temp[e.get("Old-Unique-ID")] = by_uuid[e.get("Unique-ID")]
    by_channel = {}
    for leg in legs:
        by_channel.setdefault(leg.dial, []).append(leg)
    out: dict[int, tuple[Leg, bool]] = {}
    for e in events:
        uid = e.get("Unique-ID")
        if not uid or e.name == "BACKGROUND_JOB":
            continue
        if uid in by_uuid:
            out[e.index] = (by_uuid[uid], False)
        elif uid in temp:
            out[e.index] = (temp[uid], True)
        elif e.get("Channel-Name") in by_channel and len(by_channel[e.get("Channel-Name")]) == 1:
            out[e.index] = (by_channel[e.get("Channel-Name")][0], True)  # never renamed
    return out


def frame_at(frames: list[Frame], rx_bytes: int) -> int:
    return sum(1 for f in frames if f.end <= rx_bytes)


def quote(text: str, limit: int = 90) -> str:
    text = text.replace("\n", " ").strip()
    return text if len(text) <= limit else text[:limit] + " …"


def section(r: Recording, what: list[str]) -> str:
    assert r.rec is not None
    frames = list(r.rec.frames)
    events = [e for e in (f.event for f in frames) if e is not None]
    labels = {leg.uuid: leg.label for leg in r.legs}
    jobs = {leg.job: leg for leg in r.legs}
    multi = len({leg.callback_id for leg in r.legs}) > 1 or len(r.legs) > 2
    lines = [f"## {r.name}", "",
             f"Recorded from FreeSWITCH {r.version} over the inbound event socket.", ""]
    if r.legs:
        cbs = []
        for cb in dict.fromkeys(leg.callback_id for leg in r.legs):
            parts = [f"{leg.label} = `{short(leg.uuid)}` (`{leg.dial}`, Job-UUID "
                     f"`{short(leg.job)}`{', ' + leg.note if leg.note else ''})"
                     for leg in r.legs if leg.callback_id == cb]
            cbs.append(f"fsctl_callback_id=`{cb}`; " + ", ".join(parts))
        lines += ["; ".join(cbs) + ".", ""]
    lines += ["**What the controller did**", ""]
    lines += [f"{i}. {step}" for i, step in enumerate(what, 1)]
    lines += ["", ("**Commands in order** (`t` = seconds since the scenario started; `after #n` "
                   "= last complete frame of the `.rx` received before sending)"), ""]
    for tx in r.tx:
        after = frame_at(frames, tx["rx_bytes"])
        cmd = tx["cmd"]
        extra = ""
        if "\nJob-UUID: " in cmd:
            cmd, job = cmd.split("\nJob-UUID: ", 1)
            extra = f" + header `Job-UUID: {short(job)}…`"
        cmd_shown = shorten_uuids(cmd, labels)
        reply = tx["reply"]
        if tx.get("then_closed") is not None:
            text = re.search(r"Reply-Text: (.*)", reply)
            result = f"`{text.group(1) if text else reply}`"
            if "disconnect-notice" in tx.get("then_received", ""):
                result += " then `text/disconnect-notice`"
            if tx.get("then_closed"):
                result += ", socket closed"
        elif reply.startswith("Content-Type: api/response"):
            body = reply.split("\n\n", 1)[1]
            length = re.search(r"Content-Length: (\d+)", reply)
            result = f"api/response `{quote(body)}` (Content-Length {length.group(1) if length else 0})"
        else:
            text = re.search(r"Reply-Text: (.*)", reply)
            result = f"`{text.group(1) if text else quote(reply)}`"
            if "Job-UUID: " in result:
                result = re.sub(r"Job-UUID: ([0-9a-f-]{36})",
                                lambda m: f"Job-UUID: {short(m.group(1))}…", result)
        lines.append(f"- t={tx['t']:.3f} [{tx['conn']}] after #{after}: `{cmd_shown}`{extra} → {result}")
    lines.append("")
    owner = leg_of_events(events, r.legs)
    for leg in r.legs:
        rows = [(e, pre) for e in events if e.index in owner and owner[e.index][0] is leg
                for pre in (owner[e.index][1],)]
        title = f"**Leg {leg.label} events**" if not multi else \
            f"**Leg {leg.label} `{short(leg.uuid)}` events** ({leg.note or leg.dial})"
        lines += [f"{title} (`#` = frame number in the `.rx`, counting the auth/request as #1)", ""]
        if not rows:
            lines += [("No event carries this leg's uuid (nor a temporary one): no channel was "
                       "created."), ""]
            continue
        lines += ["| # | Event-Name | Unique-ID | Answer-State | Hangup-Cause | detail |",
                  "|---|---|---|---|---|---|"]
        for e, pre in rows:
            uid = short(e.get("Unique-ID")) + (" (pre-rename)" if pre else "")
            lines.append(f"| {e.index} | {e.name} | {uid} | {e.get('Answer-State', '') or ''} | "
                         f"{e.get('Hangup-Cause', '') or ''} | {detail_of(e, labels)} |")
        lines.append("")
    lines += ["**BACKGROUND_JOB events**", ""]
    for e in events:
        if e.name != "BACKGROUND_JOB":
            continue
        leg = jobs.get(e.get("Job-UUID", ""))
        who = f"leg {leg.label}" + (f" `{short(leg.uuid)}`" if multi else "") if leg else "not ours"
        pos = ""
        if leg is not None:
            mine = [x for x in events if x.index in owner and owner[x.index][0] is leg]
            before = [x for x in mine if x.index < e.index]
            after = [x for x in mine if x.index > e.index]
            parts = []
            if before:
                parts.append(f"after {leg.label}'s {before[-1].name} (#{before[-1].index})")
            if after:
                parts.append(f"before {leg.label}'s {after[0].name} (#{after[0].index})")
            pos = (" — " + ", ".join(parts)) if parts else " — no event of this leg at all"
        lines.append(f"- #{e.index} Job-UUID `{short(e.get('Job-UUID'))}` ({who}), Job-Command "
                     f"`{e.get('Job-Command', '')}`, body `{json.dumps(e.body)}`{pos}")
    lines += ["", "**Other frames on the event connection** (not tied to a leg)", ""]
    other = []
    for f in frames:
        e = f.event
        if e is None:
            ct = f.content_type
            text = re.search(r"Reply-Text: (.*)", f.raw.decode(errors="replace"))
            other.append(f"#{f.index} `{ct}`" + (f" `{text.group(1)}`" if text else ""))
        elif e.name != "BACKGROUND_JOB" and f.index not in owner:
            if e.name == "API":
                arg = e.get("API-Command-Argument") or ""
                cmdline = shorten_uuids(f"{e.get('API-Command', '')} {arg}".strip(), labels)
                if len(cmdline) > 80:
                    cmdline = cmdline[:80] + "…"
                other.append(f"#{f.index} API `{cmdline}` (Event-Sequence {e.get('Event-Sequence')})")
            else:
                uid = f" Unique-ID {short(e.get('Unique-ID'))}" if e.get("Unique-ID") else ""
                other.append(f"#{f.index} {e.name}{uid} (Event-Sequence {e.get('Event-Sequence')})")
    lines += ["; ".join(other) + ".", ""]
    if r.notes:
        lines += ["**Notes**", ""]
        lines += [f"- {note}" for note in r.notes]
        lines.append("")
    return "\n".join(lines)


def update_readme(readme: Path, name: str, text: str) -> None:
    content = readme.read_text(encoding="utf-8") if readme.exists() else \
        "# FreeSWITCH event-socket reference transcripts\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    block = text.rstrip("\n") + "\n\n"
    if pattern.search(content):
        content = pattern.sub(lambda _m: block, content, count=1)
    else:
        content = content.rstrip("\n") + "\n\n" + block
    readme.write_text(content.rstrip("\n") + "\n", encoding="utf-8")


# ---- scenarios -----------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    play: Callable[[Recording], list[str]]
    """Plays it; returns the "What the controller did" steps."""
    sessions_per_second: int | None = None
    uses_sip: bool = True
    default: bool = True
    """Recorded when no names are given (throttle_burst only on request: several callbacks)."""


def far_end(r: Recording, number: str) -> str:
    assert r.sipp is not None
    b = behaviour_for(number)
    return (f"`{r.sip(number)}` = tests/sip/switchboard.xml (sipp) number {number}: {b.text}")


def one_failing_leg(number: str, timeout: int, expect: str, extra_note: str = "") -> \
        Callable[[Recording], list[str]]:
    def play(r: Recording) -> list[str]:
        a = r.originate("A", r.sip(number), timeout=timeout)
        result = r.job_result(a)
        r.wait_gone(a)
        hup = r.find("CHANNEL_HANGUP_COMPLETE", a)
        create = r.find("CHANNEL_CREATE", a)
        progress = r.find("CHANNEL_PROGRESS", a)
        if hup is not None:
            t_create = int(create.get("Event-Date-Timestamp")) / 1e6 if create else 0
            t_hup = int(r.find("CHANNEL_HANGUP", a).get("Event-Date-Timestamp")) / 1e6
            r.notes.append(
                f"BACKGROUND_JOB {result.strip()!r}; Hangup-Cause {hup.get('Hangup-Cause')}, "
                f"variable_sip_term_status {hup.get('variable_sip_term_status') or '(unset)'}, "
                f"variable_sip_invite_failure_status "
                f"{hup.get('variable_sip_invite_failure_status') or '(unset)'}, "
                f"variable_sip_hangup_disposition {hup.get('variable_sip_hangup_disposition')}; "
                f"CHANNEL_HANGUP {t_hup - t_create:.2f} s after CHANNEL_CREATE"
                + ("; the 180 gave CHANNEL_PROGRESS (Answer-State ringing)" if progress else "")
                + ".")
        if expect not in result:
            r.notes.append(f"UNEXPECTED: the plan expected {expect}")
        if extra_note:
            r.notes.append(extra_note)
        return [f"originate A = {far_end(r, number)}, originate_timeout={timeout}",
                "waited for the BACKGROUND_JOB and CHANNEL_DESTROY, 1 s more, `exit`"]
    return play


def sip_far_end_bye(r: Recording) -> list[str]:
    a = r.originate("A", r.sip("1050011"))
    r.wait_for("CHANNEL_ANSWER", a)
    job_a = r.job_result(a)
    r.wait_for("CHANNEL_PARK", a)
    b = r.originate("B", r.sip("1050211"))
    r.wait_for("CHANNEL_ANSWER", b)
    job_b = r.job_result(b)
    r.wait_for("CHANNEL_PARK", b)
    bridge = r.api(f"uuid_bridge {a.uuid} {b.uuid}")
    r.wait_gone(a, b)
    hb = r.find("CHANNEL_HANGUP_COMPLETE", b)
    ha = r.find("CHANNEL_HANGUP_COMPLETE", a)
    both_ok = job_a.startswith("+OK") and job_b.startswith("+OK")
    r.notes.append(f"A's job {job_a.strip()!r}, B's job {job_b.strip()!r}"
                   + (": both +OK, as uuid_bridge waited for each leg's BACKGROUND_JOB and "
                      "CHANNEL_PARK (compare sip_both_legs, bridged on CHANNEL_ANSWER)"
                      if both_ok else "")
                   + f"; uuid_bridge replied {bridge.strip()!r}.")
    if ha is not None and hb is not None:
        r.notes.append(
            f"B's far end sent BYE: B Hangup-Cause {hb.get('Hangup-Cause')}, "
            f"sip_hangup_disposition {hb.get('variable_sip_hangup_disposition')}, "
            f"sip_term_status {hb.get('variable_sip_term_status')}; A then got CHANNEL_UNBRIDGE "
            f"and was hung up with {ha.get('Hangup-Cause')} "
            f"(sip_hangup_disposition {ha.get('variable_sip_hangup_disposition')}).")
    return [(f"originate A = {far_end(r, '1050011')}, originate_timeout=30; waited for A's "
             "CHANNEL_ANSWER, BACKGROUND_JOB and CHANNEL_PARK"),
            (f"originate B = {far_end(r, '1050211')}, originate_timeout=30; waited for B's "
             "CHANNEL_ANSWER, BACKGROUND_JOB and CHANNEL_PARK"),
            "`uuid_bridge <A> <B>`",
            "no further command: B's far end sent BYE 3 s after its ACK, FreeSWITCH then hung up A",
            "waited for both CHANNEL_DESTROY, 1 s more, `exit`"]


def sip_early_media(r: Recording) -> list[str]:
    a = r.originate("A", r.sip("1050811"))
    r.wait_for("CHANNEL_ANSWER", a)
    job = r.job_result(a)
    r.wait_for("CHANNEL_PARK", a)
    r.sleep(1.0)
    kill = r.api(f"uuid_kill {a.uuid}")
    r.wait_gone(a)
    pm = r.find("CHANNEL_PROGRESS_MEDIA", a)
    an = r.find("CHANNEL_ANSWER", a)
    early = [e for e in r.events() if e.name == "CHANNEL_CALLSTATE"
             and e.get("Unique-ID") == a.uuid and e.get("Channel-Call-State") == "EARLY"]
    callstate = (f"{early[0].get('Original-Channel-Call-State')} -> EARLY (#{early[0].index})"
                 if early else "never EARLY")
    if pm is not None and an is not None:
        dt = (int(an.get("Event-Date-Timestamp")) - int(pm.get("Event-Date-Timestamp"))) / 1e6
        r.notes.append(
            f"The 183 with SDP gave CHANNEL_PROGRESS_MEDIA (#{pm.index}, Answer-State "
            f"{pm.get('Answer-State')}), the 200 OK {dt:.2f} s later CHANNEL_ANSWER (#{an.index}); "
            f"with ignore_early_media=true the originate waited for the 200 (job {job.strip()!r}), "
            "but the events still show the early media: Answer-State `early` and "
            f"CHANNEL_CALLSTATE {callstate}.")
    elif pm is None:
        r.notes.append("No CHANNEL_PROGRESS_MEDIA for the 183 with SDP.")
    r.notes.append(f"uuid_kill replied {kill.strip()!r}.")
    return [f"originate A = {far_end(r, '1050811')}, originate_timeout=30",
            "waited for A's CHANNEL_ANSWER, BACKGROUND_JOB and CHANNEL_PARK, then 1 s",
            "`uuid_kill <A>`",
            "waited for CHANNEL_DESTROY, 1 s more, `exit`"]


THROTTLE_SPS = 2


class Retry(Exception):
    """The scenario did not produce what it is meant to show: record it again."""


def throttle(r: Recording) -> list[str]:
    """One callback in simultaneous mode against sessions-per-second=2 (one new channel per
    one-second tick): the second leg of the burst is refused; 1.5 s later (a new tick) the
    controller originates that leg again, bridges both and hangs up."""
    a = r.originate("A", "null/9100", extra="park_timeout=20")
    b = r.originate("B", "null/9101", extra="park_timeout=20")
    results = {leg.label: r.job_result(leg).strip() for leg in (a, b)}
    status = r.api("status")
    refused = [leg for leg in (a, b) if results[leg.label] == "-ERR DESTINATION_OUT_OF_ORDER"]
    accepted = [leg for leg in (a, b) if results[leg.label].startswith("+OK")]
    if len(refused) != 1 or len(accepted) != 1:
        raise Retry(f"burst gave {results}, not one accepted and one refused")
    first, lost = accepted[0], refused[0]
    sent = [tx for tx in r.tx if tx["cmd"].startswith("bgapi originate")]
    gap = sent[1]["t"] - sent[0]["t"]
    lost_job = r.find("BACKGROUND_JOB", lost)
    first_job = r.find("BACKGROUND_JOB", first)
    lost_sent = next(tx for tx in sent if lost.uuid in tx["cmd"])
    assert r.rec is not None
    job_gap_ms = (r.rec.arrival[lost_job.index - 1] - r.t0 - lost_sent["t"]) * 1000
    r.wait_for("CHANNEL_PARK", first)
    r.sleep(1.5)
    again = r.originate(lost.label, f"null/{9100 + (lost.label == 'B')}", extra="park_timeout=20",
                        note="the same leg again, 1.5 s later")
    job_again = r.job_result(again).strip()
    r.wait_for("CHANNEL_PARK", again)
    a2, b2 = (first, again) if first.label == "A" else (again, first)
    bridge = r.api(f"uuid_bridge {a2.uuid} {b2.uuid}")
    r.wait_for("CHANNEL_BRIDGE", a2)
    r.sleep(1.0)
    kill = r.api(f"uuid_kill {a2.uuid}")
    r.wait_gone(a2, b2, lost)
    lost.note = "refused"
    r.notes.append(
        f"sessions-per-second={THROTTLE_SPS}: FreeSWITCH lets sps-1 new channels through per "
        "one-second tick (switch_core_session.c: `sps = --runtime.sps; if (sps <= 0)` → "
        f"Throttle Error; switch_time.c resets runtime.sps every second), so {THROTTLE_SPS} "
        f"allows one. Of the two originates sent {1000 * gap:.1f} ms apart, "
        f"{first.label} `{short(first.uuid)}` was accepted ({results[first.label]!r}) and "
        f"{lost.label} `{short(lost.uuid)}` refused ({results[lost.label]!r}); the same leg "
        f"originated again 1.5 s later as `{short(again.uuid)}` got {job_again!r}; "
        f"uuid_bridge replied {bridge.strip()!r}, uuid_kill {kill.strip()!r}.")
    r.notes.append(
        "A refused leg produces nothing on the event socket but its BACKGROUND_JOB "
        "`-ERR DESTINATION_OUT_OF_ORDER` (and the API event of its originate): no CHANNEL_*, "
        "CODEC or other event carries its uuid, and no channel with a temporary uuid appears. "
        f"Its job had arrived {job_gap_ms:.1f} ms after its originate was sent, "
        f"{'before' if lost_job.index < first_job.index else 'after'} the accepted leg's "
        f"BACKGROUND_JOB (#{lost_job.index} vs #{first_job.index}).")
    r.notes.append(
        "`api status` counts per second from the last whole tick (switch_time.c sets "
        "runtime.sps_last = sps_total - sps when it resets the budget), so right after the burst "
        "its `session(s) per Sec` line does not show it yet.")
    log = [line for line in r.log_lines("NOTICE")
           if any(w in line for w in ("Throttle", "Session Rate", "Cannot create", "Error Creating",
                                      "Session Limit"))]
    if log:
        r.notes.append("FreeSWITCH's log about it (freeswitch.log; the refused leg's lines carry "
                       "no uuid):\n\n"
                       + "\n".join(f"      {line}" for line in log[:20]) + "\n")
    r.notes.append("`api status` right after both BACKGROUND_JOBs of the burst:\n\n"
                   + "\n".join(f"      {line.rstrip()}" for line in status.strip().splitlines())
                   + "\n")
    return [(f"FreeSWITCH started with sessions-per-second={THROTTLE_SPS} "
             f"(realfs.FreeSwitch(sessions_per_second={THROTTLE_SPS}))"),
            ("originate A = `null/9100` and, back to back, B = `null/9101` (both answer at once, "
             "`park_timeout=20`, originate_timeout=30)"),
            "waited for both BACKGROUND_JOBs, then `api status`",
            (f"waited for the accepted leg's CHANNEL_PARK, 1.5 s, then originated the refused "
             f"leg ({lost.label}) again with a new uuid and Job-UUID; waited for its CHANNEL_PARK"),
            "`uuid_bridge <A> <B>`; on CHANNEL_BRIDGE, 1 s, `uuid_kill <A>`",
            "waited for both CHANNEL_DESTROY, 1 s more, `exit`"]


BURST_SPS = 3
BURST_CALLBACKS = 3


def throttle_burst(r: Recording) -> list[str]:
    """Several callbacks at once (not recorded by default: tests/test_replay.py's load() maps
    one callback per recording, by the last originate of each leg letter)."""
    legs = []
    for i in range(BURST_CALLBACKS):
        cb = uuidlib.uuid4().hex
        for label in ("A", "B"):
            n = 9200 + 10 * i + (label == "B")
            legs.append(r.originate(label, f"null/{n}", extra="park_timeout=2", callback_id=cb,
                                    note=f"callback {i + 1}"))
    results = {leg.uuid: r.job_result(leg).strip() for leg in legs}
    status = r.api("status")
    r.wait_gone(*legs)
    refused = [leg for leg in legs if results[leg.uuid] == "-ERR DESTINATION_OUT_OF_ORDER"]
    for leg in refused:
        leg.note += ", refused"
    r.notes.append(
        f"sessions-per-second={BURST_SPS} (sps-1 = {BURST_SPS - 1} new channels per one-second "
        f"tick). {len(legs) - len(refused)} of {len(legs)} legs were accepted, {len(refused)} "
        "refused: " + ", ".join(f"{leg.label} `{short(leg.uuid)}` ({leg.note.split(',')[0]})"
                                 for leg in refused) + ". A burst that straddles a tick gets "
        "more through.")
    log = [line for line in r.log_lines("NOTICE")
           if any(w in line for w in ("Throttle", "Session Rate", "Cannot create"))]
    if log:
        r.notes.append("FreeSWITCH's log about it:\n\n"
                       + "\n".join(f"      {line}" for line in log[:20]) + "\n")
    r.notes.append("`api status` right after the last BACKGROUND_JOB:\n\n"
                   + "\n".join(f"      {line.rstrip()}" for line in status.strip().splitlines())
                   + "\n")
    return [f"FreeSWITCH started with sessions-per-second={BURST_SPS}",
            (f"{len(legs)} originates back to back: {BURST_CALLBACKS} callbacks × A and B, "
             "`null/<n>` legs that answer at once, `park_timeout=2`"),
            "waited for every BACKGROUND_JOB, then `api status`",
            "waited for the accepted legs' CHANNEL_DESTROY (park_timeout), 1 s more, `exit`"]


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("sip_busy", one_failing_leg("1000666", 30, "USER_BUSY")),
    Scenario("sip_no_answer", one_failing_leg(
        "1000555", 5, "NO_ANSWER",
        "originate_timeout=5 expired: FreeSWITCH sent CANCEL, the far end answered 200 OK to the "
        "CANCEL and 487 Request Terminated to the INVITE (whole-second timer: expect n-1 to n s).")),
    Scenario("sip_far_end_bye", sip_far_end_bye),
    Scenario("sip_early_media", sip_early_media),
    Scenario("sip_unavailable_480", one_failing_leg("1050411", 30, "NO_USER_RESPONSE")),
    Scenario("sip_not_found_404", one_failing_leg("1050511", 30, "UNALLOCATED_NUMBER")),
    Scenario("sip_service_unavailable_503", one_failing_leg("1050611", 30,
                                                            "NORMAL_TEMPORARY_FAILURE")),
    Scenario("throttle", throttle, sessions_per_second=THROTTLE_SPS, uses_sip=False),
    Scenario("throttle_burst", throttle_burst, sessions_per_second=BURST_SPS, uses_sip=False,
             default=False),
)}


def fs_version(fs: realfs.FreeSwitch) -> str:
    status = fs.api("status")
    m = re.search(r"FreeSWITCH \(Version (.*?)\) is ready", status)
    return m.group(1) if m else fs.api("version").strip()


def record_one(sc: Scenario, fs: realfs.FreeSwitch, sipp: Sipp | None, out: Path,
               readme: Path, attempts: int = 3) -> bool:
    """Record one scenario (again, up to ``attempts`` times, if it raises Retry)."""
    for attempt in range(1, attempts + 1):
        r = Recording(sc.name, fs, sipp, out)
        r.version = fs_version(fs)
        steps: list[str] = []

        def play(rec: Recording, steps: list[str] = steps) -> None:
            steps.extend(sc.play(rec))

        try:
            r.run(play)
        except Retry as exc:
            print(f"{sc.name}: attempt {attempt}: {exc}", flush=True)
            kill_legs(fs, r)
            time.sleep(2.0)
            continue
        except Exception as exc:  # noqa: BLE001 - report it and go on with the next scenario
            print(f"{sc.name}: FAILED: {exc!r}", flush=True)
            kill_legs(fs, r)
            return False
        left = fs.api("show channels as json").strip()
        if left != '{"row_count": 0}':
            r.notes.append(f"channels left after the scenario: {left[:200]}")
        rx, _ = r.write()
        r.notes.insert(0, "Recorded by tests/record_freeswitch.py against a FreeSWITCH started by "
                          "tests/realfs.py (profile `fsctl` on 127.0.0.1, a random admin password "
                          "for plain `auth`, written `auth <password>` in the .tx.jsonl).")
        update_readme(readme, sc.name, section(r, steps))
        print(f"{sc.name}: {rx.stat().st_size} bytes .rx, {len(r.tx)} commands, "
              f"{len(r.rec.frames) if r.rec else 0} frames", flush=True)
        return True
    print(f"{sc.name}: FAILED after {attempts} attempts", flush=True)
    return False


def kill_legs(fs: realfs.FreeSwitch, r: Recording) -> None:
    """Leave nothing of a failed attempt behind in FreeSWITCH (its legs only)."""
    for leg in r.legs:
        fs.api(f"uuid_kill {leg.uuid}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and fs.api("show channels as json").strip() != \
            '{"row_count": 0}':
        time.sleep(0.2)


def record(names: list[str], out: Path, readme: Path, keep: bool) -> int:
    work = Path(tempfile.mkdtemp(prefix="fsctl-record-"))
    instances: dict[int | None, realfs.FreeSwitch] = {}
    sipp = None
    failures = 0
    try:
        for name in names:
            sc = SCENARIOS[name]
            fs = instances.get(sc.sessions_per_second)
            if fs is None:
                fs = realfs.FreeSwitch(work / f"fs-{sc.sessions_per_second or 'default'}",
                                       sessions_per_second=sc.sessions_per_second).start()
                instances[sc.sessions_per_second] = fs
                time.sleep(1.0)  # start-up events (RE_SCHEDULE …) out of the way
            if sc.uses_sip and sipp is None:
                sipp = Sipp(work / "sipp").start()
            if not record_one(sc, fs, sipp if sc.uses_sip else None, out, readme):
                failures += 1
    finally:
        if sipp is not None:
            sipp.stop()
        for fs in instances.values():
            fs.stop()
        if keep or failures:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="scenarios to record (default: all)")
    ap.add_argument("--out", type=Path, default=FIXTURES, help=f"directory (default {FIXTURES})")
    ap.add_argument("--readme", type=Path, default=None,
                    help="README to update (default <out>/README.md)")
    ap.add_argument("--list", action="store_true", help="list the scenarios")
    ap.add_argument("--keep", action="store_true", help="keep FreeSWITCH's and sipp's logs")
    args = ap.parse_args()
    if args.list:
        for name, sc in SCENARIOS.items():
            print(name if sc.default else f"{name} (only on request)")
        return 0
    names = args.names or [name for name, sc in SCENARIOS.items() if sc.default]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenarios: {unknown}; --list shows them")
    return record(names, args.out, args.readme or args.out / "README.md", args.keep)


if __name__ == "__main__":
    sys.exit(main())
