"""Kopf wiring: every trigger reads its ServiceBuild afresh and calls the one reconcile. No decisions here.

The gateways' clients are opened at Kopf's start-up and closed at its clean-up; the safety resync is one
task owned by the same start-up handler.
"""

import asyncio
import contextlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

import kopf

from servicebuild import plan
from servicebuild.admission import Key
from servicebuild.api.models import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    InvalidServiceBuild,
    ServiceBuild,
    parse_servicebuild,
)
from servicebuild.config import Settings
from servicebuild.gitremote import GitError, GitRemote
from servicebuild.jobs import parse_pod
from servicebuild.kube import Kube, KubeError
from servicebuild.naming import ANNOTATION_SERVICEBUILD, LABEL_MANAGED_BY, MANAGED_BY, context_digest
from servicebuild.reconciler import Reconciler
from servicebuild.registry import RegistryClient, RegistryError
from servicebuild.render.job import BUILD_CONTAINER
from servicebuild.times import whole_seconds

logger = logging.getLogger(__name__)

_MAX_RETRY_DELAY = 300.0
_LOCK_STRIPES = 64


@dataclass
class Runtime:
    """What every handler shares, injected through Kopf's memo."""

    settings: Settings
    kube: Kube
    reconciler: Reconciler
    registry: RegistryClient | None = None
    _locks: tuple[threading.Lock, ...] = field(
        default_factory=lambda: tuple(threading.Lock() for _ in range(_LOCK_STRIPES))
    )

    @classmethod
    def open(cls, settings: Settings) -> Self:
        """The gateways' clients, connected as in-cluster config or the current kubeconfig says."""
        kube = Kube.from_environment(settings.api_timeout_seconds)
        registry = RegistryClient(
            insecure_registries=settings.insecure_registries, timeout=settings.registry_timeout_seconds
        )
        git = GitRemote(timeout=settings.git_timeout_seconds)
        return cls(settings, kube, Reconciler(kube, registry, git, settings), registry)

    def close(self) -> None:
        if self.registry is not None:
            self.registry.close()
        self.kube.close()

    def lock(self, key: Key) -> threading.Lock:
        """The lock of a ServiceBuild: its triggers (Job, Pod, ConfigMap, resync) never overlap. A fixed
        set of locks shared by hash keeps the memory flat however many ServiceBuilds there are; two
        sharing one only wait for each other now and then."""
        return self._locks[hash(key) % len(self._locks)]


def _reconcile(runtime: Runtime, key: Key) -> tuple[Key, ...]:
    """Reconcile the ServiceBuild as it is now, under its lock; return the waiting builds it lets start.

    Every trigger reads the object afresh: a body from an event queued behind a newer change would
    otherwise start the build of a superseded generation and stop the current one.
    """
    with runtime.lock(key):
        body = runtime.kube.get_servicebuild(*key)
        if body is None:
            return runtime.reconciler.forget(key)
        now = whole_seconds(datetime.now(UTC))
        return runtime.reconciler.reconcile(parse_servicebuild(body), now).wake


def _reconcile_quietly(runtime: Runtime, key: Key) -> None:
    """Reconcile outside a ServiceBuild handler, and the builds that it lets start: errors are logged
    and wait for the next trigger."""
    pending = [key]
    while pending:
        current = pending.pop(0)
        try:
            pending += _reconcile(runtime, current)
        except (KubeError, RegistryError, GitError) as exc:
            logger.warning("Reconciling ServiceBuild %s/%s failed, will retry: %s", *current, exc)
        except Exception:
            # The resync and the Job watch serve every ServiceBuild: one object's bug must not stop them.
            logger.exception("Reconciling ServiceBuild %s/%s failed unexpectedly", *current)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def servicebuild_changed(namespace: str | None, name: str, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """A ServiceBuild appeared, changed, or was found at start-up."""
    if namespace is None:  # the resource is namespaced; Kopf passes None only for cluster-scoped ones
        return
    try:
        woken = _reconcile(memo.runtime, (namespace, name))
    except (KubeError, RegistryError, GitError) as exc:
        if not exc.transient:
            raise kopf.PermanentError(str(exc)) from exc
        raise kopf.TemporaryError(str(exc), delay=min(_MAX_RETRY_DELAY, 5.0 * 2**retry)) from exc
    for key in woken:
        _reconcile_quietly(memo.runtime, key)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def servicebuild_deleted(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Jobs go with their owner through garbage collection; a build slot or queue place is ours to drop."""
    if namespace is None:
        return
    runtime: Runtime = memo.runtime
    for key in runtime.reconciler.forget((namespace, name)):
        _reconcile_quietly(runtime, key)


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
        await asyncio.to_thread(_reconcile_quietly, memo.runtime, (namespace, servicebuild))


def _owner_name(job: Mapping[str, Any]) -> str | None:
    for owner in job.get("metadata", {}).get("ownerReferences") or []:
        if owner.get("kind") == KIND and owner.get("apiVersion") == f"{GROUP}/{VERSION}":
            return str(owner.get("name"))
    return None


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
def build_job_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A build Job changed: its ServiceBuild may have news."""
    owner = _owner_name(body)
    if body.metadata.namespace is not None and owner is not None:
        _reconcile_quietly(memo.runtime, (body.metadata.namespace, owner))


def _build_container_ended(body: kopf.Body, **_: Any) -> bool:
    pod = parse_pod(body)
    container = pod.container(BUILD_CONTAINER) if pod is not None else None
    return container is not None and container.state == "terminated"


@kopf.on.event("", "v1", "pods", labels={LABEL_MANAGED_BY: MANAGED_BY}, when=_build_container_ended)
def build_pod_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A build Pod's build container ended: the build is over, seconds before the Job controller says so."""
    owner = body.metadata.annotations.get(ANNOTATION_SERVICEBUILD)
    if body.metadata.namespace is not None and owner is not None:
        _reconcile_quietly(memo.runtime, (body.metadata.namespace, owner))


@kopf.index("", "v1", "configmaps")
def context_digests(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str], str]:
    """Every ConfigMap's content digest, as the watch last saw it: the resync passes by a ServiceBuild
    whose build had that context without reading its ConfigMap again."""
    return {(namespace, name): context_digest(body.get("data") or {}, body.get("binaryData") or {})}


async def _resync_forever(runtime: Runtime, digests: kopf.Index[tuple[str | None, str], str]) -> None:
    """The safety tick: reconcile every ServiceBuild now and then, in case an event was missed.

    One LIST; an object whose build ended and whose source did not change since (its generation,
    and its ConfigMap's content as the watch saw it) is passed by without a request.
    """
    while True:
        await asyncio.sleep(runtime.settings.resync_seconds)
        try:
            bodies = await asyncio.to_thread(runtime.kube.list_servicebuilds, runtime.settings.namespaces)
        except KubeError as exc:
            logger.warning("Listing ServiceBuilds for the resync failed: %s", exc)
            continue
        tracked = runtime.reconciler.tracked()
        listed = []
        for servicebuild in map(parse_servicebuild, bodies):
            key = servicebuild.metadata.key
            listed.append(key)
            if key in tracked or not plan.idle(servicebuild, _context_digest(servicebuild, digests)):
                await asyncio.to_thread(_reconcile_quietly, runtime, key)
        # A ServiceBuild deleted while the operator was not looking still holds its build slot.
        for key in sorted(tracked - set(listed)):
            await asyncio.to_thread(_reconcile_quietly, runtime, key)


def _context_digest(
    servicebuild: ServiceBuild | InvalidServiceBuild, digests: kopf.Index[tuple[str | None, str], str]
) -> str | None:
    """The digest of the ServiceBuild's ConfigMap as the watch last saw it; None without one."""
    if isinstance(servicebuild, InvalidServiceBuild) or servicebuild.spec.source.config_map is None:
        return None
    key = (servicebuild.metadata.namespace, servicebuild.spec.source.config_map.name)
    return next(iter(digests.get(key, ())), None)


@kopf.on.startup()
async def start(
    memo: kopf.Memo, context_digests: kopf.Index[tuple[str | None, str], str] | None = None, **_: Any
) -> None:
    """Open the clients and count the builds already running, before any ServiceBuild may start one;
    then the safety tick."""
    settings: Settings = memo.settings
    runtime = await asyncio.to_thread(Runtime.open, settings)
    try:
        jobs = await asyncio.to_thread(runtime.kube.list_build_jobs, settings.namespaces)
    except KubeError as exc:
        runtime.close()
        raise kopf.TemporaryError(f"Counting the running builds failed: {exc}", delay=5) from exc
    runtime.reconciler.seed(jobs)
    memo.runtime = runtime
    if context_digests is None:  # Kopf passes every index to start-up handlers, filled as watches run
        raise kopf.PermanentError("the ConfigMap digest index is missing")
    memo.resync_task = asyncio.create_task(
        _resync_forever(runtime, context_digests), name="servicebuild-resync"
    )


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Stop the resync and close the clients."""
    task: asyncio.Task[None] | None = memo.get("resync_task")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    runtime: Runtime | None = memo.get("runtime")
    if runtime is not None:
        await asyncio.to_thread(runtime.close)
