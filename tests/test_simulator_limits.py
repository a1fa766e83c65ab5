"""The simulator's session limits behave like a real FreeSWITCH 1.11's (real TCP).

What the real one did (FreeSWITCH 1.11.1, ``sessions-per-second`` 3, ``max-sessions`` 4):
8 ``null/`` originates sent at once get 2 ``+OK`` and 6 ``-ERR DESTINATION_OUT_OF_ORDER``
(the counter is decremented before it is checked, so sps - 1 per second); a refused leg
has no CHANNEL_* event at all, only its API event and BACKGROUND_JOB; ``status`` shows the
requests of the last whole second (refused ones too) as ``per Sec``; ``error/`` creates no
session and does not count; a leg refused by max-sessions used up its place in the rate
counter too.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator

import gevent
import pytest
from sim_replay import Client, connect

from fsctl.embedded import free_port, wait_port
from fsctl.simulator import SimConfig, Simulator
from fsctl.simulator.limits import CANNOT_CREATE, SessionLimits

PW = "sim-limits-secret"
REFUSED = "-ERR DESTINATION_OUT_OF_ORDER\n"
WINDOW_MARGIN_S = 0.05
"""Start a burst this long after a rate window began (a burst takes a few ms)."""


@pytest.fixture
def caplog_sim(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="fsctl.simulator")
    return caplog


def make_sim(**limits: int) -> Simulator:
    return Simulator(SimConfig(answer_delay_s=0.05, talk_s=None, heartbeat_s=3600, **limits),
                     password=PW).start()


@pytest.fixture
def sps3() -> Iterator[Simulator]:
    sim = make_sim(sessions_per_second=3)
    yield sim
    sim.stop()


def at_window_start(sim: Simulator) -> None:
    """Wait until a fresh rate window has just begun."""
    gevent.sleep(sim.limits.seconds_to_next_window() + WINDOW_MARGIN_S)


def fire(client: Client, dials: list[str], extra: str = "") -> list[tuple[str, str]]:
    """bgapi originate each dial string at once; (leg uuid, job uuid) per originate."""
    sent = []
    for dial in dials:
        leg, job = str(uuid.uuid4()), str(uuid.uuid4())
        reply = client.cmd(f"bgapi originate {{origination_uuid={leg}{extra}}}{dial} &park()",
                           {"Job-UUID": job})
        assert reply.headers["Reply-Text"] == f"+OK Job-UUID: {job}"
        sent.append((leg, job))
    return sent


def job_results(client: Client, sent: list[tuple[str, str]]) -> list[str]:
    """The BACKGROUND_JOB body of each originate, in the order they were sent."""
    jobs = {job for _, job in sent}

    def done() -> bool:
        return len({e.get("Job-UUID") for e in client.events()
                    if e.name == "BACKGROUND_JOB"} & jobs) == len(jobs)

    client.wait_for(done, 5, "every BACKGROUND_JOB")
    bodies = {e.get("Job-UUID"): e.body for e in client.events() if e.name == "BACKGROUND_JOB"}
    return [bodies[job] for _, job in sent]


def status_lines(client: Client) -> list[str]:
    return client.api("status").splitlines()[2:6]


def crit(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]


def test_defaults_are_freeswitchs() -> None:
    config = SimConfig()
    assert (config.sessions_per_second, config.max_sessions) == (30, 1000)


def test_a_burst_over_the_rate_is_refused_like_freeswitch(
        sps3: Simulator, caplog_sim: pytest.LogCaptureFixture) -> None:
    client = connect(sps3.port, PW, "plain ALL")
    at_window_start(sps3)
    sent = fire(client, [f"null/{1000 + i}" for i in range(8)])
    results = job_results(client, sent)
    assert results[:2] == [f"+OK {leg}\n" for leg, _ in sent[:2]]
    assert results[2:] == [REFUSED] * 6
    # before the window ends: the per-second figure is still the last whole second's
    assert status_lines(client) == [
        "2 session(s) since startup",
        "2 session(s) - peak 2, last 5min 2 ",
        "0 session(s) per Sec out of max 3, peak 0, last 5min 0 ",
        "1000 session(s) max",
    ]
    gevent.sleep(0.3)
    refused = {leg for leg, _ in sent[2:]}
    assert not [e.name for e in client.events() if e.get("Unique-ID") in refused]
    names = [e.name for e in client.events()]
    assert names.count("CHANNEL_CREATE") == 2 and names.count("CODEC") == 4
    assert names.count("API") == 8 + 1  # every originate's API event, and the status
    assert crit(caplog_sim) == ["switch_core_session.c:2427 Throttle Error! 2"] * 6
    cannot = [r.getMessage() for r in caplog_sim.records if r.levelno == logging.INFO
              and "Cannot create" in r.getMessage()]
    assert cannot == [CANNOT_CREATE % ("null", "DESTINATION_OUT_OF_ORDER")] * 6
    assert cannot[0] == ("switch_ivr_originate.c:3059 Cannot create outgoing channel of type "
                         "[null] cause: [DESTINATION_OUT_OF_ORDER]")
    # the window ends: 8 requests (refused ones count), one "Over Session Rate" line
    gevent.sleep(sps3.limits.seconds_to_next_window() + WINDOW_MARGIN_S)
    assert crit(caplog_sim)[-1] == "switch_time.c:1243 Over Session Rate of 3!"
    assert status_lines(client)[2] == "8 session(s) per Sec out of max 3, peak 8, last 5min 8 "
    gevent.sleep(sps3.limits.seconds_to_next_window() + WINDOW_MARGIN_S)
    assert status_lines(client)[2] == "0 session(s) per Sec out of max 3, peak 8, last 5min 8 "
    assert crit(caplog_sim).count("switch_time.c:1243 Over Session Rate of 3!") == 1


def test_the_window_refills_and_error_legs_do_not_count(
        sps3: Simulator, caplog_sim: pytest.LogCaptureFixture) -> None:
    client = connect(sps3.port, PW, "plain ALL")
    at_window_start(sps3)
    assert job_results(client, fire(client, ["null/1", "null/2", "null/3"]))[2] == REFUSED
    at_window_start(sps3)
    errors = fire(client, ["error/USER_BUSY"] * 5)  # mod_dptools' error/ makes no channel
    sent = fire(client, ["null/4", "null/5", "sofia/internal/6@127.0.0.1:5070"])
    assert job_results(client, errors) == ["-ERR USER_BUSY\n"] * 5
    results = job_results(client, sent)
    assert results[:2] == [f"+OK {leg}\n" for leg, _ in sent[:2]] and results[2] == REFUSED
    assert crit(caplog_sim)[-2:] == ["switch_core_session.c:2427 Throttle Error! 4",
                                     "mod_sofia.c:4787 Error Creating Session"]
    assert client.api(f"originate {{origination_uuid={uuid.uuid4()}}}null/7 &park()") == REFUSED
    at_window_start(sps3)
    leg = str(uuid.uuid4())
    assert client.api(f"originate {{origination_uuid={leg}}}null/8 &park()") == f"+OK {leg}\n"
    assert status_lines(client)[:2] == ["5 session(s) since startup",
                                        "5 session(s) - peak 5, last 5min 5 "]


def test_max_sessions_refuses_and_frees_up_when_a_channel_goes(
        caplog_sim: pytest.LogCaptureFixture) -> None:
    sim = make_sim(max_sessions=4, sessions_per_second=1000)
    try:
        client = connect(sim.port, PW, "plain ALL")
        sent = fire(client, [f"null/{i}" for i in range(6)])
        results = job_results(client, sent)
        assert results[:4] == [f"+OK {leg}\n" for leg, _ in sent[:4]]
        assert results[4:] == [REFUSED] * 2
        assert crit(caplog_sim) == ["switch_core_session.c:2434 Over Session Limit! 4"] * 2
        assert not [e for e in client.events() if e.get("Unique-ID") in {sent[4][0], sent[5][0]}]
        lines = status_lines(client)
        assert lines[1] == "4 session(s) - peak 4, last 5min 4 " and lines[3] == "4 session(s) max"
        first = sent[0][0]
        assert client.api(f"uuid_kill {first}") == "+OK\n"
        client.wait_for(lambda: any(e.name == "CHANNEL_DESTROY" and e.get("Unique-ID") == first
                                    for e in client.events()), 5, "DESTROY")
        again = fire(client, ["null/again", "null/over"])
        assert job_results(client, again) == [f"+OK {again[0][0]}\n", REFUSED]
        assert status_lines(client)[:2] == ["5 session(s) since startup",
                                            "4 session(s) - peak 4, last 5min 4 "]
    finally:
        sim.stop()


def test_a_leg_over_max_sessions_uses_up_its_place_in_the_rate_too(
        caplog_sim: pytest.LogCaptureFixture) -> None:
    """As FreeSWITCH with sessions-per-second 5 and max-sessions 2: of 6 at once, 2 are
    created, 2 refused by max-sessions and the last 2 by the rate."""
    sim = make_sim(max_sessions=2, sessions_per_second=5)
    try:
        client = connect(sim.port, PW, "plain BACKGROUND_JOB")
        at_window_start(sim)
        assert job_results(client, fire(client, [f"null/{i}" for i in range(6)]))[2:] == (
            [REFUSED] * 4)
        assert crit(caplog_sim) == ["switch_core_session.c:2434 Over Session Limit! 2"] * 2 + [
            "switch_core_session.c:2427 Throttle Error! 2"] * 2
        gevent.sleep(sim.limits.seconds_to_next_window() + WINDOW_MARGIN_S)
        assert status_lines(client)[2] == "6 session(s) per Sec out of max 5, peak 6, last 5min 6 "
    finally:
        sim.stop()


def test_five_minute_peaks_start_over() -> None:
    now = [0.0]
    limits = SessionLimits(3, 1000, clock=lambda: now[0])
    for count in range(5):
        if limits.request(count):
            limits.created(count + 1)
    now[0] = 1.0
    assert limits.status_lines(2).splitlines()[1:3] == [
        "2 session(s) - peak 2, last 5min 2 ",
        "5 session(s) per Sec out of max 3, peak 5, last 5min 5 "]
    now[0] = 302.0  # 300 windows later: the five-minute figures restart from now
    assert limits.status_lines(0).splitlines()[1:3] == [
        "0 session(s) - peak 2, last 5min 0 ",
        "0 session(s) per Sec out of max 3, peak 5, last 5min 0 "]


def test_cli_options_set_the_limits() -> None:
    port = free_port()
    env = dict(os.environ, FSCTL_SIM_LIMITS_PW=PW)
    argv = [sys.executable, "-m", "fsctl", "simulate", "--port", str(port), "--password-env",
            "FSCTL_SIM_LIMITS_PW", "--log-level", "WARNING"]
    bad = subprocess.run(argv + ["--sessions-per-second", "0"], env=env, capture_output=True,
                         text=True, timeout=30, check=False)
    assert bad.returncode == 2 and "must be at least 1" in bad.stderr
    proc = subprocess.Popen(argv + ["--sessions-per-second", "7", "--max-sessions", "9"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port("127.0.0.1", port, 10)
        client = connect(port, PW)
        lines = status_lines(client)
        assert re.fullmatch(r"0 session\(s\) per Sec out of max 7, peak 0, last 5min 0 ",
                            lines[2]) and lines[3] == "9 session(s) max"
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---- the judge: the same bursts on a real FreeSWITCH ---------------------------------------

REAL_BURSTS = {
    "rate": (3, 1000, [f"null/{1000 + i}" for i in range(8)]),
    "max_then_rate": (5, 2, [f"null/{2000 + i}" for i in range(6)]),
    "sofia": (5, 2, [f"sofia/fsctl/{3000 + i}@127.0.0.1:{{port}}" for i in range(6)]),
}
"""(sessions-per-second, max-sessions, dial strings sent at once) per burst; ``fsctl`` is
freeswitch-conf/'s SIP profile, ``{port}`` a UDP socket that takes every INVITE and answers
none, so that the legs it got stay up."""
REAL_ATTEMPTS = 3
"""Tries per burst on the real FreeSWITCH (whose second starts where its timer thread's
does: a burst split by its tick is sent again, after a hupall)."""


def burst_outcome(port: int, password: str, dials: list[str], window_s: float) -> dict:
    """What a burst got: the refused positions, events of refused legs, the accepted count
    and the status figures once its window is over."""
    client = connect(port, password, "plain ALL")
    try:
        gevent.sleep(window_s)
        sent = fire(client, dials, ",originate_timeout=2")  # a silent far end: NO_ANSWER
        results = job_results(client, sent)
        gevent.sleep(1.2)  # the window of the burst has ended (one tick at least)
        refused = {leg for (leg, _), body in zip(sent, results, strict=True) if body == REFUSED}
        lines = status_lines(client)
        client.api("hupall NORMAL_CLEARING")
        return {
            "refused_at": [i for i, body in enumerate(results) if body == REFUSED],
            "events_of_refused": [e.name for e in client.events()
                                  if e.get("Unique-ID") in refused],
            "since_startup": lines[0],
            "peaks": re.sub(r"^\d+ session\(s\) per Sec", "", lines[2]),
            "max": lines[3],
        }
    finally:
        client.close()


def crit_lines(log_text: str) -> list[str]:
    return [line.split("[CRIT] ", 1)[1] for line in log_text.splitlines() if "[CRIT] " in line]


@pytest.mark.real_freeswitch
@pytest.mark.parametrize("burst", sorted(REAL_BURSTS))
def test_the_real_freeswitch_refuses_the_same_legs(burst: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The judge: the simulator and a real FreeSWITCH with the same limits refuse the same
    originates of the same burst, send nothing for them, log the same CRIT lines and
    report the same peaks in ``status``."""
    import realfs

    sps, max_sessions, dials = REAL_BURSTS[burst]
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no ICMP "unreachable" either
    silent.bind(("127.0.0.1", 0))
    dials = [d.format(port=silent.getsockname()[1]) for d in dials]
    caplog.set_level(logging.INFO, logger="fsctl.simulator")
    sim = make_sim(sessions_per_second=sps, max_sessions=max_sessions)
    try:
        simulated = burst_outcome(sim.port, PW, dials, sim.limits.seconds_to_next_window()
                                  + WINDOW_MARGIN_S)
        simulated_crit = crit(caplog)
    finally:
        sim.stop()
    for _ in range(REAL_ATTEMPTS):
        fs = realfs.FreeSwitch(sessions_per_second=sps, max_sessions=max_sessions).start()
        try:
            real = burst_outcome(fs.esl_port, fs.admin_password, dials, 1.1)
            real_crit = crit_lines(fs.log_text())
        finally:
            fs.remove()
        if real_crit.count(f"switch_time.c:1243 Over Session Rate of {sps}!") <= 1:
            break  # not split by FreeSWITCH's tick
    silent.close()
    assert simulated == real
    assert simulated_crit == real_crit
