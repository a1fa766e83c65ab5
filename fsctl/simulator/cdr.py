"""The call-detail variables FreeSWITCH sets when a channel is reported
(switch_channel_set_timestamps): stamps, epochs and durations, as on CHANNEL_HANGUP_COMPLETE.

Checked against every recording: ``*sec`` fields are differences of whole epoch seconds,
``*msec`` / ``*usec`` of the microsecond clock; a ``*_stamp`` is present only for a time
that happened; ``bill*`` counts from the answer, ``wait*`` from the start to the bridge.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

US_PER_S = 1_000_000
"""Microseconds per second (FreeSWITCH's times are µs since the epoch)."""
_DURATION_NAMES = {"sec": "duration", "msec": "mduration", "usec": "uduration"}


@dataclass(frozen=True, slots=True)
class LegTimes:
    """A channel's times in µs since the epoch; 0 = never happened."""

    created: int
    profile_created: int
    answered: int
    progress: int
    progress_media: int
    bridged: int
    hungup: int


def _stamp(us: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(us // US_PER_S))


def _span(start: int, end: int) -> tuple[str, str, str]:
    """(sec, msec, usec) from ``start`` to ``end``; zeros if either never happened."""
    if not start or not end:
        return "0", "0", "0"
    us = end - start
    return str(end // US_PER_S - start // US_PER_S), str(us // 1000), str(us)


def cdr_variables(t: LegTimes, caller_id: str, last_app: str, last_arg: str) -> dict[str, str]:
    """The variables, in FreeSWITCH's order (hangup_cause … flow_billusec)."""
    out = {"digits_dialed": "none", "start_stamp": _stamp(t.created),
           "profile_start_stamp": _stamp(t.profile_created)}
    for name, us in (("answer", t.answered), ("bridge", t.bridged), ("progress", t.progress),
                     ("progress_media", t.progress_media)):
        if us:
            out[f"{name}_stamp"] = _stamp(us)
    out["end_stamp"] = _stamp(t.hungup)
    for name, us in (("start", t.created), ("profile_start", t.profile_created),
                     ("answer", t.answered), ("bridge", t.bridged), ("last_hold", 0)):
        out[f"{name}_epoch"], out[f"{name}_uepoch"] = str(us // US_PER_S), str(us)
    out.update(hold_accum_seconds="0", hold_accum_usec="0", hold_accum_ms="0")
    for name, us in (("resurrect", 0), ("progress", t.progress),
                     ("progress_media", t.progress_media), ("end", t.hungup)):
        out[f"{name}_epoch"], out[f"{name}_uepoch"] = str(us // US_PER_S), str(us)
    if last_app:
        out["last_app"] = last_app
        if last_arg:
            out["last_arg"] = last_arg
    out["caller_id"] = caller_id
    spans = {
        "duration": _span(t.created, t.hungup),
        "bill": _span(t.answered, t.hungup),
        "progress": _span(t.created, t.progress),
        "answer": _span(t.created, t.answered),
        "wait": _span(t.created, t.bridged),
        "progress_media": _span(t.created, t.progress_media),
        "flow_bill": _span(t.created, t.hungup) if t.answered else ("0", "0", "0"),
    }
    for index, unit in enumerate(("sec", "msec", "usec")):
        for name, values in spans.items():
            out[_DURATION_NAMES[unit] if name == "duration" else f"{name}{unit}"] = values[index]
    return out
