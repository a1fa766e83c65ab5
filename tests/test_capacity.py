"""A node's capacity, pure: FreeSWITCH's status parsed, the worker's budget, the pacer, and
the state machine's answer to a leg FreeSWITCH refused for capacity (dialled again, never
the callee's fault), to a callback that waited too long, and its leg times kept in order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_callback import UA, UB, answered, make, run

from fsctl.callback import (
    THROTTLE_RETRY_DELAYS_S,
    Cancel,
    Expire,
    Finished,
    JobDone,
    LegSignal,
    Originate,
    Redial,
    Retry,
    Start,
    stamp,
)
from fsctl.capacity import NodeStatus, Pacer, budget, parse_status
from fsctl.model import LEG_TIMESTAMPS, Leg

# `api status` as FreeSWITCH 1.11.1 answered it (freeswitch-conf/, after a burst)
STATUS = (  # (FreeSWITCH ends two of the lines with a space)
    "UP 0 years, 0 days, 0 hours, 0 minutes, 30 seconds, 555 milliseconds, 983 microseconds\n"
    "FreeSWITCH (Version 1.11.1-release git c2c5964 2026-05-26 20:41:26Z 64bit) is ready\n"
    "600 session(s) since startup\n"
    "14 session(s) - peak 14, last 5min 14 \n"
    "23 session(s) per Sec out of max 30, peak 24, last 5min 24 \n"
    "1000 session(s) max\n"
    "min idle cpu 0.00/75.47\n"
    "Current Stack Size/Max 240K/8192K\n"
)
THROTTLED = "-ERR DESTINATION_OUT_OF_ORDER"


def test_status_gives_the_limits_and_the_load() -> None:
    assert parse_status(STATUS) == NodeStatus(sessions=14, sessions_per_second_max=30,
                                              sessions_last_second=23, max_sessions=1000)
    assert parse_status("-ERR permission denied\n") is None


def test_budget_keeps_headroom_and_the_operators_caps() -> None:
    status = parse_status(STATUS)
    assert budget(status, 0.8) == budget(status, 0.8, None, None)
    b = budget(status, 0.8)
    assert (b.originates_per_s, b.max_sessions) == (24, 800)
    b = budget(status, 0.8, rate_cap=10, sessions_cap=50)
    assert (b.originates_per_s, b.max_sessions) == (10, 50)
    tiny = NodeStatus(sessions=0, sessions_per_second_max=1, sessions_last_second=0,
                      max_sessions=1)
    b = budget(tiny, 0.5)  # a tiny node slows fsctl down, it does not stop it
    assert b.originates_per_s >= 1 and b.max_sessions >= 2


@given(rate=st.integers(1, 200), gaps=st.lists(st.floats(0, 0.2), min_size=1, max_size=300))
def test_no_second_of_freeswitch_ever_gets_more_than_rate_plus_one(rate: int,
                                                                   gaps: list[float]) -> None:
    """However the wishes to send arrive, sends are spaced 1/rate apart: any one-second window
    (FreeSWITCH's are not aligned with ours) holds at most rate + 1 of them."""
    pacer, now, sent = Pacer(rate), 0.0, []
    for gap in gaps:
        now += gap
        now += pacer.delay(now)
        pacer.take(now)
        sent.append(now)
    for i, t in enumerate(sent):
        in_window = sum(1 for u in sent[i:] if u < t + 1.0)
        assert in_window <= rate + 1


def test_backlog_counts_the_slots_of_the_coming_stretch() -> None:
    pacer = Pacer(20)
    assert pacer.backlog(0.0, 0.25) == 6  # now, then every 50 ms up to 250 ms
    pacer.take(0.0)
    assert pacer.delay(0.0) == pytest.approx(0.05)
    assert pacer.backlog(0.0, 0.25) == 5


# ---- the state machine -------------------------------------------------------------------


def test_a_leg_refused_for_capacity_is_dialled_again_under_new_ids() -> None:
    cb = make()
    assert run(cb, [Start(0.0)]) == [Originate("A")]
    acts = run(cb, [JobDone("A", False, THROTTLED, 0.1)])
    assert acts == [Retry("A", THROTTLE_RETRY_DELAYS_S[0])]
    assert cb.state == "dialing" and cb.legs["A"].state == "dialing"
    assert cb.legs["A"].awaiting_redial and not cb.legs["A"].sent
    new = "33333333-3333-4333-8333-333333333333"
    assert run(cb, [Redial("A", new, "job2", 0.7)]) == [Originate("A")]
    leg = cb.legs["A"]
    assert (leg.uuid, leg.job_uuid, leg.job_result, leg.attempts) == (new, "job2", None, 1)
    assert [h["event"] for h in cb.history][-2:] == ["throttled", "redial"]


def test_after_a_throttle_the_call_goes_on_as_usual() -> None:
    cb = make()
    run(cb, [Start(0.0), JobDone("A", False, THROTTLED, 0.1)])
    run(cb, [Redial("A", UA, "ja2", 0.7)])  # (the same uuid again, so answered() fits)
    acts = run(cb, answered("A", 1.0))
    assert acts[0] == Originate("B") and cb.state == "waiting"
    acts = run(cb, answered("B", 2.0))
    assert [type(a).__name__ for a in acts] == ["Bridge"]
    assert cb.legs["A"].attempts == 1 and cb.legs["B"].attempts == 0


def test_the_throttled_leg_gives_up_after_its_retries_without_blaming_the_callee() -> None:
    cb = make()
    run(cb, [Start(0.0)])
    for attempt, delay in enumerate(THROTTLE_RETRY_DELAYS_S):
        assert run(cb, [JobDone("A", False, THROTTLED, attempt + 0.1)]) == [Retry("A", delay)]
        assert run(cb, [Redial("A", UA, f"job{attempt + 2}", attempt + 0.5)]) == [Originate("A")]
    acts = run(cb, [JobDone("A", False, THROTTLED, 9.0)])
    assert acts == [Finished("failed", "a_throttled")]
    assert cb.legs["A"].hangup_cause == "THROTTLED" and cb.legs["A"].attempts == 4


def test_a_real_destination_out_of_order_is_the_far_ends() -> None:
    """A channel existed (a carrier refused the call): a plain failure, not a throttle."""
    cb = make()
    run(cb, [Start(0.0), LegSignal("A", "created", 0.1), LegSignal("A", "ringing", 0.2)])
    acts = run(cb, [LegSignal("A", "hangup", 0.5, cause="DESTINATION_OUT_OF_ORDER"),
                    JobDone("A", False, THROTTLED, 0.6)])
    assert acts == [Finished("failed", "a_unreachable")]


def test_a_second_leg_refused_for_capacity_keeps_the_first_waiting() -> None:
    cb = make()
    run(cb, [Start(0.0)] + answered("A", 1.0))
    acts = run(cb, [JobDone("B", False, THROTTLED, 1.2)])
    assert acts == [Retry("B", THROTTLE_RETRY_DELAYS_S[0])]
    assert cb.state == "waiting" and cb.legs["A"].state == "answered"


def test_a_cancel_during_the_retry_wait_wins() -> None:
    cb = make()
    run(cb, [Start(0.0), JobDone("A", False, THROTTLED, 0.1)])
    acts = run(cb, [Cancel(0.3)])
    assert Finished("cancelled", "cancelled") in acts
    assert run(cb, [Redial("A", UB, "job2", 0.6)]) == []  # nothing is dialled any more


def test_expire_ends_only_a_queued_callback() -> None:
    cb = make()
    assert run(cb, [Expire(130.0)]) == [Finished("failed", "expired")]
    assert cb.ended_at == 130.0 and cb.legs["A"].state == "pending"
    started = make()
    run(started, [Start(0.0)])
    assert run(started, [Expire(130.0)]) == [] and started.state == "dialing"


# ---- leg times in order -------------------------------------------------------------------


def test_fsctls_clock_ahead_of_freeswitchs_never_puts_dialed_after_ringing() -> None:
    """The trial's numbers: dialed 872.37174 (fsctl's clock), answered 872.362806 (FreeSWITCH's)."""
    leg = Leg("1000123", "1000125", UA, "ja", "default", 30)
    stamp(leg, "dialed", 872.37174)
    stamp(leg, "ringing", 872.36)
    stamp(leg, "answered", 872.362806)
    assert leg.times == {"dialed": 872.36, "ringing": 872.36, "answered": 872.362806}


@given(st.lists(st.tuples(st.sampled_from(LEG_TIMESTAMPS), st.floats(0, 1e4)), max_size=30))
def test_times_are_in_order_whatever_arrives_when(marks: list[tuple[str, float]]) -> None:
    leg = Leg("1000123", "1000125", UA, "ja", "default", 30)
    for stage, ts in marks:
        stamp(leg, stage, ts)
    seen = [leg.times[s] for s in LEG_TIMESTAMPS if s in leg.times]
    assert seen == sorted(seen)
    assert set(leg.times) == {s for s, _ in marks}
