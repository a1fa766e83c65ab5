"""The callback controller a team would first write with stock greenswitch (benchmark only).

    python tests/bench/stock_controller.py api --port 8090 --redis redis://127.0.0.1:6379/0
    python tests/bench/stock_controller.py worker --esl 127.0.0.1:8021:secret \\
        --redis redis://127.0.0.1:6379/0

Two processes, like fsctl's api and worker, written the straightforward way:

- ``api``: a small Flask app served by gevent's WSGIServer. ``POST /voice/call/callback``
  with ``{"leg_A": {"to": ...}, "leg_B": {"to": ...}}`` stores the callback as a Redis hash
  (``stock:callback:<id>``, with ``created_at``) and pushes its id on ``stock:jobs``
  (one MULTI/EXEC), answering 202 ``{"id": ...}``; ``GET /voice/call/callback/<id>``.
- ``worker``: greenswitch 0.0.19's ``InboundESL`` with ``event plain ALL``, greenswitch's
  own parser and ``register_handle`` handlers, and a greenlet per call: originate A, wait
  for its answer, originate B, wait until B is parked, ``uuid_bridge``, wait for both
  hangups, write the final state (``state`` in the hash, the id added to
  ``stock:final:<state>``). Handlers find a leg by its Unique-ID (fsctl's
  ``origination_uuid`` pattern) and set the AsyncResults the call's greenlet waits on.

What it does not do, next to fsctl: no ringback to the waiting leg, no recovery after a
restart, no limits, no reconnect (the worker exits when FreeSWITCH goes away).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402
from gevent.event import AsyncResult  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402
from greenswitch import InboundESL  # noqa: E402

log = logging.getLogger(__name__)

PREFIX = "stock"
JOBS = f"{PREFIX}:jobs"
NUMBER_RE = re.compile(r"^\+?[0-9]{4,15}$")
DIAL_TEMPLATE = "user/{to}"
"""The route both controllers use in the benchmark (the simulator's SIP-like legs)."""
RING_TIMEOUT_S = 30
ANSWER_WAIT_S = RING_TIMEOUT_S + 5
"""Longest wait for a leg's answer (FreeSWITCH gives up after originate_timeout)."""
PARK_WAIT_S = 10
"""Longest wait for a leg answered to be parked."""
MAX_CALL_S = 4 * 3600
"""Longest wait for the hangups of a bridged call."""


def callback_key(cid: str) -> str:
    return f"{PREFIX}:callback:{cid}"


# ---- api ---------------------------------------------------------------------------------


def create_app(r: redis.Redis) -> Flask:
    """The HTTP API: accept a callback, store it, queue it for the worker."""
    app = Flask(__name__)

    @app.post("/voice/call/callback")
    def create_callback() -> Any:
        body = request.get_json(silent=True) or {}
        try:
            to_a = str(body["leg_A"]["to"])
            to_b = str(body["leg_B"]["to"])
        except (KeyError, TypeError):
            return jsonify(error="leg_A.to and leg_B.to are required"), 400
        if not (NUMBER_RE.match(to_a) and NUMBER_RE.match(to_b)):
            return jsonify(error="bad number"), 400
        cid = uuid.uuid4().hex
        pipe = r.pipeline()
        pipe.hset(callback_key(cid), mapping={"to_a": to_a, "to_b": to_b, "state": "queued",
                                              "created_at": repr(time.time())})
        pipe.rpush(JOBS, cid)
        pipe.execute()
        return jsonify(id=cid, state="queued"), 202

    @app.get("/voice/call/callback/<cid>")
    def get_callback(cid: str) -> Any:
        rec = r.hgetall(callback_key(cid))
        if not rec:
            return jsonify(error="not found"), 404
        return jsonify(id=cid, **rec)

    return app


def run_api(port: int, redis_url: str) -> None:
    app = create_app(redis.Redis.from_url(redis_url, decode_responses=True))
    server = WSGIServer(("127.0.0.1", port), app, log=None)
    log.warning("stock api on 127.0.0.1:%d", port)
    server.serve_forever()


# ---- worker ------------------------------------------------------------------------------


class CallFailed(Exception):
    """A leg hung up (or never answered) before the call could be bridged."""


class Leg:
    """What a call's greenlet waits for on one leg; set by the event handlers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.answered: AsyncResult = AsyncResult()
        self.parked: AsyncResult = AsyncResult()
        self.hungup: AsyncResult = AsyncResult()


class StockWorker:
    """Jobs from Redis in, one greenlet per call, events from greenswitch's handlers."""

    def __init__(self, esl: InboundESL, r: redis.Redis) -> None:
        self.esl = esl
        self.r = r
        self.legs: dict[str, Leg] = {}
        for name, handler in (("CHANNEL_ANSWER", self.on_answer), ("CHANNEL_PARK", self.on_park),
                              ("CHANNEL_HANGUP_COMPLETE", self.on_hangup),
                              ("DISCONNECT", self.on_disconnect)):
            esl.register_handle(name, handler)

    # -- handlers (greenswitch's event greenlet) --

    def on_answer(self, event: Any) -> None:
        leg = self.legs.get(event.headers.get("Unique-ID"))
        if leg is not None and not leg.answered.ready():
            leg.answered.set(event)

    def on_park(self, event: Any) -> None:
        leg = self.legs.get(event.headers.get("Unique-ID"))
        if leg is not None and not leg.parked.ready():
            leg.parked.set(event)

    def on_hangup(self, event: Any) -> None:
        leg = self.legs.get(event.headers.get("Unique-ID"))
        if leg is None:
            return
        cause = event.headers.get("Hangup-Cause", "UNKNOWN")
        leg.hungup.set(cause)
        for waiter in (leg.answered, leg.parked):
            if not waiter.ready():
                waiter.set_exception(CallFailed(f"leg {leg.name} hung up: {cause}"))

    def on_disconnect(self, event: Any) -> None:
        log.error("FreeSWITCH went away; exiting")
        os._exit(1)  # greenswitch's handler wrapper catches everything, SystemExit too

    # -- one greenlet per call --

    def originate(self, cid: str, leg: str, leg_uuid: str, to: str, caller: str) -> None:
        variables = (f"origination_uuid={leg_uuid},fsctl_callback_id={cid},fsctl_leg={leg},"
                     f"origination_caller_id_number={caller},originate_timeout={RING_TIMEOUT_S}")
        dial = DIAL_TEMPLATE.format(to=to)
        self.esl.send(f"bgapi originate {{{variables}}}{dial} &park()")

    def run_call(self, cid: str) -> None:
        key = callback_key(cid)
        rec = self.r.hgetall(key)
        a_uuid, b_uuid = str(uuid.uuid4()), str(uuid.uuid4())
        a, b = Leg("A"), Leg("B")
        self.legs[a_uuid] = a
        self.legs[b_uuid] = b
        try:
            self.r.hset(key, mapping={"state": "dialing", "a_uuid": a_uuid, "b_uuid": b_uuid})
            self.originate(cid, "A", a_uuid, rec["to_a"], rec["to_b"])
            a.answered.get(timeout=ANSWER_WAIT_S)
            self.r.hset(key, "state", "waiting")
            self.originate(cid, "B", b_uuid, rec["to_b"], rec["to_a"])
            b.answered.get(timeout=ANSWER_WAIT_S)
            a.parked.get(timeout=PARK_WAIT_S)
            b.parked.get(timeout=PARK_WAIT_S)
            reply = self.esl.send(f"api uuid_bridge {a_uuid} {b_uuid}")
            if not reply.data.startswith("+OK"):
                raise CallFailed(f"uuid_bridge: {reply.data.strip()}")
            self.r.hset(key, "state", "bridged")
            a.hungup.get(timeout=MAX_CALL_S)
            b.hungup.get(timeout=MAX_CALL_S)
            self.finish(cid, "completed", "")
        except (CallFailed, gevent.Timeout) as exc:
            self.esl.send(f"api uuid_kill {a_uuid}")
            self.esl.send(f"api uuid_kill {b_uuid}")
            self.finish(cid, "failed", str(exc) or type(exc).__name__)
        finally:
            self.legs.pop(a_uuid, None)
            self.legs.pop(b_uuid, None)

    def finish(self, cid: str, state: str, reason: str) -> None:
        pipe = self.r.pipeline()
        pipe.hset(callback_key(cid), mapping={"state": state, "reason": reason,
                                              "ended_at": repr(time.time())})
        pipe.sadd(f"{PREFIX}:final:{state}", cid)
        pipe.execute()

    def run(self) -> None:
        """Take jobs off the queue for ever, each in a greenlet of its own."""
        while True:
            item = self.r.blpop([JOBS], timeout=1)
            if item is not None:
                gevent.spawn(self.run_call, item[1])


def run_worker(esl_spec: str, redis_url: str) -> None:
    host, port, password = esl_spec.split(":", 2)
    esl = InboundESL(host=host, port=int(port), password=password)
    esl.connect()
    esl.send("event plain ALL")
    log.warning("stock worker connected to %s:%s", host, port)
    StockWorker(esl, redis.Redis.from_url(redis_url, decode_responses=True)).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="stock-greenswitch callback controller")
    sub = parser.add_subparsers(dest="cmd", required=True)
    api = sub.add_parser("api")
    api.add_argument("--port", type=int, required=True)
    api.add_argument("--redis", required=True)
    worker = sub.add_parser("worker")
    worker.add_argument("--esl", required=True, help="host:port:password")
    worker.add_argument("--redis", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    if args.cmd == "api":
        run_api(args.port, args.redis)
    else:
        run_worker(args.esl, args.redis)
    return 0


if __name__ == "__main__":
    sys.exit(main())
