"""redis-py's readiness check without a trip through the gevent hub.

Before every command redis-py checks that the pooled connection it hands out has nothing
unread (``ConnectionPool.get_connection`` → ``can_read()`` → a zero-timeout ``poll``). Under
gevent's monkey patching that ``select.poll`` is gevent's: it starts an io watcher and waits
on an event with a zero timeout, i.e. a switch to the hub and back, a timer, and two
``epoll_ctl`` calls — a large part of the client-side cost of a command. A zero-timeout poll
never blocks, so the operating system's own ``poll`` answers the same question in one system
call without yielding. :func:`install` routes just that case there; any other timeout keeps
redis-py's own (gevent-aware) check.
"""

from __future__ import annotations

import logging
import select
from typing import Any

log = logging.getLogger(__name__)

_installed = False


def _os_poll() -> Any:
    """The operating system's ``select.poll`` (gevent's patching replaces the module's)."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return select.poll
    return monkey.get_original("select", "poll")


def install() -> bool:
    """Make redis-py's zero-timeout readiness check a plain ``poll(0)``; idempotent.

    False (and nothing changed) when this redis-py has no such check to replace."""
    global _installed
    if _installed:
        return True
    try:
        from redis._parsers import hiredis as parser
    except ImportError:
        return False
    original = getattr(parser, "_socket_can_read", None)
    if original is None or not hasattr(select, "poll"):
        log.debug("redis readiness check not replaced: this redis-py has no _socket_can_read")
        return False
    os_poll = _os_poll()
    pollin = select.POLLIN

    def socket_can_read(sock: Any, timeout: float | None) -> bool:
        if timeout != 0 or (hasattr(sock, "pending") and sock.pending()):
            return bool(original(sock, timeout))
        poller = os_poll()
        poller.register(sock, pollin)
        return bool(poller.poll(0))

    parser._socket_can_read = socket_can_read  # type: ignore[attr-defined]
    _installed = True
    return True
