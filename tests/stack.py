"""The whole service in one process for integration tests: real Redis over TCP, the
simulator (or a real FreeSWITCH) over TCP, the worker, and the API over HTTP."""

from __future__ import annotations

import dataclasses
import http.client
import json
import tempfile
import time
from typing import Any

import gevent
from gevent.pywsgi import WSGIServer
from support import EslTarget

from fsctl.api import create_app
from fsctl.esl import ESLClient
from fsctl.settings import Settings, parse_routes
from fsctl.simulator import SimConfig, Simulator
from fsctl.store import Store, connect
from fsctl.worker import Worker

_TEST_NUMBERS = {"allow": [r"\+?10[0-9]{5,8}"], "deny_prefixes": ["1900"]}
TEST_ROUTES = {
    "default_route": "answer",
    "routes": {
        "answer": {"template": "null/{to}", **_TEST_NUMBERS},
        "ring": {"template": "{null_auto_answer_delay=800}null/{to}", **_TEST_NUMBERS},
        "slow": {"template": "{null_auto_answer_delay=20000}null/{to}", **_TEST_NUMBERS},
        "noanswer": {"template": "{null_enable_auto_answer=false}null/{to}", **_TEST_NUMBERS},
        "busy": {"template": "error/USER_BUSY", **_TEST_NUMBERS},
        "reject": {"template": "{null_hangup_cause=CALL_REJECTED}null/{to}", **_TEST_NUMBERS},
        "user": {"template": "user/{to}", **_TEST_NUMBERS},
    },
}
"""Routes on null/ and error/ endpoints: they behave the same on the simulator and on a
real FreeSWITCH (mod_loopback, mod_dptools)."""
SIM_SIP_PORT = 5090
"""The SIP peer port the "sip" route names on the simulator (which plays every far end)."""


def test_routes(sip_port: int | None) -> dict[str, Any]:
    """TEST_ROUTES plus "sip": a host-fixed sofia route to the sipp switchboard
    (tests/sip/switchboard.xml picks each far end's behaviour from the number)."""
    routes = dict(TEST_ROUTES["routes"])
    routes["sip"] = {"template": f"sofia/fsctl/{{to}}@127.0.0.1:{sip_port or SIM_SIP_PORT}",
                     **_TEST_NUMBERS}
    return {"default_route": TEST_ROUTES["default_route"], "routes": routes}

SEED = {"leg_A": {"to": "1000123", "from": "1000125"},
        "leg_B": {"to": "1000125", "from": "1000123"}}


class Stack:
    """A running fsctl: API + worker on a Redis and an ESL server."""

    def __init__(self, redis_url: str, target: EslTarget | tuple[str, int, str] | None,
                 sim_config: SimConfig | None = None, start_worker: bool = True,
                 **overrides: Any) -> None:
        self.sim: Simulator | None = None
        if target is None:
            self.sim = Simulator(sim_config or SimConfig(answer_delay_s=0.3, talk_s=1.0),
                                 password="sim-secret").start()
            target = EslTarget("127.0.0.1", self.sim.port, "sim-secret")
        elif isinstance(target, tuple):
            target = EslTarget(*target)
        self.target = target
        default_route, routes = parse_routes(test_routes(target.sip_port))
        self.settings = Settings(
            redis_url=redis_url, esl_host=target.host, esl_port=target.port,
            esl_password=target.password, esl_user=target.user,
            allow_default_password=True, default_route=default_route, routes=routes,
            park_margin_s=5, rate_per_minute=1_000_000, max_live=1_000_000,
            dest_max_per_hour=1_000_000, spool_dir=tempfile.mkdtemp(prefix="fsctl-spool-"),
        )
        if overrides:
            self.settings = dataclasses.replace(self.settings, **overrides)
        self.redis = connect(redis_url)
        self.store = Store(self.redis, self.settings.redis_prefix)
        self.app = create_app(self.settings, self.redis)
        self.server = WSGIServer(("127.0.0.1", 0), self.app, log=None)
        self.server.start()
        self.api_port = self.server.server_port
        self.worker: Worker | None = None
        if start_worker:
            self.start_worker()
        self._esl: ESLClient | None = None
        self._watcher: ESLClient | None = None
        self.created: list[tuple[str, str, str]] = []
        """(callback id, leg, channel uuid) of every fsctl channel FreeSWITCH created since
        :meth:`watch_creates` (its CHANNEL_CREATE events, seen on a connection of the test's)."""

    @property
    def real(self) -> bool:
        """Running on a real FreeSWITCH (not the simulator)."""
        return self.sim is None

    @property
    def esl(self) -> ESLClient:
        """The test's own inspection connection (fs_cli's role), reopened if it dropped."""
        if self._esl is None or not self._esl.connected:
            if self._esl is not None:
                self._esl.close()
            self._esl = ESLClient(*self.target.admin)
            self._esl.connect()
        return self._esl

    def watch_creates(self) -> None:
        """Record every CHANNEL_CREATE of an fsctl channel: how often each leg was dialled,
        as FreeSWITCH (or the simulator) saw it."""
        watcher = ESLClient(*self.target.admin)

        def on_event(ev: Any) -> None:
            if ev.name == "CHANNEL_CREATE" and ev.get("variable_fsctl_callback_id"):
                self.created.append((ev.get("variable_fsctl_callback_id"),
                                     ev.get("variable_fsctl_leg"), ev.get("Unique-ID")))

        watcher.on_event(on_event)
        watcher.connect()
        watcher.subscribe(["CHANNEL_CREATE"])
        self._watcher = watcher

    def dials(self, callback_id: str) -> dict[str, int]:
        """How many channels were created for each leg of a callback (see watch_creates)."""
        out: dict[str, int] = {}
        for cid, leg, _uuid in self.created:
            if cid == callback_id:
                out[leg] = out.get(leg, 0) + 1
        return out

    def start_worker(self) -> Worker:
        self.worker = Worker(self.settings, self.store, name="test-worker")
        self.worker.start()
        return self.worker

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        for conn in (self._esl, self._watcher):
            if conn is not None:
                conn.close()
        self.server.stop(timeout=1)
        if self.sim is not None:
            self.sim.stop()
        self.redis.close()
        if self.sim is not None:
            assert self.sim.internal_errors == 0, (
                f"the simulator failed on {self.sim.internal_errors} commands (see its log)")

    # -- HTTP -----------------------------------------------------------------------

    def http(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=10)
        hdrs = {"Content-Type": "application/json"} if (body is not None or raw is not None) else {}
        hdrs.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = payload.decode(errors="replace")
        return resp.status, parsed, dict(resp.getheaders())

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        code, reply, headers = self.http("POST", "/voice/call/callback", body)
        assert code == 202, reply
        assert headers["Location"] == f"/voice/call/callback/{reply['id']}"
        return reply

    def get(self, callback_id: str) -> dict[str, Any]:
        code, reply, _ = self.http("GET", f"/voice/call/callback/{callback_id}")
        assert code == 200, reply
        return reply

    def get_with(self, path: str, token: str) -> dict[str, Any]:
        code, reply, _ = self.http("GET", path, headers={"Authorization": f"Bearer {token}"})
        assert code == 200, reply
        return reply

    def wait_for(self, callback_id: str, *states: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """Poll the API until the callback is in one of ``states``."""
        deadline = time.monotonic() + timeout_s
        while True:
            record = self.get(callback_id)
            if record["state"] in states:
                return record
            if time.monotonic() > deadline:
                raise AssertionError(f"callback still {record['state']} after {timeout_s}s, "
                                     f"wanted {states}: {json.dumps(record, indent=1)}")
            gevent.sleep(0.05)

    def wait_leg(self, callback_id: str, leg: str, state: str,
                 timeout_s: float = 5.0) -> dict[str, Any]:
        """Poll until leg ``leg`` of the callback is in ``state``; returns that leg."""
        deadline = time.monotonic() + timeout_s
        while True:
            record = self.get(callback_id)["legs"][leg]
            if record["state"] == state:
                return record
            if time.monotonic() > deadline:
                raise AssertionError(f"leg {leg} still {record['state']}, wanted {state}")
            gevent.sleep(0.05)

    # -- FreeSWITCH side ------------------------------------------------------------

    def channels(self) -> list[dict[str, str]]:
        reply = json.loads(self.esl.api("show channels as json"))
        return reply.get("rows", [])

    def wait_no_channels(self, uuids: set[str], timeout_s: float = 5.0) -> None:
        """Wait until none of ``uuids`` is a live channel (no orphans)."""
        deadline = time.monotonic() + timeout_s
        while True:
            live = {row["uuid"] for row in self.channels()} & uuids
            if not live:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"orphan channels: {live}")
            gevent.sleep(0.05)

    def kill(self, uuid: str) -> str:
        return self.esl.api(f"uuid_kill {uuid}")
