"""Reconciling a BuilderPool, driven with an in-memory Kubernetes gateway (no mocks of the code under test).

We test these aspects:
- a new pool gets its CA and client certificate in the operator's namespace, its server Secret, daemon and
  Service in its own, and the status `Reconciling` with its endpoint; the daemon available makes it `Ready`;
- a reconcile with nothing changed writes nothing;
- certificates are renewed when due (the clock is injected): the server certificate's renewal restarts the
  daemon; a renewed CA re-issues both leaves;
- the storage moving to a claim replaces the Deployment with a StatefulSet;
- a builder image the operator does not allow, or an invalid spec, is `Stalled` and creates nothing;
- a pool gone takes its CA Secret with it.
"""

import base64
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from servicebuild import naming
from servicebuild.config import Settings
from servicebuild.pki import CA_LIFETIME, LEAF_LIFETIME, KeyPair
from servicebuild.pools import PoolReconciler
from servicebuild.render.pool import read_pair

NOW = datetime(2026, 11, 28, 10, 15, tzinfo=UTC)
OWN = "servicebuild-system"
KEY = ("shop", "builders")


class InMemoryKube:
    """The calls `PoolReconciler` makes, on dicts; every write recorded."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str]] = []

    def _get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def _put(self, kind: str, body: dict[str, Any], *, exists: bool) -> dict[str, Any]:
        key = (kind, body["metadata"]["namespace"], body["metadata"]["name"])
        assert (key in self.objects) == exists, f"{key}: exists={exists} but stored={key in self.objects}"
        stored = copy.deepcopy(body)
        stored["metadata"]["generation"] = (
            int((self.objects.get(key) or {}).get("metadata", {}).get("generation", 0)) + 1
        )
        self.objects[key] = stored
        self.writes.append(key)
        return copy.deepcopy(stored)

    def _delete(self, kind: str, namespace: str, name: str) -> None:
        if self.objects.pop((kind, namespace, name), None) is not None:
            self.writes.append((kind, namespace, name))

    def get_builderpool(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get("BuilderPool", namespace, name)

    def patch_builderpool_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        pool = self.objects[("BuilderPool", namespace, name)]
        merged = {**(pool.get("status") or {}), **status}
        pool["status"] = {key: value for key, value in merged.items() if value is not None}
        self.writes.append(("BuilderPool/status", namespace, name))

    def get_secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        secret = self._get("Secret", namespace, name)
        return None if secret is None else secret["data"]

    def write_pool_secret(self, body: dict[str, Any], *, exists: bool) -> None:
        assert body["metadata"]["namespace"] != OWN
        self._put("Secret", body, exists=exists)

    def get_own_secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        assert namespace == OWN
        return self.get_secret_data(namespace, name)

    def write_own_secret(self, body: dict[str, Any], *, exists: bool) -> None:
        assert body["metadata"]["namespace"] == OWN
        self._put("Secret", body, exists=exists)

    def delete_own_secret(self, namespace: str, name: str) -> None:
        assert namespace == OWN
        self._delete("Secret", namespace, name)

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get("Deployment", namespace, name)

    def write_deployment(self, body: dict[str, Any], *, exists: bool) -> dict[str, Any]:
        return self._put("Deployment", body, exists=exists)

    def delete_deployment(self, namespace: str, name: str) -> None:
        self._delete("Deployment", namespace, name)

    def get_statefulset(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get("StatefulSet", namespace, name)

    def write_statefulset(self, body: dict[str, Any], *, exists: bool) -> dict[str, Any]:
        return self._put("StatefulSet", body, exists=exists)

    def delete_statefulset(self, namespace: str, name: str) -> None:
        self._delete("StatefulSet", namespace, name)

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get("Service", namespace, name)

    def write_service(self, body: dict[str, Any], *, exists: bool) -> None:
        self._put("Service", body, exists=exists)

    def add_pool(self, spec: dict[str, Any] | None = None) -> None:
        metadata = {"name": KEY[1], "namespace": KEY[0], "uid": "uid-1", "generation": 1}
        self.objects[("BuilderPool", *KEY)] = {"metadata": metadata, "spec": spec or {}}

    def make_available(self, kind: str = "Deployment") -> None:
        workload = self.objects[(kind, KEY[0], naming.pool_daemon_name(KEY[1]))]
        generation = workload["metadata"]["generation"]
        workload["status"] = {"observedGeneration": generation, "updatedReplicas": 1, "availableReplicas": 1}

    def condition(self, condition_type: str) -> dict[str, Any]:
        status = self.objects[("BuilderPool", *KEY)]["status"]
        return next(c for c in status["conditions"] if c["type"] == condition_type)


class Activity:
    """The builds on pools as `poolruns.PoolRuns` counts them (of the one pool here)."""

    def __init__(self) -> None:
        self.builds = 0
        self.last = NOW

    def running(self, pool: tuple[str, str]) -> int:  # noqa: ARG002 - one pool
        return self.builds

    def last_activity(self, pool: tuple[str, str]) -> datetime:  # noqa: ARG002 - one pool
        return self.last


def reconciler(kube: InMemoryKube, activity: Activity | None = None, **settings: Any) -> PoolReconciler:
    return PoolReconciler(kube, Settings(**settings), OWN, activity=activity or Activity())


DAEMON = naming.pool_daemon_name(KEY[1])
CA_SECRET = ("Secret", OWN, naming.pool_ca_secret_name(*KEY))
SERVER_SECRET = ("Secret", KEY[0], DAEMON)


def pair(kube: InMemoryKube, secret: tuple[str, str, str], cert: str, key: str) -> KeyPair:
    found = read_pair(kube.objects[secret]["data"], cert, key)
    assert found is not None
    return found


def test_a_new_pool_gets_its_objects_then_is_ready_when_its_daemon_is() -> None:
    kube = InMemoryKube()
    kube.add_pool()
    pools = reconciler(kube)
    pools.reconcile(KEY, NOW)
    assert set(kube.writes) == {
        CA_SECRET,
        SERVER_SECRET,
        ("Deployment", *KEY[:1], DAEMON),
        ("Service", *KEY[:1], DAEMON),
        ("BuilderPool/status", *KEY),
    }
    assert kube.condition("Ready")["status"] == "False"
    assert kube.condition("Reconciling")["reason"] == "DaemonStarting"
    status = kube.objects[("BuilderPool", *KEY)]["status"]
    assert status["endpoint"] == f"tcp://{DAEMON}.shop.svc:1234"
    ca_in_pool = base64.b64decode(kube.objects[SERVER_SECRET]["data"]["ca.crt"])
    assert ca_in_pool == pair(kube, CA_SECRET, "ca.crt", "ca.key").cert_pem
    assert "ca.key" not in kube.objects[SERVER_SECRET]["data"]

    kube.make_available()
    pools.reconcile(KEY, NOW)
    assert kube.condition("Ready")["status"] == "True"
    assert kube.condition("Ready")["reason"] == "DaemonAvailable"


def replicas(kube: InMemoryKube) -> int:
    workload = kube.objects[("Deployment", KEY[0], DAEMON)]
    count: int = workload["spec"]["replicas"]
    return count


def test_an_idle_pool_scales_to_zero_and_a_build_wanting_it_starts_it_again() -> None:
    kube, activity = InMemoryKube(), Activity()
    kube.add_pool({"idleTimeout": "30m"})
    pools = reconciler(kube, activity)
    pools.reconcile(KEY, NOW + timedelta(minutes=29, seconds=59))
    kube.make_available()
    pools.reconcile(KEY, NOW + timedelta(minutes=29, seconds=59))
    assert (replicas(kube), kube.condition("Ready")["reason"]) == (1, "DaemonAvailable")

    pools.reconcile(KEY, NOW + timedelta(minutes=30))
    assert replicas(kube) == 0
    ready = kube.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Idle")
    assert kube.condition("Reconciling")["status"] == "False"

    activity.last = NOW + timedelta(hours=2)  # a build asked for the pool
    pools.reconcile(KEY, NOW + timedelta(hours=2))
    assert replicas(kube) == 1
    assert kube.condition("Reconciling")["reason"] == "DaemonStarting"


def test_a_pool_with_builds_running_stays_up_and_says_how_many() -> None:
    kube, activity = InMemoryKube(), Activity()
    kube.add_pool({"idleTimeout": "1m"})
    activity.builds = 2
    pools = reconciler(kube, activity)
    pools.reconcile(KEY, NOW + timedelta(hours=1))
    assert replicas(kube) == 1
    assert kube.objects[("BuilderPool", *KEY)]["status"]["buildsRunning"] == 2


def test_an_idle_timeout_of_zero_keeps_the_daemon_on() -> None:
    kube = InMemoryKube()
    kube.add_pool({"idleTimeout": "0s"})
    reconciler(kube).reconcile(KEY, NOW + timedelta(days=30))
    assert replicas(kube) == 1


def test_nothing_changed_writes_nothing() -> None:
    kube = InMemoryKube()
    kube.add_pool()
    pools = reconciler(kube)
    pools.reconcile(KEY, NOW)
    kube.writes.clear()
    pools.reconcile(KEY, NOW)
    assert kube.writes == []


def test_a_due_server_certificate_is_renewed_and_restarts_the_daemon() -> None:
    kube = InMemoryKube()
    kube.add_pool()
    pools = reconciler(kube)
    pools.reconcile(KEY, NOW)
    before = pair(kube, SERVER_SECRET, "tls.crt", "tls.key")
    client = pair(kube, CA_SECRET, "tls.crt", "tls.key")
    kube.writes.clear()
    pools.reconcile(KEY, NOW + LEAF_LIFETIME * 0.7)
    after = pair(kube, SERVER_SECRET, "tls.crt", "tls.key")
    assert after != before
    deployment = kube.objects[("Deployment", KEY[0], DAEMON)]
    assert (
        deployment["spec"]["template"]["metadata"]["annotations"][naming.ANNOTATION_TLS] == after.fingerprint
    )
    assert pair(kube, CA_SECRET, "tls.crt", "tls.key") != client, (
        "the client certificate, as old, is renewed too"
    )


def test_a_renewed_ca_reissues_both_leaves() -> None:
    kube = InMemoryKube()
    kube.add_pool()
    pools = reconciler(kube)
    pools.reconcile(KEY, NOW)
    ca = pair(kube, CA_SECRET, "ca.crt", "ca.key")
    later = NOW + CA_LIFETIME * 0.7
    pools.reconcile(KEY, later)
    renewed = pair(kube, CA_SECRET, "ca.crt", "ca.key")
    assert renewed != ca
    assert base64.b64decode(kube.objects[SERVER_SECRET]["data"]["ca.crt"]) == renewed.cert_pem


def test_moving_the_storage_to_a_claim_replaces_the_deployment_with_a_statefulset() -> None:
    kube = InMemoryKube()
    kube.add_pool()
    pools = reconciler(kube)
    pools.reconcile(KEY, NOW)
    kube.objects[("BuilderPool", *KEY)]["spec"] = {"storage": {"persistentVolumeClaim": {"size": "50Gi"}}}
    pools.reconcile(KEY, NOW)
    assert ("Deployment", KEY[0], DAEMON) not in kube.objects
    statefulset = kube.objects[("StatefulSet", KEY[0], DAEMON)]
    assert statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] == {
        "storage": "50Gi"
    }
    kube.make_available("StatefulSet")
    pools.reconcile(KEY, NOW)
    assert kube.condition("Ready")["status"] == "True"


def test_a_builder_image_not_allowed_is_stalled_and_creates_nothing() -> None:
    kube = InMemoryKube()
    kube.add_pool({"builderImage": "registry.example.com/buildkit:v1-rootless"})
    reconciler(kube).reconcile(KEY, NOW)
    assert kube.writes == [("BuilderPool/status", *KEY)]
    assert kube.condition("Stalled")["status"] == "True"
    assert "spec.builderImage" in kube.condition("Stalled")["message"]
    allowed = InMemoryKube()
    allowed.add_pool({"builderImage": "registry.example.com/buildkit:v1-rootless"})
    reconciler(allowed, allowed_builder_images="registry.example.com/buildkit:v1-rootless").reconcile(
        KEY, NOW
    )
    assert allowed.condition("Stalled")["status"] == "False"


def test_an_invalid_spec_is_stalled_naming_the_field() -> None:
    kube = InMemoryKube()
    kube.add_pool({"maxConcurrentBuilds": 0})
    reconciler(kube).reconcile(KEY, NOW)
    assert kube.writes == [("BuilderPool/status", *KEY)]
    assert "spec.maxConcurrentBuilds" in kube.condition("Stalled")["message"]


def test_a_pool_gone_takes_its_ca_with_it() -> None:
    kube = InMemoryKube()
    kube.add_pool()
    pools = reconciler(kube)
    pools.reconcile(KEY, NOW)
    del kube.objects[("BuilderPool", *KEY)]
    pools.reconcile(KEY, NOW)
    assert CA_SECRET not in kube.objects
