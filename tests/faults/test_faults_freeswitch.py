"""Fault scenarios on a real FreeSWITCH (``make test-freeswitch``; see realnode.py).

The same promise as test_faults.py — every request that got a 202 ends in exactly one final
state, no leg is dialled twice, no channel tagged by fsctl outlives its callback — with a real
FreeSWITCH 1.11 (tests/realfs.py) in place of the simulator and the sipp switchboard
(tests/sipp.py) as every SIP far end. The worker logs in as the restricted user
fsctl@fsctl.local. "Dialled twice" is counted from FreeSWITCH's side (an observer's
CHANNEL_CREATE and BACKGROUND_JOB events); orphans are live channels tagged
fsctl_callback_id after the settle time. Each scenario starts its own FreeSWITCH, sipp and
Redis and adds one row to var/faults-freeswitch-report.txt (printed at the end):

    scenario | submitted | completed | failed(outcomes) | cancelled | lost | dialled twice | orphans

Run: ``.venv/bin/python -m pytest --freeswitch tests/faults/test_faults_freeswitch.py``.
"""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest

from .harness import (
    RINGING,
    ROWS,
    VAR,
    Report,
    body,
    kill_leftovers,
    long_call,
    records,
    wait_records,
    wait_until,
)
from .realnode import (
    TALK1,
    TALK1_S,
    TALK3,
    TALK3_S,
    WAITS,
    WAITS2,
    FreeSwitchCluster,
    kill_real_leftovers,
)
from .scenarios import (
    clusters,
    expect,
    ids,
    leg_is,
    reconnect_time,
    report_rows,
    state_is,
    wait_mix,
)

pytestmark = [pytest.mark.integration, pytest.mark.real_freeswitch]

REPORT_PATH = VAR / "faults-freeswitch-report.txt"
SCENARIO_TIMEOUT_S = 100
"""Hard bound on one scenario (setup, faults, settle and checks); teardown kills everything."""
LONG_TALK_S = 8.0
"""sipp's long-talk far ends (LONGTALK, LONGTALK2) hang up 8 s after their answer."""


@pytest.fixture(scope="module", autouse=True)
def faults_report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield from report_rows(request, "fault scenarios on a real FreeSWITCH "
                           "(var/faults-freeswitch-report.txt)", REPORT_PATH, " on FreeSWITCH",
                           (kill_leftovers, kill_real_leftovers))


@pytest.fixture
def make_cluster() -> Iterator[Callable[[str], FreeSwitchCluster]]:
    yield from clusters(FreeSwitchCluster, SCENARIO_TIMEOUT_S)


# ---- helpers ------------------------------------------------------------------------------


def annotate(report: Report, *notes: str) -> None:
    """Add notes to a row already recorded by check() (found after it, from the records)."""
    old = report.row()
    report.notes.extend(notes)
    if old in ROWS:
        ROWS[ROWS.index(old)] = report.row()
    print(report.row())


def talks(recs: dict[str, dict[str, Any] | None]) -> str:
    return ", ".join("?" if not v or v.get("talk_time_s") is None else f"{v['talk_time_s']:.1f}s"
                     for v in recs.values())


def detail(rec: dict[str, Any] | None) -> str:
    """What a record says: state/outcome, talk time, each leg's state and hangup cause."""
    if rec is None:
        return "<no record>"
    legs = " ".join(f"{n}={leg['state']}/{leg.get('hangup_cause')}"
                    for n, leg in rec["legs"].items())
    talk = rec.get("talk_time_s")
    return (f"{rec['state']}/{rec.get('outcome')} talk={talk if talk is None else f'{talk:.2f}'}"
            f" {legs}" + (" inferred" if rec.get("inferred") else ""))


def not_completed(recs: dict[str, dict[str, Any] | None]) -> dict[str, str]:
    return {k: detail(v) for k, v in recs.items() if not v or v["state"] != "completed"}


def guessed_legs(recs: dict[str, dict[str, Any] | None]) -> dict[str, str]:
    """Records whose end was inferred (a leg ended ``LOST``, or ``inferred`` set): fsctl never
    learnt how those channels ended."""
    return {k: detail(v) for k, v in recs.items()
            if v and (v.get("inferred")
                      or any(leg.get("hangup_cause") == "LOST" for leg in v["legs"].values()))}


def talk_outside(recs: dict[str, dict[str, Any] | None], lo: float, hi: float) -> dict[str, str]:
    return {k: detail(v) for k, v in recs.items()
            if not v or v.get("talk_time_s") is None or not lo <= v["talk_time_s"] <= hi}


def survived(r: Any, report: Report, groups: dict[str, list[str]], what: str) -> list[str]:
    """The calls up at ``what``: each completed, none inferred (a leg ended LOST), and the
    bridged ones talked the far end's whole LONG_TALK_S (noted in the row)."""
    failures = []
    recs = records(r, [i for g in groups.values() for i in g])
    bad = not_completed(recs)
    if bad:
        failures.append(f"calls up at the {what} not completed: {bad}")
    bad = guessed_legs(recs)
    if bad:
        failures.append(f"calls up at the {what}: legs ended LOST (the real end never learnt): "
                        f"{bad}")
    bridged = records(r, groups["bridged"])
    annotate(report, f"bridged at the {what} talked {talks(bridged)}")
    bad = talk_outside(bridged, LONG_TALK_S - 2.0, LONG_TALK_S + 0.5)
    if bad:
        failures.append(f"bridged at the {what}: talk time not the far end's "
                        f"~{LONG_TALK_S:.0f}s: {bad}")
    return failures


def live_mix(load: Any) -> dict[str, list[str]]:
    """Callbacks that are bridged (8 s talk), waiting (A waits, B rings 8 s), A ringing (8 s).

    Unlike the simulator's, sipp's far ends count their talk time from their own answer: the
    waiting group's A leg is one that never hangs up by itself, so B's ringing is all it waits
    for."""
    return {
        "bridged": ids(load.burst([long_call() for _ in range(2)])),
        "waiting": ids(load.burst([body(a=WAITS, b=RINGING) for _ in range(2)])),
        "a_ringing": ids(load.burst([body(a=RINGING) for _ in range(2)])),
    }


# ---- 1. kill -9 the worker in every state ---------------------------------------------------


def test_01_worker_kill9_in_every_state(make_cluster: Callable[[str], FreeSwitchCluster]) -> None:
    c = make_cluster("R1 FreeSWITCH: worker kill -9 (queued, dialing, ringing, waiting, bridged)")
    c.start_all(sims=1, workers=1, apis=1)
    w1 = c.workers[0]
    load = c.load()
    r = c.redis.client()
    groups = {
        "dialing (slow A)": ids(load.burst([body(a_route="slow") for _ in range(2)])),
        "A ringing": ids(load.burst([body(a=RINGING) for _ in range(2)])),
        "waiting (B ringing)": ids(load.burst([body(a=WAITS, b=RINGING) for _ in range(2)])),
        "bridged": ids(load.burst([long_call() for _ in range(2)])),
    }
    wait_records(r, groups["dialing (slow A)"],
                 leg_is("A", "dialing", "ringing", cb_state="dialing"), 8, "dialing")
    wait_records(r, groups["A ringing"], leg_is("A", "ringing", cb_state="dialing"), 8, "ringing")
    wait_records(r, groups["waiting (B ringing)"], leg_is("B", "ringing", cb_state="waiting"), 8,
                 "waiting")
    wait_records(r, groups["bridged"], state_is("bridged"), 8, "bridged")
    c.log("kill -9 w1 with callbacks " + ", ".join(f"{k}: {len(v)}" for k, v in groups.items()))
    w1.kill9()
    queued = ids(load.burst([body() for _ in range(3)]))
    wait_records(r, queued, state_is("queued"), 2, "queued while no worker runs")
    gevent.sleep(1.0)
    c.log("starting the replacement worker w1 (same name, same node)")
    w1.start()
    report = c.check(load, settle_s=35)
    # every far end here answers, so the true outcome of each is "completed"
    expect(report, survived(r, report, {**groups, "queued": queued}, "kill"))


# ---- 2. FreeSWITCH kill -9 and restart with calls up --------------------------------------------


def test_02_freeswitch_kill9_restart(make_cluster: Callable[[str], FreeSwitchCluster]) -> None:
    c = make_cluster("R2 FreeSWITCH kill -9 + restart with calls up")
    c.start_all(sims=1, workers=1, apis=1)
    fs = c.nodes[0]
    w1 = c.workers[0]
    load = c.load()
    r = c.redis.client()
    groups = live_mix(load)
    wait_mix(c.redis.client(), groups)
    old_core = fs.core_uuid()
    c.log("kill -9 FreeSWITCH and start it again on the same ports")
    t_kill = time.time()
    fs.restart()
    c.log(f"FreeSWITCH ready again after {time.time() - t_kill:.2f}s")
    new_core = fs.core_uuid()
    live = [i for g in groups.values() for i in g]
    wait_records(r, live, state_is("failed", "completed", "cancelled"), 10,
                 "final after the restart")
    t_ended = time.time() - t_kill
    c.log(f"the calls live at the kill are final {t_ended:.2f}s after it")
    after = ids(load.burst([body() for _ in range(4)]))
    report = c.check(load, settle_s=30, notes=[f"live calls final {t_ended:.1f}s after the kill"])
    failures = []
    if old_core == new_core:
        failures.append("FreeSWITCH kept its Core-UUID")
    recs = records(r, live)
    wrong = {k: detail(v) for k, v in recs.items()
             if not v or v["state"] != "failed" or v.get("outcome") != "freeswitch_restarted"}
    if wrong:
        failures.append(f"callbacks live at the kill not failed/freeswitch_restarted: {wrong}")
    bad = not_completed(records(r, after))
    if bad:
        failures.append(f"callbacks after the restart not completed: {bad}")
    if not w1.alive:
        failures.append("the worker exited while FreeSWITCH was down")
    expect(report, failures)


# ---- 3. the event socket reset, then black-holed ----------------------------------------------


def esl_fault(c: FreeSwitchCluster, fault: str, deadline_s: float) -> tuple[Report, list[str]]:
    """Calls live in every state behind a proxy; apply ``fault``; send 4 more; check."""
    c.start_redis()
    fs = c.add_sim()
    c.add_api()
    proxy = c.add_proxy(fs)
    c.add_worker("w1", fs, proxy)
    load = c.load()
    r = c.redis.client()
    groups = live_mix(load)
    wait_mix(c.redis.client(), groups)
    before, t = len(proxy.accepted), time.time()
    c.log(f"{fault}: {getattr(proxy, fault)()} ESL connections")
    took = reconnect_time(proxy, before, t, 8)
    c.log(f"worker noticed and reconnected after {took}s")
    after = ids(load.burst([body() for _ in range(4)]))
    if fault == "blackhole":
        gevent.sleep(max(0.0, 6.0 - (time.time() - t)))
        proxy.restore()
        c.log("black hole restored (old connections flow again, if anyone still uses them)")
    report = c.check(load, settle_s=30, notes=[f"reconnect {took:.2f}s" if took is not None
                                               else "no reconnect"])
    failures = []
    if took is None or took > deadline_s:
        failures.append(f"the worker did not notice the {fault} and reconnect within "
                        f"{deadline_s}s (took {took})")
    failures += survived(r, report, groups, fault)
    bad = not_completed(records(r, after))
    if bad:
        failures.append(f"callbacks sent after the {fault} not completed: {bad}")
    return report, failures


def test_03a_esl_connection_reset(make_cluster: Callable[[str], FreeSwitchCluster]) -> None:
    expect(*esl_fault(make_cluster("R3a FreeSWITCH: ESL connection reset by the proxy"),
                      "reset", 8.0))


def test_03b_esl_connection_blackholed(make_cluster: Callable[[str], FreeSwitchCluster]) -> None:
    # the bound of the simulator's scenario: a silent connection noticed within ~3 s (pings),
    # plus the reconnect itself
    expect(*esl_fault(make_cluster("R3b FreeSWITCH: ESL connection black-holed (sockets open)"),
                      "blackhole", 3.5))


# ---- 4. Redis stops before the worker while calls end (Ctrl-C on make run) --------------------


@pytest.mark.parametrize("redis_stop", ["sigterm", "kill9"])
def test_04_redis_stops_before_worker(make_cluster: Callable[[str], FreeSwitchCluster],
                                      redis_stop: str) -> None:
    """Redis goes first (SIGTERM, or kill -9), bridged calls end by themselves (far-end BYE)
    during the outage, the worker is stopped (SIGTERM), Redis comes back (same port, AOF),
    the worker is started again: the records must say what really happened — completed, the
    far end's hangup, its talk time, when it ended — not a guess made after the restart."""
    c = make_cluster(f"R4 FreeSWITCH: Redis {redis_stop} before the worker, calls end meanwhile")
    c.start_all(sims=1, workers=1, apis=1)
    fs = c.nodes[0]
    w1 = c.workers[0]
    load = c.load()
    r = c.redis.client()
    # a control call, ended (far-end BYE after 1 s) and written while Redis is up
    control = ids(load.burst([body(a=WAITS, b=TALK1)]))
    wait_records(r, control, state_is("completed", "failed"), 10, "final (control)")
    ending = ids(load.burst([body(a=WAITS2, b=TALK3) for _ in range(3)]))
    wait_records(r, ending, state_is("bridged"), 8, "bridged")
    t_bridged = time.time()
    c.log(f"{redis_stop} redis with {len(ending)} calls bridged (B hangs up {TALK3_S:.0f}s "
          "after its answer)")
    if redis_stop == "sigterm":
        redis_exit: int | None = c.redis.terminate(10)
    else:
        c.redis.kill9()
        redis_exit = c.redis.proc.returncode if c.redis.proc else None
    c.log(f"redis exited ({redis_exit})")
    wait_until(lambda: not fs.tagged_channels(), TALK3_S + 6, "the calls to end by themselves",
               0.1)
    t_ended = time.time()
    c.log(f"the calls ended by themselves {t_ended - t_bridged:.2f}s after they were bridged")
    gevent.sleep(1.0)  # the worker has the hangups (it cannot write them)
    c.log("SIGTERM the worker (Redis still down)")
    t_term = time.time()
    worker_exit = w1.terminate(25)
    stopped_in = time.time() - t_term
    c.log(f"worker exited with {worker_exit} after {stopped_in:.1f}s")
    gevent.sleep(0.5)
    c.redis.start()
    t_redis = time.time()
    c.log("redis started again (same port and data dir, AOF)")
    w1.start()
    c.log("worker w1 started again (same name)")
    report = c.check(load, settle_s=20, notes=[f"worker exit {worker_exit} after {stopped_in:.1f}s"])
    failures = []
    if worker_exit != 75:  # fsctl.cli.EXIT_SPOOLED: not a clean stop, and it says so
        failures.append(f"the worker that spooled exited with {worker_exit}, not 75")
    control_rec = records(r, control)[control[0]]
    c.log(f"control: {detail(control_rec)}")
    causes = ({n: leg.get("hangup_cause") for n, leg in control_rec["legs"].items()}
              if control_rec else {})
    if (not control_rec or control_rec["state"] != "completed"
            or not TALK1_S - 0.75 <= (control_rec.get("talk_time_s") or -1) <= TALK1_S + 0.25):
        failures.append(f"the control call (Redis up) is not completed with ~{TALK1_S:.0f}s of "
                        f"talk: {detail(control_rec)}")
    recs = records(r, ending)
    untrue: dict[str, str] = {}
    for cid, rec in recs.items():
        c.log(f"ended during the outage: {cid}: {detail(rec)}")
        why = []
        if rec is None:
            why.append("no record")
        else:
            if rec["state"] != "completed" or rec.get("outcome") != "completed":
                why.append(f"{rec['state']}/{rec.get('outcome')}, not completed/completed")
            if rec.get("inferred"):
                why.append("its end says inferred, though the worker saw it")
            talk = rec.get("talk_time_s")
            if talk is None or not TALK3_S - 0.75 <= talk <= TALK3_S + 0.25:
                why.append(f"talk time {talk}, not the far end's ~{TALK3_S:.0f}s")
            leg_causes = {n: leg.get("hangup_cause") for n, leg in rec["legs"].items()}
            if leg_causes.get("B") != "NORMAL_CLEARING" or (causes and leg_causes != causes):
                why.append(f"hangup causes {leg_causes}, not {causes or 'NORMAL_CLEARING'} "
                           "(the far end's BYE)")
            if rec.get("ended_at") is None or rec["ended_at"] > t_ended + 0.5:
                late = (rec["ended_at"] - t_ended) if rec.get("ended_at") else None
                why.append(f"ended_at {late if late is None else f'{late:+.1f}s'} after the "
                           "calls really ended (Redis came back "
                           f"{t_redis - t_ended:.1f}s after they ended)")
        if why:
            untrue[cid] = detail(rec)
            failures.append(f"{cid}: the record does not show the true outcome: "
                            + "; ".join(why) + f" [{detail(rec)}]")
    said = collections.Counter(re.sub(r"talk=\S+ ", "", v) for v in untrue.values())
    annotate(report, f"ended in the outage, true outcome recorded: {len(ending) - len(untrue)}"
                     f"/{len(ending)}" + (f" (records said: {dict(said)}, talk {talks(recs)})"
                                          if untrue else f" (talk {talks(recs)})"))
    if worker_exit is None:
        failures.append(f"the worker did not exit on SIGTERM within 25s: "
                        f"{w1.log_text()[-1500:]}")
    expect(report, failures)
