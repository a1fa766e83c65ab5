"""The SIP far ends of the tests: one ``sipp`` UAS running ``tests/sip/switchboard.xml``.

The switchboard picks a behaviour per call from the user part of the INVITE's Request-URI
(:data:`BEHAVIOURS`, the same plan as ``tests/sip/README.md``), so one sipp serves every SIP
leg of a test: ``sofia/fsctl/<number>@127.0.0.1:<Sipp.port>``.

:class:`Sipp` runs it on a free UDP port of 127.0.0.1 (and a distinct RTP port pair and
control port), in its own session, with every trace file in a directory of the caller's; all
waits are bounded. Debian's sipp 3.6 is enough.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from procs import kill_group, terminate_group

from fsctl.embedded import free_port

SCENARIO = Path(__file__).resolve().parent / "sip" / "switchboard.xml"
START_TIMEOUT_S = 10.0
"""Longest wait for sipp to bind its SIP port."""
STOP_TIMEOUT_S = 5.0
"""Longest wait for sipp to exit after SIGTERM before it is killed."""


@dataclass(frozen=True)
class Behaviour:
    """What the switchboard does with an INVITE to a number of this plan entry."""

    prefix: str
    """Request-URI user part this entry matches (a prefix; 7-digit numbers are exact)."""
    example: str
    """A number that selects it (the trailing digits only make numbers unique)."""
    provisional: int
    """180, or 183 with SDP (early media)."""
    ring_s: float | None
    """Seconds from the INVITE to the final response; None = never (only a CANCEL ends it)."""
    final: int | None
    """Final response to the INVITE: 200, 486, 480, 404, 503; None = none (rings until CANCEL)."""
    talk_s: float | None
    """After the ACK of a 200: seconds until the far end sends its own BYE; None = never
    (it waits up to an hour for FreeSWITCH's BYE)."""
    text: str


BEHAVIOURS: dict[str, Behaviour] = {b.prefix: b for b in (
    Behaviour("", "1000123", 180, 0.3, 200, 2.0, "DEFAULT: answers after 0.3 s, BYE 2 s after the ACK"),
    Behaviour("10004", "1000444", 180, 0.3, 200, 8.0, "long talk: answers after 0.3 s, BYE after 8 s"),
    Behaviour("100077", "1000777", 180, 8.0, 200, 2.0, "slow answer: answers after 8 s, BYE after 2 s"),
    Behaviour("1000666", "1000666", 180, 1.0, 486, None, "busy: 486 Busy Here after 1 s of ringing"),
    Behaviour("1000555", "1000555", 180, None, None, None, "rings until CANCEL"),
    Behaviour("10500", "1050000", 180, 0.3, 200, None, "answers after 0.3 s, waits for BYE"),
    Behaviour("10501", "1050100", 180, 3.0, 200, None, "answers after 3 s, waits for BYE"),
    Behaviour("10502", "1050200", 180, 0.3, 200, 3.0, "answers after 0.3 s, BYE after 3 s"),
    Behaviour("10503", "1050300", 180, 0.2, 486, None, "486 Busy Here after 0.2 s"),
    Behaviour("10504", "1050400", 180, 0.2, 480, None, "480 Temporarily Unavailable after 0.2 s"),
    Behaviour("10505", "1050500", 180, 0.2, 404, None, "404 Not Found after 0.2 s"),
    Behaviour("10506", "1050600", 180, 0.2, 503, None, "503 Service Unavailable after 0.2 s"),
    Behaviour("10507", "1050700", 180, None, None, None, "rings until CANCEL"),
    Behaviour("10508", "1050800", 183, 2.0, 200, None,
              "183 with SDP (early media), 200 OK after 2 s, waits for BYE"),
    Behaviour("10509", "1050900", 180, 0.3, 200, 1.0, "answers after 0.3 s, BYE after 1 s"),
    Behaviour("10510", "1051000", 180, 1.0, 200, None, "answers after 1 s, waits for BYE"),
)}
"""The number plan, keyed by prefix (``""`` = DEFAULT, for every number no other entry matches)."""


def behaviour_for(number: str) -> Behaviour:
    """The plan entry the switchboard applies to ``number`` (longest matching prefix)."""
    best = BEHAVIOURS[""]
    for prefix, b in BEHAVIOURS.items():
        exact = len(prefix) == 7
        if prefix and (number == prefix if exact else number.startswith(prefix)) \
                and len(prefix) > len(best.prefix):
            best = b
    return best


def _udp_bound(port: int) -> bool:
    """True when some socket is bound to UDP 127.0.0.1:port (read from /proc, no probing)."""
    needle = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1] == needle for line in lines if len(line.split()) > 1)


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_udp_port(pair: bool = False) -> int:
    """A port from fsctl.embedded.free_port() that is free for UDP too (and port+2 if pair)."""
    for _ in range(200):
        port = free_port()
        if port + 2 > 65535:
            continue
        if _udp_free(port) and (not pair or (_udp_free(port + 2) and _udp_free(port + 1))):
            return port
    raise RuntimeError("no free UDP port found on 127.0.0.1")


def binary() -> str:
    found = os.environ.get("FSCTL_SIPP") or shutil.which("sipp")
    if not found:
        raise RuntimeError("no `sipp` on PATH (Debian: apt-get install sip-tester)")
    return found


class Sipp:
    """One sipp UAS on 127.0.0.1 running the switchboard (or another scenario)."""

    def __init__(self, log_dir: Path, *, scenario: Path = SCENARIO, name: str = "sipp",
                 trace_messages: bool = True, extra_args: tuple[str, ...] = ()) -> None:
        self.log_dir = Path(log_dir)
        self.scenario = scenario
        self.name = name
        self.trace_messages = trace_messages
        self.extra_args = extra_args
        self.port = 0
        self.media_port = 0
        self.control_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    # -- files ---------------------------------------------------------------------------

    def path(self, what: str) -> Path:
        """``messages``, ``shortmessages``, ``errors``, ``calldebug``, ``logs``, ``screen``,
        ``stderr``: the trace files of this instance."""
        return self.log_dir / f"{self.name}_{what}.log"

    def read(self, what: str) -> str:
        try:
            return self.path(what).read_text(errors="replace")
        except OSError:
            return ""

    # -- process -------------------------------------------------------------------------

    def argv(self) -> list[str]:
        return [
            binary(), "-sf", str(self.scenario),
            "-t", "u1", "-i", "127.0.0.1", "-p", str(self.port), "-bind_local",
            "-mi", "127.0.0.1", "-mp", str(self.media_port),
            "-ci", "127.0.0.1", "-cp", str(self.control_port),
            "-nostdin",
            # an unexpected message is logged (errors file) and never aborts the call;
            # BYE/CANCEL outside the scenario's waits still get their 200 OK, pings a reply
            "-default_behaviors", "all,-abortunexp",
            "-aa",  # INFO, NOTIFY, OPTIONS and UPDATE answered 200 OK
            "-deadcall_wait", "60000",
            "-max_log_size", str(50 * 1024 * 1024),
            # a slow, shared test machine must not make sipp quit on its own
            "-watchdog_minor_maxtriggers", "1000000", "-watchdog_major_maxtriggers", "1000000",
            "-trace_err", "-error_file", str(self.path("errors")),
            "-trace_calldebug", "-calldebug_file", str(self.path("calldebug")),
            "-trace_logs", "-log_file", str(self.path("logs")),
            "-trace_screen", "-screen_file", str(self.path("screen")),
            *(("-trace_msg", "-message_file", str(self.path("messages")),
                "-trace_shortmsg", "-shortmessage_file", str(self.path("shortmessages")))
              if self.trace_messages else ()),
            *self.extra_args,
        ]

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Sipp:
        if self.alive:
            raise RuntimeError("sipp is running already")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            self.port = _free_udp_port()
            self.media_port = _free_udp_port(pair=True)
            self.control_port = _free_udp_port()
            with open(self.path("stderr"), "ab") as err:
                self.proc = subprocess.Popen(
                    self.argv(), cwd=self.log_dir, stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and self.alive and not _udp_bound(self.port):
                time.sleep(0.02)
            if self.alive and _udp_bound(self.port):
                return self
            self.kill9()
            if attempt == 2 or self.proc.returncode != 254:  # -2: a port was taken meanwhile
                break
        raise RuntimeError(f"sipp did not start (exit {self.proc.returncode if self.proc else '?'}"
                           f"): {self.read('stderr')[-2000:]}")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM to its process group, SIGKILL after ``timeout_s``."""
        terminate_group(self.proc, timeout_s)

    def kill9(self) -> None:
        kill_group(self.proc)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- for tests -----------------------------------------------------------------------

    def dial_string(self, number: str, profile: str = "fsctl") -> str:
        """The sofia dial string that reaches this switchboard as ``number``."""
        return f"sofia/{profile}/{number}@127.0.0.1:{self.port}"

    def short_messages(self) -> list[SipMessage]:
        """Every SIP message sipp sent or received so far, in order (its short trace)."""
        out = []
        for line in self.read("shortmessages").splitlines():
            parts = line.split("\t")
            if len(parts) >= 7:
                out.append(SipMessage(float(parts[2]), parts[3], parts[4],
                                      parts[5].removeprefix("CSeq:"), "\t".join(parts[6:])))
        return out

    def calls(self) -> dict[str, list[SipMessage]]:
        """The short trace grouped by Call-ID (FreeSWITCH's ``variable_sip_call_id``)."""
        out: dict[str, list[SipMessage]] = {}
        for m in self.short_messages():
            out.setdefault(m.call_id, []).append(m)
        return out


@dataclass(frozen=True)
class SipMessage:
    """One line of sipp's short message trace."""

    t: float
    """Unix time."""
    direction: str
    """``R`` received, ``S`` sent."""
    call_id: str
    cseq: str
    """e.g. ``123502904 INVITE``."""
    first_line: str
    """Request line or status line, e.g. ``SIP/2.0 487 Request Terminated``."""

    @property
    def label(self) -> str:
        """``>INVITE`` / ``<180`` style: ``>`` received by sipp, ``<`` sent by it; requests by
        method, responses by code and the method they answer (``<200/CANCEL``)."""
        arrow = ">" if self.direction == "R" else "<"
        if self.first_line.startswith("SIP/2.0 "):
            code = self.first_line.split()[1]
            method = self.cseq.split()[-1]
            return f"{arrow}{code}" if method == "INVITE" else f"{arrow}{code}/{method}"
        return f"{arrow}{self.first_line.split()[0]}"
