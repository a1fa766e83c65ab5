"""CPU time per greenlet of an fsctl worker, for the benchmark's profile (not part of fsctl).

    GREENLET_CPU_DIR=/tmp/g PYTHONPATH=tests/bench/greenlet_cpu:. \\
        .venv/bin/python tests/bench/realfs_part.py --json

Python imports this ``sitecustomize`` in every process started with that PYTHONPATH; in a
``python -m fsctl worker`` it times, with ``greenlet.settrace``, the thread CPU time each
greenlet runs between two switches, keyed by the greenlet's function, and at exit writes
``$GREENLET_CPU_DIR/worker-<pid>.txt``: ms, share, and how many times it was switched out.
The hub's own share is libev's loop and the callbacks it runs (timers, I/O wake-ups).
"""

import os
import sys

if os.environ.get("GREENLET_CPU_DIR") and sys.argv[-1:] == ["worker"] \
        and "fsctl" in " ".join(sys.orig_argv):
    import atexit
    import collections
    import time

    import greenlet

    _cpu: collections.Counter = collections.Counter()
    _outs: collections.Counter = collections.Counter()
    _now = {"t": time.thread_time(), "who": "main (start-up, imports)"}

    def _name(g: object) -> str:
        run = getattr(g, "_run", None) or getattr(g, "run", None)
        return getattr(run, "__qualname__", None) or type(g).__name__

    def _trace(event: str, args: tuple) -> None:
        if event in ("switch", "throw"):
            t = time.thread_time()
            _cpu[_now["who"]] += t - _now["t"]
            _outs[_now["who"]] += 1
            _now["t"], _now["who"] = t, _name(args[1])

    def _dump() -> None:
        _cpu[_now["who"]] += time.thread_time() - _now["t"]
        total = sum(_cpu.values()) or 1.0
        path = os.path.join(os.environ["GREENLET_CPU_DIR"], f"worker-{os.getpid()}.txt")
        with open(path, "w") as out:
            out.writelines(f"{s * 1000:9.1f} ms {100 * s / total:5.1f} % {_outs[who]:8d}  {who}\n"
                           for who, s in _cpu.most_common())

    greenlet.settrace(_trace)
    atexit.register(_dump)
