"""The reconciler's builds on a BuilderPool (`spec.builderPool`), driven through in-memory gateways: the runs
of buildctl as `poolruns.PoolRuns` keeps them (FakeRuns), ended by the test as buildctl would end."""

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from servicebuild import naming
from servicebuild.api.models import ServiceBuildStatus, parse_servicebuild
from servicebuild.config import Settings
from servicebuild.reconciler import Reconciler
from servicebuild.render.pool_run import PoolRun
from support.fakes import IMAGE_SIZE, FakeGit, FakeKube, FakeRegistry, FakeRuns

NAMESPACE, POOL, OWN = "shop", "builders", "servicebuild-system"
START = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)
DIGEST = "sha256:" + "cd" * 32
IMAGE = "registry.example.com/shop/checkout:1.4.2"
ENDPOINT = "tcp://builders-buildkitd.shop.svc:1234"
NPM_TOKEN = "npm_4f1c0ffee"  # noqa: S105 - a test value
SPEC = {
    "source": {"configMap": {"name": "ctx"}},
    "output": {"image": IMAGE},
    "builderPool": POOL,
    "pendingTimeout": "2m",
    "secrets": [{"id": "npmrc", "secretRef": {"name": "npm", "key": "token"}}],
}
UNREACHABLE = (
    "error: failed to get status: rpc error: code = Unavailable desc = connection error: desc ="
    ' "transport: Error while dialing: dial tcp 10.96.12.7:1234: connect: connection refused"\n'
)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _pool(ready: str = "True", reason: str = "DaemonAvailable", max_builds: int = 4) -> dict[str, Any]:
    condition = {
        "type": "Ready",
        "status": ready,
        "reason": reason,
        "message": "m",
        "lastTransitionTime": "2026-11-28T09:00:00Z",
    }
    return {
        "metadata": {"name": POOL, "namespace": NAMESPACE, "uid": "p-1", "generation": 1},
        "spec": {"maxConcurrentBuilds": max_builds},
        "status": {"conditions": [condition], "endpoint": ENDPOINT},
    }


class World:
    def __init__(self, pool: dict[str, Any] | None = None) -> None:
        self.kube = FakeKube(
            now="2026-11-28T10:00:00Z", configmaps={"ctx": {"data": {"Dockerfile": "FROM scratch\n"}}}
        )
        self.kube.secrets["npm"] = {"token": _b64(NPM_TOKEN)}
        self.kube.own_secrets[(OWN, naming.pool_ca_secret_name(NAMESPACE, POOL))] = {
            key: _b64(f"-- {key} --") for key in ("ca.crt", "ca.key", "tls.crt", "tls.key")
        }
        if pool is not None:
            self.kube.builderpools[(NAMESPACE, POOL)] = pool
        self.registry = FakeRegistry()
        self.runs = FakeRuns(START)
        self.reconciler = self.operator()

    def operator(self) -> Reconciler:
        """A new operator process: nothing of the last one's runs."""
        self.runs = FakeRuns(START)
        settings = Settings(retry_delay_seconds=1)
        return Reconciler(self.kube, self.registry, FakeGit(), settings, runs=self.runs, own_namespace=OWN)

    def reconcile(self, seconds: float) -> ServiceBuildStatus:
        metadata = {"name": "checkout", "namespace": NAMESPACE, "uid": "u-1", "generation": 1}
        body = {"metadata": metadata, "spec": SPEC, "status": self.kube.status}
        return self.reconciler.reconcile(parse_servicebuild(body), START + timedelta(seconds=seconds)).status

    def end_run(self, seconds: float, exit_code: int = 0, log: str = "") -> None:
        metadata = (
            json.dumps({"containerimage.digest": DIGEST, "image.name": IMAGE}) if exit_code == 0 else None
        )
        name = self.runs.started[-1][1]
        self.runs.end(name, exit_code, metadata=metadata, log=log, at=START + timedelta(seconds=seconds))


def _condition(status: ServiceBuildStatus, condition_type: str) -> tuple[str, str, str]:
    condition = status.condition(condition_type)
    assert condition is not None
    return condition.status, condition.reason, condition.message


def test_a_build_on_a_ready_pool_runs_buildctl_and_reads_back_as_a_job_would() -> None:
    world = World(_pool())
    status = world.reconcile(0)
    assert status.phase == "Building"
    assert world.kube.created == [], "no Job"
    (servicebuild, _, pool, run) = world.runs.started[0]
    assert (servicebuild, pool) == ((NAMESPACE, "checkout"), (NAMESPACE, POOL))
    assert run.argv[:5] == ("buildctl", "--addr", ENDPOINT, "--tlsdir", "tls")
    assert run.argv[5] == "build"
    assert "--local" in run.argv
    assert "context=context" in run.argv
    assert run.files["tls/tls.crt"] == b"-- tls.crt --"
    assert "tls/ca.key" not in run.files, "the CA's key never leaves its Secret"
    assert run.files["secrets/npmrc"] == NPM_TOKEN.encode()
    assert run.files["context/Dockerfile"] == b"FROM scratch\n"
    assert not any(NPM_TOKEN in arg for arg in run.argv)

    world.end_run(3)
    status = world.reconcile(3)
    assert _condition(status, "Ready")[:2] == ("True", "BuildSucceeded")
    assert status.output is not None
    assert (status.output.digest, status.output.size_bytes) == (DIGEST, IMAGE_SIZE)
    assert status.completion_time == START + timedelta(seconds=3)
    assert world.runs.stopped == []


def test_a_pool_not_ready_keeps_the_build_waiting_until_its_pending_timeout() -> None:
    world = World(_pool(ready="False", reason="DaemonStarting"))
    status = world.reconcile(0)
    assert status.phase == "Pending"
    assert _condition(status, "Reconciling")[:2] == ("True", "WaitingForBuilder")
    assert "is not ready" in _condition(status, "Reconciling")[2]
    assert world.runs.started == []

    world.kube.builderpools[(NAMESPACE, POOL)] = _pool()
    assert world.reconcile(119).phase == "Building"
    assert len(world.runs.started) == 1


def test_a_pool_that_stays_away_stalls_the_build_after_its_pending_timeout() -> None:
    world = World(None)
    world.reconcile(0)
    status = world.reconcile(121)
    stalled = _condition(status, "Stalled")
    assert stalled[:2] == ("True", "PendingTimeout")
    assert "BuilderPool 'builders'" in stalled[2]
    assert "does not exist" in stalled[2]


def test_a_busy_pool_keeps_the_build_waiting() -> None:
    world = World(_pool(max_builds=1))
    another = PoolRun(argv=("buildctl",), files={}, timeout_seconds=60)
    world.runs.start((NAMESPACE, "other"), "other-1", (NAMESPACE, POOL), another)
    status = world.reconcile(0)
    assert _condition(status, "Reconciling")[:2] == ("True", "WaitingForBuilder")
    assert "maxConcurrentBuilds" in _condition(status, "Reconciling")[2]


def test_an_idle_pool_is_told_a_build_wants_it() -> None:
    world = World(_pool(ready="False", reason="Idle"))
    world.reconcile(0)
    assert world.runs.touched == [(NAMESPACE, POOL)]


def test_an_unreachable_daemon_is_retried_in_a_new_run() -> None:
    world = World(_pool())
    world.reconcile(0)
    world.end_run(1, exit_code=1, log=UNREACHABLE)
    status = world.reconcile(1)
    assert _condition(status, "Reconciling")[:2] == ("True", "RetryScheduled")
    assert "BuilderUnavailable" in status.message

    world.reconcile(3)
    assert len(world.runs.started) == 2
    assert world.runs.started[1][1] != world.runs.started[0][1], "attempt 2 is a run of its own"


def test_a_build_in_flight_when_the_operator_restarts_is_started_again_once() -> None:
    world = World(_pool())
    world.reconcile(0)
    first = world.runs.started[0][1]
    world.reconciler = world.operator()
    assert world.reconcile(5).phase == "Building"
    assert [name for _, name, _, _ in world.runs.started] == [first]
    assert world.reconcile(6).phase == "Building"
    assert len(world.runs.started) == 1, "one run, however often the new operator looks"

    world.end_run(9)
    assert world.reconcile(9).phase == "Succeeded"


def test_losing_the_term_stops_the_runs() -> None:
    world = World(_pool())
    world.reconcile(0)
    world.reconciler.end_term()
    assert world.runs.stopped == [world.runs.started[0][1]]
