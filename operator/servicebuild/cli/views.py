"""What the commands print, from ServiceBuilds as the API returns them. Pure: no I/O, the time passed in.

The status is read with the operator's own model (`ServiceBuildStatus`); a few fields other operator
versions write (findings, where an image's bytes are, the cache's first miss) are read when present.
"""

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from servicebuild.api.models import BuildRecord, ServiceBuildStatus, format_duration
from servicebuild.buildlog import BuildLog, StepState, is_user_step
from servicebuild.imageref import parse_image
from servicebuild.status import human_size
from servicebuild.times import format_time, parse_time

SHORT_DIGEST = 12
"""Hex digits of a digest shown in tables, as `docker images` shows image ids."""
NONE = "-"


class _Tolerant(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class _Finding(_Tolerant):
    rule: str
    severity: str
    line: int | None = None
    message: str


class _FirstMiss(_Tolerant):
    step: str
    changed_files: list[str] = Field(default_factory=list)


class _Extras(_Tolerant):
    """Status fields of newer operator versions: findings, the first cache miss, where the bytes are."""

    findings: list[_Finding] = Field(default_factory=list)
    first_miss: _FirstMiss | None = None
    base_bytes: int | None = None
    added_bytes: int | None = None


def parse_status(body: Mapping[str, Any]) -> ServiceBuildStatus:
    try:
        return ServiceBuildStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return ServiceBuildStatus()


def _extras(body: Mapping[str, Any]) -> _Extras:
    status = body.get("status") or {}
    try:
        return _Extras.model_validate(
            {
                "findings": status.get("findings") or [],
                "firstMiss": (status.get("cache") or {}).get("firstMiss"),
                **{key: (status.get("output") or {}).get(key) for key in ("baseBytes", "addedBytes")},
            }
        )
    except ValidationError:
        return _Extras()


def age(created: datetime | None, now: datetime) -> str:  # noqa: PLR0911 - one return per form kubectl prints
    """kubectl's AGE (`duration.HumanDuration`): `45s`, `4m12s`, `37m`, `5h3m`, `20h`, `3d4h`, `12d`."""
    if created is None:
        return NONE
    seconds = max(0, int((now - created).total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def short_digest(digest: str | None) -> str:
    return digest.removeprefix("sha256:")[:SHORT_DIGEST] if digest else NONE


def _image_column(body: Mapping[str, Any], status: ServiceBuildStatus) -> str:
    try:
        ref = parse_image(str((body.get("spec") or {}).get("output", {}).get("image", "")))
    except ValueError:
        return NONE
    name = f"{ref.repository}:{ref.tag}"
    return f"{name}@{short_digest(status.output.digest)}" if status.output else name


def _ready(status: ServiceBuildStatus) -> tuple[str, str]:
    ready = status.condition("Ready")
    return (ready.status, ready.reason) if ready else ("Unknown", NONE)


def list_table(items: Iterable[Mapping[str, Any]], now: datetime, *, all_namespaces: bool) -> Table:
    columns = ["NAME", "READY", "REASON", "IMAGE", "SIZE", "CACHED", "BUILD", "AGE"]
    table = Table(*(["NAMESPACE"] if all_namespaces else []), *columns, box=None, pad_edge=False)
    for body in items:
        metadata, status = body.get("metadata") or {}, parse_status(body)
        ready, reason = _ready(status)
        table.add_row(
            *([str(metadata.get("namespace", ""))] if all_namespaces else []),
            str(metadata.get("name", "")),
            ready,
            reason,
            _image_column(body, status),
            status.output.size if status.output else NONE,
            status.cache.summary if status.cache else NONE,
            str(status.build) if status.build is not None else NONE,
            age(parse_time(metadata.get("creationTimestamp")), now),
        )
    return table


def document(items: Sequence[Mapping[str, Any]], output: str) -> str:
    """`-o json|yaml`: the objects as a v1 List, as `kubectl get -o` prints several."""
    listing = {"apiVersion": "v1", "kind": "List", "items": items}
    if output == "json":
        return json.dumps(listing, indent=2) + "\n"
    return yaml.safe_dump(listing, sort_keys=False)


def _field(label: str, value: str | Text) -> Text:
    return Text.assemble((f"{label + ':':<11}", "bold"), value)


def _phase_line(status: ServiceBuildStatus) -> Text:
    phase = status.phase.value if status.phase else "Unknown"
    style = {"Succeeded": "green", "Failed": "red"}.get(phase, "yellow")
    stalled, ready = status.condition("Stalled"), status.condition("Ready")
    why = stalled if stalled and stalled.status == "True" else ready
    message = why.message.split("\n", 1)[0] if why else ""
    detail = f" — {why.reason}: {message}" if why and message else (f" — {why.reason}" if why else "")
    return _field("Phase", Text.assemble((phase, style), detail))


def _build_line(status: ServiceBuildStatus) -> Text:
    parts = [f"#{status.build}"]
    parts += [f"({status.trigger.value})"] if status.trigger else []
    parts += [f"job {status.job_name}"] if status.job_name else []
    parts += [f"attempt {status.attempt}"] if status.attempt else []
    times = [f"started {format_time(status.start_time)}"] if status.start_time else []
    times += [f"took {status.duration}"] if status.duration else []
    return _field("Build", " ".join(parts) + (", " + ", ".join(times) if times else ""))


def _image_lines(status: ServiceBuildStatus, extras: _Extras) -> list[Text]:
    output = status.output
    if output is None:
        return [_field("Image", "none built yet")]
    size = f"{output.size} in {output.layers} layers"
    if extras.base_bytes is not None and extras.added_bytes is not None:
        size += f": {human_size(extras.base_bytes)} base image, {human_size(extras.added_bytes)} added"
    lines = [_field("Image", output.image), _field("Size", size)]
    lines += [
        _field("Platform", f"{item.platform} {short_digest(item.digest)} {human_size(item.size_bytes)}")
        for item in output.platforms or []
    ]
    return lines


def _cache_line(status: ServiceBuildStatus, extras: _Extras) -> list[Text]:
    if status.cache is None:
        return []
    line = f"{status.cache.summary} steps cached"
    if extras.first_miss:
        line += f"; first miss: {extras.first_miss.step}"
        if extras.first_miss.changed_files:
            line += f" (changed: {', '.join(extras.first_miss.changed_files)})"
    return [_field("Cache", line)]


def _findings(extras: _Extras) -> list[RenderableType]:
    if not extras.findings:
        return []
    lines: list[RenderableType] = [Text("Findings:", style="bold")]
    for finding in extras.findings:
        where = f"line {finding.line}" if finding.line is not None else "-"
        lines.append(Text(f"  {where:<8} {finding.severity:<8} {finding.rule}: {finding.message}"))
    return lines


def _failure(status: ServiceBuildStatus) -> list[RenderableType]:
    stalled = status.condition("Stalled")
    if not stalled or stalled.status != "True":
        return []
    lines: list[RenderableType] = []
    if status.failed_step:
        lines.append(_field("Failed at", Text(status.failed_step, style="red")))
    if status.log_tail:
        lines.append(Text("Log tail:", style="bold"))
        lines += [Text(f"  {line}") for line in status.log_tail.rstrip("\n").split("\n")]
    return lines


def status_screen(body: Mapping[str, Any], history_shown: int = 5) -> Group:
    """`status NAME`: what a person reads to know where the build is and why."""
    metadata, status, extras = body.get("metadata") or {}, parse_status(body), _extras(body)
    title = Text.assemble(
        (str(metadata.get("name", "")), "bold"), f"  (namespace {metadata.get('namespace')})"
    )
    lines: list[RenderableType] = [title, _phase_line(status)]
    if status.queue:
        lines.append(
            _field("Queue", f"position {status.queue.position} since {format_time(status.queue.since)}")
        )
    if status.build is not None:
        lines.append(_build_line(status))
    if status.source and (status.source.commit or status.source.context_digest):
        lines.append(_field("Source", status.source.commit or short_digest(status.source.context_digest)))
    lines += _image_lines(status, extras)
    lines += _cache_line(status, extras)
    lines += _findings(extras)
    lines += _failure(status)
    if status.history:
        lines += [Text("Last builds:", style="bold"), history_table(status.history[:history_shown])]
    return Group(*lines)


def history_table(records: Iterable[BuildRecord]) -> Table:
    table = Table(
        "BUILD",
        "RESULT",
        "TRIGGER",
        "STARTED",
        "DURATION",
        "CACHED",
        "IMAGE OR REASON",
        box=None,
        pad_edge=False,
    )
    for record in records:
        outcome = (
            f"{short_digest(record.digest)} {human_size(record.size_bytes)}"
            if record.digest and record.size_bytes is not None
            else record.reason or NONE
        )
        table.add_row(
            str(record.build),
            record.result.value,
            record.trigger.value,
            format_time(record.start_time) if record.start_time else NONE,
            format_duration(record.duration_seconds) if record.duration_seconds is not None else NONE,
            str(record.cached_steps) if record.cached_steps is not None else NONE,
            outcome,
        )
    return table


def progress(log: BuildLog) -> str:
    """`3/7 steps done, 2 cached; now [build 3/4] RUN make`: a running build, from its log so far."""
    steps = [step for step in log.steps if is_user_step(step.name)]
    ended = [step for step in steps if step.state in {StepState.DONE, StepState.CACHED}]
    cached = sum(step.state is StepState.CACHED for step in steps)
    running = [step.name for step in steps if step.state is StepState.STARTED]
    now = f"; now {running[-1]}" if running else ""
    return f"{len(ended)}/{len(steps)} steps done, {cached} cached{now}"
