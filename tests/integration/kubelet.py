"""Plays the kubelet and BuildKit for build Jobs: pushes a real image, then completes Pod and Job.

What it writes is what the real parts write: the Pod's termination message in the wrapper's
report format (or a BuildKit log tail on failure), and the Job conditions of the Job controller.
"""

import asyncio
import base64
import json
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from cluster import JOBS, PODS, SECRETS, Cluster

from servicebuild.imageref import parse_image
from servicebuild.naming import ANNOTATION_SERVICEBUILD
from servicebuild.registry import credentials_from_docker_config
from support.oci_registry import PushedImage, push_image

Behaviour = Literal["succeed", "fail", "hold"]

BUILDKIT_FAILURE_LOG = """\
#9 [build 3/4] RUN make greet
#9 0.412 cc -O2 -o greet main.c greet.c
#9 0.431 main.c:3:10: fatal error: greet.h: No such file or directory
#9 ERROR: process "/bin/sh -c make greet" did not complete successfully: exit code: 2
------
 > [build 3/4] RUN make greet:
0.431 main.c:3:10: fatal error: greet.h: No such file or directory
------
Dockerfile:7
--------------------
   5 |     COPY main.c greet.c Makefile ./
   6 |     RUN make greet
--------------------
ERROR: failed to solve: process "/bin/sh -c make greet" did not complete successfully: exit code: 2
"""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _output_image(job: dict[str, Any]) -> str:
    """The image name BuildKit would push: read from the Job's `--output` argument."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    for argument in container.get("args", []):
        if argument.startswith("type=image,"):
            options = dict(part.partition("=")[::2] for part in argument.split(","))
            return options["name"]
    raise AssertionError(f"no --output type=image in {container.get('args')}")


@dataclass
class Kubelet:
    cluster: Cluster
    behaviours: dict[str, deque[Behaviour]] = field(default_factory=lambda: defaultdict(deque))
    """Per ServiceBuild name, what its next Jobs do; "succeed" when nothing is queued."""
    pushed: dict[str, PushedImage] = field(default_factory=dict)
    """Per Job name, the image pushed for it."""
    held: dict[str, dict[str, Any]] = field(default_factory=dict)
    handled: set[tuple[str, str]] = field(default_factory=set)
    mirrors: dict[str, str] = field(default_factory=dict)
    """Registry host → host BuildKit really pushes to (as a registry mirror would route it)."""

    def plan(self, servicebuild: str, *behaviours: Behaviour) -> None:
        self.behaviours[servicebuild].extend(behaviours)

    async def run(self) -> None:
        while True:
            for job in self.cluster.all(JOBS):
                key = (job["metadata"]["namespace"], job["metadata"]["name"])
                if key not in self.handled:
                    self.handled.add(key)
                    await self._start(job)
            await asyncio.sleep(0.05)

    async def _start(self, job: dict[str, Any]) -> None:
        owner = job["metadata"]["annotations"][ANNOTATION_SERVICEBUILD]
        queue = self.behaviours[owner]
        behaviour = queue.popleft() if queue else "succeed"
        await self._set_running(job)
        if behaviour == "hold":
            self.held[job["metadata"]["name"]] = job
        else:
            await self._finish(job, behaviour)

    async def release(self, job_name: str, behaviour: Behaviour = "succeed") -> None:
        await self._finish(self.held.pop(job_name), behaviour)

    async def _set_running(self, job: dict[str, Any]) -> None:
        metadata = job["metadata"]
        await self.cluster.patch(
            JOBS,
            metadata["namespace"],
            metadata["name"],
            {"status": {"active": 1, "startTime": _now()}},
            status=True,
        )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{metadata['name']}-x7k2p",
                "namespace": metadata["namespace"],
                "labels": {"batch.kubernetes.io/job-name": metadata["name"], "job-name": metadata["name"]},
            },
            "spec": job["spec"]["template"]["spec"],
            "status": {
                "phase": "Running",
                "containerStatuses": [{"name": "buildkit", "state": {"running": {}}}],
            },
        }
        await self.cluster.create(PODS, pod)

    def _push_credentials(self, job: dict[str, Any]) -> tuple[str, str] | None:
        """Read the push secret the Job mounts, as BuildKit would through DOCKER_CONFIG."""
        image = parse_image(_output_image(job))
        for volume in job["spec"]["template"]["spec"].get("volumes", []):
            secret_name = volume.get("secret", {}).get("secretName")
            if secret_name:
                secret = self.cluster.get(SECRETS, job["metadata"]["namespace"], secret_name)
                assert secret is not None, f"the Job mounts a missing secret {secret_name}"
                config = base64.b64decode(secret["data"][".dockerconfigjson"])
                credentials = credentials_from_docker_config(config, image.registry)
                return (credentials.username, credentials.password) if credentials else None
        return None

    async def _finish(self, job: dict[str, Any], behaviour: Behaviour) -> None:
        metadata = job["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        if behaviour == "succeed":
            image = parse_image(_output_image(job))
            layers = [f"{name}: layer {index}\n".encode() for index in range(3)]
            pushed = await asyncio.to_thread(
                push_image,
                self.mirrors.get(image.registry, image.registry),
                image.repository,
                image.tag,
                layers,
                auth=self._push_credentials(job),
            )
            self.pushed[name] = pushed
            metrics = {"total": 9, "completed": 9, "user_total": 7, "user_cached": 5, "user_completed": 7}
            report = json.dumps({"digest": pushed.digest, "imageName": str(image), "cacheMetrics": metrics})
            terminated = {"exitCode": 0, "reason": "Completed", "message": report}
            pod_phase, job_condition = "Succeeded", {"type": "Complete", "status": "True"}
            job_status: dict[str, Any] = {"succeeded": 1, "completionTime": _now()}
        else:
            terminated = {"exitCode": 1, "reason": "Error", "message": BUILDKIT_FAILURE_LOG}
            pod_phase = "Failed"
            job_condition = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
            job_status = {"failed": 1}
        await self.cluster.patch(
            PODS,
            namespace,
            f"{name}-x7k2p",
            {
                "status": {
                    "phase": pod_phase,
                    "containerStatuses": [{"name": "buildkit", "state": {"terminated": terminated}}],
                }
            },
            status=True,
        )
        job_condition["lastTransitionTime"] = _now()
        await self.cluster.patch(
            JOBS,
            namespace,
            name,
            {"status": {**job_status, "active": None, "conditions": [job_condition]}},
            status=True,
        )
