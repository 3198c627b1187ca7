"""The build Pod's security settings, over every golden build Job.

The golden files are what `render_job` renders for every case of support/render.py (`test_golden` fails
when one differs, `test_every_golden_file_has_a_case` when a case has none), so checking them checks every
case the renderer is tested with, including the git, secret and scheduling variants.

We test these aspects:
- no service-account token reaches the Pod: `automountServiceAccountToken: false`, and no projected token;
- every container, init containers included, runs as UID and GID 1000 with `runAsNonRoot`;
- only the `buildkit` container is Unconfined (seccomp and AppArmor): rootless BuildKit creates user and
  mount namespaces, which the runtime's default profiles forbid. Every other container keeps seccomp
  RuntimeDefault and the runtime's default AppArmor profile, and the Pod level sets neither to Unconfined;
- no privilege beyond that: no privileged container, no added capability, no unmasked /proc; the init
  container drops every capability, cannot escalate and has a read-only root filesystem (the build
  container keeps privilege escalation: newuidmap and newgidmap are setuid binaries);
- nothing of the node: no host network, PID or IPC namespace, no host ports, only emptyDir, ConfigMap,
  Secret and projected ConfigMap/Secret volumes (so no hostPath).
"""

from pathlib import Path
from typing import Any

import pytest
import yaml

from servicebuild.render import job as render
from support.render import GOLDEN

GOLDEN_JOBS = sorted(GOLDEN.glob("*.yaml"))
BUILD_USER = 1000  # `user` of the moby/buildkit rootless image; written out so a change of the constant shows
APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"
SAFE_VOLUME_TYPES = {"emptyDir", "configMap", "secret", "projected"}
SAFE_PROJECTED_SOURCES = {"configMap", "secret"}  # not serviceAccountToken: that would be a token after all


def pod_template(path: Path) -> dict[str, Any]:
    job = yaml.safe_load(path.read_text())
    assert job["kind"] == "Job"
    template: dict[str, Any] = job["spec"]["template"]
    return template


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def effective(pod: dict[str, Any], container: dict[str, Any], field: str) -> Any:
    """A securityContext field as the kubelet applies it: the container's, else the Pod's."""
    return container.get("securityContext", {}).get(field, pod.get("securityContext", {}).get(field))


golden_jobs = pytest.mark.parametrize("path", GOLDEN_JOBS, ids=lambda path: path.stem)


def test_there_are_golden_jobs_to_check() -> None:
    assert len(GOLDEN_JOBS) >= 10
    assert "minimal" in {path.stem for path in GOLDEN_JOBS}


@golden_jobs
def test_no_service_account_token_is_mounted(path: Path) -> None:
    pod = pod_template(path)["spec"]
    assert pod["automountServiceAccountToken"] is False
    for volume in pod["volumes"]:
        for source in volume.get("projected", {}).get("sources", []):
            assert "serviceAccountToken" not in source, volume["name"]


@golden_jobs
def test_every_container_runs_as_the_build_user_never_root(path: Path) -> None:
    pod = pod_template(path)["spec"]
    assert render.BUILD_USER == BUILD_USER
    for container in containers(pod):
        name = container["name"]
        assert effective(pod, container, "runAsUser") == BUILD_USER, name
        assert effective(pod, container, "runAsGroup") == BUILD_USER, name
        assert effective(pod, container, "runAsNonRoot") is True, name


@golden_jobs
def test_only_the_build_container_is_unconfined(path: Path) -> None:
    template = pod_template(path)
    pod = template["spec"]
    pod_security = pod.get("securityContext", {})
    # At the Pod level Unconfined would cover every container; RuntimeDefault or nothing is fine.
    assert pod_security.get("seccompProfile", {"type": "RuntimeDefault"}) == {"type": "RuntimeDefault"}
    assert pod_security.get("appArmorProfile", {"type": "RuntimeDefault"}) == {"type": "RuntimeDefault"}
    # The AppArmor field replaced these annotations (Kubernetes 1.30); an old one would override it.
    annotations = template.get("metadata", {}).get("annotations", {})
    assert not [key for key in annotations if key.startswith(APPARMOR_ANNOTATION_PREFIX)]

    build = [container for container in containers(pod) if container["name"] == render.BUILD_CONTAINER]
    assert len(build) == 1
    assert build[0]["securityContext"]["seccompProfile"] == {"type": "Unconfined"}
    assert build[0]["securityContext"]["appArmorProfile"] == {"type": "Unconfined"}

    for container in containers(pod):
        if container["name"] == render.BUILD_CONTAINER:
            continue
        assert effective(pod, container, "seccompProfile") == {"type": "RuntimeDefault"}, container["name"]
        # Unset means the runtime's default profile where the node has AppArmor; an explicit RuntimeDefault
        # would make the kubelet reject the Pod on nodes without it.
        assert effective(pod, container, "appArmorProfile") in (None, {"type": "RuntimeDefault"})


@golden_jobs
def test_no_container_gets_more_privilege_than_rootless_buildkit_needs(path: Path) -> None:
    pod = pod_template(path)["spec"]
    for container in containers(pod):
        security = container.get("securityContext", {})
        name = container["name"]
        assert security.get("privileged", False) is False, name
        assert "add" not in security.get("capabilities", {}), name
        assert security.get("procMount", "Default") == "Default", name
        if name == render.BUILD_CONTAINER:
            continue
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        assert security["readOnlyRootFilesystem"] is True, name


@golden_jobs
def test_init_containers_drop_every_capability(path: Path) -> None:
    pod = pod_template(path)["spec"]
    for container in pod.get("initContainers", []):
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}, container["name"]


def test_configmap_sources_have_the_init_container_the_capability_test_covers() -> None:
    # Without this, a renderer that dropped the init container would pass the test above vacuously.
    pod = pod_template(GOLDEN / "minimal.yaml")["spec"]
    assert [container["name"] for container in pod["initContainers"]] == [render.CONTEXT_CONTAINER]


@golden_jobs
def test_nothing_of_the_node_reaches_the_pod(path: Path) -> None:
    pod = pod_template(path)["spec"]
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert pod.get(field, False) is False, field
    for container in containers(pod):
        assert not [port for port in container.get("ports", []) if "hostPort" in port], container["name"]
    for volume in pod["volumes"]:
        (volume_type,) = set(volume) - {"name"}
        assert volume_type in SAFE_VOLUME_TYPES, volume
        for source in volume.get("projected", {}).get("sources", []):
            assert set(source) <= SAFE_PROJECTED_SOURCES, volume["name"]
