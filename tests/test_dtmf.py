"""``send_dtmf``: digits sent to a leg once it answered, the bridge held until they have
played; on the state machine, the command builder, the schema, and end to end (simulator and
real FreeSWITCH, SIP legs through sipp)."""

from __future__ import annotations

import math
import re

import pytest
from marshmallow import ValidationError
from test_callback import UA, UB, answered, make, run

from fsctl import commands, schemas
from fsctl.callback import (
    THROTTLE_RETRY_TOTAL_S,
    Bridge,
    Broadcast,
    CommandFailed,
    DtmfDone,
    Finished,
    Kill,
    Originate,
    SendDtmf,
    Start,
    apply,
)
from fsctl.errors import InvalidValue

# -- the state machine ---------------------------------------------------------------------


def with_digits(**digits: str):
    cb = make()
    for leg, d in digits.items():
        cb.legs[leg].send_dtmf = d
    return cb


def test_the_bridge_waits_for_the_digits_of_the_second_leg() -> None:
    cb = with_digits(B="12#")
    run(cb, [Start(0.0)])
    assert run(cb, answered("A", 1.0)) == [Originate("B"), Broadcast("A")]
    acts = run(cb, answered("B", 2.0))
    assert acts == [SendDtmf("B", UB, "12#")] and cb.state == "waiting"
    assert run(cb, answered("B", 2.0)) == []  # duplicated events: sent once
    assert apply(cb, DtmfDone("B", 3.5, "+OK sent")) == [Bridge(UA, UB)]
    assert apply(cb, DtmfDone("B", 3.6)) == []
    dtmf = [h for h in cb.history if h["event"].startswith("dtmf")]
    assert dtmf == [{"ts": 2.51, "event": "dtmf", "leg": "B", "digits": "12#"},
                    {"ts": 3.5, "event": "dtmf_done", "leg": "B", "result": "+OK sent"}]


def test_digits_to_the_first_leg_go_while_the_second_is_dialled() -> None:
    cb = with_digits(A="1")
    run(cb, [Start(0.0)])
    assert run(cb, answered("A", 1.0)) == [SendDtmf("A", UA, "1"), Originate("B"),
                                           Broadcast("A")]
    assert run(cb, answered("B", 2.0)) == []  # both up, A's digits still playing
    assert apply(cb, DtmfDone("A", 2.8)) == [Bridge(UA, UB)]


def test_digits_that_played_before_the_other_leg_answered_do_not_hold_the_bridge() -> None:
    cb = with_digits(A="1")
    run(cb, [Start(0.0)] + answered("A", 1.0))
    assert apply(cb, DtmfDone("A", 1.9)) == []
    assert run(cb, answered("B", 2.0)) == [Bridge(UA, UB)]


def test_digits_freeswitch_refused_end_the_callback_instead_of_a_wrong_bridge() -> None:
    cb = with_digits(B="12#")
    run(cb, [Start(0.0)] + answered("A", 1.0) + answered("B", 2.0))
    acts = apply(cb, CommandFailed("send_dtmf", "-ERR Cannot locate session!", 2.6, "B"))
    assert Finished("failed", "b_send_dtmf_error") in acts
    assert {a.leg for a in acts if isinstance(a, Kill)} == {"A", "B"}
    assert apply(cb, DtmfDone("B", 3.0)) == []  # a late timer changes nothing


def test_a_callback_without_digits_bridges_at_once() -> None:
    cb = make()
    run(cb, [Start(0.0)] + answered("A", 1.0))
    assert run(cb, answered("B", 2.0)) == [Bridge(UA, UB)]


# -- the command and its schema ------------------------------------------------------------


def test_the_command_takes_only_allowlisted_digits() -> None:
    assert commands.uuid_send_dtmf(UA, "ww1234#*") == f"uuid_send_dtmf {UA} ww1234#*"
    for bad in ("", "12a", "1 2", "1\n", "1@500", "1+2", "~1", "1" * 33):
        with pytest.raises(InvalidValue):
            commands.uuid_send_dtmf(UA, bad)


def test_the_bridge_waits_the_digits_and_pauses_out() -> None:
    d, settle = commands.DTMF_DIGIT_S, commands.DTMF_SETTLE_S
    assert commands.dtmf_play_s("1") == pytest.approx(d + settle)
    assert commands.dtmf_play_s("12#") == pytest.approx(3 * d + settle)
    assert commands.dtmf_play_s("wW1") == pytest.approx(0.5 + 1.0 + d + settle)


def test_the_request_field_says_what_is_allowed() -> None:
    legs = {"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125", "send_dtmf": "w12#"}}
    assert schemas.REQUEST_SCHEMA.load(legs)["leg_B"]["send_dtmf"] == "w12#"
    for bad in ("", "12a", "1;2", "1\n", 12, "1" * 33):
        legs["leg_B"]["send_dtmf"] = bad
        with pytest.raises(ValidationError) as exc:
            schemas.REQUEST_SCHEMA.load(legs)
        assert "send_dtmf" in exc.value.messages["leg_B"]


# -- end to end ----------------------------------------------------------------------------


def test_digits_reach_freeswitch_after_the_answer_and_before_the_bridge(stack) -> None:
    """SIP legs through sipp (10500…: answer at 0.3 s, never hang up); FreeSWITCH's own
    answer to the uuid_send_dtmf is kept in the history."""
    body = {"leg_A": {"to": "1050011", "route": "sip"},
            "leg_B": {"to": "1050012", "route": "sip", "send_dtmf": "1W2#"}}
    code, created, _ = stack.http("POST", "/voice/call/callback", body)
    assert code == 202 and created["legs"]["B"]["send_dtmf"] == "1W2#"
    rec = stack.wait_for(created["id"], "bridged", timeout_s=15)
    b = rec["legs"]["B"]
    hist = {h["event"]: h for h in rec["history"] if h.get("leg") == "B"
            and h["event"] in ("dtmf", "dtmf_done")}
    bridged = next(h["ts"] for h in rec["history"] if h.get("state") == "bridged")
    assert b["times"]["answered"] <= hist["dtmf"]["ts"] < hist["dtmf_done"]["ts"] <= bridged
    assert hist["dtmf_done"]["ts"] - hist["dtmf"]["ts"] >= commands.dtmf_play_s("1W2#") - 0.05
    assert hist["dtmf_done"]["result"] == f"+OK {b['uuid']} sent DTMF 1W2#."
    if stack.sim is not None:
        assert [(u, d) for u, d, _t in stack.sim.dtmf] == [(b["uuid"], "1W2#")]
        # each leg may stay parked for the digits' time too (park_timeout grows by it)
        parks = {re.search(r"fsctl_leg=([AB])", c.text)[1]:
                 int(re.search(r"park_timeout=(\d+)", c.text)[1])
                 for c in stack.sim.commands if c.text.startswith("bgapi originate")}
        plain = 30 + stack.settings.park_margin_s + math.ceil(THROTTLE_RETRY_TOTAL_S)
        assert parks == {"A": plain + math.ceil(commands.dtmf_play_s("1W2#")),
                         "B": plain + math.ceil(commands.dtmf_play_s("1W2#"))}
    stack.http("DELETE", f"/voice/call/callback/{created['id']}")
    final = stack.wait_for(created["id"], "completed")
    stack.wait_no_channels({final["legs"]["A"]["uuid"], b["uuid"]})
