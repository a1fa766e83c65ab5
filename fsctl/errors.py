"""The one exception hierarchy of fsctl."""

from __future__ import annotations


class FsctlError(Exception):
    """Base class of every error fsctl raises on purpose."""


class ConfigError(FsctlError):
    """A setting is missing, malformed or unsafe."""


class InvalidValue(FsctlError):
    """A value failed its allowlist check before it could reach FreeSWITCH."""


class PolicyDenied(FsctlError):
    """A request is well-formed but the destination policy or a permission refuses it."""

    def __init__(self, message: str, errors: dict | None = None) -> None:
        super().__init__(message)
        self.errors = errors or {}


class UnsafeCommand(InvalidValue):
    """A command text that must never be written to the event socket."""


class ProtocolError(FsctlError):
    """The peer sent bytes that are not the ESL wire format."""


class ESLError(FsctlError):
    """A FreeSWITCH event-socket operation failed."""


class ESLTimeout(ESLError):
    """No reply to an ESL command within its bounded wait."""


class ESLDisconnected(ESLError):
    """The event socket is not connected (or dropped while a command waited)."""


class ESLNotSent(ESLDisconnected):
    """The command was never written: the event socket was gone already (safe to send
    again once it is back, unlike a command cut off after it was written)."""


class AuthFailed(ESLError):
    """FreeSWITCH refused the password or the user."""


class StoreError(FsctlError):
    """Redis could not durably store or read what was asked."""


class NotFound(StoreError):
    """No callback with that id."""


class WebhookError(FsctlError):
    """A status webhook could not be accepted or delivered."""


class UrlRefused(WebhookError):
    """A status_callback URL is malformed or points at an address fsctl must not contact."""


class HostUnresolved(UrlRefused):
    """A status_callback's host does not resolve (now: DNS may answer later)."""


class ApiUnreachable(FsctlError):
    """The CLI could not reach the HTTP API (refused, timed out, not HTTP)."""


class ApiRefused(FsctlError):
    """The HTTP API answered the CLI with an error (``status``, its message and errors)."""

    def __init__(self, status: int, message: str, errors: object = None,
                 retry_after: str | None = None) -> None:
        super().__init__(message)
        self.status, self.errors, self.retry_after = status, errors, retry_after
