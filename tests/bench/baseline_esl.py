"""The raw-ESL baseline of the real-FreeSWITCH benchmark: fsctl's call flow in the fewest steps.

One plain blocking TCP socket (``select`` for the waits), no greenswitch, no fsctl code: log
in as the restricted user ``fsctl@fsctl.local`` (as the worker does), subscribe to the two
events the flow needs, and per callback, open-loop at a fixed rate:

1. ``bgapi originate {origination_uuid=A,ignore_early_media=true,originate_timeout=30}
   sofia/fsctl/<A>@127.0.0.1:<sipp> &park()``
2. when A's originate job returns ``+OK`` (A answered): the same for B;
3. when B's returns ``+OK``: ``bgapi uuid_bridge A B``;
4. the callback is final when both legs' CHANNEL_HANGUP_COMPLETE arrived (or a leg's
   originate came back ``-ERR``: that leg never had a channel, or its hangup is already in).

Why only BACKGROUND_JOB and CHANNEL_HANGUP_COMPLETE: with ``ignore_early_media`` the originate
job returns exactly when the leg answered, so CHANNEL_ANSWER adds nothing; it is even too early
for the bridge: checked on FreeSWITCH 1.11.1, a ``uuid_bridge`` sent on B's CHANNEL_ANSWER
races B's own originate, which then returns ``-ERR ORIGINATOR_CANCEL`` (fsctl waits for
CHANNEL_PARK of both legs; the job's ``+OK`` comes at the same moment, the channel already
set to run ``park``). The job is also the only sign of an originate FreeSWITCH refused before
creating a channel (throttling, max-sessions) and of a failed ``uuid_bridge``. HANGUP_COMPLETE
observes the end. Also checked: a ``uuid_bridge`` of two legs parked by ``&park()`` hangs A up
(NORMAL_CLEARING) by itself, in the same millisecond as B, when the far end of B sends BYE,
so no ``uuid_kill`` is needed on the normal path. A leg left alone anyway (B refused while A
waits, a failed bridge, A still up :data:`LINGER_S` after B's hangup) is hung up with
``bgapi uuid_kill``, as fsctl does.

Parsing is minimal: a frame is split at its ``Content-Length``; of an event only the
``Event-Name`` (the first header), ``Unique-ID`` or ``Job-UUID`` and the first bytes of a job's
result are looked at, by ``bytes.find`` on the raw body. Nothing is URL-decoded.

    .venv/bin/python tests/bench/baseline_esl.py [--rate 20] [--seconds 20]

starts its own FreeSWITCH (tests/realfs.py, sessions-per-second lifted) and sipp switchboard and
prints the result; ``--esl-port``/``--password``/``--sip-port`` run it against a running one
(tests/bench/realfs_part.py does, in a child process whose CPU time it measures).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for _path in (str(HERE.parent), str(HERE.parent.parent)):  # tests/ and the repo root
    if _path not in sys.path:
        sys.path.insert(0, _path)

EVENTS = ("BACKGROUND_JOB", "CHANNEL_HANGUP_COMPLETE")
"""The whole subscription."""
ESL_USER = "fsctl@fsctl.local"
RING_TIMEOUT_S = 30
"""originate_timeout of each leg (fsctl's default ring timeout)."""
LINGER_S = 2.0
"""A leg still up this long after its peer's hangup is hung up with uuid_kill."""
DRAIN_TIMEOUT_S = 60.0
"""Longest wait, after the last originate, for every callback to be final."""
CONNECT_TIMEOUT_S = 5.0
PROGRESS_EVERY_S = 0.3
RINGBACK = "tone_stream://%(2000,4000,440,480);loops=-1"
"""What A hears while B rings with ``ringback=True`` (fsctl's default ringback)."""
WARMUP_INDEX = 99_999
"""Index of the numbers of the warm-up callback (outside any measured run's range)."""

Progress = Callable[[str, int, int, dict[str, Any]], None]


def numbers(i: int) -> tuple[str, str]:
    """The far ends of callback ``i`` on the sipp switchboard (tests/sip/README.md): A a
    ``10004…`` number (answers after 0.3 s, BYE after 8 s: B hangs up first), B a DEFAULT one
    (answers after 0.3 s, BYE 2 s later). Unique per callback up to 100000 callbacks, so 10
    and 8 digits (``10004`` + 2 digits would give only 100 A numbers)."""
    return f"10004{i:05d}", f"101{i:05d}"


@dataclass(slots=True)
class Call:
    """One callback of the baseline."""

    index: int
    a: str
    b: str
    a_answered: bool = False
    b_dialled: bool = False
    bridging: bool = False
    a_done: bool = False
    b_done: bool = False
    ended_at: float = 0.0
    """When the first leg's hangup arrived (for LINGER_S)."""
    killed: bool = False
    failure: str | None = None

    @property
    def final(self) -> bool:
        return self.a_done and self.b_done


@dataclass
class Stats:
    """What a run did."""

    callbacks: int = 0
    completed: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    events: int = 0
    bytes_in: int = 0
    commands: int = 0
    kills: int = 0
    command_errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    posting_s: float = 0.0

    def as_dict(self, unfinished: int) -> dict[str, Any]:
        return {"callbacks": self.callbacks, "completed": self.completed,
                "failed": sum(self.failed.values()), "failures": dict(self.failed),
                "unfinished": unfinished, "events": self.events, "bytes_in": self.bytes_in,
                "commands": self.commands, "uuid_kills": self.kills,
                "command_errors": self.command_errors[:5], "wall_s": round(self.wall_s, 2),
                "posting_s": round(self.posting_s, 2)}


class EslError(Exception):
    """The event socket refused the login or the subscription, or went away."""


class Baseline:
    """One ESL connection running the callback flow."""

    def __init__(self, host: str, port: int, password: str, dial: Callable[[str], str], *,
                 user: str | None = ESL_USER, ringback: bool = False,
                 events: tuple[str, ...] = EVENTS) -> None:
        """``ringback``: play :data:`RINGBACK` to A while B rings, as fsctl does (off: the
        fewest steps); ``events``: the subscription (more than :data:`EVENTS` only to see
        what FreeSWITCH spends on events nobody needs; they are counted, not handled)."""
        self.addr = (host, port)
        self.ringback = ringback
        self.events = events
        self.password = password
        self.user = user
        self.dial = dial
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.legs: dict[bytes, tuple[Call, str]] = {}
        """channel uuid → (call, "A"/"B")"""
        self.jobs: dict[bytes, tuple[Call, str]] = {}
        """Job-UUID → (call, "A"/"B"/"bridge")"""
        self.live: dict[int, Call] = {}
        self.stats = Stats()

    # -- connection ----------------------------------------------------------------------

    def connect(self) -> None:
        self.sock = socket.create_connection(self.addr, timeout=CONNECT_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._expect(b"auth/request")
        login = f"userauth {self.user}:{self.password}" if self.user else f"auth {self.password}"
        self._send(login)
        self._expect(b"+OK")
        self._send("event plain " + " ".join(self.events))
        self._expect(b"+OK")
        self.sock.settimeout(None)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _expect(self, marker: bytes) -> None:
        """Read the next frame (a command reply or auth request) and check it holds marker."""
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while b"\n\n" not in self.buf:
            if time.monotonic() > deadline:
                raise EslError("no reply from the event socket")
            self._recv()
        end = self.buf.index(b"\n\n") + 2
        head = bytes(self.buf[:end])
        del self.buf[:end]
        if marker not in head:
            raise EslError(f"event socket said {head.decode(errors='replace').strip()!r}")

    def _send(self, line: str) -> None:
        assert self.sock is not None
        self.sock.sendall(line.encode() + b"\n\n")

    def _bgapi(self, command: str, call: Call, what: str) -> None:
        job = uuid.uuid4().hex.encode()
        self.jobs[job] = (call, what)
        self.stats.commands += 1
        self._send(f"bgapi {command}\nJob-UUID: {job.decode()}")

    def _recv(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(262144)
        if not data:
            raise EslError("FreeSWITCH closed the event socket")
        self.stats.bytes_in += len(data)
        self.buf += data

    # -- frames --------------------------------------------------------------------------

    def pump(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for data; handle every complete frame received."""
        assert self.sock is not None
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout_s))
        if not ready:
            return
        self._recv()
        buf = self.buf
        pos = 0
        while True:
            head_end = buf.find(b"\n\n", pos)
            if head_end < 0:
                break
            cl = buf.find(b"Content-Length: ", pos, head_end)
            length = int(buf[cl + 16:buf.find(b"\n", cl, head_end + 1)]) if cl >= 0 else 0
            end = head_end + 2 + length
            if end > len(buf):
                break
            if length:
                if buf.find(b"text/event-plain", pos, head_end) >= 0:
                    self._event(bytes(buf[head_end + 2:end]))
            elif buf.find(b"-ERR", pos, head_end) >= 0:
                self.stats.command_errors.append(bytes(buf[pos:head_end]).decode(errors="replace"))
            pos = end
        del buf[:pos]

    def _event(self, body: bytes) -> None:
        self.stats.events += 1
        name = body[12:body.find(b"\n")]  # "Event-Name: " is always the first header
        if name == b"BACKGROUND_JOB":
            start = body.find(b"\nJob-UUID: ") + 11
            job = self.jobs.pop(body[start:body.find(b"\n", start)], None)
            if job is not None:
                result = body[body.find(b"\n\n") + 2:][:4]
                self._job(job[0], job[1], result.startswith(b"+OK"), body)
            return
        if name == b"CHANNEL_HANGUP_COMPLETE":
            start = body.find(b"\nUnique-ID: ") + 12
            leg = self.legs.get(body[start:body.find(b"\n", start)])
            if leg is not None:
                self._hungup(*leg)

    # -- the flow ------------------------------------------------------------------------

    def start(self, i: int) -> None:
        """Callback ``i``: originate A."""
        call = Call(i, str(uuid.uuid4()), str(uuid.uuid4()))
        self.live[i] = call
        self.stats.callbacks += 1
        self._originate(call, "A")

    def _originate(self, call: Call, leg: str) -> None:
        u = call.a if leg == "A" else call.b
        self.legs[u.encode()] = (call, leg)
        to = numbers(call.index)[0 if leg == "A" else 1]
        self._bgapi(f"originate {{origination_uuid={u},ignore_early_media=true,"
                    f"originate_timeout={RING_TIMEOUT_S}}}{self.dial(to)} &park()", call, leg)

    def _answered(self, call: Call, leg: str) -> None:
        """A leg's originate returned +OK: it answered and is on its way into park."""
        if leg == "A" and not call.b_dialled and not call.a_done:
            call.a_answered = True
            call.b_dialled = True
            if self.ringback:
                self._bgapi(f"uuid_broadcast {call.a} playback::{RINGBACK} aleg", call, "ringback")
            self._originate(call, "B")
        elif leg == "B" and not call.bridging and not call.a_done and not call.b_done:
            call.bridging = True
            self._bgapi(f"uuid_bridge {call.a} {call.b}", call, "bridge")

    def _hungup(self, call: Call, leg: str) -> None:
        if leg == "A":
            call.a_done = True
            if not call.b_dialled:
                call.b_done = True  # B was never dialled
                call.failure = call.failure or "A hung up before B was dialled"
        else:
            call.b_done = True
        call.ended_at = call.ended_at or time.monotonic()
        if not call.bridging:
            call.failure = call.failure or f"{leg} hung up before the bridge"
            self._kill(call)  # the other leg rings or waits parked: nobody to bridge it to
        self._maybe_final(call)

    def _job(self, call: Call, what: str, ok: bool, body: bytes) -> None:
        if ok:
            if what in ("A", "B"):
                self._answered(call, what)
            return
        result = body[body.find(b"\n\n") + 2:].strip().decode(errors="replace")
        call.failure = call.failure or f"{what}: {result}"
        if what in ("bridge", "ringback"):
            self._kill(call)
            return
        # a refused originate: that leg's HANGUP_COMPLETE came already or never comes
        if what == "A":
            call.a_done = call.b_done = True
        else:
            call.b_done = True
            self._kill(call)
        self._maybe_final(call)

    def _kill(self, call: Call) -> None:
        """uuid_kill every leg of the call still up (once)."""
        if call.killed:
            return
        call.killed = True
        for u, done in ((call.a, call.a_done), (call.b, call.b_done if call.b_dialled else True)):
            if not done:
                self.stats.kills += 1
                self._bgapi(f"uuid_kill {u}", call, "kill")

    def _maybe_final(self, call: Call) -> None:
        if not call.final or call.index not in self.live:
            return
        del self.live[call.index]
        self.legs.pop(call.a.encode(), None)
        self.legs.pop(call.b.encode(), None)
        if call.failure:
            self.stats.failed[call.failure[:80]] += 1
        else:
            self.stats.completed += 1

    def sweep(self) -> None:
        """Hang up what lingers LINGER_S after its peer's hangup."""
        now = time.monotonic()
        for call in list(self.live.values()):
            if call.ended_at and now - call.ended_at > LINGER_S and not call.killed:
                call.failure = call.failure or "a leg lingered after its peer's hangup"
                self._kill(call)

    # -- a run ---------------------------------------------------------------------------

    def run(self, rate: float, count: int, *, first: int = 0, progress: Progress | None = None,
            drain_timeout_s: float = DRAIN_TIMEOUT_S) -> dict[str, Any]:
        """Start ``count`` callbacks at ``rate`` per second (open loop: callback i is due at
        t0 + i / rate), then wait until every one is final (at most ``drain_timeout_s``)."""
        t0 = time.monotonic()
        next_report = t0
        started = 0

        def report(phase: str) -> None:
            nonlocal next_report
            now = time.monotonic()
            if progress is not None and now >= next_report:
                next_report = now + PROGRESS_EVERY_S
                final = self.stats.callbacks - len(self.live)
                progress("baseline", started, count, {
                    "rate": round(started / max(self.stats.posting_s or now - t0, 1 / rate), 1),
                    "final": final,
                    "phase": phase})

        while started < count:
            due = t0 + started / rate
            now = time.monotonic()
            if now >= due:
                self.start(first + started)
                started += 1
                continue
            self.pump(due - now)
            report("posting")
        self.stats.posting_s = time.monotonic() - t0
        deadline = time.monotonic() + drain_timeout_s
        while self.live and time.monotonic() < deadline:
            self.pump(0.25)
            self.sweep()
            report("draining")
        self.stats.wall_s = time.monotonic() - t0
        return {**self.stats.as_dict(unfinished=len(self.live)),
                "subscription": list(self.events), "ringback": self.ringback}

    def warm_up(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """One callback outside the measurement (numbers of WARMUP_INDEX)."""
        before = Stats()
        self.stats, saved = before, self.stats
        try:
            return self.run(1.0, 1, first=WARMUP_INDEX, drain_timeout_s=timeout_s)
        finally:
            self.stats = saved


def run(esl_port: int, password: str, sip_port: int, rate: float = 20, seconds: float = 20, *,
        user: str | None = ESL_USER, progress: Progress | None = None,
        warm_up: bool = True, ringback: bool = False,
        events: tuple[str, ...] = EVENTS) -> dict[str, Any]:
    """Connect, (warm up,) run ``rate × seconds`` callbacks, close; the result dict."""
    base = Baseline("127.0.0.1", esl_port, password,
                    lambda to: f"sofia/fsctl/{to}@127.0.0.1:{sip_port}", user=user,
                    ringback=ringback, events=events)
    base.connect()
    try:
        if warm_up:
            base.warm_up()
        return base.run(rate, round(rate * seconds), progress=progress)
    finally:
        base.close()


# -- as a script -------------------------------------------------------------------------


def _child(args: argparse.Namespace) -> int:
    """Against a running FreeSWITCH, driven over stdin/stdout by tests/bench/realfs_part.py:
    ``{"ready": …}`` after the warm-up, waits for a line, runs (``{"progress": …}`` lines),
    prints ``{"result": …}`` and waits for stdin to close (so its CPU time can be read)."""
    def say(doc: dict[str, Any]) -> None:
        print(json.dumps(doc), flush=True)

    base = Baseline("127.0.0.1", args.esl_port, args.password,
                    lambda to: f"sofia/fsctl/{to}@127.0.0.1:{args.sip_port}",
                    user=args.user or None, ringback=args.ringback, events=args.events)
    base.connect()
    try:
        say({"ready": base.warm_up()})
        sys.stdin.readline()
        result = base.run(args.rate, round(args.rate * args.seconds),
                          progress=lambda _s, done, total, info: say(
                              {"progress": [done, total, info]}))
    finally:
        base.close()
    say({"result": result})
    sys.stdin.read()
    return 0


def _standalone(args: argparse.Namespace) -> int:
    """Start a FreeSWITCH and a sipp switchboard of our own and run against them."""
    import realfs  # tests/realfs.py: the harness, not part of the baseline
    from sipp import Sipp

    root = Path(tempfile.mkdtemp(prefix="fsctl-baseline-"))
    fs = realfs.FreeSwitch(root / "fs", sessions_per_second=args.sps, max_sessions=5000)
    far = Sipp(root / "sipp", trace_messages=False)
    try:
        fs.start()
        far.start()
        base = Baseline("127.0.0.1", fs.esl_port, fs.password, far.dial_string,
                        ringback=args.ringback, events=args.events)
        base.connect()
        try:
            base.warm_up()
            time.sleep(1.0)
            fs_cpu0, own0 = _cpu_seconds(fs.proc.pid), time.process_time()
            result = base.run(args.rate, round(args.rate * args.seconds))
            fs_cpu, own = _cpu_seconds(fs.proc.pid) - fs_cpu0, time.process_time() - own0
        finally:
            base.close()
        n = max(1, result["completed"])
        result["cpu_ms_per_callback"] = {"freeswitch": round(fs_cpu * 1000 / n, 2),
                                         "baseline": round(own * 1000 / n, 2)}
        time.sleep(1.0)
        result["channels_after"] = fs.api("show channels count").strip()
    finally:
        far.stop()
        fs.stop()
        realfs.stop_all()
    shutil.rmtree(root, ignore_errors=True)  # kept (its logs) only when the run raised
    print(json.dumps(result, indent=2))
    return 0 if result["unfinished"] == 0 and result["failed"] == 0 else 1


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (as tests/bench/common.cpu_seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=20.0, help="callbacks started per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long to start them")
    ap.add_argument("--esl-port", type=int, help="a running FreeSWITCH's event socket")
    ap.add_argument("--password", default="", help="its password (of --user)")
    ap.add_argument("--user", default=ESL_USER, help="userauth user; '' for plain auth")
    ap.add_argument("--sip-port", type=int, help="the sipp switchboard's port")
    ap.add_argument("--ringback", action="store_true",
                    help="play fsctl's ringback to A while B rings (uuid_broadcast)")
    ap.add_argument("--events", type=lambda v: tuple(v.replace(",", " ").split()),
                    default=EVENTS, help="the subscription (default: %(default)s)")
    ap.add_argument("--sps", type=int, default=1000,
                    help="sessions-per-second of the FreeSWITCH started without --esl-port")
    args = ap.parse_args()
    if args.esl_port:
        if not args.sip_port:
            ap.error("--esl-port needs --sip-port")
        return _child(args)
    return _standalone(args)


if __name__ == "__main__":
    sys.exit(main())
