"""The only place that writes FreeSWITCH syntax.

Pure functions: validated values in, one command text out. Every value is
checked against an allowlist here again (defence in depth) — never escaped into
place. See FREESWITCH.md §2 and §6.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from .errors import InvalidValue

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
NUMBER_RE = re.compile(r"^\+?[0-9]{2,20}$")
CALLER_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,40}$")
CALLBACK_ID_RE = re.compile(r"^[0-9a-f]{32}$")
VAR_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
VAR_VALUE_RE = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")
CAUSE_RE = re.compile(r"^[A-Z_]{3,40}$")
ENDPOINT_RE = re.compile(r"^(?:null|user|loopback|error|sofia|freetdm|verto\.rtc)/[A-Za-z0-9._/+-]{1,120}$")
HOST_ENDPOINT_RE = re.compile(
    r"^sofia/[A-Za-z0-9._-]{1,64}/[A-Za-z0-9._+-]{0,32}(?:\{to\})?[A-Za-z0-9._+-]{0,32}"
    r"@(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::(?P<port>[0-9]{1,5}))?"
    r"(?:;transport=(?:udp|tcp|tls))?$")
"""An endpoint with a host fixed by the operator: ``sofia/<profile>/{to}@<host>[:<port>]``
with an optional ``;transport=udp|tcp|tls`` (IPv6 literals are not accepted: their brackets
are FreeSWITCH's per-leg variable syntax)."""
DIAL_STRING_RE = re.compile(
    r"^(?:null|user|loopback|error|sofia|freetdm|verto\.rtc)/[A-Za-z0-9._/+@:-]{1,250}"
    r"(?:;transport=(?:udp|tcp|tls))?$")
"""A whole dial string after substitution: one endpoint, no lists, no other parameters."""
# A path for uuid_broadcast: an operator-configured tone or file, never user input.
PLAYBACK_RE = re.compile(r"^[A-Za-z0-9_./:%(),;=+-]{1,200}$")

DTMF_RE = re.compile(r"^[0-9*#wW]{1,32}$")
"""Digits fsctl sends to a leg: 0-9 * #, w a 0.5 s pause, W a 1 s pause (FreeSWITCH's)."""
DTMF_DIGIT_S = 0.35
"""One digit on the wire: FreeSWITCH's default tone (2000 samples at 8 kHz, 250 ms) and the
gap after it."""
DTMF_SETTLE_S = 0.25
"""Added after the last digit before the bridge: the far end's IVR acts on it."""

ESL_API_COMMANDS = ("originate", "uuid_bridge", "uuid_kill", "uuid_broadcast", "uuid_exists",
                    "uuid_getvar", "sched_hangup", "show", "status", "global_getvar",
                    "uuid_send_dtmf", "uuid_record")
"""Every api/bgapi command fsctl sends: what the restricted ESL user is allowed."""

DEFAULT_RINGBACK = "tone_stream://%(2000,4000,440,480);loops=-1"
"""The US ringback tone played to the answered leg while the other one rings."""
RINGBACK_TONES = {
    "us": "tone_stream://%(2000,4000,440,480);loops=-1",
    "uk": "tone_stream://%(400,200,400,450);%(400,2000,400,450);loops=-1",
    "eu": "tone_stream://%(1000,4000,425);loops=-1",
    "de": "tone_stream://%(1000,4000,425);loops=-1",
    "fr": "tone_stream://%(1500,3500,440);loops=-1",
    "au": "tone_stream://%(400,200,383,417);%(400,2000,383,417);loops=-1",
}
"""Ringback by country: FreeSWITCH's own definitions (vars.xml ``us-ring``, ``uk-ring``,
``de-ring``, ``fr-ring``, ``au-ring``; eu is de's 425 Hz), looped."""
BROADCAST_APPS = ("playback", "endless_playback")
"""How a waiting leg's media is played: once (a tone that loops itself, an announcement) or
over and over until the bridge (music)."""


def _check(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidValue(f"{what} {value!r} is not allowed")
    return value


def check_uuid(value: str) -> str:
    return _check(value, UUID_RE, "uuid")


def check_number(value: str) -> str:
    return _check(value, NUMBER_RE, "number")


def check_caller_name(value: str) -> str:
    return _check(value, CALLER_NAME_RE, "caller-ID name")


def check_callback_id(value: str) -> str:
    return _check(value, CALLBACK_ID_RE, "callback id")


def check_cause(value: str) -> str:
    return _check(value, CAUSE_RE, "hangup cause")


@dataclass(frozen=True, slots=True)
class RouteTemplate:
    """A parsed route: channel variables of the operator, and an endpoint with ``{to}``."""

    name: str
    endpoint: str
    variables: tuple[tuple[str, str], ...] = field(default=())

    @property
    def has_host(self) -> bool:
        """The operator fixed the far host (``…{to}@host``): ``to`` can only be a number."""
        return "@" in self.endpoint

    @classmethod
    def parse(cls, name: str, template: str) -> RouteTemplate:
        """Parse ``[{var=value,...}]endpoint`` where endpoint holds at most one ``{to}``."""
        variables: list[tuple[str, str]] = []
        rest = template
        if rest.startswith("{"):
            close = rest.find("}")
            if close < 0:
                raise InvalidValue(f"route {name!r}: unclosed variable block")
            for item in rest[1:close].split(","):
                key, sep, val = item.partition("=")
                if not sep:
                    raise InvalidValue(f"route {name!r}: variable {item!r} has no '='")
                variables.append((_check(key, VAR_NAME_RE, "variable name"),
                                  _check(val, VAR_VALUE_RE, "variable value")))
            rest = rest[close + 1:]
        if rest.count("{to}") > 1:
            raise InvalidValue(f"route {name!r}: more than one {{to}} placeholder")
        if "@" in rest:
            host = HOST_ENDPOINT_RE.fullmatch(rest)
            if host is None:
                raise InvalidValue(
                    f"route {name!r}: endpoint {rest!r} is not allowed; a host goes only in "
                    "sofia/<profile>/{to}@<host>[:<port>][;transport=udp|tcp|tls]")
            if host["port"] is not None and not 1 <= int(host["port"]) <= 65535:
                raise InvalidValue(f"route {name!r}: port {host['port']} is not a port")
        else:
            _check(rest.replace("{to}", "0000"), ENDPOINT_RE, f"route {name!r} endpoint")
        return cls(name=name, endpoint=rest, variables=tuple(variables))

    def dial_string(self, to: str) -> str:
        return self.endpoint.replace("{to}", check_number(to))


class DialRoute(Protocol):
    """What originate needs of a route: its variables and its (policy-checked) endpoint."""

    @property
    def variables(self) -> tuple[tuple[str, str], ...]: ...

    def dial_string(self, to: str) -> str: ...


@dataclass(frozen=True, slots=True)
class Dial:
    """Everything needed to originate one leg; every field already validated upstream."""

    uuid: str
    callback_id: str
    leg: str
    to: str
    caller_id_number: str
    caller_id_name: str | None
    route: DialRoute
    ring_timeout_s: int
    park_timeout_s: int
    record_stereo: bool = False
    """The leg is recorded in stereo (``RECORD_STEREO=true``: one party a channel)."""


def originate(dial: Dial) -> str:
    """``originate {vars}<dial string> &park()`` for one leg (sent with bgapi)."""
    if dial.leg not in ("A", "B"):
        raise InvalidValue(f"leg {dial.leg!r} is not allowed")
    for timeout in (dial.ring_timeout_s, dial.park_timeout_s):
        if not isinstance(timeout, int) or not 1 <= timeout <= 86400:
            raise InvalidValue(f"timeout {timeout!r} is not allowed")
    pairs = [
        ("origination_uuid", check_uuid(dial.uuid)),
        ("fsctl_callback_id", check_callback_id(dial.callback_id)),
        ("fsctl_leg", dial.leg),
        ("ignore_early_media", "true"),
        ("originate_timeout", str(dial.ring_timeout_s)),
        ("park_timeout", str(dial.park_timeout_s)),
        ("hangup_after_bridge", "true"),
        ("origination_caller_id_number", check_number(dial.caller_id_number)),
    ]
    if dial.caller_id_name:
        pairs.append(("origination_caller_id_name", check_caller_name(dial.caller_id_name)))
    if dial.record_stereo:
        pairs.append(("RECORD_STEREO", "true"))
    for key, value in dial.route.variables:
        pairs.append((_check(key, VAR_NAME_RE, "variable name"),
                      _check(value, VAR_VALUE_RE, "variable value")))
    block = ",".join(f"{k}={v}" for k, v in pairs)
    endpoint = _check(dial.route.dial_string(dial.to), DIAL_STRING_RE, "dial string")
    if ":_:" in endpoint:
        raise InvalidValue(f"dial string {endpoint!r} is not allowed")
    return f"originate {{{block}}}{endpoint} &park()"


def uuid_bridge(a: str, b: str) -> str:
    return f"uuid_bridge {check_uuid(a)} {check_uuid(b)}"


def uuid_kill(uuid: str, cause: str = "NORMAL_CLEARING") -> str:
    return f"uuid_kill {check_uuid(uuid)} {check_cause(cause)}"


def sched_hangup(uuid: str, after_s: int, cause: str = "ALLOTTED_TIMEOUT") -> str:
    """FreeSWITCH itself hangs ``uuid`` up after ``after_s`` seconds, fsctl alive or not."""
    if isinstance(after_s, bool) or not isinstance(after_s, int) or not 1 <= after_s <= 86400:
        raise InvalidValue(f"sched_hangup delay {after_s!r} is not allowed")
    return f"sched_hangup +{after_s} {check_uuid(uuid)} {check_cause(cause)}"


def uuid_broadcast(uuid: str, path: str = DEFAULT_RINGBACK, app: str = "playback") -> str:
    if app not in BROADCAST_APPS:
        raise InvalidValue(f"broadcast application {app!r} is not allowed")
    return (f"uuid_broadcast {check_uuid(uuid)} "
            f"{app}::{_check(path, PLAYBACK_RE, 'playback path')} aleg")


def uuid_send_dtmf(uuid: str, digits: str) -> str:
    """``digits`` (:data:`DTMF_RE`) to the far end of ``uuid`` (RFC 2833 on a SIP leg). Sent
    with bgapi: FreeSWITCH waits out each w / W in the command's own thread on endpoints that
    cannot queue pauses (null/ does; the command took 1 s for ``1W2`` on FreeSWITCH 1.11)."""
    return f"uuid_send_dtmf {check_uuid(uuid)} {_check(digits, DTMF_RE, 'DTMF digits')}"


RECORD_PATH_RE = re.compile(r"^/(?!.*\.\.)[A-Za-z0-9_./-]{1,200}\.wav$")
"""Where FreeSWITCH writes a recording: an absolute .wav path of the operator's directory
and the callback id (no ``..``, no spaces, nothing FreeSWITCH would expand)."""


def uuid_record(uuid: str, path: str) -> str:
    """Record ``uuid`` (a bridged leg: both parties) into ``path`` until it hangs up."""
    return f"uuid_record {check_uuid(uuid)} start {_check(path, RECORD_PATH_RE, 'recording path')}"


def wav_size(samples: int, channels: int) -> int:
    """Bytes of the 16-bit PCM WAV FreeSWITCH writes for ``samples`` per channel (measured:
    16160 stereo samples made 64684 bytes, a 44-byte header)."""
    return 44 + samples * 2 * channels


def dtmf_play_s(digits: str) -> float:
    """How long ``digits`` take to play out after FreeSWITCH queued them (an estimate from
    FreeSWITCH's default digit duration), with :data:`DTMF_SETTLE_S` after."""
    pauses = 0.5 * digits.count("w") + 1.0 * digits.count("W")
    tones = len(digits) - digits.count("w") - digits.count("W")
    return round(tones * DTMF_DIGIT_S + pauses + DTMF_SETTLE_S, 3)


def uuid_exists(uuid: str) -> str:
    return f"uuid_exists {check_uuid(uuid)}"


def uuid_getvar(uuid: str, var: str) -> str:
    return f"uuid_getvar {check_uuid(uuid)} {_check(var, VAR_NAME_RE, 'variable name')}"
