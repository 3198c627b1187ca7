"""We test the stand-in `buildctl` of builder pools against a real registry:

- a build pushes what the registry then serves under every output name, with the digest and the
  manifest's own size in the metadata file, BuildKit's plain progress (the base image's `FROM …@sha256`,
  the FromAsCasing check) and the cache metrics of a cold daemon;
- a rebuild on the same daemon is all CACHED with the same digest; a changed final stage misses only there;
- `push-by-digest=true` pushes no tag; the registry cache export writes `cache.manifest`, a failed one not;
- push credentials come from `$DOCKER_CONFIG/config.json` (an htpasswd registry);
- a held build waits until released, and dies with its process group.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from servicebuild.buildlog import StepState, is_user_step, parse_plain
from servicebuild.cachemetrics import parse_cache_metrics
from support.fake_buildctl import holds_started, plan, release
from support.fixtures import REGISTRY_USER
from support.oci_registry import OCI_MANIFEST, RunningRegistry, push_image, tag_digest
from support.pool_client import (
    build_command,
    client_of,
    pool_ca,
    run_buildctl,
    write_context,
    write_docker_config,
    write_tlsdir,
)

ACCEPT = {"Accept": OCI_MANIFEST}


def dockerfile(registry: RunningRegistry, final: str) -> str:
    return (
        f"FROM {registry.host}/tests/pool-base:1 as build\n"
        "WORKDIR /src\nCOPY main.c ./\nRUN cc -o /app main.c\n"
        f"FROM {registry.host}/tests/pool-base:1 AS runtime\nCOPY --from=build /app /app\n{final}\n"
    )


@pytest.fixture(scope="module")
def base_image(oci_registry: RunningRegistry) -> str:
    return push_image(oci_registry, "tests/pool-base", "1", [b"base layer"]).digest


@pytest.fixture
def run_dir(tmp_path: Path, oci_registry: RunningRegistry, base_image: str) -> Path:
    run = tmp_path / "run"
    write_context(
        run, {"Dockerfile": dockerfile(oci_registry, 'ENTRYPOINT ["/app"]'), "main.c": "int main(){}"}
    )
    ca = pool_ca()
    write_tlsdir(run, ca, client_of(ca))
    return run


def metadata(run_dir: Path) -> dict:
    return json.loads((run_dir / "metadata.json").read_text())


def test_a_build_pushes_what_the_metadata_file_says(
    fake_buildctl, run_dir, oci_registry, unique_repository, base_image
):
    names = f"{oci_registry.host}/{unique_repository}:1.0,{oci_registry.host}/{unique_repository}:latest"

    result = run_buildctl(fake_buildctl, build_command(run_dir, names), run_dir)

    assert result.returncode == 0, result.stderr
    written = metadata(run_dir)
    digest = written["containerimage.digest"]
    assert tag_digest(oci_registry, unique_repository, "1.0") == digest
    assert tag_digest(oci_registry, unique_repository, "latest") == digest
    served = httpx.get(f"{oci_registry.url}/v2/{unique_repository}/manifests/{digest}", headers=ACCEPT)
    assert written["containerimage.descriptor"]["size"] == len(served.content)
    assert written["containerimage.config.digest"] == served.json()["config"]["digest"]
    assert written["image.name"] == names
    assert "cache.manifest" not in written
    log = parse_plain(result.stderr)
    assert [base.digest for base in log.base_images] == [base_image]
    assert [warning.rule for warning in log.warnings] == ["FromAsCasing"]
    metrics = parse_cache_metrics((run_dir / "cache-metrics.json").read_text())
    assert metrics.summary is not None
    assert (metrics.summary.user_cached, metrics.summary.user_total) == (0, 5)


def test_a_rebuild_on_the_same_daemon_is_cached_and_a_final_stage_change_misses_there(
    fake_buildctl, run_dir, oci_registry, unique_repository
):
    image = f"{oci_registry.host}/{unique_repository}:1"
    cold = run_buildctl(fake_buildctl, build_command(run_dir, image), run_dir)
    first = metadata(run_dir)["containerimage.digest"]

    warm = run_buildctl(fake_buildctl, build_command(run_dir, image), run_dir)
    same = metadata(run_dir)["containerimage.digest"]
    (run_dir / "context" / "Dockerfile").write_text(dockerfile(oci_registry, 'ENTRYPOINT ["/app", "-v"]'))
    changed = run_buildctl(fake_buildctl, build_command(run_dir, image), run_dir)

    assert (cold.returncode, warm.returncode, changed.returncode) == (0, 0, 0)
    assert {step.state for step in parse_plain(warm.stderr).steps if is_user_step(step.name)} == {
        StepState.CACHED
    }
    assert same == first
    changed_steps = {step.name: step.state for step in parse_plain(changed.stderr).steps}
    assert changed_steps["[build 4/4] RUN cc -o /app main.c"] == StepState.CACHED
    assert changed_steps["[runtime 2/2] COPY --from=build /app /app"] == StepState.CACHED
    assert metadata(run_dir)["containerimage.digest"] != first
    assert tag_digest(oci_registry, unique_repository, "1") == metadata(run_dir)["containerimage.digest"]


def test_push_by_digest_pushes_no_tag(fake_buildctl, run_dir, oci_registry, unique_repository):
    command = build_command(run_dir, f"{oci_registry.host}/{unique_repository}:1")
    command[command.index("--output") + 1] += ",push-by-digest=true"

    result = run_buildctl(fake_buildctl, command, run_dir)

    assert result.returncode == 0, result.stderr
    digest = metadata(run_dir)["containerimage.digest"]
    by_tag = httpx.get(f"{oci_registry.url}/v2/{unique_repository}/manifests/1", headers=ACCEPT)
    by_digest = httpx.get(f"{oci_registry.url}/v2/{unique_repository}/manifests/{digest}", headers=ACCEPT)
    assert (by_tag.status_code, by_digest.status_code) == (404, 200)


def test_the_cache_export_is_in_the_metadata_only_when_it_succeeded(
    fake_buildctl, run_dir, buildctl_plan_dir, oci_registry, unique_repository
):
    cache = f"{oci_registry.host}/{unique_repository}:buildcache"
    export = f"type=registry,ref={cache},mode=max,ignore-error=true,registry.insecure=true"
    command = build_command(run_dir, f"{oci_registry.host}/{unique_repository}:1", "--export-cache", export)
    plan(buildctl_plan_dir, unique_repository, "succeed", "cache-export-fails")

    exported = run_buildctl(fake_buildctl, command, run_dir)
    descriptor = json.loads(metadata(run_dir)["cache.manifest"])
    failed = run_buildctl(fake_buildctl, command, run_dir)

    assert (exported.returncode, failed.returncode) == (0, 0)
    assert descriptor["digest"] == tag_digest(oci_registry, unique_repository, "buildcache")
    assert "cache.manifest" not in metadata(run_dir)


def test_push_credentials_come_from_the_docker_config(
    fake_buildctl, run_dir, oci_registry_htpasswd, unique_repository
):
    user, password = REGISTRY_USER
    write_docker_config(run_dir, {oci_registry_htpasswd.host: {"username": user, "password": password}})

    image = f"{oci_registry_htpasswd.host}/{unique_repository}:1"

    result = run_buildctl(fake_buildctl, build_command(run_dir, image), run_dir)

    assert result.returncode == 0, result.stderr
    assert (
        tag_digest(oci_registry_htpasswd, unique_repository, "1")
        == metadata(run_dir)["containerimage.digest"]
    )


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.05)


def start(buildctl: Path, run_dir: Path, args: list[str]) -> subprocess.Popen[str]:
    env = {"PATH": os.environ["PATH"], "DOCKER_CONFIG": str(run_dir / "docker")}
    return subprocess.Popen(
        [str(buildctl), *args],
        cwd=run_dir,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as the operator runs it
    )


def test_a_held_build_waits_until_released(
    fake_buildctl, run_dir, buildctl_plan_dir, oci_registry, unique_repository
):
    plan(buildctl_plan_dir, unique_repository, "hold")
    process = start(
        fake_buildctl, run_dir, build_command(run_dir, f"{oci_registry.host}/{unique_repository}:1")
    )

    wait_for(lambda: holds_started(buildctl_plan_dir, unique_repository) == 1)
    assert process.poll() is None
    assert not (run_dir / "metadata.json").exists()
    release(buildctl_plan_dir, unique_repository)

    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert tag_digest(oci_registry, unique_repository, "1") == metadata(run_dir)["containerimage.digest"]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_a_held_build_dies_with_its_process_group(
    fake_buildctl, run_dir, buildctl_plan_dir, oci_registry, unique_repository, stop
):
    plan(buildctl_plan_dir, unique_repository, "hold")
    process = start(
        fake_buildctl, run_dir, build_command(run_dir, f"{oci_registry.host}/{unique_repository}:1")
    )
    wait_for(lambda: holds_started(buildctl_plan_dir, unique_repository) == 1)

    os.killpg(process.pid, stop)

    process.communicate(timeout=30)
    assert process.returncode == -stop
    assert not (run_dir / "metadata.json").exists()
