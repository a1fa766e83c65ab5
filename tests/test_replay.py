"""Every recording of a real FreeSWITCH replayed through the parser and the state machine."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest
from support import fixtures_dir

from fsctl.callback import (
    BRIDGE_SURVIVOR_GRACE_S,
    Bridge,
    Broadcast,
    Finished,
    JobDone,
    Kill,
    LegSignal,
    Originate,
    Redial,
    Retry,
    Start,
    apply,
    stamp,
)
from fsctl.events import ChannelFact, JobFact, translate
from fsctl.model import LEG_TIMESTAMPS, Callback, Leg
from fsctl.wire import FrameReader


@dataclass
class Recording:
    events: list
    legs: dict[str, list[tuple[str, str, float]]]  # leg -> its attempts: (uuid, job, sent at)


def load(name: str) -> Recording:
    d = fixtures_dir()
    frames = FrameReader().feed((d / f"{name}.rx").read_bytes())
    legs: dict[str, list[tuple[str, str, float]]] = {}
    for line in (d / f"{name}.tx.jsonl").read_text().splitlines():
        sent = json.loads(line)
        cmd = sent["cmd"]
        if cmd.startswith("bgapi originate"):
            uuid = re.search(r"origination_uuid=([0-9a-f-]{36})", cmd).group(1)
            leg = re.search(r"fsctl_leg=([AB])", cmd).group(1)
            job = re.search(r"Job-UUID: ([0-9a-f-]{36})", cmd).group(1)
            legs.setdefault(leg, []).append((uuid, job, sent["wall"]))  # the controller's clock
    return Recording([f.event for f in frames if f.event is not None], legs)


def replay(name: str, mode: str = "sequential") -> tuple[Callback, list]:
    """The recording's events through translate() and the state machine, as the worker does:
    a leg's ``dialed`` is stamped on the recording controller's clock when its originate went,
    a Retry is answered with the leg's next recorded attempt."""
    rec = load(name)
    legs = {}
    for leg in ("A", "B"):
        uuid, job, _ = rec.legs.get(leg, [(f"{'0' * 8}-0000-4000-8000-{'0' * 11}{ord(leg)}",
                                           "none", 0.0)])[0]
        legs[leg] = Leg(to="1000", from_="2000", uuid=uuid, job_uuid=job, route="default",
                        ring_timeout_s=30)
    cb = Callback(id="f" * 32, legs=legs, mode=mode)
    by_uuid = {a[0]: name for name, attempts in rec.legs.items() for a in attempts}
    by_job = {a[1]: name for name, attempts in rec.legs.items() for a in attempts}
    tried = {name: 0 for name in rec.legs}

    def run(actions: list) -> list:
        for action in actions:
            if isinstance(action, Originate) and action.leg in rec.legs:
                stamp(cb.legs[action.leg], "dialed", rec.legs[action.leg][tried[action.leg]][2])
            if isinstance(action, Retry):
                tried[action.leg] += 1
                uuid, job, _ = rec.legs[action.leg][tried[action.leg]]
                actions = actions + run(apply(cb, Redial(action.leg, uuid, job, 0.0)))
        return actions

    actions = run(apply(cb, Start(0.0)))
    for ev in rec.events:
        fact = translate(ev)
        if isinstance(fact, JobFact) and fact.job_uuid in by_job:
            name = by_job[fact.job_uuid]
            if fact.job_uuid == cb.legs[name].job_uuid:
                actions += run(apply(cb, JobDone(name, fact.ok, fact.text, fact.ts)))
        elif isinstance(fact, ChannelFact) and fact.uuid in by_uuid:
            leg = by_uuid[fact.uuid]
            assert fact.leg in (None, leg)  # the tag agrees with the uuid
            if fact.uuid == cb.legs[leg].uuid:
                actions += run(apply(cb, LegSignal(leg, fact.kind, fact.ts, fact.cause,
                                                   fact.sip_status, fact.disposition)))
    return cb, actions


@pytest.mark.parametrize("name,mode,state,outcome", [
    ("seq_a_first_ok", "sequential", "completed", "completed"),
    ("seq_a_first_ok_wait_job", "sequential", "completed", "completed"),
    ("sip_both_legs", "sequential", "completed", "completed"),
    ("simultaneous_ok", "simultaneous", "completed", "completed"),
    ("a_busy", "sequential", "failed", "a_busy"),
    ("a_no_answer", "sequential", "failed", "a_no_answer"),
    ("a_hangs_up_while_b_rings", "sequential", "failed", "a_hangup_while_b_ringing"),
    ("b_fails_after_a", "sequential", "failed", "b_rejected"),
    ("park_timeout", "sequential", "failed", "a_hangup_while_b_ringing"),
    ("show_channels", "simultaneous", "failed", "a_hangup_before_bridge"),
    ("sip_busy", "sequential", "failed", "a_busy"),
    ("sip_no_answer", "sequential", "failed", "a_no_answer"),
    ("sip_unavailable_480", "sequential", "failed", "a_no_answer"),
    ("sip_not_found_404", "sequential", "failed", "a_invalid_number"),
    ("sip_service_unavailable_503", "sequential", "failed", "a_unreachable"),
    ("sip_far_end_bye", "sequential", "completed", "completed"),
    ("sip_early_media", "sequential", "failed", "a_hangup_while_b_ringing"),
    ("throttle", "simultaneous", "completed", "completed"),
])
def test_recording_ends_in_the_right_state(name: str, mode: str, state: str, outcome: str) -> None:
    cb, actions = replay(name, mode)
    assert (cb.state, cb.outcome) == (state, outcome)
    assert sum(isinstance(a, Finished) for a in actions) == 1
    assert sum(isinstance(a, Bridge) for a in actions) <= 1


def test_wait_job_recording_gets_the_same_commands_as_the_real_controller() -> None:
    cb, actions = replay("seq_a_first_ok_wait_job")
    a, b = cb.legs["A"].uuid, cb.legs["B"].uuid
    # the survivor of the bridge is left to FreeSWITCH (hangup_after_bridge), killed only if
    # still up BRIDGE_SURVIVOR_GRACE_S later: in the recording it was gone within ms
    assert actions[:5] == [Originate("A"), Originate("B"), Broadcast("A"), Bridge(a, b),
                           Kill("A", a, "NORMAL_CLEARING", BRIDGE_SURVIVOR_GRACE_S)]
    assert cb.talk_time_s is not None and 1.5 < cb.talk_time_s < 2.5  # uuid_kill came 2 s later
    for leg in cb.legs.values():
        assert {"ringing", "answered", "parked", "bridged", "hungup"} <= set(leg.times)
        assert leg.hangup_cause == "NORMAL_CLEARING"


def test_busy_recording_records_cause_and_sip_status() -> None:
    cb, _ = replay("a_busy")
    leg = cb.legs["A"]
    assert leg.hangup_cause == "USER_BUSY" and leg.sip_status == "486"
    assert leg.job_result == "-ERR USER_BUSY"
    assert cb.legs["B"].state == "pending"


def test_b_failing_before_rename_is_seen_through_its_job() -> None:
    cb, actions = replay("b_fails_after_a")
    assert cb.legs["B"].job_result == "-ERR CALL_REJECTED"
    assert Kill("A", cb.legs["A"].uuid, "NORMAL_CLEARING") in actions


@pytest.mark.parametrize("name", ["seq_a_first_ok", "simultaneous_ok", "sip_both_legs"])
def test_originator_cancel_after_early_bridge_is_not_a_failure(name: str) -> None:
    cb, _ = replay(name, "simultaneous" if name == "simultaneous_ok" else "sequential")
    assert cb.legs["B"].job_result == "-ERR ORIGINATOR_CANCEL"
    assert cb.state == "completed"


def test_every_recorded_event_translates_with_its_tags() -> None:
    """Every channel event that carries fsctl's tags names a leg fsctl dialled."""
    for path in sorted(fixtures_dir().glob("*.rx")):
        rec = load(path.stem)
        uuids = {u for attempts in rec.legs.values() for u, _, _ in attempts}
        for ev in rec.events:
            fact = translate(ev)
            if isinstance(fact, ChannelFact) and fact.callback_id:
                assert fact.uuid in uuids, (path.stem, ev.name)
                assert fact.leg in ("A", "B")


@pytest.mark.parametrize("name", sorted(p.stem for p in fixtures_dir().glob("*.rx")
                                        if p.stem != "bad_auth"))
def test_leg_times_are_in_order_on_every_recording(name: str) -> None:
    """dialed (the controller's clock) ≤ ringing ≤ early ≤ answered ≤ parked ≤ bridged ≤
    hungup (FreeSWITCH's event clock), whatever the two clocks and the event order did."""
    mode = "simultaneous" if name in ("simultaneous_ok", "show_channels", "throttle") else \
        "sequential"
    cb, _ = replay(name, mode)
    for leg_name, leg in cb.legs.items():
        seen = [(stage, leg.times[stage]) for stage in LEG_TIMESTAMPS if stage in leg.times]
        assert [t for _, t in seen] == sorted(t for _, t in seen), (name, leg_name, seen)


def test_a_leg_refused_for_capacity_is_dialled_again_and_the_call_goes_on() -> None:
    cb, actions = replay("throttle", "simultaneous")
    b = cb.legs["B"]
    assert b.attempts == 1 and b.hangup_cause == "NORMAL_CLEARING"
    assert sum(isinstance(a, Retry) for a in actions) == 1
    assert [h["event"] for h in cb.history if h["event"] in ("throttled", "redial")] == \
        ["throttled", "redial"]
    assert cb.state == "completed"


def test_early_media_shows_as_early_before_the_answer() -> None:
    cb, _ = replay("sip_early_media")
    a = cb.legs["A"]
    assert a.times["ringing"] <= a.times["early"] < a.times["answered"]
