"""Regenerates fsctl/simulator/sofia_vars.py from the FreeSWITCH recordings.

    .venv/bin/python tests/make_sim_templates.py [--check]

The simulator's SIP-like legs carry the channel variables a real sofia leg carries. This
script takes them, phase by phase (the event where each variable first appears), from the
recordings of each sofia profile (:data:`PROFILES`): ``internal`` (FreeSWITCH 1.11.3,
``sip_both_legs.rx``: two answered legs, leg B's far end sends the BYE) and ``fsctl`` (the
profile of freeswitch-conf/ on FreeSWITCH 1.11.1 with the sipp switchboard as far end,
``sip_far_end_bye.rx``, and ``sip_early_media.rx`` for a 183 with SDP before the 200). A
refused INVITE (``a_busy.rx``, 486 without a 180 first) gives the variables of a refusal,
every recording the phrases of the INVITE failures it shows. Only mod_sofia's own variables
are kept (every name seen on a ``null/`` leg in any recording is FreeSWITCH core, which the
simulator's model sets itself, as are the few in ``MODEL_SETS``); each per-call value (uuids,
numbers, ports, tags, call ids, SDP session ids) becomes a ``str.format`` field.

A phase no recording of a profile shows (early media on ``internal``) is derived by the rule
the other profile's recording shows (:func:`derive_early_media`), and the rule is checked
against that recording. Every template is checked against every recorded sofia leg of its
profile that went through its phase: rendered with that leg's values it must give exactly
what the leg carried. ``--check`` fails if the module on disk differs.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from sim_replay import Scenario, load_scenario

from fsctl.wire import Event, url_decode

REPO = Path(__file__).resolve().parent.parent
TARGET = REPO / "fsctl" / "simulator" / "sofia_vars.py"


@dataclass(frozen=True)
class ProfileSource:
    """The recordings one sofia profile's templates come from (leg A of each)."""

    answered: str
    """Answered and bridged: CHANNEL_CREATE, the 180, the 200, the RTP statistics."""
    early_media: str | None
    """A 183 with SDP, then the 200; None: derived (derive_early_media)."""
    version: str
    """The FreeSWITCH that made them (for the module's docs)."""


PROFILES = {
    "internal": ProfileSource("sip_both_legs", None, "1.11.3"),
    "fsctl": ProfileSource("sip_far_end_bye", "sip_early_media", "1.11.1"),
}
DEFAULT_PROFILE = "internal"
"""Whose templates every other profile (gateway, user/ …) gets."""
REFUSED_RECORDING = "a_busy"
ALL_RECORDINGS = ("a_busy", "a_hangs_up_while_b_rings", "a_no_answer", "b_fails_after_a",
                  "park_timeout", "seq_a_first_ok", "seq_a_first_ok_wait_job", "show_channels",
                  "simultaneous_ok", "sip_both_legs", "sip_busy", "sip_no_answer",
                  "sip_far_end_bye", "sip_early_media", "sip_unavailable_480",
                  "sip_not_found_404", "sip_service_unavailable_503", "throttle")
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
PHASES = {
    "create_before_request": "On CHANNEL_CREATE, before the originate's own variables.",
    "create_after_request": "On CHANNEL_CREATE, after the originate's own variables.",
    "ring": "Set by the far end's 180 Ringing (first seen on CHANNEL_PROGRESS).",
    "early_media": "Set by a 183 with SDP (first seen on CHANNEL_PROGRESS_MEDIA).",
    "answer": "Set by the 200 OK and its SDP (first seen on CHANNEL_ANSWER).",
    "answer_after_early_media": "Set by the 200 OK after a 183 with SDP (CHANNEL_ANSWER).",
    "rtp_stats": "The RTP statistics of an answered leg (CHANNEL_HANGUP_COMPLETE).",
}
"""The fields of sofia_vars.Phases: one template per phase of an outbound sofia leg."""
PHASE_EVENTS = {"create_before_request": "CHANNEL_CREATE",
                "create_after_request": "CHANNEL_CREATE", "ring": "CHANNEL_PROGRESS",
                "early_media": "CHANNEL_PROGRESS_MEDIA", "answer": "CHANNEL_ANSWER",
                "answer_after_early_media": "CHANNEL_ANSWER",
                "rtp_stats": "CHANNEL_HANGUP_COMPLETE"}
"""The event whose variables a phase's template must give."""
Templates = dict[str, list[tuple[str, str]]]


@functools.cache
def scenario(name: str) -> Scenario:
    return load_scenario(name)


def var_events(name: str, leg: str) -> list[tuple[str, dict[str, str]]]:
    """(event name, variables) of every event of ``leg`` (every attempt of it) that
    carries variables."""
    sc = scenario(name)
    uuids = {u for u, label in sc.legs.items() if label == leg}
    out = []
    for frame in sc.rx_frames:
        ev = frame.event
        if ev is None or ev.get("Unique-ID") not in uuids:
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
        sc = scenario(rec)
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
        for leg in scenario(rec).dials:
            requested = set(request_names(rec, leg))
            for _, variables in var_events(rec, leg):
                names.update(k for k in variables if k not in requested)
    return names


def request_names(name: str, leg: str) -> list[str]:
    sc = scenario(name)
    for c in sc.commands:
        m = re.search(r"originate \{([^}]*)\}", c["cmd"])
        if m and f"fsctl_leg={leg}" in m.group(1):
            return [item.split("=", 1)[0] for item in m.group(1).split(",")]
    raise SystemExit(f"{name}: no originate for leg {leg}")


def fields_of(name: str, leg: str) -> dict[str, str]:
    """The per-call values of one recorded sofia leg, by field name."""
    sc = scenario(name)
    dial = sc.dials[leg]
    uuid = next(u for u, label in sc.legs.items() if label == leg)
    last: dict[str, str] = {}
    remote_sdps: list[str] = []  # every SDP of the far end, in order
    for _, variables in var_events(name, leg):
        last.update(variables)
        sdp = variables.get("switch_r_sdp")
        if sdp and sdp not in remote_sdps:
            remote_sdps.append(sdp)
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
    own = re.search(r"@127\.0\.0\.1:(\d+)$", last.get("sofia_profile_url", ""))
    if own:
        fields["local_sip_port"] = own.group(1)
    m = re.search(r"o=\S+ (\d+) (\d+) ", last.get("rtp_local_sdp_str", ""))
    if m:
        fields["local_sdp_id"], fields["local_sdp_version"] = m.group(1), m.group(2)
    versions = [re.search(r"o=\S+ (\d+) (\d+) ", sdp) for sdp in remote_sdps]
    if versions and all(versions):
        fields["remote_sdp_id"], fields["remote_sdp_version"] = versions[0].group(1, 2)
        fields["remote_sdp_next_version"] = str(int(versions[0].group(2)) + 1)
        for later in versions[1:]:  # a 200 after a 183: the SDP's version one up
            if later.group(2) != fields["remote_sdp_next_version"]:
                raise SystemExit(f"{name} leg {leg}: far-end SDP versions {remote_sdps}")
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


def first_seen(name: str, leg: str) -> dict[str, dict[str, str]]:
    """Per event name (its first occurrence on the leg): the variables new or changed there."""
    by_event: dict[str, dict[str, str]] = {}
    seen: dict[str, str] = {}
    for event, variables in var_events(name, leg):
        new = {k: v for k, v in variables.items() if k not in seen or seen[k] != v}
        by_event.setdefault(event, new)
        seen.update(variables)
    return by_event


def sofia_phases(name: str, leg: str, core: set[str]) -> Templates:
    """The templates of every phase ``leg`` of recording ``name`` went through."""
    fields = fields_of(name, leg)
    by_event = first_seen(name, leg)
    requested = set(request_names(name, leg))
    own = {event: [(k, templatize(k, v, fields)) for k, v in new.items() if k not in core]
           for event, new in by_event.items()}
    phases: Templates = {}
    if "CHANNEL_CREATE" in by_event:
        create = list(by_event["CHANNEL_CREATE"])
        first_req = next(i for i, k in enumerate(create) if k in requested)
        phases["create_before_request"] = [(k, v) for k, v in own["CHANNEL_CREATE"]
                                           if k in create[:first_req]]
        phases["create_after_request"] = [(k, v) for k, v in own["CHANNEL_CREATE"]
                                          if k in create[first_req:] and k not in requested]
    if "CHANNEL_PROGRESS" in own:
        phases["ring"] = own["CHANNEL_PROGRESS"]
    if "CHANNEL_PROGRESS_MEDIA" in own:
        phases["early_media"] = own["CHANNEL_PROGRESS_MEDIA"]
    if "CHANNEL_ANSWER" in own:
        early = "CHANNEL_PROGRESS_MEDIA" in own
        phases["answer_after_early_media" if early else "answer"] = own["CHANNEL_ANSWER"]
        phases["rtp_stats"] = [(k, v) for k, v in own["CHANNEL_HANGUP_COMPLETE"]
                               if k.startswith("rtp_audio_")]
    return phases


def derive_early_media(phases: Templates) -> Templates:
    """The 183-with-SDP phases from a profile's 180 and 200 (the rule sip_early_media.rx
    shows): the 183 sets what a 180 sets, the codec string of its SDP right after the far
    end's address and the SDP itself last; the 200 after it what a plain 200 sets but
    those, and its SDP again, one version up."""
    answer = dict(phases["answer"])
    early: list[tuple[str, str]] = []
    for k, v in phases["ring"]:
        early.append((k, v))
        if k == "sip_network_port":
            early.append(("ep_codec_string", answer["ep_codec_string"]))
    early.append(("switch_r_sdp", answer["switch_r_sdp"]))
    set_early = dict(early)
    after = [(k, v) for k, v in phases["answer"] if k not in set_early]
    after.append(("switch_r_sdp", answer["switch_r_sdp"].replace(
        "{remote_sdp_version}", "{remote_sdp_next_version}")))
    return {"early_media": early, "answer_after_early_media": after}


def profile_templates(source: ProfileSource, core: set[str]) -> Templates:
    phases = sofia_phases(source.answered, "A", core)
    derived = derive_early_media(phases)
    if source.early_media is None:
        phases.update(derived)
        return phases
    recorded = sofia_phases(source.early_media, "A", core)
    for phase, pairs in derived.items():
        if recorded[phase] != pairs:
            raise SystemExit(f"{source.early_media} {phase}: the early-media rule gives "
                             f"{pairs}, the recording {recorded[phase]}")
    phases.update({phase: recorded[phase] for phase in derived})
    return phases


def refuse_template(core: set[str]) -> list[tuple[str, str]]:
    """Set by a final refusal that no 180 preceded (those a 180 set already stay)."""
    fields = fields_of(REFUSED_RECORDING, "A")
    by_event = first_seen(REFUSED_RECORDING, "A")
    return [(k, templatize(k, v, fields)) for k, v in by_event["CHANNEL_HANGUP"].items()
            if k not in core and k not in by_event["CHANNEL_CREATE"]]


def invite_failure_phrases() -> dict[int, str]:
    """sip_invite_failure_status -> sip_invite_failure_phrase, as every recording shows them
    (a refusal's reason phrase; 487 after FreeSWITCH's own CANCEL)."""
    phrases: dict[int, str] = {}
    for rec in ALL_RECORDINGS:
        for leg in scenario(rec).dials:
            for _, variables in var_events(rec, leg):
                status = variables.get("sip_invite_failure_status")
                if status is None:
                    continue
                phrase = variables["sip_invite_failure_phrase"]
                if phrases.setdefault(int(status), phrase) != phrase:
                    raise SystemExit(f"{rec}: {status} {phrase!r} and {phrases[int(status)]!r}")
    return dict(sorted(phrases.items()))


def phase_templates() -> dict[str, Templates]:
    """Per profile its phases; under ``""`` the ones every profile shares (``refuse``)."""
    core = core_names() | MODEL_SETS
    templates = {name: profile_templates(source, core) for name, source in PROFILES.items()}
    templates[""] = {"refuse": refuse_template(core)}
    check(templates, core)
    return templates


def sofia_legs() -> list[tuple[str, str, str]]:
    """(recording, leg, profile) of every sofia leg of every recording."""
    return [(rec, leg, dial.split("/")[1]) for rec in ALL_RECORDINGS
            for leg, dial in scenario(rec).dials.items() if dial.startswith("sofia/")]


def check(templates: dict[str, Templates], core: set[str]) -> None:
    """Every recorded sofia leg: each phase it went through, rendered with its values, gives
    exactly what it carried on that phase's event; what its hangup set beyond them is the
    model's (MODEL_SETS) or a refusal's."""
    refuse = dict(templates[""]["refuse"])
    checked = 0
    for rec, leg, profile in sofia_legs():
        phases = templates.get(profile, templates[DEFAULT_PROFILE])
        fields = fields_of(rec, leg)
        carried = dict(var_events(rec, leg))
        went = sofia_phases(rec, leg, core)
        for phase, pairs in went.items():
            names = [k for k, _ in phases[phase]]
            if [k for k, _ in pairs] != names:
                raise SystemExit(f"{rec} leg {leg} {phase}: set {[k for k, _ in pairs]}, the "
                                 f"template {names}")
            want = carried[PHASE_EVENTS[phase]]
            for k, template in phases[phase]:
                got = template.format_map(fields)
                if phase == "rtp_stats" and rec != PROFILES.get(profile, PROFILES[DEFAULT_PROFILE]).answered and k in want:
                    continue  # the media a call carried: exact only for the other leg
                if got != want.get(k):
                    raise SystemExit(f"{rec} leg {leg} {phase} {k}: template {template!r} "
                                     f"gives {got!r}, the leg carried {want.get(k)!r}")
            checked += 1
        hangup = first_seen(rec, leg).get("CHANNEL_HANGUP", {})
        if rec == REFUSED_RECORDING:
            for k, template in refuse.items():
                if template.format_map(fields) != hangup[k]:
                    raise SystemExit(f"{rec} refuse {k}: template {template!r} does not "
                                     "round-trip")
        extra = {k for k in hangup if k not in core and k not in refuse}
        if extra:
            raise SystemExit(f"{rec} leg {leg}: CHANNEL_HANGUP set {sorted(extra)}, which no "
                             "template nor the model sets")
    if checked < 10:
        raise SystemExit(f"only {checked} phases checked")


def recordings(source: ProfileSource) -> str:
    if source.early_media:
        return f"{source.answered}.rx and {source.early_media}.rx"
    return f"{source.answered}.rx (early media derived)"


def render_template(name: str, pairs: list[tuple[str, str]], indent: str = "") -> list[str]:
    return [f"{indent}{name}(", *[f"{indent}    ({k!r}, {v!r})," for k, v in pairs],
            f"{indent}),"]


def render_module(templates: dict[str, Templates]) -> str:
    fs_names = sorted(freeswitch_names())
    fields = sorted({m for phases in templates.values() for pairs in phases.values()
                     for _, t in pairs for m in re.findall(r"(?<!\{)\{(\w+)\}", t)})
    sources = "; ".join(f"``{name}`` (FreeSWITCH {s.version}) from {recordings(s)}"
                        for name, s in PROFILES.items())
    lines = [
        '"""mod_sofia\'s own channel variables on an outbound SIP leg, phase by phase and per',
        "sofia profile, and the names of every variable FreeSWITCH set by itself in the",
        "recordings.",
        "",
        *textwrap.wrap(
            "GENERATED by tests/make_sim_templates.py from the recordings in "
            f"tests/fixtures/freeswitch ({sources}; the refusal from {REFUSED_RECORDING}.rx): "
            "do not edit, run it again. Values are ``str.format`` templates; their fields are "
            "the per-call values of fsctl/simulator/sipcall.py.", 92),
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import NamedTuple",
        "",
        "Template = tuple[tuple[str, str], ...]",
        '"""(variable name, value template) in the order FreeSWITCH sets them."""',
        "",
        "",
        "class Phases(NamedTuple):",
        '    """One sofia profile\'s templates, one per phase of an outbound leg."""',
        "",
    ]
    for phase, doc in PHASES.items():
        lines += [f"    {phase}: Template", f'    """{doc}"""']
    lines += [
        "",
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
        "",
        "INVITE_FAILURE_PHRASES: dict[int, str] = {",
        *[f"    {status}: {phrase!r}," for status, phrase in invite_failure_phrases().items()],
        "}",
        '"""sip_invite_failure_status -> sip_invite_failure_phrase as the recordings show them',
        '(a refusal\'s reason phrase; 487 after FreeSWITCH\'s own CANCEL)."""',
        "",
        "REFUSE: Template = (",
        *[f"    ({k!r}, {v!r})," for k, v in templates[""]["refuse"]],
        ")",
        '"""Set by a final refusal (486 …); those a 180 set already stay as they are."""',
    ]
    for name, source in PROFILES.items():
        lines += ["", f"{name.upper()} = Phases("]
        for phase in PHASES:
            lines += render_template(phase + "=", templates[name][phase], "    ")
        lines += [")", f'"""The ``{name}`` profile\'s, from {recordings(source)}."""']
    lines += [
        "",
        "PROFILES: dict[str, Phases] = {",
        *[f"    {name!r}: {name.upper()}," for name in PROFILES],
        "}",
        '"""Each recorded profile\'s templates, by sofia profile name."""',
        f"DEFAULT = {DEFAULT_PROFILE.upper()}",
        '"""The templates of every other profile (gateway, user/ … legs)."""',
    ]
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
