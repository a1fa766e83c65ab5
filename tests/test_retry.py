"""A leg's retry policy: busy / no answer / failure dialled again after a delay with backoff,
each attempt in the history with its cause, and never while a party who answered waits."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError
from test_callback import UA, UB, answered, make, run

from fsctl import schemas
from fsctl.callback import (
    Cancel,
    Finished,
    JobDone,
    Kill,
    LegSignal,
    Originate,
    Redial,
    Retry,
    Start,
    apply,
)

UA2, UA3 = "33333333-3333-4333-8333-333333333333", "44444444-4444-4444-8444-444444444444"
POLICY = {"attempts": 2, "delay_s": 5.0, "backoff": 2.0, "on": ["busy", "no_answer", "failed"]}


def busy(leg: str, t: float, cause: str = "USER_BUSY") -> list:
    return [LegSignal(leg, "created", t), LegSignal(leg, "ringing", t + 0.1),
            LegSignal(leg, "hangup", t + 1.0, cause=cause, sip_status="486")]


def with_policy(leg: str = "A", mode: str = "sequential", **policy) -> object:
    cb = make(mode)
    cb.legs[leg].retry = {**POLICY, **policy}
    return cb


def test_a_busy_first_leg_is_dialled_again_with_backoff_then_fails() -> None:
    cb = with_policy()
    run(cb, [Start(0.0)])
    assert run(cb, busy("A", 0.0)) == [Retry("A", 5.0, "retry")]
    assert cb.state == "dialing" and not cb.final
    assert run(cb, busy("A", 0.0)) == []  # late events of the failed attempt
    assert apply(cb, JobDone("A", False, "-ERR USER_BUSY", 1.1)) == []
    assert apply(cb, Redial("A", UA2, "ja2", 6.0)) == [Originate("A")]
    leg = cb.legs["A"]
    assert (leg.uuid, leg.state, leg.hangup_cause, leg.times) == (UA2, "dialing", None, {})
    assert run(cb, busy("A", 6.0)) == [Retry("A", 10.0, "retry")]
    assert apply(cb, Redial("A", UA3, "ja3", 17.0)) == [Originate("A")]
    acts = run(cb, busy("A", 17.0))
    assert Finished("failed", "a_busy") in acts and cb.legs["A"].retries == 2
    tries = [(h["attempt"], h["cause"], h["delay_s"]) for h in cb.history if h["event"] == "retry"]
    assert tries == [(2, "USER_BUSY", 5.0), (3, "USER_BUSY", 10.0)]


def test_a_retried_leg_that_answers_goes_on_as_usual() -> None:
    cb = with_policy()
    run(cb, [Start(0.0)] + busy("A", 0.0))
    apply(cb, Redial("A", UA2, "ja2", 6.0))
    assert run(cb, answered("A", 6.0))[:1] == [Originate("B")]
    assert cb.state == "waiting" and cb.legs["A"].retries == 1


def test_a_party_who_answered_is_never_held_for_the_other_legs_retry() -> None:
    cb = with_policy("B")
    run(cb, [Start(0.0)] + answered("A", 0.0))
    acts = run(cb, busy("B", 1.0))
    assert Finished("failed", "b_busy") in acts and Kill("A", UA, "NORMAL_CLEARING") in acts
    assert not [h for h in cb.history if h["event"] == "retry"]


def test_simultaneous_a_retry_is_abandoned_when_the_other_party_answers() -> None:
    cb = with_policy("A", mode="simultaneous")
    run(cb, [Start(0.0)])
    assert run(cb, busy("A", 0.0)) == [Retry("A", 5.0, "retry")]
    acts = run(cb, answered("B", 1.0))
    assert Finished("failed", "a_busy") in acts and Kill("B", UB, "NORMAL_CLEARING") in acts
    assert [h["leg"] for h in cb.history if h["event"] == "retry_abandoned"] == ["A"]
    assert apply(cb, Redial("A", UA2, "ja2", 6.0)) == []  # the timer firing later: nothing


def test_only_the_failures_the_policy_names_are_retried() -> None:
    cb = with_policy(on=["no_answer"])
    run(cb, [Start(0.0)])
    assert Finished("failed", "a_busy") in run(cb, busy("A", 0.0))
    cb = with_policy()
    run(cb, [Start(0.0)])  # a wrong number is never retried
    assert Finished("failed", "a_invalid_number") in run(cb, busy("A", 0.0, "UNALLOCATED_NUMBER"))
    cb = with_policy()
    run(cb, [Start(0.0)])
    assert run(cb, busy("A", 0.0, "NO_ANSWER")) == [Retry("A", 5.0, "retry")]


def test_a_cancel_during_the_wait_ends_it_and_nothing_is_dialled_again() -> None:
    cb = with_policy()
    run(cb, [Start(0.0)] + busy("A", 0.0))
    acts = apply(cb, Cancel(2.0))
    assert acts == [Finished("cancelled", "cancelled")]
    assert apply(cb, Redial("A", UA2, "ja2", 6.0)) == []


def test_the_policy_is_validated() -> None:
    legs = {"leg_A": {"to": "1000123", "retry": {"attempts": 2}}, "leg_B": {"to": "1000125"}}
    got = schemas.REQUEST_SCHEMA.load(legs)["leg_A"]["retry"]
    assert got == {"attempts": 2, "delay_s": 30.0, "backoff": 1.0,
                   "on": ["busy", "no_answer", "failed"]}
    for bad, field in (({"attempts": 0}, "attempts"), ({"attempts": 6}, "attempts"),
                       ({"attempts": 1, "delay_s": 0.5}, "delay_s"),
                       ({"attempts": 1, "backoff": 9}, "backoff"),
                       ({"attempts": 1, "on": ["invalid_number"]}, "on"),
                       ({"attempts": 1, "every": 3}, "every"), ({}, "attempts")):
        legs["leg_A"]["retry"] = bad
        with pytest.raises(ValidationError) as exc:
            schemas.REQUEST_SCHEMA.load(legs)
        assert field in exc.value.messages["leg_A"]["retry"], exc.value.messages


@pytest.fixture
def busy_far_end(redis_url: str, freeswitch_node):
    """1000666 answers 486 Busy Here after 1 s: sipp's switchboard on the real FreeSWITCH,
    the same behaviour on the simulator."""
    from stack import Stack
    from support import esl_target

    from fsctl.simulator.config import Behaviour, SimConfig

    s = Stack(redis_url, esl_target(), sim_config=SimConfig(
        answer_delay_s=0.3, talk_s=1.0, numbers={"1000666": Behaviour("busy", 1.0)}))
    try:
        yield s
    finally:
        s.close()


@pytest.mark.freeswitch
def test_a_busy_sip_leg_is_dialled_again_and_each_attempt_keeps_its_cause(busy_far_end) -> None:
    stack = busy_far_end
    body = {"leg_A": {"to": "1000666", "route": "sip",
                      "retry": {"attempts": 2, "delay_s": 1.0, "backoff": 1.5}},
            "leg_B": {"to": "1000125"}}
    code, created, _ = stack.http("POST", "/voice/call/callback", body)
    assert code == 202 and created["legs"]["A"]["retry"]["attempts"] == 2
    final = stack.wait_for(created["id"], "failed", timeout_s=20)
    a = final["legs"]["A"]
    assert (final["outcome"], a["attempts"], a["retries"]) == ("a_busy", 3, 2)
    tries = [h for h in final["history"] if h["event"] == "retry"]
    assert [(h["attempt"], h["cause"], h["sip_status"], h["delay_s"]) for h in tries] == [
        (2, "USER_BUSY", "486", 1.0), (3, "USER_BUSY", "486", 1.5)]
    redials = [h["ts"] for h in final["history"] if h["event"] == "redial"]
    assert len(redials) == 2
    # history times are on FreeSWITCH's clock as fsctl estimates it, which may fall back by
    # 1 ms a second (CLOCK_DRIFT_S_PER_S): a wait of 1 s can read 0.999 s
    assert redials[0] - tries[0]["ts"] >= 0.99 and redials[1] - tries[1]["ts"] >= 1.49
    assert final["legs"]["B"]["state"] == "pending"  # nobody else was ever rung
