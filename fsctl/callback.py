"""The callback state machine — pure: (record, input) → record changed in place + actions.

No I/O here. Inputs are normalised FreeSWITCH facts (:class:`LegSignal`,
:class:`JobDone`) and requests (:class:`Start`, :class:`Cancel`,
:class:`CommandFailed`); outputs are :class:`Action` values the worker executes.
Every input may arrive duplicated or out of order: leg states only move forward,
and a final callback only ever answers with kills of legs that show life.
"""

from __future__ import annotations

from dataclasses import dataclass

from .commands import wav_size
from .model import LEG_TIMESTAMPS, Callback, Leg, leg_rank, other

# ---- inputs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    ts: float


@dataclass(frozen=True, slots=True)
class Cancel:
    ts: float
    reason: str = "cancelled"


@dataclass(frozen=True, slots=True)
class LegSignal:
    """A channel event of one leg: created, ringing, early, answered, parked, bridged, hangup."""

    leg: str
    kind: str
    ts: float
    cause: str | None = None
    sip_status: str | None = None
    disposition: str | None = None
    record_ms: str | None = None
    """At the hangup of a recorded leg: how long FreeSWITCH recorded (and how many samples)."""
    record_samples: str | None = None


@dataclass(frozen=True, slots=True)
class JobDone:
    """The BACKGROUND_JOB of a leg's originate: ``+OK <uuid>`` or ``-ERR <CAUSE>``."""

    leg: str
    ok: bool
    text: str
    ts: float


@dataclass(frozen=True, slots=True)
class CommandFailed:
    """A command of ours was refused or not delivered (``what``: originate or bridge)."""

    what: str
    reason: str
    ts: float
    leg: str | None = None


@dataclass(frozen=True, slots=True)
class Redial:
    """Dial a leg again under new ids, after its originate was refused for capacity."""

    leg: str
    uuid: str
    job_uuid: str
    ts: float


@dataclass(frozen=True, slots=True)
class RecordFailed:
    """FreeSWITCH refused to start the recording."""

    reason: str
    ts: float


@dataclass(frozen=True, slots=True)
class Due:
    """A scheduled callback's ``not_before`` has come: it queues for a node like any other."""

    ts: float


@dataclass(frozen=True, slots=True)
class Expire:
    """The callback waited longer than it may for a node to dial it."""

    ts: float


@dataclass(frozen=True, slots=True)
class Lost:
    """FreeSWITCH lost every channel of the callback (it restarted): end it with ``outcome``."""

    ts: float
    outcome: str
    cause: str = "SYSTEM_SHUTDOWN"


@dataclass(frozen=True, slots=True)
class DtmfDone:
    """A leg's digits have played out (or cannot be waited for any longer)."""

    leg: str
    ts: float
    result: str | None = None
    """FreeSWITCH's answer to the ``uuid_send_dtmf`` (none: not known)."""


Input = (Start | Cancel | LegSignal | JobDone | CommandFailed | Redial | Expire | Lost
         | DtmfDone | Due | RecordFailed)

# ---- actions -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Originate:
    leg: str


@dataclass(frozen=True, slots=True)
class Broadcast:
    leg: str


@dataclass(frozen=True, slots=True)
class SendDtmf:
    """Send a leg's digits (it answered; the bridge waits for :class:`DtmfDone`)."""

    leg: str
    uuid: str
    digits: str


@dataclass(frozen=True, slots=True)
class Record:
    """Record the bridged call from leg A's channel into ``path``."""

    uuid: str
    path: str


@dataclass(frozen=True, slots=True)
class Bridge:
    a_uuid: str
    b_uuid: str


BRIDGE_SURVIVOR_GRACE_S = 2.0
"""How long the survivor of a bridge is left to FreeSWITCH (``hangup_after_bridge`` hangs it
up within milliseconds) before fsctl kills it itself."""


@dataclass(frozen=True, slots=True)
class Kill:
    leg: str
    uuid: str
    cause: str
    after_s: float = 0.0
    """Only if the leg is still up this long from now (0: at once)."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Dial the leg again (new ids) after ``delay_s``: FreeSWITCH refused it for capacity
    (``why`` throttled), or it failed and its retry policy says so (``why`` retry)."""

    leg: str
    delay_s: float
    why: str = "throttled"


@dataclass(frozen=True, slots=True)
class Finished:
    state: str
    outcome: str | None


Action = Originate | Broadcast | SendDtmf | Record | Bridge | Kill | Retry | Finished

THROTTLE_CAUSE = "DESTINATION_OUT_OF_ORDER"
"""What FreeSWITCH answers an originate over sessions-per-second or max-sessions (also a
real far end's cause: only a leg that never got a channel counts as throttled)."""
THROTTLE_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)
"""Waits before each new attempt of a leg FreeSWITCH refused for capacity; then it fails."""
THROTTLE_RETRY_TOTAL_S = sum(THROTTLE_RETRY_DELAYS_S)
"""Longest a leg's dialling can be put off by throttle retries (added to park timeouts)."""

# ---- outcomes ----------------------------------------------------------------------

_REASONS = {
    "USER_BUSY": "busy",
    "NO_ANSWER": "no_answer",
    "NO_USER_RESPONSE": "no_answer",
    "ALLOTTED_TIMEOUT": "no_answer",
    "PROGRESS_TIMEOUT": "no_answer",
    "CALL_REJECTED": "rejected",
    "UNALLOCATED_NUMBER": "invalid_number",
    "INVALID_NUMBER_FORMAT": "invalid_number",
    "NO_ROUTE_DESTINATION": "invalid_number",
    "USER_NOT_REGISTERED": "unreachable",
    "DESTINATION_OUT_OF_ORDER": "unreachable",
    "NORMAL_TEMPORARY_FAILURE": "unreachable",
    "RECOVERY_ON_TIMER_EXPIRE": "unreachable",
    "INVALID_GATEWAY": "unreachable",
    "GATEWAY_DOWN": "unreachable",
    "INCOMPATIBLE_DESTINATION": "unreachable",
    "ORIGINATE_ERROR": "originate_error",
    "ORIGINATOR_CANCEL": "cancelled",
    "LOST": "lost",
    "THROTTLED": "throttled",
}
_LIFE_SIGNS = frozenset({"created", "ringing", "early", "answered", "parked"})
_SIGNAL_STATE = {"created": "ringing", "ringing": "ringing", "early": "early",
                 "answered": "answered", "parked": "answered"}


def reason_for(cause: str | None) -> str:
    """The short outcome word for a FreeSWITCH hangup cause."""
    return _REASONS.get(cause or "", "failed")


def failure_outcome(cb: Callback, name: str) -> str:
    """Outcome of a callback whose leg ``name`` ended before the bridge."""
    leg, peer = cb.legs[name], other(name)
    x, y = name.lower(), peer.lower()
    if "answered" in leg.times:
        peer_leg = cb.legs[peer]
        if peer_leg.state == "pending":
            return f"{x}_hangup"
        if "answered" in peer_leg.times:
            return f"{x}_hangup_before_bridge"
        return f"{x}_hangup_while_{y}_ringing"
    return f"{x}_{reason_for(leg.hangup_cause)}"


# ---- transitions -------------------------------------------------------------------


def apply(cb: Callback, event: Input) -> list[Action]:
    """Feed one input to a callback; change the record in place; return the actions."""
    if isinstance(event, LegSignal | JobDone) and cb.legs[event.leg].retry_wait:
        return []  # a late event of the attempt that failed: the next one is awaited
    if isinstance(event, Start):
        return _start(cb, event.ts)
    if isinstance(event, Cancel):
        return _cancel(cb, event.ts, event.reason)
    if isinstance(event, LegSignal):
        _leg_signal(cb, event)
        return _after_leg_change(cb, event.leg, event.kind, event.ts)
    if isinstance(event, JobDone):
        kind = _job_done(cb, event)
        if kind == "throttled":
            leg = cb.legs[event.leg]
            cb.note(event.ts, "throttled", leg=event.leg, attempt=leg.attempts + 1)
            return [Retry(event.leg, THROTTLE_RETRY_DELAYS_S[leg.attempts - leg.retries])]
        return _after_leg_change(cb, event.leg, kind, event.ts)
    if isinstance(event, CommandFailed):
        return _command_failed(cb, event)
    if isinstance(event, Redial):
        return _redial(cb, event)
    if isinstance(event, Due):
        if cb.state == "scheduled":
            _set_state(cb, "queued", event.ts)
        return []
    if isinstance(event, Expire):
        if cb.state not in ("scheduled", "queued"):
            return []
        return _finish(cb, "failed", "expired", event.ts)
    if isinstance(event, Lost):
        return _lost(cb, event)
    if isinstance(event, DtmfDone):
        return _dtmf_done(cb, event)
    if isinstance(event, RecordFailed):
        if cb.recording is not None and cb.recording["state"] == "recording":
            cb.recording["state"] = "failed"
            cb.note(event.ts, "recording", state="failed", reason=event.reason)
        return []
    raise TypeError(f"not a callback input: {event!r}")


def _set_state(cb: Callback, state: str, ts: float, outcome: str | None = None) -> None:
    if cb.state == state:
        return
    cb.state = state
    if outcome is not None:
        cb.outcome = outcome
    cb.note(ts, "state", state=state, outcome=outcome)


def _finish(cb: Callback, state: str, outcome: str | None, ts: float) -> list[Action]:
    if cb.recording is not None and cb.recording["state"] == "pending":
        cb.recording["state"] = "none"  # never bridged: nothing to record
    _set_state(cb, state, ts, outcome)
    cb.ended_at = ts
    return [Finished(state, outcome)]


def _dial(cb: Callback, name: str, ts: float) -> Action:
    """Ask for a leg to be dialled (its ``dialed`` time is stamped when the command goes)."""
    leg = cb.legs[name]
    leg.state = "dialing"
    cb.note(ts, "leg", leg=name, state="dialing")
    return Originate(name)


def stamp(leg: Leg, stage: str, ts: float) -> None:
    """Record when ``leg`` reached ``stage`` (once), keeping dialed ≤ ringing ≤ early ≤
    answered ≤ parked ≤ bridged ≤ hungup: a time read from fsctl's clock never lands after
    one that FreeSWITCH's events gave to a later stage, nor before an earlier one."""
    rank = LEG_TIMESTAMPS.index(stage)
    later = [t for s, t in leg.times.items() if LEG_TIMESTAMPS.index(s) > rank]
    if later:
        ts = min(ts, *later)
    ts = leg.times.setdefault(stage, ts)
    for s in LEG_TIMESTAMPS[:rank]:
        if leg.times.get(s, ts) > ts:
            leg.times[s] = ts


def _kill(cb: Callback, name: str, cause: str | None = None,
          after_s: float = 0.0) -> list[Action]:
    leg = cb.legs[name]
    if not leg.alive:
        return []
    leg.kills += 1
    if cause is None:
        cause = "NORMAL_CLEARING" if "answered" in leg.times else "ORIGINATOR_CANCEL"
    return [Kill(name, leg.uuid, cause, after_s)]


def _start(cb: Callback, ts: float) -> list[Action]:
    if cb.state != "queued":
        return []
    _set_state(cb, "dialing", ts)
    if cb.mode == "simultaneous":
        return [_dial(cb, "A", ts), _dial(cb, "B", ts)]
    return [_dial(cb, cb.first, ts)]


def _cancel(cb: Callback, ts: float, reason: str) -> list[Action]:
    if cb.final:
        return []
    actions: list[Action] = []
    if cb.state == "bridged":
        # They are talking: hang up; the hangup completes the call with its talk time.
        cb.note(ts, "hangup_requested", reason=reason)
        for name in ("A", "B"):
            actions += _kill(cb, name, "NORMAL_CLEARING")
        return actions
    for name in ("A", "B"):
        actions += _kill(cb, name)
    return actions + _finish(cb, "cancelled", reason, ts)


def _advance_leg(cb: Callback, name: str, state: str, ts: float) -> None:
    leg = cb.legs[name]
    if leg_rank(state) > leg_rank(leg.state):
        leg.state = state
        cb.note(ts, "leg", leg=name, state=state)
    stamp(leg, state, ts)


def _leg_signal(cb: Callback, ev: LegSignal) -> None:
    leg = cb.legs[ev.leg]
    if ev.kind == "hangup":
        if leg.sip_status is None and ev.sip_status:
            leg.sip_status = ev.sip_status
        if leg.hangup_disposition is None and ev.disposition:
            leg.hangup_disposition = ev.disposition
        if ev.record_ms is not None and cb.recording is not None and ev.leg == "A":
            _recorded(cb, ev)
        if leg.state != "hungup":
            leg.hangup_cause = ev.cause or leg.hangup_cause
            if ev.cause == "LOST":
                cb.inferred = True  # the channel vanished while nobody listened
            _advance_leg(cb, ev.leg, "hungup", ev.ts)
        return
    if leg.state == "hungup":
        return  # a late or reordered event of a leg that is already gone
    if ev.kind == "bridged":
        for name in ("A", "B"):
            if cb.legs[name].state != "hungup":
                _advance_leg(cb, name, "bridged", ev.ts)
        return
    if ev.kind in _SIGNAL_STATE:
        if leg.state == "pending":
            leg.state = "dialing"  # an event before our own Start was recorded
        _advance_leg(cb, ev.leg, _SIGNAL_STATE[ev.kind], ev.ts)
        if ev.kind == "parked" and not leg.parked:
            leg.parked = True
            stamp(leg, "parked", ev.ts)


def _recorded(cb: Callback, ev: LegSignal) -> None:
    """The recorded leg hung up: FreeSWITCH closed the file and said how long it is."""
    rec = cb.recording
    if rec is None or rec["state"] not in ("recording", "failed"):
        return
    try:
        ms, samples = int(ev.record_ms or ""), int(ev.record_samples or "0")
    except ValueError:
        return
    channels = 2 if rec["mode"] == "stereo" else 1
    rec.update(state="done", ms=ms, seconds=round(ms / 1000, 3), samples=samples,
               size_bytes=wav_size(samples, channels))
    cb.note(ev.ts, "recording", state="done", seconds=rec["seconds"])


def _job_done(cb: Callback, ev: JobDone) -> str:
    """Record a BACKGROUND_JOB; return the signal kind it amounts to."""
    leg = cb.legs[ev.leg]
    if leg.job_result is None:
        leg.job_result = ev.text
        cb.note(ev.ts, "job", leg=ev.leg, result=ev.text)
    if ev.ok:
        if leg.state != "hungup":
            _leg_signal(cb, LegSignal(ev.leg, "parked", ev.ts))
        return "parked"
    # -ERR for a leg that answered is the originate racing a bridge or a kill
    # (FREESWITCH.md §4): the channel exists, and its own hangup event decides.
    if "answered" in leg.times or leg.state == "bridged":
        return "noop"
    cause = ev.text.removeprefix("-ERR").strip().split()[0] if ev.text.startswith("-ERR") else None
    if cause == THROTTLE_CAUSE and leg.state == "dialing" and not cb.final:
        # No channel event ever came for this leg: FreeSWITCH refused to create it (over
        # sessions-per-second or max-sessions), the far end was never reached.
        if leg.attempts - leg.retries < len(THROTTLE_RETRY_DELAYS_S):
            return "throttled"
        cause = "THROTTLED"
    _leg_signal(cb, LegSignal(ev.leg, "hangup", ev.ts, cause=cause or "ORIGINATE_ERROR"))
    return "hangup"


def _command_failed(cb: Callback, ev: CommandFailed) -> list[Action]:
    cb.note(ev.ts, "command_failed", what=ev.what, leg=ev.leg, reason=ev.reason)
    if cb.final:
        return []
    # The command may still have reached FreeSWITCH (a timeout): every leg that may
    # exist is killed, and stays killable should it show life later.
    actions: list[Action] = []
    for name in ("A", "B"):
        actions += _kill(cb, name)
    outcome = f"{ev.leg.lower()}_{ev.what}_error" if ev.leg else f"{ev.what}_error"
    return actions + _finish(cb, "failed", outcome, ev.ts)


def _redial(cb: Callback, ev: Redial) -> list[Action]:
    leg = cb.legs[ev.leg]
    if cb.final or not leg.awaiting_redial:
        return []  # cancelled meanwhile, or not a refused attempt
    leg.attempts += 1
    leg.uuid, leg.job_uuid, leg.job_result = ev.uuid, ev.job_uuid, None
    if leg.retry_wait:  # a new attempt under the retry policy: the last one is history
        leg.retry_wait = False
        leg.state, leg.parked, leg.ringback, leg.kills = "dialing", False, False, 0
        leg.times.clear()
        leg.hangup_cause = leg.sip_status = leg.hangup_disposition = None
    cb.note(ev.ts, "redial", leg=ev.leg, attempt=leg.attempts + 1, uuid=ev.uuid)
    return [Originate(ev.leg)]


def _lost(cb: Callback, ev: Lost) -> list[Action]:
    for name, leg in cb.legs.items():
        if leg.alive:
            _leg_signal(cb, LegSignal(name, "hangup", ev.ts, cause=ev.cause))
    if cb.final:
        return []
    # Nobody saw how it ended: no talk time is made up (it would count the outage).
    cb.inferred = True
    return _finish(cb, "failed", ev.outcome, ev.ts)


def _dtmf_done(cb: Callback, ev: DtmfDone) -> list[Action]:
    leg = cb.legs[ev.leg]
    if not leg.dtmf_sent or leg.dtmf_done:
        return []
    leg.dtmf_done = True
    cb.note(ev.ts, "dtmf_done", leg=ev.leg, result=ev.result)
    return [] if cb.final else _progress(cb, ev.ts)


def _dtmf_pending(leg: Leg) -> bool:
    return leg.send_dtmf is not None and not leg.dtmf_done


def _after_leg_change(cb: Callback, name: str, kind: str, ts: float) -> list[Action]:
    if cb.final:
        # The callback is over: any leg that still shows life is hung up.
        leg = cb.legs[name]
        if kind in _LIFE_SIGNS and leg.state != "hungup":
            return _kill(cb, name)
        return []
    return _progress(cb, ts)


RETRY_KINDS = {"busy": "busy", "no_answer": "no_answer", "unreachable": "failed",
               "rejected": "failed", "failed": "failed", "originate_error": "failed"}
"""Which retry condition (a policy's ``on``) each failure reason falls under; the others
(invalid_number, cancelled, lost, throttled) are never retried."""


def _retry(cb: Callback, name: str, ts: float) -> list[Action] | None:
    """Leg ``name`` failed before answering: dial it again if its policy says so and nobody
    is waiting on the other side (a waiting party is never held for a retry)."""
    leg, peer = cb.legs[name], cb.legs[other(name)]
    policy = leg.retry
    if policy is None or "answered" in leg.times or leg.retries >= policy["attempts"]:
        return None
    kind = RETRY_KINDS.get(reason_for(leg.hangup_cause))
    if kind is None or kind not in policy["on"] or peer.parked or "answered" in peer.times:
        return None
    delay = round(policy["delay_s"] * policy["backoff"] ** leg.retries, 3)
    leg.retries += 1
    leg.retry_wait = True
    cb.note(ts, "retry", leg=name, attempt=leg.attempts + 2, cause=leg.hangup_cause,
            sip_status=leg.sip_status, delay_s=delay)
    return [Retry(name, delay, "retry")]


def _progress(cb: Callback, ts: float) -> list[Action]:
    a, b = cb.legs["A"], cb.legs["B"]
    for name, leg in (("A", a), ("B", b)):
        peer = cb.legs[other(name)]
        if peer.retry_wait and (leg.parked or "answered" in leg.times):
            # this party answered: it is not kept waiting for the other one's retry
            peer.retry_wait = False
            cb.note(ts, "retry_abandoned", leg=other(name), reason=f"{name.lower()}_answered")
    for name, leg in (("A", a), ("B", b)):
        if leg.state != "hungup" or leg.retry_wait:
            continue
        peer = other(name)
        if "bridged" in leg.times or cb.state == "bridged":
            bridged_at = min(x.times.get("bridged", ts) for x in (a, b))
            cb.talk_time_s = round(max(0.0, leg.times["hungup"] - bridged_at), 3)
            # FreeSWITCH hangs the peer up itself when the bridge it was in ends
            grace = BRIDGE_SURVIVOR_GRACE_S if "bridged" in cb.legs[peer].times else 0.0
            return (_kill(cb, peer, "NORMAL_CLEARING", grace)
                    + _finish(cb, "completed", "completed", ts))
        retry = _retry(cb, name, ts)
        if retry is not None:
            return retry
        outcome = failure_outcome(cb, name)
        return _kill(cb, peer) + _finish(cb, "failed", outcome, ts)

    if a.state == "bridged" or b.state == "bridged":
        _set_state(cb, "bridged", ts)
        if cb.recording is not None and cb.recording["state"] == "pending":
            cb.recording["state"] = "recording"
            cb.note(ts, "recording", state="started", path=cb.recording["path"])
            return [Record(a.uuid, cb.recording["path"])]
        return []
    actions: list[Action] = []
    for name, leg in (("A", a), ("B", b)):
        if leg.parked and leg.send_dtmf is not None and not leg.dtmf_sent:
            leg.dtmf_sent = True
            cb.note(ts, "dtmf", leg=name, digits=leg.send_dtmf)
            actions.append(SendDtmf(name, leg.uuid, leg.send_dtmf))
    if a.parked and b.parked:
        if _dtmf_pending(a) or _dtmf_pending(b):
            _set_state(cb, "waiting", ts)  # the bridge waits for the digits to play out
        elif not cb.bridging:
            cb.bridging = True
            actions.append(Bridge(a.uuid, b.uuid))
        return actions
    for name, leg in (("A", a), ("B", b)):
        if not leg.parked:
            continue
        peer = cb.legs[other(name)]
        if peer.state == "pending":
            actions.append(_dial(cb, other(name), ts))
        if not leg.ringback:
            leg.ringback = True
            actions.append(Broadcast(name))
        _set_state(cb, "waiting", ts)
    return actions

