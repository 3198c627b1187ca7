"""Leader election on a `coordination.k8s.io` Lease, decided as client-go's leaderelection decides it.

Pure: the caller reads and writes the Lease and passes two clocks in: `now` (monotonic seconds, for every
decision) and `wall` (only written into the Lease for people to read). Whether a lease has expired is
judged by how long *this* process has seen its record unchanged, never by the times written in it, so
clocks that differ between nodes do not matter; only their rates do.

The leader counts itself leading for `renew_deadline` seconds from the start of its last successful
renewal. A standby takes over only after it has seen the record unchanged for `duration` seconds, and
the renewal it saw was written after that start: as `renew_deadline < duration`, the leader has stopped
acting before anyone else may begin.
"""

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

_MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True)
class LeaseRecord:
    """A Lease's spec: who holds it, for how long, since when."""

    holder: str
    duration_seconds: int
    acquired: str
    renewed: str
    transitions: int

    def spec(self) -> dict[str, Any]:
        """The record as a Lease's `spec`."""
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration_seconds,
            "acquireTime": self.acquired,
            "renewTime": self.renewed,
            "leaseTransitions": self.transitions,
        }


@dataclass(frozen=True)
class StoredLease:
    """A Lease as read from the API: its record and the resourceVersion a write must name."""

    record: LeaseRecord
    resource_version: str


def parse_lease(body: dict[str, Any]) -> StoredLease:
    """A Lease object as the API returns it; missing fields read as an unheld lease."""
    spec = body.get("spec") or {}
    record = LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
        acquired=str(spec.get("acquireTime") or ""),
        renewed=str(spec.get("renewTime") or ""),
        transitions=int(spec.get("leaseTransitions") or 0),
    )
    return StoredLease(record, str((body.get("metadata") or {}).get("resourceVersion") or ""))


def microtime(moment: datetime) -> str:
    """A Kubernetes MicroTime."""
    return moment.astimezone(UTC).strftime(_MICROTIME)


@dataclass
class Election:
    """One replica's view of the election; the caller performs the reads and writes it asks for."""

    identity: str
    duration: float
    renew_deadline: float
    observed: LeaseRecord | None = None
    observed_at: float = 0.0
    renewed_at: float | None = None

    def observe(self, lease: LeaseRecord | None, now: float) -> None:
        """Take in the record just read. A record held by another replica ends this one's leadership."""
        if lease != self.observed:
            self.observed, self.observed_at = lease, now
        if lease is not None and lease.holder != self.identity:
            self.renewed_at = None

    def claim(self, now: float, wall: datetime) -> LeaseRecord | None:
        """The record to write to lead (or go on leading); None while another replica's lease is valid."""
        current = self.observed
        if current is None:
            return LeaseRecord(self.identity, int(self.duration), microtime(wall), microtime(wall), 0)
        held_by_other = current.holder not in ("", self.identity)
        if held_by_other and now < self.observed_at + max(current.duration_seconds, self.duration):
            return None
        if current.holder == self.identity and self.renewed_at is not None:
            return replace(current, duration_seconds=int(self.duration), renewed=microtime(wall))
        return LeaseRecord(
            self.identity, int(self.duration), microtime(wall), microtime(wall), current.transitions + 1
        )

    def written(self, lease: LeaseRecord, started: float, now: float) -> None:
        """The record this replica wrote was stored; `started`: when the write was sent."""
        self.observed, self.observed_at = lease, now
        self.renewed_at = started

    def lost(self) -> None:
        """A write was refused (another replica wrote first): lead no more until a claim succeeds."""
        self.renewed_at = None

    def leading(self, now: float) -> bool:
        """Whether this replica may act now: it renewed within the renew deadline."""
        return self.renewed_at is not None and now - self.renewed_at < self.renew_deadline

    def release(self, wall: datetime) -> LeaseRecord | None:
        """The record that hands the lease over at once (holder empty), if this replica holds it."""
        if self.observed is None or self.observed.holder != self.identity:
            return None
        return replace(self.observed, holder="", duration_seconds=1, renewed=microtime(wall))
