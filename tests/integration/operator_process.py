"""The operator as users run it: a `python -m servicebuild` process."""

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

from support.processes import stop_process

_OPERATOR_PREFIXES = ("SERVICEBUILD_", "KUBERNETES_")


def operator_environment(server_url: str, token: str, directory: Path) -> dict[str, str]:
    """This process's environment without SERVICEBUILD_/KUBERNETES_ settings, and a kubeconfig in
    `directory` pointing at `server_url` with a bearer token."""
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": server_url.rstrip("/")}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "operator"}}],
        "current-context": "kmock",
    }
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SERVICEBUILD_", "KUBERNETES_"))
    }
    return {**env, "KUBECONFIG": str(path)}


class OperatorProcess:
    """`python -m servicebuild` as users run it, pointed at the emulator by a kubeconfig."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n===== start {self.starts} =====\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "servicebuild"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies or the OOM killer strikes."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP until the block ends: what happens meanwhile reaches the operator all at once."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> int | None:
        """Terminate, then kill after 20 s; the exit code if it had already ended by itself."""
        return None if self.process is None else stop_process(self.process, timeout=20)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
