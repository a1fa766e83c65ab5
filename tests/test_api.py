"""The HTTP API's answers to good and bad input: clear errors, nothing enqueued."""

from __future__ import annotations

import json
import socket

import pytest
from stack import SEED

pytestmark = pytest.mark.integration


def jobs_len(stack) -> int:
    return stack.redis.xlen(stack.store.keys.jobs)


def test_seed_request_is_accepted_durably(api) -> None:
    code, rec, headers = api.http("POST", "/voice/call/callback", SEED)
    assert code == 202 and rec["state"] == "queued"
    assert headers["Location"] == f"/voice/call/callback/{rec['id']}"
    assert rec["legs"]["A"]["to"] == "1000123" and rec["legs"]["A"]["from"] == "1000125"
    assert rec["legs"]["B"]["uuid"] and rec["legs"]["A"]["uuid"] != rec["legs"]["B"]["uuid"]
    # durable before acknowledged: record and job are in Redis
    stored = json.loads(api.redis.get(api.store.keys.callback(rec["id"])))
    assert stored["state"] == "queued" and jobs_len(api) == 1
    entry = api.redis.xrange(api.store.keys.jobs)[0][1]
    assert entry == {"callback_id": rec["id"]}
    assert api.get(rec["id"])["id"] == rec["id"]


@pytest.mark.parametrize("raw,ctype,code,needle", [
    (b"{}", "text/plain", 415, "Content-Type"),
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b"[1, 2]", "application/json", 422, "JSON object"),
    (b"x" * 20000, "application/json", 413, "bytes"),
    (b"[" * 5000 + b"]" * 5000, "application/json", 400, "JSON"),
])
def test_malformed_bodies_get_clear_4xx(api, raw: bytes, ctype: str, code: int, needle: str) -> None:
    got, reply, _ = api.http("POST", "/voice/call/callback", raw=raw, headers={"Content-Type": ctype})
    assert got == code, reply
    assert reply["code"] == code and needle in reply["message"]
    assert jobs_len(api) == 0


def test_each_bad_field_is_named(api) -> None:
    body = {"leg_A": {"to": "12 34", "caller_id_name": "x,y"},
            "leg_B": {"to": "1000125", "bogus": 1}, "mode": "loud"}
    code, reply, _ = api.http("POST", "/voice/call/callback", body)
    assert code == 422
    errs = reply["errors"]
    assert set(errs["leg_A"]) == {"to", "caller_id_name"}
    assert "bogus" in errs["leg_B"] and "mode" in errs
    assert jobs_len(api) == 0


def test_unknown_route_is_refused(api) -> None:
    code, reply, _ = api.http("POST", "/voice/call/callback",
                              {"leg_A": {"to": "1000123", "route": "nowhere"},
                               "leg_B": {"to": "1000125"}})
    assert code == 422 and "route" in reply["errors"]["leg_A"]
    assert jobs_len(api) == 0


def test_unknown_ids_are_404(api) -> None:
    for method in ("GET", "DELETE"):
        code, reply, _ = api.http(method, "/voice/call/callback/" + "0" * 32)
        assert code == 404 and reply["code"] == 404 and "no callback" in reply["message"]
    code, reply, _ = api.http("GET", "/nowhere")
    assert code == 404 and reply["code"] == 404


def test_wrong_method_is_405(api) -> None:
    code, reply, _ = api.http("PUT", "/voice/call/callback", SEED)
    assert code == 405 and reply["code"] == 405


def test_list_is_newest_first_filterable_and_paged(api) -> None:
    ids = [api.create({"leg_A": {"to": f"10001{i:02d}"}, "leg_B": {"to": "1000999"}})["id"]
           for i in range(5)]
    api.http("DELETE", f"/voice/call/callback/{ids[1]}")
    code, page, _ = api.http("GET", "/voice/call/callback?limit=2")
    assert code == 200 and [c["id"] for c in page["items"]] == [ids[4], ids[3]]
    code, page2, _ = api.http("GET", page["next"])
    assert [c["id"] for c in page2["items"]] == [ids[2], ids[1]]
    code, cancelled, _ = api.http("GET", "/voice/call/callback?state=cancelled")
    assert [c["id"] for c in cancelled["items"]] == [ids[1]]
    code, queued, _ = api.http("GET", "/voice/call/callback?state=queued")
    assert len(queued["items"]) == 4
    code, bad, _ = api.http("GET", "/voice/call/callback?state=nope&limit=0")
    assert code == 422 and "state" in bad["errors"]


def test_health(api) -> None:
    assert api.http("GET", "/health")[0] == 200
    assert api.http("GET", "/health/ready")[1] == {"status": "ready"}


def test_idempotency_key_makes_a_retry_safe(api) -> None:
    headers = {"Idempotency-Key": "order-4711"}
    code, first, h1 = api.http("POST", "/voice/call/callback", SEED, headers=headers)
    code2, again, h2 = api.http("POST", "/voice/call/callback", SEED, headers=headers)
    assert code == code2 == 202 and again["id"] == first["id"]
    assert h2["Location"] == h1["Location"] and h2.get("Idempotent-Replay") == "true"
    assert jobs_len(api) == 1
    code3, other, _ = api.http("POST", "/voice/call/callback", SEED,
                               headers={"Idempotency-Key": "order-4712"})
    assert code3 == 202 and other["id"] != first["id"] and jobs_len(api) == 2
    code4, bad, _ = api.http("POST", "/voice/call/callback", SEED,
                             headers={"Idempotency-Key": "has space"})
    assert code4 == 422 and "Idempotency-Key" in bad["errors"]


@pytest.mark.parametrize("target,code", [
    (b"/voice/call/callback?state=\xff", 422),
    (b"/voice/call/callback?limit=\xc3\x28", 422),
    (b"/voice/call/callback/\xff\xfe", 404),
])
def test_raw_non_utf8_bytes_in_the_url_are_a_clear_4xx(api, target: bytes, code: int) -> None:
    with socket.create_connection(("127.0.0.1", api.api_port), timeout=5) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert status == code and body["code"] == code, reply[:300]


@pytest.mark.parametrize("doc", [
    {"id": "x", "created_at": 1764612345.123456, "n": None, "ok": True, "legs": {"A": {"t": {}}}},
    {"to": "caf\u00e9", "emoji": "\U0001f600"},  # json escapes these; orjson would not
    {"errors": {0: ["int key"]}},  # orjson refuses a non-string key
    {"lone": "\ud800"},  # nor a lone surrogate
    {"big": 2 ** 70},
    [1, 2.5, "a\"b\\c\n"],
])
def test_compact_json_is_what_json_writes(doc) -> None:
    from fsctl.api import compact_json

    assert compact_json(doc) == json.dumps(doc, separators=(",", ":")).encode()
