"""FreeSWITCH core's channel variables and caller-profile changes at each step of a leg
(originate, answer, uuid_bridge, hangup, reporting), for every endpoint; mod_sofia's own
variables are added on top by the model (sofia_vars, sipcall).

Checked against every recording in tests/fixtures/freeswitch (which variable appears on
which event, in which order); values are computed from the simulated call.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from typing import TYPE_CHECKING

from .cdr import LegTimes, cdr_variables
from .config import CAUSE_CODES, SIP_PHRASES
from .sipcall import rtp_stats
from .sofia_vars import INVITE_FAILURE_PHRASES

if TYPE_CHECKING:
    from .channel import Channel

NULL_CODEC = ("L16", "8000", "128000")
"""What mod_loopback's null/ legs read and write."""
SIP_CODEC = ("PCMU", "8000", "64000")
"""What the simulated SIP far ends answer with."""
_PLAYBACK_RATE = 8000
"""Samples per second of a tone_stream playback (playback_samples)."""


def codec_vars(codec: tuple[str, str, str]) -> dict[str, str]:
    name, rate, _ = codec
    return {"read_codec": name, "read_rate": rate, "write_codec": name, "write_rate": rate}


def null_identity(ch: Channel, session_id: int) -> dict[str, str]:
    """What mod_loopback sets before the leg is renamed (first seen on CHANNEL_UUID)."""
    return {"direction": "outbound", "is_outbound": "true", "session_id": str(session_id),
            **codec_vars(NULL_CODEC), "channel_name": ch.name, "uuid": ch.uuid,
            "call_uuid": ch.uuid}


def sip_identity(ch: Channel, session_id: int) -> dict[str, str]:
    """The first variables of a sofia leg (CHANNEL_CREATE), before mod_sofia's own."""
    return {"direction": "outbound", "is_outbound": "true", "uuid": ch.uuid,
            "call_uuid": ch.uuid, "session_id": str(session_id), "channel_name": ch.name}


def originate_result(ch: Channel) -> dict[str, str]:
    return {"originate_early_media": "false", "originate_endpoint": ch.endpoint}


def flipped(ch: Channel) -> dict[str, str]:
    """The originate returned: the caller id was flipped (CALL_UPDATE)."""
    return {"endpoint_disposition": "ANSWER", "pre_transfer_caller_id_number": ch.cid_number,
            "channel_cid_flipped": "yes"}


# ---- playback ------------------------------------------------------------------------------

def playback_started(data: str) -> dict[str, str]:
    return {"current_loop": "1", "total_loops": "1", "current_application": "playback",
            "current_application_data": data}


def playback_stopped(started_monotonic: float) -> dict[str, str]:
    ms = max(0, int((time.monotonic() - started_monotonic) * 1000))
    samples = ms * _PLAYBACK_RATE // 1000
    return {"playback_last_offset_pos": str(samples), "playback_seconds": str(ms // 1000),
            "playback_ms": str(ms), "playback_samples": str(samples)}


PLAYBACK_LOOP_VARS = ("current_loop", "total_loops")
"""Dropped when the leg leaves park after a playback."""
FAILED_PLAYBACK_VARS = PLAYBACK_LOOP_VARS + ("current_application_data",
                                             "current_application_response")
"""Dropped when park starts after a playback that failed inside the originate."""


# ---- uuid_bridge ---------------------------------------------------------------------------

def bridge(a: Channel, b: Channel, now_us: int) -> None:
    """uuid_bridge A B transfers both legs: new caller profiles, Other-Leg-* headers and
    the bridge variables (first seen on A's CHANNEL_UNPARK and B's first event after)."""
    a_ids, b_ids = a.ids(), b.ids()
    a_profile = a.caller_pairs("Other-Leg", own=False)
    b_profile = b.caller_pairs("Other-Leg", own=False)
    epoch = now_us // 1_000_000
    for leg, other, other_type, other_profile, ids in (
            (a, b, "originatee", b_profile, a_ids), (b, a, "originator", a_profile, b_ids)):
        source = f"{epoch}:{uuidlib.uuid4()}:uuid_br:{other.uuid}"
        leg.link(other, other_type, other_profile)
        leg.transfer(source, now_us)
        values = {} if leg is b else {"uuid_bridge": b.uuid}
        if "endpoint_disposition" not in leg.vars:  # bridged before its originate returned
            values["endpoint_disposition"] = "ANSWER"
        values.update(bridge_channel=other.name, bridge_uuid=other.uuid, signal_bond=other.uuid,
                      original_destination_number=leg.destination)
        if ids[0]:
            values["original_caller_id_name"] = ids[0]
        values.update(original_caller_id_number=ids[1], transfer_history=source,
                      transfer_source=source)
        leg.update_vars(values)
    a.logical_direction = "inbound"
    a.set_ids(callee=b_ids[2:])
    b.set_ids(cid=a_ids[:2])


def sent_callee(ch: Channel) -> tuple[str, str]:
    """The callee id each leg sends once bridged (CALL_UPDATE Sent-Callee-ID-*)."""
    name, number = ch.ids()[2:] if ch.bridge_a else ch.ids()[:2]
    return name or number, number


def bridged(ch: Channel, other: Channel) -> dict[str, str]:
    """Set right after CHANNEL_BRIDGE (first seen on the CALL_UPDATE that follows)."""
    name, number = sent_callee(ch)
    return {"bridge_to": other.uuid, "last_bridge_to": other.uuid,
            "last_sent_callee_id_name": name, "last_sent_callee_id_number": number}


def survivor(hanger: Channel, cause: str) -> dict[str, str]:
    """The partner hung up first: what the surviving leg learns (before its UNBRIDGE or
    HANGUP); a SIP partner's BYE passes its SIP status on too."""
    out = {}
    proto = hanger.vars.get("proto_specific_hangup_cause")
    if proto and hanger.is_sip:
        status = hanger.vars.get("sip_term_status", "")
        out["sip_hangup_phrase"] = SIP_PHRASES.get(int(status), "OK") if status.isdigit() else "OK"
    out["last_bridge_hangup_cause"] = cause
    if proto and hanger.is_sip:
        out["last_bridge_proto_specific_hangup_cause"] = proto
    return out


# ---- reporting -----------------------------------------------------------------------------

def caller_id(ch: Channel) -> str:
    name, number = ch.ids()[:2]
    return f'"{name}" <{number}>' if name else number


def hangup_complete(ch: Channel, cause: str, disposition: str | None) -> dict[str, str]:
    """Everything first seen on CHANNEL_HANGUP_COMPLETE, in FreeSWITCH's order."""
    t = ch.times
    out = {"hangup_cause": cause, "hangup_cause_q850": str(CAUSE_CODES.get(cause, 16))}
    out.update(cdr_variables(
        LegTimes(ch.created_us, ch.profile_created_us, t["answered"], t["progress"],
                 t["progress_media"], t["bridged"], t["hangup"]),
        caller_id(ch), ch.last_app, ch.last_arg))
    if ch.is_sip:
        out["sip_hangup_disposition"] = disposition = disposition or ch.vars.get(
            "sip_hangup_disposition") or ("send_bye" if ch.answered else "send_cancel")
        if disposition == "send_cancel":  # the far end ends the INVITE with 487
            out.update(invite_failure(CANCELLED_STATUS))
        if ch.answered:
            out.update(rtp_stats(ch.phases, ch.sip, t["hangup"] - t["answered"]))
    return out


CANCELLED_STATUS = 487
"""The final response to an INVITE FreeSWITCH cancelled (originate_timeout, a hangup while
ringing): sip_invite_failure_status 487, phrase ``CANCEL`` (sip_no_answer.rx)."""


def invite_failure(status: int) -> dict[str, str]:
    """sip_invite_failure_status / _phrase: the recorded phrase of ``status`` (else the
    usual one)."""
    phrase = INVITE_FAILURE_PHRASES.get(status) or SIP_PHRASES.get(status, "Failure")
    return {"sip_invite_failure_status": str(status), "sip_invite_failure_phrase": phrase}


def early_media() -> dict[str, str]:
    """The originate saw a 183 with SDP (last on CHANNEL_PROGRESS_MEDIA; ANSWER on the 200's
    CALL_UPDATE)."""
    return {"endpoint_disposition": "EARLY MEDIA"}
