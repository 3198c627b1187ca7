"""We test builds on a builder pool with the real operator process, KMock's API emulator, a real registry and
the stand-in `buildctl` on the operator's PATH (`support.fake_buildctl`), which checks the mTLS files
against the pool's own certificates, pushes a real image and writes buildctl's metadata file:

- a ServiceBuild on a pool reaches Ready with the registry's digest and size, with no Job, its build secret
  handed over as a file, never in the arguments or the operator's log;
- a build waits for a pool that is not ready (`WaitingForBuilder`) and starts once it is;
- a pool scaled to zero after its idleTimeout starts again for the next build (the test plays the
  Deployment controller);
- an operator killed mid-build: the next one builds again, and one result is written.
"""

import base64
from pathlib import Path
from typing import Any

import helpers
import pytest
from cluster import BUILDERPOOLS, DEPLOYMENTS, JOBS, SECRETS, Cluster, condition, eventually
from helpers import NAMESPACE, ready, served, status_of
from operator_process import OperatorProcess

from servicebuild.api.models import GROUP, VERSION
from servicebuild.naming import pool_daemon_name
from support.fake_buildctl import calls, holds_started, plan, trust_daemon
from support.oci_registry import RunningRegistry, push_image
from support.processes import process_alive

OWN = "servicebuild-system"
POOL = "builders"
DAEMON = pool_daemon_name(POOL)
DAEMON_ADDRESS = f"{DAEMON}.{NAMESPACE}.svc:1234"
CONTEXT = "pool-context"
NPM_TOKEN = "npm-tok3n-4f1c0ffee"  # noqa: S105 - a test value, looked for in the log and the arguments


@pytest.fixture
def base_image(oci_registry: RunningRegistry) -> str:
    push_image(oci_registry, "tests/pool-base", "1", [b"base layer"])
    return f"{oci_registry.host}/tests/pool-base:1"


@pytest.fixture(autouse=True)
async def build_context(cluster: Cluster, base_image: str) -> None:
    dockerfile = (
        f"FROM {base_image} AS build\nWORKDIR /src\nCOPY main.c ./\n"
        "RUN --mount=type=secret,id=npmrc cc -o /app main.c\n"
        f"FROM {base_image} AS runtime\nCOPY --from=build /app /app\n"
    )
    await cluster.create_configmap(NAMESPACE, CONTEXT, {"Dockerfile": dockerfile, "main.c": "int main(){}"})


@pytest.fixture
def operator_env(operator_env: dict[str, str], fake_buildctl: Path, tmp_path: Path) -> dict[str, str]:
    """The stand-in buildctl first on the operator's PATH; its private run directory; its own namespace."""
    runs = tmp_path / "pool-runs"
    runs.mkdir()
    return {
        **operator_env,
        "PATH": f"{fake_buildctl.parent}:{operator_env['PATH']}",
        "SERVICEBUILD_POOL_RUN_DIRECTORY": str(runs),
        "SERVICEBUILD_LEASE_NAMESPACE": OWN,
    }


def spec(registry: RunningRegistry, name: str, **extra: Any) -> dict[str, Any]:
    return helpers.spec(
        registry,
        name,
        context=CONTEXT,
        builderPool=POOL,
        secrets=[{"id": "npmrc", "secretRef": {"name": "npm", "key": "token"}}],
        **extra,
    )


async def create_pool(cluster: Cluster, spec: dict[str, Any] | None = None) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BuilderPool",
        "metadata": {"name": POOL, "namespace": NAMESPACE, "generation": 1},
        "spec": spec or {},
    }
    await cluster.create(BUILDERPOOLS, body)


async def play_deployment_controller(cluster: Cluster) -> None:
    """What the Deployment controller reports for the daemon's Deployment as it is now."""
    deployment = await eventually(lambda: cluster.get(DEPLOYMENTS, NAMESPACE, DAEMON))
    replicas = deployment["spec"]["replicas"]
    generation = deployment["metadata"].get("generation") or 1
    status = {"observedGeneration": generation, "updatedReplicas": replicas, "availableReplicas": replicas}
    await cluster.patch(DEPLOYMENTS, NAMESPACE, DAEMON, {"status": status}, status=True)


def pool_ready_reason(cluster: Cluster) -> str | None:
    ready_condition = condition(cluster.get(BUILDERPOOLS, NAMESPACE, POOL) or {}, "Ready")
    return ready_condition["reason"] if ready_condition and ready_condition["status"] == "True" else None


async def ready_pool(cluster: Cluster, plan_dir: Path) -> None:
    """A pool whose daemon is available and serves the certificate the operator made for it."""
    await create_pool(cluster)
    await play_deployment_controller(cluster)
    await eventually(lambda: pool_ready_reason(cluster) == "DaemonAvailable")
    await trust_pool_certificate(cluster, plan_dir)


async def trust_pool_certificate(cluster: Cluster, plan_dir: Path) -> None:
    """The stand-in daemon serves the certificate the operator made for the pool and trusts its CA."""
    server = await eventually(lambda: cluster.get(SECRETS, NAMESPACE, DAEMON))
    trust_daemon(
        plan_dir,
        DAEMON_ADDRESS,
        base64.b64decode(server["data"]["ca.crt"]),
        base64.b64decode(server["data"]["tls.crt"]),
    )


@pytest.fixture(autouse=True)
async def npm_secret(cluster: Cluster) -> None:
    await cluster.create_secret(NAMESPACE, "npm", {"token": NPM_TOKEN.encode()})


async def test_a_build_on_a_pool_is_ready_with_the_registrys_digest_and_no_job(
    cluster: Cluster, operator: OperatorProcess, oci_registry: RunningRegistry, buildctl_plan_dir: Path
) -> None:
    await ready_pool(cluster, buildctl_plan_dir)
    await cluster.create_servicebuild(NAMESPACE, "checkout", spec(oci_registry, "checkout"))

    body = await eventually(lambda: ready(cluster, "checkout", 1))

    response = served(oci_registry, "shop/checkout", "1")
    digest, manifest = response.headers["Docker-Content-Digest"], response.json()
    output = body["status"]["output"]
    assert output["digest"] == digest
    assert output["sizeBytes"] == manifest["config"]["size"] + sum(
        layer["size"] for layer in manifest["layers"]
    )
    assert cluster.all(JOBS, NAMESPACE) == []
    (call,) = calls(buildctl_plan_dir)
    assert call["argv"][:4] == ["--addr", f"tcp://{DAEMON_ADDRESS}", "--tlsdir", "tls"]
    assert sorted(call["tlsdir"]) == ["ca.crt", "tls.crt", "tls.key"]
    assert "id=npmrc,src=secrets/npmrc" in call["argv"]
    assert not any(NPM_TOKEN in arg for arg in call["argv"])
    assert NPM_TOKEN not in operator.log
    assert base64.b64encode(NPM_TOKEN.encode()).decode() not in operator.log


async def test_a_build_waits_for_its_pool_and_starts_once_it_is_ready(
    cluster: Cluster, operator: OperatorProcess, oci_registry: RunningRegistry, buildctl_plan_dir: Path
) -> None:
    await cluster.create_servicebuild(NAMESPACE, "checkout", spec(oci_registry, "checkout"))
    reconciling = await eventually(
        lambda: (
            (condition(cluster.servicebuild(NAMESPACE, "checkout"), "Reconciling") or {}).get("reason")
            == "WaitingForBuilder"
            and condition(cluster.servicebuild(NAMESPACE, "checkout"), "Reconciling")
        )
    )
    assert reconciling["status"] == "True"
    assert "does not exist" in reconciling["message"]

    await ready_pool(cluster, buildctl_plan_dir)
    await eventually(lambda: ready(cluster, "checkout", 1))


async def test_an_idle_pool_scales_to_zero_and_starts_for_the_next_build(
    cluster: Cluster, operator: OperatorProcess, oci_registry: RunningRegistry, buildctl_plan_dir: Path
) -> None:
    # Not waiting for the daemon to be available first: with an idleTimeout of 1 s, a loaded machine may
    # reconcile the new pool after its operator was idle that long, and scale it to zero at once.
    await create_pool(cluster, {"idleTimeout": "1s"})
    await eventually(
        lambda: ((cluster.get(DEPLOYMENTS, NAMESPACE, DAEMON) or {}).get("spec") or {}).get("replicas") == 0
    )
    await trust_pool_certificate(cluster, buildctl_plan_dir)
    await play_deployment_controller(cluster)
    idle = await eventually(lambda: condition(cluster.get(BUILDERPOOLS, NAMESPACE, POOL) or {}, "Ready"))
    await eventually(
        lambda: (
            (condition(cluster.get(BUILDERPOOLS, NAMESPACE, POOL) or {}, "Ready") or {}).get("reason")
            == "Idle"
        )
    )
    assert idle is not None

    await cluster.create_servicebuild(NAMESPACE, "checkout", spec(oci_registry, "checkout"))
    await eventually(lambda: (cluster.get(DEPLOYMENTS, NAMESPACE, DAEMON) or {})["spec"]["replicas"] == 1)
    assert status_of(cluster, "checkout").get("phase") != "Succeeded"
    await play_deployment_controller(cluster)
    await eventually(lambda: ready(cluster, "checkout", 1))


async def test_an_operator_killed_mid_build_leaves_one_result(
    cluster: Cluster,
    operator: OperatorProcess,
    oci_registry: RunningRegistry,
    buildctl_plan_dir: Path,
) -> None:
    await ready_pool(cluster, buildctl_plan_dir)
    plan(buildctl_plan_dir, "shop/checkout", "hold")
    await cluster.create_servicebuild(NAMESPACE, "checkout", spec(oci_registry, "checkout"))
    await eventually(lambda: holds_started(buildctl_plan_dir, "shop/checkout") == 1)

    (held,) = calls(buildctl_plan_dir)
    operator.kill()
    await eventually(lambda: not process_alive(held["pid"]), within=30)
    operator.start()

    body = await eventually(lambda: ready(cluster, "checkout", 1), within=120)
    assert len(calls(buildctl_plan_dir)) == 2, (
        "the killed operator's build died with it; the next built again"
    )
    digest = served(oci_registry, "shop/checkout", "1").headers["Docker-Content-Digest"]
    assert body["status"]["output"]["digest"] == digest
    assert body["status"]["build"] == 1
    reasons = await eventually(
        lambda: (
            [e["reason"] for e in cluster.events(NAMESPACE, "checkout")][-1:] == ["BuildSucceeded"]
            and [e["reason"] for e in cluster.events(NAMESPACE, "checkout")]
        )
    )
    assert reasons.count("BuildSucceeded") == 1
