"""Marshmallow schemas shared by the HTTP API and the redis-cli job path."""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from .commands import CALLER_NAME_RE, DTMF_RE, NUMBER_RE, RINGBACK_TONES
from .errors import InvalidValue, PolicyDenied
from .model import MODES, Callback, Leg
from .policy import DESTINATION_RE, destination
from .settings import MEDIA_NAME_RE, Settings
from .webhooks.events import EVENTS
from .webhooks.guard import url_problem

ROUTE_NAME_RE = r"^[a-z0-9][a-z0-9_-]{0,31}$"
RING_TIMEOUT_RANGE_S = (5, 300)
"""Allowed per-leg ring timeout, in seconds."""
METADATA_MAX_KEYS = 20
"""Most entries of a callback's ``metadata``."""
METADATA_KEY_RE = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,39}$"
"""A ``metadata`` key: 1 to 40 of A-Z a-z 0-9 _ . - (not starting with . or -)."""
METADATA_VALUE_MAX_CHARS = 256
"""Longest ``metadata`` value, in characters."""
METADATA_MAX_BYTES = 2048
"""Most bytes of ``metadata`` as compact JSON (UTF-8), keys and values together."""
SCHEDULE_HORIZON_S = 30 * 86400
"""Furthest ahead a callback may be scheduled (``not_before``)."""
_WHEN = ("must be an RFC 3339 date-time with its offset, e.g. 2026-12-02T10:00:00+01:00 or "
         "2026-12-02T09:00:00Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

class Pattern(validate.Regexp):
    """A Regexp validator that must match the WHOLE value.

    marshmallow's Regexp uses ``re.match``, and Python's ``$`` also matches before a
    trailing newline: ``"1000123\n"`` would pass ``^[0-9]+$``. Never for values that
    reach FreeSWITCH.
    """

    def __call__(self, value: str) -> str:
        if not isinstance(value, str) or self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def _webhook_url(value: str) -> str:
    problem = url_problem(value)
    if problem:
        raise ValidationError(problem)
    return value


_NUMBER = Pattern(NUMBER_RE, error="must be 2 to 20 digits, optionally after one '+'")


def _metadata_value(value: str) -> str:
    if len(value) > METADATA_VALUE_MAX_CHARS:
        raise ValidationError(f"at most {METADATA_VALUE_MAX_CHARS} characters, not {len(value)}")
    if _CONTROL.search(value):
        raise ValidationError("must not contain control characters (CR, LF, tab, NUL …)")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValidationError("must be Unicode text (a lone surrogate such as \\udc80 is "
                              "not)") from None
    return value


def metadata_size(metadata: dict[str, str]) -> int:
    """Bytes of ``metadata`` as compact JSON, non-ASCII as UTF-8 (what the bound counts)."""
    return len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode())


RETRY_ON = ("busy", "no_answer", "failed")
"""What a leg's retry policy may retry: busy (486), no answer (ring timeout, 480, 408), a
failure (rejected, unreachable, 5xx, originate error). A wrong number is never retried."""


class RetrySchema(Schema):
    """A leg's retry policy."""

    class Meta:
        unknown = RAISE

    attempts = fields.Integer(required=True, strict=True, validate=validate.Range(1, 5),
                              metadata={"description": "attempts after the first, 1 to 5"})
    delay_s = fields.Float(load_default=30.0, validate=validate.Range(1.0, 600.0), metadata={
        "description": "seconds before the first retry (1 to 600; default 30)"})
    backoff = fields.Float(load_default=1.0, validate=validate.Range(1.0, 4.0), metadata={
        "description": "each later retry waits this many times longer (1 to 4; default 1)"})
    on = fields.List(fields.String(validate=validate.OneOf(RETRY_ON)),
                     load_default=lambda: list(RETRY_ON),
                     validate=validate.Length(1, len(RETRY_ON)), metadata={
                         "description": "which failures are retried (default: all three)"})


RECORD_MODES = ("mixed", "stereo")
"""How a call is recorded: both parties in one channel, or one party a channel."""


class RecordField(fields.Field):
    """``record``: true (mixed), false, or a mode of :data:`RECORD_MODES`."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | None:
        if value is True:
            return "mixed"
        if value is False:
            return None
        if isinstance(value, str) and value in RECORD_MODES:
            return value
        raise ValidationError('must be true, false, "mixed" or "stereo"')


class WaitingMediaSchema(Schema):
    """What the first party to answer hears while the other is dialled."""

    class Meta:
        unknown = RAISE

    ringback = fields.String(validate=validate.OneOf(sorted(RINGBACK_TONES)), metadata={
        "description": "ringback tone by country (FreeSWITCH's definitions): "
                       + ", ".join(sorted(RINGBACK_TONES)) + "; default us"})
    music = fields.String(validate=Pattern(MEDIA_NAME_RE, error="must be a configured media "
                                                                "name"), metadata={
        "description": "music on hold instead of ringback: a media entry the operator "
                       "configured (FSCTL_MEDIA_FILE), played over and over"})
    announcement = fields.String(validate=Pattern(MEDIA_NAME_RE, error="must be a configured "
                                                                       "media name"), metadata={
        "description": "a configured media entry played once on answer, then the ringback "
                       "or music"})

    @validates_schema
    def _one_loop(self, data: dict[str, Any], **_: Any) -> None:
        if "ringback" in data and "music" in data:
            raise ValidationError("ringback or music, not both", "music")


class LegRequestSchema(Schema):
    """One party to call."""

    class Meta:
        unknown = RAISE

    to = fields.String(required=True, metadata={"example": "1000123"}, validate=Pattern(
        DESTINATION_RE, error="must be 2 to 20 digits (optionally after one '+'), or user@host "
                              "on a route that allows that host"))
    from_ = fields.String(data_key="from", validate=_NUMBER,
                          metadata={"description": "caller ID shown to this leg; "
                                    "defaults to the other leg's number"})
    caller_id_name = fields.String(validate=Pattern(
        CALLER_NAME_RE, error="must be 1 to 40 of A-Z a-z 0-9 . _ - (no spaces)"))
    route = fields.String(validate=Pattern(
        ROUTE_NAME_RE, error="must be a configured route name"))
    ring_timeout = fields.Integer(strict=True, validate=validate.Range(*RING_TIMEOUT_RANGE_S),
                                  metadata={"description": "seconds this leg may ring"})
    send_dtmf = fields.String(validate=Pattern(
        DTMF_RE, error="must be 1 to 32 of 0-9 * # w W (w: a 0.5 s pause, W: 1 s)"), metadata={
        "description": "digits sent to this leg once it answers, before the bridge (an "
                       "extension behind an IVR); the bridge waits until they have played",
        "example": "ww1234#"})
    retry = fields.Nested(RetrySchema, metadata={
        "description": "dial this leg again when it is busy, not answered or fails — only "
                       "while nobody is waiting on the other leg (a party who answered is "
                       "never held for a retry: the callback fails then)"})


class CallbackRequestSchema(Schema):
    """POST /voice/call/callback body, and the ``request`` field of a redis-cli job."""

    class Meta:
        unknown = RAISE

    leg_A = fields.Nested(LegRequestSchema, required=True)
    leg_B = fields.Nested(LegRequestSchema, required=True)
    mode = fields.String(load_default="sequential", validate=validate.OneOf(MODES))
    first = fields.String(load_default="A", validate=validate.OneOf(("A", "B")),
                          metadata={"description": "who is called first in sequential mode"})
    status_callback = fields.String(validate=_webhook_url, metadata={
        "description": "http(s) URL that receives signed status webhooks (see README, Status "
                       "webhooks); its host must resolve to public addresses",
        "example": "https://example.com/hooks/fsctl"})
    status_events = fields.List(
        fields.String(validate=validate.OneOf(EVENTS)), validate=validate.Length(1, len(EVENTS)),
        metadata={"description": "the events to send (default: all); ringing and answered "
                                 "come once per leg"})
    record = RecordField(metadata={
        "description": 'record the bridged conversation: true or "mixed" (both parties in '
                       'one channel), "stereo" (leg A\'s party left, leg B\'s right); the '
                       "file's path, length and size are in `recording` once it is done",
        "oneOf": [{"type": "boolean"}, {"type": "string", "enum": list(RECORD_MODES)}]})
    waiting_media = fields.Nested(WaitingMediaSchema, metadata={
        "description": "what the first party to answer hears while the other is dialled "
                       "(default: US ringback)"})
    not_before = fields.AwareDateTime(
        format="iso", error_messages={"invalid": _WHEN, "invalid_awareness": _WHEN},
        metadata={"description": "not dialled before this time: until then the callback is "
                                 "`scheduled` (kept in Redis, cancellable); at most 30 days "
                                 "ahead", "example": "2026-12-02T10:00:00+01:00"})
    not_after = fields.AwareDateTime(
        format="iso", error_messages={"invalid": _WHEN, "invalid_awareness": _WHEN},
        metadata={"description": "not started after this time: a callback still waiting then "
                                 "ends `failed` with outcome `expired`",
                  "example": "2026-12-02T12:00:00+01:00"})
    metadata = fields.Dict(
        keys=fields.String(validate=Pattern(
            METADATA_KEY_RE, error="a key is 1 to 40 of A-Z a-z 0-9 _ . - (not starting with "
                                   ". or -)")),
        values=fields.String(validate=_metadata_value),
        validate=validate.Length(max=METADATA_MAX_KEYS,
                                 error=f"at most {METADATA_MAX_KEYS} entries"),
        metadata={"description": "your own data, stored with the callback and returned as "
                                 "given (GET, list, webhooks); never sent to FreeSWITCH. "
                                 f"Flat: string values only, at most {METADATA_MAX_KEYS} "
                                 f"entries, {METADATA_VALUE_MAX_CHARS} characters a value, "
                                 f"{METADATA_MAX_BYTES} bytes in all as JSON",
                  "example": {"ticket": "CRM-48213", "queue": "website"}})

    @validates_schema
    def _window(self, data: dict[str, Any], **_: Any) -> None:
        start, end = data.get("not_before"), data.get("not_after")
        now = time.time()
        if start is not None and start.timestamp() > now + SCHEDULE_HORIZON_S:
            raise ValidationError("at most 30 days ahead", "not_before")
        if end is not None and end.timestamp() <= now:
            raise ValidationError("has already passed", "not_after")
        if start is not None and end is not None and end <= start:
            raise ValidationError("must be later than not_before", "not_after")

    @validates_schema
    def _metadata_size(self, data: dict[str, Any], **_: Any) -> None:
        metadata = data.get("metadata")
        if metadata and (size := metadata_size(metadata)) > METADATA_MAX_BYTES:
            raise ValidationError(f"is {size} bytes as JSON; at most {METADATA_MAX_BYTES}",
                                  "metadata")

    @validates_schema
    def _webhook_events(self, data: dict[str, Any], **_: Any) -> None:
        events = data.get("status_events")
        if events is not None and "status_callback" not in data:
            raise ValidationError("needs a status_callback", "status_events")
        if events is not None and len(set(events)) != len(events):
            raise ValidationError("names an event twice", "status_events")

    @validates_schema
    def _distinct(self, data: dict[str, Any], **_: Any) -> None:
        if "leg_A" in data and "leg_B" in data and \
                destination(data["leg_A"]["to"]) == destination(data["leg_B"]["to"]):
            raise ValidationError("leg_A and leg_B call the same number", "leg_B")


REQUEST_SCHEMA = CallbackRequestSchema()


def random_uuid_hexes(n: int) -> list[str]:
    """``n`` random version-4 UUIDs as 32 hex digits, as ``uuid.uuid4().hex`` makes them (the
    version and variant bits set alike), from one ``os.urandom`` call."""
    raw = bytearray(os.urandom(16 * n))
    for i in range(0, 16 * n, 16):
        raw[i + 6] = raw[i + 6] & 0x0F | 0x40  # version 4
        raw[i + 8] = raw[i + 8] & 0x3F | 0x80  # RFC 4122 variant
    digits = raw.hex()
    return [digits[i:i + 32] for i in range(0, 32 * n, 32)]


def dashed(uuid_hex: str) -> str:
    """32 hex digits as a UUID's string form (``str(uuid.UUID(hex=...))``)."""
    h = uuid_hex
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def build_callback(request: dict[str, Any], settings: Settings, *, owner: str | None = None,
                   callback_id: str | None = None, now: float | None = None,
                   allowed_routes: frozenset[str] | None = None) -> Callback:
    """A new queued callback from a validated request.

    Raises ValidationError for an unknown route, PolicyDenied for a destination the
    route's policy (or the caller's route permissions) refuses. fsctl chooses every leg
    UUID and Job-UUID here, so they are stored before any originate is sent.
    """
    now = time.time() if now is None else now
    errors: dict[str, Any] = {}
    denied: dict[str, Any] = {}
    legs: dict[str, Leg] = {}
    ids = random_uuid_hexes(5)  # the callback's, and each leg's channel UUID and Job-UUID
    for name, peer in (("A", "B"), ("B", "A")):
        spec, peer_spec = request[f"leg_{name}"], request[f"leg_{peer}"]
        try:
            route_obj = settings.route(spec.get("route"))
        except InvalidValue as exc:
            errors[f"leg_{name}"] = {"route": [str(exc)]}
            continue
        route = route_obj.name
        if allowed_routes is not None and route not in allowed_routes:
            denied[f"leg_{name}"] = {"route": [f"this token may not use route {route!r}"]}
            continue
        reason = route_obj.refusal(spec["to"])
        if reason:
            denied[f"leg_{name}"] = {"to": [reason]}
            continue
        from_ = spec.get("from_") or peer_spec["to"]
        if not NUMBER_RE.fullmatch(from_):
            why = f"required: the other leg's 'to' ({from_!r}) is not a number to show as caller ID"
            errors[f"leg_{name}"] = {"from": [why]}
            continue
        legs[name] = Leg(
            to=spec["to"],
            from_=from_,
            caller_id_name=spec.get("caller_id_name"),
            route=route,
            ring_timeout_s=spec.get("ring_timeout", settings.ring_timeout_s),
            uuid=dashed(ids[1] if name == "A" else ids[3]),
            job_uuid=dashed(ids[2] if name == "A" else ids[4]),
            send_dtmf=spec.get("send_dtmf"),
            retry=dict(spec["retry"]) if spec.get("retry") else None,
        )
    media = dict(request["waiting_media"]) if request.get("waiting_media") else None
    for key in ("music", "announcement"):
        if media and key in media and media[key] not in settings.media:
            errors.setdefault("waiting_media", {})[key] = [
                f"no media {media[key]!r} is configured on this server"]
    record = request.get("record")
    if record and not settings.recording_dir:
        errors["record"] = ["recording is not enabled on this server (FSCTL_RECORDING_DIR)"]
    if errors:
        raise ValidationError(errors)
    if denied:
        raise PolicyDenied("destination not allowed", denied)
    not_before = request["not_before"].timestamp() if request.get("not_before") else None
    not_after = request["not_after"].timestamp() if request.get("not_after") else None
    state = "scheduled" if not_before is not None and not_before > now else "queued"
    cb = Callback(
        id=callback_id or ids[0], legs=legs, mode=request["mode"], state=state,
        waiting_media=media, record=record,
        not_before=not_before, not_after=not_after,
        first=request["first"], created_at=now, updated_at=now, owner=owner,
        status_callback=request.get("status_callback"),
        status_events=list(request["status_events"]) if request.get("status_events") else None,
        metadata=dict(request["metadata"]) if "metadata" in request else None,
    )
    if record:
        cb.recording = {"path": f"{settings.recording_dir}/{cb.id}.wav", "mode": record,
                        "state": "pending"}
    cb.note(now, "state", state=state)
    return cb


def present(cb: Callback, cancel_requested: bool = False, *,
            raw_history: bool = False) -> dict[str, Any]:
    """The public JSON view of a callback (GET / POST / DELETE responses).

    ``cancel_requested``: a DELETE asked for it (the store's cancel flag); shown as
    ``cancel_pending`` while the callback has not ended. ``raw_history``: the history as
    its JSON text, for orjson to write without decoding it (webhooks)."""
    legs = {}
    for name, leg in cb.legs.items():
        legs[name] = {
            "to": leg.to, "from": leg.from_, "caller_id_name": leg.caller_id_name,
            "route": leg.route, "ring_timeout": leg.ring_timeout_s,
            "uuid": leg.uuid, "state": leg.state,
            "times": dict(leg.times), "hangup_cause": leg.hangup_cause,
            "sip_status": leg.sip_status, "hangup_disposition": leg.hangup_disposition,
            "attempts": leg.attempts + 1 if "dialed" in leg.times else 0,
            "send_dtmf": leg.send_dtmf, "retry": leg.retry, "retries": leg.retries,
        }
    return {
        "id": cb.id, "state": cb.state, "outcome": cb.outcome, "mode": cb.mode,
        "first": cb.first, "created_at": cb.created_at, "updated_at": cb.updated_at,
        "ended_at": cb.ended_at, "talk_time_s": cb.talk_time_s, "inferred": cb.inferred,
        "cancel_pending": cancel_requested and not cb.final,
        "legs": legs,
        "status_callback": cb.status_callback, "status_events": cb.status_events,
        "not_before": cb.not_before, "not_after": cb.not_after,
        "waiting_media": cb.waiting_media, "record": cb.record, "recording": cb.recording,
        "metadata": cb.metadata,
        "history": cb.history.fragment() if raw_history else list(cb.history),
    }


SUMMARY_LEG_FIELDS = ("to", "from", "route", "uuid", "state", "hangup_cause")
"""What a list item shows of each leg (the full record has the rest)."""


def summary(cb: Callback, href: str, cancel_requested: bool = False) -> dict[str, Any]:
    """A list item: the callback without its history and per-leg details, and ``href``,
    where its full record is."""
    legs = {name: {"to": leg.to, "from": leg.from_, "route": leg.route, "uuid": leg.uuid,
                   "state": leg.state, "hangup_cause": leg.hangup_cause}
            for name, leg in cb.legs.items()}
    return {
        "id": cb.id, "href": href, "state": cb.state, "outcome": cb.outcome, "mode": cb.mode,
        "first": cb.first, "created_at": cb.created_at, "updated_at": cb.updated_at,
        "ended_at": cb.ended_at, "talk_time_s": cb.talk_time_s,
        "cancel_pending": cancel_requested and not cb.final, "legs": legs,
        "not_before": cb.not_before, "not_after": cb.not_after,
        "metadata": cb.metadata,
    }
