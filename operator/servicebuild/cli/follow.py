"""Watching a ServiceBuild until its build has ended: `build --follow` and `wait`.

The API is polled (once a second): a watch would hold a connection per person and gains nothing at
this pace. A build has ended for the caller once the status describes the spec generation and, for a
folder build, the context that was packed, and says Ready or Stalled.
"""

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from servicebuild.api.models import ServiceBuildStatus
from servicebuild.buildlog import parse_plain
from servicebuild.cli.gateway import PersonKube
from servicebuild.cli.views import parse_status, progress
from servicebuild.render.job import BUILD_CONTAINER

POLL_SECONDS = 1.0
LOG_LINES_READ = 2000
"""The last lines of a running build's log read for its progress: more than any Dockerfile has steps."""


class Ending(IntEnum):
    """The exit codes of `wait` and `build --follow`."""

    READY = 0
    STALLED = 1
    TIMED_OUT = 2


@dataclass(frozen=True)
class Target:
    namespace: str
    name: str
    context_digest: str | None = None
    """For a folder build, the digest of the ConfigMap just written: an end of an older context's build
    does not count."""


def ending(body: Mapping[str, Any], target: Target) -> Ending | None:
    """Whether the build the caller waits for has ended, and how; None while it has not."""
    status = parse_status(body)
    generation = int((body.get("metadata") or {}).get("generation") or 1)
    if (status.observed_generation or 0) < generation:
        return None
    source = status.source.context_digest if status.source else None
    if target.context_digest is not None and source is not None and source != target.context_digest:
        return None
    for condition_type, result in (("Ready", Ending.READY), ("Stalled", Ending.STALLED)):
        condition = status.condition(condition_type)
        if condition is not None and condition.status == "True":
            return result
    return None


def build_progress(kube: PersonKube, namespace: str, status: ServiceBuildStatus) -> str:
    """What the running build has done so far, read from its log; its phase while it has no Pod."""
    phase = status.phase.value if status.phase else "Waiting"
    if status.job_name is None:
        return phase
    pod = kube.get_job_pod(namespace, status.job_name)
    if pod is None:
        return phase
    log = kube.read_pod_log(namespace, pod["metadata"]["name"], BUILD_CONTAINER, LOG_LINES_READ)
    return f"{phase}: {progress(parse_plain(log))}" if log else phase


def watch(
    kube: PersonKube,
    target: Target,
    show: Callable[[str], None],
    timeout: float | None = None,
) -> tuple[Ending, dict[str, Any]]:
    """Poll until the build ends or `timeout` seconds pass; `show` gets each new progress line."""
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = ""
    while True:
        body = kube.get_servicebuild(target.namespace, target.name)
        if body is None:
            raise LookupError(f"servicebuild {target.name} is gone from namespace {target.namespace}")
        result = ending(body, target)
        if result is not None:
            return result, body
        if deadline is not None and time.monotonic() >= deadline:
            return Ending.TIMED_OUT, body
        line = build_progress(kube, target.namespace, parse_status(body))
        if line != shown:
            show(line)
            shown = line
        time.sleep(POLL_SECONDS)
