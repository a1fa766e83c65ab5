"""Log lines: JSON (one object a line, ``callback_id`` and the legs' UUIDs as fields) when
not on a terminal, readable text on one; ``FSCTL_LOG_FORMAT`` = ``json`` / ``text`` /
``auto`` chooses.

Call sites keep writing ``log.info("callback %s: …", cb.id, …)``: a filter on the handler
reads the callback id from such a record (or from an explicit ``extra={"callback_id": …}``)
and asks the lookups a worker registered for the legs' UUIDs, so every line about a
callback carries them as fields without rewriting any log call.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import IO

from pythonjsonlogger.json import JsonFormatter

from ..errors import ConfigError

LOG_FORMATS = ("auto", "json", "text")
"""What FSCTL_LOG_FORMAT may say (auto: json unless the log goes to a terminal)."""
DEFAULT_LOG_FORMAT = "auto"
"""FSCTL_LOG_FORMAT when unset."""
DEFAULT_LOG_LEVEL = "INFO"
"""FSCTL_LOG_LEVEL when unset."""
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""A line of the text format."""
JSON_FORMAT = "%(levelname)s %(name)s %(message)s"
"""The standard record attributes of a JSON line (and ``time``, ISO 8601 in UTC)."""
JSON_FIELDS = {"levelname": "level", "name": "logger"}
"""Standard record attributes renamed in JSON lines."""

_CALLBACK_RE = re.compile(r"\bcallback ([0-9a-f]{32})\b")
"""A callback id named in a message (ids are 32 hex digits, uuid4().hex)."""

LegLookup = Callable[[str], Mapping[str, str] | None]
"""callback id → {"A": uuid, "B": uuid} for the callbacks a process knows (a worker's)."""
_lookups: list[LegLookup] = []


def add_leg_lookup(lookup: LegLookup) -> None:
    """Let log lines about a callback carry its legs' UUIDs (a worker registers its own)."""
    _lookups.append(lookup)


def remove_leg_lookup(lookup: LegLookup) -> None:
    if lookup in _lookups:
        _lookups.remove(lookup)


def leg_fields(legs: Mapping[str, str]) -> dict[str, str]:
    """``{"A": uuid, "B": uuid}`` as log fields (``leg_a_uuid``, ``leg_b_uuid``)."""
    return {f"leg_{name.lower()}_uuid": uuid for name, uuid in legs.items()}


def callback_fields(callback_id: str, legs: Mapping[str, str]) -> dict[str, str]:
    """``extra=`` for a log call about a callback whose legs are known."""
    return {"callback_id": callback_id, **leg_fields(legs)}


class CallbackFields(logging.Filter):
    """Puts ``callback_id`` (and ``leg_a_uuid`` / ``leg_b_uuid`` when known) on every record
    that names a callback: ``extra=``, a ``"callback %s…"`` message, or an id in the text."""

    def filter(self, record: logging.LogRecord) -> bool:
        cid = getattr(record, "callback_id", None)
        if cid is None:
            args = record.args
            msg = record.msg
            if isinstance(msg, str) and msg.startswith("callback %s") and isinstance(args, tuple) \
                    and args and isinstance(args[0], str):
                cid = args[0]
            else:
                found = _CALLBACK_RE.search(record.getMessage())
                cid = found.group(1) if found else None
            if cid is None:
                return True
            record.callback_id = cid
        if _lookups and getattr(record, "leg_a_uuid", None) is None:
            for lookup in _lookups:
                legs = lookup(cid)
                if legs:
                    for key, value in leg_fields(legs).items():
                        setattr(record, key, value)
                    break
        return True


def json_formatter() -> logging.Formatter:
    """One JSON object a line: time, level, logger, message and every extra field."""
    return JsonFormatter(JSON_FORMAT, rename_fields=JSON_FIELDS, timestamp="time")


def text_formatter() -> logging.Formatter:
    return logging.Formatter(TEXT_FORMAT)


def choose_format(value: str | None, stream: IO[str]) -> str:
    """``json`` or ``text`` for FSCTL_LOG_FORMAT ``value`` on ``stream``; ConfigError if bad."""
    fmt = (value or DEFAULT_LOG_FORMAT).strip().lower()
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"FSCTL_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, "
                          f"not {value!r}")
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return "text" if isatty is not None and isatty() else "json"
    return fmt


def handler(stream: IO[str] | None = None, fmt: str | None = None) -> logging.Handler:
    """A stream handler (stderr) with the chosen format and the callback-fields filter."""
    out = stream or sys.stderr
    h = logging.StreamHandler(out)
    chosen = choose_format(fmt if fmt is not None else os.environ.get("FSCTL_LOG_FORMAT"), out)
    h.setFormatter(json_formatter() if chosen == "json" else text_formatter())
    h.addFilter(CallbackFields())
    return h


def setup(env: Mapping[str, str] | None = None, stream: IO[str] | None = None) -> None:
    """Configure the root logger from FSCTL_LOG_LEVEL and FSCTL_LOG_FORMAT (replacing any
    handler it had)."""
    env = os.environ if env is None else env
    level = (env.get("FSCTL_LOG_LEVEL") or DEFAULT_LOG_LEVEL).upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ConfigError(f"FSCTL_LOG_LEVEL must be a level name (DEBUG, INFO, …), not {level!r}")
    logging.basicConfig(level=level, handlers=[handler(stream, env.get("FSCTL_LOG_FORMAT", ""))],
                        force=True)
