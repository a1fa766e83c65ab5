"""Hostile inputs through the HTTP API and the redis-cli path, against the real stack.

At least 100,000 generated inputs (``FSCTL_INJECTION_EXAMPLES`` scales the total) go through
one Stack: a real redis-server, the simulator over TCP, the worker, the API over HTTP
(one keep-alive connection). Every value of a request is attacked: CR/LF/NUL, each of
``{}[]<>,|&'"\\$^%@;:``, ``:_:``, ``^^:``, ``${…}``, ``reload mod_event_socket``, the proven
``x,api_on_answer=system\\stouch\\spwned`` chain, ``\\n\\nbgapi originate …``, 20 kB strings,
unicode (RTL, combining, emoji, lone surrogates, fullwidth digits), valid numbers with a payload,
wrong JSON types, extra keys, nested objects. A small share of valid requests is accepted
and really dialled (routes that end at once; the rest are cancelled).

Per input: the API answers 202 or a 4xx JSON error — never 5xx, never a hang — and exactly
what the independent oracle below expects; a rejected input enqueues and stores nothing; a
redis-cli job the oracle rejects lands in ``fsctl:jobs:dead`` with a reason.
At the end, over every command the simulator received: nothing but the forms fsctl sends,
one originate per leg the Redis records say was dialled, each built from that record, no
channel variable and no dial string other than fsctl's own and the route templates'.
"""

from __future__ import annotations

import copy
import http.client
import json
import logging
import os
import random
import re
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import gevent
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stack import TEST_ROUTES, Stack

from fsctl.commands import RINGBACK_TONES
from fsctl.events import SUBSCRIBED_EVENTS
from fsctl.intake import JOB_NAMESPACE
from fsctl.simulator import FREESWITCH_VARIABLES
from fsctl.simulator.channel import Channel

pytestmark = pytest.mark.integration

TOTAL = int(os.environ.get("FSCTL_INJECTION_EXAMPLES", "100000"))
SHARE = {"http_fields": 0.38, "http_raw": 0.14, "redis_fields": 0.36, "redis_raw": 0.12}
"""How the total is split across the @given tests (sums to 1)."""
ACCEPT_BUDGET = {"http": max(1, min(250, TOTAL // 300)), "redis": max(1, min(150, TOTAL // 500))}
"""Most valid requests accepted per path; beyond, a valid request gets an extra key (invalid)."""
CANCEL_AFTER_S = 1.5
"""An accepted callback still live after this long is cancelled (DELETE)."""
BASE = "/voice/call/callback"


def examples(name: str) -> int:
    """Hypothesis examples of one test (each one a batch of BATCH inputs)."""
    return max(1, round(TOTAL * SHARE[name] / BATCH))


def run_settings(name: str) -> settings:
    return settings(max_examples=examples(name), deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


# ---- the specification, independently of fsctl's code ---------------------------------

ROUTES: dict[str, dict[str, Any]] = TEST_ROUTES["routes"]
DEFAULT_ROUTE: str = TEST_ROUTES["default_route"]
ROUTE_NAMES = sorted(ROUTES)
FAST_ROUTES = ["answer", "busy", "reject", "ring", "user"]
TOP_KEYS = {"leg_A", "leg_B", "mode", "first", "metadata", "waiting_media", "record"}
COUNTRIES = ("au", "de", "eu", "fr", "uk", "us")
LEG_KEYS = {"to", "from", "caller_id_name", "route", "ring_timeout", "send_dtmf"}
DTMF = re.compile(r"[0-9*#wW]{1,32}")
NUMBER = re.compile(r"\+?[0-9]{2,20}")
CALLER_NAME = re.compile(r"[A-Za-z0-9._-]{1,40}")
MAX_BODY_BYTES = 16 * 1024
MAX_JSON_DEPTH = 4
METADATA_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,39}")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def destination_allowed(route: str, to: str) -> bool:
    """README: a number 2-20 digits; a route's policy denies by default, allows its patterns."""
    spec = ROUTES[route]
    if not NUMBER.fullmatch(to):
        return False
    digits = to.removeprefix("+")
    if any(digits.startswith(p.lstrip("+")) for p in spec.get("deny_prefixes", [])):
        return False
    return (any(digits.startswith(p.lstrip("+")) for p in spec.get("allow_prefixes", []))
            or any(re.fullmatch(p, to) for p in spec.get("allow", [])))


def leg_valid(leg: Any) -> bool:
    if not isinstance(leg, dict) or not set(leg) <= LEG_KEYS:
        return False
    route = leg.get("route", DEFAULT_ROUTE)
    if not isinstance(route, str) or route not in ROUTES:
        return False
    to = leg.get("to")
    if not isinstance(to, str) or not destination_allowed(route, to):
        return False
    if "from" in leg and not (isinstance(leg["from"], str) and NUMBER.fullmatch(leg["from"])):
        return False
    name = leg.get("caller_id_name", "x")
    if not (isinstance(name, str) and CALLER_NAME.fullmatch(name)):
        return False
    digits = leg.get("send_dtmf", "1")
    if not (isinstance(digits, str) and DTMF.fullmatch(digits)):
        return False
    timeout = leg.get("ring_timeout", 30)
    return type(timeout) is int and 5 <= timeout <= 300


def utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate ("\udc80" in the JSON)
        return False
    return True


def metadata_valid(meta: Any) -> bool:
    """README: a flat object, at most 20 keys of 1-40 A-Z a-z 0-9 _ . - (not first . or -),
    string values (Unicode text) up to 256 characters without control characters, 2048 bytes
    as JSON."""
    if not isinstance(meta, dict) or len(meta) > 20:
        return False
    if not all(isinstance(k, str) and METADATA_KEY.fullmatch(k) and isinstance(v, str)
               and len(v) <= 256 and not CONTROL.search(v) and utf8(v) for k, v in meta.items()):
        return False
    return len(json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode()) <= 2048


def request_valid(body: Any) -> bool:
    """The oracle: README's request contract with the test routes' destination policy."""
    if not isinstance(body, dict) or not set(body) <= TOP_KEYS:
        return False
    if "metadata" in body and not metadata_valid(body["metadata"]):
        return False
    if body.get("record", False) is not False:  # no FSCTL_RECORDING_DIR here: never recorded
        return False
    media = body.get("waiting_media", {})  # no media is configured here: ringback only
    if not (isinstance(media, dict) and set(media) <= {"ringback"}
            and media.get("ringback", "us") in COUNTRIES):
        return False
    if not (leg_valid(body.get("leg_A")) and leg_valid(body.get("leg_B"))):
        return False
    if body.get("mode", "sequential") not in ("sequential", "simultaneous"):
        return False
    if body.get("first", "A") not in ("A", "B"):
        return False
    return bool(body["leg_A"]["to"] != body["leg_B"]["to"])


def json_depth(value: Any) -> int:
    if isinstance(value, dict | list):
        items = value.values() if isinstance(value, dict) else value
        return 1 + max((json_depth(v) for v in items), default=0)
    return 0


# ---- hostile strategies ------------------------------------------------------------------
# Hypothesis costs ~0.6 ms per example whatever it draws, and building a strategy inside a
# draw costs far more: every strategy below is built once, pools are precomputed, and one
# example is a batch of BATCH inputs (each one sent, checked and counted on its own).

BATCH = 20
"""Inputs per hypothesis example."""

ATOMS = [
    "\n", "\r", "\r\n", "\x00", "\n\n", "\t", " ", *"{}[]<>,|&'\"\\$^%@;:", ":_:", "^^:",
    "^^:a=b:c=d", "${api system touch pwned}", "${sofia_contact(*/1000)}", "$${hostname}",
    "reload mod_event_socket", "unload mod_event_socket", "api_on_answer=system\\stouch\\spwned",
    "x,api_on_answer=system\\stouch\\spwned", ",execute_on_answer=bridge(sofia/gateway/x/1)",
    "\n\nbgapi originate {origination_uuid=6f1d2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b}null/666 &park()\n\n",
    "\n\nbgapi originate sofia/gateway/carrier/0900666 &park()", "\napi hupall MANAGER_REQUEST",
    "\nJob-UUID: forged", "\r\nContent-Length: 999", " &bridge(sofia/gateway/x/1)",
    "sofia/gateway/carrier/0900666@evil.example", "|null/1", ",user/1", "@evil.example",
    ";transport=tcp", "[fsctl_leg=B]", "<a=b>", "{origination_uuid=x}", "%0A", "%0D%0A", "%00",
    "\\n", "\\s", "\\,", "''", "exit", "auth ClueCon", "event plain ALL", "\u202e", "\u200f",
    "\u0301", "\U0001f4a9", "\ufeff", "\u2028", "\u2029", "\u0085", "\uff11\uff12\uff13",
    "\u0663\u0664", "\x1b[2J", "\udc80", "\ud800", "\x7f", "NaN", "-1", "1e3", "0x10",
]
NAME_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
HOSTILE_KEYS = [
    "api_on_answer", "execute_on_answer", "origination_caller_id_name", "origination_uuid",
    "sip_h_X-Evil", "variables", "vars", "__proto__", "constructor", "to ", "To", "TO", "from_",
    "callerIdName", "leg_a", "leg_C", "legA", "mode\n", "", "$ref", "fsctl_leg", "dial_string",
    "template", "park_timeout", "owner", "id", "state", "leg_A\n", "x,api_on_answer=system",
]
FIELD_SAMPLES = {
    "to": ["1000123", "+10001234", "10012345678"], "from": ["1000125", "+1000999888"],
    "caller_id_name": ["Alice", "fsctl.test-1"], "route": ROUTE_NAMES,
    "ring_timeout": ["30"], "mode": ["sequential", "simultaneous"], "first": ["A", "B"],
    "send_dtmf": ["12#", "ww1*"],
}
NEAR: dict[str, list[Any]] = {
    "to": ["1", "+", "++1000123", "1" * 21, "+" + "1" * 21, "1000123 ", " 1000123",
           "1000123@evil.example", "19001234567", "+1900123456", "0900123456", "1000-123",
           "1000.123", "1e9", "１０００１２３", "١٠٠٠١٢٣", 1000123, 1000123.0],
    "from": ["1", "+", "1" * 21, "1000125 ", "anonymous", "1000125@evil.example", 1000125],
    "caller_id_name": ["A" * 41, "Alice Smith", "Alice,api_on_answer=x", "Zoë", "", "_undef_"],
    "route": ["ANSWER", "answer ", " answer", "../answer", "answer,busy", "answer|busy", "",
              "default", "sofia/gateway/carrier", "null/1000123", "{to}"],
    "ring_timeout": [0, 4, 5.0, 30.0, 30.5, 301, -30, 10**20, True, False, "30", " 30", "30\n",
                     [30], {"s": 30}, None, float("nan"), float("inf"), -0.0],
    "mode": ["Sequential", "SIMULTANEOUS", "parallel", "", "sequential ", 1, True],
    "first": ["a", "b", "AB", "C", "", "A ", 0, ["A"]],
    "send_dtmf": ["", "1" * 33, "12a", "1 2", "1@500", "1+2", "~1", "ABCD", "１２", 12, ["1"],
                  "1\napi hupall", "1 &bridge(user/1000)", "1,2"],
    "record": [True, "mixed", "stereo", "MIXED", 1, 0, "true", None, [], {"mode": "mixed"},
               False],
    "waiting_media": [{"ringback": "xx"}, {"ringback": "UK"}, {"ringback": "uk "},
                      {"music": "jazz"}, {"announcement": "welcome"}, {"ringback": 1},
                      {"ringback": "uk", "music": "jazz"}, {"tone": "uk"}, "uk", [], None,
                      {"music": "../etc/passwd"}, {"music": "local_stream://moh"}],
    "metadata": [{"k": 1}, {"k": None}, {"k": True}, {"k": {"x": "y"}}, {"k": ["a"]}, {"": "v"},
                 {".k": "v"}, {"-k": "v"}, {"k" * 41: "v"}, {"k\n": "v"}, {"k v": "v"},
                 {"k": "a\nb"}, {"k": "a\r"}, {"k": "\x00"}, {"k": "\x85"}, {"k": "x" * 257},
                 {f"k{i}": "v" for i in range(21)}, {f"k{i:02d}": "é" * 60 for i in range(20)},
                 {f"k{i:02d}": "v" * 100 for i in range(20)}, [], "ticket=1", None, 0],
}
WRONG_TYPES: list[Any] = [
    None, True, False, 0, -1, 2**70, -(2**70), 1.5, float("nan"), float("inf"), "", [], {},
    [None], ["1000123"], {"to": "1000123"}, {"leg_A": {"to": "1000123"}}, [[[["x"]]]],
    {"a": {"b": {"c": {"d": 1}}}}, {"$gt": ""}, {"__proto__": {"admin": True}},
]


def _splice(valid: str, payload: str, where: str) -> str:
    if where == "suffix":
        return valid + payload
    if where == "prefix":
        return payload + valid
    half = len(valid) // 2
    return valid[:half] + payload + valid[half:]


def _string_pool() -> list[str]:
    pool = list(ATOMS)
    for samples in FIELD_SAMPLES.values():  # valid-looking values with a payload
        for valid in samples:
            for atom in ATOMS:
                pool += [_splice(valid, atom, w) for w in ("suffix", "prefix", "middle")]
    pool += [a + b for a in ATOMS[:40] for b in ATOMS[::3]]
    for unit in ("1", "A", "\n", "%0A", "x,api_on_answer=system\\stouch\\spwned", "\U0001f4a9",
                 "\u202e\u0301", "\udc80", "${api system x}"):  # long, up to ~20 kB
        pool += [(unit * n)[:n] for n in (1_000, 5_000, 15_000, 20_000)]
    return pool


HOSTILE_STRINGS = _string_pool()


def _number(n: int) -> str:
    """An allowed test destination (``+?10`` and 5-8 digits) from one integer."""
    return ("+" if n & 1 else "") + "10" + str(n >> 3).zfill(8)[-(5 + (n >> 1 & 3)):]


METADATA_KEYS = ["ticket", "origination_uuid", "api_on_answer", "fsctl_leg", "x.y-z"]
METADATA_VALUES = ["CRM-1", "1000123,api_on_answer=uuid_kill", "}&bridge(user/1000)",
                   "${system(id)}", "'; drop", "Zoë ☎", "&park()", "a b"]
"""Valid metadata that looks like what reaches FreeSWITCH: the audit finds it nowhere there."""


def _valid_pool(size: int = 4000) -> list[dict[str, Any]]:
    """Valid requests (every optional key present or not), made once with a fixed seed."""
    rnd = random.Random(20261126)
    names = ["".join(rnd.choice(NAME_ALPHABET) for _ in range(rnd.randint(1, 40)))
             for _ in range(300)]
    pool = []
    for _ in range(size):
        body: dict[str, Any] = {}
        for leg in ("leg_A", "leg_B"):
            spec: dict[str, Any] = {"to": _number(rnd.getrandbits(40))}
            if rnd.random() < 0.5:
                spec["from"] = _number(rnd.getrandbits(40))
            if rnd.random() < 0.5:
                spec["caller_id_name"] = rnd.choice(names)
            if rnd.random() < 0.6:
                spec["route"] = rnd.choice(FAST_ROUTES)
            if rnd.random() < 0.4:
                spec["ring_timeout"] = rnd.randint(5, 300)
            if rnd.random() < 0.2:
                spec["send_dtmf"] = "".join(rnd.choice("0123456789*#wW")
                                            for _ in range(rnd.randint(1, 32)))
            body[leg] = spec
        if rnd.random() < 0.5:
            body["mode"] = rnd.choice(["sequential", "simultaneous"])
        if rnd.random() < 0.5:
            body["first"] = rnd.choice(["A", "B"])
        if rnd.random() < 0.3:
            body["waiting_media"] = {"ringback": rnd.choice(COUNTRIES)}
        if rnd.random() < 0.3:  # valid, and made to look like what reaches FreeSWITCH
            body["metadata"] = {key: rnd.choice(METADATA_VALUES)
                                for key in rnd.sample(METADATA_KEYS, rnd.randint(1, 3))}
        pool.append(body)
    return pool


VALID_POOL = _valid_pool()
valid_bodies = st.sampled_from(VALID_POOL).map(copy.deepcopy)
valid_numbers = st.integers(0, 2**40).map(_number)
VALID_FOR = {"from": valid_numbers,
             "caller_id_name": st.sampled_from([b["leg_A"]["caller_id_name"] for b in VALID_POOL
                                                if "caller_id_name" in b["leg_A"]]),
             "route": st.sampled_from(FAST_ROUTES), "ring_timeout": st.integers(5, 300),
             "send_dtmf": st.from_regex(r"[0-9*#wW]{1,32}", fullmatch=True)}

hostile_text = st.lists(st.sampled_from(ATOMS) | st.text(max_size=4), min_size=1,
                        max_size=3).map("".join)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                    hostile_text)
wrong_types = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(HOSTILE_KEYS) | st.text(max_size=6), inner, max_size=3),
    max_leaves=5)
pooled_strings = st.sampled_from(HOSTILE_STRINGS)
# deep-copied: a body mutates what it drew, and a pooled object mutated in place would make
# later examples draw differently (hypothesis: FlakyStrategyDefinition)
pooled_wrong = st.sampled_from(WRONG_TYPES).map(copy.deepcopy)
SHAPES = [
    lambda v, s: [v], lambda v, s: [v, s], lambda v, s: {s: v}, lambda v, s: {"to": v, s: s},
    lambda v, s: [[v]], lambda v, s: {"a": [v, {"b": s}]}, lambda v, s: {"leg_A": {"to": v}},
    lambda v, s: {"to": {"to": {"to": v}}}, lambda v, s: [s, [s, [s, v]]],
]
nested = st.builds(lambda shape, v, s: shape(v, s), st.sampled_from(SHAPES),
                   pooled_wrong | pooled_strings, pooled_strings)
"""Wrong types and nesting at the cost of four draws (st.recursive costs ten times more)."""
# one_of picks a branch uniformly (one draw): the cheap pooled branches are listed more than
# once, the generated ones (many draws each) once
CHEAP = [pooled_strings, pooled_strings, pooled_strings, pooled_strings, pooled_wrong, nested]
any_hostile = st.one_of(*CHEAP, hostile_text, wrong_types)
HOSTILE_FOR = {field: st.one_of(*CHEAP, *CHEAP, st.sampled_from(NEAR[field]),
                                st.sampled_from(NEAR[field]), hostile_text, wrong_types)
               for field in NEAR}
hostile_keys = st.one_of(st.sampled_from(HOSTILE_KEYS), st.sampled_from(HOSTILE_KEYS),
                         pooled_strings, hostile_text)
hostile_extra = st.one_of(pooled_wrong, pooled_strings, nested, nested, wrong_types)

LEG_FIELDS = ["to", "from", "caller_id_name", "route", "ring_timeout", "send_dtmf"]
MUTATIONS = (
    [("leg_field", leg, f) for leg in ("leg_A", "leg_B") for f in LEG_FIELDS] * 2
    + [("top_field", "", f) for f in ("mode", "first", "metadata", "waiting_media", "record")]
    + [("metadata_value", "", "")] * 2
    + [(op, leg, "") for leg in ("leg_A", "leg_B") for op in (
        "drop_leg_key", "extra_leg_key", "leg_not_object", "nested_leg", "keep_valid")]
    + [("drop_top_key", "", ""), ("extra_top_key", "", ""), ("same_to", "", "")]
)
mutations_s = st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3)
index_s = st.integers(0, 15)
not_object_s = st.integers(0, 24)


@st.composite
def hostile_bodies(draw: st.DrawFn) -> Any:
    """A valid request with 1-3 hostile mutations (a few stay valid); now and then no object."""
    if draw(not_object_s) == 0:
        return draw(any_hostile)
    body: dict[str, Any] = draw(valid_bodies)
    for op, leg_name, field in draw(mutations_s):
        leg = body.get(leg_name)
        if op == "top_field":
            body[field] = draw(HOSTILE_FOR[field])
        elif op == "metadata_value":  # a hostile string as a value: many of them are valid
            body["metadata"] = {draw(st.sampled_from(METADATA_KEYS)): draw(pooled_strings)}
        elif op == "drop_top_key":
            keys = sorted(body, key=str)
            body.pop(keys[draw(index_s) % len(keys)], None)
        elif op == "extra_top_key":
            body[draw(hostile_keys)] = draw(hostile_extra)
        elif op == "same_to":
            if isinstance(body.get("leg_A"), dict) and isinstance(body.get("leg_B"), dict) \
                    and "to" in body["leg_A"]:
                body["leg_B"]["to"] = body["leg_A"]["to"]
        elif op == "leg_not_object":
            body[leg_name] = draw(any_hostile)
        elif not isinstance(leg, dict):
            continue
        elif op == "leg_field":
            leg[field] = draw(HOSTILE_FOR[field])
        elif op == "drop_leg_key" and leg:
            keys = sorted(leg, key=str)
            leg.pop(keys[draw(index_s) % len(keys)], None)
        elif op == "extra_leg_key":
            leg[draw(hostile_keys)] = draw(hostile_extra)
        elif op == "nested_leg":
            leg[LEG_FIELDS[draw(index_s) % len(LEG_FIELDS)]] = draw(valid_bodies)
        elif op == "keep_valid":
            name = sorted(VALID_FOR)[draw(index_s) % len(VALID_FOR)]
            leg[name] = draw(VALID_FOR[name])
    return body


def dumps(body: Any, ensure_ascii: bool) -> bytes:
    """JSON text of a body; lone surrogates survive only as \\u escapes or invalid UTF-8."""
    return json.dumps(body, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


CONTENT_TYPES = ["application/json", "application/json", "application/json",
                 "application/json; charset=utf-8", "Application/JSON", "text/plain", "",
                 None, "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "application/jsonp", "application/json-patch+json", "text/json"]
RAW_KINDS = ["truncated", "bom", "utf16", "duplicate", "garbage", "nan", "deep", "big",
             "empty", "bad_utf8", "plain", "split_line", "json", "json"]
BAD_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"]
raw_kinds_s = st.sampled_from(RAW_KINDS)
dup_keys_s = st.sampled_from(["leg_A", "leg_B", "mode", "first"])
cut_s = st.integers(0, 400)
deep_s = st.integers(5, 50_000)
big_s = st.integers(16_300, 40_000)
bad_utf8_s = st.sampled_from(BAD_UTF8)
garbage_s = st.sampled_from(ATOMS) | hostile_text
bodies_s = hostile_bodies()


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """Bytes that are not (only) what json.dumps would produce."""
    body = draw(bodies_s)
    kind = draw(raw_kinds_s)
    text = json.dumps(body)
    if kind == "json":
        return dumps(body, False)
    if kind == "truncated":
        return text[:draw(cut_s) % max(1, len(text))].encode()
    if kind == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if kind == "utf16":
        return text.encode("utf-16")
    if kind == "duplicate":
        valid = json.dumps(draw(valid_bodies))
        extra = json.dumps(draw(HOSTILE_FOR["to"]))
        return (valid[:-1] + f', "{draw(dup_keys_s)}": {extra}' + "}").encode()
    if kind == "garbage":
        return (text + draw(garbage_s)).encode("utf-8", "surrogatepass")
    if kind == "nan":
        return text.replace("}", ', "ring_timeout": NaN}', 1).encode()
    if kind == "deep":
        n = draw(deep_s)
        return ('{"leg_A": ' + "[" * n + "]" * n + "}").encode()
    if kind == "big":
        return json.dumps({"leg_A": {"to": "1" * draw(big_s)}}).encode()
    if kind == "empty":
        return b""
    if kind == "bad_utf8":
        return text.encode()[:-2] + draw(bad_utf8_s) + b"}"
    if kind == "split_line":
        return text.replace(", ", ",\n\n", 1).encode()
    return draw(hostile_text).encode("utf-8", "surrogatepass")


# ---- the harness: one Stack, one keep-alive connection, counters -------------------------

FSCTL_VARS = {"origination_uuid", "fsctl_callback_id", "fsctl_leg", "ignore_early_media",
              "originate_timeout", "park_timeout", "hangup_after_bridge",
              "origination_caller_id_number", "origination_caller_id_name"}
ROUTE_VARS = {name: dict(re.findall(r"([a-z_]+)=([^,}]+)", spec["template"].split("}")[0]))
              if spec["template"].startswith("{") else {} for name, spec in ROUTES.items()}
ALLOWED_VARS = FSCTL_VARS | {v for vs in ROUTE_VARS.values() for v in vs}
SIM_OWN_VARS = FREESWITCH_VARIABLES
"""Variables the simulator itself sets on a channel, as FreeSWITCH does (plus ``sip_*``)."""


class Harness:
    def __init__(self, stack: Stack) -> None:
        assert stack.sim is not None
        self.stack = stack
        self.sim = stack.sim
        self.r = stack.redis
        self.keys = stack.store.keys
        self.conn: http.client.HTTPConnection | None = None
        self.counts: Counter[str] = Counter()
        self.codes: Counter[int] = Counter()
        self.accepted: list[str] = []
        self.live: list[tuple[str, float]] = []
        self.jobs_len = 0
        self.callbacks_len = 0
        self.batch_accepted: list[str] = []
        self.batch_rejected: list[bytes] = []
        self.redis_pending: dict[str, tuple[dict[str, str], bool, str]] = {}
        self.dead_cursor = "-"
        self.dead: dict[str, tuple[str, str]] = {}
        self.created_vars: list[tuple[str, dict[str, str]]] = []
        self.ever_vars: set[str] = set()

    # -- bookkeeping ------------------------------------------------------------------

    def lens(self) -> tuple[int, int]:
        pipe = self.r.pipeline(transaction=False)
        pipe.xlen(self.keys.jobs)
        pipe.zcard(self.keys.callbacks)
        jobs, callbacks = pipe.execute()
        return int(jobs), int(callbacks)

    def sync(self) -> None:
        self.jobs_len, self.callbacks_len = self.lens()

    def over_budget(self, path: str, pending: int = 0) -> bool:
        return self.counts[f"accepted_{path}"] + pending >= ACCEPT_BUDGET[path]

    # -- HTTP -------------------------------------------------------------------------

    def request(self, method: str, path: str, data: bytes | None,
                headers: dict[str, str]) -> tuple[int, bytes, http.client.HTTPResponse]:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.stack.api_port,
                                                       timeout=10)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read(), resp
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = None
                # retried only if the first attempt provably changed nothing
                if attempt or self.lens() != (self.jobs_len, self.callbacks_len):
                    raise
                self.counts["reconnects"] += 1
        raise AssertionError("unreachable")

    def post(self, data: bytes, ctype: str | None, valid: bool, body: Any = None) -> None:
        """Send one input; check the answer (what it stored: :meth:`check_stored`)."""
        headers = {} if ctype is None else {"Content-Type": ctype}
        self.counts["http"] += 1
        code, payload, resp = self.request("POST", BASE, data, headers)
        self.codes[code] += 1
        assert code < 500, f"{code} for {data[:300]!r}: {payload[:300]!r}"
        assert resp.getheader("Content-Type") == "application/json", resp.getheader("Content-Type")
        reply = json.loads(payload)
        if code == 202:
            assert valid, f"202 for an invalid request {data[:500]!r}"
            assert resp.getheader("Location") == f"{BASE}/{reply['id']}"
            assert reply["state"] == "queued"
            self.check_echo(body, reply)
            self.counts["accepted_http"] += 1
            self.accepted.append(reply["id"])
            self.batch_accepted.append(reply["id"])
            self.live.append((reply["id"], time.monotonic()))
            return
        assert 400 <= code < 500, code
        assert reply["code"] == code and isinstance(reply["message"], str) and reply["status"]
        self.batch_rejected.append(data)
        if valid:
            assert code == 429, f"{code} for a valid request {data[:500]!r}: {reply}"
            self.counts["rate_limited"] += 1
        else:
            self.counts["rejected_http"] += 1

    def check_stored(self) -> None:
        """After a batch: the job stream and the index grew by exactly the accepted requests.

        Each 202 enqueued exactly its own callback's job; no rejected input (of the batch)
        stored or enqueued anything.
        """
        accepted, rejected = self.batch_accepted, self.batch_rejected
        self.batch_accepted, self.batch_rejected = [], []
        pipe = self.r.pipeline(transaction=False)
        pipe.xlen(self.keys.jobs)
        pipe.zcard(self.keys.callbacks)
        pipe.xrevrange(self.keys.jobs, count=max(1, len(accepted)))
        jobs, callbacks, newest = pipe.execute()
        grown = (jobs - self.jobs_len, callbacks - self.callbacks_len)
        assert grown == (len(accepted), len(accepted)), (
            f"{grown} new (jobs, callbacks) for {len(accepted)} accepted; rejected inputs of "
            f"this batch: {[d[:200] for d in rejected]}")
        if accepted:
            assert sorted(f["callback_id"] for _, f in newest) == sorted(accepted)
        self.jobs_len, self.callbacks_len = jobs, callbacks
        self.cancel_old()

    @staticmethod
    def check_echo(body: dict[str, Any], reply: dict[str, Any]) -> None:
        """The accepted record holds exactly the values sent (nothing rewritten)."""
        assert reply["mode"] == body.get("mode", "sequential")
        assert reply["first"] == body.get("first", "A")
        assert reply["metadata"] == body.get("metadata")
        for name, peer in (("A", "B"), ("B", "A")):
            sent, got = body[f"leg_{name}"], reply["legs"][name]
            assert got["to"] == sent["to"]
            assert got["from"] == sent.get("from", body[f"leg_{peer}"]["to"])
            assert got["caller_id_name"] == sent.get("caller_id_name")
            assert got["route"] == sent.get("route", DEFAULT_ROUTE)

    def cancel_old(self, older_than_s: float = CANCEL_AFTER_S) -> None:
        now = time.monotonic()
        keep = []
        for callback_id, since in self.live:
            if now - since < older_than_s:
                keep.append((callback_id, since))
                continue
            code, payload, _ = self.request("DELETE", f"{BASE}/{callback_id}", None, {})
            assert code in (200, 202), (code, payload)
            self.counts["cancels"] += 1
        self.live = keep

    # -- redis-cli --------------------------------------------------------------------

    def xadd_batch(self, batch: list[tuple[dict[str, str], bool, str]]) -> None:
        """XADD each entry (one pipeline); results are checked by :meth:`resolve_redis`."""
        pipe = self.r.pipeline(transaction=False)
        for fields, _, _ in batch:
            pipe.xadd(self.keys.jobs, fields)
        for entry, item in zip(pipe.execute(), batch, strict=True):
            self.redis_pending[entry] = item
            self.counts["redis"] += 1
            if item[1]:
                self.counts["accepted_redis"] += 1
        if len(self.redis_pending) >= 2000:
            self.resolve_redis(timeout_s=30)

    def resolve_redis(self, timeout_s: float) -> None:
        """Wait until every job sent is dead-lettered or became a callback; check which."""
        deadline = time.monotonic() + timeout_s
        while self.redis_pending:
            self.read_dead()
            entries = list(self.redis_pending)
            made = self.r.mget([self.keys.job(e) for e in entries])
            for entry, callback_id in zip(entries, made, strict=True):
                dead = self.dead.pop(entry, None)
                if dead is not None:
                    assert callback_id is None, f"job {entry} dead-lettered AND made {callback_id}"
                    self.check_dead(entry, *dead)
                elif callback_id is not None:
                    self.check_made(entry, callback_id)
            if not self.redis_pending:
                break
            assert time.monotonic() < deadline, (
                f"{len(self.redis_pending)} jobs neither dead-lettered nor made into a callback, "
                f"e.g. {next(iter(self.redis_pending.items()))}")
            gevent.sleep(0.02)
        self.cancel_old()

    def read_dead(self) -> None:
        while True:
            batch = self.r.xrange(self.keys.dead, min=self.dead_cursor, count=2000)
            batch = [item for item in batch if item[0] != self.dead_cursor]
            if not batch:
                return
            for dead_id, item in batch:
                self.dead[item["entry_id"]] = (item["reason"], item["payload"])
                self.dead_cursor = dead_id

    def check_dead(self, entry: str, reason: str, payload: str) -> None:
        fields, valid, expect_reason = self.redis_pending.pop(entry)
        assert not valid, f"valid job {fields} dead-lettered: {reason}"
        assert reason.strip(), f"dead-lettered without a reason: {fields}"
        assert expect_reason in reason, (fields, reason)
        assert json.loads(payload) == fields, "the dead letter does not keep the payload"
        self.counts["dead_redis"] += 1

    def check_made(self, entry: str, callback_id: str) -> None:
        fields, valid, _ = self.redis_pending.pop(entry)
        assert valid, f"invalid job became callback {callback_id}: {fields}"
        assert callback_id == uuid.uuid5(JOB_NAMESPACE, entry).hex
        record = json.loads(self.r.get(self.keys.callback(callback_id)))
        body = json.loads(fields["request"])
        for name in ("A", "B"):
            assert record["legs"][name]["to"] == body[f"leg_{name}"]["to"]
            assert record["legs"][name]["caller_id_name"] == body[f"leg_{name}"].get(
                "caller_id_name")
        self.accepted.append(callback_id)
        self.live.append((callback_id, time.monotonic()))


@pytest.fixture(scope="module")
def harness(redis_server: str) -> Iterator[Harness]:
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    created: list[tuple[str, dict[str, str]]] = []
    ever: set[str] = set()
    original = (Channel.__init__, Channel.set_var, Channel.update_vars)

    def init(self: Channel, *args: Any, **kwargs: Any) -> None:
        dial = kwargs.get("dial", args[1] if len(args) > 1 else "")
        variables = kwargs.get("variables", args[4] if len(args) > 4 else {})
        created.append((dial, dict(variables)))
        ever.update(variables)
        original[0](self, *args, **kwargs)

    def set_var(self: Channel, name: str, value: str) -> None:
        ever.add(name)
        original[1](self, name, value)

    def update_vars(self: Channel, values: dict[str, str],
                    lines: dict[str, str] | None = None) -> None:
        ever.update(values)
        original[2](self, values, lines)

    Channel.__init__, Channel.set_var, Channel.update_vars = init, set_var, update_vars  # type: ignore[method-assign]
    # a warning per dead-lettered job and an info line per request, 100,000 times: errors only
    fsctl_log = logging.getLogger("fsctl")
    level = fsctl_log.level
    fsctl_log.setLevel(logging.ERROR)
    stack = Stack(redis_server, None)
    # gevent.pywsgi writes a response's headers and body in two segments: without NODELAY,
    # Nagle + delayed ACK cost ~40 ms per keep-alive request (22 requests/s instead of ~1,700).
    stack.server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    h = Harness(stack)
    h.created_vars, h.ever_vars = created, ever
    try:
        yield h
    finally:
        if h.conn is not None:
            h.conn.close()
        stack.close()
        Channel.__init__, Channel.set_var, Channel.update_vars = original  # type: ignore[method-assign]
        fsctl_log.setLevel(level)


# ---- (a) the HTTP API -------------------------------------------------------------------

def batches(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(strategy, min_size=BATCH, max_size=BATCH)


def test_http_hostile_fields(harness: Harness) -> None:
    harness.sync()

    @run_settings("http_fields")
    @given(batch=batches(bodies_s), ensure_ascii=st.booleans())
    def run(batch: list[Any], ensure_ascii: bool) -> None:
        for body in batch:
            valid = request_valid(body)
            if valid and harness.over_budget("http"):
                body = {**body, "x-over-budget": True}
                valid = False
                harness.counts["over_budget"] += 1
            harness.post(dumps(body, ensure_ascii), "application/json", valid, body)
        harness.check_stored()

    run()
    assert harness.counts["accepted_http"] > 0


def test_http_hostile_bytes_and_content_types(harness: Harness) -> None:
    harness.sync()

    @run_settings("http_raw")
    @given(batch=batches(st.tuples(raw_bodies(), st.sampled_from(CONTENT_TYPES))))
    def run(batch: list[tuple[bytes, str | None]]) -> None:
        for data, ctype in batch:
            body: Any = None
            valid = False
            if ctype is not None and ctype.split(";")[0].strip().lower() == "application/json" \
                    and len(data) <= MAX_BODY_BYTES:
                try:
                    body = json.loads(data)
                except (ValueError, RecursionError):
                    body = None
                else:
                    valid = request_valid(body) and json_depth(body) <= MAX_JSON_DEPTH
            if valid and harness.over_budget("http"):
                valid = False
                data = dumps({**body, "x-over-budget": 1}, True)
                harness.counts["over_budget"] += 1
            harness.post(data, ctype, valid, body)
        harness.check_stored()

    run()


# ---- (b) the redis-cli path -------------------------------------------------------------

def test_redis_cli_hostile_requests(harness: Harness) -> None:
    @run_settings("redis_fields")
    @given(batch=batches(bodies_s), ensure_ascii=st.booleans())
    def run(batch: list[Any], ensure_ascii: bool) -> None:
        entries = []
        for body in batch:
            valid = request_valid(body)
            if valid and harness.over_budget("redis", sum(e[1] for e in entries)):
                body = {**body, "x-over-budget": True}
                valid = False
                harness.counts["over_budget"] += 1
            text = json.dumps(body, ensure_ascii=ensure_ascii)
            if not ensure_ascii and re.search("[\ud800-\udfff]", text):
                text = json.dumps(body)  # non-UTF-8 in the stream: test_redis_cli_non_utf8_job
            entries.append(({"request": text}, valid, "" if valid else "invalid request"))
        harness.xadd_batch(entries)

    run()
    harness.resolve_redis(timeout_s=60)
    assert harness.counts["accepted_redis"] > 0


REDIS_KINDS = ["not_json", "raw", "raw", "extra_field", "callback_id", "neither",
               "request_and_callback_id"]
redis_kinds_s = st.sampled_from(REDIS_KINDS)
extra_fields_s = st.sampled_from(["junk", "Request", "callback", "owner", "priority"])
wrong_fields_s = st.sampled_from(["Request", "REQUEST", "request ", "req", "body", "job", ""])
safe_text = (st.sampled_from(HOSTILE_STRINGS) | hostile_text).map(
    lambda t: t.encode("utf-8", "backslashreplace").decode())


@st.composite
def redis_entries(draw: st.DrawFn) -> tuple[dict[str, str], bool, str]:
    """Stream entries that are not just a ``request`` field holding a JSON object."""
    kind = draw(redis_kinds_s)
    if kind == "not_json":
        return {"request": draw(safe_text)}, False, "invalid request"
    if kind == "raw":
        data = draw(raw_bodies()).decode("utf-8", "backslashreplace")
        try:
            body = json.loads(data)
        except (ValueError, RecursionError):
            return {"request": data}, False, ""
        return {"request": data}, request_valid(body), ""
    if kind == "extra_field":
        body = draw(bodies_s)
        valid = request_valid(body)
        return ({"request": json.dumps(body), draw(extra_fields_s): draw(safe_text)}, valid,
                "" if valid else "invalid request")
    if kind == "callback_id":
        return {"callback_id": draw(safe_text)}, False, "no callback record"
    if kind == "request_and_callback_id":
        return ({"callback_id": draw(safe_text), "request": json.dumps(draw(valid_bodies))},
                False, "no callback record")
    return {draw(wrong_fields_s): json.dumps(draw(valid_bodies))}, False, "neither"


def test_redis_cli_hostile_fields(harness: Harness) -> None:
    @run_settings("redis_raw")
    @given(batch=batches(redis_entries()))
    def run(batch: list[tuple[dict[str, str], bool, str]]) -> None:
        entries = []
        for fields, valid, reason in batch:
            if valid and harness.over_budget("redis", sum(e[1] for e in entries)):
                body = {**json.loads(fields["request"]), "x-over-budget": 1}
                fields = {**fields, "request": json.dumps(body)}
                valid, reason = False, "invalid request"
                harness.counts["over_budget"] += 1
            entries.append((fields, valid, reason))
        harness.xadd_batch(entries)

    run()
    harness.resolve_redis(timeout_s=60)


def test_redis_cli_non_utf8_job_is_dead_lettered_and_the_worker_goes_on(redis_server: str) -> None:
    """``redis-cli XADD fsctl:jobs '*' request $'\\xff'``: dead letter, and the next job runs."""
    url = redis_server.rsplit("/", 1)[0] + "/1"  # its own database and simulator
    raw = redis.Redis.from_url(url)
    raw.flushdb()
    stack = Stack(url, None)
    try:
        bad = raw.xadd("fsctl:jobs", {"request": b"\xff\xfe{"}).decode()
        after = raw.xadd("fsctl:jobs", {"request": b"not json"}).decode()
        deadline = time.monotonic() + 5
        dead: set[str] = set()
        while {bad, after} - dead and time.monotonic() < deadline:
            dead = {item[b"entry_id"].decode() for _, item in raw.xrange("fsctl:jobs:dead")}
            gevent.sleep(0.05)
        assert bad in dead, "the non-UTF-8 job was not dead-lettered"
        assert after in dead, "the worker took no job after the non-UTF-8 one"
    finally:
        stack.close()
        raw.flushdb()
        raw.close()


# ---- the audit of everything FreeSWITCH received ----------------------------------------

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
ORIGINATE = re.compile(r"bgapi originate \{([^{}\s]*)\}(\S+) &park\(\)")
SEND_DTMF = re.compile(rf"bgapi uuid_send_dtmf ({UUID}) ([0-9*#wW]{{1,32}})")
VAR_ITEM = re.compile(r"([a-z][a-z0-9_]*)=([A-Za-z0-9._+-]{1,64})")


def fixed_forms(stack: Stack) -> list[re.Pattern[str]]:
    """Every other command fsctl sends (and the test's own inspection), with no user data."""
    ringback = "|".join(re.escape(t) for t in {stack.settings.ringback, *RINGBACK_TONES.values()})
    return [re.compile(p) for p in (
        re.escape(f"auth {stack.settings.esl_password}"),
        r"event plain(?: [A-Z_]+)+",
        r"filter (?:Event-Name (?:BACKGROUND_JOB|HEARTBEAT)|variable_fsctl_leg [AB])",
        rf"api uuid_broadcast {UUID} playback::(?:{ringback}) aleg",
        rf"api uuid_bridge {UUID} {UUID}",
        rf"api uuid_kill {UUID} [A-Z_]{{3,40}}",
        rf"api sched_hangup \+{stack.settings.max_talk_s} {UUID} ALLOTTED_TIMEOUT",
        rf"api uuid_exists {UUID}",
        rf"api uuid_getvar {UUID} (?:fsctl_callback_id|fsctl_leg)",
        rf"api show channels(?: like {UUID})? as json",
        r"api global_getvar core_uuid",
        r"api status",
        r"exit",
    )]


def audit_originate(text: str, headers: dict[str, str], records: dict[str, Any],
                    stack: Stack) -> str:
    """Check one originate against fsctl's form and its callback record; return the leg uuid."""
    m = ORIGINATE.fullmatch(text)
    assert m, f"originate of an unknown form: {text!r}"
    block, dial = m.groups()
    pairs = [VAR_ITEM.fullmatch(item) for item in block.split(",")]
    assert all(pairs), f"variable outside the allowlist in {text!r}"
    variables = dict(p.groups() for p in pairs if p)
    assert len(variables) == len(pairs), f"repeated variable in {text!r}"
    assert set(variables) <= ALLOWED_VARS, f"foreign variables {set(variables) - ALLOWED_VARS}"
    record = records.get(variables.get("fsctl_callback_id", ""))
    assert record is not None, f"originate for no known callback: {text!r}"
    leg = record["legs"][variables["fsctl_leg"]]
    route = leg["route"]
    extra = {k: v for k, v in variables.items() if k not in FSCTL_VARS}
    assert extra == ROUTE_VARS[route], f"route {route} variables {extra} in {text!r}"
    template = ROUTES[route]["template"]
    if template.startswith("{"):
        template = template[template.index("}") + 1:]
    expected_dial = template.replace("{to}", leg["to"])
    assert dial == expected_dial, f"dial string {dial!r}, route {route} gives {expected_dial!r}"
    assert destination_allowed(route, leg["to"]), f"{leg['to']} is not an allowed destination"
    assert variables["origination_uuid"] == leg["uuid"]
    assert variables["origination_caller_id_number"] == leg["from"]
    assert NUMBER.fullmatch(leg["from"])
    assert variables.get("origination_caller_id_name") == leg["caller_id_name"]
    assert variables["ignore_early_media"] == "true"
    assert variables["originate_timeout"] == str(leg["ring_timeout_s"])
    assert headers == {"Job-UUID": leg["job_uuid"]}, headers
    return str(leg["uuid"])


def load_records(harness: Harness) -> dict[str, Any]:
    ids = harness.r.zrange(harness.keys.callbacks, 0, -1)
    records = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for callback_id, raw in zip(chunk, harness.r.mget(
                [harness.keys.callback(c) for c in chunk]), strict=True):
            assert raw is not None, f"callback {callback_id} indexed but gone"
            records[callback_id] = json.loads(raw)
    return records


def wait_all_over(harness: Harness, timeout_s: float = 40.0) -> dict[str, Any]:
    harness.cancel_old(older_than_s=0)
    deadline = time.monotonic() + timeout_s
    while True:
        records = load_records(harness)
        open_ = [cid for cid, rec in records.items() if rec["state"] not in
                 ("completed", "failed", "cancelled")]
        if not open_ and not harness.sim.channels:
            gevent.sleep(0.5)  # late kills of legs that showed life after the end
            return load_records(harness)
        assert time.monotonic() < deadline, (
            f"still open: {open_[:5]}, live channels: {list(harness.sim.channels)[:5]}")
        for callback_id in open_:
            harness.request("DELETE", f"{BASE}/{callback_id}", None, {})
        gevent.sleep(0.2)


def test_zz_freeswitch_received_nothing_but_fsctls_own_commands(
        harness: Harness, request: pytest.FixtureRequest) -> None:
    n_http, n_redis = harness.counts["http"], harness.counts["redis"]
    assert n_http and n_redis, "run the whole module: the audit covers the tests above it"
    records = wait_all_over(harness)
    forms = fixed_forms(harness.stack)
    extra: list[str] = []
    originated: list[str] = []
    digits_of = {leg["uuid"]: leg["send_dtmf"] for rec in records.values()
                 for leg in rec["legs"].values()}
    dtmf_sent = 0
    for cmd in list(harness.sim.commands):
        assert not any(c in cmd.text for c in "\r\n\x00"), repr(cmd.text)
        if cmd.text.startswith("bgapi originate "):
            originated.append(audit_originate(cmd.text, cmd.headers, records, harness.stack))
            continue
        if m := SEND_DTMF.fullmatch(cmd.text):  # exactly the digits its record asked for
            assert set(cmd.headers) == {"Job-UUID"} and re.fullmatch(UUID, cmd.headers["Job-UUID"])
            assert digits_of.get(m[1]) == m[2], f"digits no record asked for: {cmd.text!r}"
            dtmf_sent += 1
            continue
        if cmd.headers or not any(f.fullmatch(cmd.text) for f in forms):
            extra.append(f"{cmd.text!r} {cmd.headers}")
        elif cmd.text.startswith("event plain"):
            assert set(cmd.text.split()[2:]) <= set(SUBSCRIBED_EVENTS), cmd.text
    assert extra == [], f"{len(extra)} extra commands: {extra[:10]}"

    dialled: set[str] = set()
    for rec in records.values():
        for name, leg in rec["legs"].items():
            failed_locally = any(h.get("event") == "command_failed" and h.get("what") ==
                                 "originate" and h.get("leg") == name and "not allowed" in
                                 str(h.get("reason", "")) for h in rec["history"])
            if "dialed" in leg["times"] and not failed_locally:
                dialled.add(leg["uuid"])
    assert len(originated) == len(set(originated)), "a leg was originated twice"
    assert set(originated) == dialled, (
        f"originated but not dialled per Redis: {list(set(originated) - dialled)[:5]}; "
        f"dialled per Redis but never originated: {list(dialled - set(originated))[:5]}")

    foreign_created = [(dial, sorted(set(v) - ALLOWED_VARS)) for dial, v in harness.created_vars
                       if not set(v) <= ALLOWED_VARS]
    assert foreign_created == [], foreign_created[:5]
    foreign_ever = {v for v in harness.ever_vars
                    if v not in ALLOWED_VARS | SIM_OWN_VARS and not v.startswith("sip_")}
    assert foreign_ever == set(), foreign_ever

    c = harness.counts
    line = (f"injection: {n_http} inputs via HTTP, {n_redis} via redis-cli "
            f"({n_http + n_redis} total), {c['accepted_http'] + c['accepted_redis']} accepted "
            f"({c['accepted_http']} HTTP, {c['accepted_redis']} redis-cli), "
            f"{c['dead_redis']} dead-lettered, {len(originated)} originates, {dtmf_sent} "
            f"uuid_send_dtmf and "
            f"{len(harness.sim.commands)} commands checked, 0 extra commands, "
            f"0 foreign variables, 0 foreign dial strings; HTTP codes {dict(sorted(harness.codes.items()))}")
    print(line)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        request.config.add_cleanup(lambda: reporter.write_line(line))
    if TOTAL >= 100_000:
        assert n_http + n_redis >= 100_000
