"""Bearer tokens: configured as SHA-256 hashes, compared in constant time. Pure.

Tokens file (``FSCTL_TOKENS_FILE``, JSON)::

    {"tokens": {"shop": {"sha256": "<64 hex>",
                         "permissions": ["callbacks:create", "callbacks:read", "callbacks:cancel"],
                         "rate_per_minute": 30, "max_live": 5, "routes": ["pstn"]}}}

``fsctl token NAME`` prints a new random token and the entry to paste. With no tokens
file the API runs open, which it only accepts on a loopback address.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ConfigError

PERMISSIONS = frozenset({"callbacks:create", "callbacks:read", "callbacks:cancel"})
TOKEN_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling the API: a token (by name), or the open local mode (name None)."""

    name: str | None
    permissions: frozenset[str]
    rate_per_minute: int | None = None
    """Requests per minute; None: the server default."""
    max_live: int | None = None
    """Callbacks not yet finished at once; None: the server default."""
    routes: frozenset[str] | None = None
    """Routes this token may use; None: every route."""


@dataclass(frozen=True, slots=True)
class Token:
    principal: Principal
    digest: bytes


OPEN = Principal(name=None, permissions=PERMISSIONS)
"""The caller when no tokens are configured (loopback development mode)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh random token and its SHA-256 (the only form that goes in configuration)."""
    token = "fsk_" + secrets.token_urlsafe(32)
    return token, hash_token(token)


def _positive(spec: Mapping[str, object], key: str, name: str) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"token {name!r}: {key!r} must be a positive whole number")
    return value


def parse_tokens(doc: Mapping[str, object]) -> tuple[Token, ...]:
    """Validate a tokens document."""
    entries = doc.get("tokens")
    if not isinstance(entries, Mapping):
        raise ConfigError("tokens: 'tokens' must be an object of name → entry")
    out: list[Token] = []
    for name, spec in entries.items():
        if not TOKEN_NAME_RE.fullmatch(name) or not isinstance(spec, Mapping):
            raise ConfigError(f"token {name!r}: bad name or entry")
        digest = spec.get("sha256")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise ConfigError(f"token {name!r}: 'sha256' must be 64 lowercase hex digits")
        perms = spec.get("permissions", sorted(PERMISSIONS))
        if not isinstance(perms, list) or not set(perms) <= PERMISSIONS:
            raise ConfigError(f"token {name!r}: permissions must be among {sorted(PERMISSIONS)}")
        routes = spec.get("routes")
        if routes is not None and (not isinstance(routes, list)
                                   or not all(isinstance(r, str) for r in routes)):
            raise ConfigError(f"token {name!r}: 'routes' must be a list of route names")
        unknown = set(spec) - {"sha256", "permissions", "rate_per_minute", "max_live", "routes"}
        if unknown:
            raise ConfigError(f"token {name!r}: unknown keys {sorted(unknown)}")
        principal = Principal(name, frozenset(perms), _positive(spec, "rate_per_minute", name),
                              _positive(spec, "max_live", name),
                              frozenset(routes) if routes is not None else None)
        out.append(Token(principal, bytes.fromhex(digest)))
    if len({t.digest for t in out}) != len(out):
        raise ConfigError("tokens: two entries share one hash")
    return tuple(out)


def authenticate(authorization: str | None, tokens: tuple[Token, ...]) -> Principal | None:
    """The principal of an ``Authorization: Bearer <token>`` header, or None.

    The presented token is hashed and compared with every configured hash in
    constant time (no early exit), so timing tells nothing about near misses.
    """
    if not authorization or not authorization.startswith("Bearer "):
        return None
    presented = hashlib.sha256(authorization[7:].strip().encode("utf-8")).digest()
    found: Principal | None = None
    for token in tokens:
        if hmac.compare_digest(presented, token.digest):
            found = token.principal
    return found
