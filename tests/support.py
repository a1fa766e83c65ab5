"""Helpers shared by the tests (not fixtures): where the recordings are, the ESL target."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "freeswitch"


def fixtures_dir() -> Path:
    """The recordings of a real FreeSWITCH; a missing copy is an error, never a skip."""
    if not (FIXTURES / "README.md").is_file():
        raise RuntimeError(f"FreeSWITCH recordings not found at {FIXTURES}")
    return FIXTURES


def esl_target() -> tuple[str, int, str] | None:
    """``FSCTL_TEST_ESL=host:port:password`` points the integration tests at a real FreeSWITCH."""
    raw = os.environ.get("FSCTL_TEST_ESL")
    if not raw:
        return None
    host, port, password = raw.split(":", 2)
    return host, int(port), password
