"""Configuration of the FreeSWITCH simulator: default endpoint behaviour and overrides."""

from __future__ import annotations

from dataclasses import dataclass, field

# Q.850 codes of the hangup causes the simulator knows (switch_channel_cause2str names).
CAUSE_CODES: dict[str, int] = {
    "UNSPECIFIED": 0,
    "UNALLOCATED_NUMBER": 1,
    "NO_ROUTE_DESTINATION": 3,
    "NORMAL_CLEARING": 16,
    "USER_BUSY": 17,
    "NO_USER_RESPONSE": 18,
    "NO_ANSWER": 19,
    "SUBSCRIBER_ABSENT": 20,
    "CALL_REJECTED": 21,
    "NUMBER_CHANGED": 22,
    "DESTINATION_OUT_OF_ORDER": 27,
    "INVALID_NUMBER_FORMAT": 28,
    "FACILITY_REJECTED": 29,
    "NORMAL_UNSPECIFIED": 31,
    "NORMAL_CIRCUIT_CONGESTION": 34,
    "NETWORK_OUT_OF_ORDER": 38,
    "NORMAL_TEMPORARY_FAILURE": 41,
    "SWITCH_CONGESTION": 42,
    "INCOMPATIBLE_DESTINATION": 88,
    "RECOVERY_ON_TIMER_EXPIRE": 102,
    "ORIGINATOR_CANCEL": 487,
    "ALLOTTED_TIMEOUT": 602,
    "USER_CHALLENGE": 603,
    "MEDIA_TIMEOUT": 604,
    "PICKED_OFF": 605,
    "USER_NOT_REGISTERED": 606,
    "PROGRESS_TIMEOUT": 607,
    "INVALID_GATEWAY": 608,
    "GATEWAY_DOWN": 609,
    "LOSE_RACE": 502,
    "MANAGER_REQUEST": 503,
    "SYSTEM_SHUTDOWN": 501,
}

# SIP final response -> hangup cause (sofia's mapping, the common ones).
SIP_CAUSES: dict[int, str] = {
    400: "NORMAL_TEMPORARY_FAILURE",
    401: "CALL_REJECTED",
    402: "CALL_REJECTED",
    403: "CALL_REJECTED",
    404: "UNALLOCATED_NUMBER",
    407: "CALL_REJECTED",
    408: "RECOVERY_ON_TIMER_EXPIRE",
    480: "NO_USER_RESPONSE",
    481: "NORMAL_TEMPORARY_FAILURE",
    484: "INVALID_NUMBER_FORMAT",
    486: "USER_BUSY",
    488: "INCOMPATIBLE_DESTINATION",
    500: "NORMAL_TEMPORARY_FAILURE",
    503: "NORMAL_TEMPORARY_FAILURE",
    504: "RECOVERY_ON_TIMER_EXPIRE",
    600: "USER_BUSY",
    603: "CALL_REJECTED",
}

SIP_PHRASES: dict[int, str] = {
    403: "Forbidden",
    404: "Not Found",
    480: "Temporarily Unavailable",
    486: "Busy Here",
    503: "Service Unavailable",
    600: "Busy Everywhere",
    603: "Decline",
}

def normalize_cause(name: str | None, default: str = "NORMAL_CLEARING") -> str:
    """Unknown cause names become NORMAL_CLEARING, as switch_channel_str2cause() + uuid_kill."""
    if not name:
        return default
    upper = name.strip().upper()
    return upper if upper in CAUSE_CODES else default


OUTCOMES = ("answer", "busy", "reject", "no_answer", "fail")


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What the far end of a (SIP-like) leg does.

    - ``answer``: rings (CHANNEL_PROGRESS), answers after ``answer_delay_s``; once
      bridged, sends BYE ``talk_s`` later (``None``: never); ``bye_after_answer_s``
      sends a BYE that long after the answer, bridged or not.
    - ``busy`` (486), ``reject`` (603) or ``fail`` (any ``sip_status``): the INVITE is
      refused after ``answer_delay_s``.
    - ``no_answer``: rings until ``originate_timeout`` (NO_ANSWER).
    """

    outcome: str = "answer"
    answer_delay_s: float = 1.0
    talk_s: float | None = 5.0
    bye_after_answer_s: float | None = None
    sip_status: int | None = None
    early_media: bool = False
    """The far end sends 183 with SDP (early media) first, then answers with 200: its
    provisional response gives CHANNEL_PROGRESS_MEDIA (Answer-State early, call state EARLY)
    instead of a 180's CHANNEL_PROGRESS, even with ignore_early_media=true (the originate
    still waits for the 200). SIP-like legs only."""

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}; expected one of {OUTCOMES}")

    def failure_status(self) -> int:
        if self.sip_status:
            return self.sip_status
        return {"busy": 486, "reject": 603}.get(self.outcome, 480)


@dataclass(frozen=True, slots=True)
class SimUser:
    """A directory user for ``userauth user@domain:pass``."""

    password: str
    allowed_api: frozenset[str] | None = None  # None: every api command
    allowed_events: frozenset[str] | None = None  # None: every event


@dataclass(slots=True)
class SimConfig:
    """Timings and behaviours of the simulated FreeSWITCH.

    ``numbers`` maps a destination to a :class:`Behaviour`; a dial string matches a key
    equal to the whole dial string, its last path element (``1000@127.0.0.1:5070``) or
    its user part (``1000``), in that order.
    """

    answer_delay_s: float = 1.0
    talk_s: float | None = 5.0
    numbers: dict[str, Behaviour] = field(default_factory=dict)
    originate_finish_delay_s: float = 0.02
    """Delay between CHANNEL_ANSWER and the originate returning (BACKGROUND_JOB, park)."""
    default_originate_timeout_s: int = 60
    whole_second_timeouts: bool = True
    """originate_timeout / park_timeout expire on a whole wall-clock second, as FreeSWITCH's."""
    heartbeat_s: float = 20.0
    auth_timeout_s: float = 25.0
    max_queued_events: int = 100_000
    """Events queued for a client that does not read before its listener is killed."""
    hostname: str = "fsctl-sim"
    max_sessions: int = 1000
    """switch.conf.xml ``max-sessions``: channels that may exist at once (each leg counts)."""
    sessions_per_second: int = 30
    """switch.conf.xml ``sessions-per-second``: the rate counter, refilled every second
    (at most one less than this many channels are created per second, see limits.py)."""
    users: dict[str, SimUser] = field(default_factory=dict)

    def default_behaviour(self) -> Behaviour:
        return Behaviour("answer", self.answer_delay_s, self.talk_s)

    def behaviour_for(self, dial: str) -> Behaviour:
        if self.numbers:
            last = dial.rsplit("/", 1)[-1]
            user = last.split("@", 1)[0]
            for key in (dial, last, user):
                found = self.numbers.get(key)
                if found is not None:
                    return found
        return self.default_behaviour()
