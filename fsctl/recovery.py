"""Recovery: adopt callbacks after a crash or a reconnect, and sweep orphans.

After every (re)connect to FreeSWITCH the worker reconciles its live callbacks:
if the node's ``core_uuid`` changed, FreeSWITCH restarted and every channel is
gone (the callbacks end ``freeswitch_restarted``); otherwise each leg is looked
up (``show channels like <uuid> as json``) and what happened while we were not
listening is fed to the state machine — or the leg is declared lost.
The sweeper hangs up channels tagged ``fsctl_callback_id`` whose callback is
final or unknown, and ends callbacks whose channels vanished.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Container
from typing import TYPE_CHECKING, Any

from .callback import Cancel, Input, LegSignal, Lost
from .commands import UUID_RE, check_uuid, uuid_getvar, uuid_kill
from .errors import ESLError
from .model import Callback, Leg

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger(__name__)

DIAL_GRACE_S = 3.0
"""A leg dialled this recently may not have a channel yet: not declared lost."""
KNOWN_FOREIGN_MAX = 10_000
"""Most channel uuids remembered as not fsctl's (spares one uuid_getvar per sweep)."""


def row_facts(row: dict[str, str]) -> list[str]:
    """What a ``show channels`` row says about a leg, as signal kinds in order. Pure."""
    kinds = ["created"]
    callstate = row.get("callstate", "")
    if callstate in ("RINGING", "EARLY"):
        kinds.append("ringing")
    if callstate in ("ACTIVE", "HELD"):
        kinds.append("answered")
        application = row.get("application", "")
        if application == "park":
            kinds.append("parked")
        elif application in ("uuid_bridge", "bridge"):
            kinds.append("bridged")
    return kinds


def leg_inputs(cb: Callback, rows: dict[str, dict[str, str]], now: float) -> list[Input]:
    """The inputs that bring a callback up to date with the channels that exist. Pure."""
    inputs: list[Input] = []
    for name, leg in cb.legs.items():
        if not leg.alive or not leg.sent:
            continue  # a leg waiting to be dialled (again) has no channel yet
        row = rows.get(leg.uuid)
        if row is None:
            if _vanished(leg, now):
                inputs.append(LegSignal(name, "hangup", now, cause="LOST"))
            continue
        inputs.extend(LegSignal(name, kind, now) for kind in row_facts(row))
    return inputs


def lost_legs(cb: Callback, present: Container[str], now: float) -> list[LegSignal]:
    """The hangups :func:`leg_inputs` gives for legs whose channel is not ``present``. Pure."""
    return [LegSignal(name, "hangup", now, cause="LOST") for name, leg in cb.legs.items()
            if leg.alive and leg.sent and leg.uuid not in present and _vanished(leg, now)]


def _vanished(leg: Leg, now: float) -> bool:
    """A sent leg with no channel is gone, unless it was dialled too recently to have one."""
    return not (leg.state == "dialing" and now - leg.times.get("dialed", 0.0) < DIAL_GRACE_S)


def _row_uuid(obj: dict[str, Any]) -> Any:
    """``json.loads`` object hook for ``show channels as json``: each row shrinks to its
    uuid as it is parsed (a node's 20,000 rows of ~40 columns are ~60 MB as dicts)."""
    return _Uuid(obj["uuid"]) if "uuid" in obj else obj


class _Uuid:
    """A row of ``show channels`` reduced to its uuid."""

    __slots__ = ("uuid",)

    def __init__(self, uuid: Any) -> None:
        self.uuid = uuid


def channel_uuids(reply: str) -> dict[str, None]:
    """The uuids of the rows of a ``show channels as json`` reply that have one, in order."""
    doc = json.loads(reply or "{}", object_hook=_row_uuid)
    return dict.fromkeys(row.uuid for row in doc.get("rows", []) if isinstance(row, _Uuid))


class Recovery:
    """The worker's reconcile and sweep duties (I/O through the worker's link and store)."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self._foreign: set[str] = set()
        self._missing: set[str] = set()

    def channel_rows(self, like: str | None = None) -> dict[str, dict[str, str]]:
        cmd = f"show channels like {check_uuid(like)} as json" if like else "show channels as json"
        reply = json.loads(self.w.link.api(cmd) or "{}")
        return {row["uuid"]: row for row in reply.get("rows", []) if "uuid" in row}

    def reconcile(self, core_uuid: str) -> None:
        """After a (re)connect: bring every live callback of ours up to date."""
        now = self.w.clock()
        for cb in list(self.w.live.values()):
            self.reconcile_one(cb, core_uuid, now)

    def reconcile_one(self, cb: Callback, core_uuid: str, now: float) -> None:
        if cb.core_uuid and cb.core_uuid != core_uuid:
            log.warning("callback %s: FreeSWITCH %s restarted; its channels are gone", cb.id,
                        self.w.link.node)
            self.w.feed(cb, Lost(now, "freeswitch_restarted"))
            return
        rows: dict[str, dict[str, str]] = {}
        for leg in cb.legs.values():
            if leg.alive:
                rows.update(self.channel_rows(like=leg.uuid))
        for item in leg_inputs(cb, rows, now):
            self.w.feed(cb, item)
        log.info("callback %s: reconciled (%s)", cb.id, cb.state)

    def sweep(self) -> None:
        """Hang up fsctl channels whose callback is over; end callbacks whose legs vanished."""
        rows = channel_uuids(self.w.link.api("show channels as json"))
        now = self.w.clock()
        missing: set[str] = set()
        for cb in list(self.w.live.values()):
            if cb.final:
                continue
            if self._talked_too_long(cb, now):
                continue
            for item in lost_legs(cb, rows, now):
                uuid = cb.legs[item.leg].uuid
                missing.add(uuid)
                if uuid in self._missing:  # missing two sweeps in a row: no event is pending
                    log.warning("callback %s: leg %s vanished", cb.id, item.leg)
                    self.w.feed(cb, item)
        self._missing = missing
        ours = set(self.w.by_uuid)
        for uuid in rows:
            if uuid in ours or uuid in self._foreign:
                continue
            self._sweep_channel(uuid)
        if len(self._foreign) > KNOWN_FOREIGN_MAX:
            self._foreign.clear()

    def _talked_too_long(self, cb: Callback, now: float) -> bool:
        """Hang up a call bridged for longer than max_talk_s; True when it was."""
        bridged = [leg.times["bridged"] for leg in cb.legs.values() if "bridged" in leg.times]
        if cb.state != "bridged" or not bridged:
            return False
        if now - min(bridged) <= self.w.settings.max_talk_s:
            return False
        log.warning("callback %s: bridged for over %ds; hanging up", cb.id,
                    self.w.settings.max_talk_s)
        self.w.feed(cb, Cancel(ts=now, reason="max_talk_time"))
        return True

    def _sweep_channel(self, uuid: str) -> None:
        if not UUID_RE.fullmatch(uuid):
            self._foreign.add(uuid)  # not a UUID fsctl makes (lowercase v4): not ours
            return
        try:
            callback_id = self.w.link.api(uuid_getvar(uuid, "fsctl_callback_id")).strip()
        except (ESLError, ValueError) as exc:
            log.debug("sweep: %s: %s", uuid, exc)
            return
        if not callback_id or callback_id == "_undef_" or callback_id.startswith("-ERR"):
            self._foreign.add(uuid)
            return
        cb = self.w.store.get(callback_id) if len(callback_id) <= 64 else None
        if cb is not None and not cb.final:
            return  # live, owned by a worker (ours adopts it through its job)
        log.warning("callback %s: orphan channel %s (%s); hanging it up", callback_id, uuid,
                    "finished" if cb else "unknown")
        self.w.link.api(uuid_kill(uuid, "NORMAL_CLEARING"))
