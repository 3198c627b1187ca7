"""We test these aspects of the Kopf wiring, by calling the handlers as Kopf does:

- a ConfigMap no ServiceBuild builds from is filtered out before any handler runs (no work, no log);
- the ConfigMap handler copies the names from Kopf's index on the event loop before reconciling in
  worker threads: the index changing meanwhile (Kopf updates it on the loop) cannot break the loop.
"""

from dataclasses import dataclass, field
from typing import Any

import kopf

from servicebuild import handlers
from servicebuild.config import Settings
from servicebuild.reconciler import Reconciler
from support.fakes import FakeGit, FakeKube, FakeRegistry

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
    reconciler = Reconciler(FakeKube(now="2026-11-28T10:00:00Z"), FakeRegistry(), FakeGit(), Settings())
    runtime = handlers.Runtime(settings=Settings(), kube=kube, reconciler=reconciler)  # type: ignore[arg-type]

    await handlers.context_configmap_event(
        namespace=NAMESPACE,
        name="context",
        memo=kopf.Memo(runtime=runtime),
        servicebuilds_by_configmap={(NAMESPACE, "context"): live},
    )

    assert sorted(kube.read) == ["cart", "checkout"]
