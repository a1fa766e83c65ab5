"""SIP scenarios on the real FreeSWITCH: every far end a sipp UAS (tests/sip/switchboard.xml,
which picks its behaviour from the dialled number), every leg a sofia leg on the host-fixed
route ``sip`` (``sofia/fsctl/{to}@127.0.0.1:<sipp port>``), fsctl's worker logged in as the
restricted user. Each scenario checks the callback's state and outcome, every leg's state,
times (in order, from FreeSWITCH's clock), hangup cause and SIP status, and that no channel
is left (``show channels``). Only in ``make test-freeswitch``.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import gevent
import pytest
from stack import Stack

from fsctl.model import LEG_TIMESTAMPS

pytestmark = [pytest.mark.integration, pytest.mark.real_freeswitch]

_serial = itertools.count(10)


def num(prefix: str) -> str:
    """A fresh number of the switchboard's plan entry ``prefix`` (5 digits + 2 unique)."""
    return f"{prefix}{next(_serial) % 100:02d}"


ANSWERS = "10500"  # answers after 0.3 s, waits for BYE
RINGS_3S = "10501"  # answers after 3 s, waits for BYE
HANGS_UP_3S = "10502"  # answers after 0.3 s, sends its own BYE 3 s after the ACK
BUSY = "10503"  # 486 Busy Here
UNAVAILABLE = "10504"  # 480 Temporarily Unavailable
NOT_FOUND = "10505"  # 404 Not Found
SERVICE_UNAVAILABLE = "10506"  # 503 Service Unavailable
NEVER_ANSWERS = "10507"  # rings until CANCEL
EARLY_MEDIA = "10508"  # 183 with SDP, 200 OK 2 s later, waits for BYE
HANGS_UP_1S = "10509"  # answers after 0.3 s, sends its own BYE 1 s after the ACK


def sip(prefix: str, **extra: Any) -> dict[str, Any]:
    return {"to": num(prefix), "route": "sip", **extra}


def request(a: dict[str, Any], b: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"leg_A": a, "leg_B": b, **extra}


def check_times(rec: dict[str, Any]) -> None:
    """dialed ≤ ringing ≤ early ≤ answered ≤ parked ≤ bridged ≤ hungup, on every leg."""
    for name, leg in rec["legs"].items():
        seen = [(stage, leg["times"][stage]) for stage in LEG_TIMESTAMPS if stage in leg["times"]]
        assert [t for _, t in seen] == sorted(t for _, t in seen), (name, seen)


def finish(stack: Stack, rec: dict[str, Any], *states: str, timeout_s: float = 15) -> dict:
    """Wait for the callback to end; check its times and that FreeSWITCH holds no channel."""
    rec = stack.wait_for(rec["id"], *states, timeout_s=timeout_s)
    uuids = {leg["uuid"] for leg in rec["legs"].values()}
    stack.wait_no_channels(uuids, timeout_s=10)
    for name, leg in rec["legs"].items():
        if leg["state"] != "pending":
            stack.wait_leg(rec["id"], name, "hungup", timeout_s=5)
    # every SIP leg here had a channel; its CHANNEL_HANGUP_COMPLETE (the SIP status and
    # disposition) comes after the HANGUP that ended the callback, and is recorded later
    deadline = time.monotonic() + 5
    while True:
        rec = stack.get(rec["id"])
        late = [n for n, leg in rec["legs"].items()
                if leg["state"] != "pending" and leg["hangup_disposition"] is None]
        if not late or time.monotonic() > deadline:
            break
        gevent.sleep(0.05)
    check_times(rec)
    return rec


def assert_leg(leg: dict[str, Any], state: str, cause: str | None, sip_status: str | None,
               disposition: str | None, stages: set[str]) -> None:
    got = (leg["state"], leg["hangup_cause"], leg["sip_status"], leg["hangup_disposition"])
    assert got == (state, cause, sip_status, disposition), json.dumps(leg)
    assert stages <= set(leg["times"]), json.dumps(leg)


TALKED = {"dialed", "ringing", "answered", "parked", "bridged", "hungup"}


# ---- both answer, in every mode ---------------------------------------------------------


@pytest.mark.parametrize("mode,first", [("sequential", "A"), ("sequential", "B"),
                                        ("simultaneous", "A")])
def test_both_answer_and_are_bridged_in_every_mode(stack, mode: str, first: str) -> None:
    rec = stack.create(request(sip(ANSWERS), sip(ANSWERS), mode=mode, first=first))
    rec = stack.wait_for(rec["id"], "bridged", timeout_s=10)
    a, b = rec["legs"]["A"], rec["legs"]["B"]
    if mode == "sequential":
        one, two = (a, b) if first == "A" else (b, a)
        assert one["times"]["answered"] <= two["times"]["dialed"]  # the second waits its turn
    else:
        assert abs(a["times"]["dialed"] - b["times"]["dialed"]) < 0.5
    gevent.sleep(1.0)
    code, _, _ = stack.http("DELETE", f"/voice/call/callback/{rec['id']}")
    assert code == 202
    rec = finish(stack, rec, "completed")
    assert rec["outcome"] == "completed" and rec["talk_time_s"] >= 0.9
    for leg in rec["legs"].values():
        assert_leg(leg, "hungup", "NORMAL_CLEARING", None, "send_bye", TALKED)


def test_a_rings_three_seconds_then_answers(stack) -> None:
    rec = stack.create(request(sip(RINGS_3S), sip(HANGS_UP_1S)))
    rec = finish(stack, rec, "completed", timeout_s=15)
    a = rec["legs"]["A"]
    assert 2.8 <= a["times"]["answered"] - a["times"]["dialed"] < 5, a["times"]
    assert a["times"]["ringing"] - a["times"]["dialed"] < 1.0
    assert rec["outcome"] == "completed"


def test_the_far_end_hangs_up_and_the_talk_time_is_right(stack) -> None:
    rec = stack.create(request(sip(ANSWERS), sip(HANGS_UP_3S)))
    rec = finish(stack, rec, "completed", timeout_s=15)
    a, b = rec["legs"]["A"], rec["legs"]["B"]
    assert rec["outcome"] == "completed"
    assert 2.7 <= rec["talk_time_s"] <= 3.6, rec["talk_time_s"]  # B's BYE 3 s after its ACK
    assert_leg(b, "hungup", "NORMAL_CLEARING", "200", "recv_bye", TALKED)
    assert_leg(a, "hungup", "NORMAL_CLEARING", None, "send_bye", TALKED)
    assert b["times"]["hungup"] <= a["times"]["hungup"]  # B's BYE, then fsctl hung up A


# ---- the first leg fails: the other is never dialled ------------------------------------


@pytest.mark.parametrize("prefix,outcome,cause,status", [
    (BUSY, "a_busy", "USER_BUSY", "486"),
    (UNAVAILABLE, "a_no_answer", "NO_USER_RESPONSE", "480"),
    (NOT_FOUND, "a_invalid_number", "UNALLOCATED_NUMBER", "404"),
    (SERVICE_UNAVAILABLE, "a_unreachable", "NORMAL_TEMPORARY_FAILURE", "503"),
])
def test_a_refused_by_the_far_end(stack, prefix: str, outcome: str, cause: str,
                                  status: str) -> None:
    rec = stack.create(request(sip(prefix), sip(ANSWERS)))
    rec = finish(stack, rec, "failed")
    a, b = rec["legs"]["A"], rec["legs"]["B"]
    assert rec["outcome"] == outcome
    assert_leg(a, "hungup", cause, status, "recv_refuse", {"dialed", "ringing", "hungup"})
    assert "answered" not in a["times"]
    assert b["state"] == "pending" and b["times"] == {}


def test_b_busy_after_a_answered_hangs_up_a(stack) -> None:
    rec = stack.create(request(sip(ANSWERS), sip(BUSY)))
    rec = finish(stack, rec, "failed")
    a, b = rec["legs"]["A"], rec["legs"]["B"]
    assert rec["outcome"] == "b_busy"
    assert_leg(b, "hungup", "USER_BUSY", "486", "recv_refuse", {"dialed", "ringing", "hungup"})
    assert_leg(a, "hungup", "NORMAL_CLEARING", None, "send_bye", {"answered", "parked", "hungup"})


def test_a_never_answers_and_its_ring_timeout_cancels_it(stack) -> None:
    rec = stack.create(request(sip(NEVER_ANSWERS, ring_timeout=5), sip(ANSWERS)))
    rec = finish(stack, rec, "failed", timeout_s=15)
    a = rec["legs"]["A"]
    assert rec["outcome"] == "a_no_answer"
    assert_leg(a, "hungup", "NO_ANSWER", "487", "send_cancel", {"dialed", "ringing", "hungup"})
    # originate_timeout counts FreeSWITCH's whole seconds: 5 means 4 to 5 s of ringing
    assert 3.9 <= a["times"]["hungup"] - a["times"]["dialed"] < 6.0
    assert rec["legs"]["B"]["state"] == "pending"


def test_early_media_is_not_an_answer(stack) -> None:
    rec = stack.create(request(sip(EARLY_MEDIA), sip(HANGS_UP_1S)))
    rec = stack.wait_for(rec["id"], "waiting", timeout_s=8)
    a = rec["legs"]["A"]
    # ignore_early_media: the 183 with SDP did not answer the leg, the 200 two seconds later
    # did; FreeSWITCH still reports the early media (CHANNEL_PROGRESS_MEDIA, Answer-State early)
    assert a["times"]["answered"] - a["times"]["dialed"] >= 1.8, a["times"]
    assert a["times"]["ringing"] <= a["times"]["early"] < a["times"]["answered"] - 1.5
    rec = finish(stack, rec, "completed", timeout_s=10)
    assert_leg(rec["legs"]["A"], "hungup", "NORMAL_CLEARING", None, "send_bye", TALKED)


def test_a_hangs_up_while_b_rings(stack) -> None:
    rec = stack.create(request(sip(HANGS_UP_1S), sip(NEVER_ANSWERS)))
    rec = finish(stack, rec, "failed", timeout_s=10)
    a, b = rec["legs"]["A"], rec["legs"]["B"]
    assert rec["outcome"] == "a_hangup_while_b_ringing"
    assert_leg(a, "hungup", "NORMAL_CLEARING", "200", "recv_bye", {"answered", "parked", "hungup"})
    assert_leg(b, "hungup", "ORIGINATOR_CANCEL", "487", "send_cancel", {"dialed", "ringing", "hungup"})
    assert "answered" not in b["times"]


# ---- cancel in each state ----------------------------------------------------------------


def test_cancel_while_queued(redis_url: str, freeswitch_node) -> None:
    from support import esl_target

    s = Stack(redis_url, esl_target(), start_worker=False)
    try:
        rec = s.create(request(sip(ANSWERS), sip(ANSWERS)))
        code, reply, _ = s.http("DELETE", f"/voice/call/callback/{rec['id']}")
        assert code == 200 and reply["state"] == "cancelled"
        s.start_worker()
        gevent.sleep(1.0)
        rec = s.get(rec["id"])
        assert rec["state"] == "cancelled" and rec["outcome"] == "cancelled"
        assert all(leg["state"] == "pending" and leg["times"] == {}
                   for leg in rec["legs"].values())
        live = {row["uuid"] for row in s.channels()}
        assert not live & {leg["uuid"] for leg in rec["legs"].values()}
    finally:
        s.close()


def test_cancel_while_a_rings(stack) -> None:
    rec = stack.create(request(sip(NEVER_ANSWERS), sip(ANSWERS)))
    stack.wait_leg(rec["id"], "A", "ringing", timeout_s=5)
    code, _, _ = stack.http("DELETE", f"/voice/call/callback/{rec['id']}")
    assert code == 202
    rec = finish(stack, rec, "cancelled")
    assert rec["outcome"] == "cancelled"
    assert_leg(rec["legs"]["A"], "hungup", "ORIGINATOR_CANCEL", "487", "send_cancel",
               {"dialed", "ringing", "hungup"})
    assert rec["legs"]["B"]["state"] == "pending"


def test_cancel_while_waiting_for_b(stack) -> None:
    rec = stack.create(request(sip(ANSWERS), sip(NEVER_ANSWERS)))
    stack.wait_for(rec["id"], "waiting", timeout_s=5)
    stack.wait_leg(rec["id"], "B", "ringing", timeout_s=5)
    stack.http("DELETE", f"/voice/call/callback/{rec['id']}")
    rec = finish(stack, rec, "cancelled")
    assert_leg(rec["legs"]["A"], "hungup", "NORMAL_CLEARING", None, "send_bye",
               {"answered", "parked", "hungup"})
    assert_leg(rec["legs"]["B"], "hungup", "ORIGINATOR_CANCEL", "487", "send_cancel",
               {"dialed", "ringing", "hungup"})


def test_cancel_while_bridged_completes_the_call(stack) -> None:
    rec = stack.create(request(sip(ANSWERS), sip(ANSWERS)))
    stack.wait_for(rec["id"], "bridged", timeout_s=8)
    gevent.sleep(0.5)
    stack.http("DELETE", f"/voice/call/callback/{rec['id']}")
    rec = finish(stack, rec, "completed")
    assert rec["outcome"] == "completed" and rec["talk_time_s"] >= 0.4
    history = [h["reason"] for h in rec["history"] if h["event"] == "hangup_requested"]
    assert history == ["cancelled"]
