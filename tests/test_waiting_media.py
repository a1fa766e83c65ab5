"""What the first party to answer hears while the other is dialled: ringback by country,
music on hold, an announcement then the ringback; on the simulator and the real FreeSWITCH,
looked at the way fs_cli would (``uuid_dump``: the application the channel runs)."""

from __future__ import annotations

import dataclasses
import time
from urllib.parse import unquote

import pytest
from marshmallow import ValidationError
from stack import Stack

from fsctl import schemas
from fsctl.commands import RINGBACK_TONES
from fsctl.settings import load

MEDIA = {"jazz": "tone_stream://%(300,200,600)", "welcome": "tone_stream://%(1500,0,800)"}
"""Operator media (FSCTL_MEDIA_FILE): tones stand in for files, any FreeSWITCH plays them."""


@pytest.fixture
def media_stack(redis_url: str, freeswitch_node):
    from support import esl_target

    s = Stack(redis_url, esl_target(), media=MEDIA)
    try:
        yield s
    finally:
        s.close()


def playing(s: Stack, uuid: str) -> tuple[str, str]:
    """(application, its data) the channel runs now, from ``uuid_dump`` (fs_cli's view)."""
    fields = dict(line.split(": ", 1) for line in s.esl.api(f"uuid_dump {uuid}").splitlines()
                  if ": " in line)
    return (fields.get("variable_current_application", ""),
            unquote(fields.get("variable_current_application_data", "")))


def wait_playing(s: Stack, uuid: str, want: tuple[str, str], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (now := playing(s, uuid)) != want:
        assert time.monotonic() < deadline, f"{uuid} plays {now}, not {want}"
        time.sleep(0.1)


def waiting(s: Stack, media: dict[str, str]) -> dict:
    """A callback whose B rings for 20 s: A answers at once and waits."""
    rec = s.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125", "route": "slow"},
                    "waiting_media": media})
    return s.wait_for(rec["id"], "waiting")


def hang_up(s: Stack, rec: dict) -> None:
    s.http("DELETE", f"/voice/call/callback/{rec['id']}")
    final = s.wait_for(rec["id"], "cancelled", "completed")
    s.wait_no_channels({final["legs"]["A"]["uuid"], final["legs"]["B"]["uuid"]})


@pytest.mark.freeswitch
@pytest.mark.parametrize("country", ["uk", "fr", "au"])
def test_ringback_by_country(media_stack: Stack, country: str) -> None:
    rec = waiting(media_stack, {"ringback": country})
    wait_playing(media_stack, rec["legs"]["A"]["uuid"], ("playback", RINGBACK_TONES[country]))
    assert rec["waiting_media"] == {"ringback": country}
    hang_up(media_stack, rec)


@pytest.mark.freeswitch
def test_an_announcement_then_the_ringback(media_stack: Stack) -> None:
    rec = waiting(media_stack, {"announcement": "welcome", "ringback": "uk"})
    a = rec["legs"]["A"]["uuid"]
    wait_playing(media_stack, a, ("playback", MEDIA["welcome"]))
    wait_playing(media_stack, a, ("playback", RINGBACK_TONES["uk"]), timeout_s=4)
    hang_up(media_stack, rec)


@pytest.mark.freeswitch
def test_music_on_hold_plays_until_the_bridge(media_stack: Stack) -> None:
    rec = waiting(media_stack, {"music": "jazz"})
    wait_playing(media_stack, rec["legs"]["A"]["uuid"], ("endless_playback", MEDIA["jazz"]))
    hang_up(media_stack, rec)
    # and a bridge ends it: B answering while A hears the music
    rec = media_stack.create({"leg_A": {"to": "1000131"}, "leg_B": {"to": "1000132"},
                              "waiting_media": {"music": "jazz"}})
    rec = media_stack.wait_for(rec["id"], "bridged")
    hang_up(media_stack, rec)


def test_media_names_are_checked_against_the_configuration() -> None:
    legs = {"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}}
    settings = dataclasses.replace(load({}), media=MEDIA)
    for bad, says in (({"ringback": "xx"}, "ringback"), ({"music": "Jazz!"}, "music"),
                      ({"ringback": "uk", "music": "jazz"}, "music"), ({"tone": "uk"}, "tone")):
        with pytest.raises(ValidationError) as exc:
            schemas.REQUEST_SCHEMA.load(dict(legs, waiting_media=bad))
        assert says in exc.value.messages["waiting_media"], exc.value.messages
    req = schemas.REQUEST_SCHEMA.load(dict(legs, waiting_media={"music": "blues"}))
    with pytest.raises(ValidationError) as exc:
        schemas.build_callback(req, settings)
    assert exc.value.messages == {"waiting_media": {"music": [
        "no media 'blues' is configured on this server"]}}
    req = schemas.REQUEST_SCHEMA.load(dict(legs, waiting_media={"announcement": "welcome"}))
    assert schemas.build_callback(req, settings).waiting_media == {"announcement": "welcome"}


def test_the_media_file_is_checked_when_the_settings_are_loaded(tmp_path) -> None:
    from fsctl.errors import ConfigError

    path = tmp_path / "media.json"
    path.write_text('{"media": {"moh": "local_stream://moh", "hi": "/srv/hi.wav"}}')
    assert load({"FSCTL_MEDIA_FILE": str(path)}).media == {"moh": "local_stream://moh",
                                                           "hi": "/srv/hi.wav"}
    for doc, says in (('{"media": {"moh": "/a b.wav"}}', "is not allowed"),
                      ('{"media": {"Moh!": "/a.wav"}}', "1-32 of a-z"),
                      ('{"media": ["x"]}', "must hold"), ('{"moh": "/a.wav"}', "must hold"),
                      ('{"media": {"x": "/a.wav\\nexit"}}', "is not allowed")):
        path.write_text(doc)
        with pytest.raises(ConfigError, match=says):
            load({"FSCTL_MEDIA_FILE": str(path)})
