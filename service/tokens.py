"""Minting signed tokens: used by ``taskstream token``, the start-up banner and the tests."""

from __future__ import annotations

import time
from collections.abc import Iterable

import jwt

ALGORITHM = "HS256"


def mint(
    secret: str,
    *,
    sub: str,
    tenant: str,
    scopes: str | Iterable[str],
    ttl_seconds: int = 3600,
) -> str:
    """Return an HS256 JWT carrying the claims the service requires."""
    scope = scopes if isinstance(scopes, str) else " ".join(scopes)
    now = int(time.time())
    claims = {"sub": sub, "tenant": tenant, "scope": scope, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
