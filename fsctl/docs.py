"""The human API documentation at ``/docs``: Swagger UI reading fsctl's own ``/openapi.json``.

Swagger UI's files come from the ``flask-swagger-ui`` package (its ``dist/``: Swagger UI 5,
which renders OpenAPI 3.1; the 4.x of ``swagger-ui-bundle`` refuses 3.1 documents), served by
fsctl itself: no CDN, nothing fetched from anywhere but this server, so the page works on a
host without internet access. The page's Content-Security-Policy holds the browser to that
(``connect-src 'self'``; Swagger UI's online validator badge is switched off).
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

from flask import Flask, Response, send_file

from .errors import ConfigError

log = logging.getLogger(__name__)

SWAGGER_UI_PACKAGE = "flask_swagger_ui"
"""The Python package whose ``dist/`` holds Swagger UI's files."""
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}
"""The files of Swagger UI's dist/ the page uses, with their media types."""
INIT_JS = "docs.js"
"""The page's own script (Swagger UI's configuration), generated here."""
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
"""Only this server: the page can neither load nor send anything elsewhere."""
CACHE_S = 3600

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>fsctl API</title>
  <link rel="stylesheet" href="docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/favicon-32x32.png">
</head>
<body>
  <noscript>This page needs JavaScript; the raw description is at
    <a href="openapi.json">/openapi.json</a>.</noscript>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js"></script>
  <script src="docs/docs.js"></script>
</body>
</html>
"""
"""Relative URLs: the page also works behind a reverse proxy that adds a path prefix."""

CONFIG = {
    "url": "openapi.json",
    "dom_id": "#swagger-ui",
    "deepLinking": True,
    "validatorUrl": None,
    "defaultModelsExpandDepth": 3,
    "defaultModelExpandDepth": 3,
    "displayOperationId": True,
    "tryItOutEnabled": False,
}
"""Swagger UI's options: fsctl's document, no online validator, models shown with fields."""


def dist_dir() -> Path:
    """Swagger UI's files, from the installed package."""
    try:
        root = Path(str(resources.files(SWAGGER_UI_PACKAGE)))
    except ModuleNotFoundError:
        raise ConfigError(f"/docs needs the {SWAGGER_UI_PACKAGE!r} package "
                          "(pip install flask-swagger-ui)") from None
    return root / "dist"


def register(app: Flask) -> None:
    """Add ``GET /docs`` and ``GET /docs/<asset>`` to ``app``."""
    dist = dist_dir()
    init_js = ("window.addEventListener('load', function () {\n"
               f"  window.ui = SwaggerUIBundle({json.dumps(CONFIG)});\n}});\n")

    def page() -> Response:
        resp = Response(PAGE, mimetype="text/html")
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    def asset(asset: str) -> Response:
        from .api import ApiError

        if asset == INIT_JS:
            resp = Response(init_js, mimetype="text/javascript")
        elif asset in ASSETS:
            resp = send_file(dist / asset, mimetype=ASSETS[asset], max_age=CACHE_S)
        else:
            raise ApiError(404, f"no documentation file {asset!r}",
                           {"asset": [f"one of {', '.join(sorted([*ASSETS, INIT_JS]))}"]})
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    app.add_url_rule("/docs", "docs", page, methods=["GET"])
    app.add_url_rule("/docs/<asset>", "docs_asset", asset, methods=["GET"])
