"""The callback record: what is stored in Redis and shown by the API. Pure data."""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, overload

import orjson

CALLBACK_STATES = ("scheduled", "queued", "dialing", "waiting", "bridged", "completed", "failed", "cancelled")
FINAL_STATES = frozenset({"completed", "failed", "cancelled"})
LEG_STATES = ("pending", "dialing", "ringing", "early", "answered", "bridged", "hungup")
_LEG_RANK = {s: i for i, s in enumerate(LEG_STATES)}
LEG_TIMESTAMPS = ("dialed", "ringing", "early", "answered", "parked", "bridged", "hungup")
MODES = ("sequential", "simultaneous")
HISTORY_MAX = 64
"""Most history entries kept per callback (the oldest are dropped beyond)."""


def encode_json(doc: Any) -> bytes:
    """Compact JSON; json escapes the lone surrogates orjson refuses."""
    try:
        return orjson.dumps(doc)
    except orjson.JSONEncodeError:
        return json.dumps(doc, separators=(",", ":")).encode()


def decode_json(raw: str | bytes) -> Any:
    """JSON text (orjson; json reads the lone-surrogate escapes orjson refuses)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def _entry_text(entry: dict[str, Any]) -> str:
    """One history entry's JSON, as str: orjson's bytes keep its whole output buffer
    (4 KiB for a 60-byte entry), which kept ~60 KB per live callback."""
    return encode_json(entry).decode()


_ENTRY_DECODER = json.JSONDecoder()
"""Finds where an entry's JSON ends in a history's text (without re-encoding it)."""
_PACK_WBITS = -11
"""Packed histories are raw deflate with a 2 KiB window (a history is ~1 KB; zlib's default
32 KiB window takes ten times as long to set up)."""
_PACK_MEM_LEVEL = 4
"""zlib's memLevel for packing (its hash table: 8 KiB)."""
_PACK_ZDICT = (
    b'{"ts":1700000000.1,"event":"leg","leg":"A","state":"early"},'
    b'{"ts":1700000000.1,"event":"job","leg":"B","result":"+OK "},'
    b'{"ts":1700000000.1,"event":"leg","leg":"A","state":"dialing"},'
    b'{"ts":1700000000.1,"event":"leg","leg":"B","state":"ringing"},'
    b'{"ts":1700000000.1,"event":"state","state":"waiting"},'
    b'{"ts":1700000000.1,"event":"leg","leg":"A","state":"answered"},'
    b'{"ts":1700000000.1,"event":"leg","leg":"B","state":"bridged"},'
    b'{"ts":1700000000.1,"event":"state","state":"bridged"}'
)
"""zlib preset dictionary of typical entries, so that the first ones compress too (packed
histories live in memory only: this may change freely)."""


def _pack(text: str) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, _PACK_WBITS, _PACK_MEM_LEVEL,
                              zlib.Z_DEFAULT_STRATEGY, _PACK_ZDICT)
    return packer.compress(text.encode("utf-8", "surrogatepass")) + packer.flush()


def _unpack(packed: bytes) -> str:
    unpacker = zlib.decompressobj(_PACK_WBITS, _PACK_ZDICT)
    return (unpacker.decompress(packed) + unpacker.flush()).decode("utf-8", "surrogatepass")


class History:
    """A callback's history, bounded, kept as the entries' JSON joined by commas: one str
    per callback (a live callback holds a dozen or more entries; as dicts, and then as one
    str each, they were the biggest part of the worker's memory), or that text compressed
    while the callback waits (:meth:`pack`). Reads give dicts; a record is written with the
    entries' JSON as it is."""

    __slots__ = ("_n", "_text")
    _text: str | bytes
    """The entries' JSON joined by commas; bytes: that text packed."""
    _n: int

    def __init__(self, entries: Iterable[dict[str, Any]] = ()) -> None:
        texts = [_entry_text(entry) for entry in entries][-HISTORY_MAX:]
        self._text = ",".join(texts)
        self._n = len(texts)

    def append(self, entry: dict[str, Any]) -> None:
        text = _entry_text(entry)
        self._text = f"{self.text},{text}" if self._n else text
        self._n += 1
        if self._n > HISTORY_MAX:
            self._drop_oldest(self._n - HISTORY_MAX)

    def pack(self) -> None:
        """Keep the entries compressed until the next one (~1 KB → ~0.2 KB): for a callback
        that will not change for a while, a bridged call. Reads and writes stay the same."""
        if isinstance(self._text, str) and self._text:
            self._text = _pack(self._text)

    @property
    def text(self) -> str:
        """The entries' JSON joined by commas (unpacked on the fly when packed)."""
        return self._text if isinstance(self._text, str) else _unpack(self._text)

    def _drop_oldest(self, count: int) -> None:
        """Cut the first ``count`` entries off the text (each one's end found by decoding it)."""
        text, at = self.text, 0
        for _ in range(count):
            _entry, at = _ENTRY_DECODER.raw_decode(text, at)
            at += 1  # the comma after it
        self._text = text[at:]
        self._n -= count

    def __len__(self) -> int:
        return self._n

    def _entries(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = decode_json(f"[{self.text}]")
        return entries

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._entries())

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        return self._entries()[i]

    def fragment(self) -> orjson.Fragment:
        """The entries as one JSON array, for orjson to write without decoding them."""
        return orjson.Fragment(f"[{self.text}]")


_SHARED = ("owner", "worker", "node", "core_uuid", "mode", "first", "state", "outcome")
"""Fields whose values many live callbacks share (interned when a record is read)."""


def _intern(d: dict[str, Any], names: Iterable[str]) -> None:
    for name in names:
        value = d.get(name)
        if type(value) is str:
            d[name] = sys.intern(value)


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
    send_dtmf: str | None = None
    """Digits to send once this leg answered, before the bridge (fsctl.commands.DTMF_RE)."""
    dtmf_sent: bool = False
    """Its digits were handed to FreeSWITCH."""
    dtmf_done: bool = False
    """Its digits have played out (or can no longer be waited for): the bridge may go."""
    retry: dict[str, Any] | None = None
    """Its retry policy (fsctl.schemas.RetrySchema): attempts, delay_s, backoff, on."""
    retries: int = 0
    """Attempts made again under the retry policy (not the throttle redials)."""
    retry_wait: bool = False
    """It failed and waits to be dialled again under its retry policy."""

    @property
    def alive(self) -> bool:
        """Dialled and not known to be gone."""
        return self.state not in ("pending", "hungup")

    @property
    def awaiting_redial(self) -> bool:
        """It waits to be dialled again: its originate was refused for capacity (no
        channel), or it failed and its retry policy dials it again."""
        return self.retry_wait or (self.state == "dialing" and self.job_result is not None
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
        _intern(d, ("from_", "route", "state", "caller_id_name"))
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
    status_callback: str | None = None
    """Where status webhooks go (fsctl.webhooks); None: no webhooks."""
    status_events: list[str] | None = None
    """The status events asked for; None: every one."""
    record: str | None = None
    """Record the bridged call: ``mixed`` or ``stereo``; None: not recorded."""
    recording: dict[str, Any] | None = None
    """The recording: path, mode, state (pending, recording, done, failed, none) and, once
    done, seconds, ms, samples and size_bytes (from FreeSWITCH's record_* variables)."""
    waiting_media: dict[str, str] | None = None
    """What the first answered leg hears while the other is dialled (fsctl.schemas
    WaitingMediaSchema: ringback, music, announcement); None: the default ringback."""
    not_before: float | None = None
    """Unix seconds: not dialled before then (``scheduled`` until then); None: at once."""
    not_after: float | None = None
    """Unix seconds: not started after then (it ends ``expired``); None: no bound."""
    metadata: dict[str, str] | None = None
    """The requester's own data (bounded in fsctl.schemas): stored and shown, never sent to
    FreeSWITCH; None: none given."""
    history: History = field(default_factory=History)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__slots__ if k != "legs"}
        d["legs"] = {name: leg.to_dict() for name, leg in self.legs.items()}
        d["history"] = list(self.history)
        return d

    def to_json(self) -> bytes:
        """The record as compact JSON (written on every change: history is not decoded)."""
        d = {k: getattr(self, k) for k in self.__slots__ if k != "legs"}
        d["legs"] = {name: leg.to_dict() for name, leg in self.legs.items()}
        d["history"] = self.history.fragment()
        try:
            return orjson.dumps(d)
        except orjson.JSONEncodeError:  # a lone surrogate: the slow path, all decoded
            return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Callback:
        d = dict(d)
        legs = {name: Leg.from_dict(leg) for name, leg in d.pop("legs").items()}
        d["history"] = History(d.get("history") or ())
        _intern(d, _SHARED)
        return cls(legs=legs, **d)

    def note(self, ts: float, kind: str, **detail: Any) -> None:
        """Append one history entry (bounded)."""
        entry: dict[str, Any] = {"ts": ts, "event": kind}
        entry.update({k: v for k, v in detail.items() if v is not None})
        self.history.append(entry)
        self.updated_at = max(self.updated_at, ts)
