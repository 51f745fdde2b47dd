"""Development defaults resolved before the service starts, and the start-up banner.

``prepare`` fills in what a developer left unset: the database (an embedded Postgres under the
data directory) and the JWT secret (generated once, kept in ``<data_dir>/jwt-secret``), unless
tokens come from an identity provider (a public key or a JWKS file is configured). The
results are exported to ``os.environ`` so that uvicorn's worker processes, which build their own
``Settings`` through ``create_app()``, see the same values.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from service.settings import Settings
from service.tokens import mint

SECRET_FILE = "jwt-secret"
ENV_DATABASE_URL = "TASKSTREAM_DATABASE_URL"
ENV_JWT_SECRET = "TASKSTREAM_JWT_SECRET"

ROLES: dict[str, tuple[str, ...]] = {
    "writer": ("tasks:write",),
    "reader": ("tasks:read",),
    "analyst": ("events:read",),
    "admin": ("tasks:write", "tasks:read", "events:read"),
}
"""The ready-made tokens of the banner: role name → scopes."""

BANNER_TOKEN_TTL_SECONDS = 24 * 3600


class BootstrapError(RuntimeError):
    """A development default could not be resolved; the message says why and what to do."""


@dataclass(frozen=True)
class Secret:
    value: str
    path: Path | None
    """The file it came from, or None when it was configured (``TASKSTREAM_JWT_SECRET``)."""
    created: bool
    """True when this call generated it."""


def data_dir(settings: Settings) -> Path:
    """The data directory as an absolute path (the default ``.taskstream`` is relative to cwd)."""
    return settings.data_dir.expanduser().resolve()


def identity_provider_only(settings: Settings) -> bool:
    """Tokens are verified with public keys only: there is no secret, and none is generated,
    since a development secret would let whoever reads it mint tokens the service accepts."""
    return not settings.jwt_secret and (
        settings.jwt_public_key is not None or settings.jwks_file is not None
    )


def jwt_secret(settings: Settings) -> Secret:
    """The configured secret or, when unset, the one kept in ``<data_dir>/jwt-secret``.

    The file is generated on first use (32 random bytes, URL-safe base64, mode 0600) and reused
    by every later run, every worker process and ``taskstream token``. Concurrent first uses
    agree on one secret: it is written to a private temporary file and linked into place, and
    whoever loses the race reads the winner's.
    """
    if settings.jwt_secret:
        return Secret(settings.jwt_secret, None, False)
    directory = data_dir(settings)
    path = directory / SECRET_FILE
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.exists():
            return Secret(_read_secret(path), path, False)
        created = _create_secret(path)
        return Secret(_read_secret(path), path, created)
    except OSError as exc:
        raise BootstrapError(
            f"cannot keep the generated JWT secret in {path}: {exc.strerror or exc}. "
            f"Set {ENV_JWT_SECRET}, or point TASKSTREAM_DATA_DIR at a writable directory."
        ) from exc


def _create_secret(path: Path) -> bool:
    value = secrets.token_urlsafe(32)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(value + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _read_secret(path: Path) -> str:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        path.chmod(0o600)
        _say(f"tightened {path} from mode {mode:o} to 600 (it holds the JWT secret)")
    value = path.read_text(encoding="utf-8").strip()
    if len(value) < 16:
        raise BootstrapError(
            f"{path} does not hold a usable JWT secret (empty or shorter than 16 characters); "
            f"delete it to have a new one generated, or set {ENV_JWT_SECRET}"
        )
    return value


def prepare(settings: Settings) -> Settings:
    """Resolve the development defaults and export them for worker processes.

    * ``database_url`` unset: start (or reuse) the embedded Postgres under ``<data_dir>/pgdata``
      and say so loudly on stderr.
    * ``jwt_secret`` unset: use the generated secret of ``<data_dir>/jwt-secret``, unless
      tokens come from an identity provider only.

    Blocking; call it from the CLI's parent process only, never inside an event loop.
    """
    update: dict[str, str] = {}
    if identity_provider_only(settings):
        if settings.jwt_audience is None:
            _say(
                "warning: TASKSTREAM_JWT_AUDIENCE is not set, so a token the identity provider"
                " issued for any other application is accepted too"
            )
    else:
        secret = jwt_secret(settings)
        if secret.created:
            _say(f"generated a development JWT secret in {secret.path} (mode 600)")
        os.environ[ENV_JWT_SECRET] = update["jwt_secret"] = secret.value

    database_url = settings.database_url
    if not database_url:
        from service.store import embedded

        directory = data_dir(settings)
        try:
            server = embedded.start(directory)
        except embedded.EmbeddedPostgresError as exc:
            raise BootstrapError(
                f"{exc}. Set {ENV_DATABASE_URL} to use another PostgreSQL server."
            ) from exc
        database_url = server.url
        how = "reusing the running" if server.reused else "started an"
        _loud(
            f"{ENV_DATABASE_URL} is not set: {how} EMBEDDED PostgreSQL 16 for DEVELOPMENT ONLY",
            f"data:   {server.pgdata}",
            f"url:    {database_url}",
            f"log:    {server.log_file}",
            f"For anything else, set {ENV_DATABASE_URL}=postgresql://user:pass@host:port/db",
        )

    os.environ[ENV_DATABASE_URL] = update["database_url"] = database_url
    return settings.model_copy(update=update)


def display_host(host: str) -> str:
    """The host part of a URL a person can open for a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def banner(
    settings: Settings,
    *,
    host: str,
    port: int,
    show_tokens: bool,
    tenant: str = "demo",
    out: TextIO | None = None,
) -> None:
    """Print the start banner: dashboard URL, and, with ``show_tokens``, a token per role.

    Tokens are meant for a development secret (one that was generated); with a configured
    secret the banner shows how to mint one instead of printing admin credentials into logs.
    """
    stream = out if out is not None else sys.stdout
    base = f"http://{display_host(host)}:{port}"
    lines = [
        "",
        "=" * 78,
        f"taskstream dashboard:  {base}/",
        f"           API:        {base}/v1/  (OpenAPI: {base}/schema)",
        "=" * 78,
    ]
    if show_tokens and settings.jwt_secret:
        hours = BANNER_TOKEN_TTL_SECONDS // 3600
        lines.append(f"Development tokens for tenant '{tenant}' (valid {hours} h), ready to paste:")
        lines.append("")
        tokens: dict[str, str] = {}
        for role, scopes in ROLES.items():
            token = tokens[role] = mint(
                settings.jwt_secret,
                sub=f"{tenant}-{role}",
                tenant=tenant,
                scopes=scopes,
                ttl_seconds=BANNER_TOKEN_TTL_SECONDS,
            )
            lines.append(f"  # {role}: {' '.join(scopes)}")
            lines.append(f"  export {role.upper()}_TOKEN={token}")
        lines += [
            "",
            "The dashboard, signed in as admin (it can cancel; the token stays in the tab):",
            f"  {base}/#token={tokens['admin']}",
            "",
            "Try it:",
            f"  curl -s -X POST {base}/v1/tasks \\",
            '    -H "Authorization: Bearer $WRITER_TOKEN" -H "Content-Type: application/json" \\',
            """    -d '{"id": "hello-1", "kind": "demo", "title": "Hello"}'""",
            f"  curl -s -X POST {base}/v1/tasks/hello-1/events \\",
            '    -H "Authorization: Bearer $WRITER_TOKEN" -H "Content-Type: application/json" \\',
            """    -d '{"type": "progress", "data": {"percent": 50, "message": "half way"}}'""",
            f'  curl -s {base}/v1/tasks/hello-1 -H "Authorization: Bearer $READER_TOKEN"',
            f'  curl -N {base}/v1/tasks/hello-1/stream -H "Authorization: Bearer $READER_TOKEN"',
            "",
            "More tokens: uv run taskstream token --sub NAME --tenant demo --scope 'tasks:read'",
        ]
    elif identity_provider_only(settings):
        lines += [
            "Tokens come from the identity provider: verified with TASKSTREAM_JWT_PUBLIC_KEY /",
            "TASKSTREAM_JWKS_FILE (RS256/ES256). `taskstream token` needs TASKSTREAM_JWT_SECRET.",
        ]
    else:
        lines += [
            "Mint a token with the configured secret:",
            "  taskstream token --sub NAME --tenant TENANT --scope 'tasks:read tasks:write'",
        ]
    lines += ["=" * 78, ""]
    print("\n".join(lines), file=stream, flush=True)


def _say(message: str) -> None:
    print(f"taskstream: {message}", file=sys.stderr, flush=True)


def _loud(*lines: str) -> None:
    width = max(len(line) for line in lines) + 4
    rule = "!" * width
    body = "\n".join(f"!! {line}" for line in lines)
    print(f"\n{rule}\n{body}\n{rule}\n", file=sys.stderr, flush=True)
