"""We test these aspects of the real `Reconciler` checking a git source's context, with in-memory gateways
(the git gateway's fake gives a commit's files, or None as a server without a blob-less fetch):

- with `checks.policy: Fail` a `.env` copied into the image stalls as DockerfileCheckFailed before any Job,
  the finding at its stage and line, the checked commit in the status;
- a build held back (a wave of triggered builds) reads its commit's context once however often it is
  reconciled, and its Job builds the commit that was checked;
- a context not checked gives no findings of the operator's and the build goes on;
- a rebuild whose first miss is a `COPY` names the file changed between the last success's commit and
  this one, compared by blob id.
"""

import json

from test_reconciler import DIGEST, IMAGE, World, _condition

from servicebuild.config import Settings
from servicebuild.naming import ANNOTATION_SOURCE_PUSHED_AT

FIRST, SECOND, THIRD = "1" * 40, "2" * 40, "3" * 40
GIT_SPEC = {
    "source": {
        "git": {"url": "https://git.example.com/shop/mono.git", "revision": "main", "pollInterval": "1m"}
    },
    "output": {"image": IMAGE},
}
LEAKY = {
    "Dockerfile": b"FROM golang:1.22 AS build\nCOPY main.go .\nRUN go build -o /app .\n"
    b"FROM scratch\nCOPY --from=build /app /app\nCOPY .env /etc/app/.env\nUSER 1000\n",
    "main.go": b"package main",
    ".env": b"API_TOKEN=x",
}
CLEAN = {
    "Dockerfile": b"FROM gcc:14 AS build\nCOPY main.c .\nRUN cc -o /greet main.c\n"
    b"FROM gcr.io/distroless/static:nonroot\nCOPY --from=build /greet /greet\n",
    "main.c": b"int main(){}",
    "README.md": b"greet",
}


def test_policy_fail_stops_a_secret_in_a_git_context_before_any_job() -> None:
    world = World(spec={**GIT_SPEC, "checks": {"policy": "Fail"}})
    world.git.commit = FIRST
    world.git.contexts[FIRST] = LEAKY

    status = world.reconcile(0)

    assert _condition(status, "Stalled") == ("True", "DockerfileCheckFailed")
    assert "SecretInImage" in (status.message or "")
    assert "Dockerfile line 6" in (status.message or "")
    assert [(f.rule, f.stage, f.line) for f in status.findings or ()] == [("SecretInImage", "stage-1", 6)]
    assert status.source is not None
    assert status.source.commit == FIRST
    assert world.kube.created == []


def test_a_held_build_reads_its_context_once_and_builds_the_commit_checked() -> None:
    world = World(Settings(max_triggered_builds_per_minute=1), spec=GIT_SPEC)
    world.git.commit = FIRST
    world.git.contexts = {FIRST: CLEAN, SECOND: CLEAN, THIRD: CLEAN}
    world.reconcile(0)
    world.build(1)
    world.git.commit = SECOND
    assert world.reconcile(70).trigger == "NewCommit"
    world.build(71)
    world.git.commit = THIRD
    world.annotations[ANNOTATION_SOURCE_PUSHED_AT] = "2026-11-28T10:01:30Z"

    for seconds in (100, 110, 120):
        held = world.reconcile(seconds)
        assert (held.phase, held.build) == ("Queued", 3)
    released = world.reconcile(131)

    assert (released.phase, released.build) == ("Pending", 3)
    assert world.git.context_reads.count(THIRD) == 1
    assert world.kube.created[-1]["metadata"]["annotations"]["servicebuild.dev/commit"] == THIRD
    assert _condition(released, "DockerfileClean") == ("True", "NoFindings")


def test_a_context_not_checked_gives_no_findings_and_the_build_goes_on() -> None:
    world = World(spec={**GIT_SPEC, "checks": {"policy": "Fail"}})
    world.git.commit = FIRST

    status = world.reconcile(0)

    assert world.git.context_reads == [FIRST]
    assert status.phase == "Pending"
    assert not status.findings
    assert len(world.kube.created) == 1


def test_a_rebuild_names_the_file_changed_between_the_commits_under_the_missed_copy() -> None:
    world = World(spec=GIT_SPEC)
    world.git.commit = FIRST
    world.git.contexts[FIRST] = CLEAN
    world.reconcile(0)
    world.build(1)
    world.git.commit = SECOND
    world.git.contexts[SECOND] = {**CLEAN, "main.c": b"int main(){return 1;}", "README.md": b"greet!"}
    assert world.reconcile(70).trigger == "NewCommit"

    metrics = {"user_total": 3, "user_cached": 1}
    report = json.dumps(
        {"digest": DIGEST, "imageName": IMAGE, "cacheMetrics": metrics, "cacheExported": True}
    )
    status = world.build(71, message=f"{report}\nmiss [build 2/3] COPY main.c .\n")

    assert status.cache is not None
    assert status.cache.first_miss is not None
    assert status.cache.first_miss.step == "[build 2/3] COPY main.c ."
    assert status.cache.first_miss.changed_files == ["main.c"]
