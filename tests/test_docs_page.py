"""/docs: Swagger UI served by fsctl itself (no CDN), rendering fsctl's own OpenAPI document
in a real browser (Debian's headless Chromium) that may reach nothing but the loopback API."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile

import pytest
from procs import kill_group
from stack import Stack

from fsctl import docs

pytestmark = pytest.mark.integration

CHROMIUM_TIMEOUT_S = 60
"""Bound on one headless Chromium run (it renders within a few seconds)."""
VIRTUAL_TIME_BUDGET_MS = 20_000
"""Chromium's virtual time for the page's scripts and fetches before the DOM is dumped."""


def get(s: Stack, path: str) -> tuple[int, bytes, dict[str, str]]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", s.api_port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def test_the_page_and_its_files_come_from_fsctl(api) -> None:
    code, page, headers = get(api, "/docs")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert "connect-src 'self'" in headers["Content-Security-Policy"]
    html = page.decode()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(not re.match(r"^(https?:)?//", ref) for ref in refs), refs
    for ref in refs:
        if ref.startswith("docs/"):
            code, body, headers = get(api, "/" + ref)
            assert code == 200 and body, ref
            assert headers["Content-Type"].split(";")[0] in {*docs.ASSETS.values()}, ref
    _, bundle, _ = get(api, "/docs/swagger-ui-bundle.js")
    assert len(bundle) > 500_000  # the real Swagger UI, not a stub
    _, init, _ = get(api, "/docs/docs.js")
    assert b'"url": "openapi.json"' in init and b'"validatorUrl": null' in init
    code, body, _ = get(api, "/docs/../setup.cfg")
    assert code == 404
    code, body, _ = get(api, "/docs/swagger-ui.js.map")
    assert code == 404 and b'"errors"' in body


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no `chromium` on PATH (Debian: apt-get install chromium): the /docs page "
                    "was not rendered in a browser")
    return found


def test_docs_renders_the_callback_endpoint_in_headless_chromium(api) -> None:
    binary = chromium()
    url = f"http://127.0.0.1:{api.api_port}/docs#/default/createCallback"
    with tempfile.TemporaryDirectory(prefix="fsctl-chromium-") as profile:
        argv = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--disable-default-apps", "--mute-audio",
                # only the API on loopback can be reached: every other host name fails
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                f"--user-data-dir={profile}", f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
                "--dump-dom", url]
        # a session of its own: on a timeout one signal ends Chromium and all its helpers
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=CHROMIUM_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            pytest.fail(f"headless Chromium did not finish within {CHROMIUM_TIMEOUT_S} s")
        finally:
            with contextlib.suppress(ProcessLookupError):  # helpers it left behind, if any
                os.killpg(proc.pid, signal.SIGKILL)
    dom = out.decode(errors="replace")
    assert proc.returncode == 0 and "swagger-ui" in dom, err.decode(errors="replace")[-2000:]
    assert "Failed to load API definition" not in dom and "Unable to render" not in dom, dom[-3000:]
    # the operation, expanded by its deep link, and its request body's fields
    assert 'data-path="/voice/call/callback"' in dom
    assert "Request a callback" in dom and "createCallback" in dom
    for field in ("leg_A", "leg_B", "ring_timeout", "caller_id_name", "Idempotency-Key"):
        assert field in dom, field
    # the models section, from fsctl's own document
    for model in ("CallbackRequest", "CallbackView", "CallbackSummary", "Error"):
        assert model in dom, model
