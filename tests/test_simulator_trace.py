"""The simulator's timing trace (``fsctl simulate --trace``): real TCP, a real file."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from sim_replay import Client, connect

from fsctl.simulator import SimConfig, Simulator
from fsctl.simulator.cli import build_parser
from fsctl.simulator.trace import Trace

PW = "sim-secret"


def originate(client: Client, leg: str, dial: str, cb: str) -> str:
    leg_uuid = str(uuid.uuid4())
    variables = f"origination_uuid={leg_uuid},fsctl_callback_id={cb},fsctl_leg={leg}"
    reply = client.cmd(f"bgapi originate {{{variables}}}{dial} &park()",
                       {"Job-UUID": str(uuid.uuid4())})
    assert reply.headers["Reply-Text"].startswith("+OK Job-UUID: ")
    return leg_uuid


def wait_event(client: Client, name: str, leg_uuid: str) -> None:
    client.wait_for(lambda: any(e.name == name and e.get("Unique-ID") == leg_uuid
                                for e in client.events()), 5, f"{name} {leg_uuid}")


def read(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_trace_records_originate_park_bridge_and_hangup(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    trace = Trace(str(path), flush_interval_s=0.05)
    sim = Simulator(SimConfig(answer_delay_s=0.05, talk_s=0.1, heartbeat_s=3600),
                    password=PW, trace=trace).start()
    try:
        client = connect(sim.port, PW, "plain ALL")
        before = time.time()
        a = originate(client, "A", "sofia/gateway/carrier/1000123", "cb1")
        b = originate(client, "B", "user/1000125", "cb1")
        wait_event(client, "CHANNEL_PARK", a)
        wait_event(client, "CHANNEL_PARK", b)
        # flushed every 0.05 s while the simulator runs, not only when it stops
        client.wait_for(lambda: path.exists() and len(read(path)) >= 4, 3, "periodic flush")
        assert client.api(f"uuid_bridge {a} {b}") == f"+OK {b}\n"
        wait_event(client, "CHANNEL_DESTROY", a)
        wait_event(client, "CHANNEL_DESTROY", b)
    finally:
        sim.stop()
        trace.close()
    after = time.time()
    records = read(path)
    by_kind: dict[str, list[dict[str, object]]] = {}
    for rec in records:
        by_kind.setdefault(str(rec["ev"]), []).append(rec)
    assert [(r["uuid"], r["cid"], r["leg"]) for r in by_kind["originate"]] == [
        (a, "cb1", "A"), (b, "cb1", "B")]
    assert sorted(str(r["uuid"]) for r in by_kind["park"]) == sorted([a, b])
    assert [(r["a"], r["b"]) for r in by_kind["bridge"]] == [(a, b)]
    assert sorted(str(r["uuid"]) for r in by_kind["hangup"]) == sorted([a, b])
    assert all(r["cause"] == "NORMAL_CLEARING" for r in by_kind["hangup"])
    times = {(r["ev"], r.get("uuid")): float(r["t"]) for r in records}  # type: ignore[arg-type]
    bridged = float(by_kind["bridge"][0]["t"])  # type: ignore[arg-type]
    for leg in (a, b):
        # wall-clock times, in the order things happened; answer_delay 0.05 s before the park
        assert before <= times[("originate", leg)] < times[("park", leg)] - 0.04
        assert times[("park", leg)] <= bridged <= times[("hangup", leg)] <= after


def test_trace_is_off_by_default_and_an_option_of_the_cli(tmp_path: Path) -> None:
    assert Simulator(password=PW).trace is None
    assert build_parser().parse_args([]).trace is None
    assert build_parser().parse_args(["--trace", str(tmp_path / "t")]).trace == str(tmp_path / "t")
