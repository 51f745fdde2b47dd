"""A Postgres cluster of a test's own, for tests that stop, crash and restart the database.

The rest of the suite shares one server (``TASKSTREAM_TEST_DATABASE_URL``, often the machine's
own at 5432) with other test runs, so it must never be stopped. A test that takes Postgres away
builds a cluster with ``initdb`` in a temporary directory, on a free port, and owns it
entirely: ``pg_ctl stop -m immediate`` on it hurts nobody.

Postgres refuses to run as root; when the tests run as root, its commands run as the
``postgres`` OS user (``runuser``), which owns the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from service.store.migrate import upgrade
from tests.processes import free_port

# Settings appended to postgresql.conf. fsync=off: the cluster dies with the test, and only
# crashes of Postgres (not of the machine) are simulated, which the WAL in the OS's page cache
# survives; synchronous_commit stays on, so an acknowledged commit is in the WAL when the
# client hears of it, and an immediate stop must not lose it.
CONFIG = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
fsync = off
full_page_writes = off
max_connections = 60
shared_buffers = 32MB
"""


def binaries() -> Path | None:
    """The directory of the newest ``initdb``/``pg_ctl`` on the machine, if there is one."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=version)
    found = [*candidates, *(Path(p) for p in [shutil.which("pg_ctl")] if p)]
    for pg_ctl in reversed(found):
        if (pg_ctl.parent / "initdb").exists():
            return pg_ctl.parent
    return None


def unavailable_reason() -> str | None:
    """Why a throwaway cluster cannot be made here (the test is skipped), or None."""
    if binaries() is None:
        return "no initdb/pg_ctl on this machine"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres OS user to run Postgres as"
        if shutil.which("runuser") is None:
            return "running as root without runuser"
    return None


class Cluster:
    """One Postgres cluster in ``directory``, listening on 127.0.0.1:``port``."""

    def __init__(self, directory: Path, port: int) -> None:
        bindir = binaries()
        assert bindir is not None, unavailable_reason()
        self.bindir = bindir
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "postgres.log"
        self.port = port
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def _run(self, program: str, *args: str) -> None:
        process = await asyncio.create_subprocess_exec(
            *self.as_owner,
            str(self.bindir / program),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise AssertionError(
                f"{program} {' '.join(args)} exited {process.returncode}:\n"
                f"{output.decode(errors='replace')}\n{self.log_tail()}"
            )

    async def create(self) -> None:
        await self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        config = CONFIG.format(port=self.port, sockets=self.directory)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(config)

    async def start(self) -> None:
        """Start and wait until it accepts connections."""
        await self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"
        )

    async def stop(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown that disconnects every client; ``immediate``: a crash
        (every backend killed, recovery from the WAL at the next start)."""
        await self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    async def create_database(self, name: str = "taskstream") -> str:
        """A new database with the service's schema (the real migrations); its URL."""
        connection = await asyncpg.connect(self.url(), timeout=30)
        try:
            await connection.execute(f"CREATE DATABASE {name}")
        finally:
            await connection.close()
        url = self.url(name)
        await asyncio.to_thread(upgrade, url)
        return url

    def log_tail(self, characters: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-characters:]
        return "(no server log)"


@contextlib.asynccontextmanager
async def throwaway_cluster() -> AsyncIterator[Cluster]:
    """A running cluster of the caller's own; stopped and deleted at the end, whatever state
    the test left it in."""
    directory = Path(tempfile.mkdtemp(prefix="taskstream-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    cluster = Cluster(directory, free_port())
    try:
        await cluster.create()
        await cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(AssertionError):
            await cluster.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)
