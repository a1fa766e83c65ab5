"""Benchmark: bridge latency while status webhooks go to a bad receiver, against none.

    .venv/bin/python tests/bench/webhook_latency.py [--rate 40] [--seconds 15]

Three runs, each on a fresh simpipe stack (redis-server, ``fsctl simulate --trace``, worker,
API as processes) plus ``fsctl webhooks``: ``none`` — no callback carries a status_callback;
``slow`` — every other callback sends its webhooks to a receiver that answers after 10 s;
``500`` — to one that answers 500 at once (so every delivery is retried). The receiver runs
in this process on 127.0.0.1. Bridge latency comes from the simulator's trace (B's
CHANNEL_PARK sent → ``uuid_bridge`` received), for the callbacks without webhooks ("other")
and for all. ``--outage``: instead, every other callback's receiver is down for the whole
run (connection refused; 4 attempts), then comes up and every dead delivery is replayed
through the API: a table of deliveries sent, attempts retried, dead-lettered, replayed,
delivered, and whether each callback's deliveries arrived in seq order. Not collected by
pytest: speed is measured here, never asserted in tests.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
for _path in (str(HERE.parent), str(HERE.parent.parent)):  # tests/ and the repo root
    if _path not in sys.path:
        sys.path.insert(0, _path)

import gevent  # noqa: E402
from bench.common import CpuMeter, open_loop, summary_ms  # noqa: E402
from bench.simpipe import Stack, drain, wait_traced  # noqa: E402
from hookrecv import Receiver  # noqa: E402
from procs import terminate_group  # noqa: E402

from fsctl.webhooks.signing import new_secret  # noqa: E402

TALK_S = 1.0
SLOW_S = 10.0
SECRET = new_secret()


class HookStack(Stack):
    """simpipe's stack plus the webhook sender."""

    attempts = "8"

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(FSCTL_WEBHOOK_SECRETS=SECRET, FSCTL_WEBHOOK_ALLOW_PRIVATE="1",
                   FSCTL_WEBHOOK_TIMEOUT_S="15", FSCTL_WEBHOOK_BACKOFF_BASE_S="0.2",
                   FSCTL_WEBHOOK_MAX_ATTEMPTS=self.attempts)
        return env

    def start(self) -> HookStack:
        super().start()
        self._spawn("webhooks", [sys.executable, "-m", "fsctl", "webhooks"], self.env())
        return self

    def stop(self) -> None:
        terminate_group(self.procs.get("webhooks"), 5.0)
        super().stop()


def one(kind: str, rate: float, seconds: float, root: Path) -> dict[str, Any]:
    receiver = None
    if kind == "slow":
        receiver = Receiver(delay_s=SLOW_S)
    elif kind == "500":
        receiver = Receiver(default=500)
    stack = HookStack("fsctl", TALK_S, root).start()
    try:
        hooked: set[int] = set()

        def body(i: int) -> dict[str, Any]:
            req: dict[str, Any] = {"leg_A": {"to": f"2{i:07d}"}, "leg_B": {"to": f"3{i:07d}"}}
            if receiver is not None and i % 2 == 0:
                req["status_callback"] = receiver.url()
                hooked.add(i)
            return req

        gevent.sleep(1.0)
        count = max(1, round(rate * seconds))
        meter = CpuMeter({"worker": stack.procs["worker"].pid}).start()
        res = open_loop(stack.aport, rate, count, body)
        final, _, records = drain(stack, res.ids, 0, lambda _v: None)
        worker_cpu_s = meter.stop()["worker"]
        completed = [cid for cid, (state, _) in records.items() if state == "completed"]
        wait_traced(stack, completed)
        assert stack.r is not None
        with_hook = {cid for cid in res.ids
                     if (rec := stack.r.get(f"fsctl:callback:{cid}")) and '"status_callback":"h' in rec}
        other = [b for cid in completed if cid not in with_hook
                 and (b := stack.trace.bridge_s(cid)) is not None]
        every = [b for cid in completed if (b := stack.trace.bridge_s(cid)) is not None]
        return {"kind": kind, "accepted": len(res.ids), "completed": len(completed),
                "final": final, "with_webhooks": len(with_hook),
                "webhook_requests": len(receiver.requests) if receiver else 0,
                "deliveries_waiting": int(stack.r.zcard("fsctl:wh:due")),
                "worker_cpu_ms": round(worker_cpu_s * 1000 / max(1, len(res.ids)), 3),
                "bridge_other": summary_ms(other), "bridge_all": summary_ms(every)}
    finally:
        stack.stop()
        if receiver is not None:
            receiver.close()


def outage(rate: float, seconds: float, root: Path) -> dict[str, Any]:
    """Receiver down during the run, then up, then every dead delivery replayed."""
    import json
    import urllib.request

    from fsctl.embedded import free_port

    port = free_port()
    stack = HookStack("fsctl", TALK_S, root)
    stack.attempts = "4"
    stack.start()
    receiver = None
    try:
        def body(i: int) -> dict[str, Any]:
            req: dict[str, Any] = {"leg_A": {"to": f"2{i:07d}"}, "leg_B": {"to": f"3{i:07d}"}}
            if i % 2 == 0:
                req["status_callback"] = f"http://127.0.0.1:{port}/hook"
            return req

        gevent.sleep(1.0)
        res = open_loop(stack.aport, rate, max(1, round(rate * seconds)), body)
        drain(stack, res.ids, 0, lambda _v: None)
        r = stack.r
        assert r is not None
        deadline = time.monotonic() + 120
        while r.zcard("fsctl:wh:due") and time.monotonic() < deadline:
            gevent.sleep(0.5)
        dead_ids = r.zrange("fsctl:wh:dead", 0, -1)
        attempts = sum(int(r.hget(f"fsctl:wh:msg:{m}", "attempts") or 0) for m in dead_ids)
        sent = sum(int(r.hget(k, "seq") or 0) for k in r.scan_iter("fsctl:wh:cb:*"))
        receiver = Receiver(port=port)
        req = urllib.request.Request(f"http://127.0.0.1:{stack.aport}/voice/webhooks/dead/replay",
                                     method="POST")
        with urllib.request.urlopen(req, timeout=60) as resp:
            replayed = len(json.load(resp)["replayed"])
        deadline = time.monotonic() + 120
        while len(receiver.requests) < replayed and time.monotonic() < deadline:
            gevent.sleep(0.2)
        while r.zcard("fsctl:wh:due") and time.monotonic() < deadline:
            gevent.sleep(0.2)
        by_cb: dict[str, list[int]] = {}
        for q in receiver.requests:
            by_cb.setdefault(q.data["callback_id"], []).append(q.data["seq"])
        in_order = sum(1 for s in by_cb.values() if s == list(range(1, len(s) + 1)))
        return {"callbacks": len(res.ids), "with_webhooks": len(res.ids) // 2 + len(res.ids) % 2,
                "deliveries": sent, "attempts_while_down": attempts,
                "retried": attempts - len(dead_ids), "dead": len(dead_ids), "replayed": replayed,
                "delivered_after_replay": len(receiver.requests),
                "still_dead": int(r.zcard("fsctl:wh:dead")),
                "callbacks_in_seq_order": f"{in_order} / {len(by_cb)}"}
    finally:
        stack.stop()
        if receiver is not None:
            receiver.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--outage", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    if args.outage:
        try:
            row = outage(args.rate, args.seconds, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print("| " + " | ".join(row) + " |")
        print("|" + "---|" * len(row))
        print("| " + " | ".join(str(v) for v in row.values()) + " |")
        return 0
    try:
        rows = [one(kind, args.rate, args.seconds, root) for kind in ("none", "slow", "500")]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.rate:.0f} callbacks/s for {args.seconds:.0f} s; receiver: none / answers "
          f"after {SLOW_S:.0f} s / answers 500; bridge latency in ms (p50 / p99 / max)")
    print("| receiver | accepted | completed | with webhooks | webhook requests | waiting in "
          "Redis at the end | worker CPU ms/callback | bridge, other callbacks | bridge, all |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        def f(s: dict[str, Any]) -> str:
            return f"{s.get('p50_ms')} / {s.get('p99_ms')} / {s.get('max_ms')}"
        print(f"| {r['kind']} | {r['accepted']} | {r['completed']} | {r['with_webhooks']} | "
              f"{r['webhook_requests']} | {r['deliveries_waiting']} | {r['worker_cpu_ms']} | "
              f"{f(r['bridge_other'])} | "
              f"{f(r['bridge_all'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
