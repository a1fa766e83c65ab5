"""The OpenAPI 3.1 description: a valid document that says exactly what the API does.

The schemathesis run fetches /openapi.json from the live API (real redis-server, simulator,
worker, gevent WSGIServer on 127.0.0.1) and sends every operation generated positive and
negative requests over real HTTP; every answer must be a documented status with a documented
content type, body and headers, and none may be a server error.
"""

from __future__ import annotations

import collections
import copy
import json
from typing import Any

import hypothesis
import jsonschema_rs
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.definitions import OPENAPI_31
from stack import SEED

from fsctl import openapi
from fsctl.schemas import REQUEST_SCHEMA
from fsctl.settings import Settings

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]
MAX_EXAMPLES = 100
"""Per operation and generation mode; the whole run stays well under a minute."""
STATEFUL_EXAMPLES = 50
BASE_PATH = openapi.BASE


@pytest.fixture
def served(stack):
    """The stack, serving /openapi.json (registered here if fsctl.api does not do it yet)."""
    app = stack.app
    if "/openapi.json" not in [r.rule for r in app.url_map.iter_rules()]:
        from flask import jsonify

        app.add_url_rule("/openapi.json", "openapi_json",
                         lambda: jsonify(openapi.spec(stack.settings)), methods=["GET"])
    return stack


# -- the document ----------------------------------------------------------------------------


def schema_objects(doc: dict[str, Any]):
    """Every Schema Object of the document, with where it is."""
    for name, schema in doc["components"]["schemas"].items():
        yield f"components.schemas.{name}", schema
    for name, header in doc["components"].get("headers", {}).items():
        yield f"components.headers.{name}", header["schema"]
    for name, resp in doc["components"].get("responses", {}).items():
        for mt, media in resp.get("content", {}).items():
            yield f"components.responses.{name}.{mt}", media["schema"]
    for path, item in doc["paths"].items():
        for param in item.get("parameters", []):
            yield f"{path} {param['name']}", param["schema"]
        for method, op in item.items():
            if method == "parameters":
                continue
            for param in op.get("parameters", []):
                yield f"{method} {path} {param['name']}", param["schema"]
            for mt, media in op.get("requestBody", {}).get("content", {}).items():
                yield f"{method} {path} body {mt}", media["schema"]
            for code, resp in op["responses"].items():
                for mt, media in resp.get("content", {}).items():
                    yield f"{method} {path} {code} {mt}", media["schema"]
                for hname, header in resp.get("headers", {}).items():
                    if "schema" in header:
                        yield f"{method} {path} {code} header {hname}", header["schema"]


def refs(node: Any):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for v in node.values():
            yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def validator(doc: dict[str, Any], name: str) -> jsonschema_rs.Validator:
    """A JSON Schema 2020-12 validator of components.schemas[name], $refs resolved in doc."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return jsonschema_rs.Draft202012Validator(schema)


def test_document_is_valid_openapi_3_1(stack) -> None:
    doc = openapi.spec(stack.settings)
    assert doc["openapi"] == "3.1.0"
    json.dumps(doc)  # plain JSON
    # the OpenAPI 3.1 meta-schema (the copy schemathesis ships: nothing is fetched)
    jsonschema_rs.Draft202012Validator(OPENAPI_31).validate(doc)
    # every Schema Object is valid JSON Schema 2020-12 (the 3.1 dialect)
    for where, schema in schema_objects(doc):
        jsonschema_rs.meta.validate({"$schema": "https://json-schema.org/draft/2020-12/schema",
                                     **schema})
        assert "nullable" not in json.dumps(schema), where  # 3.0-ism
        assert "example" not in schema, where
    for ref in set(refs(doc)):
        resolve(doc, ref)
    ids = [op["operationId"] for item in doc["paths"].values()
           for m, op in item.items() if m != "parameters"]
    assert len(ids) == len(set(ids))
    for item in doc["paths"].values():
        for m, op in item.items():
            if m == "parameters":
                continue
            for resp in op["responses"].values():
                for link in resp.get("links", {}).values():
                    assert link["operationId"] in ids


def test_document_describes_exactly_the_routes(served) -> None:
    doc = openapi.spec(served.settings)
    documented = {(path, method.upper()) for path, item in doc["paths"].items()
                  for method in item if method != "parameters"}
    served_routes = set()
    for rule in served.app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served_routes.add((path, method))
    assert documented == served_routes


def test_documented_request_and_views_agree(served) -> None:
    """The request schema accepts what marshmallow accepts; real views validate."""
    doc = openapi.spec(served.settings)
    req = validator(doc, "CallbackRequest")
    full = {"leg_A": {"to": "+4930123456", "from": "1000125", "caller_id_name": "Sales_1",
                      "route": "ring", "ring_timeout": 5},
            "leg_B": {"to": "1000125", "ring_timeout": 300}, "mode": "simultaneous",
            "first": "B"}
    for body in (SEED, full):
        REQUEST_SCHEMA.load(body)
        req.validate(body)
    for bad in ({"leg_A": {"to": "1"}, "leg_B": {"to": "1000125"}},
                {**SEED, "extra": 1}, {**SEED, "leg_B": {"to": "1000123", "From": "12"}},
                {**SEED, "leg_B": {"to": "1000125", "ring_timeout": 4}},
                {**SEED, "mode": "both"}):
        assert not req.is_valid(bad), bad

    view, page, error = (validator(doc, n) for n in ("CallbackView", "CallbackPage", "Error"))
    done = served.create(SEED)
    view.validate(done)
    busy = served.create({"leg_A": {"to": "1000111", "route": "busy"},
                          "leg_B": {"to": "1000222"}})
    bridged = served.wait_for(done["id"], "bridged")
    view.validate(bridged)
    served.kill(bridged["legs"]["B"]["uuid"])
    completed = served.wait_for(done["id"], "completed")
    failed = served.wait_for(busy["id"], "failed")
    for record in (completed, failed):
        view.validate(record)
    assert completed["talk_time_s"] is not None and failed["outcome"]
    code, listing, _ = served.http("GET", "/voice/call/callback?limit=1")
    assert code == 200 and "next" in listing
    page.validate(listing)
    code, reply, _ = served.http("DELETE", f"/voice/call/callback/{done['id']}")
    assert code == 200
    view.validate(reply)
    code, reply, _ = served.http("POST", "/voice/call/callback", {"leg_A": {}})
    assert code == 422
    error.validate(reply)
    code, reply, _ = served.http("GET", "/openapi.json")
    assert code == 200 and reply == json.loads(json.dumps(doc))


# -- schemathesis against the live API ---------------------------------------------------------

TALLY: collections.Counter[str] = collections.Counter()
STATUSES: collections.Counter[str] = collections.Counter()


CONFIG = schemathesis.Config.from_dict({
    "seed": 20240611,
    "cache": {"enabled": False},
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True,
                   "database": "none"},
    # Only the document's own links. Inferred ones start at answers whose status or content
    # depends on timing and on earlier examples (DELETE is 200 for a queued callback, 202 for a
    # live one; the list grows), and hypothesis then sees a replayed example draw differently
    # (FlakyStrategyDefinition) although the API conforms.
    "phases": {"stateful": {"inference": {"algorithms": []}}},
})
DOCUMENT = openapi.spec(Settings())
"""What the stack serves: its settings differ from the defaults only where the document does
not look (routes, Redis, ESL); the ``live`` fixture checks that it is what is served."""
schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT), config=CONFIG)
"""A copy: schemathesis annotates the dict it is given (``links``) as it runs."""


@pytest.fixture
def live(served) -> str:
    """The running API's base URL, once it is known to serve exactly DOCUMENT."""
    code, served_doc, _ = served.http("GET", "/openapi.json")
    assert code == 200 and served_doc == json.loads(json.dumps(DOCUMENT))
    return f"http://127.0.0.1:{served.api_port}"


def tally(case, response) -> None:
    TALLY[f"{case.method} {case.path}"] += 1
    STATUSES[f"{case.method} {case.path} {response.status_code}"] += 1


@schema.parametrize()
@hypothesis.settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_api_conforms_to_its_description(case, live: str) -> None:
    tally(case, case.call_and_validate(base_url=live, checks=CHECKS))


def test_api_conforms_along_its_links(live: str) -> None:
    """Stateful: POST, then GET / DELETE the created callback through the document's links."""

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case) -> dict[str, Any]:
            return {"base_url": live}

        def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:
            tally(case, response)
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs or None)

    Workflow.run(settings=hypothesis.settings(
        max_examples=STATEFUL_EXAMPLES, stateful_step_count=6, derandomize=True, database=None,
        deadline=None, suppress_health_check=list(hypothesis.HealthCheck)))


# -- answers the generated runs cannot reach: tokens, limits, Redis down ------------------------

FULL, READER = "fsk_openapi_full_token", "fsk_openapi_read_only"


def conforms(base_url: str, method: str, path: str, expect: int, *,
             token: str | None = None, **case_kwargs: Any) -> None:
    """One hand-made request, checked by the same schemathesis checks as the generated ones
    (but a documented 503 is what is expected of a Redis outage, not a server error)."""
    case = schema[path][method].Case(**case_kwargs)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    checks = [c for c in CHECKS if expect != 503 or c is not not_a_server_error]
    response = case.call_and_validate(base_url=base_url, checks=checks, headers=headers)
    assert response.status_code == expect, (method, path, response.status_code, response.text)
    STATUSES[f"{method} {path} {expect} (hand-made)"] += 1


def test_token_mode_answers_conform(redis_url: str) -> None:
    """With tokens configured: 401 (WWW-Authenticate), 403, 429 (Retry-After) as documented."""
    from stack import Stack
    from support import esl_target

    from fsctl.auth import hash_token, parse_tokens

    tokens = parse_tokens({"tokens": {
        "full": {"sha256": hash_token(FULL)},
        "reader": {"sha256": hash_token(READER), "permissions": ["callbacks:read"]}}})
    s = Stack(redis_url, esl_target(), start_worker=False, tokens=tokens, rate_per_minute=2)
    try:
        url = f"http://127.0.0.1:{s.api_port}"
        one = {"path_parameters": {"callback_id": "0" * 32}}
        for method, path, extra in (("POST", BASE_PATH, {"body": SEED}),
                                    ("GET", BASE_PATH, {}),
                                    ("GET", f"{BASE_PATH}/{{callback_id}}", one),
                                    ("DELETE", f"{BASE_PATH}/{{callback_id}}", one)):
            conforms(url, method, path, 401, **extra)
            conforms(url, method, path, 401, token="not-a-token", **extra)
        conforms(url, "POST", BASE_PATH, 403, token=READER, body=SEED)
        conforms(url, "DELETE", f"{BASE_PATH}/{{callback_id}}", 403, token=READER, **one)
        conforms(url, "POST", BASE_PATH, 403, token=FULL,
                 body={"leg_A": {"to": "1900123456"}, "leg_B": {"to": "1000125"}})
        conforms(url, "POST", BASE_PATH, 202, token=FULL, body=SEED)
        conforms(url, "POST", BASE_PATH, 202, token=FULL, body=SEED)
        conforms(url, "POST", BASE_PATH, 429, token=FULL, body=SEED)
        conforms(url, "GET", BASE_PATH, 200, token=READER)
        conforms(url, "GET", "/health", 200)
    finally:
        s.close()


def test_storage_down_answers_conform(redis_url: str) -> None:
    """Redis unreachable: 503 with Retry-After, as documented, wherever Redis is needed."""
    import redis
    from gevent.pywsgi import WSGIServer
    from stack import TEST_ROUTES

    from fsctl.api import create_app
    from fsctl.embedded import free_port
    from fsctl.settings import parse_routes

    default_route, routes = parse_routes(TEST_ROUTES)
    settings = Settings(default_route=default_route, routes=routes)
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1,
                       retry=Retry(NoBackoff(), 0))
    server = WSGIServer(("127.0.0.1", 0), create_app(settings, dead), log=None)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        conforms(url, "GET", "/health/ready", 503)
        conforms(url, "POST", BASE_PATH, 503,
                 body={"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}})
        conforms(url, "GET", BASE_PATH, 503)
        conforms(url, "GET", f"{BASE_PATH}/{{callback_id}}", 503,
                 path_parameters={"callback_id": "0" * 32})
        conforms(url, "GET", "/health", 200)
    finally:
        server.stop(timeout=1)
        dead.close()


# -- regressions: bugs found while writing the description (fixed in fsctl.api/schemas) ---------


def test_before_nan_is_a_422(live: str) -> None:
    """float('nan') passed the query check and Redis refused '(nan': it was a 503."""
    conforms(live, "GET", BASE_PATH, 422, query={"before": "nan"})


def test_trailing_newline_in_from_is_a_422(live: str) -> None:
    """re.match + '$' let 'from': '1000125\\n' through (202, then a_originate_error)."""
    for leg in ({"to": "1000123", "from": "1000125\n"}, {"to": "1000123\n"},
                {"to": "1000123", "caller_id_name": "Sales\n"}):
        conforms(live, "POST", BASE_PATH, 422, body={"leg_A": leg, "leg_B": {"to": "1000125"}})


DOCUMENTED = {f"{m.upper()} {path}" for path, item in DOCUMENT["paths"].items() for m in item
              if m != "parameters"}


def test_schemathesis_reached_every_operation() -> None:
    """Runs after the two above (file order): every operation got answers, some of each kind."""
    if not TALLY:
        pytest.skip("the schemathesis runs did not run in this session")
    print(json.dumps({"cases": sum(TALLY.values()), "per_operation": TALLY,
                      "statuses": STATUSES}, indent=1, sort_keys=True))
    assert DOCUMENTED <= set(TALLY), DOCUMENTED - set(TALLY)
    assert all(TALLY[op] >= 3 for op in DOCUMENTED), TALLY
    for status in ("POST /voice/call/callback 202", "POST /voice/call/callback 422",
                   "GET /voice/call/callback/{callback_id} 200",
                   "DELETE /voice/call/callback/{callback_id} 200"):
        assert STATUSES[status] > 0, status
