"""Request validation shared by the API and the redis-cli path."""

from __future__ import annotations

import uuid

import pytest
from marshmallow import ValidationError

from fsctl import settings as settings_mod
from fsctl.schemas import REQUEST_SCHEMA, build_callback, dashed, present, random_uuid_hexes

SEED = {"leg_A": {"to": "1000123", "from": "1000125"}, "leg_B": {"to": "1000125", "from": "1000123"}}


def test_seed_request_builds_a_queued_callback() -> None:
    s = settings_mod.load({})
    cb = build_callback(REQUEST_SCHEMA.load(SEED), s, now=100.0)
    assert cb.state == "queued" and cb.mode == "sequential" and cb.first == "A"
    assert (cb.legs["A"].to, cb.legs["A"].from_) == ("1000123", "1000125")
    assert cb.legs["A"].uuid != cb.legs["B"].uuid and len(cb.id) == 32
    assert cb.legs["A"].ring_timeout_s == s.ring_timeout_s
    view = present(cb)
    assert view["legs"]["B"]["from"] == "1000123" and view["history"][0]["state"] == "queued"


def test_from_defaults_to_the_other_legs_number() -> None:
    req = REQUEST_SCHEMA.load({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"},
                               "mode": "simultaneous", "first": "B"})
    cb = build_callback(req, settings_mod.load({}))
    assert cb.legs["A"].from_ == "1000125" and cb.legs["B"].from_ == "1000123"
    assert (cb.mode, cb.first) == ("simultaneous", "B")


@pytest.mark.parametrize("body,field", [
    ({"leg_A": {"to": "1000123"}}, "leg_B"),
    ({"leg_A": {"to": "10 00"}, "leg_B": {"to": "1000125"}}, "leg_A"),
    ({"leg_A": {"to": "1000123", "x": 1}, "leg_B": {"to": "1000125"}}, "leg_A"),
    ({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}, "mode": "parallel"}, "mode"),
    ({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}, "first": "C"}, "first"),
    ({"leg_A": {"to": "1000123", "ring_timeout": "30"}, "leg_B": {"to": "1000125"}}, "leg_A"),
    ({"leg_A": {"to": "1000123", "ring_timeout": 1}, "leg_B": {"to": "1000125"}}, "leg_A"),
    ({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000123"}}, "leg_B"),
    ({"leg_A": {"to": "1000123", "caller_id_name": "x,a=b"}, "leg_B": {"to": "1000125"}}, "leg_A"),
    ({"leg_A": {"to": 1000123}, "leg_B": {"to": "1000125"}}, "leg_A"),
    ({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}, "extra": True}, "extra"),
])
def test_bad_requests_name_the_field(body: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        REQUEST_SCHEMA.load(body)
    assert field in err.value.messages


def test_unknown_route_is_a_field_error() -> None:
    req = REQUEST_SCHEMA.load({"leg_A": {"to": "1000123", "route": "nope"}, "leg_B": {"to": "1000125"}})
    with pytest.raises(ValidationError) as err:
        build_callback(req, settings_mod.load({}))
    assert "route" in err.value.messages["leg_A"]


@pytest.mark.parametrize("field,value", [
    ("to", "1000123\n"), ("from", "1000125\n"), ("caller_id_name", "Shop\n"), ("route", "answer\n"),
])
def test_a_trailing_newline_never_passes(field: str, value: str) -> None:
    leg = {"to": "1000123", field: value}
    with pytest.raises(ValidationError) as err:
        REQUEST_SCHEMA.load({"leg_A": leg, "leg_B": {"to": "1000125"}})
    assert field in err.value.messages["leg_A"]


def sip_settings(tmp_path):
    path = tmp_path / "routes.json"
    path.write_text('{"default_route": "pstn", "routes": {'
                    '"pstn": {"template": "null/{to}", "allow": ["[0-9]{4,15}"]},'
                    '"pbx": {"template": "sofia/internal/{to}", "sip_hosts": ["pbx.example.com"]}}}')
    return settings_mod.load({"FSCTL_ROUTES_FILE": str(path)})


def test_a_sip_destination_needs_an_explicit_caller_id_for_the_other_leg(tmp_path) -> None:
    s = sip_settings(tmp_path)
    sip_b = {"to": "alice@pbx.example.com", "route": "pbx"}
    req = REQUEST_SCHEMA.load({"leg_A": {"to": "1000123"}, "leg_B": sip_b})
    with pytest.raises(ValidationError) as err:
        build_callback(req, s)  # A would be shown 'alice@pbx.example.com' as caller ID
    assert "not a number" in err.value.messages["leg_A"]["from"][0]
    req = REQUEST_SCHEMA.load({"leg_A": {"to": "1000123", "from": "1000125"}, "leg_B": sip_b})
    cb = build_callback(req, s)
    assert cb.legs["A"].from_ == "1000125" and cb.legs["B"].from_ == "1000123"


def test_ids_are_random_version_4_uuids_as_uuid4_makes_them() -> None:
    ids = random_uuid_hexes(2000)
    assert len(set(ids)) == len(ids)
    for h in ids:
        u = uuid.UUID(hex=h)
        assert (u.version, u.variant, u.hex) == (4, uuid.RFC_4122, h)
        assert dashed(h) == str(u)


def test_a_callback_has_five_distinct_ids() -> None:
    cb = build_callback(REQUEST_SCHEMA.load({"leg_A": {"to": "1000123"}, "leg_B": {"to": "2000456"}}),
                        settings_mod.load({}))
    ids = [cb.id] + [x for leg in cb.legs.values() for x in (leg.uuid, leg.job_uuid)]
    assert len(set(ids)) == 5
    assert uuid.UUID(hex=cb.id).version == 4
    assert all(str(uuid.UUID(x)) == x and uuid.UUID(x).version == 4 for x in ids[1:])
