"""We test these aspects:

- a Job and its Pod are read as absent, queued, pending, running, succeeded or failed;
- success carries the report from the build container's termination message;
- a failure carries the classified reason, its message, whether it is transient, the failing
  Dockerfile step and the log tail;
- a completed Job whose report is unreadable is a failure, not a success without output;
- a build container that has terminated ends the build before the Job controller's Complete or Failed
  condition (or its 1.31+ forerunners SuccessCriteriaMet and FailureTarget) arrives, and the pending
  timeout never applies to a build that started, however long it ran;
- every pair of Job state and Pod state, as a table; along each way a build really goes (success,
  failure, eviction, deadline, Kueue) no phase goes backwards and an ended build stays as it ended.
"""

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from servicebuild.jobs import parse_job, parse_pod
from servicebuild.observe import BuildState, Observation, PendingLimit
from servicebuild.observe import observe as interpret
from servicebuild.times import parse_time
from support.pods import pod_body, unschedulable_pod, waiting_pod

DIGEST = "sha256:" + "ab" * 32


def observe(
    job_body: dict[str, Any] | None, pod_body: dict[str, Any] | None, pending: PendingLimit | None = None
) -> Observation:
    """The observation of a Job and its Pod as the API returns them."""
    return interpret(parse_job(job_body) if job_body is not None else None, parse_pod(pod_body), pending)


def at(text: str) -> datetime:
    moment = parse_time(text)
    assert moment is not None
    return moment


def limit(now: str) -> PendingLimit:
    return PendingLimit(now=at(now), limit=timedelta(seconds=600))


REPORT = json.dumps(
    {"digest": DIGEST, "imageName": "r.io/a/b:1", "cacheMetrics": {"user_total": 5, "user_cached": 4}}
)
FAILURE_LOG = """\
#9 [build 3/4] RUN make greet
#9 0.431 main.c:3:10: fatal error: greet.h: No such file or directory
#9 ERROR: process "/bin/sh -c make greet" did not complete successfully: exit code: 2
------
 > [build 3/4] RUN make greet:
0.431 main.c:3:10: fatal error: greet.h: No such file or directory
------
ERROR: failed to solve: process "/bin/sh -c make greet" did not complete successfully: exit code: 2
"""


def job(*conditions: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "checkout-3-abcde"},
        "spec": {"suspend": status.pop("suspend", False)},
        "status": {"startTime": "2026-11-28T10:00:00Z", "conditions": list(conditions), **status},
    }


def pod(phase: str, terminated: dict[str, Any] | None = None) -> dict[str, Any]:
    return pod_body(phase, {"terminated": terminated} if terminated else {"running": {}})


COMPLETE = {"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-28T10:00:41Z"}
FAILED = {
    "type": "Failed",
    "status": "True",
    "reason": "BackoffLimitExceeded",
    "lastTransitionTime": "2026-11-28T10:00:09Z",
}
DEADLINE = {
    "type": "Failed",
    "status": "True",
    "reason": "DeadlineExceeded",
    "lastTransitionTime": "2026-11-28T10:30:00Z",
}

CASES = {
    "no job": (None, None, BuildState.ABSENT),
    "job without pod": (job(), None, BuildState.PENDING),
    "pod pending": (job(active=1), {"status": {"phase": "Pending"}}, BuildState.PENDING),
    "pod running": (job(active=1), pod("Running"), BuildState.RUNNING),
    "suspended by kueue": (job(suspend=True), None, BuildState.QUEUED),
    "complete with report": (
        job(COMPLETE, completionTime="2026-11-28T10:00:41Z"),
        pod("Succeeded", {"exitCode": 0, "message": REPORT}),
        BuildState.SUCCEEDED,
    ),
    "complete, pod gone": (job(COMPLETE), None, BuildState.FAILED),
    "complete, garbage report": (
        job(COMPLETE),
        pod("Succeeded", {"exitCode": 0, "message": "{oops"}),
        BuildState.FAILED,
    ),
    "failed build": (job(FAILED), pod("Failed", {"exitCode": 1, "message": FAILURE_LOG}), BuildState.FAILED),
    "deadline": (job(DEADLINE), None, BuildState.FAILED),
    "container ended, job not complete yet": (
        job(active=0),
        pod("Succeeded", {"exitCode": 0, "message": REPORT}),
        BuildState.SUCCEEDED,
    ),
    "container failed, job not failed yet": (
        job(active=0),
        pod("Failed", {"exitCode": 1, "message": FAILURE_LOG}),
        BuildState.FAILED,
    ),
    "success criteria met, pods stopping": (
        job({**COMPLETE, "type": "SuccessCriteriaMet"}),
        pod("Succeeded", {"exitCode": 0, "message": REPORT}),
        BuildState.SUCCEEDED,
    ),
    "failure target, pods stopping": (
        job({**DEADLINE, "type": "FailureTarget"}, active=1),
        pod("Running"),
        BuildState.FAILED,
    ),
    "condition false is ignored": (
        job({**COMPLETE, "status": "False"}, active=1),
        pod("Running"),
        BuildState.RUNNING,
    ),
}


@pytest.mark.parametrize(("job_body", "pod_body", "state"), CASES.values(), ids=CASES.keys())
def test_states(job_body: dict[str, Any] | None, pod_body: dict[str, Any] | None, state: BuildState) -> None:
    assert observe(job_body, pod_body).state == state


def test_success_carries_report_and_times() -> None:
    observation = observe(
        job(COMPLETE, completionTime="2026-11-28T10:00:41Z"),
        pod("Succeeded", {"exitCode": 0, "message": REPORT}),
    )
    assert observation.report is not None
    assert observation.report.digest == DIGEST
    assert (observation.report.cached_steps, observation.report.total_steps) == (4, 5)
    assert (observation.start_time, observation.completion_time) == (
        at("2026-11-28T10:00:00Z"),
        at("2026-11-28T10:00:41Z"),
    )
    assert observation.job_name == "checkout-3-abcde"


def test_build_failure_names_step_and_keeps_log_tail() -> None:
    observation = observe(job(FAILED), pod("Failed", {"exitCode": 1, "message": FAILURE_LOG}))
    assert observation.failure.reason == "BuildStepFailed"
    assert observation.failure.failed_step == "[build 3/4] RUN make greet"
    assert observation.failure.message is not None
    assert "`[build 3/4] RUN make greet`" in observation.failure.message
    assert "did not complete successfully: exit code: 2" in observation.failure.message
    assert observation.failure.transient is False
    assert observation.log_tail is not None
    assert "greet.h: No such file or directory" in observation.log_tail


def test_an_evicted_build_is_a_transient_failure() -> None:
    evicted = pod("Failed", {"exitCode": 137, "reason": "ContainerStatusUnknown"})
    evicted["status"] |= {"reason": "Evicted", "message": "The node was low on resource: memory."}
    observation = observe(job(FAILED), evicted)
    assert observation.failure is not None
    assert (observation.state, observation.failure.reason, observation.failure.transient) == (
        BuildState.FAILED,
        "Evicted",
        True,
    )
    assert "The node was low on resource: memory." in (observation.failure.message or "")


def test_deadline_is_its_own_reason() -> None:
    observation = observe(job(DEADLINE), None)
    assert observation.failure.reason == "DeadlineExceeded"
    assert "spec.timeout" in (observation.failure.message or "")
    assert observation.failure.transient is False


def test_missing_report_is_a_failure_with_a_reason() -> None:
    observation = observe(job(COMPLETE), None)
    assert observation.failure.reason == "ReportMissing"
    assert observation.report is None


@pytest.mark.parametrize(
    ("conditions", "status", "finished"),
    [
        ((), {"active": 1}, False),
        ((COMPLETE,), {}, True),
        ((FAILED,), {}, True),
        (({**FAILED, "status": "False"},), {"active": 1}, False),
        (({**DEADLINE, "type": "FailureTarget"},), {"active": 1}, True),
        ((), {"active": 0}, True),
        ((), {"suspend": True}, False),
        ((), {"startTime": None}, False),
    ],
    ids=[
        "running",
        "complete",
        "failed",
        "condition false",
        "failure target",
        "pod ended, no condition yet",
        "suspended",
        "not started",
    ],
)
def test_is_finished(conditions: tuple[dict[str, Any], ...], status: dict[str, Any], finished: bool) -> None:
    assert parse_job(job(*conditions, **status)).finished is finished


PENDING_SINCE = "2026-11-28T10:00:00Z"
LIMIT = limit("2026-11-28T10:10:01Z")
UNSCHEDULABLE = unschedulable_pod("0/3 nodes are available")
IMAGE_PULL = waiting_pod("buildkit", "ImagePullBackOff", "pull access denied")


@pytest.mark.parametrize(
    ("pod_body", "why"),
    [
        (UNSCHEDULABLE, "Unschedulable: 0/3 nodes are available"),
        (IMAGE_PULL, "buildkit: ImagePullBackOff: pull access denied"),
        (None, "no Pod started"),
    ],
    ids=["unschedulable", "image pull", "no pod"],
)
def test_pending_too_long_is_a_failure_that_says_why(pod_body: dict[str, Any] | None, why: str) -> None:
    observation = observe(job(startTime=PENDING_SINCE), pod_body, LIMIT)
    assert observation.state == BuildState.FAILED
    assert observation.failure.reason == "PendingTimeout"
    assert why in (observation.failure.message or "")


def test_pending_within_the_limit_is_pending() -> None:
    early = limit("2026-11-28T10:09:59Z")
    assert observe(job(startTime=PENDING_SINCE), UNSCHEDULABLE, early).state == BuildState.PENDING


def test_queued_and_running_builds_never_time_out_pending() -> None:
    assert observe(job(suspend=True, startTime=PENDING_SINCE), None, LIMIT).state == BuildState.QUEUED
    assert observe(job(active=1, startTime=PENDING_SINCE), pod("Running"), LIMIT).state == BuildState.RUNNING


def test_job_annotations_say_what_is_built() -> None:
    body = job()
    body["metadata"]["annotations"] = {
        "servicebuild.dev/commit": "a" * 40,
        "servicebuild.dev/context-digest": "sha256:" + "b" * 64,
    }
    observation = observe(body, None)
    assert (observation.commit, observation.context_digest) == ("a" * 40, "sha256:" + "b" * 64)


def test_a_build_longer_than_the_pending_timeout_ends_by_its_container() -> None:
    twelve_minutes_later = limit("2026-11-28T10:12:00Z")
    ended = {"exitCode": 0, "message": REPORT, "finishedAt": "2026-11-28T10:11:58Z"}
    observation = observe(job(active=0), pod("Succeeded", ended), twelve_minutes_later)
    assert observation.state == BuildState.SUCCEEDED
    assert observation.completion_time == at("2026-11-28T10:11:58Z")
    running = observe(job(active=1), pod("Running"), twelve_minutes_later)
    assert running.state == BuildState.RUNNING


def test_the_container_end_is_the_completion_time_even_once_the_job_completed() -> None:
    ended = {"exitCode": 0, "message": REPORT, "finishedAt": "2026-11-28T10:00:39Z"}
    observation = observe(job(COMPLETE, completionTime="2026-11-28T10:00:41Z"), pod("Succeeded", ended))
    assert observation.completion_time == at("2026-11-28T10:00:39Z")


def test_a_deadline_is_named_while_the_job_controller_stops_the_pod() -> None:
    killed = {"exitCode": 137, "reason": "Error"}
    observation = observe(job({**DEADLINE, "type": "FailureTarget"}), pod("Failed", killed))
    assert observation.failure.reason == "DeadlineExceeded"


# Every pair of Job state and Pod state, as the Job controller and the kubelet can leave them; impossible
# pairs too, so that the order in which observe() reads them is pinned. A: absent, Q: queued (Kueue),
# P: pending, R: running, S: succeeded, F: failed.
REPORTED = {"exitCode": 0, "message": REPORT}
JOB_STATES: dict[str, dict[str, Any]] = {
    "created": {"metadata": {"name": "b-1-x"}},
    "suspended": job(suspend=True),
    "active": job(active=1),
    "counted-out": job(active=0),
    "success-criteria-met": job({**COMPLETE, "type": "SuccessCriteriaMet"}),
    "complete": job(COMPLETE, completionTime="2026-11-28T10:00:41Z"),
    "failure-target": job({**FAILED, "type": "FailureTarget"}, active=1),
    "failed": job(FAILED),
    "deadline-exceeded": job(DEADLINE),
}
EVICTED = {
    "status": {
        "phase": "Failed",
        "reason": "Evicted",
        "message": "The node was low on resource: memory.",
        "containerStatuses": [{"name": "buildkit", "state": {"terminated": {"exitCode": 137}}}],
    }
}
POD_STATES: dict[str, dict[str, Any] | None] = {
    "none": None,
    "unschedulable": unschedulable_pod("0/3 nodes are available"),
    "init-running": {
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [{"name": "context", "state": {"running": {}}}],
        }
    },
    "running": pod("Running"),
    "report": pod("Succeeded", REPORTED),
    "no-report": pod("Succeeded", {"exitCode": 0, "message": "{oops"}),
    "failing": pod("Failed", {"exitCode": 1, "message": FAILURE_LOG}),
    "evicted": EVICTED,
}
MATRIX = """
                      none  unschedulable  init-running  running  report  no-report  failing  evicted
created               P     P              P             R        S       F          F        F
suspended             Q     Q              Q             Q        S       F          F        F
active                P     P              P             R        S       F          F        F
counted-out           P     P              P             R        S       F          F        F
success-criteria-met  F     F              F             F        S       F          F        F
complete              F     F              F             F        S       F          F        F
failure-target        F     F              F             F        F       F          F        F
failed                F     F              F             F        F       F          F        F
deadline-exceeded     F     F              F             F        F       F          F        F
"""
LETTERS = {
    "A": BuildState.ABSENT,
    "Q": BuildState.QUEUED,
    "P": BuildState.PENDING,
    "R": BuildState.RUNNING,
    "S": BuildState.SUCCEEDED,
    "F": BuildState.FAILED,
}


def _matrix() -> list[tuple[str, str, BuildState]]:
    rows = [line.split() for line in MATRIX.strip().splitlines()]
    columns = rows[0]
    assert columns == list(POD_STATES)
    assert [row[0] for row in rows[1:]] == list(JOB_STATES)
    return [
        (job_state, pod_state, LETTERS[letter])
        for job_state, row in zip(JOB_STATES, rows[1:], strict=True)
        for pod_state, letter in zip(POD_STATES, row[1:], strict=True)
    ]


@pytest.mark.parametrize(("job_state", "pod_state", "expected"), _matrix())
def test_every_job_and_pod_state(job_state: str, pod_state: str, expected: BuildState) -> None:
    assert observe(JOB_STATES[job_state], POD_STATES[pod_state]).state == expected


# What a build goes through, in the order the components write it: the kubelet reports the build
# container's end before the Job controller counts the Pod out and, seconds later, finishes the Job.
TIMELINES = {
    "success": [
        ("created", "none"),
        ("active", "unschedulable"),
        ("active", "init-running"),
        ("active", "running"),
        ("active", "report"),
        ("counted-out", "report"),
        ("success-criteria-met", "report"),
        ("complete", "report"),
    ],
    "failure": [
        ("created", "none"),
        ("active", "running"),
        ("active", "failing"),
        ("counted-out", "failing"),
        ("failure-target", "failing"),
        ("failed", "failing"),
    ],
    "eviction": [
        ("active", "running"),
        ("active", "evicted"),
        ("counted-out", "evicted"),
        ("failed", "evicted"),
    ],
    "deadline": [("active", "running"), ("failure-target", "running"), ("deadline-exceeded", "none")],
    "kueue": [("suspended", "none"), ("active", "none"), ("active", "running"), ("active", "report")],
}
_ORDER = [BuildState.ABSENT, BuildState.QUEUED, BuildState.PENDING, BuildState.RUNNING]


@pytest.mark.parametrize("timeline", TIMELINES.values(), ids=TIMELINES.keys())
def test_no_phase_goes_backwards_within_one_build(timeline: list[tuple[str, str]]) -> None:
    states = [
        observe(JOB_STATES[job_state], POD_STATES[pod_state]).state for job_state, pod_state in timeline
    ]
    ended = [state for state in states if state in {BuildState.SUCCEEDED, BuildState.FAILED}]
    assert len(set(ended)) <= 1, f"an ended build stays as it ended: {states}"
    first_end = next((index for index, state in enumerate(states) if state in ended), len(states))
    assert all(state in ended for state in states[first_end:]), states
    running = [_ORDER.index(state) for state in states[:first_end]]
    assert running == sorted(running), f"went backwards: {states}"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"active": 1}, None),
        ({"active": 0, "uncountedTerminatedPods": {"succeeded": ["uid-1"]}}, True),
        ({"active": 0, "uncountedTerminatedPods": {"failed": ["uid-1"]}}, False),
        ({"succeeded": 1}, True),
        ({"failed": 1}, False),
    ],
    ids=["running", "counted out, succeeded", "counted out, failed", "succeeded", "failed"],
)
def test_a_job_tells_how_it_ended_before_its_condition(status: dict[str, Any], expected: bool | None) -> None:
    assert parse_job(job(**status)).ended_well is expected
    assert parse_job(job(COMPLETE)).ended_well is True
    assert parse_job(job(FAILED)).ended_well is False
