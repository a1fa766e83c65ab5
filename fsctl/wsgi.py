"""The API as a WSGI application for production servers: ``gunicorn -c
python:fsctl.ops.gunicorn_conf`` (which names ``fsctl.wsgi:app``), or any WSGI server.

Settings come from the environment (FSCTL_*), read once when a server process imports
this module; the open-API guard of ``fsctl api`` applies (no FSCTL_TOKENS_FILE: loopback
only).
"""

from __future__ import annotations

from flask import Flask

from .allocator import tune_collector
from .api import create_app
from .cli import check_api_exposure
from .ops.logs import setup as setup_logging
from .settings import load


def create() -> Flask:
    """The app factory: logging, settings, the exposure check, the app."""
    setup_logging()
    settings = load()
    check_api_exposure(settings)
    return create_app(settings)


app = create()
tune_collector()  # in each server process that imports the app
