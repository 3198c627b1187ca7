"""We test these aspects, with the real operator process and KMock's API emulator:

- a BuilderPool gets its CA and client certificate in the operator's namespace (never in the pool's), its
  daemon's server Secret, a Deployment running buildkitd with mTLS and a Service; its status says
  Reconciling until the Deployment is available (the test plays the Deployment controller), then Ready
  with the endpoint; the certificates chain to the pool's CA and name the Service;
- a pool whose storage is a claim gets a StatefulSet instead;
- a pool deleted takes its CA Secret with it.
"""

import base64
from typing import Any

import pytest
from cluster import BUILDERPOOLS, DEPLOYMENTS, SECRETS, SERVICES, STATEFULSETS, Cluster, condition, eventually
from cryptography import x509
from operator_process import OperatorProcess

from servicebuild.api.models import GROUP, VERSION
from servicebuild.naming import pool_ca_secret_name, pool_daemon_name

NAMESPACE = "shop"
OWN = "servicebuild-system"
POOL = "builders"
DAEMON = pool_daemon_name(POOL)


@pytest.fixture
def operator_env(operator_env: dict[str, str]) -> dict[str, str]:
    """The operator's own namespace, as its Deployment sets it."""
    return {**operator_env, "SERVICEBUILD_LEASE_NAMESPACE": OWN}


async def create_pool(cluster: Cluster, spec: dict[str, Any]) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BuilderPool",
        "metadata": {"name": POOL, "namespace": NAMESPACE, "generation": 1},
        "spec": spec,
    }
    await cluster.create(BUILDERPOOLS, body)


def pool_condition(cluster: Cluster, condition_type: str) -> dict[str, Any] | None:
    return condition(cluster.get(BUILDERPOOLS, NAMESPACE, POOL) or {}, condition_type)


def certificate(secret: dict[str, Any], key: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(secret["data"][key]))


async def test_a_pool_gets_its_daemon_and_is_ready_once_it_is_available(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    await create_pool(cluster, {})
    deployment = await eventually(lambda: cluster.get(DEPLOYMENTS, NAMESPACE, DAEMON))
    reconciling = await eventually(lambda: pool_condition(cluster, "Reconciling"))
    assert reconciling["status"] == "True"
    assert pool_condition(cluster, "Ready")["status"] == "False"  # type: ignore[index]
    assert cluster.get(SERVICES, NAMESPACE, DAEMON) is not None

    ca_secret = cluster.get(SECRETS, OWN, pool_ca_secret_name(NAMESPACE, POOL))
    server_secret = cluster.get(SECRETS, NAMESPACE, DAEMON)
    assert ca_secret is not None
    assert server_secret is not None
    assert set(server_secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}, (
        "the CA's key stays with the operator"
    )
    assert [s for s in cluster.all(SECRETS, NAMESPACE) if "ca.key" in (s.get("data") or {})] == []
    ca = certificate(ca_secret, "ca.crt")
    certificate(server_secret, "tls.crt").verify_directly_issued_by(ca)
    certificate(ca_secret, "tls.crt").verify_directly_issued_by(ca)
    names = certificate(server_secret, "tls.crt").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert f"{DAEMON}.{NAMESPACE}.svc" in names.value.get_values_for_type(x509.DNSName)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--tlscacert" in container["args"]

    # The Deployment controller's report: the daemon is up.
    generation = deployment["metadata"].get("generation") or 1
    await cluster.patch(
        DEPLOYMENTS,
        NAMESPACE,
        DAEMON,
        {"status": {"observedGeneration": generation, "updatedReplicas": 1, "availableReplicas": 1}},
        status=True,
    )
    ready = await eventually(lambda: (pool_condition(cluster, "Ready") or {}).get("status") == "True")
    assert ready
    pool = cluster.get(BUILDERPOOLS, NAMESPACE, POOL)
    assert pool is not None
    assert pool["status"]["endpoint"] == f"tcp://{DAEMON}.{NAMESPACE}.svc:1234"

    await cluster.delete(BUILDERPOOLS, NAMESPACE, POOL)
    await eventually(lambda: cluster.get(SECRETS, OWN, pool_ca_secret_name(NAMESPACE, POOL)) is None)


async def test_a_pool_on_a_claim_gets_a_statefulset(cluster: Cluster, operator: OperatorProcess) -> None:
    await create_pool(cluster, {"storage": {"persistentVolumeClaim": {"size": "20Gi"}}})
    statefulset = await eventually(lambda: cluster.get(STATEFULSETS, NAMESPACE, DAEMON))
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"] == {"storage": "20Gi"}
    assert cluster.get(DEPLOYMENTS, NAMESPACE, DAEMON) is None
