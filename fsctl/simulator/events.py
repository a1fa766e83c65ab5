"""Event building for the simulator: cheap, cached, encoded only when someone listens.

An event is a list of *segments*; each segment is ``(plain_text, pairs)`` where
``plain_text`` is the already URL-encoded ``Name: value\\n`` lines and ``pairs`` the raw
headers (used for JSON and filters). Channels keep their slow-changing segments
(identity, caller profile, variables) cached, so building an event is mostly a join.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterable, Iterator
from email.utils import formatdate

from ..wire import url_encode

_SCAN_MAX = 64
"""Segments with at most this many headers are scanned by filters, not indexed."""


class Pairs(list[tuple[str, str]]):
    """A cached segment's headers, with an index built the first time a filter asks."""

    __slots__ = ("_index",)

    def lookup(self, header: str) -> list[str]:
        if len(self) <= _SCAN_MAX:
            return [v for k, v in self if k == header]
        try:
            index = self._index
        except AttributeError:
            index = self._index = {}
            for k, v in self:
                index.setdefault(k, []).append(v)
        return index.get(header, [])


class VarPairs:
    """The ``variable_*`` headers of a channel's variables: iterated only for JSON and
    uuid_dump, looked up by filters straight from the channel's own dict, not a copy (an
    event is filtered and encoded as it is published, before any variable changes; a
    change makes the channel a new segment)."""

    __slots__ = ("_vars",)

    def __init__(self, variables: dict[str, str]) -> None:
        self._vars = variables

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((f"variable_{k}", v) for k, v in self._vars.items())

    def lookup(self, header: str) -> list[str]:
        if not header.startswith("variable_"):
            return []
        value = self._vars.get(header[9:])
        return [] if value is None else [value]


Segment = tuple[str, Iterable[tuple[str, str]]]
"""(the headers' encoded text, the raw (name, value) pairs); cached ones carry Pairs."""

# Event-Calling-File / -Function / -Line-Number per event kind (as FreeSWITCH 1.11 sends).
_CALLING: dict[str, tuple[str, str, str]] = {
    "CHANNEL_OUTGOING": (
        "switch_core_session.c",
        "switch_core_session_outgoing_channel",
        "768",
    ),
    "CHANNEL_STATE": ("switch_channel.c", "switch_channel_perform_set_running_state", "2409"),
    "CHANNEL_CREATE": ("switch_core_state_machine.c", "switch_core_session_run", "626"),
    "CHANNEL_ORIGINATE": ("switch_core_state_machine.c", "switch_core_session_run", "632"),
    "CHANNEL_PROGRESS": (
        "switch_channel.c",
        "switch_channel_perform_mark_ring_ready_value",
        "3507",
    ),
    "CHANNEL_PROGRESS_MEDIA": (
        "switch_channel.c",
        "switch_channel_perform_mark_pre_answered",
        "3562",
    ),
    "CHANNEL_CALLSTATE": ("switch_channel.c", "switch_channel_perform_set_callstate", "302"),
    "CODEC": ("switch_core_codec.c", "switch_core_session_set_read_codec", "300"),
    "CODEC_SIP": ("switch_core_codec.c", "switch_core_session_set_real_read_codec", "189"),
    "CODEC_WRITE": ("switch_core_codec.c", "switch_core_session_set_write_codec", "471"),
    "CHANNEL_UUID": ("switch_core_session.c", "switch_core_session_set_uuid", "2056"),
    "CHANNEL_ANSWER": ("switch_channel.c", "switch_channel_perform_mark_answered", "3848"),
    "CALL_UPDATE": ("switch_channel.c", "switch_channel_flip_cid", "3279"),
    "CHANNEL_EXECUTE": ("switch_core_session.c", "switch_core_session_exec", "2949"),
    "CHANNEL_EXECUTE_COMPLETE": ("switch_core_session.c", "switch_core_session_exec", "2972"),
    "CHANNEL_PARK": ("switch_ivr.c", "switch_ivr_park", "1002"),
    "CHANNEL_UNPARK": ("switch_ivr.c", "switch_ivr_park", "1213"),
    "CHANNEL_BRIDGE": ("switch_ivr_bridge.c", "uuid_bridge_on_soft_execute", "1780"),
    "CHANNEL_UNBRIDGE": ("switch_ivr_bridge.c", "audio_bridge_thread", "809"),
    "CHANNEL_HANGUP": ("switch_channel.c", "switch_channel_perform_hangup", "3447"),
    "CHANNEL_HANGUP_COMPLETE": (
        "switch_core_state_machine.c",
        "switch_core_session_reporting_state",
        "943",
    ),
    "CHANNEL_DESTROY": ("switch_core_session.c", "switch_core_session_perform_destroy", "1588"),
    "PLAYBACK_START": ("switch_ivr_play_say.c", "switch_ivr_play_file", "1534"),
    "PLAYBACK_STOP": ("switch_ivr_play_say.c", "switch_ivr_play_file", "2039"),
    "PRIVATE_COMMAND": ("switch_ivr.c", "switch_ivr_parse_next_event", "804"),
    "COMMAND": ("switch_ivr.c", "switch_ivr_parse_next_event", "804"),
    "API": ("switch_loadable_module.c", "switch_api_execute", "3140"),
    "BACKGROUND_JOB": ("mod_event_socket.c", "api_exec", "1580"),
    "HEARTBEAT": ("switch_core.c", "send_heartbeat", "79"),
}


ASCII_ENCODING = str.maketrans({chr(b): url_encode(chr(b)) for b in range(0x80)
                                if url_encode(chr(b)) != chr(b)})
"""Every ASCII character FreeSWITCH encodes, with its %XX: str.translate() does the work."""
_ENCODED_CHAR = re.compile("[" + re.escape("".join(map(chr, ASCII_ENCODING))) + "]")
"""Finds an ASCII character to encode (a search is quicker than a translate that finds none)."""

ENCODED_MEMO_MAX = 16_384
"""Distinct values kept with their encoding before the memo starts afresh."""

_encoded: dict[str, str] = {}
"""value -> its encoding: most values (templates, a leg's ids) are sent again and again,
and str.translate() is slow on the values that have characters to encode (SDP, URIs)."""
cached_encoding = _encoded.get
"""``cached_encoding(v) or encode_value(v)``: the memo's lookup, for loops that inline it."""


def encode_new(value: str) -> str:
    """wire.url_encode(), at C speed for ASCII values (nearly all of them); for a value
    sent with one call only (its tags, ports …), not memoised."""
    if value.isascii():
        return value.translate(ASCII_ENCODING) if _ENCODED_CHAR.search(value) else value
    return url_encode(value)


def encode_value(value: str) -> str:
    """:func:`encode_new`, memoised."""
    encoded = _encoded.get(value)
    if encoded is None:
        if len(_encoded) >= ENCODED_MEMO_MAX:
            _encoded.clear()
        encoded = _encoded[value] = encode_new(value)
    return encoded


def make_segment(pairs: list[tuple[str, str]]) -> Segment:
    cached, encode = cached_encoding, encode_value
    text = "".join([f"{k}: {cached(v) or encode(v)}\n" for k, v in pairs])
    return text, Pairs(pairs)


def now_us() -> int:
    return int(time.time() * 1_000_000)


class OutEvent:
    """One event ready to be sent; encodings are built at most once."""

    __slots__ = ("_found", "_json", "_plain", "body", "name", "segments")

    def __init__(self, name: str, segments: list[Segment], body: str | None = None) -> None:
        self.name = name
        self.segments = segments
        self.body = body
        self._plain: bytes | None = None
        self._json: bytes | None = None
        self._found: dict[str, list[str]] = {}

    def pairs(self) -> list[tuple[str, str]]:
        return [pair for _, seg_pairs in self.segments for pair in seg_pairs]

    def values(self, header: str) -> list[str]:
        """Every value of ``header`` (filters match any of them); a cached segment answers
        from its own index, so a filter costs a few lookups, not a scan of every header.
        ``variable_*`` headers are only ever in the variables' segment (VarPairs)."""
        found = self._found.get(header)
        if found is None:
            found = []
            if header.startswith("variable_"):
                for _, pairs in self.segments:
                    if type(pairs) is VarPairs:
                        found += pairs.lookup(header)
            else:
                for _, pairs in self.segments:
                    if type(pairs) is list:
                        found += [v for k, v in pairs if k == header]
                    elif type(pairs) is not VarPairs:
                        found += pairs.lookup(header)  # type: ignore[attr-defined]
            self._found[header] = found
        return found

    def get(self, header: str) -> str | None:
        found = self.values(header)
        return found[-1] if found else None

    def plain(self) -> bytes:
        if self._plain is None:
            inner = "".join(text for text, _ in self.segments)
            if self.body is not None:
                data = self.body.encode("utf-8")
                payload = (inner + f"Content-Length: {len(data)}\n\n").encode("utf-8") + data
            else:
                payload = (inner + "\n").encode("utf-8")
            self._plain = (
                b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(payload) + payload
            )
        return self._plain

    def json(self) -> bytes:
        if self._json is None:
            obj: dict[str, str] = {}
            for k, v in self.pairs():
                obj.setdefault(k, v)
            if self.body is not None:
                obj["Content-Length"] = str(len(self.body.encode("utf-8")))
                obj["_body"] = self.body
            data = json.dumps(obj, separators=(",", ":")).encode("utf-8")
            self._json = b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(data) + data
        return self._json


class EventFactory:
    """Builds the common header part of every event for one simulator run (Core-UUID)."""

    def __init__(self, core_uuid: str, hostname: str) -> None:
        self.core_uuid = core_uuid
        self._seq = itertools.count(1)
        self._core = make_segment(
            [
                ("Core-UUID", core_uuid),
                ("FreeSWITCH-Hostname", hostname),
                ("FreeSWITCH-Switchname", hostname),
                ("FreeSWITCH-IPv4", "127.0.0.1"),
                ("FreeSWITCH-IPv6", "::1"),
            ]
        )
        self._calling = {k: make_segment(self._calling_pairs(k)) for k in _CALLING}
        self._calling_default = make_segment(
            [
                ("Event-Calling-File", "fsctl_simulator.c"),
                ("Event-Calling-Function", "simulate"),
                ("Event-Calling-Line-Number", "1"),
            ]
        )
        self._date_second = -1
        self._date_cache: Segment = ("", [])

    @staticmethod
    def _calling_pairs(kind: str) -> list[tuple[str, str]]:
        file, func, line = _CALLING[kind]
        return [
            ("Event-Calling-File", file),
            ("Event-Calling-Function", func),
            ("Event-Calling-Line-Number", line),
        ]

    def next_seq(self) -> int:
        return next(self._seq)

    def _dates(self, ts_us: int) -> tuple[str, list[tuple[str, str]]]:
        second = ts_us // 1_000_000
        if second != self._date_second:
            local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            gmt = formatdate(second, usegmt=True)
            self._date_second = second
            self._date_cache = make_segment([("Event-Date-Local", local), ("Event-Date-GMT", gmt)])
        return self._date_cache

    def head(self, name: str, seq: int | None = None, ts_us: int | None = None,
             calling: str | None = None) -> list[Segment]:
        """Event-Name, Core-UUID …, Event-Date-*, Event-Calling-*, Event-Sequence."""
        ts = ts_us if ts_us is not None else now_us()
        dates_text, dates_pairs = self._dates(ts)
        seq = seq if seq is not None else self.next_seq()
        stamp, seq_text = str(ts), str(seq)
        calling_seg = self._calling.get(calling or name, self._calling_default)
        return [
            (f"Event-Name: {name}\n", [("Event-Name", name)]),
            self._core,
            (f"{dates_text}Event-Date-Timestamp: {stamp}\n",
             dates_pairs + [("Event-Date-Timestamp", stamp)]),
            calling_seg,
            (f"Event-Sequence: {seq_text}\n", [("Event-Sequence", seq_text)]),
        ]

    def simple(self, name: str, pairs: list[tuple[str, str]], body: str | None = None,
               seq: int | None = None, ts_us: int | None = None) -> OutEvent:
        return OutEvent(name, self.head(name, seq, ts_us) + [make_segment(pairs)], body)
