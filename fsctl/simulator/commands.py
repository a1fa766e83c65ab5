"""The ``api`` commands of the simulator (mod_commands' replies, byte for byte where recorded)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .config import normalize_cause

if TYPE_CHECKING:
    from .server import Simulator

Deferred = Callable[[], None]
ApiResult = str | tuple[str, Deferred]
ApiHandler = Callable[["Simulator", str], ApiResult]

NO_CHANNEL = "-ERR No such channel!\n"
VERSION = "FreeSWITCH (Version 1.11.3-dev fsctl-simulator 64bit)"


def _uuid_kill(sim: Simulator, arg: str) -> ApiResult:
    parts = arg.split()
    if not parts:
        return "-USAGE: <uuid> [cause]\n"
    ch = sim.model.channels.get(parts[0])
    if ch is None:
        return NO_CHANNEL
    sim.model.hangup(ch, normalize_cause(parts[1] if len(parts) > 1 else None))
    return "+OK\n"


def _uuid_bridge(sim: Simulator, arg: str) -> ApiResult:
    parts = arg.split()
    if len(parts) != 2:
        return "-USAGE: <uuid> <other_uuid>\n"
    a = sim.model.channels.get(parts[0])
    b = sim.model.channels.get(parts[1])
    if sim.trace is not None:
        sim.trace.bridge(parts[0], parts[1])
    if a is None or b is None or not sim.model.can_bridge(a, b):
        return "-ERR Invalid uuid\n"
    return f"+OK {parts[1]}\n", lambda: sim.model.bridge(a, b)


def _uuid_broadcast(sim: Simulator, arg: str) -> ApiResult:
    parts = arg.split()
    if len(parts) < 2:
        return "-USAGE: <uuid> <path> [aleg|bleg|both]\n"
    ch = sim.model.channels.get(parts[0])
    if ch is None:
        return NO_CHANNEL
    return "+OK Message sent\n", lambda: sim.model.broadcast(ch, parts[1])


def _uuid_break(sim: Simulator, arg: str) -> ApiResult:
    parts = arg.split()
    ch = sim.model.channels.get(parts[0]) if parts else None
    if ch is None:
        return NO_CHANNEL
    return "+OK\n", lambda: sim.model.stop_playback(ch)


def _uuid_exists(sim: Simulator, arg: str) -> ApiResult:
    return "true" if arg.strip() in sim.model.channels else "false"


def _uuid_getvar(sim: Simulator, arg: str) -> ApiResult:
    parts = arg.split()
    if len(parts) < 2:
        return "-USAGE: <uuid> <var>\n"
    ch = sim.model.channels.get(parts[0])
    if ch is None:
        return NO_CHANNEL
    value = ch.get_var(parts[1])
    return value if value else "_undef_"


def _uuid_setvar(sim: Simulator, arg: str) -> ApiResult:
    parts = arg.split(None, 2)
    if len(parts) < 2:
        return "-USAGE: <uuid> <var> [value]\n"
    ch = sim.model.channels.get(parts[0])
    if ch is None:
        return NO_CHANNEL
    if len(parts) == 3:
        ch.set_var(parts[1], parts[2])
    else:
        ch.del_vars(parts[1])
        ch.set_var("uuid", ch.uuid)
    return "+OK\n"


def _uuid_dump(sim: Simulator, arg: str) -> ApiResult:
    parts = arg.split()
    ch = sim.model.channels.get(parts[0]) if parts else None
    if ch is None:
        return NO_CHANNEL
    segments = sim.factory.head("CHANNEL_DATA", calling="API") + ch.segments(True)
    if len(parts) > 1 and parts[1] == "json":
        obj: dict[str, str] = {}
        for _, pairs in segments:
            for k, v in pairs:
                obj.setdefault(k, v)
        return json.dumps(obj, indent="\t")
    return "".join(text for text, _ in segments) + "\n"


def _show(sim: Simulator, arg: str) -> ApiResult:
    words = arg.split()
    as_json = len(words) >= 2 and words[-2] == "as" and words[-1] == "json"
    if as_json:
        words = words[:-2]
    if not words or words[0] not in ("channels", "calls"):
        return "-USAGE: show channels [like <match string>] [as json]\n"
    like = words[2] if len(words) >= 3 and words[1] == "like" else None
    rows = []
    for ch in list(sim.model.channels.values()):
        if not ch.exists or ch.gone:
            continue
        row = ch.show_row(sim.config.hostname)
        if like is not None and not any(
            like in row[k] for k in ("uuid", "name", "cid_name", "cid_num", "presence_data")
        ):
            continue
        rows.append(row)
    if as_json:
        if not rows:
            return '{"row_count": 0}\n'
        return json.dumps({"row_count": len(rows), "rows": rows}, separators=(",", ":"))
    if not rows:
        return "\n0 total.\n"
    header = ",".join(rows[0].keys())
    lines = [header] + [",".join(r.values()) for r in rows]
    return "\n".join(lines) + f"\n\n{len(rows)} total.\n"


def _hupall(sim: Simulator, arg: str) -> ApiResult:
    parts = arg.split()
    cause = normalize_cause(parts[0] if parts else None)
    var = parts[1] if len(parts) > 1 else None
    value = parts[2] if len(parts) > 2 else None
    for ch in list(sim.model.channels.values()):
        if var is None or ch.vars.get(var) == value:
            sim.model.hangup(ch, cause)
    if var is None:
        return f"+OK hangup all channels with cause {cause}\n"
    return f"+OK hangup all channels matching [{var}]=[{value}] with cause: {cause}\n"


def _sched_hangup(sim: Simulator, arg: str) -> ApiResult:
    parts = arg.split()
    if len(parts) < 2:
        return "-USAGE: [+]<time> <uuid> [<cause>]\n"
    when, uuid = parts[0], parts[1]
    try:
        delay = float(when[1:]) if when.startswith("+") else float(when) - time.time()
    except ValueError:
        return "-USAGE: [+]<time> <uuid> [<cause>]\n"
    ch = sim.model.channels.get(uuid)
    if ch is None:
        return NO_CHANNEL
    cause = normalize_cause(parts[2] if len(parts) > 2 else "ALLOTTED_TIMEOUT")
    sim.model.later(ch, delay, lambda c: sim.model.hangup(c, cause))
    return "+OK\n"


def _uuid_send_dtmf(sim: Simulator, arg: str) -> ApiResult:
    """FreeSWITCH 1.11's answers, recorded from the real one: ``+OK <uuid> sent DTMF
    <digits>.`` or ``-ERR Cannot locate session!``; the digits go to :attr:`Simulator.dtmf`."""
    parts = arg.split()
    if len(parts) != 2:
        return "-USAGE: <uuid> <dtmf_data>\n"
    uuid, digits = parts
    if uuid not in sim.model.channels:
        return "-ERR Cannot locate session!\n"
    sim.dtmf.append((uuid, digits, time.time()))
    return f"+OK {uuid} sent DTMF {digits}.\n"


def _uuid_record(sim: Simulator, arg: str) -> ApiResult:
    """``uuid_record <uuid> start <path>``: FreeSWITCH 1.11 answers ``+OK Success``; at the
    hangup the channel carries record_ms / record_samples (8 kHz), as the real one's does."""
    parts = arg.split()
    if len(parts) != 3 or parts[1] != "start":
        return "-USAGE: <uuid> [start|stop|mask|unmask] <path> [<limit>] [<recording_vars>]\n"
    ch = sim.model.channels.get(parts[0])
    if ch is None:
        return "-ERR Cannot locate session!\n"
    ch.recording_since = time.monotonic()
    return "+OK Success\n"


def _status(sim: Simulator, arg: str) -> ApiResult:
    return (
        f"UP {sim.uptime_text()}\n{VERSION} is ready\n"
        f"{sim.limits.status_lines(len(sim.model.channels))}"
        "min idle cpu 0.00/99.00\nCurrent Stack Size/Max 240K/8192K\n"
    )


def _global_getvar(sim: Simulator, arg: str) -> ApiResult:
    name = arg.strip()
    if name == "core_uuid":
        return sim.core_uuid
    if name == "hostname":
        return sim.config.hostname
    return sim.global_vars.get(name, "")


def _global_setvar(sim: Simulator, arg: str) -> ApiResult:
    name, _, value = arg.partition("=")
    if not name.strip():
        return "-USAGE: <var>=<value>\n"
    sim.global_vars[name.strip()] = value
    return "+OK\n"


def _version(sim: Simulator, arg: str) -> ApiResult:
    return f"{VERSION}\n"


def _hostname(sim: Simulator, arg: str) -> ApiResult:
    return sim.config.hostname


def heartbeat_pairs(sim: Simulator) -> list[tuple[str, str]]:
    limits = sim.limits
    uptime_ms = int((time.time() - sim.started_at) * 1000)
    return [
        ("Event-Info", "System Ready"),
        ("Up-Time", sim.uptime_text()),
        ("FreeSWITCH-Version", "1.11.3-dev"),
        ("Uptime-msec", str(uptime_ms)),
        ("Session-Count", str(len(sim.model.channels))),
        ("Max-Sessions", str(limits.max_sessions)),
        ("Session-Per-Sec", str(limits.sps_total)),
        ("Session-Since-Startup", str(limits.since_startup)),
        ("Session-Peak-Max", str(limits.sessions_peak)),
        ("Idle-CPU", "99.000000"),
    ]


API_COMMANDS: dict[str, ApiHandler] = {
    "uuid_kill": _uuid_kill,
    "uuid_bridge": _uuid_bridge,
    "uuid_broadcast": _uuid_broadcast,
    "uuid_break": _uuid_break,
    "uuid_exists": _uuid_exists,
    "uuid_getvar": _uuid_getvar,
    "uuid_setvar": _uuid_setvar,
    "uuid_dump": _uuid_dump,
    "show": _show,
    "hupall": _hupall,
    "sched_hangup": _sched_hangup,
    "uuid_send_dtmf": _uuid_send_dtmf,
    "uuid_record": _uuid_record,
    "status": _status,
    "global_getvar": _global_getvar,
    "global_setvar": _global_setvar,
    "version": _version,
    "hostname": _hostname,
}
