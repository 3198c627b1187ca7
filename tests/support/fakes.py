"""In-memory gateways for driving the real `Reconciler` in unit tests: objects in dicts, every write
recorded. They implement the gateway Protocols of `servicebuild.reconciler` and nothing more."""

# ruff: noqa: ARG002 - the fakes implement the gateway Protocols' signatures, using what they need

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from servicebuild import naming
from servicebuild.api.models import ObjectMeta
from servicebuild.credentials import Credentials, GitCredentials
from servicebuild.gitremote import ContextTree
from servicebuild.imageref import ImageRef
from servicebuild.kube import NotLeadingError
from servicebuild.manifests import ImageSummary
from servicebuild.render.pool_run import PoolRun, RunState

COMMIT = "9fceb02d0ae598e95dc970b74767f19372d61af8"
IMAGE_SIZE = 12582912


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies the status patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


@dataclass
class FakeKube:
    """The Kubernetes API as the reconciler sees it."""

    now: str
    """What the API server writes as `creationTimestamp` (RFC 3339)."""
    configmaps: dict[str, dict[str, Any]] = field(default_factory=dict)
    """By name, in any namespace."""
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    """By name, in any namespace: base64-encoded data."""
    jobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """By (namespace, Job name): the Job's newest Pod."""
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    """By (namespace, Pod name): the build container's log."""
    created: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)
    patches: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    builderpools: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    own_secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    """The operator's namespace's Secrets (the pools' client certificates), by (namespace, name)."""

    def get_builderpool(self, namespace: str, name: str) -> dict[str, Any] | None:
        pool = self.builderpools.get((namespace, name))
        return copy.deepcopy(pool) if pool is not None else None

    def get_own_secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        data = self.own_secrets.get((namespace, name))
        return dict(data) if data is not None else None

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        job = self.jobs.get((namespace, name))
        return copy.deepcopy(job) if job is not None else None

    def create_job(self, job: dict[str, Any]) -> bool:
        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        if key in self.jobs:
            return False
        self.created.append(copy.deepcopy(job))
        stored = copy.deepcopy(job)
        stored["metadata"]["creationTimestamp"] = self.now
        self.jobs[key] = stored
        return True

    def list_jobs(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(job)
            for (job_namespace, _), job in self.jobs.items()
            if job_namespace == namespace and job["metadata"]["labels"].get(naming.LABEL_UID) == uid
        ]

    def delete_job(self, namespace: str, name: str) -> None:
        self.deleted.append((namespace, name))
        self.jobs.pop((namespace, name), None)
        self.pods.pop((namespace, name), None)

    def get_job_pod(self, namespace: str, job_name: str) -> dict[str, Any] | None:
        pod = self.pods.get((namespace, job_name))
        return copy.deepcopy(pod) if pod is not None else None

    def read_pod_log(self, namespace: str, pod: str, container: str, tail_lines: int) -> str | None:
        log = self.logs.get((namespace, pod))
        return None if log is None else "\n".join(log.splitlines()[-tail_lines:])

    def get_secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        data = self.secrets.get(name)
        return dict(data) if data is not None else None

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        configmap = self.configmaps.get(name)
        return copy.deepcopy(configmap) if configmap is not None else None

    def patch_servicebuild_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        json.dumps(status)  # what goes over the wire is JSON
        self.patches.append(copy.deepcopy(status))
        self.status = apply_merge_patch(self.status, status)

    def post_event(
        self, involved: ObjectMeta, event_type: str, reason: str, message: str, now: datetime
    ) -> None:
        self.events.append((event_type, reason, message))


class FakeRegistry:
    """Serves every digest asked for as a three-layer image of IMAGE_SIZE bytes; tags as `tags` say."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.size_bytes = IMAGE_SIZE
        """The size of the image `inspect` serves."""
        self.acting = True
        """False: tags are fenced off, as `Kube.fence` fences them for a replica that does not lead."""

    def tag_digest(self, image: ImageRef, credentials: Credentials | None) -> str:
        return self.tags[str(image)]

    def tag(self, image: ImageRef, digest: str, credentials: Credentials | None) -> None:
        if not self.acting:
            raise NotLeadingError(f"tag {image}")
        self.tags[str(image)] = digest

    def inspect(self, image: ImageRef, digest: str, credentials: Credentials | None) -> ImageSummary:
        return ImageSummary(
            digest=digest,
            media_type="application/vnd.oci.image.manifest.v1+json",
            size_bytes=self.size_bytes,
            layers=3,
            platforms=(),
        )

    def manifest_and_config(
        self, image: ImageRef, digest: str, credentials: Credentials | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The three layers of `inspect`'s image: a base layer and two the Dockerfile's `RUN`s made."""
        sizes = (IMAGE_SIZE // 2, IMAGE_SIZE // 4, IMAGE_SIZE // 8)
        history = [{"created_by": "base layer"}, *({"created_by": f"RUN step {n}"} for n in (1, 2))]
        return {"layers": [{"size": size} for size in sizes]}, {"history": history}


class FakeGit:
    """Every revision resolves to `commit` (COMMIT unless a test moves it); `lookups` counts the asking.

    A commit's context is `contexts[commit]` (path → content), every file read; a commit without one is
    "not checked" (None), as from a server without a blob-less fetch. `context_reads` counts the fetches.
    """

    def __init__(self) -> None:
        self.commit = COMMIT
        self.lookups = 0
        self.contexts: dict[str, dict[str, bytes]] = {}
        self.context_reads: list[str] = []

    def resolve(self, url: str, revision: str | None, credentials: GitCredentials | None) -> str:
        self.lookups += 1
        return self.commit

    def context_tree(
        self,
        url: str,
        commit: str,
        credentials: GitCredentials | None,
        context_dir: str | None,
        read: Callable[[str], bool],
    ) -> ContextTree | None:
        self.context_reads.append(commit)
        files = self.contexts.get(commit)
        if files is None:
            return None
        blob_ids = {path: hashlib.sha1(content).hexdigest() for path, content in files.items()}  # noqa: S324
        return ContextTree(blob_ids, {path: content for path, content in files.items() if read(path)})


Key = tuple[str, str]


class FakeRuns:
    """The runs of buildctl as `poolruns.PoolRuns` keeps them, without processes: a test ends a run with
    `end`, as buildctl would have (exit code, metadata file, log)."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.runs: dict[str, RunState] = {}
        self.started: list[tuple[Key, str, Key, PoolRun]] = []
        self.stopped: list[str] = []
        self.touched: list[Key] = []

    def start(self, servicebuild: Key, name: str, pool: Key, run: PoolRun) -> None:
        self.stop(servicebuild, keep=None)
        self.started.append((servicebuild, name, pool, run))
        self.runs[name] = RunState(name, servicebuild, pool, self.now, run)

    def state(self, name: str) -> RunState | None:
        return self.runs.get(name)

    def running(self, pool: Key) -> int:
        return sum(1 for run in self.runs.values() if run.pool == pool and run.ended is None)

    def touch(self, pool: Key) -> None:
        self.touched.append(pool)

    def stop(self, servicebuild: Key, keep: str | None) -> None:
        for name in [n for n, run in self.runs.items() if run.servicebuild == servicebuild and n != keep]:
            self.stopped.append(name)
            del self.runs[name]

    def stop_all(self) -> None:
        self.stopped += list(self.runs)
        self.runs.clear()

    def end(
        self, name: str, exit_code: int, *, metadata: str | None = None, log: str = "", at: datetime
    ) -> None:
        self.runs[name] = replace(self.runs[name], ended=at, exit_code=exit_code, metadata=metadata, log=log)
