"""Abuse limits hold across API processes: two real `fsctl api` processes, one Redis."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gevent
import pytest

from fsctl.auth import hash_token
from fsctl.embedded import free_port, wait_port

pytestmark = pytest.mark.integration

TOKEN = "fsk_limits_test_token"


def start_apis(tmp: Path, redis_url: str, **token_spec: object) -> tuple[list, list[int]]:
    tokens = tmp / "tokens.json"
    spec = {k: v for k, v in token_spec.items() if not k.startswith("FSCTL_")}
    tokens.write_text(json.dumps({"tokens": {"t": {"sha256": hash_token(TOKEN), **spec}}}))
    procs, ports = [], []
    for _ in range(2):
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FSCTL_")}
        env.update(FSCTL_REDIS_URL=redis_url, FSCTL_API_PORT=str(port),
                   FSCTL_TOKENS_FILE=str(tokens), FSCTL_DEST_MAX_PER_HOUR="1000",
                   FSCTL_LOG_LEVEL="WARNING")
        env.update({k: str(v) for k, v in token_spec.items() if k.startswith("FSCTL_")})
        procs.append(subprocess.Popen([sys.executable, "-m", "fsctl", "api"], env=env))
        ports.append(port)
    for port in ports:
        wait_port("127.0.0.1", port, 20)
    return procs, ports


def post(port: int, body: dict) -> tuple[int, dict, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/voice/call/callback", json.dumps(body),
                 {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    resp = conn.getresponse()
    reply = json.loads(resp.read())
    conn.close()
    return resp.status, reply, dict(resp.getheaders())


def burst(ports: list[int], bodies: list[dict]) -> list[tuple[int, dict, dict]]:
    """Send all bodies at once, alternating between the API processes."""
    jobs = [gevent.spawn(post, ports[i % len(ports)], b) for i, b in enumerate(bodies)]
    gevent.joinall(jobs, timeout=30, raise_error=True)
    return [j.value for j in jobs]


def stop(procs: list) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=10)


def body(i: int, to_b: str = "1000999") -> dict:
    return {"leg_A": {"to": f"100{i:04d}"}, "leg_B": {"to": to_b}}


def test_rate_limit_holds_across_two_api_processes(tmp_path: Path, redis_url: str) -> None:
    procs, ports = start_apis(tmp_path, redis_url, rate_per_minute=10, max_live=1000)
    try:
        if time.time() % 60 > 50:  # keep the burst inside one rate window
            time.sleep(61 - time.time() % 60)
        results = burst(ports, [body(i, f"10009{i:02d}") for i in range(40)])
        codes = [r[0] for r in results]
        assert codes.count(202) == 10 and codes.count(429) == 30, codes
        refused = [r for r in results if r[0] == 429]
        assert all(r[1]["errors"]["limit"] == "rate" for r in refused)
        assert all(1 <= int(r[2]["Retry-After"]) <= 61 for r in refused)
    finally:
        stop(procs)


def test_live_limit_holds_across_two_api_processes(tmp_path: Path, redis_url: str) -> None:
    procs, ports = start_apis(tmp_path, redis_url, rate_per_minute=1000, max_live=3)
    try:
        results = burst(ports, [body(i, f"10009{i:02d}") for i in range(20)])
        codes = [r[0] for r in results]
        assert codes.count(202) == 3, codes
        assert {r[1]["errors"]["limit"] for r in results if r[0] == 429} == {"live"}
        # a finished callback frees its slot: cancel one queued callback
        first = next(r[1]["id"] for r in results if r[0] == 202)
        conn = http.client.HTTPConnection("127.0.0.1", ports[0], timeout=10)
        conn.request("DELETE", f"/voice/call/callback/{first}",
                     headers={"Authorization": f"Bearer {TOKEN}"})
        assert conn.getresponse().status == 200
        assert post(ports[1], body(99, "1000777"))[0] == 202
        assert post(ports[0], body(98, "1000778"))[0] == 429
    finally:
        stop(procs)


def test_destination_cooldown_holds_across_two_api_processes(tmp_path: Path,
                                                            redis_url: str) -> None:
    procs, ports = start_apis(tmp_path, redis_url, rate_per_minute=1000, max_live=1000,
                              FSCTL_DEST_MAX_PER_HOUR=2)
    try:
        results = burst(ports, [body(i, "1000555") for i in range(20)])
        codes = [r[0] for r in results]
        assert codes.count(202) == 2, codes
        refused = [r for r in results if r[0] == 429]
        assert {r[1]["errors"]["limit"] for r in refused} == {"dest"}
        assert all("1000555" in r[1]["message"] for r in refused)
        assert all(3000 < int(r[2]["Retry-After"]) <= 3600 for r in refused)
    finally:
        stop(procs)
