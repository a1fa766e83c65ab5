"""The services' memory: the cyclic garbage collector tuned for them, and the worker's
transient big blocks given back to the system (glibc; a no-op elsewhere).

**The collector.** fsctl's services make almost no cyclic garbage (records, events and
commands are freed by reference counting), but Python's default thresholds (700, 10, 10)
run a young collection every 700 net allocations, each scanning every young object still
alive: on the simulator pipeline at 300 callbacks/s the simulator spent ~1 s of CPU in 12 s
collecting ~800 objects, with pauses up to 64 ms, and the worker and the API ~150 ms each,
with pauses up to 51 and 33 ms (``gc.callbacks`` timings). :func:`tune_collector` moves what
start-up made (modules, the app, settings) out of the collector's sight (``gc.freeze``) and
collects less often; cycles are still collected.

**The heap.** The worker's sweep reads ``show channels as json`` (~0.8 KB a channel: 16 MB with 10,000
bridged callbacks). glibc raises its mmap threshold to the size of the largest block freed
(up to 32 MiB), so later replies are carved from the heap, which then keeps what they took.
``malloc_trim(0)`` after each sweep gives those pages back (it also releases free pages in
the middle of the heap). Fixing the mmap threshold instead (``mallopt``) kept the heap small
too, but on a real FreeSWITCH it went with 3-5 ms more of FreeSWITCH's CPU per callback on
the same 2 cores, against 1-2 ms without (``tests/bench/realfs_part.py``, 3 runs each).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import platform

log = logging.getLogger(__name__)

GC_THRESHOLDS = (50_000, 20, 20)
"""The collector's thresholds for a service: a young collection every 50,000 net container
allocations (Python's default: 700), an older one every 20 of those (default 10)."""


def tune_collector(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """For a service process, once start-up is done: what exists now is never collected
    (it lives as long as the process), and collections are rarer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


class Trimmer:
    """``malloc_trim(0)`` of this process's heap, where there is glibc."""

    def __init__(self) -> None:
        self._trim = None
        if platform.libc_ver()[0] == "glibc":
            try:
                self._trim = ctypes.CDLL(None).malloc_trim
            except (OSError, AttributeError) as exc:
                log.debug("malloc_trim unavailable: %s", exc)

    def __call__(self) -> bool:
        """Give free heap memory back to the system; False where that cannot be done."""
        if self._trim is None:
            return False
        self._trim(0)
        return True
