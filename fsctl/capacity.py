"""A node's capacity: FreeSWITCH's session limits, learned from ``api status``, and the
pacer that keeps a worker's originates under them. Pure: time is passed in.

FreeSWITCH counts every channel (so every leg) against ``sessions-per-second`` and
``max-sessions`` (switch.conf.xml). Its rate counter is refilled once a second by its own
timer thread, and it logs ``Over Session Rate`` as soon as a second used the whole
allowance, so the pacer spaces originates evenly at a rate that leaves headroom: at most
``rate + 1`` legs fall into any one of FreeSWITCH's seconds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_SESSIONS_RE = re.compile(r"^(\d+) session\(s\) - peak (\d+)", re.MULTILINE)
_RATE_RE = re.compile(r"^(\d+) session\(s\) per Sec out of max (\d+)", re.MULTILINE)
_MAX_RE = re.compile(r"^(\d+) session\(s\) max", re.MULTILINE)

SESSIONS_PER_CALLBACK = 2
"""Channels one callback may hold at once on its node (both legs)."""


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """What ``api status`` says about a FreeSWITCH's sessions."""

    sessions: int
    """Channels that exist now (every client's, not only fsctl's)."""
    sessions_per_second_max: int
    """``sessions-per-second``: channels FreeSWITCH creates in one second at most."""
    sessions_last_second: int
    """Channels created in FreeSWITCH's last completed second."""
    max_sessions: int
    """``max-sessions``: channels that may exist at once."""


def parse_status(text: str) -> NodeStatus | None:
    """The session figures of an ``api status`` reply; None if it has none of them."""
    sessions, rate, most = _SESSIONS_RE.search(text), _RATE_RE.search(text), _MAX_RE.search(text)
    if not (sessions and rate and most):
        return None
    return NodeStatus(sessions=int(sessions[1]), sessions_per_second_max=int(rate[2]),
                      sessions_last_second=int(rate[1]), max_sessions=int(most[1]))


@dataclass(frozen=True, slots=True)
class Budget:
    """How much of a node one worker may use: originates per second and channels at once."""

    originates_per_s: float
    max_sessions: int


def budget(status: NodeStatus, headroom: float, rate_cap: float | None = None,
           sessions_cap: int | None = None) -> Budget:
    """The share of the node's limits a worker may use (``headroom`` ∈ (0, 1]), never more
    than the operator's caps. At least one originate per second and one callback's
    sessions, so a tiny limit slows fsctl down instead of stopping it."""
    rate = max(1.0, math.floor(status.sessions_per_second_max * headroom))
    if rate_cap:
        rate = min(rate, rate_cap)
    sessions = max(SESSIONS_PER_CALLBACK, math.floor(status.max_sessions * headroom))
    if sessions_cap:
        sessions = min(sessions, sessions_cap)
    return Budget(originates_per_s=rate, max_sessions=sessions)


class Pacer:
    """Evenly spaced originates at ``rate`` per second (one may go every ``1/rate`` s)."""

    def __init__(self, rate_per_s: float) -> None:
        self.rate = rate_per_s
        self._next = 0.0

    def set_rate(self, rate_per_s: float) -> None:
        self.rate = max(0.1, rate_per_s)

    def delay(self, now: float) -> float:
        """Seconds until the next originate may go (0: now)."""
        return max(0.0, self._next - now)

    def take(self, now: float) -> None:
        """One originate goes now."""
        self._next = max(self._next, now) + 1.0 / self.rate

    def free(self, now: float, early_s: float) -> int:
        """How many originates may go now, each at most ``early_s`` before its slot."""
        return self.backlog(now, early_s) if self.delay(now) <= early_s else 0

    def backlog(self, now: float, horizon_s: float) -> int:
        """How many originates can go within ``horizon_s`` from now."""
        return max(0, math.floor((horizon_s - self.delay(now)) * self.rate) + 1)
