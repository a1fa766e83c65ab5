"""`make run`'s embedded default: redis + simulator + API + worker from one command,
the README's seed request reaching bridged and completed, Ctrl-C stopping everything."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from stack import SEED

from fsctl.embedded import free_port, wait_port

pytestmark = pytest.mark.integration


def http(method: str, url: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.load(resp)


def start_run(tmp_path: Path, api_port: int, redis_port: int,
              esl_port: int) -> subprocess.Popen[bytes]:
    """`fsctl run` with nothing configured but its ports, in a process group of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSCTL_")}
    env["FSCTL_API_PORT"] = str(api_port)
    return subprocess.Popen(
        [sys.executable, "-m", "fsctl", "run", "--var", str(tmp_path / "var"),
         "--redis-port", str(redis_port), "--esl-port", str(esl_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def stopped(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    """Wait for ``proc`` to exit; its output (the whole group is killed if it hangs)."""
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError("fsctl run did not stop on Ctrl-C: "
                             + out.decode(errors="replace")[-3000:]) from None
    return out.decode(errors="replace")


def assert_nothing_listens(*ports: int) -> None:
    for port in ports:
        with pytest.raises(TimeoutError):
            wait_port("127.0.0.1", port, 0.2)


def test_embedded_default_runs_the_readme_example(tmp_path: Path) -> None:
    api_port, redis_port, esl_port = free_port(), free_port(), free_port()
    proc = start_run(tmp_path, api_port, redis_port, esl_port)
    try:
        wait_port("127.0.0.1", api_port, 30)
        base = f"http://127.0.0.1:{api_port}/voice/call/callback"
        t0 = time.monotonic()
        rec = http("POST", base, SEED)
        times: dict[str, float] = {}
        while time.monotonic() - t0 < 20 and rec["state"] not in ("completed", "failed"):
            time.sleep(0.05)
            rec = http("GET", f"{base}/{rec['id']}")
            times.setdefault(rec["state"], time.monotonic() - t0)
        print(f"embedded default: state times {times}")
        assert rec["state"] == "completed", rec
        assert times["bridged"] < 3.0 and times["completed"] < 15.0  # the promise
        assert rec["talk_time_s"] > 0
        assert (tmp_path / "var" / "redis").is_dir()  # data under ./var
    finally:
        proc.send_signal(signal.SIGINT)
        out = stopped(proc, 20)
    assert proc.returncode == 0, out[-3000:]
    assert_nothing_listens(api_port, redis_port, esl_port)  # every child is gone


def test_ctrl_c_in_the_terminal_mid_call_stops_everything_in_order(tmp_path: Path) -> None:
    """The terminal sends SIGINT to the whole foreground group, not only to `fsctl run`.
    The call bridged at the Ctrl-C ends (5 s of talk) within the worker's grace, while Redis
    still runs: the next `fsctl run` shows it completed, with its talk time, not a guess."""
    api_port, redis_port, esl_port = free_port(), free_port(), free_port()
    proc = start_run(tmp_path, api_port, redis_port, esl_port)
    base = f"http://127.0.0.1:{api_port}/voice/call/callback"
    try:
        wait_port("127.0.0.1", api_port, 30)
        rec = http("POST", base, SEED)
        deadline = time.monotonic() + 10
        while rec["state"] != "bridged" and time.monotonic() < deadline:
            time.sleep(0.05)
            rec = http("GET", f"{base}/{rec['id']}")
        assert rec["state"] == "bridged", rec
        time.sleep(1.0)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out = stopped(proc, 25)
    assert proc.returncode == 0, out[-3000:]
    assert "did not stop in time" not in out, out[-3000:]
    assert "exited; stopping everything" not in out, out[-3000:]  # nobody died first
    assert_nothing_listens(api_port, redis_port, esl_port)
    again = start_run(tmp_path, api_port, redis_port, esl_port)
    try:
        wait_port("127.0.0.1", api_port, 30)
        final = http("GET", f"{base}/{rec['id']}")
    finally:
        again.send_signal(signal.SIGINT)
        stopped(again, 25)
    assert (final["state"], final["outcome"], final["inferred"]) == \
        ("completed", "completed", False), final
    assert 4.5 <= final["talk_time_s"] < 6.5, final["talk_time_s"]


def test_a_busy_redis_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        redis_port = busy.getsockname()[1]
        proc = start_run(tmp_path, free_port(), redis_port, free_port())
        out = stopped(proc, 20)
    assert proc.returncode != 0
    assert f"127.0.0.1:{redis_port} is already in use" in out, out[-3000:]
