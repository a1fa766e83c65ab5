"""Routes and the destination policy: which numbers a route may dial. Pure.

A route is operator configuration: a dial-string template plus a policy that
denies by default. A number is allowed only if it matches one of ``allow``
(regular expressions, full match) or starts with one of ``allow_prefixes``, and
starts with none of ``deny_prefixes`` (premium rate and the like). Prefixes are
compared on the digits alone (a leading ``+`` is ignored). A SIP address
(``user@host``) is allowed only on a route that lists ``host`` in ``sip_hosts``; a route
whose template fixes the host (``sofia/<profile>/{to}@<host>``) dials numbers only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .commands import NUMBER_RE, RouteTemplate
from .errors import ConfigError, InvalidValue

SIP_USER_RE = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")
SIP_HOST_RE = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?(?::[0-9]{1,5})?$")
DESTINATION_RE = re.compile(r"^(?:\+?[0-9]{2,20}|[A-Za-z0-9._+-]{1,64}@[A-Za-z0-9.:-]{1,259})$")
"""What a leg's ``to`` may look like at all (a number, or user@host for SIP routes)."""

PREMIUM_PREFIXES = ("1900", "1976", "0900", "0190", "4990", "4419", "4490", "4487", "4470",
                    "33899", "3489", "3480", "3190", "4190", "4390")
"""Premium-rate and shared-cost prefixes denied by the embedded default route."""


def digits(number: str) -> str:
    return number.removeprefix("+")


def international(number: str) -> str:
    """The digits after the international prefix ('+' or ITU's '00'), else all the digits."""
    num = digits(number)
    return num.removeprefix("00")


def destination(to: str) -> str:
    """One spelling per destination, for counting calls to it and telling legs apart:
    '+49…', '0049…' and '49…' are one; SIP addresses are lowercased."""
    return to.lower() if "@" in to else international(to)


@dataclass(frozen=True, slots=True)
class Route:
    """A named dial-string template with its destination policy (default deny)."""

    template: RouteTemplate
    allow: tuple[re.Pattern[str], ...] = ()
    allow_prefixes: tuple[str, ...] = ()
    deny_prefixes: tuple[str, ...] = ()
    sip_hosts: frozenset[str] = field(default_factory=frozenset)

    @property
    def name(self) -> str:
        return self.template.name

    @property
    def variables(self) -> tuple[tuple[str, str], ...]:
        return self.template.variables

    def refusal(self, to: str) -> str | None:
        """Why ``to`` may not be dialled on this route, or None when it may."""
        if "@" in to:
            user, _, host = to.partition("@")
            if not self.sip_hosts or self.template.has_host:
                return f"route {self.name!r} does not dial SIP addresses"
            if not SIP_USER_RE.fullmatch(user) or host.lower() not in self.sip_hosts:
                return f"route {self.name!r} does not dial host {host!r}"
            return None
        if not NUMBER_RE.fullmatch(to):
            return f"{to!r} is not a phone number"
        num = digits(to)
        spellings = {num, international(to)}  # '0019…' must not slip past a denied '1900'
        for prefix in self.deny_prefixes:
            if any(n.startswith(prefix) for n in spellings):
                return f"destinations starting {prefix} are denied on route {self.name!r}"
        if any(num.startswith(p) for p in self.allow_prefixes):
            return None
        if any(p.fullmatch(to) for p in self.allow):
            return None
        return f"{to} is not an allowed destination on route {self.name!r}"

    def dial_string(self, to: str) -> str:
        """The endpoint for ``to``, re-checking the policy (defence in depth)."""
        reason = self.refusal(to)
        if reason:
            raise InvalidValue(reason)
        if "@" in to:
            return self.template.endpoint.replace("{to}", to)
        return self.template.dial_string(to)


def _strings(spec: Mapping[str, object], key: str, name: str) -> list[str]:
    value = spec.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"route {name!r}: {key!r} must be a list of strings")
    return value


def parse_route(name: str, spec: Mapping[str, object]) -> Route:
    """One route from configuration; every part is checked here, once."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", name):
        raise ConfigError(f"route name {name!r}: use 1-32 of a-z 0-9 _ -")
    template = spec.get("template")
    if not isinstance(template, str):
        raise ConfigError(f"route {name!r}: needs a string 'template'")
    try:
        parsed = RouteTemplate.parse(name, template)
    except InvalidValue as exc:
        raise ConfigError(str(exc)) from exc
    try:
        allow = tuple(re.compile(p) for p in _strings(spec, "allow", name))
    except re.error as exc:
        raise ConfigError(f"route {name!r}: bad 'allow' pattern: {exc}") from exc
    prefixes = {}
    for key in ("allow_prefixes", "deny_prefixes"):
        values = [digits(p) for p in _strings(spec, key, name)]
        if not all(v.isdigit() for v in values):
            raise ConfigError(f"route {name!r}: {key!r} must hold digits (optionally after +)")
        prefixes[key] = tuple(values)
    hosts = [h.lower() for h in _strings(spec, "sip_hosts", name)]
    if not all(SIP_HOST_RE.fullmatch(h) for h in hosts):
        raise ConfigError(f"route {name!r}: bad host in 'sip_hosts'")
    if hosts and "{to}" not in parsed.endpoint:
        raise ConfigError(f"route {name!r}: 'sip_hosts' needs a {{to}} in the template")
    if hosts and parsed.has_host:
        raise ConfigError(f"route {name!r}: 'sip_hosts' cannot go with a host in the template "
                          "(the template's host is the only one this route dials)")
    unknown = set(spec) - {"template", "allow", "allow_prefixes", "deny_prefixes", "sip_hosts"}
    if unknown:
        raise ConfigError(f"route {name!r}: unknown keys {sorted(unknown)}")
    return Route(parsed, allow, prefixes["allow_prefixes"], prefixes["deny_prefixes"],
                 frozenset(hosts))
