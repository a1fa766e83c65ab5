"""``POST /voice/call/callback/batch``: each item validated and admitted on its own, results
in order, the limits counted per item."""

from __future__ import annotations

from typing import Any

from stack import Stack

BATCH = "/voice/call/callback/batch"


def item(a: str, b: str, **extra: Any) -> dict[str, Any]:
    return {"leg_A": {"to": a}, "leg_B": {"to": b}, **extra}


def test_a_batch_places_the_valid_items_and_says_why_each_other_one_was_not(stack) -> None:
    items = [item("1000123", "1000125", metadata={"n": "0"}),
             item("1000123", "1000123"),                     # both legs the same number
             {"leg_A": {"to": "1000131"}},                   # no leg_B
             item("1000141", "1000142", mode="parallel"),
             "not an object",
             item("1000151", "1000152", metadata={"n": "5"})]
    code, reply, _ = stack.http("POST", BATCH, {"callbacks": items})
    assert code == 200, reply
    results = reply["results"]
    assert [r["index"] for r in results] == list(range(6))
    assert [r["status"] for r in results] == [202, 422, 422, 422, 422, 202]
    assert (reply["accepted"], reply["rejected"]) == (2, 4)
    assert results[1]["error"]["errors"] == {"leg_B": ["leg_A and leg_B call the same number"]}
    assert results[2]["error"]["errors"] == {"leg_B": ["Missing data for required field."]}
    assert "mode" in results[3]["error"]["errors"]
    assert results[4]["error"]["errors"] == {"_schema": ["expected an object with leg_A and leg_B"]}
    for r, n in ((results[0], "0"), (results[5], "5")):
        cb = r["callback"]
        assert r["href"] == f"/voice/call/callback/{cb['id']}" and cb["metadata"] == {"n": n}
        rec = stack.wait_for(cb["id"], "bridged")
        stack.http("DELETE", r["href"])
        stack.wait_for(cb["id"], "completed")
        stack.wait_no_channels({rec["legs"]["A"]["uuid"], rec["legs"]["B"]["uuid"]})


def test_the_limits_count_each_item(redis_url: str) -> None:
    s = Stack(redis_url, None, start_worker=False, rate_per_minute=3)
    try:
        code, reply, _ = s.http("POST", BATCH, {"callbacks": [
            item(f"10001{i}1", f"10001{i}2") for i in range(5)]})
        assert code == 200
        assert [r["status"] for r in reply["results"]] == [202, 202, 202, 429, 429]
        refused = reply["results"][3]
        assert refused["error"]["errors"] == {"limit": "rate"} and refused["retry_after_s"] >= 1
        assert s.redis.xlen(s.store.keys.jobs) == 3  # nothing for the refused ones
        code, _, _ = s.http("POST", "/voice/call/callback", item("1000171", "1000172"))
        assert code == 429  # the batch used the token's minute like single requests do
    finally:
        s.close()


def test_a_batch_that_is_not_one_is_refused_whole(redis_url: str) -> None:
    s = Stack(redis_url, None, start_worker=False, batch_max=3)
    try:
        cases = [({"callbacks": []}, "1 to 3 requests, not 0"),
                 ({"callbacks": [item("1000123", "1000125")] * 4}, "1 to 3 requests, not 4"),
                 ({"callbacks": {"a": 1}}, "required: a list"),
                 ({"callbacks": [item("1000123", "1000125")], "mode": "x"}, "nothing else"),
                 ([item("1000123", "1000125")], "required: a list")]
        for body, says in cases:
            code, reply, _ = s.http("POST", BATCH, body)
            assert code == 422 and says in reply["errors"]["callbacks"][0], (body, reply)
        code, reply, _ = s.http("POST", BATCH, {"callbacks": [item("1000123", "1000125")]},
                                headers={"Idempotency-Key": "k1"})
        assert code == 400 and "Idempotency-Key" in reply["errors"]
        assert s.redis.xlen(s.store.keys.jobs) == 0
    finally:
        s.close()


def test_a_redis_cli_batch_makes_a_callback_per_valid_item_and_dead_letters_the_rest(
        redis_url: str) -> None:
    import json
    import time

    import gevent

    s = Stack(redis_url, None)
    try:
        requests = [item("1000123", "1000125", metadata={"n": "0"}), item("1000131", "1000131"),
                    "nope", item("1000141", "1000142")]
        entry = s.redis.xadd(s.store.keys.jobs, {"requests": json.dumps(requests)})
        deadline = time.monotonic() + 5
        while not (made := s.redis.get(f"fsctl:job:{entry}")):
            assert time.monotonic() < deadline, "the batch job was not taken"
            gevent.sleep(0.05)
        ids = json.loads(made)
        assert [i is not None for i in ids] == [True, False, False, True]
        for cid in (ids[0], ids[3]):
            rec = s.wait_for(cid, "bridged")
            s.kill(rec["legs"]["B"]["uuid"])
            s.wait_for(cid, "completed")
        assert s.get(ids[0])["metadata"] == {"n": "0"}
        dead = [f for _, f in s.redis.xrange(s.store.keys.dead) if f["entry_id"] == entry]
        assert [f["reason"].split(":")[0] for f in dead] == ["item 1", "item 2"]
        assert "the same number" in dead[0]["reason"]
        assert json.loads(json.loads(dead[1]["payload"])["request"]) == "nope"
        # the batch's own job is acknowledged; a redelivery would make nothing twice
        assert s.redis.xpending(s.store.keys.jobs, "workers")["pending"] == 0
        s.worker.intake.take_all([(entry, {"requests": json.dumps(requests)})])
        assert json.loads(s.redis.get(f"fsctl:job:{entry}")) == ids
        assert s.redis.zcard(s.store.keys.callbacks) == 2
    finally:
        s.close()


def test_a_redis_cli_batch_that_is_not_one_is_dead_lettered_whole(redis_url: str) -> None:
    import json
    import time

    import gevent

    s = Stack(redis_url, None, batch_max=2)
    try:
        bad = {"not json": "[{", "too many": json.dumps([item("1000123", "1000125")] * 3),
               "not a list": json.dumps({"leg_A": {"to": "1000123"}})}
        entries = {s.redis.xadd(s.store.keys.jobs, {"requests": raw}): why
                   for why, raw in bad.items()}
        deadline = time.monotonic() + 5
        while len(dead := {f["entry_id"]: f["reason"] for _, f in
                           s.redis.xrange(s.store.keys.dead)}) < len(entries):
            assert time.monotonic() < deadline, dead
            gevent.sleep(0.05)
        assert all(dead[e].startswith("invalid batch:") for e in entries)
        assert "1 to 2 callback requests" in dead[next(e for e, w in entries.items()
                                                       if w == "too many")]
        assert s.redis.zcard(s.store.keys.callbacks) == 0
    finally:
        s.close()
