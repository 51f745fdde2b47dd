"""What the client commands share: where they connect, their token, exit statuses, start-up.

``Cli`` runs ``taskstream`` as a real process against the test's service; the other
``test_cli_*`` files use it. The service runs in the test's event loop, so the process is
awaited, never waited for.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import Service
from tests.processes import TASKSTREAM, free_port

UNAVAILABLE = 3


@dataclass(frozen=True)
class Result:
    status: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


class Cli:
    """``taskstream`` run in ``directory`` (no .env nor ./.taskstream of the repository), with
    the service's URL and a token of tenant t1 with every scope unless told otherwise."""

    def __init__(self, service: Service, directory: Path) -> None:
        self.service = service
        self.directory = directory

    def argv(self, args: tuple[str, ...], connect: bool, scopes: str | None) -> list[str]:
        if not connect:
            return [str(TASKSTREAM), *args]
        token = self.service.token(scopes=scopes) if scopes else self.service.token()
        return [str(TASKSTREAM), *args, "--url", self.service.base_url, "--token", token]

    def environment(self, env: dict[str, str] | None) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("TASKSTREAM")}
        return {**inherited, "COLUMNS": "200", **(env or {})}

    async def start(
        self,
        *args: str,
        connect: bool = True,
        scopes: str | None = None,
        env: dict[str, str] | None = None,
    ) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *self.argv(args, connect, scopes),
            cwd=self.directory,
            env=self.environment(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    async def __call__(
        self,
        *args: str,
        connect: bool = True,
        scopes: str | None = None,
        env: dict[str, str] | None = None,
        seconds: float = 60,
    ) -> Result:
        """Run to the end, within ``seconds``."""
        process = await self.start(*args, connect=connect, scopes=scopes, env=env)
        out, err = await asyncio.wait_for(process.communicate(), seconds)
        assert process.returncode is not None
        return Result(process.returncode, out.decode(), err.decode())

    async def ok(self, *args: str, **options: object) -> Result:
        result = await self(*args, **options)  # type: ignore[arg-type]
        assert result.status == 0, result
        return result


async def read_line(stream: asyncio.StreamReader | None, seconds: float = 30) -> str:
    assert stream is not None
    line = await asyncio.wait_for(stream.readline(), seconds)
    assert line, "the stream ended"
    return line.decode().rstrip("\n")


# ---------------------------------------------------------------------- start-up


async def test_client_commands_load_neither_the_web_nor_the_database_stack(
    service: Service,
) -> None:
    """Run ``emit`` through the real dispatch in a fresh interpreter, then import every
    client command, and look at what got loaded."""
    script = textwrap.dedent(
        """
        import sys
        from service.cli import main
        status = main(["emit", "--kind", "k", "-q", "--url", sys.argv[1], "--token", sys.argv[2]])
        heavy = {"litestar", "sqlalchemy", "uvicorn", "asyncpg", "alembic", "click"}
        print(status, sorted(heavy & {name.split(".")[0] for name in sys.modules}))
        import service.console.demo, service.console.export, service.console.tail
        print(sorted((heavy - {"click"}) & {name.split(".")[0] for name in sys.modules}))
        """
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        service.base_url,
        service.token(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines() == ["0 []", "[]"], out.decode()
    assert len(await service.api.all_tasks()) == 1


# ---------------------------------------------------------------------- connection


async def test_url_and_token_come_from_the_environment(service: Service, tmp_path: Path) -> None:
    cli = Cli(service, tmp_path)
    env = {"TASKSTREAM_URL": service.base_url, "TASKSTREAM_TOKEN": service.token()}
    result = await cli.ok("emit", "--kind", "k", "--id", "from-env", connect=False, env=env)
    assert result.out == "from-env\n"
    assert (await service.api.task("from-env"))["kind"] == "k"


async def test_without_a_token_one_is_minted_with_the_local_secret(
    service: Service, tmp_path: Path
) -> None:
    cli = Cli(service, tmp_path)
    url = ("--url", service.base_url)
    # The secret a developer's `taskstream serve` generated in this directory...
    secret_file = tmp_path / ".taskstream" / "jwt-secret"
    secret_file.parent.mkdir()
    secret_file.write_text(service.secret + "\n")
    secret_file.chmod(0o600)
    await cli.ok("emit", "--kind", "k", "--id", "minted", *url, connect=False)
    assert (await service.as_(tenant="demo").task("minted"))["tenant"] == "demo"
    # ... or a configured one; --tenant chooses the minted token's tenant.
    secret_file.unlink()
    env = {"TASKSTREAM_JWT_SECRET": service.secret}
    await cli.ok(
        "emit", "--kind", "k", "--id", "acme-1", "--tenant", "acme", *url, connect=False, env=env
    )
    assert (await service.as_(tenant="acme").task("acme-1"))["tenant"] == "acme"


async def test_without_a_token_or_a_secret_the_error_says_what_to_do(
    service: Service, tmp_path: Path
) -> None:
    cli = Cli(service, tmp_path)
    result = await cli("emit", "--kind", "k", "--url", service.base_url, connect=False)
    assert result.status == 1
    assert "TASKSTREAM_TOKEN" in result.err and "jwt-secret" in result.err
    assert not (tmp_path / ".taskstream").exists(), "no secret is generated by a client"


async def test_tenant_applies_to_minted_tokens_only(service: Service, tmp_path: Path) -> None:
    result = await Cli(service, tmp_path)("emit", "--kind", "k", "--tenant", "other")
    assert result.status == 1 and "--tenant" in result.err
    assert await service.api.all_tasks() == []


# ---------------------------------------------------------------------- exit statuses


async def test_exit_statuses_tell_refusals_from_an_unreachable_service(
    service: Service, tmp_path: Path
) -> None:
    cli = Cli(service, tmp_path)
    refused = await cli("emit", "--kind", "k", scopes="tasks:read")
    assert refused.status == 1
    assert refused.err.startswith("taskstream: error: 403 forbidden"), refused.err

    bad_token = ("--url", service.base_url, "--token", "not-a-jwt")
    unauthorized = await cli("emit", "--kind", "k", *bad_token, connect=False)
    assert unauthorized.status == 1 and "401 unauthorized" in unauthorized.err

    nobody = ("--url", f"http://127.0.0.1:{free_port()}", "--token", service.token())
    unreachable = await cli("emit", "--kind", "k", *nobody, connect=False)
    assert unreachable.status == UNAVAILABLE
    assert "cannot reach the service" in unreachable.err
    assert unreachable.out == ""

    usage = await cli("emit", "some-task", "finished")
    assert usage.status == 2 and "invalid choice" in usage.err
