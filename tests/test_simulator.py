"""The simulator's protocol details, endpoints, api commands and test hooks (real TCP)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import gevent
import pytest
from sim_replay import Client, connect

from fsctl.errors import ConfigError
from fsctl.simulator import FREESWITCH_VARIABLES, Behaviour, SimConfig, Simulator, SimUser, main

PW = "sim-secret"
NOTICE = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimConfig(
        answer_delay_s=0.05, talk_s=0.2, heartbeat_s=3600,
        numbers={"486": Behaviour("busy", 0.0), "603": Behaviour("reject", 0.05),
                 "nobody": Behaviour("no_answer")},
        users={"ops@default": SimUser("opspw", allowed_api=frozenset({"status", "uuid_exists"}))},
    )
    simulator = Simulator(config, password=PW).start()
    yield simulator
    simulator.stop()


def originate(client: Client, leg: str, dial: str, cb: str = "cb1", extra: str = "") -> str:
    leg_uuid = str(uuid.uuid4())
    job = str(uuid.uuid4())
    variables = f"origination_uuid={leg_uuid},fsctl_callback_id={cb},fsctl_leg={leg}{extra}"
    reply = client.cmd(f"bgapi originate {{{variables}}}{dial} &park()", {"Job-UUID": job})
    assert reply.headers == {"Content-Type": "command/reply",
                             "Reply-Text": f"+OK Job-UUID: {job}", "Job-UUID": job}
    return leg_uuid


def names(client: Client, leg_uuid: str) -> list[str]:
    return [e.name for e in client.events() if e.get("Unique-ID") == leg_uuid]


def wait_event(client: Client, name: str, leg_uuid: str | None = None, timeout: float = 5) -> None:
    client.wait_for(lambda: any(e.name == name and (leg_uuid is None
                                                    or e.get("Unique-ID") == leg_uuid)
                                for e in client.events()), timeout, f"{name} {leg_uuid}")


def test_reply_formats(sim: Simulator) -> None:
    client = Client(sim.port)
    assert client.next_frame().content_type == "auth/request"
    assert client.cmd("api status").headers["Reply-Text"] == "-ERR command not found"
    assert client.cmd(f"auth {PW}").headers["Reply-Text"] == "+OK accepted"
    frame = client.cmd("api show channels as json")
    assert frame.headers == {"Content-Type": "api/response", "Content-Length": "17"}
    assert frame.body == b'{"row_count": 0}\n'
    assert client.api("no_such_cmd x") == "-ERR no_such_cmd Command not found!\n"
    unknown = str(uuid.uuid4())
    assert client.api(f"uuid_getvar {unknown} x") == "-ERR No such channel!\n"
    assert client.api(f"uuid_kill {unknown}") == "-ERR No such channel!\n"
    assert client.api(f"uuid_exists {unknown}") == "false"
    assert client.api(f"uuid_bridge {unknown} {uuid.uuid4()}") == "-ERR Invalid uuid\n"
    assert client.api("global_getvar core_uuid") == sim.core_uuid
    assert " is ready\n" in client.api("status")
    reply = client.cmd("bgapi status")  # no Job-UUID given: a uuid4 is generated
    job = reply.headers["Job-UUID"]
    assert str(uuid.UUID(job)) == job and reply.headers["Reply-Text"] == f"+OK Job-UUID: {job}"
    assert client.cmd("bogus").headers["Reply-Text"] == "-ERR command not found"
    assert client.cmd("exit").headers["Reply-Text"] == "+OK bye"
    client.wait_for(lambda: client.closed, 3)
    assert client.frames[-1].body == NOTICE


def test_null_leg_vars_getvar_setvar_and_show(sim: Simulator) -> None:
    client = connect(sim.port, PW, "plain ALL")
    leg = originate(client, "A", "null/9000", extra=",park_timeout=30")
    wait_event(client, "CHANNEL_PARK", leg)
    assert client.api(f"uuid_getvar {leg} fsctl_callback_id") == "cb1"
    assert client.api(f"uuid_getvar {leg} nothing_here") == "_undef_"
    assert client.api(f"uuid_setvar {leg} my_var hello") == "+OK\n"
    assert client.api(f"uuid_getvar {leg} my_var") == "hello"
    assert sim.channels[leg].vars["my_var"] == "hello"
    rows = json.loads(client.api(f"show channels like {leg} as json"))
    assert rows["row_count"] == 1 and rows["rows"][0]["application"] == "park"
    assert "fsctl_callback_id" not in rows["rows"][0]
    assert json.loads(client.api(f"uuid_dump {leg} json"))["variable_fsctl_leg"] == "A"
    assert client.api(f"uuid_kill {leg} NOT_A_CAUSE") == "+OK\n"
    wait_event(client, "CHANNEL_DESTROY", leg)
    hangup = next(e for e in client.events() if e.name == "CHANNEL_HANGUP")
    assert hangup.get("Hangup-Cause") == "NORMAL_CLEARING"
    assert client.api(f"uuid_exists {leg}") == "false"


def test_filters_or_semantics(sim: Simulator) -> None:
    watcher = connect(sim.port, PW, "plain ALL")
    assert watcher.cmd("filter variable_fsctl_callback_id cbX").headers["Reply-Text"] == (
        "+OK filter added. [variable_fsctl_callback_id]=[cbX]")
    client = connect(sim.port, PW)
    mine = originate(client, "A", "null/1", cb="cbX")
    other = originate(client, "A", "null/2", cb="cbY")
    wait_event(watcher, "CHANNEL_PARK", mine)
    gevent.sleep(0.1)
    seen = {e.get("variable_fsctl_callback_id") for e in watcher.events()}
    assert seen == {"cbX"}  # no cbY, and no BACKGROUND_JOB (it has no such header)
    assert watcher.cmd("filter Event-Name BACKGROUND_JOB").headers["Reply-Text"] == (
        "+OK filter added. [Event-Name]=[BACKGROUND_JOB]")
    client.api(f"uuid_kill {other}")
    client.api(f"uuid_kill {mine}")
    wait_event(watcher, "CHANNEL_DESTROY", mine)
    third = originate(client, "A", "null/3", cb="cbZ")
    wait_event(watcher, "BACKGROUND_JOB")
    assert not names(watcher, third)
    assert watcher.cmd("filter delete all").headers["Reply-Text"].startswith("+OK filter deleted")


def test_event_json_and_subscription_by_name(sim: Simulator) -> None:
    watcher = connect(sim.port, PW, "json CHANNEL_ANSWER BACKGROUND_JOB")
    client = connect(sim.port, PW)
    leg = originate(client, "B", "null/7")
    wait_event(watcher, "BACKGROUND_JOB")
    assert {f.content_type for f in watcher.frames if f.event} == {"text/event-json"}
    assert [e.name for e in watcher.events()] == ["CHANNEL_ANSWER", "BACKGROUND_JOB"]
    job = watcher.events()[-1]
    assert job.body == f"+OK {leg}\n" and job.get("Job-Command") == "originate"
    assert job.get("Job-Command-Arg").endswith("null/7 &park()")


def test_api_originate_blocks_and_errors(sim: Simulator) -> None:
    client = connect(sim.port, PW)
    leg = str(uuid.uuid4())
    t0 = time.monotonic()
    body = client.api(f"originate {{origination_uuid={leg},null_auto_answer_delay=300}}null/5 "
                      "&park()")
    assert body == f"+OK {leg}\n" and time.monotonic() - t0 >= 0.25
    assert client.api(f"originate {{origination_uuid={leg}}}null/6 &park()") == (
        "-ERR DESTINATION_OUT_OF_ORDER\n")
    assert client.api("originate error/USER_BUSY &park()") == "-ERR USER_BUSY\n"
    assert client.api("originate {null_hangup_cause=CALL_REJECTED}null/8 &park()") == (
        "-ERR CALL_REJECTED\n")
    assert client.api("originate").startswith("-USAGE: ")


def test_sip_like_default_answer_bridge_and_far_end_bye(sim: Simulator) -> None:
    client = connect(sim.port, PW, "plain ALL")
    a = originate(client, "A", "sofia/gateway/carrier/1000123")
    b = originate(client, "B", "user/1000125")
    wait_event(client, "CHANNEL_PARK", a)
    wait_event(client, "CHANNEL_PARK", b)
    assert "CHANNEL_PROGRESS" in names(client, a)
    assert client.api(f"uuid_bridge {a} {b}") == f"+OK {b}\n"
    wait_event(client, "CHANNEL_DESTROY", a)
    wait_event(client, "CHANNEL_DESTROY", b)
    bridge = next(e for e in client.events() if e.name == "CHANNEL_BRIDGE")
    assert (bridge.get("Bridge-A-Unique-ID"), bridge.get("Bridge-B-Unique-ID")) == (a, b)
    assert bridge.get("Other-Leg-Unique-ID") == b and bridge.get("Unique-ID") == a
    hangups = [e for e in client.events() if e.name == "CHANNEL_HANGUP"]
    assert all(e.get("Hangup-Cause") == "NORMAL_CLEARING" for e in hangups)
    # as sip_both_legs.rx: a BYE's disposition is reported on HANGUP_COMPLETE, not HANGUP
    assert hangups[0].get("variable_sip_term_status") == "200"
    assert hangups[0].get("variable_sip_hangup_disposition") is None
    completes = {e.get("Unique-ID"): e for e in client.events()
                 if e.name == "CHANNEL_HANGUP_COMPLETE"}
    assert completes[hangups[0].get("Unique-ID")].get(
        "variable_sip_hangup_disposition") == "recv_bye"
    assert not sim.channels


def test_busy_reject_and_no_answer_overrides(sim: Simulator) -> None:
    client = connect(sim.port, PW, "plain ALL")
    busy = originate(client, "A", "sofia/gw/486")
    rejected = originate(client, "A", "sofia/gw/603")
    silent = originate(client, "A", "sofia/gw/nobody", extra=",originate_timeout=1")
    for leg in (busy, rejected, silent):
        wait_event(client, "CHANNEL_DESTROY", leg, timeout=3)
    causes = {e.get("Unique-ID"): e for e in client.events() if e.name == "CHANNEL_HANGUP"}
    assert causes[busy].get("Hangup-Cause") == "USER_BUSY"
    assert causes[busy].get("variable_sip_invite_failure_status") == "486"
    assert causes[busy].get("variable_sip_term_status") == "486"
    assert causes[rejected].get("Hangup-Cause") == "CALL_REJECTED"
    assert causes[silent].get("Hangup-Cause") == "NO_ANSWER"
    bodies = sorted(e.body for e in client.events() if e.name == "BACKGROUND_JOB")
    assert bodies == ["-ERR CALL_REJECTED\n", "-ERR NO_ANSWER\n", "-ERR USER_BUSY\n"]


def test_userauth_permissions(sim: Simulator) -> None:
    client = Client(sim.port)
    client.next_frame()
    assert client.cmd("userauth ops@default:opspw").headers["Reply-Text"] == "+OK accepted"
    assert " is ready" in client.api("status")
    assert client.cmd("api originate null/1 &park()").headers["Reply-Text"] == (
        "-ERR permission denied")
    assert client.cmd("bgapi uuid_kill x").headers["Reply-Text"] == "-ERR permission denied"
    bad = Client(sim.port)
    bad.next_frame()
    assert bad.cmd("userauth ops@default:wrong").headers["Reply-Text"] == "-ERR invalid"
    bad.wait_for(lambda: bad.closed, 3)


def test_hooks_commands_blackhole_restart(sim: Simulator) -> None:
    client = connect(sim.port, PW, "plain ALL")
    leg = originate(client, "A", "null/1")
    wait_event(client, "CHANNEL_PARK", leg)
    texts = [c.text for c in sim.commands]
    assert texts[:2] == [f"auth {PW}", "event plain ALL"]
    assert any(c.text.startswith("bgapi originate") and "Job-UUID" in c.headers
               for c in sim.commands)
    sim.blackhole = True
    before = len(client.frames)
    client.send("api status")
    gevent.sleep(0.3)
    assert sim.commands[-1].text == "api status" and not client.closed
    assert len(client.frames) == before  # no reply, no event
    sim.blackhole = False
    old_core = sim.core_uuid
    sim.restart()
    client.wait_for(lambda: client.closed, 3, "connection cut by restart")
    assert not any(e.name == "CHANNEL_HANGUP" for e in client.events())
    assert not sim.channels and sim.core_uuid != old_core
    again = connect(sim.port, PW)
    assert again.api("global_getvar core_uuid") == sim.core_uuid
    assert again.api(f"uuid_exists {leg}") == "false"
    sim.drop_connections()
    again.wait_for(lambda: again.closed, 3)


def test_hupall_sched_hangup_and_broadcast(sim: Simulator) -> None:
    client = connect(sim.port, PW, "plain ALL")
    a = originate(client, "A", "null/1", cb="k1")
    b = originate(client, "A", "null/2", cb="k2")
    wait_event(client, "CHANNEL_PARK", a)
    wait_event(client, "CHANNEL_PARK", b)
    assert client.api(f"uuid_broadcast {a} playback::tone_stream://%(1,1,440);loops=-1 aleg") == (
        "+OK Message sent\n")
    wait_event(client, "PLAYBACK_START", a)
    assert client.api(f"uuid_break {a}") == "+OK\n"
    wait_event(client, "PLAYBACK_STOP", a)
    assert client.api("hupall MANAGER_REQUEST fsctl_callback_id k1") == (
        "+OK hangup all channels matching [fsctl_callback_id]=[k1] with cause: MANAGER_REQUEST\n")
    wait_event(client, "CHANNEL_DESTROY", a)
    assert b in sim.channels
    assert client.api(f"sched_hangup +0.2 {b} ALLOTTED_TIMEOUT") == "+OK\n"
    wait_event(client, "CHANNEL_DESTROY", b)
    causes = {e.get("Unique-ID"): e.get("Hangup-Cause") for e in client.events()
              if e.name == "CHANNEL_HANGUP"}
    assert causes == {a: "MANAGER_REQUEST", b: "ALLOTTED_TIMEOUT"}


def test_heartbeat_and_stop_notice() -> None:
    simulator = Simulator(SimConfig(heartbeat_s=0.1), password=PW).start()
    client = connect(simulator.port, PW, "plain HEARTBEAT")
    wait_event(client, "HEARTBEAT", timeout=2)
    beat = client.events()[0]
    assert beat.get("Core-UUID") == simulator.core_uuid and beat.get("Event-Info")
    simulator.stop()
    client.wait_for(lambda: client.closed, 3)
    assert client.frames[-1].content_type == "text/disconnect-notice"


def test_reload_mod_event_socket_drops_everyone(sim: Simulator) -> None:
    victim = connect(sim.port, PW)
    client = connect(sim.port, PW)
    client.send("api reload mod_event_socket")
    victim.wait_for(lambda: victim.closed, 3)


def test_loopback_only_and_cli_password(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError):
        Simulator(host="0.0.0.0", password=PW)
    with pytest.raises(ConfigError):
        Simulator()
    monkeypatch.delenv("FSCTL_SIM_TEST_PW", raising=False)
    assert main(["--password-env", "FSCTL_SIM_TEST_PW", "--port", "0"]) == 2
    monkeypatch.setenv("FSCTL_SIM_TEST_PW", "ClueCon")
    assert main(["--password-env", "FSCTL_SIM_TEST_PW", "--port", "0"]) == 2
    assert main(["--host", "0.0.0.0", "--allow-default-password", "--port", "0"]) == 2


def test_every_variable_the_simulator_sets_is_one_freeswitch_sets(sim: Simulator) -> None:
    """Flows the recordings do not have (a 603 after ringing, no answer, gateway and user/
    legs, a playback that is broken off, hupall) set no variable a real FreeSWITCH never set
    by itself in the recordings (FREESWITCH_VARIABLES)."""
    client = connect(sim.port, PW, "plain ALL")
    legs = [originate(client, "A", "sofia/gw/486"), originate(client, "A", "sofia/gw/603"),
            originate(client, "A", "sofia/gw/nobody", extra=",originate_timeout=1")]
    a = originate(client, "A", "sofia/gateway/carrier/1000123")
    b = originate(client, "B", "user/1000125")
    c = originate(client, "A", "null/77", extra=",park_timeout=30")
    for leg in (a, b, c):
        wait_event(client, "CHANNEL_PARK", leg)
    assert client.api(f"uuid_broadcast {c} playback::tone_stream://%(1,1,440) aleg") == (
        "+OK Message sent\n")
    wait_event(client, "PLAYBACK_START", c)
    assert client.api(f"uuid_break {c}") == "+OK\n"
    assert client.api(f"uuid_bridge {a} {b}") == f"+OK {b}\n"
    wait_event(client, "PLAYBACK_STOP", c)
    assert client.api("hupall MANAGER_REQUEST") == (
        "+OK hangup all channels with cause MANAGER_REQUEST\n")
    for leg in legs + [a, b, c]:
        wait_event(client, "CHANNEL_DESTROY", leg, timeout=3)
    requested = {"origination_uuid", "fsctl_callback_id", "fsctl_leg", "originate_timeout",
                 "park_timeout"}
    names = {k[len("variable_"):] for e in client.events() for k in e.headers
             if k.startswith("variable_")}
    assert names - requested - FREESWITCH_VARIABLES == set()
    assert len(names) > 150  # sofia legs: every variable a real one carries


def test_early_media_and_a_cancelled_invite_on_a_profile_without_recordings_of_them() -> None:
    """A 183 with SDP before the 200 (the derived templates of a gateway leg: no recording
    has early media on that profile) and an INVITE cancelled while ringing (uuid_kill):
    FreeSWITCH's events and variables as sip_early_media / sip_no_answer show them."""
    config = SimConfig(heartbeat_s=3600, numbers={
        "183": Behaviour("answer", 0.1, None, early_media=True), "ring": Behaviour("no_answer")})
    simulator = Simulator(config, password=PW).start()
    try:
        client = connect(simulator.port, PW, "plain ALL")
        early = originate(client, "A", "sofia/gateway/carrier/183")
        ringing = originate(client, "B", "sofia/gateway/carrier/ring")
        wait_event(client, "CHANNEL_PARK", early)
        wait_event(client, "CHANNEL_PROGRESS", ringing)
        assert client.api(f"uuid_kill {ringing}") == "+OK\n"
        wait_event(client, "CHANNEL_DESTROY", ringing)
        events = {e.name: e for e in client.events() if e.get("Unique-ID") == early}
        assert [(e.name, e.get("Answer-State"), e.get("Channel-Call-State"))
                for e in client.events() if e.get("Unique-ID") == early][6:13] == [
            ("CHANNEL_PROGRESS_MEDIA", "early", "DOWN"), ("CHANNEL_CALLSTATE", "early", "EARLY"),
            ("CODEC", "early", "EARLY"), ("CODEC", "early", "EARLY"),
            ("CHANNEL_ANSWER", "answered", "EARLY"), ("CHANNEL_CALLSTATE", "answered", "ACTIVE"),
            ("CALL_UPDATE", "answered", "ACTIVE")]
        assert "CHANNEL_PROGRESS" not in events
        media = events["CHANNEL_PROGRESS_MEDIA"]
        assert media.get("variable_endpoint_disposition") == "EARLY MEDIA"
        assert media.get("variable_switch_r_sdp") != events["CHANNEL_ANSWER"].get(
            "variable_switch_r_sdp")  # the 200's SDP, one version up
        assert events["CALL_UPDATE"].get("variable_endpoint_disposition") == "ANSWER"
        assert events["CHANNEL_ANSWER"].get("variable_rtp_2833_send_payload") == "101"
        done = next(e for e in client.events() if e.name == "CHANNEL_HANGUP_COMPLETE"
                    and e.get("Unique-ID") == ringing)
        assert (done.get("variable_sip_hangup_disposition"),
                done.get("variable_sip_invite_failure_status"),
                done.get("variable_sip_invite_failure_phrase"),
                done.get("variable_sip_term_status")) == ("send_cancel", "487", "CANCEL", None)
        requested = {"origination_uuid", "fsctl_callback_id", "fsctl_leg"}
        names = {k[len("variable_"):] for e in client.events() for k in e.headers
                 if k.startswith("variable_")}
        assert names - requested - FREESWITCH_VARIABLES == set()
    finally:
        simulator.stop()


def test_park_timeout_ends_with_the_park(sim: Simulator) -> None:
    """park_timeout is the park application's: a leg bridged out of park outlives it, a leg
    left parked is hung up by it (switch_ivr_park)."""
    client = connect(sim.port, PW, "plain ALL")
    a = originate(client, "A", "null/9001", extra=",park_timeout=1")
    b = originate(client, "B", "null/9002", extra=",park_timeout=1")
    left = originate(client, "A", "null/9003", cb="cb2", extra=",park_timeout=1")
    for leg in (a, b, left):
        wait_event(client, "CHANNEL_PARK", leg)
    assert client.api(f"uuid_bridge {a} {b}") == f"+OK {b}\n"
    wait_event(client, "CHANNEL_HANGUP", left, timeout=3)
    gevent.sleep(1.2)  # past every park_timeout armed above
    assert a in sim.channels and b in sim.channels and left not in sim.channels
    assert not any(e.name == "CHANNEL_HANGUP" and e.get("Unique-ID") in (a, b)
                   for e in client.events())


def test_a_command_that_fails_inside_the_simulator_is_logged_and_counted(
        sim: Simulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A simulator defect never passes for FreeSWITCH behaviour: the failing command is
    logged with its traceback and counted (tests/stack.py fails a test on it), and only the
    connection that sent it is dropped."""
    def broken(job: object) -> None:
        raise TypeError("a defect")

    other = connect(sim.port, PW)
    client = connect(sim.port, PW)
    monkeypatch.setattr(sim.model, "originate", broken)
    with caplog.at_level("ERROR", logger="fsctl.simulator.connection"):
        client.sock.sendall(b"bgapi originate {origination_uuid=x}null/1 &park()\n\n")
        client.wait_for(lambda: client.closed, 5, "the connection dropped")
    assert sim.internal_errors == 1
    failed = [r for r in caplog.records if "failed; closing it" in r.getMessage()]
    assert failed and failed[0].exc_info is not None
    assert "bgapi originate" in failed[0].getMessage()
    assert other.cmd("api status").headers["Content-Type"] == "api/response"
    sim.internal_errors = 0  # (expected here)
