"""Read BuildKit's progress output (`buildctl build --progress=plain` or `--progress=rawjson`).

What later features need from it, as BuildKit v0.32 writes it (samples: `tests/unit/buildkit_samples/`):

- the steps (vertexes) in the order they started, each with its final state: `#N <name>` opens vertex N
  (the first line that names `#N` is always its name, `util/progress/progressui/printer.go`), then
  `#N CACHED`, `#N DONE 1.2s`, `#N ERROR: <error>` or `#N CANCELED`. A vertex may be printed again
  later (`#6 … DONE` and then `#6 CACHED` in a warm build): it was cached if it ever said so. A step
  of the Dockerfile is named `[<platform> <stage> <i>/<n>] <instruction>`: the platform only in a
  multi-platform build, the stage only when the Dockerfile has more than one, `<i>` padded with spaces
  to the width of `<n>` (`frontend/dockerfile/dockerfile2llb/convert.go`, `prefixCommand`).
- the base images BuildKit resolved: one `FROM <ref>@sha256:<digest>` step per stage the target really
  uses (a stage the target does not need never appears); an image only named by `COPY --from=<image>`
  has the same step without the `[…]` prefix.
- the build checks: `#N WARN: <Rule>: <message> (line N)` in the plain form; in the rawjson form a
  `warnings[]` entry whose `short` and `detail[]` are base64, with `url` and `range[].start.line`.

The order of the steps is the order they started: a step that needs another one's result starts after
it has ended, so that order never puts a step before one it depends on. In the plain form that is the
order in which vertexes are first printed; in the rawjson form (which lists vertexes before they run,
several in one message) the order of their first `started` time.

Pure and total: any text gives a `BuildLog` (empty for garbage), never an exception.
"""

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

INTERNAL_PREFIXES = ("[internal]", "[auth]", "importing cache", "exporting ")
"""Vertex names buildctl does not count as the user's steps (`cmd/buildctl/cachemetrics.go`)."""

_LINE_RE = re.compile(r"#(\d{1,9}) (.*)")
_DONE_RE = re.compile(r"DONE(?: (\d{1,9}(?:\.\d{1,9})?)s)?")
_STEP_NAME_RE = re.compile(
    r"\[(?:(?P<platform>[^\s\]/]+/[^\s\]]+) )?(?:(?P<stage>[^\s\]/]+) )?"
    r"\s*(?P<index>\d{1,6})/(?P<total>\d{1,6})\] (?P<instruction>\S.*)",
    re.DOTALL,
)
_FROM_STEP_RE = re.compile(r"\[.*\] FROM", re.DOTALL)
"""buildctl's own test for a `FROM` step (`cachemetrics.go`): it never counts as a cache miss."""
_BASE_IMAGE_RE = re.compile(r"(?:\[[^\]]*\] )?FROM (?P<ref>\S+)@(?P<digest>sha256:[0-9a-f]{64})")
_SHORT_RE = re.compile(
    r"(?:(?P<rule>[A-Z][A-Za-z0-9]*): )?(?P<message>.*?)(?: \(line (?P<line>\d{1,9})\))?", re.DOTALL
)
_TIME_RE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")
_CANCELED = "context canceled"


class StepState(StrEnum):
    """Where a step ended, as the progress output says; a later, stronger word wins."""

    STARTED = "started"
    """Started, and no end was seen (the log was cut, or the build stopped)."""
    DONE = "done"
    """Ran (not from the cache)."""
    CACHED = "cached"
    ERROR = "error"
    CANCELED = "canceled"


_STRENGTH = {
    StepState.STARTED: 0,
    StepState.DONE: 1,
    StepState.CACHED: 2,
    StepState.CANCELED: 3,
    StepState.ERROR: 4,
}


@dataclass(frozen=True)
class StepName:
    """A Dockerfile step's vertex name, `[<platform> <stage> <i>/<n>] <instruction>`, taken apart."""

    platform: str | None
    """`linux/arm64` in a multi-platform build (or `linux/amd64->arm64` when cross-compiling)."""
    stage: str | None
    """The stage's name (`stage-<k>` for an unnamed one); None when the Dockerfile has only one stage."""
    index: int
    """The step's number in its stage, counting an image `FROM` as 1."""
    total: int
    instruction: str
    """The instruction as BuildKit printed it: `COPY --from=build /calc /usr/local/bin/calc`."""

    @property
    def keyword(self) -> str:
        """`COPY`, `RUN`, … (`ONBUILD` for a trigger the base image set)."""
        return self.instruction.split(maxsplit=1)[0].upper() if self.instruction.strip() else ""


def parse_step_name(name: object) -> StepName | None:
    """The parts of a Dockerfile step's name; None for BuildKit's own vertexes and anything else."""
    if not isinstance(name, str):
        return None
    match = _STEP_NAME_RE.fullmatch(name)
    if match is None:
        return None
    return StepName(
        platform=match.group("platform"),
        stage=match.group("stage"),
        index=int(match.group("index")),
        total=int(match.group("total")),
        instruction=match.group("instruction"),
    )


def is_user_step(name: str) -> bool:
    """Whether buildctl's cache metrics count this vertex as one of the user's steps."""
    return not name.startswith(INTERNAL_PREFIXES)


def is_from_step(name: str) -> bool:
    """Whether buildctl's cache metrics take this vertex for a `FROM` (never a cache miss)."""
    return _FROM_STEP_RE.match(name) is not None


@dataclass(frozen=True)
class Step:
    """One vertex of the build, in the order the build started them."""

    number: int
    """`#N` of the plain form; in the rawjson form, the position in start order (from 1)."""
    name: str
    state: StepState
    seconds: float | None = None
    """How long its last run took, as BuildKit printed it (`DONE 1.2s`); None when not printed."""
    error: str | None = None

    @property
    def dockerfile_step(self) -> StepName | None:
        return parse_step_name(self.name)


@dataclass(frozen=True)
class BaseImage:
    """An image the build pulled, as BuildKit resolved it."""

    ref: str
    """The reference as BuildKit normalised it, tag kept: `registry.test:5000/library/busybox:latest`."""
    digest: str
    """`sha256:<64 hex>`: the digest BuildKit resolved the reference to."""
    stage: str | None
    """The stage this image is the base of; None for a one-stage Dockerfile or an image only copied from
    (`COPY --from=<image>`)."""
    platform: str | None
    """Set in a multi-platform build."""
    step: str
    """The whole step name, as BuildKit printed it."""


def parse_base_image(step: object) -> BaseImage | None:
    """The image of a `FROM <ref>@sha256:<digest>` step; None for any other name."""
    if not isinstance(step, str):
        return None
    match = _BASE_IMAGE_RE.fullmatch(step)
    if match is None:
        return None
    parsed = parse_step_name(step)
    return BaseImage(
        ref=match.group("ref"),
        digest=match.group("digest"),
        stage=parsed.stage if parsed else None,
        platform=parsed.platform if parsed else None,
        step=step,
    )


@dataclass(frozen=True)
class BuildWarning:
    """A warning BuildKit reported during the build; the Dockerfile's build checks are most of them."""

    short: str
    """BuildKit's one-line text, `FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)`."""
    rule: str | None
    """The check's name (`FromAsCasing`); None for a warning that names no rule."""
    message: str
    """The text after the rule and before `(line N)`."""
    line: int | None
    """The Dockerfile line it is about, when given."""
    detail: tuple[str, ...] = ()
    """The longer explanation (rawjson form only)."""
    url: str | None = None
    """The rule's documentation (rawjson form only)."""


def parse_warning(
    short: object, *, detail: Iterable[str] = (), url: str | None = None
) -> BuildWarning | None:
    """A warning from BuildKit's short text (`<Rule>: <message> (line N)`); None when there is none."""
    if not isinstance(short, str) or not short.strip():
        return None
    text = short.strip()
    match = _SHORT_RE.fullmatch(text)
    if match is None:  # pragma: no cover - every string matches: all parts are optional
        return BuildWarning(short=text, rule=None, message=text, line=None)
    line = match.group("line")
    return BuildWarning(
        short=text,
        rule=match.group("rule"),
        message=match.group("message"),
        line=int(line) if line else None,
        detail=tuple(detail),
        url=url,
    )


@dataclass(frozen=True)
class BuildLog:
    """What a build's progress output says: its steps, the base images, the warnings."""

    steps: tuple[Step, ...] = ()
    """Every vertex that started, in the order they started."""
    warnings: tuple[BuildWarning, ...] = ()
    base_images: tuple[BaseImage, ...] = field(init=False)
    """The images of the `FROM …@sha256:…` steps, in step order, each step once."""

    def __post_init__(self) -> None:
        images = (parse_base_image(step.name) for step in self.steps)
        object.__setattr__(self, "base_images", tuple(image for image in images if image is not None))

    @property
    def build_order(self) -> tuple[str, ...]:
        """The step names in the order they started, for `cachemetrics.order_misses`."""
        return tuple(step.name for step in self.steps)

    @property
    def first_uncached(self) -> Step | None:
        """The first of the user's steps, in build order, that did not come from the cache (`FROM` aside):
        the first cache miss as buildctl's metrics count them."""
        return next(
            (
                step
                for step in self.steps
                if is_user_step(step.name) and not is_from_step(step.name) and step.state != StepState.CACHED
            ),
            None,
        )


@dataclass
class _Vertex:
    name: str
    state: StepState = StepState.STARTED
    seconds: float | None = None
    error: str | None = None
    started: tuple[int, int] | None = None

    def end(self, state: StepState) -> None:
        if _STRENGTH[state] >= _STRENGTH[self.state]:
            self.state = state


def parse_plain(text: object) -> BuildLog:
    """The steps, base images and warnings of a `--progress=plain` log; empty for anything else."""
    if not isinstance(text, str):
        return BuildLog()
    vertexes: dict[int, _Vertex] = {}
    warnings: list[BuildWarning] = []
    for raw in text.split("\n"):
        match = _LINE_RE.fullmatch(raw.rstrip("\r"))
        if match is None:
            continue
        number, rest = int(match.group(1)), match.group(2)
        vertex = vertexes.get(number)
        if vertex is None:  # the first line of a vertex is its name
            vertexes[number] = _Vertex(rest)
            continue
        _plain_event(vertex, rest, warnings)
    steps = tuple(
        Step(number=number, name=vertex.name, state=vertex.state, seconds=vertex.seconds, error=vertex.error)
        for number, vertex in vertexes.items()
        if vertex.name.strip()
    )
    return BuildLog(steps=steps, warnings=tuple(warnings))


def _plain_event(vertex: _Vertex, rest: str, warnings: list[BuildWarning]) -> None:
    if rest == "CACHED":
        vertex.end(StepState.CACHED)
    elif rest == "CANCELED":
        vertex.end(StepState.CANCELED)
    elif rest.startswith("ERROR: "):
        vertex.error = rest.removeprefix("ERROR: ")
        vertex.end(StepState.ERROR)
    elif rest.startswith("WARN: "):
        warning = parse_warning(rest.removeprefix("WARN: "))
        if warning is not None:
            warnings.append(warning)
    elif done := _DONE_RE.fullmatch(rest):
        if done.group(1):
            vertex.seconds = float(done.group(1))
        vertex.end(StepState.DONE)


def parse_rawjson(text: object) -> BuildLog:
    """The steps, base images and warnings of a `--progress=rawjson` log (one JSON status per line)."""
    if not isinstance(text, str):
        return BuildLog()
    vertexes: dict[str, _Vertex] = {}
    first_seen: dict[str, int] = {}
    warnings: list[BuildWarning] = []
    for raw in text.split("\n"):
        status = _json_object(raw)
        for item in _mappings(status.get("vertexes")):
            _rawjson_vertex(item, vertexes, first_seen)
        for item in _mappings(status.get("warnings")):
            warning = _rawjson_warning(item)
            if warning is not None:
                warnings.append(warning)
    ran = [
        (digest, vertex)
        for digest, vertex in vertexes.items()
        if vertex.started is not None or vertex.state != StepState.STARTED
    ]
    ran.sort(key=lambda item: (item[1].started or (2**63, 0), first_seen[item[0]]))
    steps = tuple(
        Step(number=number, name=vertex.name, state=vertex.state, seconds=vertex.seconds, error=vertex.error)
        for number, (_, vertex) in enumerate(ran, start=1)
    )
    return BuildLog(steps=steps, warnings=tuple(warnings))


def _rawjson_vertex(
    item: Mapping[str, Any], vertexes: dict[str, _Vertex], first_seen: dict[str, int]
) -> None:
    digest, name = item.get("digest"), item.get("name")
    if not isinstance(digest, str) or not digest:
        return
    vertex = vertexes.get(digest)
    if vertex is None:
        if not isinstance(name, str) or not name:
            return
        vertex = vertexes[digest] = _Vertex(name)
        first_seen[digest] = len(first_seen)
    started, completed = _timestamp(item.get("started")), _timestamp(item.get("completed"))
    if started is not None and (vertex.started is None or started < vertex.started):
        vertex.started = started
    error = item.get("error")
    if isinstance(error, str) and error:
        vertex.error = error
        vertex.end(StepState.CANCELED if error.endswith(_CANCELED) else StepState.ERROR)
    if item.get("cached") is True:
        vertex.end(StepState.CACHED)
    if completed is not None:
        if started is not None:
            vertex.seconds = round((completed[0] - started[0]) + (completed[1] - started[1]) / 1e9, 3)
        vertex.end(StepState.DONE)


def _rawjson_warning(item: Mapping[str, Any]) -> BuildWarning | None:
    short = _base64_text(item.get("short"))
    if short is None:
        return None
    details = item.get("detail")
    detail = [_base64_text(part) for part in details] if isinstance(details, list) else []
    url = item.get("url")
    warning = parse_warning(
        short, detail=[part for part in detail if part], url=url if isinstance(url, str) and url else None
    )
    line = _first_line(item.get("range"))
    if warning is not None and line is not None and warning.line is None:
        warning = BuildWarning(
            short=warning.short,
            rule=warning.rule,
            message=warning.message,
            line=line,
            detail=warning.detail,
            url=warning.url,
        )
    return warning


def _first_line(ranges: object) -> int | None:
    for item in _mappings(ranges):
        start = item.get("start")
        line = start.get("line") if isinstance(start, Mapping) else None
        if isinstance(line, int) and not isinstance(line, bool) and line > 0:
            return line
    return None


def _base64_text(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return None


def _timestamp(value: object) -> tuple[int, int] | None:
    """(Unix seconds, nanoseconds) of an RFC 3339 time with up to nine fraction digits, as Go writes it."""
    if not isinstance(value, str):
        return None
    match = _TIME_RE.fullmatch(value)
    if match is None:
        return None
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    try:
        moment = datetime.fromisoformat(match.group(1) + zone)
    except ValueError:
        return None
    return int(moment.timestamp()), int((match.group(2) or "0").ljust(9, "0"))


def _json_object(line: str) -> Mapping[str, Any]:
    if not line.lstrip().startswith("{"):
        return {}
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, Mapping) else {}


def _mappings(value: object) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []
