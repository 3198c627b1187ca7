"""The operator's Prometheus metrics, in a registry of their own (with the process collector).

Recorded where the operator decides things: the reconciler when it writes a status (a build ended), creates
a Job (it waited, it reacted) or reads a ServiceBuild (its image's size); the handlers when a reconcile
fails. The build slots are read when Prometheus scrapes, so running and queued are never out of step with
them. Labels stay bounded: namespaces, results, reasons, triggers and error kinds, never a build or digest;
the one per-ServiceBuild series (the image size) goes when its ServiceBuild does.

A build is counted when a status written records it as ended for the first time (`ended_builds`). The
history that says so is in the status, so writing the same end twice counts it once, and an operator
restarted after the write does not count it again; one restarted between the end and the write counts it
once, when it writes it. Counters start from 0 in every process, as Prometheus expects.
"""

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from servicebuild.admission import Key
from servicebuild.api.models import BuildRecord, BuildResult, ServiceBuildStatus

DURATION_BUCKETS = (5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600)
"""5 s to 1 h: a build's Job from its start to its end."""
WAIT_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
REACTION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RATIO_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SUCCEEDED_REASON = "BuildSucceeded"
SUPERSEDED_REASON = "Superseded"


Load = Callable[[], Mapping[str, tuple[int, int]]]
"""Per namespace, the builds holding a build slot and those waiting for one (`BuildSlots.load`)."""


def ended_builds(previous: ServiceBuildStatus, current: ServiceBuildStatus) -> list[BuildRecord]:
    """The builds that `current` records as ended (succeeded, failed or superseded) and `previous` did not."""
    known = {record.build for record in previous.history or ()}
    return [record for record in current.history or () if record.build not in known]


def _reason(record: BuildRecord) -> str:
    match record.result:
        case BuildResult.SUCCEEDED:
            return SUCCEEDED_REASON
        case BuildResult.SUPERSEDED:
            return SUPERSEDED_REASON
        case _:
            return record.reason or "Unknown"


class _ServiceBuilds(Collector):
    """The gauges read at scrape time: the build slots per namespace, and each ServiceBuild's image size.

    A namespace is reported (0 when idle) while the operator knows a ServiceBuild in it or a build in it
    holds or waits for a slot; a ServiceBuild's size until it is forgotten."""

    def __init__(self, load: Load) -> None:
        self._load = load
        self._sizes: dict[Key, int | None] = {}
        self._lock = threading.Lock()

    def seen(self, key: Key, size_bytes: int | None) -> None:
        with self._lock:
            self._sizes[key] = size_bytes

    def forget(self, key: Key) -> None:
        with self._lock:
            self._sizes.pop(key, None)

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            sizes = dict(self._sizes)
        load = self._load()
        running, queued, image_size = self._families()
        for namespace in sorted({namespace for namespace, _ in sizes} | set(load)):
            holding, waiting = load.get(namespace, (0, 0))
            running.add_metric([namespace], holding)
            queued.add_metric([namespace], waiting)
        for (namespace, name), size in sorted(sizes.items()):
            if size is not None:
                image_size.add_metric([namespace, name], size)
        return [running, queued, image_size]

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "servicebuild_builds_running",
                "Builds holding a build slot (their Job exists and has not ended).",
                labels=["namespace"],
            ),
            GaugeMetricFamily(
                "servicebuild_builds_queued",
                "Builds waiting for a free build slot (SERVICEBUILD_MAX_RUNNING_BUILDS and per namespace).",
                labels=["namespace"],
            ),
            GaugeMetricFamily(
                "servicebuild_image_size_bytes",
                "The size of the last image a ServiceBuild pushed, as the registry serves it.",
                labels=["namespace", "servicebuild"],
            ),
        ]


def _wall_clock() -> datetime:
    return datetime.now(UTC)


class OperatorMetrics:
    """Every metric the operator exports, in `registry`. Thread-safe: the reconciles record from worker
    threads while the metrics server reads on the event loop."""

    def __init__(self, load: Load, clock: Callable[[], datetime] = _wall_clock) -> None:
        self.registry = CollectorRegistry()
        self._clock = clock
        self._builds = Counter(
            "servicebuild_builds_total",
            "Builds ended, by result (Succeeded, Failed, Superseded), condition reason and trigger.",
            ["namespace", "result", "reason", "trigger"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "servicebuild_build_duration_seconds",
            "How long ended builds ran, from their Job's start to their end.",
            ["namespace", "result"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._queue_wait = Histogram(
            "servicebuild_build_queue_wait_seconds",
            "How long builds waited for a build slot or a wave before their Job was created.",
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self._reaction = Histogram(
            "servicebuild_reaction_seconds",
            "From the reconcile that found a build due (a spec change, a new commit...) to its Job created.",
            buckets=REACTION_BUCKETS,
            registry=self.registry,
        )
        self._cache_ratio = Histogram(
            "servicebuild_cache_hit_ratio",
            "Of each successful build, the steps BuildKit served from the cache over all its steps.",
            buckets=RATIO_BUCKETS,
            registry=self.registry,
        )
        self._errors = Counter(
            "servicebuild_reconcile_errors_total",
            "Reconciles that failed and wait for a retry, by kind of error.",
            ["kind"],
            registry=self.registry,
        )
        self._servicebuilds = _ServiceBuilds(load)
        self.registry.register(self._servicebuilds)
        ProcessCollector(registry=self.registry)

    def status_written(
        self,
        namespace: str,
        previous: ServiceBuildStatus,
        current: ServiceBuildStatus,
        cache_ratio: float | None = None,
    ) -> None:
        """Count the builds the written status ended; `cache_ratio` is the successful build's, if known."""
        for record in ended_builds(previous, current):
            result = record.result.value
            self._builds.labels(namespace, result, _reason(record), record.trigger.value).inc()
            if record.duration_seconds is not None:
                self._duration.labels(namespace, result).observe(record.duration_seconds)
            if record.result == BuildResult.SUCCEEDED and cache_ratio is not None:
                self._cache_ratio.observe(cache_ratio)

    def job_created(self, waiting_since: datetime, now: datetime) -> None:
        """A build's Job was created at `now` (the reconcile's time); it was found due at `waiting_since`."""
        self._queue_wait.observe(max(0.0, (now - waiting_since).total_seconds()))
        self._reaction.observe(max(0.0, (self._clock() - waiting_since).total_seconds()))

    def servicebuild_seen(self, key: Key, status: ServiceBuildStatus) -> None:
        """The ServiceBuild exists, with this status."""
        self._servicebuilds.seen(key, status.output.size_bytes if status.output else None)

    def forget(self, key: Key) -> None:
        """The ServiceBuild is gone: so are its series."""
        self._servicebuilds.forget(key)

    def reconcile_failed(self, kind: str) -> None:
        self._errors.labels(kind).inc()
