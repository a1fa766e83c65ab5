"""Reliability in one process: connection loss, black hole, FreeSWITCH restart, orphans,
reclaim by another worker. (The kill -9 scenarios with real processes are in tests/faults.)

Tests on ``node_stack`` run on the simulator in ``make test`` and on the real FreeSWITCH in
``make test-freeswitch``; those on ``sim_stack`` cut the simulator's own connections."""

from __future__ import annotations

import time
import uuid

import gevent
import pytest
import redis
from stack import Stack
from support import esl_target

from fsctl.simulator import SimConfig
from fsctl.worker import Worker

pytestmark = pytest.mark.integration


@pytest.fixture
def sim_stack(redis_url: str):
    """Always the simulator: these tests break the connection on purpose."""
    s = Stack(redis_url, None, sim_config=SimConfig(answer_delay_s=0.3, talk_s=None),
              esl_ping_s=0.5, reclaim_idle_s=2.0, sweep_interval_s=0.5)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def node_stack(redis_url: str, freeswitch_node):
    """The simulator, or the real FreeSWITCH of --freeswitch: FreeSWITCH decides these."""
    s = Stack(redis_url, esl_target(), sim_config=SimConfig(answer_delay_s=0.3, talk_s=None),
              esl_ping_s=0.5, reclaim_idle_s=2.0, sweep_interval_s=0.5)
    s.node = freeswitch_node  # the real FreeSWITCH process, or None
    try:
        yield s
    finally:
        s.close()


def restart_freeswitch(s: Stack) -> None:
    """A FreeSWITCH crash and restart: every channel gone, a new Core-UUID."""
    if s.sim is not None:
        s.sim.restart()
    else:
        s.node.restart()


def wait_until(predicate, timeout_s: float, what: str) -> float:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        gevent.sleep(0.02)
    return time.monotonic() - t0


def test_dropped_connection_is_reconnected_and_calls_go_on(sim_stack) -> None:
    s = sim_stack
    rec = s.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125", "route": "slow"}})
    rec = s.wait_for(rec["id"], "waiting")
    connects = s.worker.link.connects
    s.sim.drop_connections()
    took = wait_until(lambda: s.worker.link.connects > connects and s.worker.link.up.is_set(),
                      3, "reconnect")
    assert took < 2.0
    # the callback survived the drop: it can still be cancelled, both legs hung up
    s.http("DELETE", f"/voice/call/callback/{rec['id']}")
    rec = s.wait_for(rec["id"], "cancelled")
    s.wait_no_channels({rec["legs"]["A"]["uuid"], rec["legs"]["B"]["uuid"]})
    # a new callback works on the new connection
    rec2 = s.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000126"}})
    s.wait_for(rec2["id"], "bridged", timeout_s=5)


def test_events_missed_during_an_outage_are_reconciled(sim_stack) -> None:
    s = sim_stack
    rec = s.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125", "route": "ring"}})
    rec = s.wait_for(rec["id"], "waiting")
    # B's originate answered and B ringing (it rings 0.8 s): a command cut off by the drop
    # below would fail its call, which is not what this test is about
    s.wait_leg(rec["id"], "B", "ringing", timeout_s=0.7)
    s.sim.blackhole = True  # B answers and parks while the worker hears nothing
    gevent.sleep(1.5)
    s.sim.blackhole = False
    s.sim.drop_connections()
    rec = s.wait_for(rec["id"], "bridged", timeout_s=6)
    assert rec["legs"]["B"]["state"] == "bridged"


def test_black_holed_connection_is_noticed_within_3s(sim_stack) -> None:
    s = sim_stack
    wait_until(s.worker.link.up.is_set, 3, "first connect")
    connects = s.worker.link.connects
    s.sim.blackhole = True
    took = wait_until(lambda: not s.worker.link.up.is_set(), 4, "loss detected")
    assert took <= 3.0, took
    s.sim.blackhole = False
    back = wait_until(lambda: s.worker.link.up.is_set() and s.worker.link.connects > connects,
                      4, "reconnect")
    assert back < 2.5
    rec = s.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000126"}})
    s.wait_for(rec["id"], "bridged", timeout_s=5)


@pytest.mark.freeswitch
def test_freeswitch_restart_ends_live_callbacks_clearly(node_stack) -> None:
    s = node_stack
    rec = s.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}})
    s.wait_for(rec["id"], "bridged")
    waiting = s.create({"leg_A": {"to": "1000127"}, "leg_B": {"to": "1000128", "route": "slow"}})
    s.wait_for(waiting["id"], "waiting")
    restart_freeswitch(s)
    for cid in (rec["id"], waiting["id"]):
        final = s.wait_for(cid, "failed", timeout_s=5)
        assert final["outcome"] == "freeswitch_restarted"
        assert all(leg["state"] in ("hungup", "pending") for leg in final["legs"].values())
    assert s.channels() == []


@pytest.mark.freeswitch
def test_sweeper_hangs_up_orphans_of_finished_or_unknown_callbacks(node_stack) -> None:
    s = node_stack
    s.watch_creates()
    foreign = str(uuid.uuid4())
    s.esl.bgapi(f"originate {{origination_uuid={foreign}}}null/1000998 &park()", str(uuid.uuid4()))
    wait_until(lambda: foreign in {r["uuid"] for r in s.channels()}, 2, "the foreign channel")
    orphan = str(uuid.uuid4())
    s.esl.bgapi(f"originate {{origination_uuid={orphan},fsctl_callback_id={'e' * 32},"
                f"fsctl_leg=A}}null/1000999 &park()", str(uuid.uuid4()))
    wait_until(lambda: orphan in {u for _, _, u in s.created}, 2, "the orphan to exist")
    wait_until(lambda: orphan not in {r["uuid"] for r in s.channels()}, 4, "orphan hung up")
    gevent.sleep(2 * s.settings.sweep_interval_s)
    assert foreign in {r["uuid"] for r in s.channels()}  # not fsctl's: left alone
    s.kill(foreign)


@pytest.mark.freeswitch
def test_a_channel_with_an_odd_uuid_does_not_stop_the_sweeper(node_stack) -> None:
    s = node_stack
    odd = str(uuid.uuid4()).upper()  # someone else's channel; fsctl refuses to name it
    s.esl.bgapi(f"originate {{origination_uuid={odd}}}null/1000998 &park()", str(uuid.uuid4()))
    wait_until(lambda: odd in {r["uuid"] for r in s.channels()}, 2, "the odd channel")
    gevent.sleep(3 * s.settings.sweep_interval_s)  # a few sweeps pass over it
    orphan = str(uuid.uuid4())
    s.esl.bgapi(f"originate {{origination_uuid={orphan},fsctl_callback_id={'e' * 32},"
                f"fsctl_leg=A}}null/1000999 &park()", str(uuid.uuid4()))
    wait_until(lambda: orphan not in {r["uuid"] for r in s.channels()}, 4, "orphan hung up")
    assert odd in {r["uuid"] for r in s.channels()}  # not fsctl's: left alone
    s.kill(odd)


@pytest.mark.freeswitch
def test_a_dead_workers_live_callback_is_adopted_not_redialled(node_stack, redis_url) -> None:
    s = node_stack
    s.watch_creates()
    rec = s.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125", "route": "slow"}})
    rec = s.wait_for(rec["id"], "waiting")
    kill_worker(s.worker)
    # another worker on the same node takes the job over after reclaim_idle_s
    heir = Worker(s.settings, s.store, name="heir")
    heir.start()
    s.worker = heir
    wait_until(lambda: rec["id"] in heir.live, 8, "adoption")
    assert s.redis.get(s.store.keys.callback(rec["id"]))  # the record survived
    assert heir.live[rec["id"]].worker == "heir"
    gevent.sleep(1.0)
    assert s.dials(rec["id"]) == {"A": 1, "B": 1}  # once each: nothing dialled again
    s.http("DELETE", f"/voice/call/callback/{rec['id']}")
    final = s.wait_for(rec["id"], "cancelled")
    s.wait_no_channels({final["legs"]["A"]["uuid"], final["legs"]["B"]["uuid"]})
    s.wait_leg(rec["id"], "A", "hungup")
    wait_until(lambda: s.redis.xpending(s.store.keys.jobs, "workers")["pending"] == 0, 3,
               "job acknowledged")


def kill_worker(worker: Worker) -> None:
    """The worker "dies": its loops stop, nothing is flushed or acknowledged any more."""
    worker.stopping.set()
    worker.draining.set()
    worker.link.stop()
    gevent.joinall(worker._greenlets, timeout=3)


@pytest.mark.freeswitch
def test_a_cancel_sent_while_no_worker_listens_is_carried_out_on_adoption(node_stack) -> None:
    s = node_stack
    rec = s.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125", "route": "slow"}})
    rec = s.wait_for(rec["id"], "waiting")
    kill_worker(s.worker)
    code, reply, _ = s.http("DELETE", f"/voice/call/callback/{rec['id']}")
    assert code == 202 and reply["state"] == "waiting"  # live: only a worker can hang it up
    gevent.sleep(0.5)  # the control stream's announcement is long gone when the heir starts
    heir = Worker(s.settings, s.store, name="heir")
    heir.start()
    s.worker = heir
    final = s.wait_for(rec["id"], "cancelled", timeout_s=10)
    assert "bridged" not in [h.get("state") for h in final["history"] if h["event"] == "state"]
    assert "bridged" not in final["legs"]["B"]["times"]
    s.wait_no_channels({final["legs"]["A"]["uuid"], final["legs"]["B"]["uuid"]})


@pytest.mark.freeswitch
def test_a_job_left_pending_by_a_redis_error_is_retried_by_its_own_worker(node_stack) -> None:
    s = node_stack
    real = s.store.swap_many
    failed: list[str] = []

    def swap_many_failing_once(items):
        if not failed:
            failed.extend(callback_id for callback_id, _change, _known in items)
            raise redis.ConnectionError("injected: Redis went away during the claim")
        return real(items)

    s.store.swap_many = swap_many_failing_once  # the worker and the API share this store
    rec = s.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}})
    wait_until(lambda: failed, 5, "the injected failure")
    assert s.get(rec["id"])["state"] == "queued"
    # no other worker exists: only its own worker can take the job again (after reclaim_idle_s)
    s.wait_for(rec["id"], "bridged", timeout_s=10)


@pytest.mark.freeswitch
def test_a_start_interrupted_by_a_redis_error_is_tried_again(node_stack) -> None:
    """The claim went through; Redis failed when the callback was to start (its compare-and-
    set before the first originate): it is started as soon as Redis answers, once."""
    s = node_stack
    real = s.store.swap_many
    calls: list[list[str]] = []

    def swap_many_failing_first(items):
        calls.append([callback_id for callback_id, _change, _known in items])
        if len(calls) == 1:
            raise redis.ConnectionError("injected: Redis went away when the callback started")
        return real(items)

    s.store.swap_many = swap_many_failing_first
    s.watch_creates()
    rec = s.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}})
    rec = s.wait_for(rec["id"], "bridged", timeout_s=5)
    assert calls[:2] == [[rec["id"]], [rec["id"]]]  # the failed start, the start again
    gevent.sleep(0.5)
    assert s.dials(rec["id"]) == {"A": 1, "B": 1}


def test_redis_outage_gives_503_and_the_worker_resumes(tmp_path) -> None:
    """Redis killed and restarted (same port, AOF): no 202 without a durable write, no loss."""
    from fsctl.embedded import free_port, start_redis

    port = free_port()
    proc = start_redis(port, tmp_path / "redis")
    s = Stack(f"redis://127.0.0.1:{port}/0", None,
              sim_config=SimConfig(answer_delay_s=0.3, talk_s=None), esl_ping_s=0.5)
    try:
        before = s.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125", "route": "slow"}})
        s.wait_for(before["id"], "waiting")
        gevent.sleep(1.2)  # AOF everysec: let the last writes reach the disk
        proc.kill()
        proc.wait()
        code, _reply, headers = s.http("POST", "/voice/call/callback",
                                      {"leg_A": {"to": "1000127"}, "leg_B": {"to": "1000128"}})
        assert code == 503 and headers.get("Retry-After") == "1"
        s.http("DELETE", f"/voice/call/callback/{before['id']}")  # 503 too: nothing recorded
        gevent.sleep(1.0)
        proc = start_redis(port, tmp_path / "redis")
        t0 = time.monotonic()
        rec = s.create({"leg_A": {"to": "1000127"}, "leg_B": {"to": "1000128"}})
        s.wait_for(rec["id"], "bridged", timeout_s=6)
        assert time.monotonic() - t0 < 4  # resumed well within 2 s of Redis + the call itself
        old = s.get(before["id"])
        assert old["state"] == "waiting"  # nothing lost across the outage
        s.http("DELETE", f"/voice/call/callback/{before['id']}")
        s.wait_for(before["id"], "cancelled")
    finally:
        s.close()
        proc.kill()
        proc.wait()


@pytest.fixture
def bounded_talk(redis_url: str, freeswitch_node):
    """Parties that never hang up, and calls bounded to 2 s of talk (simulator or real)."""
    s = Stack(redis_url, esl_target(), sim_config=SimConfig(answer_delay_s=0.3, talk_s=None),
              sweep_interval_s=0.5, max_talk_s=2)
    try:
        yield s
    finally:
        s.close()


def talk_until_the_bound(s: Stack) -> dict:
    rec = s.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}})
    s.wait_for(rec["id"], "bridged")
    final = s.wait_for(rec["id"], "completed", timeout_s=10)
    # FreeSWITCH's scheduler counts whole seconds: sched_hangup +2 fires 1 to 2 s after the
    # command, and the command goes out with uuid_bridge, before the bridge that talk time
    # counts from (on a loaded box tens of ms before it: 0.96 s was seen)
    assert 0.5 <= final["talk_time_s"] < 6, final["talk_time_s"]
    s.wait_no_channels({final["legs"]["A"]["uuid"], final["legs"]["B"]["uuid"]})
    return final


@pytest.mark.freeswitch
def test_freeswitch_hangs_up_a_call_bridged_longer_than_max_talk_s(bounded_talk) -> None:
    final = talk_until_the_bound(bounded_talk)
    assert {final["legs"][leg]["hangup_cause"] for leg in "AB"} & {"ALLOTTED_TIMEOUT"}


@pytest.mark.freeswitch
def test_the_sweep_hangs_it_up_when_freeswitch_was_not_asked_to(bounded_talk) -> None:
    bounded_talk.worker.commander.talk_bounds = lambda uuids: []  # sched_hangup never sent
    final = talk_until_the_bound(bounded_talk)
    reasons = [h.get("reason") for h in final["history"] if h["event"] == "hangup_requested"]
    assert "max_talk_time" in reasons


@pytest.mark.freeswitch
def test_freeswitch_ends_an_overlong_call_even_with_no_worker_left(bounded_talk) -> None:
    s = bounded_talk
    rec = s.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}})
    rec = s.wait_for(rec["id"], "bridged")
    kill_worker(s.worker)  # nobody is left to sweep
    uuids = {rec["legs"]["A"]["uuid"], rec["legs"]["B"]["uuid"]}
    t0 = time.monotonic()
    s.wait_no_channels(uuids, timeout_s=6)
    assert time.monotonic() - t0 < 4  # FreeSWITCH's sched_hangup +2, not a park timeout
    if s.sim is not None:
        sent = [c.text for c in s.sim.commands if c.text.startswith("api sched_hangup")]
        assert {t.split()[3] for t in sent} == uuids and all(" +2 " in t for t in sent), sent


def test_final_states_redis_could_not_take_are_spooled_and_written_on_restart(tmp_path) -> None:
    """What Ctrl-C on `make run` did: Redis stopped first, the call ended during the outage,
    then the worker stopped, then everything came back with a new FreeSWITCH. The record must
    say what happened (completed, its talk time), not a guess (failed/freeswitch_restarted)."""
    from fsctl.embedded import free_port, start_redis

    port = free_port()
    proc = start_redis(port, tmp_path / "redis")
    s = Stack(f"redis://127.0.0.1:{port}/0", None,
              sim_config=SimConfig(answer_delay_s=0.3, talk_s=None), spool_dir=str(tmp_path))
    try:
        rec = s.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}})
        rec = s.wait_for(rec["id"], "bridged")
        gevent.sleep(1.2)  # AOF everysec: the bridged record is on disk
        proc.kill()
        proc.wait()
        gevent.sleep(1.0)
        s.kill(rec["legs"]["B"]["uuid"])  # the far end hangs up during the outage
        wait_until(lambda: s.worker.live == {}, 3, "the callback to end in the worker")
        s.worker.stop()  # Redis still down: the final state goes to the spool
        spool = tmp_path / "test-worker.json"
        assert spool.is_file()
        proc = start_redis(port, tmp_path / "redis")
        assert s.get(rec["id"])["state"] == "bridged"  # what Redis had
        s.sim.restart()  # and FreeSWITCH came back as a new one
        s.start_worker()
        final = s.wait_for(rec["id"], "completed", timeout_s=5)
        assert final["outcome"] == "completed" and final["talk_time_s"] >= 2.0
        assert final["legs"]["B"]["hangup_cause"] == "NORMAL_CLEARING"
        assert not spool.exists()
        wait_until(lambda: s.redis.xpending(s.store.keys.jobs, "workers")["pending"] == 0, 5,
                   "the job acknowledged")
        assert s.get(rec["id"])["outcome"] == "completed"  # adoption did not overwrite it
    finally:
        s.close()
        proc.kill()
        proc.wait()
