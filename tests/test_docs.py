"""What the READMEs and docker/ tell an operator to use is what fsctl reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fsctl import settings as settings_mod
from fsctl.settings import parse_routes

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "freeswitch-conf/README.md", "docker/README.md"]
FSCTL_OWN = {"FSCTL_ESL_ADMIN_PASSWORD"}  # read by freeswitch-conf/vars.xml, not by fsctl
"""Variables the docs name that are meant for FreeSWITCH, not for fsctl."""


def routes_examples() -> list[tuple[str, dict]]:
    found = []
    for doc in DOCS:
        for block in re.findall(r"```json\n(.*?)```", (ROOT / doc).read_text(), re.DOTALL):
            parsed = json.loads(block)
            if "routes" in parsed:
                found.append((doc, parsed))
    found.append(("docker/routes.json", json.loads((ROOT / "docker/routes.json").read_text())))
    return found


@pytest.mark.parametrize("where,doc", routes_examples(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_routes_example_loads_and_each_route_admits_something(where: str, doc: dict) -> None:
    default, routes = parse_routes(doc)
    assert default in routes
    samples = ("1000123", "+4930123456", "1001", "alice@pbx.example.com")
    for name, route in routes.items():
        assert any(route.refusal(s) is None for s in samples), f"{where}: {name} admits nothing"


def test_dockers_default_route_admits_the_seed_numbers() -> None:
    s = settings_mod.load({"FSCTL_ROUTES_FILE": str(ROOT / "docker/routes.json")})
    assert s.route(None).refusal("1000123") is None and s.route(None).refusal("1000125") is None


def test_every_fsctl_variable_the_docs_and_docker_name_is_read_by_fsctl() -> None:
    source = "".join(p.read_text() for p in (ROOT / "fsctl").rglob("*.py"))
    read = set(re.findall(r"FSCTL_[A-Z0-9_]+", source))
    named: dict[str, set[str]] = {}
    for rel in [*DOCS, "docker/compose.yaml", "docker/Dockerfile"]:
        for var in re.findall(r"FSCTL_[A-Z0-9_]+", (ROOT / rel).read_text()):
            named.setdefault(var, set()).add(rel)
    unknown = {v: sorted(w) for v, w in named.items()
               if v not in read and v not in FSCTL_OWN and not v.startswith("FSCTL_TEST_")}
    assert not unknown, f"named in the docs but read by nobody: {unknown}"
