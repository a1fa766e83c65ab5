"""One simulated FreeSWITCH channel (a call leg): its state, variables and event headers."""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from . import sofia_vars
from .config import Behaviour
from .events import (
    Pairs,
    Segment,
    VarPairs,
    cached_encoding,
    encode_value,
    make_segment,
    now_us,
)

if TYPE_CHECKING:
    from .model import Job
    from .timers import Timer

STATE_NUMBERS = {
    "CS_NEW": "0", "CS_INIT": "1", "CS_ROUTING": "2", "CS_SOFT_EXECUTE": "3", "CS_EXECUTE": "4",
    "CS_EXCHANGE_MEDIA": "5", "CS_PARK": "6", "CS_CONSUME_MEDIA": "7", "CS_HIBERNATE": "8",
    "CS_RESET": "9", "CS_HANGUP": "10", "CS_REPORTING": "11", "CS_DESTROY": "12", "CS_NONE": "0",
}
CALLSTATE_NUMBERS = {
    "DOWN": "0", "DIALING": "1", "RINGING": "2", "EARLY": "3", "ACTIVE": "4", "HELD": "5",
    "RING_WAIT": "6", "HANGUP": "7", "UNHELD": "8",
}
_STATE_SEGMENTS: dict[tuple[str, str], Segment] = {}
_ANSWER_SEGMENTS: dict[tuple[str, str | None], Segment] = {}
_TIMES = ("Profile-Created-Time", "Channel-Created-Time", "Channel-Answered-Time",
          "Channel-Progress-Time", "Channel-Progress-Media-Time", "Channel-Hangup-Time",
          "Channel-Transfer-Time", "Channel-Resurrect-Time", "Channel-Bridged-Time",
          "Channel-Last-Hold", "Channel-Hold-Accum", "Screen-Bit", "Privacy-Hide-Name",
          "Privacy-Hide-Number")
"""The last headers of a caller profile (after its prefix), in FreeSWITCH's order."""


@functools.cache
def _times_names(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}-{name}" for name in _TIMES)


_CALLER_TIMES = _times_names("Caller")
_CALLER_TIMES_FORMAT = "".join(f"{name}: {{}}\n" for name in _CALLER_TIMES)
"""The Caller-* times' header lines, for str.format()."""
_TIME_FIELDS = ("answered", "progress", "progress_media", "hangup", "transfer", "resurrect",
                "bridged")


class Channel:
    """A leg. ``uuid`` is its current Unique-ID; ``vars`` its channel variables."""

    def __init__(self, uuid: str, dial: str, destination: str, endpoint: str,
                 variables: dict[str, str], behaviour: Behaviour, job: Job | None) -> None:
        self.uuid = uuid
        self.name = dial
        self.destination = destination
        self.endpoint = endpoint
        self.is_null = endpoint == "null"
        self.behaviour = behaviour
        self.job = job
        self.state = "CS_NONE"
        self.callstate = "DOWN"
        self.answer_state = "ringing"
        self.hangup_cause: str | None = None
        self.hit_dialplan = False
        self.created_us = now_us()
        self.created_epoch = int(time.time())
        self.times = dict.fromkeys(_TIME_FIELDS, 0)
        self.cid_number = variables.get("origination_caller_id_number") or "0000000000"
        self.cid_name = variables.get("origination_caller_id_name") or ""
        self.flipped = False
        self.codec: tuple[str, str, str] | None = None
        self.write_codec = False  # the write codec is set too (the CODEC event that sets it)
        self.is_sip = not self.is_null  # every other endpoint is answered as a SIP far end
        self.sip: dict[str, str] = {}  # per-call SIP values (sipcall.call_fields)
        self.sip_encoded: dict[str, str] = {}  # the same, URL-encoded (sipcall.encoded_fields)
        self.phases = sofia_vars.DEFAULT  # its sofia profile's templates (sipcall.phases_for)
        self.early_media = False  # a 183 with SDP came before any answer
        self.network_addr: str | None = None  # the far end's address, once it has answered
        self.logical_direction = "outbound"
        self.profile_index = 1
        self.profile_created_us = self.created_us
        self.transfer_source: str | None = None  # set by uuid_bridge (a transfer)
        self.cid_override: tuple[str, str] | None = None  # caller id given by uuid_bridge
        self.callee_override: tuple[str, str] | None = None
        self.other_pairs: list[tuple[str, str]] = []  # Other-Leg-*: the partner's profile
        self.vars: dict[str, str] = {}
        self._var_lines: dict[str, str] = {}  # name -> its encoded "variable_…" header line
        # life cycle flags
        self.exists = False  # CHANNEL_CREATE sent (renamed for null legs)
        self.answered = False
        self.finishing = False  # answered, originate not yet returned
        self.parked = False
        self.bridged = False
        self.bridge_a = False
        self.other: Channel | None = None
        self.other_type = ""
        self.hung = False
        self.gone = False
        self.app = ""
        self.app_data = ""
        self.app_response = "_none_"
        self.last_app = ""
        self.last_arg = ""
        self.destroy_vars: dict[str, str] = {}  # set by the partner's thread just before DESTROY
        self.playback: str | None = None
        self.playback_started_at = 0.0  # time.monotonic() of the playback's start
        self.pending_apps: list[tuple[str, str]] = []
        self.queued_broadcasts: list[str] = []
        self.recording_since: float | None = None
        """time.monotonic() when uuid_record started on it (None: not recording)."""
        """uuid_broadcasts that came while a playback ran: FreeSWITCH plays them after it."""
        self.timers: list[Timer] = []
        self.park_timer: Timer | None = None  # park_timeout's, while parked
        self._id_seg: Segment | None = None
        self._codec_seg: Segment | None = None
        self._caller_seg: Segment | None = None  # the caller profile's ids
        self._times_seg: Segment | None = None  # and its times
        self._vars_seg: Segment | None = None
        self._other_seg: Segment | None = None

    # ---- mutation helpers (invalidate the cached segments) ----------------------------

    def set_var(self, name: str, value: str) -> None:
        self.update_vars({name: value})

    def update_vars(self, values: dict[str, str], lines: dict[str, str] | None = None) -> None:
        """Set ``values``; ``lines``, when given, holds their header lines already."""
        self.vars.update(values)
        self._vars_seg = None
        if lines is not None:
            self._var_lines.update(lines)
            return
        lines = self._var_lines
        cached, encode = cached_encoding, encode_value
        for name, value in values.items():  # runs for every variable of every leg
            lines[name] = f"variable_{name}: {cached(value) or encode(value)}\n"

    def del_vars(self, *names: str) -> None:
        for name in names:
            if self.vars.pop(name, None) is not None:
                del self._var_lines[name]
                self._vars_seg = None

    def rename(self, uuid: str) -> None:
        self.uuid = uuid
        self._id_seg = self._caller_seg = self._vars_seg = None

    def mark_time(self, field: str) -> int:
        ts = now_us()
        self.times[field] = ts
        self._times_seg = None
        return ts

    def set_codec(self, name: str, rate: str, bit_rate: str, write: bool = True) -> None:
        self.codec = (name, rate, bit_rate)
        self.write_codec = write
        self._codec_seg = None

    def flip_cid(self) -> None:
        self.flipped = True
        self.hit_dialplan = True
        self._id_seg = self._caller_seg = None

    def link(self, other: Channel | None, other_type: str,
             other_pairs: list[tuple[str, str]] | None = None) -> None:
        """Partner of a bridge; ``other_pairs`` its profile as Other-Leg-* headers."""
        self.other = other
        self.other_type = other_type
        self.other_pairs = other_pairs if other_pairs is not None else (
            other.caller_pairs("Other-Leg", own=False) if other is not None else [])
        self._other_seg = None

    def transfer(self, source: str, created_us: int) -> None:
        """uuid_bridge gives the leg a new caller profile (index 2) with a transfer source."""
        self.transfer_source = source
        self.profile_index = 2
        self.profile_created_us = created_us
        self._caller_seg = self._times_seg = None

    def set_ids(self, cid: tuple[str, str] | None = None,
                callee: tuple[str, str] | None = None) -> None:
        if cid is not None:
            self.cid_override = cid
        if callee is not None:
            self.callee_override = callee
        self._caller_seg = None

    def set_network_addr(self, addr: str) -> None:
        self.network_addr = addr
        self._caller_seg = None

    def get_var(self, name: str) -> str | None:
        if name in self.vars:
            return self.vars[name]
        if name == "uuid":
            return self.uuid
        return None

    # ---- event segments ---------------------------------------------------------------

    def state_segment(self) -> Segment:
        key = (self.state, self.callstate)
        seg = _STATE_SEGMENTS.get(key)
        if seg is None:
            seg = _STATE_SEGMENTS[key] = make_segment([
                ("Channel-State", self.state),
                ("Channel-Call-State", self.callstate),
                ("Channel-State-Number", STATE_NUMBERS.get(self.state, "0")),
            ])
        return seg

    def id_segment(self) -> Segment:
        if self._id_seg is None:
            pairs = [
                ("Channel-Name", self.name),
                ("Unique-ID", self.uuid),
                ("Call-Direction", "outbound"),
                ("Presence-Call-Direction", "outbound"),
                ("Channel-HIT-Dialplan", "true" if self.hit_dialplan else "false"),
                ("Channel-Call-UUID", self.uuid),
            ]
            self._id_seg = make_segment(pairs)
        return self._id_seg

    def answer_segment(self) -> Segment:
        key = (self.answer_state, self.hangup_cause)
        seg = _ANSWER_SEGMENTS.get(key)
        if seg is None:
            pairs = [("Answer-State", self.answer_state)]
            if self.hangup_cause:
                pairs.append(("Hangup-Cause", self.hangup_cause))
            seg = _ANSWER_SEGMENTS[key] = make_segment(pairs)
        return seg

    def codec_segment(self) -> Segment | None:
        if self.codec is None:
            return None
        if self._codec_seg is None:
            name, rate, bits = self.codec
            pairs = [("Channel-Read-Codec-Name", name), ("Channel-Read-Codec-Rate", rate),
                     ("Channel-Read-Codec-Bit-Rate", bits)]
            if self.write_codec:
                pairs += [("Channel-Write-Codec-Name", name), ("Channel-Write-Codec-Rate", rate),
                          ("Channel-Write-Codec-Bit-Rate", bits)]
            self._codec_seg = make_segment(pairs)
        return self._codec_seg

    def ids(self) -> tuple[str, str, str, str]:
        """(caller id name, number, callee id name, number) of the caller profile."""
        if self.flipped:
            ids = ("Outbound Call", self.destination, self.cid_name, self.cid_number)
        else:
            ids = (self.cid_name, self.cid_number, "Outbound Call", self.destination)
        if self.cid_override is not None:
            ids = (*self.cid_override, ids[2], ids[3])
        if self.callee_override is not None:
            ids = (ids[0], ids[1], *self.callee_override)
        return ids

    def caller_pairs(self, prefix: str, own: bool = True) -> list[tuple[str, str]]:
        """The caller profile as ``<prefix>-*`` headers (Caller-* or, ``own`` False, the
        Other-Leg-* block, which has no Transfer-Source nor Profile-Index)."""
        times = zip(_times_names(prefix), self._times_values(), strict=True)
        return self._profile_pairs(prefix, own) + list(times)

    def _profile_pairs(self, prefix: str, own: bool) -> list[tuple[str, str]]:
        """The caller profile's ids (everything before its times)."""
        cid_name, cid_num, callee_name, callee_num = self.ids()
        pairs = [(f"{prefix}-Direction", "outbound"),
                 (f"{prefix}-Logical-Direction", self.logical_direction)]
        if cid_name:
            pairs.append((f"{prefix}-Caller-ID-Name", cid_name))
        pairs += [
            (f"{prefix}-Caller-ID-Number", cid_num),
            (f"{prefix}-Orig-Caller-ID-Number", self.cid_number),
        ]
        if callee_name:
            pairs.append((f"{prefix}-Callee-ID-Name", callee_name))
        pairs.append((f"{prefix}-Callee-ID-Number", callee_num))
        if self.network_addr:
            pairs.append((f"{prefix}-Network-Addr", self.network_addr))
        pairs += [
            (f"{prefix}-ANI", self.cid_number),
            (f"{prefix}-Destination-Number", self.destination),
            (f"{prefix}-Unique-ID", self.uuid),
            (f"{prefix}-Source",
             "mod_loopback" if self.is_null else "src/switch_ivr_originate.c"),
        ]
        if own and self.transfer_source:
            pairs.append((f"{prefix}-Transfer-Source", self.transfer_source))
        pairs += [(f"{prefix}-Context", "default"), (f"{prefix}-Channel-Name", self.name)]
        if own:
            pairs.append((f"{prefix}-Profile-Index", str(self.profile_index)))
        return pairs

    def _times_values(self) -> tuple[str, ...]:
        """The values of the caller profile's :data:`_TIMES` headers: digits and words
        that need no URL encoding."""
        t = self.times
        return (str(self.profile_created_us), str(self.created_us), str(t["answered"]),
                str(t["progress"]), str(t["progress_media"]), str(t["hangup"]), "0", "0",
                str(t["bridged"]), "0", "0", "true", "false", "false")

    def caller_segments(self) -> tuple[Segment, Segment]:
        """The Caller-* headers, as two segments: its ids, then its times (which change
        more often)."""
        if self._caller_seg is None:
            self._caller_seg = make_segment(self._profile_pairs("Caller", True))
        if self._times_seg is None:
            values = self._times_values()
            self._times_seg = (_CALLER_TIMES_FORMAT.format(*values),
                               Pairs(zip(_CALLER_TIMES, values, strict=True)))
        return self._caller_seg, self._times_seg

    def other_segment(self) -> Segment | None:
        if self.other is None:
            return None
        if self._other_seg is None:
            self._other_seg = make_segment([("Other-Type", self.other_type)] + self.other_pairs)
        return self._other_seg

    def vars_segment(self) -> Segment:
        """Every channel variable; each one's header line is encoded once, when it is set."""
        if self._vars_seg is None:
            self._vars_seg = ("".join(self._var_lines.values()), VarPairs(self.vars))
        return self._vars_seg

    def segments(self, with_vars: bool, before: list[tuple[str, str]] | None = None,
                 after: list[tuple[str, str]] | None = None,
                 with_caller: bool = True) -> list[Segment]:
        out: list[Segment] = []
        if before:
            out.append(make_segment(before))
        out += [self.state_segment(), self.id_segment(), self.answer_segment()]
        codec = self.codec_segment()
        if codec is not None:
            out.append(codec)
        if with_caller:
            out += self.caller_segments()
            other = self.other_segment()
            if other is not None:
                out.append(other)
        if with_vars:
            out.append(self.vars_segment())
        if after:
            out.append(make_segment(after))
        return out

    def show_row(self, hostname: str) -> dict[str, str]:
        """One row of ``show channels as json`` (every value a string, no variables)."""
        codec = self.codec or ("", "", "")
        return {
            "uuid": self.uuid, "direction": "outbound",
            "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created_epoch)),
            "created_epoch": str(self.created_epoch), "name": self.name, "state": self.state,
            "cid_name": "Outbound Call" if self.flipped else self.cid_name,
            "cid_num": self.destination if self.flipped else self.cid_number,
            "ip_addr": "", "dest": self.destination, "application": self.app,
            "application_data": self.app_data, "dialplan": "", "context": "default",
            "read_codec": codec[0], "read_rate": codec[1], "read_bit_rate": codec[2],
            "write_codec": codec[0], "write_rate": codec[1], "write_bit_rate": codec[2],
            "secure": "", "hostname": hostname, "presence_id": "", "presence_data": "",
            "accountcode": "", "callstate": self.callstate,
            "callee_name": self.cid_name if self.flipped else "",
            "callee_num": self.cid_number if self.flipped else self.destination,
            "callee_direction": "RECV" if self.flipped else "",
            "call_uuid": self.uuid, "sent_callee_name": "", "sent_callee_num": "",
            "initial_cid_name": self.cid_name, "initial_cid_num": self.cid_number,
            "initial_ip_addr": "", "initial_dest": self.destination, "initial_dialplan": "",
            "initial_context": "default",
        }
