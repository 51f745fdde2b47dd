"""An embedded PostgreSQL 16 for development, kept under ``<data_dir>/pgdata``.

It is built on the ``pgserver`` package, which ships the PostgreSQL binaries in its wheel. Facts
about ``pgserver`` 0.1.4 that shape this module (read from its source):

* The server listens on a Unix socket only (``-h ""``), in ``pgdata`` itself or, when that path is
  too long for a socket, in a directory under the user's runtime path. ``pgserver`` hands out a
  libpq URI (``postgresql://postgres:@/postgres?host=/dir``); :func:`socket_url` turns it into the
  ``postgresql://postgres@/taskstream?host=/dir`` form that asyncpg and SQLAlchemy's asyncpg
  dialect both accept.
* One server per data directory is shared by every process that asks for it: a server that is
  still running is reused, and the processes holding it are listed in ``pgdata/.handle_pids.json``.
  The server is stopped only by an ``atexit`` hook, by the last holder. A holder that was killed
  (``kill -9``) stays in that list for ever and would keep the server running after everyone
  else has gone, so :func:`start` drops holders that no longer exist first.
* Run as root, ``pgserver`` creates an OS user ``pgserver`` (PostgreSQL refuses to run as root)
  and adds read and search permission for everyone on every directory from ``pgdata`` up to
  ``/``. Here only the search bits (``g+x,o+x``) are added, where missing, and each directory
  changed is named on stderr.

Start it once, in the CLI's parent process: worker processes get the URL through the
environment and never touch ``pgserver``. :func:`stop` (or interpreter exit, through
``pgserver``'s own hook) releases this process's hold; the last holder stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg

DATABASE = "taskstream"
"""The database created for the service; the ``postgres`` database is left alone."""

_OS_USER = "pgserver"


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started or reached."""


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running embedded server, as seen by the process that holds it."""

    pgdata: Path
    socket_dir: Path
    pid: int
    reused: bool
    """True when a server that was already running was taken over instead of started."""

    @property
    def url(self) -> str:
        """The service database's URL: asyncpg takes it as is, SQLAlchemy as postgresql+asyncpg."""
        return socket_url(self.socket_dir, DATABASE)

    @property
    def log_file(self) -> Path:
        return self.pgdata / "log"


_held: list[Any] = []
"""The ``pgserver.PostgresServer`` this process holds, if any (at most one)."""


def socket_url(socket_dir: Path, database: str, user: str = "postgres") -> str:
    """``postgresql://user@/database?host=/socket/dir``: a Unix-socket URL without a password."""
    host = quote(str(socket_dir), safe="/")
    return f"postgresql://{quote(user, safe='')}@/{quote(database, safe='')}?host={host}"


def _import_pgserver() -> Any:
    # pgserver's class body asks platformdirs for the runtime directory, which warns when
    # XDG_RUNTIME_DIR is unset (as in containers and CI); the fallback it picks is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
        import pgserver.postgres_server
    return pgserver


def _say(message: str) -> None:
    print(f"taskstream: {message}", file=sys.stderr, flush=True)


def _grant_search_only(path: Path) -> None:
    """Stand-in for ``pgserver``'s ``ensure_prefix_permissions`` (used only when run as root).

    The ``pgserver`` OS user must be able to reach ``path``: add ``g+x,o+x`` to each ancestor
    that lacks them, and nothing else (``pgserver`` would also make each one world-readable).
    The group bit is needed too: ``pgserver`` drops only the user id, so its processes keep
    root's group and are judged by the group bits of root-owned directories.
    """
    search = stat.S_IXGRP | stat.S_IXOTH
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if mode & search != search:
            parent.chmod(stat.S_IMODE(mode) | search)
            _say(
                f"added g+x,o+x (search only) to {parent} so that the '{_OS_USER}' OS user "
                "running the embedded Postgres can reach its data"
            )


def _drop_dead_holders(pgserver: Any, pgdata: Path) -> None:
    """Remove processes that no longer exist from the list of the server's holders."""
    holders = pgdata / ".handle_pids.json"
    if not holders.exists():
        return
    with pgserver.PostgresServer._lock:
        try:
            pids = json.loads(holders.read_text())
        except (OSError, ValueError):
            pids = []
        alive = [pid for pid in pids if isinstance(pid, int) and _process_exists(pid)]
        if alive != pids:
            holders.write_text(json.dumps(alive))


def _process_exists(pid: int) -> bool:
    """True for a live process; False for one that is gone or a zombie nobody has reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        # "pid (name) S ...": the state follows the last ')'.
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: trust kill(0)
    return state not in ("Z", "X")


def _already_running(pgserver: Any, pgdata: Path) -> bool:
    try:
        info = pgserver.postgres_server.PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, ValueError, AssertionError):
        return False
    return info is not None and bool(info.is_running())


def _root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def start(data_dir: Path) -> EmbeddedPostgres:
    """Start (or reuse) the embedded server under ``data_dir/pgdata`` and return where it is.

    Blocking: the first start runs ``initdb`` (a few seconds). The ``taskstream`` database is
    created when missing, and a connection is made to it before returning.
    """
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"

    pgserver = _import_pgserver()
    # pgserver logs every command it runs at INFO; its errors (with the server log) still show.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    module = pgserver.postgres_server
    if _root():
        if not _user_exists(_OS_USER):
            _say(
                f"running as root: creating the OS user '{_OS_USER}' to run the embedded "
                "Postgres (PostgreSQL refuses to run as root)"
            )
        module.ensure_prefix_permissions = _grant_search_only

    if pgdata.exists():
        _drop_dead_holders(pgserver, pgdata)
    reused = pgdata.exists() and _already_running(pgserver, pgdata)

    try:
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:
        log = pgdata / "log"
        hint = f"; its log is {log}" if log.exists() else ""
        raise EmbeddedPostgresError(
            f"could not start the embedded Postgres in {pgdata}: {exc!r}{hint}"
        ) from exc
    if not any(held is server for held in _held):
        _held.append(server)

    info = server.get_postmaster_info()
    if info.socket_dir is None:
        raise EmbeddedPostgresError(f"the embedded Postgres in {pgdata} has no Unix socket")
    embedded = EmbeddedPostgres(
        pgdata=pgdata, socket_dir=Path(info.socket_dir), pid=int(info.pid), reused=reused
    )
    try:
        asyncio.run(_ensure_database(embedded.socket_dir))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise EmbeddedPostgresError(
            f"the embedded Postgres in {pgdata} does not answer on {embedded.socket_dir}: "
            f"{exc!r}; its log is {embedded.log_file}"
        ) from exc
    return embedded


async def _ensure_database(socket_dir: Path) -> None:
    connection = await asyncpg.connect(socket_url(socket_dir, "postgres"), timeout=10)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
        if not exists:
            # Another process may create it meanwhile.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await connection.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await connection.close()
    connection = await asyncpg.connect(socket_url(socket_dir, DATABASE), timeout=10)
    await connection.close()


def stop() -> None:
    """Release this process's hold on the server; the last holder stops it (``pg_ctl stop``).

    Safe to call more than once and when nothing was started. ``pgserver``'s ``atexit`` hook
    does the same at interpreter exit, so a process that cannot call this still lets go.
    """
    while _held:
        _held.pop().cleanup()
