"""Routes and the destination policy (pure)."""

from __future__ import annotations

import pytest

from fsctl import commands
from fsctl.errors import ConfigError, InvalidValue
from fsctl.policy import parse_route
from fsctl.settings import load


def route(**spec: object):
    return parse_route("pstn", {"template": "sofia/gateway/carrier/{to}", **spec})


def test_default_deny() -> None:
    assert "not an allowed destination" in route().refusal("4930123456")


def test_allow_patterns_and_prefixes() -> None:
    r = route(allow=[r"\+?49[0-9]{6,12}"], allow_prefixes=["+4420"])
    assert r.refusal("4930123456") is None and r.refusal("+4930123456") is None
    assert r.refusal("442071234567") is None
    assert r.refusal("3312345678") is not None


def test_deny_prefixes_win_and_ignore_the_plus() -> None:
    r = route(allow=[r"\+?[0-9]{4,15}"], deny_prefixes=["+1900", "0900"])
    assert "1900" in r.refusal("19005551234")
    assert "1900" in r.refusal("+19005551234")
    assert r.refusal("09001234") is not None and r.refusal("0301234") is None


def test_sip_addresses_only_to_listed_hosts() -> None:
    plain = route(allow=[r"[0-9]+"])
    assert "SIP" in plain.refusal("alice@pbx.example.com")
    sip = parse_route("sip", {"template": "sofia/internal/{to}", "sip_hosts": ["pbx.example.com"]})
    assert sip.refusal("alice@pbx.example.com") is None
    assert sip.refusal("alice@PBX.example.com") is None
    assert "host" in sip.refusal("alice@evil.example.com")
    assert sip.refusal("a;b@pbx.example.com") is not None
    assert sip.dial_string("alice@pbx.example.com") == "sofia/internal/alice@pbx.example.com"


def test_dial_string_rechecks_policy() -> None:
    r = route(allow=[r"49[0-9]+"])
    with pytest.raises(InvalidValue):
        r.dial_string("1900123")
    dial = commands.Dial(uuid="11111111-1111-4111-8111-111111111111", callback_id="a" * 32,
                         leg="A", to="1900123", caller_id_number="4930", caller_id_name=None,
                         route=r, ring_timeout_s=30, park_timeout_s=40)
    with pytest.raises(InvalidValue):
        commands.originate(dial)


@pytest.mark.parametrize("spec,needle", [
    ({"template": "null/{to}", "allow": ["("]}, "allow"),
    ({"template": "null/{to}", "deny_prefixes": ["19a"]}, "deny_prefixes"),
    ({"template": "null/{to}", "sip_hosts": ["bad host"]}, "sip_hosts"),
    ({"template": "null/{to}", "colour": "red"}, "unknown"),
    ({"template": "null/{to},user/1"}, "endpoint"),
])
def test_bad_route_configuration_is_refused(spec: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_route("r", spec)
    assert needle in str(err.value)


def test_embedded_default_denies_premium_rate() -> None:
    r = load({}).route(None)
    assert r.refusal("1000123") is None
    assert r.refusal("19005551234") is not None and r.refusal("+4490012345") is not None
    assert r.refusal("123") is not None  # too short for the embedded default


def test_one_spelling_per_destination_for_the_cooldown() -> None:
    from fsctl.policy import destination

    assert destination("+4930123456") == destination("4930123456") == "4930123456"
    assert destination("004930123456") == "4930123456"
    spellings = {"alice@pbx.example.com", "alice@PBX.example.com", "Alice@Pbx.Example.Com"}
    assert {destination(s) for s in spellings} == {"alice@pbx.example.com"}


def test_the_international_prefix_00_does_not_slip_past_a_denied_prefix() -> None:
    r = route(allow=[r"[0-9]{4,15}"], deny_prefixes=["1900"])
    assert "1900" in r.refusal("0019005550123")
    assert r.refusal("0049301234567") is None


def test_legs_that_are_one_number_spelled_twice_are_refused() -> None:
    from marshmallow import ValidationError

    from fsctl.schemas import REQUEST_SCHEMA

    for a, b in [("+4915112345678", "4915112345678"), ("004915112345678", "+4915112345678")]:
        with pytest.raises(ValidationError) as err:
            REQUEST_SCHEMA.load({"leg_A": {"to": a}, "leg_B": {"to": b}})
        assert "same number" in str(err.value.messages["leg_B"])


def test_a_route_with_a_fixed_host_dials_numbers_only() -> None:
    route = parse_route("direct", {"template": "sofia/internal/{to}@10.0.0.5:5060",
                                   "allow": [r"[0-9]{4,10}"]})
    assert route.refusal("1000123") is None
    assert route.dial_string("1000123") == "sofia/internal/1000123@10.0.0.5:5060"
    assert "SIP" in route.refusal("alice@10.0.0.5")
    with pytest.raises(ConfigError, match="host in the template"):
        parse_route("both", {"template": "sofia/internal/{to}@10.0.0.5", "sip_hosts": ["x.example"]})
