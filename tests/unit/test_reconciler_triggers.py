"""We test these aspects of the real `Reconciler` following its sources, with in-memory gateways:

- a polled branch: a new commit is built as the next build (`NewCommit`, the commit recorded), but
  never interrupts a running build, and many commits during one build make one next build; the lookup
  waits for its interval, and a push announced by a webhook makes it happen at once;
- a failed build is not rebuilt for the same commit; a rebuild request (`servicebuild.dev/requested-at`)
  rebuilds after a failure, once per value, and `lastHandledRequest` records it;
- base images: the report's `FROM …@sha256` facts become `status.baseImages` (facts the message had no
  room for are read from the build log); a new digest under a tag rebuilds (`BaseImageChanged`) only the
  ServiceBuilds following their base images;
- builds started by a source are released in waves, a person's never;
- history: a superseded build, then the finished ones, newest first, within the limit, the status under
  32 KiB at the largest limit; finished Jobs beyond the Job history limits are deleted.
"""

import json

from test_reconciler import BUILD_FAILURE_LOG, DIGEST, IMAGE, NAMESPACE, SPEC, World, _report

from servicebuild.api.models import MAX_HISTORY, status_to_dict
from servicebuild.config import Settings
from servicebuild.naming import ANNOTATION_REQUESTED_AT, ANNOTATION_SOURCE_PUSHED_AT

NEWER = "2" * 40
GIT_SPEC = {
    "source": {
        "git": {"url": "https://git.example.com/shop/mono.git", "revision": "main", "pollInterval": "1m"}
    },
    "output": {"image": IMAGE, "tags": ["{shortCommit}", "build-{build}"]},
}
BASE = "127.0.0.1:5000/library/busybox:1.37"
OLD_BASE, NEW_BASE = "sha256:" + "c" * 64, "sha256:" + "d" * 64


def with_facts(*facts: str) -> str:
    return "\n".join([_report(), *facts]) + "\n"


def test_a_new_commit_is_the_next_build_and_never_interrupts_one() -> None:
    world = World(spec=GIT_SPEC)
    world.reconcile(0)
    first_job = world.job_name
    world.start(1)
    world.git.commit = NEWER
    for seconds in (70, 140, 210):  # three polls, each a new interval: the build keeps running
        assert world.reconcile(seconds).phase == "Building"
    assert [job["metadata"]["name"] for job in world.kube.created] == [first_job]
    assert world.kube.deleted == []

    built = world.build(300)
    assert (built.build, built.phase) == (1, "Succeeded")
    following = world.reconcile(301)
    assert (following.build, following.trigger) == (2, "NewCommit")
    assert len(world.kube.created) == 2, "three commits during one build, one next build"
    job = world.kube.created[-1]
    assert job["metadata"]["annotations"]["servicebuild.dev/commit"] == NEWER
    assert any(
        NEWER[:12] in arg and "build-2" in arg
        for arg in job["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_the_branch_is_looked_up_once_per_interval_or_when_a_push_is_announced() -> None:
    world = World(spec=GIT_SPEC)
    world.reconcile(0)
    world.build(1)
    lookups = world.git.lookups
    world.reconcile(20)
    world.reconcile(40)
    assert world.git.lookups == lookups, "within the interval, the last lookup stands"
    result = world.reconcile_result(41)
    assert result.recheck_at is not None, "the next poll is scheduled"

    world.annotations[ANNOTATION_SOURCE_PUSHED_AT] = "2026-11-28T10:00:45Z"
    world.git.commit = NEWER
    pushed = world.reconcile(46)
    assert world.git.lookups == lookups + 1
    assert (pushed.build, pushed.trigger) == (2, "NewCommit")


def test_a_failure_is_not_rebuilt_for_the_same_commit_but_is_on_request() -> None:
    world = World(spec=GIT_SPEC)
    world.reconcile(0)
    world.start(1)
    world.end(10, {"exitCode": 1, "reason": "Error", "message": BUILD_FAILURE_LOG})
    assert world.reconcile(11).phase == "Failed"
    for seconds in (100, 200):
        world.reconcile(seconds)
    assert len(world.kube.created) == 1, "polling does not retry a failed commit"

    world.annotations[ANNOTATION_REQUESTED_AT] = "please"
    requested = world.reconcile(201)
    assert (requested.build, requested.trigger, requested.last_handled_request) == (2, "Requested", "please")
    assert len(world.kube.created) == 2
    world.build(210)
    world.reconcile(300)
    assert len(world.kube.created) == 2, "one build per request value"


def test_base_images_are_recorded_and_a_new_digest_rebuilds_who_follows_them() -> None:
    following = World(spec={**SPEC, "triggers": {"baseImages": True}})
    not_following = World()
    fact = f"base [runtime 1/2] FROM {BASE}@{OLD_BASE}"
    built = []
    for world in (following, not_following):
        world.reconcile(0)
        built.append(world.build(1, with_facts(fact)))
    assert [(image.ref, image.digest) for image in built[0].base_images or ()] == [(BASE, OLD_BASE)]

    for world in (following, not_following):
        world.registry.tags[BASE] = NEW_BASE
    assert following.reconciler.base_image_changes([following.servicebuild()]) == [("shop", "checkout")]
    assert not_following.reconciler.base_image_changes([not_following.servicebuild()]) == []
    rebuilt = following.reconcile(60)
    assert (rebuilt.build, rebuilt.trigger) == (2, "BaseImageChanged")
    assert not_following.reconcile(60).build == 1


def test_facts_without_room_in_the_message_are_read_from_the_build_log() -> None:
    world = World()
    world.reconcile(0)
    facts = [f"base [stage-{index} 1/2] FROM {BASE}{index}@{OLD_BASE}" for index in range(3)]
    world.start(1)
    message = with_facts(facts[0], "truncated base=2 miss=0 warn=0")
    world.end(5, {"exitCode": 0, "reason": "Completed", "message": message})
    world.kube.logs[(NAMESPACE, f"{world.job_name}-pod")] = "\n".join(
        ["#9 DONE 0.1s", f"servicebuild-facts 3 {sum(len(fact) + 1 for fact in facts)}", *facts]
    )
    status = world.reconcile(6)
    assert [image.ref for image in status.base_images or ()] == [f"{BASE}{index}" for index in range(3)]


def test_builds_started_by_a_source_wait_for_their_wave() -> None:
    world = World(Settings(max_triggered_builds_per_minute=1), spec=GIT_SPEC)
    world.reconcile(0)
    world.build(1)
    world.git.commit = "3" * 40
    assert world.reconcile(70).trigger == "NewCommit"
    world.build(71)
    world.git.commit = "4" * 40
    world.annotations[ANNOTATION_SOURCE_PUSHED_AT] = "2026-11-28T10:01:30Z"
    held = world.reconcile_result(100)
    assert (held.status.phase, held.status.build) == ("Queued", 3)
    assert "SERVICEBUILD_MAX_TRIGGERED_BUILDS_PER_MINUTE" in (held.status.message or "")
    assert held.recheck_at is not None
    assert len(world.kube.created) == 2
    released = world.reconcile(131)
    assert (released.phase, released.build, released.trigger) == ("Pending", 3, "NewCommit")
    assert len(world.kube.created) == 3


def test_builds_a_person_asked_for_are_never_held_by_the_waves() -> None:
    world = World(Settings(max_triggered_builds_per_minute=1), spec=GIT_SPEC)
    world.reconcile(0)
    world.build(1)
    world.git.commit = "3" * 40
    assert world.reconcile(70).trigger == "NewCommit"
    world.build(71)
    world.annotations[ANNOTATION_REQUESTED_AT] = "now"
    asked = world.reconcile(80)
    assert (asked.phase, asked.trigger) == ("Pending", "Requested")
    assert len(world.kube.created) == 3


def test_history_records_superseded_and_finished_builds_within_the_limit() -> None:
    world = World(spec={**SPEC, "historyLimit": 2})
    world.reconcile(0)
    world.start(1)
    world.change_spec(buildArgs={"V": "2"})
    world.reconcile(5)
    status = world.build(6)
    world.change_spec(buildArgs={"V": "3"})
    world.reconcile(20)
    status = world.build(21)
    assert [(record.build, record.result) for record in status.history or ()] == [
        (3, "Succeeded"),
        (2, "Succeeded"),
    ]
    assert status.history is not None
    assert status.history[0].digest == DIGEST
    assert status.history[0].trigger == "SpecChanged"


def test_the_first_superseded_build_is_in_the_history() -> None:
    world = World()
    world.reconcile(0)
    world.start(1)
    world.change_spec(buildArgs={"V": "2"})
    status = world.reconcile(5)
    assert [(record.build, record.result) for record in status.history or ()] == [(1, "Superseded")]


def test_finished_jobs_beyond_the_history_limits_are_deleted() -> None:
    world = World(Settings(successful_jobs_history_limit=1, failed_jobs_history_limit=1))
    world.reconcile(0)
    world.build(1)
    for version in ("2", "3"):
        world.change_spec(buildArgs={"V": version})
        world.reconcile(10 * int(version))
        world.build(10 * int(version) + 1)
    kept = [name for (_, name) in world.kube.jobs]
    assert len(kept) == 1
    assert kept == [world.job_name]


def test_the_status_stays_under_32_kib_with_the_longest_history() -> None:
    world = World(spec={**SPEC, "historyLimit": MAX_HISTORY})
    world.reconcile(0)
    for build in range(MAX_HISTORY + 5):
        world.start(100 * build + 1)
        world.end(100 * build + 5, {"exitCode": 1, "reason": "Error", "message": BUILD_FAILURE_LOG * 20})
        world.reconcile(100 * build + 6)
        world.annotations[ANNOTATION_REQUESTED_AT] = f"again-{build}"
        world.reconcile(100 * build + 7)
    status = world.reconcile(100 * (MAX_HISTORY + 5))
    assert len(status.history or ()) == MAX_HISTORY
    assert len(json.dumps(status_to_dict(status))) < 32 * 1024
