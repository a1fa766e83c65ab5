"""Standard Webhooks signatures: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of id.timestamp.body>``, one per secret while a rotation runs)."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from ..errors import ConfigError

SECRET_PREFIX = "whsec_"
SECRET_BYTES = (24, 64)
"""Accepted length of a decoded secret (Standard Webhooks: 24 to 64 bytes)."""
SECRETS_MAX = 2
"""Secrets valid at once: the new and the old one during a rotation."""


def parse_secrets(raw: str | None) -> tuple[str, ...]:
    """``FSCTL_WEBHOOK_SECRETS``: comma-separated ``whsec_<base64>``, newest first."""
    if not raw or not raw.strip():
        return ()
    out: list[str] = []
    for i, item in enumerate(s.strip() for s in raw.split(",")):
        where = f"FSCTL_WEBHOOK_SECRETS item {i + 1}"
        if not item.startswith(SECRET_PREFIX):
            raise ConfigError(f"{where}: must start with {SECRET_PREFIX!r}")
        try:
            key = base64.b64decode(item[len(SECRET_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where}: not base64 after {SECRET_PREFIX!r}") from None
        if not SECRET_BYTES[0] <= len(key) <= SECRET_BYTES[1]:
            raise ConfigError(f"{where}: must decode to {SECRET_BYTES[0]} to {SECRET_BYTES[1]} "
                              f"bytes, not {len(key)}")
        out.append(item)
    if len(out) > SECRETS_MAX:
        raise ConfigError(f"FSCTL_WEBHOOK_SECRETS: at most {SECRETS_MAX} secrets (new, old)")
    return tuple(out)


def new_secret() -> str:
    """A fresh random secret in the ``whsec_`` form."""
    import secrets

    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


class Signer:
    """Signs a delivery with every configured secret."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        if not secrets:
            raise ConfigError("status webhooks need FSCTL_WEBHOOK_SECRETS (whsec_<base64>, "
                              "comma-separated)")
        self._hooks = [Webhook(s) for s in secrets]

    def headers(self, msg_id: str, body: str, now: float) -> dict[str, str]:
        ts = datetime.fromtimestamp(int(now), UTC)
        return {"webhook-id": msg_id, "webhook-timestamp": str(int(now)),
                "webhook-signature": " ".join(h.sign(msg_id, ts, body) for h in self._hooks)}
