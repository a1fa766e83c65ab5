"""fsctl.esl against real sockets on 127.0.0.1: a scripted ESL server replays the
byte-exact FreeSWITCH recordings in tests/fixtures/freeswitch."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import unquote

import gevent
import pytest
from gevent.server import StreamServer
from support import fixtures_dir

from fsctl import wire
from fsctl.errors import (
    AuthFailed,
    ESLDisconnected,
    ESLError,
    ESLTimeout,
    InvalidValue,
    UnsafeCommand,
)
from fsctl.esl import ESLClient

FIXTURES = fixtures_dir()

SCENARIOS = sorted(p.stem for p in FIXTURES.glob("*.rx") if p.stem != "bad_auth")
GREETING = b"Content-Type: auth/request\n\n"
AUTH_OK = b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
BYE = b"Content-Type: command/reply\nReply-Text: +OK bye\n\n"
NOTICE = (b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n"
          b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n")


def split_frames(data: bytes) -> list[bytes]:
    """Cut raw recorded bytes into frames (independent of fsctl.wire)."""
    frames, pos = [], 0
    while pos < len(data):
        end = data.index(b"\n\n", pos) + 2
        m = re.search(rb"^Content-Length: (\d+)$", data[pos:end], re.MULTILINE)
        if m:
            end += int(m.group(1))
        frames.append(data[pos:end])
        pos = end
    return frames


def raw_event(frame: bytes) -> tuple[dict[str, str], bytes]:
    """Headers (decoded, split first) and body of a recorded text/event-plain frame."""
    body = frame.split(b"\n\n", 1)[1]
    head, _, rest = body.partition(b"\n\n")
    headers = {}
    for line in head.decode().split("\n"):
        name, _, value = line.partition(": ")
        headers[name] = unquote(value)
    inner = rest[: int(headers["Content-Length"])] if "Content-Length" in headers else b""
    return headers, inner


def api_frame(body: str) -> bytes:
    data = body.encode()
    return b"Content-Type: api/response\nContent-Length: %d\n\n%s" % (len(data), data)


def event_frame(inner: bytes) -> bytes:
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(inner), inner)


class Peer:
    """The server side of one accepted connection."""

    def __init__(self, sock) -> None:
        self.sock = sock
        self.rx = bytearray()
        self._buf = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_command(self, timeout: float = 3.0) -> str | None:
        with gevent.Timeout(timeout):
            while b"\n\n" not in self._buf:
                data = self.sock.recv(65536)
                if not data:
                    return None
                self.rx += data
                self._buf += data
        end = self._buf.index(b"\n\n")
        cmd = bytes(self._buf[:end]).decode()
        del self._buf[: end + 2]
        return cmd

    def auth(self, expect: str = "auth ClueCon") -> None:
        self.send(GREETING)
        assert self.read_command() == expect
        self.send(AUTH_OK)

    def serve(self, answer: Callable[[str], bytes] | None = None, timeout: float = 10.0) -> None:
        """Answer commands until `exit` or EOF; default answer is an api/response echo."""
        while (cmd := self.read_command(timeout)) is not None:
            if cmd == "exit":
                self.send(BYE + NOTICE)
                return
            self.send(answer(cmd) if answer else api_frame(f"reply to {cmd}"))


class Server:
    def __init__(self, script: Callable[[Peer], None]) -> None:
        self.script = script
        self.peers: list[Peer] = []
        self.errors: list[BaseException] = []
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.port = self.server.server_port

    def _handle(self, sock, _addr) -> None:
        peer = Peer(sock)
        self.peers.append(peer)
        try:
            self.script(peer)
        except (AssertionError, OSError, gevent.Timeout) as exc:
            self.errors.append(exc)
        finally:
            sock.close()

    def commands_after_auth(self) -> bytes:
        return bytes(self.peers[0].rx).split(b"\n\n", 1)[1]


@pytest.fixture
def make():
    """make(script, **client_kwargs) -> (server, client); everything closed afterwards."""
    servers, clients = [], []

    def _make(script, connect=True, **kwargs):
        server = Server(script)
        kwargs.setdefault("password", "ClueCon")
        client = ESLClient("127.0.0.1", server.port, kwargs.pop("password"), **kwargs)
        servers.append(server)
        clients.append(client)
        if connect:
            client.connect()
        return server, client

    yield _make
    for client in clients:
        client.close()
    for server in servers:
        server.server.stop(timeout=0.1)
        assert not server.errors, server.errors


def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        gevent.sleep(0.005)


def greenlets_dead(client: ESLClient) -> bool:
    conn = client._conn
    return all(g is None or g.dead for g in (conn._receive_events_greenlet,
                                             conn._process_events_greenlet))


# ---- connect / auth ------------------------------------------------------------------


def test_auth_ok_and_close_sends_exit(make):
    server, client = make(lambda p: (p.auth(), p.serve()))
    down = []
    client.on_disconnect(down.append)
    assert client.connected
    client.close()
    client.close()  # idempotent
    assert not client.connected
    assert server.commands_after_auth() == b"exit\n\n"
    wait_for(lambda: greenlets_dead(client))
    assert down == ["closed by client"]
    assert client._conn.sock.fileno() == -1
    with pytest.raises(ESLError):
        client.connect()  # single use


def test_userauth(make):
    _, client = make(lambda p: (p.auth("userauth fsctl@default:s3cret"), p.serve()),
                     user="fsctl@default", password="s3cret")
    assert client.connected


def test_bad_auth_from_recording(make):
    frames = split_frames((FIXTURES / "bad_auth.rx").read_bytes())
    record = json.loads((FIXTURES / "bad_auth.tx.jsonl").read_text().splitlines()[0])

    def script(peer):
        peer.send(frames[0])
        assert peer.read_command() == record["cmd"]
        peer.send(b"".join(frames[1:]))

    _, client = make(script, connect=False, password="WrongPassword")
    down = []
    client.on_disconnect(down.append)
    with pytest.raises(AuthFailed, match="-ERR invalid"):
        client.connect()
    assert not client.connected
    wait_for(lambda: greenlets_dead(client))
    assert down == []  # never established: connect() raised instead


def test_rude_rejection(make):
    def script(peer):
        body = b"Access Denied, go away.\n"
        peer.send(b"Content-Type: text/rude-rejection\nContent-Length: %d\n\n%s" % (len(body), body))
        peer.send(NOTICE)

    _, client = make(script, connect=False)
    with pytest.raises(ESLDisconnected, match="Access Denied"):
        client.connect()
    wait_for(lambda: greenlets_dead(client))


def test_connect_timeout_without_greeting(make):
    _, client = make(lambda p: p.read_command(), connect=False, connect_timeout_s=0.2)
    t0 = time.monotonic()
    with pytest.raises(ESLTimeout):
        client.connect()
    assert time.monotonic() - t0 < 0.6
    wait_for(lambda: greenlets_dead(client))


def test_connect_interrupted_by_caller_timeout_cleans_up(make):
    _, client = make(lambda p: p.read_command(), connect=False)
    with pytest.raises(gevent.Timeout), gevent.Timeout(0.1):
        client.connect()
    wait_for(lambda: greenlets_dead(client))
    assert client.disconnect_reason == "connect interrupted"


def test_connect_refused():
    server = StreamServer(("127.0.0.1", 0), lambda s, a: None)
    server.start()
    port = server.server_port
    server.stop()
    with pytest.raises(ESLDisconnected):
        ESLClient("127.0.0.1", port, "x", connect_timeout_s=1).connect()


# ---- commands ------------------------------------------------------------------------


def recorded_commands() -> list[dict]:
    out = []
    for path in sorted(FIXTURES.glob("*.tx.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec["conn"] == "cmd" and rec["cmd"].startswith(("api ", "bgapi ")):
                out.append(rec)
    return out


def test_api_and_bgapi_replies_from_recordings(make):
    records = recorded_commands()
    assert len(records) > 40

    def script(peer):
        peer.auth()
        for rec in records:
            assert peer.read_command() == rec["cmd"]  # byte-exact command
            peer.send(rec["reply"].encode())
        peer.serve()

    _, client = make(script)
    for rec in records:
        reply = rec["reply"]
        if rec["cmd"].startswith("api "):
            assert client.api(rec["cmd"][4:]) == reply.split("\n\n", 1)[1]
        else:
            first, job_line = rec["cmd"].split("\n")
            job_uuid = job_line.removeprefix("Job-UUID: ")
            text = re.search(r"^Reply-Text: (.*)$", reply, re.MULTILINE).group(1)
            assert client.bgapi(first[6:], job_uuid) == text == f"+OK Job-UUID: {job_uuid}"


def test_unsafe_commands_write_nothing(make):
    server, client = make(lambda p: (p.auth(), p.serve()))
    for call in (lambda: client.api("status\r\nx"),
                 lambda: client.api("uuid_kill x\n\nevent plain ALL"),
                 lambda: client.command("api status\0"),
                 lambda: client.command("bgapi status", {"Job-UUID": "a\nb"}),
                 lambda: client.api("reload mod_event_socket"),
                 lambda: client.add_filter("Event-Name", "X\nY")):
        with pytest.raises(UnsafeCommand):
            call()
    with pytest.raises(InvalidValue):
        client.bgapi("status", "abc\ndef")
    with pytest.raises(InvalidValue):
        client.subscribe(["CHANNEL_ANSWER", "ALL\nX"])
    assert client.api("status") == "reply to api status"
    assert server.commands_after_auth() == b"api status\n\n"


def test_bgapi_err_and_subscribe_filter_replies(make):
    def answer(cmd):
        if cmd.startswith("bgapi "):
            return b"Content-Type: command/reply\nReply-Text: -ERR permission denied\n\n"
        if cmd.startswith("event "):
            return b"Content-Type: command/reply\nReply-Text: +OK event listener enabled plain\n\n"
        return b"Content-Type: command/reply\nReply-Text: -ERR invalid filter\n\n"

    server, client = make(lambda p: (p.auth(), p.serve(answer)))
    with pytest.raises(ESLError, match="permission denied"):
        client.bgapi("status", "0f8e1c2a-0000-4000-8000-000000000001")
    client.subscribe(["CHANNEL_ANSWER", "BACKGROUND_JOB"])
    with pytest.raises(ESLError, match="invalid filter"):
        client.add_filter("variable_fsctl_callback_id", "cb1")
    assert server.commands_after_auth() == (
        b"bgapi status\nJob-UUID: 0f8e1c2a-0000-4000-8000-000000000001\n\n"
        b"event plain CHANNEL_ANSWER BACKGROUND_JOB\n\n"
        b"filter variable_fsctl_callback_id cb1\n\n")


def test_bgapi_reply_for_another_job_ends_connection(make):
    wrong = b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: other\nJob-UUID: other\n\n"
    _, client = make(lambda p: (p.auth(), p.serve(lambda cmd: wrong)))
    with pytest.raises(ESLDisconnected, match="out of order"):
        client.bgapi("status", "mine")
    assert not client.connected


def test_timed_out_command_keeps_its_fifo_slot(make):
    delays = {"api slow1": 0.25, "api slow2": 0.25}

    def answer(cmd):
        gevent.sleep(delays.get(cmd, 0))  # one command at a time, in order, like FreeSWITCH
        return api_frame(f"reply to {cmd}")

    _, client = make(lambda p: (p.auth(), p.serve(answer)))
    with pytest.raises(ESLTimeout):
        client.api("slow1", timeout_s=0.05)
    gevent.sleep(0.35)  # the late reply arrives while nothing else waits: dropped
    assert client.api("a") == "reply to api a"
    with pytest.raises(ESLTimeout):
        client.api("slow2", timeout_s=0.05)
    # sent while slow2's reply is still due: the late reply goes to slow2's slot
    assert client.api("b") == "reply to api b"
    assert client.api("c") == "reply to api c"
    assert client.connected


def test_ping(make):
    delays = {"api status": 0.0}

    def answer(cmd):
        gevent.sleep(delays[cmd])
        return api_frame("UP 0 years ... is ready\n")

    _, client = make(lambda p: (p.auth(), p.serve(answer)))
    assert client.ping(0.5) is True
    delays["api status"] = 0.3
    assert client.ping(0.05) is False
    assert client.connected


# ---- disconnects ---------------------------------------------------------------------


def test_server_close_fails_waiting_command_fast(make):
    _, client = make(lambda p: (p.auth(), p.read_command()))  # reads the command, closes
    down = []
    client.on_disconnect(down.append)
    t0 = time.monotonic()
    with pytest.raises(ESLDisconnected):
        client.api("status", timeout_s=5)
    assert time.monotonic() - t0 < 1.0
    wait_for(lambda: greenlets_dead(client))
    gevent.sleep(0.05)
    assert down == ["closed by FreeSWITCH"]
    assert not client.connected
    assert client.ping(1.0) is False
    with pytest.raises(ESLDisconnected):
        client.api("status")


def test_eof_in_the_middle_of_a_body(make):
    def script(peer):
        peer.auth()
        assert peer.read_command() == "api status"
        peer.send(b"Content-Length: 1000\nContent-Type: text/event-plain\n\nEvent-Name: HEA")

    _, client = make(script)
    down = []
    client.on_disconnect(down.append)
    cpu0 = time.process_time()
    with pytest.raises(ESLDisconnected, match="middle of a frame"):
        client.api("status")
    wait_for(lambda: greenlets_dead(client), timeout=1.0)
    gevent.sleep(0.2)
    assert time.process_time() - cpu0 < 0.15  # no spin
    assert down == ["closed by FreeSWITCH in the middle of a frame"]
    assert client._conn._receive_events_greenlet.dead


def test_protocol_error_ends_connection(make, caplog):
    def script(peer):
        peer.auth()
        assert peer.read_command() == "api status"
        peer.send(b"Content-Type: api/response\nContent-Length: many\n\n")
        peer.serve()

    _, client = make(script)
    down = []
    client.on_disconnect(down.append)
    with caplog.at_level(logging.ERROR, logger="fsctl.esl"):
        with pytest.raises(ESLDisconnected, match="protocol error"):
            client.api("status")
        wait_for(lambda: greenlets_dead(client))
    assert down and down[0].startswith("protocol error")
    assert "not ESL" in caplog.text


def test_disconnect_notice_while_waiting(make):
    _, client = make(lambda p: (p.auth(), p.read_command(), p.send(NOTICE), gevent.sleep(1)))
    with pytest.raises(ESLDisconnected, match="goodbye"):
        client.api("status")
    wait_for(lambda: greenlets_dead(client))


# ---- events --------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_events_from_recording(make, name):
    frames = split_frames((FIXTURES / f"{name}.rx").read_bytes())
    assert frames[0] == GREETING and frames[-2] == BYE and frames[-1].startswith(
        b"Content-Type: text/disconnect-notice")
    recorded = [raw_event(f) for f in frames[3:-2]]
    assert all(b"Content-Type: text/event-plain" in f for f in frames[3:-2])

    def script(peer):
        peer.send(frames[0])
        assert peer.read_command() == "auth ClueCon"
        peer.send(frames[1])
        assert peer.read_command() == "event plain ALL"
        peer.send(b"".join(frames[2:-2]))
        assert peer.read_command() == "exit"
        peer.send(b"".join(frames[-2:]))

    _, client = make(script, connect=False)
    events: list[wire.Event] = []
    client.on_event(events.append)
    client.connect()
    client.subscribe(["ALL"])
    wait_for(lambda: len(events) == len(recorded))
    client.close()

    for event, (headers, body) in zip(events, recorded, strict=True):
        assert event.headers == headers
        assert event.body == body.decode()
    jobs = [e for e in events if e.name == "BACKGROUND_JOB"]
    assert jobs
    for job in jobs:
        assert re.fullmatch(r"(\+OK [0-9a-f-]{36}|-ERR [A-Z_]+)\n", job.body), job.body
        assert job.headers["Content-Length"] == str(len(job.body.encode()))
        assert job.headers["Job-Command"] == "originate"
    expected_bodies = {"a_busy": "-ERR USER_BUSY\n", "a_no_answer": "-ERR NO_ANSWER\n",
                       "b_fails_after_a": "-ERR CALL_REJECTED\n",
                       "seq_a_first_ok": "-ERR ORIGINATOR_CANCEL\n"}
    if name in expected_bodies:
        assert expected_bodies[name] in [j.body for j in jobs]


def test_encoded_newline_cannot_forge_headers(make):
    inner = (b"Event-Name: CUSTOM\nUnique-ID: real-uuid\n"
             b"variable_x: a%0AUnique-ID%3A%20forged%0AForged-Header%3A%201%0A%0Ab\n"
             b"Caller-Caller-ID-Name: Bob%0D%0AEvent-Name: EVIL\n"
             b"Content-Length: 5\n\nhello")
    _, client = make(lambda p: (p.auth(), p.send(event_frame(inner)), p.serve()))
    events: list[wire.Event] = []
    client.on_event(events.append)
    wait_for(lambda: events)
    (event,) = events
    assert event.headers == {
        "Event-Name": "CUSTOM", "Unique-ID": "real-uuid",
        "variable_x": "a\nUnique-ID: forged\nForged-Header: 1\n\nb",
        "Caller-Caller-ID-Name": "Bob\r\nEvent-Name: EVIL",
        "Content-Length": "5"}
    assert event.body == "hello"


def test_json_events(make):
    obj = {"Event-Name": "BACKGROUND_JOB", "Job-UUID": "j1", "Content-Length": "15",
           "_body": "-ERR NO_ANSWER\n"}
    data = json.dumps(obj).encode()
    frame = b"Content-Length: %d\nContent-Type: text/event-json\n\n%s" % (len(data), data)
    reply = b"Content-Type: command/reply\nReply-Text: +OK event listener enabled json\n\n"
    _, client = make(lambda p: (p.auth(), p.read_command(), p.send(reply + frame), p.serve()))
    events: list[wire.Event] = []
    client.on_event(events.append)
    client.subscribe(["BACKGROUND_JOB"], fmt="json")
    wait_for(lambda: events)
    assert events[0].name == "BACKGROUND_JOB" and events[0].body == "-ERR NO_ANSWER\n"
    assert client.connected


def test_handler_exception_is_logged_and_dispatch_goes_on(make, caplog):
    frames = b"".join(event_frame(b"Event-Name: E%d\nUnique-ID: u%d\n\n" % (i, i))
                      for i in range(3))
    _, client = make(lambda p: (p.auth(), p.send(frames), p.serve()))
    seen = []

    def handler(event):
        seen.append(event.name)
        if event.name == "E1":
            raise ValueError("boom")

    client.on_event(handler)
    with caplog.at_level(logging.ERROR, logger="fsctl.esl"):
        wait_for(lambda: len(seen) == 3)
    assert seen == ["E0", "E1", "E2"]
    assert "E1" in caplog.text and "u1" in caplog.text and "boom" in caplog.text
    assert client.connected


@pytest.mark.parametrize("blocking", [False, True], ids=["yielding", "cpu-bound"])
def test_slow_handler_does_not_delay_replies(make, blocking):
    inner = b"Event-Name: HEARTBEAT\nUnique-ID: x\n\n"
    _, client = make(lambda p: (p.auth(), p.send(event_frame(inner) * 300), p.serve()),
                     connect=False)
    seen, slow = [], [True]

    def handler(event):
        seen.append(event)
        if slow[0]:  # 300 events: 6 s if the reader waited for the handler
            if not blocking:
                gevent.sleep(0.02)
            end = time.perf_counter() + 0.02
            while blocking and time.perf_counter() < end:
                pass  # CPU-bound: never yields

    client.on_event(handler)
    client.connect()
    wait_for(lambda: seen)
    t0 = time.monotonic()
    for i in range(3):
        assert client.api(f"x{i}") == f"reply to api x{i}"
    assert time.monotonic() - t0 < 0.5
    assert len(seen) < 100
    slow[0] = False
    wait_for(lambda: len(seen) == 300)


FLOOD_SERVER = """
import socket, sys
flood = sys.stdin.buffer.read()
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
conn.sendall(b"Content-Type: auth/request\\n\\n")
conn.recv(1024)
conn.sendall(b"Content-Type: command/reply\\nReply-Text: +OK accepted\\n\\n")
conn.recv(1024)
conn.sendall(b"Content-Type: api/response\\nContent-Length: 3\\n\\nUP\\n" + flood)
conn.recv(1024)
"""


def test_event_flood_does_not_starve_command_replies():
    """A peer in another process keeps the socket full (like FreeSWITCH): recv() never
    blocks, so the reader must yield by itself for the reply to reach its waiter."""
    frames = [f for name in SCENARIOS for f in split_frames((FIXTURES / f"{name}.rx").read_bytes())
              if b"Content-Type: text/event-plain" in f]
    total = len(frames) * 6
    server = subprocess.Popen([sys.executable, "-c", FLOOD_SERVER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    seen = []
    try:
        server.stdin.write(b"".join(frames) * 6)
        server.stdin.close()
        client = ESLClient("127.0.0.1", int(server.stdout.readline()), "ClueCon")
        client.on_event(seen.append)
        client.connect()
        t0 = time.monotonic()
        assert client.api("status") == "UP\n"
        latency, dispatched = time.monotonic() - t0, len(seen)
        wait_for(lambda: len(seen) == total, timeout=10)
        client.close()
    finally:
        server.kill()
        server.wait()
    assert latency < 0.1 and dispatched < total / 2, (latency, dispatched, total)


def test_write_timeout_ends_connection(make):
    _, client = make(lambda p: (p.auth(), gevent.sleep(2)))  # never reads again
    with pytest.raises(ESLTimeout):
        client.api("x" * 64_000_000, timeout_s=0.2)
    assert not client.connected  # part of a command may be on the wire: unusable
    assert client.disconnect_reason == "write timed out"
