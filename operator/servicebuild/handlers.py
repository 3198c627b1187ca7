"""Kopf wiring: every trigger reads its ServiceBuild afresh and calls the one reconcile. No decisions here.

The gateways' clients are opened at Kopf's start-up and closed at its clean-up. The periodic work is one
task each, owned by the same start-up handler: the safety resync, the rechecks (retries, polled revisions,
waves) and the base image check.
"""

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Awaitable, Callable, Mapping
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
from servicebuild.naming import (
    ANNOTATION_REQUESTED_AT,
    ANNOTATION_SERVICEBUILD,
    ANNOTATION_SOURCE_PUSHED_AT,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    context_digest,
)
from servicebuild.reconciler import Reconciler
from servicebuild.registry import RegistryClient, RegistryError
from servicebuild.render.job import BUILD_CONTAINER
from servicebuild.times import format_time, whole_seconds
from servicebuild.webhook_server import WebhookSecretError, WebhookServer
from servicebuild.webhooks import PushEvent

logger = logging.getLogger(__name__)

_MAX_RETRY_DELAY = 300.0
_LOCK_STRIPES = 64
_RECHECK_TICK_SECONDS = 1.0


@dataclass
class Runtime:
    """What every handler shares, injected through Kopf's memo."""

    settings: Settings
    kube: Kube
    reconciler: Reconciler
    registry: RegistryClient | None = None
    _rechecks: dict[Key, datetime] = field(default_factory=dict)
    _recheck_guard: threading.Lock = field(default_factory=threading.Lock)
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

    def recheck(self, key: Key, at: datetime | None) -> None:
        """Reconcile `key` again at `at` (a retry, the next poll, the next wave); None: no need."""
        with self._recheck_guard:
            if at is None:
                self._rechecks.pop(key, None)
            else:
                self._rechecks[key] = at

    def due_rechecks(self, now: datetime) -> list[Key]:
        """The keys whose recheck time has come, taken off the schedule."""
        with self._recheck_guard:
            due = [key for key, at in self._rechecks.items() if at <= now]
            for key in due:
                del self._rechecks[key]
            return due

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
            runtime.recheck(key, None)
            return runtime.reconciler.forget(key)
        result = runtime.reconciler.reconcile(parse_servicebuild(body), whole_seconds(datetime.now(UTC)))
        runtime.recheck(key, result.recheck_at)
        return result.wake


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
@kopf.on.update(GROUP, VERSION, PLURAL, field="metadata.annotations")
def servicebuild_changed(namespace: str | None, name: str, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """A ServiceBuild appeared, changed (its spec, or an annotation asking for a build or announcing a
    push), or was found at start-up."""
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


@kopf.index(GROUP, VERSION, PLURAL)
def polled_sources(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[str, tuple[str | None, str, str, str | None]] | None:
    """The ServiceBuilds that poll a git revision, so that a webhook's push finds them: (namespace, name,
    URL, revision)."""
    git = (spec.get("source") or {}).get("git") or {}
    if git.get("pollInterval") in (None, "0s") or not git.get("url"):
        return None
    return {"polled": (namespace, name, git["url"], git.get("revision"))}


@kopf.index("", "v1", "configmaps")
def context_digests(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str], str]:
    """Every ConfigMap's content digest, as the watch last saw it: the resync passes by a ServiceBuild
    whose build had that context without reading its ConfigMap again."""
    return {(namespace, name): context_digest(body.get("data") or {}, body.get("binaryData") or {})}


async def _resync_forever(runtime: Runtime, digests: kopf.Index[tuple[str | None, str], str]) -> None:
    """The safety tick: reconcile every ServiceBuild now and then, in case an event was missed.

    One LIST; an object whose build ended and whose sources did not change since (its generation, its
    ConfigMap's content as the watch saw it, a rebuild request) is passed by without a request. Polled
    revisions and retries have their own times (`_recheck_forever`), base images their own task.
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
            if key in tracked or not plan.idle(servicebuild, _watched(servicebuild, digests)):
                await asyncio.to_thread(_reconcile_quietly, runtime, key)
        # A ServiceBuild deleted while the operator was not looking still holds its build slot.
        for key in sorted(tracked - set(listed)):
            await asyncio.to_thread(_reconcile_quietly, runtime, key)


def _watched(
    servicebuild: ServiceBuild | InvalidServiceBuild, digests: kopf.Index[tuple[str | None, str], str]
) -> plan.Wanted | None:
    """What the ServiceBuild asks for as far as the watches know, without a request: its generation, its
    ConfigMap's digest, a rebuild request. None for an invalid spec."""
    if isinstance(servicebuild, InvalidServiceBuild):
        return None
    meta, configmap = servicebuild.metadata, servicebuild.spec.source.config_map
    digest = next(iter(digests.get((meta.namespace, configmap.name), ())), None) if configmap else None
    return plan.Wanted(meta.generation, digest, request=meta.annotations.get(ANNOTATION_REQUESTED_AT))


async def _recheck_forever(runtime: Runtime) -> None:
    """Reconcile the ServiceBuilds whose time has come: a retry's delay ended, a polled revision is due
    for a lookup, a wave of triggered builds begins."""
    while True:
        await asyncio.sleep(_RECHECK_TICK_SECONDS)
        for key in runtime.due_rechecks(datetime.now(UTC)):
            await asyncio.to_thread(_reconcile_quietly, runtime, key)


async def _check_base_images_forever(runtime: Runtime) -> None:
    """Every SERVICEBUILD_BASE_IMAGE_POLL_INTERVAL (give or take a tenth), ask the registries for the base
    images of the ServiceBuilds following them; rebuild those whose images changed."""
    interval = runtime.settings.base_image_poll_interval.total_seconds()
    while True:
        await asyncio.sleep(interval * random.uniform(0.9, 1.1))  # noqa: S311 - jitter, not a secret
        try:
            bodies = await asyncio.to_thread(runtime.kube.list_servicebuilds, runtime.settings.namespaces)
        except KubeError as exc:
            logger.warning("Listing ServiceBuilds for the base image check failed: %s", exc)
            continue
        servicebuilds = [sb for sb in map(parse_servicebuild, bodies) if isinstance(sb, ServiceBuild)]
        changed = await asyncio.to_thread(runtime.reconciler.base_image_changes, servicebuilds)
        for key in changed:
            await asyncio.to_thread(_reconcile_quietly, runtime, key)


def _push_recorder(
    runtime: Runtime, sources: kopf.Index[str, tuple[str | None, str, str, str | None]]
) -> Callable[[PushEvent], Awaitable[int]]:
    """What the webhook receiver does with a verified push: record it on every ServiceBuild polling that
    repository and revision (whichever replica reconciles it then looks the revision up at once)."""

    async def record(event: PushEvent) -> int:
        concerned = [
            (namespace, name)
            for namespace, name, url, revision in tuple(sources.get("polled", ()))
            if namespace is not None and event.concerns(url, revision)
        ]
        pushed_at = format_time(datetime.now(UTC))
        for namespace, name in concerned:
            await asyncio.to_thread(
                runtime.kube.annotate_servicebuild, namespace, name, {ANNOTATION_SOURCE_PUSHED_AT: pushed_at}
            )
        logger.info(
            "A %s push to %s concerns %d ServiceBuilds", event.provider, event.repository, len(concerned)
        )
        return len(concerned)

    return record


@kopf.on.startup()
async def start(
    memo: kopf.Memo,
    context_digests: kopf.Index[tuple[str | None, str], str] | None = None,
    polled_sources: kopf.Index[str, tuple[str | None, str, str, str | None]] | None = None,
    **_: Any,
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
    if context_digests is None or polled_sources is None:  # Kopf passes every index, filled as watches run
        raise kopf.PermanentError("an index is missing")
    webhooks = WebhookServer.from_settings(settings, _push_recorder(runtime, polled_sources))
    if webhooks is not None:
        try:
            await webhooks.start()
        except (WebhookSecretError, OSError) as exc:
            runtime.close()
            raise kopf.PermanentError(f"The webhook receiver cannot start: {exc}") from exc
    memo.webhooks = webhooks
    memo.tasks = [
        asyncio.create_task(_resync_forever(runtime, context_digests), name="servicebuild-resync"),
        asyncio.create_task(_recheck_forever(runtime), name="servicebuild-rechecks"),
        asyncio.create_task(_check_base_images_forever(runtime), name="servicebuild-base-images"),
    ]


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Stop the periodic tasks and the webhook receiver, and close the clients."""
    tasks: list[asyncio.Task[None]] = memo.get("tasks") or []
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    webhooks: WebhookServer | None = memo.get("webhooks")
    if webhooks is not None:
        await webhooks.stop()
    runtime: Runtime | None = memo.get("runtime")
    if runtime is not None:
        await asyncio.to_thread(runtime.close)
