"""What the operator runs to build on a BuilderPool: `buildctl` against the pool's daemon, and its files.
Pure.

The arguments after `build` are the Job's (`render.job.buildctl_args`), so a build means the same on a pool
as in a Job; only the paths differ. They are relative to the run's private directory, where the runner
writes `files` (the operator's client certificate, the push credentials, the build's secrets, a ConfigMap
context) and which it removes once buildctl has ended.
"""

from dataclasses import dataclass, field
from datetime import datetime

from servicebuild.api.models import ServiceBuild
from servicebuild.config import Settings
from servicebuild.render.job import GIT_AUTH_KEYS, BuildInputs, BuildPaths, buildctl_args
from servicebuild.render.pool import CA_CERT_KEY, TLS_CERT_KEY, TLS_KEY_KEY

TLS_DIR = "tls"
DOCKER_CONFIG_DIR = "docker"
"""`DOCKER_CONFIG` of the run: buildctl reads the push credentials from `config.json` there."""
DOCKER_CONFIG_FILE = f"{DOCKER_CONFIG_DIR}/config.json"
Key = tuple[str, str]
RUN_PATHS = BuildPaths(
    context="context",
    git_auth="git",
    build_secrets="secrets",
    metadata_file="metadata.json",
    cache_metrics_file="cache-metrics.json",
)


@dataclass(frozen=True)
class Builder:
    """A pool that can take a build now."""

    key: Key
    endpoint: str
    tls: dict[str, str]
    """The pool's Secret in the operator's namespace (base64 values): the CA and the client certificate."""
    export_cache: bool = False
    """The pool's `spec.cacheExport`."""


@dataclass(frozen=True)
class RunMaterial:
    """The contents a run needs, read by the operator from Secrets and the ConfigMap."""

    tls: dict[str, bytes]
    """The operator's client certificate for the pool: `ca.crt`, `tls.crt`, `tls.key` (never the CA's key)."""
    docker_config: bytes | None = None
    """The push Secret's `.dockerconfigjson`."""
    git_auth: bytes | None = None
    """The git auth Secret's key the build uses (`BuildInputs.git_auth`)."""
    secrets: dict[str, bytes] = field(default_factory=dict)
    """Each build secret's value by its id."""
    context: dict[str, bytes] | None = None
    """A ConfigMap context's files by relative path."""


@dataclass(frozen=True)
class PoolRun:
    """One build on a pool: the command, the files it reads, and what the Job annotations say for a Job."""

    argv: tuple[str, ...]
    files: dict[str, bytes]
    """Relative path in the run's directory → content; every file private to the operator's user."""
    timeout_seconds: int
    """`spec.timeout`: the run is stopped after that long."""
    commit: str | None = None
    context_digest: str | None = None
    provenance: str | None = None

    @property
    def uses_docker_config(self) -> bool:
        return DOCKER_CONFIG_FILE in self.files


@dataclass(frozen=True)
class RunState:
    """What one run is doing, or what it said when it ended."""

    name: str
    servicebuild: Key
    pool: Key
    started: datetime
    run: PoolRun
    ended: datetime | None = None
    exit_code: int | None = None
    timed_out: bool = False
    stopped: bool = False
    """Stopped by the operator: its result, whatever it was, is not the build's."""
    metadata: str | None = None
    cache_metrics: str | None = None
    log: str = ""


def render_pool_run(
    servicebuild: ServiceBuild,
    settings: Settings,
    inputs: BuildInputs,
    *,
    builder: Builder,
    material: RunMaterial,
) -> PoolRun:
    """The buildctl command of one build of `servicebuild` on the pool `builder`, and its files; the
    registry cache only imported unless the pool exports it (its daemon keeps its own)."""
    spec = servicebuild.spec
    build = buildctl_args(
        spec, settings, inputs, generation=servicebuild.metadata.generation, paths=RUN_PATHS
    )
    if not builder.export_cache:
        build = _without(build, "--export-cache")
    files = {f"{TLS_DIR}/{key}": material.tls[key] for key in (CA_CERT_KEY, TLS_CERT_KEY, TLS_KEY_KEY)}
    if material.docker_config is not None:
        files[DOCKER_CONFIG_FILE] = material.docker_config
    if material.git_auth is not None and inputs.git_auth is not None:
        files[f"{RUN_PATHS.git_auth}/{GIT_AUTH_KEYS[inputs.git_auth]}"] = material.git_auth
    for secret_id, value in material.secrets.items():
        files[f"{RUN_PATHS.build_secrets}/{secret_id}"] = value
    for path, content in (material.context or {}).items():
        files[f"{RUN_PATHS.context}/{path}"] = content
    provenance = settings.provenance_of(spec.attestations)
    return PoolRun(
        argv=("buildctl", "--addr", builder.endpoint, "--tlsdir", TLS_DIR, *build),
        files=files,
        timeout_seconds=spec.timeout_seconds,
        commit=inputs.commit,
        context_digest=inputs.context_digest,
        provenance=provenance.value,
    )


def _without(args: list[str], flag: str) -> list[str]:
    """The arguments less every `flag value` pair."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        else:
            kept.append(arg)
    return kept
