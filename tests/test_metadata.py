"""A callback's ``metadata``: the requester's own data, bounded, stored with the callback,
returned by POST, GET, the list and webhooks, never sent to FreeSWITCH."""

from __future__ import annotations

import json
import time
from typing import Any

import gevent
import pytest
from marshmallow import ValidationError

from fsctl import schemas
from fsctl.schemas import METADATA_MAX_BYTES, METADATA_MAX_KEYS, METADATA_VALUE_MAX_CHARS

LEGS = {"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}}
MARK = "zq7marker"
"""In every metadata value below: found nowhere FreeSWITCH could see it."""
GIVEN = {"ticket": f"CRM-48213-{MARK}", "queue": f"website {MARK}", "note": f"Müller {MARK} ☎"}


def errors_of(metadata: Any) -> Any:
    with pytest.raises(ValidationError) as exc:
        schemas.REQUEST_SCHEMA.load(dict(LEGS, metadata=metadata))
    return exc.value.messages["metadata"]


def test_metadata_within_the_bounds_is_kept_as_given() -> None:
    most = {f"k{i:02d}": "v" * 90 for i in range(METADATA_MAX_KEYS)}
    assert schemas.metadata_size(most) <= METADATA_MAX_BYTES
    for metadata in ({}, GIVEN, most, {"a": "x" * METADATA_VALUE_MAX_CHARS}):
        assert schemas.REQUEST_SCHEMA.load(dict(LEGS, metadata=metadata))["metadata"] == metadata


@pytest.mark.parametrize(("metadata", "says"), [
    ({"n": 5}, {"n": {"value": ["Not a valid string."]}}),
    ({"n": {"deeper": "x"}}, {"n": {"value": ["Not a valid string."]}}),
    ({"n": None}, {"n": {"value": ["Field may not be null."]}}),
    ({"-x": "y"}, {"-x": {"key": [
        "a key is 1 to 40 of A-Z a-z 0-9 _ . - (not starting with . or -)"]}}),
    ({"k" * 41: "y"}, {"k" * 41: {"key": [
        "a key is 1 to 40 of A-Z a-z 0-9 _ . - (not starting with . or -)"]}}),
    ({"n": "a\r\nb"}, {"n": {"value": [
        "must not contain control characters (CR, LF, tab, NUL …)"]}}),
    ({"n": "x" * 257}, {"n": {"value": ["at most 256 characters, not 257"]}}),
    ({"n": "a\udc80"}, {"n": {"value": [
        "must be Unicode text (a lone surrogate such as \\udc80 is not)"]}}),
    ({f"k{i}": "v" for i in range(METADATA_MAX_KEYS + 1)}, ["at most 20 entries"]),
    (["a", "b"], ["Not a valid mapping type."]),
    ("ticket=1", ["Not a valid mapping type."]),
])
def test_metadata_outside_the_bounds_is_refused_saying_why(metadata: Any, says: Any) -> None:
    assert errors_of(metadata) == says


def test_the_size_bound_counts_utf8_bytes_of_the_whole_object() -> None:
    big = {f"k{i:02d}": "é" * 60 for i in range(METADATA_MAX_KEYS)}  # 120 bytes a value
    chars = len(json.dumps(big, ensure_ascii=False, separators=(",", ":")))
    assert chars <= METADATA_MAX_BYTES < schemas.metadata_size(big)  # under in characters
    assert errors_of(big) == [(f"is {schemas.metadata_size(big)} bytes as JSON; at most "
                               f"{METADATA_MAX_BYTES}")]


def test_metadata_goes_through_the_api_and_never_reaches_freeswitch(stack) -> None:
    code, created, _ = stack.http("POST", "/voice/call/callback", dict(LEGS, metadata=GIVEN))
    assert code == 202 and created["metadata"] == GIVEN
    rec = stack.wait_for(created["id"], "bridged")
    assert rec["metadata"] == GIVEN
    for leg in "AB":  # fs_cli> uuid_dump: every variable and tag of the channel
        dump = stack.esl.api(f"uuid_dump {rec['legs'][leg]['uuid']}")
        assert "fsctl_callback_id" in dump and MARK not in dump
    code, page, _ = stack.http("GET", "/voice/call/callback?limit=5")
    assert code == 200
    assert [i["metadata"] for i in page["items"] if i["id"] == created["id"]] == [GIVEN]
    stack.http("DELETE", f"/voice/call/callback/{created['id']}")
    final = stack.wait_for(created["id"], "completed", "cancelled")
    assert final["metadata"] == GIVEN
    if stack.sim is not None:  # everything the simulator received, commands and headers
        sent = [c.text + json.dumps(c.headers) for c in stack.sim.commands]
        assert sent and not [t for t in sent if MARK in t]


def test_no_metadata_is_null_and_a_refused_one_places_nothing(stack) -> None:
    code, created, _ = stack.http("POST", "/voice/call/callback", LEGS)
    assert code == 202 and created["metadata"] is None
    before = stack.redis.xlen(stack.store.keys.jobs)
    code, err, _ = stack.http("POST", "/voice/call/callback",
                              dict(LEGS, metadata={"ticket": 48213}))
    assert code == 422 and err["errors"] == {"metadata": {"ticket": {"value": [
        "Not a valid string."]}}}
    assert stack.redis.xlen(stack.store.keys.jobs) == before
    stack.http("DELETE", f"/voice/call/callback/{created['id']}")
    stack.wait_for(created["id"], "completed", "cancelled", "failed")


def callback_of_job(s: Any, entry: str, timeout_s: float = 5.0) -> str | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cid := s.redis.get(f"fsctl:job:{entry}"):
            return cid
        if any(f["entry_id"] == entry for _, f in s.redis.xrange(s.store.keys.dead)):
            return None
        gevent.sleep(0.05)
    raise AssertionError(f"job {entry} was neither taken nor dead-lettered")


def test_a_redis_cli_job_carries_metadata_and_a_bad_one_is_dead_lettered(redis_url) -> None:
    from stack import Stack

    s = Stack(redis_url, None)
    try:
        entry = s.redis.xadd(s.store.keys.jobs, {"request": json.dumps(dict(LEGS, metadata=GIVEN))})
        cid = callback_of_job(s, entry)
        assert cid is not None
        rec = s.wait_for(cid, "bridged")
        assert rec["metadata"] == GIVEN
        s.kill(rec["legs"]["B"]["uuid"])
        assert s.wait_for(cid, "completed")["metadata"] == GIVEN
        bad = s.redis.xadd(s.store.keys.jobs, {"request": json.dumps(
            dict(LEGS, metadata={"n": "x" * 300}))})
        assert callback_of_job(s, bad) is None
        dead = [f for _, f in s.redis.xrange(s.store.keys.dead) if f["entry_id"] == bad]
        assert len(dead) == 1 and "at most 256 characters, not 300" in dead[0]["reason"]
    finally:
        s.close()
