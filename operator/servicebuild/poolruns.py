"""Builds on builder pools: the `buildctl` processes the operator runs, one thread waiting on each.

The only module that runs processes. A run writes its files in a private directory of its own (under
`SERVICEBUILD_POOL_RUN_DIRECTORY`, memory-backed in the operator's Pod), starts buildctl there in a new
process group and waits on it in a thread, so that no reconcile ever waits for a build. When buildctl ends,
the run keeps what it said (exit code, metadata file, cache metrics, log) and removes the directory, secrets
and all; then `on_end` reconciles the ServiceBuild. A run stopped by the operator (a new build, a lost
term, a deleted ServiceBuild) reports nothing: whoever acts next starts the build again.
"""

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from servicebuild.render.pool_run import DOCKER_CONFIG_DIR, RUN_PATHS, PoolRun, RunState

logger = logging.getLogger(__name__)

Key = tuple[str, str]
DIE_WITH_THE_OPERATOR = ("setpriv", "--pdeathsig", "KILL", "--")
"""buildctl is killed by the kernel when the operator process dies (a run in its own process group would
otherwise live on, and push, after a crash); util-linux's setpriv, in the operator image."""
MAX_LOG_BYTES = 1024 * 1024
"""The end of a run's log that is kept: enough for BuildKit's closing error and the build's facts."""
MAX_FILE_BYTES = 64 * 1024
"""The most read of the metadata and cache metrics files (a few KiB in practice)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _ignore(_: Key) -> None:
    """No one to tell (yet)."""


class PoolRuns:
    """The runs of this operator process, by name; at most one kept per ServiceBuild."""

    def __init__(self, directory: Path, clock: Callable[[], datetime] = _now) -> None:
        self.directory = directory
        self.clock = clock
        self.on_end: Callable[[Key], object] = _ignore
        """Called with the ServiceBuild when its run ended (not when the operator stopped it)."""
        self.on_pool: Callable[[Key], None] = _ignore
        """Called with the pool when a run starts or ends on it, or a build wants it started."""
        self._since = clock()
        self._guard = threading.Lock()
        self._runs: dict[str, RunState] = {}
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._last_activity: dict[Key, datetime] = {}

    def start(self, servicebuild: Key, name: str, pool: Key, run: PoolRun) -> None:
        """Start buildctl for the run `name` and return at once; an earlier run of the ServiceBuild is
        forgotten (stopped if it still runs)."""
        self.stop(servicebuild, keep=None)
        state = RunState(name, servicebuild, pool, self.clock(), run)
        with self._guard:
            self._runs[name] = state
            self._last_activity[pool] = state.started
        threading.Thread(target=self._run, args=(state,), name=f"pool-run-{name}", daemon=True).start()
        self.on_pool(pool)

    def state(self, name: str) -> RunState | None:
        with self._guard:
            return self._runs.get(name)

    def running(self, pool: Key) -> int:
        """How many builds run on the pool now."""
        with self._guard:
            return sum(1 for run in self._runs.values() if run.pool == pool and run.ended is None)

    def last_activity(self, pool: Key) -> datetime:
        """When a build last started, ended or asked for the pool; when this process started, if none did."""
        with self._guard:
            return self._last_activity.get(pool, self._since)

    def touch(self, pool: Key) -> None:
        """A build waits for the pool: it is wanted now (a pool scaled to zero starts again)."""
        with self._guard:
            self._last_activity[pool] = self.clock()
        self.on_pool(pool)

    def stop(self, servicebuild: Key, keep: str | None) -> None:
        """Stop and forget the ServiceBuild's runs but `keep`."""
        with self._guard:
            names = [n for n, run in self._runs.items() if run.servicebuild == servicebuild and n != keep]
            for name in names:
                self._kill(name)
                del self._runs[name]

    def stop_all(self) -> None:
        """Stop every run: another replica acts now, and starts them again."""
        with self._guard:
            for name in list(self._runs):
                self._kill(name)
            self._runs.clear()

    def _kill(self, name: str) -> None:
        """Kill the run's process group (buildctl's session ends, and the daemon cancels the build)."""
        self._runs[name] = replace(self._runs[name], stopped=True)
        process = self._processes.get(name)
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            logger.info("Stopped the pool build %s", name)

    def _run(self, state: RunState) -> None:
        directory = Path(tempfile.mkdtemp(prefix=f"{state.name}-", dir=self.directory))
        try:
            ended = self._execute(state, directory)
        except OSError as exc:
            logger.warning("Pool build %s could not run: %s", state.name, exc)
            ended = replace(state, ended=self.clock(), exit_code=-1, log=f"error: {exc}\n")
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        with self._guard:
            self._processes.pop(state.name, None)
            current = self._runs.get(state.name)
            if current is None or current.stopped:
                return
            self._runs[state.name] = ended
            self._last_activity[state.pool] = ended.ended or self.clock()
        self.on_end(state.servicebuild)
        self.on_pool(state.pool)

    def _execute(self, state: RunState, directory: Path) -> RunState:
        _write_files(directory, state.run.files)
        log_path = directory / "build.log"
        env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(directory)}
        if state.run.uses_docker_config:
            env["DOCKER_CONFIG"] = str(directory / DOCKER_CONFIG_DIR)
        with log_path.open("wb") as log:
            process = subprocess.Popen(  # noqa: S603 - the arguments are rendered, never a shell
                (*DIE_WITH_THE_OPERATOR, *state.run.argv),
                cwd=directory,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            with self._guard:
                self._processes[state.name] = process
                stopped = self._runs.get(state.name) is not state
            if stopped:
                os.killpg(process.pid, signal.SIGKILL)
            timed_out = False
            try:
                process.wait(timeout=state.run.timeout_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return replace(
            state,
            ended=self.clock(),
            exit_code=process.returncode,
            timed_out=timed_out,
            metadata=_read(directory / RUN_PATHS.metadata_file, MAX_FILE_BYTES),
            cache_metrics=_read(directory / RUN_PATHS.cache_metrics_file, MAX_FILE_BYTES),
            log=_tail(log_path, MAX_LOG_BYTES),
        )


def _write_files(directory: Path, files: dict[str, bytes]) -> None:
    """Secrets readable by the operator's user only; the context as a ConfigMap volume shows it in a Job
    (0644: BuildKit copies modes into the image). Never outside the run's directory (itself 0700)."""
    root = directory.resolve()
    context = root / RUN_PATHS.context
    for relative, content in files.items():
        path = (root / relative).resolve()
        if not path.is_relative_to(root) or path == root:
            raise OSError(f"file {relative!r} would leave the run's directory")
        shared = path.is_relative_to(context)
        path.parent.mkdir(mode=0o755 if shared else 0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644 if shared else 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)


def _read(path: Path, limit: int) -> str | None:
    try:
        with path.open("rb") as file:
            return file.read(limit).decode(errors="replace")
    except FileNotFoundError:
        return None


def _tail(path: Path, limit: int) -> str:
    with path.open("rb") as file:
        size = file.seek(0, os.SEEK_END)
        file.seek(max(0, size - limit))
        return file.read().decode(errors="replace")
