"""The fs_cli commands of the README, proved against the simulator (or FreeSWITCH)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


def test_from_callback_id_to_channels_and_back(stack) -> None:
    rec = stack.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125", "route": "ring"}})
    cid = rec["id"]
    rec = stack.wait_for(cid, "bridged", timeout_s=5)
    a, b = rec["legs"]["A"]["uuid"], rec["legs"]["B"]["uuid"]
    # fs_cli> show channels as json  — both legs are there
    rows = json.loads(stack.esl.api("show channels as json"))["rows"]
    assert {a, b} <= {row["uuid"] for row in rows}
    # fs_cli> uuid_getvar <uuid> fsctl_callback_id  — back to the callback
    assert stack.esl.api(f"uuid_getvar {a} fsctl_callback_id") == cid
    assert stack.esl.api(f"uuid_getvar {b} fsctl_leg") == "B"
    # fs_cli> uuid_dump <uuid>  — every tag of the leg
    dump = stack.esl.api(f"uuid_dump {b}")
    assert f"variable_fsctl_callback_id: {cid}" in dump
    assert "variable_fsctl_leg: B" in dump
    # fs_cli> show channels like <uuid> as json
    like = json.loads(stack.esl.api(f"show channels like {a} as json"))
    assert like["row_count"] == 1 and like["rows"][0]["uuid"] == a
    # fs_cli> hupall NORMAL_CLEARING fsctl_callback_id <id>  — hang up a callback's legs
    stack.esl.api(f"hupall NORMAL_CLEARING fsctl_callback_id {cid}")
    stack.wait_for(cid, "completed")
    stack.wait_no_channels({a, b})
    assert stack.esl.api(f"uuid_exists {a}") == "false"
