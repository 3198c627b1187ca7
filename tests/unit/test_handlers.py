"""We test these aspects of the Kopf wiring, by calling the handlers as Kopf does:

- a ConfigMap no ServiceBuild builds from is filtered out before any handler runs (no work, no log);
- the ConfigMap handler copies the names from Kopf's index on the event loop before reconciling in
  worker threads: the index changing meanwhile (Kopf updates it on the loop) cannot break the loop;
- the resync reads its LIST page by page, reconciles the ServiceBuilds of every page once the whole
  LIST is read, and keeps none of their bodies while it waits for the next tick;
- the free memory of a burst is handed back: the C heap trimmed once a tick's reconciles are done, and
  after a collection once a term's first sweep has reconciled every ServiceBuild;
- Kopf reads what exists in one LIST (pages make its wait for the indexes longer) and runs as many
  per-object workers as objects have events (a limit deadlocks the first listing with indexes, kopf#1243);
- Kopf itself writes nothing to the objects (a standby must not): only event and index handlers are
  registered, no create/update/delete handlers (which keep progress in annotations) and no daemons;
- a ServiceBuild's event is news when its generation or annotations changed, or it is new to the term; a
  status change alone (the operator's own write) is not;
- a ServiceBuild's events only queue its key, once however many arrive before it is reached; the queue's
  consumers reconcile it while this replica leads.
"""

import asyncio
import contextlib
import gc
import threading
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from servicebuild import handlers
from servicebuild.__main__ import kopf_settings
from servicebuild.config import Settings
from servicebuild.reconciler import Reconciler
from support.fakes import FakeGit, FakeKube, FakeRegistry, FakeRuns

NAMESPACE = "shop"


def test_only_configmaps_that_servicebuilds_build_from_pass_the_filter() -> None:
    index = {(NAMESPACE, "checkout-context"): ["checkout"]}
    assert handlers._builds_from(NAMESPACE, "checkout-context", index)
    assert not handlers._builds_from(NAMESPACE, "kube-root-ca.crt", index)
    assert not handlers._builds_from("other", "checkout-context", index)


@dataclass
class IndexChangingKube:
    """Reads a ServiceBuild; meanwhile, as Kopf's event loop may, the index loses and gains entries."""

    live: set[str]
    read: list[str] = field(default_factory=list)

    def get_servicebuild(self, namespace: str, name: str) -> dict[str, Any] | None:  # noqa: ARG002
        self.read.append(name)
        self.live.discard(name)
        self.live.add(f"{name}-copy")
        return None  # deleted meanwhile: nothing to reconcile


async def test_the_index_may_change_while_the_servicebuilds_are_reconciled() -> None:
    live = {"checkout", "cart"}
    kube = IndexChangingKube(live)
    reconciler = Reconciler(
        FakeKube(now="2026-11-28T10:00:00Z"),
        FakeRegistry(),
        FakeGit(),
        Settings(),
        runs=FakeRuns(datetime(2026, 11, 28, 10, tzinfo=UTC)),
    )
    runtime = handlers.Runtime(settings=Settings(), kube=kube, reconciler=reconciler)  # type: ignore[arg-type]

    await handlers.context_configmap_event(
        namespace=NAMESPACE,
        name="context",
        memo=kopf.Memo(runtime=runtime),
        servicebuilds_by_configmap={(NAMESPACE, "context"): live},
    )

    assert sorted(kube.read) == ["cart", "checkout"]


class Body(dict[str, Any]):
    """A ServiceBuild as the API returns it, which a weak reference can follow (a plain dict cannot)."""


def _body(name: str, generation: int = 1) -> Body:
    # An unreadable spec: never idle, so every tick reconciles it.
    return Body(
        metadata={"namespace": NAMESPACE, "name": name, "uid": f"uid-{name}", "generation": generation},
        spec={},
    )


@dataclass
class PagingKube:
    """Serves each tick's LIST as two pages of fresh bodies; the second tick's LIST waits for `release`."""

    pages: tuple[tuple[str, ...], ...] = (("checkout", "cart"), ("search",))
    read: list[str] = field(default_factory=list)
    listed: list[weakref.ref[Body]] = field(default_factory=list)
    second_tick: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    ticks: int = 0

    def servicebuild_pages(self, namespaces: Iterable[str]) -> Iterator[list[dict[str, Any]]]:  # noqa: ARG002
        self.ticks += 1
        if self.ticks > 1:
            self.second_tick.set()
            self.release.wait()
        for names in self.pages:
            page = [_body(name) for name in names]
            self.listed += map(weakref.ref, page)
            yield list(page)

    def get_servicebuild(self, namespace: str, name: str) -> dict[str, Any] | None:  # noqa: ARG002
        self.read.append(name)
        return None  # deleted meanwhile: nothing more to reconcile

    def list_build_jobs(self, namespaces: Iterable[str]) -> list[dict[str, Any]]:  # noqa: ARG002
        return []


def _paging_runtime(kube: PagingKube) -> handlers.Runtime:
    settings = Settings(resync_seconds=0.01)
    reconciler = Reconciler(
        FakeKube(now="2026-11-28T10:00:00Z"),
        FakeRegistry(),
        FakeGit(),
        settings,
        runs=FakeRuns(datetime(2026, 11, 28, 10, tzinfo=UTC)),
    )
    return handlers.Runtime(settings=settings, kube=kube, reconciler=reconciler, acting=True)  # type: ignore[arg-type]


async def test_a_resync_tick_reconciles_every_page_once_the_list_is_read() -> None:
    kube = PagingKube()

    await handlers._resync(_paging_runtime(kube), {})  # type: ignore[arg-type]

    assert kube.read == ["checkout", "cart", "search"]


async def test_no_servicebuild_body_outlives_its_resync_tick() -> None:
    kube = PagingKube()
    resync = asyncio.create_task(handlers._resync_forever(_paging_runtime(kube), {}))  # type: ignore[arg-type]
    try:
        assert await asyncio.to_thread(kube.second_tick.wait, 30), "the second tick did not start"
        gc.collect()
        assert len(kube.listed) == 3
        assert [ref() for ref in kube.listed] == [None, None, None]
    finally:
        kube.release.set()
        resync.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await resync


async def test_a_resync_tick_trims_the_heap_once_its_reconciles_are_done() -> None:
    kube = PagingKube()
    runtime = _paging_runtime(kube)
    read_when_trimmed: list[list[str]] = []
    runtime.trim_memory = lambda: read_when_trimmed.append(list(kube.read))

    await handlers._resync(runtime, {})  # type: ignore[arg-type]

    assert read_when_trimmed == [["checkout", "cart", "search"]]


async def test_a_terms_first_sweep_collects_and_trims_once_every_servicebuild_is_reconciled() -> None:
    kube = PagingKube()
    runtime = _paging_runtime(kube)
    runtime.acting = False
    read_when_trimmed: list[list[str]] = []
    runtime.trim_memory = lambda: read_when_trimmed.append(list(kube.read))

    await handlers._begin_term(runtime)

    assert runtime.acting
    assert read_when_trimmed == [["checkout", "cart", "search"]]


def test_kopf_lists_in_one_piece_with_a_worker_for_every_object_with_events() -> None:
    settings = kopf_settings(Settings(workers=3))

    assert settings.watching.chunk_size is None
    assert settings.queueing.worker_limit is None
    assert settings.execution.max_workers == 3


def test_kopf_keeps_no_progress_on_any_object() -> None:
    registry = kopf.get_default_registry()
    assert registry._watching.get_all_handlers(), "the event handlers are registered"
    assert not registry._changing.get_all_handlers()
    assert not registry._spawning.get_all_handlers()
    assert not registry._webhooks.get_all_handlers()


def test_only_a_new_generation_or_annotation_is_news() -> None:
    reconciler = Reconciler(
        FakeKube(now="2026-11-28T10:00:00Z"),
        FakeRegistry(),
        FakeGit(),
        Settings(),
        runs=FakeRuns(datetime(2026, 11, 28, 10, tzinfo=UTC)),
    )
    runtime = handlers.Runtime(
        settings=Settings(), kube=FakeKube(now="2026-11-28T10:00:00Z"), reconciler=reconciler
    )  # type: ignore[arg-type]
    key = (NAMESPACE, "checkout")

    assert runtime.noticed(key, 1, {})
    assert not runtime.noticed(key, 1, {}), "a status write changes neither"
    assert runtime.noticed(key, 2, {})
    assert runtime.noticed(key, 2, {"servicebuild.dev/requested-at": "2026-11-28T10:01:00Z"})
    assert not runtime.noticed(key, 2, {"servicebuild.dev/requested-at": "2026-11-28T10:01:00Z"})
    runtime.begin_term([])
    assert runtime.noticed(key, 2, {"servicebuild.dev/requested-at": "2026-11-28T10:01:00Z"}), "a new term"


async def test_events_queue_their_servicebuild_once_and_the_queue_reconciles_it() -> None:
    kube = PagingKube()
    runtime = _paging_runtime(kube)
    events = [("checkout", 1), ("checkout", 2), ("cart", 1), ("checkout", 3)]
    for name, generation in events:
        await handlers.servicebuild_event(
            type="MODIFIED",
            namespace=NAMESPACE,
            name=name,
            body=kopf.Body(_body(name, generation)),
            memo=kopf.Memo(runtime=runtime),
        )
    assert kube.read == [], "an event only queues its ServiceBuild"

    consumer = asyncio.create_task(handlers._reconcile_queued_forever(runtime))
    try:
        while len(kube.read) < 2 and not consumer.done():  # noqa: ASYNC110 - waits for the consumer's thread
            await asyncio.sleep(0.01)
        assert kube.read == ["checkout", "cart"]
        runtime.enqueue((NAMESPACE, "checkout"))
        while len(kube.read) < 3 and not consumer.done():  # noqa: ASYNC110 - as above
            await asyncio.sleep(0.01)
        assert kube.read == ["checkout", "cart", "checkout"], "reached, a key may be queued again"
        runtime.acting = False
        runtime.enqueue((NAMESPACE, "search"))
        while runtime._queued and not consumer.done():  # noqa: ASYNC110 - until the consumer took it
            await asyncio.sleep(0.01)
        runtime.acting = True
        runtime.enqueue((NAMESPACE, "cart"))
        while len(kube.read) < 4 and not consumer.done():  # noqa: ASYNC110 - as above
            await asyncio.sleep(0.01)
        assert kube.read == ["checkout", "cart", "checkout", "cart"], "queued by a term that ended"
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
