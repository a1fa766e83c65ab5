"""redis-py's readiness check, answered by the OS poll when it must not wait: the same
answers as before (nothing to read, something left unread, a closed connection), without
yielding to other greenlets, and any waiting check still gevent's."""

from __future__ import annotations

import gevent
import pytest
import redis
from redis._parsers import hiredis

from fsctl import redisio
from fsctl.store import connect


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    assert redisio.install()
    return connect(redis_url)


def test_installed_once() -> None:
    assert redisio.install()
    check = hiredis._socket_can_read
    assert redisio.install()
    assert hiredis._socket_can_read is check


def test_nothing_to_read_then_something_unread(client: redis.Redis) -> None:
    conn = client.connection_pool.get_connection()
    try:
        assert not conn.can_read()
        conn.send_command("PING")
        assert conn.can_read(timeout=2)  # a waiting check: redis-py's own (gevent's poll)
        assert conn.can_read()  # now buffered or readable
        assert conn.read_response() == "PONG"
        assert not conn.can_read()
    finally:
        client.connection_pool.release(conn)


def test_a_zero_timeout_check_does_not_yield(client: redis.Redis) -> None:
    conn = client.connection_pool.get_connection()
    ran = []
    gevent.spawn(ran.append, 1)
    try:
        conn.can_read()
        assert ran == []  # gevent's poll would have let the other greenlet run
    finally:
        client.connection_pool.release(conn)
    gevent.sleep(0)
    assert ran == [1]


def test_a_connection_the_server_closed_is_replaced(client: redis.Redis, redis_url: str) -> None:
    first = client.client_id()  # the one pooled connection
    connect(redis_url).client_kill_filter(_id=first)
    conn = client.connection_pool.get_connection()  # the check sees EOF: reconnected
    try:
        assert conn.can_read() is False
    finally:
        client.connection_pool.release(conn)
    assert client.client_id() != first
