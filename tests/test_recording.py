"""``record``: the bridged conversation recorded with ``uuid_record`` into the operator's
directory; path, length and size in the callback once FreeSWITCH closed the file. On the real
FreeSWITCH the test finds the file and checks its size and length against the talk time."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import gevent
import pytest
from marshmallow import ValidationError
from stack import Stack
from test_callback import UA, UB, answered, make, run

from fsctl import commands, schemas
from fsctl.callback import Bridge, LegSignal, Record, RecordFailed, Start, apply
from fsctl.settings import load

LEGS = {"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}}


def test_the_field_takes_true_false_or_a_mode() -> None:
    for given, mode in ((True, "mixed"), (False, None), ("mixed", "mixed"), ("stereo", "stereo")):
        assert schemas.REQUEST_SCHEMA.load(dict(LEGS, record=given)).get("record") == mode
    for bad in (1, 0, "true", "MIXED", "both", None, [], {"mode": "mixed"}):
        with pytest.raises(ValidationError) as exc:
            schemas.REQUEST_SCHEMA.load(dict(LEGS, record=bad))
        assert "record" in exc.value.messages


def test_recording_needs_a_directory_on_the_server() -> None:
    req = schemas.REQUEST_SCHEMA.load(dict(LEGS, record=True))
    with pytest.raises(ValidationError) as exc:
        schemas.build_callback(req, load({}))
    assert exc.value.messages == {"record": [
        "recording is not enabled on this server (FSCTL_RECORDING_DIR)"]}
    settings = dataclasses.replace(load({}), recording_dir="/var/lib/fsctl/rec")
    cb = schemas.build_callback(req, settings)
    assert cb.recording == {"path": f"/var/lib/fsctl/rec/{cb.id}.wav", "mode": "mixed",
                            "state": "pending"}


def test_the_recording_starts_once_bridged_and_is_done_at_the_hangup() -> None:
    cb = make()
    cb.record, cb.recording = "stereo", {"path": "/r/x.wav", "mode": "stereo", "state": "pending"}
    run(cb, [Start(0.0)] + answered("A", 0.0))
    assert run(cb, answered("B", 1.0)) == [Bridge(UA, UB)]
    assert apply(cb, LegSignal("A", "bridged", 2.0)) == [Record(UA, "/r/x.wav")]
    assert apply(cb, LegSignal("B", "bridged", 2.0)) == []  # once
    run(cb, [LegSignal("B", "hangup", 5.0, cause="NORMAL_CLEARING"),
             LegSignal("A", "hangup", 5.01, cause="NORMAL_CLEARING", record_ms="3010",
                       record_samples="24080")])
    assert cb.recording == {"path": "/r/x.wav", "mode": "stereo", "state": "done", "ms": 3010,
                            "seconds": 3.01, "samples": 24080,
                            "size_bytes": commands.wav_size(24080, 2)}


def test_no_bridge_no_recording_and_a_refused_one_says_so() -> None:
    cb = make()
    cb.record, cb.recording = "mixed", {"path": "/r/x.wav", "mode": "mixed", "state": "pending"}
    run(cb, [Start(0.0), LegSignal("A", "hangup", 1.0, cause="USER_BUSY")])
    assert cb.final and cb.recording["state"] == "none"
    cb = make()
    cb.record, cb.recording = "mixed", {"path": "/r/x.wav", "mode": "mixed", "state": "pending"}
    run(cb, [Start(0.0)] + answered("A", 0.0) + answered("B", 1.0) + [LegSignal("A", "bridged", 2.0)])
    apply(cb, RecordFailed("-ERR Cannot locate session!", 2.1))
    assert cb.recording["state"] == "failed"


def test_the_command_takes_only_a_safe_wav_path() -> None:
    assert commands.uuid_record(UA, "/srv/rec/x.wav") == f"uuid_record {UA} start /srv/rec/x.wav"
    for bad in ("rec/x.wav", "/srv/../etc/x.wav", "/srv/x.mp3", "/srv/x y.wav", "/srv/${x}.wav",
                "/srv/x.wav\nexit"):
        with pytest.raises(commands.InvalidValue):
            commands.uuid_record(UA, bad)


@pytest.fixture
def recorded(redis_url: str, freeswitch_node, tmp_path: Path):
    """fsctl recording into FreeSWITCH's own recordings directory (real) or a temporary one."""
    from support import esl_target

    where = (freeswitch_node.root / "recordings") if freeswitch_node is not None else tmp_path
    s = Stack(redis_url, esl_target(), recording_dir=str(where))
    try:
        yield s, where
    finally:
        s.close()


@pytest.mark.freeswitch
@pytest.mark.parametrize("mode", ["mixed", "stereo"])
def test_a_recorded_call_has_its_file_and_the_file_lasts_the_talk_time(recorded, mode) -> None:
    s, where = recorded
    rec = s.create(dict(LEGS, record=mode))
    rec = s.wait_for(rec["id"], "bridged")
    gevent.sleep(2.0)
    s.http("DELETE", f"/voice/call/callback/{rec['id']}")  # hang up after ~2 s of talk
    final = s.wait_for(rec["id"], "completed")
    s.wait_no_channels({final["legs"]["A"]["uuid"], final["legs"]["B"]["uuid"]})
    got = s.wait_for(rec["id"], "completed")["recording"]
    deadline = time.monotonic() + 5  # A's own hangup (with the record_* variables) may follow
    while got["state"] != "done" and time.monotonic() < deadline:
        gevent.sleep(0.1)
        got = s.get(rec["id"])["recording"]
    assert got["state"] == "done" and got["path"] == f"{where}/{rec['id']}.wav"
    assert got["mode"] == mode and abs(got["seconds"] - final["talk_time_s"]) < 0.5, got
    channels = 2 if mode == "stereo" else 1
    assert got["size_bytes"] == commands.wav_size(got["samples"], channels)
    if s.real:  # the file FreeSWITCH wrote
        path = Path(got["path"])
        assert path.is_file() and path.stat().st_size == got["size_bytes"]
        header = path.read_bytes()[:44]
        assert header[:4] == b"RIFF" and header[8:12] == b"WAVE"
        assert int.from_bytes(header[22:24], "little") == channels
