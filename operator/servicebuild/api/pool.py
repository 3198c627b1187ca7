"""Pydantic models of the BuilderPool resource: a long-running rootless BuildKit daemon of one namespace.

A pool serves the builds of its own namespace only: its daemon runs without a process sandbox, so a `RUN`
step of one build could reach the daemon and the cache later builds use (docs/builder-pools.md).
"""

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from servicebuild.api.models import (
    DURATION_PATTERN,
    QUANTITY_PATTERN,
    Condition,
    ImageReference,
    ObjectMeta,
    ResourceName,
    Resources,
    _Model,
    _StatusModel,
    parse_duration,
)
from servicebuild.validation import describe_validation_error

POOL_KIND = "BuilderPool"
POOL_PLURAL = "builderpools"
POOL_SINGULAR = "builderpool"
POOL_SHORT_NAMES = ("bpool",)

MAX_CONCURRENT_BUILDS = 64
STORAGE_RULE_MESSAGE = "exactly one storage must be set: emptyDir or persistentVolumeClaim"

Size = Annotated[str, Field(min_length=1, max_length=32, pattern=QUANTITY_PATTERN)]
"""A storage quantity such as `10Gi`."""


class EmptyDirStorage(_Model):
    """The daemon's state in an emptyDir: lost, with the cache, whenever its Pod is replaced."""

    size_limit: Size = "10Gi"
    """The most the state may use before the kubelet evicts the daemon's Pod; default: `10Gi`."""


class ClaimStorage(_Model):
    """The daemon's state on a PersistentVolumeClaim: the cache outlives its Pod (a StatefulSet keeps it)."""

    storage_class_name: ResourceName | None = None
    """The StorageClass of the claim; default: the cluster's default StorageClass."""

    size: Size
    """How much storage the claim asks for, e.g. `50Gi`."""


class PoolStorage(_Model):
    """Where the daemon keeps its state and cache; exactly one of the two."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.emptyDir), has(self.persistentVolumeClaim)].filter(s, s).size() == 1",
                    "message": STORAGE_RULE_MESSAGE,
                },
            ],
        },
    )

    empty_dir: EmptyDirStorage | None = None
    """An emptyDir with a size limit."""

    persistent_volume_claim: ClaimStorage | None = None
    """A PersistentVolumeClaim per daemon, made from this template."""

    @model_validator(mode="after")
    def exactly_one(self) -> "PoolStorage":
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(STORAGE_RULE_MESSAGE)
        return self


def _default_storage() -> PoolStorage:
    return PoolStorage(empty_dir=EmptyDirStorage())


class BuilderPoolSpec(_Model):
    """The desired builder pool: one rootless BuildKit daemon with its cache, for this namespace's builds."""

    builder_image: ImageReference | None = None
    """Another rootless BuildKit image for the daemon, one the operator's
    `SERVICEBUILD_ALLOWED_BUILDER_IMAGES` names; default: the operator's `SERVICEBUILD_BUILDKIT_IMAGE`."""

    resources: Resources | None = None
    """Resources of the daemon's container; default: requests `cpu: 500m` and `memory: 1Gi`, limit `memory:
    4Gi`. When given, they replace the defaults as a whole."""

    storage: PoolStorage = Field(default_factory=_default_storage)
    """The daemon's state and cache: an `emptyDir` (default, `sizeLimit: 10Gi`) or a
    `persistentVolumeClaim` (`size`, `storageClassName`), which keeps the cache across restarts."""

    max_concurrent_builds: Annotated[int, Field(ge=1, le=MAX_CONCURRENT_BUILDS)] = 4
    """How many builds the daemon runs at once; more wait for it. Default: 4, at most 64."""

    cache_export: bool = False
    """Whether builds on the pool also export the registry cache (`spec.cache` of each ServiceBuild), for
    Jobs and other pools to import; default: false, the daemon keeps its own cache, and a cold daemon still
    imports the registry cache. An export costs every build a push of the cache."""

    idle_timeout: Annotated[str, Field(pattern=DURATION_PATTERN, min_length=2, max_length=32)] = "30m"
    """How long the daemon runs without builds before it is scaled to zero, to start again on the next
    build, e.g. `1h`; `0s`: always on. Default: `30m`."""

    @field_validator("idle_timeout")
    @classmethod
    def idle_timeout_is_a_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def idle_timeout_seconds(self) -> int:
        return parse_duration(self.idle_timeout)


class BuilderPoolStatus(_StatusModel):
    """What the operator observed of the pool's daemon; written only by the operator."""

    observed_generation: int | None = None
    """The spec generation this status describes."""
    conditions: list[Condition] = Field(default_factory=list)
    """The standard conditions `Ready` (the daemon is available), `Reconciling` and `Stalled`."""
    endpoint: str | None = None
    """Where the daemon listens, `tcp://<service>.<namespace>.svc:1234`; it serves only clients with a
    certificate of the pool's CA, which only the operator holds."""

    builds_running: Annotated[int, Field(ge=0)] | None = None
    """How many builds the daemon runs now, as the operator last saw them."""

    def condition(self, condition_type: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == condition_type), None)


def pool_status_to_dict(status: BuilderPoolStatus) -> dict[str, Any]:
    """The status as the API stores it: camelCase keys, unset fields left out."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


class BuilderPool(_StatusModel):
    """A whole BuilderPool: identity, desired spec and the last written status."""

    metadata: ObjectMeta
    spec: BuilderPoolSpec
    status: BuilderPoolStatus = Field(default_factory=BuilderPoolStatus)


class InvalidBuilderPool(_StatusModel):
    """A BuilderPool whose spec the model rejects, and why."""

    metadata: ObjectMeta
    status: BuilderPoolStatus
    problem: str


def parse_builderpool(body: Mapping[str, Any]) -> BuilderPool | InvalidBuilderPool:
    """The object as the API server returned it, parsed once; an unreadable status counts as empty."""
    metadata = ObjectMeta.model_validate(body["metadata"])
    try:
        status = BuilderPoolStatus.model_validate(body.get("status") or {})
    except ValidationError:
        status = BuilderPoolStatus()
    try:
        spec = BuilderPoolSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        problem = describe_validation_error(exc, prefix="spec")
        return InvalidBuilderPool(metadata=metadata, status=status, problem=problem)
    return BuilderPool(metadata=metadata, spec=spec, status=status)
