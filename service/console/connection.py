"""Where a client command connects, and with which token."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from service.cli import (
    DEFAULT_URL,
    KNOWN_SCOPES,
    MINTED_SUB,
    MINTED_TENANT,
    MINTED_TTL_SECONDS,
    CliError,
    load_settings,
)
from service.client import AsyncTaskstream, Taskstream

NO_TOKEN = (
    "no token: pass --token or set TASKSTREAM_TOKEN (mint one with `taskstream token`), or run "
    "where the service's JWT secret is known (TASKSTREAM_JWT_SECRET, or the development secret "
    "in ./.taskstream/jwt-secret that `taskstream serve` generated) to have one minted"
)


@dataclass(frozen=True, slots=True)
class Connection:
    url: str
    token: str

    def client(self) -> Taskstream:
        return Taskstream(self.url, self.token)

    def async_client(self) -> AsyncTaskstream:
        return AsyncTaskstream(self.url, self.token)


def connection(args: argparse.Namespace) -> Connection:
    """``--url``/``--token`` or their variables; without a token, one minted locally."""
    url = args.url or os.environ.get("TASKSTREAM_URL") or DEFAULT_URL
    token = args.token or os.environ.get("TASKSTREAM_TOKEN")
    if token:
        if args.tenant is not None:
            raise CliError(
                "--tenant only applies to a token the command mints; the given token's tenant "
                "is set by whoever issued it"
            )
        return Connection(url, token)
    return Connection(url, _mint(args.tenant or MINTED_TENANT))


def _mint(tenant: str) -> str:
    """A token signed with the secret the service uses when it runs here: the configured one,
    or the development secret ``taskstream serve`` generated. Never a new secret: a token
    signed with one that no service knows would only be refused."""
    from service import bootstrap
    from service.tokens import mint

    settings = load_settings()
    generated = bootstrap.data_dir(settings) / bootstrap.SECRET_FILE
    if bootstrap.identity_provider_only(settings) or not (
        settings.jwt_secret or generated.exists()
    ):
        raise CliError(NO_TOKEN)
    try:
        secret = bootstrap.jwt_secret(settings).value
    except bootstrap.BootstrapError as exc:
        raise CliError(str(exc)) from exc
    return mint(
        secret, sub=MINTED_SUB, tenant=tenant, scopes=KNOWN_SCOPES, ttl_seconds=MINTED_TTL_SECONDS
    )
