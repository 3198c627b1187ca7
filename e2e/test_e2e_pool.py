"""End-to-end, builder pools: the operator in `make demo`'s kind cluster builds on a long-running rootless
buildkitd over mTLS (`../shared/buildkit.md`, "a long-running daemon"), with the `buildctl` of its image.

We test these aspects:
- the BuilderPool `builders` (e2e/pool) becomes Ready: its daemon runs and serves TLS;
- the ServiceBuild `hello-pool` (`spec.builderPool: builders`) becomes Ready, and its status is what the
  registry serves: digest, size, layers;
- a change of the final stage alone (APP_VERSION) rebuilds on the same daemon with the earlier steps
  cached, a new digest the registry agrees with; the time from the patch to Ready is printed (the goal:
  well under a second for the operator and a warm daemon, against ~3 s for a build Job).

Run with `make e2e` (after `make demo`); it applies e2e/pool itself.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_e2e import CONTEXT, assert_status_matches_registry, kubectl, servicebuild, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

POOL_DIR = Path(__file__).parent / "pool"
POOL = "builders"
NAME = "hello-pool"


@pytest.fixture(scope="module", autouse=True)
def pool_applied() -> None:
    command = ["kubectl", "--context", CONTEXT, "apply", "-k", str(POOL_DIR)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    kubectl("wait", "--for=condition=Ready", f"builderpool/{POOL}", "--timeout=600s", timeout=630)


def test_a_build_on_the_pool_matches_the_registry():
    sb = wait_ready(NAME, 1200)
    assert sb["spec"]["builderPool"] == POOL
    assert_status_matches_registry(sb)


def test_a_final_stage_change_rebuilds_warm_on_the_pool(capsys):
    before = wait_ready(NAME, 1200)
    patch = {"spec": {"buildArgs": {"APP_VERSION": f"1.0.{int(time.time())}"}}}

    applied = time.monotonic()
    kubectl("patch", "servicebuild", NAME, "--type=merge", "-p", json.dumps(patch))
    generation = servicebuild(NAME)["metadata"]["generation"]
    after = wait_ready(NAME, 600)
    seconds = time.monotonic() - applied

    with capsys.disabled():  # a figure for the reader of the run, not an assertion
        sys.stdout.write(
            f"\napply -> Ready on the pool, final-stage change: {seconds:.2f}s (with kubectl's)\n"
        )
    assert after["metadata"]["generation"] == generation > before["metadata"]["generation"]
    assert_status_matches_registry(after)
    cache = after["status"]["cache"]
    assert 0 < cache["cachedSteps"] <= cache["totalSteps"]
    assert after["status"]["output"]["digest"] != before["status"]["output"]["digest"]
