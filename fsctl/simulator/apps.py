"""Applications run on a channel: execute events, playback (uuid_broadcast), PRIVATE_COMMAND."""

from __future__ import annotations

import re
import time
import uuid as uuidlib
from typing import TYPE_CHECKING

from . import corevars
from .config import normalize_cause
from .events import OutEvent, make_segment

if TYPE_CHECKING:
    from .channel import Channel
    from .server import Simulator


_TONE = re.compile(r"%\((\d+),(\d+),[\d,]+\)")


def tone_length_s(path: str) -> float | None:
    """How long a ``tone_stream://`` plays (its segments' on + off, times its loops); None
    for one that loops for ever (``loops=-1``) and for anything else (files, streams: the
    simulator plays them until a bridge or a break)."""
    if not path.startswith("tone_stream://"):
        return None
    loops = re.search(r"loops=(-?\d+)", path)
    count = int(loops.group(1)) if loops else 1
    if count < 0:
        return None
    ms = sum(int(on) + int(off) for on, off in _TONE.findall(path))
    return ms * max(1, count) / 1000


class AppsMixin:
    """Part of :class:`~fsctl.simulator.model.CallModel` (needs its ``emit`` and ``hangup``)."""

    sim: Simulator

    if TYPE_CHECKING:
        def emit(self, ch: Channel, name: str, with_vars: bool,
                 before: list[tuple[str, str]] | None = None,
                 after: list[tuple[str, str]] | None = None, calling: str | None = None,
                 with_caller: bool = True) -> None: ...

        def hangup(self, ch: Channel, cause: str, sip_vars: dict[str, str] | None = None,
                   job_early: bool = False) -> None: ...

        def unheard(self, name: str) -> bool: ...

    def _exec(self, ch: Channel, app: str, data: str) -> None:
        if app != "uuid_bridge":  # an API, not a dialplan application: not the last_app
            ch.last_app, ch.last_arg = app, data
        if self.unheard("CHANNEL_EXECUTE"):
            return
        after = [("Application", app)]
        if data:
            after.append(("Application-Data", data))
        if app != "uuid_bridge":  # uuid_bridge's soft-execute has no Application-UUID
            after.append(("Application-UUID", str(uuidlib.uuid4())))
        self.emit(ch, "CHANNEL_EXECUTE", True, after=after)

    def _exec_complete(self, ch: Channel, app: str, data: str, response: str) -> None:
        if self.unheard("CHANNEL_EXECUTE_COMPLETE"):
            return
        after = [("Application", app)]
        if data:
            after.append(("Application-Data", data))
        after += [("Application-Response", response),
                  ("Application-UUID", str(uuidlib.uuid4()))]
        self.emit(ch, "CHANNEL_EXECUTE_COMPLETE", True, after=after)

    def _private_command(self, ch: Channel, app: str, data: str) -> None:
        factory = self.sim.factory
        cmd_seq = factory.next_seq()
        seq = factory.next_seq()
        if not self.sim.wants("PRIVATE_COMMAND"):
            return
        segments = factory.head("COMMAND", cmd_seq)
        segments.append(make_segment([("call-command", "execute"), ("execute-app-name", app),
                                      ("execute-app-arg", data), ("event-lock", "true"),
                                      ("lead-frames", "5")]))
        segments += factory.head("PRIVATE_COMMAND", seq)
        segments += ch.segments(False)
        self.sim.publish(OutEvent("PRIVATE_COMMAND", segments))

    def broadcast(self, ch: Channel, path: str) -> None:
        app, sep, data = path.partition("::")
        if not sep:
            app, data = "playback", path
        if not (ch.parked or ch.bridged):
            ch.pending_apps.append((app, data))
            return
        if app == "hangup":
            self.hangup(ch, normalize_cause(data))
            return
        if ch.playback is not None:
            # FreeSWITCH 1.11 plays a broadcast after the one playing (recorded: a 2 s tone,
            # then the ringback sent with it); uuid_break or a bridge end the playing one
            ch.queued_broadcasts.append(path)
            return
        if app == "playback":
            ch.update_vars(corevars.playback_started(data))
        else:
            ch.update_vars({"current_application_data": data, "current_application": app})
        self._exec(ch, app, data)
        if app in ("playback", "endless_playback"):
            ch.playback = data
            ch.playback_started_at = time.monotonic()
            self.emit(ch, "PLAYBACK_START", True,
                      after=[("Playback-File-Type", data.split(":", 1)[0]),
                             ("Playback-File-Path", data)])
            length = tone_length_s(data) if app == "playback" else None
            if length is not None:
                self.later(ch, length, self._played, data)
        else:
            self._exec_complete(ch, app, data, "_none_")

    def _played(self, ch: Channel, data: str) -> None:
        """A finite playback came to its end: the next queued broadcast starts."""
        if ch.playback != data:
            return
        self.stop_playback(ch, "FILE PLAYED")
        if ch.queued_broadcasts and (ch.parked or ch.bridged):
            self.broadcast(ch, ch.queued_broadcasts.pop(0))

    def stop_playback(self, ch: Channel, response: str = "PLAYBACK ERROR") -> None:
        data = ch.playback
        if data is None:
            return
        ch.playback = None
        ch.update_vars(corevars.playback_stopped(ch.playback_started_at))
        self.emit(ch, "PLAYBACK_STOP", True,
                  after=[("Playback-File-Type", data.split(":", 1)[0]),
                         ("Playback-File-Path", data), ("Playback-Status", "done")])
        ch.app_response = response
        ch.set_var("current_application_response", response)
        self._exec_complete(ch, "playback", data, response)
        self._private_command(ch, "playback", data)
