"""The runner of buildctl for pool builds, with real processes: a `buildctl` script on PATH that reports
what it was given and ends as the test says."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from servicebuild.poolruns import PoolRuns
from servicebuild.render.pool_run import PoolRun
from support.processes import process_alive

SB, POOL = ("shop", "checkout"), ("shop", "builders")
WAIT = 60.0
"""Generous: the test waits for a condition, never for a time."""

# Records its directory's files with their modes, writes the metadata file as buildctl does, and either
# ends or waits (for its process group to be killed).
SCRIPT = """#!/bin/sh
set -e
find . -type f ! -name build.log -exec stat -c '%n %a' {} + | sort > "$RECORD/files"
echo "$DOCKER_CONFIG" > "$RECORD/docker-config"
pwd > "$RECORD/directory"
stat -c '%a' . > "$RECORD/mode"
echo "#1 [internal] load build definition from Dockerfile"
if [ "$1" = hold ]; then echo $$ > "$RECORD/pid"; touch "$RECORD/started"; while :; do sleep 1; done; fi
printf '{"containerimage.digest": "sha256:%064d"}' 0 > metadata.json
echo "#9 DONE 0.1s"
exit "$2"
"""


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir, record_dir = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    record_dir.mkdir()
    script = bin_dir / "buildctl"
    script.write_text(SCRIPT.replace("$RECORD", str(record_dir)))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record_dir


def _runs(tmp_path: Path) -> tuple[PoolRuns, threading.Event, list[tuple[str, str]]]:
    directory = tmp_path / "runs"
    directory.mkdir(exist_ok=True)
    runs, ended, ends = PoolRuns(directory), threading.Event(), []

    def on_end(key: tuple[str, str]) -> None:
        ends.append(key)
        ended.set()

    runs.on_end = on_end
    return runs, ended, ends


def _run(*args: str, files: dict[str, bytes] | None = None, timeout: int = 600) -> PoolRun:
    return PoolRun(argv=("buildctl", *args), files=files or {}, timeout_seconds=timeout)


def test_a_run_writes_its_files_reports_and_removes_them(tmp_path: Path, record: Path) -> None:
    runs, ended, ends = _runs(tmp_path)
    files = {"tls/tls.key": b"key", "docker/config.json": b"{}", "context/Dockerfile": b"FROM scratch\n"}
    runs.start(SB, "checkout-1", POOL, _run("ok", "0", files=files))
    assert ended.wait(WAIT)

    state = runs.state("checkout-1")
    assert state is not None
    assert (state.exit_code, state.stopped, state.timed_out) == (0, False, False)
    assert json.loads(state.metadata or "")["containerimage.digest"].startswith("sha256:")
    assert "#9 DONE" in state.log
    assert ends == [SB]
    assert (record / "files").read_text().split("\n")[:3] == [
        "./context/Dockerfile 644",
        "./docker/config.json 600",
        "./tls/tls.key 600",
    ]
    directory = Path((record / "directory").read_text().strip())
    assert (record / "docker-config").read_text().strip() == str(directory / "docker")
    assert (record / "mode").read_text().strip() == "700"
    assert not directory.exists(), "the run's directory, secrets and all, is gone"
    assert runs.running(POOL) == 0


def test_a_failed_run_keeps_its_exit_code_and_log(tmp_path: Path, record: Path) -> None:
    runs, ended, _ = _runs(tmp_path)
    runs.start(SB, "checkout-1", POOL, _run("fail", "1"))
    assert ended.wait(WAIT)
    state = runs.state("checkout-1")
    assert state is not None
    assert state.exit_code == 1
    assert "load build definition" in state.log
    assert (record / "files").exists()


def test_a_stopped_run_is_killed_and_reports_nothing(tmp_path: Path, record: Path) -> None:
    runs, ended, ends = _runs(tmp_path)
    runs.start(SB, "checkout-1", POOL, _run("hold", "0"))
    _wait_for(record / "started")
    assert runs.running(POOL) == 1

    runs.stop(SB, keep=None)
    assert runs.state("checkout-1") is None
    directory = Path((record / "directory").read_text().strip())
    _wait_for_gone(directory)
    assert ends == []
    assert not ended.is_set()


def test_losing_the_term_stops_every_run(tmp_path: Path, record: Path) -> None:
    runs, _, ends = _runs(tmp_path)
    runs.start(SB, "checkout-1", POOL, _run("hold", "0"))
    _wait_for(record / "started")
    runs.stop_all()
    _wait_for_gone(Path((record / "directory").read_text().strip()))
    assert runs.state("checkout-1") is None
    assert ends == []


def test_a_run_past_its_timeout_is_killed_and_says_so(tmp_path: Path, record: Path) -> None:
    runs, ended, _ = _runs(tmp_path)
    # Long enough for the script to reach its hold on a loaded machine, short enough for a unit test.
    runs.start(SB, "checkout-1", POOL, _run("hold", "0", timeout=5))
    assert ended.wait(WAIT)
    state = runs.state("checkout-1")
    assert state is not None
    assert state.timed_out
    assert (record / "started").exists()


def test_a_file_that_would_leave_the_run_directory_fails_the_run(tmp_path: Path, record: Path) -> None:
    runs, ended, _ = _runs(tmp_path)
    runs.start(SB, "checkout-1", POOL, _run("ok", "0", files={"context/../../escape": b"x"}))
    assert ended.wait(WAIT)
    state = runs.state("checkout-1")
    assert state is not None
    assert state.exit_code == -1
    assert "leave the run's directory" in state.log
    assert not (tmp_path / "escape").exists()
    assert not (record / "files").exists(), "buildctl never started"


def test_a_pool_is_busy_while_a_run_runs_and_remembers_its_last_build(tmp_path: Path, record: Path) -> None:
    runs, ended, _ = _runs(tmp_path)
    before = runs.last_activity(POOL)
    runs.start(SB, "checkout-1", POOL, _run("ok", "0"))
    assert ended.wait(WAIT)
    assert runs.last_activity(POOL) >= before
    assert runs.running(("shop", "other")) == 0


def _wait_for(path: Path, *, gone: bool = False) -> None:
    event = threading.Event()
    for _ in range(int(WAIT / 0.05)):
        if path.exists() != gone:
            return
        event.wait(0.05)
    pytest.fail(f"{path} {'stayed' if gone else 'never appeared'}")


def _wait_for_gone(path: Path) -> None:
    _wait_for(path, gone=True)


# An operator process that starts one held run and then waits to be killed.
OPERATOR = """
import sys, threading
from pathlib import Path
from servicebuild.poolruns import PoolRuns
from servicebuild.render.pool_run import PoolRun
runs = PoolRuns(Path(sys.argv[1]))
run = PoolRun(("buildctl", "hold", "0"), {}, 600)
runs.start(("shop", "checkout"), "checkout-1", ("shop", "builders"), run)
threading.Event().wait()
"""


def test_builds_die_with_the_operator(tmp_path: Path, record: Path) -> None:
    directory = tmp_path / "runs"
    directory.mkdir()
    operator = subprocess.Popen([sys.executable, "-c", OPERATOR, str(directory)])
    try:
        _wait_for(record / "started")
        buildctl = int((record / "pid").read_text())
        assert process_alive(buildctl)
    finally:
        operator.kill()
        operator.wait()
    event = threading.Event()
    for _ in range(int(WAIT / 0.05)):
        if not process_alive(buildctl):
            return
        event.wait(0.05)
    pytest.fail("buildctl outlived the operator")
