"""The HTTP API: Flask app factory, routes and one consistent error payload."""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from flask import Flask, Response, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from . import schemas
from .errors import StoreError
from .model import CALLBACK_STATES, Callback
from .settings import Settings
from .store import Store

log = logging.getLogger(__name__)

BASE = "/voice/call/callback"
LIST_LIMIT_MAX = 200
"""Most callbacks one list page returns."""


class ApiError(Exception):
    """An error answered to the client with the consistent payload."""

    def __init__(self, code: int, message: str, errors: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.errors, self.headers = code, message, errors, headers or {}


def _payload(code: int, message: str, errors: Any = None) -> dict[str, Any]:
    from http import HTTPStatus

    body: dict[str, Any] = {"code": code, "status": HTTPStatus(code).phrase, "message": message}
    if errors is not None:
        body["errors"] = errors
    return body


def _json(obj: Any, code: int = 200, headers: dict[str, str] | None = None) -> Response:
    resp = Response(json.dumps(obj, separators=(",", ":")), status=code,
                    mimetype="application/json")
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def read_json_body(max_bytes: int) -> Any:
    """The request's JSON body, or an ApiError saying exactly what is wrong with it."""
    ctype = (request.mimetype or "").lower()
    if ctype != "application/json":
        raise ApiError(415, f"Content-Type must be application/json, not {ctype or 'missing'!r}")
    length = request.content_length
    if length is not None and length > max_bytes:
        raise ApiError(413, f"body is {length} bytes; at most {max_bytes} are accepted")
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, f"body exceeds {max_bytes} bytes")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None


def create_app(settings: Settings, client: redis.Redis | None = None) -> Flask:
    """The fsctl API application."""
    from .store import connect

    app = Flask("fsctl")
    store = Store(client or connect(settings.redis_url), settings.redis_prefix,
                  settings.record_ttl_s)
    app.extensions["fsctl.store"] = store

    def load_callback(callback_id: str) -> Callback:
        cb = store.get(callback_id) if len(callback_id) <= 64 else None
        if cb is None:
            raise ApiError(404, f"no callback {callback_id!r}")
        return cb

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return _json(_payload(exc.code, exc.message, exc.errors), exc.code, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        return _json(_payload(code, exc.description or ""), code)

    @app.errorhandler(redis.RedisError)
    def _redis_down(exc: redis.RedisError) -> Response:
        log.error("redis unavailable: %s", exc)
        return _json(_payload(503, "storage unavailable; nothing was accepted"), 503,
                     {"Retry-After": "1"})

    @app.errorhandler(StoreError)
    def _store_error(exc: StoreError) -> Response:
        log.error("store error: %s", exc)
        return _json(_payload(503, str(exc)), 503, {"Retry-After": "1"})

    @app.get("/health")
    def health() -> Response:
        return _json({"status": "ok"})

    @app.get("/health/ready")
    def ready() -> Response:
        store.r.ping()
        return _json({"status": "ready"})

    @app.post(BASE)
    def create() -> Response:
        body = read_json_body(settings.max_body_bytes)
        if not isinstance(body, dict):
            raise ApiError(422, "body must be a JSON object",
                           {"_schema": ["expected an object with leg_A and leg_B"]})
        try:
            req = schemas.REQUEST_SCHEMA.load(body)
            cb = schemas.build_callback(req, settings)
        except ValidationError as exc:
            raise ApiError(422, "invalid callback request", exc.messages) from None
        store.create(cb)
        log.info("callback %s: accepted (%s, first %s)", cb.id, cb.mode, cb.first)
        return _json(schemas.present(cb), 202, {"Location": f"{BASE}/{cb.id}"})

    @app.get(f"{BASE}/<callback_id>")
    def show(callback_id: str) -> Response:
        return _json(schemas.present(load_callback(callback_id)))

    @app.delete(f"{BASE}/<callback_id>")
    def cancel(callback_id: str) -> Response:
        load_callback(callback_id)
        from .callback import Cancel, apply

        def cancel_if_queued(cb: Callback) -> bool:
            if cb.state != "queued":
                return False
            apply(cb, Cancel(ts=_now()))
            return True

        cb = store.update_if(callback_id, cancel_if_queued)
        if cb is None:
            raise ApiError(404, f"no callback {callback_id!r}")
        if not cb.final:
            store.request_cancel(callback_id)
            log.info("callback %s: cancel requested (state %s)", callback_id, cb.state)
        return _json(schemas.present(cb), 202 if not cb.final else 200)

    @app.get(BASE)
    def index() -> Response:
        state = request.args.get("state")
        if state is not None and state not in CALLBACK_STATES:
            raise ApiError(422, "invalid query", {"state": [f"must be one of {CALLBACK_STATES}"]})
        try:
            limit = int(request.args.get("limit", "50"))
            before = float(request.args["before"]) if "before" in request.args else None
        except ValueError:
            raise ApiError(422, "invalid query",
                           {"limit": ["must be a whole number"],
                            "before": ["must be a number (created_at)"]}) from None
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise ApiError(422, "invalid query", {"limit": [f"must be 1..{LIST_LIMIT_MAX}"]})
        items = store.list(state, limit, before)
        page: dict[str, Any] = {"items": [schemas.present(cb) for cb in items]}
        if len(items) == limit:
            page["next"] = f"{BASE}?limit={limit}&before={items[-1].created_at}" + (
                f"&state={state}" if state else "")
        return _json(page)

    return app


def _now() -> float:
    import time

    return time.time()
