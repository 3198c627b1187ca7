"""Limits on running builds, operator-wide and per namespace, with a first-come first-served queue.

In memory and thread-safe; no I/O. The operator seeds it with the unfinished build Jobs at start-up,
tells it about every Job it creates and every Job that finishes, and asks it before creating one.
A waiting build keeps its place across restarts because its `since` is stored in its status.
"""

import threading
from dataclasses import dataclass, field

Key = tuple[str, str]
"""(namespace, name) of a ServiceBuild."""


@dataclass(frozen=True)
class Decision:
    """Start now, or wait at `position` (1 = next) behind the builds that asked earlier."""

    admitted: bool
    position: int = 0
    reason: str = ""


@dataclass
class BuildSlots:
    """How many builds run, who waits, and who may start next. A limit of 0 means no limit."""

    max_running: int = 0
    max_running_per_namespace: int = 0
    _running: dict[str, set[str]] = field(default_factory=dict)
    """Per namespace, the names of the unfinished build Jobs."""
    _waiting: dict[Key, str] = field(default_factory=dict)
    """Per waiting ServiceBuild, since when it waits (RFC 3339, UTC)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, key: Key, job_name: str, since: str) -> Decision:
        """Admit the build of `key` (its Job counts as running from now) or queue it."""
        namespace = key[0]
        with self._lock:
            if job_name in self._running.get(namespace, set()):
                return Decision(admitted=True)
            self._waiting.setdefault(key, since)
            queue = self._queue()
            position = queue.index(key) + 1
            blocked = self._blocked(namespace)
            # Earlier waiters get the free slots first, but only those that could start: a namespace
            # at its own limit must not hold up the others.
            earlier = [other for other in queue[: position - 1] if not self._blocked(other[0])]
            if not blocked and self.max_running and len(earlier) >= self.max_running - self._total():
                blocked = "earlier builds take the free slots"
            same_namespace = [other for other in earlier if other[0] == namespace]
            free_in_namespace = self.max_running_per_namespace - len(self._running.get(namespace, set()))
            if not blocked and self.max_running_per_namespace and len(same_namespace) >= free_in_namespace:
                blocked = f"earlier builds in {namespace} take its free slots"
            if blocked:
                return Decision(admitted=False, position=position, reason=blocked)
            del self._waiting[key]
            self._running.setdefault(namespace, set()).add(job_name)
            return Decision(admitted=True)

    def started(self, namespace: str, job_name: str) -> None:
        """An unfinished build Job exists (found at start-up or seen on a watch)."""
        with self._lock:
            self._running.setdefault(namespace, set()).add(job_name)

    def finished(self, namespace: str, job_name: str) -> None:
        """A build Job finished or is gone: its slot is free."""
        with self._lock:
            self._running.get(namespace, set()).discard(job_name)

    def forget(self, key: Key) -> None:
        """The ServiceBuild no longer waits (deleted, or its build no longer needed)."""
        with self._lock:
            self._waiting.pop(key, None)

    def retain(self, present: set[Key]) -> None:
        """Forget waiters that no longer exist (a deletion the operator did not see)."""
        with self._lock:
            for key in set(self._waiting) - present:
                del self._waiting[key]

    def next_waiting(self) -> list[Key]:
        """The waiting ServiceBuilds that could start now, first come first, as many as slots are free."""
        with self._lock:
            startable = [key for key in self._queue() if not self._blocked(key[0])]
            free = self.max_running - self._total() if self.max_running else len(startable)
            return startable[: max(free, 0)]

    def _queue(self) -> list[Key]:
        return sorted(self._waiting, key=lambda key: (self._waiting[key], key))

    def _total(self) -> int:
        return sum(len(jobs) for jobs in self._running.values())

    def _blocked(self, namespace: str) -> str:
        """Why a build in `namespace` cannot start now; empty when it can."""
        total = self._total()
        if self.max_running and total >= self.max_running:
            return f"{total} builds are running, the operator's limit (SERVICEBUILD_MAX_RUNNING_BUILDS)"
        in_namespace = len(self._running.get(namespace, set()))
        if self.max_running_per_namespace and in_namespace >= self.max_running_per_namespace:
            return (
                f"{in_namespace} builds are running in {namespace}, the namespace limit"
                " (SERVICEBUILD_MAX_RUNNING_BUILDS_PER_NAMESPACE)"
            )
        return ""
