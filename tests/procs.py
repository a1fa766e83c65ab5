"""Child processes of the tests, each in a session of its own: one signal to its process
group reaches everything it started. Shared by realfs, sipp and the fault harness."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

KILL_WAIT_S = 10.0
"""Longest wait for a process group to be gone after SIGKILL."""


def kill_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL to the process's whole group (a crash, no goodbye), then reap it."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_WAIT_S)


def terminate_group(proc: subprocess.Popen[bytes] | None, timeout_s: float) -> int | None:
    """SIGTERM to its group; its exit code, or None when it had to be killed after
    ``timeout_s``."""
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return None
