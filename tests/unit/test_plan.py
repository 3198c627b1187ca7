"""We test these aspects of `plan`, the pure decision of what is due:

- which ServiceBuilds the resync may pass by without a request (`idle`): those whose generation's build
  ended and whose ConfigMap, as the watch last saw it, is the one that build had; never one that is
  building, has a newer generation, or whose ConfigMap changed, appeared or went;
- the build due (`due_build`): none once it ended; the attempt and the queue place kept within one build,
  a new build starting over;
- the retry delay doubles per attempt up to ten minutes.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from servicebuild import plan
from servicebuild.api.models import parse_servicebuild
from servicebuild.config import Settings

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
SPEC = {"source": {"configMap": {"name": "ctx"}}, "output": {"image": "r.io/shop/a:1"}}
GIT_SPEC = {"source": {"git": {"url": "https://g.io/a.git"}}, "output": {"image": "r.io/shop/a:1"}}


def servicebuild(status: dict[str, Any], *, generation: int = 2, spec: Any = SPEC) -> Any:
    metadata = {"name": "a", "namespace": "shop", "uid": "u-1", "generation": generation}
    return parse_servicebuild({"metadata": metadata, "spec": spec, "status": status})


def ended(phase: str = "Succeeded", generation: int = 2, digest: str | None = DIGEST) -> dict[str, Any]:
    status: dict[str, Any] = {"observedGeneration": generation, "phase": phase}
    if digest is not None:
        status["source"] = {"contextDigest": digest}
    return status


IDLE = {
    "built, same ConfigMap": (servicebuild(ended()), DIGEST, True),
    "built, ConfigMap changed": (servicebuild(ended()), OTHER, False),
    "built, ConfigMap gone": (servicebuild(ended()), None, False),
    "built from git": (servicebuild(ended(digest=None), spec=GIT_SPEC), None, True),
    "failed, same ConfigMap": (servicebuild(ended("Failed")), DIGEST, True),
    "stalled for a missing ConfigMap, still missing": (
        servicebuild(ended("Failed", digest=None)),
        None,
        True,
    ),
    "stalled for a missing ConfigMap, now there": (servicebuild(ended("Failed", digest=None)), DIGEST, False),
    "a newer generation": (servicebuild(ended(generation=1)), DIGEST, False),
    "building": (servicebuild({"observedGeneration": 2, "phase": "Building"}), DIGEST, False),
    "queued": (servicebuild({"observedGeneration": 2, "phase": "Queued"}), DIGEST, False),
    "never reconciled": (servicebuild({}), DIGEST, False),
    "invalid spec, stalled": (servicebuild(ended("Failed", digest=None), spec={"source": {}}), None, True),
    "invalid spec, not yet reported": (servicebuild({}, spec={"source": {}}), None, False),
}


@pytest.mark.parametrize(("parsed", "digest", "expected"), IDLE.values(), ids=IDLE.keys())
def test_idle(parsed: Any, digest: str | None, expected: bool) -> None:
    assert plan.idle(parsed, digest) is expected


def test_nothing_is_due_once_the_build_of_this_generation_and_source_ended() -> None:
    built = servicebuild(ended())
    assert plan.due_build(built.metadata, built.status, DIGEST, NOW) is None
    again = plan.due_build(built.metadata, built.status, OTHER, NOW)
    assert again is not None
    assert (again.attempt, again.since, again.others_stopped) == (1, NOW, False)


def test_one_build_keeps_its_attempt_and_queue_place() -> None:
    since = "2026-11-28T09:59:00Z"
    waiting = servicebuild(
        {
            "observedGeneration": 2,
            "phase": "Queued",
            "source": {"contextDigest": DIGEST},
            "queue": {"position": 3, "since": since},
            "attempt": 2,
        }
    )
    due = plan.due_build(waiting.metadata, waiting.status, DIGEST, NOW)
    assert due is not None
    assert (due.attempt, due.since, due.others_stopped) == (
        2,
        datetime(2026, 11, 28, 9, 59, tzinfo=UTC),
        True,
    )
    assert due.job_name.startswith("a-2-")
    assert plan.next_attempt(waiting.metadata, due, NOW).job_name != due.job_name


@pytest.mark.parametrize(("attempt", "seconds"), [(1, 30), (2, 60), (3, 120), (6, 600), (20, 600)])
def test_the_retry_delay_doubles_up_to_ten_minutes(attempt: int, seconds: int) -> None:
    assert plan.retry_delay(attempt, Settings(retry_delay_seconds=30)) == timedelta(seconds=seconds)
