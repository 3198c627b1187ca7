"""Pydantic models of the ServiceBuild resource: the contract with users and GitOps tools."""

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    computed_field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from servicebuild.imageref import IMAGE_PATTERN, ImageRef, parse_image
from servicebuild.times import format_time
from servicebuild.validation import describe_validation_error

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

SOURCE_RULE_MESSAGE = "exactly one source must be set: git or configMap"

ResourceName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
DataKey = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
"""A key of a ConfigMap or Secret."""
RelativePath = Annotated[str, Field(min_length=1, max_length=255, pattern=RELATIVE_PATH_PATTERN)]
ImageReference = Annotated[str, Field(min_length=1, max_length=512, pattern=IMAGE_PATTERN)]
LabelValue = Annotated[
    str, Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
]
Duration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        min_length=2,
        max_length=32,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "duration(self) > duration('0s')", "message": "must be longer than 0s"},
            ],
        },
    ),
]

Timestamp = Annotated[
    AwareDatetime,
    PlainSerializer(format_time, return_type=str),
    Field(json_schema_extra={"format": "date-time"}),
]
"""An RFC 3339 time as Kubernetes writes it, e.g. `2026-11-28T10:15:00Z`; the API server checks the format.
An aware `datetime` inside the operator."""

PollInterval = Annotated[str, Field(pattern=DURATION_PATTERN, min_length=2, max_length=32)]
"""A Go duration such as `5m`; `0s` turns polling off."""

_URL_CHARS = r'[!-"$-~]'
"""Printable ASCII but `#` (BuildKit's ref separator); spelled out so that the API server's RE2 and
pydantic read it the same way (their whitespace classes differ on Unicode spaces)."""
_URL_CHARS_NO_AT = r'[!-"$-?A-~]'
GIT_URL_PATTERN = (
    rf"^(https?://{_URL_CHARS_NO_AT}+\.git/?|git://{_URL_CHARS}+|ssh://{_URL_CHARS}+"
    rf"|[A-Za-z0-9_.-]+@[A-Za-z0-9.-]+:{_URL_CHARS}+)$"
)
"""What BuildKit accepts as a git context: HTTP(S) URLs ending in .git, git://, ssh:// or scp-style."""
GIT_REVISION_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$"
REVISION_RULE = (
    "!self.contains('..') && !self.endsWith('.') && !self.endsWith('/') && !self.endsWith('.lock')"
)
REVISION_MESSAGE = "must be a branch, tag or commit name (no '..', not ending in '.', '/' or '.lock')"
_PLACEHOLDER = r"\{(commit|shortCommit|generation|build|timestamp)\}"
TAG_TEMPLATE_PATTERN = rf"^([A-Za-z0-9_]|{_PLACEHOLDER})([A-Za-z0-9_.-]|{_PLACEHOLDER})*$"
"""A tag (not starting with `.` or `-`) with optional placeholders: {commit}, {shortCommit},
{generation}, {timestamp}."""
COMMIT_TAGS_MESSAGE = "output.tags: {commit} and {shortCommit} need a git source"
PLATFORM_PATTERN = r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$"
QUANTITY_PATTERN = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$"
MAX_LIST_ITEMS = 16
SHORT_COMMIT_LENGTH = 12
MAX_FINDINGS = 50
AFFINITY_KINDS = frozenset({"nodeAffinity", "podAffinity", "podAntiAffinity"})


def parse_duration(value: str) -> int:
    """Seconds in a duration such as `1h30m` or `45s` (the subset of Go durations CRDs use)."""
    if not value or not _DURATION_RE.match(value):
        raise ValueError(f"{value!r} is not a duration such as 30m, 1h30m or 90s")
    return sum(int(amount) * _UNIT_SECONDS[unit] for amount, unit in re.findall(r"([0-9]+)([hms])", value))


def format_duration(seconds: int) -> str:
    """`83` → `1m23s`: the form `parse_duration` reads, zero units left out (`3605` → `1h5s`)."""
    hours, rest = divmod(max(0, seconds), 3600)
    minutes, rest = divmod(rest, 60)
    parts = [f"{amount}{unit}" for amount, unit in ((hours, "h"), (minutes, "m"), (rest, "s")) if amount]
    return "".join(parts) or "0s"


_Item = TypeVar("_Item")


def _unique(items: list[_Item]) -> list[_Item]:
    """What `x-kubernetes-list-type: set` enforces at `kubectl apply`, for the model too."""
    duplicates = sorted({str(item) for item in items if items.count(item) > 1})
    if duplicates:
        raise ValueError(f"duplicate entries: {', '.join(duplicates)}")
    return items


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="forbid",
        frozen=True,
    )


class ConfigMapSource(_Model):
    """A build context held in a ConfigMap of the ServiceBuild's namespace; a change of its data starts a new
    build."""

    name: ResourceName
    """The ConfigMap's name; each key becomes a file of the build context, unless `archive` is set."""

    archive: Annotated[str, Field(max_length=253, pattern=r"^[-._a-zA-Z0-9]+\.(tar\.gz|tgz)$")] | None = None
    """A `binaryData` key holding the whole context as a `.tar.gz` or `.tgz` archive, for contexts with
    folders: it is unpacked instead of copying the keys as files. Default: none, each key is a file.

    See docs/servicebuild.md#contexts-with-folders in the operator's repository."""


class GitSource(_Model):
    """A build context fetched by BuildKit from a git repository."""

    url: Annotated[str, Field(min_length=1, max_length=2048, pattern=GIT_URL_PATTERN)]
    """The repository: `https://host/org/repo.git` (HTTP(S) URLs end in `.git`), `ssh://git@host/org/repo.git`,
    `git@host:org/repo.git` or `git://host/org/repo.git`."""

    revision: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=255,
                pattern=GIT_REVISION_PATTERN,
                json_schema_extra={
                    "x-kubernetes-validations": [{"rule": REVISION_RULE, "message": REVISION_MESSAGE}]
                },
            ),
        ]
        | None
    ) = None
    """A branch, tag or commit; default: the repository's default branch. The operator resolves it to a commit
    when the build starts and builds exactly that commit, once per spec generation unless `pollInterval`
    has it resolved again. With an SSH URL it must be a full commit id: the operator does not contact SSH
    remotes.

    See docs/servicebuild.md#revision-resolution in the operator's repository."""

    context_dir: RelativePath | None = None
    """The build context's folder inside the repository (for monorepos); default: the repository root."""

    poll_interval: PollInterval | None = None
    """How often the operator resolves the revision (a branch, the default branch or a tag) again and builds
    a new commit, e.g. `5m`; default: never (`0s` too): the revision is resolved once per spec generation.
    At least the operator's `SERVICEBUILD_MIN_POLL_INTERVAL` (1m by default); not for SSH URLs, which the
    operator does not contact, nor for a full commit id, which cannot move.

    See docs/servicebuild.md#following-a-branch in the operator's repository."""

    auth_secret: ResourceName | None = None
    """A Secret in the same namespace with the credentials; default: none (a public repository). HTTPS:
    the key `token`, or `username` and `password`. SSH: the key `ssh-privatekey` (not passphrase-protected).
    Only the key the build uses is mounted into the build Pod.

    See docs/servicebuild.md#git-credentials in the operator's repository."""

    @field_validator("revision")
    @classmethod
    def no_parent_references(cls, value: str | None) -> str | None:
        if value is not None and (".." in value or value.endswith((".", "/", ".lock"))):
            raise ValueError(REVISION_MESSAGE)
        return value


class Source(_Model):
    """Where the build context comes from; exactly one source must be set."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.git), has(self.configMap)].filter(s, s).size() == 1",
                    "message": SOURCE_RULE_MESSAGE,
                },
            ],
        },
    )

    git: GitSource | None = None
    """A git repository; BuildKit fetches it itself, with no clone step in the Job."""

    config_map: ConfigMapSource | None = None
    """A small build context kept in a ConfigMap (at most 1 MiB): each key is a file.

    See docs/servicebuild.md#configmap in the operator's repository."""

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
    """A `kubernetes.io/dockerconfigjson` Secret in the same namespace with push credentials for the registry;
    default: none, the image is pushed without credentials."""

    tags: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=128, pattern=TAG_TEMPLATE_PATTERN)]],
        Field(max_length=MAX_LIST_ITEMS, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(default_factory=list)
    """Up to 16 more tags pushed with the same image; default: none. Placeholders make unique, sortable tags:
    `{commit}` and `{shortCommit}` (its first 12 characters; git sources only), `{generation}`, `{build}`
    (the build's number, `status.build`) and `{timestamp}` (UTC `YYYYMMDDhhmmss` when the Job is created).

    See docs/servicebuild.md#output-and-tags in the operator's repository."""

    @field_validator("tags")
    @classmethod
    def tags_are_unique(cls, tags: list[str]) -> list[str]:
        return _unique(tags)

    @property
    def ref(self) -> ImageRef:
        return parse_image(self.image)


class CacheMode(StrEnum):
    MIN = "min"
    MAX = "max"


class Cache(_Model):
    """The registry-backed layer cache; on unless disabled."""

    disabled: bool = False
    """Build without importing or exporting any cache, `importRefs` included; default: false."""

    mode: CacheMode = CacheMode.MAX
    """`max` caches every intermediate stage (best for multi-stage builds), `min` only the final one;
    default: `max`."""

    ref: ImageReference | None = None
    """Where the cache is written and read; default: the output repository with the tag `buildcache`. A failed
    export never fails the build: it shows as the condition `CacheExported=False`."""

    import_refs: Annotated[list[ImageReference], Field(max_length=8)] = Field(default_factory=list)
    """Up to 8 more caches to read from, never written, e.g. the main branch's cache for a feature branch;
    default: none."""


class SecretKeyRef(_Model):
    """One key of a Secret in the ServiceBuild's namespace."""

    name: ResourceName
    """The Secret's name."""

    key: DataKey
    """The key of the Secret that holds the value."""


class BuildSecret(_Model):
    """A secret the Dockerfile reads with `RUN --mount=type=secret,id=<id>`; never stored in a layer."""

    id: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    """The id the Dockerfile's `--mount=type=secret,id=` names."""

    secret_ref: SecretKeyRef
    """Where the value is: a key of a Secret in the ServiceBuild's namespace."""


class Toleration(_Model):
    """A toleration of the build Pod (core/v1 Toleration)."""

    key: Annotated[str, Field(max_length=316)] | None = None
    """The taint key the toleration matches; default: empty, which with `operator: Exists` matches every
    taint."""

    operator: Literal["Exists", "Equal"] | None = None
    """`Equal` matches taints with this key and `value`, `Exists` taints with this key and any value;
    default: `Equal`."""

    value: Annotated[str, Field(max_length=63)] | None = None
    """The taint value the toleration matches with `operator: Equal`; empty with `Exists`."""

    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """The taint effect the toleration matches; default: every effect."""

    toleration_seconds: int | None = None
    """How long the build Pod stays on a node after a `NoExecute` taint it tolerates appears; default:
    forever. Ignored for the other effects."""


Quantity = Annotated[
    int | str,
    Field(json_schema_extra={"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}),
]


class Resources(_Model):
    """CPU, memory and ephemeral storage of the build container (core/v1 ResourceRequirements)."""

    requests: Annotated[dict[str, Quantity], Field(max_length=8)] = Field(default_factory=dict)
    """What the scheduler reserves for the build container, e.g. `cpu: 500m` and `memory: 1Gi`; default:
    none."""

    limits: Annotated[dict[str, Quantity], Field(max_length=8)] = Field(default_factory=dict)
    """The most the build container may use, e.g. `memory: 4Gi`; default: none. A build beyond its memory
    limit is killed."""

    @field_validator("requests", "limits")
    @classmethod
    def quantities(cls, values: dict[str, int | str]) -> dict[str, int | str]:
        """Checked as the CRD checks them, and kept as strings, the form Kubernetes serialises a quantity
        in: the Kubernetes client types quantities as strings and rejects a Job with `cpu: 2`."""
        normalised: dict[str, int | str] = {}
        for name, quantity in values.items():
            if isinstance(quantity, str) and not re.fullmatch(QUANTITY_PATTERN, quantity):
                raise ValueError(f"{name}: {quantity!r} is not a quantity such as 500m, 2 or 4Gi")
            normalised[name] = str(quantity)
        return normalised


class Triggers(_Model):
    """What else, besides a change of the spec or of its ConfigMap, starts a build."""

    base_images: bool = False
    """Rebuild when a base image the last build used gets a new digest under its tag (checked every
    `SERVICEBUILD_BASE_IMAGE_POLL_INTERVAL`, 30m by default); default: false.

    See docs/servicebuild.md#base-image-updates in the operator's repository."""


class Provenance(StrEnum):
    """How much BuildKit's SLSA provenance attestation records (`attest:provenance=mode=…`)."""

    MIN = "min"
    MAX = "max"
    OFF = "off"


class Attestations(_Model):
    """Attestations BuildKit pushes with the image; with any, the pushed result is an OCI index holding
    the image and an attestation manifest (some consumers reject such indexes)."""

    provenance: Provenance | None = None
    """SLSA provenance: `min` (how and from what the image was built), `max` (also the build's parameters,
    build argument values included: a build argument whose name looks like a secret refuses `max`), or
    `off`; default: the operator's `SERVICEBUILD_DEFAULT_PROVENANCE` (`min` unless set).

    See docs/servicebuild.md#attestations in the operator's repository."""

    sbom: bool = False
    """An SPDX software bill of materials, made by the scanner image the operator's
    `SERVICEBUILD_SBOM_SCANNER_IMAGE` names; default: false."""


class CheckPolicy(StrEnum):
    WARN = "Warn"
    FAIL = "Fail"


CHECK_RULE_PATTERN = r"^[A-Z][A-Za-z0-9]*$"
"""A rule's name as findings and BuildKit's build checks spell it, e.g. `RunsAsRoot`, `FromAsCasing`."""


class Checks(_Model):
    """What the Dockerfile findings may do to a build, and which rules to leave out."""

    policy: CheckPolicy = CheckPolicy.WARN
    """`Warn` reports findings in `status.findings` and the condition `DockerfileClean`, and builds anyway;
    `Fail` stops the build on an `error` finding (for a ConfigMap source before any Job exists), as
    `Stalled` with the reason `DockerfileCheckFailed`. Default: `Warn`.

    See docs/dockerfile-findings.md in the operator's repository."""

    skip: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=64, pattern=CHECK_RULE_PATTERN)]],
        Field(max_length=32, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(default_factory=list)
    """Up to 32 rules not to report, the operator's own (`RunsAsRoot`) or BuildKit's build checks
    (`FromAsCasing`, passed to BuildKit as `BUILDKIT_DOCKERFILE_CHECK=skip=…`); default: none."""

    @field_validator("skip")
    @classmethod
    def rules_are_unique(cls, skip: list[str]) -> list[str]:
        return _unique(skip)


class SizeBudgetAction(StrEnum):
    WARN = "Warn"
    FAIL = "Fail"


SIZE_BUDGET_RULE_MESSAGE = "sizeBudget: give maxBytes, maxGrowthPercent or both"


class SizeBudget(_Model):
    """How large each platform's image may be, and what happens to one that is larger."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.maxBytes) || has(self.maxGrowthPercent)",
                    "message": SIZE_BUDGET_RULE_MESSAGE,
                }
            ],
        },
    )

    max_bytes: Quantity | None = None
    """The most bytes each platform's image may have (its config and compressed layers, as the registry
    serves them), a quantity such as `50Mi` or `200M`; default: no limit."""

    max_growth_percent: Annotated[int, Field(ge=0, le=100_000)] | None = None
    """The most each platform's image may grow, in percent, against the last successful build's image of
    that platform; default: no limit."""

    action: SizeBudgetAction = SizeBudgetAction.WARN
    """`Warn`: an image over budget is pushed and tagged as any other, with the condition
    `WithinSizeBudget=False` and a Warning Event; `Ready` is unaffected. `Fail`: the image is pushed by
    digest only and the operator tags it only when it is within budget; over budget, the build is `Stalled`
    with the reason `SizeBudgetExceeded` and the tags keep the image they had. `Fail` needs the push Secret
    to grant the operator push rights. Default: `Warn`.

    See docs/servicebuild.md#size-budget in the operator's repository."""

    @field_validator("max_bytes")
    @classmethod
    def quantity(cls, value: int | str | None) -> str | None:
        """Checked as the CRD checks it, kept as a string (as Kubernetes serialises a quantity)."""
        if isinstance(value, str) and not re.fullmatch(QUANTITY_PATTERN, value):
            raise ValueError(f"{value!r} is not a quantity such as 50Mi or 200M")
        return None if value is None else str(value)

    @model_validator(mode="after")
    def some_limit(self) -> "SizeBudget":
        if self.max_bytes is None and self.max_growth_percent is None:
            raise ValueError(SIZE_BUDGET_RULE_MESSAGE)
        return self


MAX_HISTORY = 50


class ServiceBuildSpec(_Model):
    """The desired build of one service image."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.output.tags) || has(self.source.git)"
                    " || self.output.tags.all(t, !t.contains('{commit}') && !t.contains('{shortCommit}'))",
                    "message": COMMIT_TAGS_MESSAGE,
                },
            ],
        },
    )

    source: Source
    """Where the build context comes from: exactly one of `git` and `configMap`.

    See docs/servicebuild.md#source in the operator's repository."""

    dockerfile: RelativePath = "Dockerfile"
    """The Dockerfile's path inside the build context (inside `contextDir` for git); default: `Dockerfile`."""

    target: (
        Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] | None
    ) = None
    """The multi-stage target to build; default: the Dockerfile's last stage."""

    build_args: dict[
        Annotated[str, Field(pattern=BUILD_ARG_PATTERN)], Annotated[str, Field(max_length=4096)]
    ] = Field(default_factory=dict, max_length=MAX_BUILD_ARGS)
    """Up to 64 `ARG` values passed to the Dockerfile; default: none. Not for secrets: build arguments end
    up in the image's history."""

    output: Output
    """Where to push the image."""

    cache: Cache = Field(default_factory=Cache)
    """The registry-backed layer cache; default: on, `mode: max`, in the output repository with the tag
    `buildcache`.

    See docs/servicebuild.md#cache in the operator's repository."""

    secrets: Annotated[
        list[BuildSecret],
        Field(
            max_length=MAX_LIST_ITEMS,
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"]},
        ),
    ] = Field(default_factory=list)
    """Up to 16 build secrets, visible only to `RUN --mount=type=secret` steps; default: none. Their values
    never reach the Job spec, the image, the logs or the status.

    See docs/servicebuild.md#build-secrets in the operator's repository."""

    platforms: Annotated[
        list[Annotated[str, Field(max_length=64, pattern=PLATFORM_PATTERN)]],
        Field(max_length=8, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(default_factory=list)
    """Build one multi-platform image (an index) for these platforms, e.g. `linux/amd64` and `linux/arm64`;
    default: the build node's platform. Foreign platforms need QEMU (binfmt) on the build nodes.

    See docs/servicebuild.md#platforms in the operator's repository."""

    resources: Resources | None = None
    """Resources of the build container; default: requests `cpu: 500m` and `memory: 1Gi`, limit `memory: 4Gi`.
    When given, they replace the defaults as a whole."""

    node_selector: Annotated[dict[str, Annotated[str, Field(max_length=63)]], Field(max_length=32)] = Field(
        default_factory=dict
    )
    """Labels of the nodes the build Pod may run on; default: any node."""

    tolerations: Annotated[list[Toleration], Field(max_length=32)] = Field(default_factory=list)
    """Taints the build Pod tolerates; default: none."""

    affinity: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-servicebuild-k8s-type": "Affinity"}
    )
    """Scheduling affinity of the build Pod (core/v1 Affinity); default: none."""

    service_account_name: ResourceName | None = None
    """The build Pod's ServiceAccount, e.g. for image pull secrets; its token is never mounted. Default: the
    namespace's `default`."""

    priority_class_name: ResourceName | None = None
    """The build Pod's PriorityClass; default: none, the cluster's default priority."""

    queue_name: LabelValue | None = None
    """A Kueue LocalQueue: the Job is labelled `kueue.x-k8s.io/queue-name` and waits, suspended by Kueue,
    until it is admitted; default: none.

    See docs/servicebuild.md#resources-and-scheduling in the operator's repository."""

    builder_image: ImageReference | None = None
    """Another rootless BuildKit image for this build, one the operator's
    `SERVICEBUILD_ALLOWED_BUILDER_IMAGES` names; default: the operator's `SERVICEBUILD_BUILDKIT_IMAGE`.

    See docs/servicebuild.md#builder-image in the operator's repository."""

    builder_pool: ResourceName | None = None
    """A BuilderPool in the same namespace whose long-running BuildKit daemon builds this ServiceBuild, with
    its cache; default: none, each build runs in a Job of its own. On a pool, the build Pod's fields
    (`resources`, `nodeSelector`, `tolerations`, `affinity`, `serviceAccountName`, `priorityClassName`,
    `queueName`, `builderImage`) do not apply: the pool's daemon builds.

    See docs/builder-pools.md in the operator's repository."""

    timeout: Duration = "30m"
    """How long a build may run before it is stopped and reported as failed, e.g. `45m` or `1h30m`; default:
    `30m`."""

    pending_timeout: Duration = "10m"
    """How long the build Pod may wait to start (unschedulable, image pull failing) before the build is
    reported as failed; default: `10m`.

    See docs/servicebuild.md#timeouts in the operator's repository."""

    triggers: Triggers = Field(default_factory=Triggers)
    """What else starts a build besides a change of the spec or of its ConfigMap; every trigger is off
    by default."""

    history_limit: Annotated[int, Field(ge=1, le=MAX_HISTORY)] = 10
    """How many finished builds `status.history` keeps, newest first; default: 10, at most 50."""

    attestations: Attestations = Field(default_factory=Attestations)
    """Provenance and SBOM attestations pushed with the image; default: provenance as the operator's
    `SERVICEBUILD_DEFAULT_PROVENANCE` says, no SBOM.

    See docs/servicebuild.md#attestations in the operator's repository."""
    checks: Checks = Field(default_factory=Checks)
    """The Dockerfile findings: whether an `error` finding stops the build, and rules to skip; default:
    findings are reported, never block.

    See docs/dockerfile-findings.md in the operator's repository."""

    size_budget: SizeBudget | None = None
    """How large each platform's image may be (`maxBytes`, `maxGrowthPercent`) and whether an image over
    budget only warns or fails the build (`action`); default: no budget.

    See docs/servicebuild.md#size-budget in the operator's repository."""

    @field_validator("timeout", "pending_timeout")
    @classmethod
    def duration_is_positive(cls, value: str) -> str:
        if parse_duration(value) == 0:
            raise ValueError("must be longer than 0s")
        return value

    @field_validator("affinity")
    @classmethod
    def affinity_kinds(cls, affinity: dict[str, Any] | None) -> dict[str, Any] | None:
        # The CRD schema checks the whole core/v1 Affinity at `kubectl apply`; the model, used on
        # objects the API server already checked, only guards the top level.
        unknown = sorted(set(affinity or {}) - AFFINITY_KINDS)
        if unknown:
            raise ValueError(
                f"unknown field {unknown[0]!r}; an affinity has {', '.join(sorted(AFFINITY_KINDS))}"
            )
        return affinity

    @field_validator("platforms")
    @classmethod
    def platforms_are_unique(cls, platforms: list[str]) -> list[str]:
        return _unique(platforms)

    @field_validator("secrets")
    @classmethod
    def secret_ids_are_unique(cls, secrets: list["BuildSecret"]) -> list["BuildSecret"]:
        _unique([secret.id for secret in secrets])
        return secrets

    @model_validator(mode="after")
    def commit_placeholders_need_git(self) -> "ServiceBuildSpec":
        if self.source.git is None and any("ommit}" in tag for tag in self.output.tags):
            raise ValueError(COMMIT_TAGS_MESSAGE)
        return self

    @property
    def timeout_seconds(self) -> int:
        return parse_duration(self.timeout)

    @property
    def pending_timeout_seconds(self) -> int:
        return parse_duration(self.pending_timeout)

    @property
    def cache_ref(self) -> ImageRef:
        if self.cache.ref:
            return parse_image(self.cache.ref)
        return self.output.ref.with_tag("buildcache")


class Phase(StrEnum):
    QUEUED = "Queued"
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
    """What the condition is about: `Ready`, `Reconciling`, `Stalled`, `CacheExported` or
    `DockerfileClean`."""
    status: ConditionStatus
    """Whether the condition holds: `True`, `False` or `Unknown`."""
    reason: str
    """Why the condition is as it is, in CamelCase: stable for tools to match on.

    See docs/servicebuild.md#phases-and-conditions and docs/failure-reasons.md in the operator's
    repository."""
    message: str = ""
    """Why the condition is as it is, for humans; may be empty."""
    observed_generation: int | None = None
    """The spec generation the condition was set for."""
    last_transition_time: Timestamp
    """When `status` last changed (RFC 3339)."""


class LayerOutput(_StatusModel):
    """One layer of the image and what made it."""

    size_bytes: int
    """The layer's compressed size, as the registry serves it."""
    instruction: str
    """The instruction that made it, from the image's history; as the Dockerfile writes it when the target
    stage's instructions were known (ConfigMap sources), else as BuildKit recorded it (which drops
    `--from=`)."""


class _LayerBytes(_StatusModel):
    """Where an image's bytes are."""

    base_bytes: int | None = None
    """The layers of the target stage's base image (everything before the stage's own instructions); only
    when the target stage's instructions are known and agree with the image's history."""
    added_bytes: int | None = None
    """The layers the target stage's own instructions added; `sizeBytes` is the config plus `baseBytes`
    plus `addedBytes`."""
    largest_layers: Annotated[list[LayerOutput], Field(max_length=5)] | None = None
    """The largest layers, at most 5, largest first, each with the instruction that made it."""


class PlatformOutput(_LayerBytes):
    """One platform's image inside a multi-platform index."""

    platform: str
    """The platform, e.g. `linux/arm64`."""
    digest: str
    """The digest of this platform's image manifest."""
    size_bytes: int
    """Config plus compressed layers of this platform's image, as the registry serves them."""
    layers: int
    """The number of layers of this platform's image."""


class SourceStatus(_StatusModel):
    """What was built: the resolved source of the last build."""

    commit: str | None = None
    """The git commit the revision resolved to (git sources)."""
    context_digest: str | None = None
    """The `sha256:` digest of the ConfigMap's data (ConfigMap sources); a change of it starts a new build."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def short_commit(self) -> str | None:
        """The commit's first 12 characters, as the `{shortCommit}` tag placeholder has them: the COMMIT
        column of `kubectl get sb -o wide`."""
        return self.commit[:SHORT_COMMIT_LENGTH] if self.commit else None


class Trigger(StrEnum):
    """Why a build happened."""

    CREATED = "Created"
    SPEC_CHANGED = "SpecChanged"
    SOURCE_CHANGED = "SourceChanged"
    """The ConfigMap the context comes from changed."""
    NEW_COMMIT = "NewCommit"
    BASE_IMAGE_CHANGED = "BaseImageChanged"
    REQUESTED = "Requested"
    """The `servicebuild.dev/requested-at` annotation changed."""


class BuildResult(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUPERSEDED = "Superseded"


class BaseImage(_StatusModel):
    """A base image a stage of the target used, as BuildKit resolved it."""

    ref: str
    """The reference the Dockerfile names, e.g. `docker.io/library/python:3.12-slim`."""
    digest: str
    """The digest BuildKit pulled for it."""


class BuildRecord(_StatusModel):
    """One finished build, for `status.history`."""

    build: int
    """The build's number."""
    trigger: Trigger
    """Why it happened."""
    generation: int
    """The spec generation it built."""
    commit: str | None = None
    """The git commit it built (git sources)."""
    context_digest: str | None = None
    """The ConfigMap content it built (ConfigMap sources)."""
    start_time: Timestamp | None = None
    """When its Job started."""
    completion_time: Timestamp | None = None
    """When it ended."""
    duration_seconds: int | None = None
    """How long it ran."""
    result: BuildResult
    """`Succeeded`, `Failed`, or `Superseded` (stopped for a newer build)."""
    reason: str | None = None
    """Why it failed, as the Stalled condition said."""
    digest: str | None = None
    """The image it pushed, when it succeeded."""
    size_bytes: int | None = None
    """The image's size, when it succeeded."""
    cached_steps: int | None = None
    """How many of its steps came from the cache."""
    job_name: str | None = None
    """Its Job; kept for the last builds (see the operator's Job history settings)."""


class AttestationType(StrEnum):
    PROVENANCE = "provenance"
    SBOM = "sbom"


class AttestationOutput(_StatusModel):
    """One attestation the registry serves with the image."""

    type: AttestationType
    """`provenance` (SLSA) or `sbom` (SPDX or CycloneDX)."""
    digest: str
    """The digest of the attestation manifest that holds it."""
    subject: str
    """The digest of the platform image manifest it describes."""
    platform: str | None = None
    """That image's platform, e.g. `linux/amd64`."""


ProvenanceRecorded = Literal["none", "min", "max"]


class BuildOutput(_LayerBytes):
    """The result of the last successful build; kept while a new build runs or fails. `baseBytes`,
    `addedBytes` and `largestLayers` are here for an image of one platform (an index with attestations
    included), and in each of `platforms` for an index."""

    image: str
    """`registry/repository:tag@digest`: pull this to get exactly what was built."""
    digest: str
    """The digest the registry serves for the pushed tag."""
    size_bytes: int
    """Config plus compressed layers as the registry serves them (all platforms summed)."""
    size: str
    """The size for humans, e.g. `12.0 MiB`."""
    layers: int
    """The number of layers of the image (all platforms summed)."""
    generation: int
    """The spec generation this output was built from."""
    platforms: list[PlatformOutput] | None = None
    """Per-platform images when the output is a multi-platform index."""
    tags: list[str] | None = None
    """Every reference pushed for this image, `output.tags` expanded."""
    provenance: ProvenanceRecorded | None = None
    """The provenance the registry serves with the image: `none`, `min` or `max`.

    See docs/servicebuild.md#attestations in the operator's repository."""
    attestations: list[AttestationOutput] | None = None
    """The attestations the registry serves with the image, read back like the image itself; they are not
    counted in its size."""


class QueueStatus(_StatusModel):
    """Where a build waits for a free slot (SERVICEBUILD_MAX_RUNNING_BUILDS and per namespace)."""

    position: int
    """The build's place in the queue; 1 is the next build to start."""
    since: Timestamp
    """When it started waiting (RFC 3339); the queue is first come first served by this time."""


class FirstMiss(_StatusModel):
    """The first step of the build, in build order, that the cache did not serve, and why where knowable."""

    step: str
    """The step as BuildKit names it, e.g. `[build 3/4] COPY util.h util.c calc.c ./`."""
    changed_files: Annotated[list[str], Field(max_length=5)] | None = None
    """Context files this `COPY` or `ADD` copies that changed since the last successful build, at most 5
    (ConfigMap sources)."""
    changed_build_args: Annotated[list[str], Field(max_length=5)] | None = None
    """Build arguments whose value changed since the last successful build, at most 5."""
    changed_base_images: Annotated[list[str], Field(max_length=5)] | None = None
    """Base images whose digest changed since the last successful build, at most 5."""


class CacheInputs(_StatusModel):
    """Short digests of what the last successful build read, to tell what the next one changed."""

    files: dict[str, str] | None = None
    """Context file → the first 16 hex digits of its sha256 (ConfigMap sources of at most 100 files)."""
    build_args: dict[str, str] | None = None
    """Build argument → the first 16 hex digits of its value's sha256."""


class CacheStats(_StatusModel):
    """How much of the last finished build came from the cache."""

    cached_steps: int
    """How many of the build's steps BuildKit served from the cache."""
    total_steps: int
    """How many steps the build had, cached or not (BuildKit's internal steps not counted)."""
    first_miss: FirstMiss | None = None
    """The first step the cache missed, in build order; none when every step was cached."""
    inputs: CacheInputs | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def summary(self) -> str:
        """`cachedSteps/totalSteps`, e.g. `4/5`: the CACHED column of `kubectl get sb -o wide`."""
        return f"{self.cached_steps}/{self.total_steps}"


class FindingSeverity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Finding(_StatusModel):
    """Something about the Dockerfile, its target or its build context worth changing, and how."""

    rule: str
    """The rule, e.g. `SecretInImage`, or a BuildKit build check such as `FromAsCasing`."""
    severity: FindingSeverity
    """`error` (with `spec.checks.policy: Fail` it stops the build), `warning` or `info`."""
    stage: str | None = None
    """The stage as BuildKit's output names it (its name, or `stage-<index>`); unset for a BuildKit
    check, which names only the line."""
    line: int | None = None
    """The Dockerfile line of the instruction to change."""
    message: str
    """What is wrong and the fix, in one or two sentences."""


class ServiceBuildStatus(_StatusModel):
    """What the operator observed and did; written only by the operator."""

    observed_generation: int | None = None
    """The spec generation this status describes; behind `metadata.generation` until the operator has acted
    on the latest spec."""
    phase: Phase | None = None
    """Where the build is, in one word: `Queued` (waiting for a free build slot), `Pending` (the Job is being
    created, waits for Kueue or its Pod, or a retry is scheduled), `Building`, `Succeeded` or `Failed`.

    See docs/servicebuild.md#phases-and-conditions in the operator's repository."""
    conditions: list[Condition] = Field(default_factory=list)
    """The standard conditions `Ready`, `Reconciling` and `Stalled`; `CacheExported` after a successful
    build with a cache; `DockerfileClean` once the Dockerfile was checked.

    See docs/servicebuild.md#phases-and-conditions in the operator's repository."""
    message: str | None = None
    """A human-readable summary of the last transition."""
    job_name: str | None = None
    """The Job of the current (or last) build; its logs: `kubectl logs job/<jobName> -c buildkit`."""
    start_time: Timestamp | None = None
    """When the current (or last) build's Job started (RFC 3339)."""
    completion_time: Timestamp | None = None
    """When the last build's Job finished, successfully or not (RFC 3339)."""
    duration_seconds: int | None = None
    """How long the last build ran, from `startTime` to `completionTime`."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration(self) -> str | None:
        """`durationSeconds` for people, e.g. `1m23s`: the DURATION column of `kubectl get sb -o wide`."""
        return None if self.duration_seconds is None else format_duration(self.duration_seconds)

    output: BuildOutput | None = None
    cache: CacheStats | None = None
    source: SourceStatus | None = None
    failed_step: str | None = None
    """The Dockerfile step the last failed build stopped at, when BuildKit named one."""
    log_tail: str | None = None
    """The last lines of the failed build's log."""
    queue: QueueStatus | None = None
    """Set while the build waits for a free slot."""
    build: int | None = None
    """The number of the current (or last) build; each build of this ServiceBuild gets the next one."""
    trigger: Trigger | None = None
    """Why the current (or last) build happened."""
    last_handled_request: str | None = None
    """The value of the `servicebuild.dev/requested-at` annotation the operator last started a build for."""
    base_images: list[BaseImage] | None = None
    """The base images the last successful build used, with their digests."""
    history: list[BuildRecord] | None = None
    """The last finished builds, newest first (`spec.historyLimit`)."""
    findings: Annotated[list[Finding], Field(max_length=MAX_FINDINGS)] | None = None
    """What the current (or last) build's Dockerfile gets wrong, worst first, at most 50: the operator's own
    rules and BuildKit's build checks, less `spec.checks.skip`. Summed up by the condition
    `DockerfileClean`.

    See docs/dockerfile-findings.md in the operator's repository."""
    attempt: int | None = None
    """Which attempt at building this generation the status describes; set from the second attempt on, as
    transient failures (an evicted Pod, an unreachable registry) are retried."""

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
    annotations: dict[str, str] = Field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        """(namespace, name): how the operator's locks and build slots know a ServiceBuild."""
        return (self.namespace, self.name)


class ServiceBuild(_StatusModel):
    """A whole ServiceBuild: identity, desired spec and the last written status."""

    metadata: ObjectMeta
    spec: ServiceBuildSpec
    status: ServiceBuildStatus = Field(default_factory=ServiceBuildStatus)


class InvalidServiceBuild(_StatusModel):
    """A ServiceBuild whose spec the model rejects: what the operator can still act on, and why."""

    metadata: ObjectMeta
    status: ServiceBuildStatus
    problem: str
    """Which fields are wrong and how, each named by its path (`spec.output.image: ...`)."""


def parse_servicebuild(body: Mapping[str, Any]) -> ServiceBuild | InvalidServiceBuild:
    """The object as the API server returned it, parsed once: nothing further in reads the raw body.

    A status the operator cannot read (another version's, or edited by hand) counts as empty and is
    rewritten; a spec it cannot read is an `InvalidServiceBuild`.
    """
    metadata = ObjectMeta.model_validate(body["metadata"])
    try:
        status = ServiceBuildStatus.model_validate(body.get("status") or {})
    except ValidationError:
        status = ServiceBuildStatus()
    try:
        spec = ServiceBuildSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        problem = describe_validation_error(exc, prefix="spec")
        return InvalidServiceBuild(metadata=metadata, status=status, problem=problem)
    return ServiceBuild(metadata=metadata, spec=spec, status=status)
