"""Plays the kubelet, the Job controller, Kueue and BuildKit for build Jobs.

What it writes is what the real parts write: a real image (or multi-platform index) pushed under
every name the Job's `--output` lists, the Pod's termination message in the wrapper's report
format with its build facts (base images, the FromAsCasing build check when the Dockerfile triggers
it), or a BuildKit log tail on failure, and the Job conditions of the Job controller. A Job asking for
attestations (`--opt attest:…`) pushes an index with BuildKit's attestation manifests, even for one
platform; one whose SBOM scanner is missing from a test registry fails as BuildKit does.
"""

import asyncio
import base64
import json
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
from support.buildkit_play import (
    BUILDKIT_FAILURE_LOG,
    base_image_steps,
    check_warnings,
    missing_scanner_log,
    output_names,
    push_result,
)
from support.buildkit_play import missing_scanner as find_missing_scanner

Behaviour = Literal["succeed", "fail", "hold", "stuck", "cache-export-fails", "evicted"]
"""succeed; fail with a BuildKit error; hold running until released; stuck pending (image pull
failing); succeed but report that the cache export failed; the Pod evicted for node pressure."""

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

BUILDKIT_LOG = (Path(__file__).parents[1] / "unit" / "buildkit_samples" / "calc-cold-plain.log").read_text()
"""What a successful build prints: a real BuildKit build's plain progress."""
RUNNING_LINES = 43
"""A running build has printed this much of it: up to its `RUN gcc` step, started and not done."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_args(job: dict[str, Any]) -> list[str]:
    args: list[str] = job["spec"]["template"]["spec"]["containers"][0].get("args", [])
    return args


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
    first_misses: dict[str, str] = field(default_factory=dict)
    """Per ServiceBuild name, the first step BuildKit's cache missed in its builds (the wrapper's `miss`
    fact); none when not given."""

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
        image = parse_image(output_names(build_args(job))[0])
        for volume in job["spec"]["template"]["spec"].get("volumes", []):
            secret_name = volume.get("secret", {}).get("secretName")
            if secret_name and volume["name"] == "docker-config":
                secret = self.cluster.get(SECRETS, job["metadata"]["namespace"], secret_name)
                assert secret is not None, f"the Job mounts a missing secret {secret_name}"
                config = base64.b64decode(secret["data"][".dockerconfigjson"])
                credentials = credentials_from_docker_config(config, image.registry)
                return (credentials.username, credentials.password) if credentials else None
        return None

    def _check_warnings(self, job: dict[str, Any]) -> list[str]:
        return check_warnings(self._dockerfile(job), build_args(job))

    def _base_image_steps(self, job: dict[str, Any]) -> list[str]:
        """The `FROM <ref>@<digest>` steps BuildKit prints for a ConfigMap context's base images."""
        return base_image_steps(self._dockerfile(job), self.mirrors)

    def _dockerfile(self, job: dict[str, Any]) -> str:
        """The Dockerfile of a ConfigMap context, as the Job's init container copies it."""
        volumes = job["spec"]["template"]["spec"].get("volumes", [])
        names = [volume["configMap"]["name"] for volume in volumes if "configMap" in volume]
        configmap = self.cluster.get(CONFIGMAPS, job["metadata"]["namespace"], names[0]) if names else None
        return str(((configmap or {}).get("data") or {}).get("Dockerfile", ""))

    def _push(self, job: dict[str, Any]) -> str:
        """Push under every name of the `--output`, as BuildKit does; return the digest."""
        args, auth = build_args(job), self._push_credentials(job)
        seed, dockerfile = job["metadata"]["name"], self._dockerfile(job)
        return push_result(args, seed=seed, dockerfile=dockerfile, auth=auth, mirrors=self.mirrors).digest

    async def _finish(self, job: dict[str, Any], behaviour: Behaviour) -> None:
        metadata = job["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        missing_scanner = await asyncio.to_thread(find_missing_scanner, build_args(job))
        succeeded = behaviour in {"succeed", "cache-export-fails"} and missing_scanner is None
        if missing_scanner is not None:
            terminated = {"exitCode": 1, "reason": "Error", "message": missing_scanner_log(missing_scanner)}
        elif succeeded:
            digest = await asyncio.to_thread(self._push, job)
            self.pushed[name] = digest
            metrics = {"total": 9, "completed": 9, "user_total": 7, "user_cached": 5, "user_completed": 7}
            names = ",".join(output_names(build_args(job)))
            report = {"digest": digest, "imageName": names, "cacheMetrics": metrics}
            report["cacheExported"] = behaviour != "cache-export-fails"
            facts = [f"base {step}" for step in await asyncio.to_thread(self._base_image_steps, job)]
            facts += [f"warn {warning}" for warning in self._check_warnings(job)]
            owner = job["metadata"]["annotations"][ANNOTATION_SERVICEBUILD]
            facts += [f"miss {self.first_misses[owner]}"] if owner in self.first_misses else []
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
