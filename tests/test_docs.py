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


# -- the README's settings table, its Layout and its record description, against the code --------


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def settings_table() -> dict[str, tuple[str, str]]:
    """The README's Settings table: variable → (default cell, meaning cell)."""
    rows: dict[str, tuple[str, str]] = {}
    for line in readme_section("Settings").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`FSCTL_[A-Z0-9_]+`", cells[0]):
            name = cells[0].strip("`")
            assert name not in rows, f"{name} has two rows in the README's Settings table"
            rows[name] = (cells[1], cells[2])
    return rows


def variables_read() -> dict[str, set[str]]:
    """Every FSCTL_* name fsctl's code uses as a string of its own (an environment read):
    name → the modules. Messages and docstrings that merely mention one do not count."""
    import ast

    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "fsctl").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    re.fullmatch(r"FSCTL_[A-Z0-9_]+", node.value):
                found.setdefault(node.value, set()).add(str(path.relative_to(ROOT)))
    return found


def setting_fields() -> dict[str, str]:
    """FSCTL_* variable → the Settings field fsctl/settings.py's load() fills from it."""
    import ast

    tree = ast.parse((ROOT / "fsctl" / "settings.py").read_text())
    load = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "load")
    out: dict[str, str] = {}
    for call in ast.walk(load):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Settings":
            for kw in call.keywords:
                for node in ast.walk(kw.value):
                    if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                            node.value.startswith("FSCTL_") and kw.arg:
                        out[node.value] = kw.arg
    return out


def test_the_settings_table_and_the_code_agree_both_ways() -> None:
    table, read = settings_table(), variables_read()
    missing = {name: sorted(where) for name, where in read.items()
               if name not in table and not name.startswith("FSCTL_TEST_")}
    assert not missing, ("read by fsctl but without a row in the README's Settings table "
                         f"(add `| `NAME` | default with unit | meaning |`): {missing}")
    stale = sorted(set(table) - set(read))
    assert not stale, f"rows in the README's Settings table for variables nobody reads: {stale}"
    for name, (default, meaning) in table.items():
        assert default and meaning, f"{name}: the row needs a default and a meaning"
        if name.endswith("_S") and not default.startswith("unset"):
            assert re.match(r"`[0-9.]+` s\b", default), f"{name}: default {default!r} lacks `s`"


def test_the_settings_tables_defaults_are_the_codes() -> None:
    from fsctl.settings import Settings

    defaults, table = Settings(), settings_table()
    fields = setting_fields()
    assert len(fields) >= 25, fields  # the mapping was found
    for name, field in sorted(fields.items()):
        assert name in table, f"{name} ({field}) has no row in the README's Settings table"
        value, cell = getattr(defaults, field), table[name][0]
        if value is None or value == "" or value == () or value == {}:
            assert cell.startswith("unset"), f"{name}: the code's default is unset, README {cell!r}"
            continue
        shown = re.match(r"`([^`]*)`", cell)
        assert shown, f"{name}: the README's default {cell!r} names no value"
        if isinstance(value, bool):
            assert shown.group(1) == str(int(value)), (name, cell, value)
        elif isinstance(value, int | float):
            assert float(shown.group(1)) == float(value), (name, cell, value)
        else:
            assert shown.group(1) == str(value), (name, cell, value)


def test_the_layout_lists_every_module() -> None:
    listed: set[str] = set()
    block = readme_section("Layout").split("```")[1]
    package = "simulator"
    for line in block.splitlines():
        sub = re.match(r"^  (\w+)/", line)
        if sub:
            package = sub.group(1)  # the subpackage the deeper lines below belong to
        m = re.match(r"^( +)(\S+\.py)\s", line + " ")
        if m:
            listed.add(m.group(2) if len(m.group(1)) == 2 else f"{package}/{m.group(2)}")
    modules = {str(p.relative_to(ROOT / "fsctl")) for p in (ROOT / "fsctl").rglob("*.py")}
    assert not modules - listed, f"modules missing from the README's Layout: {sorted(modules - listed)}"
    assert not listed - modules, f"the README's Layout lists modules that do not exist: {sorted(listed - modules)}"


def test_the_readme_names_every_field_of_the_stored_record() -> None:
    import dataclasses

    from fsctl.model import Callback, Leg

    text = (ROOT / "README.md").read_text()
    start = text.index("The stored record is the worker's own")
    paragraph = text[start:text.index("\n\n", start)]
    named = set(re.findall(r"`([a-z_]+)`", paragraph))
    fields = {f.name for f in dataclasses.fields(Callback)} | \
        {"from" if f.name == "from_" else f.name for f in dataclasses.fields(Leg)}
    assert not fields - named, f"record fields the README does not describe: {sorted(fields - named)}"
