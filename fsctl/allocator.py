"""glibc malloc settings a long-running service sets for itself (a no-op elsewhere).

Without a fixed mmap threshold glibc raises it to the size of the largest block freed so far
(up to 32 MiB), and the heap's trim threshold to twice that. The worker's sweep reads
``show channels as json`` (~0.8 KB a channel: 16 MB with 10,000 bridged callbacks): once one
such reply was freed, the next ones were carved from the heap, which then kept ~35 MB it
never gave back. With the threshold fixed, blocks that big are mapped and unmapped on their
own, and the heap is trimmed as glibc's defaults intend.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
"""mallopt(3) parameter: allocations from this many bytes are served by mmap."""
MMAP_THRESHOLD_BYTES = 256 * 1024
"""Fixed mmap threshold in bytes (glibc's starting value is 128 KiB; an event, a record or
a batch of replies stays below it; a whole channel list goes above)."""


def fix_mmap_threshold(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold for this process; False where there is no glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, threshold_bytes))
    except (OSError, AttributeError) as exc:
        log.debug("mallopt unavailable: %s", exc)
        return False
    if not ok:
        log.warning("mallopt(M_MMAP_THRESHOLD, %d) refused", threshold_bytes)
    return ok
