"""Events/s parsed and dispatched by fsctl.esl.ESLClient (not a pytest test).

A server in a child process (plain blocking sockets, so it does not share the
client's CPU) authenticates the client, then replays every event frame of the
FreeSWITCH recordings in a loop over a real 127.0.0.1 socket. The client counts
events in an on_event handler; the figure is events / wall time, plus the client's CPU time.
Timing starts when the subscription is sent (the server sends its events right
after its reply) and ends when the handler has seen the last event.

    .venv/bin/python tests/bench/esl_parse.py [--events 200000] [--json | --greenswitch]

``--json`` replays the same events as ``text/event-json`` (``subscribe(fmt="json")``);
``--greenswitch`` runs the plain stream through bare greenswitch 0.0.19 for comparison.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "freeswitch"  # as support.FIXTURES
AUTH_OK = b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
EVENTS_OK = b"Content-Type: command/reply\nReply-Text: +OK event listener enabled plain\n\n"


def event_frames(as_json: bool = False) -> list[bytes]:
    frames = []
    for path in sorted(FIXTURES.glob("*.rx")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            end = data.index(b"\n\n", pos) + 2
            m = re.search(rb"^Content-Length: (\d+)$", data[pos:end], re.MULTILINE)
            end += int(m.group(1)) if m else 0
            if b"Content-Type: text/event-plain" in data[pos:end]:
                frames.append(data[pos:end])
            pos = end
    if not frames:
        raise SystemExit(f"no recordings in {FIXTURES}")
    if as_json:
        from fsctl import wire

        events = [wire.parse_event_plain(f.split(b"\n\n", 1)[1]) for f in frames]
        frames = [wire.encode_event_json(list(e.headers.items()), e.body or None) for e in events]
    return frames


def read_command(conn: socket.socket, buf: bytearray) -> bytes:
    while b"\n\n" not in buf:
        data = conn.recv(65536)
        if not data:
            raise SystemExit("client went away")
        buf += data
    end = buf.index(b"\n\n")
    cmd = bytes(buf[:end])
    del buf[: end + 2]
    return cmd


def serve(total: int, as_json: bool) -> None:
    frames = event_frames(as_json)
    blob = b"".join(frames)
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    conn, _ = listener.accept()
    buf = bytearray()
    conn.sendall(b"Content-Type: auth/request\n\n")
    read_command(conn, buf)
    conn.sendall(AUTH_OK)
    read_command(conn, buf)
    conn.sendall(EVENTS_OK)
    sent = 0
    while sent + len(frames) <= total:
        conn.sendall(blob)
        sent += len(frames)
    conn.sendall(b"".join(frames[: total - sent]))
    try:
        read_command(conn, buf)  # exit
        conn.sendall(b"Content-Type: command/reply\nReply-Text: +OK bye\n\n")
    except (SystemExit, OSError):
        pass
    conn.close()


def run_client(port: int, total: int, mode: str) -> tuple[float, float]:
    import gevent

    count = 0
    last = 0.0

    def handler(_event) -> None:
        nonlocal count, last
        count += 1
        if count == total:
            last = time.perf_counter()

    if mode == "greenswitch":
        import greenswitch

        client = greenswitch.InboundESL("127.0.0.1", port, "ClueCon")
        client.register_handle("*", handler)
        client.connect()
        first, cpu0 = time.perf_counter(), time.process_time()
        client.send("event plain ALL")
    else:
        from fsctl.esl import ESLClient

        client = ESLClient("127.0.0.1", port, "ClueCon", command_timeout_s=30)
        client.on_event(handler)
        client.connect()
        first, cpu0 = time.perf_counter(), time.process_time()
        client.subscribe(["ALL"], fmt=mode)
    deadline = time.monotonic() + 120
    while count < total and time.monotonic() < deadline:
        gevent.sleep(0.01)
    cpu = time.process_time() - cpu0
    if count < total:
        raise SystemExit(f"only {count}/{total} events arrived")
    if mode == "greenswitch":
        client._run = False  # its stop() can wait forever (defect 3); just drop it
        client.sock.shutdown(socket.SHUT_RDWR)
        client.sock.close()
    else:
        client.close()
    return last - first, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--json", action="store_true", help="text/event-json events")
    parser.add_argument("--greenswitch", action="store_true", help="bare greenswitch instead")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    if args.serve:
        serve(args.events, args.json)
        return
    mode = "greenswitch" if args.greenswitch else "json" if args.json else "plain"
    cmd = [sys.executable, __file__, "--serve", "--events", str(args.events)]
    server = subprocess.Popen(cmd + (["--json"] if args.json else []),
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        wall, cpu = run_client(port, args.events, mode)
    finally:
        server.wait(timeout=10)
    n_frames = len(event_frames())
    who = "greenswitch 0.0.19" if args.greenswitch else "fsctl.esl.ESLClient"
    kind = "json" if args.json else "plain"
    print(f"{who}: {args.events} {kind} events ({n_frames} distinct recorded frames, "
          f"looped) in {wall:.3f} s wall -> {args.events / wall:,.0f} events/s "
          f"parsed+dispatched; client CPU {cpu:.3f} s -> {args.events / cpu:,.0f} events/s/core")


if __name__ == "__main__":
    main()
