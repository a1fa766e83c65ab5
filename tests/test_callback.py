"""The pure state machine: every mode, every failure, duplicates and reordering."""

from __future__ import annotations

import copy
import itertools
import random

import pytest

from fsctl.callback import (
    BRIDGE_SURVIVOR_GRACE_S,
    Bridge,
    Broadcast,
    Cancel,
    CommandFailed,
    Finished,
    JobDone,
    Kill,
    LegSignal,
    Lost,
    Originate,
    Start,
    apply,
)
from fsctl.model import Callback, Leg

UA = "11111111-1111-4111-8111-111111111111"
UB = "22222222-2222-4222-8222-222222222222"


def make(mode: str = "sequential", first: str = "A") -> Callback:
    legs = {
        "A": Leg(to="1000123", from_="1000125", uuid=UA, job_uuid="ja", route="default",
                 ring_timeout_s=30),
        "B": Leg(to="1000125", from_="1000123", uuid=UB, job_uuid="jb", route="default",
                 ring_timeout_s=30),
    }
    return Callback(id="c" * 32, legs=legs, mode=mode, first=first, created_at=0.0)


def run(cb: Callback, inputs: list) -> list:
    out: list = []
    for item in inputs:
        out += apply(cb, item)
    return out


def answered(leg: str, t: float) -> list:
    return [LegSignal(leg, "created", t), LegSignal(leg, "ringing", t + 0.1),
            LegSignal(leg, "answered", t + 0.5), JobDone(leg, True, f"+OK {leg}", t + 0.51),
            LegSignal(leg, "parked", t + 0.52)]


def test_sequential_a_first_happy_path() -> None:
    cb = make()
    acts = run(cb, [Start(0.0)])
    assert acts == [Originate("A")] and cb.state == "dialing"
    acts = run(cb, answered("A", 1.0))
    assert acts == [Originate("B"), Broadcast("A")]
    assert cb.state == "waiting" and cb.legs["B"].state == "dialing"
    acts = run(cb, answered("B", 2.0))
    assert acts == [Bridge(UA, UB)]
    acts = run(cb, [LegSignal("A", "bridged", 2.6)])
    assert acts == [] and cb.state == "bridged"
    assert cb.legs["A"].state == cb.legs["B"].state == "bridged"
    acts = run(cb, [LegSignal("B", "hangup", 12.6, cause="NORMAL_CLEARING")])
    # FreeSWITCH hangs the survivor up itself: fsctl kills it only if it is still up later
    assert acts == [Kill("A", UA, "NORMAL_CLEARING", BRIDGE_SURVIVOR_GRACE_S),
                    Finished("completed", "completed")]
    assert cb.state == "completed" and cb.talk_time_s == 10.0
    # the surviving leg's own hangup is recorded but changes nothing
    assert run(cb, [LegSignal("A", "hangup", 12.7, cause="NORMAL_CLEARING")]) == []
    assert cb.legs["A"].hangup_cause == "NORMAL_CLEARING"
    states = [h["state"] for h in cb.history if h["event"] == "state"]
    assert states == ["dialing", "waiting", "bridged", "completed"]


def test_sequential_b_first_dials_b_then_a() -> None:
    cb = make(first="B")
    assert run(cb, [Start(0.0)]) == [Originate("B")]
    assert run(cb, answered("B", 1.0)) == [Originate("A"), Broadcast("B")]
    assert run(cb, answered("A", 2.0)) == [Bridge(UA, UB)]


def test_simultaneous_first_answer_hears_ringback_then_bridge() -> None:
    cb = make(mode="simultaneous")
    assert run(cb, [Start(0.0)]) == [Originate("A"), Originate("B")]
    assert run(cb, answered("B", 1.0)) == [Broadcast("B")]
    assert cb.state == "waiting"
    assert run(cb, answered("A", 2.0)) == [Bridge(UA, UB)]


def test_bridge_waits_for_park_not_answer() -> None:
    cb = make()
    run(cb, [Start(0.0)] + answered("A", 1.0))
    acts = run(cb, [LegSignal("B", "created", 2.0), LegSignal("B", "answered", 2.5)])
    assert acts == []  # B answered but its originate has not finished: no bridge yet
    assert run(cb, [JobDone("B", True, "+OK", 2.6)]) == [Bridge(UA, UB)]
    assert run(cb, [LegSignal("B", "parked", 2.7)]) == []  # no second bridge


@pytest.mark.parametrize("cause,outcome,sip", [
    ("USER_BUSY", "a_busy", "486"), ("NO_ANSWER", "a_no_answer", None),
    ("CALL_REJECTED", "a_rejected", "603"), ("UNALLOCATED_NUMBER", "a_invalid_number", "404"),
    ("NORMAL_TEMPORARY_FAILURE", "a_unreachable", "503"), ("SOMETHING_ODD", "a_failed", None),
])
def test_first_leg_fails(cause: str, outcome: str, sip: str | None) -> None:
    cb = make()
    run(cb, [Start(0.0), LegSignal("A", "created", 0.1)])
    acts = run(cb, [LegSignal("A", "hangup", 1.0, cause=cause, sip_status=sip),
                    JobDone("A", False, f"-ERR {cause}", 1.1)])
    assert acts == [Finished("failed", outcome)]
    assert cb.legs["A"].hangup_cause == cause and cb.legs["A"].sip_status == sip
    assert cb.legs["B"].state == "pending"  # never dialled


def test_job_error_alone_fails_the_leg() -> None:
    """A null leg that fails before its rename shows only its BACKGROUND_JOB."""
    cb = make()
    run(cb, [Start(0.0)] + answered("A", 1.0))
    acts = run(cb, [JobDone("B", False, "-ERR CALL_REJECTED", 2.0)])
    assert acts == [Kill("A", UA, "NORMAL_CLEARING"), Finished("failed", "b_rejected")]


def test_a_hangs_up_while_b_rings() -> None:
    cb = make()
    run(cb, [Start(0.0)] + answered("A", 1.0) + [LegSignal("B", "created", 1.2),
                                                 LegSignal("B", "ringing", 1.3)])
    acts = run(cb, [LegSignal("A", "hangup", 3.0, cause="NORMAL_CLEARING")])
    assert acts == [Kill("B", UB, "ORIGINATOR_CANCEL"),
                    Finished("failed", "a_hangup_while_b_ringing")]
    # B's originate then reports the cancel: nothing more to do
    assert run(cb, [JobDone("B", False, "-ERR ORIGINATOR_CANCEL", 3.1),
                    LegSignal("B", "hangup", 3.1, cause="ORIGINATOR_CANCEL")]) == []


def test_b_busy_hangs_up_a() -> None:
    cb = make()
    run(cb, [Start(0.0)] + answered("A", 1.0))
    acts = run(cb, [LegSignal("B", "hangup", 2.0, cause="USER_BUSY", sip_status="486")])
    assert acts == [Kill("A", UA, "NORMAL_CLEARING"), Finished("failed", "b_busy")]


def test_hangup_before_answer_event_is_reordered() -> None:
    cb = make()
    run(cb, [Start(0.0)])
    run(cb, [LegSignal("A", "hangup", 1.0, cause="NO_ANSWER")])
    assert run(cb, [LegSignal("A", "answered", 0.9), JobDone("A", True, "+OK", 0.95)]) == []
    assert cb.state == "failed" and cb.outcome == "a_no_answer"
    assert cb.legs["A"].state == "hungup"


def test_job_error_after_bridge_race_is_not_a_failure() -> None:
    """seq_a_first_ok: a bridge raced B's originate; its job says ORIGINATOR_CANCEL."""
    cb = make()
    run(cb, [Start(0.0)] + answered("A", 1.0) + [LegSignal("B", "answered", 2.0)])
    assert run(cb, [JobDone("B", False, "-ERR ORIGINATOR_CANCEL", 2.1)]) == []
    assert not cb.final
    run(cb, [LegSignal("A", "bridged", 2.2)])
    assert cb.state == "bridged"


def test_cancel_while_first_leg_rings_kills_it_and_again_on_create() -> None:
    cb = make()
    run(cb, [Start(0.0)])
    acts = run(cb, [Cancel(0.5)])
    assert acts == [Kill("A", UA, "ORIGINATOR_CANCEL"), Finished("cancelled", "cancelled")]
    # the channel did not exist yet: its CREATE arrives after the cancel → killed again
    assert run(cb, [LegSignal("A", "created", 0.6)]) == [Kill("A", UA, "ORIGINATOR_CANCEL")]
    assert run(cb, [Cancel(0.7)]) == []  # idempotent


def test_cancel_while_second_leg_rings() -> None:
    cb = make()
    run(cb, [Start(0.0)] + answered("A", 1.0) + [LegSignal("B", "created", 1.5)])
    acts = run(cb, [Cancel(2.0)])
    assert acts == [Kill("A", UA, "NORMAL_CLEARING"), Kill("B", UB, "ORIGINATOR_CANCEL"),
                    Finished("cancelled", "cancelled")]


def test_cancel_queued_needs_no_kill() -> None:
    cb = make()
    assert run(cb, [Cancel(0.0)]) == [Finished("cancelled", "cancelled")]
    assert run(cb, [Start(1.0)]) == []  # a late job start does not dial


def test_originate_not_delivered_fails_with_originate_error() -> None:
    cb = make()
    run(cb, [Start(0.0)])
    acts = run(cb, [CommandFailed("originate", "ESL down", 0.1, "A")])
    assert acts == [Kill("A", UA, "ORIGINATOR_CANCEL"), Finished("failed", "a_originate_error")]


def test_bridge_refused_fails_and_hangs_up_both() -> None:
    cb = make()
    run(cb, [Start(0.0)] + answered("A", 1.0) + answered("B", 2.0))
    acts = run(cb, [CommandFailed("bridge", "-ERR Invalid uuid", 3.0)])
    assert acts == [Kill("A", UA, "NORMAL_CLEARING"), Kill("B", UB, "NORMAL_CLEARING"),
                    Finished("failed", "bridge_error")]


def test_history_is_bounded() -> None:
    cb = make()
    for i in range(500):
        cb.note(float(i), "x")
    assert len(cb.history) == 64 and cb.history[-1]["ts"] == 499.0


def _happy_inputs() -> list:
    return ([Start(0.0)] + answered("A", 1.0) + answered("B", 2.0)
            + [LegSignal("A", "bridged", 3.0), LegSignal("B", "hangup", 9.0, cause="NORMAL_CLEARING"),
               LegSignal("A", "hangup", 9.1, cause="NORMAL_CLEARING")])


def test_every_input_duplicated_changes_nothing() -> None:
    once, twice = make(), make()
    a1 = run(once, _happy_inputs())
    a2 = run(twice, [x for item in _happy_inputs() for x in (item, item)])
    assert [a for a in a2 if not isinstance(a, Kill)] == [a for a in a1 if not isinstance(a, Kill)]
    assert once.state == twice.state == "completed"
    assert once.talk_time_s == twice.talk_time_s


def test_any_order_ends_final_with_one_finish_and_one_bridge() -> None:
    """Shuffled event streams: always exactly one Finished, never two bridges or dials."""
    rng = random.Random(7)
    base = _happy_inputs()
    for _ in range(2000):
        events = base[1:]
        rng.shuffle(events)
        cb = make()
        acts = run(cb, [base[0]] + events)
        assert sum(isinstance(a, Finished) for a in acts) == 1
        assert sum(isinstance(a, Bridge) for a in acts) <= 1
        assert [a for a in acts if isinstance(a, Originate)] in ([Originate("A")],
                                                                  [Originate("A"), Originate("B")])
        assert cb.final


def test_permutations_of_a_failure_never_bridge() -> None:
    tail = [LegSignal("A", "created", 0.1), LegSignal("A", "hangup", 1.0, cause="USER_BUSY"),
            JobDone("A", False, "-ERR USER_BUSY", 1.1)]
    for perm in itertools.permutations(tail):
        cb = make()
        acts = run(cb, [Start(0.0), *perm])
        assert cb.state == "failed" and cb.outcome == "a_busy"
        assert not any(isinstance(a, (Bridge, Originate)) and a != Originate("A") for a in acts)


def test_apply_on_a_copy_leaves_the_original() -> None:
    cb = make()
    clone = copy.deepcopy(cb)
    apply(clone, Start(0.0))
    assert cb.state == "queued" and clone.state == "dialing"


def test_cancel_while_bridged_hangs_up_and_completes() -> None:
    cb = make()
    run(cb, [Start(0.0)] + answered("A", 1.0) + answered("B", 2.0) + [LegSignal("A", "bridged", 3)])
    acts = run(cb, [Cancel(5.0)])
    assert acts == [Kill("A", UA, "NORMAL_CLEARING"), Kill("B", UB, "NORMAL_CLEARING")]
    assert cb.state == "bridged"
    acts = run(cb, [LegSignal("A", "hangup", 5.1, cause="NORMAL_CLEARING")])
    assert cb.state == "completed" and cb.talk_time_s == 2.1


def test_freeswitch_restart_ends_the_callback_with_a_clear_outcome() -> None:
    cb = make()
    run(cb, [Start(0.0)] + answered("A", 1.0) + answered("B", 2.0) + [LegSignal("A", "bridged", 3)])
    acts = run(cb, [Lost(10.0, "freeswitch_restarted")])
    assert acts == [Finished("failed", "freeswitch_restarted")]
    # nobody saw how the call ended: no talk time is made up from the outage, and it says so
    assert cb.talk_time_s is None and cb.inferred
    assert all(leg.state == "hungup" and leg.hangup_cause == "SYSTEM_SHUTDOWN"
               for leg in cb.legs.values())
    assert run(cb, [Lost(11.0, "freeswitch_restarted")]) == []


def test_a_leg_that_vanished_is_lost() -> None:
    cb = make()
    run(cb, [Start(0.0), LegSignal("A", "created", 0.1)])
    acts = run(cb, [LegSignal("A", "hangup", 5.0, cause="LOST")])
    assert acts == [Finished("failed", "a_lost")]
