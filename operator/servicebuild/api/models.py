"""Pydantic models of the ServiceBuild resource: the contract with users and GitOps tools."""

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from servicebuild.imageref import IMAGE_PATTERN, ImageRef, parse_image

GROUP = "servicebuild.dev"
VERSION = "v1alpha1"
KIND = "ServiceBuild"
PLURAL = "servicebuilds"
SINGULAR = "servicebuild"
SHORT_NAMES = ("sb",)

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
BUILD_ARG_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_PATH_SEGMENT = r"(\.|\.?[^/.\x00][^/\x00]*|\.\.[^/\x00]+)"
RELATIVE_PATH_PATTERN = rf"^{_PATH_SEGMENT}(/{_PATH_SEGMENT})*$"
"""A path inside the build context: not absolute and never climbing out with `..`."""

MAX_BUILD_ARGS = 64

_DURATION_RE = re.compile(DURATION_PATTERN)
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}

SOURCE_RULE_MESSAGE = "exactly one source must be set: configMap"

ResourceName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]


def parse_duration(value: str) -> int:
    """Seconds in a duration such as `1h30m` or `45s` (the subset of Go durations CRDs use)."""
    if not value or not _DURATION_RE.match(value):
        raise ValueError(f"{value!r} is not a duration such as 30m, 1h30m or 90s")
    return sum(int(amount) * _UNIT_SECONDS[unit] for amount, unit in re.findall(r"([0-9]+)([hms])", value))


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="forbid",
        frozen=True,
    )


class ConfigMapSource(_Model):
    """A build context held in a ConfigMap of the ServiceBuild's namespace."""

    name: ResourceName
    """The ConfigMap's name; each key becomes a file of the build context."""


class Source(_Model):
    """Where the build context comes from; exactly one source must be set."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "[has(self.configMap)].filter(s, s).size() == 1", "message": SOURCE_RULE_MESSAGE},
            ],
        },
    )

    config_map: ConfigMapSource | None = None
    """A small build context kept in a ConfigMap: each key is a file."""

    @model_validator(mode="after")
    def exactly_one(self) -> "Source":
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(SOURCE_RULE_MESSAGE)
        return self


class Output(_Model):
    """Where the built image is pushed."""

    image: Annotated[str, Field(min_length=1, max_length=512, pattern=IMAGE_PATTERN)]
    """The image to push, `registry/repository:tag`; the tag defaults to `latest`."""

    push_secret: ResourceName | None = None
    """A `kubernetes.io/dockerconfigjson` Secret with push credentials for the registry."""

    @property
    def ref(self) -> ImageRef:
        return parse_image(self.image)


class CacheMode(StrEnum):
    MIN = "min"
    MAX = "max"


class Cache(_Model):
    """The registry-backed layer cache; on unless disabled."""

    disabled: bool = False
    """Build without importing or exporting a cache."""

    mode: CacheMode = CacheMode.MAX
    """`max` caches every intermediate stage (best for multi-stage builds), `min` only the final one."""

    ref: Annotated[str, Field(max_length=512, pattern=IMAGE_PATTERN)] | None = None
    """Where the cache lives; defaults to the output repository with the tag `buildcache`."""


class ServiceBuildSpec(_Model):
    """The desired build of one service image."""

    source: Source
    """The build context."""

    dockerfile: Annotated[str, Field(min_length=1, max_length=255, pattern=RELATIVE_PATH_PATTERN)] = (
        "Dockerfile"
    )
    """Path of the Dockerfile inside the build context."""

    target: (
        Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] | None
    ) = None
    """The multi-stage target to build; default: the Dockerfile's last stage."""

    build_args: dict[
        Annotated[str, Field(pattern=BUILD_ARG_PATTERN)], Annotated[str, Field(max_length=4096)]
    ] = Field(default_factory=dict, max_length=MAX_BUILD_ARGS)
    """`ARG` values passed to the Dockerfile."""

    output: Output
    """Where to push the image."""

    cache: Cache = Field(default_factory=Cache)
    """The registry-backed layer cache."""

    timeout: Annotated[
        str,
        Field(
            pattern=DURATION_PATTERN,
            min_length=2,
            max_length=32,
            json_schema_extra={
                "x-kubernetes-validations": [
                    {"rule": "duration(self) > duration('0s')", "message": "timeout must be longer than 0s"},
                ],
            },
        ),
    ] = "30m"
    """How long a build may run before it is stopped and reported as failed, e.g. `30m` or `1h`."""

    @field_validator("timeout")
    @classmethod
    def timeout_is_positive(cls, value: str) -> str:
        if parse_duration(value) == 0:
            raise ValueError("must be longer than 0s")
        return value

    @property
    def timeout_seconds(self) -> int:
        return parse_duration(self.timeout)

    @property
    def cache_ref(self) -> ImageRef:
        if self.cache.ref:
            return parse_image(self.cache.ref)
        return self.output.ref.with_tag("buildcache")


class Phase(StrEnum):
    PENDING = "Pending"
    BUILDING = "Building"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


ConditionStatus = Literal["True", "False", "Unknown"]


class _StatusModel(_Model):
    # Written by the operator and read back: fields of other operator versions are tolerated.
    model_config = ConfigDict(extra="ignore")


class Condition(_StatusModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str
    status: ConditionStatus
    reason: str
    """CamelCase reason, stable for tools to match on."""
    message: str = ""
    observed_generation: int | None = None
    last_transition_time: str
    """RFC 3339 time the status last flipped."""


class PlatformOutput(_StatusModel):
    """One platform's image inside a multi-platform index."""

    platform: str
    digest: str
    size_bytes: int
    layers: int


class BuildOutput(_StatusModel):
    """The result of the last successful build; kept while a new build runs or fails."""

    image: str
    """`registry/repository:tag@digest`: pull this to get exactly what was built."""
    digest: str
    """The digest the registry serves for the pushed tag."""
    size_bytes: int
    """Config plus compressed layers as the registry serves them (all platforms summed)."""
    size: str
    """The size for humans, e.g. `12.0 MiB`."""
    layers: int
    generation: int
    """The spec generation this output was built from."""
    platforms: list[PlatformOutput] | None = None
    """Per-platform images when the output is a multi-platform index."""


class CacheStats(_StatusModel):
    """How much of the last finished build came from the cache."""

    cached_steps: int
    total_steps: int


class ServiceBuildStatus(_StatusModel):
    """What the operator observed and did; written only by the operator."""

    observed_generation: int | None = None
    phase: Phase | None = None
    conditions: list[Condition] = Field(default_factory=list)
    message: str | None = None
    """A human-readable summary of the last transition."""
    job_name: str | None = None
    start_time: str | None = None
    completion_time: str | None = None
    duration_seconds: int | None = None
    output: BuildOutput | None = None
    cache: CacheStats | None = None
    failed_step: str | None = None
    """The Dockerfile step the last failed build stopped at, when BuildKit named one."""
    log_tail: str | None = None
    """The last lines of the failed build's log."""

    def condition(self, condition_type: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == condition_type), None)


def status_to_dict(status: ServiceBuildStatus) -> dict[str, Any]:
    """The status as the API stores it: camelCase keys, unset fields left out."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


class ObjectMeta(_StatusModel):
    """The part of metadata the operator reads."""

    name: str
    namespace: str
    uid: str
    generation: int = 1


class ServiceBuild(_StatusModel):
    """A whole ServiceBuild: identity, desired spec and the last written status."""

    metadata: ObjectMeta
    spec: ServiceBuildSpec
    status: ServiceBuildStatus = Field(default_factory=ServiceBuildStatus)
