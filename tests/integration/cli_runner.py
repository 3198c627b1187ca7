"""`kubectl-servicebuild` run as people run it: the installed console script in its own process, with a
kubeconfig pointing at the emulator, colours off (not a terminal, and NO_COLOR)."""

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
SNAPSHOTS = Path(__file__).parent / "snapshots" / "cli"
COMMAND_TIMEOUT = 90.0
"""Longer than any build here takes on a loaded machine; a command hanging fails its test with its output."""


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    def transcript(self) -> str:
        """What a snapshot holds: the exit code, then stdout and stderr."""
        return f"exit code {self.code}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


def cli_environment(server_url: str, directory: Path, namespace: str) -> dict[str, str]:
    """A kubeconfig with the context `kmock` (current, in `namespace`) and `elsewhere` (no namespace)."""
    cluster = {"server": server_url.rstrip("/")}
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": cluster}],
        "users": [{"name": "developer", "user": {"token": "developer-token"}}],
        "contexts": [
            {"name": "kmock", "context": {"cluster": "kmock", "user": "developer", "namespace": namespace}},
            {"name": "elsewhere", "context": {"cluster": "kmock", "user": "developer"}},
        ],
        "current-context": "kmock",
    }
    path = directory / "developer-kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    return {**os.environ, "KUBECONFIG": str(path), "NO_COLOR": "1", "COLUMNS": "200"}


async def run(env: dict[str, str], *args: str, program: str = "kubectl-servicebuild") -> Result:
    process = await asyncio.create_subprocess_exec(
        str(BIN / program),
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=COMMAND_TIMEOUT)
    except TimeoutError:
        process.kill()
        stdout, stderr = await process.communicate()
        raise AssertionError(
            f"still running after {COMMAND_TIMEOUT}s: {args}\n{stdout.decode()}{stderr.decode()}"
        ) from None
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


def start(env: dict[str, str], *args: str) -> "asyncio.Task[Result]":
    """The command running on, for a test to act while it waits or follows."""
    return asyncio.create_task(run(env, *args))


def assert_snapshot(name: str, result: Result) -> None:
    """The transcript equals `snapshots/cli/<name>.txt`; UPDATE_SNAPSHOTS=1 writes it instead."""
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(result.transcript())
    assert result.transcript() == path.read_text()
