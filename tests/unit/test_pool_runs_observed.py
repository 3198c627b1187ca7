"""A build on a pool, rendered and observed: the same buildctl build as a Job's, only its paths in the run's
private directory; and what buildctl wrote read as the Job's wrapper reads it, from real BuildKit output."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from servicebuild.api.models import ServiceBuild, parse_servicebuild
from servicebuild.config import Settings
from servicebuild.failures import Reason
from servicebuild.observe import BuildState, observe_run
from servicebuild.render.job import (
    BUILD_SECRETS_DIR,
    CACHE_METRICS_FILE,
    GIT_AUTH_DIR,
    METADATA_FILE,
    WORKSPACE_DIR,
    BuildInputs,
    buildctl_args,
)
from servicebuild.render.pool_run import (
    RUN_PATHS,
    Builder,
    PoolRun,
    RunMaterial,
    RunState,
    render_pool_run,
)

SAMPLES = Path(__file__).parent / "buildkit_samples"
ENDPOINT = "tcp://builders-buildkitd.shop.svc:1234"
TLS = {"ca.crt": b"ca", "tls.crt": b"cert", "tls.key": b"key"}
START = datetime(2026, 11, 28, 10, tzinfo=UTC)
COMMIT = "9fceb02d0ae598e95dc970b74767f19372d61af8"


def _servicebuild(source: dict[str, object], **spec: object) -> ServiceBuild:
    body = {
        "metadata": {"name": "checkout", "namespace": "shop", "uid": "u-1", "generation": 3},
        "spec": {"source": source, "output": {"image": "registry.example.com/shop/checkout:1"}, **spec},
    }
    servicebuild = parse_servicebuild(body)
    assert isinstance(servicebuild, ServiceBuild)
    return servicebuild


CASES = {
    "configmap, secrets, cache": (
        {"configMap": {"name": "ctx"}},
        {"secrets": [{"id": "npmrc", "secretRef": {"name": "npm", "key": "token"}}], "target": "runtime"},
        BuildInputs(timestamp="20261128100000", context_digest="sha256:" + "0" * 64),
    ),
    "git with a token, tags, attestations": (
        {
            "git": {
                "url": "https://git.example.com/shop/checkout.git",
                "revision": "main",
                "authSecret": "git",
            }
        },
        {"output": {"image": "registry.example.com/shop/checkout:1", "tags": ["{shortCommit}"]}},
        BuildInputs(timestamp="20261128100000", commit=COMMIT, git_auth="token"),
    ),
}


@pytest.mark.parametrize(("source", "spec", "inputs"), CASES.values(), ids=CASES.keys())
def test_a_pool_build_is_the_jobs_build_with_the_runs_paths(
    source: dict[str, object], spec: dict[str, object], inputs: BuildInputs
) -> None:
    servicebuild = _servicebuild(source, **spec)
    settings = Settings()
    material = RunMaterial(TLS, secrets={"npmrc": b"s3cret"}, git_auth=b"t0ken", context={"Dockerfile": b"F"})
    exporting = Builder(("shop", "builders"), ENDPOINT, {}, export_cache=True)
    run = render_pool_run(servicebuild, settings, inputs, builder=exporting, material=material)

    job_args = buildctl_args(servicebuild.spec, settings, inputs, generation=3)
    for job_path, run_path in (
        (METADATA_FILE, RUN_PATHS.metadata_file),
        (CACHE_METRICS_FILE, RUN_PATHS.cache_metrics_file),
        (WORKSPACE_DIR, RUN_PATHS.context),
        (GIT_AUTH_DIR, RUN_PATHS.git_auth),
        (BUILD_SECRETS_DIR, RUN_PATHS.build_secrets),
    ):
        job_args = [arg.replace(job_path, run_path) for arg in job_args]
    assert list(run.argv) == ["buildctl", "--addr", ENDPOINT, "--tlsdir", "tls", *job_args]
    assert {"tls/ca.crt", "tls/tls.crt", "tls/tls.key"} <= set(run.files)
    for arg in run.argv:
        assert "s3cret" not in arg
        assert "t0ken" not in arg
    if "git" in source:
        assert run.files["git/token"] == b"t0ken"
        assert run.commit == COMMIT
    else:
        assert run.files["secrets/npmrc"] == b"s3cret"
        assert run.files["context/Dockerfile"] == b"F"


def test_a_pool_imports_the_registry_cache_and_exports_it_only_when_it_says_so() -> None:
    servicebuild = _servicebuild({"configMap": {"name": "ctx"}})
    inputs = BuildInputs(timestamp="20261128100000", context_digest="sha256:" + "0" * 64)
    material = RunMaterial(TLS, context={"Dockerfile": b"F"})
    pool = Builder(("shop", "builders"), ENDPOINT, {})
    run = render_pool_run(servicebuild, Settings(), inputs, builder=pool, material=material)
    assert "--import-cache" in run.argv
    assert "--export-cache" not in run.argv
    job_args = buildctl_args(servicebuild.spec, Settings(), inputs, generation=3)
    export = job_args[job_args.index("--export-cache") + 1]
    assert export not in run.argv
    assert len(run.argv) == len(job_args) + 5 - 2


def _ended(**fields: object) -> RunState:
    run = PoolRun(argv=("buildctl", "build", "--export-cache", "type=registry"), files={}, timeout_seconds=60)
    state = RunState("checkout-1", ("shop", "checkout"), ("shop", "builders"), START, run)
    return replace(state, ended=START + timedelta(seconds=3), **fields)  # type: ignore[arg-type]


def test_a_run_that_wrote_its_metadata_succeeded_with_the_jobs_report_and_facts() -> None:
    state = _ended(
        exit_code=0,
        metadata=(SAMPLES / "calc-cold-metadata.json").read_text(),
        cache_metrics=(SAMPLES / "calc-cold-cache-metrics.json").read_text(),
        log=(SAMPLES / "calc-cold-plain.log").read_text(),
    )
    observation = observe_run(state)
    assert observation.state == BuildState.SUCCEEDED
    assert observation.report is not None
    assert (
        observation.report.digest == "sha256:49514f4f7b59b9d6736f732fbbf8610b899a11466a7e08ed03859f09a029a7c6"
    )
    assert observation.report.image_name == "registry.test:5000/samples/calc:cold"
    assert observation.report.cache_exported is True
    assert observation.report.total_steps is not None
    assert observation.facts is not None
    assert observation.facts.base_images, "the FROM lines of the log"
    assert observation.completion_time == START + timedelta(seconds=3)


STATES = {
    "not run by this process": (None, BuildState.ABSENT, None),
    "stopped by the operator": (replace(_ended(exit_code=-9), stopped=True), BuildState.ABSENT, None),
    "running": (replace(_ended(), ended=None), BuildState.RUNNING, None),
    "no digest written": (_ended(exit_code=0, metadata="{}"), BuildState.FAILED, Reason.REPORT_MISSING),
    "past spec.timeout": (_ended(exit_code=-9, timed_out=True), BuildState.FAILED, Reason.DEADLINE_EXCEEDED),
    "daemon unreachable": (
        _ended(exit_code=1, log="error: failed to get status: rpc error: code = Unavailable desc = closed\n"),
        BuildState.FAILED,
        Reason.BUILDER_UNAVAILABLE,
    ),
}


@pytest.mark.parametrize(("state", "observed", "reason"), STATES.values(), ids=STATES.keys())
def test_what_a_run_says(state: RunState | None, observed: BuildState, reason: Reason | None) -> None:
    observation = observe_run(state)
    assert observation.state == observed
    assert (observation.failure.reason if observation.failure else None) == reason
