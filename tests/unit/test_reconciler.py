"""We test these aspects of the real `Reconciler`, driven with in-memory gateways and an injected clock:

- a build container that has terminated is the end of the build, even while its Job has no Complete or
  Failed condition yet (the Job controller adds it seconds later): success is read back and Ready at
  once, a failure is reported at once, and neither is ever judged a `PendingTimeout`, however long the
  build ran;
- a transient failure schedules the next attempt after the retry delay, measured with the `now` the
  reconciler is given: before it the status says when, from it on the next attempt's Job exists;
- a ConfigMap context's findings: with `checks.policy: Fail` a secret copied into the image stalls as
  DockerfileCheckFailed before any Job; with `Warn` the Job is created, the findings and DockerfileClean
  are in the status from the start, BuildKit's checks from the report join them, and Ready is True;
- a `Fail` size budget: the Job pushes by digest only, the operator tags the digest within budget; over
  it the build stalls as SizeBudgetExceeded, nothing is tagged and the output stays the last image within
  budget; a replica that stops leading writes no tag; a `Warn` budget: Ready stays True,
  WithinSizeBudget=False and one Warning Event, no tag written by the operator.
"""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from servicebuild.api.models import ServiceBuildStatus, parse_servicebuild
from servicebuild.config import Settings
from servicebuild.kube import NotLeadingError
from servicebuild.reconciler import Reconciler, Result
from support.fakes import IMAGE_SIZE, FakeGit, FakeKube, FakeRegistry, FakeRuns
from support.pods import pod_body

NAMESPACE = "shop"
START = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32
IMAGE = "registry.example.com/shop/checkout:1.4.2"
METADATA = {"name": "checkout", "namespace": NAMESPACE, "uid": "0b9d7c1e-5d0c-4f2e-9a57-7d3c2f1e0a11"}
SPEC = {"source": {"configMap": {"name": "ctx"}}, "output": {"image": IMAGE}, "pendingTimeout": "10m"}
SETTINGS = Settings(retry_delay_seconds=1)
BUILD_FAILURE_LOG = """\
#9 [build 3/4] RUN make greet
#9 ERROR: process "/bin/sh -c make greet" did not complete successfully: exit code: 2
------
 > [build 3/4] RUN make greet:
------
ERROR: failed to solve: process "/bin/sh -c make greet" did not complete successfully: exit code: 2
"""


def at(seconds: float) -> str:
    return (START + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


class World:
    """One ServiceBuild, its Jobs and their Pods, as the Job controller and the kubelet leave them."""

    def __init__(self, settings: Settings = SETTINGS, spec: dict[str, Any] = SPEC) -> None:
        self.kube = FakeKube(now=at(0), configmaps={"ctx": {"data": {"Dockerfile": "FROM scratch\n"}}})
        self.registry, self.git, self.runs = FakeRegistry(), FakeGit(), FakeRuns(START)
        self.reconciler = Reconciler(self.kube, self.registry, self.git, settings, runs=self.runs)
        self.spec = spec
        self.generation = 1
        self.annotations: dict[str, str] = {}

    def change_spec(self, **fields: Any) -> None:
        """A user edits the spec; the API server bumps the generation."""
        self.spec = {**self.spec, **fields}
        self.generation += 1

    def reconcile(self, seconds: float) -> ServiceBuildStatus:
        return self.reconcile_result(seconds).status

    def reconcile_result(self, seconds: float) -> Result:
        return self.reconciler.reconcile(self.servicebuild(), START + timedelta(seconds=seconds))

    def servicebuild(self) -> Any:
        metadata = {**METADATA, "generation": self.generation, "annotations": self.annotations}
        return parse_servicebuild({"metadata": metadata, "spec": self.spec, "status": self.kube.status})

    @property
    def job_name(self) -> str:
        return str(self.kube.created[-1]["metadata"]["name"])

    def start(self, seconds: float) -> None:
        """The Job controller starts the Job and the kubelet the build container."""
        self.kube.jobs[(NAMESPACE, self.job_name)]["status"] = {"startTime": at(seconds), "active": 1}
        running = {"running": {"startedAt": at(seconds)}}
        self.kube.pods[(NAMESPACE, self.job_name)] = pod_body("Running", running)

    def end(
        self, seconds: float, terminated: dict[str, Any], pod_status: dict[str, Any] | None = None
    ) -> None:
        """The build container terminates; the Job controller counts the Pod out but adds no condition yet."""
        phase = "Succeeded" if terminated["exitCode"] == 0 else "Failed"
        pod = pod_body(phase, {"terminated": {**terminated, "finishedAt": at(seconds)}})
        pod["status"] |= pod_status or {}
        pod["metadata"] = {"name": f"{self.job_name}-pod"}
        self.kube.pods[(NAMESPACE, self.job_name)] = pod
        self.kube.jobs[(NAMESPACE, self.job_name)]["status"]["active"] = 0

    def complete(self, seconds: float) -> None:
        """The Job controller finishes the Job, as the Pod ended."""
        job = self.kube.jobs[(NAMESPACE, self.job_name)]
        ended = self.kube.pods[(NAMESPACE, self.job_name)]["status"]["phase"]
        kind = "Complete" if ended == "Succeeded" else "Failed"
        job["status"]["conditions"] = [{"type": kind, "status": "True", "lastTransitionTime": at(seconds)}]

    def build(self, seconds: float, message: str | None = None) -> ServiceBuildStatus:
        """The Job the operator just created runs and succeeds; the operator sees it end."""
        self.start(seconds)
        self.end(seconds + 5, {"exitCode": 0, "reason": "Completed", "message": message or _report()})
        self.complete(seconds + 6)
        return self.reconcile(seconds + 7)


def _report() -> str:
    return json.dumps({"digest": DIGEST, "imageName": IMAGE, "cacheMetrics": None, "cacheExported": True})


def _condition(status: ServiceBuildStatus, condition_type: str) -> tuple[str, str]:
    condition = status.condition(condition_type)
    assert condition is not None
    return condition.status, condition.reason


def test_a_long_build_is_ready_as_soon_as_its_container_ends() -> None:
    world = World()
    world.reconcile(0)
    world.start(1)
    assert world.reconcile(300).phase == "Building"

    world.end(720, {"exitCode": 0, "reason": "Completed", "message": _report()})
    status = world.reconcile(721)

    assert _condition(status, "Ready") == ("True", "BuildSucceeded")
    assert status.output is not None
    assert status.output.digest == DIGEST
    assert status.completion_time == START + timedelta(seconds=720)
    assert status.duration_seconds == 719
    assert world.kube.deleted == [], "the build's Job is kept, never stopped as pending"


def test_a_long_build_that_failed_is_reported_as_soon_as_its_container_ends() -> None:
    world = World()
    world.reconcile(0)
    world.start(1)

    world.end(720, {"exitCode": 1, "reason": "Error", "message": BUILD_FAILURE_LOG})
    status = world.reconcile(721)

    assert _condition(status, "Stalled") == ("True", "BuildStepFailed")
    assert status.failed_step == "[build 3/4] RUN make greet"
    assert world.kube.deleted == []


def test_a_pod_that_never_starts_its_build_still_times_out_pending() -> None:
    world = World()
    world.reconcile(0)
    world.kube.jobs[(NAMESPACE, world.job_name)]["status"] = {"startTime": at(1), "active": 1}
    world.kube.pods[(NAMESPACE, world.job_name)] = pod_body(
        "Pending", {"waiting": {"reason": "ImagePullBackOff", "message": "pull access denied"}}
    )
    assert world.reconcile(600).phase == "Pending"

    status = world.reconcile(602)

    assert _condition(status, "Stalled") == ("True", "PendingTimeout")
    assert "ImagePullBackOff" in (status.message or "")
    assert world.kube.deleted == [(NAMESPACE, world.job_name)]


def test_a_transient_failure_is_retried_after_the_delay_by_the_clock_given() -> None:
    world = World(Settings(retry_delay_seconds=30))
    world.reconcile(0)
    world.start(1)
    evicted = {"reason": "Evicted", "message": "The node was low on resource: memory."}
    world.end(60, {"exitCode": 137, "reason": "Error"}, evicted)
    first_job = world.job_name

    waiting = world.reconcile(61)
    assert _condition(waiting, "Reconciling") == ("True", "RetryScheduled")
    assert f"the next one starts at {at(90)}" in (waiting.message or "")
    assert world.reconcile(89).message == waiting.message
    assert len(world.kube.created) == 1

    retrying = world.reconcile(90)
    assert len(world.kube.created) == 2
    assert world.job_name != first_job
    assert retrying.attempt == 2
    assert _condition(retrying, "Reconciling") == ("True", "BuildPending")


def test_a_new_generation_whose_configmap_is_missing_stops_the_older_build() -> None:
    world = World()
    world.reconcile(0)
    world.start(1)
    older = world.job_name

    world.change_spec(source={"configMap": {"name": "gone"}})
    status = world.reconcile(5)

    assert _condition(status, "Stalled") == ("True", "SourceNotFound")
    assert world.kube.deleted == [(NAMESPACE, older)], "the spec that asked for the older build is gone"


def test_a_permanent_failure_of_a_retry_counts_the_attempts_it_may_have() -> None:
    world = World(Settings(retry_delay_seconds=0))
    world.reconcile(0)
    world.start(1)
    evicted = {"reason": "Evicted", "message": "The node was low on resource: memory."}
    world.end(10, {"exitCode": 137, "reason": "Error"}, evicted)
    world.reconcile(11)
    world.start(12)
    world.end(20, {"exitCode": 1, "reason": "Error", "message": BUILD_FAILURE_LOG})

    status = world.reconcile(21)

    assert status.attempt == 2
    assert (status.message or "").startswith("Attempt 2 of 3: "), status.message


LEAKY_CONTEXT = {
    "data": {
        "Dockerfile": "FROM node:22-slim as app\nWORKDIR /app\nCOPY . .\nUSER node\n",
        "server.js": "",
        ".env": "API_TOKEN=x",
    }
}


def test_policy_fail_stops_a_secret_in_the_image_before_any_job() -> None:
    world = World(spec={**SPEC, "checks": {"policy": "Fail"}})
    world.kube.configmaps["ctx"] = LEAKY_CONTEXT

    status = world.reconcile(0)

    assert _condition(status, "Stalled") == ("True", "DockerfileCheckFailed")
    assert "SecretInImage" in (status.message or "")
    assert "Dockerfile line 3" in (status.message or "")
    assert _condition(status, "DockerfileClean") == ("False", "SecretInImage")
    assert [(f.rule, f.line) for f in status.findings or ()] == [("SecretInImage", 3)]
    assert world.kube.created == []


def test_findings_warn_then_join_buildkits_checks_and_never_touch_ready() -> None:
    world = World()
    world.kube.configmaps["ctx"] = LEAKY_CONTEXT

    started = world.reconcile(0)
    assert _condition(started, "DockerfileClean") == ("False", "SecretInImage")
    assert len(world.kube.created) == 1, "policy Warn builds anyway"

    checks = "warn FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)\n"
    status = world.build(1, message=_report() + "\n" + checks)

    assert _condition(status, "Ready") == ("True", "BuildSucceeded")
    assert [(f.rule, f.line) for f in status.findings or ()] == [("SecretInImage", 3), ("FromAsCasing", 1)]
    assert _condition(status, "DockerfileClean") == ("False", "SecretInImage")


def test_a_fail_budget_tags_the_digest_only_within_budget() -> None:
    world = World(spec={**SPEC, "sizeBudget": {"maxBytes": "20Mi", "action": "Fail"}})
    world.reconcile(0)
    job_args = json.dumps(world.kube.created[-1])
    assert "push-by-digest=true" in job_args, "BuildKit pushes untagged"

    within = world.build(1)

    assert _condition(within, "Ready") == ("True", "BuildSucceeded")
    assert _condition(within, "WithinSizeBudget") == ("True", "WithinSizeBudget")
    assert world.registry.tags == {IMAGE: DIGEST}

    world.registry.tags.clear()
    world.registry.size_bytes = 30 * 1024 * 1024
    world.change_spec(buildArgs={"VERSION": "2"})
    world.reconcile(20)
    over = world.build(21)

    assert _condition(over, "Stalled") == ("True", "SizeBudgetExceeded")
    assert _condition(over, "Ready") == ("False", "SizeBudgetExceeded")
    assert _condition(over, "WithinSizeBudget") == ("False", "SizeBudgetExceeded")
    assert "the image has 30.0 MiB, over maxBytes 20Mi" in (over.message or "")
    assert f"registry.example.com/shop/checkout@{DIGEST} only" in (over.message or "")
    assert world.registry.tags == {}, "nothing tagged over budget"
    assert over.output is not None
    assert over.output.generation == 1, "the output stays the last image within budget"


def test_a_fail_budget_writes_no_tag_once_the_replica_stops_leading() -> None:
    world = World(spec={**SPEC, "sizeBudget": {"maxBytes": "20Mi", "action": "Fail"}})
    world.reconcile(0)
    world.registry.acting = False

    with pytest.raises(NotLeadingError):
        world.build(1)

    assert world.registry.tags == {}
    assert world.kube.status.get("phase") != "Succeeded"


def test_a_warn_budget_warns_once_and_leaves_ready_alone() -> None:
    world = World(spec={**SPEC, "sizeBudget": {"maxGrowthPercent": 10}})
    world.reconcile(0)
    world.build(1)
    assert "push-by-digest=true" not in json.dumps(world.kube.created[-1])
    world.registry.size_bytes = IMAGE_SIZE * 2
    world.change_spec(buildArgs={"VERSION": "2"})
    world.reconcile(20)

    grown = world.build(21)
    world.reconcile(40)

    assert _condition(grown, "Ready") == ("True", "BuildSucceeded")
    assert _condition(grown, "WithinSizeBudget") == ("False", "SizeBudgetExceeded")
    warnings = [event for event in world.kube.events if event[1] == "SizeBudgetExceeded"]
    assert len(warnings) == 1
    assert warnings[0][0] == "Warning"
    assert "grew 100% (12.0 MiB → 24.0 MiB), over maxGrowthPercent 10" in warnings[0][2]
    assert world.registry.tags == {}, "a Warn budget leaves tagging to BuildKit"
