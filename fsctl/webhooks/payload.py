"""The body of one delivery. Pure.

Standard Webhooks' shape: ``{"type": "callback.<event>", "timestamp": <ISO 8601>, "data":
{"callback_id", "seq", "event", "leg", "at", "callback"}}``. The per-callback ``seq`` is
given by Redis when the delivery is enqueued, so the body is built as the text before and
after it (:func:`body_parts`); the outbox's script joins ``head .. seq .. tail``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..model import encode_json
from .events import Milestone


def iso(ts: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds (``2026-12-01T15:00:00.123Z``)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def body_parts(callback_id: str, milestone: Milestone, view: dict[str, Any]) -> tuple[str, str]:
    """The delivery's JSON text before and after its sequence number."""
    outer = encode_json({"type": f"callback.{milestone.event}",
                         "timestamp": iso(milestone.ts)}).decode()
    data_id = encode_json({"callback_id": callback_id}).decode()
    rest = encode_json({"event": milestone.event, "leg": milestone.leg, "at": milestone.ts,
                        "callback": view}).decode()
    head = outer[:-1] + ',"data":' + data_id[:-1] + ',"seq":'
    tail = "," + rest[1:] + "}"
    return head, tail


def message_id(callback_id: str, milestone: Milestone) -> str:
    """The delivery's ``webhook-id``: the same on every attempt and replay."""
    return f"msg_{callback_id}_{milestone.key}"
