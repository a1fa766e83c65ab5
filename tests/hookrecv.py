"""A real HTTP receiver of status webhooks on 127.0.0.1, for the tests and the benchmark:
records every request, answers with scripted statuses, can hold requests (a receiver that
does not answer) until released, or take ``delay_s`` to answer."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import gevent
import support
from gevent.event import Event
from gevent.pywsgi import WSGIServer


class Request:
    """One request as the receiver saw it."""

    def __init__(self, path: str, headers: dict[str, str], body: bytes) -> None:
        self.path, self.headers, self.body = path, headers, body
        self.json: dict[str, Any] = json.loads(body) if body else {}

    @property
    def data(self) -> dict[str, Any]:
        return self.json.get("data", {})

    @property
    def key(self) -> tuple[str, int]:
        """(callback id, seq)."""
        return self.data.get("callback_id", ""), int(self.data.get("seq", 0))


class Receiver:
    """``statuses``: answers for the first requests (then ``default``); ``answer``: a function
    of the request deciding the status instead (wins over both)."""

    def __init__(self, port: int = 0, statuses: list[int] | None = None, default: int = 200,
                 delay_s: float = 0.0,
                 answer: Callable[[Request], int] | None = None) -> None:
        self.requests: list[Request] = []
        self.statuses = list(statuses or [])
        self.default, self.delay_s, self.answer = default, delay_s, answer
        self.release = Event()
        self.release.set()
        self.held = 0
        self.server = WSGIServer(("127.0.0.1", port), self._app, log=None, error_log=None)
        self.server.start()
        self.port = self.server.server_port

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hold(self) -> None:
        """Requests from now on wait (unanswered) until :meth:`let_go`."""
        self.release.clear()

    def let_go(self) -> None:
        self.release.set()

    def _app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(size) if size else b""
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
                   if k.startswith("HTTP_")}
        headers["content-type"] = environ.get("CONTENT_TYPE", "")
        req = Request(environ.get("PATH_INFO", ""), headers, body)
        self.requests.append(req)
        if not self.release.is_set():
            self.held += 1
            try:
                self.release.wait()
            finally:
                self.held -= 1
        if self.delay_s:
            gevent.sleep(self.delay_s)
        if self.answer is not None:
            status = self.answer(req)
        else:
            status = self.statuses.pop(0) if self.statuses else self.default
        headers_out = [("Content-Type", "text/plain")]
        if 300 <= status < 400:
            headers_out.append(("Location", f"http://127.0.0.1:{self.port}/elsewhere"))
        start_response(f"{status} X", headers_out)
        return [b"ok" if status < 300 else b"no"]

    def of(self, callback_id: str) -> list[Request]:
        return [r for r in self.requests if r.data.get("callback_id") == callback_id]

    def wait_count(self, n: int, timeout_s: float = 10.0,
                   where: Callable[[Request], bool] | None = None) -> list[Request]:
        """Poll (bounded) until at least ``n`` requests (matching ``where``) arrived."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = [r for r in self.requests if where is None or where(r)]
            if len(got) >= n:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(got)} webhook requests after {timeout_s}s, wanted "
                                     f"{n}: {[r.json.get('type') for r in got]}")
            gevent.sleep(0.02)

    def close(self) -> None:
        self.release.set()
        self.server.stop(timeout=1)


def wait_until(check: Callable[[], Any], timeout_s: float = 10.0, what: str = "") -> Any:
    """Poll ``check`` (bounded) until it returns something true; that value."""
    return support.wait_until(check, timeout_s, what, interval_s=0.02)
