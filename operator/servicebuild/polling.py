"""What the operator remembers of the sources it follows: the newest commit of each polled revision and the
digest of each watched base image, shared by every ServiceBuild that follows the same one, and the pace
at which it may ask git hosts. Thread-safe; the clock and the sleep are injected."""

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from servicebuild.credentials import GitCredentials


@dataclass(frozen=True)
class LookupKey:
    """What one remote lookup answers, for whom: never shared across namespaces or credentials, so that a
    lookup's result cannot tell one tenant about a repository only another can read."""

    namespace: str
    url: str
    revision: str | None
    credentials: str
    """A fingerprint of the auth Secret's data (empty without one): other credentials, another lookup."""


def credentials_fingerprint(secret_name: str | None, data: Mapping[str, str] | None) -> str:
    """Which credentials a lookup used, without holding them: the Secret's name and a hash of its data."""
    if secret_name is None:
        return ""
    content = json.dumps(dict(data or {}), sort_keys=True).encode()
    return f"{secret_name}:{hashlib.sha256(content).hexdigest()}"


@dataclass(frozen=True)
class Lookup:
    commit: str
    at: datetime


class HostPace:
    """At most `per_second` lookups a second to one host, operator-wide: `wait` blocks the caller's
    thread until its turn."""

    def __init__(
        self,
        per_second: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval = 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: str) -> None:
        with self._lock:
            now = self._clock()
            turn = max(now, self._next.get(host, now))
            self._next[host] = turn + self._interval
        if turn > now:
            self._sleep(turn - now)


class CommitCache:
    """The newest commit of each polled revision, looked up at most once per interval whoever asks."""

    def __init__(self) -> None:
        self._lookups: dict[LookupKey, Lookup] = {}
        self._locks: dict[LookupKey, threading.Lock] = {}
        self._guard = threading.Lock()

    def latest(
        self,
        key: LookupKey,
        resolve: Callable[[GitCredentials | None], str],
        credentials: GitCredentials | None,
        *,
        fresh_after: datetime,
        now: datetime,
    ) -> Lookup:
        """The commit of `key`, looked up again (`resolve`) unless a lookup after `fresh_after` is known.

        Callers for the same key wait for one lookup and share its answer.
        """
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            known = self._lookups.get(key)
            if known is not None and known.at > fresh_after:
                return known
            lookup = Lookup(resolve(credentials), now)
            self._lookups[key] = lookup
            return lookup


def next_poll(lookup_at: datetime, interval: timedelta, key: str) -> datetime:
    """When to look again: the interval after the last lookup, give or take a tenth, the same for the same
    key (so that many ServiceBuilds polling on the same interval do not all ask at once)."""
    spread = int.from_bytes(hashlib.sha256(key.encode()).digest()[:2], "big") / 0xFFFF  # 0..1
    return lookup_at + interval * (0.9 + 0.2 * spread)


class BaseImageDigests:
    """The digest each watched base image reference has now, as the last check found it, per credentials."""

    def __init__(self) -> None:
        self._digests: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def get(self, ref: str, credentials: str) -> str | None:
        with self._lock:
            return self._digests.get((ref, credentials))

    def set(self, ref: str, credentials: str, digest: str) -> None:
        with self._lock:
            self._digests[(ref, credentials)] = digest
