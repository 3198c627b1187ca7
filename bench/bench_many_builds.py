"""Many ServiceBuilds at once: the real operator process against KMock's Kubernetes emulator.

Applies `--count` ServiceBuilds at once (concurrently; each with its own ConfigMap context, spread
over `--namespaces` namespaces) while `python -m servicebuild` runs, pointed at the emulator by a
kubeconfig. A kubelet stand-in (tests/integration/kubelet.py) plays the Job
controller and BuildKit: each build Job gets a running Pod, and `--build-seconds` later either
pushes a tiny real image to a real registry (Debian's docker-registry) and completes with BuildKit's
report (`--outcome succeed`, the default), or fails with a BuildKit log tail (`--outcome fail`); the
Job controller marks the Job Complete (or Failed) `--job-completion-seconds` after the container ends.

It prints:
- the time until every build Job exists, and until every ServiceBuild is Ready (or Stalled);
- per build, when its ServiceBuild turned Ready against when the Job completed and when the build
  container ended (median, p95): what the operator adds over a hand-written Job;
- the API requests the operator sent, per build, by verb and resource, and the writes among them;
- the operator's peak RSS (VmHWM of its process).

`--limit` and `--per-namespace` set SERVICEBUILD_MAX_RUNNING_BUILDS and
SERVICEBUILD_MAX_RUNNING_BUILDS_PER_NAMESPACE: builds over the limit wait in phase Queued, so every
Job exists only once enough earlier builds have finished. Prints figures; asserts nothing.

Run from the repository root: `python bench/bench_many_builds.py --count 500 --limit 50`.
"""

import argparse
import asyncio
import math
import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import kmock
from harness import (
    JOBS,
    PODS,
    SERVICEBUILDS,
    BenchEmulator,
    BenchKubelet,
    Cluster,
    RunningRegistry,
    Stage,
    condition,
    create_service,
    default_resync,
    machine,
    owner_name,
    print_requests,
    running_stage,
    sample,
    tally,
    wait_until_quiet,
    wait_until_watching,
    writes_of,
)

_QUIET_SECONDS = 2.0
"""Once every build is done and every Job complete: how long the operator must send nothing before
the requests stop being counted (the reconciles a Job's completion causes belong to its build)."""


@dataclass
class Timeline:
    """When each build's container ended, its Job completed and its ServiceBuild was done (Ready or
    Stalled), as the emulator received those writes: the stand-in's Pod and Job status, the operator's
    ServiceBuild status."""

    emulator: BenchEmulator
    container_end: dict[tuple[str, str], float] = field(default_factory=dict)
    """Per Job (namespace, name): the Pod status with the build container terminated."""
    job_end: dict[tuple[str, str], float] = field(default_factory=dict)
    """Per Job: the Job status with a Complete or Failed condition."""
    done: dict[tuple[str, str], float] = field(default_factory=dict)
    """Per ServiceBuild: the first status with Ready=True or Stalled=True."""

    def observe(self, request: kmock.Request, at: float) -> None:
        if request.action != kmock.action.UPDATE or not (request.namespace and request.name):
            return
        key = (request.namespace, request.name)
        status = request.data.get("status") if isinstance(request.data, dict) else None
        if request.resource == PODS and isinstance(status, dict):
            states = [item.get("state") or {} for item in status.get("containerStatuses") or []]
            if any("terminated" in state for state in states):
                pod = self.emulator.stored(PODS, *key) or {}
                job = (pod.get("metadata", {}).get("labels") or {}).get("job-name")
                if job:
                    self.container_end.setdefault((request.namespace, job), at)
        elif request.resource == JOBS and isinstance(status, dict):
            conditions = status.get("conditions") or []
            if any(
                item.get("type") in {"Complete", "Failed"} and item.get("status") == "True"
                for item in conditions
            ):
                self.job_end.setdefault(key, at)
        elif request.resource == SERVICEBUILDS and key not in self.done:
            body = self.emulator.stored(SERVICEBUILDS, *key) or {}
            if any((condition(body, kind) or {}).get("status") == "True" for kind in ("Ready", "Stalled")):
                self.done[key] = at

    def lags(self) -> tuple[list[float], list[float]]:
        """Per build with all three times: done minus Job completed, and done minus container ended."""
        after_job, after_container = [], []
        for job in self.emulator.objects_of(JOBS):
            namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
            owner = owner_name(job)
            done = self.done.get((namespace, owner)) if owner else None
            if done is None:
                continue
            if (namespace, name) in self.job_end:
                after_job.append(done - self.job_end[namespace, name])
            if (namespace, name) in self.container_end:
                after_container.append(done - self.container_end[namespace, name])
        return after_job, after_container


@dataclass
class Figures:
    scenario: str
    count: int
    apply_seconds: float = math.nan
    all_jobs_seconds: float = math.nan
    all_done_seconds: float = math.nan
    counted_seconds: float = math.nan
    """Until the requests stopped being counted: every Job complete and the operator quiet."""
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
    done_after_job: list[float] = field(default_factory=list)
    done_after_container: list[float] = field(default_factory=list)
    timed_out: bool = False


def _settings(args: argparse.Namespace) -> dict[str, str]:
    settings = {
        "SERVICEBUILD_MAX_RUNNING_BUILDS": str(args.limit),
        "SERVICEBUILD_MAX_RUNNING_BUILDS_PER_NAMESPACE": str(args.per_namespace),
    }
    if args.resync_seconds is not None:
        settings["SERVICEBUILD_RESYNC_SECONDS"] = str(args.resync_seconds)
    return settings


def _namespace_of(index: int, namespaces: int) -> str:
    return f"bench-{index % namespaces}"


async def _apply(cluster: Cluster, registry: RunningRegistry, args: argparse.Namespace) -> None:
    """Each service's ConfigMap context and its ServiceBuild: all at once, or one every `--apply-interval`."""

    async def one(index: int) -> None:
        namespace, name = _namespace_of(index, args.namespaces), f"svc-{index:04d}"
        await create_service(cluster, registry, namespace, name)

    if not args.apply_interval:
        await asyncio.gather(*(one(index) for index in range(args.count)))
        return
    for index in range(args.count):
        await one(index)
        await asyncio.sleep(args.apply_interval)


async def _measure(stage: Stage, args: argparse.Namespace, figures: Figures) -> None:
    emulator, kubelet, operator = stage.emulator, stage.kubelet, stage.operator
    timeline = Timeline(emulator)
    emulator.on_answered.append(timeline.observe)
    await wait_until_watching(emulator, operator)
    await asyncio.sleep(1.0)  # let the start-up settle
    idle = sample(stage.pid)
    figures.idle_rss_kib = idle.rss_kib
    before = emulator.operator_requests.copy()
    harness_cpu = time.process_time()
    figures.startup_requests = before.total()

    load_before = os.getloadavg()[0]
    started = time.monotonic()
    await _apply(stage.cluster, stage.registry, args)
    figures.apply_seconds = time.monotonic() - started
    print(f"applied {args.count} ServiceBuilds in {figures.apply_seconds:.2f}s", flush=True)

    deadline, next_report = started + args.timeout, started + 10
    while True:
        now = time.monotonic()
        counts = tally(emulator)
        figures.max_queued = max(figures.max_queued, counts["Queued"])
        if math.isnan(figures.all_jobs_seconds) and len(emulator.job_created_at) >= args.count:
            figures.all_jobs_seconds = max(emulator.job_created_at.values()) - started
        if counts["Ready"] + counts["Stalled"] >= args.count:
            figures.all_done_seconds = now - started
            break
        if now > deadline or not operator.running:
            figures.timed_out = True
            break
        if now > next_report:
            jobs = len(emulator.job_created_at)
            print(
                f"  {now - started:5.0f}s: {jobs} Jobs, {kubelet.finished} finished, {dict(counts)}",
                flush=True,
            )
            next_report += 10
        await asyncio.sleep(0.25)

    # The Jobs complete after their builds are done, and the operator answers that too: count it.
    while not figures.timed_out and len(timeline.job_end) < len(emulator.job_created_at):
        if time.monotonic() > deadline:
            figures.timed_out = True
        await asyncio.sleep(0.1)
    await wait_until_quiet(emulator, _QUIET_SECONDS, within=max(5.0, deadline - time.monotonic()))
    figures.counted_seconds = time.monotonic() - started

    end = sample(stage.pid)
    figures.outcome = tally(emulator)
    figures.peak_running = (kubelet.peak_running, kubelet.peak_running_in_a_namespace)
    figures.peak_rss_kib = end.peak_rss_kib
    figures.operator_cpu_seconds = end.cpu_seconds - idle.cpu_seconds
    figures.harness_cpu_seconds = time.process_time() - harness_cpu
    figures.requests = emulator.operator_requests - before
    figures.load_average = (load_before, os.getloadavg()[0])
    figures.done_after_job, figures.done_after_container = timeline.lags()


async def run(args: argparse.Namespace, scenario: str, tmp: Path) -> Figures:
    figures = Figures(scenario, args.count)
    async with running_stage(
        tmp,
        _settings(args),
        build_seconds=args.build_seconds,
        outcome=args.outcome,
        job_completion_delay=args.job_completion_seconds,
    ) as stage:
        stage.operator.start()
        await _measure(stage, args, figures)
    return figures


def _seconds(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f} s"


def _distribution(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return (
        f"median {statistics.median(ordered):+6.2f} s, p95 {p95:+6.2f} s"
        f"  (min {ordered[0]:+.2f}, max {ordered[-1]:+.2f}; {len(ordered)} builds)"
    )


def report(figures: Figures, args: argparse.Namespace) -> None:
    limits = (
        "no limit"
        if not (args.limit or args.per_namespace)
        else f"SERVICEBUILD_MAX_RUNNING_BUILDS={args.limit}, _PER_NAMESPACE={args.per_namespace}"
    )
    resync = (
        f"{args.resync_seconds} s" if args.resync_seconds is not None else f"default ({default_resync():g} s)"
    )
    print()
    print(f"== {figures.scenario}: {args.count} ServiceBuilds in {args.namespaces} namespaces, {limits}")
    print(f"   {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}")
    print(
        f"   build {args.build_seconds} s each ({args.outcome}), Job complete"
        f" {args.job_completion_seconds} s after the container, resync {resync}"
    )
    if figures.timed_out:
        print(f"   TIMED OUT after {args.timeout} s (or the operator exited): the figures are incomplete")
    concurrency = min(
        value for value in (args.limit, args.per_namespace * args.namespaces, args.count) if value
    )
    floor = math.ceil(args.count / concurrency) * args.build_seconds
    how = f"one every {args.apply_interval:g} s" if args.apply_interval else "all at once"
    print(f"   apply (ConfigMaps and ServiceBuilds)  {_seconds(figures.apply_seconds)} ({how})")
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
    done = "Ready" if args.outcome == "succeed" else "Stalled"
    job_end = "Complete" if args.outcome == "succeed" else "Failed"
    for label, lags in (
        (f"{done} - Job {job_end}", figures.done_after_job),
        (f"{done} - build container ended", figures.done_after_container),
    ):
        print(f"   {label:<37} {_distribution(lags)}")
    print("     (negative: the ServiceBuild was done before the Job controller marked its Job finished)")
    total = figures.requests.total()
    writes = writes_of(figures.requests)
    print(
        f"   operator API requests                 {total} = {total / args.count:.2f} per build"
        f"   (+{figures.startup_requests} at start-up; counted for {_seconds(figures.counted_seconds)})"
    )
    print(
        f"     writes (create, patch, update, delete) {writes} = {writes / args.count:.2f} per build;"
        f" reads {total - writes} = {(total - writes) / args.count:.2f} per build"
    )
    ticks = figures.requests["list servicebuilds"]
    if ticks:
        print(f"     (includes {ticks} resync tick(s): each reconciles every ServiceBuild)")
    print_requests(figures.requests, args.count, "build")
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
    parser.add_argument(
        "--apply-interval",
        type=float,
        default=0.0,
        help="apply one ServiceBuild every this many seconds instead of all at once (0)",
    )
    parser.add_argument("--namespaces", type=int, default=10, help="namespaces to spread them over (10)")
    parser.add_argument("--build-seconds", type=float, default=1.0, help="how long each build Job runs (1.0)")
    parser.add_argument(
        "--job-completion-seconds",
        type=float,
        default=BenchKubelet.job_completion_delay,
        help="from the build container's end to the Job's Complete condition"
        f" ({BenchKubelet.job_completion_delay}, the stand-in's: as on a real cluster)",
    )
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
    if args.apply_interval < 0:
        parser.error("--apply-interval must be at least 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    scenario = "limited" if args.limit or args.per_namespace else "unlimited"
    if args.apply_interval:
        scenario += f", one applied every {args.apply_interval:g} s"
    with tempfile.TemporaryDirectory(prefix="bench-many-builds-") as tmp:
        try:
            figures = asyncio.run(run(args, scenario, Path(tmp)))
        finally:
            if args.operator_log:
                shutil.copyfile(Path(tmp) / "operator.log", args.operator_log)
    report(figures, args)


if __name__ == "__main__":
    main()
