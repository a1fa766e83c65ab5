"""The OpenAPI 3.1 description of the HTTP API, generated from the marshmallow schemas.

Request bodies come from :mod:`fsctl.schemas` (the schemas the API loads with), responses
from the view schemas below, which mirror :func:`fsctl.schemas.present` and the error
payload of :mod:`fsctl.api` field for field. apispec's MarshmallowPlugin turns both into
JSON Schema 2020-12 (``openapi_version="3.1.0"``: nullable is ``type: [T, "null"]``);
:func:`_to_2020_12` then rewrites the one 3.0-ism it leaves (``example``).
``tests/test_openapi.py`` validates the document and runs schemathesis against the live API.
"""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import INCLUDE, Schema, fields, validate

from . import __version__, schemas
from .docs import ASSETS as DOC_ASSETS
from .docs import INIT_JS as DOC_INIT_JS
from .model import CALLBACK_STATES, LEG_STATES, LEG_TIMESTAMPS, MODES
from .settings import Settings

BASE = "/voice/call/callback"
LIST_LIMIT_MAX = 200
"""Mirrors fsctl.api.LIST_LIMIT_MAX (not imported: fsctl.api imports this module)."""
LIST_LIMIT_DEFAULT = 50
CANCEL_PENDING = ("a DELETE asked for this live callback to be cancelled and it has not ended "
                  "yet (the worker is hanging up or cancelling its legs); false again once it "
                  "has ended: then state and outcome say what the cancel did")
METADATA = "the request's metadata, as given; none when the request had none"
NOT_BEFORE = "Unix seconds: the request's not_before (not dialled before); none: at once"
NOT_AFTER = "Unix seconds: the request's not_after (expired if not started by then); none"

# -- response schemas (mirror fsctl.schemas.present and fsctl.api._payload) ------------------


class HistoryEntrySchema(Schema):
    """One state change of a callback; ``detail`` keys vary with ``event``."""

    class Meta:
        unknown = INCLUDE

    ts = fields.Float(required=True, metadata={"description": "Unix seconds"})
    event = fields.String(required=True, metadata={
        "description": "state, leg, job, hangup_requested, command_failed, …"})


class LegViewSchema(Schema):
    """One leg as the API shows it."""

    to = fields.String(required=True)
    from_ = fields.String(data_key="from", required=True)
    caller_id_name = fields.String(required=True, allow_none=True)
    route = fields.String(required=True)
    ring_timeout = fields.Integer(required=True, metadata={"description": "seconds"})
    uuid = fields.UUID(required=True, metadata={
        "description": "the FreeSWITCH channel UUID, chosen by fsctl"})
    state = fields.String(required=True, validate=validate.OneOf(LEG_STATES))
    times = fields.Dict(keys=fields.String(), values=fields.Float(), required=True, metadata={
        "description": "Unix seconds from FreeSWITCH's event clock, one per step reached: "
                       + ", ".join(LEG_TIMESTAMPS)})
    hangup_cause = fields.String(required=True, allow_none=True)
    sip_status = fields.String(required=True, allow_none=True, metadata={
        "description": "the SIP final status FreeSWITCH recorded (sip_term_status, or "
                       "sip_invite_failure_status): 486, 487 (cancelled), 200 (a BYE the far end "
                       "sent); none for a leg FreeSWITCH itself hung up with a BYE"})
    attempts = fields.Integer(required=True, metadata={
        "description": "originates sent for this leg: 1, more when FreeSWITCH refused one for "
                       "capacity (sessions-per-second, max-sessions) and it was dialled again; "
                       "0 while it was never dialled"})
    retry = fields.Dict(required=True, allow_none=True, metadata={
        "description": "the leg's retry policy as requested (attempts, delay_s, backoff, on)"})
    retries = fields.Integer(required=True, metadata={
        "description": "attempts made again under the retry policy; each is a `retry` entry "
                       "of the history with the cause that ended the one before"})
    send_dtmf = fields.String(required=True, allow_none=True, metadata={
        "description": "the digits sent to this leg after it answered, as requested; the "
                       "history's dtmf and dtmf_done entries say when"})
    hangup_disposition = fields.String(required=True, allow_none=True, metadata={
        "description": "who ended the SIP dialog, as FreeSWITCH's sip_hangup_disposition says: "
                       "recv_bye (the far end hung up), send_bye, send_cancel, recv_refuse …"})


class LegsViewSchema(Schema):
    A = fields.Nested(LegViewSchema, required=True)
    B = fields.Nested(LegViewSchema, required=True)


class CallbackViewSchema(Schema):
    """A callback: what POST, GET and DELETE answer."""

    id = fields.String(required=True, metadata={"pattern": "^[0-9a-f]{32}$"})
    state = fields.String(required=True, validate=validate.OneOf(CALLBACK_STATES))
    outcome = fields.String(required=True, allow_none=True, metadata={
        "description": "on failure: which leg and why (a_busy, b_no_answer, …)"})
    mode = fields.String(required=True, validate=validate.OneOf(MODES))
    first = fields.String(required=True, validate=validate.OneOf(("A", "B")))
    created_at = fields.Float(required=True, metadata={"description": "Unix seconds"})
    updated_at = fields.Float(required=True, metadata={"description": "Unix seconds"})
    ended_at = fields.Float(required=True, allow_none=True)
    talk_time_s = fields.Float(required=True, allow_none=True, metadata={
        "description": "seconds from the bridge to the first hangup, from FreeSWITCH's events; "
                       "none when the end was not seen (inferred)"})
    inferred = fields.Boolean(required=True, metadata={
        "description": "the end was inferred, not seen in FreeSWITCH's events: its channels "
                       "vanished while no worker listened (outcome freeswitch_restarted, or a "
                       "leg's hangup_cause LOST)"})
    cancel_pending = fields.Boolean(required=True, metadata={"description": CANCEL_PENDING})
    legs = fields.Nested(LegsViewSchema, required=True)
    status_callback = fields.String(required=True, allow_none=True, metadata={
        "description": "where status webhooks go; none: no webhooks"})
    status_events = fields.List(fields.String(), required=True, allow_none=True, metadata={
        "description": "the status events asked for; none: every one"})
    not_before = fields.Float(required=True, allow_none=True, metadata={"description": NOT_BEFORE})
    not_after = fields.Float(required=True, allow_none=True, metadata={"description": NOT_AFTER})
    record = fields.String(required=True, allow_none=True, metadata={
        "description": "mixed or stereo as requested; none: not recorded"})
    recording = fields.Dict(required=True, allow_none=True, metadata={
        "description": "the recording: `path` (on the FreeSWITCH host), `mode`, `state` "
                       "(pending, recording, done, failed, none: never bridged) and, once "
                       "done, `seconds`, `ms`, `samples` and `size_bytes`, from FreeSWITCH's "
                       "record_* variables"})
    waiting_media = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                                allow_none=True, metadata={
                                    "description": "the request's waiting_media; none: the "
                                                   "default ringback"})
    metadata = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                           allow_none=True, metadata={"description": METADATA})
    history = fields.List(fields.Nested(HistoryEntrySchema), required=True)


class LegSummarySchema(Schema):
    """One leg in a list item (the full record, at ``href``, has the rest)."""

    to = fields.String(required=True)
    from_ = fields.String(data_key="from", required=True)
    route = fields.String(required=True)
    uuid = fields.UUID(required=True)
    state = fields.String(required=True, validate=validate.OneOf(LEG_STATES))
    hangup_cause = fields.String(required=True, allow_none=True)


class LegsSummarySchema(Schema):
    A = fields.Nested(LegSummarySchema, required=True)
    B = fields.Nested(LegSummarySchema, required=True)


class CallbackSummarySchema(Schema):
    """A list item: a callback without its history and per-leg details."""

    id = fields.String(required=True, metadata={"pattern": "^[0-9a-f]{32}$"})
    href = fields.String(required=True, metadata={
        "description": "the full record (GET): history, leg times, causes",
        "pattern": f"^{BASE}/[0-9a-f]{{32}}$"})
    state = fields.String(required=True, validate=validate.OneOf(CALLBACK_STATES))
    outcome = fields.String(required=True, allow_none=True)
    mode = fields.String(required=True, validate=validate.OneOf(MODES))
    first = fields.String(required=True, validate=validate.OneOf(("A", "B")))
    created_at = fields.Float(required=True, metadata={"description": "Unix seconds"})
    updated_at = fields.Float(required=True, metadata={"description": "Unix seconds"})
    ended_at = fields.Float(required=True, allow_none=True)
    talk_time_s = fields.Float(required=True, allow_none=True)
    cancel_pending = fields.Boolean(required=True, metadata={"description": CANCEL_PENDING})
    legs = fields.Nested(LegsSummarySchema, required=True)
    not_before = fields.Float(required=True, allow_none=True, metadata={"description": NOT_BEFORE})
    not_after = fields.Float(required=True, allow_none=True, metadata={"description": NOT_AFTER})
    metadata = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                           allow_none=True, metadata={"description": METADATA})


class CallbackPageSchema(Schema):
    """One page of callbacks, newest first: summaries; each ``href`` is the full record."""

    items = fields.List(fields.Nested(CallbackSummarySchema), required=True)
    next = fields.String(metadata={
        "description": "the next page; present while more may follow (a page may be short "
                       "when a filter matches little: follow `next` until it is absent)",
        "pattern": f"^{BASE}\\?"})


class BatchRequestSchema(Schema):
    """POST /voice/call/callback/batch body: the callback requests, each taken on its own."""

    callbacks = fields.List(fields.Nested(schemas.CallbackRequestSchema), required=True,
                            metadata={"description": "callback requests, as POST "
                                      "/voice/call/callback takes one"})


class BatchResultSchema(Schema):
    """What became of one item of a batch."""

    index = fields.Integer(required=True, metadata={"description": "its place in the batch"})
    status = fields.Integer(required=True, metadata={
        "description": "what POST /voice/call/callback would have answered for it alone: 202 "
                       "accepted, 422 invalid, 403 a route's policy, 429 a limit, 503 Redis"})
    href = fields.String(metadata={"description": "202: the callback's URL",
                                   "pattern": f"^{BASE}/[0-9a-f]{{32}}$"})
    callback = fields.Nested(CallbackViewSchema, metadata={"description": "202: the callback"})
    error = fields.Nested(lambda: ErrorSchema(), metadata={
        "description": "otherwise: the error payload it would have had"})
    retry_after_s = fields.Integer(metadata={"description": "429: seconds until the limit "
                                                            "would take it"})


class BatchReplySchema(Schema):
    """The answer to a batch: one result per item, in order."""

    accepted = fields.Integer(required=True)
    rejected = fields.Integer(required=True)
    results = fields.List(fields.Nested(BatchResultSchema), required=True)


class ErrorSchema(Schema):
    """Every error answer has this shape."""

    code = fields.Integer(required=True, metadata={"minimum": 400, "maximum": 599})
    status = fields.String(required=True, metadata={"description": "the HTTP reason phrase"})
    message = fields.String(required=True)
    errors = fields.Dict(required=True, metadata={
        "description": "field → list of problems (nested per leg); always present, empty when "
                       "no field is to blame. Besides body fields: `_body` (the body as a "
                       "whole), `_query`, a query parameter's name, `Idempotency-Key`, "
                       "`Content-Type`, `Authorization`, `callback_id`, `method`, `limit` (429)"})


class DeadDeliverySchema(Schema):
    """A status webhook that was not delivered (fsctl.webhooks)."""

    id = fields.String(required=True, metadata={"description": "its webhook-id"})
    callback_id = fields.String(required=True)
    event = fields.String(required=True, metadata={"description": "e.g. answered.A, completed"})
    seq = fields.Integer(required=True, metadata={"description": "per-callback sequence number"})
    url = fields.String(required=True)
    attempts = fields.Integer(required=True)
    reason = fields.String(required=True, metadata={"description": "why it was given up"})
    created_at = fields.Float(required=True, metadata={"description": "Unix seconds"})
    failed_at = fields.Float(required=True, metadata={"description": "Unix seconds"})


class DeadPageSchema(Schema):
    """Dead deliveries, newest first."""

    items = fields.List(fields.Nested(DeadDeliverySchema), required=True)


class ReplayedSchema(Schema):
    """The dead deliveries put back in their callbacks' queues."""

    replayed = fields.List(fields.String(), required=True)


def _webhook_paths(doc: APISpec) -> None:
    """The dead-letter endpoints of status webhooks."""
    doc.components.schema("DeadPage", schema=DeadPageSchema)
    doc.components.schema("Replayed", schema=ReplayedSchema)
    replayed = {"description": "Replayed: queued again, delivered in their callbacks' order.",
                "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Replayed"}}}}
    doc.path(path="/voice/webhooks/dead", operations={"get": {
        "operationId": "listDeadDeliveries", "summary": "Status webhooks given up, newest first",
        "description": "A token sees its own callbacks' (needs callbacks:read).",
        "security": _VOICE_SECURITY,
        "parameters": [{"name": "limit", "in": "query", "schema": {
            "type": "integer", "minimum": 1, "maximum": 200, "default": 50}}],
        "responses": _responses({200: {"description": "Dead deliveries.", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/DeadPage"}}}}}, 422),
    }})
    doc.path(path="/voice/webhooks/dead/{delivery_id}/replay", parameters=[{
        "name": "delivery_id", "in": "path", "required": True,
        "description": "a dead delivery's id (its webhook-id)",
        "schema": {"type": "string", "minLength": 1}}], operations={"post": {
            "operationId": "replayDeadDelivery", "summary": "Deliver a dead webhook again",
            "description": "Needs callbacks:create.", "security": _VOICE_SECURITY,
            "responses": _responses({202: replayed}, 404)}})
    doc.path(path="/voice/webhooks/dead/replay", operations={"post": {
        "operationId": "replayDeadDeliveries", "summary": "Deliver every dead webhook again",
        "description": "Oldest first; a token replays its own (needs callbacks:create).",
        "security": _VOICE_SECURITY, "responses": _responses({202: replayed})}})


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(("ok", "ready")))


# -- the document ------------------------------------------------------------------------------

_ERRORS = {
    400: "The body is not valid JSON (`errors._body`), or the request has a query parameter "
         "this endpoint does not take (`errors` names it): unknown parameters are refused, "
         "never ignored.",
    401: "Tokens are configured and the request has no valid `Authorization: Bearer` token.",
    403: "The token lacks the permission this request needs (`callbacks:create`, "
         "`callbacks:read`, `callbacks:cancel`); on POST also: a route the token may not use, "
         "or a destination the route's policy refuses (`errors` names the leg).",
    404: "No such callback (on /docs/{asset}: no such file; elsewhere: no such route).",
    409: "Another request with this Idempotency-Key is still being processed (retry after "
         "`Retry-After`), or the key was used for a callback whose record has expired.",
    413: "The body is larger than the accepted maximum.",
    415: "Content-Type is not application/json.",
    422: "The request is well-formed but invalid (or its JSON nests too deep); `errors` names "
         "every bad field. On POST also: the Idempotency-Key was used before with a different "
         "request body (`errors.Idempotency-Key`).",
    429: "A rate limit, the limit of live callbacks, or a destination's cooldown is exceeded "
         "(`errors.limit`: `rate`, `live` or `dest`).",
    503: "Redis is unreachable; nothing was accepted or changed.",
}
_RETRY_AFTER = {"$ref": "#/components/headers/RetryAfter"}
_AUTH = (401, 403)
"""What every /voice route may answer when bearer tokens are configured (and 503: Redis)."""


def _error(code: int) -> dict[str, Any]:
    return {"$ref": f"#/components/responses/E{code}"}


def _responses(ok: dict[int, dict[str, Any]], *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {str(code): resp for code, resp in ok.items()}
    for code in sorted({*errors, *_AUTH, 400, 503}):
        out[str(code)] = _error(code)
    return out


def _view(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CallbackView"}}},
            **extra}


_REQUEST_EXAMPLES = {
    "seed": {"summary": "A then B, caller IDs crossed",
             "value": {"leg_A": {"to": "1000123", "from": "1000125"},
                       "leg_B": {"to": "1000125", "from": "1000123"}}},
    "simultaneous": {"summary": "Both at once, with caller-ID names and ring timeouts",
                     "value": {"leg_A": {"to": "1000123", "caller_id_name": "Sales",
                                         "ring_timeout": 20},
                               "leg_B": {"to": "1000125", "caller_id_name": "Customer",
                                         "ring_timeout": 45},
                               "mode": "simultaneous"}},
}
_CALLBACK_ID = {
    "name": "callback_id", "in": "path", "required": True,
    "description": "a callback id (32 hex digits); anything else is 404",
    "schema": {"type": "string", "minLength": 1},
}
_VOICE_SECURITY = [{}, {"bearer": []}]
"""No auth in loopback dev mode (no tokens configured), a bearer token otherwise."""
_LINKS = {
    "GetCallback": {"operationId": "getCallback",
                    "parameters": {"callback_id": "$response.body#/id"}},
    "CancelCallback": {"operationId": "cancelCallback",
                       "parameters": {"callback_id": "$response.body#/id"}},
}


def _to_2020_12(node: Any) -> Any:
    """``example: x`` (OpenAPI 3.0) → ``examples: [x]`` (JSON Schema 2020-12), recursively."""
    if isinstance(node, list):
        return [_to_2020_12(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_2020_12(v) for k, v in node.items() if k != "example"}
    if "example" in node and "examples" not in node:
        out["examples"] = [node["example"]]
    return out


def spec(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1.0 document of the API served with ``settings``."""
    doc = APISpec(
        title="fsctl", version=__version__, openapi_version="3.1.0",
        plugins=[MarshmallowPlugin()],
        info={"description": "Voice callback controller for FreeSWITCH: call two parties, "
                             "bridge them, track every step in Redis.",
              "license": {"name": "MIT", "identifier": "MIT"}},
    )
    doc.components.security_scheme("bearer", {
        "type": "http", "scheme": "bearer",
        "description": "Required only when the operator configured API tokens; without "
                       "tokens (loopback dev mode) no authentication is needed."})
    doc.components.schema("CallbackRequest", schema=schemas.CallbackRequestSchema)
    doc.components.schema("CallbackView", schema=CallbackViewSchema)
    doc.components.schema("CallbackSummary", schema=CallbackSummarySchema)
    doc.components.schema("CallbackPage", schema=CallbackPageSchema)
    doc.components.schema("Error", schema=ErrorSchema)
    doc.components.schema("BatchRequest", schema=BatchRequestSchema)
    doc.components.schema("BatchReply", schema=BatchReplySchema)
    doc.components.schema("Health", schema=HealthSchema)
    doc.components.header("RetryAfter", {
        "description": "seconds to wait before retrying", "required": True,
        "schema": {"type": "integer", "minimum": 0}})
    for code, description in _ERRORS.items():
        resp: dict[str, Any] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        if code in (429, 503):
            resp["headers"] = {"Retry-After": _RETRY_AFTER}
        if code == 409:
            resp["headers"] = {"Retry-After": {
                "description": "while the key's first request is being processed: seconds to "
                               "wait", "schema": {"type": "integer", "minimum": 0}}}
        if code == 401:
            resp["headers"] = {"WWW-Authenticate": {
                "required": True, "description": "the bearer challenge",
                "schema": {"type": "string", "pattern": "^Bearer "}}}
        doc.components.response(f"E{code}", resp)

    doc.path(path=BASE, operations={
        "post": {
            "operationId": "createCallback", "summary": "Request a callback",
            "description": "Validates the request, stores the record and enqueues its job in one "
                           "Redis transaction, then answers 202. leg_A.to and leg_B.to must "
                           f"differ. At most {settings.max_body_bytes} bytes of body, nested at "
                           f"most {settings.max_json_depth} levels deep. Each leg's route must "
                           "allow its destination (the operator's policy denies by default).",
            "security": _VOICE_SECURITY,
            "parameters": [{
                "name": "Idempotency-Key", "in": "header", "required": False,
                "description": "Makes a retried POST safe (IETF Idempotency-Key draft). The "
                               "key is bound to the request body (SHA-256 of its canonical "
                               "JSON: key order and spacing do not matter) for 24 h, per "
                               "token. The same key with the same body answers 202 with the "
                               "callback the first request created (`Idempotent-Replay: "
                               "true`) and creates nothing; with a different body: 422; "
                               "while the first request is still being processed: 409. A "
                               "request refused with a 4xx/5xx leaves the key unused.",
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,100}$"}}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/CallbackRequest"},
                "examples": _REQUEST_EXAMPLES}}},
            "responses": _responses({202: _view(
                "Accepted and queued.",
                headers={"Location": {"required": True, "description": "the callback's URL",
                                      "schema": {"type": "string",
                                                 "pattern": f"^{BASE}/[0-9a-f]{{32}}$"}},
                         "Idempotent-Replay": {"description": "true when an Idempotency-Key "
                                               "replayed an earlier answer",
                                               "schema": {"type": "string", "enum": ["true"]}}},
                links=_LINKS)}, 400, 409, 413, 415, 422, 429),
        },
        "get": {
            "operationId": "listCallbacks", "summary": "List callbacks, newest first",
            "description": "Summaries: each item has no history and fewer leg fields; its "
                           "`href` is the full record. Only `state`, `limit` and `before` are "
                           "taken: any other query parameter is a 400.",
            "security": _VOICE_SECURITY,
            "parameters": [
                {"name": "state", "in": "query", "schema": {"type": "string",
                                                            "enum": list(CALLBACK_STATES)}},
                {"name": "limit", "in": "query", "schema": {
                    "type": "integer", "minimum": 1, "maximum": LIST_LIMIT_MAX,
                    "default": LIST_LIMIT_DEFAULT}},
                {"name": "before", "in": "query", "description": "created_at of the last item "
                 "of the previous page (exclusive)", "schema": {"type": "number"}},
            ],
            "responses": _responses({200: {
                "description": "One page of summaries; `next` links the following one.",
                "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/CallbackPage"}}}}}, 422),
        },
    })
    doc.path(path=f"{BASE}/batch", operations={"post": {
        "operationId": "createCallbacks", "summary": "Request several callbacks at once",
        "description": f"1 to {settings.batch_max} callback requests. Each is validated, "
                       "checked against the limits (counted per item, as if sent alone) and "
                       "stored on its own: an invalid one rejects no other, and the valid "
                       "ones go to Redis in one round trip. Answers 200 with one result per "
                       "item, in order. A body that is not a batch is refused whole (422). "
                       "No Idempotency-Key (400): retry a lost batch's items one by one "
                       f"with keys. At most {settings.batch_max} × {settings.max_body_bytes} "
                       "bytes of body.",
        "security": _VOICE_SECURITY,
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/BatchRequest"},
            "examples": {"two": {"summary": "Two callbacks, one with digits and metadata",
                                 "value": {"callbacks": [_REQUEST_EXAMPLES["seed"]["value"], {
                                     "leg_A": {"to": "1000131"},
                                     "leg_B": {"to": "1000132", "send_dtmf": "ww2#"},
                                     "metadata": {"ticket": "CRM-48214"}}]}}}}}},
        "responses": _responses({200: {
            "description": "One result per item, in order.",
            "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/BatchReply"}}}}}, 413, 415, 422),
    }})
    doc.path(path=f"{BASE}/{{callback_id}}", parameters=[_CALLBACK_ID], operations={
        "get": {
            "operationId": "getCallback", "summary": "A callback's state, legs and history",
            "security": _VOICE_SECURITY,
            "responses": _responses({200: _view("The callback.")}, 404),
        },
        "delete": {
            "operationId": "cancelCallback", "summary": "Cancel or hang up a callback",
            "description": "Idempotent. A queued callback is cancelled at once (200, state "
                           "`cancelled`); for a live one the worker is asked to hang up (202): "
                           "the answer is the callback as it was when asked, with "
                           "`cancel_pending: true`, and GET shows `cancel_pending: true` too "
                           "until it has ended (`cancelled`, or `completed` when the parties "
                           "were already talking); a finished one is answered as it is (200).",
            "security": _VOICE_SECURITY,
            "responses": _responses({
                200: _view("Finished (cancelled now, or already over)."),
                202: _view("Cancellation requested (`cancel_pending: true`); the worker hangs up "
                           "the live legs.")}, 404),
        },
    })
    health = {"description": "Up.", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Health"}}}}
    doc.path(path="/health", operations={"get": {
        "operationId": "health", "summary": "The process is up", "security": [],
        "responses": {"200": health, "400": _error(400)}}})
    doc.path(path="/health/ready", operations={"get": {
        "operationId": "ready", "summary": "Redis is reachable", "security": [],
        "responses": {"200": {**health, "description": "Ready."}, "400": _error(400),
                      "503": _error(503)}}})
    doc.path(path="/openapi.json", operations={"get": {
        "operationId": "openapi", "summary": "This document", "security": [],
        "responses": {"200": {"description": "The OpenAPI 3.1 description of this API.",
                              "content": {"application/json": {"schema": {"type": "object"}}}},
                      "400": _error(400)}}})
    doc.path(path="/docs", operations={"get": {
        "operationId": "docs", "summary": "This document for people (Swagger UI)",
        "description": "Swagger UI, served by fsctl from its own copy (no CDN, works without "
                       "internet access), reading /openapi.json.",
        "security": [],
        "responses": {"200": {"description": "The page.",
                              "content": {"text/html": {"schema": {"type": "string"}}}},
                      "400": _error(400)}}})
    doc.path(path="/docs/{asset}", operations={"get": {
        "operationId": "docsAsset", "summary": "A file of the documentation page", "security": [],
        "parameters": [{"name": "asset", "in": "path", "required": True,
                        "schema": {"type": "string", "enum": sorted([*DOC_ASSETS, DOC_INIT_JS])}}],
        "responses": {"200": {"description": "The file.", "content": {
            media: {"schema": {"type": "string"}}
            for media in sorted({*DOC_ASSETS.values(), "text/javascript"})}},
            "400": _error(400), "404": _error(404)}}})
    _webhook_paths(doc)
    out = doc.to_dict()
    out["components"]["schemas"] = _to_2020_12(out["components"]["schemas"])
    return out
