"""Benchmark on a real FreeSWITCH: CPU per callback of fsctl and of a raw-ESL baseline.

    .venv/bin/python tests/bench/realfs_part.py [--rate 20] [--seconds 20] [--json]

Needs ``freeswitch`` (1.11) and ``sipp`` on PATH (else :class:`Unavailable`). Starts one
FreeSWITCH on the benchmark's own copy of ``freeswitch-conf/`` (tests/realfs.py) with
``sessions-per-second`` lifted to :data:`SPS` (30 in the repository's configuration: every
leg counts, and 20 callbacks/s are 40 legs/s) and ``max-sessions`` to :data:`MAX_SESSIONS`,
one sipp switchboard (tests/sip/), and runs the same callbacks through fsctl and through the
baseline, :data:`ROUNDS` times each in ABBA order (fsctl, baseline, baseline, fsctl: the VM's
speed drifts, and alternating cancels a steady drift from the comparison), on that same
FreeSWITCH and the same far ends, letting FreeSWITCH settle to 0 channels before, between
and after; each side's figures pool its rounds:

1. fsctl: a redis-server, ``python -m fsctl worker`` and ``python -m fsctl api`` (separate
   processes; the worker logs in as ``fsctl@fsctl.local``), callbacks POSTed open-loop
   (tests/bench/common.open_loop) to ``/voice/call/callback`` on a "sip" route to the
   switchboard, until every callback is final in Redis;
2. the baseline: tests/bench/baseline_esl.py in a child process, one raw ESL socket doing the
   same originates and bridges.

A callback: A (a ``10004…`` number: rings 0.3 s, answers, would talk 8 s) is called first, on
its answer B (a DEFAULT number: rings 0.3 s, answers, hangs up 2 s later), then A and B are
bridged; B's BYE ends both. CPU seconds (user + system from /proc) are read per process over
the load window plus the drain (first request to last callback final): FreeSWITCH, and the
controller: fsctl's API, worker and Redis, or the baseline script. sipp and this load
generator are reported apart, not counted. Both runs have one warm-up callback before the
window. Capacity = 2 cores × 1000 / (FreeSWITCH ms + controller ms per callback).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import http.client  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
REPO = TESTS.parent
for _path in (str(REPO), str(TESTS), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import gevent  # noqa: E402
import redis  # noqa: E402
from baseline_esl import WARMUP_INDEX, numbers  # noqa: E402
from common import CpuMeter, LoadResult, open_loop, self_cpu_seconds  # noqa: E402
from procs import terminate_group  # noqa: E402

from fsctl.embedded import free_port, start_redis, wait_port  # noqa: E402

SPS = 1000
"""sessions-per-second of the benchmark's copy of freeswitch-conf/ (the repository's: 30)."""
MAX_SESSIONS = 5000
"""max-sessions of that copy (the repository's: 1000)."""
CORES = 2
"""The capacity figure assumes a machine of this many cores, all for FreeSWITCH + controller."""
ROUNDS = 2
"""Rounds of the two runs, in ABBA order (fsctl, baseline, baseline, fsctl, …): this VM's
speed drifts by ±10–20 % over minutes, and alternating cancels a steady drift from the
comparison; the figures pool every round (CPU seconds and callbacks summed)."""
ORDER = "fsctl and the baseline alternating, ABBA"
START_TIMEOUT_S = 20.0
"""Longest wait for the API to listen / the baseline to connect and warm up."""
WARMUP_TIMEOUT_S = 60.0
"""Longest wait for the warm-up callback to be final."""
DRAIN_TIMEOUT_S = 90.0
"""Longest wait, after the last POST, for every callback to be final."""
SETTLE_TIMEOUT_S = 30.0
"""Longest wait for FreeSWITCH to have no channel left."""
STOP_TIMEOUT_S = 10.0
PROGRESS_EVERY_S = 0.3
FINAL_STATES = ("completed", "failed", "cancelled")
"""fsctl's final states (fsctl.model.FINAL_STATES), each a zset ``fsctl:state:<state>``."""
THROTTLE_LINES = ("Throttle Error", "Over Session Rate", "Over Session Limit")
"""What FreeSWITCH logs when it refuses a session for sessions-per-second / max-sessions."""

Progress = Callable[[str, int, int, dict[str, Any]], None]


class Unavailable(Exception):
    """This benchmark cannot run here (no freeswitch, sipp or redis-server)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _harness() -> ModuleType:
    """tests/realfs.py (the FreeSWITCH harness), loaded by path: this file is also called
    realfs, so ``import realfs`` could find this one."""
    name = "fsctl_tests_realfs"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TESTS / "realfs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def check_available() -> None:
    """Raise :class:`Unavailable` unless freeswitch, its modules, sipp and redis-server exist."""
    import sipp

    from fsctl.embedded import find_redis_server
    from fsctl.errors import ConfigError

    harness = _harness()
    try:
        harness.binary()
        sipp.binary()
    except RuntimeError as exc:
        raise Unavailable(str(exc)) from None
    if not harness.modules_dir().is_dir():
        raise Unavailable(f"no FreeSWITCH modules in {harness.modules_dir()} "
                          "(FSCTL_FS_MODULES overrides)")
    try:
        find_redis_server()
    except ConfigError as exc:
        raise Unavailable(str(exc)) from None


# -- FreeSWITCH ------------------------------------------------------------------------------


def channel_count(fs: Any) -> int:
    """Channels FreeSWITCH has now (``show channels count``: ``N total.``)."""
    reply = fs.api("show channels count").strip()
    return int(reply.split()[0]) if reply[:1].isdigit() else -1


def settle(fs: Any, timeout_s: float = SETTLE_TIMEOUT_S) -> int:
    """Wait until FreeSWITCH has no channel (at most ``timeout_s``); the channels left."""
    deadline = time.monotonic() + timeout_s
    left = channel_count(fs)
    while left != 0 and time.monotonic() < deadline:
        gevent.sleep(0.25)
        left = channel_count(fs)
    gevent.sleep(0.5)  # the last CHANNEL_DESTROYs and their sqlite writes
    return left


def throttling(log: str) -> dict[str, int]:
    return {line: log.count(line) for line in THROTTLE_LINES}


def log_problems(log: str) -> list[str]:
    """Lines of a slice of FreeSWITCH's log at WARNING or above (but the start-up ones it
    always writes, tests/realfs.STARTUP_WARNINGS_ALLOWED)."""
    allowed = _harness().STARTUP_WARNINGS_ALLOWED
    return [line for line in log.splitlines()
            if any(f"[{level}]" in line for level in ("WARNING", "ERR", "CRIT", "ALERT", "EMERG"))
            and not any(p.search(line) for p in allowed)]


def _log_figures(log: str) -> dict[str, Any]:
    problems = log_problems(log)
    return {"throttling": throttling(log), "log_problems": len(problems),
            "log_problems_first": problems[:5]}


# -- fsctl -----------------------------------------------------------------------------------


def _body(i: int) -> dict[str, Any]:
    a, b = numbers(i)
    return {"leg_A": {"to": a, "route": "sip"}, "leg_B": {"to": b, "route": "sip"}}


def _env(fs: Any, sip_port: int, redis_port: int, api_port: int, root: Path) -> dict[str, str]:
    routes = root / "routes.json"
    routes.write_text(json.dumps({"default_route": "sip", "routes": {"sip": {
        "template": f"sofia/fsctl/{{to}}@127.0.0.1:{sip_port}", "allow": [r"[0-9]{7,12}"]}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSCTL_")}
    env.update(FSCTL_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
               FSCTL_ESL_HOST="127.0.0.1", FSCTL_ESL_PORT=str(fs.esl_port),
               FSCTL_ESL_USER=_harness().ESL_USER, FSCTL_ESL_PASSWORD=fs.password,
               FSCTL_API_HOST="127.0.0.1", FSCTL_API_PORT=str(api_port),
               FSCTL_ROUTES_FILE=str(routes), FSCTL_SPOOL_DIR=str(root / "spool"),
               FSCTL_RATE_PER_MINUTE="1000000", FSCTL_MAX_LIVE="1000000",
               FSCTL_DEST_MAX_PER_HOUR="1000000", FSCTL_LOG_LEVEL="WARNING")
    return env


@contextlib.contextmanager
def fsctl_stack(fs: Any, sip_port: int, root: Path) -> Iterator[dict[str, Any]]:
    """A redis-server, an fsctl worker and an fsctl API on ``fs``; stopped on the way out."""
    redis_port, api_port = free_port(), free_port()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    procs["redis"] = start_redis(redis_port, root / "redis")
    try:
        env = _env(fs, sip_port, redis_port, api_port, root)
        for role in ("worker", "api"):
            with open(root / f"{role}.log", "ab") as log:
                procs[role] = subprocess.Popen(
                    [sys.executable, "-m", "fsctl", role], cwd=REPO, env=env,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)
        wait_port("127.0.0.1", api_port, START_TIMEOUT_S)
        yield {"procs": procs, "api_port": api_port,
               "redis": redis.Redis(port=redis_port, decode_responses=True)}
    finally:
        for role in ("api", "worker", "redis"):  # Redis last: the worker writes until it stops
            if role in procs:
                terminate_group(procs[role], STOP_TIMEOUT_S)


def _final(r: redis.Redis) -> dict[str, int]:
    return {s: int(r.zcard(f"fsctl:state:{s}")) for s in FINAL_STATES}


def _post_one(port: int, body: dict[str, Any]) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/voice/call/callback", json.dumps(body),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = resp.read()
        if resp.status != 202:
            raise RuntimeError(f"warm-up callback: HTTP {resp.status} {payload[:300]!r}")
        return str(json.loads(payload)["id"])
    finally:
        conn.close()


def _wait_final(r: redis.Redis, want: int, timeout_s: float) -> int:
    """Wait until ``want`` callbacks are final (at most ``timeout_s``); how many are."""
    deadline = time.monotonic() + timeout_s
    final = sum(_final(r).values())
    while final < want and time.monotonic() < deadline:
        gevent.sleep(0.1)
        final = sum(_final(r).values())
    return final


def _failures(r: redis.Redis, limit: int = 500) -> dict[str, int]:
    """``outcome (A cause/B cause)`` counts of the failed and cancelled callbacks."""
    ids = [i for s in ("failed", "cancelled") for i in r.zrange(f"fsctl:state:{s}", 0, limit)]
    why: Counter[str] = Counter()
    for raw in r.mget([f"fsctl:callback:{i}" for i in ids]) if ids else []:
        if raw is None:
            continue
        rec = json.loads(raw)
        legs = rec.get("legs", {})
        why[f"{rec.get('outcome')} ({legs.get('A', {}).get('hangup_cause')}/"
            f"{legs.get('B', {}).get('hangup_cause')})"] += 1
    return dict(why)


def run_fsctl(fs: Any, far: Any, root: Path, rate: float, count: int,
              progress: Progress | None) -> dict[str, Any]:
    """fsctl's run: warm-up callback, then ``count`` callbacks at ``rate``; CPU per process."""
    with fsctl_stack(fs, far.port, root / "fsctl") as stack:
        r, port, procs = stack["redis"], stack["api_port"], stack["procs"]
        _post_one(port, _body(WARMUP_INDEX))  # the warm-up (also: the worker is connected)
        if _wait_final(r, 1, WARMUP_TIMEOUT_S) < 1 or _final(r)["completed"] != 1:
            raise RuntimeError(f"fsctl's warm-up callback did not complete in "
                               f"{WARMUP_TIMEOUT_S}s: {_final(r)}, {_failures(r)} "
                               f"(see {root / 'fsctl'}/worker.log)")
        settle(fs)
        meter = CpuMeter({"freeswitch": fs.proc.pid, "api": procs["api"].pid,
                          "worker": procs["worker"].pid, "redis": procs["redis"].pid})
        aside = CpuMeter({"sipp": far.proc.pid})
        latest: list[LoadResult] = []
        reporter = gevent.spawn(_report_fsctl, progress, latest, r, count)
        load0 = self_cpu_seconds()
        t0 = time.monotonic()
        meter.start()
        aside.start()
        try:
            load = open_loop(port, rate, count, _body, connections=16, tick=latest.append)
            final = _wait_final(r, len(load.ids) + 1, DRAIN_TIMEOUT_S) - 1
        finally:
            reporter.kill()
        window = time.monotonic() - t0
        cpu, sipp_cpu = _rounded(meter.stop()), _rounded(aside.stop())
        load_cpu = round(self_cpu_seconds() - load0, 3)
        outcomes = _final(r)
        return {"callbacks": count, "accepted": len(load.ids),
                "completed": outcomes["completed"] - 1,  # but the warm-up
                "failed": outcomes["failed"] + outcomes["cancelled"],
                "unfinished": len(load.ids) - final, "failures": _failures(r),
                "window_s": round(window, 2), "cpu_s": cpu,
                "not_counted_cpu_s": {"sipp": sipp_cpu["sipp"], "load generator": load_cpu},
                "http": load.as_dict()}


def _report_fsctl(progress: Progress | None, latest: list[LoadResult], r: redis.Redis,
                  count: int) -> None:
    if progress is None:
        return
    t0 = time.monotonic()
    posted_s = 0.0
    while True:
        gevent.sleep(PROGRESS_EVERY_S)
        load = latest[-1] if latest else None
        sent = load.sent if load else 0
        accepted = len(load.ids) if load else 0
        if sent >= count and not posted_s:
            posted_s = time.monotonic() - t0  # the rate stays that of the posting
        try:
            final = sum(_final(r).values()) - 1  # but the warm-up
        except redis.RedisError:
            final = -1
        rate = accepted / (posted_s or time.monotonic() - t0)
        progress("fsctl", sent, count, {"rate": round(rate, 1), "final": final})


# -- the baseline ----------------------------------------------------------------------------


def _read_json_line(proc: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
    assert proc.stdout is not None
    with gevent.Timeout(timeout_s, TimeoutError(f"baseline silent for {timeout_s}s")):
        line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"baseline exited with {proc.wait(timeout=5)}")
    return dict(json.loads(line))


def run_baseline(fs: Any, far: Any, root: Path, rate: float, seconds: float,
                 progress: Progress | None) -> dict[str, Any]:
    """tests/bench/baseline_esl.py in a child process on the same FreeSWITCH and sipp."""
    argv = [sys.executable, str(HERE / "baseline_esl.py"), "--rate", str(rate),
            "--seconds", str(seconds), "--esl-port", str(fs.esl_port),
            "--password", fs.password, "--sip-port", str(far.port)]
    with open(root / "baseline.log", "ab") as err:
        proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err, text=True, start_new_session=True)
    try:
        ready = _read_json_line(proc, START_TIMEOUT_S + WARMUP_TIMEOUT_S)
        if ready.get("ready", {}).get("completed") != 1:
            raise RuntimeError(f"baseline warm-up failed: {ready}")
        settle(fs)
        meter = CpuMeter({"freeswitch": fs.proc.pid, "baseline": proc.pid})
        aside = CpuMeter({"sipp": far.proc.pid})
        load0 = self_cpu_seconds()
        t0 = time.monotonic()
        meter.start()
        aside.start()
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        limit = seconds + DRAIN_TIMEOUT_S + 30
        while True:
            msg = _read_json_line(proc, limit)
            if "result" in msg:
                break
            if progress is not None and "progress" in msg:
                progress("baseline", *msg["progress"])
        window = time.monotonic() - t0
        cpu, sipp_cpu = _rounded(meter.stop()), _rounded(aside.stop())
        load_cpu = round(self_cpu_seconds() - load0, 3)
        proc.stdin.close()
        proc.wait(timeout=STOP_TIMEOUT_S)
        result = msg["result"]
        return {**result, "window_s": round(window, 2), "cpu_s": cpu,
                "not_counted_cpu_s": {"sipp": sipp_cpu["sipp"], "this script": load_cpu}}
    finally:
        terminate_group(proc, STOP_TIMEOUT_S)


def _rounded(cpu_s: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in cpu_s.items()}


# -- the whole benchmark ---------------------------------------------------------------------


def _per_callback_ms(cpu_s: dict[str, float], n: int) -> dict[str, float | None]:
    return {k: round(v * 1000 / n, 2) if n else None for k, v in cpu_s.items()}


def _capacity(fs_ms: float | None, controller_ms: float | None) -> float | None:
    if not fs_ms or controller_ms is None:
        return None
    return round(CORES * 1000 / (fs_ms + controller_ms), 1)


def summarise(fsctl: dict[str, Any], base: dict[str, Any], sps: int) -> dict[str, Any]:
    """Per-callback CPU, capacity and the ratio from the two runs' raw figures."""
    f_ms = _per_callback_ms(fsctl["cpu_s"], fsctl["completed"])
    f_ms["controller"] = round(sum(f_ms[k] or 0 for k in ("api", "worker", "redis")), 2)
    b_ms = _per_callback_ms(base["cpu_s"], base["completed"])
    b_ms["controller"] = b_ms["baseline"]
    f_cap = _capacity(f_ms["freeswitch"], f_ms["controller"])
    b_cap = _capacity(b_ms["freeswitch"], b_ms["controller"])
    return {
        "fsctl_ms_per_callback": f_ms, "baseline_ms_per_callback": b_ms,
        "fsctl_capacity_per_s": f_cap, "baseline_capacity_per_s": b_cap,
        "capacity_ratio": round(f_cap / b_cap, 3) if f_cap and b_cap else None,
        "sessions_per_second": sps,
        "note": (f"sessions-per-second lifted to {sps} in the benchmark's own copy of "
                 f"freeswitch-conf (the repository's stays 30); {ORDER}; capacity = {CORES} "
                 "cores x 1000 / (FreeSWITCH + controller CPU ms per completed callback)"),
    }


_SUMMED = ("callbacks", "accepted", "completed", "failed", "unfinished", "channels_left",
           "log_problems", "events", "bytes_in", "commands", "uuid_kills")
"""The counts a pooled run adds up over its rounds."""


def pool(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's rounds as one run: counts, CPU seconds and windows summed, failures and
    throttling counted together, the API latency as its worst round's; each round kept."""
    out: dict[str, Any] = {**rounds[-1]}
    for key in _SUMMED:
        if key in rounds[0]:
            out[key] = sum(r[key] for r in rounds)
    out["window_s"] = round(sum(r["window_s"] for r in rounds), 2)
    for key in ("cpu_s", "not_counted_cpu_s", "throttling", "failures"):
        total: Counter[str] = Counter()
        for r in rounds:
            total.update(r.get(key, {}))
        out[key] = {k: round(v, 3) for k, v in total.items()}
    if "http" in out:
        worst = max(rounds, key=lambda r: r["http"]["api_latency"]["p99_ms"] or 0)
        out["http"] = worst["http"]
    out["log_problems_first"] = [x for r in rounds for x in r.get("log_problems_first", [])][:5]
    out["rounds"] = rounds
    return out


def run(rate: float = 20, seconds: float = 20, progress: Progress | None = None, *,
        sps: int = SPS, max_sessions: int = MAX_SESSIONS, keep: bool = False,
        rounds: int = ROUNDS) -> dict[str, Any]:
    """Both runs, :data:`ROUNDS` times in ABBA order, on one FreeSWITCH and one sipp.

    ``progress(stage, done, total, info)`` is called about every 0.3 s: stage ``"fsctl"`` or
    ``"baseline"``, done = callbacks started so far, total = callbacks of the run, info =
    ``{"rate": started or accepted per s, "final": callbacks final so far}`` (the baseline
    adds ``"phase"``: posting / draining); after each run stage ``"settle"`` with 0/1, then
    1/1 and ``{"channels_left": n}`` once FreeSWITCH is back to 0 channels (or gave up). Raises :class:`Unavailable` when freeswitch, sipp or redis-server are
    missing. Everything started is stopped on the way out, on errors and Ctrl-C too; the
    working directory (logs) is kept when the run failed or with ``keep``.
    """
    check_available()
    harness = _harness()
    import sipp

    count = round(rate * seconds)
    if count < 1:
        raise ValueError("rate x seconds must be at least one callback")
    root = Path(tempfile.mkdtemp(prefix="fsctl-bench-realfs-"))
    fs = harness.FreeSwitch(root / "fs", sessions_per_second=sps, max_sessions=max_sessions)
    far = sipp.Sipp(root / "sipp", trace_messages=False)
    ok = False
    try:
        fs.start()
        far.start()
        out: dict[str, Any] = {"rate": rate, "seconds": seconds, "rounds": rounds,
                               "callbacks": count * rounds,
                               "order": f"{ORDER} over {rounds} rounds", "workdir": str(root)}
        parts: dict[str, list[dict[str, Any]]] = {"fsctl": [], "baseline": []}
        for r in range(rounds):
            for side in ("fsctl", "baseline") if r % 2 == 0 else ("baseline", "fsctl"):
                log_mark = len(fs.log_text())
                if side == "fsctl":
                    (root / f"round{r + 1}").mkdir(exist_ok=True)
                    one = run_fsctl(fs, far, root / f"round{r + 1}", rate, count, progress)
                else:
                    one = run_baseline(fs, far, root, rate, seconds, progress)
                one["channels_left"] = _settle_stage(fs, progress)
                one.update(_log_figures(fs.log_text()[log_mark:]))
                parts[side].append(one)
        out["fsctl"], out["baseline"] = pool(parts["fsctl"]), pool(parts["baseline"])
        out["summary"] = summarise(out["fsctl"], out["baseline"], sps)
        ok = all(out[k]["channels_left"] == 0 and not out[k]["unfinished"]
                 for k in ("fsctl", "baseline"))
        return out
    finally:
        far.stop()
        fs.stop()
        harness.stop_all()
        if ok and not keep:
            shutil.rmtree(root, ignore_errors=True)


def _settle_stage(fs: Any, progress: Progress | None) -> int:
    if progress is not None:
        progress("settle", 0, 1, {})
    left = settle(fs)
    if progress is not None:
        progress("settle", 1, 1, {"channels_left": left})
    return left


# -- as a script -----------------------------------------------------------------------------


def table(out: dict[str, Any]) -> str:
    """The side-by-side table of a :func:`run` result."""
    s, f, b = out["summary"], out["fsctl"], out["baseline"]
    fm, bm = s["fsctl_ms_per_callback"], s["baseline_ms_per_callback"]

    def cell(v: Any) -> str:
        return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    rows = [
        ("callbacks completed / failed / unfinished",
         f"{f['completed']} / {f['failed']} / {f['unfinished']}",
         f"{b['completed']} / {b['failed']} / {b['unfinished']}"),
        ("window (load + drain), s", cell(f["window_s"]), cell(b["window_s"])),
        ("fsctl API latency p50 / p99, ms",
         f"{cell(f['http']['api_latency']['p50_ms'])} / {cell(f['http']['api_latency']['p99_ms'])}",
         ""),
        ("FreeSWITCH CPU ms / callback", cell(fm["freeswitch"]), cell(bm["freeswitch"])),
        ("  fsctl API", cell(fm["api"]), ""),
        ("  fsctl worker", cell(fm["worker"]), ""),
        ("  Redis", cell(fm["redis"]), ""),
        ("  baseline script", "", cell(bm["baseline"])),
        ("controller total", cell(fm["controller"]), cell(bm["controller"])),
        (f"capacity, callbacks/s on {CORES} cores", cell(s["fsctl_capacity_per_s"]),
         cell(s["baseline_capacity_per_s"])),
        ("not counted: sipp CPU s", cell(round(f["not_counted_cpu_s"]["sipp"], 2)),
         cell(round(b["not_counted_cpu_s"]["sipp"], 2))),
        ("not counted: load generator CPU s",
         cell(round(f["not_counted_cpu_s"]["load generator"], 2)),
         cell(round(b["not_counted_cpu_s"]["this script"], 2))),
        ("channels left / throttling / warning+ lines",
         f"{f['channels_left']} / {sum(f['throttling'].values())} / {f['log_problems']}",
         f"{b['channels_left']} / {sum(b['throttling'].values())} / {b['log_problems']}"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  {'fsctl':>14}  {'baseline':>14}"]
    lines += [f"{name:{width}}  {x:>14}  {y:>14}" for name, x, y in rows]
    lines.append(f"capacity ratio fsctl / baseline: {cell(s['capacity_ratio'])}")
    lines.append(s["note"])
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=20.0, help="callbacks per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long to post them")
    ap.add_argument("--sps", type=int, default=SPS, help="FreeSWITCH sessions-per-second")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (logs)")
    ap.add_argument("--json", action="store_true", help="only the JSON")
    args = ap.parse_args()

    def progress(stage: str, done: int, total: int, info: dict[str, Any]) -> None:
        print(f"\r{stage:9} {done:5}/{total:<5} {json.dumps(info):60}", end="",
              file=sys.stderr, flush=True)

    try:
        out = run(args.rate, args.seconds, None if args.json else progress, sps=args.sps,
                  keep=args.keep)
    except Unavailable as exc:
        print(f"skipped: {exc.reason}")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: everything it started is stopped", file=sys.stderr)
        return 130
    if not args.json:
        print(file=sys.stderr)
        print(table(out))
    print(json.dumps(out, indent=2))
    f, b = out["fsctl"], out["baseline"]
    return 0 if not (f["unfinished"] or b["unfinished"] or f["failed"] or b["failed"]) else 1


if __name__ == "__main__":
    sys.exit(main())
