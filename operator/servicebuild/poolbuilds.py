"""Builds on a BuilderPool (`spec.builderPool`): the reconciler's other build back-end. Gateways passed in.

The Job path's steps, for a pool: observe the run (`observe.observe_run`), check that the pool can take a
build (`builder_wait`, pure), start buildctl (`render.pool_run` and the runner). Everything after the
build (read back, status, findings, history, metrics) is the reconciler's, the same as for Jobs.
"""

from datetime import datetime
from typing import Any, Protocol

from servicebuild import naming
from servicebuild.api.models import ObjectMeta, ServiceBuild
from servicebuild.api.pool import BuilderPool, InvalidBuilderPool, parse_builderpool
from servicebuild.config import Settings
from servicebuild.failures import Failure, Reason
from servicebuild.inputs import InputReader, Problem
from servicebuild.observe import Observation, observe_run
from servicebuild.pool_status import IDLE
from servicebuild.render.job import BuildInputs
from servicebuild.render.pool_run import Builder, PoolRun, RunState, render_pool_run
from servicebuild.status import Build, InProgress, Outcome, Progress, Stalled

Key = tuple[str, str]
READY = "Ready"


class RunGateway(Protocol):
    """The runs of buildctl (`poolruns.PoolRuns` in the operator)."""

    def start(self, servicebuild: Key, name: str, pool: Key, run: PoolRun) -> None: ...
    def state(self, name: str) -> RunState | None: ...
    def running(self, pool: Key) -> int: ...
    def touch(self, pool: Key) -> None: ...
    def stop(self, servicebuild: Key, keep: str | None) -> None: ...
    def stop_all(self) -> None: ...


class PoolSource(Protocol):
    """What a build on a pool reads of the Kubernetes API."""

    def get_builderpool(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def get_own_secret_data(self, namespace: str, name: str) -> dict[str, str] | None: ...


def builder_wait(pool: BuilderPool | InvalidBuilderPool | None, name: str, running: int) -> str | None:
    """Why a build must wait for the pool `name`, or None when it can start there now."""
    if pool is None:
        return f"BuilderPool {name!r} (spec.builderPool) does not exist in this namespace."
    if isinstance(pool, InvalidBuilderPool):
        return f"BuilderPool {name!r} (spec.builderPool) is invalid: {pool.problem}"
    ready = pool.status.condition(READY)
    if ready is None or ready.status != "True" or pool.status.endpoint is None:
        why = ready.message if ready is not None else "not reconciled yet"
        return f"BuilderPool {name!r} is not ready: {why}"
    if running >= pool.spec.max_concurrent_builds:
        return f"BuilderPool {name!r} runs {running} builds, its maxConcurrentBuilds."
    return None


def _idle(pool: BuilderPool | InvalidBuilderPool) -> bool:
    ready = pool.status.condition(READY)
    return ready is not None and ready.reason == IDLE


class PoolBuilds:
    """Starts, observes and stops the builds of ServiceBuilds that name a pool."""

    def __init__(
        self, kube: PoolSource, runs: RunGateway, inputs: InputReader, settings: Settings, own_namespace: str
    ) -> None:
        self.kube = kube
        self.runs = runs
        self.inputs = inputs
        self.settings = settings
        self.own_namespace = own_namespace
        """Where the pools' client certificates are (the operator's namespace)."""
        self._waiting: dict[Key, tuple[str, datetime]] = {}
        """Which build of a ServiceBuild waits for its pool, since when (in this process: a restart waits
        afresh)."""

    def observe(self, name: str) -> Observation:
        return observe_run(self.runs.state(name))

    def stop(self, servicebuild: Key, keep: str | None) -> None:
        self.runs.stop(servicebuild, keep)
        waiting = self._waiting.get(servicebuild)
        if waiting is not None and waiting[0] != keep:
            del self._waiting[servicebuild]

    def builder(self, meta: ObjectMeta, pool_name: str) -> Builder | str:
        """The pool, ready for a build; else why the build waits (a pool scaled to zero is told a build
        wants it, and starts)."""
        key = (meta.namespace, pool_name)
        body = self.kube.get_builderpool(*key)
        pool = parse_builderpool(body) if body is not None else None
        wait = builder_wait(pool, pool_name, self.runs.running(key))
        if pool is not None and _idle(pool):
            self.runs.touch(key)
        if wait is not None or not isinstance(pool, BuilderPool) or pool.status.endpoint is None:
            return wait or f"BuilderPool {pool_name!r} is not ready."
        tls = self.kube.get_own_secret_data(self.own_namespace, naming.pool_ca_secret_name(*key))
        if not tls:
            return f"BuilderPool {pool_name!r} has no client certificate yet."
        return Builder(key, pool.status.endpoint, tls, pool.spec.cache_export)

    def waiting(
        self, servicebuild: Key, name: str, build: Build, why: str, timeouts: tuple[int, datetime]
    ) -> Outcome:
        """Waiting for the pool (`Reconciling`, WaitingForBuilder), up to `spec.pendingTimeout` (`timeouts`:
        it and the time now)."""
        pending_timeout, now = timeouts
        waiting = self._waiting.get(servicebuild)
        since = waiting[1] if waiting is not None and waiting[0] == name else now
        self._waiting[servicebuild] = (name, since)
        if (now - since).total_seconds() <= pending_timeout:
            return InProgress(build, Progress.WAITING_FOR_BUILDER, detail=why)
        del self._waiting[servicebuild]
        failure = Failure(
            Reason.PENDING_TIMEOUT, f"The build did not start within spec.pendingTimeout: {why}"
        )
        return Stalled(build, failure)

    def start(self, servicebuild: ServiceBuild, name: str, inputs: BuildInputs, builder: Builder) -> None:
        """Start buildctl for the build `name`; raise Problem for what the user must fix."""
        material = self.inputs.run_material(servicebuild, inputs, builder.tls)
        try:
            run = render_pool_run(servicebuild, self.settings, inputs, builder=builder, material=material)
        except ValueError as exc:
            raise Problem(Reason.INVALID_SPEC, str(exc)) from exc
        self._waiting.pop(servicebuild.metadata.key, None)
        self.runs.start(servicebuild.metadata.key, name, builder.key, run)
