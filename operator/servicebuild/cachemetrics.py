"""Read buildctl's `--debug-json-cache-metrics` file and find the first cache miss in build order.

The file (`cmd/buildctl/cachemetrics.go`, BuildKit v0.13+) has one `cache miss: <step>` line per user
step that was neither cached nor a `FROM`, then one JSON line: `total, completed, user_total, user_cached,
user_completed, user_cacheable, from, miss, client_duration_ms`. buildctl writes the miss lines while
ranging over a Go map of vertexes, so **their order is random**: the samples happen to list the last step
first, but nothing promises it. The build order comes from elsewhere:

- best, from the progress log (`buildlog.BuildLog.build_order`): a step starts only after the steps it
  needs have ended, so the order in which steps started never puts a step before one it depends on;
- without a log, from the names alone: within a stage by step number (`[build 3/4]` before
  `[build 4/4]`); across stages, a stage whose result a missed step uses (`COPY --from=<stage>`,
  `RUN --mount=…,from=<stage>`) before that step's stage. Stages that do not use one another have no
  order between them (they may build in parallel); they are then ordered by step number and name, which
  is stable but arbitrary.

Pure and total: any text gives a `CacheMetrics` (empty for garbage), never an exception.
"""

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from servicebuild.buildlog import parse_step_name

MISS_PREFIX = "cache miss: "
_FROM_STAGE_RE = re.compile(r"(?:^|[\s,])(?:--)?from=([^\s,]+)")
_MAX_SUMMARY = 4096

_Stage = tuple[str | None, str | None]
"""(platform, stage) of a step."""


@dataclass(frozen=True)
class CacheSummary:
    """buildctl's counts of the build's vertexes (`cachemetrics.go`); None where the file had no number."""

    total: int | None
    completed: int | None
    user_total: int | None
    """The user's steps: every vertex but `[internal]`, `[auth]`, `importing cache…`, `exporting …`."""
    user_cached: int | None
    user_completed: int | None
    user_cacheable: int | None
    """`user_total` without the `FROM` steps."""
    from_steps: int | None
    """`from`: the `FROM` steps."""
    miss: int | None
    """The user's steps neither cached nor `FROM`: one `cache miss:` line each."""
    client_duration_ms: int | None


@dataclass(frozen=True)
class CacheMetrics:
    """The cache metrics file: the missed steps as listed (in no useful order) and the summary."""

    misses: tuple[str, ...] = ()
    summary: CacheSummary | None = None


def parse_cache_metrics(text: object) -> CacheMetrics:
    """The misses and the summary of a cache metrics file; empty for anything else."""
    if not isinstance(text, str):
        return CacheMetrics()
    misses: list[str] = []
    summary: CacheSummary | None = None
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        if line.startswith(MISS_PREFIX) and line[len(MISS_PREFIX) :].strip():
            misses.append(line[len(MISS_PREFIX) :])
        elif line.startswith("{"):
            summary = _summary(line) or summary
    return CacheMetrics(misses=tuple(misses), summary=summary)


def _summary(line: str) -> CacheSummary | None:
    if len(line) > _MAX_SUMMARY:
        return None
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, Mapping):
        return None
    return CacheSummary(
        total=_count(data, "total"),
        completed=_count(data, "completed"),
        user_total=_count(data, "user_total"),
        user_cached=_count(data, "user_cached"),
        user_completed=_count(data, "user_completed"),
        user_cacheable=_count(data, "user_cacheable"),
        from_steps=_count(data, "from"),
        miss=_count(data, "miss"),
        client_duration_ms=_count(data, "client_duration_ms"),
    )


def _count(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def order_misses(misses: Sequence[str], build_order: Sequence[str] = ()) -> tuple[str, ...]:
    """The missed steps in build order, each once.

    `build_order` is the step names in the order the build started them (`BuildLog.build_order`); misses
    it names come first, in its order. The rest follow, ordered by their names alone (module docstring).
    """
    if not _is_sequence(misses) or not _is_sequence(build_order):
        return ()
    unique = list(dict.fromkeys(name for name in misses if isinstance(name, str)))
    position: dict[str, int] = {}
    for index, name in enumerate(build_order):
        if isinstance(name, str):
            position.setdefault(name, index)
    known = sorted((name for name in unique if name in position), key=position.__getitem__)
    return (*known, *_order_by_names([name for name in unique if name not in position]))


def _is_sequence(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def first_miss(misses: Sequence[str], build_order: Sequence[str] = ()) -> str | None:
    """The first missed step in build order: the one whose change made the rest miss too."""
    ordered = order_misses(misses, build_order)
    return ordered[0] if ordered else None


def _order_by_names(names: list[str]) -> list[str]:
    """Misses the log does not place: a stage another missed step copies or mounts from goes first,
    then by step number within the stage."""
    stages: dict[str, _Stage] = {}
    for name in names:
        parsed = parse_step_name(name)
        stages[name] = (parsed.platform, parsed.stage) if parsed else (None, None)
    missed = set(stages.values())
    uses: dict[_Stage, set[_Stage]] = {}
    for name, stage in stages.items():
        parsed = parse_step_name(name)
        for source in _FROM_STAGE_RE.findall(parsed.instruction if parsed else ""):
            if (stage[0], source) in missed and (stage[0], source) != stage:
                uses.setdefault(stage, set()).add((stage[0], source))
    depth: dict[_Stage, int] = {}

    def depth_of(stage: _Stage, visiting: frozenset[_Stage]) -> int:
        if stage not in depth:
            inner = [
                depth_of(used, visiting | {stage}) for used in uses.get(stage, ()) if used not in visiting
            ]
            depth[stage] = 1 + max(inner, default=-1)
        return depth[stage]

    def key(name: str) -> tuple[int, int, int, str]:
        parsed = parse_step_name(name)
        if parsed is None:
            return (1, 0, 0, name)  # not a Dockerfile step: after those
        return (0, depth_of(stages[name], frozenset()), parsed.index, name)

    return sorted(names, key=key)
