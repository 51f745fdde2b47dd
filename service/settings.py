"""All configuration in one typed object, read from ``TASKSTREAM_*`` variables and ``.env``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.logs import LogFormat


class Settings(BaseSettings):
    """Built by the app factory and the CLI, never at import time."""

    model_config = SettingsConfigDict(
        env_prefix="TASKSTREAM_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str | None = Field(
        default=None,
        description="postgresql://user:pass@host:port/db; unset: an embedded development Postgres",
    )
    listen_database_url: str | None = Field(
        default=None, description="Direct (not transaction-pooled) URL for LISTEN"
    )
    jwt_secret: str | None = Field(
        default=None, description="HS256 secret; unset means one generated under data_dir"
    )
    data_dir: Path = Field(
        default=Path(".taskstream"), description="Embedded Postgres and generated secret"
    )
    heartbeat_seconds: float = Field(default=15.0, gt=0)
    max_streams_per_subject: int = Field(default=20, ge=1)
    max_event_bytes: int = Field(default=65536, ge=1024)
    max_body_bytes: int = Field(default=8_388_608, ge=4096)
    auto_migrate: bool = True
    retry_ms: int = Field(default=2000, ge=0)
    jwt_leeway_seconds: float = Field(default=30.0, ge=0)
    jwt_public_key: str | None = Field(
        default=None,
        description="RS256/ES256 public key of an identity provider: PEM text or a PEM file",
    )
    jwks_file: Path | None = Field(
        default=None, description='A JSON Web Key Set file ({"keys": [...]}); keys chosen by kid'
    )
    jwt_audience: str | None = Field(
        default=None, description="When set, every token's aud must include it"
    )
    jwt_issuer: str | None = Field(default=None, description="When set, every token's iss")
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated origins (scheme://host[:port]) browsers may call from;"
        " empty: no CORS headers at all",
    )

    append_rate_per_second: float | None = Field(
        default=None,
        gt=0,
        description="Events a token subject may append per second, per process; unset: no limit",
    )
    append_burst: float | None = Field(
        default=None, ge=1, description="Events a subject may append at once (default: the rate)"
    )

    pool_size: int = Field(default=10, ge=1, description="Database connections per process")
    append_group_max: int = Field(
        default=2000, ge=1, description="Most events committed in one group transaction"
    )
    append_committers: int = Field(
        default=1,
        ge=1,
        description="Group transactions in flight at once per process; one gives the largest"
        " groups, which measured fastest (docs/performance.md)",
    )
    readiness_timeout_seconds: float = Field(default=2.0, gt=0)

    stream_buffer_bytes: int = Field(
        default=262_144,
        ge=4096,
        description="Unsent bytes a stream may hold before its client is cut off (it resumes)",
    )
    backfill_concurrency: int = Field(
        default=4, ge=1, description="Streams reading history from the table at once"
    )
    log_format: LogFormat = Field(
        default="auto", description="json, text, or auto: text on a terminal, JSON otherwise"
    )
    access_log: bool = Field(default=True, description="Log one line per request")
    lease_check_seconds: float = Field(
        default=1.0, gt=0, description="How often running tasks are checked for an expired lease"
    )
    listener_poll_seconds: float = Field(
        default=2.0, gt=0, description="Read the table this often even without a notification"
    )
    listener_probe_seconds: float = Field(
        default=5.0, gt=0, description="How long the LISTEN connection may take to answer a probe"
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        return tuple(part.strip() for part in value.split(",")) if isinstance(value, str) else value

    @field_validator("cors_origins")
    @classmethod
    def _exact_origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        """Exact origins, as browsers send them (lower case, no path): the setting is an
        allow-list, and Litestar would read a ``*`` in it as a pattern."""
        kept = tuple(origin.rstrip("/").lower() for origin in origins if origin)
        for origin in kept:
            parts = urlsplit(origin)
            if (
                "*" in origin
                or parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path
                or parts.query
                or parts.fragment
            ):
                raise ValueError(f"{origin!r} is not an origin such as https://app.example.com")
        return kept
