"""We test the leader election's decisions (servicebuild.election) and its rounds (servicebuild.leadership),
with an injected clock and a Lease store that refuses stale versions as the API server does:

- a missing Lease is created and its creator leads, for the renew deadline after its write was sent;
- another replica's Lease is waited out for its duration, counted from the last change this replica saw;
  every renewal it sees starts the wait again, whatever time the record claims;
- a released Lease (no holder) is taken at once, one transition more; a renewal keeps the acquire time;
- seeing another holder ends leading at once; a refused write too;
- of two replicas, the standby takes over only after the leader's renewals stopped for the duration, and
  by then the old leader has stopped leading (its renew deadline is shorter).
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime

from servicebuild.election import Election, LeaseRecord, StoredLease, microtime, parse_lease
from servicebuild.leadership import Leadership

WALL = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def other(renewed: str = "2026-11-30T09:59:00.000000Z", holder: str = "replica-b") -> LeaseRecord:
    return LeaseRecord(holder, 15, "2026-11-30T09:00:00.000000Z", renewed, 2)


def test_a_missing_lease_is_claimed_and_its_writer_leads_until_the_renew_deadline() -> None:
    election = Election("replica-a", duration=15, renew_deadline=10)
    election.observe(None, now=100)

    claim = election.claim(now=100, wall=WALL)

    assert claim == LeaseRecord("replica-a", 15, microtime(WALL), microtime(WALL), 0)
    assert not election.leading(100), "not before the write is stored"
    election.written(claim, started=100, now=100.3)
    assert election.leading(109.9)
    assert not election.leading(110), "the deadline counts from when the write was sent"


def test_another_replicas_lease_is_waited_out_from_the_last_change_seen() -> None:
    election = Election("replica-a", duration=15, renew_deadline=10)
    election.observe(other(), now=100)
    assert election.claim(now=114.9, wall=WALL) is None

    election.observe(
        other(renewed="2026-11-30T09:00:00.000000Z"), now=110
    )  # renewed, with a clock behind ours
    assert election.claim(now=124.9, wall=WALL) is None, "a renewal restarts the wait, whatever it says"
    election.observe(other(renewed="2026-11-30T09:00:00.000000Z"), now=125)
    claim = election.claim(now=125, wall=WALL)

    assert claim is not None
    assert (claim.holder, claim.transitions, claim.acquired) == ("replica-a", 3, microtime(WALL))


def test_a_released_lease_is_taken_at_once() -> None:
    election = Election("replica-a", duration=15, renew_deadline=10)
    election.observe(other(holder=""), now=100)

    claim = election.claim(now=100, wall=WALL)

    assert claim is not None
    assert (claim.holder, claim.transitions) == ("replica-a", 3)


def test_a_renewal_keeps_the_acquire_time_and_the_transitions() -> None:
    election = Election("replica-a", duration=15, renew_deadline=10)
    election.observe(other(holder=""), now=100)
    first = election.claim(now=100, wall=WALL)
    assert first is not None
    election.written(first, started=100, now=100)
    election.observe(first, now=102)

    later = datetime(2026, 11, 30, 10, 0, 2, tzinfo=UTC)
    renewal = election.claim(now=102, wall=later)

    assert renewal == LeaseRecord("replica-a", 15, first.acquired, microtime(later), first.transitions)


def test_another_holder_or_a_refused_write_ends_leading_at_once() -> None:
    election = Election("replica-a", duration=15, renew_deadline=10)
    election.observe(None, now=100)
    claim = election.claim(now=100, wall=WALL)
    assert claim is not None
    election.written(claim, started=100, now=100)

    election.observe(other(), now=101)
    assert not election.leading(101)

    election.written(claim, started=102, now=102)
    election.lost()
    assert not election.leading(102)


def test_only_the_holder_releases() -> None:
    election = Election("replica-a", duration=15, renew_deadline=10)
    election.observe(other(), now=100)
    assert election.release(WALL) is None
    mine = other(holder="replica-a")
    election.observe(mine, now=101)

    released = election.release(WALL)

    assert released is not None
    assert (released.holder, released.acquired, released.transitions) == ("", mine.acquired, 2)


def test_a_lease_object_reads_back_as_its_record() -> None:
    record = other()
    body = {"metadata": {"resourceVersion": "42"}, "spec": record.spec()}

    assert parse_lease(body) == StoredLease(record, "42")
    assert parse_lease({}).record == LeaseRecord("", 0, "", "", 0)


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class LeaseStore:
    """One Lease with the API server's optimistic concurrency: a write naming an old version is refused."""

    stored: StoredLease | None = None
    versions: int = 0
    reachable: set[str] = field(default_factory=lambda: {"replica-a", "replica-b"})

    def read_lease(self, namespace: str, name: str) -> StoredLease | None:  # noqa: ARG002
        return self.stored

    def write_lease(
        self,
        namespace: str,  # noqa: ARG002
        name: str,  # noqa: ARG002
        record: LeaseRecord,
        resource_version: str | None,
    ) -> bool:
        current = None if self.stored is None else self.stored.resource_version
        if resource_version != current or (record.holder and record.holder not in self.reachable):
            return False
        self.versions += 1
        self.stored = StoredLease(record, str(self.versions))
        return True


def replica(identity: str, store: LeaseStore, clock: Clock) -> Leadership:
    return Leadership(
        store,
        namespace="servicebuild-system",
        name="servicebuild-operator",
        election=Election(identity, duration=15, renew_deadline=10),
        retry_period=2,
        clock=clock,
    )


def test_the_standby_takes_over_only_after_the_leader_stopped_leading() -> None:
    store, clock = LeaseStore(), Clock()
    leader, standby = replica("replica-a", store, clock), replica("replica-b", store, clock)
    assert leader.try_acquire_or_renew()
    assert not standby.try_acquire_or_renew()
    for _ in range(10):  # renewals every 2 s: the standby keeps waiting
        clock.now += 2
        assert leader.try_acquire_or_renew()
        assert not standby.try_acquire_or_renew()
    last_renewal = clock.now

    store.reachable = {"replica-b"}  # the leader's writes fail from now on
    taken_at = None
    while taken_at is None:
        clock.now += 0.5
        leader.try_acquire_or_renew()
        if standby.try_acquire_or_renew():
            taken_at = clock.now
        assert not (leader.may_act() and standby.may_act()), f"two leaders at {clock.now}"

    assert taken_at >= last_renewal + 15
    assert not leader.may_act()
    assert store.stored is not None
    assert (store.stored.record.holder, store.stored.record.transitions) == ("replica-b", 1)


def test_a_released_lease_lets_the_standby_lead_in_its_next_round() -> None:
    store, clock = LeaseStore(), Clock()
    leader, standby = replica("replica-a", store, clock), replica("replica-b", store, clock)
    assert leader.try_acquire_or_renew()
    assert not standby.try_acquire_or_renew()

    leader.release()

    assert not leader.may_act()
    assert standby.try_acquire_or_renew()
