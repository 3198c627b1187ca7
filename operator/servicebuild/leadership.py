"""The election loop: read the Lease, claim or renew it, and say when this replica begins or ends leading.

The decisions are `election.Election`'s; this module only does the I/O in their order. No Kopf here.
"""

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Protocol

from servicebuild.election import Election, LeaseRecord, StoredLease
from servicebuild.kube import KubeError

logger = logging.getLogger(__name__)

_STANDBY_JITTER = 1.2
"""A standby retries after up to 1.2 retry periods, as client-go's, so that standbys do not go in step."""


class LeaseGateway(Protocol):
    def read_lease(self, namespace: str, name: str) -> StoredLease | None: ...
    def write_lease(
        self, namespace: str, name: str, record: LeaseRecord, resource_version: str | None
    ) -> bool: ...


class Leadership:
    """Keeps one replica's claim on the Lease; `may_act()` is what every acting write asks first."""

    def __init__(  # noqa: PLR0913 - the Lease's place, the decisions and their clock
        self,
        leases: LeaseGateway,
        *,
        namespace: str,
        name: str,
        election: Election,
        retry_period: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.leases = leases
        self.namespace = namespace
        self.name = name
        self.election = election
        self.retry_period = retry_period
        self.clock = clock
        # Its own thread: renewals must never wait behind reconciles in the shared executor, or a busy
        # leader would miss its renew deadline and stop acting.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="servicebuild-lease")

    def may_act(self) -> bool:
        return self.election.leading(self.clock())

    def try_acquire_or_renew(self) -> bool:
        """One round: read the Lease, write this replica's claim if it may; whether it leads now."""
        stored = self.leases.read_lease(self.namespace, self.name)
        now = self.clock()
        self.election.observe(None if stored is None else stored.record, now)
        claim = self.election.claim(now, datetime.now(UTC))
        if claim is None:
            return False
        version = None if stored is None else stored.resource_version
        if self.leases.write_lease(self.namespace, self.name, claim, version):
            self.election.written(claim, now, self.clock())
        else:
            self.election.lost()
        return self.may_act()

    def release(self) -> None:
        """Hand the Lease over at once, so that a standby need not wait for it to expire."""
        stored = self.leases.read_lease(self.namespace, self.name)
        if stored is None:
            return
        self.election.observe(stored.record, self.clock())
        record = self.election.release(datetime.now(UTC))
        self.election.lost()
        if record is not None and self.leases.write_lease(
            self.namespace, self.name, record, stored.resource_version
        ):
            logger.info("Released the lease %s/%s", self.namespace, self.name)

    def close(self) -> None:
        self._thread.shutdown(wait=False)

    async def run(self, elected: Callable[[], Awaitable[None]], deposed: Callable[[], None]) -> None:
        """Forever: claim or renew every retry period; `elected` when leading begins, `deposed` when it
        ends (by a refused renewal, or by the renew deadline passing while the API does not answer)."""
        leading = False
        while True:
            try:
                await asyncio.get_running_loop().run_in_executor(self._thread, self.try_acquire_or_renew)
            except KubeError as exc:
                logger.warning(
                    "Reading or writing the lease %s/%s failed: %s", self.namespace, self.name, exc
                )
            now_leading = self.may_act()
            if now_leading and not leading:
                logger.info(
                    "Leading, as %s, on the lease %s/%s", self.election.identity, self.namespace, self.name
                )
                await elected()
            elif leading and not now_leading:
                logger.warning(
                    "No longer leading: the lease %s/%s was not renewed", self.namespace, self.name
                )
                deposed()
            leading = now_leading
            jitter = 1.0 if leading else random.uniform(1.0, _STANDBY_JITTER)  # noqa: S311 - not a secret
            await asyncio.sleep(self.retry_period * jitter)
