"""We test these aspects of `plan`, the pure decision of what is due:

- the trigger decision table: what differs between the last build and what is wanted, the weightiest
  first (created, spec, ConfigMap, rebuild request, new commit, base image), and nothing when nothing does;
- what interrupts what: a spec or ConfigMap change or a rebuild request supersedes a running build with
  the next number; a new commit or base image never does, it waits for the running build to end and then
  is one next build; a failed build is not rebuilt for the same commit and bases, but is for a request;
- the build number, its trigger and its Job name: the current build keeps its number, attempt, queue place
  and the Job name its status records (an older operator's too);
- which ServiceBuilds the resync may pass by (`idle`);
- the retry delay doubles per attempt up to ten minutes.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from servicebuild import naming, plan
from servicebuild.api.models import BaseImage, Trigger, parse_servicebuild
from servicebuild.config import Settings
from servicebuild.plan import Wanted

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
COMMIT, NEWER = "1" * 40, "2" * 40
BUSYBOX = BaseImage(ref="docker.io/library/busybox:1.37", digest="sha256:" + "c" * 64)
PATCHED = BaseImage(ref="docker.io/library/busybox:1.37", digest="sha256:" + "d" * 64)
SPEC = {"source": {"configMap": {"name": "ctx"}}, "output": {"image": "r.io/shop/a:1"}}
GIT_SPEC = {"source": {"git": {"url": "https://g.io/a.git"}}, "output": {"image": "r.io/shop/a:1"}}


def servicebuild(status: dict[str, Any], *, generation: int = 2, spec: Any = SPEC) -> Any:
    metadata = {"name": "a", "namespace": "shop", "uid": "u-1", "generation": generation}
    return parse_servicebuild({"metadata": metadata, "spec": spec, "status": status})


def status(phase: str = "Succeeded", **fields: Any) -> dict[str, Any]:
    """The status of build 4 of generation 2, from ConfigMap content DIGEST at COMMIT, on BUSYBOX."""
    return {
        "observedGeneration": 2,
        "phase": phase,
        "build": 4,
        "trigger": "SpecChanged",
        "source": {"contextDigest": DIGEST, "commit": COMMIT},
        "baseImages": [{"ref": BUSYBOX.ref, "digest": BUSYBOX.digest}],
        "lastHandledRequest": "r1",
        "jobName": "a-4-abcde",
        **fields,
    }


def wanted(**fields: Any) -> Wanted:
    return Wanted(**({"generation": 2, "context_digest": DIGEST, "request": "r1"} | fields))


CHANGES = {
    "nothing": (status(), wanted(), None),
    "never built": ({}, wanted(), Trigger.CREATED),
    "new generation": (status(), wanted(generation=3), Trigger.SPEC_CHANGED),
    "ConfigMap changed": (status(), wanted(context_digest=OTHER), Trigger.SOURCE_CHANGED),
    "rebuild requested": (status(), wanted(request="r2"), Trigger.REQUESTED),
    "first request": (status(lastHandledRequest=None), wanted(), Trigger.REQUESTED),
    "no request": (status(), wanted(request=None), None),
    "new commit": (status(), wanted(commit=NEWER), Trigger.NEW_COMMIT),
    "same commit polled": (status(), wanted(commit=COMMIT), None),
    "base image patched": (status(), wanted(base_images=(PATCHED,)), Trigger.BASE_IMAGE_CHANGED),
    "base image same": (status(), wanted(base_images=(BUSYBOX,)), None),
    "spec wins over commit": (status(), wanted(generation=3, commit=NEWER), Trigger.SPEC_CHANGED),
    "request wins over commit": (status(), wanted(request="r2", commit=NEWER), Trigger.REQUESTED),
    "commit wins over base image": (
        status(),
        wanted(commit=NEWER, base_images=(PATCHED,)),
        Trigger.NEW_COMMIT,
    ),
}


@pytest.mark.parametrize(("previous", "want", "trigger"), CHANGES.values(), ids=CHANGES.keys())
def test_the_trigger_decision(previous: dict[str, Any], want: Wanted, trigger: Trigger | None) -> None:
    assert plan.change(servicebuild(previous).status, want) is trigger


DUE = {
    # (status, wanted) → (build number and trigger due, or None for nothing due)
    "ended, nothing changed": (status(), wanted(), None),
    "failed, same commit polled": (status("Failed"), wanted(commit=COMMIT), None),
    "failed, rebuild requested": (status("Failed"), wanted(request="r2"), (5, Trigger.REQUESTED)),
    "ended, new commit": (status(), wanted(commit=NEWER), (5, Trigger.NEW_COMMIT)),
    "running, new commit waits": (status("Building"), wanted(commit=NEWER), (4, Trigger.SPEC_CHANGED)),
    "running, base image waits": (
        status("Pending"),
        wanted(base_images=(PATCHED,)),
        (4, Trigger.SPEC_CHANGED),
    ),
    "running, spec change supersedes": (status("Building"), wanted(generation=3), (5, Trigger.SPEC_CHANGED)),
    "queued, ConfigMap change supersedes": (
        status("Queued"),
        wanted(context_digest=OTHER),
        (5, Trigger.SOURCE_CHANGED),
    ),
    "running, request supersedes": (status("Building"), wanted(request="r2"), (5, Trigger.REQUESTED)),
    "never built": ({}, wanted(), (1, Trigger.CREATED)),
    "built by an older operator": (
        {
            "observedGeneration": 2,
            "phase": "Building",
            "source": {"contextDigest": DIGEST},
            "jobName": "a-2-x",
        },
        wanted(request=None),
        (1, Trigger.CREATED),
    ),
}


@pytest.mark.parametrize(("previous", "want", "expected"), DUE.values(), ids=DUE.keys())
def test_what_is_due(previous: dict[str, Any], want: Wanted, expected: tuple[int, Trigger] | None) -> None:
    parsed = servicebuild(previous)
    due = plan.due_build(parsed.metadata, parsed.status, want, NOW)
    assert (None if due is None else (due.number, due.trigger)) == expected


def test_a_new_build_gets_the_next_number_its_own_job_and_what_it_handles() -> None:
    parsed = servicebuild(status("Building"))
    due = plan.due_build(parsed.metadata, parsed.status, wanted(generation=3, request="r2"), NOW)
    assert due is not None
    assert (due.number, due.attempt, due.since, due.others_stopped, due.request) == (5, 1, NOW, False, "r2")
    assert due.job_name == naming.job_name("a", "u-1", 5, naming.build_key(5, 3, DIGEST, 1))
    assert due.job_name.startswith("a-5-")


def test_the_current_build_keeps_its_number_attempt_queue_place_and_job() -> None:
    since = "2026-11-28T09:59:00Z"
    parsed = servicebuild(status("Queued", queue={"position": 3, "since": since}, attempt=2))
    due = plan.due_build(parsed.metadata, parsed.status, wanted(commit=NEWER), NOW)
    assert due is not None
    assert (due.number, due.attempt, due.job_name, due.commit, due.others_stopped) == (
        4,
        2,
        "a-4-abcde",
        COMMIT,
        True,
    )
    assert due.since == datetime(2026, 11, 28, 9, 59, tzinfo=UTC)
    following = plan.next_attempt(parsed.metadata, due, NOW)
    assert (following.attempt, following.since) == (3, NOW)
    assert following.job_name == naming.job_name("a", "u-1", 4, naming.build_key(4, 2, DIGEST, 3))


def test_a_build_handled_by_an_older_operator_follows_its_job() -> None:
    older = {
        "observedGeneration": 2,
        "phase": "Building",
        "source": {"contextDigest": DIGEST},
        "jobName": "a-2-x",
    }
    parsed = servicebuild(older)
    due = plan.due_build(parsed.metadata, parsed.status, wanted(request=None), NOW)
    assert due is not None
    assert (due.number, due.job_name) == (1, "a-2-x")


IDLE = {
    "built, nothing changed": (servicebuild(status()), wanted(), True),
    "built, ConfigMap changed": (servicebuild(status()), wanted(context_digest=OTHER), False),
    "built, ConfigMap gone": (servicebuild(status()), wanted(context_digest=None), False),
    "built, rebuild requested": (servicebuild(status()), wanted(request="r2"), False),
    "failed, nothing changed": (servicebuild(status("Failed")), wanted(), True),
    "a newer generation": (servicebuild(status()), wanted(generation=3), False),
    "building": (servicebuild(status("Building")), wanted(), False),
    "never reconciled": (servicebuild({}), wanted(), False),
    "invalid spec, stalled": (servicebuild(status("Failed"), spec={"source": {}}), None, True),
    "invalid spec, not yet reported": (servicebuild({}, spec={"source": {}}), None, False),
}


@pytest.mark.parametrize(("parsed", "want", "expected"), IDLE.values(), ids=IDLE.keys())
def test_idle(parsed: Any, want: Wanted | None, expected: bool) -> None:
    assert plan.idle(parsed, want) is expected


@pytest.mark.parametrize(("attempt", "seconds"), [(1, 30), (2, 60), (3, 120), (6, 600), (20, 600)])
def test_the_retry_delay_doubles_up_to_ten_minutes(attempt: int, seconds: int) -> None:
    assert plan.retry_delay(attempt, Settings(retry_delay_seconds=30)) == timedelta(seconds=seconds)
