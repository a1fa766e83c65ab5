"""FreeSWITCH events → facts the state machine understands. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from .wire import Event

SUBSCRIBED_EVENTS = (
    "CHANNEL_CREATE", "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA", "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE", "CHANNEL_HANGUP_COMPLETE", "BACKGROUND_JOB", "HEARTBEAT",
)
"""The only events the worker subscribes to (everything else is never sent to us). Not
CHANNEL_PARK: a leg's originate job returns ``+OK`` when the leg is answered and set to
park, which is the moment the state machine acts on; not CHANNEL_HANGUP: HANGUP_COMPLETE
follows it within the same channel thread and carries the same cause plus the SIP status.
Each real event of a SIP leg is 3–11 KB, so each one skipped spares FreeSWITCH and the
worker (README, Performance)."""

EVENT_FILTERS = (
    ("Event-Name", "BACKGROUND_JOB"),
    ("Event-Name", "HEARTBEAT"),
    ("variable_fsctl_leg", "A"),
    ("variable_fsctl_leg", "B"),
)
"""ESL filters (OR): our tagged channels, plus the untagged job results and heartbeats."""

_KINDS = {
    "CHANNEL_CREATE": "created",
    "CHANNEL_PROGRESS": "ringing",
    "CHANNEL_PROGRESS_MEDIA": "early",
    "CHANNEL_ANSWER": "answered",
    "CHANNEL_PARK": "parked",
    "CHANNEL_BRIDGE": "bridged",
    "CHANNEL_HANGUP": "hangup",
    "CHANNEL_HANGUP_COMPLETE": "hangup",
    "CHANNEL_DESTROY": "hangup",
}


@dataclass(frozen=True, slots=True)
class ChannelFact:
    """A channel event: which channel, what happened, and the tags it carries."""

    uuid: str
    kind: str
    ts: float
    callback_id: str | None = None
    leg: str | None = None
    cause: str | None = None
    sip_status: str | None = None
    disposition: str | None = None
    record_ms: str | None = None
    """A recorded leg's hangup: FreeSWITCH's variable_record_ms (and samples below)."""
    record_samples: str | None = None


@dataclass(frozen=True, slots=True)
class JobFact:
    """A BACKGROUND_JOB: the result of one bgapi command."""

    job_uuid: str
    ok: bool
    text: str
    ts: float


def event_ts(ev: Event) -> float:
    """The event's own time in seconds (Event-Date-Timestamp is in µs)."""
    try:
        return int(ev.get("Event-Date-Timestamp") or "0") / 1e6
    except ValueError:
        return 0.0


def translate(ev: Event) -> ChannelFact | JobFact | None:
    """What an event tells fsctl, or None when it tells nothing we track."""
    get = ev.get  # decodes only the headers read here (fsctl.wire.Event)
    name = get("Event-Name") or ""
    if name == "BACKGROUND_JOB":
        job = get("Job-UUID")
        if not job:
            return None
        text = ev.body.strip()
        return JobFact(job_uuid=job, ok=text.startswith("+OK"), text=text, ts=event_ts(ev))
    kind = _KINDS.get(name)
    if kind is None:
        return None
    uuid = get("Bridge-A-Unique-ID") if kind == "bridged" else None
    uuid = uuid or get("Unique-ID")
    if not uuid:
        return None
    cause = get("Hangup-Cause") if kind == "hangup" else None
    sip = disposition = record_ms = record_samples = None
    if kind == "hangup":
        sip = get("variable_sip_term_status") or get("variable_sip_invite_failure_status")
        disposition = get("variable_sip_hangup_disposition")
        record_ms, record_samples = get("variable_record_ms"), get("variable_record_samples")
    return ChannelFact(
        uuid=uuid, kind=kind, ts=event_ts(ev),
        callback_id=get("variable_fsctl_callback_id"), leg=get("variable_fsctl_leg"),
        cause=cause, sip_status=sip, disposition=disposition,
        record_ms=record_ms, record_samples=record_samples,
    )
