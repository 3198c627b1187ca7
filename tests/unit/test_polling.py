"""We test these aspects of following sources, with injected clocks:

- a polled revision is looked up once per interval however many ServiceBuilds ask, each in its own
  thread; a push announced after the last lookup makes it stale; other namespaces or other credentials
  never share a lookup;
- the lookups to one git host keep their pace (per second), other hosts are not held up;
- the next poll is the interval after the lookup, give or take a tenth, the same for the same key;
- triggered builds start in waves of at most N a minute, and the next wave's time is told;
- which poll intervals a spec may ask for (`policy.poll_interval`, `policy.poll_problem`).
"""

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from servicebuild import policy
from servicebuild.admission import Waves
from servicebuild.api.models import ServiceBuildSpec
from servicebuild.config import Settings
from servicebuild.credentials import GitCredentials
from servicebuild.polling import CommitCache, HostPace, LookupKey, credentials_fingerprint, next_poll

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
KEY = LookupKey("shop", "https://git.example.com/shop/mono.git", "main", "")


class Remote:
    """Counts lookups; each answers the next commit."""

    def __init__(self) -> None:
        self.lookups = 0
        self._lock = threading.Lock()

    def resolve(self, credentials: GitCredentials | None) -> str:  # noqa: ARG002 - the cache passes them
        with self._lock:
            self.lookups += 1
            return f"{self.lookups:040d}"


def test_one_lookup_per_interval_for_every_servicebuild_asking() -> None:
    cache, remote = CommitCache(), Remote()
    commits: list[str] = []

    def ask() -> None:
        commits.append(cache.latest(KEY, remote.resolve, None, fresh_after=NOW - MINUTE, now=NOW).commit)

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert remote.lookups == 1
    assert set(commits) == {f"{1:040d}"}

    later = NOW + 2 * MINUTE
    assert (
        cache.latest(KEY, remote.resolve, None, fresh_after=later - MINUTE, now=later).commit == f"{2:040d}"
    )


def test_a_push_after_the_last_lookup_makes_it_stale() -> None:
    cache, remote = CommitCache(), Remote()
    cache.latest(KEY, remote.resolve, None, fresh_after=NOW - MINUTE, now=NOW)
    pushed = NOW + timedelta(seconds=5)
    looked = cache.latest(KEY, remote.resolve, None, fresh_after=pushed, now=NOW + timedelta(seconds=6))
    assert (remote.lookups, looked.commit) == (2, f"{2:040d}")


@pytest.mark.parametrize(
    "other",
    [
        LookupKey("payments", KEY.url, KEY.revision, KEY.credentials),
        LookupKey(KEY.namespace, KEY.url, KEY.revision, credentials_fingerprint("git-ci", {"token": "eA=="})),
        LookupKey(KEY.namespace, KEY.url, "release", KEY.credentials),
    ],
    ids=["another namespace", "other credentials", "another revision"],
)
def test_lookups_are_never_shared_across_namespaces_or_credentials(other: LookupKey) -> None:
    cache, remote = CommitCache(), Remote()
    cache.latest(KEY, remote.resolve, None, fresh_after=NOW - MINUTE, now=NOW)
    cache.latest(other, remote.resolve, None, fresh_after=NOW - MINUTE, now=NOW)
    assert remote.lookups == 2


def test_the_fingerprint_changes_with_the_secret_and_holds_no_value() -> None:
    first = credentials_fingerprint("git-ci", {"token": "c2VjcmV0"})
    assert first != credentials_fingerprint("git-ci", {"token": "b3RoZXI="})
    assert first != credentials_fingerprint("git-other", {"token": "c2VjcmV0"})
    assert "c2VjcmV0" not in first
    assert credentials_fingerprint(None, None) == ""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_lookups_to_one_host_keep_their_pace() -> None:
    clock = Clock()
    pace = HostPace(2.0, clock=lambda: clock.now, sleep=clock.sleep)
    for _ in range(3):
        pace.wait("git.example.com")
    pace.wait("gitlab.example.com")
    assert clock.slept == [0.5, 0.5]


def test_the_next_poll_is_jittered_but_stable() -> None:
    interval = timedelta(minutes=10)
    polls = {next_poll(NOW, interval, f"shop/service-{index}") for index in range(50)}
    assert all(NOW + 0.9 * interval <= at <= NOW + 1.1 * interval for at in polls)
    assert len(polls) > 40, "spread over the window"
    assert next_poll(NOW, interval, "shop/a") == next_poll(NOW, interval, "shop/a")


def test_triggered_builds_start_in_waves() -> None:
    waves = Waves(per_minute=2)
    assert waves.admit(NOW) is None
    assert waves.admit(NOW + timedelta(seconds=10)) is None
    assert waves.admit(NOW + timedelta(seconds=20)) == NOW + MINUTE
    assert waves.admit(NOW + MINUTE) is None
    assert waves.admit(NOW + MINUTE + timedelta(seconds=1)) == NOW + timedelta(seconds=70)
    assert all(Waves(per_minute=0).admit(NOW) is None for _ in range(100))


def spec(**git: Any) -> ServiceBuildSpec:
    return ServiceBuildSpec.model_validate(
        {"source": {"git": {"url": "https://g.io/a.git", **git}}, "output": {"image": "r.io/a:1"}}
    )


@pytest.mark.parametrize(
    ("git", "interval"),
    [
        ({}, None),
        ({"pollInterval": "0s"}, None),
        ({"pollInterval": "5m"}, timedelta(minutes=5)),
        ({"pollInterval": "5m", "revision": "v1.4.2"}, timedelta(minutes=5)),
        ({"pollInterval": "5m", "revision": "a" * 40}, None),
    ],
    ids=["absent", "0s", "branch", "tag", "full commit"],
)
def test_which_revisions_are_polled(git: dict[str, str], interval: timedelta | None) -> None:
    assert policy.poll_interval(spec(**git)) == interval


@pytest.mark.parametrize(
    ("git", "problem"),
    [
        ({"pollInterval": "1m"}, None),
        (
            {"pollInterval": "30s"},
            "spec.source.git.pollInterval: 30s is shorter than the operator allows (60s",
        ),
        ({"pollInterval": "5m", "url": "git@g.io:shop/a.git"}, "spec.source.git.pollInterval: an SSH remote"),
        (
            {"pollInterval": "5m", "url": "ssh://git@g.io/shop/a.git"},
            "spec.source.git.pollInterval: an SSH remote",
        ),
    ],
    ids=["at the minimum", "below the minimum", "scp-style", "ssh"],
)
def test_poll_intervals_a_spec_may_not_ask_for(git: dict[str, str], problem: str | None) -> None:
    failure = policy.poll_problem(spec(**git), Settings())
    if problem is None:
        assert failure is None
    else:
        assert failure is not None
        assert failure.reason == "InvalidSpec"
        assert failure.message.startswith(problem)
