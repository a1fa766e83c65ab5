"""Helpers for the simulator tests: a tiny ESL client and the recordings turned into
per-leg event sequences that can be compared with what the simulator produces."""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import dataclass, field

import gevent
from gevent.event import Event as GEvent
from support import fixtures_dir

from fsctl.wire import Event, Frame, FrameReader


class Client:
    """A raw ESL client on a real socket; a reader greenlet collects every frame."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        # then no read timeout: a connection may stay quiet for longer than any fixed one
        # (sip_no_answer's command connection: 5.7 s between its originate and exit), and
        # a timed-out recv is no close; every wait has its own deadline (wait_for)
        self.sock.settimeout(None)
        self.frames: list[Frame] = []
        self.closed = False
        self._reader = FrameReader()
        self._arrived = GEvent()
        self._pos = 0
        self._greenlet = gevent.spawn(self._read)

    def _read(self) -> None:
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.frames += self._reader.feed(data)
                self._arrived.set()
        except OSError:
            pass
        self.closed = True
        self._arrived.set()

    def wait_for(self, predicate, timeout: float = 5.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what or predicate}")
            self._arrived.clear()
            if predicate():
                return
            self._arrived.wait(min(left, 0.05))

    def next_frame(self, timeout: float = 5.0, reply_only: bool = True) -> Frame:
        """The next reply frame (command/reply, api/response, …), skipping events."""
        while True:
            self.wait_for(lambda: self._pos < len(self.frames) or self.closed, timeout, "a frame")
            if self._pos >= len(self.frames):
                raise AssertionError("connection closed")
            frame = self.frames[self._pos]
            self._pos += 1
            if not reply_only or frame.event is None:
                return frame

    def send(self, text: str, headers: dict[str, str] | None = None) -> None:
        lines = [text] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\n".join(lines) + "\n\n").encode())

    def cmd(self, text: str, headers: dict[str, str] | None = None) -> Frame:
        self.send(text, headers)
        return self.next_frame()

    def api(self, text: str) -> str:
        return self.cmd(f"api {text}").body.decode()

    def events(self) -> list[Event]:
        return [f.event for f in self.frames if f.event is not None]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        self._greenlet.kill(block=False)


def connect(port: int, password: str, events: str | None = None) -> Client:
    client = Client(port)
    assert client.next_frame().content_type == "auth/request"
    assert client.cmd(f"auth {password}").headers["Reply-Text"] == "+OK accepted"
    if events:
        assert client.cmd(f"event {events}").headers["Reply-Text"].startswith("+OK")
    return client


# ---- the recordings ------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    rx_frames: list[Frame]
    rx_ends: list[int]
    commands: list[dict]
    legs: dict[str, str] = field(default_factory=dict)  # uuid -> label A/B
    jobs: dict[str, str] = field(default_factory=dict)  # job uuid -> label A/B
    dials: dict[str, str] = field(default_factory=dict)  # label -> dial string


_ORIG = re.compile(r"origination_uuid=([0-9a-f-]{36}).*?fsctl_leg=(\w+).*\}(\S+) ")

PERIODIC_EVENTS = frozenset({"HEARTBEAT", "RE_SCHEDULE"})
"""FreeSWITCH's own periodic events: the core's HEARTBEAT every 20 s and the scheduler's
RE_SCHEDULE of that task (Task-Desc heartbeat, Task-Group core). No call causes them, none
carries a channel; a recording contains one only if it happened to fall inside it
(sip_unavailable_480), so a replay never waits for them. Every call-related event is still
waited for and compared."""


def originated_leg(command: str) -> str | None:
    """The leg label (fsctl_leg) an originate command dials, None for other commands."""
    m = _ORIG.search(command)
    return m.group(2) if m else None


def load_scenario(name: str) -> Scenario:
    base = fixtures_dir()
    data = (base / f"{name}.rx").read_bytes()
    frames = FrameReader().feed(data)
    ends = frame_ends(data)
    assert len(ends) == len(frames), name
    commands = [json.loads(line) for line in (base / f"{name}.tx.jsonl").read_text().splitlines()
                if line.strip()]
    sc = Scenario(name, frames, ends, commands)
    for c in commands:  # a leg dialled again (throttle) maps both its uuids and jobs
        m = _ORIG.search(c["cmd"])
        if m:
            sc.legs[m.group(1)] = m.group(2)
            sc.dials[m.group(2)] = m.group(3)
            job = re.search(r"Job-UUID: (\S+)", c["cmd"])
            if job:
                sc.jobs[job.group(1)] = m.group(2)
    return sc


def frame_ends(data: bytes) -> list[int]:
    """Byte offset where each frame of a recording ends."""
    ends: list[int] = []
    pos = 0
    while True:
        while data.startswith(b"\n", pos):
            pos += 1
        end = data.find(b"\n\n", pos)
        if end < 0:
            return ends
        length = re.search(rb"^Content-Length: (\d+)$", data[pos:end], re.MULTILINE)
        pos = end + 2 + (int(length.group(1)) if length else 0)
        ends.append(pos)


class LegMapper:
    """Maps every Unique-ID of a stream to a leg label (temporary null uuids included)."""

    def __init__(self, legs: dict[str, str], dials: dict[str, str]) -> None:
        self.legs = dict(legs)
        self.by_name = {dial: label for label, dial in dials.items()}

    def label(self, ev: Event) -> str | None:
        uid = ev.get("Unique-ID")
        if uid is None:
            return None
        if ev.name == "CHANNEL_UUID" and ev.get("Old-Unique-ID"):
            self.legs[ev.get("Old-Unique-ID")] = self.legs.get(uid, "?")
        if uid not in self.legs and ev.get("Channel-Name") in self.by_name:
            self.legs[uid] = self.by_name[ev.get("Channel-Name")] + "~"  # never renamed
        return self.legs.get(uid)


def key_of(ev: Event, mapper: LegMapper, jobs: dict[str, str]) -> tuple:
    """The sync key of an event: name, leg (or job) and the state it reports."""
    if ev.name == "BACKGROUND_JOB":
        return ("BACKGROUND_JOB", jobs.get(ev.get("Job-UUID", ""), "?"))
    if ev.name == "API":
        return ("API", ev.get("API-Command"))
    leg = mapper.label(ev)
    detail = ""
    if ev.name == "CHANNEL_STATE":
        detail = ev.get("Channel-State", "")
    elif ev.name == "CHANNEL_CALLSTATE":
        detail = ev.get("Channel-Call-State", "")
    elif ev.name.startswith("CHANNEL_EXECUTE"):
        detail = ev.get("Application", "")
    return (ev.name, leg, detail)


def leg_view(ev: Event, mapper: LegMapper) -> tuple:
    """What is compared per event of a leg."""
    def lab(header: str) -> str | None:
        value = ev.get(header)
        return mapper.legs.get(value, value) if value else None

    return (
        ev.name,
        ev.get("Answer-State"),
        ev.get("Hangup-Cause"),
        ev.get("Channel-State") if ev.name == "CHANNEL_STATE" else None,
        ev.get("Channel-Call-State") if ev.name == "CHANNEL_CALLSTATE" else None,
        lab("Other-Leg-Unique-ID") if ev.name in ("CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE") else None,
        lab("Bridge-A-Unique-ID"),
        lab("Bridge-B-Unique-ID"),
        ev.get("variable_fsctl_callback_id"),
        ev.get("variable_fsctl_leg"),
        ev.get("Application") if ev.name.startswith("CHANNEL_EXECUTE") else None,
        ev.get("Application-Response"),
    )


def per_leg(events: list[Event], legs: dict[str, str], dials: dict[str, str],
            jobs: dict[str, str]) -> dict[str, list[tuple]]:
    """Per leg label: the compared view of its events, BACKGROUND_JOBs included (as
    ``("BACKGROUND_JOB", body)`` with uuids replaced by labels)."""
    mapper = LegMapper(legs, dials)
    out: dict[str, list[tuple]] = {}
    for ev in events:
        if ev.name == "BACKGROUND_JOB":
            label = jobs.get(ev.get("Job-UUID", ""))
            if label is not None:
                body = ev.body
                for uuid, lab in legs.items():
                    body = body.replace(uuid, f"<{lab}>")
                out.setdefault(label, []).append(("BACKGROUND_JOB", body))
            continue
        label = mapper.label(ev)
        if label is not None:
            out.setdefault(label.rstrip("~"), []).append(leg_view(ev, mapper))
    return out
