"""Giving the worker's transient big blocks back to the system (glibc; a no-op elsewhere).

The worker's sweep reads ``show channels as json`` (~0.8 KB a channel: 16 MB with 10,000
bridged callbacks). glibc raises its mmap threshold to the size of the largest block freed
(up to 32 MiB), so later replies are carved from the heap, which then keeps what they took.
``malloc_trim(0)`` after each sweep gives those pages back (it also releases free pages in
the middle of the heap). Fixing the mmap threshold instead (``mallopt``) kept the heap small
too, but on a real FreeSWITCH it went with 3-5 ms more of FreeSWITCH's CPU per callback on
the same 2 cores, against 1-2 ms without (``tests/bench/realfs_part.py``, 3 runs each).
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)


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
