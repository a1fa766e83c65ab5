"""The whole flow over HTTP, for each mode and each failure outcome.

Real parts: redis-server over TCP, the simulator (or FreeSWITCH with FSCTL_TEST_ESL)
over TCP, the API over HTTP. Routes are on null/ and error/ endpoints.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def legs(rec: dict) -> tuple[dict, dict]:
    return rec["legs"]["A"], rec["legs"]["B"]


def uuids(rec: dict) -> set[str]:
    return {rec["legs"]["A"]["uuid"], rec["legs"]["B"]["uuid"]}


def test_sequential_a_first_bridges_then_completes(stack) -> None:
    rec = stack.create({"leg_A": {"to": "1000123", "from": "1000125"},
                        "leg_B": {"to": "1000125", "from": "1000123", "route": "ring"}})
    assert rec["state"] == "queued"
    rec = stack.wait_for(rec["id"], "bridged", timeout_s=5)
    a, b = legs(rec)
    assert a["state"] == b["state"] == "bridged"
    assert a["times"]["answered"] <= b["times"]["dialed"] <= b["times"]["answered"]
    gevent_sleep(0.3)
    assert stack.kill(b["uuid"]).startswith("+OK")
    rec = stack.wait_for(rec["id"], "completed")
    a, b = legs(rec)
    assert rec["outcome"] == "completed" and rec["talk_time_s"] > 0.2
    assert b["hangup_cause"] == "NORMAL_CLEARING"
    states = [h["state"] for h in rec["history"] if h["event"] == "state"]
    assert states == ["queued", "dialing", "waiting", "bridged", "completed"]
    stack.wait_no_channels(uuids(rec))


def test_sequential_b_first_calls_b_before_a(stack) -> None:
    rec = stack.create({"leg_A": {"to": "1000123", "route": "ring"},
                        "leg_B": {"to": "1000125"}, "first": "B"})
    rec = stack.wait_for(rec["id"], "bridged", timeout_s=5)
    a, b = legs(rec)
    assert b["times"]["answered"] <= a["times"]["dialed"]
    stack.kill(a["uuid"])
    rec = stack.wait_for(rec["id"], "completed")
    stack.wait_no_channels(uuids(rec))


def test_simultaneous_dials_both_at_once(stack) -> None:
    rec = stack.create({"leg_A": {"to": "1000123", "route": "ring"},
                        "leg_B": {"to": "1000125"}, "mode": "simultaneous"})
    rec = stack.wait_for(rec["id"], "bridged", timeout_s=5)
    a, b = legs(rec)
    assert abs(a["times"]["dialed"] - b["times"]["dialed"]) < 0.5
    assert b["times"]["answered"] < a["times"]["answered"]  # B answered first, heard ringback
    stack.http("DELETE", f"/voice/call/callback/{rec['id']}")
    rec = stack.wait_for(rec["id"], "completed")
    stack.wait_no_channels(uuids(rec))


def test_a_busy_fails_without_dialling_b(stack) -> None:
    rec = stack.create({"leg_A": {"to": "1000123", "route": "busy"}, "leg_B": {"to": "1000125"}})
    rec = stack.wait_for(rec["id"], "failed")
    a, b = legs(rec)
    assert rec["outcome"] == "a_busy" and a["hangup_cause"] == "USER_BUSY"
    assert b["state"] == "pending" and "dialed" not in b["times"]


def test_a_no_answer(stack) -> None:
    rec = stack.create({"leg_A": {"to": "1000123", "route": "noanswer", "ring_timeout": 5},
                        "leg_B": {"to": "1000125"}})
    rec = stack.wait_for(rec["id"], "failed", timeout_s=8)
    assert rec["outcome"] == "a_no_answer"
    assert rec["legs"]["A"]["hangup_cause"] == "NO_ANSWER"
    stack.wait_no_channels(uuids(rec))


def test_b_rejected_hangs_up_a(stack) -> None:
    rec = stack.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125", "route": "reject"}})
    rec = stack.wait_for(rec["id"], "failed")
    a, _b = legs(rec)
    assert rec["outcome"] == "b_rejected"
    assert a["state"] == "hungup" or "answered" in a["times"]
    stack.wait_no_channels(uuids(rec))
    stack.wait_leg(rec["id"], "A", "hungup")


def test_a_hangs_up_while_b_rings(stack) -> None:
    rec = stack.create({"leg_A": {"to": "1000123"},
                        "leg_B": {"to": "1000125", "route": "noanswer"}})
    rec = stack.wait_for(rec["id"], "waiting")
    stack.kill(rec["legs"]["A"]["uuid"])
    rec = stack.wait_for(rec["id"], "failed")
    assert rec["outcome"] == "a_hangup_while_b_ringing"
    stack.wait_no_channels(uuids(rec))
    b = stack.wait_leg(rec["id"], "B", "hungup")
    assert b["hangup_cause"] == "ORIGINATOR_CANCEL"


@pytest.mark.parametrize("ringing", ["A", "B"])
def test_cancel_while_a_leg_rings(stack, ringing: str) -> None:
    body = {"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}}
    body[f"leg_{ringing}"]["route"] = "slow"
    rec = stack.create(body)
    rec = stack.wait_for(rec["id"], "dialing" if ringing == "A" else "waiting")
    code, _reply, _ = stack.http("DELETE", f"/voice/call/callback/{rec['id']}")
    assert code in (200, 202)
    rec = stack.wait_for(rec["id"], "cancelled")
    assert rec["outcome"] == "cancelled"
    stack.wait_no_channels(uuids(rec))
    code, again, _ = stack.http("DELETE", f"/voice/call/callback/{rec['id']}")
    assert code == 200 and again["state"] == "cancelled"  # idempotent


def test_cancel_queued_before_any_worker(redis_url: str) -> None:
    from stack import Stack
    from support import esl_target

    s = Stack(redis_url, esl_target(), start_worker=False)
    try:
        rec = s.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}})
        code, reply, _ = s.http("DELETE", f"/voice/call/callback/{rec['id']}")
        assert code == 200 and reply["state"] == "cancelled"
        s.start_worker()
        gevent_sleep(0.5)
        rec = s.get(rec["id"])
        assert rec["state"] == "cancelled" and "dialed" not in rec["legs"]["A"]["times"]
        assert s.redis.xpending(s.store.keys.jobs, "workers")["pending"] == 0
    finally:
        s.close()


def gevent_sleep(seconds: float) -> None:
    import gevent

    gevent.sleep(seconds)
