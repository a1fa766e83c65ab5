"""The fault harness on a real FreeSWITCH: a node that stands where a :class:`SimProc` stands.

:class:`FreeSwitchNode` has what :class:`~.harness.Cluster` and :func:`~.harness.check` use of
a simulator (``name``, ``port``, ``password``, ``node``, ``alive``, ``esl()``, ``api()``,
``channels()``, ``tagged_channels()``, ``core_uuid()``, ``start()``, ``restart()``,
``kill9()``, ``originates()``), backed by ``tests/realfs.py`` (FreeSWITCH on a private copy of
freeswitch-conf/) and the cluster's one sipp switchboard (``tests/sipp.py``). Workers log in
as the restricted user ``fsctl@fsctl.local`` (``esl_user``); the harness's own look-ups use
the admin login.

FreeSWITCH keeps no command log, so what was dialled is counted from its side: an
:class:`Observer` (admin login, reconnecting after every restart) records every
CHANNEL_CREATE (Unique-ID, ``variable_fsctl_callback_id``, ``variable_fsctl_leg``) and every
BACKGROUND_JOB of an originate (its ``origination_uuid`` and result). A leg is dialled twice
when two channels were created for the same callback and leg, or when one
``origination_uuid`` was sent in two originates (FreeSWITCH refuses the second with
``-ERR DESTINATION_OUT_OF_ORDER`` while the first channel lives: no second channel, but a
second dial all the same).

:class:`FreeSwitchCluster` is a :class:`~.harness.Cluster` whose ``add_sim`` starts such a node;
its routes file sends the harness's default ``user`` route to the switchboard
(``sofia/fsctl/{to}@127.0.0.1:<sipp port>``), which picks the far end's behaviour by the
dialled number like the simulator's ``--numbers`` (see ``tests/sip/README.md``: the harness's
RINGING, BUSY, NOANSWER and LONGTALK numbers mean the same there; sipp's talk time counts
from its answer, the simulator's from the bridge). The null/ and error/ routes stay.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import gevent
import realfs
import sipp
from fscli import FsCliView
from gevent.event import Event as GEvent

from fsctl.errors import ESLError
from fsctl.esl import ESLClient
from fsctl.wire import Event

from .harness import HOST, ROUTES, Cluster

WAITS = "1050000"
"""A far end that answers after 0.3 s and never hangs up by itself (it waits for our BYE)."""
WAITS2 = "1050001"
TALK3 = "1050200"
"""A far end that answers after 0.3 s and sends its own BYE 3 s after the answer."""
TALK3_S = 3.0
TALK1 = "1050900"
"""A far end that answers after 0.3 s and sends its own BYE 1 s after the answer."""
TALK1_S = 1.0

OBSERVED_EVENTS = ("CHANNEL_CREATE", "BACKGROUND_JOB")
_ORIG_UUID_RE = re.compile(r"origination_uuid=([0-9A-Fa-f-]{36})")
_CALLBACK_RE = re.compile(r"fsctl_callback_id=([^,}]+)")
_LEG_RE = re.compile(r"fsctl_leg=([^,}]+)")

_ALL_SIPP: list[sipp.Sipp] = []
_ALL_OBSERVERS: list[Observer] = []
_ALL_FREESWITCH: list[realfs.FreeSwitch] = []
"""Only the FreeSWITCH processes of these scenarios (not the session's, see conftest.py)."""


def real_routes(sip_port: int) -> dict[str, Any]:
    """The harness's routes with ``user`` sent to the sipp switchboard on ``sip_port``."""
    doc = json.loads(json.dumps(ROUTES))
    user = doc["routes"]["user"]
    user["template"] = f"sofia/fsctl/{{to}}@{HOST}:{sip_port}"
    return doc


class Observer:
    """An admin ESL connection that records every fsctl channel created and every originate's
    BACKGROUND_JOB; reconnects (quickly) whenever FreeSWITCH goes away and comes back."""

    def __init__(self, node: FreeSwitchNode) -> None:
        self.node = node
        self.records: list[dict[str, Any]] = []
        self.connects = 0
        self.up = GEvent()
        self._stop = GEvent()
        self._glet: gevent.Greenlet | None = None
        self._client: ESLClient | None = None
        _ALL_OBSERVERS.append(self)

    def start(self) -> Observer:
        if self._glet is None or self._glet.dead:
            self._stop.clear()
            self._glet = gevent.spawn(self._run)
        return self

    def stop(self) -> None:
        self._stop.set()
        client = self._client
        if client is not None:
            client.close(timeout_s=0.5)
        if self._glet is not None:
            self._glet.join(timeout=3)
            if not self._glet.dead:
                self._glet.kill(block=False)

    def wait_connected(self, after: int, timeout_s: float) -> None:
        """Wait until the observer made connection number ``after + 1`` (or later)."""
        deadline = time.monotonic() + timeout_s
        while not (self.up.is_set() and self.connects > after):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.node.name}: the observer did not reconnect within "
                                     f"{timeout_s}s")
            gevent.sleep(0.02)

    def _run(self) -> None:
        fs = self.node.fs
        while not self._stop.is_set():
            if not fs.alive:
                self._stop.wait(0.05)
                continue
            lost = GEvent()
            client = ESLClient(HOST, fs.esl_port, fs.admin_password, connect_timeout_s=2,
                               command_timeout_s=5)
            client.on_event(self._on_event)
            client.on_disconnect(lambda _reason, lost=lost: lost.set())
            try:
                client.connect()
                client.subscribe(list(OBSERVED_EVENTS))
            except (ESLError, OSError):
                client.close(timeout_s=0.2)
                self._stop.wait(0.05)
                continue
            self._client = client
            self.connects += 1
            self.up.set()
            while not self._stop.is_set() and not lost.is_set() and client.connected:
                lost.wait(0.2)
            self.up.clear()
            self._client = None
            client.close(timeout_s=0.2)

    def _on_event(self, ev: Event) -> None:
        h = ev.headers
        at = time.time()
        start = self.node.fs.starts
        if ev.name == "CHANNEL_CREATE":
            cid = h.get("variable_fsctl_callback_id")
            if not cid:
                return
            self.records.append({"kind": "create", "uuid": h.get("Unique-ID"), "callback_id": cid,
                                 "leg": h.get("variable_fsctl_leg"), "at": at, "start": start})
        elif ev.name == "BACKGROUND_JOB":
            arg = h.get("Job-Command-Arg") or ""
            if h.get("Job-Command") != "originate" or "fsctl_callback_id=" not in arg:
                return
            m_uuid, m_cid, m_leg = (_ORIG_UUID_RE.search(arg), _CALLBACK_RE.search(arg),
                                    _LEG_RE.search(arg))
            self.records.append({
                "kind": "job", "uuid": m_uuid.group(1) if m_uuid else None,
                "callback_id": m_cid.group(1) if m_cid else None,
                "leg": m_leg.group(1) if m_leg else None, "job_uuid": h.get("Job-UUID"),
                "result": ev.body.strip()[:80], "at": at, "start": start})


class FreeSwitchNode(FsCliView):
    """A real FreeSWITCH (realfs) where the harness expects a simulator (SimProc)."""

    esl_user = realfs.ESL_USER
    """What the worker logs in as (WorkerProc sets FSCTL_ESL_USER from it)."""

    def __init__(self, name: str, root: Path, log_dir: Path, far: sipp.Sipp) -> None:
        self.name = name
        self.log_dir = log_dir
        self.far = far
        self.fs = realfs.FreeSwitch(root)
        _ALL_FREESWITCH.append(self.fs)
        self.port = self.fs.esl_port
        self.password = self.fs.password
        self.observer = Observer(self)

    @property
    def starts(self) -> int:
        return self.fs.starts

    @property
    def alive(self) -> bool:
        return self.fs.alive

    @property
    def pid(self) -> int | None:
        return self.fs.proc.pid if self.fs.proc is not None else None

    @property
    def node(self) -> str:
        return f"{HOST}:{self.port}"

    # -- process -------------------------------------------------------------------------

    def start(self) -> FreeSwitchNode:
        before = self.observer.connects
        self.fs.start()
        self.observer.start()
        # connected before anyone can dial on this start: no channel goes unseen
        self.observer.wait_connected(before, 10)
        return self

    def kill9(self) -> None:
        """A FreeSWITCH crash: every channel gone (the far ends are not told)."""
        self.fs.kill9()

    def restart(self) -> None:
        """kill -9 and start again on the same ports: a new Core-UUID, no channel left."""
        self.kill9()
        self.start()

    def close(self) -> None:
        """End everything of this node (also after a failure) and keep its log."""
        self.observer.stop()
        self.fs.kill9()
        self.save_logs()

    def save_logs(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copyfile(self.fs.log_file, self.log_dir / f"{self.name}-freeswitch.log")
        with contextlib.suppress(OSError):
            (self.log_dir / f"{self.name}-observed.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in self.observer.records), encoding="utf-8")

    # -- the FreeSWITCH side, as fs_cli sees it (admin login) --------------------------------

    def esl(self) -> ESLClient:
        return self.fs.esl()

    def originates(self) -> list[dict[str, Any]]:
        """What FreeSWITCH saw dialled, in the shape of SimProc.originates(), plus ``key``:
        one entry per fsctl channel created (key: callback and leg) and one per originate's
        BACKGROUND_JOB (key: its origination_uuid)."""
        out = []
        for r in list(self.observer.records):
            if r["kind"] == "create":
                key = f"channel of {r['callback_id']}/{r['leg']}"
                conn = f"create:{r['uuid']}"
            else:
                key = f"originate {r['uuid']}"
                conn = f"job:{r['result'][:40]}"
            out.append({"uuid": r["uuid"], "key": key, "conn": conn, "at": r["at"],
                        "sim": self.name, "start": r["start"], "fsctl": True,
                        "callback_id": r["callback_id"], "leg": r["leg"], "kind": r["kind"]})
        return out

    def channels_created(self) -> dict[tuple[str, str], list[str]]:
        """(callback id, leg) → Unique-IDs of the channels FreeSWITCH created for it."""
        out: dict[tuple[str, str], list[str]] = {}
        for r in self.observer.records:
            if r["kind"] == "create":
                out.setdefault((r["callback_id"], r["leg"]), []).append(r["uuid"])
        return out


class FreeSwitchCluster(Cluster):
    """A Cluster whose nodes are real FreeSWITCH processes and whose far ends are one sipp."""

    def __init__(self, scenario: str) -> None:
        super().__init__(scenario)
        self.far: sipp.Sipp | None = None
        self.nodes: list[FreeSwitchNode] = []

    def start_far(self) -> sipp.Sipp:
        if self.far is None:
            far = sipp.Sipp(self.dir / "sipp")
            _ALL_SIPP.append(far)
            self.far = far.start()
            self.routes_file.write_text(json.dumps(real_routes(far.port), indent=1))
        return self.far

    def add_sim(self, name: str | None = None) -> FreeSwitchNode:  # type: ignore[override]
        """Start a FreeSWITCH node (and, with the first, the sipp switchboard)."""
        far = self.start_far()
        name = name or f"fs{len(self.nodes) + 1}"
        node = FreeSwitchNode(name, self.data / name, self.dir, far)
        self.nodes.append(node)
        self.sims.append(node)  # type: ignore[arg-type]
        return node.start()

    def close(self) -> None:
        for node in self.nodes:
            node.observer.stop()
        for proc in [*self.workers, *self.apis]:
            proc.kill9()
        for node in self.nodes:
            node.close()
        if self.far is not None:
            self.far.stop()
        super().close()


def kill_real_leftovers() -> None:
    """Last resort at the end of the session: no FreeSWITCH, sipp or observer outlives it."""
    for obs in _ALL_OBSERVERS:
        obs.stop()
    for fs in _ALL_FREESWITCH:
        if fs.alive:
            fs.kill9()
    for far in _ALL_SIPP:
        if far.alive:
            far.kill9()
