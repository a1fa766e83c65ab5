"""The CLI as a newcomer and a script use it: `fsctl ...` subprocesses against a real
`fsctl run` (redis-server, simulator, API and worker processes), over loopback HTTP."""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from stack import SEED

from fsctl.auth import hash_token
from fsctl.embedded import free_port, wait_port
from fsctl.errors import AuthFailed
from fsctl.esl import ESLClient

pytestmark = pytest.mark.integration

TOKEN = "fsk_cli_test_token_0123456789"
NUMBERS = {"allow": [r"\+?[0-9]{4,15}"]}
ROUTES = {"default_route": "default", "routes": {
    "default": {"template": "user/{to}", **NUMBERS},
    "busy": {"template": "error/USER_BUSY", **NUMBERS},
    "noanswer": {"template": "{null_enable_auto_answer=false}null/{to}", **NUMBERS}}}
START_S = 45.0
"""Longest wait for `fsctl run` to say it is running (four Python processes on a busy box)."""
ANSI = re.compile(r"\x1b\[")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSCTL_")}
    env.update(extra)
    return env


def fsctl(*args: str, env: dict[str, str] | None = None,
          timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """One CLI run, as a script would (stdout and stderr are pipes: no terminal)."""
    return subprocess.run([sys.executable, "-m", "fsctl", *args], env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout_s, check=False)


@dataclass
class Run:
    proc: subprocess.Popen[bytes]
    log: Path
    url: str
    ports: tuple[int, ...]
    children: tuple[int, ...] = ()
    """Its child processes once it was running (killed at the end if any outlived it)."""

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_run(tmp: Path, *extra_args: str, **env: str) -> Run:
    """`fsctl run` on free ports; returns once it says it is running (its output in a file)."""
    api_port, redis_port, esl_port = free_port(), free_port(), free_port()
    log = tmp / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fsctl", "run", "--var", str(tmp / "var"), "--redis-port",
             str(redis_port), "--esl-port", str(esl_port), *extra_args],
            env=clean_env(FSCTL_API_PORT=str(api_port), FSCTL_LOG_LEVEL="WARNING", **env),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    run = Run(proc, log, f"http://127.0.0.1:{api_port}", (api_port, redis_port, esl_port))
    deadline = time.monotonic() + START_S
    while "fsctl is running" not in run.output():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_run(run)
            raise AssertionError("fsctl run did not start: " + run.output()[-3000:])
        time.sleep(0.1)
    run.children = tuple(children_of(proc.pid))
    return run


def stop_run(run: Run) -> None:
    if run.proc.poll() is None:
        run.proc.send_signal(signal.SIGINT)
        try:
            run.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()
    for pid in run.children:  # never leave one behind, whatever the test found
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """`fsctl run` with tokens on, a busy and a never-answering route, short simulated calls."""
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "tokens.json").write_text(json.dumps({"tokens": {"cli": {
        "sha256": hash_token(TOKEN),
        "permissions": ["callbacks:create", "callbacks:read", "callbacks:cancel"]}}}))
    (tmp / "routes.json").write_text(json.dumps(ROUTES))
    run = start_run(tmp, "--answer-delay", "0.3", "--talk", "1",
                    FSCTL_TOKENS_FILE=str(tmp / "tokens.json"),
                    FSCTL_ROUTES_FILE=str(tmp / "routes.json"))
    try:
        yield run
    finally:
        stop_run(run)


def client_env(run: Run, token: str | None = TOKEN) -> dict[str, str]:
    env = clean_env(FSCTL_URL=run.url)
    if token:
        env["FSCTL_TOKEN"] = token
    return env


def test_call_watch_follows_the_legs_and_exits_0_when_completed(secured: Run) -> None:
    res = fsctl("call", "1000123", "1000125", "--watch", env=client_env(secured))
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert re.fullmatch(r"callback [0-9a-f]{32} queued: A 1000123 B 1000125", lines[0]), lines
    for step in ("leg A ringing", "leg A answered", "waiting", "leg B ringing",
                 "leg B answered", "bridged", "leg A hungup"):
        assert any(line.endswith(step) for line in lines), (step, lines)
    assert re.fullmatch(r"completed: talk time \d+\.\d s", lines[-1]), lines
    assert not ANSI.search(res.stdout), "a pipe gets plain text"
    assert res.stderr == ""


def test_call_watch_exits_4_on_a_busy_b_with_the_outcome(secured: Run) -> None:
    res = fsctl("call", "1000123", "1000126", "--route", "B=busy", "--watch",
                "--token", TOKEN, env=client_env(secured, token=None))
    assert res.returncode == 4, res.stdout + res.stderr
    last = res.stdout.splitlines()[-1]
    assert last.startswith("failed: b_busy [") and "B USER_BUSY" in last, res.stdout


def test_every_leg_option_reaches_the_api(secured: Run) -> None:
    res = fsctl("call", "1000123", "1000127", "--first", "B", "--simultaneous", "--from",
                "A=1000999", "--caller-id-name", "Shop", "--ring-timeout", "B=7", "--route",
                "A=noanswer", "--json", env=client_env(secured))
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    a, b = rec["legs"]["A"], rec["legs"]["B"]
    assert (rec["mode"], rec["first"]) == ("simultaneous", "B")
    assert (a["from"], b["from"]) == ("1000999", "1000123")
    assert a["caller_id_name"] == b["caller_id_name"] == "Shop"
    assert (a["ring_timeout"], b["ring_timeout"]) == (30, 7)
    assert (a["route"], b["route"]) == ("noanswer", "default")
    # cancel: the worker cancels what rings; --watch follows it to the end
    res = fsctl("cancel", rec["id"], "--watch", env=client_env(secured))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines()[-1].startswith("cancelled"), res.stdout
    status = json.loads(fsctl("status", rec["id"], "--json", env=client_env(secured)).stdout)
    assert status["state"] == "cancelled"


def test_on_a_terminal_the_watch_is_a_live_table(secured: Run) -> None:
    """A terminal (a pty here) gets rich's live view: styles, the legs table, the end line."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "fsctl", "call", "1000123", "1000129",
                             "--watch"], env={**client_env(secured), "TERM": "xterm",
                                              "COLUMNS": "100"},
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            try:
                chunks.append(os.read(master, 65536))
            except OSError:  # EIO: the child closed the terminal
                break
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.wait(timeout=10) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert ANSI.search(screen), "styled"
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    headers = {line.split() == ["leg", "to", "state", "ringing", "answered", "bridged",
                                "hungup", "cause", "sip"] for line in text.splitlines()}
    assert True in headers, text  # 100 columns: the compact table (no from, route, dialed)
    assert re.search(r"^A\s+1000123\s+hungup\s", text, re.MULTILINE), text
    assert re.search(r"completed: talk time \d+\.\d s\s*$", text), text[-2000:]


def test_a_refused_request_is_one_line_with_the_api_reason(secured: Run) -> None:
    res = fsctl("call", "1000123", "1000125", env=client_env(secured, token=None))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "fsctl: 401 missing bearer token (give --token or set FSCTL_TOKEN)"]
    res = fsctl("call", "1000123", "1000125", "--ring-timeout", "2", env=client_env(secured))
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "422" in res.stderr and "leg_A.ring_timeout" in res.stderr, res.stderr
    res = fsctl("status", "f" * 32, env=client_env(secured))
    assert res.returncode == 1 and "404" in res.stderr, res.stderr


def test_status_ls_and_tail(secured: Run) -> None:
    tail = subprocess.Popen([sys.executable, "-m", "fsctl", "tail", "--exit-after", "1"],
                            env=client_env(secured), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert tail.stderr is not None
        banner = tail.stderr.readline()  # printed once tail has read what exists
        assert "following callbacks at" in banner, banner
        res = fsctl("call", "1000123", "1000128", env=client_env(secured))
        assert res.returncode == 0, res.stderr
        callback_id = res.stdout.split()[1]
        out, err = tail.communicate(timeout=30)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert tail.returncode == 0, err
    mine = [line for line in out.splitlines() if callback_id in line]
    assert any(line.endswith("  bridged") for line in mine), out
    assert mine[-1].split("  ", 3)[3].startswith("completed: talk time"), mine
    res = fsctl("status", callback_id, env=client_env(secured))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"callback {callback_id}  completed  talk "), res.stdout
    assert re.search(r"^\s+A\s+1000123\s+1000128\s+default\s+hungup\s", res.stdout,
                     re.MULTILINE), \
        res.stdout  # leg, to, from (the other leg's number), route, state
    res = fsctl("ls", "--state", "completed", "--limit", "100", env=client_env(secured))
    assert res.returncode == 0 and callback_id in res.stdout, res.stdout
    assert res.stdout.split()[:3] == ["id", "created", "state"]
    res = fsctl("ls", "--state", "cancelled", "--json", env=client_env(secured))
    assert res.returncode == 0 and callback_id not in res.stdout


def test_the_printed_fs_cli_password_opens_the_simulators_event_socket(secured: Run) -> None:
    line = next(ln for ln in secured.output().splitlines() if "fs_cli -H" in ln)
    argv = shlex.split(line[line.index("fs_cli -H"):])
    assert argv[-2:] == ["-x", "show channels as json"]
    host, port, password = argv[2], int(argv[4]), argv[6]
    assert (host, port) == ("127.0.0.1", secured.ports[2])
    esl = ESLClient(host, port, password)
    esl.connect()
    try:
        assert "row_count" in json.loads(esl.api("show channels as json"))
    finally:
        esl.close()
    wrong = ESLClient(host, port, password + "x")
    with pytest.raises(AuthFailed):
        wrong.connect()
    if shutil.which("fs_cli"):  # the very line, with FreeSWITCH's own fs_cli
        res = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
        assert res.returncode == 0 and "row_count" in res.stdout, res.stdout + res.stderr


def test_an_unreachable_api_is_one_line_and_exit_3() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for args in (["status", "abc"], ["ls"], ["call", "1000123", "1000125", "--watch"]):
        res = fsctl(*args, "--url", dead)
        assert res.returncode == 3, res
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.startswith(f"fsctl: cannot reach the API at {dead}"), res.stderr


def test_version_and_help_name_every_command() -> None:
    res = fsctl("--version")
    assert res.returncode == 0 and re.fullmatch(r"fsctl \d+\.\d+\.\d+\n", res.stdout), res
    res = fsctl("--help")
    assert res.returncode == 0
    for name in ("api", "worker", "simulate", "run", "token", "call", "status", "ls", "tail",
                 "cancel"):
        assert re.search(rf"^\s+{name}\s", res.stdout, re.MULTILINE), (name, res.stdout)
    res = fsctl("call", "1000123")
    assert res.returncode == 2 and "B_NUMBER" in res.stderr


@pytest.mark.parametrize("which", ["api", "simulator"])
def test_fsctl_run_with_a_busy_port_is_one_error_line(tmp_path: Path, which: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        api_port = port if which == "api" else free_port()
        esl_port = port if which == "simulator" else free_port()
        redis_port = free_port()
        res = subprocess.run(
            [sys.executable, "-m", "fsctl", "run", "--var", str(tmp_path / "var"),
             "--redis-port", str(redis_port), "--esl-port", str(esl_port)],
            env=clean_env(FSCTL_API_PORT=str(api_port)), capture_output=True, text=True,
            timeout=60, check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "Traceback" not in out and "fsctl is running" not in out, out
    errors = [line for line in out.splitlines() if "already in use" in line]
    assert len(errors) == 1 and f"127.0.0.1:{port} is already in use" in errors[0], out
    with pytest.raises(TimeoutError):  # nothing was started: not even its Redis
        wait_port("127.0.0.1", redis_port, 0.2)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """`fsctl run` with nothing configured (the README's first run), short simulated calls."""
    run = start_run(tmp_path_factory.mktemp("first-run"), "--answer-delay", "0.2",
                    "--talk", "0.5")
    try:
        yield run
    finally:
        stop_run(run)


def test_the_readme_example_can_be_repeated_10_times(embedded: Run) -> None:
    import httpx

    assert "development setting: FSCTL_DEST_MAX_PER_HOUR=1000" in embedded.output()
    ids = []
    with httpx.Client(base_url=embedded.url, timeout=10) as client:
        for _ in range(10):
            resp = client.post("/voice/call/callback", json=SEED)
            assert resp.status_code == 202, resp.text  # main said 429 from the seventh on
            ids.append(resp.json()["id"])
        deadline = time.monotonic() + 30
        for callback_id in ids:
            while (state := client.get(f"/voice/call/callback/{callback_id}").json()["state"]) \
                    not in ("completed", "failed", "cancelled"):
                assert time.monotonic() < deadline, f"{callback_id} still {state}"
                time.sleep(0.1)
            assert state == "completed"


def test_sigkill_of_fsctl_run_leaves_no_child_alive(embedded: Run) -> None:
    children = children_of(embedded.proc.pid)
    assert len(children) == 4 and set(children) == set(embedded.children), children
    # (redis-server, simulator, API, worker)
    embedded.proc.kill()
    embedded.proc.wait()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in children):
        assert time.monotonic() < deadline, [p for p in children if alive(p)]
        time.sleep(0.1)
    for port in embedded.ports:
        with pytest.raises(TimeoutError):
            wait_port("127.0.0.1", port, 0.2)
