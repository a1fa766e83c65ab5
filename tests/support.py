"""Helpers shared by the tests (not fixtures): where the recordings are, the ESL target."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "freeswitch"


def fixtures_dir() -> Path:
    """The recordings of a real FreeSWITCH; a missing copy is an error, never a skip."""
    if not (FIXTURES / "README.md").is_file():
        raise RuntimeError(f"FreeSWITCH recordings not found at {FIXTURES}")
    return FIXTURES


@dataclass(frozen=True)
class EslTarget:
    """A real FreeSWITCH the integration tests run against."""

    host: str
    port: int
    password: str
    """What the worker logs in with (the restricted user's password when ``user`` is set)."""
    user: str | None = None
    """``fsctl@fsctl.local``: the worker logs in with userauth, as in production."""
    admin_password: str | None = None
    """Plain ``auth``: the tests' own fs_cli-like connection (``password`` when None)."""
    sip_port: int | None = None
    """Where the sipp switchboard answers SIP legs (tests/sip/switchboard.xml)."""

    @property
    def admin(self) -> tuple[str, int, str]:
        return self.host, self.port, self.admin_password or self.password


_REAL: EslTarget | None = None
REPORT: list[str] = []
"""Figures tests measured (burst rates, …): printed at the end of the run, kept in var/."""


def report(line: str) -> None:
    """Add a line to the run's report (conftest prints it and writes var/test-report.txt)."""
    REPORT.append(line)


def use_freeswitch(target: EslTarget | None) -> None:
    """Point every integration test at this FreeSWITCH (``make test-freeswitch``)."""
    global _REAL
    _REAL = target


def esl_target() -> EslTarget | None:
    """The real FreeSWITCH of ``make test-freeswitch``, or ``FSCTL_TEST_ESL=host:port:password``
    (an already running one); None: the simulator."""
    if _REAL is not None:
        return _REAL
    raw = os.environ.get("FSCTL_TEST_ESL")
    if not raw:
        return None
    host, port, password = raw.split(":", 2)
    return EslTarget(host, int(port), password)


def wait_until(pred: Callable[[], Any], timeout_s: float, what: str,
               interval_s: float = 0.05) -> Any:
    """Poll ``pred`` until it returns something truthy (that value); AssertionError naming
    ``what`` after ``timeout_s``. The one bounded wait of the tests' helpers."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout_s}s: {what}")
        gevent.sleep(interval_s)
