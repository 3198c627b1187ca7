"""ServiceBuilds with nothing to do: what the operator costs at rest.

Creates `--count` ServiceBuilds that need no build while `python -m servicebuild` runs against KMock's
emulator (see harness.py), waits until the operator has handled every one and a whole resync tick
has passed, then watches the operator from outside over an idle window of at least
`--window-seconds`, from the start of one resync tick to the start of another:

- its CPU time (utime + stime of its process), as a share of one core, in all and in the seconds
  in which it sent no request but watches and its Lease's renewals (between the ticks);
- its memory: VmRSS with no objects, once everything settled, at the end; VmHWM (the peak of the
  whole run, set-up included);
- its API requests per resync tick, by verb and resource, the writes among them, and how long each
  tick took from its first request to its last.

What "nothing to do" means (`--kind`):
- `stalled`: the ServiceBuild builds from a ConfigMap that does not exist; the operator marks it
  Stalled (SourceNotFound) and creates no Job;
- `ready`: the ServiceBuild was built once, through the kubelet stand-in and a real registry, before
  the idle window (in batches of `--batch`); its Job and Pod are then deleted, as Kubernetes' TTL
  controller does an hour after the build (`--keep-jobs` keeps them);
- `mixed`: every other one of each.

With `--restart`, the operator is restarted once everything settled, and the figures are the new
process's: what an operator that starts with N ServiceBuilds holds, without the set-up's churn.

A resync tick shows from outside as the operator's `list servicebuilds`. If none comes (a resync
that lists nothing, or `--resync-seconds` longer than the window), the window is `--window-seconds`
of wall time and the ticks in it are counted by those lists alone. Prints figures; asserts nothing.

Run from the repository root: `python bench/bench_idle.py --count 2000`.
"""

import argparse
import asyncio
import itertools
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import kmock
from harness import (
    JOBS,
    PODS,
    ProcessSample,
    Stage,
    background,
    create_service,
    default_resync,
    machine,
    print_requests,
    running_stage,
    sample,
    tally,
    wait_until_quiet,
    wait_until_watching,
    writes_of,
)

_TICK = "list servicebuilds"
"""How a resync tick shows from outside: the first page of the operator's LIST of every ServiceBuild."""
_CREATING_AT_ONCE = 100
"""ServiceBuilds (and ConfigMaps) created concurrently while populating."""


@dataclass(frozen=True)
class Mark:
    """The operator seen from outside at one moment: its process, and its requests so far."""

    process: ProcessSample
    requests: Counter[str]
    harness_cpu_seconds: float
    """CPU time of this bench process so far: the emulator, the kubelet stand-in."""
    last_request_before: float = math.nan
    """At a tick: when the operator's previous request arrived (the end of the tick before)."""

    @property
    def at(self) -> float:
        return self.process.at


@dataclass
class Observer:
    """Marks each resync tick as its list arrives, and samples the operator every second."""

    pid: int
    ticks: list[Mark] = field(default_factory=list)
    seconds: list[tuple[float, float, int]] = field(default_factory=list)
    """Once a second while sampling: (time, operator CPU seconds, operator requests so far other than
    watches and the Lease's)."""
    requests: Counter[str] = field(default_factory=Counter)
    work_requests: int = 0
    last_request_at: float = field(default_factory=time.monotonic)
    """When the operator's last request (other than a watch or the Lease's) arrived."""

    def request(self, what: str, at: float) -> None:
        """Called by the emulator as each of the operator's requests arrives (counted already)."""
        if what == _TICK:
            self.ticks.append(self.mark(last_request_before=self.last_request_at))
        if not background(what):  # no part of a tick
            self.last_request_at = at
            self.work_requests += 1

    def mark(self, last_request_before: float = math.nan) -> Mark:
        return Mark(sample(self.pid), self.requests.copy(), time.process_time(), last_request_before)

    async def sample_seconds(self) -> None:
        while True:
            self.seconds.append((time.monotonic(), sample(self.pid).cpu_seconds, self.work_requests))
            await asyncio.sleep(1.0)


@dataclass
class Figures:
    kind: str
    stalled: int
    ready: int
    resync_seconds: float
    started: float = 0.0
    """When the operator was started (monotonic clock)."""
    populate_seconds: float = math.nan
    settle_seconds: float = math.nan
    setup_cpu_seconds: float = math.nan
    """The operator's CPU time from its start until everything settled."""
    empty: ProcessSample | None = None
    """The operator watching, before any ServiceBuild exists."""
    settled: ProcessSample | None = None
    """Once every ServiceBuild was done and the operator quiet (after its restart, with --restart)."""
    restart: tuple[float, Counter[str]] | None = None
    """With --restart: how long until the new process went quiet, and its requests until then."""
    start: Mark | None = None
    end: Mark | None = None
    tick_aligned: bool = False
    ticks: list[Mark] = field(default_factory=list)
    """The ticks that started inside the window (the end's tick excluded)."""
    quiet: tuple[float, float] = (0.0, 0.0)
    """Seconds of the window without a request of the operator (watches and the Lease's aside), and its CPU
    time in them."""
    load_average: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())
    problems: list[str] = field(default_factory=list)


def _namespace_of(index: int, namespaces: int) -> str:
    return f"idle-{index % namespaces}"


def _kinds(args: argparse.Namespace) -> list[str]:
    """The kind of each ServiceBuild by index: `stalled` or `ready`."""
    if args.kind == "mixed":
        return ["stalled" if index % 2 == 0 else "ready" for index in range(args.count)]
    return [args.kind] * args.count


def _progress(figures: Figures, what: str) -> None:
    print(f"  {time.monotonic() - figures.started:6.0f}s: {what}", flush=True)


async def _until(stage: Stage, done: Callable[[Counter[str]], bool], deadline: float) -> None:
    """Until `done` holds for the ServiceBuilds by state; their states every 10 s; TimeoutError past
    the deadline."""
    next_report = time.monotonic() + 10
    while not done(counts := tally(stage.emulator)):
        now = time.monotonic()
        if now > deadline or not stage.operator.running:
            raise TimeoutError(f"ServiceBuilds by state: {dict(counts)}")
        if now > next_report:
            print(f"          {dict(counts)}; {stage.kubelet.finished} build Jobs finished", flush=True)
            next_report += 10
        await asyncio.sleep(0.5)


async def _populate(stage: Stage, args: argparse.Namespace, figures: Figures, deadline: float) -> None:
    """The stalled ServiceBuilds all at once; the ready ones batch by batch, each built before the next."""
    cluster, registry = stage.cluster, stage.registry
    semaphore = asyncio.Semaphore(_CREATING_AT_ONCE)

    async def create(index: int, kind: str) -> None:
        namespace, name = _namespace_of(index, args.namespaces), f"svc-{index:05d}"
        async with semaphore:
            await create_service(cluster, registry, namespace, name, context=kind == "ready")

    kinds = _kinds(args)
    if figures.stalled:
        await asyncio.gather(*(create(index, kind) for index, kind in enumerate(kinds) if kind == "stalled"))
        _progress(figures, f"created {figures.stalled} ServiceBuilds whose ConfigMap does not exist")
    ready = [index for index, kind in enumerate(kinds) if kind == "ready"]
    for first in range(0, len(ready), args.batch):
        batch = ready[first : first + args.batch]
        await asyncio.gather(*(create(index, "ready") for index in batch))
        built = first + len(batch)

        def batch_built(counts: Counter[str], built: int = built) -> bool:
            return counts["Ready"] >= built

        await _until(stage, batch_built, deadline)
        _progress(figures, f"built {built} of {len(ready)} ready ServiceBuilds")


async def _settle(stage: Stage, args: argparse.Namespace, figures: Figures, deadline: float) -> None:
    """Every ServiceBuild done, every Job complete (then deleted, as its TTL would), the operator quiet."""
    await _until(
        stage,
        lambda counts: counts["Ready"] >= figures.ready and counts["Stalled"] >= figures.stalled,
        deadline,
    )
    kubelet = stage.kubelet
    while kubelet.completions or kubelet.running.total() or kubelet.finished < figures.ready:
        if time.monotonic() > deadline or kubelet.errors:
            raise TimeoutError(f"build Jobs not complete; stand-in errors: {kubelet.errors[:3]}")
        await asyncio.sleep(0.2)
    if figures.ready and not args.keep_jobs:
        emulator, semaphore = stage.emulator, asyncio.Semaphore(_CREATING_AT_ONCE)

        async def delete(resource: kmock.resource, namespace: str, name: str) -> None:
            async with semaphore:
                await stage.cluster.delete(resource, namespace, name)

        jobs = emulator.objects_of(JOBS)
        pods = emulator.objects_of(PODS)
        await asyncio.gather(
            *(
                delete(resource, body["metadata"]["namespace"], body["metadata"]["name"])
                for resource, bodies in ((PODS, pods), (JOBS, jobs))
                for body in bodies
            )
        )
        _progress(figures, f"deleted {len(jobs)} finished Jobs and {len(pods)} Pods (as their TTL would)")
    if not await wait_until_quiet(stage.emulator, args.quiet_seconds, within=deadline - time.monotonic()):
        raise TimeoutError(f"the operator did not go quiet for {args.quiet_seconds} s")


async def _tick(observer: Observer, after: float, resync: float, limit: float) -> Mark | None:
    """The first tick that starts at `after` or later, once it starts; None when the operator has sent
    nothing for `resync` + 30 s since `after` (a tick was due by then), or at `limit`."""
    while True:
        tick = next((tick for tick in observer.ticks if tick.at >= after), None)
        if tick is not None:
            return tick
        now = time.monotonic()
        if now - max(after, observer.last_request_at) > resync + 30 or now > limit:
            return None
        await asyncio.sleep(0.1)


async def _window(observer: Observer, args: argparse.Namespace, figures: Figures) -> None:
    """From the start of the tick after the first whole one, until the start of the first tick at least
    `--window-seconds` later; or `--window-seconds` of wall time when the ticks do not show."""
    window, resync = args.window_seconds, figures.resync_seconds
    limit = time.monotonic() + 3 * resync + window + 600  # a tick of 10,000 objects takes a minute here
    figures.load_average = (os.getloadavg(), ())
    start: Mark | None = None
    if resync <= window:
        _progress(figures, f"waiting for a whole resync tick (a {_TICK} from the operator)")
        first = await _tick(observer, time.monotonic(), resync, limit)
        start = None if first is None else await _tick(observer, first.at + 1e-6, resync, limit)
        if start is None:
            figures.problems.append(f"no {_TICK} when one was due: the window is wall time")
        else:
            _progress(figures, f"idle window: from this tick's start, for at least {window:g} s")
    if start is None:
        start = observer.mark()
        _progress(figures, f"idle window: {window:g} s from now")
    figures.start = start
    end: Mark | None = None
    if figures.problems or resync > window:
        await asyncio.sleep(max(0.0, start.at + window - time.monotonic()))
    else:
        end = await _tick(observer, start.at + window, resync, limit + window)
        if end is None:
            figures.problems.append(f"no {_TICK} when one was due after the window: it ends by time")
    figures.tick_aligned = end is not None
    figures.end = end or observer.mark()
    figures.load_average = (figures.load_average[0], os.getloadavg())
    figures.ticks = [tick for tick in observer.ticks if start.at <= tick.at < figures.end.at]
    quiet_seconds = quiet_cpu = 0.0
    seconds = [entry for entry in observer.seconds if start.at <= entry[0] <= figures.end.at]
    for (at, cpu, requests), (next_at, next_cpu, next_requests) in itertools.pairwise(seconds):
        if next_requests == requests:
            quiet_seconds += next_at - at
            quiet_cpu += next_cpu - cpu
    figures.quiet = (quiet_seconds, quiet_cpu)


async def run(args: argparse.Namespace, tmp: Path) -> Figures:
    kinds = Counter(_kinds(args))
    resync = args.resync_seconds if args.resync_seconds is not None else default_resync()
    figures = Figures(args.kind, kinds["stalled"], kinds["ready"], resync)
    settings = (
        {} if args.resync_seconds is None else {"SERVICEBUILD_RESYNC_SECONDS": str(args.resync_seconds)}
    )
    async with running_stage(tmp, settings) as stage:
        figures.started = time.monotonic()
        deadline = figures.started + args.setup_timeout
        stage.operator.start()
        await wait_until_watching(stage.emulator, stage.operator, within=args.setup_timeout)
        observer = Observer(stage.pid, requests=stage.emulator.operator_requests)
        stage.emulator.on_operator_request.append(observer.request)
        await wait_until_quiet(stage.emulator, 1.0, within=30)
        figures.empty = sample(stage.pid)
        try:
            await _populate(stage, args, figures, deadline)
            figures.populate_seconds = time.monotonic() - figures.started
            await _settle(stage, args, figures, deadline)
            figures.settle_seconds = time.monotonic() - figures.started
            figures.settled = sample(stage.pid)
            figures.setup_cpu_seconds = figures.settled.cpu_seconds
            rss = _mib(figures.settled.rss_kib)
            _progress(figures, f"settled: {dict(tally(stage.emulator))}, the operator quiet, RSS {rss}")
            if args.restart:
                observer = await _restart(stage, args, figures, observer)
        except TimeoutError as exc:
            figures.problems.append(f"setup did not finish within --setup-timeout: {exc}")
            return figures
        sampler = asyncio.create_task(observer.sample_seconds())
        try:
            await _window(observer, args, figures)
        finally:
            sampler.cancel()
    return figures


async def _restart(stage: Stage, args: argparse.Namespace, figures: Figures, observer: Observer) -> Observer:
    """A new operator process, once it has handled every ServiceBuild it finds and gone quiet."""
    _progress(figures, "restarting the operator")
    stage.emulator.on_operator_request.remove(observer.request)
    await asyncio.to_thread(stage.operator.stop)  # in a thread: the emulator answers it while it stops
    restarted = time.monotonic()
    before = stage.emulator.operator_requests.copy()
    stage.operator.start()
    await wait_until_watching(stage.emulator, stage.operator, within=args.setup_timeout, since=before)
    observer = Observer(stage.pid, requests=stage.emulator.operator_requests)
    stage.emulator.on_operator_request.append(observer.request)
    if not await wait_until_quiet(stage.emulator, args.quiet_seconds, within=args.setup_timeout):
        raise TimeoutError(f"the restarted operator did not go quiet for {args.quiet_seconds} s")
    figures.settled = sample(stage.pid)
    figures.restart = (time.monotonic() - restarted, stage.emulator.operator_requests - before)
    _progress(figures, "the restarted operator went quiet")
    return observer


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def report(figures: Figures, args: argparse.Namespace) -> None:
    resync = (
        f"{figures.resync_seconds:g} s (--resync-seconds)"
        if args.resync_seconds is not None
        else f"{figures.resync_seconds:g} s (the operator's default)"
    )
    kinds = f"{figures.stalled} Stalled (ConfigMap missing), {figures.ready} Ready (built once)"
    jobs = "" if not figures.ready else ("; their Jobs kept" if args.keep_jobs else "; their Jobs deleted")
    print()
    print(f"== idle: {args.count} ServiceBuilds in {args.namespaces} namespaces: {kinds}{jobs}")
    print(f"   {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}")
    print(
        f"   resync every {resync}, idle window at least {args.window_seconds:g} s;"
        " every other setting the operator's default"
    )
    for problem in figures.problems:
        print(f"   NOTE: {problem}")
    if figures.empty is None or figures.settled is None or figures.start is None or figures.end is None:
        print("   no idle window: the figures are incomplete")
        return
    print(
        f"   set-up                                created in {figures.populate_seconds:.0f} s,"
        f" settled after {figures.settle_seconds:.0f} s; operator CPU until then"
        f" {figures.setup_cpu_seconds:.1f} s"
    )
    if figures.restart is not None:
        seconds, requests = figures.restart
        print(
            f"   restarted once settled                quiet after {seconds:.0f} s,"
            f" CPU {figures.settled.cpu_seconds:.1f} s, {requests.total()} requests"
            f" ({writes_of(requests)} writes); the figures below are the new process's"
        )
    start, end = figures.start, figures.end
    duration = end.at - start.at
    cpu = end.process.cpu_seconds - start.process.cpu_seconds
    ticks = len(figures.ticks)
    how = "from one tick's start to another's" if figures.tick_aligned else "wall time"
    print(f"   idle window                           {duration:.1f} s ({how}), {ticks} resync tick(s) in it")
    print(f"   operator CPU in the window            {cpu:.2f} s = {100 * cpu / duration:.2f}% of one core")
    quiet_seconds, quiet_cpu = figures.quiet
    if quiet_seconds:
        print(
            f"     in the {quiet_seconds:.0f} s without a request (Lease aside) {quiet_cpu:.2f} s ="
            f" {100 * quiet_cpu / quiet_seconds:.2f}% of one core"
        )
    if ticks:
        print(
            f"     per tick                            {cpu / ticks:.2f} s"
            f" = {1000 * cpu / ticks / args.count:.2f} ms per ServiceBuild"
        )
        marks = [*figures.ticks, end] if figures.tick_aligned else figures.ticks
        lasted = [max(0.0, after.last_request_before - tick.at) for tick, after in itertools.pairwise(marks)]
        if lasted:
            print(
                "   tick duration (first to last request) "
                + ", ".join(f"{seconds:.1f} s" for seconds in lasted if not math.isnan(seconds))
            )
    settled = "once restarted" if figures.restart else "once settled"
    print(
        f"   operator RSS                          {_mib(end.process.rss_kib)} at the end;"
        f" {_mib(figures.settled.rss_kib)} {settled}; {_mib(figures.empty.rss_kib)} with no ServiceBuild"
    )
    if figures.ticks:
        at_ticks = ", ".join(_mib(mark.process.rss_kib) for mark in [*figures.ticks, end])
        print(f"     at each tick's start                {at_ticks}")
    peak = "since its restart" if figures.restart else "set-up included"
    print(f"   operator peak RSS (VmHWM)             {_mib(end.process.peak_rss_kib)} ({peak})")
    requests = end.requests - start.requests
    total, writes = requests.total(), writes_of(requests)
    if watches := sum(number for what, number in requests.items() if what.startswith("watch ")):
        print(f"   (the operator renewed {watches} watch(es) in the window, as Kopf does every few minutes)")
    if ticks:
        print(
            f"   operator API requests per tick        {total / ticks:.1f}"
            f" ({total / ticks / args.count:.3f} per ServiceBuild), writes {writes / ticks:.1f}"
        )
        print_requests(requests, ticks, "tick")
    else:
        print(f"   operator API requests in the window   {total} (writes {writes})")
        print_requests(requests, duration / 60, "minute")
    harness = end.harness_cpu_seconds - start.harness_cpu_seconds
    before, after = figures.load_average
    print(
        f"   bench process (emulator) CPU          {harness:.2f} s in the window;"
        f" load average {' '.join(f'{value:.2f}' for value in before)} before,"
        f" {' '.join(f'{value:.2f}' for value in after)} after"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="ServiceBuilds with nothing to do (2000)")
    parser.add_argument(
        "--kind",
        choices=["stalled", "ready", "mixed"],
        default="stalled",
        help="Stalled (ConfigMap missing, no Job), Ready (built once), or every other one (stalled)",
    )
    parser.add_argument(
        "--window-seconds", type=float, default=120.0, help="measure for at least this long (120)"
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=None,
        help=f"SERVICEBUILD_RESYNC_SECONDS (default: the operator's, {default_resync():g})",
    )
    parser.add_argument("--namespaces", type=int, default=10, help="namespaces to spread them over (10)")
    parser.add_argument(
        "--batch", type=int, default=500, help="ready ones: how many are built at once while setting up (500)"
    )
    parser.add_argument(
        "--keep-jobs",
        action="store_true",
        help="ready ones: keep the finished Jobs and Pods (deleted otherwise)",
    )
    parser.add_argument(
        "--quiet-seconds",
        type=float,
        default=3.0,
        help="settled: once the operator has sent nothing for this long after the last change (3)",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="once settled, restart the operator and measure the new process (no set-up in its memory)",
    )
    parser.add_argument("--operator-log", type=Path, help="keep the operator's log in this file")
    parser.add_argument(
        "--setup-timeout", type=float, default=3600.0, help="give up setting up after this long (3600)"
    )
    args = parser.parse_args(argv)
    if args.count < 1 or args.namespaces < 1 or args.batch < 1 or args.window_seconds <= 0:
        parser.error("--count, --namespaces, --batch and --window-seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        try:
            figures = asyncio.run(run(args, Path(tmp)))
        finally:
            if args.operator_log:
                shutil.copyfile(Path(tmp) / "operator.log", args.operator_log)
    report(figures, args)


if __name__ == "__main__":
    main()
