"""freeswitch-conf/ as verified on FreeSWITCH 1.11: it starts clean, its secrets fail
closed, its restricted user may do exactly what fsctl does, its SIP profile's media timeout
works. Only in ``make test-freeswitch`` (each test starts its own FreeSWITCH on a copy)."""

from __future__ import annotations

import time
import uuid

import gevent
import pytest
import realfs
from realfs import FreeSwitch

from fsctl.commands import ESL_API_COMMANDS
from fsctl.errors import AuthFailed
from fsctl.esl import ESLClient
from fsctl.events import SUBSCRIBED_EVENTS

pytestmark = [pytest.mark.integration, pytest.mark.real_freeswitch]


@pytest.fixture
def fs(tmp_path):
    node = FreeSwitch(tmp_path / "fs")
    yield node
    node.stop()


def login(fs: FreeSwitch, password: str, user: str | None = None) -> ESLClient:
    client = ESLClient("127.0.0.1", fs.esl_port, password, user=user, connect_timeout_s=3)
    client.connect()
    return client


def test_it_starts_without_a_warning_or_an_error(fs) -> None:
    fs.start()
    assert fs.problems() == [], "\n".join(fs.problems())
    assert "is ready" in fs.api("status")
    assert "1.11" in fs.api("version")


def test_without_the_environment_both_logins_are_locked(tmp_path) -> None:
    """vars.xml: an unset (or weak) FSCTL_ESL_* leaves a random password nobody knows, never
    an empty one (mod_event_socket would make that ClueCon)."""
    fs = FreeSwitch(tmp_path / "fs", env={"FSCTL_ESL_PASSWORD": "short"})
    try:
        fs.start()
        for password, user in (("ClueCon", None), ("", None), ("short", realfs.ESL_USER),
                               ("ClueCon", realfs.ESL_USER), ("locked", None)):
            with pytest.raises(AuthFailed):
                login(fs, password or "x", user)
    finally:
        fs.stop()


def test_the_restricted_user_may_do_exactly_what_fsctl_does(fs) -> None:
    fs.start()
    client = login(fs, fs.password, realfs.ESL_USER)
    try:
        assert "is ready" in client.api("status")
        assert client.api("global_getvar core_uuid").strip()
        assert client.api(f"uuid_exists {uuid.uuid4()}").strip() == "false"
        client.subscribe(list(SUBSCRIBED_EVENTS))
        for command in ("hupall NORMAL_CLEARING", "uuid_setvar x y z", "reloadxml",
                        "fsctl shutdown", "global_setvar a=b", "uuid_dump x"):
            assert client.api(command).startswith("-ERR permission denied"), command
        reply = client.api("global_getvar fsctl_esl_admin_password")
        assert fs.admin_password not in reply  # freeswitch.xml empties the secrets again
    finally:
        client.close()
    assert {"originate", "uuid_bridge", "sched_hangup"} <= set(ESL_API_COMMANDS)


def test_the_media_timeout_hangs_up_a_silent_far_end(fs, tmp_path) -> None:
    """vars.xml's media_timeout (ms; 300000 in the repository, 2000 in this copy)."""
    import sipp

    fs.set_var("media_timeout", 2000)
    fs.start()
    far = sipp.Sipp(tmp_path / "sipp").start()
    client = login(fs, fs.admin_password)
    hangups: list[tuple[str, float]] = []
    leg = str(uuid.uuid4())
    client.on_event(lambda ev: hangups.append((ev.get("Hangup-Cause"), time.monotonic()))
                    if ev.name == "CHANNEL_HANGUP" and ev.get("Unique-ID") == leg else None)
    try:
        client.subscribe(["CHANNEL_HANGUP"])
        t0 = time.monotonic()
        # 10500: answers, then sends no RTP at all and never hangs up by itself
        client.bgapi(f"originate {{origination_uuid={leg}}}sofia/fsctl/1050001@127.0.0.1:"
                     f"{far.port} &park()", str(uuid.uuid4()))
        deadline = time.monotonic() + 10
        while not hangups and time.monotonic() < deadline:
            gevent.sleep(0.1)
        assert hangups, "the silent call was not hung up"
        cause, at = hangups[0]
        assert cause == "MEDIA_TIMEOUT" and 1.5 < at - t0 < 6, (cause, at - t0)
    finally:
        client.close()
        far.stop()
