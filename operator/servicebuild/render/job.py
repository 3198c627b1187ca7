"""The build Job: a rootless BuildKit Pod per ServiceBuild generation, reporting via its termination message.

Pure: the same ServiceBuild, Settings and BuildInputs always render the same dict; no I/O, no clock.
Every setting follows the checked BuildKit facts (rootless container, ConfigMap context copied with
`cp -L` or unpacked from an archive, a git context fetched by BuildKit itself, the report written only
on success so failures leave the log tail).

Secrets reach the Pod only as Secret volumes, by name and key: the renderer never sees a value.

Git contexts (`--opt context=<url>#<ref>:<dir>`, `frontend/dockerui/context.go` `DetectGitContext`):
BuildKit's `llb.Git` authenticates HTTP(S) with the session secret `GIT_AUTH_TOKEN.<host>`, sent as basic
auth `x-access-token:<token>` whatever the Secret's `username` (`source/git/source.go`), and SSH with the
forwarded agent `default`. It takes no known_hosts for this context: for SSH URLs `llb.Git` scans the
host key itself when the build starts (`util/sshutil/keyscan.go`, trust on first use) and the git CLI
runs with `StrictHostKeyChecking=no` if that scan failed (`util/gitutil/git_cli.go`). So a `known_hosts`
key of the auth Secret is ignored. What is built is still pinned: the context names the commit the
operator resolved (or the full commit id an SSH source must name), git fetches that commit by its hash
and checks the objects against it, so a spoofed host can refuse the build but not change it.
"""

import copy
import csv
import io
import re
from dataclasses import dataclass
from typing import Any, Literal

from servicebuild import naming, report_budget
from servicebuild.api.models import (
    GROUP,
    KIND,
    SHORT_COMMIT_LENGTH,
    VERSION,
    ConfigMapSource,
    GitSource,
    Provenance,
    Resources,
    ServiceBuild,
    ServiceBuildSpec,
    SizeBudgetAction,
)
from servicebuild.config import Settings
from servicebuild.dockerfile import RULE_NAMES
from servicebuild.giturl import parse_git_url
from servicebuild.imageref import ImageRef, parse_image

BUILD_CONTAINER = "buildkit"
DOCKERFILE_CHECK_ARG = "BUILDKIT_DOCKERFILE_CHECK"
"""The build argument that configures BuildKit's build checks (`skip=Rule1,Rule2`)."""
CONTEXT_CONTAINER = "context"

BUILDKITD_VOLUME = "buildkitd"
WORKSPACE_VOLUME = "workspace"
CONFIGMAP_VOLUME = "configmap"
DOCKER_CONFIG_VOLUME = "docker-config"
GIT_AUTH_VOLUME = "git-auth"
BUILD_SECRETS_VOLUME = "build-secrets"

BUILDKITD_DIR = "/home/user/.local/share/buildkit"
"""buildkitd's state; rootless BuildKit needs a volume here (`docs/rootless.md`)."""
WORKSPACE_DIR = "/workspace"
CONFIGMAP_DIR = "/configmap"
DOCKER_CONFIG_DIR = "/home/user/.docker"
GIT_AUTH_DIR = "/run/secrets/git"
BUILD_SECRETS_DIR = "/run/secrets/build"
METADATA_FILE = "/tmp/metadata.json"  # noqa: S108 - the Pod's own /tmp; buildctl writes it atomically
CACHE_METRICS_FILE = "/tmp/cache-metrics.json"  # noqa: S108 - the Pod's own /tmp
TERMINATION_LOG = "/dev/termination-log"

BUILD_USER = 1000
"""`user` of the moby/buildkit rootless image."""

PUSH_SECRET_KEY = ".dockerconfigjson"  # noqa: S105 - a key name, not a credential
"""The key of a `kubernetes.io/dockerconfigjson` Secret, mounted as the Docker `config.json`."""

GitAuth = Literal["token", "password", "ssh"]
GIT_AUTH_KEYS: dict[str, str] = {"token": "token", "password": "password", "ssh": "ssh-privatekey"}
"""The key of `spec.source.git.authSecret` each auth method mounts (and nothing else of that Secret)."""
GIT_AUTH_TOKEN_SECRET = "GIT_AUTH_TOKEN"  # noqa: S105 - the name BuildKit's git source asks the session for
"""`llb.GitAuthTokenKey`; BuildKit first asks for `GIT_AUTH_TOKEN.<host>`, the form used here."""
SSH_AGENT_ID = "default"
"""The SSH agent `llb.Git` mounts for SSH URLs when none is named."""

LABEL_QUEUE_NAME = "kueue.x-k8s.io/queue-name"
"""Kueue admits plain Jobs with this label: it suspends them on create and resumes them on admission."""
OCI_SOURCE = "org.opencontainers.image.source"
OCI_REVISION = "org.opencontainers.image.revision"
SOURCE_LABEL_LENGTH = 12
"""Hex digits of the ConfigMap context digest in the Job's `servicebuild.dev/source` label."""

MAX_TAG_LENGTH = 128
"""The longest tag the distribution reference grammar allows."""

WRAPPER_NAME = "buildkit-wrapper"
"""`$0` of the wrapper script; the buildctl arguments follow it as `$1...`."""
ENV_METADATA_FILE = "BUILD_METADATA_FILE"
ENV_CACHE_METRICS_FILE = "BUILD_CACHE_METRICS_FILE"
ENV_REPORT_FILE = "BUILD_REPORT_FILE"
ENV_CACHE_EXPORT = "BUILD_CACHE_EXPORT"
WRAPPER_SCRIPT = report_budget.WRAPPER_SCRIPT
"""The build container's shell (`servicebuild.report_budget`): plain POSIX sh (busybox in the BuildKit
image), no jq, no python. It never sees an argument as shell text: the buildctl arguments arrive as
positional parameters and the file paths as environment variables."""

BUILD_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"memory": "4Gi"},
}
"""Enough to schedule a typical compile step; a memory cap so a runaway build cannot starve the node.
No CPU limit: throttling only makes builds slower, and requests already share CPU fairly.
`spec.resources` replaces these as a whole."""

BUILDKIT_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsUser": BUILD_USER,
    "runAsGroup": BUILD_USER,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "Unconfined"},
    "appArmorProfile": {"type": "Unconfined"},
}
"""The BuildKit container's, in a build Job and in a builder pool alike. Rootless BuildKit needs user
namespaces (newuidmap): no allowPrivilegeEscalation=false, and Unconfined seccomp/AppArmor, on that
container only; never root (runAsNonRoot: the kubelet refuses UID 0)."""

CONTEXT_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "10m", "memory": "16Mi"},
    "limits": {"memory": "64Mi"},
}
"""Copying or unpacking a ConfigMap (at most 1 MiB) needs next to nothing."""

COPY_CONFIGMAP_SCRIPT = (
    f'set -e; for f in {CONFIGMAP_DIR}/* {CONFIGMAP_DIR}/.[!.]*; do [ -e "$f" ] || continue; '
    f'cp -L "$f" {WORKSPACE_DIR}/; done'
)
"""Copy every key of the ConfigMap as a real file (`-L`: the volume's files are symlinks into `..data/`,
which BuildKit's context transfer does not follow). `.[!.]*` picks up keys such as `.dockerignore`
while skipping the volume's own `..data` and `..<timestamp>` entries (keys never start with `..`)."""

EXTRACT_ARCHIVE_SCRIPT = (
    f'set -e; tar -xzf "$1" -C {WORKSPACE_DIR}; '
    f"find {WORKSPACE_DIR} -mindepth 1 ! -type l \\( ! -perm -400 -o -type d ! -perm -100 \\) "
    "-exec chmod u+rX {} \\;"
)
"""Unpack the context archive (`$1`, never shell text) into the workspace with busybox tar, which drops
leading `/` and `../` from member names, so nothing lands outside it. Then make what the archive left
unreadable to its owner readable (and such folders enterable): the build reads the files as the same
user. `find` touches neither symlinks (they may point anywhere) nor the workspace itself (the kubelet's
emptyDir, owned by root: a chmod there fails), one entry at a time so a closed folder opens before
`find` descends into it."""
EXTRACT_ARCHIVE_NAME = "extract-context"
"""`$0` of the archive script; the archive's path is `$1`."""

_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z]+)\}")
_HEX_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_TIMESTAMP_RE = re.compile(r"[0-9]{14}")
_CONTEXT_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class BuildInputs:
    """What the reconciler resolved before rendering; fixed for the Job's lifetime."""

    timestamp: str
    """UTC `YYYYMMDDhhmmss` at Job creation, for the `{timestamp}` tag placeholder."""
    commit: str | None = None
    """The 40-hex commit a git revision resolved to (64 hex for a SHA-256 repository)."""
    context_digest: str | None = None
    """`sha256:<hex>` of the ConfigMap data (ConfigMap sources)."""
    git_auth: GitAuth | None = None
    """Which key of `spec.source.git.authSecret` to use (`ssh` = key `ssh-privatekey`)."""
    attempt: int = 1
    """Which attempt at this build (retries after transient failures get their own Job)."""
    build: int = 1
    """The build's number (`status.build`), for the Job's name and the `{build}` tag placeholder."""
    trigger: str | None = None
    """Why the build happens (a `Trigger`), recorded on the Job."""

    def __post_init__(self) -> None:
        if not _TIMESTAMP_RE.fullmatch(self.timestamp):
            raise ValueError(f"timestamp {self.timestamp!r} is not UTC YYYYMMDDhhmmss")
        if self.commit is not None and not _HEX_RE.fullmatch(self.commit):
            raise ValueError(f"commit {self.commit!r} is not a full lower-case commit hash")
        if self.context_digest is not None and not _CONTEXT_DIGEST_RE.fullmatch(self.context_digest):
            raise ValueError(f"context digest {self.context_digest!r} is not sha256:<64 hex>")
        if self.git_auth is not None and self.git_auth not in GIT_AUTH_KEYS:
            raise ValueError(f"git auth {self.git_auth!r} is not one of {sorted(GIT_AUTH_KEYS)}")


def expand_tags(spec: ServiceBuildSpec, inputs: BuildInputs, generation: int) -> list[str]:
    """Every reference the build pushes: `output.image` first, then each `output.tags` template expanded.

    Placeholders: `{commit}`, `{shortCommit}` (its first 12 characters), `{generation}`, `{build}`,
    `{timestamp}`.
    Duplicates are dropped, order kept. Raise ValueError naming the field when a template needs a commit
    that was not resolved or expands beyond the 128 characters a tag may have.
    """
    output = spec.output.ref
    values = {"generation": str(generation), "build": str(inputs.build), "timestamp": inputs.timestamp}
    if inputs.commit is not None:
        values |= {"commit": inputs.commit, "shortCommit": inputs.commit[:SHORT_COMMIT_LENGTH]}
    references = [str(output)]
    for index, template in enumerate(spec.output.tags):
        field = f"spec.output.tags[{index}]"

        def value(match: re.Match[str], field: str = field, template: str = template) -> str:
            name = match.group(1)
            if name not in values:
                raise ValueError(f"{field}: {template!r} needs the resolved git commit for {{{name}}}")
            return values[name]

        tag = _PLACEHOLDER_RE.sub(value, template)
        if len(tag) > MAX_TAG_LENGTH:
            raise ValueError(f"{field}: {template!r} expands to {len(tag)} characters; a tag has at most 128")
        reference = str(output.with_tag(tag))
        if reference not in references:
            references.append(reference)
    return references


def tags_after_budget(spec: ServiceBuildSpec) -> bool:
    """Whether the build pushes by digest only, for the operator to tag the image within its size budget."""
    return spec.size_budget is not None and spec.size_budget.action == SizeBudgetAction.FAIL


@dataclass(frozen=True)
class BuildPaths:
    """Where buildctl finds the build's files: the build Pod's mounts, or a pool run's private directory."""

    context: str = WORKSPACE_DIR
    git_auth: str = GIT_AUTH_DIR
    build_secrets: str = BUILD_SECRETS_DIR
    metadata_file: str = METADATA_FILE
    cache_metrics_file: str = CACHE_METRICS_FILE


JOB_PATHS = BuildPaths()


def buildctl_args(
    spec: ServiceBuildSpec,
    settings: Settings,
    inputs: BuildInputs,
    *,
    generation: int,
    paths: BuildPaths = JOB_PATHS,
) -> list[str]:
    """The arguments of `buildctl build` (in a Job, of `buildctl-daemonless.sh`): build the Dockerfile,
    push the image, use the cache.

    `generation` (of the ServiceBuild's metadata; the spec does not carry it) feeds `{generation}` in tags.
    """
    names = ",".join(expand_tags(spec, inputs, generation))
    # A `Fail` size budget: no tag may serve the image before the operator measured it, so BuildKit pushes
    # it by digest (`image.name` in the metadata still lists the names) and the operator tags it.
    by_digest = ["push-by-digest=true"] if tags_after_budget(spec) else []
    return [
        "build",
        "--progress=plain",
        "--frontend",
        "dockerfile.v0",
        *_frontend_args(spec, inputs, paths),
        *_attestation_args(spec, settings),
        "--output",
        _attributes(spec.output.ref, settings, "type=image", f"name={names}", "push=true", *by_digest),
        *_cache_args(spec, settings),
        *_session_args(spec, inputs, paths),
        "--metadata-file",
        paths.metadata_file,
        "--debug-json-cache-metrics",
        paths.cache_metrics_file,
    ]


def _frontend_args(spec: ServiceBuildSpec, inputs: BuildInputs, paths: BuildPaths) -> list[str]:
    """The context and the Dockerfile frontend's options: file, target, build args, platforms, labels."""
    git = spec.source.git
    if git is not None:
        args = ["--opt", f"context={_git_context(git, inputs)}"]
    else:
        args = ["--local", f"context={paths.context}", "--local", f"dockerfile={paths.context}"]
    args += ["--opt", f"filename={spec.dockerfile}"]
    if spec.target:
        args += ["--opt", f"target={spec.target}"]
    for key, value in sorted(spec.build_args.items()):
        args += ["--opt", f"build-arg:{key}={value}"]
    skipped_checks = [rule for rule in spec.checks.skip if rule not in RULE_NAMES]
    if skipped_checks:
        # BuildKit's own syntax (`# check=skip=…` as a build argument); the operator's rules stay out of it.
        args += ["--opt", f"build-arg:{DOCKERFILE_CHECK_ARG}=skip={','.join(skipped_checks)}"]
    if spec.platforms:
        args += ["--opt", f"platform={','.join(spec.platforms)}"]
    if git is not None:
        args += ["--opt", f"label:{OCI_SOURCE}={parse_git_url(git.url).public}"]
        if inputs.commit is not None:
            args += ["--opt", f"label:{OCI_REVISION}={inputs.commit}"]
    return args


def _attestation_args(spec: ServiceBuildSpec, settings: Settings) -> list[str]:
    """The attestations BuildKit adds to the pushed result (`attest:<type>=<params>`, docs/attestations):
    none with provenance off and no SBOM, so the result stays a plain image manifest."""
    args = []
    provenance = settings.provenance_of(spec.attestations)
    if provenance != Provenance.OFF:
        args += ["--opt", f"attest:provenance=mode={provenance.value}"]
    if spec.attestations.sbom:
        args += ["--opt", f"attest:sbom=generator={settings.sbom_scanner_image}"]
    return args


def _cache_args(spec: ServiceBuildSpec, settings: Settings) -> list[str]:
    """Export to and import from the cache ref, and import `cache.importRefs` too; nothing when disabled."""
    if spec.cache.disabled:
        return []
    cache = spec.cache_ref
    export = _attributes(
        cache,
        settings,
        "type=registry",
        f"ref={cache}",
        f"mode={spec.cache.mode.value}",
        "image-manifest=true",
        "oci-mediatypes=true",
        "ignore-error=true",
    )
    imports = [cache]
    for ref in map(parse_image, spec.cache.import_refs):
        if ref not in imports:
            imports.append(ref)
    args = ["--export-cache", export]
    for ref in imports:
        args += ["--import-cache", _attributes(ref, settings, "type=registry", f"ref={ref}")]
    return args


def _session_args(spec: ServiceBuildSpec, inputs: BuildInputs, paths: BuildPaths) -> list[str]:
    """What buildctl serves the build over its session, read from the mounted files: the git token,
    the build secrets, the git SSH key."""
    git = spec.source.git
    args = []
    if git is not None and inputs.git_auth in {"token", "password"}:
        secret_id = f"{GIT_AUTH_TOKEN_SECRET}.{parse_git_url(git.url).host}"
        source = f"{paths.git_auth}/{GIT_AUTH_KEYS[inputs.git_auth]}"
        args += ["--secret", _csv(f"id={secret_id}", f"src={source}")]
    for secret in spec.secrets:
        args += ["--secret", _csv(f"id={secret.id}", f"src={paths.build_secrets}/{secret.id}")]
    if git is not None and inputs.git_auth == "ssh":
        args += ["--ssh", f"{SSH_AGENT_ID}={paths.git_auth}/{GIT_AUTH_KEYS['ssh']}"]
    return args


def _csv(*fields: str) -> str:
    """One CSV record, the way buildctl reads `--output`, `--secret` and the cache flags
    (`encoding/csv`, or `go-csvvalue` in newer releases): a field with a comma or quote is quoted."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def _attributes(image: ImageRef, settings: Settings, *attributes: str) -> str:
    """buildctl's comma-separated `key=value` list, marked insecure for a plain-HTTP registry."""
    if image.registry in settings.insecure_registries:
        attributes = (*attributes, "registry.insecure=true")
    return _csv(*attributes)


def _git_context(git: GitSource, inputs: BuildInputs) -> str:
    """`<url>#<commit or revision>:<contextDir>` (`util/gitutil/git_url.go`); the resolved commit wins."""
    url = parse_git_url(git.url).buildkit_url
    ref = inputs.commit or git.revision or ""
    subdir = git.context_dir or ""
    if not ref and not subdir:
        return url
    return f"{url}#{ref}:{subdir}" if subdir else f"{url}#{ref}"


def render_job(build: ServiceBuild, settings: Settings, inputs: BuildInputs) -> dict[str, Any]:
    """The batch/v1 Job that builds and pushes the current generation of `build`."""
    meta, spec = build.metadata, build.spec
    labels = naming.job_labels(meta.uid, meta.generation)
    if inputs.context_digest is not None:
        labels[naming.LABEL_SOURCE] = inputs.context_digest.removeprefix("sha256:")[:SOURCE_LABEL_LENGTH]
    job_labels = dict(labels)
    if spec.queue_name is not None:
        job_labels[LABEL_QUEUE_NAME] = spec.queue_name
    annotations = _job_annotations(build, settings, inputs)
    image = spec.builder_image or settings.buildkit_image
    configmap = spec.source.config_map
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": naming.job_name(
                meta.name,
                meta.uid,
                inputs.build,
                naming.build_key(inputs.build, meta.generation, inputs.context_digest, inputs.attempt),
            ),
            "namespace": meta.namespace,
            "labels": job_labels,
            "annotations": annotations,
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
                # The ServiceBuild's name on the Pod too: the operator watches build Pods and reconciles
                # their ServiceBuild as soon as the build container ends.
                "metadata": {"labels": labels, "annotations": {naming.ANNOTATION_SERVICEBUILD: meta.name}},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    **_scheduling(spec),
                    **({"initContainers": [_context_container(configmap, image)]} if configmap else {}),
                    "containers": [_build_container(spec, settings, inputs, meta.generation, image)],
                    "volumes": _volumes(spec, inputs),
                },
            },
        },
    }


def _job_annotations(build: ServiceBuild, settings: Settings, inputs: BuildInputs) -> dict[str, str]:
    """What the Job builds and why, for the operator reading it back."""
    annotations = {
        naming.ANNOTATION_SERVICEBUILD: build.metadata.name,
        naming.ANNOTATION_BUILD: str(inputs.build),
    }
    if inputs.trigger is not None:
        annotations[naming.ANNOTATION_TRIGGER] = inputs.trigger
    if inputs.commit is not None:
        annotations[naming.ANNOTATION_COMMIT] = inputs.commit
    if inputs.context_digest is not None:
        annotations[naming.ANNOTATION_CONTEXT_DIGEST] = inputs.context_digest
    # What the build attests, as it ran: the spec may change meanwhile, and the default with the operator.
    attestations = build.spec.attestations
    annotations[naming.ANNOTATION_PROVENANCE] = settings.provenance_of(attestations).value
    if attestations.sbom:
        annotations[naming.ANNOTATION_SBOM_SCANNER] = settings.sbom_scanner_image
    return annotations


def _scheduling(spec: ServiceBuildSpec) -> dict[str, Any]:
    """The Pod's scheduling fields, each only when the spec sets it; all of them as given."""
    fields: dict[str, Any] = {}
    if spec.service_account_name is not None:
        fields["serviceAccountName"] = spec.service_account_name  # its token stays unmounted
    if spec.priority_class_name is not None:
        fields["priorityClassName"] = spec.priority_class_name
    if spec.node_selector:
        fields["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        fields["tolerations"] = [
            toleration.model_dump(mode="json", by_alias=True, exclude_none=True)
            for toleration in spec.tolerations
        ]
    if spec.affinity is not None:
        fields["affinity"] = copy.deepcopy(spec.affinity)
    return fields


def buildkit_resources(resources: Resources | None) -> dict[str, Any]:
    """The BuildKit container's resources: as given, else BUILD_RESOURCES."""
    if resources is None:
        return copy.deepcopy(BUILD_RESOURCES)
    given = {"requests": dict(resources.requests), "limits": dict(resources.limits)}
    return {kind: quantities for kind, quantities in given.items() if quantities}


def _build_container(
    spec: ServiceBuildSpec, settings: Settings, inputs: BuildInputs, generation: int, image: str
) -> dict[str, Any]:
    env = [
        {"name": "BUILDKITD_FLAGS", "value": "--oci-worker-no-process-sandbox"},
        {"name": ENV_METADATA_FILE, "value": METADATA_FILE},
        {"name": ENV_CACHE_METRICS_FILE, "value": CACHE_METRICS_FILE},
        {"name": ENV_REPORT_FILE, "value": TERMINATION_LOG},
        {"name": ENV_CACHE_EXPORT, "value": "false" if spec.cache.disabled else "true"},
    ]
    mounts: list[dict[str, Any]] = [{"name": BUILDKITD_VOLUME, "mountPath": BUILDKITD_DIR}]
    if spec.source.config_map is not None:
        mounts.append({"name": WORKSPACE_VOLUME, "mountPath": WORKSPACE_DIR, "readOnly": True})
    if spec.output.push_secret:
        env.append({"name": "DOCKER_CONFIG", "value": DOCKER_CONFIG_DIR})
        mounts.append({"name": DOCKER_CONFIG_VOLUME, "mountPath": DOCKER_CONFIG_DIR, "readOnly": True})
    if _git_auth_volume(spec, inputs) is not None:
        mounts.append({"name": GIT_AUTH_VOLUME, "mountPath": GIT_AUTH_DIR, "readOnly": True})
    if spec.secrets:
        mounts.append({"name": BUILD_SECRETS_VOLUME, "mountPath": BUILD_SECRETS_DIR, "readOnly": True})
    return {
        "name": BUILD_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", WRAPPER_SCRIPT, WRAPPER_NAME],
        "args": buildctl_args(spec, settings, inputs, generation=generation),
        "env": env,
        "resources": buildkit_resources(spec.resources),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": copy.deepcopy(BUILDKIT_SECURITY_CONTEXT),
        "volumeMounts": mounts,
    }


def _context_container(source: ConfigMapSource, image: str) -> dict[str, Any]:
    """Copy the ConfigMap's keys, or unpack its archive, into the workspace the build reads."""
    if source.archive is None:
        command = ["sh", "-c", COPY_CONFIGMAP_SCRIPT]
    else:
        command = [
            "sh",
            "-c",
            EXTRACT_ARCHIVE_SCRIPT,
            EXTRACT_ARCHIVE_NAME,
            f"{CONFIGMAP_DIR}/{source.archive}",
        ]
    return {
        "name": CONTEXT_CONTAINER,
        "image": image,  # already pulled for the build: no second image
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "resources": copy.deepcopy(CONTEXT_RESOURCES),
        "securityContext": {
            "runAsUser": BUILD_USER,
            "runAsGroup": BUILD_USER,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
            # No appArmorProfile: unset, the runtime's default profile applies where the node has AppArmor.
            # An explicit RuntimeDefault would make the kubelet reject the Pod on nodes without AppArmor.
        },
        "volumeMounts": [
            {"name": CONFIGMAP_VOLUME, "mountPath": CONFIGMAP_DIR, "readOnly": True},
            {"name": WORKSPACE_VOLUME, "mountPath": WORKSPACE_DIR},
        ],
    }


def _volumes(spec: ServiceBuildSpec, inputs: BuildInputs) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [{"name": BUILDKITD_VOLUME, "emptyDir": {}}]
    if spec.source.config_map is not None:
        volumes += [{"name": WORKSPACE_VOLUME, "emptyDir": {}}, _configmap_volume(spec.source.config_map)]
    if spec.output.push_secret:
        volumes.append(_docker_config_volume(spec.output.push_secret))
    git_auth = _git_auth_volume(spec, inputs)
    if git_auth is not None:
        volumes.append(git_auth)
    if spec.secrets:
        volumes.append(_build_secrets_volume(spec))
    return volumes


def _configmap_volume(source: ConfigMapSource) -> dict[str, Any]:
    configmap: dict[str, Any] = {"name": source.name}
    if source.archive is not None:  # only the archive: other keys stay out of the Pod
        configmap["items"] = [{"key": source.archive, "path": source.archive}]
    return {"name": CONFIGMAP_VOLUME, "configMap": configmap}


def _docker_config_volume(secret_name: str) -> dict[str, Any]:
    """Only the Secret's name: the credentials reach the Pod through the kubelet, never through the Job."""
    return {
        "name": DOCKER_CONFIG_VOLUME,
        "secret": {"secretName": secret_name, "items": [{"key": PUSH_SECRET_KEY, "path": "config.json"}]},
    }


def _git_auth_volume(spec: ServiceBuildSpec, inputs: BuildInputs) -> dict[str, Any] | None:
    """The one key of the git auth Secret the build uses, by name; None without git auth."""
    git = spec.source.git
    if git is None or git.auth_secret is None or inputs.git_auth is None:
        return None
    key = GIT_AUTH_KEYS[inputs.git_auth]
    return {
        "name": GIT_AUTH_VOLUME,
        "secret": {"secretName": git.auth_secret, "items": [{"key": key, "path": key}]},
    }


def _build_secrets_volume(spec: ServiceBuildSpec) -> dict[str, Any]:
    """Each build secret's key as the file `<id>`: names and keys only, never a value."""
    sources = [
        {
            "secret": {
                "name": secret.secret_ref.name,
                "items": [{"key": secret.secret_ref.key, "path": secret.id}],
            },
        }
        for secret in spec.secrets
    ]
    return {"name": BUILD_SECRETS_VOLUME, "projected": {"sources": sources}}
