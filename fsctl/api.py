"""The HTTP API: Flask app factory, routes and one consistent error payload."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from http import HTTPStatus
from typing import Any

import orjson
import redis
from flask import Flask, Response, g, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from . import redisio, schemas
from .auth import OPEN, Principal, authenticate
from .callback import Cancel
from .errors import PolicyDenied, StoreError, UrlRefused
from .model import CALLBACK_STATES, Callback
from .ops import endpoints as ops_http
from .ops.logs import callback_fields
from .settings import Settings
from .store import Duplicate, KeyBusy, Limits, Refused, Store, connect
from .webhooks.guard import check_url
from .webhooks.queue import DeliveryQueue

log = logging.getLogger(__name__)

BASE = "/voice/call/callback"
WEBHOOKS = "/voice/webhooks"
DEAD_LIMIT_MAX = 200
"""Most dead deliveries one list answers."""
IDEMPOTENCY_KEY_RE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
LIST_LIMIT_MAX = 200
"""Most callbacks one list page returns."""
QUERY_PARAMETERS: dict[str, frozenset[str]] = {"index": frozenset({"state", "limit", "before"}),
                                           "dead_deliveries": frozenset({"limit"})}
"""The query parameters each endpoint takes; any other is a 400 (an endpoint not listed
takes none)."""
MISMATCH = "used before with another request body: send the same request, or use a new key"
IN_PROGRESS = "in use by a request not answered yet: retry after it"


class ApiError(Exception):
    """An error answered to the client with the consistent payload."""

    def __init__(self, code: int, message: str, errors: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.errors, self.headers = code, message, errors, headers or {}


def error_payload(code: int, message: str, errors: Any = None) -> dict[str, Any]:
    """``{"code", "status", "message", "errors"}`` — the shape of every error; ``errors``
    (field → problems) is always there, empty when no field is to blame."""
    return {"code": code, "status": HTTPStatus(code).phrase, "message": message,
            "errors": errors if errors is not None else {}}


def request_fingerprint(body: Any) -> str:
    """SHA-256 of the request body as canonical JSON (keys sorted, no whitespace): what an
    Idempotency-Key is bound to. Key order and spacing do not change it; any value does."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def compact_json(obj: Any) -> bytes:
    """``json.dumps(obj, separators=(",", ":"))``, encoded, written by orjson when orjson
    writes the same: its output is taken when it is ASCII (json escapes any other character)
    and anything orjson refuses (a non-string key, a lone surrogate, a huge int) goes to
    json. For documents whose floats are timestamps and durations: orjson writes NaN as
    null and a float below 1e-4 without an exponent, json as NaN and with one."""
    try:
        out = orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError
        out = b""
    if out and out.isascii():
        return out
    return json.dumps(obj, separators=(",", ":")).encode()


def _json(obj: Any, code: int = 200, headers: dict[str, str] | None = None,
          body: bytes | None = None) -> Response:
    """A JSON response of ``obj`` (or of ``body``, ``obj`` already written)."""
    resp = Response(json.dumps(obj, separators=(",", ":")) if body is None else body,
                    status=code, mimetype="application/json")
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a decoded JSON value, counting no further than ``limit + 1``."""
    if isinstance(value, dict | list) and limit >= 0:
        items = value.values() if isinstance(value, dict) else value
        return 1 + max((json_depth(v, limit - 1) for v in items), default=0)
    return 0


def read_json_body(max_bytes: int, max_depth: int) -> Any:
    """The request's JSON body, or an ApiError saying exactly what is wrong with it."""
    ctype = (request.mimetype or "").lower()
    if ctype != "application/json":
        raise ApiError(415, f"Content-Type must be application/json, not {ctype or 'missing'!r}",
                       {"Content-Type": ["must be application/json"]})
    too_big = {"_body": [f"at most {max_bytes} bytes"]}
    length = request.content_length
    if length is not None and length > max_bytes:
        raise ApiError(413, f"body is {length} bytes; at most {max_bytes} are accepted", too_big)
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, f"body exceeds {max_bytes} bytes", too_big)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}", {"_body": ["not valid JSON"]}) from None
    if json_depth(body, max_depth) > max_depth:
        raise ApiError(422, f"body nests deeper than {max_depth} levels",
                       {"_body": [f"nested at most {max_depth} levels deep"]})
    return body


def create_app(settings: Settings, client: redis.Redis | None = None) -> Flask:
    """The fsctl API application."""
    app = Flask("fsctl")
    redisio.install()  # each command's readiness check without a trip through the hub
    store = Store(client or connect(settings.redis_url), settings.redis_prefix,
                  settings.record_ttl_s)
    app.extensions["fsctl.store"] = store
    deliveries = DeliveryQueue(store.r, store.keys, settings.record_ttl_s)

    def principal() -> Principal:
        return g.principal  # type: ignore[no-any-return]

    def require(permission: str) -> Principal:
        who = principal()
        if permission not in who.permissions:
            raise ApiError(403, f"this token lacks the permission {permission!r}",
                           {"Authorization": [f"the token needs {permission}"]})
        return who

    def load_own(callback_id: str) -> tuple[Callback, bool]:
        """The caller's callback and whether a cancel was asked for it; another token's is
        as unknown as a missing one."""
        cb, cancel = store.get_with_cancel(callback_id) if len(callback_id) <= 64 else (None, False)
        if cb is None or (principal().name is not None and cb.owner != principal().name):
            raise ApiError(404, f"no callback {callback_id!r}", {"callback_id": ["no such callback"]})
        return cb, cancel

    def limits_for(who: Principal) -> Limits:
        return Limits(owner=who.name or "_open",
                      rate_per_minute=who.rate_per_minute or settings.rate_per_minute,
                      max_live=who.max_live or settings.max_live,
                      dest_max_per_hour=settings.dest_max_per_hour)

    @app.before_request
    def _authenticate() -> None:
        if not request.path.startswith("/voice/"):
            return
        if not settings.tokens:
            g.principal = OPEN
            return
        who = authenticate(request.headers.get("Authorization"), settings.tokens)
        if who is None:
            reason = ("missing bearer token" if "Authorization" not in request.headers
                      else "invalid bearer token")
            raise ApiError(401, reason, {"Authorization": [reason]},
                           headers={"WWW-Authenticate": 'Bearer realm="fsctl"'})
        g.principal = who

    @app.before_request
    def _known_query_parameters() -> None:
        """Refuse what an endpoint does not read, rather than ignore a misspelt filter."""
        if not request.query_string:
            return  # none given
        if request.endpoint is None:
            return  # no such route or method: routing answers 404 / 405
        try:
            given = set(request.args)
        except UnicodeDecodeError:
            raise ApiError(422, "invalid query", {"_query": ["must be UTF-8"]}) from None
        allowed = QUERY_PARAMETERS.get(request.endpoint, frozenset())
        unknown = sorted(given - allowed)
        if unknown:
            takes = f"takes {', '.join(sorted(allowed))}" if allowed else "takes none"
            raise ApiError(400, f"unknown query parameter {unknown[0]!r} ({request.path} {takes})",
                           {name: [f"unknown query parameter; {request.path} {takes}"]
                            for name in unknown})

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        request.environ[ops_http.ERROR_KEY] = (exc.message, exc.errors)  # for the access line
        return _json(error_payload(exc.code, exc.message, exc.errors), exc.code, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        headers: dict[str, str] = {}
        errors: dict[str, list[str]] = {}
        if isinstance(exc, MethodNotAllowed):
            allowed = sorted(set(exc.valid_methods or ()) | {"OPTIONS"})
            headers["Allow"] = ", ".join(allowed)
            errors["method"] = [f"{request.method} is not allowed; allowed: {headers['Allow']}"]
        return _json(error_payload(code, exc.description or "", errors), code, headers)

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(StoreError)
    def _storage_down(exc: Exception) -> Response:
        log.error("storage unavailable: %s", exc)
        request.environ[ops_http.ERROR_KEY] = ("storage unavailable", None)
        return _json(error_payload(503, "storage unavailable; nothing was accepted"), 503,
                     {"Retry-After": "1"})

    @app.get("/health")
    def health() -> Response:
        return _json({"status": "ok"})

    @app.get("/health/ready")
    def ready() -> Response:
        store.r.ping()
        return _json({"status": "ready"})

    @app.get("/openapi.json")
    def openapi() -> Response:
        from .openapi import spec

        return _json(spec(settings))

    from .docs import register as register_docs

    register_docs(app)

    @app.post(BASE)
    def create() -> Response:
        who = require("callbacks:create")
        idem = request.headers.get("Idempotency-Key")
        if idem is not None and not IDEMPOTENCY_KEY_RE.fullmatch(idem):
            raise ApiError(422, "invalid Idempotency-Key header",
                           {"Idempotency-Key": ["1 to 100 of A-Z a-z 0-9 _ . : -"]})
        body = read_json_body(settings.max_body_bytes, settings.max_json_depth)
        if not isinstance(body, dict):
            raise ApiError(422, "body must be a JSON object",
                           {"_schema": ["expected an object with leg_A and leg_B"]})
        if idem is None:
            return created(who, body, None, "")
        fingerprint = request_fingerprint(body)
        begin = store.idempotency_begin(who.name, idem, fingerprint)
        if begin.verdict == "done" and begin.callback_id:
            return replay(begin.callback_id)
        if begin.verdict == "mismatch":
            raise ApiError(422, "this Idempotency-Key was used with a different request",
                           {"Idempotency-Key": [MISMATCH]})
        if begin.verdict != "new" or begin.claim is None:
            raise ApiError(409, "a request with this Idempotency-Key is still being processed",
                           {"Idempotency-Key": [IN_PROGRESS]}, {"Retry-After": "1"})
        done = False
        try:
            resp = created(who, body, idem, fingerprint, begin.claim)
            done = True
            return resp
        finally:
            if not done:  # refused or failed: nothing was created, the key is free again
                try:
                    store.idempotency_release(who.name, idem, begin.claim)
                except redis.RedisError as exc:
                    log.warning("Idempotency-Key %r not released (expires by itself): %s",
                                idem, exc)

    def build(who: Principal, body: Any) -> Callback:
        """A valid callback request as a new queued callback, or the ApiError saying why not."""
        if not isinstance(body, dict):
            raise ApiError(422, "body must be a JSON object",
                           {"_schema": ["expected an object with leg_A and leg_B"]})
        try:
            req = schemas.REQUEST_SCHEMA.load(body)
            cb = schemas.build_callback(req, settings, owner=who.name, allowed_routes=who.routes)
        except ValidationError as exc:
            raise ApiError(422, "invalid callback request", exc.messages) from None
        except PolicyDenied as exc:
            raise ApiError(403, str(exc), exc.errors) from None
        if cb.status_callback:
            check_status_callback(cb.status_callback)
        return cb

    def created(who: Principal, body: dict[str, Any], idem: str | None,
                fingerprint: str, claim: str = "") -> Response:
        """Validate, admit and store one callback request; its 202."""
        cb = build(who, body)
        try:
            store.create(cb, limits_for(who), idem, fingerprint, claim)
        except KeyBusy:  # this request outlived its claim; another one holds the key now
            raise ApiError(409, "a request with this Idempotency-Key is still being processed",
                           {"Idempotency-Key": [IN_PROGRESS]}, {"Retry-After": "1"}) from None
        except Duplicate as exc:
            # Answered meanwhile by another request with the key (this one's claim had expired).
            if exc.fingerprint and exc.fingerprint != fingerprint:
                raise ApiError(422, "this Idempotency-Key was used with a different request",
                               {"Idempotency-Key": [MISMATCH]}) from None
            return replay(exc.callback_id)
        except Refused as exc:
            log.info("callback refused for %s: %s", who.name or "open", exc)
            raise ApiError(429, str(exc), {"limit": exc.reason},
                           {"Retry-After": str(exc.retry_after_s)}) from None
        if log.isEnabledFor(logging.INFO):
            log.info("callback %s: accepted (%s, first %s, owner %s)", cb.id, cb.mode, cb.first,
                     who.name,
                     extra=callback_fields(cb.id, {n: leg.uuid for n, leg in cb.legs.items()}))
        return _json(None, 202, {"Location": f"{BASE}/{cb.id}"},
                     body=compact_json(schemas.present(cb)))

    @app.post(f"{BASE}/batch")
    def create_batch() -> Response:
        """Up to ``batch_max`` callback requests, each validated and admitted on its own
        (an invalid one rejects no other), the valid ones stored in one Redis round trip;
        per-item results in order."""
        who = require("callbacks:create")
        if "Idempotency-Key" in request.headers:
            raise ApiError(400, "Idempotency-Key is not taken on /batch", {"Idempotency-Key": [
                "not taken on a batch: send retried callbacks one by one with a key"]})
        body = read_json_body(settings.max_body_bytes * settings.batch_max,
                              settings.max_json_depth + 2)
        items = body.get("callbacks") if isinstance(body, dict) else None
        if not isinstance(items, list) or set(body) != {"callbacks"}:
            raise ApiError(422, "body must be {\"callbacks\": [<callback request>, ...]}",
                           {"callbacks": [("required: a list of callback requests, and nothing "
                                          "else beside it")]})
        if not 1 <= len(items) <= settings.batch_max:
            raise ApiError(422, f"a batch holds 1 to {settings.batch_max} callbacks",
                           {"callbacks": [(f"1 to {settings.batch_max} requests, not "
                                          f"{len(items)}")]})
        results: list[dict[str, Any]] = [{} for _ in items]
        valid: list[tuple[int, Callback]] = []
        for i, item in enumerate(items):
            try:
                valid.append((i, build(who, item)))
            except ApiError as exc:
                results[i] = {"status": exc.code,
                              "error": error_payload(exc.code, exc.message, exc.errors)}
        stored = store.create_many([(cb, limits_for(who)) for _, cb in valid]) if valid else []
        for (i, cb), entry in zip(valid, stored, strict=True):
            if isinstance(entry, Refused):
                results[i] = {"status": 429, "retry_after_s": entry.retry_after_s,
                              "error": error_payload(429, str(entry), {"limit": entry.reason})}
            elif isinstance(entry, StoreError):
                results[i] = {"status": 503, "error": error_payload(
                    503, "storage unavailable; this callback was not accepted")}
            else:
                results[i] = {"status": 202, "href": f"{BASE}/{cb.id}",
                              "callback": schemas.present(cb)}
        accepted = sum(1 for r in results if r["status"] == 202)
        log.info("batch of %d: %d accepted (owner %s)", len(items), accepted, who.name)
        return _json({"accepted": accepted, "rejected": len(items) - accepted,
                      "results": [{"index": i, **r} for i, r in enumerate(results)]})

    def replay(callback_id: str) -> Response:
        """A retried request: the answer of the first, with the callback as it is now."""
        earlier, cancel = store.get_with_cancel(callback_id)
        if earlier is None:
            raise ApiError(409, "the Idempotency-Key was used for a callback that is gone",
                           {"Idempotency-Key": ["its callback's record has expired"]})
        return _json(schemas.present(earlier, cancel), 202,
                     {"Location": f"{BASE}/{earlier.id}", "Idempotent-Replay": "true"})
    def check_status_callback(url: str) -> None:
        """422 unless webhooks are on and the URL passes the SSRF guard (resolved now)."""
        if not settings.webhook_secrets:
            raise ApiError(422, "invalid callback request", {"status_callback": [
                "status webhooks are not enabled on this server (FSCTL_WEBHOOK_SECRETS)"]})
        try:
            check_url(url, settings.webhook_allow_private)
        except UrlRefused as exc:
            raise ApiError(422, "invalid callback request",
                           {"status_callback": [str(exc)]}) from None

    @app.get(f"{WEBHOOKS}/dead")
    def dead_deliveries() -> Response:
        who = require("callbacks:read")
        try:
            limit = int(request.args.get("limit", "50"))
            if not 1 <= limit <= DEAD_LIMIT_MAX:
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            raise ApiError(422, "invalid query", {
                "limit": [f"must be a whole number from 1 to {DEAD_LIMIT_MAX}"]}) from None
        return _json({"items": deliveries.list_dead(who.name, limit)})

    @app.post(f"{WEBHOOKS}/dead/<delivery_id>/replay")
    def replay_delivery(delivery_id: str) -> Response:
        who = require("callbacks:create")
        if len(delivery_id) > 200 or not deliveries.replay(delivery_id, who.name):
            raise ApiError(404, f"no dead delivery {delivery_id!r}")
        log.info("webhook delivery %s: replayed (owner %s)", delivery_id, who.name)
        return _json({"replayed": [delivery_id]}, 202)

    @app.post(f"{WEBHOOKS}/dead/replay")
    def replay_all_deliveries() -> Response:
        who = require("callbacks:create")
        replayed = deliveries.replay_all(who.name)
        log.info("webhooks: %d dead deliveries replayed (owner %s)", len(replayed), who.name)
        return _json({"replayed": replayed}, 202)

    @app.get(f"{BASE}/<callback_id>")
    def show(callback_id: str) -> Response:
        require("callbacks:read")
        return _json(schemas.present(*load_own(callback_id)))

    @app.delete(f"{BASE}/<callback_id>")
    def cancel(callback_id: str) -> Response:
        require("callbacks:cancel")
        load_own(callback_id)

        cb, _ = store.end_queued(callback_id, Cancel(ts=time.time()))
        if cb is None:
            raise ApiError(404, f"no callback {callback_id!r}", {"callback_id": ["no such callback"]})
        if not cb.final:
            store.request_cancel(callback_id)
            log.info("callback %s: cancel requested (state %s)", callback_id, cb.state)
        return _json(schemas.present(cb, True), 202 if not cb.final else 200)

    @app.get(BASE)
    def index() -> Response:
        who = require("callbacks:read")
        try:
            args = request.args
        except UnicodeDecodeError:
            raise ApiError(422, "invalid query", {"_query": ["must be UTF-8"]}) from None
        state = args.get("state")
        errors: dict[str, list[str]] = {}
        if state is not None and state not in CALLBACK_STATES:
            errors["state"] = [f"must be one of {', '.join(CALLBACK_STATES)}"]
        limit, before = 50, None
        try:
            limit = int(args.get("limit", "50"))
            if not 1 <= limit <= LIST_LIMIT_MAX:
                raise ValueError
        except ValueError:
            errors["limit"] = [f"must be a whole number from 1 to {LIST_LIMIT_MAX}"]
        try:
            before = float(args["before"]) if "before" in args else None
            if before is not None and not math.isfinite(before):
                raise ValueError
        except ValueError:
            errors["before"] = ["must be a finite number (a created_at)"]
        if errors:
            raise ApiError(422, "invalid query", errors)
        items, cursor = store.list(state, limit, before, owner=who.name)
        cancels = store.cancels_requested([cb.id for cb in items if not cb.final])
        page: dict[str, Any] = {"items": [schemas.summary(cb, f"{BASE}/{cb.id}", cb.id in cancels)
                                          for cb in items]}
        if cursor is not None:
            page["next"] = f"{BASE}?limit={limit}&before={cursor!r}" + (
                f"&state={state}" if state else "")
        return _json(page)

    ops_http.install(app, store)  # /livez, /readyz, /metrics, request metrics, access log
    return app
