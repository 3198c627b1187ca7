"""Read the build container's termination message: the success report, or the tail of a failure's log.

On success the wrapper script (`servicebuild.render.job.WRAPPER_SCRIPT`) writes one JSON line:

    {"digest":"sha256:<64 hex>","imageName":"<registry/repository:tag>[,<more pushed references>]",
     "cacheMetrics":{...}|null,"cacheExported":true|false|null}

`imageName` lists every pushed reference as BuildKit reports them (comma-separated, normalised; empty
when the list was too long for the message). `cacheExported` is whether buildctl's metadata file has a
`cache.manifest` key, which BuildKit writes only when the registry cache export succeeded (a failed
export is ignored, `ignore-error=true`; `cache/remotecache/export.go`, `solver/llbsolver/solver.go`);
`null` when the cache is disabled. `cacheMetrics` is the JSON line of `buildctl
--debug-json-cache-metrics` (`cmd/buildctl/cachemetrics.go`): `total, completed, user_total,
user_cached, user_completed, user_cacheable, from, miss, client_duration_ms`. On failure the wrapper
writes nothing and Kubernetes puts the log tail there (`FallbackToLogsOnError`). Pure and total: any
other text is "no report", never an exception.
"""

import json
import re
from dataclasses import dataclass
from typing import TypeGuard

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
MAX_MESSAGE_BYTES = 4096
"""The kubelet's cap on one container's termination message; anything longer did not come from it."""


@dataclass(frozen=True)
class BuildReport:
    """What a successful build reported about itself."""

    digest: str
    """The digest of the pushed manifest (or index), `sha256:...`."""
    image_name: str | None
    """The image name buildctl pushed, as BuildKit reports it."""
    cached_steps: int | None
    """Dockerfile steps served from the cache (`user_cached`); None when buildctl gave no metrics."""
    total_steps: int | None
    """Dockerfile steps of the build (`user_total`); None when buildctl gave no metrics."""
    cache_exported: bool | None = None
    """Whether the registry cache was exported; None when the cache is disabled or it was not reported
    (a report from an older wrapper)."""


def parse_report(message: str | None) -> BuildReport | None:
    """The success report in a termination message; None for anything else (log tail, garbage, truncation)."""
    if not message or len(message) > MAX_MESSAGE_BYTES or not message.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return None
    if not isinstance(data, dict):
        return None
    return _report(
        data.get("digest"), data.get("imageName"), data.get("cacheMetrics"), data.get("cacheExported")
    )


def _report(digest: object, image_name: object, metrics: object, exported: object) -> BuildReport | None:
    """The report of these values as read, each checked; None without a digest."""
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        return None
    cached, total = _cache_figures(metrics)
    return BuildReport(
        digest=digest,
        image_name=image_name if isinstance(image_name, str) and image_name else None,
        cached_steps=cached,
        total_steps=total,
        cache_exported=exported if isinstance(exported, bool) else None,
    )


def _cache_figures(metrics: object) -> tuple[int | None, int | None]:
    """`user_cached` of `user_total`: the steps of the user's build, without BuildKit's internal ones.

    buildctl counts a vertex in `user_total` unless its name starts with `[internal]`, `[auth]`,
    `importing cache` or `exporting `, and in `user_cached` when such a vertex was cached, so the
    cached steps are a subset of the total. (`user_cacheable` leaves out `FROM` steps while
    `user_cached` may include them, so the two do not pair up.)
    """
    if not isinstance(metrics, dict):
        return None, None
    cached, total = metrics.get("user_cached"), metrics.get("user_total")
    if not (_is_count(cached) and _is_count(total)) or cached > total:
        return None, None
    return cached, total


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def log_tail(message: str | None, lines: int = 20) -> str:
    """The last `lines` lines of a failed build's termination message (its log tail), trailing blanks cut."""
    if not message or lines <= 0:
        return ""
    return "\n".join(line.rstrip() for line in message.rstrip().splitlines()[-lines:])


def report_from_files(
    metadata: str | None, cache_metrics: str | None, *, cache_export: bool
) -> BuildReport | None:
    """The report of a build buildctl ran in the operator: what the wrapper takes from the same files in a
    Job (`containerimage.digest`, `image.name`, `cache.manifest`, the cache metrics line); None when the
    metadata file holds no digest."""
    try:
        data = json.loads(metadata or "")
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    lines = [line for line in (cache_metrics or "").splitlines() if line.strip()]
    try:
        metrics = json.loads(lines[-1]) if lines else None
    except (ValueError, RecursionError):
        metrics = None
    exported = ("cache.manifest" in data) if cache_export else None
    return _report(data.get("containerimage.digest"), data.get("image.name"), metrics, exported)
