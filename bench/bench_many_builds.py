"""Many ServiceBuilds at once: the real operator process against KMock's Kubernetes emulator.

Applies `--count` ServiceBuilds at once (concurrently; each with its own ConfigMap context, spread
over `--namespaces` namespaces) while `python -m servicebuild` runs, pointed at the emulator by a
kubeconfig. A kubelet stand-in (tests/integration/kubelet.py) plays the Job
controller and BuildKit: each build Job gets a running Pod, and `--build-seconds` later either
pushes a tiny real image to a real registry (Debian's docker-registry) and completes with BuildKit's
report (`--outcome succeed`, the default), or fails with a BuildKit log tail (`--outcome fail`).

It prints:
- the time until every build Job exists, and until every ServiceBuild is Ready (or Stalled);
- the API requests the operator sent, per build, by verb and resource;
- the operator's peak RSS (VmHWM of its process).

`--limit` and `--per-namespace` set SERVICEBUILD_MAX_RUNNING_BUILDS and
SERVICEBUILD_MAX_RUNNING_BUILDS_PER_NAMESPACE: builds over the limit wait in phase Queued, so every
Job exists only once enough earlier builds have finished. Prints figures; asserts nothing.

Run from the repository root: `python bench/bench_many_builds.py --count 500 --limit 50`.
"""

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import platform
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_ROOT / "tests"), str(_ROOT / "tests" / "integration")]

import aiohttp.web  # noqa: E402
import attrs  # noqa: E402
import kmock  # noqa: E402
from cluster import CONFIGMAPS, JOBS, SERVICEBUILDS, Cluster, _matches, condition  # noqa: E402
from kubelet import Behaviour, Kubelet  # noqa: E402
from operator_process import OperatorProcess, operator_environment  # noqa: E402

from support.oci_registry import RunningRegistry, start_registry  # noqa: E402

TOKEN = "bench-token"  # noqa: S105 - the emulator accepts any token; it tells the operator's requests apart
"""The operator's bearer token: requests carrying it are the operator's, the rest are the harness's."""

DOCKERFILE = """\
FROM alpine:3.20 AS build
COPY main.c .
RUN cc -o /app main.c
FROM scratch
COPY --from=build /app /app
"""

_WATCHED = (SERVICEBUILDS, JOBS, CONFIGMAPS)
_VERBS = {
    kmock.action.WATCH: "watch",
    kmock.action.LIST: "list",
    kmock.action.FETCH: "get",
    kmock.action.CREATE: "create",
    kmock.action.DELETE: "delete",
}


@attrs.define(kw_only=True)
class BenchEmulator(kmock.KubernetesEmulator):
    """KMock's emulator, made fit for thousands of objects and requests; it also counts requests.

    KMock 0.8 is built for tests: it matches each request against its reactions by scanning every
    request received so far, and finds an object by scanning all objects. Both grow with the run,
    and unchanged the emulator, not the operator, would set the pace after a few thousand requests.
    Here the request log keeps only the requests not matched yet (matching looks for the request
    in it), an object is found by its key, and the objects of a resource by an index. What the
    API answers is unchanged.

    And like a real API server, it gives every object a new resourceVersion on each write (the
    tests' Cluster seeds one at creation only): Kopf waits for the version its own patch returned
    before it handles the object again, and an unchanging version makes it handle stale events.
    """

    operator_requests: Counter[str] = attrs.field(factory=Counter, init=False)
    """Per `verb resource`, the requests carrying the operator's token."""
    created_jobs: asyncio.Queue[dict[str, Any]] = attrs.field(factory=asyncio.Queue, init=False)
    """Every Job created, as stored, for the kubelet stand-in."""
    job_created_at: dict[tuple[str, str], float] = attrs.field(factory=dict, init=False)
    """When each Job was created (monotonic clock)."""
    _index: dict[tuple[Any, ...], dict[str | None, dict[str, kmock.Object]]] = attrs.field(
        factory=dict, init=False
    )
    """Per resource (group, version, plural), per namespace, per name: the objects ever created."""
    _unmatched: set[int] = attrs.field(factory=set, init=False)
    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1_000_000), init=False)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if _is_operators(request):
            self.operator_requests[_what(request)] += 1
        writes = request.action == kmock.action.CREATE or (
            request.action == kmock.action.UPDATE and request.name
        )
        if writes and request.resource is not None and isinstance(request.data, dict):
            metadata = request.data.setdefault("metadata", {})
            metadata["resourceVersion"] = str(next(self._versions))
            if request.action == kmock.action.CREATE:
                metadata.setdefault("uid", str(uuid.uuid4()))
                metadata.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
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
        return response

    def objects_of(self, resource: kmock.resource, namespace: str | None = None) -> list[dict[str, Any]]:
        """The objects of a resource (in a namespace, or in all), without the deleted ones."""
        by_namespace = self._index.get((resource.group, resource.version, resource.plural), {})
        namespaces = [by_namespace.get(namespace, {})] if namespace is not None else by_namespace.values()
        return [obj.raw for objects in namespaces for obj in objects.values() if not obj.deleted]

    def _object(self, request: kmock.Request) -> kmock.Object:
        """The object a request is about, by its key (KMock scans all objects for it)."""
        metadata = request.data.get("metadata", {}) if request.action == kmock.action.CREATE else {}
        key = (
            request.resource,
            request.namespace or metadata.get("namespace"),
            request.name or metadata.get("name"),
        )
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
        return await super()._serve_list(request)

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        self._unmatched.discard(id(request))  # a watch lasts minutes: keep it out of the log
        async for item in super()._serve_watch(request):
            yield item


class BenchCluster(Cluster):
    """The tests' Cluster, with label-selector lists served from the emulator's index."""

    def __init__(self, emulator: BenchEmulator) -> None:
        super().__init__(emulator)
        self.emulator = emulator

    def _list_with_selector(self, request: kmock.Request) -> dict[str, Any]:
        selector = request.params.get("labelSelector")
        items = [
            obj
            for obj in self.emulator.objects_of(request.resource, request.namespace)
            if _matches(obj.get("metadata", {}).get("labels") or {}, selector)
        ]
        return {"metadata": {"resourceVersion": str(next(self._versions))}, "items": items}


@dataclass
class BenchKubelet(Kubelet):
    """The tests' kubelet stand-in, but every Job runs at once for `build_seconds`.

    The tests' one handles Jobs one after another, which would make the kubelet, not the operator,
    the bottleneck with hundreds of Jobs. Jobs come from the emulator as they are created.
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


@dataclass
class Figures:
    scenario: str
    count: int
    apply_seconds: float = math.nan
    all_jobs_seconds: float = math.nan
    all_done_seconds: float = math.nan
    max_queued: int = 0
    peak_running: tuple[int, int] = (0, 0)
    """The most build Jobs running at once: in all, and in one namespace."""
    outcome: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    startup_requests: int = 0
    idle_rss_kib: int = 0
    peak_rss_kib: int = 0
    operator_cpu_seconds: float = 0.0
    harness_cpu_seconds: float = 0.0
    load_average: tuple[float, float] = (0.0, 0.0)
    """The 1-minute load average before the apply and at the end: other work on the machine."""
    timed_out: bool = False


def _verb(request: kmock.Request) -> str:
    if request.action in _VERBS:
        return _VERBS[request.action]
    return {"PATCH": "patch", "PUT": "update"}.get(str(request.method.value), str(request.method.value))


def _what(request: kmock.Request) -> str:
    """`verb resource[/subresource]`, or `verb path` for discovery and other non-resource requests."""
    if request.resource is None or not request.resource.plural:
        return f"{_verb(request)} {request.url.path}"
    subresource = f"/{request.subresource}" if request.subresource else ""
    return f"{_verb(request)} {request.resource.plural}{subresource}"


def _is_operators(request: kmock.Request) -> bool:
    return request.headers.get("Authorization", "") == f"Bearer {TOKEN}"


def _proc_status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _operator_env(
    server_url: str, registry: RunningRegistry, args: argparse.Namespace, tmp: Path
) -> dict[str, str]:
    env = operator_environment(server_url, TOKEN, tmp)
    env.update(
        SERVICEBUILD_INSECURE_REGISTRIES=registry.host,
        SERVICEBUILD_VERBOSE="false",
        SERVICEBUILD_MAX_RUNNING_BUILDS=str(args.limit),
        SERVICEBUILD_MAX_RUNNING_BUILDS_PER_NAMESPACE=str(args.per_namespace),
        PYTHONUNBUFFERED="1",
    )
    if args.resync_seconds is not None:
        env["SERVICEBUILD_RESYNC_SECONDS"] = str(args.resync_seconds)
    return env


def _namespace_of(index: int, namespaces: int) -> str:
    return f"bench-{index % namespaces}"


async def _wait_until_watching(emulator: BenchEmulator, operator: OperatorProcess) -> None:
    """Until the operator watches what it reacts to: then it sees every object applied next."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not operator.running:
            raise RuntimeError(f"the operator exited:\n{operator.log[-4000:]}")
        if all(emulator.operator_requests[f"watch {resource.plural}"] for resource in _WATCHED):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the operator started no watch within 60s:\n{operator.log[-4000:]}")


async def _apply(cluster: Cluster, registry: RunningRegistry, args: argparse.Namespace) -> None:
    """Each service's ConfigMap context and its ServiceBuild, all at once."""

    async def one(index: int) -> None:
        namespace, name = _namespace_of(index, args.namespaces), f"svc-{index:04d}"
        await cluster.create_configmap(
            namespace,
            f"{name}-context",
            {"Dockerfile": DOCKERFILE, "main.c": f"int main(){{return {index % 7};}}"},
        )
        spec = {
            "source": {"configMap": {"name": f"{name}-context"}},
            "output": {"image": f"{registry.host}/{namespace}/{name}:1.0.0"},
        }
        await cluster.create_servicebuild(namespace, name, spec)

    await asyncio.gather(*(one(index) for index in range(args.count)))


def _tally(emulator: BenchEmulator) -> Counter[str]:
    """Ready, Stalled, or the phase of each ServiceBuild."""
    tally: Counter[str] = Counter()
    for body in emulator.objects_of(SERVICEBUILDS):
        ready, stalled = condition(body, "Ready"), condition(body, "Stalled")
        if ready and ready["status"] == "True":
            tally["Ready"] += 1
        elif stalled and stalled["status"] == "True":
            tally["Stalled"] += 1
        else:
            tally[(body.get("status") or {}).get("phase") or "(no status)"] += 1
    return tally


@dataclass(frozen=True)
class Stage:
    """What one scenario runs against."""

    args: argparse.Namespace
    emulator: BenchEmulator
    cluster: Cluster
    kubelet: BenchKubelet
    operator: OperatorProcess
    registry: RunningRegistry


async def _measure(stage: Stage, figures: Figures) -> None:
    args, emulator, kubelet, operator = stage.args, stage.emulator, stage.kubelet, stage.operator
    await _wait_until_watching(emulator, operator)
    assert operator.process is not None  # noqa: S101 - started above; narrows the type
    pid = operator.process.pid
    await asyncio.sleep(1.0)  # let the start-up settle
    figures.idle_rss_kib = _proc_status_kib(pid, "VmRSS")
    before = emulator.operator_requests.copy()
    operator_cpu, harness_cpu = _cpu_seconds(pid), time.process_time()
    figures.startup_requests = before.total()

    load_before = os.getloadavg()[0]
    started = time.monotonic()
    await _apply(stage.cluster, stage.registry, args)
    figures.apply_seconds = time.monotonic() - started
    print(f"applied {args.count} ServiceBuilds in {figures.apply_seconds:.2f}s", flush=True)

    deadline, next_report = started + args.timeout, started + 10
    while True:
        now = time.monotonic()
        tally = _tally(emulator)
        figures.max_queued = max(figures.max_queued, tally["Queued"])
        if math.isnan(figures.all_jobs_seconds) and len(emulator.job_created_at) >= args.count:
            figures.all_jobs_seconds = max(emulator.job_created_at.values()) - started
        if tally["Ready"] + tally["Stalled"] >= args.count:
            figures.all_done_seconds = now - started
            break
        if now > deadline or not operator.running:
            figures.timed_out = True
            break
        if now > next_report:
            jobs = len(emulator.job_created_at)
            print(
                f"  {now - started:5.0f}s: {jobs} Jobs, {kubelet.finished} finished, {dict(tally)}",
                flush=True,
            )
            next_report += 10
        await asyncio.sleep(0.25)

    figures.outcome = _tally(emulator)
    figures.peak_running = (kubelet.peak_running, kubelet.peak_running_in_a_namespace)
    figures.peak_rss_kib = _proc_status_kib(pid, "VmHWM")
    figures.operator_cpu_seconds = _cpu_seconds(pid) - operator_cpu
    figures.harness_cpu_seconds = time.process_time() - harness_cpu
    figures.requests = emulator.operator_requests - before
    figures.load_average = (load_before, os.getloadavg()[0])


async def run(args: argparse.Namespace, scenario: str, tmp: Path) -> Figures:
    figures = Figures(scenario, args.count)
    (tmp / "registry").mkdir()
    registry = start_registry(tmp / "registry")
    try:
        async with BenchEmulator() as emulator, kmock.Server(emulator) as server:
            cluster = BenchCluster(emulator)
            kubelet = BenchKubelet(
                cluster, jobs=emulator.created_jobs, build_seconds=args.build_seconds, outcome=args.outcome
            )
            kubelet_task = asyncio.create_task(kubelet.run())
            operator = OperatorProcess(
                _operator_env(str(server.url), registry, args, tmp), tmp / "operator.log"
            )
            operator.start()
            try:
                await _measure(Stage(args, emulator, cluster, kubelet, operator, registry), figures)
            finally:
                crashed = not operator.running
                # In a thread: the emulator runs on this event loop and answers the operator while it stops.
                await asyncio.to_thread(operator.stop)
                kubelet_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await kubelet_task
            if args.operator_log:
                args.operator_log.write_text(operator.log)
            if crashed or figures.timed_out or kubelet.errors:
                print(f"--- operator log (tail) ---\n{operator.log[-6000:]}", file=sys.stderr)
                for error in kubelet.errors[:10]:
                    print(f"kubelet: {error}", file=sys.stderr)
    finally:
        registry.stop()
    return figures


def _seconds(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f} s"


def report(figures: Figures, args: argparse.Namespace) -> None:
    limits = (
        "no limit"
        if not (args.limit or args.per_namespace)
        else f"SERVICEBUILD_MAX_RUNNING_BUILDS={args.limit}, _PER_NAMESPACE={args.per_namespace}"
    )
    resync = f"{args.resync_seconds} s" if args.resync_seconds is not None else "default (60 s)"
    print()
    print(f"== {figures.scenario}: {args.count} ServiceBuilds in {args.namespaces} namespaces, {limits}")
    print(
        f"   {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, build {args.build_seconds} s each ({args.outcome}), resync {resync}"
    )
    if figures.timed_out:
        print(f"   TIMED OUT after {args.timeout} s (or the operator exited): the figures are incomplete")
    concurrency = min(
        value for value in (args.limit, args.per_namespace * args.namespaces, args.count) if value
    )
    floor = math.ceil(args.count / concurrency) * args.build_seconds
    print(f"   apply (ConfigMaps and ServiceBuilds)  {_seconds(figures.apply_seconds)}")
    print(f"   until every build Job exists          {_seconds(figures.all_jobs_seconds)}")
    print(
        f"   until every ServiceBuild is done      {_seconds(figures.all_done_seconds)}"
        f"   (floor from build time alone: {floor:.1f} s)"
    )
    outcome = dict(figures.outcome)
    print(f"   outcome                               {outcome}; most Queued at once: {figures.max_queued}")
    print(
        f"   most build Jobs running at once       {figures.peak_running[0]}"
        f" (in one namespace: {figures.peak_running[1]})"
    )
    total = sum(figures.requests.values())
    print(
        f"   operator API requests                 {total} = {total / args.count:.2f} per build"
        f"   (+{figures.startup_requests} at start-up)"
    )
    ticks = figures.requests["list servicebuilds"]
    if ticks:
        print(f"     (includes {ticks} resync tick(s): each reconciles every ServiceBuild)")
    for what, number in figures.requests.most_common():
        print(f"     {what:<36} {number:>7}  {number / args.count:6.2f} per build")
    print(
        f"   operator peak RSS (VmHWM)             {figures.peak_rss_kib / 1024:.1f} MiB"
        f"   (RSS when idle before the apply: {figures.idle_rss_kib / 1024:.1f} MiB)"
    )
    print(
        f"   CPU while measuring                   operator {figures.operator_cpu_seconds:.1f} s,"
        f" emulator and kubelet {figures.harness_cpu_seconds:.1f} s;"
        f" load average {figures.load_average[0]:.1f} before, {figures.load_average[1]:.1f} after"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=500, help="ServiceBuilds to apply at once (500)")
    parser.add_argument("--limit", type=int, default=0, help="SERVICEBUILD_MAX_RUNNING_BUILDS (0: none)")
    parser.add_argument(
        "--per-namespace", type=int, default=0, help="SERVICEBUILD_MAX_RUNNING_BUILDS_PER_NAMESPACE (0: none)"
    )
    parser.add_argument("--namespaces", type=int, default=10, help="namespaces to spread them over (10)")
    parser.add_argument("--build-seconds", type=float, default=1.0, help="how long each build Job runs (1.0)")
    parser.add_argument(
        "--outcome", choices=["succeed", "fail"], default="succeed", help="how every build ends (succeed)"
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=None,
        help="SERVICEBUILD_RESYNC_SECONDS (default: the operator's)",
    )
    parser.add_argument("--operator-log", type=Path, help="keep the operator's log in this file")
    parser.add_argument("--timeout", type=float, default=270.0, help="give up after this many seconds (270)")
    args = parser.parse_args(argv)
    if args.count < 1 or args.namespaces < 1 or args.limit < 0 or args.per_namespace < 0:
        parser.error("--count and --namespaces must be at least 1, the limits at least 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    scenario = "limited" if args.limit or args.per_namespace else "unlimited"
    with tempfile.TemporaryDirectory(prefix="bench-many-builds-") as tmp:
        figures = asyncio.run(run(args, scenario, Path(tmp)))
    report(figures, args)


if __name__ == "__main__":
    main()
