"""Benchmark: callbacks per second through the whole service on this machine.

    .venv/bin/python tests/bench/callbacks.py --callbacks 2000 --rate 300

Starts a redis-server, the simulator, one worker and one API process (real processes,
127.0.0.1), posts callbacks at a fixed rate over HTTP keep-alive connections, and waits
until every callback is final. Prints accepted/s, completed/s and the CPU seconds each
process used. Not collected by pytest: speed is measured here, never asserted in tests.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402

from fsctl.embedded import free_port, start_redis, wait_port  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--callbacks", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=300.0, help="callbacks posted per second")
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="fsctl-bench-"))
    rport, eport, aport = free_port(), free_port(), free_port()
    redis_proc = start_redis(rport, tmp / "redis")
    routes = tmp / "routes.json"
    routes.write_text(json.dumps({"routes": {"default": {"template": "user/{to}",
                                                         "allow": [r"[0-9]{4,15}"]}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSCTL_")}
    env.update(FSCTL_REDIS_URL=f"redis://127.0.0.1:{rport}/0", FSCTL_ESL_HOST="127.0.0.1",
               FSCTL_ESL_PORT=str(eport), FSCTL_ESL_PASSWORD="bench-password-123",
               FSCTL_API_PORT=str(aport), FSCTL_ROUTES_FILE=str(routes),
               FSCTL_RATE_PER_MINUTE="1000000", FSCTL_MAX_LIVE="1000000",
               FSCTL_DEST_MAX_PER_HOUR="1000000", FSCTL_LOG_LEVEL="WARNING")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ids: list[str] = []
    codes: dict[int, int] = {}
    try:
        procs["simulator"] = subprocess.Popen(
            [sys.executable, "-m", "fsctl", "simulate", "--port", str(eport), "--answer-delay",
             "0.2", "--talk", "0.5", "--log-level", "WARNING",
             # the benchmark's simulated node lifts FreeSWITCH's sessions-per-second (30 by
             # default): it measures fsctl's cost, not the node's rate limit
             "--sessions-per-second", "100000"], env=env)
        wait_port("127.0.0.1", eport, 10)
        procs["worker"] = subprocess.Popen([sys.executable, "-m", "fsctl", "worker"], env=env)
        procs["api"] = subprocess.Popen([sys.executable, "-m", "fsctl", "api"], env=env)
        wait_port("127.0.0.1", aport, 10)
        gevent.sleep(1.0)
        r = redis.Redis(port=rport, decode_responses=True)
        conns = [http.client.HTTPConnection("127.0.0.1", aport, timeout=30)
                 for _ in range(args.connections)]
        free = gevent.queue.Queue()
        for c in conns:
            free.put(c)

        def post(i: int) -> None:
            conn = free.get()
            try:
                body = {"leg_A": {"to": f"2{i:07d}"}, "leg_B": {"to": f"3{i:07d}"}}
                conn.request("POST", "/voice/call/callback", json.dumps(body),
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                reply = json.loads(resp.read())
                codes[resp.status] = codes.get(resp.status, 0) + 1
                if resp.status == 202:
                    ids.append(reply["id"])
            finally:
                free.put(conn)

        cpu0 = {name: cpu_seconds(p.pid) for name, p in procs.items()}
        t0 = time.monotonic()
        jobs = []
        for i in range(args.callbacks):
            due = t0 + i / args.rate
            gevent.sleep(max(0.0, due - time.monotonic()))
            jobs.append(gevent.spawn(post, i))
        gevent.joinall(jobs)
        t_posted = time.monotonic() - t0
        final = 0
        while time.monotonic() - t0 < 120:
            final = sum(r.zcard(f"fsctl:state:{s}") for s in ("completed", "failed", "cancelled"))
            if final >= len(ids):
                break
            gevent.sleep(0.2)
        t_done = time.monotonic() - t0
        cpu = {name: cpu_seconds(p.pid) - cpu0[name] for name, p in procs.items()}
        outcomes = {s: r.zcard(f"fsctl:state:{s}") for s in ("completed", "failed", "cancelled")}
        failed_ids = r.zrange("fsctl:state:failed", 0, 200)
        why: dict[str, int] = {}
        for raw in r.mget([f"fsctl:callback:{i}" for i in failed_ids]) if failed_ids else []:
            rec = json.loads(raw)
            key = f"{rec['outcome']} ({rec['legs']['A']['hangup_cause']}/{rec['legs']['B']['hangup_cause']})"
            why[key] = why.get(key, 0) + 1
        if why:
            print(f"failed outcomes (first 200): {why}")
        print(f"posted {args.callbacks} at {args.rate}/s: HTTP {codes} in {t_posted:.1f}s "
              f"({len(ids) / t_posted:.0f} accepted/s)")
        print(f"final {final}/{len(ids)} after {t_done:.1f}s: {outcomes}")
        print(f"throughput: {outcomes['completed'] / t_done:.0f} completed callbacks/s "
              "(each: 2 legs, ringback, bridge, 0.5 s talk)")
        print("CPU seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
              + f" (wall {t_done:.1f}s, 2 cores)")
        return 0 if final >= len(ids) else 1
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(timeout=10)
        redis_proc.terminate()


if __name__ == "__main__":
    sys.exit(main())
