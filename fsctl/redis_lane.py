"""One Redis connection for the worker's hot path: a batch of commands in one write.

redis-py's ``Pipeline`` costs about 100 µs of CPU per round trip in this process (its
command stack, response callbacks, the pool's "has the connection data?" check, which is a
``poll`` of the socket), where packing the same commands and reading their replies costs
about 40 µs. A :class:`Lane` keeps one connection of the client's pool for itself, sends a
batch (optionally as ``MULTI`` … ``EXEC``) in one write and reads every reply, with the
client's own connection settings (timeouts, decoding, health check after idle).

A batch that failed on the connection leaves it closed. A connection error is retried
once on a new connection, as redis-py's own retry would (a connection left from before a
Redis restart fails on first use); a second failure, or a timeout, raises the RedisError,
and callers keep what they could not write and try again (fsctl.recorder, fsctl.store).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import redis
from redis.connection import AbstractConnection

Command = Sequence[Any]
"""One command: its name and arguments, e.g. ``("SET", key, value)``."""


class Lane:
    """A dedicated connection of ``client``'s pool, one batch at a time."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._conn: AbstractConnection | None = None
        self._lock = threading.Lock()  # a gevent lock where gevent patched threading

    def call(self, *command: Any) -> Any:
        """One command; its reply (an error reply raises)."""
        return self.batch([command])[0]

    def batch(self, commands: Sequence[Command], *, transaction: bool = False) -> list[Any]:
        """Send ``commands`` in one write and return their replies in order.

        With ``transaction`` they run as one ``MULTI``/``EXEC`` and the replies are EXEC's.
        An error reply raises (the first one, as redis-py does), after every reply was read.
        """
        if not commands:
            return []
        sent: Sequence[Command] = ([("MULTI",), *commands, ("EXEC",)] if transaction
                                   else commands)
        with self._lock:
            try:
                replies = self._send(sent)
            except redis.ConnectionError:
                replies = self._send(sent)
        if transaction:
            for reply in replies[:-1]:
                if isinstance(reply, redis.ResponseError):
                    raise reply  # refused when queued: EXEC then aborts
            replies = replies[-1]
            if replies is None:
                raise redis.WatchError("transaction aborted")
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise reply
        return list(replies)

    def _send(self, commands: Sequence[Command]) -> list[Any]:
        conn = self._connection()
        try:
            conn.send_packed_command([b"".join(conn.pack_commands(commands))])
            return [_read(conn) for _ in commands]
        except BaseException:
            # the connection failed, or the batch was interrupted (a gevent Timeout) with
            # replies unread: either way this connection is of no further use
            self._close()
            raise

    def close(self) -> None:
        with self._lock:
            self._close()

    def _connection(self) -> AbstractConnection:
        if self._conn is None:
            self._conn = self._pool.make_connection()
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()
            self._conn = None


def _read(conn: AbstractConnection) -> Any:
    """One reply; an error reply is returned (so the replies after it are still read)."""
    try:
        return conn.read_response()
    except redis.ResponseError as exc:
        return exc
