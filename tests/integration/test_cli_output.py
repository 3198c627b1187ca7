"""We test what every `kubectl servicebuild` command prints, against KMock's API with the kubelet's log
endpoint, for a running, a succeeded and a failed build (statuses made by the operator's own status
builder, `support.status_samples`), as snapshots with colours off:

- `list` in the context's namespace and with `-A`; `-o json` and `-o yaml` parse to the objects;
- `status`: phase and why, image, cache, the failure with its step and log tail, the last builds;
- `history`; `logs` of a running build (and `-f` following it to its end), of a finished build whose
  Pod is there, of a build whose Pod is gone (the stored tail and a line saying so), and of an older
  build with neither;
- `--context` and `-n` choose where, as kubectl's do; a missing ServiceBuild is an error;
- completion: the bash and zsh scripts, and `kubectl_complete-servicebuild` answering kubectl with the
  commands and the ServiceBuild names.
"""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import kmock
import pytest
import yaml
from cli_runner import Result, assert_snapshot, cli_environment, run, start
from cluster import PODS, SERVICEBUILDS, Cluster, PodLog, eventually
from kubelet import BUILDKIT_LOG, RUNNING_LINES

from servicebuild.times import format_time
from support.status_samples import STATUSES, servicebuild

BUILDS = {"succeeded": "succeeded", "failed": "failed for good", "running": "running"}
"""Namespace → the sample status of its ServiceBuild `checkout`."""
NEWER_FIELDS = {
    "findings": [
        {
            "rule": "SecretInImage",
            "severity": "error",
            "stage": "runtime",
            "line": 7,
            "message": "COPY . copies .env.",
        },
        {
            "rule": "FromAsCasing",
            "severity": "warning",
            "line": 1,
            "message": "'as' and 'FROM' keywords' casing do not match",
        },
    ],
    "cache": {"firstMiss": {"step": "[build 3/4] COPY util.h util.c calc.c ./", "changedFiles": ["calc.c"]}},
    "output": {"baseBytes": 10_485_760, "addedBytes": 2_451_660},
}
"""Status fields other operator versions write (issue 14's findings, first miss and layer bytes), which
`status` shows when they are there."""
CREATED_AGO = timedelta(minutes=10, seconds=30)
"""Shown as AGE `10m` for a minute and a half: a loaded machine cannot make the snapshot drift."""


async def _pod(cluster: Cluster, namespace: str, job_name: str, log: PodLog) -> None:
    name = f"{job_name}-x7k2p"
    labels = {"batch.kubernetes.io/job-name": job_name}
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
    }
    await cluster.create(PODS, body)
    cluster.kmock.pod_logs[namespace, name] = log


@pytest.fixture
async def seeded(cluster: Cluster) -> Cluster:
    created = format_time(datetime.now(UTC) - CREATED_AGO)
    for namespace, sample in BUILDS.items():
        body = servicebuild(STATUSES[sample])
        body["metadata"] |= {"namespace": namespace, "creationTimestamp": created}
        if namespace == "succeeded":
            status = body["status"]
            status["findings"] = NEWER_FIELDS["findings"]
            status["cache"] |= NEWER_FIELDS["cache"]
            status["output"] |= NEWER_FIELDS["output"]
        await cluster.create(SERVICEBUILDS, body)
    running_log = "".join(BUILDKIT_LOG.splitlines(keepends=True)[:RUNNING_LINES])
    await _pod(cluster, "running", "checkout-2-7f2c1", PodLog(running_log))
    await _pod(cluster, "succeeded", "checkout-1-7f2c1", PodLog(BUILDKIT_LOG, ended=True))
    return cluster  # the failed build's Pod is gone: only its stored log tail is left


@pytest.fixture
def env(kmock: kmock.KubernetesEmulator, tmp_path: Path) -> dict[str, str]:
    return cli_environment(str(kmock.url), tmp_path, "succeeded")


COMMANDS = [
    ("list", ["list"]),
    ("list-all-namespaces", ["list", "-A"]),
    ("list-empty", ["list", "-n", "nothing-here"]),
    *[(f"status-{namespace}", ["status", "checkout", "-n", namespace]) for namespace in BUILDS],
    *[(f"history-{namespace}", ["history", "checkout", "-n", namespace]) for namespace in BUILDS],
    *[(f"logs-{namespace}", ["logs", "checkout", "-n", namespace]) for namespace in BUILDS],
    ("logs-older-build-gone", ["logs", "checkout", "-n", "failed", "--build", "1"]),
    ("status-missing", ["status", "nothing", "-n", "running"]),
    ("status-other-context", ["status", "checkout", "--context", "elsewhere"]),
]


@pytest.mark.parametrize(("snapshot", "args"), COMMANDS, ids=[command[0] for command in COMMANDS])
async def test_each_command_prints_what_its_snapshot_shows(
    seeded: Cluster, env: dict[str, str], snapshot: str, args: list[str]
) -> None:
    assert_snapshot(snapshot, await run(env, *args))


@pytest.mark.parametrize("output", ["json", "yaml"])
async def test_list_output_for_scripts_parses_to_the_objects(
    seeded: Cluster, env: dict[str, str], output: str
) -> None:
    result = await run(env, "list", "-A", "-o", output)
    assert result.code == 0
    listing = json.loads(result.stdout) if output == "json" else yaml.safe_load(result.stdout)
    assert listing["kind"] == "List"
    assert [(item["metadata"]["namespace"], item["status"]["phase"]) for item in listing["items"]] == [
        ("failed", "Failed"),
        ("running", "Building"),
        ("succeeded", "Succeeded"),
    ]


async def test_logs_follow_a_running_build_to_its_end(seeded: Cluster, env: dict[str, str]) -> None:
    log = seeded.kmock.pod_logs["running", "checkout-2-7f2c1-x7k2p"]
    following = start(env, "logs", "checkout", "-n", "running", "-f")
    # The command has the log so far, and waits for more: the kubelet's stream stays open.
    await eventually(
        lambda: any(r.params.get("follow") == "true" for r in seeded.kmock if r.subresource == "log")
    )
    assert not following.done()
    await log.write("".join(BUILDKIT_LOG.splitlines(keepends=True)[RUNNING_LINES:]), end=True)
    result: Result = await following
    assert (result.code, result.stdout) == (0, BUILDKIT_LOG)


@pytest.mark.parametrize("shell", ["bash", "zsh"])
async def test_completion_scripts_for_bash_and_zsh(env: dict[str, str], shell: str) -> None:
    result = await run(env, "completion", shell)
    assert result.code == 0
    assert "_KUBECTL_SERVICEBUILD_COMPLETE" in result.stdout
    assert f"{shell}_complete" in result.stdout


async def test_completion_through_kubectl_offers_commands_and_names(
    seeded: Cluster, env: dict[str, str]
) -> None:
    commands = await run(env, "", program="kubectl_complete-servicebuild")
    assert commands.code == 0
    assert [line.split("\t")[0] for line in commands.stdout.splitlines()] == [
        "build",
        "completion",
        "history",
        "list",
        "logs",
        "rebuild",
        "status",
        "wait",
        ":4",
    ]
    names = await run(env, "status", "-n", "running", "ch", program="kubectl_complete-servicebuild")
    assert names.stdout.splitlines() == ["checkout", ":4"]
    none = await run(env, "status", "-n", "nothing-here", "", program="kubectl_complete-servicebuild")
    assert none.stdout.splitlines() == [":4"]
