"""Kopf wiring: every trigger parses what it got and calls the one reconcile. No decisions here."""

import asyncio
import contextlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from servicebuild.api.models import GROUP, KIND, PLURAL, VERSION
from servicebuild.config import Settings
from servicebuild.gitremote import GitError
from servicebuild.kube import Kube, KubeError
from servicebuild.naming import LABEL_MANAGED_BY, MANAGED_BY
from servicebuild.observe import is_finished
from servicebuild.reconciler import Reconciler
from servicebuild.registry import RegistryError

logger = logging.getLogger(__name__)

_MAX_RETRY_DELAY = 300.0


@dataclass
class Runtime:
    """What every handler shares, injected through Kopf's memo."""

    settings: Settings
    kube: Kube
    reconciler: Reconciler
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def lock(self, key: str) -> threading.Lock:
        """One lock per ServiceBuild: the Job, the resync and the ServiceBuild triggers never overlap."""
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def forget(self, key: str) -> None:
        with self._guard:
            self._locks.pop(key, None)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _reconcile(runtime: Runtime, namespace: str, name: str) -> None:
    """Reconcile the ServiceBuild as it is now, under its lock.

    Every trigger reads the object afresh: a body from an event queued behind a newer change would
    otherwise start the build of a superseded generation and stop the current one.
    """
    with runtime.lock(f"{namespace}/{name}"):
        body = runtime.kube.get_servicebuild(namespace, name)
        if body is not None:
            runtime.reconciler.reconcile(body, _now())


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def servicebuild_changed(namespace: str | None, name: str, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """A ServiceBuild appeared, changed, or was found at start-up."""
    if namespace is None:  # the resource is namespaced; Kopf passes None only for cluster-scoped ones
        return
    try:
        _reconcile(memo.runtime, namespace, name)
    except (KubeError, RegistryError, GitError) as exc:
        if not exc.transient:
            raise kopf.PermanentError(str(exc)) from exc
        raise kopf.TemporaryError(str(exc), delay=min(_MAX_RETRY_DELAY, 5.0 * 2**retry)) from exc


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def servicebuild_deleted(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Jobs go with their owner through garbage collection; the lock and a queue place are ours to drop."""
    memo.runtime.forget(f"{namespace}/{name}")
    if namespace is not None:
        memo.runtime.reconciler.slots.forget((namespace, name))


def _owner_name(job: Mapping[str, Any]) -> str | None:
    for owner in job.get("metadata", {}).get("ownerReferences") or []:
        if owner.get("kind") == KIND and owner.get("apiVersion") == f"{GROUP}/{VERSION}":
            return str(owner.get("name"))
    return None


def _reconcile_quietly(runtime: Runtime, namespace: str, name: str) -> None:
    """Reconcile outside a ServiceBuild handler: errors are logged and wait for the next trigger."""
    try:
        _reconcile(runtime, namespace, name)
    except (KubeError, RegistryError, GitError) as exc:
        logger.warning("Reconciling ServiceBuild %s/%s failed, will retry: %s", namespace, name, exc)
    except Exception:
        # The resync and the Job watch serve every ServiceBuild: one object's bug must not stop them.
        logger.exception("Reconciling ServiceBuild %s/%s failed unexpectedly", namespace, name)


@kopf.index(GROUP, VERSION, PLURAL)
def servicebuilds_by_configmap(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str | None, str], str] | None:
    """Which ServiceBuilds build from which ConfigMap, so that a ConfigMap change finds them."""
    configmap = (spec.get("source") or {}).get("configMap") or {}
    return {(namespace, configmap["name"]): name} if configmap.get("name") else None


def _builds_from(
    namespace: str | None,
    name: str,
    servicebuilds_by_configmap: kopf.Index[tuple[str | None, str], str] | None = None,
    **_: Any,
) -> bool:
    """Whether any ServiceBuild builds from this ConfigMap; Kopf calls it on its event loop."""
    return servicebuilds_by_configmap is not None and (namespace, name) in servicebuilds_by_configmap


@kopf.on.event("", "v1", "configmaps", when=_builds_from)
async def context_configmap_event(
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    servicebuilds_by_configmap: kopf.Index[tuple[str | None, str], str] | None = None,
    **_: Any,
) -> None:
    """A ConfigMap changed: the ServiceBuilds building from it may need a new build.

    Kopf changes its indexes on the event loop: the names are copied here, on the loop, before the
    reconciles run in worker threads.
    """
    if namespace is None or servicebuilds_by_configmap is None:  # Kopf passes both, always
        return
    for servicebuild in tuple(servicebuilds_by_configmap.get((namespace, name), ())):
        await asyncio.to_thread(_reconcile_quietly, memo.runtime, namespace, servicebuild)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
def build_job_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:  # noqa: A002 (Kopf's name)
    """A build Job changed: its ServiceBuild may have news, and a finished one frees a build slot."""
    runtime: Runtime = memo.runtime
    namespace, job_name = body.metadata.namespace, body.metadata.name
    if namespace is None or job_name is None:
        return
    owner = _owner_name(body)
    if owner is not None:
        _reconcile_quietly(runtime, namespace, owner)
    if type == "DELETED" or is_finished(body):
        runtime.reconciler.slots.finished(namespace, job_name)
        for waiting_namespace, waiting_name in runtime.reconciler.slots.next_waiting():
            _reconcile_quietly(runtime, waiting_namespace, waiting_name)
    else:
        runtime.reconciler.slots.started(namespace, job_name)


async def _resync_forever(runtime: Runtime) -> None:
    """The safety tick: reconcile everything now and then, in case an event was missed."""
    while True:
        await asyncio.sleep(runtime.settings.resync_seconds)
        try:
            bodies = await asyncio.to_thread(runtime.kube.list_servicebuilds, runtime.settings.namespaces)
        except KubeError as exc:
            logger.warning("Listing ServiceBuilds for the resync failed: %s", exc)
            continue
        present = {(body["metadata"]["namespace"], body["metadata"]["name"]) for body in bodies}
        runtime.reconciler.slots.retain(present)
        for body in bodies:
            metadata = body.get("metadata", {})
            await asyncio.to_thread(
                _reconcile_quietly, runtime, metadata.get("namespace"), metadata.get("name")
            )


@kopf.on.startup()
async def start_resync(memo: kopf.Memo, **_: Any) -> None:
    """Count the builds already running, before any ServiceBuild may start one; then the safety tick."""
    runtime: Runtime = memo.runtime
    try:
        jobs = await asyncio.to_thread(runtime.kube.list_build_jobs, runtime.settings.namespaces)
    except KubeError as exc:
        raise kopf.TemporaryError(f"Counting the running builds failed: {exc}", delay=5) from exc
    for job in jobs:
        if not is_finished(job):
            runtime.reconciler.slots.started(job["metadata"]["namespace"], job["metadata"]["name"])
    memo.resync_task = asyncio.create_task(_resync_forever(runtime), name="servicebuild-resync")


@kopf.on.cleanup()
async def stop_resync(memo: kopf.Memo, **_: Any) -> None:
    task: asyncio.Task[None] | None = memo.get("resync_task")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
