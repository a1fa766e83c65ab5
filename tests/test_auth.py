"""Bearer tokens over HTTP: 401 / 403, own callbacks only, health stays open."""

from __future__ import annotations

import time

import pytest
from stack import SEED, Stack
from support import esl_target

from fsctl.auth import Principal, Token, authenticate, hash_token, parse_tokens
from fsctl.schemas import REQUEST_SCHEMA, build_callback

pytestmark = pytest.mark.integration

FULL, READER = "fsk_full_token_for_tests", "fsk_read_only_token"
OTHER = "fsk_other_tenant_token"


def tokens() -> tuple[Token, ...]:
    return parse_tokens({"tokens": {
        "full": {"sha256": hash_token(FULL)},
        "reader": {"sha256": hash_token(READER), "permissions": ["callbacks:read"]},
        "other": {"sha256": hash_token(OTHER), "routes": ["busy"]},
    }})


@pytest.fixture
def api(redis_url: str):
    s = Stack(redis_url, esl_target(), start_worker=False, tokens=tokens())
    try:
        yield s
    finally:
        s.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_or_bad_token_is_401(api) -> None:
    for headers in ({}, bearer("wrong"), {"Authorization": FULL}, bearer("")):
        code, reply, hdrs = api.http("POST", "/voice/call/callback", SEED, headers=headers)
        assert code == 401 and reply["code"] == 401, headers
        assert hdrs["WWW-Authenticate"].startswith("Bearer")
        code, _, _ = api.http("GET", "/voice/call/callback", headers=headers)
        assert code == 401
    assert api.redis.xlen(api.store.keys.jobs) == 0


def test_health_stays_open(api) -> None:
    assert api.http("GET", "/health")[0] == 200
    assert api.http("GET", "/health/ready")[0] == 200


def test_permission_missing_is_403(api) -> None:
    code, reply, _ = api.http("POST", "/voice/call/callback", SEED, headers=bearer(READER))
    assert code == 403 and "callbacks:create" in reply["message"]
    code, _, _ = api.http("GET", "/voice/call/callback", headers=bearer(READER))
    assert code == 200


def test_token_route_restriction_is_403(api) -> None:
    code, reply, _ = api.http("POST", "/voice/call/callback", SEED, headers=bearer(OTHER))
    assert code == 403 and "route" in reply["errors"]["leg_A"]
    body = {"leg_A": {"to": "1000123", "route": "busy"}, "leg_B": {"to": "1000125", "route": "busy"}}
    assert api.http("POST", "/voice/call/callback", body, headers=bearer(OTHER))[0] == 202


def test_a_token_sees_and_cancels_only_its_own(api) -> None:
    code, mine, _ = api.http("POST", "/voice/call/callback", SEED, headers=bearer(FULL))
    assert code == 202
    path = f"/voice/call/callback/{mine['id']}"
    assert api.http("GET", path, headers=bearer(FULL))[0] == 200
    for method in ("GET", "DELETE"):
        code, reply, _ = api.http(method, path, headers=bearer(OTHER))
        assert code == 404 and "no callback" in reply["message"]
    _, page, _ = api.http("GET", "/voice/call/callback", headers=bearer(OTHER))
    assert page["items"] == []
    _, page, _ = api.http("GET", "/voice/call/callback", headers=bearer(READER))
    assert page["items"] == []  # the reader is another tenant too
    assert api.get_with(path, FULL)["state"] == "queued"
    assert api.http("DELETE", path, headers=bearer(FULL))[0] == 200


def test_denied_destination_is_403_and_not_enqueued(api) -> None:
    body = {"leg_A": {"to": "19005551234"}, "leg_B": {"to": "1000125"}}
    code, reply, _ = api.http("POST", "/voice/call/callback", body, headers=bearer(FULL))
    assert code == 403 and "to" in reply["errors"]["leg_A"]
    assert api.redis.xlen(api.store.keys.jobs) == 0


def test_authenticate_compares_every_hash() -> None:
    toks = tokens()
    assert authenticate(f"Bearer {FULL}", toks).name == "full"
    assert authenticate(f"Bearer {OTHER}", toks).routes == frozenset({"busy"})
    assert authenticate("Bearer nope", toks) is None
    assert authenticate(None, toks) is None
    assert authenticate(f"Basic {FULL}", toks) is None
    assert isinstance(authenticate(f"Bearer {READER}", toks), Principal)


def test_a_tokens_list_pages_through_its_own_index_only(api) -> None:
    # 200 callbacks of someone else (the open redis-cli owner) sit in the global index
    for i in range(200):
        cb = build_callback(REQUEST_SCHEMA.load(
            {"leg_A": {"to": f"1002{i:03d}"}, "leg_B": {"to": "1000125"}}), api.settings)
        api.store.create_from_job(cb, f"1-{i}")
    code, mine, _ = api.http("POST", "/voice/call/callback", SEED, headers=bearer(FULL))
    assert code == 202
    calls: list[str] = []
    real = api.store.r.zrevrangebyscore

    def counted(key, *args, **kwargs):
        calls.append(key)
        return real(key, *args, **kwargs)

    api.store.r.zrevrangebyscore = counted
    try:
        _, page, _ = api.http("GET", "/voice/call/callback?limit=5", headers=bearer(FULL))
        assert [item["id"] for item in page["items"]] == [mine["id"]]
        _, page, _ = api.http("GET", "/voice/call/callback?state=queued", headers=bearer(FULL))
        assert [item["id"] for item in page["items"]] == [mine["id"]]
        _, page, _ = api.http("GET", "/voice/call/callback?state=failed", headers=bearer(FULL))
        assert page["items"] == []
    finally:
        api.store.r.zrevrangebyscore = real
    assert set(calls) == {api.store.keys.owner("full")}, calls


def test_index_entries_of_expired_records_are_pruned(api) -> None:
    code, rec, _ = api.http("POST", "/voice/call/callback", SEED, headers=bearer(FULL))
    assert code == 202
    keys = api.store.keys
    indexes = [keys.callbacks, keys.state("queued"), keys.owner("full")]
    assert all(api.redis.zscore(k, rec["id"]) is not None for k in indexes)
    created = rec["created_at"]
    assert api.store.prune_indexes(created) == 0  # nothing is old enough yet
    later = created + api.store.record_ttl_s + 5 * 3600
    assert api.store.prune_indexes(later) == 2  # the global and the state index
    # a token's own index is pruned when that token creates its next callback
    api.redis.zadd(keys.owner("full"), {"stale-id": created - api.store.record_ttl_s - 5 * 3600})
    code, _, _ = api.http("POST", "/voice/call/callback",
                          {"leg_A": {"to": "1000127"}, "leg_B": {"to": "1000128"}},
                          headers=bearer(FULL))
    assert code == 202 and api.redis.zscore(keys.owner("full"), "stale-id") is None


def test_a_sparse_filter_answers_bounded_pages_with_a_cursor(api) -> None:
    from fsctl.store import LIST_SCAN_MAX

    t0 = time.time() - 3600
    for i in range(LIST_SCAN_MAX + 300):  # many queued callbacks of one token, one cancelled
        cb = build_callback(REQUEST_SCHEMA.load(
            {"leg_A": {"to": f"1003{i:04d}"}, "leg_B": {"to": "1000125"}}), api.settings,
            owner="full", now=t0 + i)
        if i == 5:
            cb.state = "cancelled"
        api.store.create(cb)
    reads: list[int] = []
    real = api.store.r.mget

    def counted(keys, *args):
        reads.append(len(keys))
        return real(keys, *args)

    api.store.r.mget = counted
    try:
        path, found, pages = "/voice/call/callback?state=cancelled&limit=10", [], 0
        while path:
            code, page, _ = api.http("GET", path, headers=bearer(FULL))
            assert code == 200
            found += [item["legs"]["A"]["to"] for item in page["items"]]
            path, pages = page.get("next"), pages + 1
    finally:
        api.store.r.mget = real
    assert (found, pages) == (["10030005"], 2), reads  # one capped page, then the rest
    assert max(reads) <= LIST_SCAN_MAX and sum(reads) == LIST_SCAN_MAX + 300
