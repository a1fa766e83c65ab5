"""The per-call values of a simulated SIP leg (tags, call id, ports …) and its variables.

The templates of :mod:`.sofia_vars` (taken from a real FreeSWITCH's sofia legs, per sofia
profile: :func:`phases_for`) are filled with the values of :func:`call_fields`, made once
per leg, so that each leg's variables have the size and shape of a real one's without any
SIP being spoken.
"""

from __future__ import annotations

import random
import string
import uuid as uuidlib
from typing import NamedTuple

from . import sofia_vars
from .events import encode_new, encode_value
from .sofia_vars import Phases, Template

DEFAULT_SIP_PORT = "5060"
"""The far end's port when the dial string names none."""
PROFILE_SIP_PORTS = {"fsctl": "5080"}
"""A profile's own SIP port (sofia_profile_url, Via): freeswitch-conf/sip_profiles/fsctl.xml's
sip-port (tests/realfs.py moves it to a free port, which the recordings show)."""
DEFAULT_LOCAL_SIP_PORT = "5060"
"""Every other profile's (the recordings' ``internal``)."""
DEFAULT_FAR_HOST = "127.0.0.1"
"""The far end's host when the dial string names none (``user/1000``)."""
LOCAL_RTP_PORTS = (16384, 32768)
"""switch.conf.xml rtp-start-port / rtp-end-port: where FreeSWITCH's own RTP ports are."""
REMOTE_RTP_PORTS = (6000, 60000)
"""Where a far end's RTP port is drawn from."""
PACKET_MS = 20
"""RTP packetization (a=ptime:20): one packet per 20 ms of an answered call."""
TAG_CHARS = string.ascii_letters + string.digits
"""Characters of sofia's tags and via branches."""
TAG_LEN = 13
"""Length of a sofia tag (``aBrUaHjH0XHrB``)."""

_rng = random.Random()


def _tag() -> str:
    return "".join(_rng.choices(TAG_CHARS, k=TAG_LEN))


def _even_port(bounds: tuple[int, int]) -> str:
    return str(_rng.randrange(bounds[0], bounds[1], 2))


def phases_for(profile: str) -> Phases:
    """The templates of a leg on sofia profile ``profile`` (the recorded profile's, else
    the default ones)."""
    return sofia_vars.PROFILES.get(profile, sofia_vars.DEFAULT)


def call_fields(dial: str, destination: str, cid_number: str) -> dict[str, str]:
    """Every field of :data:`sofia_vars.FIELDS` for one leg dialled with ``dial``."""
    parts = dial.split("/")
    target = parts[-1]
    if "@" in target:
        user, _, hostport = target.partition("@")
        host, _, port = hostport.partition(":")
    else:  # sofia/gateway/<gw>/<dest>, user/<dest>
        user, port = target, ""
        host = parts[2] if len(parts) > 3 and parts[1] == "gateway" else DEFAULT_FAR_HOST
    profile = parts[1] if parts[0] == "sofia" and len(parts) > 2 else "internal"
    if profile == "gateway":
        profile = "external"
    local_sdp = _rng.randrange(10**9, 2 * 10**9)
    remote_sdp_version = _rng.randrange(10**9, 4 * 10**9)
    return {
        "call_id": str(uuidlib.uuid4()),
        "cid_num": cid_number,
        "cseq": str(_rng.randrange(10**8, 10**9)),
        "dest": destination or user,
        "far_host": host,
        "far_port": port or DEFAULT_SIP_PORT,
        "from_tag": _tag(),
        "local_media_port": _even_port(LOCAL_RTP_PORTS),
        "local_sdp_id": str(local_sdp),
        "local_sdp_version": str(local_sdp + 1),
        "local_sip_port": PROFILE_SIP_PORTS.get(profile, DEFAULT_LOCAL_SIP_PORT),
        "profile": profile,
        "remote_media_port": _even_port(REMOTE_RTP_PORTS),
        "remote_sdp_id": str(_rng.randrange(10**7, 10**8)),
        "remote_sdp_version": str(remote_sdp_version),
        "remote_sdp_next_version": str(remote_sdp_version + 1),  # its 200 after a 183
        "req_uri": target if "@" in target else f"{user}@{host}",
        "rtp_in_skip_packets": "0",
        "ssrc": str(_rng.randrange(1, 2**32)),
        "to_tag": _tag(),
        "via_branch": "z9hG4bK" + _tag(),
    }


def render(template: Template, fields: dict[str, str]) -> dict[str, str]:
    """The variables of one phase, in FreeSWITCH's order."""
    return {name: value.format_map(fields) if "{" in value else value
            for name, value in template}


class Rendered(NamedTuple):
    """One phase's variables, and the header line of each (as Channel.update_vars makes)."""

    values: dict[str, str]
    lines: dict[str, str]


def encoded_fields(fields: dict[str, str]) -> dict[str, str]:
    """``fields`` with every value URL-encoded (what :func:`render_lines` fills in)."""
    return {name: encode_new(value) for name, value in fields.items()}


def _line_template(name: str, value: str) -> str:
    """The header line of a templated variable, as a format string over *encoded* fields:
    URL encoding maps each character on its own, so encoding the literal text once and each
    field once per call gives the encoding of the whole value."""
    parts = ["variable_", name.replace("{", "{{").replace("}", "}}"), ": "]
    for literal, field, spec, conversion in string.Formatter().parse(value):
        if spec or conversion:
            raise ValueError(f"template of {name!r} has a format spec: {value!r}")
        parts.append(encode_value(literal))  # encoded: no brace is left in it
        if field is not None:
            parts.append("{" + field + "}")
    return "".join(parts) + "\n"


LineTemplates = tuple[tuple[str, str, bool], ...]
"""Per variable: (name, its line or, when it has fields, its line template, has fields)."""
_LINE_TEMPLATES: dict[int, tuple[Template, LineTemplates]] = {}
"""id() of a template -> (that template, its line templates)."""


def _line_templates(template: Template) -> LineTemplates:
    known = _LINE_TEMPLATES.get(id(template))
    if known is not None and known[0] is template:
        return known[1]
    lines = tuple(
        (name, _line_template(name, value), True) if "{" in value  # as render() decides
        else (name, f"variable_{name}: {encode_value(value)}\n", False)
        for name, value in template)
    _LINE_TEMPLATES[id(template)] = (template, lines)
    return lines


def render_lines(template: Template, fields: dict[str, str],
                 encoded: dict[str, str]) -> Rendered:
    """:func:`render`, with the header lines (``encoded``: :func:`encoded_fields`)."""
    lines = {name: line.format_map(encoded) if templated else line
             for name, line, templated in _line_templates(template)}
    return Rendered(render(template, fields), lines)


def rtp_stats(phases: Phases, fields: dict[str, str], answered_us: int) -> dict[str, str]:
    """The RTP statistics of an answered leg, ``answered_us`` after its answer."""
    fields["rtp_in_skip_packets"] = str(max(0, answered_us) // (PACKET_MS * 1000))
    return render(phases.rtp_stats, fields)
