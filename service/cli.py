"""The ``taskstream`` command: ``serve``, ``migrate``, ``token``, ``prune`` and ``purge``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn, TypeVar

from pydantic import ValidationError

from service.bootstrap import BootstrapError
from service.settings import Settings

if TYPE_CHECKING:
    from service.store.database import Database

T = TypeVar("T")

APP_FACTORY = "service.app:create_app"
STARTUP_FAILURE = 3
"""Exit status when the server could not start (uvicorn's own value)."""
GRACEFUL_SHUTDOWN_SECONDS = 5
"""How long uvicorn waits for open responses after SIGTERM before cancelling them; with the
app's own shutdown this keeps the whole exit within the contract's 10 s."""
KNOWN_SCOPES = ("tasks:write", "tasks:read", "events:read", "tasks:cancel")


class CliError(Exception):
    """An error to report as one line on stderr, with exit status 1."""


class _Stopped(SystemExit):
    """SIGTERM or SIGINT: leave cleanly, exit status 0."""

    def __init__(self) -> None:
        super().__init__(0)


class _Signals:
    """SIGTERM/SIGINT handling for the parent process.

    While ``deferred`` (start-up: the embedded Postgres may be mid-``initdb``), a first signal
    is only remembered and acted on by :meth:`release`; a second one stops at once. Otherwise a
    signal raises :class:`_Stopped`. uvicorn installs its own handlers while it serves and, after
    its graceful shutdown, re-raises the signal it caught into these, so the process ends with
    status 0 and runs its exit hooks (which stop the embedded Postgres), instead of being killed
    by the default SIGTERM action.
    """

    def __init__(self) -> None:
        self.deferred = True
        self.received: int | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.deferred and self.received is None:
            self.received = signum
            print(
                f"taskstream: {signal.Signals(signum).name} received, stopping once start-up "
                "is done (send it again to stop now)",
                file=sys.stderr,
                flush=True,
            )
            return
        raise _Stopped

    def release(self) -> None:
        self.deferred = False
        if self.received is not None:
            raise _Stopped


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"TASKSTREAM_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        raise CliError(f"invalid configuration: {problems}") from exc


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service import bootstrap, logs
    from service.store import embedded
    from service.stream.transport import HttpProtocol

    signals = _Signals()
    signals.install()
    if not args.access_log:
        os.environ["TASKSTREAM_ACCESS_LOG"] = "false"  # read by the app in every worker
    try:
        settings = _settings()
        generated_secret = not settings.jwt_secret and not bootstrap.identity_provider_only(
            settings
        )
        settings = bootstrap.prepare(settings)
        _check_keys(settings)
        signals.release()
        bootstrap.banner(settings, host=args.host, port=args.port, show_tokens=generated_secret)
        config = uvicorn.Config(
            APP_FACTORY,
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            lifespan="on",
            http=HttpProtocol,
            log_config=logs.config(args.log_level, settings.log_format),
            log_level=args.log_level,
            access_log=False,  # the service logs its requests itself (api/requestlog.py)
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
        if args.workers == 1:
            server = uvicorn.Server(config)
            server.run()
            return 0 if server.started else STARTUP_FAILURE
        from uvicorn.supervisors import Multiprocess

        # The workers import the app themselves (spawned processes); they read the resolved
        # database URL and secret from the environment that prepare() exported, and the
        # directory where they keep their metrics for each other's scrapes.
        with _shared_metrics():
            sock = config.bind_socket()
            try:
                Multiprocess(config, sockets=[sock]).run()
            finally:
                sock.close()
        return 0
    except _Stopped:
        return 0
    finally:
        embedded.stop()


@contextlib.contextmanager
def _shared_metrics() -> Iterator[None]:
    """A fresh PROMETHEUS_MULTIPROC_DIR for the workers (emptied if the operator chose one):
    values left by an earlier run would be added to this one's."""
    from service.metrics import MULTIPROCESS_DIR

    chosen = os.environ.get(MULTIPROCESS_DIR)
    directory = Path(chosen) if chosen else Path(tempfile.mkdtemp(prefix="taskstream-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROCESS_DIR] = str(directory)
    try:
        yield
    finally:
        if not chosen:
            shutil.rmtree(directory, ignore_errors=True)


def _check_keys(settings: Settings) -> None:
    """A bad key is one line now rather than a traceback from every worker process."""
    from service.tokens import KeyConfigurationError, verifier

    try:
        verifier(settings)
    except KeyConfigurationError as exc:
        raise CliError(str(exc)) from exc


def _on_database(work: Callable[[str], int]) -> int:
    """Run ``work`` with the configured database URL (the embedded Postgres when none is set,
    stopped afterwards); SIGTERM/SIGINT end it with status 0."""
    from service import bootstrap
    from service.store import embedded

    signals = _Signals()
    signals.install()
    try:
        settings = bootstrap.prepare(_settings())
        signals.release()
        assert settings.database_url is not None
        return work(settings.database_url)
    except _Stopped:
        return 0
    finally:
        embedded.stop()


def _migrate(args: argparse.Namespace) -> int:
    from service.store.migrate import upgrade

    def work(url: str) -> int:
        try:
            upgrade(url)
        except Exception as exc:
            raise CliError(f"migration failed: {exc}") from exc
        print(f"schema at revision {asyncio.run(_current_revision(url))}")
        return 0

    return _on_database(work)


def _with_database(url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``work`` on a one-connection pool of the database at ``url``."""
    from service.store.database import Database

    async def run() -> T:
        database = Database(url, pool_size=1)
        try:
            return await work(database)
        finally:
            await database.close()

    return asyncio.run(run())


def _prune(args: argparse.Namespace) -> int:
    from service.store import retention

    cutoff = datetime.now(UTC) - args.older_than

    def work(url: str) -> int:
        pruned = _with_database(
            url, lambda database: retention.prune(database, cutoff, batch=args.batch)
        )
        print(
            f"removed {pruned.events} event(s) older than {cutoff:%Y-%m-%dT%H:%M:%SZ};"
            f" history is complete after seq {pruned.pruned_through_seq}"
        )
        return 0

    return _on_database(work)


def _purge(args: argparse.Namespace) -> int:
    from service.store import retention

    def work(url: str) -> int:
        purged = _with_database(
            url,
            lambda database: retention.purge(database, args.tenant, args.task, batch=args.batch),
        )
        what = (
            f"task {args.task!r} of tenant {args.tenant!r}"
            if args.task
            else (f"tenant {args.tenant!r}")
        )
        print(f"removed {purged.tasks} task(s) and {purged.events} event(s) of {what}")
        return 0

    return _on_database(work)


async def _current_revision(url: str) -> str:
    import asyncpg

    from service.store import queries
    from service.store.database import asyncpg_dsn

    connection = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        revision = await connection.fetchval(queries.CURRENT_REVISION)
    finally:
        await connection.close()
    return str(revision) if revision is not None else "(none)"


def _token(args: argparse.Namespace) -> int:
    from service import bootstrap
    from service.tokens import mint

    scopes = " ".join(" ".join(args.scope).split())
    if not scopes:
        print(
            "taskstream: warning: a token without scopes is refused (403) by every /v1 route",
            file=sys.stderr,
        )
    for scope in scopes.split():
        if scope not in KNOWN_SCOPES:
            print(
                f"taskstream: warning: unknown scope {scope!r} (known: {', '.join(KNOWN_SCOPES)})",
                file=sys.stderr,
            )
    settings = _settings()
    if bootstrap.identity_provider_only(settings):
        raise CliError(
            "taskstream token signs HS256 tokens with TASKSTREAM_JWT_SECRET, which is not set:"
            " this deployment verifies tokens of an identity provider only"
            " (TASKSTREAM_JWT_PUBLIC_KEY / TASKSTREAM_JWKS_FILE), so get tokens from it;"
            " set TASKSTREAM_JWT_SECRET as well to accept self-minted HS256 tokens too"
        )
    secret = bootstrap.jwt_secret(settings)
    if secret.created:
        print(
            f"taskstream: generated a development JWT secret in {secret.path} (mode 600)",
            file=sys.stderr,
        )
    print(mint(secret.value, sub=args.sub, tenant=args.tenant, scopes=scopes, ttl_seconds=args.ttl))
    return 0


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w``."""
    number, unit = text[:-1], text[-1:].lower()
    if unit not in _UNITS or not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(f"expected an age such as 30d, 12h or 90m, not {text!r}")
    return timedelta(seconds=int(number) * _UNITS[unit])


def _port(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0..65535)")
    return value


def _positive(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


CONFIG_HELP = """\
configuration (environment variables, or a .env file in the current directory):
  TASKSTREAM_DATABASE_URL  postgresql://user:pass@host:port/db
                           unset: an embedded development Postgres under TASKSTREAM_DATA_DIR
  TASKSTREAM_JWT_SECRET    HS256 secret; unset: generated once into TASKSTREAM_DATA_DIR/jwt-secret
                           (unless a public key or JWKS file below is set)
  TASKSTREAM_JWT_PUBLIC_KEY, TASKSTREAM_JWKS_FILE
                           an identity provider's RS256/ES256 key (PEM text or file), key set
  TASKSTREAM_DATA_DIR      where the development defaults live (default: ./.taskstream)
  TASKSTREAM_AUTO_MIGRATE  serve applies pending migrations at start (default: true)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskstream",
        description="Task progress events on Postgres: append over HTTP, watch them live over "
        "Server-Sent Events, query the whole history.",
        epilog=CONFIG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the HTTP service. Pending migrations are applied by the service itself "
        "at start (unless TASKSTREAM_AUTO_MIGRATE=false); it starts even while the database is "
        "unreachable and reports not-ready on /readyz until it answers. SIGTERM or Ctrl-C stop it "
        "gracefully with exit status 0.",
        epilog=CONFIG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    serve.add_argument(
        "--port", type=_port, default=8000, help="port to bind (default: %(default)s)"
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="worker processes sharing the port (default: %(default)s)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="uvicorn's log level (default: %(default)s)",
    )
    serve.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="do not log every request",
    )
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser(
        "migrate",
        help="apply pending migrations and exit",
        description="Apply pending migrations (alembic upgrade head, under a Postgres advisory "
        "lock) and print the resulting revision.",
        epilog=CONFIG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    migrate.set_defaults(handler=_migrate)

    prune = commands.add_parser(
        "prune",
        help="remove history older than an age",
        description="Remove every event older than the given age, in batches of one transaction"
        " each. Task rows keep their final state and phase times. Streams resumed from before"
        " the removed history receive `event: reset` (reload, then follow). Run it as the"
        " owner role, from cron or a scheduled job.",
        epilog=CONFIG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prune.add_argument(
        "--older-than", type=_age, required=True, metavar="AGE", help="e.g. 30d, 12h, 90m"
    )
    prune.add_argument(
        "--batch",
        type=_positive,
        default=10_000,
        help="events per transaction (default: %(default)s)",
    )
    prune.set_defaults(handler=_prune)

    purge = commands.add_parser(
        "purge",
        help="remove all data of a tenant (or of one task)",
        description="Remove every event and task of a tenant, or of one task with --task, for"
        " privacy requests; prints what it removed.",
        epilog=CONFIG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    purge.add_argument("--tenant", type=_non_empty, required=True)
    purge.add_argument("--task", type=_non_empty, metavar="ID", help="only this task")
    purge.add_argument(
        "--batch",
        type=_positive,
        default=10_000,
        help="rows per transaction (default: %(default)s)",
    )
    purge.set_defaults(handler=_purge)

    token = commands.add_parser(
        "token",
        help="print a signed JWT",
        description="Print a signed JWT (HS256) for the configured secret, or for the generated "
        "development secret when TASKSTREAM_JWT_SECRET is unset. Needs no database.",
        epilog="example:\n  taskstream token --sub worker-1 --tenant demo "
        "--scope 'tasks:read tasks:write'\n\nscopes: tasks:write (create tasks, append events), "
        "tasks:read (read tasks, history, streams),\n        events:read (history across all "
        "tasks of the tenant)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token.add_argument("--sub", required=True, type=_non_empty, help="subject (who the token is)")
    token.add_argument("--tenant", required=True, type=_non_empty, help="tenant the token acts in")
    token.add_argument(
        "--scope",
        required=True,
        action="append",
        help="space-separated scopes; may be repeated",
    )
    token.add_argument(
        "--ttl",
        type=_positive,
        default=3600,
        metavar="SECONDS",
        help="lifetime in seconds (default: %(default)s)",
    )
    token.set_defaults(handler=_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (CliError, BootstrapError) as exc:
        return _fail(str(exc))


def _fail(message: str) -> int:
    print(f"taskstream: error: {message}", file=sys.stderr, flush=True)
    return 1


def run() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    run()
