"""Scheduled callbacks: ``not_before`` / ``not_after`` (RFC 3339 with an offset), listed as
``scheduled``, cancellable, started within 1 s of their time, ``expired`` once their window
has passed, kept in Redis across restarts."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import gevent
import pytest
from marshmallow import ValidationError
from stack import Stack

from fsctl import schemas

LEGS = {"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}}
PARIS = timezone(timedelta(hours=1))
FS_CLOCK_LAG_S = 0.05
"""FreeSWITCH stamps events with its timer thread's cached time, a few ms behind the host's
clock: a CHANNEL_CREATE of an originate sent after not_before (by the host's clock) was
stamped 3-11 ms before it on 1.11. A start that early by FreeSWITCH's clock is on time."""


def at(delay_s: float, tz: timezone = PARIS) -> str:
    """RFC 3339, with an offset, ``delay_s`` from now."""
    return (datetime.now(UTC) + timedelta(seconds=delay_s)).astimezone(tz).isoformat()


def errors_of(**fields: Any) -> dict[str, Any]:
    with pytest.raises(ValidationError) as exc:
        schemas.REQUEST_SCHEMA.load(dict(LEGS, **fields))
    return exc.value.messages


def test_the_window_must_be_aware_ordered_and_not_over() -> None:
    when = schemas._WHEN
    assert errors_of(not_before="2026-12-02T10:00:00") == {"not_before": [when]}
    assert errors_of(not_before="tomorrow") == {"not_before": [when]}
    assert errors_of(not_after=at(-5)) == {"not_after": ["has already passed"]}
    assert errors_of(not_before=at(60), not_after=at(30)) == {
        "not_after": ["must be later than not_before"]}
    assert errors_of(not_before=at(31 * 86400)) == {"not_before": ["at most 30 days ahead"]}
    req = schemas.REQUEST_SCHEMA.load(dict(LEGS, not_before=at(60), not_after=at(120)))
    assert req["not_before"].utcoffset() == timedelta(hours=1)


class Creations:
    """When FreeSWITCH created each channel (its CHANNEL_CREATE's own timestamp, on the wall
    clock of FreeSWITCH's host), seen on the test's own event connection: the moment the
    originate reached FreeSWITCH."""

    def __init__(self, s: Stack) -> None:
        from fsctl.esl import ESLClient

        self.at: dict[str, float] = {}
        self._esl = ESLClient(*s.target.admin)
        self._esl.on_event(self._seen)
        self._esl.connect()
        self._esl.subscribe(["CHANNEL_CREATE"])

    def _seen(self, ev: Any) -> None:
        from fsctl.events import event_ts

        self.at.setdefault(ev.get("Unique-ID"), event_ts(ev))

    def of(self, uuid: str, timeout_s: float = 5.0) -> float:
        deadline = time.monotonic() + timeout_s
        while uuid not in self.at:
            assert time.monotonic() < deadline, f"no CHANNEL_CREATE of {uuid}"
            gevent.sleep(0.05)
        return self.at[uuid]

    def close(self) -> None:
        self._esl.close()


def test_a_scheduled_callback_waits_listed_and_starts_within_a_second_of_its_time(stack) -> None:
    creations = Creations(stack)
    try:
        not_before = time.time() + 2.0
        when = datetime.fromtimestamp(not_before, PARIS).isoformat()
        code, created, _ = stack.http("POST", "/voice/call/callback", dict(LEGS, not_before=when))
        assert code == 202 and created["state"] == "scheduled"
        assert created["not_before"] == pytest.approx(not_before, abs=1e-3)
        code, page, _ = stack.http("GET", "/voice/call/callback?state=scheduled")
        assert [i["id"] for i in page["items"]] == [created["id"]]
        rec = stack.wait_for(created["id"], "waiting", "bridged", timeout_s=10)
        started = creations.of(rec["legs"]["A"]["uuid"])
        assert -FS_CLOCK_LAG_S <= started - not_before < 1.0, started - not_before
        states = [h["state"] for h in rec["history"] if h["event"] == "state"]
        assert states[:3] == ["scheduled", "queued", "dialing"]
        rec = stack.wait_for(created["id"], "bridged")
        stack.http("DELETE", f"/voice/call/callback/{created['id']}")
        final = stack.wait_for(created["id"], "completed")
        stack.wait_no_channels({final["legs"]["A"]["uuid"], final["legs"]["B"]["uuid"]})
    finally:
        creations.close()


def test_a_cancelled_scheduled_callback_is_never_dialled(redis_url: str) -> None:
    s = Stack(redis_url, None)
    try:
        created = s.create(dict(LEGS, not_before=at(1.0)))
        code, cancelled, _ = s.http("DELETE", f"/voice/call/callback/{created['id']}")
        assert code == 200 and cancelled["state"] == "cancelled"
        gevent.sleep(2.0)
        assert s.get(created["id"])["state"] == "cancelled"
        assert not [c for c in s.sim.commands if "originate" in c.text]
        assert s.redis.zcard(s.store.keys.scheduled) == 0
    finally:
        s.close()


def test_kept_in_redis_with_no_worker_and_expired_once_its_window_passed(redis_url: str) -> None:
    s = Stack(redis_url, None, start_worker=False)
    try:
        late = s.create(dict(LEGS, not_before=at(0.5), not_after=at(1.0)))
        later = s.create({"leg_A": {"to": "1000131"}, "leg_B": {"to": "1000132"},
                          "not_before": at(3.0)})
        gevent.sleep(1.5)  # late's window passes while no worker runs
        assert s.get(late["id"])["state"] == "scheduled"
        creations = Creations(s)
        s.start_worker()  # a worker (re)started: what Redis kept is done as asked
        final = s.wait_for(late["id"], "failed", timeout_s=5)
        assert final["outcome"] == "expired"
        rec = s.wait_for(later["id"], "waiting", "bridged", timeout_s=10)
        assert creations.of(rec["legs"]["A"]["uuid"]) >= later["not_before"] - FS_CLOCK_LAG_S
        creations.close()
        dialled = {c.text.split("fsctl_callback_id=")[1].split(",")[0]
                   for c in s.sim.commands if "originate" in c.text}
        assert dialled == {later["id"]}
    finally:
        s.close()


def test_a_redis_cli_job_can_be_scheduled_too(redis_url: str) -> None:
    s = Stack(redis_url, None)
    try:
        creations = Creations(s)
        not_before = time.time() + 1.5
        body = dict(LEGS, not_before=datetime.fromtimestamp(not_before, UTC).isoformat())
        entry = s.redis.xadd(s.store.keys.jobs, {"request": json.dumps(body)})
        deadline = time.monotonic() + 5
        while not (cid := s.redis.get(f"fsctl:job:{entry}")):
            assert time.monotonic() < deadline
            gevent.sleep(0.05)
        assert s.get(cid)["state"] == "scheduled"
        rec = s.wait_for(cid, "waiting", "bridged", timeout_s=10)
        assert -FS_CLOCK_LAG_S <= creations.of(rec["legs"]["A"]["uuid"]) - not_before < 1.0
        creations.close()
        s.kill(rec["legs"]["A"]["uuid"])
        s.wait_for(cid, "completed", "failed")
    finally:
        s.close()
