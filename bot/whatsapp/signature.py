"""Meta's X-Hub-Signature-256 check: HMAC-SHA256 of the raw body, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re

# "sha256=" and 64 lower-case hex digits, as Meta sends it; anything else is not a signature.
_WELL_FORMED = re.compile(r"sha256=[0-9a-f]{64}")


def expected_signature(body: bytes, app_secret: str) -> str:
    """The header value Meta would send for this body."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(body: bytes, header: str | None, app_secret: str) -> bool:
    """True only for a well-formed header whose digest matches the exact bytes received."""
    if not header or not app_secret:
        return False
    header = header.strip()
    # Checked before encoding: a header with non-ASCII bytes arrives as surrogate escapes, which
    # .encode() refuses; it is simply not a valid signature.
    if len(header) != 71 or not header.isascii() or not _WELL_FORMED.fullmatch(header):
        return False
    return hmac.compare_digest(expected_signature(body, app_secret).encode(), header.encode())
