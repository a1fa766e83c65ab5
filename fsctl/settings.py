"""Every FSCTL_* setting, parsed and validated once.

Defaults are the embedded default of ``make run``: local Redis, the simulator,
the API and one worker, all on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from .auth import Token, parse_tokens
from .commands import PLAYBACK_RE, RECORD_PATH_RE
from .errors import ConfigError, InvalidValue
from .policy import PREMIUM_PREFIXES, Route, parse_route
from .webhooks.signing import parse_secrets

N = TypeVar("N", int, float)

DEFAULT_ESL_PASSWORD = "ClueCon"
"""FreeSWITCH's vanilla event-socket password: refused unless explicitly allowed."""

EMBEDDED_ROUTES = {
    "default_route": "default",
    "routes": {"default": {"template": "user/{to}", "allow": [r"\+?[0-9]{4,15}"],
                           "deny_prefixes": list(PREMIUM_PREFIXES)}},
}
"""Routes when no FSCTL_ROUTES_FILE is given: numbers of 4-15 digits go to ``user/<number>``,
premium-rate prefixes are denied."""


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
    esl_ping_s: float = 0.5
    """Liveness ping interval (and its timeout); two misses declare the connection dead."""
    worker_name: str | None = None
    """The worker's consumer name; hostname-pid when unset. Reuse it to resume after a crash."""
    reclaim_idle_s: float = 10.0
    """A job whose worker has been silent this long is taken over by another worker."""
    shutdown_grace_s: float = 30.0
    """On SIGTERM, how long live calls may go on before the worker leaves them to others."""
    sweep_interval_s: float = 10.0
    """How often channels are compared with Redis (orphans hung up, vanished legs ended)."""
    api_host: str = "127.0.0.1"
    """Address the HTTP API listens on."""
    api_port: int = 8080
    """Port the HTTP API listens on."""
    ring_timeout_s: int = 30
    """Default seconds a leg may ring before NO_ANSWER."""
    park_margin_s: int = 10
    """Seconds a parked leg waits beyond the other leg's ring timeout (park_timeout)."""
    max_talk_s: int = 3 * 3600
    """Longest a bridged call may last; then both legs are hung up (bounds toll fraud)."""
    max_body_bytes: int = 16 * 1024
    """Largest request body the API reads."""
    ringback: str = "tone_stream://%(2000,4000,440,480);loops=-1"
    """What the answered leg hears while the other one rings."""
    recording_dir: str | None = None
    """Directory on the FreeSWITCH host where calls asking for it are recorded
    (FSCTL_RECORDING_DIR); None: recording is refused."""
    media: Mapping[str, str] = field(default_factory=dict)
    """Operator-configured media a request may name (FSCTL_MEDIA_FILE): name → what
    FreeSWITCH plays (a file, ``local_stream://…``, ``tone_stream://…``)."""
    record_ttl_s: int = 7 * 86400
    """How long a finished callback's record is kept in Redis."""
    default_route: str = "default"
    """Route used when a leg names none."""
    routes: Mapping[str, Route] = field(default_factory=dict)
    """Operator-configured routes: name → dial-string template and destination policy."""
    tokens: tuple[Token, ...] = ()
    """API bearer tokens (hashed); empty: open API, accepted on loopback only."""
    rate_per_minute: int = 60
    """Default requests per minute per token (a token's own setting wins)."""
    max_live: int = 20
    """Default callbacks not yet finished per token at once."""
    dest_max_per_hour: int = 6
    """At most this many callbacks may ring one number per hour (callback bombing)."""
    max_json_depth: int = 4
    """Deepest JSON nesting a request body may have."""
    batch_max: int = 100
    """Most callbacks one ``POST /voice/call/callback/batch`` (or redis-cli batch job) holds."""
    capacity_headroom: float = 0.8
    """Share of its node's sessions-per-second and max-sessions a worker uses (each leg counts)."""
    originates_per_s_max: float = 0.0
    """Cap on one worker's originates per second; 0: only its node's limit decides."""
    sessions_max: int = 0
    """Cap on the channels one worker keeps on its node; 0: only its node's limit decides."""
    spool_dir: str = "var/spool"
    """Where a worker keeps the records it could not write to Redis when it stopped."""
    queue_timeout_s: float = 120.0
    """Longest a callback waits queued for a node with a connection and room; then expired."""
    worker_metrics_host: str = "127.0.0.1"
    """Address a worker serves /metrics, /livez and /readyz on."""
    worker_metrics_port: int = 0
    """Port of a worker's /metrics, /livez and /readyz; 0: not served."""
    heartbeat_ttl_s: float = 10.0
    """A worker's heartbeat in Redis expires after this (written every third of it): the
    API's /readyz counts only workers heard from within it."""
    api_workers: int = 1
    """gunicorn worker processes of the API (fsctl.ops.gunicorn_conf)."""
    webhook_secrets: tuple[str, ...] = ()
    """Status-webhook signing secrets (``whsec_<base64>``), newest first; empty: webhooks off."""
    webhook_allow_private: bool = False
    """Let status_callback URLs reach loopback, private, link-local and multicast addresses."""
    webhook_timeout_s: float = 5.0
    """Longest one webhook attempt may take (connect, send, answer), in seconds."""
    webhook_max_attempts: int = 8
    """Attempts of one delivery before it is dead-lettered."""
    webhook_backoff_base_s: float = 1.0
    """Backoff before the second attempt; doubles with each attempt (half of it jitter)."""
    webhook_backoff_max_s: float = 300.0
    """Longest backoff between two attempts, in seconds."""
    webhook_concurrency: int = 32
    """Attempts the webhook sender makes at once (its greenlet pool and connection limit)."""

    def check_esl_password(self) -> None:
        """Refuse the vanilla ClueCon password (and an empty one) unless explicitly allowed."""
        if not self.esl_password:
            raise ConfigError("FSCTL_ESL_PASSWORD is not set")
        if self.esl_password == DEFAULT_ESL_PASSWORD and not self.allow_default_password:
            raise ConfigError(
                "refusing the default ESL password ClueCon; set FSCTL_ALLOW_DEFAULT_PASSWORD=1 "
                "only for a lab FreeSWITCH"
            )

    def route(self, name: str | None) -> Route:
        try:
            return self.routes[name or self.default_route]
        except KeyError:
            raise InvalidValue(f"unknown route {name!r}") from None


def parse_routes(doc: Mapping[str, object]) -> tuple[str, dict[str, Route]]:
    """Validate a routes document: ``{"default_route": n, "routes": {n: {"template": t, …}}}``."""
    routes_doc = doc.get("routes")
    if not isinstance(routes_doc, Mapping) or not routes_doc:
        raise ConfigError("routes: 'routes' must be a non-empty object")
    routes: dict[str, Route] = {}
    for name, spec in routes_doc.items():
        if not isinstance(spec, Mapping):
            raise ConfigError(f"route {name!r}: must be an object")
        routes[name] = parse_route(name, spec)
    default = doc.get("default_route", next(iter(routes)))
    if default not in routes:
        raise ConfigError(f"default_route {default!r} is not a configured route")
    return str(default), routes


def _json_file(env: Mapping[str, str], name: str) -> Mapping[str, object] | None:
    path = env.get(name)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{name} {path!r}: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{name} {path!r}: must hold a JSON object")
    return doc


def _bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _number(env: Mapping[str, str], name: str, default: N, lo: N, hi: N) -> N:
    """A numeric setting of the default's type (int or float), checked against [lo, hi]."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    kind = type(default)
    try:
        value = kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{name} must be {what}, not {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, not {value}")
    return value




MEDIA_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
"""A media entry's name, as requests give it."""


def _recording_dir(path: str | None) -> str | None:
    if path is None:
        return None
    path = path.rstrip("/")
    if not RECORD_PATH_RE.fullmatch(f"{path}/{'0' * 32}.wav"):
        raise ConfigError(f"FSCTL_RECORDING_DIR {path!r}: an absolute path of A-Z a-z 0-9 _ . "
                          "/ - (no ..)")
    return path


def parse_media(doc: Mapping[str, object]) -> dict[str, str]:
    """``{"media": {"<name>": "<path>"}}``: each name and path checked (paths as every
    playback path fsctl sends is: fsctl.commands.PLAYBACK_RE)."""
    entries = doc.get("media")
    if not isinstance(entries, Mapping) or set(doc) - {"media"}:
        raise ConfigError('FSCTL_MEDIA_FILE: must hold {"media": {"<name>": "<path>", …}}')
    out: dict[str, str] = {}
    for name, path in entries.items():
        if not isinstance(name, str) or not MEDIA_NAME_RE.fullmatch(name):
            raise ConfigError(f"FSCTL_MEDIA_FILE: media name {name!r}: 1-32 of a-z 0-9 _ -")
        if not isinstance(path, str) or not PLAYBACK_RE.fullmatch(path):
            raise ConfigError(f"FSCTL_MEDIA_FILE: media {name!r}: path {path!r} is not allowed "
                              "(A-Z a-z 0-9 _ . / : % ( ) , ; = + -)")
        out[name] = path
    return out


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from the environment (or the mapping given)."""
    env = os.environ if env is None else env
    default_route, routes = parse_routes(_json_file(env, "FSCTL_ROUTES_FILE") or EMBEDDED_ROUTES)
    media = parse_media(_json_file(env, "FSCTL_MEDIA_FILE") or {"media": {}})
    tokens_doc = _json_file(env, "FSCTL_TOKENS_FILE")
    tokens = parse_tokens(tokens_doc) if tokens_doc is not None else ()
    d = Settings()
    return Settings(
        redis_url=env.get("FSCTL_REDIS_URL") or d.redis_url,
        redis_prefix=env.get("FSCTL_REDIS_PREFIX") or d.redis_prefix,
        esl_host=env.get("FSCTL_ESL_HOST") or d.esl_host,
        esl_port=_number(env, "FSCTL_ESL_PORT", d.esl_port, 1, 65535),
        esl_password=env.get("FSCTL_ESL_PASSWORD", ""),
        esl_user=env.get("FSCTL_ESL_USER") or None,
        allow_default_password=_bool(env.get("FSCTL_ALLOW_DEFAULT_PASSWORD", "")),
        api_host=env.get("FSCTL_API_HOST") or d.api_host,
        api_port=_number(env, "FSCTL_API_PORT", d.api_port, 1, 65535),
        ring_timeout_s=_number(env, "FSCTL_RING_TIMEOUT_S", d.ring_timeout_s, 5, 300),
        park_margin_s=_number(env, "FSCTL_PARK_MARGIN_S", d.park_margin_s, 1, 600),
        # below the 4 h after which the live-callback limit forgets a callback
        max_talk_s=_number(env, "FSCTL_MAX_TALK_S", d.max_talk_s, 10, 3 * 3600 + 1800),
        record_ttl_s=_number(env, "FSCTL_RECORD_TTL_S", d.record_ttl_s, 60, 365 * 86400),
        default_route=default_route,
        routes=routes,
        media=media,
        recording_dir=_recording_dir(env.get("FSCTL_RECORDING_DIR") or None),
        tokens=tokens,
        rate_per_minute=_number(env, "FSCTL_RATE_PER_MINUTE", d.rate_per_minute, 1, 1_000_000),
        max_live=_number(env, "FSCTL_MAX_LIVE", d.max_live, 1, 1_000_000),
        batch_max=_number(env, "FSCTL_BATCH_MAX", d.batch_max, 1, 1000),
        dest_max_per_hour=_number(env, "FSCTL_DEST_MAX_PER_HOUR", d.dest_max_per_hour, 1, 1_000_000),
        esl_ping_s=_number(env, "FSCTL_ESL_PING_S", d.esl_ping_s, 0.1, 10),
        worker_name=env.get("FSCTL_WORKER_NAME") or None,
        reclaim_idle_s=_number(env, "FSCTL_RECLAIM_IDLE_S", d.reclaim_idle_s, 1, 3600),
        shutdown_grace_s=_number(env, "FSCTL_SHUTDOWN_GRACE_S", d.shutdown_grace_s, 0, 3600),
        sweep_interval_s=_number(env, "FSCTL_SWEEP_INTERVAL_S", d.sweep_interval_s, 0.5, 3600),
        capacity_headroom=_number(env, "FSCTL_CAPACITY_HEADROOM", d.capacity_headroom, 0.05, 1.0),
        originates_per_s_max=_number(env, "FSCTL_ORIGINATES_PER_S_MAX", d.originates_per_s_max,
                                     0.0, 100_000.0),
        sessions_max=_number(env, "FSCTL_SESSIONS_MAX", d.sessions_max, 0, 10_000_000),
        spool_dir=env.get("FSCTL_SPOOL_DIR") or d.spool_dir,
        queue_timeout_s=_number(env, "FSCTL_QUEUE_TIMEOUT_S", d.queue_timeout_s, 1.0, 86_400.0),
        worker_metrics_host=env.get("FSCTL_WORKER_METRICS_HOST") or d.worker_metrics_host,
        worker_metrics_port=_number(env, "FSCTL_WORKER_METRICS_PORT", d.worker_metrics_port, 0,
                                    65535),
        heartbeat_ttl_s=_number(env, "FSCTL_HEARTBEAT_TTL_S", d.heartbeat_ttl_s, 1.0, 3600.0),
        api_workers=_number(env, "FSCTL_API_WORKERS", d.api_workers, 1, 256),
        webhook_secrets=parse_secrets(env.get("FSCTL_WEBHOOK_SECRETS")),
        webhook_allow_private=_bool(env.get("FSCTL_WEBHOOK_ALLOW_PRIVATE", "")),
        webhook_timeout_s=_number(env, "FSCTL_WEBHOOK_TIMEOUT_S", d.webhook_timeout_s, 0.1, 60.0),
        webhook_max_attempts=_number(env, "FSCTL_WEBHOOK_MAX_ATTEMPTS", d.webhook_max_attempts,
                                     1, 100),
        webhook_backoff_base_s=_number(env, "FSCTL_WEBHOOK_BACKOFF_BASE_S",
                                       d.webhook_backoff_base_s, 0.01, 3600.0),
        webhook_backoff_max_s=_number(env, "FSCTL_WEBHOOK_BACKOFF_MAX_S", d.webhook_backoff_max_s,
                                      0.01, 86_400.0),
        webhook_concurrency=_number(env, "FSCTL_WEBHOOK_CONCURRENCY", d.webhook_concurrency,
                                    1, 10_000),
    )
