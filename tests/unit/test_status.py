"""We test these aspects:

- the status for each outcome: phase, Ready/Reconciling/Stalled with reasons, bookkeeping;
- `observedGeneration` on the status and on every condition;
- Reconciling and Stalled are never both true (kstatus reads them in that order);
- `lastTransitionTime` moves only when a condition's status flips;
- the last successful output survives a new build and a failure;
- deciding twice on the same facts changes nothing (so nothing is written);
- one event per transition, Warning for failures;
- CacheExported: decided by each success from the build's report, absent without a cache, kept
  through later builds and failures; a failed export names both causes (credentials, a plain-HTTP
  registry not listed as insecure);
- what was built (`status.source`) follows the outcome;
- a build waiting for a slot is Queued with its position; a transient failure with attempts left is
  RetryScheduled, not Stalled; the attempt shows from the second one on;
- the output record: the registry's digest pinned in the image, every pushed reference; the
  attestations the registry serves, and the provenance: the mode asked for when the registry serves a
  provenance attestation, `none` when it serves none, whatever was asked;
- the merge patch that turns the old status into the new one, and human sizes;
- the preformatted fields kubectl's columns read (`duration`, `cache.summary`, `source.shortCommit`):
  computed from the fields beside them, so a status read back or written by an older operator gets
  them too; durations in the form the spec's durations take, parsing back to their seconds.
"""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servicebuild.api.models import (
    AttestationOutput,
    BuildOutput,
    Phase,
    QueueStatus,
    ServiceBuildStatus,
    SourceStatus,
    format_duration,
    parse_duration,
    status_to_dict,
)
from servicebuild.failures import Failure
from servicebuild.imageref import parse_image
from servicebuild.manifests import Attestation, ImageSummary, PlatformImage
from servicebuild.report import BuildReport
from servicebuild.status import (
    Build,
    InProgress,
    Outcome,
    Progress,
    Queued,
    RetryScheduled,
    Stalled,
    Succeeded,
    decide,
    human_size,
    merge_patch,
    output_record,
    transition_event,
)

T0 = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)
T1, T2 = T0 + timedelta(seconds=5), T0 + timedelta(seconds=41)
DIGEST = "sha256:" + "cd" * 32
OUTPUT = BuildOutput(
    image=f"r.io/shop/checkout:1@{DIGEST}",
    digest=DIGEST,
    size_bytes=320214,
    size="312.7 KiB",
    layers=2,
    generation=1,
)
EMPTY = ServiceBuildStatus()
REPORT = BuildReport(digest=DIGEST, image_name=None, cached_steps=4, total_steps=5)
JOB = "checkout-1-abcde"
BUILD_FAILURE = Failure("BuildFailed", "Build failed at [build 3/4] RUN make", "[build 3/4] RUN make")


def started(generation: int = 1, **fields: Any) -> Build:
    return Build(generation, job_name=JOB, start_time=T0, **fields)


def pending(generation: int = 1) -> InProgress:
    return InProgress(Build(generation, job_name=JOB), Progress.POD_PENDING)


def running(generation: int = 1, **fields: Any) -> InProgress:
    return InProgress(started(generation, **fields), Progress.RUNNING)


def succeeded(generation: int = 1, report: BuildReport = REPORT, **fields: Any) -> Succeeded:
    return Succeeded(started(generation, **fields), OUTPUT, report, T2)


def failed(generation: int = 1, **fields: Any) -> Stalled:
    return Stalled(
        started(generation, **fields), BUILD_FAILURE, log_tail="line 1\nline 2", completion_time=T2
    )


def conditions(status: ServiceBuildStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


TABLE: dict[str, tuple[Outcome, Phase, dict[str, tuple[str, str]]]] = {
    "job created": (
        pending(),
        Phase.PENDING,
        {
            "Ready": ("False", "BuildPending"),
            "Reconciling": ("True", "BuildPending"),
            "Stalled": ("False", "BuildPending"),
        },
    ),
    "queued": (
        InProgress(Build(1, job_name=JOB), Progress.AWAITING_ADMISSION),
        Phase.PENDING,
        {
            "Ready": ("False", "BuildQueued"),
            "Reconciling": ("True", "BuildQueued"),
            "Stalled": ("False", "BuildQueued"),
        },
    ),
    "running": (
        running(),
        Phase.BUILDING,
        {
            "Ready": ("False", "BuildRunning"),
            "Reconciling": ("True", "BuildRunning"),
            "Stalled": ("False", "BuildRunning"),
        },
    ),
    "succeeded, not yet read back": (
        InProgress(started(), Progress.VERIFYING_PUSH),
        Phase.BUILDING,
        {
            "Ready": ("False", "VerifyingPush"),
            "Reconciling": ("True", "VerifyingPush"),
            "Stalled": ("False", "VerifyingPush"),
        },
    ),
    "succeeded": (
        succeeded(),
        Phase.SUCCEEDED,
        {
            "Ready": ("True", "BuildSucceeded"),
            "Reconciling": ("False", "BuildSucceeded"),
            "Stalled": ("False", "BuildSucceeded"),
        },
    ),
    "failed": (
        failed(),
        Phase.FAILED,
        {
            "Ready": ("False", "BuildFailed"),
            "Reconciling": ("False", "BuildFailed"),
            "Stalled": ("True", "BuildFailed"),
        },
    ),
    "invalid spec": (
        Stalled(Build(1), Failure("InvalidSpec", "spec.output.image: 'X' is not in the expected format")),
        Phase.FAILED,
        {
            "Ready": ("False", "InvalidSpec"),
            "Reconciling": ("False", "InvalidSpec"),
            "Stalled": ("True", "InvalidSpec"),
        },
    ),
}


@pytest.mark.parametrize(("outcome", "phase", "expected"), TABLE.values(), ids=TABLE.keys())
def test_status_per_outcome(outcome: Outcome, phase: Phase, expected: dict[str, Any]) -> None:
    status = decide(EMPTY, outcome, T1)
    assert status.phase == phase
    assert conditions(status) == expected
    assert status.observed_generation == 1
    assert all(c.observed_generation == 1 for c in status.conditions)
    assert not (expected["Reconciling"][0] == "True" and expected["Stalled"][0] == "True")
    assert decide(status, outcome, T2) == status, "deciding again on the same facts must change nothing"


def test_success_records_output_cache_times_and_duration() -> None:
    status = decide(EMPTY, succeeded(), T2)
    assert status.output == OUTPUT
    assert status.cache is not None
    assert (status.cache.cached_steps, status.cache.total_steps) == (4, 5)
    assert (status.start_time, status.completion_time, status.duration_seconds) == (T0, T2, 41)
    assert status.job_name == "checkout-1-abcde"
    assert status.message is not None
    assert OUTPUT.image in status.message


def test_failure_keeps_previous_output_and_reports_step_and_log() -> None:
    built = decide(EMPTY, succeeded(), T1)
    stalled_status = decide(built, failed(2), T2)
    assert stalled_status.output == OUTPUT
    assert stalled_status.failed_step == "[build 3/4] RUN make"
    assert stalled_status.log_tail == "line 1\nline 2"
    stalled = stalled_status.condition("Stalled")
    assert stalled is not None
    assert "line 2" in stalled.message
    assert stalled_status.message is not None
    assert "kubectl logs job/checkout-1-abcde" in stalled_status.message


def test_new_build_keeps_previous_output_until_it_succeeds() -> None:
    built = decide(EMPTY, succeeded(), T1)
    rebuilding = decide(built, running(2), T2)
    assert rebuilding.output == OUTPUT
    assert rebuilding.observed_generation == 2
    ready = rebuilding.condition("Ready")
    assert ready is not None
    assert (ready.status, ready.observed_generation) == ("False", 2)


def test_transition_time_moves_only_when_status_flips() -> None:
    waiting = decide(EMPTY, pending(), T0)
    building = decide(waiting, running(), T1)
    done = decide(building, succeeded(), T2)

    def times(status: ServiceBuildStatus) -> dict[str, datetime]:
        return {c.type: c.last_transition_time for c in status.conditions}

    assert times(building) == {"Ready": T0, "Reconciling": T0, "Stalled": T0}
    assert times(done) == {"Ready": T2, "Reconciling": T2, "Stalled": T0}


def test_one_event_per_transition() -> None:
    waiting = decide(EMPTY, pending(), T0)
    building = decide(waiting, running(), T1)
    stalled = decide(building, failed(), T2)
    first = transition_event(EMPTY, waiting)
    assert first is not None
    assert (first.type, first.reason) == ("Normal", "BuildPending")
    assert transition_event(waiting, waiting) is None
    failure = transition_event(building, stalled)
    assert failure is not None
    assert (failure.type, failure.reason) == ("Warning", "BuildFailed")


def with_cache_export(*, exported: bool | None, generation: int = 1) -> Succeeded:
    return succeeded(generation, report=replace(REPORT, cache_exported=exported))


@pytest.mark.parametrize(
    ("exported", "expected"),
    [(True, ("True", "CacheExported")), (False, ("False", "CacheExportFailed")), (None, None)],
    ids=["exported", "export-failed", "no-cache"],
)
def test_cache_export_condition_follows_the_report(
    exported: bool | None, expected: tuple[str, str] | None
) -> None:
    status = decide(EMPTY, with_cache_export(exported=exported), T2)
    assert conditions(status).get("CacheExported") == expected
    ready = status.condition("Ready")
    assert ready is not None
    assert ready.status == "True"  # a failed cache export never fails the build
    assert status.phase == Phase.SUCCEEDED
    assert ("cache export failed" in (status.message or "")) == (exported is False)


def test_a_failed_cache_export_names_both_causes() -> None:
    status = decide(EMPTY, with_cache_export(exported=False), T2)
    cache = status.condition("CacheExported")
    assert cache is not None
    assert "spec.cache.ref" in cache.message
    assert "plain HTTP" in cache.message
    assert "SERVICEBUILD_INSECURE_REGISTRIES" in cache.message


def test_cache_export_condition_is_kept_until_the_next_success_decides_it() -> None:
    failed_export = decide(EMPTY, with_cache_export(exported=False), T1)
    rebuilding = decide(failed_export, running(2), T2)
    stalled = decide(rebuilding, failed(2), T2)
    assert conditions(rebuilding)["CacheExported"] == ("False", "CacheExportFailed")
    assert conditions(stalled)["CacheExported"] == ("False", "CacheExportFailed")
    exported = decide(stalled, with_cache_export(exported=True, generation=2), T2)
    assert conditions(exported)["CacheExported"] == ("True", "CacheExported")
    without_cache = decide(exported, with_cache_export(exported=None, generation=3), T2)
    assert "CacheExported" not in conditions(without_cache)


def test_status_source_is_what_the_outcome_built() -> None:
    commit = SourceStatus(commit="a" * 40)
    assert decide(EMPTY, running(source=commit), T1).source == commit
    assert decide(EMPTY, succeeded(source=commit), T2).source == commit
    assert decide(EMPTY, failed(source=commit), T2).source == commit


def test_waiting_for_a_slot_is_queued_with_its_position() -> None:
    status = decide(EMPTY, Queued(Build(1), position=3, since=T0, why="full"), T1)
    assert status.phase == Phase.QUEUED
    assert status.queue == QueueStatus(position=3, since=T0)
    assert conditions(status) == {
        "Ready": ("False", "WaitingForCapacity"),
        "Reconciling": ("True", "WaitingForCapacity"),
        "Stalled": ("False", "WaitingForCapacity"),
    }
    assert status.message is not None
    assert "position 3" in status.message
    assert decide(status, pending(), T2).queue is None, "a started build leaves the queue"


def test_transient_failure_with_attempts_left_is_retried_not_stalled() -> None:
    evicted = Failure("Evicted", "The node ran out of memory.")
    retrying = decide(EMPTY, RetryScheduled(started(), evicted, retry_at=T2, max_attempts=3), T1)
    assert retrying.phase == Phase.PENDING
    assert conditions(retrying)["Reconciling"] == ("True", "RetryScheduled")
    assert conditions(retrying)["Stalled"] == ("False", "RetryScheduled")
    assert retrying.message is not None
    assert "Attempt 1 of 3 failed (Evicted" in retrying.message
    assert "2026-11-28T10:00:41Z" in retrying.message
    assert retrying.attempt is None

    second = decide(retrying, running(attempt=2), T2)
    assert second.attempt == 2
    exhausted = decide(second, Stalled(started(attempt=3), evicted, max_attempts=3), T2)
    assert conditions(exhausted)["Stalled"] == ("True", "Evicted")
    assert exhausted.message is not None
    assert exhausted.message.startswith("Attempt 3 of 3: ")


def test_output_record_pins_the_registrys_digest_and_lists_the_pushed_references() -> None:
    image = parse_image("r.io/shop/checkout:1")
    platforms = (PlatformImage("linux/amd64", "sha256:" + "a1" * 32, 100, 2),)
    summary = ImageSummary(DIGEST, "application/vnd.oci.image.index.v1+json", 100, 2, platforms)
    report = replace(REPORT, image_name="r.io/shop/checkout:1,r.io/shop/checkout:abc")
    output = output_record(image, summary, report, generation=4)
    assert output.image == f"r.io/shop/checkout:1@{DIGEST}"
    assert (output.size_bytes, output.size, output.layers, output.generation) == (100, "100 B", 2, 4)
    assert output.tags == ["r.io/shop/checkout:1", "r.io/shop/checkout:abc"]
    assert output.platforms is not None
    assert output.platforms[0].platform == "linux/amd64"
    assert output_record(image, replace(summary, platforms=()), REPORT, 4).tags == ["r.io/shop/checkout:1"]


def test_output_record_lists_the_served_attestations_and_the_provenance_mode() -> None:
    image = parse_image("r.io/shop/checkout:1")
    platforms = (PlatformImage("linux/amd64", "sha256:" + "a1" * 32, 100, 2),)
    attestation = "sha256:" + "c3" * 32
    attestations = (
        Attestation("sbom", attestation, platforms[0].digest, "linux/amd64"),
        Attestation("provenance", attestation, platforms[0].digest, "linux/amd64"),
    )
    summary = ImageSummary(DIGEST, "application/vnd.oci.image.index.v1+json", 100, 2, platforms, attestations)
    output = output_record(image, summary, REPORT, 4, provenance="max")
    assert output.provenance == "max"
    assert output.attestations == [
        AttestationOutput(
            type="sbom", digest=attestation, subject=platforms[0].digest, platform="linux/amd64"
        ),
        AttestationOutput(
            type="provenance", digest=attestation, subject=platforms[0].digest, platform="linux/amd64"
        ),
    ]
    assert (output.size_bytes, output.layers) == (100, 2)


@pytest.mark.parametrize(
    ("asked", "served", "recorded"),
    [
        ("min", ("provenance",), "min"),
        ("max", ("provenance",), "max"),
        (None, ("provenance",), "min"),
        ("max", ("sbom",), "none"),
        ("min", (), "none"),
        ("off", (), "none"),
        (None, (), "none"),
    ],
)
def test_the_provenance_recorded_is_what_the_registry_serves(
    asked: str | None, served: tuple[str, ...], recorded: str
) -> None:
    subject = "sha256:" + "a1" * 32
    attestations = tuple(Attestation(kind, "sha256:" + "c3" * 32, subject, None) for kind in served)
    summary = ImageSummary(DIGEST, "application/vnd.oci.image.index.v1+json", 100, 2, (), attestations)
    output = output_record(parse_image("r.io/shop/checkout:1"), summary, REPORT, 4, provenance=asked)
    assert output.provenance == recorded
    assert status_to_dict(ServiceBuildStatus(output=output))["output"]["provenance"] == recorded


def test_merge_patch_removes_sets_and_nests() -> None:
    old = {"phase": "Failed", "logTail": "x", "output": {"digest": "a", "platforms": [1]}}
    new = {"phase": "Building", "output": {"digest": "a"}, "jobName": "j"}
    assert merge_patch(old, new) == {
        "phase": "Building",
        "logTail": None,
        "output": {"platforms": None},
        "jobName": "j",
    }
    assert merge_patch(new, new) == {}


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (320214, "312.7 KiB"),
        (12582912, "12.0 MiB"),
        (5 * 1024**4, "5.0 TiB"),
    ],
)
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (41, "41s"), (60, "1m"), (83, "1m23s"), (3605, "1h5s"), (5400, "1h30m"), (90061, "25h1m1s")],
)
def test_durations_read_like_the_specs_durations(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**8))
def test_a_formatted_duration_parses_back_to_its_seconds(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


COMMIT = "3f9c2a7be81d4c0f9a6e5d2b1c0a9f8e7d6c5b4a"


def _without_preformatted(written: dict[str, Any]) -> dict[str, Any]:
    return {
        key: {k: v for k, v in value.items() if k not in {"summary", "shortCommit"}}
        if isinstance(value, dict)
        else value
        for key, value in written.items()
        if key != "duration"
    }


def test_a_success_writes_duration_cache_summary_and_short_commit_for_the_columns() -> None:
    written = status_to_dict(decide(EMPTY, succeeded(source=SourceStatus(commit=COMMIT)), T2))
    assert written["duration"] == "41s"
    assert written["cache"] == {"cachedSteps": 4, "totalSteps": 5, "summary": "4/5"}
    assert written["source"] == {"commit": COMMIT, "shortCommit": "3f9c2a7be81d"}
    assert status_to_dict(ServiceBuildStatus.model_validate(written)) == written, "read back, written alike"
    older = _without_preformatted(written)
    assert older != written
    assert status_to_dict(ServiceBuildStatus.model_validate(older)) == written, "an older status gains them"


def test_without_a_duration_commit_or_cache_figures_there_is_nothing_to_format() -> None:
    written = status_to_dict(decide(EMPTY, running(source=SourceStatus(context_digest=DIGEST)), T1))
    assert "duration" not in written
    assert "cache" not in written
    assert written["source"] == {"contextDigest": DIGEST}
