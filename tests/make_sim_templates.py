"""Regenerates fsctl/simulator/sofia_vars.py from the FreeSWITCH recordings.

    .venv/bin/python tests/make_sim_templates.py [--check]

The simulator's SIP-like legs carry the channel variables a real sofia leg carries. This
script takes them from ``sip_both_legs.rx`` (two answered sofia legs; leg B's far end
sends the BYE) and ``a_busy.rx`` (an INVITE refused with 486), phase by phase (the event
where each variable first appears), keeps only mod_sofia's own variables (every name
seen on a ``null/`` leg in any recording is FreeSWITCH core, which the simulator's model
sets itself, as are the few in ``MODEL_SETS``), and turns each per-call value (uuids,
numbers, ports, tags, call ids, SDP session ids) into a ``str.format`` field. Every
template is checked by rendering it with the other leg's values: it must give exactly
what that leg carried. ``--check`` fails if the module on disk differs.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from sim_replay import load_scenario

from fsctl.wire import Event, url_decode

REPO = Path(__file__).resolve().parent.parent
TARGET = REPO / "fsctl" / "simulator" / "sofia_vars.py"
SIP_RECORDING = "sip_both_legs"
REFUSED_RECORDING = "a_busy"
ALL_RECORDINGS = ("a_busy", "a_hangs_up_while_b_rings", "a_no_answer", "b_fails_after_a",
                  "park_timeout", "seq_a_first_ok", "seq_a_first_ok_wait_job", "show_channels",
                  "simultaneous_ok", "sip_both_legs")
MODEL_SETS = frozenset({
    "sip_hangup_disposition", "sip_invite_failure_status", "sip_invite_failure_phrase",
    "sip_term_status", "sip_term_cause", "proto_specific_hangup_cause", "sip_hangup_phrase",
    "last_bridge_proto_specific_hangup_cause",
})
"""sofia-only names whose values fsctl/simulator/model.py computes (causes, codecs)."""
FAR_HOST_VARS = frozenset({
    "sip_reply_host", "sip_network_ip", "sip_recover_contact", "sip_full_to", "sip_to_host",
    "sip_to_uri", "sip_contact_uri", "sip_contact_host", "sip_destination_url", "sip_req_uri",
    "switch_r_sdp", "remote_media_ip",
})
"""Variables whose 127.0.0.1 is the far end's address (elsewhere it is FreeSWITCH's own)."""


def var_events(name: str, leg: str) -> list[tuple[str, dict[str, str]]]:
    """(event name, variables) of every event of ``leg`` that carries variables."""
    sc = load_scenario(name)
    uuid = next(u for u, label in sc.legs.items() if label == leg)
    out = []
    for frame in sc.rx_frames:
        ev = frame.event
        if ev is None or ev.get("Unique-ID") != uuid:
            continue
        variables = variables_of(ev)
        if variables:
            out.append((ev.name, variables))
    return out


def variables_of(ev: Event) -> dict[str, str]:
    return {k[len("variable_"):]: url_decode(v) if "%" in v else v
            for k, v in ev.headers.items() if k.startswith("variable_")}


def core_names() -> set[str]:
    """Every variable name a null/ leg carried in some recording: FreeSWITCH core's."""
    names: set[str] = set()
    for rec in ALL_RECORDINGS:
        sc = load_scenario(rec)
        for leg, dial in sc.dials.items():
            if dial.startswith("null/"):
                for _, variables in var_events(rec, leg):
                    names.update(variables)
    return names


def freeswitch_names() -> set[str]:
    """Every variable name FreeSWITCH set itself on some leg of some recording (all but
    those the originate command gave the leg)."""
    names: set[str] = set()
    for rec in ALL_RECORDINGS:
        for leg in load_scenario(rec).dials:
            requested = set(request_names(rec, leg))
            for _, variables in var_events(rec, leg):
                names.update(k for k in variables if k not in requested)
    return names


def request_names(name: str, leg: str) -> list[str]:
    sc = load_scenario(name)
    for c in sc.commands:
        m = re.search(r"originate \{([^}]*)\}", c["cmd"])
        if m and f"fsctl_leg={leg}" in m.group(1):
            return [item.split("=", 1)[0] for item in m.group(1).split(",")]
    raise SystemExit(f"{name}: no originate for leg {leg}")


def fields_of(name: str, leg: str) -> dict[str, str]:
    """The per-call values of one recorded sofia leg, by field name."""
    sc = load_scenario(name)
    dial = sc.dials[leg]
    uuid = next(u for u, label in sc.legs.items() if label == leg)
    last = {}
    for _, variables in var_events(name, leg):
        last.update(variables)
    target = dial.rsplit("/", 1)[1]
    user, _, hostport = target.partition("@")
    host, _, port = hostport.partition(":")
    fields = {"uuid": uuid, "req_uri": target, "dest": user, "far_host": host,
              "far_port": port or "5060", "profile": dial.split("/")[1],
              "cid_num": last.get("sip_from_user", "0000000000")}
    for var, field in (("local_media_port", "local_media_port"),
                       ("remote_media_port", "remote_media_port"), ("sip_call_id", "call_id"),
                       ("sip_from_tag", "from_tag"), ("sip_to_tag", "to_tag"),
                       ("sip_cseq", "cseq"), ("rtp_use_ssrc", "ssrc"),
                       ("rtp_audio_in_skip_packet_count", "rtp_in_skip_packets")):
        if var in last:
            fields[field] = last[var]
    via = re.search(r"branch=(z9hG4bK[^;\s]+)", last.get("sip_full_via", ""))
    if via:
        fields["via_branch"] = via.group(1)
    for var, prefix in (("rtp_local_sdp_str", "local_sdp"), ("switch_r_sdp", "remote_sdp")):
        m = re.search(r"o=\S+ (\d+) (\d+) ", last.get(var, ""))
        if m:
            fields[f"{prefix}_id"], fields[f"{prefix}_version"] = m.group(1), m.group(2)
    return fields


def templatize(var: str, value: str, fields: dict[str, str]) -> str:
    """``value`` with every per-call part replaced by its ``{field}``."""
    out = value.replace("{", "{{").replace("}", "}}")
    # longest first, so that a number inside a longer value is replaced as part of it
    for field, literal in sorted(fields.items(), key=lambda kv: -len(kv[1])):
        if field in ("far_host", "profile", "cid_num", "dest") or not literal:
            continue
        out = re.sub(rf"(?<![0-9A-Za-z]){re.escape(literal)}(?![0-9A-Za-z])",
                     "{" + field + "}", out)
    if fields["profile"] in out and ("profile" in var or var == "channel_name"):
        out = out.replace(fields["profile"], "{profile}")
    if var in ("sip_from_user", "sip_from_uri", "sip_full_from"):
        out = out.replace(fields["cid_num"], "{cid_num}")
    if var == "sip_to_user":
        out = "{dest}"
    if var in FAR_HOST_VARS:
        out = out.replace(fields["far_host"], "{far_host}")
    return out


def phase_templates() -> dict[str, list[tuple[str, str]]]:
    core = core_names() | MODEL_SETS
    fields = fields_of(SIP_RECORDING, "A")
    events = var_events(SIP_RECORDING, "A")
    by_event = {}
    seen: dict[str, str] = {}
    for name, variables in events:
        new = {k: v for k, v in variables.items() if k not in seen or seen[k] != v}
        by_event.setdefault(name, new)
        seen.update(variables)
    requested = set(request_names(SIP_RECORDING, "A"))
    create = list(by_event["CHANNEL_CREATE"].items())
    first_req = next(i for i, (k, _) in enumerate(create) if k in requested)
    phases: dict[str, list[tuple[str, str]]] = {
        "CREATE_BEFORE_REQUEST": [(k, v) for k, v in create[:first_req] if k not in core],
        "CREATE_AFTER_REQUEST": [(k, v) for k, v in create[first_req:]
                                 if k not in core and k not in requested],
        "RING": [(k, v) for k, v in by_event["CHANNEL_PROGRESS"].items() if k not in core],
        "ANSWER": [(k, v) for k, v in by_event["CHANNEL_ANSWER"].items() if k not in core],
        "RTP_STATS": [(k, v) for k, v in by_event["CHANNEL_HANGUP_COMPLETE"].items()
                      if k.startswith("rtp_audio_")],
    }
    templates = {phase: [(k, templatize(k, v, fields)) for k, v in pairs]
                 for phase, pairs in phases.items()}
    busy_fields = fields_of(REFUSED_RECORDING, "A")
    busy = dict(var_events(REFUSED_RECORDING, "A"))
    templates["REFUSE"] = [(k, templatize(k, v, busy_fields))
                           for k, v in busy["CHANNEL_HANGUP"].items()
                           if k not in core and k not in dict(create)]
    check(templates)
    return templates


def check(templates: dict[str, list[tuple[str, str]]]) -> None:
    """Rendering with leg B's values gives exactly what leg B carried."""
    fields = fields_of(SIP_RECORDING, "B")
    carried: dict[str, str] = {}
    for _, variables in var_events(SIP_RECORDING, "B"):
        for k, v in variables.items():
            carried.setdefault(k, v)
    progress = dict(var_events(SIP_RECORDING, "B"))["CHANNEL_PROGRESS"]
    for phase, pairs in templates.items():
        if phase == "REFUSE":
            continue
        for k, template in pairs:
            want = progress[k] if phase == "RING" else carried[k]
            got = template.format_map(fields)
            if got != want:
                raise SystemExit(f"{phase} {k}: template {template!r} gives {got!r} for leg B, "
                                 f"which carried {want!r}")
    busy_fields = fields_of(REFUSED_RECORDING, "A")
    busy = dict(var_events(REFUSED_RECORDING, "A"))["CHANNEL_HANGUP"]
    for k, template in templates["REFUSE"]:
        if template.format_map(busy_fields) != busy[k]:
            raise SystemExit(f"REFUSE {k}: template {template!r} does not round-trip")


def render_module(templates: dict[str, list[tuple[str, str]]]) -> str:
    fs_names = sorted(freeswitch_names())
    docs = {
        "CREATE_BEFORE_REQUEST": "On CHANNEL_CREATE, before the originate's own variables.",
        "CREATE_AFTER_REQUEST": "On CHANNEL_CREATE, after the originate's own variables.",
        "RING": "Set by the far end's 180 Ringing (first seen on CHANNEL_PROGRESS).",
        "ANSWER": "Set by the 200 OK and its SDP (first seen on CHANNEL_ANSWER).",
        "REFUSE": "Set by a final refusal (486 …); those a 180 set already stay as they are.",
        "RTP_STATS": "The RTP statistics of an answered leg (CHANNEL_HANGUP_COMPLETE).",
    }
    fields = sorted({m for pairs in templates.values() for _, t in pairs
                     for m in re.findall(r"(?<!\{)\{(\w+)\}", t)})
    lines = [
        '"""mod_sofia\'s own channel variables on an outbound SIP leg, phase by phase, and the',
        "names of every variable FreeSWITCH set by itself in the recordings.",
        "",
        "GENERATED by tests/make_sim_templates.py from the recordings in",
        f"tests/fixtures/freeswitch (FreeSWITCH 1.11.3; the templates from {SIP_RECORDING}.rx",
        f"and {REFUSED_RECORDING}.rx): do not edit, run it again. Values are ``str.format``",
        "templates; their fields are the per-call values of fsctl/simulator/sipcall.py.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "Template = tuple[tuple[str, str], ...]",
        '"""(variable name, value template) in the order FreeSWITCH sets them."""',
        "",
        "FIELDS = frozenset({",
        *[f"    {f!r}," for f in fields],
        "})",
        '"""Every field the templates use."""',
        "",
        "FREESWITCH_VARIABLES = frozenset({",
        *[f"    {n!r}," for n in fs_names],
        "})",
        '"""Every variable name FreeSWITCH set on a leg by itself in the recordings (not those',
        'the originate command gave it): all the simulator ever sets on its own."""',
    ]
    for phase, pairs in templates.items():
        lines += ["", f"{phase}: Template = ("]
        lines += [f"    ({k!r}, {v!r})," for k, v in pairs]
        lines += [")", f'"""{docs[phase]}"""']
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="fail if sofia_vars.py is stale")
    args = ap.parse_args()
    text = render_module(phase_templates())
    if args.check:
        if TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is stale: run tests/make_sim_templates.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
