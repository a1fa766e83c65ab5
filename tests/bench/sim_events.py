"""Benchmark: the simulator's CPU per event it sends (not a pytest test).

    .venv/bin/python tests/bench/sim_events.py [--calls 400] [--filtered]

Runs ``fsctl simulate`` in its own process (so the driver's CPU is not counted), drives
``--calls`` two-leg SIP-like calls through it over 127.0.0.1 (originate A and B, bridge
when both are parked, the far end hangs up after ``--talk`` seconds) and counts every
event frame and byte one listener receives. Prints the simulator's CPU seconds (from
/proc) per event and per MB sent. ``--filtered`` listens like fsctl's worker (its event
names and ESL filters) instead of ``event plain ALL``. Speed is measured here, never
asserted in tests.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event as GEvent  # noqa: E402

from fsctl.embedded import free_port, wait_port  # noqa: E402
from fsctl.wire import FrameReader  # noqa: E402

PASSWORD = "bench-sim-password"
WORKER_EVENTS = ("CHANNEL_CREATE CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_ANSWER "
                 "CHANNEL_PARK CHANNEL_BRIDGE CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE "
                 "BACKGROUND_JOB HEARTBEAT")
"""What fsctl's worker subscribes to (fsctl/events.py SUBSCRIBED_EVENTS)."""
WORKER_FILTERS = (("Event-Name", "BACKGROUND_JOB"), ("Event-Name", "HEARTBEAT"),
                  ("variable_fsctl_leg", "A"), ("variable_fsctl_leg", "B"))
"""fsctl's ESL filters (fsctl/events.py EVENT_FILTERS)."""
DONE_TIMEOUT_S = 120.0
"""Longest wait for every call to end."""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Conn:
    """A raw ESL connection; ``on_frame`` sees every frame the reader parses."""

    def __init__(self, port: int, on_frame) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.bytes = 0
        self._on_frame = on_frame
        self._reader = gevent.spawn(self._read)

    def _read(self) -> None:
        parser = FrameReader()
        while True:
            try:
                data = self.sock.recv(262144)
            except OSError:
                return
            if not data:
                return
            self.bytes += len(data)
            for frame in parser.feed(data):
                self._on_frame(frame)

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--rate", type=float, default=50.0, help="calls started per second")
    ap.add_argument("--talk", type=float, default=0.2, help="seconds bridged before the BYE")
    ap.add_argument("--filtered", action="store_true", help="listen like fsctl's worker")
    args = ap.parse_args()

    port = free_port()
    env = dict(os.environ, FSCTL_BENCH_SIM_PW=PASSWORD)
    argv = [sys.executable, "-m", "fsctl", "simulate", "--port", str(port), "--password-env",
            "FSCTL_BENCH_SIM_PW", "--answer-delay", "0.05", "--talk", str(args.talk),
            "--log-level", "WARNING", "--heartbeat", "3600"]
    usage = subprocess.run(argv[:4] + ["-h"], check=False, capture_output=True, text=True,
                           env=env).stdout
    if "--sessions-per-second" in usage:  # older simulators had no session limits
        argv += ["--sessions-per-second", "1000000", "--max-sessions", "1000000"]
    sim = subprocess.Popen(argv, env=env)
    try:
        wait_port("127.0.0.1", port, 10)
        events = 0
        parked: dict[str, str] = {}  # leg uuid -> partner
        ended: set[str] = set()
        all_done = GEvent()
        legs = 2 * args.calls

        def on_event(frame) -> None:
            nonlocal events
            ev = frame.event
            if ev is None:
                return
            events += 1
            uid = ev.get("Unique-ID")
            if ev.name == "CHANNEL_PARK" and uid in partner:
                parked[uid] = partner[uid]
                if partner[uid] in parked:
                    a_leg, b_leg = sorted((uid, partner[uid]))  # "a…" before "b…"
                    cmd.send(f"bgapi uuid_bridge {a_leg} {b_leg}")
            elif ev.name == "CHANNEL_HANGUP_COMPLETE" and uid in partner:
                ended.add(uid)
                if len(ended) == legs:
                    all_done.set()

        partner: dict[str, str] = {}
        listener = Conn(port, on_event)
        cmd = Conn(port, lambda frame: None)
        for conn in (listener, cmd):
            conn.send(f"auth {PASSWORD}")
        if args.filtered:
            for header, value in WORKER_FILTERS:
                listener.send(f"filter {header} {value}")
            listener.send(f"event plain {WORKER_EVENTS}")
        else:
            listener.send("event plain ALL")
        gevent.sleep(0.5)
        cpu0, t0, bytes0 = cpu_seconds(sim.pid), time.monotonic(), listener.bytes
        for i in range(args.calls):
            a = "a" + str(uuid.uuid4())[1:]
            b = "b" + str(uuid.uuid4())[1:]
            partner[a], partner[b] = b, a
            for leg, who, number in ((a, "A", f"2{i:07d}"), (b, "B", f"3{i:07d}")):
                cmd.send(f"bgapi originate {{origination_uuid={leg},fsctl_callback_id=cb{i},"
                         f"fsctl_leg={who},ignore_early_media=true,originate_timeout=30}}"
                         f"sofia/internal/{number}@127.0.0.1:5070 &park()\n"
                         f"Job-UUID: {uuid.uuid4()}")
            gevent.sleep(1.0 / args.rate)
        if not all_done.wait(DONE_TIMEOUT_S):
            print(f"only {len(ended)} of {legs} legs ended", file=sys.stderr)
            return 1
        gevent.sleep(0.2)
        cpu = cpu_seconds(sim.pid) - cpu0
        wall = time.monotonic() - t0
        sent = listener.bytes - bytes0
        print(f"calls {args.calls}, events {events} ({'filtered' if args.filtered else 'ALL'}),"
              f" {sent / 1e6:.1f} MB, {sent / max(events, 1):.0f} B/event")
        print(f"simulator CPU {cpu:.2f} s over {wall:.1f} s: "
              f"{cpu / max(events, 1) * 1e6:.0f} us/event, {cpu / max(sent / 1e6, 1e-9):.3f} s/MB")
        return 0
    finally:
        sim.terminate()
        try:
            sim.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sim.kill()


if __name__ == "__main__":
    sys.exit(main())
