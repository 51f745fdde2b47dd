"""Tokens of an identity provider: RS256/ES256 with a JWKS file or a public key.

The service is started without an HS256 secret, as next to an identity provider: a token is
accepted only when signed by the private half of a configured key, under the algorithm that
key implies, for the configured audience and issuer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from service import bootstrap, cli
from service.settings import Settings
from service.tokens import KeyConfigurationError, verifier
from tests.helpers import Service, assert_problem

AUDIENCE = "taskstream-api"
ISSUER = "https://idp.example.com/"


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


RSA_KEY, OTHER_RSA_KEY = rsa_key(), rsa_key()
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def jwk(key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPublicKey) else ECAlgorithm
    return {**algorithm.to_jwk(key, as_dict=True), "kid": kid, "use": "sig", **extra}


RSA_JWK = jwk(RSA_KEY.public_key(), "rsa-1")


def write_jwks(tmp_path: Path, *keys: dict[str, Any]) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": list(keys)}))
    return path


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "idp-user", "tenant": "t1", "scope": "tasks:read tasks:write",
            "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 600}  # fmt: skip
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def signed(key: Any, algorithm: str, kid: str | None = "rsa-1", **overrides: Any) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims(**overrides), key, algorithm=algorithm, headers=headers)


def hs256_with(key_bytes: bytes, kid: str | None = "rsa-1") -> str:
    """An HS256 token whose HMAC key is ``key_bytes`` (PyJWT refuses to make one from a PEM)."""

    def part(value: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")

    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    message = part(header) + b"." + part(claims())
    mac = hmac.new(key_bytes, message, hashlib.sha256).digest()
    return (message + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()


async def status(service: Service, token: str) -> int:
    response = await service.client.get("/v1/tasks", headers={"Authorization": f"Bearer {token}"})
    if response.status_code == 401:
        assert_problem(response, 401, "unauthorized")
        assert token not in response.text
    return response.status_code


def token_exp(token: str) -> float:
    return float(jwt.decode(token, options={"verify_signature": False})["exp"])


@pytest.fixture
async def idp(service_factory: Any, tmp_path: Path) -> Service:
    """The service with a JWKS of an RSA and an EC key, audience and issuer, no secret."""
    path = write_jwks(
        tmp_path,
        jwk(RSA_KEY.public_key(), "rsa-1", alg="RS256"),
        jwk(EC_KEY.public_key(), "ec-1"),
        # An encryption key is not for signatures: skipped.
        jwk(OTHER_RSA_KEY.public_key(), "enc-1", use="enc"),
    )
    service: Service = await service_factory(
        jwt_secret=None, jwks_file=path, jwt_audience=AUDIENCE, jwt_issuer=ISSUER
    )
    return service


async def test_token_signed_by_a_key_of_the_set_is_accepted(idp: Service) -> None:
    assert await status(idp, signed(RSA_KEY, "RS256", "rsa-1")) == 200
    assert await status(idp, signed(EC_KEY, "ES256", "ec-1")) == 200
    assert await status(idp, signed(RSA_KEY, "RS256", "rsa-1", aud=["other", AUDIENCE])) == 200
    # The identity is the token's: the task lands in its tenant.
    token = signed(RSA_KEY, "RS256", "rsa-1", tenant="idp-tenant")
    response = await idp.client.post(
        "/v1/tasks", json={"kind": "k"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert (response.status_code, response.json()["tenant"]) == (201, "idp-tenant")


def refused_tokens() -> dict[str, str]:
    now = int(time.time())
    return {
        "signed by another key": signed(OTHER_RSA_KEY, "RS256", "rsa-1"),
        "unknown kid": signed(RSA_KEY, "RS256", "rsa-2"),
        "no kid": signed(RSA_KEY, "RS256", None),
        "kid of an encryption key": signed(OTHER_RSA_KEY, "RS256", "enc-1"),
        "RSA kid, EC signature": signed(EC_KEY, "ES256", "rsa-1"),
        "EC kid, RS256 header": signed(RSA_KEY, "RS256", "ec-1"),
        "RS512 by the right key": signed(RSA_KEY, "RS512", "rsa-1"),
        "PS256 by the right key": signed(RSA_KEY, "PS256", "rsa-1"),
        "alg none": jwt.encode(claims(), None, "none", headers={"kid": "rsa-1"}),
        # Algorithm confusion: HS256 with a public key's bytes as the HMAC secret.
        "HS256 keyed with the public PEM": hs256_with(public_pem(RSA_KEY)),
        "... without its final newline": hs256_with(public_pem(RSA_KEY).strip()),
        "... and no kid": hs256_with(public_pem(RSA_KEY), kid=None),
        "HS256 keyed with the JWK": hs256_with(json.dumps(RSA_JWK).encode()),
        "HS256 keyed with the EC PEM": hs256_with(public_pem(EC_KEY), kid="ec-1"),
        "wrong audience": signed(RSA_KEY, "RS256", aud="another-api"),
        "no audience": signed(RSA_KEY, "RS256", aud=None),
        "wrong issuer": signed(RSA_KEY, "RS256", iss="https://evil.example.com/"),
        "no issuer": signed(RSA_KEY, "RS256", iss=None),
        "expired": signed(RSA_KEY, "RS256", exp=now - 3600),
        "not yet valid": signed(RSA_KEY, "RS256", nbf=now + 3600),
        "no tenant": signed(RSA_KEY, "RS256", tenant=None),
        "no sub": signed(RSA_KEY, "RS256", sub=None),
        "no exp": signed(RSA_KEY, "RS256", exp=None),
    }


async def test_other_tokens_are_refused(idp: Service) -> None:
    answers = {case: await status(idp, token) for case, token in refused_tokens().items()}
    assert {case: code for case, code in answers.items() if code != 401} == {}


async def test_hs256_is_refused_when_no_secret_is_configured(idp: Service) -> None:
    """The conftest's random secret is not configured here: HS256 is not an algorithm of
    this deployment at all."""
    assert await status(idp, idp.token(tenant="t1", scopes="tasks:read")) == 401


async def test_a_forged_token_after_a_good_one_is_still_refused(idp: Service) -> None:
    """The token cache is keyed by the whole token, signature included."""
    good = signed(RSA_KEY, "RS256")
    header, payload, _ = good.split(".")
    forged = signed(OTHER_RSA_KEY, "RS256")
    assert await status(idp, good) == 200
    assert await status(idp, f"{header}.{payload}.{forged.split('.')[2]}") == 401
    assert await status(idp, good) == 200


async def test_a_cached_token_still_expires(service_factory: Any, tmp_path: Path) -> None:
    path = write_jwks(tmp_path, jwk(RSA_KEY.public_key(), "rsa-1"))
    service = await service_factory(jwt_secret=None, jwks_file=path, jwt_leeway_seconds=0)
    token = signed(RSA_KEY, "RS256", exp=int(time.time()) + 2)
    assert await status(service, token) == 200
    await asyncio.sleep(max(0.0, token_exp(token) + 0.1 - time.time()))
    assert await status(service, token) == 401, "the cache outlived the token's exp"


async def test_public_key_as_pem_text_or_file_next_to_a_secret(
    service_factory: Any, tmp_path: Path
) -> None:
    """An ES256 public key given as PEM text, with an HS256 secret as well: both kinds of
    token are accepted, RS256 is not (no RSA key), nor HS256 keyed with the public key."""
    service = await service_factory(jwt_public_key=public_pem(EC_KEY).decode())
    assert await status(service, signed(EC_KEY, "ES256", kid=None)) == 200
    assert await status(service, signed(EC_KEY, "ES256", kid="anything")) == 200
    assert await status(service, service.token()) == 200
    assert await status(service, signed(RSA_KEY, "RS256", kid=None)) == 401
    assert await status(service, hs256_with(public_pem(EC_KEY), kid=None)) == 401

    pem_file = tmp_path / "idp.pem"
    pem_file.write_bytes(public_pem(RSA_KEY))
    service = await service_factory(jwt_secret=None, jwt_public_key=str(pem_file))
    assert await status(service, signed(RSA_KEY, "RS256", kid=None)) == 200
    assert await status(service, signed(OTHER_RSA_KEY, "RS256", kid=None)) == 401
    assert await status(service, hs256_with(public_pem(RSA_KEY), kid=None)) == 401


async def test_audience_and_issuer_are_not_checked_unless_configured(
    service_factory: Any, tmp_path: Path
) -> None:
    service = await service_factory(
        jwt_secret=None, jwks_file=write_jwks(tmp_path, jwk(RSA_KEY.public_key(), "rsa-1"))
    )
    assert await status(service, signed(RSA_KEY, "RS256", aud="any", iss="any")) == 200
    assert await status(service, signed(RSA_KEY, "RS256", aud=None, iss=None)) == 200


# ------------------------------------------------------------------------------ configuration


def key_set_entries(tmp_path: Path) -> dict[str, Any]:
    rsa_public = jwk(RSA_KEY.public_key(), "k")
    return {
        "a symmetric key": {"kty": "oct", "k": "c2VjcmV0", "kid": "k"},
        "a private key": {**RSAAlgorithm.to_jwk(RSA_KEY, as_dict=True), "kid": "k"},
        "no kid": {key: value for key, value in rsa_public.items() if key != "kid"},
        "an RSA key of 1024 bits": jwk(rsa_key(1024).public_key(), "k"),
        "an unsupported alg": {**rsa_public, "alg": "RS512"},
        "a P-384 key": jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), "k"),
        "a broken key": {**rsa_public, "n": "!!"},
    }


def test_unusable_configuration_is_refused_at_start(tmp_path: Path) -> None:
    url = "postgresql://nobody@127.0.0.1:1/none"
    bad: dict[str, dict[str, Any]] = {
        "no key at all": {},
        "a private key as the public key": {"jwt_public_key": private_pem(RSA_KEY).decode()},
        "a missing PEM file": {"jwt_public_key": str(tmp_path / "missing.pem")},
        "a missing JWKS file": {"jwks_file": tmp_path / "missing.json"},
    }
    not_json = tmp_path / "not.json"
    not_json.write_text("{")
    bad["a JWKS file that is not JSON"] = {"jwks_file": not_json}
    for case, entry in key_set_entries(tmp_path).items():
        path = tmp_path / f"{len(bad)}.json"
        path.write_text(json.dumps({"keys": [entry]}))
        bad[f"a JWKS with {case}"] = {"jwks_file": path}
    twice = jwk(RSA_KEY.public_key(), "same")
    bad["two keys of one kid"] = {"jwks_file": write_jwks(tmp_path, twice, twice)}
    accepted = []
    for case, options in bad.items():
        try:
            verifier(Settings(database_url=url, jwt_secret=None, **options))
        except KeyConfigurationError:
            continue
        accepted.append(case)
    assert not accepted, accepted


def test_algorithms_are_those_of_the_keys(tmp_path: Path) -> None:
    path = write_jwks(tmp_path, jwk(EC_KEY.public_key(), "ec"))
    url = "postgresql://nobody@127.0.0.1:1/none"
    only_jwks = verifier(Settings(database_url=url, jwt_secret=None, jwks_file=path))
    assert only_jwks.algorithms == {"ES256"}
    both = verifier(
        Settings(database_url=url, jwt_secret="s" * 32, jwt_public_key=public_pem(RSA_KEY).decode())
    )
    assert both.algorithms == {"HS256", "RS256"}


# ------------------------------------------------------------------------------ the command


def test_public_keys_only_generate_no_secret_and_mint_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jwks(tmp_path, jwk(RSA_KEY.public_key(), "rsa-1"))
    monkeypatch.chdir(tmp_path)  # no .env of the project
    for name in ("TASKSTREAM_JWT_SECRET", "TASKSTREAM_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TASKSTREAM_JWKS_FILE", str(path))
    monkeypatch.setenv("TASKSTREAM_DATA_DIR", str(tmp_path / "data"))

    settings = Settings(database_url="postgresql://nobody@127.0.0.1:1/none")
    prepared = bootstrap.prepare(settings)
    assert prepared.jwt_secret is None
    assert "TASKSTREAM_JWT_SECRET" not in os.environ
    assert not (tmp_path / "data" / bootstrap.SECRET_FILE).exists()
    assert "TASKSTREAM_JWT_AUDIENCE is not set" in capsys.readouterr().err

    bootstrap.banner(prepared, host="127.0.0.1", port=8000, show_tokens=True)
    out = capsys.readouterr().out
    assert "identity provider" in out and "export" not in out

    assert cli.main(["token", "--sub", "s", "--tenant", "t", "--scope", "tasks:read"]) == 1
    error = capsys.readouterr().err
    assert "TASKSTREAM_JWT_SECRET" in error and "identity provider" in error
    assert not (tmp_path / "data" / bootstrap.SECRET_FILE).exists()
