"""fsctl.redis_lane against a real redis-server: one write per batch, replies in order,
errors after every reply was read, and a connection Redis dropped is replaced once."""

from __future__ import annotations

import pytest
import redis

from fsctl.redis_lane import Lane
from fsctl.store import connect


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return connect(redis_url)


def test_a_batch_answers_in_order(client: redis.Redis) -> None:
    lane = Lane(client)
    assert lane.batch([("SET", "lane:a", "1"), ("INCR", "lane:a"), ("GET", "lane:a")]) == \
        ["OK", 2, "2"]
    assert lane.call("MGET", "lane:a", "lane:none") == ["2", None]
    assert lane.batch([]) == []


def test_a_transaction_gives_exec_replies_and_is_atomic(client: redis.Redis) -> None:
    lane = Lane(client)
    assert lane.batch([("SET", "lane:t", "x"), ("APPEND", "lane:t", "y")],
                      transaction=True) == ["OK", 2]
    assert client.get("lane:t") == "xy"
    # a command refused when queued aborts the whole transaction: nothing of it is written
    with pytest.raises(redis.ResponseError):
        lane.batch([("SET", "lane:t2", "1"), ("NOSUCHCOMMAND",)], transaction=True)
    assert client.get("lane:t2") is None
    assert lane.call("PING") == "PONG"  # still in step


def test_an_error_reply_raises_after_every_reply_was_read(client: redis.Redis) -> None:
    lane = Lane(client)
    client.set("lane:s", "text")
    with pytest.raises(redis.ResponseError):
        lane.batch([("INCR", "lane:s"), ("SET", "lane:after", "1")])
    assert client.get("lane:after") == "1"  # the command after the error ran
    assert lane.call("GET", "lane:s") == "text"  # and its reply did not shift the next ones
    with pytest.raises(redis.exceptions.NoScriptError):
        lane.call("EVALSHA", "0" * 40, 0)
    assert lane.call("GET", "lane:after") == "1"


def test_a_connection_redis_dropped_is_replaced_once(client: redis.Redis) -> None:
    lane = Lane(client)
    lane.call("CLIENT", "SETNAME", "lane-under-test")
    assert lane.call("CLIENT", "GETNAME") == "lane-under-test"
    killed = client.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    assert lane.call("SET", "lane:r", "1") == "OK"  # retried on a new connection
    assert lane.call("CLIENT", "GETNAME") is None  # it is a new one
    assert client.get("lane:r") == "1"
