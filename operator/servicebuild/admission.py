"""Limits on running builds, operator-wide and per namespace, with a first-come first-served queue.

In memory and thread-safe; no I/O. The one owner of build-slot bookkeeping: each reconcile reports what
it observed of its ServiceBuild through `update` (a build running in a Job, a build that wants to start,
or nothing), and gets back whether it may start and which waiting builds a freed slot lets start. A
waiting build keeps its place across restarts because its `since` is stored in its status.
"""

import threading
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

Key = tuple[str, str]
"""(namespace, name) of a ServiceBuild."""


@dataclass(frozen=True)
class Running:
    """The ServiceBuild's build runs in this Job (it holds a slot)."""

    job_name: str


@dataclass(frozen=True)
class Waiting:
    """The ServiceBuild wants to start this Job; it has waited since `since`."""

    job_name: str
    since: datetime


@dataclass(frozen=True)
class Idle:
    """No build of the ServiceBuild runs or waits (ended, settled, or the object is gone)."""


Claim = Running | Waiting | Idle


@dataclass(frozen=True)
class Answer:
    """Start now (`admitted`), or wait at `position` (1 = next) for `reason`; and which waiting
    ServiceBuilds may start now that a slot is free."""

    admitted: bool = True
    position: int = 0
    reason: str = ""
    wake: tuple[Key, ...] = ()


@dataclass
class BuildSlots:
    """How many builds run, who waits, and who may start next. A limit of 0 means no limit."""

    max_running: int = 0
    max_running_per_namespace: int = 0
    _running: dict[Key, str] = field(default_factory=dict)
    """Per ServiceBuild holding a slot, the Job its build runs in."""
    _waiting: dict[Key, datetime] = field(default_factory=dict)
    """Per waiting ServiceBuild, since when it waits."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, key: Key, claim: Claim) -> Answer:
        """Record what was observed of the ServiceBuild `key`; for `Waiting`, admit it or queue it."""
        with self._lock:
            held = key in self._running
            match claim:
                case Running(job_name):
                    self._waiting.pop(key, None)
                    self._running[key] = job_name
                    answer = Answer()
                case Waiting(job_name, since):
                    answer = self._admit(key, job_name, since)
                case Idle():
                    self._waiting.pop(key, None)
                    self._running.pop(key, None)
                    answer = Answer()
            if held and key not in self._running:
                answer = replace(answer, wake=tuple(other for other in self._startable() if other != key))
            return answer

    def present(self) -> set[Key]:
        """The ServiceBuilds that hold a slot or wait for one."""
        with self._lock:
            return set(self._running) | set(self._waiting)

    def _admit(self, key: Key, job_name: str, since: datetime) -> Answer:
        namespace = key[0]
        if self._running.get(key) == job_name:
            return Answer()
        self._running.pop(key, None)  # another Job of this ServiceBuild no longer counts: it was superseded
        self._waiting.setdefault(key, since)
        queue = self._queue()
        position = queue.index(key) + 1
        blocked = self._blocked(namespace)
        # Earlier waiters get the free slots first, but only those that could start: a namespace
        # at its own limit must not hold up the others.
        earlier = [other for other in queue[: position - 1] if not self._blocked(other[0])]
        if not blocked and self.max_running and len(earlier) >= self.max_running - len(self._running):
            blocked = "earlier builds take the free slots"
        same_namespace = [other for other in earlier if other[0] == namespace]
        free_in_namespace = self.max_running_per_namespace - self._running_in(namespace)
        if not blocked and self.max_running_per_namespace and len(same_namespace) >= free_in_namespace:
            blocked = f"earlier builds in {namespace} take its free slots"
        if blocked:
            return Answer(admitted=False, position=position, reason=blocked)
        del self._waiting[key]
        self._running[key] = job_name
        return Answer()

    def _startable(self) -> list[Key]:
        """The waiting ServiceBuilds that could start now, first come first, as many as slots are free."""
        startable = [key for key in self._queue() if not self._blocked(key[0])]
        free = self.max_running - len(self._running) if self.max_running else len(startable)
        return startable[: max(free, 0)]

    def _queue(self) -> list[Key]:
        return sorted(self._waiting, key=lambda key: (self._waiting[key], key))

    def _running_in(self, namespace: str) -> int:
        return sum(1 for running_namespace, _ in self._running if running_namespace == namespace)

    def _blocked(self, namespace: str) -> str:
        """Why a build in `namespace` cannot start now; empty when it can."""
        total = len(self._running)
        if self.max_running and total >= self.max_running:
            return f"{total} builds are running, the operator's limit (SERVICEBUILD_MAX_RUNNING_BUILDS)"
        in_namespace = self._running_in(namespace)
        if self.max_running_per_namespace and in_namespace >= self.max_running_per_namespace:
            return (
                f"{in_namespace} builds are running in {namespace}, the namespace limit"
                " (SERVICEBUILD_MAX_RUNNING_BUILDS_PER_NAMESPACE)"
            )
        return ""


_MINUTE = timedelta(minutes=1)


@dataclass
class Waves:
    """At most `per_minute` triggered builds (a new commit or base image) start in any minute; 0: no
    limit. A new `python:3.12-slim` used by 500 services then rebuilds them a wave at a time."""

    per_minute: int
    _started: deque[datetime] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, now: datetime) -> datetime | None:
        """None: start now (it counts from now); else when the next wave begins."""
        with self._lock:
            if not self.per_minute:
                return None
            while self._started and self._started[0] <= now - _MINUTE:
                self._started.popleft()
            if len(self._started) < self.per_minute:
                self._started.append(now)
                return None
            return self._started[0] + _MINUTE
