"""What happens at a node's limits, through real processes' parts (Redis, the API over HTTP,
the worker, the simulator or the real FreeSWITCH): a callback waits ``queued`` while its node
is full and goes when there is room; one that no node can take in time ends ``expired``
instead of being dialled late; another client using up FreeSWITCH's session rate makes
fsctl's originates fail, and they are dialled again, never blamed on the callee."""

from __future__ import annotations

import time
import uuid

import gevent
import pytest
from stack import Stack
from support import EslTarget, esl_target

from fsctl.embedded import free_port
from fsctl.simulator import SimConfig

pytestmark = pytest.mark.integration

LONG = SimConfig(answer_delay_s=0.3, talk_s=None)
"""Simulated far ends that never hang up (like the real FreeSWITCH's null/ legs)."""


def body(a: str = "1000123", b: str = "1000125", **extra: object) -> dict:
    return {"leg_A": {"to": a}, "leg_B": {"to": b}, **extra}


def stays(s: Stack, callback_id: str, state: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rec = s.get(callback_id)
        assert rec["state"] == state, rec
        gevent.sleep(0.1)


@pytest.mark.freeswitch
def test_a_callback_waits_queued_while_its_node_is_full_then_goes(redis_url,
                                                                   freeswitch_node) -> None:
    s = Stack(redis_url, esl_target(), sim_config=LONG, sessions_max=2)
    try:
        first = s.create(body())
        s.wait_for(first["id"], "bridged", timeout_s=5)
        second = s.create(body("1000127", "1000128"))
        stays(s, second["id"], "queued", 1.5)  # both sessions are in use: it is not dialled
        rec = s.get(second["id"])
        assert all(leg["state"] == "pending" and leg["attempts"] == 0
                   for leg in rec["legs"].values())
        s.http("DELETE", f"/voice/call/callback/{first['id']}")
        s.wait_for(first["id"], "completed")
        s.wait_for(second["id"], "bridged", timeout_s=5)  # room again: it goes
        s.http("DELETE", f"/voice/call/callback/{second['id']}")
        rec = s.wait_for(second["id"], "completed")
        s.wait_no_channels({leg["uuid"] for leg in rec["legs"].values()})
    finally:
        s.close()


def test_a_callback_no_node_can_take_in_time_expires_and_is_never_dialled(redis_url) -> None:
    nowhere = EslTarget("127.0.0.1", free_port(), "no-freeswitch-here")
    s = Stack(redis_url, nowhere, queue_timeout_s=2.0)
    try:
        rec = s.create(body())
        assert not s.worker.link.up.is_set()
        rec = s.wait_for(rec["id"], "failed", timeout_s=6)
        assert rec["outcome"] == "expired"
        assert 2.0 <= rec["ended_at"] - rec["created_at"] < 4.5
        assert all(leg["state"] == "pending" and leg["times"] == {}
                   for leg in rec["legs"].values())
        assert s.redis.get("fsctl:dest:1000123") == "0"  # nobody was rung: the count is back
    finally:
        s.close()


def test_a_redis_cli_job_waits_from_when_it_was_added(redis_url) -> None:
    """A job pushed while no worker ran is expired on the first worker's arrival, not dialled."""
    import json

    s = Stack(redis_url, None, start_worker=False, queue_timeout_s=1.0)
    try:
        entry = s.redis.xadd("fsctl:jobs", {"request": json.dumps(body())})
        gevent.sleep(1.5)
        s.start_worker()
        deadline = time.monotonic() + 5
        while not s.redis.get(f"fsctl:job:{entry}"):
            assert time.monotonic() < deadline, "the job was not taken"
            gevent.sleep(0.05)
        rec = s.wait_for(s.redis.get(f"fsctl:job:{entry}"), "failed", timeout_s=5)
        assert rec["outcome"] == "expired"
        assert not [c for c in s.sim.commands if "originate" in c.text]
    finally:
        s.close()


def test_a_full_node_leaves_new_callbacks_to_a_node_with_room(redis_url) -> None:
    """Two nodes: node 1 is full (its one callback uses its two sessions), node 2 has room:
    node 2's worker takes the next callback at once."""
    from fsctl.simulator import Simulator
    from fsctl.worker import Worker

    s = Stack(redis_url, None, sim_config=LONG, sessions_max=2)
    other = Simulator(LONG, password="sim-secret").start()
    import dataclasses

    w2 = Worker(dataclasses.replace(s.settings, esl_port=other.port), s.store, name="node-2")
    try:
        first = s.create(body())
        rec = s.wait_for(first["id"], "bridged", timeout_s=5)
        assert rec["legs"]["A"]["uuid"] in {ch.uuid for ch in s.sim.model.channels.values()}
        w2.start()
        second = s.create(body("1000127", "1000128"))
        s.wait_for(second["id"], "bridged", timeout_s=5)
        assert s.store.get(second["id"]).node == f"127.0.0.1:{other.port}"
    finally:
        w2.stop()
        other.stop()
        s.close()


@pytest.mark.freeswitch
def test_another_client_using_up_the_session_rate_never_fails_a_callback(stack) -> None:
    """Someone else's bursts take FreeSWITCH's whole sessions-per-second for a moment, twice,
    while fsctl dials: fsctl's refused legs are dialled again and every callback completes."""

    def hog() -> None:  # 40 one-shot null legs at once: more than a second allows (30)
        for _ in range(2):
            for _ in range(40):
                stack.esl.bgapi("originate null/1000999 &hangup()", str(uuid.uuid4()))
            gevent.sleep(1.2)

    ids = [stack.create(body(f"10001{i:02d}", f"10002{i:02d}"))["id"] for i in range(20)]
    hogger = gevent.spawn_later(0.2, hog)
    try:
        bridged = [stack.wait_for(i, "bridged", "failed", timeout_s=30) for i in ids]
    finally:
        hogger.join(timeout=10)
    assert [r["state"] for r in bridged] == ["bridged"] * len(ids), \
        [(r["state"], r["outcome"]) for r in bridged]
    attempts = [leg["attempts"] for r in bridged for leg in r["legs"].values()]
    assert max(attempts) >= 2, attempts  # some legs were refused, and dialled again
    assert [h for r in bridged for h in r["history"] if h["event"] == "throttled"]
    for cid in ids:
        stack.http("DELETE", f"/voice/call/callback/{cid}")
    for cid in ids:
        rec = stack.wait_for(cid, "completed")
        stack.wait_no_channels({leg["uuid"] for leg in rec["legs"].values()})
