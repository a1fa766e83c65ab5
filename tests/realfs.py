"""A real FreeSWITCH for the tests: started on the project's own ``freeswitch-conf/``.

Each :class:`FreeSwitch` copies ``freeswitch-conf/`` into a temporary directory, moves the
event socket and the SIP profile to free loopback ports (the copy only; the repository's
files keep 8021 / 5080), gives it two random passwords through the ``FSCTL_ESL_*``
variables it already reads, and runs ``freeswitch -nf`` in its own session, so one
``killpg`` is a crash. Every wait is bounded; :func:`stop_all` ends whatever is left.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from fscli import FsCliView
from procs import kill_group, terminate_group

from fsctl.embedded import free_port, wait_port
from fsctl.errors import ESLError
from fsctl.esl import ESLClient

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "freeswitch-conf"
MODULES = Path("/opt/freeswitch/lib/freeswitch/mod")
"""Where the FreeSWITCH 1.11 of the project's CI (``/opt/freeswitch``) keeps its modules
(FSCTL_FS_MODULES overrides)."""
START_TIMEOUT_S = 30.0
"""Longest wait for a started FreeSWITCH to answer ``status`` with ``is ready``."""
STOP_TIMEOUT_S = 15.0
"""Longest wait for FreeSWITCH to exit after SIGTERM before it is killed."""
ESL_USER = "fsctl@fsctl.local"
"""The restricted event-socket user of freeswitch-conf/ (what the worker logs in as)."""
STARTUP_WARNINGS_ALLOWED = (
    # sofia.c logs the start of its message thread at WARNING level, whatever the
    # configuration: FreeSWITCH's own choice, not a problem of freeswitch-conf/.
    re.compile(r"sofia\.c:\d+ MSG Thread \d+ Started"),
)
"""Start-up log lines at WARNING or above that are not about the configuration."""

_LEVEL_RE = re.compile(r"\[(WARNING|ERR|CRIT|ALERT|EMERG)\]")
_RUNNING: list[FreeSwitch] = []


def binary() -> str:
    """The ``freeswitch`` binary, or a clear error saying how to get one."""
    found = os.environ.get("FSCTL_FREESWITCH") or shutil.which("freeswitch")
    if not found:
        raise RuntimeError(
            "no `freeswitch` on PATH: `make test-freeswitch` needs a real FreeSWITCH 1.11 "
            "(the CI's shared/freeswitch/install.sh installs one into /opt/freeswitch; or set "
            "FSCTL_FREESWITCH to the binary)")
    return found


def modules_dir() -> Path:
    return Path(os.environ.get("FSCTL_FS_MODULES") or MODULES)


class FreeSwitch(FsCliView):
    """One FreeSWITCH process on a private copy of freeswitch-conf/."""

    def __init__(self, root: Path | None = None, *, sessions_per_second: int | None = None,
                 max_sessions: int | None = None, env: dict[str, str] | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="fsctl-fs-"))
        self.esl_port = free_port()
        self.sip_port = free_port()
        self.password = secrets.token_hex(20)
        """FSCTL_ESL_PASSWORD: the restricted user fsctl@fsctl.local."""
        self.admin_password = secrets.token_hex(20)
        """FSCTL_ESL_ADMIN_PASSWORD: plain ``auth``, unrestricted (the tests' fs_cli)."""
        self.sessions_per_second = sessions_per_second
        self.max_sessions = max_sessions
        self.env = {"FSCTL_ESL_PASSWORD": self.password,
                    "FSCTL_ESL_ADMIN_PASSWORD": self.admin_password} if env is None else env
        """The FSCTL_* variables FreeSWITCH gets (vars.xml reads the passwords from them)."""
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_offset = 0
        self._prepare()

    # -- files ---------------------------------------------------------------------------

    @property
    def conf(self) -> Path:
        return self.root / "conf"

    @property
    def log_file(self) -> Path:
        return self.root / "log" / "freeswitch.log"

    def _prepare(self) -> None:
        for sub in ("log", "db", "run", "cache", "storage", "recordings", "sounds"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "log", 0o700)  # the .fsxml there holds the expanded passwords
        shutil.rmtree(self.conf, ignore_errors=True)
        shutil.copytree(CONF, self.conf)
        self.set_param("autoload_configs/event_socket.conf.xml", "listen-port", self.esl_port)
        self.set_param("sip_profiles/fsctl.xml", "sip-port", self.sip_port)
        if self.sessions_per_second is not None:
            self.set_param("autoload_configs/switch.conf.xml", "sessions-per-second",
                           self.sessions_per_second)
        if self.max_sessions is not None:
            self.set_param("autoload_configs/switch.conf.xml", "max-sessions", self.max_sessions)

    def set_var(self, name: str, value: int | str) -> None:
        """Change one global ``<X-PRE-PROCESS cmd="set" data="name=…"/>`` of vars.xml."""
        self._patch("vars.xml", rf'(cmd="set" data="{re.escape(name)}=)[^"]*(")', value)

    def set_param(self, rel: str, name: str, value: int) -> None:
        """Change one ``<param name=… value=…/>`` of the private copy (before start)."""
        self._patch(rel, rf'(name="{re.escape(name)}" value=")[^"]*(")', value)

    def _patch(self, rel: str, pattern: str, value: int | str) -> None:
        path = self.conf / rel
        text, n = re.subn(pattern, rf"\g<1>{value}\g<2>", path.read_text(encoding="utf-8"))
        if n != 1:
            raise RuntimeError(f"{rel}: expected one match of {pattern!r}, found {n}")
        path.write_text(text, encoding="utf-8")

    # -- process -------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> FreeSwitch:
        if self.alive:
            raise RuntimeError("FreeSWITCH is running already")
        r = self.root
        argv = [binary(), "-nonat", "-nf", "-nc", "-conf", str(self.conf),
                "-log", str(r / "log"), "-db", str(r / "db"), "-run", str(r / "run"),
                "-mod", str(modules_dir()), "-cache", str(r / "cache"),
                "-storage", str(r / "storage"), "-recordings", str(r / "recordings"),
                "-sounds", str(r / "sounds")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FSCTL_")}
        env.update(self.env)
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        self.starts += 1
        with open(r / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        _RUNNING.append(self)
        try:
            self.wait_ready(START_TIMEOUT_S)
        except BaseException:
            self.kill9()
            raise
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"FreeSWITCH exited with {self.proc.returncode if self.proc else '?'}"
                                   f": {self.tail()}")
            try:
                wait_port("127.0.0.1", self.esl_port, 0.5)
                if "FSCTL_ESL_ADMIN_PASSWORD" not in self.env:  # no admin login to ask with
                    if "FreeSWITCH Started" in self.log_text():
                        return
                    time.sleep(0.1)
                    continue
                last = self.api("status")
                if "is ready" in last:
                    return
            except (OSError, TimeoutError, ESLError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise RuntimeError(f"FreeSWITCH not ready after {timeout_s}s ({last}): {self.tail()}")

    def stop(self) -> None:
        """SIGTERM (FreeSWITCH shuts down cleanly), SIGKILL after STOP_TIMEOUT_S."""
        terminate_group(self.proc, STOP_TIMEOUT_S)
        if self in _RUNNING:
            _RUNNING.remove(self)

    def kill9(self) -> None:
        """A crash: SIGKILL to its whole process group, no goodbye to anyone."""
        kill_group(self.proc)
        if self in _RUNNING:
            _RUNNING.remove(self)

    def restart(self) -> None:
        """kill -9 and start again on the same ports: every channel gone, a new Core-UUID."""
        self.kill9()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- fs_cli's view -------------------------------------------------------------------

    @property
    def target(self) -> tuple[str, int, str]:
        """(host, port, admin password): the unrestricted login, as fs_cli uses it."""
        return "127.0.0.1", self.esl_port, self.admin_password

    def esl(self) -> ESLClient:
        client = ESLClient("127.0.0.1", self.esl_port, self.admin_password,
                           connect_timeout_s=3, command_timeout_s=10)
        client.connect()
        return client

    # -- its log -------------------------------------------------------------------------

    def log_text(self, since_start: bool = True) -> str:
        try:
            data = self.log_file.read_bytes()
        except OSError:
            return ""
        return data[self._log_offset if since_start else 0:].decode(errors="replace")

    def problems(self, since_start: bool = True) -> list[str]:
        """Log lines at WARNING or above, but those FreeSWITCH writes whatever the config."""
        out = []
        for line in self.log_text(since_start).splitlines():
            if _LEVEL_RE.search(line) and not any(p.search(line) for p in STARTUP_WARNINGS_ALLOWED):
                out.append(line)
        return out

    def tail(self, lines: int = 30) -> str:
        text = self.log_text() or (self.root / "stdout.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def stop_all() -> None:
    """Kill every FreeSWITCH this process started and did not stop."""
    while _RUNNING:
        _RUNNING.pop().kill9()
