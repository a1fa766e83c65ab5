"""What one wake-up for one incoming event costs on this machine, by how it is read.

    .venv/bin/python tests/bench/wakeup_cost.py [--messages 3000] [--size 5000] [--gap-ms 4]

A child process sends ``--messages`` messages of ``--size`` bytes (a SIP leg's event is
3–11 KB) over loopback TCP, one every ``--gap-ms`` (20 callbacks/s × 13 events is one every
4 ms), so the reader sleeps between messages as fsctl's worker does at that rate. The reader
measures its own CPU time (user + system) per message, for each way of reading:

- ``blocking``: a blocking ``recv`` loop (the floor);
- ``epoll``: a non-blocking socket and ``select.epoll`` (what a raw ESL script does);
- ``gevent``: a greenlet's ``recv`` under gevent's hub (what fsctl's ESL reader does);
- ``gevent+queue``: that, handing each message to a second greenlet through a
  ``gevent.queue.Queue`` (fsctl's reader → dispatcher hand-over).

It prints one line per way; nothing is asserted (a measurement, not a test).
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import subprocess
import sys
import time

WAYS = ("blocking", "epoll", "gevent", "gevent+queue")


def _send(port: int, messages: int, size: int, gap_s: float) -> None:
    conn = socket.create_connection(("127.0.0.1", port))
    msg = b"x" * size
    for _ in range(messages):
        conn.sendall(msg)
        time.sleep(gap_s)
    conn.close()


def _read(way: str, conn: socket.socket) -> int:
    """Read until EOF; how many reads returned data."""
    n = 0
    if way == "blocking":
        while conn.recv(65536):
            n += 1
        return n
    if way == "epoll":
        conn.setblocking(False)
        poller = select.epoll()
        poller.register(conn.fileno(), select.EPOLLIN)
        while True:
            poller.poll(5.0)
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                return n
            n += 1
    import gevent
    import gevent.queue
    import gevent.socket

    gconn = gevent.socket.socket(fileno=conn.detach())
    queue: gevent.queue.Queue[bytes | None] = gevent.queue.Queue()
    got = [0]

    def consumer() -> None:
        while queue.get() is not None:
            got[0] += 1

    def reader() -> None:
        while data := gconn.recv(65536):
            if way == "gevent+queue":
                queue.put(data)
            else:
                got[0] += 1
        queue.put(None)

    greenlets = [gevent.spawn(reader)]
    if way == "gevent+queue":
        greenlets.append(gevent.spawn(consumer))
    gevent.joinall(greenlets)
    return got[0]


def measure(way: str, messages: int, size: int, gap_s: float) -> float:
    """CPU µs of the reading process per message read."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    sender = subprocess.Popen([sys.executable, __file__, "--send", str(srv.getsockname()[1]),
                               "--messages", str(messages), "--size", str(size),
                               "--gap-ms", str(gap_s * 1000)])
    conn, _ = srv.accept()
    srv.close()
    if way.startswith("gevent"):
        import gevent
        import gevent.queue
        import gevent.socket

        gevent.get_hub()  # its creation is not counted
    cpu0 = time.process_time()
    n = _read(way, conn)
    cpu = time.process_time() - cpu0
    sender.wait()
    return cpu / max(1, n) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--size", type=int, default=5000)
    ap.add_argument("--gap-ms", type=float, default=4.0)
    ap.add_argument("--way", choices=WAYS, help="only this one (each runs in its own process)")
    ap.add_argument("--send", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.send:
        _send(args.send, args.messages, args.size, args.gap_ms / 1000)
        return 0
    if args.way:
        us = measure(args.way, args.messages, args.size, args.gap_ms / 1000)
        print(f"{args.way:>13}: {us:6.1f} µs of CPU per message")
        return 0
    for way in WAYS:  # a fresh process each: gevent's monkey-patching stays out of the others
        subprocess.run([sys.executable, __file__, "--way", way, "--messages", str(args.messages),
                        "--size", str(args.size), "--gap-ms", str(args.gap_ms)], check=True,
                       env={**os.environ})
    return 0


if __name__ == "__main__":
    sys.exit(main())
