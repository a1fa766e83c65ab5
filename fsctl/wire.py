"""The ESL wire format: framing, URL encoding, event parsing and command writing.

Pure (no I/O). Shared by the client (:mod:`fsctl.esl`) and the simulator, and
checked byte for byte against the recordings of a real FreeSWITCH.

Parsing follows libesl: a header block is split into lines first and each value
is URL-decoded afterwards, so a value carrying ``%0A`` can never forge a header.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from .errors import ProtocolError, UnsafeCommand

# switch_url_encode(): bytes < 0x20, > 0x7E and these characters are %XX-encoded.
_URL_UNSAFE = frozenset(b'\r\n "#%&+:;<=>?@[\\]^`{|}')
_ENCODE_TABLE = [
    (f"%{b:02X}" if (b < 0x20 or b > 0x7E or b in _URL_UNSAFE) else chr(b)) for b in range(256)
]

MAX_FRAME_BYTES = 256 * 1024 * 1024
"""Largest frame body accepted from a peer, in bytes (a guard against garbage lengths).
A ``show channels as json`` reply takes ~900 bytes a channel: 16 MiB cut the event socket
of a node carrying 20,000 channels (10,000 bridged callbacks) on every sweep."""

_FORBIDDEN_IN_COMMAND = ("\r", "\n", "\0")


def url_encode(value: str) -> str:
    """Encode a header value exactly as FreeSWITCH's switch_url_encode() does."""
    raw = value.encode("utf-8")
    if all(32 <= b <= 126 and b not in _URL_UNSAFE for b in raw):
        return value
    return "".join(_ENCODE_TABLE[b] for b in raw)


def url_decode(value: str) -> str:
    """Decode a %XX-encoded header value (libesl's esl_url_decode)."""
    if "%" not in value:
        return value
    return unquote(value, errors="replace")


class Event:
    """One FreeSWITCH event: its headers and its body, if any.

    A parsed event keeps its header block as text and decodes only the headers asked
    for (:meth:`get`): a CHANNEL_* event of a SIP leg carries 3–11 KB of channel
    variables, of which fsctl reads a handful. The lookup keeps libesl's split-then-decode
    rule: a header is only ever found at the start of a line of the raw block, and its
    value is URL-decoded after it was cut out, so ``%0A`` in a value cannot forge one.
    :attr:`headers` (every header, decoded) is built on first use.
    """

    __slots__ = ("_block", "_cache", "_headers", "body")

    def __init__(self, headers: dict[str, str] | None = None, body: str = "", *,
                 block: str | None = None) -> None:
        self._headers = headers
        self._block = block  # "\n" + the raw header block, when parsed from the wire
        self._cache: dict[str, str | None] = {}
        self.body = body

    @classmethod
    def from_block(cls, block: str, body: str = "") -> Event:
        """An event over a raw (still URL-encoded) ``text/event-plain`` header block."""
        return cls(None, body, block="\n" + block)

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = parse_header_lines(self._block or "", decode=True)
        return self._headers

    @property
    def name(self) -> str:
        return self.get("Event-Name") or ""

    def get(self, name: str, default: str | None = None) -> str | None:
        if self._headers is not None or self._block is None:
            return self.headers.get(name, default)
        try:
            value = self._cache[name]
        except KeyError:
            value = self._cache[name] = _find_header(self._block, name)
        return default if value is None else value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self.headers == other.headers and self.body == other.body

    def __repr__(self) -> str:
        return f"Event({self.name!r}, Unique-ID={self.get('Unique-ID')!r})"


def _find_header(block: str, name: str) -> str | None:
    """The decoded value of the last line of ``block`` ("\n" + raw lines) that starts
    with ``name: ``; None when there is none. Same answer as :func:`parse_header_lines`."""
    if ": " in name or "\n" in name:
        return None  # never a header name after splitting on the first ": "
    key = "\n" + name + ": "
    at = block.rfind(key)
    if at < 0:
        return None
    start = at + len(key)
    end = block.find("\n", start)
    return url_decode(block[start:] if end < 0 else block[start:end])


@dataclass(slots=True)
class Frame:
    """One frame from the server: outer headers (never URL-encoded) and raw body."""

    headers: dict[str, str]
    body: bytes = b""
    event: Event | None = field(default=None)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")


def parse_header_lines(block: str, decode: bool) -> dict[str, str]:
    """Split a header block into lines first, then split and (maybe) decode each value.

    A line without ``": "`` is ignored rather than glued to the previous header.
    For a repeated header name the last value wins (so PRIVATE_COMMAND's inner
    ``Event-Name: COMMAND`` block cannot mask the event's own name).
    """
    headers: dict[str, str] = {}
    for line in block.split("\n"):
        name, sep, value = line.partition(": ")
        if not sep:
            continue
        headers[name] = url_decode(value) if decode else value
    return headers


_BLANK_LINE = re.compile("\n\n")
"""The end of an inner header block (``str.partition("\n\n")`` is 3× slower on an event's
~6 KB of lines: a two-character needle whose characters are on every line)."""


def parse_event_plain(body: bytes) -> Event:
    """Parse the body of a ``text/event-plain`` frame (headers decoded when read)."""
    text = body.decode("utf-8", errors="replace")
    blank = _BLANK_LINE.search(text)
    if blank is None:
        head, sep, rest = text, "", ""
    else:
        head, sep, rest = text[:blank.start()], "\n\n", text[blank.end():]
    event = Event.from_block(head)
    length_text = event.get("Content-Length")
    if sep and length_text is not None:
        try:
            length = int(length_text)
        except ValueError as exc:
            raise ProtocolError(f"bad inner Content-Length {length_text!r}") from exc
        event.body = rest.encode("utf-8")[:length].decode("utf-8", errors="replace")
    return event


def parse_event_json(body: bytes) -> Event:
    """Parse the body of a ``text/event-json`` frame (values are not encoded)."""
    try:
        obj = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"bad JSON event: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("JSON event is not an object")
    inner = obj.pop("_body", "")
    headers = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in obj.items()}
    return Event(headers=headers, body=inner if isinstance(inner, str) else str(inner))


class FrameReader:
    """Incremental frame parser: feed bytes, get complete frames.

    Frames are cut on the outer ``Content-Length``; a frame whose body has not
    fully arrived stays buffered (EOF in the middle of a body is the caller's
    :meth:`at_eof` check, never a busy loop).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pending: dict[str, str] | None = None
        self._need = 0

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while True:
            if self._pending is None:
                end = self._buf.find(b"\n\n")
                if end < 0:
                    if len(self._buf) > MAX_FRAME_BYTES:
                        raise ProtocolError("header block too long")
                    return frames
                block = bytes(self._buf[:end]).decode("utf-8", errors="replace")
                del self._buf[: end + 2]
                if not block.strip("\n"):
                    continue
                headers = parse_header_lines(block.lstrip("\n"), decode=False)
                length = headers.get("Content-Length")
                if length is None:
                    frames.append(Frame(headers))
                    continue
                try:
                    self._need = int(length)
                except ValueError as exc:
                    raise ProtocolError(f"bad Content-Length {length!r}") from exc
                if not 0 <= self._need <= MAX_FRAME_BYTES:
                    raise ProtocolError(f"Content-Length out of range: {self._need}")
                self._pending = headers
            if len(self._buf) < self._need:
                return frames
            with memoryview(self._buf) as view:  # one copy (a bytearray slice is another)
                body = bytes(view[: self._need])
            del self._buf[: self._need]
            headers, self._pending = self._pending, None
            frames.append(make_frame(headers, body))

    def at_eof(self) -> bool:
        """True when the stream ended cleanly between frames."""
        return self._pending is None and not bytes(self._buf).strip(b"\n")


def make_frame(headers: dict[str, str], body: bytes) -> Frame:
    """Build a frame, parsing its event if it carries one."""
    ctype = headers.get("Content-Type", "")
    if ctype == "text/event-plain":
        return Frame(headers, body, parse_event_plain(body))
    if ctype == "text/event-json":
        return Frame(headers, body, parse_event_json(body))
    return Frame(headers, body)


def check_command_text(text: str) -> None:
    """Refuse a command text that would split or reload the event socket."""
    for ch in _FORBIDDEN_IN_COMMAND:
        if ch in text:
            raise UnsafeCommand(f"command contains {ch!r}: refused")
    lowered = text.lower()
    if "mod_event_socket" in lowered and ("reload" in lowered or "unload" in lowered):
        raise UnsafeCommand("command would reload mod_event_socket: refused")


def format_command(command: str, headers: dict[str, str] | None = None) -> bytes:
    """The bytes of one client command: its line, header lines, then an empty line."""
    check_command_text(command)
    lines = [command]
    for name, value in (headers or {}).items():
        check_command_text(name)
        check_command_text(value)
        lines.append(f"{name}: {value}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


# ---- server side (used by the simulator) -------------------------------------------


def encode_reply(reply_text: str, extra: dict[str, str] | None = None) -> bytes:
    """A ``command/reply`` frame."""
    lines = ["Content-Type: command/reply", f"Reply-Text: {reply_text}"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def encode_api_response(body: str) -> bytes:
    """An ``api/response`` frame (Content-Type first, then Content-Length)."""
    data = body.encode("utf-8")
    return b"Content-Type: api/response\nContent-Length: %d\n\n" % len(data) + data


def encode_framed(content_type: str, body: str) -> bytes:
    """A frame with a body, Content-Type first (disconnect notice, rude rejection)."""
    data = body.encode("utf-8")
    return f"Content-Type: {content_type}\nContent-Length: {len(data)}\n\n".encode() + data


def encode_event_plain(headers: list[tuple[str, str]], body: str | None = None) -> bytes:
    """A ``text/event-plain`` frame as FreeSWITCH writes it (Content-Length first)."""
    inner = "".join(f"{k}: {url_encode(v)}\n" for k, v in headers)
    if body is not None:
        data = body.encode("utf-8")
        payload = (inner + f"Content-Length: {len(data)}\n\n").encode("utf-8") + data
    else:
        payload = (inner + "\n").encode("utf-8")
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(payload) + payload


def encode_event_json(headers: list[tuple[str, str]], body: str | None = None) -> bytes:
    """A ``text/event-json`` frame."""
    obj: dict[str, str] = dict(headers)
    if body is not None:
        obj["Content-Length"] = str(len(body.encode("utf-8")))
        obj["_body"] = body
    data = json.dumps(obj).encode("utf-8")
    return b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(data) + data


def parse_commands(buf: bytearray) -> list[tuple[str, dict[str, str]]]:
    """Server side: cut complete client commands (ended by an empty line) off ``buf``."""
    out: list[tuple[str, dict[str, str]]] = []
    while True:
        end = buf.find(b"\n\n")
        if end < 0:
            return out
        block = bytes(buf[:end]).decode("utf-8", errors="replace").replace("\r", "")
        del buf[: end + 2]
        lines = [ln for ln in block.split("\n")]
        while lines and not lines[0].strip():
            lines.pop(0)
        if not lines:
            continue
        headers = parse_header_lines("\n".join(lines[1:]), decode=False)
        out.append((lines[0], headers))
