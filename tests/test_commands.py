"""The command builder: the only writer of FreeSWITCH syntax."""

from __future__ import annotations

import pytest

from fsctl import commands
from fsctl.commands import Dial, RouteTemplate
from fsctl.errors import InvalidValue, UnsafeCommand
from fsctl.wire import format_command

UA = "11111111-1111-4111-8111-111111111111"
UB = "22222222-2222-4222-8222-222222222222"


def dial(**over: object) -> Dial:
    base = {"uuid": UA, "callback_id": "a" * 32, "leg": "A", "to": "1000123", "caller_id_number": "1000125",
                "caller_id_name": None, "route": RouteTemplate.parse("default", "user/{to}"),
                "ring_timeout_s": 30, "park_timeout_s": 40}
    base.update(over)
    return Dial(**base)  # type: ignore[arg-type]


def test_originate_has_every_variable_fsctl_needs() -> None:
    cmd = commands.originate(dial(caller_id_name="Shop"))
    assert cmd == (
        "originate {origination_uuid=" + UA + ",fsctl_callback_id=" + "a" * 32 + ",fsctl_leg=A,"
        "ignore_early_media=true,originate_timeout=30,park_timeout=40,hangup_after_bridge=true,"
        "origination_caller_id_number=1000125,origination_caller_id_name=Shop}user/1000123 &park()"
    )


def test_route_variables_join_the_block() -> None:
    route = RouteTemplate.parse("t", "{null_auto_answer_delay=1500}null/{to}")
    cmd = commands.originate(dial(route=route))
    assert cmd.endswith(",origination_caller_id_number=1000125,null_auto_answer_delay=1500}"
                        "null/1000123 &park()")


@pytest.mark.parametrize("field,value", [
    ("to", "1000,user/666"), ("to", "1000@evil.example"), ("to", "1 2"), ("to", "x"),
    ("caller_id_number", "1;x=y"), ("caller_id_name", "x,api_on_answer=system\\stouch\\spwned"),
    ("caller_id_name", "a b"), ("caller_id_name", "a\nb"), ("uuid", "not-a-uuid"),
    ("callback_id", "../etc"), ("leg", "C"), ("ring_timeout_s", 0), ("park_timeout_s", "5"),
])
def test_originate_refuses_anything_off_the_allowlist(field: str, value: object) -> None:
    with pytest.raises(InvalidValue):
        commands.originate(dial(**{field: value}))


@pytest.mark.parametrize("template", [
    "sofia/gateway/{to}/{to}", "{a=b", "{A=b}null/{to}", "{a=b c}null/{to}", "null/{to} &echo",
    "system/{to}", "null/{to},user/1", "null/{to}|user/1", "{a=${x}}null/{to}",
])
def test_route_templates_are_checked_at_load(template: str) -> None:
    with pytest.raises(InvalidValue):
        RouteTemplate.parse("r", template)


def test_call_control_commands() -> None:
    assert commands.uuid_bridge(UA, UB) == f"uuid_bridge {UA} {UB}"
    assert commands.uuid_kill(UA) == f"uuid_kill {UA} NORMAL_CLEARING"
    assert commands.uuid_broadcast(UA) == (
        f"uuid_broadcast {UA} playback::tone_stream://%(2000,4000,440,480);loops=-1 aleg")
    assert commands.uuid_exists(UB) == f"uuid_exists {UB}"
    assert commands.uuid_getvar(UA, "fsctl_callback_id") == f"uuid_getvar {UA} fsctl_callback_id"
    assert commands.sched_hangup(UA, 60) == f"sched_hangup +60 {UA} ALLOTTED_TIMEOUT"
    with pytest.raises(InvalidValue):
        commands.uuid_kill(UA, "NORMAL_CLEARING\nexit")
    with pytest.raises(InvalidValue):
        commands.uuid_bridge(UA, UB + " x")


@pytest.mark.parametrize("text", ["api status\n\nexit", "api x\r", "api \0", "bgapi reload mod_event_socket",
                                  "api unload MOD_EVENT_SOCKET"])
def test_writer_refuses_split_or_reload(text: str) -> None:
    with pytest.raises(UnsafeCommand):
        format_command(text)
    with pytest.raises(UnsafeCommand):
        format_command("bgapi status", {"Job-UUID": text})


def test_writer_frames_a_bgapi() -> None:
    assert format_command("bgapi status", {"Job-UUID": UA}) == (
        f"bgapi status\nJob-UUID: {UA}\n\n".encode())


@pytest.mark.parametrize("template,to,expected", [
    ("sofia/internal/{to}@10.0.0.5:5060", "1000123", "sofia/internal/1000123@10.0.0.5:5060"),
    ("sofia/external/{to}@carrier.example", "+4930123", "sofia/external/+4930123@carrier.example"),
    ("sofia/fsctl/00{to}@127.0.0.1:5090;transport=tcp", "1000123",
     "sofia/fsctl/001000123@127.0.0.1:5090;transport=tcp"),
    ("{sip_cid_type=pid}sofia/fsctl/{to}@pbx.example.com;transport=tls", "1000123",
     "sofia/fsctl/1000123@pbx.example.com;transport=tls"),
])
def test_route_templates_may_fix_the_far_host(template: str, to: str, expected: str) -> None:
    route = RouteTemplate.parse("direct", template)
    assert route.has_host
    assert commands.originate(dial(route=route, to=to)).endswith(f"}}{expected} &park()")


@pytest.mark.parametrize("template", [
    "sofia/internal/{to}@10.0.0.5:5060,user/1", "sofia/internal/{to}@10.0.0.5:99999",
    "sofia/internal/{to}@[::1]:5060", "sofia/internal/{to}@host;transport=sctp",
    "sofia/internal/{to}@host;maddr=10.0.0.9", "sofia/internal/{to}@a@b", "null/{to}@host",
    "user/{to}@fsctl.local", "sofia/internal/{to}@host:", "sofia/internal/{to}@-host",
    "sofia/internal/{to}@host|sofia/internal/x@y", "sofia/internal/{to}@host:_:x",
    "sofia/gateway/gw/{to}@host", "sofia/internal/{to}@ho st",
])
def test_a_host_part_is_refused_unless_it_has_exactly_that_shape(template: str) -> None:
    with pytest.raises(InvalidValue):
        RouteTemplate.parse("r", template)


@pytest.mark.parametrize("to", ["1000@evil.example", "1000;transport=udp", "1000:5060",
                                "1000,user/1"])
def test_request_values_never_add_a_host(to: str) -> None:
    route = RouteTemplate.parse("direct", "sofia/internal/{to}@10.0.0.5:5060")
    with pytest.raises(InvalidValue):
        commands.originate(dial(route=route, to=to))
