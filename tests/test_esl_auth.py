"""The ESL login: ClueCon refused, userauth with exactly the commands fsctl uses."""

from __future__ import annotations

import dataclasses
import re
from xml.dom import minidom

import pytest
from stack import Stack
from support import REPO

from fsctl.commands import ESL_API_COMMANDS
from fsctl.errors import ConfigError
from fsctl.esl import ESLClient
from fsctl.events import SUBSCRIBED_EVENTS
from fsctl.settings import load
from fsctl.simulator import SimConfig, SimUser


def user_params() -> dict[str, str]:
    doc = minidom.parse(str(REPO / "freeswitch-conf" / "directory" / "fsctl.local.xml"))
    return {p.getAttribute("name"): p.getAttribute("value")
            for p in doc.getElementsByTagName("param")}


def test_default_password_refused_unless_allowed() -> None:
    with pytest.raises(ConfigError, match="ClueCon"):
        load({"FSCTL_ESL_PASSWORD": "ClueCon"}).check_esl_password()
    with pytest.raises(ConfigError, match="not set"):
        load({}).check_esl_password()
    load({"FSCTL_ESL_PASSWORD": "ClueCon", "FSCTL_ALLOW_DEFAULT_PASSWORD": "1"}).check_esl_password()
    load({"FSCTL_ESL_PASSWORD": "s3cret-and-long"}).check_esl_password()


def test_directory_user_allows_exactly_what_fsctl_uses() -> None:
    params = user_params()
    assert params["esl-allowed-api"].split(",") == list(ESL_API_COMMANDS)
    assert set(params["esl-allowed-events"].split(",")) == set(SUBSCRIBED_EVENTS)
    assert " " not in params["esl-allowed-api"] + params["esl-allowed-events"]
    assert re.fullmatch(r"\$\$\{\w+\}", params["esl-password"])  # from the environment, not here


@pytest.mark.integration
def test_whole_flow_through_userauth_with_that_user(redis_url: str) -> None:
    params = user_params()
    user = SimUser(password="user-secret-123",
                   allowed_api=frozenset(params["esl-allowed-api"].split(",")),
                   allowed_events=frozenset(params["esl-allowed-events"].split(",")))
    sim_config = SimConfig(answer_delay_s=0.3, talk_s=1.0, users={"fsctl@fsctl.local": user})
    s = Stack(redis_url, None, sim_config=sim_config, start_worker=False)
    try:
        s.settings = dataclasses.replace(s.settings, esl_user="fsctl@fsctl.local",
                                         esl_password="user-secret-123",
                                         allow_default_password=False)
        s.start_worker()
        rec = s.create({"leg_A": {"to": "1000123"},
                        "leg_B": {"to": "1000125", "route": "user"}})
        rec = s.wait_for(rec["id"], "completed", timeout_s=8)  # the far end hangs up after 1 s
        assert rec["talk_time_s"] > 0.5
        # the same login may not run anything else
        esl = ESLClient("127.0.0.1", s.sim.port, "user-secret-123", user="fsctl@fsctl.local")
        esl.connect()
        try:
            assert esl.api("hupall NORMAL_CLEARING").startswith("-ERR permission denied")
            assert esl.api("uuid_setvar x y z").startswith("-ERR permission denied")
            assert esl.api("status").startswith("UP") or "ready" in esl.api("status")
        finally:
            esl.close()
    finally:
        s.close()
