"""We test these aspects:

- each case renders exactly its golden Job (`tests/unit/golden/<case>.yaml`; `UPDATE_GOLDEN=1` rewrites them):
  ConfigMap contexts (keys or an archive), git over HTTPS with a token and over SSH, build secrets,
  platforms, tags, cache import refs and every scheduling option;
- every rendered Job is a valid batch/v1 Job in strict mode (unknown fields fail) for Kubernetes 1.30,
  the first with `appArmorProfile`, and the newest schema kubernetes-validate ships;
- the key facts, asserted directly: the buildctl arguments (cache flags with `ignore-error=true`,
  `registry.insecure=true` per registry, build args only as `--opt build-arg:K=V`, the git context pinned
  to the resolved commit with the host-scoped `GIT_AUTH_TOKEN.<host>` or the `default` SSH key, the OCI
  source label without user information, one `--secret` per build secret, platforms as one option, all
  tags in one CSV-quoted `--output` name, one `--import-cache` per import ref), the deadline, no service
  account token even with a ServiceAccount, the name length, the owner reference, the commit and context
  digest on the Job, the Kueue label on the Job only and never `suspend`, the `cp -L` or `tar` init
  container, Secrets mounted by name and key only, and rendering being pure (equal results, nothing
  shared between them);
- a canary: no Secret value can reach the Job (the renderer gets names and keys only);
- `expand_tags` as a table, and its errors (a commit it needs, tags over 128 characters);
- the init container's copy and unpack, run for real: real files, dotfiles included, none of the
  volume's `..data` internals; an archive's folders unpacked by busybox tar, readable, nothing outside
  the workspace; a broken archive fails;
- the wrapper script, run for real by sh (dash) and busybox sh against a fake `buildctl-daemonless.sh`: it
  passes the arguments through untouched, writes a report that `parse_report` reads on success
  (`cacheExported` true, false, or null with the cache disabled; every pushed reference; within 4096
  bytes however long), and on failure writes nothing and keeps the exit code.
"""

import copy
import csv
import dataclasses
import inspect
import io
import itertools
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from servicebuild import naming
from servicebuild.api.models import ServiceBuild
from servicebuild.config import Settings
from servicebuild.render import job as render
from servicebuild.render.job import BuildInputs, GitAuth, buildctl_args, expand_tags, render_job
from servicebuild.report import MAX_MESSAGE_BYTES, BuildReport, parse_report

GOLDEN = Path(__file__).parent / "golden"
UID = "6f1c2a9e-3b7d-4e58-9a0c-2d4b8e7f1a35"
IMAGE = "registry.example.com/shop/checkout:1.4.2"
TIMESTAMP = "20261128101500"
INPUTS = BuildInputs(timestamp=TIMESTAMP)
COMMIT = "9fceb02d0ae598e95dc970b74767f19372d61af8"
CONTEXT_DIGEST = "sha256:" + "5e1f0c3a9b7d2e48" * 4
GIT_URL = "https://git.example.com/shop/monorepo.git"
SSH_URL = "git@git.example.com:shop/monorepo.git"
KUBERNETES_VERSIONS = ["1.30", kubernetes_validate.latest_version()]


def settings(*insecure: str) -> Settings:
    return Settings(
        buildkit_image="moby/buildkit:v0.32.2-rootless",
        insecure_registries=frozenset(insecure),
        job_ttl_seconds=3600,
    )


def servicebuild(name: str = "checkout", generation: int = 3, **spec: Any) -> ServiceBuild:
    spec.setdefault("source", {"configMap": {"name": "checkout-context"}})
    spec.setdefault("output", {"image": IMAGE})
    return ServiceBuild.model_validate(
        {
            "apiVersion": "servicebuild.dev/v1alpha1",
            "kind": "ServiceBuild",
            "metadata": {"name": name, "namespace": "shop", "uid": UID, "generation": generation},
            "spec": spec,
        },
    )


CASES: dict[str, tuple[ServiceBuild, Settings, BuildInputs]] = {
    "minimal": (servicebuild(), settings(), INPUTS),
    "build-args-target-dockerfile": (
        servicebuild(
            dockerfile="Dockerfile.release",
            target="runtime",
            buildArgs={"VERSION": "1.4.2", "GO_VERSION": "1.23", "LDFLAGS": "-s -w"},
            timeout="1h30m",
        ),
        settings(),
        INPUTS,
    ),
    "push-secret": (servicebuild(output={"image": IMAGE, "pushSecret": "registry-push"}), settings(), INPUTS),
    "cache-disabled": (servicebuild(cache={"disabled": True}), settings(), INPUTS),
    "insecure-registry": (
        servicebuild(output={"image": "registry.local:5000/shop/checkout:dev"}),
        settings("registry.local:5000"),
        INPUTS,
    ),
    "cache-min-explicit-ref": (
        servicebuild(cache={"mode": "min", "ref": "registry.example.com/shop/cache:checkout"}),
        settings(),
        INPUTS,
    ),
    "git-token": (
        servicebuild(
            source={
                "git": {
                    "url": GIT_URL,
                    "revision": "main",
                    "contextDir": "services/checkout",
                    "authSecret": "git-creds",
                },
            },
            dockerfile="build/Dockerfile",
            output={"image": IMAGE, "pushSecret": "registry-push"},
        ),
        settings(),
        BuildInputs(timestamp=TIMESTAMP, commit=COMMIT, git_auth="token"),
    ),
    "git-ssh": (
        servicebuild(source={"git": {"url": SSH_URL, "revision": "v1.4.2", "authSecret": "git-deploy-key"}}),
        settings(),
        BuildInputs(timestamp=TIMESTAMP, commit=COMMIT, git_auth="ssh"),
    ),
    "configmap-archive": (
        servicebuild(source={"configMap": {"name": "checkout-context", "archive": "context.tar.gz"}}),
        settings(),
        BuildInputs(timestamp=TIMESTAMP, context_digest=CONTEXT_DIGEST),
    ),
    "build-secrets": (
        servicebuild(
            secrets=[
                {"id": "npmrc", "secretRef": {"name": "npm-credentials", "key": ".npmrc"}},
                {"id": "sentry_token", "secretRef": {"name": "sentry", "key": "auth-token"}},
            ],
        ),
        settings(),
        BuildInputs(timestamp=TIMESTAMP, context_digest=CONTEXT_DIGEST),
    ),
    "multi-arch": (
        servicebuild(platforms=["linux/amd64", "linux/arm64"]),
        settings(),
        BuildInputs(timestamp=TIMESTAMP, context_digest=CONTEXT_DIGEST),
    ),
    "tags": (
        servicebuild(
            source={"git": {"url": GIT_URL, "revision": "main"}},
            output={
                "image": IMAGE,
                "tags": ["{shortCommit}", "main-{timestamp}", "build-{generation}", "latest"],
            },
        ),
        settings(),
        BuildInputs(timestamp=TIMESTAMP, commit=COMMIT),
    ),
    "cache-import-refs": (
        servicebuild(
            cache={
                "importRefs": [
                    "registry.example.com/shop/checkout:buildcache-main",
                    "registry.local:5000/shop/checkout:buildcache",
                ],
            },
        ),
        settings("registry.local:5000"),
        BuildInputs(timestamp=TIMESTAMP, context_digest=CONTEXT_DIGEST),
    ),
    "scheduling": (
        servicebuild(
            resources={
                "requests": {"cpu": "2", "memory": "4Gi"},
                "limits": {"memory": "8Gi", "ephemeral-storage": "20Gi"},
            },
            nodeSelector={"kubernetes.io/arch": "arm64", "node.example.com/pool": "builds"},
            tolerations=[
                {"key": "dedicated", "operator": "Equal", "value": "builds", "effect": "NoSchedule"},
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
            affinity={
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 50,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {
                                    "matchLabels": {"app.kubernetes.io/managed-by": "servicebuild-operator"}
                                },
                            },
                        },
                    ],
                },
            },
            serviceAccountName="builder",
            priorityClassName="batch-low",
            queueName="team-shop",
            builderImage="registry.example.com/mirror/buildkit:v0.32.2-rootless",
            pendingTimeout="5m",
        ),
        settings(),
        BuildInputs(timestamp=TIMESTAMP, context_digest=CONTEXT_DIGEST),
    ),
}


def build_container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["name"] == render.BUILD_CONTAINER
    return container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def flag_values(args: list[str], flag: str) -> list[str]:
    return [value for name, value in itertools.pairwise(args) if name == flag]


def _shells() -> list[Any]:
    # `sh` as the Job calls it (dash on Debian) and busybox's, the shell of the Alpine BuildKit image;
    # .ci/run installs busybox, so a missing one fails the test.
    return [pytest.param(["sh"], id="sh"), pytest.param(["busybox", "sh"], id="busybox")]


# Golden files


class _GoldenDumper(yaml.SafeDumper):
    """Multi-line strings (the wrapper script) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_GoldenDumper.add_representer(str, _represent_str)


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    job = render_job(*CASES[case])
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        header = f"# The Job rendered for case {case!r} of tests/unit/test_render_job.py; see README.md.\n"
        path.write_text(header + yaml.dump(job, Dumper=_GoldenDumper, sort_keys=False, width=120))
    assert path.exists(), f"{path} is missing: run UPDATE_GOLDEN=1 pytest tests/unit/test_render_job.py"
    assert job == yaml.safe_load(path.read_text())


def test_every_golden_file_has_a_case() -> None:
    assert {path.stem for path in GOLDEN.glob("*.yaml")} == set(CASES)


# Kubernetes schema


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_valid_kubernetes_job(case: str, version: str) -> None:
    kubernetes_validate.validate(render_job(*CASES[case]), version, strict=True)


def test_strict_validation_rejects_unknown_fields() -> None:
    job = render_job(*CASES["minimal"])
    build_container(job)["buildkitFlags"] = "--debug"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSIONS[-1], strict=True)


# The buildctl arguments


def test_buildctl_arguments_of_a_minimal_build() -> None:
    build, config, inputs = CASES["minimal"]
    assert buildctl_args(build.spec, config, inputs, generation=3) == [
        "build",
        "--progress=plain",
        "--frontend",
        "dockerfile.v0",
        "--local",
        "context=/workspace",
        "--local",
        "dockerfile=/workspace",
        "--opt",
        "filename=Dockerfile",
        "--output",
        f"type=image,name={IMAGE},push=true",
        "--export-cache",
        (
            "type=registry,ref=registry.example.com/shop/checkout:buildcache,mode=max,"
            "image-manifest=true,oci-mediatypes=true,ignore-error=true"
        ),
        "--import-cache",
        "type=registry,ref=registry.example.com/shop/checkout:buildcache",
        "--metadata-file",
        render.METADATA_FILE,
        "--debug-json-cache-metrics",
        render.CACHE_METRICS_FILE,
    ]


def test_cache_flags_follow_mode_and_ref() -> None:
    build, config, inputs = CASES["cache-min-explicit-ref"]
    args = buildctl_args(build.spec, config, inputs, generation=3)
    (export,) = flag_values(args, "--export-cache")
    (imported,) = flag_values(args, "--import-cache")
    assert export.split(",") == [
        "type=registry",
        "ref=registry.example.com/shop/cache:checkout",
        "mode=min",
        "image-manifest=true",
        "oci-mediatypes=true",
        "ignore-error=true",
    ]
    assert imported == "type=registry,ref=registry.example.com/shop/cache:checkout"


def test_no_cache_flags_when_disabled() -> None:
    build, config, inputs = CASES["cache-disabled"]
    args = buildctl_args(build.spec, config, inputs, generation=3)
    assert not flag_values(args, "--export-cache")
    assert not flag_values(args, "--import-cache")
    assert flag_values(args, "--output") == [f"type=image,name={IMAGE},push=true"]


@pytest.mark.parametrize(
    ("insecure", "output_insecure", "cache_insecure"),
    [
        pytest.param((), False, False, id="none"),
        pytest.param(("registry.local:5000",), True, False, id="output registry only"),
        pytest.param(("cache.local",), False, True, id="cache registry only"),
        pytest.param(("registry.local:5000", "cache.local"), True, True, id="both"),
        pytest.param(("registry.local",), False, False, id="host without the port does not match"),
    ],
)
def test_insecure_is_decided_per_registry(
    insecure: tuple[str, ...], *, output_insecure: bool, cache_insecure: bool
) -> None:
    build = servicebuild(
        output={"image": "registry.local:5000/shop/checkout:dev"},
        cache={"ref": "cache.local/shop/checkout:buildcache"},
    )
    args = buildctl_args(build.spec, settings(*insecure), INPUTS, generation=3)
    (output,) = flag_values(args, "--output")
    (export,) = flag_values(args, "--export-cache")
    (imported,) = flag_values(args, "--import-cache")
    assert output.endswith(",registry.insecure=true") is output_insecure
    assert export.endswith(",registry.insecure=true") is cache_insecure
    assert imported.endswith(",registry.insecure=true") is cache_insecure


def test_image_names_are_normalised() -> None:
    build = servicebuild(output={"image": "checkout"})
    args = buildctl_args(build.spec, settings(), INPUTS, generation=3)
    assert flag_values(args, "--output") == ["type=image,name=docker.io/library/checkout:latest,push=true"]
    assert "ref=docker.io/library/checkout:buildcache" in flag_values(args, "--import-cache")[0].split(",")


def test_dockerfile_path_and_target_are_frontend_options() -> None:
    build = servicebuild(dockerfile="docker/Dockerfile", target="runtime")
    opts = flag_values(buildctl_args(build.spec, settings(), INPUTS, generation=3), "--opt")
    assert opts == ["filename=docker/Dockerfile", "target=runtime"]


HOSTILE = "$(touch pwned); `touch pwned` \"q\" 'q' \\ | & * ?\nsecond line, with comma"


def test_build_args_are_sorted_options_and_never_shell_text() -> None:
    build = servicebuild(buildArgs={"VERSION": "1.4.2", "MOTD": HOSTILE, "A_FIRST": ""})
    job = render_job(build, settings(), INPUTS)
    container = build_container(job)
    assert flag_values(container["args"], "--opt") == [
        "filename=Dockerfile",
        "build-arg:A_FIRST=",
        f"build-arg:MOTD={HOSTILE}",
        "build-arg:VERSION=1.4.2",
    ]
    assert container["command"] == ["sh", "-c", render.WRAPPER_SCRIPT, render.WRAPPER_NAME]
    shell_text = " ".join(container["command"])
    for fragment in ("VERSION", "1.4.2", "MOTD", "pwned", "registry.example.com"):
        assert fragment not in shell_text


# The Job


def test_deadline_retries_and_ttl() -> None:
    build, config, inputs = CASES["build-args-target-dockerfile"]
    spec = render_job(build, config, inputs)["spec"]
    assert spec["activeDeadlineSeconds"] == 5400 == build.spec.timeout_seconds
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == config.job_ttl_seconds
    assert "suspend" not in spec


def test_no_service_account_token_or_service_links() -> None:
    pod = render_job(*CASES["minimal"])["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["restartPolicy"] == "Never"
    assert "serviceAccountName" not in pod


def test_identity_labels_annotation_and_owner() -> None:
    job = render_job(*CASES["minimal"])
    meta = job["metadata"]
    assert meta["name"] == naming.job_name("checkout", UID, 3)
    assert meta["namespace"] == "shop"
    assert meta["labels"] == job["spec"]["template"]["metadata"]["labels"] == naming.job_labels(UID, 3)
    assert meta["annotations"] == {naming.ANNOTATION_SERVICEBUILD: "checkout"}
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "servicebuild.dev/v1alpha1",
            "kind": "ServiceBuild",
            "name": "checkout",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        },
    ]


def test_long_names_fit_in_63_characters() -> None:
    name = "a" + "-b" * 126  # 253 characters, the longest object name
    job = render_job(servicebuild(name=name, generation=123456789), settings(), INPUTS)
    assert len(job["metadata"]["name"]) <= 63
    assert job["metadata"]["annotations"][naming.ANNOTATION_SERVICEBUILD] == name
    assert job["metadata"]["ownerReferences"][0]["name"] == name
    kubernetes_validate.validate(job, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_context_is_copied_with_cp_dereferencing_symlinks() -> None:
    pod = render_job(*CASES["minimal"])["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    script = init["command"][-1]
    assert init["command"][:2] == ["sh", "-c"]
    assert 'cp -L "$f" /workspace/' in script
    assert "/configmap/*" in script
    assert init["image"] == build_container({"spec": {"template": {"spec": pod}}})["image"]
    assert {"name": "configmap", "configMap": {"name": "checkout-context"}} in pod["volumes"]
    security = init["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}


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


def test_the_build_container_is_rootless_and_reads_the_workspace_only() -> None:
    container = build_container(render_job(*CASES["minimal"]))
    assert container["image"] == "moby/buildkit:v0.32.2-rootless"
    assert container["securityContext"] == {
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "Unconfined"},
        "appArmorProfile": {"type": "Unconfined"},
    }
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert mounts["/workspace"].get("readOnly") is True
    assert "readOnly" not in mounts["/home/user/.local/share/buildkit"]
    assert env_of(container)["BUILDKITD_FLAGS"] == "--oci-worker-no-process-sandbox"


def test_the_wrapper_paths_match_the_buildctl_arguments() -> None:
    container = build_container(render_job(*CASES["minimal"]))
    env = env_of(container)
    assert flag_values(container["args"], "--metadata-file") == [env[render.ENV_METADATA_FILE]]
    assert flag_values(container["args"], "--debug-json-cache-metrics") == [
        env[render.ENV_CACHE_METRICS_FILE]
    ]
    assert env[render.ENV_REPORT_FILE] == container["terminationMessagePath"] == "/dev/termination-log"
    for name in (render.ENV_METADATA_FILE, render.ENV_CACHE_METRICS_FILE, render.ENV_REPORT_FILE):
        assert f'"${name}"' in render.WRAPPER_SCRIPT


def test_push_secret_is_mounted_by_name_only() -> None:
    pod = render_job(*CASES["push-secret"])["spec"]["template"]["spec"]
    container = build_container({"spec": {"template": {"spec": pod}}})
    assert {
        "name": "docker-config",
        "secret": {
            "secretName": "registry-push",
            "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
        },
    } in pod["volumes"]
    assert {"name": "docker-config", "mountPath": "/home/user/.docker", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert env_of(container)["DOCKER_CONFIG"] == "/home/user/.docker"


def test_without_push_secret_there_is_no_docker_config() -> None:
    pod = render_job(*CASES["minimal"])["spec"]["template"]["spec"]
    container = build_container({"spec": {"template": {"spec": pod}}})
    assert "docker-config" not in {volume["name"] for volume in pod["volumes"]}
    assert "DOCKER_CONFIG" not in env_of(container)


def test_rendering_is_pure() -> None:
    build, config, inputs = CASES["push-secret"]
    first = render_job(build, config, inputs)
    pristine = copy.deepcopy(first)
    build_container(first)["resources"]["limits"]["memory"] = "1Ti"
    first["metadata"]["labels"]["changed"] = "yes"
    second = render_job(build, config, inputs)
    assert second == pristine
    assert "changed" not in second["spec"]["template"]["metadata"]["labels"]


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
    assert parse_report(message) == BuildReport(
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
    assert json.loads(message)["cacheMetrics"] is None
    assert parse_report(message) == BuildReport(
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


# Git sources


def git_build(**git: Any) -> ServiceBuild:
    git.setdefault("url", GIT_URL)
    return servicebuild(source={"git": git})


def test_a_git_build_has_no_init_container_and_no_workspace() -> None:
    job = render_job(*CASES["git-token"])
    pod = job["spec"]["template"]["spec"]
    container = build_container(job)
    assert "initContainers" not in pod
    assert {volume["name"] for volume in pod["volumes"]} == {"buildkitd", "docker-config", "git-auth"}
    assert "/workspace" not in {mount["mountPath"] for mount in container["volumeMounts"]}
    assert not flag_values(container["args"], "--local")


def test_a_git_build_fetches_the_resolved_commit_with_the_token() -> None:
    args = build_container(render_job(*CASES["git-token"]))["args"]
    assert flag_values(args, "--opt") == [
        f"context={GIT_URL}#{COMMIT}:services/checkout",
        "filename=build/Dockerfile",
        f"label:org.opencontainers.image.source={GIT_URL}",
        f"label:org.opencontainers.image.revision={COMMIT}",
    ]
    assert flag_values(args, "--secret") == ["id=GIT_AUTH_TOKEN.git.example.com,src=/run/secrets/git/token"]
    assert not flag_values(args, "--ssh")


@pytest.mark.parametrize(
    ("git", "commit", "context"),
    [
        pytest.param({"revision": "main"}, COMMIT, f"{GIT_URL}#{COMMIT}", id="the resolved commit wins"),
        pytest.param({"revision": "main"}, None, f"{GIT_URL}#main", id="unresolved: the revision"),
        pytest.param({"contextDir": "svc/a"}, None, f"{GIT_URL}#:svc/a", id="default branch, a folder"),
        pytest.param({}, None, GIT_URL, id="default branch, the root"),
        pytest.param({"url": GIT_URL + "/"}, None, GIT_URL, id="trailing slash dropped"),
        pytest.param(
            {"url": "ssh://git@git.example.com:2222/shop/monorepo.git", "contextDir": "svc"},
            COMMIT,
            f"ssh://git@git.example.com:2222/shop/monorepo.git#{COMMIT}:svc",
            id="ssh URL kept as given",
        ),
    ],
)
def test_git_context_reference(git: dict[str, str], commit: str | None, context: str) -> None:
    inputs = BuildInputs(timestamp=TIMESTAMP, commit=commit)
    opts = flag_values(buildctl_args(git_build(**git).spec, settings(), inputs, generation=3), "--opt")
    assert opts[0] == f"context={context}"
    revisions = [opt for opt in opts if opt.startswith("label:org.opencontainers.image.revision=")]
    assert revisions == ([f"label:org.opencontainers.image.revision={commit}"] if commit else [])


@pytest.mark.parametrize(
    ("url", "source"),
    [
        pytest.param(GIT_URL, GIT_URL, id="https"),
        pytest.param(GIT_URL + "/", GIT_URL, id="https with trailing slash"),
        pytest.param(
            "ssh://deploy:hunter2@git.example.com:2222/shop/r.git",
            "ssh://git.example.com:2222/shop/r.git",
            id="ssh",
        ),
        pytest.param(
            "git://git.example.com/shop/r.git", "git://git.example.com/shop/r.git", id="git protocol"
        ),
        pytest.param(SSH_URL, "ssh://git.example.com/shop/monorepo.git", id="scp-style"),
    ],
)
def test_the_source_label_carries_no_user_information(url: str, source: str) -> None:
    opts = flag_values(buildctl_args(git_build(url=url).spec, settings(), INPUTS, generation=3), "--opt")
    assert f"label:org.opencontainers.image.source={source}" in opts
    assert "hunter2" not in " ".join(opt for opt in opts if opt.startswith("label:"))


@pytest.mark.parametrize(
    ("url", "host"),
    [
        pytest.param(GIT_URL, "git.example.com", id="host"),
        pytest.param("https://git.example.com:8443/shop/r.git", "git.example.com:8443", id="host with port"),
        pytest.param("http://10.0.0.7:3000/shop/r.git", "10.0.0.7:3000", id="plain HTTP"),
    ],
)
def test_the_token_secret_is_scoped_to_the_repository_host(url: str, host: str) -> None:
    inputs = BuildInputs(timestamp=TIMESTAMP, commit=COMMIT, git_auth="password")
    build = git_build(url=url, authSecret="git-creds")
    args = buildctl_args(build.spec, settings(), inputs, generation=3)
    assert flag_values(args, "--secret") == [f"id=GIT_AUTH_TOKEN.{host},src=/run/secrets/git/password"]
    pod = render_job(build, settings(), inputs)["spec"]["template"]["spec"]
    assert {
        "name": "git-auth",
        "secret": {"secretName": "git-creds", "items": [{"key": "password", "path": "password"}]},
    } in pod["volumes"]


def test_a_git_ssh_build_forwards_only_the_private_key() -> None:
    job = render_job(*CASES["git-ssh"])
    pod = job["spec"]["template"]["spec"]
    container = build_container(job)
    assert flag_values(container["args"], "--ssh") == ["default=/run/secrets/git/ssh-privatekey"]
    assert not flag_values(container["args"], "--secret")
    # Only the key is mounted: a known_hosts key of the Secret is ignored, as BuildKit takes none for a
    # context given by --opt context.
    assert {
        "name": "git-auth",
        "secret": {
            "secretName": "git-deploy-key",
            "items": [{"key": "ssh-privatekey", "path": "ssh-privatekey"}],
        },
    } in pod["volumes"]
    assert {"name": "git-auth", "mountPath": "/run/secrets/git", "readOnly": True} in container[
        "volumeMounts"
    ]


def test_a_public_git_build_mounts_no_auth() -> None:
    job = render_job(*CASES["tags"])
    assert [volume["name"] for volume in job["spec"]["template"]["spec"]["volumes"]] == ["buildkitd"]
    assert not flag_values(build_container(job)["args"], "--secret")


def test_the_commit_and_the_context_digest_are_recorded_on_the_job() -> None:
    git_job = render_job(*CASES["git-token"])
    assert git_job["metadata"]["annotations"][naming.ANNOTATION_COMMIT] == COMMIT
    assert naming.LABEL_SOURCE not in git_job["metadata"]["labels"]
    archive_job = render_job(*CASES["configmap-archive"])
    assert archive_job["metadata"]["annotations"][naming.ANNOTATION_CONTEXT_DIGEST] == CONTEXT_DIGEST
    assert archive_job["metadata"]["labels"][naming.LABEL_SOURCE] == CONTEXT_DIGEST[7:19] == "5e1f0c3a9b7d"
    assert archive_job["spec"]["template"]["metadata"]["labels"][naming.LABEL_SOURCE] == "5e1f0c3a9b7d"


def test_a_configmap_change_makes_a_visibly_different_job() -> None:
    build = servicebuild()
    jobs = [
        render_job(build, settings(), BuildInputs(timestamp=TIMESTAMP, context_digest="sha256:" + digit * 64))
        for digit in "ab"
    ]
    assert jobs[0]["metadata"]["name"] != jobs[1]["metadata"]["name"]
    assert jobs[0]["metadata"]["labels"][naming.LABEL_SOURCE] == "a" * 12
    assert jobs[1]["metadata"]["labels"][naming.LABEL_SOURCE] == "b" * 12
    assert jobs[0]["metadata"]["name"] == naming.job_name("checkout", UID, 3, "sha256:" + "a" * 64)


# ConfigMap archives


def test_an_archive_is_unpacked_instead_of_copying_keys() -> None:
    pod = render_job(*CASES["configmap-archive"])["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"] == [
        "sh",
        "-c",
        render.EXTRACT_ARCHIVE_SCRIPT,
        "extract-context",
        "/configmap/context.tar.gz",
    ]
    assert render.EXTRACT_ARCHIVE_SCRIPT.startswith('set -e; tar -xzf "$1" -C /workspace; ')
    assert {
        "name": "configmap",
        "configMap": {
            "name": "checkout-context",
            "items": [{"key": "context.tar.gz", "path": "context.tar.gz"}],
        },
    } in pod["volumes"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True


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


# Build secrets


def test_build_secrets_are_projected_by_name_and_key() -> None:
    job = render_job(*CASES["build-secrets"])
    pod = job["spec"]["template"]["spec"]
    container = build_container(job)
    assert {
        "name": "build-secrets",
        "projected": {
            "sources": [
                {"secret": {"name": "npm-credentials", "items": [{"key": ".npmrc", "path": "npmrc"}]}},
                {"secret": {"name": "sentry", "items": [{"key": "auth-token", "path": "sentry_token"}]}},
            ],
        },
    } in pod["volumes"]
    assert {"name": "build-secrets", "mountPath": "/run/secrets/build", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert flag_values(container["args"], "--secret") == [
        "id=npmrc,src=/run/secrets/build/npmrc",
        "id=sentry_token,src=/run/secrets/build/sentry_token",
    ]


# What the Secrets hold, as the API server would return it: the renderer is never given any of it.
SECRET_VALUES = {
    "npm-credentials": {".npmrc": "//registry.npmjs.org/:_authToken=npm_CANARY0b1d7e4c"},
    "sentry": {"auth-token": "sntrys_CANARY9a8f7e6d"},
    "git-creds": {"token": "ghp_CANARY5c4b3a29", "username": "ci-bot-canary"},
    "git-deploy-key": {"ssh-privatekey": "-----BEGIN OPENSSH PRIVATE KEY-----\nCANARYb3BlbnNzaC1rZXk\n"},
    "registry-push": {".dockerconfigjson": '{"auths":{"registry.example.com":{"auth":"Q0FOQVJZOnB3"}}}'},
}


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [*value.keys(), *(text for item in value.values() for text in _strings(item))]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("git_auth", ["token", "ssh"])
def test_canary_no_secret_value_can_reach_the_job(git_auth: GitAuth) -> None:
    # The renderer's inputs name Secrets and keys only: the ServiceBuild, the operator Settings and
    # BuildInputs (a timestamp, a commit, a digest, which key to use, an attempt number). So nothing
    # it renders can hold a value; the canaries prove it for this Job as a whole.
    assert list(inspect.signature(render_job).parameters) == ["build", "settings", "inputs"]
    assert {field.name for field in dataclasses.fields(BuildInputs)} == {
        "timestamp",
        "commit",
        "context_digest",
        "git_auth",
        "attempt",
    }
    build = servicebuild(
        source={"git": {"url": GIT_URL if git_auth == "token" else SSH_URL, "authSecret": f"git-{git_auth}"}},
        output={"image": IMAGE, "pushSecret": "registry-push"},
        secrets=[
            {"id": "npmrc", "secretRef": {"name": "npm-credentials", "key": ".npmrc"}},
            {"id": "sentry", "secretRef": {"name": "sentry", "key": "auth-token"}},
        ],
    )
    inputs = BuildInputs(timestamp=TIMESTAMP, commit=COMMIT, git_auth=git_auth)
    job = render_job(build, settings(), inputs)
    text = json.dumps(job)
    for data in SECRET_VALUES.values():
        for value in data.values():
            assert value not in text
    assert "CANARY" not in text
    kubernetes_validate.validate(job, KUBERNETES_VERSIONS[-1], strict=True)
    # Where the Job touches a Secret, it holds exactly a name and keys.
    pod = job["spec"]["template"]["spec"]
    secret_volumes = [volume for volume in pod["volumes"] if "secret" in volume or "projected" in volume]
    references = [volume["secret"] for volume in secret_volumes if "secret" in volume] + [
        source["secret"]
        for volume in secret_volumes
        if "projected" in volume
        for source in volume["projected"]["sources"]
    ]
    assert len(references) == 4
    for reference in references:
        assert set(reference) in ({"secretName", "items"}, {"name", "items"})
        for item in reference["items"]:
            assert set(item) == {"key", "path"}


# Platforms, tags and caches


def test_platforms_are_one_frontend_option() -> None:
    args = build_container(render_job(*CASES["multi-arch"]))["args"]
    assert "platform=linux/amd64,linux/arm64" in flag_values(args, "--opt")
    assert "--platform" not in args


def test_every_tag_goes_into_one_quoted_output_name() -> None:
    build, config, inputs = CASES["tags"]
    (output,) = flag_values(buildctl_args(build.spec, config, inputs, generation=3), "--output")
    repository = "registry.example.com/shop/checkout"
    references = [
        f"{repository}:{tag}" for tag in ("1.4.2", COMMIT[:12], f"main-{TIMESTAMP}", "build-3", "latest")
    ]
    assert output == f'type=image,"name={",".join(references)}",push=true'
    # buildctl reads --output as one CSV record (encoding/csv or go-csvvalue): the quotes keep the list whole.
    (fields,) = csv.reader([output])
    assert fields == ["type=image", f"name={','.join(references)}", "push=true"]
    assert references == expand_tags(build.spec, inputs, 3)


def test_tags_on_an_insecure_registry() -> None:
    build = servicebuild(output={"image": "registry.local:5000/shop/checkout:dev", "tags": ["g{generation}"]})
    (output,) = flag_values(
        buildctl_args(build.spec, settings("registry.local:5000"), INPUTS, generation=7), "--output"
    )
    assert output == (
        'type=image,"name=registry.local:5000/shop/checkout:dev,registry.local:5000/shop/checkout:g7",'
        "push=true,registry.insecure=true"
    )


@pytest.mark.parametrize(
    ("image", "tags", "commit", "expected"),
    [
        pytest.param(IMAGE, [], None, [IMAGE], id="no tags: the image"),
        pytest.param("checkout", [], None, ["docker.io/library/checkout:latest"], id="normalised"),
        pytest.param(
            IMAGE,
            ["{commit}", "{shortCommit}"],
            COMMIT,
            [
                IMAGE,
                f"registry.example.com/shop/checkout:{COMMIT}",
                f"registry.example.com/shop/checkout:{COMMIT[:12]}",
            ],
            id="commit and short commit",
        ),
        pytest.param(
            IMAGE,
            ["{generation}", "{timestamp}", "v{generation}-{timestamp}"],
            None,
            [
                IMAGE,
                "registry.example.com/shop/checkout:12",
                f"registry.example.com/shop/checkout:{TIMESTAMP}",
                f"registry.example.com/shop/checkout:v12-{TIMESTAMP}",
            ],
            id="generation and timestamp",
        ),
        pytest.param(
            IMAGE,
            ["1.4.2", "stable"],
            None,
            [IMAGE, "registry.example.com/shop/checkout:stable"],
            id="deduplicated",
        ),
        pytest.param(
            "registry.example.com/shop/checkout",
            ["sha-{shortCommit}_{generation}.{timestamp}"],
            COMMIT,
            [
                "registry.example.com/shop/checkout:latest",
                f"registry.example.com/shop/checkout:sha-{COMMIT[:12]}_12.{TIMESTAMP}",
            ],
            id="mixed, default tag",
        ),
    ],
)
def test_expand_tags(image: str, tags: list[str], commit: str | None, expected: list[str]) -> None:
    source = {"git": {"url": GIT_URL}} if commit else {"configMap": {"name": "checkout-context"}}
    spec = servicebuild(source=source, output={"image": image, "tags": tags}).spec
    assert expand_tags(spec, BuildInputs(timestamp=TIMESTAMP, commit=commit), 12) == expected


def tagged(*tags: str) -> ServiceBuild:
    return servicebuild(source={"git": {"url": GIT_URL}}, output={"image": IMAGE, "tags": list(tags)})


def test_expand_tags_needs_the_commit_it_names() -> None:
    spec = tagged("ok", "c-{shortCommit}").spec
    with pytest.raises(
        ValueError, match=r"spec\.output\.tags\[1\]: 'c-\{shortCommit\}' needs the resolved git commit"
    ):
        expand_tags(spec, INPUTS, 3)


def test_expand_tags_allows_exactly_128_characters() -> None:
    longest = "x" * 88 + "{commit}"  # 96 characters that expand to 128
    references = expand_tags(tagged(longest).spec, BuildInputs(timestamp=TIMESTAMP, commit=COMMIT), 3)
    assert references[1] == f"registry.example.com/shop/checkout:{'x' * 88}{COMMIT}"
    assert len(references[1].rsplit(":", 1)[1]) == 128


def test_expand_tags_rejects_tags_longer_than_128_characters() -> None:
    spec = tagged("ok", "{commit}" * 4).spec  # 32 characters that expand to 160
    with pytest.raises(ValueError, match=r"spec\.output\.tags\[1\]: .* expands to 160 characters"):
        expand_tags(spec, BuildInputs(timestamp=TIMESTAMP, commit=COMMIT), 3)


def test_cache_import_refs_are_extra_imports_each_with_its_own_registry() -> None:
    args = build_container(render_job(*CASES["cache-import-refs"]))["args"]
    assert flag_values(args, "--import-cache") == [
        "type=registry,ref=registry.example.com/shop/checkout:buildcache",
        "type=registry,ref=registry.example.com/shop/checkout:buildcache-main",
        "type=registry,ref=registry.local:5000/shop/checkout:buildcache,registry.insecure=true",
    ]
    assert len(flag_values(args, "--export-cache")) == 1  # import refs are never written


def test_cache_import_refs_are_deduplicated_and_off_with_the_cache() -> None:
    refs = ["registry.example.com/shop/checkout:buildcache", "registry.example.com/shop/checkout:main"]
    build = servicebuild(cache={"importRefs": refs})
    assert flag_values(buildctl_args(build.spec, settings(), INPUTS, generation=3), "--import-cache") == [
        "type=registry,ref=registry.example.com/shop/checkout:buildcache",
        "type=registry,ref=registry.example.com/shop/checkout:main",
    ]
    disabled = servicebuild(cache={"disabled": True, "importRefs": refs})
    assert not flag_values(buildctl_args(disabled.spec, settings(), INPUTS, generation=3), "--import-cache")


# Scheduling


def test_scheduling_fields_are_passed_through() -> None:
    build, config, inputs = CASES["scheduling"]
    job = render_job(build, config, inputs)
    pod = job["spec"]["template"]["spec"]
    container = build_container(job)
    assert pod["serviceAccountName"] == "builder"
    assert pod["automountServiceAccountToken"] is False  # a chosen ServiceAccount still gets no token
    assert pod["priorityClassName"] == "batch-low"
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "arm64", "node.example.com/pool": "builds"}
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "builds", "effect": "NoSchedule"},
        {
            "key": "node.kubernetes.io/not-ready",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
    ]
    assert pod["affinity"] == build.spec.affinity
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"memory": "8Gi", "ephemeral-storage": "20Gi"},
    }
    image = "registry.example.com/mirror/buildkit:v0.32.2-rootless"
    assert container["image"] == pod["initContainers"][0]["image"] == image


def test_the_kueue_queue_is_a_job_label_and_the_job_is_never_suspended() -> None:
    job = render_job(*CASES["scheduling"])
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-shop"
    assert "kueue.x-k8s.io/queue-name" not in job["spec"]["template"]["metadata"]["labels"]
    assert "suspend" not in job["spec"]
    unqueued = render_job(*CASES["minimal"])
    assert "kueue.x-k8s.io/queue-name" not in unqueued["metadata"]["labels"]


def test_resources_replace_the_defaults_as_a_whole() -> None:
    only_requests = servicebuild(resources={"requests": {"cpu": 4}})
    container = build_container(render_job(only_requests, settings(), INPUTS))
    assert container["resources"] == {"requests": {"cpu": "4"}}, "a quantity as Kubernetes serialises it"
    defaults = build_container(render_job(*CASES["minimal"]))
    assert defaults["resources"] == render.BUILD_RESOURCES


def test_without_scheduling_options_the_pod_sets_none() -> None:
    pod = render_job(*CASES["minimal"])["spec"]["template"]["spec"]
    for field in ("serviceAccountName", "priorityClassName", "nodeSelector", "tolerations", "affinity"):
        assert field not in pod


# Build inputs


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"timestamp": "2026-11-28T10:15:00Z"}, id="timestamp not compact"),
        pytest.param({"timestamp": TIMESTAMP, "commit": COMMIT[:12]}, id="short commit"),
        pytest.param({"timestamp": TIMESTAMP, "commit": COMMIT.upper()}, id="upper-case commit"),
        pytest.param({"timestamp": TIMESTAMP, "context_digest": "5e1f" * 16}, id="digest without algorithm"),
        pytest.param({"timestamp": TIMESTAMP, "git_auth": "header"}, id="unknown auth"),
    ],
)
def test_build_inputs_reject_malformed_values(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="is not"):
        BuildInputs(**fields)


def test_build_inputs_accept_sha256_repositories() -> None:
    assert BuildInputs(timestamp=TIMESTAMP, commit="ab" * 32).commit == "ab" * 32


# The wrapper's cacheExported, run for real


@pytest.mark.parametrize("shell", _shells())
def test_wrapper_reports_a_missing_cache_export(tmp_path: Path, shell: list[str]) -> None:
    without_cache = {key: value for key, value in METADATA_FIELDS.items() if key != "cache.manifest"}
    pod = Pod(tmp_path, shell, render_job(*CASES["minimal"]), metadata=without_cache)
    result = pod.run()
    assert result.returncode == 0, result.stderr
    message = pod.termination_log.read_text()
    assert json.loads(message)["cacheExported"] is False
    report = parse_report(message)
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
    report = parse_report(message)
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
    report = parse_report(pod.termination_log.read_text())
    assert report is not None
    assert report.image_name == names
    assert report.image_name.split(",") == expand_tags(CASES["tags"][0].spec, CASES["tags"][2], 3)


@pytest.mark.parametrize("shell", _shells())
def test_the_longest_report_fits_a_termination_message(tmp_path: Path, shell: list[str]) -> None:
    longest_name = ",".join(["r.example.com:5000/" + "a" * 480 + ":" + "t" * 128] * 4)[:2800]
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
    report = parse_report(message)
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
    report = parse_report(message)
    assert report is not None
    assert report.image_name is None
    assert report.digest == PUSHED
