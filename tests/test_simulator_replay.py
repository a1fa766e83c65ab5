"""Replays every recorded FreeSWITCH scenario against the simulator (real TCP) and compares,
leg by leg, the event sequences and their key headers with the recording."""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import Iterable

import gevent
import make_sim_templates
import pytest
import sipp
from sim_replay import (
    PERIODIC_EVENTS,
    Client,
    LegMapper,
    Scenario,
    fixtures_dir,
    key_of,
    load_scenario,
    originated_leg,
    per_leg,
)

from fsctl.simulator import Behaviour, SimConfig, Simulator
from fsctl.wire import Frame

PASSWORD = "sim-test-password"

# SIP peers of the recordings: 5070 answers (180 + 200), 5071 answers and sends BYE
# (3 s after the answer in the recording, 1 s here), 5072 answers 486 Busy Here.
SIP_PEERS = {
    "5070": Behaviour("answer", answer_delay_s=0.3, talk_s=None),
    "5071": Behaviour("answer", answer_delay_s=0.3, talk_s=None, bye_after_answer_s=1.0),
    "5072": Behaviour("busy", answer_delay_s=0.0),
}

SCENARIOS = [
    "seq_a_first_ok", "seq_a_first_ok_wait_job", "a_busy", "a_no_answer", "b_fails_after_a",
    "simultaneous_ok", "a_hangs_up_while_b_rings", "park_timeout", "show_channels",
    "sip_both_legs", "sip_busy", "sip_no_answer", "sip_far_end_bye", "sip_early_media",
    "sip_unavailable_480", "sip_not_found_404", "sip_service_unavailable_503", "throttle",
]
SESSIONS_PER_SECOND = {"throttle": 2}
"""The recordings made on a FreeSWITCH with a lower sessions-per-second than its default."""


def switchboard_peer(number: str) -> Behaviour:
    """The far end the sipp switchboard (tests/sip/) is for ``number``, as a simulator
    Behaviour (sipp's talk time counts from its own answer)."""
    plan = sipp.behaviour_for(number)
    if plan.final == 200:
        return Behaviour("answer", answer_delay_s=plan.ring_s, talk_s=None,
                         bye_after_answer_s=plan.talk_s, early_media=plan.provisional == 183)
    if plan.final is None:
        return Behaviour("no_answer")
    if plan.final == 486:
        return Behaviour("busy", answer_delay_s=plan.ring_s)
    return Behaviour("fail", answer_delay_s=plan.ring_s, sip_status=plan.final)


SIP_LIKE_DIALS = {
    "gateway_and_user": ("sip_both_legs", {
        "sofia/internal/1000@127.0.0.1:5070": "sofia/gateway/carrier/1000",
        "sofia/internal/1001@127.0.0.1:5071": "user/1001"}),
    "busy_user": ("a_busy", {"sofia/internal/1000@127.0.0.1:5072": "user/1000"}),
}
"""Recordings replayed with other SIP-like dial strings: (recording, recorded -> dialled)."""
SIZE_TOLERANCE = 0.15
"""How far (as a fraction) a simulated event's size may be from the recorded one's."""

# Row fields of ``show channels as json`` compared with the recording (the rest are times).
ROW_FIELDS = ("uuid", "direction", "name", "state", "cid_name", "cid_num", "dest", "application",
              "context", "read_codec", "read_rate", "callstate", "call_uuid", "callee_num",
              "initial_dest")


def config_for(sc: Scenario, dials: dict[str, str] | None = None) -> SimConfig:
    """``dials`` replaces recorded dial strings (recorded -> dialled instead)."""
    numbers = {}
    for dial in sc.dials.values():
        if dial.startswith("sofia/"):
            dialled = (dials or {}).get(dial, dial)
            port = dial.rsplit(":", 1)[1]
            number = dial.rsplit("/", 1)[1].split("@", 1)[0]
            peer = SIP_PEERS.get(port) or switchboard_peer(number)
            numbers[dialled.rsplit("/", 1)[1]] = peer
    # a 100 ms window between CHANNEL_ANSWER and the originate's return keeps the recorded
    # races (bridge / broadcast sent on CHANNEL_ANSWER) reproducible
    # (b_fails_after_a: A's originate had returned before B failed; keep it that way)
    finish = 0.0 if sc.name == "b_fails_after_a" else 0.1
    return SimConfig(numbers=numbers, originate_finish_delay_s=finish, heartbeat_s=3600,
                     sessions_per_second=SESSIONS_PER_SECOND.get(sc.name, 30))


def check_api_reply(sim: Simulator, command: str, recorded: str, got: str) -> None:
    rec_body = recorded.split("\n\n", 1)[1]
    got_body = got.split("\n\n", 1)[1]
    if command.startswith("api show channels") and '"rows":' in rec_body:
        rec_obj, got_obj = json.loads(rec_body), json.loads(got_body)
        assert got_obj["row_count"] == rec_obj["row_count"]
        assert got_body.endswith("}") and not got_body.endswith("\n")
        for rec_row, got_row in zip(rec_obj["rows"], got_obj["rows"], strict=True):
            assert list(got_row) == list(rec_row)
            assert all(isinstance(v, str) for v in got_row.values())
            for name in ROW_FIELDS:
                assert got_row[name] == rec_row[name], (command, name)
    elif command == "api status":
        assert got_body.startswith("UP 0 years, ") and " is ready\n" in got_body
    elif command == "api global_getvar core_uuid":
        assert got_body == sim.core_uuid
    else:
        assert got == recorded, command


def compare_legs(sc: Scenario, recorded: dict[str, list], live: dict[str, list]) -> None:
    assert sorted(live) == sorted(recorded), "legs differ"
    for label, rec_leg in recorded.items():
        rec_events = [e for e in rec_leg if e[0] != "BACKGROUND_JOB"]
        live_events = [e for e in live[label] if e[0] != "BACKGROUND_JOB"]
        assert live_events == rec_events, f"{sc.name} leg {label}: event sequence differs"
        rec_jobs = [(i, e) for i, e in enumerate(rec_leg) if e[0] == "BACKGROUND_JOB"]
        live_jobs = [(i, e) for i, e in enumerate(live[label]) if e[0] == "BACKGROUND_JOB"]
        assert [e for _, e in live_jobs] == [e for _, e in rec_jobs], f"leg {label} job"
        for (ri, _), (li, _) in zip(rec_jobs, live_jobs, strict=True):
            # position among the leg's events (the race job may move by one state event)
            assert abs(ri - li) <= 1, f"{sc.name} leg {label}: BACKGROUND_JOB at {li}, not {ri}"


@functools.cache
def replayed(name: str, dials: tuple[tuple[str, str], ...] = ()) -> tuple[Frame, ...]:
    """Every frame the event connection received when ``name`` was replayed (once per
    session), each recorded dial string of ``dials`` dialled as its replacement."""
    return replay(name, dict(dials))


def replay(name: str, dials: dict[str, str] | None = None) -> tuple[Frame, ...]:
    sc = load_scenario(name)
    sim = Simulator(config_for(sc, dials), password=PASSWORD).start()
    rec_mapper = LegMapper(sc.legs, sc.dials)
    rec_keys = [key_of(f.event, rec_mapper, sc.jobs) if f.event else None for f in sc.rx_frames]
    rec = Client(sim.port)
    cmd = Client(sim.port)
    conns = {"rec": rec, "cmd": cmd}
    try:
        assert rec.next_frame().content_type == "auth/request"
        assert cmd.next_frame().content_type == "auth/request"

        def live_count(key: tuple) -> int:
            mapper = LegMapper(sc.legs, sc.dials)
            return Counter(key_of(e, mapper, sc.jobs) for e in rec.events())[key]

        originated: set[str] = set()
        previous: tuple[float, float] | None = None  # (recorded t, live clock) of the last one
        for c in sc.commands:
            done = sum(1 for end in sc.rx_ends if end <= c["rx_bytes"])
            # the last frame before the command that a call caused (periodic ones are not)
            while done and (ev := sc.rx_frames[done - 1].event) and ev.name in PERIODIC_EVENTS:
                done -= 1
            key = rec_keys[done - 1] if done else None
            if key is not None:
                need = rec_keys[:done].count(key)
                rec.wait_for(lambda key=key, need=need: live_count(key) >= need, 8.0,
                             f"{key} x{need} before {c['cmd'][:60]!r}")
            leg = originated_leg(c["cmd"])
            if leg is not None and leg in originated and previous is not None:
                # a leg's second attempt (throttle: refused for sessions-per-second, dialled
                # again): as long after the previous command as in the recording, so that
                # the rate window has turned as it had there
                rec_t, live_t = previous
                gevent.sleep(max(0.0, c["t"] - rec_t - (time.monotonic() - live_t)))
            if leg is not None:
                originated.add(leg)
            text = c["cmd"]
            for recorded_dial, dialled in (dials or {}).items():
                text = text.replace(recorded_dial, dialled)
            line, *header_lines = text.split("\n")
            headers = dict(h.split(": ", 1) for h in header_lines)
            if line == "exit":
                gevent.sleep(0.3)  # let late events arrive before comparing
            if line.startswith("auth "):
                line = f"auth {PASSWORD}"
            client = conns[c["conn"]]
            previous = (c["t"], time.monotonic())
            frame = client.cmd(line, headers)
            got = b"\n".join(f"{k}: {v}".encode() for k, v in frame.headers.items()) + b"\n\n"
            got = (got + frame.body).decode()
            if line.startswith("api "):
                check_api_reply(sim, line, c["reply"], got)
            else:
                assert got == c["reply"], line
            if line == "exit":
                client.wait_for(lambda client=client: client.closed, 3.0, "close after exit")
                tail = client.frames[-1]
                assert tail.content_type == "text/disconnect-notice"
                assert (b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n" + tail.body
                        ).decode() == c["then_received"]
        recorded = per_leg([f.event for f in sc.rx_frames if f.event], sc.legs, sc.dials, sc.jobs)
        live = per_leg(rec.events(), sc.legs, sc.dials, sc.jobs)
        compare_legs(sc, recorded, live)
        rec_api = [k for k in rec_keys if k and k[0] == "API"]
        live_mapper = LegMapper(sc.legs, sc.dials)
        live_api = [key_of(e, live_mapper, sc.jobs) for e in rec.events() if e.name == "API"]
        assert sorted(live_api) == sorted(rec_api)
        assert not sim.channels
        return tuple(rec.frames)
    finally:
        rec.close()
        cmd.close()
        sim.stop()


def test_fixtures_present() -> None:
    for name in SCENARIOS + ["bad_auth"]:
        assert (fixtures_dir() / f"{name}.rx").is_file(), name


@pytest.mark.parametrize("name", SCENARIOS)
def test_replay_recording(name: str) -> None:
    replayed(name)


def leg_events(frames: Iterable[Frame], sc: Scenario) -> dict[str, list[Frame]]:
    """Per leg label, its channel events' frames (what carries the leg's Unique-ID)."""
    mapper = LegMapper(sc.legs, sc.dials)
    out: dict[str, list[Frame]] = {}
    for frame in frames:
        ev = frame.event
        if ev is None or ev.name in ("BACKGROUND_JOB", "API"):
            continue
        label = mapper.label(ev)
        if label is not None:
            out.setdefault(label, []).append(frame)
    return out


def header_names(frame: Frame) -> set[str]:
    head = frame.body.split(b"\n\n", 1)[0].decode()
    return {line.split(": ", 1)[0] for line in head.split("\n") if line}


def size_and_header_differences(name: str, live: Iterable[Frame]) -> list[str]:
    """Each leg's events against the recording's, one by one: the same header names
    (values differ per call) and sizes within SIZE_TOLERANCE."""
    sc = load_scenario(name)
    recorded, got = leg_events(sc.rx_frames, sc), leg_events(live, sc)
    problems = []
    for label, rec_frames in recorded.items():
        for i, (rec, sim) in enumerate(zip(rec_frames, got.get(label, []), strict=True)):
            where = f"{name} leg {label} #{i} {rec.event.name}"
            missing, extra = header_names(rec) - header_names(sim), header_names(sim) - header_names(rec)
            if missing or extra:
                problems.append(f"{where}: missing {sorted(missing)}, extra {sorted(extra)}")
            if abs(len(sim.body) - len(rec.body)) > SIZE_TOLERANCE * len(rec.body):
                problems.append(f"{where}: {len(sim.body)} bytes, recorded {len(rec.body)}")
    return problems


@pytest.mark.parametrize("name", SCENARIOS)
def test_events_have_the_recordings_headers_and_size(name: str) -> None:
    """sofia legs carry every channel variable a real one has (3-11 KB events), null/ legs
    what mod_loopback's have: header names equal, sizes within 15 %, event by event."""
    assert size_and_header_differences(name, replayed(name)) == []


@pytest.mark.parametrize("variant", sorted(SIP_LIKE_DIALS))
def test_sip_like_dial_strings_carry_a_real_sofia_legs_headers(variant: str) -> None:
    """user/… and sofia/gateway/… legs are answered as SIP far ends too: replayed with those
    dial strings, sip_both_legs / a_busy still match the recording header for header."""
    name, dials = SIP_LIKE_DIALS[variant]
    assert size_and_header_differences(name, replayed(name, tuple(dials.items()))) == []


def test_sofia_vars_is_what_the_generator_makes() -> None:
    """fsctl/simulator/sofia_vars.py is generated from the recordings (make_sim_templates)."""
    expected = make_sim_templates.render_module(make_sim_templates.phase_templates())
    assert make_sim_templates.TARGET.read_text(encoding="utf-8") == expected, (
        "run .venv/bin/python tests/make_sim_templates.py")


def test_replay_bad_auth() -> None:
    sc = load_scenario("bad_auth")
    sim = Simulator(SimConfig(), password=PASSWORD).start()
    try:
        client = Client(sim.port)
        greeting = client.next_frame()
        assert greeting.content_type == "auth/request"
        (c,) = sc.commands
        client.send(c["cmd"])
        client.wait_for(lambda: client.closed, 3.0, "close after bad auth")
        raw = (fixtures_dir() / "bad_auth.rx").read_bytes()
        assert [f.headers for f in client.frames] == [f.headers for f in sc.rx_frames]
        assert [f.body for f in client.frames] == [f.body for f in sc.rx_frames]
        assert raw.endswith(client.frames[-1].body)
    finally:
        sim.stop()
