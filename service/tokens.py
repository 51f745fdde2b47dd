"""JSON Web Tokens: minting with the HS256 secret, verifying with every configured key.

Tokens a deployment mints itself (``taskstream token``, the start-up banner, the tests) are
HS256 with ``TASKSTREAM_JWT_SECRET``. Tokens of an identity provider are RS256 or ES256,
verified with ``TASKSTREAM_JWT_PUBLIC_KEY`` or the keys of ``TASKSTREAM_JWKS_FILE``.

Every key is bound to exactly one algorithm, and a token is checked only against a key of the
algorithm its header names. So a public key is never offered to HMAC as a secret (the
algorithm-confusion attack: an HS256 token "signed" with the public key's bytes), ``none``
matches no key, and keys named in the token itself (``jwk``, ``jku``, ``x5u``) are ignored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from service.settings import Settings

ALGORITHM = "HS256"
"""What :func:`mint` signs with; verification may accept more (see :class:`Verifier`)."""

MIN_RSA_BITS = 2048
PEM_PREFIX = "-----BEGIN"


class KeyConfigurationError(ValueError):
    """A configured key cannot be used; the message names the setting and what to do."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A key and the one algorithm it may verify."""

    algorithm: str
    key: Any
    """The HS256 secret (str), or a ``cryptography`` public key."""


@dataclass(frozen=True, slots=True)
class Verifier:
    """Checks a token's signature and registered claims against the configured keys."""

    secret: str | None = None
    public_key: VerificationKey | None = None
    key_set: Mapping[str, VerificationKey] = field(default_factory=dict)
    """The JWKS file's signing keys by ``kid``."""
    audience: str | None = None
    issuer: str | None = None
    leeway: float = 0.0

    @property
    def algorithms(self) -> frozenset[str]:
        """Exactly the algorithms the configured keys imply."""
        found = {key.algorithm for key in self.key_set.values()}
        if self.public_key is not None:
            found.add(self.public_key.algorithm)
        if self.secret:
            found.add(ALGORITHM)
        return frozenset(found)

    def key_for(self, header: Mapping[str, Any]) -> VerificationKey:
        """The key that must have signed a token with this header, or InvalidTokenError.

        A JWKS key is chosen by ``kid``; a token without one (or with one the set does not
        hold) is checked against the single public key when there is one, else refused.
        """
        algorithm, kid = header.get("alg"), header.get("kid")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            accepted = ", ".join(sorted(self.algorithms))
            raise jwt.InvalidAlgorithmError(f"the token's algorithm is not accepted ({accepted})")
        if algorithm == ALGORITHM and self.secret:
            return VerificationKey(ALGORITHM, self.secret)
        key = self.key_set.get(kid) if isinstance(kid, str) else None
        if key is None and self.public_key is not None:
            key = self.public_key
        if key is None:
            missing = "no key id (kid)" if kid is None else "a key id (kid) the key set lacks"
            raise jwt.InvalidTokenError(f"the token has {missing}")
        if key.algorithm != algorithm:
            raise jwt.InvalidAlgorithmError(f"the key verifies {key.algorithm} tokens only")
        return key

    def verify(self, encoded: str) -> dict[str, Any]:
        """The token's claims once its signature, ``exp`` (required), ``nbf``, and ``aud`` and
        ``iss`` when configured, hold; else ``jwt.PyJWTError``."""
        key = self.key_for(jwt.get_unverified_header(encoded))
        required = ["exp", "sub"]
        required += ["aud"] if self.audience is not None else []
        required += ["iss"] if self.issuer is not None else []
        claims: dict[str, Any] = jwt.decode(
            encoded,
            key.key,
            algorithms=[key.algorithm],
            audience=self.audience,
            issuer=self.issuer,
            leeway=self.leeway,
            # Without a configured audience an `aud` claim is not checked (PyJWT would refuse
            # every token that carries one).
            options={"require": required, "verify_aud": self.audience is not None},
        )
        return claims


def verifier(settings: Settings) -> Verifier:
    """Load the configured keys; KeyConfigurationError when none is configured or one is bad."""
    public_key = (
        _public_key(settings.jwt_public_key) if settings.jwt_public_key is not None else None
    )
    key_set = _key_set(settings.jwks_file) if settings.jwks_file is not None else {}
    if not (settings.jwt_secret or public_key or key_set):
        raise KeyConfigurationError(
            "no key to verify tokens with: set TASKSTREAM_JWT_SECRET (HS256), "
            "TASKSTREAM_JWT_PUBLIC_KEY or TASKSTREAM_JWKS_FILE (RS256/ES256)"
        )
    return Verifier(
        secret=settings.jwt_secret or None,
        public_key=public_key,
        key_set=key_set,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        leeway=settings.jwt_leeway_seconds,
    )


def _public_key(value: str) -> VerificationKey:
    """``TASKSTREAM_JWT_PUBLIC_KEY``: the PEM text itself, or the path of a PEM file."""
    setting = "TASKSTREAM_JWT_PUBLIC_KEY"
    if value.lstrip().startswith(PEM_PREFIX):
        text = value
    else:
        path = Path(value).expanduser()
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as error:
            raise KeyConfigurationError(
                f"{setting}: neither PEM text nor a readable PEM file ({path}: {error})"
            ) from None
    try:
        key = load_pem_public_key(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise KeyConfigurationError(
            f"{setting}: not a PEM public key; expected '-----BEGIN PUBLIC KEY-----'"
            " (a private key or a certificate does not belong here)"
        ) from None
    return VerificationKey(_algorithm_of(key, setting), key)


def _key_set(path: Path) -> dict[str, VerificationKey]:
    """``TASKSTREAM_JWKS_FILE``: a JSON Web Key Set of public signing keys, each with a kid."""
    setting = f"TASKSTREAM_JWKS_FILE ({path})"
    try:
        document = json.loads(path.expanduser().read_text(encoding="utf-8"))
    except OSError as error:
        raise KeyConfigurationError(f"{setting}: cannot read it: {error.strerror}") from None
    except ValueError as error:
        raise KeyConfigurationError(f"{setting}: not JSON: {error}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise KeyConfigurationError(f'{setting}: expected a JSON object with a "keys" list')
    keys: dict[str, VerificationKey] = {}
    for entry in entries:
        key = _signing_key(entry, setting)
        if key is None:
            continue
        kid, verification = key
        if kid in keys:
            raise KeyConfigurationError(f"{setting}: two keys have the kid {kid!r}")
        keys[kid] = verification
    if not keys:
        raise KeyConfigurationError(f"{setting}: holds no signing key")
    return keys


def _signing_key(entry: Any, setting: str) -> tuple[str, VerificationKey] | None:
    """One JWK as (kid, key); None for a key meant for encryption rather than signatures."""
    if not isinstance(entry, dict):
        raise KeyConfigurationError(f"{setting}: every key must be a JSON object")
    if entry.get("use", "sig") != "sig":
        return None
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid:
        raise KeyConfigurationError(f"{setting}: every signing key needs a kid")
    where = f"{setting}, key {kid!r}"
    if entry.get("kty") not in ("RSA", "EC"):
        # A symmetric ("oct") key would make a shared secret look like an identity provider's.
        raise KeyConfigurationError(f"{where}: only RSA and EC public keys are accepted")
    if "d" in entry:
        raise KeyConfigurationError(f"{where}: a private key; the file needs the public part only")
    try:
        key = jwt.PyJWK(entry).key
    except (jwt.PyJWKError, jwt.InvalidKeyError) as error:
        raise KeyConfigurationError(f"{where}: {error}") from None
    algorithm = _algorithm_of(key, where)
    if entry.get("alg", algorithm) != algorithm:
        raise KeyConfigurationError(
            f"{where}: alg {entry.get('alg')!r} is not supported; this key verifies {algorithm}"
        )
    return kid, VerificationKey(algorithm, key)


def _algorithm_of(key: Any, where: str) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyConfigurationError(f"{where}: an RSA key of {key.key_size} bits is too weak")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise KeyConfigurationError(f"{where}: only RSA (RS256) and P-256 EC (ES256) keys are usable")


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
