"""``taskstream serve`` as a process of its own, for tests of what only a real process shows:
signals, restarts, several processes on one database, the command line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from service.tokens import mint
from tests.helpers import ALL_SCOPES

TASKSTREAM = Path(sys.executable).parent / "taskstream"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``taskstream serve`` on a port, its output in a log file."""

    def __init__(
        self,
        database_url: str,
        secret: str,
        port: int,
        log: Path,
        workers: int = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.env = env or {}
        self.secret = secret
        self.port = port
        self.log = log
        self.workers = workers
        self.process: asyncio.subprocess.Process | None = None
        self.base_url = f"http://127.0.0.1:{port}"
        self.client = httpx.AsyncClient(base_url=self.base_url, timeout=10)

    def token(self, tenant: str = "t1", scopes: str = ALL_SCOPES, sub: str = "alice") -> str:
        return mint(self.secret, sub=sub, tenant=tenant, scopes=scopes, ttl_seconds=3600)

    def auth(self, **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(**kwargs)}"}

    async def start(self) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("TASKSTREAM")}
        env.update(
            TASKSTREAM_DATABASE_URL=self.database_url,
            TASKSTREAM_JWT_SECRET=self.secret,
            TASKSTREAM_AUTO_MIGRATE="false",
            TASKSTREAM_RETRY_MS="200",
        )
        env.update(self.env)
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                str(TASKSTREAM),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                "--log-level",
                "warning",
                "--no-access-log",
                cwd=self.log.parent,  # no .env, no ./.taskstream of the repository
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            async with asyncio.timeout(30):
                while True:
                    assert self.process.returncode is None, self.output()
                    with contextlib.suppress(httpx.TransportError):
                        if (await self.client.get("/readyz")).status_code == 200:
                            return
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"not ready within 30 s:\n{self.output()}") from None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait(self, seconds: float) -> int:
        assert self.process is not None
        async with asyncio.timeout(seconds):
            return await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        await self.client.aclose()


async def start_server(
    servers: list[Server],
    tmp_path: Path,
    database_url: str,
    secret: str,
    *,
    port: int | None = None,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> Server:
    """Start ``taskstream serve`` (settings from ``env``, e.g. TASKSTREAM_...) and wait until
    it is ready; the ``servers`` fixture kills it at the end of the test."""
    port = port or free_port()
    log = tmp_path / f"serve-{port}-{len(servers)}.log"
    server = Server(database_url, secret, port, log, workers, env)
    servers.append(server)
    await server.start()
    return server
