"""The build Job: a rootless BuildKit Pod per ServiceBuild generation, reporting via its termination message.

Pure: the same ServiceBuild and Settings always render the same dict; no I/O, no clock. Every
setting follows the checked BuildKit facts (rootless container, ConfigMap context copied with
`cp -L`, the report written only on success so failures leave the log tail).
"""

import copy
from typing import Any

from servicebuild import naming
from servicebuild.api.models import GROUP, KIND, VERSION, ConfigMapSource, ServiceBuild, ServiceBuildSpec
from servicebuild.config import Settings
from servicebuild.imageref import ImageRef

BUILD_CONTAINER = "buildkit"
CONTEXT_CONTAINER = "context"

BUILDKITD_VOLUME = "buildkitd"
WORKSPACE_VOLUME = "workspace"
CONFIGMAP_VOLUME = "configmap"
DOCKER_CONFIG_VOLUME = "docker-config"

BUILDKITD_DIR = "/home/user/.local/share/buildkit"
"""buildkitd's state; rootless BuildKit needs a volume here (`docs/rootless.md`)."""
WORKSPACE_DIR = "/workspace"
CONFIGMAP_DIR = "/configmap"
DOCKER_CONFIG_DIR = "/home/user/.docker"
METADATA_FILE = "/tmp/metadata.json"  # noqa: S108 - the Pod's own /tmp; buildctl writes it atomically
CACHE_METRICS_FILE = "/tmp/cache-metrics.json"  # noqa: S108 - the Pod's own /tmp
TERMINATION_LOG = "/dev/termination-log"

BUILD_USER = 1000
"""`user` of the moby/buildkit rootless image."""

PUSH_SECRET_KEY = ".dockerconfigjson"  # noqa: S105 - a key name, not a credential
"""The key of a `kubernetes.io/dockerconfigjson` Secret, mounted as the Docker `config.json`."""

WRAPPER_NAME = "buildkit-wrapper"
"""`$0` of the wrapper script; the buildctl arguments follow it as `$1...`."""
ENV_METADATA_FILE = "BUILD_METADATA_FILE"
ENV_CACHE_METRICS_FILE = "BUILD_CACHE_METRICS_FILE"
ENV_REPORT_FILE = "BUILD_REPORT_FILE"

WRAPPER_SCRIPT = r"""set -u
# Build and push. A failure keeps its exit code and writes no report: Kubernetes then puts the log tail
# (FallbackToLogsOnError) into the termination message.
buildctl-daemonless.sh "$@" || exit $?
# Success: one JSON line with the pushed digest, the image name and buildctl's cache metrics line.
digest=$(sed -n 's/^ *"containerimage\.digest": *"\([^"]*\)".*/\1/p' "$BUILD_METADATA_FILE")
name=$(sed -n 's/^ *"image\.name": *"\([^"]*\)".*/\1/p' "$BUILD_METADATA_FILE")
metrics=$(tail -n 1 "$BUILD_CACHE_METRICS_FILE" 2>/dev/null)
case $metrics in "{"*"}") ;; *) metrics=null ;; esac
[ "${#metrics}" -le 1024 ] || metrics=null
printf '{"digest":"%s","imageName":"%s","cacheMetrics":%s}\n' "$digest" "$name" "$metrics" \
  >"$BUILD_REPORT_FILE"
"""
"""The build container's shell: plain POSIX sh (busybox in the BuildKit image), no jq, no python.

It never sees an argument as shell text: the buildctl arguments arrive as positional parameters and
the file paths as environment variables. The report stays far below the 4096-byte termination
message cap: a 71-character digest, an image name of at most ~550 and a metrics line cut at 1024.
"""

BUILD_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"memory": "4Gi"},
}
"""Enough to schedule a typical compile step; a memory cap so a runaway build cannot starve the node.
No CPU limit: throttling only makes builds slower, and requests already share CPU fairly."""

CONTEXT_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "10m", "memory": "16Mi"},
    "limits": {"memory": "64Mi"},
}
"""Copying a ConfigMap (at most 1 MiB) needs next to nothing."""

COPY_CONFIGMAP_SCRIPT = (
    f'set -e; for f in {CONFIGMAP_DIR}/* {CONFIGMAP_DIR}/.[!.]*; do [ -e "$f" ] || continue; '
    f'cp -L "$f" {WORKSPACE_DIR}/; done'
)
"""Copy every key of the ConfigMap as a real file (`-L`: the volume's files are symlinks into `..data/`,
which BuildKit's context transfer does not follow). `.[!.]*` picks up keys such as `.dockerignore`
while skipping the volume's own `..data` and `..<timestamp>` entries (keys never start with `..`)."""


def buildctl_args(spec: ServiceBuildSpec, settings: Settings) -> list[str]:
    """The arguments of `buildctl-daemonless.sh`: build the Dockerfile, push the image, use the cache."""
    output = spec.output.ref
    args = [
        "build",
        "--progress=plain",
        "--frontend",
        "dockerfile.v0",
        "--local",
        f"context={WORKSPACE_DIR}",
        "--local",
        f"dockerfile={WORKSPACE_DIR}",
        "--opt",
        f"filename={spec.dockerfile}",
    ]
    if spec.target:
        args += ["--opt", f"target={spec.target}"]
    for key, value in sorted(spec.build_args.items()):
        args += ["--opt", f"build-arg:{key}={value}"]
    args += ["--output", _attributes(output, settings, "type=image", f"name={output}", "push=true")]
    if not spec.cache.disabled:
        cache = spec.cache_ref
        args += [
            "--export-cache",
            _attributes(
                cache,
                settings,
                "type=registry",
                f"ref={cache}",
                f"mode={spec.cache.mode.value}",
                "image-manifest=true",
                "oci-mediatypes=true",
                "ignore-error=true",
            ),
            "--import-cache",
            _attributes(cache, settings, "type=registry", f"ref={cache}"),
        ]
    args += ["--metadata-file", METADATA_FILE, "--debug-json-cache-metrics", CACHE_METRICS_FILE]
    return args


def _attributes(image: ImageRef, settings: Settings, *attributes: str) -> str:
    """buildctl's comma-separated `key=value` list, marked insecure for a plain-HTTP registry."""
    if image.registry in settings.insecure_registries:
        attributes = (*attributes, "registry.insecure=true")
    return ",".join(attributes)


def render_job(build: ServiceBuild, settings: Settings) -> dict[str, Any]:
    """The batch/v1 Job that builds and pushes the current generation of `build`."""
    meta, spec = build.metadata, build.spec
    labels = naming.job_labels(meta.uid, meta.generation)
    push_secret = spec.output.push_secret
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": naming.job_name(meta.name, meta.uid, meta.generation),
            "namespace": meta.namespace,
            "labels": labels,
            "annotations": {naming.ANNOTATION_SERVICEBUILD: meta.name},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "name": meta.name,
                    "uid": meta.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                },
            ],
        },
        "spec": {
            "backoffLimit": 0,  # the operator decides about retries
            "activeDeadlineSeconds": spec.timeout_seconds,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "initContainers": [_context_container(settings)],
                    "containers": [_build_container(spec, settings)],
                    "volumes": [
                        {"name": BUILDKITD_VOLUME, "emptyDir": {}},
                        {"name": WORKSPACE_VOLUME, "emptyDir": {}},
                        _configmap_volume(_configmap_source(spec)),
                        *([_docker_config_volume(push_secret)] if push_secret else []),
                    ],
                },
            },
        },
    }


def _build_container(spec: ServiceBuildSpec, settings: Settings) -> dict[str, Any]:
    env = [
        {"name": "BUILDKITD_FLAGS", "value": "--oci-worker-no-process-sandbox"},
        {"name": ENV_METADATA_FILE, "value": METADATA_FILE},
        {"name": ENV_CACHE_METRICS_FILE, "value": CACHE_METRICS_FILE},
        {"name": ENV_REPORT_FILE, "value": TERMINATION_LOG},
    ]
    mounts = [
        {"name": BUILDKITD_VOLUME, "mountPath": BUILDKITD_DIR},
        {"name": WORKSPACE_VOLUME, "mountPath": WORKSPACE_DIR, "readOnly": True},
    ]
    if spec.output.push_secret:
        env.append({"name": "DOCKER_CONFIG", "value": DOCKER_CONFIG_DIR})
        mounts.append({"name": DOCKER_CONFIG_VOLUME, "mountPath": DOCKER_CONFIG_DIR, "readOnly": True})
    return {
        "name": BUILD_CONTAINER,
        "image": settings.buildkit_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", WRAPPER_SCRIPT, WRAPPER_NAME],
        "args": buildctl_args(spec, settings),
        "env": env,
        "resources": copy.deepcopy(BUILD_RESOURCES),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            # Rootless BuildKit needs user namespaces (newuidmap): no allowPrivilegeEscalation=false,
            # and Unconfined seccomp/AppArmor; never root.
            "runAsUser": BUILD_USER,
            "runAsGroup": BUILD_USER,
            "seccompProfile": {"type": "Unconfined"},
            "appArmorProfile": {"type": "Unconfined"},
        },
        "volumeMounts": mounts,
    }


def _context_container(settings: Settings) -> dict[str, Any]:
    return {
        "name": CONTEXT_CONTAINER,
        "image": settings.buildkit_image,  # already pulled for the build: no second image
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", COPY_CONFIGMAP_SCRIPT],
        "resources": copy.deepcopy(CONTEXT_RESOURCES),
        "securityContext": {
            "runAsUser": BUILD_USER,
            "runAsGroup": BUILD_USER,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": CONFIGMAP_VOLUME, "mountPath": CONFIGMAP_DIR, "readOnly": True},
            {"name": WORKSPACE_VOLUME, "mountPath": WORKSPACE_DIR},
        ],
    }


def _configmap_source(spec: ServiceBuildSpec) -> ConfigMapSource:
    if spec.source.config_map is None:  # the model requires exactly one source, and configMap is the only one
        raise ValueError("the build context must come from a ConfigMap")
    return spec.source.config_map


def _configmap_volume(source: ConfigMapSource) -> dict[str, Any]:
    return {"name": CONFIGMAP_VOLUME, "configMap": {"name": source.name}}


def _docker_config_volume(secret_name: str) -> dict[str, Any]:
    """Only the Secret's name: the credentials reach the Pod through the kubelet, never through the Job."""
    return {
        "name": DOCKER_CONFIG_VOLUME,
        "secret": {"secretName": secret_name, "items": [{"key": PUSH_SECRET_KEY, "path": "config.json"}]},
    }
