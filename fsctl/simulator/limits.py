"""FreeSWITCH's session limits: ``sessions-per-second`` and ``max-sessions`` (switch.conf.xml).

What FreeSWITCH 1.11 does, checked on a real 1.11.1 (tests/test_simulator_limits.py runs
the same bursts on both in ``make test-freeswitch``):

- Every channel it creates counts (each leg; a ``null/`` leg one; ``error/`` creates none).
- ``switch_core_session_request`` first decrements the rate counter, then refuses the
  session when the counter is ``<= 0`` (``Throttle Error! <sessions now>``) or when one more
  session would exceed max-sessions (``Over Session Limit! <max-sessions>``). A refused
  request has used up its place in the counter too, so at most ``sessions-per-second - 1``
  sessions are created per window.
- Once per second the timer thread logs ``Over Session Rate of <sps>!`` if the counter is
  ``<= 0``, makes the number of requests of that window the ``per Sec`` figure of
  ``status`` (refused ones included, so it can exceed the maximum) and refills the counter.
- Over a limit no channel is created: no CHANNEL_* event, only the originate's API event
  and BACKGROUND_JOB ``-ERR DESTINATION_OUT_OF_ORDER``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

RATE_WINDOW_S = 1.0
"""Seconds between two refills of the session-rate counter (FreeSWITCH's timer thread)."""
FIVE_MIN_WINDOWS = 300
"""Rate windows after which the ``last 5min`` peaks of ``status`` start over."""

THROTTLE_ERROR = "switch_core_session.c:2427 Throttle Error! %d"
"""Logged (CRIT) for a session refused by sessions-per-second; %d = sessions now."""
OVER_LIMIT = "switch_core_session.c:2434 Over Session Limit! %d"
"""Logged (CRIT) for a session refused by max-sessions; %d = max-sessions."""
OVER_RATE = "switch_time.c:1243 Over Session Rate of %d!"
"""Logged (CRIT) once at the end of a window whose counter ran out; %d = sessions-per-second."""
SOFIA_ERROR = "mod_sofia.c:4787 Error Creating Session"
"""Logged (CRIT) after a refusal when the endpoint is sofia."""
CANNOT_CREATE = ("switch_ivr_originate.c:3059 Cannot create outgoing channel of type [%s] "
                 "cause: [%s]")
"""Logged (NOTICE in FreeSWITCH, INFO here) for every originate that created no channel."""

REFUSED_CAUSE = "DESTINATION_OUT_OF_ORDER"
"""The hangup cause of an originate refused by either limit."""


class SessionLimits:
    """The session-rate counter, max-sessions and the figures ``status`` reports.

    ``clock`` is monotonic seconds; windows start at construction and follow each other
    every :data:`RATE_WINDOW_S`, whoever looks (a late ticker changes nothing).
    """

    def __init__(self, sessions_per_second: int, max_sessions: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if sessions_per_second < 1 or max_sessions < 1:
            raise ValueError("sessions_per_second and max_sessions must be at least 1")
        self.sps_total = sessions_per_second
        self.max_sessions = max_sessions
        self._clock = clock
        self._origin = clock()
        self._window = 0
        self.sps = sessions_per_second
        """The counter: places left in the current window (negative once refusals pile up)."""
        self.sps_last = 0
        self.sps_peak = 0
        self.sps_peak_fivemin = 0
        self.sessions_peak = 0
        self.sessions_peak_fivemin = 0
        self.since_startup = 0
        self._fivemin_windows = 0

    # ---- windows -------------------------------------------------------------------------

    def seconds_to_next_window(self) -> float:
        """Seconds until the counter is refilled next."""
        self.advance()
        elapsed = self._clock() - self._origin
        return (self._window + 1) * RATE_WINDOW_S - elapsed

    def advance(self, session_count: int | None = None) -> None:
        """Close every window that has ended (what the timer thread does each second)."""
        window = math.floor((self._clock() - self._origin) / RATE_WINDOW_S)
        while self._window < window:
            self._close_window(session_count)
            self._window += 1

    def _close_window(self, session_count: int | None) -> None:
        if self.sps <= 0:
            log.critical(OVER_RATE, self.sps_total)
        self.sps_last = self.sps_total - self.sps
        if self._fivemin_windows >= FIVE_MIN_WINDOWS:
            self.sps_peak_fivemin = 0
            self._fivemin_windows = 0
            if session_count is not None:
                self.sessions_peak_fivemin = session_count
        self._fivemin_windows += 1
        self.sps_peak_fivemin = max(self.sps_peak_fivemin, self.sps_last)
        self.sps_peak = max(self.sps_peak, self.sps_last)
        self.sps = self.sps_total

    # ---- sessions ------------------------------------------------------------------------

    def request(self, session_count: int) -> bool:
        """switch_core_session_request's checks: True if one more session may be created."""
        self.advance(session_count)
        self.sps -= 1
        if self.sps <= 0:
            log.critical(THROTTLE_ERROR, session_count)
            return False
        if session_count + 1 > self.max_sessions:
            log.critical(OVER_LIMIT, self.max_sessions)
            return False
        return True

    def created(self, session_count: int) -> None:
        """A session was created; ``session_count`` includes it."""
        self.since_startup += 1
        self.sessions_peak = max(self.sessions_peak, session_count)
        self.sessions_peak_fivemin = max(self.sessions_peak_fivemin, session_count)

    # ---- reports -------------------------------------------------------------------------

    def status_lines(self, session_count: int) -> str:
        """The session lines of ``status``, in mod_commands' words (trailing spaces included)."""
        self.advance(session_count)
        return (
            f"{self.since_startup} session(s) since startup\n"
            f"{session_count} session(s) - peak {self.sessions_peak}, "
            f"last 5min {self.sessions_peak_fivemin} \n"
            f"{self.sps_last} session(s) per Sec out of max {self.sps_total}, "
            f"peak {self.sps_peak}, last 5min {self.sps_peak_fivemin} \n"
            f"{self.max_sessions} session(s) max\n"
        )
