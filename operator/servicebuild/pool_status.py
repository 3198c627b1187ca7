"""A BuilderPool's whole status from what was observed of its daemon; pure (the clock is passed in)."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from servicebuild.api.pool import BuilderPoolStatus
from servicebuild.status import ConditionValue, _Stamp

AVAILABLE = "DaemonAvailable"
STARTING = "DaemonStarting"
IDLE = "Idle"
"""The daemon is scaled to zero after `idleTimeout` without builds; the next build starts it."""
INVALID_SPEC = "InvalidSpec"


@dataclass(frozen=True)
class Daemon:
    """What the pool's workload (Deployment or StatefulSet) says of its daemon."""

    available: bool
    message: str
    idle: bool = False
    endpoint: str | None = None
    builds_running: int | None = None


def daemon_replicas(idle_timeout_seconds: int, running: int, last_activity: datetime, now: datetime) -> int:
    """One daemon while builds run or have run (or been asked for) within `idleTimeout`; none after that.
    An `idleTimeout` of 0 keeps it always on."""
    if idle_timeout_seconds == 0 or running > 0:
        return 1
    return 1 if (now - last_activity).total_seconds() < idle_timeout_seconds else 0


def observe_daemon(workload: dict[str, Any] | None, replicas: int = 1) -> Daemon:
    """Available once its controller has seen the current spec and one replica of it is available; idle
    when it is to run none."""
    if replicas == 0:
        return Daemon(
            available=False,
            message="Scaled to zero after idleTimeout without builds; the next build starts it.",
            idle=True,
        )
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
    reason = AVAILABLE if daemon.available else IDLE if daemon.idle else STARTING
    ready: ConditionValue = ("True" if daemon.available else "False", reason, daemon.message)
    settled = daemon.available or daemon.idle
    conditions = stamp.standard(
        ready=ready,
        reconciling=("False" if settled else "True", reason, daemon.message),
        stalled=("False", reason, daemon.message),
    )
    return BuilderPoolStatus(
        observed_generation=generation,
        conditions=conditions,
        endpoint=daemon.endpoint,
        builds_running=daemon.builds_running,
    )
