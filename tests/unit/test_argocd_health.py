"""The Argo CD health check of ServiceBuilds (deploy/argocd/health.lua), run under Lua 5.1 as Argo CD runs it.

We test these aspects:
- each outcome's status, made by the operator's own status builder, has the health Argo CD should show:
  a success Healthy; a build that failed for good or an invalid spec Degraded, with the Stalled reason and
  message; a running, pending, queued or retrying build Progressing, with its Reconciling reason;
- no status yet, or an `observedGeneration` behind `metadata.generation`, is Progressing, whatever the
  previous generation's conditions say;
- Ready=False with neither Stalled nor Reconciling (another operator version's status) is Progressing;
- the script needs only what Argo CD opens for a configured script (the base, package, table and a safe os
  library): here string, math and the other libraries are gone, and strings have no methods;
- the argocd-cm snippet inlines health.lua unchanged, is a valid ConfigMap, and docs/gitops.md shows it
  as it is.

Argo CD runs health scripts with gopher-lua, a Lua 5.1 implementation; `lupa.lua51` is the reference Lua 5.1.
"""

from pathlib import Path
from typing import Any

import kubernetes_validate
import lupa.lua51
import pytest
import yaml

from support import docs
from support import status_samples as samples

ARGOCD = Path(__file__).resolve().parents[2] / "deploy" / "argocd"
HEALTH_LUA = (ARGOCD / "health.lua").read_text()
CONFIG_KEY = "resource.customizations.health.servicebuild.dev_ServiceBuild"
HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

_CLOSED_LIBRARIES = """
getmetatable("").__index = nil
string, math, io, debug, coroutine, os, python = nil, nil, nil, nil, nil, nil, nil
"""
"""What Argo CD does not open for a script from argocd-cm (its `os` has only time and date; the script
uses neither, so it goes too). With gopher-lua's string library closed, strings have no methods either."""


def _argo_cd_lua() -> lupa.lua51.LuaRuntime:
    lua = lupa.lua51.LuaRuntime(register_eval=False, register_builtins=False)
    assert lua.eval("_VERSION") == "Lua 5.1"
    lua.execute(_CLOSED_LIBRARIES)
    return lua


def health(obj: dict[str, Any]) -> dict[str, str]:
    lua = _argo_cd_lua()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(HEALTH_LUA)
    return dict(result.items())


def test_the_emulated_argo_cd_has_no_string_library() -> None:
    lua = _argo_cd_lua()
    for script in ('return ("x"):upper()', 'return string.format("%d", 1)', "return math.floor(1.5)"):
        with pytest.raises(lupa.lua51.LuaError):
            lua.execute(script)


SUCCEEDED = samples.STATUSES["succeeded"]
PUSHED = f"Pushed {samples.IMAGE}@{samples.DIGEST} (12.3 MiB)"
HEALTH: dict[str, tuple[str, str]] = {
    "succeeded": ("Healthy", f"BuildSucceeded: {PUSHED}"),
    "failed for good": (
        "Degraded",
        "BuildFailed: Build failed at [build 3/4] RUN make.\nmake: *** [all] Error 1",
    ),
    "invalid spec": ("Degraded", "InvalidSpec: spec.output.image: not an image."),
    "running": ("Progressing", "BuildRunning: BuildKit is building and pushing the image."),
    "pending": ("Progressing", "BuildPending: The build Job is waiting for its Pod to start."),
    "queued": (
        "Progressing",
        "WaitingForCapacity: Waiting for a free build slot, position 3: 2 of 2 builds run.",
    ),
    "retry scheduled": (
        "Progressing",
        (
            "RetryScheduled: Attempt 1 of 3 failed (Evicted: The build Pod was evicted.);"
            " the next one starts at 2026-11-28T09:11:53Z."
        ),
    ),
}


def test_every_outcome_has_a_health() -> None:
    assert HEALTH.keys() == samples.STATUSES.keys()


@pytest.mark.parametrize(("sample", "expected"), HEALTH.items(), ids=HEALTH.keys())
def test_each_outcome_has_the_health_argo_cd_should_show(sample: str, expected: tuple[str, str]) -> None:
    result = health(samples.servicebuild(samples.STATUSES[sample]))
    assert result["status"] in HEALTH_STATUSES
    assert (result["status"], result["message"]) == expected


def test_a_servicebuild_the_operator_has_not_seen_is_progressing() -> None:
    assert health(samples.servicebuild(None)) == {
        "status": "Progressing",
        "message": "Waiting for the operator to report on this ServiceBuild.",
    }


@pytest.mark.parametrize("sample", ["succeeded", "failed for good", "invalid spec"])
def test_a_spec_the_operator_has_not_observed_is_progressing_whatever_the_last_generation_said(
    sample: str,
) -> None:
    status = samples.STATUSES[sample]
    assert status.observed_generation is not None
    newer = status.observed_generation + 1
    assert health(samples.servicebuild(status, generation=newer)) == {
        "status": "Progressing",
        "message": f"Waiting for the operator to observe generation {newer}.",
    }


def test_not_ready_without_stalled_or_reconciling_is_progressing() -> None:
    failed = samples.STATUSES["failed for good"]
    ready_only = failed.model_copy(update={"conditions": [c for c in failed.conditions if c.type == "Ready"]})
    assert health(samples.servicebuild(ready_only)) == {
        "status": "Progressing",
        "message": "BuildFailed: Build failed at [build 3/4] RUN make.",
    }


def _snippet() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    return loaded


def test_the_argocd_cm_snippet_inlines_health_lua_unchanged() -> None:
    assert _snippet()["data"] == {CONFIG_KEY: HEALTH_LUA}


def test_the_gitops_page_shows_the_snippet_as_it_is() -> None:
    shown = [doc for doc in docs.yaml_documents(docs.DOCS / "gitops.md") if doc.get("kind") == "ConfigMap"]
    assert shown == [_snippet()]


@pytest.mark.parametrize("version", ["1.30", kubernetes_validate.latest_version()])
def test_the_argocd_cm_snippet_is_a_valid_configmap(version: str) -> None:
    snippet = _snippet()
    assert (snippet["kind"], snippet["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    kubernetes_validate.validate(snippet, version, strict=True)
