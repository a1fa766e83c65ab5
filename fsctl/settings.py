"""Every FSCTL_* setting, parsed and validated once.

Defaults are the embedded default of ``make run``: local Redis, the simulator,
the API and one worker, all on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .commands import RouteTemplate
from .errors import ConfigError, InvalidValue

DEFAULT_ESL_PASSWORD = "ClueCon"
"""FreeSWITCH's vanilla event-socket password: refused unless explicitly allowed."""

EMBEDDED_ROUTES = {"default_route": "default", "routes": {"default": {"template": "user/{to}"}}}
"""Routes when no FSCTL_ROUTES_FILE is given: every number goes to ``user/<number>``."""


@dataclass(frozen=True, slots=True)
class Settings:
    """fsctl's configuration."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Where Redis is (``redis://``, ``rediss://``, ``unix://``)."""
    redis_prefix: str = "fsctl"
    """Prefix of every Redis key fsctl writes."""
    esl_host: str = "127.0.0.1"
    """FreeSWITCH event socket host."""
    esl_port: int = 8021
    """FreeSWITCH event socket port."""
    esl_password: str = ""
    """Event socket password (or the directory user's password with esl_user)."""
    esl_user: str | None = None
    """``user@domain`` for ``userauth``; None for plain ``auth``."""
    allow_default_password: bool = False
    """Accept the vanilla password ClueCon (never in production)."""
    esl_connect_timeout_s: float = 5.0
    """Bound on connecting and authenticating to FreeSWITCH."""
    esl_command_timeout_s: float = 5.0
    """Bound on waiting for the reply to one ESL command."""
    api_host: str = "127.0.0.1"
    """Address the HTTP API listens on."""
    api_port: int = 8080
    """Port the HTTP API listens on."""
    ring_timeout_s: int = 30
    """Default seconds a leg may ring before NO_ANSWER."""
    park_margin_s: int = 10
    """Seconds a parked leg waits beyond the other leg's ring timeout (park_timeout)."""
    max_body_bytes: int = 16 * 1024
    """Largest request body the API reads."""
    ringback: str = "tone_stream://%(2000,4000,440,480);loops=-1"
    """What the answered leg hears while the other one rings."""
    record_ttl_s: int = 7 * 86400
    """How long a finished callback's record is kept in Redis."""
    default_route: str = "default"
    """Route used when a leg names none."""
    routes: Mapping[str, RouteTemplate] = field(default_factory=dict)
    """Operator-configured routes: name → dial-string template."""

    def check_esl_password(self) -> None:
        """Refuse the vanilla ClueCon password (and an empty one) unless explicitly allowed."""
        if not self.esl_password:
            raise ConfigError("FSCTL_ESL_PASSWORD is not set")
        if self.esl_password == DEFAULT_ESL_PASSWORD and not self.allow_default_password:
            raise ConfigError(
                "refusing the default ESL password ClueCon; set FSCTL_ALLOW_DEFAULT_PASSWORD=1 "
                "only for a lab FreeSWITCH"
            )

    def route(self, name: str | None) -> RouteTemplate:
        try:
            return self.routes[name or self.default_route]
        except KeyError:
            raise InvalidValue(f"unknown route {name!r}") from None


def parse_routes(doc: Mapping[str, object]) -> tuple[str, dict[str, RouteTemplate]]:
    """Validate a routes document: ``{"default_route": n, "routes": {n: {"template": t}}}``."""
    routes_doc = doc.get("routes")
    if not isinstance(routes_doc, Mapping) or not routes_doc:
        raise ConfigError("routes: 'routes' must be a non-empty object")
    routes: dict[str, RouteTemplate] = {}
    for name, spec in routes_doc.items():
        if not isinstance(spec, Mapping) or not isinstance(spec.get("template"), str):
            raise ConfigError(f"route {name!r}: needs a string 'template'")
        try:
            routes[name] = RouteTemplate.parse(name, spec["template"])
        except InvalidValue as exc:
            raise ConfigError(str(exc)) from exc
    default = doc.get("default_route", next(iter(routes)))
    if default not in routes:
        raise ConfigError(f"default_route {default!r} is not a configured route")
    return str(default), routes


def _bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, not {value}")
    return value


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from the environment (or the mapping given)."""
    env = os.environ if env is None else env
    routes_file = env.get("FSCTL_ROUTES_FILE")
    if routes_file:
        try:
            with open(routes_file, encoding="utf-8") as fh:
                doc = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"FSCTL_ROUTES_FILE {routes_file!r}: {exc}") from exc
    else:
        doc = EMBEDDED_ROUTES
    default_route, routes = parse_routes(doc)
    d = Settings()
    return Settings(
        redis_url=env.get("FSCTL_REDIS_URL") or d.redis_url,
        redis_prefix=env.get("FSCTL_REDIS_PREFIX") or d.redis_prefix,
        esl_host=env.get("FSCTL_ESL_HOST") or d.esl_host,
        esl_port=_int(env, "FSCTL_ESL_PORT", d.esl_port, 1, 65535),
        esl_password=env.get("FSCTL_ESL_PASSWORD", ""),
        esl_user=env.get("FSCTL_ESL_USER") or None,
        allow_default_password=_bool(env.get("FSCTL_ALLOW_DEFAULT_PASSWORD", "")),
        api_host=env.get("FSCTL_API_HOST") or d.api_host,
        api_port=_int(env, "FSCTL_API_PORT", d.api_port, 1, 65535),
        ring_timeout_s=_int(env, "FSCTL_RING_TIMEOUT_S", d.ring_timeout_s, 5, 300),
        park_margin_s=_int(env, "FSCTL_PARK_MARGIN_S", d.park_margin_s, 1, 600),
        record_ttl_s=_int(env, "FSCTL_RECORD_TTL_S", d.record_ttl_s, 60, 365 * 86400),
        default_route=default_route,
        routes=routes,
    )
