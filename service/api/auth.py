"""Who is calling: bearer tokens held to the contract, and the scopes each route needs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
    DefineMiddleware,
)
from litestar.types import ASGIApp

from service.tokens import Verifier

READ = "tasks:read"
WRITE = "tasks:write"
EVENTS_READ = "events:read"
CANCEL = "tasks:cancel"

# Route option: the token may also come as ?access_token= (EventSource cannot set headers).
TOKEN_IN_QUERY = "token_in_query"
PUBLIC = "exclude_from_auth"
SCOPES = "scopes"

TOKEN_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller as the token says; tenant and subject never come from a request body."""

    sub: str
    tenant: str
    scopes: frozenset[str]


class BearerMiddleware(AbstractAuthenticationMiddleware):
    """Checks the ``Bearer`` scheme, the token (tokens.Verifier), the claims the contract
    requires and the route's scopes.

    Litestar's JWT middleware takes whatever follows the first space of the header, knows one
    secret and one algorithm, and nothing of ``tenant`` or ``scope``; only its exclusion rules
    (Litestar's base class) are kept.
    """

    def __init__(self, app: ASGIApp, *, verifier: Verifier) -> None:
        super().__init__(
            app,
            exclude=["^/schema"],
            exclude_from_auth_key=PUBLIC,
            exclude_http_methods=["OPTIONS"],
        )
        self.verifier = verifier
        self._cache: dict[str, tuple[Identity, float]] = {}

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = raw_header(connection.scope, b"authorization")
        if header is not None:
            scheme, _, credentials = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                raise NotAuthorizedException("expected 'Authorization: Bearer <token>'")
            encoded = credentials.strip()
        elif connection.route_handler.opt.get(TOKEN_IN_QUERY):
            encoded = connection.query_params.get("access_token", "")
        else:
            encoded = ""
        if not encoded:
            raise NotAuthorizedException("missing bearer token")
        user = self._verified(encoded)
        # A route that forgot to declare its scopes fails closed: no scope satisfies it.
        needed = connection.route_handler.opt.get(SCOPES, frozenset())
        if user.scopes.isdisjoint(needed):
            raise PermissionDeniedException(f"this needs the scope {' or '.join(sorted(needed))}")
        return AuthenticationResult(
            user=user, auth=None
        )  # the token string would live as long as a stream

    def _verified(self, encoded: str) -> Identity:
        """Verify a token, remembering good ones until they expire.

        Workers send the same token with every append, and verifying a signature costs more
        than the rest of the request's Python work (an RSA or EC one far more); a token that
        verified once is the same token the next time: the cache key is the whole token, so
        the signature is part of it. The cache is bounded, only verified tokens enter it, and
        expiry is checked on every use.
        """
        now = time.time()
        cached = self._cache.get(encoded)
        if cached is not None:
            identity, expires = cached
            if now <= expires + self.verifier.leeway:
                return identity
            del self._cache[encoded]
        identity, expires = decode(encoded, self.verifier)
        if len(self._cache) >= TOKEN_CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[encoded] = (identity, expires)
        return identity


def decode(encoded: str, verifier: Verifier) -> tuple[Identity, float]:
    """The caller and the token's expiry, or NotAuthorizedException.

    The problem's detail says what is wrong with the token, never what the token is.
    """
    try:
        claims = verifier.verify(encoded)
    except jwt.ExpiredSignatureError:
        raise NotAuthorizedException("token expired") from None
    except jwt.PyJWTError as error:  # whatever PyJWT finds wrong with a token, it is a 401
        raise NotAuthorizedException(f"invalid token: {error}") from None
    sub, tenant, scope = claims.get("sub"), claims.get("tenant"), claims.get("scope", "")
    if not isinstance(sub, str) or not sub:
        raise NotAuthorizedException("invalid token: sub must be a non-empty string")
    if not isinstance(tenant, str) or not tenant:
        raise NotAuthorizedException("invalid token: tenant must be a non-empty string")
    if not isinstance(scope, str):
        raise NotAuthorizedException("invalid token: scope must be a space-separated string")
    return Identity(sub, tenant, frozenset(scope.split())), float(claims["exp"])


def middleware(verifier: Verifier) -> DefineMiddleware:
    return DefineMiddleware(BearerMiddleware, verifier=verifier)


def raw_header(scope: Any, name: bytes) -> str | None:
    """A request header straight from the ASGI scope (lower-case ``name``).

    ``connection.headers`` would build and cache a parsed copy of every header in the scope,
    which an open stream then carries for its whole life (~1.7 KB each, at thousands of streams).
    """
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def identity(connection: ASGIConnection[Any, Any, Any, Any]) -> Identity:
    user = connection.scope.get("user")
    assert isinstance(user, Identity), "route is not behind authentication"
    return user


def requires(*scopes: str) -> dict[str, Any]:
    """Route options: the token must hold any one of ``scopes`` (checked right after the token,
    in the middleware, rather than by a guard: Litestar copies the handler for every guard)."""
    return {SCOPES: frozenset(scopes)}
