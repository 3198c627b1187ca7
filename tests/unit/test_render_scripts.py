"""We test these aspects of the Job's shell scripts, run for real by sh (dash) and busybox sh:

- the init container's copy: real files, dotfiles included, none of the volume's `..data` internals;
- the init container's unpack: an archive's folders unpacked by busybox tar, readable, nothing outside
  the workspace; a broken archive fails;
- the wrapper script, against a fake `buildctl-daemonless.sh`: it passes the arguments through
  untouched, writes a report that `parse_report` reads on success (`cacheExported` true, false, or null
  with the cache disabled; every pushed reference; within 4096 bytes however long), and on failure
  writes nothing and keeps the exit code.
"""

import csv
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest

from servicebuild.render import job as render
from servicebuild.render.job import expand_tags, render_job
from servicebuild.report import MAX_MESSAGE_BYTES, BuildReport
from servicebuild.report_budget import MAX_REPORTED_NAME, parse_message
from support.render import (
    CASES,
    HOSTILE,
    IMAGE,
    INPUTS,
    build_container,
    env_of,
    flag_values,
    servicebuild,
    settings,
)


def report_of(message: str) -> BuildReport | None:
    """The report in a termination message, as the operator reads it (facts may follow the JSON line)."""
    parsed = parse_message(message)
    return parsed.report if parsed else None


def _shells() -> list[Any]:
    # `sh` as the Job calls it (dash on Debian) and busybox's, the shell of the Alpine BuildKit image;
    # .ci/run installs busybox, so a missing one fails the test.
    return [pytest.param(["sh"], id="sh"), pytest.param(["busybox", "sh"], id="busybox")]


# The context copy, run for real


@pytest.mark.parametrize("shell", _shells())
def test_the_context_copy_gives_real_files_without_the_volume_internals(
    tmp_path: Path, shell: list[str]
) -> None:
    # A ConfigMap volume as the kubelet lays it out: keys link into ..data, which links to a timestamped dir.
    configmap = tmp_path / "configmap"
    stamped = configmap / "..2026_11_28_06_00_00.123456789"
    stamped.mkdir(parents=True)
    files = {
        "Dockerfile": "FROM scratch\n",
        "main.c": "int main(void) { return 0; }\n",
        ".dockerignore": "*.o\n",
    }
    for name, content in files.items():
        (stamped / name).write_text(content)
        (configmap / name).symlink_to(Path("..data") / name)
    (configmap / "..data").symlink_to(stamped.name)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (init,) = render_job(*CASES["minimal"])["spec"]["template"]["spec"]["initContainers"]
    script = init["command"][-1].replace(render.CONFIGMAP_DIR, str(configmap))
    script = script.replace(render.WORKSPACE_DIR, str(workspace))
    result = subprocess.run([*shell, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert {path.name for path in workspace.iterdir()} == set(files)
    for name, content in files.items():
        assert not (workspace / name).is_symlink()
        assert (workspace / name).read_text() == content


# The archive unpack, run for real


def _tar_gz(path: Path, members: dict[str, tuple[str | None, int]]) -> None:
    """A .tar.gz with `name: (content, mode)`; content None is a directory, `->target` a symlink."""
    with tarfile.open(path, "w:gz") as archive:
        for name, (content, mode) in members.items():
            info = tarfile.TarInfo(name)
            info.mode = mode
            if content is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            elif content.startswith("->"):
                info.type = tarfile.SYMTYPE
                info.linkname = content.removeprefix("->")
                archive.addfile(info)
            else:
                data = content.encode()
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))


class InitPod:
    """The context init container run locally: a ConfigMap volume as the kubelet lays it out (the key
    links into ..data), an emptyDir workspace, busybox's tar, find and chmod as in the Alpine BuildKit
    image. Run as root, it drops to an unprivileged user with the workspace owned by root and open to
    all, like the kubelet's emptyDir."""

    def __init__(self, shell: list[str], archive: bytes) -> None:
        # Not pytest's tmp_path: its parents are closed to other users.
        self.root = Path(tempfile.mkdtemp(prefix="servicebuild-init-"))
        self.root.chmod(0o755)
        configmap = self.root / "configmap"
        stamped = configmap / "..2026_11_28_06_00_00.123456789"
        stamped.mkdir(parents=True)
        (stamped / "context.tar.gz").write_bytes(archive)
        (configmap / "context.tar.gz").symlink_to(Path("..data") / "context.tar.gz")
        (configmap / "..data").symlink_to(stamped.name)
        for directory in (configmap, stamped):
            directory.chmod(0o755)
        (stamped / "context.tar.gz").chmod(0o644)
        self.workspace = self.root / "workspace"
        self.workspace.mkdir()
        self.workspace.chmod(0o777)
        applets = self.root / "bin"
        applets.mkdir()
        applets.chmod(0o755)
        for applet in ("tar", "find", "chmod"):
            (applets / applet).symlink_to(shutil.which("busybox") or "busybox")
        (init,) = render_job(*CASES["configmap-archive"])["spec"]["template"]["spec"]["initContainers"]
        command = [
            part.replace(render.CONFIGMAP_DIR, str(configmap)).replace(
                render.WORKSPACE_DIR, str(self.workspace)
            )
            for part in init["command"]
        ]
        assert command[0] == "sh"
        drop = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups"] if os.geteuid() == 0 else []
        self.command = [*drop, *shell, *command[1:]]
        self.env = {**os.environ, "PATH": f"{applets}:{os.environ['PATH']}"}

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command, capture_output=True, text=True, env=self.env, check=False)

    def remove(self) -> None:
        for path in self.workspace.rglob("*"):
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(self.root)


def _archive(members: dict[str, tuple[str | None, int]]) -> bytes:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "context.tar.gz"
        _tar_gz(path, members)
        return path.read_bytes()


@pytest.mark.parametrize("shell", _shells())
def test_the_archive_unpacks_a_tree_inside_the_workspace(shell: list[str]) -> None:
    pod = InitPod(
        shell,
        _archive(
            {
                "./": (None, 0o755),  # tar -C dir . puts this first: the workspace itself, not ours to chmod
                "./Dockerfile": ("FROM scratch\nCOPY . /\n", 0o644),
                "./.dockerignore": ("*.o\n", 0o644),
                "./cmd/": (None, 0o755),
                "./cmd/server/": (None, 0o700),
                "./cmd/server/main.go": ("package main\n", 0o644),
                "./scripts/build.sh": ("#!/bin/sh\n", 0o755),
                "./locked/": (None, 0o300),
                "./locked/unreadable.txt": ("mode 0000 in the archive\n", 0o000),
                "./locked/write-only.txt": ("mode 0200 in the archive\n", 0o200),
                "./link-out": ("->/etc/hostname", 0o777),
                "./cmd/link-in": ("->../Dockerfile", 0o777),
                "../escape.txt": ("must stay inside\n", 0o644),
            },
        ),
    )
    try:
        result = pod.run()
        assert result.returncode == 0, result.stderr
        workspace = pod.workspace
        entries = {str(path.relative_to(workspace)) for path in workspace.rglob("*")}
        assert entries == {
            "Dockerfile",
            ".dockerignore",
            "cmd",
            "cmd/server",
            "cmd/server/main.go",
            "cmd/link-in",
            "scripts",
            "scripts/build.sh",
            "locked",
            "locked/unreadable.txt",
            "locked/write-only.txt",
            "link-out",
            "escape.txt",  # busybox tar drops the leading ../
        }
        assert not (pod.root / "escape.txt").exists()
        assert (workspace / "cmd/server/main.go").read_text() == "package main\n"
        assert (workspace / "cmd/link-in").readlink() == Path("../Dockerfile")
        assert stat.S_IMODE((workspace / "scripts/build.sh").stat().st_mode) == 0o755
        assert stat.S_IMODE((workspace / "cmd/server").stat().st_mode) == 0o700
        # What the archive left closed is opened for its owner, and only that.
        assert stat.S_IMODE((workspace / "locked").stat().st_mode) == 0o700
        assert stat.S_IMODE((workspace / "locked/unreadable.txt").stat().st_mode) == 0o400
        assert stat.S_IMODE((workspace / "locked/write-only.txt").stat().st_mode) == 0o600
    finally:
        pod.remove()


@pytest.mark.parametrize("shell", _shells())
def test_a_broken_archive_fails_the_init_container(shell: list[str]) -> None:
    pod = InitPod(shell, b"not gzip at all")
    try:
        assert pod.run().returncode != 0
    finally:
        pod.remove()


# The wrapper script, run for real

FAKE_BUILDCTL = r"""#!/bin/sh
# Stands in for buildctl-daemonless.sh: records its arguments, writes what buildctl writes, exits as told.
printf '%s\0' "$@" >"$FAKE_DIR/received-args"
echo "#5 [build 2/4] COPY greet.h greet.c main.c ./" >&2
while [ $# -gt 0 ]; do
  case $1 in
    --metadata-file) [ "$FAKE_EXIT" -ne 0 ] || cp "$FAKE_DIR/metadata.json" "$2" ;;
    --debug-json-cache-metrics) if [ -e "$FAKE_DIR/cache-metrics.json" ]; then
      cp "$FAKE_DIR/cache-metrics.json" "$2"
    fi ;;
  esac
  shift
done
exit "$FAKE_EXIT"
"""

PUSHED = "sha256:" + "3f1a" * 16
CONFIG = "sha256:" + "9c0d" * 16
CACHE_MANIFEST = json.dumps(
    {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + "77ab" * 16,
        "size": 2210,
    },
    separators=(",", ":"),
)
# As buildctl writes it: json.MarshalIndent with two spaces, sorted top-level keys, no final newline;
# `cache.manifest` (a JSON string: the cache manifest's descriptor) only when a cache was exported.
METADATA_FIELDS: dict[str, Any] = {
    "cache.manifest": CACHE_MANIFEST,
    "containerimage.config.digest": CONFIG,
    "containerimage.descriptor": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": PUSHED,
        "size": 479,
        "platform": {"architecture": "amd64", "os": "linux"},
    },
    "containerimage.digest": PUSHED,
    "image.name": IMAGE,
}
CACHE_METRICS = (
    "cache miss: [build 3/4] RUN make\n"
    '{"total":14,"completed":14,"user_total":5,"user_cached":4,"user_completed":5,"user_cacheable":4,'
    '"from":1,"miss":1,"client_duration_ms":3291}\n'
)


class Pod:
    """The build container of a rendered Job, run by a local shell with the Pod's paths moved to tmp."""

    def __init__(
        self, tmp_path: Path, shell: list[str], job: dict[str, Any], metadata: dict[str, Any] | None = None
    ) -> None:
        self.dir = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        fake = self.bin / "buildctl-daemonless.sh"
        fake.write_text(FAKE_BUILDCTL)
        fake.chmod(0o755)
        if shell[0] == "busybox":  # the BuildKit image is Alpine: sed and tail are busybox applets there
            for applet in ("sed", "tail"):
                (self.bin / applet).symlink_to(shutil.which("busybox") or "busybox")
        self.termination_log = tmp_path / "termination-log"
        self.termination_log.write_text("")  # the kubelet creates it empty
        moved = {
            render.METADATA_FILE: str(tmp_path / "pod-tmp-metadata.json"),
            render.CACHE_METRICS_FILE: str(tmp_path / "pod-tmp-cache-metrics.json"),
            render.TERMINATION_LOG: str(self.termination_log),
        }
        container = build_container(job)
        self.args = [moved.get(arg, arg) for arg in container["args"]]
        self.env = {name: moved.get(value, value) for name, value in env_of(container).items()}
        command = container["command"]
        assert command[0] == "sh"
        self.command = [*shell, *command[1:]]
        fields = METADATA_FIELDS if metadata is None else metadata
        (tmp_path / "metadata.json").write_text(json.dumps(fields, indent=2, sort_keys=True))
        (tmp_path / "cache-metrics.json").write_text(CACHE_METRICS)

    def run(self, exit_code: int = 0) -> subprocess.CompletedProcess[str]:
        env = {
            **self.env,
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "FAKE_DIR": str(self.dir),
            "FAKE_EXIT": str(exit_code),
        }
        return subprocess.run(
            [*self.command, *self.args], env=env, cwd=self.dir, capture_output=True, text=True, check=False
        )

    def received_args(self) -> list[str]:
        return (self.dir / "received-args").read_bytes().decode().split("\0")[:-1]


@pytest.mark.parametrize("shell", _shells())
def test_wrapper_reports_a_successful_build(tmp_path: Path, shell: list[str]) -> None:
    pod = Pod(tmp_path, shell, render_job(*CASES["minimal"]))
    result = pod.run()
    assert result.returncode == 0, result.stderr
    message = pod.termination_log.read_text()
    assert message.endswith("}\n")
    assert message.count("\n") == 1
    assert len(message.encode()) < MAX_MESSAGE_BYTES
    assert json.loads(message)["cacheMetrics"] == json.loads(CACHE_METRICS.splitlines()[-1])
    assert report_of(message) == BuildReport(
        digest=PUSHED, image_name=IMAGE, cached_steps=4, total_steps=5, cache_exported=True
    )


@pytest.mark.parametrize("shell", _shells())
def test_wrapper_passes_arguments_untouched(tmp_path: Path, shell: list[str]) -> None:
    build = servicebuild(buildArgs={"MOTD": HOSTILE, "EMPTY": ""})
    pod = Pod(tmp_path, shell, render_job(build, settings(), INPUTS))
    result = pod.run()
    assert result.returncode == 0, result.stderr
    assert pod.received_args() == pod.args
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("shell", _shells())
def test_wrapper_without_cache_metrics_reports_null(tmp_path: Path, shell: list[str]) -> None:
    pod = Pod(tmp_path, shell, render_job(*CASES["minimal"]))
    (tmp_path / "cache-metrics.json").unlink()
    result = pod.run()
    assert result.returncode == 0, result.stderr
    message = pod.termination_log.read_text()
    assert json.loads(message.splitlines()[0])["cacheMetrics"] is None
    assert report_of(message) == BuildReport(
        digest=PUSHED, image_name=IMAGE, cached_steps=None, total_steps=None, cache_exported=True
    )


@pytest.mark.parametrize("exit_code", [1, 7])
@pytest.mark.parametrize("shell", _shells())
def test_wrapper_failure_keeps_exit_code_and_writes_nothing(
    tmp_path: Path, shell: list[str], exit_code: int
) -> None:
    pod = Pod(tmp_path, shell, render_job(*CASES["minimal"]))
    result = pod.run(exit_code)
    assert result.returncode == exit_code
    assert pod.termination_log.read_text() == ""
    assert "COPY greet.h" in result.stderr  # the build's log still goes to the container log


# The wrapper's cacheExported, run for real


@pytest.mark.parametrize("shell", _shells())
def test_wrapper_reports_a_missing_cache_export(tmp_path: Path, shell: list[str]) -> None:
    without_cache = {key: value for key, value in METADATA_FIELDS.items() if key != "cache.manifest"}
    pod = Pod(tmp_path, shell, render_job(*CASES["minimal"]), metadata=without_cache)
    result = pod.run()
    assert result.returncode == 0, result.stderr
    message = pod.termination_log.read_text()
    assert json.loads(message)["cacheExported"] is False
    report = report_of(message)
    assert report is not None
    assert report.cache_exported is False
    assert report.digest == PUSHED


@pytest.mark.parametrize("shell", _shells())
def test_wrapper_reports_no_cache_export_when_the_cache_is_disabled(tmp_path: Path, shell: list[str]) -> None:
    pod = Pod(tmp_path, shell, render_job(*CASES["cache-disabled"]))
    result = pod.run()
    assert result.returncode == 0, result.stderr
    message = pod.termination_log.read_text()
    assert json.loads(message)["cacheExported"] is None
    report = report_of(message)
    assert report is not None
    assert report.cache_exported is None


@pytest.mark.parametrize("shell", _shells())
def test_wrapper_reports_every_pushed_reference(tmp_path: Path, shell: list[str]) -> None:
    job = render_job(*CASES["tags"])
    (output,) = flag_values(build_container(job)["args"], "--output")
    (fields,) = csv.reader([output])
    names = fields[1].removeprefix("name=")
    pod = Pod(tmp_path, shell, job, metadata={**METADATA_FIELDS, "image.name": names})
    result = pod.run()
    assert result.returncode == 0, result.stderr
    report = report_of(pod.termination_log.read_text())
    assert report is not None
    assert report.image_name == names
    assert report.image_name.split(",") == expand_tags(CASES["tags"][0].spec, CASES["tags"][2], 3)


@pytest.mark.parametrize("shell", _shells())
def test_the_longest_report_fits_a_termination_message(tmp_path: Path, shell: list[str]) -> None:
    longest_name = ",".join(["r.example.com:5000/" + "a" * 480 + ":" + "t" * 128] * 4)[:MAX_REPORTED_NAME]
    longest_metrics = '{"total":1,' + '"pad":"' + "x" * (1024 - 20) + '"}'
    assert len(longest_metrics) == 1024
    pod = Pod(
        tmp_path,
        shell,
        render_job(*CASES["minimal"]),
        metadata={**METADATA_FIELDS, "image.name": longest_name},
    )
    (tmp_path / "cache-metrics.json").write_text(longest_metrics + "\n")
    assert pod.run().returncode == 0
    message = pod.termination_log.read_text()
    assert len(message.encode()) < MAX_MESSAGE_BYTES
    report = report_of(message)
    assert report is not None
    assert report.image_name == longest_name
    assert report.cache_exported is True


@pytest.mark.parametrize("shell", _shells())
def test_a_too_long_list_of_names_is_left_out(tmp_path: Path, shell: list[str]) -> None:
    too_long = ",".join(["registry.example.com/shop/checkout:" + "t" * 128] * 18)  # 2951 characters
    pod = Pod(
        tmp_path, shell, render_job(*CASES["minimal"]), metadata={**METADATA_FIELDS, "image.name": too_long}
    )
    assert pod.run().returncode == 0
    message = pod.termination_log.read_text()
    assert len(message.encode()) < MAX_MESSAGE_BYTES
    report = report_of(message)
    assert report is not None
    assert report.image_name is None
    assert report.digest == PUSHED
