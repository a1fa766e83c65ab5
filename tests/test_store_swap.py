"""Compare-and-set of records (fsctl.store: swap, swap_many) against a real redis-server.

The worker claims and starts callbacks in batches: one read of the records it does not
know, then one pipeline of compare-and-set scripts. A record that changed in between is read
again and judged again, never overwritten; the state indexes move with the record; a
script Redis lost (a restart flushes them) is loaded again.
"""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from fsctl.model import Callback, Leg
from fsctl.store import Store, connect

pytestmark = pytest.mark.integration


def make(i: int) -> Callback:
    def leg(to: str) -> Leg:
        return Leg(to=to, from_="1000125", uuid=str(uuid.uuid4()), job_uuid=str(uuid.uuid4()),
                   route="default", ring_timeout_s=30)
    return Callback(id=uuid.uuid4().hex, legs={"A": leg(f"2{i:07d}"), "B": leg(f"3{i:07d}")},
                    created_at=time.time())


@pytest.fixture
def store(redis_url: str) -> Store:
    return Store(connect(redis_url))


def stored(store: Store, cbs: list[Callback]) -> None:
    store.save_many([(cb, None) for cb in cbs])
    for cb in cbs:
        store.r.zadd(store.keys.state(cb.state), {cb.id: cb.created_at})


def to_dialing(cb: Callback) -> bool:
    if cb.state != "queued":
        return False
    cb.state = "dialing"
    return True


def test_a_batch_moves_every_record_and_its_state_index(store: Store) -> None:
    cbs = [make(i) for i in range(5)]
    stored(store, cbs)
    results = store.swap_many([(cb.id, to_dialing, None) for cb in cbs])
    assert [fresh.state for fresh, _raw in results] == ["dialing"] * 5
    for cb, (_fresh, raw) in zip(cbs, results, strict=True):
        assert store.r.get(store.keys.callback(cb.id)) == raw.decode()  # what to pass as known
        assert store.get(cb.id).state == "dialing"
    assert store.r.zcard(store.keys.state("queued")) == 0
    assert store.r.zcard(store.keys.state("dialing")) == 5


def test_a_known_copy_that_is_stale_is_read_again_and_judged_again(store: Store) -> None:
    cbs = [make(i) for i in range(3)]
    stored(store, cbs)
    claimed = store.swap_many([(cb.id, lambda c: True, None) for cb in cbs])
    known = [raw for _fresh, raw in claimed]
    # someone else (the API's cancel) ends the second one after our claim
    store.update_if(cbs[1].id, lambda c: setattr(c, "state", "cancelled") or True)
    results = store.swap_many([(cb.id, to_dialing, raw)
                               for cb, raw in zip(cbs, known, strict=True)])
    assert [fresh.state for fresh, _raw in results] == ["dialing", "cancelled", "dialing"]
    assert store.get(cbs[1].id).state == "cancelled"  # not overwritten by the stale copy


def test_a_missing_record_comes_back_as_none_and_the_others_go_through(store: Store) -> None:
    cbs = [make(i) for i in range(2)]
    stored(store, cbs[:1])
    results = store.swap_many([(cb.id, to_dialing, None) for cb in cbs])
    assert results[0][0].state == "dialing"
    assert results[1] == (None, None)


def test_scripts_lost_by_redis_are_loaded_again(store: Store) -> None:
    cbs = [make(i) for i in range(3)]
    stored(store, cbs)
    store.r.script_flush()  # as after a restart of Redis
    results = store.swap_many([(cb.id, to_dialing, None) for cb in cbs])
    assert [fresh.state for fresh, _raw in results] == ["dialing"] * 3
    store.r.script_flush()
    fresh, _raw = store.swap(cbs[0].id, lambda c: setattr(c, "state", "waiting") or True)
    assert fresh.state == "waiting" and store.get(cbs[0].id).state == "waiting"


def test_the_recorder_says_when_work_comes_and_keeps_it_when_a_flush_fails(
        store: Store) -> None:
    """The worker's flush loop sleeps while the recorder is idle: the recorder wakes it on
    the first change, the first ack and the first outcome, and a failed write leaves the
    work in place (and wakes it again)."""
    from fsctl.recorder import Recorder

    woken: list[int] = []
    rec = Recorder(store, lambda: woken.append(1))
    assert rec.idle and not woken
    a, b = make(1), make(2)
    rec.mark(a)
    rec.mark(b)  # already awake: one call for the first change only
    assert len(woken) == 1 and not rec.idle
    rec.flush()
    assert rec.idle and store.get(a.id) is not None and store.get(b.id) is not None
    rec.ack_later("0-1")
    rec.count_outcome("completed:completed")
    assert len(woken) == 3 and not rec.idle
    rec.flush()
    assert rec.idle
    broken = Recorder(Store(connect("redis://127.0.0.1:1/0")), lambda: woken.append(1))
    broken.mark(make(3))
    with pytest.raises(redis.RedisError):
        broken.flush()
    assert not broken.idle and len(woken) == 5  # the mark, then the failed flush
