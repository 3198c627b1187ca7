"""A BuilderPool's whole status from what was observed of its daemon; pure (the clock is passed in)."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from servicebuild.api.pool import BuilderPoolStatus
from servicebuild.status import ConditionValue, _Stamp

AVAILABLE = "DaemonAvailable"
STARTING = "DaemonStarting"
INVALID_SPEC = "InvalidSpec"


@dataclass(frozen=True)
class Daemon:
    """What the pool's workload (Deployment or StatefulSet) says of its daemon."""

    available: bool
    message: str


def observe_daemon(workload: dict[str, Any] | None) -> Daemon:
    """Available once its controller has seen the current spec and one replica of it is available."""
    if workload is None:
        return Daemon(available=False, message="The daemon's workload is being created.")
    generation = int((workload.get("metadata") or {}).get("generation") or 0)
    status = workload.get("status") or {}
    seen = int(status.get("observedGeneration") or 0) >= generation
    updated = int(status.get("updatedReplicas", status.get("currentReplicas")) or 0)
    available = int(status.get("availableReplicas") or 0)
    if seen and updated >= 1 and available >= 1:
        return Daemon(available=True, message="The BuildKit daemon is available.")
    return Daemon(available=False, message="Waiting for the BuildKit daemon to become available.")


def decide(
    previous: BuilderPoolStatus,
    generation: int,
    now: datetime,
    observed: Daemon | str,
    endpoint: str | None = None,
) -> BuilderPoolStatus:
    """Ready as the daemon is; Stalled when `observed` is the problem that keeps the operator from running
    one (an invalid spec, a builder image not allowed). `lastTransitionTime` moves only on a flip."""
    stamp = _Stamp(previous, generation, now)
    if isinstance(observed, str):
        message = observed
        conditions = stamp.standard(
            ready=("False", INVALID_SPEC, message),
            reconciling=("False", INVALID_SPEC, message),
            stalled=("True", INVALID_SPEC, message),
        )
        return BuilderPoolStatus(observed_generation=generation, conditions=conditions)
    daemon = observed
    reason = AVAILABLE if daemon.available else STARTING
    ready: ConditionValue = ("True" if daemon.available else "False", reason, daemon.message)
    conditions = stamp.standard(
        ready=ready,
        reconciling=("False" if daemon.available else "True", reason, daemon.message),
        stalled=("False", reason, daemon.message),
    )
    return BuilderPoolStatus(observed_generation=generation, conditions=conditions, endpoint=endpoint)
