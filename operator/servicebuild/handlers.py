"""Kopf wiring: every trigger reads its ServiceBuild afresh and calls the one reconcile. No decisions here.

The gateways' clients are opened at Kopf's start-up and closed at its clean-up. The periodic work is one
task each, owned by the same start-up handler: the election, the safety resync, the rechecks (retries,
polled revisions, waves) and the base image check.

Only the leader acts. Every handler and task asks `Runtime.acting` first, and the Kubernetes gateway asks
again before each write that acts on a build, so a replica that stops leading stops at once. The
ServiceBuild handler is an event handler, not Kopf's create/update handlers: those write Kopf's own
annotations on every object they handle, which a standby must not do. Its retries are the operator's
own (`Runtime.retry_later`).
"""

import asyncio
import contextlib
import logging
import random
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import kopf

from servicebuild import memory, plan
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
from servicebuild.api.pool import POOL_PLURAL
from servicebuild.config import Settings
from servicebuild.election import Election
from servicebuild.gitremote import GitError, GitRemote
from servicebuild.jobs import parse_pod
from servicebuild.kube import Kube, KubeError, NotLeadingError
from servicebuild.leadership import Leadership
from servicebuild.metrics_server import MetricsServer
from servicebuild.naming import (
    ANNOTATION_REQUESTED_AT,
    ANNOTATION_SERVICEBUILD,
    ANNOTATION_SOURCE_PUSHED_AT,
    LABEL_BUILDERPOOL,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    context_digest,
)
from servicebuild.poolruns import PoolRuns
from servicebuild.pools import PoolReconciler
from servicebuild.reconciler import Reconciler, log_fields
from servicebuild.registry import RegistryClient, RegistryError
from servicebuild.render.job import BUILD_CONTAINER
from servicebuild.times import format_time, whole_seconds
from servicebuild.webhook_server import WebhookSecretError, WebhookServer
from servicebuild.webhooks import PushEvent

logger = logging.getLogger(__name__)

_MAX_RETRY_DELAY = 300.0
_FIRST_RETRY_DELAY = 5.0
_FENCED_RETRY_SECONDS = 2.0
_LOCK_STRIPES = 64
_RECHECK_TICK_SECONDS = 1.0
_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_CRD_NAME = f"{PLURAL}.{GROUP}"


@dataclass
class Runtime:
    """What every handler shares, injected through Kopf's memo."""

    settings: Settings
    kube: Kube
    reconciler: Reconciler
    registry: RegistryClient | None = None
    leadership: Leadership | None = None
    pools: PoolReconciler | None = None
    acting: bool = False
    """This replica leads and has counted the running builds: its term has begun."""
    ready: bool = False
    """The watches have listed what exists (readiness; a standby is ready too)."""
    trim_memory: memory.Trim = field(default_factory=memory.malloc_trim)
    """Returns the C heap's free pages after a burst of work (see memory.py)."""
    _rechecks: dict[Key, datetime] = field(default_factory=dict)
    _failures: dict[Key, int] = field(default_factory=dict)
    _seen: dict[Key, int] = field(default_factory=dict)
    _queue: asyncio.Queue[Key] = field(default_factory=asyncio.Queue)
    _queued: set[Key] = field(default_factory=set)
    _recheck_guard: threading.Lock = field(default_factory=threading.Lock)
    _pool_work: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="pools")
    )
    _locks: tuple[threading.Lock, ...] = field(
        default_factory=lambda: tuple(threading.Lock() for _ in range(_LOCK_STRIPES))
    )

    @classmethod
    def open(cls, settings: Settings, loop: asyncio.AbstractEventLoop) -> Self:
        """The gateways' clients, connected as in-cluster config or the current kubeconfig says; `loop` runs
        the queue of ServiceBuilds to reconcile."""
        kube = Kube.from_environment(settings.api_timeout_seconds)
        registry = RegistryClient(
            insecure_registries=settings.insecure_registries,
            timeout=settings.registry_timeout_seconds,
            fence=kube.fence,
        )
        git = GitRemote(timeout=settings.git_timeout_seconds)
        own_namespace = _lease_namespace(settings)
        runs = PoolRuns(settings.pool_run_directory)
        reconciler = Reconciler(kube, registry, git, settings, runs=runs, own_namespace=own_namespace)
        runtime = cls(settings, kube, reconciler, registry)
        runtime.pools = PoolReconciler(kube, settings, own_namespace, activity=runs)
        runs.on_pool = runtime.reconcile_pool_soon
        # A build on a pool ended (buildctl's waiting thread says so): its ServiceBuild joins the queue.
        runs.on_end = lambda key: loop.call_soon_threadsafe(runtime.enqueue, key)
        kube.may_act = runtime.may_act
        if settings.leader_election:
            identity = f"{socket.gethostname()}_{secrets.token_hex(4)}"
            election = Election(
                identity, settings.lease_duration_seconds, settings.lease_renew_deadline_seconds
            )
            runtime.leadership = Leadership(
                kube,
                namespace=_lease_namespace(settings),
                name=settings.lease_name,
                election=election,
                retry_period=settings.lease_retry_period_seconds,
            )
        return runtime

    def close(self) -> None:
        self.reconciler.pools.runs.stop_all()
        self._pool_work.shutdown(wait=False, cancel_futures=True)
        if self.registry is not None:
            self.registry.close()
        if self.leadership is not None:
            self.leadership.close()
        self.kube.close()

    def reconcile_pool_soon(self, key: Key) -> None:
        """Reconcile a pool on the pools' own thread: a build on it started or ended, or wants it started.
        Never in the caller's thread, which may hold a ServiceBuild's lock (the pool's may be the same)."""
        self._pool_work.submit(_reconcile_pool, self, key)

    def may_act(self) -> bool:
        """Whether a write that acts on a build may be sent now."""
        return self.acting and (self.leadership is None or self.leadership.may_act())

    def begin_term(self, jobs: list[dict[str, Any]]) -> None:
        """Begin acting, knowing nothing of an earlier term but the build Jobs that run now: no retries
        due, no object seen yet (so that each is reconciled once)."""
        self.reconciler.begin_term(jobs)
        with self._recheck_guard:
            self._rechecks.clear()
            self._failures.clear()
            self._seen.clear()
        self.acting = True

    def noticed(self, key: Key, generation: int, annotations: Mapping[str, str]) -> bool:
        """Whether the ServiceBuild is new to this term or its generation or annotations changed since it
        was last noticed; a change of its status alone (the operator's own writes) is not news."""
        fingerprint = hash((generation, tuple(sorted(annotations.items()))))
        with self._recheck_guard:
            news = self._seen.get(key) != fingerprint
            self._seen[key] = fingerprint
            return news

    def enqueue(self, key: Key) -> None:
        """Reconcile `key` soon; once, however many events ask before it is reached (each reconcile reads
        the object afresh). Only the key waits: not the event's body, nor Kopf's worker. Called on the
        event loop."""
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    async def next_queued(self) -> Key:
        key = await self._queue.get()
        self._queued.discard(key)
        return key

    def forget(self, key: Key) -> None:
        with self._recheck_guard:
            self._seen.pop(key, None)
            self._failures.pop(key, None)
            self._rechecks.pop(key, None)

    def recheck(self, key: Key, at: datetime | None) -> None:
        """Reconcile `key` again at `at` (a retry, the next poll, the next wave); None: no need."""
        with self._recheck_guard:
            self._failures.pop(key, None)
            if at is None:
                self._rechecks.pop(key, None)
            else:
                self._rechecks[key] = at

    def retry_later(self, key: Key) -> float:
        """After a transient failure: reconcile again after 5 s, doubling with each failure in a row, up to
        5 minutes; the delay chosen."""
        with self._recheck_guard:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
            delay = min(_MAX_RETRY_DELAY, _FIRST_RETRY_DELAY * 2.0**failures)
            self._rechecks[key] = datetime.now(UTC) + timedelta(seconds=delay)
            return delay

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


def _lease_namespace(settings: Settings) -> str:
    """SERVICEBUILD_LEASE_NAMESPACE, else the service account's namespace in a Pod, else `default`: the
    operator's own namespace, where the Deployment sets it; the builder pools' CAs live there too."""
    if settings.lease_namespace:
        return settings.lease_namespace
    with contextlib.suppress(OSError):
        return _SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    return "default"


def _reconcile(runtime: Runtime, key: Key) -> tuple[Key, ...]:
    """Reconcile the ServiceBuild as it is now, under its lock; return the waiting builds it lets start.

    Every trigger reads the object afresh: a body from an event queued behind a newer change would
    otherwise start the build of a superseded generation and stop the current one.
    """
    with runtime.lock(key):
        body = runtime.kube.get_servicebuild(*key)
        if body is None:
            runtime.forget(key)
            return runtime.reconciler.forget(key)
        result = runtime.reconciler.reconcile(parse_servicebuild(body), whole_seconds(datetime.now(UTC)))
        runtime.recheck(key, result.recheck_at)
        return result.wake


_GATEWAY_ERRORS = (KubeError, RegistryError, GitError)
UNEXPECTED = "Unexpected"
"""The error kind of a reconcile failing otherwise than by a gateway's error: a bug."""


def _counted_reconcile(runtime: Runtime, key: Key) -> tuple[Key, ...]:
    """`_reconcile`, its failures counted by kind: the gateway error's class, or `Unexpected`."""
    try:
        return _reconcile(runtime, key)
    except NotLeadingError:
        raise
    except Exception as exc:
        gateway = isinstance(exc, _GATEWAY_ERRORS)
        runtime.reconciler.metrics.reconcile_failed(type(exc).__name__ if gateway else UNEXPECTED)
        raise


def _reconcile_quietly(runtime: Runtime, key: Key) -> None:
    """Reconcile, and the builds that it lets start; a transient error is retried later (with backoff),
    others are logged and wait for the next change."""
    pending = [key]
    while pending:
        current = pending.pop(0)
        try:
            pending += _counted_reconcile(runtime, current)
        except NotLeadingError:
            # Not a failure of the build: again soon if this replica still leads then (a renewal came
            # late), and a new term forgets it.
            runtime.recheck(current, datetime.now(UTC) + timedelta(seconds=_FENCED_RETRY_SECONDS))
            logger.debug("ServiceBuild %s/%s is left to the leader", *current)
        except _GATEWAY_ERRORS as exc:
            fields = log_fields(*current)
            if exc.transient:
                delay = runtime.retry_later(current)
                logger.warning(
                    "Reconciling ServiceBuild %s/%s failed, retrying in %gs: %s",
                    *current,
                    delay,
                    exc,
                    extra=fields,
                )
            else:
                logger.error("Reconciling ServiceBuild %s/%s failed: %s", *current, exc, extra=fields)  # noqa: TRY400 - the message says it all
        except Exception:
            # The resync and the Job watch serve every ServiceBuild: one object's bug must not stop them.
            logger.exception(
                "Reconciling ServiceBuild %s/%s failed unexpectedly", *current, extra=log_fields(*current)
            )


def _acting(memo: kopf.Memo, **_: Any) -> bool:
    """Only the leader handles events; Kopf calls it on its event loop, before any work."""
    runtime: Runtime | None = memo.get("runtime")
    return runtime is not None and runtime.may_act()


@kopf.on.event(GROUP, VERSION, PLURAL, when=_acting)
async def servicebuild_event(
    type: str | None,  # noqa: A002 - Kopf's name
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """A ServiceBuild appeared, changed (its spec, or an annotation asking for a build or announcing a
    push) or went; a change of its status alone is the operator's own write and no news.

    The reconcile is queued, by key, not run here: thousands of ServiceBuilds arriving together (a start
    among them) would otherwise each hold a Kopf worker with its event until a thread is free for it, and
    that peak stays in the process's memory long after.
    """
    if namespace is None:  # the resource is namespaced; Kopf passes None only for cluster-scoped ones
        return
    runtime: Runtime = memo.runtime
    key = (namespace, name)
    if type == "DELETED":
        # Jobs go with their owner through garbage collection; a build slot or queue place is ours to drop.
        runtime.forget(key)
        for woken in await asyncio.to_thread(runtime.reconciler.forget, key):
            runtime.enqueue(woken)
        return
    if runtime.noticed(key, *_news(body.metadata)):
        runtime.enqueue(key)


async def _reconcile_queued_forever(runtime: Runtime) -> None:
    """One of SERVICEBUILD_WORKERS consumers of the ServiceBuilds' queue. A key queued before this replica
    stopped leading is dropped: a new term reconciles every ServiceBuild anyway."""
    while True:
        key = await runtime.next_queued()
        if runtime.may_act():
            await asyncio.to_thread(_reconcile_quietly, runtime, key)


def _reconcile_pool(runtime: Runtime, key: Key) -> None:
    """Reconcile a BuilderPool under its lock; a gateway error is logged and the next trigger (an event of
    its daemon, the pool resync) tries again."""
    if runtime.pools is None:
        return
    # Pools share the locks with ServiceBuilds under a key no ServiceBuild name can have (no `/`).
    with runtime.lock((key[0], f"{POOL_PLURAL}/{key[1]}")):
        try:
            runtime.pools.reconcile(key, whole_seconds(datetime.now(UTC)))
        except NotLeadingError:
            logger.debug("BuilderPool %s/%s is left to the leader", *key)
        except KubeError as exc:
            logger.warning("Reconciling BuilderPool %s/%s failed: %s", *key, exc)


@kopf.on.event(GROUP, VERSION, POOL_PLURAL, when=_acting)
def builderpool_event(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """A BuilderPool appeared, changed or went (its CA Secret in the operator's namespace goes with it)."""
    if namespace is not None:
        _reconcile_pool(memo.runtime, (namespace, name))


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_BUILDERPOOL: kopf.PRESENT}, when=_acting)
def pool_deployment_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A pool's daemon Deployment changed: its availability is the pool's Ready."""
    _reconcile_pool_of(memo.runtime, body)


@kopf.on.event("apps", "v1", "statefulsets", labels={LABEL_BUILDERPOOL: kopf.PRESENT}, when=_acting)
def pool_statefulset_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A pool's daemon StatefulSet changed: its availability is the pool's Ready."""
    _reconcile_pool_of(memo.runtime, body)


def _reconcile_pool_of(runtime: Runtime, body: kopf.Body) -> None:
    pool = body.metadata.labels.get(LABEL_BUILDERPOOL)
    if body.metadata.namespace is not None and pool is not None:
        _reconcile_pool(runtime, (body.metadata.namespace, pool))


async def _resync_pools_forever(runtime: Runtime) -> None:
    """Reconcile every BuilderPool now and then: an event missed, and certificates due for renewal."""
    while True:
        await asyncio.sleep(runtime.settings.resync_seconds)
        if not runtime.may_act():
            continue
        try:
            bodies = await asyncio.to_thread(runtime.kube.list_builderpools, runtime.settings.namespaces)
        except KubeError as exc:
            logger.warning("Listing BuilderPools for the resync failed: %s", exc)
            continue
        for body in bodies:
            meta = body.get("metadata") or {}
            key = (str(meta.get("namespace")), str(meta.get("name")))
            await asyncio.to_thread(_reconcile_pool, runtime, key)


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


def _acting_on_context(**kwargs: Any) -> bool:
    return _acting(**kwargs) and _builds_from(**kwargs)


@kopf.on.event("", "v1", "configmaps", when=_acting_on_context)
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


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY}, when=_acting)
def build_job_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A build Job changed: its ServiceBuild may have news."""
    owner = _owner_name(body)
    if body.metadata.namespace is not None and owner is not None:
        _reconcile_quietly(memo.runtime, (body.metadata.namespace, owner))


def _build_container_ended(body: kopf.Body, **_: Any) -> bool:
    pod = parse_pod(body)
    container = pod.container(BUILD_CONTAINER) if pod is not None else None
    return container is not None and container.state == "terminated"


def _acting_on_ended_build(**kwargs: Any) -> bool:
    return _acting(**kwargs) and _build_container_ended(**kwargs)


@kopf.on.event("", "v1", "pods", labels={LABEL_MANAGED_BY: MANAGED_BY}, when=_acting_on_ended_build)
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
    """The safety tick: reconcile every ServiceBuild now and then, in case an event was missed. Polled
    revisions and retries have their own times (`_recheck_forever`), base images their own task."""
    while True:
        await asyncio.sleep(runtime.settings.resync_seconds)
        if runtime.may_act():
            await _resync(runtime, digests)


async def _resync(runtime: Runtime, digests: kopf.Index[tuple[str | None, str], str]) -> None:
    """One tick: one LIST, then a reconcile of each ServiceBuild not idle. An object whose build ended and
    whose sources did not change since (its generation, its ConfigMap's content as the watch saw it, a
    rebuild request) is passed by without a request.

    The LIST is read a page at a time and only keys are kept, and nothing outlives the tick: otherwise the
    task holds the last LIST's bodies, thousands of them, while it sleeps until the next.
    """
    tracked = runtime.reconciler.tracked()
    listed: set[Key] = set()
    due: list[Key] = []
    pages = runtime.kube.servicebuild_pages(runtime.settings.namespaces)
    try:
        while (page := await asyncio.to_thread(next, pages, None)) is not None:
            for servicebuild in map(parse_servicebuild, page):
                key = servicebuild.metadata.key
                listed.add(key)
                if key in tracked or not plan.idle(servicebuild, _watched(servicebuild, digests)):
                    due.append(key)
    except KubeError as exc:
        logger.warning("Listing ServiceBuilds for the resync failed: %s", exc)
        return
    # A ServiceBuild deleted while the operator was not looking still holds its build slot.
    for key in [*due, *sorted(tracked - listed)]:
        await asyncio.to_thread(_reconcile_quietly, runtime, key)
    # Whatever burst came since the last tick (many ServiceBuilds created together) has been handled by now.
    await asyncio.to_thread(runtime.trim_memory)


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
        if not runtime.may_act():
            continue
        for key in runtime.due_rechecks(datetime.now(UTC)):
            await asyncio.to_thread(_reconcile_quietly, runtime, key)


async def _check_base_images_forever(runtime: Runtime) -> None:
    """Every SERVICEBUILD_BASE_IMAGE_POLL_INTERVAL (give or take a tenth), ask the registries for the base
    images of the ServiceBuilds following them; rebuild those whose images changed."""
    interval = runtime.settings.base_image_poll_interval.total_seconds()
    while True:
        await asyncio.sleep(interval * random.uniform(0.9, 1.1))  # noqa: S311 - jitter, not a secret
        if runtime.may_act():
            await _check_base_images(runtime)


async def _check_base_images(runtime: Runtime) -> None:
    """One check; its ServiceBuilds are not kept until the next (as `_resync`'s are not)."""
    try:
        bodies = await asyncio.to_thread(runtime.kube.list_servicebuilds, runtime.settings.namespaces)
    except KubeError as exc:
        logger.warning("Listing ServiceBuilds for the base image check failed: %s", exc)
        return
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


async def _begin_term(runtime: Runtime) -> None:
    """Begin acting: count the builds that run, then reconcile every ServiceBuild once, as a restart would.

    Until the Jobs are counted nothing acts, or a build could start past the limits. The ServiceBuilds are
    read a page at a time and only their keys kept, as the resync reads them.
    """
    while True:
        try:
            jobs = await asyncio.to_thread(runtime.kube.list_build_jobs, runtime.settings.namespaces)
            break
        except KubeError as exc:
            logger.warning("Counting the running builds failed, trying again: %s", exc)
            await asyncio.sleep(_FIRST_RETRY_DELAY)
    runtime.begin_term(jobs)
    due: list[Key] = []  # kept across a failed listing: what was noticed is not news the second time
    while True:
        pages = runtime.kube.servicebuild_pages(runtime.settings.namespaces)
        try:
            while (page := await asyncio.to_thread(next, pages, None)) is not None:
                due += [key for key, body in map(_keyed, page) if runtime.noticed(key, *_news(body))]
            break
        except KubeError as exc:
            logger.warning("Listing the ServiceBuilds failed, trying again: %s", exc)
            await asyncio.sleep(_FIRST_RETRY_DELAY)
    for key in due:
        await asyncio.to_thread(_reconcile_quietly, runtime, key)
    await asyncio.to_thread(memory.release_after_burst, runtime.trim_memory)


def _keyed(body: Mapping[str, Any]) -> tuple[Key, Mapping[str, Any]]:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace")), str(meta.get("name"))), meta


def _news(meta: Mapping[str, Any]) -> tuple[int, Mapping[str, str]]:
    """What makes a ServiceBuild's event news: its generation and annotations."""
    return int(meta.get("generation") or 0), meta.get("annotations") or {}


def _terms(runtime: Runtime) -> tuple[Callable[[], Awaitable[None]], Callable[[], None]]:
    """What leading begins and ends: a term's first sweep runs beside the election, which must go on
    renewing meanwhile; losing the lease stops acting at once and abandons the sweep."""
    sweeps: list[asyncio.Task[None]] = []

    async def elected() -> None:
        sweeps.append(asyncio.create_task(_begin_term(runtime), name="servicebuild-term"))

    def deposed() -> None:
        runtime.acting = False
        while sweeps:
            sweeps.pop().cancel()
        runtime.reconciler.end_term()

    return elected, deposed


@kopf.on.event(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", when=lambda name, **_: name == _CRD_NAME
)
def servicebuild_crd_event(memo: kopf.Memo, **_: Any) -> None:
    """Kopf runs no handler before every indexed watch (ServiceBuilds, ConfigMaps) has listed what exists;
    the ServiceBuild CRD's own event, which always comes, says that moment has passed: ready."""
    runtime: Runtime = memo.runtime
    runtime.ready = True


@kopf.on.startup()
async def start(
    memo: kopf.Memo,
    context_digests: kopf.Index[tuple[str | None, str], str] | None = None,
    polled_sources: kopf.Index[str, tuple[str | None, str, str, str | None]] | None = None,
    **_: Any,
) -> None:
    """Open the clients, the metrics server and the webhook receiver, then the periodic tasks; the election
    begins the leader's term (or, without leader election, it begins at once)."""
    settings: Settings = memo.settings
    if context_digests is None or polled_sources is None:  # Kopf passes every index, filled as watches run
        raise kopf.PermanentError("an index is missing")
    # The reconciles run in the loop's default executor (asyncio.to_thread): SERVICEBUILD_WORKERS threads.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(settings.workers, thread_name_prefix="servicebuild")
    )
    runtime = await asyncio.to_thread(Runtime.open, settings, asyncio.get_running_loop())
    memo.servers = [
        server
        for server in (
            _metrics_server(settings, runtime),
            WebhookServer.from_settings(settings, _push_recorder(runtime, polled_sources)),
        )
        if server is not None
    ]
    for server in memo.servers:
        try:
            await server.start()
        except (WebhookSecretError, OSError) as exc:
            await _stop_servers(memo.servers)
            runtime.close()
            raise kopf.PermanentError(f"The {_SERVER_NAMES[type(server)]} cannot start: {exc}") from exc
    memo.runtime = runtime
    tasks = [
        *(
            asyncio.create_task(_reconcile_queued_forever(runtime), name=f"servicebuild-queue-{number}")
            for number in range(settings.workers)
        ),
        asyncio.create_task(_resync_forever(runtime, context_digests), name="servicebuild-resync"),
        asyncio.create_task(_recheck_forever(runtime), name="servicebuild-rechecks"),
        asyncio.create_task(_check_base_images_forever(runtime), name="servicebuild-base-images"),
        asyncio.create_task(_resync_pools_forever(runtime), name="servicebuild-pool-resync"),
    ]
    elected, deposed = _terms(runtime)
    if runtime.leadership is None:
        await elected()
    else:
        tasks.append(
            asyncio.create_task(runtime.leadership.run(elected, deposed), name="servicebuild-election")
        )
    memo.tasks = tasks
    memo.deposed = deposed


_SERVER_NAMES: dict[type, str] = {MetricsServer: "metrics server", WebhookServer: "webhook receiver"}


def _metrics_server(settings: Settings, runtime: Runtime) -> MetricsServer | None:
    """The metrics server (and readiness probe) the settings ask for; None when SERVICEBUILD_METRICS_ADDRESS
    is empty."""
    listen = settings.metrics_listen()
    if listen is None:
        return None
    host, port = listen
    return MetricsServer(runtime.reconciler.metrics.registry, lambda: runtime.ready, host, port)


async def _stop_servers(servers: list[MetricsServer | WebhookServer]) -> None:
    for server in servers:
        await server.stop()


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Stop acting and the periodic tasks, hand the lease over, stop the servers, close the clients."""
    deposed: Callable[[], None] | None = memo.get("deposed")
    if deposed is not None:
        deposed()
    tasks: list[asyncio.Task[None]] = memo.get("tasks") or []
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    runtime: Runtime | None = memo.get("runtime")
    if runtime is not None and runtime.leadership is not None:
        try:
            await asyncio.to_thread(runtime.leadership.release)
        except KubeError as exc:
            logger.warning("Handing the lease over failed; a standby takes over when it expires: %s", exc)
    await _stop_servers(memo.get("servers") or [])
    if runtime is not None:
        await asyncio.to_thread(runtime.close)
