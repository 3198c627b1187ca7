"""Plays the kubelet, the Job controller, Kueue and BuildKit for build Jobs.

What it writes is what the real parts write: a real image (or multi-platform index) pushed under
every name the Job's `--output` lists, the Pod's termination message in the wrapper's report
format (or a BuildKit log tail on failure), and the Job conditions of the Job controller.
"""

import asyncio
import base64
import csv
import json
import re
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
from cluster import CONFIGMAPS, JOBS, PODS, SECRETS, Cluster, PodLog

from servicebuild.credentials import credentials_from_docker_config
from servicebuild.imageref import parse_image
from servicebuild.naming import ANNOTATION_SERVICEBUILD
from support.oci_registry import push_image, push_index, tag_digest

Behaviour = Literal["succeed", "fail", "hold", "stuck", "cache-export-fails", "evicted"]
"""succeed; fail with a BuildKit error; hold running until released; stuck pending (image pull
failing); succeed but report that the cache export failed; the Pod evicted for node pressure."""

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

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


BUILDKIT_LOG = (Path(__file__).parents[1] / "unit" / "buildkit_samples" / "calc-cold-plain.log").read_text()
"""What a successful build prints: a real BuildKit build's plain progress."""
RUNNING_LINES = 43
"""A running build has printed this much of it: up to its `RUN gcc` step, started and not done."""


_FROM_RE = re.compile(r"^FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", re.MULTILINE | re.IGNORECASE)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_args(job: dict[str, Any]) -> list[str]:
    args: list[str] = job["spec"]["template"]["spec"]["containers"][0].get("args", [])
    return args


def output_names(job: dict[str, Any]) -> list[str]:
    """The names BuildKit would push: `name` of the Job's `--output type=image`, CSV as buildctl reads it."""
    for argument in build_args(job):
        if argument.startswith("type=image"):
            fields = next(csv.reader([argument]))
            options = dict(part.partition("=")[::2] for part in fields)
            return options["name"].split(",")
    raise AssertionError(f"no --output type=image in {build_args(job)}")


def platforms(job: dict[str, Any]) -> list[str]:
    for argument in build_args(job):
        if argument.startswith("platform="):
            return argument.removeprefix("platform=").split(",")
    return []


@dataclass
class Kubelet:
    cluster: Cluster
    behaviours: dict[str, deque[Behaviour]] = field(default_factory=lambda: defaultdict(deque))
    """Per ServiceBuild name, what its next Jobs do; "succeed" when nothing is queued."""
    pushed: dict[str, str] = field(default_factory=dict)
    """Per Job name, the digest pushed for it."""
    held: dict[str, dict[str, Any]] = field(default_factory=dict)
    queued: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Jobs Kueue suspended, waiting for `admit`."""
    handled: set[tuple[str, str]] = field(default_factory=set)
    failure_log: str = BUILDKIT_FAILURE_LOG
    """What a failing build prints last (its termination message)."""
    mirrors: dict[str, str] = field(default_factory=dict)
    """Registry host → host BuildKit really pushes to (as a registry mirror would route it)."""
    job_completion_delay: float = 2.5
    """Seconds between the build container's end and the Job controller's Complete or Failed condition:
    2-3 s on a real cluster (`shared/buildkit.md`), with `active: 0` and no condition in between."""
    job_counts_pod_out: bool = True
    """Whether the Job controller updates the Job (`active: 0`) as soon as its Pod ends, as it does on a
    real cluster; False leaves the Job untouched until it completes it, so only the Pod tells."""
    completions: set[asyncio.Task[None]] = field(default_factory=set)
    """The Job controller's pending completions."""

    def plan(self, servicebuild: str, *behaviours: Behaviour) -> None:
        self.behaviours[servicebuild].extend(behaviours)

    async def run(self) -> None:
        while True:
            for job in self.cluster.all(JOBS):
                key = (job["metadata"]["namespace"], job["metadata"]["name"])
                if key not in self.handled:
                    self.handled.add(key)
                    try:
                        await self._admit_or_queue(job)
                    except aiohttp.ClientResponseError as error:
                        if error.status != 404:
                            raise
                        # Deleted meanwhile (e.g. superseded at once): the controllers let it go.
            await asyncio.sleep(0.05)

    async def _admit_or_queue(self, job: dict[str, Any]) -> None:
        metadata = job["metadata"]
        if KUEUE_QUEUE_LABEL in (metadata.get("labels") or {}):
            # Kueue's webhook suspends a labelled Job on creation; it runs once admitted.
            await self.cluster.patch(
                JOBS, metadata["namespace"], metadata["name"], {"spec": {"suspend": True}}
            )
            self.queued[metadata["name"]] = job
            return
        await self._start(job)

    async def admit(self, job_name: str) -> None:
        job = self.queued.pop(job_name)
        metadata = job["metadata"]
        await self.cluster.patch(JOBS, metadata["namespace"], metadata["name"], {"spec": {"suspend": False}})
        await self._start(job)

    async def _start(self, job: dict[str, Any]) -> None:
        owner = job["metadata"]["annotations"][ANNOTATION_SERVICEBUILD]
        queue = self.behaviours[owner]
        behaviour = queue.popleft() if queue else "succeed"
        if behaviour == "stuck":
            await self._set_pending(job)
            return
        await self._set_running(job)
        if behaviour == "hold":
            self.held[job["metadata"]["name"]] = job
        else:
            await self._finish(job, behaviour)

    async def release(self, job_name: str, behaviour: Behaviour = "succeed") -> None:
        await self._finish(self.held.pop(job_name), behaviour)

    def _pod(self, job: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """The Pod as the Job controller makes it: the template's labels and annotations, plus its own."""
        metadata = job["metadata"]
        template = job["spec"]["template"].get("metadata") or {}
        job_labels = {"batch.kubernetes.io/job-name": metadata["name"], "job-name": metadata["name"]}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{metadata['name']}-x7k2p",
                "namespace": metadata["namespace"],
                "labels": {**(template.get("labels") or {}), **job_labels},
                "annotations": dict(template.get("annotations") or {}),
            },
            "spec": job["spec"]["template"]["spec"],
            "status": status,
        }

    async def _set_pending(self, job: dict[str, Any]) -> None:
        waiting = {
            "reason": "ImagePullBackOff",
            "message": 'Back-off pulling image "moby/buildkit:v0.32.2-rootless"',
        }
        await self._create_pod(job, "Pending", {"waiting": waiting})

    async def _set_running(self, job: dict[str, Any]) -> None:
        await self._create_pod(job, "Running", {"running": {"startedAt": _now()}})
        log = PodLog()
        self.cluster.kmock.pod_logs[self._pod_key(job)] = log
        await log.write("".join(BUILDKIT_LOG.splitlines(keepends=True)[:RUNNING_LINES]))

    def _pod_key(self, job: dict[str, Any]) -> tuple[str, str]:
        return job["metadata"]["namespace"], f"{job['metadata']['name']}-x7k2p"

    async def _create_pod(self, job: dict[str, Any], phase: str, state: dict[str, Any]) -> None:
        """The Job controller marks the Job active and creates the Pod, which the kubelet reports."""
        metadata = job["metadata"]
        await self.cluster.patch(
            JOBS,
            metadata["namespace"],
            metadata["name"],
            {"status": {"active": 1, "startTime": _now()}},
            status=True,
        )
        status = {"phase": phase, "containerStatuses": [{"name": "buildkit", "state": state}]}
        await self.cluster.create(PODS, self._pod(job, status))

    def _push_credentials(self, job: dict[str, Any]) -> tuple[str, str] | None:
        """Read the push secret the Job mounts, as BuildKit would through DOCKER_CONFIG."""
        image = parse_image(output_names(job)[0])
        for volume in job["spec"]["template"]["spec"].get("volumes", []):
            secret_name = volume.get("secret", {}).get("secretName")
            if secret_name and volume["name"] == "docker-config":
                secret = self.cluster.get(SECRETS, job["metadata"]["namespace"], secret_name)
                assert secret is not None, f"the Job mounts a missing secret {secret_name}"
                config = base64.b64decode(secret["data"][".dockerconfigjson"])
                credentials = credentials_from_docker_config(config, image.registry)
                return (credentials.username, credentials.password) if credentials else None
        return None

    def _base_image_steps(self, job: dict[str, Any]) -> list[str]:
        """The `FROM <ref>@<digest>` steps BuildKit prints for the base images of a ConfigMap context's
        Dockerfile, resolved against the test registries (other registries are not reachable here)."""
        volumes = job["spec"]["template"]["spec"].get("volumes", [])
        names = [volume["configMap"]["name"] for volume in volumes if "configMap" in volume]
        configmap = self.cluster.get(CONFIGMAPS, job["metadata"]["namespace"], names[0]) if names else None
        dockerfile = ((configmap or {}).get("data") or {}).get("Dockerfile", "")
        stages = re.findall(
            r"^FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", dockerfile, re.MULTILINE | re.IGNORECASE
        )
        steps = []
        for index, (ref, stage) in enumerate(stages):
            if ref == "scratch" or any(ref == earlier for _, earlier in stages[:index]):
                continue
            image = parse_image(ref)
            if not image.registry.startswith(("127.0.0.1:", "localhost:")):
                continue
            digest = tag_digest(self.mirrors.get(image.registry, image.registry), image.repository, image.tag)
            steps.append(f"[{stage or f'stage-{index}'} 1/2] FROM {image}@{digest}")
        return steps

    def _push(self, job: dict[str, Any]) -> str:
        """Push under every name of the `--output`, as BuildKit does; return the digest."""
        names = [parse_image(name) for name in output_names(job)]
        auth = self._push_credentials(job)
        digest = ""
        for image in names:
            registry = self.mirrors.get(image.registry, image.registry)
            if platforms(job):
                digest = push_index(registry, image.repository, image.tag, auth=auth).digest
            else:
                layers = [f"{job['metadata']['name']}: layer {index}\n".encode() for index in range(3)]
                digest = push_image(registry, image.repository, image.tag, layers, auth=auth).digest
        return digest

    async def _finish(self, job: dict[str, Any], behaviour: Behaviour) -> None:
        metadata = job["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        succeeded = behaviour in {"succeed", "cache-export-fails"}
        if succeeded:
            digest = await asyncio.to_thread(self._push, job)
            self.pushed[name] = digest
            metrics = {"total": 9, "completed": 9, "user_total": 7, "user_cached": 5, "user_completed": 7}
            report = {"digest": digest, "imageName": ",".join(output_names(job)), "cacheMetrics": metrics}
            report["cacheExported"] = behaviour != "cache-export-fails"
            facts = [f"base {step}" for step in await asyncio.to_thread(self._base_image_steps, job)]
            message = "\n".join([json.dumps(report), *facts]) + "\n"
            terminated = {"exitCode": 0, "reason": "Completed", "message": message}
        else:
            terminated = {"exitCode": 1, "reason": "Error", "message": self.failure_log}
        pod_status: dict[str, Any] = {"phase": "Succeeded" if succeeded else "Failed"}
        if behaviour == "evicted":
            # What the kubelet writes when it evicts a Pod for node pressure: the container killed.
            terminated = {"exitCode": 137, "reason": "Error"}
            pod_status |= {"reason": "Evicted", "message": "The node was low on resource: memory."}
        terminated["finishedAt"] = _now()
        rest = "".join(BUILDKIT_LOG.splitlines(keepends=True)[RUNNING_LINES:])
        log_end = rest if succeeded else self.failure_log if behaviour != "evicted" else ""
        await self.cluster.kmock.pod_logs[self._pod_key(job)].write(log_end, end=True)
        pod_status["containerStatuses"] = [{"name": "buildkit", "state": {"terminated": terminated}}]
        await self.cluster.patch(PODS, namespace, f"{name}-x7k2p", {"status": pod_status}, status=True)
        # The Job controller counts the Pod out at once but marks the Job finished only seconds later.
        if self.job_counts_pod_out:
            pod = self.cluster.get(PODS, namespace, f"{name}-x7k2p")
            uncounted = {"succeeded" if succeeded else "failed": [pod["metadata"]["uid"]]} if pod else {}
            await self.cluster.patch(
                JOBS,
                namespace,
                name,
                {"status": {"active": 0, "ready": 0, "uncountedTerminatedPods": uncounted}},
                status=True,
            )
        uid = job["metadata"]["uid"]
        completion = asyncio.create_task(self._complete_job(namespace, name, uid, succeeded=succeeded))
        self.completions.add(completion)
        completion.add_done_callback(self.completions.discard)

    async def _complete_job(self, namespace: str, name: str, uid: str, *, succeeded: bool) -> None:
        await asyncio.sleep(self.job_completion_delay)
        current = self.cluster.get(JOBS, namespace, name)
        if current is None or current["metadata"]["uid"] != uid:
            return  # deleted meanwhile (superseded, or made again under its name): nothing to complete
        now = _now()
        if succeeded:
            condition = {"type": "Complete", "status": "True", "lastTransitionTime": now}
            counts: dict[str, Any] = {"succeeded": 1, "completionTime": now}
        else:
            condition = {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "lastTransitionTime": now,
            }
            counts = {"failed": 1}
        await self.cluster.patch(
            JOBS,
            namespace,
            name,
            {"status": counts | {"active": None, "uncountedTerminatedPods": None, "conditions": [condition]}},
            status=True,
        )
