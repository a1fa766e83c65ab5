"""The API's contract beyond the happy path: one error payload everywhere, unknown query
parameters refused, Idempotency-Key bound to its request, a pending cancel shown, list
summaries. Real redis-server, the API over HTTP on a real socket."""

from __future__ import annotations

import json

import gevent
import pytest
import redis as redislib
from stack import SEED, Stack
from support import esl_target

from fsctl.api import request_fingerprint
from fsctl.auth import hash_token, parse_tokens
from fsctl.model import FINAL_STATES
from fsctl.store import IDEMPOTENCY_PROCESSING_TTL_S, IDEMPOTENCY_TTL_S

pytestmark = pytest.mark.integration

BASE = "/voice/call/callback"
OTHER = {"leg_A": {"to": "1000777"}, "leg_B": {"to": "1000778"}}


def jobs(s: Stack) -> int:
    return s.redis.xlen(s.store.keys.jobs)


def assert_error(code: int, reply: dict, expected: int) -> None:
    """The one error shape: code, status, message and an ``errors`` object."""
    assert code == expected, reply
    assert reply["code"] == expected and reply["status"] and reply["message"], reply
    assert isinstance(reply.get("errors"), dict), reply


# -- one error payload --------------------------------------------------------------------------


def test_every_error_carries_errors(api) -> None:
    cases = [
        ("POST", BASE, {"raw": b"{not json"}, 400, "_body"),
        ("GET", f"{BASE}?colour=red", {}, 400, "colour"),
        ("GET", f"{BASE}/{'0' * 32}", {}, 404, "callback_id"),
        ("DELETE", f"{BASE}/{'0' * 32}", {}, 404, "callback_id"),
        ("GET", "/nowhere", {}, 404, None),
        ("PUT", BASE, {"body": SEED}, 405, "method"),
        ("POST", BASE, {"raw": b"x" * 20000}, 413, "_body"),
        ("POST", BASE, {"raw": b"{}", "headers": {"Content-Type": "text/plain"}}, 415,
         "Content-Type"),
        ("POST", BASE, {"body": {"leg_A": {}}}, 422, "leg_A"),
    ]
    for method, path, kwargs, expected, field in cases:
        code, reply, _ = api.http(method, path, **kwargs)
        assert_error(code, reply, expected)
        if field is not None:
            assert field in reply["errors"], (method, path, reply)
    assert jobs(api) == 0


def test_405_names_the_allowed_methods(api) -> None:
    code, reply, headers = api.http("PUT", BASE, SEED)
    assert_error(code, reply, 405)
    allowed = {m.strip() for m in headers["Allow"].split(",")}
    assert {"GET", "POST"} <= allowed and "PUT" not in allowed
    code, reply, headers = api.http("POST", f"{BASE}/{'0' * 32}", SEED)
    assert_error(code, reply, 405)
    assert {"GET", "DELETE"} <= {m.strip() for m in headers["Allow"].split(",")}


def test_401_and_403_carry_errors(redis_url: str) -> None:
    tokens = parse_tokens({"tokens": {"reader": {"sha256": hash_token("fsk_reader_contract"),
                                                 "permissions": ["callbacks:read"]}}})
    s = Stack(redis_url, esl_target(), start_worker=False, tokens=tokens)
    try:
        code, reply, headers = s.http("POST", BASE, SEED)
        assert_error(code, reply, 401)
        assert "Authorization" in reply["errors"] and headers["WWW-Authenticate"]
        code, reply, _ = s.http("POST", BASE, SEED,
                                headers={"Authorization": "Bearer fsk_reader_contract"})
        assert_error(code, reply, 403)
        assert "Authorization" in reply["errors"]
    finally:
        s.close()


class Probe:
    """HTTP to an API server that is not a whole Stack."""

    http = Stack.http

    def __init__(self, port: int) -> None:
        self.api_port = port


def test_503_carries_errors() -> None:
    from gevent.pywsgi import WSGIServer
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    from stack import TEST_ROUTES

    from fsctl.api import create_app
    from fsctl.embedded import free_port
    from fsctl.settings import Settings, parse_routes

    default_route, routes = parse_routes(TEST_ROUTES)
    dead = redislib.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1,
                          retry=Retry(NoBackoff(), 0))
    app = create_app(Settings(default_route=default_route, routes=routes), dead)
    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    try:
        probe = Probe(server.server_port)
        for method, path, body in (("GET", "/health/ready", None), ("POST", BASE, SEED),
                                   ("GET", BASE, None)):
            code, reply, headers = probe.http(method, path, body)
            assert_error(code, reply, 503)
            assert headers["Retry-After"] == "1"
    finally:
        server.stop(timeout=1)
        dead.close()


# -- unknown query parameters --------------------------------------------------------------------


def test_unknown_query_parameters_are_refused_on_every_endpoint(api) -> None:
    rec = api.create(SEED)
    one = f"{BASE}/{rec['id']}"
    for method, path in (("GET", "/health"), ("GET", "/health/ready"), ("GET", "/openapi.json"),
                         ("GET", "/docs"), ("GET", "/docs/docs.js"), ("GET", BASE),
                         ("GET", one), ("DELETE", one), ("POST", BASE)):
        code, reply, _ = api.http(method, f"{path}?stat=queued&x=1",
                                  SEED if method == "POST" else None)
        assert_error(code, reply, 400)
        assert set(reply["errors"]) == {"stat", "x"}, (method, path, reply)
        assert "'stat'" in reply["message"]
    # nothing happened: no second callback, the DELETE cancelled nothing
    assert jobs(api) == 1 and api.get(rec["id"])["state"] == "queued"
    # the parameters an endpoint does take still work
    code, page, _ = api.http("GET", f"{BASE}?state=queued&limit=5")
    assert code == 200 and [i["id"] for i in page["items"]] == [rec["id"]]


# -- Idempotency-Key ---------------------------------------------------------------------------


def post(s: Stack, body: dict, key: str, **kwargs) -> tuple[int, dict, dict]:
    return s.http("POST", BASE, body, headers={"Idempotency-Key": key}, **kwargs)


def test_same_key_with_another_body_is_422_and_places_nothing(api) -> None:
    code, first, _ = post(api, SEED, "order-1")
    assert code == 202
    code, reply, headers = post(api, OTHER, "order-1")
    assert_error(code, reply, 422)
    assert "Idempotency-Key" in reply["errors"] and "Idempotent-Replay" not in headers
    assert jobs(api) == 1
    code, page, _ = api.http("GET", BASE)
    assert [i["id"] for i in page["items"]] == [first["id"]]


def test_same_key_same_body_replays_whatever_the_key_order_and_spacing(api) -> None:
    code, first, h1 = post(api, SEED, "order-2")
    assert code == 202 and "Idempotent-Replay" not in h1
    reordered = json.dumps({"leg_B": SEED["leg_B"], "leg_A": SEED["leg_A"]}, indent=3).encode()
    code, again, h2 = post(api, {}, "order-2", raw=reordered)
    assert code == 202 and again["id"] == first["id"]
    assert h2["Idempotent-Replay"] == "true" and h2["Location"] == h1["Location"]
    assert jobs(api) == 1


def test_a_key_in_processing_answers_409_until_its_request_is_done(api) -> None:
    """The first request is another API process's that has claimed the key (as the API does,
    with the same fingerprint) and not answered yet."""
    claim = api.store.idempotency_begin(None, "order-3", request_fingerprint(SEED))
    assert claim.verdict == "new" and claim.claim
    code, reply, headers = post(api, SEED, "order-3")
    assert_error(code, reply, 409)
    assert headers["Retry-After"] == "1" and "Idempotency-Key" in reply["errors"]
    code, reply, _ = post(api, OTHER, "order-3")  # another body: a mismatch whatever the state
    assert_error(code, reply, 422)
    assert jobs(api) == 0
    # the first request was refused and let the key go: the retry is processed as new
    assert api.store.idempotency_release(None, "order-3", claim.claim)
    code, _, headers = post(api, SEED, "order-3")
    assert code == 202 and "Idempotent-Replay" not in headers and jobs(api) == 1


def test_a_refused_request_leaves_its_key_unused(api) -> None:
    bad = {"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000123"}}  # the same number twice
    code, reply, _ = post(api, bad, "order-4")
    assert_error(code, reply, 422)
    code, _, headers = post(api, SEED, "order-4")  # corrected, same key
    assert code == 202 and "Idempotent-Replay" not in headers and jobs(api) == 1


def test_concurrent_requests_with_one_key_place_one_callback(api) -> None:
    answers = [g.get() for g in gevent.joinall(
        [gevent.spawn(post, api, SEED, "order-5") for _ in range(8)], timeout=20)]
    assert len(answers) == 8
    codes = [code for code, _, _ in answers]
    assert set(codes) <= {202, 409}, codes
    created = [r for code, r, h in answers if code == 202 and "Idempotent-Replay" not in h]
    assert len(created) == 1, answers
    assert {r["id"] for code, r, _ in answers if code == 202} == {created[0]["id"]}
    assert jobs(api) == 1
    for code, reply, headers in answers:
        if code == 409:
            assert headers["Retry-After"] == "1" and "Idempotency-Key" in reply["errors"]


def test_idempotency_state_machine_in_redis(api) -> None:
    store, fp, other = api.store, request_fingerprint(SEED), request_fingerprint(OTHER)
    key = store.keys.idempotency("shop", "k-1")
    first = store.idempotency_begin("shop", "k-1", fp)
    assert first.verdict == "new"
    assert api.redis.hget(key, "state") == "processing"
    assert 0 < api.redis.ttl(key) <= IDEMPOTENCY_PROCESSING_TTL_S
    assert store.idempotency_begin("shop", "k-1", fp).verdict == "busy"
    assert store.idempotency_begin("shop", "k-1", other).verdict == "mismatch"
    assert store.idempotency_begin("other-token", "k-1", other).verdict == "new"  # per token
    assert not store.idempotency_release("shop", "k-1", "not-the-claim")
    assert api.redis.hget(key, "state") == "processing"
    # the request goes through: the key is done with the callback, for 24 h
    from fsctl.schemas import REQUEST_SCHEMA, build_callback

    cb = build_callback(REQUEST_SCHEMA.load(SEED), api.settings, owner="shop")
    store.create(cb, idempotency_key="k-1", fingerprint=fp)
    assert api.redis.hgetall(key) | {"claim": "-"} == {
        "state": "done", "callback_id": cb.id, "fingerprint": fp, "claim": "-"}
    assert IDEMPOTENCY_PROCESSING_TTL_S < api.redis.ttl(key) <= IDEMPOTENCY_TTL_S
    done = store.idempotency_begin("shop", "k-1", fp)
    assert (done.verdict, done.callback_id) == ("done", cb.id)
    assert store.idempotency_begin("shop", "k-1", other).verdict == "mismatch"
    assert not store.idempotency_release("shop", "k-1", first.claim or "")  # done stays done
    # a key stored before fingerprints (a plain callback id) is replayed
    api.redis.set(store.keys.idempotency("shop", "old"), cb.id)
    legacy = store.idempotency_begin("shop", "old", other)
    assert (legacy.verdict, legacy.callback_id) == ("done", cb.id)


# -- a pending cancel ------------------------------------------------------------------------


def test_delete_of_a_live_callback_shows_the_cancel_pending(api) -> None:
    """Deterministic: no worker runs, so the live callback stays live after the DELETE."""
    rec = api.create(SEED)

    def started(cb) -> bool:  # what a worker's claim and first originate write
        cb.state = "dialing"
        cb.legs["A"].state = "dialing"
        return True

    api.store.update_if(rec["id"], started)
    code, reply, _ = api.http("DELETE", f"{BASE}/{rec['id']}")
    assert code == 202 and reply["state"] == "dialing" and reply["cancel_pending"] is True
    assert api.get(rec["id"])["cancel_pending"] is True
    code, page, _ = api.http("GET", BASE)
    assert page["items"][0]["cancel_pending"] is True
    code, again, _ = api.http("DELETE", f"{BASE}/{rec['id']}")  # idempotent
    assert code == 202 and again["cancel_pending"] is True
    # a queued one is cancelled at once: nothing pending
    other = api.create(OTHER)
    code, reply, _ = api.http("DELETE", f"{BASE}/{other['id']}")
    assert code == 200 and reply["state"] == "cancelled" and reply["cancel_pending"] is False


def test_cancel_pending_until_the_worker_ends_it(stack) -> None:
    rec = stack.create({"leg_A": {"to": "1000123", "route": "noanswer"},
                        "leg_B": {"to": "1000125"}})
    stack.wait_leg(rec["id"], "A", "ringing")
    code, reply, _ = stack.http("DELETE", f"{BASE}/{rec['id']}")
    assert code == 202 and reply["cancel_pending"] is True
    assert reply["state"] not in FINAL_STATES
    now = stack.get(rec["id"])
    assert now["cancel_pending"] is (now["state"] not in FINAL_STATES), now
    done = stack.wait_for(rec["id"], "cancelled")
    assert done["cancel_pending"] is False


# -- list summaries ------------------------------------------------------------------------------


def test_list_items_are_summaries_with_a_link_to_the_record(api) -> None:
    ids = [api.create({"leg_A": {"to": f"10001{i:02d}"}, "leg_B": {"to": "1000999"}})["id"]
           for i in range(3)]
    code, page, _ = api.http("GET", BASE)
    assert code == 200 and [i["id"] for i in page["items"]] == ids[::-1]
    for item in page["items"]:
        assert "history" not in item and "times" not in item["legs"]["A"]
        assert item["legs"]["A"]["to"].startswith("10001") and item["legs"]["B"]["uuid"]
        assert item["href"] == f"{BASE}/{item['id']}"
        code, full, _ = api.http("GET", item["href"])
        assert code == 200 and full["id"] == item["id"] and full["history"]
        assert len(json.dumps(item)) < len(json.dumps(full))


# -- the description says all of it -------------------------------------------------------------


def test_the_openapi_document_describes_the_contract() -> None:
    from fsctl.openapi import spec
    from fsctl.settings import Settings

    doc = spec(Settings())
    schemas = doc["components"]["schemas"]
    assert "errors" in schemas["Error"]["required"]
    assert schemas["CallbackPage"]["properties"]["items"]["items"]["$ref"].endswith(
        "/CallbackSummary")
    assert "history" not in schemas["CallbackSummary"]["properties"]
    assert {"href", "cancel_pending"} <= set(schemas["CallbackSummary"]["required"])
    assert "cancel_pending" in schemas["CallbackView"]["required"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method != "parameters":
                assert "400" in op["responses"], (method, path)  # unknown query parameters
    post = doc["paths"][BASE]["post"]
    assert {"409", "422"} <= set(post["responses"])
    idem = next(p for p in post["parameters"] if p["name"] == "Idempotency-Key")
    assert "422" in idem["description"] and "409" in idem["description"]
    assert "cancel_pending" in doc["paths"][f"{BASE}/{{callback_id}}"]["delete"]["description"]
    assert "Retry-After" in doc["components"]["responses"]["E409"]["headers"]


def test_a_request_that_outlived_its_claim_creates_nothing(api) -> None:
    """A request slower than IDEMPOTENCY_PROCESSING_TTL_S lost its claim; if another
    request with the key claimed it meanwhile, the slow one must not place a second call."""
    from fsctl.schemas import REQUEST_SCHEMA, build_callback
    from fsctl.store import KeyBusy

    store, fp = api.store, request_fingerprint(SEED)
    key = store.keys.idempotency("shop", "slow")
    slow = store.idempotency_begin("shop", "slow", fp)
    api.redis.delete(key)  # its claim ran out
    fast = store.idempotency_begin("shop", "slow", fp)
    assert slow.verdict == fast.verdict == "new" and slow.claim != fast.claim
    late = build_callback(REQUEST_SCHEMA.load(SEED), api.settings, owner="shop")
    with pytest.raises(KeyBusy):
        store.create(late, idempotency_key="slow", fingerprint=fp, claim=slow.claim or "")
    assert store.get(late.id) is None and jobs(api) == 0
    cb = build_callback(REQUEST_SCHEMA.load(SEED), api.settings, owner="shop")
    store.create(cb, idempotency_key="slow", fingerprint=fp, claim=fast.claim or "")
    assert api.redis.hget(key, "callback_id") == cb.id and jobs(api) == 1
    # a claim that ran out with nobody else on the key still creates (nothing to clash with)
    lone = store.idempotency_begin("shop", "lone", fp)
    api.redis.delete(store.keys.idempotency("shop", "lone"))
    cb2 = build_callback(REQUEST_SCHEMA.load(SEED), api.settings, owner="shop")
    store.create(cb2, idempotency_key="lone", fingerprint=fp, claim=lone.claim or "")
    assert store.get(cb2.id) is not None and jobs(api) == 2
