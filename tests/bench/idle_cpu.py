"""CPU an idle fsctl costs on a real FreeSWITCH: each process's CPU ms per second, no calls.

    .venv/bin/python tests/bench/idle_cpu.py [--seconds 20]

Starts what ``realfs_part.py`` starts (a FreeSWITCH on the benchmark's copy of
freeswitch-conf, a sipp switchboard, a redis-server, ``fsctl worker`` and ``fsctl api``),
completes one warm-up callback, waits 5 s, then reads user + system CPU from /proc over
``--seconds`` with nothing to do: FreeSWITCH, the API, the worker and Redis, in ms per second.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
for _path in (str(HERE.parent.parent), str(HERE.parent), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import realfs_part  # noqa: E402
from common import CpuMeter  # noqa: E402


def measure(seconds: float) -> dict[str, float]:
    realfs_part.check_available()
    harness = realfs_part._harness()
    import sipp

    root = Path(tempfile.mkdtemp(prefix="fsctl-bench-idle-"))
    fs = harness.FreeSwitch(root / "fs", sessions_per_second=realfs_part.SPS,
                            max_sessions=realfs_part.MAX_SESSIONS)
    far = sipp.Sipp(root / "sipp", trace_messages=False)
    try:
        fs.start()
        far.start()
        with realfs_part.fsctl_stack(fs, far.port, root / "fsctl") as stack:
            realfs_part._post_one(stack["api_port"], realfs_part._body(realfs_part.WARMUP_INDEX))
            time.sleep(5.0)
            procs = stack["procs"]
            meter = CpuMeter({"freeswitch": fs.proc.pid, "api": procs["api"].pid,
                              "worker": procs["worker"].pid, "redis": procs["redis"].pid})
            meter.start()
            time.sleep(seconds)
            cpu = meter.stop()
        return {name: round(s * 1000 / seconds, 2) for name, s in cpu.items()}
    finally:
        far.stop()
        fs.stop()
        harness.stop_all()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    print(json.dumps({"cpu_ms_per_s_idle": measure(args.seconds)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
