"""What the benchmarks share: the real operator process against KMock's emulator, a real registry and
the kubelet stand-in, and the operator's requests, CPU and memory as seen from outside.

The operator is `python -m servicebuild` in its own process, pointed at the emulator by a kubeconfig
with a bearer token of its own: every request carrying that token is the operator's (the harness's own
requests carry none), and `/proc/<pid>` of that process gives its CPU time and memory, apart from the
emulator's, which runs in the bench process. Nothing here knows how the operator works inside.
"""

import asyncio
import contextlib
import importlib.metadata
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_ROOT / "tests"), str(_ROOT / "tests" / "integration")]

import aiohttp.web  # noqa: E402
import attrs  # noqa: E402
import kmock  # noqa: E402
from cluster import (  # noqa: E402
    BUILDERPOOLS,
    CONFIGMAPS,
    DEPLOYMENTS,
    JOBS,
    PODS,
    SECRETS,
    SERVICEBUILDS,
    ApiServer,
    Cluster,
    _matches,
    condition,
)
from kubelet import Behaviour, Kubelet  # noqa: E402
from operator_process import OperatorProcess, operator_environment  # noqa: E402

from servicebuild.config import Settings  # noqa: E402
from support.oci_registry import RunningRegistry, start_registry  # noqa: E402

__all__ = [
    "BUILDERPOOLS",
    "CONFIGMAPS",
    "DEPLOYMENTS",
    "JOBS",
    "PODS",
    "SECRETS",
    "SERVICEBUILDS",
    "TOKEN",
    "WRITE_VERBS",
    "Behaviour",
    "BenchCluster",
    "BenchEmulator",
    "BenchKubelet",
    "Cluster",
    "OperatorProcess",
    "ProcessSample",
    "RunningRegistry",
    "Stage",
    "background",
    "condition",
    "create_service",
    "default_resync",
    "machine",
    "owner_name",
    "print_requests",
    "running_stage",
    "sample",
    "tally",
    "wait_until_quiet",
    "wait_until_watching",
    "writes_of",
]

TOKEN = "bench-token"  # noqa: S105 - the emulator accepts any token; it tells the operator's requests apart
"""The operator's bearer token: requests carrying it are the operator's, the rest are the harness's."""

DOCKERFILE = """\
FROM alpine:3.20 AS build
COPY main.c .
RUN cc -o /app main.c
FROM scratch
COPY --from=build /app /app
"""

WRITE_VERBS = frozenset({"create", "patch", "update", "delete"})
"""The verbs that change something in the API (an Event created counts: it is a write to etcd)."""

_WATCHED = (SERVICEBUILDS, JOBS, CONFIGMAPS)
_VERBS = {
    kmock.action.WATCH: "watch",
    kmock.action.LIST: "list",
    kmock.action.FETCH: "get",
    kmock.action.CREATE: "create",
    kmock.action.DELETE: "delete",
}


@attrs.define(kw_only=True)
class BenchEmulator(ApiServer):
    """The tests' emulator, made fit for thousands of objects and requests; it also counts requests.

    KMock 0.8 is built for tests: it matches each request against its reactions by scanning every
    request received so far, and finds an object by scanning all objects. Both grow with the run,
    and unchanged the emulator, not the operator, would set the pace after a few thousand requests.
    Here the request log keeps only the requests not matched yet (matching looks for the request
    in it), an object is found by its key, and the objects of a resource by an index. What the
    API answers is unchanged.

    And like a real API server, a watch resumes from a resourceVersion and sends bookmarks (see
    `_serve_watch`); the resourceVersions of writes are the tests' ApiServer's.
    """

    operator_requests: Counter[str] = attrs.field(factory=Counter, init=False)
    """Per `verb resource`, the requests carrying the operator's token."""
    on_operator_request: list[Callable[[str, float], None]] = attrs.field(factory=list, init=False)
    """Called with `verb resource` and the time (monotonic) as each of the operator's requests arrives."""
    on_answered: list[Callable[[kmock.Request, float], None]] = attrs.field(factory=list, init=False)
    """Called with every request (the operator's and the harness's) once answered, and the time."""
    created_jobs: asyncio.Queue[dict[str, Any]] = attrs.field(factory=asyncio.Queue, init=False)
    """Every Job created, as stored, for the kubelet stand-in."""
    job_created_at: dict[tuple[str, str], float] = attrs.field(factory=dict, init=False)
    """When each Job was created (monotonic clock)."""
    _index: dict[tuple[Any, ...], dict[str | None, dict[str, kmock.Object]]] = attrs.field(
        factory=dict, init=False
    )
    """Per resource (group, version, plural), per namespace, per name: the objects ever created."""
    bookmark_seconds: float = 30.0
    """A watch that sent nothing for this long sends a BOOKMARK (the API server: about every minute)."""
    _unmatched: set[int] = attrs.field(factory=set, init=False)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if _is_operators(request):
            what, now = _what(request), time.monotonic()
            self.operator_requests[what] += 1
            for hook in self.on_operator_request:
                hook(what, now)
        # KMock has just appended this request to its log and awaited nothing since.
        self._unmatched.add(id(request))
        self._requests[:] = [logged for logged in self._requests if id(logged) in self._unmatched]
        try:
            response = await super()._handle(request)
        finally:
            self._unmatched.discard(id(request))
        if request.action == kmock.action.CREATE and request.resource is not None:
            created = self._object(request)
            metadata = created.raw["metadata"]
            resource = (request.resource.group, request.resource.version, request.resource.plural)
            self._index.setdefault(resource, {}).setdefault(metadata.get("namespace"), {})[
                metadata["name"]
            ] = created
            if request.resource == JOBS:
                self.job_created_at[metadata["namespace"], metadata["name"]] = time.monotonic()
                self.created_jobs.put_nowait(created.raw)
        if self.on_answered and response.status < 400:
            now = time.monotonic()
            for answered in self.on_answered:
                answered(request, now)
        return response

    def objects_of(self, resource: kmock.resource, namespace: str | None = None) -> list[dict[str, Any]]:
        """The objects of a resource (in a namespace, or in all), without the deleted ones."""
        by_namespace = self._index.get((resource.group, resource.version, resource.plural), {})
        namespaces = [by_namespace.get(namespace, {})] if namespace is not None else by_namespace.values()
        return [obj.raw for objects in namespaces for obj in objects.values() if not obj.deleted]

    def stored(self, resource: kmock.resource, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as stored now, or None (found by its key, not by a scan)."""
        key = (resource, namespace, name)
        if key not in self.objects:
            return None
        obj = self.objects[key]
        return None if obj.deleted else obj.raw

    def _object(self, request: kmock.Request) -> kmock.Object:
        """The object a request is about, by its key (KMock scans all objects for it)."""
        metadata = request.data.get("metadata", {}) if request.action == kmock.action.CREATE else {}
        name = request.name or metadata.get("name")
        if request.resource is None or name is None:
            raise kmock.KubernetesObjectNotFoundError
        key = (request.resource, request.namespace or metadata.get("namespace"), name)
        if key not in self.objects:
            raise kmock.KubernetesObjectNotFoundError
        return self.objects[key]

    def _stored(self, request: kmock.Request) -> dict[str, Any]:
        obj = self._object(request)
        if obj.deleted:
            raise kmock.KubernetesObjectNotFoundError
        return obj.raw

    # The fallback reactions: called once KMock has matched the request, so it may leave the log.

    async def _serve_fetch(self, request: kmock.Request) -> dict[str, Any]:
        self._unmatched.discard(id(request))
        return self._stored(request)

    async def _serve_create(self, request: kmock.Request) -> dict[str, Any]:
        self._unmatched.discard(id(request))
        return self._stored(request)

    async def _serve_update(self, request: kmock.Request) -> dict[str, Any]:
        self._unmatched.discard(id(request))
        return dict(self._object(request).last.raw)

    async def _serve_delete(self, request: kmock.Request) -> dict[str, Any]:
        self._unmatched.discard(id(request))
        return dict(self._object(request).last.raw)

    async def _serve_list(self, request: kmock.Request) -> Any:
        self._unmatched.discard(id(request))
        resource = request.resource
        if resource is None or (resource.group, resource.version, resource.plural) not in self._index:
            return await super()._serve_list(request)
        # From the index: KMock scans every object of every resource for a list.
        return self.page_of(self.objects_of(resource, request.namespace), request)

    def page_of(self, items: list[dict[str, Any]], request: kmock.Request) -> dict[str, Any]:
        """A LIST's answer a page at a time, as the API server honours `limit` and `continue` (KMock
        sends every item whatever the limit). The token is an offset here, which holds while no object
        of the list is deleted between pages (the idle bench deletes none then)."""
        limit = int(request.params.get("limit") or 0)
        start = int(request.params.get("continue") or 0)
        end = start + limit if limit else len(items)
        metadata = {"resourceVersion": self.version()}
        if end < len(items):
            metadata["continue"] = str(end)
        return {"metadata": metadata, "items": items[start:end]}

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        """A watch as the API server serves one: resumed from a resourceVersion, and kept alive with
        bookmarks.

        KMock sends every object again as ADDED on every watch, whatever resourceVersion it resumes
        from, and never sends a bookmark. Kopf resumes a watch (from the last version it saw) when
        its client timeout ends it, every 5 minutes here, and when no event came for 70 s: with KMock
        as it is, an idle operator would spend its time handling every object again. Here a watch
        from a resourceVersion sends only the objects written since (as MODIFIED; deletions in
        between are not sent again), and one that sent nothing for `bookmark_seconds` sends a
        BOOKMARK (the API server: about once a minute).
        """
        self._unmatched.discard(id(request))  # a watch lasts minutes: keep it out of the log
        yield b""  # the headers: the stream is open
        resource = request.resource
        if resource is None:
            raise kmock.KubernetesResourceNotFoundError
        since_text = request.params.get("resourceVersion") or ""
        since = int(since_text) if since_text.isdigit() else None
        bus = self._buses[resource]
        async with self._lock:  # KMock's: a write and its event happen under it
            changed = [
                obj
                for obj in self.objects_of(resource, request.namespace)
                if since is None or int(obj["metadata"].get("resourceVersion") or 0) > since
            ]
            mark = await bus.mark()
        try:
            for obj in changed:
                if request.name is None or obj["metadata"].get("name") == request.name:
                    yield {"type": "ADDED" if since is None else "MODIFIED", "object": obj}
            # Closed here when the client goes, before the mark they read from goes.
            async with contextlib.aclosing(self._with_bookmarks(request, bus.stream(since=mark))) as items:
                async for item in items:
                    yield item
        finally:
            await bus.unmark(mark)

    async def _with_bookmarks(
        self, request: kmock.Request, events: AsyncIterator[Any]
    ) -> AsyncGenerator[Any, None]:
        """The events of this resource for this request, and a bookmark whenever none came for a while."""
        items: asyncio.Queue[Any] = asyncio.Queue()

        async def pump() -> None:
            async for event in events:
                metadata = event.get("object", {}).get("metadata", {})
                namespace_ok = request.namespace is None or metadata.get("namespace") == request.namespace
                if namespace_ok and (request.name is None or metadata.get("name") == request.name):
                    items.put_nowait(event)

        pumping = asyncio.create_task(pump())
        try:
            while True:
                try:
                    item = await asyncio.wait_for(items.get(), timeout=self.bookmark_seconds)
                except TimeoutError:
                    if pumping.done():
                        pumping.result()  # its error, if any
                        return
                    item = {"type": "BOOKMARK", "object": self._bookmark(request)}
                yield item
        finally:
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumping

    def _bookmark(self, request: kmock.Request) -> dict[str, Any]:
        resource = request.resource
        api_version = (
            "" if resource is None else "/".join(part for part in (resource.group, resource.version) if part)
        )
        kind = "" if resource is None or resource not in self.resources else self.resources[resource].kind
        return {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"resourceVersion": self.version()},
        }


class BenchCluster(Cluster):
    """The tests' Cluster, with label-selector lists served from the emulator's index."""

    def __init__(self, emulator: BenchEmulator) -> None:
        super().__init__(emulator)
        self.emulator = emulator

    def _list_with_selector(self, request: kmock.Request) -> dict[str, Any]:
        selector = request.params.get("labelSelector")
        if request.resource is None:
            raise kmock.KubernetesResourceNotFoundError
        items = [
            obj
            for obj in self.emulator.objects_of(request.resource, request.namespace)
            if _matches(obj.get("metadata", {}).get("labels") or {}, selector)
        ]
        return self.emulator.page_of(items, request)


@dataclass
class BenchKubelet(Kubelet):
    """The tests' kubelet stand-in, but every Job runs at once for `build_seconds`.

    The tests' one handles Jobs one after another, which would make the kubelet, not the operator,
    the bottleneck with hundreds of Jobs. Jobs come from the emulator as they are created. What it
    writes, and when the Job controller completes the Job (`job_completion_delay` after the
    container's end), is the tests' stand-in's.
    """

    jobs: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    build_seconds: float = 1.0
    outcome: Behaviour = "succeed"
    finished: int = 0
    running: Counter[str] = field(default_factory=Counter)
    """Per namespace, the Jobs created and not finished yet."""
    peak_running: int = 0
    peak_running_in_a_namespace: int = 0
    errors: list[str] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def run(self) -> None:
        while True:
            job = await self.jobs.get()
            task = asyncio.create_task(self._build(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _build(self, job: dict[str, Any]) -> None:
        namespace = job["metadata"]["namespace"]
        self.running[namespace] += 1
        self.peak_running = max(self.peak_running, self.running.total())
        self.peak_running_in_a_namespace = max(self.peak_running_in_a_namespace, self.running[namespace])
        try:
            await self._set_running(job)
            await asyncio.sleep(self.build_seconds)
            await self._finish(job, self.outcome)
            self.finished += 1
        except Exception as exc:  # noqa: BLE001 - counted and printed; one Job must not stop the rest
            self.errors.append(f"{job['metadata']['name']}: {type(exc).__name__}: {exc}")
        finally:
            self.running[namespace] -= 1

    async def stop(self) -> None:
        for task in [*self._tasks, *self.completions]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _verb(request: kmock.Request) -> str:
    if request.action in _VERBS:
        return _VERBS[request.action]
    return {"PATCH": "patch", "PUT": "update"}.get(str(request.method.value), str(request.method.value))


def _what(request: kmock.Request) -> str:
    """`verb resource[/subresource]`, or `verb path` for discovery and other non-resource requests; a
    LIST's second and later pages are `list resource (next page)`."""
    if request.resource is None or not request.resource.plural:
        return f"{_verb(request)} {request.url.path}"
    subresource = f"/{request.subresource}" if request.subresource else ""
    next_page = " (next page)" if request.params.get("continue") else ""
    return f"{_verb(request)} {request.resource.plural}{subresource}{next_page}"


def _is_operators(request: kmock.Request) -> bool:
    return request.headers.get("Authorization", "") == f"Bearer {TOKEN}"


async def create_service(
    cluster: Cluster, registry: RunningRegistry, namespace: str, name: str, *, context: bool = True
) -> None:
    """A ServiceBuild that pushes to the registry, building from its own ConfigMap (a C program, its
    context unlike any other's); `context=False` leaves the ConfigMap out, so the operator stalls it."""
    if context:
        await cluster.create_configmap(
            namespace,
            f"{name}-context",
            {"Dockerfile": DOCKERFILE, "main.c": f"/* {name} */ int main(){{return 0;}}"},
        )
    spec = {
        "source": {"configMap": {"name": f"{name}-context"}},
        "output": {"image": f"{registry.host}/{namespace}/{name}:1.0.0"},
    }
    await cluster.create_servicebuild(namespace, name, spec)


def background(what: str) -> bool:
    """Whether a `verb resource` request is no work on the objects: a watch, or the leader election's
    Lease, read and renewed every couple of seconds whatever there is to do."""
    verb, _, resource = what.partition(" ")
    return verb == "watch" or resource.startswith("leases")


def writes_of(requests: Mapping[str, int]) -> int:
    """How many of these `verb resource` counts are writes to objects (the Lease's renewals left out)."""
    return sum(
        number
        for what, number in requests.items()
        if what.split(" ", 1)[0] in WRITE_VERBS and not background(what)
    )


def print_requests(requests: Counter[str], divisor: float, per: str, indent: str = "     ") -> None:
    """The requests by verb and resource, most frequent first, with their number per `per`."""
    for what, number in requests.most_common():
        print(f"{indent}{what:<36} {number:>7}  {number / divisor:7.2f} per {per}")


def owner_name(body: Mapping[str, Any]) -> str | None:
    """The ServiceBuild that owns this object (a build Job), by its ownerReferences."""
    for owner in body.get("metadata", {}).get("ownerReferences") or []:
        if owner.get("kind") == "ServiceBuild":
            return str(owner.get("name"))
    return None


@dataclass(frozen=True)
class ProcessSample:
    """One look at a process from outside, at a monotonic time."""

    at: float
    cpu_seconds: float
    """User plus system CPU time so far, from /proc/<pid>/stat."""
    rss_kib: int
    peak_rss_kib: int
    """VmHWM: the most resident memory so far."""


def _proc_status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sample(pid: int) -> ProcessSample:
    return ProcessSample(
        time.monotonic(), _cpu_seconds(pid), _proc_status_kib(pid, "VmRSS"), _proc_status_kib(pid, "VmHWM")
    )


def default_resync() -> float:
    """The operator's resync period when SERVICEBUILD_RESYNC_SECONDS is not set."""
    default: float = Settings.model_fields["resync_seconds"].default
    return default


def machine() -> str:
    """CPUs, CPU model, Python and the versions that matter, for the printed figures."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in ("kopf", "kmock"))
    return f"{len(os.sched_getaffinity(0))} CPUs ({model}), Python {platform.python_version()}, {versions}"


def tally(emulator: BenchEmulator) -> Counter[str]:
    """Ready, Stalled, or the phase of each ServiceBuild."""
    result: Counter[str] = Counter()
    for body in emulator.objects_of(SERVICEBUILDS):
        ready, stalled = condition(body, "Ready"), condition(body, "Stalled")
        if ready and ready["status"] == "True":
            result["Ready"] += 1
        elif stalled and stalled["status"] == "True":
            result["Stalled"] += 1
        else:
            result[(body.get("status") or {}).get("phase") or "(no status)"] += 1
    return result


@dataclass
class Stage:
    """What a scenario runs against: the emulator and its helpers, a registry, and the operator."""

    emulator: BenchEmulator
    cluster: BenchCluster
    kubelet: BenchKubelet
    registry: RunningRegistry
    operator: OperatorProcess
    server_url: str

    @property
    def pid(self) -> int:
        assert self.operator.process is not None  # noqa: S101 - started by the scenario; narrows the type
        return self.operator.process.pid


def operator_env(
    server_url: str, registry: RunningRegistry, settings: Mapping[str, str], tmp: Path
) -> dict[str, str]:
    """The environment of `python -m servicebuild`: a kubeconfig with the operator's token, the
    registry reachable over plain HTTP, no debug log, and `settings` (SERVICEBUILD_* variables)."""
    env = operator_environment(server_url, TOKEN, tmp)
    env.update(
        SERVICEBUILD_INSECURE_REGISTRIES=registry.host, SERVICEBUILD_VERBOSE="false", PYTHONUNBUFFERED="1"
    )
    env.update(settings)
    return env


@contextlib.asynccontextmanager
async def running_stage(
    tmp: Path,
    settings: Mapping[str, str],
    *,
    build_seconds: float = 1.0,
    outcome: Behaviour = "succeed",
    job_completion_delay: float | None = None,
) -> AsyncIterator[Stage]:
    """The registry, the emulator serving HTTP, the kubelet stand-in running, and the operator
    configured but not started (`stage.operator.start()`). On the way out everything stops; the
    operator's log tail is printed when it exited by itself or the kubelet stand-in hit errors."""
    (tmp / "registry").mkdir()
    registry = start_registry(tmp / "registry")
    try:
        async with BenchEmulator() as emulator, kmock.Server(emulator) as server:
            cluster = BenchCluster(emulator)
            kubelet = BenchKubelet(
                cluster, jobs=emulator.created_jobs, build_seconds=build_seconds, outcome=outcome
            )
            if job_completion_delay is not None:
                kubelet.job_completion_delay = job_completion_delay
            kubelet_task = asyncio.create_task(kubelet.run())
            operator = OperatorProcess(
                operator_env(str(server.url), registry, settings, tmp), tmp / "operator.log"
            )
            stage = Stage(emulator, cluster, kubelet, registry, operator, str(server.url))
            crashed = False
            try:
                yield stage
            finally:
                crashed = operator.process is not None and not operator.running
                # In a thread: the emulator runs on this event loop and answers the operator while it stops.
                await asyncio.to_thread(operator.stop)
                kubelet_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await kubelet_task
                await kubelet.stop()
                if crashed or kubelet.errors:
                    print(f"--- operator log (tail) ---\n{operator.log[-6000:]}", file=sys.stderr)
                    for error in kubelet.errors[:10]:
                        print(f"kubelet: {error}", file=sys.stderr)
    finally:
        registry.stop()


async def wait_until_watching(
    emulator: BenchEmulator,
    operator: OperatorProcess,
    within: float = 60,
    since: Mapping[str, int] | None = None,
) -> None:
    """Until the operator watches what it reacts to: then it sees every object applied next. `since`:
    the operator's requests counted before it (re)started."""
    deadline = time.monotonic() + within
    before = since or {}
    while time.monotonic() < deadline:
        if not operator.running:
            raise RuntimeError(f"the operator exited:\n{operator.log[-4000:]}")
        watches = (f"watch {resource.plural}" for resource in _WATCHED)
        if all(emulator.operator_requests[watch] > before.get(watch, 0) for watch in watches):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the operator started no watch within {within}s:\n{operator.log[-4000:]}")


async def wait_until_quiet(emulator: BenchEmulator, quiet_seconds: float, within: float) -> bool:
    """Until the operator has sent no request for `quiet_seconds` (watches and the Lease's renewals aside);
    False if that took over `within`."""
    deadline = time.monotonic() + within
    last = [time.monotonic()]

    def seen(what: str, at: float) -> None:
        if not background(what):
            last[0] = at

    emulator.on_operator_request.append(seen)
    try:
        while time.monotonic() - last[0] < quiet_seconds:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True
    finally:
        emulator.on_operator_request.remove(seen)
