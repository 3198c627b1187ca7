"""We test these aspects of `kubectl servicebuild`, with the real operator process, KMock's API, the
kubelet stand-in and a real registry:

- `build --from-dir --follow` on a real folder with a `.dockerignore`: the ConfigMap `<name>-context`
  holds exactly what Docker's rules keep (the `docker` package's exclusion), the ServiceBuild is
  created, and the command ends with `image@digest (size)` as the status has them and exit code 0;
- the same command after a change, on a build that fails, ends with the failure and exit code 1;
- a context too large for a ConfigMap fails naming the largest files and creates nothing;
- a git-sourced ServiceBuild is never turned into a folder build; one a GitOps tool manages is
  changed with a warning;
- `wait`: exit 2 when the timeout passes first, 0 once Ready, 1 once Stalled; `rebuild` asks for a new
  build, which the operator starts.
"""

import base64
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import kmock
import pytest
from cli_runner import cli_environment, run, start
from cluster import CONFIGMAPS, SERVICEBUILDS, Cluster, eventually
from docker.utils.build import exclude_paths
from helpers import NAMESPACE, ready, stalled, status_of
from kubelet import Kubelet
from operator_process import OperatorProcess

from support.oci_registry import RunningRegistry

FOLDER = {
    "Dockerfile": "FROM scratch\nCOPY . /app\n",
    ".dockerignore": "**/*.pyc\nsecrets\n!secrets/public.pem\n/docs\n",
    "main.py": "print('api')\n",
    "api/handlers.py": "HANDLERS = []\n",
    "api/__pycache__/handlers.cpython-311.pyc": "compiled\n",
    "secrets/private.pem": "private\n",
    "secrets/public.pem": "public\n",
    "docs/index.md": "# api\n",
    "web/docs/page.md": "kept: /docs is only the top folder\n",
}


@pytest.fixture
def env(kmock: kmock.KubernetesEmulator, tmp_path: Path) -> dict[str, str]:
    return cli_environment(str(kmock.url), tmp_path, NAMESPACE)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "api"
    for path, content in FOLDER.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
    return root


def _packed_files(cluster: Cluster, name: str) -> set[str]:
    configmap = cluster.get(CONFIGMAPS, NAMESPACE, f"{name}-context")
    assert configmap is not None
    archive = base64.b64decode(configmap["binaryData"]["context.tar.gz"])
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as packed:
        return {member.name for member in packed.getmembers() if member.isfile()}


def _docker_keeps(folder: Path) -> set[str]:
    patterns = [line for line in FOLDER[".dockerignore"].splitlines() if line]
    return {path for path in exclude_paths(str(folder), patterns) if (folder / path).is_file()}


async def test_build_from_dir_follows_to_ready_then_to_a_failure(
    cluster: Cluster,
    kubelet: Kubelet,
    operator: OperatorProcess,
    oci_registry: RunningRegistry,
    env: dict[str, str],
    folder: Path,
) -> None:
    image = f"{oci_registry.host}/shop/api:dev"
    result = await run(env, "build", "api", "--from-dir", str(folder), "--image", image, "--follow")
    assert result.code == 0, result
    output = status_of(cluster, "api")["output"]
    assert result.stdout.splitlines()[0].startswith("servicebuild/api created: 6 files (")
    assert result.stdout.splitlines()[-1] == f"{output['image']} ({output['size']})"
    assert output["image"].startswith(f"{image}@sha256:")
    assert (
        _packed_files(cluster, "api")
        == _docker_keeps(folder)
        == {
            "Dockerfile",
            ".dockerignore",
            "main.py",
            "api/handlers.py",
            "secrets/public.pem",
            "web/docs/page.md",
        }
    )
    spec = cluster.servicebuild(NAMESPACE, "api")["spec"]
    assert spec["source"] == {"configMap": {"name": "api-context", "archive": "context.tar.gz"}}

    kubelet.plan("api", "fail")
    (folder / "main.py").write_text("print('api, changed')\n")
    failed = await run(env, "build", "api", "--from-dir", str(folder), "--follow")
    assert failed.code == 1, failed
    assert failed.stdout.splitlines()[0].startswith("servicebuild/api configured: 6 files (")
    assert "Failed at: [build 3/4] RUN make greet" in failed.stdout
    assert "fatal error: greet.h: No such file or directory" in failed.stdout
    assert stalled(cluster, "api")


async def test_a_context_too_large_fails_naming_its_largest_files_and_creates_nothing(
    cluster: Cluster, env: dict[str, str], folder: Path
) -> None:
    (folder / "models").mkdir()
    (folder / "models" / "weights.bin").write_bytes(os.urandom(1_200_000))
    result = await run(
        env, "build", "api", "--from-dir", str(folder), "--image", "registry.test/shop/api:dev"
    )
    assert result.code == 1
    assert "1.0 MiB a ConfigMap holds" in result.stderr
    assert "1.1 MiB  models/weights.bin" in result.stderr
    assert "add to .dockerignore:\n  models/\n" in result.stderr
    assert cluster.all(CONFIGMAPS, NAMESPACE) == []
    assert cluster.all(SERVICEBUILDS, NAMESPACE) == []


async def test_a_git_build_is_never_turned_into_a_folder_build(
    cluster: Cluster, env: dict[str, str], folder: Path
) -> None:
    git = {"git": {"url": "https://git.example.com/shop/api.git", "revision": "main"}}
    await cluster.create_servicebuild(
        NAMESPACE, "api", {"source": git, "output": {"image": "r.test/shop/api:1"}}
    )
    result = await run(env, "build", "api", "--from-dir", str(folder))
    assert result.code == 1
    assert "servicebuild api builds from git" in result.stderr
    assert cluster.servicebuild(NAMESPACE, "api")["spec"]["source"] == git
    assert cluster.get(CONFIGMAPS, NAMESPACE, "api-context") is None


async def test_a_servicebuild_a_gitops_tool_manages_is_changed_with_a_warning(
    cluster: Cluster, env: dict[str, str], folder: Path
) -> None:
    body: dict[str, Any] = {
        "apiVersion": "servicebuild.dev/v1alpha1",
        "kind": "ServiceBuild",
        "metadata": {
            "name": "api",
            "namespace": NAMESPACE,
            "annotations": {"argocd.argoproj.io/tracking-id": "shop:servicebuild.dev/ServiceBuild:shop/api"},
        },
        "spec": {"source": {"configMap": {"name": "old"}}, "output": {"image": "r.test/shop/api:1"}},
    }
    await cluster.create(SERVICEBUILDS, body)
    result = await run(env, "build", "api", "--from-dir", str(folder))
    assert result.code == 0
    assert "managed by a GitOps tool (argocd.argoproj.io/tracking-id)" in result.stderr
    assert cluster.servicebuild(NAMESPACE, "api")["spec"]["source"]["configMap"]["name"] == "api-context"


async def test_wait_and_rebuild(
    cluster: Cluster,
    kubelet: Kubelet,
    operator: OperatorProcess,
    oci_registry: RunningRegistry,
    env: dict[str, str],
    folder: Path,
) -> None:
    kubelet.plan("api", "hold")
    created = await run(
        env, "build", "api", "--from-dir", str(folder), "--image", f"{oci_registry.host}/shop/api:1"
    )
    assert created.code == 0, created
    await eventually(lambda: kubelet.held)
    timed_out = await run(env, "wait", "api", "--timeout", "1")
    assert timed_out.code == 2, timed_out
    assert "still Building after 1s" in timed_out.stderr

    waiting = start(env, "wait", "api")
    await kubelet.release(next(iter(kubelet.held)))
    done = await waiting
    assert done.code == 0, done
    assert (
        done.stdout
        == f"{status_of(cluster, 'api')['output']['image']} ({status_of(cluster, 'api')['output']['size']})\n"
    )

    kubelet.plan("api", "fail")
    requested = await run(env, "rebuild", "api")
    assert (requested.code, requested.stdout) == (0, "servicebuild/api rebuild requested\n")
    failed = await run(env, "wait", "api")
    assert failed.code == 1, failed
    assert status_of(cluster, "api")["build"] == 2
    assert status_of(cluster, "api")["trigger"] == "Requested"
    assert not ready(cluster, "api")
