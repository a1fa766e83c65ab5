"""The callback record: what is stored in Redis and shown by the API. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CALLBACK_STATES = ("queued", "dialing", "waiting", "bridged", "completed", "failed", "cancelled")
FINAL_STATES = frozenset({"completed", "failed", "cancelled"})
LEG_STATES = ("pending", "dialing", "ringing", "early", "answered", "bridged", "hungup")
_LEG_RANK = {s: i for i, s in enumerate(LEG_STATES)}
LEG_TIMESTAMPS = ("dialed", "ringing", "early", "answered", "parked", "bridged", "hungup")
MODES = ("sequential", "simultaneous")
HISTORY_MAX = 64
"""Most history entries kept per callback (the oldest are dropped beyond)."""


def leg_rank(state: str) -> int:
    return _LEG_RANK[state]


def other(leg: str) -> str:
    return "B" if leg == "A" else "A"


@dataclass(slots=True)
class Leg:
    """One party of a callback, and what FreeSWITCH told us about its channel."""

    to: str
    from_: str
    uuid: str
    job_uuid: str
    route: str
    ring_timeout_s: int
    caller_id_name: str | None = None
    state: str = "pending"
    parked: bool = False
    times: dict[str, float] = field(default_factory=dict)
    hangup_cause: str | None = None
    sip_status: str | None = None
    hangup_disposition: str | None = None
    job_result: str | None = None
    kills: int = 0
    ringback: bool = False
    attempts: int = 0
    """Attempts beyond the first: originates FreeSWITCH refused for capacity, dialled again."""

    @property
    def alive(self) -> bool:
        """Dialled and not known to be gone."""
        return self.state not in ("pending", "hungup")

    @property
    def awaiting_redial(self) -> bool:
        """Its originate was refused for capacity (no channel): it waits to be dialled again."""
        return (self.state == "dialing" and self.job_result is not None
                and not self.job_result.startswith("+OK"))

    @property
    def sent(self) -> bool:
        """Its current originate went to FreeSWITCH and was not refused for capacity."""
        return "dialed" in self.times and not self.awaiting_redial

    def to_dict(self) -> dict[str, Any]:
        """A plain-data copy (``from_`` stored as ``from``); cheap: written on every change."""
        d = {("from" if name == "from_" else name): getattr(self, name)
             for name in self.__slots__}
        d["times"] = dict(self.times)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Leg:
        d = dict(d)
        d["from_"] = d.pop("from")
        return cls(**d)


@dataclass(slots=True)
class Callback:
    """A callback: two legs, a mode, a state, an outcome and the history of changes."""

    id: str
    legs: dict[str, Leg]
    mode: str = "sequential"
    first: str = "A"
    state: str = "queued"
    outcome: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    ended_at: float | None = None
    talk_time_s: float | None = None
    owner: str | None = None
    job_id: str | None = None
    worker: str | None = None
    node: str | None = None
    core_uuid: str | None = None
    bridging: bool = False
    dest_counted: bool = False
    inferred: bool = False
    """Its end was inferred (channels gone while nobody listened), not seen in events."""
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__slots__ if k != "legs"}
        d["legs"] = {name: leg.to_dict() for name, leg in self.legs.items()}
        d["history"] = [dict(entry) for entry in self.history]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Callback:
        d = dict(d)
        legs = {name: Leg.from_dict(leg) for name, leg in d.pop("legs").items()}
        return cls(legs=legs, **d)

    def note(self, ts: float, kind: str, **detail: Any) -> None:
        """Append one history entry (bounded)."""
        entry: dict[str, Any] = {"ts": ts, "event": kind}
        entry.update({k: v for k, v in detail.items() if v is not None})
        self.history.append(entry)
        if len(self.history) > HISTORY_MAX:
            del self.history[: len(self.history) - HISTORY_MAX]
        self.updated_at = max(self.updated_at, ts)
