"""The ``taskstream`` command.

``serve``, ``migrate``, ``token``, ``prune`` and ``purge`` run and look after the service;
``emit``, ``tail``, ``export`` and ``demo`` talk to one through the Python client
(``service.console``). Each command imports what it needs when it runs, so a client command
never loads the web or database stack and starts quickly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from service.domain.models import EventType, TaskStatus

if TYPE_CHECKING:
    from service.settings import Settings
    from service.store.database import Database

Handler = Callable[[argparse.Namespace], int]
T = TypeVar("T")

APP_FACTORY = "service.app:create_app"
STARTUP_FAILURE = 3
"""Exit status when the server could not start (uvicorn's own value)."""
GRACEFUL_SHUTDOWN_SECONDS = 5
"""How long uvicorn waits for open responses after SIGTERM before cancelling them; with the
app's own shutdown this keeps the whole exit within the contract's 10 s."""
KNOWN_SCOPES = ("tasks:write", "tasks:read", "events:read", "tasks:cancel")

DEFAULT_URL = "http://127.0.0.1:8000"
MINTED_TENANT = "demo"
"""The tenant of a token the client commands mint: the one of the banner's tokens."""
MINTED_SUB = "taskstream-cli"
MINTED_TTL_SECONDS = 12 * 3600
"""Long enough for a day's ``tail``; the token never leaves the process that minted it."""
UNAVAILABLE = 3
"""Exit status of a client command that got no usable answer: the service was unreachable,
or still answered 5xx or 429 after the client's retries; trying again later may work."""


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


def load_settings() -> Settings:
    """The configuration, or CliError naming each bad variable."""
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"TASKSTREAM_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        raise CliError(f"invalid configuration: {problems}") from exc


def _bootstrapping(command: Handler) -> Handler:
    """A server command: a development default it cannot resolve is one line, status 1."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from service.bootstrap import BootstrapError

        try:
            return command(args)
        except BootstrapError as exc:
            raise CliError(str(exc)) from exc

    return run


@_bootstrapping
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
        settings = load_settings()
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
        settings = bootstrap.prepare(load_settings())
        signals.release()
        assert settings.database_url is not None
        return work(settings.database_url)
    except _Stopped:
        return 0
    finally:
        embedded.stop()


@_bootstrapping
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


@_bootstrapping
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


@_bootstrapping
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


@_bootstrapping
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
    settings = load_settings()
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


def _non_negative(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text!r}") from None


def _json_object(text: str) -> dict[str, Any]:
    value = _json_value(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _moment(text: str) -> datetime:
    """An RFC 3339 date-time with an offset, or an age as ``prune --older-than`` takes it
    (``90m``, ``2h``, ``7d``) meaning that long ago: the last day needs no date arithmetic."""
    with contextlib.suppress(argparse.ArgumentTypeError):
        return datetime.now(UTC) - _age(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or "T" not in text.upper():
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an RFC 3339 date-time with an offset "
            "(2026-03-01T00:00:00Z) nor a time ago (90s, 15m, 2h, 7d, 1w)"
        )
    return moment.astimezone(UTC)


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


class _Parser(argparse.ArgumentParser):
    """A command's parser; with ``intermixed``, positionals may also follow the options
    (``emit ID log --level warning "disk full"``), which argparse otherwise refuses for an
    optional positional."""

    intermixed = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if not self.intermixed:
            return super().parse_known_args(args, namespace)
        self.intermixed = False  # parse_known_intermixed_args calls back in
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self.intermixed = True


_HOURS = MINTED_TTL_SECONDS // 3600
CLIENT_HELP = f"""\
connection (each option falls back to an environment variable):
  --url, TASKSTREAM_URL      the service (default: {DEFAULT_URL})
  --token, TASKSTREAM_TOKEN  a JWT; prefer the variable, options show in `ps`
  With neither, a token is minted for tenant --tenant (default: {MINTED_TENANT}), subject
  {MINTED_SUB}, with every scope, valid {_HOURS} h, kept in memory only. It is signed
  with TASKSTREAM_JWT_SECRET, or with the development secret that `taskstream serve`
  generated in this directory (./.taskstream/jwt-secret, or TASKSTREAM_DATA_DIR/jwt-secret).

exit status: 0 done; 1 refused by the service (its problem's detail on stderr) or bad input;
  2 bad usage; {UNAVAILABLE} the service could not be reached, or kept failing (5xx, 429) after
  the retries
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskstream",
        description="Task progress events on Postgres: append over HTTP, watch them live over "
        "Server-Sent Events, query the whole history.",
        epilog=CONFIG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )

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

    connection = _connection_options()
    _emit_parser(commands, connection)
    _tail_parser(commands, connection)
    _export_parser(commands, connection)
    _demo_parser(commands, connection)
    return parser


def _client_command(name: str) -> Handler:
    """``service.console.<name>.main``, imported only when the command runs."""

    def handler(args: argparse.Namespace) -> int:
        # httpx imports its own command line (click, rich and more) whenever they are
        # installed, and falls back quietly when that import fails; it costs more start-up time
        # than all the rest of the client, for a function these commands never call.
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
        from service.console.output import reported

        module = importlib.import_module(f"service.console.{name}")
        command: Handler = module.main
        return reported(command, args)

    return handler


def _connection_options() -> argparse.ArgumentParser:
    """The options every client command shares (see CLIENT_HELP)."""
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("connection")
    group.add_argument("--url", help="the service's base URL (env TASKSTREAM_URL)")
    group.add_argument("--token", help="a JWT to send (env TASKSTREAM_TOKEN)")
    group.add_argument(
        "--tenant",
        type=_non_empty,
        help=f"tenant of the token minted when none is given (default: {MINTED_TENANT})",
    )
    return options


def _client_parser(
    commands: Any, connection: argparse.ArgumentParser, name: str, *, help: str, description: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help,
        description=description,
        parents=[connection],
        epilog=CLIENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=_client_command(name))
    return parser


def _emit_parser(commands: Any, connection: argparse.ArgumentParser) -> None:
    emit = _client_parser(
        commands,
        connection,
        "emit",
        help="create a task or append an event (for shell scripts)",
        description="Without TASK_ID: create a task (--kind) and print its id. With TASK_ID and "
        "TYPE: append one event and print it as JSON. TEXT is the event's message: the "
        "message of a log or progress, the error of failed, the reason of cancelled. Retried "
        "requests carry one idempotency key, so a retry never appends twice.",
    )
    emit.usage = "taskstream emit [TASK_ID TYPE [TEXT]] [options]"
    assert isinstance(emit, _Parser)
    emit.intermixed = True
    appendable = [event.value for event in EventType if event is not EventType.CREATED]
    emit.add_argument("task_id", nargs="?", metavar="TASK_ID", help="the task to append to")
    emit.add_argument(
        "type", nargs="?", metavar="TYPE", choices=appendable, help=", ".join(appendable)
    )
    emit.add_argument("text", nargs="?", metavar="TEXT", help="the event's message")

    create = emit.add_argument_group("creating a task (no TASK_ID)")
    create.add_argument("--kind", type=_non_empty, help="the task's kind (required)")
    create.add_argument("--title", help="a title for people")
    create.add_argument("--metadata", type=_json_object, metavar="JSON", help="a JSON object")
    create.add_argument("--id", type=_non_empty, help="choose the id (default: the service's)")
    create.add_argument(
        "--lease-seconds",
        type=_positive,
        metavar="N",
        help="fail the task when it runs N seconds without an event",
    )

    data = emit.add_argument_group("event data (each applies to the types named)")
    data.add_argument("--percent", type=float, help="progress: 0..100")
    data.add_argument("--done", type=_non_negative, metavar="N", help="progress: units done")
    data.add_argument("--total", type=_positive, metavar="N", help="progress: units in all")
    data.add_argument("--stage", help="progress: the current stage")
    data.add_argument("--message", help="progress, log: the message (or TEXT)")
    data.add_argument(
        "--level",
        choices=["debug", "info", "warning", "error"],
        help="log: the level (default: info)",
    )
    data.add_argument("--result", type=_json_value, metavar="JSON", help="succeeded: the result")
    data.add_argument("--error", metavar="MESSAGE", help="failed: the error message (or TEXT)")
    data.add_argument("--code", help="failed: an error code")
    data.add_argument("--reason", help="cancelled, cancel_requested: why (or TEXT)")
    data.add_argument("--worker", help="started: who runs the task")
    data.add_argument(
        "--data",
        type=_json_object,
        metavar="JSON",
        help="any type: the data as a JSON object; the options above override its members",
    )

    request = emit.add_argument_group("request")
    request.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="send this key (default: a fresh one): a rerun with the same key appends nothing",
    )
    request.add_argument(
        "--expected-version",
        type=_non_negative,
        metavar="N",
        help="append only if the task is at version N (else 409 version_conflict)",
    )
    printed = request.add_mutually_exclusive_group()
    printed.add_argument(
        "--json", action="store_true", help="print the created task as JSON, not just its id"
    )
    printed.add_argument("-q", "--quiet", action="store_true", help="print nothing")


def _tail_parser(commands: Any, connection: argparse.ArgumentParser) -> None:
    tail = _client_parser(
        commands,
        connection,
        "tail",
        help="watch tasks live in the terminal",
        description="Without --task: the tenant's tasks as a live table (status, progress, "
        "stage and message, elapsed time, ETA), kept current by one stream. With --task: that "
        "task's events as they come, below its progress bar, until its terminal event. When "
        "standard output is not a terminal (or with --plain), one line per event instead. "
        "Ctrl-C ends it with status 0.",
    )
    tail.add_argument("--task", metavar="ID", help="follow this task until it finishes")
    tail.add_argument(
        "--kind", action="append", metavar="KIND", help="only tasks of this kind (repeatable)"
    )
    tail.add_argument(
        "--status",
        action="append",
        choices=[status.value for status in TaskStatus],
        help="only tasks now in this status (repeatable)",
    )
    tail.add_argument(
        "--rows",
        type=_positive,
        default=50,
        metavar="N",
        help="most tasks in the table, open ones first (default: %(default)s)",
    )
    style = tail.add_mutually_exclusive_group()
    style.add_argument("--plain", action="store_true", help="one plain line per event")
    style.add_argument("--json", action="store_true", help="one event per line, as JSON")


def _export_parser(commands: Any, connection: argparse.ArgumentParser) -> None:
    export = _client_parser(
        commands,
        connection,
        "export",
        help="export the tenant's events as NDJSON, CSV or Parquet",
        description="Stream the selected events (ascending by seq, as committed when the "
        "export starts) from the service's export, in constant memory. Needs the events:read "
        "scope. A file is written under a temporary name and renamed when complete.",
    )
    export.add_argument(
        "--format",
        choices=["ndjson", "csv", "parquet"],
        default="ndjson",
        help="ndjson (default), csv, or parquet (needs pyarrow: pip install "
        "'taskstream[parquet]', and --output)",
    )
    export.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE (default: standard output)"
    )
    export.add_argument(
        "--since",
        type=_moment,
        metavar="TIME",
        help="events at or after TIME: RFC 3339 (2026-03-01T00:00:00Z) or a time ago (2h, 7d)",
    )
    export.add_argument(
        "--until", type=_moment, metavar="TIME", help="events before TIME (same forms)"
    )
    export.add_argument(
        "--after", type=_non_negative, metavar="SEQ", help="events after this seq (to resume)"
    )
    export.add_argument(
        "--task-id", action="append", metavar="ID", help="only this task's events (repeatable)"
    )
    export.add_argument(
        "--type", action="append", metavar="TYPE", help="only events of this type (repeatable)"
    )
    export.add_argument(
        "--kind", action="append", metavar="KIND", help="only tasks of this kind (repeatable)"
    )


def _demo_parser(commands: Any, connection: argparse.ArgumentParser) -> None:
    demo = _client_parser(
        commands,
        connection,
        "demo",
        help="simulate workers, for a lively dashboard",
        description="Simulated workers run imports, renders, AI jobs, reports and backups "
        "through the client's track(): stages, progress, logs, leases, some failures (raised "
        "exceptions) and some cancellations (requested through the cancel endpoint, honoured "
        "by the worker). Stops starting jobs in time to end after --duration, then prints a "
        "summary. Ctrl-C cancels the running jobs and ends early. Needs tasks:write.",
    )
    demo.add_argument(
        "--duration",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="how long to run (default: %(default)s); shorter runs get shorter jobs",
    )
    demo.add_argument(
        "--workers",
        type=_positive,
        default=4,
        metavar="N",
        help="simulated workers running at once (default: %(default)s)",
    )
    demo.add_argument(
        "--seed", type=_integer, metavar="N", help="seed for a repeatable mix (default: random)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CliError as exc:
        return fail(str(exc))


def fail(message: str, status: int = 1) -> int:
    """Report a failure as one line on stderr; the exit status to return."""
    print(f"taskstream: error: {message}", file=sys.stderr, flush=True)
    return status


def run() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    run()
