"""We test these aspects:

- each case renders exactly its golden Job (`tests/unit/golden/<case>.yaml`; `UPDATE_GOLDEN=1` rewrites them);
- every rendered Job is a valid batch/v1 Job in strict mode (unknown fields fail) for Kubernetes 1.30,
  the first with `appArmorProfile`, and the newest schema kubernetes-validate ships;
- the key facts, asserted directly: the buildctl arguments (cache flags with `ignore-error=true`,
  `registry.insecure=true` per registry, build args only as `--opt build-arg:K=V`), the deadline, no
  service account token, the name length, the owner reference, the `cp -L` init container, the push
  secret mounted by name only, and rendering being pure (equal results, nothing shared between them);
- the init container's copy, run for real on a ConfigMap-like layout: real files, dotfiles included,
  none of the volume's `..data` internals;
- the wrapper script, run for real by sh (dash) and busybox sh against a fake `buildctl-daemonless.sh`: it
  passes the arguments through untouched, writes a report that `parse_report` reads on success, and on
  failure writes nothing and keeps the exit code.
"""

import copy
import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from servicebuild import naming
from servicebuild.api.models import ServiceBuild
from servicebuild.config import Settings
from servicebuild.render import job as render
from servicebuild.render.job import buildctl_args, render_job
from servicebuild.report import MAX_MESSAGE_BYTES, BuildReport, parse_report

GOLDEN = Path(__file__).parent / "golden"
UID = "6f1c2a9e-3b7d-4e58-9a0c-2d4b8e7f1a35"
IMAGE = "registry.example.com/shop/checkout:1.4.2"
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


CASES: dict[str, tuple[ServiceBuild, Settings]] = {
    "minimal": (servicebuild(), settings()),
    "build-args-target-dockerfile": (
        servicebuild(
            dockerfile="Dockerfile.release",
            target="runtime",
            buildArgs={"VERSION": "1.4.2", "GO_VERSION": "1.23", "LDFLAGS": "-s -w"},
            timeout="1h30m",
        ),
        settings(),
    ),
    "push-secret": (servicebuild(output={"image": IMAGE, "pushSecret": "registry-push"}), settings()),
    "cache-disabled": (servicebuild(cache={"disabled": True}), settings()),
    "insecure-registry": (
        servicebuild(output={"image": "registry.local:5000/shop/checkout:dev"}),
        settings("registry.local:5000"),
    ),
    "cache-min-explicit-ref": (
        servicebuild(cache={"mode": "min", "ref": "registry.example.com/shop/cache:checkout"}),
        settings(),
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
    build, config = CASES[case]
    job = render_job(build, config)
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
    build, config = CASES["minimal"]
    assert buildctl_args(build.spec, config) == [
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
    build, config = CASES["cache-min-explicit-ref"]
    args = buildctl_args(build.spec, config)
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
    build, config = CASES["cache-disabled"]
    args = buildctl_args(build.spec, config)
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
    args = buildctl_args(build.spec, settings(*insecure))
    (output,) = flag_values(args, "--output")
    (export,) = flag_values(args, "--export-cache")
    (imported,) = flag_values(args, "--import-cache")
    assert output.endswith(",registry.insecure=true") is output_insecure
    assert export.endswith(",registry.insecure=true") is cache_insecure
    assert imported.endswith(",registry.insecure=true") is cache_insecure


def test_image_names_are_normalised() -> None:
    build = servicebuild(output={"image": "checkout"})
    args = buildctl_args(build.spec, settings())
    assert flag_values(args, "--output") == ["type=image,name=docker.io/library/checkout:latest,push=true"]
    assert "ref=docker.io/library/checkout:buildcache" in flag_values(args, "--import-cache")[0].split(",")


def test_dockerfile_path_and_target_are_frontend_options() -> None:
    build = servicebuild(dockerfile="docker/Dockerfile", target="runtime")
    opts = flag_values(buildctl_args(build.spec, settings()), "--opt")
    assert opts == ["filename=docker/Dockerfile", "target=runtime"]


HOSTILE = "$(touch pwned); `touch pwned` \"q\" 'q' \\ | & * ?\nsecond line, with comma"


def test_build_args_are_sorted_options_and_never_shell_text() -> None:
    build = servicebuild(buildArgs={"VERSION": "1.4.2", "MOTD": HOSTILE, "A_FIRST": ""})
    job = render_job(build, settings())
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
    build, config = CASES["build-args-target-dockerfile"]
    spec = render_job(build, config)["spec"]
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
    job = render_job(servicebuild(name=name, generation=123456789), settings())
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
    build, config = CASES["push-secret"]
    first = render_job(build, config)
    pristine = copy.deepcopy(first)
    build_container(first)["resources"]["limits"]["memory"] = "1Ti"
    first["metadata"]["labels"]["changed"] = "yes"
    second = render_job(build, config)
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
# As buildctl writes it: json.MarshalIndent with two spaces, sorted top-level keys, no final newline.
METADATA = json.dumps(
    {
        "containerimage.config.digest": CONFIG,
        "containerimage.descriptor": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": PUSHED,
            "size": 479,
            "platform": {"architecture": "amd64", "os": "linux"},
        },
        "containerimage.digest": PUSHED,
        "image.name": IMAGE,
    },
    indent=2,
)
CACHE_METRICS = (
    "cache miss: [build 3/4] RUN make\n"
    '{"total":14,"completed":14,"user_total":5,"user_cached":4,"user_completed":5,"user_cacheable":4,'
    '"from":1,"miss":1,"client_duration_ms":3291}\n'
)


class Pod:
    """The build container of a rendered Job, run by a local shell with the Pod's paths moved to tmp."""

    def __init__(self, tmp_path: Path, shell: list[str], job: dict[str, Any]) -> None:
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
        (tmp_path / "metadata.json").write_text(METADATA)
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
        digest=PUSHED, image_name=IMAGE, cached_steps=4, total_steps=5
    )


@pytest.mark.parametrize("shell", _shells())
def test_wrapper_passes_arguments_untouched(tmp_path: Path, shell: list[str]) -> None:
    build = servicebuild(buildArgs={"MOTD": HOSTILE, "EMPTY": ""})
    pod = Pod(tmp_path, shell, render_job(build, settings()))
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
        digest=PUSHED, image_name=IMAGE, cached_steps=None, total_steps=None
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
