"""Signing requests the way Slack does (v0 HMAC-SHA256 over `v0:{timestamp}:{body}`)."""

from __future__ import annotations

import hashlib
import hmac


def slack_signature(secret: str, timestamp: str, body: str) -> str:
    """The `X-Slack-Signature` header value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return f"v0={digest}"
