"""Who is calling: Litestar's JWT middleware, tightened to the contract, and scope guards."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import jwt
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import AuthenticationResult, DefineMiddleware
from litestar.security.jwt import JWTAuthenticationMiddleware, Token

from service.tokens import ALGORITHM

READ = "tasks:read"
WRITE = "tasks:write"
EVENTS_READ = "events:read"

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


class BearerMiddleware(JWTAuthenticationMiddleware):
    """Checks the ``Bearer`` scheme, the claims the contract requires, and a clock-skew leeway.

    Litestar's middleware takes whatever follows the first space of the header and knows
    nothing of ``tenant`` or ``scope``; this keeps its exclusion rules and replaces the rest.
    """

    def __init__(self, *args: Any, leeway: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.leeway = leeway
        self._cache: dict[str, tuple[Identity, float]] = {}

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get("authorization")
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
        result = await self.authenticate_token(encoded, connection)
        # A route that forgot to declare its scopes fails closed: no scope satisfies it.
        needed = connection.route_handler.opt.get(SCOPES, frozenset())
        if result.user.scopes.isdisjoint(needed):
            raise PermissionDeniedException(f"this needs the scope {' or '.join(sorted(needed))}")
        return result

    async def authenticate_token(
        self, encoded_token: str, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        return AuthenticationResult(user=self._verified(encoded_token), auth=encoded_token)

    def _verified(self, encoded: str) -> Identity:
        """Verify a token, remembering good ones until they expire.

        Workers send the same token with every append, and verifying an HS256 signature costs
        more than the rest of the request's Python work; a token that verified once is the
        same token the next time. The cache is bounded and expiry is checked on every use.
        """
        now = time.time()
        cached = self._cache.get(encoded)
        if cached is not None:
            identity, expires = cached
            if now <= expires + self.leeway:
                return identity
            del self._cache[encoded]
        identity, expires = decode(encoded, self.token_secret, self.leeway)
        if len(self._cache) >= TOKEN_CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[encoded] = (identity, expires)
        return identity


def decode(encoded: str, secret: str, leeway: float) -> tuple[Identity, float]:
    """The caller and the token's expiry, or NotAuthorizedException."""
    try:
        claims = jwt.decode(
            encoded,
            secret,
            algorithms=[ALGORITHM],
            leeway=leeway,
            options={"require": ["exp", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise NotAuthorizedException("token expired") from None
    except jwt.InvalidTokenError as error:
        raise NotAuthorizedException(f"invalid token: {error}") from None
    sub, tenant, scope = claims.get("sub"), claims.get("tenant"), claims.get("scope", "")
    if not isinstance(sub, str) or not sub:
        raise NotAuthorizedException("invalid token: sub must be a non-empty string")
    if not isinstance(tenant, str) or not tenant:
        raise NotAuthorizedException("invalid token: tenant must be a non-empty string")
    if not isinstance(scope, str):
        raise NotAuthorizedException("invalid token: scope must be a space-separated string")
    return Identity(sub, tenant, frozenset(scope.split())), float(claims["exp"])


def middleware(secret: str, leeway: float) -> DefineMiddleware:
    async def no_lookup(token: Token, connection: ASGIConnection[Any, Any, Any, Any]) -> None:
        return None  # never called: authenticate_token is replaced

    return DefineMiddleware(
        BearerMiddleware,
        leeway=leeway,
        algorithm=ALGORITHM,
        auth_header="Authorization",
        exclude=["^/schema"],
        exclude_http_methods=["OPTIONS"],
        exclude_opt_key=PUBLIC,
        retrieve_user_handler=no_lookup,
        scopes=None,
        token_secret=secret,
    )


def identity(connection: ASGIConnection[Any, Any, Any, Any]) -> Identity:
    user = connection.scope.get("user")
    assert isinstance(user, Identity), "route is not behind authentication"
    return user


def requires(*scopes: str) -> dict[str, Any]:
    """Route options: the token must hold any one of ``scopes`` (checked right after the token,
    in the middleware, rather than by a guard: Litestar copies the handler for every guard)."""
    return {SCOPES: frozenset(scopes)}


class RedactQueryTokens(logging.Filter):
    """Keeps ``?access_token=`` (streams take the token in the URL) out of access logs."""

    _TOKEN = re.compile(r"(?<=[?&]access_token=)[^&\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(arg, str) and "access_token=" in arg for arg in record.args
        ):
            record.args = tuple(
                self._TOKEN.sub("[redacted]", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def redact_access_logs() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQueryTokens) for f in access.filters):
        access.addFilter(RedactQueryTokens())
