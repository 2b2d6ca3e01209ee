"""Meta's X-Hub-Signature-256 check: HMAC-SHA256 of the raw body, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac


def expected_signature(body: bytes, app_secret: str) -> str:
    """The header value Meta would send for this body."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(body: bytes, header: str | None, app_secret: str) -> bool:
    """True only for a well-formed header whose digest matches the exact bytes received."""
    if not header or not app_secret or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(expected_signature(body, app_secret).encode(), header.strip().encode())
