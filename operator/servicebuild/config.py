"""Operator settings, read once from SERVICEBUILD_* environment variables."""

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from servicebuild.api.models import Attestations, Provenance, parse_duration

_LISTEN_ADDRESS_RE = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):(?P<port>[0-9]{1,5})")
_MAX_PORT = 65535


def listen_address(value: str) -> tuple[str | None, int]:
    """`[host]:port` taken apart: the host (None for every interface; an IPv6 address without its
    brackets) and the port; ValueError for anything else."""
    address = _LISTEN_ADDRESS_RE.fullmatch(value)
    if address is None or not 0 < int(address["port"]) <= _MAX_PORT:
        raise ValueError("must be [host]:port, e.g. :8082 (every interface) or 127.0.0.1:8082")
    return address["host"].removeprefix("[").removesuffix("]") or None, int(address["port"])


class Settings(BaseSettings):
    """Settings for the whole operator; injected into handlers through Kopf's memo."""

    model_config = SettingsConfigDict(env_prefix="SERVICEBUILD_", frozen=True, use_attribute_docstrings=True)

    buildkit_image: str = "moby/buildkit:v0.32.2-rootless"
    """The rootless BuildKit image every build Job runs; an exact release tag, never `latest`."""

    default_provenance: Provenance = Provenance.MIN
    """The SLSA provenance of builds whose spec.attestations.provenance is unset: `min` (as `docker buildx`
    does), `max` or `off`. With provenance the pushed result is an OCI index holding the image and an
    attestation manifest; `off` pushes a plain image manifest, for registries and tools that reject such
    indexes."""

    sbom_scanner_image: str = "docker.io/docker/buildkit-syft-scanner:stable-1"
    """The scanner image BuildKit runs to make the SBOM of builds with spec.attestations.sbom; an exact tag
    or a digest, never `latest`. Build nodes must be able to pull it."""

    insecure_registries: Annotated[frozenset[str], NoDecode] = Field(default=frozenset())
    """Comma-separated registry hosts (host[:port]) reached over plain HTTP: pushes, cache and the
    operator's reads. Not base images: BuildKit pulls those following its daemon's configuration, which
    Jobs leave alone."""

    pool_run_directory: Path = Path("/run/servicebuild")
    """Where the operator writes the private files of builds it runs on builder pools (its client
    certificate, push credentials, build secrets, ConfigMap contexts), each run in a directory of its own
    removed when the build ends. The Deployment mounts a memory-backed emptyDir there."""

    job_ttl_seconds: int = Field(default=3600, ge=0)
    """How long a finished build Job (and its Pod, with the logs) is kept before Kubernetes removes it."""

    resync_seconds: float = Field(default=60.0, gt=0)
    """Safety tick: how often every ServiceBuild is reconciled even when nothing seems to change."""

    allowed_builder_images: Annotated[frozenset[str], NoDecode] = Field(default=frozenset())
    """Comma-separated BuildKit images a ServiceBuild may choose with spec.builderImage; empty allows none."""

    allowed_push_registries: dict[str, frozenset[str]] = Field(default_factory=dict)
    """Per namespace, the registry hosts its builds may push images and caches to, as JSON, e.g.
    `{"shop": ["registry.example.com"], "*": ["registry.internal:5000"]}`; `*` covers the namespaces not
    named. Empty: no restriction."""

    max_running_builds: int = Field(default=0, ge=0)
    """Build Jobs that may run at once, operator-wide; more wait in phase Queued. 0: no limit."""

    max_running_builds_per_namespace: int = Field(default=0, ge=0)
    """Build Jobs that may run at once in one namespace. 0: no limit."""

    min_poll_interval: timedelta = timedelta(minutes=1)
    """The shortest `spec.source.git.pollInterval` a ServiceBuild may ask for, as a duration such as `1m`
    or `30s`."""

    git_lookups_per_host_per_second: float = Field(default=2.0, gt=0)
    """How many revision lookups (`git ls-remote`) the operator sends one git host per second, at most,
    whatever the number of ServiceBuilds polling it."""

    base_image_poll_interval: timedelta = timedelta(minutes=30)
    """How often the base images of ServiceBuilds with `spec.triggers.baseImages` are checked for a new
    digest (jittered), as a duration such as `30m`."""

    max_triggered_builds_per_minute: int = Field(default=10, ge=0)
    """Builds started by a new commit or base image, at most, per minute: a new base image used by
    hundreds of services rebuilds them in waves. Builds a person asked for are never held. 0: no limit."""

    successful_jobs_history_limit: int = Field(default=1, ge=0)
    """Finished Jobs of successful builds kept per ServiceBuild (with their Pods and logs), as a CronJob
    keeps them; `SERVICEBUILD_JOB_TTL_SECONDS` still removes them at the latest."""

    failed_jobs_history_limit: int = Field(default=3, ge=0)
    """Finished Jobs of failed builds kept per ServiceBuild."""

    max_build_attempts: int = Field(default=3, ge=1)
    """Attempts at one generation when builds fail transiently (evicted Pod, registry unreachable)."""

    retry_delay_seconds: int = Field(default=30, ge=0)
    """Wait before the second attempt; it doubles for each further one, up to 10 minutes."""

    namespaces: Annotated[frozenset[str], NoDecode] = Field(default=frozenset())
    """Comma-separated namespaces to watch; empty means all namespaces."""

    registry_timeout_seconds: float = Field(default=30.0, gt=0)
    """Timeout of one HTTP request to a registry."""

    git_timeout_seconds: float = Field(default=30.0, gt=0)
    """Timeout of one request to a git remote when the operator resolves a branch or tag to a commit."""

    api_timeout_seconds: float = Field(default=30.0, gt=0)
    """Timeout of one Kubernetes API request."""

    watch_timeout_seconds: int = Field(default=300, gt=0)
    """How long one watch request lasts before it is renewed."""

    workers: int = Field(default=8, ge=1)
    """Threads that reconcile ServiceBuilds in parallel."""

    liveness_endpoint: str | None = None
    """Kopf's liveness endpoint, e.g. http://0.0.0.0:8080/healthz; unset turns it off."""

    metrics_address: str | None = ":8081"
    """Where Prometheus scrapes the operator's metrics (GET /metrics) and its readiness is asked (GET
    /readyz), [host]:port; empty turns it off. See docs/operations.md#metrics in the operator's repository."""

    webhook_address: str | None = None
    """Where the push webhook receiver listens, [host]:port, e.g. `:8082` (every interface); unset turns it
    off. A genuine push makes the ServiceBuilds that poll its repository and branch resolve their revision
    again at once. See docs/webhooks.md in the operator's repository."""

    webhook_secret_file: Path | None = Field(default=None, validate_default=True)
    """The file holding the webhooks' secret, mounted from a Secret (surrounding whitespace is ignored);
    needed with SERVICEBUILD_WEBHOOK_ADDRESS. Read again for every delivery: a changed Secret applies
    without a restart."""

    leader_election: bool = True
    """Elect one acting replica through a Lease: the others stand by (serving metrics and webhooks) and
    take over when its lease expires. false: this process acts alone, at once."""

    lease_name: str = "servicebuild-operator"
    """The `coordination.k8s.io` Lease the replicas elect a leader on."""

    lease_namespace: str | None = None
    """The Lease's namespace; unset: the namespace of the operator's service account (in a Pod), else
    `default`."""

    lease_duration_seconds: float = Field(default=15.0, gt=0)
    """How long a standby waits, from when it last saw the Lease change, before it takes over."""

    lease_renew_deadline_seconds: float = Field(default=10.0, gt=0)
    """How long the leader keeps acting without renewing its Lease; shorter than the lease duration, so
    that it has stopped before a standby may take over."""

    lease_retry_period_seconds: float = Field(default=2.0, gt=0)
    """How often the leader renews the Lease and a standby tries to take it."""

    log_format: Literal["text", "json"] = "text"
    """`text`, or `json`: one JSON object per line, with the ServiceBuild's namespace and name (under
    `object`), the build number and the reason as fields."""

    verbose: bool = False
    """Log at debug level: true or false."""

    @field_validator("insecure_registries", "allowed_builder_images", "namespaces", mode="before")
    @classmethod
    def split_commas(cls, value: object) -> object:
        """Accept `a,b` from the environment as well as a collection."""
        if isinstance(value, str):
            return frozenset(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("metrics_address", "webhook_address", mode="before")
    @classmethod
    def check_listen_address(cls, value: object) -> object:
        """An empty value is unset; any other must be [host]:port."""
        if value == "":
            return None
        if isinstance(value, str):
            listen_address(value)
        return value

    @field_validator("webhook_secret_file")
    @classmethod
    def secret_for_the_webhooks(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """The receiver acts on no delivery it cannot verify: no address without a secret."""
        if value is None and info.data.get("webhook_address") is not None:
            raise ValueError("needed when SERVICEBUILD_WEBHOOK_ADDRESS is set")
        return value

    @model_validator(mode="after")
    def lease_times_in_order(self) -> Self:
        """A leader must stop acting before a standby may take over, and try to renew more than once."""
        if (
            not self.lease_retry_period_seconds
            < self.lease_renew_deadline_seconds
            < self.lease_duration_seconds
        ):
            raise ValueError(
                "SERVICEBUILD_LEASE_RETRY_PERIOD_SECONDS < SERVICEBUILD_LEASE_RENEW_DEADLINE_SECONDS"
                " < SERVICEBUILD_LEASE_DURATION_SECONDS must hold"
            )
        return self

    def webhook_listen(self) -> tuple[str | None, int] | None:
        """The receiver's host (None: every interface) and port; None when it is off."""
        return None if self.webhook_address is None else listen_address(self.webhook_address)

    def metrics_listen(self) -> tuple[str | None, int] | None:
        """The metrics server's host (None: every interface) and port; None when it is off."""
        return None if self.metrics_address is None else listen_address(self.metrics_address)

    def provenance_of(self, attestations: Attestations) -> Provenance:
        """The provenance a spec's attestations ask for, this operator's default when they leave it unset."""
        return attestations.provenance or self.default_provenance

    def push_registries_of(self, namespace: str) -> frozenset[str] | None:
        """The registries `namespace` may push to; None when unrestricted."""
        if not self.allowed_push_registries:
            return None
        return self.allowed_push_registries.get(namespace, self.allowed_push_registries.get("*", frozenset()))

    @field_validator("min_poll_interval", "base_image_poll_interval", mode="before")
    @classmethod
    def go_duration(cls, value: object) -> object:
        """Accept `1m`, `30s`, `1h30m` from the environment, like the spec's durations."""
        if isinstance(value, str):
            seconds = parse_duration(value)
            if seconds == 0:
                raise ValueError("must be longer than 0s")
            return timedelta(seconds=seconds)
        return value

    @field_validator("buildkit_image", "sbom_scanner_image")
    @classmethod
    def reject_floating_tags(cls, value: str, info: ValidationInfo) -> str:
        """An image every build runs must be reproducible: no implicit or `latest` tag."""
        name = value.split("@", 1)[0]
        last = name.rsplit("/", 1)[-1]
        if "@" not in value and (":" not in last or last.endswith(":latest")):
            example = cls.model_fields[info.field_name or "buildkit_image"].default
            raise ValueError(f"must name an exact release tag or a digest (e.g. {example}), not latest")
        return value
