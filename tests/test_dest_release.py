"""The per-destination cooldown counts people who were rung, not requests: a callback that
ends before a leg was dialled gives that number's count back, so one tenant cannot block a
number for everyone by asking and cancelling (or by pairing it with a leg that fails)."""

from __future__ import annotations

import time

import gevent
import pytest
from stack import Stack
from support import esl_target

from fsctl.auth import hash_token, parse_tokens

pytestmark = pytest.mark.integration

EVIL, SHOP = "fsk_evil_tenant_token", "fsk_shop_tenant_token"
VICTIM = "1000555"


def tokens():
    return parse_tokens({"tokens": {"evil": {"sha256": hash_token(EVIL)},
                                    "shop": {"sha256": hash_token(SHOP)}}})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api(redis_url: str):
    s = Stack(redis_url, esl_target(), start_worker=False, tokens=tokens(), dest_max_per_hour=2)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def stack(redis_url: str):
    s = Stack(redis_url, esl_target(), tokens=tokens(), dest_max_per_hour=2)
    try:
        yield s
    finally:
        s.close()


def post(s: Stack, token: str, body: dict) -> tuple[int, dict]:
    code, reply, _ = s.http("POST", "/voice/call/callback", body, headers=bearer(token))
    return code, reply


def count(s: Stack, number: str) -> int:
    return int(s.redis.get(s.store.keys.dest(number)) or 0)


def test_asking_and_cancelling_does_not_use_up_a_number(api) -> None:
    for i in range(6):
        code, rec = post(api, EVIL, {"leg_A": {"to": f"100010{i}"}, "leg_B": {"to": VICTIM}})
        assert code == 202, rec
        path = f"/voice/call/callback/{rec['id']}"
        code, rec, _ = api.http("DELETE", path, headers=bearer(EVIL))
        assert code == 200 and rec["state"] == "cancelled"
        api.http("DELETE", path, headers=bearer(EVIL))  # repeated: gives back nothing more
    assert count(api, VICTIM) == 0
    code, _ = post(api, SHOP, {"leg_A": {"to": "1000200"}, "leg_B": {"to": VICTIM}})
    assert code == 202
    assert count(api, VICTIM) == 1


def test_the_limit_still_holds_for_numbers_that_are_asked_for_and_not_cancelled(api) -> None:
    codes = [post(api, SHOP, {"leg_A": {"to": f"100020{i}"}, "leg_B": {"to": VICTIM}})[0]
             for i in range(4)]
    assert codes == [202, 202, 429, 429]


def wait_final(s: Stack, callback_id: str, token: str, timeout_s: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rec = s.get_with(f"/voice/call/callback/{callback_id}", token)
        if rec["state"] in ("completed", "failed", "cancelled"):
            return rec
        gevent.sleep(0.05)
    raise AssertionError(f"callback {callback_id} not final after {timeout_s}s: {rec}")


def test_a_leg_never_dialled_because_the_first_failed_gives_its_count_back(stack) -> None:
    for i in range(3):  # a third request to VICTIM passes only if the first two gave back
        code, rec = post(stack, EVIL, {"leg_A": {"to": f"100030{i}", "route": "busy"},
                                       "leg_B": {"to": VICTIM}})
        assert code == 202, rec
        final = wait_final(stack, rec["id"], EVIL)
        assert final["outcome"] == "a_busy" and "dialed" not in final["legs"]["B"]["times"]
        assert count(stack, f"100030{i}") == 1  # the busy leg was dialled: it counts
    assert count(stack, VICTIM) == 0  # the victim was never rung
