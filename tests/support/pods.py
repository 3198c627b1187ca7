"""Build Pod bodies as the API server returns them, reduced to what `observe` and `failures` read."""

from typing import Any


def pod_body(
    phase: str, state: dict[str, Any], *, container: str = "buildkit", init: bool = False
) -> dict[str, Any]:
    """A Pod in `phase` whose one container (or init container) is in `state`."""
    key = "initContainerStatuses" if init else "containerStatuses"
    return {"status": {"phase": phase, key: [{"name": container, "state": state}]}}


def waiting_pod(container: str, reason: str, message: str, *, init: bool = False) -> dict[str, Any]:
    """A Pending Pod whose container waits for `reason`, e.g. ImagePullBackOff."""
    waiting = {"waiting": {"reason": reason, "message": message}}
    return pod_body("Pending", waiting, container=container, init=init)


def unschedulable_pod(message: str) -> dict[str, Any]:
    """A Pending Pod the scheduler cannot place: PodScheduled False, reason Unschedulable."""
    return {
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
            ],
        }
    }
