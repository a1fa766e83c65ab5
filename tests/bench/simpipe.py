"""Benchmark: the whole pipeline on the simulator, open loop (the simulator part of make bench).

    .venv/bin/python tests/bench/simpipe.py [--quick] [--rate 500] [--json-only]

HTTP → Redis → worker → simulator → answer, bridge, talk, hangup → final state, with real
processes on 127.0.0.1: a redis-server (fsctl.embedded.start_redis), ``fsctl simulate``
(sessions-per-second and max-sessions lifted, ``--trace``), then fsctl's ``worker`` and
``api``. Every leg is dialled as ``user/<number>``, which the simulator answers as a SIP
leg: every event carries the sofia variables of a real FreeSWITCH's leg
(fsctl/simulator/sofia_vars.py), so events have their real size.

Latencies:

- API: answer time − the request's scheduled send time (common.open_loop, open loop).
- dispatch: the callback record's own ``created_at`` in Redis (fsctl: the API's
  ``time.time()`` when it accepted the request; stock: the same, written by its API) → the
  simulator's "originate received" time of leg A (its trace).
- bridge: the simulator's "CHANNEL_PARK sent" of leg B → its "uuid_bridge received".

Stages: (a) a sustained run at ``rate`` for 60 s; (b) a curve of offered rate against p99
latencies; (c) worker memory with 10,000 concurrent bridged callbacks (a fresh stack whose
calls talk for 600 s); (d) the same curve against tests/bench/stock_controller.py (stock
greenswitch) on a fresh stack, and the ratio of the highest rates at which each one
"holds" (see :data:`HOLD_BOUNDS`).

Every process is stopped in ``finally`` (Ctrl-C too); every wait is bounded. Not collected
by pytest: speed is measured here, never asserted in tests.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
for _path in (str(HERE.parent), str(HERE.parent.parent)):  # tests/ and the repo root
    if _path not in sys.path:
        sys.path.insert(0, _path)

import gevent  # noqa: E402
import redis  # noqa: E402
from bench.common import (  # noqa: E402
    CpuMeter,
    LoadResult,
    open_loop,
    percentile,
    rss_bytes,
    self_cpu_seconds,
    summary_ms,
)
from procs import kill_group, terminate_group  # noqa: E402

from fsctl.embedded import free_port, start_redis, wait_port  # noqa: E402

Progress = Callable[[str, int, int, dict[str, Any]], None]

PASSWORD = "bench-simpipe-password-1"
ANSWER_DELAY_S = 0.2
TALK_S = 1.0
SUSTAINED = {"rate": 500.0, "seconds": 60.0}
SUSTAINED_QUICK = {"rate": 30.0, "seconds": 3.0}
CURVE_RATES = (100, 200, 300, 400, 500, 600, 800)
CURVE_RATES_QUICK = (20, 40)
CURVE_S, CURVE_S_QUICK = 10.0, 2.0
MEMORY = {"callbacks": 10_000, "rate": 200.0, "talk_s": 600.0}
MEMORY_QUICK = {"callbacks": 200, "rate": 100.0, "talk_s": 600.0}
NOMINAL_CALLBACK_S = 2 * ANSWER_DELAY_S + TALK_S + 0.05
"""How long one callback lasts on an idle stack (two answers, the talk, the originates'
return): completed/s counts completions over the load's wall time plus the drain minus it."""
MAX_SESSIONS = 40_000
"""The simulator's max-sessions: 10,000 bridged callbacks are 20,000 channels, and fsctl's
worker uses 80 % of its node's limit (FSCTL_CAPACITY_HEADROOM)."""
HOLD_BOUNDS = {"api_p99_ms": 100.0, "dispatch_p99_ms": 100.0, "bridge_p99_ms": 50.0}
"""A controller "holds" an offered rate when every request is accepted, every callback
completes (0 lost) and these p99 bounds are met; the ratio at equal p99 compares the
highest rates of the curve each controller holds."""
DRAIN_S = 60.0
"""Longest wait, after the last request, for every callback to be final."""
TRACE_WAIT_S = 5.0
"""Longest wait for the simulator's trace to hold every completed callback's records."""
START_S = 20.0
"""Longest wait for a process to listen, and for the first callback through the stack."""
POLL_S = 0.4
"""How often waits look again (and report progress)."""
STOCK = HERE / "stock_controller.py"
FINAL_STATES = frozenset({"completed", "failed", "cancelled"})
STAGES = ("sustained", "curve_fsctl", "memory", "curve_stock")


# ---- the simulator's trace ---------------------------------------------------------------


@dataclass
class TraceReader:
    """Reads the simulator's trace (fsctl/simulator/trace.py) as it grows."""

    path: Path
    offset: int = 0
    tail: bytes = b""
    legs: dict[str, dict[str, tuple[float, str]]] = field(default_factory=dict)
    """callback id → leg (A/B) → (originate received, uuid)."""
    parked: dict[str, float] = field(default_factory=dict)
    bridged: dict[str, float] = field(default_factory=dict)
    """B leg's uuid → uuid_bridge received."""

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        self.offset += len(data)
        lines = (self.tail + data).split(b"\n")
        self.tail = lines.pop()
        for line in lines:
            if line:
                self._add(json.loads(line))

    def _add(self, rec: dict[str, Any]) -> None:
        ev = rec["ev"]
        if ev == "originate" and rec.get("cid"):
            self.legs.setdefault(rec["cid"], {}).setdefault(rec["leg"], (rec["t"], rec["uuid"]))
        elif ev == "park":
            self.parked.setdefault(rec["uuid"], rec["t"])
        elif ev == "bridge":
            self.bridged.setdefault(rec["b"], rec["t"])

    def complete(self, cid: str) -> bool:
        legs = self.legs.get(cid, {})
        return "A" in legs and "B" in legs and legs["B"][1] in self.bridged

    def dispatch_s(self, cid: str, accepted_at: float) -> float | None:
        leg = self.legs.get(cid, {}).get("A")
        return None if leg is None else leg[0] - accepted_at

    def bridge_s(self, cid: str) -> float | None:
        leg = self.legs.get(cid, {}).get("B")
        if leg is None or leg[1] not in self.bridged or leg[1] not in self.parked:
            return None
        return self.bridged[leg[1]] - self.parked[leg[1]]


# ---- the processes -----------------------------------------------------------------------


class Stack:
    """redis-server + simulator + one controller (fsctl's or the stock one: api + worker)."""

    def __init__(self, kind: str, talk_s: float, root: Path) -> None:
        self.kind = kind
        self.talk_s = talk_s
        self.dir = Path(tempfile.mkdtemp(prefix=f"simpipe-{kind}-", dir=root))
        self.rport, self.eport, self.aport = free_port(), free_port(), free_port()
        self.redis_url = f"redis://127.0.0.1:{self.rport}/0"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.trace = TraceReader(self.dir / "trace.jsonl")
        self.r: redis.Redis | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FSCTL_")}
        routes = self.dir / "routes.json"
        routes.write_text(json.dumps({"routes": {"default": {"template": "user/{to}",
                                                             "allow": [r"[0-9]{4,15}"]}}}))
        env.update(FSCTL_REDIS_URL=self.redis_url, FSCTL_ESL_HOST="127.0.0.1",
                   FSCTL_ESL_PORT=str(self.eport), FSCTL_ESL_PASSWORD=PASSWORD,
                   FSCTL_API_PORT=str(self.aport), FSCTL_ROUTES_FILE=str(routes),
                   FSCTL_RATE_PER_MINUTE="1000000", FSCTL_MAX_LIVE="1000000",
                   FSCTL_DEST_MAX_PER_HOUR="1000000", FSCTL_LOG_LEVEL="WARNING")
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = (self.dir / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        log.close()

    def start(self) -> Stack:
        env = self.env()
        self.procs["redis"] = start_redis(self.rport, self.dir / "redis")
        self._spawn("simulator", [
            sys.executable, "-m", "fsctl", "simulate", "--port", str(self.eport),
            "--answer-delay", str(ANSWER_DELAY_S), "--talk", str(self.talk_s),
            "--log-level", "WARNING", "--sessions-per-second", "100000",
            "--max-sessions", str(MAX_SESSIONS), "--trace", str(self.trace.path)], env)
        wait_port("127.0.0.1", self.rport, START_S)
        wait_port("127.0.0.1", self.eport, START_S)
        if self.kind == "fsctl":
            self._spawn("worker", [sys.executable, "-m", "fsctl", "worker"], env)
            self._spawn("api", [sys.executable, "-m", "fsctl", "api"], env)
        else:
            self._spawn("worker", [sys.executable, str(STOCK), "worker", "--esl",
                                   f"127.0.0.1:{self.eport}:{PASSWORD}",
                                   "--redis", self.redis_url], env)
            self._spawn("api", [sys.executable, str(STOCK), "api", "--port", str(self.aport),
                                "--redis", self.redis_url], env)
        wait_port("127.0.0.1", self.aport, START_S)
        self.r = redis.Redis.from_url(self.redis_url, decode_responses=True, socket_timeout=10)
        return self

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.dir / f"{name}.log").read_text(errors="replace")[-2000:] \
                    if (self.dir / f"{name}.log").exists() else ""
                raise RuntimeError(f"{self.kind} {name} exited ({proc.returncode}): {tail}")

    def stop(self) -> None:
        for name in ("api", "worker", "simulator"):
            terminate_group(self.procs.get(name), 5.0)
        kill_group(self.procs.get("redis"))
        self.procs.clear()

    # -- what the controller wrote --

    def final_count(self) -> int:
        """Callbacks in a final state so far (cheap: the state indexes)."""
        assert self.r is not None
        if self.kind == "fsctl":
            pipe = self.r.pipeline(transaction=False)
            for state in ("completed", "failed", "cancelled"):
                pipe.zcard(f"fsctl:state:{state}")
        else:
            pipe = self.r.pipeline(transaction=False)
            for state in ("completed", "failed"):
                pipe.scard(f"stock:final:{state}")
        return sum(pipe.execute())

    def bridged_count(self) -> int:
        """Callbacks bridged now (fsctl's state index; the stock controller: bridges the
        simulator traced, hung up or not)."""
        assert self.r is not None
        if self.kind == "fsctl":
            return int(self.r.zcard("fsctl:state:bridged"))
        self.trace.poll()
        return len(self.trace.bridged)

    def records(self, ids: list[str]) -> dict[str, tuple[str, float]]:
        """callback id → (state, created_at) as the controller stored it."""
        assert self.r is not None
        out: dict[str, tuple[str, float]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            if self.kind == "fsctl":
                raws = self.r.mget([f"fsctl:callback:{c}" for c in chunk])
                for cid, raw in zip(chunk, raws, strict=True):
                    if raw:
                        rec = json.loads(raw)
                        out[cid] = (rec["state"], float(rec["created_at"]))
            else:
                pipe = self.r.pipeline(transaction=False)
                for cid in chunk:
                    pipe.hmget(f"stock:callback:{cid}", ["state", "created_at"])
                for cid, (state, created) in zip(chunk, pipe.execute(), strict=True):
                    if state:
                        out[cid] = (state, float(created))
        return out


# ---- one measured step -------------------------------------------------------------------


def body_for(base: int) -> Callable[[int], dict[str, Any]]:
    """Request bodies with numbers never used before in this stack."""
    def body(i: int) -> dict[str, Any]:
        n = base + i
        return {"leg_A": {"to": f"2{n:07d}"}, "leg_B": {"to": f"3{n:07d}"}}
    return body


def wait_until(what: Callable[[], int], target: int, timeout_s: float, stack: Stack,
               report: Callable[[int], None]) -> tuple[int, float]:
    """Poll ``what()`` until it reaches ``target`` or ``timeout_s`` passes: (value, waited)."""
    t0 = time.monotonic()
    value = what()
    while value < target and time.monotonic() - t0 < timeout_s:
        report(value)
        stack.check_alive()
        gevent.sleep(POLL_S)
        value = what()
    report(value)
    return value, time.monotonic() - t0


def drain(stack: Stack, ids: list[str], final0: int, report: Callable[[int], None]
          ) -> tuple[int, float, dict[str, tuple[str, float]]]:
    """Wait (at most :data:`DRAIN_S`) until every one of ``ids`` is final: the state indexes
    first (cheap), then each record. (finals, seconds waited, the records)."""
    t0 = time.monotonic()
    while True:
        _, _ = wait_until(stack.final_count, final0 + len(ids), DRAIN_S - (time.monotonic() - t0),
                          stack, report)
        records = stack.records(ids)
        final = sum(1 for state, _ in records.values() if state in FINAL_STATES)
        if final >= len(ids) or time.monotonic() - t0 >= DRAIN_S:
            return final, time.monotonic() - t0, records
        report(final0 + final)
        gevent.sleep(1.0)


def wait_traced(stack: Stack, ids: list[str]) -> None:
    """Wait (at most :data:`TRACE_WAIT_S`) until the simulator's trace has all of ``ids``."""
    deadline = time.monotonic() + TRACE_WAIT_S
    while True:
        stack.trace.poll()
        if all(stack.trace.complete(c) for c in ids) or time.monotonic() > deadline:
            return
        gevent.sleep(POLL_S)


def post_load(stack: Stack, stage: str, rate: float, count: int, base: int,
              progress: Progress | None) -> tuple[LoadResult, float]:
    """Open-loop POSTs; the load generator's (this process's) CPU seconds alongside."""
    def tick(res: LoadResult) -> None:
        if progress is not None:
            progress(stage, res.sent, count, {"rate": rate, "accepted": len(res.ids),
                                               "p99_ms": _ms(percentile(res.latencies_s, 99))})
    cpu0 = self_cpu_seconds()
    res = open_loop(stack.aport, rate, count, body_for(base), tick=tick)
    return res, self_cpu_seconds() - cpu0


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


def run_step(stack: Stack, stage: str, rate: float, seconds: float, base: int,
             progress: Progress | None) -> dict[str, Any]:
    """Offer ``rate`` callbacks/s for ``seconds``, wait until every one is final, measure."""
    count = max(1, round(rate * seconds))
    final0 = stack.final_count()
    meter = CpuMeter(stack.pids()).start()
    res, loadgen_cpu = post_load(stack, stage, rate, count, base, progress)
    accepted = len(res.ids)

    def report(value: int) -> None:
        if progress is not None:
            progress(f"{stage} drain", value - final0, accepted, {"rate": rate,
                                                                 "final": value - final0})
    final, drain_s, records = drain(stack, res.ids, final0, report)
    cpu = meter.stop()
    cpu["loadgen"] = loadgen_cpu
    completed = [cid for cid, (state, _) in records.items() if state == "completed"]
    wait_traced(stack, completed)
    dispatch = [d for cid, (_, created) in records.items()
                if (d := stack.trace.dispatch_s(cid, created)) is not None]
    bridge = [b for cid in completed if (b := stack.trace.bridge_s(cid)) is not None]
    states: dict[str, int] = {}
    for state, _ in records.values():
        states[state] = states.get(state, 0) + 1
    load = res.as_dict()
    return {
        "offered_per_s": rate, "seconds": seconds, "sent": res.sent, "accepted": accepted,
        "http_codes": load["codes"], "http_errors": load["errors"],
        "completed": len(completed), "lost": accepted - len(completed), "states": states,
        "final_after_drain": final, "load_wall_s": round(res.wall_s, 2),
        "drain_s": round(drain_s, 2),
        "completed_per_s": round(len(completed) / max(res.wall_s, res.wall_s + drain_s
                                                      - NOMINAL_CALLBACK_S), 1),
        "api_latency": load["api_latency"], "dispatch_latency": summary_ms(dispatch),
        "bridge_latency": summary_ms(bridge),
        "cpu_ms_per_callback": {name: round(s * 1000 / max(1, accepted), 3)
                                for name, s in cpu.items()},
        "cpu_s": {name: round(s, 2) for name, s in cpu.items()},
    }


def holds(step: dict[str, Any]) -> bool:
    """Every request accepted, every callback completed, the p99 bounds met."""
    def p99(key: str) -> float:
        value = step[key]["p99_ms"]
        return float("inf") if value is None else value
    return (step["accepted"] == step["sent"] and step["lost"] == 0
            and p99("api_latency") <= HOLD_BOUNDS["api_p99_ms"]
            and p99("dispatch_latency") <= HOLD_BOUNDS["dispatch_p99_ms"]
            and p99("bridge_latency") <= HOLD_BOUNDS["bridge_p99_ms"])


# ---- the stages --------------------------------------------------------------------------


class Numbers:
    """Hands out blocks of unused destination numbers (numbers are never reused)."""

    def __init__(self) -> None:
        self.next = 1

    def take(self, count: int) -> int:
        base, self.next = self.next, self.next + count
        return base


def warm_up(stack: Stack, numbers: Numbers, final: bool = True) -> None:
    """One callback through the whole stack, so that every process is connected and ready."""
    res = open_loop(stack.aport, 10.0, 1, body_for(numbers.take(1)))
    if not res.ids:
        raise RuntimeError(f"{stack.kind}: the first callback was refused: {res.as_dict()}")
    if final:
        got, _ = wait_until(stack.final_count, 1, START_S, stack, lambda v: None)
    else:
        got, _ = wait_until(stack.bridged_count, 1, START_S, stack, lambda v: None)
    if got < 1:
        raise RuntimeError(f"{stack.kind}: the first callback did not get through in {START_S}s")


def curve(stack: Stack, label: str, rates: tuple[int, ...], seconds: float, numbers: Numbers,
          progress: Progress | None) -> list[dict[str, Any]]:
    """One step per offered rate; stops after a step that did not drain (a backlog would
    spoil every higher rate)."""
    points = []
    for rate in rates:
        step = run_step(stack, f"curve {label} {rate}/s", rate, seconds,
                        numbers.take(round(rate * seconds) + 1), progress)
        step["holds"] = holds(step)
        points.append(step)
        if step["final_after_drain"] < step["accepted"]:
            break
    return points


def memory(root: Path, spec: dict[str, float], progress: Progress | None) -> dict[str, Any]:
    """Worker RSS idle and with ``callbacks`` concurrent bridged callbacks (fresh stack)."""
    stack = Stack("fsctl", spec["talk_s"], root)
    try:
        stack.start()
        numbers = Numbers()
        warm_up(stack, numbers, final=False)
        gevent.sleep(1.0)
        worker_pid, sim_pid = stack.procs["worker"].pid, stack.procs["simulator"].pid
        before, sim_before = rss_bytes(worker_pid), rss_bytes(sim_pid)
        count = int(spec["callbacks"])
        res, _ = post_load(stack, "memory submit", spec["rate"], count, numbers.take(count),
                           progress)

        def report(value: int) -> None:
            if progress is not None:
                progress("memory bridged", value, count + 1, {"bridged": value})
        bridged, waited = wait_until(stack.bridged_count, count + 1, DRAIN_S, stack, report)
        gevent.sleep(1.0)
        after, sim_after = rss_bytes(worker_pid), rss_bytes(sim_pid)
        growth = after - before
        return {"callbacks": count, "accepted": len(res.ids), "bridged": bridged - 1,
                "submit_rate": spec["rate"], "waited_s": round(waited, 1),
                "worker_rss_before_mb": round(before / 2**20, 1),
                "worker_rss_after_mb": round(after / 2**20, 1),
                "worker_growth_mb": round(growth / 2**20, 1),
                "worker_kb_per_callback": round(growth / 1024 / max(1, bridged - 1), 2),
                "simulator_growth_mb": round((sim_after - sim_before) / 2**20, 1),
                "api_latency": res.as_dict()["api_latency"]}
    finally:
        stack.stop()


def sustained_run(root: Path, spec: dict[str, float],
                  progress: Progress | None) -> dict[str, Any]:
    """fsctl at one offered rate for a while, on a fresh stack."""
    stack = Stack("fsctl", TALK_S, root)
    try:
        stack.start()
        numbers = Numbers()
        warm_up(stack, numbers)
        rate, seconds = spec["rate"], spec["seconds"]
        return run_step(stack, "sustained", rate, seconds,
                        numbers.take(round(rate * seconds) + 1), progress)
    finally:
        stack.stop()


def curve_run(kind: str, root: Path, quick: bool,
              progress: Progress | None) -> list[dict[str, Any]]:
    """The rate curve of ``kind`` (fsctl or stock) on a fresh stack."""
    stack = Stack(kind, TALK_S, root)
    try:
        stack.start()
        numbers = Numbers()
        warm_up(stack, numbers)
        return curve(stack, kind, CURVE_RATES_QUICK if quick else CURVE_RATES,
                     CURVE_S_QUICK if quick else CURVE_S, numbers, progress)
    finally:
        stack.stop()


def highest_held(points: list[dict[str, Any]]) -> float | None:
    held = [p["offered_per_s"] for p in points if p.get("holds")]
    return max(held) if held else None


def ratio(fsctl_points: list[dict[str, Any]], stock_points: list[dict[str, Any]],
          top: float) -> dict[str, Any]:
    f, s = highest_held(fsctl_points), highest_held(stock_points)
    return {"definition": "highest offered rate of the curve held (all accepted, 0 lost, "
                          f"p99 API <= {HOLD_BOUNDS['api_p99_ms']} ms, dispatch <= "
                          f"{HOLD_BOUNDS['dispatch_p99_ms']} ms, bridge <= "
                          f"{HOLD_BOUNDS['bridge_p99_ms']} ms): fsctl / stock",
            "fsctl_rate": f, "stock_rate": s,
            "ratio": round(f / s, 2) if f and s else None,
            "fsctl_capped_by_curve": f == top,
            "note": "a lower bound when fsctl held the curve's top rate" if f == top else ""}


def run(quick: bool = False, progress: Progress | None = None, rate: float | None = None,
        stages: tuple[str, ...] = STAGES, keep: bool = False) -> dict[str, Any]:
    """The stages (all by default); returns the figures (see the module's docstring).
    ``keep`` leaves the processes' logs and traces in the temporary directory."""
    root = Path(tempfile.mkdtemp(prefix="simpipe-"))
    sustained = dict(SUSTAINED_QUICK if quick else SUSTAINED)
    if rate is not None:
        sustained["rate"] = rate
    result: dict[str, Any] = {
        "quick": quick, "route": "user/{to} (SIP-like legs: real-size sofia events)",
        "answer_delay_s": ANSWER_DELAY_S, "talk_s": TALK_S, "hold_bounds": HOLD_BOUNDS,
        "dispatch_from": "the callback record's created_at in Redis (set by the API)"}
    try:
        if "sustained" in stages:
            result["sustained"] = sustained_run(root, sustained, progress)
        if "curve_fsctl" in stages:
            result["curve_fsctl"] = curve_run("fsctl", root, quick, progress)
        if "memory" in stages:
            result["memory"] = memory(root, MEMORY_QUICK if quick else MEMORY, progress)
        if "curve_stock" in stages:
            result["curve_stock"] = curve_run("stock", root, quick, progress)
        if "curve_fsctl" in stages and "curve_stock" in stages:
            top = float(max(CURVE_RATES_QUICK if quick else CURVE_RATES))
            result["ratio_at_equal_p99"] = ratio(result["curve_fsctl"], result["curve_stock"],
                                                 top)
        return result
    finally:
        if keep:
            print(f"simpipe: logs and traces kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


# ---- the table ---------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    return "-" if v is None else str(v)


def print_table(result: dict[str, Any]) -> None:
    if "sustained" in result:
        print_sustained(result["sustained"])
    for label in ("fsctl", "stock"):
        if f"curve_{label}" in result:
            print_curve(label, result[f"curve_{label}"])
    if "memory" in result:
        m = result["memory"]
        print(f"memory: {m['bridged']} bridged of {m['callbacks']}: worker RSS "
              f"{m['worker_rss_before_mb']} -> {m['worker_rss_after_mb']} MB "
              f"(+{m['worker_growth_mb']} MB, {m['worker_kb_per_callback']} KB/callback)")
    if "ratio_at_equal_p99" in result:
        r = result["ratio_at_equal_p99"]
        print(f"ratio at equal p99: fsctl {r['fsctl_rate']}/s vs stock {r['stock_rate']}/s -> "
              f"{r['ratio']} {r['note']}")


def print_sustained(s: dict[str, Any]) -> None:
    print(f"sustained {s['offered_per_s']}/s for {s['seconds']} s: accepted {s['accepted']}, "
          f"completed {s['completed']}, lost {s['lost']}, {s['completed_per_s']} completed/s, "
          f"drain {s['drain_s']} s")
    for key in ("api_latency", "dispatch_latency", "bridge_latency"):
        lat = s[key]
        print(f"  {key:17} p50 {_fmt(lat['p50_ms']):>8} ms  p99 {_fmt(lat['p99_ms']):>8} ms  "
              f"max {_fmt(lat['max_ms']):>8} ms  (n {lat['n']})")
    print("  CPU ms/callback: " + ", ".join(f"{k} {v}" for k, v in
                                           s["cpu_ms_per_callback"].items()))


def print_curve(label: str, points: list[dict[str, Any]]) -> None:
    print(f"curve {label}: rate  completed/s  lost  p99 api  p99 dispatch  p99 bridge  holds")
    for p in points:
        print(f"  {p['offered_per_s']:>10}  {_fmt(p['completed_per_s']):>11}  "
              f"{p['lost']:>4}  {_fmt(p['api_latency']['p99_ms']):>7}  "
              f"{_fmt(p['dispatch_latency']['p99_ms']):>12}  "
              f"{_fmt(p['bridge_latency']['p99_ms']):>10}  {p['holds']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (seconds)")
    parser.add_argument("--rate", type=float, default=None, help="sustained rate (default 500)")
    parser.add_argument("--json-only", action="store_true")
    parser.add_argument("--only", action="append", choices=STAGES,
                        help="run only this stage (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the logs and traces")
    parser.add_argument("--curve-rates", type=lambda v: tuple(int(r) for r in v.split(",")),
                        help="the curve's offered rates, e.g. 100,300 (default: all)")
    args = parser.parse_args()
    if args.curve_rates:
        global CURVE_RATES
        CURVE_RATES = args.curve_rates
    last = [0.0]

    def progress(stage: str, done: int, total: int, info: dict[str, Any]) -> None:
        if time.monotonic() - last[0] > 2.0:
            last[0] = time.monotonic()
            print(f"  .. {stage}: {done}/{total} {info}", file=sys.stderr, flush=True)
    result = run(quick=args.quick, progress=progress, rate=args.rate,
                 stages=tuple(args.only) if args.only else STAGES, keep=args.keep)
    if not args.json_only:
        print_table(result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
