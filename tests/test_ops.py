"""Operations: /metrics of the API and of a worker, /livez and /readyz, JSON and text log
lines with the callback id and leg UUIDs, the access log, and the API under gunicorn.

Real processes throughout: redis-server, the simulator over TCP, HTTP over TCP, `fsctl api`
and gunicorn as subprocesses. Waits are bounded polls; nothing is timed."""

from __future__ import annotations

import http.client
import io
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import support
from procs import terminate_group
from prometheus_client.parser import text_string_to_metric_families
from stack import SEED, Stack

from fsctl.embedded import free_port, start_redis, wait_port
from fsctl.errors import ConfigError
from fsctl.ops import logs
from fsctl.settings import load
from fsctl.simulator import SimConfig
from fsctl.simulator.config import Behaviour

pytestmark = pytest.mark.integration

BASE = "/voice/call/callback"
WAIT_S = 10.0
"""Longest any poll here waits for what it expects."""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def request(port: int, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                 headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def scrape(port: int) -> Samples:
    """Every sample of a /metrics page: (name, labels) → value."""
    code, data = request(port, "GET", "/metrics")
    assert code == 200, data
    out: Samples = {}
    for family in text_string_to_metric_families(data.decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str) -> float:
    """Sum of a metric over all its label values."""
    return sum(v for (n, _), v in samples.items() if n == name)


def wait_until(probe: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll ``probe`` until it returns something true; that value."""
    return support.wait_until(probe, timeout_s, what)


@pytest.fixture
def ops_stack(redis_url: str):
    """API + worker on the simulator, the worker serving its /metrics on a port."""
    s = Stack(redis_url, None, worker_metrics_port=free_port(), heartbeat_ttl_s=3.0)
    try:
        yield s
    finally:
        s.close()


def worker_port(s: Stack) -> int:
    return s.settings.worker_metrics_port


def complete(s: Stack) -> tuple[dict[str, Any], dict[str, Any]]:
    """The seed callback, bridged, then hung up by a DELETE (both legs are killed; B is gone
    with A by the time its kill arrives): (as accepted, as completed)."""
    rec = s.create(SEED)
    s.wait_for(rec["id"], "bridged")
    assert s.http("DELETE", f"{BASE}/{rec['id']}")[0] == 202
    return rec, s.wait_for(rec["id"], "completed")


# -- metrics ------------------------------------------------------------------------------------


def test_a_completed_callback_shows_in_worker_and_api_metrics(
        ops_stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    s = ops_stack
    caplog.set_level(logging.DEBUG, logger="fsctl.commander")
    before = scrape(s.api_port)
    assert value(before, "fsctl_callbacks_finished_total", state="completed",
                 outcome="completed") is None
    _, done = complete(s)
    wp = worker_port(s)

    def worker_done() -> Samples | None:
        m = scrape(wp)
        return m if total(m, "fsctl_worker_legs_hungup_total") == 2 else None

    w = wait_until(worker_done, "both legs counted hung up")
    assert value(w, "fsctl_worker_callbacks_finished_total", state="completed",
                 outcome="completed") == 1
    assert value(w, "fsctl_worker_legs_hungup_total", cause="NORMAL_CLEARING") == 2
    assert value(w, "fsctl_worker_originate_to_answer_seconds_count") == 2
    assert value(w, "fsctl_worker_answer_to_bridge_seconds_count") == 1
    a, b = done["legs"]["A"]["times"], done["legs"]["B"]["times"]
    to_bridge = min(a["bridged"], b["bridged"]) - max(a["answered"], b["answered"])
    assert value(w, "fsctl_worker_answer_to_bridge_seconds_sum") == pytest.approx(
        max(0.0, to_bridge), abs=1e-6)
    assert value(w, "fsctl_worker_esl_connected", node=s.worker.link.node) == 1
    assert value(w, "fsctl_worker_esl_connects_total") == 1
    assert value(w, "fsctl_worker_esl_reconnects_total") == 0
    assert value(w, "fsctl_worker_originates_sent_total") == 2
    assert value(w, "fsctl_worker_originates_throttled_total") == 0
    assert value(w, "fsctl_worker_live_callbacks") == 0
    assert total(w, "fsctl_api_requests_total") == 0  # the worker's page is the worker's

    def api_done() -> Samples | None:
        m = scrape(s.api_port)
        return m if value(m, "fsctl_callbacks_finished_total", state="completed",
                          outcome="completed") == 1 else None

    api = wait_until(api_done, "the API's outcome counter (from Redis) moved")
    assert value(api, "fsctl_redis_up") == 1
    assert value(api, "fsctl_queue_depth") == 0
    assert value(api, "fsctl_queue_oldest_age_seconds") == 0
    assert value(api, "fsctl_callbacks", state="completed") == 1
    assert value(api, "fsctl_workers_ready") == 1
    assert value(api, "fsctl_api_requests_total", method="POST", route=BASE, status="202") == 1
    assert value(api, "fsctl_api_request_duration_seconds_count", method="POST",
                 route=BASE) == 1
    assert (value(api, "fsctl_api_requests_total", method="GET", route=BASE + "/{callback_id}",
                  status="200") or 0) >= 1
    # the kill of a leg that hung up already is expected: DEBUG, never INFO
    kills = wait_until(lambda: [r for r in caplog.records if "No such channel" in r.getMessage()],
                       "the kill of the leg already gone")
    assert all(r.levelno == logging.DEBUG for r in kills), [r.getMessage() for r in kills]
    assert any(r.levelno == logging.INFO and "kill leg A" in r.getMessage()
               for r in caplog.records)  # a kill that hung a leg up stays INFO


def test_a_failed_callback_counts_its_outcome_cause_and_sip_status(redis_url: str) -> None:
    """A's far end answers 486 (a SIP-like leg on the simulator): a_busy, USER_BUSY, 486."""
    busy = "1000777"
    sim = SimConfig(answer_delay_s=0.3, talk_s=1.0,
                    numbers={busy: Behaviour("busy", answer_delay_s=0.2)})
    s = Stack(redis_url, None, sim_config=sim, worker_metrics_port=free_port())
    try:
        rec = s.create({"leg_A": {"to": busy, "route": "sip"}, "leg_B": {"to": "1000125"}})
        assert s.wait_for(rec["id"], "failed")["outcome"] == "a_busy"

        def counted() -> Samples | None:
            m = scrape(worker_port(s))
            return m if value(m, "fsctl_worker_legs_sip_status_total", status="486") else None

        w = wait_until(counted, "the busy leg's SIP status counted")
        assert value(w, "fsctl_worker_legs_sip_status_total", status="486") == 1
        assert value(w, "fsctl_worker_legs_hungup_total", cause="USER_BUSY") == 1
        assert total(w, "fsctl_worker_legs_hungup_total") == 1  # B was never dialled
        assert value(w, "fsctl_worker_callbacks_finished_total", state="failed",
                     outcome="a_busy") == 1
        assert value(w, "fsctl_worker_originate_to_answer_seconds_count") == 0  # no answer
        assert value(w, "fsctl_worker_originates_sent_total") == 1
        api = wait_until(lambda: (m := scrape(s.api_port)) and value(
            m, "fsctl_callbacks_finished_total", state="failed", outcome="a_busy") and m,
            "the API's outcome counter moved")
        assert value(api, "fsctl_callbacks_finished_total", state="failed",
                     outcome="a_busy") == 1
    finally:
        s.close()


def test_queue_depth_and_age_with_no_worker(redis_url: str) -> None:
    s = Stack(redis_url, None, start_worker=False)
    try:
        first = s.create(SEED)
        s.create({"leg_A": {"to": "1000126"}, "leg_B": {"to": "1000127"}})
        m = scrape(s.api_port)
        assert value(m, "fsctl_queue_depth") == 2
        assert value(m, "fsctl_callbacks", state="queued") == 2
        assert value(m, "fsctl_queue_oldest_age_seconds") > 0
        assert value(m, "fsctl_workers_alive") == 0
        # a queued callback cancelled by the API counts as ended too
        code, _ = request(s.api_port, "DELETE", f"{BASE}/{first['id']}")
        assert code == 200
        m = scrape(s.api_port)
        assert value(m, "fsctl_queue_depth") == 1
        assert value(m, "fsctl_callbacks_finished_total", state="cancelled",
                     outcome="cancelled") == 1
    finally:
        s.close()


def test_an_expired_callback_counts_on_a_worker_without_freeswitch(redis_url: str) -> None:
    """No FreeSWITCH (nothing listens on its port): nothing is claimed; the worker's expire
    loop ends the callback, counted on its page and in the shared counter."""
    s = Stack(redis_url, ("127.0.0.1", free_port(), "unused-secret"),
              worker_metrics_port=free_port(), queue_timeout_s=1.0)
    try:
        rec = s.create(SEED)
        assert s.wait_for(rec["id"], "failed")["outcome"] == "expired"
        w = scrape(worker_port(s))
        assert value(w, "fsctl_worker_callbacks_finished_total", state="failed",
                     outcome="expired") == 1
        assert value(w, "fsctl_worker_esl_connected", node=s.worker.link.node) == 0
        assert value(w, "fsctl_worker_originates_sent_total") == 0
        api = scrape(s.api_port)
        assert value(api, "fsctl_callbacks_finished_total", state="failed",
                     outcome="expired") == 1
        assert value(api, "fsctl_workers_alive") == 1 and value(api, "fsctl_workers_ready") == 0
        code, doc = ready(s.api_port)
        assert code == 503 and doc["reason"] == "no worker has its event socket connected"
    finally:
        s.close()


# -- health -------------------------------------------------------------------------------------


def ready(port: int) -> tuple[int, dict[str, Any]]:
    code, data = request(port, "GET", "/readyz")
    return code, json.loads(data)


def test_readyz_follows_the_event_socket(ops_stack: Stack) -> None:
    s, wp = ops_stack, worker_port(ops_stack)
    for port in (s.api_port, wp):
        assert request(port, "GET", "/livez") == (200, b'{"status":"ok"}')
    assert request(s.api_port, "GET", "/health")[0] == 200  # the older aliases
    assert request(s.api_port, "GET", "/health/ready")[0] == 200
    code, doc = wait_until(lambda: (r := ready(s.api_port))[0] == 200 and r, "API ready")
    assert doc["workers"]["test-worker"]["esl_connected"] is True
    code, doc = ready(wp)
    assert code == 200 and doc["esl_connected"] is True and doc["redis"] == "ok"
    assert s.sim is not None
    s.sim.stop()  # FreeSWITCH goes away: the worker's event socket is down
    code, doc = wait_until(lambda: (r := ready(s.api_port))[0] == 503 and r, "API not ready")
    assert doc["workers"]["test-worker"]["esl_connected"] is False
    assert doc["reason"] == "no worker has its event socket connected"
    code, doc = ready(wp)
    assert code == 503 and doc["esl_connected"] is False
    assert value(scrape(wp), "fsctl_worker_esl_connected", node=s.worker.link.node) == 0
    assert request(wp, "GET", "/livez")[0] == 200  # still up, only not ready


def test_readyz_without_a_worker(redis_url: str) -> None:
    s = Stack(redis_url, None, start_worker=False)
    try:
        code, doc = ready(s.api_port)
        assert code == 503 and doc["reason"] == "no worker heartbeat" and doc["redis"] == "ok"
        assert request(s.api_port, "GET", "/health/ready")[0] == 200  # Redis only, as before
        worker = s.start_worker()
        wait_until(lambda: ready(s.api_port)[0] == 200, "ready once a worker connected")
        worker.stop()  # a clean stop removes its heartbeat at once
        s.worker = None
        assert ready(s.api_port)[0] == 503
    finally:
        s.close()


def test_readyz_when_redis_is_gone(tmp_path: Path) -> None:
    port = free_port()
    proc = start_redis(port, tmp_path / "redis")
    s = Stack(f"redis://127.0.0.1:{port}/0", None, worker_metrics_port=free_port())
    try:
        wait_until(lambda: ready(s.api_port)[0] == 200, "API ready")
        assert ready(worker_port(s))[0] == 200
        terminate_group(proc, 5)
        code, doc = ready(s.api_port)
        assert code == 503 and doc["redis"].startswith("unreachable")
        code, doc = ready(worker_port(s))
        assert code == 503 and doc["redis"].startswith("unreachable")
        assert doc["esl_connected"] is True  # the event socket is fine, Redis is not
        m = scrape(s.api_port)  # the scrape still answers, saying Redis is down
        assert value(m, "fsctl_redis_up") == 0 and value(m, "fsctl_queue_depth") is None
    finally:
        s.close()
        terminate_group(proc, 5)


# -- logs ---------------------------------------------------------------------------------------


def test_json_lines_carry_callback_id_and_leg_uuids(ops_stack: Stack) -> None:
    s = ops_stack
    out = io.StringIO()
    handler = logs.handler(out, "auto")  # not a terminal: JSON
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        rec, _ = complete(s)
        code, _ = request(s.api_port, "POST", BASE, {"leg_A": {"to": "x"}})
        assert code == 422
        wait_until(lambda: f"callback {rec['id']}: completed" in out.getvalue(),
                   "the worker logged the end")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert all(line["time"].endswith("+00:00") for line in lines)  # ISO 8601, UTC
    mine = [line for line in lines if rec["id"] in line["message"]]
    assert len(mine) >= 4  # accepted, originate A and B, bridge, completed …
    assert all(line["callback_id"] == rec["id"] for line in mine)
    uuids = {"leg_a_uuid": rec["legs"]["A"]["uuid"], "leg_b_uuid": rec["legs"]["B"]["uuid"]}
    worker_lines = [line for line in mine if line["logger"].startswith("fsctl.worker")]
    assert worker_lines and all(line["leg_a_uuid"] == uuids["leg_a_uuid"]
                                and line["leg_b_uuid"] == uuids["leg_b_uuid"]
                                for line in worker_lines)
    accepted = next(line for line in mine
                    if line["logger"] == "fsctl.api" and "accepted" in line["message"])
    assert accepted["leg_a_uuid"] == uuids["leg_a_uuid"]
    access = [line for line in lines if line["logger"] == "fsctl.access"]
    post = next(line for line in access if line["method"] == "POST" and line["status"] == 202)
    assert post["callback_id"] == rec["id"] and post["path"] == BASE
    assert post["duration_ms"] >= 0
    bad = next(line for line in access if line["status"] == 422)
    assert bad["error"] == "invalid callback request" and "leg_A" in bad["errors"]
    commander = [line["message"] for line in lines if line["logger"] == "fsctl.commander"]
    assert any("kill leg A" in m for m in commander)
    assert not any("No such channel" in m for m in commander)  # expected: at DEBUG


def test_text_format_and_the_setting() -> None:
    out = io.StringIO()
    logger = logging.getLogger("fsctl.test_ops")
    handler = logs.handler(out, "text")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("callback %s: bridged", "0" * 32)
    finally:
        logger.removeHandler(handler)
    line = out.getvalue().strip()
    assert line.endswith(f"INFO fsctl.test_ops: callback {'0' * 32}: bridged"), line
    with pytest.raises(ValueError):
        json.loads(line)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.choose_format("auto", Terminal()) == "text"
    assert logs.choose_format("", io.StringIO()) == "json"
    assert logs.choose_format("JSON", Terminal()) == "json"
    with pytest.raises(ConfigError):
        logs.choose_format("yaml", io.StringIO())


def test_ops_settings() -> None:
    s = load({"FSCTL_WORKER_METRICS_PORT": "9101", "FSCTL_HEARTBEAT_TTL_S": "5",
              "FSCTL_API_WORKERS": "3"})
    assert (s.worker_metrics_host, s.worker_metrics_port, s.heartbeat_ttl_s, s.api_workers) == \
        ("127.0.0.1", 9101, 5.0, 3)
    assert load({}).worker_metrics_port == 0  # off unless asked for
    for bad in ({"FSCTL_WORKER_METRICS_PORT": "70000"}, {"FSCTL_HEARTBEAT_TTL_S": "0"}):
        with pytest.raises(ConfigError):
            load(bad)


# -- serving: `fsctl api` and gunicorn, as subprocesses -------------------------------------------


def _env(redis_url: str, api_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSCTL_")}
    env.update(FSCTL_REDIS_URL=redis_url, FSCTL_API_PORT=str(api_port), FSCTL_LOG_LEVEL="INFO")
    return env


def _serve(argv: list[str], env: dict[str, str], log_path: Path,
           api_port: int) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_port("127.0.0.1", api_port, 20)
    except TimeoutError:
        terminate_group(proc, 5)
        raise AssertionError(log_path.read_text(errors="replace")[-3000:]) from None
    return proc


def _lines(log_path: Path) -> list[dict[str, Any]]:
    """Every line of a log written off a terminal: each one a JSON object."""
    text = log_path.read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_fsctl_api_logs_each_request_once(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "api.log"
    proc = _serve([sys.executable, "-m", "fsctl", "api"], _env(redis_url, port), log_path, port)
    try:
        code, body = request(port, "POST", BASE, SEED)
        assert code == 202
        callback_id = json.loads(body)["id"]
        assert request(port, "POST", BASE, {"leg_A": {"to": "1000123"}})[0] == 422
        assert request(port, "GET", f"{BASE}/{callback_id}")[0] == 200
    finally:
        assert terminate_group(proc, 10) is not None
    access = [line for line in _lines(log_path) if line["logger"] == "fsctl.access"]
    assert [(a["method"], a["status"]) for a in access] == [("POST", 202), ("POST", 422),
                                                            ("GET", 200)]
    assert access[0]["callback_id"] == callback_id == access[2]["callback_id"]
    assert "callback_id" not in access[1] and access[1]["errors"] == {
        "leg_B": ["Missing data for required field."]}
    assert all(a["duration_ms"] >= 0 and a["path"].startswith(BASE) for a in access)


def test_gunicorn_serves_the_api(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    proc = _serve([sys.executable, "-m", "gunicorn", "-c", "python:fsctl.ops.gunicorn_conf"],
                  _env(redis_url, port), log_path, port)
    try:
        assert request(port, "GET", "/livez") == (200, b'{"status":"ok"}')
        code, body = request(port, "GET", "/readyz")
        assert code == 503 and json.loads(body)["reason"] == "no worker heartbeat"
        code, body = request(port, "POST", BASE, SEED)
        assert code == 202
        callback_id = json.loads(body)["id"]
        m = scrape(port)
        assert value(m, "fsctl_api_requests_total", method="POST", route=BASE,
                     status="202") == 1
        assert value(m, "fsctl_queue_depth") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    assert code == 0, log_path.read_text(errors="replace")[-3000:]
    lines = _lines(log_path)  # gunicorn's own lines too: JSON
    assert any(line["logger"] == "gunicorn.error" and "Listening at" in line["message"]
               for line in lines)
    assert not any("Control socket" in line["message"] for line in lines)  # none in $HOME
    post = [line for line in lines if line["logger"] == "fsctl.access"]
    assert len(post) == 1  # /livez, /readyz and /metrics are DEBUG; no second access log
    assert (post[0]["method"], post[0]["status"], post[0]["callback_id"]) == \
        ("POST", 202, callback_id)


def test_gunicorn_with_two_processes_adds_their_counters_up(redis_url: str,
                                                              tmp_path: Path) -> None:
    """FSCTL_API_WORKERS=2: whichever process answers a scrape shows every request."""
    port = free_port()
    env = _env(redis_url, port)
    env["FSCTL_API_WORKERS"] = "2"
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp_path / "gunicorn.log"
    proc = _serve([sys.executable, "-m", "gunicorn", "-c", "python:fsctl.ops.gunicorn_conf"],
                  env, log_path, port)
    try:
        pids = wait_until(lambda: len(found := [
            int(line["message"].rsplit(" ", 1)[1]) for line in _lines(log_path)
            if line["message"].startswith("Booting worker with pid:")]) == 2 and found,
            "two worker processes")
        # each process in turn answers alone (the other one stopped): 3 and 4 requests
        for alone, other, n in ((pids[0], pids[1], 3), (pids[1], pids[0], 4)):
            os.kill(other, signal.SIGSTOP)
            try:
                for _ in range(n):
                    assert request(port, "GET", "/livez")[0] == 200
                m = scrape(port)  # answered by ``alone``: it shows the other's counts too
            finally:
                os.kill(other, signal.SIGCONT)
            assert value(m, "fsctl_api_requests_total", method="GET", route="/livez",
                         status="200") == (3 if alone == pids[0] else 7), alone
        assert value(m, "fsctl_redis_up") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    assert code == 0, log_path.read_text(errors="replace")[-3000:]
