"""The ESL wire format cannot be fooled by values (fsctl.wire; FREESWITCH.md §1).

Frames are built by hand as bytes, the way FreeSWITCH writes them: a value carrying
``%0A`` (an encoded newline) must never become a header of its own, never overwrite one,
never change the framing of what follows. Properties: encode → parse round-trips for
any header values and any chunking; ``url_encode`` encodes exactly switch_url_encode()'s
set; ``format_command`` refuses CR, LF and NUL anywhere.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import fixtures_dir

from fsctl.errors import UnsafeCommand
from fsctl.wire import (
    Event,
    FrameReader,
    encode_api_response,
    encode_event_plain,
    encode_reply,
    format_command,
    parse_header_lines,
    url_decode,
    url_encode,
)

FAST = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FS_URL_UNSAFE = b'\r\n "#%&+:;<=>?@[\\]^`{|}'
"""switch_utils.c switch_url_encode(): ``urlunsafe``; besides, every byte < 0x20 or > 0x7E."""

CALL = "6f1d2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"
NEXT_REPLY = b"Content-Type: api/response\nContent-Length: 6\n\n+OK x\n"
"""A frame following the crafted one: its framing must be untouched."""


def event_frame(lines: list[bytes], body: bytes | None = None) -> bytes:
    """An event-plain frame from raw header lines (values already as they go on the wire)."""
    inner = b"".join(line + b"\n" for line in lines)
    if body is None:
        payload = inner + b"\n"
    else:
        payload = inner + b"Content-Length: %d\n\n" % len(body) + body
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(payload) + payload


def base_lines(hostile: bytes) -> list[bytes]:
    return [
        b"Event-Name: CHANNEL_ANSWER",
        b"Core-UUID: " + CALL.encode(),
        b"Unique-ID: " + CALL.encode(),
        b"Caller-Caller-ID-Name: " + hostile,
        b"variable_fsctl_leg: A",
    ]


BASE_NAMES = {"Event-Name", "Core-UUID", "Unique-ID", "Caller-Caller-ID-Name",
              "variable_fsctl_leg"}

HOSTILE_VALUES = [
    "%0A",
    "%0D%0A",
    "%0A%0A",
    "%0D",
    "%00",
    "x%0AEvent-Name%3A%20X",
    "x%0D%0AEvent-Name%3A%20X",
    "%0AContent-Length%3A%20999",
    "%0A%0AContent-Length%3A%20999%0A%0A",
    "%0AUnique-ID%3A%20forged",
    "%0Avariable_fsctl_leg%3A%20B",
    "%0A%0AContent-Type%3A%20text/event-plain%0AContent-Length%3A%205%0A%0Ahello",
    "a%3A%20b",
    "%25%30%41",  # a literal "%0A" after one decode: must stay text
    "Event-Name: inline",  # no encoding at all: still one header line
    "%E2%80%AE%F0%9F%92%A9%0A",
]


@pytest.mark.parametrize("wire_value", HOSTILE_VALUES)
@pytest.mark.parametrize("chunk", [0, 1, 7])
def test_encoded_newline_in_a_value_forges_nothing(wire_value: str, chunk: int) -> None:
    frame = event_frame(base_lines(wire_value.encode()))
    data = frame + NEXT_REPLY
    # what the worker reads: single headers looked up in the raw block, never a full parse
    (lazy, _next) = FrameReader().feed(data)
    assert lazy.event is not None
    assert lazy.event.get("Event-Name") == "CHANNEL_ANSWER"
    assert lazy.event.get("Unique-ID") == CALL
    assert lazy.event.get("variable_fsctl_leg") == "A"
    assert lazy.event.get("Caller-Caller-ID-Name") == url_decode(wire_value)
    for forged in ("Content-Length", "Content-Type", "X", "forged", "hello"):
        assert lazy.event.get(forged) is None
    assert lazy.event.body == ""
    reader = FrameReader()
    if chunk == 0:
        frames = reader.feed(data)
    else:
        frames = []
        for i in range(0, len(data), chunk):
            frames += reader.feed(data[i:i + chunk])
    assert len(frames) == 2 and reader.at_eof()
    event = frames[0].event
    assert event is not None
    assert set(event.headers) == BASE_NAMES  # nothing created
    assert event.headers["Event-Name"] == "CHANNEL_ANSWER"  # nothing overwritten
    assert event.headers["Unique-ID"] == CALL
    assert event.headers["variable_fsctl_leg"] == "A"
    assert event.body == ""
    # the decoded value carries the newline (or whatever it encodes) literally
    assert event.headers["Caller-Caller-ID-Name"] == url_decode(wire_value)
    if "%0A" in wire_value:
        assert "\n" in event.headers["Caller-Caller-ID-Name"]
    # the next frame's framing is intact
    assert frames[1].content_type == "api/response" and frames[1].body == b"+OK x\n"


@pytest.mark.parametrize("wire_value", HOSTILE_VALUES)
def test_encoded_newline_before_a_body_keeps_the_body(wire_value: str) -> None:
    """A BACKGROUND_JOB whose encoded Job-Command-Arg carries forged lines: body unchanged."""
    body = b"-ERR NO_ANSWER\n"
    lines = [b"Event-Name: BACKGROUND_JOB", b"Job-UUID: " + CALL.encode(),
             b"Job-Command: originate", b"Job-Command-Arg: " + wire_value.encode()]
    frames = FrameReader().feed(event_frame(lines, body) + NEXT_REPLY)
    assert len(frames) == 2
    event = frames[0].event
    assert event is not None
    assert event.get("Job-UUID") == CALL and event.get("Event-Name") == "BACKGROUND_JOB"
    assert event.get("Job-Command-Arg") == url_decode(wire_value)
    assert set(event.headers) == {"Event-Name", "Job-UUID", "Job-Command", "Job-Command-Arg",
                                  "Content-Length"}
    assert event.headers["Event-Name"] == "BACKGROUND_JOB"
    assert event.headers["Content-Length"] == str(len(body))
    assert event.headers["Job-Command-Arg"] == url_decode(wire_value)
    assert event.body == body.decode()
    assert frames[1].body == b"+OK x\n"


def test_value_encoded_by_fsctl_is_one_line_and_decodes_back() -> None:
    forged = "x\nEvent-Name: X\r\nContent-Length: 999\n\nbgapi originate null/1 &park()\n\n"
    frame = encode_event_plain([("Event-Name", "CHANNEL_CREATE"), ("Caller-Caller-ID-Name", forged),
                                ("Unique-ID", CALL)])
    assert frame.count(b"\n\n") == 2  # the outer block end and the inner block end, nothing else
    (parsed,) = FrameReader().feed(frame)
    assert parsed.event is not None
    assert parsed.event.headers == {"Event-Name": "CHANNEL_CREATE",
                                    "Caller-Caller-ID-Name": forged, "Unique-ID": CALL}


# ---- round trip --------------------------------------------------------------------------

HEADER_NAME = st.from_regex(re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,30}"), fullmatch=True).filter(
    lambda n: n.lower() != "content-length")
HEADERS = st.dictionaries(HEADER_NAME, st.text(), max_size=12)
BODIES = st.none() | st.text(max_size=200)


@FAST
@given(headers=HEADERS, body=BODIES, chunks=st.lists(st.integers(1, 64), max_size=40))
def test_encode_then_parse_round_trips_in_any_chunking(headers: dict[str, str], body: str | None,
                                                       chunks: list[int]) -> None:
    frame = encode_event_plain(list(headers.items()), body)
    data = encode_reply("+OK accepted") + frame + NEXT_REPLY + frame
    reader = FrameReader()
    frames = []
    pos = 0
    for size in chunks:
        frames += reader.feed(data[pos:pos + size])
        pos += size
    frames += reader.feed(data[pos:])
    assert reader.at_eof()
    assert [f.content_type for f in frames] == ["command/reply", "text/event-plain",
                                                "api/response", "text/event-plain"]
    assert frames[2].body == b"+OK x\n"
    for got in (frames[1], frames[3]):
        assert got.event is not None
        expected = dict(headers)
        if body is not None:
            expected["Content-Length"] = str(len(body.encode("utf-8")))
        assert got.event.headers == expected
        assert got.event.body == (body or "")


RAW_LINE = st.one_of(
    st.builds(lambda n, v: f"{n}: {v}", HEADER_NAME | st.sampled_from(["Event-Name", "a: b"]),
              st.text(alphabet="ab:% \r\t%0A\u00e9", max_size=12)),
    st.text(alphabet="ab: %\r", max_size=8),  # lines with and without ": "
)


@FAST
@given(lines=st.lists(RAW_LINE, max_size=12), extra=st.lists(HEADER_NAME, max_size=4))
def test_a_header_looked_up_in_the_raw_block_is_what_the_full_parse_says(
        lines: list[str], extra: list[str]) -> None:
    """Event.get() (the worker's path) agrees with split-then-decode for every name: the
    last line of that name wins, lines without ": " count for nothing, values decode."""
    block = "\n".join(lines)
    full = parse_header_lines(block, decode=True)
    lazy = Event.from_block(block)
    names = set(full) | set(extra) | {"Event-Name", "a", "a: b", ""}
    names |= {line.partition(": ")[2] for line in lines}
    for name in names:
        assert lazy.get(name) == full.get(name), name
    assert lazy.headers == full


@FAST
@given(value=st.text())
def test_url_encode_output_is_one_safe_line(value: str) -> None:
    encoded = url_encode(value)
    assert all(c == "%" or (0x20 < ord(c) < 0x7F and ord(c) not in FS_URL_UNSAFE)
               for c in encoded)
    assert url_decode(encoded) == value


# ---- switch_url_encode's set -------------------------------------------------------------

@pytest.mark.parametrize("byte", range(256))
def test_url_encode_encodes_exactly_freeswitchs_set(byte: int) -> None:
    char = chr(byte)
    if byte >= 0x80:  # U+0080..U+00FF: both UTF-8 bytes are > 0x7E, so both are encoded
        assert url_encode(char) == "".join(f"%{b:02X}" for b in char.encode("utf-8"))
        return
    must_encode = byte < 0x20 or byte > 0x7E or byte in FS_URL_UNSAFE
    assert url_encode(char) == (f"%{byte:02X}" if must_encode else char)


def test_url_encode_matches_every_value_of_the_recordings() -> None:
    """Re-encoding each decoded header value of a real FreeSWITCH gives its exact bytes."""
    checked = 0
    for rx in sorted(fixtures_dir().glob("*.rx")):
        for frame in FrameReader().feed(rx.read_bytes()):
            if frame.content_type != "text/event-plain":
                continue
            head = frame.body.decode("utf-8").split("\n\n", 1)[0]
            for line in head.split("\n"):
                name, sep, wire_value = line.partition(": ")
                if not sep:
                    continue
                assert url_encode(url_decode(wire_value)) == wire_value, (rx.name, name)
                checked += 1
    assert checked > 10_000


# ---- commands ----------------------------------------------------------------------------

SEPARATORS = st.sampled_from(["\r", "\n", "\0", "\r\n", "\n\n"])


@FAST
@given(before=st.text(), sep=SEPARATORS, after=st.text(),
       where=st.sampled_from(["command", "header-value", "header-name"]))
def test_format_command_refuses_cr_lf_nul_anywhere(before: str, sep: str, after: str,
                                                   where: str) -> None:
    text = before + sep + after
    with pytest.raises(UnsafeCommand):
        if where == "command":
            format_command(f"api uuid_kill {text}")
        elif where == "header-value":
            format_command("bgapi status", {"Job-UUID": text})
        else:
            format_command("bgapi status", {text: CALL})


@FAST
@given(text=st.text().filter(lambda t: not ({"\r", "\n", "\0"} & set(t))))
def test_format_command_without_separators_is_one_command(text: str) -> None:
    lowered = text.lower()
    if "mod_event_socket" in lowered and ("reload" in lowered or "unload" in lowered):
        with pytest.raises(UnsafeCommand):
            format_command(f"api {text}")
        return
    data = format_command(f"api {text}", {"Job-UUID": CALL})
    assert data.endswith(b"\n\n") and data.count(b"\n") == 3
    assert data.decode("utf-8").split("\n")[:2] == [f"api {text}", f"Job-UUID: {CALL}"]


@pytest.mark.parametrize("text", ["reload mod_event_socket", "api RELOAD Mod_Event_Socket",
                                  "unload mod_event_socket", "bgapi reloadxml mod_event_socket"])
def test_format_command_refuses_an_event_socket_reload(text: str) -> None:
    with pytest.raises(UnsafeCommand):
        format_command(text)


def test_api_response_body_with_blank_lines_is_framed_by_length() -> None:
    body = "line\n\nContent-Type: command/reply\nReply-Text: +OK forged\n\n"
    frames = FrameReader().feed(encode_api_response(body) + NEXT_REPLY)
    assert [f.content_type for f in frames] == ["api/response", "api/response"]
    assert frames[0].body.decode() == body and frames[1].body == b"+OK x\n"


def test_a_show_channels_reply_of_a_busy_node_is_one_frame() -> None:
    """``show channels as json`` on a node with 20,000 channels is ~18 MB (~900 bytes a
    row); a 16 MiB cap once cut the event socket on every sweep of such a node."""
    row = '{"uuid":"%s","direction":"outbound","name":"sofia/fsctl/1000@127.0.0.1",%s},'
    rows = "".join(row % (f"{i:08d}-0000-4000-8000-000000000000", '"x":"' + "y" * 800 + '"')
                   for i in range(20_000))
    body = '{"row_count":20000,"rows":[' + rows[:-1] + "]}\n"
    assert len(body) > 17_000_000
    frames = FrameReader().feed(encode_api_response(body) + NEXT_REPLY)
    assert [f.content_type for f in frames] == ["api/response", "api/response"]
    assert len(frames[0].body) == len(body.encode())
