"""The HTTP API as the CLI sees it: httpx with bounded timeouts; every failure an error
of fsctl/errors.py that says in one line what went wrong."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

from ..errors import ApiRefused, ApiUnreachable

log = logging.getLogger(__name__)

BASE = "/voice/call/callback"
DEFAULT_TIMEOUT_S = 5.0
"""Bound on connecting to the API and on each answer."""
LIST_PAGES_MAX = 50
"""Most pages one listing follows (each reads at most 1,000 index entries)."""


def valid_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


class Api:
    """A small client of the fsctl HTTP API."""

    def __init__(self, url: str, token: str | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not valid_url(url):
            raise ApiUnreachable(f"--url {url!r}: give http://host:port (or https://)")
        self.url = url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "fsctl-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers,
                                  timeout=httpx.Timeout(timeout_s), trust_env=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any, httpx.Headers]:
        """One request; the status, the decoded JSON and the headers of a 2xx answer.
        Raises ApiUnreachable (no answer) or ApiRefused (an error answer)."""
        try:
            resp = self._http.request(method, path, json=body, headers=headers)
        except httpx.TimeoutException:
            raise ApiUnreachable(f"the API at {self.url} did not answer within "
                                 f"{self._http.timeout.read}s") from None
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise ApiUnreachable(f"cannot reach the API at {self.url}: {reason} (is "
                                 "`fsctl run` or `fsctl api` running? see --url / FSCTL_URL)"
                                 ) from None
        try:
            doc = resp.json()
        except ValueError:
            raise ApiUnreachable(f"{self.url}{path} answered {resp.status_code} without JSON: "
                                 "is that an fsctl API?") from None
        if not isinstance(doc, dict):
            raise ApiUnreachable(f"{self.url}{path} answered {resp.status_code} with JSON that "
                                 "is not an fsctl answer: is that an fsctl API?")
        if resp.status_code >= 400:
            message, errors = doc.get("message"), doc.get("errors")
            raise ApiRefused(resp.status_code, str(message or resp.reason_phrase), errors,
                             resp.headers.get("Retry-After"))
        return resp.status_code, doc, resp.headers

    def create(self, body: dict[str, Any],
               idempotency_key: str | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        status, doc, _ = self.request("POST", BASE, body, headers)
        return status, doc

    def get(self, callback_id: str) -> dict[str, Any]:
        return self.request("GET", f"{BASE}/{callback_id}")[1]  # type: ignore[no-any-return]

    def cancel(self, callback_id: str) -> tuple[int, dict[str, Any]]:
        status, doc, _ = self.request("DELETE", f"{BASE}/{callback_id}")
        return status, doc

    def page(self, path: str) -> tuple[list[dict[str, Any]], str | None]:
        doc = self.request("GET", path)[1]
        return list(doc.get("items", [])), doc.get("next")

    def list(self, state: str | None, limit: int) -> Iterator[dict[str, Any]]:
        """Up to ``limit`` callbacks, newest first, following ``next`` (a page may be short)."""
        path: str | None = f"{BASE}?limit={min(limit, 200)}" + (f"&state={state}" if state else "")
        given = 0
        for _ in range(LIST_PAGES_MAX):
            if path is None:
                return
            items, path = self.page(path)
            for item in items:
                if given >= limit:
                    return
                given += 1
                yield item
