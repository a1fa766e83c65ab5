"""A timing trace of the simulator's channels, for benchmarks (``fsctl simulate --trace``).

Latencies measured at the FreeSWITCH side are the same for any controller: the trace
appends one JSON line per step of a channel, with its wall-clock time (``time.time()``):

- ``{"ev": "originate", "t", "uuid", "cid", "leg"}``: an originate was received (``t``: when
  the simulator began to handle it); ``cid`` / ``leg`` are the originate's
  ``fsctl_callback_id`` / ``fsctl_leg`` variables (null when absent), ``uuid`` the channel's
  Unique-ID (its ``origination_uuid`` when one was given). Originates refused before a
  channel exists (session limits, bad syntax) are not traced.
- ``{"ev": "park", "t", "uuid"}``: the channel parked, just after its originate's
  BACKGROUND_JOB; CHANNEL_PARK was queued for any connection subscribed to it (the
  connection's writer puts it on the socket in the same turn of the event loop).
- ``{"ev": "bridge", "t", "a", "b"}``: a ``uuid_bridge`` of two channels was received.
- ``{"ev": "hangup", "t", "uuid", "cause"}``: the channel began to hang up.

Lines are buffered in memory and written every ``flush_interval_s``, when many are
buffered, and on :meth:`flush` (the simulator flushes when it stops). Off by default: the
simulator's hooks cost one ``is None`` test each then.
"""

from __future__ import annotations

import json
import logging
import time
from typing import IO, Self

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
"""How often the simulator writes the buffered lines."""
MAX_BUFFERED = 20_000
"""Lines kept in memory before they are written without waiting for the interval."""

_json_str = json.JSONEncoder(separators=(",", ":")).encode
"""A string as JSON (what json.dumps() writes for it inside an object)."""


def _json(value: str | None) -> str:
    return "null" if value is None else _json_str(value)


class Trace:
    """Appends timing records to ``path`` (JSON lines, buffered); each line is written as
    json.dumps(record, separators=(",", ":")) would write it (a float's repr, as json's)."""

    def __init__(self, path: str, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.path = path
        self.flush_interval_s = flush_interval_s
        self._fh: IO[str] | None = open(path, "a", encoding="utf-8")  # noqa: SIM115 - close()
        self._lines: list[str] = []

    def _add(self, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) >= MAX_BUFFERED:
            self.flush()

    def originate(self, t: float, uuid: str, variables: dict[str, str]) -> None:
        """An originate received at ``t`` created channel ``uuid``."""
        self._add(f'{{"ev":"originate","t":{t!r},"uuid":{_json_str(uuid)},'
                  f'"cid":{_json(variables.get("fsctl_callback_id"))},'
                  f'"leg":{_json(variables.get("fsctl_leg"))}}}')

    def park(self, uuid: str) -> None:
        self._add(f'{{"ev":"park","t":{time.time()!r},"uuid":{_json_str(uuid)}}}')

    def bridge(self, a: str, b: str) -> None:
        self._add(f'{{"ev":"bridge","t":{time.time()!r},"a":{_json_str(a)},"b":{_json_str(b)}}}')

    def hangup(self, uuid: str, cause: str) -> None:
        self._add(f'{{"ev":"hangup","t":{time.time()!r},"uuid":{_json_str(uuid)},'
                  f'"cause":{_json_str(cause)}}}')

    def flush(self) -> None:
        """Write every buffered line to the file."""
        if self._fh is None or not self._lines:
            return
        data = "\n".join(self._lines) + "\n"
        self._lines.clear()
        try:
            self._fh.write(data)
            self._fh.flush()
        except OSError as exc:
            log.warning("simulator trace %s: cannot write: %s", self.path, exc)

    def close(self) -> None:
        self.flush()
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
